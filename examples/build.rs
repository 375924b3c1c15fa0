//! Compiles MobileNetV2, the tiny GPT and all-MiniLM-L6-v2 to Rust at build time, as a user's
//! build script would.

fn main() {
    nnc_compiler::Builder::new()
        .compile(&["mobilenet_v2.nn", "tiny_gpt.nn", "minilm_embed.nn"])
        .unwrap_or_else(|error| panic!("{error}"));
}
