//! `nnc export`: an IR graph and its weights as an ONNX model (opset 17, IR version 8).
//!
//! Every IR op becomes standard ONNX ops (no custom domain), so the model opens in Netron and runs
//! in ONNX Runtime: most map one to one (`conv2d` to `Conv`, `layer_norm` to
//! `LayerNormalization`), the rest are decomposed the way PyTorch's exporter writes them
//! (`rms_norm` into `Pow`/`ReduceMean`/`Add`/`Sqrt`/`Div`/`Mul`, `attention` into
//! `MatMul`/`Mul`/`Add`/`Softmax`/`MatMul` with its masks as constants, `rope` into
//! `Slice`/`Neg`/`Concat`/`Mul`/`Add` with its cosine and sine tables as initializers). The
//! per-op rules are in [`lower`]; docs/onnx.md lists them.
//!
//! Every weight becomes an initializer under its state-dict name. Graph inputs and outputs keep
//! their names, element types and (static) shapes. Ops that opset 17 cannot express (an attention
//! over a KV cache, a channels-last layout) are reported all at once in
//! [`ExportError::Unsupported`].
//!
//! The graph may be optimized first with [`optimize_for_export`]: the passes of `-O1` and `-O2`
//! but the layout choice (ONNX convolutions are NCHW; runtimes choose their own layouts). What
//! the fusion passes folded into a layer's epilogue is written out again after it; a folded batch
//! norm is applied to the layer's weights here, as nnc does when it loads them.

mod lower;

use std::collections::{HashMap, HashSet};

use super::proto::{self, tensor_proto::DataType};
use crate::ir::{DType, Graph, Value, ValueDef};
use crate::passes::{self, OptLevel};

/// The ONNX operator set the exporter writes.
pub const OPSET: i64 = 17;
/// The ONNX IR version the exporter writes (the one that goes with opset 17).
pub const IR_VERSION: i64 = 8;

/// A node of the graph that ONNX opset 17 cannot express.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsupportedNode {
    /// The layer name (`layers.0.self_attn`).
    pub node: String,
    /// The op as the IR prints it (`attention`).
    pub op: String,
    /// Why, and what to do instead.
    pub reason: String,
}

/// Why a graph could not be exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(
        "network `{network}` cannot be exported to ONNX opset {OPSET}: {} node{} use{} what ONNX cannot express:\n{}",
        nodes.len(),
        if nodes.len() == 1 { "" } else { "s" },
        if nodes.len() == 1 { "s" } else { "" },
        list_unsupported(nodes)
    )]
    Unsupported {
        network: String,
        nodes: Vec<UnsupportedNode>,
    },
    #[error("the network has {expected} weights but {got} were given")]
    WeightCount { expected: usize, got: usize },
    #[error("weight `{name}` has {got} values, but its shape {shape} holds {expected}")]
    WeightSize {
        name: String,
        shape: String,
        expected: u64,
        got: usize,
    },
}

fn list_unsupported(nodes: &[UnsupportedNode]) -> String {
    nodes
        .iter()
        .map(|node| format!("  - `{}` ({}): {}", node.node, node.op, node.reason))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The passes [`optimize_for_export`] runs at `level`: the optimizer's, without the layout choice.
pub fn export_pipeline(level: OptLevel) -> Vec<passes::Pass> {
    passes::pipeline(level)
        .into_iter()
        .filter(|(name, _)| *name != "choose-layout")
        .collect()
}

/// Optimizes `graph` at `level` for export: every pass of that level but the layout choice.
/// Returns the names of the passes that changed something.
pub fn optimize_for_export(graph: &mut Graph, level: OptLevel) -> Vec<&'static str> {
    passes::run_passes(graph, export_pipeline(level), |_, _| {})
}

/// Exports `graph` with `weights` (the f32 values of each param, in param order, as
/// `interpret::read_weights` and `interpret::random_weights` give them) as an ONNX model.
pub fn export(graph: &Graph, weights: &[Vec<f32>]) -> Result<proto::ModelProto, ExportError> {
    check_weights(graph, weights)?;
    let mut exporter = Exporter::new(graph, weights);
    for (_, data) in graph.nodes.iter() {
        if let Err(reason) = exporter.lower_node(data) {
            // A name for what the node would have computed, so that the nodes after it are
            // still checked and every unsupported node is reported in one run.
            for &output in &data.outputs {
                let placeholder = exporter.fresh_value("unsupported");
                exporter.names[output.index()] = Some(placeholder);
            }
            exporter.unsupported.push(UnsupportedNode {
                node: data.name.clone(),
                op: data.op.name().to_string(),
                reason,
            });
        }
    }
    if !exporter.unsupported.is_empty() {
        return Err(ExportError::Unsupported {
            network: graph.name.clone(),
            nodes: exporter.unsupported,
        });
    }
    Ok(exporter.finish())
}

fn check_weights(graph: &Graph, weights: &[Vec<f32>]) -> Result<(), ExportError> {
    if weights.len() != graph.params.len() {
        return Err(ExportError::WeightCount {
            expected: graph.params.len(),
            got: weights.len(),
        });
    }
    for ((_, param), data) in graph.params.iter().zip(weights) {
        let ty = graph.ty(param.value);
        if ty.element_count() != data.len() as u64 {
            return Err(ExportError::WeightSize {
                name: param.name.clone(),
                shape: crate::ir::types::format_shape(&ty.shape),
                expected: ty.element_count(),
                got: data.len(),
            });
        }
    }
    Ok(())
}

/// The element type of an ONNX tensor.
fn data_type(dtype: DType) -> DataType {
    match dtype {
        DType::F32 => DataType::Float,
        DType::I64 => DataType::Int64,
    }
}

/// A constant's identity, for sharing one initializer between the nodes that need it.
#[derive(Clone, PartialEq, Eq, Hash)]
struct ConstantKey {
    data_type: i32,
    dims: Vec<i64>,
    bytes: Vec<u8>,
}

/// The state of one export: the ONNX nodes and initializers written so far, and the ONNX name of
/// every IR value already computed.
struct Exporter<'g> {
    graph: &'g Graph,
    weights: &'g [Vec<f32>],
    /// The ONNX name of each IR value, once it has one.
    names: Vec<Option<String>>,
    /// Value names in use (inputs, weights, outputs, intermediates), so new ones are unique.
    taken_values: HashSet<String>,
    /// Node names in use.
    taken_nodes: HashSet<String>,
    /// The graph output each node-defined value must be written to (its first output).
    output_names: HashMap<Value, String>,
    nodes: Vec<proto::NodeProto>,
    initializers: Vec<proto::TensorProto>,
    /// Weights already written as initializers.
    written_params: HashSet<usize>,
    constants: HashMap<ConstantKey, String>,
    unsupported: Vec<UnsupportedNode>,
    /// The layer name of the node being lowered, the prefix of the names it makes.
    layer: String,
}

impl<'g> Exporter<'g> {
    fn new(graph: &'g Graph, weights: &'g [Vec<f32>]) -> Self {
        let mut exporter = Exporter {
            graph,
            weights,
            names: vec![None; graph.values.len()],
            taken_values: HashSet::new(),
            taken_nodes: HashSet::new(),
            output_names: HashMap::new(),
            nodes: Vec::new(),
            initializers: Vec::new(),
            written_params: HashSet::new(),
            constants: HashMap::new(),
            unsupported: Vec::new(),
            layer: String::new(),
        };
        for input in &graph.inputs {
            exporter.taken_values.insert(input.name.clone());
            exporter.names[input.value.index()] = Some(input.name.clone());
        }
        for (_, param) in graph.params.iter() {
            exporter.taken_values.insert(param.name.clone());
        }
        for output in &graph.outputs {
            let node_defined = matches!(graph.values[output.value].def, ValueDef::Node { .. });
            if node_defined
                && !exporter.output_names.contains_key(&output.value)
                && exporter.taken_values.insert(output.name.clone())
            {
                exporter
                    .output_names
                    .insert(output.value, output.name.clone());
            }
        }
        exporter
    }

    /// The ONNX name of `value`, writing its initializer on first use if it is a weight.
    fn value(&mut self, value: Value) -> String {
        if let Some(name) = &self.names[value.index()] {
            return name.clone();
        }
        let ValueDef::Param(param) = self.graph.values[value].def else {
            unreachable!("value: {value:?} is used before the node that defines it")
        };
        let data = &self.graph.params[param];
        if self.written_params.insert(param.index()) {
            let ty = self.graph.ty(value);
            self.initializers.push(tensor_f32(
                &data.name,
                &ty.shape,
                &self.weights[param.index()],
            ));
        }
        self.names[value.index()] = Some(data.name.clone());
        data.name.clone()
    }

    /// The f32 data of `value` if it is a weight.
    fn weight_data(&self, value: Value) -> Option<&'g [f32]> {
        match self.graph.values[value].def {
            ValueDef::Param(param) => Some(&self.weights[param.index()]),
            _ => None,
        }
    }

    /// A new value name, `{layer}/{what}`, made unique with a number.
    fn fresh_value(&mut self, what: &str) -> String {
        // A name that already starts with the layer's (a folded weight) is not prefixed again.
        let base = match self.layer.is_empty() || what.starts_with(&self.layer) {
            true => what.to_string(),
            false => format!("{}/{what}", self.layer),
        };
        unique(&mut self.taken_values, base)
    }

    /// Appends a node `op_type(inputs)` with `attributes` and returns its output's name.
    fn node(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        attributes: Vec<proto::AttributeProto>,
    ) -> String {
        let output = self.fresh_value(&format!("{op_type}_output"));
        let base = match self.layer.is_empty() {
            true => op_type.to_string(),
            false => format!("{}/{op_type}", self.layer),
        };
        let name = unique(&mut self.taken_nodes, base);
        self.nodes.push(proto::NodeProto {
            input: inputs.iter().map(|input| input.to_string()).collect(),
            output: vec![output.clone()],
            name: Some(name),
            op_type: Some(op_type.to_string()),
            domain: Some(String::new()),
            attribute: attributes,
            ..Default::default()
        });
        output
    }

    /// A constant initializer, shared with any earlier constant of the same type and contents.
    fn constant(&mut self, what: &str, tensor: proto::TensorProto) -> String {
        let key = ConstantKey {
            data_type: tensor.data_type.unwrap_or_default(),
            dims: tensor.dims.clone(),
            bytes: tensor.raw_data.clone().unwrap_or_default(),
        };
        if let Some(name) = self.constants.get(&key) {
            return name.clone();
        }
        let name = self.fresh_value(what);
        self.initializers.push(proto::TensorProto {
            name: Some(name.clone()),
            ..tensor
        });
        self.constants.insert(key, name.clone());
        name
    }

    fn constant_f32(&mut self, what: &str, shape: &[usize], data: &[f32]) -> String {
        self.constant(what, tensor_f32("", shape, data))
    }

    fn scalar_f32(&mut self, what: &str, value: f32) -> String {
        self.constant_f32(what, &[], &[value])
    }

    fn constant_i64(&mut self, what: &str, data: &[i64]) -> String {
        self.constant(what, tensor_i64(&[data.len()], data))
    }

    /// Lowers one IR node to ONNX nodes, naming its result; `Err` says why it cannot be.
    fn lower_node(&mut self, data: &crate::ir::NodeData) -> Result<(), String> {
        let &[output] = data.outputs.as_slice() else {
            return Err(format!(
                "{} outputs; the exporter handles one",
                data.outputs.len()
            ));
        };
        self.layer = data.name.clone();
        let first_new_node = self.nodes.len();
        let result = lower::lower(self, data)?;
        match self.output_names.get(&output).cloned() {
            // The result is the last node's output, made here: that node writes the graph
            // output itself. Otherwise (a node that computes nothing) an `Identity` does.
            Some(output_name) => {
                let renamed = self.nodes.len() > first_new_node
                    && self
                        .nodes
                        .last()
                        .is_some_and(|last| last.output[0] == result);
                if renamed {
                    self.nodes.last_mut().expect("checked above").output[0] = output_name.clone();
                } else {
                    self.identity(&result, &output_name);
                }
                self.names[output.index()] = Some(output_name);
            }
            None => self.names[output.index()] = Some(result),
        }
        Ok(())
    }

    /// Appends `Identity(input) -> output`.
    fn identity(&mut self, input: &str, output: &str) {
        let name = unique(&mut self.taken_nodes, format!("{output}/Identity"));
        self.nodes.push(proto::NodeProto {
            input: vec![input.to_string()],
            output: vec![output.to_string()],
            name: Some(name),
            op_type: Some("Identity".into()),
            domain: Some(String::new()),
            ..Default::default()
        });
    }

    /// The model: graph inputs and outputs with their types, nodes, initializers.
    fn finish(mut self) -> proto::ModelProto {
        let graph = self.graph;
        self.layer.clear();
        // Outputs that no node of their own writes: a network input or weight returned as it
        // is, or a value returned under a second name.
        for output in &graph.outputs {
            if self.output_names.get(&output.value) != Some(&output.name) {
                let source = self.value(output.value);
                self.identity(&source, &output.name);
            }
        }
        let value_info = |name: &str, value: Value| {
            let ty = graph.ty(value);
            proto::ValueInfoProto {
                name: Some(name.to_string()),
                r#type: Some(proto::TypeProto {
                    value: Some(proto::type_proto::Value::TensorType(
                        proto::type_proto::Tensor {
                            elem_type: Some(data_type(ty.dtype) as i32),
                            shape: Some(proto::TensorShapeProto {
                                dim: ty
                                    .shape
                                    .iter()
                                    .map(|&size| proto::tensor_shape_proto::Dimension {
                                        value: Some(
                                            proto::tensor_shape_proto::dimension::Value::DimValue(
                                                size as i64,
                                            ),
                                        ),
                                        ..Default::default()
                                    })
                                    .collect(),
                            }),
                        },
                    )),
                    ..Default::default()
                }),
                ..Default::default()
            }
        };
        let inputs = graph
            .inputs
            .iter()
            .map(|input| value_info(&input.name, input.value))
            .collect();
        let outputs = graph
            .outputs
            .iter()
            .map(|output| value_info(&output.name, output.value))
            .collect();
        proto::ModelProto {
            ir_version: Some(IR_VERSION),
            opset_import: vec![proto::OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(OPSET),
            }],
            producer_name: Some("nnc".into()),
            producer_version: Some(env!("CARGO_PKG_VERSION").into()),
            graph: Some(proto::GraphProto {
                node: self.nodes,
                name: Some(graph.name.clone()),
                initializer: self.initializers,
                input: inputs,
                output: outputs,
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// `base`, or `base_1`, `base_2`… if taken; marks the result as taken.
fn unique(taken: &mut HashSet<String>, base: String) -> String {
    if taken.insert(base.clone()) {
        return base;
    }
    (1..)
        .map(|number| format!("{base}_{number}"))
        .find(|candidate| taken.insert(candidate.clone()))
        .expect("some number is free")
}

fn dims(shape: &[usize]) -> Vec<i64> {
    shape.iter().map(|&size| size as i64).collect()
}

/// An f32 tensor named `name` (empty for a constant named later), stored as raw little-endian
/// bytes, as PyTorch's exporter writes initializers.
fn tensor_f32(name: &str, shape: &[usize], data: &[f32]) -> proto::TensorProto {
    proto::TensorProto {
        name: Some(name.to_string()),
        dims: dims(shape),
        data_type: Some(DataType::Float as i32),
        raw_data: Some(data.iter().flat_map(|value| value.to_le_bytes()).collect()),
        ..Default::default()
    }
}

fn tensor_i64(shape: &[usize], data: &[i64]) -> proto::TensorProto {
    proto::TensorProto {
        dims: dims(shape),
        data_type: Some(DataType::Int64 as i32),
        raw_data: Some(data.iter().flat_map(|value| value.to_le_bytes()).collect()),
        ..Default::default()
    }
}

fn attribute_int(name: &str, value: i64) -> proto::AttributeProto {
    proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(proto::attribute_proto::AttributeType::Int as i32),
        i: Some(value),
        ..Default::default()
    }
}

fn attribute_ints(name: &str, values: &[usize]) -> proto::AttributeProto {
    proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(proto::attribute_proto::AttributeType::Ints as i32),
        ints: values.iter().map(|&value| value as i64).collect(),
        ..Default::default()
    }
}

fn attribute_float(name: &str, value: f32) -> proto::AttributeProto {
    proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(proto::attribute_proto::AttributeType::Float as i32),
        f: Some(value),
        ..Default::default()
    }
}
