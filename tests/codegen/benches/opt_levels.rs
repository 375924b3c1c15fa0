//! Latency of generated code at -O2 against -O0 (no batch-norm folding, no fusion, no in-place
//! reuse), on ResNet-18 and MobileNetV2 at 224×224. `cargo bench -p nnc-codegen-tests --bench opt_levels`.

use criterion::{Criterion, criterion_group, criterion_main};
use ndarray::Array4;
use nnc_codegen_tests::{example_mobilenet_v2, example_resnet18, o0_mobilenet_v2, o0_resnet18};

fn opt_levels(c: &mut Criterion) {
    let image = Array4::from_shape_fn((1, 3, 224, 224), |(_, c, h, w)| {
        ((c * 7 + h * 3 + w) % 17) as f32 / 17.0
    });

    let mut group = c.benchmark_group("resnet18");
    group.sample_size(20);
    let mut optimized = example_resnet18::Resnet18::with_random_weights(0);
    let mut unoptimized = o0_resnet18::Resnet18::with_random_weights(0);
    group.bench_function("O2", |b| {
        b.iter(|| optimized.forward(image.view()).unwrap()[[0, 0]])
    });
    group.bench_function("O0", |b| {
        b.iter(|| unoptimized.forward(image.view()).unwrap()[[0, 0]])
    });
    group.finish();

    let mut group = c.benchmark_group("mobilenet_v2");
    group.sample_size(20);
    let mut optimized = example_mobilenet_v2::MobilenetV2::with_random_weights(0);
    let mut unoptimized = o0_mobilenet_v2::MobilenetV2::with_random_weights(0);
    group.bench_function("O2", |b| {
        b.iter(|| optimized.forward(image.view()).unwrap()[[0, 0]])
    });
    group.bench_function("O0", |b| {
        b.iter(|| unoptimized.forward(image.view()).unwrap()[[0, 0]])
    });
    group.finish();
}

criterion_group!(benches, opt_levels);
criterion_main!(benches);
