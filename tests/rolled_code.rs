//! Rolled generated code: runs of identical layers found in the IR ([`repeat::find_runs`]), one
//! memory plan per layer body ([`memory::plan_rolled`]) proved sound over the unrolled graph by
//! the overlap checker, and the generated loop.

use nnc_compiler::codegen::{memory, repeat};
use nnc_compiler::ir::Graph;
use nnc_compiler::passes::{self, OptLevel};
use nnc_compiler::{FrontendOptions, compile_to_ir};

/// The first network of `source` with `dims` set, optimized at -O2.
fn optimized(source: &str, dims: &[(&str, i64)]) -> Graph {
    let options = FrontendOptions {
        dims: dims
            .iter()
            .map(|&(name, size)| (name.to_string(), size))
            .collect(),
        ..Default::default()
    };
    let mut graph = compile_to_ir(source, &options).unwrap().networks.remove(0);
    passes::optimize(&mut graph, OptLevel::O2, |_, _| {});
    graph
}

fn example(name: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(root.join("examples").join(name)).unwrap()
}

/// (first node, body length, count, carried values) of each run.
fn summary(graph: &Graph) -> Vec<(usize, usize, usize, usize)> {
    repeat::find_runs(graph)
        .iter()
        .map(|run| (run.first_node, run.body_len, run.count, run.carried.len()))
        .collect()
}

const THREE_LINEAR_RELU: &str = "
network stack(x: f32[batch, 32]) -> (y: f32[batch, 10]) where batch = 2 {
    for i in 0..3 {
        x = relu(linear(x, 32)) as layers[i]
    }
    y = linear(x, 10) as head
}
";

const TWO_LAYER_TRANSFORMER: &str = "
block layer(x) {
    h = layer_norm(x) as ln_1
    x = x + attention(h, h, h, heads = 4) as attn
    h = layer_norm(x) as ln_2
    h = linear(h, 64) as fc_in
    h = gelu(h)
    h = linear(h, 32) as fc_out
    return x + h
}

network encoder(x: f32[batch, seq, 32]) -> (y: f32[batch, seq, 32]) where batch = 1, seq = 8 {
    for i in 0..2 {
        x = layer(x) as layers[i]
    }
    y = layer_norm(x) as ln_f
}
";

#[test]
fn a_for_of_three_linear_relu_layers_is_one_run() {
    let graph = optimized(THREE_LINEAR_RELU, &[]);
    let runs = repeat::find_runs(&graph);
    assert_eq!(summary(&graph), [(0, 1, 3, 1)], "{runs:?}");
    // Each layer has its own weight and bias.
    assert!(runs[0].weights.iter().all(|weights| weights.len() == 2));
}

#[test]
fn a_two_layer_transformer_is_one_run_of_two() {
    let graph = optimized(TWO_LAYER_TRANSFORMER, &[]);
    let runs = summary(&graph);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].2, 2, "{runs:?}");
    assert_eq!(runs[0].0 + runs[0].1 * 2 + 1, graph.nodes.len(), "{runs:?}");
}

#[test]
fn the_examples_roll_exactly_their_identical_layers() {
    let llama = optimized(&example("llama_decoder.nn"), &[]);
    let runs = repeat::find_runs(&llama);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!((runs[0].count, runs[0].carried.len()), (30, 1));
    assert_eq!(runs[0].first_node, 1);
    assert_eq!(runs[0].end() + 2, llama.nodes.len());
    let llama_step = optimized(&example("llama_decoder.nn"), &[("seq", 1)]);
    assert_eq!(repeat::find_runs(&llama_step)[0].count, 30);

    let gpt = optimized(&example("tiny_gpt.nn"), &[]);
    assert_eq!(
        summary(&gpt).iter().map(|run| run.2).collect::<Vec<_>>(),
        [4]
    );
    let bert = optimized(&example("bert_encoder.nn"), &[]);
    assert!(
        summary(&bert).iter().any(|run| run.2 >= 2),
        "{:?}",
        summary(&bert)
    );
    // ResNet-18's stages differ in shape: only the identical blocks of one stage could roll,
    // and a stage has one block after its first.
    let resnet = optimized(&example("resnet18.nn"), &[]);
    for run in repeat::find_runs(&resnet) {
        for iteration in 1..run.count {
            for offset in 0..run.body_len {
                let first =
                    &resnet.nodes[nnc_compiler::ir::Node::from_index(run.first_node + offset)];
                let other = &resnet.nodes[nnc_compiler::ir::Node::from_index(
                    run.first_node + iteration * run.body_len + offset,
                )];
                assert_eq!(first.op, other.op);
                assert_eq!(resnet.ty(first.outputs[0]), resnet.ty(other.outputs[0]));
            }
        }
    }
}

#[test]
fn rolled_plans_are_sound_over_the_unrolled_graph() {
    for (name, source) in [
        ("stack", THREE_LINEAR_RELU.to_string()),
        ("transformer", TWO_LAYER_TRANSFORMER.to_string()),
        ("llama", example("llama_decoder.nn")),
    ] {
        let graph = optimized(&source, &[]);
        let runs = repeat::find_runs(&graph);
        let rolled = memory::plan_rolled(&graph, &[], &runs);
        memory::check_rolled(&graph, &rolled, &[])
            .unwrap_or_else(|error| panic!("{name}: {error}"));
    }
}
