//! The u8 x s8 -> i32 GEMM with a fused f32 epilogue: `C = epilogue(A * B)` for a row-major u8
//! `A` (`rows x k`, rows `a_stride` bytes apart) and int8 weights `B` (`k x cols`) packed once.
//!
//! `B` is stored in panels of [`NR`] columns; within a panel, each group of [`K_GROUP`] steps of
//! k is 64 bytes, four consecutive k of column 0, then of column 1, and so on: one `vpdpbusd`
//! operand. `k` is padded to a multiple of 4 with zero weights and columns to a multiple of 16
//! with zero columns, so the micro-kernels never see a tail of either; `A`'s rows must then hold
//! `k` rounded up to 4 bytes (the extra bytes meet zero weights, so their value does not matter).
//!
//! The kernels sum `x_q * w_q`; the zero point comes out in the epilogue with the per-column
//! sums of the weights: `sum((x_q - zp) * w_q) = sum(x_q * w_q) - zp * sum(w_q)`, all exact in
//! i32 for `k <= MAX_DEPTH`.
//!
//! Work is split into rectangles of C over the shared pool, as many as keep every thread busy
//! ([`task_grid`]); inside one, columns are cut into blocks whose packed weights fit in L2, and
//! each block is swept by tiles of [`MR`] rows and two panels.

use super::kernels::{self, ByteTile, FloatTile, TILE_COLS, TileOperands, TileScratch};
use super::quantize::quantize_slice;
use super::{ActivationQuantization, Int8Isa};
use crate::alloc::AlignedBuffer;
use crate::kernels::activation::{Activation, apply_activation_sequential};
use crate::kernels::gemm::Clamp;
use crate::threading;

/// Columns of one packed panel (one zmm register of i32 sums).
pub(crate) const NR: usize = 16;
/// Rows of one micro-kernel tile.
pub(crate) const MR: usize = 6;
/// Steps of k that one i32 lane sums per instruction.
pub(crate) const K_GROUP: usize = 4;
/// The deepest product whose sums cannot overflow i32: `2 * 255 * 127 * 32768 < 2^31`.
pub(crate) const MAX_DEPTH: usize = 32768;

/// Int8 weights `B` (`k x cols`), quantized per column and packed, with what the epilogue needs.
#[derive(Clone, Debug)]
pub(crate) struct PackedInt8Weights {
    depth: usize,
    pub(crate) cols: usize,
    /// `[panel][group][column in panel][K_GROUP]`, on a cache line (a group of a panel is 64
    /// bytes, one line).
    data: AlignedBuffer<i8>,
    /// `s_w[c]`, the scale of each column.
    scales: Vec<f32>,
    /// `zero_point * sum_k q[k][c]`, taken off each column's sum.
    zero_point_corrections: Vec<i32>,
    /// `s_x * s_w[c]`: the real value of one unit of a column's corrected sum.
    output_scales: Vec<f32>,
    /// The bias of each column (zeros without one).
    bias: Vec<f32>,
}

impl PackedInt8Weights {
    /// Quantizes and packs `cols` filters of `depth` values each (`filters[c * depth + k]` is
    /// `B[k][c]`), for inputs quantized with `input_scale` and `input_zero_point`. `depth` must
    /// be at most `MAX_DEPTH` (the caller checks).
    pub(crate) fn new(
        filters: &[f32],
        cols: usize,
        depth: usize,
        bias: Option<&[f32]>,
        input_scale: f32,
        input_zero_point: u8,
    ) -> Self {
        debug_assert!(depth <= MAX_DEPTH && filters.len() == cols * depth);
        let groups = depth.div_ceil(K_GROUP);
        let panels = cols.div_ceil(NR);
        let mut data = AlignedBuffer::zeroed(panels * groups * NR * K_GROUP);
        let mut scales = Vec::with_capacity(cols);
        let mut zero_point_corrections = Vec::with_capacity(cols);
        for (column, filter) in filters.chunks_exact(depth).enumerate() {
            let (scale, quantized) = quantize_filter(filter);
            let (panel, lane) = (column / NR, column % NR);
            for (step, &value) in quantized.iter().enumerate() {
                let (group, within) = (step / K_GROUP, step % K_GROUP);
                data[((panel * groups + group) * NR + lane) * K_GROUP + within] = value;
            }
            let sum: i32 = quantized.iter().map(|&value| i32::from(value)).sum();
            scales.push(scale);
            zero_point_corrections.push(i32::from(input_zero_point) * sum);
        }
        let output_scales = scales.iter().map(|&scale| input_scale * scale).collect();
        Self {
            depth,
            cols,
            data,
            scales,
            zero_point_corrections,
            output_scales,
            bias: bias.map_or_else(|| vec![0.0; cols], <[f32]>::to_vec),
        }
    }

    /// `k` rounded up to a whole group: the bytes each row of A must hold.
    pub(crate) fn padded_depth(&self) -> usize {
        self.depth.next_multiple_of(K_GROUP)
    }

    /// Bytes of the stored weights: the int8 values (padding included), the scales, the zero
    /// point corrections and the biases.
    pub(crate) fn bytes(&self) -> usize {
        self.data.len()
            + 4 * (self.scales.len()
                + self.zero_point_corrections.len()
                + self.output_scales.len()
                + self.bias.len())
    }

    fn groups(&self) -> usize {
        self.depth.div_ceil(K_GROUP)
    }

    fn panels(&self) -> usize {
        self.cols.div_ceil(NR)
    }

    fn panel(&self, panel: usize) -> &[i8] {
        let length = self.groups() * NR * K_GROUP;
        &self.data[panel * length..][..length]
    }
}

/// Symmetric quantization of one output channel's weights: `scale = max |w| / 127` (1 if all
/// are zero), `q = clamp(round(w / scale), -127, 127)`, ties to even as NumPy rounds.
pub(crate) fn quantize_filter(filter: &[f32]) -> (f32, Vec<i8>) {
    let largest = filter
        .iter()
        .fold(0.0f32, |largest, &w| largest.max(w.abs()));
    let scale = if largest > 0.0 && largest.is_finite() {
        largest / 127.0
    } else {
        1.0
    };
    let quantized = filter
        .iter()
        .map(|&w| (w / scale).round_ties_even().clamp(-127.0, 127.0) as i8)
        .collect();
    (scale, quantized)
}

/// A row-major u8 left operand: `rows` rows of `PackedInt8Weights::padded_depth` bytes, `stride`
/// bytes apart.
#[derive(Clone, Copy)]
pub(crate) struct Int8Lhs<'a> {
    pub(crate) data: &'a [u8],
    pub(crate) rows: usize,
    pub(crate) stride: usize,
}

/// What the epilogue adds after the scale and bias: a residual shaped like C, and an activation.
#[derive(Clone, Copy, Default)]
pub(crate) struct Int8Epilogue<'a> {
    pub(crate) residual: Option<&'a [f32]>,
    pub(crate) activation: Option<Activation>,
}

/// Where a GEMM's results go: f32 values, row-major `rows x cols`; or bytes quantized for the
/// next int8 layer, `rows` rows of `row_stride >= cols` bytes (the bytes past `cols` are left as
/// they are: they meet zero weights in that layer).
pub(crate) enum GemmOutput<'a> {
    Float(&'a mut [f32]),
    Quantized {
        bytes: &'a mut [u8],
        row_stride: usize,
        quantization: ActivationQuantization,
    },
}

impl GemmOutput<'_> {
    /// Rows `first..first + count` of an output of `cols` columns.
    pub(crate) fn rows(&mut self, first: usize, count: usize, cols: usize) -> GemmOutput<'_> {
        match self {
            GemmOutput::Float(values) => {
                GemmOutput::Float(&mut values[first * cols..][..count * cols])
            }
            GemmOutput::Quantized {
                bytes,
                row_stride,
                quantization,
            } => GemmOutput::Quantized {
                bytes: &mut bytes[first * *row_stride..][..count * *row_stride],
                row_stride: *row_stride,
                quantization: *quantization,
            },
        }
    }
}

/// `output = epilogue(s_x * s_w[c] * (A * B - zp * colsum) + bias)`, on the pool. A quantized
/// output takes no residual.
pub(crate) fn int8_gemm(
    isa: Int8Isa,
    lhs: Int8Lhs<'_>,
    weights: &PackedInt8Weights,
    epilogue: Int8Epilogue<'_>,
    output: GemmOutput<'_>,
) {
    assert!(
        lhs.stride >= weights.padded_depth()
            && (lhs.rows == 0
                || lhs.data.len() >= (lhs.rows - 1) * lhs.stride + weights.padded_depth()),
        "int8_gemm: the left operand has the wrong size"
    );
    let clamp = epilogue.activation.and_then(Clamp::of);
    let other_activation = epilogue
        .activation
        .filter(|activation| Clamp::of(*activation).is_none());
    match output {
        GemmOutput::Float(output) => {
            assert!(
                output.len() == lhs.rows * weights.cols
                    && epilogue
                        .residual
                        .is_none_or(|residual| residual.len() == output.len()),
                "int8_gemm: the output or the residual has the wrong size"
            );
            let sink = FloatSink {
                output: SharedOutput(output.as_mut_ptr()),
                weights,
                residual: epilogue.residual,
                clamp,
                other_activation,
            };
            run_grid(isa, lhs, weights, &sink);
        }
        GemmOutput::Quantized {
            bytes,
            row_stride,
            quantization,
        } => {
            assert!(
                epilogue.residual.is_none()
                    && row_stride >= weights.cols
                    && (lhs.rows == 0 || bytes.len() >= (lhs.rows - 1) * row_stride + weights.cols),
                "int8_gemm: the quantized output has the wrong size, or a residual"
            );
            let sink = QuantizedSink {
                bytes: SharedBytes(bytes.as_mut_ptr()),
                row_stride,
                quantization,
                weights,
                clamp,
                other_activation,
            };
            run_grid(isa, lhs, weights, &sink);
        }
    }
}

/// The raw sums `A * B` (no zero point, scale or bias) into `sums`, row-major `rows x cols`: for
/// tests, which hold them to an exact reference.
#[cfg(test)]
pub(crate) fn int8_gemm_sums(
    isa: Int8Isa,
    lhs: Int8Lhs<'_>,
    weights: &PackedInt8Weights,
    sums: &mut [i32],
) {
    assert_eq!(sums.len(), lhs.rows * weights.cols);
    let sink = SumSink {
        sums: SharedSums(sums.as_mut_ptr()),
        cols: weights.cols,
    };
    run_grid(isa, lhs, weights, &sink);
}

/// Where the tiles' sums go.
trait TileSink: Sync {
    /// The most rows one `run_tile` call takes: `MR`, or more for a sink that runs a strip of
    /// tiles in one call.
    fn strip_rows(&self) -> usize {
        MR
    }

    /// Computes the tile (or strip of tiles) of `operands` and consumes its sums:
    /// `operands.rows <= strip_rows()` rows from `first_row` and `cols <= TILE_COLS` columns
    /// from `first_col`. Rectangles of different calls never overlap. `scratch` is the task's,
    /// made for this GEMM (the AMX blocks keep the depth's tail in it from call to call).
    fn run_tile(
        &self,
        isa: Int8Isa,
        operands: TileOperands<'_>,
        first_row: usize,
        first_col: usize,
        cols: usize,
        scratch: &mut TileScratch,
    );
}

/// The i32 sums of one tile, `MR x TILE_COLS`.
pub(crate) type Tile = [i32; MR * TILE_COLS];

/// A pointer to C, which tasks write in disjoint rectangles.
struct SharedOutput(*mut f32);
// SAFETY: Tasks write disjoint rectangles of the output through it (see `run_grid`), and the
// output stays mutably borrowed by `int8_gemm` until every task has finished.
unsafe impl Sync for SharedOutput {}

/// A pointer to a quantized output, which tasks write in disjoint rectangles.
struct SharedBytes(*mut u8);
// SAFETY: As `SharedOutput`, for `GemmOutput::Quantized`.
unsafe impl Sync for SharedBytes {}

#[cfg(test)]
struct SharedSums(*mut i32);
// SAFETY: As `SharedOutput`, for `int8_gemm_sums`.
#[cfg(test)]
unsafe impl Sync for SharedSums {}

struct FloatSink<'a> {
    output: SharedOutput,
    weights: &'a PackedInt8Weights,
    residual: Option<&'a [f32]>,
    clamp: Option<Clamp>,
    other_activation: Option<Activation>,
}

impl TileSink for FloatSink<'_> {
    fn strip_rows(&self) -> usize {
        MAX_STRIP_ROWS
    }

    fn run_tile(
        &self,
        isa: Int8Isa,
        operands: TileOperands<'_>,
        first_row: usize,
        first_col: usize,
        cols: usize,
        scratch: &mut TileScratch,
    ) {
        let total_cols = self.weights.cols;
        let rows = operands.rows;
        let columns = first_col..first_col + cols;
        let offset = first_row * total_cols + first_col;
        let residual = self.residual.map(|residual| {
            // The tile's rectangle of the residual, which is shaped like the output.
            &residual[offset..][..(rows - 1) * total_cols + cols]
        });
        let float = FloatTile {
            corrections: &self.weights.zero_point_corrections[columns.clone()],
            scales: &self.weights.output_scales[columns.clone()],
            bias: &self.weights.bias[columns],
            residual,
            // SAFETY: The tile's rectangle, rows `first_row..first_row + rows` and columns
            // `first_col..first_col + cols`, lies inside the `rows x cols` output (the driver
            // hands out tiles inside it), and no other task writes it.
            output: unsafe { self.output.0.add(offset) },
            stride: total_cols,
            clamp: self.clamp.unwrap_or_default(),
            bytes: None,
        };
        // SAFETY: As above: `float.output` is the tile's rectangle, `rows` rows of `cols`
        // values `stride` apart, written by this task alone.
        unsafe { kernels::strip_to_output(isa, operands, &float, scratch) };
        if let Some(activation) = self.other_activation {
            for row in 0..rows {
                // SAFETY: Row `row` of the tile's rectangle, as above.
                let output = unsafe {
                    std::slice::from_raw_parts_mut(float.output.add(row * total_cols), cols)
                };
                apply_activation_sequential(output, activation);
            }
        }
    }
}

/// The sink of a quantized output: each tile's f32 results, computed by the same epilogue as
/// `FloatSink`'s, quantized into the bytes (in the tile kernel, or through a buffer on the stack
/// when a non-clamp activation runs on the f32 values first). The bytes are those the next layer
/// would make of `FloatSink`'s output.
struct QuantizedSink<'a> {
    bytes: SharedBytes,
    row_stride: usize,
    quantization: ActivationQuantization,
    weights: &'a PackedInt8Weights,
    clamp: Option<Clamp>,
    other_activation: Option<Activation>,
}

impl TileSink for QuantizedSink<'_> {
    fn strip_rows(&self) -> usize {
        // Other activations run tile by tile, through a tile of f32 values.
        if self.other_activation.is_none() {
            MAX_STRIP_ROWS
        } else {
            MR
        }
    }

    fn run_tile(
        &self,
        isa: Int8Isa,
        operands: TileOperands<'_>,
        first_row: usize,
        first_col: usize,
        cols: usize,
        scratch: &mut TileScratch,
    ) {
        let rows = operands.rows;
        let columns = first_col..first_col + cols;
        let corrections = &self.weights.zero_point_corrections[columns.clone()];
        let scales = &self.weights.output_scales[columns.clone()];
        let bias = &self.weights.bias[columns];
        let clamp = self.clamp.unwrap_or_default();
        if self.other_activation.is_none() {
            // The epilogue quantizes in the tile kernel, straight into the bytes.
            let float = FloatTile {
                corrections,
                scales,
                bias,
                residual: None,
                output: std::ptr::null_mut(),
                stride: 0,
                clamp,
                bytes: Some(ByteTile {
                    // SAFETY: Row `first_row`, column `first_col` of the quantized output,
                    // inside it (`int8_gemm` checked its size for every row of A, and the
                    // driver hands out tiles inside `rows x cols`).
                    output: unsafe { self.bytes.0.add(first_row * self.row_stride + first_col) },
                    stride: self.row_stride,
                    quantization: self.quantization,
                }),
            };
            // SAFETY: The tile's rectangle of the bytes, as above, is written by this task
            // alone.
            unsafe { kernels::strip_to_output(isa, operands, &float, scratch) };
            return;
        }
        // Other activations run on the f32 results, in a buffer on the stack.
        let mut values = [0.0f32; MR * TILE_COLS];
        let float = FloatTile {
            corrections,
            scales,
            bias,
            residual: None,
            output: values.as_mut_ptr(),
            stride: TILE_COLS,
            clamp,
            bytes: None,
        };
        // SAFETY: `values` holds `MR >= rows` rows of `TILE_COLS >= cols` values, and only this
        // call accesses it.
        unsafe { kernels::tile_to_output(isa, operands, &float, &mut scratch.tile) };
        for (row, row_values) in values.chunks_exact_mut(TILE_COLS).take(rows).enumerate() {
            let row_values = &mut row_values[..cols];
            if let Some(activation) = self.other_activation {
                apply_activation_sequential(row_values, activation);
            }
            // SAFETY: Row `first_row + row`, columns `first_col..first_col + cols`, of the
            // quantized output: inside it (`int8_gemm` checked its size for every row of A, and
            // the driver hands out tiles inside `rows x cols`), and written by this task alone.
            let bytes = unsafe {
                std::slice::from_raw_parts_mut(
                    self.bytes
                        .0
                        .add((first_row + row) * self.row_stride + first_col),
                    cols,
                )
            };
            quantize_slice(row_values, bytes, self.quantization);
        }
    }
}

#[cfg(test)]
struct SumSink {
    sums: SharedSums,
    cols: usize,
}

#[cfg(test)]
impl TileSink for SumSink {
    fn run_tile(
        &self,
        isa: Int8Isa,
        operands: TileOperands<'_>,
        first_row: usize,
        first_col: usize,
        cols: usize,
        scratch: &mut TileScratch,
    ) {
        let rows = operands.rows;
        let tile = &mut scratch.tile;
        kernels::tile(isa, operands, tile);
        for row in 0..rows {
            let offset = (first_row + row) * self.cols + first_col;
            // SAFETY: As in `FloatSink::run_tile`.
            let sums = unsafe { std::slice::from_raw_parts_mut(self.sums.0.add(offset), cols) };
            sums.copy_from_slice(&tile[row * TILE_COLS..][..cols]);
        }
    }
}

/// Multiply-adds one task should get at least (about 8 µs of VNNI work): below that, handing
/// a task to another thread costs more than it saves.
const MIN_TASK_MACS: usize = 1 << 19;
/// The most rows of one strip: a sink that takes strips runs this many rows against a panel
/// pair in one call.
const MAX_STRIP_ROWS: usize = 16 * MR;
/// Bytes of A one strip reads, kept in L1 while the strip sweeps the block's panel pairs.
const STRIP_A_BYTES: usize = 16 << 10;
/// Bytes of packed weights one column block keeps in L2 while the rows sweep over it.
const COLUMN_BLOCK_BYTES: usize = 256 << 10;

/// Bytes of packed weights above which the grid prefers to cut columns: every task of a row
/// split reads all of B, which then no longer stays in one core's L2.
const ROW_SPLIT_WEIGHT_BYTES: usize = 512 << 10;

/// Cuts C into a grid of rectangles and runs them on the pool (see [`task_grid`]).
fn run_grid(isa: Int8Isa, lhs: Int8Lhs<'_>, weights: &PackedInt8Weights, sink: &dyn TileSink) {
    let row_blocks = lhs.rows.div_ceil(MR);
    let panels = weights.panels();
    if row_blocks == 0 || panels == 0 {
        return;
    }
    let macs = lhs.rows * weights.padded_depth() * panels * NR;
    let panel_pairs = panels.div_ceil(2);
    let grid = task_grid(
        row_blocks,
        panel_pairs,
        macs,
        threading::parallel_width(),
        weights.data.len() > ROW_SPLIT_WEIGHT_BYTES,
    );
    let (row_tasks, column_tasks) = (grid.row_tasks, grid.column_tasks);
    threading::run_tasks(row_tasks * column_tasks, |task| {
        let (row_task, column_task) = (task / column_tasks, task % column_tasks);
        let blocks = share(row_blocks, row_tasks, row_task);
        let pairs = share(panel_pairs, column_tasks, column_task);
        let rows = blocks.start * MR..(blocks.end * MR).min(lhs.rows);
        let panels = 2 * pairs.start..(2 * pairs.end).min(panels);
        run_rectangle(isa, lhs, weights, rows, panels, sink);
    });
}

/// How a GEMM's C is cut into tasks: `row_tasks` near-equal shares of the row blocks times
/// `column_tasks` of the panel pairs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Int8TaskGrid {
    pub(crate) row_tasks: usize,
    pub(crate) column_tasks: usize,
}

/// The grid that finishes soonest on `threads` threads when tasks go out in rounds, counting
/// tiles (`MR` rows by one panel pair): at most `2 * threads` tasks of at least
/// `MIN_TASK_MACS` each. Ties go to the preferred cut (columns when `wide_weights`, since every
/// task of a row split then reads more B than one core's L2 holds; rows otherwise, since each
/// task then reads its share of A and all of a B that stays in L2), then to more tasks, which
/// lets work stealing even out a core that another process holds.
///
/// Cutting by size alone, as this grid did before, left threads idle: 3 tasks on 2 threads
/// take two rounds, and a 1x1 convolution of 7x7 pixels under 4 M MACs ran on one thread.
pub(crate) fn task_grid(
    row_blocks: usize,
    panel_pairs: usize,
    macs: usize,
    threads: usize,
    wide_weights: bool,
) -> Int8TaskGrid {
    let max_tasks = (2 * threads).min(macs / MIN_TASK_MACS).max(1);
    let mut best = Int8TaskGrid {
        row_tasks: 1,
        column_tasks: 1,
    };
    if threads <= 1 || max_tasks == 1 {
        return best;
    }
    let mut best_key = (usize::MAX, usize::MAX, 0);
    for column_tasks in 1..=panel_pairs.min(max_tasks) {
        for row_tasks in 1..=row_blocks.min(max_tasks / column_tasks) {
            let tasks = row_tasks * column_tasks;
            let task_tiles = row_blocks.div_ceil(row_tasks) * panel_pairs.div_ceil(column_tasks);
            let finish = tasks.div_ceil(threads) * task_tiles;
            let against_preference = if wide_weights {
                row_tasks
            } else {
                column_tasks
            };
            let key = (finish, against_preference, usize::MAX - tasks);
            if key < best_key {
                best_key = key;
                best = Int8TaskGrid {
                    row_tasks,
                    column_tasks,
                };
            }
        }
    }
    best
}

/// The `index`-th of `count` near-equal consecutive shares of `0..total`.
fn share(total: usize, count: usize, index: usize) -> std::ops::Range<usize> {
    (total * index / count)..(total * (index + 1) / count)
}

fn run_rectangle(
    isa: Int8Isa,
    lhs: Int8Lhs<'_>,
    weights: &PackedInt8Weights,
    rows: std::ops::Range<usize>,
    panels: std::ops::Range<usize>,
    sink: &dyn TileSink,
) {
    let groups = weights.groups();
    let panel_bytes = groups * NR * K_GROUP;
    let block_panels = (COLUMN_BLOCK_BYTES / panel_bytes.max(1)).max(2) & !1;
    // Strips of rows whose A stays in L1 while they sweep the block's panels, in whole tiles
    // (AMX blocks of 32 rows).
    let unit = match isa {
        #[cfg(target_arch = "x86_64")]
        Int8Isa::Amx => super::amx::BLOCK_ROWS,
        _ => MR,
    };
    let strip_rows = (STRIP_A_BYTES / lhs.stride.max(1) / unit * unit)
        .max(unit)
        .min(sink.strip_rows());
    let mut scratch = TileScratch::new();
    let mut block_start = panels.start;
    while block_start < panels.end {
        let block_end = (block_start + block_panels).min(panels.end);
        let mut first_row = rows.start;
        while first_row < rows.end {
            let tile_rows = strip_rows.min(rows.end - first_row);
            let a = &lhs.data[first_row * lhs.stride..];
            let mut panel = block_start;
            while panel < block_end {
                let pair = block_end - panel >= 2;
                let second = if pair { weights.panel(panel + 1) } else { &[] };
                let first_col = panel * NR;
                let cols = (if pair { 2 * NR } else { NR }).min(weights.cols - first_col);
                let operands = TileOperands {
                    a,
                    a_stride: lhs.stride,
                    rows: tile_rows,
                    groups,
                    first_panel: weights.panel(panel),
                    second_panel: second,
                };
                sink.run_tile(isa, operands, first_row, first_col, cols, &mut scratch);
                panel += if pair { 2 } else { 1 };
            }
            first_row += tile_rows;
        }
        block_start = block_end;
    }
}
