nnc::network! {
    network net(x: f32[1, 784]) -> (y) {
        hidden = linear(x, 256) as fc1
        y = linear(hiden, 10) as fc2
    }
}

fn main() {}
