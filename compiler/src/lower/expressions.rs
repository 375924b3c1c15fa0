//! Expressions: literals, variables, unary and binary operators, and calls.
//!
//! Numbers, booleans, strings and lists are computed at compile time; an operator on a tensor
//! becomes a node (two tensors: a broadcasting [`ir::BinaryOp`]; a tensor and a number: an affine
//! map). A call is dispatched to a block of the file or to a row of the built-in table.

use super::builtins::{self, arithmetic};
use super::naming::{Naming, op_name, operator_name};
use super::scope::Scope;
use super::value::Value;
use super::{Builder, Eval, Lowerer, Stop, did_you_mean};
use crate::diagnostics::{Diagnostic, Span};
use crate::ir;
use crate::syntax::ast::{self, BinaryOp, Expr, ExprKind, UnaryOp};

impl<'a> Lowerer<'a> {
    /// Evaluates an expression. `naming` is the layer name of the enclosing assignment, if any.
    pub(super) fn eval(
        &mut self,
        expr: &'a Expr,
        scope: &mut Scope,
        builder: &mut Builder,
        naming: Option<&Naming>,
    ) -> Eval<Value> {
        match &expr.kind {
            ExprKind::Int(value) => Ok(Value::Int(*value)),
            ExprKind::Float(value) => Ok(Value::Float(*value)),
            ExprKind::Bool(value) => Ok(Value::Bool(*value)),
            ExprKind::Str(value) => Ok(Value::Str(value.clone())),
            ExprKind::List(items) => {
                let mut values = Vec::new();
                let mut failed = false;
                for item in items {
                    match self.eval(item, scope, builder, naming) {
                        Ok(value) => values.push(value),
                        Err(Stop) => failed = true,
                    }
                }
                if failed {
                    Err(Stop)
                } else {
                    Ok(Value::List(values))
                }
            }
            ExprKind::Var(name) => match self.lookup(name, scope) {
                Some(Value::Poison) => Err(Stop),
                Some(value) => Ok(value),
                None => {
                    let candidates: Vec<String> = scope
                        .vars
                        .keys()
                        .cloned()
                        .chain(self.consts.keys().map(|name| name.to_string()))
                        .collect();
                    let mut diagnostic =
                        Diagnostic::error(expr.span, format!("`{name}` is not defined"))
                            .with_label("not found in this scope");
                    if let Some(similar) = did_you_mean(name, candidates.iter().map(String::as_str))
                    {
                        diagnostic = diagnostic.with_hint(format!("did you mean `{similar}`?"));
                    } else if builtins::find(name).is_some()
                        || self.blocks.contains_key(name.as_str())
                    {
                        diagnostic = diagnostic
                            .with_hint(format!("`{name}` is a layer; call it: `{name}(x, ..)`"));
                    }
                    self.errors.push(diagnostic);
                    Err(Stop)
                }
            },
            ExprKind::Unary { op, operand } => {
                let value = self.eval(operand, scope, builder, naming)?;
                match (op, value) {
                    (UnaryOp::Neg, Value::Int(value)) => Ok(Value::Int(
                        value
                            .checked_neg()
                            .ok_or_else(|| self.overflow(expr.span))?,
                    )),
                    (UnaryOp::Neg, Value::Float(value)) => Ok(Value::Float(-value)),
                    (UnaryOp::Neg, Value::Tensor(value)) => arithmetic::affine(
                        self,
                        builder,
                        value,
                        -1.0,
                        0.0,
                        expr.span,
                        &operator_name(naming, scope, "neg"),
                    ),
                    (UnaryOp::Not, Value::Bool(value)) => Ok(Value::Bool(!value)),
                    (_, Value::Poison) => Err(Stop),
                    (op, value) => {
                        let symbol = if *op == UnaryOp::Neg { "-" } else { "!" };
                        self.errors.push(Diagnostic::error(
                            expr.span,
                            format!("cannot apply `{symbol}` to {}", value.describe()),
                        ));
                        Err(Stop)
                    }
                }
            }
            ExprKind::Binary { op, lhs, rhs } => {
                let left = self.eval(lhs, scope, builder, naming);
                let right = self.eval(rhs, scope, builder, naming);
                let (left, right) = (left?, right?);
                let node_name = operator_name(naming, scope, op_name(*op));
                self.binary(*op, left, right, expr, builder, &node_name)
            }
            ExprKind::Call { callee, args } => {
                self.call(callee, args, expr.span, scope, builder, naming)
            }
        }
    }

    /// Reports an integer overflow at `span`.
    fn overflow(&mut self, span: Span) -> Stop {
        self.errors.push(
            Diagnostic::error(span, "integer arithmetic overflows")
                .with_label("the result does not fit in 64 bits"),
        );
        Stop
    }

    /// Applies a binary operator to two values; on tensors it emits a node named `node_name`.
    fn binary(
        &mut self,
        op: BinaryOp,
        left: Value,
        right: Value,
        expr: &'a Expr,
        builder: &mut Builder,
        node_name: &str,
    ) -> Eval<Value> {
        use Value::{Bool, Float, Int, Tensor};
        let span = expr.span;
        let result = match (op, left, right) {
            (_, Value::Poison, _) | (_, _, Value::Poison) => return Err(Stop),
            (BinaryOp::Add, Int(a), Int(b)) => {
                Int(a.checked_add(b).ok_or_else(|| self.overflow(span))?)
            }
            (BinaryOp::Sub, Int(a), Int(b)) => {
                Int(a.checked_sub(b).ok_or_else(|| self.overflow(span))?)
            }
            (BinaryOp::Mul, Int(a), Int(b)) => {
                Int(a.checked_mul(b).ok_or_else(|| self.overflow(span))?)
            }
            (BinaryOp::Div | BinaryOp::Rem, Int(_), Int(0)) => {
                self.errors
                    .push(Diagnostic::error(span, "division by zero"));
                return Err(Stop);
            }
            (BinaryOp::Div, Int(a), Int(b)) => {
                Int(a.checked_div_euclid(b).ok_or_else(|| self.overflow(span))?)
            }
            (BinaryOp::Rem, Int(a), Int(b)) => {
                Int(a.checked_rem_euclid(b).ok_or_else(|| self.overflow(span))?)
            }
            (
                op @ (BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div),
                a @ (Int(_) | Float(_)),
                b @ (Int(_) | Float(_)),
            ) => {
                let (a, b) = (a.as_float().expect("number"), b.as_float().expect("number"));
                Float(match op {
                    BinaryOp::Add => a + b,
                    BinaryOp::Sub => a - b,
                    BinaryOp::Mul => a * b,
                    _ => a / b,
                })
            }
            (BinaryOp::Eq, a, b) if a.comparable(&b) => Bool(a.loosely_equals(&b)),
            (BinaryOp::Ne, a, b) if a.comparable(&b) => Bool(!a.loosely_equals(&b)),
            (
                op @ (BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge),
                a @ (Int(_) | Float(_)),
                b @ (Int(_) | Float(_)),
            ) => {
                let ordering = match (&a, &b) {
                    (Int(a), Int(b)) => a.cmp(b),
                    _ => a
                        .as_float()
                        .expect("number")
                        .total_cmp(&b.as_float().expect("number")),
                };
                Bool(match op {
                    BinaryOp::Lt => ordering.is_lt(),
                    BinaryOp::Le => ordering.is_le(),
                    BinaryOp::Gt => ordering.is_gt(),
                    _ => ordering.is_ge(),
                })
            }
            (BinaryOp::And, Bool(a), Bool(b)) => Bool(a && b),
            (BinaryOp::Or, Bool(a), Bool(b)) => Bool(a || b),
            (
                op @ (BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div),
                Tensor(a),
                Tensor(b),
            ) => {
                let ir_op = match op {
                    BinaryOp::Add => ir::BinaryOp::Add,
                    BinaryOp::Sub => ir::BinaryOp::Sub,
                    BinaryOp::Mul => ir::BinaryOp::Mul,
                    _ => ir::BinaryOp::Div,
                };
                return arithmetic::binary(self, builder, ir_op, a, b, span, node_name);
            }
            (
                op @ (BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div),
                Tensor(a),
                b @ (Int(_) | Float(_)),
            ) => {
                let b = b.as_float().expect("number");
                let (scale, shift) = match op {
                    BinaryOp::Add => (1.0, b),
                    BinaryOp::Sub => (1.0, -b),
                    BinaryOp::Mul => (b, 0.0),
                    _ => (1.0 / b, 0.0),
                };
                return arithmetic::affine(self, builder, a, scale, shift, span, node_name);
            }
            (
                op @ (BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul),
                a @ (Int(_) | Float(_)),
                Tensor(b),
            ) => {
                let a = a.as_float().expect("number");
                let (scale, shift) = match op {
                    BinaryOp::Add => (1.0, a),
                    BinaryOp::Sub => (-1.0, a),
                    _ => (a, 0.0),
                };
                return arithmetic::affine(self, builder, b, scale, shift, span, node_name);
            }
            (op, a, b) => {
                let mut diagnostic = Diagnostic::error(
                    span,
                    format!(
                        "cannot apply `{}` to {} and {}",
                        op.symbol(),
                        a.describe(),
                        b.describe()
                    ),
                );
                if matches!(op, BinaryOp::Rem) && (a.is_tensor() || b.is_tensor()) {
                    diagnostic = diagnostic.with_hint("tensors support `+`, `-`, `*` and `/`");
                }
                self.errors.push(diagnostic);
                return Err(Stop);
            }
        };
        Ok(result)
    }

    /// Calls a block of the file or a built-in; anything else is an unknown layer.
    fn call(
        &mut self,
        callee: &'a ast::Ident,
        args: &'a [ast::Arg],
        span: Span,
        scope: &mut Scope,
        builder: &mut Builder,
        naming: Option<&Naming>,
    ) -> Eval<Value> {
        if let Some(block) = self.blocks.get(callee.name.as_str()).copied() {
            return self.call_block(block, callee, args, span, scope, builder, naming);
        }
        if let Some(builtin) = builtins::find(&callee.name) {
            return self.call_builtin(builtin, callee, args, span, scope, builder, naming);
        }
        let candidates: Vec<String> = builtins::builtin_names()
            .map(String::from)
            .chain(self.blocks.keys().map(|name| name.to_string()))
            .collect();
        let suggestion = builtins::pytorch_alias(&callee.name)
            .map(String::from)
            .or_else(|| {
                did_you_mean(&callee.name, candidates.iter().map(String::as_str)).map(String::from)
            });
        let mut diagnostic =
            Diagnostic::error(callee.span, format!("unknown layer `{}`", callee.name))
                .with_label("not a built-in layer or a block of this file");
        if let Some(suggestion) = suggestion {
            diagnostic = diagnostic.with_hint(format!("did you mean `{suggestion}`?"));
        }
        self.errors.push(diagnostic);
        // Evaluate the arguments anyway, so their own mistakes are reported too.
        for arg in args {
            let _ = self.eval(&arg.value, scope, builder, None);
        }
        Err(Stop)
    }

    /// Evaluates an expression that must be an integer, such as a loop bound.
    pub(super) fn eval_int(
        &mut self,
        expr: &'a Expr,
        scope: &mut Scope,
        builder: &mut Builder,
    ) -> Eval<i64> {
        match self.eval(expr, scope, builder, None)? {
            Value::Int(value) => Ok(value),
            Value::Poison => Err(Stop),
            other => {
                self.errors.push(Diagnostic::error(
                    expr.span,
                    format!("expected an integer, but this is {}", other.describe()),
                ));
                Err(Stop)
            }
        }
    }
}
