//! The fully connected layer, `y = x * W^T + b`, with its weight packed once at load time.

use crate::error::{KernelResult, check_length, invalid_parameter};
use crate::kernels::activation::Activation;
use crate::kernels::gemm::{
    Bias, Epilogue, GemmOptions, Lhs, MatrixRef, PackedMatrix, Rhs, gemm_of_weights,
};

/// A linear layer ready to run: `W^T` packed for the GEMM, the bias, and an optional activation
/// fused into the GEMM's epilogue.
#[derive(Clone, Debug)]
pub struct PackedLinear {
    weight: PackedMatrix,
    bias: Option<Vec<f32>>,
    activation: Option<Activation>,
    in_features: usize,
    out_features: usize,
}

impl PackedLinear {
    /// Packs a PyTorch-style weight of shape `[out_features, in_features]` (row-major) and an
    /// optional bias of length `out_features`.
    pub fn new(
        weight: &[f32],
        out_features: usize,
        in_features: usize,
        bias: Option<&[f32]>,
    ) -> KernelResult<Self> {
        let expected = out_features
            .checked_mul(in_features)
            .ok_or_else(|| invalid_parameter("linear", "the weight's size overflows usize"))?;
        check_length("linear", "weight", expected, weight.len())?;
        if let Some(bias) = bias {
            check_length("linear", "bias", out_features, bias.len())?;
        }
        Ok(Self {
            weight: PackedMatrix::from_linear_weight(weight, out_features, in_features)?,
            bias: bias.map(<[f32]>::to_vec),
            activation: None,
            in_features,
            out_features,
        })
    }

    /// The same layer with `activation` applied to its output, fused into the GEMM.
    pub fn with_activation(mut self, activation: Option<Activation>) -> Self {
        self.activation = activation;
        self
    }

    /// The length of an input row.
    pub fn in_features(&self) -> usize {
        self.in_features
    }

    /// The length of an output row.
    pub fn out_features(&self) -> usize {
        self.out_features
    }

    /// The fused activation, if any.
    pub fn activation(&self) -> Option<Activation> {
        self.activation
    }

    /// `output[rows, out] = activation(input[rows, in] * W^T + b)`; both row-major.
    pub fn forward(&self, input: &[f32], rows: usize, output: &mut [f32]) -> KernelResult<()> {
        self.run(input, rows, None, output)
    }

    /// `output = activation(input * W^T + b + residual)`, with `residual` (a skip connection,
    /// `[rows, out]`) added in the GEMM's epilogue while each tile is still in cache, so the
    /// residual add costs no pass over memory of its own.
    pub fn forward_residual(
        &self,
        input: &[f32],
        rows: usize,
        residual: &[f32],
        output: &mut [f32],
    ) -> KernelResult<()> {
        self.run(input, rows, Some(residual), output)
    }

    fn run(
        &self,
        input: &[f32],
        rows: usize,
        residual: Option<&[f32]>,
        output: &mut [f32],
    ) -> KernelResult<()> {
        check_length("linear", "input", rows * self.in_features, input.len())?;
        check_length("linear", "output", rows * self.out_features, output.len())?;
        if let Some(residual) = residual {
            check_length("linear", "residual", output.len(), residual.len())?;
        }
        let bias = self.bias.as_deref().map(Bias::PerColumn);
        let epilogue = Epilogue::from_parts(bias, self.activation);
        let input = MatrixRef::row_major(input, rows, self.in_features)?;
        gemm_of_weights(
            Lhs::Matrix(input),
            Rhs::Packed(&self.weight),
            output,
            self.out_features,
            &GemmOptions {
                accumulate: false,
                epilogue,
                residual,
            },
        )
    }
}

/// `output = layer(input)` for `rows` input rows; the same as `layer.forward`.
pub fn linear(
    input: &[f32],
    rows: usize,
    layer: &PackedLinear,
    output: &mut [f32],
) -> KernelResult<()> {
    layer.forward(input, rows, output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference;
    use crate::test_support::{assert_close, values};
    use proptest::prelude::*;

    fn cases() -> impl Strategy<Value = (usize, usize, usize, Vec<f32>, Vec<f32>, Vec<f32>, bool)> {
        (1..12usize, 1..40usize, 1..40usize).prop_flat_map(|(rows, in_features, out_features)| {
            (
                Just(rows),
                Just(in_features),
                Just(out_features),
                values(rows * in_features),
                values(out_features * in_features),
                values(out_features),
                any::<bool>(),
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn linear_matches_reference(
            (rows, in_features, out_features, x, weight, bias, with_bias) in cases()
        ) {
            let bias = with_bias.then_some(bias.as_slice());
            let layer = PackedLinear::new(&weight, out_features, in_features, bias).unwrap();
            let mut y = vec![0.0; rows * out_features];
            linear(&x, rows, &layer, &mut y).unwrap();
            let expected =
                reference::linear(&x, rows, &weight, out_features, in_features, bias);
            assert_close(&y, &expected, 1e-4);

            let layer = layer.with_activation(Some(Activation::Relu6));
            layer.forward(&x, rows, &mut y).unwrap();
            let expected: Vec<f32> = expected
                .iter()
                .map(|&value| reference::activation(value, Activation::Relu6))
                .collect();
            assert_close(&y, &expected, 1e-4);
        }

        #[test]
        fn residual_linear_matches_reference(
            (rows, in_features, out_features, x, weight, bias, with_bias) in cases(),
            residual_seed in values(12 * 40),
        ) {
            let bias = with_bias.then_some(bias.as_slice());
            let residual = &residual_seed[..rows * out_features];
            let layer = PackedLinear::new(&weight, out_features, in_features, bias)
                .unwrap()
                .with_activation(Some(Activation::Relu));
            let mut y = vec![f32::NAN; rows * out_features];
            layer.forward_residual(&x, rows, residual, &mut y).unwrap();
            let product = reference::linear(&x, rows, &weight, out_features, in_features, bias);
            let expected: Vec<f32> = product
                .iter()
                .zip(residual)
                .map(|(&value, &skip)| reference::activation(value + skip, Activation::Relu))
                .collect();
            assert_close(&y, &expected, 1e-4);
        }
    }

    #[test]
    fn wrong_lengths_are_errors() {
        assert!(PackedLinear::new(&[0.0; 5], 2, 3, None).is_err());
        assert!(PackedLinear::new(&[0.0; 6], 2, 3, Some(&[0.0; 3])).is_err());
        let layer = PackedLinear::new(&[0.0; 6], 2, 3, None).unwrap();
        let mut y = [0.0; 4];
        assert!(layer.forward(&[0.0; 5], 2, &mut y).is_err());
        assert!(layer.forward(&[0.0; 6], 2, &mut y[..3]).is_err());
    }
}
