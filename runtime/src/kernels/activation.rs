//! Element-wise activations with PyTorch's definitions, in place and out of place.
//!
//! Every activation is finite wherever PyTorch's is: `sigmoid`, `silu`, `tanh` and both GELUs
//! saturate cleanly at large magnitudes (±1e4 and beyond) instead of producing NaN or infinity.
//! GELU uses an `erf` accurate to about 1e-7 (absolute).

use crate::error::{KernelResult, check_length};
use crate::kernels::{math, vectorize};
use crate::threading;

/// An activation function, with its parameter where it has one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// `x` for `x >= 0`, `negative_slope * x` otherwise (`torch.nn.LeakyReLU`).
    LeakyRelu { negative_slope: f32 },
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// The hyperbolic tangent.
    Tanh,
    /// `x * sigmoid(x)`, also called swish.
    Silu,
    /// `x * relu6(x + 3) / 6`.
    HardSwish,
    /// `relu6(x + 3) / 6` (PyTorch's definition, not Keras's `0.2 x + 0.5`).
    HardSigmoid,
    /// Exact GELU: `x / 2 * (1 + erf(x / sqrt(2)))` (`approximate="none"`).
    Gelu,
    /// GELU's tanh approximation: `x / 2 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3)))`
    /// (`approximate="tanh"`).
    GeluTanh,
}

impl Activation {
    /// The activation of one value.
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Relu => relu(x),
            Activation::Relu6 => relu6(x),
            Activation::LeakyRelu { negative_slope } => leaky_relu(x, negative_slope),
            Activation::Sigmoid => sigmoid(x),
            Activation::Tanh => math::tanh(x),
            Activation::Silu => silu(x),
            Activation::HardSwish => hard_swish(x),
            Activation::HardSigmoid => hard_sigmoid(x),
            Activation::Gelu => gelu(x),
            Activation::GeluTanh => gelu_tanh(x),
        }
    }
}

/// Applies `activation` to every element of `values`.
pub fn apply_activation_in_place(values: &mut [f32], activation: Activation) {
    threading::run_chunks_mut(values, PARALLEL_CHUNK, |_, chunk| {
        apply_sequential(chunk, activation)
    });
}

/// `output[i] = activation(input[i])`; the slices must have the same length.
pub fn apply_activation(
    input: &[f32],
    output: &mut [f32],
    activation: Activation,
) -> KernelResult<()> {
    check_length("activation", "output", input.len(), output.len())?;
    threading::run_chunks_mut(output, PARALLEL_CHUNK, |index, chunk| {
        let input = &input[index * PARALLEL_CHUNK..][..chunk.len()];
        map_sequential(input, chunk, activation);
    });
    Ok(())
}

/// Elements per parallel task; smaller slices (such as the epilogue's rows) stay on one thread.
const PARALLEL_CHUNK: usize = 1 << 15;

fn apply_sequential(values: &mut [f32], activation: Activation) {
    // One loop per activation, so that each compiles to its own vectorised body.
    match activation {
        Activation::Relu => vectorize::map_in_place(values, relu),
        Activation::Relu6 => vectorize::map_in_place(values, relu6),
        Activation::LeakyRelu { negative_slope } => {
            vectorize::map_in_place(values, |x| leaky_relu(x, negative_slope))
        }
        Activation::Sigmoid => vectorize::map_in_place(values, sigmoid),
        Activation::Tanh => vectorize::map_in_place(values, math::tanh),
        Activation::Silu => vectorize::map_in_place(values, silu),
        Activation::HardSwish => vectorize::map_in_place(values, hard_swish),
        Activation::HardSigmoid => vectorize::map_in_place(values, hard_sigmoid),
        Activation::Gelu => vectorize::map_in_place(values, gelu),
        Activation::GeluTanh => vectorize::map_in_place(values, gelu_tanh),
    }
}

fn map_sequential(input: &[f32], output: &mut [f32], activation: Activation) {
    match activation {
        Activation::Relu => vectorize::map(input, output, relu),
        Activation::Relu6 => vectorize::map(input, output, relu6),
        Activation::LeakyRelu { negative_slope } => {
            vectorize::map(input, output, |x| leaky_relu(x, negative_slope))
        }
        Activation::Sigmoid => vectorize::map(input, output, sigmoid),
        Activation::Tanh => vectorize::map(input, output, math::tanh),
        Activation::Silu => vectorize::map(input, output, silu),
        Activation::HardSwish => vectorize::map(input, output, hard_swish),
        Activation::HardSigmoid => vectorize::map(input, output, hard_sigmoid),
        Activation::Gelu => vectorize::map(input, output, gelu),
        Activation::GeluTanh => vectorize::map(input, output, gelu_tanh),
    }
}

#[inline(always)]
pub(crate) fn relu(x: f32) -> f32 {
    // Written so that NaN passes through, as in PyTorch.
    if x < 0.0 { 0.0 } else { x }
}

#[inline(always)]
pub(crate) fn relu6(x: f32) -> f32 {
    x.clamp(0.0, 6.0)
}

#[inline(always)]
fn leaky_relu(x: f32, negative_slope: f32) -> f32 {
    if x < 0.0 { x * negative_slope } else { x }
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    // `e^-x` overflows to infinity for very negative x, and 1 / infinity is the right 0.
    1.0 / (1.0 + math::exp(-x))
}

#[inline(always)]
fn silu(x: f32) -> f32 {
    x / (1.0 + math::exp(-x))
}

#[inline(always)]
fn hard_sigmoid(x: f32) -> f32 {
    (x + 3.0).clamp(0.0, 6.0) / 6.0
}

#[inline(always)]
fn hard_swish(x: f32) -> f32 {
    x * (x + 3.0).clamp(0.0, 6.0) / 6.0
}

#[inline(always)]
fn gelu(x: f32) -> f32 {
    x * 0.5 * (1.0 + math::erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

#[inline(always)]
fn gelu_tanh(x: f32) -> f32 {
    // sqrt(2 / pi).
    const BETA: f32 = 0.797_884_6;
    const KAPPA: f32 = 0.044_715;
    0.5 * x * (1.0 + math::tanh(BETA * (x + KAPPA * x * x * x)))
}

#[cfg(test)]
mod tests;
