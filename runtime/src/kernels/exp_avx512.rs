//! `nnc_ops::math::exp` on sixteen lanes with AVX-512F, bit for bit: the same clamp, reduction
//! and polynomial, each step the same fused multiply-add, and the final `mantissa * 2^n` as one
//! `vscalefps` (which rounds once, as the scalar function's two exact-then-rounding factors do)
//! instead of building the factors from their bits. About half the instructions of the AVX2
//! loop LLVM makes of the scalar function for the same sixteen values, which is what the
//! attention's online softmax spends its time on.

use std::arch::x86_64::{
    __m512, __mmask16, _CMP_EQ_OQ, _CMP_UNORD_Q, _mm512_add_ps, _mm512_cmp_ps_mask,
    _mm512_fmadd_ps, _mm512_fnmadd_ps, _mm512_mask_loadu_ps, _mm512_mask_storeu_ps,
    _mm512_maskz_loadu_ps, _mm512_maskz_mov_ps, _mm512_max_ps, _mm512_min_ps, _mm512_mul_ps,
    _mm512_reduce_add_ps, _mm512_reduce_max_ps, _mm512_scalef_ps, _mm512_set1_ps,
    _mm512_setzero_ps, _mm512_sub_ps,
};

/// Whether the running processor has AVX-512F.
pub(crate) fn is_available() -> bool {
    is_x86_feature_detected!("avx512f")
}

/// `e^x` in every lane, equal to `nnc_ops::math::exp` lane by lane (NaN stays NaN).
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn exp(x: __m512) -> __m512 {
    use nnc_ops::math::exp_constants::{
        LN2_HIGH, LN2_LOW, LOG2_E, MAX, MIN, POLYNOMIAL as COEFFICIENTS, ROUNDING_SHIFT,
    };
    // `x.clamp(MIN, MAX)`: `max_ps` and `min_ps` return their second operand when either is
    // NaN, so a NaN `x` passes through both.
    let x = _mm512_min_ps(_mm512_set1_ps(MAX), _mm512_max_ps(_mm512_set1_ps(MIN), x));
    let shift = _mm512_set1_ps(ROUNDING_SHIFT);
    let n = _mm512_sub_ps(_mm512_fmadd_ps(x, _mm512_set1_ps(LOG2_E), shift), shift);
    let r = _mm512_fnmadd_ps(
        n,
        _mm512_set1_ps(LN2_LOW),
        _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HIGH), x),
    );
    let mut polynomial = _mm512_set1_ps(COEFFICIENTS[5]);
    for &coefficient in COEFFICIENTS[..5].iter().rev() {
        polynomial = _mm512_fmadd_ps(polynomial, r, _mm512_set1_ps(coefficient));
    }
    let mantissa = _mm512_add_ps(
        _mm512_fmadd_ps(polynomial, _mm512_mul_ps(r, r), r),
        _mm512_set1_ps(1.0),
    );
    _mm512_scalef_ps(mantissa, n)
}

/// The largest of `values`, as `softmax::maximum` finds it: NaN if any is NaN, minus infinity
/// for none. Sixteen lanes at a time, with a masked last piece.
///
/// # Safety
///
/// The processor must support AVX-512F (`is_available`).
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn maximum(values: &[f32]) -> f32 {
    let minus_infinity = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut maximum = minus_infinity;
    let mut nan: __mmask16 = 0;
    for chunk in values.chunks(16) {
        let lanes: __mmask16 = ((1u32 << chunk.len()) - 1) as __mmask16;
        // SAFETY: The masked load reads the chunk's `chunk.len() <= 16` floats only; the other
        // lanes are minus infinity.
        let x = unsafe { _mm512_mask_loadu_ps(minus_infinity, lanes, chunk.as_ptr()) };
        // `max_ps` returns its second operand when either is NaN: NaN in `x` is counted here.
        nan |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
        maximum = _mm512_max_ps(x, maximum);
    }
    if nan != 0 {
        f32::NAN
    } else {
        _mm512_reduce_max_ps(maximum)
    }
}

/// `values[i] = exp(values[i] - maximum)`, and 0 where `values[i]` is minus infinity (a masked
/// score), sixteen at a time with a masked last piece; returns the sum of the new values (in
/// sixteen lanes, added up at the end): the softmax's exponentials and their sum in one pass.
///
/// # Safety
///
/// The processor must support AVX-512F (`is_available`).
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn exponentiate_masked_sum(values: &mut [f32], maximum: f32) -> f32 {
    let maximum = _mm512_set1_ps(maximum);
    let minus_infinity = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut sum = _mm512_setzero_ps();
    for chunk in values.chunks_mut(16) {
        let lanes: __mmask16 = ((1u32 << chunk.len()) - 1) as __mmask16;
        // SAFETY: The masked load and store touch the chunk's `chunk.len() <= 16` floats only;
        // the other lanes load as zero and add zero.
        unsafe {
            let x = _mm512_maskz_loadu_ps(lanes, chunk.as_ptr());
            let masked = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(x, minus_infinity);
            let value = _mm512_maskz_mov_ps(!masked & lanes, exp(_mm512_sub_ps(x, maximum)));
            _mm512_mask_storeu_ps(chunk.as_mut_ptr(), lanes, value);
            sum = _mm512_add_ps(sum, value);
        }
    }
    _mm512_reduce_add_ps(sum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::exp_checks::{
        EDGES, assert_exp_bits, check_masked_exponentials, check_maximum,
    };
    use proptest::prelude::*;
    use std::arch::x86_64::{_mm512_loadu_ps, _mm512_storeu_ps};

    fn assert_same_bits(inputs: &[f32; 16]) {
        let mut outputs = [0.0; 16];
        // SAFETY: Checked before the call in each test; the load and store cover the two
        // arrays of sixteen floats.
        unsafe { _mm512_storeu_ps(outputs.as_mut_ptr(), exp(_mm512_loadu_ps(inputs.as_ptr()))) };
        assert_exp_bits(inputs, &outputs);
    }

    #[test]
    fn edges_equal_the_scalar_function() {
        if is_available() {
            assert_same_bits(&EDGES);
        }
    }

    proptest! {
        #[test]
        fn every_lane_equals_the_scalar_function(
            inputs in prop::array::uniform16(prop_oneof![-110.0f32..90.0, -1.0f32..1.0]),
        ) {
            if is_available() {
                assert_same_bits(&inputs);
            }
        }
    }

    #[test]
    fn maximum_matches_softmax_maximum() {
        if is_available() {
            // SAFETY: The processor has AVX-512F (checked above).
            check_maximum(16, |values| unsafe { maximum(values) });
        }
    }

    #[test]
    fn masked_scores_become_zero_and_tails_stay_untouched() {
        if is_available() {
            // SAFETY: The processor has AVX-512F (checked above).
            check_masked_exponentials(16, |values, maximum| unsafe {
                exponentiate_masked_sum(values, maximum)
            });
        }
    }
}
