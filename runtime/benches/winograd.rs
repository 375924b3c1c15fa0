//! Winograd (F(4x4, 3x3) up to 256 channels, F(2x2, 3x3) at 512, where the automatic choice
//! takes the GEMM) against the GEMM (im2col) method on ResNet-18's 3x3 stride-1 layers (padding
//! 1, bias and ReLU fused), at one and two threads.
//!
//! Run with `cargo bench -p nnc-runtime --bench winograd`; throughput lines read as effective
//! GFLOP/s: the FLOPs of direct convolution (each multiply-add counts two) over the time taken,
//! so the methods compare directly even though Winograd does fewer multiplications.

use criterion::{BenchmarkId, Criterion, Throughput};
use nnc_runtime::kernels::activation::Activation;
use nnc_runtime::kernels::conv::{Conv2dOptions, ConvMethodChoice, ConvWorkspace, PackedConv2d};
use std::hint::black_box;
use std::time::Duration;

/// A layer: channels (in and out) and image size.
const LAYERS: [(usize, usize); 4] = [(64, 56), (128, 28), (256, 14), (512, 7)];

fn main() {
    let mut criterion = Criterion::default()
        .configure_from_args()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    let mut group = criterion.benchmark_group("winograd");
    for (channels, size) in LAYERS {
        let options = Conv2dOptions {
            padding: [1, 1],
            ..Conv2dOptions::default()
        };
        let weight_shape = [channels, channels, 3, 3];
        let weight: Vec<f32> = (0..channels * channels * 9)
            .map(|index| (index % 7) as f32 / 70.0 - 0.05)
            .collect();
        let bias: Vec<f32> = (0..channels).map(|index| index as f32 / 100.0).collect();
        let input: Vec<f32> = (0..channels * size * size)
            .map(|index| (index % 11) as f32 / 11.0 - 0.5)
            .collect();
        let input_shape = [1, channels, size, size];
        let build = |choice| {
            PackedConv2d::new_with_method(&weight, weight_shape, Some(&bias), options, choice)
                .unwrap()
                .with_activation(Some(Activation::Relu))
        };
        let methods = [
            ("gemm", build(ConvMethodChoice::Gemm)),
            ("winograd", build(ConvMethodChoice::Winograd)),
        ];
        let output_length = channels * size * size;
        group.throughput(Throughput::Elements(
            (2 * output_length * channels * 9) as u64,
        ));
        let mut output = vec![0.0; output_length];
        let mut workspace = ConvWorkspace::new();
        for threads in [1, 2] {
            nnc_runtime::set_num_threads(threads);
            for (name, conv) in &methods {
                let id = BenchmarkId::new(*name, format!("c{channels}_{size}x{size}_t{threads}"));
                group.bench_function(id, |bencher| {
                    bencher.iter(|| {
                        conv.forward(black_box(&input), input_shape, &mut output, &mut workspace)
                            .unwrap()
                    })
                });
            }
        }
        nnc_runtime::set_num_threads(0);
    }
    group.finish();
    criterion.final_summary();
}
