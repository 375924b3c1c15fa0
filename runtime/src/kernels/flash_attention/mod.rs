//! Tiled ("flash") attention: blocks of queries against blocks of keys and values with an
//! online softmax, never materialising the `query_len x key_len` score matrix, and optionally
//! visiting only the key blocks of a `BlockSparseLayout`.
//!
//! The result is that of `scaled_dot_product_attention` with the same `AttentionOptions`
//! (scale, causal mask with a query position offset, key padding mask, general mask), further
//! restricted to the blocks of the layout when one is given. For each query block the kernel
//! keeps, per row, the running maximum `m` and running sum `l` of the exponentials and an
//! accumulator `acc` of `[block, head_dim]`; each visited key block adds
//! `p = exp(s - m_new)` and rescales the old state by `exp(m_old - m_new)`, and the output is
//! `acc / l` (zeros where no key was allowed). Key blocks wholly above the causal diagonal, or
//! wholly padding, are skipped; blocks absent from the layout are never touched, so the cost is
//! proportional to the blocks kept.
//!
//! Both products run on the GEMM's micro-kernels (AVX-512 or AVX2 + FMA, as the GEMM picks), a
//! strip of the query block's rows per panel (or pair of panels) of keys or values, over panels
//! this module packs itself once per (batch, key/value head): the keys, times the scale, and the
//! values. The left operands, the queries and the probabilities, are read in place by the
//! micro-kernel's row-major variant (packing the scaled queries of each block took about a third
//! of the packing; packing the probabilities cost about a tenth of the time). The exponentials
//! of the online softmax are `nnc_ops::math::exp`, sixteen at a time where the processor has
//! AVX-512F and eight where it has AVX2 and FMA. Everything lives in a caller-owned
//! `FlashAttentionWorkspace` of `O(block^2 + key_len * head_dim)` floats per thread, so a call
//! allocates nothing. Heads (and, when there are fewer heads than threads, interleaved query
//! blocks) run in parallel on the shared pool, each thread claiming the next as it comes free.

use crate::error::{KernelResult, invalid_parameter};
use crate::kernels::attention::{
    AttentionMask, AttentionOptions, AttentionShape, HeadOutputs, check_shapes,
};
use crate::kernels::gemm::{GemmKernels, NR, StripOutput, TileEpilogue};
use crate::kernels::softmax::{maximum, sum};
use crate::kernels::vectorize;
use crate::threading;
use nnc_ops::math;
use std::sync::atomic::{AtomicUsize, Ordering};

mod layout;

pub use layout::BlockSparseLayout;

/// The block size (query rows and keys per block) when no layout is given: 16 panels of `MR`
/// rows and 6 of `NR` keys, so no tile is cut short. Blocks of 64 to 192 all ran within a few
/// percent of each other here (AVX2, 64 KiB L1, 1 MiB L2 per core); 32 was 15% slower.
pub const DEFAULT_BLOCK_SIZE: usize = 96;

/// Up to this many keys (and queries), a dense call takes them all as one block: an encoder's
/// 128 tokens in blocks of 96 cost two key blocks of 96 and 32 per query block, the online
/// softmax rescaling its state between them (598 µs against 529 µs for one block of 128,
/// MiniLM's 12 heads of 32, one thread, `cargo bench -p nnc-runtime --bench encoder_attention`).
pub const SINGLE_BLOCK_MAX_LEN: usize = 128;

/// The block size `FlashAttentionWorkspace::new` gives dense calls (no layout) of `shape`: one
/// block for short sequences when there are heads enough for every thread, else
/// `DEFAULT_BLOCK_SIZE`.
pub fn dense_block_size(shape: &AttentionShape) -> usize {
    let longest = shape.query_len.max(shape.key_len);
    let heads = shape.batch * shape.n_heads;
    if longest <= SINGLE_BLOCK_MAX_LEN && heads >= threading::parallel_width() {
        longest.max(1)
    } else {
        DEFAULT_BLOCK_SIZE
    }
}

/// Scratch memory of `flash_attention`, owned by the caller and reused across calls: per
/// thread, the packed keys and values of one (batch, key/value head) and the tiles of one query
/// block.
///
/// The constructors size it for one shape, one block size and the current thread count
/// (`crate::num_threads`); a call with more keys, a larger block size or more threads grows it
/// once. The block size is also the one dense calls (no layout) through it use, so that the
/// calls of a KV cache, whose key length changes from step to step, keep the block size of the
/// largest step the workspace was made for, and never grow it.
#[derive(Clone, Debug, Default)]
pub struct FlashAttentionWorkspace {
    slots: Vec<SlotScratch>,
    /// The block size of dense calls; 0 (a `Default` workspace) means `DEFAULT_BLOCK_SIZE`.
    dense_block_size: usize,
}

impl FlashAttentionWorkspace {
    /// A workspace for dense calls of `shape` (block size `dense_block_size(shape)`) and of
    /// smaller shapes.
    pub fn new(shape: &AttentionShape) -> Self {
        Self::with_block_size(shape, dense_block_size(shape))
    }

    /// A workspace for calls of `shape` with layouts of `block_size`, and dense calls in blocks
    /// of `block_size`.
    pub fn with_block_size(shape: &AttentionShape, block_size: usize) -> Self {
        let block_size = block_size.max(1);
        let mut workspace = Self {
            dense_block_size: block_size,
            ..Self::default()
        };
        let sizes = SlotSizes::new(shape, block_size);
        let plan = WorkPlan::new(shape, block_size);
        workspace.prepare(&sizes, plan.slots);
        workspace
    }

    /// The block size of dense calls through this workspace.
    pub fn dense_block_size(&self) -> usize {
        if self.dense_block_size == 0 {
            DEFAULT_BLOCK_SIZE
        } else {
            self.dense_block_size
        }
    }

    /// The bytes it holds.
    pub fn allocated_bytes(&self) -> usize {
        self.slots
            .iter()
            .map(SlotScratch::allocated_floats)
            .sum::<usize>()
            * std::mem::size_of::<f32>()
    }

    /// Makes `slots` slots of at least `sizes`, growing what is too small.
    fn prepare(&mut self, sizes: &SlotSizes, slots: usize) -> &mut [SlotScratch] {
        if self.slots.len() < slots {
            self.slots.resize_with(slots, SlotScratch::default);
        }
        for slot in &mut self.slots[..slots] {
            slot.prepare(sizes);
        }
        &mut self.slots[..slots]
    }
}

/// `output = softmax(scale * q k^T, masked) v` per batch and head, tiled; see the module docs.
///
/// Shapes and options are those of `scaled_dot_product_attention`. With a `layout`, only its
/// kept blocks are visited (its block size is used, and it must have been built for
/// `shape.query_len` queries and `shape.key_len` keys), and `options.mask` is evaluated only
/// inside its partial blocks; without one, every key block is visited in blocks of
/// `workspace.dense_block_size()` and `options.mask` is evaluated everywhere.
#[allow(clippy::too_many_arguments)]
pub fn flash_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: &AttentionShape,
    options: &AttentionOptions<'_>,
    layout: Option<&BlockSparseLayout>,
    output: &mut [f32],
    workspace: &mut FlashAttentionWorkspace,
) -> KernelResult<()> {
    check_shapes(q, k, v, shape, options, output)?;
    let block_size = match layout {
        Some(layout) => {
            if layout.query_len != shape.query_len || layout.key_len != shape.key_len {
                return Err(invalid_parameter(
                    "flash_attention",
                    format!(
                        "the layout was built for {} queries and {} keys, not {} and {}",
                        layout.query_len, layout.key_len, shape.query_len, shape.key_len
                    ),
                ));
            }
            layout.block_size
        }
        None => workspace.dense_block_size(),
    };
    if output.is_empty() {
        return Ok(());
    }
    let problem = Problem {
        q,
        k,
        v,
        shape: *shape,
        options,
        layout,
        block_size,
        scale: options
            .scale
            .unwrap_or(1.0 / (shape.head_dim as f32).sqrt()),
        kernels: GemmKernels::detected(),
        sizes: SlotSizes::new(shape, block_size),
    };
    let plan = WorkPlan::new(shape, block_size);
    let slots = workspace.prepare(&problem.sizes, plan.slots);
    let output = HeadOutputs::new(output);
    // Each thread claims the next units until none are left, so that one that gets less of its
    // core (another process, a late start) runs fewer: cut in advance into equal runs, every
    // call waited for the slower thread (MiniLM's attention at two threads in a busy moment of
    // the host, six layers: 3.34 ms against 2.66 claimed, medians of 12 alternated processes).
    let next_unit = AtomicUsize::new(0);
    threading::run_chunks_mut(slots, 1, |_, slot| {
        let slot = &mut slot[0];
        // The packed keys and values are of the previous call's data.
        slot.packed_for = None;
        loop {
            let first = next_unit.fetch_add(plan.claim, Ordering::Relaxed);
            if first >= plan.units {
                break;
            }
            for unit in first..(first + plan.claim).min(plan.units) {
                problem.run_unit(&plan, unit, slot, output);
            }
        }
    });
    Ok(())
}

/// How a call's work is cut: units of (batch, head, interleaved share of the query blocks),
/// which `slots` threads, each with its slot's scratch, claim in order `claim` at a time.
#[derive(Clone, Copy, Debug)]
struct WorkPlan {
    /// Shares of each head's query blocks: share `s` takes blocks `s, s + splits, ...`, which
    /// balances causal attention, whose later blocks cost more.
    splits: usize,
    units: usize,
    slots: usize,
    /// The units claimed at once: all those of one (batch, key/value head), which share its
    /// packed keys and values, where that leaves at least two claims per slot; else one.
    claim: usize,
}

impl WorkPlan {
    fn new(shape: &AttentionShape, block_size: usize) -> Self {
        let heads = (shape.batch * shape.n_heads).max(1);
        let query_blocks = shape.query_len.div_ceil(block_size).max(1);
        let threads = threading::parallel_width();
        let splits = if heads >= threads {
            1
        } else {
            threads.div_ceil(heads).min(query_blocks)
        };
        let units = heads * splits;
        let slots = threads.min(units).max(1);
        let sharing = splits * (shape.n_heads / shape.n_kv_heads.max(1)).max(1);
        let claim = if units / sharing >= 2 * slots {
            sharing
        } else {
            1
        };
        Self {
            splits,
            units,
            slots,
            claim,
        }
    }
}

/// The lengths of one slot's buffers.
#[derive(Clone, Copy, Debug)]
struct SlotSizes {
    block_size: usize,
    head_dim: usize,
    /// `head_dim` rounded up to a whole number of `NR`-wide panels.
    padded_head_dim: usize,
    /// Keys of a block rounded up to whole `NR`-key panels.
    padded_block_keys: usize,
    key_blocks: usize,
}

impl SlotSizes {
    fn new(shape: &AttentionShape, block_size: usize) -> Self {
        Self {
            block_size,
            head_dim: shape.head_dim,
            padded_head_dim: shape.head_dim.div_ceil(NR) * NR,
            padded_block_keys: block_size.div_ceil(NR) * NR,
            key_blocks: shape.key_len.div_ceil(block_size),
        }
    }

    /// Floats of packed keys per key block: `[key panel][head_dim][NR]`.
    fn key_block_stride(&self) -> usize {
        self.padded_block_keys * self.head_dim
    }

    /// Floats of packed values per key block: `[value panel][keys in block][NR]`.
    fn value_block_stride(&self) -> usize {
        self.block_size * self.padded_head_dim
    }
}

/// One thread's scratch.
#[derive(Clone, Debug, Default)]
struct SlotScratch {
    /// The keys of one (batch, key/value head) times the scale, `[key block][key panel]
    /// [head_dim][NR]`.
    packed_keys: Vec<f32>,
    /// Its values, `[key block][value panel][keys in block][NR]`.
    packed_values: Vec<f32>,
    /// The (batch, key/value head) whose keys and values are packed.
    packed_for: Option<(usize, usize)>,
    /// The scores, then probabilities, of one block pair, row-major with stride `block_size`.
    scores: Vec<f32>,
    /// The unnormalised output rows, `[block_size, head_dim]`.
    accumulator: Vec<f32>,
    /// Per row: the running maximum and the running sum of the exponentials.
    row_maxima: Vec<f32>,
    row_sums: Vec<f32>,
}

impl SlotScratch {
    fn prepare(&mut self, sizes: &SlotSizes) {
        let grow = |buffer: &mut Vec<f32>, length: usize| {
            if buffer.len() < length {
                buffer.resize(length, 0.0);
            }
        };
        grow(
            &mut self.packed_keys,
            sizes.key_blocks * sizes.key_block_stride(),
        );
        grow(
            &mut self.packed_values,
            sizes.key_blocks * sizes.value_block_stride(),
        );
        grow(&mut self.scores, sizes.block_size * sizes.block_size);
        grow(&mut self.accumulator, sizes.block_size * sizes.head_dim);
        grow(&mut self.row_maxima, sizes.block_size);
        grow(&mut self.row_sums, sizes.block_size);
    }

    fn allocated_floats(&self) -> usize {
        [
            &self.packed_keys,
            &self.packed_values,
            &self.scores,
            &self.accumulator,
            &self.row_maxima,
            &self.row_sums,
        ]
        .iter()
        .map(|buffer| buffer.capacity())
        .sum()
    }
}

/// Everything a call's tasks share.
struct Problem<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    shape: AttentionShape,
    options: &'a AttentionOptions<'a>,
    layout: Option<&'a BlockSparseLayout>,
    block_size: usize,
    scale: f32,
    kernels: GemmKernels,
    sizes: SlotSizes,
}

/// The position of one query block within its head.
#[derive(Clone, Copy, Debug)]
struct QueryBlock {
    batch: usize,
    head: usize,
    /// The first query row.
    start: usize,
    rows: usize,
}

impl Problem<'_> {
    /// Where `block`'s query rows (and its output rows, laid out alike) are: the offset of its
    /// first row of this head, and the distance between rows.
    fn query_rows(&self, block: QueryBlock) -> (usize, usize) {
        let AttentionShape {
            query_len,
            n_heads,
            head_dim,
            ..
        } = self.shape;
        let stride = n_heads * head_dim;
        let first = (block.batch * query_len + block.start) * stride + block.head * head_dim;
        (first, stride)
    }

    /// Runs one unit of the plan: one share of one head's query blocks.
    fn run_unit(
        &self,
        plan: &WorkPlan,
        unit: usize,
        slot: &mut SlotScratch,
        output: HeadOutputs<'_>,
    ) {
        let AttentionShape {
            query_len,
            n_heads,
            n_kv_heads,
            ..
        } = self.shape;
        let (head_task, share) = (unit / plan.splits, unit % plan.splits);
        let (batch, head) = (head_task / n_heads, head_task % n_heads);
        let kv_head = head / (n_heads / n_kv_heads);
        if slot.packed_for != Some((batch, kv_head)) {
            self.pack_keys_and_values(batch, kv_head, slot);
            slot.packed_for = Some((batch, kv_head));
        }
        let query_blocks = query_len.div_ceil(self.block_size);
        for query_block in (share..query_blocks).step_by(plan.splits) {
            let start = query_block * self.block_size;
            let block = QueryBlock {
                batch,
                head,
                start,
                rows: self.block_size.min(query_len - start),
            };
            self.run_query_block(block, query_block, slot, output);
        }
    }

    /// Packs the keys and values of one (batch, key/value head) into the slot's panels.
    fn pack_keys_and_values(&self, batch: usize, kv_head: usize, slot: &mut SlotScratch) {
        let AttentionShape {
            key_len,
            n_kv_heads,
            head_dim,
            ..
        } = self.shape;
        let sizes = &self.sizes;
        let kv_stride = n_kv_heads * head_dim;
        let first = batch * key_len * kv_stride + kv_head * head_dim;
        for block_start in (0..key_len).step_by(self.block_size) {
            let block_keys = self.block_size.min(key_len - block_start);
            let block = (block_start / self.block_size) * sizes.key_block_stride();
            for panel_start in (0..block_keys).step_by(NR) {
                pack_key_panel(
                    KeyPanel {
                        keys: &self.k[first + (block_start + panel_start) * kv_stride..],
                        key_stride: kv_stride,
                        count: NR.min(block_keys - panel_start),
                        head_dim,
                        scale: self.scale,
                    },
                    &mut slot.packed_keys[block + panel_start * head_dim..][..NR * head_dim],
                );
            }
        }
        for key in 0..key_len {
            let (key_block, offset) = (key / self.block_size, key % self.block_size);
            let block_keys = self.block_size.min(key_len - key_block * self.block_size);
            let source = first + key * kv_stride;
            let value_row = &self.v[source..][..head_dim];
            let value_block = key_block * sizes.value_block_stride();
            for (panel_index, values) in value_row.chunks(NR).enumerate() {
                let start = value_block + (panel_index * block_keys + offset) * NR;
                slot.packed_values[start..][..values.len()].copy_from_slice(values);
            }
        }
    }

    /// Computes the output rows of one query block.
    fn run_query_block(
        &self,
        block: QueryBlock,
        query_block: usize,
        slot: &mut SlotScratch,
        output: HeadOutputs<'_>,
    ) {
        let AttentionShape {
            key_len, head_dim, ..
        } = self.shape;
        let (q_first, q_stride) = self.query_rows(block);
        slot.row_maxima[..block.rows].fill(f32::NEG_INFINITY);
        slot.row_sums[..block.rows].fill(0.0);
        let element_mask = !matches!(self.options.mask, AttentionMask::None);
        // The first key block visited writes the accumulator; the next ones add to it. A row
        // whose sum stays zero is written as zeros below without reading the accumulator.
        let mut accumulate = false;
        match self.layout {
            Some(layout) => {
                let key_blocks = layout.key_blocks(query_block);
                let partial = layout.partial_blocks(query_block);
                for (&key_block, &partial) in key_blocks.iter().zip(partial) {
                    let mask = element_mask && partial;
                    accumulate |= self.visit_key_block(block, key_block, mask, accumulate, slot);
                }
            }
            None => {
                for key_block in 0..key_len.div_ceil(self.block_size) {
                    accumulate |=
                        self.visit_key_block(block, key_block, element_mask, accumulate, slot);
                }
            }
        }
        for row in 0..block.rows {
            // SAFETY: Row `block.start + row` of this head is `head_dim` elements that only
            // this task writes (see `HeadOutputs`); the slice is dropped at the end of the loop.
            let destination = unsafe { output.slice_mut(q_first + row * q_stride, head_dim) };
            let accumulated = &slot.accumulator[row * head_dim..][..head_dim];
            let total = slot.row_sums[row];
            if total > 0.0 {
                let reciprocal = 1.0 / total;
                vectorize::map(accumulated, destination, |value| value * reciprocal);
            } else {
                destination.fill(0.0);
            }
        }
    }

    /// Folds one key block into the running state of a query block, and returns whether it
    /// wrote the accumulator (false for a block that the causal mask or the padding leaves out
    /// whole). `accumulate`: whether the accumulator holds an earlier block's rows, to be added
    /// to rather than overwritten.
    fn visit_key_block(
        &self,
        block: QueryBlock,
        key_block: usize,
        apply_element_mask: bool,
        accumulate: bool,
        slot: &mut SlotScratch,
    ) -> bool {
        let AttentionShape {
            key_len, head_dim, ..
        } = self.shape;
        let options = self.options;
        let block_size = self.block_size;
        let key_start = key_block * block_size;
        // The keys of the block, and the values' panels' stride (see `pack_keys_and_values`).
        let block_keys = block_size.min(key_len - key_start);
        let mut keys = block_keys;
        // The causal mask: query row `i` sees keys `j <= offset + i`.
        let mut causal_partial = false;
        if options.causal {
            let first_row_limit = options.query_position_offset + block.start;
            let last_row_limit = first_row_limit + block.rows - 1;
            if key_start > last_row_limit {
                return false;
            }
            causal_partial = key_start + keys - 1 > first_row_limit;
        }
        // Padded keys at the end of the block (a batch's shorter sequences) are left out of
        // both products; only padding between kept keys is masked score by score.
        let padding = options
            .key_padding_mask
            .map(|mask| &mask[block.batch * key_len + key_start..][..block_keys]);
        let padding_partial = match padding {
            Some(padding) => {
                let Some(last_kept) = padding.iter().rposition(|&keep| keep != 0) else {
                    return false;
                };
                keys = last_kept + 1;
                padding[..keys].contains(&0)
            }
            None => false,
        };

        // Scores: the block's query rows, read in place, against the scaled key panels of this
        // block, one strip of the rows per group of as many neighbouring key panels as the
        // kernel takes (two with AVX-512: a tile of one panel is bound by its loads, not its
        // FMAs).
        let (q_first, q_stride) = self.query_rows(block);
        let strip_keys = self.kernels.strip_panels * NR;
        let key_block_start = key_block * self.sizes.key_block_stride();
        for first_key in (0..keys).step_by(strip_keys) {
            let key_panel_data = &slot.packed_keys[key_block_start + first_key * head_dim..];
            run_strip(
                self.kernels,
                StripLhs {
                    a: &self.q[q_first..],
                    row_stride: q_stride,
                },
                head_dim,
                key_panel_data,
                Strip {
                    c: &mut slot.scores[first_key..],
                    row_stride: block_size,
                    rows: block.rows,
                    columns: strip_keys.min(keys - first_key),
                    accumulate: false,
                },
            );
        }

        // Masks and the online softmax, row by row.
        for row in 0..block.rows {
            let query = block.start + row;
            let scores = &mut slot.scores[row * block_size..][..keys];
            if causal_partial {
                let visible = (options.query_position_offset + query + 1).saturating_sub(key_start);
                if visible < keys {
                    scores[visible..].fill(f32::NEG_INFINITY);
                }
            }
            if padding_partial && let Some(padding) = padding {
                for (score, &keep) in scores.iter_mut().zip(&padding[..keys]) {
                    if keep == 0 {
                        *score = f32::NEG_INFINITY;
                    }
                }
            }
            if apply_element_mask {
                self.apply_element_mask(query, key_start, scores);
            }
            fold_row(
                scores,
                RowState {
                    maximum: &mut slot.row_maxima[row],
                    sum: &mut slot.row_sums[row],
                    accumulator: &mut slot.accumulator[row * head_dim..][..head_dim],
                },
            );
        }

        // The accumulator gains the probabilities (read in place, row-major) times the values
        // of this block, one strip of the block's rows per panel of the values, or per group of
        // panels when every key of the block is kept: the panels are `block_keys` steps apart,
        // and the kernel takes them `keys` apart.
        let value_block_start = key_block * self.sizes.value_block_stride();
        let strip_columns = if keys == block_keys {
            self.kernels.strip_panels * NR
        } else {
            NR
        };
        for first_column in (0..head_dim).step_by(strip_columns) {
            let value_panel_data =
                &slot.packed_values[value_block_start + first_column * block_keys..];
            run_strip(
                self.kernels,
                StripLhs {
                    a: &slot.scores,
                    row_stride: block_size,
                },
                keys,
                value_panel_data,
                Strip {
                    c: &mut slot.accumulator[first_column..],
                    row_stride: head_dim,
                    rows: block.rows,
                    columns: strip_columns.min(head_dim - first_column),
                    accumulate,
                },
            );
        }
        true
    }

    /// Sets the scores of the keys that `options.mask` forbids to minus infinity.
    fn apply_element_mask(&self, query: usize, key_start: usize, scores: &mut [f32]) {
        match self.options.mask {
            AttentionMask::None => {}
            AttentionMask::Dense(mask) => {
                let allowed = &mask[query * self.shape.key_len + key_start..][..scores.len()];
                for (score, &allowed) in scores.iter_mut().zip(allowed) {
                    if !allowed {
                        *score = f32::NEG_INFINITY;
                    }
                }
            }
            AttentionMask::Function(allowed) => {
                for (offset, score) in scores.iter_mut().enumerate() {
                    if !allowed(query, key_start + offset) {
                        *score = f32::NEG_INFINITY;
                    }
                }
            }
        }
    }
}

/// Up to `NR` keys, `key_stride` apart in `keys`, each `head_dim` long, to be packed times
/// `scale` into one panel of B.
struct KeyPanel<'a> {
    keys: &'a [f32],
    key_stride: usize,
    count: usize,
    head_dim: usize,
    scale: f32,
}

/// `panel[step * NR + lane] = keys[lane * key_stride + step] * scale` for the panel's keys
/// (`lane < count`) and every step: the transpose of the keys, which the scores' product reads
/// as B. With AVX-512 a whole panel is one gather of sixteen keys per step; one store per
/// element took a third as long as the softmax in the encoder's attention.
fn pack_key_panel(panel: KeyPanel<'_>, packed: &mut [f32]) {
    let KeyPanel {
        keys,
        key_stride,
        count,
        head_dim,
        scale,
    } = panel;
    assert!(
        count <= NR
            && packed.len() >= head_dim * NR
            && (count == 0 || keys.len() >= (count - 1) * key_stride + head_dim),
        "pack_key_panel: the keys or the panel are out of bounds"
    );
    #[cfg(target_arch = "x86_64")]
    if count == NR
        && crate::kernels::exp_avx512::is_available()
        && i32::try_from((NR - 1) * key_stride).is_ok()
    {
        // SAFETY: The processor has AVX-512F, checked just above; the sixteen keys' `head_dim`
        // floats are inside `keys` and the panel's `head_dim * NR` inside `packed` (asserted
        // above), and the largest offset, `15 * key_stride`, fits an `i32`.
        unsafe { pack_key_panel_avx512(keys, key_stride, head_dim, scale, packed) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if count == NR && vectorize::has_avx2_fma() {
        // SAFETY: The processor has AVX2, checked just above; the sixteen keys' `head_dim`
        // floats are inside `keys` and the panel's `head_dim * NR` inside `packed` (asserted
        // above).
        unsafe { pack_key_panel_avx2(keys, key_stride, head_dim, scale, packed) };
        return;
    }
    for lane in 0..count {
        let key = &keys[lane * key_stride..][..head_dim];
        for (step, &value) in key.iter().enumerate() {
            packed[step * NR + lane] = value * scale;
        }
    }
}

/// [`pack_key_panel`] for a whole panel, one gather per step.
///
/// # Safety
///
/// The processor has AVX-512F; `keys` holds `15 * key_stride + head_dim` floats, `packed`
/// `head_dim * NR`, and `15 * key_stride` fits an `i32`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pack_key_panel_avx512(
    keys: &[f32],
    key_stride: usize,
    head_dim: usize,
    scale: f32,
    packed: &mut [f32],
) {
    use std::arch::x86_64::{
        _mm512_i32gather_ps, _mm512_mul_ps, _mm512_mullo_epi32, _mm512_set1_epi32, _mm512_set1_ps,
        _mm512_setr_epi32, _mm512_storeu_ps,
    };
    let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    // The caller vouched that `15 * key_stride` fits.
    let offsets = _mm512_mullo_epi32(lanes, _mm512_set1_epi32(key_stride as i32));
    let scale = _mm512_set1_ps(scale);
    for step in 0..head_dim {
        // SAFETY: Lane `l` reads `keys[l * key_stride + step]`, inside `keys`, and the store
        // writes `packed[step * NR..][..NR]`, inside `packed` (both vouched for by the caller).
        unsafe {
            let values = _mm512_i32gather_ps::<4>(offsets, keys.as_ptr().add(step));
            _mm512_storeu_ps(
                packed.as_mut_ptr().add(step * NR),
                _mm512_mul_ps(values, scale),
            );
        }
    }
}

/// [`pack_key_panel`] for a whole panel of sixteen keys with AVX2: eight keys by eight steps
/// at a time, loaded as rows, transposed in registers and stored as eight steps of the panel
/// (the steps past the last eight one by one). The portable loop's one strided store per
/// element held about half of the samples of `Problem::run_unit`, 8% of the encoder's attention
/// at one thread (`perf`, `attention_timing`).
///
/// # Safety
///
/// The processor has AVX2; `keys` holds `15 * key_stride + head_dim` floats and
/// `packed` `head_dim * NR`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn pack_key_panel_avx2(
    keys: &[f32],
    key_stride: usize,
    head_dim: usize,
    scale: f32,
    packed: &mut [f32],
) {
    use std::arch::x86_64::{
        __m256, _mm256_loadu_ps, _mm256_mul_ps, _mm256_permute2f128_ps, _mm256_set1_ps,
        _mm256_shuffle_ps, _mm256_storeu_ps, _mm256_unpackhi_ps, _mm256_unpacklo_ps,
    };
    const LANES: usize = 8;
    // A panel is two groups of eight keys.
    const _: () = assert!(NR == 2 * LANES);
    let scale_lanes = _mm256_set1_ps(scale);
    let whole_steps = head_dim / LANES * LANES;
    for first_key in [0, LANES] {
        for step in (0..whole_steps).step_by(LANES) {
            let rows: [__m256; LANES] = std::array::from_fn(|key| {
                // SAFETY: Key `first_key + key` (at most 15) has its steps `step..step + 8`
                // inside `keys`, since `step + 8 <= head_dim` (vouched for by the caller).
                unsafe { _mm256_loadu_ps(keys.as_ptr().add((first_key + key) * key_stride + step)) }
            });
            // Pairs, then quadruples, of neighbouring keys interleaved within each 128-bit half;
            // the halves then exchanged: `columns[j]` is step `step + j` of the eight keys.
            let pairs = [
                _mm256_unpacklo_ps(rows[0], rows[1]),
                _mm256_unpackhi_ps(rows[0], rows[1]),
                _mm256_unpacklo_ps(rows[2], rows[3]),
                _mm256_unpackhi_ps(rows[2], rows[3]),
                _mm256_unpacklo_ps(rows[4], rows[5]),
                _mm256_unpackhi_ps(rows[4], rows[5]),
                _mm256_unpacklo_ps(rows[6], rows[7]),
                _mm256_unpackhi_ps(rows[6], rows[7]),
            ];
            let quads = [
                _mm256_shuffle_ps::<0x44>(pairs[0], pairs[2]),
                _mm256_shuffle_ps::<0xEE>(pairs[0], pairs[2]),
                _mm256_shuffle_ps::<0x44>(pairs[1], pairs[3]),
                _mm256_shuffle_ps::<0xEE>(pairs[1], pairs[3]),
                _mm256_shuffle_ps::<0x44>(pairs[4], pairs[6]),
                _mm256_shuffle_ps::<0xEE>(pairs[4], pairs[6]),
                _mm256_shuffle_ps::<0x44>(pairs[5], pairs[7]),
                _mm256_shuffle_ps::<0xEE>(pairs[5], pairs[7]),
            ];
            let columns = [
                _mm256_permute2f128_ps::<0x20>(quads[0], quads[4]),
                _mm256_permute2f128_ps::<0x20>(quads[1], quads[5]),
                _mm256_permute2f128_ps::<0x20>(quads[2], quads[6]),
                _mm256_permute2f128_ps::<0x20>(quads[3], quads[7]),
                _mm256_permute2f128_ps::<0x31>(quads[0], quads[4]),
                _mm256_permute2f128_ps::<0x31>(quads[1], quads[5]),
                _mm256_permute2f128_ps::<0x31>(quads[2], quads[6]),
                _mm256_permute2f128_ps::<0x31>(quads[3], quads[7]),
            ];
            for (offset, column) in columns.into_iter().enumerate() {
                // SAFETY: Step `step + offset < head_dim` of the panel, lanes `first_key..+8`
                // of its sixteen, is inside `packed` (vouched for by the caller).
                unsafe {
                    _mm256_storeu_ps(
                        packed.as_mut_ptr().add((step + offset) * NR + first_key),
                        _mm256_mul_ps(column, scale_lanes),
                    );
                }
            }
        }
    }
    for lane in 0..NR {
        let key = &keys[lane * key_stride..][..head_dim];
        for (step, &value) in key.iter().enumerate().skip(whole_steps) {
            packed[step * NR + lane] = value * scale;
        }
    }
}

/// The running softmax state of one query row.
struct RowState<'a> {
    maximum: &'a mut f32,
    sum: &'a mut f32,
    accumulator: &'a mut [f32],
}

/// Folds one row of masked scores (minus infinity where masked) into the row's state: the
/// scores become `exp(score - new maximum)` (zero where masked, and everywhere when nothing in
/// the block is allowed), and the sum and accumulator are rescaled to the new maximum.
fn fold_row(scores: &mut [f32], state: RowState<'_>) {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::exp_avx512::is_available() {
        // SAFETY: The processor supports AVX-512F, checked just above.
        unsafe { fold_row_avx512(scores, state) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if vectorize::has_avx2_fma() {
        // SAFETY: The processor supports AVX2 and FMA, checked just above.
        unsafe { fold_row_avx2(scores, state) };
        return;
    }
    fold_row_body(scores, state);
}

/// `fold_row_body` with the exponentials eight at a time (`exp_avx2`, the same values).
///
/// # Safety
///
/// The processor must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fold_row_avx2(scores: &mut [f32], state: RowState<'_>) {
    use crate::kernels::exp_avx2;
    fold_row_with(
        scores,
        state,
        // SAFETY: The caller vouched for AVX2 and FMA.
        |scores| unsafe { exp_avx2::maximum(scores) },
        // SAFETY: As above.
        |scores, maximum| unsafe { exp_avx2::exponentiate_masked_sum(scores, maximum) },
    );
}

/// `fold_row_body` with the exponentials sixteen at a time (`exp_avx512`, the same values).
///
/// # Safety
///
/// The processor must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn fold_row_avx512(scores: &mut [f32], state: RowState<'_>) {
    use crate::kernels::exp_avx512;
    fold_row_with(
        scores,
        state,
        // SAFETY: The caller vouched for AVX-512F.
        |scores| unsafe { exp_avx512::maximum(scores) },
        // SAFETY: As above.
        |scores, maximum| unsafe { exp_avx512::exponentiate_masked_sum(scores, maximum) },
    );
}

#[inline(always)]
fn fold_row_body(scores: &mut [f32], state: RowState<'_>) {
    fold_row_with(scores, state, maximum, |scores, maximum| {
        for score in scores.iter_mut() {
            *score = if *score == f32::NEG_INFINITY {
                0.0
            } else {
                math::exp(*score - maximum)
            };
        }
        sum(scores)
    });
}

/// The fold, with `maximum(scores)` the largest score (NaN if any is NaN), and
/// `exponentiate(scores, maximum)` setting each score to `exp(score - maximum)`, or 0 where it
/// is minus infinity, and returning their sum. With AVX-512 both are one pass of sixteen lanes
/// (two passes of eight and a third for the sum took a quarter of the encoder's attention).
#[inline(always)]
fn fold_row_with(
    scores: &mut [f32],
    state: RowState<'_>,
    maximum: impl FnOnce(&[f32]) -> f32,
    exponentiate: impl FnOnce(&mut [f32], f32) -> f32,
) {
    let block_maximum = maximum(scores);
    if block_maximum == f32::NEG_INFINITY {
        // Nothing allowed in this block: the row's state stays as it is.
        scores.fill(0.0);
        return;
    }
    let old_maximum = *state.maximum;
    let new_maximum = if block_maximum > old_maximum || block_maximum.is_nan() {
        block_maximum
    } else {
        old_maximum
    };
    let block_sum = exponentiate(scores, new_maximum);
    let correction = if old_maximum == f32::NEG_INFINITY {
        0.0
    } else {
        math::exp(old_maximum - new_maximum)
    };
    *state.sum = *state.sum * correction + block_sum;
    *state.maximum = new_maximum;
    // Before the row's first allowed key the accumulator holds zeros (or is about to be
    // overwritten): nothing to rescale.
    if correction != 1.0 && old_maximum != f32::NEG_INFINITY {
        for value in state.accumulator.iter_mut() {
            *value *= correction;
        }
    }
}

/// Where one strip of the GEMM's micro-kernel goes: `rows x columns` elements of `c`, rows
/// `row_stride` apart.
struct Strip<'a> {
    c: &'a mut [f32],
    row_stride: usize,
    rows: usize,
    columns: usize,
    accumulate: bool,
}

/// The left operand of a strip, read in place: a row-major matrix, rows `row_stride` apart (the
/// block's queries, or its probabilities).
struct StripLhs<'a> {
    a: &'a [f32],
    row_stride: usize,
}

/// Runs the GEMM's micro-kernel on one strip (`depth` steps, up to `kernels.strip_panels`
/// neighbouring panels of B, `depth * NR` floats apart) after checking every bound it relies on.
fn run_strip(
    kernels: GemmKernels,
    lhs: StripLhs<'_>,
    depth: usize,
    b_panel: &[f32],
    strip: Strip<'_>,
) {
    let Strip {
        c,
        row_stride,
        rows,
        columns,
        accumulate,
    } = strip;
    assert!(
        rows >= 1
            && (1..=kernels.strip_panels * NR).contains(&columns)
            && columns <= row_stride
            && b_panel.len() >= columns.div_ceil(NR) * depth * NR
            && c.len() >= (rows - 1) * row_stride + columns
            && depth <= lhs.row_stride
            && lhs.a.len() >= (rows - 1) * lhs.row_stride + depth,
        "run_strip: a strip or operand is out of bounds"
    );
    let output = StripOutput {
        c: c.as_mut_ptr(),
        c_row_stride: row_stride,
        rows,
        cols: columns,
        accumulate,
        epilogue: TileEpilogue::default(),
    };
    // SAFETY: The kernels are the ones this processor runs (`GemmKernels::detected`); A's rows,
    // the panels of B and the `rows x columns` strip of C lie inside their slices (checked just
    // above), the epilogue reads nothing, and `c` is borrowed mutably, so nothing else touches
    // the strip.
    unsafe { (kernels.row_major_a)(depth, lhs.a, lhs.row_stride, b_panel, &output) }
}

#[cfg(test)]
mod tests;
