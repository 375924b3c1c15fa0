nnc::network! {
    quantize = "q5_k";
    network m(x: f32[1, 32]) -> (y) { y = linear(x, 4) }
}

fn main() {}
