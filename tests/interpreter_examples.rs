//! Every bundled example runs in the reference interpreter with random weights and gives finite
//! outputs. Sequence lengths are shortened with dimension overrides to keep the test quick; the
//! layers and weights are those of the full models.

use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use nnc_compiler::interpret::{self, Interpreter, Tensor};
use nnc_compiler::{FrontendOptions, compile_to_ir, ir};

fn run_example(file: &str, dims: &[(&str, i64)]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(file);
    let source = std::fs::read_to_string(path).unwrap();
    let options = FrontendOptions {
        dims: dims
            .iter()
            .map(|(name, size)| (name.to_string(), *size))
            .collect(),
    };
    let module = compile_to_ir(&source, &options).unwrap();
    let graph = &module.networks[0];
    let interpreter = Interpreter::new(graph, interpret::random_weights(graph, 42)).unwrap();
    let inputs: Vec<(&str, Tensor)> = graph
        .inputs
        .iter()
        .map(|input| {
            let shape = graph.ty(input.value).shape.clone();
            let count: usize = shape.iter().product();
            let tensor = match graph.ty(input.value).dtype {
                // Small ids are valid for every vocabulary, token types included.
                ir::DType::I64 => Tensor::I64(
                    ArrayD::from_shape_vec(
                        IxDyn(&shape),
                        (0..count).map(|i| (i % 2) as i64).collect(),
                    )
                    .unwrap(),
                ),
                ir::DType::F32 => Tensor::F32(
                    ArrayD::from_shape_vec(
                        IxDyn(&shape),
                        (0..count).map(|i| ((i % 17) as f32 - 8.0) / 8.0).collect(),
                    )
                    .unwrap(),
                ),
            };
            (input.name.as_str(), tensor)
        })
        .collect();
    let outputs = interpreter.run(&inputs).unwrap();
    assert_eq!(outputs.len(), graph.outputs.len());
    for (name, output) in outputs {
        assert!(
            output.iter().all(|value| value.is_finite()),
            "{file}: output {name} is not finite"
        );
        assert!(
            output.iter().any(|&value| value != 0.0),
            "{file}: output {name} is all zeros"
        );
    }
}

#[test]
fn mlp() {
    run_example("mlp.nn", &[]);
}

#[test]
fn resnet18() {
    run_example("resnet18.nn", &[]);
}

#[test]
fn mobilenet_v2() {
    run_example("mobilenet_v2.nn", &[]);
}

#[test]
fn bert_encoder() {
    run_example("bert_encoder.nn", &[("seq", 16)]);
}

#[test]
fn tiny_gpt() {
    run_example("tiny_gpt.nn", &[("seq", 16)]);
}

#[test]
fn llama_decoder() {
    run_example("llama_decoder.nn", &[("seq", 4)]);
}

#[test]
fn seq2seq() {
    run_example("seq2seq.nn", &[("src_len", 12), ("tgt_len", 8)]);
}

#[test]
fn longformer() {
    run_example("longformer.nn", &[("seq", 300)]);
}
