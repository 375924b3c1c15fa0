//! Prefill chunks of any length up to the one the chunk graph was compiled for: the rows of the
//! arena each value of a decoder's chunk graph occupies when a chunk of `rows` real tokens runs,
//! and the tail of nodes (the final norm and the head) that runs on the last row alone.
//!
//! A decoder's chunk graph is compiled for `tokens` positions, so every slot of its arena has
//! room for `tokens` rows. When every activation is laid out position-major (the sequence axis
//! first after axes of length 1), a chunk of `rows <= tokens` tokens is the first `rows` rows of
//! each slot, and every kernel the chunk calls takes its row count at run time (the GEMMs, RoPE,
//! cached attention) or from its slices' lengths (norms, elementwise, embeddings). So the chunk
//! does exactly the work of its real tokens, with causal attention as exact as for a full chunk.
//!
//! Only the logits of the last position are returned, so the nodes after the last layer that
//! work on each position alone (the final norm and the LM head: a GEMM of `vocab` columns, the
//! biggest of the network) run on that one row: they read the last row of the values before
//! them and write one row at the start of their own slot (or, in place, where they read it).

use proc_macro2::TokenStream;
use quote::{ToTokens, quote};

use super::memory::Slot;
use super::network::Generator;
use super::tokens::lit;
use crate::ir::{self, Graph};
use crate::kernel_call::{self, BinaryForm, KernelCall, Position};

/// Which rows of its slot a value of the chunk graph occupies in a chunk of `rows` tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Window {
    /// The first `rows` rows: every position of the chunk.
    AllRows,
    /// Row `rows - 1` alone: the last position, written in place over a value of every row.
    LastRow,
    /// One row at the start of the slot: the last position, computed by the tail.
    FirstRow,
}

/// How the chunk step of a decoder runs with its real row count: the window of every value and
/// the nodes of the tail.
#[derive(Clone, Debug)]
pub(super) struct ChunkRows {
    /// Elements per position of each value, by value index (0 for weights).
    row_len: Vec<usize>,
    /// The window of each value, by value index, as the nodes that write it see it.
    window: Vec<Window>,
    /// Whether each node, by index, is in the tail that runs on the last row alone.
    tail: Vec<bool>,
}

impl ChunkRows {
    /// Whether `node` runs on the last row alone.
    pub(super) fn is_tail(&self, node: ir::Node) -> bool {
        self.tail[node.index()]
    }

    /// The row count the kernel of `node` is called with: `rows`, or 1 in the tail.
    pub(super) fn rows_of(&self, node: ir::Node) -> TokenStream {
        match self.is_tail(node) {
            true => quote!(1),
            false => quote!(rows),
        }
    }

    /// The `(start, end)` expressions of the part of `slot` (holding `value`) that `reader`
    /// reads or writes; `reader` is `None` for code outside the nodes (a carried copy of a
    /// rolled loop, which is never in the tail).
    pub(super) fn bounds(
        &self,
        value: ir::Value,
        slot: Slot,
        reader: Option<ir::Node>,
    ) -> (TokenStream, TokenStream) {
        let row_len = self.row_len[value.index()];
        let mut window = self.window[value.index()];
        // The tail reads only the last row of the values computed before it.
        if window == Window::AllRows && reader.is_some_and(|node| self.is_tail(node)) {
            window = Window::LastRow;
        }
        let offset = slot.offset;
        match window {
            Window::AllRows => (
                lit(offset).into_token_stream(),
                offset_plus_rows(offset, row_len, false),
            ),
            Window::LastRow => (
                offset_plus_rows(offset, row_len, true),
                offset_plus_rows(offset, row_len, false),
            ),
            Window::FirstRow => (
                lit(offset).into_token_stream(),
                lit(offset + row_len).into_token_stream(),
            ),
        }
    }

    /// Where the row of logits of `output` (the last position's) starts for a chunk of `rows`
    /// tokens, and whether that depends on `rows`.
    pub(super) fn logits_start(&self, output: ir::Value, slot: Slot) -> (TokenStream, bool) {
        let start = match self.window[output.index()] {
            Window::AllRows | Window::LastRow => {
                offset_plus_rows(slot.offset, self.row_len[output.index()], true)
            }
            Window::FirstRow => lit(slot.offset).into_token_stream(),
        };
        (start, self.window[output.index()] != Window::FirstRow)
    }
}

impl Generator<'_> {
    /// How this generator's chunk graph (compiled for `tokens` positions, the twin of
    /// `step_graph` compiled for one) runs with its real row count, if it can: every activation
    /// position-major and every kernel one that takes its rows at run time. The tail is the
    /// longest run of position-wise nodes at the end, outside the rolled loops.
    pub(super) fn chunk_rows(&self, step_graph: &Graph, tokens: usize) -> Option<ChunkRows> {
        let graph = self.graph;
        let mut row_len = vec![0; graph.values.len()];
        for (value, _) in graph.values.iter() {
            let Some(slot) = self.plan.slots[value] else {
                continue;
            };
            let (chunk_shape, step_shape) = (&graph.ty(value).shape, &step_graph.ty(value).shape);
            let position_axis = position_major_axis(chunk_shape, step_shape, tokens)?;
            let per_row: usize = chunk_shape[position_axis + 1..].iter().product();
            if slot.len != per_row * tokens {
                return None;
            }
            row_len[value.index()] = per_row;
        }
        let calls: Vec<KernelCall> = graph
            .nodes
            .iter()
            .map(|(node, data)| kernel_call::kernel_call(graph, data, &self.site(node)).call)
            .collect();
        if !calls
            .iter()
            .all(|call| takes_rows_at_run_time(call, tokens))
        {
            return None;
        }
        let mut tail = vec![false; graph.nodes.len()];
        let nodes: Vec<ir::Node> = graph.nodes.iter().map(|(node, _)| node).collect();
        for &node in nodes.iter().rev() {
            // A rolled loop's body is one code for every iteration: all its rows, always.
            let in_loop = self
                .rolling
                .as_ref()
                .is_some_and(|rolling| rolling.position(node).is_some());
            if in_loop || !works_per_position(&calls[node.index()]) {
                break;
            }
            tail[node.index()] = true;
        }
        let mut window = vec![Window::AllRows; graph.values.len()];
        for (node, data) in graph.nodes.iter() {
            if !tail[node.index()] {
                continue;
            }
            let output = data.outputs[0];
            window[output.index()] = match self.plan.in_place(output, data.inputs[0]) {
                true => match window[data.inputs[0].index()] {
                    Window::AllRows | Window::LastRow => Window::LastRow,
                    Window::FirstRow => Window::FirstRow,
                },
                false => Window::FirstRow,
            };
        }
        Some(ChunkRows {
            row_len,
            window,
            tail,
        })
    }

    /// The `(start, end)` pair of `value`'s arena range as `reader` sees it.
    pub(super) fn value_pair(&self, value: ir::Value, reader: Option<ir::Node>) -> TokenStream {
        let (start, end) = self.value_bounds(value, reader);
        quote!((#start, #end))
    }

    /// The `start..end` of `value`'s arena range as `reader` sees it.
    pub(super) fn value_range(&self, value: ir::Value, reader: Option<ir::Node>) -> TokenStream {
        let (start, end) = self.value_bounds(value, reader);
        quote!(#start..#end)
    }

    /// The start and end of `value`'s arena range as `reader` sees it: its slot, or in a chunk
    /// step with run-time rows, the rows of its window.
    pub(super) fn value_bounds(
        &self,
        value: ir::Value,
        reader: Option<ir::Node>,
    ) -> (TokenStream, TokenStream) {
        let slot = self.plan.slots[value].expect("activations have slots");
        match &self.chunk_rows {
            Some(rows) => rows.bounds(value, slot, reader),
            None => (
                lit(slot.offset).into_token_stream(),
                lit(slot.offset + slot.len).into_token_stream(),
            ),
        }
    }

    /// The row count `node`'s kernel is called with, compiled for `compiled` rows: in a chunk
    /// step with run-time rows, `rows` (or 1 in the tail).
    pub(super) fn rows_tokens(&self, node: ir::Node, compiled: usize) -> TokenStream {
        match &self.chunk_rows {
            Some(rows) => rows.rows_of(node),
            None => lit(compiled).into_token_stream(),
        }
    }
}

/// The axis of `chunk_shape` that holds the positions, if every axis before it has length 1:
/// the one axis where the step graph's twin `step_shape` has 1 and the chunk `tokens`.
fn position_major_axis(
    chunk_shape: &[usize],
    step_shape: &[usize],
    tokens: usize,
) -> Option<usize> {
    if chunk_shape.len() != step_shape.len() {
        return None;
    }
    let mut differing =
        (0..chunk_shape.len()).filter(|&axis| chunk_shape[axis] != step_shape[axis]);
    let axis = differing.next()?;
    let leading_ones = chunk_shape[..axis].iter().all(|&length| length == 1);
    (differing.next().is_none()
        && chunk_shape[axis] == tokens
        && step_shape[axis] == 1
        && leading_ones)
        .then_some(axis)
}

/// Whether the kernel of `call` (in a chunk of `tokens` positions) is one whose row count the
/// chunk's code can set at run time.
fn takes_rows_at_run_time(call: &KernelCall, tokens: usize) -> bool {
    match call {
        KernelCall::Linear { rows, .. } => *rows == tokens,
        KernelCall::Rope {
            batch,
            seq,
            position,
            ..
        } => *batch == 1 && *seq == tokens && *position == Position::Cached,
        KernelCall::PositionEmbedding {
            tokens: positions,
            position,
            ..
        } => *positions == tokens && *position == Position::Cached,
        KernelCall::Attention(attention) => {
            attention.cache_layer.is_some()
                && attention.shape.batch == 1
                && attention.shape.query_len == tokens
                && !attention.key_padding_mask
        }
        KernelCall::Embedding { .. } => true,
        call => works_per_position(call),
    }
}

/// Whether `call` works on each position alone and takes its row count from its slices, so that
/// it may run on the last position only.
fn works_per_position(call: &KernelCall) -> bool {
    match call {
        KernelCall::Linear { .. }
        | KernelCall::LayerNorm { .. }
        | KernelCall::RmsNorm { .. }
        | KernelCall::Activation(_)
        | KernelCall::Affine { .. }
        | KernelCall::ElementwiseChain(_)
        | KernelCall::Copy => true,
        KernelCall::Binary { form, .. } => {
            matches!(form, BinaryForm::SameShape | BinaryForm::RowVector)
        }
        _ => false,
    }
}

/// `offset + row_len * rows` (with `before_last`, `rows - 1`), without the terms clippy calls
/// no-ops or the parentheses rustc calls unused.
pub(super) fn offset_plus_rows(offset: usize, row_len: usize, before_last: bool) -> TokenStream {
    let rows = match before_last {
        true => quote!(rows - 1),
        false => quote!(rows),
    };
    let scaled = match (row_len, before_last) {
        (1, _) => rows,
        (_, false) => {
            let row_len = lit(row_len);
            quote!(#row_len * #rows)
        }
        (_, true) => {
            let row_len = lit(row_len);
            quote!(#row_len * (#rows))
        }
    };
    match offset {
        0 => scaled,
        _ => {
            let offset = lit(offset);
            quote!(#offset + #scaled)
        }
    }
}
