nnc::network! {
    network net(x: f32[1, 784]) -> (y: f32[1, 100]) {
        y = linear(x, 10) as fc
    }
}

fn main() {}
