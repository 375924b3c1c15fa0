//! The portable micro-kernel: plain Rust with the same contract as the AVX2 one.
//!
//! It keeps the whole `MR x NR` tile in a local array, which the compiler vectorises with
//! whatever the baseline target offers (SSE2 on x86-64, NEON on AArch64), and applies the
//! epilogue element by element as it stores the tile.

use super::tile::TileOutput;
use super::{MR, NR};

/// Computes one strip of tiles, `C[0..rows, 0..cols] = epilogue(A_panels * B_panel (+ C))`,
/// where the panels are in the packed layouts (`a_panel[p * MR + r]`, `b_panel[p * NR + c]`
/// for `p < depth`; the strip's `rows.div_ceil(MR)` panels of A one after the other) and the
/// epilogue is `output.epilogue` (see `TileEpilogue` and `TileOutput`).
///
/// # Safety
///
/// `a_panel` must hold at least `rows.div_ceil(MR) * depth * MR` and `b_panel` at least
/// `depth * NR` elements (the strip's panels; the kernels of other processors may fetch what
/// follows them in either slice ahead, the panels the next tiles and strips read, and fetch
/// nothing past the slices), `output.cols <= NR`, the epilogue's slices must be as long as
/// `TileEpilogue` says, and `output.c` must be valid for reads and writes of `output.rows` rows
/// of `output.cols` elements spaced `output.c_row_stride` apart, with no other thread touching
/// them.
pub(super) unsafe fn tile_kernel_with_epilogue(
    depth: usize,
    a_panel: &[f32],
    b_panel: &[f32],
    output: &TileOutput<'_>,
) {
    output.debug_check();
    for first_row in (0..output.rows).step_by(MR) {
        let a_panel = &a_panel[first_row * depth..][..depth * MR];
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
        // SAFETY: The tile is rows `first_row..` of the strip the caller vouched for.
        unsafe { store_tile(&accumulators, &output.tile(first_row)) };
    }
}

/// Computes one strip of tiles, `C[0..rows, 0..cols] = epilogue(A * B_panel (+ C))`, where A
/// is row-major with rows `a_row_stride` apart (`a[r * a_row_stride + p]`) and `b_panel` is
/// packed as for `tile_kernel_with_epilogue`.
///
/// # Safety
///
/// `a` must hold at least `(rows - 1) * a_row_stride + depth` elements and `b_panel` at least
/// `depth * NR`; the rest as for `tile_kernel_with_epilogue`.
pub(super) unsafe fn tile_kernel_row_major_a_with_epilogue(
    depth: usize,
    a: &[f32],
    a_row_stride: usize,
    b_panel: &[f32],
    output: &TileOutput<'_>,
) {
    output.debug_check();
    for first_row in (0..output.rows).step_by(MR) {
        let tile = output.tile(first_row);
        let mut accumulators = [[0.0f32; NR]; MR];
        for (row, accumulator_row) in accumulators.iter_mut().enumerate().take(tile.rows) {
            let a_row = &a[(first_row + row) * a_row_stride..][..depth];
            for (&a_value, b_step) in a_row.iter().zip(b_panel.chunks_exact(NR)) {
                for (accumulator, &b_value) in accumulator_row.iter_mut().zip(b_step) {
                    *accumulator += a_value * b_value;
                }
            }
        }
        // SAFETY: The tile is rows `first_row..` of the strip the caller vouched for.
        unsafe { store_tile(&accumulators, &tile) };
    }
}

/// Applies the epilogue to the accumulators and writes them into C, in `TileEpilogue`'s order
/// of additions.
///
/// # Safety
///
/// `output` must describe a valid tile, as `tile_kernel_with_epilogue` requires.
unsafe fn store_tile(accumulators: &[[f32; NR]; MR], output: &TileOutput<'_>) {
    let epilogue = &output.epilogue;
    for (row, accumulator_row) in accumulators.iter().enumerate().take(output.rows) {
        let row_offset = row * output.c_row_stride;
        for (column, &product) in accumulator_row.iter().enumerate().take(output.cols) {
            // SAFETY: `row < rows` and `column < cols`, inside the tile the caller vouched for.
            let element = unsafe { output.c.add(row_offset + column) };
            let mut value = product;
            if output.accumulate {
                // SAFETY: As above.
                value += unsafe { *element };
            }
            if let Some(bias) = epilogue.column_bias {
                value += bias[column];
            }
            if let Some(bias) = epilogue.row_bias {
                value += bias[row];
            }
            if let Some(residual) = epilogue.residual {
                value += residual[row_offset + column];
            }
            // SAFETY: As above.
            unsafe { *element = epilogue.clamp.apply(value) };
        }
    }
}
