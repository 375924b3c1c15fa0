//! Dead-code elimination: removes nodes whose results no output depends on.
//!
//! Legal because every op is pure: a node whose outputs are never read has no effect. Weights and
//! inputs stay, even if unused, so the weights a model needs do not depend on optimization.

use crate::ir::Graph;

/// Removes dead nodes; returns whether any was removed.
pub fn run(graph: &mut Graph) -> bool {
    graph.compact()
}
