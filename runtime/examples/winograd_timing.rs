//! Times ResNet-18's Winograd layers (3x3, stride 1, padding 1, bias and ReLU) and prints the
//! median microseconds per call of each.
//!
//! ```text
//! cargo run --release -p nnc-runtime --example winograd_timing -- THREADS CALLS [COPIES]
//! ```
//!
//! With `COPIES` above 1, each layer is packed that many times and the calls take the copies in
//! turn, so that the transformed filters come from memory, as in a whole network (one copy
//! stays in the caches from call to call).

use nnc_runtime::kernels::activation::Activation;
use nnc_runtime::kernels::conv::{Conv2dOptions, ConvMethodChoice, ConvWorkspace, PackedConv2d};
use std::hint::black_box;
use std::time::Instant;

fn main() {
    let arguments: Vec<usize> = std::env::args()
        .skip(1)
        .map(|argument| argument.parse().expect("THREADS CALLS [COPIES]"))
        .collect();
    let argument = |index: usize, default: usize| arguments.get(index).copied().unwrap_or(default);
    let (threads, calls, copies) = (
        argument(0, 1),
        argument(1, 200).max(1),
        argument(2, 1).max(1),
    );
    nnc_runtime::set_num_threads(threads);
    let mut line = Vec::new();
    for (channels, size) in [(64, 56), (128, 28), (256, 14)] {
        let options = Conv2dOptions {
            padding: [1, 1],
            ..Conv2dOptions::default()
        };
        let weight: Vec<f32> = (0..channels * channels * 9)
            .map(|index| (index % 7) as f32 / 70.0 - 0.05)
            .collect();
        let bias: Vec<f32> = (0..channels).map(|index| index as f32 / 100.0).collect();
        let input: Vec<f32> = (0..channels * size * size)
            .map(|index| (index % 11) as f32 / 11.0 - 0.5)
            .collect();
        let convs: Vec<PackedConv2d> = (0..copies)
            .map(|_| {
                PackedConv2d::new_with_method(
                    &weight,
                    [channels, channels, 3, 3],
                    Some(&bias),
                    options,
                    ConvMethodChoice::Winograd,
                )
                .unwrap()
                .with_activation(Some(Activation::Relu))
            })
            .collect();
        let mut output = vec![0.0; channels * size * size];
        let mut workspace = ConvWorkspace::new();
        let shape = [1, channels, size, size];
        let mut times: Vec<f64> = (0..calls + 20)
            .map(|call| {
                let conv = &convs[call % copies];
                let start = Instant::now();
                conv.forward(black_box(&input), shape, &mut output, &mut workspace)
                    .unwrap();
                start.elapsed().as_secs_f64() * 1e6
            })
            .skip(20)
            .collect();
        times.sort_by(f64::total_cmp);
        line.push(format!("c{channels}@{size} {:.1}", times[times.len() / 2]));
    }
    println!("{}", line.join("  "));
}
