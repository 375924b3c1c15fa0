//! The GEMM's driver: cache blocking, the split of C into a grid of rectangles for the thread
//! pool, the packing of B by each task from an `RhsSource` into its per-thread scratch, the
//! selection of the micro-kernel for this processor and the fused epilogue.

use super::packing::{pack_lhs_block, pack_rhs_panel};
use super::tile::{Clamp, GemmKernels, TileEpilogue, TileOutput};
use super::{Bias, GemmOptions, Lhs, MR, MatrixRef, NR, PackedLhsMatrix};
use crate::alloc::AlignedBuffer;
use crate::error::{KernelError, KernelResult, invalid_parameter, shape_mismatch};
use crate::kernels::activation::{Activation, apply_activation_sequential};
use crate::threading;
use std::cell::RefCell;
use std::ops::Range;

/// Depth of one block of the shared dimension: one B panel (`KC x NR`, 24 KiB) stays in L1.
/// 384 rather than 256 keeps the depths of MobileNetV2's projections (384, 576) and the
/// encoders' (384) in one block or two: A read in place up to 384 deep, C written once.
/// gemm_timing, weights streamed (`--copies`), on-CPU GFLOP/s, KC 256 -> 384 (-> 512):
/// 196x384x64 with bias and residual 75 -> 103 (107), 196x576x96 65 -> 79 (65), 128x384x384
/// 92 -> 96; deep products (128x1536x384), convolutions as GEMMs (64x576x3136, 512x512x16),
/// one-row products and 12544x16x96 within 1%.
pub(crate) const KC: usize = 384;
/// Rows of A packed at once: an `MC x KC` block stays in L2.
pub(super) const MC: usize = 144;
/// Columns of a packed-at-load B swept per block: a `KC x NC` block stays in L3.
pub(super) const NC: usize = 4096;
/// Columns of B one task packs at once when B is packed during the call: a `KC x
/// SOURCE_NC` block (256 KiB) stays in L2 from its packing to its last use.
pub(super) const SOURCE_NC: usize = 256;
/// From this many multiply-adds on, a product splits across threads.
pub(super) const PARALLEL_MIN_MULTIPLY_ADDS: usize = 1 << 20;
/// From this many bytes of A, B and C on, a product splits across threads even when it has few
/// multiply-adds: a product of one row with a large weight (a decoding step's projections) is
/// bound by streaming the weight from memory, and two cores stream more than one. 256 KiB takes
/// tens of microseconds to stream, several times what waking the pool costs, and lies past L2,
/// so the weights of small networks, which may stay in cache between calls, keep one thread.
pub(super) const PARALLEL_MIN_BYTES: usize = 1 << 18;
/// Up to this depth, a row-major A is read in place by the micro-kernel instead of being packed
/// per call, each block of `KC` steps from its offset in the rows. Packing cost more than it
/// saved up to four blocks deep: `gemm_timing --copies 16`, one thread, packed against in place
/// (GFLOP/s): MobileNetV2's projections 196x576x96 125 -> 165 and 49x960x160 135 -> 156, the
/// encoder's 128x1536x384 152 -> 154; AVX2 88 -> 103, 89 -> 97 and 98 -> 101; two threads
/// 240 -> 305 on 196x576x96. At one block (the limit before) A is read in place anyway.
pub(super) const ROW_MAJOR_LHS_MAX_DEPTH: usize = 4 * KC;
/// The deepest row-major A that the AVX-512 kernel reads in place when the task grid cuts C's
/// columns, so that packing would be done by every column task over the same rows: ResNet-18's
/// deepest layers, twelve blocks. `gemm_timing --copies 8` at two threads, GFLOP/s packed
/// against in place: 49x4608x512 (its 3x3 512-channel layers, channels-last) 261-263 ->
/// 270-283, 196x2304x256 254-265 -> 309-315; `int8_conv_timing` 3x3 512@7 channels-last
/// 884-923 -> 819-850 us. On one thread packing is paid once and pays (the same layer read in
/// place: 1465 -> 1519 us), and the AVX2 kernel gains nothing at either count (49x4608x512 in
/// place: 107-108 -> 98-104 GFLOP/s at one thread, 200 at two).
pub(super) const ROW_MAJOR_LHS_MAX_DEPTH_COLUMN_CUT_AVX512: usize = 12 * KC;
/// Columns of C a block finishes before the activations that are not clamps run over its rows:
/// `MC x 256` floats (144 KiB) are still in L2 then, and each call of the vectorised loop
/// covers 256 values.
pub(super) const ACTIVATION_GROUP_COLUMNS: usize = 256;

/// How to run one product.
#[derive(Clone, Copy)]
pub(super) struct Execution {
    pub(super) parallel: bool,
    pub(super) kernel: GemmKernels,
    /// Columns of B one task packs at once when B is packed during the call (`SOURCE_NC`,
    /// smaller in tests to cross more blocks).
    pub(super) source_column_block: usize,
    /// Cut C by rows only, one share per thread, where B stays in cache (see
    /// `gemm::gemm_by_rows`).
    pub(super) rows_only: bool,
    /// Run a product of one row on `GemmKernels::for_one_row`'s kernels (see
    /// `gemm::gemm_of_weights`).
    pub(super) one_row_kernels: bool,
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

impl<'a> PackedRhsView<'a> {
    /// Panels `first_panel..first_panel + panel_count` of the block starting at row
    /// `block_start`, which lie next to each other, followed by the rest of the packed B (the
    /// panels a micro-kernel fetches ahead: the block's next panels, then the next block's).
    pub(super) fn panels(
        self,
        block_start: usize,
        block_depth: usize,
        first_panel: usize,
        panel_count: usize,
    ) -> &'a [f32] {
        debug_assert!(first_panel + panel_count <= self.panels);
        debug_assert!(block_start + block_depth <= self.depth);
        let start = block_start * self.panels * NR + first_panel * block_depth * NR;
        debug_assert!(start + panel_count * block_depth * NR <= self.data.len());
        &self.data[start..]
    }
}

/// A right operand B (`k x n`) that the driver packs itself, panel by panel, as each task needs
/// its columns: a strided matrix, or a convolution's input image read as its im2col matrix
/// without that matrix ever being built.
pub(crate) trait RhsSource: Sync {
    /// Packs rows `first_row..first_row + depth` of columns `first_column..first_column +
    /// width` (`width <= NR`) into `panel`, as `packing::pack_rhs_panel` does: `depth` rows of
    /// `NR` floats, the columns past `width` zero.
    fn pack_panel(
        &self,
        first_row: usize,
        depth: usize,
        first_column: usize,
        width: usize,
        panel: &mut [f32],
    );

    /// What packing one `NR`-wide row of a panel costs, in the units of [`task_grid`]'s cost
    /// model (a tile's step costs `TILE_COST`): the model weighs it against the tiles when it
    /// decides whether cutting C's rows, which makes every task pack the same panels, pays.
    fn panel_row_cost(&self) -> usize {
        PANEL_PACKING_COST
    }
}

/// A strided matrix as a source of B's panels.
pub(super) struct MatrixSource<'a>(pub(super) MatrixRef<'a>);

impl RhsSource for MatrixSource<'_> {
    fn pack_panel(
        &self,
        first_row: usize,
        depth: usize,
        first_column: usize,
        width: usize,
        panel: &mut [f32],
    ) {
        pack_rhs_panel(
            self.0,
            first_row,
            first_column,
            width,
            &mut panel[..depth * NR],
        );
    }
}

/// Where the driver gets B's panels from.
#[derive(Clone, Copy)]
pub(super) enum RhsPanels<'a> {
    Packed(PackedRhsView<'a>),
    Source(&'a dyn RhsSource),
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
    rhs: RhsPanels<'a>,
    /// Columns of B packed, or swept, at once by one task.
    column_block: usize,
    c: OutputPointer,
    c_row_stride: usize,
    accumulate: bool,
    bias: Option<Bias<'a>>,
    /// Laid out like C.
    residual: Option<&'a [f32]>,
    activation: Option<Activation>,
    kernel: GemmKernels,
    /// The deepest row-major A read in place (`ROW_MAJOR_LHS_MAX_DEPTH`, or more when the task
    /// grid cuts the columns: `run_product`).
    lhs_in_place_max_depth: usize,
}

thread_local! {
    static LHS_SCRATCH: RefCell<AlignedBuffer> = RefCell::new(AlignedBuffer::default());
    static RHS_SCRATCH: RefCell<AlignedBuffer> = RefCell::new(AlignedBuffer::default());
}

/// Runs `task` with a per-thread scratch buffer of `length` elements, or a fresh one if this
/// thread's buffer is already in use further up the stack.
pub(crate) fn with_scratch<R>(
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

/// Where `gemm_with` gets B from: packed beforehand (at load time as a `PackedMatrix`, or by the
/// caller as a `PackedRhsRef`), with its number of columns, or packed panel by panel from a
/// source while the product runs.
#[derive(Clone, Copy)]
pub(super) enum RhsOperand<'a> {
    Packed(PackedRhsView<'a>, usize),
    Source {
        source: &'a dyn RhsSource,
        depth: usize,
        cols: usize,
    },
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
        RhsOperand::Packed(view, cols) => (view.depth, cols),
        RhsOperand::Source { depth, cols, .. } => (depth, cols),
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
    let (rhs, column_block) = match b {
        RhsOperand::Packed(view, _) => (RhsPanels::Packed(view), NC),
        RhsOperand::Source { source, .. } => {
            (RhsPanels::Source(source), execution.source_column_block)
        }
    };
    let product = Product {
        rows,
        depth,
        cols,
        lhs,
        rhs,
        column_block,
        c: OutputPointer(c.as_mut_ptr()),
        c_row_stride,
        accumulate: options.accumulate,
        bias,
        residual: options.residual,
        activation,
        kernel: if execution.one_row_kernels && rows == 1 {
            execution.kernel.for_one_row()
        } else {
            execution.kernel
        },
        lhs_in_place_max_depth: ROW_MAJOR_LHS_MAX_DEPTH,
    };
    run_product(&product, execution.parallel, execution.rows_only);
    Ok(())
}

/// Splits C into a grid of rectangles and runs them, in parallel when that pays; with
/// `rows_only`, into one share of the rows per thread.
pub(super) fn run_product(product: &Product<'_>, parallel: bool, rows_only: bool) {
    let threads = if parallel {
        threading::parallel_width()
    } else {
        1
    };
    if !worth_splitting(product, threads) {
        run_rectangle(product, 0..product.rows, 0..product.cols);
        return;
    }
    let row_panels = product.rows.div_ceil(MR);
    let column_panels = product.cols.div_ceil(NR);
    let packing = GridPacking {
        rhs_cost: match product.rhs {
            RhsPanels::Source(source) => source.panel_row_cost(),
            RhsPanels::Packed(_) => 0,
        },
        lhs: lhs_access(product),
    };
    // Cut by rows, every task reads all of B: only a B that stays in cache (not ResNet-18's
    // channels-last 512-channel layers, 9.4 MB of weights on 49 pixels).
    let b_bytes = product.depth * product.cols * std::mem::size_of::<f32>();
    let grid = if rows_only && row_panels >= threads && b_bytes <= PREPACKED_CACHED_BYTES {
        TaskGrid {
            row_tasks: threads,
            column_tasks: 1,
        }
    } else {
        task_grid(row_panels, column_panels, threads, packing)
    };
    // Each column task would pack the same rows of A: read them in place instead where the
    // kernel gains from it (which only makes the grid's column tasks cheaper).
    let product = &Product {
        lhs_in_place_max_depth: if grid.column_tasks > 1 {
            product
                .lhs_in_place_max_depth
                .max(product.kernel.row_major_a_max_depth_column_cut)
        } else {
            product.lhs_in_place_max_depth
        },
        ..*product
    };
    // A packed A is cut between its panels; any other at any row.
    let row_step = match product.lhs {
        LhsSource::Packed(_) => MR,
        LhsSource::Matrix(_) => 1,
    };
    threading::run_tasks(grid.row_tasks * grid.column_tasks, |task| {
        let (row_task, column_task) = (task / grid.column_tasks, task % grid.column_tasks);
        let rows = row_share(product.rows, grid.row_tasks, row_task, row_step);
        let column_panels = even_share(column_panels, grid.column_tasks, column_task);
        let cols = column_panels.start * NR..(column_panels.end * NR).min(product.cols);
        if !rows.is_empty() && !cols.is_empty() {
            run_rectangle(product, rows, cols);
        }
    });
}

/// Whether `product` is worth splitting across `threads` threads: it has enough arithmetic
/// (`PARALLEL_MIN_MULTIPLY_ADDS`) or moves enough memory (`PARALLEL_MIN_BYTES`), and more than
/// one panel to share. For one row of A, `task_grid` cuts only the columns, so each task streams
/// its own contiguous panels of a packed B.
fn worth_splitting(product: &Product<'_>, threads: usize) -> bool {
    if threads <= 1 || (product.rows <= MR && product.cols <= NR) {
        return false;
    }
    let multiply_adds = product
        .rows
        .saturating_mul(product.cols)
        .saturating_mul(product.depth);
    let floats = product
        .depth
        .saturating_mul(product.cols)
        .saturating_add(product.rows.saturating_mul(product.depth))
        .saturating_add(product.rows.saturating_mul(product.cols));
    let bytes = floats.saturating_mul(std::mem::size_of::<f32>());
    multiply_adds >= PARALLEL_MIN_MULTIPLY_ADDS || bytes >= PARALLEL_MIN_BYTES
}

/// How many ways C is cut along its rows and along its columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct TaskGrid {
    pub(super) row_tasks: usize,
    pub(super) column_tasks: usize,
}

/// Which operands each task of a product packs or streams itself (see [`task_grid`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct GridPacking {
    /// The cost of packing a row of a B panel (`RhsSource::panel_row_cost`) when B comes as a
    /// source, so that each task packs the B panels of its own columns; 0 when B came packed.
    pub(super) rhs_cost: usize,
    /// How each task gets the A panels of its own rows.
    pub(super) lhs: LhsAccess,
}

/// How `run_rectangle` reads A's rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LhsAccess {
    /// Packed once at load (a convolution's weights), small enough to stay in a core's cache
    /// from one task to the next.
    Prepacked,
    /// Packed once at load, but larger than `PREPACKED_CACHED_BYTES`: each task streams its rows'
    /// panels from memory.
    PrepackedStreamed,
    /// A row-major matrix read in place: each task streams its rows from memory.
    InPlace,
    /// A matrix each task packs (the rows of its share) before using it.
    PackedPerTask,
}

/// How `run_rectangle` reads A: in place when it is a row-major matrix no deeper than
/// `lhs_in_place_max_depth`, else packed by each task, unless it came packed.
fn lhs_access(product: &Product<'_>) -> LhsAccess {
    match product.lhs {
        LhsSource::Matrix(matrix)
            if matrix.column_stride == 1 && product.depth <= product.lhs_in_place_max_depth =>
        {
            LhsAccess::InPlace
        }
        LhsSource::Matrix(_) => LhsAccess::PackedPerTask,
        LhsSource::Packed(matrix) if matrix.rows * matrix.depth * 4 > PREPACKED_CACHED_BYTES => {
            LhsAccess::PrepackedStreamed
        }
        LhsSource::Packed(_) => LhsAccess::Prepacked,
    }
}

/// The largest packed A (bytes) that `task_grid` takes to stay in cache between tasks. A larger
/// one comes from memory for each task that reads it: ResNet-18's 512-channel 3x3 layers on 7x7
/// images (9.4 MB of weights, 49 pixels) were cut by columns, so that each of two threads read
/// all the weights, and ran 1.4 ms on two threads against ONNX Runtime's 0.8.
const PREPACKED_CACHED_BYTES: usize = 1 << 20;

/// The relative cost of one `MR x NR` tile for one step of the shared dimension, of packing one
/// `NR`-wide row of a B panel, of packing one `MR`-tall column of an A panel, and of streaming
/// one from memory: a tile step is `2 * MR` FMAs (six cycles at two a cycle), a packed B row two
/// loads and two stores, or a short gather for a convolution, a packed A column a gather of `MR`
/// values from `MR` rows, and a streamed one `MR` values from `MR` rows into cache.
const TILE_COST: usize = 4;
pub(super) const PANEL_PACKING_COST: usize = 1;
const LHS_PANEL_PACKING_COST: usize = 2;
const LHS_PANEL_STREAMING_COST: usize = 1;

/// Picks the grid of tasks that finishes soonest on `threads` threads, counting that every task
/// packs the B panels of its own columns when B is packed during the call (so cutting the rows
/// packs B more than once) and the A panels of its own rows when A is (so cutting the columns
/// packs A more than once: a 1x1 convolution deeper than `ROW_MAJOR_LHS_MAX_DEPTH` in
/// channels-last, MobileNetV2's projections, cut into one task per 16 output channels packed
/// its whole input once per task) or streams them from memory when A is read in place (so a
/// column cut streams A more than once, and each task writes a strip of every row of C rather
/// than rows of its own: MobileNetV2's 16 to 96 channel expansion on 112x112 pixels got slower
/// on two threads cut by columns), that a task is the unit of scheduling (so the slowest round
/// decides), and that panels are shared out as evenly as whole panels allow. Ties go to fewer
/// row cuts, then to more tasks, which lets work stealing even out a core that another process
/// holds.
pub(super) fn task_grid(
    row_panels: usize,
    column_panels: usize,
    threads: usize,
    packing: GridPacking,
) -> TaskGrid {
    let packing_cost = packing.rhs_cost;
    let lhs_packing_cost = match packing.lhs {
        LhsAccess::Prepacked => 0,
        LhsAccess::InPlace | LhsAccess::PrepackedStreamed => LHS_PANEL_STREAMING_COST,
        LhsAccess::PackedPerTask => LHS_PANEL_PACKING_COST,
    };
    let max_tasks = 4 * threads;
    let mut best = TaskGrid {
        row_tasks: 1,
        column_tasks: 1,
    };
    let mut best_key = (usize::MAX, usize::MAX, 0);
    for column_tasks in 1..=column_panels.min(max_tasks) {
        for row_tasks in 1..=row_panels.min(max_tasks / column_tasks) {
            let tasks = row_tasks * column_tasks;
            let task_rows = row_panels.div_ceil(row_tasks);
            let task_cost = column_panels.div_ceil(column_tasks)
                * (task_rows * TILE_COST + packing_cost)
                + task_rows * lhs_packing_cost;
            let finish = tasks.div_ceil(threads) * task_cost;
            let key = (finish, row_tasks, usize::MAX - tasks);
            if key < best_key {
                best_key = key;
                best = TaskGrid {
                    row_tasks,
                    column_tasks,
                };
            }
        }
    }
    best
}

/// Share `index` of `count` near-equal shares of `0..total` (they differ by at most one).
pub(super) fn even_share(total: usize, count: usize, index: usize) -> Range<usize> {
    total * index / count..total * (index + 1) / count
}

/// Share `index` of `rows` cut `count` ways at multiples of `step` (`MR` for an A packed in
/// panels of `MR` rows, 1 for one each task reads or packs from any row): each cut the multiple
/// nearest to an equal share of the rows, not of the panels, keeping a panel for every share
/// while there are enough. An even share of the panels gave the one ending in a short panel too
/// little: MobileNetV2's 7x7 images (49 pixels, 9 panels, the last of one row) went 30 and 19
/// rows to two threads, not 24 and 25. Cut at multiples of `MR`, the encoder's 128 rows went 66
/// and 62 to two threads, and the second waited for the first at every product.
pub(super) fn row_share(rows: usize, count: usize, index: usize, step: usize) -> Range<usize> {
    let panels = rows.div_ceil(step);
    // The first panel of share `share`.
    let cut = |share: usize| {
        (1..=share.min(count)).fold(0, |previous: usize, share| {
            if share == count {
                return panels;
            }
            let nearest = (2 * rows * share + count * step) / (2 * count * step);
            let latest = panels.saturating_sub(count - share);
            nearest.min(latest).max(previous + 1).min(panels)
        })
    };
    (cut(index) * step).min(rows)..(cut(index + 1) * step).min(rows)
}

/// Computes one rectangle of C: the BLIS loops around the micro-kernel. For each chunk of the
/// rectangle's columns and each block of the shared dimension, B's panels of those columns are
/// packed once (unless B came packed) and then swept by every block of A's rows. A row-major A
/// (column stride 1) no deeper than `lhs_in_place_max_depth` is not packed: the micro-kernel
/// reads its rows in place. `rows.start` is a multiple of `MR` where A came packed, and
/// `cols.start` a multiple of `NR`.
pub(super) fn run_rectangle(product: &Product<'_>, rows: Range<usize>, cols: Range<usize>) {
    let row_major_lhs = match product.lhs {
        LhsSource::Matrix(matrix)
            if matrix.column_stride == 1 && product.depth <= product.lhs_in_place_max_depth =>
        {
            Some(matrix)
        }
        _ => None,
    };
    let block_rows = MC.min(rows.len().div_ceil(MR) * MR);
    let lhs_scratch_length = match product.lhs {
        LhsSource::Matrix(_) if row_major_lhs.is_none() => block_rows * KC.min(product.depth),
        LhsSource::Matrix(_) | LhsSource::Packed(_) => 0,
    };
    let rhs_scratch_length = match product.rhs {
        RhsPanels::Source(_) => {
            KC.min(product.depth) * product.column_block.min(cols.len()).div_ceil(NR) * NR
        }
        RhsPanels::Packed(_) => 0,
    };
    with_scratch(&LHS_SCRATCH, lhs_scratch_length, |lhs_scratch| {
        with_scratch(&RHS_SCRATCH, rhs_scratch_length, |rhs_scratch| {
            for column_block in (cols.start..cols.end).step_by(product.column_block) {
                let column_block =
                    column_block..(column_block + product.column_block).min(cols.end);
                let panel_count = column_block.len().div_ceil(NR);
                for block_start in (0..product.depth).step_by(KC) {
                    let block_depth = KC.min(product.depth - block_start);
                    let rhs_block: &[f32] = match product.rhs {
                        RhsPanels::Packed(view) => view.panels(
                            block_start,
                            block_depth,
                            column_block.start / NR,
                            panel_count,
                        ),
                        RhsPanels::Source(source) => {
                            let block = &mut rhs_scratch[..panel_count * block_depth * NR];
                            for (panel, first_column) in block
                                .chunks_exact_mut(block_depth * NR)
                                .zip(column_block.clone().step_by(NR))
                            {
                                let width = NR.min(product.cols - first_column);
                                source.pack_panel(
                                    block_start,
                                    block_depth,
                                    first_column,
                                    width,
                                    panel,
                                );
                            }
                            block
                        }
                    };
                    for row_block in (rows.start..rows.end).step_by(MC) {
                        let row_block = row_block..(row_block + MC).min(rows.end);
                        let lhs_block = match (row_major_lhs, product.lhs) {
                            (Some(matrix), _) => LhsBlock::RowMajor(matrix),
                            (None, LhsSource::Matrix(matrix)) => {
                                let length = row_block.len().div_ceil(MR) * MR * block_depth;
                                let block = &mut lhs_scratch[..length];
                                pack_lhs_block(
                                    matrix,
                                    row_block.clone(),
                                    block_start,
                                    block_depth,
                                    block,
                                );
                                LhsBlock::Packed(block)
                            }
                            (None, LhsSource::Packed(matrix)) => {
                                let panels = matrix.rows.div_ceil(MR);
                                let start =
                                    block_start * panels * MR + row_block.start * block_depth;
                                let length = row_block.len().div_ceil(MR) * MR * block_depth;
                                debug_assert!(start + length <= matrix.data.as_slice().len());
                                // With the panels after the block's, which its last tiles
                                // fetch ahead (the next block of rows).
                                LhsBlock::Packed(&matrix.data.as_slice()[start..])
                            }
                        };
                        run_block(
                            product,
                            lhs_block,
                            rhs_block,
                            row_block,
                            column_block.clone(),
                            block_start,
                            block_depth,
                        );
                    }
                }
            }
        })
    });
}

/// Where `run_block` reads the rows of A.
#[derive(Clone, Copy)]
pub(super) enum LhsBlock<'a> {
    /// The block's rows packed into panels of `MR` rows and `block_depth` steps each, followed
    /// by any panels the micro-kernel may fetch ahead.
    Packed(&'a [f32]),
    /// A row-major A itself (column stride 1), read in place from column `block_start`.
    RowMajor(MatrixRef<'a>),
}

/// The two innermost loops: every tile of one block of A against every panel of one packed B
/// block (the panels of `column_block`, at the start of `rhs_block`; the panels after them in
/// `rhs_block` are only fetched ahead). On the last block of k the micro-kernel applies the
/// biases, the residual and a clamp activation as it stores each tile; any other activation
/// runs afterwards over the rows of each group of `ACTIVATION_GROUP_COLUMNS` columns, while they
/// are still in cache.
pub(super) fn run_block(
    product: &Product<'_>,
    lhs: LhsBlock<'_>,
    rhs_block: &[f32],
    row_block: Range<usize>,
    column_block: Range<usize>,
    block_start: usize,
    block_depth: usize,
) {
    debug_assert!(rhs_block.len() >= column_block.len().div_ceil(NR) * block_depth * NR);
    let first_block = block_start == 0;
    let last_block = block_start + block_depth == product.depth;
    let accumulate = product.accumulate || !first_block;
    let (clamp, row_activation) = if last_block {
        Clamp::split(product.activation)
    } else {
        (Clamp::None, None)
    };
    for group_start in column_block.clone().step_by(ACTIVATION_GROUP_COLUMNS) {
        let group = group_start..(group_start + ACTIVATION_GROUP_COLUMNS).min(column_block.end);
        let strip_columns = product.kernel.strip_panels * NR;
        for first_column in group.clone().step_by(strip_columns) {
            let width = strip_columns.min(group.end - first_column);
            let panel_index = (first_column - column_block.start) / NR;
            // The strip's panels and those after them, which its kernel fetches ahead.
            let rhs_panel = &rhs_block[panel_index * block_depth * NR..];
            // One call computes the whole strip of the row block under this panel of B.
            let offset = row_block.start * product.c_row_stride + first_column;
            let epilogue = if last_block {
                TileEpilogue {
                    column_bias: match product.bias {
                        Some(Bias::PerColumn(values)) => Some(&values[first_column..]),
                        _ => None,
                    },
                    row_bias: match product.bias {
                        Some(Bias::PerRow(values)) => Some(&values[row_block.start..]),
                        _ => None,
                    },
                    residual: product.residual.map(|residual| &residual[offset..]),
                    clamp,
                }
            } else {
                TileEpilogue::default()
            };
            let output = TileOutput {
                // SAFETY: The offset of the strip's first element lies inside C (checked
                // against `c.len()` in `gemm_with`).
                c: unsafe { product.c.0.add(offset) },
                c_row_stride: product.c_row_stride,
                rows: row_block.len(),
                cols: width,
                accumulate,
                epilogue,
            };
            match lhs {
                LhsBlock::Packed(block) => {
                    // SAFETY: The strip `row_block` x `first_column..first_column + width` lies
                    // inside C and inside this task's rectangle, so no other task touches it;
                    // the block holds the strip's panels of `block_depth` steps and the B panel
                    // `block_depth` steps; the bias slices start at the strip and the residual,
                    // as long as C (checked in `gemm_with`), at the strip's first element; and
                    // the kernels come from `GemmKernels`, which checks the processor.
                    unsafe { (product.kernel.packed_a)(block_depth, block, rhs_panel, &output) };
                }
                LhsBlock::RowMajor(matrix) => {
                    let a = &matrix.data[row_block.start * matrix.row_stride + block_start..];
                    // SAFETY: As above; A's rows `row_block`, columns `block_start..block_start
                    // + block_depth` lie inside `matrix.data` (`MatrixRef::new` checked its
                    // extent) and its column stride is 1.
                    unsafe {
                        (product.kernel.row_major_a)(
                            block_depth,
                            a,
                            matrix.row_stride,
                            rhs_panel,
                            &output,
                        )
                    };
                }
            }
        }
        if let Some(activation) = row_activation {
            for row in row_block.clone() {
                // SAFETY: Row `row`, columns `group`, are elements of C inside this task's
                // rectangle (as above), and no other reference to them exists while this one
                // lives.
                let c_row = unsafe {
                    std::slice::from_raw_parts_mut(
                        product.c.0.add(row * product.c_row_stride + group.start),
                        group.len(),
                    )
                };
                apply_activation_sequential(c_row, activation);
            }
        }
    }
}

/// Adds the bias and then the residual to, then applies the activation on, a piece of row `row`
/// of C that starts at column `first_column`; `residual` is the matching piece of the residual.
/// Only an empty product (`k = 0`) needs it: the micro-kernels apply the epilogue otherwise.
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
    if let Some(activation) = activation {
        apply_activation_sequential(c_row, activation);
    }
}
