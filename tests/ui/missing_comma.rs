nnc::network! {
    network net(x: f32[1, 784]) -> (y) {
        y = linear(x 10) as fc
    }
}

fn main() {}
