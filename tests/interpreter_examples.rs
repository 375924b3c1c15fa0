//! Every bundled example runs in the reference interpreter with random weights and gives finite
//! outputs. Each runs at the test dimensions of its header comment (`// test-dims: seq=16`, see
//! `nnc_test_support::header`), which shorten sequences to keep the test quick; the layers and
//! weights are those of the full models.

use nnc_compiler::interpret::{self, Interpreter};
use nnc_compiler::{FrontendOptions, compile_to_ir};
use nnc_test_support::inputs::{named, random_inputs};
use nnc_test_support::{example, examples};

/// The examples that have a test below, one test each so that they run in parallel.
const TESTED: [&str; 9] = [
    "bert_encoder",
    "llama_decoder",
    "longformer",
    "minilm_embed",
    "mlp",
    "mobilenet_v2",
    "resnet18",
    "seq2seq",
    "tiny_gpt",
];

fn run_example(name: &str) {
    let model = example(name);
    let options = FrontendOptions {
        dims: model.test_dims(),
        ..Default::default()
    };
    let module = compile_to_ir(&model.source(), &options).unwrap();
    let graph = &module.networks[0];
    // The front end ignores overrides of dimensions a network does not have, so a misspelt
    // header would silently test the full size.
    for (dim, size) in &options.dims {
        assert!(
            graph.dims.contains(&(dim.clone(), *size as usize)),
            "{name}: test-dims {dim}={size} is not a dimension of the network ({:?})",
            graph.dims
        );
    }
    let interpreter = Interpreter::new(graph, interpret::random_weights(graph, 42)).unwrap();
    let inputs = random_inputs(graph, 42);
    let outputs = interpreter.run(&named(&inputs)).unwrap();
    assert_eq!(outputs.len(), graph.outputs.len());
    for (output_name, output) in outputs {
        assert!(
            output.iter().all(|value| value.is_finite()),
            "{name}: output {output_name} is not finite"
        );
        assert!(
            output.iter().any(|&value| value != 0.0),
            "{name}: output {output_name} is all zeros"
        );
    }
}

#[test]
fn every_example_has_a_test() {
    let names: Vec<String> = examples().into_iter().map(|model| model.name).collect();
    assert_eq!(names, TESTED, "add a test below for each new example");
}

#[test]
fn mlp() {
    run_example("mlp");
}

#[test]
fn resnet18() {
    run_example("resnet18");
}

#[test]
fn mobilenet_v2() {
    run_example("mobilenet_v2");
}

#[test]
fn bert_encoder() {
    run_example("bert_encoder");
}

#[test]
fn minilm_embed() {
    run_example("minilm_embed");
}

#[test]
fn tiny_gpt() {
    run_example("tiny_gpt");
}

#[test]
fn llama_decoder() {
    run_example("llama_decoder");
}

#[test]
fn seq2seq() {
    run_example("seq2seq");
}

#[test]
fn longformer() {
    run_example("longformer");
}
