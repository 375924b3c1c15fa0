//! A call of a built-in: binding its arguments to its parameters, and the [`CallCx`] through
//! which its lowering reads them, reports errors at them and emits nodes.
//!
//! Argument errors point at the argument; shape errors from [`infer`] are mapped to the argument
//! they are about. The typed argument readers are in [`arguments`](super::arguments).

use super::builtins::Builtin;
use super::naming::Naming;
use super::scope::Scope;
use super::value::Value;
use super::{Builder, Eval, Lowerer, Stop, did_you_mean};
use crate::diagnostics::{Diagnostic, Span};
use crate::ir::infer::{Culprit, ShapeError, infer};
use crate::ir::{self, Op, TensorType};
use crate::syntax::ast;

/// The arguments of one call, and the state needed to lower it.
pub(super) struct CallCx<'x, 'a> {
    pub(super) lowerer: &'x mut Lowerer<'a>,
    pub(super) builder: &'x mut Builder,
    /// The built-in's name, for messages and default node names.
    pub(super) name: &'static str,
    /// The span of the whole call.
    pub(super) span: Span,
    pub(super) callee_span: Span,
    /// The built-in's parameters, in positional order; `slots` holds their arguments.
    pub(super) params: &'static [&'static str],
    pub(super) slots: Vec<Option<(Value, Span)>>,
    pub(super) naming: Option<Naming>,
    /// The layer-name prefix of the scope of the call.
    pub(super) prefix: String,
}

impl<'a> Lowerer<'a> {
    /// Lowers a call of `builtin`: binds the arguments to its parameters, then runs its lowering.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn call_builtin(
        &mut self,
        builtin: &'static Builtin,
        callee: &'a ast::Ident,
        args: &'a [ast::Arg],
        span: Span,
        scope: &mut Scope,
        builder: &mut Builder,
        naming: Option<&Naming>,
    ) -> Eval<Value> {
        let (name, params) = (builtin.name, builtin.params);
        let mut slots: Vec<Option<(Value, Span)>> = vec![None; params.len()];
        let mut failed = false;
        let mut positional = 0;
        for arg in args {
            let value = match self.eval(&arg.value, scope, builder, naming) {
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
                        self.errors.push(
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
                        self.errors.push(diagnostic);
                        failed = true;
                        continue;
                    }
                },
            };
            if slots[slot].is_some() {
                self.errors.push(Diagnostic::error(
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
            lowerer: self,
            builder,
            name,
            span,
            callee_span: callee.span,
            params,
            slots,
            naming: naming.cloned(),
            prefix: scope.prefix.clone(),
        };
        (builtin.lower)(&mut cx)
    }
}

impl<'x, 'a> CallCx<'x, 'a> {
    /// A context for an operator like `+`, which has no arguments to point at.
    pub(super) fn for_operator(
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

    /// The argument given for parameter `name`, with its span.
    pub(super) fn slot(&self, name: &str) -> Option<(Value, Span)> {
        let index = self.params.iter().position(|param| *param == name)?;
        self.slots[index].clone()
    }

    /// Whether an argument was given for parameter `name`.
    pub(super) fn present(&self, name: &str) -> bool {
        self.slot(name).is_some()
    }

    /// The span of argument `name`, or of the call if it was not given.
    pub(super) fn span_of(&self, name: &str) -> Span {
        self.slot(name).map_or(self.span, |(_, span)| span)
    }

    /// Records an error about argument `name` and returns [`Stop`].
    pub(super) fn error(
        &mut self,
        name: &str,
        message: impl Into<String>,
        hint: Option<&str>,
    ) -> Stop {
        let mut diagnostic = Diagnostic::error(self.span_of(name), message);
        if let Some(hint) = hint {
            diagnostic = diagnostic.with_hint(hint);
        }
        self.lowerer.errors.push(diagnostic);
        Stop
    }

    /// The argument for `name`; an error if it was not given.
    pub(super) fn required(&mut self, name: &str) -> Eval<Value> {
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

    /// Records that argument `name` is not of the `expected` kind.
    pub(super) fn wrong_type(&mut self, name: &str, expected: &str, value: &Value) -> Stop {
        let message = format!(
            "`{name}` of `{}` must be {expected}, but this is {}",
            self.name,
            value.describe()
        );
        self.error(name, message, None)
    }

    /// Infers the output type and appends the node. Each input names the argument it came from.
    pub(super) fn node(
        &mut self,
        op: Op,
        inputs: &[(ir::Value, Option<&'static str>)],
    ) -> Eval<ir::Value> {
        let types: Vec<&TensorType> = inputs
            .iter()
            .map(|(value, _)| self.builder.graph.ty(*value))
            .collect();
        match infer(&op, &types) {
            Ok(output_types) => {
                let name = self.node_name();
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
    pub(super) fn shape_error(
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

/// An axis counted from the end when negative, as in PyTorch, if it is within `rank`.
pub(super) fn normalize_axis(axis: i64, rank: usize) -> Option<usize> {
    let rank = rank as i64;
    let normalized = if axis < 0 { axis + rank } else { axis };
    (0..rank)
        .contains(&normalized)
        .then_some(normalized as usize)
}

/// The parameter names as a list for messages: "`x`, `dim`".
fn list_names(params: &[&str]) -> String {
    let names: Vec<String> = params.iter().map(|param| format!("`{param}`")).collect();
    names.join(", ")
}
