//! Compiles MobileNetV2 and the tiny GPT to Rust at build time, as a user's build script would.

fn main() {
    nnc_compiler::Builder::new()
        .compile(&["mobilenet_v2.nn", "tiny_gpt.nn"])
        .unwrap_or_else(|error| panic!("{error}"));
}
