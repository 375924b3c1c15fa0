//! The cost model: parameters, MACs, FLOPs and activation bytes of every node, as a side table.
//!
//! Counts are exact integers for the static shapes of the graph. The conventions (what one MAC
//! is, which ops have MACs, the FLOPs of each op per element) are stated in `docs/cost-model.md`;
//! the functions below follow that table line by line. In short:
//!
//! - A MAC is one multiply-accumulate of a tensor contraction: `linear`, `matmul`, `conv` and
//!   attention's `QKᵀ` and `AV`. Only contractions have MACs.
//! - FLOPs are `2 × MACs` plus the arithmetic of everything else, at a fixed number of FLOPs per
//!   element for each op (biases, norms, activations, softmax, elementwise arithmetic, pooling);
//!   an activation's is [`Activation::flops_per_element`], beside its definition.
//!   Moving data (reshape, transpose, concat, slice, embedding lookups) costs no FLOPs.
//! - Attention scores only the (query, key) pairs its mask keeps, counted exactly by
//!   [`attention::kept_pairs`].
//! - A contraction whose weights are stored so that it multiplies in integers (quantized weights
//!   in the fast mode) counts integer MACs; its `2 × MACs` are OPS, not FLOPs
//!   ([`multiplies_in_integers`]).
//! - Weights count in the storage they are resident in: f32, or a quantized format, or both when
//!   a quantized linear weight is also read as an f32 tensor ([`resident_copies`]).

pub mod attention;
pub mod memory;

pub use attention::kept_pairs;
pub use memory::{LiveRange, MemoryFigures, live_ranges, memory_figures};

use std::collections::{HashMap, HashSet};

use crate::ir::{
    Activation, AttentionAttrs, DType, ElementwiseStep, Epilogue, Graph, Node, NodeData, Op,
    ParamData, SecondaryMap, TensorType, Value, WeightStorage,
};

/// The cost of one node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeCost {
    /// Trainable parameters this node is the first to use.
    pub parameters: u64,
    /// Trainable parameters this node uses that an earlier node already counted (tied weights).
    pub tied_parameters: u64,
    /// Buffer elements (batch norm running statistics) this node is the first to use.
    pub buffers: u64,
    /// Multiply-accumulates of the node's contractions, float and integer.
    pub macs: u64,
    /// The part of `macs` done in integers (see [`multiplies_in_integers`]).
    pub integer_macs: u64,
    /// Floating-point operations: `2 × (macs - integer_macs)` plus the node's other arithmetic.
    pub flops: u64,
    /// Integer operations: `2 × integer_macs`.
    pub ops: u64,
    /// Bytes of the node's outputs.
    pub activation_bytes: u64,
}

/// The costs of every node of a graph.
#[derive(Clone, Debug)]
pub struct CostTable {
    pub nodes: SecondaryMap<Node, NodeCost>,
}

/// Whole-graph sums.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CostTotals {
    /// Trainable parameters, each tied weight counted once (PyTorch's `parameters()` count).
    pub parameters: u64,
    /// Buffer elements, loaded with the weights but not trainable.
    pub buffers: u64,
    /// Bytes of all weight tensors (parameters and buffers) as the model stores them: f32, or a
    /// quantized block format for the weights of quantized linear layers (plus their f32 copy
    /// when another operation, a tied embedding, reads them too). A weight kept as the GGUF file
    /// stores it (`--quantize as-stored`) is counted in f32, the most it can take: the file
    /// decides at load time. The model's size: the sum of [`weight_storage`]'s bytes.
    pub weight_bytes: u64,
    pub macs: u64,
    pub integer_macs: u64,
    pub flops: u64,
    pub ops: u64,
}

/// The weights resident in one storage type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StorageSize {
    /// The storage, as [`storage_name`] names it: `f32`, `q8_0`, `q4_1`, ...
    pub storage: &'static str,
    /// Weight tensors (parameters and buffers) with a copy in this storage.
    pub tensors: usize,
    /// Their elements.
    pub elements: u64,
    /// Their bytes in this storage.
    pub bytes: u64,
}

/// The KV cache of a decoder: what every cached attention keeps per token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvCache {
    /// Attention nodes with a KV cache.
    pub cached_layers: usize,
    /// Bytes one token adds to the cache of one sequence: keys and values of every cached layer.
    pub bytes_per_token: u64,
    /// The longest maximum context of any cached layer.
    pub max_context: usize,
    /// Bytes of every cache filled to its maximum context, for the graph's batch.
    pub bytes_at_max_context: u64,
}

impl CostTable {
    /// The sums over all nodes, with the model size from the graph's weights.
    pub fn totals(&self, graph: &Graph) -> CostTotals {
        let mut totals = CostTotals {
            weight_bytes: graph
                .params
                .iter()
                .map(|(_, param)| stored_bytes(graph, param))
                .fold(0, u64::saturating_add),
            ..CostTotals::default()
        };
        for node in graph.nodes.handles() {
            let cost = &self.nodes[node];
            totals.parameters = totals.parameters.saturating_add(cost.parameters);
            totals.buffers = totals.buffers.saturating_add(cost.buffers);
            totals.macs = totals.macs.saturating_add(cost.macs);
            totals.integer_macs = totals.integer_macs.saturating_add(cost.integer_macs);
            totals.flops = totals.flops.saturating_add(cost.flops);
            totals.ops = totals.ops.saturating_add(cost.ops);
        }
        totals
    }
}

/// The name of a weight storage in reports: `f32`, or the block format (`q8_0`, `q4_1`, ...);
/// the multiplication mode does not change what is stored.
pub fn storage_name(storage: WeightStorage) -> &'static str {
    match storage {
        WeightStorage::F32 => "f32",
        WeightStorage::Quantized(quantization) => match quantization.format {
            crate::ir::QuantTarget::Format(format) => format.name(),
            // The file decides at load time; counted as the most it can take, f32.
            crate::ir::QuantTarget::AsStored => "f32",
        },
        WeightStorage::Int8(_) => "int8",
    }
}

/// Bytes of a weight of `shape` in `storage`. Quantized rows are whole blocks (the quantizer
/// only marks such weights), so a tensor is `elements / BLOCK_LENGTH` blocks. int8 weights are a
/// byte each and an f32 scale per output channel, the first axis.
pub fn storage_bytes(storage: WeightStorage, shape: &[usize]) -> u64 {
    let elements: u64 = shape.iter().map(|&dim| dim as u64).product();
    match storage {
        WeightStorage::F32 => elements.saturating_mul(DType::F32.size_in_bytes()),
        WeightStorage::Quantized(quantization) => match quantization.format {
            crate::ir::QuantTarget::Format(format) => (elements
                / nnc_ops::quant::BLOCK_LENGTH as u64)
                .saturating_mul(format.block_bytes() as u64),
            crate::ir::QuantTarget::AsStored => elements.saturating_mul(DType::F32.size_in_bytes()),
        },
        WeightStorage::Int8(_) => {
            let channels = shape.first().map_or(1, |&dim| dim as u64);
            elements.saturating_add(channels.saturating_mul(4))
        }
    }
}

/// Whether a contraction (linear, conv) on weights stored in `storage` multiplies in integers:
/// quantized weights in the fast mode, whose activations are quantized to 8 bits per block.
/// The exact mode dequantizes the weights in registers and multiplies in f32. An int8
/// convolution always multiplies in integers.
pub fn multiplies_in_integers(storage: WeightStorage) -> bool {
    match storage {
        WeightStorage::F32 => false,
        WeightStorage::Int8(_) => true,
        WeightStorage::Quantized(quantization) => {
            quantization.mode == nnc_ops::quant::QuantizedMode::Fast
        }
    }
}

/// The storages `param` is resident in once the model is loaded: its own, plus f32 when it is
/// quantized but some operation other than a linear layer or convolution (a tied embedding
/// lookup) reads it as a tensor, which keeps the f32 table beside the layer's quantized copy.
pub fn resident_copies(graph: &Graph, param: &ParamData) -> Vec<WeightStorage> {
    match param.storage {
        WeightStorage::F32 => vec![WeightStorage::F32],
        quantized => {
            // The layers that prepare a weight (linear, conv) keep only their stored copy.
            let read_as_f32 = graph.nodes.iter().any(|(_, node)| {
                !matches!(node.op, Op::Linear { .. } | Op::Conv(_))
                    && node.inputs.contains(&param.value)
            });
            if read_as_f32 {
                vec![quantized, WeightStorage::F32]
            } else {
                vec![quantized]
            }
        }
    }
}

/// The bytes the model keeps of `param`: see [`CostTotals::weight_bytes`].
fn stored_bytes(graph: &Graph, param: &ParamData) -> u64 {
    resident_copies(graph, param)
        .into_iter()
        .map(|storage| storage_bytes(storage, &graph.ty(param.value).shape))
        .fold(0, u64::saturating_add)
}

/// The model's size per storage type, f32 first, then the others by name. A tensor resident in
/// two storages (a quantized tied table) counts in both.
pub fn weight_storage(graph: &Graph) -> Vec<StorageSize> {
    let mut sizes: Vec<StorageSize> = Vec::new();
    for (_, param) in graph.params.iter() {
        let elements = graph.ty(param.value).element_count();
        for storage in resident_copies(graph, param) {
            let name = storage_name(storage);
            let index = match sizes.iter().position(|size| size.storage == name) {
                Some(index) => index,
                None => {
                    sizes.push(StorageSize {
                        storage: name,
                        tensors: 0,
                        elements: 0,
                        bytes: 0,
                    });
                    sizes.len() - 1
                }
            };
            let size = &mut sizes[index];
            size.tensors += 1;
            size.elements = size.elements.saturating_add(elements);
            size.bytes = size
                .bytes
                .saturating_add(storage_bytes(storage, &graph.ty(param.value).shape));
        }
    }
    sizes.sort_by_key(|size| (size.storage != "f32", size.storage));
    sizes
}

/// Bytes of weights one decode step reads, when `is_step` tells the nodes that run in every step
/// (those that depend on the new token): every weight such a node reads, once, as stored. A
/// linear layer or convolution streams its weight in its storage; an embedding lookup reads one
/// row per token (`tokens` rows: the step's tokens times the batch); every other op (norms)
/// reads its weights whole, in f32. A weight read two ways (a tied table:
/// looked up, and streamed by the head) counts both reads. Weights only an encoder reads (run
/// once per source) are not counted.
pub fn weight_bytes_per_step(graph: &Graph, is_step: impl Fn(Node) -> bool, tokens: u64) -> u64 {
    let mut total: u64 = 0;
    for (_, param) in graph.params.iter() {
        let ty = graph.ty(param.value);
        let (mut streamed, mut looked_up, mut read_whole) = (false, false, false);
        for (node, data) in graph.nodes.iter() {
            if !is_step(node) || !data.inputs.contains(&param.value) {
                continue;
            }
            match data.op {
                Op::Linear { .. } if data.inputs[1] == param.value => streamed = true,
                Op::Conv(ref attrs)
                    if attrs
                        .weights_multiplied(&data.inputs)
                        .contains(&param.value) =>
                {
                    streamed = true
                }
                Op::Embedding | Op::PositionEmbedding => looked_up = true,
                _ => read_whole = true,
            }
        }
        if streamed {
            total = total.saturating_add(storage_bytes(param.storage, &ty.shape));
        }
        if looked_up {
            let rows = ty.shape.first().copied().unwrap_or(1).max(1) as u64;
            let row_bytes = storage_bytes(WeightStorage::F32, ty.shape.get(1..).unwrap_or(&[]));
            total = total.saturating_add(row_bytes.saturating_mul(tokens.min(rows)));
        }
        if read_whole {
            total = total.saturating_add(storage_bytes(WeightStorage::F32, &ty.shape));
        }
    }
    total
}

/// The storage of the weight a linear layer or convolution multiplies by, if it is a weight.
fn contraction_storage(graph: &Graph, data: &NodeData) -> Option<WeightStorage> {
    match data.op {
        Op::Linear { .. } | Op::Conv(_) => graph
            .param_of(*data.inputs.get(1)?)
            .map(|param| param.storage),
        _ => None,
    }
}

/// Computes the cost of every node of `graph`.
pub fn analyze(graph: &Graph) -> CostTable {
    let mut nodes = SecondaryMap::with_default(graph.nodes.len(), NodeCost::default());
    let mut counted: HashSet<Value> = HashSet::new();
    let mut pair_counts = PairCounts::default();
    for (node, data) in graph.nodes.iter() {
        let mut cost = NodeCost {
            activation_bytes: data
                .outputs
                .iter()
                .map(|&output| graph.ty(output).size_in_bytes())
                .fold(0, u64::saturating_add),
            ..NodeCost::default()
        };
        for &input in &data.inputs {
            let Some(param) = graph.param_of(input) else {
                continue;
            };
            let elements = graph.ty(input).element_count();
            let first_use = counted.insert(input);
            match (param.is_buffer, first_use) {
                (true, true) => cost.buffers += elements,
                (true, false) => {}
                (false, true) => cost.parameters += elements,
                (false, false) => cost.tied_parameters += elements,
            }
        }
        let (macs, other_flops) = arithmetic(graph, data, &mut pair_counts);
        cost.macs = macs;
        cost.integer_macs = if contraction_storage(graph, data).is_some_and(multiplies_in_integers)
        {
            macs
        } else {
            0
        };
        let float_macs = macs - cost.integer_macs;
        cost.flops = float_macs.saturating_mul(2).saturating_add(other_flops);
        cost.ops = cost.integer_macs.saturating_mul(2);
        nodes[node] = cost;
    }
    CostTable { nodes }
}

/// The KV cache of every attention with `kv_cache = max_context`: keys and values, `kv_heads ×
/// head_dim` elements each, per token and layer.
pub fn kv_cache(graph: &Graph) -> Option<KvCache> {
    let mut cache = KvCache::default();
    for (_, data) in graph.nodes.iter() {
        let Op::Attention(attrs) = &data.op else {
            continue;
        };
        let Some(max_context) = attrs.kv_cache else {
            continue;
        };
        let batch = graph.ty(data.inputs[0]).shape[0] as u64;
        let per_token =
            2 * attrs.kv_heads as u64 * attrs.head_dim as u64 * DType::F32.size_in_bytes();
        cache.cached_layers += 1;
        cache.bytes_per_token += per_token;
        cache.max_context = cache.max_context.max(max_context);
        cache.bytes_at_max_context = cache.bytes_at_max_context.saturating_add(
            per_token
                .saturating_mul(max_context as u64)
                .saturating_mul(batch),
        );
    }
    (cache.cached_layers > 0).then_some(cache)
}

/// The number of (query, key) pairs one head of the attention node scores, per batch element.
pub fn attention_pairs(graph: &Graph, data: &NodeData, attrs: &AttentionAttrs) -> u64 {
    let queries = graph.ty(data.inputs[0]).shape[1];
    let keys = graph.ty(data.inputs[1]).shape[1];
    kept_pairs(&attrs.pattern, attrs.causal, queries, keys)
}

/// FLOPs per element of `x * scale + shift`: a multiply unless `scale` is 1, an add unless
/// `shift` is 0.
pub fn affine_flops_per_element(scale: f32, shift: f32) -> u64 {
    u64::from(scale != 1.0) + u64::from(shift != 0.0)
}

/// FLOPs per output element of a conv or linear epilogue. A batch norm in the epilogue is folded
/// into the weights when the model is built, so it costs nothing per inference; a residual is
/// one add, and an activation costs what it costs on its own, as the nodes they replace did.
pub fn epilogue_flops_per_element(epilogue: &Epilogue) -> u64 {
    u64::from(epilogue.residual) + epilogue.activation.map_or(0, Activation::flops_per_element)
}

/// FLOPs per element of the normalization ops, applied to their input.
pub mod per_element {
    /// Inference batch norm folded to `x * scale + shift`.
    pub const BATCH_NORM: u64 = 2;
    /// Mean (add), center (subtract), square (multiply), variance (add), normalize (multiply).
    pub const LAYER_NORM: u64 = 5;
    /// Layer norm's `weight` multiply and `bias` add.
    pub const LAYER_NORM_AFFINE: u64 = 2;
    /// Square, sum, normalize.
    pub const RMS_NORM: u64 = 3;
    /// RMS norm's `weight` multiply.
    pub const RMS_NORM_WEIGHT: u64 = 1;
    /// Max, subtract, exp, sum, divide.
    pub const SOFTMAX: u64 = 5;
    /// Max, subtract, exp, sum, subtract the log of the sum (the log itself is per row).
    pub const LOG_SOFTMAX: u64 = 5;
    /// `x * cos + rotate(x) * sin`: two multiplies and an add.
    pub const ROPE: u64 = 3;
    /// Attention per kept score: the scale multiply and the softmax.
    pub const ATTENTION_SCORE: u64 = 1 + SOFTMAX;
}

/// The MACs and the non-MAC FLOPs of a convolution node `attrs` with input types `inputs` and
/// output type `output`, the layers fused into it included.
fn conv_arithmetic(
    attrs: &crate::ir::ConvAttrs,
    inputs: &[&TensorType],
    output: &TensorType,
) -> (u64, u64) {
    if let Some(depthwise) = &attrs.depthwise {
        // A fused depthwise layer (`ConvAttrs::depthwise`): its own cost on its inputs, then this
        // layer's over its output.
        let depthwise_inputs = attrs.depthwise_inputs(inputs);
        let Ok(middle) =
            crate::ir::infer::infer(&Op::Conv((**depthwise).clone()), &depthwise_inputs)
        else {
            return (0, 0);
        };
        let (depthwise_macs, depthwise_flops) =
            conv_arithmetic(depthwise, &depthwise_inputs, &middle[0]);
        let own = 1 + attrs.weight_inputs();
        let mut own_inputs = vec![&middle[0]];
        own_inputs.extend(&inputs[1..own]);
        let outer = crate::ir::ConvAttrs {
            depthwise: None,
            ..attrs.clone()
        };
        let (macs, flops) = conv_arithmetic(&outer, &own_inputs, output);
        return (
            macs.saturating_add(depthwise_macs),
            flops.saturating_add(depthwise_flops),
        );
    }
    let output_elements = output.element_count();
    let input_elements = inputs[0].element_count();
    // Weight [out, in / groups, kernel..]: each output element is a dot product over one
    // group's input channels and the kernel window, padding included.
    let weight = inputs[1];
    let window: u64 = weight.shape[1..].iter().map(|&dim| dim as u64).product();
    // A fused max pooling (`ConvAttrs::max_pool`): the convolution's own output is the
    // unpooled one, and the pooling compares each of its windows' elements.
    let (conv_elements, pool_flops) = match &attrs.max_pool {
        None => (output_elements, 0),
        Some(pool) => {
            let unpooled = Op::Conv(crate::ir::ConvAttrs {
                max_pool: None,
                ..attrs.clone()
            });
            let conv_elements = crate::ir::infer::infer(&unpooled, inputs)
                .map_or(output_elements, |types| types[0].element_count());
            let pool_window: u64 = pool.kernel.iter().map(|&dim| dim as u64).product();
            (conv_elements, output_elements.saturating_mul(pool_window))
        }
    };
    let bias_flops = if attrs.bias { conv_elements } else { 0 };
    let epilogue_flops = conv_elements.saturating_mul(epilogue_flops_per_element(&attrs.epilogue));
    let (macs, flops) = (
        conv_elements.saturating_mul(window),
        bias_flops
            .saturating_add(epilogue_flops)
            .saturating_add(pool_flops),
    );
    let Some(pointwise) = &attrs.pointwise else {
        return (macs, flops);
    };
    // A fused 1×1 layer (`ConvAttrs::pointwise`): one dot product over the input's
    // channels per element of its output, which has the input's pixels.
    let pointwise_weight = inputs[1 + attrs.weight_inputs()];
    let [out_channels, in_channels] =
        [pointwise_weight.shape[0], pointwise_weight.shape[1]].map(|dim| dim as u64);
    let wide_elements = input_elements / in_channels.max(1) * out_channels;
    let wide_flops = if pointwise.bias { wide_elements } else { 0 }.saturating_add(
        wide_elements.saturating_mul(epilogue_flops_per_element(&pointwise.epilogue)),
    );
    (
        macs.saturating_add(wide_elements.saturating_mul(in_channels)),
        flops.saturating_add(wide_flops),
    )
}

/// Caches pair counts, since every layer of a transformer has the same attention.
#[derive(Default)]
struct PairCounts {
    counts: HashMap<(crate::ir::SparsePattern, bool, usize, usize), u64>,
}

impl PairCounts {
    fn get(&mut self, graph: &Graph, data: &NodeData, attrs: &AttentionAttrs) -> u64 {
        let queries = graph.ty(data.inputs[0]).shape[1];
        let keys = graph.ty(data.inputs[1]).shape[1];
        let key = (attrs.pattern.clone(), attrs.causal, queries, keys);
        *self
            .counts
            .entry(key)
            .or_insert_with(|| attention_pairs(graph, data, attrs))
    }
}

/// The MACs and the non-MAC FLOPs of one node.
fn arithmetic(graph: &Graph, data: &NodeData, pair_counts: &mut PairCounts) -> (u64, u64) {
    let output = graph.ty(data.outputs[0]);
    let output_elements = output.element_count();
    let input = graph.ty(data.inputs[0]);
    let input_elements = input.element_count();
    let each = |flops: u64| (0, output_elements.saturating_mul(flops));
    match &data.op {
        Op::Linear { bias, epilogue } => {
            let in_features = graph.ty(data.inputs[1]).shape[1] as u64;
            let bias_flops = if *bias { output_elements } else { 0 };
            let epilogue_flops =
                output_elements.saturating_mul(epilogue_flops_per_element(epilogue));
            (
                output_elements.saturating_mul(in_features),
                bias_flops.saturating_add(epilogue_flops),
            )
        }
        Op::MatMul => {
            // Every output element is a dot product over the shared dimension k.
            let shared = input.shape[input.rank() - 1] as u64;
            (output_elements.saturating_mul(shared), 0)
        }
        Op::Conv(attrs) => {
            let inputs: Vec<_> = data.inputs.iter().map(|&value| graph.ty(value)).collect();
            conv_arithmetic(attrs, &inputs, output)
        }
        Op::ConvTranspose(attrs) => {
            // Weight [in, out / groups, kernel..]: each input element is multiplied by one
            // group's output channels times the kernel window, and scattered into the output.
            let weight = graph.ty(data.inputs[1]);
            let per_input: u64 = weight.shape[1..].iter().map(|&dim| dim as u64).product();
            let bias_flops = if attrs.bias { output_elements } else { 0 };
            (input_elements.saturating_mul(per_input), bias_flops)
        }
        // Bilinear: 3 lerps of 3 FLOPs (sub, mul, add) per output element; nearest only copies.
        Op::Resize(options) => match options.mode {
            crate::ir::ResizeMode::Linear => each(9),
            crate::ir::ResizeMode::Nearest => (0, 0),
        },
        Op::Pad { .. } => (0, 0),
        Op::MaxPool(attrs) | Op::AvgPool(attrs) => {
            // One comparison (max) or add (average, the last one standing in for the divide) per
            // window element.
            let window: u64 = attrs.kernel.iter().map(|&dim| dim as u64).product();
            each(window)
        }
        Op::GlobalAvgPool { .. } | Op::GlobalMaxPool { .. } => (0, input_elements),
        Op::BatchNorm { .. } => each(per_element::BATCH_NORM),
        Op::LayerNorm { affine, .. } => each(
            per_element::LAYER_NORM
                + if *affine {
                    per_element::LAYER_NORM_AFFINE
                } else {
                    0
                },
        ),
        Op::RmsNorm { affine, .. } => each(
            per_element::RMS_NORM
                + if *affine {
                    per_element::RMS_NORM_WEIGHT
                } else {
                    0
                },
        ),
        Op::Embedding | Op::PositionEmbedding => (0, 0),
        Op::Rope { .. } => each(per_element::ROPE),
        Op::Attention(attrs) => {
            let batch = input.shape[0] as u64;
            let scored = pair_counts
                .get(graph, data, attrs)
                .saturating_mul(batch)
                .saturating_mul(attrs.heads as u64);
            // QKᵀ and AV: head_dim MACs per kept pair each.
            let macs = scored.saturating_mul(2 * attrs.head_dim as u64);
            (macs, scored.saturating_mul(per_element::ATTENTION_SCORE))
        }
        Op::Activation(activation) => each(activation.flops_per_element()),
        Op::Softmax { .. } => each(per_element::SOFTMAX),
        Op::LogSoftmax { .. } => each(per_element::LOG_SOFTMAX),
        Op::Reduce { op, .. } => (0, op.flops(input_elements, output_elements)),
        Op::Binary(op) => each(op.flops_per_element()),
        Op::Affine { scale, shift } => each(affine_flops_per_element(*scale, *shift)),
        Op::ElementwiseChain(steps) => each(
            steps
                .iter()
                .map(|step| match step {
                    ElementwiseStep::Activation(activation) => activation.flops_per_element(),
                    ElementwiseStep::Affine { scale, shift } => {
                        affine_flops_per_element(*scale, *shift)
                    }
                })
                .sum(),
        ),
        Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Concat { .. }
        | Op::Slice { .. }
        | Op::Select { .. } => (0, 0),
    }
}
