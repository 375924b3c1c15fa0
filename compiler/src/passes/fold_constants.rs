//! Constant folding: computes at compile time what the scalar attributes determine, and removes
//! operations that do nothing.
//!
//! - `affine(affine(x, a, b), c, d)` is `affine(x, a·c, b·c + d)`;
//! - `affine(x, 1, 0)`, a reshape to the same shape, an identity transpose and a slice of a whole
//!   axis are `x`;
//! - `reshape(reshape(x))` is one reshape, and `transpose(transpose(x, p), q)` one transpose.
//!
//! Legal because each rewrite computes the same values: the affine composition is exact algebra
//! (rounding may differ in the last bit, which the tests' tolerance allows), and the others only
//! move elements the same way.

use crate::ir::{Graph, Node, Op, Value};

/// Folds to a fixed point; returns whether anything changed.
pub fn run(graph: &mut Graph) -> bool {
    let mut changed = false;
    // Each round can expose another fold (two merged transposes may cancel); a handful of rounds
    // reaches the fixed point on any chain the language writes.
    for _ in 0..8 {
        if !fold_once(graph) {
            break;
        }
        changed = true;
    }
    changed
}

/// One sweep over the nodes.
fn fold_once(graph: &mut Graph) -> bool {
    let mut changed = false;
    let mut forwarding = graph.forwarding();
    for index in 0..graph.nodes.len() {
        let node = Node::from_index(index);
        forwarding.update_inputs(graph, node);
        let input = graph.nodes[node].inputs.first().copied();
        let output = graph.nodes[node].outputs[0];
        let Some(input) = input else { continue };
        let producer = graph
            .producer(input)
            .map(|producer| graph.nodes[producer].op.clone());
        let producer_input = graph
            .producer(input)
            .and_then(|producer| graph.nodes[producer].inputs.first().copied());

        // Operations that do nothing.
        if graph.nodes[node].op.is_identity_on(&graph.ty(input).shape) {
            forwarding.replace(graph, output, input);
            changed = true;
            continue;
        }

        // Two operations that compose into one.
        let merged: Option<(Op, Value)> = match (&graph.nodes[node].op, producer, producer_input) {
            (
                Op::Affine { scale, shift },
                Some(Op::Affine {
                    scale: inner_scale,
                    shift: inner_shift,
                }),
                Some(source),
            ) => Some((
                Op::Affine {
                    scale: inner_scale * scale,
                    shift: inner_shift * scale + shift,
                },
                source,
            )),
            (Op::Reshape { shape }, Some(Op::Reshape { .. }), Some(source)) => Some((
                Op::Reshape {
                    shape: shape.clone(),
                },
                source,
            )),
            (Op::Transpose { perm }, Some(Op::Transpose { perm: inner }), Some(source)) => Some((
                Op::Transpose {
                    perm: perm.iter().map(|&axis| inner[axis]).collect(),
                },
                source,
            )),
            _ => None,
        };
        if let Some((op, source)) = merged {
            let data = &mut graph.nodes[node];
            data.op = op;
            data.inputs[0] = source;
            changed = true;
        }
    }
    forwarding.finish(graph);
    changed && {
        graph.compact();
        true
    }
}
