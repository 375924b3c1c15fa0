//! Shape operations: `reshape`, `flatten`, `transpose`, `permute`, `concat`, `slice` and `select`.
//! Axes may be negative, counting from the end as in PyTorch.

use crate::ir::{self, Op};
use crate::lower::Eval;
use crate::lower::call::{CallCx, normalize_axis};
use crate::lower::value::Value;

/// `reshape(x, shape)`, where one size may be -1.
pub(super) fn reshape(cx: &mut CallCx<'_, '_>) -> Eval<Value> {
    let x = cx.tensor("x")?;
    let dims = cx.int_list("shape", None)?;
    let count: usize = cx.shape(x).iter().product();
    let mut shape = Vec::new();
    let mut inferred = None;
    for (axis, &dim) in dims.iter().enumerate() {
        match dim {
            -1 if inferred.is_none() => {
                inferred = Some(axis);
                shape.push(1);
            }
            -1 => return Err(cx.error("shape", "only one dimension can be -1", None)),
            dim if dim >= 1 => shape.push(dim as usize),
            dim => {
                return Err(cx.error(
                    "shape",
                    format!("dimension {dim} is not a valid size"),
                    Some("sizes are at least 1; -1 infers one size"),
                ));
            }
        }
    }
    if let Some(axis) = inferred {
        let known = shape
            .iter()
            .try_fold(1usize, |known, &dim| known.checked_mul(dim))
            .unwrap_or(usize::MAX);
        if !count.is_multiple_of(known) {
            return Err(cx.error(
                "shape",
                format!("cannot reshape {} elements into {dims:?}", count),
                None,
            ));
        }
        shape[axis] = count / known;
    }
    cx.node(Op::Reshape { shape }, &[(x, Some("x"))])
        .map(Value::Tensor)
}

/// `flatten(x, start_dim, end_dim)`: merges the axes from `start_dim` to `end_dim`.
pub(super) fn flatten(cx: &mut CallCx<'_, '_>) -> Eval<Value> {
    let x = cx.tensor("x")?;
    let shape = cx.shape(x);
    let start = cx.axis("start_dim", shape.len(), Some(1))?;
    let end = cx.axis("end_dim", shape.len(), Some(-1))?;
    if start > end {
        return Err(cx.error(
            "end_dim",
            format!("end_dim ({end}) comes before start_dim ({start})"),
            None,
        ));
    }
    let mut new_shape = shape[..start].to_vec();
    new_shape.push(shape[start..=end].iter().product());
    new_shape.extend(&shape[end + 1..]);
    cx.node(Op::Reshape { shape: new_shape }, &[(x, Some("x"))])
        .map(Value::Tensor)
}

/// `transpose(x, dim0, dim1)`: swaps two axes.
pub(super) fn transpose(cx: &mut CallCx<'_, '_>) -> Eval<Value> {
    let x = cx.tensor("x")?;
    let rank = cx.rank(x);
    let dim0 = cx.axis("dim0", rank, None)?;
    let dim1 = cx.axis("dim1", rank, None)?;
    let mut perm: Vec<usize> = (0..rank).collect();
    perm.swap(dim0, dim1);
    cx.node(Op::Transpose { perm }, &[(x, Some("x"))])
        .map(Value::Tensor)
}

/// `permute(x, dims)`: reorders all axes.
pub(super) fn permute(cx: &mut CallCx<'_, '_>) -> Eval<Value> {
    let x = cx.tensor("x")?;
    let rank = cx.rank(x);
    let dims = cx.int_list("dims", None)?;
    let mut perm = Vec::new();
    for dim in dims {
        perm.push(normalize_axis(dim, rank).ok_or_else(|| {
            cx.error(
                "dims",
                format!("dim {dim} is out of range for a tensor of rank {rank}"),
                None,
            )
        })?);
    }
    cx.node(Op::Transpose { perm }, &[(x, Some("x"))])
        .map(Value::Tensor)
}

/// `concat(tensors, dim)`.
pub(super) fn concat(cx: &mut CallCx<'_, '_>) -> Eval<Value> {
    let tensors = cx.tensor_list("tensors")?;
    let rank = cx.rank(tensors[0]);
    let axis = cx.axis("dim", rank, Some(0))?;
    let inputs: Vec<(ir::Value, Option<&'static str>)> = tensors
        .iter()
        .map(|&tensor| (tensor, Some("tensors")))
        .collect();
    cx.node(Op::Concat { axis }, &inputs).map(Value::Tensor)
}

/// `slice(x, dim, start, end)`, with indices clamped to the axis as in Python.
pub(super) fn slice(cx: &mut CallCx<'_, '_>) -> Eval<Value> {
    let x = cx.tensor("x")?;
    let shape = cx.shape(x);
    let axis = cx.axis("dim", shape.len(), None)?;
    let size = shape[axis] as i64;
    let start = cx.int("start", Some(0))?;
    let end = cx.int("end", Some(size))?;
    let clamp = |index: i64| (if index < 0 { index + size } else { index }).clamp(0, size) as usize;
    cx.node(
        Op::Slice {
            axis,
            start: clamp(start),
            end: clamp(end),
        },
        &[(x, Some("x"))],
    )
    .map(Value::Tensor)
}

/// `select(x, dim, index)`: one index of an axis, which is removed.
pub(super) fn select(cx: &mut CallCx<'_, '_>) -> Eval<Value> {
    let x = cx.tensor("x")?;
    let shape = cx.shape(x);
    let axis = cx.axis("dim", shape.len(), None)?;
    let index = cx.int("index", None)?;
    let size = shape[axis] as i64;
    let normalized = if index < 0 { index + size } else { index };
    if !(0..size).contains(&normalized) {
        return Err(cx.error(
            "index",
            format!("index {index} is out of range for dim {axis} of size {size}"),
            None,
        ));
    }
    cx.node(
        Op::Select {
            axis,
            index: normalized as usize,
        },
        &[(x, Some("x"))],
    )
    .map(Value::Tensor)
}
