nnc::network!(file = model);

fn main() {}
