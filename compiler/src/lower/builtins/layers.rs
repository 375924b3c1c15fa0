//! Layers with weights, and the plain products: `linear`, `conv1d`/`conv2d`, `embedding`,
//! `position_embedding`, `matmul` and `dropout` (the identity at inference).
//!
//! Weights are named `<layer>.weight` and `<layer>.bias` as in a PyTorch state dict; `tied = "name"`
//! reuses the weight of an earlier layer instead of creating one.

use crate::diagnostics::Diagnostic;
use crate::ir::infer::check_groups;
use crate::ir::{self, ConvAttrs, Epilogue, Op, ParamInit};
use crate::lower::call::CallCx;
use crate::lower::value::Value;
use crate::lower::{Eval, Stop, did_you_mean};

/// `linear(x, out_features, bias, in_features, tied)`: `x @ weightᵀ + bias`.
pub(super) fn linear(cx: &mut CallCx<'_, '_>) -> Eval<Value> {
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
    let layer_quantize = cx.layer_quantize(in_features)?;
    cx.set_layer_quantize(weight, layer_quantize);
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
    .map(Value::Tensor)
}

/// `conv1d` and `conv2d`, with `spatial` = 1 or 2 spatial axes.
pub(super) fn conv(cx: &mut CallCx<'_, '_>, spatial: usize) -> Eval<Value> {
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
    // Only `quantize = false` applies to a conv: convs are quantized only to int8, by
    // `--quantize int8` with a calibration, never to a block format.
    let layer_quantize = cx.layer_quantize(0)?;
    if let Some(ir::LayerQuantize::Format(format)) = layer_quantize {
        return Err(cx.error(
            "quantize",
            format!("conv layers are not stored in block formats, so not in {format}"),
            Some("`quantize = false` keeps the layer in f32 under `--quantize int8`"),
        ));
    }
    cx.set_layer_quantize(weight, layer_quantize);
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
            nchw_input: false,
            pointwise: None,
            max_pool: None,
            depthwise: None,
        }),
        &inputs,
    )
    .map(Value::Tensor)
}

/// `embedding(ids, num_embeddings, embedding_dim, tied)`: rows of a table, by id.
pub(super) fn embedding(cx: &mut CallCx<'_, '_>) -> Eval<Value> {
    let ids = cx.tensor("ids")?;
    let weight = match cx.optional_string("tied")? {
        Some(layer) => {
            let weight = tied_weight(cx, &layer)?;
            let shape = cx.shape(weight);
            for (axis, name) in ["num_embeddings", "embedding_dim"].into_iter().enumerate() {
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
    let layer_quantize = cx.layer_quantize(cx.shape(weight).get(1).copied().unwrap_or(0))?;
    cx.set_layer_quantize(weight, layer_quantize);
    let tied = cx.present("tied").then_some("tied");
    cx.node(Op::Embedding, &[(ids, Some("ids")), (weight, tied)])
        .map(Value::Tensor)
}

/// `position_embedding(x, max_positions, dim)`: learned absolute positions.
pub(super) fn position_embedding(cx: &mut CallCx<'_, '_>) -> Eval<Value> {
    let x = cx.tensor("x")?;
    let count = cx.positive("max_positions", None)?;
    let dim = cx.positive("dim", None)?;
    let weight = cx.param("weight", vec![count, dim], ParamInit::Normal)?;
    cx.node(Op::PositionEmbedding, &[(x, Some("x")), (weight, None)])
        .map(Value::Tensor)
}

/// `parameter(shape)`: a learned tensor, PyTorch's `nn.Parameter`; the weight is named after the
/// layer itself (`parameter([1, 3, 1, 1]) as mean` is the weight `mean`).
pub(super) fn parameter(cx: &mut CallCx<'_, '_>) -> Eval<Value> {
    let dims = cx.int_list("shape", None)?;
    let mut shape = Vec::with_capacity(dims.len());
    for dim in dims {
        match usize::try_from(dim) {
            Ok(dim) if dim >= 1 => shape.push(dim),
            _ => {
                return Err(cx.error(
                    "shape",
                    format!("dimension {dim} is not a valid size"),
                    Some("sizes are at least 1"),
                ));
            }
        }
    }
    cx.param("", shape, ParamInit::Normal).map(Value::Tensor)
}

/// `matmul(a, b)`: a batched matrix product.
pub(super) fn matmul(cx: &mut CallCx<'_, '_>) -> Eval<Value> {
    let a = cx.tensor("a")?;
    let b = cx.tensor("b")?;
    cx.node(Op::MatMul, &[(a, Some("a")), (b, Some("b"))])
        .map(Value::Tensor)
}

/// `dropout(x, p)`: the identity at inference; checks `p`.
pub(super) fn dropout(cx: &mut CallCx<'_, '_>) -> Eval<Value> {
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
    Ok(Value::Tensor(x))
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
