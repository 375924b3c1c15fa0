//! What the interpreter builds from a node's weights at load time: it executes the node's
//! [`Preparation`], the same description generated code prints into `from_weights`.

use nnc_runtime::KernelError;
use nnc_runtime::kernels::quantized::{QuantizedLinear, QuantizedMatrix};
use nnc_runtime::kernels::{conv, int8, linear::PackedLinear, norm, rope};

use super::Interpreter;
use crate::ir::{QuantTarget, Quantization, WeightStorage};
use crate::kernel_call::{BatchNormWeights, LayerWeights, Preparation};

/// What [`Interpreter::new`] prepared for a node.
pub(super) enum Prepared {
    Linear(PackedLinear),
    QuantizedLinear(QuantizedLinear),
    Conv1d(conv::PackedConv1d),
    /// A 2-D convolution over NCHW images, whatever the node's layout: the interpreter runs a
    /// channels-last convolution through the NCHW kernel between layout changes, so that -O2 is
    /// checked against a different kernel.
    Conv2d(conv::PackedConv2d),
    /// An int8 2-D convolution, over NCHW images like [`Prepared::Conv2d`].
    Conv2dInt8(int8::PackedConv2dInt8),
    /// A depthwise convolution with the 1×1 convolutions before and after it (either may be
    /// absent), [`Prepared::Conv2d`]s run one after the other over NCHW images: the reference
    /// for the runtime's banded `PackedDepthwiseBlock`.
    DepthwiseBlock {
        expand: Option<Box<Prepared>>,
        depthwise: Box<Prepared>,
        project: Option<Box<Prepared>>,
    },
    /// A convolution and the max pooling of its output, run one after the other: the reference
    /// for the runtime's banded `PackedConv2dMaxPool`.
    ConvMaxPool(Box<Prepared>, nnc_ops::MaxPool2dOptions),
    BatchNorm(norm::BatchNorm),
    Rope(rope::RopeTable),
}

impl Prepared {
    /// The 2-D convolution this is, f32 or int8.
    pub(super) fn as_conv2d(&self) -> Option<&dyn super::execute::NchwConv2d> {
        match self {
            Prepared::Conv2d(conv) => Some(conv),
            Prepared::Conv2dInt8(conv) => Some(conv),
            _ => None,
        }
    }
}

impl Interpreter<'_> {
    /// Builds what `preparation` describes from the interpreter's weights.
    pub(super) fn prepare(&self, preparation: &Preparation) -> Result<Prepared, KernelError> {
        Ok(match preparation {
            Preparation::Linear {
                out_features,
                in_features,
                weights,
                activation,
                storage,
            } => {
                let blocks = self.blocks(weights.weight);
                match (storage, blocks) {
                    // A GGUF tensor's blocks, taken as they are (no batch norm to fold).
                    (WeightStorage::Quantized(quantization), Some(blocks))
                        if weights.batch_norm.is_none() =>
                    {
                        let bias = weights.bias.map(|bias| self.param(bias));
                        let linear = QuantizedLinear::new(blocks.clone(), bias, quantization.mode)?;
                        Prepared::QuantizedLinear(linear.with_activation(*activation))
                    }
                    (
                        WeightStorage::Quantized(Quantization {
                            format: QuantTarget::Format(format),
                            mode,
                        }),
                        _,
                    ) => {
                        let (weight, bias) = self.fold_layer_weights(weights)?;
                        let weight = QuantizedMatrix::quantize(
                            *format,
                            &weight,
                            *out_features,
                            *in_features,
                        )?;
                        let linear = QuantizedLinear::new(weight, bias.as_deref(), *mode)?;
                        Prepared::QuantizedLinear(linear.with_activation(*activation))
                    }
                    // f32 weights, and as-stored weights that the file holds in f32.
                    _ => {
                        let (weight, bias) = self.fold_layer_weights(weights)?;
                        let linear = PackedLinear::new(
                            &weight,
                            *out_features,
                            *in_features,
                            bias.as_deref(),
                        )?;
                        Prepared::Linear(linear.with_activation(*activation))
                    }
                }
            }
            Preparation::Conv1d {
                weight_shape,
                options,
                weights,
                activation,
            } => {
                let (weight, bias) = self.fold_layer_weights(weights)?;
                let conv =
                    conv::PackedConv1d::new(&weight, *weight_shape, bias.as_deref(), *options)?;
                Prepared::Conv1d(conv.with_activation(*activation))
            }
            Preparation::Conv2d {
                weight_shape,
                options,
                layout: _,
                weights,
                activation,
                storage,
            } => {
                let (weight, bias) = self.fold_layer_weights(weights)?;
                match storage {
                    WeightStorage::F32 => {
                        let conv = conv::PackedConv2d::new(
                            &weight,
                            *weight_shape,
                            bias.as_deref(),
                            *options,
                        )?;
                        Prepared::Conv2d(conv.with_activation(*activation))
                    }
                    WeightStorage::Int8(int8) => {
                        let conv = int8::PackedConv2dInt8::new(
                            &weight,
                            *weight_shape,
                            bias.as_deref(),
                            *options,
                            false,
                            int8.input,
                        )?;
                        Prepared::Conv2dInt8(conv.with_activation(*activation))
                    }
                    WeightStorage::Quantized(_) => {
                        unreachable!("prepare: conv weights are never stored in a block format")
                    }
                }
            }
            Preparation::DepthwiseBlock {
                expand,
                depthwise,
                project,
            } => {
                let optional = |layer: &Option<Box<Preparation>>| {
                    layer
                        .as_deref()
                        .map(|layer| self.prepare(layer).map(Box::new))
                        .transpose()
                };
                Prepared::DepthwiseBlock {
                    expand: optional(expand)?,
                    depthwise: Box::new(self.prepare(depthwise)?),
                    project: optional(project)?,
                }
            }
            Preparation::ConvMaxPool { conv, pool } => {
                Prepared::ConvMaxPool(Box::new(self.prepare(conv)?), *pool)
            }
            Preparation::BatchNorm { parameters } => {
                let params = norm::BatchNormParams {
                    mean: self.param(parameters.mean),
                    variance: self.param(parameters.variance),
                    weight: Some(self.param(parameters.weight)),
                    bias: Some(self.param(parameters.bias)),
                    eps: parameters.eps,
                };
                Prepared::BatchNorm(norm::BatchNorm::new(&params)?)
            }
            Preparation::Rope {
                head_dim,
                theta,
                positions,
            } => Prepared::Rope(rope::RopeTable::new(*head_dim, *theta, *positions)?),
        })
    }

    /// The weight and bias of a conv or linear layer, with a folded batch norm applied.
    fn fold_layer_weights(
        &self,
        weights: &LayerWeights,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>), KernelError> {
        let weight = self.param(weights.weight);
        let bias = weights.bias.map(|bias| self.param(bias));
        let Some(batch_norm) = weights.batch_norm else {
            return Ok((weight.to_vec(), bias.map(<[f32]>::to_vec)));
        };
        let BatchNormWeights {
            weight: bn_weight,
            bias: bn_bias,
            mean,
            variance,
            eps,
        } = batch_norm;
        let batch_norm = norm::BatchNormToFold {
            weight: self.param(bn_weight),
            bias: self.param(bn_bias),
            mean: self.param(mean),
            variance: self.param(variance),
            eps,
        };
        let folded = norm::fold_batch_norm(weight, bias, &batch_norm)?;
        Ok((folded.weight, Some(folded.bias)))
    }

    /// The data of a weight that a preparation consumes.
    fn param(&self, value: crate::ir::Value) -> &[f32] {
        self.weight(value).unwrap_or_else(|| {
            unreachable!("param: prepared layers read their weights from params")
        })
    }
}
