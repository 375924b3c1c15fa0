//! Reductions over axes: `reduce_sum`, `reduce_mean`, `reduce_max`, `reduce_min`, `reduce_prod`,
//! `reduce_l1`, `reduce_l2`, `reduce_sum_square` and `reduce_log_sum_exp`.

use crate::ir::{Op, ReduceOp};
use crate::lower::Eval;
use crate::lower::call::{CallCx, normalize_axis};
use crate::lower::value::Value;

/// `reduce_sum(x, axes, keepdims = false)` and its siblings: `axes` is one axis or a list of
/// them (negative counting from the end), every axis when it is left out; `keepdims = true`
/// keeps the reduced axes as size 1.
pub(super) fn reduce(cx: &mut CallCx<'_, '_>, op: ReduceOp) -> Eval<Value> {
    let x = cx.tensor("x")?;
    let rank = cx.rank(x);
    let keepdims = cx.bool("keepdims", Some(false))?;
    let axes = match cx.slot("axes") {
        None => (0..rank).collect(),
        Some((Value::Int(axis), _)) => vec![reduction_axis(cx, axis, rank)?],
        Some(_) => {
            let listed = cx.int_list("axes", None)?;
            if listed.is_empty() {
                return Err(cx.error(
                    "axes",
                    "`axes` is empty",
                    Some("leave `axes` out to reduce over every axis"),
                ));
            }
            let mut axes = Vec::new();
            for axis in listed {
                let axis = reduction_axis(cx, axis, rank)?;
                if axes.contains(&axis) {
                    return Err(cx.error(
                        "axes",
                        format!("axis {axis} is listed twice in `axes`"),
                        Some("negative axes count from the end: -1 is the last"),
                    ));
                }
                axes.push(axis);
            }
            axes.sort_unstable();
            axes
        }
    };
    cx.node(Op::Reduce { op, axes, keepdims }, &[(x, Some("x"))])
        .map(Value::Tensor)
}

/// One entry of `axes`, made non-negative; an error at `axes` when it is out of range.
fn reduction_axis(cx: &mut CallCx<'_, '_>, axis: i64, rank: usize) -> Eval<usize> {
    normalize_axis(axis, rank).ok_or_else(|| {
        cx.error(
            "axes",
            format!("axis {axis} is out of range for a tensor of rank {rank}"),
            Some("axes count from 0, or from -1 at the end"),
        )
    })
}
