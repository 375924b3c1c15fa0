//! Repeated subgraphs folded into `block`s, as a person writes a transformer layer or a residual
//! block once and calls it per layer.
//!
//! The statements are cut into instances by their layer names: PyTorch's state-dict names put
//! the layers of one module instance under one indexed prefix (`encoder.layer.3.attention...`,
//! `layer1.0.conv1`, `features.4.conv.0.0`); the prefix is the shortest one that ends in an index.
//! A statement without weights (`h + x`, `attention(...)`) belongs to the instance before it.
//! Two instances are the same block when their statements are the same up to the names of their
//! values: same calls and arguments, same layer names relative to the prefix, same weight
//! shapes, same input shapes. A block needs exactly one value that its instance computes and the
//! rest of the network reads (what it returns); its parameters are the values it reads from
//! outside. Every instance whose statements occur at least twice becomes a call of one block
//! definition; the rendering ([`super::program`]) writes a chain of calls as a `for` loop.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use super::program::{Arg, BlockDef, Expr, Layer, Operand, Program, Stmt, ValueId, reads};

/// Folds the program's repeated instances into blocks.
pub fn fold(program: &mut Program) {
    let stmts: Vec<Stmt> = program.stmts.iter().filter(|s| !s.dead).cloned().collect();
    let segments = segments(&stmts);
    // What each value is read by: statement indices, and the outputs (usize::MAX).
    let mut readers: HashMap<ValueId, Vec<usize>> = HashMap::new();
    for (index, stmt) in stmts.iter().enumerate() {
        for value in reads(&stmt.expr) {
            readers.entry(value).or_default().push(index);
        }
    }
    for (_, value) in &program.outputs {
        readers.entry(*value).or_default().push(usize::MAX);
    }
    let input_names: HashMap<ValueId, String> = program
        .inputs
        .iter()
        .map(|input| (input.value, input.name.clone()))
        .collect();

    let mut instances = Vec::new();
    for segment in segments {
        if let Some(instance) = describe(program, &stmts, &segment, &readers) {
            instances.push(instance);
        }
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for instance in &instances {
        *counts.entry(instance.signature.as_str()).or_insert(0) += 1;
    }
    let mut block_of: HashMap<String, usize> = HashMap::new();
    let mut replaced: HashMap<usize, Stmt> = HashMap::new();
    let mut skipped: HashSet<usize> = HashSet::new();
    let mut taken_names: HashSet<String> = HashSet::new();
    for instance in &instances {
        if counts[instance.signature.as_str()] < 2 {
            continue;
        }
        let block = *block_of
            .entry(instance.signature.clone())
            .or_insert_with(|| {
                let definition = define(instance, &stmts, &input_names, &mut taken_names);
                program.blocks.push(definition);
                program.blocks.len() - 1
            });
        let inner: Vec<Stmt> = instance.range.clone().map(|i| stmts[i].clone()).collect();
        replaced.insert(
            instance.range.start,
            Stmt {
                output: instance.output,
                expr: Expr::Block {
                    block,
                    args: instance.externals.iter().map(|&v| Arg::Value(v)).collect(),
                    inner,
                },
                layer: Some(Layer {
                    name: instance.prefix.clone(),
                    weights: vec![],
                    sources: vec![],
                    node_name: String::new(),
                }),
                dead: false,
            },
        );
        skipped.extend(instance.range.clone().skip(1));
    }
    if replaced.is_empty() {
        return;
    }
    program.stmts = stmts
        .into_iter()
        .enumerate()
        .filter(|(index, _)| !skipped.contains(index))
        .map(|(index, stmt)| replaced.remove(&index).unwrap_or(stmt))
        .collect();
}

/// One candidate instance.
struct Instance {
    /// The statements, by index.
    range: std::ops::Range<usize>,
    /// `encoder.layer.3`.
    prefix: String,
    /// The values read from outside, in the order first read.
    externals: Vec<ValueId>,
    /// The one value read after it.
    output: ValueId,
    /// Equal for instances that are the same block.
    signature: String,
}

/// The shortest prefix of a layer name that ends in an index and has a name before it:
/// `encoder.layer.3` for `encoder.layer.3.attention.self.query`.
fn instance_prefix(name: &str) -> Option<String> {
    let segments: Vec<&str> = name.split('.').collect();
    let position = segments
        .iter()
        .enumerate()
        .skip(1)
        .find(|(_, s)| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))?
        .0;
    // The instance has layers below it: a layer named `fc.0` is not an instance.
    (position + 1 < segments.len()).then(|| segments[..=position].join("."))
}

/// Runs of statements with the same instance prefix (statements without a layer join the run
/// before them).
fn segments(stmts: &[Stmt]) -> Vec<(std::ops::Range<usize>, String)> {
    let mut out: Vec<(std::ops::Range<usize>, String)> = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (index, stmt) in stmts.iter().enumerate() {
        let prefix = match &stmt.layer {
            Some(layer) => instance_prefix(&layer.name),
            None => current.as_ref().map(|(_, prefix)| prefix.clone()),
        };
        match (&current, prefix) {
            (Some((_, open)), Some(prefix)) if *open == prefix => {}
            (_, prefix) => {
                if let Some((start, open)) = current.take() {
                    out.push((start..index, open));
                }
                current = prefix.map(|prefix| (index, prefix));
            }
        }
    }
    if let Some((start, open)) = current {
        out.push((start..stmts.len(), open));
    }
    out
}

/// The instance of a segment, when exactly one of its values is read after it.
fn describe(
    program: &Program,
    stmts: &[Stmt],
    (range, prefix): &(std::ops::Range<usize>, String),
    readers: &HashMap<ValueId, Vec<usize>>,
) -> Option<Instance> {
    // Statements without a layer at the end may belong to what follows (the pooler's `select`
    // after the last encoder layer): drop them until one value escapes.
    let last_layer = range.clone().rev().find(|&i| stmts[i].layer.is_some())?;
    (last_layer + 1..=range.end).rev().find_map(|end| {
        describe_range(program, stmts, &(range.start..end, prefix.clone()), readers)
    })
}

fn describe_range(
    program: &Program,
    stmts: &[Stmt],
    (range, prefix): &(std::ops::Range<usize>, String),
    readers: &HashMap<ValueId, Vec<usize>>,
) -> Option<Instance> {
    let local: HashMap<ValueId, usize> = range
        .clone()
        .map(|index| (stmts[index].output, index - range.start))
        .collect();
    let mut externals = Vec::new();
    for index in range.clone() {
        for value in reads(&stmts[index].expr) {
            if !local.contains_key(&value) && !externals.contains(&value) {
                externals.push(value);
            }
        }
    }
    let escaping: Vec<ValueId> = range
        .clone()
        .map(|index| stmts[index].output)
        .filter(|value| {
            readers
                .get(value)
                .is_some_and(|readers| readers.iter().any(|&reader| !range.contains(&reader)))
        })
        .collect();
    let [output] = escaping[..] else {
        return None;
    };
    let canonical = |value: ValueId| -> String {
        match local.get(&value) {
            Some(position) => format!("l{position}"),
            None => format!(
                "e{}",
                externals.iter().position(|&v| v == value).unwrap_or(0)
            ),
        }
    };
    let mut signature = String::new();
    for &value in &externals {
        let info = &program.tensors[value.0];
        write!(signature, "in {:?} {};", info.shape, info.float).unwrap();
    }
    for index in range.clone() {
        let stmt = &stmts[index];
        write!(signature, "{}", canonical_expr(&stmt.expr, &canonical)).unwrap();
        if let Some(layer) = &stmt.layer {
            let relative = layer
                .name
                .strip_prefix(prefix.as_str())?
                .trim_start_matches('.');
            write!(signature, " as {relative}").unwrap();
            for (suffix, constant) in &layer.weights {
                write!(signature, " {suffix}{:?}", constant.shape).unwrap();
            }
        }
        signature.push(';');
    }
    write!(signature, "out {};", canonical(output)).unwrap();
    Some(Instance {
        range: range.clone(),
        prefix: prefix.clone(),
        externals,
        output,
        signature,
    })
}

/// An expression with its values written by `canonical`.
fn canonical_expr(expr: &Expr, canonical: &dyn Fn(ValueId) -> String) -> String {
    fn arg(argument: &Arg, canonical: &dyn Fn(ValueId) -> String) -> String {
        match argument {
            Arg::Value(value) => canonical(*value),
            Arg::Values(values) => {
                let values: Vec<String> = values.iter().map(|&v| canonical(v)).collect();
                format!("[{}]", values.join(","))
            }
            Arg::Keyword(name, inner) => format!("{name}={}", arg(inner, canonical)),
            other => format!("{other:?}"),
        }
    }
    match expr {
        Expr::Call { function, args } => {
            let args: Vec<String> = args.iter().map(|a| arg(a, canonical)).collect();
            format!("{function}({})", args.join(","))
        }
        Expr::Binary { op, lhs, rhs } => {
            let operand = |operand: &Operand| match operand {
                Operand::Value(value) => canonical(*value),
                Operand::Number(number) => format!("{number:?}"),
            };
            format!("{} {op} {}", operand(lhs), operand(rhs))
        }
        Expr::Block { block, args, .. } => {
            let args: Vec<String> = args.iter().map(|a| arg(a, canonical)).collect();
            format!("block{block}({})", args.join(","))
        }
    }
}

/// The block definition of `instance`: its statements with layer names relative to the prefix,
/// parameters named after the network inputs they are, else `x`, `h`, ...
fn define(
    instance: &Instance,
    stmts: &[Stmt],
    input_names: &HashMap<ValueId, String>,
    taken_names: &mut HashSet<String>,
) -> BlockDef {
    let family = instance
        .prefix
        .rsplit_once('.')
        .map_or(instance.prefix.as_str(), |(family, _)| family);
    let stem = format!("{}_block", family.replace('.', "_"));
    let mut name = stem.clone();
    let mut suffix = 2;
    while !taken_names.insert(name.clone()) {
        name = format!("{stem}_{suffix}");
        suffix += 1;
    }
    let mut fresh = ["x", "h", "y", "z"]
        .iter()
        .map(|s| s.to_string())
        .chain((1..).map(|n| format!("x{n}")));
    let mut used: HashSet<String> = HashSet::new();
    let params = instance
        .externals
        .iter()
        .map(|value| {
            let param = match input_names.get(value) {
                Some(input) if !used.contains(input) => input.clone(),
                _ => fresh
                    .by_ref()
                    .find(|name| !used.contains(name) && !input_names.values().any(|n| n == name))
                    .expect("unbounded names"),
            };
            used.insert(param.clone());
            (param, *value)
        })
        .collect();
    let stmts = instance
        .range
        .clone()
        .map(|index| {
            let mut stmt = stmts[index].clone();
            if let Some(layer) = &mut stmt.layer {
                // The comment is for weights whose ONNX names differ from nnc's full names.
                if layer.weight_names().eq(layer.sources.iter().cloned()) {
                    layer.sources.clear();
                }
                layer.name = layer.name[instance.prefix.len()..]
                    .trim_start_matches('.')
                    .to_string();
            }
            stmt
        })
        .collect();
    BlockDef {
        name,
        params,
        stmts,
        output: instance.output,
    }
}
