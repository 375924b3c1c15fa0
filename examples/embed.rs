//! Sentence embeddings through the library API, what `nnc embed` does: all-MiniLM-L6-v2 as
//! `minilm_embed.nn` (BERT, mean pooling over the real tokens, L2 normalization), compiled to Rust
//! by `build.rs` and included here, the model's `tokenizer.json` through `nnc::runtime::tokenizer`,
//! and the cosine similarity of every pair of sentences.
//!
//! `cargo run --release --example embed -- [--model-dir DIR] [SENTENCE ...]`, where DIR holds
//! the model's `model.safetensors` and `tokenizer.json` (by default `all-MiniLM-L6-v2` in the model
//! cache that `bench/fetch_models.sh` fills: `$NNC_MODEL_CACHE`, else
//! `$XDG_CACHE_HOME/nnc/models`, else `~/.cache/nnc/models`).
//!
//! The generated network takes one sentence of at most 128 tokens (`minilm_embed.nn`'s `where
//! batch = 1, seq = 128`), padded there with an attention mask of zeros; the padding does not
//! change the embedding.

use std::path::PathBuf;

use nnc::runtime::ndarray::Array2;
use nnc::runtime::tokenizer::Tokenizer;
use nnc::runtime::weights::LoadOptions;

// The program uses the network and its inputs only: the generated code allows the rest to be
// unused (its per-layer struct, say) without a warning.
include!(concat!(env!("OUT_DIR"), "/minilm_embed.rs"));

/// The tokens of the generated network's input (`seq` of `minilm_embed.nn`).
const SEQ: usize = 128;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut model_dir = None;
    let mut sentences = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--model-dir" => {
                model_dir = Some(PathBuf::from(
                    args.next().ok_or("--model-dir needs a value")?,
                ))
            }
            _ => sentences.push(arg),
        }
    }
    if sentences.is_empty() {
        sentences = [
            "A man is playing a guitar.",
            "Someone plays an acoustic guitar.",
            "The weather is cold today.",
        ]
        .map(String::from)
        .to_vec();
    }
    let model_dir = model_dir.unwrap_or_else(|| model_cache_dir().join("all-MiniLM-L6-v2"));
    let weights = model_dir.join("model.safetensors");
    if !weights.is_file() {
        println!(
            "skipped: {} is absent; run bench/fetch_models.sh to fetch all-MiniLM-L6-v2 (or pass --model-dir)",
            weights.display()
        );
        return Ok(());
    }

    let tokenizer = Tokenizer::from_file(model_dir.join("tokenizer.json"))?;
    // The checkpoint is a whole BertModel: its pooler, which sentence-transformers does not use,
    // is skipped (and listed), as load_state_dict(strict=False) would.
    let (mut network, notes) =
        MinilmEmbed::from_checkpoint(&weights, &LoadOptions { strict: false })?;
    for note in notes {
        eprintln!("note: {note}");
    }

    let mut embeddings: Vec<Vec<f32>> = Vec::new();
    for sentence in &sentences {
        let batch = tokenizer.encode_batch(&[sentence])?;
        if batch.seq > SEQ {
            return Err(format!("`{sentence}` has {} tokens, more than {SEQ}", batch.seq).into());
        }
        let padded = |values: &[i64], pad: i64| {
            let mut row = values.to_vec();
            row.resize(SEQ, pad);
            Array2::from_shape_vec((1, SEQ), row).expect("one row of SEQ tokens")
        };
        let input_ids = padded(&batch.input_ids, 0);
        let token_type_ids = padded(&batch.token_type_ids, 0);
        let attention_mask = padded(&batch.attention_mask, 0);
        let embedding = network.forward(MinilmEmbedInputs {
            input_ids: input_ids.view(),
            token_type_ids: token_type_ids.view(),
            attention_mask: attention_mask.view(),
        })?;
        embeddings.push(embedding.iter().copied().collect());
    }

    println!(
        "{} sentences, embeddings of {} values:",
        sentences.len(),
        embeddings[0].len()
    );
    for (index, sentence) in sentences.iter().enumerate() {
        println!("  [{index}] {sentence}");
    }
    println!("cosine similarity (the embeddings have norm 1, so it is their dot product):");
    for left in &embeddings {
        let row: Vec<String> = embeddings
            .iter()
            .map(|right| {
                format!(
                    "{:7.4}",
                    left.iter().zip(right).map(|(a, b)| a * b).sum::<f32>()
                )
            })
            .collect();
        println!("  {}", row.join(" "));
    }
    Ok(())
}

/// The model cache of `bench/fetch_models.sh`.
fn model_cache_dir() -> PathBuf {
    let variable = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    if let Some(cache) = variable("NNC_MODEL_CACHE") {
        return PathBuf::from(cache);
    }
    variable("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| variable("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_default()
        .join("nnc/models")
}
