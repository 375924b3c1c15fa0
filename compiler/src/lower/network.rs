//! A network: the names of the file's items, a network's header (dimensions, inputs, outputs)
//! and the tensor types written in it.
//!
//! The header is lowered in source order: the `where` dimensions (overridden by
//! [`LowerOptions::dims`]), then the inputs, whose types may use the dimensions, then the body,
//! then the outputs, which must name tensors the body assigned.

use std::collections::HashMap;

use super::scope::{Binding, Scope};
use super::value::Value;
use super::{Builder, Eval, LowerOptions, Lowerer, Stop, builtins, did_you_mean};
use crate::diagnostics::{Diagnostic, Span};
use crate::ir::{self, Graph, TensorType};
use crate::syntax::ast::{self, ExprKind, Stmt};

impl<'a> Lowerer<'a> {
    /// Reports items that share a name, and blocks that shadow built-in layers.
    pub(super) fn check_item_names(&mut self, file: &'a ast::File) {
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for item in &file.items {
            let (name, kind) = match item {
                ast::Item::Const(constant) => (&constant.name, "constant"),
                ast::Item::Block(block) => (&block.name, "block"),
                ast::Item::Network(network) => (&network.name, "network"),
            };
            if kind == "block" && builtins::find(&name.name).is_some() {
                self.errors.push(
                    Diagnostic::error(
                        name.span,
                        format!("block `{}` has the name of a built-in layer", name.name),
                    )
                    .with_label("shadows the built-in")
                    .with_hint("rename the block"),
                );
            }
            if let Some(first) = seen.insert(&name.name, name.span) {
                self.errors.push(
                    Diagnostic::error(name.span, format!("`{}` is defined twice", name.name))
                        .with_label(format!("this {kind} reuses the name"))
                        .with_secondary(first, "first defined here"),
                );
            }
        }
    }

    /// Lowers one network to a graph, or to `None` if it has errors (they are in `self.errors`).
    pub(super) fn lower_network(
        &mut self,
        network: &'a ast::NetworkDef,
        options: &LowerOptions,
    ) -> Option<Graph> {
        let errors_before = self.errors.len();
        let mut builder = Builder::new(&network.name.name);
        let mut scope = Scope::top_level();
        self.bind_dimensions(network, options, &mut scope, &mut builder);
        self.bind_inputs(network, &mut scope, &mut builder);
        self.run_body(&network.body, &mut scope, &mut builder);
        self.report_network_returns(network);
        self.bind_outputs(network, &mut scope, &mut builder);
        if network.outputs.is_empty() {
            self.errors.push(Diagnostic::error(
                network.name.span,
                "a network needs at least one output",
            ));
        }
        (self.errors.len() == errors_before).then_some(builder.graph)
    }

    /// Binds the dimensions of the `where` clause, each overridden by the options if they name it.
    fn bind_dimensions(
        &mut self,
        network: &'a ast::NetworkDef,
        options: &LowerOptions,
        scope: &mut Scope,
        builder: &mut Builder,
    ) {
        for (name, expr) in &network.dims {
            let value = match options.dims.iter().find(|(dim, _)| *dim == name.name) {
                Some((_, value)) => Ok(Value::Int(*value)),
                None => self.eval(expr, scope, builder, None),
            };
            let size = value.and_then(|value| self.expect_dim(&value, expr.span));
            let Ok(size) = size else {
                // Bind it anyway, so that its uses do not also report it as unknown.
                scope.vars.insert(
                    name.name.clone(),
                    Binding {
                        value: Value::Poison,
                        span: name.span,
                    },
                );
                continue;
            };
            if let Some(previous) = scope.vars.insert(
                name.name.clone(),
                Binding {
                    value: Value::Int(size as i64),
                    span: name.span,
                },
            ) {
                self.errors.push(
                    Diagnostic::error(
                        name.span,
                        format!("dimension `{}` is bound twice", name.name),
                    )
                    .with_secondary(previous.span, "first bound here"),
                );
            }
            builder.graph.dims.push((name.name.clone(), size));
        }
    }

    /// Adds the network's inputs to the graph and binds their names.
    fn bind_inputs(
        &mut self,
        network: &'a ast::NetworkDef,
        scope: &mut Scope,
        builder: &mut Builder,
    ) {
        for input in &network.inputs {
            let Ok(ty) = self.eval_type(&input.ty, scope, builder) else {
                scope.vars.insert(
                    input.name.name.clone(),
                    Binding {
                        value: Value::Poison,
                        span: input.name.span,
                    },
                );
                continue;
            };
            if let Some(previous) = scope.vars.get(&input.name.name) {
                self.errors.push(
                    Diagnostic::error(
                        input.name.span,
                        format!("`{}` is already defined", input.name.name),
                    )
                    .with_secondary(previous.span, "first defined here"),
                );
                continue;
            }
            let value = builder.graph.add_input(&input.name.name, ty);
            scope.vars.insert(
                input.name.name.clone(),
                Binding {
                    value: Value::Tensor(value),
                    span: input.name.span,
                },
            );
        }
    }

    /// Reports each `return` of a network body: a network's outputs are named variables.
    fn report_network_returns(&mut self, network: &'a ast::NetworkDef) {
        for stmt in &network.body {
            if let Stmt::Return { span, .. } = stmt {
                self.errors.push(
                    Diagnostic::error(*span, "a network has no `return`")
                        .with_hint("a network's outputs are the variables named after `->`: assign to them instead"),
                );
            }
        }
    }

    /// Marks the variables named after `->` as the graph's outputs, checking declared types.
    fn bind_outputs(
        &mut self,
        network: &'a ast::NetworkDef,
        scope: &mut Scope,
        builder: &mut Builder,
    ) {
        let mut seen_outputs: HashMap<&str, Span> = HashMap::new();
        for output in &network.outputs {
            if let Some(first) = seen_outputs.insert(&output.name.name, output.name.span) {
                self.errors.push(
                    Diagnostic::error(
                        output.name.span,
                        format!("output `{}` is declared twice", output.name.name),
                    )
                    .with_secondary(first, "first declared here"),
                );
                continue;
            }
            let Some(binding) = scope.vars.get(&output.name.name).cloned() else {
                let mut diagnostic = Diagnostic::error(
                    output.name.span,
                    format!("output `{}` is never assigned", output.name.name),
                )
                .with_label("declared here");
                diagnostic = diagnostic.with_hint(
                    match did_you_mean(&output.name.name, scope.vars.keys().map(String::as_str)) {
                        Some(similar) => format!(
                            "assign it in the body, e.g. `{} = {similar}`",
                            output.name.name
                        ),
                        None => format!("assign it in the body: `{} = ...`", output.name.name),
                    },
                );
                self.errors.push(diagnostic);
                continue;
            };
            let value = match binding.value {
                Value::Tensor(value) => value,
                Value::Poison => continue,
                other => {
                    self.errors.push(
                        Diagnostic::error(
                            binding.span,
                            format!(
                                "output `{}` must be a tensor, but it is {}",
                                output.name.name,
                                other.describe()
                            ),
                        )
                        .with_secondary(output.name.span, "declared as an output here"),
                    );
                    continue;
                }
            };
            if let Some(declared) = &output.ty
                && let Ok(declared_ty) = self.eval_type(declared, scope, builder)
            {
                let actual = builder.graph.ty(value).clone();
                if declared_ty != actual {
                    self.errors.push(
                        Diagnostic::error(
                            declared.span,
                            format!(
                                "output `{}` is declared as {declared_ty} but is {actual}",
                                output.name.name
                            ),
                        )
                        .with_label(format!("the body computes {actual}"))
                        .with_secondary(binding.span, "assigned here"),
                    );
                }
            }
            builder.graph.outputs.push(ir::Output {
                name: output.name.name.clone(),
                value,
            });
        }
    }

    /// Evaluates a tensor type such as `f32[batch, seq]`, reporting unknown dimensions.
    fn eval_type(
        &mut self,
        ty: &'a ast::TypeExpr,
        scope: &mut Scope,
        builder: &mut Builder,
    ) -> Eval<TensorType> {
        let mut shape = Vec::new();
        let mut failed = false;
        for dim in &ty.dims {
            let value = match &dim.kind {
                ExprKind::Var(name) if self.lookup(name, scope).is_none() => {
                    self.errors.push(
                        Diagnostic::error(dim.span, format!("unknown dimension `{name}`"))
                            .with_label("not bound")
                            .with_hint(format!(
                                "bind it in the network header: `where {name} = 1`"
                            )),
                    );
                    failed = true;
                    continue;
                }
                _ => self.eval(dim, scope, builder, None),
            };
            match value.and_then(|value| self.expect_dim(&value, dim.span)) {
                Ok(size) => shape.push(size),
                Err(Stop) => failed = true,
            }
        }
        if failed {
            return Err(Stop);
        }
        TensorType::new(ty.dtype, shape).map_err(|error| {
            self.errors
                .push(Diagnostic::error(ty.span, error.to_string()).with_label("this type"));
            Stop
        })
    }

    /// Checks that a value is a valid dimension size (a positive integer).
    pub(super) fn expect_dim(&mut self, value: &Value, span: Span) -> Eval<usize> {
        match value {
            Value::Int(size) if *size >= 1 => usize::try_from(*size).map_err(|_| Stop),
            Value::Int(size) => {
                self.errors.push(Diagnostic::error(
                    span,
                    format!("a dimension must be at least 1, but this is {size}"),
                ));
                Err(Stop)
            }
            Value::Poison => Err(Stop),
            other => {
                self.errors.push(Diagnostic::error(
                    span,
                    format!(
                        "a dimension must be an integer, but this is {}",
                        other.describe()
                    ),
                ));
                Err(Stop)
            }
        }
    }
}
