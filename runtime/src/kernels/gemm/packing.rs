//! Packing of the GEMM's operands into the panels its micro-kernels read: B into column panels
//! of `NR`, A into row panels of `MR`, both in blocks of `KC` steps of the shared dimension, in
//! 64-byte-aligned buffers.

use super::driver::KC;
use super::{MR, MatrixRef, NR};
use std::ops::Range;

pub(super) fn packed_rhs_length(depth: usize, cols: usize) -> usize {
    depth * cols.div_ceil(NR) * NR
}

/// Packs B (`k x n`) into `output`: block by block of `KC` rows, panel by panel of `NR`
/// columns, each panel row-major with zero padding on the right.
pub(super) fn pack_rhs(matrix: MatrixRef<'_>, output: &mut [f32]) {
    let panels = matrix.cols.div_ceil(NR);
    for block_start in (0..matrix.rows).step_by(KC) {
        let block_depth = KC.min(matrix.rows - block_start);
        let block = &mut output[block_start * panels * NR..][..block_depth * panels * NR];
        for (panel_index, panel) in block.chunks_exact_mut(block_depth * NR).enumerate() {
            let first_column = panel_index * NR;
            let width = NR.min(matrix.cols - first_column);
            pack_rhs_panel(matrix, block_start, first_column, width, panel);
        }
    }
}

pub(super) fn pack_rhs_panel(
    matrix: MatrixRef<'_>,
    first_row: usize,
    first_column: usize,
    width: usize,
    panel: &mut [f32],
) {
    let MatrixRef {
        data,
        row_stride,
        column_stride,
        ..
    } = matrix;
    if column_stride == 1 {
        for (step, panel_row) in panel.chunks_exact_mut(NR).enumerate() {
            let start = (first_row + step) * row_stride + first_column;
            panel_row[..width].copy_from_slice(&data[start..start + width]);
            panel_row[width..].fill(0.0);
        }
        return;
    }
    if width < NR {
        panel.fill(0.0);
    }
    // Walking down each source column keeps the reads sequential when B is a transposed
    // row-major matrix (`row_stride == 1`).
    for column in 0..width {
        let base = (first_column + column) * column_stride + first_row * row_stride;
        for (step, panel_row) in panel.chunks_exact_mut(NR).enumerate() {
            panel_row[column] = data[base + step * row_stride];
        }
    }
}

/// Packs rows `rows` of A, columns `first_column..first_column + depth`, into consecutive
/// panels of `MR` rows, each column-major (`panel[p * MR + r]`) with zero padding below.
pub(super) fn pack_lhs_block(
    matrix: MatrixRef<'_>,
    rows: Range<usize>,
    first_column: usize,
    depth: usize,
    output: &mut [f32],
) {
    let MatrixRef {
        data,
        row_stride,
        column_stride,
        ..
    } = matrix;
    for (panel_index, panel) in output.chunks_exact_mut(depth * MR).enumerate() {
        let first_row = rows.start + panel_index * MR;
        if first_row >= rows.end {
            break;
        }
        let height = MR.min(rows.end - first_row);
        if height < MR {
            panel.fill(0.0);
        }
        for row in 0..height {
            let base = (first_row + row) * row_stride + first_column * column_stride;
            for (step, panel_column) in panel.chunks_exact_mut(MR).enumerate() {
                panel_column[row] = data[base + step * column_stride];
            }
        }
    }
}
