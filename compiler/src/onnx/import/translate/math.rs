//! The Reduce ops (`ReduceSum`, `ReduceMean`, `ReduceMax`, `ReduceMin`, `ReduceProd`, `ReduceL1`,
//! `ReduceL2`, `ReduceSumSquare`, `ReduceLogSumExp`), `LogSoftmax` and the unary math ops (`Sqrt`, `Exp`,
//! `Erf`, `Abs`, `Neg`, and `Pow` by a constant number or a tensor) on tensors computed at run
//! time: `reduce_mean(x, axes = [2, 3], keepdims = true)`, `log_softmax(x)`, `sqrt(x)`, `-x`,
//! `pow(x, 2.0)`, `pow(x, y)`. On constants these ops fold ([`super::fold`]); inside the layers that
//! `recognize.rs` finds (layer norm, RMS norm, GELU) they are part of those layers.

use super::{Arg, Cx, Known, NodeResult, Operand, Translator, attr, binary, call, fold};

impl Translator<'_> {
    /// `ReduceSum`, `ReduceMean`, `ReduceMax`, `ReduceMin`, `ReduceProd`, `ReduceL1`, `ReduceL2`,
    /// `ReduceSumSquare` or `ReduceLogSumExp`. The axes are an attribute before opset 13
    /// (`ReduceSum`) or 18 (the others) and an optional second input from then on; without axes
    /// every axis is reduced, unless `noop_with_empty_axes = 1` makes the node the identity (for
    /// the reductions that are the identity on one element; the others are refused).
    pub(super) fn reduce(&mut self, cx: &Cx<'_>, op: &str) -> NodeResult {
        let x = cx.tensor(0)?;
        if !self.is_float(x) {
            return Err(format!("{op} of an integer tensor").into());
        }
        let input_shape = self.shape(x);
        let rank = input_shape.len();
        let axes_from_input = if op == "ReduceSum" { 13 } else { 18 };
        let constants = cx.constants();
        let constants: Vec<_> = constants.iter().map(|c| c.as_deref()).collect();
        let listed = fold::axes_of(cx.node, self.opset, axes_from_input, &constants)?
            .filter(|axes| !axes.is_empty());
        let keepdims = attr::int(cx.node, "keepdims", 1) != 0;
        let axes = match listed {
            Some(listed) => reduction_axes(op, &listed, rank)?,
            None if attr::int(cx.node, "noop_with_empty_axes", 0) != 0 => {
                // ONNX's reference applies the absolute value, the square or nothing to the input
                // of the others; nnc does not guess.
                if !matches!(
                    op,
                    "ReduceSum" | "ReduceMean" | "ReduceMax" | "ReduceMin" | "ReduceProd"
                ) {
                    return Err(format!(
                        "{op} with noop_with_empty_axes = 1 and no axes (a reduction over nothing)"
                    )
                    .into());
                }
                self.alias(cx.output(), x);
                return Ok(());
            }
            None => (0..rank).collect(),
        };
        let shape = nnc_ops::reduce::reduced_shape(&input_shape, &axes, keepdims);
        let function = match op {
            "ReduceSum" => "reduce_sum",
            "ReduceMean" => "reduce_mean",
            "ReduceMin" => "reduce_min",
            "ReduceProd" => "reduce_prod",
            "ReduceL1" => "reduce_l1",
            "ReduceL2" => "reduce_l2",
            "ReduceSumSquare" => "reduce_sum_square",
            "ReduceLogSumExp" => "reduce_log_sum_exp",
            _ => "reduce_max",
        };
        let mut args = vec![Arg::Value(x)];
        // Every axis is the built-in's default.
        if axes.len() != rank {
            let axes: Vec<i64> = axes.iter().map(|&axis| axis as i64).collect();
            args.push(Arg::keyword(
                "axes",
                match axes[..] {
                    [axis] => Arg::Int(axis),
                    _ => Arg::Ints(axes),
                },
            ));
        }
        if keepdims {
            args.push(Arg::keyword("keepdims", Arg::Bool(true)));
        }
        self.push(cx.output(), call(function, args), None, shape, true);
        Ok(())
    }

    /// `Sqrt`, `Exp`, `Erf` and `Abs` are the built-ins of the same names; `Neg` is `-x`.
    pub(super) fn unary_math(&mut self, cx: &Cx<'_>, op: &str) -> NodeResult {
        let x = cx.tensor(0)?;
        if !self.is_float(x) {
            return Err(format!("{op} of an integer tensor").into());
        }
        let function = match op {
            "Sqrt" => "sqrt",
            "Exp" => "exp",
            "Erf" => "erf",
            "Abs" => "abs",
            _ => {
                let shape = self.shape(x);
                let negated = binary('*', Operand::Value(x), Operand::Number(-1.0));
                self.push(cx.output(), negated, None, shape, true);
                return Ok(());
            }
        };
        self.unary_call(cx, function, vec![])
    }

    /// `Pow(x, p)` with a constant exponent `p` that is one number (any shape that does not
    /// broadcast `x` to a larger one): `pow(x, p)`; with an `f32` tensor `y` computed at run time,
    /// or a constant one (a `parameter`): `pow(x, y)`, broadcasting as `+ - * /` do.
    pub(super) fn pow(&mut self, cx: &Cx<'_>) -> NodeResult {
        let x = cx.tensor(0)?;
        if !self.is_float(x) {
            return Err("Pow of an integer tensor".into());
        }
        // A constant that is not one number is a `parameter`, then a tensor like the others.
        let exponent = match cx.known(1)? {
            Known::Tensor(exponent) => {
                let exponent = *exponent;
                if !self.is_float(exponent) {
                    return Err("Pow with an integer tensor exponent".into());
                }
                exponent
            }
            Known::Const(exponent, name) => {
                let (exponent, name) = (exponent.clone(), name.clone());
                let x_shape = self.shape(x);
                let broadcast = fold::broadcast_shapes(&x_shape, &exponent.shape)?;
                match exponent.uniform_f32() {
                    Some(number) if number.is_finite() && broadcast == x_shape => {
                        return self.unary_call(cx, "pow", vec![Arg::Float(number)]);
                    }
                    _ if exponent.is_nonempty_f32() => self.parameter(cx.node, &exponent, &name),
                    _ => {
                        return Err(format!(
                            "Pow with a constant exponent of shape {:?} that is not a finite f32 tensor",
                            exponent.shape
                        )
                        .into());
                    }
                }
            }
        };
        let shape = fold::broadcast_shapes(&self.shape(x), &self.shape(exponent))?;
        let expr = call("pow", vec![Arg::Value(x), Arg::Value(exponent)]);
        self.push(cx.output(), expr, None, shape, true);
        Ok(())
    }
}

/// The axes of a reduction, made non-negative and sorted; out of range or repeated is an error.
fn reduction_axes(op: &str, listed: &[i64], rank: usize) -> Result<Vec<usize>, String> {
    let mut axes = Vec::with_capacity(listed.len());
    for &axis in listed {
        let normalized = fold::axis(axis, rank).map_err(|reason| format!("{op}: {reason}"))?;
        if axes.contains(&normalized) {
            return Err(format!("{op} lists axis {axis} twice in {listed:?}"));
        }
        axes.push(normalized);
    }
    axes.sort_unstable();
    Ok(axes)
}
