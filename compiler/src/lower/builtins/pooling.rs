//! Pooling: `max_pool1d/2d`, `avg_pool1d/2d` (a window sliding over the spatial axes) and
//! `global_avg_pool`, `global_max_pool` (over all spatial axes, kept as size 1).

use crate::ir::{Op, PoolAttrs};
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
