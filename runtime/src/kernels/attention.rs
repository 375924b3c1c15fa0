//! Plain scaled dot-product attention with grouped-query heads and masks (a tiled,
//! flash-style kernel will come later).
//!
//! For each batch and head: `softmax(scale * Q K^T + mask) V`, where query `i` may attend to
//! key `j` only if every mask in force allows it. A query row that may attend to no key at all
//! yields zeros (PyTorch would give NaN there). The products run on the GEMM; heads run in
//! parallel, and each processes its queries in blocks of `QUERY_BLOCK` rows so that the score
//! buffer stays small.

use crate::error::{KernelError, KernelResult, check_length, invalid_parameter};
use crate::kernels::gemm::{GemmOptions, Lhs, MatrixRef, Rhs, gemm_sequential};
use crate::kernels::softmax::softmax_row;
use crate::threading;
use std::sync::Mutex;

/// The sizes of one attention call. `q` is `[batch, query_len, n_heads * head_dim]`, `k` and
/// `v` are `[batch, key_len, n_kv_heads * head_dim]`, and the output is shaped like `q`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    pub batch: usize,
    pub query_len: usize,
    pub key_len: usize,
    pub n_heads: usize,
    /// Key/value heads; query head `h` reads key/value head `h / (n_heads / n_kv_heads)`.
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

/// A general mask over (query row, key index) pairs, shared by every batch and head.
#[derive(Clone, Copy, Default)]
pub enum AttentionMask<'a> {
    #[default]
    None,
    /// Row-major `[query_len, key_len]`; `true` allows the pair.
    Dense(&'a [bool]),
    /// `allowed(i, j)` for query row `i` (in `0..query_len`, not offset) and key `j`.
    Function(&'a (dyn Fn(usize, usize) -> bool + Sync)),
}

impl std::fmt::Debug for AttentionMask<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttentionMask::None => formatter.write_str("None"),
            AttentionMask::Dense(mask) => write!(formatter, "Dense({} entries)", mask.len()),
            AttentionMask::Function(_) => formatter.write_str("Function(..)"),
        }
    }
}

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

/// `output = softmax(scale * q k^T, masked) v` per batch and head; see the module docs.
/// Allocates its scratch (scores and per-head results) per call.
pub fn scaled_dot_product_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: &AttentionShape,
    options: &AttentionOptions<'_>,
    output: &mut [f32],
) -> KernelResult<()> {
    check_shapes(q, k, v, shape, options, output)?;
    let AttentionShape {
        batch,
        query_len,
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
    let head_output_size = query_len * head_dim;
    // Each task writes one head's `[query_len, head_dim]` result here; they are interleaved
    // into `output` afterwards.
    let mut per_head = vec![0.0f32; batch * n_heads * head_output_size];
    let failure = Mutex::new(None);
    threading::run_chunks_mut(&mut per_head, head_output_size, |task, head_output| {
        let (batch_index, head) = (task / n_heads, task % n_heads);
        let kv_head = head / heads_per_kv_head;
        let head_task = HeadTask {
            q,
            k,
            v,
            shape,
            options,
            scale,
            batch_index,
            head,
            kv_head,
        };
        if let Err(error) = head_task.run(head_output)
            && let Ok(mut failure) = failure.lock()
        {
            *failure = Some(error);
        }
    });
    if let Some(error) = failure.into_inner().ok().flatten() {
        return Err(error);
    }
    let hidden = n_heads * head_dim;
    for (task, head_output) in per_head.chunks_exact(head_output_size).enumerate() {
        let (batch_index, head) = (task / n_heads, task % n_heads);
        for (row, values) in head_output.chunks_exact(head_dim).enumerate() {
            let start = (batch_index * query_len + row) * hidden + head * head_dim;
            output[start..start + head_dim].copy_from_slice(values);
        }
    }
    Ok(())
}

/// Query rows processed together by one head.
const QUERY_BLOCK: usize = 64;

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
    fn run(&self, head_output: &mut [f32]) -> KernelResult<()> {
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
        if key_len == 0 {
            head_output.fill(0.0);
            return Ok(());
        }
        let keys = MatrixRef::new(&self.k[kv_start..], key_len, head_dim, kv_stride, 1)?;
        let values = MatrixRef::new(&self.v[kv_start..], key_len, head_dim, kv_stride, 1)?;
        let mut scores = vec![0.0f32; QUERY_BLOCK.min(query_len) * key_len];
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
            for (row_offset, row) in scores.chunks_exact_mut(key_len).enumerate() {
                self.mask_and_normalise(first_row + row_offset, row);
            }
            gemm_sequential(
                Lhs::Matrix(MatrixRef::row_major(scores, rows, key_len)?),
                Rhs::Matrix(values),
                &mut head_output[first_row * head_dim..][..rows * head_dim],
                head_dim,
                &GemmOptions::default(),
            )?;
        }
        Ok(())
    }

    /// Scales one row of scores, masks it, and turns it into probabilities (all zeros when no
    /// key is allowed).
    fn mask_and_normalise(&self, query_row: usize, row: &mut [f32]) {
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

fn check_shapes(
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
    if shape.n_kv_heads == 0 || !shape.n_heads.is_multiple_of(shape.n_kv_heads) {
        return Err(invalid_parameter(
            "attention",
            format!(
                "{} query heads cannot share {} key/value heads evenly",
                shape.n_heads, shape.n_kv_heads
            ),
        ));
    }
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
