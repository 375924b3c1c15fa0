//! Blocks: instantiating a user-defined `block` at a call.
//!
//! A block is a macro with names: each call binds its arguments to the parameters (positional
//! first, then keywords, then defaults, which may use earlier parameters), runs the body in a new
//! scope whose layer-name prefix is the call's name, and returns the value of its `return`.
//! Blocks cannot recurse, since they are expanded at compile time.

use std::collections::HashMap;

use super::naming::Naming;
use super::scope::{Binding, RETURN_SLOT, Scope};
use super::value::Value;
use super::{Builder, Eval, Lowerer, MAX_BLOCK_DEPTH, Stop, did_you_mean};
use crate::diagnostics::{Diagnostic, Span};
use crate::syntax::ast;

impl<'a> Lowerer<'a> {
    /// Instantiates `block` at a call: binds the arguments, runs the body, returns its `return`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn call_block(
        &mut self,
        block: &'a ast::BlockDef,
        callee: &'a ast::Ident,
        args: &'a [ast::Arg],
        span: Span,
        scope: &mut Scope,
        builder: &mut Builder,
        naming: Option<&Naming>,
    ) -> Eval<Value> {
        if scope.depth >= MAX_BLOCK_DEPTH
            || scope
                .block_stack
                .iter()
                .any(|(name, _)| *name == block.name.name)
        {
            self.errors.push(
                Diagnostic::error(callee.span, format!("block `{}` calls itself", block.name.name))
                    .with_secondary(block.name.span, "defined here")
                    .with_hint("blocks are expanded at compile time, so they cannot be recursive; use `for` to repeat layers"),
            );
            return Err(Stop);
        }
        // Bind the arguments to the parameters, positional first.
        let mut bound: Vec<Option<(Value, Span)>> = vec![None; block.params.len()];
        let mut failed = false;
        let mut positional = 0;
        for arg in args {
            let value = match self.eval(&arg.value, scope, builder, None) {
                Ok(value) => value,
                Err(Stop) => {
                    failed = true;
                    Value::Poison
                }
            };
            let slot = match &arg.name {
                None => {
                    positional += 1;
                    if positional > block.params.len() {
                        self.errors.push(
                            Diagnostic::error(
                                arg.value.span,
                                format!(
                                    "block `{}` takes {} arguments, but more were given",
                                    block.name.name,
                                    block.params.len()
                                ),
                            )
                            .with_secondary(block.name.span, "defined here"),
                        );
                        failed = true;
                        continue;
                    }
                    positional - 1
                }
                Some(name) => match block
                    .params
                    .iter()
                    .position(|param| param.name.name == name.name)
                {
                    Some(slot) => slot,
                    None => {
                        let mut diagnostic = Diagnostic::error(
                            name.span,
                            format!(
                                "block `{}` has no parameter `{}`",
                                block.name.name, name.name
                            ),
                        )
                        .with_secondary(block.name.span, "defined here");
                        if let Some(similar) = did_you_mean(
                            &name.name,
                            block.params.iter().map(|param| param.name.name.as_str()),
                        ) {
                            diagnostic = diagnostic.with_hint(format!("did you mean `{similar}`?"));
                        }
                        self.errors.push(diagnostic);
                        failed = true;
                        continue;
                    }
                },
            };
            if bound[slot].is_some() {
                self.errors.push(Diagnostic::error(
                    arg.value.span,
                    format!(
                        "parameter `{}` is given twice",
                        block.params[slot].name.name
                    ),
                ));
                failed = true;
                continue;
            }
            bound[slot] = Some((value, arg.value.span));
        }

        let prefix = match naming {
            Some(naming) if naming.transparent => scope.prefix.clone(),
            Some(naming) => format!("{}.", naming.layer),
            None => {
                // A block call nested in an expression takes the name of the statement's target.
                format!("{}{}.", scope.prefix, block.name.name)
            }
        };
        let mut inner = Scope {
            vars: HashMap::new(),
            prefix,
            depth: scope.depth + 1,
            block_stack: scope
                .block_stack
                .iter()
                .cloned()
                .chain([(block.name.name.clone(), span)])
                .collect(),
        };
        for (param, slot) in block.params.iter().zip(bound) {
            let value = match slot {
                Some((value, _)) => value,
                None => match &param.default {
                    Some(default) => {
                        // Defaults see the earlier parameters, so `out = planes` works.
                        self.eval(default, &mut inner, builder, None)
                            .unwrap_or(Value::Poison)
                    }
                    None => {
                        self.errors.push(
                            Diagnostic::error(
                                span,
                                format!(
                                    "block `{}` needs an argument for `{}`",
                                    block.name.name, param.name.name
                                ),
                            )
                            .with_secondary(param.name.span, "parameter declared here"),
                        );
                        failed = true;
                        Value::Poison
                    }
                },
            };
            inner.vars.insert(
                param.name.name.clone(),
                Binding {
                    value,
                    span: param.name.span,
                },
            );
        }
        if failed {
            return Err(Stop);
        }
        let errors_before = self.errors.len();
        self.run_body(&block.body, &mut inner, builder);
        match inner.vars.remove(RETURN_SLOT) {
            Some(Binding {
                value: Value::Poison,
                ..
            }) => Err(Stop),
            Some(binding) => Ok(binding.value),
            None if self.errors.len() > errors_before => Err(Stop),
            None => {
                self.errors.push(
                    Diagnostic::error(
                        block.end,
                        format!("block `{}` does not return a value", block.name.name),
                    )
                    .with_label("add a `return` before this brace")
                    .with_secondary(span, "called here"),
                );
                Err(Stop)
            }
        }
    }
}
