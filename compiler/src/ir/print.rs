//! The text form of the IR, as `nnc check --emit ir` prints it.
//!
//! Values are numbered densely in the order they are printed (inputs, params, then node outputs),
//! so the text depends only on the graph's structure, never on how handles were allocated.

use std::collections::HashMap;
use std::fmt::Write as _;

use super::op::DisplayAttrs;
use super::{Graph, Module, Value, WeightStorage};

/// Prints every network of a module, separated by blank lines.
pub fn print_module(module: &Module) -> String {
    let graphs: Vec<String> = module.networks.iter().map(print_graph).collect();
    graphs.join("\n")
}

/// Prints one network.
pub fn print_graph(graph: &Graph) -> String {
    let mut numbers: HashMap<Value, usize> = HashMap::new();
    let number = |value: Value, numbers: &mut HashMap<Value, usize>| {
        let next = numbers.len();
        *numbers.entry(value).or_insert(next)
    };
    let mut out = String::new();

    let inputs: Vec<String> = graph
        .inputs
        .iter()
        .map(|input| format!("{}: {}", input.name, graph.ty(input.value)))
        .collect();
    let outputs: Vec<String> = graph
        .outputs
        .iter()
        .map(|output| format!("{}: {}", output.name, graph.ty(output.value)))
        .collect();
    write!(
        out,
        "network {}({}) -> ({})",
        graph.name,
        inputs.join(", "),
        outputs.join(", ")
    )
    .unwrap();
    if !graph.dims.is_empty() {
        let dims: Vec<String> = graph
            .dims
            .iter()
            .map(|(name, size)| format!("{name} = {size}"))
            .collect();
        write!(out, " where {}", dims.join(", ")).unwrap();
    }
    out.push('\n');
    write!(
        out,
        "  // {} parameters",
        group_digits(graph.parameter_count())
    )
    .unwrap();
    if graph.buffer_count() > 0 {
        write!(
            out,
            " and {} buffer elements",
            group_digits(graph.buffer_count())
        )
        .unwrap();
    }
    writeln!(out, " in {} tensors", graph.params.len()).unwrap();

    for input in &graph.inputs {
        let id = number(input.value, &mut numbers);
        writeln!(
            out,
            "  %{id}: {} = input {}",
            graph.ty(input.value),
            input.name
        )
        .unwrap();
    }
    for (_, param) in graph.params.iter() {
        let id = number(param.value, &mut numbers);
        let kind = if param.is_buffer { "buffer" } else { "param" };
        write!(
            out,
            "  %{id}: {} = {kind} \"{}\"",
            graph.ty(param.value),
            param.name
        )
        .unwrap();
        match param.storage {
            WeightStorage::F32 => writeln!(out).unwrap(),
            storage => writeln!(out, " stored {storage}").unwrap(),
        }
    }
    for (_, node) in graph.nodes.iter() {
        let operands: Vec<String> = node
            .inputs
            .iter()
            .map(|value| match numbers.get(value) {
                Some(id) => format!("%{id}"),
                // Only an invalid graph uses a value before defining it; print it recognizably.
                None => format!("%?{}", value.index()),
            })
            .collect();
        let results: Vec<String> = node
            .outputs
            .iter()
            .map(|&value| format!("%{}: {}", number(value, &mut numbers), graph.ty(value)))
            .collect();
        let attrs = DisplayAttrs(&node.op).to_string();
        let attrs = if attrs.is_empty() {
            String::new()
        } else {
            format!(" {{{attrs}}}")
        };
        let line = format!(
            "  {} = {}({}){attrs}",
            results.join(", "),
            node.op.name(),
            operands.join(", ")
        );
        writeln!(out, "{line:<72} // {}", node.name).unwrap();
    }
    for output in &graph.outputs {
        let id = numbers
            .get(&output.value)
            .map_or_else(|| "?".to_string(), |id| id.to_string());
        writeln!(out, "  output {} = %{id}", output.name).unwrap();
    }
    out
}

/// Formats `1234567` as `1,234,567`.
pub fn group_digits(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}
