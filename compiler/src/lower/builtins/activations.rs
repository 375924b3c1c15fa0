//! Activations, all elementwise (`relu`, `gelu`, `silu`, ..., and the unary math functions
//! `sqrt`, `exp`, `erf`, `abs`, `pow` by a number; `pow` by a tensor is a binary operation),
//! `softmax` and `log_softmax`.
//!
//! An activation without arguments needs only its row in the table, pointing at [`activation`]
//! with its [`Activation`]; one with arguments reads them in a small function here.

use crate::ir::{Activation, BinaryOp, Op};
use crate::lower::Eval;
use crate::lower::call::CallCx;
use crate::lower::value::Value;

/// Applies `activation` to the argument `x`.
pub(super) fn activation(cx: &mut CallCx<'_, '_>, activation: Activation) -> Eval<Value> {
    let x = cx.tensor("x")?;
    cx.node(Op::Activation(activation), &[(x, Some("x"))])
        .map(Value::Tensor)
}

/// `leaky_relu(x, negative_slope = 0.01)`.
pub(super) fn leaky_relu(cx: &mut CallCx<'_, '_>) -> Eval<Value> {
    let negative_slope = cx.float("negative_slope", Some(0.01))? as f32;
    activation(cx, Activation::LeakyRelu { negative_slope })
}

/// `gelu(x, approximate = "none")`, or `"tanh"` for the tanh approximation.
pub(super) fn gelu(cx: &mut CallCx<'_, '_>) -> Eval<Value> {
    let approximate = cx.string("approximate", Some("none"))?;
    let gelu = match approximate.as_str() {
        "none" => Activation::Gelu,
        "tanh" => Activation::GeluTanh,
        other => {
            return Err(cx.error(
                "approximate",
                format!("unknown GELU approximation \"{other}\""),
                Some("use \"none\" (exact, with erf) or \"tanh\""),
            ));
        }
    };
    activation(cx, gelu)
}

/// `softmax(x, dim = -1)`.
pub(super) fn softmax(cx: &mut CallCx<'_, '_>) -> Eval<Value> {
    let x = cx.tensor("x")?;
    let rank = cx.rank(x);
    let axis = cx.axis("dim", rank, Some(-1))?;
    cx.node(Op::Softmax { axis }, &[(x, Some("x"))])
        .map(Value::Tensor)
}

/// `log_softmax(x, dim = -1)`.
pub(super) fn log_softmax(cx: &mut CallCx<'_, '_>) -> Eval<Value> {
    let x = cx.tensor("x")?;
    let rank = cx.rank(x);
    let axis = cx.axis("dim", rank, Some(-1))?;
    cx.node(Op::LogSoftmax { axis }, &[(x, Some("x"))])
        .map(Value::Tensor)
}

/// `pow(x, exponent)`: a tensor to the power of a number (the `pow` activation), or of a tensor,
/// elementwise with broadcasting as `+ - * /` (the binary `pow`).
pub(super) fn pow(cx: &mut CallCx<'_, '_>) -> Eval<Value> {
    match cx.slot("exponent") {
        Some((Value::Tensor(_), _)) => {
            let x = cx.tensor("x")?;
            let exponent = cx.tensor("exponent")?;
            cx.node(
                Op::Binary(BinaryOp::Pow),
                &[(x, Some("x")), (exponent, Some("exponent"))],
            )
            .map(Value::Tensor)
        }
        Some((value, _)) if value.as_float().is_none() => {
            Err(cx.wrong_type("exponent", "a number or a tensor", &value))
        }
        _ => {
            let exponent = cx.float("exponent", None)? as f32;
            activation(cx, Activation::Pow { exponent })
        }
    }
}
