//! Single-precision matrix multiplication: `C = A * B`, then an optional fused epilogue (a bias,
//! a residual matrix, an activation).
//!
//! The design is the BLIS one. B is packed into column panels of `NR = 16` and A into row
//! panels of `MR = 6`, both cut into blocks of `KC` steps of the shared dimension, and a
//! micro-kernel computes one `6 x 16` tile of C from one panel of each. Weights are packed once,
//! at load time, into a `PackedMatrix` (the right operand, as in `linear`) or a
//! `PackedLhsMatrix` (the left operand, as in convolution); a call then packs only the
//! activations. The micro-kernel is AVX2 + FMA where the processor has them (detected at run
//! time), else a portable one with the same signature and packing, so packed weights do not
//! depend on the processor.
//!
//! Work is split into rectangles of C, along whichever of `m` and `n` has more panels, and the
//! rectangles run on the shared pool (`crate::set_num_threads`). Packing buffers are kept per
//! thread and reused, so after warm-up a call allocates nothing.

mod portable;
#[cfg(target_arch = "x86_64")]
mod x86_64;

use crate::error::{KernelError, KernelResult, invalid_parameter, shape_mismatch};
use crate::kernels::activation::{Activation, apply_activation_in_place};
use crate::threading;
use nnc_ops::activation::{relu, relu6};
use std::cell::RefCell;
use std::ops::Range;

/// Rows of A (and of C) in one micro-kernel tile.
pub const MR: usize = 6;
/// Columns of B (and of C) in one micro-kernel tile.
pub const NR: usize = 16;

/// A read-only matrix in a slice, with arbitrary row and column strides (in elements).
///
/// Element `(i, j)` is `data[i * row_stride + j * column_stride]`. A transposed view swaps the
/// strides, so `W^T` for a row-major weight `W` costs nothing.
#[derive(Clone, Copy, Debug)]
pub struct MatrixRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    column_stride: usize,
}

impl<'a> MatrixRef<'a> {
    /// A strided view; fails if some element would lie outside `data`.
    pub fn new(
        data: &'a [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        column_stride: usize,
    ) -> KernelResult<Self> {
        let needed = strided_extent(rows, cols, row_stride, column_stride)
            .ok_or(KernelError::SizeOverflow { operation: "gemm" })?;
        if needed > data.len() {
            return Err(KernelError::BufferLength {
                operation: "gemm",
                buffer: "matrix",
                expected: needed,
                actual: data.len(),
            });
        }
        Ok(Self {
            data,
            rows,
            cols,
            row_stride,
            column_stride,
        })
    }

    /// A dense row-major `rows x cols` view.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> KernelResult<Self> {
        Self::new(data, rows, cols, cols, 1)
    }

    /// The transpose of this view (no data moves).
    pub fn transposed(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.column_stride,
            column_stride: self.row_stride,
        }
    }

    /// The number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Element `(row, column)`, or `None` outside the matrix.
    pub fn get(&self, row: usize, column: usize) -> Option<f32> {
        if row < self.rows && column < self.cols {
            Some(self.data[row * self.row_stride + column * self.column_stride])
        } else {
            None
        }
    }
}

/// A right operand `B` (`k x n`) packed once into the micro-kernel's layout.
///
/// Build it from a `[out, in]` weight with `from_linear_weight` (so that `y = x * W^T`) or from
/// any `k x n` matrix with `from_matrix`.
#[derive(Clone, Debug)]
pub struct PackedMatrix {
    depth: usize,
    cols: usize,
    data: AlignedBuffer,
}

impl PackedMatrix {
    /// Packs a `k x n` matrix.
    pub fn from_matrix(matrix: MatrixRef<'_>) -> Self {
        let length = packed_rhs_length(matrix.rows, matrix.cols);
        let mut data = AlignedBuffer::zeroed(length);
        pack_rhs(matrix, data.as_mut_slice());
        Self {
            depth: matrix.rows,
            cols: matrix.cols,
            data,
        }
    }

    /// Packs `W^T` for a PyTorch-style row-major weight `W` of shape `[out_features,
    /// in_features]`, so the product `x * packed` is `x * W^T`.
    pub fn from_linear_weight(
        weight: &[f32],
        out_features: usize,
        in_features: usize,
    ) -> KernelResult<Self> {
        let weight = MatrixRef::row_major(weight, out_features, in_features)?;
        crate::error::check_length(
            "linear",
            "weight",
            out_features * in_features,
            weight.data.len(),
        )?;
        Ok(Self::from_matrix(weight.transposed()))
    }

    /// The shared dimension `k` (rows of B).
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// The number of columns `n` of B.
    pub fn cols(&self) -> usize {
        self.cols
    }

    fn view(&self) -> PackedRhsView<'_> {
        PackedRhsView {
            data: self.data.as_slice(),
            depth: self.depth,
            panels: self.cols.div_ceil(NR),
        }
    }
}

/// A left operand `A` (`m x k`) packed once into the micro-kernel's layout; convolution packs
/// its weights this way, since they sit on the left of `W * im2col(x)`.
#[derive(Clone, Debug)]
pub struct PackedLhsMatrix {
    rows: usize,
    depth: usize,
    data: AlignedBuffer,
}

impl PackedLhsMatrix {
    /// Packs an `m x k` matrix.
    pub fn from_matrix(matrix: MatrixRef<'_>) -> Self {
        let panels = matrix.rows.div_ceil(MR);
        let mut data = AlignedBuffer::zeroed(panels * MR * matrix.cols);
        let buffer = data.as_mut_slice();
        for block_start in (0..matrix.cols).step_by(KC) {
            let block_depth = KC.min(matrix.cols - block_start);
            let block = &mut buffer[block_start * panels * MR..][..block_depth * panels * MR];
            pack_lhs_block(matrix, 0..matrix.rows, block_start, block_depth, block);
        }
        Self {
            rows: matrix.rows,
            depth: matrix.cols,
            data,
        }
    }

    /// The number of rows `m` of A.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The shared dimension `k` (columns of A).
    pub fn depth(&self) -> usize {
        self.depth
    }
}

/// The left operand of `gemm`: a strided matrix (packed per call) or a packed one.
#[derive(Clone, Copy, Debug)]
pub enum Lhs<'a> {
    Matrix(MatrixRef<'a>),
    Packed(&'a PackedLhsMatrix),
}

/// The right operand of `gemm`: a strided matrix (packed per call) or a packed one.
#[derive(Clone, Copy, Debug)]
pub enum Rhs<'a> {
    Matrix(MatrixRef<'a>),
    Packed(&'a PackedMatrix),
}

impl<'a> From<MatrixRef<'a>> for Lhs<'a> {
    fn from(matrix: MatrixRef<'a>) -> Self {
        Lhs::Matrix(matrix)
    }
}

impl<'a> From<&'a PackedLhsMatrix> for Lhs<'a> {
    fn from(matrix: &'a PackedLhsMatrix) -> Self {
        Lhs::Packed(matrix)
    }
}

impl<'a> From<MatrixRef<'a>> for Rhs<'a> {
    fn from(matrix: MatrixRef<'a>) -> Self {
        Rhs::Matrix(matrix)
    }
}

impl<'a> From<&'a PackedMatrix> for Rhs<'a> {
    fn from(matrix: &'a PackedMatrix) -> Self {
        Rhs::Packed(matrix)
    }
}

/// A bias vector for the epilogue.
#[derive(Clone, Copy, Debug)]
pub enum Bias<'a> {
    /// `c[i][j] += bias[j]`, one value per column (as in `linear`); length `n`.
    PerColumn(&'a [f32]),
    /// `c[i][j] += bias[i]`, one value per row (as in convolution); length `m`.
    PerRow(&'a [f32]),
}

/// Work fused into the GEMM and applied to each tile of C while it is still in cache.
#[derive(Clone, Copy, Debug, Default)]
pub enum Epilogue<'a> {
    /// C is the product (plus the old C when accumulating).
    #[default]
    None,
    /// Adds a bias.
    Bias(Bias<'a>),
    /// Applies an activation.
    Activation(Activation),
    /// Adds a bias, then applies an activation.
    BiasActivation(Bias<'a>, Activation),
}

impl Epilogue<'_> {
    fn parts(&self) -> (Option<Bias<'_>>, Option<Activation>) {
        match *self {
            Epilogue::None => (None, None),
            Epilogue::Bias(bias) => (Some(bias), None),
            Epilogue::Activation(activation) => (None, Some(activation)),
            Epilogue::BiasActivation(bias, activation) => (Some(bias), Some(activation)),
        }
    }
}

/// Options of `gemm`.
#[derive(Clone, Copy, Debug, Default)]
pub struct GemmOptions<'a> {
    /// Add the product to C instead of overwriting it (`beta = 1`); the epilogue then applies
    /// to the sum.
    pub accumulate: bool,
    /// What to apply to each finished tile.
    pub epilogue: Epilogue<'a>,
    /// A residual (skip connection) laid out like C (row stride `c_row_stride`), added to each
    /// finished element after the bias and before the activation, while the tile is in cache:
    /// `C = activation(A * B + bias + residual)`, in that order of additions.
    pub residual: Option<&'a [f32]>,
}

/// `C = A * B` (or `C += A * B`), then the epilogue, for an `m x k` A and a `k x n` B; C is
/// row-major with row stride `c_row_stride >= n`, so it may be a block of a larger matrix.
pub fn gemm(
    a: Lhs<'_>,
    b: Rhs<'_>,
    c: &mut [f32],
    c_row_stride: usize,
    options: &GemmOptions<'_>,
) -> KernelResult<()> {
    gemm_with(
        a,
        b,
        c,
        c_row_stride,
        options,
        Execution {
            parallel: true,
            kernel: select_tile_kernel(),
            rhs_scratch_limit: RHS_SCRATCH_LIMIT,
        },
    )
}

/// Like `gemm`, but always on the calling thread; for kernels that already run in parallel
/// at a coarser grain (attention over heads, convolution over images).
pub(crate) fn gemm_sequential(
    a: Lhs<'_>,
    b: Rhs<'_>,
    c: &mut [f32],
    c_row_stride: usize,
    options: &GemmOptions<'_>,
) -> KernelResult<()> {
    gemm_with(
        a,
        b,
        c,
        c_row_stride,
        options,
        Execution {
            parallel: false,
            kernel: select_tile_kernel(),
            rhs_scratch_limit: RHS_SCRATCH_LIMIT,
        },
    )
}

/// Depth of one block of the shared dimension: one B panel (`KC x NR`) stays in L1.
const KC: usize = 256;
/// Rows of A packed at once: an `MC x KC` block stays in L2.
const MC: usize = 144;
/// Columns of B swept per block: a `KC x NC` block stays in L3.
const NC: usize = 4096;
/// The most floats of B packed at once when B is not packed beforehand (64 MiB).
const RHS_SCRATCH_LIMIT: usize = 1 << 24;
/// Below this many multiply-adds a product runs on one thread.
const PARALLEL_MIN_MULTIPLY_ADDS: usize = 1 << 20;

/// The signature shared by the micro-kernels; see `portable::tile_kernel` for the contract.
/// Flash attention packs its own panels and calls the micro-kernel directly.
pub(crate) type TileKernel = unsafe fn(usize, &[f32], &[f32], *mut f32, usize, usize, usize, bool);

/// How to run one product.
#[derive(Clone, Copy)]
struct Execution {
    parallel: bool,
    kernel: TileKernel,
    /// The most floats of B to pack at once when B comes unpacked.
    rhs_scratch_limit: usize,
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
fn strided_extent(
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

fn packed_rhs_length(depth: usize, cols: usize) -> usize {
    depth * cols.div_ceil(NR) * NR
}

/// A slice whose first element sits on a 64-byte boundary, so each 16-float panel row of B is
/// exactly one cache line.
#[derive(Clone, Debug, Default)]
struct AlignedBuffer {
    storage: Vec<f32>,
    offset: usize,
    length: usize,
}

impl AlignedBuffer {
    const SLACK: usize = 64 / std::mem::size_of::<f32>();

    fn zeroed(length: usize) -> Self {
        let mut buffer = Self::default();
        buffer.resize(length);
        buffer
    }

    /// Makes room for `length` elements; the contents are unspecified afterwards.
    fn resize(&mut self, length: usize) {
        if self.storage.len() < length + Self::SLACK {
            self.storage = vec![0.0; length + Self::SLACK];
        }
        let offset = self.storage.as_ptr().align_offset(64);
        self.offset = if offset < Self::SLACK { offset } else { 0 };
        self.length = length;
    }

    fn as_slice(&self) -> &[f32] {
        &self.storage[self.offset..][..self.length]
    }

    fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.storage[self.offset..][..self.length]
    }
}

/// Packs B (`k x n`) into `output`: block by block of `KC` rows, panel by panel of `NR`
/// columns, each panel row-major with zero padding on the right.
fn pack_rhs(matrix: MatrixRef<'_>, output: &mut [f32]) {
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

fn pack_rhs_panel(
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
fn pack_lhs_block(
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

/// A packed B as the driver reads it.
#[derive(Clone, Copy)]
struct PackedRhsView<'a> {
    data: &'a [f32],
    depth: usize,
    panels: usize,
}

impl PackedRhsView<'_> {
    /// Panel `panel_index` of the block starting at row `block_start`.
    fn panel(&self, block_start: usize, block_depth: usize, panel_index: usize) -> &[f32] {
        let start = block_start * self.panels * NR + panel_index * block_depth * NR;
        &self.data[start..start + block_depth * NR]
    }
}

/// Where the driver gets A's panels from.
#[derive(Clone, Copy)]
enum LhsSource<'a> {
    Matrix(MatrixRef<'a>),
    Packed(&'a PackedLhsMatrix),
}

/// A shareable pointer to C; the driver hands each task a disjoint rectangle.
#[derive(Clone, Copy)]
struct OutputPointer(*mut f32);

// SAFETY: Tasks write disjoint tiles of C through this pointer (the rectangles partition C), and
// the borrow of C outlives every task because `run_tasks` returns only when all have finished.
unsafe impl Send for OutputPointer {}
// SAFETY: As above; no two tasks touch the same element.
unsafe impl Sync for OutputPointer {}

/// Everything the tasks of one product share.
struct Product<'a> {
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
fn with_scratch<R>(
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

fn gemm_with(
    a: Lhs<'_>,
    b: Rhs<'_>,
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
        Rhs::Matrix(matrix) => (matrix.rows, matrix.cols),
        Rhs::Packed(matrix) => (matrix.depth, matrix.cols),
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
        Rhs::Packed(matrix) => {
            let product = Product {
                rows,
                depth,
                cols,
                lhs,
                rhs: matrix.view(),
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
        Rhs::Matrix(matrix) => {
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
fn run_product(product: &Product<'_>, parallel: bool) {
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
fn run_rectangle(product: &Product<'_>, rows: Range<usize>, cols: Range<usize>) {
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
fn run_block(
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
fn apply_epilogue_to_row(
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

#[cfg(test)]
mod tests;
