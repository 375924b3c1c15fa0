nnc::network! {
    network net(x: f32[1, 512]) -> (y) {
        y = linear(x, 10, in_features = 784) as fc
    }
}

fn main() {}
