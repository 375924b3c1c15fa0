//! Single-precision matrix multiplication: `C = A * B`, then an optional fused epilogue (a bias,
//! a residual matrix, an activation).
//!
//! The design is the BLIS one. B is packed into column panels of `NR = 16` and A into row
//! panels of `MR = 6`, both cut into blocks of `KC` steps of the shared dimension, and a
//! micro-kernel computes one `6 x 16` tile of C from one panel of each. Weights are packed once,
//! at load time, into a `PackedMatrix` (the right operand, as in `linear`) or a
//! `PackedLhsMatrix` (the left operand, as in convolution); a call then packs only the
//! activations. The micro-kernel is AVX-512F where the processor has it (`avx512.rs`: tiles of
//! 12 rows, two A panels, in zmm registers), else AVX2 + FMA (`x86_64.rs`: 6 x 16 tiles in ymm
//! registers), else a portable one, all detected at run time, with the same signature and the
//! same packed layouts, so packed weights do not depend on the processor. `set_max_isa` caps the
//! choice, so one binary can time or test each.
//!
//! B that is not packed at load time is packed during the call by the tasks themselves, each
//! packing only the panels of its own columns, one `KC x SOURCE_NC` block at a time, from a
//! `RhsSource`: a strided matrix, or (for convolution) the input image read as its im2col matrix,
//! which is never built. Work is split into a grid of rectangles of C, cut along the columns
//! first and along the rows where the columns alone do not give every thread an equal share
//! (`driver::task_grid`), and the rectangles run on the shared pool (`crate::set_num_threads`).
//! Packing buffers are kept per thread and reused, so after warm-up a call allocates nothing.
//!
//! The epilogue is fused into the micro-kernel (`tile.rs`): on the last block of k, the biases,
//! the residual and the clamp activations (relu, relu6, leaky relu) are applied to the
//! accumulators before the tile's one store; other activations run with the vectorised loops
//! over the rows of each 256-column group of a block, while it is still in L2. A row-major A no
//! deeper than `KC` is not packed: the micro-kernel reads its rows in place.

#[cfg(target_arch = "x86_64")]
mod avx512;
mod driver;
mod packing;
mod portable;
mod tile;
#[cfg(target_arch = "x86_64")]
mod x86_64;

/// Asks for the cache line holding `address` (`prefetcht0`). A hint: it reads nothing the program
/// sees and never faults, whatever the address, so any pointer will do.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn prefetch<T>(address: *const T) {
    // SAFETY: a prefetch never faults and has no effect the program can observe, on any address;
    // SSE, which it needs, is part of x86_64. (Rust 1.90 made the intrinsic safe; the block is for
    // the older compilers `rust-version` admits, hence the allow.)
    #[allow(unused_unsafe)]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(address.cast::<i8>())
    }
}

/// Fetches the cache line at `address` into L2 (and L3), not L1: for data needed a little
/// later, which should not push out what L1 holds now. A hint, like `prefetch`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) fn prefetch_l2<T>(address: *const T) {
    // SAFETY: As for `prefetch`.
    #[allow(unused_unsafe)]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(address.cast::<i8>())
    }
}

use crate::alloc::AlignedBuffer;
pub(crate) use driver::{KC, RhsSource, with_scratch};
use std::ops::Range;
pub(crate) use tile::{Clamp, GemmKernels, TileEpilogue, TileOutput as StripOutput};

use crate::error::{KernelError, KernelResult};
use crate::kernels::activation::Activation;
use driver::{
    Execution, MatrixSource, PackedRhsView, RhsOperand, SOURCE_NC, gemm_with, strided_extent,
};
#[cfg(test)]
use driver::{GridPacking, LhsAccess, TaskGrid, even_share, row_share, task_grid};
use packing::{pack_lhs_block, pack_rhs, packed_rhs_length};

/// Rows of A (and of C) in one micro-kernel tile.
pub const MR: usize = 6;
/// Columns of B (and of C) in one micro-kernel tile.
pub const NR: usize = 16;

/// The instruction sets the GEMM has micro-kernels for, from the slowest to the fastest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum GemmIsa {
    /// Plain Rust, which every processor runs.
    Portable,
    /// AVX2 and FMA: a `6 x 16` tile in 12 ymm registers.
    Avx2Fma,
    /// AVX-512F: tiles of up to `12 x 16` in zmm registers, reading the same packed panels.
    Avx512,
}

impl GemmIsa {
    /// A short lower-case name (`portable`, `avx2`, `avx512`).
    pub fn name(self) -> &'static str {
        match self {
            GemmIsa::Portable => "portable",
            GemmIsa::Avx2Fma => "avx2",
            GemmIsa::Avx512 => "avx512",
        }
    }

    /// Whether the running processor has this instruction set.
    pub fn is_available(self) -> bool {
        GemmKernels::for_isa(self).is_some()
    }
}

/// The cap `set_max_isa` sets, as a `GemmIsa` discriminant (the fastest by default).
static MAX_ISA: std::sync::atomic::AtomicU8 =
    std::sync::atomic::AtomicU8::new(GemmIsa::Avx512 as u8);

/// Caps the instruction set of the GEMM's micro-kernels for the whole process (like oneDNN's
/// `ONEDNN_MAX_CPU_ISA`), so that one binary can time or test each kernel; the default is the
/// fastest the processor has. Packed weights do not depend on it.
pub fn set_max_isa(isa: GemmIsa) {
    MAX_ISA.store(isa as u8, std::sync::atomic::Ordering::Relaxed);
}

/// The instruction set the GEMM runs with: the fastest this processor has, up to the cap of
/// `set_max_isa`.
pub fn selected_isa() -> GemmIsa {
    let cap = MAX_ISA.load(std::sync::atomic::Ordering::Relaxed);
    [GemmIsa::Avx512, GemmIsa::Avx2Fma]
        .into_iter()
        .find(|isa| *isa as u8 <= cap && isa.is_available())
        .unwrap_or(GemmIsa::Portable)
}

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

    /// The panels of `NR` columns, `depth` steps each, one after the other, when B is one block
    /// of the shared dimension (`depth <= KC`); deeper matrices are packed block by block.
    pub(crate) fn single_block_panels(&self) -> Option<&[f32]> {
        (self.depth <= KC).then(|| self.data.as_slice())
    }

    /// Rows `rows` of B (a `rows.len() x cols` matrix), packed on their own: one task's share
    /// of the shared dimension when a product is cut along it (`C = A0 * B0 + A1 * B1`).
    pub(crate) fn row_range(&self, rows: Range<usize>) -> Self {
        assert!(
            rows.end <= self.depth,
            "PackedMatrix::row_range: rows past the depth"
        );
        let cols = self.cols;
        let data = self.data.as_slice();
        let values: Vec<f32> = rows
            .clone()
            .flat_map(|row| {
                (0..cols).map(move |column| data[packed_rhs_index(self.depth, cols, row, column)])
            })
            .collect();
        let matrix = MatrixRef::row_major(&values, rows.len(), cols)
            .expect("PackedMatrix::row_range: a row-major matrix of its own length");
        Self::from_matrix(matrix)
    }

    /// Columns `first_column..first_column + width` of B as a packed operand of their own,
    /// without a copy: possible when B is one block of the shared dimension (`depth <= KC`) and
    /// the columns start a panel (`first_column` a multiple of `NR`); the last panel may be part
    /// of the range only as a whole.
    pub(crate) fn column_range(
        &self,
        first_column: usize,
        width: usize,
    ) -> Option<PackedRhsRef<'_>> {
        let end = first_column.checked_add(width)?;
        let whole_panels = end.is_multiple_of(NR) || end == self.cols;
        if self.depth > KC || !first_column.is_multiple_of(NR) || end > self.cols || !whole_panels {
            return None;
        }
        let start = first_column * self.depth;
        let length = packed_rhs_length(self.depth, width);
        Some(PackedRhsRef {
            data: &self.data.as_slice()[start..start + length],
            depth: self.depth,
            cols: width,
        })
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

    /// The panels of `MR` rows, `depth` steps each, one after the other, when A is one block of
    /// the shared dimension (`depth <= KC`); deeper matrices are packed block by block.
    pub(crate) fn single_block_panels(&self) -> Option<&[f32]> {
        (self.depth <= KC).then(|| self.data.as_slice())
    }
}

/// The micro-kernel of the indirect convolution: `(depth, a_panels, b, offsets, output)`
/// computes `output = epilogue(A * B)` for a strip of up to `strip_panels * NR` columns, step
/// `k` of B being the floats at `b + offsets[k]` (see `avx512::indirect_strip` for the contract).
pub(crate) type IndirectStripKernel =
    unsafe fn(usize, &[f32], *const f32, &[usize], &StripOutput<'_>);

/// The indirect micro-kernel and the widest strip it takes, when the selected instruction set
/// has one (AVX2 and AVX-512); the portable path runs convolutions through the packed GEMM.
pub(crate) fn indirect_strip_kernel() -> Option<(IndirectStripKernel, usize)> {
    indirect_kernels(selected_isa()).map(|kernels| (kernels.b_in_place, kernels.strip_columns))
}

/// The micro-kernel of the channels-last convolution of an NCHW image: `(depth, a, offsets,
/// b_panels, output)` computes `output = epilogue(A * B)` for a strip of up to `strip_panels *
/// NR` columns and any number of rows, row `r` and step `k` of A being the float at `a +
/// offsets[k] + r` (see `avx512::indirect_lhs_strip` for the contract).
pub(crate) type IndirectLhsStripKernel =
    unsafe fn(usize, *const f32, &[usize], &[f32], &StripOutput<'_>);

/// The micro-kernel that reads A in place through offsets and the widest strip it takes, when
/// the selected instruction set has one (AVX2 and AVX-512).
pub(crate) fn indirect_lhs_strip_kernel() -> Option<(IndirectLhsStripKernel, usize)> {
    indirect_kernels(selected_isa()).map(|kernels| (kernels.a_in_place, kernels.strip_columns))
}

/// One instruction set's pair of indirect micro-kernels.
#[derive(Clone, Copy)]
pub(crate) struct IndirectKernels {
    /// B (the image) read in place, A packed: the NCHW convolution.
    pub(crate) b_in_place: IndirectStripKernel,
    /// A (the image) read in place, B packed: the channels-last convolution of an NCHW image.
    pub(crate) a_in_place: IndirectLhsStripKernel,
    /// The widest strip either takes.
    pub(crate) strip_columns: usize,
}

/// The indirect kernels of `isa`, where it has them and this processor runs it.
pub(crate) fn indirect_kernels(isa: GemmIsa) -> Option<IndirectKernels> {
    match isa {
        #[cfg(target_arch = "x86_64")]
        GemmIsa::Avx512 if avx512::is_available() => Some(IndirectKernels {
            b_in_place: avx512::indirect_strip,
            a_in_place: avx512::indirect_lhs_strip,
            strip_columns: avx512::STRIP_PANELS * NR,
        }),
        #[cfg(target_arch = "x86_64")]
        GemmIsa::Avx2Fma if x86_64::is_available() => Some(IndirectKernels {
            b_in_place: x86_64::indirect_strip,
            a_in_place: x86_64::indirect_lhs_strip,
            strip_columns: NR,
        }),
        _ => None,
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

impl<'a> Epilogue<'a> {
    /// The epilogue that adds `bias`, if any, then applies `activation`, if any.
    pub fn from_parts(bias: Option<Bias<'a>>, activation: Option<Activation>) -> Self {
        match (bias, activation) {
            (None, None) => Epilogue::None,
            (Some(bias), None) => Epilogue::Bias(bias),
            (None, Some(activation)) => Epilogue::Activation(activation),
            (Some(bias), Some(activation)) => Epilogue::BiasActivation(bias, activation),
        }
    }

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
    with_rhs_operand(b, |b| {
        gemm_with(a, b, c, c_row_stride, options, Execution::detected(true))
    })
}

/// Like `gemm`, for a linear layer's weights: a product of one row (a decoding step's projection,
/// whose weights stream from memory) runs `GemmKernels::for_one_row`'s kernels, which round
/// otherwise than the same row in a product of several.
pub(crate) fn gemm_of_weights(
    a: Lhs<'_>,
    b: Rhs<'_>,
    c: &mut [f32],
    c_row_stride: usize,
    options: &GemmOptions<'_>,
) -> KernelResult<()> {
    let execution = Execution {
        one_row_kernels: true,
        ..Execution::detected(true)
    };
    with_rhs_operand(b, |b| gemm_with(a, b, c, c_row_stride, options, execution))
}

/// Like `gemm`, with C cut by rows only, one share per thread, when B is small enough to stay
/// in cache (each task reads all of it; up to 1 MB, else as `gemm` cuts): for a
/// channels-last convolution, whose rows are pixels, so that each thread writes whole pixels
/// (every channel), which the next layer (a depthwise or 1x1 convolution, split by pixels too)
/// then finds in its own core's cache. Cut by columns, as `gemm` picks for MobileNetV2's 1x1
/// layers on small images, every pixel was half in each core's cache.
pub(crate) fn gemm_by_rows(
    a: Lhs<'_>,
    b: Rhs<'_>,
    c: &mut [f32],
    c_row_stride: usize,
    options: &GemmOptions<'_>,
) -> KernelResult<()> {
    let execution = Execution {
        rows_only: true,
        ..Execution::detected(true)
    };
    with_rhs_operand(b, |b| gemm_with(a, b, c, c_row_stride, options, execution))
}

/// Like `gemm`, but always on the calling thread; for kernels that already run in parallel
/// at a coarser grain (attention over heads, batched matrix products).
pub(crate) fn gemm_sequential(
    a: Lhs<'_>,
    b: Rhs<'_>,
    c: &mut [f32],
    c_row_stride: usize,
    options: &GemmOptions<'_>,
) -> KernelResult<()> {
    with_rhs_operand(b, |b| {
        gemm_with(a, b, c, c_row_stride, options, Execution::detected(false))
    })
}

/// Like `gemm`, with a `depth x cols` B that each task packs from `source`, panel by panel, for
/// the columns it computes; convolution reads its input image this way as its im2col matrix.
pub(crate) fn gemm_from_source(
    a: Lhs<'_>,
    source: &dyn RhsSource,
    depth: usize,
    cols: usize,
    c: &mut [f32],
    c_row_stride: usize,
    options: &GemmOptions<'_>,
) -> KernelResult<()> {
    let b = RhsOperand::Source {
        source,
        depth,
        cols,
    };
    gemm_with(a, b, c, c_row_stride, options, Execution::detected(true))
}

/// Runs `task` with `b` as the driver takes it: a strided matrix becomes a source of panels
/// that the tasks pack for themselves.
fn with_rhs_operand<R>(b: Rhs<'_>, task: impl FnOnce(RhsOperand<'_>) -> R) -> R {
    match b {
        Rhs::Packed(matrix) => task(RhsOperand::Packed(matrix.view(), matrix.cols)),
        Rhs::Matrix(matrix) => task(RhsOperand::Source {
            source: &MatrixSource(matrix),
            depth: matrix.rows,
            cols: matrix.cols,
        }),
    }
}

impl Execution {
    /// The processor's fastest micro-kernel and the default blocking.
    fn detected(parallel: bool) -> Self {
        Self {
            parallel,
            kernel: GemmKernels::detected(),
            source_column_block: SOURCE_NC,
            rows_only: false,
            one_row_kernels: false,
        }
    }
}

/// A right operand `B` (`k x n`) that the caller wrote straight into `PackedMatrix`'s layout
/// (element `(row, column)` at `packed_rhs_index(depth, cols, row, column)`; the padding columns
/// of the last panel may hold anything, as the micro-kernel computes them but never stores
/// them), borrowed: for kernels that produce B themselves (Winograd's transformed
/// input) and would otherwise write it once and pack it once more.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PackedRhsRef<'a> {
    data: &'a [f32],
    depth: usize,
    cols: usize,
}

impl<'a> PackedRhsRef<'a> {
    /// Fails if `data` is shorter than `packed_rhs_length(depth, cols)`.
    pub(crate) fn new(data: &'a [f32], depth: usize, cols: usize) -> KernelResult<Self> {
        crate::error::check_length(
            "gemm",
            "packed B",
            packed_rhs_length(depth, cols),
            data.len().min(packed_rhs_length(depth, cols)),
        )?;
        Ok(Self { data, depth, cols })
    }
}

/// The floats a packed `depth x cols` B takes.
pub(crate) fn packed_rhs_size(depth: usize, cols: usize) -> usize {
    packed_rhs_length(depth, cols)
}

/// Where element `(row, column)` of a packed `depth x cols` B lies: blocks of `KC` rows, each
/// cut into panels of `NR` columns, each panel row-major.
pub(crate) fn packed_rhs_index(depth: usize, cols: usize, row: usize, column: usize) -> usize {
    let panels = cols.div_ceil(NR);
    let block_start = row / KC * KC;
    let block_depth = KC.min(depth - block_start);
    block_start * panels * NR
        + (column / NR) * block_depth * NR
        + (row - block_start) * NR
        + column % NR
}

/// `gemm_sequential` with a B packed by the caller.
pub(crate) fn gemm_sequential_prepacked(
    a: Lhs<'_>,
    b: PackedRhsRef<'_>,
    c: &mut [f32],
    c_row_stride: usize,
    options: &GemmOptions<'_>,
) -> KernelResult<()> {
    let b = RhsOperand::Packed(
        PackedRhsView {
            data: b.data,
            depth: b.depth,
            panels: b.cols.div_ceil(NR),
        },
        b.cols,
    );
    gemm_with(a, b, c, c_row_stride, options, Execution::detected(false))
}

#[cfg(test)]
mod tests;
