//! The reference interpreter: runs an IR graph node by node with the runtime's kernels.
//!
//! It is the oracle that generated code is tested against, and it serves users who want no build
//! step (`nnc run`). Weights are prepared once, in [`Interpreter::new`] (linear weights packed for
//! the GEMM, batch norms folded to a scale and shift); [`Interpreter::run`] then only computes.
//! Each intermediate tensor is freed after its last use.

mod execute;
pub mod npy;
mod prepare;

use std::collections::HashMap;

use ndarray::{ArrayD, IxDyn};
use nnc_runtime::KernelError;
use nnc_runtime::kernels::conv;
use nnc_runtime::kernels::quantized::QuantizedMatrix;
use nnc_runtime::weights::{Init, LoadOptions, LoadedWeights, Weight, WeightSpec, WeightsError};

use crate::ir::{self, DType, Graph, ParamInit, ValueDef};
use crate::kernel_call::{self, NodeCall, Site};
use prepare::Prepared;

/// A tensor at the interpreter's boundary.
#[derive(Clone, Debug, PartialEq)]
pub enum Tensor {
    F32(ArrayD<f32>),
    I64(ArrayD<i64>),
}

impl Tensor {
    fn dtype(&self) -> DType {
        match self {
            Tensor::F32(_) => DType::F32,
            Tensor::I64(_) => DType::I64,
        }
    }

    fn shape(&self) -> &[usize] {
        match self {
            Tensor::F32(array) => array.shape(),
            Tensor::I64(array) => array.shape(),
        }
    }
}

/// Why a network could not be run.
#[derive(Debug, thiserror::Error)]
pub enum InterpretError {
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error("the network has no input `{name}`; its inputs are {inputs}")]
    UnknownInput { name: String, inputs: String },
    #[error("the input `{name}` is missing")]
    MissingInput { name: String },
    #[error("the input `{name}` must be {expected}, but it is {found}")]
    InputType {
        name: String,
        expected: String,
        found: String,
    },
    #[error("layer `{layer}` ({op}) failed: {source}")]
    Kernel {
        layer: String,
        op: &'static str,
        source: KernelError,
    },
    #[error("the network has {expected} weights, but {found} were given")]
    WeightCount { expected: usize, found: usize },
    /// A weight, or a tensor computed on the way, does not fit in memory.
    #[error(transparent)]
    OutOfMemory(#[from] nnc_runtime::alloc::AllocError),
}

/// One weight a graph needs, owned: its name, shape and initialization.
#[derive(Clone, Debug)]
pub struct WeightRequirement {
    pub name: String,
    pub shape: Vec<usize>,
    pub init: Init,
    pub is_buffer: bool,
}

/// The weights `graph` needs, in param order.
pub fn weight_requirements(graph: &Graph) -> Vec<WeightRequirement> {
    graph
        .params
        .iter()
        .map(|(_, param)| WeightRequirement {
            name: param.name.clone(),
            shape: graph.ty(param.value).shape.clone(),
            init: match param.init {
                ParamInit::FanIn { fan_in } => Init::FanIn { fan_in },
                ParamInit::Normal => Init::Normal,
                ParamInit::Ones => Init::Ones,
                ParamInit::Zeros => Init::Zeros,
            },
            is_buffer: param.is_buffer,
        })
        .collect()
}

fn specs(requirements: &[WeightRequirement]) -> Vec<WeightSpec<'_>> {
    requirements
        .iter()
        .map(|weight| WeightSpec {
            name: &weight.name,
            shape: &weight.shape,
            init: weight.init,
        })
        .collect()
}

/// Loads the weights of `graph` from safetensors or GGUF bytes (told apart by GGUF's magic
/// number), in param order. Quantized GGUF tensors are dequantized to f32.
pub fn load_weights(
    graph: &Graph,
    bytes: &[u8],
    source_name: &str,
) -> Result<Vec<Vec<f32>>, WeightsError> {
    let requirements = weight_requirements(graph);
    nnc_runtime::weights::load_weights(bytes, &specs(&requirements), source_name)
}

/// Loads the weights of `graph` as [`load_weights`] does, except that the weights of quantized
/// layers keep a GGUF file's blocks as they are when it stores them as Q8_0, Q4_0 or Q4_1 (as
/// generated `from_gguf` does): what `nnc run` loads.
pub fn load_stored_weights(
    graph: &Graph,
    bytes: &[u8],
    source_name: &str,
) -> Result<Vec<Weight>, WeightsError> {
    let requirements = weight_requirements(graph);
    nnc_runtime::weights::load_weights_keeping_blocks(
        bytes,
        &specs(&requirements),
        &quantized_positions(graph),
        source_name,
    )
}

/// Reads the weights of `graph` from `path` with `options`, in param order, and says what loading
/// ignored: `path` is a safetensors or GGUF file, a sharded checkpoint's
/// `model.safetensors.index.json`, or a folder holding either (see
/// [`nnc_runtime::weights::read_weights_with`]).
pub fn read_weights(
    graph: &Graph,
    path: &std::path::Path,
    options: &LoadOptions,
) -> Result<LoadedWeights, WeightsError> {
    let requirements = weight_requirements(graph);
    nnc_runtime::weights::read_weights_with(path, &specs(&requirements), options)
}

/// The positions of the params of `graph` whose layers are quantized: those that keep a GGUF
/// file's blocks as they are.
fn quantized_positions(graph: &Graph) -> Vec<usize> {
    graph
        .params
        .iter()
        .enumerate()
        .filter(|(_, (_, param))| matches!(param.storage, ir::WeightStorage::Quantized(_)))
        .map(|(position, _)| position)
        .collect()
}

/// Reads the weights of `graph` from `path` as [`read_weights`] does, except that the weights of
/// quantized layers keep a GGUF file's blocks as [`load_stored_weights`] does: what `nnc run`
/// loads.
pub fn read_stored_weights(
    graph: &Graph,
    path: &std::path::Path,
    options: &LoadOptions,
) -> Result<LoadedWeights<Weight>, WeightsError> {
    let requirements = weight_requirements(graph);
    nnc_runtime::weights::read_weights_keeping_blocks_with(
        path,
        &specs(&requirements),
        &quantized_positions(graph),
        options,
    )
}

/// Draws the weights of `graph` from their initializers, deterministically from `seed`. Panics
/// when a weight does not fit in memory; see [`try_random_weights`].
pub fn random_weights(graph: &Graph, seed: u64) -> Vec<Vec<f32>> {
    let requirements = weight_requirements(graph);
    nnc_runtime::weights::random_weights(&specs(&requirements), seed)
}

/// [`random_weights`], with an error naming the weight and its bytes when one does not fit in
/// memory.
pub fn try_random_weights(graph: &Graph, seed: u64) -> Result<Vec<Vec<f32>>, WeightsError> {
    let requirements = weight_requirements(graph);
    nnc_runtime::weights::try_random_weights(&specs(&requirements), seed)
}

/// Runs one graph with one set of weights.
pub struct Interpreter<'g> {
    graph: &'g Graph,
    /// The f32 values of each weight; empty for a weight that came as blocks and that nothing
    /// reads in f32.
    weights: Vec<Vec<f32>>,
    /// The blocks of each weight that came as blocks (a GGUF tensor kept as stored).
    blocks: Vec<Option<QuantizedMatrix>>,
    /// For each node, by index: its call, and what it prepared from its weights.
    calls: Vec<(NodeCall, Option<Prepared>)>,
    /// For each value, the index of the last node that reads it (`usize::MAX` for outputs).
    last_use: HashMap<ir::Value, usize>,
}

/// Whether a node reads weight `value` in f32: any node but a linear layer that multiplies by
/// it as it is (with no batch norm to fold into it), or an embedding looking rows up in a stored
/// table ([`Graph::is_stored_table`]).
fn read_in_f32(graph: &Graph, value: ir::Value) -> bool {
    if graph.is_stored_table(value) {
        return false;
    }
    graph.nodes.iter().any(|(_, node)| {
        let multiplies_as_stored = matches!(
            &node.op,
            ir::Op::Linear { epilogue, .. } if epilogue.batch_norm.is_none()
        ) && node.inputs[1] == value
            && !node.inputs[2..].contains(&value);
        node.inputs.contains(&value) && !multiplies_as_stored
    })
}

/// A tensor during interpretation.
enum Buffer {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl<'g> Interpreter<'g> {
    /// Prepares `graph` to run with `weights` (in param order, as [`load_weights`] returns them).
    /// Weights that come as blocks run their quantized layers on those blocks; they are
    /// dequantized only for the nodes that read them in f32.
    pub fn new<W: Into<Weight>>(graph: &'g Graph, weights: Vec<W>) -> Result<Self, InterpretError> {
        if weights.len() != graph.params.len() {
            return Err(InterpretError::WeightCount {
                expected: graph.params.len(),
                found: weights.len(),
            });
        }
        let (weights, blocks) = weights
            .into_iter()
            .zip(graph.params.iter())
            .map(|(weight, (_, param))| match weight.into() {
                // A stored table to be quantized at load is quantized once, here, as generated
                // `from_weights` does: its embedding and the layers tied to it share the blocks.
                Weight::F32(values) if graph.is_stored_table(param.value) => {
                    match (param.storage, &graph.ty(param.value).shape[..]) {
                        (
                            ir::WeightStorage::Quantized(ir::Quantization {
                                format: ir::QuantTarget::Format(format),
                                ..
                            }),
                            &[rows, cols],
                        ) => match QuantizedMatrix::quantize(format, &values, rows, cols) {
                            Ok(blocks) => Ok((Vec::new(), Some(blocks))),
                            Err(source) => Err(InterpretError::Kernel {
                                layer: param.name.clone(),
                                op: "quantize",
                                source,
                            }),
                        },
                        _ => Ok((values, None)),
                    }
                }
                Weight::F32(values) => Ok((values, None)),
                Weight::Blocks(blocks) => {
                    let values = if read_in_f32(graph, param.value) {
                        blocks.dequantize()
                    } else {
                        Vec::new()
                    };
                    Ok((values, Some(blocks)))
                }
            })
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .unzip();
        let mut interpreter = Interpreter {
            graph,
            weights,
            blocks,
            calls: Vec::new(),
            last_use: HashMap::new(),
        };
        // The interpreter runs whole sequences, never a decoder's step.
        let site = Site::default();
        for (node, data) in graph.nodes.iter() {
            let prepared = kernel_call::preparation(graph, data, &site)
                .map(|preparation| interpreter.prepare(&preparation))
                .transpose()
                .map_err(|source| InterpretError::Kernel {
                    layer: data.name.clone(),
                    op: data.op.name(),
                    source,
                })?;
            interpreter
                .calls
                .push((kernel_call::kernel_call(graph, data, &site), prepared));
            for &input in &data.inputs {
                interpreter.last_use.insert(input, node.index());
            }
        }
        for output in &graph.outputs {
            interpreter.last_use.insert(output.value, usize::MAX);
        }
        Ok(interpreter)
    }

    /// The blocks of weight `value`, if it came as blocks.
    fn blocks(&self, value: ir::Value) -> Option<&QuantizedMatrix> {
        match self.graph.values[value].def {
            ValueDef::Param(param) => self.blocks[param.index()].as_ref(),
            _ => None,
        }
    }

    fn weight(&self, value: ir::Value) -> Option<&[f32]> {
        match self.graph.values[value].def {
            ValueDef::Param(param) => Some(&self.weights[param.index()]),
            _ => None,
        }
    }

    /// The graph this interpreter runs.
    pub fn graph(&self) -> &'g Graph {
        self.graph
    }

    /// Runs the network on named inputs and returns its named outputs.
    pub fn run(
        &self,
        inputs: &[(&str, Tensor)],
    ) -> Result<Vec<(String, ArrayD<f32>)>, InterpretError> {
        self.run_observing(inputs, &mut |_, _| {})
    }

    /// [`Interpreter::run`], showing `observe` each node with its first input, when that input
    /// is f32, just before the node runs (calibration records ranges this way).
    pub fn run_observing(
        &self,
        inputs: &[(&str, Tensor)],
        observe: &mut dyn FnMut(&ir::NodeData, &[f32]),
    ) -> Result<Vec<(String, ArrayD<f32>)>, InterpretError> {
        let graph = self.graph;
        let mut buffers: HashMap<ir::Value, Buffer> = HashMap::new();
        for (name, tensor) in inputs {
            let Some(input) = graph.inputs.iter().find(|input| input.name == *name) else {
                let names: Vec<String> = graph
                    .inputs
                    .iter()
                    .map(|input| format!("`{}`", input.name))
                    .collect();
                return Err(InterpretError::UnknownInput {
                    name: name.to_string(),
                    inputs: names.join(", "),
                });
            };
            let expected = graph.ty(input.value);
            if tensor.dtype() != expected.dtype || tensor.shape() != expected.shape.as_slice() {
                return Err(InterpretError::InputType {
                    name: name.to_string(),
                    expected: expected.to_string(),
                    found: format!("{}{:?}", tensor.dtype().name(), tensor.shape()),
                });
            }
            let buffer = match tensor {
                Tensor::F32(array) => Buffer::F32(array.iter().copied().collect()),
                Tensor::I64(array) => Buffer::I64(array.iter().copied().collect()),
            };
            buffers.insert(input.value, buffer);
        }
        if let Some(missing) = graph
            .inputs
            .iter()
            .find(|input| !buffers.contains_key(&input.value))
        {
            return Err(InterpretError::MissingInput {
                name: missing.name.clone(),
            });
        }

        let mut workspace = conv::ConvWorkspace::new();
        for (node, data) in graph.nodes.iter() {
            let (call, prepared) = &self.calls[node.index()];
            if let Some(Buffer::F32(input)) =
                data.inputs.first().and_then(|input| buffers.get(input))
            {
                observe(data, input);
            }
            let output_type = graph.ty(data.outputs[0]);
            let output = nnc_runtime::alloc::filled(
                || format!("the output of layer `{}` ({output_type})", data.name),
                usize::try_from(output_type.element_count()).unwrap_or(usize::MAX),
                0.0f32,
            )?;
            let output = self
                .execute(
                    data,
                    call,
                    prepared.as_ref(),
                    &buffers,
                    &mut workspace,
                    output,
                )
                .map_err(|source| InterpretError::Kernel {
                    layer: data.name.clone(),
                    op: data.op.name(),
                    source,
                })?;
            buffers.insert(data.outputs[0], output);
            for input in &data.inputs {
                if self.last_use.get(input) == Some(&node.index())
                    && !matches!(graph.values[*input].def, ValueDef::Param(_))
                {
                    buffers.remove(input);
                }
            }
        }

        Ok(graph
            .outputs
            .iter()
            .map(|output| {
                let shape = graph.ty(output.value).shape.clone();
                let data = match &buffers[&output.value] {
                    Buffer::F32(data) => data.clone(),
                    Buffer::I64(data) => data.iter().map(|&value| value as f32).collect(),
                };
                let array = ArrayD::from_shape_vec(IxDyn(&shape), data)
                    .expect("buffer length matches its type");
                (output.name.clone(), array)
            })
            .collect())
    }
}
