nnc::network! {
    network net(x: f32[1, 64]) -> (y) {
        a = linear(x, 64) as fc
        y = linear(a, 64) as fc
    }
}

fn main() {}
