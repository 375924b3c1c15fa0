//! Every op of the IR, by the name the IR prints for it (`conv1d` and `conv2d`, every activation,
//! every binary operation), has a row in the cost table of docs/cost-model.md, so that a new op
//! cannot ship without its stated cost.

use std::collections::BTreeSet;
use std::path::Path;

use nnc_compiler::ir::OpKind;

/// The op names written in code spans in the first column of the cost table (the table after
/// `## Conventions` whose header starts with `| op |`).
fn documented_op_names() -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/cost-model.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let start = doc.find("## Conventions").expect("a conventions section");
    let section = &doc[start..];
    let table_start = section.find("| op |").expect("the cost table");
    let mut names = BTreeSet::new();
    for line in section[table_start..].lines().skip(2) {
        if !line.starts_with('|') {
            break;
        }
        let first_cell = line.split('|').nth(1).unwrap_or_default();
        // Code spans are the odd pieces between backticks; a span may hold a call
        // (`linear(x, out)`) or several names, so every identifier in it counts.
        for code in first_cell.split('`').skip(1).step_by(2) {
            for word in code
                .split(|character: char| !(character.is_ascii_alphanumeric() || character == '_'))
            {
                if word.starts_with(|character: char| character.is_ascii_alphabetic()) {
                    names.insert(word.to_string());
                }
            }
        }
    }
    names
}

#[test]
fn every_op_has_a_row_in_the_cost_table() {
    let documented = documented_op_names();
    let ir_names: BTreeSet<&str> = OpKind::ALL
        .into_iter()
        .flat_map(OpKind::examples)
        .map(|op| op.name())
        .collect();
    let missing: Vec<&&str> = ir_names
        .iter()
        .filter(|name| !documented.contains(**name))
        .collect();
    assert!(
        missing.is_empty(),
        "ops without a row in the cost table of docs/cost-model.md: {missing:?}"
    );
    // Spot checks that the example ops cover the names the IR prints.
    for name in [
        "conv1d",
        "conv2d",
        "max_pool2d",
        "gelu",
        "hard_swish",
        "div",
        "elementwise",
    ] {
        assert!(ir_names.contains(name), "{name} is not an IR name");
    }
}
