//! The memory plan: an offset in one arena for every activation of a graph.
//!
//! Each network input and node output gets a range of the f32 or the i64 arena. Two values may
//! share memory only if their live ranges do not intersect: a value is live from the step that
//! defines it to the last step that reads it (network outputs stay live to the end). A node's
//! output is live at the node's own step, like its inputs, so a kernel never writes over what it
//! reads. Offsets are assigned first-fit, largest values first.

use crate::ir::{DType, Graph, SecondaryMap, Value, ValueDef};

/// Where a value lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub dtype: DType,
    pub offset: usize,
    pub len: usize,
}

impl Slot {
    /// The range of the arena.
    pub fn range(self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len
    }
}

/// Arena offsets for every activation of a graph.
#[derive(Clone, Debug)]
pub struct MemoryPlan {
    /// The slot of every input and node output; `None` for weights.
    pub slots: SecondaryMap<Value, Option<Slot>>,
    /// Elements of the f32 arena.
    pub f32_len: usize,
    /// Elements of the i64 arena.
    pub i64_len: usize,
}

/// Plans the arenas of `graph`.
pub fn plan(graph: &Graph) -> MemoryPlan {
    let steps = graph.nodes.len();
    // Step 0 defines the inputs; node `i` runs at step `i + 1`.
    let mut live: Vec<(Value, usize, usize)> = Vec::new();
    let mut last_use: SecondaryMap<Value, usize> =
        SecondaryMap::with_default(graph.values.len(), 0);
    for (node, data) in graph.nodes.iter() {
        for &input in &data.inputs {
            last_use[input] = last_use[input].max(node.index() + 1);
        }
    }
    for output in &graph.outputs {
        last_use[output.value] = steps + 1;
    }
    for (value, data) in graph.values.iter() {
        let defined = match data.def {
            ValueDef::Input { .. } => 0,
            ValueDef::Node { node, .. } => node.index() + 1,
            ValueDef::Param(_) => continue,
        };
        live.push((value, defined, last_use[value].max(defined)));
    }

    let mut slots = SecondaryMap::with_default(graph.values.len(), None);
    let mut lengths = [0usize; 2];
    for dtype in [DType::F32, DType::I64] {
        let mut values: Vec<(Value, usize, usize, usize)> = live
            .iter()
            .filter(|(value, _, _)| graph.ty(*value).dtype == dtype)
            .map(|&(value, start, end)| {
                (value, start, end, graph.ty(value).element_count() as usize)
            })
            .collect();
        // Largest first, then in definition order, for a deterministic plan.
        values.sort_by_key(|&(value, start, _, len)| (std::cmp::Reverse(len), start, value));
        let mut placed: Vec<(usize, usize, usize, usize)> = Vec::new();
        let mut arena_len = 0;
        for (value, start, end, len) in values {
            let mut conflicts: Vec<(usize, usize)> = placed
                .iter()
                .filter(|&&(other_start, other_end, _, _)| start <= other_end && other_start <= end)
                .map(|&(_, _, offset, other_len)| (offset, offset + other_len))
                .collect();
            conflicts.sort_unstable();
            let mut offset = 0;
            for (busy_start, busy_end) in conflicts {
                if offset + len <= busy_start {
                    break;
                }
                offset = offset.max(busy_end);
            }
            placed.push((start, end, offset, len));
            arena_len = arena_len.max(offset + len);
            slots[value] = Some(Slot { dtype, offset, len });
        }
        lengths[usize::from(dtype == DType::I64)] = arena_len;
    }
    MemoryPlan {
        slots,
        f32_len: lengths[0],
        i64_len: lengths[1],
    }
}
