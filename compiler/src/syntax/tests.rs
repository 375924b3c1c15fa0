//! Grammar-level tests: what parses, into what, and the messages of what does not.

use super::ast::{ExprKind, Item, LayerName, Stmt};
use super::{Rule, parse};
use pest::Parser as _;

/// Whether `rule` matches all of `text`.
fn matches_whole(rule: Rule, text: &str) -> bool {
    super::NnParser::parse(rule, text)
        .is_ok_and(|mut pairs| pairs.next().is_some_and(|pair| pair.as_str() == text))
}

/// The first statement of a one-statement network body.
fn first_stmt(body: &str) -> Stmt {
    let source = format!("network n(x: f32[1]) -> (y) {{ {body} }}");
    let file = parse(&source).unwrap_or_else(|errors| panic!("{source}: {errors}"));
    let Item::Network(network) = &file.items[0] else {
        panic!("not a network")
    };
    network.body[0].clone()
}

fn parse_error(source: &str) -> String {
    let errors = parse(source).expect_err("should not parse");
    errors.0[0].message.clone()
}

#[test]
fn tokens() {
    assert!(matches_whole(Rule::int, "784"));
    assert!(matches_whole(Rule::int, "30_522"));
    assert!(matches_whole(Rule::float, "1e-5"));
    assert!(matches_whole(Rule::float, "10000.0"));
    assert!(matches_whole(Rule::float, "2.5E+3"));
    assert!(!matches_whole(Rule::float, "7"));
    assert!(matches_whole(Rule::ident, "layer_norm2"));
    assert!(
        matches_whole(Rule::ident, "asx"),
        "a keyword prefix is still a name"
    );
    assert!(
        matches_whole(Rule::ident, "self"),
        "Rust keywords are names, for `attention.self.query`"
    );
    assert!(!matches_whole(Rule::ident, "as"));
    assert!(!matches_whole(Rule::ident, "2x"));
    assert!(matches_whole(Rule::string, "\"tanh\""));
    assert!(matches_whole(Rule::tensor_type, "f32[batch, 3, 224, 224]"));
    assert!(matches_whole(Rule::tensor_type, "i64[]"));
}

#[test]
fn ranges_are_not_floats() {
    let Stmt::For { start, end, .. } = first_stmt("for i in 0..6 { y = x }") else {
        panic!()
    };
    assert_eq!(start.kind, ExprKind::Int(0));
    assert_eq!(end.kind, ExprKind::Int(6));
}

#[test]
fn precedence_and_negative_literals() {
    let Stmt::Assign { value, .. } = first_stmt("y = 1 + 2 * -3") else {
        panic!()
    };
    let ExprKind::Binary { op, rhs, .. } = value.kind else {
        panic!()
    };
    assert_eq!(op, super::ast::BinaryOp::Add);
    let ExprKind::Binary { rhs: innermost, .. } = rhs.kind else {
        panic!()
    };
    assert_eq!(innermost.kind, ExprKind::Int(-3));
}

#[test]
fn layer_names_with_indices() {
    let Stmt::Assign {
        layer_name: Some(LayerName::Path(segments)),
        ..
    } = first_stmt("y = relu(x) as features[i + 1].conv[0][1]")
    else {
        panic!()
    };
    let heads: Vec<&str> = segments
        .iter()
        .map(|segment| segment.head.name.as_str())
        .collect();
    assert_eq!(heads, ["features", "conv"]);
    assert_eq!(segments[0].indices.len(), 1);
    assert_eq!(segments[1].indices.len(), 2);
    let Stmt::Assign {
        layer_name: Some(LayerName::Literal { name, .. }),
        ..
    } = first_stmt("y = relu(x) as \"model.layers.0\"")
    else {
        panic!()
    };
    assert_eq!(name, "model.layers.0");
}

#[test]
fn rust_token_spacing_parses_the_same() {
    // The `network!` macro sees Rust tokens, which it prints with spaces between them.
    let spaced = "network n ( x : f32 [ 1 , 784 ] ) -> ( y ) { y = linear ( x , 10 , bias = false ) as fc [ 0 ] . out }";
    let compact =
        "network n(x: f32[1, 784]) -> (y) { y = linear(x, 10, bias = false) as fc[0].out }";
    let strip = |file: super::ast::File| format!("{file:?}").split("span").count();
    assert_eq!(
        strip(parse(spaced).unwrap()),
        strip(parse(compact).unwrap())
    );
}

#[test]
fn statements_need_no_separator_but_allow_one() {
    let file = parse("network n(x: f32[1]) -> (y) { a = relu(x) b = relu(a); y = b; }").unwrap();
    let Item::Network(network) = &file.items[0] else {
        panic!()
    };
    assert_eq!(network.body.len(), 3);
}

#[test]
fn syntax_errors_name_tokens() {
    assert_eq!(
        parse_error("network n(x: f32[1]) -> (y) { y = relu(x }"),
        "expected an operator, `(`, `)`, `,` or `=`, found `}`"
    );
    assert_eq!(
        parse_error("network n(x: f32[1]) { }"),
        "expected `->`, found `{`"
    );
    assert_eq!(
        parse_error("network n(x: f64[1]) -> (y) { }"),
        "expected an element type (`f32` or `i64`), found `f64`"
    );
    assert_eq!(
        parse_error("block b(x) { return }"),
        "expected an expression, found `}`"
    );
    assert!(parse_error("network n(x: f32[1]) -> (y) { y = x ").contains("found end of input"));
}

#[test]
fn literal_overflow_is_an_error() {
    let errors = parse("const a = 99999999999999999999 const b = 1e999").unwrap_err();
    assert_eq!(errors.0.len(), 2);
    assert_eq!(errors.0[0].message, "integer literal is too large");
    assert_eq!(errors.0[1].message, "number literal is too large");
}
