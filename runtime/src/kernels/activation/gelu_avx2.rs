//! Exact GELU (`nnc_ops::activation::gelu`) eight lanes at a time with AVX2 and FMA, bit for bit:
//! the same products, the same clamps, each multiply-add of the rational `erf` fused as the
//! scalar function's, and the same division.
//!
//! Why it is written out: the generic interleaved loop (`vectorize::map_in_place_interleaved`)
//! compiles the scalar function into four vector computations one after the other, and one
//! vector's chain (two clamps, two polynomials of seven and five multiply-adds, a division,
//! a final multiply-add: some sixty cycles of latency on a first-generation Zen) left the
//! processor waiting: 32 cycles a vector, where its fifteen multiplications and multiply-adds
//! take fifteen. Here each step is taken for four vectors before the next: 24 cycles a vector
//! (196,608 values, the encoder's FFN, 277 -> 209 us at one thread); two vectors a step gave 25.5,
//! six 26.3 and eight 29, their values spilling from the sixteen registers.

use nnc_ops::activation::gelu;
use nnc_ops::math::erf_rational_constants::{CLAMP, DENOMINATOR, NUMERATOR};
use std::arch::x86_64::{
    __m256, _mm256_div_ps, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_max_ps, _mm256_min_ps,
    _mm256_mul_ps, _mm256_set1_ps, _mm256_storeu_ps,
};

/// Vectors per step of the main loop.
const STEP_VECTORS: usize = 6;

/// GELU of every lane of `N` vectors, equal to `nnc_ops::activation::gelu` lane by lane (NaN
/// stays NaN), each step taken for all `N` vectors before the next.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn gelu_each<const N: usize>(x: [__m256; N]) -> [__m256; N] {
    let half = x.map(|x| _mm256_mul_ps(_mm256_set1_ps(0.5), x));
    let scaled = x.map(|x| _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::FRAC_1_SQRT_2)));
    // `clamp`: `max_ps` and `min_ps` return their second operand when either is NaN, so a NaN
    // passes through both.
    let clamp = |value: __m256, bound: f32| {
        _mm256_min_ps(
            _mm256_set1_ps(bound),
            _mm256_max_ps(_mm256_set1_ps(-bound), value),
        )
    };
    let clamped = scaled.map(|scaled| clamp(scaled, CLAMP));
    let square = clamped.map(|clamped| _mm256_mul_ps(clamped, clamped));
    let mut numerator = [_mm256_set1_ps(NUMERATOR[NUMERATOR.len() - 1]); N];
    for &coefficient in NUMERATOR[..NUMERATOR.len() - 1].iter().rev() {
        for i in 0..N {
            numerator[i] = _mm256_fmadd_ps(numerator[i], square[i], _mm256_set1_ps(coefficient));
        }
    }
    let mut denominator = [_mm256_set1_ps(DENOMINATOR[DENOMINATOR.len() - 1]); N];
    for &coefficient in DENOMINATOR[..DENOMINATOR.len() - 1].iter().rev() {
        for i in 0..N {
            denominator[i] =
                _mm256_fmadd_ps(denominator[i], square[i], _mm256_set1_ps(coefficient));
        }
    }
    let quotient: [__m256; N] = std::array::from_fn(|i| {
        _mm256_div_ps(_mm256_mul_ps(clamped[i], numerator[i]), denominator[i])
    });
    std::array::from_fn(|i| _mm256_fmadd_ps(half[i], clamp(quotient[i], 1.0), half[i]))
}

/// `output[i] = gelu(input[i])` for `length` floats; `input` and `output` may be the same.
///
/// # Safety
///
/// The processor must support AVX2 and FMA (`vectorize::has_avx2_fma`); `input` must be valid
/// for reads and `output` for writes of `length` floats, and they either are the same pointer or
/// do not overlap.
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_lanes(input: *const f32, output: *mut f32, length: usize) {
    const STEP: usize = 8 * STEP_VECTORS;
    let mut start = 0;
    while start + STEP <= length {
        // SAFETY: The loads and stores touch floats `start..start + STEP`, below `length`; each
        // vector is loaded before any store of this step, so in place each reads its own input.
        unsafe {
            let x: [__m256; STEP_VECTORS] =
                std::array::from_fn(|i| _mm256_loadu_ps(input.add(start + 8 * i)));
            for (i, value) in gelu_each(x).into_iter().enumerate() {
                _mm256_storeu_ps(output.add(start + 8 * i), value);
            }
        }
        start += STEP;
    }
    while start + 8 <= length {
        // SAFETY: As above, for floats `start..start + 8`.
        unsafe {
            let [value] = gelu_each([_mm256_loadu_ps(input.add(start))]);
            _mm256_storeu_ps(output.add(start), value);
        }
        start += 8;
    }
    for index in start..length {
        // SAFETY: `index < length`.
        unsafe { *output.add(index) = gelu(*input.add(index)) };
    }
}

/// `values[i] = gelu(values[i])`.
///
/// # Safety
///
/// The processor must support AVX2 and FMA (`vectorize::has_avx2_fma`).
pub(super) unsafe fn gelu_in_place(values: &mut [f32]) {
    // SAFETY: The processor's support is the caller's promise; input and output are the same
    // `values.len()` floats.
    unsafe { gelu_lanes(values.as_ptr(), values.as_mut_ptr(), values.len()) }
}

/// `output[i] = gelu(input[i])`; the slices have the same length (as for `vectorize::map`).
///
/// # Safety
///
/// The processor must support AVX2 and FMA (`vectorize::has_avx2_fma`).
pub(super) unsafe fn gelu_map(input: &[f32], output: &mut [f32]) {
    debug_assert_eq!(input.len(), output.len());
    let length = input.len().min(output.len());
    // SAFETY: The processor's support is the caller's promise; both slices hold `length` floats
    // and, one shared and one exclusive, do not overlap.
    unsafe { gelu_lanes(input.as_ptr(), output.as_mut_ptr(), length) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::vectorize::has_avx2_fma;
    use proptest::prelude::*;

    /// Arguments where GELU's clamps and rounding change regime (the `erf` clamp is at
    /// `x = ±3.92 * sqrt(2)`), and the special values.
    const EDGES: [f32; 16] = [
        f32::NEG_INFINITY,
        f32::INFINITY,
        f32::NAN,
        -0.0,
        0.0,
        5.543_717,
        -5.543_717,
        5.543_718,
        -5.543_718,
        f32::MAX,
        f32::MIN,
        f32::MIN_POSITIVE,
        -1e-40,
        1e-30,
        -2.0,
        2.0,
    ];

    /// Panics unless the vector loop, in place and out of place, gives `gelu(x)` for every
    /// input, bit for bit (any NaN for NaN), and leaves the float after the output alone.
    fn assert_same_bits(inputs: &[f32]) {
        if !has_avx2_fma() {
            return;
        }
        let mut in_place = inputs.to_vec();
        let mut mapped = vec![7.0; inputs.len() + 1];
        // SAFETY: The processor has AVX2 and FMA (checked above).
        unsafe {
            gelu_in_place(&mut in_place);
            gelu_map(inputs, &mut mapped[..inputs.len()]);
        }
        for (index, &x) in inputs.iter().enumerate() {
            let expected = gelu(x);
            for (form, got) in [("in place", in_place[index]), ("mapped", mapped[index])] {
                assert!(
                    got.to_bits() == expected.to_bits() || (got.is_nan() && expected.is_nan()),
                    "{form}: gelu({x}) = {got}, expected {expected} (length {}, index {index})",
                    inputs.len()
                );
            }
        }
        assert_eq!(mapped[inputs.len()], 7.0, "the float after the output");
    }

    #[test]
    fn edges_in_every_lane_and_every_tail() {
        // Every edge at every position of a 32-float step, an 8-float step and the scalar tail.
        for length in [1, 7, 8, 9, 31, 32, 33, 40, 47, 71] {
            for shift in 0..EDGES.len() {
                let inputs: Vec<f32> = (0..length)
                    .map(|i| EDGES[(i + shift) % EDGES.len()])
                    .collect();
                assert_same_bits(&inputs);
            }
        }
    }

    proptest! {
        #[test]
        fn every_length_equals_the_scalar_function(
            inputs in prop::collection::vec(
                prop_oneof![-12.0f32..12.0, -1.0f32..1.0, -1.0e4f32..1.0e4],
                0..150,
            ),
        ) {
            assert_same_bits(&inputs);
        }
    }
}
