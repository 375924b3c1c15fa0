//! Statements: `const`, assignments, `if`, `for`, `repeat` and a block's `return`.
//!
//! Control flow is decided at compile time: `if` conditions are constants, and loops are unrolled
//! into the graph, up to [`MAX_NODES`] nodes so that a runaway loop is an error rather than a hang.

use super::naming::Naming;
use super::scope::{Binding, RETURN_SLOT, Scope};
use super::value::Value;
use super::{Builder, Lowerer, MAX_NODES};
use crate::diagnostics::{Diagnostic, Span};
use crate::syntax::ast::Stmt;

impl<'a> Lowerer<'a> {
    /// Runs the statements of a body in order, until a `return`.
    pub(super) fn run_body(&mut self, body: &'a [Stmt], scope: &mut Scope, builder: &mut Builder) {
        for stmt in body {
            // A `return` ends the block, also from inside an `if` or a loop.
            if scope.vars.contains_key(RETURN_SLOT) {
                break;
            }
            self.run_stmt(stmt, scope, builder);
        }
    }

    fn run_stmt(&mut self, stmt: &'a Stmt, scope: &mut Scope, builder: &mut Builder) {
        match stmt {
            Stmt::Const(constant) => {
                let value = self
                    .eval(&constant.value, scope, builder, None)
                    .unwrap_or(Value::Poison);
                if value.is_tensor() {
                    self.errors.push(
                        Diagnostic::error(constant.value.span, "a constant cannot hold a tensor")
                            .with_hint(format!(
                                "bind tensors without `const`: `{} = ...`",
                                constant.name.name
                            )),
                    );
                }
                scope.vars.insert(
                    constant.name.name.clone(),
                    Binding {
                        value,
                        span: constant.name.span,
                    },
                );
            }
            Stmt::Assign {
                target,
                value,
                layer_name,
            } => {
                let naming = match layer_name {
                    None => Ok(Naming::new(scope, &target.name, target.span)),
                    Some(name) => self
                        .layer_name(name, scope, builder)
                        .map(|(layer, span)| Naming::new(scope, &layer, span)),
                };
                let result =
                    naming.and_then(|naming| self.eval(value, scope, builder, Some(&naming)));
                let value = result.unwrap_or(Value::Poison);
                scope.vars.insert(
                    target.name.clone(),
                    Binding {
                        value,
                        span: target.span,
                    },
                );
            }
            Stmt::If {
                cond,
                then,
                otherwise,
            } => {
                let Ok(cond_value) = self.eval(cond, scope, builder, None) else {
                    return;
                };
                match cond_value {
                    Value::Bool(true) => self.run_body(then, scope, builder),
                    Value::Bool(false) => self.run_body(otherwise, scope, builder),
                    Value::Poison => {}
                    other => self.errors.push(
                        Diagnostic::error(
                            cond.span,
                            format!(
                                "an `if` condition must be a boolean, but this is {}",
                                other.describe()
                            ),
                        )
                        .with_hint("compare it: `if stride != 1 { .. }`"),
                    ),
                }
            }
            Stmt::For {
                var,
                start,
                end,
                body,
            } => {
                let (Ok(first), Ok(last)) = (
                    self.eval_int(start, scope, builder),
                    self.eval_int(end, scope, builder),
                ) else {
                    return;
                };
                if last.saturating_sub(first) > MAX_NODES as i64 {
                    self.errors.push(Diagnostic::error(
                        start.span.to(end.span),
                        format!(
                            "the loop runs {} times, more than the {MAX_NODES} allowed",
                            last.saturating_sub(first)
                        ),
                    ));
                    return;
                }
                let saved = scope.vars.get(&var.name).cloned();
                for index in first..last {
                    scope.vars.insert(
                        var.name.clone(),
                        Binding {
                            value: Value::Int(index),
                            span: var.span,
                        },
                    );
                    self.run_body(body, scope, builder);
                    if builder.graph.nodes.len() > MAX_NODES {
                        break;
                    }
                }
                match saved {
                    Some(binding) => scope.vars.insert(var.name.clone(), binding),
                    None => scope.vars.remove(&var.name),
                };
            }
            Stmt::Repeat { count, body } => {
                let Ok(count_value) = self.eval_int(count, scope, builder) else {
                    return;
                };
                if count_value < 0 || count_value > MAX_NODES as i64 {
                    self.errors.push(
                        Diagnostic::error(count.span, format!("cannot repeat {count_value} times"))
                            .with_hint(format!("the count must be between 0 and {MAX_NODES}")),
                    );
                    return;
                }
                for _ in 0..count_value {
                    self.run_body(body, scope, builder);
                    if builder.graph.nodes.len() > MAX_NODES {
                        break;
                    }
                }
            }
            Stmt::Return {
                value, layer_name, ..
            } => {
                // Blocks handle their `return`; in a network it is reported by `lower_network`.
                if !scope.block_stack.is_empty() {
                    let naming = match layer_name {
                        None => Ok(None),
                        Some(name) => self
                            .layer_name(name, scope, builder)
                            .map(|(layer, span)| Some(Naming::new(scope, &layer, span))),
                    };
                    let result =
                        naming.and_then(|naming| self.eval(value, scope, builder, naming.as_ref()));
                    scope.vars.insert(
                        RETURN_SLOT.to_string(),
                        Binding {
                            value: result.unwrap_or(Value::Poison),
                            span: value.span,
                        },
                    );
                }
            }
        }
        if builder.graph.nodes.len() > MAX_NODES
            && !self
                .errors
                .iter()
                .any(|error| error.message.contains("too many nodes"))
        {
            let span = match stmt {
                Stmt::Assign { value, .. } => value.span,
                _ => Span::default(),
            };
            self.errors.push(Diagnostic::error(
                span,
                format!("the network unrolls to too many nodes (more than {MAX_NODES})"),
            ));
        }
    }
}
