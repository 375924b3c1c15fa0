//! The values that lowering computes with: compile-time scalars and lists, and tensors in the IR.

use crate::ir;

/// A value of the `.nn` language during lowering.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    List(Vec<Value>),
    Tensor(ir::Value),
    /// The result of something that failed; uses of it are skipped without a new error.
    Poison,
}

impl Value {
    /// What the value is, for error messages: "the integer 3", "a tensor".
    pub(super) fn describe(&self) -> String {
        match self {
            Value::Int(value) => format!("the integer {value}"),
            Value::Float(value) => format!("the number {value}"),
            Value::Bool(value) => format!("the boolean {value}"),
            Value::Str(value) => format!("the string \"{value}\""),
            Value::List(_) => "a list".to_string(),
            Value::Tensor(_) => "a tensor".to_string(),
            Value::Poison => "an invalid value".to_string(),
        }
    }

    pub(super) fn is_tensor(&self) -> bool {
        matches!(self, Value::Tensor(_))
    }

    /// The value as a float, if it is a number.
    pub(super) fn as_float(&self) -> Option<f64> {
        match self {
            Value::Int(value) => Some(*value as f64),
            Value::Float(value) => Some(*value),
            _ => None,
        }
    }

    /// Whether `==` between the two is meaningful.
    pub(super) fn comparable(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Int(_) | Value::Float(_), Value::Int(_) | Value::Float(_)) => true,
            (Value::Bool(_), Value::Bool(_)) | (Value::Str(_), Value::Str(_)) => true,
            (Value::List(a), Value::List(b)) => a.iter().zip(b).all(|(a, b)| a.comparable(b)),
            _ => false,
        }
    }

    /// Equality where an integer equals the float of the same value.
    pub(super) fn loosely_equals(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Int(a), Value::Int(b)) => a == b,
            (a @ (Value::Int(_) | Value::Float(_)), b @ (Value::Int(_) | Value::Float(_))) => {
                a.as_float() == b.as_float()
            }
            (Value::List(a), Value::List(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.loosely_equals(b))
            }
            (a, b) => a == b,
        }
    }
}
