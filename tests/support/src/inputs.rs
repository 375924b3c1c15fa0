//! The one input generator of the tests, and the loaders for what a fixture stores beside its
//! model.
//!
//! [`random_inputs`] is deterministic in its seed and picks values each input can take:
//!
//! - an `i64` input that an `embedding` looks up holds token ids below the smallest of those
//!   tables' row counts (the vocabulary; 2 for BERT's token types);
//! - any other `i64` input, and an `f32` input whose name contains `mask`, holds 0s and 1s;
//! - any other `f32` input is uniform in [-2, 2), wide enough to reach both sides of ReLU6's and
//!   hard-sigmoid's kinks.
//!
//! Each input draws from its own stream (the seed mixed with the input's position), so adding an
//! input to a model leaves the values of the others as they were.

use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use ndarray_npy::ReadNpyExt;
use nnc_compiler::interpret::{self, Tensor};
use nnc_compiler::ir::{self, DType, Op};

use crate::models::TestModel;

/// Inputs for every input of `graph`, in declaration order, named.
pub fn random_inputs(graph: &ir::Graph, seed: u64) -> Vec<(String, Tensor)> {
    graph
        .inputs
        .iter()
        .enumerate()
        .map(|(position, input)| {
            let ty = graph.ty(input.value);
            let count: usize = ty.shape.iter().product();
            let mut random = SplitMix64::new(seed ^ (position as u64).wrapping_mul(0x9e37_79b9));
            let shape = IxDyn(&ty.shape);
            let tensor = match input_kind(graph, input) {
                InputKind::TokenIds { vocabulary } => {
                    let ids = (0..count)
                        .map(|_| random.below(vocabulary) as i64)
                        .collect();
                    Tensor::I64(ArrayD::from_shape_vec(shape, ids).expect("count matches shape"))
                }
                InputKind::Mask => {
                    let bits: Vec<u64> = (0..count).map(|_| random.below(2)).collect();
                    match ty.dtype {
                        DType::I64 => Tensor::I64(
                            ArrayD::from_shape_vec(
                                shape,
                                bits.iter().map(|&bit| bit as i64).collect(),
                            )
                            .expect("count matches shape"),
                        ),
                        DType::F32 => Tensor::F32(
                            ArrayD::from_shape_vec(
                                shape,
                                bits.iter().map(|&bit| bit as f32).collect(),
                            )
                            .expect("count matches shape"),
                        ),
                    }
                }
                InputKind::Values => {
                    let values = (0..count).map(|_| random.uniform() * 4.0 - 2.0).collect();
                    Tensor::F32(ArrayD::from_shape_vec(shape, values).expect("count matches shape"))
                }
            };
            (input.name.clone(), tensor)
        })
        .collect()
}

/// The `(name, tensor)` pairs `Interpreter::run` takes, borrowing the names of `inputs`.
pub fn named(inputs: &[(String, Tensor)]) -> Vec<(&str, Tensor)> {
    inputs
        .iter()
        .map(|(name, tensor)| (name.as_str(), tensor.clone()))
        .collect()
}

/// The inputs a fixture stores as `input_NAME.npy` beside its model, in declaration order; the
/// random inputs of `seed` for a model that is not a fixture.
pub fn inputs_for(model: &TestModel, graph: &ir::Graph, seed: u64) -> Vec<(String, Tensor)> {
    let Some(folder) = model.fixture_folder() else {
        return random_inputs(graph, seed);
    };
    graph
        .inputs
        .iter()
        .map(|input| {
            let file = open(&folder.join(format!("input_{}.npy", input.name)));
            let tensor = match graph.ty(input.value).dtype {
                DType::F32 => Tensor::F32(ArrayD::<f32>::read_npy(file).expect("an f32 .npy")),
                DType::I64 => Tensor::I64(ArrayD::<i64>::read_npy(file).expect("an i64 .npy")),
            };
            (input.name.clone(), tensor)
        })
        .collect()
}

/// A fixture's `weights.safetensors`, or random weights of `seed` for a model that is not a
/// fixture.
pub fn weights_for(model: &TestModel, graph: &ir::Graph, seed: u64) -> Vec<Vec<f32>> {
    let Some(folder) = model.fixture_folder() else {
        return interpret::random_weights(graph, seed);
    };
    let path = folder.join("weights.safetensors");
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    interpret::load_weights(graph, &bytes, "weights.safetensors")
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// A fixture's expected output `name`, as ONNX Runtime computed it (`output_NAME.npy`).
pub fn fixture_output(model: &TestModel, name: &str) -> ArrayD<f32> {
    let folder = model
        .fixture_folder()
        .unwrap_or_else(|| panic!("{} is not a fixture", model.path.display()));
    ArrayD::<f32>::read_npy(open(&folder.join(format!("output_{name}.npy")))).expect("an f32 .npy")
}

/// What the values of an input mean, which decides the values it may take.
enum InputKind {
    /// `i64` ids looked up by `embedding` nodes whose tables have `vocabulary` rows (the smallest
    /// of them).
    TokenIds { vocabulary: u64 },
    /// Zeros and ones, of the input's type: a mask, or integers nothing tells the range of.
    Mask,
    /// Ordinary `f32` activations.
    Values,
}

fn input_kind(graph: &ir::Graph, input: &ir::Input) -> InputKind {
    let vocabulary = graph
        .nodes
        .iter()
        .filter(|(_, node)| matches!(node.op, Op::Embedding) && node.inputs[0] == input.value)
        .map(|(_, node)| graph.ty(node.inputs[1]).shape[0] as u64)
        .min();
    match (vocabulary, graph.ty(input.value).dtype) {
        (Some(vocabulary), _) => InputKind::TokenIds { vocabulary },
        (None, DType::I64) => InputKind::Mask,
        (None, DType::F32) if input.name.contains("mask") => InputKind::Mask,
        (None, DType::F32) => InputKind::Values,
    }
}

fn open(path: &Path) -> std::fs::File {
    std::fs::File::open(path)
        .unwrap_or_else(|error| panic!("cannot open {}: {error}", path.display()))
}

/// SplitMix64 (Steele, Lea and Flood, 2014): a tiny generator whose stream is fixed by its seed on
/// every platform, which is all a test input needs.
struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), from the top 24 bits (an f32's precision).
    fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [0, bound); the modulo bias is below 2^-40 for any vocabulary size.
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}
