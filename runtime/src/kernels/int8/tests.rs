//! The int8 kernels against a plain twin that computes the same formula in i64 and f64, on
//! random odd shapes, on every instruction set this processor has.

use super::gemm::{
    GemmOutput, Int8Epilogue, Int8Lhs, PackedInt8Weights, int8_gemm, int8_gemm_sums,
    quantize_filter,
};
use super::*;
use crate::kernels::activation::Activation;
use crate::kernels::conv::{Conv2dOptions, ConvWorkspace};
use proptest::prelude::*;

/// The instruction sets this processor can run.
fn available_isas() -> impl Iterator<Item = Int8Isa> {
    Int8Isa::ALL.into_iter().filter(|isa| isa.is_available())
}

/// A random u8 x s8 product: A's bytes, the filters (one per column) and the shape.
fn gemm_cases() -> impl Strategy<Value = (usize, usize, usize, Vec<u8>, Vec<f32>)> {
    (1..20usize, 1..90usize, 1..70usize).prop_flat_map(|(rows, depth, cols)| {
        (
            Just(rows),
            Just(depth),
            Just(cols),
            proptest::collection::vec(any::<u8>(), rows * depth.next_multiple_of(4)),
            proptest::collection::vec(-3.0f32..3.0, cols * depth),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The raw i32 sums of the GEMM equal the i64 sums of the quantized operands exactly.
    #[test]
    fn gemm_sums_are_exact_on_every_isa((rows, depth, cols, a, filters) in gemm_cases()) {
        let stride = depth.next_multiple_of(4);
        let weights = PackedInt8Weights::new(&filters, cols, depth, None, 1.0, 0);
        let quantized: Vec<Vec<i8>> =
            filters.chunks_exact(depth).map(|filter| quantize_filter(filter).1).collect();
        let mut expected = vec![0i32; rows * cols];
        for row in 0..rows {
            for (column, filter) in quantized.iter().enumerate() {
                let sum: i64 = (0..depth)
                    .map(|k| i64::from(a[row * stride + k]) * i64::from(filter[k]))
                    .sum();
                expected[row * cols + column] = i32::try_from(sum).unwrap();
            }
        }
        for isa in available_isas() {
            let mut sums = vec![i32::MIN; rows * cols];
            let lhs = Int8Lhs { data: &a, rows, stride };
            int8_gemm_sums(isa, lhs, &weights, &mut sums);
            prop_assert_eq!(&sums, &expected, "{}", isa.name());
        }
    }
}

/// A product whose epilogue is exact in f32: integer weights with 127 in every column (so each
/// column's scale is 1), input scale 1 and zero point 0, no bias. `(rows, depth, cols, A,
/// filters)`; the depth is often a whole number of AMX chunks (64 steps of k).
fn exact_epilogue_cases() -> impl Strategy<Value = (usize, usize, usize, Vec<u8>, Vec<f32>)> {
    let depth = prop_oneof![1..300usize, Just(64usize), Just(128), Just(192)];
    (1..110usize, depth, 1..70usize).prop_flat_map(|(rows, depth, cols)| {
        (
            Just(rows),
            Just(depth),
            Just(cols),
            proptest::collection::vec(any::<u8>(), rows * depth.next_multiple_of(4)),
            proptest::collection::vec(-127i32..=127, cols * depth).prop_map(move |mut filters| {
                for filter in filters.chunks_exact_mut(depth) {
                    filter[0] = 127;
                }
                filters.into_iter().map(|w| w as f32).collect()
            }),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The GEMM's strips with their epilogue (the AMX blocks of 32 rows where the processor has
    /// AMX), into f32 with a residual and into bytes, against the exact sums: with unit scales
    /// both outputs are exact.
    #[test]
    fn gemm_epilogues_are_exact_on_every_isa(
        (rows, depth, cols, a, filters) in exact_epilogue_cases(),
    ) {
        let stride = depth.next_multiple_of(4);
        let weights = PackedInt8Weights::new(&filters, cols, depth, None, 1.0, 0);
        let mut sums = vec![0i64; rows * cols];
        for row in 0..rows {
            for (column, filter) in filters.chunks_exact(depth).enumerate() {
                sums[row * cols + column] = (0..depth)
                    .map(|k| i64::from(a[row * stride + k]) * filter[k] as i64)
                    .sum();
            }
        }
        let residual: Vec<f32> = (0..rows * cols).map(|index| (index % 7) as f32 - 3.0).collect();
        let expected_float: Vec<f32> = sums
            .iter()
            .zip(&residual)
            .map(|(&sum, &skip)| (sum as f32 + skip).max(0.0))
            .collect();
        let expected_bytes: Vec<u8> = sums.iter().map(|&sum| sum.clamp(0, 255) as u8).collect();
        let lhs = Int8Lhs { data: &a, rows, stride };
        let relu = Int8Epilogue { residual: None, activation: Some(Activation::Relu) };
        for isa in available_isas() {
            let mut float = vec![f32::NAN; rows * cols];
            let epilogue = Int8Epilogue { residual: Some(&residual), ..relu };
            int8_gemm(isa, lhs, &weights, epilogue, GemmOutput::Float(&mut float));
            prop_assert_eq!(&float, &expected_float, "{}", isa.name());
            // Rows of the bytes are wider than the output; the byte past it stays as it was.
            let row_stride = cols + 1;
            let mut bytes = vec![7u8; rows * row_stride];
            let quantization = ActivationQuantization { scale: 1.0, zero_point: 0 };
            let output = GemmOutput::Quantized { bytes: &mut bytes, row_stride, quantization };
            int8_gemm(isa, lhs, &weights, relu, output);
            for row in 0..rows {
                prop_assert_eq!(
                    &bytes[row * row_stride..][..cols],
                    &expected_bytes[row * cols..][..cols],
                    "{} row {}", isa.name(), row
                );
                prop_assert_eq!(bytes[row * row_stride + cols], 7);
            }
        }
    }
}

/// The largest sums fit: every byte 255 against every weight at +127 or -127, at the deepest
/// product allowed.
#[test]
fn gemm_sums_at_the_extremes_are_exact() {
    let (rows, depth, cols) = (7, 4099usize, 33);
    let stride = depth.next_multiple_of(4);
    let a = vec![255u8; rows * stride];
    let filters: Vec<f32> = (0..cols * depth)
        .map(|index| if (index / depth) % 2 == 0 { 1.0 } else { -1.0 })
        .collect();
    let weights = PackedInt8Weights::new(&filters, cols, depth, None, 1.0, 0);
    for isa in available_isas() {
        let mut sums = vec![0i32; rows * cols];
        let lhs = Int8Lhs {
            data: &a,
            rows,
            stride,
        };
        int8_gemm_sums(isa, lhs, &weights, &mut sums);
        for (index, &sum) in sums.iter().enumerate() {
            let sign = if (index % cols) % 2 == 0 { 1 } else { -1 };
            assert_eq!(sum, sign * 255 * 127 * depth as i32, "{}", isa.name());
        }
    }
}

/// The task grid keeps every thread busy: at most `2 * threads` tasks, none empty, one task on
/// one thread, and once the work is large enough more than one task, finishing no later than a
/// plain cut of the rows or of the columns into one share per thread.
#[test]
fn task_grid_splits_work_over_every_thread() {
    use super::gemm::task_grid;
    let finish = |row_blocks: usize, panel_pairs: usize, rows: usize, columns: usize, threads| {
        (rows * columns).div_ceil(threads)
            * row_blocks.div_ceil(rows)
            * panel_pairs.div_ceil(columns)
    };
    for threads in 1..=4usize {
        for row_blocks in [1usize, 2, 3, 9, 17, 523] {
            for panel_pairs in [1usize, 2, 3, 5, 30] {
                for wide_weights in [false, true] {
                    let macs = row_blocks * panel_pairs * 6 * 32 * 600;
                    let grid = task_grid(row_blocks, panel_pairs, macs, threads, wide_weights);
                    let tasks = grid.row_tasks * grid.column_tasks;
                    let case = format!("{threads} threads, {row_blocks} x {panel_pairs}: {grid:?}");
                    assert!(grid.row_tasks <= row_blocks && grid.column_tasks <= panel_pairs);
                    assert!(tasks <= 2 * threads, "{case}");
                    if threads == 1 {
                        assert_eq!(tasks, 1, "{case}");
                        continue;
                    }
                    if macs < threads << 19 || row_blocks * panel_pairs < 2 {
                        continue;
                    }
                    assert!(tasks > 1, "{case}");
                    let got = finish(
                        row_blocks,
                        panel_pairs,
                        grid.row_tasks,
                        grid.column_tasks,
                        threads,
                    );
                    let by_rows =
                        finish(row_blocks, panel_pairs, threads.min(row_blocks), 1, threads);
                    let by_columns = finish(
                        row_blocks,
                        panel_pairs,
                        1,
                        threads.min(panel_pairs),
                        threads,
                    );
                    assert!(got <= by_rows.min(by_columns), "{case}");
                }
            }
        }
    }
    // A 1x1 convolution of 7x7 pixels, 160 to 960 channels (7.5 M MACs): two tasks on two
    // threads (it ran on one before).
    let grid = task_grid(9, 30, 49 * 160 * 960, 2, false);
    assert_eq!(grid.row_tasks * grid.column_tasks % 2, 0, "{grid:?}");
}

/// A product large enough to be cut into tasks on the pool still sums exactly.
#[test]
fn gemm_sums_cut_into_tasks_are_exact() {
    let (rows, depth, cols) = (301, 293usize, 77);
    let stride = depth.next_multiple_of(4);
    let a: Vec<u8> = (0..rows * stride)
        .map(|index| (index * 7 % 251) as u8)
        .collect();
    let filters: Vec<f32> = (0..cols * depth)
        .map(|index| ((index * 13 % 29) as f32 - 14.0) / 7.0)
        .collect();
    let weights = PackedInt8Weights::new(&filters, cols, depth, None, 1.0, 0);
    let quantized: Vec<Vec<i8>> = filters
        .chunks_exact(depth)
        .map(|filter| quantize_filter(filter).1)
        .collect();
    for isa in available_isas() {
        let mut sums = vec![0i32; rows * cols];
        let lhs = Int8Lhs {
            data: &a,
            rows,
            stride,
        };
        int8_gemm_sums(isa, lhs, &weights, &mut sums);
        for row in 0..rows {
            for (column, filter) in quantized.iter().enumerate() {
                let expected: i32 = (0..depth)
                    .map(|k| i32::from(a[row * stride + k]) * i32::from(filter[k]))
                    .sum();
                assert_eq!(sums[row * cols + column], expected, "{}", isa.name());
            }
        }
    }
}

/// im2col in shares of rows (as the tasks of a call fill it) equals im2col in one piece.
#[test]
fn im2col_in_shares_equals_im2col_in_one_piece() {
    use super::quantize::{ConvGeometry, im2col};
    let (channels, in_h, in_w) = (5, 11, 9);
    let geometry = ConvGeometry {
        in_h,
        in_w,
        out_h: 6,
        out_w: 5,
        kernel: [3, 3],
        stride: [2, 2],
        padding: [1, 1],
        dilation: [1, 1],
    };
    let image: Vec<u8> = (0..in_h * in_w * channels)
        .map(|index| (index * 37 % 256) as u8)
        .collect();
    let row_stride = (9 * channels).next_multiple_of(4);
    let pixels = geometry.out_h * geometry.out_w;
    let mut whole = vec![1u8; pixels * row_stride];
    im2col(&image, channels, &geometry, 7, row_stride, 0, &mut whole);
    for rows_per_share in [1, 4, 7, pixels] {
        let mut shares = vec![2u8; pixels * row_stride];
        for (index, rows) in shares.chunks_mut(rows_per_share * row_stride).enumerate() {
            im2col(
                &image,
                channels,
                &geometry,
                7,
                row_stride,
                index * rows_per_share,
                rows,
            );
        }
        assert_eq!(shares, whole, "{rows_per_share} rows per share");
    }
}

/// A random int8 convolution.
#[derive(Clone, Debug)]
struct ConvCase {
    /// `[N, C, H, W]`, whatever the layout.
    input_shape: [usize; 4],
    weight_shape: [usize; 4],
    options: Conv2dOptions,
    channels_last: bool,
    quantization: ActivationQuantization,
    input: Vec<f32>,
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    residual: bool,
    activation: Option<Activation>,
}

fn conv_cases() -> impl Strategy<Value = ConvCase> {
    let activations = prop_oneof![
        Just(None),
        Just(Some(Activation::Relu)),
        Just(Some(Activation::Relu6)),
        Just(Some(Activation::Silu)),
    ];
    let zero_points = prop_oneof![Just(0u8), Just(255u8), any::<u8>()];
    (
        // batch, in channels, out channels, depthwise
        (1..3usize, 1..11usize, 1..40usize, any::<bool>()),
        // kernel, stride, dilation, padding
        (
            1..4usize,
            1..4usize,
            1..3usize,
            1..3usize,
            1..3usize,
            1..3usize,
        ),
        (0..3usize, 0..3usize, 1..10usize, 1..10usize),
        (any::<bool>(), any::<bool>(), any::<bool>(), activations),
        (zero_points, 0.004f32..0.05),
    )
        .prop_filter_map(
            "the kernel must fit the padded input",
            |(
                (batch, in_channels, out_channels, depthwise),
                (kh, kw, sh, sw, dh, dw),
                (ph, pw, h, w),
                (channels_last, has_bias, residual, activation),
                (zero_point, scale),
            )| {
                // Depthwise layers get up to 70 channels, to reach the 64-channel blocks.
                let in_channels = if depthwise {
                    7 * in_channels
                } else {
                    in_channels
                };
                let (out_channels, groups) = if depthwise {
                    (in_channels, in_channels)
                } else {
                    (out_channels, 1)
                };
                let options = Conv2dOptions {
                    stride: [sh, sw],
                    padding: [ph.min(kh), pw.min(kw)],
                    dilation: [dh, dw],
                    groups,
                };
                let fits = |size: usize, pad: usize, kernel: usize, dilation: usize| {
                    size + 2 * pad > dilation * (kernel - 1)
                };
                if !fits(h, options.padding[0], kh, dh) || !fits(w, options.padding[1], kw, dw) {
                    return None;
                }
                let group_in = if depthwise { 1 } else { in_channels };
                Some((
                    [batch, in_channels, h, w],
                    [out_channels, group_in, kh, kw],
                    options,
                    (channels_last, has_bias, residual, activation),
                    ActivationQuantization { scale, zero_point },
                ))
            },
        )
        .prop_flat_map(
            |(input_shape, weight_shape, options, flags, quantization)| {
                let (channels_last, has_bias, residual, activation) = flags;
                let input_length: usize = input_shape.iter().product();
                let weight_length: usize = weight_shape.iter().product();
                let bias = if has_bias {
                    proptest::collection::vec(-1.0f32..1.0, weight_shape[0])
                        .prop_map(Some)
                        .boxed()
                } else {
                    Just(None).boxed()
                };
                (
                    proptest::collection::vec(-2.0f32..2.0, input_length),
                    proptest::collection::vec(-1.0f32..1.0, weight_length),
                    bias,
                )
                    .prop_map(move |(input, weight, bias)| ConvCase {
                        input_shape,
                        weight_shape,
                        options,
                        channels_last,
                        quantization,
                        input,
                        weight,
                        bias,
                        residual,
                        activation,
                    })
            },
        )
}

/// The reference twin: the output `[N, out, out_h, out_w]` (NCHW) and, per element, the size
/// of the terms it sums (for the tolerance), from the textbook formula in i64 and f64.
fn reference_conv(case: &ConvCase, residual: Option<&[f64]>) -> (Vec<f64>, Vec<f64>) {
    let [batch, in_channels, in_h, in_w] = case.input_shape;
    let [out_channels, group_in, kernel_h, kernel_w] = case.weight_shape;
    let options = case.options;
    let out_size = |size: usize, axis: usize, kernel: usize| {
        (size + 2 * options.padding[axis] - options.dilation[axis] * (kernel - 1) - 1)
            / options.stride[axis]
            + 1
    };
    let (out_h, out_w) = (out_size(in_h, 0, kernel_h), out_size(in_w, 1, kernel_w));
    let taps = kernel_h * kernel_w;
    let filters: Vec<(f32, Vec<i8>)> = case
        .weight
        .chunks_exact(group_in * taps)
        .map(|filter| {
            let largest = filter.iter().fold(0.0f32, |m, w| m.max(w.abs()));
            let scale = if largest > 0.0 { largest / 127.0 } else { 1.0 };
            let q = filter
                .iter()
                .map(|w| (w / scale).round_ties_even().clamp(-127.0, 127.0) as i8)
                .collect();
            (scale, q)
        })
        .collect();
    let input_at = |n: usize, c: usize, y: usize, x: usize| {
        let index = if case.channels_last {
            ((n * in_h + y) * in_w + x) * in_channels + c
        } else {
            ((n * in_channels + c) * in_h + y) * in_w + x
        };
        case.input[index]
    };
    let zero_point = i64::from(case.quantization.zero_point);
    let mut output = Vec::new();
    let mut magnitudes = Vec::new();
    for n in 0..batch {
        for o in 0..out_channels {
            let (weight_scale, filter) = &filters[o];
            let first_channel = if group_in == 1 && options.groups > 1 {
                o
            } else {
                0
            };
            for out_y in 0..out_h {
                for out_x in 0..out_w {
                    let (mut sum, mut absolute) = (0i64, 0i64);
                    for c in 0..group_in {
                        for ky in 0..kernel_h {
                            for kx in 0..kernel_w {
                                let y = (out_y * options.stride[0] + ky * options.dilation[0])
                                    as isize
                                    - options.padding[0] as isize;
                                let x = (out_x * options.stride[1] + kx * options.dilation[1])
                                    as isize
                                    - options.padding[1] as isize;
                                let inside = (0..in_h as isize).contains(&y)
                                    && (0..in_w as isize).contains(&x);
                                let q = if inside {
                                    let value =
                                        input_at(n, first_channel + c, y as usize, x as usize);
                                    i64::from(case.quantization.quantize(value))
                                } else {
                                    zero_point
                                };
                                let w = i64::from(filter[(c * kernel_h + ky) * kernel_w + kx]);
                                sum += (q - zero_point) * w;
                                absolute += ((q - zero_point) * w).abs();
                            }
                        }
                    }
                    let scale = f64::from(case.quantization.scale) * f64::from(*weight_scale);
                    let bias = case.bias.as_ref().map_or(0.0, |bias| f64::from(bias[o]));
                    output.push(scale * sum as f64 + bias);
                    magnitudes.push(scale * absolute as f64 + bias.abs());
                }
            }
        }
    }
    if let Some(residual) = residual {
        for ((value, magnitude), skip) in output.iter_mut().zip(&mut magnitudes).zip(residual) {
            *value += skip;
            *magnitude += skip.abs();
        }
    }
    (output, magnitudes)
}

/// `values` (NCHW, `[images, channels, plane]`) in the case's layout.
fn to_layout(values: &[f64], images: usize, channels: usize, channels_last: bool) -> Vec<f64> {
    if !channels_last {
        return values.to_vec();
    }
    let plane = values.len() / (images * channels);
    let mut result = vec![0.0; values.len()];
    for n in 0..images {
        for c in 0..channels {
            for p in 0..plane {
                result[(n * plane + p) * channels + c] = values[(n * channels + c) * plane + p];
            }
        }
    }
    result
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn conv_matches_the_reference_on_every_isa(case in conv_cases()) {
        check_conv_case(&case)?;
    }
}

/// Every instruction set, both layouts, depthwise or not, with and without residual and
/// activation, against the reference twin: within 1e-5 of the size of the summed terms.
fn check_conv_case(case: &ConvCase) -> Result<(), TestCaseError> {
    let conv = PackedConv2dInt8::new(
        &case.weight,
        case.weight_shape,
        case.bias.as_deref(),
        case.options,
        case.channels_last,
        case.quantization,
    )
    .unwrap()
    .with_activation(case.activation);
    let [n, c, h, w] = case.input_shape;
    let input_shape = if case.channels_last {
        [n, h, w, c]
    } else {
        [n, c, h, w]
    };
    let output_shape = conv.output_shape(input_shape).unwrap();
    let length: usize = output_shape.iter().product();
    let out_channels = case.weight_shape[0];
    let residual: Option<Vec<f32>> = case.residual.then(|| {
        (0..length)
            .map(|i| ((i * 37) % 17) as f32 / 8.0 - 1.0)
            .collect()
    });
    // The residual is given in the layer's layout; the reference wants NCHW.
    let residual_nchw: Option<Vec<f64>> = residual.as_ref().map(|residual| {
        let mut nchw = vec![0.0; length];
        let layout_index = to_layout(
            &(0..length).map(|i| i as f64).collect::<Vec<_>>(),
            n,
            out_channels,
            case.channels_last,
        );
        for (position, &nchw_index) in layout_index.iter().enumerate() {
            nchw[nchw_index as usize] = f64::from(residual[position]);
        }
        nchw
    });
    let (expected, magnitudes) = reference_conv(case, residual_nchw.as_deref());
    let expected = to_layout(&expected, n, out_channels, case.channels_last);
    let magnitudes = to_layout(&magnitudes, n, out_channels, case.channels_last);
    for isa in available_isas() {
        let mut output = vec![f32::NAN; length];
        let mut workspace = ConvWorkspace::new();
        conv.run(
            isa,
            Int8Input::Float(&case.input),
            input_shape,
            residual.as_deref(),
            Int8Output::Float(&mut output),
            &mut workspace,
        )
        .unwrap();
        for (index, &actual) in output.iter().enumerate() {
            let pre_activation = expected[index];
            let wanted = case.activation.map_or(pre_activation, |a| {
                f64::from(a.reference(pre_activation as f32))
            });
            let bound = 1e-5 * (magnitudes[index] + wanted.abs()) + 1e-6;
            prop_assert!(
                (f64::from(actual) - wanted).abs() <= bound,
                "{}: element {} is {}, expected {} (bound {})",
                isa.name(),
                index,
                actual,
                wanted,
                bound
            );
        }
    }
    Ok(())
}

/// A depthwise kernel of more taps than one round gathers (8 x 7 > 49), with padding, so its
/// border pixels sum in several rounds.
#[test]
fn large_depthwise_kernels_match_the_reference() {
    let [n, c, h, w] = [1, 19, 9, 10];
    let case = ConvCase {
        input_shape: [n, c, h, w],
        weight_shape: [c, 1, 8, 7],
        options: Conv2dOptions {
            stride: [1, 2],
            padding: [3, 3],
            dilation: [1, 1],
            groups: c,
        },
        channels_last: true,
        quantization: ActivationQuantization {
            scale: 0.02,
            zero_point: 100,
        },
        input: (0..n * c * h * w)
            .map(|i| ((i * 37) % 29) as f32 / 7.0 - 2.0)
            .collect(),
        weight: (0..c * 56)
            .map(|i| ((i * 11) % 17) as f32 / 8.0 - 1.0)
            .collect(),
        bias: Some((0..c).map(|i| i as f32 / 10.0).collect()),
        residual: true,
        activation: Some(Activation::Relu6),
    };
    check_conv_case(&case).unwrap();
}

/// Depthwise kernels of every size the grouped VNNI kernel handles in one piece (1 to 13 groups
/// of four taps), over whole blocks of sixteen channels and a tail, with padding, strides and
/// dilation, and outputs past ReLU6's bound: each against the reference on every instruction
/// set.
#[test]
fn depthwise_kernels_of_every_size_match_the_reference() {
    let kernels = [[1, 1], [2, 3], [3, 3], [1, 7], [5, 5], [7, 7]];
    let activations = [
        Some(Activation::Relu6),
        Some(Activation::LeakyRelu {
            negative_slope: 0.25,
        }),
        None,
    ];
    for (index, kernel) in kernels.into_iter().enumerate() {
        for (channels, stride, dilation) in [(32, 1, 1), (37, 2, 1), (16, 1, 2)] {
            let [n, h, w] = [1, 9, 11];
            let [kh, kw] = kernel;
            let options = Conv2dOptions {
                stride: [stride, stride],
                padding: [kh / 2, kw / 2],
                dilation: [dilation, dilation],
                groups: channels,
            };
            if h + 2 * options.padding[0] <= dilation * (kh - 1)
                || w + 2 * options.padding[1] <= dilation * (kw - 1)
            {
                continue;
            }
            let case = ConvCase {
                input_shape: [n, channels, h, w],
                weight_shape: [channels, 1, kh, kw],
                options,
                channels_last: true,
                quantization: ActivationQuantization {
                    scale: 0.05,
                    zero_point: 90,
                },
                input: (0..n * channels * h * w)
                    .map(|i| ((i * 37) % 29) as f32 / 3.0 - 4.0)
                    .collect(),
                weight: (0..channels * kh * kw)
                    .map(|i| ((i * 11) % 17) as f32 / 8.0 - 0.7)
                    .collect(),
                bias: Some((0..channels).map(|i| i as f32 / 10.0 - 1.0).collect()),
                residual: channels == 37,
                activation: activations[index % activations.len()],
            };
            check_conv_case(&case).unwrap();
        }
    }
}

#[test]
fn forward_uses_the_selected_isa_and_agrees_with_run() {
    let options = Conv2dOptions {
        stride: [1, 1],
        padding: [1, 1],
        dilation: [1, 1],
        groups: 1,
    };
    let weight: Vec<f32> = (0..8 * 5 * 9)
        .map(|i| ((i * 7) % 13) as f32 / 6.0 - 1.0)
        .collect();
    let input: Vec<f32> = (0..2 * 6 * 7 * 5)
        .map(|i| ((i * 5) % 11) as f32 / 5.0 - 1.0)
        .collect();
    let quantization = ActivationQuantization::from_range(-1.0, 1.0);
    let conv =
        PackedConv2dInt8::new(&weight, [8, 5, 3, 3], None, options, true, quantization).unwrap();
    let shape = [2, 6, 7, 5];
    let mut forward = vec![0.0; 2 * 6 * 7 * 8];
    let mut run = forward.clone();
    let mut workspace = ConvWorkspace::new();
    conv.forward(&input, shape, &mut forward, &mut workspace)
        .unwrap();
    conv.run(
        selected_isa(),
        Int8Input::Float(&input),
        shape,
        None,
        Int8Output::Float(&mut run),
        &mut workspace,
    )
    .unwrap();
    assert_eq!(forward, run);
    assert!(conv.weight_bytes() >= 8 * 5 * 9);
}

#[test]
fn grouped_convolutions_other_than_depthwise_are_refused() {
    let options = Conv2dOptions {
        stride: [1, 1],
        padding: [0, 0],
        dilation: [1, 1],
        groups: 2,
    };
    let quantization = ActivationQuantization::from_range(-1.0, 1.0);
    let result = PackedConv2dInt8::new(
        &[0.5; 4 * 2],
        [4, 2, 1, 1],
        None,
        options,
        true,
        quantization,
    );
    assert!(result.is_err());
}

proptest! {
    /// The vectorised quantization gives the scalar function's bytes, ties, clamps and NaN
    /// included.
    #[test]
    fn quantize_slice_matches_the_scalar_function(
        values in proptest::collection::vec(
            prop_oneof![
                -300.0f32..300.0,
                (-600i32..600).prop_map(|half| half as f32 * 0.5),
                Just(f32::NAN),
                Just(f32::INFINITY),
                Just(f32::NEG_INFINITY),
                Just(1e30f32),
            ],
            0..100,
        ),
        zero_point in any::<u8>(),
        scale in prop_oneof![Just(1.0f32), Just(0.5f32), 0.01f32..2.0],
    ) {
        let quantization = ActivationQuantization { scale, zero_point };
        let mut output = vec![0u8; values.len()];
        super::quantize::quantize_slice(&values, &mut output, quantization);
        let expected: Vec<u8> = values.iter().map(|&x| quantization.quantize(x)).collect();
        prop_assert_eq!(output, expected);
    }
}

/// The inlined copy of im2col's runs equals `copy_from_slice` at every length across its three
/// forms (bytes, two overlapping 8- or 16-byte copies, `memcpy`).
#[test]
fn copy_run_copies_every_length() {
    let source: Vec<u8> = (0..48u8).map(|byte| byte.wrapping_mul(37) ^ 0x5a).collect();
    for length in 0..=source.len() {
        let mut copied = vec![0xffu8; length + 2];
        super::quantize::copy_run(&mut copied[1..][..length], &source[..length]);
        assert_eq!(&copied[1..][..length], &source[..length], "length {length}");
        assert_eq!(
            (copied[0], copied[length + 1]),
            (0xff, 0xff),
            "length {length}"
        );
    }
}

/// One layer of a chain for `quantized_chains_equal_the_float_path`: 1x1, 3x3 (padded, maybe
/// strided: im2col) or 3x3 depthwise.
#[derive(Clone, Copy, Debug)]
enum ChainLayer {
    Pointwise,
    Full { stride: usize },
    Depthwise { stride: usize },
}

/// The range a chain layer's input is quantized for: one with a zero point inside (the
/// quantizing epilogues add it), one from 0 (zero point 0: they skip the lower clamp), and one
/// so narrow that `2^16` steps end below ReLU6's 6 (the cap of the conversion is then below the
/// clamp's).
#[derive(Clone, Copy, Debug)]
enum InputRange {
    Signed,
    Positive,
    Tiny,
}

fn input_range() -> impl Strategy<Value = InputRange> {
    prop_oneof![
        Just(InputRange::Signed),
        Just(InputRange::Positive),
        Just(InputRange::Tiny),
    ]
}

fn chain_layer() -> impl Strategy<Value = ChainLayer> {
    prop_oneof![
        Just(ChainLayer::Pointwise),
        (1..3usize).prop_map(|stride| ChainLayer::Full { stride }),
        (1..3usize).prop_map(|stride| ChainLayer::Depthwise { stride }),
    ]
}

/// A channels-last int8 layer of `kind` from `in_channels` (to `out_channels` unless
/// depthwise), with deterministic weights from `seed`, whose input is quantized for `range`.
fn chain_conv(
    kind: ChainLayer,
    in_channels: usize,
    out_channels: usize,
    seed: usize,
    activation: Option<Activation>,
    range: InputRange,
) -> PackedConv2dInt8 {
    let (out_channels, group_in, kernel, stride, groups) = match kind {
        ChainLayer::Pointwise => (out_channels, in_channels, 1, 1, 1),
        ChainLayer::Full { stride } => (out_channels, in_channels, 3, stride, 1),
        ChainLayer::Depthwise { stride } => (in_channels, 1, 3, stride, in_channels),
    };
    let options = Conv2dOptions {
        stride: [stride; 2],
        padding: [kernel / 2; 2],
        dilation: [1, 1],
        groups,
    };
    let weight: Vec<f32> = (0..out_channels * group_in * kernel * kernel)
        .map(|i| (((i + seed) * 37) % 23) as f32 / 11.0 - 1.0)
        .collect();
    let bias: Vec<f32> = (0..out_channels)
        .map(|i| ((i + seed) % 5) as f32 / 4.0 - 0.5)
        .collect();
    let quantization = match range {
        InputRange::Signed => ActivationQuantization::from_range(-1.5 - seed as f32 * 0.1, 2.5),
        InputRange::Positive => ActivationQuantization::from_range(0.0, 2.5),
        InputRange::Tiny => ActivationQuantization::from_range(0.0, 1e-3),
    };
    PackedConv2dInt8::new(
        &weight,
        [out_channels, group_in, kernel, kernel],
        Some(&bias),
        options,
        true,
        quantization,
    )
    .unwrap()
    .with_activation(activation)
}

/// The outputs of a chain of int8 layers run on `isa` two ways: each layer from and to f32, and
/// with the values between layers kept quantized (each layer but the last writes bytes for the
/// next, in a buffer as large as the f32 values' memory, as in an arena slot).
fn float_and_quantized_chain(
    isa: Int8Isa,
    layers: &[PackedConv2dInt8],
    input: &[f32],
    input_shape: [usize; 4],
) -> (Vec<f32>, Vec<f32>) {
    let mut shapes = vec![input_shape];
    for layer in layers {
        let next = layer.output_shape(*shapes.last().unwrap()).unwrap();
        shapes.push(next);
    }
    let elements = |shape: [usize; 4]| shape.iter().product::<usize>();
    let mut workspace = ConvWorkspace::new();
    let mut values = input.to_vec();
    for (layer, pair) in layers.iter().zip(shapes.windows(2)) {
        let mut output = vec![f32::NAN; elements(pair[1])];
        layer
            .run(
                isa,
                Int8Input::Float(&values),
                pair[0],
                None,
                Int8Output::Float(&mut output),
                &mut workspace,
            )
            .unwrap();
        values = output;
    }
    let mut bytes: Option<Vec<u8>> = None;
    let mut last = vec![f32::NAN; elements(shapes[layers.len()])];
    for (index, layer) in layers.iter().enumerate() {
        let input = match &bytes {
            Some(bytes) => Int8Input::Quantized(bytes),
            None => Int8Input::Float(input),
        };
        let mut next_bytes = vec![0xa5u8; 4 * elements(shapes[index + 1])];
        let output = match layers.get(index + 1) {
            Some(next) => Int8Output::QuantizedFor {
                next,
                bytes: &mut next_bytes,
            },
            None => Int8Output::Float(&mut last),
        };
        layer
            .run(isa, input, shapes[index], None, output, &mut workspace)
            .unwrap();
        bytes = Some(next_bytes);
    }
    (values, last)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Three int8 layers whose values between them stay quantized (`forward_int8`: the first
    /// writes bytes for the second, which reads them and writes bytes for the third) give
    /// exactly the outputs of three f32 calls, on every instruction set: the bytes are those the
    /// next layer makes of the f32 values.
    #[test]
    fn quantized_chains_equal_the_float_path(
        kinds in (chain_layer(), chain_layer(), chain_layer()),
        channels in (1..20usize, 1..40usize, 1..40usize, 1..12usize),
        (batch, h, w) in (1..3usize, 1..9usize, 1..9usize),
        activation in prop_oneof![
            Just(None),
            Just(Some(Activation::Relu6)),
            Just(Some(Activation::Silu)),
            Just(Some(Activation::LeakyRelu { negative_slope: 0.25 })),
        ],
        ranges in (input_range(), input_range()),
    ) {
        let (c0, mut c1, mut c2, c3) = channels;
        if matches!(kinds.0, ChainLayer::Depthwise { .. }) {
            c1 = c0;
        }
        if matches!(kinds.1, ChainLayer::Depthwise { .. }) {
            c2 = c1;
        }
        let layers = [
            chain_conv(kinds.0, c0, c1, 1, activation, InputRange::Signed),
            chain_conv(kinds.1, c1, c2, 2, Some(Activation::Relu), ranges.0),
            chain_conv(kinds.2, c2, c3, 3, activation, ranges.1),
        ];
        let input: Vec<f32> = (0..batch * h * w * c0)
            .map(|i| ((i * 29) % 31) as f32 / 8.0 - 1.7)
            .collect();
        for isa in available_isas() {
            let (values, last) = float_and_quantized_chain(isa, &layers, &input, [batch, h, w, c0]);
            let same = values.iter().zip(&last).all(|(a, b)| a.to_bits() == b.to_bits());
            prop_assert!(same, "{}: {:?} != {:?}", isa.name(), last, values);
        }
    }
}

/// A quantized output for a layer of other channels, too few bytes, a residual, or an NCHW
/// layer are errors, not panics.
#[test]
fn quantized_buffers_are_checked() {
    let first = chain_conv(ChainLayer::Pointwise, 3, 8, 1, None, InputRange::Signed);
    let next = chain_conv(
        ChainLayer::Full { stride: 1 },
        8,
        4,
        2,
        None,
        InputRange::Signed,
    );
    let other = chain_conv(ChainLayer::Pointwise, 5, 4, 2, None, InputRange::Signed);
    let input = vec![0.5f32; 4 * 4 * 3];
    let shape = [1, 4, 4, 3];
    let mut workspace = ConvWorkspace::new();
    let mut bytes = vec![0u8; 4 * 4 * 8];
    let mut call = |next: &PackedConv2dInt8, bytes: &mut [u8], residual: Option<&[f32]>| {
        first.forward_int8(
            Int8Input::Float(&input),
            shape,
            residual,
            Int8Output::QuantizedFor { next, bytes },
            &mut workspace,
        )
    };
    assert!(call(&next, &mut bytes, None).is_ok());
    assert!(call(&other, &mut bytes, None).is_err());
    assert!(call(&next, &mut bytes[..100], None).is_err());
    assert!(call(&next, &mut bytes, Some(&[0.0; 128])).is_err());
    let short = vec![0u8; 10];
    let mut output = vec![0.0f32; 4 * 4 * 4];
    assert!(
        next.forward_int8(
            Int8Input::Quantized(&short),
            [1, 4, 4, 8],
            None,
            Int8Output::Float(&mut output),
            &mut workspace,
        )
        .is_err()
    );
    let nchw = PackedConv2dInt8::new(
        &[0.5; 8 * 3],
        [8, 3, 1, 1],
        None,
        Conv2dOptions {
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
        },
        false,
        ActivationQuantization::from_range(-1.0, 1.0),
    )
    .unwrap();
    assert!(
        nchw.forward_int8(
            Int8Input::Float(&input),
            [1, 3, 4, 4],
            None,
            Int8Output::QuantizedFor {
                next: &next,
                bytes: &mut bytes,
            },
            &mut workspace,
        )
        .is_err()
    );
}

/// A layer whose im2col rows exceed `WHOLE_COLUMNS_BYTES` (4270 pixels of 144 bytes, in two
/// images) builds and multiplies them a chunk at a time: against the reference on every
/// instruction set, in both layouts, with a residual, and its bytes for a next layer are those the next layer
/// makes of its f32 values (the next layer's outputs are bit-identical).
#[test]
fn large_images_multiply_in_chunks() {
    let [n, c, h, w] = [2, 16, 61, 70];
    let case = ConvCase {
        input_shape: [n, c, h, w],
        weight_shape: [24, c, 3, 3],
        options: Conv2dOptions {
            stride: [1, 1],
            padding: [1, 1],
            dilation: [1, 1],
            groups: 1,
        },
        channels_last: true,
        quantization: ActivationQuantization {
            scale: 0.02,
            zero_point: 100,
        },
        input: (0..n * c * h * w)
            .map(|i| ((i * 37) % 29) as f32 / 7.0 - 2.0)
            .collect(),
        weight: (0..24 * c * 9)
            .map(|i| ((i * 11) % 17) as f32 / 8.0 - 1.0)
            .collect(),
        bias: Some((0..24).map(|i| i as f32 / 10.0).collect()),
        residual: true,
        activation: Some(Activation::Relu6),
    };
    assert!(h * w * 9 * c > super::conv::WHOLE_COLUMNS_BYTES);
    check_conv_case(&case).unwrap();
    // The same layer over NCHW images, whose channels-last result is then transposed.
    check_conv_case(&ConvCase {
        channels_last: false,
        ..case
    })
    .unwrap();
    let layers = [
        chain_conv(
            ChainLayer::Full { stride: 1 },
            c,
            24,
            1,
            Some(Activation::Relu6),
            InputRange::Signed,
        ),
        chain_conv(ChainLayer::Pointwise, 24, 5, 2, None, InputRange::Signed),
    ];
    let input: Vec<f32> = (0..n * h * w * c)
        .map(|i| ((i * 29) % 31) as f32 / 8.0 - 1.7)
        .collect();
    for isa in available_isas() {
        let (expected, actual) = float_and_quantized_chain(isa, &layers, &input, [n, h, w, c]);
        assert!(
            expected
                .iter()
                .zip(&actual)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{}: the chunked layer's bytes differ from its f32 values quantized",
            isa.name()
        );
    }
}

/// The AVX-512 quantizing epilogue, which leaves out the steps of the clamp that change no byte
/// and caps values before scaling them, gives `quantize(clamp(x))` on the values where those
/// shortcuts could go wrong: NaN, infinities, values past `2^31` steps, the clamp's bounds, and
/// halves of a step; for every clamp, zero points 0 and not 0, and a scale so small that `2^16`
/// steps end below ReLU6's 6.
#[cfg(target_arch = "x86_64")]
#[test]
fn quantizing_epilogue_matches_the_scalar_function_at_the_edges() {
    use super::kernels::{QuantizerAvx512, quantize_avx512, quantize_pair_avx512};
    use crate::kernels::gemm::Clamp;
    use std::arch::x86_64::*;
    if !Int8Isa::Avx512Vnni.is_available() {
        return;
    }
    let quantizations = [
        ActivationQuantization::from_range(0.0, 6.0),
        ActivationQuantization::from_range(-3.0, 5.0),
        ActivationQuantization::from_range(0.0, 1e-4),
        ActivationQuantization::from_range(-1e-4, 1e-4),
        ActivationQuantization {
            scale: 1e30,
            zero_point: 3,
        },
    ];
    let clamps = [
        Clamp::None,
        Clamp::Relu,
        Clamp::Relu6,
        Clamp::LeakyRelu {
            negative_slope: 0.1,
        },
    ];
    for quantization in quantizations {
        let step = quantization.scale;
        let mut values = vec![
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::MIN,
            0.0,
            -0.0,
            6.0,
            5.9999995,
            6.0000005,
            65536.0 * step,
            65535.5 * step,
            3e9 * step,
            -3e9 * step,
            0.5 * step,
            1.5 * step,
            -0.5 * step,
            -1.5 * step,
            254.5 * step,
            255.5 * step,
            -1.0,
        ];
        values.extend((0..43).map(|i| (i as f32 - 21.0) * 0.37 * step));
        values.resize(values.len().next_multiple_of(32), 1.0);
        for clamp in clamps {
            let expected: Vec<u8> = values
                .iter()
                .map(|&x| quantization.quantize(clamp.apply(x)))
                .collect();
            let mut pairs = vec![0u8; values.len()];
            let mut singles = vec![0u8; values.len()];
            // SAFETY: The processor has AVX512F and BW (checked above); each load reads 16
            // values inside `values`, each store writes 32 or 16 bytes inside its buffer.
            unsafe {
                #[target_feature(enable = "avx512f,avx512bw")]
                unsafe fn run<const ZERO_POINT: bool>(
                    values: &[f32],
                    quantization: ActivationQuantization,
                    clamp: Clamp,
                    pairs: &mut [u8],
                    singles: &mut [u8],
                ) {
                    let quantizer = QuantizerAvx512::new(quantization, clamp);
                    for start in (0..values.len()).step_by(32) {
                        // SAFETY: As the caller says.
                        unsafe {
                            let first = _mm512_loadu_ps(values.as_ptr().add(start));
                            let second = _mm512_loadu_ps(values.as_ptr().add(start + 16));
                            let packed = quantize_pair_avx512::<ZERO_POINT>(
                                first, second, &quantizer, clamp,
                            );
                            _mm256_storeu_si256(pairs.as_mut_ptr().add(start).cast(), packed);
                            for (offset, vector) in [(0, first), (16, second)] {
                                let bytes =
                                    quantize_avx512::<ZERO_POINT>(vector, &quantizer, clamp);
                                _mm_storeu_si128(
                                    singles.as_mut_ptr().add(start + offset).cast(),
                                    bytes,
                                );
                            }
                        }
                    }
                }
                if quantization.zero_point == 0 {
                    run::<false>(&values, quantization, clamp, &mut pairs, &mut singles);
                } else {
                    run::<true>(&values, quantization, clamp, &mut pairs, &mut singles);
                }
            }
            for (index, &x) in values.iter().enumerate() {
                assert_eq!(
                    (pairs[index], singles[index]),
                    (expected[index], expected[index]),
                    "{x:e} with {clamp:?}, {quantization:?}"
                );
            }
        }
    }
}

/// Depthwise layers writing bytes for the next layer give the bytes the next layer makes of
/// their f32 outputs, for kernels of one to four columns (whose interior pixels the VNNI kernel
/// runs a block of 32 channels at a time over the row, 3x3 apart) and wider ones, whole blocks
/// and a masked last block, strides, dilation, and zero points 0 and not 0.
#[test]
fn quantized_depthwise_outputs_equal_the_float_path() {
    let kernels = [[1, 1], [2, 3], [3, 3], [1, 4], [4, 4], [3, 5], [5, 1]];
    let activations = [
        Some(Activation::Relu6),
        Some(Activation::LeakyRelu {
            negative_slope: 0.25,
        }),
        None,
        Some(Activation::Relu),
    ];
    let mut case = 0;
    for kernel in kernels {
        for channels in [16, 32, 37, 64, 75] {
            for (stride, dilation) in [(1, 1), (2, 1), (1, 2)] {
                case += 1;
                let [kh, kw] = kernel;
                let (h, w) = (7, 13);
                let options = Conv2dOptions {
                    stride: [stride, stride],
                    padding: [kh / 2, kw / 2],
                    dilation: [dilation, dilation],
                    groups: channels,
                };
                let weight: Vec<f32> = (0..channels * kh * kw)
                    .map(|i| (((i + case) * 11) % 17) as f32 / 8.0 - 0.7)
                    .collect();
                let bias: Vec<f32> = (0..channels).map(|i| i as f32 / 20.0 - 1.0).collect();
                let depthwise = PackedConv2dInt8::new(
                    &weight,
                    [channels, 1, kh, kw],
                    Some(&bias),
                    options,
                    true,
                    ActivationQuantization::from_range(-4.0, 5.0),
                )
                .unwrap()
                .with_activation(activations[case % activations.len()]);
                let range = if case % 2 == 0 {
                    InputRange::Positive
                } else {
                    InputRange::Signed
                };
                let next = chain_conv(ChainLayer::Pointwise, channels, 5, case, None, range);
                let input: Vec<f32> = (0..h * w * channels)
                    .map(|i| ((i * 37) % 29) as f32 / 3.0 - 4.0)
                    .collect();
                let layers = [depthwise, next];
                for isa in available_isas() {
                    let (values, last) =
                        float_and_quantized_chain(isa, &layers, &input, [1, h, w, channels]);
                    let same = values
                        .iter()
                        .zip(&last)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same,
                        "{}: {kernel:?} {channels} channels, stride {stride}, dilation {dilation}",
                        isa.name()
                    );
                }
            }
        }
    }
}
