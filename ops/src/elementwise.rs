//! Elementwise operations: the binary arithmetic operations and the steps of a fused chain of
//! unary ones.

use crate::activation::Activation;

/// A binary arithmetic operation, with NumPy-style broadcasting where the kernel supports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    /// `left` to the power `right` (`f32::powf`, as ONNX's `Pow` and NumPy's `power`): NaN for a
    /// negative base and an exponent that is not an integer.
    Pow,
}

impl BinaryOp {
    /// Every binary operation.
    pub const ALL: [BinaryOp; 5] = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Pow,
    ];

    /// FLOPs per output element: one arithmetic operation (`Pow` is counted as one, as the
    /// `pow` activation by a constant is).
    pub fn flops_per_element(self) -> u64 {
        match self {
            BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Pow => 1,
        }
    }

    /// The name of the operation in `.nn` files and printed IR.
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Pow => "pow",
        }
    }

    /// The operation on one pair of values.
    #[inline(always)]
    pub fn apply(self, left: f32, right: f32) -> f32 {
        match self {
            BinaryOp::Add => left + right,
            BinaryOp::Sub => left - right,
            BinaryOp::Mul => left * right,
            BinaryOp::Div => left / right,
            BinaryOp::Pow => left.powf(right),
        }
    }
}

/// One step of a fused chain of elementwise operations, applied in order to every element.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ElementwiseStep {
    Activation(Activation),
    /// `x * scale + shift`.
    Affine {
        scale: f32,
        shift: f32,
    },
}

impl ElementwiseStep {
    /// The step applied to one value.
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            ElementwiseStep::Activation(activation) => activation.apply(x),
            ElementwiseStep::Affine { scale, shift } => x * scale + shift,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_operations_have_names_and_values() {
        let all = BinaryOp::ALL;
        let names: Vec<&str> = all.iter().map(|operation| operation.name()).collect();
        assert_eq!(names, ["add", "sub", "mul", "div", "pow"]);
        let values: Vec<f32> = all
            .iter()
            .map(|operation| operation.apply(6.0, 3.0))
            .collect();
        assert_eq!(values, [9.0, 3.0, 18.0, 2.0, 216.0]);
        assert!(BinaryOp::Pow.apply(-8.0, 1.0 / 3.0).is_nan());
        assert_eq!(BinaryOp::Pow.apply(-2.0, 3.0), -8.0);
    }

    #[test]
    fn steps_apply_in_their_own_way() {
        let affine = ElementwiseStep::Affine {
            scale: 2.0,
            shift: -1.0,
        };
        assert_eq!(affine.apply(3.0), 5.0);
        assert_eq!(
            ElementwiseStep::Activation(Activation::Relu).apply(-3.0),
            0.0
        );
    }
}
