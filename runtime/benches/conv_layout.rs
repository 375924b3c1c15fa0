//! The same convolutions over NCHW and channels-last (NHWC) images, on MobileNetV2's shapes:
//! the stem's 3×3 convolution (also from NCHW to channels-last in one pass), depthwise 3×3 at
//! stride 1 and 2, and 1×1 expansions, plus the transposes that change layout.
//!
//! Run with `cargo bench -p nnc-runtime --bench conv_layout`; throughput lines read as GFLOP/s
//! (each multiply-add counts two), or as elements per second for the transposes.

use criterion::{BenchmarkId, Criterion, Throughput};
use nnc_runtime::kernels::activation::Activation;
use nnc_runtime::kernels::conv::{
    Conv2dOptions, ConvWorkspace, PackedConv2d, PackedConv2dChannelsLast,
};
use nnc_runtime::kernels::shape::permute_any_type as permute;
use std::hint::black_box;
use std::time::Duration;

/// A layer: name, channels in, channels out, input size, kernel, stride, groups.
type Layer = (&'static str, usize, usize, usize, usize, usize, usize);

const LAYERS: [Layer; 7] = [
    ("stem3x3_s2_c3_c32_224", 3, 32, 224, 3, 2, 1),
    ("dw3x3_s1_c32_112", 32, 32, 112, 3, 1, 32),
    ("dw3x3_s2_c96_112", 96, 96, 112, 3, 2, 96),
    ("dw3x3_s1_c144_56", 144, 144, 56, 3, 1, 144),
    ("dw3x3_s2_c576_14", 576, 576, 14, 3, 2, 576),
    ("pw1x1_c24_c144_56", 24, 144, 56, 1, 1, 1),
    ("pw1x1_c96_c576_14", 96, 576, 14, 1, 1, 1),
];

fn main() {
    let mut criterion = Criterion::default()
        .configure_from_args()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    benchmark_layers(&mut criterion);
    benchmark_transposes(&mut criterion);
    criterion.final_summary();
}

fn benchmark_layers(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("conv_layout");
    for (name, in_channels, out_channels, size, kernel, stride, groups) in LAYERS {
        let options = Conv2dOptions {
            stride: [stride, stride],
            padding: [kernel / 2, kernel / 2],
            groups,
            ..Conv2dOptions::default()
        };
        let weight_shape = [out_channels, in_channels / groups, kernel, kernel];
        let weight: Vec<f32> = (0..weight_shape.iter().product::<usize>())
            .map(|index| (index % 7) as f32 / 7.0 - 0.5)
            .collect();
        let bias: Vec<f32> = (0..out_channels)
            .map(|index| index as f32 / 100.0)
            .collect();
        let input: Vec<f32> = (0..in_channels * size * size)
            .map(|index| (index % 11) as f32 / 11.0 - 0.5)
            .collect();
        let nchw = PackedConv2d::new(&weight, weight_shape, Some(&bias), options)
            .unwrap()
            .with_activation(Some(Activation::Relu6));
        let nhwc = PackedConv2dChannelsLast::new(&weight, weight_shape, Some(&bias), options)
            .unwrap()
            .with_activation(Some(Activation::Relu6));
        let nchw_shape = [1, in_channels, size, size];
        let nhwc_shape = [1, size, size, in_channels];
        let output_length: usize = nchw.output_shape(nchw_shape).unwrap().iter().product();
        let macs = output_length * (in_channels / groups) * kernel * kernel;
        group.throughput(Throughput::Elements(2 * macs as u64));
        let mut output = vec![0.0; output_length];
        let mut workspace = ConvWorkspace::new();
        group.bench_function(BenchmarkId::new("nchw", name), |bencher| {
            bencher.iter(|| {
                nchw.forward(black_box(&input), nchw_shape, &mut output, &mut workspace)
                    .unwrap()
            })
        });
        group.bench_function(BenchmarkId::new("nhwc", name), |bencher| {
            bencher.iter(|| {
                nhwc.forward(black_box(&input), nhwc_shape, &mut output, &mut workspace)
                    .unwrap()
            })
        });
        if groups == 1 && kernel > 1 {
            // The layout change in the convolution: NCHW in, channels-last out.
            group.bench_function(BenchmarkId::new("nchw_to_nhwc", name), |bencher| {
                bencher.iter(|| {
                    nhwc.forward_from_nchw(
                        black_box(&input),
                        nchw_shape,
                        &mut output,
                        &mut workspace,
                    )
                    .unwrap()
                })
            });
        }
    }
    group.finish();
}

fn benchmark_transposes(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("layout_change");
    // An RGB image (MobileNetV2's int8 input), the first activation, the last one.
    for (channels, size) in [(3usize, 224usize), (32, 112), (1280, 7)] {
        let shape = [1, channels, size, size];
        let input: Vec<f32> = (0..channels * size * size)
            .map(|index| index as f32)
            .collect();
        let mut output = vec![0.0; input.len()];
        group.throughput(Throughput::Elements(input.len() as u64));
        group.bench_function(
            BenchmarkId::new("to_nhwc", format!("c{channels}_{size}")),
            |bencher| {
                bencher.iter(|| {
                    permute(black_box(&input), &shape, &[0, 2, 3, 1], &mut output).unwrap()
                })
            },
        );
    }
    group.finish();
}
