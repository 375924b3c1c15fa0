//! Shape inference: the output types of an op, given its input types.
//!
//! This is the single definition of every op's typing rule. Lowering calls it to type each node it
//! creates, and the verifier calls it again to check that a pass kept the graph well typed. Errors
//! say which input or attribute is at fault, so the front end can point at the right argument.

use super::op::{
    AttentionAttrs, ConvAttrs, ConvTransposeAttrs, Epilogue, Op, PadMode, PoolAttrs,
    Resize2dOptions,
};
use super::types::{DType, TensorType, format_shape};

/// Why an op cannot be applied to inputs of the given types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapeError {
    pub message: String,
    pub hint: Option<String>,
    pub culprit: Culprit,
}

/// The part of a call that a [`ShapeError`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Culprit {
    /// The op as a whole.
    Op,
    /// The `n`-th input.
    Input(usize),
    /// The attribute (keyword argument) with this name.
    Attr(&'static str),
}

impl ShapeError {
    /// An error about `culprit`.
    pub fn new(culprit: Culprit, message: impl Into<String>) -> Self {
        ShapeError {
            message: message.into(),
            hint: None,
            culprit,
        }
    }

    /// Adds a hint on how to fix it.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

type Result<T> = std::result::Result<T, ShapeError>;

/// The output types of `op` applied to inputs of types `inputs`.
pub fn infer(op: &Op, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
    let output = match op {
        Op::Linear { bias, epilogue } => linear(*bias, epilogue, inputs)?,
        Op::MatMul => matmul(inputs)?,
        Op::Conv(conv) => convolution(conv, inputs)?,
        Op::ConvTranspose(conv) => transposed_convolution(conv, inputs)?,
        Op::Resize(options) => resize(options, inputs)?,
        Op::Pad {
            before,
            after,
            mode,
            ..
        } => pad(before, after, *mode, inputs)?,
        Op::MaxPool(pool) | Op::AvgPool(pool) => pooling(pool, inputs)?,
        Op::GlobalAvgPool { channels_last } | Op::GlobalMaxPool { channels_last } => {
            arity(inputs, 1)?;
            let x = float_input(inputs, 0)?;
            if *channels_last {
                // [n, h, w, c] -> [n, c, 1, 1], the same memory as [n, 1, 1, c].
                if x.rank() != 4 {
                    return Err(rank_error(0, "4 (batch, height, width, channels)", x));
                }
                make(DType::F32, vec![x.shape[0], x.shape[3], 1, 1])?
            } else {
                if x.rank() < 3 {
                    return Err(rank_error(0, "at least 3 (batch, channels, spatial..)", x));
                }
                let mut shape = x.shape.clone();
                shape[2..].iter_mut().for_each(|dim| *dim = 1);
                make(DType::F32, shape)?
            }
        }
        Op::BatchNorm { .. } => {
            arity(inputs, 5)?;
            let x = float_input(inputs, 0)?;
            if x.rank() < 2 {
                return Err(rank_error(0, "at least 2 (batch, channels, ..)", x));
            }
            for position in 1..5 {
                expect_shape(inputs, position, &[x.shape[1]], "one entry per channel")?;
            }
            x.clone()
        }
        Op::LayerNorm { affine, .. } => {
            arity(inputs, if *affine { 3 } else { 1 })?;
            let x = float_input(inputs, 0)?;
            let last = last_dim(x, 0)?;
            for position in 1..inputs.len() {
                expect_shape(inputs, position, &[last], "one entry per feature")?;
            }
            x.clone()
        }
        Op::RmsNorm { affine, .. } => {
            arity(inputs, if *affine { 2 } else { 1 })?;
            let x = float_input(inputs, 0)?;
            let last = last_dim(x, 0)?;
            for position in 1..inputs.len() {
                expect_shape(inputs, position, &[last], "one entry per feature")?;
            }
            x.clone()
        }
        Op::Embedding => {
            arity(inputs, 2)?;
            let ids = inputs[0];
            if ids.dtype != DType::I64 {
                return Err(ShapeError::new(
                    Culprit::Input(0),
                    format!("embedding looks up integer ids, but got {ids}"),
                )
                .with_hint("declare the input as `i64[..]`"));
            }
            let weight = float_input(inputs, 1)?;
            if weight.rank() != 2 {
                return Err(rank_error(1, "2 (num_embeddings, dim)", weight));
            }
            let mut shape = ids.shape.clone();
            shape.push(weight.shape[1]);
            make(DType::F32, shape)?
        }
        Op::PositionEmbedding => {
            arity(inputs, 2)?;
            let x = inputs[0];
            if x.rank() < 2 {
                return Err(rank_error(0, "at least 2 (batch, seq, ..)", x));
            }
            let weight = float_input(inputs, 1)?;
            if weight.rank() != 2 {
                return Err(rank_error(1, "2 (max_positions, dim)", weight));
            }
            let seq = x.shape[1];
            if seq > weight.shape[0] {
                return Err(ShapeError::new(
                    Culprit::Attr("max_positions"),
                    format!(
                        "the sequence has {seq} positions but the table only {}",
                        weight.shape[0]
                    ),
                )
                .with_hint("raise `max_positions` or shorten the sequence"));
            }
            make(DType::F32, vec![1, seq, weight.shape[1]])?
        }
        Op::Rope { heads, .. } => {
            arity(inputs, 1)?;
            let x = float_input(inputs, 0)?;
            if x.rank() != 3 {
                return Err(rank_error(0, "3 (batch, seq, heads * head_dim)", x));
            }
            let width = x.shape[2];
            if *heads == 0 || width % heads != 0 {
                return Err(ShapeError::new(
                    Culprit::Attr("heads"),
                    format!("heads = {heads} does not divide the feature size {width}"),
                ));
            }
            if (width / heads) % 2 != 0 {
                return Err(ShapeError::new(
                    Culprit::Attr("heads"),
                    format!(
                        "rotary embedding needs an even head size, but it is {}",
                        width / heads
                    ),
                ));
            }
            x.clone()
        }
        Op::Attention(attention) => attention_output(attention, inputs)?,
        Op::Activation(_) | Op::Affine { .. } | Op::ElementwiseChain(_) => {
            arity(inputs, 1)?;
            float_input(inputs, 0)?.clone()
        }
        Op::Softmax { axis } | Op::LogSoftmax { axis } => {
            arity(inputs, 1)?;
            let x = float_input(inputs, 0)?;
            check_axis(*axis, x, "dim")?;
            x.clone()
        }
        Op::Reduce { axes, keepdims, .. } => {
            arity(inputs, 1)?;
            let x = float_input(inputs, 0)?;
            make(DType::F32, reduced_shape(x, axes, *keepdims)?)?
        }
        Op::Binary(op) => {
            arity(inputs, 2)?;
            let a = float_input(inputs, 0)?;
            let b = float_input(inputs, 1)?;
            let shape = broadcast(&a.shape, &b.shape).ok_or_else(|| {
                ShapeError::new(
                    Culprit::Op,
                    format!(
                        "cannot {} tensors of shapes {} and {}",
                        op.name(),
                        format_shape(&a.shape),
                        format_shape(&b.shape)
                    ),
                )
                .with_hint("shapes broadcast when, aligned from the right, each pair of sizes is equal or one of them is 1")
            })?;
            make(DType::F32, shape)?
        }
        Op::Reshape { shape } => {
            arity(inputs, 1)?;
            let x = inputs[0];
            let target = make(x.dtype, shape.clone())?;
            if target.element_count() != x.element_count() {
                return Err(ShapeError::new(
                    Culprit::Attr("shape"),
                    format!(
                        "cannot reshape {} ({} elements) to {} ({} elements)",
                        format_shape(&x.shape),
                        x.element_count(),
                        format_shape(shape),
                        target.element_count()
                    ),
                ));
            }
            target
        }
        Op::Transpose { perm } => {
            arity(inputs, 1)?;
            let x = inputs[0];
            let mut seen = vec![false; x.rank()];
            let valid = perm.len() == x.rank()
                && perm
                    .iter()
                    .all(|&axis| axis < x.rank() && !std::mem::replace(&mut seen[axis], true));
            if !valid {
                return Err(ShapeError::new(
                    Culprit::Attr("dims"),
                    format!(
                        "{perm:?} is not a permutation of the {} axes of {x}",
                        x.rank()
                    ),
                ));
            }
            make(x.dtype, perm.iter().map(|&axis| x.shape[axis]).collect())?
        }
        Op::Concat { axis } => {
            if inputs.is_empty() {
                return Err(ShapeError::new(
                    Culprit::Op,
                    "concat needs at least one tensor",
                ));
            }
            let first = inputs[0];
            check_axis(*axis, first, "dim")?;
            let mut shape = first.shape.clone();
            for (position, other) in inputs.iter().enumerate().skip(1) {
                let compatible = other.dtype == first.dtype
                    && other.rank() == first.rank()
                    && (0..first.rank()).all(|i| i == *axis || other.shape[i] == first.shape[i]);
                if !compatible {
                    return Err(ShapeError::new(
                        Culprit::Input(position),
                        format!("cannot concatenate {other} to {first} along dim {axis}"),
                    )
                    .with_hint("all sizes except the one of the joined dim must agree"));
                }
                shape[*axis] = shape[*axis]
                    .checked_add(other.shape[*axis])
                    .ok_or_else(|| {
                        ShapeError::new(Culprit::Op, "the concatenated size does not fit in memory")
                    })?;
            }
            make(first.dtype, shape)?
        }
        Op::Slice { axis, start, end } => {
            arity(inputs, 1)?;
            let x = inputs[0];
            check_axis(*axis, x, "dim")?;
            if start >= end || *end > x.shape[*axis] {
                return Err(ShapeError::new(
                    Culprit::Op,
                    format!(
                        "slice {start}..{end} is empty or outside dim {axis} of size {}",
                        x.shape[*axis]
                    ),
                ));
            }
            let mut shape = x.shape.clone();
            shape[*axis] = end - start;
            make(x.dtype, shape)?
        }
        Op::Select { axis, index } => {
            arity(inputs, 1)?;
            let x = inputs[0];
            check_axis(*axis, x, "dim")?;
            if *index >= x.shape[*axis] {
                return Err(ShapeError::new(
                    Culprit::Attr("index"),
                    format!(
                        "index {index} is outside dim {axis} of size {}",
                        x.shape[*axis]
                    ),
                ));
            }
            let mut shape = x.shape.clone();
            shape.remove(*axis);
            if shape.is_empty() {
                shape.push(1);
            }
            make(x.dtype, shape)?
        }
    };
    Ok(vec![output])
}

/// A 2-D transposed convolution: `x [n, c, h, w]`, `weight [c, out / groups, kh, kw]`, then
/// `bias [out]`.
fn transposed_convolution(conv: &ConvTransposeAttrs, inputs: &[&TensorType]) -> Result<TensorType> {
    arity(inputs, if conv.bias { 3 } else { 2 })?;
    let x = float_input(inputs, 0)?;
    if x.rank() != 4 {
        return Err(rank_error(0, "4 (batch, channels, height, width)", x));
    }
    let geometry = [
        &conv.kernel,
        &conv.stride,
        &conv.padding,
        &conv.output_padding,
        &conv.dilation,
    ];
    if geometry.iter().any(|values| values.len() != 2) {
        return Err(ShapeError::new(
            Culprit::Op,
            "conv_transpose2d takes two values per attribute",
        ));
    }
    let in_channels = x.shape[1];
    let weight = float_input(inputs, 1)?;
    if conv.groups == 0 || in_channels % conv.groups != 0 {
        return Err(ShapeError::new(
            Culprit::Attr("groups"),
            format!(
                "groups = {} does not divide in_channels = {in_channels}",
                conv.groups
            ),
        ));
    }
    let out_per_group = weight.shape.get(1).copied().unwrap_or(0);
    expect_shape(
        inputs,
        1,
        &[in_channels, out_per_group, conv.kernel[0], conv.kernel[1]],
        "[in_channels, out_channels / groups, kernel_h, kernel_w]",
    )?;
    let out_channels = out_per_group * conv.groups;
    if conv.bias {
        expect_shape(inputs, 2, &[out_channels], "one entry per output channel")?;
    }
    if conv.stride.contains(&0) || conv.dilation.contains(&0) || conv.kernel.contains(&0) {
        return Err(ShapeError::new(
            Culprit::Op,
            "kernel, stride and dilation must be positive",
        ));
    }
    for axis in 0..2 {
        if conv.output_padding[axis] >= conv.stride[axis].max(conv.dilation[axis]) {
            return Err(ShapeError::new(
                Culprit::Attr("output_padding"),
                format!(
                    "output_padding = {:?} must be smaller than the stride or the dilation",
                    conv.output_padding
                ),
            ));
        }
    }
    let options = nnc_ops::ConvTranspose2dOptions {
        stride: [conv.stride[0], conv.stride[1]],
        padding: [conv.padding[0], conv.padding[1]],
        output_padding: [conv.output_padding[0], conv.output_padding[1]],
        dilation: [conv.dilation[0], conv.dilation[1]],
        groups: conv.groups,
    };
    let mut shape = vec![x.shape[0], out_channels];
    for axis in 0..2 {
        let size = options
            .output_size(axis, x.shape[2 + axis], conv.kernel[axis])
            .ok_or_else(|| {
                ShapeError::new(
                    Culprit::Attr("padding"),
                    format!("padding = {:?} leaves no output of {x}", conv.padding),
                )
            })?;
        shape.push(size);
    }
    make(DType::F32, shape)
}

/// A 2-D resize of `x [n, c, h, w]` to `[n, c, output_size..]`.
fn resize(options: &Resize2dOptions, inputs: &[&TensorType]) -> Result<TensorType> {
    arity(inputs, 1)?;
    let x = float_input(inputs, 0)?;
    if x.rank() != 4 {
        return Err(rank_error(0, "4 (batch, channels, height, width)", x));
    }
    if options.output_size.contains(&0) || x.shape[2..].contains(&0) {
        return Err(ShapeError::new(
            Culprit::Attr("size"),
            "cannot resize from or to an empty image",
        ));
    }
    if options
        .scale
        .iter()
        .any(|scale| !(scale.is_finite() && *scale > 0.0))
    {
        return Err(ShapeError::new(
            Culprit::Attr("scale"),
            format!("scale factors must be positive, not {:?}", options.scale),
        ));
    }
    let [height, width] = options.output_size;
    make(DType::F32, vec![x.shape[0], x.shape[1], height, width])
}

/// Padding each axis of `x` by `before` and `after` elements.
fn pad(
    before: &[usize],
    after: &[usize],
    mode: PadMode,
    inputs: &[&TensorType],
) -> Result<TensorType> {
    arity(inputs, 1)?;
    let x = float_input(inputs, 0)?;
    if before.len() != x.rank() || after.len() != x.rank() {
        return Err(ShapeError::new(
            Culprit::Attr("pads"),
            format!(
                "{} pads before and {} after for the {} axes of {x}",
                before.len(),
                after.len(),
                x.rank()
            ),
        ));
    }
    if mode == PadMode::Reflect
        && (0..x.rank()).any(|axis| before[axis] >= x.shape[axis] || after[axis] >= x.shape[axis])
    {
        return Err(ShapeError::new(
            Culprit::Attr("pads"),
            format!(
                "reflect padding by {before:?} and {after:?} must be smaller than each axis of {x}"
            ),
        )
        .with_hint("reflection does not repeat the edge, so each side pads by at most size - 1"));
    }
    let mut shape = Vec::with_capacity(x.rank());
    for axis in 0..x.rank() {
        let size = x.shape[axis]
            .checked_add(before[axis])
            .and_then(|size| size.checked_add(after[axis]))
            .ok_or_else(|| {
                ShapeError::new(
                    Culprit::Attr("pads"),
                    "the padded size does not fit in memory",
                )
            })?;
        shape.push(size);
    }
    make(DType::F32, shape)
}

/// The output size of a sliding window (convolution or pooling) along one dimension, as PyTorch
/// computes it. `None` when the window does not fit even once.
pub fn window_output_size(
    input: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
    ceil_mode: bool,
) -> Option<usize> {
    let padded = input.checked_add(padding.checked_mul(2)?)?;
    let span = dilation
        .checked_mul(kernel.checked_sub(1)?)?
        .checked_add(1)?;
    let room = padded.checked_sub(span)?;
    let mut output = if ceil_mode {
        room.div_ceil(stride)
    } else {
        room / stride
    } + 1;
    // PyTorch drops a last window that would start in the right padding.
    if ceil_mode && (output - 1) * stride >= input + padding {
        output -= 1;
    }
    Some(output)
}

/// NumPy-style broadcast of two shapes, or `None` when they do not broadcast.
pub fn broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let dim = |shape: &[usize], i: usize| {
        (i + shape.len())
            .checked_sub(rank)
            .map_or(1, |index| shape[index])
    };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

fn linear(bias: bool, epilogue: &Epilogue, inputs: &[&TensorType]) -> Result<TensorType> {
    let weights = if bias { 3 } else { 2 };
    arity(inputs, weights + epilogue_inputs(epilogue))?;
    let x = float_input(inputs, 0)?;
    let in_features = last_dim(x, 0)?;
    let weight = float_input(inputs, 1)?;
    if weight.rank() != 2 {
        return Err(rank_error(1, "2 (out_features, in_features)", weight));
    }
    if weight.shape[1] != in_features {
        return Err(ShapeError::new(
            Culprit::Input(0),
            format!(
                "linear expects last dimension {} but got {in_features}",
                weight.shape[1]
            ),
        )
        .with_hint(format!("the input has shape {}", format_shape(&x.shape))));
    }
    let out_features = weight.shape[0];
    if bias {
        expect_shape(inputs, 2, &[out_features], "one entry per output feature")?;
    }
    for position in weights..weights + batch_norm_inputs(epilogue) {
        expect_shape(
            inputs,
            position,
            &[out_features],
            "one batch-norm entry per output feature",
        )?;
    }
    let mut shape = x.shape.clone();
    *shape.last_mut().expect("rank checked") = out_features;
    check_residual(epilogue, inputs, &shape)?;
    make(DType::F32, shape)
}

fn matmul(inputs: &[&TensorType]) -> Result<TensorType> {
    arity(inputs, 2)?;
    let a = float_input(inputs, 0)?;
    let b = float_input(inputs, 1)?;
    for (position, x) in [(0, a), (1, b)] {
        if x.rank() < 2 {
            return Err(rank_error(position, "at least 2", x));
        }
    }
    let (m, k) = (a.shape[a.rank() - 2], a.shape[a.rank() - 1]);
    let (k2, n) = (b.shape[b.rank() - 2], b.shape[b.rank() - 1]);
    if k != k2 {
        return Err(ShapeError::new(
            Culprit::Op,
            format!(
                "cannot multiply {} by {}: inner sizes {k} and {k2} differ",
                format_shape(&a.shape),
                format_shape(&b.shape)
            ),
        ));
    }
    let mut shape =
        broadcast(&a.shape[..a.rank() - 2], &b.shape[..b.rank() - 2]).ok_or_else(|| {
            ShapeError::new(
                Culprit::Op,
                format!(
                    "batch dims of {} and {} do not broadcast",
                    format_shape(&a.shape),
                    format_shape(&b.shape)
                ),
            )
        })?;
    shape.extend([m, n]);
    make(DType::F32, shape)
}

fn convolution(conv: &ConvAttrs, inputs: &[&TensorType]) -> Result<TensorType> {
    if let Some(depthwise) = &conv.depthwise {
        return depthwise_pointwise(conv, depthwise, inputs);
    }
    if let Some(pointwise) = &conv.pointwise {
        return pointwise_depthwise(conv, pointwise, inputs);
    }
    if let Some(pool) = &conv.max_pool {
        return pooled_convolution(conv, pool, inputs);
    }
    let weights = if conv.bias { 3 } else { 2 };
    arity(inputs, weights + epilogue_inputs(&conv.epilogue))?;
    let spatial = conv.kernel.len();
    let x = float_input(inputs, 0)?;
    if x.rank() != spatial + 2 {
        let expected = if spatial == 1 {
            "3 (batch, channels, length)"
        } else {
            "4 (batch, channels, height, width)"
        };
        return Err(rank_error(0, expected, x));
    }
    if conv.channels_last && spatial != 2 {
        return Err(ShapeError::new(
            Culprit::Attr("layout"),
            "only 2-D convolutions can be channels-last",
        ));
    }
    if conv.nchw_input && !(conv.channels_last && conv.groups == 1) {
        return Err(ShapeError::new(
            Culprit::Attr("layout"),
            "only an ungrouped channels-last convolution can read an NCHW input",
        ));
    }
    // Channels-last images are [n, h, w, c]: the spatial axes start at 1, channels are last.
    let (channel_axis, first_spatial_axis) = if conv.channels_last && !conv.nchw_input {
        (spatial + 1, 1)
    } else {
        (1, 2)
    };
    let in_channels = x.shape[channel_axis];
    let weight = float_input(inputs, 1)?;
    let out_channels = weight.shape[0];
    check_groups(conv.groups, in_channels, out_channels)?;
    let mut expected_weight = vec![out_channels, in_channels / conv.groups];
    expected_weight.extend(&conv.kernel);
    expect_shape(
        inputs,
        1,
        &expected_weight,
        "[out_channels, in_channels / groups, kernel..]",
    )?;
    if conv.bias {
        expect_shape(inputs, 2, &[out_channels], "one entry per output channel")?;
    }
    for position in weights..weights + batch_norm_inputs(&conv.epilogue) {
        expect_shape(
            inputs,
            position,
            &[out_channels],
            "one batch-norm entry per output channel",
        )?;
    }
    if conv.channels_last
        && conv.groups != 1
        && !(conv.groups == in_channels && conv.groups == out_channels)
    {
        return Err(ShapeError::new(
            Culprit::Attr("groups"),
            format!(
                "a channels-last convolution is depthwise or ungrouped, not groups = {}",
                conv.groups
            ),
        ));
    }
    let mut shape = vec![x.shape[0]];
    if !conv.channels_last {
        shape.push(out_channels);
    }
    for axis in 0..spatial {
        shape.push(sliding_window(
            x.shape[first_spatial_axis + axis],
            conv.kernel[axis],
            conv.stride[axis],
            conv.padding[axis],
            conv.dilation[axis],
            false,
        )?);
    }
    if conv.channels_last {
        shape.push(out_channels);
    }
    check_residual(&conv.epilogue, inputs, &shape)?;
    make(DType::F32, shape)
}

/// A depthwise convolution that runs the 1×1 `pointwise` one it reads (`ConvAttrs::pointwise`):
/// the pointwise layer's output type from `x` and its weights (after the depthwise layer's own),
/// then the depthwise layer's from that.
fn pointwise_depthwise(
    conv: &ConvAttrs,
    pointwise: &ConvAttrs,
    inputs: &[&TensorType],
) -> Result<TensorType> {
    let own = 1 + conv.weight_inputs();
    let pointwise_end = own + pointwise.weight_inputs();
    arity(inputs, pointwise_end)?;
    if !pointwise.fuses_into_depthwise()
        || !conv.channels_last
        || conv.nchw_input
        || conv.epilogue.residual
    {
        return Err(ShapeError::new(
            Culprit::Attr("pointwise"),
            "a fused pointwise layer is a channels-last 1x1 convolution with unit stride, no \
             padding, no groups and no residual, read by a channels-last convolution without a \
             residual",
        ));
    }
    let mut pointwise_inputs = vec![inputs[0]];
    pointwise_inputs.extend(&inputs[own..pointwise_end]);
    let wide = convolution(pointwise, &pointwise_inputs)?;
    let mut depthwise_inputs = vec![&wide];
    depthwise_inputs.extend(&inputs[1..own]);
    let depthwise = ConvAttrs {
        pointwise: None,
        ..conv.clone()
    };
    let output = convolution(&depthwise, &depthwise_inputs)?;
    if conv.groups < 2 || conv.groups != wide.shape[3] {
        return Err(ShapeError::new(
            Culprit::Attr("pointwise"),
            "a fused pointwise layer is read by a depthwise convolution",
        ));
    }
    Ok(output)
}

/// A 1×1 convolution that runs the depthwise one it reads (`ConvAttrs::depthwise`): the
/// depthwise layer's output type from `x` and its weights (after this layer's own, with its
/// expansion's), then this layer's from that and its own weights and residual.
fn depthwise_pointwise(
    conv: &ConvAttrs,
    depthwise: &ConvAttrs,
    inputs: &[&TensorType],
) -> Result<TensorType> {
    let own = 1 + conv.weight_inputs();
    arity(
        inputs,
        own + depthwise.layer_weight_inputs() + usize::from(conv.epilogue.residual),
    )?;
    let outer = ConvAttrs {
        depthwise: None,
        ..conv.clone()
    };
    let depthwise_inputs = conv.depthwise_inputs(inputs);
    if !outer.takes_depthwise() || !depthwise.fuses_into_pointwise(&depthwise_inputs[1].shape) {
        return Err(ShapeError::new(
            Culprit::Attr("depthwise"),
            "a fused depthwise layer is a 2-D channels-last depthwise convolution without a \
             residual, read by a channels-last 1x1 convolution with unit stride, no padding and \
             no groups",
        ));
    }
    let middle = convolution(depthwise, &depthwise_inputs)?;
    let mut outer_inputs = vec![&middle];
    outer_inputs.extend(&inputs[1..own]);
    if conv.epilogue.residual {
        outer_inputs.push(inputs[inputs.len() - 1]);
    }
    convolution(&outer, &outer_inputs)
}

/// A convolution whose output is max pooled inside it (`ConvAttrs::max_pool`): the pooling of
/// the convolution's output type.
fn pooled_convolution(
    conv: &ConvAttrs,
    pool: &PoolAttrs,
    inputs: &[&TensorType],
) -> Result<TensorType> {
    let unpooled = ConvAttrs {
        max_pool: None,
        ..conv.clone()
    };
    if !unpooled.takes_max_pool() || !pool.fuses_into_conv() {
        return Err(ShapeError::new(
            Culprit::Attr("max_pool"),
            "a fused max pooling is 2-D and NCHW, after a 2-D NCHW convolution without a \
             residual",
        ));
    }
    let output = convolution(&unpooled, inputs)?;
    pooling(pool, &[&output])
}

/// Checks that `groups` divides both channel counts.
pub fn check_groups(groups: usize, in_channels: usize, out_channels: usize) -> Result<()> {
    if groups == 0 || !in_channels.is_multiple_of(groups) {
        return Err(ShapeError::new(
            Culprit::Attr("groups"),
            format!("groups = {groups} does not divide in_channels = {in_channels}"),
        )
        .with_hint("for a depthwise convolution, set `groups` to the number of input channels"));
    }
    if !out_channels.is_multiple_of(groups) {
        return Err(ShapeError::new(
            Culprit::Attr("groups"),
            format!("groups = {groups} does not divide out_channels = {out_channels}"),
        ));
    }
    Ok(())
}

fn pooling(pool: &PoolAttrs, inputs: &[&TensorType]) -> Result<TensorType> {
    arity(inputs, 1)?;
    let spatial = pool.kernel.len();
    let x = float_input(inputs, 0)?;
    if x.rank() != spatial + 2 {
        let expected = if spatial == 1 {
            "3 (batch, channels, length)"
        } else {
            "4 (batch, channels, height, width)"
        };
        return Err(rank_error(0, expected, x));
    }
    if pool.channels_last && spatial != 2 {
        return Err(ShapeError::new(
            Culprit::Attr("layout"),
            "only 2-D pooling can be channels-last",
        ));
    }
    // The spatial axes follow the batch in channels-last images, the channels otherwise.
    let first_spatial_axis = if pool.channels_last { 1 } else { 2 };
    let mut shape = x.shape[..2].to_vec();
    if pool.channels_last {
        shape.truncate(1);
    }
    for axis in 0..spatial {
        if pool.padding[axis] > pool.kernel[axis] / 2 {
            return Err(ShapeError::new(
                Culprit::Attr("padding"),
                format!(
                    "padding {} is more than half the kernel size {}",
                    pool.padding[axis], pool.kernel[axis]
                ),
            )
            .with_hint("PyTorch allows at most kernel / 2 of padding when pooling"));
        }
        shape.push(sliding_window(
            x.shape[first_spatial_axis + axis],
            pool.kernel[axis],
            pool.stride[axis],
            pool.padding[axis],
            pool.dilation[axis],
            pool.ceil_mode,
        )?);
    }
    if pool.channels_last {
        shape.push(x.shape[3]);
    }
    make(DType::F32, shape)
}

fn sliding_window(
    input: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
    ceil_mode: bool,
) -> Result<usize> {
    for (name, value) in [
        ("kernel", kernel),
        ("stride", stride),
        ("dilation", dilation),
    ] {
        if value == 0 {
            return Err(ShapeError::new(
                Culprit::Attr(name),
                format!("{name} must be at least 1"),
            ));
        }
    }
    window_output_size(input, kernel, stride, padding, dilation, ceil_mode).ok_or_else(|| {
        ShapeError::new(
            Culprit::Attr("kernel"),
            format!(
                "the window (kernel {kernel}, dilation {dilation}) is larger than the padded input ({input} + 2 × {padding})"
            ),
        )
        .with_hint("use a smaller kernel, more padding, or a larger input")
    })
}

fn attention_output(attention: &AttentionAttrs, inputs: &[&TensorType]) -> Result<TensorType> {
    arity(inputs, if attention.key_padding_mask { 4 } else { 3 })?;
    let AttentionAttrs {
        heads,
        kv_heads,
        head_dim,
        ..
    } = *attention;
    if kv_heads == 0 || heads % kv_heads != 0 {
        return Err(ShapeError::new(
            Culprit::Attr("kv_heads"),
            format!("kv_heads = {kv_heads} does not divide heads = {heads}"),
        )
        .with_hint("each key/value head serves the same number of query heads"));
    }
    let q = float_input(inputs, 0)?;
    if q.rank() != 3 {
        return Err(rank_error(0, "3 (batch, seq, heads * head_dim)", q));
    }
    if q.shape[2] != heads * head_dim {
        return Err(ShapeError::new(
            Culprit::Attr("heads"),
            format!(
                "heads = {heads} does not divide the query size {}",
                q.shape[2]
            ),
        ));
    }
    let k = float_input(inputs, 1)?;
    let (batch, keys) = (q.shape[0], k.shape.get(1).copied().unwrap_or(0));
    let kv_shape = [batch, keys, kv_heads * head_dim];
    expect_shape(inputs, 1, &kv_shape, "[batch, keys, kv_heads * head_dim]")?;
    expect_shape(inputs, 2, &kv_shape, "the same shape as the keys")?;
    if attention.key_padding_mask && inputs[3].shape != [batch, keys] {
        return Err(ShapeError::new(
            Culprit::Attr("mask"),
            format!(
                "the key padding mask must have shape {} but has {}",
                format_shape(&[batch, keys]),
                format_shape(&inputs[3].shape)
            ),
        ));
    }
    if attention.causal && q.shape[1] != keys && attention.kv_cache.is_none() {
        return Err(ShapeError::new(
            Culprit::Attr("causal"),
            format!(
                "a causal attention needs as many queries as keys, but has {} and {keys}",
                q.shape[1]
            ),
        ));
    }
    if let Some(block_mask) = &attention.pattern.block_mask {
        let needed = q.shape[1].max(keys).div_ceil(block_mask.block_size);
        if block_mask.blocks_per_row < needed {
            return Err(ShapeError::new(
                Culprit::Attr("block_mask"),
                format!(
                    "the block mask must be at least {needed} × {needed} blocks of {}",
                    block_mask.block_size
                ),
            ));
        }
    }
    Ok(q.clone())
}

/// The inputs an epilogue adds: the four parameters of a folded batch norm, then the residual.
pub fn epilogue_inputs(epilogue: &Epilogue) -> usize {
    batch_norm_inputs(epilogue) + usize::from(epilogue.residual)
}

/// The inputs a folded batch norm adds.
fn batch_norm_inputs(epilogue: &Epilogue) -> usize {
    if epilogue.batch_norm.is_some() { 4 } else { 0 }
}

/// Checks that a residual, if the epilogue has one, is the last input and has the output's type
/// exactly: the kernel adds it element by element, without broadcasting.
fn check_residual(
    epilogue: &Epilogue,
    inputs: &[&TensorType],
    output_shape: &[usize],
) -> Result<()> {
    if !epilogue.residual {
        return Ok(());
    }
    let position = inputs.len() - 1;
    float_input(inputs, position)?;
    expect_shape(
        inputs,
        position,
        output_shape,
        "the residual has the output's shape",
    )
}

fn arity(inputs: &[&TensorType], expected: usize) -> Result<()> {
    if inputs.len() == expected {
        Ok(())
    } else {
        Err(ShapeError::new(
            Culprit::Op,
            format!("expected {expected} inputs, got {}", inputs.len()),
        ))
    }
}

fn float_input<'a>(inputs: &[&'a TensorType], position: usize) -> Result<&'a TensorType> {
    let ty = inputs[position];
    if ty.dtype == DType::F32 {
        Ok(ty)
    } else {
        Err(ShapeError::new(
            Culprit::Input(position),
            format!("expected an f32 tensor, got {ty}"),
        )
        .with_hint("integer tensors can only be looked up with `embedding`"))
    }
}

fn last_dim(x: &TensorType, position: usize) -> Result<usize> {
    x.last_dim()
        .ok_or_else(|| rank_error(position, "at least 1", x))
}

fn expect_shape(
    inputs: &[&TensorType],
    position: usize,
    expected: &[usize],
    what: &str,
) -> Result<()> {
    if inputs[position].shape == expected {
        Ok(())
    } else {
        Err(ShapeError::new(
            Culprit::Input(position),
            format!(
                "expected shape {} ({what}), got {}",
                format_shape(expected),
                format_shape(&inputs[position].shape)
            ),
        ))
    }
}

fn check_axis(axis: usize, x: &TensorType, attr: &'static str) -> Result<()> {
    if axis < x.rank() {
        Ok(())
    } else {
        Err(ShapeError::new(
            Culprit::Attr(attr),
            format!("dim {axis} is out of range for {x}"),
        ))
    }
}

/// The shape of a reduction of `x` over `axes`, which must be in range and increasing (so
/// distinct): the reduced axes as 1 with `keepdims`, dropped without.
fn reduced_shape(x: &TensorType, axes: &[usize], keepdims: bool) -> Result<Vec<usize>> {
    for &axis in axes {
        check_axis(axis, x, "axes")?;
    }
    if let Some(pair) = axes.windows(2).find(|pair| pair[0] >= pair[1]) {
        let problem = if pair[0] == pair[1] {
            format!("axis {} is reduced twice", pair[0])
        } else {
            format!("axes {axes:?} are not in increasing order")
        };
        return Err(ShapeError::new(Culprit::Attr("axes"), problem));
    }
    Ok(nnc_ops::reduce::reduced_shape(&x.shape, axes, keepdims))
}

fn rank_error(position: usize, expected: &str, got: &TensorType) -> ShapeError {
    ShapeError::new(
        Culprit::Input(position),
        format!("expected a tensor of rank {expected}, got {got}"),
    )
}

fn make(dtype: DType, shape: Vec<usize>) -> Result<TensorType> {
    TensorType::new(dtype, shape).map_err(|error| ShapeError::new(Culprit::Op, error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::ReduceOp;

    fn reduce(axes: Vec<usize>, keepdims: bool) -> Op {
        Op::Reduce {
            op: ReduceOp::Sum,
            axes,
            keepdims,
        }
    }

    #[test]
    fn reductions_keep_or_drop_their_axes_and_check_them() {
        let x = TensorType::f32(vec![2, 3, 4]);
        let shape = |op: &Op| infer(op, &[&x]).map(|types| types[0].shape.clone());
        assert_eq!(shape(&reduce(vec![1], true)).unwrap(), [2, 1, 4]);
        assert_eq!(shape(&reduce(vec![0, 2], false)).unwrap(), [3]);
        assert!(shape(&reduce(vec![0, 1, 2], false)).unwrap().is_empty());
        let error = shape(&reduce(vec![3], true)).unwrap_err();
        assert_eq!(error.culprit, Culprit::Attr("axes"));
        assert!(error.message.contains("out of range"), "{}", error.message);
        let error = shape(&reduce(vec![1, 1], true)).unwrap_err();
        assert!(error.message.contains("reduced twice"), "{}", error.message);
        let error = shape(&reduce(vec![2, 0], true)).unwrap_err();
        assert!(error.message.contains("increasing"), "{}", error.message);
        assert!(infer(&Op::LogSoftmax { axis: 3 }, &[&x]).is_err());
    }
}
