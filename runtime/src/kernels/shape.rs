//! Data movement: permute (and transpose), concatenation, slicing along an axis and `select`.
//!
//! Everything works on dense row-major tensors. The `f32` kernels take [`TensorRef`]s; the
//! `*_any_type` forms take a slice and its shape and move elements of any `Copy` type (generated
//! code moves `i64` token ids with them). Both run the same code. Permute first merges axes that stay adjacent
//! and in order, then copies whole rows when the last axis stays last, and otherwise moves
//! data in small square tiles so that both the reads and the writes stay in cache.
//!
//! None of these kernels allocates: permute keeps its shapes, strides and odometers in
//! fixed-size arrays (so it handles at most `MAX_RANK`, 8, axes) and concat checks its inputs
//! in place.

use crate::error::{
    KernelError, KernelResult, check_length, checked_element_count, invalid_parameter,
    shape_mismatch,
};
use crate::tensor::{Dims, MAX_RANK, TensorRef, check_rank, split_at_axis};
use crate::threading;

/// The shape after permuting: `output_shape[i] = shape[permutation[i]]`. Fails unless
/// `permutation` holds each axis exactly once.
pub fn permuted_shape(shape: &[usize], permutation: &[usize]) -> KernelResult<Vec<usize>> {
    if permutation.len() != shape.len() || !is_permutation(permutation) {
        return Err(not_a_permutation(shape, permutation));
    }
    Ok(permutation.iter().map(|&axis| shape[axis]).collect())
}

/// `output = input.permute(permutation)` (PyTorch's `permute`, numpy's `transpose`), written
/// densely in the permuted shape.
pub fn permute(
    input: TensorRef<'_>,
    permutation: &[usize],
    output: &mut [f32],
) -> KernelResult<()> {
    permute_any_type(input.data(), input.shape(), permutation, output)
}

/// [`permute`] for a row-major `input` of `shape` with elements of any type.
///
/// Layout changes such as NCHW <-> NHWC (`[0, 2, 3, 1]`, `[0, 3, 1, 2]`) merge into a batch of
/// 2-D transposes, which run in cache-sized tiles; permutations that keep the last axis copy
/// whole rows.
pub fn permute_any_type<T: Copy + Send + Sync + 'static>(
    input: &[T],
    shape: &[usize],
    permutation: &[usize],
    output: &mut [T],
) -> KernelResult<()> {
    if permutation.len() != shape.len() || !is_permutation(permutation) {
        return Err(not_a_permutation(shape, permutation));
    }
    let count = checked_element_count("permute", shape)?;
    check_length("permute", "input", count, input.len())?;
    check_length("permute", "output", count, output.len())?;
    if output.is_empty() {
        return Ok(());
    }
    if let Some((rows, cols)) = batched_transpose(shape, permutation) {
        // The most common layout changes; this loop beats the general tiled path on them.
        for (input, output) in input
            .chunks_exact(rows * cols)
            .zip(output.chunks_exact_mut(rows * cols))
        {
            transpose_matrix(input, rows, cols, output);
        }
        return Ok(());
    }
    let input_strides = Dims::from_slice("permute", shape)?.row_major_strides();
    let mut output_shape = Dims::empty();
    let mut strides = Dims::empty();
    for &axis in permutation {
        output_shape.push(shape[axis]);
        strides.push(input_strides[axis]);
    }
    let (shape, strides) = merge_axes(&output_shape, &strides);
    let data = input;
    let rank = shape.len();
    if strides[rank - 1] == 1 {
        copy_rows(data, &shape, &strides, output);
    } else {
        // The axis that is contiguous in the input is now some other axis of the output.
        let contiguous_axis = strides.iter().position(|&stride| stride == 1).unwrap_or(0);
        transpose_tiles(data, &shape, &strides, contiguous_axis, output);
    }
    Ok(())
}

/// `output = input.transpose(first_axis, second_axis)`: swaps two axes.
pub fn transpose(
    input: TensorRef<'_>,
    first_axis: usize,
    second_axis: usize,
    output: &mut [f32],
) -> KernelResult<()> {
    let rank = input.rank();
    for axis in [first_axis, second_axis] {
        if axis >= rank {
            return Err(KernelError::AxisOutOfRange {
                operation: "transpose",
                axis,
                rank,
            });
        }
    }
    check_rank("transpose", rank)?;
    let mut permutation = [0; MAX_RANK];
    for (axis, entry) in permutation.iter_mut().enumerate() {
        *entry = axis;
    }
    permutation.swap(first_axis, second_axis);
    permute(input, &permutation[..rank], output)
}

/// The shape of the concatenation of tensors of `shapes` along `axis`.
pub fn concat_output_shape(shapes: &[&[usize]], axis: usize) -> KernelResult<Vec<usize>> {
    let Some(first) = shapes.first() else {
        return Err(invalid_parameter("concat", "there are no inputs"));
    };
    if axis >= first.len() {
        return Err(KernelError::AxisOutOfRange {
            operation: "concat",
            axis,
            rank: first.len(),
        });
    }
    let mut output_shape = first.to_vec();
    output_shape[axis] = 0;
    for shape in shapes {
        let agrees = shape.len() == first.len()
            && shape
                .iter()
                .zip(first.iter())
                .enumerate()
                .all(|(index, (length, first_length))| index == axis || length == first_length);
        if !agrees {
            return Err(shape_mismatch(
                "concat",
                format!("{shape:?} does not match {first:?} outside axis {axis}"),
            ));
        }
        output_shape[axis] += shape[axis];
    }
    Ok(output_shape)
}

/// `output = torch.cat(inputs, axis)`.
pub fn concat(inputs: &[TensorRef<'_>], axis: usize, output: &mut [f32]) -> KernelResult<()> {
    concat_parts(
        inputs.iter().map(|input| (input.data(), input.shape())),
        axis,
        output,
    )
}

/// [`concat`] for row-major inputs, each a slice and its shape, with elements of any type.
pub fn concat_any_type<T: Copy>(
    inputs: &[(&[T], &[usize])],
    axis: usize,
    output: &mut [T],
) -> KernelResult<()> {
    for &(data, shape) in inputs {
        check_length(
            "concat",
            "input",
            checked_element_count("concat", shape)?,
            data.len(),
        )?;
    }
    concat_parts(inputs.iter().copied(), axis, output)
}

/// `output = input.narrow(axis, start, end - start)`: indices `start..end` along `axis`
/// (step 1), with `start <= end <= shape[axis]`.
pub fn slice_axis(
    input: TensorRef<'_>,
    axis: usize,
    start: usize,
    end: usize,
    output: &mut [f32],
) -> KernelResult<()> {
    slice_axis_any_type(input.data(), input.shape(), axis, start, end, output)
}

/// [`slice_axis`] for a row-major `input` of `shape` with elements of any type.
pub fn slice_axis_any_type<T: Copy>(
    input: &[T],
    shape: &[usize],
    axis: usize,
    start: usize,
    end: usize,
    output: &mut [T],
) -> KernelResult<()> {
    let (outer, length, inner) = split_at_axis("slice", shape, axis)?;
    check_length(
        "slice",
        "input",
        checked_element_count("slice", shape)?,
        input.len(),
    )?;
    if start > end || end > length {
        return Err(invalid_parameter(
            "slice",
            format!("{start}..{end} is not a range inside an axis of length {length}"),
        ));
    }
    let block = (end - start) * inner;
    check_length("slice", "output", outer * block, output.len())?;
    if block == 0 {
        return Ok(());
    }
    for (outer_index, output_block) in output.chunks_exact_mut(block).enumerate() {
        let source = (outer_index * length + start) * inner;
        output_block.copy_from_slice(&input[source..source + block]);
    }
    Ok(())
}

/// `output = input.select(axis, index)`: the slice at `index` along `axis`, which disappears.
pub fn select(
    input: TensorRef<'_>,
    axis: usize,
    index: usize,
    output: &mut [f32],
) -> KernelResult<()> {
    let (_, length, _) = split_at_axis("select", input.shape(), axis)?;
    if index >= length {
        return Err(KernelError::IndexOutOfRange {
            operation: "select",
            index,
            length,
        });
    }
    slice_axis(input, axis, index, index + 1, output)
}

/// The body of [`concat`] and [`concat_any_type`], over `(data, shape)` pairs whose data holds
/// what the shape implies.
fn concat_parts<'a, T: Copy + 'a>(
    inputs: impl Iterator<Item = (&'a [T], &'a [usize])> + Clone,
    axis: usize,
    output: &mut [T],
) -> KernelResult<()> {
    let Some((_, first_shape)) = inputs.clone().next() else {
        return Err(invalid_parameter("concat", "there are no inputs"));
    };
    let (outer, _, inner) = split_at_axis("concat", first_shape, axis)?;
    let mut axis_length = 0usize;
    for (_, shape) in inputs.clone() {
        let agrees = shape.len() == first_shape.len()
            && shape
                .iter()
                .zip(first_shape)
                .enumerate()
                .all(|(index, (length, first_length))| index == axis || length == first_length);
        if !agrees {
            return Err(shape_mismatch(
                "concat",
                format!("{shape:?} does not match {first_shape:?} outside axis {axis}"),
            ));
        }
        axis_length = axis_length
            .checked_add(shape[axis])
            .ok_or(KernelError::SizeOverflow {
                operation: "concat",
            })?;
    }
    let length = [outer, axis_length, inner]
        .iter()
        .try_fold(1usize, |total, &length| total.checked_mul(length))
        .ok_or(KernelError::SizeOverflow {
            operation: "concat",
        })?;
    check_length("concat", "output", length, output.len())?;
    let mut position = 0;
    for outer_index in 0..outer {
        for (data, shape) in inputs.clone() {
            let block = shape[axis] * inner;
            output[position..position + block]
                .copy_from_slice(&data[outer_index * block..][..block]);
            position += block;
        }
    }
    Ok(())
}

/// Side of the square tiles of the tiled transpose.
const TILE: usize = 16;

/// Whether `permutation` keeps leading axes and swaps two blocks of the others, as the layout
/// changes NCHW <-> NHWC do (`[0, 2, 3, 1]`, `[0, 3, 1, 2]`): then it is a batch of 2-D
/// transposes, returned as the `(rows, cols)` of each input matrix.
fn batched_transpose(shape: &[usize], permutation: &[usize]) -> Option<(usize, usize)> {
    let kept = permutation
        .iter()
        .enumerate()
        .take_while(|&(axis, &source)| axis == source)
        .count();
    let rest = &permutation[kept..];
    // The rest is a rotation: `split..rank` followed by `kept..split`.
    let split = *rest.first()?;
    let rotated = (split..shape.len()).chain(kept..split);
    if split == kept || !rest.iter().copied().eq(rotated) {
        return None;
    }
    let product = |axes: std::ops::Range<usize>| shape[axes].iter().product::<usize>();
    Some((product(kept..split), product(split..shape.len())))
}

/// Elements of a transpose below which it runs on one thread: a smaller one moves too little
/// to pay for starting the others.
const PARALLEL_TRANSPOSE_MIN_ELEMENTS: usize = 1 << 16;

/// Elements a parallel task of a transpose moves, about: enough that starting it costs little
/// (an RGB image's 3 x 50,176 in a few tasks, not hundreds).
const PARALLEL_TRANSPOSE_TASK_ELEMENTS: usize = 1 << 15;

/// Columns of the input (rows of the output) a task transposes at a time, in tiles.
const TRANSPOSE_STRIP_COLUMNS: usize = TILE * 8;

/// `output[c][r] = input[r][c]` for a row-major `rows x cols` input; a large one is cut by
/// columns of the input (rows of the output, contiguous there) into tasks on the thread pool.
/// MobileNetV2's move of its first activation to channels-last (32 x 112·112) is one of these.
fn transpose_matrix<T: Copy + Send + Sync + 'static>(
    input: &[T],
    rows: usize,
    cols: usize,
    output: &mut [T],
) {
    if rows * cols < PARALLEL_TRANSPOSE_MIN_ELEMENTS || rows == 0 {
        transpose_columns_tiled(input, rows, cols, 0..cols, output);
        return;
    }
    // Whole blocks of 8 columns per task, so that only the last task has a partial block.
    let cols_per_task =
        threading::balanced_rows_per_task(cols, rows, PARALLEL_TRANSPOSE_TASK_ELEMENTS)
            .next_multiple_of(8);
    // Each task in strips of columns, so that the output a strip writes stays in cache (a few
    // rows stream through it anyway).
    let strip = if rows < 8 {
        cols_per_task
    } else {
        TRANSPOSE_STRIP_COLUMNS
    };
    threading::run_chunks_mut(output, cols_per_task * rows, |chunk_index, output_rows| {
        let first_col = chunk_index * cols_per_task;
        for (index, strip_output) in output_rows.chunks_mut(strip * rows).enumerate() {
            let start = first_col + index * strip;
            let columns = start..start + strip_output.len() / rows;
            transpose_columns_tiled(input, rows, cols, columns, strip_output);
        }
    });
}

/// `output[c - columns.start][r] = input[r][c]` for the `columns` of a row-major `rows x cols`
/// input, in square tiles so that both sides stream through the cache.
fn transpose_columns_tiled<T: Copy + 'static>(
    input: &[T],
    rows: usize,
    cols: usize,
    columns: std::ops::Range<usize>,
    output: &mut [T],
) {
    #[cfg(target_arch = "x86_64")]
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()
        && crate::kernels::vectorize::has_avx2_fma()
    {
        // SAFETY: `T` is `f32` (the type ids are equal), so both slices are `f32` slices of
        // the same lengths.
        let (input, output) = unsafe {
            (
                std::slice::from_raw_parts(input.as_ptr().cast::<f32>(), input.len()),
                std::slice::from_raw_parts_mut(output.as_mut_ptr().cast::<f32>(), output.len()),
            )
        };
        transpose_columns_f32(input, rows, cols, columns, output);
        return;
    }
    transpose_columns_tiled_portable(input, rows, cols, columns, output);
}

/// The plain form of [`transpose_columns_tiled`], for any element type.
fn transpose_columns_tiled_portable<T: Copy>(
    input: &[T],
    rows: usize,
    cols: usize,
    columns: std::ops::Range<usize>,
    output: &mut [T],
) {
    for row_start in (0..rows).step_by(TILE) {
        let row_end = (row_start + TILE).min(rows);
        for col_start in columns.clone().step_by(TILE) {
            let col_end = (col_start + TILE).min(columns.end);
            for col in col_start..col_end {
                let output_row = &mut output[(col - columns.start) * rows..][..rows];
                for row in row_start..row_end {
                    output_row[row] = input[row * cols + col];
                }
            }
        }
    }
}

/// [`transpose_columns_tiled`] for `f32` on a processor with AVX2: blocks of 8 x 8 transposed
/// in registers (eight row loads, eight column stores), the rows and columns past the last
/// whole block by the portable loop. The scalar loop moves one element per load and store.
#[cfg(target_arch = "x86_64")]
fn transpose_columns_f32(
    input: &[f32],
    rows: usize,
    cols: usize,
    columns: std::ops::Range<usize>,
    output: &mut [f32],
) {
    let block_rows = rows / 8 * 8;
    let block_columns = columns.start..columns.start + columns.len() / 8 * 8;
    assert!(
        columns.end <= cols && input.len() >= rows * cols && output.len() >= columns.len() * rows,
        "transpose_columns_f32: the columns or the slices do not fit the matrix"
    );
    if (2..8).contains(&rows) {
        // A few rows (an RGB image's planes to pixels): blocks of 8 columns, the missing rows
        // zero, each column stored 8 wide over the start of the next (stored later), while the
        // last column's 8 fit in the output; the rest by the plain loop.
        let mut column = columns.start;
        while column + 8 <= columns.end && (column - columns.start + 7) * rows + 8 <= output.len() {
            // SAFETY: The processor has AVX2 (the caller checked); rows `0..rows` of columns
            // `column..column + 8` are inside the input, and the 8 columns' stores of 8 values
            // from `(column - columns.start) * rows` are inside the output, checked just above.
            unsafe {
                transpose_block_few_rows(
                    input.as_ptr().add(column),
                    cols,
                    rows,
                    output.as_mut_ptr().add((column - columns.start) * rows),
                );
            }
            column += 8;
        }
        let tail_output = &mut output[(column - columns.start) * rows..];
        transpose_columns_tiled_portable(input, rows, cols, column..columns.end, tail_output);
        return;
    }
    for row in (0..block_rows).step_by(8) {
        for column in block_columns.clone().step_by(8) {
            // SAFETY: The processor has AVX2 (the caller checked); rows `row..row + 8` and
            // columns `column..column + 8` are inside the `rows x cols` input and, shifted by
            // `columns.start`, inside the `columns.len() x rows` output, checked above.
            unsafe {
                transpose_block_8x8(
                    input.as_ptr().add(row * cols + column),
                    cols,
                    output
                        .as_mut_ptr()
                        .add((column - columns.start) * rows + row),
                    rows,
                );
            }
        }
    }
    // The columns past the last whole block (every row), then the rows past the last whole
    // block (the blocked columns).
    let tail_columns = block_columns.end..columns.end;
    let tail_output = &mut output[(tail_columns.start - columns.start) * rows..];
    transpose_columns_tiled_portable(input, rows, cols, tail_columns, tail_output);
    for column in block_columns.clone() {
        let output_row = &mut output[(column - columns.start) * rows..][..rows];
        for row in block_rows..rows {
            output_row[row] = input[row * cols + column];
        }
    }
}

/// `destination[j * rows + i] = source[i * source_stride + j]` for `i < rows < 8` and `j < 8`:
/// the 8 x 8 transpose with rows `rows..8` zero, each column stored 8 wide (over the start of
/// the next column, which is stored after it).
///
/// # Safety
/// The processor has AVX2; `rows` rows of eight at `source` are readable, and `7 * rows + 8`
/// values at `destination` writable.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transpose_block_few_rows(
    source: *const f32,
    source_stride: usize,
    rows: usize,
    destination: *mut f32,
) {
    use std::arch::x86_64::*;
    let mut loaded = [_mm256_setzero_ps(); 8];
    for (index, row) in loaded.iter_mut().enumerate().take(rows) {
        // SAFETY: Row `index < rows` at `source` holds eight values (the caller vouches).
        *row = unsafe { _mm256_loadu_ps(source.add(index * source_stride)) };
    }
    let columns = transpose_registers_8x8(loaded);
    for (index, column) in columns.into_iter().enumerate() {
        // SAFETY: Eight values from `index * rows <= 7 * rows` are writable (the caller
        // vouches).
        unsafe { _mm256_storeu_ps(destination.add(index * rows), column) };
    }
}

/// The columns of eight rows of eight in registers (also the GEMM's packing of A).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn transpose_registers_8x8(
    rows: [std::arch::x86_64::__m256; 8],
) -> [std::arch::x86_64::__m256; 8] {
    use std::arch::x86_64::*;
    let [r0, r1, r2, r3, r4, r5, r6, r7] = rows;
    // Pairs: [a0 b0 a1 b1 | a4 b4 a5 b5] and [a2 b2 a3 b3 | a6 b6 a7 b7], ...
    let (t0, t1) = (_mm256_unpacklo_ps(r0, r1), _mm256_unpackhi_ps(r0, r1));
    let (t2, t3) = (_mm256_unpacklo_ps(r2, r3), _mm256_unpackhi_ps(r2, r3));
    let (t4, t5) = (_mm256_unpacklo_ps(r4, r5), _mm256_unpackhi_ps(r4, r5));
    let (t6, t7) = (_mm256_unpacklo_ps(r6, r7), _mm256_unpackhi_ps(r6, r7));
    // Quads: [a0 b0 c0 d0 | a4 b4 c4 d4] (columns 0 and 4 of rows a-d), ...
    let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    // Whole columns: the low halves give columns 0-3, the high halves columns 4-7.
    [
        _mm256_permute2f128_ps::<0x20>(s0, s4),
        _mm256_permute2f128_ps::<0x20>(s1, s5),
        _mm256_permute2f128_ps::<0x20>(s2, s6),
        _mm256_permute2f128_ps::<0x20>(s3, s7),
        _mm256_permute2f128_ps::<0x31>(s0, s4),
        _mm256_permute2f128_ps::<0x31>(s1, s5),
        _mm256_permute2f128_ps::<0x31>(s2, s6),
        _mm256_permute2f128_ps::<0x31>(s3, s7),
    ]
}

/// `destination[j * destination_stride + i] = source[i * source_stride + j]` for `i, j < 8`.
///
/// # Safety
/// The processor has AVX2; the eight rows of eight at `source` and at `destination` are
/// readable and writable.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transpose_block_8x8(
    source: *const f32,
    source_stride: usize,
    destination: *mut f32,
    destination_stride: usize,
) {
    use std::arch::x86_64::*;
    let mut loaded = [_mm256_setzero_ps(); 8];
    for (index, row) in loaded.iter_mut().enumerate() {
        // SAFETY: The caller guarantees the eight rows at `source`.
        *row = unsafe { _mm256_loadu_ps(source.add(index * source_stride)) };
    }
    for (index, column) in transpose_registers_8x8(loaded).into_iter().enumerate() {
        // SAFETY: The caller guarantees the eight rows at `destination`.
        unsafe { _mm256_storeu_ps(destination.add(index * destination_stride), column) };
    }
}

/// Whether `permutation` holds each of `0..permutation.len()` exactly once (at most
/// `MAX_RANK` axes).
fn is_permutation(permutation: &[usize]) -> bool {
    if permutation.len() > MAX_RANK {
        return false;
    }
    let mut seen = [false; MAX_RANK];
    permutation
        .iter()
        .all(|&axis| axis < permutation.len() && !std::mem::replace(&mut seen[axis], true))
}

fn not_a_permutation(shape: &[usize], permutation: &[usize]) -> KernelError {
    if shape.len() > MAX_RANK {
        return invalid_parameter(
            "permute",
            format!(
                "tensors of rank {} exceed the supported rank {MAX_RANK}",
                shape.len()
            ),
        );
    }
    invalid_parameter(
        "permute",
        format!(
            "{permutation:?} is not a permutation of {} axes",
            shape.len()
        ),
    )
}

/// Drops length-1 axes and merges neighbours that are also neighbours, in order, in the
/// input (`stride[i] == stride[i + 1] * shape[i + 1]`). Never returns an empty shape.
fn merge_axes(shape: &[usize], strides: &[usize]) -> (Dims, Dims) {
    let mut merged_shape = Dims::empty();
    let mut merged_strides = Dims::empty();
    for (&length, &stride) in shape.iter().zip(strides) {
        if length == 1 {
            continue;
        }
        if let (Some(last_length), Some(last_stride)) =
            (merged_shape.last_mut(), merged_strides.last_mut())
            && *last_stride == stride * length
        {
            *last_length *= length;
            *last_stride = stride;
            continue;
        }
        merged_shape.push(length);
        merged_strides.push(stride);
    }
    if merged_shape.is_empty() {
        merged_shape.push(1);
        merged_strides.push(1);
    }
    (merged_shape, merged_strides)
}

/// Calls `visit(input_offset, output_offset)` for every combination of indices along `axes`
/// (in row-major order, the last axis in `axes` fastest), where each offset is the sum of
/// index times stride under `input_strides` and `output_strides` respectively.
fn for_each_offset(
    shape: &[usize],
    input_strides: &[usize],
    output_strides: &[usize],
    axes: &[usize],
    mut visit: impl FnMut(usize, usize),
) {
    let mut indices = [0usize; MAX_RANK];
    let (mut input_offset, mut output_offset) = (0usize, 0usize);
    loop {
        visit(input_offset, output_offset);
        // Advance the odometer: bump the last axis, carrying into earlier ones.
        let mut position = axes.len();
        loop {
            if position == 0 {
                return;
            }
            position -= 1;
            let axis = axes[position];
            indices[position] += 1;
            input_offset += input_strides[axis];
            output_offset += output_strides[axis];
            if indices[position] < shape[axis] {
                break;
            }
            input_offset -= indices[position] * input_strides[axis];
            output_offset -= indices[position] * output_strides[axis];
            indices[position] = 0;
        }
    }
}

/// The permute when the last output axis is contiguous in the input: row-by-row copies.
fn copy_rows<T: Copy>(data: &[T], shape: &Dims, strides: &[usize], output: &mut [T]) {
    let rank = shape.len();
    let row_length = shape[rank - 1];
    let output_strides = shape.row_major_strides();
    let mut outer_axes = Dims::empty();
    for axis in 0..rank - 1 {
        outer_axes.push(axis);
    }
    for_each_offset(
        shape,
        strides,
        &output_strides,
        &outer_axes,
        |input_offset, output_offset| {
            output[output_offset..output_offset + row_length]
                .copy_from_slice(&data[input_offset..input_offset + row_length]);
        },
    );
}

/// The permute when the input-contiguous axis `contiguous_axis` is not last in the output:
/// for every index of the other axes, a 2-D transpose between that axis and the last one,
/// done in `TILE x TILE` tiles.
fn transpose_tiles<T: Copy>(
    data: &[T],
    shape: &Dims,
    strides: &[usize],
    contiguous_axis: usize,
    output: &mut [T],
) {
    let rank = shape.len();
    let last = rank - 1;
    let output_strides = shape.row_major_strides();
    let mut other_axes = Dims::empty();
    for axis in (0..last).filter(|&axis| axis != contiguous_axis) {
        other_axes.push(axis);
    }
    let (rows, cols) = (shape[contiguous_axis], shape[last]);
    let (input_row_stride, input_col_stride) = (strides[contiguous_axis], strides[last]);
    let output_row_stride = output_strides[contiguous_axis];
    for_each_offset(
        shape,
        strides,
        &output_strides,
        &other_axes,
        |input_base, output_base| {
            for row_tile in (0..rows).step_by(TILE) {
                for col_tile in (0..cols).step_by(TILE) {
                    for row in row_tile..(row_tile + TILE).min(rows) {
                        let output_row = output_base + row * output_row_stride;
                        let input_row = input_base + row * input_row_stride;
                        for col in col_tile..(col_tile + TILE).min(cols) {
                            output[output_row + col] = data[input_row + col * input_col_stride];
                        }
                    }
                }
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference;
    use proptest::prelude::*;

    fn ramp(length: usize) -> Vec<f32> {
        (0..length).map(|index| index as f32).collect()
    }

    fn shape_and_permutation() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
        prop::collection::vec(1..7usize, 0..5).prop_flat_map(|shape| {
            let rank = shape.len();
            (
                Just(shape),
                Just((0..rank).collect::<Vec<_>>()).prop_shuffle(),
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn permute_matches_reference((shape, permutation) in shape_and_permutation()) {
            let input = ramp(shape.iter().product());
            let (expected, expected_shape) = reference::permute(&input, &shape, &permutation);
            prop_assert_eq!(permuted_shape(&shape, &permutation).unwrap(), expected_shape);
            let mut output = vec![0.0; input.len()];
            permute(TensorRef::new(&input, &shape).unwrap(), &permutation, &mut output).unwrap();
            prop_assert_eq!(output, expected);
        }

        #[test]
        fn transpose_of_any_column_range_matches_portable(
            rows in 1..30usize,
            cols in 1..30usize,
            start in 0..30usize,
            length in 0..30usize,
        ) {
            // The f32 path's 8 x 8 blocks, with row and column tails and a range that starts
            // off a block boundary, against the plain loop.
            let start = start.min(cols);
            let columns = start..(start + length).min(cols);
            let input = ramp(rows * cols);
            let mut expected = vec![0.0; columns.len() * rows];
            transpose_columns_tiled_portable(&input, rows, cols, columns.clone(), &mut expected);
            let mut output = vec![0.0; columns.len() * rows];
            transpose_columns_tiled(&input, rows, cols, columns, &mut output);
            prop_assert_eq!(output, expected);
        }

        #[test]
        fn large_layout_changes_on_the_pool_match_reference(
            channels in 1..40usize,
            height in 30..90usize,
            width in 30..90usize,
            threads in 1..4usize,
        ) {
            // Sizes around the parallel threshold (1 << 16 elements), not multiples of the tile.
            let shape = [1, channels, height, width];
            let input = ramp(shape.iter().product());
            let _guard = crate::test_support::lock_thread_count();
            crate::set_num_threads(threads);
            for permutation in [[0, 2, 3, 1], [0, 3, 1, 2]] {
                let (expected, _) = reference::permute(&input, &shape, &permutation);
                let mut output = vec![0.0; input.len()];
                permute(TensorRef::new(&input, &shape).unwrap(), &permutation, &mut output)
                    .unwrap();
                prop_assert_eq!(output, expected);
            }
            crate::set_num_threads(0);
        }

        #[test]
        fn concat_matches_reference(
            (shape, axis, lengths) in prop::collection::vec(1..5usize, 1..4).prop_flat_map(|shape| {
                let rank = shape.len();
                (Just(shape), 0..rank, prop::collection::vec(0..4usize, 1..4))
            })
        ) {
            let shapes: Vec<Vec<usize>> = lengths
                .iter()
                .map(|&length| {
                    let mut shape = shape.clone();
                    shape[axis] = length;
                    shape
                })
                .collect();
            let datas: Vec<Vec<f32>> = shapes
                .iter()
                .enumerate()
                .map(|(index, shape)| {
                    let length: usize = shape.iter().product();
                    (0..length).map(|value| (value + 100 * index) as f32).collect()
                })
                .collect();
            let parts: Vec<(&[f32], &[usize])> = datas
                .iter()
                .zip(&shapes)
                .map(|(data, shape)| (data.as_slice(), shape.as_slice()))
                .collect();
            let (expected, expected_shape) = reference::concat(&parts, axis);
            let inputs: Vec<TensorRef<'_>> = parts
                .iter()
                .map(|&(data, shape)| TensorRef::new(data, shape).unwrap())
                .collect();
            let mut output = vec![0.0; expected.len()];
            concat(&inputs, axis, &mut output).unwrap();
            let shape_refs: Vec<&[usize]> = shapes.iter().map(Vec::as_slice).collect();
            prop_assert_eq!(concat_output_shape(&shape_refs, axis).unwrap(), expected_shape);
            prop_assert_eq!(output, expected);
        }

        #[test]
        fn slice_and_select_match_reference(
            (shape, axis, start, end) in prop::collection::vec(1..6usize, 1..5).prop_flat_map(|shape| {
                let rank = shape.len();
                (Just(shape), 0..rank)
            }).prop_flat_map(|(shape, axis)| {
                let length = shape[axis];
                (Just(shape), Just(axis), 0..=length).prop_flat_map(move |(shape, axis, start)| {
                    (Just(shape), Just(axis), Just(start), start..=length)
                })
            })
        ) {
            let input = ramp(shape.iter().product());
            let tensor = TensorRef::new(&input, &shape).unwrap();
            let (expected, _) = reference::slice_axis(&input, &shape, axis, start, end);
            let mut output = vec![0.0; expected.len()];
            slice_axis(tensor, axis, start, end, &mut output).unwrap();
            prop_assert_eq!(&output, &expected);
            if start < shape[axis] {
                let (expected, _) = reference::slice_axis(&input, &shape, axis, start, start + 1);
                let mut output = vec![0.0; expected.len()];
                select(tensor, axis, start, &mut output).unwrap();
                prop_assert_eq!(output, expected);
            }
        }
    }

    #[test]
    fn any_type_data_movement_matches_ndarray() {
        let data: Vec<i64> = (0..24).collect();
        let array = ndarray::ArrayD::from_shape_vec(vec![2, 3, 4], data.clone()).unwrap();
        let mut output = vec![0i64; 24];
        permute_any_type(&data, &[2, 3, 4], &[2, 0, 1], &mut output).unwrap();
        let expected: Vec<i64> = array
            .view()
            .permuted_axes(vec![2, 0, 1])
            .iter()
            .copied()
            .collect();
        assert_eq!(output, expected);

        let mut output = vec![0i64; 16];
        slice_axis_any_type(&data, &[2, 3, 4], 1, 1, 3, &mut output).unwrap();
        let expected: Vec<i64> = array
            .slice_axis(ndarray::Axis(1), (1..3).into())
            .iter()
            .copied()
            .collect();
        assert_eq!(output, expected);

        let other: Vec<i64> = (100..108).collect();
        let mut output = vec![0i64; 32];
        concat_any_type(&[(&data, &[2, 3, 4]), (&other, &[2, 1, 4])], 1, &mut output).unwrap();
        let other_array = ndarray::ArrayD::from_shape_vec(vec![2, 1, 4], other).unwrap();
        let expected =
            ndarray::concatenate(ndarray::Axis(1), &[array.view(), other_array.view()]).unwrap();
        assert_eq!(output, expected.iter().copied().collect::<Vec<_>>());
    }

    #[test]
    fn any_type_layout_changes_match_ndarray() {
        // Batched 2-D transposes (the fast path), on sizes that are not multiples of its tile,
        // and a permutation that is not one.
        let shapes = [[2, 17, 5, 3], [1, 3, 33, 19], [3, 1, 1, 40]];
        let permutations: [&[usize]; 4] =
            [&[0, 2, 3, 1], &[0, 3, 1, 2], &[1, 2, 3, 0], &[0, 2, 1, 3]];
        for shape in shapes {
            let count: usize = shape.iter().product();
            let data: Vec<i64> = (0..count as i64).collect();
            let array = ndarray::ArrayD::from_shape_vec(shape.to_vec(), data.clone()).unwrap();
            for permutation in permutations {
                let mut output = vec![0i64; count];
                permute_any_type(&data, &shape, permutation, &mut output).unwrap();
                let expected: Vec<i64> = array
                    .view()
                    .permuted_axes(permutation.to_vec())
                    .iter()
                    .copied()
                    .collect();
                assert_eq!(output, expected, "{shape:?} by {permutation:?}");
            }
        }
    }

    #[test]
    fn large_transpose_uses_tiles_correctly() {
        let shape = [3, 37, 53];
        let input = ramp(shape.iter().product());
        for permutation in [[0, 2, 1], [2, 1, 0], [1, 2, 0], [2, 0, 1]] {
            let (expected, _) = reference::permute(&input, &shape, &permutation);
            let mut output = vec![0.0; input.len()];
            permute(
                TensorRef::new(&input, &shape).unwrap(),
                &permutation,
                &mut output,
            )
            .unwrap();
            assert_eq!(output, expected, "{permutation:?}");
        }
        let mut output = vec![0.0; input.len()];
        transpose(TensorRef::new(&input, &shape).unwrap(), 2, 0, &mut output).unwrap();
        let (expected, _) = reference::permute(&input, &shape, &[2, 1, 0]);
        assert_eq!(output, expected);
    }

    #[test]
    fn parallel_transposes_match_the_reference() {
        // Above the size that runs on the thread pool: a few rows (an RGB image, with a tail of
        // columns), rows in blocks of 8 plus a tail, over several tasks and strips each.
        for shape in [[1, 3, 50_177], [1, 20, 4_099], [2, 9, 7_283]] {
            let input = ramp(shape.iter().product());
            let (expected, _) = reference::permute(&input, &shape, &[0, 2, 1]);
            let mut output = vec![0.0; input.len()];
            permute(
                TensorRef::new(&input, &shape).unwrap(),
                &[0, 2, 1],
                &mut output,
            )
            .unwrap();
            assert_eq!(output, expected, "{shape:?}");
            let integers: Vec<i64> = (0..input.len() as i64).collect();
            let mut integer_output = vec![0i64; input.len()];
            permute_any_type(&integers, &shape, &[0, 2, 1], &mut integer_output).unwrap();
            assert!(
                integer_output
                    .iter()
                    .zip(&expected)
                    .all(|(&got, &want)| got as f32 == want),
                "{shape:?}"
            );
        }
    }

    #[test]
    fn invalid_arguments_are_errors() {
        let input = ramp(6);
        let tensor = TensorRef::new(&input, &[2, 3]).unwrap();
        let mut output = vec![0.0; 6];
        assert!(permute(tensor, &[0, 0], &mut output).is_err());
        assert!(permute(tensor, &[1], &mut output).is_err());
        assert!(transpose(tensor, 0, 2, &mut output).is_err());
        assert!(slice_axis(tensor, 1, 2, 4, &mut output).is_err());
        assert!(slice_axis(tensor, 1, 2, 1, &mut output).is_err());
        assert!(matches!(
            select(tensor, 0, 2, &mut output),
            Err(KernelError::IndexOutOfRange { .. })
        ));
        let other = TensorRef::new(&input, &[3, 2]).unwrap();
        assert!(concat(&[tensor, other], 0, &mut [0.0; 12]).is_err());
        assert!(concat(&[], 0, &mut output).is_err());
        assert!(concat(&[tensor], 2, &mut output).is_err());
        // Nine axes exceed the fixed-size arrays that permute keeps its shapes in.
        let deep = TensorRef::new(&input, &[1, 1, 1, 1, 1, 1, 1, 2, 3]).unwrap();
        let reversed: Vec<usize> = (0..9).rev().collect();
        assert!(permute(deep, &reversed, &mut output).is_err());
        assert!(transpose(deep, 7, 8, &mut output).is_err());
    }
}
