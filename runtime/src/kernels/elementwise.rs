//! Element-wise binary arithmetic (`+ - * /` and `pow`) with numpy broadcasting, plus fast paths for
//! same-shape operands, a scalar operand and a row vector broadcast over the rows of a matrix.
//!
//! The general broadcast keeps its shapes and strides in fixed-size arrays, so no call
//! allocates; operands of more than `MAX_RANK` (8) axes are rejected.

use crate::error::{KernelError, KernelResult, check_length, checked_element_count};
use crate::kernels::vectorize;
use crate::tensor::{Dims, TensorRef};
use crate::threading;

pub mod chain;

pub use chain::{affine, affine_in_place, elementwise_chain, elementwise_chain_in_place};
pub use nnc_ops::{BinaryOp, ElementwiseStep};

/// Expands `body` once per operation with `$function` bound to that operation's closure, so
/// that every loop is monomorphised (and vectorised) for its operation.
macro_rules! with_op_function {
    ($op:expr, $function:ident => $body:expr) => {
        match $op {
            BinaryOp::Add => {
                let $function = |left: f32, right: f32| left + right;
                $body
            }
            BinaryOp::Sub => {
                let $function = |left: f32, right: f32| left - right;
                $body
            }
            BinaryOp::Mul => {
                let $function = |left: f32, right: f32| left * right;
                $body
            }
            BinaryOp::Div => {
                let $function = |left: f32, right: f32| left / right;
                $body
            }
            BinaryOp::Pow => {
                let $function = |left: f32, right: f32| left.powf(right);
                $body
            }
        }
    };
}

/// The numpy broadcast of two shapes: right-aligned, each pair of axes equal or one of them 1.
pub fn broadcast_shapes(lhs_shape: &[usize], rhs_shape: &[usize]) -> KernelResult<Vec<usize>> {
    let rank = lhs_shape.len().max(rhs_shape.len());
    let lhs_padding = rank - lhs_shape.len();
    let rhs_padding = rank - rhs_shape.len();
    (0..rank)
        .map(|axis| {
            let lhs = axis
                .checked_sub(lhs_padding)
                .map_or(1, |axis| lhs_shape[axis]);
            let rhs = axis
                .checked_sub(rhs_padding)
                .map_or(1, |axis| rhs_shape[axis]);
            broadcast_axis(lhs, rhs).ok_or_else(|| incompatible(lhs_shape, rhs_shape))
        })
        .collect()
}

/// `output = op(lhs, rhs)` with numpy broadcasting; `output` must hold the broadcast shape.
/// Same-shape operands, scalars and trailing row vectors take fast paths.
pub fn binary(
    op: BinaryOp,
    lhs: TensorRef<'_>,
    rhs: TensorRef<'_>,
    output: &mut [f32],
) -> KernelResult<()> {
    let output_shape = broadcast_dims("binary", lhs.shape(), rhs.shape())?;
    let output_length = checked_element_count("binary", &output_shape)?;
    check_length("binary", "output", output_length, output.len())?;
    let (lhs_data, rhs_data) = (lhs.data(), rhs.data());
    if output_length == 0 {
        return Ok(());
    }
    if lhs_data.len() == output_length && rhs_data.len() == output_length {
        // Equal element counts under a valid broadcast mean equal shapes up to leading 1s.
        return binary_same_shape(op, lhs_data, rhs_data, output);
    }
    if rhs_data.len() == 1 && lhs_data.len() == output_length {
        let right = rhs_data[0];
        with_op_function!(op, function => apply_map(lhs_data, output, move |left| function(left, right)));
        return Ok(());
    }
    if lhs_data.len() == 1 && rhs_data.len() == output_length {
        let left = lhs_data[0];
        with_op_function!(op, function => apply_map(rhs_data, output, move |right| function(left, right)));
        return Ok(());
    }
    if lhs_data.len() == output_length && is_trailing_vector(rhs.shape(), &output_shape) {
        return binary_row_vector(op, lhs_data, rhs_data, output);
    }
    broadcast_general(op, lhs, rhs, &output_shape, output);
    Ok(())
}

/// `output[i] = op(lhs[i], rhs[i])`.
pub fn binary_same_shape(
    op: BinaryOp,
    lhs: &[f32],
    rhs: &[f32],
    output: &mut [f32],
) -> KernelResult<()> {
    check_length("binary", "rhs", lhs.len(), rhs.len())?;
    check_length("binary", "output", lhs.len(), output.len())?;
    threading::run_chunks_mut(output, PARALLEL_CHUNK, |chunk_index, output| {
        let start = chunk_index * PARALLEL_CHUNK;
        let lhs = &lhs[start..][..output.len()];
        let rhs = &rhs[start..][..output.len()];
        with_op_function!(op, function => vectorize::zip_map(lhs, rhs, output, function));
    });
    Ok(())
}

/// `values[i] = op(values[i], other[i])`, as for a residual connection.
pub fn binary_same_shape_in_place(
    op: BinaryOp,
    values: &mut [f32],
    other: &[f32],
) -> KernelResult<()> {
    check_length("binary", "other", values.len(), other.len())?;
    threading::run_chunks_mut(values, PARALLEL_CHUNK, |chunk_index, values| {
        let other = &other[chunk_index * PARALLEL_CHUNK..][..values.len()];
        with_op_function!(op, function => vectorize::zip_map_in_place(values, other, function));
    });
    Ok(())
}

/// `output[r, c] = op(matrix[r, c], row[c])` for a row-major matrix whose rows have
/// `row.len()` elements (a bias add, say).
pub fn binary_row_vector(
    op: BinaryOp,
    matrix: &[f32],
    row: &[f32],
    output: &mut [f32],
) -> KernelResult<()> {
    check_length("binary", "output", matrix.len(), output.len())?;
    check_row_vector(matrix.len(), row.len())?;
    let chunk = rows_per_chunk(row.len()) * row.len();
    threading::run_chunks_mut(output, chunk, |chunk_index, output| {
        let matrix = &matrix[chunk_index * chunk..][..output.len()];
        for (output_row, matrix_row) in output
            .chunks_exact_mut(row.len())
            .zip(matrix.chunks_exact(row.len()))
        {
            with_op_function!(op, function => vectorize::zip_map(matrix_row, row, output_row, function));
        }
    });
    Ok(())
}

/// `values[r, c] = op(values[r, c], row[c])` in place.
pub fn binary_row_vector_in_place(
    op: BinaryOp,
    values: &mut [f32],
    row: &[f32],
) -> KernelResult<()> {
    check_row_vector(values.len(), row.len())?;
    let chunk = rows_per_chunk(row.len()) * row.len();
    threading::run_chunks_mut(values, chunk, |_, values| {
        for values_row in values.chunks_exact_mut(row.len()) {
            with_op_function!(op, function => vectorize::zip_map_in_place(values_row, row, function));
        }
    });
    Ok(())
}

/// `values[r, c] += row[c]`: the bias-add special case of `binary_row_vector_in_place`.
pub fn add_row_vector_in_place(values: &mut [f32], row: &[f32]) -> KernelResult<()> {
    binary_row_vector_in_place(BinaryOp::Add, values, row)
}

/// Elements per parallel task for the flat paths.
const PARALLEL_CHUNK: usize = 1 << 15;

fn apply_map(input: &[f32], output: &mut [f32], function: impl Fn(f32) -> f32 + Copy + Sync) {
    threading::run_chunks_mut(output, PARALLEL_CHUNK, |chunk_index, output| {
        let input = &input[chunk_index * PARALLEL_CHUNK..][..output.len()];
        vectorize::map(input, output, function);
    });
}

fn check_row_vector(matrix_length: usize, row_length: usize) -> KernelResult<()> {
    if row_length == 0 && matrix_length == 0 {
        return Ok(());
    }
    if row_length == 0 || !matrix_length.is_multiple_of(row_length) {
        return Err(crate::error::shape_mismatch(
            "binary",
            format!("a matrix of {matrix_length} elements has no rows of {row_length}"),
        ));
    }
    Ok(())
}

fn rows_per_chunk(row_length: usize) -> usize {
    (PARALLEL_CHUNK / row_length.max(1)).max(1)
}

/// Whether `shape` (ignoring leading 1s) equals the trailing axes of `output_shape`, so the
/// operand is one row repeated.
fn is_trailing_vector(shape: &[usize], output_shape: &[usize]) -> bool {
    let first_real = shape
        .iter()
        .position(|&length| length != 1)
        .unwrap_or(shape.len());
    let trimmed = &shape[first_real..];
    !trimmed.is_empty() && output_shape.ends_with(trimmed)
}

/// The broadcast of two shapes in a fixed-size array (no allocation), for `binary` and
/// `matmul`; fails above `MAX_RANK` axes.
pub(crate) fn broadcast_dims(
    operation: &'static str,
    lhs_shape: &[usize],
    rhs_shape: &[usize],
) -> KernelResult<Dims> {
    let rank = lhs_shape.len().max(rhs_shape.len());
    let mut shape = Dims::filled(operation, rank, 1)?;
    for (axis, length) in shape.iter_mut().enumerate() {
        let lhs = (axis + lhs_shape.len())
            .checked_sub(rank)
            .map_or(1, |axis| lhs_shape[axis]);
        let rhs = (axis + rhs_shape.len())
            .checked_sub(rank)
            .map_or(1, |axis| rhs_shape[axis]);
        *length = broadcast_axis(lhs, rhs).ok_or_else(|| KernelError::BroadcastIncompatible {
            operation,
            lhs_shape: lhs_shape.to_vec(),
            rhs_shape: rhs_shape.to_vec(),
        })?;
    }
    Ok(shape)
}

/// Element strides of an operand inside the broadcast shape `output_shape` (0 on broadcast
/// axes), each multiplied by `scale`; the operand's axes align to the right.
pub(crate) fn broadcast_strides(shape: &[usize], output_shape: &[usize], scale: usize) -> Dims {
    let padding = output_shape.len() - shape.len();
    let mut strides = Dims::empty();
    for _ in output_shape {
        strides.push(0);
    }
    let mut stride = scale;
    for (axis, &length) in shape.iter().enumerate().rev() {
        if length != 1 {
            strides[padding + axis] = stride;
        }
        stride *= length;
    }
    strides
}

/// The broadcast of one pair of axis lengths, if they are compatible.
fn broadcast_axis(lhs: usize, rhs: usize) -> Option<usize> {
    match (lhs, rhs) {
        (lhs, rhs) if lhs == rhs => Some(lhs),
        (1, rhs) => Some(rhs),
        (lhs, 1) => Some(lhs),
        _ => None,
    }
}

fn incompatible(lhs_shape: &[usize], rhs_shape: &[usize]) -> KernelError {
    KernelError::BroadcastIncompatible {
        operation: "binary",
        lhs_shape: lhs_shape.to_vec(),
        rhs_shape: rhs_shape.to_vec(),
    }
}

/// The general broadcast: axes are coalesced where both operands allow, then the output is
/// walked row by row (the last coalesced axis), each operand with stride 0 or 1 along it.
fn broadcast_general(
    op: BinaryOp,
    lhs: TensorRef<'_>,
    rhs: TensorRef<'_>,
    output_shape: &[usize],
    output: &mut [f32],
) {
    let lhs_strides = broadcast_strides(lhs.shape(), output_shape, 1);
    let rhs_strides = broadcast_strides(rhs.shape(), output_shape, 1);
    let (shape, lhs_strides, rhs_strides) = coalesce(output_shape, &lhs_strides, &rhs_strides);
    let rank = shape.len();
    let inner = shape[rank - 1];
    let (lhs_inner_stride, rhs_inner_stride) = (lhs_strides[rank - 1], rhs_strides[rank - 1]);
    let outer_shape = &shape[..rank - 1];
    let chunk = rows_per_chunk(inner) * inner;
    let (lhs_data, rhs_data) = (lhs.data(), rhs.data());
    threading::run_chunks_mut(output, chunk, |chunk_index, output| {
        let first_row = chunk_index * chunk / inner;
        for (row_offset, output_row) in output.chunks_exact_mut(inner).enumerate() {
            let mut remainder = first_row + row_offset;
            let (mut lhs_offset, mut rhs_offset) = (0, 0);
            for axis in (0..outer_shape.len()).rev() {
                let index = remainder % outer_shape[axis];
                remainder /= outer_shape[axis];
                lhs_offset += index * lhs_strides[axis];
                rhs_offset += index * rhs_strides[axis];
            }
            let lhs_row = &lhs_data[lhs_offset..];
            let rhs_row = &rhs_data[rhs_offset..];
            with_op_function!(op, function => match (lhs_inner_stride, rhs_inner_stride) {
                (0, 0) => output_row.fill(function(lhs_row[0], rhs_row[0])),
                (0, _) => {
                    let left = lhs_row[0];
                    vectorize::map(&rhs_row[..inner], output_row, |right| {
                        function(left, right)
                    })
                }
                (_, 0) => {
                    let right = rhs_row[0];
                    vectorize::map(&lhs_row[..inner], output_row, |left| {
                        function(left, right)
                    })
                }
                _ => vectorize::zip_map(
                    &lhs_row[..inner],
                    &rhs_row[..inner],
                    output_row,
                    function
                ),
            });
        }
    });
}

/// Merges neighbouring axes that both operands traverse the same way (both contiguous across
/// the pair, or both broadcast along the pair), and drops length-1 axes. Never returns an
/// empty shape.
fn coalesce(shape: &[usize], lhs_strides: &[usize], rhs_strides: &[usize]) -> (Dims, Dims, Dims) {
    let mut merged_shape = Dims::empty();
    let mut merged_lhs = Dims::empty();
    let mut merged_rhs = Dims::empty();
    for axis in 0..shape.len() {
        if shape[axis] == 1 {
            continue;
        }
        if let (Some(&last_length), Some(&last_lhs), Some(&last_rhs)) =
            (merged_shape.last(), merged_lhs.last(), merged_rhs.last())
        {
            let merges = |last_stride: usize, stride: usize| {
                last_stride == stride * shape[axis] || (last_stride == 0 && stride == 0)
            };
            if merges(last_lhs, lhs_strides[axis]) && merges(last_rhs, rhs_strides[axis]) {
                let index = merged_shape.len() - 1;
                merged_shape[index] = last_length * shape[axis];
                merged_lhs[index] = lhs_strides[axis];
                merged_rhs[index] = rhs_strides[axis];
                continue;
            }
        }
        merged_shape.push(shape[axis]);
        merged_lhs.push(lhs_strides[axis]);
        merged_rhs.push(rhs_strides[axis]);
    }
    if merged_shape.is_empty() {
        merged_shape.push(1);
        merged_lhs.push(0);
        merged_rhs.push(0);
    }
    (merged_shape, merged_lhs, merged_rhs)
}

#[cfg(test)]
mod tests;
