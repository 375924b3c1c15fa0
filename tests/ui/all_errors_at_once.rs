nnc::network! {
    network net(x: f32[1, 3, 32, 32]) -> (y) {
        a = conv2d(x, 16, kernel = 3, groups = 2) as conv1
        b = max_pool2d(x, kernel = 3, padding = 4)
        y = softmax(flatten(x), dim = 2)
    }
}

fn main() {}
