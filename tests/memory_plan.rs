//! The memory plan of every example: checked for overlaps by an independent checker, and close to
//! the lower bound (the most bytes live at any step). The plans are those of the declared sizes,
//! which generated code uses, not of the shorter test dimensions in the examples' headers.

use nnc_compiler::codegen::memory;
use nnc_compiler::passes::{self, OptLevel};
use nnc_compiler::{FrontendOptions, compile_to_ir};
use nnc_test_support::examples;

#[test]
fn plans_are_valid_and_near_the_lower_bound() {
    let mut too_far = Vec::new();
    for model in examples() {
        let source = model.source();
        for level in [OptLevel::O0, OptLevel::O2] {
            let mut graph = compile_to_ir(&source, &FrontendOptions::default())
                .unwrap()
                .networks
                .remove(0);
            passes::optimize(&mut graph, level, |_, _| {});
            let plan = memory::plan(&graph);
            memory::check(&graph, &plan).unwrap_or_else(|error| panic!("{}: {error}", graph.name));
            let stats = memory::stats(&graph, &plan);
            let ratio = stats.planned as f64 / stats.lower_bound as f64;
            println!(
                "{:>14} {level:?}: naive {:>12} B, planned {:>11} B, lower bound {:>11} B, planned/bound {ratio:.3}",
                graph.name, stats.naive, stats.planned, stats.lower_bound
            );
            assert!(
                stats.lower_bound <= stats.planned && stats.planned <= stats.naive,
                "{}: {stats:?}",
                graph.name
            );
            if ratio > 1.05 {
                too_far.push(format!("{} {level:?}: {ratio:.3}", graph.name));
            }
        }
    }
    assert!(
        too_far.is_empty(),
        "plans more than 5% above the lower bound:\n{}",
        too_far.join("\n")
    );
}

/// The rolled plan of every example (one set of slots per run of identical layers, reused by
/// every iteration) is sound over the fully unrolled graph, copies of carried values included,
/// copies none of the transformers' carried values, and costs little more arena than the
/// unrolled plan (shared inputs stay live to the end of the body, which costs up to a sixth more
/// on BERT and Longformer at -O0).
#[test]
fn rolled_plans_are_valid_over_the_unrolled_graph() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths: Vec<_> = std::fs::read_dir(root.join("examples"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "nn"))
        .collect();
    paths.sort();
    let mut grew = Vec::new();
    for path in paths {
        let source = std::fs::read_to_string(&path).unwrap();
        for level in [OptLevel::O0, OptLevel::O2] {
            let mut graph = compile_to_ir(&source, &FrontendOptions::default())
                .unwrap()
                .networks
                .remove(0);
            passes::optimize(&mut graph, level, |_, _| {});
            let runs = nnc_compiler::codegen::repeat::find_runs(&graph);
            let rolled = memory::plan_rolled(&graph, &[], &runs);
            memory::check_rolled(&graph, &rolled, &[])
                .unwrap_or_else(|error| panic!("{} {level:?}: {error}", graph.name));
            let unrolled = memory::plan(&graph).planned_bytes();
            let rolled_bytes = rolled.plan.planned_bytes();
            let layers: Vec<String> = runs
                .iter()
                .map(|run| format!("{}x{}", run.count, run.body_len))
                .collect();
            let copies: usize = rolled.copies.iter().map(Vec::len).sum();
            println!(
                "{:>14} {level:?}: runs [{}], arena unrolled {unrolled:>11} B, rolled {rolled_bytes:>11} B, carried copies {copies}",
                graph.name,
                layers.join(", ")
            );
            // A transformer layer's output is written long after its input was last read: it
            // takes the input's slot, and the loop copies nothing.
            let transformers = [
                "bert_encoder",
                "llama_decoder",
                "longformer",
                "minilm_embed",
                "seq2seq",
                "tiny_gpt",
            ];
            if transformers.contains(&graph.name.as_str()) {
                assert_eq!(copies, 0, "{} {level:?}: carried values copied", graph.name);
            }
            if rolled_bytes as f64 > unrolled as f64 * 1.4 {
                grew.push(format!(
                    "{} {level:?}: {unrolled} -> {rolled_bytes}",
                    graph.name
                ));
            }
        }
    }
    assert!(
        grew.is_empty(),
        "rolled plans more than 40% above the unrolled ones:\n{}",
        grew.join("\n")
    );
}
