//! Softmax along any axis, numerically stable (the maximum is subtracted before `exp`).
//!
//! The tensor is viewed as `[outer, axis, inner]`. With `inner == 1` (the last axis, the usual
//! case) each row is contiguous; otherwise the kernel sweeps strips of up to `STRIP` columns of
//! the `[axis, inner]` block at a time, keeping the strip's running maxima and sums in arrays on
//! the stack, so that every pass is contiguous and vectorises and no call allocates.

use crate::error::{KernelResult, check_length, checked_element_count};
use crate::kernels::vectorize;
use crate::tensor::split_at_axis;
use crate::threading;
use nnc_ops::math;

/// `output = softmax(input)` along `axis` of `shape` (row-major).
pub fn softmax(
    input: &[f32],
    output: &mut [f32],
    shape: &[usize],
    axis: usize,
) -> KernelResult<()> {
    let length = checked_element_count("softmax", shape)?;
    check_length("softmax", "input", length, input.len())?;
    check_length("softmax", "output", length, output.len())?;
    output.copy_from_slice(input);
    softmax_in_place(output, shape, axis)
}

/// Softmax along `axis` of `shape`, in place.
pub fn softmax_in_place(values: &mut [f32], shape: &[usize], axis: usize) -> KernelResult<()> {
    let length = checked_element_count("softmax", shape)?;
    check_length("softmax", "values", length, values.len())?;
    let (_, axis_length, inner) = split_at_axis("softmax", shape, axis)?;
    if length == 0 {
        return Ok(());
    }
    let block = axis_length * inner;
    let blocks_per_task = (PARALLEL_CHUNK / block.max(1)).max(1);
    threading::run_chunks_mut(values, blocks_per_task * block, |_, chunk| {
        if inner == 1 {
            chunk.chunks_exact_mut(axis_length).for_each(softmax_row);
        } else {
            for block in chunk.chunks_exact_mut(block) {
                softmax_strided_block(block, inner);
            }
        }
    });
    Ok(())
}

/// Elements per parallel task.
const PARALLEL_CHUNK: usize = 1 << 14;

/// Softmax of one contiguous row.
pub(crate) fn softmax_row(row: &mut [f32]) {
    let reciprocal = exponentiate_row(row);
    vectorize::map_in_place(row, |x| x * reciprocal);
}

/// The first half of [`softmax_row`]: `row[i] = exp(row[i] - max)`, returning the factor,
/// `1 / sum`, that turns the row into probabilities. Attention applies it to the row's
/// `head_dim` outputs instead of its `key_len` weights.
pub(crate) fn exponentiate_row(row: &mut [f32]) -> f32 {
    let maximum = maximum(row);
    vectorize::map_in_place_interleaved(row, |x| math::exp(x - maximum));
    1.0 / sum(row)
}

/// Columns of a strided block processed together: wide enough to vectorise, small enough for
/// the stack.
const STRIP: usize = 64;

/// Softmax of a `[axis_length, inner]` block along its first axis, a strip of columns at a
/// time.
fn softmax_strided_block(block: &mut [f32], inner: usize) {
    let mut maxima = [0.0f32; STRIP];
    let mut sums = [0.0f32; STRIP];
    for strip_start in (0..inner).step_by(STRIP) {
        let width = STRIP.min(inner - strip_start);
        let (maxima, sums) = (&mut maxima[..width], &mut sums[..width]);
        maxima.fill(f32::NEG_INFINITY);
        for row in block.chunks_exact(inner) {
            vectorize::zip_map_in_place(maxima, &row[strip_start..][..width], |maximum, x| {
                // Written so that NaN propagates, as `torch.max` does.
                if x > maximum || x.is_nan() {
                    x
                } else {
                    maximum
                }
            });
        }
        sums.fill(0.0);
        for row in block.chunks_exact_mut(inner) {
            let strip = &mut row[strip_start..][..width];
            vectorize::zip_map_in_place(strip, maxima, |x, maximum| math::exp(x - maximum));
            vectorize::zip_map_in_place(sums, strip, |sum, x| sum + x);
        }
        vectorize::map_in_place(sums, |sum| 1.0 / sum);
        for row in block.chunks_exact_mut(inner) {
            vectorize::zip_map_in_place(&mut row[strip_start..][..width], sums, |x, reciprocal| {
                x * reciprocal
            });
        }
    }
}

/// The maximum of a slice (NaN if it holds one), in eight independent lanes. Always inlined, so
/// that it vectorises with the features of its caller (flash attention's AVX2 row step).
#[inline(always)]
pub(crate) fn maximum(values: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut chunks = values.chunks_exact(8);
    for chunk in &mut chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane = if x > *lane || x.is_nan() { x } else { *lane };
        }
    }
    let mut maximum = f32::NEG_INFINITY;
    for &x in lanes.iter().chain(chunks.remainder()) {
        maximum = if x > maximum || x.is_nan() {
            x
        } else {
            maximum
        };
    }
    maximum
}

/// The sum of a slice, in eight independent lanes (faster and more accurate than one chain).
/// Always inlined, as `maximum` is.
#[inline(always)]
pub(crate) fn sum(values: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let mut chunks = values.chunks_exact(8);
    for chunk in &mut chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane += x;
        }
    }
    lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference;
    use crate::test_support::assert_close;
    use proptest::prelude::*;

    fn shapes_and_axes() -> impl Strategy<Value = (Vec<usize>, usize, Vec<f32>)> {
        prop::collection::vec(1..7usize, 1..5).prop_flat_map(|shape| {
            let length: usize = shape.iter().product();
            let rank = shape.len();
            (
                Just(shape),
                0..rank,
                prop::collection::vec(-30.0f32..30.0, length),
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn softmax_matches_reference((shape, axis, input) in shapes_and_axes()) {
            let expected = reference::softmax(&input, &shape, axis);
            let mut output = vec![0.0; input.len()];
            softmax(&input, &mut output, &shape, axis).unwrap();
            assert_close(&output, &expected, 1e-5);
        }

        #[test]
        fn long_rows_match_reference(input in prop::collection::vec(-5.0f32..5.0, 1..300)) {
            let shape = [1, input.len()];
            let expected = reference::softmax(&input, &shape, 1);
            let mut output = input.clone();
            softmax_in_place(&mut output, &shape, 1).unwrap();
            assert_close(&output, &expected, 1e-5);
        }
    }

    #[test]
    fn wide_inner_axes_span_several_strips() {
        // 2 x 3 x 150: the softmax over the middle axis runs in strips of 64, 64 and 22 columns.
        let shape = [2, 3, 150];
        let input: Vec<f32> = (0..900)
            .map(|i| ((i * 37) % 23) as f32 / 4.0 - 3.0)
            .collect();
        let expected = reference::softmax(&input, &shape, 1);
        let mut output = vec![0.0; input.len()];
        softmax(&input, &mut output, &shape, 1).unwrap();
        assert_close(&output, &expected, 1e-5);
    }

    #[test]
    fn huge_logits_stay_finite() {
        let mut values = [1.0e4, -1.0e4, 1.0e4 - 1.0, 3.0e38];
        softmax_in_place(&mut values, &[2, 2], 1).unwrap();
        assert_close(&values, &[1.0, 0.0, 0.0, 1.0], 1e-6);
    }

    #[test]
    fn bad_axis_and_lengths_are_errors() {
        let mut values = [0.0; 6];
        assert!(softmax_in_place(&mut values, &[2, 3], 2).is_err());
        assert!(softmax_in_place(&mut values, &[2, 2], 1).is_err());
        let mut output = [0.0; 5];
        assert!(softmax(&values, &mut output, &[2, 3], 0).is_err());
    }
}
