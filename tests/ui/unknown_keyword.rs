nnc::network! {
    network net(x: f32[1, 3, 32, 32]) -> (y) {
        y = conv2d(x, 16, kernal = 3) as conv
    }
}

fn main() {}
