//! Which networks are decoders with a KV cache, and how their step graph splits into an encoder
//! (run once per source by `encode`) and a per-token step.

use std::collections::HashMap;

use crate::ir::{self, DType, Graph, Op, ValueDef};

/// What a decoder's one-token step needs: the KV-cache layer of each cached attention node, and
/// for an encoder–decoder, which nodes are the encoder's.
pub(super) struct Decoding {
    pub(super) max_context: usize,
    pub(super) layers: HashMap<ir::Node, usize>,
    pub(super) kv_heads: usize,
    pub(super) head_dim: usize,
    /// When every cached attention is a plain sliding window, its size: the cache then rolls
    /// and holds only the window, so its memory does not grow with the sequence.
    pub(super) rolling_window: Option<usize>,
    /// The input that takes the new token, `i64 [1, 1]`.
    pub(super) token_input: usize,
    /// Nodes `0..encoder_len` do not depend on the token: they are an encoder (with the other
    /// inputs as its inputs), run once per source by `encode`. [`Decoding::of`] counts them;
    /// [`step_graph_order`] puts them first.
    pub(super) encoder_len: usize,
    /// Whether some encoder node comes after a step node; never once the graph is in
    /// [`step_graph_order`].
    pub(super) interleaved: bool,
}

impl Decoding {
    /// The decoding plan of `graph` compiled for steps of `tokens` tokens, if it is a decoder:
    /// exactly one input is i64 `[1, tokens]` (the tokens), the one output depends on it, and
    /// every attention that depends on it either has a KV cache (causal, `tokens` queries, all
    /// with the same size, heads and head size: at least one) or reads keys and values that do
    /// not (cross-attention over an encoder's output).
    pub(super) fn of(graph: &Graph, tokens: usize) -> Option<Decoding> {
        let is_token = |value: ir::Value| {
            graph.ty(value).shape == [1, tokens] && graph.ty(value).dtype == DType::I64
        };
        let token_inputs: Vec<usize> = (0..graph.inputs.len())
            .filter(|&index| is_token(graph.inputs[index].value))
            .collect();
        let [token_input] = token_inputs[..] else {
            return None;
        };
        let [output] = graph.outputs.as_slice() else {
            return None;
        };
        let varies = token_dependent(graph, graph.inputs[token_input].value);
        let (mut encoder_len, mut steps, mut interleaved) = (0, 0, false);
        for (_, data) in graph.nodes.iter() {
            if varies[data.outputs[0].index()] {
                steps += 1;
            } else {
                encoder_len += 1;
                interleaved |= steps > 0;
            }
        }
        if !varies[output.value.index()] {
            return None;
        }
        let mut layers = HashMap::new();
        let mut shape = None;
        for (node, data) in graph.nodes.iter() {
            let Op::Attention(attrs) = &data.op else {
                continue;
            };
            if !varies[data.outputs[0].index()] {
                continue;
            }
            let Some(max_context) = attrs.kv_cache else {
                // Keys that change with the token would need the earlier tokens' keys.
                if varies[data.inputs[1].index()] || varies[data.inputs[2].index()] {
                    return None;
                }
                continue;
            };
            let this = (max_context, attrs.kv_heads, attrs.head_dim);
            let step_queries = graph.ty(data.inputs[0]).shape.get(1) == Some(&tokens);
            if *shape.get_or_insert(this) != this || !attrs.causal || !step_queries {
                return None;
            }
            layers.insert(node, layers.len());
        }
        let (max_context, kv_heads, head_dim) = shape?;
        let windows: Vec<Option<usize>> = graph
            .nodes
            .iter()
            .filter(|(node, _)| layers.contains_key(node))
            .filter_map(|(_, data)| match &data.op {
                Op::Attention(attrs) => {
                    let pattern = &attrs.pattern;
                    let plain_window = pattern.dilation == 1
                        && pattern.global_tokens.is_empty()
                        && pattern.strided.is_none()
                        && pattern.block_mask.is_none();
                    Some(pattern.window.filter(|_| plain_window))
                }
                _ => None,
            })
            .collect();
        let rolling_window = match windows.first() {
            Some(&Some(window)) if windows.iter().all(|&other| other == Some(window)) => {
                Some(window)
            }
            _ => None,
        };
        Some(Decoding {
            max_context,
            layers,
            kv_heads,
            head_dim,
            rolling_window,
            token_input,
            encoder_len,
            interleaved,
        })
    }

    /// Whether `node` runs in every step (it depends on the token), not once in `encode`.
    pub(super) fn is_step(&self, node: ir::Node) -> bool {
        node.index() >= self.encoder_len
    }

    /// Whether the network has an encoder: inputs besides the token, or nodes that do not
    /// depend on it. Either way `encode` must run (copying those inputs, running those nodes)
    /// before the steps, which read its results.
    pub(super) fn has_encoder(&self, graph: &Graph) -> bool {
        graph.inputs.len() > 1 || self.encoder_len > 0
    }
}

/// Whether `graph`, compiled with one target position, is a decoder with a KV cache, for which
/// [`generate_decoder_tokens`](super::generate_decoder_tokens) makes a decoder.
pub fn is_decoder_step(graph: &Graph) -> bool {
    Decoding::of(graph, 1).is_some()
}

/// Which nodes of `graph` run in every decode step (they depend on the token), by node index, if
/// `graph` is a decoder with a KV cache at the sequence length it was built with (batch 1): for
/// the cost report's weight bytes per generated token. Nodes that do not depend on the token
/// (an encoder) run once per source.
pub fn decode_step_nodes(graph: &Graph) -> Option<Vec<bool>> {
    graph.inputs.iter().find_map(|input| {
        let ty = graph.ty(input.value);
        let [1, tokens] = ty.shape[..] else {
            return None;
        };
        let decoding = Decoding::of(graph, tokens)?;
        let varies = token_dependent(graph, graph.inputs[decoding.token_input].value);
        Some(
            graph
                .nodes
                .iter()
                .map(|(_, data)| varies[data.outputs[0].index()])
                .collect(),
        )
    })
}

/// The most tokens a prefill step of the decoder with one-token graph `step` takes at once, if
/// it can take several: decoder-only networks prefill in chunks of [`PREFILL_CHUNK`] tokens (fewer
/// when a rolling window or the context is smaller), compiled as a second graph with the
/// sequence dimension set to that; a shorter chunk runs with its real row count, or padded to
/// that length (`decoder::ChunkStep`); encoder–decoders prefill token by token.
pub fn prefill_chunk_len(step: &Graph) -> Option<usize> {
    let decoding = Decoding::of(step, 1)?;
    if decoding.has_encoder(step) {
        return None;
    }
    let chunk = PREFILL_CHUNK
        .min(decoding.max_context)
        .min(decoding.rolling_window.unwrap_or(usize::MAX));
    (chunk > 1).then_some(chunk)
}

/// Tokens per prefill step of decoder-only networks: enough rows to turn the step's
/// matrix-vector products into matrix products.
pub const PREFILL_CHUNK: usize = 16;

/// The nodes of a decoder's step graph with the encoder's (those that do not depend on the
/// token) first, each part in its original order: a valid order, since no encoder node reads
/// a value that depends on the token.
pub(super) fn step_graph_order(graph: &Graph, decoding: &Decoding) -> Vec<ir::Node> {
    let varies = token_dependent(graph, graph.inputs[decoding.token_input].value);
    let (mut step, mut encoder): (Vec<ir::Node>, Vec<ir::Node>) = graph
        .nodes
        .iter()
        .map(|(node, _)| node)
        .partition(|node| varies[graph.nodes[*node].outputs[0].index()]);
    encoder.append(&mut step);
    encoder
}

/// Which values of `graph` change with `token`, by value index: `token` and everything computed
/// from it.
fn token_dependent(graph: &Graph, token: ir::Value) -> Vec<bool> {
    let mut varies = vec![false; graph.values.len()];
    varies[token.index()] = true;
    for (_, data) in graph.nodes.iter() {
        if data.inputs.iter().any(|input| varies[input.index()]) {
            for output in &data.outputs {
                varies[output.index()] = true;
            }
        }
    }
    varies
}

/// The values a decoder's steps read but do not compute (the encoder's results and the other
/// inputs): they stay in the arena from `encode` to the last step.
pub(super) fn encoder_results(graph: &Graph, decoding: &Decoding) -> Vec<ir::Value> {
    let mut results: Vec<ir::Value> = graph
        .nodes
        .iter()
        .filter(|(node, _)| decoding.is_step(*node))
        .flat_map(|(_, data)| data.inputs.iter().copied())
        .filter(|&value| match graph.values[value].def {
            ValueDef::Node { node, .. } => !decoding.is_step(node),
            ValueDef::Input { .. } => value != graph.inputs[decoding.token_input].value,
            ValueDef::Param(_) => false,
        })
        .collect();
    results.sort_unstable();
    results.dedup();
    results
}
