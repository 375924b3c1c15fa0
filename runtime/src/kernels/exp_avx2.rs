//! `nnc_ops::math::exp` on eight lanes with AVX2 and FMA, bit for bit: the same clamp,
//! reduction and polynomial, each step the same fused multiply-add, and `2^n` as the same two
//! factors built from their bits. The twin of `exp_avx512` for processors without AVX-512, where
//! the attention's online softmax spends its time.
//!
//! Why it is written out: a loop over the scalar `math::exp` is only as fast as the target
//! features of the function it is compiled in. Inside a closure handed to a generic helper it
//! was compiled without FMA, and every `mul_add` became a call to `fmaf`: on an AVX2 machine
//! half of the MiniLM encoder's time went to those calls.

use std::arch::x86_64::{
    __m256, __m256i, _CMP_EQ_OQ, _CMP_UNORD_Q, _mm256_add_epi32, _mm256_add_ps, _mm256_and_ps,
    _mm256_andnot_ps, _mm256_blendv_ps, _mm256_castps_si256, _mm256_castsi256_ps, _mm256_cmp_ps,
    _mm256_cmpgt_epi32, _mm256_fmadd_ps, _mm256_fnmadd_ps, _mm256_loadu_ps, _mm256_maskload_ps,
    _mm256_maskstore_ps, _mm256_max_ps, _mm256_min_ps, _mm256_movemask_ps, _mm256_mul_ps,
    _mm256_or_ps, _mm256_set1_epi32, _mm256_set1_ps, _mm256_setr_epi32, _mm256_setzero_ps,
    _mm256_slli_epi32, _mm256_srai_epi32, _mm256_storeu_ps, _mm256_sub_epi32, _mm256_sub_ps,
};

/// `e^x` in every lane of `N` vectors, equal to `nnc_ops::math::exp` lane by lane (NaN stays
/// NaN). Each step is taken for all `N` vectors before the next: one vector's steps are a chain
/// of about twenty dependent operations, and with two chains interleaved the softmax's
/// exponentials took about a sixth less time than one vector at a time (`perf` samples of
/// `attention_timing`, one thread: 202 against 169 µs a call).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn exp_each<const N: usize>(x: [__m256; N]) -> [__m256; N] {
    use nnc_ops::math::exp_constants::{
        LN2_HIGH, LN2_LOW, LOG2_E, MAX, MIN, POLYNOMIAL as COEFFICIENTS, ROUNDING_SHIFT,
    };
    // `x.clamp(MIN, MAX)`: `max_ps` and `min_ps` return their second operand when either is
    // NaN, so a NaN `x` passes through both.
    let x = x.map(|x| _mm256_min_ps(_mm256_set1_ps(MAX), _mm256_max_ps(_mm256_set1_ps(MIN), x)));
    let shift = _mm256_set1_ps(ROUNDING_SHIFT);
    let shifted = x.map(|x| _mm256_fmadd_ps(x, _mm256_set1_ps(LOG2_E), shift));
    // The rounded `n` as an integer: the low mantissa bits of `shifted`.
    let exponent = shifted.map(|shifted| {
        _mm256_sub_epi32(
            _mm256_castps_si256(shifted),
            _mm256_set1_epi32(ROUNDING_SHIFT.to_bits() as i32),
        )
    });
    let n = shifted.map(|shifted| _mm256_sub_ps(shifted, shift));
    // `(-n) * c + y` rounds as `-(n * c) + y`: negation is exact.
    let r: [__m256; N] = std::array::from_fn(|i| {
        _mm256_fnmadd_ps(
            n[i],
            _mm256_set1_ps(LN2_LOW),
            _mm256_fnmadd_ps(n[i], _mm256_set1_ps(LN2_HIGH), x[i]),
        )
    });
    let mut polynomial = [_mm256_set1_ps(COEFFICIENTS[5]); N];
    for &coefficient in COEFFICIENTS[..5].iter().rev() {
        for i in 0..N {
            polynomial[i] = _mm256_fmadd_ps(polynomial[i], r[i], _mm256_set1_ps(coefficient));
        }
    }
    let mantissa: [__m256; N] = std::array::from_fn(|i| {
        _mm256_add_ps(
            _mm256_fmadd_ps(polynomial[i], _mm256_mul_ps(r[i], r[i]), r[i]),
            _mm256_set1_ps(1.0),
        )
    });
    // `2^n` as two normal factors, `2^(n >> 1)` and `2^(n - (n >> 1))`, multiplied in the
    // scalar function's order.
    let bias = _mm256_set1_epi32(127);
    std::array::from_fn(|i| {
        let half = _mm256_srai_epi32::<1>(exponent[i]);
        let first = power_of_two(_mm256_add_epi32(half, bias));
        let second = power_of_two(_mm256_add_epi32(_mm256_sub_epi32(exponent[i], half), bias));
        _mm256_mul_ps(_mm256_mul_ps(mantissa[i], first), second)
    })
}

/// The float whose biased exponent field is `biased` (and mantissa zero).
#[inline]
#[target_feature(enable = "avx2")]
fn power_of_two(biased: __m256i) -> __m256 {
    _mm256_castsi256_ps(_mm256_slli_epi32::<23>(biased))
}

/// The load mask of the first `length.min(8)` lanes (a lane's sign bit set where it is kept).
#[inline]
#[target_feature(enable = "avx2")]
fn first_lanes(length: usize) -> __m256i {
    let length = length.min(8) as i32;
    _mm256_cmpgt_epi32(
        _mm256_set1_epi32(length),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    )
}

/// The largest of `values`, as `softmax::maximum` finds it: NaN if any is NaN, minus infinity
/// for none. Eight lanes at a time, with a masked last piece.
///
/// # Safety
///
/// The processor must support AVX2 and FMA (`vectorize::has_avx2_fma`).
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn maximum(values: &[f32]) -> f32 {
    let minus_infinity = _mm256_set1_ps(f32::NEG_INFINITY);
    let mut maximum = minus_infinity;
    let mut nan = _mm256_setzero_ps();
    let mut step = |x: __m256| {
        // `max_ps` returns its second operand when either is NaN: NaN in `x` is counted here.
        nan = _mm256_or_ps(nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x));
        maximum = _mm256_max_ps(x, maximum);
    };
    let mut chunks = values.chunks_exact(8);
    for chunk in &mut chunks {
        // SAFETY: The load reads the chunk's eight floats.
        step(unsafe { _mm256_loadu_ps(chunk.as_ptr()) });
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        let lanes = first_lanes(tail.len());
        // SAFETY: The masked load reads the tail's `tail.len() < 8` floats only; the other
        // lanes load as zero and are replaced by minus infinity.
        let loaded = unsafe { _mm256_maskload_ps(tail.as_ptr(), lanes) };
        step(_mm256_blendv_ps(
            minus_infinity,
            loaded,
            _mm256_castsi256_ps(lanes),
        ));
    }
    if _mm256_movemask_ps(nan) != 0 {
        return f32::NAN;
    }
    let mut lanes = [0.0f32; 8];
    // SAFETY: The store writes the eight floats of `lanes`.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), maximum) };
    lanes.into_iter().fold(f32::NEG_INFINITY, f32::max)
}

/// `values[i] = exp(values[i] - maximum)`, and 0 where `values[i]` is minus infinity (a masked
/// score), thirty-two at a time, then sixteen, then eight, with a masked last piece; returns the
/// sum of the new values (in eight lanes, added up at the end): the softmax's exponentials and
/// their sum in one pass.
///
/// Four vectors a step rather than two: on a first-generation Zen, whose multiply-adds take
/// five cycles, two chains left the unit idle between steps (`attention_timing`, one thread,
/// MiniLM's 12 heads of 32 at 128 tokens: 1002 µs a call with two, 969 with four).
///
/// # Safety
///
/// The processor must support AVX2 and FMA (`vectorize::has_avx2_fma`).
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn exponentiate_masked_sum(values: &mut [f32], maximum: f32) -> f32 {
    let maximum = _mm256_set1_ps(maximum);
    let mut sum = _mm256_setzero_ps();
    // Thirty-two at a time, the four vectors' exponentials interleaved (`exp_each`).
    let mut quads = values.chunks_exact_mut(32);
    for quad in &mut quads {
        // SAFETY: The chunk holds thirty-two floats.
        let [first, second, third, fourth] = unsafe { exponentiate_in_place::<4>(quad, maximum) };
        sum = _mm256_add_ps(
            _mm256_add_ps(sum, _mm256_add_ps(first, second)),
            _mm256_add_ps(third, fourth),
        );
    }
    // Then sixteen, two vectors interleaved.
    let mut pairs = quads.into_remainder().chunks_exact_mut(16);
    for pair in &mut pairs {
        // SAFETY: The chunk holds sixteen floats.
        let [low, high] = unsafe { exponentiate_in_place::<2>(pair, maximum) };
        sum = _mm256_add_ps(_mm256_add_ps(sum, low), high);
    }
    let mut chunks = pairs.into_remainder().chunks_exact_mut(8);
    for chunk in &mut chunks {
        // SAFETY: The chunk holds eight floats.
        let [value] = unsafe { exponentiate_in_place::<1>(chunk, maximum) };
        sum = _mm256_add_ps(sum, value);
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let lanes = first_lanes(tail.len());
        // SAFETY: The masked load and store touch the tail's `tail.len() < 8` floats only; the
        // other lanes load as zero, and their values are zeroed before the sum.
        unsafe {
            let x = _mm256_maskload_ps(tail.as_ptr(), lanes);
            let [value] = exponentiate_masked([x], maximum);
            let value = _mm256_and_ps(_mm256_castsi256_ps(lanes), value);
            _mm256_maskstore_ps(tail.as_mut_ptr(), lanes, value);
            sum = _mm256_add_ps(sum, value);
        }
    }
    let mut lanes = [0.0f32; 8];
    // SAFETY: The store writes the eight floats of `lanes`.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
    lanes.iter().sum()
}

/// `exponentiate_masked` of the first `8 * N` floats of `chunk`, written back in place and
/// returned (for the sum).
///
/// # Safety
///
/// `chunk` holds at least `8 * N` floats.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn exponentiate_in_place<const N: usize>(chunk: &mut [f32], maximum: __m256) -> [__m256; N] {
    debug_assert!(chunk.len() >= 8 * N);
    // SAFETY: The loads and stores touch the chunk's first `8 * N` floats (the caller's promise).
    unsafe {
        let x: [__m256; N] = std::array::from_fn(|i| _mm256_loadu_ps(chunk.as_ptr().add(8 * i)));
        let exponentials = exponentiate_masked(x, maximum);
        for (i, &value) in exponentials.iter().enumerate() {
            _mm256_storeu_ps(chunk.as_mut_ptr().add(8 * i), value);
        }
        exponentials
    }
}

/// The exponentials of `x - maximum` lane by lane, +0 where `x` is minus infinity.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn exponentiate_masked<const N: usize>(x: [__m256; N], maximum: __m256) -> [__m256; N] {
    let minus_infinity = _mm256_set1_ps(f32::NEG_INFINITY);
    let exponentials = exp_each(x.map(|x| _mm256_sub_ps(x, maximum)));
    std::array::from_fn(|i| {
        let masked = _mm256_cmp_ps::<_CMP_EQ_OQ>(x[i], minus_infinity);
        _mm256_andnot_ps(masked, exponentials[i])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::exp_checks::{
        EDGES, assert_exp_bits, check_masked_exponentials, check_maximum,
    };
    use crate::kernels::vectorize::has_avx2_fma;
    use proptest::prelude::*;

    /// Checks `exp_each` on `N` vectors, `inputs` holding their `8 * N` lanes, against the
    /// scalar function bit for bit.
    fn assert_same_bits<const N: usize>(inputs: &[f32]) {
        assert_eq!(inputs.len(), 8 * N);
        let mut outputs = vec![0.0; 8 * N];
        // SAFETY: Checked before the call in each test; the loads and stores cover the `8 * N`
        // floats of `inputs` and `outputs`.
        unsafe {
            let x = std::array::from_fn(|i| _mm256_loadu_ps(inputs.as_ptr().add(8 * i)));
            for (i, output) in exp_each::<N>(x).into_iter().enumerate() {
                _mm256_storeu_ps(outputs.as_mut_ptr().add(8 * i), output);
            }
        }
        assert_exp_bits(inputs, &outputs);
    }

    #[test]
    fn edges_equal_the_scalar_function() {
        if has_avx2_fma() {
            for edges in EDGES.chunks_exact(8) {
                assert_same_bits::<1>(edges);
            }
        }
    }

    proptest! {
        #[test]
        fn every_lane_equals_the_scalar_function(
            inputs in prop::array::uniform8(prop_oneof![-110.0f32..90.0, -1.0f32..1.0]),
        ) {
            if has_avx2_fma() {
                assert_same_bits::<1>(&inputs);
            }
        }

        #[test]
        fn four_interleaved_vectors_equal_the_scalar_function(
            inputs in prop::array::uniform32(prop_oneof![-110.0f32..90.0, -1.0f32..1.0]),
        ) {
            if has_avx2_fma() {
                assert_same_bits::<4>(&inputs);
            }
        }

        #[test]
        fn two_interleaved_vectors_equal_the_scalar_function(
            inputs in prop::array::uniform16(prop_oneof![-110.0f32..90.0, -1.0f32..1.0]),
        ) {
            if has_avx2_fma() {
                assert_same_bits::<2>(&inputs);
            }
        }
    }

    #[test]
    fn maximum_matches_softmax_maximum() {
        if has_avx2_fma() {
            // SAFETY: The processor has AVX2 and FMA (checked above).
            check_maximum(8, |values| unsafe { maximum(values) });
        }
    }

    #[test]
    fn masked_scores_become_zero_and_tails_stay_untouched() {
        if has_avx2_fma() {
            // SAFETY: The processor has AVX2 and FMA (checked above).
            check_masked_exponentials(8, |values, maximum| unsafe {
                exponentiate_masked_sum(values, maximum)
            });
        }
    }
}
