//! The imported network before it is written out: statements over tensor values, each a layer
//! call or an operator as a person would write it in `.nn`, and the text they render to.
//!
//! Statements refer to values by [`ValueId`], not by variable name: the translation fuses and
//! drops statements as it goes (a bias `Add` into the `linear` before it), and only at the end,
//! once the last use of each value is known, does [`Program::render`] pick variables, reusing a
//! variable whose value is dead (`x = relu(x)`), as a person would.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use super::tensor::Constant;

/// A tensor computed at run time: an input of the network or the result of a statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ValueId(pub usize);

/// What the translation knows of a tensor value.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub shape: Vec<usize>,
    pub float: bool,
}

/// One argument of a call.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    Value(ValueId),
    Values(Vec<ValueId>),
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
    Floats(Vec<f32>),
    /// Rows of integers: a block mask.
    IntRows(Vec<Vec<i64>>),
    Bool(bool),
    Str(&'static str),
    /// A string made at import time: a layer name (`tied = "wte"`).
    Text(String),
    Keyword(&'static str, Box<Arg>),
    /// An integer parameter of the block the statement is in, by name: the `planes` of
    /// `conv2d(x, planes, ...)`.
    Param(String),
}

impl Arg {
    pub fn keyword(name: &'static str, value: Arg) -> Arg {
        Arg::Keyword(name, Box::new(value))
    }

    /// One value per spatial dimension, written as one integer when they are all equal.
    pub fn spatial(values: &[i64]) -> Arg {
        match values {
            [first, rest @ ..] if rest.iter().all(|v| v == first) => Arg::Int(*first),
            _ => Arg::Ints(values.to_vec()),
        }
    }
}

/// An operand of an infix operator.
#[derive(Clone, Copy, Debug)]
pub enum Operand {
    Value(ValueId),
    Number(f32),
}

/// The right-hand side of a statement.
#[derive(Clone, Debug)]
pub enum Expr {
    Call {
        function: &'static str,
        args: Vec<Arg>,
    },
    Binary {
        op: char,
        lhs: Operand,
        rhs: Operand,
    },
    /// A call of [`Program::blocks`]`[block]`; `inner` holds the statements it stands for, with
    /// their layers (and weights) under their full names.
    Block {
        block: usize,
        args: Vec<Arg>,
        inner: Vec<Stmt>,
    },
}

/// A `block` definition: parameters, statements (their layer names relative to the call's) and
/// the value it returns.
#[derive(Clone, Debug)]
pub struct BlockDef {
    pub name: String,
    pub params: Vec<(String, ValueId)>,
    /// The integer parameters, after the tensors: each call passes one integer per entry.
    pub int_params: Vec<String>,
    pub stmts: Vec<Stmt>,
    pub output: ValueId,
}

/// The layer a statement creates, with its weights in nnc's layout.
#[derive(Clone, Debug)]
pub struct Layer {
    /// The dotted layer name: `layer1.0.conv1`.
    pub name: String,
    /// The weights, by suffix (`weight`, `bias`, `running_mean` ...).
    pub weights: Vec<(&'static str, Constant)>,
    /// The ONNX names of the initializers the weights came from, for the comment.
    pub sources: Vec<String>,
    /// The ONNX node's name, for the comment.
    pub node_name: String,
}

impl Layer {
    /// The comment that says where the weights came from, when their ONNX names differ from
    /// nnc's.
    fn comment(&self) -> Option<String> {
        let names: Vec<String> = self.weight_names().collect();
        if self.sources.is_empty() || self.sources == names {
            return None;
        }
        let node = if self.node_name.is_empty() {
            String::new()
        } else {
            format!("{}: ", self.node_name)
        };
        Some(format!("{node}{}", compress_names(&self.sources)))
    }

    /// The nnc names of the weights, in order (an empty suffix: the layer's name, a
    /// `parameter`'s weight).
    pub fn weight_names(&self) -> impl Iterator<Item = String> + '_ {
        self.weights.iter().map(|(suffix, _)| match *suffix {
            "" => self.name.clone(),
            suffix => format!("{}.{suffix}", self.name),
        })
    }
}

/// One statement: `output = expr as layer`.
#[derive(Clone, Debug)]
pub struct Stmt {
    pub output: ValueId,
    pub expr: Expr,
    pub layer: Option<Layer>,
    /// Dropped by a later fusion.
    pub dead: bool,
}

/// A network input: its variable and its type, with dimensions as written (`batch` or `224`).
#[derive(Clone, Debug)]
pub struct Input {
    pub name: String,
    pub value: ValueId,
    pub float: bool,
    pub dims: Vec<String>,
}

/// The whole imported network.
#[derive(Debug, Default)]
pub struct Program {
    pub name: String,
    pub header: Vec<String>,
    pub inputs: Vec<Input>,
    /// `where` bindings of the symbolic dimensions.
    pub dims: Vec<(String, usize)>,
    pub tensors: Vec<TensorInfo>,
    pub stmts: Vec<Stmt>,
    /// The blocks that repeated statements were folded into ([`super::blocks`]).
    pub blocks: Vec<BlockDef>,
    /// The outputs: name and value.
    pub outputs: Vec<(String, ValueId)>,
}

/// The variables tried for new values, in order, before numbered ones.
const FRESH_NAMES: &[&str] = &["x", "h", "y", "z"];

impl Program {
    /// The weights of the live statements under their nnc names, in order.
    pub fn weights(&self) -> Vec<(String, Constant)> {
        fn collect(stmt: &Stmt, out: &mut Vec<(String, Constant)>) {
            if let Expr::Block { inner, .. } = &stmt.expr {
                inner.iter().for_each(|stmt| collect(stmt, out));
            } else if let Some(layer) = &stmt.layer {
                out.extend(
                    layer
                        .weight_names()
                        .zip(layer.weights.iter().map(|(_, c)| c.clone())),
                );
            }
        }
        let mut out = Vec::new();
        self.live().for_each(|stmt| collect(stmt, &mut out));
        out
    }

    fn live(&self) -> impl Iterator<Item = &Stmt> {
        self.stmts.iter().filter(|stmt| !stmt.dead)
    }

    /// The `.nn` text.
    pub fn render(&self) -> String {
        let stmts: Vec<&Stmt> = self.live().collect();
        let inputs: Vec<(ValueId, String)> = self
            .inputs
            .iter()
            .map(|input| (input.value, input.name.clone()))
            .collect();
        let (mut body, var) = self.render_body(&stmts, &inputs, &self.outputs);
        let mut named_outputs: HashSet<&str> = HashSet::new();
        for stmt in &stmts {
            if let Some((name, _)) = self.outputs.iter().find(|(_, value)| *value == stmt.output) {
                named_outputs.insert(name);
            }
        }
        for (name, value) in &self.outputs {
            if named_outputs.insert(name) && var.get(value) != Some(name) {
                let source = var.get(value).cloned().unwrap_or_else(|| "_".into());
                body.push_str(&format!("    {name} = {source}\n"));
            }
        }
        let mut blocks = String::new();
        for block in &self.blocks {
            let stmts: Vec<&Stmt> = block.stmts.iter().collect();
            let params: Vec<(ValueId, String)> = block
                .params
                .iter()
                .map(|(name, value)| (*value, name.clone()))
                .collect();
            let (block_body, var) =
                self.render_body(&stmts, &params, &[(String::new(), block.output)]);
            let params: Vec<&str> = block
                .params
                .iter()
                .map(|(name, _)| name.as_str())
                .chain(block.int_params.iter().map(String::as_str))
                .collect();
            let returned = var
                .get(&block.output)
                .cloned()
                .unwrap_or_else(|| "_".into());
            writeln!(blocks, "block {}({}) {{", block.name, params.join(", ")).unwrap();
            blocks.push_str(&block_body);
            writeln!(blocks, "    return {returned}\n}}\n").unwrap();
        }

        let mut text = String::new();
        for line in &self.header {
            writeln!(text, "// {}", one_line(line)).unwrap();
        }
        text.push_str(&blocks);
        let inputs: Vec<String> = self
            .inputs
            .iter()
            .map(|input| {
                let dtype = if input.float { "f32" } else { "i64" };
                format!("{}: {dtype}[{}]", input.name, input.dims.join(", "))
            })
            .collect();
        let outputs: Vec<String> = self
            .outputs
            .iter()
            .map(|(name, value)| {
                let info = &self.tensors[value.0];
                if self.dims.is_empty() {
                    let dtype = if info.float { "f32" } else { "i64" };
                    let dims: Vec<String> = info.shape.iter().map(usize::to_string).collect();
                    format!("{name}: {dtype}[{}]", dims.join(", "))
                } else {
                    name.clone()
                }
            })
            .collect();
        write!(
            text,
            "network {}({}) -> ({})",
            self.name,
            inputs.join(", "),
            outputs.join(", ")
        )
        .unwrap();
        if !self.dims.is_empty() {
            let bindings: Vec<String> = self
                .dims
                .iter()
                .map(|(name, size)| format!("{name} = {size}"))
                .collect();
            write!(text, " where {}", bindings.join(", ")).unwrap();
        }
        text.push_str(" {\n");
        text.push_str(&body);
        text.push_str("}\n");
        text
    }
}

impl Program {
    /// The statements as `.nn` lines, with variables chosen by liveness: `inputs` are named
    /// already, and each of `outputs` is written under its name (an empty name: any variable).
    /// Consecutive calls of one block along a chain (`layer.0`, `layer.1`, ... each reading the
    /// previous one's result) are written as a `for` loop. Returns the lines and the variables.
    fn render_body(
        &self,
        stmts: &[&Stmt],
        inputs: &[(ValueId, String)],
        outputs: &[(String, ValueId)],
    ) -> (String, HashMap<ValueId, String>) {
        // The last statement that reads each value; outputs live to the end.
        let mut last_use: HashMap<ValueId, usize> = HashMap::new();
        for (index, stmt) in stmts.iter().enumerate() {
            for value in reads(&stmt.expr) {
                last_use.insert(value, index);
            }
        }
        for (_, value) in outputs {
            last_use.insert(*value, usize::MAX);
        }
        let mut reserved: HashSet<String> = inputs.iter().map(|(_, name)| name.clone()).collect();
        reserved.extend(
            outputs
                .iter()
                .filter(|(name, _)| !name.is_empty())
                .map(|(name, _)| name.clone()),
        );
        let mut var: HashMap<ValueId, String> = HashMap::new();
        for (value, name) in inputs {
            var.insert(*value, name.clone());
        }
        let mut live_vars: HashSet<String> = reserved.clone();
        let mut named_outputs: HashSet<String> = HashSet::new();
        let mut body = String::new();
        let loops = block_loops(stmts);
        let mut index = 0;
        while index < stmts.len() {
            let stmt = stmts[index];
            let run = loops.get(&index).copied().unwrap_or(1);
            // Values read for the last time free their variables for this statement's result.
            let mut freed = Vec::new();
            for value in reads(&stmt.expr) {
                if last_use.get(&value).is_some_and(|&last| last < index + run)
                    && let Some(name) = var.get(&value)
                    && !reserved.contains(name)
                    && !freed.contains(name)
                {
                    freed.push(name.clone());
                    live_vars.remove(name);
                }
            }
            let result = stmts[index + run - 1].output;
            let output_name = outputs
                .iter()
                .find(|(name, value)| {
                    *value == result && !name.is_empty() && !named_outputs.contains(name)
                })
                .map(|(name, _)| name.clone());
            let name = match output_name {
                Some(name) => {
                    named_outputs.insert(name.clone());
                    name
                }
                None => freed
                    .first()
                    .cloned()
                    .unwrap_or_else(|| fresh_name(&live_vars)),
            };
            if run > 1 {
                // `for i in a..b { x = block(x, ..) as family[i] }`: the chained argument must be
                // the loop's variable.
                let chained = first_value(&stmt.expr).and_then(|value| var.get(&value).cloned());
                let Expr::Block { block, args, .. } = &stmt.expr else {
                    unreachable!("render_body: a loop of a statement that is not a block call")
                };
                let layer = stmt.layer.as_ref().expect("block calls are named");
                let (family, first) = split_index(&layer.name).expect("loops are indexed");
                // The loop carries the chained argument's variable when this is its last use
                // (then a network output is assigned after the loop), else the result's.
                let loop_var =
                    chained.filter(|chained| *chained == name || freed.contains(chained));
                let target = loop_var.clone().unwrap_or_else(|| name.clone());
                if loop_var.is_none() {
                    writeln!(
                        body,
                        "    {target} = {}",
                        var[&first_value(&stmt.expr).unwrap()]
                    )
                    .unwrap();
                }
                let mut loop_var_map = var.clone();
                if let Some(value) = first_value(&stmt.expr) {
                    loop_var_map.insert(value, target.clone());
                }
                let expr = render_expr(
                    &Expr::Block {
                        block: *block,
                        args: args.clone(),
                        inner: vec![],
                    },
                    &loop_var_map,
                    &self.blocks,
                );
                writeln!(
                    body,
                    "    for i in {first}..{} {{\n        {target} = {expr} as {}[i]\n    }}",
                    first + run,
                    layer_path(family)
                )
                .unwrap();
                if target != name {
                    writeln!(body, "    {name} = {target}").unwrap();
                }
                live_vars.insert(name.clone());
                var.insert(result, name);
                index += run;
                continue;
            }
            let expr = render_expr(&stmt.expr, &var, &self.blocks);
            live_vars.insert(name.clone());
            var.insert(stmt.output, name.clone());
            let mut line = format!("    {name} = {expr}");
            if let Some(layer) = &stmt.layer {
                write!(line, " as {}", layer_path(&layer.name)).unwrap();
                if let Some(comment) = layer.comment() {
                    write!(line, "    // {}", one_line(&comment)).unwrap();
                }
            }
            body.push_str(&line);
            body.push('\n');
            index += 1;
        }
        (body, var)
    }
}

/// `family.N` as `("family", N)`.
fn split_index(name: &str) -> Option<(&str, usize)> {
    let (family, index) = name.rsplit_once('.')?;
    Some((family, index.parse().ok()?))
}

/// The first value an expression reads.
fn first_value(expr: &Expr) -> Option<ValueId> {
    reads(expr).first().copied()
}

/// Runs of block calls that can be one loop, by the index of their first statement: the same
/// block and arguments, layers `family.i`, `family.i+1`, ..., each reading the previous result
/// as its first argument and nothing else reading the intermediate results.
fn block_loops(stmts: &[&Stmt]) -> HashMap<usize, usize> {
    let mut loops = HashMap::new();
    let mut index = 0;
    while index < stmts.len() {
        let mut run = 1;
        if let Expr::Block { block, args, .. } = &stmts[index].expr
            && let Some((family, first)) = stmts[index]
                .layer
                .as_ref()
                .and_then(|layer| split_index(&layer.name))
        {
            while let Some(next) = stmts.get(index + run)
                && let Expr::Block {
                    block: next_block,
                    args: next_args,
                    ..
                } = &next.expr
                && next_block == block
                && next
                    .layer
                    .as_ref()
                    .and_then(|layer| split_index(&layer.name))
                    == Some((family, first + run))
                && first_value(&next.expr) == Some(stmts[index + run - 1].output)
                && reads(&next.expr)[1..] == reads(&stmts[index].expr)[1..]
                && next_args.len() == args.len()
                && args.iter().zip(next_args).all(|(arg, next)| {
                    matches!((arg, next), (Arg::Value(_), Arg::Value(_))) || arg == next
                })
            {
                run += 1;
            }
            // The intermediate results must be read only by the next call.
            let intermediate: HashSet<ValueId> =
                (index..index + run - 1).map(|i| stmts[i].output).collect();
            let outside = stmts
                .iter()
                .enumerate()
                .filter(|(i, _)| *i <= index || *i >= index + run)
                .any(|(_, stmt)| reads(&stmt.expr).iter().any(|v| intermediate.contains(v)));
            if run > 1 && !outside {
                loops.insert(index, run);
            } else {
                run = 1;
            }
        }
        index += run;
    }
    loops
}

/// `text` for a `//` comment: control characters (a line break in an ONNX node name, which
/// would end the comment) written as escapes, `\n`.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Names with a common stem written once: `bn_scale, bn_offset` as `bn_{scale, offset}`.
fn compress_names(names: &[String]) -> String {
    let first = &names[0];
    let mut stem = first.len();
    for name in &names[1..] {
        stem = stem.min(
            first
                .bytes()
                .zip(name.bytes())
                .take_while(|(a, b)| a == b)
                .count(),
        );
    }
    // Cut the stem after a separator so that `{}` holds whole words.
    let stem = first[..stem].rfind(['_', '.']).map_or(0, |end| end + 1);
    if names.len() < 2 || stem == 0 {
        return names.join(", ");
    }
    let rests: Vec<&str> = names.iter().map(|name| &name[stem..]).collect();
    format!("{}{{{}}}", &first[..stem], rests.join(", "))
}

/// The values an expression reads, in order.
pub(super) fn reads(expr: &Expr) -> Vec<ValueId> {
    fn arg_values(arg: &Arg, out: &mut Vec<ValueId>) {
        match arg {
            Arg::Value(value) => out.push(*value),
            Arg::Values(values) => out.extend(values),
            Arg::Keyword(_, inner) => arg_values(inner, out),
            _ => {}
        }
    }
    let mut out = Vec::new();
    match expr {
        Expr::Call { args, .. } => args.iter().for_each(|arg| arg_values(arg, &mut out)),
        Expr::Binary { lhs, rhs, .. } => {
            for operand in [lhs, rhs] {
                if let Operand::Value(value) = operand {
                    out.push(*value);
                }
            }
        }
        Expr::Block { args, .. } => args.iter().for_each(|arg| arg_values(arg, &mut out)),
    }
    out
}

fn fresh_name(live: &HashSet<String>) -> String {
    FRESH_NAMES
        .iter()
        .map(|name| name.to_string())
        .chain((1..).map(|n| format!("x{n}")))
        .find(|name| !live.contains(name))
        .expect("an unbounded supply of names")
}

fn render_expr(expr: &Expr, var: &HashMap<ValueId, String>, blocks: &[BlockDef]) -> String {
    let value = |id: &ValueId| var.get(id).cloned().unwrap_or_else(|| "_".into());
    match expr {
        Expr::Call { function, args } => {
            let args: Vec<String> = args.iter().map(|arg| render_arg(arg, &value)).collect();
            format!("{function}({})", args.join(", "))
        }
        Expr::Block { block, args, .. } => {
            let args: Vec<String> = args.iter().map(|arg| render_arg(arg, &value)).collect();
            format!("{}({})", blocks[*block].name, args.join(", "))
        }
        Expr::Binary { op, lhs, rhs } => {
            let operand = |operand: &Operand| match operand {
                Operand::Value(id) => value(id),
                Operand::Number(number) => number_literal(*number),
            };
            // `x + -3.0` reads better as `x - 3.0`, and `x * -1.0` (ONNX's `Neg`) as `-x`.
            match (op, rhs) {
                ('*', Operand::Number(n)) if *n == -1.0 => format!("-{}", operand(lhs)),
                ('+', Operand::Number(n)) if *n < 0.0 => {
                    format!("{} - {}", operand(lhs), number_literal(-n))
                }
                ('-', Operand::Number(n)) if *n < 0.0 => {
                    format!("{} + {}", operand(lhs), number_literal(-n))
                }
                _ => format!("{} {op} {}", operand(lhs), operand(rhs)),
            }
        }
    }
}

fn render_arg(arg: &Arg, value: &dyn Fn(&ValueId) -> String) -> String {
    match arg {
        Arg::Value(id) => value(id),
        Arg::Values(ids) => format!("[{}]", ids.iter().map(value).collect::<Vec<_>>().join(", ")),
        Arg::Int(n) => n.to_string(),
        Arg::Ints(ns) => format!(
            "[{}]",
            ns.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
        ),
        Arg::Float(f) => number_literal(*f),
        Arg::Floats(fs) => format!(
            "[{}]",
            fs.iter()
                .map(|&f| number_literal(f))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Arg::IntRows(rows) => {
            let rows: Vec<String> = rows
                .iter()
                .map(|row| render_arg(&Arg::Ints(row.clone()), value))
                .collect();
            format!("[{}]", rows.join(", "))
        }
        Arg::Bool(b) => b.to_string(),
        Arg::Str(s) => format!("\"{s}\""),
        Arg::Text(s) => format!("\"{s}\""),
        Arg::Keyword(name, inner) => format!("{name} = {}", render_arg(inner, value)),
        Arg::Param(name) => name.clone(),
    }
}

/// A float as a `.nn` literal: `0.5`, `3.0`, `1e-5`. The caller makes sure it is finite.
pub fn number_literal(value: f32) -> String {
    let text = format!("{value:?}");
    if text.contains(['.', 'e']) || !value.is_finite() {
        text
    } else {
        format!("{text}.0")
    }
}

/// Whether [`number_literal`] writes `value` so that the `.nn` front end (which reads numbers as
/// `f64` and narrows them) reads back the same `f32`.
pub fn number_literal_is_exact(value: f32) -> bool {
    value.is_finite()
        && number_literal(value)
            .parse::<f64>()
            .is_ok_and(|read| read as f32 == value)
}

/// A dotted layer name as an `as` path: `layer1.0.conv1` is written `layer1[0].conv1`.
pub fn layer_path(name: &str) -> String {
    let mut path = String::new();
    for (index, segment) in name.split('.').enumerate() {
        let numeric = segment.bytes().all(|b| b.is_ascii_digit());
        match (index, numeric) {
            (0, _) => path.push_str(segment),
            (_, true) => write!(path, "[{segment}]").unwrap(),
            (_, false) => write!(path, ".{segment}").unwrap(),
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_paths_index_numbers() {
        assert_eq!(layer_path("layer1.0.conv1"), "layer1[0].conv1");
        assert_eq!(layer_path("features.1.conv.0.0"), "features[1].conv[0][0]");
        assert_eq!(layer_path("fc"), "fc");
    }

    #[test]
    fn comments_write_a_common_stem_once() {
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            compress_names(&names(&["bn_scale", "bn_offset", "bn_mean"])),
            "bn_{scale, offset, mean}"
        );
        assert_eq!(compress_names(&names(&["w", "b"])), "w, b");
        assert_eq!(compress_names(&names(&["conv1_weights"])), "conv1_weights");
    }

    #[test]
    fn numbers_are_float_literals() {
        assert_eq!(number_literal(3.0), "3.0");
        assert_eq!(number_literal(0.5), "0.5");
        assert_eq!(number_literal(1e-5), "1e-5");
        assert_eq!(number_literal(-2.0), "-2.0");
    }
}
