//! Built-in functions on compile-time numbers: `dim`, `min`, `max` and `sqrt`. They compute a
//! value during lowering and emit no node (except `sqrt` of a tensor, the elementwise
//! activation).

use crate::ir::Activation;
use crate::lower::Eval;
use crate::lower::call::CallCx;
use crate::lower::value::Value;

/// Which of two numbers `min` and `max` keep.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Extremum {
    Min,
    Max,
}

/// `dim(x, axis)`: the size of an axis of a tensor.
pub(super) fn dim(cx: &mut CallCx<'_, '_>) -> Eval<Value> {
    let x = cx.tensor("x")?;
    let shape = cx.shape(x);
    let axis = cx.axis("axis", shape.len(), None)?;
    Ok(Value::Int(shape[axis] as i64))
}

/// `min(a, b)` and `max(a, b)`: an integer if both are integers, else a float.
pub(super) fn extremum(cx: &mut CallCx<'_, '_>, extremum: Extremum) -> Eval<Value> {
    let a = cx.required("a")?;
    let b = cx.required("b")?;
    let pick_min = extremum == Extremum::Min;
    match (&a, &b) {
        (Value::Int(x), Value::Int(y)) => {
            Ok(Value::Int(if pick_min { *x.min(y) } else { *x.max(y) }))
        }
        _ => match (a.as_float(), b.as_float()) {
            (Some(x), Some(y)) => Ok(Value::Float(if pick_min { x.min(y) } else { x.max(y) })),
            _ => Err(cx.error(
                "a",
                format!(
                    "`{}` compares numbers, not {} and {}",
                    cx.name,
                    a.describe(),
                    b.describe()
                ),
                None,
            )),
        },
    }
}

/// `sqrt(x)` of a non-negative number, or of a tensor, elementwise.
pub(super) fn sqrt(cx: &mut CallCx<'_, '_>) -> Eval<Value> {
    if let Some((Value::Tensor(_), _)) = cx.slot("x") {
        return super::activation(cx, Activation::Sqrt);
    }
    let x = cx.float("x", None)?;
    if x < 0.0 {
        return Err(cx.error("x", format!("cannot take the square root of {x}"), None));
    }
    Ok(Value::Float(x.sqrt()))
}
