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
