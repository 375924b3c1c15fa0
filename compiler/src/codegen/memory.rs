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
//! Every offset is a multiple of 64 bytes, so that values start on cache lines.
//! [`check`] verifies a plan independently of how it was made.

use super::repeat::Run;
use crate::ir::{DType, Graph, InPlaceRule, Node, Op, SecondaryMap, Value, ValueDef};

/// The alignment of every offset, in bytes: the runtime's `alloc::ALIGN_BYTES`, to which the
/// arenas' first elements are aligned (the code generator does not depend on the runtime; a test
/// of the interpreter build checks that the two agree).
const ALIGN_BYTES: usize = 64;

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

/// Whether `op` can write its output over its first input (given the input dies there): the op's
/// [`InPlaceRule`], checked against the types at hand.
fn can_run_in_place(graph: &Graph, op: &Op, inputs: &[Value], output: Value) -> bool {
    let first = graph.ty(inputs[0]);
    let output = graph.ty(output);
    match op.in_place_rule() {
        InPlaceRule::Never => false,
        InPlaceRule::SameType => first == output,
        InPlaceRule::SameDtype => first.dtype == output.dtype,
        InPlaceRule::FirstOperandOfTwo => {
            let second = &graph.ty(inputs[1]).shape;
            first == output
                && inputs[0] != inputs[1]
                && (second == &first.shape || is_row_vector(second, &first.shape))
        }
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
    plan_with_ranges(graph, &live_ranges_pinned(graph, pinned), |_| false, &[])
}

/// Plans the values of `graph` that have a range in `ranges` (node `i` runs at step `i + 1`),
/// leaving out the nodes for which `skipped` holds.
fn plan_with_ranges(
    graph: &Graph,
    ranges: &SecondaryMap<Value, Option<(usize, usize)>>,
    skipped: impl Fn(usize) -> bool,
    shared: &[(Value, Value)],
) -> MemoryPlan {
    let mut group: SecondaryMap<Value, Value> =
        SecondaryMap::with_default(graph.values.len(), Value::from_index(0));
    for (value, _) in graph.values.iter() {
        group[value] = value;
    }
    let mut group_range: SecondaryMap<Value, Option<(usize, usize)>> = ranges.clone();
    for (node, data) in graph.nodes.iter() {
        if skipped(node.index()) {
            continue;
        }
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
    // Pairs asked to share a slot (a rolled loop's carried value, entering and produced), where
    // the first's group is dead before the second's is written: one group.
    for &(first, second) in shared {
        let (first_root, second_root) = (group[first], group[second]);
        let (Some((first_start, first_end)), Some((second_start, second_end))) =
            (group_range[first_root], group_range[second_root])
        else {
            continue;
        };
        if first_root == second_root
            || first_end >= second_start
            || graph.values[first].ty.dtype != graph.values[second].ty.dtype
        {
            continue;
        }
        for (member, _) in graph.values.iter() {
            if group[member] == second_root {
                group[member] = first_root;
            }
        }
        group_range[first_root] = Some((first_start, first_end.max(second_end)));
    }

    // The length of each group: its largest member.
    let mut group_len: SecondaryMap<Value, usize> =
        SecondaryMap::with_default(graph.values.len(), 0);
    for (member, data) in graph.values.iter() {
        let len = &mut group_len[group[member]];
        *len = (*len).max(data.ty.element_count() as usize);
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
                (value, start, end, group_len[value])
            })
            .collect();
        // Every offset a multiple of a cache line (`ALIGN_BYTES`, from an aligned arena start):
        // each group takes its length rounded up to one.
        let line = ALIGN_BYTES / dtype.size_in_bytes() as usize;
        for group in &mut groups {
            group.3 = group.3.next_multiple_of(line);
        }
        // A few greedy placements, keeping the smallest arena (the first on a tie): first fit
        // largest first, which lands at or near the lower bound on most graphs, and best fit
        // breadth first (TFLite's "greedy by breadth": the groups live at the step with the most
        // bytes live first, largest first, then those of the next fullest step), which does
        // better where large values are short-lived and meet small ones (a fused layer's input
        // between two others).
        groups.sort_by_key(|&(value, start, _, len)| (std::cmp::Reverse(len), start, value));
        let placements = [
            ((0..groups.len()).collect::<Vec<usize>>(), Fit::First),
            (breadth_first_order(&groups), Fit::Best),
        ];
        let mut offsets: SecondaryMap<Value, usize> =
            SecondaryMap::with_default(graph.values.len(), 0);
        // Every placement of no groups is 0 long, so this ends below `usize::MAX`.
        let mut arena_len = usize::MAX;
        for (order, fit) in placements {
            let (order_offsets, order_len) = place_groups(&groups, &order, fit);
            if order_len < arena_len {
                arena_len = order_len;
                for (&index, offset) in order.iter().zip(order_offsets) {
                    offsets[groups[index].0] = offset;
                }
            }
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

/// Where [`place_groups`] puts a group among those already placed that it meets in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fit {
    /// At the lowest offset where it fits.
    First,
    /// In the smallest gap where it fits, else above them all.
    Best,
}

/// The groups (root, first step, last step, length; sorted largest first) in the order of the
/// steps they are live at, the step with the most bytes live first; at each step, the groups not
/// yet listed, largest first.
///
/// A group is listed at the first of its steps in that order, so it sorts by that step's rank
/// (a range minimum over its steps), then by its own position: O((groups + steps) log steps), not
/// a scan of every group at every step, which a network of a million nodes could not wait for.
fn breadth_first_order(groups: &[(Value, usize, usize, usize)]) -> Vec<usize> {
    let steps = groups
        .iter()
        .map(|&(_, _, end, _)| end + 1)
        .max()
        .unwrap_or(0);
    // Bytes live at each step, from the differences at each group's ends.
    let mut change = vec![0isize; steps + 1];
    for &(_, start, end, len) in groups {
        change[start] += len as isize;
        change[end + 1] -= len as isize;
    }
    let mut breadth = Vec::with_capacity(steps);
    let mut live = 0isize;
    for &delta in &change[..steps] {
        live += delta;
        breadth.push(live as usize);
    }
    let mut by_breadth: Vec<usize> = (0..steps).collect();
    by_breadth.sort_by_key(|&step| (std::cmp::Reverse(breadth[step]), step));
    let mut rank = vec![0usize; steps];
    for (position, &step) in by_breadth.iter().enumerate() {
        rank[step] = position;
    }
    let ranks = RangeMin::new(&rank);
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by_cached_key(|&index| {
        let (_, start, end, _) = groups[index];
        (ranks.min(start, end), index)
    });
    order
}

/// Minimums of ranges of a fixed list, in a segment tree.
struct RangeMin {
    /// Leaves from `size` on (padded with `usize::MAX`), each inner node the minimum of its two.
    tree: Vec<usize>,
    size: usize,
}

impl RangeMin {
    fn new(values: &[usize]) -> Self {
        let size = values.len().next_power_of_two();
        let mut tree = vec![usize::MAX; 2 * size];
        tree[size..size + values.len()].copy_from_slice(values);
        for node in (1..size).rev() {
            tree[node] = tree[2 * node].min(tree[2 * node + 1]);
        }
        RangeMin { tree, size }
    }

    /// The minimum of `values[first..=last]`.
    fn min(&self, first: usize, last: usize) -> usize {
        let mut min = usize::MAX;
        for_each_cover(self.size, first, last, |node| {
            min = min.min(self.tree[node])
        });
        min
    }
}

/// Calls `visit` with each node of a segment tree over `size` leaves (a power of two; node 1 the
/// root, node `n`'s children `2n` and `2n + 1`) among the O(log size) whose leaves together are
/// exactly `first..=last`.
fn for_each_cover(size: usize, first: usize, last: usize, mut visit: impl FnMut(usize)) {
    let (mut low, mut high) = (first + size, last + size + 1);
    while low < high {
        if low % 2 == 1 {
            visit(low);
            low += 1;
        }
        if high % 2 == 1 {
            high -= 1;
            visit(high);
        }
        low /= 2;
        high /= 2;
    }
}

/// Places `groups` (root, first step, last step, length) in `order`, each where `fit` says
/// among the groups placed before it whose steps intersect its own; returns their offsets, in
/// `order`, and the arena length.
fn place_groups(
    groups: &[(Value, usize, usize, usize)],
    order: &[usize],
    fit: Fit,
) -> (Vec<usize>, usize) {
    let steps = groups
        .iter()
        .map(|&(_, _, end, _)| end + 1)
        .max()
        .unwrap_or(0);
    // The placed groups as (offset, end of their range), found by the steps they are live at.
    let mut placed = LiveIndex::new(steps, groups.len());
    let mut placed_ranges: Vec<(usize, usize)> = Vec::with_capacity(groups.len());
    let mut offsets = Vec::with_capacity(groups.len());
    let mut arena_len = 0;
    let mut conflicts: Vec<(usize, usize)> = Vec::new();
    for &index in order {
        let (_, start, end, len) = groups[index];
        conflicts.clear();
        placed.for_each_meeting(start, end, |other| conflicts.push(placed_ranges[other]));
        conflicts.sort_unstable();
        // The gaps below the conflicts, as (size, offset); `top` is where the last one ends.
        let mut top = 0;
        let mut best: Option<(usize, usize)> = None;
        for &(busy_start, busy_end) in &conflicts {
            if top + len <= busy_start {
                let gap = (busy_start - top, top);
                if fit == Fit::First {
                    best = Some(gap);
                    break;
                }
                best = Some(best.map_or(gap, |best| best.min(gap)));
            }
            top = top.max(busy_end);
        }
        let offset = best.map_or(top, |(_, offset)| offset);
        placed.insert(placed_ranges.len(), start, end);
        placed_ranges.push((offset, offset + len));
        offsets.push(offset);
        arena_len = arena_len.max(offset + len);
    }
    (offsets, arena_len)
}

/// Items (numbered in the order they are inserted) live over ranges of steps, found by the
/// steps they meet: a segment tree over the steps in which each item sits at the O(log steps)
/// nodes that cover its range exactly. A query visits only the nodes that meet its range and
/// hold items below them, O(log steps) plus the steps it spans, and reports the items it meets:
/// on a chain of layers, where few values are live at once, that is short, where comparing with
/// every item placed before would make a long network quadratic.
struct LiveIndex {
    size: usize,
    /// The items that cover each node's steps entirely.
    items: Vec<Vec<usize>>,
    /// How many items sit in each node's subtree.
    below: Vec<usize>,
    /// The last query that reported each item, so that one spanning several nodes is reported
    /// once.
    reported: Vec<usize>,
    queries: usize,
}

impl LiveIndex {
    fn new(steps: usize, items: usize) -> Self {
        let size = steps.max(1).next_power_of_two();
        LiveIndex {
            size,
            items: vec![Vec::new(); 2 * size],
            below: vec![0; 2 * size],
            reported: vec![0; items],
            queries: 0,
        }
    }

    /// Adds `item`, live from step `start` to step `end` (inclusive).
    fn insert(&mut self, item: usize, start: usize, end: usize) {
        for_each_cover(self.size, start, end, |node| {
            self.items[node].push(item);
            let mut node = node;
            while node > 0 {
                self.below[node] += 1;
                node /= 2;
            }
        });
    }

    /// Calls `found` once for each item live at some step from `start` to `end` (inclusive).
    fn for_each_meeting(&mut self, start: usize, end: usize, mut found: impl FnMut(usize)) {
        self.queries += 1;
        let mut pending = vec![(1, 0, self.size)];
        while let Some((node, first, past)) = pending.pop() {
            if self.below[node] == 0 || past <= start || end < first {
                continue;
            }
            for &item in &self.items[node] {
                if self.reported[item] != self.queries {
                    self.reported[item] = self.queries;
                    found(item);
                }
            }
            if past - first > 1 {
                let middle = first + (past - first) / 2;
                pending.push((2 * node, first, middle));
                pending.push((2 * node + 1, middle, past));
            }
        }
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
    check_pinned(graph, plan, &[])
}

/// [`check`], with the `pinned` values live to the end like the outputs.
pub fn check_pinned(graph: &Graph, plan: &MemoryPlan, pinned: &[Value]) -> Result<(), String> {
    let ranges = live_ranges_pinned(graph, pinned);
    let intervals: Vec<Interval> = graph
        .values
        .iter()
        .filter_map(|(value, _)| {
            let (start, end) = ranges[value]?;
            Some(Interval {
                name: format!("{value:?}"),
                start: 2 * start,
                end: 2 * end,
                slot: plan.slots[value]?,
                expected_len: graph.ty(value).element_count() as usize,
                group: Some(plan.group[value]),
            })
        })
        .collect();
    check_intervals(&intervals, plan)
}

/// A plan whose runs of identical segments ([`Run`]) share one set of slots: the first segment's
/// values are planned once, with every value read by the body kept until the body's end, and
/// every later segment's values take the first segment's slots.
#[derive(Clone, Debug)]
pub struct RolledPlan {
    /// The slot of every value, the later segments' included.
    pub plan: MemoryPlan,
    /// The runs, as found by [`super::repeat::find_runs`] and kept by the plan.
    pub runs: Vec<Run>,
    /// For each run, the carried values that do not end up where they entered: (the first
    /// segment's value, the value entering the run). The loop copies the first into the
    /// second's slot at the end of each iteration, so the next finds it where the first did.
    pub copies: Vec<Vec<(Value, Value)>>,
}

/// Plans `graph` with every run of `runs` rolled into one body; see [`RolledPlan`]. With no
/// runs this is [`plan_pinned`].
pub fn plan_rolled(graph: &Graph, pinned: &[Value], runs: &[Run]) -> RolledPlan {
    let later_segment = |node: usize| {
        runs.iter().any(|run| {
            run.position_of(node)
                .is_some_and(|(iteration, _)| iteration > 0)
        })
    };
    // A carried value lands in the slot it entered in when the body overwrites it in place (a
    // residual added in place), or when the entering value is dead before the body writes the
    // produced one, which then takes its slot (an encoder layer's output, written long after its
    // first node read the input: copied, it cost a 196 KB copy per layer, and the next layer's
    // norm at two threads found half its rows in the other core's cache, 16 -> 32 us); the
    // others keep the entering slot free to the end of the body and are copied there. Keeping
    // one free can stop an in-place chain, so repeat until no new copy is needed.
    let entering_slot = |entering: Value| representative_in_runs(graph, runs, entering);
    let mut copied: Vec<Value> = Vec::new();
    loop {
        let ranges = rolled_ranges(graph, pinned, runs, &copied);
        let shared: Vec<(Value, Value)> = runs
            .iter()
            .flat_map(|run| run.carried.iter())
            .filter(|(entering, _)| !copied.contains(entering))
            .map(|&(entering, produced)| (entering_slot(entering), produced))
            .collect();
        let mut plan = plan_with_ranges(graph, &ranges, later_segment, &shared);
        let missing: Vec<Value> = runs
            .iter()
            .flat_map(|run| run.carried.iter())
            .filter(|(entering, produced)| {
                plan.group[entering_slot(*entering)] != plan.group[*produced]
                    && !copied.contains(entering)
            })
            .map(|(entering, _)| *entering)
            .collect();
        if !missing.is_empty() {
            copied.extend(missing);
            continue;
        }
        for run in runs {
            for (value, _) in graph.values.iter() {
                let representative = run.representative(graph, value);
                if representative != value {
                    plan.slots[value] = plan.slots[representative];
                    plan.group[value] = plan.group[representative];
                }
            }
        }
        let copies = runs
            .iter()
            .map(|run| {
                run.carried
                    .iter()
                    .filter(|(entering, _)| copied.contains(entering))
                    .map(|&(entering, produced)| (produced, entering))
                    .collect()
            })
            .collect();
        return RolledPlan {
            plan,
            runs: runs.to_vec(),
            copies,
        };
    }
}

/// The value of a first segment that `value` stands for in the rolled plan: its own, or, for a
/// later segment's value (of any of `runs`, an earlier run's included), the first segment's
/// value it repeats.
fn representative_in_runs(graph: &Graph, runs: &[Run], value: Value) -> Value {
    runs.iter()
        .fold(value, |value, run| run.representative(graph, value))
}

/// The live ranges of the rolled graph: a later segment's values have none (they take the first
/// segment's slots), reads after a run of its last segment's values count as reads of the first
/// segment's, and the first segment's inputs from before the run (bar carried values that need
/// no copy) and its carried results stay live to the end of the body, which every iteration
/// runs again.
fn rolled_ranges(
    graph: &Graph,
    pinned: &[Value],
    runs: &[Run],
    copied: &[Value],
) -> SecondaryMap<Value, Option<(usize, usize)>> {
    let steps = graph.nodes.len();
    let representative = |value: Value| representative_in_runs(graph, runs, value);
    let mut last_use: SecondaryMap<Value, usize> =
        SecondaryMap::with_default(graph.values.len(), 0);
    for (node, data) in graph.nodes.iter() {
        let in_later_segment = runs.iter().any(|run| {
            run.position_of(node.index())
                .is_some_and(|(iteration, _)| iteration > 0)
        });
        if in_later_segment {
            continue;
        }
        for &input in &data.inputs {
            let input = representative(input);
            last_use[input] = last_use[input].max(node.index() + 1);
        }
    }
    for value in graph
        .outputs
        .iter()
        .map(|output| output.value)
        .chain(pinned.iter().copied())
    {
        last_use[representative(value)] = steps + 1;
    }
    for run in runs {
        let body_end = run.first_node + run.body_len;
        for index in run.first_node..body_end {
            for &input in &graph.nodes[Node::from_index(index)].inputs {
                let from_before = match graph.values[input].def {
                    ValueDef::Node { node, .. } => node.index() < run.first_node,
                    ValueDef::Input { .. } => true,
                    ValueDef::Param(_) => false,
                };
                let carried_in_place = run
                    .carried
                    .iter()
                    .any(|(entering, _)| *entering == input && !copied.contains(entering));
                // A value from before the run may be a later iteration's of an earlier run.
                if from_before && !carried_in_place {
                    let input = representative(input);
                    last_use[input] = last_use[input].max(body_end);
                }
            }
        }
        for (_, produced) in &run.carried {
            last_use[*produced] = last_use[*produced].max(body_end);
        }
    }
    let mut ranges = SecondaryMap::with_default(graph.values.len(), None);
    for (value, data) in graph.values.iter() {
        let defined = match data.def {
            ValueDef::Input { .. } => 0,
            ValueDef::Node { node, .. } => {
                let in_later_segment = runs.iter().any(|run| {
                    run.position_of(node.index())
                        .is_some_and(|(iteration, _)| iteration > 0)
                });
                if in_later_segment {
                    continue;
                }
                node.index() + 1
            }
            ValueDef::Param(_) => continue,
        };
        ranges[value] = Some((defined, last_use[value].max(defined)));
    }
    ranges
}

/// Checks a rolled plan over the whole unrolled graph, as the generated loop runs it: every
/// segment's values in their slots, and each carried copy as a value of its own, written after
/// its segment's last node from the value it copies and read by the next segment in its place.
/// The same rules as [`check`]: no two values live at once share memory, bar in-place updates.
pub fn check_rolled(graph: &Graph, rolled: &RolledPlan, pinned: &[Value]) -> Result<(), String> {
    let plan = &rolled.plan;
    // Steps are doubled so that a copy can run between two nodes: node `i` at `2 * (i + 1)`, the
    // copy after it at `2 * (i + 1) + 1`.
    let node_step = |index: usize| 2 * (index + 1);
    let end_step = node_step(graph.nodes.len());
    // The copies: (run, iteration, produced, entering) with the step they run at.
    let mut copies: Vec<(usize, usize, Value, Value, usize)> = Vec::new();
    for (run_index, run) in rolled.runs.iter().enumerate() {
        for iteration in 0..run.count {
            let last = run.first_node + (iteration + 1) * run.body_len - 1;
            for &(produced, entering) in &rolled.copies[run_index] {
                let produced = corresponding(graph, run, produced, iteration);
                copies.push((
                    run_index,
                    iteration,
                    produced,
                    entering,
                    node_step(last) + 1,
                ));
            }
        }
    }
    // Which copy a node reads in place of a carried value: the copy of the segment before.
    let copy_read = |node: usize, input: Value| {
        copies
            .iter()
            .position(|&(run_index, iteration, produced, _, _)| {
                produced == input
                    && rolled.runs[run_index]
                        .position_of(node)
                        .is_some_and(|(reader, _)| reader == iteration + 1)
            })
    };
    let mut last_use: SecondaryMap<Value, usize> =
        SecondaryMap::with_default(graph.values.len(), 0);
    let mut copy_last_use: Vec<usize> = copies.iter().map(|copy| copy.4).collect();
    for (node, data) in graph.nodes.iter() {
        for &input in &data.inputs {
            match copy_read(node.index(), input) {
                Some(copy) => {
                    copy_last_use[copy] = copy_last_use[copy].max(node_step(node.index()))
                }
                None => last_use[input] = last_use[input].max(node_step(node.index())),
            }
        }
    }
    for &(_, _, produced, _, step) in &copies {
        last_use[produced] = last_use[produced].max(step);
    }
    for value in graph
        .outputs
        .iter()
        .map(|output| output.value)
        .chain(pinned.iter().copied())
    {
        last_use[value] = end_step;
    }
    let mut intervals = Vec::new();
    for (value, data) in graph.values.iter() {
        let start = match data.def {
            ValueDef::Input { .. } => 0,
            ValueDef::Node { node, .. } => node_step(node.index()),
            ValueDef::Param(_) => continue,
        };
        let Some(slot) = plan.slots[value] else {
            return Err(format!("{value:?} has no slot"));
        };
        intervals.push(Interval {
            name: format!("{value:?}"),
            start,
            end: last_use[value].max(start),
            slot,
            expected_len: graph.ty(value).element_count() as usize,
            group: Some(plan.group[value]),
        });
    }
    for (copy, &(run_index, iteration, produced, entering, step)) in copies.iter().enumerate() {
        let Some(slot) = plan.slots[entering] else {
            return Err(format!("{entering:?} has no slot"));
        };
        intervals.push(Interval {
            name: format!("the copy of {produced:?} into {entering:?}'s slot after iteration {iteration} of run {run_index}"),
            start: step,
            end: copy_last_use[copy],
            slot,
            expected_len: graph.ty(produced).element_count() as usize,
            group: None,
        });
    }
    check_intervals(&intervals, plan)
}

/// The value of iteration `iteration` of `run` at the place of the first segment's `value`.
fn corresponding(graph: &Graph, run: &Run, value: Value, iteration: usize) -> Value {
    match graph.values[value].def {
        ValueDef::Node { node, position } => {
            let (_, offset) = run
                .position_of(node.index())
                .expect("corresponding: a value of the run");
            graph.nodes[Node::from_index(run.first_node + iteration * run.body_len + offset)]
                .outputs[position]
        }
        _ => unreachable!("corresponding: {value:?} is not computed by the run"),
    }
}

/// One value (or copy) as the checker sees it: when it is live, where, and its in-place group
/// (none for copies, which never run in place).
struct Interval {
    name: String,
    start: usize,
    end: usize,
    slot: Slot,
    expected_len: usize,
    group: Option<Value>,
}

/// The overlap checker behind [`check`] and [`check_rolled`].
fn check_intervals(intervals: &[Interval], plan: &MemoryPlan) -> Result<(), String> {
    for interval in intervals {
        let slot = interval.slot;
        let arena = if slot.dtype == DType::F32 {
            plan.f32_len
        } else {
            plan.i64_len
        };
        if slot.offset + slot.len > arena || slot.len != interval.expected_len {
            return Err(format!(
                "{} has slot {slot:?} outside its arena of {arena} or of the wrong size",
                interval.name
            ));
        }
    }
    // A sweep in order of first step: each interval meets the earlier ones still live, not all
    // of them, so a long chain of layers is checked in linear time.
    let mut by_start: Vec<&Interval> = intervals.iter().collect();
    by_start.sort_by_key(|interval| interval.start);
    let mut live: Vec<&Interval> = Vec::new();
    for &b in &by_start {
        live.retain(|a| a.end >= b.start);
        for &a in &live {
            let (a_slot, b_slot) = (a.slot, b.slot);
            let share_memory = a_slot.dtype == b_slot.dtype
                && a_slot.offset < b_slot.offset + b_slot.len
                && b_slot.offset < a_slot.offset + a_slot.len;
            let live_together = a.start <= b.end && b.start <= a.end;
            if !share_memory || !live_together {
                continue;
            }
            // Legal only as an in-place update: one value dies at the step that defines the other.
            let in_place =
                a.group.is_some() && a.group == b.group && (a.end == b.start || b.end == a.start);
            if !in_place {
                return Err(format!(
                    "{} (steps {}..={}, {a_slot:?}) and {} (steps {}..={}, {b_slot:?}) are live together but overlap",
                    a.name, a.start, a.end, b.name, b.start, b.end
                ));
            }
        }
        live.push(b);
    }
    Ok(())
}

#[cfg(all(test, feature = "interpreter"))]
mod tests {
    /// The plan's offsets are multiples of the alignment the runtime gives the arenas' starts.
    #[test]
    fn offsets_are_aligned_as_the_runtime_aligns_arenas() {
        assert_eq!(super::ALIGN_BYTES, nnc_runtime::alloc::ALIGN_BYTES);
    }
}

#[cfg(test)]
mod placement_tests {
    use super::{
        DType, Fit, Interval, MemoryPlan, SecondaryMap, Slot, Value, breadth_first_order,
        check_intervals, place_groups,
    };
    use proptest::prelude::*;

    /// [`breadth_first_order`] as its doc states it: every step, fullest first, lists the groups
    /// live at it not yet listed, in their order.
    fn breadth_first_order_reference(groups: &[(Value, usize, usize, usize)]) -> Vec<usize> {
        let steps = groups.iter().map(|group| group.2 + 1).max().unwrap_or(0);
        let mut breadth = vec![0usize; steps];
        for &(_, start, end, len) in groups {
            for live in &mut breadth[start..=end] {
                *live += len;
            }
        }
        let mut by_breadth: Vec<usize> = (0..steps).collect();
        by_breadth.sort_by_key(|&step| (std::cmp::Reverse(breadth[step]), step));
        let mut listed = vec![false; groups.len()];
        let mut order = Vec::new();
        for step in by_breadth {
            for (index, &(_, start, end, _)) in groups.iter().enumerate() {
                if !listed[index] && start <= step && step <= end {
                    listed[index] = true;
                    order.push(index);
                }
            }
        }
        order
    }

    /// [`place_groups`] comparing each group with every group placed before it.
    fn place_groups_reference(
        groups: &[(Value, usize, usize, usize)],
        order: &[usize],
        fit: Fit,
    ) -> (Vec<usize>, usize) {
        let mut placed: Vec<(usize, usize, usize, usize)> = Vec::new();
        let mut offsets = Vec::new();
        let mut arena_len = 0;
        for &index in order {
            let (_, start, end, len) = groups[index];
            let mut conflicts: Vec<(usize, usize)> = placed
                .iter()
                .filter(|&&(other_start, other_end, _, _)| start <= other_end && other_start <= end)
                .map(|&(_, _, offset, other_len)| (offset, offset + other_len))
                .collect();
            conflicts.sort_unstable();
            let mut top = 0;
            let mut best: Option<(usize, usize)> = None;
            for (busy_start, busy_end) in conflicts {
                if top + len <= busy_start {
                    let gap = (busy_start - top, top);
                    if fit == Fit::First {
                        best = Some(gap);
                        break;
                    }
                    best = Some(best.map_or(gap, |best| best.min(gap)));
                }
                top = top.max(busy_end);
            }
            let offset = best.map_or(top, |(_, offset)| offset);
            placed.push((start, end, offset, len));
            offsets.push(offset);
            arena_len = arena_len.max(offset + len);
        }
        (offsets, arena_len)
    }

    /// Groups as `plan_with_ranges` makes them: live ranges within `steps`, largest first.
    fn groups(steps: usize) -> impl Strategy<Value = Vec<(Value, usize, usize, usize)>> {
        proptest::collection::vec((0..steps, 0..steps.min(12), 1usize..40), 0..60).prop_map(
            move |ranges| {
                let mut groups: Vec<_> = ranges
                    .into_iter()
                    .enumerate()
                    .map(|(index, (start, length, len))| {
                        (
                            Value::from_index(index),
                            start,
                            (start + length).min(steps - 1),
                            len * 16,
                        )
                    })
                    .collect();
                groups
                    .sort_by_key(|&(value, start, _, len)| (std::cmp::Reverse(len), start, value));
                groups
            },
        )
    }

    /// [`check_intervals`]'s overlap test on every pair.
    fn overlaps_reference(intervals: &[Interval]) -> bool {
        intervals.iter().enumerate().any(|(index, a)| {
            intervals[index + 1..].iter().any(|b| {
                let share_memory = a.slot.dtype == b.slot.dtype
                    && a.slot.offset < b.slot.offset + b.slot.len
                    && b.slot.offset < a.slot.offset + a.slot.len;
                let live_together = a.start <= b.end && b.start <= a.end;
                let in_place = a.group.is_some()
                    && a.group == b.group
                    && (a.end == b.start || b.end == a.start);
                share_memory && live_together && !in_place
            })
        })
    }

    proptest! {
        #[test]
        fn the_sweep_finds_an_overlap_exactly_when_some_pair_overlaps(
            raw in proptest::collection::vec(
                (0usize..30, 0usize..6, 0usize..8, 1usize..4, any::<bool>(), 0usize..3, any::<bool>()),
                0..40,
            )
        ) {
            let intervals: Vec<Interval> = raw
                .iter()
                .map(|&(start, length, offset, len, i64, group, in_group)| Interval {
                    name: format!("v{start}"),
                    start,
                    end: start + length,
                    slot: Slot {
                        dtype: if i64 { DType::I64 } else { DType::F32 },
                        offset,
                        len,
                    },
                    expected_len: len,
                    group: in_group.then(|| Value::from_index(group)),
                })
                .collect();
            let plan = MemoryPlan {
                slots: SecondaryMap::with_default(0, None),
                group: SecondaryMap::with_default(0, Value::from_index(0)),
                f32_len: 16,
                i64_len: 16,
            };
            prop_assert_eq!(check_intervals(&intervals, &plan).is_err(), overlaps_reference(&intervals));
        }

        #[test]
        fn breadth_first_order_lists_groups_as_the_step_scan_does(
            groups in (1usize..50).prop_flat_map(groups)
        ) {
            prop_assert_eq!(breadth_first_order(&groups), breadth_first_order_reference(&groups));
        }

        #[test]
        fn placement_puts_groups_where_comparing_with_every_placed_group_does(
            groups in (1usize..50).prop_flat_map(groups),
            best in any::<bool>(),
        ) {
            let fit = if best { Fit::Best } else { Fit::First };
            for order in [(0..groups.len()).collect(), breadth_first_order(&groups)] {
                prop_assert_eq!(
                    place_groups(&groups, &order, fit),
                    place_groups_reference(&groups, &order, fit)
                );
            }
        }
    }

    /// MobileNetV2's first layers once the 1x1 layers run inside the depthwise ones: a chain of
    /// values each live for two steps, `a` and `b` (16 units each) at the peak, `c` (8) between
    /// `b` and `d` (12), `d` meeting `e` (3), which lives on beside `f` (18). Largest first
    /// leaves `c` above `b` (40); breadth first with best fit ends one unit above the peak (32),
    /// since `e`, placed beside `f` before `d`, is in `d`'s way.
    #[test]
    fn breadth_first_best_fit_stays_near_the_peak_where_largest_first_does_not() {
        let value = Value::from_index;
        // (root, first step, last step, length), largest first as `plan_with_ranges` sorts them.
        let groups = [
            (value(5), 6, 7, 18),
            (value(0), 1, 2, 16),
            (value(1), 2, 3, 16),
            (value(3), 4, 5, 12),
            (value(2), 3, 4, 8),
            (value(4), 5, 7, 3),
        ];
        let by_size: Vec<usize> = (0..groups.len()).collect();
        let (_, largest_first) = place_groups(&groups, &by_size, Fit::First);
        let (offsets, breadth_first) =
            place_groups(&groups, &breadth_first_order(&groups), Fit::Best);
        assert_eq!(largest_first, 40);
        assert_eq!(breadth_first, 33, "{offsets:?}");
    }
}
