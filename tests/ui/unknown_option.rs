nnc::network!(quantise = "q8_0", file = "examples/mlp.nn");

fn main() {}
