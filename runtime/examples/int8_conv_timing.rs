//! Times the int8 convolution (`PackedConv2dInt8`, channels-last) against the f32
//! `PackedConv2dChannelsLast` on the convolution shapes of ResNet-18 and MobileNetV2 at batch 1,
//! in one process: the two layers of a shape take turns call after call, so they share the
//! machine's load, and the medians are compared.
//!
//! ```text
//! cargo run --release -p nnc-runtime --example int8_conv_timing -- [--threads 1,2] \
//!     [--calls 50] [--max-isa amx|avx512vnni|avx2|portable] [--only resnet|mobilenet|NAME] \
//!     [--bytes]
//! ```
//!
//! `--bytes` times the int8 layer as it runs between int8 layers in a network: it reads bytes and
//! writes them quantized for the layer after it.
//!
//! One line per shape and thread count: the f32 and int8 medians in microseconds, the ratio
//! f32 / int8 (above 1: int8 is faster), the NCHW f32 `PackedConv2d` (Winograd for 3x3 stride
//! 1, what nnc runs ResNet with) and its ratio to int8, and the int8 GMAC/s; then the totals
//! per network (of the channels-last f32 and the int8 layers).

use nnc_runtime::kernels::activation::Activation;
use nnc_runtime::kernels::conv::{
    Conv2dOptions, ConvWorkspace, PackedConv2d, PackedConv2dChannelsLast,
};
use nnc_runtime::kernels::int8::{
    ActivationQuantization, Int8Input, Int8Isa, Int8Output, PackedConv2dInt8, set_max_isa,
};
use nnc_runtime::set_num_threads;
use std::hint::black_box;
use std::time::Instant;

/// One convolution: its network, name, input `[H, W, C]`, weight `[out, in / groups, k, k]`,
/// stride and padding (depthwise when `in / groups == 1` and `out > 1`).
struct Shape {
    network: &'static str,
    name: &'static str,
    input: [usize; 3],
    weight: [usize; 4],
    stride: usize,
    padding: usize,
}

const fn shape(
    network: &'static str,
    name: &'static str,
    input: [usize; 3],
    weight: [usize; 4],
    stride: usize,
    padding: usize,
) -> Shape {
    Shape {
        network,
        name,
        input,
        weight,
        stride,
        padding,
    }
}

const SHAPES: &[Shape] = &[
    shape(
        "resnet",
        "conv1 7x7 s2 3->64 @224",
        [224, 224, 3],
        [64, 3, 7, 7],
        2,
        3,
    ),
    shape(
        "resnet",
        "3x3 64->64 @56",
        [56, 56, 64],
        [64, 64, 3, 3],
        1,
        1,
    ),
    shape(
        "resnet",
        "3x3 s2 64->128 @56",
        [56, 56, 64],
        [128, 64, 3, 3],
        2,
        1,
    ),
    shape(
        "resnet",
        "3x3 128->128 @28",
        [28, 28, 128],
        [128, 128, 3, 3],
        1,
        1,
    ),
    shape(
        "resnet",
        "3x3 256->256 @14",
        [14, 14, 256],
        [256, 256, 3, 3],
        1,
        1,
    ),
    shape(
        "resnet",
        "3x3 512->512 @7",
        [7, 7, 512],
        [512, 512, 3, 3],
        1,
        1,
    ),
    shape(
        "resnet",
        "1x1 s2 64->128 @56",
        [56, 56, 64],
        [128, 64, 1, 1],
        2,
        0,
    ),
    shape(
        "resnet",
        "1x1 s2 128->256 @28",
        [28, 28, 128],
        [256, 128, 1, 1],
        2,
        0,
    ),
    shape(
        "resnet",
        "1x1 s2 256->512 @14",
        [14, 14, 256],
        [512, 256, 1, 1],
        2,
        0,
    ),
    shape(
        "mobilenet",
        "3x3 s2 3->32 @224",
        [224, 224, 3],
        [32, 3, 3, 3],
        2,
        1,
    ),
    shape(
        "mobilenet",
        "dw 3x3 32 @112",
        [112, 112, 32],
        [32, 1, 3, 3],
        1,
        1,
    ),
    shape(
        "mobilenet",
        "1x1 16->96 @112",
        [112, 112, 16],
        [96, 16, 1, 1],
        1,
        0,
    ),
    shape(
        "mobilenet",
        "1x1 24->144 @56",
        [56, 56, 24],
        [144, 24, 1, 1],
        1,
        0,
    ),
    shape(
        "mobilenet",
        "dw 3x3 144 @56",
        [56, 56, 144],
        [144, 1, 3, 3],
        1,
        1,
    ),
    shape(
        "mobilenet",
        "dw 3x3 s2 144 @56",
        [56, 56, 144],
        [144, 1, 3, 3],
        2,
        1,
    ),
    shape(
        "mobilenet",
        "1x1 144->24 @56",
        [56, 56, 144],
        [24, 144, 1, 1],
        1,
        0,
    ),
    shape(
        "mobilenet",
        "1x1 32->192 @28",
        [28, 28, 32],
        [192, 32, 1, 1],
        1,
        0,
    ),
    shape(
        "mobilenet",
        "dw 3x3 192 @28",
        [28, 28, 192],
        [192, 1, 3, 3],
        1,
        1,
    ),
    shape(
        "mobilenet",
        "1x1 192->32 @28",
        [28, 28, 192],
        [32, 192, 1, 1],
        1,
        0,
    ),
    shape(
        "mobilenet",
        "1x1 96->576 @14",
        [14, 14, 96],
        [576, 96, 1, 1],
        1,
        0,
    ),
    shape(
        "mobilenet",
        "dw 3x3 576 @14",
        [14, 14, 576],
        [576, 1, 3, 3],
        1,
        1,
    ),
    shape(
        "mobilenet",
        "1x1 576->96 @14",
        [14, 14, 576],
        [96, 576, 1, 1],
        1,
        0,
    ),
    shape(
        "mobilenet",
        "1x1 160->960 @7",
        [7, 7, 160],
        [960, 160, 1, 1],
        1,
        0,
    ),
    shape(
        "mobilenet",
        "dw 3x3 960 @7",
        [7, 7, 960],
        [960, 1, 3, 3],
        1,
        1,
    ),
    shape(
        "mobilenet",
        "1x1 960->160 @7",
        [7, 7, 960],
        [160, 960, 1, 1],
        1,
        0,
    ),
];

/// Deterministic values in about [-1, 1].
fn ramp(length: usize, seed: usize) -> Vec<f32> {
    (0..length)
        .map(|index| ((index * 7919 + seed * 13) % 251) as f32 / 125.0 - 1.0)
        .collect()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let value_of = |name: &str| {
        arguments
            .iter()
            .position(|argument| argument == name)
            .and_then(|index| arguments.get(index + 1))
            .cloned()
    };
    let threads: Vec<usize> = value_of("--threads")
        .unwrap_or_else(|| "1,2".to_owned())
        .split(',')
        .map(|count| count.parse().expect("--threads wants numbers"))
        .collect();
    let calls: usize = value_of("--calls").map_or(50, |calls| calls.parse().expect("--calls"));
    if let Some(isa) = value_of("--max-isa") {
        set_max_isa(match isa.as_str() {
            "portable" => Int8Isa::Portable,
            "avx2" => Int8Isa::Avx2,
            "avx512vnni" => Int8Isa::Avx512Vnni,
            "amx" => Int8Isa::Amx,
            other => panic!("--max-isa: unknown {other:?}"),
        });
    }
    let only = value_of("--only");
    let bytes = arguments.iter().any(|argument| argument == "--bytes");
    println!(
        "int8 isa: {}",
        nnc_runtime::kernels::int8::selected_isa().name()
    );
    for &thread_count in &threads {
        set_num_threads(thread_count);
        let mut totals: Vec<(&str, f64, f64)> = Vec::new();
        for shape in SHAPES.iter().filter(|shape| {
            only.as_deref()
                .is_none_or(|only| only == shape.network || shape.name.starts_with(only))
        }) {
            let [out, group_in, kernel, _] = shape.weight;
            let [height, width, channels] = shape.input;
            let groups = channels / group_in;
            let options = Conv2dOptions {
                stride: [shape.stride; 2],
                padding: [shape.padding; 2],
                dilation: [1, 1],
                groups,
            };
            let weight = ramp(shape.weight.iter().product(), 1);
            let bias = ramp(out, 2);
            let input_shape = [1, height, width, channels];
            let input = ramp(height * width * channels, 3);
            let f32_conv =
                PackedConv2dChannelsLast::new(&weight, shape.weight, Some(&bias), options)
                    .unwrap()
                    .with_activation(Some(Activation::Relu));
            let quantization = ActivationQuantization::from_range(-1.0, 1.0);
            let int8_conv = PackedConv2dInt8::new(
                &weight,
                shape.weight,
                Some(&bias),
                options,
                true,
                quantization,
            )
            .unwrap()
            .with_activation(Some(Activation::Relu));
            // The NCHW f32 layer (Winograd for 3x3 stride 1), which nnc picks for ResNet.
            let nchw_conv = PackedConv2d::new(&weight, shape.weight, Some(&bias), options)
                .unwrap()
                .with_activation(Some(Activation::Relu));
            let nchw_shape = [1, channels, height, width];
            let output_shape = f32_conv.output_shape(input_shape).unwrap();
            let mut output = vec![0.0; output_shape.iter().product()];
            let mut workspace = ConvWorkspace::new();
            // For --bytes: the int8 layer reads bytes and writes them quantized for a 1x1 layer
            // after it, as between the int8 layers of a network.
            let next = PackedConv2dInt8::new(
                &ramp(out * out, 4),
                [out, out, 1, 1],
                None,
                Conv2dOptions {
                    stride: [1, 1],
                    padding: [0, 0],
                    dilation: [1, 1],
                    groups: 1,
                },
                true,
                ActivationQuantization::from_range(0.0, 6.0),
            )
            .unwrap();
            let input_stride = int8_conv.quantized_input_layout().1;
            let input_bytes: Vec<u8> = (0..height * width * input_stride)
                .map(|index| (index * 37 % 251) as u8)
                .collect();
            let output_pixels = output_shape[1] * output_shape[2];
            let mut output_bytes = vec![0u8; output_pixels * next.quantized_input_layout().1];
            let (mut f32_times, mut int8_times, mut nchw_times) =
                (Vec::new(), Vec::new(), Vec::new());
            for call in 0..calls + 3 {
                let start = Instant::now();
                f32_conv
                    .forward(black_box(&input), input_shape, &mut output, &mut workspace)
                    .unwrap();
                let f32_time = start.elapsed().as_secs_f64();
                let start = Instant::now();
                if bytes {
                    int8_conv
                        .forward_int8(
                            Int8Input::Quantized(black_box(&input_bytes)),
                            input_shape,
                            None,
                            Int8Output::QuantizedFor {
                                next: &next,
                                bytes: &mut output_bytes,
                            },
                            &mut workspace,
                        )
                        .unwrap();
                } else {
                    int8_conv
                        .forward(black_box(&input), input_shape, &mut output, &mut workspace)
                        .unwrap();
                }
                let int8_time = start.elapsed().as_secs_f64();
                let start = Instant::now();
                nchw_conv
                    .forward(black_box(&input), nchw_shape, &mut output, &mut workspace)
                    .unwrap();
                let nchw_time = start.elapsed().as_secs_f64();
                if call >= 3 {
                    nchw_times.push(nchw_time);
                    f32_times.push(f32_time);
                    int8_times.push(int8_time);
                }
            }
            let (f32_median, int8_median) = (median(&mut f32_times), median(&mut int8_times));
            let nchw_median = median(&mut nchw_times);
            let macs = output.len() * group_in * kernel * kernel;
            println!(
                "threads={thread_count} {:<9} {:<24} f32 {:>8.1} us  int8 {:>8.1} us  f32/int8 {:>5.2}x  f32 nchw {:>8.1} us ({:>5.2}x)  int8 {:>6.1} GMAC/s",
                shape.network,
                shape.name,
                f32_median * 1e6,
                int8_median * 1e6,
                f32_median / int8_median,
                nchw_median * 1e6,
                nchw_median / int8_median,
                macs as f64 / int8_median / 1e9,
            );
            match totals
                .iter_mut()
                .find(|(network, ..)| *network == shape.network)
            {
                Some(total) => {
                    total.1 += f32_median;
                    total.2 += int8_median;
                }
                None => totals.push((shape.network, f32_median, int8_median)),
            }
        }
        for (network, f32_total, int8_total) in totals {
            println!(
                "threads={thread_count} {network} listed shapes: f32 {:.2} ms, int8 {:.2} ms, f32/int8 {:.2}x",
                f32_total * 1e3,
                int8_total * 1e3,
                f32_total / int8_total
            );
        }
    }
}
