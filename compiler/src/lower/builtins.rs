//! The built-in layers and functions of the language, and how each becomes IR.
//!
//! Each built-in has a signature (its parameter names, in positional order) and a lowering
//! function that reads its arguments through a [`CallCx`], creates its weights and emits nodes.
//! Argument errors point at the argument; shape errors from [`infer`] are mapped to the argument
//! they are about.

use super::value::Value;
use super::{Builder, Eval, Lowerer, Naming, Scope, Stop, did_you_mean};
use crate::diagnostics::{Diagnostic, Span};
use crate::ir::infer::{Culprit, ShapeError, check_groups, infer};
use crate::ir::{
    self, Activation, AttentionAttrs, BlockMask, ConvAttrs, DType, Epilogue, Op, ParamInit,
    PoolAttrs, SparsePattern, TensorType,
};
use crate::syntax::ast;

/// Parameter names of each built-in, in positional order.
const SIGNATURES: &[(&str, &[&str])] = &[
    (
        "linear",
        &["x", "out_features", "bias", "in_features", "tied"],
    ),
    (
        "conv1d",
        &[
            "x",
            "out_channels",
            "kernel",
            "stride",
            "padding",
            "dilation",
            "groups",
            "bias",
            "in_channels",
        ],
    ),
    (
        "conv2d",
        &[
            "x",
            "out_channels",
            "kernel",
            "stride",
            "padding",
            "dilation",
            "groups",
            "bias",
            "in_channels",
        ],
    ),
    (
        "max_pool1d",
        &["x", "kernel", "stride", "padding", "dilation", "ceil_mode"],
    ),
    (
        "max_pool2d",
        &["x", "kernel", "stride", "padding", "dilation", "ceil_mode"],
    ),
    (
        "avg_pool1d",
        &[
            "x",
            "kernel",
            "stride",
            "padding",
            "ceil_mode",
            "count_include_pad",
        ],
    ),
    (
        "avg_pool2d",
        &[
            "x",
            "kernel",
            "stride",
            "padding",
            "ceil_mode",
            "count_include_pad",
        ],
    ),
    ("global_avg_pool", &["x"]),
    ("global_max_pool", &["x"]),
    ("batch_norm", &["x", "eps", "num_features"]),
    ("layer_norm", &["x", "eps", "affine"]),
    ("rms_norm", &["x", "eps"]),
    (
        "embedding",
        &["ids", "num_embeddings", "embedding_dim", "tied"],
    ),
    ("position_embedding", &["x", "max_positions", "dim"]),
    ("rope", &["x", "heads", "theta", "interleaved"]),
    (
        "attention",
        &[
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
        ],
    ),
    ("relu", &["x"]),
    ("relu6", &["x"]),
    ("leaky_relu", &["x", "negative_slope"]),
    ("sigmoid", &["x"]),
    ("tanh", &["x"]),
    ("silu", &["x"]),
    ("swish", &["x"]),
    ("hard_swish", &["x"]),
    ("hard_sigmoid", &["x"]),
    ("gelu", &["x", "approximate"]),
    ("softmax", &["x", "dim"]),
    ("matmul", &["a", "b"]),
    ("reshape", &["x", "shape"]),
    ("flatten", &["x", "start_dim", "end_dim"]),
    ("transpose", &["x", "dim0", "dim1"]),
    ("permute", &["x", "dims"]),
    ("concat", &["tensors", "dim"]),
    ("slice", &["x", "dim", "start", "end"]),
    ("select", &["x", "dim", "index"]),
    ("dropout", &["x", "p"]),
    ("dim", &["x", "axis"]),
    ("min", &["a", "b"]),
    ("max", &["a", "b"]),
    ("sqrt", &["x"]),
];

/// Whether `name` is a built-in layer or function.
pub(super) fn is_builtin(name: &str) -> bool {
    SIGNATURES.iter().any(|(builtin, _)| *builtin == name)
}

/// The names of all built-ins.
pub(super) fn names() -> impl Iterator<Item = &'static str> {
    SIGNATURES.iter().map(|(name, _)| *name)
}

/// The `.nn` name of a PyTorch or Keras spelling, for "did you mean" hints.
pub(super) fn pytorch_alias(name: &str) -> Option<&'static str> {
    Some(match name.to_ascii_lowercase().as_str() {
        "dense" | "fc" | "linear" => "linear",
        "conv" | "conv2d" => "conv2d",
        "conv1d" => "conv1d",
        "maxpool2d" | "maxpool" | "max_pool" => "max_pool2d",
        "avgpool2d" | "avgpool" | "avg_pool" => "avg_pool2d",
        "adaptiveavgpool2d"
        | "adaptive_avg_pool2d"
        | "globalaveragepool"
        | "global_average_pool" => "global_avg_pool",
        "batchnorm2d" | "batchnorm1d" | "batchnorm" | "bn" => "batch_norm",
        "layernorm" => "layer_norm",
        "rmsnorm" => "rms_norm",
        "relu" => "relu",
        "gelu" => "gelu",
        "hardswish" => "hard_swish",
        "hardsigmoid" => "hard_sigmoid",
        "leakyrelu" => "leaky_relu",
        "cat" | "concatenate" => "concat",
        "view" => "reshape",
        "multiheadattention"
        | "multi_head_attention"
        | "scaled_dot_product_attention"
        | "sdpa"
        | "mha" => "attention",
        "rotary" | "rotary_embedding" => "rope",
        _ => return None,
    })
}

/// Lowers a call of a built-in.
pub(super) fn call<'a>(
    lowerer: &mut Lowerer<'a>,
    callee: &'a ast::Ident,
    args: &'a [ast::Arg],
    span: Span,
    scope: &mut Scope,
    builder: &mut Builder,
    naming: Option<&Naming>,
) -> Eval<Value> {
    let (name, params) = *SIGNATURES
        .iter()
        .find(|(name, _)| *name == callee.name)
        .expect("is_builtin checked");
    let mut slots: Vec<Option<(Value, Span)>> = vec![None; params.len()];
    let mut failed = false;
    let mut positional = 0;
    for arg in args {
        let value = match lowerer.eval(&arg.value, scope, builder, naming) {
            Ok(value) => value,
            Err(Stop) => {
                failed = true;
                Value::Poison
            }
        };
        let slot = match &arg.name {
            None => {
                positional += 1;
                if positional > params.len() {
                    lowerer.errors.push(
                        Diagnostic::error(
                            arg.value.span,
                            format!("`{name}` takes at most {} arguments", params.len()),
                        )
                        .with_hint(format!("its parameters are {}", list_names(params))),
                    );
                    failed = true;
                    continue;
                }
                positional - 1
            }
            Some(keyword) => match params.iter().position(|param| *param == keyword.name) {
                Some(slot) => slot,
                None => {
                    let mut diagnostic = Diagnostic::error(
                        keyword.span,
                        format!("`{name}` has no parameter `{}`", keyword.name),
                    )
                    .with_label("unknown keyword");
                    diagnostic = diagnostic.with_hint(
                        match did_you_mean(&keyword.name, params.iter().copied()) {
                            Some(similar) => format!("did you mean `{similar}`?"),
                            None => format!("its parameters are {}", list_names(params)),
                        },
                    );
                    lowerer.errors.push(diagnostic);
                    failed = true;
                    continue;
                }
            },
        };
        if slots[slot].is_some() {
            lowerer.errors.push(Diagnostic::error(
                arg.value.span,
                format!("argument `{}` is given twice", params[slot]),
            ));
            failed = true;
            continue;
        }
        slots[slot] = Some((value, arg.value.span));
    }
    if failed {
        return Err(Stop);
    }
    let mut cx = CallCx {
        lowerer,
        builder,
        name,
        span,
        callee_span: callee.span,
        params,
        slots,
        naming: naming.cloned(),
        prefix: scope.prefix.clone(),
    };
    lower_builtin(&mut cx)
}

/// Lowers `a op b` on two tensors.
pub(super) fn binary(
    lowerer: &mut Lowerer<'_>,
    builder: &mut Builder,
    op: ir::BinaryOp,
    a: ir::Value,
    b: ir::Value,
    span: Span,
    node_name: &str,
) -> Eval<Value> {
    let mut cx = CallCx::for_operator(lowerer, builder, span, node_name, op.name());
    cx.node(Op::Binary(op), &[(a, None), (b, None)])
        .map(Value::Tensor)
}

/// Lowers `x * scale + shift` for a tensor `x` and numbers.
pub(super) fn affine(
    lowerer: &mut Lowerer<'_>,
    builder: &mut Builder,
    x: ir::Value,
    scale: f64,
    shift: f64,
    span: Span,
    node_name: &str,
) -> Eval<Value> {
    let mut cx = CallCx::for_operator(lowerer, builder, span, node_name, "affine");
    cx.node(
        Op::Affine {
            scale: scale as f32,
            shift: shift as f32,
        },
        &[(x, None)],
    )
    .map(Value::Tensor)
}

/// The arguments of one call, and the state needed to lower it.
struct CallCx<'x, 'a> {
    lowerer: &'x mut Lowerer<'a>,
    builder: &'x mut Builder,
    name: &'static str,
    span: Span,
    callee_span: Span,
    params: &'static [&'static str],
    slots: Vec<Option<(Value, Span)>>,
    naming: Option<Naming>,
    prefix: String,
}

fn lower_builtin(cx: &mut CallCx<'_, '_>) -> Eval<Value> {
    let tensor = match cx.name {
        "linear" => linear(cx)?,
        "conv1d" => conv(cx, 1)?,
        "conv2d" => conv(cx, 2)?,
        "max_pool1d" => pool(cx, 1, true)?,
        "max_pool2d" => pool(cx, 2, true)?,
        "avg_pool1d" => pool(cx, 1, false)?,
        "avg_pool2d" => pool(cx, 2, false)?,
        "global_avg_pool" => {
            let x = cx.tensor("x")?;
            cx.node(Op::GlobalAvgPool, &[(x, Some("x"))])?
        }
        "global_max_pool" => {
            let x = cx.tensor("x")?;
            cx.node(Op::GlobalMaxPool, &[(x, Some("x"))])?
        }
        "batch_norm" => batch_norm(cx)?,
        "layer_norm" => {
            let x = cx.tensor("x")?;
            let eps = cx.float("eps", Some(1e-5))? as f32;
            let affine = cx.bool("affine", Some(true))?;
            let features = cx.last_dim(x, "x")?;
            let mut inputs = vec![(x, Some("x"))];
            if affine {
                inputs.push((cx.param("weight", vec![features], ParamInit::Ones)?, None));
                inputs.push((cx.param("bias", vec![features], ParamInit::Zeros)?, None));
            }
            cx.node(Op::LayerNorm { eps, affine }, &inputs)?
        }
        "rms_norm" => {
            let x = cx.tensor("x")?;
            let eps = cx.float("eps", Some(1e-6))? as f32;
            let features = cx.last_dim(x, "x")?;
            let weight = cx.param("weight", vec![features], ParamInit::Ones)?;
            cx.node(Op::RmsNorm { eps }, &[(x, Some("x")), (weight, None)])?
        }
        "embedding" => {
            let ids = cx.tensor("ids")?;
            let weight = match cx.optional_string("tied")? {
                Some(layer) => {
                    let weight = tied_weight(cx, &layer)?;
                    let shape = cx.shape(weight);
                    for (axis, name) in ["num_embeddings", "embedding_dim"].into_iter().enumerate()
                    {
                        if let Some(size) = cx.optional_positive(name)?
                            && shape.get(axis) != Some(&size)
                        {
                            return Err(cx.error(
                                name,
                                format!(
                                    "the tied weight has shape {}, so {name} would be {}, not {size}",
                                    ir::types::format_shape(&shape),
                                    shape.get(axis).copied().unwrap_or(1),
                                ),
                                Some("a tied embedding takes its sizes from the table: leave them out"),
                            ));
                        }
                    }
                    if shape.len() != 2 {
                        return Err(cx.error(
                            "tied",
                            format!(
                                "an embedding table is a matrix, but the tied weight has shape {}",
                                ir::types::format_shape(&shape)
                            ),
                            None,
                        ));
                    }
                    weight
                }
                None => {
                    let count = cx.positive("num_embeddings", None)?;
                    let dim = cx.positive("embedding_dim", None)?;
                    cx.param("weight", vec![count, dim], ParamInit::Normal)?
                }
            };
            let tied = cx.present("tied").then_some("tied");
            cx.node(Op::Embedding, &[(ids, Some("ids")), (weight, tied)])?
        }
        "position_embedding" => {
            let x = cx.tensor("x")?;
            let count = cx.positive("max_positions", None)?;
            let dim = cx.positive("dim", None)?;
            let weight = cx.param("weight", vec![count, dim], ParamInit::Normal)?;
            cx.node(Op::PositionEmbedding, &[(x, Some("x")), (weight, None)])?
        }
        "rope" => {
            let x = cx.tensor("x")?;
            let heads = cx.positive("heads", None)?;
            let theta = cx.float("theta", Some(10000.0))?;
            if theta <= 1.0 {
                return Err(cx.error(
                    "theta",
                    format!("theta must be greater than 1, but it is {theta}"),
                    None,
                ));
            }
            let interleaved = cx.bool("interleaved", Some(false))?;
            cx.node(
                Op::Rope {
                    heads,
                    theta: theta as f32,
                    interleaved,
                },
                &[(x, Some("x"))],
            )?
        }
        "attention" => attention(cx)?,
        "relu" => activation(cx, Activation::Relu)?,
        "relu6" => activation(cx, Activation::Relu6)?,
        "leaky_relu" => {
            let negative_slope = cx.float("negative_slope", Some(0.01))? as f32;
            activation(cx, Activation::LeakyRelu { negative_slope })?
        }
        "sigmoid" => activation(cx, Activation::Sigmoid)?,
        "tanh" => activation(cx, Activation::Tanh)?,
        "silu" | "swish" => activation(cx, Activation::Silu)?,
        "hard_swish" => activation(cx, Activation::HardSwish)?,
        "hard_sigmoid" => activation(cx, Activation::HardSigmoid)?,
        "gelu" => {
            let approximate = cx.string("approximate", Some("none"))?;
            let tanh_approximation = match approximate.as_str() {
                "none" => false,
                "tanh" => true,
                other => {
                    return Err(cx.error(
                        "approximate",
                        format!("unknown GELU approximation \"{other}\""),
                        Some("use \"none\" (exact, with erf) or \"tanh\""),
                    ));
                }
            };
            activation(cx, Activation::Gelu { tanh_approximation })?
        }
        "softmax" => {
            let x = cx.tensor("x")?;
            let rank = cx.rank(x);
            let axis = cx.axis("dim", rank, Some(-1))?;
            cx.node(Op::Softmax { axis }, &[(x, Some("x"))])?
        }
        "matmul" => {
            let a = cx.tensor("a")?;
            let b = cx.tensor("b")?;
            cx.node(Op::MatMul, &[(a, Some("a")), (b, Some("b"))])?
        }
        "reshape" => reshape(cx)?,
        "flatten" => {
            let x = cx.tensor("x")?;
            let shape = cx.shape(x);
            let start = cx.axis("start_dim", shape.len(), Some(1))?;
            let end = cx.axis("end_dim", shape.len(), Some(-1))?;
            if start > end {
                return Err(cx.error(
                    "end_dim",
                    format!("end_dim ({end}) comes before start_dim ({start})"),
                    None,
                ));
            }
            let mut new_shape = shape[..start].to_vec();
            new_shape.push(shape[start..=end].iter().product());
            new_shape.extend(&shape[end + 1..]);
            cx.node(Op::Reshape { shape: new_shape }, &[(x, Some("x"))])?
        }
        "transpose" => {
            let x = cx.tensor("x")?;
            let rank = cx.rank(x);
            let dim0 = cx.axis("dim0", rank, None)?;
            let dim1 = cx.axis("dim1", rank, None)?;
            let mut perm: Vec<usize> = (0..rank).collect();
            perm.swap(dim0, dim1);
            cx.node(Op::Transpose { perm }, &[(x, Some("x"))])?
        }
        "permute" => {
            let x = cx.tensor("x")?;
            let rank = cx.rank(x);
            let dims = cx.int_list("dims", None)?;
            let mut perm = Vec::new();
            for dim in dims {
                perm.push(normalize_axis(dim, rank).ok_or_else(|| {
                    cx.error(
                        "dims",
                        format!("dim {dim} is out of range for a tensor of rank {rank}"),
                        None,
                    )
                })?);
            }
            cx.node(Op::Transpose { perm }, &[(x, Some("x"))])?
        }
        "concat" => {
            let tensors = cx.tensor_list("tensors")?;
            let rank = cx.rank(tensors[0]);
            let axis = cx.axis("dim", rank, Some(0))?;
            let inputs: Vec<(ir::Value, Option<&'static str>)> = tensors
                .iter()
                .map(|&tensor| (tensor, Some("tensors")))
                .collect();
            cx.node(Op::Concat { axis }, &inputs)?
        }
        "slice" => {
            let x = cx.tensor("x")?;
            let shape = cx.shape(x);
            let axis = cx.axis("dim", shape.len(), None)?;
            let size = shape[axis] as i64;
            let start = cx.int("start", Some(0))?;
            let end = cx.int("end", Some(size))?;
            let clamp =
                |index: i64| (if index < 0 { index + size } else { index }).clamp(0, size) as usize;
            cx.node(
                Op::Slice {
                    axis,
                    start: clamp(start),
                    end: clamp(end),
                },
                &[(x, Some("x"))],
            )?
        }
        "select" => {
            let x = cx.tensor("x")?;
            let shape = cx.shape(x);
            let axis = cx.axis("dim", shape.len(), None)?;
            let index = cx.int("index", None)?;
            let size = shape[axis] as i64;
            let normalized = if index < 0 { index + size } else { index };
            if !(0..size).contains(&normalized) {
                return Err(cx.error(
                    "index",
                    format!("index {index} is out of range for dim {axis} of size {size}"),
                    None,
                ));
            }
            cx.node(
                Op::Select {
                    axis,
                    index: normalized as usize,
                },
                &[(x, Some("x"))],
            )?
        }
        "dropout" => {
            // Inference only: dropout is the identity. It exists so PyTorch layer indices line up.
            let x = cx.tensor("x")?;
            let p = cx.float("p", Some(0.5))?;
            if !(0.0..1.0).contains(&p) {
                return Err(cx.error(
                    "p",
                    format!("a dropout probability must be in [0, 1), but it is {p}"),
                    None,
                ));
            }
            x
        }
        "dim" => {
            let x = cx.tensor("x")?;
            let shape = cx.shape(x);
            let axis = cx.axis("axis", shape.len(), None)?;
            return Ok(Value::Int(shape[axis] as i64));
        }
        "min" | "max" => {
            let a = cx.required("a")?;
            let b = cx.required("b")?;
            let pick_min = cx.name == "min";
            return match (&a, &b) {
                (Value::Int(x), Value::Int(y)) => {
                    Ok(Value::Int(if pick_min { *x.min(y) } else { *x.max(y) }))
                }
                _ => match (a.as_float(), b.as_float()) {
                    (Some(x), Some(y)) => {
                        Ok(Value::Float(if pick_min { x.min(y) } else { x.max(y) }))
                    }
                    _ => Err(cx.error(
                        "a",
                        format!(
                            "`{}` compares numbers, not {} and {}",
                            cx.name,
                            a.describe(),
                            b.describe()
                        ),
                        None,
                    )),
                },
            };
        }
        "sqrt" => {
            let x = cx.float("x", None)?;
            if x < 0.0 {
                return Err(cx.error("x", format!("cannot take the square root of {x}"), None));
            }
            return Ok(Value::Float(x.sqrt()));
        }
        other => unreachable!("lower_builtin: `{other}` has a signature but no lowering"),
    };
    Ok(Value::Tensor(tensor))
}

fn activation(cx: &mut CallCx<'_, '_>, activation: Activation) -> Eval<ir::Value> {
    let x = cx.tensor("x")?;
    cx.node(Op::Activation(activation), &[(x, Some("x"))])
}

/// The weight of the earlier layer `layer` that a `tied = "layer"` argument names.
fn tied_weight(cx: &mut CallCx<'_, '_>, layer: &str) -> Eval<ir::Value> {
    let weight_name = format!("{layer}.weight");
    let Some(&weight) = cx.builder.param_values.get(&weight_name) else {
        let mut diagnostic = Diagnostic::error(
            cx.span_of("tied"),
            format!("no layer `{layer}` with a weight was defined before this one"),
        );
        let similar = did_you_mean(
            &weight_name,
            cx.builder.param_values.keys().map(String::as_str),
        )
        .map(|name| name.trim_end_matches(".weight").to_string());
        if let Some(similar) = similar {
            diagnostic = diagnostic.with_hint(format!("did you mean \"{similar}\"?"));
        }
        cx.lowerer.errors.push(diagnostic);
        return Err(Stop);
    };
    Ok(weight)
}

fn linear(cx: &mut CallCx<'_, '_>) -> Eval<ir::Value> {
    let x = cx.tensor("x")?;
    let in_features = cx.last_dim(x, "x")?;
    if let Some(declared) = cx.optional_positive("in_features")?
        && declared != in_features
    {
        let diagnostic = Diagnostic::error(
            cx.span_of("x"),
            format!("linear expects last dimension {declared} but got {in_features}"),
        )
        .with_label(format!(
            "this has shape {}",
            ir::types::format_shape(&cx.shape(x))
        ))
        .with_secondary(cx.span_of("in_features"), "expected size declared here")
        .with_hint("the previous layer's output size must equal `in_features`");
        cx.lowerer.errors.push(diagnostic);
        return Err(Stop);
    }
    let bias = cx.bool("bias", Some(true))?;
    let weight = match cx.optional_string("tied")? {
        Some(layer) => {
            let weight = tied_weight(cx, &layer)?;
            let weight_shape = cx.shape(weight);
            if let Some(out_features) = cx.optional_positive("out_features")?
                && weight_shape.first() != Some(&out_features)
            {
                return Err(cx.error(
                    "out_features",
                    format!(
                        "the tied weight has {} rows, not {out_features}",
                        weight_shape[0]
                    ),
                    None,
                ));
            }
            weight
        }
        None => {
            let out_features = cx.positive("out_features", None)?;
            cx.param(
                "weight",
                vec![out_features, in_features],
                ParamInit::FanIn {
                    fan_in: in_features,
                },
            )?
        }
    };
    let mut inputs = vec![
        (x, Some("x")),
        (weight, cx.present("tied").then_some("tied")),
    ];
    if bias {
        let out_features = cx.shape(weight)[0];
        inputs.push((
            cx.param(
                "bias",
                vec![out_features],
                ParamInit::FanIn {
                    fan_in: in_features,
                },
            )?,
            None,
        ));
    }
    cx.node(
        Op::Linear {
            bias,
            epilogue: Epilogue::default(),
        },
        &inputs,
    )
}

fn conv(cx: &mut CallCx<'_, '_>, spatial: usize) -> Eval<ir::Value> {
    let x = cx.tensor("x")?;
    let shape = cx.shape(x);
    if shape.len() != spatial + 2 {
        let layout = if spatial == 1 {
            "[batch, channels, length]"
        } else {
            "[batch, channels, height, width]"
        };
        let message = format!(
            "{} expects a tensor of rank {} {layout}, but got shape {}",
            cx.name,
            spatial + 2,
            ir::types::format_shape(&shape)
        );
        return Err(cx.error(
            "x",
            message,
            Some(if spatial == 2 {
                "add a batch dimension, or use conv1d"
            } else {
                "reshape the input first"
            }),
        ));
    }
    let in_channels = shape[1];
    if let Some(declared) = cx.optional_positive("in_channels")?
        && declared != in_channels
    {
        let diagnostic = Diagnostic::error(
            cx.span_of("x"),
            format!(
                "{} expects {declared} input channels but got {in_channels}",
                cx.name
            ),
        )
        .with_label(format!(
            "this has shape {}",
            ir::types::format_shape(&shape)
        ))
        .with_secondary(cx.span_of("in_channels"), "expected channels declared here");
        cx.lowerer.errors.push(diagnostic);
        return Err(Stop);
    }
    let out_channels = cx.positive("out_channels", None)?;
    let kernel = cx.spatial("kernel", spatial, None)?;
    let stride = cx.spatial("stride", spatial, Some(1))?;
    let dilation = cx.spatial("dilation", spatial, Some(1))?;
    let groups = cx.positive("groups", Some(1))?;
    let padding = match cx.slot("padding") {
        Some((Value::Str(mode), span)) => match mode.as_str() {
            "valid" => vec![0; spatial],
            "same" => {
                if stride.iter().any(|&s| s != 1) {
                    cx.lowerer.errors.push(
                        Diagnostic::error(span, "padding = \"same\" needs stride 1")
                            .with_hint("give the padding as a number"),
                    );
                    return Err(Stop);
                }
                let mut padding = Vec::new();
                for axis in 0..spatial {
                    let total = dilation[axis] * (kernel[axis] - 1);
                    if total % 2 != 0 {
                        cx.lowerer.errors.push(
                            Diagnostic::error(
                                span,
                                "padding = \"same\" would need uneven padding for this kernel",
                            )
                            .with_hint("use an odd kernel size, or pad explicitly"),
                        );
                        return Err(Stop);
                    }
                    padding.push(total / 2);
                }
                padding
            }
            other => {
                cx.lowerer.errors.push(
                    Diagnostic::error(span, format!("unknown padding mode \"{other}\""))
                        .with_hint("use a number, a list, \"same\" or \"valid\""),
                );
                return Err(Stop);
            }
        },
        _ => cx.spatial_allow_zero("padding", spatial, Some(0))?,
    };
    let bias = cx.bool("bias", Some(true))?;
    if let Err(error) = check_groups(groups, in_channels, out_channels) {
        return Err(cx.shape_error(error, &[]));
    }
    let mut weight_shape = vec![out_channels, in_channels / groups];
    weight_shape.extend(&kernel);
    // Saturating: an absurd kernel makes the weight too large, which `param` reports.
    let fan_in = kernel.iter().fold(in_channels / groups, |fan_in, &size| {
        fan_in.saturating_mul(size)
    });
    let weight = cx.param("weight", weight_shape, ParamInit::FanIn { fan_in })?;
    let mut inputs = vec![(x, Some("x")), (weight, None)];
    if bias {
        inputs.push((
            cx.param("bias", vec![out_channels], ParamInit::FanIn { fan_in })?,
            None,
        ));
    }
    cx.node(
        Op::Conv(ConvAttrs {
            epilogue: Epilogue::default(),
            kernel,
            stride,
            padding,
            dilation,
            groups,
            bias,
            channels_last: false,
        }),
        &inputs,
    )
}

fn pool(cx: &mut CallCx<'_, '_>, spatial: usize, max: bool) -> Eval<ir::Value> {
    let x = cx.tensor("x")?;
    let kernel = cx.spatial("kernel", spatial, None)?;
    let stride = match cx.present("stride") {
        true => cx.spatial("stride", spatial, None)?,
        false => kernel.clone(),
    };
    let padding = cx.spatial_allow_zero("padding", spatial, Some(0))?;
    let dilation = if max {
        cx.spatial("dilation", spatial, Some(1))?
    } else {
        vec![1; spatial]
    };
    let ceil_mode = cx.bool("ceil_mode", Some(false))?;
    let count_include_pad = if max {
        false
    } else {
        cx.bool("count_include_pad", Some(true))?
    };
    let attrs = PoolAttrs {
        kernel,
        stride,
        padding,
        dilation,
        ceil_mode,
        count_include_pad,
    };
    let op = if max {
        Op::MaxPool(attrs)
    } else {
        Op::AvgPool(attrs)
    };
    cx.node(op, &[(x, Some("x"))])
}

fn batch_norm(cx: &mut CallCx<'_, '_>) -> Eval<ir::Value> {
    let x = cx.tensor("x")?;
    let shape = cx.shape(x);
    if shape.len() < 2 {
        return Err(cx.error(
            "x",
            format!(
                "batch_norm needs a tensor with a channel axis, but got shape {}",
                ir::types::format_shape(&shape)
            ),
            None,
        ));
    }
    let channels = shape[1];
    if let Some(declared) = cx.optional_positive("num_features")?
        && declared != channels
    {
        return Err(cx.error(
            "num_features",
            format!("batch_norm expects {declared} channels but the input has {channels}"),
            None,
        ));
    }
    let eps = cx.float("eps", Some(1e-5))? as f32;
    let weight = cx.param("weight", vec![channels], ParamInit::Ones)?;
    let bias = cx.param("bias", vec![channels], ParamInit::Zeros)?;
    let mean = cx.buffer("running_mean", vec![channels], ParamInit::Zeros)?;
    let var = cx.buffer("running_var", vec![channels], ParamInit::Ones)?;
    cx.node(
        Op::BatchNorm { eps },
        &[
            (x, Some("x")),
            (weight, None),
            (bias, None),
            (mean, None),
            (var, None),
        ],
    )
}

fn reshape(cx: &mut CallCx<'_, '_>) -> Eval<ir::Value> {
    let x = cx.tensor("x")?;
    let dims = cx.int_list("shape", None)?;
    let count: usize = cx.shape(x).iter().product();
    let mut shape = Vec::new();
    let mut inferred = None;
    for (axis, &dim) in dims.iter().enumerate() {
        match dim {
            -1 if inferred.is_none() => {
                inferred = Some(axis);
                shape.push(1);
            }
            -1 => return Err(cx.error("shape", "only one dimension can be -1", None)),
            dim if dim >= 1 => shape.push(dim as usize),
            dim => {
                return Err(cx.error(
                    "shape",
                    format!("dimension {dim} is not a valid size"),
                    Some("sizes are at least 1; -1 infers one size"),
                ));
            }
        }
    }
    if let Some(axis) = inferred {
        let known = shape
            .iter()
            .try_fold(1usize, |known, &dim| known.checked_mul(dim))
            .unwrap_or(usize::MAX);
        if !count.is_multiple_of(known) {
            return Err(cx.error(
                "shape",
                format!("cannot reshape {} elements into {dims:?}", count),
                None,
            ));
        }
        shape[axis] = count / known;
    }
    cx.node(Op::Reshape { shape }, &[(x, Some("x"))])
}

fn attention(cx: &mut CallCx<'_, '_>) -> Eval<ir::Value> {
    let q = cx.tensor("q")?;
    let k = cx.tensor("k")?;
    let v = cx.tensor("v")?;
    let heads = cx.positive("heads", None)?;
    let kv_heads = cx.positive("kv_heads", Some(heads as i64))?;
    let width = cx.last_dim(q, "q")?;
    if width % heads != 0 {
        return Err(cx.error(
            "heads",
            format!("heads = {heads} does not divide the query size {width}"),
            Some("the query size is heads × head_dim"),
        ));
    }
    let head_dim = width / heads;
    let causal = cx.bool("causal", Some(false))?;
    let scale = match cx.present("scale") {
        true => cx.float("scale", None)? as f32,
        false => 1.0 / (head_dim as f32).sqrt(),
    };
    let mask = cx.optional_tensor("mask")?;
    let queries = cx.shape(q).get(1).copied().unwrap_or(1);
    let keys = cx.shape(k).get(1).copied().unwrap_or(1);
    let positions = queries.max(keys);

    let window = cx.optional_positive("window")?;
    let dilation = cx.positive("dilation", Some(1))?;
    if cx.present("dilation") && window.is_none() {
        return Err(cx.error(
            "dilation",
            "`dilation` needs a `window`",
            Some("a dilated window is `window = w, dilation = d`"),
        ));
    }
    let global_tokens = match cx.slot("global_tokens") {
        None => Vec::new(),
        Some((Value::Int(count), _)) => {
            // A count means the first `count` tokens, as in Longformer's classification setup.
            if count < 1 || count as usize > positions {
                return Err(cx.error(
                    "global_tokens",
                    format!("{count} global tokens do not fit a sequence of {positions}"),
                    None,
                ));
            }
            (0..count as usize).collect()
        }
        Some(_) => {
            let tokens = cx.int_list("global_tokens", None)?;
            let mut result = Vec::new();
            for token in tokens {
                if token < 0 || token as usize >= positions {
                    return Err(cx.error(
                        "global_tokens",
                        format!("global token {token} is outside the sequence of {positions}"),
                        None,
                    ));
                }
                result.push(token as usize);
            }
            result.sort_unstable();
            result.dedup();
            result
        }
    };
    let strided = cx.optional_positive("strided")?;
    let block_size = cx.optional_positive("block_size")?;
    let block_mask = match (cx.present("block_mask"), block_size) {
        (false, None) => None,
        (false, Some(_)) => {
            return Err(cx.error("block_size", "`block_size` needs a `block_mask`", None));
        }
        (true, None) => {
            return Err(cx.error(
                "block_mask",
                "`block_mask` needs a `block_size`",
                Some("add `block_size = 64`, the side of each block"),
            ));
        }
        (true, Some(block_size)) => Some(BlockMask {
            block_size,
            mask: cx.bool_matrix("block_mask")?,
        }),
    };
    let kv_cache = cx.optional_positive("kv_cache")?;
    if let Some(max_context) = kv_cache
        && max_context < keys
    {
        return Err(cx.error(
            "kv_cache",
            format!("the KV cache holds {max_context} positions, fewer than the {keys} keys"),
            None,
        ));
    }
    let pattern = SparsePattern {
        window,
        dilation,
        global_tokens,
        strided,
        block_mask,
    };
    let attrs = AttentionAttrs {
        heads,
        kv_heads,
        head_dim,
        causal,
        scale,
        pattern,
        kv_cache,
        key_padding_mask: mask.is_some(),
    };
    let mut inputs = vec![(q, Some("q")), (k, Some("k")), (v, Some("v"))];
    if let Some(mask) = mask {
        inputs.push((mask, Some("mask")));
    }
    cx.node(Op::Attention(attrs), &inputs)
}

impl<'x, 'a> CallCx<'x, 'a> {
    /// A context for an operator like `+`, which has no arguments to point at.
    fn for_operator(
        lowerer: &'x mut Lowerer<'a>,
        builder: &'x mut Builder,
        span: Span,
        node_name: &str,
        name: &'static str,
    ) -> Self {
        let naming = Some(Naming {
            layer: node_name.to_string(),
            span,
            transparent: false,
        });
        CallCx {
            lowerer,
            builder,
            name,
            span,
            callee_span: span,
            params: &[],
            slots: Vec::new(),
            naming,
            prefix: String::new(),
        }
    }

    fn slot(&self, name: &str) -> Option<(Value, Span)> {
        let index = self.params.iter().position(|param| *param == name)?;
        self.slots[index].clone()
    }

    fn present(&self, name: &str) -> bool {
        self.slot(name).is_some()
    }

    /// The span of argument `name`, or of the call if it was not given.
    fn span_of(&self, name: &str) -> Span {
        self.slot(name).map_or(self.span, |(_, span)| span)
    }

    /// Records an error about argument `name` and returns [`Stop`].
    fn error(&mut self, name: &str, message: impl Into<String>, hint: Option<&str>) -> Stop {
        let mut diagnostic = Diagnostic::error(self.span_of(name), message);
        if let Some(hint) = hint {
            diagnostic = diagnostic.with_hint(hint);
        }
        self.lowerer.errors.push(diagnostic);
        Stop
    }

    fn required(&mut self, name: &str) -> Eval<Value> {
        match self.slot(name) {
            Some((Value::Poison, _)) => Err(Stop),
            Some((value, _)) => Ok(value),
            None => {
                let diagnostic = Diagnostic::error(
                    self.span,
                    format!("`{}` needs the argument `{name}`", self.name),
                )
                .with_label(format!("`{name}` is missing"))
                .with_hint(format!(
                    "the parameters of `{}` are {}",
                    self.name,
                    list_names(self.params)
                ));
                self.lowerer.errors.push(diagnostic);
                Err(Stop)
            }
        }
    }

    fn wrong_type(&mut self, name: &str, expected: &str, value: &Value) -> Stop {
        let message = format!(
            "`{name}` of `{}` must be {expected}, but this is {}",
            self.name,
            value.describe()
        );
        self.error(name, message, None)
    }

    fn tensor(&mut self, name: &str) -> Eval<ir::Value> {
        match self.required(name)? {
            Value::Tensor(value) => Ok(value),
            other => Err(self.wrong_type(name, "a tensor", &other)),
        }
    }

    fn optional_tensor(&mut self, name: &str) -> Eval<Option<ir::Value>> {
        if self.present(name) {
            self.tensor(name).map(Some)
        } else {
            Ok(None)
        }
    }

    fn tensor_list(&mut self, name: &str) -> Eval<Vec<ir::Value>> {
        match self.required(name)? {
            Value::List(items) if !items.is_empty() => {
                let mut tensors = Vec::new();
                for item in &items {
                    match item {
                        Value::Tensor(value) => tensors.push(*value),
                        other => return Err(self.wrong_type(name, "a list of tensors", other)),
                    }
                }
                Ok(tensors)
            }
            other => {
                Err(self.wrong_type(name, "a non-empty list of tensors, like `[a, b]`", &other))
            }
        }
    }

    fn value_or_default(&mut self, name: &str, default: Option<Value>) -> Eval<Value> {
        match (self.present(name), default) {
            (false, Some(default)) => Ok(default),
            _ => self.required(name),
        }
    }

    fn int(&mut self, name: &str, default: Option<i64>) -> Eval<i64> {
        match self.value_or_default(name, default.map(Value::Int))? {
            Value::Int(value) => Ok(value),
            other => Err(self.wrong_type(name, "an integer", &other)),
        }
    }

    fn positive(&mut self, name: &str, default: Option<i64>) -> Eval<usize> {
        let value = self.int(name, default)?;
        if value >= 1 {
            usize::try_from(value).map_err(|_| Stop)
        } else {
            Err(self.error(
                name,
                format!("`{name}` must be at least 1, but it is {value}"),
                None,
            ))
        }
    }

    fn optional_positive(&mut self, name: &str) -> Eval<Option<usize>> {
        if self.present(name) {
            self.positive(name, None).map(Some)
        } else {
            Ok(None)
        }
    }

    fn float(&mut self, name: &str, default: Option<f64>) -> Eval<f64> {
        let value = self.value_or_default(name, default.map(Value::Float))?;
        match value.as_float() {
            Some(number) if number.is_finite() && (number as f32).is_finite() => Ok(number),
            Some(number) => Err(self.error(
                name,
                format!("`{name}` = {number} does not fit in an f32"),
                None,
            )),
            None => Err(self.wrong_type(name, "a number", &value)),
        }
    }

    fn bool(&mut self, name: &str, default: Option<bool>) -> Eval<bool> {
        match self.value_or_default(name, default.map(Value::Bool))? {
            Value::Bool(value) => Ok(value),
            other => Err(self.wrong_type(name, "`true` or `false`", &other)),
        }
    }

    fn string(&mut self, name: &str, default: Option<&str>) -> Eval<String> {
        match self.value_or_default(name, default.map(|text| Value::Str(text.to_string())))? {
            Value::Str(value) => Ok(value),
            other => Err(self.wrong_type(name, "a string", &other)),
        }
    }

    fn optional_string(&mut self, name: &str) -> Eval<Option<String>> {
        if self.present(name) {
            self.string(name, None).map(Some)
        } else {
            Ok(None)
        }
    }

    fn int_list(&mut self, name: &str, default: Option<Vec<i64>>) -> Eval<Vec<i64>> {
        let value = self.value_or_default(
            name,
            default.map(|items| Value::List(items.into_iter().map(Value::Int).collect())),
        )?;
        match &value {
            Value::List(items) => items
                .iter()
                .map(|item| match item {
                    Value::Int(value) => Ok(*value),
                    other => Err(self.wrong_type(name, "a list of integers", other)),
                })
                .collect(),
            other => Err(self.wrong_type(name, "a list of integers, like `[1, 2]`", other)),
        }
    }

    fn bool_matrix(&mut self, name: &str) -> Eval<Vec<Vec<bool>>> {
        let value = self.required(name)?;
        let rows = match &value {
            Value::List(rows) if !rows.is_empty() => rows,
            other => return Err(self.wrong_type(name, "a list of rows of 0s and 1s", other)),
        };
        let mut matrix = Vec::new();
        for row in rows {
            let Value::List(cells) = row else {
                return Err(self.wrong_type(name, "a list of rows of 0s and 1s", row));
            };
            let mut parsed = Vec::new();
            for cell in cells {
                parsed.push(match cell {
                    Value::Int(0) | Value::Bool(false) => false,
                    Value::Int(1) | Value::Bool(true) => true,
                    other => return Err(self.wrong_type(name, "made of 0s and 1s", other)),
                });
            }
            matrix.push(parsed);
        }
        if matrix.iter().any(|row| row.len() != matrix.len()) {
            return Err(self.error(name, "the block mask must be square", None));
        }
        Ok(matrix)
    }

    /// An integer or a list of `count` integers, each at least 1: `kernel = 3` or `kernel = [3, 1]`.
    fn spatial(&mut self, name: &str, count: usize, default: Option<i64>) -> Eval<Vec<usize>> {
        let values = self.spatial_allow_zero(name, count, default)?;
        if values.contains(&0) {
            return Err(self.error(name, format!("`{name}` must be at least 1"), None));
        }
        Ok(values)
    }

    /// An integer or a list of `count` non-negative integers.
    fn spatial_allow_zero(
        &mut self,
        name: &str,
        count: usize,
        default: Option<i64>,
    ) -> Eval<Vec<usize>> {
        let value = self.value_or_default(name, default.map(Value::Int))?;
        let items = match &value {
            Value::Int(single) => vec![*single; count],
            Value::List(items)
                if items.len() == count
                    && items.iter().all(|item| matches!(item, Value::Int(_))) =>
            {
                items
                    .iter()
                    .map(|item| {
                        if let Value::Int(value) = item {
                            *value
                        } else {
                            0
                        }
                    })
                    .collect()
            }
            other => {
                let expected = if count == 1 {
                    "an integer".to_string()
                } else {
                    format!("an integer or a list of {count} integers")
                };
                return Err(self.wrong_type(name, &expected, other));
            }
        };
        items
            .into_iter()
            .map(|item| {
                usize::try_from(item).map_err(|_| {
                    self.error(
                        name,
                        format!("`{name}` cannot be negative, but it is {item}"),
                        None,
                    )
                })
            })
            .collect()
    }

    /// An axis argument, negative counting from the end as in PyTorch.
    fn axis(&mut self, name: &str, rank: usize, default: Option<i64>) -> Eval<usize> {
        let value = self.int(name, default)?;
        normalize_axis(value, rank).ok_or_else(|| {
            self.error(
                name,
                format!("dim {value} is out of range for a tensor of rank {rank}"),
                Some("dims count from 0, or from -1 at the end"),
            )
        })
    }

    fn shape(&self, value: ir::Value) -> Vec<usize> {
        self.builder.graph.ty(value).shape.clone()
    }

    fn rank(&self, value: ir::Value) -> usize {
        self.builder.graph.ty(value).rank()
    }

    fn last_dim(&mut self, value: ir::Value, name: &str) -> Eval<usize> {
        match self.builder.graph.ty(value).last_dim() {
            Some(dim) => Ok(dim),
            None => Err(self.error(
                name,
                format!("`{}` needs a tensor with at least one dimension", self.name),
                None,
            )),
        }
    }

    /// The full name of this layer, for its weights; an error if it has none.
    fn layer_name(&mut self) -> Eval<String> {
        match &self.naming {
            Some(naming) if naming.transparent => {
                let diagnostic = Diagnostic::error(
                    naming.span,
                    format!(
                        "this `{}` has weights, so `as _` cannot leave it unnamed",
                        self.name
                    ),
                )
                .with_hint("`as _` is for blocks; name layers with weights: `as fc`");
                self.lowerer.errors.push(diagnostic);
                Err(Stop)
            }
            Some(naming) => Ok(naming.layer.clone()),
            None => {
                let diagnostic = Diagnostic::error(self.callee_span, format!("this `{}` has weights, so it needs a layer name", self.name))
                    .with_hint("assign it to a variable, `y = ...`, or name it with `as`: `return linear(x, 10) as head`");
                self.lowerer.errors.push(diagnostic);
                Err(Stop)
            }
        }
    }

    /// Creates the weight `<layer>.<suffix>`.
    fn param(&mut self, suffix: &str, shape: Vec<usize>, init: ParamInit) -> Eval<ir::Value> {
        self.weight(suffix, shape, init, false)
    }

    /// Creates the buffer `<layer>.<suffix>`: loaded like a weight, not counted as a parameter.
    fn buffer(&mut self, suffix: &str, shape: Vec<usize>, init: ParamInit) -> Eval<ir::Value> {
        self.weight(suffix, shape, init, true)
    }

    fn weight(
        &mut self,
        suffix: &str,
        shape: Vec<usize>,
        init: ParamInit,
        is_buffer: bool,
    ) -> Eval<ir::Value> {
        let layer = self.layer_name()?;
        let name = format!("{layer}.{suffix}");
        let naming_span = self.naming.as_ref().map_or(self.span, |naming| naming.span);
        if let Some(&first) = self.builder.param_spans.get(&name) {
            let mut diagnostic =
                Diagnostic::error(naming_span, format!("the weight `{name}` is defined twice"))
                    .with_label("this layer's name is already taken");
            diagnostic = if first == naming_span {
                diagnostic.with_hint("this statement runs more than once (in a loop or a block called twice); index its name: `as layers[i]`")
            } else {
                diagnostic
                    .with_secondary(first, "first defined here")
                    .with_hint("give each layer with weights its own name with `as NAME`")
            };
            self.lowerer.errors.push(diagnostic);
            return Err(Stop);
        }
        let ty = TensorType::new(DType::F32, shape).map_err(|error| {
            let diagnostic = Diagnostic::error(
                self.span,
                format!("the weight `{name}` is too large: {error}"),
            );
            self.lowerer.errors.push(diagnostic);
            Stop
        })?;
        self.builder.param_spans.insert(name.clone(), naming_span);
        let value = self
            .builder
            .graph
            .add_param(name.clone(), ty, init, is_buffer);
        self.builder.param_values.insert(name, value);
        Ok(value)
    }

    /// Infers the output type and appends the node. Each input names the argument it came from.
    fn node(&mut self, op: Op, inputs: &[(ir::Value, Option<&'static str>)]) -> Eval<ir::Value> {
        let types: Vec<&TensorType> = inputs
            .iter()
            .map(|(value, _)| self.builder.graph.ty(*value))
            .collect();
        match infer(&op, &types) {
            Ok(output_types) => {
                let name = match &self.naming {
                    Some(naming) if !naming.layer.is_empty() => naming.layer.clone(),
                    _ => format!("{}{}", self.prefix, self.name),
                };
                let outputs = self.builder.graph.add_node(
                    op,
                    inputs.iter().map(|(value, _)| *value).collect(),
                    output_types,
                    name,
                    self.span,
                );
                Ok(outputs[0])
            }
            Err(error) => Err(self.shape_error(error, inputs)),
        }
    }

    /// Reports a shape error at the argument it is about.
    fn shape_error(
        &mut self,
        error: ShapeError,
        inputs: &[(ir::Value, Option<&'static str>)],
    ) -> Stop {
        let span = match error.culprit {
            Culprit::Op => self.span,
            Culprit::Input(position) => match inputs.get(position).and_then(|(_, arg)| *arg) {
                Some(arg) => self.span_of(arg),
                None => self.span,
            },
            Culprit::Attr(attr) => self.span_of(attr),
        };
        let mut diagnostic = Diagnostic::error(span, error.message);
        if span != self.span && !self.params.is_empty() {
            diagnostic =
                diagnostic.with_secondary(self.callee_span, format!("in this `{}`", self.name));
        }
        if let Some(hint) = error.hint {
            diagnostic = diagnostic.with_hint(hint);
        }
        self.lowerer.errors.push(diagnostic);
        Stop
    }
}

fn normalize_axis(axis: i64, rank: usize) -> Option<usize> {
    let rank = rank as i64;
    let normalized = if axis < 0 { axis + rank } else { axis };
    (0..rank)
        .contains(&normalized)
        .then_some(normalized as usize)
}

fn list_names(params: &[&str]) -> String {
    let names: Vec<String> = params.iter().map(|param| format!("`{param}`")).collect();
    names.join(", ")
}
