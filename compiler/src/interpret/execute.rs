//! The interpreter's execution of one [`KernelCall`]: the runtime kernel it names, called on
//! the interpreter's buffers.

use std::collections::HashMap;

use ndarray::{ArrayD, Axis, IxDyn};
use nnc_runtime::kernels::{self, attention, conv, flash_attention, norm, pool, rope};
use nnc_runtime::{KernelError, TensorRef};

use super::prepare::Prepared;
use super::{Buffer, Interpreter};
use crate::ir::{self, DType};
use crate::kernel_call::{Conv2dLayout, ConvLayout, KernelCall, NodeCall, Position};

impl Interpreter<'_> {
    /// Runs `node`'s call on `buffers` and returns its output, computed in `output` (zeros, one
    /// f32 per element of the node's output, allocated by the caller, which can fail).
    pub(super) fn execute(
        &self,
        node: &ir::NodeData,
        node_call: &NodeCall,
        prepared: Option<&Prepared>,
        buffers: &HashMap<ir::Value, Buffer>,
        workspace: &mut conv::ConvWorkspace,
        mut output: Vec<f32>,
    ) -> Result<Buffer, KernelError> {
        let operands = &node_call.operands;
        let x = |position: usize| self.f32_data(operands[position], buffers);
        // A fused residual is a prepared layer's second operand.
        let residual = |has_residual: bool| has_residual.then(|| x(1));
        match (&node_call.call, prepared) {
            (KernelCall::Linear { rows, residual: r }, Some(Prepared::Linear(linear))) => {
                match residual(*r) {
                    Some(residual) => {
                        linear.forward_residual(x(0), *rows, residual, &mut output)?
                    }
                    None => linear.forward(x(0), *rows, &mut output)?,
                }
            }
            (KernelCall::Linear { rows, residual: r }, Some(Prepared::QuantizedLinear(linear))) => {
                match residual(*r) {
                    Some(residual) => {
                        linear.forward_residual(x(0), *rows, residual, &mut output)?
                    }
                    None => linear.forward(x(0), *rows, &mut output)?,
                }
            }
            (
                KernelCall::Conv1d {
                    input_shape,
                    residual: r,
                },
                Some(Prepared::Conv1d(conv)),
            ) => match residual(*r) {
                Some(residual) => {
                    conv.forward_residual(x(0), *input_shape, residual, &mut output, workspace)?
                }
                None => conv.forward(x(0), *input_shape, &mut output, workspace)?,
            },
            (
                KernelCall::Conv2d {
                    input_shape,
                    layout,
                    residual: r,
                },
                Some(prepared),
            ) if prepared.as_conv2d().is_some() => {
                let conv = prepared.as_conv2d().expect("checked by the guard");
                match layout {
                    Conv2dLayout::Nchw => match residual(*r) {
                        Some(residual) => conv.forward_residual(
                            x(0),
                            *input_shape,
                            residual,
                            &mut output,
                            workspace,
                        )?,
                        None => conv.forward(x(0), *input_shape, &mut output, workspace)?,
                    },
                    Conv2dLayout::ChannelsLast => conv_through_nchw(
                        conv,
                        x(0),
                        *input_shape,
                        residual(*r),
                        &mut output,
                        workspace,
                    )?,
                    Conv2dLayout::NchwToChannelsLast => nchw_conv_into_channels_last(
                        conv,
                        x(0),
                        *input_shape,
                        residual(*r),
                        &mut output,
                        workspace,
                    )?,
                }
            }
            (KernelCall::ConvMaxPool { input_shape }, Some(Prepared::ConvMaxPool(conv, pool))) => {
                let Some(conv) = conv.as_conv2d() else {
                    unreachable!("execute: a pooled convolution is a 2-D convolution")
                };
                let unpooled_shape = conv.output_shape(*input_shape)?;
                let mut unpooled = vec![0.0; unpooled_shape.iter().product()];
                conv.forward(x(0), *input_shape, &mut unpooled, workspace)?;
                pool::max_pool2d(&unpooled, unpooled_shape, pool, &mut output)?
            }
            (
                KernelCall::DepthwiseBlock {
                    input_shape,
                    residual: r,
                },
                Some(Prepared::DepthwiseBlock {
                    expand,
                    depthwise,
                    project,
                }),
            ) => {
                fn conv2d(layer: &Prepared) -> &dyn NchwConv2d {
                    layer.as_conv2d().unwrap_or_else(|| {
                        unreachable!("execute: a depthwise block is of 2-D convolutions")
                    })
                }
                // Each layer over NCHW images, one after the other; the last one's output goes
                // back to channels-last.
                let mut shape = nchw(*input_shape);
                let mut values = to_nchw(x(0), *input_shape)?;
                let layers: Vec<_> = expand
                    .iter()
                    .chain([depthwise])
                    .chain(project)
                    .map(|layer| conv2d(layer))
                    .collect();
                let (last, inner) = layers.split_last().expect("a block has a depthwise layer");
                for layer in inner {
                    let next_shape = layer.output_shape(shape)?;
                    let mut next = vec![0.0; next_shape.iter().product()];
                    layer.forward(&values, shape, &mut next, workspace)?;
                    (values, shape) = (next, next_shape);
                }
                nchw_conv_into_channels_last(
                    *last,
                    &values,
                    shape,
                    residual(*r),
                    &mut output,
                    workspace,
                )?
            }
            (
                KernelCall::ConvTranspose2d {
                    input_shape,
                    weight_shape,
                    options,
                    bias,
                },
                None,
            ) => conv::conv_transpose2d(
                x(0),
                *input_shape,
                x(1),
                *weight_shape,
                bias.then(|| x(2)),
                options,
                &mut output,
                workspace,
            )?,
            (
                KernelCall::Resize2d {
                    input_shape,
                    options,
                },
                None,
            ) => kernels::resize::resize2d(x(0), *input_shape, options, &mut output)?,
            (
                KernelCall::Pad {
                    input_shape,
                    before,
                    after,
                    mode,
                    value,
                },
                None,
            ) => {
                kernels::resize::pad(x(0), input_shape, before, after, *mode, *value, &mut output)?
            }
            (KernelCall::MatMul { a_shape, b_shape }, None) => kernels::matmul::matmul(
                TensorRef::new(x(0), a_shape)?,
                TensorRef::new(x(1), b_shape)?,
                &mut output,
            )?,
            (
                KernelCall::MaxPool1d {
                    input_shape,
                    options,
                },
                None,
            ) => pool::max_pool1d(x(0), *input_shape, options, &mut output)?,
            (
                KernelCall::MaxPool2d {
                    input_shape,
                    options,
                    layout,
                },
                None,
            ) => match layout {
                ConvLayout::Nchw => pool::max_pool2d(x(0), *input_shape, options, &mut output)?,
                ConvLayout::ChannelsLast => {
                    let shape = pool::max_pool2d_output_shape(nchw(*input_shape), options)?;
                    pool_through_nchw(x(0), *input_shape, shape, &mut output, |input, output| {
                        pool::max_pool2d(input, nchw(*input_shape), options, output)
                    })?
                }
            },
            (
                KernelCall::AvgPool1d {
                    input_shape,
                    options,
                },
                None,
            ) => pool::avg_pool1d(x(0), *input_shape, options, &mut output)?,
            (
                KernelCall::AvgPool2d {
                    input_shape,
                    options,
                    layout,
                },
                None,
            ) => match layout {
                ConvLayout::Nchw => pool::avg_pool2d(x(0), *input_shape, options, &mut output)?,
                ConvLayout::ChannelsLast => {
                    let shape = pool::avg_pool2d_output_shape(nchw(*input_shape), options)?;
                    pool_through_nchw(x(0), *input_shape, shape, &mut output, |input, output| {
                        pool::avg_pool2d(input, nchw(*input_shape), options, output)
                    })?
                }
            },
            (
                KernelCall::GlobalAvgPool {
                    input_shape,
                    layout,
                },
                None,
            ) => match layout {
                ConvLayout::Nchw => pool::global_avg_pool(x(0), input_shape, &mut output)?,
                ConvLayout::ChannelsLast => {
                    let shape = nchw(four_dims(input_shape));
                    // The output, [n, c, 1, 1], is the same in both layouts.
                    let input = to_nchw(x(0), four_dims(input_shape))?;
                    pool::global_avg_pool(&input, &shape, &mut output)?
                }
            },
            (
                KernelCall::GlobalMaxPool {
                    input_shape,
                    layout,
                },
                None,
            ) => match layout {
                ConvLayout::Nchw => pool::global_max_pool(x(0), input_shape, &mut output)?,
                ConvLayout::ChannelsLast => {
                    let shape = nchw(four_dims(input_shape));
                    let input = to_nchw(x(0), four_dims(input_shape))?;
                    pool::global_max_pool(&input, &shape, &mut output)?
                }
            },
            (KernelCall::BatchNorm { input_shape }, Some(Prepared::BatchNorm(batch_norm))) => {
                norm::batch_norm(x(0), &mut output, input_shape, batch_norm)?
            }
            (KernelCall::LayerNorm { size, eps, affine }, None) => {
                let options = norm::LayerNormOptions {
                    weight: affine.then(|| x(1)),
                    bias: affine.then(|| x(2)),
                    eps: *eps,
                };
                norm::layer_norm(x(0), &mut output, *size, &options)?
            }
            (KernelCall::RmsNorm { size, eps, affine }, None) => {
                let options = norm::RmsNormOptions {
                    weight: affine.then(|| x(1)),
                    eps: *eps,
                };
                norm::rms_norm(x(0), &mut output, *size, &options)?
            }
            (KernelCall::Embedding { rows, dim }, None) => {
                let Buffer::I64(ids) = &buffers[&operands[0]] else {
                    unreachable!("execute: embedding ids are i64")
                };
                match self.blocks(operands[1]) {
                    // A stored table: only the rows looked up are dequantized.
                    Some(table) if self.graph.is_stored_table(operands[1]) => {
                        kernels::quantized::quantized_embedding_of_size(
                            table,
                            *rows,
                            *dim,
                            ids,
                            &mut output,
                        )?
                    }
                    _ => kernels::embedding::embedding(x(1), *rows, *dim, ids, &mut output)?,
                }
            }
            (
                KernelCall::PositionEmbedding {
                    position: Position::Start,
                    ..
                },
                None,
            ) => {
                // Positions start at 0: the first rows of the table.
                let length = output.len();
                output.copy_from_slice(&x(0)[..length]);
            }
            (
                KernelCall::Rope {
                    batch,
                    seq,
                    heads,
                    convention,
                    position: Position::Start,
                },
                Some(Prepared::Rope(table)),
            ) => {
                let options = rope::RopeOptions {
                    n_heads: *heads,
                    convention: *convention,
                    position_offset: 0,
                };
                rope::apply_rope(x(0), &mut output, *batch, *seq, table, &options)?
            }
            (KernelCall::Attention(call), None) if call.cache_layer.is_none() => {
                let padding_mask: Option<Vec<i64>> = call.key_padding_mask.then(|| match &buffers
                    [&operands[3]]
                {
                    Buffer::I64(mask) => mask.clone(),
                    Buffer::F32(mask) => mask.iter().map(|&keep| i64::from(keep != 0.0)).collect(),
                });
                let allowed = |query: usize, key: usize| {
                    call.pattern
                        .as_ref()
                        .is_none_or(|pattern| pattern.allows(query, key))
                };
                let options = attention::AttentionOptions {
                    scale: Some(call.scale),
                    causal: call.causal,
                    query_position_offset: 0,
                    key_padding_mask: padding_mask.as_deref(),
                    mask: match call.pattern {
                        None => attention::AttentionMask::None,
                        Some(_) => attention::AttentionMask::Function(&allowed),
                    },
                };
                // The same tiled kernel as generated code, with the pattern's blocks.
                let layout = match &call.pattern {
                    None => None,
                    Some(pattern) => Some(flash_attention::BlockSparseLayout::from_predicate(
                        flash_attention::DEFAULT_BLOCK_SIZE,
                        call.shape.query_len,
                        call.shape.key_len,
                        |query, key| pattern.allows(query, key),
                    )?),
                };
                let mut workspace = flash_attention::FlashAttentionWorkspace::new(&call.shape);
                flash_attention::flash_attention(
                    x(0),
                    x(1),
                    x(2),
                    &call.shape,
                    &options,
                    layout.as_ref(),
                    &mut output,
                    &mut workspace,
                )?
            }
            (KernelCall::Activation(activation), None) => {
                kernels::activation::apply_activation(x(0), &mut output, *activation)?
            }
            (KernelCall::Softmax { shape, axis }, None) => {
                kernels::softmax::softmax(x(0), &mut output, shape, *axis)?
            }
            (KernelCall::LogSoftmax { shape, axis }, None) => {
                kernels::softmax::log_softmax(x(0), &mut output, shape, *axis)?
            }
            (
                KernelCall::Reduce {
                    input_shape,
                    axes,
                    op,
                },
                None,
            ) => kernels::reduce::reduce(x(0), &mut output, input_shape, axes, *op)?,
            // The reference runs every form through the general broadcasting kernel.
            (KernelCall::Binary { op, form: _ }, None) => kernels::elementwise::binary(
                *op,
                self.tensor(operands[0], buffers),
                self.tensor(operands[1], buffers),
                &mut output,
            )?,
            (KernelCall::Affine { scale, shift }, None) => {
                kernels::elementwise::affine(x(0), &mut output, *scale, *shift)
            }
            (KernelCall::ElementwiseChain(steps), None) => {
                kernels::elementwise::elementwise_chain(x(0), &mut output, steps)?
            }
            (
                KernelCall::Copy
                | KernelCall::Permute { .. }
                | KernelCall::Concat { .. }
                | KernelCall::Slice { .. },
                None,
            ) => return Ok(self.shape_op(node, &node_call.call, buffers)),
            (call, _) => unreachable!(
                "execute: the interpreter prepares every layer and runs no decoder step, \
                 so `{}` cannot be {call:?}",
                node.name
            ),
        }
        Ok(Buffer::F32(output))
    }

    /// Shape operations, for f32 and i64 tensors alike.
    fn shape_op(
        &self,
        node: &ir::NodeData,
        call: &KernelCall,
        buffers: &HashMap<ir::Value, Buffer>,
    ) -> Buffer {
        let graph = self.graph;
        let arrays = |values: &[ir::Value]| -> Vec<ArrayD<f64>> {
            values
                .iter()
                .map(|&value| {
                    let data: Vec<f64> = match self.weight(value) {
                        Some(weight) => weight.iter().map(|&x| f64::from(x)).collect(),
                        None => match &buffers[&value] {
                            Buffer::F32(data) => data.iter().map(|&x| f64::from(x)).collect(),
                            Buffer::I64(data) => data.iter().map(|&x| x as f64).collect(),
                        },
                    };
                    ArrayD::from_shape_vec(IxDyn(&graph.ty(value).shape), data)
                        .expect("buffer length matches its type")
                })
                .collect()
        };
        let inputs = arrays(&node.inputs);
        let output_shape = &graph.ty(node.outputs[0]).shape;
        let result: ArrayD<f64> = match call {
            KernelCall::Copy => inputs[0].clone(),
            KernelCall::Permute { perm, .. } => inputs[0].clone().permuted_axes(IxDyn(perm)),
            KernelCall::Concat { axis, .. } => {
                let views: Vec<_> = inputs.iter().map(|array| array.view()).collect();
                ndarray::concatenate(Axis(*axis), &views).expect("shapes checked")
            }
            KernelCall::Slice {
                axis, start, end, ..
            } => inputs[0]
                .slice_axis(Axis(*axis), (*start..*end).into())
                .to_owned(),
            other => unreachable!("shape_op: {other:?} is not a shape operation"),
        };
        // A reshape and a select keep their elements in order; give them the output's shape.
        let result = result
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order(IxDyn(output_shape))
            .expect("element count checked");
        // f64 holds every f32 and every i64 up to 2^53 exactly; token ids are far below that.
        match graph.ty(node.outputs[0]).dtype {
            DType::F32 => Buffer::F32(result.iter().map(|&x| x as f32).collect()),
            DType::I64 => Buffer::I64(result.iter().map(|&x| x as i64).collect()),
        }
    }

    /// The f32 data of `value`: a weight or a computed tensor.
    fn f32_data<'a>(
        &'a self,
        value: ir::Value,
        buffers: &'a HashMap<ir::Value, Buffer>,
    ) -> &'a [f32] {
        if let Some(weight) = self.weight(value) {
            return weight;
        }
        match &buffers[&value] {
            Buffer::F32(data) => data,
            Buffer::I64(_) => unreachable!("the verifier checked that {value:?} is f32"),
        }
    }

    fn tensor<'a>(
        &'a self,
        value: ir::Value,
        buffers: &'a HashMap<ir::Value, Buffer>,
    ) -> TensorRef<'a> {
        TensorRef::new(self.f32_data(value, buffers), &self.graph.ty(value).shape)
            .expect("buffer length matches its type")
    }
}

/// A channels-last convolution computed by the NCHW kernel between layout changes.
/// A channels-last pooling run as the interpreter runs channels-last convolutions: through the
/// NCHW kernel between two transposes, so generated code (which calls the channels-last kernel)
/// is checked against an independent path.
fn pool_through_nchw(
    input: &[f32],
    input_shape: [usize; 4],
    [batch, channels, out_h, out_w]: [usize; 4],
    output: &mut [f32],
    pool: impl FnOnce(&[f32], &mut [f32]) -> Result<(), KernelError>,
) -> Result<(), KernelError> {
    let nchw_input = to_nchw(input, input_shape)?;
    let mut nchw_output = vec![0.0; output.len()];
    pool(&nchw_input, &mut nchw_output)?;
    kernels::shape::permute_any_type(
        &nchw_output,
        &[batch, channels, out_h, out_w],
        &[0, 2, 3, 1],
        output,
    )
}

/// `[n, h, w, c]` data as `[n, c, h, w]`.
fn to_nchw(input: &[f32], shape: [usize; 4]) -> Result<Vec<f32>, KernelError> {
    let mut nchw_input = vec![0.0; input.len()];
    kernels::shape::permute_any_type(input, &shape, &[0, 3, 1, 2], &mut nchw_input)?;
    Ok(nchw_input)
}

/// The NCHW shape of an `[n, h, w, c]` shape.
fn nchw([batch, height, width, channels]: [usize; 4]) -> [usize; 4] {
    [batch, channels, height, width]
}

/// A channels-last shape, which the verifier checked to be 4-D.
fn four_dims(shape: &[usize]) -> [usize; 4] {
    shape
        .try_into()
        .expect("execute: channels-last inputs are 4-D")
}

/// A 2-D convolution over NCHW images, f32 or int8.
pub(super) trait NchwConv2d {
    fn output_shape(&self, input_shape: [usize; 4]) -> Result<[usize; 4], KernelError>;
    fn forward(
        &self,
        input: &[f32],
        input_shape: [usize; 4],
        output: &mut [f32],
        workspace: &mut conv::ConvWorkspace,
    ) -> Result<(), KernelError>;
    fn forward_residual(
        &self,
        input: &[f32],
        input_shape: [usize; 4],
        residual: &[f32],
        output: &mut [f32],
        workspace: &mut conv::ConvWorkspace,
    ) -> Result<(), KernelError>;
}

macro_rules! nchw_conv2d {
    ($($layer:ty),*) => {$(
        impl NchwConv2d for $layer {
            fn output_shape(&self, input_shape: [usize; 4]) -> Result<[usize; 4], KernelError> {
                <$layer>::output_shape(self, input_shape)
            }
            fn forward(
                &self,
                input: &[f32],
                input_shape: [usize; 4],
                output: &mut [f32],
                workspace: &mut conv::ConvWorkspace,
            ) -> Result<(), KernelError> {
                <$layer>::forward(self, input, input_shape, output, workspace)
            }
            fn forward_residual(
                &self,
                input: &[f32],
                input_shape: [usize; 4],
                residual: &[f32],
                output: &mut [f32],
                workspace: &mut conv::ConvWorkspace,
            ) -> Result<(), KernelError> {
                <$layer>::forward_residual(self, input, input_shape, residual, output, workspace)
            }
        }
    )*};
}

nchw_conv2d!(conv::PackedConv2d, kernels::int8::PackedConv2dInt8);

fn conv_through_nchw(
    conv: &dyn NchwConv2d,
    input: &[f32],
    input_shape: [usize; 4],
    residual: Option<&[f32]>,
    output: &mut [f32],
    workspace: &mut conv::ConvWorkspace,
) -> Result<(), KernelError> {
    let nchw_input = to_nchw(input, input_shape)?;
    nchw_conv_into_channels_last(
        conv,
        &nchw_input,
        nchw(input_shape),
        residual,
        output,
        workspace,
    )
}

/// A channels-last output (and residual) of an NCHW convolution on an NCHW input: the layer
/// between the transposes of its residual and its output.
fn nchw_conv_into_channels_last(
    conv: &dyn NchwConv2d,
    nchw_input: &[f32],
    nchw_shape: [usize; 4],
    residual: Option<&[f32]>,
    output: &mut [f32],
    workspace: &mut conv::ConvWorkspace,
) -> Result<(), KernelError> {
    let [batch, out_channels, out_h, out_w] = conv.output_shape(nchw_shape)?;
    let mut nchw_output = vec![0.0; output.len()];
    if let Some(residual) = residual {
        let mut nchw_residual = vec![0.0; residual.len()];
        kernels::shape::permute_any_type(
            residual,
            &[batch, out_h, out_w, out_channels],
            &[0, 3, 1, 2],
            &mut nchw_residual,
        )?;
        conv.forward_residual(
            nchw_input,
            nchw_shape,
            &nchw_residual,
            &mut nchw_output,
            workspace,
        )?;
    } else {
        conv.forward(nchw_input, nchw_shape, &mut nchw_output, workspace)?;
    }
    kernels::shape::permute_any_type(
        &nchw_output,
        &[batch, out_channels, out_h, out_w],
        &[0, 2, 3, 1],
        output,
    )
}
