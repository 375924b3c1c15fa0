//! One plain-data description of the runtime call each IR node makes, shared by the interpreter
//! (which executes it) and code generation (which prints it).
//!
//! The translation from IR attributes to the runtime's vocabulary (its option structs, its
//! `Activation`, its `BinaryOp`, shapes as fixed-size arrays) lives here and nowhere else:
//! [`kernel_call`] says what a node does on every run, [`preparation`] what it builds from its
//! weights once, at load time. What differs between the places a node runs (a decoder step reads
//! positions from its KV cache; the interpreter runs channels-last convolutions through the NCHW
//! kernel) is an input, [`Site`], or a field of the description, never a second translation.

use nnc_ops::Activation;
use nnc_ops::AttentionShape;
use nnc_ops::BinaryOp;
use nnc_ops::ElementwiseStep;
use nnc_ops::ReduceOp;
use nnc_ops::RopeConvention;
use nnc_ops::{AvgPool1dOptions, AvgPool2dOptions, MaxPool1dOptions, MaxPool2dOptions};
use nnc_ops::{Conv1dOptions, Conv2dOptions, ConvTranspose2dOptions, PadMode, Resize2dOptions};

use crate::codegen::memory;
use crate::ir::{self, Graph, Op};

/// Where a node runs, as far as its call depends on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Site {
    /// For a decoder with a KV cache: the most positions the cache holds. Rope tables cover them
    /// all, and cached attention sizes its keys for them.
    pub max_context: Option<usize>,
    /// Whether the node runs in a decoder's step, after the positions already in the cache.
    pub in_step: bool,
    /// The KV-cache layer of a cached attention node in a decoder's step.
    pub cache_layer: Option<usize>,
}

/// The runtime call of one node and the values it reads, in the order the call takes them.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeCall {
    pub call: KernelCall,
    /// The node's inputs the call reads: weights a [`Preparation`] consumed are left out, a
    /// fused residual comes last.
    pub operands: Vec<ir::Value>,
}

/// Where a step's positions start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    /// At 0: a whole sequence at once.
    Start,
    /// After the positions already in the decoder's KV cache.
    Cached,
}

/// The memory layout of the images of a 2-D convolution or pooling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvLayout {
    /// `[batch, channels, height, width]`.
    Nchw,
    /// `[batch, height, width, channels]`.
    ChannelsLast,
}

/// How a 2-D convolution lays out its input and output images.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conv2dLayout {
    /// Both `[batch, channels, height, width]`.
    Nchw,
    /// Both `[batch, height, width, channels]`.
    ChannelsLast,
    /// An NCHW input and a channels-last output: the convolution changes the layout.
    NchwToChannelsLast,
}

/// How the two operands of a binary operation line up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BinaryForm {
    /// Both have the output's shape.
    SameShape,
    /// The first has the output's shape, the second is one row repeated over it.
    RowVector,
    /// General broadcasting.
    Broadcast {
        a_shape: Vec<usize>,
        b_shape: Vec<usize>,
    },
}

/// An attention call.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionCall {
    pub shape: AttentionShape,
    pub scale: f32,
    pub causal: bool,
    /// The sparse pattern; `None` when attention is dense.
    pub pattern: Option<ir::SparsePattern>,
    /// Whether the fourth operand is a key padding mask.
    pub key_padding_mask: bool,
    /// The KV-cache layer, when the call attends over a decoder's cache.
    pub cache_layer: Option<usize>,
}

/// What one node asks of the runtime on every run.
#[derive(Clone, Debug, PartialEq)]
pub enum KernelCall {
    /// The node's [`Preparation::Linear`] over `rows` rows; with `residual`, the second operand
    /// is added in the epilogue.
    Linear {
        rows: usize,
        residual: bool,
    },
    /// The node's [`Preparation::Conv1d`].
    Conv1d {
        input_shape: [usize; 3],
        residual: bool,
    },
    /// The node's [`Preparation::Conv2d`].
    Conv2d {
        input_shape: [usize; 4],
        layout: Conv2dLayout,
        residual: bool,
    },
    /// The node's [`Preparation::DepthwiseBlock`] on a channels-last image; with `residual`,
    /// the second operand is added in the projection's epilogue.
    DepthwiseBlock {
        input_shape: [usize; 4],
        residual: bool,
    },
    /// The node's [`Preparation::ConvMaxPool`] on an NCHW image.
    ConvMaxPool {
        input_shape: [usize; 4],
    },
    /// A transposed convolution reading its weight (the second operand) and, with `bias`, its
    /// bias (the third) on every call.
    ConvTranspose2d {
        input_shape: [usize; 4],
        weight_shape: [usize; 4],
        options: ConvTranspose2dOptions,
        bias: bool,
    },
    /// Resizing NCHW images.
    Resize2d {
        input_shape: [usize; 4],
        options: Resize2dOptions,
    },
    /// Padding every axis.
    Pad {
        input_shape: Vec<usize>,
        before: Vec<usize>,
        after: Vec<usize>,
        mode: PadMode,
        value: f32,
    },
    MatMul {
        a_shape: Vec<usize>,
        b_shape: Vec<usize>,
    },
    MaxPool1d {
        input_shape: [usize; 3],
        options: MaxPool1dOptions,
    },
    /// `input_shape` is in the layout's order.
    MaxPool2d {
        input_shape: [usize; 4],
        options: MaxPool2dOptions,
        layout: ConvLayout,
    },
    AvgPool1d {
        input_shape: [usize; 3],
        options: AvgPool1dOptions,
    },
    /// `input_shape` is in the layout's order.
    AvgPool2d {
        input_shape: [usize; 4],
        options: AvgPool2dOptions,
        layout: ConvLayout,
    },
    /// `input_shape` is in the layout's order; channels-last inputs are 4-D.
    GlobalAvgPool {
        input_shape: Vec<usize>,
        layout: ConvLayout,
    },
    /// As [`KernelCall::GlobalAvgPool`].
    GlobalMaxPool {
        input_shape: Vec<usize>,
        layout: ConvLayout,
    },
    /// The node's [`Preparation::BatchNorm`].
    BatchNorm {
        input_shape: Vec<usize>,
    },
    /// Over rows of `size`; with `affine`, the second and third operands are weight and bias.
    LayerNorm {
        size: usize,
        eps: f32,
        affine: bool,
    },
    /// Over rows of `size`; with `affine`, scaled by the second operand.
    RmsNorm {
        size: usize,
        eps: f32,
        affine: bool,
    },
    /// Rows of a `[rows, dim]` table (the second operand) picked by ids (the first).
    Embedding {
        rows: usize,
        dim: usize,
    },
    /// `tokens` consecutive rows of a position table (the one operand).
    PositionEmbedding {
        dim: usize,
        tokens: usize,
        position: Position,
    },
    /// The node's [`Preparation::Rope`] applied to `[batch, seq, heads * head_dim]`.
    Rope {
        batch: usize,
        seq: usize,
        heads: usize,
        convention: RopeConvention,
        position: Position,
    },
    Attention(AttentionCall),
    Activation(Activation),
    Softmax {
        shape: Vec<usize>,
        axis: usize,
    },
    LogSoftmax {
        shape: Vec<usize>,
        axis: usize,
    },
    /// A reduction over `axes` of an input of `input_shape`; the output is the same whether the
    /// axes are kept as 1 or dropped.
    Reduce {
        input_shape: Vec<usize>,
        axes: Vec<usize>,
        op: ReduceOp,
    },
    Binary {
        op: BinaryOp,
        form: BinaryForm,
    },
    Affine {
        scale: f32,
        shift: f32,
    },
    ElementwiseChain(Vec<ElementwiseStep>),
    /// The same elements in the same order (a reshape).
    Copy,
    Permute {
        input_shape: Vec<usize>,
        perm: Vec<usize>,
    },
    /// The operands, of `shapes`, joined along `axis`.
    Concat {
        axis: usize,
        shapes: Vec<Vec<usize>>,
    },
    /// Indices `start..end` of `axis` (a select is a slice of one).
    Slice {
        input_shape: Vec<usize>,
        axis: usize,
        start: usize,
        end: usize,
    },
}

/// What a node builds from its weights once, at load time.
#[derive(Clone, Debug, PartialEq)]
pub enum Preparation {
    /// A `PackedLinear` of an `[out_features, in_features]` weight, or a `QuantizedLinear`
    /// when the weight is stored quantized.
    Linear {
        out_features: usize,
        in_features: usize,
        weights: LayerWeights,
        activation: Option<Activation>,
        storage: ir::WeightStorage,
    },
    Conv1d {
        weight_shape: [usize; 3],
        options: Conv1dOptions,
        weights: LayerWeights,
        activation: Option<Activation>,
    },
    /// A `PackedConv2d` (NCHW) or `PackedConv2dChannelsLast`, or a `PackedConv2dInt8` when the
    /// weight is stored in int8.
    Conv2d {
        weight_shape: [usize; 4],
        options: Conv2dOptions,
        layout: Conv2dLayout,
        weights: LayerWeights,
        activation: Option<Activation>,
        storage: ir::WeightStorage,
    },
    /// A depthwise convolution run band by band with the 1×1 convolution it reads
    /// (`ConvAttrs::pointwise`), the one that reads it (`ConvAttrs::depthwise`), or both: a
    /// `PackedDepthwiseBlock` of channels-last [`Preparation::Conv2d`]s.
    DepthwiseBlock {
        expand: Option<Box<Preparation>>,
        depthwise: Box<Preparation>,
        project: Option<Box<Preparation>>,
    },
    /// A convolution whose output is max pooled band by band (`ConvAttrs::max_pool`): a
    /// `PackedConv2dMaxPool` of an NCHW [`Preparation::Conv2d`] and the pooling's options.
    ConvMaxPool {
        conv: Box<Preparation>,
        pool: MaxPool2dOptions,
    },
    /// A batch norm folded to a scale and shift.
    BatchNorm { parameters: BatchNormWeights },
    /// A rotary-embedding table.
    Rope {
        head_dim: usize,
        theta: f32,
        positions: usize,
    },
}

/// The weights a conv or linear layer is packed from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerWeights {
    pub weight: ir::Value,
    pub bias: Option<ir::Value>,
    /// A batch norm folded into the weight and bias before packing.
    pub batch_norm: Option<BatchNormWeights>,
}

/// The parameters of a batch norm.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormWeights {
    pub weight: ir::Value,
    pub bias: ir::Value,
    pub mean: ir::Value,
    pub variance: ir::Value,
    pub eps: f32,
}

/// The call `node` of `graph` makes at `site`.
pub fn kernel_call(graph: &Graph, node: &ir::NodeData, site: &Site) -> NodeCall {
    let input_shape = &graph.ty(node.inputs[0]).shape;
    let output_type = graph.ty(node.outputs[0]);
    let last_dim = graph.ty(node.inputs[0]).last_dim().unwrap_or(1);
    let position = if site.in_step {
        Position::Cached
    } else {
        Position::Start
    };
    // A prepared layer reads its input and, with a fused residual, that residual: its last input.
    let prepared_operands = |residual: bool| -> Vec<ir::Value> {
        let mut operands = vec![node.inputs[0]];
        if residual {
            operands.push(*node.inputs.last().expect("a residual input"));
        }
        operands
    };
    let all_operands = node.inputs.clone();
    let (call, operands) = match &node.op {
        Op::Linear { epilogue, .. } => {
            let rows = graph.ty(node.inputs[0]).element_count() as usize / last_dim;
            let residual = epilogue.residual;
            (
                KernelCall::Linear { rows, residual },
                prepared_operands(residual),
            )
        }
        Op::Conv(attrs) if attrs.pointwise.is_some() || attrs.depthwise.is_some() => {
            let residual = attrs.epilogue.residual;
            (
                KernelCall::DepthwiseBlock {
                    input_shape: dims(input_shape),
                    residual,
                },
                prepared_operands(residual),
            )
        }
        Op::Conv(attrs) if attrs.max_pool.is_some() => (
            KernelCall::ConvMaxPool {
                input_shape: dims(input_shape),
            },
            prepared_operands(false),
        ),
        Op::Conv(attrs) => {
            let residual = attrs.epilogue.residual;
            let call = if attrs.kernel.len() == 1 {
                KernelCall::Conv1d {
                    input_shape: dims(input_shape),
                    residual,
                }
            } else {
                KernelCall::Conv2d {
                    input_shape: dims(input_shape),
                    layout: conv_layout(attrs),
                    residual,
                }
            };
            (call, prepared_operands(residual))
        }
        Op::ConvTranspose(attrs) => (
            KernelCall::ConvTranspose2d {
                input_shape: dims(input_shape),
                weight_shape: dims(&graph.ty(node.inputs[1]).shape),
                options: ConvTranspose2dOptions {
                    stride: dims(&attrs.stride),
                    padding: dims(&attrs.padding),
                    output_padding: dims(&attrs.output_padding),
                    dilation: dims(&attrs.dilation),
                    groups: attrs.groups,
                },
                bias: attrs.bias,
            },
            all_operands,
        ),
        Op::Resize(options) => (
            KernelCall::Resize2d {
                input_shape: dims(input_shape),
                options: *options,
            },
            all_operands,
        ),
        Op::Pad {
            before,
            after,
            mode,
            value,
        } => (
            KernelCall::Pad {
                input_shape: input_shape.clone(),
                before: before.clone(),
                after: after.clone(),
                mode: *mode,
                value: *value,
            },
            all_operands,
        ),
        Op::MatMul => (
            KernelCall::MatMul {
                a_shape: input_shape.clone(),
                b_shape: graph.ty(node.inputs[1]).shape.clone(),
            },
            all_operands,
        ),
        Op::MaxPool(attrs) => {
            let call = if attrs.kernel.len() == 1 {
                KernelCall::MaxPool1d {
                    input_shape: dims(input_shape),
                    options: MaxPool1dOptions {
                        kernel: attrs.kernel[0],
                        stride: attrs.stride[0],
                        padding: attrs.padding[0],
                        dilation: attrs.dilation[0],
                        ceil_mode: attrs.ceil_mode,
                    },
                }
            } else {
                KernelCall::MaxPool2d {
                    input_shape: dims(input_shape),
                    options: max_pool2d_options(attrs),
                    layout: layout(attrs.channels_last),
                }
            };
            (call, all_operands)
        }
        Op::AvgPool(attrs) => {
            let call = if attrs.kernel.len() == 1 {
                KernelCall::AvgPool1d {
                    input_shape: dims(input_shape),
                    options: AvgPool1dOptions {
                        kernel: attrs.kernel[0],
                        stride: attrs.stride[0],
                        padding: attrs.padding[0],
                        ceil_mode: attrs.ceil_mode,
                        count_include_pad: attrs.count_include_pad,
                    },
                }
            } else {
                KernelCall::AvgPool2d {
                    input_shape: dims(input_shape),
                    options: AvgPool2dOptions {
                        kernel: dims(&attrs.kernel),
                        stride: dims(&attrs.stride),
                        padding: dims(&attrs.padding),
                        ceil_mode: attrs.ceil_mode,
                        count_include_pad: attrs.count_include_pad,
                        divisor_override: None,
                    },
                    layout: layout(attrs.channels_last),
                }
            };
            (call, all_operands)
        }
        Op::GlobalAvgPool { channels_last } => (
            KernelCall::GlobalAvgPool {
                input_shape: input_shape.clone(),
                layout: layout(*channels_last),
            },
            all_operands,
        ),
        Op::GlobalMaxPool { channels_last } => (
            KernelCall::GlobalMaxPool {
                input_shape: input_shape.clone(),
                layout: layout(*channels_last),
            },
            all_operands,
        ),
        Op::BatchNorm { .. } => (
            KernelCall::BatchNorm {
                input_shape: input_shape.clone(),
            },
            prepared_operands(false),
        ),
        Op::LayerNorm { eps, affine } => (
            KernelCall::LayerNorm {
                size: last_dim,
                eps: *eps,
                affine: *affine,
            },
            all_operands,
        ),
        Op::RmsNorm { eps, affine } => (
            KernelCall::RmsNorm {
                size: last_dim,
                eps: *eps,
                affine: *affine,
            },
            all_operands,
        ),
        Op::Embedding => {
            let table_shape = &graph.ty(node.inputs[1]).shape;
            (
                KernelCall::Embedding {
                    rows: table_shape[0],
                    dim: table_shape[1],
                },
                all_operands,
            )
        }
        // Positions depend only on the sequence length, not on the input's values.
        Op::PositionEmbedding => (
            KernelCall::PositionEmbedding {
                dim: output_type.last_dim().unwrap_or(1),
                tokens: output_type.shape.get(1).copied().unwrap_or(1),
                position,
            },
            vec![node.inputs[1]],
        ),
        Op::Rope {
            heads, interleaved, ..
        } => (
            KernelCall::Rope {
                batch: input_shape[0],
                seq: input_shape[1],
                heads: *heads,
                convention: if *interleaved {
                    RopeConvention::Interleaved
                } else {
                    RopeConvention::HalfSplit
                },
                position,
            },
            prepared_operands(false),
        ),
        Op::Attention(attrs) => (
            KernelCall::Attention(AttentionCall {
                shape: attention_shape(graph, node, attrs, site),
                scale: attrs.scale,
                causal: attrs.causal,
                pattern: (!attrs.pattern.is_dense()).then(|| attrs.pattern.clone()),
                key_padding_mask: attrs.key_padding_mask,
                cache_layer: site.cache_layer,
            }),
            all_operands,
        ),
        Op::Activation(activation) => (KernelCall::Activation(*activation), all_operands),
        Op::Softmax { axis } => (
            KernelCall::Softmax {
                shape: input_shape.clone(),
                axis: *axis,
            },
            all_operands,
        ),
        Op::LogSoftmax { axis } => (
            KernelCall::LogSoftmax {
                shape: input_shape.clone(),
                axis: *axis,
            },
            all_operands,
        ),
        Op::Reduce { op, axes, .. } => (
            KernelCall::Reduce {
                input_shape: input_shape.clone(),
                axes: axes.clone(),
                op: *op,
            },
            all_operands,
        ),
        Op::Binary(op) => {
            let b_shape = &graph.ty(node.inputs[1]).shape;
            let form = if input_shape == b_shape {
                BinaryForm::SameShape
            } else if input_shape == &output_type.shape
                && memory::is_row_vector(b_shape, input_shape)
            {
                BinaryForm::RowVector
            } else {
                BinaryForm::Broadcast {
                    a_shape: input_shape.clone(),
                    b_shape: b_shape.clone(),
                }
            };
            (KernelCall::Binary { op: *op, form }, all_operands)
        }
        Op::Affine { scale, shift } => (
            KernelCall::Affine {
                scale: *scale,
                shift: *shift,
            },
            all_operands,
        ),
        Op::ElementwiseChain(steps) => (KernelCall::ElementwiseChain(steps.clone()), all_operands),
        Op::Reshape { .. } => (KernelCall::Copy, all_operands),
        Op::Transpose { perm } => (
            KernelCall::Permute {
                input_shape: input_shape.clone(),
                perm: perm.clone(),
            },
            all_operands,
        ),
        Op::Concat { axis } => (
            KernelCall::Concat {
                axis: *axis,
                shapes: node
                    .inputs
                    .iter()
                    .map(|&input| graph.ty(input).shape.clone())
                    .collect(),
            },
            all_operands,
        ),
        Op::Slice { axis, start, end } => (
            KernelCall::Slice {
                input_shape: input_shape.clone(),
                axis: *axis,
                start: *start,
                end: *end,
            },
            all_operands,
        ),
        Op::Select { axis, index } => (
            KernelCall::Slice {
                input_shape: input_shape.clone(),
                axis: *axis,
                start: *index,
                end: index + 1,
            },
            all_operands,
        ),
    };
    NodeCall { call, operands }
}

/// What `node` of `graph` prepares from its weights at load time, if anything. Its weights are
/// then consumed: the node's call reads only its first input (and a fused residual).
pub fn preparation(graph: &Graph, node: &ir::NodeData, site: &Site) -> Option<Preparation> {
    // Whether a node prepares anything is an op property; this says only what it prepares.
    node.op.prepared_state()?;
    let weight_shape = |position: usize| &graph.ty(node.inputs[position]).shape;
    match &node.op {
        Op::Linear { bias, epilogue } => {
            let [out_features, in_features] = dims(weight_shape(1));
            let storage = storage(graph, node.inputs[1]);
            Some(Preparation::Linear {
                out_features,
                in_features,
                weights: layer_weights(node, *bias, epilogue),
                activation: epilogue.activation,
                storage,
            })
        }
        Op::Conv(attrs) if attrs.pointwise.is_some() || attrs.depthwise.is_some() => {
            // The node is a projection running its depthwise layer (whose weights follow the
            // node's own), or the depthwise layer itself; the depthwise layer's expansion's
            // weights follow its own.
            let (depthwise, depthwise_weights, project) = match attrs.depthwise.as_deref() {
                Some(depthwise) => (
                    depthwise,
                    1 + attrs.weight_inputs(),
                    Some(Box::new(conv2d_preparation(graph, node, attrs, 1))),
                ),
                None => (attrs, 1, None),
            };
            let expand = depthwise.pointwise.as_deref().map(|pointwise| {
                let first = depthwise_weights + depthwise.weight_inputs();
                Box::new(conv2d_preparation(graph, node, pointwise, first))
            });
            Some(Preparation::DepthwiseBlock {
                expand,
                depthwise: Box::new(conv2d_preparation(
                    graph,
                    node,
                    depthwise,
                    depthwise_weights,
                )),
                project,
            })
        }
        Op::Conv(attrs) if attrs.max_pool.is_some() => {
            let pool = attrs.max_pool.as_ref().expect("checked by the guard");
            Some(Preparation::ConvMaxPool {
                conv: Box::new(conv2d_preparation(graph, node, attrs, 1)),
                pool: max_pool2d_options(pool),
            })
        }
        Op::Conv(attrs) => {
            let weights = layer_weights(node, attrs.bias, &attrs.epilogue);
            let activation = attrs.epilogue.activation;
            Some(if attrs.kernel.len() == 1 {
                Preparation::Conv1d {
                    weight_shape: dims(weight_shape(1)),
                    options: Conv1dOptions {
                        stride: attrs.stride[0],
                        padding: attrs.padding[0],
                        dilation: attrs.dilation[0],
                        groups: attrs.groups,
                    },
                    weights,
                    activation,
                }
            } else {
                conv2d_preparation(graph, node, attrs, 1)
            })
        }
        Op::BatchNorm { eps } => Some(Preparation::BatchNorm {
            parameters: batch_norm_weights(&node.inputs[1..5], *eps),
        }),
        Op::Rope { heads, theta, .. } => {
            let input_shape = weight_shape(0);
            Some(Preparation::Rope {
                head_dim: input_shape[2] / heads,
                theta: *theta,
                // A decoder's step rotates any position the cache can hold.
                positions: site.max_context.unwrap_or(input_shape[1]),
            })
        }
        other => unreachable!("preparation: {} has no prepared state", other.name()),
    }
}

/// The sizes of an attention node's call. Cached attention reads keys for every position the
/// cache holds, so its workspace is sized for them.
pub fn attention_shape(
    graph: &Graph,
    node: &ir::NodeData,
    attrs: &ir::AttentionAttrs,
    site: &Site,
) -> AttentionShape {
    let (query, key) = (graph.ty(node.inputs[0]), graph.ty(node.inputs[1]));
    let key_len = match site.max_context {
        Some(max_context) if attrs.kv_cache.is_some() => max_context,
        _ => key.shape[1],
    };
    AttentionShape {
        batch: query.shape[0],
        query_len: query.shape[1],
        key_len,
        n_heads: attrs.heads,
        n_kv_heads: attrs.kv_heads,
        head_dim: attrs.head_dim,
    }
}

/// How a prepared layer stores `weight`: as its param says, f32 for any other value.
fn storage(graph: &Graph, weight: ir::Value) -> ir::WeightStorage {
    match graph.values[weight].def {
        ir::ValueDef::Param(param) => graph.params[param].storage,
        _ => ir::WeightStorage::F32,
    }
}

/// The weight, bias and folded batch norm of a conv or linear node: inputs 1, 2 (with a bias),
/// then the batch norm's four.
fn layer_weights(node: &ir::NodeData, has_bias: bool, epilogue: &ir::Epilogue) -> LayerWeights {
    layer_weights_at(node, 1, has_bias, epilogue)
}

/// [`layer_weights`] from input `first` on: a fused pointwise layer's follow the node's own.
fn layer_weights_at(
    node: &ir::NodeData,
    first: usize,
    has_bias: bool,
    epilogue: &ir::Epilogue,
) -> LayerWeights {
    let first_batch_norm = first + 1 + usize::from(has_bias);
    LayerWeights {
        weight: node.inputs[first],
        bias: has_bias.then(|| node.inputs[first + 1]),
        batch_norm: epilogue.batch_norm.map(|eps| {
            batch_norm_weights(&node.inputs[first_batch_norm..first_batch_norm + 4], eps)
        }),
    }
}

/// The [`Preparation::Conv2d`] of the 2-D convolution `attrs` whose weights are `node`'s inputs
/// from `first` on (1 for the node's own layer).
fn conv2d_preparation(
    graph: &Graph,
    node: &ir::NodeData,
    attrs: &ir::ConvAttrs,
    first: usize,
) -> Preparation {
    Preparation::Conv2d {
        weight_shape: dims(&graph.ty(node.inputs[first]).shape),
        options: attrs.conv2d_options().unwrap_or_else(|| {
            unreachable!("kernel_call: the verifier checked the convolution is 2-D")
        }),
        layout: conv_layout(attrs),
        weights: layer_weights_at(node, first, attrs.bias, &attrs.epilogue),
        activation: attrs.epilogue.activation,
        storage: storage(graph, node.inputs[first]),
    }
}

/// The runtime's options of a 2-D max pooling.
fn max_pool2d_options(attrs: &ir::PoolAttrs) -> MaxPool2dOptions {
    MaxPool2dOptions {
        kernel: dims(&attrs.kernel),
        stride: dims(&attrs.stride),
        padding: dims(&attrs.padding),
        dilation: dims(&attrs.dilation),
        ceil_mode: attrs.ceil_mode,
    }
}

/// Batch-norm parameters from `[weight, bias, mean, variance]`.
fn batch_norm_weights(values: &[ir::Value], eps: f32) -> BatchNormWeights {
    let [weight, bias, mean, variance] = values[..] else {
        unreachable!("batch_norm_weights: a batch norm has four parameters")
    };
    BatchNormWeights {
        weight,
        bias,
        mean,
        variance,
        eps,
    }
}

fn conv_layout(attrs: &ir::ConvAttrs) -> Conv2dLayout {
    match (attrs.channels_last, attrs.nchw_input) {
        (false, _) => Conv2dLayout::Nchw,
        (true, false) => Conv2dLayout::ChannelsLast,
        (true, true) => Conv2dLayout::NchwToChannelsLast,
    }
}

fn layout(channels_last: bool) -> ConvLayout {
    if channels_last {
        ConvLayout::ChannelsLast
    } else {
        ConvLayout::Nchw
    }
}

/// A shape the verifier checked to have `N` dimensions, as an array.
fn dims<const N: usize>(shape: &[usize]) -> [usize; N] {
    shape
        .try_into()
        .unwrap_or_else(|_| unreachable!("dims: the verifier checked the rank of {shape:?}"))
}
