//! Elementwise-chain fusion: consecutive elementwise unary operations (activations and affine
//! maps) become one `elementwise` node that reads and writes memory once.
//!
//! Legal when each intermediate result feeds only the next step: the chain applies the same
//! scalar functions in the same order to each element.

use crate::ir::{Graph, Node, Op};

/// Fuses elementwise chains; returns whether any was fused.
pub fn run(graph: &mut Graph) -> bool {
    let uses = graph.use_counts();
    let mut changed = false;
    for index in 0..graph.nodes.len() {
        let node = Node::from_index(index);
        let Some(outer) = graph.nodes[node].op.elementwise_steps() else {
            continue;
        };
        let input = graph.nodes[node].inputs[0];
        let Some(producer) = graph.producer(input) else {
            continue;
        };
        if uses[input] != 1 {
            continue;
        }
        let Some(mut inner) = graph.nodes[producer].op.elementwise_steps() else {
            continue;
        };
        inner.extend(outer);
        let source = graph.nodes[producer].inputs[0];
        super::prepend_origin(graph, node, producer);
        let data = &mut graph.nodes[node];
        data.op = Op::ElementwiseChain(inner);
        data.inputs[0] = source;
        changed = true;
    }
    changed && {
        graph.compact();
        true
    }
}
