//! The reference interpreter: runs an IR graph node by node with the runtime's kernels.
//!
//! It is the oracle that generated code is tested against, and it serves users who want no build
//! step (`nnc run`). Weights are prepared once, in [`Interpreter::new`] (linear weights packed for
//! the GEMM, batch norms folded to a scale and shift); [`Interpreter::run`] then only computes.
//! Each intermediate tensor is freed after its last use.

use std::collections::HashMap;

use ndarray::{ArrayD, Axis, IxDyn};
use nnc_runtime::kernels::{self, attention, conv, linear::PackedLinear, norm, pool, rope};
use nnc_runtime::weights::{Init, WeightSpec, WeightsError};
use nnc_runtime::{KernelError, TensorRef, model};

use crate::ir::{self, DType, Graph, Op, ParamInit, ValueDef};

/// A tensor at the interpreter's boundary.
#[derive(Clone, Debug, PartialEq)]
pub enum Tensor {
    F32(ArrayD<f32>),
    I64(ArrayD<i64>),
}

impl Tensor {
    fn dtype(&self) -> DType {
        match self {
            Tensor::F32(_) => DType::F32,
            Tensor::I64(_) => DType::I64,
        }
    }

    fn shape(&self) -> &[usize] {
        match self {
            Tensor::F32(array) => array.shape(),
            Tensor::I64(array) => array.shape(),
        }
    }
}

/// Why a network could not be run.
#[derive(Debug, thiserror::Error)]
pub enum InterpretError {
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error("the network has no input `{name}`; its inputs are {inputs}")]
    UnknownInput { name: String, inputs: String },
    #[error("the input `{name}` is missing")]
    MissingInput { name: String },
    #[error("the input `{name}` must be {expected}, but it is {found}")]
    InputType {
        name: String,
        expected: String,
        found: String,
    },
    #[error("layer `{layer}` ({op}) failed: {source}")]
    Kernel {
        layer: String,
        op: &'static str,
        source: KernelError,
    },
}

/// One weight a graph needs, owned: its name, shape and initialization.
#[derive(Clone, Debug)]
pub struct WeightRequirement {
    pub name: String,
    pub shape: Vec<usize>,
    pub init: Init,
    pub is_buffer: bool,
}

/// The weights `graph` needs, in param order.
pub fn weight_requirements(graph: &Graph) -> Vec<WeightRequirement> {
    graph
        .params
        .iter()
        .map(|(_, param)| WeightRequirement {
            name: param.name.clone(),
            shape: graph.ty(param.value).shape.clone(),
            init: match param.init {
                ParamInit::FanIn { fan_in } => Init::FanIn { fan_in },
                ParamInit::Normal => Init::Normal,
                ParamInit::Ones => Init::Ones,
                ParamInit::Zeros => Init::Zeros,
            },
            is_buffer: param.is_buffer,
        })
        .collect()
}

fn specs(requirements: &[WeightRequirement]) -> Vec<WeightSpec<'_>> {
    requirements
        .iter()
        .map(|weight| WeightSpec {
            name: &weight.name,
            shape: &weight.shape,
            init: weight.init,
        })
        .collect()
}

/// Loads the weights of `graph` from safetensors bytes, in param order.
pub fn load_weights(
    graph: &Graph,
    bytes: &[u8],
    source_name: &str,
) -> Result<Vec<Vec<f32>>, WeightsError> {
    let requirements = weight_requirements(graph);
    nnc_runtime::weights::load_safetensors(bytes, &specs(&requirements), source_name)
}

/// Draws the weights of `graph` from their initializers, deterministically from `seed`.
pub fn random_weights(graph: &Graph, seed: u64) -> Vec<Vec<f32>> {
    let requirements = weight_requirements(graph);
    nnc_runtime::weights::random_weights(&specs(&requirements), seed)
}

/// What [`Interpreter::new`] prepared for a node.
enum Prepared {
    None,
    Linear(PackedLinear),
    Conv1d(conv::PackedConv1d),
    Conv2d(conv::PackedConv2d),
    BatchNorm(norm::BatchNorm),
    Rope(rope::RopeTable),
}

/// Runs one graph with one set of weights.
pub struct Interpreter<'g> {
    graph: &'g Graph,
    weights: Vec<Vec<f32>>,
    prepared: Vec<Prepared>,
    /// For each value, the index of the last node that reads it (`usize::MAX` for outputs).
    last_use: HashMap<ir::Value, usize>,
}

/// A tensor during interpretation.
enum Buffer {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl<'g> Interpreter<'g> {
    /// Prepares `graph` to run with `weights` (in param order, as [`load_weights`] returns them).
    pub fn new(graph: &'g Graph, weights: Vec<Vec<f32>>) -> Result<Self, InterpretError> {
        assert_eq!(weights.len(), graph.params.len(), "one weight per param");
        let mut interpreter = Interpreter {
            graph,
            weights,
            prepared: Vec::new(),
            last_use: HashMap::new(),
        };
        for (node, data) in graph.nodes.iter() {
            let prepared = interpreter
                .prepare(data)
                .map_err(|source| InterpretError::Kernel {
                    layer: data.name.clone(),
                    op: data.op.name(),
                    source,
                })?;
            interpreter.prepared.push(prepared);
            for &input in &data.inputs {
                interpreter.last_use.insert(input, node.index());
            }
        }
        for output in &graph.outputs {
            interpreter.last_use.insert(output.value, usize::MAX);
        }
        Ok(interpreter)
    }

    fn weight(&self, value: ir::Value) -> Option<&[f32]> {
        match self.graph.values[value].def {
            ValueDef::Param(param) => Some(&self.weights[param.index()]),
            _ => None,
        }
    }

    /// The weight and bias of a conv or linear node, with a folded batch norm applied.
    fn fold_epilogue(
        &self,
        node: &ir::NodeData,
        has_bias: bool,
        epilogue: &ir::Epilogue,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>), KernelError> {
        let weight = self
            .weight(node.inputs[1])
            .expect("layer weights are params");
        let bias = if has_bias {
            self.weight(node.inputs[2])
        } else {
            None
        };
        let Some(eps) = epilogue.batch_norm else {
            return Ok((weight.to_vec(), bias.map(<[f32]>::to_vec)));
        };
        let first = if has_bias { 3 } else { 2 };
        let parameter = |offset: usize| {
            self.weight(node.inputs[first + offset])
                .expect("batch norm parameters are params")
        };
        let batch_norm = model::BatchNormToFold {
            weight: parameter(0),
            bias: parameter(1),
            mean: parameter(2),
            variance: parameter(3),
            eps,
        };
        let folded = model::fold_batch_norm(weight, bias, &batch_norm)?;
        Ok((folded.weight, Some(folded.bias)))
    }

    fn prepare(&self, node: &ir::NodeData) -> Result<Prepared, KernelError> {
        let graph = self.graph;
        Ok(match &node.op {
            Op::Linear { bias, epilogue } => {
                let shape = &graph.ty(node.inputs[1]).shape;
                let (weight, bias) = self.fold_epilogue(node, *bias, epilogue)?;
                let linear = PackedLinear::new(&weight, shape[0], shape[1], bias.as_deref())?;
                Prepared::Linear(
                    linear.with_activation(epilogue.activation.map(runtime_activation)),
                )
            }
            Op::Conv(attrs) => {
                let shape = &graph.ty(node.inputs[1]).shape;
                let (weight, bias) = self.fold_epilogue(node, attrs.bias, &attrs.epilogue)?;
                let activation = attrs.epilogue.activation.map(runtime_activation);
                if attrs.kernel.len() == 1 {
                    let options = conv::Conv1dOptions {
                        stride: attrs.stride[0],
                        padding: attrs.padding[0],
                        dilation: attrs.dilation[0],
                        groups: attrs.groups,
                    };
                    let conv = conv::PackedConv1d::new(
                        &weight,
                        [shape[0], shape[1], shape[2]],
                        bias.as_deref(),
                        options,
                    )?;
                    Prepared::Conv1d(conv.with_activation(activation))
                } else {
                    let options = conv::Conv2dOptions {
                        stride: [attrs.stride[0], attrs.stride[1]],
                        padding: [attrs.padding[0], attrs.padding[1]],
                        dilation: [attrs.dilation[0], attrs.dilation[1]],
                        groups: attrs.groups,
                    };
                    let conv = conv::PackedConv2d::new(
                        &weight,
                        [shape[0], shape[1], shape[2], shape[3]],
                        bias.as_deref(),
                        options,
                    )?;
                    Prepared::Conv2d(conv.with_activation(activation))
                }
            }
            Op::BatchNorm { eps } => {
                let [_, weight, bias, mean, variance] = node.inputs[..] else {
                    unreachable!("batch norm has 5 inputs")
                };
                match (
                    self.weight(weight),
                    self.weight(bias),
                    self.weight(mean),
                    self.weight(variance),
                ) {
                    (Some(weight), Some(bias), Some(mean), Some(variance)) => {
                        let params = norm::BatchNormParams {
                            mean,
                            variance,
                            weight: Some(weight),
                            bias: Some(bias),
                            eps: *eps,
                        };
                        Prepared::BatchNorm(norm::BatchNorm::new(&params)?)
                    }
                    _ => Prepared::None,
                }
            }
            Op::Rope { heads, theta, .. } => {
                let shape = &graph.ty(node.inputs[0]).shape;
                Prepared::Rope(rope::RopeTable::new(shape[2] / heads, *theta, shape[1])?)
            }
            _ => Prepared::None,
        })
    }

    /// Runs the network on named inputs and returns its named outputs.
    pub fn run(
        &self,
        inputs: &[(&str, Tensor)],
    ) -> Result<Vec<(String, ArrayD<f32>)>, InterpretError> {
        let graph = self.graph;
        let mut buffers: HashMap<ir::Value, Buffer> = HashMap::new();
        for (name, tensor) in inputs {
            let Some(input) = graph.inputs.iter().find(|input| input.name == *name) else {
                let names: Vec<String> = graph
                    .inputs
                    .iter()
                    .map(|input| format!("`{}`", input.name))
                    .collect();
                return Err(InterpretError::UnknownInput {
                    name: name.to_string(),
                    inputs: names.join(", "),
                });
            };
            let expected = graph.ty(input.value);
            if tensor.dtype() != expected.dtype || tensor.shape() != expected.shape.as_slice() {
                return Err(InterpretError::InputType {
                    name: name.to_string(),
                    expected: expected.to_string(),
                    found: format!("{}{:?}", tensor.dtype().name(), tensor.shape()),
                });
            }
            let buffer = match tensor {
                Tensor::F32(array) => Buffer::F32(array.iter().copied().collect()),
                Tensor::I64(array) => Buffer::I64(array.iter().copied().collect()),
            };
            buffers.insert(input.value, buffer);
        }
        if let Some(missing) = graph
            .inputs
            .iter()
            .find(|input| !buffers.contains_key(&input.value))
        {
            return Err(InterpretError::MissingInput {
                name: missing.name.clone(),
            });
        }

        let mut workspace = conv::ConvWorkspace::new();
        for (node, data) in graph.nodes.iter() {
            let output = self
                .execute(node.index(), data, &buffers, &mut workspace)
                .map_err(|source| InterpretError::Kernel {
                    layer: data.name.clone(),
                    op: data.op.name(),
                    source,
                })?;
            buffers.insert(data.outputs[0], output);
            for input in &data.inputs {
                if self.last_use.get(input) == Some(&node.index())
                    && !matches!(graph.values[*input].def, ValueDef::Param(_))
                {
                    buffers.remove(input);
                }
            }
        }

        Ok(graph
            .outputs
            .iter()
            .map(|output| {
                let shape = graph.ty(output.value).shape.clone();
                let data = match &buffers[&output.value] {
                    Buffer::F32(data) => data.clone(),
                    Buffer::I64(data) => data.iter().map(|&value| value as f32).collect(),
                };
                let array = ArrayD::from_shape_vec(IxDyn(&shape), data)
                    .expect("buffer length matches its type");
                (output.name.clone(), array)
            })
            .collect())
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

    fn execute(
        &self,
        index: usize,
        node: &ir::NodeData,
        buffers: &HashMap<ir::Value, Buffer>,
        workspace: &mut conv::ConvWorkspace,
    ) -> Result<Buffer, KernelError> {
        let graph = self.graph;
        let output_type = graph.ty(node.outputs[0]);
        let input_type = graph.ty(node.inputs[0]);
        let mut output = vec![0.0f32; output_type.element_count() as usize];
        let x = |position: usize| self.f32_data(node.inputs[position], buffers);
        // A fused residual is the layer's last input; the kernel adds it in its epilogue.
        let residual = match &node.op {
            Op::Linear { epilogue, .. } | Op::Conv(ir::ConvAttrs { epilogue, .. }) => {
                epilogue.residual.then(|| x(node.inputs.len() - 1))
            }
            _ => None,
        };
        match &node.op {
            Op::Linear { .. } => {
                let Prepared::Linear(linear) = &self.prepared[index] else {
                    unreachable!("linear weights are params")
                };
                let rows = input_type.element_count() as usize / linear.in_features();
                if let Some(residual) = residual {
                    linear.forward_residual(x(0), rows, residual, &mut output)?;
                } else {
                    linear.forward(x(0), rows, &mut output)?;
                }
            }
            Op::MatMul => kernels::matmul::matmul(
                self.tensor(node.inputs[0], buffers),
                self.tensor(node.inputs[1], buffers),
                &mut output,
            )?,
            Op::Conv(attrs) => {
                let shape = &input_type.shape;
                match &self.prepared[index] {
                    Prepared::Conv1d(conv) => {
                        let shape = [shape[0], shape[1], shape[2]];
                        if let Some(residual) = residual {
                            conv.forward_residual(x(0), shape, residual, &mut output, workspace)?
                        } else {
                            conv.forward(x(0), shape, &mut output, workspace)?
                        }
                    }
                    // The reference for a channels-last convolution is the NCHW kernel between
                    // layout changes, so that -O2 is checked against a different kernel.
                    Prepared::Conv2d(conv) if attrs.channels_last => {
                        let [batch, height, width, channels] = shape[..] else {
                            unreachable!("execute: 2-D convolutions have 4-D inputs")
                        };
                        let mut nchw_input = vec![0.0; x(0).len()];
                        model::permute(
                            x(0),
                            &[batch, height, width, channels],
                            &[0, 3, 1, 2],
                            &mut nchw_input,
                        )?;
                        let nchw_shape = [batch, channels, height, width];
                        let [_, out_channels, out_h, out_w] = conv.output_shape(nchw_shape)?;
                        let mut nchw_output = vec![0.0; output.len()];
                        if let Some(residual) = residual {
                            let mut nchw_residual = vec![0.0; residual.len()];
                            model::permute(
                                residual,
                                &[batch, out_h, out_w, out_channels],
                                &[0, 3, 1, 2],
                                &mut nchw_residual,
                            )?;
                            conv.forward_residual(
                                &nchw_input,
                                nchw_shape,
                                &nchw_residual,
                                &mut nchw_output,
                                workspace,
                            )?;
                        } else {
                            conv.forward(&nchw_input, nchw_shape, &mut nchw_output, workspace)?;
                        }
                        model::permute(
                            &nchw_output,
                            &[batch, out_channels, out_h, out_w],
                            &[0, 2, 3, 1],
                            &mut output,
                        )?;
                    }
                    Prepared::Conv2d(conv) => {
                        let shape = [shape[0], shape[1], shape[2], shape[3]];
                        if let Some(residual) = residual {
                            conv.forward_residual(x(0), shape, residual, &mut output, workspace)?
                        } else {
                            conv.forward(x(0), shape, &mut output, workspace)?
                        }
                    }
                    _ => unreachable!("convolutions are prepared"),
                }
            }
            Op::MaxPool(attrs) => {
                let shape = &input_type.shape;
                if attrs.kernel.len() == 1 {
                    let options = pool::MaxPool1dOptions {
                        kernel: attrs.kernel[0],
                        stride: attrs.stride[0],
                        padding: attrs.padding[0],
                        dilation: attrs.dilation[0],
                        ceil_mode: attrs.ceil_mode,
                    };
                    pool::max_pool1d(x(0), [shape[0], shape[1], shape[2]], &options, &mut output)?;
                } else {
                    let options = pool::MaxPool2dOptions {
                        kernel: [attrs.kernel[0], attrs.kernel[1]],
                        stride: [attrs.stride[0], attrs.stride[1]],
                        padding: [attrs.padding[0], attrs.padding[1]],
                        dilation: [attrs.dilation[0], attrs.dilation[1]],
                        ceil_mode: attrs.ceil_mode,
                    };
                    pool::max_pool2d(
                        x(0),
                        [shape[0], shape[1], shape[2], shape[3]],
                        &options,
                        &mut output,
                    )?;
                }
            }
            Op::AvgPool(attrs) => {
                let shape = &input_type.shape;
                if attrs.kernel.len() == 1 {
                    let options = pool::AvgPool1dOptions {
                        kernel: attrs.kernel[0],
                        stride: attrs.stride[0],
                        padding: attrs.padding[0],
                        ceil_mode: attrs.ceil_mode,
                        count_include_pad: attrs.count_include_pad,
                    };
                    pool::avg_pool1d(x(0), [shape[0], shape[1], shape[2]], &options, &mut output)?;
                } else {
                    let options = pool::AvgPool2dOptions {
                        kernel: [attrs.kernel[0], attrs.kernel[1]],
                        stride: [attrs.stride[0], attrs.stride[1]],
                        padding: [attrs.padding[0], attrs.padding[1]],
                        ceil_mode: attrs.ceil_mode,
                        count_include_pad: attrs.count_include_pad,
                        divisor_override: None,
                    };
                    pool::avg_pool2d(
                        x(0),
                        [shape[0], shape[1], shape[2], shape[3]],
                        &options,
                        &mut output,
                    )?;
                }
            }
            Op::GlobalAvgPool => pool::global_avg_pool(x(0), &input_type.shape, &mut output)?,
            Op::GlobalMaxPool => pool::global_max_pool(x(0), &input_type.shape, &mut output)?,
            Op::BatchNorm { .. } => {
                let Prepared::BatchNorm(batch_norm) = &self.prepared[index] else {
                    unreachable!("batch norm weights are params")
                };
                norm::batch_norm(x(0), &mut output, &input_type.shape, batch_norm)?;
            }
            Op::LayerNorm { eps, affine } => {
                let (weight, bias) = if *affine {
                    (Some(x(1)), Some(x(2)))
                } else {
                    (None, None)
                };
                let options = norm::LayerNormOptions {
                    weight,
                    bias,
                    eps: *eps,
                };
                norm::layer_norm(
                    x(0),
                    &mut output,
                    input_type.last_dim().unwrap_or(1),
                    &options,
                )?;
            }
            Op::RmsNorm { eps } => {
                let options = norm::RmsNormOptions {
                    weight: Some(x(1)),
                    eps: *eps,
                };
                norm::rms_norm(
                    x(0),
                    &mut output,
                    input_type.last_dim().unwrap_or(1),
                    &options,
                )?;
            }
            Op::Embedding => {
                let Buffer::I64(ids) = &buffers[&node.inputs[0]] else {
                    unreachable!("embedding ids are i64")
                };
                let table_shape = &graph.ty(node.inputs[1]).shape;
                kernels::embedding::embedding(
                    x(1),
                    table_shape[0],
                    table_shape[1],
                    ids,
                    &mut output,
                )?;
            }
            Op::PositionEmbedding => {
                // Without a KV cache, positions start at 0: the first `seq` rows of the table.
                let length = output.len();
                output.copy_from_slice(&x(1)[..length]);
            }
            Op::Rope {
                heads, interleaved, ..
            } => {
                let Prepared::Rope(table) = &self.prepared[index] else {
                    unreachable!("rope tables are prepared")
                };
                let convention = if *interleaved {
                    rope::RopeConvention::Interleaved
                } else {
                    rope::RopeConvention::HalfSplit
                };
                let options = rope::RopeOptions {
                    n_heads: *heads,
                    convention,
                    position_offset: 0,
                };
                rope::apply_rope(
                    x(0),
                    &mut output,
                    input_type.shape[0],
                    input_type.shape[1],
                    table,
                    &options,
                )?;
            }
            Op::Attention(attrs) => {
                let key_type = graph.ty(node.inputs[1]);
                let shape = attention::AttentionShape {
                    batch: input_type.shape[0],
                    query_len: input_type.shape[1],
                    key_len: key_type.shape[1],
                    n_heads: attrs.heads,
                    n_kv_heads: attrs.kv_heads,
                    head_dim: attrs.head_dim,
                };
                let padding_mask: Option<Vec<i64>> = attrs.key_padding_mask.then(|| match &buffers
                    [&node.inputs[3]]
                {
                    Buffer::I64(mask) => mask.clone(),
                    Buffer::F32(mask) => mask.iter().map(|&keep| i64::from(keep != 0.0)).collect(),
                });
                let pattern = &attrs.pattern;
                let allowed = |query: usize, key: usize| pattern.allows(query, key);
                let options = attention::AttentionOptions {
                    scale: Some(attrs.scale),
                    causal: attrs.causal,
                    query_position_offset: 0,
                    key_padding_mask: padding_mask.as_deref(),
                    mask: if pattern.is_dense() {
                        attention::AttentionMask::None
                    } else {
                        attention::AttentionMask::Function(&allowed)
                    },
                };
                {
                    // The same tiled kernel as generated code, with the pattern's blocks.
                    let layout = if pattern.is_dense() {
                        None
                    } else {
                        Some(kernels::flash_attention::BlockSparseLayout::from_predicate(
                            kernels::flash_attention::DEFAULT_BLOCK_SIZE,
                            shape.query_len,
                            shape.key_len,
                            |query, key| pattern.allows(query, key),
                        )?)
                    };
                    let mut workspace =
                        kernels::flash_attention::FlashAttentionWorkspace::new(&shape);
                    kernels::flash_attention::flash_attention(
                        x(0),
                        x(1),
                        x(2),
                        &shape,
                        &options,
                        layout.as_ref(),
                        &mut output,
                        &mut workspace,
                    )?;
                }
            }
            Op::Activation(activation) => {
                kernels::activation::apply_activation(
                    x(0),
                    &mut output,
                    runtime_activation(*activation),
                )?;
            }
            Op::Softmax { axis } => {
                kernels::softmax::softmax(x(0), &mut output, &input_type.shape, *axis)?
            }
            Op::Binary(op) => {
                let op = match op {
                    ir::BinaryOp::Add => kernels::elementwise::BinaryOp::Add,
                    ir::BinaryOp::Sub => kernels::elementwise::BinaryOp::Sub,
                    ir::BinaryOp::Mul => kernels::elementwise::BinaryOp::Mul,
                    ir::BinaryOp::Div => kernels::elementwise::BinaryOp::Div,
                };
                kernels::elementwise::binary(
                    op,
                    self.tensor(node.inputs[0], buffers),
                    self.tensor(node.inputs[1], buffers),
                    &mut output,
                )?;
            }
            Op::Affine { scale, shift } => model::affine(x(0), &mut output, *scale, *shift),
            Op::ElementwiseChain(steps) => {
                let steps: Vec<model::ElementwiseStep> = steps
                    .iter()
                    .map(|step| match *step {
                        ir::ElementwiseStep::Activation(activation) => {
                            model::ElementwiseStep::Activation(runtime_activation(activation))
                        }
                        ir::ElementwiseStep::Affine { scale, shift } => {
                            model::ElementwiseStep::Affine { scale, shift }
                        }
                    })
                    .collect();
                model::elementwise_chain(x(0), &mut output, &steps)?;
            }
            Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Concat { .. }
            | Op::Slice { .. }
            | Op::Select { .. } => {
                return Ok(self.shape_op(node, buffers));
            }
        }
        Ok(Buffer::F32(output))
    }

    /// Shape operations, for f32 and i64 tensors alike.
    fn shape_op(&self, node: &ir::NodeData, buffers: &HashMap<ir::Value, Buffer>) -> Buffer {
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
        let result: ArrayD<f64> = match &node.op {
            Op::Reshape { shape } => inputs[0]
                .clone()
                .into_shape_with_order(IxDyn(shape))
                .expect("element count checked"),
            Op::Transpose { perm } => inputs[0].clone().permuted_axes(IxDyn(perm)),
            Op::Concat { axis } => {
                let views: Vec<_> = inputs.iter().map(|array| array.view()).collect();
                ndarray::concatenate(Axis(*axis), &views).expect("shapes checked")
            }
            Op::Slice { axis, start, end } => inputs[0]
                .slice_axis(Axis(*axis), (*start..*end).into())
                .to_owned(),
            Op::Select { axis, index } => {
                let selected = inputs[0].index_axis(Axis(*axis), *index).to_owned();
                let shape = graph.ty(node.outputs[0]).shape.clone();
                selected
                    .into_shape_with_order(IxDyn(&shape))
                    .expect("element count checked")
            }
            other => unreachable!("shape_op: {}", other.name()),
        };
        // f64 holds every f32 and every i64 up to 2^53 exactly; token ids are far below that.
        match graph.ty(node.outputs[0]).dtype {
            DType::F32 => Buffer::F32(result.iter().map(|&x| x as f32).collect()),
            DType::I64 => Buffer::I64(result.iter().map(|&x| x as i64).collect()),
        }
    }
}

fn runtime_activation(activation: ir::Activation) -> kernels::activation::Activation {
    use kernels::activation::Activation as Runtime;
    match activation {
        ir::Activation::Relu => Runtime::Relu,
        ir::Activation::Relu6 => Runtime::Relu6,
        ir::Activation::LeakyRelu { negative_slope } => Runtime::LeakyRelu { negative_slope },
        ir::Activation::Sigmoid => Runtime::Sigmoid,
        ir::Activation::Tanh => Runtime::Tanh,
        ir::Activation::Silu => Runtime::Silu,
        ir::Activation::HardSwish => Runtime::HardSwish,
        ir::Activation::HardSigmoid => Runtime::HardSigmoid,
        ir::Activation::Gelu {
            tanh_approximation: false,
        } => Runtime::Gelu,
        ir::Activation::Gelu {
            tanh_approximation: true,
        } => Runtime::GeluTanh,
    }
}
