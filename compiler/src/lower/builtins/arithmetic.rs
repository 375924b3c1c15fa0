//! The tensor operators `+`, `-`, `*`, `/` and unary `-`. They have no row in the table, since
//! they are written as operators, not calls, but they emit nodes through a [`CallCx`] as built-ins
//! do, named after the statement's layer.

use crate::diagnostics::Span;
use crate::ir::{self, Op};
use crate::lower::call::CallCx;
use crate::lower::value::Value;
use crate::lower::{Builder, Eval, Lowerer};

/// Lowers `a op b` on two tensors.
pub(in crate::lower) fn binary(
    lowerer: &mut Lowerer<'_>,
    builder: &mut Builder,
    op: ir::BinaryOp,
    a: ir::Value,
    b: ir::Value,
    span: Span,
    node_name: &str,
) -> Eval<Value> {
    let mut cx = CallCx::for_operator(lowerer, builder, span, node_name, op.name());
    cx.node(Op::Binary(op), &[(a, None), (b, None)])
        .map(Value::Tensor)
}

/// Lowers `x * scale + shift` for a tensor `x` and numbers.
pub(in crate::lower) fn affine(
    lowerer: &mut Lowerer<'_>,
    builder: &mut Builder,
    x: ir::Value,
    scale: f64,
    shift: f64,
    span: Span,
    node_name: &str,
) -> Eval<Value> {
    let mut cx = CallCx::for_operator(lowerer, builder, span, node_name, "affine");
    cx.node(
        Op::Affine {
            scale: scale as f32,
            shift: shift as f32,
        },
        &[(x, None)],
    )
    .map(Value::Tensor)
}
