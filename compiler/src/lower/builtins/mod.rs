//! The built-in layers and functions of the language: one table, [`BUILTINS`], with a row each.
//!
//! A row gives the built-in's name, its parameters in positional order, the PyTorch or Keras
//! spellings that "did you mean" hints map to it, and its lowering: a function that reads the
//! arguments through a [`CallCx`], creates the weights and emits the nodes. Everything that looks a
//! built-in up by name goes through the table, so adding one is adding a row (and its function in
//! the file of its family, if no existing function fits).

pub(super) mod arithmetic;

mod activations;
mod attention;
mod layers;
mod norms;
mod numbers;
mod pooling;
mod reductions;
mod resampling;
mod shape;
#[cfg(test)]
mod tests;

use super::Eval;
use super::call::CallCx;
use super::value::Value;
use crate::ir::{Activation, ReduceOp};
use activations::activation;
use numbers::Extremum;
use pooling::Pooling;

/// A built-in layer or function.
pub(super) struct Builtin {
    /// The name it is called by in `.nn` files.
    pub(super) name: &'static str,
    /// Parameter names, in positional order; arguments bind to them positionally or by keyword.
    pub(super) params: &'static [&'static str],
    /// Lowercase spellings of other frameworks (`dense`, `maxpool2d`) for "did you mean" hints.
    pub(super) aliases: &'static [&'static str],
    /// Lowers a call whose arguments are bound: emits its nodes, or computes its value.
    pub(super) lower: fn(&mut CallCx<'_, '_>) -> Eval<Value>,
}

/// The parameters of a built-in that takes one tensor and nothing else.
const X: &[&str] = &["x"];

const CONV_PARAMS: &[&str] = &[
    "x",
    "out_channels",
    "kernel",
    "stride",
    "padding",
    "dilation",
    "groups",
    "bias",
    "in_channels",
    "quantize",
];

const MAX_POOL_PARAMS: &[&str] = &["x", "kernel", "stride", "padding", "dilation", "ceil_mode"];

const AVG_POOL_PARAMS: &[&str] = &[
    "x",
    "kernel",
    "stride",
    "padding",
    "ceil_mode",
    "count_include_pad",
];

const ATTENTION_PARAMS: &[&str] = &[
    "q",
    "k",
    "v",
    "heads",
    "kv_heads",
    "causal",
    "scale",
    "mask",
    "window",
    "dilation",
    "global_tokens",
    "strided",
    "block_size",
    "block_mask",
    "kv_cache",
];

/// Every built-in, by family.
const BUILTINS: &[Builtin] = &[
    // Layers with weights, and the plain products.
    Builtin {
        name: "linear",
        params: &[
            "x",
            "out_features",
            "bias",
            "in_features",
            "tied",
            "quantize",
        ],
        aliases: &["dense", "fc", "linear"],
        lower: layers::linear,
    },
    Builtin {
        name: "conv1d",
        params: CONV_PARAMS,
        aliases: &["conv1d"],
        lower: |cx| layers::conv(cx, 1),
    },
    Builtin {
        name: "conv2d",
        params: CONV_PARAMS,
        aliases: &["conv", "conv2d"],
        lower: |cx| layers::conv(cx, 2),
    },
    Builtin {
        name: "conv_transpose2d",
        params: &[
            "x",
            "out_channels",
            "kernel",
            "stride",
            "padding",
            "output_padding",
            "dilation",
            "groups",
            "bias",
        ],
        aliases: &["convtranspose2d", "conv_transpose", "deconv", "deconv2d"],
        lower: resampling::conv_transpose2d,
    },
    Builtin {
        name: "embedding",
        params: &["ids", "num_embeddings", "embedding_dim", "tied", "quantize"],
        aliases: &[],
        lower: layers::embedding,
    },
    Builtin {
        name: "position_embedding",
        params: &["x", "max_positions", "dim"],
        aliases: &[],
        lower: layers::position_embedding,
    },
    Builtin {
        name: "parameter",
        params: &["shape"],
        aliases: &[],
        lower: layers::parameter,
    },
    Builtin {
        name: "matmul",
        params: &["a", "b"],
        aliases: &[],
        lower: layers::matmul,
    },
    Builtin {
        name: "dropout",
        params: &["x", "p"],
        aliases: &[],
        lower: layers::dropout,
    },
    // Pooling.
    Builtin {
        name: "max_pool1d",
        params: MAX_POOL_PARAMS,
        aliases: &[],
        lower: |cx| pooling::pool(cx, 1, Pooling::Max),
    },
    Builtin {
        name: "max_pool2d",
        params: MAX_POOL_PARAMS,
        aliases: &["maxpool2d", "maxpool", "max_pool"],
        lower: |cx| pooling::pool(cx, 2, Pooling::Max),
    },
    Builtin {
        name: "avg_pool1d",
        params: AVG_POOL_PARAMS,
        aliases: &[],
        lower: |cx| pooling::pool(cx, 1, Pooling::Average),
    },
    Builtin {
        name: "avg_pool2d",
        params: AVG_POOL_PARAMS,
        aliases: &["avgpool2d", "avgpool", "avg_pool"],
        lower: |cx| pooling::pool(cx, 2, Pooling::Average),
    },
    Builtin {
        name: "global_avg_pool",
        params: X,
        aliases: &[
            "adaptiveavgpool2d",
            "adaptive_avg_pool2d",
            "globalaveragepool",
            "global_average_pool",
        ],
        lower: |cx| pooling::global_pool(cx, Pooling::Average),
    },
    Builtin {
        name: "global_max_pool",
        params: X,
        aliases: &[],
        lower: |cx| pooling::global_pool(cx, Pooling::Max),
    },
    Builtin {
        name: "mean_pool",
        params: &["x", "mask"],
        aliases: &["mean_pooling"],
        lower: pooling::mean_pool,
    },
    // Resampling and padding.
    Builtin {
        name: "upsample",
        params: &["x", "scale_factor", "size", "mode", "align_corners"],
        aliases: &["interpolate", "upsampling2d"],
        lower: resampling::upsample,
    },
    Builtin {
        name: "resize",
        params: &["x", "size", "scale", "mode", "coordinates", "nearest"],
        aliases: &[],
        lower: resampling::resize,
    },
    Builtin {
        name: "pad",
        params: &["x", "before", "after", "mode", "value"],
        aliases: &["zeropad2d", "reflectionpad2d", "replicationpad2d"],
        lower: resampling::pad,
    },
    // Normalizations.
    Builtin {
        name: "batch_norm",
        params: &["x", "eps", "num_features"],
        aliases: &["batchnorm2d", "batchnorm1d", "batchnorm", "bn"],
        lower: norms::batch_norm,
    },
    Builtin {
        name: "layer_norm",
        params: &["x", "eps", "affine"],
        aliases: &["layernorm"],
        lower: norms::layer_norm,
    },
    Builtin {
        name: "rms_norm",
        params: &["x", "eps", "affine"],
        aliases: &["rmsnorm"],
        lower: norms::rms_norm,
    },
    Builtin {
        name: "l2_normalize",
        params: &["x", "eps"],
        aliases: &["normalize", "l2_norm"],
        lower: norms::l2_normalize,
    },
    // Attention and positions.
    Builtin {
        name: "attention",
        params: ATTENTION_PARAMS,
        aliases: &[
            "multiheadattention",
            "multi_head_attention",
            "scaled_dot_product_attention",
            "sdpa",
            "mha",
        ],
        lower: attention::attention,
    },
    Builtin {
        name: "rope",
        params: &["x", "heads", "theta", "interleaved"],
        aliases: &["rotary", "rotary_embedding"],
        lower: attention::rope,
    },
    // Activations.
    Builtin {
        name: "relu",
        params: X,
        aliases: &["relu"],
        lower: |cx| activation(cx, Activation::Relu),
    },
    Builtin {
        name: "relu6",
        params: X,
        aliases: &[],
        lower: |cx| activation(cx, Activation::Relu6),
    },
    Builtin {
        name: "leaky_relu",
        params: &["x", "negative_slope"],
        aliases: &["leakyrelu"],
        lower: activations::leaky_relu,
    },
    Builtin {
        name: "sigmoid",
        params: X,
        aliases: &[],
        lower: |cx| activation(cx, Activation::Sigmoid),
    },
    Builtin {
        name: "tanh",
        params: X,
        aliases: &[],
        lower: |cx| activation(cx, Activation::Tanh),
    },
    Builtin {
        name: "silu",
        params: X,
        aliases: &[],
        lower: |cx| activation(cx, Activation::Silu),
    },
    Builtin {
        name: "swish",
        params: X,
        aliases: &[],
        lower: |cx| activation(cx, Activation::Silu),
    },
    Builtin {
        name: "hard_swish",
        params: X,
        aliases: &["hardswish"],
        lower: |cx| activation(cx, Activation::HardSwish),
    },
    Builtin {
        name: "hard_sigmoid",
        params: X,
        aliases: &["hardsigmoid"],
        lower: |cx| activation(cx, Activation::HardSigmoid),
    },
    Builtin {
        name: "softplus",
        params: X,
        aliases: &[],
        lower: |cx| activation(cx, Activation::Softplus),
    },
    Builtin {
        name: "gelu",
        params: &["x", "approximate"],
        aliases: &["gelu"],
        lower: activations::gelu,
    },
    Builtin {
        name: "softmax",
        params: &["x", "dim"],
        aliases: &[],
        lower: activations::softmax,
    },
    Builtin {
        name: "log_softmax",
        params: &["x", "dim"],
        aliases: &["logsoftmax"],
        lower: activations::log_softmax,
    },
    // Unary math, elementwise (`sqrt` is below, with the functions on numbers).
    Builtin {
        name: "exp",
        params: X,
        aliases: &[],
        lower: |cx| activation(cx, Activation::Exp),
    },
    Builtin {
        name: "erf",
        params: X,
        aliases: &[],
        lower: |cx| activation(cx, Activation::Erf),
    },
    Builtin {
        name: "abs",
        params: X,
        aliases: &[],
        lower: |cx| activation(cx, Activation::Abs),
    },
    Builtin {
        name: "pow",
        params: &["x", "exponent"],
        aliases: &[],
        lower: activations::pow,
    },
    // Reductions over axes.
    Builtin {
        name: "reduce_sum",
        params: &["x", "axes", "keepdims"],
        aliases: &["sum"],
        lower: |cx| reductions::reduce(cx, ReduceOp::Sum),
    },
    Builtin {
        name: "reduce_mean",
        params: &["x", "axes", "keepdims"],
        aliases: &["mean"],
        lower: |cx| reductions::reduce(cx, ReduceOp::Mean),
    },
    Builtin {
        name: "reduce_max",
        params: &["x", "axes", "keepdims"],
        aliases: &["amax"],
        lower: |cx| reductions::reduce(cx, ReduceOp::Max),
    },
    Builtin {
        name: "reduce_min",
        params: &["x", "axes", "keepdims"],
        aliases: &["amin"],
        lower: |cx| reductions::reduce(cx, ReduceOp::Min),
    },
    Builtin {
        name: "reduce_prod",
        params: &["x", "axes", "keepdims"],
        aliases: &[],
        lower: |cx| reductions::reduce(cx, ReduceOp::Prod),
    },
    Builtin {
        name: "reduce_l1",
        params: &["x", "axes", "keepdims"],
        aliases: &[],
        lower: |cx| reductions::reduce(cx, ReduceOp::L1),
    },
    Builtin {
        name: "reduce_l2",
        params: &["x", "axes", "keepdims"],
        aliases: &[],
        lower: |cx| reductions::reduce(cx, ReduceOp::L2),
    },
    Builtin {
        name: "reduce_sum_square",
        params: &["x", "axes", "keepdims"],
        aliases: &[],
        lower: |cx| reductions::reduce(cx, ReduceOp::SumSquare),
    },
    Builtin {
        name: "reduce_log_sum_exp",
        params: &["x", "axes", "keepdims"],
        aliases: &["logsumexp"],
        lower: |cx| reductions::reduce(cx, ReduceOp::LogSumExp),
    },
    // Shape operations.
    Builtin {
        name: "reshape",
        params: &["x", "shape"],
        aliases: &["view"],
        lower: shape::reshape,
    },
    Builtin {
        name: "flatten",
        params: &["x", "start_dim", "end_dim"],
        aliases: &[],
        lower: shape::flatten,
    },
    Builtin {
        name: "transpose",
        params: &["x", "dim0", "dim1"],
        aliases: &[],
        lower: shape::transpose,
    },
    Builtin {
        name: "permute",
        params: &["x", "dims"],
        aliases: &[],
        lower: shape::permute,
    },
    Builtin {
        name: "concat",
        params: &["tensors", "dim"],
        aliases: &["cat", "concatenate"],
        lower: shape::concat,
    },
    Builtin {
        name: "slice",
        params: &["x", "dim", "start", "end"],
        aliases: &[],
        lower: shape::slice,
    },
    Builtin {
        name: "select",
        params: &["x", "dim", "index"],
        aliases: &[],
        lower: shape::select,
    },
    // Functions on compile-time numbers.
    Builtin {
        name: "dim",
        params: &["x", "axis"],
        aliases: &[],
        lower: numbers::dim,
    },
    Builtin {
        name: "min",
        params: &["a", "b"],
        aliases: &[],
        lower: |cx| numbers::extremum(cx, Extremum::Min),
    },
    Builtin {
        name: "max",
        params: &["a", "b"],
        aliases: &[],
        lower: |cx| numbers::extremum(cx, Extremum::Max),
    },
    Builtin {
        name: "sqrt",
        params: X,
        aliases: &[],
        lower: numbers::sqrt,
    },
];

/// The names of all built-in layers and functions, in the order of the table.
pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    BUILTINS.iter().map(|builtin| builtin.name)
}

/// The built-in called `name`, if there is one.
pub(super) fn find(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|builtin| builtin.name == name)
}

/// The built-in that a PyTorch or Keras spelling of `name` means, for "did you mean" hints.
pub(super) fn pytorch_alias(name: &str) -> Option<&'static str> {
    let lowercase = name.to_ascii_lowercase();
    BUILTINS
        .iter()
        .find(|builtin| builtin.aliases.contains(&lowercase.as_str()))
        .map(|builtin| builtin.name)
}
