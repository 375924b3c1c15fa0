//! Repeated layers: maximal runs of consecutive, structurally identical segments of a graph.
//!
//! A `for` over identical layers in a `.nn` file lowers to the same nodes once per layer, one
//! layer after the other. Code generation can then emit one layer body inside a loop instead of
//! every copy ([`super::rolled`]), and the memory plan can give the body's values one set of slots
//! reused by every iteration ([`super::memory::plan_rolled`]).
//!
//! Two segments of `body_len` nodes are *identical* when node `i` of each has the same operation
//! (attributes included), the same input and output types, and inputs that play the same role:
//!
//! - an output of an earlier node of the same segment, at the same offset and position;
//! - a weight of the same type and initializer, used by no node outside the segment;
//! - a value from before the run that every segment reads (*shared*: rope inputs, masks, an
//!   encoder's output);
//! - the value the segment before produced in the same place (*carried*: the residual stream);
//!   the first segment reads the value entering the run there instead.
//!
//! Values of a segment are read only by that segment, by the next one (as carried values) or,
//! for the last segment, after the run; graph outputs come only from the last segment. These
//! conditions are exactly what a loop over one body needs: every iteration reads its carried
//! values where the last one left them and everything else where the first one found it.

use std::collections::HashMap;

use crate::ir::{Graph, Node, Value, ValueDef};

/// A run of `count` identical segments of `body_len` nodes, starting at node `first_node`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    /// The index of the first node of the first segment.
    pub first_node: usize,
    /// Nodes per segment.
    pub body_len: usize,
    /// Segments, at least 2.
    pub count: usize,
    /// Each carried value: the value entering the first segment, and the first segment's value
    /// that the second segment reads in its place.
    pub carried: Vec<(Value, Value)>,
    /// For each iteration, the weights the segment reads, in the order of the first segment's
    /// (node, input position): the same roles in every iteration.
    pub weights: Vec<Vec<Value>>,
}

impl Run {
    /// One past the index of the last node of the run.
    pub fn end(&self) -> usize {
        self.first_node + self.body_len * self.count
    }

    /// The iteration and the offset in the body of the node with index `node`, if it is in the
    /// run.
    pub fn position_of(&self, node: usize) -> Option<(usize, usize)> {
        (self.first_node..self.end()).contains(&node).then(|| {
            let relative = node - self.first_node;
            (relative / self.body_len, relative % self.body_len)
        })
    }

    /// The value of the first segment that stands for `value` in every iteration: a value of any
    /// segment maps to the first segment's value at the same place; others map to themselves.
    pub fn representative(&self, graph: &Graph, value: Value) -> Value {
        match graph.values[value].def {
            ValueDef::Node { node, position } => match self.position_of(node.index()) {
                Some((_, offset)) => {
                    graph.nodes[Node::from_index(self.first_node + offset)].outputs[position]
                }
                None => value,
            },
            _ => value,
        }
    }

    /// Whether the nodes `start..end` contain the whole run or none of it.
    pub fn fits_within(&self, start: usize, end: usize) -> bool {
        (start <= self.first_node && self.end() <= end)
            || self.end() <= start
            || end <= self.first_node
    }
}

/// The maximal runs of `graph`, in node order and disjoint: from each node, the run covering the
/// most nodes (with the shortest body on a tie) is taken, and the search continues after it.
pub fn find_runs(graph: &Graph) -> Vec<Run> {
    let node_count = graph.nodes.len();
    let mut runs = Vec::new();
    let mut start = 0;
    while start < node_count {
        let mut best: Option<Run> = None;
        for body_len in 1..=(node_count - start) / 2 {
            // A longer body replaces the best run only by covering more nodes, and covers at
            // most the whole segments that fit: a network of `n` identical layers skips the
            // bodies of 2, 3, ... layers without building their runs, each a pass over the graph.
            if best.as_ref().is_some_and(|best| {
                (node_count - start) / body_len * body_len <= best.body_len * best.count
            }) {
                continue;
            }
            let Some(run) = run_at(graph, start, body_len) else {
                continue;
            };
            let covered = run.body_len * run.count;
            if best
                .as_ref()
                .is_none_or(|best| covered > best.body_len * best.count)
            {
                best = Some(run);
            }
        }
        match best {
            Some(run) => {
                start = run.end();
                runs.push(run);
            }
            None => start += 1,
        }
    }
    runs
}

/// The role of one input of a body node, relative to its segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Output `position` of the body's node at `offset`.
    Internal { offset: usize, position: usize },
    /// A weight.
    Weight,
    /// A value from before the segment.
    Outside(Value),
}

/// The longest run of segments of `body_len` nodes starting at node `start`, if at least two.
fn run_at(graph: &Graph, start: usize, body_len: usize) -> Option<Run> {
    let node_count = graph.nodes.len();
    if start + 2 * body_len > node_count
        || !same_structure(graph, start, start + body_len, body_len)
    {
        return None;
    }
    let first = segment_roles(graph, start, body_len);
    // Which inputs (node offset, input position) of the first segment are carried, and from
    // where; fixed by the first pair of segments.
    let mut carried_inputs: Option<Vec<Option<(usize, usize)>>> = None;
    let mut previous = first.clone();
    let mut count = 1;
    let mut weights = vec![segment_weights(graph, start, body_len)];
    while start + (count + 1) * body_len <= node_count {
        let segment_start = start + count * body_len;
        let previous_start = segment_start - body_len;
        if !same_structure(graph, previous_start, segment_start, body_len) {
            break;
        }
        let roles = segment_roles(graph, segment_start, body_len);
        let mut carried = Vec::with_capacity(roles.len());
        let mut consistent = true;
        for (role, previous_role) in roles.iter().zip(&previous) {
            match (*role, *previous_role) {
                (Role::Internal { .. }, _) | (Role::Weight, Role::Weight) => carried.push(None),
                (Role::Outside(value), Role::Outside(previous_value)) => {
                    if value == previous_value {
                        carried.push(None);
                        continue;
                    }
                    match graph.values[value].def {
                        ValueDef::Node { node, position }
                            if (previous_start..segment_start).contains(&node.index()) =>
                        {
                            carried.push(Some((node.index() - previous_start, position)));
                        }
                        _ => consistent = false,
                    }
                }
                _ => consistent = false,
            }
        }
        if !consistent
            || carried_inputs
                .as_ref()
                .is_some_and(|known| *known != carried)
        {
            break;
        }
        let segment_weights = segment_weights(graph, segment_start, body_len);
        if segment_weights.len() != weights[0].len() {
            break;
        }
        carried_inputs = Some(carried);
        weights.push(segment_weights);
        previous = roles;
        count += 1;
    }
    let carried_inputs = carried_inputs?;
    // Shrink the run until no value of an earlier segment escapes it.
    while count >= 2 && !escapes_only_from_last(graph, start, body_len, count, &weights) {
        count -= 1;
        weights.pop();
    }
    if count < 2 {
        return None;
    }
    let mut carried: Vec<(Value, Value)> = Vec::new();
    for (role, source) in first.iter().zip(&carried_inputs) {
        let (Role::Outside(entering), Some((offset, position))) = (role, source) else {
            continue;
        };
        let produced = graph.nodes[Node::from_index(start + offset)].outputs[*position];
        if let Some(&(known_entering, known_produced)) =
            carried.iter().find(|(_, known)| *known == produced)
        {
            if known_entering != *entering || known_produced != produced {
                return None;
            }
            continue;
        }
        if carried.iter().any(|(known, _)| known == entering) {
            // One value entering in two roles would need two slots at once.
            return None;
        }
        carried.push((*entering, produced));
    }
    // The copy that carries a value into the next iteration overwrites the entering value's slot,
    // so nothing but the first segment may read it.
    let first_segment_only = graph.nodes.iter().all(|(node, data)| {
        (start..start + body_len).contains(&node.index())
            || !data
                .inputs
                .iter()
                .any(|input| carried.iter().any(|(entering, _)| entering == input))
    });
    let entering_is_output = graph.outputs.iter().any(|output| {
        carried
            .iter()
            .any(|(entering, _)| *entering == output.value)
    });
    if !first_segment_only || entering_is_output {
        return None;
    }
    Some(Run {
        first_node: start,
        body_len,
        count,
        carried,
        weights,
    })
}

/// Whether the segments at `a` and `b` have the same operations, types and internal wiring.
fn same_structure(graph: &Graph, a: usize, b: usize, body_len: usize) -> bool {
    (0..body_len).all(|offset| {
        let (first, second) = (
            &graph.nodes[Node::from_index(a + offset)],
            &graph.nodes[Node::from_index(b + offset)],
        );
        let types_match = |left: &[Value], right: &[Value]| {
            left.len() == right.len()
                && left
                    .iter()
                    .zip(right)
                    .all(|(&x, &y)| graph.ty(x) == graph.ty(y))
        };
        first.op == second.op
            && types_match(&first.inputs, &second.inputs)
            && types_match(&first.outputs, &second.outputs)
            && first.inputs.iter().zip(&second.inputs).all(|(&x, &y)| {
                match (role(graph, a, body_len, x), role(graph, b, body_len, y)) {
                    (Role::Weight, Role::Weight) => {
                        let (x, y) = (graph.param_of(x), graph.param_of(y));
                        x.zip(y).is_some_and(|(x, y)| {
                            x.init == y.init
                                && x.is_buffer == y.is_buffer
                                && x.storage == y.storage
                                && x.value != y.value
                        })
                    }
                    (left @ Role::Internal { .. }, right) => left == right,
                    (Role::Outside(_), Role::Outside(_)) => true,
                    _ => false,
                }
            })
    })
}

fn role(graph: &Graph, start: usize, body_len: usize, value: Value) -> Role {
    match graph.values[value].def {
        ValueDef::Param(_) => Role::Weight,
        ValueDef::Node { node, position } if (start..start + body_len).contains(&node.index()) => {
            Role::Internal {
                offset: node.index() - start,
                position,
            }
        }
        _ => Role::Outside(value),
    }
}

/// The role of every input of the segment at `start`, node by node.
fn segment_roles(graph: &Graph, start: usize, body_len: usize) -> Vec<Role> {
    (start..start + body_len)
        .flat_map(|index| graph.nodes[Node::from_index(index)].inputs.iter())
        .map(|&value| role(graph, start, body_len, value))
        .collect()
}

/// The weights the segment at `start` reads, in (node, input position) order, each once.
fn segment_weights(graph: &Graph, start: usize, body_len: usize) -> Vec<Value> {
    let mut weights = Vec::new();
    for index in start..start + body_len {
        for &value in &graph.nodes[Node::from_index(index)].inputs {
            if graph.param_of(value).is_some() && !weights.contains(&value) {
                weights.push(value);
            }
        }
    }
    weights
}

/// Whether the only values of the first `count` segments read outside their own segment and the
/// next are the last segment's, and every weight is read only by its own segment.
fn escapes_only_from_last(
    graph: &Graph,
    start: usize,
    body_len: usize,
    count: usize,
    weights: &[Vec<Value>],
) -> bool {
    let end = start + body_len * count;
    let segment_of = |index: usize| {
        (start..end)
            .contains(&index)
            .then(|| (index - start) / body_len)
    };
    let mut weight_segment: HashMap<Value, usize> = HashMap::new();
    for (segment, segment_weights) in weights.iter().enumerate() {
        for &weight in segment_weights {
            if weight_segment.insert(weight, segment).is_some() {
                return false;
            }
        }
    }
    for (node, data) in graph.nodes.iter() {
        let reader = segment_of(node.index());
        for &input in &data.inputs {
            if let Some(&segment) = weight_segment.get(&input)
                && reader != Some(segment)
            {
                return false;
            }
            let ValueDef::Node { node: producer, .. } = graph.values[input].def else {
                continue;
            };
            let Some(produced_in) = segment_of(producer.index()) else {
                continue;
            };
            let allowed = match reader {
                Some(segment) => segment == produced_in || segment == produced_in + 1,
                None => produced_in == count - 1,
            };
            if !allowed {
                return false;
            }
        }
    }
    graph
        .outputs
        .iter()
        .all(|output| match graph.values[output.value].def {
            ValueDef::Node { node, .. } => {
                segment_of(node.index()).is_none_or(|segment| segment == count - 1)
            }
            _ => true,
        })
}

#[cfg(test)]
mod tests {
    use super::{Run, find_runs, run_at};
    use crate::passes::{self, OptLevel};
    use crate::{FrontendOptions, compile_to_ir};

    /// [`find_runs`] trying every body length at every start.
    fn find_runs_reference(graph: &crate::ir::Graph) -> Vec<Run> {
        let node_count = graph.nodes.len();
        let mut runs = Vec::new();
        let mut start = 0;
        while start < node_count {
            let mut best: Option<Run> = None;
            for body_len in 1..=(node_count - start) / 2 {
                if let Some(run) = run_at(graph, start, body_len)
                    && best
                        .as_ref()
                        .is_none_or(|best| run.body_len * run.count > best.body_len * best.count)
                {
                    best = Some(run);
                }
            }
            match best {
                Some(run) => {
                    start = run.end();
                    runs.push(run);
                }
                None => start += 1,
            }
        }
        runs
    }

    /// Every example (those with a layer count with it set to 1, 2, 3, 5 and 8), as written
    /// and optimized: the runs found skipping bodies that cannot cover more nodes are
    /// those found trying every body.
    #[test]
    fn skipping_bodies_that_cannot_cover_more_finds_the_same_runs() {
        let mut compared = 0;
        for example in nnc_test_support::examples() {
            let (path, source) = (&example.path, example.source());
            let variants: Vec<String> = match source
                .lines()
                .find(|line| line.starts_with("const layers = "))
            {
                Some(line) => [1, 2, 3, 5, 8]
                    .iter()
                    .map(|layers| source.replace(line, &format!("const layers = {layers}")))
                    .collect(),
                None => vec![source.clone()],
            };
            for varied in variants {
                let module = compile_to_ir(&varied, &FrontendOptions::default())
                    .unwrap_or_else(|errors| panic!("{}: {errors:?}", path.display()));
                for mut graph in module.networks {
                    assert_eq!(
                        find_runs(&graph),
                        find_runs_reference(&graph),
                        "{}",
                        path.display()
                    );
                    passes::optimize(&mut graph, OptLevel::O2, |_, _| {});
                    assert_eq!(
                        find_runs(&graph),
                        find_runs_reference(&graph),
                        "{}",
                        path.display()
                    );
                    compared += 1;
                }
            }
        }
        assert!(compared >= 29, "{compared} graphs compared");
    }

    /// Two ReLUs repeat from the first node, but the three-node body (with the linear layer)
    /// covers more: the longer body must still be tried after a shorter one is found.
    #[test]
    fn a_longer_body_covering_more_replaces_a_shorter_run() {
        let source = "
            block unit(x) {
                x = relu(x)
                x = relu(x)
                return linear(x, 8) as fc
            }
            network n(x: f32[1, 8]) -> (y) {
                h = x
                for i in 0..4 {
                    h = unit(h) as units[i]
                }
                y = h
            }";
        let module = compile_to_ir(source, &FrontendOptions::default()).expect("a valid network");
        let runs = find_runs(&module.networks[0]);
        assert_eq!(runs, find_runs_reference(&module.networks[0]));
        assert_eq!(
            runs.iter()
                .map(|run| (run.first_node, run.body_len, run.count))
                .collect::<Vec<_>>(),
            [(0, 3, 4)]
        );
    }
}
