//! Element-wise activations with PyTorch's definitions, in place and out of place, vectorised
//! and run in parallel over large slices.
//!
//! The [`Activation`] enum and the scalar function of each activation are defined in
//! `nnc_ops::activation` (re-exported here at their old path); this module runs those functions
//! over slices, with one loop per activation so that each compiles to its own vectorised body.

use crate::error::{KernelResult, check_length};
use crate::kernels::vectorize;
use crate::threading;
use nnc_ops::activation::{
    gelu, gelu_tanh, hard_sigmoid, hard_swish, leaky_relu, relu, relu6, sigmoid, silu,
};
use nnc_ops::math;

pub use nnc_ops::Activation;

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

#[cfg(test)]
mod tests;
