//! Layers that change the spatial size of images: `conv_transpose2d` (a learned upsampling),
//! `upsample` (PyTorch's `nn.Upsample` / `F.interpolate`), `resize` (ONNX's `Resize`, every
//! coordinate transform) and `pad` (constant, reflect or edge).

use crate::ir::infer::check_groups;
use crate::ir::{
    ConvTransposeAttrs, CoordinateTransform, NearestRounding, Op, PadMode, ParamInit,
    Resize2dOptions, ResizeMode,
};
use crate::lower::Eval;
use crate::lower::call::CallCx;
use crate::lower::value::Value;

/// `conv_transpose2d(x, out_channels, kernel, stride = 1, padding = 0, output_padding = 0,
/// dilation = 1, groups = 1, bias = true)`: weight `[in, out / groups, kh, kw]`, as PyTorch's
/// `ConvTranspose2d` stores it.
pub(super) fn conv_transpose2d(cx: &mut CallCx<'_, '_>) -> Eval<Value> {
    let x = cx.tensor("x")?;
    let shape = cx.shape(x);
    if shape.len() != 4 {
        let message = format!(
            "conv_transpose2d expects a tensor of rank 4 [batch, channels, height, width], but got shape {shape:?}"
        );
        return Err(cx.error("x", message, Some("add a batch dimension")));
    }
    let in_channels = shape[1];
    let out_channels = cx.positive("out_channels", None)?;
    let kernel = cx.spatial("kernel", 2, None)?;
    let stride = cx.spatial("stride", 2, Some(1))?;
    let padding = cx.spatial_allow_zero("padding", 2, Some(0))?;
    let output_padding = cx.spatial_allow_zero("output_padding", 2, Some(0))?;
    let dilation = cx.spatial("dilation", 2, Some(1))?;
    let groups = cx.positive("groups", Some(1))?;
    let bias = cx.bool("bias", Some(true))?;
    if let Err(error) = check_groups(groups, in_channels, out_channels) {
        return Err(cx.shape_error(error, &[]));
    }
    // PyTorch's fan-in of a transposed convolution: the weight's dims after the first.
    let fan_in = (out_channels / groups)
        .saturating_mul(kernel[0])
        .saturating_mul(kernel[1]);
    let weight_shape = vec![in_channels, out_channels / groups, kernel[0], kernel[1]];
    let weight = cx.param("weight", weight_shape, ParamInit::FanIn { fan_in })?;
    let mut inputs = vec![(x, Some("x")), (weight, None)];
    if bias {
        inputs.push((
            cx.param("bias", vec![out_channels], ParamInit::FanIn { fan_in })?,
            None,
        ));
    }
    let attrs = ConvTransposeAttrs {
        kernel,
        stride,
        padding,
        output_padding,
        dilation,
        groups,
        bias,
    };
    cx.node(Op::ConvTranspose(attrs), &inputs)
        .map(Value::Tensor)
}

/// `upsample(x, scale_factor, size, mode = "nearest", align_corners = false)`, PyTorch's
/// `nn.Upsample`: nearest picks `floor(x / scale)` (ONNX's asymmetric, floor); bilinear is
/// half-pixel (`pytorch_half_pixel`), or `align_corners`.
pub(super) fn upsample(cx: &mut CallCx<'_, '_>) -> Eval<Value> {
    let mode = resize_mode(cx)?;
    let align_corners = cx.bool("align_corners", Some(false))?;
    let coordinates = match (mode, align_corners) {
        (ResizeMode::Nearest, false) => CoordinateTransform::Asymmetric,
        (ResizeMode::Nearest, true) => {
            return Err(cx.error(
                "align_corners",
                "align_corners applies to bilinear upsampling only",
                Some("remove it, or set mode = \"bilinear\""),
            ));
        }
        (ResizeMode::Linear, false) => CoordinateTransform::PytorchHalfPixel,
        (ResizeMode::Linear, true) => CoordinateTransform::AlignCorners,
    };
    resize_node(
        cx,
        "scale_factor",
        mode,
        coordinates,
        NearestRounding::Floor,
    )
}

/// `resize(x, size, scale, mode = "nearest", coordinates = "half_pixel", nearest =
/// "round_prefer_floor")`, ONNX's `Resize` on NCHW images with its defaults.
pub(super) fn resize(cx: &mut CallCx<'_, '_>) -> Eval<Value> {
    let mode = resize_mode(cx)?;
    let coordinates = cx.string("coordinates", Some("half_pixel"))?;
    let Some(coordinates) = CoordinateTransform::from_name(&coordinates) else {
        return Err(cx.error(
            "coordinates",
            format!("unknown coordinate transform \"{coordinates}\""),
            Some("use \"half_pixel\", \"pytorch_half_pixel\", \"align_corners\" or \"asymmetric\""),
        ));
    };
    let nearest = cx.string("nearest", Some("round_prefer_floor"))?;
    let Some(nearest) = NearestRounding::from_name(&nearest) else {
        return Err(cx.error(
            "nearest",
            format!("unknown rounding \"{nearest}\""),
            Some("use \"round_prefer_floor\", \"round_prefer_ceil\", \"floor\" or \"ceil\""),
        ));
    };
    resize_node(cx, "scale", mode, coordinates, nearest)
}

/// `pad(x, before, after = before, mode = "constant", value = 0)`: `before` and `after` list
/// the elements added on each axis.
pub(super) fn pad(cx: &mut CallCx<'_, '_>) -> Eval<Value> {
    let x = cx.tensor("x")?;
    let rank = cx.rank(x);
    let before = pad_list(cx, "before", rank)?;
    let after = match cx.present("after") {
        true => pad_list(cx, "after", rank)?,
        false => before.clone(),
    };
    let mode = cx.string("mode", Some("constant"))?;
    let Some(mode) = PadMode::from_name(&mode) else {
        return Err(cx.error(
            "mode",
            format!("unknown padding mode \"{mode}\""),
            Some("use \"constant\", \"reflect\" or \"edge\""),
        ));
    };
    let value = cx.float("value", Some(0.0))? as f32;
    let op = Op::Pad {
        before,
        after,
        mode,
        value,
    };
    cx.node(op, &[(x, Some("x"))]).map(Value::Tensor)
}

/// The `mode` argument of `resize` and `upsample`.
fn resize_mode(cx: &mut CallCx<'_, '_>) -> Eval<ResizeMode> {
    let mode = cx.string("mode", Some("nearest"))?;
    match mode.as_str() {
        "nearest" => Ok(ResizeMode::Nearest),
        "bilinear" | "linear" => Ok(ResizeMode::Linear),
        other => Err(cx.error(
            "mode",
            format!("unknown resize mode \"{other}\""),
            Some("use \"nearest\" or \"bilinear\""),
        )),
    }
}

/// The resize node, sized by `size` or by the scale argument `scale_name`: with a scale, the
/// output is `floor(input * scale)` and the coordinate transform uses the scale as given; with
/// a size, it uses `output / input`, as ONNX and PyTorch do.
fn resize_node(
    cx: &mut CallCx<'_, '_>,
    scale_name: &'static str,
    mode: ResizeMode,
    coordinates: CoordinateTransform,
    nearest: NearestRounding,
) -> Eval<Value> {
    let x = cx.tensor("x")?;
    let shape = cx.shape(x);
    if shape.len() != 4 {
        let message = format!(
            "`{}` expects NCHW images of rank 4, but got shape {shape:?}",
            cx.name
        );
        return Err(cx.error("x", message, None));
    }
    let input = [shape[2], shape[3]];
    let (output_size, scale) = match (cx.present("size"), cx.present(scale_name)) {
        (true, false) => {
            let size = cx.spatial("size", 2, None)?;
            let output_size = [size[0], size[1]];
            let scale = [0, 1].map(|axis| output_size[axis] as f32 / input[axis] as f32);
            (output_size, scale)
        }
        (false, true) => {
            let scale = scale_pair(cx, scale_name)?;
            let output_size =
                [0, 1].map(|axis| (input[axis] as f64 * f64::from(scale[axis])).floor() as usize);
            if output_size.contains(&0) {
                return Err(cx.error(
                    scale_name,
                    format!("scale {scale:?} leaves an empty image of {input:?}"),
                    None,
                ));
            }
            (output_size, scale)
        }
        _ => {
            return Err(cx.error(
                "x",
                format!("`{}` takes either `size` or `{scale_name}`", cx.name),
                Some("give exactly one of them"),
            ));
        }
    };
    let options = Resize2dOptions {
        output_size,
        scale,
        mode,
        coordinates,
        nearest,
    };
    cx.node(Op::Resize(options), &[(x, Some("x"))])
        .map(Value::Tensor)
}

/// A positive scale, or a list of two: `2`, `0.5` or `[2, 1.5]`.
fn scale_pair(cx: &mut CallCx<'_, '_>, name: &str) -> Eval<[f32; 2]> {
    let value = cx.required(name)?;
    let numbers: Option<Vec<f64>> = match &value {
        Value::List(items) if items.len() == 2 => items.iter().map(Value::as_float).collect(),
        Value::List(_) => None,
        single => single.as_float().map(|number| vec![number, number]),
    };
    match numbers {
        Some(numbers) if numbers.iter().all(|&n| n > 0.0 && (n as f32).is_finite()) => {
            Ok([numbers[0] as f32, numbers[1] as f32])
        }
        Some(_) => Err(cx.error(name, format!("`{name}` must be positive"), None)),
        None => Err(cx.wrong_type(name, "a number or a list of two numbers", &value)),
    }
}

/// A list of `rank` non-negative pad sizes.
fn pad_list(cx: &mut CallCx<'_, '_>, name: &str, rank: usize) -> Eval<Vec<usize>> {
    let values = cx.int_list(name, None)?;
    if values.len() != rank || values.iter().any(|&value| value < 0) {
        return Err(cx.error(
            name,
            format!("`{name}` needs {rank} non-negative sizes, one per axis, not {values:?}"),
            None,
        ));
    }
    Ok(values.into_iter().map(|value| value as usize).collect())
}
