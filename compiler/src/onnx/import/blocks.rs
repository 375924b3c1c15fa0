//! Repeated subgraphs folded into `block`s, as a person writes a transformer layer or a residual
//! block once and calls it per layer.
//!
//! The statements are cut into instances by their layer names: PyTorch's state-dict names put
//! the layers of one module instance under one indexed prefix (`encoder.layer.3.attention...`,
//! `layer1.0.conv1`, `features.4.conv.0.0`); the prefix is the shortest one that ends in an index.
//! A statement without weights (`h + x`, `attention(...)`) belongs to the instance before it.
//! Two instances are the same block when their statements are the same up to the names of their
//! values and their integer arguments: same calls, same other arguments, same layer names
//! relative to the prefix, inputs of the same rank and type. A block needs exactly one value that
//! its instance computes and the rest of the network reads (what it returns); its parameters are
//! the values it reads from outside, then one integer per set of integer arguments that differ
//! between the instances (ResNet's widths, MobileNetV2's widths and strides): integer
//! arguments that take the same values in every instance share one parameter
//! (`conv2d(h, channels, ..., groups = channels)`), and those equal in all instances stay
//! literals. Each instance's call passes its own values, so it stands for exactly the statements
//! it replaces; weight shapes follow from the arguments and the inputs. A signature that at least
//! two instances share becomes one block definition and their calls; the rendering
//! ([`super::program`]) writes a chain of calls with the same arguments as a `for` loop.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use super::program::{Arg, BlockDef, Expr, Layer, Operand, Program, Stmt, ValueId, reads};

/// Folds the program's repeated instances into blocks.
pub fn fold(program: &mut Program) {
    let mut stmts: Vec<Stmt> = program.stmts.iter().filter(|s| !s.dead).cloned().collect();
    write_default_strides(&mut stmts);
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

    // Each segment's candidates, longest first; a segment becomes the longest candidate whose
    // signature another segment has too (ResNet's last residual block without the pooling after
    // it, which joined its segment).
    let candidates: Vec<Vec<Instance>> = segments
        .iter()
        .map(|segment| describe(program, &stmts, segment, &readers))
        .collect();
    let mut segments_with: HashMap<&str, usize> = HashMap::new();
    for candidates in &candidates {
        let signatures: HashSet<&str> = candidates.iter().map(|c| c.signature.as_str()).collect();
        for signature in signatures {
            *segments_with.entry(signature).or_insert(0) += 1;
        }
    }
    let chosen: Vec<Option<usize>> = candidates
        .iter()
        .map(|candidates| {
            candidates
                .iter()
                .position(|c| segments_with[c.signature.as_str()] >= 2)
        })
        .collect();
    let instances: Vec<Instance> = candidates
        .into_iter()
        .zip(chosen)
        .filter_map(|(mut candidates, chosen)| Some(candidates.swap_remove(chosen?)))
        .collect();
    // The instances of each signature, in the order the signatures first occur.
    let mut groups: Vec<Vec<&Instance>> = Vec::new();
    let mut group_of: HashMap<&str, usize> = HashMap::new();
    for instance in &instances {
        let group = *group_of
            .entry(instance.signature.as_str())
            .or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
        groups[group].push(instance);
    }
    let mut replaced: HashMap<usize, Stmt> = HashMap::new();
    let mut skipped: HashSet<usize> = HashSet::new();
    let mut taken_names: HashSet<String> = HashSet::new();
    for group in groups.iter().filter(|group| group.len() >= 2) {
        let (definition, parameters) = define(group, &stmts, &input_names, &mut taken_names);
        program.blocks.push(definition);
        let block = program.blocks.len() - 1;
        for (index, instance) in group.iter().enumerate() {
            let inner: Vec<Stmt> = instance.range.clone().map(|i| stmts[i].clone()).collect();
            let mut args: Vec<Arg> = instance.externals.iter().map(|&v| Arg::Value(v)).collect();
            args.extend(parameters.arguments(index));
            replaced.insert(
                instance.range.start,
                Stmt {
                    output: instance.output,
                    expr: Expr::Block { block, args, inner },
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
    drop_default_strides(&mut program.stmts);
    for block in &mut program.blocks {
        drop_default_strides(&mut block.stmts);
    }
}

/// Writes out the `stride = 1` that the translation leaves out of a convolution, so that
/// instances that differ only in their stride (MobileNetV2's blocks without a shortcut) compare
/// equal, with a `stride` parameter.
fn write_default_strides(stmts: &mut [Stmt]) {
    for stmt in stmts {
        if let Expr::Call {
            function: "conv1d" | "conv2d",
            args,
        } = &mut stmt.expr
            && !args
                .iter()
                .any(|arg| matches!(arg, Arg::Keyword("stride", _)))
            && let Some(kernel) = args
                .iter()
                .position(|arg| matches!(arg, Arg::Keyword("kernel", _)))
        {
            args.insert(kernel + 1, Arg::keyword("stride", Arg::Int(1)));
        }
    }
}

/// Leaves out the literal `stride = 1`s again, in blocks' statements and calls' inner ones too.
fn drop_default_strides(stmts: &mut [Stmt]) {
    for stmt in stmts {
        match &mut stmt.expr {
            Expr::Call { args, .. } => args.retain(
                |arg| !matches!(arg, Arg::Keyword("stride", value) if **value == Arg::Int(1)),
            ),
            Expr::Block { inner, .. } => drop_default_strides(inner),
            Expr::Binary { .. } => {}
        }
    }
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
    /// The integer arguments of its statements, in order ([`visit_ints`]), with what each is.
    ints: Vec<(i64, ParamHint)>,
}

/// The integer parameters of a block: which integer arguments of its statements they stand for,
/// and each instance's values.
struct IntParameters {
    /// For each integer argument of the statements, in order: the parameter it becomes, or none
    /// where every instance has the same value.
    slot_param: Vec<Option<usize>>,
    /// Each parameter's name, and the keyword calls pass it by (where its name is one).
    names: Vec<(String, Option<&'static str>)>,
    /// Each parameter's value, by instance.
    values: Vec<Vec<i64>>,
}

impl IntParameters {
    /// One parameter per distinct column of integer arguments that varies between the
    /// instances, named after the first argument it stands for: the keyword (`stride`), else
    /// the call's positional meaning (`channels`). Parameters passed positionally come first.
    /// `taken` holds names the block uses already (its tensor parameters).
    fn of(group: &[&Instance], taken: &HashSet<String>) -> IntParameters {
        // Distinct varying columns, in first-occurrence order, with their first hint.
        let mut columns: Vec<(Vec<i64>, ParamHint)> = Vec::new();
        let slot_column: Vec<Option<usize>> = group[0]
            .ints
            .iter()
            .enumerate()
            .map(|(slot, &(first, hint))| {
                let values: Vec<i64> = group.iter().map(|i| i.ints[slot].0).collect();
                if values.iter().all(|&v| v == first) {
                    return None;
                }
                Some(match columns.iter().position(|(seen, _)| *seen == values) {
                    Some(position) => position,
                    None => {
                        columns.push((values, hint));
                        columns.len() - 1
                    }
                })
            })
            .collect();
        // Positional parameters first, then keywords; names made unique with `_2`, `_3` ...
        let mut order: Vec<usize> = (0..columns.len()).collect();
        order.sort_by_key(|&c| matches!(columns[c].1, ParamHint::Keyword(_)));
        let mut param_of_column = vec![0; columns.len()];
        let mut names: Vec<(String, Option<&'static str>)> = Vec::new();
        let mut values = vec![Vec::new(); group.len()];
        for (param, &c) in order.iter().enumerate() {
            param_of_column[c] = param;
            let stem = columns[c].1.name();
            let mut name = stem.to_string();
            let mut suffix = 2;
            while names.iter().any(|(taken, _)| *taken == name) || taken.contains(&name) {
                name = format!("{stem}_{suffix}");
                suffix += 1;
            }
            let keyword = match columns[c].1 {
                ParamHint::Keyword(keyword) if name == keyword => Some(keyword),
                _ => None,
            };
            names.push((name, keyword));
            for (instance, value) in values.iter_mut().zip(&columns[c].0) {
                instance.push(*value);
            }
        }
        IntParameters {
            slot_param: slot_column
                .into_iter()
                .map(|c| c.map(|c| param_of_column[c]))
                .collect(),
            names,
            values,
        }
    }

    /// The integer arguments of instance `index`'s call, after its tensors.
    fn arguments(&self, index: usize) -> impl Iterator<Item = Arg> + '_ {
        self.names
            .iter()
            .zip(&self.values[index])
            .map(|((_, keyword), &value)| match keyword {
                Some(keyword) => Arg::keyword(keyword, Arg::Int(value)),
                None => Arg::Int(value),
            })
    }
}

/// What an integer argument is, for naming the parameter that takes its place.
#[derive(Clone, Copy, Debug)]
enum ParamHint {
    /// A keyword argument: `stride = 2`.
    Keyword(&'static str),
    /// A positional argument of a call.
    Positional(&'static str),
}

impl ParamHint {
    fn name(self) -> &'static str {
        match self {
            ParamHint::Keyword(keyword) => keyword,
            ParamHint::Positional(function) if function.starts_with("conv") => "channels",
            ParamHint::Positional("linear") => "features",
            ParamHint::Positional(_) => "size",
        }
    }
}

/// Visits the [`Arg::Int`]s of an expression in order (keyword arguments' included), with what
/// each one is.
fn visit_ints(expr: &mut Expr, visit: &mut dyn FnMut(&mut Arg, ParamHint)) {
    fn arg(argument: &mut Arg, hint: ParamHint, visit: &mut dyn FnMut(&mut Arg, ParamHint)) {
        match argument {
            Arg::Int(_) => visit(argument, hint),
            Arg::Keyword(name, inner) => arg(inner, ParamHint::Keyword(name), visit),
            _ => {}
        }
    }
    let (function, args): (&'static str, &mut Vec<Arg>) = match expr {
        Expr::Call { function, args } => (function, args),
        Expr::Block { args, .. } => ("block", args),
        Expr::Binary { .. } => return,
    };
    for argument in args {
        arg(argument, ParamHint::Positional(function), visit);
    }
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

/// The candidate instances of a segment: those where exactly one of its values is read after it.
fn describe(
    program: &Program,
    stmts: &[Stmt],
    (range, prefix): &(std::ops::Range<usize>, String),
    readers: &HashMap<ValueId, Vec<usize>>,
) -> Vec<Instance> {
    // Statements without a layer at the end may belong to what follows (the pooler's `select`
    // after the last encoder layer): each way of dropping them where one value escapes is a
    // candidate, longest first.
    let Some(last_layer) = range.clone().rev().find(|&i| stmts[i].layer.is_some()) else {
        return Vec::new();
    };
    (last_layer + 1..=range.end)
        .rev()
        .filter_map(|end| {
            describe_range(program, stmts, &(range.start..end, prefix.clone()), readers)
        })
        .collect()
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
        write!(signature, "in rank {} {};", info.shape.len(), info.float).unwrap();
    }
    let mut ints = Vec::new();
    for index in range.clone() {
        let stmt = &stmts[index];
        write!(signature, "{}", canonical_expr(&stmt.expr, &canonical)).unwrap();
        let mut expr = stmt.expr.clone();
        visit_ints(&mut expr, &mut |argument, hint| {
            if let Arg::Int(value) = argument {
                ints.push((*value, hint));
            }
        });
        if let Some(layer) = &stmt.layer {
            let relative = layer
                .name
                .strip_prefix(prefix.as_str())?
                .trim_start_matches('.');
            write!(signature, " as {relative}").unwrap();
            for (suffix, constant) in &layer.weights {
                write!(signature, " {suffix} rank {}", constant.shape.len()).unwrap();
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
        ints,
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
            // Integers may differ between instances: they become parameters.
            Arg::Int(_) => "#".into(),
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

/// The block definition of a group of instances: the first one's statements with layer names
/// relative to the prefix and the varying integers as parameters; tensor parameters named after
/// the network inputs they are, else `x`, `h`, .... Named after the instances' common family
/// (`layer_block` for `layer1.0` ... `layer4.1`).
fn define(
    group: &[&Instance],
    stmts: &[Stmt],
    input_names: &HashMap<ValueId, String>,
    taken_names: &mut HashSet<String>,
) -> (BlockDef, IntParameters) {
    let instance = group[0];
    let family = |instance: &Instance| -> String {
        instance
            .prefix
            .rsplit_once('.')
            .map_or(instance.prefix.clone(), |(family, _)| family.to_string())
    };
    let mut common = family(instance);
    for other in &group[1..] {
        let other = family(other);
        let shared = common
            .char_indices()
            .zip(other.chars())
            .find(|((_, a), b)| a != b)
            .map_or(common.len().min(other.len()), |((at, _), _)| at);
        common.truncate(shared);
    }
    let common = common.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.' || c == '_');
    let family = if common.is_empty() {
        family(instance)
    } else {
        common.to_string()
    };
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
    let params: Vec<(String, ValueId)> = instance
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
    let parameters = IntParameters::of(group, &used);
    let mut slot = 0;
    let stmts = instance
        .range
        .clone()
        .map(|index| {
            let mut stmt = stmts[index].clone();
            visit_ints(&mut stmt.expr, &mut |argument, _| {
                if let Some(param) = parameters.slot_param[slot] {
                    *argument = Arg::Param(parameters.names[param].0.clone());
                }
                slot += 1;
            });
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
    let definition = BlockDef {
        name,
        params,
        int_params: parameters
            .names
            .iter()
            .map(|(name, _)| name.clone())
            .collect(),
        stmts,
        output: instance.output,
    };
    (definition, parameters)
}
