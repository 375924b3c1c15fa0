//! Element-wise activations with PyTorch's definitions, in place and out of place, vectorised
//! and run in parallel over large slices.
//!
//! The [`Activation`] enum and the scalar function of each activation are defined in
//! `nnc_ops::activation` (re-exported here at their old path); this module runs those functions
//! over slices. `Activation::with_scalar_function` hands each activation's function to the loop
//! as a type of its own, so each compiles to its own vectorised body, and this module needs no
//! change when an activation is added.

use crate::error::{KernelResult, check_length};
use crate::kernels::vectorize;
use crate::threading;
use nnc_ops::activation::ScalarMap;

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

/// Applies `activation` to every element of `values` on the calling thread: for kernels that
/// run it on short pieces of their output (the GEMM's epilogue), where the parallel split's
/// bookkeeping would cost more than the work.
pub(crate) fn apply_activation_sequential(values: &mut [f32], activation: Activation) {
    apply_sequential(values, activation)
}

/// Elements per parallel task; smaller slices (such as the epilogue's rows) stay on one thread.
const PARALLEL_CHUNK: usize = 1 << 15;

fn apply_sequential(values: &mut [f32], activation: Activation) {
    #[cfg(target_arch = "x86_64")]
    if activation == Activation::Gelu && gelu_by_hand() {
        // SAFETY: `gelu_by_hand` checked that the processor has AVX2 and FMA.
        unsafe { gelu_avx2::gelu_in_place(values) };
        return;
    }
    activation.with_scalar_function(InPlace(values))
}

fn map_sequential(input: &[f32], output: &mut [f32], activation: Activation) {
    #[cfg(target_arch = "x86_64")]
    if activation == Activation::Gelu && gelu_by_hand() {
        // SAFETY: `gelu_by_hand` checked that the processor has AVX2 and FMA.
        unsafe { gelu_avx2::gelu_map(input, output) };
        return;
    }
    activation.with_scalar_function(OutOfPlace(input, output))
}

/// Whether GELU runs `gelu_avx2`'s loop: with AVX2 and FMA but not AVX-512F, where the generic
/// loop runs sixteen lanes a vector (the written-out loop was timed on AVX2 only).
#[cfg(target_arch = "x86_64")]
fn gelu_by_hand() -> bool {
    vectorize::has_avx2_fma() && !vectorize::has_avx512f()
}

/// The vectorised loop over a slice in place, compiled once per activation; costly functions
/// (`exp`, `erf`, `tanh` inside) run four vectors side by side.
struct InPlace<'a>(&'a mut [f32]);

impl ScalarMap for InPlace<'_> {
    type Output = ();
    fn map(self, function: impl Fn(f32) -> f32 + Copy) {
        vectorize::map_in_place(self.0, function)
    }
    fn map_costly(self, function: impl Fn(f32) -> f32 + Copy) {
        vectorize::map_in_place_interleaved(self.0, function)
    }
}

/// The vectorised loop from one slice into another, compiled once per activation, as
/// [`InPlace`].
struct OutOfPlace<'a>(&'a [f32], &'a mut [f32]);

impl ScalarMap for OutOfPlace<'_> {
    type Output = ();
    fn map(self, function: impl Fn(f32) -> f32 + Copy) {
        vectorize::map(self.0, self.1, function)
    }
    fn map_costly(self, function: impl Fn(f32) -> f32 + Copy) {
        vectorize::map_interleaved(self.0, self.1, function)
    }
}

#[cfg(target_arch = "x86_64")]
mod gelu_avx2;
#[cfg(test)]
mod tests;
