//! Decoding speed against context length: tokens/s of the generated one-token decoders of the
//! tiny GPT (context 128) and the SmolLM2-sized Llama (context 2048) when the KV cache already
//! holds `context` positions. `cargo bench -p nnc-codegen-tests --bench decode`.

use std::time::Instant;

use nnc_codegen_tests::example_llama_decoder::LlamaDecoderDecoder;
use nnc_codegen_tests::example_tiny_gpt::TinyGptDecoder;

/// Tokens per second of `steps` decode steps after filling the cache to `context` positions;
/// `decode(None)` resets the decoder.
fn tokens_per_second(mut decode: impl FnMut(Option<i64>), context: usize, steps: usize) -> f64 {
    decode(None);
    for position in 0..context {
        decode(Some((position % 50) as i64));
    }
    let start = Instant::now();
    for step in 0..steps {
        decode(Some((step % 50) as i64));
    }
    steps as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let mut gpt = TinyGptDecoder::with_random_weights(0);
    println!("tiny_gpt (4 layers, hidden 128), tokens/s by context length:");
    for context in [0, 32, 64, 96, 112] {
        let rate = tokens_per_second(
            |token| match token {
                Some(token) => drop(gpt.decode(token).unwrap()),
                None => gpt.reset(),
            },
            context,
            16,
        );
        println!("  context {context:>5}: {rate:>8.0} tokens/s");
    }
    let mut llama = LlamaDecoderDecoder::with_random_weights(0);
    println!(
        "llama_decoder (30 layers, hidden 576, SmolLM2-135M size), tokens/s by context length:"
    );
    for context in [0, 256, 512, 1024, 2000] {
        let rate = tokens_per_second(
            |token| match token {
                Some(token) => drop(llama.decode(token).unwrap()),
                None => llama.reset(),
            },
            context,
            8,
        );
        println!("  context {context:>5}: {rate:>8.1} tokens/s");
    }
}
