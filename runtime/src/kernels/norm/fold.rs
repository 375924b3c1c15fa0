//! Folding an inference batch norm into the conv or linear layer before it, once, when a model
//! is built: the layer then produces the normalised output by itself.

use crate::error::{KernelError, KernelResult};

/// Folds an inference batch norm that follows a conv or linear layer into that layer's weights:
/// each output channel's row of `weight` is scaled by `bn_weight / sqrt(variance + eps)` and the
/// bias becomes `(bias - mean) * scale + bn_bias`. Runs once, when a model is built.
pub struct FoldedBatchNorm {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// The parameters of a batch norm to fold; see [`fold_batch_norm`].
pub struct BatchNormToFold<'a> {
    pub weight: &'a [f32],
    pub bias: &'a [f32],
    pub mean: &'a [f32],
    pub variance: &'a [f32],
    pub eps: f32,
}

/// Folds `batch_norm` into a layer with `weight` (`out_channels` rows) and optional `bias`.
pub fn fold_batch_norm(
    weight: &[f32],
    bias: Option<&[f32]>,
    batch_norm: &BatchNormToFold<'_>,
) -> KernelResult<FoldedBatchNorm> {
    let channels = batch_norm.mean.len();
    let lengths_agree = channels > 0
        && [
            batch_norm.weight.len(),
            batch_norm.bias.len(),
            batch_norm.variance.len(),
        ]
        .iter()
        .all(|&length| length == channels)
        && weight.len().is_multiple_of(channels)
        && bias.is_none_or(|bias| bias.len() == channels);
    if !lengths_agree {
        return Err(KernelError::InvalidParameter {
            operation: "fold_batch_norm",
            detail: format!(
                "{channels} channels do not match a weight of {} values",
                weight.len()
            ),
        });
    }
    let row = weight.len() / channels;
    let mut folded_weight = weight.to_vec();
    let mut folded_bias = vec![0.0; channels];
    for channel in 0..channels {
        let scale =
            batch_norm.weight[channel] / (batch_norm.variance[channel] + batch_norm.eps).sqrt();
        folded_weight[channel * row..(channel + 1) * row]
            .iter_mut()
            .for_each(|value| *value *= scale);
        let bias = bias.map_or(0.0, |bias| bias[channel]);
        folded_bias[channel] = (bias - batch_norm.mean[channel]) * scale + batch_norm.bias[channel];
    }
    Ok(FoldedBatchNorm {
        weight: folded_weight,
        bias: folded_bias,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_scales_each_output_channel() {
        // Two output channels of two weights each; variance + eps = 4 gives a scale of
        // bn_weight / 2.
        let batch_norm = BatchNormToFold {
            weight: &[2.0, 4.0],
            bias: &[1.0, -1.0],
            mean: &[0.5, 1.0],
            variance: &[3.0, 3.0],
            eps: 1.0,
        };
        let folded =
            fold_batch_norm(&[1.0, 2.0, 3.0, 4.0], Some(&[1.5, 0.0]), &batch_norm).unwrap();
        assert_eq!(folded.weight, [1.0, 2.0, 6.0, 8.0]);
        assert_eq!(
            folded.bias,
            [(1.5 - 0.5) * 1.0 + 1.0, (0.0 - 1.0) * 2.0 - 1.0]
        );
        let without_bias = fold_batch_norm(&[1.0, 2.0, 3.0, 4.0], None, &batch_norm).unwrap();
        assert_eq!(without_bias.bias, [-0.5 + 1.0, -2.0 - 1.0]);
        // Three weights do not split into two channels.
        assert!(fold_batch_norm(&[1.0, 2.0, 3.0], None, &batch_norm).is_err());
    }
}
