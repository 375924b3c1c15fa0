use super::*;
use crate::kernels::shape::permute_any_type;
use crate::reference;
use crate::test_support::{assert_close, values};
use proptest::prelude::*;

/// `[N, C, H, W]` data as `[N, H, W, C]`.
fn to_channels_last(input: &[f32], [batch, channels, height, width]: [usize; 4]) -> Vec<f32> {
    let mut output = vec![0.0; input.len()];
    permute_any_type(
        input,
        &[batch, channels, height, width],
        &[0, 2, 3, 1],
        &mut output,
    )
    .unwrap();
    output
}

/// `[N, H, W, C]` data as `[N, C, H, W]`.
fn to_channels_first(input: &[f32], [batch, height, width, channels]: [usize; 4]) -> Vec<f32> {
    let mut output = vec![0.0; input.len()];
    permute_any_type(
        input,
        &[batch, height, width, channels],
        &[0, 3, 1, 2],
        &mut output,
    )
    .unwrap();
    output
}

/// NHWC from NCHW.
fn nhwc([batch, channels, height, width]: [usize; 4]) -> [usize; 4] {
    [batch, height, width, channels]
}

/// Random pooling geometry that PyTorch accepts, with the input shape and data.
/// Input shape, kernel, stride, padding, dilation, ceil mode and data of one pooling case.
type PoolCase = (
    [usize; 4],
    [usize; 2],
    [usize; 2],
    [usize; 2],
    [usize; 2],
    bool,
    Vec<f32>,
);

fn geometry() -> impl Strategy<Value = PoolCase> {
    (
        (1..3usize, 1..4usize, 1..10usize, 1..10usize),
        (1..4usize, 1..4usize, 1..4usize, 1..4usize),
        (0..2usize, 0..2usize, 1..3usize, 1..3usize),
        any::<bool>(),
    )
        .prop_filter_map(
            "the window must fit",
            |((batch, channels, h, w), (kh, kw, sh, sw), (ph, pw, dh, dw), ceil_mode)| {
                let padding = [ph.min(kh / 2), pw.min(kw / 2)];
                let fits = |size: usize, pad: usize, kernel: usize, dilation: usize| {
                    size + 2 * pad > dilation * (kernel - 1)
                };
                if !fits(h, padding[0], kh, dh) || !fits(w, padding[1], kw, dw) {
                    return None;
                }
                Some((
                    [batch, channels, h, w],
                    [kh, kw],
                    [sh, sw],
                    padding,
                    [dh, dw],
                    ceil_mode,
                ))
            },
        )
        .prop_flat_map(|(shape, kernel, stride, padding, dilation, ceil_mode)| {
            (
                Just(shape),
                Just(kernel),
                Just(stride),
                Just(padding),
                Just(dilation),
                Just(ceil_mode),
                values(shape.iter().product()),
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn max_pool_matches_reference(
        (shape, kernel, stride, padding, dilation, ceil_mode, input) in geometry()
    ) {
        let options = MaxPool2dOptions { kernel, stride, padding, dilation, ceil_mode };
        let (expected, expected_shape) = reference::max_pool2d(&input, shape, &options);
        let output_shape = max_pool2d_output_shape(shape, &options).unwrap();
        prop_assert_eq!(output_shape, expected_shape);
        let mut output = vec![0.0; expected.len()];
        max_pool2d(&input, shape, &options, &mut output).unwrap();
        prop_assert_eq!(output, expected);
    }

    #[test]
    fn avg_pool_matches_reference(
        (shape, kernel, stride, padding, _, ceil_mode, input) in geometry(),
        count_include_pad in any::<bool>(),
        divisor_override in prop::option::weighted(0.2, 1..5usize),
    ) {
        let options = AvgPool2dOptions {
            kernel, stride, padding, ceil_mode, count_include_pad, divisor_override,
        };
        let (expected, expected_shape) = reference::avg_pool2d(&input, shape, &options);
        prop_assert_eq!(avg_pool2d_output_shape(shape, &options).unwrap(), expected_shape);
        let mut output = vec![0.0; expected.len()];
        avg_pool2d(&input, shape, &options, &mut output).unwrap();
        assert_close(&output, &expected, 1e-5);
    }

    #[test]
    fn channels_last_max_pool_matches_reference(
        (shape, kernel, stride, padding, dilation, ceil_mode, input) in geometry()
    ) {
        let options = MaxPool2dOptions { kernel, stride, padding, dilation, ceil_mode };
        let (expected, expected_shape) = reference::max_pool2d(&input, shape, &options);
        let mut output = vec![0.0; expected.len()];
        max_pool2d_channels_last(&to_channels_last(&input, shape), nhwc(shape), &options, &mut output)
            .unwrap();
        prop_assert_eq!(to_channels_first(&output, nhwc(expected_shape)), expected);
    }

    #[test]
    fn channels_last_avg_pool_matches_reference(
        (shape, kernel, stride, padding, _, ceil_mode, input) in geometry(),
        count_include_pad in any::<bool>(),
        divisor_override in prop::option::weighted(0.2, 1..5usize),
    ) {
        let options = AvgPool2dOptions {
            kernel, stride, padding, ceil_mode, count_include_pad, divisor_override,
        };
        let (expected, expected_shape) = reference::avg_pool2d(&input, shape, &options);
        let mut output = vec![0.0; expected.len()];
        avg_pool2d_channels_last(&to_channels_last(&input, shape), nhwc(shape), &options, &mut output)
            .unwrap();
        assert_close(&to_channels_first(&output, nhwc(expected_shape)), &expected, 1e-5);
    }

    #[test]
    fn one_dimensional_pools_match_reference(
        (batch, channels, length) in (1..3usize, 1..4usize, 1..40usize),
        (kernel, stride, dilation) in (1..5usize, 1..4usize, 1..3usize),
        padding in 0..3usize,
        ceil_mode in any::<bool>(),
        count_include_pad in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let padding = padding.min(kernel / 2);
        prop_assume!(length + 2 * padding > dilation * (kernel - 1));
        let input: Vec<f32> = (0..batch * channels * length)
            .map(|index| ((index as u64 * 2654435761 + seed) % 1000) as f32 / 250.0 - 2.0)
            .collect();
        let shape_2d = [batch, channels, 1, length];
        let max_options = MaxPool1dOptions { kernel, stride, padding, dilation, ceil_mode };
        let (expected, _) = reference::max_pool2d(&input, shape_2d, &MaxPool2dOptions {
            kernel: [1, kernel], stride: [1, stride], padding: [0, padding],
            dilation: [1, dilation], ceil_mode,
        });
        let mut output = vec![0.0; expected.len()];
        max_pool1d(&input, [batch, channels, length], &max_options, &mut output).unwrap();
        prop_assert_eq!(&output, &expected);
        let avg_options = AvgPool1dOptions { kernel, stride, padding, ceil_mode, count_include_pad };
        let (expected, _) = reference::avg_pool2d(&input, shape_2d, &AvgPool2dOptions {
            kernel: [1, kernel], stride: [1, stride], padding: [0, padding], ceil_mode,
            count_include_pad, divisor_override: None,
        });
        let mut output = vec![0.0; expected.len()];
        avg_pool1d(&input, [batch, channels, length], &avg_options, &mut output).unwrap();
        assert_close(&output, &expected, 1e-5);
    }

    #[test]
    fn channels_last_global_pools_match_reference(
        (shape, input) in (1..3usize, 1..40usize, 1..6usize, 1..6usize)
            .prop_flat_map(|(batch, channels, height, width)| {
                let shape = [batch, channels, height, width];
                (Just(shape), values(shape.iter().product()))
            })
    ) {
        let mut output = vec![0.0; shape[0] * shape[1]];
        let channels_last = to_channels_last(&input, shape);
        global_avg_pool_channels_last(&channels_last, nhwc(shape), &mut output).unwrap();
        assert_close(&output, &reference::global_pool(&input, &shape, false), 1e-5);
        global_max_pool_channels_last(&channels_last, nhwc(shape), &mut output).unwrap();
        prop_assert_eq!(output, reference::global_pool(&input, &shape, true));
    }

    #[test]
    fn global_pools_match_reference(
        (shape, input) in prop::collection::vec(1..5usize, 2..5).prop_flat_map(|shape| {
            let length: usize = shape.iter().product();
            (Just(shape), values(length))
        })
    ) {
        let planes = shape[0] * shape[1];
        let mut output = vec![0.0; planes];
        global_avg_pool(&input, &shape, &mut output).unwrap();
        assert_close(&output, &reference::global_pool(&input, &shape, false), 1e-5);
        global_max_pool(&input, &shape, &mut output).unwrap();
        let expected = reference::global_pool(&input, &shape, true);
        prop_assert_eq!(output, expected);
    }
}

fn arange(length: usize) -> Vec<f32> {
    (0..length).map(|index| index as f32).collect()
}

#[test]
fn max_pool_ceil_mode_matches_pytorch() {
    // torch.nn.functional.max_pool2d(torch.arange(25.).view(1, 1, 5, 5), 2, 2, ceil_mode=True)
    let input = arange(25);
    let mut options = MaxPool2dOptions::new([2, 2]);
    options.ceil_mode = true;
    let mut output = vec![0.0; 9];
    max_pool2d(&input, [1, 1, 5, 5], &options, &mut output).unwrap();
    assert_eq!(output, [6.0, 8.0, 9.0, 16.0, 18.0, 19.0, 21.0, 23.0, 24.0]);
    options.ceil_mode = false;
    assert_eq!(
        max_pool2d_output_shape([1, 1, 5, 5], &options).unwrap(),
        [1, 1, 2, 2]
    );
}

#[test]
fn ceil_mode_drops_a_window_that_starts_in_the_right_padding() {
    // max_pool1d(torch.arange(5.).view(1, 1, 5), 2, stride=2, padding=1, ceil_mode=True)
    // is [0, 2, 4]: a fourth window would start at index 5, inside the right padding.
    let options = MaxPool1dOptions {
        kernel: 2,
        stride: 2,
        padding: 1,
        dilation: 1,
        ceil_mode: true,
    };
    assert_eq!(max_pool1d_output_len(5, &options).unwrap(), 3);
    let mut output = vec![0.0; 3];
    max_pool1d(&arange(5), [1, 1, 5], &options, &mut output).unwrap();
    assert_eq!(output, [0.0, 2.0, 4.0]);
    // With six elements the fourth window starts at index 5, inside the input: [0, 2, 4, 5].
    assert_eq!(max_pool1d_output_len(6, &options).unwrap(), 4);
    let mut output = vec![0.0; 4];
    max_pool1d(&arange(6), [1, 1, 6], &options, &mut output).unwrap();
    assert_eq!(output, [0.0, 2.0, 4.0, 5.0]);
}

#[test]
fn avg_pool_ceil_mode_and_padding_match_pytorch() {
    // avg_pool2d(torch.arange(25.).view(1, 1, 5, 5), 2, 2, ceil_mode=True): the partial windows
    // on the right and bottom divide by their clipped size.
    let input = arange(25);
    let mut options = AvgPool2dOptions::new([2, 2]);
    options.ceil_mode = true;
    let mut output = vec![0.0; 9];
    avg_pool2d(&input, [1, 1, 5, 5], &options, &mut output).unwrap();
    assert_eq!(output, [3.0, 5.0, 6.5, 13.0, 15.0, 16.5, 20.5, 22.5, 24.0]);

    // avg_pool2d(..., 3, stride=2, padding=1, ceil_mode=True): the corner window covers
    // {0, 1, 5, 6}, divided by 9 with count_include_pad and by 4 without.
    let mut options = AvgPool2dOptions::new([3, 3]);
    options.stride = [2, 2];
    options.padding = [1, 1];
    options.ceil_mode = true;
    assert_eq!(
        avg_pool2d_output_shape([1, 1, 5, 5], &options).unwrap(),
        [1, 1, 3, 3]
    );
    avg_pool2d(&input, [1, 1, 5, 5], &options, &mut output).unwrap();
    assert_close(&output[..1], &[12.0 / 9.0], 1e-6);
    options.count_include_pad = false;
    avg_pool2d(&input, [1, 1, 5, 5], &options, &mut output).unwrap();
    assert_eq!(output[0], 3.0);
    assert_eq!(output[8], (18.0 + 19.0 + 23.0 + 24.0) / 4.0);
}

#[test]
fn avg_pool1d_matches_two_dimensional_form() {
    let options = AvgPool1dOptions {
        kernel: 3,
        stride: 2,
        padding: 1,
        ceil_mode: false,
        count_include_pad: false,
    };
    let length = avg_pool1d_output_len(7, &options).unwrap();
    let mut output = vec![0.0; 2 * length];
    avg_pool1d(&arange(14), [1, 2, 7], &options, &mut output).unwrap();
    let (expected, _) = reference::avg_pool2d(
        &arange(14),
        [1, 2, 1, 7],
        &AvgPool2dOptions {
            kernel: [1, 3],
            stride: [1, 2],
            padding: [0, 1],
            ceil_mode: false,
            count_include_pad: false,
            divisor_override: None,
        },
    );
    assert_close(&output, &expected, 1e-6);
}

#[test]
fn nan_propagates_through_max_pool() {
    let input = [1.0, f32::NAN, 3.0, 2.0];
    let mut output = [0.0];
    max_pool2d(
        &input,
        [1, 1, 2, 2],
        &MaxPool2dOptions::new([2, 2]),
        &mut output,
    )
    .unwrap();
    assert!(output[0].is_nan());
}

#[test]
fn invalid_arguments_are_errors() {
    assert!(pooled_size(5, 2, 2, 2, 1, false).is_err());
    assert!(pooled_size(5, 0, 1, 0, 1, false).is_err());
    assert!(pooled_size(5, 2, 0, 0, 1, false).is_err());
    assert!(pooled_size(1, 3, 1, 0, 1, false).is_err());
    let mut output = [0.0; 4];
    let options = MaxPool2dOptions::new([2, 2]);
    assert!(max_pool2d(&[0.0; 15], [1, 1, 4, 4], &options, &mut output).is_err());
    assert!(global_avg_pool(&[0.0; 4], &[4], &mut output).is_err());
    let mut options = AvgPool2dOptions::new([2, 2]);
    options.divisor_override = Some(0);
    assert!(avg_pool2d(&[0.0; 16], [1, 1, 4, 4], &options, &mut output).is_err());
}

#[test]
fn nan_propagates_through_channels_last_max_pools() {
    // Two channels of a 2x2 image; only the second channel holds a NaN.
    let input = [1.0, 5.0, f32::NAN, 2.0, 3.0, 4.0, 2.0, 1.0];
    let mut output = [0.0; 2];
    let options = MaxPool2dOptions::new([2, 2]);
    max_pool2d_channels_last(&input, [1, 2, 2, 2], &options, &mut output).unwrap();
    assert!(output[0].is_nan());
    assert_eq!(output[1], 5.0);
    global_max_pool_channels_last(&input, [1, 2, 2, 2], &mut output).unwrap();
    assert!(output[0].is_nan());
    assert_eq!(output[1], 5.0);
}

/// Shapes large enough to split into several tasks give the reference's values with one thread
/// and with two, in both layouts.
#[test]
fn threaded_pools_match_reference() {
    let shape = [2, 24, 61, 47];
    let length: usize = shape.iter().product();
    let input: Vec<f32> = (0..length)
        .map(|index| ((index * 7919) % 1009) as f32 / 500.0 - 1.0)
        .collect();
    let channels_last = to_channels_last(&input, shape);
    let mut max_options = MaxPool2dOptions::new([3, 3]);
    max_options.stride = [2, 2];
    max_options.padding = [1, 1];
    let mut avg_options = AvgPool2dOptions::new([3, 3]);
    avg_options.stride = [2, 1];
    avg_options.padding = [1, 1];
    avg_options.ceil_mode = true;
    let (expected_max, max_shape) = reference::max_pool2d(&input, shape, &max_options);
    let (expected_avg, avg_shape) = reference::avg_pool2d(&input, shape, &avg_options);
    let expected_mean = reference::global_pool(&input, &shape, false);
    let expected_maximum = reference::global_pool(&input, &shape, true);
    for threads in [1, 2] {
        crate::set_num_threads(threads);
        let mut output = vec![0.0; expected_max.len()];
        max_pool2d(&input, shape, &max_options, &mut output).unwrap();
        assert_eq!(output, expected_max);
        max_pool2d_channels_last(&channels_last, nhwc(shape), &max_options, &mut output).unwrap();
        assert_eq!(to_channels_first(&output, nhwc(max_shape)), expected_max);
        let mut output = vec![0.0; expected_avg.len()];
        avg_pool2d(&input, shape, &avg_options, &mut output).unwrap();
        assert_close(&output, &expected_avg, 1e-5);
        avg_pool2d_channels_last(&channels_last, nhwc(shape), &avg_options, &mut output).unwrap();
        assert_close(
            &to_channels_first(&output, nhwc(avg_shape)),
            &expected_avg,
            1e-5,
        );
        let mut output = vec![0.0; shape[0] * shape[1]];
        global_avg_pool(&input, &shape, &mut output).unwrap();
        assert_close(&output, &expected_mean, 1e-5);
        global_avg_pool_channels_last(&channels_last, nhwc(shape), &mut output).unwrap();
        assert_close(&output, &expected_mean, 1e-5);
        global_max_pool_channels_last(&channels_last, nhwc(shape), &mut output).unwrap();
        assert_eq!(output, expected_maximum);
    }
    crate::set_num_threads(0);
}

#[test]
fn channels_last_invalid_arguments_are_errors() {
    let mut output = [0.0; 8];
    let options = MaxPool2dOptions::new([2, 2]);
    assert!(max_pool2d_channels_last(&[0.0; 15], [1, 4, 4, 1], &options, &mut output).is_err());
    assert!(max_pool2d_channels_last(&[0.0; 16], [1, 4, 4, 1], &options, &mut output).is_err());
    let mut options = AvgPool2dOptions::new([2, 2]);
    options.divisor_override = Some(0);
    assert!(avg_pool2d_channels_last(&[0.0; 16], [1, 4, 4, 1], &options, &mut output).is_err());
    assert!(global_avg_pool_channels_last(&[0.0; 4], [1, 0, 2, 2], &mut output).is_err());
    assert!(global_max_pool_channels_last(&[0.0; 3], [1, 1, 2, 2], &mut output[..2]).is_err());
}

/// The separable max pooling on planes wider than its vector loops (several vectors and a
/// tail): the ResNet stem's 3x3/s2 window, ceil mode, dilation, a window taller than a round of
/// rows, and NaNs scattered through the input, which must reach every output whose window
/// holds one.
#[test]
fn separable_max_pool_matches_reference_on_wide_planes() {
    let cases = [
        ([1, 3, 112, 112], [3, 3], [2, 2], [1, 1], [1, 1], false),
        ([1, 2, 37, 53], [3, 3], [2, 2], [1, 1], [1, 1], true),
        ([2, 2, 29, 41], [2, 3], [1, 2], [1, 1], [2, 1], false),
        ([1, 1, 20, 67], [5, 4], [3, 1], [2, 2], [1, 2], true),
        ([1, 1, 30, 30], [9, 9], [1, 1], [4, 4], [1, 1], false),
    ];
    for (shape, kernel, stride, padding, dilation, ceil_mode) in cases {
        let options = MaxPool2dOptions {
            kernel,
            stride,
            padding,
            dilation,
            ceil_mode,
        };
        let length: usize = shape.iter().product();
        let mut input: Vec<f32> = (0..length)
            .map(|index| ((index * 7919) % 1013) as f32 / 101.0 - 5.0)
            .collect();
        for with_nans in [false, true] {
            if with_nans {
                for index in (0..length).step_by(997) {
                    input[index] = f32::NAN;
                }
            }
            let (expected, _) = reference::max_pool2d(&input, shape, &options);
            let mut output = vec![0.0; expected.len()];
            max_pool2d(&input, shape, &options, &mut output).unwrap();
            for (index, (&actual, &wanted)) in output.iter().zip(&expected).enumerate() {
                assert!(
                    actual.is_nan() == wanted.is_nan() && (wanted.is_nan() || actual == wanted),
                    "{shape:?} {options:?} nans {with_nans}: output {index} is {actual}, not {wanted}"
                );
            }
        }
    }
}
