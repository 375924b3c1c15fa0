//! Reductions over a set of axes: sums, means, maxima, minima, products, L1 and L2 norms, sums of
//! squares and log-sum-exp (ONNX's `ReduceSum`, `ReduceMean`, `ReduceMax`, `ReduceMin`,
//! `ReduceProd`, `ReduceL1`, `ReduceL2`, `ReduceSumSquare`, `ReduceLogSumExp`).
//!
//! The shape is first simplified: axes of size 1 are dropped and neighbouring axes that are both
//! reduced or both kept are merged, so that `[n, c, h, w]` reduced over `[2, 3]` is `[n * c,
//! h * w]` with its last run reduced. The input is then read one contiguous row (its last run) at
//! a time, in memory order. When the last run is reduced, each row reduces to one value (in eight
//! lanes, which vectorise) that is combined into its output element; when it is kept, each row is
//! combined elementwise into a row of the output (a vectorised zip over contiguous memory). A
//! counter over the other runs gives each row's output offset. When the first run is kept, its
//! indices are independent blocks of input and output, split across threads. Means divide by the
//! count and L2 takes the square root at the end. Log-sum-exp merges values with
//! `ln(e^a + e^b)` computed from the larger, and a row with its maximum subtracted, so that it
//! stays finite where `Σ e^x` would overflow. No call allocates.

use crate::error::{KernelError, KernelResult, check_length, checked_element_count};
use crate::kernels::softmax::{maximum, sum};
use crate::kernels::vectorize;
use crate::tensor::{Dims, MAX_RANK, check_rank};
use crate::threading;

pub use nnc_ops::ReduceOp;

/// `output = op(input)` over `axes` of `shape` (row-major). `axes` must be distinct and smaller
/// than the rank; the output holds one element per index of the other axes, in row-major order
/// (whether the reduced axes are kept as size 1 or dropped changes no element).
pub fn reduce(
    input: &[f32],
    output: &mut [f32],
    shape: &[usize],
    axes: &[usize],
    op: ReduceOp,
) -> KernelResult<()> {
    let length = checked_element_count("reduce", shape)?;
    check_length("reduce", "input", length, input.len())?;
    let reduced = reduced_axes(shape.len(), axes)?;
    let output_length = (0..shape.len())
        .filter(|&axis| !reduced[axis])
        .map(|axis| shape[axis])
        .product();
    check_length("reduce", "output", output_length, output.len())?;
    output.fill(op.initial());
    if length > 0 {
        let runs = Runs::of(shape, &reduced);
        accumulate_in_parallel(input, output, &runs, op);
    }
    let count: usize = axes.iter().map(|&axis| shape[axis]).product();
    if op.has_finish() {
        vectorize::map_in_place(output, |x| op.finish(x, count));
    }
    Ok(())
}

/// Which axes are reduced; an axis out of range or listed twice is an error.
fn reduced_axes(rank: usize, axes: &[usize]) -> KernelResult<[bool; MAX_RANK]> {
    check_rank("reduce", rank)?;
    let mut reduced = [false; MAX_RANK];
    for &axis in axes {
        if axis >= rank {
            return Err(KernelError::AxisOutOfRange {
                operation: "reduce",
                axis,
                rank,
            });
        }
        if reduced[axis] {
            return Err(KernelError::InvalidParameter {
                operation: "reduce",
                detail: format!("axis {axis} is listed twice in {axes:?}"),
            });
        }
        reduced[axis] = true;
    }
    Ok(reduced)
}

/// The simplified shape: runs of neighbouring axes of the same kind, each with its size, whether
/// it is reduced, and its stride in the output (0 for a reduced run).
struct Runs {
    sizes: Dims,
    reduced: [bool; MAX_RANK],
    output_strides: [usize; MAX_RANK],
}

impl Runs {
    fn of(shape: &[usize], reduced_axes: &[bool; MAX_RANK]) -> Runs {
        let mut sizes = Dims::empty();
        let mut reduced = [false; MAX_RANK];
        for (axis, &size) in shape.iter().enumerate() {
            if size == 1 {
                continue;
            }
            match sizes.len() {
                runs if runs > 0 && reduced[runs - 1] == reduced_axes[axis] => {
                    sizes[runs - 1] *= size;
                }
                runs => {
                    sizes.push(size);
                    reduced[runs] = reduced_axes[axis];
                }
            }
        }
        if sizes.is_empty() {
            // A single element: one kept run of one.
            sizes.push(1);
        }
        let mut output_strides = [0; MAX_RANK];
        let mut stride = 1;
        for run in (0..sizes.len()).rev() {
            if !reduced[run] {
                output_strides[run] = stride;
                stride *= sizes[run];
            }
        }
        Runs {
            sizes,
            reduced,
            output_strides,
        }
    }

    /// The runs after the first: the shape of one index of the first run.
    fn without_first(&self) -> Runs {
        let count = self.sizes.len() - 1;
        let mut sizes = Dims::empty();
        let mut reduced = [false; MAX_RANK];
        let mut output_strides = [0; MAX_RANK];
        for run in 0..count {
            sizes.push(self.sizes[run + 1]);
            reduced[run] = self.reduced[run + 1];
            output_strides[run] = self.output_strides[run + 1];
        }
        Runs {
            sizes,
            reduced,
            output_strides,
        }
    }
}

/// Input elements per parallel task.
const PARALLEL_CHUNK: usize = 1 << 15;

/// [`accumulate`], split across threads by the indices of the first run when it is kept (and
/// not the only run): each index owns one block of the input and one of the output.
fn accumulate_in_parallel(input: &[f32], output: &mut [f32], runs: &Runs, op: ReduceOp) {
    if runs.reduced[0] || runs.sizes.len() == 1 {
        accumulate(input, output, runs, op);
        return;
    }
    let blocks = runs.sizes[0];
    let (input_block, output_block) = (input.len() / blocks, output.len() / blocks);
    let inner = runs.without_first();
    let blocks_per_task = (PARALLEL_CHUNK / input_block).max(1);
    threading::run_chunks_mut(output, blocks_per_task * output_block, |task, chunk| {
        let first_block = task * blocks_per_task;
        for (block, output) in chunk.chunks_exact_mut(output_block).enumerate() {
            let input = &input[(first_block + block) * input_block..][..input_block];
            accumulate(input, output, &inner, op);
        }
    });
}

/// Combines every contiguous row of `input` (the last run) into `output`, in memory order.
fn accumulate(input: &[f32], output: &mut [f32], runs: &Runs, op: ReduceOp) {
    let last = runs.sizes.len() - 1;
    let row_length = runs.sizes[last];
    let mut index = [0usize; MAX_RANK];
    for row in input.chunks_exact(row_length) {
        let offset: usize = (0..last)
            .map(|run| index[run] * runs.output_strides[run])
            .sum();
        if runs.reduced[last] {
            output[offset] = op.merge(output[offset], reduce_row(row, op));
        } else {
            combine_rows(&mut output[offset..][..row_length], row, op);
        }
        // The next row: a counter over the other runs, the last of them fastest.
        for run in (0..last).rev() {
            index[run] += 1;
            if index[run] < runs.sizes[run] {
                break;
            }
            index[run] = 0;
        }
    }
}

/// The value of one contiguous row, to merge into its group's: the sums and the maximum in the
/// vectorised loops of softmax, log-sum-exp as `max + ln Σ e^(x - max)`.
fn reduce_row(row: &[f32], op: ReduceOp) -> f32 {
    match op {
        ReduceOp::Sum | ReduceOp::Mean => sum(row),
        ReduceOp::Max => maximum(row),
        ReduceOp::LogSumExp => {
            let largest = maximum(row);
            if !largest.is_finite() {
                // NaN, every element -inf, or an element +inf: that is the result.
                return largest;
            }
            let total: f32 = row.iter().map(|&x| (x - largest).exp()).sum();
            largest + total.ln()
        }
        ReduceOp::Min | ReduceOp::Prod | ReduceOp::L1 | ReduceOp::L2 | ReduceOp::SumSquare => row
            .iter()
            .fold(op.initial(), |accumulated, &x| op.combine(accumulated, x)),
    }
}

/// `accumulated[i] = op.combine(accumulated[i], row[i])`, one vectorised loop per operation.
fn combine_rows(accumulated: &mut [f32], row: &[f32], op: ReduceOp) {
    use nnc_ops::reduce::{log_add_exp, maximum, minimum};
    match op {
        ReduceOp::Sum | ReduceOp::Mean => {
            vectorize::zip_map_in_place(accumulated, row, |total, x| total + x)
        }
        ReduceOp::Max => vectorize::zip_map_in_place(accumulated, row, maximum),
        ReduceOp::Min => vectorize::zip_map_in_place(accumulated, row, minimum),
        ReduceOp::Prod => vectorize::zip_map_in_place(accumulated, row, |product, x| product * x),
        ReduceOp::L1 => vectorize::zip_map_in_place(accumulated, row, |total, x| total + x.abs()),
        ReduceOp::L2 | ReduceOp::SumSquare => {
            vectorize::zip_map_in_place(accumulated, row, |total, x| total + x * x)
        }
        ReduceOp::LogSumExp => vectorize::zip_map_in_place(accumulated, row, log_add_exp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference;
    use crate::test_support::assert_close;
    use proptest::prelude::*;

    /// A shape of rank 1 to 5 (sizes 1 to 6, or long rows so that the eight-lane loops have
    /// tails), a nonempty set of its axes, values, and an operation. The values are quarters,
    /// so that every sum is exact in `f32` whatever the order of the additions.
    fn cases() -> impl Strategy<Value = (Vec<usize>, Vec<usize>, Vec<f32>, ReduceOp)> {
        let shapes = prop_oneof![
            prop::collection::vec(1..7usize, 1..6),
            (1..4usize, 1..70usize, 1..4usize).prop_map(|(a, b, c)| vec![a, b, c]),
        ];
        shapes.prop_flat_map(|shape| {
            let length: usize = shape.iter().product();
            let rank = shape.len();
            (
                Just(shape),
                prop::sample::subsequence((0..rank).collect::<Vec<_>>(), 1..=rank),
                prop::collection::vec((-40i32..40).prop_map(|v| v as f32 / 4.0), length),
                prop::sample::select(ReduceOp::ALL.to_vec()),
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn reduce_matches_reference((shape, axes, input, op) in cases()) {
            let input = match op {
                // Powers of two near 1 (±0.25 becomes 2 and 0.5, the rest ±1), so that products
                // of thousands of elements are exact and finite.
                ReduceOp::Prod => input
                    .iter()
                    .map(|&x| match x {
                        0.25 => 2.0,
                        -0.25 => 0.5,
                        x if x < 0.0 => -1.0,
                        _ => 1.0,
                    })
                    .collect(),
                _ => input,
            };
            let expected = reference::reduce(&input, &shape, &axes, op);
            let mut output = vec![f32::NAN; expected.len()];
            reduce(&input, &mut output, &shape, &axes, op).unwrap();
            // Log-sum-exp rounds at every merge (an exponential and a logarithm each).
            let tolerance = if op == ReduceOp::LogSumExp { 1e-4 } else { 1e-5 };
            assert_close(&output, &expected, tolerance);
        }
    }

    #[test]
    fn last_axis_and_middle_axis() {
        let input: Vec<f32> = (0..24).map(|i| i as f32).collect();
        let mut last = [0.0; 6];
        reduce(&input, &mut last, &[2, 3, 4], &[2], ReduceOp::Sum).unwrap();
        assert_eq!(last, [6.0, 22.0, 38.0, 54.0, 70.0, 86.0]);
        let mut middle = [0.0; 8];
        reduce(&input, &mut middle, &[2, 3, 4], &[1], ReduceOp::Max).unwrap();
        assert_eq!(middle, [8.0, 9.0, 10.0, 11.0, 20.0, 21.0, 22.0, 23.0]);
        let mut outer = [0.0; 3];
        reduce(&input, &mut outer, &[2, 3, 4], &[0, 2], ReduceOp::Mean).unwrap();
        assert_eq!(outer, [7.5, 11.5, 15.5]);
        let mut all = [0.0; 1];
        reduce(&input, &mut all, &[2, 3, 4], &[0, 1, 2], ReduceOp::Sum).unwrap();
        assert_eq!(all, [276.0]);
    }

    /// Large enough to split across threads: a kept first axis of 64 blocks, reduced over the
    /// last axis, a middle axis, and both.
    #[test]
    fn large_reductions_split_across_threads_match_reference() {
        let shape = [64, 30, 50];
        let input: Vec<f32> = (0..64 * 30 * 50)
            .map(|i| ((i * 37) % 101) as f32 / 8.0 - 6.0)
            .collect();
        for (axes, op) in [
            (&[2][..], ReduceOp::Sum),
            (&[1][..], ReduceOp::Max),
            (&[1, 2][..], ReduceOp::Mean),
        ] {
            let expected = reference::reduce(&input, &shape, axes, op);
            let mut output = vec![f32::NAN; expected.len()];
            reduce(&input, &mut output, &shape, axes, op).unwrap();
            assert_close(&output, &expected, 1e-5);
        }
    }

    #[test]
    fn log_sum_exp_stays_finite_where_the_exponentials_overflow() {
        let input = [1000.0, 1000.0, -1000.0, f32::NEG_INFINITY];
        let mut output = [0.0; 2];
        reduce(&input, &mut output, &[2, 2], &[1], ReduceOp::LogSumExp).unwrap();
        assert_eq!(output, [1000.0 + 2f32.ln(), -1000.0]);
        reduce(&input, &mut output, &[2, 2], &[0], ReduceOp::LogSumExp).unwrap();
        assert_eq!(output, [1000.0, 1000.0]);
    }

    #[test]
    fn nan_propagates_through_the_maximum() {
        let mut output = [0.0; 2];
        let input = [1.0, f32::NAN, 3.0, 4.0];
        reduce(&input, &mut output, &[2, 2], &[1], ReduceOp::Max).unwrap();
        assert!(output[0].is_nan());
        assert_eq!(output[1], 4.0);
        reduce(&input, &mut output, &[2, 2], &[0], ReduceOp::Max).unwrap();
        assert_eq!(output[0], 3.0);
        assert!(output[1].is_nan());
    }

    #[test]
    fn bad_axes_and_lengths_are_errors() {
        let input = [0.0; 6];
        let mut output = [0.0; 2];
        assert!(reduce(&input, &mut output, &[2, 3], &[2], ReduceOp::Sum).is_err());
        assert!(reduce(&input, &mut output, &[2, 3], &[1, 1], ReduceOp::Sum).is_err());
        assert!(reduce(&input, &mut output, &[2, 3], &[0], ReduceOp::Sum).is_err());
        assert!(reduce(&input[..5], &mut output, &[2, 3], &[1], ReduceOp::Sum).is_err());
    }
}
