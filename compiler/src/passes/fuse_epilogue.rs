//! Epilogue fusion: an activation that directly follows a conv or linear layer is applied by that
//! layer's kernel while the output is still in cache, and the activation node disappears.
//!
//! Legal when the layer's output feeds nothing but the activation (no one needs the value before
//! it) and the layer has no activation yet. Every activation of the language can be fused: the
//! kernels apply the same scalar functions as the standalone activation kernel.
//!
//! A residual add between the layer and the activation was fused first (see `fuse_residual`),
//! so the activation applies to the sum, as written.

use crate::ir::{Graph, Node, Op};

/// Fuses activations into conv and linear layers; returns whether any was fused.
pub fn run(graph: &mut Graph) -> bool {
    let uses = graph.use_counts();
    let mut changed = false;
    let mut forwarding = graph.forwarding();
    for index in 0..graph.nodes.len() {
        let node = Node::from_index(index);
        forwarding.update_inputs(graph, node);
        let Op::Activation(activation) = graph.nodes[node].op else {
            continue;
        };
        let input = graph.nodes[node].inputs[0];
        let Some(layer) = graph.producer(input) else {
            continue;
        };
        if uses[input] != 1 {
            continue;
        }
        let Some(epilogue) = graph.nodes[layer].op.epilogue_mut() else {
            continue;
        };
        if epilogue.activation.is_some() {
            continue;
        }
        epilogue.activation = Some(activation);
        let origin = graph.nodes[node].origin.clone();
        graph.nodes[layer].origin.extend(origin);
        let output = graph.nodes[node].outputs[0];
        forwarding.replace(graph, output, input);
        changed = true;
    }
    forwarding.finish(graph);
    changed && {
        graph.compact();
        true
    }
}
