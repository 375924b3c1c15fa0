//! The portable micro-kernel: plain Rust with the same contract as the AVX2 one.
//!
//! It keeps the whole `MR x NR` tile in a local array, which the compiler vectorises with
//! whatever the baseline target offers (SSE2 on x86-64, NEON on AArch64).

use super::{MR, NR};

/// Computes `C[0..rows, 0..cols] (+)= A_panel * B_panel` for one tile, where the panels are in
/// the packed layouts (`a_panel[p * MR + r]`, `b_panel[p * NR + c]` for `p < depth`), adding to
/// C when `accumulate` is set and overwriting it otherwise.
///
/// # Safety
///
/// `a_panel` must hold at least `depth * MR` and `b_panel` at least `depth * NR` elements,
/// `rows <= MR`, `cols <= NR`, and `c` must be valid for reads and writes of `rows` rows of
/// `cols` elements spaced `c_row_stride` apart, with no other thread touching them.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn tile_kernel(
    depth: usize,
    a_panel: &[f32],
    b_panel: &[f32],
    c: *mut f32,
    c_row_stride: usize,
    rows: usize,
    cols: usize,
    accumulate: bool,
) {
    let mut accumulators = [[0.0f32; NR]; MR];
    for (a_step, b_step) in a_panel
        .chunks_exact(MR)
        .zip(b_panel.chunks_exact(NR))
        .take(depth)
    {
        for (accumulator_row, &a_value) in accumulators.iter_mut().zip(a_step) {
            for (accumulator, &b_value) in accumulator_row.iter_mut().zip(b_step) {
                *accumulator += a_value * b_value;
            }
        }
    }
    for (row, accumulator_row) in accumulators.iter().enumerate().take(rows) {
        for (column, &value) in accumulator_row.iter().enumerate().take(cols) {
            // SAFETY: `row < rows` and `column < cols`, inside the tile the caller vouched for.
            unsafe {
                let element = c.add(row * c_row_stride + column);
                *element = if accumulate { *element + value } else { value };
            }
        }
    }
}

/// Computes `C[0..rows, 0..cols] (+)= A * B_panel` for one tile, where A is row-major with
/// rows `a_row_stride` apart (`a[r * a_row_stride + p]`); the same contract as
/// `x86_64::tile_kernel_row_major_a`.
///
/// # Safety
///
/// `a` must hold at least `(rows - 1) * a_row_stride + depth` elements and `b_panel` at least
/// `depth * NR`, `rows <= MR`, `cols <= NR`, and `c` must be valid for reads and writes of
/// `rows` rows of `cols` elements spaced `c_row_stride` apart, with no other thread touching
/// them.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn tile_kernel_row_major_a(
    depth: usize,
    a: &[f32],
    a_row_stride: usize,
    b_panel: &[f32],
    c: *mut f32,
    c_row_stride: usize,
    rows: usize,
    cols: usize,
    accumulate: bool,
) {
    let mut accumulators = [[0.0f32; NR]; MR];
    for (row, accumulator_row) in accumulators.iter_mut().enumerate().take(rows) {
        let a_row = &a[row * a_row_stride..][..depth];
        for (&a_value, b_step) in a_row.iter().zip(b_panel.chunks_exact(NR)) {
            for (accumulator, &b_value) in accumulator_row.iter_mut().zip(b_step) {
                *accumulator += a_value * b_value;
            }
        }
    }
    for (row, accumulator_row) in accumulators.iter().enumerate().take(rows) {
        for (column, &value) in accumulator_row.iter().enumerate().take(cols) {
            // SAFETY: `row < rows` and `column < cols`, inside the tile the caller vouched for.
            unsafe {
                let element = c.add(row * c_row_stride + column);
                *element = if accumulate { *element + value } else { value };
            }
        }
    }
}
