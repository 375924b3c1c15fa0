//! Residual-add fusion: `add(layer(x), skip)` (in either order), where `layer` is a conv or linear
//! layer, becomes the layer with a residual in its epilogue, and the add node disappears. The
//! kernel adds the skip connection to each finished output tile while it is still in cache
//! (after the bias and batch norm, before the activation), so the residual costs no pass over
//! memory of its own.
//!
//! Why not accumulate the product onto the skip connection (`C = skip + A·B`), which would let
//! the output take the skip's buffer in place: that adds in a different order (the skip first,
//! then the partial products of each block of `k`), and on deep transformers the results drifted
//! past the O0 == O2 tolerance (8.8e-5 on the Llama example). The epilogue add is the same sum
//! in the same order as the separate add, and the arena sizes stay the same on every example,
//! since the separate add ran in place at the same peak.
//!
//! ResNet's `relu(bn(conv(x)) + identity)` becomes one conv with `bias -> batch norm -> +
//! residual -> relu`: this pass runs after batch-norm folding and before epilogue fusion, which
//! then fuses the relu that follows the add.
//!
//! Legal when the layer's output feeds nothing but the add (no one needs the value without the
//! residual), the layer has no residual and no activation yet (the activation must apply after
//! the add, and the epilogue adds the residual before it), and the skip connection has exactly
//! the output's type (no broadcasting: the kernel adds element by element).
//!
//! The fused layer takes the add's place in the node order, not the layer's: the skip
//! connection may be computed after the layer (ResNet's downsampling shortcut is), and the
//! layer's own inputs are all defined before it, hence before the add.

use crate::ir::{BinaryOp, Epilogue, Graph, Node, Op};

/// Fuses residual adds into conv and linear layers; returns whether any was fused.
pub fn run(graph: &mut Graph) -> bool {
    let uses = graph.use_counts();
    let mut changed = false;
    for index in 0..graph.nodes.len() {
        let add = Node::from_index(index);
        if graph.nodes[add].op != Op::Binary(BinaryOp::Add) {
            continue;
        }
        let [left, right] = graph.nodes[add].inputs[..] else {
            continue;
        };
        let output = graph.nodes[add].outputs[0];
        // The first operand that a fusable layer produces is the product, the other the skip.
        let Some((layer, skip)) =
            [(left, right), (right, left)]
                .into_iter()
                .find_map(|(product, skip)| {
                    let layer = graph.producer(product)?;
                    let fusable = uses[product] == 1
                        && product != skip
                        && graph.ty(skip) == graph.ty(product)
                        && graph.ty(output) == graph.ty(product)
                        && graph.nodes[layer].op.epilogue().is_some_and(takes_residual);
                    fusable.then_some((layer, skip))
                })
        else {
            continue;
        };

        let layer_data = graph.nodes[layer].clone();
        let mut op = layer_data.op;
        let epilogue = op.epilogue_mut();
        epilogue.expect("fuse_residual: checked above").residual = true;
        let mut inputs = layer_data.inputs;
        inputs.push(skip);
        let data = &mut graph.nodes[add];
        data.op = op;
        data.inputs = inputs;
        super::take_over_layer(graph, add, layer);
        // The layer node is now dead (the add was its only reader); `compact` removes it.
        changed = true;
    }
    changed && {
        graph.compact();
        true
    }
}

/// Whether a layer with `epilogue` can take a residual: it has none, and no activation that would
/// have to run before the add.
fn takes_residual(epilogue: &Epilogue) -> bool {
    !epilogue.residual && epilogue.activation.is_none()
}
