//! Cost reports: the [`cost`](crate::cost) analysis of a graph as one serializable [`Report`],
//! rendered as a terminal table, Markdown, JSON, SVG charts, and the graph itself as DOT/SVG.
//!
//! The JSON form is a stable interface; its schema is documented in `docs/cost-model.md` and
//! versioned by [`SCHEMA_VERSION`]. Adding a field is compatible; renaming, removing or changing
//! the meaning of one bumps the version.

pub mod chart;
pub mod graph_view;
mod svg;
pub mod table;

use serde::Serialize;

use crate::codegen::MemoryPlan;
use crate::cost::{self, CostTable};
use crate::ir::{Graph, Node, OpCategory, SecondaryMap};

/// The version of the JSON schema of [`Report`].
pub const SCHEMA_VERSION: u32 = 2;

/// Which fused group each node belongs to.
///
/// Code generation runs a fused group as one kernel: [`FusionGroups::from_optimized`] reads the
/// groups of a graph as written off the optimized graph, whose nodes record what they absorbed.
#[derive(Clone, Debug)]
pub struct FusionGroups {
    /// The group of every node; groups are numbered densely from 0 in execution order.
    pub group_of: SecondaryMap<Node, usize>,
}

impl FusionGroups {
    /// One group per node.
    pub fn singletons(graph: &Graph) -> Self {
        let mut group_of = SecondaryMap::with_default(graph.nodes.len(), 0);
        for node in graph.nodes.handles() {
            group_of[node] = node.index();
        }
        FusionGroups { group_of }
    }

    /// The groups of `graph` (as lowered, before any pass) that `optimized` (the same graph after
    /// the passes) runs as one node each. Nodes the passes removed are groups of their own.
    pub fn from_optimized(graph: &Graph, optimized: &Graph) -> Self {
        let mut group_of = SecondaryMap::with_default(graph.nodes.len(), usize::MAX);
        for (fused, data) in optimized.nodes.iter() {
            for &index in &data.origin {
                if index < graph.nodes.len() && group_of[Node::from_index(index)] == usize::MAX {
                    group_of[Node::from_index(index)] = fused.index();
                }
            }
        }
        // Number the groups densely in execution order.
        let mut renumber = std::collections::HashMap::new();
        for node in graph.nodes.handles() {
            let key = match group_of[node] {
                usize::MAX => (1, node.index()),
                fused => (0, fused),
            };
            let next = renumber.len();
            group_of[node] = *renumber.entry(key).or_insert(next);
        }
        FusionGroups { group_of }
    }

    /// The members of every group with more than one node, in group order.
    pub fn fused(&self, graph: &Graph) -> Vec<(usize, Vec<Node>)> {
        let mut groups: std::collections::BTreeMap<usize, Vec<Node>> = Default::default();
        for node in graph.nodes.handles() {
            groups.entry(self.group_of[node]).or_default().push(node);
        }
        groups
            .into_iter()
            .filter(|(_, members)| members.len() > 1)
            .collect()
    }
}

/// What a report covers beyond the graph itself.
#[derive(Clone, Debug, Default)]
pub struct ReportOptions {
    /// The fused groups; `None` makes every node its own group.
    pub groups: Option<FusionGroups>,
}

/// The cost report of one network: what `nnc report --format json` prints.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub schema_version: u32,
    pub network: String,
    /// The symbolic dimensions and the sizes the report was computed for.
    pub dims: Vec<DimReport>,
    pub inputs: Vec<TensorReport>,
    pub outputs: Vec<TensorReport>,
    /// One entry per node, in execution order.
    pub layers: Vec<LayerReport>,
    pub totals: TotalsReport,
    pub memory: MemoryReport,
    /// `None` (JSON `null`) when no attention keeps a KV cache.
    pub kv_cache: Option<KvCacheReport>,
}

/// A bound symbolic dimension.
#[derive(Clone, Debug, Serialize)]
pub struct DimReport {
    pub name: String,
    pub size: usize,
}

/// A network input or output.
#[derive(Clone, Debug, Serialize)]
pub struct TensorReport {
    pub name: String,
    pub dtype: &'static str,
    pub shape: Vec<usize>,
    pub bytes: u64,
}

/// One node of the graph.
#[derive(Clone, Debug, Serialize)]
pub struct LayerReport {
    /// The node's position in execution order.
    pub index: usize,
    /// The layer name (`layer1.0.conv1`), or the variable name for layers without weights.
    pub name: String,
    /// The op as the `.nn` language names it (`conv2d`, `relu`, `attention`).
    pub op: &'static str,
    /// The op's category, for colours; not part of the JSON form.
    #[serde(skip)]
    pub category: OpCategory,
    pub output_dtype: &'static str,
    /// The shape of the node's first output.
    pub output_shape: Vec<usize>,
    /// Trainable parameters first used by this layer.
    pub parameters: u64,
    /// Parameters of an earlier layer this layer reuses (tied weights), not counted again.
    pub tied_parameters: u64,
    /// Buffer elements (batch norm statistics) first used by this layer.
    pub buffers: u64,
    /// Multiply-accumulates, float and integer.
    pub macs: u64,
    /// The part of `macs` done in integers (quantized weights in the fast mode).
    pub integer_macs: u64,
    /// Floating-point operations: `2 × (macs - integer_macs)` plus the rest of the arithmetic.
    pub flops: u64,
    /// Integer operations: `2 × integer_macs`.
    pub ops: u64,
    /// Bytes of the layer's outputs.
    pub activation_bytes: u64,
    /// The fused group this layer runs in.
    pub group: usize,
}

/// Whole-network sums.
#[derive(Clone, Debug, Serialize)]
pub struct TotalsReport {
    pub layers: usize,
    pub groups: usize,
    pub parameters: u64,
    pub buffers: u64,
    /// The storage of the weights: `f32`, a quantized format when every weight is in it, or
    /// `mixed` (see `weight_storage`).
    pub weight_dtype: &'static str,
    /// Bytes of every weight tensor, buffers included, as resident once loaded: the model's
    /// size, the sum of `weight_storage`'s bytes.
    pub weight_bytes: u64,
    /// The model's size per storage type, f32 first.
    pub weight_storage: Vec<StorageReport>,
    /// For a decoder with a KV cache: bytes of weights one generated token reads (each read
    /// once, as stored). `None` (JSON `null`) for other networks.
    pub weight_bytes_per_token: Option<u64>,
    /// Multiply-accumulates, float and integer.
    pub macs: u64,
    pub float_macs: u64,
    pub integer_macs: u64,
    /// Floating-point operations: `2 × float_macs` plus the rest of the arithmetic.
    pub flops: u64,
    /// Integer operations: `2 × integer_macs`.
    pub ops: u64,
}

/// The weights resident in one storage type.
#[derive(Clone, Debug, Serialize)]
pub struct StorageReport {
    /// `f32`, `q8_0`, `q4_0`, `q4_1`, ...
    pub storage: &'static str,
    /// Weight tensors with a copy in this storage.
    pub tensors: usize,
    /// Their elements.
    pub elements: u64,
    /// Their bytes in this storage.
    pub bytes: u64,
}

/// Peak activation memory, three ways (see [`cost::memory`]).
#[derive(Clone, Debug, Serialize)]
pub struct MemoryReport {
    pub naive_bytes: u64,
    pub planned_bytes: u64,
    pub f32_arena_bytes: u64,
    pub i64_arena_bytes: u64,
    pub lower_bound_bytes: u64,
    /// The step at which the lower bound is reached: 0 for the inputs, `i + 1` for layer `i`.
    pub lower_bound_step: usize,
}

/// The KV cache of a decoder.
#[derive(Clone, Debug, Serialize)]
pub struct KvCacheReport {
    pub cached_layers: usize,
    /// Bytes one token adds, for one sequence.
    pub bytes_per_token: u64,
    pub max_context: usize,
    /// Bytes with every cache full, for the network's batch.
    pub bytes_at_max_context: u64,
}

/// Builds the report of `graph`, with the memory figures of `plan`.
pub fn build(graph: &Graph, plan: &MemoryPlan, options: &ReportOptions) -> Report {
    let costs: CostTable = cost::analyze(graph);
    let totals = costs.totals(graph);
    let memory = cost::memory_figures(graph, plan);
    let groups = options
        .groups
        .clone()
        .unwrap_or_else(|| FusionGroups::singletons(graph));
    let layers: Vec<LayerReport> = graph
        .nodes
        .iter()
        .map(|(node, data)| {
            let cost = costs.nodes[node];
            let output = graph.ty(data.outputs[0]);
            LayerReport {
                index: node.index(),
                name: data.name.clone(),
                op: data.op.name(),
                category: data.op.category(),
                output_dtype: output.dtype.name(),
                output_shape: output.shape.clone(),
                parameters: cost.parameters,
                tied_parameters: cost.tied_parameters,
                buffers: cost.buffers,
                macs: cost.macs,
                integer_macs: cost.integer_macs,
                flops: cost.flops,
                ops: cost.ops,
                activation_bytes: cost.activation_bytes,
                group: groups.group_of[node],
            }
        })
        .collect();
    let group_count = {
        let mut ids: Vec<usize> = layers.iter().map(|layer| layer.group).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    };
    let tensor = |name: &str, value| {
        let ty = graph.ty(value);
        TensorReport {
            name: name.to_string(),
            dtype: ty.dtype.name(),
            shape: ty.shape.clone(),
            bytes: ty.size_in_bytes(),
        }
    };
    let weight_storage: Vec<StorageReport> = cost::weight_storage(graph)
        .into_iter()
        .map(|size| StorageReport {
            storage: size.storage,
            tensors: size.tensors,
            elements: size.elements,
            bytes: size.bytes,
        })
        .collect();
    let weight_dtype = match weight_storage.as_slice() {
        [only] => only.storage,
        [] => crate::ir::DType::F32.name(),
        _ => "mixed",
    };
    // One generated token is a one-token step of one sequence.
    let weight_bytes_per_token = crate::codegen::decode_step_nodes(graph)
        .map(|is_step| cost::weight_bytes_per_step(graph, |node| is_step[node.index()], 1));
    Report {
        schema_version: SCHEMA_VERSION,
        network: graph.name.clone(),
        dims: graph
            .dims
            .iter()
            .map(|(name, size)| DimReport {
                name: name.clone(),
                size: *size,
            })
            .collect(),
        inputs: graph
            .inputs
            .iter()
            .map(|input| tensor(&input.name, input.value))
            .collect(),
        outputs: graph
            .outputs
            .iter()
            .map(|output| tensor(&output.name, output.value))
            .collect(),
        totals: TotalsReport {
            layers: layers.len(),
            groups: group_count,
            parameters: totals.parameters,
            buffers: totals.buffers,
            weight_dtype,
            weight_bytes: totals.weight_bytes,
            weight_storage,
            weight_bytes_per_token,
            macs: totals.macs,
            float_macs: totals.macs - totals.integer_macs,
            integer_macs: totals.integer_macs,
            flops: totals.flops,
            ops: totals.ops,
        },
        layers,
        memory: MemoryReport {
            naive_bytes: memory.naive_bytes,
            planned_bytes: memory.planned_bytes,
            f32_arena_bytes: memory.f32_arena_bytes,
            i64_arena_bytes: memory.i64_arena_bytes,
            lower_bound_bytes: memory.lower_bound_bytes,
            lower_bound_step: memory.lower_bound_step,
        },
        kv_cache: cost::kv_cache(graph).map(|cache| KvCacheReport {
            cached_layers: cache.cached_layers,
            bytes_per_token: cache.bytes_per_token,
            max_context: cache.max_context,
            bytes_at_max_context: cache.bytes_at_max_context,
        }),
    }
}

impl Report {
    /// The report as pretty-printed JSON, ending in a newline.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("a report serializes");
        text.push('\n');
        text
    }
}

/// `1234567` as `1,234,567`.
pub fn group_digits(value: u64) -> String {
    crate::ir::print::group_digits(value)
}

/// A count with a decimal unit: `1.81 G`, `300.77 M`, `950`.
pub fn human_count(value: u64) -> String {
    const UNITS: [(f64, &str); 4] = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")];
    let value_f = value as f64;
    for (scale, unit) in UNITS {
        if value_f >= scale {
            return format!("{:.2} {unit}", value_f / scale);
        }
    }
    value.to_string()
}

/// A byte count with a binary unit: `44.59 MiB`, `512 B`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [(f64, &str); 4] = [
        (1024.0 * 1024.0 * 1024.0 * 1024.0, "TiB"),
        (1024.0 * 1024.0 * 1024.0, "GiB"),
        (1024.0 * 1024.0, "MiB"),
        (1024.0, "KiB"),
    ];
    let value = bytes as f64;
    for (scale, unit) in UNITS {
        if value >= scale {
            return format!("{:.2} {unit}", value / scale);
        }
    }
    format!("{bytes} B")
}
