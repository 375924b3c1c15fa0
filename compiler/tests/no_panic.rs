//! No input, however malformed, makes the front end panic.
//!
//! Property tests feed it mutated examples (numbers replaced by edge values, text cut out or
//! repeated) and random token soup. Each input must either compile to a graph that verifies, or
//! fail with diagnostics whose spans lie inside the source. `compile_to_ir` itself runs the
//! verifier in debug builds, so an invalid graph would fail here as a panic.

use nnc_compiler::codegen::memory;
use nnc_compiler::{FrontendOptions, compile_to_ir, diagnostics};
use proptest::prelude::*;

fn examples() -> Vec<String> {
    nnc_test_support::examples()
        .iter()
        .map(|example| example.source())
        .collect()
}

fn check_does_not_panic(source: &str) {
    if let Err(errors) = compile_to_ir(source, &FrontendOptions::default()) {
        assert!(!errors.0.is_empty());
        for diagnostic in &errors.0 {
            assert!(
                diagnostic.span.end as usize <= source.len(),
                "span out of bounds: {diagnostic:?}"
            );
        }
        // Rendering must not panic either.
        let _ = diagnostics::render(&errors.0, "fuzz.nn", source);
    }
}

/// Text cut out or repeated can turn a layer count into another constant's value: CI once drew
/// Longformer with `layers = 50265` (its vocabulary), about 600,000 nodes, under the 1,000,000
/// allowed. Lowering compared every linear weight with every node, and memory planning every
/// value with every other, so that network took hours; each is one pass over the graph now.
#[test]
fn a_layer_count_drawn_from_the_vocabulary_lowers_and_plans_in_one_pass_each() {
    let source = nnc_test_support::example("longformer")
        .source()
        .replace("const layers = 4\n", "const layers = 50265\n");
    assert!(source.contains("const layers = 50265"));
    let module = compile_to_ir(&source, &FrontendOptions::default()).expect("valid network");
    let graph = &module.networks[0];
    assert!(graph.nodes.len() > 500_000, "{} nodes", graph.nodes.len());
    let plan = memory::plan(graph);
    memory::check(graph, &plan).expect("a valid memory plan");
}

/// Values that stress shape arithmetic.
const EDGE_NUMBERS: &[&str] = &[
    "0",
    "1",
    "-1",
    "2",
    "3",
    "7",
    "1000000007",
    "9223372036854775807",
    "99999999999999999999",
    "0.0",
    "1e308",
    "-3",
];

/// Fragments of the language for random token soup.
const TOKENS: &[&str] = &[
    "network",
    "block",
    "const",
    "where",
    "return",
    "if",
    "else",
    "for",
    "in",
    "repeat",
    "as",
    "x",
    "y",
    "h",
    "f32",
    "i64",
    "[",
    "]",
    "(",
    ")",
    "{",
    "}",
    ",",
    ":",
    "=",
    "==",
    "->",
    "..",
    ".",
    "+",
    "-",
    "*",
    "/",
    "%",
    "!",
    "&&",
    "||",
    "<",
    "1",
    "3",
    "0",
    "-1",
    "1e-5",
    "\"same\"",
    "linear",
    "conv2d",
    "relu",
    "attention",
    "rope",
    "reshape",
    "concat",
    "batch_norm",
    "embedding",
    "select",
    "slice",
    "dim",
    "kernel",
    "groups",
    "heads",
    "kv_heads",
    "window",
    "_",
    "\n",
    " ",
    "//",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn numbers_replaced_by_edge_values(example in 0usize..64, picks in proptest::collection::vec((any::<prop::sample::Index>(), 0..EDGE_NUMBERS.len()), 1..4)) {
        let sources = examples();
        let source = &sources[example % sources.len()];
        // Find the integer literals outside comments and replace a few of them.
        let mut numbers = Vec::new();
        for (line_start, line) in source.split_inclusive('\n').scan(0, |offset, line| { let start = *offset; *offset += line.len(); Some((start, line)) }) {
            let code = line.split("//").next().unwrap_or("");
            let bytes = code.as_bytes();
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i].is_ascii_digit() && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_')) {
                    let start = i;
                    while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'_') { i += 1; }
                    numbers.push(line_start + start..line_start + i);
                } else {
                    i += 1;
                }
            }
        }
        prop_assume!(!numbers.is_empty());
        let mut chosen: Vec<(std::ops::Range<usize>, &str)> = picks.iter().map(|(index, value)| (numbers[index.index(numbers.len())].clone(), EDGE_NUMBERS[*value])).collect();
        chosen.sort_by_key(|(range, _)| std::cmp::Reverse(range.start));
        chosen.dedup_by_key(|(range, _)| range.start);
        let mut mutated = source.clone();
        for (range, value) in chosen {
            mutated.replace_range(range, value);
        }
        check_does_not_panic(&mutated);
    }

    #[test]
    fn text_cut_out_or_repeated(example in 0usize..64, start in any::<prop::sample::Index>(), length in 1usize..80, repeat in any::<bool>()) {
        let sources = examples();
        let source = &sources[example % sources.len()];
        let mut start = start.index(source.len());
        while !source.is_char_boundary(start) { start -= 1; }
        let mut end = (start + length).min(source.len());
        while !source.is_char_boundary(end) { end += 1; }
        let mutated = if repeat {
            format!("{}{}{}", &source[..end], &source[start..end], &source[end..])
        } else {
            format!("{}{}", &source[..start], &source[end..])
        };
        check_does_not_panic(&mutated);
    }

    #[test]
    fn random_token_soup(tokens in proptest::collection::vec(0..TOKENS.len(), 0..60)) {
        let text: Vec<&str> = tokens.iter().map(|&index| TOKENS[index]).collect();
        check_does_not_panic(&text.join(" "));
    }

    #[test]
    fn random_bodies_in_a_valid_header(tokens in proptest::collection::vec(0..TOKENS.len(), 0..40)) {
        let body: Vec<&str> = tokens.iter().map(|&index| TOKENS[index]).collect();
        check_does_not_panic(&format!("network n(x: f32[1, 3, 8, 8]) -> (y) {{ y = x {} }}", body.join(" ")));
    }
}
