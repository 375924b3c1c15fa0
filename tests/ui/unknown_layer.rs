nnc::network! {
    network net(x: f32[1, 3, 32, 32]) -> (y) {
        y = conv2x(x, 16, kernel = 3) as conv
    }
}

fn main() {}
