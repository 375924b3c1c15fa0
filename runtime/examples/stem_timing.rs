//! Times ResNet-18's stem: the 7x7/s2 convolution (3 to 64 channels, bias and ReLU) alone, with
//! its 3x3/s2 max pooling fused, and the pooling alone (on the convolution's output, 3.2 MB,
//! which it reads from L3 or memory), and prints the median microseconds per call of each.
//!
//! ```text
//! cargo run --release -p nnc-runtime --example stem_timing -- THREADS CALLS
//! ```

use nnc_runtime::kernels::activation::Activation;
use nnc_runtime::kernels::conv::{Conv2dOptions, ConvWorkspace, PackedConv2d, PackedConv2dMaxPool};
use nnc_runtime::kernels::pool::MaxPool2dOptions;
use std::hint::black_box;
use std::time::Instant;

fn main() {
    let arguments: Vec<usize> = std::env::args()
        .skip(1)
        .map(|argument| argument.parse().expect("THREADS CALLS"))
        .collect();
    let argument = |index: usize, default: usize| arguments.get(index).copied().unwrap_or(default);
    let (threads, calls) = (argument(0, 1), argument(1, 200).max(1));
    nnc_runtime::set_num_threads(threads);
    let weight: Vec<f32> = (0..64 * 3 * 49)
        .map(|index| (index % 13) as f32 / 130.0 - 0.05)
        .collect();
    let bias: Vec<f32> = (0..64).map(|index| index as f32 / 100.0 - 0.3).collect();
    let input: Vec<f32> = (0..3 * 224 * 224)
        .map(|index| (index % 17) as f32 / 17.0 - 0.5)
        .collect();
    let options = Conv2dOptions {
        stride: [2, 2],
        padding: [3, 3],
        ..Conv2dOptions::default()
    };
    let conv = PackedConv2d::new(&weight, [64, 3, 7, 7], Some(&bias), options)
        .unwrap()
        .with_activation(Some(Activation::Relu));
    let pool = MaxPool2dOptions {
        stride: [2, 2],
        padding: [1, 1],
        ..MaxPool2dOptions::new([3, 3])
    };
    let pooled = PackedConv2dMaxPool::new(conv.clone(), pool);
    let shape = [1, 3, 224, 224];
    let mut workspace = ConvWorkspace::new();
    let mut time = |run: &mut dyn FnMut(&mut ConvWorkspace)| {
        let mut times: Vec<f64> = (0..calls + 20)
            .map(|_| {
                let start = Instant::now();
                run(&mut workspace);
                start.elapsed().as_secs_f64() * 1e6
            })
            .skip(20)
            .collect();
        times.sort_by(f64::total_cmp);
        times[times.len() / 2]
    };
    let mut conv_output = vec![0.0; 64 * 112 * 112];
    let conv_alone = time(&mut |workspace| {
        conv.forward(black_box(&input), shape, &mut conv_output, workspace)
            .unwrap()
    });
    let mut pooled_output = vec![0.0; 64 * 56 * 56];
    let with_pool = time(&mut |workspace| {
        pooled
            .forward(black_box(&input), shape, &mut pooled_output, workspace)
            .unwrap()
    });
    let pool_alone = time(&mut |_| {
        nnc_runtime::kernels::pool::max_pool2d(
            black_box(&conv_output),
            [1, 64, 112, 112],
            &pool,
            &mut pooled_output,
        )
        .unwrap()
    });
    println!("conv {conv_alone:.1}  conv+pool {with_pool:.1}  pool {pool_alone:.1}");
}
