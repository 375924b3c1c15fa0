//! The ONNX nodes of each IR op: one function per op that needs more than a one-to-one mapping.
//!
//! Each returns the ONNX name of the node's result. Decompositions follow PyTorch's exporter
//! (`nn.Linear` on a 3-D input is `MatMul` + `Add`, exact GELU is `Div`/`Erf`/`Add`/`Mul`/`Mul`,
//! attention is `MatMul`/`Mul`/`Add`/`Softmax`/`MatMul`), so importers that read PyTorch's ONNX
//! read these too.

use super::{Exporter, attribute_float, attribute_int, attribute_ints};
use crate::ir::{
    Activation, AttentionAttrs, BinaryOp, ConvAttrs, ConvTransposeAttrs, DType, ElementwiseStep,
    Epilogue, NodeData, Op, PadMode, PoolAttrs, ReduceOp, Resize2dOptions, ResizeMode, Value,
};

/// The additive mask of a masked-out score: the most negative f32, as Hugging Face's models use
/// (`torch.finfo(float32).min`), not `-inf`, so that a row with every key masked out stays finite.
const MASKED: f32 = f32::MIN;

/// Lowers `data` (the node `node`); `Err` says why ONNX cannot express it.
pub(super) fn lower(exporter: &mut Exporter<'_>, data: &NodeData) -> Result<String, String> {
    let inputs = &data.inputs;
    let graph = exporter.graph;
    let shape = |value: Value| graph.ty(value).shape.clone();
    let output_shape = shape(data.outputs[0]);
    Ok(match &data.op {
        Op::Linear { bias, epilogue } => linear(exporter, inputs, *bias, *epilogue)?,
        Op::Conv(attrs) => conv(exporter, inputs, attrs)?,
        Op::ConvTranspose(attrs) => conv_transpose(exporter, inputs, attrs),
        Op::Resize(options) => {
            let input_shape = shape(inputs[0]);
            resize(exporter, inputs[0], &input_shape, options)
        }
        Op::Pad {
            before,
            after,
            mode,
            value,
        } => {
            let x = exporter.value(inputs[0]);
            let pads: Vec<i64> = to_i64(before).into_iter().chain(to_i64(after)).collect();
            let pads = exporter.constant_i64("pads", &pads);
            let mut operands = vec![x.as_str(), pads.as_str()];
            let constant_value;
            if *mode == PadMode::Constant {
                constant_value = exporter.scalar_f32("pad_value", *value);
                operands.push(&constant_value);
            }
            exporter.node(
                "Pad",
                &operands,
                vec![attribute_string("mode", mode.name())],
            )
        }
        Op::MatMul => {
            let (a, b) = (exporter.value(inputs[0]), exporter.value(inputs[1]));
            exporter.node("MatMul", &[&a, &b], vec![])
        }
        Op::MaxPool(attrs) => pool(exporter, inputs[0], "MaxPool", attrs)?,
        Op::AvgPool(attrs) => pool(exporter, inputs[0], "AveragePool", attrs)?,
        Op::GlobalAvgPool { channels_last } | Op::GlobalMaxPool { channels_last } => {
            if *channels_last {
                return Err(channels_last_error());
            }
            let op_type = match data.op {
                Op::GlobalAvgPool { .. } => "GlobalAveragePool",
                _ => "GlobalMaxPool",
            };
            let x = exporter.value(inputs[0]);
            exporter.node(op_type, &[&x], vec![])
        }
        Op::BatchNorm { eps } => {
            let names: Vec<String> = inputs.iter().map(|&input| exporter.value(input)).collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            exporter.node(
                "BatchNormalization",
                &names,
                vec![attribute_float("epsilon", *eps)],
            )
        }
        Op::LayerNorm { eps, affine } => {
            let x = exporter.value(inputs[0]);
            let features = output_shape.last().copied().unwrap_or(1);
            let (scale, shift) = match affine {
                true => (exporter.value(inputs[1]), Some(exporter.value(inputs[2]))),
                // LayerNormalization needs a scale; ones make it the plain normalization.
                false => (
                    exporter.constant_f32("ones", &[features], &vec![1.0; features]),
                    None,
                ),
            };
            let mut operands = vec![x.as_str(), scale.as_str()];
            if let Some(shift) = &shift {
                operands.push(shift);
            }
            exporter.node(
                "LayerNormalization",
                &operands,
                vec![attribute_int("axis", -1), attribute_float("epsilon", *eps)],
            )
        }
        Op::RmsNorm { eps, affine } => {
            let x = exporter.value(inputs[0]);
            let two = exporter.scalar_f32("two", 2.0);
            let squares = exporter.node("Pow", &[&x, &two], vec![]);
            let mean = exporter.node(
                "ReduceMean",
                &[&squares],
                vec![
                    attribute_ints_signed("axes", &[-1]),
                    attribute_int("keepdims", 1),
                ],
            );
            let eps = exporter.scalar_f32("eps", *eps);
            let shifted = exporter.node("Add", &[&mean, &eps], vec![]);
            let root = exporter.node("Sqrt", &[&shifted], vec![]);
            let normalized = exporter.node("Div", &[&x, &root], vec![]);
            match affine {
                true => {
                    let weight = exporter.value(inputs[1]);
                    exporter.node("Mul", &[&normalized, &weight], vec![])
                }
                false => normalized,
            }
        }
        Op::Embedding => {
            let (ids, table) = (exporter.value(inputs[0]), exporter.value(inputs[1]));
            exporter.node("Gather", &[&table, &ids], vec![attribute_int("axis", 0)])
        }
        Op::PositionEmbedding => {
            // Positions start at 0 without a KV cache: the first `seq` rows of the table.
            let table = exporter.value(inputs[1]);
            let seq = output_shape[1];
            let rows = slice(exporter, &table, 0, 0, seq);
            let target = exporter.constant_i64("shape", &to_i64(&output_shape));
            exporter.node("Reshape", &[&rows, &target], vec![])
        }
        Op::Rope {
            heads,
            theta,
            interleaved,
        } => rope(exporter, inputs[0], *heads, *theta, *interleaved)?,
        Op::Attention(attrs) => attention(exporter, inputs, attrs)?,
        Op::Activation(activation) => {
            let x = exporter.value(inputs[0]);
            activation_nodes(exporter, &x, *activation)
        }
        Op::Softmax { axis } => {
            let x = exporter.value(inputs[0]);
            exporter.node("Softmax", &[&x], vec![attribute_int("axis", *axis as i64)])
        }
        Op::LogSoftmax { axis } => {
            let x = exporter.value(inputs[0]);
            exporter.node(
                "LogSoftmax",
                &[&x],
                vec![attribute_int("axis", *axis as i64)],
            )
        }
        Op::Reduce { op, axes, keepdims } => {
            let x = exporter.value(inputs[0]);
            reduce(exporter, &x, *op, axes, *keepdims)
        }
        Op::Binary(op) => {
            let (a, b) = (exporter.value(inputs[0]), exporter.value(inputs[1]));
            let op_type = match op {
                BinaryOp::Add => "Add",
                BinaryOp::Sub => "Sub",
                BinaryOp::Mul => "Mul",
                BinaryOp::Div => "Div",
                BinaryOp::Pow => "Pow",
            };
            exporter.node(op_type, &[&a, &b], vec![])
        }
        Op::Affine { scale, shift } => {
            let x = exporter.value(inputs[0]);
            affine(exporter, &x, *scale, *shift)
        }
        Op::ElementwiseChain(steps) => {
            let mut x = exporter.value(inputs[0]);
            for step in steps {
                x = match *step {
                    ElementwiseStep::Activation(activation) => {
                        activation_nodes(exporter, &x, activation)
                    }
                    ElementwiseStep::Affine { scale, shift } => affine(exporter, &x, scale, shift),
                };
            }
            x
        }
        Op::Reshape { shape: target } => {
            let x = exporter.value(inputs[0]);
            let target = exporter.constant_i64("shape", &to_i64(target));
            exporter.node("Reshape", &[&x, &target], vec![])
        }
        Op::Transpose { perm } => {
            let x = exporter.value(inputs[0]);
            exporter.node("Transpose", &[&x], vec![attribute_ints("perm", perm)])
        }
        Op::Concat { axis } => {
            let names: Vec<String> = inputs.iter().map(|&input| exporter.value(input)).collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            exporter.node("Concat", &names, vec![attribute_int("axis", *axis as i64)])
        }
        Op::Slice { axis, start, end } => {
            let x = exporter.value(inputs[0]);
            slice(exporter, &x, *axis, *start, *end)
        }
        Op::Select { axis, index } => {
            let x = exporter.value(inputs[0]);
            let index = exporter.constant("index", super::tensor_i64(&[], &[*index as i64]));
            exporter.node(
                "Gather",
                &[&x, &index],
                vec![attribute_int("axis", *axis as i64)],
            )
        }
    })
}

fn channels_last_error() -> String {
    "a channels-last layout, which ONNX operators do not take; export before the layout pass \
     (`nnc export` never runs it)"
        .to_string()
}

fn to_i64(values: &[usize]) -> Vec<i64> {
    values.iter().map(|&value| value as i64).collect()
}

fn attribute_string(name: &str, value: &str) -> crate::onnx::proto::AttributeProto {
    crate::onnx::proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(crate::onnx::proto::attribute_proto::AttributeType::String as i32),
        s: Some(value.as_bytes().to_vec()),
        ..Default::default()
    }
}

fn attribute_ints_signed(name: &str, values: &[i64]) -> crate::onnx::proto::AttributeProto {
    crate::onnx::proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(crate::onnx::proto::attribute_proto::AttributeType::Ints as i32),
        ints: values.to_vec(),
        ..Default::default()
    }
}

/// `Slice(x, [start], [end], [axis])`.
fn slice(exporter: &mut Exporter<'_>, x: &str, axis: usize, start: usize, end: usize) -> String {
    let starts = exporter.constant_i64("starts", &[start as i64]);
    let ends = exporter.constant_i64("ends", &[end as i64]);
    let axes = exporter.constant_i64("axes", &[axis as i64]);
    exporter.node("Slice", &[x, &starts, &ends, &axes], vec![])
}

/// `x * scale + shift`, leaving out a multiplication by 1 and an addition of 0.
fn affine(exporter: &mut Exporter<'_>, x: &str, scale: f32, shift: f32) -> String {
    let mut y = x.to_string();
    if scale == -1.0 {
        // `-x`, as ONNX writes it.
        y = exporter.node("Neg", &[&y], vec![]);
    } else if scale != 1.0 {
        let scale = exporter.scalar_f32("scale", scale);
        y = exporter.node("Mul", &[&y, &scale], vec![]);
    }
    if shift != 0.0 {
        let shift = exporter.scalar_f32("shift", shift);
        y = exporter.node("Add", &[&y, &shift], vec![]);
    }
    if y == x {
        y = exporter.node("Identity", &[x], vec![]);
    }
    y
}

/// `ReduceSum`, `ReduceMean` or `ReduceMax` of `x` over `axes`. At opset 17 ReduceSum takes its
/// axes as an input (since opset 13), the other two as an attribute (until opset 18).
fn reduce(
    exporter: &mut Exporter<'_>,
    x: &str,
    op: ReduceOp,
    axes: &[usize],
    keepdims: bool,
) -> String {
    let keepdims = attribute_int("keepdims", i64::from(keepdims));
    let op_type = match op {
        ReduceOp::Sum => "ReduceSum",
        ReduceOp::Mean => "ReduceMean",
        ReduceOp::Max => "ReduceMax",
        ReduceOp::Min => "ReduceMin",
        ReduceOp::Prod => "ReduceProd",
        ReduceOp::L1 => "ReduceL1",
        ReduceOp::L2 => "ReduceL2",
        ReduceOp::SumSquare => "ReduceSumSquare",
        ReduceOp::LogSumExp => "ReduceLogSumExp",
    };
    // Opset 13 made ReduceSum's axes an input; the others have them as an attribute until 18.
    if op == ReduceOp::Sum {
        let axes = exporter.constant_i64("axes", &to_i64(axes));
        exporter.node(op_type, &[x, &axes], vec![keepdims])
    } else {
        exporter.node(op_type, &[x], vec![attribute_ints("axes", axes), keepdims])
    }
}

/// The nodes of one activation applied to `x`.
fn activation_nodes(exporter: &mut Exporter<'_>, x: &str, activation: Activation) -> String {
    match activation {
        Activation::Relu => exporter.node("Relu", &[x], vec![]),
        Activation::Relu6 => {
            let low = exporter.scalar_f32("zero", 0.0);
            let high = exporter.scalar_f32("six", 6.0);
            exporter.node("Clip", &[x, &low, &high], vec![])
        }
        Activation::LeakyRelu { negative_slope } => exporter.node(
            "LeakyRelu",
            &[x],
            vec![attribute_float("alpha", negative_slope)],
        ),
        Activation::Sigmoid => exporter.node("Sigmoid", &[x], vec![]),
        Activation::Tanh => exporter.node("Tanh", &[x], vec![]),
        Activation::Silu => {
            let gate = exporter.node("Sigmoid", &[x], vec![]);
            exporter.node("Mul", &[x, &gate], vec![])
        }
        Activation::HardSwish => exporter.node("HardSwish", &[x], vec![]),
        // PyTorch's hard sigmoid, relu6(x + 3) / 6, is ONNX's with alpha 1/6 and beta 1/2.
        Activation::HardSigmoid => exporter.node(
            "HardSigmoid",
            &[x],
            vec![
                attribute_float("alpha", 1.0 / 6.0),
                attribute_float("beta", 0.5),
            ],
        ),
        // x * 0.5 * (1 + erf(x / sqrt 2)), as PyTorch exports it before opset 20's Gelu.
        Activation::Gelu => {
            let root_two = exporter.scalar_f32("sqrt_2", std::f32::consts::SQRT_2);
            let scaled = exporter.node("Div", &[x, &root_two], vec![]);
            let erf = exporter.node("Erf", &[&scaled], vec![]);
            let one = exporter.scalar_f32("one", 1.0);
            let shifted = exporter.node("Add", &[&erf, &one], vec![]);
            let product = exporter.node("Mul", &[x, &shifted], vec![]);
            let half = exporter.scalar_f32("half", 0.5);
            exporter.node("Mul", &[&product, &half], vec![])
        }
        // 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x³))).
        Activation::GeluTanh => {
            let square = exporter.node("Mul", &[x, x], vec![]);
            let cube = exporter.node("Mul", &[&square, x], vec![]);
            let kappa = exporter.scalar_f32("kappa", 0.044_715);
            let term = exporter.node("Mul", &[&cube, &kappa], vec![]);
            let inner = exporter.node("Add", &[x, &term], vec![]);
            let beta = exporter.scalar_f32("beta", (2.0 / std::f32::consts::PI).sqrt());
            let argument = exporter.node("Mul", &[&inner, &beta], vec![]);
            let tanh = exporter.node("Tanh", &[&argument], vec![]);
            let one = exporter.scalar_f32("one", 1.0);
            let shifted = exporter.node("Add", &[&tanh, &one], vec![]);
            let product = exporter.node("Mul", &[x, &shifted], vec![]);
            let half = exporter.scalar_f32("half", 0.5);
            exporter.node("Mul", &[&product, &half], vec![])
        }
        Activation::Softplus => exporter.node("Softplus", &[x], vec![]),
        Activation::Sqrt => exporter.node("Sqrt", &[x], vec![]),
        Activation::Exp => exporter.node("Exp", &[x], vec![]),
        Activation::Erf => exporter.node("Erf", &[x], vec![]),
        Activation::Abs => exporter.node("Abs", &[x], vec![]),
        Activation::Pow { exponent } => {
            let exponent = exporter.scalar_f32("exponent", exponent);
            exporter.node("Pow", &[x, &exponent], vec![])
        }
    }
}

/// The weight and bias of a conv or linear layer, with a folded batch norm applied to them as
/// nnc applies it when it loads the weights: `s = γ / sqrt(var + eps)`, `w·s`, `(b - mean)·s + β`.
/// The inputs are the layer's: `x, weight, [bias], [bn weight, bn bias, mean, variance], ..`.
/// Returns the names of the weight and bias to use.
fn layer_weights(
    exporter: &mut Exporter<'_>,
    inputs: &[Value],
    bias: bool,
    epilogue: &Epilogue,
) -> Result<(String, Option<String>), String> {
    let weight = inputs[1];
    let bias_value = bias.then(|| inputs[2]);
    let Some(eps) = epilogue.batch_norm else {
        let weight = exporter.value(weight);
        let bias = bias_value.map(|bias| exporter.value(bias));
        return Ok((weight, bias));
    };
    let first = if bias { 3 } else { 2 };
    fn data<'g>(exporter: &Exporter<'g>, value: Value) -> Result<&'g [f32], String> {
        exporter
            .weight_data(value)
            .ok_or_else(|| "a folded batch norm whose parameters are not weights".to_string())
    }
    let weight_data = data(exporter, weight)?;
    let [gamma, beta, mean, variance] = [0, 1, 2, 3].map(|offset| inputs[first + offset]);
    let (gamma, beta, mean, variance) = (
        data(exporter, gamma)?,
        data(exporter, beta)?,
        data(exporter, mean)?,
        data(exporter, variance)?,
    );
    let channels = mean.len();
    if channels == 0 || !weight_data.len().is_multiple_of(channels) {
        return Err("a folded batch norm whose size does not divide the weight".into());
    }
    let per_channel = weight_data.len() / channels;
    let scales: Vec<f32> = (0..channels)
        .map(|channel| gamma[channel] / (variance[channel] + eps).sqrt())
        .collect();
    let folded_weight: Vec<f32> = weight_data
        .iter()
        .enumerate()
        .map(|(index, &value)| value * scales[index / per_channel])
        .collect();
    let bias_data = match bias_value {
        Some(bias) => data(exporter, bias)?.to_vec(),
        None => vec![0.0; channels],
    };
    let folded_bias: Vec<f32> = (0..channels)
        .map(|channel| (bias_data[channel] - mean[channel]) * scales[channel] + beta[channel])
        .collect();
    let graph = exporter.graph;
    let weight_name = graph.param_of(weight).map(|param| param.name.clone());
    let weight_name = weight_name.unwrap_or_else(|| "weight".into());
    let shape = graph.ty(weight).shape.clone();
    let folded_weight =
        exporter.constant_f32(&format!("{weight_name}/folded_bn"), &shape, &folded_weight);
    let bias_name = weight_name
        .strip_suffix("weight")
        .map(|prefix| format!("{prefix}bias/folded_bn"))
        .unwrap_or_else(|| format!("{weight_name}/folded_bn_bias"));
    let folded_bias = exporter.constant_f32(&bias_name, &[channels], &folded_bias);
    Ok((folded_weight, Some(folded_bias)))
}

/// What a layer's epilogue adds after the layer itself: the residual, then the activation.
fn epilogue_nodes(
    exporter: &mut Exporter<'_>,
    mut y: String,
    inputs: &[Value],
    epilogue: &Epilogue,
) -> String {
    if epilogue.residual {
        let residual = exporter.value(*inputs.last().expect("a residual input"));
        y = exporter.node("Add", &[&y, &residual], vec![]);
    }
    if let Some(activation) = epilogue.activation {
        y = activation_nodes(exporter, &y, activation);
    }
    y
}

fn linear(
    exporter: &mut Exporter<'_>,
    inputs: &[Value],
    bias: bool,
    epilogue: Epilogue,
) -> Result<String, String> {
    let (weight, bias) = layer_weights(exporter, inputs, bias, &epilogue)?;
    let x = exporter.value(inputs[0]);
    let rank = exporter.graph.ty(inputs[0]).rank();
    // A 2-D input is a Gemm with the weight as stored ([out, in], transB); higher ranks are a
    // MatMul by the transposed weight and an Add, as PyTorch exports `nn.Linear`.
    let y = if rank == 2 {
        let mut operands = vec![x.as_str(), weight.as_str()];
        if let Some(bias) = &bias {
            operands.push(bias);
        }
        exporter.node("Gemm", &operands, vec![attribute_int("transB", 1)])
    } else {
        let transposed = exporter.node(
            "Transpose",
            &[&weight],
            vec![attribute_ints("perm", &[1, 0])],
        );
        let product = exporter.node("MatMul", &[&x, &transposed], vec![]);
        match &bias {
            Some(bias) => exporter.node("Add", &[&product, bias], vec![]),
            None => product,
        }
    };
    Ok(epilogue_nodes(exporter, y, inputs, &epilogue))
}

fn conv(
    exporter: &mut Exporter<'_>,
    inputs: &[Value],
    attrs: &ConvAttrs,
) -> Result<String, String> {
    if attrs.channels_last {
        return Err(channels_last_error());
    }
    let (weight, bias) = layer_weights(exporter, inputs, attrs.bias, &attrs.epilogue)?;
    let x = exporter.value(inputs[0]);
    let mut operands = vec![x.as_str(), weight.as_str()];
    if let Some(bias) = &bias {
        operands.push(bias);
    }
    let pads: Vec<usize> = attrs
        .padding
        .iter()
        .chain(&attrs.padding)
        .copied()
        .collect();
    let y = exporter.node(
        "Conv",
        &operands,
        vec![
            attribute_ints("dilations", &attrs.dilation),
            attribute_int("group", attrs.groups as i64),
            attribute_ints("kernel_shape", &attrs.kernel),
            attribute_ints("pads", &pads),
            attribute_ints("strides", &attrs.stride),
        ],
    );
    let y = epilogue_nodes(exporter, y, inputs, &attrs.epilogue);
    // A max pooling fused into the layer (`ConvAttrs::max_pool`) pools its output.
    match &attrs.max_pool {
        Some(pool) => pool_of(exporter, y, "MaxPool", pool),
        None => Ok(y),
    }
}

/// `ConvTranspose` with symmetric pads; its weight layout is ONNX's own.
fn conv_transpose(
    exporter: &mut Exporter<'_>,
    inputs: &[Value],
    attrs: &ConvTransposeAttrs,
) -> String {
    let names: Vec<String> = inputs.iter().map(|&input| exporter.value(input)).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let pads: Vec<usize> = attrs
        .padding
        .iter()
        .chain(&attrs.padding)
        .copied()
        .collect();
    exporter.node(
        "ConvTranspose",
        &names,
        vec![
            attribute_ints("dilations", &attrs.dilation),
            attribute_int("group", attrs.groups as i64),
            attribute_ints("kernel_shape", &attrs.kernel),
            attribute_ints("output_padding", &attrs.output_padding),
            attribute_ints("pads", &pads),
            attribute_ints("strides", &attrs.stride),
        ],
    )
}

/// `Resize` by `sizes` when the scale is the ratio of the sizes (as ONNX then computes it), by
/// `scales` otherwise.
fn resize(
    exporter: &mut Exporter<'_>,
    input: Value,
    input_shape: &[usize],
    options: &Resize2dOptions,
) -> String {
    let x = exporter.value(input);
    let ratio = |axis: usize| options.output_size[axis] as f32 / input_shape[2 + axis] as f32;
    let by_sizes = (0..2).all(|axis| options.scale[axis] == ratio(axis));
    let empty = String::new();
    let target = if by_sizes {
        let sizes = [
            input_shape[0],
            input_shape[1],
            options.output_size[0],
            options.output_size[1],
        ];
        exporter.constant_i64("sizes", &to_i64(&sizes))
    } else {
        exporter.constant_f32(
            "scales",
            &[4],
            &[1.0, 1.0, options.scale[0], options.scale[1]],
        )
    };
    let operands: Vec<&str> = if by_sizes {
        vec![&x, &empty, &empty, &target]
    } else {
        vec![&x, &empty, &target]
    };
    let mode = match options.mode {
        ResizeMode::Nearest => "nearest",
        ResizeMode::Linear => "linear",
    };
    let mut attributes = vec![
        attribute_string("coordinate_transformation_mode", options.coordinates.name()),
        attribute_string("mode", mode),
    ];
    if options.mode == ResizeMode::Nearest {
        attributes.push(attribute_string("nearest_mode", options.nearest.name()));
    }
    exporter.node("Resize", &operands, attributes)
}

fn pool(
    exporter: &mut Exporter<'_>,
    input: Value,
    op_type: &str,
    attrs: &PoolAttrs,
) -> Result<String, String> {
    let x = exporter.value(input);
    pool_of(exporter, x, op_type, attrs)
}

/// [`pool`] of the ONNX value named `x`.
fn pool_of(
    exporter: &mut Exporter<'_>,
    x: String,
    op_type: &str,
    attrs: &PoolAttrs,
) -> Result<String, String> {
    if attrs.channels_last {
        return Err(channels_last_error());
    }
    let pads: Vec<usize> = attrs
        .padding
        .iter()
        .chain(&attrs.padding)
        .copied()
        .collect();
    let mut attributes = vec![
        attribute_int("ceil_mode", i64::from(attrs.ceil_mode)),
        attribute_ints("kernel_shape", &attrs.kernel),
        attribute_ints("pads", &pads),
        attribute_ints("strides", &attrs.stride),
    ];
    if op_type == "MaxPool" {
        attributes.push(attribute_ints("dilations", &attrs.dilation));
    } else {
        if attrs.dilation.iter().any(|&dilation| dilation != 1) {
            return Err(
                "a dilated average pooling (AveragePool has dilations from opset 19)".into(),
            );
        }
        attributes.push(attribute_int(
            "count_include_pad",
            i64::from(attrs.count_include_pad),
        ));
    }
    Ok(exporter.node(op_type, &[&x], attributes))
}

/// Rotary embedding of `x [batch, seq, heads * head_dim]` with positions `0..seq`: each head's
/// pairs `(a, b)` become `(a cos - b sin, b cos + a sin)`, written as `x·cos + rotate(x)·sin`
/// where `rotate` moves `-b` to `a`'s place and `a` to `b`'s.
fn rope(
    exporter: &mut Exporter<'_>,
    input: Value,
    heads: usize,
    theta: f32,
    interleaved: bool,
) -> Result<String, String> {
    let shape = exporter.graph.ty(input).shape.clone();
    let &[batch, seq, width] = shape.as_slice() else {
        return Err(format!(
            "a rope over a rank-{} input (the exporter takes [batch, seq, heads * head_dim])",
            shape.len()
        ));
    };
    let head_dim = width / heads.max(1);
    let half = head_dim / 2;
    // The runtime's table (`nnc_runtime::kernels::rope::RopeTable`), computed the same way in f32.
    let inverse_frequencies: Vec<f32> = (0..half)
        .map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32))
        .collect();
    let mut cosines = Vec::with_capacity(seq * half);
    let mut sines = Vec::with_capacity(seq * half);
    for position in 0..seq {
        for &inverse_frequency in &inverse_frequencies {
            let angle = position as f32 * inverse_frequency;
            cosines.push(angle.cos());
            sines.push(angle.sin());
        }
    }
    let x = exporter.value(input);
    let (split_shape, table_shape, axis, cosines, sines) = if interleaved {
        // Pairs are adjacent: [.., half, 2], the table broadcast over the pair.
        (
            vec![batch, seq, heads, half, 2],
            vec![seq, 1, half, 1],
            4,
            cosines,
            sines,
        )
    } else {
        // Pairs are the two halves of the head: the table repeated over both halves.
        let repeat = |table: &[f32]| -> Vec<f32> {
            table
                .chunks(half.max(1))
                .flat_map(|row| row.iter().chain(row).copied())
                .collect()
        };
        (
            vec![batch, seq, heads, head_dim],
            vec![seq, 1, head_dim],
            3,
            repeat(&cosines),
            repeat(&sines),
        )
    };
    let split_target = exporter.constant_i64("shape", &to_i64(&split_shape));
    let split = exporter.node("Reshape", &[&x, &split_target], vec![]);
    let (first_end, second_end) = if interleaved {
        (1, 2)
    } else {
        (half, head_dim)
    };
    let first = slice(exporter, &split, axis, 0, first_end);
    let second = slice(exporter, &split, axis, first_end, second_end);
    let negated = exporter.node("Neg", &[&second], vec![]);
    let rotated = exporter.node(
        "Concat",
        &[&negated, &first],
        vec![attribute_int("axis", axis as i64)],
    );
    let cos = exporter.constant_f32("rope_cos", &table_shape, &cosines);
    let sin = exporter.constant_f32("rope_sin", &table_shape, &sines);
    let x_cos = exporter.node("Mul", &[&split, &cos], vec![]);
    let rotated_sin = exporter.node("Mul", &[&rotated, &sin], vec![]);
    let sum = exporter.node("Add", &[&x_cos, &rotated_sin], vec![]);
    let target = exporter.constant_i64("shape", &to_i64(&shape));
    Ok(exporter.node("Reshape", &[&sum, &target], vec![]))
}

/// Scaled dot-product attention, decomposed: heads split with `Reshape`/`Transpose`, key/value
/// heads repeated for grouped queries (`Expand`), `MatMul`, `Mul` by the scale, `Add` of the
/// masks (causal and sparse patterns as one constant `[queries, keys]` initializer, the key
/// padding mask computed from its input), `Softmax`, `MatMul`, heads merged. A query that may see
/// no key gets zeros, as nnc's kernels give: its probabilities are multiplied by the keep mask.
fn attention(
    exporter: &mut Exporter<'_>,
    inputs: &[Value],
    attrs: &AttentionAttrs,
) -> Result<String, String> {
    if let Some(context) = attrs.kv_cache {
        return Err(format!(
            "an attention with a KV cache (kv_cache = {context}): ONNX opset 17 has no state \
             between runs; export the network without `kv_cache` for the full-sequence forward pass"
        ));
    }
    let graph = exporter.graph;
    let q_shape = graph.ty(inputs[0]).shape.clone();
    let k_shape = graph.ty(inputs[1]).shape.clone();
    let (&[batch, queries, _], &[_, keys, _]) = (q_shape.as_slice(), k_shape.as_slice()) else {
        return Err("an attention whose inputs are not [batch, seq, heads * head_dim]".into());
    };
    let (heads, kv_heads, head_dim) = (attrs.heads, attrs.kv_heads, attrs.head_dim);
    if kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
        return Err(format!(
            "{heads} query heads cannot share {kv_heads} key/value heads"
        ));
    }
    let group = heads / kv_heads;
    let (q, k, v) = (
        exporter.value(inputs[0]),
        exporter.value(inputs[1]),
        exporter.value(inputs[2]),
    );
    let split =
        |exporter: &mut Exporter<'_>, x: &str, rows: usize, n_heads: usize, perm: &[usize]| {
            let target = exporter.constant_i64("shape", &to_i64(&[batch, rows, n_heads, head_dim]));
            let heads_split = exporter.node("Reshape", &[x, &target], vec![]);
            exporter.node(
                "Transpose",
                &[&heads_split],
                vec![attribute_ints("perm", perm)],
            )
        };
    // Repeats each key/value head `group` times along axis 1, as the kernels share them.
    let repeat = |exporter: &mut Exporter<'_>, x: String, inner: [usize; 2]| {
        if group == 1 {
            return x;
        }
        let grouped =
            exporter.constant_i64("shape", &to_i64(&[batch, kv_heads, 1, inner[0], inner[1]]));
        let grouped = exporter.node("Reshape", &[&x, &grouped], vec![]);
        let expanded = exporter.constant_i64(
            "shape",
            &to_i64(&[batch, kv_heads, group, inner[0], inner[1]]),
        );
        let expanded = exporter.node("Expand", &[&grouped, &expanded], vec![]);
        let merged = exporter.constant_i64("shape", &to_i64(&[batch, heads, inner[0], inner[1]]));
        exporter.node("Reshape", &[&expanded, &merged], vec![])
    };
    let q4 = split(exporter, &q, queries, heads, &[0, 2, 1, 3]);
    let k_t = split(exporter, &k, keys, kv_heads, &[0, 2, 3, 1]);
    let k_t = repeat(exporter, k_t, [head_dim, keys]);
    let v4 = split(exporter, &v, keys, kv_heads, &[0, 2, 1, 3]);
    let v4 = repeat(exporter, v4, [keys, head_dim]);
    let mut scores = exporter.node("MatMul", &[&q4, &k_t], vec![]);
    if attrs.scale != 1.0 {
        let scale = exporter.scalar_f32("scale", attrs.scale);
        scores = exporter.node("Mul", &[&scores, &scale], vec![]);
    }
    // The constant part of the mask: causal and the sparse pattern.
    let constant_mask = (attrs.causal || !attrs.pattern.is_dense()).then(|| {
        let mut mask = vec![0.0f32; queries * keys];
        let mut row_empty = false;
        for query in 0..queries {
            let mut any = false;
            for key in 0..keys {
                let allowed = (!attrs.causal || key <= query)
                    && (attrs.pattern.is_dense() || attrs.pattern.allows(query, key));
                if allowed {
                    any = true;
                } else {
                    mask[query * keys + key] = MASKED;
                }
            }
            row_empty |= !any;
        }
        let what = if attrs.causal && attrs.pattern.is_dense() {
            "causal_mask"
        } else {
            "attention_mask"
        };
        (
            exporter.constant_f32(what, &[queries, keys], &mask),
            row_empty,
        )
    });
    let padding_mask = attrs.key_padding_mask.then(|| {
        // `[batch, keys]`, nonzero keeps: MASKED where it is 0, as `[batch, 1, 1, keys]`.
        let mask = exporter.value(inputs[3]);
        let zero = match graph.ty(inputs[3]).dtype {
            DType::I64 => exporter.constant("zero", super::tensor_i64(&[], &[0])),
            DType::F32 => exporter.scalar_f32("zero", 0.0),
        };
        let padded = exporter.node("Equal", &[&mask, &zero], vec![]);
        let masked = exporter.scalar_f32("masked", MASKED);
        let kept = exporter.scalar_f32("zero", 0.0);
        let additive = exporter.node("Where", &[&padded, &masked, &kept], vec![]);
        let target = exporter.constant_i64("shape", &to_i64(&[batch, 1, 1, keys]));
        exporter.node("Reshape", &[&additive, &target], vec![])
    });
    let (additive, may_mask_a_row) = match (constant_mask, padding_mask) {
        (None, None) => (None, false),
        (Some((mask, row_empty)), None) => (Some(mask), row_empty),
        (None, Some(padding)) => (Some(padding), true),
        // Min, not Add: two MASKED would sum to -inf.
        (Some((mask, _)), Some(padding)) => {
            (Some(exporter.node("Min", &[&mask, &padding], vec![])), true)
        }
    };
    if let Some(additive) = &additive {
        scores = exporter.node("Add", &[&scores, additive], vec![]);
    }
    let mut probabilities = exporter.node("Softmax", &[&scores], vec![attribute_int("axis", -1)]);
    if let (Some(additive), true) = (&additive, may_mask_a_row) {
        // Where every key is masked the softmax is uniform; nnc gives zeros there.
        let zero = exporter.scalar_f32("zero", 0.0);
        let kept = exporter.node("Equal", &[additive, &zero], vec![]);
        let kept = exporter.node(
            "Cast",
            &[&kept],
            vec![attribute_int("to", super::DataType::Float as i64)],
        );
        probabilities = exporter.node("Mul", &[&probabilities, &kept], vec![]);
    }
    let context = exporter.node("MatMul", &[&probabilities, &v4], vec![]);
    let merged = exporter.node(
        "Transpose",
        &[&context],
        vec![attribute_ints("perm", &[0, 2, 1, 3])],
    );
    let target = exporter.constant_i64("shape", &to_i64(&[batch, queries, heads * head_dim]));
    Ok(exporter.node("Reshape", &[&merged, &target], vec![]))
}
