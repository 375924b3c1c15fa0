//! The GEMM's driver: cache blocking, the split of C into rectangles for the thread pool, the
//! per-thread packing scratch, the selection of the micro-kernel for this processor and the
//! fused epilogue.

use super::packing::{AlignedBuffer, pack_lhs_block, pack_rhs, packed_rhs_length};
#[cfg(target_arch = "x86_64")]
use super::x86_64;
use super::{Bias, GemmOptions, Lhs, MR, MatrixRef, NR, PackedLhsMatrix, Rhs, portable};
use crate::error::{KernelError, KernelResult, invalid_parameter, shape_mismatch};
use crate::kernels::activation::{Activation, apply_activation_in_place};
use crate::threading;
use nnc_ops::activation::{relu, relu6};
use std::cell::RefCell;
use std::ops::Range;

/// Depth of one block of the shared dimension: one B panel (`KC x NR`) stays in L1.
pub(super) const KC: usize = 256;
/// Rows of A packed at once: an `MC x KC` block stays in L2.
pub(super) const MC: usize = 144;
/// Columns of B swept per block: a `KC x NC` block stays in L3.
pub(super) const NC: usize = 4096;
/// The most floats of B packed at once when B is not packed beforehand (64 MiB).
pub(super) const RHS_SCRATCH_LIMIT: usize = 1 << 24;
/// Below this many multiply-adds a product runs on one thread.
pub(super) const PARALLEL_MIN_MULTIPLY_ADDS: usize = 1 << 20;

/// The signature shared by the micro-kernels; see `portable::tile_kernel` for the contract.
/// Flash attention packs its own panels and calls the micro-kernel directly.
pub(crate) type TileKernel = unsafe fn(usize, &[f32], &[f32], *mut f32, usize, usize, usize, bool);

/// How to run one product.
#[derive(Clone, Copy)]
pub(super) struct Execution {
    pub(super) parallel: bool,
    pub(super) kernel: TileKernel,
    /// The most floats of B to pack at once when B comes unpacked.
    pub(super) rhs_scratch_limit: usize,
}

/// The signature of the micro-kernels that read A row-major: `(depth, a, a_row_stride, b_panel,
/// c, c_row_stride, rows, cols, accumulate)`; see `portable::tile_kernel_row_major_a`.
pub(crate) type RowMajorTileKernel =
    unsafe fn(usize, &[f32], usize, &[f32], *mut f32, usize, usize, usize, bool);

/// The fastest micro-kernel with a row-major A that this processor runs.
pub(crate) fn select_row_major_tile_kernel() -> RowMajorTileKernel {
    #[cfg(target_arch = "x86_64")]
    if x86_64::is_available() {
        return x86_64::tile_kernel_row_major_a;
    }
    portable::tile_kernel_row_major_a
}

/// The fastest micro-kernel this processor runs.
pub(crate) fn select_tile_kernel() -> TileKernel {
    #[cfg(target_arch = "x86_64")]
    if x86_64::is_available() {
        return x86_64::tile_kernel;
    }
    portable::tile_kernel
}

/// The number of elements from the first to the last element of a strided matrix, plus one.
pub(super) fn strided_extent(
    rows: usize,
    cols: usize,
    row_stride: usize,
    column_stride: usize,
) -> Option<usize> {
    if rows == 0 || cols == 0 {
        return Some(0);
    }
    (rows - 1)
        .checked_mul(row_stride)?
        .checked_add((cols - 1).checked_mul(column_stride)?)?
        .checked_add(1)
}

/// A packed B as the driver reads it.
#[derive(Clone, Copy)]
pub(super) struct PackedRhsView<'a> {
    pub(super) data: &'a [f32],
    pub(super) depth: usize,
    pub(super) panels: usize,
}

impl PackedRhsView<'_> {
    /// Panel `panel_index` of the block starting at row `block_start`.
    pub(super) fn panel(
        &self,
        block_start: usize,
        block_depth: usize,
        panel_index: usize,
    ) -> &[f32] {
        let start = block_start * self.panels * NR + panel_index * block_depth * NR;
        &self.data[start..start + block_depth * NR]
    }
}

/// Where the driver gets A's panels from.
#[derive(Clone, Copy)]
pub(super) enum LhsSource<'a> {
    Matrix(MatrixRef<'a>),
    Packed(&'a PackedLhsMatrix),
}

/// A shareable pointer to C; the driver hands each task a disjoint rectangle.
#[derive(Clone, Copy)]
pub(super) struct OutputPointer(*mut f32);

// SAFETY: Tasks write disjoint tiles of C through this pointer (the rectangles partition C), and
// the borrow of C outlives every task because `run_tasks` returns only when all have finished.
unsafe impl Send for OutputPointer {}
// SAFETY: As above; no two tasks touch the same element.
unsafe impl Sync for OutputPointer {}

/// Everything the tasks of one product share.
pub(super) struct Product<'a> {
    rows: usize,
    depth: usize,
    cols: usize,
    lhs: LhsSource<'a>,
    rhs: PackedRhsView<'a>,
    c: OutputPointer,
    c_row_stride: usize,
    accumulate: bool,
    bias: Option<Bias<'a>>,
    /// Laid out like C, starting at this product's first column.
    residual: Option<&'a [f32]>,
    activation: Option<Activation>,
    kernel: TileKernel,
}

thread_local! {
    static LHS_SCRATCH: RefCell<AlignedBuffer> = RefCell::new(AlignedBuffer::default());
    static RHS_SCRATCH: RefCell<AlignedBuffer> = RefCell::new(AlignedBuffer::default());
}

/// Runs `task` with a per-thread scratch buffer of `length` elements, or a fresh one if this
/// thread's buffer is already in use further up the stack.
pub(super) fn with_scratch<R>(
    scratch: &'static std::thread::LocalKey<RefCell<AlignedBuffer>>,
    length: usize,
    task: impl FnOnce(&mut [f32]) -> R,
) -> R {
    let mut task = Some(task);
    let result = scratch.with(|cell| {
        let mut buffer = cell.try_borrow_mut().ok()?;
        buffer.resize(length);
        let task = task.take()?;
        Some(task(buffer.as_mut_slice()))
    });
    match (result, task) {
        (Some(result), _) => result,
        (None, Some(task)) => task(AlignedBuffer::zeroed(length).as_mut_slice()),
        (None, None) => unreachable!("with_scratch: the task ran but returned nothing"),
    }
}

/// The right operand as the driver takes it: a `Rhs`, or a panel layout packed by the caller
/// (`PackedRhsRef`) with its number of columns.
#[derive(Clone, Copy)]
pub(super) enum RhsOperand<'a> {
    Matrix(MatrixRef<'a>),
    Packed(PackedRhsView<'a>, usize),
}

impl<'a> From<Rhs<'a>> for RhsOperand<'a> {
    fn from(rhs: Rhs<'a>) -> Self {
        match rhs {
            Rhs::Matrix(matrix) => RhsOperand::Matrix(matrix),
            Rhs::Packed(matrix) => RhsOperand::Packed(matrix.view(), matrix.cols()),
        }
    }
}

pub(super) fn gemm_with(
    a: Lhs<'_>,
    b: RhsOperand<'_>,
    c: &mut [f32],
    c_row_stride: usize,
    options: &GemmOptions<'_>,
    execution: Execution,
) -> KernelResult<()> {
    let (rows, depth) = match a {
        Lhs::Matrix(matrix) => (matrix.rows, matrix.cols),
        Lhs::Packed(matrix) => (matrix.rows, matrix.depth),
    };
    let (rhs_depth, cols) = match b {
        RhsOperand::Matrix(matrix) => (matrix.rows, matrix.cols),
        RhsOperand::Packed(view, cols) => (view.depth, cols),
    };
    if depth != rhs_depth {
        return Err(shape_mismatch(
            "gemm",
            format!("A is {rows}x{depth} but B is {rhs_depth}x{cols}"),
        ));
    }
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    if c_row_stride < cols {
        return Err(invalid_parameter(
            "gemm",
            format!("the row stride of C ({c_row_stride}) is smaller than n ({cols})"),
        ));
    }
    let c_extent = strided_extent(rows, cols, c_row_stride, 1)
        .ok_or(KernelError::SizeOverflow { operation: "gemm" })?;
    if c.len() < c_extent {
        return Err(KernelError::BufferLength {
            operation: "gemm",
            buffer: "c",
            expected: c_extent,
            actual: c.len(),
        });
    }
    let (bias, activation) = options.epilogue.parts();
    match bias {
        Some(Bias::PerColumn(values)) if values.len() != cols => {
            crate::error::check_length("gemm", "bias", cols, values.len())?;
        }
        Some(Bias::PerRow(values)) if values.len() != rows => {
            crate::error::check_length("gemm", "bias", rows, values.len())?;
        }
        _ => {}
    }
    if let Some(residual) = options.residual
        && residual.len() < c_extent
    {
        return Err(KernelError::BufferLength {
            operation: "gemm",
            buffer: "residual",
            expected: c_extent,
            actual: residual.len(),
        });
    }
    let residual_row = |row: usize, first_column: usize, width: usize| {
        options
            .residual
            .map(|residual| &residual[row * c_row_stride + first_column..][..width])
    };
    if depth == 0 {
        // The product is empty: C is zero (or unchanged), then the epilogue.
        for (row, c_row) in c.chunks_mut(c_row_stride).take(rows).enumerate() {
            let c_row = &mut c_row[..cols];
            if !options.accumulate {
                c_row.fill(0.0);
            }
            apply_epilogue_to_row(c_row, row, 0, bias, residual_row(row, 0, cols), activation);
        }
        return Ok(());
    }
    let lhs = match a {
        Lhs::Matrix(matrix) => LhsSource::Matrix(matrix),
        Lhs::Packed(matrix) => LhsSource::Packed(matrix),
    };
    let output = OutputPointer(c.as_mut_ptr());
    match b {
        RhsOperand::Packed(view, _) => {
            let product = Product {
                rows,
                depth,
                cols,
                lhs,
                rhs: view,
                c: output,
                c_row_stride,
                accumulate: options.accumulate,
                bias,
                residual: options.residual,
                activation,
                kernel: execution.kernel,
            };
            run_product(&product, execution.parallel);
        }
        RhsOperand::Matrix(matrix) => {
            // A wide B is packed and multiplied a band of columns at a time, which bounds the
            // scratch at about `RHS_SCRATCH_LIMIT` floats.
            let band = (execution.rhs_scratch_limit / depth / NR).max(1) * NR;
            for first_column in (0..cols).step_by(band) {
                let width = band.min(cols - first_column);
                let band_matrix = MatrixRef {
                    data: &matrix.data[first_column * matrix.column_stride..],
                    cols: width,
                    ..matrix
                };
                with_scratch(&RHS_SCRATCH, packed_rhs_length(depth, width), |buffer| {
                    pack_rhs(band_matrix, buffer);
                    let band_bias = match bias {
                        Some(Bias::PerColumn(values)) => {
                            Some(Bias::PerColumn(&values[first_column..first_column + width]))
                        }
                        other => other,
                    };
                    let product = Product {
                        rows,
                        depth,
                        cols: width,
                        lhs,
                        rhs: PackedRhsView {
                            data: buffer,
                            depth,
                            panels: width.div_ceil(NR),
                        },
                        // SAFETY: `first_column < cols <= c_row_stride`, so the offset stays
                        // inside C, whose extent was checked above.
                        c: OutputPointer(unsafe { output.0.add(first_column) }),
                        c_row_stride,
                        accumulate: options.accumulate,
                        bias: band_bias,
                        residual: options.residual.map(|residual| &residual[first_column..]),
                        activation,
                        kernel: execution.kernel,
                    };
                    run_product(&product, execution.parallel);
                });
            }
        }
    }
    Ok(())
}

/// Splits C into rectangles and runs them, in parallel when that pays.
pub(super) fn run_product(product: &Product<'_>, parallel: bool) {
    let threads = if parallel {
        threading::parallel_width()
    } else {
        1
    };
    let multiply_adds = product
        .rows
        .saturating_mul(product.cols)
        .saturating_mul(product.depth);
    let row_panels = product.rows.div_ceil(MR);
    let column_panels = product.cols.div_ceil(NR);
    if threads == 1 || multiply_adds < PARALLEL_MIN_MULTIPLY_ADDS {
        run_rectangle(product, 0..product.rows, 0..product.cols);
        return;
    }
    // Twice as many rectangles as threads lets work stealing even out a busy core.
    let split_rows = row_panels >= column_panels;
    let panels = if split_rows {
        row_panels
    } else {
        column_panels
    };
    let task_count = (2 * threads).min(panels);
    let panels_per_task = panels.div_ceil(task_count);
    let task_count = panels.div_ceil(panels_per_task);
    threading::run_tasks(task_count, |task| {
        let first_panel = task * panels_per_task;
        let last_panel = (first_panel + panels_per_task).min(panels);
        if split_rows {
            let rows = first_panel * MR..(last_panel * MR).min(product.rows);
            run_rectangle(product, rows, 0..product.cols);
        } else {
            let cols = first_panel * NR..(last_panel * NR).min(product.cols);
            run_rectangle(product, 0..product.rows, cols);
        }
    });
}

/// Computes one rectangle of C: the BLIS loops around the micro-kernel. `rows.start` is a
/// multiple of `MR` and `cols.start` a multiple of `NR`.
pub(super) fn run_rectangle(product: &Product<'_>, rows: Range<usize>, cols: Range<usize>) {
    let block_rows = MC.min(rows.len().div_ceil(MR) * MR);
    let scratch_length = match product.lhs {
        LhsSource::Matrix(_) => block_rows * KC.min(product.depth),
        LhsSource::Packed(_) => 0,
    };
    with_scratch(&LHS_SCRATCH, scratch_length, |scratch| {
        for column_block in (cols.start..cols.end).step_by(NC) {
            let column_block = column_block..(column_block + NC).min(cols.end);
            for block_start in (0..product.depth).step_by(KC) {
                let block_depth = KC.min(product.depth - block_start);
                for row_block in (rows.start..rows.end).step_by(MC) {
                    let row_block = row_block..(row_block + MC).min(rows.end);
                    let lhs_block: &[f32] = match product.lhs {
                        LhsSource::Matrix(matrix) => {
                            let length = row_block.len().div_ceil(MR) * MR * block_depth;
                            let block = &mut scratch[..length];
                            pack_lhs_block(
                                matrix,
                                row_block.clone(),
                                block_start,
                                block_depth,
                                block,
                            );
                            block
                        }
                        LhsSource::Packed(matrix) => {
                            let panels = matrix.rows.div_ceil(MR);
                            let start = block_start * panels * MR + row_block.start * block_depth;
                            let length = row_block.len().div_ceil(MR) * MR * block_depth;
                            &matrix.data.as_slice()[start..start + length]
                        }
                    };
                    run_block(
                        product,
                        lhs_block,
                        row_block,
                        column_block.clone(),
                        block_start,
                        block_depth,
                    );
                }
            }
        }
    });
}

/// The two innermost loops: every tile of one packed A block against every panel of B.
pub(super) fn run_block(
    product: &Product<'_>,
    lhs_block: &[f32],
    row_block: Range<usize>,
    column_block: Range<usize>,
    block_start: usize,
    block_depth: usize,
) {
    let first_block = block_start == 0;
    let last_block = block_start + block_depth == product.depth;
    let accumulate = product.accumulate || !first_block;
    let has_epilogue = last_block
        && (product.bias.is_some() || product.residual.is_some() || product.activation.is_some());
    for first_column in column_block.step_by(NR) {
        let width = NR.min(product.cols - first_column);
        let rhs_panel = product
            .rhs
            .panel(block_start, block_depth, first_column / NR);
        debug_assert_eq!(product.rhs.depth, product.depth);
        for first_row in row_block.clone().step_by(MR) {
            let height = MR.min(product.rows - first_row);
            let lhs_panel =
                &lhs_block[(first_row - row_block.start) * block_depth..][..block_depth * MR];
            let offset = first_row * product.c_row_stride + first_column;
            // SAFETY: The tile `first_row..first_row + height` x `first_column..first_column +
            // width` lies inside C (checked against `c.len()` in `gemm_with`) and inside this
            // task's rectangle, so no other task touches it; the panels hold `block_depth` steps.
            unsafe {
                let tile = product.c.0.add(offset);
                (product.kernel)(
                    block_depth,
                    lhs_panel,
                    rhs_panel,
                    tile,
                    product.c_row_stride,
                    height,
                    width,
                    accumulate,
                );
            }
            if has_epilogue {
                for row in 0..height {
                    // SAFETY: Row `row` of the tile is `width` elements of C owned by this task
                    // (as above), and no other reference to them exists while this one lives.
                    let c_row = unsafe {
                        std::slice::from_raw_parts_mut(
                            product.c.0.add(offset + row * product.c_row_stride),
                            width,
                        )
                    };
                    let residual = product.residual.map(|residual| {
                        &residual[(first_row + row) * product.c_row_stride + first_column..]
                            [..width]
                    });
                    apply_epilogue_to_row(
                        c_row,
                        first_row + row,
                        first_column,
                        product.bias,
                        residual,
                        product.activation,
                    );
                }
            }
        }
    }
}

/// Adds the bias and then the residual to, then applies the activation on, a piece of row `row`
/// of C that starts at column `first_column`; `residual` is the matching piece of the residual.
#[inline]
pub(super) fn apply_epilogue_to_row(
    c_row: &mut [f32],
    row: usize,
    first_column: usize,
    bias: Option<Bias<'_>>,
    residual: Option<&[f32]>,
    activation: Option<Activation>,
) {
    match bias {
        Some(Bias::PerColumn(values)) => {
            for (value, &bias) in c_row.iter_mut().zip(&values[first_column..]) {
                *value += bias;
            }
        }
        Some(Bias::PerRow(values)) => {
            let bias = values[row];
            for value in c_row.iter_mut() {
                *value += bias;
            }
        }
        None => {}
    }
    if let Some(residual) = residual {
        for (value, &skip) in c_row.iter_mut().zip(residual) {
            *value += skip;
        }
    }
    match activation {
        // The cheap activations inline: the epilogue runs on pieces of 16 columns, too short to
        // pay for a dispatch per piece.
        Some(Activation::Relu) => c_row.iter_mut().for_each(|value| *value = relu(*value)),
        Some(Activation::Relu6) => c_row.iter_mut().for_each(|value| *value = relu6(*value)),
        Some(activation) => apply_activation_in_place(c_row, activation),
        None => {}
    }
}
