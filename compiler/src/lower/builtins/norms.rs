//! Normalizations: `batch_norm` (inference form, over axis 1), `layer_norm` and `rms_norm` (over the
//! last axis).

use crate::ir::{self, Op, ParamInit};
use crate::lower::Eval;
use crate::lower::call::CallCx;
use crate::lower::value::Value;

/// `batch_norm(x, eps, num_features)`, with running statistics as buffers.
pub(super) fn batch_norm(cx: &mut CallCx<'_, '_>) -> Eval<Value> {
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
    .map(Value::Tensor)
}

/// `layer_norm(x, eps, affine)`.
pub(super) fn layer_norm(cx: &mut CallCx<'_, '_>) -> Eval<Value> {
    let x = cx.tensor("x")?;
    let eps = cx.float("eps", Some(1e-5))? as f32;
    let affine = cx.bool("affine", Some(true))?;
    let features = cx.last_dim(x, "x")?;
    let mut inputs = vec![(x, Some("x"))];
    if affine {
        inputs.push((cx.param("weight", vec![features], ParamInit::Ones)?, None));
        inputs.push((cx.param("bias", vec![features], ParamInit::Zeros)?, None));
    }
    cx.node(Op::LayerNorm { eps, affine }, &inputs)
        .map(Value::Tensor)
}

/// `rms_norm(x, eps, affine)`.
pub(super) fn rms_norm(cx: &mut CallCx<'_, '_>) -> Eval<Value> {
    let x = cx.tensor("x")?;
    let eps = cx.float("eps", Some(1e-6))? as f32;
    let affine = cx.bool("affine", Some(true))?;
    let features = cx.last_dim(x, "x")?;
    let mut inputs = vec![(x, Some("x"))];
    if affine {
        inputs.push((cx.param("weight", vec![features], ParamInit::Ones)?, None));
    }
    cx.node(Op::RmsNorm { eps, affine }, &inputs)
        .map(Value::Tensor)
}

/// `l2_normalize(x, eps = 1e-12)`: `x / max(‖x‖, eps)` over the last axis, as PyTorch's
/// `F.normalize(x, dim=-1)` and sentence-transformers' `Normalize`.
///
/// It is an unweighted `rms_norm` scaled by `1 / sqrt(n)`: `x / sqrt(mean(x²) + eps² / n) /
/// sqrt(n)` is `x / sqrt(Σx² + eps²)`, which equals `x / max(‖x‖, eps)` to rounding unless
/// `‖x‖` is within a few `eps` of zero, where both are about `x / eps`.
pub(super) fn l2_normalize(cx: &mut CallCx<'_, '_>) -> Eval<Value> {
    let x = cx.tensor("x")?;
    let eps = cx.float("eps", Some(1e-12))?;
    let features = cx.last_dim(x, "x")?;
    let rms_eps = (eps * eps / features as f64) as f32;
    let unit_rms = cx.node(
        Op::RmsNorm {
            eps: rms_eps,
            affine: false,
        },
        &[(x, Some("x"))],
    )?;
    cx.node(
        Op::Affine {
            scale: (1.0 / (features as f64).sqrt()) as f32,
            shift: 0.0,
        },
        &[(unit_rms, None)],
    )
    .map(Value::Tensor)
}
