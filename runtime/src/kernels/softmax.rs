//! Softmax and log-softmax along any axis, numerically stable (the maximum is subtracted before
//! `exp`; log-softmax is `x - max - ln(sum(exp(x - max)))`, which never takes the log of a
//! rounded-off probability).
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
    normalize_in_place(values, shape, axis, Normalization::Softmax)
}

/// `output = log_softmax(input)` along `axis` of `shape` (row-major).
pub fn log_softmax(
    input: &[f32],
    output: &mut [f32],
    shape: &[usize],
    axis: usize,
) -> KernelResult<()> {
    let length = checked_element_count("log_softmax", shape)?;
    check_length("log_softmax", "input", length, input.len())?;
    check_length("log_softmax", "output", length, output.len())?;
    output.copy_from_slice(input);
    log_softmax_in_place(output, shape, axis)
}

/// Log-softmax along `axis` of `shape`, in place.
pub fn log_softmax_in_place(values: &mut [f32], shape: &[usize], axis: usize) -> KernelResult<()> {
    normalize_in_place(values, shape, axis, Normalization::LogSoftmax)
}

/// Which of the two functions [`normalize_in_place`] computes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Normalization {
    Softmax,
    LogSoftmax,
}

/// The driver of both functions: blocks of `[axis, inner]` split across threads, each row
/// (`inner == 1`) or strided block done by the function's own loop.
fn normalize_in_place(
    values: &mut [f32],
    shape: &[usize],
    axis: usize,
    normalization: Normalization,
) -> KernelResult<()> {
    let operation = match normalization {
        Normalization::Softmax => "softmax",
        Normalization::LogSoftmax => "log_softmax",
    };
    let length = checked_element_count(operation, shape)?;
    check_length(operation, "values", length, values.len())?;
    let (_, axis_length, inner) = split_at_axis(operation, shape, axis)?;
    if length == 0 {
        return Ok(());
    }
    let block = axis_length * inner;
    let blocks_per_task = (PARALLEL_CHUNK / block.max(1)).max(1);
    threading::run_chunks_mut(values, blocks_per_task * block, |_, chunk| {
        match (normalization, inner) {
            (Normalization::Softmax, 1) => {
                chunk.chunks_exact_mut(axis_length).for_each(softmax_row)
            }
            (Normalization::LogSoftmax, 1) => chunk
                .chunks_exact_mut(axis_length)
                .for_each(log_softmax_row),
            (Normalization::Softmax, _) => {
                for block in chunk.chunks_exact_mut(block) {
                    softmax_strided_block(block, inner);
                }
            }
            (Normalization::LogSoftmax, _) => {
                for block in chunk.chunks_exact_mut(block) {
                    log_softmax_strided_block(block, inner);
                }
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

/// Log-softmax of one contiguous row: `x - (max + ln(sum(exp(x - max))))`.
fn log_softmax_row(row: &mut [f32]) {
    let maximum = maximum(row);
    let offset = maximum + sum_of_exponentials(row, maximum).ln();
    vectorize::map_in_place(row, |x| x - offset);
}

/// `sum(exp(x - maximum))` over a slice, in eight independent lanes, without writing it.
fn sum_of_exponentials(values: &[f32], maximum: f32) -> f32 {
    let mut lanes = [0.0f32; 8];
    let mut chunks = values.chunks_exact(8);
    for chunk in &mut chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane += math::exp(x - maximum);
        }
    }
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|&x| math::exp(x - maximum))
        .sum();
    lanes.iter().sum::<f32>() + tail
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

/// Log-softmax of a `[axis_length, inner]` block along its first axis, a strip of columns at a
/// time, as [`softmax_strided_block`]: the strip's maxima, then its sums of `exp(x - max)`
/// (through a strip of differences on the stack), then `x - (max + ln(sum))`.
fn log_softmax_strided_block(block: &mut [f32], inner: usize) {
    let mut maxima = [0.0f32; STRIP];
    let mut sums = [0.0f32; STRIP];
    let mut differences = [0.0f32; STRIP];
    for strip_start in (0..inner).step_by(STRIP) {
        let width = STRIP.min(inner - strip_start);
        let (maxima, sums) = (&mut maxima[..width], &mut sums[..width]);
        let differences = &mut differences[..width];
        maxima.fill(f32::NEG_INFINITY);
        for row in block.chunks_exact(inner) {
            vectorize::zip_map_in_place(
                maxima,
                &row[strip_start..][..width],
                nnc_ops::reduce::maximum,
            );
        }
        sums.fill(0.0);
        for row in block.chunks_exact(inner) {
            vectorize::zip_map(&row[strip_start..][..width], maxima, differences, |x, m| {
                x - m
            });
            vectorize::zip_map_in_place(sums, differences, |sum, difference| {
                sum + math::exp(difference)
            });
        }
        // The offsets replace the sums: `max + ln(sum)`, once per column.
        for (sum, &maximum) in sums.iter_mut().zip(maxima.iter()) {
            *sum = maximum + sum.ln();
        }
        for row in block.chunks_exact_mut(inner) {
            vectorize::zip_map_in_place(&mut row[strip_start..][..width], sums, |x, offset| {
                x - offset
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
        fn log_softmax_matches_reference((shape, axis, input) in shapes_and_axes()) {
            let expected = reference::log_softmax(&input, &shape, axis);
            let mut output = vec![0.0; input.len()];
            log_softmax(&input, &mut output, &shape, axis).unwrap();
            assert_close(&output, &expected, 1e-5);
        }

        #[test]
        fn long_log_softmax_rows_and_strips_match_reference(
            input in prop::collection::vec(-5.0f32..5.0, 1..300),
            split in 1..4usize,
        ) {
            // One long row, then the same values as `[split, rest]` reduced over the first axis:
            // strips of up to 64 columns with every tail width.
            let shape = [1, input.len()];
            let expected = reference::log_softmax(&input, &shape, 1);
            let mut output = input.clone();
            log_softmax_in_place(&mut output, &shape, 1).unwrap();
            assert_close(&output, &expected, 1e-5);
            let rows = split.min(input.len());
            let input = &input[..input.len() / rows * rows];
            let shape = [rows, input.len() / rows];
            let expected = reference::log_softmax(input, &shape, 0);
            let mut output = input.to_vec();
            log_softmax_in_place(&mut output, &shape, 0).unwrap();
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
    fn log_softmax_of_huge_logits_stays_finite() {
        // exp(-2e4) underflows to 0, but the log-probability is the exact difference.
        let mut values = [1.0e4, -1.0e4, 0.0, 0.0];
        log_softmax_in_place(&mut values, &[2, 2], 1).unwrap();
        assert_close(
            &values,
            &[
                0.0,
                -2.0e4,
                -std::f32::consts::LN_2,
                -std::f32::consts::LN_2,
            ],
            1e-6,
        );
        assert!(log_softmax_in_place(&mut values, &[2, 2], 2).is_err());
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
