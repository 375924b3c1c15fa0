//! `nnc embed` as a user runs it: on `examples/minilm_embed.nn` shrunk to a few hidden units with
//! random weights and the 16-word BERT-style tokenizer of `tests/fixtures/embed` (no download),
//! and on the real all-MiniLM-L6-v2 when `bench/fetch_models.sh` has fetched it, against the
//! sentence-transformers embeddings of `tests/fixtures/minilm`.

#![cfg(feature = "cli")]

use std::path::{Path, PathBuf};
use std::process::Command;

use ndarray::Array2;
use ndarray_npy::ReadNpyExt;
use nnc_test_support::{cached_model, model_cache};

fn workspace_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn read_npy(path: &Path) -> Array2<f32> {
    Array2::<f32>::read_npy(std::fs::File::open(path).unwrap()).unwrap()
}

/// Runs `nnc embed` with `arguments`, returning its standard output; fails the test on failure.
fn nnc_embed(arguments: &[&std::ffi::OsStr]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_nnc"))
        .arg("embed")
        .args(arguments)
        .output()
        .expect("nnc runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "nnc embed failed:\n{stderr}");
    String::from_utf8(output.stdout).expect("UTF-8 text")
}

fn max_difference(a: &Array2<f32>, b: &Array2<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// `examples/minilm_embed.nn` at a size the interpreter runs in milliseconds.
fn tiny_minilm(dir: &Path) -> PathBuf {
    let mut source = std::fs::read_to_string(workspace_file("examples/minilm_embed.nn")).unwrap();
    for (constant, tiny) in [
        ("vocab = 30522", "vocab = 16"),
        ("max_positions = 512", "max_positions = 16"),
        ("hidden = 384", "hidden = 8"),
        ("heads = 12", "heads = 2"),
        ("ffn = 1536", "ffn = 16"),
        ("layers = 6", "layers = 2"),
    ] {
        assert!(source.contains(constant), "{constant}");
        source = source.replace(constant, tiny);
    }
    let model = dir.join("tiny_minilm_embed.nn");
    std::fs::write(&model, source).unwrap();
    model
}

#[test]
fn embed_prints_cosines_and_writes_embeddings_that_padding_does_not_change() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli_embed");
    std::fs::create_dir_all(&dir).unwrap();
    let model = tiny_minilm(&dir);
    let tokenizer = workspace_file("tests/fixtures/embed/tokenizer.json");
    let embed = |sentences: &[&str], output: &Path| {
        let mut arguments = vec![
            model.as_os_str(),
            "--random-weights".as_ref(),
            "7".as_ref(),
            "--tokenizer".as_ref(),
            tokenizer.as_os_str(),
            "--output".as_ref(),
            output.as_os_str(),
            "--threads".as_ref(),
            "1".as_ref(),
        ];
        arguments.extend(sentences.iter().map(std::ffi::OsStr::new));
        nnc_embed(&arguments)
    };

    let batch_file = dir.join("batch.npy");
    let sentences = ["A man is playing guitar.", "The weather", "someone plays"];
    let printed = embed(&sentences, &batch_file);
    assert!(
        printed.contains("3 sentences, 8 tokens at most: embeddings f32[3, 8]"),
        "{printed}"
    );
    assert!(printed.contains("  [1] The weather\n"), "{printed}");
    // The diagonal of the cosine table is 1.
    let rows: Vec<&str> = printed
        .lines()
        .filter(|line| line.trim_start().starts_with('[') && line.contains('.'))
        .filter(|line| line.split_whitespace().count() == 4)
        .collect();
    assert_eq!(rows.len(), 3, "{printed}");
    for (index, row) in rows.iter().enumerate() {
        let cosine: f32 = row
            .split_whitespace()
            .nth(index + 1)
            .unwrap()
            .parse()
            .unwrap();
        assert!((cosine - 1.0).abs() < 1e-3, "{row}");
    }
    assert!(printed.contains("written to"), "{printed}");
    let batch = read_npy(&batch_file);
    assert_eq!(batch.dim(), (3, 8));
    for row in batch.rows() {
        assert!((row.dot(&row).sqrt() - 1.0).abs() < 1e-5);
    }

    // Each sentence alone, unpadded, gets the embedding it has in the padded batch.
    for (index, sentence) in sentences.iter().enumerate() {
        let alone_file = dir.join(format!("alone{index}.npy"));
        embed(&[sentence], &alone_file);
        let alone = read_npy(&alone_file);
        let in_batch = batch.slice(ndarray::s![index..index + 1, ..]).to_owned();
        let difference = max_difference(&alone, &in_batch);
        assert!(difference < 1e-5, "{sentence}: {difference}");
    }
}

#[test]
fn embed_explains_a_network_without_a_mask() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli_embed_errors");
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("no_mask.nn");
    std::fs::write(
        &model,
        "network ids_only(input_ids: i64[batch, seq]) -> (y: f32[batch, seq, 4])\n    \
         where batch = 1, seq = 4\n{\n    y = embedding(input_ids, 16, 4)\n}\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_nnc"))
        .arg("embed")
        .arg(&model)
        .arg("--random-weights=1")
        .arg("--tokenizer")
        .arg(workspace_file("tests/fixtures/embed/tokenizer.json"))
        .arg("a man")
        .output()
        .expect("nnc runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("has no `attention_mask`") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

/// The sentences of `bench/minilm_reference.py`, whose embeddings are in tests/fixtures/minilm.
const REFERENCE_SENTENCES: [&str; 4] = [
    "A man is playing a guitar.",
    "Someone plays an acoustic guitar.",
    "The weather is cold today.",
    "nnc compiles neural networks.",
];

#[test]
fn embed_with_the_real_minilm_gives_sentence_transformers_embeddings() {
    let folder = match cached_model(model_cache::MINILM) {
        Ok(folder) => folder,
        Err(skipped) => {
            println!("{skipped}");
            return;
        }
    };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli_embed_minilm");
    std::fs::create_dir_all(&dir).unwrap();
    let output = dir.join("embeddings.npy");
    let model = workspace_file("examples/minilm_embed.nn");
    let weights = folder.join("model.safetensors");
    let tokenizer = folder.join("tokenizer.json");
    let mut arguments = vec![
        model.as_os_str(),
        "--weights".as_ref(),
        weights.as_os_str(),
        "--tokenizer".as_ref(),
        tokenizer.as_os_str(),
        "--output".as_ref(),
        output.as_os_str(),
    ];
    arguments.extend(REFERENCE_SENTENCES.iter().map(std::ffi::OsStr::new));
    let printed = nnc_embed(&arguments);
    println!("{printed}");
    let reference = read_npy(&workspace_file(
        "tests/fixtures/minilm/sentence_embedding.npy",
    ));
    let embeddings = read_npy(&output);
    let difference = max_difference(&embeddings, &reference);
    println!("max |nnc embed - sentence-transformers| = {difference:.2e}");
    assert!(difference < 1e-5, "{difference}");
}
