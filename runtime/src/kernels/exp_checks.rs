//! The checks that the vector forms of `nnc_ops::math::exp` (`exp_avx2`, `exp_avx512`) and of
//! the softmax passes built on it give the scalar functions' values, for each form's tests.

use nnc_ops::math;

/// Arguments where `exp`'s clamp, rounding and scaling change regime, and NaN.
pub(crate) const EDGES: [f32; 16] = [
    f32::NEG_INFINITY,
    f32::INFINITY,
    f32::NAN,
    -104.0,
    -103.97,
    -103.3,
    -87.33655,
    -87.4,
    88.72,
    88.73,
    88.8,
    -0.0,
    0.0,
    1e-30,
    -1e-8,
    f32::MIN_POSITIVE,
];

/// Panics unless `outputs[i]` is `math::exp(inputs[i])`, bit for bit (any NaN for NaN).
pub(crate) fn assert_exp_bits(inputs: &[f32], outputs: &[f32]) {
    assert_eq!(inputs.len(), outputs.len());
    for (&input, &output) in inputs.iter().zip(outputs) {
        let expected = math::exp(input);
        assert!(
            output.to_bits() == expected.to_bits() || (output.is_nan() && expected.is_nan()),
            "exp({input:e}): {output:e} against {expected:e}"
        );
    }
}

/// Checks a vector `maximum` against `softmax::maximum` on lengths around `lanes`: the largest
/// value in the last (masked) piece, NaN anywhere, and nothing but minus infinity.
pub(crate) fn check_maximum(lanes: usize, maximum: impl Fn(&[f32]) -> f32) {
    for length in [0, 1, lanes - 1, lanes, lanes + 1, 2 * lanes + 1, 128] {
        let mut values: Vec<f32> = (0..length).map(|i| ((i * 37) % 23) as f32 - 11.5).collect();
        assert_eq!(
            maximum(&values),
            crate::kernels::softmax::maximum(&values),
            "{length}"
        );
        if length > 0 {
            values[length - 1] = 1e9;
            assert_eq!(maximum(&values), 1e9, "the last of {length}");
            values[length / 2] = f32::NAN;
            assert!(maximum(&values).is_nan(), "a NaN at {}", length / 2);
        }
    }
    let all_masked = vec![f32::NEG_INFINITY; lanes + 3];
    assert_eq!(maximum(&all_masked), f32::NEG_INFINITY);
}

/// Checks a vector `exponentiate(values, maximum)` (each value becomes `exp(value - maximum)`,
/// or 0 where it is minus infinity, and the sum is returned) on lengths around `lanes`: the
/// values, the sum, and the float after the slice left alone.
pub(crate) fn check_masked_exponentials(
    lanes: usize,
    exponentiate: impl Fn(&mut [f32], f32) -> f32,
) {
    for length in [
        1,
        lanes - 1,
        lanes,
        lanes + 1,
        2 * lanes - 1,
        2 * lanes,
        2 * lanes + 1,
        3 * lanes - 1,
        3 * lanes + 1,
        4 * lanes + 3,
        7 * lanes + 3,
        8 * lanes - 1,
    ] {
        let mut values: Vec<f32> = (0..length + 1).map(|i| i as f32 * -0.75).collect();
        values[length / 2] = f32::NEG_INFINITY;
        let expected: Vec<f32> = values[..length]
            .iter()
            .map(|&x| {
                if x == f32::NEG_INFINITY {
                    0.0
                } else {
                    math::exp(x - 0.5)
                }
            })
            .collect();
        let total = exponentiate(&mut values[..length], 0.5);
        assert_eq!(&values[..length], &expected[..], "{length}");
        let expected_total: f32 = expected.iter().sum();
        assert!(
            (total - expected_total).abs() <= 1e-6 * expected_total.abs().max(1.0),
            "{length}: {total} against {expected_total}"
        );
        assert_eq!(
            values[length],
            length as f32 * -0.75,
            "the float after the slice"
        );
    }
}
