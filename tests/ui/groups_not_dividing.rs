nnc::network! {
    network net(x: f32[1, 32, 56, 56]) -> (y) {
        y = conv2d(x, 96, kernel = 3, padding = 1, groups = 3) as conv
    }
}

fn main() {}
