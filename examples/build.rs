//! Compiles MobileNetV2 to Rust at build time, as a user's build script would.

fn main() {
    nnc_compiler::Builder::new()
        .compile(&["mobilenet_v2.nn"])
        .unwrap_or_else(|error| panic!("{error}"));
}
