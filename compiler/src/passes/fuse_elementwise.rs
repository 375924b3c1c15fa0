//! Elementwise-chain fusion: consecutive elementwise unary operations (activations and affine
//! maps) become one `elementwise` node that reads and writes memory once.
//!
//! Legal when each intermediate result feeds only the next step: the chain applies the same
//! scalar functions in the same order to each element.

use crate::ir::{ElementwiseStep, Graph, Node, Op};

/// The steps of a unary elementwise op.
fn steps(op: &Op) -> Option<Vec<ElementwiseStep>> {
    match op {
        Op::Activation(activation) => Some(vec![ElementwiseStep::Activation(*activation)]),
        Op::Affine { scale, shift } => Some(vec![ElementwiseStep::Affine {
            scale: *scale,
            shift: *shift,
        }]),
        Op::ElementwiseChain(steps) => Some(steps.clone()),
        _ => None,
    }
}

/// Fuses elementwise chains; returns whether any was fused.
pub fn run(graph: &mut Graph) -> bool {
    let uses = graph.use_counts();
    let mut changed = false;
    for index in 0..graph.nodes.len() {
        let node = Node::from_index(index);
        let Some(outer) = steps(&graph.nodes[node].op) else {
            continue;
        };
        let input = graph.nodes[node].inputs[0];
        let Some(producer) = graph.producer(input) else {
            continue;
        };
        if uses[input] != 1 {
            continue;
        }
        let Some(mut inner) = steps(&graph.nodes[producer].op) else {
            continue;
        };
        inner.extend(outer);
        let source = graph.nodes[producer].inputs[0];
        let mut origin = graph.nodes[producer].origin.clone();
        let data = &mut graph.nodes[node];
        origin.extend(&data.origin);
        data.origin = origin;
        data.op = Op::ElementwiseChain(inner);
        data.inputs[0] = source;
        changed = true;
    }
    changed && {
        graph.compact();
        true
    }
}
