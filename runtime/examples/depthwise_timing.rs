//! Times MobileNetV2's channels-last 3x3 depthwise layers alone (bias and ReLU6), on inputs and
//! outputs that start on a cache line as the arenas of generated code do, and prints the median
//! microseconds per call and the GMAC/s of each.
//!
//! ```text
//! cargo run --release -p nnc-runtime --example depthwise_timing -- [threads] [calls]
//! ```

use nnc_runtime::kernels::activation::Activation;
use nnc_runtime::kernels::conv::{Conv2dOptions, ConvWorkspace, PackedConv2dChannelsLast};
use std::hint::black_box;
use std::time::Instant;

/// `length` floats of `storage` from its first element on a 64-byte line.
fn aligned(storage: &mut [f32], length: usize) -> &mut [f32] {
    let skip = storage.as_ptr().align_offset(64);
    &mut storage[skip..skip + length]
}

fn main() {
    let arguments: Vec<usize> = std::env::args()
        .skip(1)
        .map(|argument| argument.parse().expect("[threads] [calls]"))
        .collect();
    let argument = |index: usize, default: usize| arguments.get(index).copied().unwrap_or(default);
    let (threads, calls) = (argument(0, 1), argument(1, 500).max(1));
    nnc_runtime::set_num_threads(threads);
    let values = |n: usize, seed: usize| -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 + seed * 104729) % 1000) as f32 / 1000.0 - 0.5)
            .collect()
    };
    // (input size, channels, stride): the depthwise layers of MobileNetV2 at 224 x 224.
    for (size, channels, stride) in [
        (112, 32, 1),
        (112, 96, 2),
        (56, 144, 1),
        (56, 144, 2),
        (28, 192, 1),
        (28, 192, 2),
        (14, 384, 1),
        (14, 576, 1),
        (14, 576, 2),
        (7, 960, 1),
    ] {
        let options = Conv2dOptions {
            stride: [stride, stride],
            padding: [1, 1],
            groups: channels,
            ..Conv2dOptions::default()
        };
        let layer = PackedConv2dChannelsLast::new(
            &values(channels * 9, 1),
            [channels, 1, 3, 3],
            Some(&values(channels, 2)),
            options,
        )
        .unwrap()
        .with_activation(Some(Activation::Relu6));
        let input_shape = [1, size, size, channels];
        let output_shape = layer.output_shape(input_shape).unwrap();
        let (input_length, output_length) = (
            input_shape.iter().product::<usize>(),
            output_shape.iter().product::<usize>(),
        );
        let mut input_storage = values(input_length + 16, 3);
        let input = aligned(&mut input_storage, input_length);
        let mut output_storage = vec![0.0; output_length + 16];
        let output = aligned(&mut output_storage, output_length);
        let mut workspace = ConvWorkspace::new();
        let mut times: Vec<f64> = (0..calls + 10)
            .map(|_| {
                let start = Instant::now();
                layer
                    .forward(black_box(input), input_shape, output, &mut workspace)
                    .unwrap();
                start.elapsed().as_secs_f64() * 1e6
            })
            .skip(10)
            .collect();
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        println!(
            "{size}x{size}x{channels} s{stride}: {median:.1} us, {:.1} GMAC/s",
            (output_length * 9) as f64 / median / 1e3
        );
    }
}
