//! Latency of generated code against the reference interpreter, on the same weights and input:
//! MobileNetV2 at 224×224 and the MNIST MLP. `cargo bench -p nnc-codegen-tests`.

use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use ndarray::{Array2, Array4};
use nnc_codegen_tests::{example_mlp::Mlp, example_mobilenet_v2::MobilenetV2};
use nnc_compiler::interpret::{self, Interpreter, Tensor};
use nnc_compiler::{FrontendOptions, compile_to_ir, ir};

fn graph(example: &str) -> ir::Graph {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(example);
    let source = std::fs::read_to_string(path).unwrap();
    compile_to_ir(&source, &FrontendOptions::default())
        .unwrap()
        .networks
        .remove(0)
}

fn mobilenet(c: &mut Criterion) {
    let graph = graph("mobilenet_v2.nn");
    let weights = interpret::random_weights(&graph, 0);
    let image = Array4::from_shape_fn((1, 3, 224, 224), |(_, c, h, w)| {
        ((c * 7 + h * 3 + w) % 17) as f32 / 17.0
    });
    let interpreter = Interpreter::new(&graph, weights.clone()).unwrap();
    let mut generated = MobilenetV2::from_weights(weights).unwrap();
    let input = [("image", Tensor::F32(image.clone().into_dyn()))];

    let mut group = c.benchmark_group("mobilenet_v2");
    group.sample_size(20);
    group.bench_function("generated", |b| {
        b.iter(|| generated.forward(image.view()).unwrap()[[0, 0]])
    });
    group.bench_function("interpreter", |b| {
        b.iter(|| interpreter.run(&input).unwrap())
    });
    group.finish();
}

fn mlp(c: &mut Criterion) {
    let graph = graph("mlp.nn");
    let weights = interpret::random_weights(&graph, 0);
    let x = Array2::from_shape_fn((1, 784), |(_, j)| (j % 13) as f32 / 13.0);
    let interpreter = Interpreter::new(&graph, weights.clone()).unwrap();
    let mut generated = Mlp::from_weights(weights).unwrap();
    let input = [("x", Tensor::F32(x.clone().into_dyn()))];

    let mut group = c.benchmark_group("mlp");
    group.bench_function("generated", |b| {
        b.iter(|| generated.forward(x.view()).unwrap()[[0, 0]])
    });
    group.bench_function("interpreter", |b| {
        b.iter(|| interpreter.run(&input).unwrap())
    });
    group.finish();
}

criterion_group!(benches, mobilenet, mlp);
criterion_main!(benches);
