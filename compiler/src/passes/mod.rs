//! The optimizer: graph-to-graph passes, run in the order [`optimize`] lists them.
//!
//! Each pass is a function `run(&mut Graph) -> bool` (whether it changed anything) in a file of its
//! own, whose header says what it rewrites and why that is legal. After every pass, debug builds
//! and tests run the IR verifier. Passes never add or remove weights: a weights file fits a model
//! at every optimization level.

pub mod choose_layout;
pub mod cse;
pub mod dce;
pub mod fold_batch_norm;
pub mod fold_constants;
pub mod fuse_attention;
pub mod fuse_conv_max_pool;
pub mod fuse_depthwise_pointwise;
pub mod fuse_elementwise;
pub mod fuse_epilogue;
pub mod fuse_pointwise_depthwise;
pub mod fuse_residual;

use crate::ir::{ConvAttrs, Graph, Node, Op, SecondaryMap, Value, verify};

/// How hard to optimize.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OptLevel {
    /// No passes: the graph as written.
    O0,
    /// Cleanups that never change which kernels run: constant folding, CSE, dead code.
    O1,
    /// Everything: also batch-norm folding, fusion and the choice of layout.
    #[default]
    O2,
}

/// A pass: its name (as `--emit ir-after=NAME` takes it) and its function.
pub type Pass = (&'static str, fn(&mut Graph) -> bool);

/// The passes of `level`, in the order they run.
pub fn pipeline(level: OptLevel) -> Vec<Pass> {
    let mut passes: Vec<Pass> = Vec::new();
    if level >= OptLevel::O1 {
        passes.push(("fold-constants", fold_constants::run));
        passes.push(("cse", cse::run));
        passes.push(("dce", dce::run));
    }
    if level >= OptLevel::O2 {
        passes.push(("fuse-attention", fuse_attention::run));
        passes.push(("fold-batch-norm", fold_batch_norm::run));
        // Before epilogue fusion: an activation after a residual add applies after the add.
        passes.push(("fuse-residual", fuse_residual::run));
        passes.push(("fuse-epilogue", fuse_epilogue::run));
        passes.push(("fuse-elementwise", fuse_elementwise::run));
        passes.push(("choose-layout", choose_layout::run));
        // After the layout choice: only channels-last layers fuse.
        passes.push(("fuse-pointwise-depthwise", fuse_pointwise_depthwise::run));
        passes.push(("fuse-depthwise-pointwise", fuse_depthwise_pointwise::run));
        passes.push(("fuse-conv-max-pool", fuse_conv_max_pool::run));
        passes.push(("dce", dce::run));
    }
    passes
}

/// The f32 convolution that defines `value`, where nothing else reads `value` (`uses` counts the
/// readers, as [`Graph::use_counts`]): a layer whose output the one reading it can take over.
fn sole_reader_conv<'g>(
    graph: &'g Graph,
    uses: &SecondaryMap<Value, usize>,
    value: Value,
) -> Option<(Node, &'g ConvAttrs)> {
    let node = graph.producer(value)?;
    let Op::Conv(attrs) = &graph.nodes[node].op else {
        return None;
    };
    (uses[value] == 1 && !graph.is_int8_conv(&graph.nodes[node])).then_some((node, attrs))
}

/// Puts `absorbed`'s origin before `node`'s: `node` now also computes what `absorbed` did (a
/// fusion's reader of a value it runs inside itself).
fn prepend_origin(graph: &mut Graph, node: Node, absorbed: Node) {
    let mut origin = graph.nodes[absorbed].origin.clone();
    origin.extend(&graph.nodes[node].origin);
    graph.nodes[node].origin = origin;
}

/// `node` takes over `layer`, whose output it alone reads and which it now runs (a residual add
/// or a pooling that a layer's node becomes): `layer`'s origin before its own, and `layer`'s name
/// and source span, since the layer holds the weights.
fn take_over_layer(graph: &mut Graph, node: Node, layer: Node) {
    prepend_origin(graph, node, layer);
    graph.nodes[node].name = graph.nodes[layer].name.clone();
    let span = graph.spans.get(layer).copied().unwrap_or_default();
    graph.spans.insert(node, span, Default::default());
}

/// The names of all passes, for command-line validation.
pub fn pass_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = pipeline(OptLevel::O2)
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    names.dedup();
    names.sort_unstable();
    names.dedup();
    names
}

/// Optimizes `graph` at `level`. `after_each` sees the graph after every pass (for
/// `--emit ir-after`). Returns the names of the passes that changed something.
pub fn optimize(
    graph: &mut Graph,
    level: OptLevel,
    after_each: impl FnMut(&str, &Graph),
) -> Vec<&'static str> {
    run_passes(graph, pipeline(level), after_each)
}

/// Runs `passes` on `graph` in order, checking the IR invariants after each in debug builds;
/// `after_each` sees the graph after every pass. Returns the names of the passes that changed
/// something. [`optimize`] runs [`pipeline`]; `nnc export` runs it without the layout choice.
pub fn run_passes(
    graph: &mut Graph,
    passes: Vec<Pass>,
    mut after_each: impl FnMut(&str, &Graph),
) -> Vec<&'static str> {
    let mut changed = Vec::new();
    for (name, pass) in passes {
        if pass(graph) {
            changed.push(name);
        }
        if cfg!(debug_assertions)
            && let Err(errors) = verify::verify(graph)
        {
            panic!(
                "pass `{name}` left an invalid graph for `{}`:\n{}",
                graph.name,
                errors.join("\n")
            );
        }
        after_each(name, graph);
    }
    changed
}
