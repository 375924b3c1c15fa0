//! Lowering: from the AST to one shape-inferred IR graph per network.
//!
//! Lowering is an evaluator. Constants and integer arithmetic are computed, `if` is decided,
//! `for` and `repeat` are unrolled, blocks are instantiated with their layer-name prefix, and every
//! layer call becomes IR nodes whose types [`infer`](crate::ir::infer::infer) computes on the spot.
//! So every shape error is found here, with the source span of the call that caused it.
//!
//! Errors do not stop lowering: a statement that fails binds its variable to a poisoned value,
//! whose later uses are skipped silently, so each mistake is reported once and all of them at once.

mod builtins;
mod value;

use std::collections::HashMap;

use crate::diagnostics::{Diagnostic, Diagnostics, Span};
use crate::ir::{self, Graph, Module, TensorType};
use crate::syntax::ast::{self, BinaryOp, Expr, ExprKind, LayerName, Stmt, UnaryOp};
use value::Value;

/// Options of lowering.
#[derive(Clone, Debug, Default)]
pub struct LowerOptions {
    /// Values for symbolic dimensions that replace those of the `where` clauses, e.g. `seq = 512`.
    pub dims: Vec<(String, i64)>,
}

/// Lowers every network of `file`.
pub fn lower(file: &ast::File, options: &LowerOptions) -> Result<Module, Diagnostics> {
    let mut lowerer = Lowerer::new(file);
    lowerer.check_item_names(file);
    let mut module = Module::default();
    for item in &file.items {
        if let ast::Item::Network(network) = item
            && let Some(graph) = lowerer.lower_network(network, options)
        {
            module.networks.push(graph);
        }
    }
    // Constants no network used are still part of the file, so their mistakes are still errors.
    for item in &file.items {
        if let ast::Item::Const(constant) = item {
            let _ = lowerer.global_const(&constant.name.name, constant.name.span);
        }
    }
    if module.networks.is_empty() && lowerer.errors.is_empty() {
        lowerer.errors.push(
            Diagnostic::error(Span::new(0, 0), "the file defines no network")
                .with_hint("add one: `network mlp(x: f32[1, 784]) -> (y) { y = linear(x, 10) }`"),
        );
    }
    if lowerer.errors.is_empty() {
        Ok(module)
    } else {
        lowerer
            .errors
            .sort_by_key(|diagnostic| (diagnostic.span.start, diagnostic.span.end));
        lowerer.errors.dedup();
        Err(Diagnostics(lowerer.errors))
    }
}

/// The most nested block calls allowed; deeper means a block (indirectly) calls itself.
const MAX_BLOCK_DEPTH: usize = 64;
/// The most nodes one network may unroll to, so that a runaway loop is an error, not a hang.
const MAX_NODES: usize = 1_000_000;

/// Evaluation stopped; the reason is already in `Lowerer::errors` (or was reported earlier).
#[derive(Debug)]
struct Stop;

type Eval<T> = Result<T, Stop>;

/// The state of a file-level constant.
enum GlobalConst<'a> {
    Pending(&'a ast::ConstDef),
    Evaluating,
    Done(Value),
    Failed,
}

struct Lowerer<'a> {
    consts: HashMap<&'a str, GlobalConst<'a>>,
    blocks: HashMap<&'a str, &'a ast::BlockDef>,
    errors: Vec<Diagnostic>,
}

/// A variable binding in a scope.
#[derive(Clone)]
struct Binding {
    value: Value,
    span: Span,
}

/// Where statements run: the variables, the layer-name prefix and the block nesting.
struct Scope {
    vars: HashMap<String, Binding>,
    /// The layer-name prefix, with a trailing `.` unless empty.
    prefix: String,
    depth: usize,
    /// The name and call span of each block being instantiated, outermost first.
    block_stack: Vec<(String, Span)>,
}

/// The graph under construction, with what is needed to report duplicate weight names.
struct Builder {
    graph: Graph,
    param_spans: HashMap<String, Span>,
    /// Where `tied` may find weights: param name to value.
    param_values: HashMap<String, ir::Value>,
}

/// The naming context of the statement being lowered.
#[derive(Clone)]
struct Naming {
    /// The full layer name for parameterized layers (prefix + `as` name or target variable).
    layer: String,
    /// The span of the `as` name, or of the target variable.
    span: Span,
    /// `as _`: a block called this way adds no level to the names of its layers.
    transparent: bool,
}

impl Naming {
    /// The naming of `layer` (relative to the scope's prefix); an empty `layer` is `as _`.
    fn new(scope: &Scope, layer: &str, span: Span) -> Self {
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

impl<'a> Lowerer<'a> {
    fn new(file: &'a ast::File) -> Self {
        let mut consts = HashMap::new();
        let mut blocks = HashMap::new();
        for item in &file.items {
            match item {
                ast::Item::Const(constant) => {
                    consts
                        .entry(constant.name.name.as_str())
                        .or_insert(GlobalConst::Pending(constant));
                }
                ast::Item::Block(block) => {
                    blocks.entry(block.name.name.as_str()).or_insert(block);
                }
                ast::Item::Network(_) => {}
            }
        }
        Lowerer {
            consts,
            blocks,
            errors: Vec::new(),
        }
    }

    /// Reports items that share a name, and blocks that shadow built-in layers.
    fn check_item_names(&mut self, file: &'a ast::File) {
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for item in &file.items {
            let (name, kind) = match item {
                ast::Item::Const(constant) => (&constant.name, "constant"),
                ast::Item::Block(block) => (&block.name, "block"),
                ast::Item::Network(network) => (&network.name, "network"),
            };
            if kind == "block" && builtins::is_builtin(&name.name) {
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

    fn lower_network(
        &mut self,
        network: &'a ast::NetworkDef,
        options: &LowerOptions,
    ) -> Option<Graph> {
        let errors_before = self.errors.len();
        let mut builder = Builder {
            graph: Graph::new(&network.name.name),
            param_spans: HashMap::new(),
            param_values: HashMap::new(),
        };
        let mut scope = Scope {
            vars: HashMap::new(),
            prefix: String::new(),
            depth: 0,
            block_stack: Vec::new(),
        };

        // Dimensions: the `where` clause, then the overrides of the options.
        for (name, expr) in &network.dims {
            let value = match options.dims.iter().find(|(dim, _)| *dim == name.name) {
                Some((_, value)) => Ok(Value::Int(*value)),
                None => self.eval(expr, &mut scope, &mut builder, None),
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
        // Inputs.
        for input in &network.inputs {
            let Ok(ty) = self.eval_type(&input.ty, &mut scope, &mut builder) else {
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

        self.run_body(&network.body, &mut scope, &mut builder);
        if network
            .body
            .iter()
            .any(|stmt| matches!(stmt, Stmt::Return { .. }))
        {
            for stmt in &network.body {
                if let Stmt::Return { span, .. } = stmt {
                    self.errors.push(
                        Diagnostic::error(*span, "a network has no `return`")
                            .with_hint("a network's outputs are the variables named after `->`: assign to them instead"),
                    );
                }
            }
        }

        // Outputs.
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
                && let Ok(declared_ty) = self.eval_type(declared, &mut scope, &mut builder)
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
        if network.outputs.is_empty() {
            self.errors.push(Diagnostic::error(
                network.name.span,
                "a network needs at least one output",
            ));
        }

        (self.errors.len() == errors_before).then_some(builder.graph)
    }

    fn run_body(&mut self, body: &'a [Stmt], scope: &mut Scope, builder: &mut Builder) {
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

    /// Evaluates a layer name given with `as`, relative to the current prefix; `as _` gives "".
    fn layer_name(
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
    fn expect_dim(&mut self, value: &Value, span: Span) -> Eval<usize> {
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

    fn eval_int(&mut self, expr: &'a Expr, scope: &mut Scope, builder: &mut Builder) -> Eval<i64> {
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

    fn lookup(&mut self, name: &str, scope: &Scope) -> Option<Value> {
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
    fn global_const(&mut self, name: &str, use_span: Span) -> Eval<Value> {
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
                let mut scope = Scope {
                    vars: HashMap::new(),
                    prefix: String::new(),
                    depth: 0,
                    block_stack: Vec::new(),
                };
                let mut builder = Builder {
                    graph: Graph::new(""),
                    param_spans: HashMap::new(),
                    param_values: HashMap::new(),
                };
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

    /// Evaluates an expression. `naming` is the layer name of the enclosing assignment, if any.
    fn eval(
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
                    } else if builtins::is_builtin(name) || self.blocks.contains_key(name.as_str())
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
                    (UnaryOp::Neg, Value::Tensor(value)) => builtins::affine(
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

    fn overflow(&mut self, span: Span) -> Stop {
        self.errors.push(
            Diagnostic::error(span, "integer arithmetic overflows")
                .with_label("the result does not fit in 64 bits"),
        );
        Stop
    }

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
                return builtins::binary(self, builder, ir_op, a, b, span, node_name);
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
                return builtins::affine(self, builder, a, scale, shift, span, node_name);
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
                return builtins::affine(self, builder, b, scale, shift, span, node_name);
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
        if builtins::is_builtin(&callee.name) {
            return builtins::call(self, callee, args, span, scope, builder, naming);
        }
        let candidates: Vec<String> = builtins::names()
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

    #[allow(clippy::too_many_arguments)]
    fn call_block(
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

/// The node name of an operator: the statement's layer name, or the block prefix and `op`.
fn operator_name(naming: Option<&Naming>, scope: &Scope, op: &str) -> String {
    match naming {
        Some(naming) => naming.layer.clone(),
        None => format!("{}{op}", scope.prefix),
    }
}

/// The IR name of an arithmetic operator, for node names.
fn op_name(op: BinaryOp) -> &'static str {
    match op {
        BinaryOp::Add => "add",
        BinaryOp::Sub => "sub",
        BinaryOp::Mul => "mul",
        BinaryOp::Div => "div",
        _ => "op",
    }
}

/// The variable a block's `return` writes; not a valid identifier, so it cannot clash.
const RETURN_SLOT: &str = "<return>";

/// The candidate closest to `name`, if any is close enough to be a likely typo.
pub(crate) fn did_you_mean<'n>(
    name: &str,
    candidates: impl Iterator<Item = &'n str>,
) -> Option<&'n str> {
    candidates
        .filter(|candidate| !candidate.starts_with('<'))
        .map(|candidate| (strsim::damerau_levenshtein(name, candidate), candidate))
        .filter(|(distance, candidate)| *distance <= (name.len().max(candidate.len()) / 3).max(1))
        .min()
        .map(|(_, candidate)| candidate)
}
