use super::*;
use crate::reference;
use proptest::prelude::*;

const ALL: [Activation; Activation::ALL.len()] = Activation::ALL;

fn activations() -> impl Strategy<Value = Activation> {
    prop::sample::select(ALL.to_vec())
}

/// Runs the slice kernel (both forms) and checks every element against the `f64` reference,
/// within `2e-6 * max(1, |x|, |expected|)`: the error of `f32` arithmetic on an input (or a
/// result, for `exp` and `pow`) of that size. Where the reference is not finite (`sqrt` of a
/// negative number, `exp` past its overflow) the kernel must give the same NaN or infinity.
#[track_caller]
fn check_against_reference(inputs: &[f32], activation: Activation) {
    let mut output = vec![0.0; inputs.len()];
    apply_activation(inputs, &mut output, activation).unwrap();
    let mut in_place = inputs.to_vec();
    apply_activation_in_place(&mut in_place, activation);
    assert!(
        same_values(&output, &in_place),
        "{activation:?}: in place and out of place differ"
    );
    for (&x, &got) in inputs.iter().zip(&output) {
        let expected = reference::activation(x, activation);
        assert!(
            same_values(&[got], &[activation.apply(x)]),
            "{activation:?}: scalar and slice forms differ"
        );
        if !expected.is_finite() {
            assert!(
                same_values(&[got], &[expected]),
                "{activation:?}({x}) = {got}, expected {expected}"
            );
            continue;
        }
        assert!(got.is_finite(), "{activation:?}({x}) = {got} is not finite");
        let bound = 2e-6 * x.abs().max(1.0).max(expected.abs());
        assert!(
            (got - expected).abs() <= bound,
            "{activation:?}({x}) = {got}, expected {expected}"
        );
    }
}

/// Whether two slices hold the same values, NaN equal to NaN.
fn same_values(left: &[f32], right: &[f32]) -> bool {
    left.len() == right.len()
        && left
            .iter()
            .zip(right)
            .all(|(a, b)| a == b || (a.is_nan() && b.is_nan()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn moderate_inputs_match_reference(
        inputs in prop::collection::vec(-12.0f32..12.0, 0..70),
        activation in activations(),
    ) {
        check_against_reference(&inputs, activation);
    }

    /// Long enough for the interleaved loop (32 elements a step) and the in-place buffer (64),
    /// with every tail length.
    #[test]
    fn long_slices_match_reference(
        inputs in prop::collection::vec(-12.0f32..12.0, 0..300),
        activation in activations(),
    ) {
        check_against_reference(&inputs, activation);
    }

    /// A one-step elementwise chain (the kernel of fused elementwise nodes) gives the
    /// activation kernel's values to the bit, in place and out of place.
    #[test]
    fn elementwise_chain_gives_the_same_bits(
        inputs in prop::collection::vec(-12.0f32..12.0, 0..150),
        activation in activations(),
    ) {
        use crate::kernels::elementwise::{elementwise_chain, elementwise_chain_in_place};
        let steps = [nnc_ops::ElementwiseStep::Activation(activation)];
        let mut expected = vec![0.0; inputs.len()];
        apply_activation(&inputs, &mut expected, activation).unwrap();
        let mut chained = vec![0.0; inputs.len()];
        elementwise_chain(&inputs, &mut chained, &steps).unwrap();
        let mut chained_in_place = inputs.clone();
        elementwise_chain_in_place(&mut chained_in_place, &steps);
        prop_assert!(same_values(&chained, &expected));
        prop_assert!(same_values(&chained_in_place, &expected));
    }

    #[test]
    fn huge_inputs_match_reference(
        inputs in prop::collection::vec(-1.0e4f32..1.0e4, 1..40),
        activation in activations(),
    ) {
        check_against_reference(&inputs, activation);
    }
}

#[test]
fn extreme_inputs_saturate_without_nan() {
    let inputs = [
        -1.0e30, -1.0e4, -200.0, -104.5, -88.8, -20.0, -5.0, -1e-30, 0.0, 1e-30, 5.0, 20.0, 88.8,
        200.0, 1.0e4, 1.0e30,
    ];
    for activation in ALL {
        check_against_reference(&inputs, activation);
    }
}

#[test]
fn known_pytorch_values() {
    let cases = [
        (Activation::Gelu, 1.0, 0.841_344_7),
        (Activation::Gelu, -1.0, -0.158_655_26),
        (Activation::Gelu, 0.5, 0.345_731_23),
        (Activation::GeluTanh, 1.0, 0.841_192),
        (Activation::GeluTanh, -0.5, -0.154_286),
        (Activation::HardSwish, 1.0, 0.666_666_7),
        (Activation::HardSwish, -1.0, -0.333_333_34),
        (Activation::HardSwish, 4.0, 4.0),
        (Activation::HardSigmoid, -1.0, 0.333_333_34),
        (Activation::HardSigmoid, 1.0, 0.666_666_7),
        (Activation::HardSigmoid, -4.0, 0.0),
        (Activation::Sigmoid, 1.0, 0.731_058_6),
        (Activation::Silu, 1.0, 0.731_058_6),
        (Activation::Silu, -2.0, -0.238_405_84),
        (Activation::Tanh, 0.5, 0.462_117_17),
        (Activation::Tanh, -2.0, -0.964_027_6),
        (Activation::Relu6, 7.0, 6.0),
        (Activation::Relu, -3.0, 0.0),
        (
            Activation::LeakyRelu {
                negative_slope: 0.01,
            },
            -2.0,
            -0.02,
        ),
        (Activation::Sigmoid, -1.0e4, 0.0),
        (Activation::Sigmoid, 1.0e4, 1.0),
        (Activation::Silu, 1.0e4, 1.0e4),
        (Activation::Tanh, -1.0e4, -1.0),
        (Activation::Gelu, 1.0e4, 1.0e4),
        (Activation::GeluTanh, -1.0e4, 0.0),
    ];
    for (activation, x, expected) in cases {
        let got = activation.apply(x);
        assert!(
            (got - expected).abs() <= 1e-6 * expected.abs().max(1.0),
            "{activation:?}({x}) = {got}, PyTorch gives {expected}"
        );
    }
}

#[test]
fn nan_propagates() {
    for activation in ALL {
        assert!(activation.apply(f32::NAN).is_nan(), "{activation:?}(NaN)");
    }
}

#[test]
fn long_slices_split_across_threads_correctly() {
    let inputs: Vec<f32> = (0..100_003)
        .map(|index| (index as f32 - 50_000.0) * 1e-3)
        .collect();
    check_against_reference(&inputs, Activation::GeluTanh);
    check_against_reference(&inputs, Activation::Silu);
}

#[test]
fn reference_erf_matches_known_values() {
    // Values from Python's math.erf.
    let cases = [
        (0.5, 0.520_499_877_813_046_5),
        (1.0, 0.842_700_792_949_714_9),
        (2.5, 0.999_593_047_982_555),
        (3.0, 0.999_977_909_503_001_4),
        (-1.5, -0.966_105_146_475_310_7),
    ];
    for (x, expected) in cases {
        assert!((reference::erf(x) - expected).abs() < 1e-13, "erf({x})");
    }
}

#[test]
fn fast_erf_is_accurate_to_about_1e7() {
    let mut worst = 0.0f64;
    for step in -50_000..=50_000 {
        let x = step as f32 * 1e-4;
        let error = (nnc_ops::math::erf(x) as f64 - reference::erf(x as f64)).abs();
        worst = worst.max(error);
    }
    assert!(worst < 1.2e-7, "worst absolute error of erf: {worst}");
}

/// The rational `erf` behind GELU: within 3.5e-7 of the exact values on a grid of 1e-5 over
/// [-6, 6], exactly ±1 from the clamp on (so that GELU of a large negative input is exactly 0),
/// odd, and NaN for NaN.
#[test]
fn rational_erf_is_accurate_to_3_5e7_and_saturates_at_one() {
    let mut worst = 0.0f64;
    for step in -600_000..=600_000 {
        let x = step as f32 * 1e-5;
        let got = nnc_ops::math::erf_rational(x);
        worst = worst.max((got as f64 - reference::erf(x as f64)).abs());
        assert_eq!(got, -nnc_ops::math::erf_rational(-x), "erf is odd at {x}");
    }
    assert!(
        worst < 3.5e-7,
        "worst absolute error of erf_rational: {worst}"
    );
    for x in [3.92f32, 4.0, 10.0, 1e4, f32::INFINITY] {
        assert_eq!(nnc_ops::math::erf_rational(x), 1.0, "erf({x})");
        assert_eq!(nnc_ops::math::erf_rational(-x), -1.0, "erf(-{x})");
    }
    assert!(nnc_ops::math::erf_rational(f32::NAN).is_nan());
    assert_eq!(Activation::Gelu.apply(-1e4), 0.0);
}

#[test]
fn mismatched_lengths_are_errors() {
    let mut output = [0.0; 3];
    assert!(apply_activation(&[1.0, 2.0], &mut output, Activation::Relu).is_err());
}

/// Every activation on a fine grid over [-12, 12] (24,001 points), against the `f64`
/// reference (where it is finite): the absolute error is at most `2e-7 * max(1, |x|, |value|)`
/// (`2.5e-7 * max(1, |x|)` for the
/// exact GELU, whose rational `erf` is two ulps off near `x = 2`), and where the value is at least
/// 1e-3 in magnitude the relative error is at most 1e-6. The GELUs are held to the relative
/// bound only from `x = -1` up: below, `1 + erf(x / sqrt 2)` cancels, and even `erf` rounded
/// correctly to `f32` (an ulp of 6e-8 near -1) leaves a relative error of 1e-5 at `x = -3`, as in
/// PyTorch's and ONNX Runtime's `f32` GELU.
#[test]
fn fine_grid_is_accurate() {
    let inputs: Vec<f32> = (-12_000..=12_000).map(|step| step as f32 * 1e-3).collect();
    for activation in ALL {
        let mut output = vec![0.0; inputs.len()];
        apply_activation(&inputs, &mut output, activation).unwrap();
        let mut worst_absolute = 0.0f64;
        let mut worst_relative = 0.0f64;
        for (&x, &got) in inputs.iter().zip(&output) {
            let expected = activation.reference(x) as f64;
            if !expected.is_finite() {
                assert!(
                    got.is_nan() == expected.is_nan(),
                    "{activation:?}({x}) = {got}"
                );
                continue;
            }
            let error = (got as f64 - expected).abs();
            let scale = (x.abs() as f64).max(1.0).max(expected.abs());
            worst_absolute = worst_absolute.max(error / scale);
            let cancels = matches!(activation, Activation::Gelu | Activation::GeluTanh) && x < -1.0;
            if expected.abs() >= 1e-3 && !cancels {
                worst_relative = worst_relative.max(error / expected.abs());
            }
        }
        println!("{activation:?}: absolute {worst_absolute:.2e}, relative {worst_relative:.2e}");
        let absolute_bound = if activation == Activation::Gelu {
            2.5e-7
        } else {
            2e-7
        };
        assert!(
            worst_absolute <= absolute_bound,
            "{activation:?}: {worst_absolute:e}"
        );
        assert!(worst_relative <= 1e-6, "{activation:?}: {worst_relative:e}");
    }
}
