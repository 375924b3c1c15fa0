//! Times MobileNetV2's pointwise + depthwise pairs run one after the other and band by band
//! (`PackedPointwiseDepthwise`), alternating the two call by call.
//!
//! ```text
//! cargo run --release -p nnc-runtime --example pointwise_depthwise_timing -- [threads] [calls]
//! ```

use nnc_runtime::kernels::activation::Activation;
use nnc_runtime::kernels::conv::{
    Conv2dOptions, ConvWorkspace, PackedConv2dChannelsLast, PackedPointwiseDepthwise,
};
use std::time::Instant;

fn main() {
    let arguments: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a number"))
        .collect();
    let threads = arguments.first().copied().unwrap_or(1);
    let calls = arguments.get(1).copied().unwrap_or(100);
    nnc_runtime::set_num_threads(threads);
    // (size, in, wide, stride)
    for (size, in_channels, wide, stride) in [
        (112, 16, 96, 2),
        (56, 24, 144, 1),
        (56, 24, 144, 2),
        (28, 32, 192, 1),
        (28, 32, 192, 2),
        (14, 64, 384, 1),
        (14, 96, 576, 2),
        (7, 160, 960, 1),
    ] {
        let values = |n: usize, seed: usize| -> Vec<f32> {
            (0..n)
                .map(|i| ((i * 7919 + seed * 104729) % 1000) as f32 / 1000.0 - 0.5)
                .collect()
        };
        let pointwise = PackedConv2dChannelsLast::new(
            &values(wide * in_channels, 1),
            [wide, in_channels, 1, 1],
            Some(&values(wide, 2)),
            Conv2dOptions::default(),
        )
        .unwrap()
        .with_activation(Some(Activation::Relu6));
        let options = Conv2dOptions {
            stride: [stride, stride],
            padding: [1, 1],
            groups: wide,
            ..Conv2dOptions::default()
        };
        let depthwise = PackedConv2dChannelsLast::new(
            &values(wide * 9, 3),
            [wide, 1, 3, 3],
            Some(&values(wide, 4)),
            options,
        )
        .unwrap()
        .with_activation(Some(Activation::Relu6));
        let input_shape = [1, size, size, in_channels];
        let input = values(size * size * in_channels, 5);
        let wide_shape = pointwise.output_shape(input_shape).unwrap();
        let output_shape = depthwise.output_shape(wide_shape).unwrap();
        let mut wide_values = vec![0.0; wide_shape.iter().product()];
        let mut separate = vec![0.0; output_shape.iter().product()];
        let mut fused = separate.clone();
        let mut workspace = ConvWorkspace::new();
        let pair = PackedPointwiseDepthwise::new(pointwise.clone(), depthwise.clone()).unwrap();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for call in 0..calls + 5 {
            let started = Instant::now();
            pointwise
                .forward(&input, input_shape, &mut wide_values, &mut workspace)
                .unwrap();
            depthwise
                .forward(&wide_values, wide_shape, &mut separate, &mut workspace)
                .unwrap();
            let t_a = started.elapsed().as_secs_f64();
            let started = Instant::now();
            pair.forward(&input, input_shape, &mut fused, &mut workspace)
                .unwrap();
            let t_b = started.elapsed().as_secs_f64();
            if call >= 5 {
                a.push(t_a);
                b.push(t_b);
            }
        }
        assert_eq!(separate, fused, "{size} {in_channels} {wide} {stride}");
        a.sort_by(f64::total_cmp);
        b.sort_by(f64::total_cmp);
        let (a, b) = (a[a.len() / 2] * 1e6, b[b.len() / 2] * 1e6);
        println!(
            "{size}x{size} {in_channels}->{wide} s{stride}: separate {a:.1} us, banded {b:.1} us, {:.3}",
            b / a
        );
    }
}
