//! Fused chains of unary elementwise operations (activations and `x * scale + shift`), applied
//! in one pass over memory, and the affine map on its own. Generated code calls these where the
//! fusion passes merged consecutive elementwise nodes.

use crate::error::{KernelResult, check_length};
use crate::kernels::vectorize;
use nnc_ops::ElementwiseStep;

/// `output = input * scale + shift`, elementwise.
pub fn affine(input: &[f32], output: &mut [f32], scale: f32, shift: f32) {
    for (out, &value) in output.iter_mut().zip(input) {
        *out = value * scale + shift;
    }
}

/// `values = values * scale + shift`, elementwise, in place.
pub fn affine_in_place(values: &mut [f32], scale: f32, shift: f32) {
    for value in values {
        *value = *value * scale + shift;
    }
}

/// Applies `steps` in order to every element of `values`, in place.
pub fn elementwise_chain_in_place(values: &mut [f32], steps: &[ElementwiseStep]) {
    // Through `vectorize` so that the activations' fused multiply-adds compile to instructions
    // rather than calls to `fmaf` where the processor has FMA.
    vectorize::map_in_place(values, |value| {
        steps.iter().fold(value, |value, step| step.apply(value))
    });
}

/// Applies `steps` in order to every element, in one pass over memory.
pub fn elementwise_chain(
    input: &[f32],
    output: &mut [f32],
    steps: &[ElementwiseStep],
) -> KernelResult<()> {
    check_length("elementwise", "output", input.len(), output.len())?;
    vectorize::map(input, output, |value| {
        steps.iter().fold(value, |value, step| step.apply(value))
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nnc_ops::Activation;

    #[test]
    fn chains_apply_their_steps_in_order() {
        let steps = [
            ElementwiseStep::Affine {
                scale: 2.0,
                shift: -3.0,
            },
            ElementwiseStep::Activation(Activation::Relu),
        ];
        let input = [0.0, 1.0, 2.0, 3.0];
        let mut output = [9.0; 4];
        elementwise_chain(&input, &mut output, &steps).unwrap();
        assert_eq!(output, [0.0, 0.0, 1.0, 3.0]);
        let mut values = input;
        elementwise_chain_in_place(&mut values, &steps);
        assert_eq!(values, output);
        assert!(elementwise_chain(&input, &mut output[..3], &steps).is_err());
        affine(&input, &mut output, 2.0, -3.0);
        assert_eq!(output, [-3.0, -1.0, 1.0, 3.0]);
        affine_in_place(&mut values, 0.5, 1.0);
        assert_eq!(values, [1.0, 1.0, 1.5, 2.5]);
    }
}
