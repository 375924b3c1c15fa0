//! Pooling and depthwise convolution at the shapes of ResNet-18 and MobileNetV2, over NCHW and
//! channels-last (NHWC) images, and ResNet-18's stem with its max pooling (the two layers apart
//! and `PackedConv2dMaxPool`), with one and two threads.
//!
//! Run with `cargo bench -p nnc-runtime --bench pool`. Pooling throughput reads as bytes per
//! second (input read plus output written); depthwise throughput as FLOP/s (a multiply-add is
//! two).

use criterion::{BenchmarkId, Criterion, Throughput};
use nnc_runtime::kernels::activation::Activation;
use nnc_runtime::kernels::conv::{
    Conv2dOptions, ConvWorkspace, PackedConv2d, PackedConv2dChannelsLast, PackedConv2dMaxPool,
};
use nnc_runtime::kernels::pool::{self, AvgPool2dOptions, MaxPool2dOptions};
use nnc_runtime::set_num_threads;
use std::hint::black_box;
use std::time::Duration;

/// A pooling case: name, channels, input size, kernel, stride, padding.
type PoolCase = (&'static str, usize, usize, usize, usize, usize);

const MAX_POOLS: [PoolCase; 2] = [
    ("max3x3_s2_p1_c64_112", 64, 112, 3, 2, 1),
    ("max2x2_s2_c64_56", 64, 56, 2, 2, 0),
];

const AVG_POOLS: [PoolCase; 2] = [
    ("avg3x3_s2_p1_c64_112", 64, 112, 3, 2, 1),
    ("avg3x3_s1_p1_c192_28", 192, 28, 3, 1, 1),
];

/// A depthwise layer: name, channels, input size, stride.
type DepthwiseCase = (&'static str, usize, usize, usize);

const DEPTHWISE: [DepthwiseCase; 5] = [
    ("dw3x3_s1_c32_112", 32, 112, 1),
    ("dw3x3_s2_c96_112", 96, 112, 2),
    ("dw3x3_s1_c144_56", 144, 56, 1),
    ("dw3x3_s2_c144_56", 144, 56, 2),
    ("dw3x3_s1_c576_14", 576, 14, 1),
];

fn main() {
    let mut criterion = Criterion::default()
        .configure_from_args()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for threads in [1, 2] {
        set_num_threads(threads);
        benchmark_pools(&mut criterion, threads);
        benchmark_depthwise(&mut criterion, threads);
        benchmark_stem(&mut criterion, threads);
    }
    set_num_threads(0);
    criterion.final_summary();
}

fn data(length: usize) -> Vec<f32> {
    (0..length)
        .map(|index| (index % 13) as f32 / 13.0 - 0.5)
        .collect()
}

fn benchmark_pools(criterion: &mut Criterion, threads: usize) {
    let mut group = criterion.benchmark_group(format!("pool_t{threads}"));
    for (name, channels, size, kernel, stride, padding) in MAX_POOLS {
        let mut options = MaxPool2dOptions::new([kernel, kernel]);
        options.stride = [stride, stride];
        options.padding = [padding, padding];
        let shape = [1, channels, size, size];
        let output_shape = pool::max_pool2d_output_shape(shape, &options).unwrap();
        let input = data(shape.iter().product());
        let mut output = vec![0.0; output_shape.iter().product()];
        group.throughput(Throughput::Bytes(4 * (input.len() + output.len()) as u64));
        group.bench_function(BenchmarkId::new("nchw", name), |bencher| {
            bencher.iter(|| pool::max_pool2d(black_box(&input), shape, &options, &mut output))
        });
        {
            let nhwc_shape = [1, size, size, channels];
            group.bench_function(BenchmarkId::new("nhwc", name), |bencher| {
                bencher.iter(|| {
                    pool::max_pool2d_channels_last(
                        black_box(&input),
                        nhwc_shape,
                        &options,
                        &mut output,
                    )
                })
            });
        }
    }
    for (name, channels, size, kernel, stride, padding) in AVG_POOLS {
        let mut options = AvgPool2dOptions::new([kernel, kernel]);
        options.stride = [stride, stride];
        options.padding = [padding, padding];
        let shape = [1, channels, size, size];
        let output_shape = pool::avg_pool2d_output_shape(shape, &options).unwrap();
        let input = data(shape.iter().product());
        let mut output = vec![0.0; output_shape.iter().product()];
        group.throughput(Throughput::Bytes(4 * (input.len() + output.len()) as u64));
        group.bench_function(BenchmarkId::new("nchw", name), |bencher| {
            bencher.iter(|| pool::avg_pool2d(black_box(&input), shape, &options, &mut output))
        });
        {
            let nhwc_shape = [1, size, size, channels];
            group.bench_function(BenchmarkId::new("nhwc", name), |bencher| {
                bencher.iter(|| {
                    pool::avg_pool2d_channels_last(
                        black_box(&input),
                        nhwc_shape,
                        &options,
                        &mut output,
                    )
                })
            });
        }
    }
    for (channels, size) in [(1280usize, 7usize), (512, 7)] {
        let name = format!("global_avg_c{channels}_{size}");
        let input = data(channels * size * size);
        let mut output = vec![0.0; channels];
        group.throughput(Throughput::Bytes(4 * (input.len() + output.len()) as u64));
        let shape = [1, channels, size, size];
        group.bench_function(BenchmarkId::new("nchw", &name), |bencher| {
            bencher.iter(|| pool::global_avg_pool(black_box(&input), &shape, &mut output))
        });
        {
            let nhwc_shape = [1, size, size, channels];
            group.bench_function(BenchmarkId::new("nhwc", &name), |bencher| {
                bencher.iter(|| {
                    pool::global_avg_pool_channels_last(black_box(&input), nhwc_shape, &mut output)
                })
            });
        }
    }
    group.finish();
}

fn benchmark_depthwise(criterion: &mut Criterion, threads: usize) {
    let mut group = criterion.benchmark_group(format!("depthwise_t{threads}"));
    for (name, channels, size, stride) in DEPTHWISE {
        let options = Conv2dOptions {
            stride: [stride, stride],
            padding: [1, 1],
            groups: channels,
            ..Conv2dOptions::default()
        };
        let weight_shape = [channels, 1, 3, 3];
        let weight = data(channels * 9);
        let bias = data(channels);
        let input = data(channels * size * size);
        let nchw = PackedConv2d::new(&weight, weight_shape, Some(&bias), options)
            .unwrap()
            .with_activation(Some(Activation::Relu6));
        let nhwc = PackedConv2dChannelsLast::new(&weight, weight_shape, Some(&bias), options)
            .unwrap()
            .with_activation(Some(Activation::Relu6));
        let nchw_shape = [1, channels, size, size];
        let nhwc_shape = [1, size, size, channels];
        let output_length: usize = nchw.output_shape(nchw_shape).unwrap().iter().product();
        group.throughput(Throughput::Elements(2 * 9 * output_length as u64));
        let mut output = vec![0.0; output_length];
        let mut workspace = ConvWorkspace::new();
        group.bench_function(BenchmarkId::new("nchw", name), |bencher| {
            bencher
                .iter(|| nchw.forward(black_box(&input), nchw_shape, &mut output, &mut workspace))
        });
        group.bench_function(BenchmarkId::new("nhwc", name), |bencher| {
            bencher
                .iter(|| nhwc.forward(black_box(&input), nhwc_shape, &mut output, &mut workspace))
        });
    }
    group.finish();
}

/// ResNet-18's stem (7x7/s2, 3 to 64 channels, ReLU) and its 3x3/s2 max pooling on a 224x224
/// image: the convolution's whole output written and pooled after it, and the two run band by
/// band (`PackedConv2dMaxPool`). Throughput as the convolution's FLOP/s.
fn benchmark_stem(criterion: &mut Criterion, threads: usize) {
    let mut group = criterion.benchmark_group(format!("stem_max_pool_t{threads}"));
    let options = Conv2dOptions {
        stride: [2, 2],
        padding: [3, 3],
        ..Conv2dOptions::default()
    };
    let weight_shape = [64, 3, 7, 7];
    let conv = PackedConv2d::new(&data(64 * 3 * 49), weight_shape, Some(&data(64)), options)
        .unwrap()
        .with_activation(Some(Activation::Relu));
    let mut pool_options = MaxPool2dOptions::new([3, 3]);
    pool_options.stride = [2, 2];
    pool_options.padding = [1, 1];
    let fused = PackedConv2dMaxPool::new(conv.clone(), pool_options);
    let shape = [1, 3, 224, 224];
    let input = data(shape.iter().product());
    let conv_shape = conv.output_shape(shape).unwrap();
    let mut unpooled = vec![0.0; conv_shape.iter().product()];
    let mut output = vec![0.0; fused.output_shape(shape).unwrap().iter().product()];
    let mut workspace = ConvWorkspace::new();
    group.throughput(Throughput::Elements(2 * 147 * unpooled.len() as u64));
    group.bench_function("apart", |bencher| {
        bencher.iter(|| {
            conv.forward(black_box(&input), shape, &mut unpooled, &mut workspace)
                .unwrap();
            pool::max_pool2d(&unpooled, conv_shape, &pool_options, &mut output)
        })
    });
    group.bench_function("fused", |bencher| {
        bencher.iter(|| fused.forward(black_box(&input), shape, &mut output, &mut workspace))
    });
    group.finish();
}
