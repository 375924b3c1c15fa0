//! The memory plan: an offset in one arena for every activation of a graph.
//!
//! Each network input and node output gets a range of the f32 or the i64 arena. A value is live
//! from the step that defines it to the last step that reads it (network outputs stay live to the
//! end); step 0 defines the inputs and node `i` runs at step `i + 1`.
//!
//! Values that an operation may overwrite in place share one *group*: when an elementwise node
//! (activation, affine map, fused chain, batch norm, a same-shape or row-vector binary op) or a
//! reshape is the last reader of its first input, its output takes the input's memory. Groups
//! whose live ranges intersect get disjoint ranges; offsets are assigned first-fit, largest group
//! first, which on these graphs lands at or near the lower bound: the most bytes live at any step.
//! [`check`] verifies a plan independently of how it was made.

use crate::ir::{DType, Graph, Op, SecondaryMap, Value, ValueDef};

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
    /// For each value, the value whose memory it reuses in place (itself if none).
    pub group: SecondaryMap<Value, Value>,
    /// Elements of the f32 arena.
    pub f32_len: usize,
    /// Elements of the i64 arena.
    pub i64_len: usize,
}

impl MemoryPlan {
    /// Whether `output` overwrites `input` in place.
    pub fn in_place(&self, output: Value, input: Value) -> bool {
        self.group[output] == self.group[input] && output != input
    }

    /// The planned arena size in bytes.
    pub fn planned_bytes(&self) -> u64 {
        self.f32_len as u64 * 4 + self.i64_len as u64 * 8
    }
}

/// The three memory figures of a graph, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryStats {
    /// One buffer per activation, no reuse.
    pub naive: u64,
    /// The planned arenas.
    pub planned: u64,
    /// The most bytes live at any step, with the same in-place sharing as the plan.
    pub lower_bound: u64,
}

/// The live range of every activation: (definition step, last-use step).
pub fn live_ranges(graph: &Graph) -> SecondaryMap<Value, Option<(usize, usize)>> {
    live_ranges_pinned(graph, &[])
}

/// [`live_ranges`], with the `pinned` values live to the end like the outputs.
pub fn live_ranges_pinned(
    graph: &Graph,
    pinned: &[Value],
) -> SecondaryMap<Value, Option<(usize, usize)>> {
    let steps = graph.nodes.len();
    let mut last_use: SecondaryMap<Value, usize> =
        SecondaryMap::with_default(graph.values.len(), 0);
    for (node, data) in graph.nodes.iter() {
        for &input in &data.inputs {
            last_use[input] = last_use[input].max(node.index() + 1);
        }
    }
    for value in graph
        .outputs
        .iter()
        .map(|output| output.value)
        .chain(pinned.iter().copied())
    {
        last_use[value] = steps + 1;
    }
    let mut ranges = SecondaryMap::with_default(graph.values.len(), None);
    for (value, data) in graph.values.iter() {
        let defined = match data.def {
            ValueDef::Input { .. } => 0,
            ValueDef::Node { node, .. } => node.index() + 1,
            ValueDef::Param(_) => continue,
        };
        ranges[value] = Some((defined, last_use[value].max(defined)));
    }
    ranges
}

/// Whether `row` broadcasts along the last axis of `full` as one row: `[.., 1, n]` against
/// `[.., m, n]`. The runtime's row-vector kernels take exactly this case.
pub fn is_row_vector(row: &[usize], full: &[usize]) -> bool {
    row.last() == full.last()
        && row.iter().rev().skip(1).all(|&dim| dim == 1)
        && row.len() <= full.len()
}

/// Whether `op` can write its output over its first input (given the input dies there).
///
/// A conv or linear layer with a fused residual cannot take the residual's memory: its kernel
/// writes partial products into the output before the epilogue reads the residual.
fn can_run_in_place(graph: &Graph, op: &Op, inputs: &[Value], output: Value) -> bool {
    let first = graph.ty(inputs[0]);
    let same_type = first == graph.ty(output);
    match op {
        Op::Activation(_) | Op::Affine { .. } | Op::ElementwiseChain(_) | Op::BatchNorm { .. } => {
            same_type
        }
        Op::Reshape { .. } => first.dtype == graph.ty(output).dtype,
        Op::Binary(_) => {
            let second = &graph.ty(inputs[1]).shape;
            same_type
                && inputs[0] != inputs[1]
                && (second == &first.shape || is_row_vector(second, &first.shape))
        }
        _ => false,
    }
}

/// Plans the arenas of `graph`.
pub fn plan(graph: &Graph) -> MemoryPlan {
    plan_pinned(graph, &[])
}

/// Plans the arenas of `graph`, keeping the `pinned` values to the end like the outputs: a
/// decoder's step reads its encoder's results (computed once, at the front of the graph) at
/// every call.
pub fn plan_pinned(graph: &Graph, pinned: &[Value]) -> MemoryPlan {
    let ranges = live_ranges_pinned(graph, pinned);
    let mut group: SecondaryMap<Value, Value> =
        SecondaryMap::with_default(graph.values.len(), Value::from_index(0));
    for (value, _) in graph.values.iter() {
        group[value] = value;
    }
    let mut group_range: SecondaryMap<Value, Option<(usize, usize)>> = ranges.clone();
    for (node, data) in graph.nodes.iter() {
        let Some(&input) = data.inputs.first() else {
            continue;
        };
        let output = data.outputs[0];
        let input_dies_here = ranges[input].is_some_and(|(_, end)| end == node.index() + 1);
        if !input_dies_here || !can_run_in_place(graph, &data.op, &data.inputs, output) {
            continue;
        }
        let root = group[input];
        group[output] = root;
        let (start, _) = group_range[root].expect("activations have ranges");
        let (_, end) = ranges[output].expect("activations have ranges");
        group_range[root] = Some((start, end));
    }

    let mut slots = SecondaryMap::with_default(graph.values.len(), None);
    let mut lengths = [0usize; 2];
    for dtype in [DType::F32, DType::I64] {
        // The groups of this element type: root, live range, size.
        let mut groups: Vec<(Value, usize, usize, usize)> = graph
            .values
            .iter()
            .filter(|(value, data)| {
                group[*value] == *value && data.ty.dtype == dtype && ranges[*value].is_some()
            })
            .map(|(value, _)| {
                let (start, end) = group_range[value].expect("activations have ranges");
                let len = graph
                    .values
                    .iter()
                    .filter(|(member, _)| group[*member] == value)
                    .map(|(member, _)| graph.ty(member).element_count() as usize)
                    .max()
                    .unwrap_or(0);
                (value, start, end, len)
            })
            .collect();
        // Largest first, then in definition order, for a deterministic plan.
        groups.sort_by_key(|&(value, start, _, len)| (std::cmp::Reverse(len), start, value));
        let mut placed: Vec<(usize, usize, usize, usize)> = Vec::new();
        let mut offsets: SecondaryMap<Value, usize> =
            SecondaryMap::with_default(graph.values.len(), 0);
        let mut arena_len = 0;
        for (root, start, end, len) in groups {
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
            offsets[root] = offset;
            arena_len = arena_len.max(offset + len);
        }
        for (value, data) in graph.values.iter() {
            if data.ty.dtype == dtype && ranges[value].is_some() {
                let offset = offsets[group[value]];
                slots[value] = Some(Slot {
                    dtype,
                    offset,
                    len: data.ty.element_count() as usize,
                });
            }
        }
        lengths[usize::from(dtype == DType::I64)] = arena_len;
    }
    MemoryPlan {
        slots,
        group,
        f32_len: lengths[0],
        i64_len: lengths[1],
    }
}

/// The naive, planned and lower-bound memory of `graph` under `plan`.
pub fn stats(graph: &Graph, plan: &MemoryPlan) -> MemoryStats {
    let ranges = live_ranges(graph);
    let bytes = |value: Value| graph.ty(value).size_in_bytes();
    let naive = graph
        .values
        .iter()
        .filter(|(value, _)| ranges[*value].is_some())
        .map(|(value, _)| bytes(value))
        .sum();
    let steps = graph.nodes.len() + 1;
    let mut live_at = vec![0u64; steps + 1];
    for (value, _) in graph.values.iter() {
        if plan.group[value] != value {
            continue;
        }
        // A group occupies its largest member's bytes from its first definition to its last use.
        let members: Vec<Value> = graph
            .values
            .iter()
            .map(|(member, _)| member)
            .filter(|member| plan.group[*member] == value && ranges[*member].is_some())
            .collect();
        let Some(size) = members.iter().map(|&member| bytes(member)).max() else {
            continue;
        };
        let start = members
            .iter()
            .filter_map(|&member| ranges[member])
            .map(|(start, _)| start)
            .min()
            .unwrap_or(0);
        let end = members
            .iter()
            .filter_map(|&member| ranges[member])
            .map(|(_, end)| end)
            .max()
            .unwrap_or(0);
        for slot in &mut live_at[start..=end.min(steps)] {
            *slot += size;
        }
    }
    let lower_bound = live_at.into_iter().max().unwrap_or(0);
    MemoryStats {
        naive,
        planned: plan.planned_bytes(),
        lower_bound,
    }
}

/// Checks that no two activations live at the same time share memory, except a value and the
/// in-place result that overwrites it at its last use. Independent of how the plan was made.
pub fn check(graph: &Graph, plan: &MemoryPlan) -> Result<(), String> {
    let ranges = live_ranges(graph);
    let values: Vec<(Value, (usize, usize), Slot)> = graph
        .values
        .iter()
        .filter_map(|(value, _)| Some((value, ranges[value]?, plan.slots[value]?)))
        .collect();
    for (value, _, slot) in &values {
        let arena = if slot.dtype == DType::F32 {
            plan.f32_len
        } else {
            plan.i64_len
        };
        if slot.offset + slot.len > arena || slot.len as u64 != graph.ty(*value).element_count() {
            return Err(format!(
                "{value:?} has slot {slot:?} outside its arena of {arena} or of the wrong size"
            ));
        }
    }
    for (index, &(a, (a_start, a_end), a_slot)) in values.iter().enumerate() {
        for &(b, (b_start, b_end), b_slot) in &values[index + 1..] {
            let share_memory = a_slot.dtype == b_slot.dtype
                && a_slot.offset < b_slot.offset + b_slot.len
                && b_slot.offset < a_slot.offset + a_slot.len;
            let live_together = a_start <= b_end && b_start <= a_end;
            if !share_memory || !live_together {
                continue;
            }
            // Legal only as an in-place update: one value dies at the step that defines the other.
            let in_place = plan.group[a] == plan.group[b] && (a_end == b_start || b_end == a_start);
            if !in_place {
                return Err(format!(
                    "{a:?} (steps {a_start}..={a_end}, {a_slot:?}) and {b:?} (steps {b_start}..={b_end}, {b_slot:?}) are live together but overlap"
                ));
            }
        }
    }
    Ok(())
}
