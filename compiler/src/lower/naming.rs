//! Names: the layer name of a statement (its target variable or its `as` name), the PyTorch
//! state-dict names of the weights a layer creates (`<layer>.<suffix>`), and node names.
//!
//! A layer's name is the scope's prefix (one level per named block call) followed by the `as` name,
//! or by the assigned variable when there is no `as`; `as _` names nothing, so a block called that
//! way adds no level. Weight names must be unique, which is what makes them loadable by name.

use super::call::CallCx;
use super::scope::Scope;
use super::value::Value;
use super::{Builder, Eval, Lowerer, Stop};
use crate::diagnostics::{Diagnostic, Span};
use crate::ir::{self, DType, ParamInit, TensorType};
use crate::syntax::ast::{BinaryOp, LayerName};

/// The naming context of the statement being lowered.
#[derive(Clone)]
pub(super) struct Naming {
    /// The full layer name for parameterized layers (prefix + `as` name or target variable).
    pub(super) layer: String,
    /// The span of the `as` name, or of the target variable.
    pub(super) span: Span,
    /// `as _`: a block called this way adds no level to the names of its layers.
    pub(super) transparent: bool,
}

impl Naming {
    /// The naming of `layer` (relative to the scope's prefix); an empty `layer` is `as _`.
    pub(super) fn new(scope: &Scope, layer: &str, span: Span) -> Self {
        if layer.is_empty() {
            Naming {
                layer: scope.prefix.trim_end_matches('.').to_string(),
                span,
                transparent: true,
            }
        } else {
            Naming {
                layer: format!("{}{layer}", scope.prefix),
                span,
                transparent: false,
            }
        }
    }
}

/// The node name of an operator: the statement's layer name, or the block prefix and `op`.
pub(super) fn operator_name(naming: Option<&Naming>, scope: &Scope, op: &str) -> String {
    match naming {
        Some(naming) => naming.layer.clone(),
        None => format!("{}{op}", scope.prefix),
    }
}

/// The IR name of an arithmetic operator, for node names; only tensor operators make nodes.
pub(super) fn op_name(op: BinaryOp) -> &'static str {
    match op {
        BinaryOp::Add => "add",
        BinaryOp::Sub => "sub",
        BinaryOp::Mul => "mul",
        BinaryOp::Div => "div",
        BinaryOp::Rem
        | BinaryOp::Eq
        | BinaryOp::Ne
        | BinaryOp::Lt
        | BinaryOp::Le
        | BinaryOp::Gt
        | BinaryOp::Ge
        | BinaryOp::And
        | BinaryOp::Or => "op",
    }
}

impl<'a> Lowerer<'a> {
    /// Evaluates a layer name given with `as`, relative to the current prefix; `as _` gives "".
    pub(super) fn layer_name(
        &mut self,
        name: &'a LayerName,
        scope: &mut Scope,
        builder: &mut Builder,
    ) -> Eval<(String, Span)> {
        match name {
            LayerName::Literal { name, span } => {
                if name.is_empty() || name.split('.').any(str::is_empty) {
                    self.errors.push(
                        Diagnostic::error(*span, format!("`{name}` is not a valid layer name"))
                            .with_hint("layer names are dot-separated, non-empty parts"),
                    );
                    return Err(Stop);
                }
                Ok((name.clone(), *span))
            }
            LayerName::Path(segments)
                if segments.len() == 1
                    && segments[0].head.name == "_"
                    && segments[0].indices.is_empty() =>
            {
                Ok((String::new(), segments[0].head.span))
            }
            LayerName::Path(segments) => {
                let mut parts = Vec::new();
                let mut span = segments[0].head.span;
                for segment in segments {
                    parts.push(segment.head.name.clone());
                    span = span.to(segment.head.span);
                    for index in &segment.indices {
                        let value = self.eval(index, scope, builder, None)?;
                        span = span.to(index.span);
                        match value {
                            Value::Int(index) => parts.push(index.to_string()),
                            Value::Str(text) => parts.push(text),
                            Value::Poison => return Err(Stop),
                            other => {
                                self.errors.push(Diagnostic::error(
                                    index.span,
                                    format!(
                                        "a layer-name index must be an integer, but this is {}",
                                        other.describe()
                                    ),
                                ));
                                return Err(Stop);
                            }
                        }
                    }
                }
                Ok((parts.join("."), span))
            }
        }
    }
}

impl CallCx<'_, '_> {
    /// The full name of this layer, for its weights; an error if it has none.
    fn weights_layer_name(&mut self) -> Eval<String> {
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

    /// Creates the weight `<layer>.<suffix>`, or `<layer>` for an empty suffix.
    pub(super) fn param(
        &mut self,
        suffix: &str,
        shape: Vec<usize>,
        init: ParamInit,
    ) -> Eval<ir::Value> {
        self.weight(suffix, shape, init, false)
    }

    /// Creates the buffer `<layer>.<suffix>`: loaded like a weight, not counted as a parameter.
    pub(super) fn buffer(
        &mut self,
        suffix: &str,
        shape: Vec<usize>,
        init: ParamInit,
    ) -> Eval<ir::Value> {
        self.weight(suffix, shape, init, true)
    }

    fn weight(
        &mut self,
        suffix: &str,
        shape: Vec<usize>,
        init: ParamInit,
        is_buffer: bool,
    ) -> Eval<ir::Value> {
        let layer = self.weights_layer_name()?;
        // An empty suffix: the layer is the weight (`parameter`, PyTorch's `nn.Parameter`).
        let name = if suffix.is_empty() {
            layer
        } else {
            format!("{layer}.{suffix}")
        };
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

    /// The name of the node this call emits: its layer name, or the block prefix and the built-in.
    pub(super) fn node_name(&self) -> String {
        match &self.naming {
            Some(naming) if !naming.layer.is_empty() => naming.layer.clone(),
            _ => format!("{}{}", self.prefix, self.name),
        }
    }
}
