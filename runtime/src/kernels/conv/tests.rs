use super::*;
use crate::kernels::gemm::{NR, RhsSource};
use crate::reference;
use crate::test_support::{assert_close, values};
use proptest::prelude::*;

/// A random convolution: geometry, groups, data, bias and activation.
#[derive(Debug, Clone)]
struct Case {
    input_shape: [usize; 4],
    weight_shape: [usize; 4],
    options: Conv2dOptions,
    input: Vec<f32>,
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    activation: Option<Activation>,
}

fn cases() -> impl Strategy<Value = Case> {
    (
        // batch, groups, group_in_channels, group_out_channels
        (1..3usize, 1..4usize, 1..4usize, 1..4usize),
        // kernel, stride, dilation, padding (per axis)
        (
            1..4usize,
            1..4usize,
            1..3usize,
            1..3usize,
            1..3usize,
            1..3usize,
        ),
        (0..3usize, 0..3usize, 1..12usize, 1..12usize),
        (any::<bool>(), any::<bool>()),
    )
        .prop_filter_map(
            "the kernel must fit the padded input",
            |(
                (batch, groups, group_in, group_out),
                (kh, kw, sh, sw, dh, dw),
                (ph, pw, h, w),
                flags,
            )| {
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
                Some((
                    [batch, groups * group_in, h, w],
                    [groups * group_out, group_in, kh, kw],
                    options,
                    flags,
                ))
            },
        )
        .prop_flat_map(
            |(input_shape, weight_shape, options, (with_bias, with_activation))| {
                (
                    Just((input_shape, weight_shape, options)),
                    values(input_shape.iter().product()),
                    values(weight_shape.iter().product()),
                    values(weight_shape[0]),
                    Just((with_bias, with_activation)),
                )
            },
        )
        .prop_map(
            |(
                (input_shape, weight_shape, options),
                input,
                weight,
                bias,
                (with_bias, with_activation),
            )| Case {
                input_shape,
                weight_shape,
                options,
                input,
                weight,
                bias: with_bias.then_some(bias),
                activation: with_activation.then_some(Activation::Relu),
            },
        )
}

impl Case {
    fn check(&self) {
        let conv = PackedConv2d::new(
            &self.weight,
            self.weight_shape,
            self.bias.as_deref(),
            self.options,
        )
        .unwrap()
        .with_activation(self.activation);
        let (mut expected, expected_shape) = reference::conv2d(
            &self.input,
            self.input_shape,
            &self.weight,
            self.weight_shape,
            self.bias.as_deref(),
            self.options,
        );
        if let Some(activation) = self.activation {
            for value in &mut expected {
                *value = reference::activation(*value, activation);
            }
        }
        assert_eq!(conv.output_shape(self.input_shape).unwrap(), expected_shape);
        let mut output = vec![f32::NAN; expected.len()];
        let mut workspace = ConvWorkspace::new();
        conv2d(
            &self.input,
            self.input_shape,
            &conv,
            &mut output,
            &mut workspace,
        )
        .unwrap();
        assert_close(&output, &expected, 1e-4);
        self.check_residual(&conv);
    }

    /// `forward_residual` adds the product to a residual before the activation.
    fn check_residual(&self, conv: &PackedConv2d) {
        let (mut expected, _) = reference::conv2d(
            &self.input,
            self.input_shape,
            &self.weight,
            self.weight_shape,
            self.bias.as_deref(),
            self.options,
        );
        let residual: Vec<f32> = (0..expected.len())
            .map(|index| ((index * 13) % 17) as f32 / 4.0 - 2.0)
            .collect();
        for (value, &skip) in expected.iter_mut().zip(&residual) {
            *value += skip;
            if let Some(activation) = self.activation {
                *value = reference::activation(*value, activation);
            }
        }
        let mut output = vec![f32::NAN; expected.len()];
        conv.forward_residual(
            &self.input,
            self.input_shape,
            &residual,
            &mut output,
            &mut ConvWorkspace::new(),
        )
        .unwrap();
        assert_close(&output, &expected, 1e-4);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn conv2d_matches_reference(case in cases()) {
        case.check();
    }

    #[test]
    fn one_by_one_and_depthwise_match_reference(
        (case, depthwise) in cases().prop_flat_map(|case| (Just(case), any::<bool>()))
    ) {
        let mut case = case;
        if depthwise {
            // Depthwise with a channel multiplier: one input channel per group.
            let channels = case.input_shape[1];
            let multiplier = case.weight_shape[0] / case.options.groups;
            case.options.groups = channels;
            case.weight_shape = [channels * multiplier, 1, case.weight_shape[2], case.weight_shape[3]];
        } else {
            // A 1x1 kernel with unit stride and no padding skips im2col.
            case.options.stride = [1, 1];
            case.options.padding = [0, 0];
            case.weight_shape[2] = 1;
            case.weight_shape[3] = 1;
        }
        let weight_length: usize = case.weight_shape.iter().product();
        case.weight = (0..weight_length).map(|i| ((i * 7) % 11) as f32 / 5.0 - 1.0).collect();
        let bias_length = case.weight_shape[0];
        case.bias = case.bias.map(|_| (0..bias_length).map(|i| i as f32 / 10.0).collect());
        case.check();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn conv1d_matches_reference(
        (batch, channels, length, out_channels, kernel, stride, padding, dilation, input, weight) in
            (1..3usize, 1..5usize, 3..20usize, 1..5usize, 1..4usize, 1..3usize, 0..2usize, 1..3usize)
                .prop_filter("fits", |&(_, _, length, _, kernel, _, padding, dilation)| {
                    length + 2 * padding > dilation * (kernel - 1) && padding <= kernel
                })
                .prop_flat_map(|(batch, channels, length, out_channels, kernel, stride, padding, dilation)| {
                    (Just(batch), Just(channels), Just(length), Just(out_channels), Just(kernel),
                     Just(stride), Just(padding), Just(dilation),
                     values(batch * channels * length), values(out_channels * channels * kernel))
                })
    ) {
        let options = Conv1dOptions { stride, padding, dilation, groups: 1 };
        let conv = PackedConv1d::new(&weight, [out_channels, channels, kernel], None, options).unwrap();
        let (expected, expected_shape) = reference::conv2d(
            &input,
            [batch, channels, 1, length],
            &weight,
            [out_channels, channels, 1, kernel],
            None,
            Conv2dOptions { stride: [1, stride], padding: [0, padding], dilation: [1, dilation], groups: 1 },
        );
        let output_shape = conv.output_shape([batch, channels, length]).unwrap();
        prop_assert_eq!(output_shape, [batch, out_channels, expected_shape[3]]);
        let mut output = vec![0.0; expected.len()];
        conv1d(&input, [batch, channels, length], &conv, &mut output, &mut ConvWorkspace::new()).unwrap();
        assert_close(&output, &expected, 1e-4);
    }
}

/// Convolutions big enough for the GEMM to split across threads (over a million multiply-adds):
/// strides 1-3, padding 0-3, dilation 1-2, groups 1 or 2, batch 1 or 2, odd sizes whose pixel
/// counts are rarely multiples of 16 and channel counts rarely multiples of 6.
fn threaded_cases() -> impl Strategy<Value = Case> {
    (
        // batch, groups, group_in_channels, group_out_channels
        (1..3usize, 1..3usize, 2..12usize, 5..40usize),
        // kernel (square or 7x7 like a stem), stride, dilation, padding
        (
            prop_oneof![1..4usize, Just(7usize)],
            1..4usize,
            1..3usize,
            0..4usize,
        ),
        // input height and width
        (9..40usize, 9..40usize),
        any::<bool>(),
    )
        .prop_filter_map(
            "the kernel must fit the padded input",
            |(
                (batch, groups, group_in, group_out),
                (kernel, stride, dilation, padding),
                (h, w),
                flag,
            )| {
                let options = Conv2dOptions {
                    stride: [stride, stride],
                    padding: [padding, padding],
                    dilation: [dilation, dilation],
                    groups,
                };
                let extent = dilation * (kernel - 1) + 1;
                if h + 2 * padding < extent || w + 2 * padding < extent {
                    return None;
                }
                Some(Layer {
                    input_shape: [batch, groups * group_in, h, w],
                    weight_shape: [groups * group_out, group_in, kernel, kernel],
                    options,
                    activation: Some(Activation::Relu),
                    with_bias: flag,
                })
            },
        )
        .prop_flat_map(with_random_data)
}

/// A layer of a random case, before its data.
#[derive(Debug, Clone)]
struct Layer {
    input_shape: [usize; 4],
    weight_shape: [usize; 4],
    options: Conv2dOptions,
    activation: Option<Activation>,
    with_bias: bool,
}

/// The case of `layer` with random input, weight and bias.
fn with_random_data(layer: Layer) -> impl Strategy<Value = Case> {
    (
        values(layer.input_shape.iter().product()),
        values(layer.weight_shape.iter().product()),
        values(layer.weight_shape[0]),
    )
        .prop_map(move |(input, weight, bias)| Case {
            input_shape: layer.input_shape,
            weight_shape: layer.weight_shape,
            options: layer.options,
            input,
            weight,
            bias: layer.with_bias.then_some(bias),
            activation: layer.activation,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The implicit GEMM on one and on two threads: every split of the output channels and
    /// pixels into tasks gives the reference's result.
    #[test]
    fn threaded_convolutions_match_reference(case in threaded_cases(), threads in 1..3usize) {
        crate::set_num_threads(threads);
        case.check();
        crate::set_num_threads(0);
    }
}

/// Layers the indirect convolution takes where the processor has its kernel (AVX2, AVX-512):
/// one group, unit dilation, outputs at least `NR` wide, up to 384 steps (one block of A),
/// strides 1 to 4 (the phase split) and at most the kernel, kernels up to the 7x7 stem, output
/// widths off the 16- and 32-column strips, more output channels than one tile of 6 or 12 rows,
/// each activation kind (none, a clamp in the kernel, SiLU after it).
fn indirect_cases() -> impl Strategy<Value = Case> {
    phase_split_layers(1..30, NR..70)
}

/// Layers of one group and unit dilation that the phase split takes: `batch` 1 or 2, 1 to 7
/// input channels, output channels from `out_channels`, kernels 1 to 3 or 7 per axis, strides 1
/// to 4 and at most the kernel, paddings up to 3 and at most the kernel, 1 to 11 input rows,
/// output widths from `out_widths`, up to 384 steps, each activation kind (none, a clamp in
/// the kernel, SiLU after it), with and without a bias.
fn phase_split_layers(
    out_channels: std::ops::Range<usize>,
    out_widths: std::ops::Range<usize>,
) -> impl Strategy<Value = Case> {
    (
        // batch, channels in, channels out
        (1..3usize, 1..8usize, out_channels),
        // kernel height and width, stride per axis, padding per axis
        (
            prop_oneof![1..4usize, Just(7usize)],
            1..4usize,
            1..5usize,
            1..5usize,
            0..4usize,
            0..4usize,
        ),
        // input height, and the output width the input width is chosen for
        (1..12usize, out_widths),
        (0..3usize, any::<bool>()),
    )
        .prop_filter_map(
            "the layer must fit the padded input and the kernel's depth",
            |(
                (batch, in_channels, out_channels),
                (kh, kw, sh, sw, ph, pw),
                (h, out_w),
                (activation, with_bias),
            )| {
                let (ph, pw) = (ph.min(kh), pw.min(kw));
                let (sh, sw) = (sh.min(kh), sw.min(kw));
                // The widest input that gives `out_w` columns, less up to `sw - 1`.
                let w = ((out_w - 1) * sw + kw).checked_sub(2 * pw)?;
                if h + 2 * ph < kh || w == 0 || in_channels * kh * kw > 384 {
                    return None;
                }
                let options = Conv2dOptions {
                    stride: [sh, sw],
                    padding: [ph, pw],
                    ..Conv2dOptions::default()
                };
                Some(Layer {
                    input_shape: [batch, in_channels, h, w],
                    weight_shape: [out_channels, in_channels, kh, kw],
                    options,
                    activation: [None, Some(Activation::Relu6), Some(Activation::Silu)][activation],
                    with_bias,
                })
            },
        )
        .prop_flat_map(with_random_data)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The indirect convolution (on processors with its kernel; the packed GEMM elsewhere)
    /// against the reference, with and without a residual, on one and two threads.
    #[test]
    fn indirect_convolutions_match_reference(case in indirect_cases(), threads in 1..3usize) {
        let geometry = Geometry::new(
            case.input_shape,
            reference::conv2d(&case.input, case.input_shape, &case.weight, case.weight_shape, None, case.options).1,
            [case.weight_shape[2], case.weight_shape[3]],
            case.options,
        );
        prop_assert!(indirect::suits(&geometry), "{geometry:?}");
        crate::set_num_threads(threads);
        case.check();
        crate::set_num_threads(0);
    }
}

/// Element `(row, column)` of the im2col matrix of a `[channels, in_h, in_w]` image, straight
/// from its definition.
fn im2col_element(input: &[f32], geometry: &Geometry, row: usize, column: usize) -> f32 {
    let [kernel_h, kernel_w] = geometry.kernel;
    let (channel, kernel_y, kernel_x) = (
        row / (kernel_h * kernel_w),
        row / kernel_w % kernel_h,
        row % kernel_w,
    );
    let (out_y, out_x) = (column / geometry.out_w, column % geometry.out_w);
    let y = (out_y * geometry.stride[0] + kernel_y * geometry.dilation[0]) as isize
        - geometry.padding[0] as isize;
    let x = (out_x * geometry.stride[1] + kernel_x * geometry.dilation[1]) as isize
        - geometry.padding[1] as isize;
    if y < 0 || x < 0 || y >= geometry.in_h as isize || x >= geometry.in_w as isize {
        return 0.0;
    }
    input[(channel * geometry.in_h + y as usize) * geometry.in_w + x as usize]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any panel packed straight from the image equals the same panel of the materialized
    /// im2col matrix, zero padded past `width`: any first row and depth (crossing channels and
    /// kernel rows), any first pixel (crossing output rows), any width up to 16.
    #[test]
    fn image_panels_match_materialized_im2col(
        (channels, kernel_h, kernel_w) in (1..5usize, 1..4usize, prop_oneof![1..5usize, Just(7usize)]),
        (stride_h, stride_w, dilation_h, dilation_w) in (1..4usize, 1..4usize, 1..3usize, 1..3usize),
        (padding_h, padding_w, in_h, in_w) in (0..4usize, 0..4usize, 1..20usize, 1..40usize),
        (row_fraction, depth_fraction, column_fraction, width) in (0.0..1.0f64, 0.0..1.0f64, 0.0..1.0f64, 1..=NR),
        input in values(4 * 20 * 40),
    ) {
        let options = Conv2dOptions {
            stride: [stride_h, stride_w],
            padding: [padding_h, padding_w],
            dilation: [dilation_h, dilation_w],
            groups: 1,
        };
        let fits = |size: usize, padding: usize, kernel: usize, dilation: usize| {
            size + 2 * padding > dilation * (kernel - 1)
        };
        prop_assume!(fits(in_h, padding_h, kernel_h, dilation_h));
        prop_assume!(fits(in_w, padding_w, kernel_w, dilation_w));
        let out_h = convolved_size(in_h, kernel_h, options, 0).unwrap();
        let out_w = convolved_size(in_w, kernel_w, options, 1).unwrap();
        let geometry = Geometry::new(
            [1, channels, in_h, in_w],
            [1, 1, out_h, out_w],
            [kernel_h, kernel_w],
            options,
        );
        let input = &input[..channels * in_h * in_w];
        let rows = channels * kernel_h * kernel_w;
        let columns = out_h * out_w;
        let first_row = ((rows as f64 * row_fraction) as usize).min(rows - 1);
        let depth = 1 + ((rows - first_row - 1) as f64 * depth_fraction) as usize;
        let first_column = ((columns as f64 * column_fraction) as usize).min(columns - 1);
        let width = width.min(columns - first_column);
        // The form this processor runs, and the plain one.
        let forms = [ImagePanels::new(input, &geometry), ImagePanels::new(input, &geometry).plain()];
        for (form, source) in forms.iter().enumerate() {
            let mut panel = vec![f32::NAN; depth * NR];
            source.pack_panel(first_row, depth, first_column, width, &mut panel);
            for step in 0..depth {
                for position in 0..NR {
                    let expected = if position < width {
                        im2col_element(input, &geometry, first_row + step, first_column + position)
                    } else {
                        0.0
                    };
                    prop_assert_eq!(
                        panel[step * NR + position].to_bits(),
                        expected.to_bits(),
                        "form {}, row {}, column {}", form, first_row + step, first_column + position
                    );
                }
            }
        }
    }
}

/// Every panel of stride-2 convolutions of wide images (the stems of ResNet-18 and MobileNetV2,
/// whose whole panels of sixteen pixels read every other float of one input row), against the
/// materialized im2col matrix.
#[test]
fn wide_stride_two_panels_match_materialized_im2col() {
    let (channels, in_h, in_w) = (3, 9, 71);
    let input: Vec<f32> = (0..channels * in_h * in_w)
        .map(|i| ((i * 7919) % 1009) as f32 / 100.0 - 5.0)
        .collect();
    for (kernel, padding) in [(3, 1), (3, 0), (7, 3), (1, 0)] {
        let options = Conv2dOptions {
            stride: [2, 2],
            padding: [padding, padding],
            ..Conv2dOptions::default()
        };
        let out_h = convolved_size(in_h, kernel, options, 0).unwrap();
        let out_w = convolved_size(in_w, kernel, options, 1).unwrap();
        let geometry = Geometry::new(
            [1, channels, in_h, in_w],
            [1, 1, out_h, out_w],
            [kernel, kernel],
            options,
        );
        let forms = [
            ImagePanels::new(&input, &geometry),
            ImagePanels::new(&input, &geometry).plain(),
        ];
        let rows = channels * kernel * kernel;
        let columns = out_h * out_w;
        for (first_column, (form, source)) in
            (0..columns).flat_map(|column| forms.iter().enumerate().map(move |form| (column, form)))
        {
            let width = NR.min(columns - first_column);
            let mut panel = vec![f32::NAN; rows * NR];
            source.pack_panel(0, rows, first_column, width, &mut panel);
            for row in 0..rows {
                for position in 0..width {
                    let expected = im2col_element(&input, &geometry, row, first_column + position);
                    assert_eq!(
                        panel[row * NR + position].to_bits(),
                        expected.to_bits(),
                        "form {form}, kernel {kernel}, row {row}, column {}",
                        first_column + position
                    );
                }
            }
        }
    }
}

#[test]
fn larger_convolutions_match_reference() {
    // Large enough for the GEMM to split across threads and to cross a KC block (432 deep).
    let case = Case {
        input_shape: [1, 48, 20, 20],
        weight_shape: [24, 48, 3, 3],
        options: Conv2dOptions {
            padding: [1, 1],
            ..Conv2dOptions::default()
        },
        input: (0..48 * 400)
            .map(|i| ((i * 13) % 23) as f32 / 11.0 - 1.0)
            .collect(),
        weight: (0..24 * 48 * 9)
            .map(|i| ((i * 5) % 17) as f32 / 8.0 - 1.0)
            .collect(),
        bias: Some((0..24).map(|i| i as f32 / 7.0).collect()),
        activation: Some(Activation::Silu),
    };
    case.check();
}

#[test]
fn invalid_arguments_are_errors() {
    let weight = [0.0; 18];
    assert!(
        PackedConv2d::new(
            &weight,
            [2, 1, 3, 3],
            None,
            Conv2dOptions {
                groups: 3,
                ..Conv2dOptions::default()
            }
        )
        .is_err()
    );
    assert!(
        PackedConv2d::new(
            &weight,
            [2, 1, 3, 3],
            None,
            Conv2dOptions {
                stride: [0, 1],
                ..Conv2dOptions::default()
            }
        )
        .is_err()
    );
    assert!(
        PackedConv2d::new(&weight[..17], [2, 1, 3, 3], None, Conv2dOptions::default()).is_err()
    );
    assert!(
        PackedConv2d::new(
            &weight,
            [2, 1, 3, 3],
            Some(&[0.0; 3]),
            Conv2dOptions::default()
        )
        .is_err()
    );
    let conv = PackedConv2d::new(&weight, [2, 1, 3, 3], None, Conv2dOptions::default()).unwrap();
    assert!(conv.output_shape([1, 2, 5, 5]).is_err());
    assert!(conv.output_shape([1, 1, 2, 5]).is_err());
    let mut output = [0.0; 18];
    let mut workspace = ConvWorkspace::new();
    assert!(
        conv.forward(&[0.0; 24], [1, 1, 5, 5], &mut output, &mut workspace)
            .is_err()
    );
    assert!(
        conv.forward(&[0.0; 25], [1, 1, 5, 5], &mut output[..17], &mut workspace)
            .is_err()
    );
}

impl Case {
    /// The case's layer, channels-last.
    fn channels_last_layer(&self) -> PackedConv2dChannelsLast {
        PackedConv2dChannelsLast::new(
            &self.weight,
            self.weight_shape,
            self.bias.as_deref(),
            self.options,
        )
        .unwrap()
        .with_activation(self.activation)
    }

    /// The same case through the channels-last kernel (on the transposed input) against the
    /// channels-last reference.
    fn check_channels_last(&self) {
        let [batch, channels, height, width] = self.input_shape;
        let input = reference::nchw_to_nhwc(&self.input, self.input_shape);
        let input_shape = [batch, height, width, channels];
        let conv = self.channels_last_layer();
        let (mut expected, expected_shape) = reference::conv2d_channels_last(
            &input,
            input_shape,
            &self.weight,
            self.weight_shape,
            self.bias.as_deref(),
            self.options,
        );
        // A residual goes in after the bias and before the activation.
        let residual: Vec<f32> = (0..expected.len())
            .map(|index| (index % 7) as f32 * 0.25 - 0.75)
            .collect();
        let mut expected_residual: Vec<f32> =
            expected.iter().zip(&residual).map(|(y, r)| y + r).collect();
        if let Some(activation) = self.activation {
            for value in expected.iter_mut().chain(&mut expected_residual) {
                *value = reference::activation(*value, activation);
            }
        }
        assert_eq!(conv.output_shape(input_shape).unwrap(), expected_shape);
        let mut output = vec![f32::NAN; expected.len()];
        conv.forward(&input, input_shape, &mut output, &mut ConvWorkspace::new())
            .unwrap();
        assert_close(&output, &expected, 1e-4);
        let mut output = vec![f32::NAN; expected.len()];
        conv.forward_residual(
            &input,
            input_shape,
            &residual,
            &mut output,
            &mut ConvWorkspace::new(),
        )
        .unwrap();
        assert_close(&output, &expected_residual, 1e-4);
    }
}

impl Case {
    /// The same case through `PackedConv2dChannelsLast::forward_from_nchw` (an NCHW input, a
    /// channels-last output), with the kernel that reads the image in place where the processor
    /// has it and with the channels-last copy of the input, against the NCHW reference
    /// transposed.
    fn check_from_nchw(&self) {
        let (nchw, [batch, out_channels, out_h, out_w]) = reference::conv2d(
            &self.input,
            self.input_shape,
            &self.weight,
            self.weight_shape,
            self.bias.as_deref(),
            self.options,
        );
        let mut expected = reference::nchw_to_nhwc(&nchw, [batch, out_channels, out_h, out_w]);
        if let Some(activation) = self.activation {
            for value in &mut expected {
                *value = reference::activation(*value, activation);
            }
        }
        let conv = self.channels_last_layer();
        let mut workspace = ConvWorkspace::new();
        for kernel in [crate::kernels::gemm::indirect_lhs_strip_kernel(), None] {
            let mut output = vec![f32::NAN; expected.len()];
            conv.forward_from_nchw_with(
                &self.input,
                self.input_shape,
                &mut output,
                &mut workspace,
                kernel,
            )
            .unwrap();
            assert_close(&output, &expected, 1e-4);
        }
    }
}

/// Layers a stem may be ([`phase_split_layers`]): any output width (tiles of 12 pixels and
/// shorter ones), and output channels past one and two strips of 32.
fn channels_last_from_nchw_cases() -> impl Strategy<Value = Case> {
    phase_split_layers(1..70, 1..40)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// NCHW in, channels-last out, on one and two threads.
    #[test]
    fn channels_last_from_nchw_matches_reference(
        case in channels_last_from_nchw_cases(),
        threads in 1..3usize,
    ) {
        let _guard = crate::test_support::lock_thread_count();
        crate::set_num_threads(threads);
        case.check_from_nchw();
        crate::set_num_threads(0);
    }

    /// Layers the in-place kernel does not take (dilation, depthwise) run on the copy.
    #[test]
    fn other_layers_from_nchw_match_reference(case in cases()) {
        let mut case = case;
        let [out_channels, group_in, _, _] = case.weight_shape;
        let depthwise = case.options.groups == case.input_shape[1] && group_in == 1
            && out_channels == case.options.groups;
        if case.options.groups != 1 && !depthwise {
            // Channels-last layers are ungrouped or depthwise.
            case.options.groups = 1;
            case.weight_shape[1] = case.input_shape[1];
            case.weight = (0..case.weight_shape.iter().product::<usize>())
                .map(|i| ((i * 7) % 11) as f32 / 5.0 - 1.0)
                .collect();
        }
        case.check_from_nchw();
    }
}

/// Channel counts around the 8-lane vector width, so the depthwise kernel's tails are covered.
fn channel_counts() -> impl Strategy<Value = usize> {
    prop_oneof![
        1..4usize,
        5..12usize,
        15..18usize,
        Just(24usize),
        Just(33usize)
    ]
}

/// Stems over channels-last images, large enough for im2col to split rows across threads: each
/// kernel row of an interior patch is one copy (9 floats for 3x3 over 3 channels, 21 for 7x7),
/// border patches tap by tap.
#[test]
fn channels_last_stems_match_reference() {
    let _guard = crate::test_support::lock_thread_count();
    for (kernel, padding, size, out_channels) in [(3, 1, 96, 32), (7, 3, 64, 16), (3, 0, 81, 8)] {
        let input_shape = [1, 3, size, size];
        let weight_shape = [out_channels, 3, kernel, kernel];
        let case = Case {
            input_shape,
            weight_shape,
            options: Conv2dOptions {
                stride: [2, 2],
                padding: [padding, padding],
                ..Conv2dOptions::default()
            },
            input: (0..3 * size * size)
                .map(|i| ((i * 13) % 23) as f32 / 11.0 - 1.0)
                .collect(),
            weight: (0..out_channels * 3 * kernel * kernel)
                .map(|i| ((i * 7) % 11) as f32 / 5.0 - 1.0)
                .collect(),
            bias: Some((0..out_channels).map(|i| i as f32 / 10.0).collect()),
            activation: Some(Activation::Relu6),
        };
        for threads in [1, 2] {
            crate::set_num_threads(threads);
            case.check_channels_last();
        }
    }
    crate::set_num_threads(0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn channels_last_matches_reference(
        (case, channels, kind) in cases().prop_flat_map(|case| (Just(case), channel_counts(), 0..3usize))
    ) {
        // Kind 0: groups = 1 with any geometry (im2col); 1: depthwise; 2: 1x1, stride 1, no padding.
        let mut case = case;
        let out_channels = match kind {
            1 => channels,
            _ => case.weight_shape[0],
        };
        case.options.groups = if kind == 1 { channels } else { 1 };
        case.input_shape[1] = channels;
        let group_in_channels = if kind == 1 { 1 } else { channels };
        case.weight_shape = [out_channels, group_in_channels, case.weight_shape[2], case.weight_shape[3]];
        if kind == 2 {
            case.options.stride = [1, 1];
            case.options.padding = [0, 0];
            case.weight_shape[2] = 1;
            case.weight_shape[3] = 1;
        }
        let input_length: usize = case.input_shape.iter().product();
        case.input = (0..input_length).map(|i| ((i * 13) % 23) as f32 / 11.0 - 1.0).collect();
        let weight_length: usize = case.weight_shape.iter().product();
        case.weight = (0..weight_length).map(|i| ((i * 7) % 11) as f32 / 5.0 - 1.0).collect();
        case.bias = case.bias.map(|_| (0..out_channels).map(|i| i as f32 / 10.0).collect());
        case.check_channels_last();
    }
}

#[test]
fn larger_channels_last_depthwise_matches_reference() {
    // Enough rows to split across threads; stride 2 and a channel tail (37 = 4 * 8 + 5).
    let case = Case {
        input_shape: [2, 37, 23, 19],
        weight_shape: [37, 1, 3, 3],
        options: Conv2dOptions {
            stride: [2, 2],
            padding: [1, 1],
            groups: 37,
            ..Conv2dOptions::default()
        },
        input: (0..2 * 37 * 23 * 19)
            .map(|i| ((i * 13) % 23) as f32 / 11.0 - 1.0)
            .collect(),
        weight: (0..37 * 9)
            .map(|i| ((i * 5) % 17) as f32 / 8.0 - 1.0)
            .collect(),
        bias: Some((0..37).map(|i| i as f32 / 7.0).collect()),
        activation: Some(Activation::Relu6),
    };
    case.check_channels_last();
}

#[test]
fn channels_last_depthwise_with_more_taps_than_one_round_matches_reference() {
    // A dilated 7x7 kernel has 49 taps, more than the kernel gathers at once (32); 27 channels
    // are one 16-block, one 8-block and a scalar tail of 3.
    let case = Case {
        input_shape: [1, 27, 15, 13],
        weight_shape: [27, 1, 7, 7],
        options: Conv2dOptions {
            padding: [3, 2],
            dilation: [2, 1],
            groups: 27,
            ..Conv2dOptions::default()
        },
        input: (0..27 * 15 * 13)
            .map(|i| ((i * 13) % 23) as f32 / 11.0 - 1.0)
            .collect(),
        weight: (0..27 * 49)
            .map(|i| ((i * 5) % 17) as f32 / 8.0 - 1.0)
            .collect(),
        bias: None,
        activation: None,
    };
    case.check_channels_last();
}

#[test]
fn channels_last_rejects_grouped_convolutions() {
    let options = Conv2dOptions {
        groups: 2,
        ..Conv2dOptions::default()
    };
    assert!(PackedConv2dChannelsLast::new(&[0.0; 16], [4, 2, 1, 1], None, options).is_err());
}

#[test]
fn larger_nchw_depthwise_matches_reference() {
    // Rows wide enough for the vectorised interior and its masked tail, at strides 1 and 2, with
    // a dilation, an odd kernel width and a channel multiplier of 2; one and two threads.
    for threads in [1, 2] {
        crate::set_num_threads(threads);
        for (kernel, stride, dilation, padding, multiplier) in [
            ([3, 3], [2, 2], [1, 1], [1, 1], 1),
            ([3, 3], [1, 1], [1, 1], [1, 1], 1),
            ([3, 5], [2, 2], [2, 1], [2, 2], 2),
            ([5, 3], [1, 2], [1, 2], [0, 1], 1),
        ] {
            let channels = 5;
            let out_channels = channels * multiplier;
            let input_shape = [2, channels, 37, 41];
            let weight_shape = [out_channels, 1, kernel[0], kernel[1]];
            let case = Case {
                input_shape,
                weight_shape,
                options: Conv2dOptions {
                    stride,
                    padding,
                    dilation,
                    groups: channels,
                },
                input: (0..input_shape.iter().product::<usize>())
                    .map(|i| ((i * 13) % 23) as f32 / 11.0 - 1.0)
                    .collect(),
                weight: (0..weight_shape.iter().product::<usize>())
                    .map(|i| ((i * 5) % 17) as f32 / 8.0 - 1.0)
                    .collect(),
                bias: Some((0..out_channels).map(|i| i as f32 / 7.0).collect()),
                activation: Some(Activation::Relu6),
            };
            case.check();
        }
    }
    crate::set_num_threads(0);
}

#[test]
fn wide_channels_last_depthwise_matches_reference() {
    // Rows wide enough for the kernel's tiles of eight and four pixels and a single one (out_w
    // 45 at stride 1: 43 interior pixels; 23 at stride 2), and channel tails: 19 = 16 + 3 (one
    // AVX-512 block, or two AVX2 blocks of 8, then 3 one by one), 27 = 16 + 8 + 3 (an AVX2 block
    // after the AVX-512 one), 40 = 2 * 16 + 8, and 123, which the AVX2 tile of one pixel (the
    // border pixels) takes as groups of 8, 4, 2 and 1 blocks and 3 one by one, and its tile of
    // four as 7 groups of 2 blocks, 1 block and 3.
    for (stride, channels) in [1, 2]
        .into_iter()
        .flat_map(|s| [19, 27, 40, 123].map(|c| (s, c)))
    {
        let case = Case {
            input_shape: [1, channels, 5, 45],
            weight_shape: [channels, 1, 3, 3],
            options: Conv2dOptions {
                stride: [stride, stride],
                padding: [1, 1],
                groups: channels,
                ..Conv2dOptions::default()
            },
            input: (0..channels * 5 * 45)
                .map(|i| ((i * 13) % 23) as f32 / 11.0 - 1.0)
                .collect(),
            weight: (0..channels * 9)
                .map(|i| ((i * 5) % 17) as f32 / 8.0 - 1.0)
                .collect(),
            bias: Some((0..channels).map(|i| i as f32 / 7.0).collect()),
            activation: Some(Activation::Relu6),
        };
        case.check_channels_last();
    }
}

/// A depthwise convolution with a 1×1 one before it, after it, or both, for
/// `PackedDepthwiseBlock`.
#[derive(Debug, Clone)]
struct BlockCase {
    /// `[N, H, W, C]`.
    input_shape: [usize; 4],
    /// The depthwise layer's channels: the expansion's output, or the input's without one.
    wide: usize,
    kernel: [usize; 2],
    options: Conv2dOptions,
    /// Whether a 1×1 layer widens the input to `wide` channels before the depthwise one.
    expand: bool,
    /// The channels of a 1×1 layer after the depthwise one, and whether it adds a residual.
    project: Option<(usize, bool)>,
    /// The expansion's, the depthwise layer's and the projection's.
    activations: [Option<Activation>; 3],
    bias: [bool; 3],
}

fn block_cases() -> impl Strategy<Value = BlockCase> {
    let activation = prop_oneof![
        Just(None),
        Just(Some(Activation::Relu6)),
        Just(Some(Activation::HardSwish))
    ];
    (
        // A block of one channel is two depthwise layers: the 1x1 layer needs two channels.
        (
            1..3usize,
            1..13usize,
            1..13usize,
            1..20usize,
            channel_counts().prop_map(|wide| wide.max(2)),
        ),
        (
            1..4usize,
            1..4usize,
            1..3usize,
            1..3usize,
            0..2usize,
            1..3usize,
        ),
        (
            any::<bool>(),
            prop_oneof![Just(None), (1..40usize, any::<bool>()).prop_map(Some)],
        ),
        (
            [activation.clone(), activation.clone(), activation],
            any::<[bool; 3]>(),
        ),
    )
        .prop_map(
            |(
                (batch, height, width, channels, wide),
                (kernel_h, kernel_w, stride, dilation, padding, stride_w),
                (expand, project),
                (activations, bias),
            )| BlockCase {
                // Without an expansion the depthwise layer reads the input's channels.
                input_shape: [batch, height, width, if expand { channels } else { wide }],
                wide,
                kernel: [kernel_h, kernel_w],
                options: Conv2dOptions {
                    stride: [stride, stride_w],
                    padding: [padding, kernel_w / 2],
                    dilation: [dilation, 1],
                    groups: wide,
                },
                expand,
                project,
                activations,
                bias,
            },
        )
}

impl BlockCase {
    /// The expansion's weight `[wide, C, 1, 1]`, the depthwise layer's `[wide, 1, kh, kw]`, the
    /// projection's `[out, wide, 1, 1]`, and the biases (as long as the longest layer's
    /// output; each takes its first channels).
    fn weights(&self) -> [Vec<f32>; 4] {
        let taps = self.kernel[0] * self.kernel[1];
        let out = self.project.map_or(0, |(out, _)| out);
        [
            (0..self.wide * self.input_shape[3])
                .map(|i| ((i * 7) % 11) as f32 / 5.0 - 1.0)
                .collect(),
            (0..self.wide * taps)
                .map(|i| ((i * 5) % 17) as f32 / 8.0 - 1.0)
                .collect(),
            (0..out * self.wide)
                .map(|i| ((i * 3) % 13) as f32 / 6.0 - 1.0)
                .collect(),
            (0..self.wide.max(out))
                .map(|i| i as f32 / 10.0 - 0.5)
                .collect(),
        ]
    }

    /// The case's layers: the expansion, the depthwise layer and the projection.
    fn layers(
        &self,
    ) -> (
        Option<PackedConv2dChannelsLast>,
        PackedConv2dChannelsLast,
        Option<PackedConv2dChannelsLast>,
    ) {
        let [expand_weight, depthwise_weight, project_weight, bias] = self.weights();
        let expand = self.expand.then(|| {
            PackedConv2dChannelsLast::new(
                &expand_weight,
                [self.wide, self.input_shape[3], 1, 1],
                self.bias[0].then_some(&bias[..self.wide]),
                Conv2dOptions::default(),
            )
            .unwrap()
            .with_activation(self.activations[0])
        });
        let depthwise = PackedConv2dChannelsLast::new(
            &depthwise_weight,
            [self.wide, 1, self.kernel[0], self.kernel[1]],
            self.bias[1].then_some(&bias[..self.wide]),
            self.options,
        )
        .unwrap()
        .with_activation(self.activations[1]);
        let project = self.project.map(|(out, _)| {
            PackedConv2dChannelsLast::new(
                &project_weight,
                [out, self.wide, 1, 1],
                self.bias[2].then_some(&bias[..out]),
                Conv2dOptions::default(),
            )
            .unwrap()
            .with_activation(self.activations[2])
        });
        (expand, depthwise, project)
    }

    /// The block in bands of about `band_bytes` gives the same bits as its layers run one after
    /// the other, and the values of the reference convolutions.
    fn check(&self, band_bytes: usize) {
        let (expand, depthwise, project) = self.layers();
        let input: Vec<f32> = (0..self.input_shape.iter().product())
            .map(|i| ((i * 13) % 23) as f32 / 11.0 - 1.0)
            .collect();
        let mut workspace = ConvWorkspace::new();
        let (wide, wide_shape) = match &expand {
            Some(expand) => {
                let shape = expand.output_shape(self.input_shape).unwrap();
                let mut wide = vec![f32::NAN; shape.iter().product()];
                expand
                    .forward(&input, self.input_shape, &mut wide, &mut workspace)
                    .unwrap();
                (wide, shape)
            }
            None => (input.clone(), self.input_shape),
        };
        let Ok(depthwise_shape) = depthwise.output_shape(wide_shape) else {
            let block = PackedDepthwiseBlock::new(expand, depthwise, project).unwrap();
            assert!(block.output_shape(self.input_shape).is_err());
            return;
        };
        let mut separate = vec![f32::NAN; depthwise_shape.iter().product()];
        depthwise
            .forward(&wide, wide_shape, &mut separate, &mut workspace)
            .unwrap();
        let mut output_shape = depthwise_shape;
        let residual: Option<Vec<f32>> = self.project.and_then(|(out, residual)| {
            output_shape[3] = out;
            residual.then(|| {
                (0..output_shape.iter().product())
                    .map(|i| ((i * 11) % 19) as f32 / 9.0 - 1.0)
                    .collect()
            })
        });
        if let Some(project) = &project {
            let mut projected = vec![f32::NAN; output_shape.iter().product()];
            match &residual {
                Some(residual) => project.forward_residual(
                    &separate,
                    depthwise_shape,
                    residual,
                    &mut projected,
                    &mut workspace,
                ),
                None => project.forward(&separate, depthwise_shape, &mut projected, &mut workspace),
            }
            .unwrap();
            separate = projected;
        }

        let block = PackedDepthwiseBlock::new(expand, depthwise, project).unwrap();
        assert_eq!(block.output_shape(self.input_shape).unwrap(), output_shape);
        // Each task's scratch further apart than this block needs, and full of NaNs, as a
        // larger layer run before it leaves it.
        workspace.task_scratch(3, 5000).0.fill(f32::NAN);
        let mut banded = vec![f32::NAN; separate.len()];
        block
            .forward_in_bands(
                &input,
                self.input_shape,
                residual.as_deref(),
                &mut banded,
                &mut workspace,
                band_bytes,
            )
            .unwrap();
        let bits = |values: &[f32]| {
            values
                .iter()
                .map(|value| value.to_bits())
                .collect::<Vec<_>>()
        };
        if block.cuts_channels_now(self.input_shape) {
            // The projection's partial sums, one per task, are added in another order: sums of
            // hundreds of terms each, as far from the layers' as from the reference.
            assert_close(&banded, &separate, 1e-4);
        } else {
            assert_eq!(
                bits(&banded),
                bits(&separate),
                "bands of {band_bytes} bytes"
            );
        }

        let [expand_weight, depthwise_weight, project_weight, bias] = self.weights();
        let activate = |values: &mut Vec<f32>, activation: Option<Activation>| {
            if let Some(activation) = activation {
                for value in values.iter_mut() {
                    *value = reference::activation(*value, activation);
                }
            }
        };
        let (mut expected, mut expected_shape) = (input.clone(), self.input_shape);
        if self.expand {
            (expected, expected_shape) = reference::conv2d_channels_last(
                &expected,
                expected_shape,
                &expand_weight,
                [self.wide, self.input_shape[3], 1, 1],
                self.bias[0].then_some(&bias[..self.wide]),
                Conv2dOptions::default(),
            );
            activate(&mut expected, self.activations[0]);
        }
        (expected, expected_shape) = reference::conv2d_channels_last(
            &expected,
            expected_shape,
            &depthwise_weight,
            [self.wide, 1, self.kernel[0], self.kernel[1]],
            self.bias[1].then_some(&bias[..self.wide]),
            self.options,
        );
        activate(&mut expected, self.activations[1]);
        if let Some((out, _)) = self.project {
            (expected, expected_shape) = reference::conv2d_channels_last(
                &expected,
                expected_shape,
                &project_weight,
                [out, self.wide, 1, 1],
                self.bias[2].then_some(&bias[..out]),
                Conv2dOptions::default(),
            );
            if let Some(residual) = &residual {
                for (value, residual) in expected.iter_mut().zip(residual) {
                    *value += residual;
                }
            }
            activate(&mut expected, self.activations[2]);
        }
        assert_eq!(expected_shape, output_shape);
        assert_close(&banded, &expected, 1e-4);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Bands of one output row (each reading the rows its kernel reaches), of a few, and of the
    /// size the kernel picks (usually the whole image here), on one and two threads.
    #[test]
    fn depthwise_block_matches_its_layers_and_reference(
        case in block_cases(),
        band_bytes in prop_oneof![Just(1usize), Just(4096), Just(1 << 18)],
        threads in 1..3usize,
    ) {
        let _guard = crate::test_support::lock_thread_count();
        crate::set_num_threads(threads);
        case.check(band_bytes);
        crate::set_num_threads(0);
    }
}

#[test]
fn task_scratch_keeps_each_task_where_it_was() {
    let mut workspace = ConvWorkspace::new();
    let (scratch, stride) = workspace.task_scratch(2, 100);
    assert_eq!(
        (scratch.len(), stride),
        (2 * 112, 112),
        "a stride of whole cache lines"
    );
    let first = scratch.as_ptr();
    let (scratch, stride) = workspace.task_scratch(2, 40);
    assert_eq!(
        (scratch.len(), stride),
        (2 * 112, 112),
        "a shorter length keeps the stride"
    );
    assert_eq!(scratch.as_ptr(), first);
    let (scratch, stride) = workspace.task_scratch(3, 1000);
    assert_eq!((scratch.len(), stride), (3 * 1008, 1008));
    assert_eq!(scratch.as_ptr() as usize % crate::alloc::ALIGN_BYTES, 0);
    assert_eq!(workspace.task_scratch(1, 0).1, 1008);
}

#[test]
fn depthwise_block_rejects_other_layers() {
    let case = BlockCase {
        input_shape: [1, 4, 4, 3],
        wide: 8,
        kernel: [3, 3],
        options: Conv2dOptions {
            padding: [1, 1],
            groups: 8,
            ..Conv2dOptions::default()
        },
        expand: true,
        project: Some((5, false)),
        activations: [None, None, None],
        bias: [true, true, true],
    };
    let (Some(expand), depthwise, Some(project)) = case.layers() else {
        unreachable!("the case has every layer")
    };
    let block = |expand: &PackedConv2dChannelsLast,
                 depthwise: &PackedConv2dChannelsLast,
                 project: &PackedConv2dChannelsLast| {
        PackedDepthwiseBlock::new(
            Some(expand.clone()),
            depthwise.clone(),
            Some(project.clone()),
        )
    };
    assert!(block(&expand, &depthwise, &project).is_ok());
    // The layers in the wrong places.
    assert!(block(&depthwise, &expand, &project).is_err());
    assert!(block(&expand, &project, &depthwise).is_err());
    // A depthwise layer of other channels.
    let narrow = BlockCase {
        wide: 4,
        options: Conv2dOptions {
            groups: 4,
            ..case.options
        },
        ..case.clone()
    };
    assert!(block(&expand, &narrow.layers().1, &project).is_err());
    assert!(PackedDepthwiseBlock::new(None, narrow.layers().1, Some(project.clone())).is_err());
    // 1x1 layers with padding.
    let [weight, _, project_weight, _] = case.weights();
    let padding = Conv2dOptions {
        padding: [1, 1],
        ..Conv2dOptions::default()
    };
    let padded = PackedConv2dChannelsLast::new(&weight, [8, 3, 1, 1], None, padding).unwrap();
    assert!(block(&padded, &depthwise, &project).is_err());
    let padded =
        PackedConv2dChannelsLast::new(&project_weight, [5, 8, 1, 1], None, padding).unwrap();
    assert!(block(&expand, &depthwise, &padded).is_err());
    // Wrong buffer lengths are errors, not panics.
    let full = block(&expand, &depthwise, &project).unwrap();
    let mut output = vec![0.0; 4 * 4 * 5];
    let mut workspace = ConvWorkspace::new();
    assert!(
        full.forward(&[0.0; 47], [1, 4, 4, 3], &mut output, &mut workspace)
            .is_err()
    );
    assert!(
        full.forward(&[0.0; 48], [1, 4, 4, 3], &mut output[1..], &mut workspace)
            .is_err()
    );
    assert!(
        full.forward_residual(
            &[0.0; 48],
            [1, 4, 4, 3],
            &[0.0; 79],
            &mut output,
            &mut workspace
        )
        .is_err()
    );
    assert!(
        full.forward(&[0.0; 48], [1, 4, 4, 3], &mut output, &mut workspace)
            .is_ok()
    );
    assert!(
        full.forward_residual(
            &[0.0; 48],
            [1, 4, 4, 3],
            &[0.0; 80],
            &mut output,
            &mut workspace
        )
        .is_ok()
    );
    // Without a projection, no residual.
    let pair = PackedDepthwiseBlock::new(Some(expand), depthwise, None).unwrap();
    let mut output = vec![0.0; 4 * 4 * 8];
    assert!(
        pair.forward_residual(
            &[0.0; 48],
            [1, 4, 4, 3],
            &[0.0; 128],
            &mut output,
            &mut workspace
        )
        .is_err()
    );
}

/// Output rows whose kernel lies wholly in the padding read no row of the wide tensor: a band
/// of them is empty, and its rows are the bias alone.
#[test]
fn depthwise_block_rows_in_the_padding() {
    for (height, kernel) in [(1, 1), (3, 1), (2, 3)] {
        for (expand, project) in [
            (true, None),
            (true, Some((3, true))),
            (false, Some((3, false))),
        ] {
            let case = BlockCase {
                input_shape: [2, height, 3, if expand { 1 } else { 2 }],
                wide: 2,
                kernel: [kernel, 1],
                options: Conv2dOptions {
                    padding: [kernel + 1, 0],
                    groups: 2,
                    ..Conv2dOptions::default()
                },
                expand,
                project,
                activations: [None, Some(Activation::Relu6), None],
                bias: [false, true, true],
            };
            for band_bytes in [1, 1 << 18] {
                case.check(band_bytes);
            }
        }
    }
}

/// Blocks with few output rows run cut by channels of the wide tensor on two or three threads
/// (MobileNetV2's 7 x 7 blocks and its 14 x 14 one of stride 2; channels that end mid-panel;
/// two images; an activation after the projection that is not a clamp), and agree with their
/// layers and the reference; on one thread they run cut by rows.
#[test]
fn depthwise_block_cut_by_channels_matches_its_layers_and_reference() {
    let mobilenet = |input_shape, wide, stride, out, residual| BlockCase {
        input_shape,
        wide,
        kernel: [3, 3],
        options: Conv2dOptions {
            stride: [stride, stride],
            padding: [1, 1],
            groups: wide,
            ..Conv2dOptions::default()
        },
        expand: true,
        project: Some((out, residual)),
        activations: [Some(Activation::Relu6), Some(Activation::Relu6), None],
        bias: [true, true, true],
    };
    let odd = BlockCase {
        activations: [
            Some(Activation::HardSwish),
            None,
            Some(Activation::HardSwish),
        ],
        bias: [false, true, false],
        ..mobilenet([2, 5, 3, 24], 100, 1, 40, true)
    };
    let cases = [
        mobilenet([1, 7, 7, 160], 960, 1, 160, true),
        mobilenet([1, 14, 14, 96], 576, 2, 160, false),
        odd,
    ];
    let _guard = crate::test_support::lock_thread_count();
    for threads in [1, 2, 3] {
        crate::set_num_threads(threads);
        for case in &cases {
            let (expand, depthwise, project) = case.layers();
            let block = PackedDepthwiseBlock::new(expand, depthwise, project).unwrap();
            assert_eq!(
                block.cuts_channels_now(case.input_shape),
                threads > 1,
                "{case:?} on {threads} threads"
            );
            case.check(1 << 18);
        }
    }
    // Weights cut for two threads, then run on three: the block runs cut by rows then, and
    // still computes the same values.
    let case = &cases[0];
    let (expand, depthwise, project) = case.layers();
    let block = PackedDepthwiseBlock::new(expand, depthwise, project).unwrap();
    let input: Vec<f32> = (0..case.input_shape.iter().product())
        .map(|i| ((i * 13) % 23) as f32 / 11.0 - 1.0)
        .collect();
    let mut workspace = ConvWorkspace::new();
    let length = block
        .output_shape(case.input_shape)
        .unwrap()
        .iter()
        .product();
    let outputs: Vec<Vec<f32>> = [2, 3, 2]
        .into_iter()
        .map(|threads| {
            crate::set_num_threads(threads);
            let mut output = vec![f32::NAN; length];
            block
                .forward(&input, case.input_shape, &mut output, &mut workspace)
                .unwrap();
            output
        })
        .collect();
    crate::set_num_threads(0);
    assert_close(&outputs[1], &outputs[0], 1e-4);
    assert_eq!(outputs[2], outputs[0], "the same cut weights again");
}
