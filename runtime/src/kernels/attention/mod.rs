//! Plain scaled dot-product attention with grouped-query heads and masks; the tiled,
//! flash-style kernel with block-sparse layouts is in `flash_attention`.
//!
//! For each batch and head: `softmax(scale * Q K^T + mask) V`, where query `i` may attend to
//! key `j` only if every mask in force allows it. A query row that may attend to no key at all
//! yields zeros (PyTorch would give NaN there). The products run on the GEMM; heads run in
//! parallel, and each processes its queries in blocks of `QUERY_BLOCK` rows, scoring each block
//! against every key (`QUERY_BLOCK x key_len` floats of scores per thread).
//!
//! The scratch lives in an `AttentionWorkspace` that the caller builds once (from the
//! `AttentionShape`) and passes to `scaled_dot_product_attention_with_workspace`; with it, and
//! once the GEMM's per-thread packing buffers have grown on a first call, a call allocates
//! nothing. `scaled_dot_product_attention` builds a fresh workspace per call.

use crate::error::{KernelError, KernelResult, check_length, invalid_parameter};
use crate::kernels::gemm::{GemmOptions, Lhs, MatrixRef, Rhs, gemm_sequential};
use crate::kernels::softmax::{exponentiate_row, softmax_row};
use crate::kernels::vectorize;
use crate::threading;
use std::marker::PhantomData;

pub mod mask;

pub use mask::{AttentionMask, SparsePattern};
pub use nnc_ops::AttentionShape;

/// Options of `scaled_dot_product_attention`.
#[derive(Clone, Copy, Debug, Default)]
pub struct AttentionOptions<'a> {
    /// The factor on `Q K^T`; `None` means `1 / sqrt(head_dim)`.
    pub scale: Option<f32>,
    /// Query `i` sits at absolute position `query_position_offset + i` and sees keys
    /// `j <= query_position_offset + i`.
    pub causal: bool,
    /// The number of keys before the first query (the KV-cache length when decoding); only
    /// used by the causal mask.
    pub query_position_offset: usize,
    /// `[batch, key_len]`; a nonzero entry keeps the key, zero masks it out (Hugging Face's
    /// `attention_mask`).
    pub key_padding_mask: Option<&'a [i64]>,
    /// Any further restriction.
    pub mask: AttentionMask<'a>,
}

/// Scratch memory of `scaled_dot_product_attention_with_workspace`, owned by the caller and
/// reused across calls: per thread, the scores of one block of queries against every key and
/// the block's result.
///
/// `new` sizes it for one shape and the current thread count (`crate::num_threads`); a call
/// with more keys or more threads than that grows it once.
#[derive(Clone, Debug, Default)]
pub struct AttentionWorkspace {
    buffer: Vec<f32>,
}

impl AttentionWorkspace {
    /// A workspace large enough for calls of `shape` at the current thread count.
    pub fn new(shape: &AttentionShape) -> Self {
        let mut workspace = Self::default();
        let layout = SlotLayout::new(shape);
        workspace.regions(&layout, layout.slot_count(shape));
        workspace
    }

    /// The bytes it holds.
    pub fn allocated_bytes(&self) -> usize {
        self.buffer.capacity() * std::mem::size_of::<f32>()
    }

    /// `slots` regions of `layout.region_length()` floats, growing the buffer if needed.
    fn regions(&mut self, layout: &SlotLayout, slots: usize) -> &mut [f32] {
        let length = slots * layout.region_length();
        if self.buffer.len() < length {
            self.buffer.resize(length, 0.0);
        }
        &mut self.buffer[..length]
    }
}

/// `output = softmax(scale * q k^T, masked) v` per batch and head; see the module docs.
/// Builds a fresh `AttentionWorkspace` per call; use
/// `scaled_dot_product_attention_with_workspace` to reuse one.
pub fn scaled_dot_product_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: &AttentionShape,
    options: &AttentionOptions<'_>,
    output: &mut [f32],
) -> KernelResult<()> {
    check_shapes(q, k, v, shape, options, output)?;
    let mut workspace = AttentionWorkspace::new(shape);
    scaled_dot_product_attention_with_workspace(q, k, v, shape, options, output, &mut workspace)
}

/// `scaled_dot_product_attention` with caller-owned scratch: after a first call has grown the
/// workspace and the GEMM's per-thread packing buffers, calls allocate nothing.
pub fn scaled_dot_product_attention_with_workspace(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: &AttentionShape,
    options: &AttentionOptions<'_>,
    output: &mut [f32],
    workspace: &mut AttentionWorkspace,
) -> KernelResult<()> {
    check_shapes(q, k, v, shape, options, output)?;
    let AttentionShape {
        batch,
        n_heads,
        n_kv_heads,
        head_dim,
        ..
    } = *shape;
    if output.is_empty() {
        return Ok(());
    }
    let scale = options.scale.unwrap_or(1.0 / (head_dim as f32).sqrt());
    let heads_per_kv_head = n_heads / n_kv_heads;
    let tasks = batch * n_heads;
    let layout = SlotLayout::new(shape);
    let slots = layout.slot_count(shape);
    let tasks_per_slot = tasks.div_ceil(slots);
    let region_length = layout.region_length();
    let regions = workspace.regions(&layout, slots);
    let output = HeadOutputs::new(output);
    let failure = threading::FirstError::new();
    threading::run_chunks_mut(regions, region_length.max(1), |slot, region| {
        let first_task = slot * tasks_per_slot;
        for task in first_task..(first_task + tasks_per_slot).min(tasks) {
            let (batch_index, head) = (task / n_heads, task % n_heads);
            let head_task = HeadTask {
                q,
                k,
                v,
                shape,
                options,
                scale,
                batch_index,
                head,
                kv_head: head / heads_per_kv_head,
            };
            failure.record(head_task.run(output, region, &layout));
        }
    });
    failure.into_result()
}

/// The output of an attention call, shared by the tasks that compute its heads. Each task
/// writes only the `head_dim` columns of its own (batch, head), so no element is written by
/// two tasks, although their rows interleave.
#[derive(Clone, Copy)]
pub(crate) struct HeadOutputs<'a> {
    pointer: *mut f32,
    length: usize,
    lifetime: PhantomData<&'a mut [f32]>,
}

// SAFETY: The tasks that share a `HeadOutputs` write disjoint elements (see `slice_mut`), and the
// exclusive borrow of the output outlives them all.
unsafe impl Send for HeadOutputs<'_> {}
// SAFETY: As above.
unsafe impl Sync for HeadOutputs<'_> {}

impl<'a> HeadOutputs<'a> {
    pub(crate) fn new(output: &'a mut [f32]) -> Self {
        Self {
            pointer: output.as_mut_ptr(),
            length: output.len(),
            lifetime: PhantomData,
        }
    }

    /// Elements `start..start + length` of the output.
    ///
    /// # Safety
    ///
    /// No other live reference (in this task or another) may cover any of these elements.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice_mut(&self, start: usize, length: usize) -> &mut [f32] {
        assert!(
            start <= self.length && length <= self.length - start,
            "HeadOutputs::slice_mut: {start}..{} is outside the output",
            start + length
        );
        // SAFETY: The range is inside the output (checked above), which is exclusively borrowed
        // for `'a`; the caller guarantees that nothing else references these elements.
        unsafe { std::slice::from_raw_parts_mut(self.pointer.add(start), length) }
    }
}

/// Query rows processed together by one head.
const QUERY_BLOCK: usize = 64;

/// How one thread's region of an `AttentionWorkspace` is laid out: the scores of a block of
/// queries against every key, then the block's `[rows, head_dim]` result, then one flag per key
/// (1 kept, 0 masked by the key padding mask) of the batch the thread is on.
struct SlotLayout {
    block_rows: usize,
    key_len: usize,
    head_dim: usize,
}

impl SlotLayout {
    fn new(shape: &AttentionShape) -> Self {
        Self {
            block_rows: QUERY_BLOCK.min(shape.query_len),
            key_len: shape.key_len,
            head_dim: shape.head_dim,
        }
    }

    fn region_length(&self) -> usize {
        self.block_rows * (self.key_len + self.head_dim) + self.key_len
    }

    /// The number of regions (threads working at once) for a call of `shape`.
    fn slot_count(&self, shape: &AttentionShape) -> usize {
        threading::parallel_width()
            .min(shape.batch * shape.n_heads)
            .max(1)
    }
}

/// One batch and head of the attention.
struct HeadTask<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    shape: &'a AttentionShape,
    options: &'a AttentionOptions<'a>,
    scale: f32,
    batch_index: usize,
    head: usize,
    kv_head: usize,
}

impl HeadTask<'_> {
    /// Computes this head into its columns of `output`, using `region` as scratch.
    fn run(
        &self,
        output: HeadOutputs<'_>,
        region: &mut [f32],
        layout: &SlotLayout,
    ) -> KernelResult<()> {
        let AttentionShape {
            query_len,
            key_len,
            n_heads,
            n_kv_heads,
            head_dim,
            ..
        } = *self.shape;
        let (q_stride, kv_stride) = (n_heads * head_dim, n_kv_heads * head_dim);
        let q_start = self.batch_index * query_len * q_stride + self.head * head_dim;
        let kv_start = self.batch_index * key_len * kv_stride + self.kv_head * head_dim;
        let output_row = |row: usize| {
            // SAFETY: Row `row` of this head is `head_dim` elements that only this task writes
            // (see `HeadOutputs`), and the slice is dropped before the next one is made.
            unsafe { output.slice_mut(q_start + row * q_stride, head_dim) }
        };
        if key_len == 0 {
            (0..query_len).for_each(|row| output_row(row).fill(0.0));
            return Ok(());
        }
        let (scores, rest) = region.split_at_mut(layout.block_rows * key_len);
        let (staging, kept_keys) = rest.split_at_mut(layout.block_rows * head_dim);
        // The key padding mask as 1/0 flags, once per head rather than once per score.
        let kept_keys = self.options.key_padding_mask.map(|padding| {
            let flags = &mut kept_keys[..key_len];
            let padding = &padding[self.batch_index * key_len..][..key_len];
            for (flag, &keep) in flags.iter_mut().zip(padding) {
                *flag = if keep != 0 { 1.0 } else { 0.0 };
            }
            &*flags
        });
        let keys = MatrixRef::new(&self.k[kv_start..], key_len, head_dim, kv_stride, 1)?;
        let values = MatrixRef::new(&self.v[kv_start..], key_len, head_dim, kv_stride, 1)?;
        for first_row in (0..query_len).step_by(QUERY_BLOCK) {
            let rows = QUERY_BLOCK.min(query_len - first_row);
            let queries = MatrixRef::new(
                &self.q[q_start + first_row * q_stride..],
                rows,
                head_dim,
                q_stride,
                1,
            )?;
            let scores = &mut scores[..rows * key_len];
            gemm_sequential(
                Lhs::Matrix(queries),
                Rhs::Matrix(keys.transposed()),
                scores,
                key_len,
                &GemmOptions::default(),
            )?;
            // Each row's `1 / sum` of its exponentials, applied to its outputs below.
            let mut factors = [1.0f32; QUERY_BLOCK];
            for ((row_offset, row), factor) in scores
                .chunks_exact_mut(key_len)
                .enumerate()
                .zip(&mut factors)
            {
                *factor = self.mask_and_exponentiate(first_row + row_offset, row, kept_keys);
            }
            let staging = &mut staging[..rows * head_dim];
            gemm_sequential(
                Lhs::Matrix(MatrixRef::row_major(scores, rows, key_len)?),
                Rhs::Matrix(values),
                staging,
                head_dim,
                &GemmOptions::default(),
            )?;
            for (row_offset, values) in staging.chunks_exact(head_dim.max(1)).enumerate() {
                let factor = factors[row_offset];
                vectorize::map(values, output_row(first_row + row_offset), |value| {
                    value * factor
                });
            }
        }
        Ok(())
    }

    /// Scales one row of scores, masks it, and exponentiates it (softmax without the
    /// division), returning the factor that makes the row's weights sum to 1 (`1 / sum`); a row
    /// where no key is allowed becomes zeros. `kept_keys` holds the key padding mask of this
    /// batch as 1/0 flags.
    ///
    /// Without a general mask (`options.mask`), the allowed keys are a prefix (the causal
    /// bound) thinned by the padding flags: that case runs as vector loops; a general mask is
    /// evaluated per score (and normalises the row itself, returning 1). Both give the same
    /// probabilities.
    fn mask_and_exponentiate(
        &self,
        query_row: usize,
        row: &mut [f32],
        kept_keys: Option<&[f32]>,
    ) -> f32 {
        if !matches!(self.options.mask, AttentionMask::None) {
            self.mask_and_normalise_general(query_row, row);
            return 1.0;
        }
        let limit = if self.options.causal {
            (self.options.query_position_offset + query_row + 1).min(row.len())
        } else {
            row.len()
        };
        let (kept, masked) = row.split_at_mut(limit);
        masked.fill(0.0);
        let scale = self.scale;
        match kept_keys {
            Some(flags) => vectorize::zip_map_in_place(kept, &flags[..limit], |score, flag| {
                if flag != 0.0 {
                    score * scale
                } else {
                    f32::NEG_INFINITY
                }
            }),
            None => vectorize::map_in_place(kept, |score| score * scale),
        }
        // Padding usually sits at the end: the first kept key is found at once.
        let any_allowed =
            kept_keys.is_none_or(|flags| flags[..limit].iter().any(|&flag| flag != 0.0));
        if any_allowed {
            exponentiate_row(kept)
        } else {
            kept.fill(0.0);
            0.0
        }
    }

    /// `mask_and_exponentiate` with a general mask: every score asks `allowed`, and the row
    /// becomes probabilities (or zeros).
    fn mask_and_normalise_general(&self, query_row: usize, row: &mut [f32]) {
        let mut any_allowed = false;
        for (key, score) in row.iter_mut().enumerate() {
            if self.allowed(query_row, key) {
                *score *= self.scale;
                any_allowed = true;
            } else {
                *score = f32::NEG_INFINITY;
            }
        }
        if any_allowed {
            softmax_row(row);
        } else {
            row.fill(0.0);
        }
    }

    fn allowed(&self, query_row: usize, key: usize) -> bool {
        let options = self.options;
        if options.causal && key > options.query_position_offset + query_row {
            return false;
        }
        if let Some(padding) = options.key_padding_mask
            && padding[self.batch_index * self.shape.key_len + key] == 0
        {
            return false;
        }
        match options.mask {
            AttentionMask::None => true,
            AttentionMask::Dense(mask) => mask[query_row * self.shape.key_len + key],
            AttentionMask::Function(allowed) => allowed(query_row, key),
        }
    }
}

/// Checks that the query heads share the key/value heads evenly.
pub(crate) fn check_heads(operation: &'static str, shape: &AttentionShape) -> KernelResult<()> {
    if shape.n_kv_heads == 0 || !shape.n_heads.is_multiple_of(shape.n_kv_heads) {
        return Err(invalid_parameter(
            operation,
            format!(
                "{} query heads cannot share {} key/value heads evenly",
                shape.n_heads, shape.n_kv_heads
            ),
        ));
    }
    Ok(())
}

/// Checks the buffers and the head counts of an attention call.
pub(crate) fn check_shapes(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: &AttentionShape,
    options: &AttentionOptions<'_>,
    output: &[f32],
) -> KernelResult<()> {
    let overflow = KernelError::SizeOverflow {
        operation: "attention",
    };
    check_heads("attention", shape)?;
    let q_length = [shape.batch, shape.query_len, shape.n_heads, shape.head_dim]
        .iter()
        .try_fold(1usize, |total, &length| total.checked_mul(length))
        .ok_or(overflow.clone())?;
    let kv_length = [shape.batch, shape.key_len, shape.n_kv_heads, shape.head_dim]
        .iter()
        .try_fold(1usize, |total, &length| total.checked_mul(length))
        .ok_or(overflow)?;
    check_length("attention", "q", q_length, q.len())?;
    check_length("attention", "k", kv_length, k.len())?;
    check_length("attention", "v", kv_length, v.len())?;
    check_length("attention", "output", q_length, output.len())?;
    if let Some(padding) = options.key_padding_mask {
        check_length(
            "attention",
            "key_padding_mask",
            shape.batch * shape.key_len,
            padding.len(),
        )?;
    }
    if let AttentionMask::Dense(mask) = options.mask {
        check_length(
            "attention",
            "mask",
            shape.query_len * shape.key_len,
            mask.len(),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
