//! Activation memory: live ranges, and three figures for the peak.
//!
//! - *naive*: one buffer per tensor, never reused: the sum of every input and node output.
//! - *planned*: the arenas of [`codegen::plan`](crate::codegen::plan), what generated code
//!   allocates.
//! - *lower bound*: the most bytes live at any one step. No plan that keeps every live tensor in
//!   memory can do better, so `planned - lower_bound` is what the planner leaves on the table. An
//!   elementwise node that overwrites its input in place (the plan gives both the same memory)
//!   counts that memory once.
//!
//! Liveness is the memory planner's: step 0 defines the network inputs, node `i` runs at step
//! `i + 1`, a value is live from the step that defines it to the last step that reads it, and
//! network outputs stay live to step `nodes + 1`. A node's inputs and outputs are live together
//! at its step, since a kernel never writes over what it reads.

use crate::codegen::MemoryPlan;
use crate::ir::{DType, Graph, SecondaryMap, Value};

/// The steps during which a value occupies memory, both ends included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveRange {
    pub start: usize,
    pub end: usize,
}

/// The peak activation memory of a graph, three ways.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryFigures {
    /// Bytes of every input and node output, each in its own buffer.
    pub naive_bytes: u64,
    /// Bytes of the planned arenas: `f32_arena_bytes + i64_arena_bytes`.
    pub planned_bytes: u64,
    pub f32_arena_bytes: u64,
    pub i64_arena_bytes: u64,
    /// The most bytes live at one step.
    pub lower_bound_bytes: u64,
    /// The first step at which `lower_bound_bytes` are live (0: the inputs; `i + 1`: node `i`).
    pub lower_bound_step: usize,
    /// Bytes live at each step, `0..=nodes + 1`.
    pub live_bytes: Vec<u64>,
}

/// The live range of every activation; `None` for weights. The definition is the memory
/// planner's ([`crate::codegen::memory::live_ranges`]), so the figures measure what it plans.
pub fn live_ranges(graph: &Graph) -> SecondaryMap<Value, Option<LiveRange>> {
    let planned = crate::codegen::memory::live_ranges(graph);
    let mut ranges = SecondaryMap::with_default(graph.values.len(), None);
    for (value, _) in graph.values.iter() {
        ranges[value] = planned[value].map(|(start, end)| LiveRange { start, end });
    }
    ranges
}

/// The naive, planned and lower-bound activation memory of `graph` under `plan`.
///
/// The bytes live at a step are measured as the union of the arena ranges the plan gives the
/// values live then, so a value and the in-place result that overwrites it at its last use (the
/// only values a valid plan lets overlap) count once, as their larger size.
pub fn memory_figures(graph: &Graph, plan: &MemoryPlan) -> MemoryFigures {
    let ranges = live_ranges(graph);
    let steps = graph.nodes.len() + 2;
    // Per step, the byte ranges occupied in each arena, the i64 arena placed after the f32 one.
    let f32_arena_bytes = plan.f32_len as u64 * DType::F32.size_in_bytes();
    let i64_arena_bytes = plan.i64_len as u64 * DType::I64.size_in_bytes();
    let mut occupied: Vec<Vec<(u64, u64)>> = vec![Vec::new(); steps];
    let mut unplaced_bytes = vec![0u64; steps];
    let mut naive_bytes = 0u64;
    for (value, data) in graph.values.iter() {
        let Some(range) = ranges[value] else {
            continue;
        };
        let bytes = data.ty.size_in_bytes();
        naive_bytes = naive_bytes.saturating_add(bytes);
        let start = match plan.slots[value] {
            Some(slot) if slot.dtype == DType::I64 => {
                f32_arena_bytes + slot.offset as u64 * DType::I64.size_in_bytes()
            }
            Some(slot) => slot.offset as u64 * DType::F32.size_in_bytes(),
            // Every activation has a slot; one without would be counted on its own.
            None => {
                for unplaced in &mut unplaced_bytes[range.start..=range.end] {
                    *unplaced += bytes;
                }
                continue;
            }
        };
        for step in &mut occupied[range.start..=range.end] {
            step.push((start, start + bytes));
        }
    }
    let live_bytes: Vec<u64> = occupied
        .into_iter()
        .zip(unplaced_bytes)
        .map(|(ranges, unplaced)| union_length(ranges) + unplaced)
        .collect();
    let (lower_bound_step, lower_bound_bytes) =
        live_bytes
            .iter()
            .copied()
            .enumerate()
            .fold(
                (0, 0),
                |best, (step, bytes)| {
                    if bytes > best.1 { (step, bytes) } else { best }
                },
            );
    MemoryFigures {
        naive_bytes,
        planned_bytes: f32_arena_bytes + i64_arena_bytes,
        f32_arena_bytes,
        i64_arena_bytes,
        lower_bound_bytes,
        lower_bound_step,
        live_bytes,
    }
}

/// The total length of the union of half-open ranges.
fn union_length(mut ranges: Vec<(u64, u64)>) -> u64 {
    ranges.sort_unstable();
    let mut total = 0;
    let mut covered_to = 0;
    for (start, end) in ranges {
        let start = start.max(covered_to);
        if end > start {
            total += end - start;
            covered_to = end;
        }
    }
    total
}
