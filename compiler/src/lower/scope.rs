//! Names in scope: the variables of a network or block body, and file-level constants.
//!
//! File-level constants are evaluated lazily, on first use, so that their order in the file does
//! not matter; a constant that is still being evaluated when it is used again depends on itself.

use std::collections::HashMap;

use super::value::Value;
use super::{Builder, Eval, Lowerer, Stop};
use crate::diagnostics::{Diagnostic, Span};
use crate::syntax::ast;

/// The variable a block's `return` writes; not a valid identifier, so it cannot clash.
pub(super) const RETURN_SLOT: &str = "<return>";

/// The state of a file-level constant.
pub(super) enum GlobalConst<'a> {
    Pending(&'a ast::ConstDef),
    Evaluating,
    Done(Value),
    Failed,
}

/// A variable binding in a scope.
#[derive(Clone)]
pub(super) struct Binding {
    pub(super) value: Value,
    pub(super) span: Span,
}

/// Where statements run: the variables, the layer-name prefix and the block nesting.
pub(super) struct Scope {
    pub(super) vars: HashMap<String, Binding>,
    /// The layer-name prefix, with a trailing `.` unless empty.
    pub(super) prefix: String,
    pub(super) depth: usize,
    /// The name and call span of each block being instantiated, outermost first.
    pub(super) block_stack: Vec<(String, Span)>,
}

impl Scope {
    /// The scope of a network body or of a file-level constant: no variables, no prefix.
    pub(super) fn top_level() -> Self {
        Scope {
            vars: HashMap::new(),
            prefix: String::new(),
            depth: 0,
            block_stack: Vec::new(),
        }
    }
}

impl<'a> Lowerer<'a> {
    /// The value of a variable or of a file-level constant, or `None` if `name` is neither.
    pub(super) fn lookup(&mut self, name: &str, scope: &Scope) -> Option<Value> {
        if let Some(binding) = scope.vars.get(name) {
            return Some(binding.value.clone());
        }
        if self.consts.contains_key(name) {
            return Some(
                self.global_const(name, Span::default())
                    .unwrap_or(Value::Poison),
            );
        }
        None
    }

    /// The value of a file-level constant, evaluated on first use.
    pub(super) fn global_const(&mut self, name: &str, use_span: Span) -> Eval<Value> {
        let Some((&key, state)) = self.consts.get_key_value(name) else {
            return Err(Stop);
        };
        match state {
            GlobalConst::Done(value) => Ok(value.clone()),
            GlobalConst::Failed => Err(Stop),
            GlobalConst::Evaluating => {
                self.errors.push(Diagnostic::error(
                    use_span,
                    format!("constant `{name}` depends on itself"),
                ));
                Err(Stop)
            }
            GlobalConst::Pending(constant) => {
                let constant = *constant;
                self.consts.insert(key, GlobalConst::Evaluating);
                let mut scope = Scope::top_level();
                let mut builder = Builder::new("");
                let result = self.eval(&constant.value, &mut scope, &mut builder, None);
                let result = match result {
                    Ok(value) if value.is_tensor() => {
                        self.errors.push(Diagnostic::error(
                            constant.value.span,
                            "a constant cannot hold a tensor",
                        ));
                        Err(Stop)
                    }
                    other => other,
                };
                let state = match &result {
                    Ok(value) => GlobalConst::Done(value.clone()),
                    Err(Stop) => GlobalConst::Failed,
                };
                self.consts.insert(key, state);
                result
            }
        }
    }
}
