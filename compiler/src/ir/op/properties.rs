//! What the compiler knows about each op, answered in one place.
//!
//! Passes, the memory planner, code generation, the interpreter, the cost model and the reports
//! all ask the same questions of an op: what kind of work it is, whether it is elementwise, whether
//! it may overwrite its input, whether it has a channels-last form, what it builds when the model
//! is loaded. Each question is a method here with an exhaustive `match` (no `_` arm), so a new op
//! cannot compile until every question has an answer for it, and no other file decides these
//! properties with a catch-all arm of its own.

use super::{ElementwiseStep, Epilogue, Op};
use crate::ir::{NodeData, Value};

/// The kind of work an op does: what reports colour by and what passes group by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpCategory {
    /// Matrix products: `linear` and `matmul`.
    Dense,
    /// `conv1d`, `conv2d` and `conv_transpose2d`.
    Convolution,
    /// Windowed and global max and average pooling, and the reductions over axes (sum, mean,
    /// max).
    Pooling,
    /// Ops that normalize along an axis: batch, layer and RMS norm, softmax and log-softmax.
    Normalization,
    /// Unary elementwise functions (activations), and the fused elementwise chains made of them
    /// and of affine maps.
    Activation,
    /// Scaled dot-product attention.
    Attention,
    /// Elementwise arithmetic: binary operations with broadcasting and affine maps.
    Arithmetic,
    /// Table lookups and position encodings: `embedding`, `position_embedding` and `rope`.
    Embedding,
    /// Ops that move data: reshape, transpose, concat, slice, select and pad, and resize (which
    /// also blends neighbours when bilinear).
    Shape,
}

impl OpCategory {
    /// Every category, in the order of the declaration.
    pub const ALL: [OpCategory; 9] = [
        OpCategory::Dense,
        OpCategory::Convolution,
        OpCategory::Pooling,
        OpCategory::Normalization,
        OpCategory::Activation,
        OpCategory::Attention,
        OpCategory::Arithmetic,
        OpCategory::Embedding,
        OpCategory::Shape,
    ];
}

/// When a node's output may take the memory of its first input, given that the input is not read
/// after the node (the memory planner checks that part).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InPlaceRule {
    /// Never: the kernel reads its input after it has started writing its output.
    Never,
    /// When the output has the first input's type (dtype and shape): the kernel reads each
    /// element before it writes the same element. Unary elementwise ops and batch norm.
    SameType,
    /// Whenever the output has the first input's dtype: the output is the same elements under a
    /// new shape, so it can simply be the input's memory (reshape).
    SameDtype,
    /// A binary elementwise op: when the output has the first operand's type, the second operand
    /// is a different value, and the second operand either has the first's shape or is one row
    /// broadcast along the last axis (`[.., 1, n]` against `[.., m, n]`), the two cases the
    /// runtime's in-place kernels take.
    FirstOperandOfTwo,
}

/// What a node builds once, when the model is loaded, and keeps between calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PreparedState {
    /// A linear layer's weight packed for the matrix kernel, a folded batch norm included.
    Linear,
    /// A 1-D convolution's packed weight.
    Conv1d,
    /// A 2-D convolution's packed weight, over NCHW images.
    Conv2d,
    /// A 2-D convolution's packed weight, over channels-last (NHWC) images.
    Conv2dChannelsLast,
    /// An inference batch norm folded to a per-channel `x * scale + shift`.
    BatchNorm,
    /// The cosine and sine table of a rotary position embedding (from attributes, no weights).
    Rope,
}

impl Op {
    /// The kind of work the op does.
    pub fn category(&self) -> OpCategory {
        match self {
            Op::Linear { .. } | Op::MatMul => OpCategory::Dense,
            Op::Conv(_) | Op::ConvTranspose(_) => OpCategory::Convolution,
            Op::MaxPool(_)
            | Op::AvgPool(_)
            | Op::GlobalAvgPool { .. }
            | Op::GlobalMaxPool { .. }
            | Op::Reduce { .. } => OpCategory::Pooling,
            Op::BatchNorm { .. }
            | Op::LayerNorm { .. }
            | Op::RmsNorm { .. }
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. } => OpCategory::Normalization,
            Op::Activation(_) | Op::ElementwiseChain(_) => OpCategory::Activation,
            Op::Attention(_) => OpCategory::Attention,
            Op::Binary(_) | Op::Affine { .. } => OpCategory::Arithmetic,
            Op::Embedding | Op::PositionEmbedding | Op::Rope { .. } => OpCategory::Embedding,
            Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Concat { .. }
            | Op::Slice { .. }
            | Op::Select { .. }
            | Op::Resize(_)
            | Op::Pad { .. } => OpCategory::Shape,
        }
    }

    /// Whether each output element depends only on the input elements at the same position
    /// (after broadcasting): activations, affine maps, fused chains and binary operations. Such
    /// an op commutes with any permutation of the axes of same-shaped operands.
    pub fn is_elementwise(&self) -> bool {
        match self.category() {
            OpCategory::Activation | OpCategory::Arithmetic => true,
            OpCategory::Dense
            | OpCategory::Convolution
            | OpCategory::Pooling
            | OpCategory::Normalization
            | OpCategory::Attention
            | OpCategory::Embedding
            | OpCategory::Shape => false,
        }
    }

    /// The steps of a unary elementwise op, as the elementwise-fusion pass chains them; `None`
    /// for every other op (binary ops included: a chain has one operand).
    pub fn elementwise_steps(&self) -> Option<Vec<ElementwiseStep>> {
        match self {
            Op::Activation(activation) => Some(vec![ElementwiseStep::Activation(*activation)]),
            Op::Affine { scale, shift } => Some(vec![ElementwiseStep::Affine {
                scale: *scale,
                shift: *shift,
            }]),
            Op::ElementwiseChain(steps) => Some(steps.clone()),
            Op::Linear { .. }
            | Op::MatMul
            | Op::Conv(_)
            | Op::MaxPool(_)
            | Op::AvgPool(_)
            | Op::GlobalAvgPool { .. }
            | Op::GlobalMaxPool { .. }
            | Op::BatchNorm { .. }
            | Op::LayerNorm { .. }
            | Op::RmsNorm { .. }
            | Op::Embedding
            | Op::PositionEmbedding
            | Op::Rope { .. }
            | Op::Attention(_)
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::Reduce { .. }
            | Op::Binary(_)
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Concat { .. }
            | Op::Slice { .. }
            | Op::Select { .. }
            | Op::ConvTranspose(_)
            | Op::Resize(_)
            | Op::Pad { .. } => None,
        }
    }

    /// When the node's output may take its first input's memory; see [`InPlaceRule`].
    pub fn in_place_rule(&self) -> InPlaceRule {
        match self {
            Op::Activation(_)
            | Op::Affine { .. }
            | Op::ElementwiseChain(_)
            | Op::BatchNorm { .. } => InPlaceRule::SameType,
            Op::Reshape { .. } => InPlaceRule::SameDtype,
            Op::Binary(_) => InPlaceRule::FirstOperandOfTwo,
            // A conv or linear layer with a fused residual cannot take the residual's memory
            // either: its kernel writes partial products into the output before the epilogue
            // reads the residual.
            Op::Linear { .. }
            | Op::MatMul
            | Op::Conv(_)
            | Op::MaxPool(_)
            | Op::AvgPool(_)
            | Op::GlobalAvgPool { .. }
            | Op::GlobalMaxPool { .. }
            | Op::LayerNorm { .. }
            | Op::RmsNorm { .. }
            | Op::Embedding
            | Op::PositionEmbedding
            | Op::Rope { .. }
            | Op::Attention(_)
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::Reduce { .. }
            | Op::Transpose { .. }
            | Op::Concat { .. }
            | Op::Slice { .. }
            | Op::Select { .. }
            | Op::ConvTranspose(_)
            | Op::Resize(_)
            | Op::Pad { .. } => InPlaceRule::Never,
        }
    }

    /// Whether the output may ever take the first input's memory (for some types).
    pub fn can_run_in_place(&self) -> bool {
        self.in_place_rule() != InPlaceRule::Never
    }

    /// Whether the runtime can run the op on channels-last (`[n, h, w, c]`) images: 2-D
    /// convolutions (the layout pass further requires them depthwise or pointwise, for speed),
    /// 2-D and global pooling (the layout pass further requires a 4-D input for global pooling),
    /// and elementwise ops (on operands of one shape, since they commute with the permutation).
    pub fn has_channels_last_form(&self) -> bool {
        match self {
            Op::Conv(attrs) => attrs.kernel.len() == 2,
            Op::MaxPool(attrs) | Op::AvgPool(attrs) => attrs.kernel.len() == 2,
            Op::GlobalAvgPool { .. } | Op::GlobalMaxPool { .. } => true,
            Op::Activation(_) | Op::Affine { .. } | Op::ElementwiseChain(_) | Op::Binary(_) => true,
            Op::Linear { .. }
            | Op::MatMul
            | Op::BatchNorm { .. }
            | Op::LayerNorm { .. }
            | Op::RmsNorm { .. }
            | Op::Embedding
            | Op::PositionEmbedding
            | Op::Rope { .. }
            | Op::Attention(_)
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::Reduce { .. }
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Concat { .. }
            | Op::Slice { .. }
            | Op::Select { .. }
            | Op::ConvTranspose(_)
            | Op::Resize(_)
            | Op::Pad { .. } => false,
        }
    }

    /// Marks an op of a channels-last region as running on `[n, h, w, c]` images: convolutions
    /// and poolings say so in their attributes; elementwise ops need no mark, and the other ops
    /// have no channels-last form.
    pub fn set_channels_last(&mut self) {
        match self {
            Op::Conv(attrs) => attrs.channels_last = true,
            Op::MaxPool(attrs) | Op::AvgPool(attrs) => attrs.channels_last = true,
            Op::GlobalAvgPool { channels_last } | Op::GlobalMaxPool { channels_last } => {
                *channels_last = true
            }
            Op::Activation(_)
            | Op::Affine { .. }
            | Op::ElementwiseChain(_)
            | Op::Binary(_)
            | Op::Linear { .. }
            | Op::MatMul
            | Op::BatchNorm { .. }
            | Op::LayerNorm { .. }
            | Op::RmsNorm { .. }
            | Op::Embedding
            | Op::PositionEmbedding
            | Op::Rope { .. }
            | Op::Attention(_)
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::Reduce { .. }
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Concat { .. }
            | Op::Slice { .. }
            | Op::Select { .. }
            | Op::ConvTranspose(_)
            | Op::Resize(_)
            | Op::Pad { .. } => {}
        }
    }

    /// What the node builds when the model is loaded, if anything. A prepared node consumes its
    /// weights (every input after the first, but a fused residual) when it is built.
    pub fn prepared_state(&self) -> Option<PreparedState> {
        match self {
            Op::Linear { .. } => Some(PreparedState::Linear),
            Op::Conv(attrs) if attrs.kernel.len() == 1 => Some(PreparedState::Conv1d),
            Op::Conv(attrs) if attrs.channels_last => Some(PreparedState::Conv2dChannelsLast),
            Op::Conv(_) => Some(PreparedState::Conv2d),
            Op::BatchNorm { .. } => Some(PreparedState::BatchNorm),
            Op::Rope { .. } => Some(PreparedState::Rope),
            Op::MatMul
            | Op::MaxPool(_)
            | Op::AvgPool(_)
            | Op::GlobalAvgPool { .. }
            | Op::GlobalMaxPool { .. }
            | Op::LayerNorm { .. }
            | Op::RmsNorm { .. }
            | Op::Embedding
            | Op::PositionEmbedding
            | Op::Attention(_)
            | Op::Activation(_)
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::Reduce { .. }
            | Op::Binary(_)
            | Op::Affine { .. }
            | Op::ElementwiseChain(_)
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Concat { .. }
            | Op::Slice { .. }
            | Op::Select { .. }
            | Op::ConvTranspose(_)
            | Op::Resize(_)
            | Op::Pad { .. } => None,
        }
    }

    /// Whether the node builds state when the model is loaded (see [`Op::prepared_state`]).
    pub fn prepares_weights(&self) -> bool {
        self.prepared_state().is_some()
    }

    /// The epilogue of a layer that has one (conv and linear): what the fusion passes fold into
    /// it and what its kernel applies to each finished output tile.
    pub fn epilogue(&self) -> Option<&Epilogue> {
        match self {
            Op::Linear { epilogue, .. } => Some(epilogue),
            Op::Conv(attrs) => Some(&attrs.epilogue),
            Op::MatMul
            | Op::MaxPool(_)
            | Op::AvgPool(_)
            | Op::GlobalAvgPool { .. }
            | Op::GlobalMaxPool { .. }
            | Op::BatchNorm { .. }
            | Op::LayerNorm { .. }
            | Op::RmsNorm { .. }
            | Op::Embedding
            | Op::PositionEmbedding
            | Op::Rope { .. }
            | Op::Attention(_)
            | Op::Activation(_)
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::Reduce { .. }
            | Op::Binary(_)
            | Op::Affine { .. }
            | Op::ElementwiseChain(_)
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Concat { .. }
            | Op::Slice { .. }
            | Op::Select { .. }
            | Op::ConvTranspose(_)
            | Op::Resize(_)
            | Op::Pad { .. } => None,
        }
    }

    /// The epilogue of a layer that has one, to change; see [`Op::epilogue`].
    pub fn epilogue_mut(&mut self) -> Option<&mut Epilogue> {
        match self {
            Op::Linear { epilogue, .. } => Some(epilogue),
            Op::Conv(attrs) => Some(&mut attrs.epilogue),
            Op::MatMul
            | Op::MaxPool(_)
            | Op::AvgPool(_)
            | Op::GlobalAvgPool { .. }
            | Op::GlobalMaxPool { .. }
            | Op::BatchNorm { .. }
            | Op::LayerNorm { .. }
            | Op::RmsNorm { .. }
            | Op::Embedding
            | Op::PositionEmbedding
            | Op::Rope { .. }
            | Op::Attention(_)
            | Op::Activation(_)
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::Reduce { .. }
            | Op::Binary(_)
            | Op::Affine { .. }
            | Op::ElementwiseChain(_)
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Concat { .. }
            | Op::Slice { .. }
            | Op::Select { .. }
            | Op::ConvTranspose(_)
            | Op::Resize(_)
            | Op::Pad { .. } => None,
        }
    }

    /// The axis of the output indexed by the layer's output channels, for a layer whose output
    /// has `output_rank` axes: the axis a per-channel epilogue (a folded batch norm) scales. The
    /// last axis for linear layers and channels-last convolutions, axis 1 for other convolutions;
    /// `None` for ops without output channels of their own.
    pub fn output_channel_axis(&self, output_rank: usize) -> Option<usize> {
        match self {
            Op::Linear { .. } => output_rank.checked_sub(1),
            Op::Conv(attrs) if attrs.channels_last => output_rank.checked_sub(1),
            Op::Conv(_) => Some(1),
            Op::MatMul
            | Op::MaxPool(_)
            | Op::AvgPool(_)
            | Op::GlobalAvgPool { .. }
            | Op::GlobalMaxPool { .. }
            | Op::BatchNorm { .. }
            | Op::LayerNorm { .. }
            | Op::RmsNorm { .. }
            | Op::Embedding
            | Op::PositionEmbedding
            | Op::Rope { .. }
            | Op::Attention(_)
            | Op::Activation(_)
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::Reduce { .. }
            | Op::Binary(_)
            | Op::Affine { .. }
            | Op::ElementwiseChain(_)
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Concat { .. }
            | Op::Slice { .. }
            | Op::Select { .. }
            | Op::ConvTranspose(_)
            | Op::Resize(_)
            | Op::Pad { .. } => None,
        }
    }

    /// Whether the op returns its first input unchanged when that input has `input_shape`: an
    /// affine map by 1 and 0, a reshape to the same shape, the identity permutation, a slice of a
    /// whole axis. Constant folding replaces such nodes by their input.
    pub fn is_identity_on(&self, input_shape: &[usize]) -> bool {
        match self {
            Op::Affine { scale, shift } => *scale == 1.0 && *shift == 0.0,
            Op::Reshape { shape } => input_shape == shape.as_slice(),
            Op::Transpose { perm } => perm
                .iter()
                .enumerate()
                .all(|(axis, &source)| axis == source),
            Op::Slice { axis, start, end } => *start == 0 && *end == input_shape[*axis],
            Op::Linear { .. }
            | Op::MatMul
            | Op::Conv(_)
            | Op::MaxPool(_)
            | Op::AvgPool(_)
            | Op::GlobalAvgPool { .. }
            | Op::GlobalMaxPool { .. }
            | Op::BatchNorm { .. }
            | Op::LayerNorm { .. }
            | Op::RmsNorm { .. }
            | Op::Embedding
            | Op::PositionEmbedding
            | Op::Rope { .. }
            | Op::Attention(_)
            | Op::Activation(_)
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::Reduce { .. }
            | Op::Binary(_)
            | Op::ElementwiseChain(_)
            | Op::Concat { .. }
            | Op::Select { .. }
            | Op::ConvTranspose(_)
            | Op::Resize(_)
            | Op::Pad { .. } => false,
        }
    }
}

impl NodeData {
    /// The residual a conv or linear layer adds in its epilogue, if it has one: its last input.
    pub fn residual_input(&self) -> Option<Value> {
        let residual = self.op.epilogue().is_some_and(|epilogue| epilogue.residual);
        if residual {
            self.inputs.last().copied()
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{InPlaceRule, OpCategory};
    use crate::ir::OpKind;

    /// The properties agree with each other on every op.
    #[test]
    fn properties_are_consistent() {
        for op in OpKind::ALL.into_iter().flat_map(OpKind::examples) {
            let name = op.name();
            if op.is_elementwise() {
                assert!(
                    op.can_run_in_place(),
                    "{name}: elementwise ops run in place"
                );
                assert!(
                    op.has_channels_last_form(),
                    "{name}: elementwise ops permute"
                );
            }
            if op.elementwise_steps().is_some() {
                assert!(op.is_elementwise(), "{name}: chain steps are elementwise");
                assert_eq!(op.in_place_rule(), InPlaceRule::SameType, "{name}");
            }
            if op.epilogue().is_some() {
                assert!(
                    op.prepares_weights(),
                    "{name}: epilogues are applied by prepared layers"
                );
                assert!(
                    matches!(op.category(), OpCategory::Dense | OpCategory::Convolution),
                    "{name}"
                );
            }
            assert!(OpCategory::ALL.contains(&op.category()));
        }
    }
}
