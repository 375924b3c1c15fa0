//! Times MobileNetV2's depthwise blocks run layer by layer and band by band
//! (`PackedDepthwiseBlock`), alternating the two call by call: the expansion and depthwise layer
//! alone (`pair`), and with the projection after them (`block`, the projection run apart in the
//! layer-by-layer time). Blocks without an expansion (the first) time the depthwise layer and
//! the projection.
//!
//! ```text
//! cargo run --release -p nnc-runtime --example pointwise_depthwise_timing -- [threads] [calls]
//! ```

use nnc_runtime::kernels::activation::Activation;
use nnc_runtime::kernels::conv::{
    Conv2dOptions, ConvWorkspace, PackedConv2dChannelsLast, PackedDepthwiseBlock,
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
    let values = |n: usize, seed: usize| -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 + seed * 104729) % 1000) as f32 / 1000.0 - 0.5)
            .collect()
    };
    // (size, in, wide, stride, out, residual); `in == 0`: no expansion.
    for (size, in_channels, wide, stride, out, residual) in [
        (112, 0, 32, 1, 16, false),
        (112, 16, 96, 2, 24, false),
        (56, 24, 144, 1, 24, true),
        (56, 24, 144, 2, 32, false),
        (28, 32, 192, 1, 32, true),
        (28, 32, 192, 2, 64, false),
        (14, 64, 384, 1, 64, true),
        (14, 96, 576, 2, 160, false),
        (7, 160, 960, 1, 160, true),
    ] {
        let expand = (in_channels > 0).then(|| {
            PackedConv2dChannelsLast::new(
                &values(wide * in_channels, 1),
                [wide, in_channels, 1, 1],
                Some(&values(wide, 2)),
                Conv2dOptions::default(),
            )
            .unwrap()
            .with_activation(Some(Activation::Relu6))
        });
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
        let project = PackedConv2dChannelsLast::new(
            &values(out * wide, 6),
            [out, wide, 1, 1],
            Some(&values(out, 7)),
            Conv2dOptions::default(),
        )
        .unwrap();
        let input_shape = [
            1,
            size,
            size,
            in_channels.max(wide * usize::from(in_channels == 0)),
        ];
        let input = values(input_shape.iter().product(), 5);
        let wide_shape = match &expand {
            Some(expand) => expand.output_shape(input_shape).unwrap(),
            None => input_shape,
        };
        let depthwise_shape = depthwise.output_shape(wide_shape).unwrap();
        let output_shape = project.output_shape(depthwise_shape).unwrap();
        let residual = residual.then(|| values(output_shape.iter().product(), 8));
        let mut wide_values = vec![0.0; wide_shape.iter().product()];
        let mut depthwise_values = vec![0.0; depthwise_shape.iter().product()];
        let mut fused_depthwise = depthwise_values.clone();
        let mut separate = vec![0.0; output_shape.iter().product()];
        let mut fused = separate.clone();
        let mut workspace = ConvWorkspace::new();
        let pair = PackedDepthwiseBlock::new(expand.clone(), depthwise.clone(), None).unwrap();
        let block =
            PackedDepthwiseBlock::new(expand.clone(), depthwise.clone(), Some(project.clone()))
                .unwrap();
        let project_into = |input: &[f32], output: &mut [f32], workspace: &mut _| {
            match &residual {
                Some(residual) => {
                    project.forward_residual(input, depthwise_shape, residual, output, workspace)
                }
                None => project.forward(input, depthwise_shape, output, workspace),
            }
            .unwrap()
        };
        let mut times = [Vec::new(), Vec::new(), Vec::new()];
        for call in 0..calls + 5 {
            let started = Instant::now();
            let wide_input = match &expand {
                Some(expand) => {
                    expand
                        .forward(&input, input_shape, &mut wide_values, &mut workspace)
                        .unwrap();
                    &wide_values
                }
                None => &input,
            };
            depthwise
                .forward(
                    wide_input,
                    wide_shape,
                    &mut depthwise_values,
                    &mut workspace,
                )
                .unwrap();
            project_into(&depthwise_values, &mut separate, &mut workspace);
            let separate_time = started.elapsed().as_secs_f64();
            let started = Instant::now();
            pair.forward(&input, input_shape, &mut fused_depthwise, &mut workspace)
                .unwrap();
            project_into(&fused_depthwise, &mut fused, &mut workspace);
            let pair_time = started.elapsed().as_secs_f64();
            let started = Instant::now();
            match &residual {
                Some(residual) => block.forward_residual(
                    &input,
                    input_shape,
                    residual,
                    &mut fused,
                    &mut workspace,
                ),
                None => block.forward(&input, input_shape, &mut fused, &mut workspace),
            }
            .unwrap();
            let block_time = started.elapsed().as_secs_f64();
            if call >= 5 {
                for (times, time) in times.iter_mut().zip([separate_time, pair_time, block_time]) {
                    times.push(time);
                }
            }
        }
        assert_eq!(separate, fused, "{size} {in_channels} {wide} {stride}");
        let [separate, pair, block] = times.map(|mut times| {
            times.sort_by(f64::total_cmp);
            times[times.len() / 2] * 1e6
        });
        println!(
            "{size}x{size} {in_channels}->{wide}->{out} s{stride}: separate {separate:.1} us, \
             pair + projection {pair:.1} us, block {block:.1} us, block / pair {:.3}",
            block / pair
        );
    }
}
