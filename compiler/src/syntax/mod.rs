//! The front end's first stage: `.nn` text to an [`ast::File`].
//!
//! The grammar lives in `nn.pest`. Parsing is pest's; this module turns pest's pairs into the AST
//! with one `parse_x` function per grammar rule, and pest's errors into [`Diagnostic`]s that name
//! tokens the way a person would ("expected `)`").

pub mod ast;
pub mod tokens;

use pest::Parser as _;
use pest::error::{ErrorVariant, InputLocation};
use pest::iterators::Pair;

use crate::diagnostics::{Diagnostic, Diagnostics, Span};
use crate::ir::DType;
use ast::{
    Arg, BinaryOp, BlockDef, BlockParam, ConstDef, Expr, ExprKind, File, Ident, InputDecl, Item,
    LayerName, NameSegment, NetworkDef, OutputDecl, Stmt, TypeExpr, UnaryOp,
};

/// The pest parser generated from `nn.pest`.
#[derive(pest_derive::Parser)]
#[grammar = "syntax/nn.pest"]
pub struct NnParser;

/// Parses a whole `.nn` source text.
pub fn parse(source: &str) -> Result<File, Diagnostics> {
    let mut pairs = NnParser::parse(Rule::file, source)
        .map_err(|error| Diagnostics(vec![syntax_error(&error, source)]))?;
    let file_pair = pairs.next().expect("`file` matched, so there is one pair");
    let mut parser = AstBuilder { errors: Vec::new() };
    let file = parser.parse_file(file_pair);
    if parser.errors.is_empty() {
        Ok(file)
    } else {
        Err(Diagnostics(parser.errors))
    }
}

/// A person's name for what a grammar rule matches, for "expected ..." messages.
pub fn rule_name(rule: Rule) -> &'static str {
    match rule {
        Rule::EOI => "end of input",
        Rule::WHITESPACE => "whitespace",
        Rule::COMMENT => "a comment",
        Rule::file => "`const`, `block` or `network`",
        Rule::item => "`const`, `block` or `network`",
        Rule::stmt => "a statement",
        Rule::primary => "an expression",
        Rule::ident_char => "a letter, digit or `_`",
        Rule::keyword => "a keyword",
        Rule::exponent => "an exponent",
        Rule::const_item | Rule::const_stmt => "a constant",
        Rule::block_item => "a block",
        Rule::param_list | Rule::param => "a block parameter",
        Rule::network_item => "a network",
        Rule::input_list | Rule::input => "a network input",
        Rule::outputs | Rule::output => "a network output",
        Rule::where_clause => "`where`",
        Rule::dim_binding => "a dimension binding",
        Rule::tensor_type => "a tensor type",
        Rule::dtype => "an element type (`f32` or `i64`)",
        Rule::body => "`{`",
        Rule::assign_stmt => "a statement",
        Rule::layer_name => "`as`",
        Rule::name_path | Rule::name_segment => "a layer name",
        Rule::name_index => "`[`",
        Rule::if_stmt => "`if`",
        Rule::for_stmt => "`for`",
        Rule::repeat_stmt => "`repeat`",
        Rule::return_stmt => "`return`",
        Rule::expr
        | Rule::or_expr
        | Rule::and_expr
        | Rule::cmp_expr
        | Rule::add_expr
        | Rule::mul_expr
        | Rule::unary_expr
        | Rule::paren_expr => "an expression",
        Rule::call => "a call",
        Rule::arg_list | Rule::arg => "an argument",
        Rule::keyword_arg => "a keyword argument",
        Rule::list => "a list",
        Rule::cmp_op => "a comparison",
        Rule::add_op => "`+` or `-`",
        Rule::mul_op => "`*`, `/` or `%`",
        Rule::unary_op => "`-` or `!`",
        Rule::op_or => "`||`",
        Rule::op_and => "`&&`",
        Rule::ident => "a name",
        Rule::int => "an integer",
        Rule::float => "a number",
        Rule::boolean => "`true` or `false`",
        Rule::string => "a string",
        Rule::kw_const => "`const`",
        Rule::kw_block => "`block`",
        Rule::kw_network => "`network`",
        Rule::kw_where => "`where`",
        Rule::kw_return => "`return`",
        Rule::kw_if => "`if`",
        Rule::kw_else => "`else`",
        Rule::kw_for => "`for`",
        Rule::kw_in => "`in`",
        Rule::kw_repeat => "`repeat`",
        Rule::kw_as => "`as`",
        Rule::lparen => "`(`",
        Rule::rparen => "`)`",
        Rule::lbracket => "`[`",
        Rule::rbracket => "`]`",
        Rule::lbrace => "`{`",
        Rule::rbrace => "`}`",
        Rule::comma => "`,`",
        Rule::colon => "`:`",
        Rule::semi => "`;`",
        Rule::eq => "`=`",
        Rule::dot => "`.`",
        Rule::dotdot => "`..`",
        Rule::arrow => "`->`",
    }
}

/// Rules that can start an expression; when several are expected at once, "an expression" says it.
const EXPRESSION_STARTS: [Rule; 10] = [
    Rule::expr,
    Rule::unary_op,
    Rule::float,
    Rule::int,
    Rule::boolean,
    Rule::string,
    Rule::list,
    Rule::call,
    Rule::paren_expr,
    Rule::ident,
];

/// Rules that can follow a complete operand; their alternatives are not worth listing one by one.
const OPERATORS: [Rule; 5] = [
    Rule::cmp_op,
    Rule::add_op,
    Rule::mul_op,
    Rule::op_or,
    Rule::op_and,
];

fn syntax_error(error: &pest::error::Error<Rule>, source: &str) -> Diagnostic {
    let offset = match error.location {
        InputLocation::Pos(offset) => offset,
        InputLocation::Span((start, _)) => start,
    };
    let span = token_span(source, offset);
    let found = describe_found(source, offset);
    match &error.variant {
        ErrorVariant::ParsingError { positives, .. } => {
            let mut expected: Vec<&str> = Vec::new();
            let expression = positives
                .iter()
                .filter(|rule| EXPRESSION_STARTS.contains(rule))
                .count()
                >= 2;
            if expression {
                expected.push("an expression");
            }
            if positives.iter().any(|rule| OPERATORS.contains(rule)) {
                expected.push("an operator");
            }
            for rule in positives {
                let skip =
                    (expression && EXPRESSION_STARTS.contains(rule)) || OPERATORS.contains(rule);
                let name = rule_name(*rule);
                if !skip && !expected.contains(&name) {
                    expected.push(name);
                }
            }
            let message = match expected.as_slice() {
                [] => format!("unexpected {found}"),
                [only] => format!("expected {only}, found {found}"),
                [init @ .., last] => {
                    format!("expected {} or {last}, found {found}", init.join(", "))
                }
            };
            let mut diagnostic = Diagnostic::error(span, message).with_label("unexpected here");
            if let Some(hint) = syntax_hint(source, offset, positives) {
                diagnostic = diagnostic.with_hint(hint);
            }
            diagnostic
        }
        ErrorVariant::CustomError { message } => Diagnostic::error(span, message.clone()),
    }
}

/// A hint for the common syntax mistakes.
fn syntax_hint(source: &str, offset: usize, positives: &[Rule]) -> Option<String> {
    let rest = &source[offset..];
    if rest.starts_with('#') || rest.starts_with('\'') || rest.starts_with('$') {
        return Some("`.nn` files use `//` comments and `\"` strings, so that `network!` can read them as Rust tokens".into());
    }
    if rest.starts_with(':') && positives.contains(&Rule::eq) {
        return Some("bindings are written `name = value`, without a type".into());
    }
    if positives.contains(&Rule::arrow) {
        return Some("a network declares its outputs after `->`: `network mlp(x: f32[1, 784]) -> (logits) { .. }`".into());
    }
    if source[..offset].trim_end().ends_with("let") {
        return Some("bindings need no `let`: write `name = value`".into());
    }
    if rest.starts_with('"') && !rest[1..].lines().next().unwrap_or("").contains('"') {
        return Some("this string is not closed before the end of the line".into());
    }
    None
}

/// The span of the token at `offset`, or of one character, for carets.
fn token_span(source: &str, offset: usize) -> Span {
    let rest = &source[offset.min(source.len())..];
    let length = match rest.chars().next() {
        None => 0,
        Some(c) if c.is_alphanumeric() || c == '_' => rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len()),
        Some(c) => c.len_utf8(),
    };
    Span::new(offset, offset + length)
}

/// What the parser found at `offset`, for "found ..." messages.
fn describe_found(source: &str, offset: usize) -> String {
    let span = token_span(source, offset);
    let text = &source[span.range()];
    if text.is_empty() {
        "end of input".to_string()
    } else if text.starts_with('\n') || text.starts_with('\r') {
        "end of line".to_string()
    } else {
        format!("`{text}`")
    }
}

/// The span of a pair, from its first to its last token: pest's own span of a non-atomic rule
/// also covers the whitespace and comments after it, which carets should not underline.
fn span_of(pair: &Pair<'_, Rule>) -> Span {
    let start = pair.as_span().start();
    let mut last = pair.clone();
    while let Some(child) = last.clone().into_inner().last() {
        last = child;
    }
    Span::new(start, last.as_span().end())
}

/// Builds the AST from pest pairs, collecting the errors pest cannot see (literal overflow).
struct AstBuilder {
    errors: Vec<Diagnostic>,
}

impl AstBuilder {
    fn parse_file(&mut self, pair: Pair<'_, Rule>) -> File {
        let mut items = Vec::new();
        for item in pair.into_inner() {
            match item.as_rule() {
                Rule::const_item => items.push(Item::Const(self.parse_const(item))),
                Rule::block_item => items.push(Item::Block(self.parse_block(item))),
                Rule::network_item => items.push(Item::Network(self.parse_network(item))),
                Rule::EOI => {}
                rule => unreachable!("parse_file: unexpected {rule:?}"),
            }
        }
        File { items }
    }

    fn parse_const(&mut self, pair: Pair<'_, Rule>) -> ConstDef {
        let mut name = None;
        let mut value = None;
        for child in pair.into_inner() {
            match child.as_rule() {
                Rule::ident => name = Some(parse_ident(child)),
                Rule::expr => value = Some(self.parse_expr(child)),
                Rule::kw_const | Rule::eq | Rule::semi => {}
                rule => unreachable!("parse_const: unexpected {rule:?}"),
            }
        }
        ConstDef {
            name: name.expect("parse_const: name"),
            value: value.expect("parse_const: value"),
        }
    }

    fn parse_block(&mut self, pair: Pair<'_, Rule>) -> BlockDef {
        let mut name = None;
        let mut params = Vec::new();
        let mut body = Vec::new();
        let mut end = Span::default();
        for child in pair.into_inner() {
            match child.as_rule() {
                Rule::ident => name = Some(parse_ident(child)),
                Rule::param_list => {
                    for param in child
                        .into_inner()
                        .filter(|pair| pair.as_rule() == Rule::param)
                    {
                        params.push(self.parse_param(param));
                    }
                }
                Rule::body => (body, end) = self.parse_body(child),
                Rule::kw_block | Rule::lparen | Rule::rparen => {}
                rule => unreachable!("parse_block: unexpected {rule:?}"),
            }
        }
        BlockDef {
            name: name.expect("parse_block: name"),
            params,
            body,
            end,
        }
    }

    fn parse_param(&mut self, pair: Pair<'_, Rule>) -> BlockParam {
        let mut name = None;
        let mut default = None;
        for child in pair.into_inner() {
            match child.as_rule() {
                Rule::ident => name = Some(parse_ident(child)),
                Rule::expr => default = Some(self.parse_expr(child)),
                Rule::eq => {}
                rule => unreachable!("parse_param: unexpected {rule:?}"),
            }
        }
        BlockParam {
            name: name.expect("parse_param: name"),
            default,
        }
    }

    fn parse_network(&mut self, pair: Pair<'_, Rule>) -> NetworkDef {
        let mut name = None;
        let mut inputs = Vec::new();
        let mut outputs = Vec::new();
        let mut dims = Vec::new();
        let mut body = Vec::new();
        for child in pair.into_inner() {
            match child.as_rule() {
                Rule::ident => name = Some(parse_ident(child)),
                Rule::input_list => {
                    for input in child
                        .into_inner()
                        .filter(|pair| pair.as_rule() == Rule::input)
                    {
                        inputs.push(self.parse_input(input));
                    }
                }
                Rule::outputs => {
                    for output in child
                        .into_inner()
                        .filter(|pair| pair.as_rule() == Rule::output)
                    {
                        outputs.push(self.parse_output(output));
                    }
                }
                Rule::where_clause => {
                    for binding in child
                        .into_inner()
                        .filter(|pair| pair.as_rule() == Rule::dim_binding)
                    {
                        dims.push(self.parse_dim_binding(binding));
                    }
                }
                Rule::body => body = self.parse_body(child).0,
                Rule::kw_network | Rule::lparen | Rule::rparen | Rule::arrow => {}
                rule => unreachable!("parse_network: unexpected {rule:?}"),
            }
        }
        NetworkDef {
            name: name.expect("parse_network: name"),
            inputs,
            outputs,
            dims,
            body,
        }
    }

    fn parse_input(&mut self, pair: Pair<'_, Rule>) -> InputDecl {
        let mut children = pair
            .into_inner()
            .filter(|pair| pair.as_rule() != Rule::colon);
        let name = parse_ident(children.next().expect("parse_input: name"));
        let ty = self.parse_tensor_type(children.next().expect("parse_input: type"));
        InputDecl { name, ty }
    }

    fn parse_output(&mut self, pair: Pair<'_, Rule>) -> OutputDecl {
        let mut name = None;
        let mut ty = None;
        for child in pair.into_inner() {
            match child.as_rule() {
                Rule::ident => name = Some(parse_ident(child)),
                Rule::tensor_type => ty = Some(self.parse_tensor_type(child)),
                Rule::colon => {}
                rule => unreachable!("parse_output: unexpected {rule:?}"),
            }
        }
        OutputDecl {
            name: name.expect("parse_output: name"),
            ty,
        }
    }

    fn parse_dim_binding(&mut self, pair: Pair<'_, Rule>) -> (Ident, Expr) {
        let mut children = pair.into_inner().filter(|pair| pair.as_rule() != Rule::eq);
        let name = parse_ident(children.next().expect("parse_dim_binding: name"));
        let value = self.parse_expr(children.next().expect("parse_dim_binding: value"));
        (name, value)
    }

    fn parse_tensor_type(&mut self, pair: Pair<'_, Rule>) -> TypeExpr {
        let span = span_of(&pair);
        let mut dtype = DType::F32;
        let mut dims = Vec::new();
        for child in pair.into_inner() {
            match child.as_rule() {
                Rule::dtype => {
                    dtype = match child.as_str() {
                        "f32" => DType::F32,
                        "i64" => DType::I64,
                        other => unreachable!("parse_tensor_type: dtype {other}"),
                    }
                }
                Rule::expr => dims.push(self.parse_expr(child)),
                Rule::lbracket | Rule::rbracket | Rule::comma => {}
                rule => unreachable!("parse_tensor_type: unexpected {rule:?}"),
            }
        }
        TypeExpr { dtype, dims, span }
    }

    /// Returns the statements and the span of the closing brace.
    fn parse_body(&mut self, pair: Pair<'_, Rule>) -> (Vec<Stmt>, Span) {
        let mut stmts = Vec::new();
        let mut end = Span::default();
        for child in pair.into_inner() {
            match child.as_rule() {
                Rule::lbrace => {}
                Rule::rbrace => end = span_of(&child),
                _ => stmts.push(self.parse_stmt(child)),
            }
        }
        (stmts, end)
    }

    fn parse_stmt(&mut self, pair: Pair<'_, Rule>) -> Stmt {
        match pair.as_rule() {
            Rule::const_stmt => Stmt::Const(self.parse_const(pair)),
            Rule::assign_stmt => self.parse_assign(pair),
            Rule::if_stmt => self.parse_if(pair),
            Rule::for_stmt => self.parse_for(pair),
            Rule::repeat_stmt => {
                let mut count = None;
                let mut body = Vec::new();
                for child in pair.into_inner() {
                    match child.as_rule() {
                        Rule::expr => count = Some(self.parse_expr(child)),
                        Rule::body => body = self.parse_body(child).0,
                        Rule::kw_repeat => {}
                        rule => unreachable!("parse_stmt: repeat: unexpected {rule:?}"),
                    }
                }
                Stmt::Repeat {
                    count: count.expect("parse_stmt: repeat count"),
                    body,
                }
            }
            Rule::return_stmt => {
                let span = span_of(&pair);
                let mut value = None;
                let mut layer_name = None;
                for child in pair.into_inner() {
                    match child.as_rule() {
                        Rule::expr => value = Some(self.parse_expr(child)),
                        Rule::layer_name => layer_name = Some(self.parse_layer_name(child)),
                        Rule::kw_return | Rule::semi => {}
                        rule => unreachable!("parse_stmt: return: unexpected {rule:?}"),
                    }
                }
                Stmt::Return {
                    value: value.expect("parse_stmt: return value"),
                    layer_name,
                    span,
                }
            }
            rule => unreachable!("parse_stmt: unexpected {rule:?}"),
        }
    }

    fn parse_assign(&mut self, pair: Pair<'_, Rule>) -> Stmt {
        let mut target = None;
        let mut value = None;
        let mut layer_name = None;
        for child in pair.into_inner() {
            match child.as_rule() {
                Rule::ident => target = Some(parse_ident(child)),
                Rule::expr => value = Some(self.parse_expr(child)),
                Rule::layer_name => layer_name = Some(self.parse_layer_name(child)),
                Rule::eq | Rule::semi => {}
                rule => unreachable!("parse_assign: unexpected {rule:?}"),
            }
        }
        Stmt::Assign {
            target: target.expect("parse_assign: target"),
            value: value.expect("parse_assign: value"),
            layer_name,
        }
    }

    fn parse_layer_name(&mut self, pair: Pair<'_, Rule>) -> LayerName {
        let inner = pair
            .into_inner()
            .find(|pair| pair.as_rule() != Rule::kw_as)
            .expect("parse_layer_name: name");
        match inner.as_rule() {
            Rule::string => LayerName::Literal {
                name: unquote(inner.as_str()),
                span: span_of(&inner),
            },
            Rule::name_path => LayerName::Path(
                inner
                    .into_inner()
                    .filter(|pair| pair.as_rule() == Rule::name_segment)
                    .map(|segment| self.parse_name_segment(segment))
                    .collect(),
            ),
            rule => unreachable!("parse_layer_name: unexpected {rule:?}"),
        }
    }

    fn parse_name_segment(&mut self, pair: Pair<'_, Rule>) -> NameSegment {
        let mut head = None;
        let mut indices = Vec::new();
        for child in pair.into_inner() {
            match child.as_rule() {
                Rule::ident | Rule::int => head = Some(parse_ident(child)),
                Rule::name_index => {
                    let index = child.into_inner().find(|pair| pair.as_rule() == Rule::expr);
                    indices.push(self.parse_expr(index.expect("parse_name_segment: index")));
                }
                rule => unreachable!("parse_name_segment: unexpected {rule:?}"),
            }
        }
        NameSegment {
            head: head.expect("parse_name_segment: head"),
            indices,
        }
    }

    fn parse_if(&mut self, pair: Pair<'_, Rule>) -> Stmt {
        let mut cond = None;
        let mut then = Vec::new();
        let mut otherwise = Vec::new();
        let mut seen_body = false;
        for child in pair.into_inner() {
            match child.as_rule() {
                Rule::expr => cond = Some(self.parse_expr(child)),
                Rule::body if !seen_body => {
                    then = self.parse_body(child).0;
                    seen_body = true;
                }
                Rule::body => otherwise = self.parse_body(child).0,
                Rule::if_stmt => otherwise = vec![self.parse_if(child)],
                Rule::kw_if | Rule::kw_else => {}
                rule => unreachable!("parse_if: unexpected {rule:?}"),
            }
        }
        Stmt::If {
            cond: cond.expect("parse_if: condition"),
            then,
            otherwise,
        }
    }

    fn parse_for(&mut self, pair: Pair<'_, Rule>) -> Stmt {
        let mut var = None;
        let mut bounds = Vec::new();
        let mut body = Vec::new();
        for child in pair.into_inner() {
            match child.as_rule() {
                Rule::ident => var = Some(parse_ident(child)),
                Rule::expr => bounds.push(self.parse_expr(child)),
                Rule::body => body = self.parse_body(child).0,
                Rule::kw_for | Rule::kw_in | Rule::dotdot => {}
                rule => unreachable!("parse_for: unexpected {rule:?}"),
            }
        }
        let mut bounds = bounds.into_iter();
        Stmt::For {
            var: var.expect("parse_for: variable"),
            start: bounds.next().expect("parse_for: start"),
            end: bounds.next().expect("parse_for: end"),
            body,
        }
    }

    fn parse_expr(&mut self, pair: Pair<'_, Rule>) -> Expr {
        let span = span_of(&pair);
        match pair.as_rule() {
            Rule::expr | Rule::paren_expr => {
                let inner = pair
                    .into_inner()
                    .find(|pair| !matches!(pair.as_rule(), Rule::lparen | Rule::rparen));
                let mut expr = self.parse_expr(inner.expect("parse_expr: inner expression"));
                if expr.span.start >= span.start && expr.span.end <= span.end {
                    expr.span = span;
                }
                expr
            }
            Rule::or_expr | Rule::and_expr | Rule::cmp_expr | Rule::add_expr | Rule::mul_expr => {
                let mut children = pair.into_inner();
                let mut lhs = self.parse_expr(children.next().expect("parse_expr: operand"));
                while let Some(op) = children.next() {
                    let rhs = self.parse_expr(children.next().expect("parse_expr: right operand"));
                    let op = parse_binary_op(op.as_str());
                    let span = lhs.span.to(rhs.span);
                    lhs = Expr {
                        kind: ExprKind::Binary {
                            op,
                            lhs: Box::new(lhs),
                            rhs: Box::new(rhs),
                        },
                        span,
                    };
                }
                lhs
            }
            Rule::unary_expr => {
                let children: Vec<Pair<'_, Rule>> = pair.into_inner().collect();
                let (operand, ops) = children.split_last().expect("parse_expr: unary operand");
                let mut expr = self.parse_expr(operand.clone());
                for op in ops.iter().rev() {
                    let op_span = span_of(op);
                    let op = if op.as_str() == "-" {
                        UnaryOp::Neg
                    } else {
                        UnaryOp::Not
                    };
                    // Fold negative literals so that `-1` is a literal, as a reader expects.
                    expr = match (op, &expr.kind) {
                        (UnaryOp::Neg, ExprKind::Int(value)) => Expr {
                            kind: ExprKind::Int(-value),
                            span: op_span.to(expr.span),
                        },
                        (UnaryOp::Neg, ExprKind::Float(value)) => Expr {
                            kind: ExprKind::Float(-value),
                            span: op_span.to(expr.span),
                        },
                        _ => Expr {
                            span: op_span.to(expr.span),
                            kind: ExprKind::Unary {
                                op,
                                operand: Box::new(expr),
                            },
                        },
                    };
                }
                expr
            }
            Rule::int => {
                let digits: String = pair.as_str().chars().filter(|c| *c != '_').collect();
                let value = digits.parse::<i64>().unwrap_or_else(|_| {
                    self.errors.push(
                        Diagnostic::error(span, "integer literal is too large")
                            .with_label("does not fit in 64 bits")
                            .with_hint(format!("the largest integer is {}", i64::MAX)),
                    );
                    0
                });
                Expr {
                    kind: ExprKind::Int(value),
                    span,
                }
            }
            Rule::float => {
                let digits: String = pair.as_str().chars().filter(|c| *c != '_').collect();
                let value = digits.parse::<f64>().unwrap_or(f64::INFINITY);
                if !value.is_finite() {
                    self.errors.push(
                        Diagnostic::error(span, "number literal is too large")
                            .with_label("not a finite number"),
                    );
                }
                Expr {
                    kind: ExprKind::Float(value),
                    span,
                }
            }
            Rule::boolean => Expr {
                kind: ExprKind::Bool(pair.as_str() == "true"),
                span,
            },
            Rule::string => Expr {
                kind: ExprKind::Str(unquote(pair.as_str())),
                span,
            },
            Rule::ident => Expr {
                kind: ExprKind::Var(pair.as_str().to_string()),
                span,
            },
            Rule::list => {
                let items = pair
                    .into_inner()
                    .filter(|pair| pair.as_rule() == Rule::expr)
                    .map(|item| self.parse_expr(item))
                    .collect();
                Expr {
                    kind: ExprKind::List(items),
                    span,
                }
            }
            Rule::call => {
                let mut callee = None;
                let mut args = Vec::new();
                for child in pair.into_inner() {
                    match child.as_rule() {
                        Rule::ident => callee = Some(parse_ident(child)),
                        Rule::arg_list => {
                            for arg in child
                                .into_inner()
                                .filter(|pair| pair.as_rule() == Rule::arg)
                            {
                                args.push(self.parse_arg(arg));
                            }
                        }
                        Rule::lparen | Rule::rparen => {}
                        rule => unreachable!("parse_expr: call: unexpected {rule:?}"),
                    }
                }
                Expr {
                    kind: ExprKind::Call {
                        callee: callee.expect("parse_expr: callee"),
                        args,
                    },
                    span,
                }
            }
            rule => unreachable!("parse_expr: unexpected {rule:?}"),
        }
    }

    fn parse_arg(&mut self, pair: Pair<'_, Rule>) -> Arg {
        let inner = pair.into_inner().next().expect("parse_arg: inner");
        match inner.as_rule() {
            Rule::keyword_arg => {
                let mut children = inner.into_inner().filter(|pair| pair.as_rule() != Rule::eq);
                let name = parse_ident(children.next().expect("parse_arg: keyword"));
                let value = self.parse_expr(children.next().expect("parse_arg: value"));
                Arg {
                    name: Some(name),
                    value,
                }
            }
            Rule::expr => Arg {
                name: None,
                value: self.parse_expr(inner),
            },
            rule => unreachable!("parse_arg: unexpected {rule:?}"),
        }
    }
}

fn parse_ident(pair: Pair<'_, Rule>) -> Ident {
    Ident {
        name: pair.as_str().to_string(),
        span: span_of(&pair),
    }
}

fn parse_binary_op(symbol: &str) -> BinaryOp {
    match symbol {
        "+" => BinaryOp::Add,
        "-" => BinaryOp::Sub,
        "*" => BinaryOp::Mul,
        "/" => BinaryOp::Div,
        "%" => BinaryOp::Rem,
        "==" => BinaryOp::Eq,
        "!=" => BinaryOp::Ne,
        "<" => BinaryOp::Lt,
        "<=" => BinaryOp::Le,
        ">" => BinaryOp::Gt,
        ">=" => BinaryOp::Ge,
        "&&" => BinaryOp::And,
        "||" => BinaryOp::Or,
        other => unreachable!("parse_binary_op: unexpected operator {other}"),
    }
}

fn unquote(text: &str) -> String {
    text[1..text.len() - 1].to_string()
}

#[cfg(test)]
mod tests;
