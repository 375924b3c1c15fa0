//! The warning `nnc check` and `nnc report` print when a network needs more memory than the
//! machine has: its weights as stored, its activation arenas and its KV cache at full context.

use nnc_compiler::{codegen, cost, ir};
use nnc_runtime::alloc;

/// The bytes a running `graph` holds: weights as stored, the f32 and i64 arenas, and the KV cache
/// at its full context.
pub fn bytes_needed(graph: &ir::Graph) -> u64 {
    let weights = cost::analyze(graph).totals(graph).weight_bytes;
    let plan = codegen::plan(graph);
    let arenas = (plan.f32_len as u64)
        .saturating_mul(4)
        .saturating_add((plan.i64_len as u64).saturating_mul(8));
    let cache = cost::kv_cache(graph).map_or(0, |cache| cache.bytes_at_max_context);
    weights.saturating_add(arenas).saturating_add(cache)
}

/// A warning when `graph` needs more than `machine` bytes, else `None`.
pub fn warning(graph: &ir::Graph, machine: Option<u64>) -> Option<String> {
    let machine = machine?;
    let needed = bytes_needed(graph);
    (needed > machine).then(|| {
        format!(
            "warning: `{}` needs {} (weights, activations and KV cache), more than the memory budget (the machine's memory, or NNC_MEMORY_LIMIT), {}: loading or running it will fail with an out-of-memory error",
            graph.name,
            alloc::format_bytes(u128::from(needed)),
            alloc::format_bytes(u128::from(machine)),
        )
    })
}

/// Prints [`warning`] for `graph` against the machine's memory (`MemTotal`, or `NNC_MEMORY_LIMIT`
/// when set; no warning where neither is known) on standard error.
pub fn warn_if_too_big(graph: &ir::Graph) {
    let budget = alloc::memory_budget().ok().flatten();
    if let Some(warning) = warning(graph, budget.map(|(bytes, _)| bytes)) {
        eprintln!("{warning}");
    }
}
