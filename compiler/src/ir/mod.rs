//! The IR: one dataflow graph per network, fully shape-inferred.
//!
//! # Invariants
//!
//! These hold after lowering and after every pass; [`verify::verify`] checks them.
//!
//! - A [`Graph`] owns three arenas: values, nodes and params. Handles from one graph never index
//!   another.
//! - Every value has a [`TensorType`] with a static shape: all symbolic dimensions of the source
//!   were bound at compile time. Every dimension is at least 1 and byte sizes cannot overflow.
//! - A value is defined exactly once: as a network input, as a param (weight), or as an output of
//!   one node. `ValueData::def` records which, and the defining node lists the value among its
//!   outputs at the recorded position.
//! - Nodes are stored in execution order. A node may use a value only if it is an input, a param,
//!   or an output of an earlier node; so the node arena order is a topological order.
//! - The output types of every node are exactly what [`infer::infer`] computes from its op and
//!   input types.
//! - Param names are unique and are the PyTorch state-dict names (`layers.0.attn.q_proj.weight`).
//!   A param used by several nodes is a tied weight.
//! - Node names are the layer names of the source (`layers.0.attn.q_proj`); layers without weights
//!   get the name of the variable they were assigned to. Names are for people and reports; nothing
//!   depends on their uniqueness.
//! - Source spans live in the side table [`Graph::spans`], not in the nodes.
//! - Images are NCHW as written. The layout pass may make a region channels-last (`[n, h, w, c]`):
//!   its convolutions say so in [`ConvAttrs::channels_last`], the other ops in it are elementwise,
//!   and values enter and leave it through explicit `transpose` nodes, so every type is still the
//!   true shape of its data. Transposes it inserts compute nothing of the source: their `origin`
//!   is empty.

pub mod arena;
pub mod infer;
pub mod op;
pub mod print;
pub mod types;
pub mod verify;

pub use arena::{Arena, Handle, SecondaryMap};
pub use op::{
    Activation, AttentionAttrs, BinaryOp, BlockMask, ConvAttrs, ConvTransposeAttrs,
    CoordinateTransform, ElementwiseStep, Epilogue, InPlaceRule, NearestRounding, Op, OpCategory,
    OpKind, PadMode, PoolAttrs, PreparedState, ReduceOp, Resize2dOptions, ResizeMode,
    SparsePattern,
};
pub use types::{DType, TensorType};

use crate::diagnostics::Span;

/// A handle to a value.
pub type Value = Handle<ValueData>;
/// A handle to a node.
pub type Node = Handle<NodeData>;
/// A handle to a param.
pub type Param = Handle<ParamData>;

/// A tensor flowing through the graph.
#[derive(Clone, Debug)]
pub struct ValueData {
    pub ty: TensorType,
    pub def: ValueDef,
}

/// Where a value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueDef {
    /// The `index`-th network input.
    Input { index: usize },
    /// A weight.
    Param(Param),
    /// The `position`-th output of a node.
    Node { node: Node, position: usize },
}

/// An operation applied to values.
#[derive(Clone, Debug)]
pub struct NodeData {
    pub op: Op,
    pub inputs: Vec<Value>,
    pub outputs: Vec<Value>,
    /// The layer name, e.g. `layer1.0.conv1`.
    pub name: String,
    /// The nodes of the graph as lowered (by index, before any pass) that this node computes:
    /// itself, and what fusion folded into it. Reports use it to show fused groups.
    pub origin: Vec<usize>,
}

/// How a weight is initialized when no weights file is given (`--random-weights`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParamInit {
    /// Uniform in ±1/sqrt(fan_in), as PyTorch initializes linear and conv layers.
    FanIn { fan_in: usize },
    /// Standard normal, as PyTorch initializes embeddings.
    Normal,
    /// All ones: norm scales and running variances.
    Ones,
    /// All zeros: norm shifts and running means.
    Zeros,
}

/// How the layers that prepare a weight at load time (linear and conv layers) store it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum WeightStorage {
    /// 32-bit floats, as loaded.
    #[default]
    F32,
    /// In a block format (see `nnc_runtime::kernels::quantized`), decided at load time by
    /// [`Quantization::format`].
    Quantized(Quantization),
    /// A 2-D convolution's weight quantized per output channel to symmetric int8 at load time,
    /// run in integers on its input quantized to u8 with a calibrated scale (see
    /// `nnc_runtime::kernels::int8`).
    Int8(Int8Conv),
}

/// What an int8 convolution knows at compile time: how its input is quantized, as calibrated.
#[derive(Clone, Copy, Debug)]
pub struct Int8Conv {
    pub input: nnc_ops::quant::ActivationQuantization,
}

// Equality and hashing by bits: the scale is a calibrated constant, never NaN, and two layers
// share code (rolled loops) only if their constants are identical.
impl PartialEq for Int8Conv {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Int8Conv {}

impl std::hash::Hash for Int8Conv {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl Int8Conv {
    fn key(&self) -> (u32, u8) {
        (self.input.scale.to_bits(), self.input.zero_point)
    }
}

/// The block format of a quantized weight and how layers multiply by weights stored in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Quantization {
    pub format: QuantTarget,
    pub mode: nnc_ops::quant::QuantizedMode,
}

/// The format a quantized weight is stored in. Either way, a weight that a GGUF file stores in
/// a block format the kernels run (Q8_0, Q4_0, Q4_1) keeps the file's blocks as they are, in
/// the file's format; the two differ on the other weights (f32, F16, Q4_K, safetensors...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantTarget {
    /// Other weights are quantized to this format at load (`--quantize q4_1`).
    Format(nnc_ops::quant::QuantFormat),
    /// Other weights stay f32 (`--quantize as-stored`): whether the layer runs on blocks is
    /// decided when the weight is loaded.
    AsStored,
}

impl QuantTarget {
    /// The name the command line and `network!` use for the as-stored target.
    pub const AS_STORED: &'static str = "as-stored";

    /// The target named `name`: a format (`q4_1`) or `as-stored`, in any case.
    pub fn from_name(name: &str) -> Option<Self> {
        if name.eq_ignore_ascii_case(Self::AS_STORED) {
            return Some(QuantTarget::AsStored);
        }
        nnc_ops::quant::QuantFormat::from_name(name).map(QuantTarget::Format)
    }

    /// Every name [`QuantTarget::from_name`] takes, for error messages.
    pub fn names() -> Vec<&'static str> {
        let mut names: Vec<&str> = nnc_ops::quant::QuantFormat::ALL
            .iter()
            .map(|format| format.name())
            .collect();
        names.push(Self::AS_STORED);
        names
    }
}

impl From<nnc_ops::quant::QuantFormat> for QuantTarget {
    fn from(format: nnc_ops::quant::QuantFormat) -> Self {
        QuantTarget::Format(format)
    }
}

impl std::fmt::Display for QuantTarget {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QuantTarget::Format(format) => write!(formatter, "{format}"),
            QuantTarget::AsStored => formatter.write_str(Self::AS_STORED),
        }
    }
}

impl std::fmt::Display for WeightStorage {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WeightStorage::F32 => formatter.write_str("f32"),
            WeightStorage::Quantized(quantization) => write!(
                formatter,
                "{}{}",
                quantization.format,
                match quantization.mode {
                    nnc_ops::quant::QuantizedMode::Exact => "",
                    nnc_ops::quant::QuantizedMode::Fast => " fast",
                }
            ),
            WeightStorage::Int8(int8) => write!(
                formatter,
                "int8 (input scale {:e}, zero point {})",
                int8.input.scale, int8.input.zero_point
            ),
        }
    }
}

/// What a layer's `quantize =` argument asks for its weight, over the front end's
/// `--quantize` (see `lower/quantize.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LayerQuantize {
    /// `quantize = false`: the weight stays f32.
    Off,
    /// `quantize = "q8_0"`: this format, whatever `--quantize` asked, and even without it.
    Format(nnc_ops::quant::QuantFormat),
}

/// A weight of the network, loaded from a weights file by name.
#[derive(Clone, Debug)]
pub struct ParamData {
    /// The state-dict name, e.g. `layer1.0.conv1.weight`.
    pub name: String,
    pub value: Value,
    pub init: ParamInit,
    /// A buffer (batch norm's running statistics) is loaded like a weight but is not a trainable
    /// parameter, so parameter counts leave it out, as PyTorch's do.
    pub is_buffer: bool,
    /// How prepared layers store the weight; f32 unless the front end quantized it.
    pub storage: WeightStorage,
    /// The owning layer's `quantize =` argument, if it has one.
    pub layer_quantize: Option<LayerQuantize>,
}

/// A named network input.
#[derive(Clone, Debug)]
pub struct Input {
    pub name: String,
    pub value: Value,
}

/// A named network output.
#[derive(Clone, Debug)]
pub struct Output {
    pub name: String,
    pub value: Value,
}

/// One network, ready for passes and code generation.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub name: String,
    /// The symbolic dimensions and the values they were bound to, in declaration order.
    pub dims: Vec<(String, usize)>,
    pub values: Arena<ValueData>,
    pub nodes: Arena<NodeData>,
    pub params: Arena<ParamData>,
    pub inputs: Vec<Input>,
    pub outputs: Vec<Output>,
    /// The source text each node was made from, for diagnostics.
    pub spans: SecondaryMap<Node, Span>,
}

impl Default for SecondaryMap<Node, Span> {
    fn default() -> Self {
        SecondaryMap::with_default(0, Span::default())
    }
}

impl Graph {
    /// An empty graph named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Graph {
            name: name.into(),
            ..Graph::default()
        }
    }

    /// The type of `value`.
    pub fn ty(&self, value: Value) -> &TensorType {
        &self.values[value].ty
    }

    /// Adds a network input.
    pub fn add_input(&mut self, name: impl Into<String>, ty: TensorType) -> Value {
        let index = self.inputs.len();
        let value = self.values.push(ValueData {
            ty,
            def: ValueDef::Input { index },
        });
        self.inputs.push(Input {
            name: name.into(),
            value,
        });
        value
    }

    /// Adds a weight and the value that carries it.
    pub fn add_param(
        &mut self,
        name: impl Into<String>,
        ty: TensorType,
        init: ParamInit,
        is_buffer: bool,
    ) -> Value {
        let param = Param::from_index(self.params.len());
        let value = self.values.push(ValueData {
            ty,
            def: ValueDef::Param(param),
        });
        self.params.push(ParamData {
            name: name.into(),
            value,
            init,
            is_buffer,
            storage: WeightStorage::F32,
            layer_quantize: None,
        });
        value
    }

    /// Appends a node whose outputs have the given types, and returns the output values.
    ///
    /// The caller has inferred `output_types` with [`infer::infer`]; the verifier checks it.
    pub fn add_node(
        &mut self,
        op: Op,
        inputs: Vec<Value>,
        output_types: Vec<TensorType>,
        name: impl Into<String>,
        span: Span,
    ) -> Vec<Value> {
        let node = Node::from_index(self.nodes.len());
        let outputs: Vec<Value> = output_types
            .into_iter()
            .enumerate()
            .map(|(position, ty)| {
                self.values.push(ValueData {
                    ty,
                    def: ValueDef::Node { node, position },
                })
            })
            .collect();
        self.nodes.push(NodeData {
            op,
            inputs,
            outputs: outputs.clone(),
            name: name.into(),
            origin: vec![node.index()],
        });
        self.spans.insert(node, span, Span::default());
        outputs
    }

    /// The param behind `value`, if it is a weight.
    pub fn param_of(&self, value: Value) -> Option<&ParamData> {
        match self.values[value].def {
            ValueDef::Param(param) => Some(&self.params[param]),
            _ => None,
        }
    }

    /// Whether weight `value` is an embedding table that stays in its quantized layers' storage
    /// (blocks, when it is loaded or quantized as blocks): its storage is
    /// [`WeightStorage::Quantized`], an embedding looks rows up in it, and every node reading it
    /// is either such an embedding or a linear layer multiplying by it as it is. The embedding
    /// then dequantizes only the rows it looks up, and a tied head shares the table's blocks:
    /// no f32 copy of the table is made.
    pub fn is_stored_table(&self, value: Value) -> bool {
        let quantized = self
            .param_of(value)
            .is_some_and(|param| matches!(param.storage, WeightStorage::Quantized(_)));
        let mut embedded = false;
        let every_reader_takes_blocks = self
            .nodes
            .iter()
            .filter(|(_, node)| node.inputs.contains(&value))
            .all(|(_, node)| match &node.op {
                Op::Embedding if node.inputs[0] != value => {
                    embedded = true;
                    true
                }
                Op::Linear { epilogue, .. } => {
                    epilogue.batch_norm.is_none()
                        && node.inputs[1] == value
                        && !node.inputs[2..].contains(&value)
                        && node.inputs[0] != value
                }
                _ => false,
            });
        quantized && embedded && every_reader_takes_blocks
    }

    /// Whether `node` is a convolution with int8 weights (`--quantize int8`).
    pub fn is_int8_conv(&self, node: &NodeData) -> bool {
        matches!(node.op, Op::Conv(_))
            && self
                .param_of(node.inputs[1])
                .is_some_and(|param| matches!(param.storage, WeightStorage::Int8(_)))
    }

    /// The int8 convolution that alone reads the output of the int8 convolution `node`, when
    /// that value can stay quantized between them: both channels-last, `node` without a
    /// residual, the value read once, as the reader's image (not its residual), and not a
    /// network output. The reader then quantizes exactly what `node` computed, so `node` may
    /// write those bytes instead of f32 values (see `PackedConv2dInt8::forward_int8`).
    pub fn quantized_successor(&self, node: Node) -> Option<Node> {
        let data = &self.nodes[node];
        let channels_last =
            |data: &NodeData| matches!(&data.op, Op::Conv(attrs) if attrs.channels_last);
        if !(self.is_int8_conv(data) && channels_last(data) && data.residual_input().is_none()) {
            return None;
        }
        let value = data.outputs[0];
        if self.outputs.iter().any(|output| output.value == value) {
            return None;
        }
        let mut readers = self
            .nodes
            .iter()
            .filter(|(_, reader)| reader.inputs.contains(&value));
        let (reader, reader_data) = readers.next()?;
        let only_reader = readers.next().is_none()
            && reader_data
                .inputs
                .iter()
                .filter(|&&input| input == value)
                .count()
                == 1
            && reader_data.inputs[0] == value;
        (only_reader && self.is_int8_conv(reader_data) && channels_last(reader_data))
            .then_some(reader)
    }

    /// The number of trainable parameters, as PyTorch counts them (buffers excluded).
    pub fn parameter_count(&self) -> u64 {
        self.params
            .iter()
            .filter(|(_, param)| !param.is_buffer)
            .map(|(_, param)| self.ty(param.value).element_count())
            .fold(0, u64::saturating_add)
    }

    /// The number of buffer elements (batch norm's running statistics).
    pub fn buffer_count(&self) -> u64 {
        self.params
            .iter()
            .filter(|(_, param)| param.is_buffer)
            .map(|(_, param)| self.ty(param.value).element_count())
            .fold(0, u64::saturating_add)
    }
}

impl Graph {
    /// How many times each value is read: by node inputs, and once more if it is a network output.
    pub fn use_counts(&self) -> SecondaryMap<Value, usize> {
        let mut counts = SecondaryMap::with_default(self.values.len(), 0);
        for (_, node) in self.nodes.iter() {
            for &input in &node.inputs {
                counts[input] += 1;
            }
        }
        for output in &self.outputs {
            counts[output.value] += 1;
        }
        counts
    }

    /// The node that defines `value`, if a node does.
    pub fn producer(&self, value: Value) -> Option<Node> {
        match self.values[value].def {
            ValueDef::Node { node, .. } => Some(node),
            _ => None,
        }
    }

    /// Makes every reader of `old` (node inputs and network outputs) read `new` instead. `new`
    /// must have the same type and be defined before every reader of `old`.
    pub fn replace_all_uses(&mut self, old: Value, new: Value) {
        debug_assert_eq!(
            self.ty(old),
            self.ty(new),
            "replace_all_uses changes a type"
        );
        for index in 0..self.nodes.len() {
            for input in &mut self.nodes[Node::from_index(index)].inputs {
                if *input == old {
                    *input = new;
                }
            }
        }
        for output in &mut self.outputs {
            if output.value == old {
                output.value = new;
            }
        }
    }

    /// Starts deferred replacements for a pass that walks the nodes in order: see [`Forwarding`].
    pub fn forwarding(&self) -> Forwarding {
        Forwarding {
            replaced: SecondaryMap::with_default(self.values.len(), None),
        }
    }

    /// Removes the nodes whose outputs nothing reads, and the values they defined, renumbering the
    /// rest densely in the same order (like naga's `compact`). Inputs and params are kept, so the
    /// weights a graph needs do not depend on optimization. Returns whether anything was removed.
    pub fn compact(&mut self) -> bool {
        let mut live_nodes = vec![false; self.nodes.len()];
        let mut needed = vec![false; self.values.len()];
        for output in &self.outputs {
            needed[output.value.index()] = true;
        }
        for index in (0..self.nodes.len()).rev() {
            let node = &self.nodes[Node::from_index(index)];
            if node.outputs.iter().any(|output| needed[output.index()]) {
                live_nodes[index] = true;
                for input in &node.inputs {
                    needed[input.index()] = true;
                }
            }
        }
        if live_nodes.iter().all(|&live| live) {
            return false;
        }
        let order: Vec<Node> = self
            .nodes
            .handles()
            .filter(|node| live_nodes[node.index()])
            .collect();
        self.rebuild(&order);
        true
    }

    /// Puts the nodes in `order` and renumbers them (and the values they define) densely, like
    /// [`Graph::compact`]. `order` must list each node at most once, after the producers of its
    /// inputs; nodes it leaves out are removed, so nothing kept may read them. Panics otherwise.
    pub fn reorder(&mut self, order: &[Node]) {
        self.rebuild(order);
    }

    fn rebuild(&mut self, order: &[Node]) {
        let mut value_map: Vec<Option<Value>> = vec![None; self.values.len()];
        let mut values = Arena::new();
        let mut nodes = Arena::new();
        let mut spans = SecondaryMap::with_default(0, Span::default());
        // Inputs and params first, in their own order, then node outputs in node order.
        for (value, data) in self.values.iter() {
            if !matches!(data.def, ValueDef::Node { .. }) {
                value_map[value.index()] = Some(values.push(data.clone()));
            }
        }
        for &node in order {
            let data = &self.nodes[node];
            let new_node = Node::from_index(nodes.len());
            let outputs: Vec<Value> = data
                .outputs
                .iter()
                .enumerate()
                .map(|(position, &output)| {
                    let ty = self.values[output].ty.clone();
                    let new_value = values.push(ValueData {
                        ty,
                        def: ValueDef::Node {
                            node: new_node,
                            position,
                        },
                    });
                    value_map[output.index()] = Some(new_value);
                    new_value
                })
                .collect();
            let inputs = data
                .inputs
                .iter()
                .map(|input| value_map[input.index()].expect("inputs are defined before use"))
                .collect();
            nodes.push(NodeData {
                op: data.op.clone(),
                inputs,
                outputs,
                name: data.name.clone(),
                origin: data.origin.clone(),
            });
            spans.insert(
                new_node,
                self.spans.get(node).copied().unwrap_or_default(),
                Span::default(),
            );
        }
        let remap = |value: Value| value_map[value.index()].expect("kept values are remapped");
        for index in 0..self.params.len() {
            let param = &mut self.params[Param::from_index(index)];
            param.value = remap(param.value);
        }
        for input in &mut self.inputs {
            input.value = remap(input.value);
        }
        for output in &mut self.outputs {
            output.value = remap(output.value);
        }
        self.values = values;
        self.nodes = nodes;
        self.spans = spans;
    }
}

/// Everything compiled from one source: its networks, in source order.
#[derive(Clone, Debug, Default)]
pub struct Module {
    pub networks: Vec<Graph>,
}

/// [`Graph::replace_all_uses`] for a pass that walks the nodes in order, which replaces the output
/// of the node it is at: each replacement is recorded, and a node's inputs are brought up to date
/// when the pass reaches it ([`Forwarding::update_inputs`], before it reads them), the network's
/// outputs when it ends ([`Forwarding::finish`]). Only later nodes read a node's output, so this
/// is what replacing at once gives; replacing at once scans every node each time, which makes a
/// pass quadratic in the length of the network.
#[derive(Debug)]
#[must_use = "the replacements reach the network's outputs only through `finish`"]
pub struct Forwarding {
    replaced: SecondaryMap<Value, Option<Value>>,
}

impl Forwarding {
    /// Makes every later reader of `old` read `new`, which must have the same type.
    pub fn replace(&mut self, graph: &Graph, old: Value, new: Value) {
        debug_assert_eq!(graph.ty(old), graph.ty(new), "a replacement changes a type");
        let new = self.resolve(new);
        self.replaced.insert(old, Some(new), None);
    }

    /// The value that stands for `value` after the replacements so far.
    fn resolve(&self, mut value: Value) -> Value {
        while let Some(&Some(replacement)) = self.replaced.get(value) {
            value = replacement;
        }
        value
    }

    /// Brings `node`'s inputs up to date with the replacements recorded before it.
    pub fn update_inputs(&self, graph: &mut Graph, node: Node) {
        for index in 0..graph.nodes[node].inputs.len() {
            let input = graph.nodes[node].inputs[index];
            graph.nodes[node].inputs[index] = self.resolve(input);
        }
    }

    /// Brings the network's outputs up to date; every node must have been updated before.
    pub fn finish(self, graph: &mut Graph) {
        for index in 0..graph.outputs.len() {
            graph.outputs[index].value = self.resolve(graph.outputs[index].value);
        }
    }
}

#[cfg(test)]
mod forwarding_tests {
    use super::{Graph, Node};
    use crate::{FrontendOptions, compile_to_ir};

    /// The wiring of `graph`: every node's inputs, then the network's outputs.
    fn wiring(graph: &Graph) -> Vec<Vec<usize>> {
        let mut wiring: Vec<Vec<usize>> = graph
            .nodes
            .iter()
            .map(|(_, data)| data.inputs.iter().map(|input| input.index()).collect())
            .collect();
        wiring.push(
            graph
                .outputs
                .iter()
                .map(|output| output.value.index())
                .collect(),
        );
        wiring
    }

    /// On every example, each node whose first input has its output's type is bypassed (its
    /// readers read that input), walking in order: recorded with `Forwarding` as a pass records
    /// them, the graph is wired as with `replace_all_uses` at once, chains of bypassed nodes
    /// included.
    #[test]
    fn forwarding_wires_the_graph_as_replacing_at_once_does() {
        let mut bypassed = 0;
        for example in nnc_test_support::examples() {
            let (path, source) = (&example.path, example.source());
            let module = compile_to_ir(&source, &FrontendOptions::default())
                .unwrap_or_else(|errors| panic!("{}: {errors:?}", path.display()));
            for graph in module.networks {
                let bypass = |graph: &Graph, node: Node| {
                    let data = &graph.nodes[node];
                    let input = *data.inputs.first()?;
                    (data.outputs.len() == 1 && graph.ty(input) == graph.ty(data.outputs[0]))
                        .then_some((data.outputs[0], input))
                };
                let mut at_once = graph.clone();
                for index in 0..at_once.nodes.len() {
                    if let Some((old, new)) = bypass(&at_once, Node::from_index(index)) {
                        at_once.replace_all_uses(old, new);
                        bypassed += 1;
                    }
                }
                let mut forwarded = graph.clone();
                let mut forwarding = forwarded.forwarding();
                for index in 0..forwarded.nodes.len() {
                    let node = Node::from_index(index);
                    forwarding.update_inputs(&mut forwarded, node);
                    if let Some((old, new)) = bypass(&forwarded, node) {
                        forwarding.replace(&forwarded, old, new);
                    }
                }
                forwarding.finish(&mut forwarded);
                assert_eq!(wiring(&forwarded), wiring(&at_once), "{}", path.display());
            }
        }
        assert!(bypassed > 100, "{bypassed} nodes bypassed");
    }
}
