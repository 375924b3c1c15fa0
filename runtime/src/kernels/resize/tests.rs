use super::*;
use crate::reference;
use crate::test_support::{assert_close, values};
use proptest::prelude::*;

fn coordinates() -> impl Strategy<Value = CoordinateTransform> {
    prop::sample::select(CoordinateTransform::ALL.to_vec())
}

fn rounding() -> impl Strategy<Value = NearestRounding> {
    prop::sample::select(NearestRounding::ALL.to_vec())
}

/// A resize of a random image: by an integer or fractional scale, or to a random size.
fn resize_case() -> impl Strategy<Value = ([usize; 4], Resize2dOptions, Vec<f32>)> {
    (
        (1..3usize, 1..4usize, 1..9usize, 1..9usize),
        (1..20usize, 1..20usize, any::<bool>()),
        (any::<bool>(), coordinates(), rounding()),
    )
        .prop_flat_map(
            |(
                (batch, channels, h, w),
                (out_h, out_w, by_scale),
                (linear, coordinates, nearest),
            )| {
                // By scale: the ratio in quarters, the output size ONNX derives from it.
                let scale = if by_scale {
                    [out_h as f32 / 4.0, out_w as f32 / 4.0]
                } else {
                    [out_h as f32 / h as f32, out_w as f32 / w as f32]
                };
                let output_size = if by_scale {
                    [
                        ((h as f32 * scale[0]) as usize).max(1),
                        ((w as f32 * scale[1]) as usize).max(1),
                    ]
                } else {
                    [out_h, out_w]
                };
                let options = Resize2dOptions {
                    output_size,
                    scale,
                    mode: if linear {
                        ResizeMode::Linear
                    } else {
                        ResizeMode::Nearest
                    },
                    coordinates,
                    nearest,
                };
                (
                    Just([batch, channels, h, w]),
                    Just(options),
                    values(batch * channels * h * w),
                )
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn resize_matches_reference((shape, options, input) in resize_case()) {
        let expected = reference::resize2d(&input, shape, &options);
        let output_shape = resize2d_output_shape(shape, &options);
        let mut output = vec![f32::NAN; output_shape.iter().product()];
        resize2d(&input, shape, &options, &mut output).unwrap();
        assert_close(&output, &expected, 1e-5);
    }

    #[test]
    fn pad_matches_reference(
        shape in prop::collection::vec(1..6usize, 1..5),
        pads in prop::collection::vec((0..5usize, 0..5usize), 4),
        mode in prop::sample::select(PadMode::ALL.to_vec()),
        value in -3.0f32..3.0,
        seed in values(1),
    ) {
        let rank = shape.len();
        let limit = |axis: usize, pad: usize| match mode {
            PadMode::Reflect => pad.min(shape[axis] - 1),
            _ => pad,
        };
        let before: Vec<usize> = (0..rank).map(|axis| limit(axis, pads[axis].0)).collect();
        let after: Vec<usize> = (0..rank).map(|axis| limit(axis, pads[axis].1)).collect();
        let count: usize = shape.iter().product();
        let input: Vec<f32> = (0..count).map(|i| (i as f32 * 0.37 + seed[0]).sin()).collect();
        let expected = reference::pad(&input, &shape, &before, &after, mode, value);
        let mut output = vec![f32::NAN; pad_output_shape(&shape, &before, &after).iter().product()];
        pad(&input, &shape, &before, &after, mode, value, &mut output).unwrap();
        prop_assert_eq!(output, expected);
    }
}

#[test]
fn nearest_upsample_by_two_repeats_pixels() {
    let options = Resize2dOptions {
        output_size: [2, 4],
        scale: [2.0, 2.0],
        mode: ResizeMode::Nearest,
        coordinates: CoordinateTransform::Asymmetric,
        nearest: NearestRounding::Floor,
    };
    let mut output = vec![0.0; 8];
    resize2d(&[1.0, 2.0], [1, 1, 1, 2], &options, &mut output).unwrap();
    assert_eq!(output, [1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0]);
}

#[test]
fn bad_buffers_and_pads_are_errors() {
    let options = Resize2dOptions {
        output_size: [2, 2],
        scale: [2.0, 2.0],
        mode: ResizeMode::Linear,
        coordinates: CoordinateTransform::HalfPixel,
        nearest: NearestRounding::Floor,
    };
    assert!(resize2d(&[1.0; 3], [1, 1, 1, 1], &options, &mut [0.0; 4]).is_err());
    assert!(resize2d(&[1.0], [1, 1, 1, 1], &options, &mut [0.0; 3]).is_err());
    let bad_scale = Resize2dOptions {
        scale: [0.0, 1.0],
        ..options
    };
    assert!(resize2d(&[1.0], [1, 1, 1, 1], &bad_scale, &mut [0.0; 4]).is_err());
    // Reflection by as many elements as the axis has, and pads of the wrong rank.
    assert!(
        pad(
            &[1.0, 2.0],
            &[2],
            &[2],
            &[0],
            PadMode::Reflect,
            0.0,
            &mut [0.0; 4]
        )
        .is_err()
    );
    assert!(
        pad(
            &[1.0, 2.0],
            &[2],
            &[1, 1],
            &[0],
            PadMode::Edge,
            0.0,
            &mut [0.0; 4]
        )
        .is_err()
    );
    let mut output = [0.0; 5];
    pad(
        &[1.0, 2.0],
        &[2],
        &[2],
        &[1],
        PadMode::Edge,
        0.0,
        &mut output,
    )
    .unwrap();
    assert_eq!(output, [1.0, 1.0, 1.0, 2.0, 2.0]);
}

/// Output pixel 9 of 6 -> 19 maps to 9.5 / (19 / 6) - 0.5, a tie at 2.5 in exact arithmetic that
/// `f32` lands on and `f64` misses; the kernel rounds it up, as ONNX Runtime 1.x does (the
/// expected row is what it printed for this `Resize`).
#[test]
fn nearest_ties_round_like_onnx_runtime() {
    let options = Resize2dOptions {
        output_size: [1, 19],
        scale: [1.0, 19.0 / 6.0],
        mode: ResizeMode::Nearest,
        coordinates: CoordinateTransform::PytorchHalfPixel,
        nearest: NearestRounding::RoundPreferCeil,
    };
    let input = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
    let mut output = vec![0.0; 19];
    resize2d(&input, [1, 1, 1, 6], &options, &mut output).unwrap();
    let onnx_runtime = [
        0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 3.0, 3.0, 3.0, 3.0, 4.0, 4.0, 4.0, 5.0, 5.0,
        5.0,
    ];
    assert_eq!(output, onnx_runtime);
    assert_eq!(
        reference::resize2d(&input, [1, 1, 1, 6], &options),
        onnx_runtime
    );
}
