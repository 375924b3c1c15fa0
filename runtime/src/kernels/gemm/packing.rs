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
    // Walking down each source column keeps the reads sequential when B is a transposed
    // row-major matrix (`row_stride == 1`).
    gather_lanes(
        data,
        NR,
        width,
        |column| (first_column + column) * column_stride + first_row * row_stride,
        row_stride,
        panel,
    );
}

/// `panel[step * lanes_per_step + lane] = data[base(lane) + step * step_stride]` for the first
/// `lanes` lanes of every step, the panel's other lanes zero: a strided operand gathered into a
/// panel lane by lane (a column of B, a row of A), each lane's reads in order.
fn gather_lanes(
    data: &[f32],
    lanes_per_step: usize,
    lanes: usize,
    base: impl Fn(usize) -> usize,
    step_stride: usize,
    panel: &mut [f32],
) {
    if lanes < lanes_per_step {
        panel.fill(0.0);
    }
    for lane in 0..lanes {
        let base = base(lane);
        for (step, lanes) in panel.chunks_exact_mut(lanes_per_step).enumerate() {
            lanes[lane] = data[base + step * step_stride];
        }
    }
}

/// Packs rows `rows` of A, columns `first_column..first_column + depth`, into consecutive
/// panels of `MR` rows, each column-major (`panel[p * MR + r]`) with zero padding below.
///
/// Where the rows are contiguous (column stride 1) and the processor has AVX2, a whole panel
/// goes eight steps at a time through a transpose in registers ([`x86_64::pack_lhs_panel`]);
/// element by element, the stores `MR` floats apart made the packing of ResNet-18's deepest
/// layers (49 x 4608, channels-last) about 6% of a `gemm_timing` call's samples.
pub(super) fn pack_lhs_block(
    matrix: MatrixRef<'_>,
    rows: Range<usize>,
    first_column: usize,
    depth: usize,
    output: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    let transpose = matrix.column_stride == 1 && crate::kernels::vectorize::has_avx2_fma();
    for (panel_index, panel) in output.chunks_exact_mut(depth * MR).enumerate() {
        let first_row = rows.start + panel_index * MR;
        if first_row >= rows.end {
            break;
        }
        let height = MR.min(rows.end - first_row);
        #[cfg(target_arch = "x86_64")]
        if transpose && height == MR {
            let rows = &matrix.data[first_row * matrix.row_stride + first_column..];
            // SAFETY: The processor has AVX2 (checked above).
            unsafe { x86_64::pack_lhs_panel(rows, matrix.row_stride, panel) };
            continue;
        }
        pack_lhs_panel_portable(matrix, first_row, height, first_column, panel);
    }
}

/// One panel of [`pack_lhs_block`], element by element: rows `first_row..first_row + height`
/// (`height <= MR`), the panel's length in steps from `first_column`.
fn pack_lhs_panel_portable(
    matrix: MatrixRef<'_>,
    first_row: usize,
    height: usize,
    first_column: usize,
    panel: &mut [f32],
) {
    let MatrixRef {
        data,
        row_stride,
        column_stride,
        ..
    } = matrix;
    gather_lanes(
        data,
        MR,
        height,
        |row| (first_row + row) * row_stride + first_column * column_stride,
        column_stride,
        panel,
    );
}

#[cfg(target_arch = "x86_64")]
mod x86_64 {
    use super::MR;
    use crate::kernels::shape::transpose_registers_8x8;
    use std::arch::x86_64::*;

    /// One full panel of `MR` rows: `panel[p * MR + r] = rows[r * row_stride + p]` for every
    /// step `p < panel.len() / MR`. Eight steps at a time the six rows are loaded, transposed
    /// as an 8 x 8 block with two rows of zeros (`transpose_registers_8x8`, as the layout
    /// kernels do), and each step's column stored as eight floats at `p * MR`, the two past its
    /// six overwritten by the next step's; the last step of the panel stores only its six, and
    /// the steps past the last multiple of eight go one by one.
    ///
    /// # Safety
    /// The processor has AVX2. (A `rows` shorter than `(MR - 1) * row_stride + panel.len() /
    /// MR` values panics.)
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn pack_lhs_panel(rows: &[f32], row_stride: usize, panel: &mut [f32]) {
        const { assert!(MR == 6, "the transpose loads six rows") };
        let depth = panel.len() / MR;
        let zero = _mm256_setzero_ps();
        let mut step = 0;
        while step + 8 <= depth {
            let [r0, r1, r2, r3, r4, r5] = std::array::from_fn(|row| {
                let values = &rows[row * row_stride + step..][..8];
                // SAFETY: `values` holds eight floats.
                unsafe { _mm256_loadu_ps(values.as_ptr()) }
            });
            let columns = transpose_registers_8x8([r0, r1, r2, r3, r4, r5, zero, zero]);
            for (offset, column) in columns.into_iter().enumerate() {
                let at = (step + offset) * MR;
                if let Some(values) = panel.get_mut(at..at + 8) {
                    // SAFETY: `values` holds eight floats.
                    unsafe { _mm256_storeu_ps(values.as_mut_ptr(), column) };
                } else {
                    let mut lanes = [0.0; 8];
                    // SAFETY: `lanes` holds eight floats.
                    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), column) };
                    panel[at..at + MR].copy_from_slice(&lanes[..MR]);
                }
            }
            step += 8;
        }
        let tail = &mut panel[step * MR..];
        super::gather_lanes(rows, MR, MR, |row| row * row_stride + step, 1, tail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Every panel of a block packed, against the definition: full panels of contiguous rows
        /// through the transpose where the processor has AVX2 (depths on both sides of a
        /// multiple of eight, the last step's store cut short), partial panels and strided
        /// columns element by element.
        #[test]
        fn packed_panels_hold_the_block_column_by_column(
            (rows, cols) in (1..20usize, 1..50usize),
            spare in 0..3usize,
            transposed in any::<bool>(),
            first_row in 0..20usize,
            first_column in 0..50usize,
            depth in 1..50usize,
        ) {
            let (first_row, first_column) = (first_row % rows, first_column % cols);
            let depth = depth.min(cols - first_column);
            let data: Vec<f32> = (0..rows * (cols + spare)).map(|i| i as f32 + 0.5).collect();
            let (row_stride, column_stride) = if transposed {
                (1, rows)
            } else {
                (cols + spare, 1)
            };
            let matrix = MatrixRef::new(&data, rows, cols, row_stride, column_stride).unwrap();
            let panels = (rows - first_row).div_ceil(MR);
            let mut output = vec![f32::NAN; panels * MR * depth];
            pack_lhs_block(matrix, first_row..rows, first_column, depth, &mut output);
            for (index, &value) in output.iter().enumerate() {
                let (panel, within) = (index / (MR * depth), index % (MR * depth));
                let (step, row) = (within / MR, within % MR);
                let row = first_row + panel * MR + row;
                let expected = if row < rows {
                    data[row * row_stride + (first_column + step) * column_stride]
                } else {
                    0.0
                };
                prop_assert_eq!(value.to_bits(), expected.to_bits(), "element {}", index);
            }
        }
    }
}
