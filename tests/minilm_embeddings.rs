//! Sentence embeddings as sentence-transformers computes them: `examples/minilm_embed.nn` (BERT
//! with the attention mask in every layer, `mean_pool`, `l2_normalize`) against the reference
//! arrays of `tests/fixtures/minilm/`, which `bench/minilm_reference.py` computed in float64 numpy
//! from the published all-MiniLM-L6-v2 checkpoint, each sentence alone and unpadded.
//!
//! The test on the real checkpoint runs when it is in the model cache (`bench/fetch_models.sh`,
//! see [`checkpoint`]) and says how to fetch it otherwise. The others need no
//! download: the fixtures' own consistency, the pooling built-ins against a plain loop, and
//! padding that does not change a sentence's embedding.

use std::path::PathBuf;

use ndarray::{Array2, ArrayD, Ix2};
use ndarray_npy::ReadNpyExt;
use nnc_compiler::interpret::{self, Interpreter, Tensor};
use nnc_compiler::{FrontendOptions, compile_to_ir, diagnostics, ir};
use nnc_runtime::weights::{LoadNote, LoadOptions};
use nnc_test_support::{cached_model, example, model_cache};

fn fixture<T: ReadNpyExt>(name: &str) -> T {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/minilm")
        .join(name);
    T::read_npy(std::fs::File::open(&path).unwrap()).unwrap()
}

struct Reference {
    input_ids: Array2<i64>,
    token_type_ids: Array2<i64>,
    attention_mask: Array2<i64>,
    sentence_embedding: Array2<f32>,
}

fn reference() -> Reference {
    Reference {
        input_ids: fixture("input_ids.npy"),
        token_type_ids: fixture("token_type_ids.npy"),
        attention_mask: fixture("attention_mask.npy"),
        sentence_embedding: fixture("sentence_embedding.npy"),
    }
}

fn compile(source: &str, dims: &[(&str, i64)]) -> ir::Graph {
    let options = FrontendOptions {
        dims: dims
            .iter()
            .map(|(name, size)| (name.to_string(), *size))
            .collect(),
        ..Default::default()
    };
    let mut module = compile_to_ir(source, &options)
        .unwrap_or_else(|errors| panic!("{}", diagnostics::render(&errors.0, "test.nn", source)));
    module.networks.remove(0)
}

/// Runs `minilm_embed` on rows `rows` of the reference inputs, cut to their first `seq` tokens.
fn embed(
    graph: &ir::Graph,
    weights: Vec<Vec<f32>>,
    reference: &Reference,
    rows: std::ops::Range<usize>,
    seq: usize,
) -> Array2<f32> {
    let cut_i64 = |array: &Array2<i64>| {
        Tensor::I64(
            array
                .slice(ndarray::s![rows.clone(), ..seq])
                .to_owned()
                .into_dyn(),
        )
    };
    let interpreter = Interpreter::new(graph, weights).unwrap();
    let outputs = interpreter
        .run(&[
            ("input_ids", cut_i64(&reference.input_ids)),
            ("token_type_ids", cut_i64(&reference.token_type_ids)),
            ("attention_mask", cut_i64(&reference.attention_mask)),
        ])
        .unwrap();
    outputs
        .into_iter()
        .find(|(name, _)| name == "sentence_embedding")
        .unwrap()
        .1
        .into_dimensionality::<Ix2>()
        .unwrap()
}

fn max_difference(a: &Array2<f32>, b: &Array2<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The real checkpoint's `model.safetensors` in the model cache (`bench/fetch_models.sh`), or
/// the line to print when it is not there.
fn checkpoint() -> Result<PathBuf, String> {
    cached_model(&format!("{}/model.safetensors", model_cache::MINILM))
}

#[test]
fn reference_arrays_are_consistent() {
    let reference = reference();
    let (sentences, seq) = reference.input_ids.dim();
    assert_eq!(reference.attention_mask.dim(), (sentences, seq));
    assert_eq!(reference.token_type_ids.dim(), (sentences, seq));
    assert_eq!(reference.sentence_embedding.dim(), (sentences, 384));
    for row in 0..sentences {
        // [CLS] sentence [SEP], then padding: the mask is 1 exactly on the tokens.
        let length = reference.attention_mask.row(row).sum() as usize;
        let ids = reference.input_ids.row(row);
        assert_eq!(ids[0], 101, "row {row} starts with [CLS]");
        assert_eq!(ids[length - 1], 102, "row {row} ends with [SEP]");
        for position in 0..seq {
            let real = position < length;
            assert_eq!(reference.attention_mask[[row, position]], i64::from(real));
            assert_eq!(real, ids[position] != 0, "row {row}, position {position}");
        }
        let norm = reference
            .sentence_embedding
            .row(row)
            .iter()
            .map(|value| value * value)
            .sum::<f32>()
            .sqrt();
        assert!((norm - 1.0).abs() < 1e-6, "row {row} has norm {norm}");
    }
    // The two guitar sentences are far closer to each other than to the others.
    let cosine = reference
        .sentence_embedding
        .dot(&reference.sentence_embedding.t());
    for other in 2..sentences {
        assert!(cosine[[0, 1]] > cosine[[0, other]] + 0.5, "{cosine}");
    }
}

#[test]
fn mean_pool_and_l2_normalize_match_a_plain_reference() {
    let h: Vec<f32> = (0..30)
        .map(|index| ((index * 7 % 11) as f32 - 5.0) * 0.37)
        .collect();
    // One row with three real tokens, one with none (sentence-transformers gives zeros).
    let mask: Vec<i64> = vec![1, 1, 0, 1, 0, 0, 0, 0, 0, 0];
    let mut expected = Vec::new();
    for batch in 0..2 {
        let mut sums = [0.0f64; 3];
        let mut count = 0.0f64;
        for position in 0..5 {
            let keep = mask[batch * 5 + position] as f64;
            count += keep;
            for (feature, sum) in sums.iter_mut().enumerate() {
                *sum += keep * f64::from(h[(batch * 5 + position) * 3 + feature]);
            }
        }
        let means = sums.map(|sum| sum / count.max(1e-9));
        let norm = means.iter().map(|mean| mean * mean).sum::<f64>().sqrt();
        expected.push((means, means.map(|mean| mean / norm.max(1e-12))));
    }
    // The mask in either type, as Hugging Face's tokenizers (i64) or a user (f32) gives it.
    for mask_type in ["i64", "f32"] {
        let source = format!(
            "network pool(h: f32[2, 5, 3], mask: {mask_type}[2, 5]) \
             -> (pooled: f32[2, 3], unit: f32[2, 3]) {{\n\
             pooled = mean_pool(h, mask)\n\
             unit = l2_normalize(pooled)\n}}\n"
        );
        let graph = compile(&source, &[]);
        let mask_tensor = match mask_type {
            "i64" => Tensor::I64(ArrayD::from_shape_vec(vec![2, 5], mask.clone()).unwrap()),
            _ => Tensor::F32(
                ArrayD::from_shape_vec(vec![2, 5], mask.iter().map(|&keep| keep as f32).collect())
                    .unwrap(),
            ),
        };
        let interpreter = Interpreter::new(&graph, Vec::<Vec<f32>>::new()).unwrap();
        let outputs = interpreter
            .run(&[
                (
                    "h",
                    Tensor::F32(ArrayD::from_shape_vec(vec![2, 5, 3], h.clone()).unwrap()),
                ),
                ("mask", mask_tensor),
            ])
            .unwrap();
        for (batch, (means, units)) in expected.iter().enumerate() {
            for feature in 0..3 {
                let pooled = f64::from(outputs[0].1[[batch, feature]]);
                let unit = f64::from(outputs[1].1[[batch, feature]]);
                assert!(
                    (pooled - means[feature]).abs() < 1e-6,
                    "{mask_type} {batch} {feature}"
                );
                assert!(
                    (unit - units[feature]).abs() < 1e-6,
                    "{mask_type} {batch} {feature}"
                );
            }
        }
    }
}

#[test]
fn padding_does_not_change_an_embedding() {
    // Random weights: what is checked is that the mask reaches every attention and the pooling,
    // so that the padded batch gives each sentence what it gives alone.
    let reference = reference();
    let source = example("minilm_embed").source();
    let (sentences, seq) = reference.input_ids.dim();
    let batch = compile(&source, &[("batch", sentences as i64), ("seq", seq as i64)]);
    let padded = embed(
        &batch,
        interpret::random_weights(&batch, 7),
        &reference,
        0..sentences,
        seq,
    );
    for row in 0..sentences {
        let length = reference.attention_mask.row(row).sum() as usize;
        let alone = compile(&source, &[("batch", 1), ("seq", length as i64)]);
        let embedding = embed(
            &alone,
            interpret::random_weights(&alone, 7),
            &reference,
            row..row + 1,
            length,
        );
        let difference = max_difference(
            &padded.slice(ndarray::s![row..row + 1, ..]).to_owned(),
            &embedding,
        );
        assert!(difference < 1e-5, "row {row}: {difference}");
    }
}

#[test]
fn the_real_checkpoint_gives_sentence_transformers_embeddings() {
    let path = match checkpoint() {
        Ok(path) => path,
        Err(skipped) => {
            println!("{skipped}");
            return;
        }
    };
    let reference = reference();
    let (sentences, seq) = reference.input_ids.dim();

    // bert_encoder.nn is Hugging Face's BertModel: the checkpoint loads strictly, its stale
    // position_ids buffer ignored with a note.
    let encoder = compile(&example("bert_encoder").source(), &[("seq", 16)]);
    let loaded = interpret::read_weights(&encoder, &path, &LoadOptions::default()).unwrap();
    assert_eq!(
        loaded.notes,
        vec![LoadNote::IgnoredBuffer {
            name: "embeddings.position_ids".to_string(),
            shape: vec![1, 512]
        }]
    );

    // minilm_embed.nn has no pooler: strictly, the pooler is an error; not strictly, it is listed.
    let source = example("minilm_embed").source();
    let graph = compile(&source, &[("batch", sentences as i64), ("seq", seq as i64)]);
    let message = interpret::read_weights(&graph, &path, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("unexpected tensor `pooler.dense.weight`"),
        "{message}"
    );
    let loaded = interpret::read_weights(&graph, &path, &LoadOptions { strict: false }).unwrap();
    let notes: Vec<String> = loaded.notes.iter().map(ToString::to_string).collect();
    assert_eq!(notes.len(), 3, "{notes:?}");
    assert!(
        notes
            .iter()
            .any(|note| note.contains("pooler.dense.weight"))
    );

    let embeddings = embed(&graph, loaded.weights, &reference, 0..sentences, seq);
    let difference = max_difference(&embeddings, &reference.sentence_embedding);
    println!(
        "{}: max |nnc - reference| = {difference:.2e} over {sentences} sentences",
        path.display()
    );
    assert!(difference <= 1e-5, "{difference}");
}
