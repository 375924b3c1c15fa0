//! The operations of the IR and their attributes.
//!
//! Each variant documents its inputs (in order) and its output. Weights are ordinary inputs that
//! happen to be [`ValueDef::Param`](super::ValueDef::Param) values, so a tied weight is simply a
//! value used by two nodes.
//!
//! What the compiler knows about each op (its category, whether it is elementwise, may run in
//! place, has a channels-last form, builds state at load time) is answered by the methods in
//! [`properties`], each an exhaustive match; code elsewhere asks them instead of matching on ops
//! with a catch-all arm.

mod display;
mod kind;
mod properties;

pub use display::DisplayAttrs;
pub use kind::OpKind;
/// The elementwise vocabulary is shared with the runtime: one definition of each activation and
/// binary operation, with its name and FLOPs, in the `nnc-ops` crate.
pub use nnc_ops::{Activation, BinaryOp, ElementwiseStep, ReduceOp};
/// Resizing and padding use the runtime's own vocabulary: one definition of each coordinate
/// transform, rounding and padding mode.
pub use nnc_ops::{CoordinateTransform, NearestRounding, PadMode, Resize2dOptions, ResizeMode};
pub use properties::{InPlaceRule, OpCategory, PreparedState};

/// What a conv or linear layer applies to its output before writing it, set by the fusion
/// passes. Without them it is empty.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Epilogue {
    /// An inference batch norm with this eps, folded into the weights when the model is built.
    /// Its four parameters (weight, bias, running mean, running variance) follow the layer's
    /// other inputs.
    pub batch_norm: Option<f32>,
    /// A residual (skip-connection) tensor of the output's type is added after the bias and the
    /// batch norm and before the activation: `activation(layer(x) + residual)`. It is the layer's
    /// last input, after the batch norm's parameters.
    pub residual: bool,
    /// An activation applied while the output is still in cache.
    pub activation: Option<Activation>,
}

/// Attributes of a convolution over `kernel.len()` (1 or 2) spatial dimensions.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvAttrs {
    pub kernel: Vec<usize>,
    pub stride: Vec<usize>,
    /// Zero padding on both sides of each spatial dimension.
    pub padding: Vec<usize>,
    pub dilation: Vec<usize>,
    pub groups: usize,
    pub bias: bool,
    pub epilogue: Epilogue,
    /// The activations are channels-last (NHWC): `x [n, h, w, c]` and the output
    /// `[n, out_h, out_w, out]`; the weight keeps its `[out, c / groups, kh, kw]` shape. Only the
    /// layout pass sets it, and only on 2-D convolutions that are depthwise or ungrouped.
    pub channels_last: bool,
    /// With `channels_last`, only the output is channels-last: `x` stays `[n, c, h, w]`. The
    /// layout pass sets it on an ungrouped convolution whose every reader is channels-last (a
    /// stem before a channels-last region), instead of transposing its output.
    pub nchw_input: bool,
    /// A 1×1 convolution that this one reads, run inside it band by band of rows so that its
    /// output never goes out to memory whole (an inverted residual block's widening layer before
    /// its depthwise one). `x` is then the pointwise layer's input, and its weight, bias and batch
    /// norm follow this layer's own among the inputs. Only the `fuse-pointwise-depthwise` pass
    /// sets it: on a channels-last depthwise convolution without a residual, with an ungrouped
    /// channels-last 1×1 convolution of unit stride, no padding and no residual.
    pub pointwise: Option<Box<ConvAttrs>>,
    /// A max pooling of the output, run inside the layer band by band of rows, so that the
    /// unpooled output never goes out to memory whole (a ResNet stem's 3.2 MB). The node's output
    /// is the pooled one. Only the `fuse-conv-max-pool` pass sets it, on a layer that
    /// [`ConvAttrs::takes_max_pool`] with a pooling that [`PoolAttrs::fuses_into_conv`].
    pub max_pool: Option<PoolAttrs>,
    /// A depthwise convolution whose output this 1×1 one reads, run inside it band by band of
    /// rows so that its output never goes out to memory whole (an inverted residual block's
    /// depthwise layer before its projection); it may run its own expansion (`pointwise`). `x`
    /// is then the depthwise layer's input (or its expansion's), and its weights, bias and batch
    /// norm (then the expansion's) follow this layer's own among the inputs, before any
    /// residual. Only the `fuse-depthwise-pointwise` pass sets it: on a layer that
    /// [`ConvAttrs::takes_depthwise`], with a depthwise layer that
    /// [`ConvAttrs::fuses_into_pointwise`].
    pub depthwise: Option<Box<ConvAttrs>>,
}

impl ConvAttrs {
    /// How many inputs the layer's own weights and its fused pointwise layer's take, one
    /// after the other: those a fused 1×1 layer's node holds for this layer as its `depthwise`.
    pub fn layer_weight_inputs(&self) -> usize {
        self.weight_inputs()
            + self
                .pointwise
                .as_ref()
                .map_or(0, |pointwise| pointwise.weight_inputs())
    }

    /// How many inputs the layer's own weights take: the weight, the bias and a batch norm's
    /// four parameters (a fused pointwise layer's follow them).
    pub fn weight_inputs(&self) -> usize {
        1 + usize::from(self.bias)
            + if self.epilogue.batch_norm.is_some() {
                4
            } else {
                0
            }
    }

    /// Whether a depthwise convolution can run this layer inside itself (`pointwise`): a
    /// channels-last 1×1 convolution reading its input as it is, with unit stride, no padding, no
    /// groups, no residual and no fused layer of its own.
    pub fn fuses_into_depthwise(&self) -> bool {
        self.is_plain_pointwise() && !self.epilogue.residual
    }

    /// Whether this layer can run the depthwise convolution it reads inside itself
    /// (`depthwise`): a channels-last 1×1 convolution reading its input as it is, with unit
    /// stride, no padding, no groups and no fused layer of its own (a residual it may add).
    pub fn takes_depthwise(&self) -> bool {
        self.is_plain_pointwise()
    }

    /// A channels-last 1×1 convolution reading its input as it is, with unit stride, no
    /// padding, no groups and no fused layer of its own: its input is its GEMM's left operand.
    fn is_plain_pointwise(&self) -> bool {
        self.channels_last
            && !self.nchw_input
            && self.kernel == [1, 1]
            && self.stride == [1, 1]
            && self.padding == [0, 0]
            && self.groups == 1
            && self.pointwise.is_none()
            && self.depthwise.is_none()
            && self.max_pool.is_none()
    }

    /// Whether a 1×1 convolution can run this layer, whose weight has `weight_shape`, inside
    /// itself (its `depthwise`): a 2-D channels-last depthwise convolution (one input and one
    /// output channel per group) reading its input as it is, without a residual, pooling or
    /// projection of its own (an expansion it may run).
    pub fn fuses_into_pointwise(&self, weight_shape: &[usize]) -> bool {
        self.kernel.len() == 2
            && self.channels_last
            && !self.nchw_input
            && self.groups > 1
            && weight_shape.first() == Some(&self.groups)
            && weight_shape.get(1) == Some(&1)
            && !self.epilogue.residual
            && self.depthwise.is_none()
            && self.max_pool.is_none()
    }

    /// Whether a max pooling of this layer's output can run inside it (`max_pool`): a 2-D NCHW
    /// convolution with no residual and no fused layer of its own.
    pub fn takes_max_pool(&self) -> bool {
        self.kernel.len() == 2
            && !self.channels_last
            && !self.epilogue.residual
            && self.pointwise.is_none()
            && self.depthwise.is_none()
            && self.max_pool.is_none()
    }

    /// The weights the layer multiplies by among its node's `inputs`: its own (the second
    /// input), a fused depthwise layer's and a fused pointwise layer's.
    pub fn weights_multiplied(&self, inputs: &[super::Value]) -> Vec<super::Value> {
        let mut weights = vec![inputs[1]];
        let mut next = 1 + self.weight_inputs();
        if let Some(depthwise) = &self.depthwise {
            weights.push(inputs[next]);
            next += depthwise.weight_inputs();
            if depthwise.pointwise.is_some() {
                weights.push(inputs[next]);
            }
        }
        if self.pointwise.is_some() {
            weights.push(inputs[next]);
        }
        weights
    }

    /// The inputs of the depthwise layer this one runs (`depthwise`) among its node's
    /// `inputs`: `x`, then its weights and its expansion's, which follow this layer's own
    /// (and come before a residual).
    pub fn depthwise_inputs<T: Copy>(&self, inputs: &[T]) -> Vec<T> {
        let Some(depthwise) = &self.depthwise else {
            return Vec::new();
        };
        let start = 1 + self.weight_inputs();
        let mut selected = vec![inputs[0]];
        selected.extend(
            inputs
                .iter()
                .skip(start)
                .take(depthwise.layer_weight_inputs()),
        );
        selected
    }

    /// The runtime's options of a 2-D convolution, `None` for a 1-D one.
    pub fn conv2d_options(&self) -> Option<nnc_ops::Conv2dOptions> {
        let pair = |values: &[usize]| <[usize; 2]>::try_from(values).ok();
        Some(nnc_ops::Conv2dOptions {
            stride: pair(&self.stride)?,
            padding: pair(&self.padding)?,
            dilation: pair(&self.dilation)?,
            groups: self.groups,
        })
    }
}

/// Attributes of a 2-D transposed convolution (PyTorch's `ConvTranspose2d`): each output axis
/// is `(in - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConvTransposeAttrs {
    pub kernel: Vec<usize>,
    pub stride: Vec<usize>,
    /// Removed from both sides of each spatial axis of the full output.
    pub padding: Vec<usize>,
    /// Added to the end of each spatial axis (to pick one of the sizes a strided convolution
    /// maps to the same input size).
    pub output_padding: Vec<usize>,
    pub dilation: Vec<usize>,
    pub groups: usize,
    pub bias: bool,
}

/// Attributes of max and average pooling over `kernel.len()` (1 or 2) spatial dimensions.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolAttrs {
    pub kernel: Vec<usize>,
    pub stride: Vec<usize>,
    pub padding: Vec<usize>,
    /// Only max pooling dilates; average pooling always has dilation 1.
    pub dilation: Vec<usize>,
    /// Round the output size up instead of down (PyTorch's `ceil_mode`).
    pub ceil_mode: bool,
    /// Average pooling divides by the full window, padding included.
    pub count_include_pad: bool,
    /// The input and output are `[n, h, w, c]` (set by the layout pass, 2-D only).
    pub channels_last: bool,
}

impl PoolAttrs {
    /// Whether this pooling can run inside the convolution it reads (`ConvAttrs::max_pool`, for
    /// a max pooling): a 2-D NCHW one.
    pub fn fuses_into_conv(&self) -> bool {
        self.kernel.len() == 2 && !self.channels_last
    }
}

/// An explicit block-sparsity mask: query block `i` sees key block `j` where
/// `mask[i * blocks_per_row + j]`. It is square: `mask.len() == blocks_per_row²`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BlockMask {
    pub block_size: usize,
    pub blocks_per_row: usize,
    pub mask: Vec<bool>,
}

impl BlockMask {
    /// The mask's rows, one per query block.
    pub fn rows(&self) -> impl Iterator<Item = &[bool]> {
        self.mask.chunks(self.blocks_per_row.max(1))
    }
}

/// Which (query, key) pairs an attention may look at, before the causal mask.
///
/// An empty pattern is dense. Otherwise a pair is kept when any present component keeps it; the
/// causal mask, when set, then removes keys after the query. Distances are `i - j` for query
/// position `i` and key position `j`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SparsePattern {
    /// Sliding window: keeps `|i - j| < window * dilation` where `(i - j) % dilation == 0`.
    pub window: Option<usize>,
    /// Gaps in the sliding window; 1 means none.
    pub dilation: usize,
    /// Global tokens (Longformer): they see every key and every query sees them.
    pub global_tokens: Vec<usize>,
    /// Strided pattern (Sparse Transformer): keeps `|i - j| < stride` or `(i - j) % stride == 0`.
    pub strided: Option<usize>,
    /// Explicit block mask.
    pub block_mask: Option<BlockMask>,
}

impl SparsePattern {
    /// Whether query position `query` may attend to key position `key`, before the causal mask:
    /// the definition of `nnc_ops::SparsePattern::allows`, which every kernel agrees with.
    pub fn allows(&self, query: usize, key: usize) -> bool {
        self.view().allows(query, key)
    }

    /// The pattern as the runtime's kernels and generated code take it, borrowing its lists.
    pub fn view(&self) -> nnc_ops::SparsePattern<'_> {
        let (block_size, block_mask) = match &self.block_mask {
            Some(blocks) => (blocks.block_size, blocks.mask.as_slice()),
            None => (1, &[][..]),
        };
        nnc_ops::SparsePattern {
            window: self.window,
            dilation: self.dilation,
            global_tokens: &self.global_tokens,
            strided: self.strided,
            block_size,
            block_mask,
        }
    }

    /// Whether the pattern keeps every pair.
    pub fn is_dense(&self) -> bool {
        self.window.is_none()
            && self.global_tokens.is_empty()
            && self.strided.is_none()
            && self.block_mask.is_none()
    }
}

/// Attributes of scaled dot-product attention.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionAttrs {
    pub heads: usize,
    /// Key/value heads; fewer than `heads` for grouped-query attention.
    pub kv_heads: usize,
    pub head_dim: usize,
    pub causal: bool,
    /// Factor applied to `q·kᵀ`, by default `1 / sqrt(head_dim)`.
    pub scale: f32,
    pub pattern: SparsePattern,
    /// Maximum context of the KV cache used for autoregressive decoding, if any.
    pub kv_cache: Option<usize>,
    /// Whether a fourth input, a key padding mask `[batch, keys]` (nonzero keeps), is present.
    pub key_padding_mask: bool,
}

/// An operation of the IR.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// `y = x·weightᵀ + bias`. Inputs: `x [.., in]`, `weight [out, in]`, `bias [out]` if `bias`,
    /// then the folded batch norm's parameters if the epilogue has one, then the residual (the
    /// output's type) if the epilogue adds one.
    Linear { bias: bool, epilogue: Epilogue },
    /// Batched matrix product. Inputs: `a [.., m, k]`, `b [.., k, n]`; batch dims broadcast.
    MatMul,
    /// Convolution. Inputs: `x [n, c, spatial..]` (`[n, h, w, c]` if `channels_last`),
    /// `weight [out, c / groups, kernel..]`, `bias [out]` if `bias`, then the folded batch norm's
    /// parameters if the epilogue has one, then the residual (the output's type) if the epilogue
    /// adds one.
    Conv(ConvAttrs),
    /// 2-D transposed convolution. Inputs: `x [n, c, h, w]`, `weight [c, out / groups, kh, kw]`,
    /// `bias [out]` if `bias`. Always NCHW: the layout pass keeps it out of channels-last regions.
    ConvTranspose(ConvTransposeAttrs),
    /// Max pooling over the spatial dims of `x [n, c, spatial..]` (`[n, h, w, c]` in and out if
    /// `channels_last`).
    MaxPool(PoolAttrs),
    /// Average pooling over the spatial dims of `x [n, c, spatial..]` (`[n, h, w, c]` in and out
    /// if `channels_last`).
    AvgPool(PoolAttrs),
    /// Mean over all spatial dims, kept as size 1: `[n, c, h, w] -> [n, c, 1, 1]`. With
    /// `channels_last` the input is `[n, h, w, c]` and the output still `[n, c, 1, 1]`, which is
    /// also `[n, 1, 1, c]` in memory: the pool leaves a channels-last region without a transpose.
    GlobalAvgPool { channels_last: bool },
    /// Maximum over all spatial dims, kept as size 1 (`channels_last` as for the mean).
    GlobalMaxPool { channels_last: bool },
    /// Inference batch norm over axis 1. Inputs: `x`, `weight`, `bias`, `running_mean`, `running_var`.
    BatchNorm { eps: f32 },
    /// Normalization over the last dim. Inputs: `x`, then `weight` and `bias` if `affine`.
    LayerNorm { eps: f32, affine: bool },
    /// Root-mean-square normalization over the last dim. Inputs: `x`, then `weight` if `affine`.
    RmsNorm { eps: f32, affine: bool },
    /// Row lookup. Inputs: `ids` (i64), `weight [num_embeddings, dim]`. Output `[ids.., dim]`.
    Embedding,
    /// Learned absolute positions. Inputs: `x` (axis 1 is the sequence), `weight [max, dim]`.
    /// Output `[1, seq, dim]`: rows `offset..offset + seq` of the table, where the offset is the
    /// number of positions already in the KV cache (0 without one).
    PositionEmbedding,
    /// Rotary position embedding of `x [batch, seq, heads * head_dim]`, per head.
    Rope {
        heads: usize,
        theta: f32,
        interleaved: bool,
    },
    /// Scaled dot-product attention. Inputs: `q [b, sq, heads * d]`, `k` and `v [b, sk, kv_heads * d]`,
    /// then a key padding mask `[b, sk]` if the attributes say so. Output `[b, sq, heads * d]`.
    Attention(AttentionAttrs),
    /// An elementwise activation.
    Activation(Activation),
    /// Softmax along `axis`.
    Softmax { axis: usize },
    /// Log-softmax along `axis`: `x - max - ln(sum(exp(x - max)))`.
    LogSoftmax { axis: usize },
    /// The sum, mean or maximum of `x` over `axes` (distinct and increasing). With `keepdims`
    /// the reduced axes stay as size 1, without they are dropped (all of them: a scalar).
    Reduce {
        op: ReduceOp,
        axes: Vec<usize>,
        keepdims: bool,
    },
    /// An elementwise binary operation with broadcasting.
    Binary(BinaryOp),
    /// `x * scale + shift`, elementwise.
    Affine { scale: f32, shift: f32 },
    /// Several elementwise steps in one pass over memory (made by the elementwise-fusion pass).
    ElementwiseChain(Vec<ElementwiseStep>),
    /// Same elements, new shape.
    Reshape { shape: Vec<usize> },
    /// Permutes the axes: output axis `i` is input axis `perm[i]`.
    Transpose { perm: Vec<usize> },
    /// Joins all inputs along `axis`.
    Concat { axis: usize },
    /// Keeps `start..end` of `axis`.
    Slice {
        axis: usize,
        start: usize,
        end: usize,
    },
    /// Takes `index` of `axis` and drops the axis.
    Select { axis: usize, index: usize },
    /// Resizes the images `x [n, c, h, w]` to `[n, c, output_size..]`, nearest or bilinear.
    /// Always NCHW.
    Resize(Resize2dOptions),
    /// Pads each axis of `x` by `before[axis]` and `after[axis]` elements, filled as `mode` says
    /// (`value` for a constant border).
    Pad {
        before: Vec<usize>,
        after: Vec<usize>,
        mode: PadMode,
        value: f32,
    },
}

impl Op {
    /// The name printed in IR; mostly the `.nn` name of the layer.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Linear { .. } => "linear",
            Op::MatMul => "matmul",
            Op::Conv(attrs) if attrs.kernel.len() == 1 => "conv1d",
            Op::Conv(_) => "conv2d",
            Op::ConvTranspose(_) => "conv_transpose2d",
            Op::MaxPool(attrs) if attrs.kernel.len() == 1 => "max_pool1d",
            Op::MaxPool(_) => "max_pool2d",
            Op::AvgPool(attrs) if attrs.kernel.len() == 1 => "avg_pool1d",
            Op::AvgPool(_) => "avg_pool2d",
            Op::GlobalAvgPool { .. } => "global_avg_pool",
            Op::GlobalMaxPool { .. } => "global_max_pool",
            Op::BatchNorm { .. } => "batch_norm",
            Op::LayerNorm { .. } => "layer_norm",
            Op::RmsNorm { .. } => "rms_norm",
            Op::Embedding => "embedding",
            Op::PositionEmbedding => "position_embedding",
            Op::Rope { .. } => "rope",
            Op::Attention(_) => "attention",
            Op::Activation(activation) => activation.name(),
            Op::Softmax { .. } => "softmax",
            Op::LogSoftmax { .. } => "log_softmax",
            Op::Reduce { op, .. } => op.name(),
            Op::Binary(op) => op.name(),
            Op::Affine { .. } => "affine",
            Op::ElementwiseChain(_) => "elementwise",
            Op::Reshape { .. } => "reshape",
            Op::Transpose { .. } => "transpose",
            Op::Concat { .. } => "concat",
            Op::Slice { .. } => "slice",
            Op::Select { .. } => "select",
            Op::Resize(_) => "resize",
            Op::Pad { .. } => "pad",
        }
    }
}
