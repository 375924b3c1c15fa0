//! The int8 convolution on MobileNetV2's and ResNet-18's shapes, channels-last, reading the
//! quantized bytes the layer before wrote and writing bytes quantized for the next layer (as
//! generated code links two int8 layers), ReLU6 fused, at one and two threads; and MobileNetV2's
//! stem, which quantizes the network's f32 input.
//!
//! Run with `cargo bench -p nnc-runtime --bench int8_conv`; throughput lines read as GMAC/s
//! (elements are multiply-adds).

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use nnc_runtime::kernels::activation::Activation;
use nnc_runtime::kernels::conv::{Conv2dOptions, ConvWorkspace};
use nnc_runtime::kernels::int8::{ActivationQuantization, Int8Input, Int8Output, PackedConv2dInt8};
use std::hint::black_box;
use std::time::Duration;

/// A layer: name, input channels, output channels, kernel, stride, groups, input size.
const LAYERS: [(&str, usize, usize, usize, usize, usize, usize); 5] = [
    ("pointwise_16_96", 16, 96, 1, 1, 1, 112),
    ("pointwise_24_144", 24, 144, 1, 1, 1, 56),
    ("depthwise_32", 32, 32, 3, 1, 32, 112),
    ("depthwise_144", 144, 144, 3, 1, 144, 56),
    ("conv3x3_64", 64, 64, 3, 1, 1, 56),
];

fn layer(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    groups: usize,
) -> PackedConv2dInt8 {
    let length = out_channels * (in_channels / groups) * kernel * kernel;
    let weight: Vec<f32> = (0..length)
        .map(|index| ((index * 7919 % 255) as f32 - 127.0) / 300.0)
        .collect();
    let bias: Vec<f32> = (0..out_channels)
        .map(|index| index as f32 / 100.0)
        .collect();
    let options = Conv2dOptions {
        stride: [stride; 2],
        padding: [kernel / 2; 2],
        dilation: [1, 1],
        groups,
    };
    let quantization = ActivationQuantization {
        scale: 0.02,
        zero_point: 3,
    };
    PackedConv2dInt8::new(
        &weight,
        [out_channels, in_channels / groups, kernel, kernel],
        Some(&bias),
        options,
        true,
        quantization,
    )
    .unwrap()
    .with_activation(Some(Activation::Relu6))
}

/// A layer's input: the bytes the layer before wrote, or the network's f32 values.
enum Input {
    Quantized(Vec<u8>),
    Float(Vec<f32>),
}

/// `length` f32 values spread over about [-1.2, 1.3], as a network's activations.
fn float_input(length: usize) -> Input {
    Input::Float(
        (0..length)
            .map(|index| (index * 31 % 251) as f32 / 100.0 - 1.2)
            .collect(),
    )
}

/// Times `conv` (from `input`, shaped `input_shape`, channels-last) into bytes for a 1x1 layer
/// after it, at one and two threads.
fn bench_layer(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    conv: &PackedConv2dInt8,
    input: &Input,
    input_shape: [usize; 4],
    macs: usize,
) {
    let output_shape = conv.output_shape(input_shape).unwrap();
    let out_channels = output_shape[3];
    // The next layer, which sets how the output bytes are laid out.
    let next = layer(out_channels, out_channels, 1, 1, 1);
    let (_, output_stride) = next.quantized_input_layout();
    let mut output = vec![0u8; output_shape[1] * output_shape[2] * output_stride];
    group.throughput(Throughput::Elements(macs as u64));
    let mut workspace = ConvWorkspace::new();
    for threads in [1, 2] {
        nnc_runtime::set_num_threads(threads);
        group.bench_function(BenchmarkId::new(name, format!("t{threads}")), |bencher| {
            bencher.iter(|| {
                let input = match input {
                    Input::Quantized(bytes) => Int8Input::Quantized(black_box(bytes)),
                    Input::Float(values) => Int8Input::Float(black_box(values)),
                };
                conv.forward_int8(
                    input,
                    input_shape,
                    None,
                    Int8Output::QuantizedFor {
                        next: &next,
                        bytes: &mut output,
                    },
                    &mut workspace,
                )
                .unwrap()
            })
        });
    }
}

fn main() {
    let mut criterion = Criterion::default()
        .configure_from_args()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    let mut group = criterion.benchmark_group("int8_conv");
    for (name, in_channels, out_channels, kernel, stride, groups, size) in LAYERS {
        let conv = layer(in_channels, out_channels, kernel, stride, groups);
        let (_, input_stride) = conv.quantized_input_layout();
        let input = Input::Quantized(
            (0..size * size * input_stride)
                .map(|index| (index * 31 % 251) as u8)
                .collect(),
        );
        let out_size = (size + 2 * (kernel / 2) - kernel) / stride + 1;
        let macs = out_size * out_size * out_channels * (in_channels / groups) * kernel * kernel;
        bench_layer(
            &mut group,
            name,
            &conv,
            &input,
            [1, size, size, in_channels],
            macs,
        );
    }
    // The stem: the network's f32 input (channels-last), quantized by the layer.
    let stem = layer(3, 32, 3, 2, 1);
    let input = float_input(224 * 224 * 3);
    let macs = 112 * 112 * 32 * 27;
    bench_layer(
        &mut group,
        "stem_3_32",
        &stem,
        &input,
        [1, 224, 224, 3],
        macs,
    );
    // ResNet-18's first downsampling shortcut: a strided 1x1 layer on the f32 block output.
    let downsample = layer(64, 128, 1, 2, 1);
    let input = float_input(56 * 56 * 64);
    bench_layer(
        &mut group,
        "downsample_64_128",
        &downsample,
        &input,
        [1, 56, 56, 64],
        28 * 28 * 128 * 64,
    );
    group.finish();
}
