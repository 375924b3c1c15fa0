//! Common-subexpression elimination: a node computing the same op on the same inputs as an
//! earlier node is replaced by that node's result.
//!
//! Legal because ops are pure and deterministic: equal op and equal inputs give equal outputs. The
//! duplicate becomes dead and the next dead-code elimination removes it.

use std::collections::HashMap;

use crate::ir::{Graph, Node, Value};

/// Merges duplicate nodes; returns whether any was merged.
pub fn run(graph: &mut Graph) -> bool {
    let mut seen: HashMap<(String, Vec<Value>), Node> = HashMap::new();
    let mut changed = false;
    let mut forwarding = graph.forwarding();
    for index in 0..graph.nodes.len() {
        let node = Node::from_index(index);
        forwarding.update_inputs(graph, node);
        let data = &graph.nodes[node];
        // The op's debug text is a complete, exact description of it (floats print exactly).
        let key = (format!("{:?}", data.op), data.inputs.clone());
        match seen.get(&key) {
            Some(&earlier) => {
                let pairs: Vec<(Value, Value)> = data
                    .outputs
                    .iter()
                    .copied()
                    .zip(graph.nodes[earlier].outputs.iter().copied())
                    .collect();
                for (duplicate, original) in pairs {
                    forwarding.replace(graph, duplicate, original);
                }
                let origin = graph.nodes[node].origin.clone();
                graph.nodes[earlier].origin.extend(origin);
                changed = true;
            }
            None => {
                seen.insert(key, node);
            }
        }
    }
    forwarding.finish(graph);
    changed && {
        graph.compact();
        true
    }
}
