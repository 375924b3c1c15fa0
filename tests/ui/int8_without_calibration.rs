nnc::network!(quantize = "int8", file = "examples/resnet18.nn");

fn main() {}
