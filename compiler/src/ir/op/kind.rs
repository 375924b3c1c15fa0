//! The variants of [`Op`] without their attributes, so that tests and documentation checks can
//! list every op.

use super::{
    Activation, AttentionAttrs, BinaryOp, ConvAttrs, ConvTransposeAttrs, CoordinateTransform,
    ElementwiseStep, Epilogue, NearestRounding, Op, PadMode, PoolAttrs, ReduceOp, Resize2dOptions,
    ResizeMode, SparsePattern,
};

/// An [`Op`] variant without its attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    Linear,
    MatMul,
    Conv,
    ConvTranspose,
    MaxPool,
    AvgPool,
    GlobalAvgPool,
    GlobalMaxPool,
    BatchNorm,
    LayerNorm,
    RmsNorm,
    Embedding,
    PositionEmbedding,
    Rope,
    Attention,
    Activation,
    Softmax,
    LogSoftmax,
    Reduce,
    Binary,
    Affine,
    ElementwiseChain,
    Reshape,
    Transpose,
    Concat,
    Slice,
    Select,
    Resize,
    Pad,
}

impl OpKind {
    /// Every kind, in the order of [`Op`]'s declaration. A kind missing here is caught by the
    /// exhaustive match in this file's test.
    pub const ALL: [OpKind; 29] = [
        OpKind::Linear,
        OpKind::MatMul,
        OpKind::Conv,
        OpKind::ConvTranspose,
        OpKind::MaxPool,
        OpKind::AvgPool,
        OpKind::GlobalAvgPool,
        OpKind::GlobalMaxPool,
        OpKind::BatchNorm,
        OpKind::LayerNorm,
        OpKind::RmsNorm,
        OpKind::Embedding,
        OpKind::PositionEmbedding,
        OpKind::Rope,
        OpKind::Attention,
        OpKind::Activation,
        OpKind::Softmax,
        OpKind::LogSoftmax,
        OpKind::Reduce,
        OpKind::Binary,
        OpKind::Affine,
        OpKind::ElementwiseChain,
        OpKind::Reshape,
        OpKind::Transpose,
        OpKind::Concat,
        OpKind::Slice,
        OpKind::Select,
        OpKind::Resize,
        OpKind::Pad,
    ];

    /// Ops of this kind with typical attributes, one for each name the IR prints for the kind
    /// (`conv1d` and `conv2d`; every activation, both forms of GELU included; every binary
    /// operation; every reduction), for tests and checks that must cover every op.
    pub fn examples(self) -> Vec<Op> {
        match self {
            OpKind::Linear => vec![Op::Linear {
                bias: true,
                epilogue: Epilogue::default(),
            }],
            OpKind::MatMul => vec![Op::MatMul],
            OpKind::Conv => vec![Op::Conv(conv_attrs(1)), Op::Conv(conv_attrs(2))],
            OpKind::ConvTranspose => vec![Op::ConvTranspose(ConvTransposeAttrs {
                kernel: vec![4, 4],
                stride: vec![2, 2],
                padding: vec![1, 1],
                output_padding: vec![0, 0],
                dilation: vec![1, 1],
                groups: 1,
                bias: true,
            })],
            OpKind::MaxPool => vec![Op::MaxPool(pool_attrs(1)), Op::MaxPool(pool_attrs(2))],
            OpKind::AvgPool => vec![Op::AvgPool(pool_attrs(1)), Op::AvgPool(pool_attrs(2))],
            OpKind::GlobalAvgPool => vec![Op::GlobalAvgPool {
                channels_last: false,
            }],
            OpKind::GlobalMaxPool => vec![Op::GlobalMaxPool {
                channels_last: false,
            }],
            OpKind::BatchNorm => vec![Op::BatchNorm { eps: 1e-5 }],
            OpKind::LayerNorm => vec![Op::LayerNorm {
                eps: 1e-5,
                affine: true,
            }],
            OpKind::RmsNorm => vec![
                Op::RmsNorm {
                    eps: 1e-6,
                    affine: true,
                },
                Op::RmsNorm {
                    eps: 1e-6,
                    affine: false,
                },
            ],
            OpKind::Embedding => vec![Op::Embedding],
            OpKind::PositionEmbedding => vec![Op::PositionEmbedding],
            OpKind::Rope => vec![Op::Rope {
                heads: 4,
                theta: 10000.0,
                interleaved: false,
            }],
            OpKind::Attention => vec![Op::Attention(AttentionAttrs {
                heads: 4,
                kv_heads: 4,
                head_dim: 16,
                causal: true,
                scale: 0.25,
                pattern: SparsePattern::default(),
                kv_cache: None,
                key_padding_mask: false,
            })],
            OpKind::Activation => Activation::ALL.into_iter().map(Op::Activation).collect(),
            OpKind::Softmax => vec![Op::Softmax { axis: 1 }],
            OpKind::LogSoftmax => vec![Op::LogSoftmax { axis: 1 }],
            OpKind::Reduce => ReduceOp::ALL
                .into_iter()
                .map(|op| Op::Reduce {
                    op,
                    axes: vec![1],
                    keepdims: true,
                })
                .collect(),
            OpKind::Binary => BinaryOp::ALL.into_iter().map(Op::Binary).collect(),
            OpKind::Affine => vec![Op::Affine {
                scale: 2.0,
                shift: 1.0,
            }],
            OpKind::ElementwiseChain => vec![Op::ElementwiseChain(vec![
                ElementwiseStep::Affine {
                    scale: 2.0,
                    shift: 1.0,
                },
                ElementwiseStep::Activation(Activation::Relu),
            ])],
            OpKind::Reshape => vec![Op::Reshape { shape: vec![2, 8] }],
            OpKind::Transpose => vec![Op::Transpose { perm: vec![1, 0] }],
            OpKind::Concat => vec![Op::Concat { axis: 1 }],
            OpKind::Slice => vec![Op::Slice {
                axis: 1,
                start: 0,
                end: 4,
            }],
            OpKind::Select => vec![Op::Select { axis: 0, index: 0 }],
            OpKind::Resize => vec![Op::Resize(Resize2dOptions {
                output_size: [8, 8],
                scale: [2.0, 2.0],
                mode: ResizeMode::Nearest,
                coordinates: CoordinateTransform::Asymmetric,
                nearest: NearestRounding::Floor,
            })],
            OpKind::Pad => vec![Op::Pad {
                before: vec![0, 0, 1, 1],
                after: vec![0, 0, 1, 1],
                mode: PadMode::Constant,
                value: 0.0,
            }],
        }
    }
}

impl Op {
    /// The variant of the op, without its attributes.
    pub fn kind(&self) -> OpKind {
        match self {
            Op::Linear { .. } => OpKind::Linear,
            Op::MatMul => OpKind::MatMul,
            Op::Conv(_) => OpKind::Conv,
            Op::ConvTranspose(_) => OpKind::ConvTranspose,
            Op::MaxPool(_) => OpKind::MaxPool,
            Op::AvgPool(_) => OpKind::AvgPool,
            Op::GlobalAvgPool { .. } => OpKind::GlobalAvgPool,
            Op::GlobalMaxPool { .. } => OpKind::GlobalMaxPool,
            Op::BatchNorm { .. } => OpKind::BatchNorm,
            Op::LayerNorm { .. } => OpKind::LayerNorm,
            Op::RmsNorm { .. } => OpKind::RmsNorm,
            Op::Embedding => OpKind::Embedding,
            Op::PositionEmbedding => OpKind::PositionEmbedding,
            Op::Rope { .. } => OpKind::Rope,
            Op::Attention(_) => OpKind::Attention,
            Op::Activation(_) => OpKind::Activation,
            Op::Softmax { .. } => OpKind::Softmax,
            Op::LogSoftmax { .. } => OpKind::LogSoftmax,
            Op::Reduce { .. } => OpKind::Reduce,
            Op::Binary(_) => OpKind::Binary,
            Op::Affine { .. } => OpKind::Affine,
            Op::ElementwiseChain(_) => OpKind::ElementwiseChain,
            Op::Reshape { .. } => OpKind::Reshape,
            Op::Transpose { .. } => OpKind::Transpose,
            Op::Concat { .. } => OpKind::Concat,
            Op::Slice { .. } => OpKind::Slice,
            Op::Select { .. } => OpKind::Select,
            Op::Resize(_) => OpKind::Resize,
            Op::Pad { .. } => OpKind::Pad,
        }
    }
}

/// A 3-wide convolution over `spatial` dimensions, padded to keep the size.
fn conv_attrs(spatial: usize) -> ConvAttrs {
    ConvAttrs {
        kernel: vec![3; spatial],
        stride: vec![1; spatial],
        padding: vec![1; spatial],
        dilation: vec![1; spatial],
        groups: 1,
        bias: true,
        epilogue: Epilogue::default(),
        channels_last: false,
        nchw_input: false,
        pointwise: None,
        max_pool: None,
        depthwise: None,
    }
}

/// A 2-wide, stride-2 pooling over `spatial` dimensions.
fn pool_attrs(spatial: usize) -> PoolAttrs {
    PoolAttrs {
        kernel: vec![2; spatial],
        stride: vec![2; spatial],
        padding: vec![0; spatial],
        dilation: vec![1; spatial],
        ceil_mode: false,
        count_include_pad: true,
        channels_last: false,
    }
}

#[cfg(test)]
mod tests {
    use super::OpKind;

    /// Fails to compile when a kind is added: a reminder to list it in `ALL`.
    fn kind_is_listed(kind: OpKind) -> bool {
        match kind {
            OpKind::Linear
            | OpKind::MatMul
            | OpKind::Conv
            | OpKind::ConvTranspose
            | OpKind::MaxPool
            | OpKind::AvgPool
            | OpKind::GlobalAvgPool
            | OpKind::GlobalMaxPool
            | OpKind::BatchNorm
            | OpKind::LayerNorm
            | OpKind::RmsNorm
            | OpKind::Embedding
            | OpKind::PositionEmbedding
            | OpKind::Rope
            | OpKind::Attention
            | OpKind::Activation
            | OpKind::Softmax
            | OpKind::LogSoftmax
            | OpKind::Reduce
            | OpKind::Binary
            | OpKind::Affine
            | OpKind::ElementwiseChain
            | OpKind::Reshape
            | OpKind::Transpose
            | OpKind::Concat
            | OpKind::Slice
            | OpKind::Select
            | OpKind::Resize
            | OpKind::Pad => OpKind::ALL.contains(&kind),
        }
    }

    #[test]
    fn every_kind_is_listed_and_its_examples_have_it() {
        for kind in OpKind::ALL {
            assert!(kind_is_listed(kind));
            let examples = kind.examples();
            assert!(!examples.is_empty(), "{kind:?} has no example");
            for op in examples {
                assert_eq!(op.kind(), kind, "{op:?}");
            }
        }
    }
}
