//! Layers that exporters write as several nodes, recognized before the node-by-node translation:
//! the decomposed forms PyTorch exports and `nnc export` writes (docs/onnx.md lists them) each
//! become one node of the private domain [`DOMAIN`], which [`translate`] turns into one `.nn` layer.
//!
//! - attention: `Reshape`/`Transpose` into heads, `MatMul(q, kᵀ)`, `Mul`/`Div` by the scale,
//!   `Add` of a constant mask (causal and/or a sparse pattern, read back by [`mask_pattern`])
//!   and/or a key padding mask (`Where(Equal(mask, 0), MIN, 0)`, or Hugging Face's
//!   `(1 - Cast(mask)) * MIN`), `Softmax`, `MatMul(·, v)`, `Transpose`/`Reshape` back (with
//!   `Expand` repeating key/value heads for grouped queries) is `attention(q, k, v, heads = ...)`;
//! - `ReduceMean`/`Sub`/`Pow`/`ReduceMean`/`Add(eps)`/`Sqrt`/`Div` [`Mul(weight)`] [`Add(bias)`]
//!   is `layer_norm`; the same without the mean is `rms_norm`;
//! - GELU in its erf and tanh forms is `gelu`, `x * Sigmoid(x)` is `silu`;
//! - rotary embeddings (`Slice`/`Neg`/`Concat` and the cos and sin tables of one theta) are `rope`,
//!   a slice of a position table added to the embeddings is `position_embedding`, and a `MatMul`
//!   by a transposed initializer is a `linear` layer that keeps the initializer's name.
//!
//! A pattern matches only when its constants are exactly the layer's (a scalar eps, a constant mask
//! that some causal and sparse pattern keeps exactly, tables of one theta) and nothing outside it
//! reads its intermediate values. The patterns are tried from the last node to the first, so that
//! the largest one that ends at a node wins (a layer norm with its bias, not without). Shapes are
//! known only during the translation: when they do not fit, the fused node is refused and its
//! original nodes, kept in [`Item::Fused`], are translated one by one instead.

use std::collections::{HashMap, HashSet};

use super::attributes as attr;
use super::fold;
use super::mask_pattern::{MaskPattern, mask_pattern};
use super::program::{Arg, Expr, Operand};
use super::tensor::{Constant, decode_tensor};
use super::translate::{Known, NodeError, Translator};
use crate::ir::SparsePattern;
use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::proto::{AttributeProto, GraphProto, NodeProto, attribute_proto::AttributeType};

/// The domain of the nodes that stand for recognized layers.
pub const DOMAIN: &str = "ai.nnc.recognized";

/// One step of the translation: an ONNX node, or a recognized layer with the nodes it replaces.
pub enum Item<'g> {
    Node(&'g NodeProto),
    Fused {
        node: Box<NodeProto>,
        /// The nodes the layer replaces, in graph order: the fallback when it cannot be translated.
        parts: Vec<&'g NodeProto>,
    },
}

/// The graph's nodes with the recognized layers in place of their parts.
pub fn recognize(graph: &GraphProto, opset: i64) -> Vec<Item<'_>> {
    let view = View::new(graph, opset);
    let count = graph.node.len();
    let mut taken = vec![false; count];
    // Nodes some match shares with others (an attention's mask): never another match's own.
    let mut shared = vec![false; count];
    let mut fused: HashMap<usize, (NodeProto, Vec<usize>, Vec<usize>)> = HashMap::new();
    for anchor in (0..count).rev() {
        if taken[anchor] {
            continue;
        }
        let matchers: [fn(&View<'_>, usize) -> Option<Found>; 8] = [
            attention,
            rope,
            layer_norm,
            rms_norm,
            gelu,
            silu,
            position_embedding,
            transposed_linear,
        ];
        let found = matchers
            .iter()
            .filter_map(|matcher| matcher(&view, anchor))
            .find(|found| view.is_closed(found, anchor, &taken, &shared));
        if let Some(Found {
            mut nodes,
            shared: mut shared_nodes,
            node,
        }) = found
        {
            nodes.sort_unstable();
            nodes.dedup();
            shared_nodes.retain(|index| !nodes.contains(index));
            for &index in &nodes {
                taken[index] = true;
            }
            for &index in &shared_nodes {
                shared[index] = true;
            }
            fused.insert(anchor, (node, nodes, shared_nodes));
        }
    }
    // Shared nodes are dropped where only dropped nodes read them (every attention that reads a
    // mask was recognized), else kept for their other readers.
    let dropped = view.droppable(&taken, &shared);
    let mut items = Vec::with_capacity(count);
    for (index, node) in graph.node.iter().enumerate() {
        if let Some((fused_node, mut parts, shared_parts)) = fused.remove(&index) {
            // The fallback computes the dropped shared nodes too (once: the translation skips a
            // node whose outputs it knows already).
            parts.extend(shared_parts.into_iter().filter(|&part| dropped[part]));
            parts.sort_unstable();
            items.push(Item::Fused {
                node: Box::new(fused_node),
                parts: parts.iter().map(|&part| &graph.node[part]).collect(),
            });
        } else if !taken[index] && !dropped[index] {
            items.push(Item::Node(node));
        }
    }
    items
}

/// Translates a node of [`DOMAIN`]. An `Unsupported` error means "translate the parts instead";
/// nothing is added to the program before every check has passed.
pub fn translate(translator: &mut Translator<'_>, node: &NodeProto) -> Result<(), NodeError> {
    let op = node.op_type.as_deref().unwrap_or("");
    let output = node.output.first().cloned().unwrap_or_default();
    let input = |index: usize| -> Result<Known, NodeError> {
        let name = node.input.get(index).filter(|name| !name.is_empty());
        let name = name.ok_or_else(|| NodeError::from(format!("{op} without input {index}")))?;
        translator
            .known
            .get(name)
            .cloned()
            .ok_or(NodeError::Skipped)
    };
    let tensor = |index: usize| -> Result<_, NodeError> {
        match input(index)? {
            Known::Tensor(value) => Ok(value),
            Known::Const(..) => Err(format!("{op}: input {index} is a constant").into()),
        }
    };
    let constant = |index: usize| -> Result<Option<(std::rc::Rc<Constant>, String)>, NodeError> {
        if node.input.get(index).is_none_or(|name| name.is_empty()) {
            return Ok(None);
        }
        match input(index)? {
            Known::Const(constant, name) => Ok(Some((constant, name))),
            Known::Tensor(_) => Err(format!("{op}: input {index} is not a constant").into()),
        }
    };
    match op {
        "Silu" | "Gelu" => {
            let x = tensor(0)?;
            if !translator.is_float(x) {
                return Err(format!("{op} of an integer tensor").into());
            }
            let mut args = vec![Arg::Value(x)];
            if attr::string(node, "approximate").as_deref() == Some("tanh") {
                args.push(Arg::keyword("approximate", Arg::Str("tanh")));
            }
            let function = if op == "Silu" { "silu" } else { "gelu" };
            let shape = translator.shape(x);
            translator.push(&output, call(function, args), None, shape, true);
            Ok(())
        }
        "LayerNorm" | "RmsNorm" => {
            let x = tensor(0)?;
            let shape = translator.shape(x);
            let axis = attr::int(node, "axis", -1);
            if shape.is_empty() || fold::axis(axis, shape.len())? + 1 != shape.len() {
                return Err(format!("{op} over axis {axis} of {shape:?}").into());
            }
            let features = shape[shape.len() - 1];
            let weight = constant(1)?;
            let bias = if op == "LayerNorm" {
                constant(2)?
            } else {
                None
            };
            for (constant, _) in weight.iter().chain(&bias) {
                if constant.len() != features {
                    return Err(format!(
                        "{op}: {:?} weights for {features} features",
                        constant.shape
                    )
                    .into());
                }
            }
            let eps = attr::float(node, "epsilon", 1e-5);
            let default_eps = if op == "LayerNorm" { 1e-5 } else { 1e-6 };
            let mut args = vec![Arg::Value(x)];
            if (eps - default_eps).abs() > default_eps * 1e-4 {
                args.push(Arg::keyword("eps", Arg::Float(eps)));
            }
            let vector = |values: Vec<f32>| Constant::f32(vec![features], values);
            let mut weights = Vec::new();
            let mut sources = Vec::new();
            match (&weight, &bias) {
                (None, None) => args.push(Arg::keyword("affine", Arg::Bool(false))),
                _ => {
                    let (scale, shift) = (weight.clone(), bias.clone());
                    let scale_values = scale
                        .as_ref()
                        .map_or(vec![1.0; features], |(c, _)| c.to_f32());
                    weights.push(("weight", vector(scale_values)));
                    sources.extend(scale.map(|(_, name)| name));
                    if op == "LayerNorm" {
                        let shift_values = shift
                            .as_ref()
                            .map_or(vec![0.0; features], |(c, _)| c.to_f32());
                        weights.push(("bias", vector(shift_values)));
                        sources.extend(shift.map(|(_, name)| name));
                    }
                }
            }
            let layer =
                (!weights.is_empty()).then(|| translator.layer(node, "norm", weights, sources));
            let function = if op == "LayerNorm" {
                "layer_norm"
            } else {
                "rms_norm"
            };
            translator.push(&output, call(function, args), layer, shape, true);
            Ok(())
        }
        "Attention" => translate_attention(translator, node, &output),
        "Rope" => {
            let x = tensor(0)?;
            let shape = translator.shape(x);
            let heads = attr::int(node, "heads", 0);
            let target = attr::ints(node, "split").unwrap_or_default();
            let split = fold::reshape_target(&shape, &target, false)?;
            let &[batch, seq, width] = shape.as_slice() else {
                return Err(format!("rope of {shape:?}").into());
            };
            let head_dim = width / (heads.max(1) as usize);
            if split != [batch, seq, heads as usize, head_dim]
                || attr::int(node, "positions", 0) != seq as i64
            {
                return Err(format!("rope of {shape:?} split as {split:?}").into());
            }
            let theta = attr::float(node, "theta", 10000.0);
            let mut args = vec![Arg::Value(x), Arg::Int(heads)];
            if theta != 10000.0 {
                args.push(Arg::keyword("theta", Arg::Float(theta)));
            }
            translator.push(&output, call("rope", args), None, shape, true);
            Ok(())
        }
        "PositionEmbedding" => {
            let x = tensor(0)?;
            let (table, table_name) = constant(1)?.ok_or("PositionEmbedding without a table")?;
            let shape = translator.shape(x);
            let positions = attr::int(node, "positions", 0) as usize;
            let &[count, dim] = table.shape.as_slice() else {
                return Err("a position table that is not 2-D".into());
            };
            if shape.len() != 3 || shape[1] != positions || shape[2] != dim || positions > count {
                return Err(format!(
                    "positions {positions} of a [{count}, {dim}] table added to {shape:?}"
                )
                .into());
            }
            let layer = translator.layer(
                node,
                "position_embedding",
                vec![("weight", Constant::f32(table.shape.clone(), table.to_f32()))],
                vec![table_name],
            );
            let args = vec![Arg::Value(x), Arg::Int(count as i64), Arg::Int(dim as i64)];
            let positions = translator.push(
                "",
                call("position_embedding", args),
                Some(layer),
                vec![1, positions, dim],
                true,
            );
            let sum = Expr::Binary {
                op: '+',
                lhs: Operand::Value(x),
                rhs: Operand::Value(positions),
            };
            translator.push(&output, sum, None, shape, true);
            Ok(())
        }
        "Linear" => {
            let x = tensor(0)?;
            let (weight, weight_name) = constant(1)?.ok_or("Linear without a weight")?;
            let mut shape = translator.shape(x);
            let &[out_features, in_features] = weight.shape.as_slice() else {
                return Err("a linear weight that is not 2-D".into());
            };
            if shape.len() < 2 || shape.last() != Some(&in_features) || !translator.is_float(x) {
                return Err(format!(
                    "a linear layer of {shape:?} by [{out_features}, {in_features}]"
                )
                .into());
            }
            *shape.last_mut().expect("rank >= 2") = out_features;
            let mut args = vec![
                Arg::Value(x),
                Arg::Int(out_features as i64),
                Arg::keyword("bias", Arg::Bool(false)),
            ];
            // A weight an earlier layer owns (an embedding table read again by the output
            // projection) is tied to it, as the source wrote it, rather than copied.
            let owner = translator
                .program
                .stmts
                .iter()
                .filter(|stmt| !stmt.dead)
                .filter_map(|stmt| stmt.layer.as_ref())
                .find(|layer| {
                    layer.sources.first() == Some(&weight_name)
                        && layer.weights.first().is_some_and(|(suffix, constant)| {
                            *suffix == "weight" && constant.shape == weight.shape
                        })
                })
                .map(|layer| layer.name.clone());
            let layer = match owner {
                Some(owner) => {
                    args.push(Arg::keyword("tied", Arg::Text(owner)));
                    translator.layer(node, "fc", vec![], vec![])
                }
                None => translator.layer(
                    node,
                    "fc",
                    vec![(
                        "weight",
                        Constant::f32(weight.shape.clone(), weight.to_f32()),
                    )],
                    vec![weight_name],
                ),
            };
            translator.push(&output, call("linear", args), Some(layer), shape, true);
            Ok(())
        }
        other => Err(format!("no recognized layer `{other}`").into()),
    }
}

fn translate_attention(
    translator: &mut Translator<'_>,
    node: &NodeProto,
    output: &str,
) -> Result<(), NodeError> {
    let mut values = Vec::new();
    for name in &node.input {
        match translator.known.get(name) {
            Some(Known::Tensor(value)) => values.push(*value),
            Some(Known::Const(..)) => return Err("an attention input is a constant".into()),
            None => return Err(NodeError::Skipped),
        }
    }
    let (q, k, v) = match values[..] {
        [q, k, v, ..] => (q, k, v),
        _ => return Err("an attention without q, k and v".into()),
    };
    let mask = values.get(3).copied();
    let heads = attr::int(node, "heads", 0) as usize;
    let kv_heads = attr::int(node, "kv_heads", 0) as usize;
    let head_dim = attr::int(node, "head_dim", 0) as usize;
    let (q_shape, k_shape, v_shape) = (
        translator.shape(q),
        translator.shape(k),
        translator.shape(v),
    );
    let (&[batch, queries, _], &[_, keys, _]) = (q_shape.as_slice(), k_shape.as_slice()) else {
        return Err(format!("attention of {q_shape:?} and {k_shape:?}").into());
    };
    let split = |shape: &[usize], target: &str, rows: usize, n_heads: usize| {
        let target = attr::ints(node, target).unwrap_or_default();
        fold::reshape_target(shape, &target, false)
            .is_ok_and(|split| split == [batch, rows, n_heads, head_dim])
    };
    let fits = heads > 0
        && kv_heads > 0
        && heads.is_multiple_of(kv_heads)
        && q_shape == [batch, queries, heads * head_dim]
        && k_shape == [batch, keys, kv_heads * head_dim]
        && v_shape == k_shape
        && split(&q_shape, "q_split", queries, heads)
        && split(&k_shape, "k_split", keys, kv_heads)
        && split(&v_shape, "v_split", keys, kv_heads)
        && fold::reshape_target(
            &[batch, queries, heads, head_dim],
            &attr::ints(node, "merge").unwrap_or_default(),
            false,
        )
        .is_ok_and(|merged| merged == q_shape);
    if !fits {
        return Err(format!(
            "attention of q {q_shape:?}, k {k_shape:?}, v {v_shape:?} in {heads} heads"
        )
        .into());
    }
    let causal = attr::int(node, "causal", 0);
    if causal != 0 && (causal as usize != queries || queries != keys) {
        return Err(format!(
            "a causal mask of {causal} positions for {queries} queries and {keys} keys"
        )
        .into());
    }
    if let Some(mask) = mask {
        let mask_shape = translator.shape(mask);
        let target = attr::ints(node, "mask_split").unwrap_or_default();
        let reshaped = fold::reshape_target(&mask_shape, &target, false);
        if mask_shape != [batch, keys] || !reshaped.is_ok_and(|shape| shape == [batch, 1, 1, keys])
        {
            return Err(format!("a key padding mask of {mask_shape:?} for {keys} keys").into());
        }
    }
    let mut args = vec![
        Arg::Value(q),
        Arg::Value(k),
        Arg::Value(v),
        Arg::keyword("heads", Arg::Int(heads as i64)),
    ];
    if kv_heads != heads {
        args.push(Arg::keyword("kv_heads", Arg::Int(kv_heads as i64)));
    }
    if causal != 0 {
        args.push(Arg::keyword("causal", Arg::Bool(true)));
    }
    args.extend(pattern_arguments(node, queries, keys)?);
    if let Some(mask) = mask {
        args.push(Arg::keyword("mask", Arg::Value(mask)));
    }
    let scale = attr::float(node, "scale", 1.0);
    let default_scale = 1.0 / (head_dim as f32).sqrt();
    if (scale - default_scale).abs() > default_scale * 1e-6 {
        args.push(Arg::keyword("scale", Arg::Float(scale)));
    }
    translator.push(output, call("attention", args), None, q_shape, true);
    Ok(())
}

/// A match: the nodes it replaces (the anchor included) and the node that replaces them.
struct Found {
    nodes: Vec<usize>,
    /// Nodes it replaces that other matches may read too: an attention's mask, which a Hugging
    /// Face model computes once for every layer. They are dropped when only replaced nodes read
    /// them.
    shared: Vec<usize>,
    node: NodeProto,
}

/// The graph, indexed for matching.
struct View<'g> {
    nodes: &'g [NodeProto],
    /// The node that computes each name.
    producer: HashMap<&'g str, usize>,
    /// How many times each name is read, by nodes and as a graph output.
    uses: HashMap<&'g str, usize>,
    /// Initializers, `Constant` nodes and small constant expressions.
    constants: HashMap<&'g str, Constant>,
    initializers: HashSet<&'g str>,
    opset: i64,
}

/// Constant expressions are evaluated here only up to this many input elements: patterns need
/// scalars, shapes and masks, not weights.
const SMALL: usize = 1 << 16;

impl<'g> View<'g> {
    fn new(graph: &'g GraphProto, opset: i64) -> Self {
        let mut view = View {
            nodes: &graph.node,
            producer: HashMap::new(),
            uses: HashMap::new(),
            constants: HashMap::new(),
            initializers: HashSet::new(),
            opset,
        };
        for initializer in &graph.initializer {
            let name = initializer.name.as_deref().unwrap_or("");
            if let Ok(constant) = decode_tensor(initializer) {
                view.constants.insert(name, constant);
                view.initializers.insert(name);
            }
        }
        for (index, node) in graph.node.iter().enumerate() {
            for output in node.output.iter().filter(|name| !name.is_empty()) {
                view.producer.insert(output, index);
            }
            for input in node.input.iter().filter(|name| !name.is_empty()) {
                *view.uses.entry(input).or_insert(0) += 1;
            }
            view.evaluate(node);
        }
        for output in &graph.output {
            *view
                .uses
                .entry(output.name.as_deref().unwrap_or(""))
                .or_insert(0) += 1;
        }
        view
    }

    /// Records the value of a `Constant` node, or of a small foldable node on constants.
    fn evaluate(&mut self, node: &'g NodeProto) {
        let op = node.op_type.as_deref().unwrap_or("");
        let Some(output) = node.output.first() else {
            return;
        };
        if op == "Constant" {
            let constant = if let Some(tensor) = attr::tensor(node, "value") {
                decode_tensor(tensor).ok()
            } else if attr::has(node, "value_float") {
                Some(Constant::f32(
                    vec![],
                    vec![attr::float(node, "value_float", 0.0)],
                ))
            } else if let Some(values) = attr::ints(node, "value_ints").filter(|v| !v.is_empty()) {
                Some(Constant::i64(vec![values.len()], values))
            } else if attr::has(node, "value_int") {
                Some(Constant::i64(vec![], vec![attr::int(node, "value_int", 0)]))
            } else {
                None
            };
            if let Some(constant) = constant {
                self.constants.insert(output, constant);
            }
            return;
        }
        if !fold::FOLDABLE.contains(&op) || node.domain.as_deref().is_some_and(|d| !d.is_empty()) {
            return;
        }
        let mut inputs = Vec::new();
        let mut elements = 0;
        for name in &node.input {
            if name.is_empty() {
                inputs.push(None);
                continue;
            }
            let Some(constant) = self.constants.get(name.as_str()) else {
                return;
            };
            elements += constant.len();
            inputs.push(Some(constant));
        }
        if elements > SMALL || inputs.is_empty() {
            return;
        }
        if let Ok(mut outputs) = fold::fold(node, self.opset, &inputs)
            && outputs.len() == 1
        {
            self.constants.insert(output, outputs.remove(0));
        }
    }

    fn op(&self, index: usize) -> &str {
        self.nodes[index].op_type.as_deref().unwrap_or("")
    }

    fn inputs(&self, index: usize) -> &'g [String] {
        &self.nodes[index].input
    }

    fn output(&self, index: usize) -> &'g str {
        self.nodes[index].output.first().map_or("", String::as_str)
    }

    /// The node of type `op` (default domain) that computes `name`, when it computes nothing else
    /// that is read.
    fn producer(&self, name: &str, op: &str) -> Option<usize> {
        let index = *self.producer.get(name)?;
        let node = &self.nodes[index];
        let extra_outputs = node
            .output
            .iter()
            .skip(1)
            .any(|output| self.uses.get(output.as_str()).is_some_and(|&n| n > 0));
        (self.op(index) == op
            && node.domain.as_deref().unwrap_or("").is_empty()
            && !extra_outputs
            && node.output.first().map(String::as_str) == Some(name))
        .then_some(index)
    }

    fn constant(&self, name: &str) -> Option<&Constant> {
        self.constants.get(name)
    }

    fn scalar(&self, name: &str) -> Option<f32> {
        self.constant(name).and_then(Constant::scalar_f32)
    }

    fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.constant(name).map(Constant::to_i64)
    }

    /// The two inputs of a binary node.
    fn pair(&self, index: usize) -> Option<(&'g str, &'g str)> {
        match self.inputs(index) {
            [a, b] => Some((a.as_str(), b.as_str())),
            _ => None,
        }
    }

    /// For a commutative binary node with one scalar constant input: the other input and the
    /// scalar.
    fn with_scalar(&self, index: usize) -> Option<(&'g str, f32)> {
        let (a, b) = self.pair(index)?;
        match (self.scalar(a), self.scalar(b)) {
            (None, Some(value)) => Some((a, value)),
            (Some(value), None) => Some((b, value)),
            _ => None,
        }
    }

    /// For a binary node with one constant input (of any shape): the other input and the constant's
    /// name.
    fn with_constant(&self, index: usize) -> Option<(&'g str, &'g str)> {
        let (a, b) = self.pair(index)?;
        match (
            self.constants.contains_key(a),
            self.constants.contains_key(b),
        ) {
            (false, true) => Some((a, b)),
            (true, false) => Some((b, a)),
            _ => None,
        }
    }

    /// `Reshape(x, target)` with a constant target: `x` and the target.
    fn reshape(&self, name: &str) -> Option<(usize, &'g str, Vec<i64>)> {
        let index = self.producer(name, "Reshape")?;
        let (x, target) = self.pair(index)?;
        Some((index, x, self.ints(target)?))
    }

    /// `Transpose(x)` with the permutation `perm`: the node and `x`.
    fn transpose(&self, name: &str, perm: &[i64]) -> Option<(usize, &'g str)> {
        let index = self.producer(name, "Transpose")?;
        (attr::ints(&self.nodes[index], "perm")? == perm)
            .then(|| (index, self.inputs(index)[0].as_str()))
    }

    /// The single axis a `ReduceMean` keeping its dimensions reduces.
    fn reduce_axis(&self, index: usize) -> Option<i64> {
        let node = &self.nodes[index];
        if attr::int(node, "keepdims", 1) != 1 {
            return None;
        }
        let axes = match attr::ints(node, "axes") {
            Some(axes) => axes,
            None => self.ints(self.inputs(index).get(1)?)?,
        };
        match axes[..] {
            [axis] => Some(axis),
            _ => None,
        }
    }

    /// Whether `found` may replace its nodes: none taken by a larger pattern, and nothing outside
    /// it reads what its nodes other than the anchor compute.
    fn is_closed(&self, found: &Found, anchor: usize, taken: &[bool], shared: &[bool]) -> bool {
        if found
            .nodes
            .iter()
            .any(|&index| taken[index] || shared[index])
            || found.shared.iter().any(|&index| taken[index])
            || !found.nodes.contains(&anchor)
        {
            return false;
        }
        let mut reads: HashMap<&str, usize> = HashMap::new();
        for &index in found.nodes.iter().chain(&found.shared) {
            for input in self.inputs(index) {
                *reads.entry(input.as_str()).or_insert(0) += 1;
            }
        }
        found
            .nodes
            .iter()
            .filter(|&&index| index != anchor)
            .all(|&index| {
                self.nodes[index].output.iter().all(|output| {
                    let uses = self.uses.get(output.as_str()).copied().unwrap_or(0);
                    uses == reads.get(output.as_str()).copied().unwrap_or(0)
                })
            })
    }

    /// The shared nodes whose outputs only taken or droppable nodes read (none a graph output).
    fn droppable(&self, taken: &[bool], shared: &[bool]) -> Vec<bool> {
        let mut readers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (index, node) in self.nodes.iter().enumerate() {
            for input in &node.input {
                readers.entry(input.as_str()).or_default().push(index);
            }
        }
        let mut dropped = shared.to_vec();
        // Undrop a node with another reader until nothing changes.
        let mut changed = true;
        while changed {
            changed = false;
            for index in 0..self.nodes.len() {
                if !dropped[index] {
                    continue;
                }
                let kept_reader = self.nodes[index].output.iter().any(|output| {
                    let node_reads = readers.get(output.as_str()).map_or(0, Vec::len);
                    let uses = self.uses.get(output.as_str()).copied().unwrap_or(0);
                    uses > node_reads
                        || readers.get(output.as_str()).is_some_and(|readers| {
                            readers.iter().any(|&r| !taken[r] && !dropped[r])
                        })
                });
                if kept_reader {
                    dropped[index] = false;
                    changed = true;
                }
            }
        }
        dropped
    }
}

fn close(value: f32, expected: f32) -> bool {
    (value - expected).abs() <= expected.abs() * 1e-5 + 1e-7
}

fn call(function: &'static str, args: Vec<Arg>) -> Expr {
    Expr::Call { function, args }
}

/// A node of [`DOMAIN`] computing the anchor's output.
fn fused(
    op: &str,
    inputs: &[&str],
    anchor: &NodeProto,
    attributes: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|name| name.to_string()).collect(),
        output: anchor.output.iter().take(1).cloned().collect(),
        name: anchor.name.clone(),
        op_type: Some(op.to_string()),
        domain: Some(DOMAIN.to_string()),
        attribute: attributes,
        ..Default::default()
    }
}

fn int_attribute(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(value),
        ..Default::default()
    }
}

fn ints_attribute(name: &str, values: Vec<i64>) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: values,
        ..Default::default()
    }
}

fn float_attribute(name: &str, value: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(value),
        ..Default::default()
    }
}

fn string_attribute(name: &str, value: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::String as i32),
        s: Some(value.as_bytes().to_vec()),
        ..Default::default()
    }
}

/// `x * Sigmoid(x)`.
fn silu(view: &View<'_>, anchor: usize) -> Option<Found> {
    if view.op(anchor) != "Mul" {
        return None;
    }
    let (a, b) = view.pair(anchor)?;
    [(a, b), (b, a)].into_iter().find_map(|(x, gate)| {
        let sigmoid = view.producer(gate, "Sigmoid")?;
        (view.inputs(sigmoid).first().map(String::as_str) == Some(x)).then(|| Found {
            shared: Vec::new(),
            nodes: vec![sigmoid, anchor],
            node: fused("Silu", &[x], &view.nodes[anchor], vec![]),
        })
    })
}

/// `x · 0.5 · (1 + erf(x / √2))` or the tanh form, `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))`,
/// with the halving first or last.
fn gelu(view: &View<'_>, anchor: usize) -> Option<Found> {
    if view.op(anchor) != "Mul" {
        return None;
    }
    let (a, b) = view.pair(anchor)?;
    let mut candidates = Vec::new();
    // Mul(Mul(x, 1 + f), 0.5)
    if let Some((product, half)) = view.with_scalar(anchor)
        && close(half, 0.5)
        && let Some(multiply) = view.producer(product, "Mul")
        && let Some((u, w)) = view.pair(multiply)
    {
        candidates.push((u, w, vec![multiply, anchor]));
        candidates.push((w, u, vec![multiply, anchor]));
    }
    // Mul(Mul(x, 0.5), 1 + f)
    for (halved, shifted) in [(a, b), (b, a)] {
        if let Some(halving) = view.producer(halved, "Mul")
            && let Some((x, half)) = view.with_scalar(halving)
            && close(half, 0.5)
        {
            candidates.push((x, shifted, vec![halving, anchor]));
        }
    }
    candidates.into_iter().find_map(|(x, shifted, mut nodes)| {
        let (core, approximate) = gelu_core(view, x, shifted)?;
        nodes.extend(core);
        let attributes = match approximate {
            "tanh" => vec![string_attribute("approximate", "tanh")],
            _ => vec![],
        };
        Some(Found {
            shared: Vec::new(),
            nodes,
            node: fused("Gelu", &[x], &view.nodes[anchor], attributes),
        })
    })
}

/// `1 + erf(x / √2)` or `1 + tanh(√(2/π) (x + 0.044715 x³))`: its nodes and the approximation.
fn gelu_core(view: &View<'_>, x: &str, shifted: &str) -> Option<(Vec<usize>, &'static str)> {
    let add = view.producer(shifted, "Add")?;
    let (inner, one) = view.with_scalar(add)?;
    if !close(one, 1.0) {
        return None;
    }
    if let Some(erf) = view.producer(inner, "Erf") {
        let argument = view.inputs(erf).first()?;
        if let Some(divide) = view.producer(argument, "Div")
            && let Some((numerator, root)) = view.pair(divide)
            && numerator == x
            && view
                .scalar(root)
                .is_some_and(|r| close(r, std::f32::consts::SQRT_2))
        {
            return Some((vec![add, erf, divide], "none"));
        }
        if let Some(multiply) = view.producer(argument, "Mul")
            && let Some((operand, factor)) = view.with_scalar(multiply)
            && operand == x
            && close(factor, std::f32::consts::FRAC_1_SQRT_2)
        {
            return Some((vec![add, erf, multiply], "none"));
        }
        return None;
    }
    let tanh = view.producer(inner, "Tanh")?;
    let scaled = view.producer(view.inputs(tanh).first()?, "Mul")?;
    let (sum, beta) = view.with_scalar(scaled)?;
    if !close(beta, (2.0 / std::f32::consts::PI).sqrt()) {
        return None;
    }
    let sum_node = view.producer(sum, "Add")?;
    let (p, q) = view.pair(sum_node)?;
    let term = if p == x {
        q
    } else if q == x {
        p
    } else {
        return None;
    };
    let term_node = view.producer(term, "Mul")?;
    let (cube, kappa) = view.with_scalar(term_node)?;
    if !close(kappa, 0.044_715) {
        return None;
    }
    let mut nodes = vec![add, tanh, scaled, sum_node, term_node];
    if let Some(power) = view.producer(cube, "Pow") {
        let (base, exponent) = view.pair(power)?;
        if base != x || view.scalar(exponent) != Some(3.0) {
            return None;
        }
        nodes.push(power);
    } else {
        let cube_node = view.producer(cube, "Mul")?;
        let (p, q) = view.pair(cube_node)?;
        let square = if p == x {
            q
        } else if q == x {
            p
        } else {
            return None;
        };
        let square_node = view.producer(square, "Mul")?;
        if view.pair(square_node)? != (x, x) {
            return None;
        }
        nodes.extend([cube_node, square_node]);
    }
    Some((nodes, "tanh"))
}

/// `(x - mean) / sqrt(mean((x - mean)²) + eps)`, then `* weight` and `+ bias` when present.
fn layer_norm(view: &View<'_>, anchor: usize) -> Option<Found> {
    let (mut nodes, weight, bias, divide) = affine_tail(view, anchor)?;
    if view.op(divide) != "Div" {
        return None;
    }
    let (centered, deviation) = view.pair(divide)?;
    let subtract = view.producer(centered, "Sub")?;
    let (x, mean) = view.pair(subtract)?;
    let first_mean = view.producer(mean, "ReduceMean")?;
    if view.inputs(first_mean).first().map(String::as_str) != Some(x) {
        return None;
    }
    let axis = view.reduce_axis(first_mean)?;
    let (variance_nodes, variance_axis, eps) = root_mean_square(view, deviation, centered)?;
    if variance_axis != axis {
        return None;
    }
    nodes.extend([divide, subtract, first_mean]);
    nodes.extend(variance_nodes);
    let attributes = vec![float_attribute("epsilon", eps), int_attribute("axis", axis)];
    Some(Found {
        shared: Vec::new(),
        nodes,
        node: fused(
            "LayerNorm",
            &[x, weight.unwrap_or(""), bias.unwrap_or("")],
            &view.nodes[anchor],
            attributes,
        ),
    })
}

/// `x / sqrt(mean(x²) + eps)` (or `x * Reciprocal(sqrt(..))`), then `* weight` when present.
fn rms_norm(view: &View<'_>, anchor: usize) -> Option<Found> {
    let (mut nodes, weight, bias, normalized) = affine_tail(view, anchor)?;
    if bias.is_some() {
        return None;
    }
    let (x, root) = match view.op(normalized) {
        "Div" => view.pair(normalized)?,
        "Mul" => {
            let (a, b) = view.pair(normalized)?;
            let (x, reciprocal) = [(a, b), (b, a)]
                .into_iter()
                .find_map(|(x, r)| Some((x, view.producer(r, "Reciprocal")?)))?;
            nodes.push(reciprocal);
            (x, view.inputs(reciprocal).first()?.as_str())
        }
        _ => return None,
    };
    nodes.push(normalized);
    let (root_nodes, axis, eps) = root_mean_square(view, root, x)?;
    nodes.extend(root_nodes);
    let attributes = vec![float_attribute("epsilon", eps), int_attribute("axis", axis)];
    Some(Found {
        shared: Vec::new(),
        nodes,
        node: fused(
            "RmsNorm",
            &[x, weight.unwrap_or("")],
            &view.nodes[anchor],
            attributes,
        ),
    })
}

/// The end of a normalization: `[Add(·, bias)]` after `[Mul(·, weight)]` after the normalizing node
/// (a `Div`, or the `Mul` by a reciprocal). Returns the affine nodes, the weight and bias names, and
/// the normalizing node.
#[allow(clippy::type_complexity)]
fn affine_tail<'g>(
    view: &View<'g>,
    anchor: usize,
) -> Option<(Vec<usize>, Option<&'g str>, Option<&'g str>, usize)> {
    let mut nodes = Vec::new();
    let mut current = anchor;
    let mut bias = None;
    let mut weight = None;
    if view.op(current) == "Add" {
        let (y, b) = view.with_constant(current)?;
        bias = Some(b);
        nodes.push(current);
        current = view.producer(y, "Mul")?;
    }
    if view.op(current) == "Mul"
        && let Some((n, w)) = view.with_constant(current)
        && view.scalar(w).is_none()
    {
        weight = Some(w);
        nodes.push(current);
        current = *view.producer.get(n)?;
        if !matches!(view.op(current), "Div" | "Mul") || view.output(current) != n {
            return None;
        }
    } else if bias.is_some() {
        return None;
    }
    Some((nodes, weight, bias, current))
}

/// `sqrt(mean(x²) + eps)` computed as `root`: its nodes, the axis and eps.
fn root_mean_square(view: &View<'_>, root: &str, x: &str) -> Option<(Vec<usize>, i64, f32)> {
    let sqrt = view.producer(root, "Sqrt")?;
    let add = view.producer(view.inputs(sqrt).first()?, "Add")?;
    let (mean, eps) = view.with_scalar(add)?;
    let reduce = view.producer(mean, "ReduceMean")?;
    let axis = view.reduce_axis(reduce)?;
    let squares = view.inputs(reduce).first()?;
    let square = if let Some(power) = view.producer(squares, "Pow") {
        let (base, exponent) = view.pair(power)?;
        (base == x && view.scalar(exponent) == Some(2.0)).then_some(power)?
    } else {
        let product = view.producer(squares, "Mul")?;
        (view.pair(product)? == (x, x)).then_some(product)?
    };
    (eps >= 0.0 && eps.is_finite()).then_some((vec![sqrt, add, reduce, square], axis, eps))
}

/// The additive mask of an attention.
#[derive(Default)]
struct Mask<'g> {
    nodes: Vec<usize>,
    /// The constant part: its `[queries, keys]` and the causal mask and sparse pattern it keeps.
    constant: Option<(usize, usize, MaskPattern)>,
    /// The key padding mask input and the target of the `Reshape` to `[batch, 1, 1, keys]`.
    padding: Option<(&'g str, Vec<i64>)>,
}

impl<'g> Mask<'g> {
    /// The key padding mask that `nodes` compute from the tensor `mask` (`Reshape`d by
    /// `target`); none when `mask` is a constant.
    fn padding(
        view: &View<'g>,
        nodes: Vec<usize>,
        mask: &'g str,
        target: Vec<i64>,
    ) -> Option<Self> {
        (!view.constants.contains_key(mask)).then_some(Mask {
            nodes,
            constant: None,
            padding: Some((mask, target)),
        })
    }
}

/// A masked-out score: the most negative f32, `-inf`, or anything below -10⁴.
fn is_masked(value: f32) -> bool {
    value <= -1e4
}

/// The additive mask `name`: a constant (all zeros, or 0 where kept and masked elsewhere in the
/// pairs of a causal mask and/or a sparse pattern), a key padding mask, or the `Min` of such a
/// constant and a padding mask.
fn additive_mask<'g>(view: &View<'g>, name: &'g str) -> Option<Mask<'g>> {
    if let Some(constant) = view.constant(name) {
        let shape = &constant.shape;
        let (queries, keys) = match shape[..] {
            [q, k] | [1, q, k] | [1, 1, q, k] => (q, k),
            _ => return None,
        };
        let values = constant.to_f32();
        if values.iter().all(|&v| v == 0.0) {
            return Some(Mask::default());
        }
        let keep: Option<Vec<bool>> = values
            .iter()
            .map(|&value| {
                if value == 0.0 {
                    Some(true)
                } else {
                    is_masked(value).then_some(false)
                }
            })
            .collect();
        let pattern = mask_pattern(&keep?, queries, keys)?;
        return Some(Mask {
            constant: Some((queries, keys, pattern)),
            ..Default::default()
        });
    }
    if let Some(minimum) = view.producer(name, "Min") {
        let (a, b) = view.pair(minimum)?;
        return [(a, b), (b, a)].into_iter().find_map(|(first, second)| {
            let constant = additive_mask(view, first)?;
            let padding = padding_mask(view, second)?;
            constant.constant.as_ref()?;
            let mut nodes = constant.nodes;
            nodes.extend(padding.nodes);
            nodes.push(minimum);
            Some(Mask {
                nodes,
                constant: constant.constant,
                padding: padding.padding,
            })
        });
    }
    padding_mask(view, name)
        .or_else(|| hugging_face_padding_mask(view, name))
        .or_else(|| hugging_face_expanded_mask(view, name))
}

/// `Reshape(Where(Equal(mask, 0), MASKED, 0), [batch, 1, 1, keys])`.
fn padding_mask<'g>(view: &View<'g>, name: &'g str) -> Option<Mask<'g>> {
    let (reshape, additive, target) = view.reshape(name)?;
    let select = view.producer(additive, "Where")?;
    let [condition, masked, kept] = view.inputs(select) else {
        return None;
    };
    if !view.scalar(masked).is_some_and(is_masked) || view.scalar(kept) != Some(0.0) {
        return None;
    }
    let equal = view.producer(condition, "Equal")?;
    let (mask, zero) = view.pair(equal)?;
    if view
        .constant(zero)
        .and_then(|c| c.to_f32().first().copied())
        != Some(0.0)
        || view.constant(zero)?.len() != 1
        || view.constants.contains_key(mask)
    {
        return None;
    }
    Some(Mask {
        nodes: vec![reshape, select, equal],
        constant: None,
        padding: Some((mask, target)),
    })
}

/// Hugging Face's form, `(1.0 - Cast(mask)) * MIN` (BERT's `get_extended_attention_mask`), with
/// the mask made `[batch, 1, 1, keys]` by `Unsqueeze` or `Reshape` before the `Cast` or after the
/// `Mul`. For a mask of 0s and 1s it masks what `Where(Equal(mask, 0), MIN, 0)` masks.
fn hugging_face_padding_mask<'g>(view: &View<'g>, name: &'g str) -> Option<Mask<'g>> {
    let (mut nodes, product, outer_target) = match key_rows(view, name) {
        Some((nodes, x, target)) => (nodes, x, Some(target)),
        None => (Vec::new(), name, None),
    };
    let multiply = view.producer(product, "Mul")?;
    let (inverted, minimum) = view.with_scalar(multiply)?;
    if !is_masked(minimum) {
        return None;
    }
    let subtract = view.producer(inverted, "Sub")?;
    let (one, mut mask) = view.pair(subtract)?;
    if view.scalar(one) != Some(1.0) {
        return None;
    }
    nodes.extend([multiply, subtract]);
    if let Some(cast) = view.producer(mask, "Cast") {
        if attr::int(&view.nodes[cast], "to", 0) != DataType::Float as i64 {
            return None;
        }
        nodes.push(cast);
        mask = view.inputs(cast).first()?;
    }
    let target = match (outer_target, key_rows(view, mask)) {
        (Some(target), None) => target,
        (None, Some((inner_nodes, x, target))) => {
            nodes.extend(inner_nodes);
            mask = x;
            target
        }
        _ => return None,
    };
    Mask::padding(view, nodes, mask, target)
}

/// Newer Hugging Face models' form (`_prepare_4d_attention_mask`): the mask made `[batch, 1, 1,
/// keys]` by `Unsqueeze`s or a `Reshape`, `Expand`ed to `[batch, 1, queries, keys]` and `Cast` to
/// float (in either order), `inverted = 1.0 - m`, then `Where(Cast(inverted, bool), MIN,
/// inverted)`. For a mask of 0s and 1s it masks what `Where(Equal(mask, 0), MIN, 0)` masks; the
/// `Expand` only repeats the mask over the queries, as adding it to the scores does.
fn hugging_face_expanded_mask<'g>(view: &View<'g>, name: &'g str) -> Option<Mask<'g>> {
    let select = view.producer(name, "Where")?;
    let [condition, masked, inverted] = view.inputs(select) else {
        return None;
    };
    if !view.scalar(masked).is_some_and(is_masked) {
        return None;
    }
    let to_bool = view.producer(condition, "Cast")?;
    if attr::int(&view.nodes[to_bool], "to", 0) != DataType::Bool as i64
        || view.inputs(to_bool).first() != Some(inverted)
    {
        return None;
    }
    let subtract = view.producer(inverted, "Sub")?;
    let (one, mut mask) = view.pair(subtract)?;
    if view.scalar(one) != Some(1.0) {
        return None;
    }
    let mut nodes = vec![select, to_bool, subtract];
    let (mut cast_seen, mut expand_seen) = (false, false);
    loop {
        if let Some(cast) = view.producer(mask, "Cast").filter(|_| !cast_seen) {
            if attr::int(&view.nodes[cast], "to", 0) != DataType::Float as i64 {
                return None;
            }
            cast_seen = true;
            nodes.push(cast);
            mask = view.inputs(cast).first()?;
        } else if let Some(expand) = view.producer(mask, "Expand").filter(|_| !expand_seen) {
            let (x, shape) = view.pair(expand)?;
            if view.ints(shape)?.len() != 4 {
                return None;
            }
            expand_seen = true;
            nodes.push(expand);
            mask = x;
        } else {
            break;
        }
    }
    if !cast_seen {
        return None;
    }
    let (inner_nodes, mask, target) = key_rows(view, mask)?;
    nodes.extend(inner_nodes);
    Mask::padding(view, nodes, mask, target)
}

/// A mask `[batch, keys]` made `[batch, 1, 1, keys]`: `Reshape(x, target)`, or `Unsqueeze`s that
/// insert axes 1 and 2 (written as the `Reshape` target `[0, 1, 1, -1]`). Returns the nodes, `x`
/// and the target; the translation checks the shapes.
fn key_rows<'g>(view: &View<'g>, name: &'g str) -> Option<(Vec<usize>, &'g str, Vec<i64>)> {
    if let Some((reshape, x, target)) = view.reshape(name) {
        return Some((vec![reshape], x, target));
    }
    // The unsqueezes from the last to the first, then the axes they insert, first to last.
    let mut nodes = Vec::new();
    let mut x = name;
    while let Some(unsqueeze) = view.producer(x, "Unsqueeze") {
        nodes.push(unsqueeze);
        x = view.inputs(unsqueeze).first()?;
    }
    if nodes.is_empty() {
        return None;
    }
    // Symbolic dimensions: 0 is batch, 1 is keys, None an inserted 1.
    let mut dims = vec![Some(0), Some(1)];
    for &unsqueeze in nodes.iter().rev() {
        let node = &view.nodes[unsqueeze];
        let axes = match attr::ints(node, "axes") {
            Some(axes) => axes,
            None => view.ints(view.inputs(unsqueeze).get(1)?)?,
        };
        let rank = (dims.len() + axes.len()) as i64;
        let mut axes: Vec<i64> = axes
            .iter()
            .map(|&axis| if axis < 0 { axis + rank } else { axis })
            .collect();
        axes.sort_unstable();
        for axis in axes {
            if axis < 0 || axis as usize > dims.len() {
                return None;
            }
            dims.insert(axis as usize, None);
        }
    }
    (dims == [Some(0), None, None, Some(1)]).then(|| (nodes, x, vec![0, 1, 1, -1]))
}

/// Heads split from `[batch, rows, heads * head_dim]`: `Transpose(Reshape(x, [.., heads,
/// head_dim]), perm)`. Returns the nodes, `x`, the reshape target, heads and head_dim.
#[allow(clippy::type_complexity)]
fn split_heads<'g>(
    view: &View<'g>,
    name: &str,
    perm: &[i64],
) -> Option<(Vec<usize>, &'g str, Vec<i64>, i64, i64)> {
    let (transpose, split) = view.transpose(name, perm)?;
    let (reshape, x, target) = view.reshape(split)?;
    let &[_, _, heads, head_dim] = target.as_slice() else {
        return None;
    };
    (heads > 0 && head_dim > 0)
        .then(|| (vec![transpose, reshape], x, target.clone(), heads, head_dim))
}

/// Key/value heads repeated for grouped queries: `Reshape(Expand(Reshape(x, [b, kv, 1, r, c]),
/// [b, kv, group, r, c]), [b, heads, r, c])`. Returns the nodes, `x` and the group size (1 and
/// no nodes when `name` is not repeated).
fn repeated_heads<'g>(view: &View<'g>, name: &'g str) -> (Vec<usize>, &'g str, i64) {
    let repeated = || -> Option<(Vec<usize>, &'g str, i64)> {
        let (merge, expanded, _) = view.reshape(name)?;
        let expand = view.producer(expanded, "Expand")?;
        let (grouped, shape) = view.pair(expand)?;
        let shape = view.ints(shape)?;
        let (group_reshape, x, target) = view.reshape(grouped)?;
        match (&target[..], &shape[..]) {
            (&[_, _, 1, _, _], &[_, _, group, _, _]) if group > 0 => {
                Some((vec![merge, expand, group_reshape], x, group))
            }
            _ => None,
        }
    };
    repeated().unwrap_or((vec![], name, 1))
}

/// Scaled dot-product attention over heads, as `nnc export` writes it and PyTorch exports it.
fn attention(view: &View<'_>, anchor: usize) -> Option<Found> {
    if view.op(anchor) != "Reshape" {
        return None;
    }
    let (merged, merge_target) = view.pair(anchor)?;
    let merge_target = view.ints(merge_target)?;
    let (transpose, context) = view.transpose(merged, &[0, 2, 1, 3])?;
    let product = view.producer(context, "MatMul")?;
    let (probabilities, values) = view.pair(product)?;
    let mut nodes = vec![anchor, transpose, product];

    // The probabilities, possibly multiplied by `Cast(Equal(additive, 0))` to zero empty rows.
    let mut kept_mask = None;
    let softmax = match view.producer(probabilities, "Softmax") {
        Some(softmax) => softmax,
        None => {
            let multiply = view.producer(probabilities, "Mul")?;
            let (a, b) = view.pair(multiply)?;
            let (softmax, cast, equal, additive) =
                [(a, b), (b, a)].into_iter().find_map(|(p, keep)| {
                    let softmax = view.producer(p, "Softmax")?;
                    let cast = view.producer(keep, "Cast")?;
                    let equal = view.producer(view.inputs(cast).first()?, "Equal")?;
                    let (additive, zero) = view.with_scalar(equal)?;
                    (zero == 0.0).then_some((softmax, cast, equal, additive))
                })?;
            nodes.extend([multiply, cast, equal]);
            kept_mask = Some(additive);
            softmax
        }
    };
    let default_axis = if view.opset < 13 { 1 } else { -1 };
    if !matches!(
        attr::int(&view.nodes[softmax], "axis", default_axis),
        -1 | 3
    ) {
        return None;
    }
    nodes.push(softmax);
    let mut scores = view.inputs(softmax).first()?.as_str();

    let mut mask = Mask::default();
    let mut additive_name = None;
    if let Some(add) = view.producer(scores, "Add") {
        let (a, b) = view.pair(add)?;
        let (raw, found) = [(a, b), (b, a)]
            .into_iter()
            .find_map(|(raw, additive)| Some((raw, additive_mask(view, additive)?, additive)))
            .map(|(raw, found, additive)| {
                additive_name = Some(additive);
                (raw, found)
            })?;
        nodes.push(add);
        mask = found;
        scores = raw;
    }
    if kept_mask.is_some() && kept_mask != additive_name {
        return None;
    }

    let mut scale = 1.0;
    if let Some(multiply) = view.producer(scores, "Mul")
        && let Some((raw, factor)) = view.with_scalar(multiply)
    {
        nodes.push(multiply);
        scale = factor;
        scores = raw;
    } else if let Some(divide) = view.producer(scores, "Div")
        && let Some((raw, divisor)) = view.pair(divide)
        && let Some(divisor) = view.scalar(divisor).filter(|&d| d > 0.0)
    {
        nodes.push(divide);
        scale = 1.0 / divisor;
        scores = raw;
    }
    let scores_product = view.producer(scores, "MatMul")?;
    let (queries, keys_t) = view.pair(scores_product)?;
    nodes.push(scores_product);

    let (q_nodes, q, q_split, heads, head_dim) = split_heads(view, queries, &[0, 2, 1, 3])?;
    let (k_group_nodes, keys_t, k_group) = repeated_heads(view, keys_t);
    let (k_nodes, k, k_split, kv_heads, k_head_dim) = split_heads(view, keys_t, &[0, 2, 3, 1])
        .or_else(|| {
            let (swap, keys) = view.transpose(keys_t, &[0, 1, 3, 2])?;
            let (mut nodes, k, split, kv_heads, head_dim) = split_heads(view, keys, &[0, 2, 1, 3])?;
            nodes.push(swap);
            Some((nodes, k, split, kv_heads, head_dim))
        })?;
    let (v_group_nodes, values, v_group) = repeated_heads(view, values);
    let (v_nodes, v, v_split, v_heads, v_head_dim) = split_heads(view, values, &[0, 2, 1, 3])?;
    if k_head_dim != head_dim
        || v_head_dim != head_dim
        || v_heads != kv_heads
        || k_group != v_group
        || kv_heads * k_group != heads
    {
        return None;
    }
    for part in [q_nodes, k_group_nodes, k_nodes, v_group_nodes, v_nodes] {
        nodes.extend(part);
    }

    let mut inputs = vec![q, k, v];
    let mut attributes = vec![
        int_attribute("heads", heads),
        int_attribute("kv_heads", kv_heads),
        int_attribute("head_dim", head_dim),
        float_attribute("scale", scale),
        ints_attribute("q_split", q_split),
        ints_attribute("k_split", k_split),
        ints_attribute("v_split", v_split),
        ints_attribute("merge", merge_target),
    ];
    if let Some((queries, keys, constant)) = mask.constant {
        if constant.causal {
            attributes.push(int_attribute("causal", queries as i64));
        }
        attributes.extend(pattern_attributes(queries, keys, &constant.pattern));
    }
    if let Some((padding, target)) = mask.padding {
        inputs.push(padding);
        attributes.push(ints_attribute("mask_split", target));
    }
    Some(Found {
        shared: mask.nodes,
        nodes,
        node: fused("Attention", &inputs, &view.nodes[anchor], attributes),
    })
}

/// The attributes that carry a constant mask's sparse pattern to [`translate_attention`], with the
/// `[queries, keys]` it was read from.
fn pattern_attributes(queries: usize, keys: usize, pattern: &SparsePattern) -> Vec<AttributeProto> {
    if pattern.is_dense() {
        return Vec::new();
    }
    let mut attributes = vec![ints_attribute(
        "pattern_shape",
        vec![queries as i64, keys as i64],
    )];
    if let Some(window) = pattern.window {
        attributes.push(int_attribute("window", window as i64));
        attributes.push(int_attribute("dilation", pattern.dilation as i64));
    }
    if !pattern.global_tokens.is_empty() {
        let tokens = pattern.global_tokens.iter().map(|&t| t as i64).collect();
        attributes.push(ints_attribute("global_tokens", tokens));
    }
    if let Some(stride) = pattern.strided {
        attributes.push(int_attribute("strided", stride as i64));
    }
    if let Some(blocks) = &pattern.block_mask {
        attributes.push(int_attribute("block_size", blocks.block_size as i64));
        let cells = blocks.mask.iter().map(|&kept| i64::from(kept)).collect();
        attributes.push(ints_attribute("block_mask", cells));
    }
    attributes
}

/// The keyword arguments of the sparse pattern that [`pattern_attributes`] wrote, for an attention
/// of `queries` and `keys`.
fn pattern_arguments(node: &NodeProto, queries: usize, keys: usize) -> Result<Vec<Arg>, NodeError> {
    let Some(shape) = attr::ints(node, "pattern_shape") else {
        return Ok(Vec::new());
    };
    if shape != [queries as i64, keys as i64] {
        return Err(format!(
            "a sparse attention mask of {shape:?} for {queries} queries and {keys} keys"
        )
        .into());
    }
    let mut args = Vec::new();
    let window = attr::int(node, "window", 0);
    if window > 0 {
        args.push(Arg::keyword("window", Arg::Int(window)));
        let dilation = attr::int(node, "dilation", 1);
        if dilation != 1 {
            args.push(Arg::keyword("dilation", Arg::Int(dilation)));
        }
    }
    if let Some(tokens) = attr::ints(node, "global_tokens") {
        args.push(Arg::keyword("global_tokens", Arg::Ints(tokens)));
    }
    let stride = attr::int(node, "strided", 0);
    if stride > 0 {
        args.push(Arg::keyword("strided", Arg::Int(stride)));
    }
    if let Some(cells) = attr::ints(node, "block_mask") {
        let blocks_per_row = cells.len().isqrt().max(1);
        let rows = cells.chunks(blocks_per_row).map(<[i64]>::to_vec).collect();
        args.push(Arg::keyword(
            "block_size",
            Arg::Int(attr::int(node, "block_size", 1)),
        ));
        args.push(Arg::keyword("block_mask", Arg::IntRows(rows)));
    }
    Ok(args)
}

/// `Slice(x, [start], [end], [axis])` with constant bounds and step 1: the node, `x`, start and end.
fn slice(view: &View<'_>, name: &str, axis: &[i64]) -> Option<(usize, String, i64, i64)> {
    let index = view.producer(name, "Slice")?;
    let inputs = view.inputs(index);
    let (x, starts, ends) = (inputs.first()?, inputs.get(1)?, inputs.get(2)?);
    let axes = inputs
        .get(3)
        .and_then(|axes| view.ints(axes))
        .unwrap_or(vec![0]);
    let steps = inputs
        .get(4)
        .and_then(|steps| view.ints(steps))
        .unwrap_or(vec![1]);
    if !axis.contains(axes.first()?) || axes.len() != 1 || steps != [1] {
        return None;
    }
    match (&view.ints(starts)?[..], &view.ints(ends)?[..]) {
        (&[start], &[end]) => Some((index, x.clone(), start, end)),
        _ => None,
    }
}

/// Rotary embeddings in the half-split layout: `x·cos + rotate(x)·sin` over `[b, s, heads, d]`.
fn rope(view: &View<'_>, anchor: usize) -> Option<Found> {
    if view.op(anchor) != "Reshape" {
        return None;
    }
    let sum = view.producer(view.inputs(anchor).first()?, "Add")?;
    let (a, b) = view.pair(sum)?;
    [(a, b), (b, a)].into_iter().find_map(|(plain, rotated)| {
        let cos_product = view.producer(plain, "Mul")?;
        let sin_product = view.producer(rotated, "Mul")?;
        let (split, cos) = view.with_constant(cos_product)?;
        let (rotation, sin) = view.with_constant(sin_product)?;
        let (split_node, x, target) = view.reshape(split)?;
        let &[_, _, heads, head_dim] = target.as_slice() else {
            return None;
        };
        let half = head_dim / 2;
        let concat = view.producer(rotation, "Concat")?;
        if !matches!(attr::int(&view.nodes[concat], "axis", 0), 3 | -1) {
            return None;
        }
        let [negated, first] = view.inputs(concat) else {
            return None;
        };
        let negate = view.producer(negated, "Neg")?;
        let (first_slice, first_source, 0, first_end) = slice(view, first, &[3, -1])? else {
            return None;
        };
        let (second_slice, second_source, second_start, second_end) =
            slice(view, view.inputs(negate).first()?, &[3, -1])?;
        if first_source != split
            || second_source != split
            || first_end != half
            || second_start != half
            || second_end < head_dim
            || head_dim % 2 != 0
        {
            return None;
        }
        let (positions, theta) =
            rope_theta(view.constant(cos)?, view.constant(sin)?, head_dim as usize)?;
        Some(Found {
            shared: Vec::new(),
            nodes: vec![
                anchor,
                sum,
                cos_product,
                sin_product,
                split_node,
                concat,
                negate,
                first_slice,
                second_slice,
            ],
            node: fused(
                "Rope",
                &[x],
                &view.nodes[anchor],
                vec![
                    int_attribute("heads", heads),
                    ints_attribute("split", target.clone()),
                    int_attribute("positions", positions as i64),
                    float_attribute("theta", theta),
                ],
            ),
        })
    })
}

/// The theta of half-split rope tables `[positions, 1, head_dim]` (positions from 0), when the
/// tables are exactly those nnc computes for it (`nnc_runtime::kernels::rope::RopeTable`).
fn rope_theta(cos: &Constant, sin: &Constant, head_dim: usize) -> Option<(usize, f32)> {
    let &[positions, 1, width] = cos.shape.as_slice() else {
        return None;
    };
    let half = head_dim / 2;
    if width != head_dim || sin.shape != cos.shape || positions < 2 || half < 2 {
        return None;
    }
    let (cos, sin) = (cos.to_f32(), sin.to_f32());
    // Position 1, pair 1: the angle is theta^(-2 / head_dim).
    let angle = f64::from(sin[head_dim + 1]).atan2(f64::from(cos[head_dim + 1]));
    if angle <= 0.0 {
        return None;
    }
    let estimate = angle.powf(-(head_dim as f64) / 2.0);
    let rounded = estimate.round();
    let candidates = [rounded as f32, estimate as f32];
    candidates.into_iter().find_map(|theta| {
        let inverse: Vec<f32> = (0..half)
            .map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32))
            .collect();
        let fits = (0..positions).all(|position| {
            (0..head_dim).all(|column| {
                let angle = position as f32 * inverse[column % half];
                let at = position * head_dim + column;
                (cos[at] - angle.cos()).abs() <= 1e-5 && (sin[at] - angle.sin()).abs() <= 1e-5
            })
        });
        fits.then_some((positions, theta))
    })
}

/// `x + Reshape(Slice(table, [0], [seq], [0]), [1, seq, dim])`: learned absolute positions.
fn position_embedding(view: &View<'_>, anchor: usize) -> Option<Found> {
    if view.op(anchor) != "Add" {
        return None;
    }
    let (a, b) = view.pair(anchor)?;
    [(a, b), (b, a)].into_iter().find_map(|(x, positions)| {
        let (reshape, rows, target) = view.reshape(positions)?;
        let (slice_node, table, 0, end) = slice(view, rows, &[0])? else {
            return None;
        };
        if !view.initializers.contains(table.as_str()) || view.constant(&table)?.shape.len() != 2 {
            return None;
        }
        let &[1, seq, _] = target.as_slice() else {
            return None;
        };
        if seq != end || view.constants.contains_key(x) {
            return None;
        }
        Some(Found {
            shared: Vec::new(),
            nodes: vec![anchor, reshape, slice_node],
            node: fused(
                "PositionEmbedding",
                &[x, &table],
                &view.nodes[anchor],
                vec![int_attribute("positions", seq)],
            ),
        })
    })
}

/// `MatMul(x, Transpose(weight))` with a 2-D initializer: PyTorch's `nn.Linear` on a 3-D input,
/// as `nnc export` writes it; the layer keeps the initializer's name.
fn transposed_linear(view: &View<'_>, anchor: usize) -> Option<Found> {
    if view.op(anchor) != "MatMul" {
        return None;
    }
    let (x, transposed) = view.pair(anchor)?;
    let transpose = view.producer(transposed, "Transpose")?;
    let weight = view.inputs(transpose).first()?;
    let perm = attr::ints(&view.nodes[transpose], "perm").unwrap_or(vec![1, 0]);
    if perm != [1, 0]
        || !view.initializers.contains(weight.as_str())
        || view.constant(weight)?.shape.len() != 2
        || view.constants.contains_key(x)
    {
        return None;
    }
    Some(Found {
        shared: Vec::new(),
        nodes: vec![transpose, anchor],
        node: fused("Linear", &[x, weight], &view.nodes[anchor], vec![]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::proto::{TensorProto, ValueInfoProto};

    fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
        NodeProto {
            op_type: Some(op.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            ..Default::default()
        }
    }

    fn scalar(name: &str, value: f32) -> TensorProto {
        TensorProto {
            name: Some(name.into()),
            data_type: Some(1),
            float_data: vec![value],
            ..Default::default()
        }
    }

    /// The erf GELU of `x` as PyTorch exports it, with `extra_output` also a graph output.
    fn gelu_graph(extra_output: Option<&str>) -> GraphProto {
        let outputs = std::iter::once("y")
            .chain(extra_output)
            .map(|name| ValueInfoProto {
                name: Some(name.into()),
                ..Default::default()
            })
            .collect();
        GraphProto {
            node: vec![
                node("Div", &["x", "root_two"], "scaled"),
                node("Erf", &["scaled"], "erf"),
                node("Add", &["erf", "one"], "shifted"),
                node("Mul", &["x", "shifted"], "product"),
                node("Mul", &["product", "half"], "y"),
            ],
            initializer: vec![
                scalar("root_two", std::f32::consts::SQRT_2),
                scalar("one", 1.0),
                scalar("half", 0.5),
            ],
            output: outputs,
            ..Default::default()
        }
    }

    fn fused_ops(items: &[Item<'_>]) -> Vec<String> {
        items
            .iter()
            .map(|item| match item {
                Item::Node(node) => node.op_type.clone().unwrap_or_default(),
                Item::Fused { node, parts } => {
                    format!("{}[{}]", node.op_type.as_deref().unwrap_or(""), parts.len())
                }
            })
            .collect()
    }

    #[test]
    fn a_pattern_replaces_its_nodes() {
        let graph = gelu_graph(None);
        assert_eq!(fused_ops(&recognize(&graph, 17)), ["Gelu[5]"]);
    }

    #[test]
    fn a_pattern_whose_inner_value_is_read_elsewhere_is_left_alone() {
        let graph = gelu_graph(Some("erf"));
        assert_eq!(
            fused_ops(&recognize(&graph, 17)),
            ["Div", "Erf", "Add", "Mul", "Mul"]
        );
    }

    /// The key padding mask that computes the value `additive` of `graph`: its node count, mask
    /// input and `Reshape` target.
    fn additive_padding_mask(graph: &GraphProto, opset: i64) -> Option<(usize, String, Vec<i64>)> {
        let view = View::new(graph, opset);
        additive_mask(&view, "additive").map(|mask| {
            let (input, target) = mask.padding.unwrap_or_default();
            (mask.nodes.len(), input.to_string(), target)
        })
    }

    /// Hugging Face's padding mask `(1 - Cast(mask)) * factor` reshaped to `[2, 1, 1, 5]`.
    fn hugging_face_mask_graph(one: f32, factor: f32, unsqueeze_axes: &[i64]) -> GraphProto {
        let mut cast = node("Cast", &["rows"], "float");
        cast.attribute
            .push(int_attribute("to", DataType::Float as i64));
        let mut unsqueeze = node("Unsqueeze", &["mask"], "rows");
        unsqueeze
            .attribute
            .push(ints_attribute("axes", unsqueeze_axes.to_vec()));
        GraphProto {
            node: vec![
                unsqueeze,
                cast,
                node("Sub", &["one", "float"], "inverted"),
                node("Mul", &["inverted", "factor"], "additive"),
            ],
            initializer: vec![scalar("one", one), scalar("factor", factor)],
            ..Default::default()
        }
    }

    #[test]
    fn hugging_face_padding_masks_need_one_minus_the_mask_times_a_masking_value() {
        let found = |graph: &GraphProto| additive_padding_mask(graph, 11);
        let graph = hugging_face_mask_graph(1.0, f32::MIN, &[1, 2]);
        assert_eq!(found(&graph), Some((4, "mask".into(), vec![0, 1, 1, -1])));
        let graph = hugging_face_mask_graph(1.0, -10000.0, &[-3, -2]);
        assert_eq!(found(&graph), Some((4, "mask".into(), vec![0, 1, 1, -1])));
        // A factor that does not mask, 2 - mask, and axes that do not give [batch, 1, 1, keys].
        assert_eq!(found(&hugging_face_mask_graph(1.0, -0.5, &[1, 2])), None);
        assert_eq!(
            found(&hugging_face_mask_graph(2.0, f32::MIN, &[1, 2])),
            None
        );
        assert_eq!(
            found(&hugging_face_mask_graph(1.0, f32::MIN, &[0, 1])),
            None
        );
        assert_eq!(found(&hugging_face_mask_graph(1.0, f32::MIN, &[1])), None);
    }

    /// `_prepare_4d_attention_mask`'s form: `Unsqueeze`s (axes 1, 2), `Expand`, `Cast` to
    /// float, `inverted = 1 - m`, `Where(Cast(condition, bool), MIN, inverted)`.
    fn expanded_mask_graph(condition: &str, masked: f32, bool_type: DataType) -> GraphProto {
        let mut unsqueeze = node("Unsqueeze", &["mask"], "rows");
        unsqueeze.attribute.push(ints_attribute("axes", vec![1, 2]));
        let mut cast = node("Cast", &["expanded"], "float");
        cast.attribute
            .push(int_attribute("to", DataType::Float as i64));
        let mut to_bool = node("Cast", &[condition], "condition");
        to_bool
            .attribute
            .push(int_attribute("to", bool_type as i64));
        let shape = TensorProto {
            name: Some("shape".into()),
            data_type: Some(DataType::Int64 as i32),
            dims: vec![4],
            int64_data: vec![2, 1, 5, 5],
            ..Default::default()
        };
        GraphProto {
            node: vec![
                unsqueeze,
                node("Expand", &["rows", "shape"], "expanded"),
                cast,
                node("Sub", &["one", "float"], "inverted"),
                to_bool,
                node("Where", &["condition", "masked", "inverted"], "additive"),
            ],
            initializer: vec![scalar("one", 1.0), scalar("masked", masked), shape],
            ..Default::default()
        }
    }

    #[test]
    fn expanded_masks_need_the_inverted_mask_cast_to_bool_and_a_masking_value() {
        let found = |graph: &GraphProto| additive_padding_mask(graph, 14);
        let graph = expanded_mask_graph("inverted", f32::MIN, DataType::Bool);
        assert_eq!(found(&graph), Some((6, "mask".into(), vec![0, 1, 1, -1])));
        // The condition of another tensor, a value that does not mask, a cast to float.
        assert_eq!(
            found(&expanded_mask_graph("float", f32::MIN, DataType::Bool)),
            None
        );
        assert_eq!(
            found(&expanded_mask_graph("inverted", -1.0, DataType::Bool)),
            None
        );
        assert_eq!(
            found(&expanded_mask_graph("inverted", f32::MIN, DataType::Float)),
            None
        );
    }

    #[test]
    fn shared_nodes_are_dropped_only_when_dropped_nodes_read_them() {
        // `first` -> `second` (both shared) -> `attention` (taken), and maybe `other` (not
        // taken) reading `second`'s output, or that output a graph output.
        let graph = |other_reader: bool, graph_output: bool| {
            let mut nodes = vec![
                node("Cast", &["mask"], "a"),
                node("Sub", &["one", "a"], "b"),
                node("Add", &["scores", "b"], "attention"),
            ];
            if other_reader {
                nodes.push(node("Relu", &["b"], "other"));
            }
            GraphProto {
                node: nodes,
                output: graph_output
                    .then(|| ValueInfoProto {
                        name: Some("b".into()),
                        ..Default::default()
                    })
                    .into_iter()
                    .collect(),
                ..Default::default()
            }
        };
        let dropped = |graph: &GraphProto| {
            let count = graph.node.len();
            let mut taken = vec![false; count];
            taken[2] = true;
            let mut shared = vec![false; count];
            shared[0] = true;
            shared[1] = true;
            View::new(graph, 14).droppable(&taken, &shared)[..2].to_vec()
        };
        assert_eq!(dropped(&graph(false, false)), [true, true]);
        assert_eq!(dropped(&graph(true, false)), [false, false]);
        assert_eq!(dropped(&graph(false, true)), [false, false]);
    }

    #[test]
    fn constants_must_be_the_layers() {
        let mut graph = gelu_graph(None);
        graph.initializer[2] = scalar("half", 0.25);
        assert_eq!(
            fused_ops(&recognize(&graph, 17)),
            ["Div", "Erf", "Add", "Mul", "Mul"]
        );
    }

    #[test]
    fn rope_tables_give_back_their_theta() {
        let (positions, head_dim, theta) = (4, 8, 500_000.0f32);
        let half = head_dim / 2;
        let mut cos = Vec::new();
        let mut sin = Vec::new();
        for position in 0..positions {
            for column in 0..head_dim {
                let inverse = 1.0 / theta.powf((2 * (column % half)) as f32 / head_dim as f32);
                cos.push((position as f32 * inverse).cos());
                sin.push((position as f32 * inverse).sin());
            }
        }
        let table = |values| Constant::f32(vec![positions, 1, head_dim], values);
        assert_eq!(
            rope_theta(&table(cos.clone()), &table(sin.clone()), head_dim),
            Some((positions, theta))
        );
        sin[head_dim + 2] += 0.01;
        assert_eq!(rope_theta(&table(cos), &table(sin), head_dim), None);
    }
}
