//! The elementwise vocabulary: activation functions and binary operations, with everything the
//! compiler knows about each (its `.nn` name, its FLOPs per element).
//!
//! This file is one block on purpose: `Activation` and `BinaryOp` are about to move to the shared
//! `nnc-ops` crate that the compiler and the runtime both use, and their properties move with
//! them. Adding an activation means adding its variant here, its row in [`Activation::ALL`], its
//! name and its FLOPs; every other match on `Activation` that must change is exhaustive and stops
//! the build until it does.

/// An elementwise activation function.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// `x` if positive, else `negative_slope * x`.
    LeakyRelu { negative_slope: f32 },
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    /// Hyperbolic tangent.
    Tanh,
    /// `x * sigmoid(x)`, also called Swish.
    Silu,
    /// `x * relu6(x + 3) / 6`.
    HardSwish,
    /// `relu6(x + 3) / 6`.
    HardSigmoid,
    /// `x * Φ(x)`; with `tanh_approximation`, PyTorch's `approximate="tanh"` form.
    Gelu { tanh_approximation: bool },
}

impl Activation {
    /// One activation of every variant, and both forms of GELU (their FLOPs differ), for tests
    /// and documentation checks that must cover every activation. A variant missing here is
    /// caught by the exhaustive match in this file's test.
    pub const ALL: [Activation; 10] = [
        Activation::Relu,
        Activation::Relu6,
        Activation::LeakyRelu {
            negative_slope: 0.01,
        },
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Silu,
        Activation::HardSwish,
        Activation::HardSigmoid,
        Activation::Gelu {
            tanh_approximation: false,
        },
        Activation::Gelu {
            tanh_approximation: true,
        },
    ];

    /// The name used in `.nn` files.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Relu6 => "relu6",
            Activation::LeakyRelu { .. } => "leaky_relu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::Silu => "silu",
            Activation::HardSwish => "hard_swish",
            Activation::HardSigmoid => "hard_sigmoid",
            Activation::Gelu { .. } => "gelu",
        }
    }

    /// FLOPs per element, transcendental functions (`exp`, `tanh`, `erf`) counted as one FLOP
    /// each, as `docs/cost-model.md` states.
    pub fn flops_per_element(self) -> u64 {
        match self {
            // max(x, 0)
            Activation::Relu => 1,
            // min(max(x, 0), 6)
            Activation::Relu6 => 2,
            // compare, multiply
            Activation::LeakyRelu { .. } => 2,
            // negate, exp, add 1, divide
            Activation::Sigmoid => 4,
            Activation::Tanh => 1,
            // sigmoid, then multiply by x
            Activation::Silu => 5,
            // add 3, max, min, divide by 6
            Activation::HardSigmoid => 4,
            // hard sigmoid, then multiply by x
            Activation::HardSwish => 5,
            // x * 0.5 * (1 + erf(x / sqrt 2)): multiply, erf, add, multiply, multiply
            Activation::Gelu {
                tanh_approximation: false,
            } => 5,
            // 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x³))): x³ (2), ×c (1), + x (1), ×sqrt(2/pi) (1),
            // tanh (1), + 1 (1), × 0.5 (1), × x (1)
            Activation::Gelu {
                tanh_approximation: true,
            } => 9,
        }
    }
}

/// An elementwise binary operation with NumPy-style broadcasting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinaryOp {
    /// Every binary operation.
    pub const ALL: [BinaryOp; 4] = [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div];

    /// The name printed in IR.
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
        }
    }

    /// FLOPs per output element: one arithmetic operation.
    pub fn flops_per_element(self) -> u64 {
        match self {
            BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Activation, BinaryOp};

    // These matches fail to compile when a variant is added: a reminder to list it in `ALL`.

    fn activation_is_listed(activation: Activation) -> bool {
        match activation {
            Activation::Relu
            | Activation::Relu6
            | Activation::LeakyRelu { .. }
            | Activation::Sigmoid
            | Activation::Tanh
            | Activation::Silu
            | Activation::HardSwish
            | Activation::HardSigmoid
            | Activation::Gelu { .. } => Activation::ALL.contains(&activation),
        }
    }

    fn binary_op_is_listed(op: BinaryOp) -> bool {
        match op {
            BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div => {
                BinaryOp::ALL.contains(&op)
            }
        }
    }

    #[test]
    fn every_variant_is_listed_and_costs_flops() {
        for activation in Activation::ALL {
            assert!(activation_is_listed(activation));
            assert!(activation.flops_per_element() >= 1, "{activation:?}");
        }
        for op in BinaryOp::ALL {
            assert!(binary_op_is_listed(op));
            assert_eq!(op.flops_per_element(), 1, "{op:?}");
        }
    }
}
