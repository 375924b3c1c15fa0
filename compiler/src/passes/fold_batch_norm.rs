//! Batch-norm folding: an inference batch norm that directly follows a conv or linear layer is
//! folded into that layer's epilogue, and the batch-norm node disappears.
//!
//! `bn(conv(x)) = conv(x)·s + t` per output channel, with `s = γ / sqrt(var + eps)` and
//! `t = β - mean·s`, which is a conv with weights scaled by `s` and bias `b·s + t`. The layer takes
//! the batch norm's four parameters as extra inputs and the scaling happens once, when the model
//! is built (the weights are not known at compile time). Legal only when the conv or linear
//! output feeds nothing but the batch norm and normalizes over the layer's output channels, and
//! the layer has no epilogue yet.

use crate::ir::{Epilogue, Graph, Node, Op};

/// Folds batch norms into the layers before them; returns whether any was folded.
pub fn run(graph: &mut Graph) -> bool {
    let uses = graph.use_counts();
    let mut changed = false;
    let mut forwarding = graph.forwarding();
    for index in 0..graph.nodes.len() {
        let node = Node::from_index(index);
        forwarding.update_inputs(graph, node);
        let Op::BatchNorm { eps } = graph.nodes[node].op else {
            continue;
        };
        let input = graph.nodes[node].inputs[0];
        let Some(layer) = graph.producer(input) else {
            continue;
        };
        if uses[input] != 1 {
            continue;
        }
        // Batch norm normalizes axis 1; a linear layer's output channels are its last axis, so
        // they agree only on rank-2 outputs.
        let layer_op = &graph.nodes[layer].op;
        let foldable = layer_op.epilogue() == Some(&Epilogue::default())
            && layer_op.output_channel_axis(graph.ty(input).rank()) == Some(1);
        if !foldable {
            continue;
        }
        let batch_norm_parameters = graph.nodes[node].inputs[1..].to_vec();
        let output = graph.nodes[node].outputs[0];
        let origin = graph.nodes[node].origin.clone();
        let data = &mut graph.nodes[layer];
        data.origin.extend(origin);
        let epilogue = data.op.epilogue_mut();
        epilogue.expect("fold_batch_norm: checked above").batch_norm = Some(eps);
        data.inputs.extend(batch_norm_parameters);
        forwarding.replace(graph, output, input);
        changed = true;
    }
    forwarding.finish(graph);
    changed && {
        graph.compact();
        true
    }
}
