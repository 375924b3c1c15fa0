//! The IR verifier: checks the invariants listed in the [module docs](super).
//!
//! Lowering and every pass must leave a graph that verifies. Debug builds and tests run the
//! verifier after each stage, as Cranelift's `verify_if` does.

use std::collections::HashSet;

use super::infer::infer;
use super::{Graph, ValueDef};

/// Checks `graph`; returns every broken invariant, or nothing.
pub fn verify(graph: &Graph) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();

    for (value, data) in graph.values.iter() {
        let consistent = match data.def {
            ValueDef::Input { index } => graph
                .inputs
                .get(index)
                .is_some_and(|input| input.value == value),
            ValueDef::Param(param) => graph
                .params
                .get(param)
                .is_some_and(|param| param.value == value),
            ValueDef::Node { node, position } => graph
                .nodes
                .get(node)
                .is_some_and(|node| node.outputs.get(position) == Some(&value)),
        };
        if !consistent {
            errors.push(format!(
                "value {value:?} claims to be defined by {:?}, which does not define it",
                data.def
            ));
        }
    }

    let mut param_names = HashSet::new();
    for (_, param) in graph.params.iter() {
        if !param_names.insert(param.name.as_str()) {
            errors.push(format!("two params are named `{}`", param.name));
        }
        if !graph.values.contains(param.value) {
            errors.push(format!("param `{}` has no value", param.name));
        }
    }

    for (node, data) in graph.nodes.iter() {
        for &input in &data.inputs {
            let defined_before = match graph.values.get(input).map(|value| value.def) {
                Some(ValueDef::Input { .. } | ValueDef::Param(_)) => true,
                Some(ValueDef::Node { node: producer, .. }) => producer < node,
                None => false,
            };
            if !defined_before {
                errors.push(format!(
                    "node {node:?} (`{}`) uses {input:?} before it is defined",
                    data.name
                ));
            }
        }
        if data
            .inputs
            .iter()
            .any(|&input| !graph.values.contains(input))
            || data
                .outputs
                .iter()
                .any(|&output| !graph.values.contains(output))
        {
            continue;
        }
        for (position, &output) in data.outputs.iter().enumerate() {
            if graph.values[output].def != (ValueDef::Node { node, position }) {
                errors.push(format!(
                    "node {node:?} lists {output:?} as an output, but the value disagrees"
                ));
            }
        }
        let input_types: Vec<_> = data.inputs.iter().map(|&input| graph.ty(input)).collect();
        match infer(&data.op, &input_types) {
            Ok(types) => {
                let actual: Vec<_> = data
                    .outputs
                    .iter()
                    .map(|&output| graph.ty(output).clone())
                    .collect();
                if types != actual {
                    errors.push(format!("node {node:?} (`{}`) has output types {actual:?}, but its op gives {types:?}", data.name));
                }
            }
            Err(error) => errors.push(format!(
                "node {node:?} (`{}`) is ill-typed: {}",
                data.name, error.message
            )),
        }
        if graph.spans.get(node).is_none() {
            errors.push(format!("node {node:?} has no span"));
        }
    }

    for output in &graph.outputs {
        if !graph.values.contains(output.value) {
            errors.push(format!(
                "output `{}` refers to a value that does not exist",
                output.name
            ));
        }
    }

    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}
