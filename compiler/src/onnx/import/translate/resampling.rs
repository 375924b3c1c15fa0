//! `Resize`, `Upsample`, `ConvTranspose` and `Pad` to `upsample`/`resize`,
//! `conv_transpose2d` and `pad`.
//!
//! Resize reads back as PyTorch's `upsample` where its attributes are what `nn.Upsample`
//! exports (nearest: asymmetric and floor; bilinear: half-pixel or align-corners), and as the
//! general `resize` otherwise. Every attribute nnc cannot honour is an error naming it.

use super::{Arg, Cx, NodeError, NodeResult, Translator, attr, call, conv_weights};
use crate::ir::{CoordinateTransform, NearestRounding, PadMode, ResizeMode};
use crate::onnx::import::program::number_literal_is_exact;
use crate::onnx::import::tensor::Constant;

impl Translator<'_> {
    /// `Resize` (opsets 11 to 21, and the scales-only form of opset 10) and `Upsample`.
    pub(super) fn resize(&mut self, cx: &Cx<'_>, op: &str) -> NodeResult {
        let node = cx.node;
        let x = cx.tensor(0)?;
        let input = self.shape(x);
        if input.len() != 4 {
            return Err(format!(
                "{op} of a rank-{} tensor: nnc resizes NCHW images",
                input.len()
            )
            .into());
        }
        let legacy = op == "Upsample" || self.opset < 11;
        let mode = match attr::string(node, "mode").as_deref().unwrap_or("nearest") {
            "nearest" => ResizeMode::Nearest,
            "linear" | "bilinear" => ResizeMode::Linear,
            other => {
                return Err(format!(
                    "attribute mode = {other:?}: nnc resizes by \"nearest\" or \"linear\""
                )
                .into());
            }
        };
        let (coordinates, nearest) = if legacy {
            (CoordinateTransform::Asymmetric, NearestRounding::Floor)
        } else {
            read_resize_attributes(node)?
        };
        // Legacy Upsample and Resize-10 take the scales as input 1, Resize-11+ as input 2.
        let (scales, sizes) = if legacy {
            match attr::floats(node, "scales") {
                Some(scales) => (Some(scales), None),
                None => (Some(cx.constant(1)?.to_f32()), None),
            }
        } else {
            let read = |index: usize| -> Result<Option<std::rc::Rc<Constant>>, NodeError> {
                Ok(cx
                    .optional_constant_named(index)?
                    .map(|(constant, _)| constant)
                    .filter(|c| !c.is_empty()))
            };
            (read(2)?.map(|c| c.to_f32()), read(3)?.map(|c| c.to_i64()))
        };
        let axes = attr::ints(node, "axes");
        let expand = |values: Vec<f64>, fill: f64| -> Result<Vec<f64>, NodeError> {
            match &axes {
                None if values.len() == 4 => Ok(values),
                None => Err(format!("{} scales or sizes for a rank-4 input", values.len()).into()),
                Some(axes) if axes.len() == values.len() => {
                    let mut full = vec![fill; 4];
                    for (&axis, value) in axes.iter().zip(values) {
                        let axis = if axis < 0 { axis + 4 } else { axis };
                        let slot = full
                            .get_mut(axis as usize)
                            .ok_or(format!("attribute axes = {axes:?}"))?;
                        *slot = value;
                    }
                    Ok(full)
                }
                Some(axes) => {
                    Err(format!("attribute axes = {axes:?} for {} values", values.len()).into())
                }
            }
        };
        let (output_size, scale, by_size) = match (scales, sizes) {
            (Some(scales), None) => {
                let full = expand(scales.iter().map(|&s| f64::from(s)).collect(), 1.0)?;
                if full[0] != 1.0 || full[1] != 1.0 {
                    return Err(
                        format!("scales {full:?}: nnc resizes the spatial axes only").into(),
                    );
                }
                if full[2..].iter().any(|&s| !(s > 0.0 && s.is_finite())) {
                    return Err(format!("scales {full:?} must be positive").into());
                }
                let scale = [full[2] as f32, full[3] as f32];
                let size = [0, 1]
                    .map(|axis| (input[2 + axis] as f64 * f64::from(scale[axis])).floor() as usize);
                (size, scale, false)
            }
            (None, Some(sizes)) => {
                let full = expand(sizes.iter().map(|&s| s as f64).collect(), f64::NAN)?;
                let full: Vec<f64> = full
                    .iter()
                    .enumerate()
                    .map(|(axis, &s)| if s.is_nan() { input[axis] as f64 } else { s })
                    .collect();
                if full[0] != input[0] as f64 || full[1] != input[1] as f64 {
                    return Err(format!("sizes {full:?}: nnc resizes the spatial axes only").into());
                }
                if attr::string(node, "keep_aspect_ratio_policy")
                    .is_some_and(|policy| policy != "stretch")
                {
                    return Err(
                        "attribute keep_aspect_ratio_policy: nnc takes \"stretch\" only".into(),
                    );
                }
                let size = [full[2] as usize, full[3] as usize];
                let scale = [0, 1].map(|axis| size[axis] as f32 / input[2 + axis] as f32);
                (size, scale, true)
            }
            (Some(_), Some(_)) => return Err("both scales and sizes given".into()),
            (None, None) => return Err("neither scales nor sizes given".into()),
        };
        if output_size.contains(&0) {
            return Err(format!("a resize of {input:?} to an empty image").into());
        }
        if attr::int(node, "antialias", 0) != 0 && scale.iter().any(|&s| s < 1.0) {
            return Err("attribute antialias = 1 when downsampling: nnc does not filter".into());
        }
        let x_arg = Arg::Value(x);
        let size_arg = Arg::Ints(output_size.iter().map(|&s| s as i64).collect());
        let scale_arg = |name: &'static str| -> Result<Arg, NodeError> {
            if !scale.iter().all(|&s| number_literal_is_exact(s)) {
                return Err(
                    format!("scales {scale:?} that a .nn number cannot write exactly").into(),
                );
            }
            Ok(Arg::keyword(
                name,
                match scale {
                    [a, b] if a == b && a.fract() == 0.0 => Arg::Int(a as i64),
                    [a, b] if a == b => Arg::Float(a),
                    [a, b] => Arg::Floats(vec![a, b]),
                },
            ))
        };
        let sized = |name: &'static str| -> Result<Arg, NodeError> {
            match by_size {
                true => Ok(Arg::keyword("size", size_arg.clone())),
                false => scale_arg(name),
            }
        };
        let expr = match (mode, coordinates, nearest) {
            (ResizeMode::Nearest, CoordinateTransform::Asymmetric, NearestRounding::Floor) => {
                call("upsample", vec![x_arg, sized("scale_factor")?])
            }
            (
                ResizeMode::Linear,
                CoordinateTransform::PytorchHalfPixel | CoordinateTransform::AlignCorners,
                _,
            ) => {
                let mut args = vec![
                    x_arg,
                    sized("scale_factor")?,
                    Arg::keyword("mode", Arg::Str("bilinear")),
                ];
                if coordinates == CoordinateTransform::AlignCorners {
                    args.push(Arg::keyword("align_corners", Arg::Bool(true)));
                }
                call("upsample", args)
            }
            _ => {
                let mut args = vec![x_arg, sized("scale")?];
                if mode == ResizeMode::Linear {
                    args.push(Arg::keyword("mode", Arg::Str("bilinear")));
                }
                if coordinates != CoordinateTransform::HalfPixel {
                    args.push(Arg::keyword("coordinates", Arg::Str(coordinates.name())));
                }
                if mode == ResizeMode::Nearest && nearest != NearestRounding::RoundPreferFloor {
                    args.push(Arg::keyword("nearest", Arg::Str(nearest.name())));
                }
                call("resize", args)
            }
        };
        let shape = vec![input[0], input[1], output_size[0], output_size[1]];
        self.push(cx.output(), expr, None, shape, true);
        Ok(())
    }

    /// `ConvTranspose` of NCHW images, with symmetric pads (or an `output_shape` they follow from).
    pub(super) fn conv_transpose(&mut self, cx: &Cx<'_>) -> NodeResult {
        let node = cx.node;
        let x = cx.tensor(0)?;
        let (weight, weight_name) = cx.constant_named(1)?;
        let bias = cx.optional_constant_named(2)?;
        let input = self.shape(x);
        if input.len() != 4 || weight.shape.len() != 4 {
            return Err(format!(
                "ConvTranspose of a {input:?} input with a {:?} weight: nnc has conv_transpose2d",
                weight.shape
            )
            .into());
        }
        let groups = attr::int(node, "group", 1);
        if groups < 1 || weight.shape[0] != input[1] || !input[1].is_multiple_of(groups as usize) {
            return Err(format!(
                "attribute group = {groups} with input {input:?} and weight {:?}",
                weight.shape
            )
            .into());
        }
        let kernel = [weight.shape[2] as i64, weight.shape[3] as i64];
        if let Some(declared) = attr::ints(node, "kernel_shape")
            && declared != kernel
        {
            return Err(format!(
                "attribute kernel_shape = {declared:?} does not match the weight {:?}",
                weight.shape
            )
            .into());
        }
        let pair = |name: &str, default: i64| -> Result<[i64; 2], NodeError> {
            match attr::ints(node, name) {
                None => Ok([default; 2]),
                Some(values) if values.len() == 2 && values.iter().all(|&v| v >= 0) => {
                    Ok([values[0], values[1]])
                }
                Some(values) => {
                    Err(format!("attribute {name} = {values:?} for 2 spatial axes").into())
                }
            }
        };
        let strides = pair("strides", 1)?;
        let dilations = pair("dilations", 1)?;
        let mut output_padding = pair("output_padding", 0)?;
        if strides.contains(&0) || dilations.contains(&0) {
            return Err(format!(
                "attribute strides = {strides:?} or dilations = {dilations:?} with a zero"
            )
            .into());
        }
        let full = |axis: usize| {
            (input[2 + axis] as i64 - 1) * strides[axis] + dilations[axis] * (kernel[axis] - 1) + 1
        };
        let auto_pad = attr::string(node, "auto_pad").unwrap_or_default();
        let padding: [i64; 2] = if let Some(output_shape) = attr::ints(node, "output_shape") {
            // The pads that give this output: total = full + output_padding - output, split evenly.
            let spatial = &output_shape[output_shape.len().saturating_sub(2)..];
            let mut pads = [0; 2];
            for axis in 0..2 {
                let total =
                    full(axis) + output_padding[axis] - spatial.get(axis).copied().unwrap_or(-1);
                if total < 0 {
                    // A larger output than the full one: ONNX adds output padding.
                    output_padding[axis] -= total;
                } else if total % 2 != 0 {
                    return Err(format!(
                        "attribute output_shape = {output_shape:?} needs asymmetric pads"
                    )
                    .into());
                }
                pads[axis] = total.max(0) / 2;
            }
            pads
        } else {
            match auto_pad.as_str() {
                "" | "NOTSET" | "VALID" => {
                    let pads = if auto_pad == "VALID" {
                        vec![0; 4]
                    } else {
                        attr::ints(node, "pads").unwrap_or_else(|| vec![0; 4])
                    };
                    if pads.len() != 4 || pads.iter().any(|&p| p < 0) || pads[..2] != pads[2..] {
                        return Err(format!(
                            "attribute pads = {pads:?}: nnc pads both sides of an axis alike"
                        )
                        .into());
                    }
                    [pads[0], pads[1]]
                }
                other => return Err(format!("attribute auto_pad = {other:?}").into()),
            }
        };
        let out_channels = weight.shape[1] * groups as usize;
        let output_spatial: Vec<usize> = (0..2)
            .map(|axis| full(axis) + output_padding[axis] - 2 * padding[axis])
            .map(|size| usize::try_from(size).ok().filter(|&s| s > 0))
            .collect::<Option<_>>()
            .ok_or("attribute pads leave no output")?;
        for axis in 0..2 {
            if output_padding[axis] >= strides[axis].max(dilations[axis]) {
                return Err(format!("attribute output_padding = {output_padding:?} must be smaller than the stride or the dilation").into());
            }
        }
        let mut args = vec![
            Arg::Value(x),
            Arg::Int(out_channels as i64),
            Arg::keyword("kernel", Arg::spatial(&kernel)),
        ];
        for (name, values, default) in [
            ("stride", strides, 1),
            ("padding", padding, 0),
            ("output_padding", output_padding, 0),
            ("dilation", dilations, 1),
        ] {
            if values != [default; 2] {
                args.push(Arg::keyword(name, Arg::spatial(&values)));
            }
        }
        let (weights, sources) = conv_weights(
            "ConvTranspose",
            &mut args,
            groups,
            (weight, weight_name),
            bias,
            out_channels,
        )?;
        let layer = self.layer(node, "deconv", weights, sources);
        let mut shape = vec![input[0], out_channels];
        shape.extend(output_spatial);
        self.push(
            cx.output(),
            call("conv_transpose2d", args),
            Some(layer),
            shape,
            true,
        );
        Ok(())
    }

    /// `Pad` (pads as an input from opset 11, as an attribute before), constant, reflect or edge.
    pub(super) fn pad(&mut self, cx: &Cx<'_>) -> NodeResult {
        let node = cx.node;
        let x = cx.tensor(0)?;
        let input = self.shape(x);
        let rank = input.len();
        let mode_name = attr::string(node, "mode").unwrap_or_else(|| "constant".into());
        let mode = PadMode::from_name(&mode_name).ok_or_else(|| {
            format!(
                "attribute mode = {mode_name:?}: nnc pads by \"constant\", \"reflect\" or \"edge\""
            )
        })?;
        let (pads, value) = if self.opset < 11 {
            let pads = attr::ints(node, "pads").ok_or("Pad without pads")?;
            (pads, attr::float(node, "value", 0.0))
        } else {
            let pads = cx.constant(1)?.to_i64();
            let value = match cx.optional_constant_named(2)? {
                Some((value, _)) => value.to_f32().first().copied().unwrap_or(0.0),
                None => 0.0,
            };
            let pads = match cx.optional_constant_named(3)? {
                None => pads,
                Some((axes, _)) => {
                    let axes = axes.to_i64();
                    if pads.len() != 2 * axes.len() {
                        return Err(format!("{} pads for axes {axes:?}", pads.len()).into());
                    }
                    let mut full = vec![0; 2 * rank];
                    for (position, &axis) in axes.iter().enumerate() {
                        let axis = if axis < 0 { axis + rank as i64 } else { axis };
                        if !(0..rank as i64).contains(&axis) {
                            return Err(format!("Pad axes {axes:?} for a rank-{rank} input").into());
                        }
                        full[axis as usize] = pads[position];
                        full[rank + axis as usize] = pads[axes.len() + position];
                    }
                    full
                }
            };
            (pads, value)
        };
        if pads.len() != 2 * rank {
            return Err(format!("{} pads for a rank-{rank} input", pads.len()).into());
        }
        if pads.iter().any(|&p| p < 0) {
            return Err(format!("negative pads {pads:?} (cropping)").into());
        }
        if !value.is_finite() {
            return Err(format!("constant_value {value}").into());
        }
        let before: Vec<usize> = pads[..rank].iter().map(|&p| p as usize).collect();
        let after: Vec<usize> = pads[rank..].iter().map(|&p| p as usize).collect();
        if mode == PadMode::Reflect
            && (0..rank).any(|axis| before[axis] >= input[axis] || after[axis] >= input[axis])
        {
            return Err(format!("reflect pads {pads:?} as large as an axis of {input:?}").into());
        }
        if pads.iter().all(|&p| p == 0) {
            self.alias(cx.output(), x);
            return Ok(());
        }
        let shape: Vec<usize> = (0..rank)
            .map(|axis| input[axis] + before[axis] + after[axis])
            .collect();
        let mut args = vec![Arg::Value(x), Arg::Ints(pads[..rank].to_vec())];
        if after != before {
            args.push(Arg::Ints(pads[rank..].to_vec()));
        }
        if mode != PadMode::Constant {
            args.push(Arg::keyword("mode", Arg::Str(mode.name())));
        } else if value != 0.0 {
            args.push(Arg::keyword("value", Arg::Float(value)));
        }
        self.push(cx.output(), call("pad", args), None, shape, true);
        Ok(())
    }
}

/// `coordinate_transformation_mode` and `nearest_mode` of Resize-11+, and the attributes nnc
/// refuses.
fn read_resize_attributes(
    node: &crate::onnx::proto::NodeProto,
) -> Result<(CoordinateTransform, NearestRounding), NodeError> {
    let coordinates_name =
        attr::string(node, "coordinate_transformation_mode").unwrap_or_else(|| "half_pixel".into());
    let coordinates = CoordinateTransform::from_name(&coordinates_name).ok_or_else(|| {
        format!("attribute coordinate_transformation_mode = {coordinates_name:?}: nnc takes half_pixel, pytorch_half_pixel, align_corners and asymmetric")
    })?;
    let nearest_name =
        attr::string(node, "nearest_mode").unwrap_or_else(|| "round_prefer_floor".into());
    let nearest = NearestRounding::from_name(&nearest_name)
        .ok_or_else(|| format!("attribute nearest_mode = {nearest_name:?}"))?;
    if attr::int(node, "exclude_outside", 0) != 0 {
        return Err("attribute exclude_outside = 1: nnc clamps to the edge instead".into());
    }
    Ok((coordinates, nearest))
}
