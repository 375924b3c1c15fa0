//! Pooling: `max_pool1d/2d`, `avg_pool1d/2d` (a window sliding over the spatial axes),
//! `global_avg_pool`, `global_max_pool` (over all spatial axes, kept as size 1), and `mean_pool`
//! (a masked mean over a sequence, for sentence embeddings).

use crate::ir::{AttentionAttrs, Op, PoolAttrs, SparsePattern};
use crate::lower::Eval;
use crate::lower::call::CallCx;
use crate::lower::value::Value;

/// What a pooling window computes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Pooling {
    Max,
    Average,
}

/// `max_pool1d/2d` and `avg_pool1d/2d`, with `spatial` = 1 or 2 spatial axes.
///
/// Only max pooling takes a `dilation`, and only average pooling a `count_include_pad`, as in
/// PyTorch; the other gets the neutral value.
pub(super) fn pool(cx: &mut CallCx<'_, '_>, spatial: usize, pooling: Pooling) -> Eval<Value> {
    let x = cx.tensor("x")?;
    let kernel = cx.spatial("kernel", spatial, None)?;
    let stride = match cx.present("stride") {
        true => cx.spatial("stride", spatial, None)?,
        false => kernel.clone(),
    };
    let padding = cx.spatial_allow_zero("padding", spatial, Some(0))?;
    let dilation = match pooling {
        Pooling::Max => cx.spatial("dilation", spatial, Some(1))?,
        Pooling::Average => vec![1; spatial],
    };
    let ceil_mode = cx.bool("ceil_mode", Some(false))?;
    let count_include_pad = match pooling {
        Pooling::Max => false,
        Pooling::Average => cx.bool("count_include_pad", Some(true))?,
    };
    let attrs = PoolAttrs {
        kernel,
        stride,
        padding,
        dilation,
        ceil_mode,
        count_include_pad,
        channels_last: false,
    };
    let op = match pooling {
        Pooling::Max => Op::MaxPool(attrs),
        Pooling::Average => Op::AvgPool(attrs),
    };
    cx.node(op, &[(x, Some("x"))]).map(Value::Tensor)
}

/// `global_avg_pool(x)` and `global_max_pool(x)`.
pub(super) fn global_pool(cx: &mut CallCx<'_, '_>, pooling: Pooling) -> Eval<Value> {
    let x = cx.tensor("x")?;
    let op = match pooling {
        Pooling::Max => Op::GlobalMaxPool {
            channels_last: false,
        },
        Pooling::Average => Op::GlobalAvgPool {
            channels_last: false,
        },
    };
    cx.node(op, &[(x, Some("x"))]).map(Value::Tensor)
}

/// `mean_pool(x, mask)`: the mean of `x [batch, seq, dim]` over the positions of the sequence where
/// `mask [batch, seq]` (i64 as for `attention`; the interpreter also reads f32) is nonzero, giving `[batch, dim]`:
/// sentence-transformers' mean pooling, `Σ x·mask / max(Σ mask, 1e-9)` for a 0/1 mask, zeros
/// where the mask is all 0.
///
/// Built from one existing node: a one-head attention of a single query over the keys the mask
/// keeps, with all scores 0 (`q` and `k` are `x` times 0), gives each kept position the weight
/// `1 / count` and each padded one 0, so its output is the masked mean of `v = x`; the attention
/// kernels already take the mask and give zeros when no key is kept.
pub(super) fn mean_pool(cx: &mut CallCx<'_, '_>) -> Eval<Value> {
    let x = cx.tensor("x")?;
    let mask = cx.tensor("mask")?;
    let x_shape = cx.shape(x);
    let &[batch, seq, dim] = x_shape.as_slice() else {
        let message =
            format!("`x` of `mean_pool` must be [batch, seq, dim], but has shape {x_shape:?}");
        return Err(cx.error("x", message, None));
    };
    let mask_shape = cx.shape(mask);
    if mask_shape != [batch, seq] {
        let message = format!(
            "`mask` of `mean_pool` must be [batch, seq] = {:?}, but has shape {mask_shape:?}",
            [batch, seq],
        );
        return Err(cx.error("mask", message, None));
    }
    let zero = Op::Affine {
        scale: 0.0,
        shift: 0.0,
    };
    let keys = cx.node(zero.clone(), &[(x, Some("x"))])?;
    let first = cx.node(
        Op::Slice {
            axis: 1,
            start: 0,
            end: 1,
        },
        &[(keys, Some("x"))],
    )?;
    let attrs = AttentionAttrs {
        heads: 1,
        kv_heads: 1,
        head_dim: dim,
        causal: false,
        scale: 1.0,
        pattern: SparsePattern::default(),
        kv_cache: None,
        key_padding_mask: true,
    };
    let means = cx.node(
        Op::Attention(attrs),
        &[
            (first, Some("x")),
            (keys, Some("x")),
            (x, Some("x")),
            (mask, Some("mask")),
        ],
    )?;
    cx.node(
        Op::Reshape {
            shape: vec![batch, dim],
        },
        &[(means, None)],
    )
    .map(Value::Tensor)
}
