//! Attention fusion: scaled dot-product attention written by hand with `matmul`, `transpose`,
//! `softmax` and `reshape` becomes one `attention` node, whose kernel is tiled (flash-style) and
//! never builds the `queries × keys` score matrix.
//!
//! Two forms are recognized. Single-head, on `q [b, n, d]`, `k` and `v [b, m, d]`:
//!
//! ```text
//! o = matmul(softmax(matmul(q, transpose(k, 1, 2)) * scale, dim = -1), v)
//! ```
//!
//! and multi-head, where `q`, `k` and `v` are `[b, n, heads * d]` split into heads and the
//! result merged back:
//!
//! ```text
//! q4 = transpose(reshape(q, [b, n, heads, d]), 1, 2)          // and v4 likewise
//! kt = transpose(transpose(reshape(k, [b, m, heads, d]), 1, 2), 2, 3)
//! o = reshape(transpose(matmul(softmax(matmul(q4, kt) * scale, dim = -1), v4), 1, 2), [b, n, heads * d])
//! ```
//!
//! The scale is an affine map with no shift (`* c` or `/ c`), or absent (a scale of 1).
//!
//! Legal because `attention(q, k, v, heads, scale)` is defined as exactly this computation: for
//! each batch and head `h`, `softmax(scale · q_h · k_hᵀ) · v_h`, where head `h` is columns
//! `h·d..(h+1)·d` of the last axis, which is what a row-major reshape to `[.., heads, d]` picks.
//! The pass checks every shape, permutation, axis and reshape target on the way, so anything
//! else (a different permutation, a softmax over another axis, a shift, broadcast batch dims,
//! grouped-query heads) is left as written. The kernel's online softmax rounds differently from
//! the three separate ops, within the tests' tolerance.
//!
//! Not recognized: masks. The language has no way to build a constant causal mask by hand (a
//! mask would be an input or a weight, whose values are unknown at compile time), so masked
//! hand-written attention stays as written; `attention(.., causal = true)` is the way to ask for
//! it.

use crate::ir::{AttentionAttrs, Graph, Node, Op, SecondaryMap, SparsePattern, Value};

/// Fuses hand-written attention; returns whether any was fused.
pub fn run(graph: &mut Graph) -> bool {
    let uses = graph.use_counts();
    let mut changed = false;
    for index in 0..graph.nodes.len() {
        let node = Node::from_index(index);
        let Some(found) = match_attention(graph, &uses, node) else {
            continue;
        };
        let mut origin: Vec<usize> = found
            .absorbed
            .iter()
            .flat_map(|&absorbed| graph.nodes[absorbed].origin.clone())
            .collect();
        origin.sort_unstable();
        origin.dedup();
        let data = &mut graph.nodes[node];
        data.op = Op::Attention(AttentionAttrs {
            heads: found.heads,
            kv_heads: found.heads,
            head_dim: found.head_dim,
            causal: false,
            scale: found.scale,
            pattern: SparsePattern::default(),
            kv_cache: None,
            key_padding_mask: false,
        });
        data.inputs = vec![found.q, found.k, found.v];
        data.origin = origin;
        changed = true;
    }
    changed && {
        graph.compact();
        true
    }
}

/// Hand-written attention ending at some node.
struct Found {
    /// `[b, n, heads * head_dim]`, and `k`, `v` `[b, m, heads * head_dim]`.
    q: Value,
    k: Value,
    v: Value,
    heads: usize,
    head_dim: usize,
    scale: f32,
    /// The nodes the fused node replaces (itself included) whose results only the pattern read.
    absorbed: Vec<Node>,
}

/// Matches attention whose result `node` computes: the final matmul (single-head) or the
/// reshape that merges the heads (multi-head).
fn match_attention(graph: &Graph, uses: &SecondaryMap<Value, usize>, node: Node) -> Option<Found> {
    let data = &graph.nodes[node];
    match &data.op {
        Op::MatMul if graph.ty(data.outputs[0]).rank() == 3 => single_head(graph, uses, node),
        Op::Reshape { .. } => multi_head(graph, uses, node),
        _ => None,
    }
}

/// `matmul(softmax(matmul(q, transpose(k, 1, 2)) * scale), v)` on `[b, n, d]` tensors.
fn single_head(graph: &Graph, uses: &SecondaryMap<Value, usize>, node: Node) -> Option<Found> {
    let core = attention_core(graph, uses, node)?;
    let [batch, queries, head_dim] = graph.ty(core.q).shape[..] else {
        return None;
    };
    // kᵀ is `transpose(k)` with k `[b, m, d]`.
    let (k, k_transpose) = defined_by(
        graph,
        core.k_transposed,
        |op| matches!(op, Op::Transpose { perm } if perm == &[0, 2, 1]),
    )?;
    let [k_batch, keys, k_dim] = graph.ty(k).shape[..] else {
        return None;
    };
    let v_shape = &graph.ty(core.v).shape;
    if k_batch != batch || k_dim != head_dim || v_shape != &[batch, keys, head_dim] {
        return None;
    }
    debug_assert_eq!(
        graph.ty(graph.nodes[node].outputs[0]).shape,
        [batch, queries, head_dim]
    );
    let mut absorbed = core.absorbed;
    if uses[core.k_transposed] == 1 {
        absorbed.push(k_transpose);
    }
    Some(Found {
        q: core.q,
        k,
        v: core.v,
        heads: 1,
        head_dim,
        scale: core.scale,
        absorbed,
    })
}

/// `reshape(transpose(matmul(softmax(matmul(q4, kt) * scale), v4), 1, 2), [b, n, heads * d])`
/// with the heads of `q`, `k` and `v` split as the module docs show.
fn multi_head(graph: &Graph, uses: &SecondaryMap<Value, usize>, node: Node) -> Option<Found> {
    let merged = graph.nodes[node].inputs[0];
    let (output, merge_transpose) = defined_by(
        graph,
        merged,
        |op| matches!(op, Op::Transpose { perm } if perm == &[0, 2, 1, 3]),
    )?;
    if uses[merged] != 1 {
        return None;
    }
    let final_matmul = graph.producer(output)?;
    if graph.nodes[final_matmul].op != Op::MatMul || uses[output] != 1 {
        return None;
    }
    let core = attention_core(graph, uses, final_matmul)?;
    let (q, q_nodes) = split_heads(graph, uses, core.q, &[0, 2, 1, 3])?;
    let (k, k_nodes) = split_heads(graph, uses, core.k_transposed, &[0, 2, 3, 1])?;
    let (v, v_nodes) = split_heads(graph, uses, core.v, &[0, 2, 1, 3])?;
    let [batch, heads, queries, head_dim] = graph.ty(core.q).shape[..] else {
        return None;
    };
    let keys = graph.ty(k).shape[1];
    let width = heads * head_dim;
    let consistent = graph.ty(q).shape == [batch, queries, width]
        && graph.ty(k).shape == [batch, keys, width]
        && graph.ty(v).shape == [batch, keys, width]
        && graph.ty(graph.nodes[node].outputs[0]).shape == [batch, queries, width];
    if !consistent {
        return None;
    }
    let mut absorbed = core.absorbed;
    absorbed.extend([merge_transpose, node]);
    absorbed.extend(q_nodes.into_iter().chain(k_nodes).chain(v_nodes));
    Some(Found {
        q,
        k,
        v,
        heads,
        head_dim,
        scale: core.scale,
        absorbed,
    })
}

/// The part both forms share: `matmul(softmax(matmul(q, kt) * scale, last axis), v)`.
struct Core {
    q: Value,
    k_transposed: Value,
    v: Value,
    scale: f32,
    absorbed: Vec<Node>,
}

/// Matches the core ending at the matmul `node`; the scores and probabilities must feed nothing
/// else (otherwise they are computed anyway and fusing saves nothing).
fn attention_core(graph: &Graph, uses: &SecondaryMap<Value, usize>, node: Node) -> Option<Core> {
    let [probabilities, v] = graph.nodes[node].inputs[..] else {
        return None;
    };
    let rank = graph.ty(probabilities).rank();
    let (scaled, softmax) = defined_by(
        graph,
        probabilities,
        |op| matches!(op, Op::Softmax { axis } if *axis + 1 == rank),
    )?;
    let (scores, scale, scale_node) = match graph.producer(scaled).map(|node| &graph.nodes[node].op)
    {
        Some(&Op::Affine { scale, shift }) if shift == 0.0 && uses[scaled] == 1 => {
            let scale_node = graph.producer(scaled)?;
            (graph.nodes[scale_node].inputs[0], scale, Some(scale_node))
        }
        _ => (scaled, 1.0, None),
    };
    let (operands, scores_node) = defined_by_all(graph, scores, |op| *op == Op::MatMul)?;
    let [q, k_transposed] = operands[..] else {
        return None;
    };
    // Equal batch dims on all four operands: matmul broadcasts them, the attention op does not.
    let batch_dims = |value: Value| {
        let shape = &graph.ty(value).shape;
        shape[..shape.len() - 2].to_vec()
    };
    let same_batch = [k_transposed, v, probabilities]
        .iter()
        .all(|&value| graph.ty(value).rank() == rank && batch_dims(value) == batch_dims(q));
    if graph.ty(q).rank() != rank || !same_batch || uses[scores] != 1 || uses[probabilities] != 1 {
        return None;
    }
    let mut absorbed = vec![scores_node, softmax, node];
    absorbed.extend(scale_node);
    Some(Core {
        q,
        k_transposed,
        v,
        scale,
        absorbed,
    })
}

/// If `value` is `transpose(reshape(source, [b, n, heads, d]), perm)` with `source` `[b, n,
/// heads * d]`, the source and the nodes that die with the fusion. Consecutive transposes
/// compose (`transpose(transpose(..))` from two calls).
fn split_heads(
    graph: &Graph,
    uses: &SecondaryMap<Value, usize>,
    value: Value,
    perm: &[usize],
) -> Option<(Value, Vec<Node>)> {
    let mut nodes = Vec::new();
    let mut composed: Vec<usize> = (0..4).collect();
    let mut current = value;
    let mut all_single_use = true;
    while let Some(node) = graph.producer(current)
        && let Op::Transpose { perm: inner } = &graph.nodes[node].op
    {
        // Output axis `i` of the chain so far reads axis `composed[i]` of this transpose's output,
        // which is axis `inner[composed[i]]` of its input.
        composed = composed.iter().map(|&axis| inner[axis]).collect();
        all_single_use &= uses[current] == 1;
        nodes.push((current, node));
        current = graph.nodes[node].inputs[0];
    }
    if composed != perm {
        return None;
    }
    let (source, reshape) = defined_by(graph, current, |op| matches!(op, Op::Reshape { .. }))?;
    let split = &graph.ty(current).shape;
    let source_shape = &graph.ty(source).shape;
    let [batch, positions, heads, head_dim] = split[..] else {
        return None;
    };
    if source_shape != &[batch, positions, heads * head_dim] {
        return None;
    }
    all_single_use &= uses[current] == 1;
    nodes.push((current, reshape));
    // The split dies with the fusion only if nothing else reads any step of it.
    let absorbed = if all_single_use {
        nodes.into_iter().map(|(_, node)| node).collect()
    } else {
        Vec::new()
    };
    Some((source, absorbed))
}

/// The first input of the node defining `value`, and that node, if its op satisfies `test`.
fn defined_by(graph: &Graph, value: Value, test: impl Fn(&Op) -> bool) -> Option<(Value, Node)> {
    let (inputs, node) = defined_by_all(graph, value, test)?;
    Some((*inputs.first()?, node))
}

/// The inputs of the node defining `value`, and that node, if its op satisfies `test`.
fn defined_by_all(
    graph: &Graph,
    value: Value,
    test: impl Fn(&Op) -> bool,
) -> Option<(Vec<Value>, Node)> {
    let node = graph.producer(value)?;
    let data = &graph.nodes[node];
    test(&data.op).then(|| (data.inputs.clone(), node))
}
