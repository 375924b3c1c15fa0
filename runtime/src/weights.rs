//! Weights: loaded from safetensors or GGUF files by name and checked against what a network
//! expects, or drawn at random from a seed.
//!
//! A network describes each weight it needs with a [`WeightSpec`]: its state-dict name, shape and
//! how to initialize it. Loading checks the file against the specs and reports every problem at
//! once (missing, unexpected, wrong shape, wrong dtype), never a panic, whatever the file holds.

use std::fmt;
use std::path::Path;

pub mod ggml_types;
pub mod gguf;
pub mod llama_names;
mod matching;
mod sharded;

pub use matching::{LoadNote, LoadOptions, LoadedWeights, is_known_buffer};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::error::{KernelResult, check_length};
use crate::kernels::linear::PackedLinear;
use crate::kernels::quantized::{
    QuantFormat, QuantizedLinear, QuantizedMatrix, QuantizedMode, StoredLinear,
};

/// How a weight is initialized when no weights file is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// Uniform in ±1/sqrt(fan_in), as PyTorch initializes linear and conv layers.
    FanIn { fan_in: usize },
    /// Standard normal, as PyTorch initializes embeddings.
    Normal,
    /// All ones: norm scales and running variances.
    Ones,
    /// All zeros: norm shifts and running means.
    Zeros,
}

/// One weight a network needs.
#[derive(Clone, Copy, Debug)]
pub struct WeightSpec<'a> {
    /// The state-dict name, e.g. `layer1.0.conv1.weight`.
    pub name: &'a str,
    pub shape: &'a [usize],
    pub init: Init,
}

/// A loaded weight: f32 values, or the blocks of a quantized format as the weights file stores
/// them (see [`load_gguf_keeping_blocks`]). Generated `from_weights` and the interpreter take
/// either; a `Vec<f32>` converts into one.
#[derive(Clone, Debug)]
pub enum Weight {
    F32(Vec<f32>),
    Blocks(QuantizedMatrix),
}

impl Default for Weight {
    /// No values: what a weight leaves behind when it is taken.
    fn default() -> Self {
        Weight::F32(Vec::new())
    }
}

impl From<Vec<f32>> for Weight {
    fn from(values: Vec<f32>) -> Self {
        Weight::F32(values)
    }
}

impl Weight {
    /// The number of values.
    pub fn len(&self) -> usize {
        match self {
            Weight::F32(values) => values.len(),
            Weight::Blocks(blocks) => blocks.rows() * blocks.cols(),
        }
    }

    /// Whether the weight has no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values as f32; blocks are dequantized.
    pub fn into_f32(self) -> Vec<f32> {
        match self {
            Weight::F32(values) => values,
            Weight::Blocks(blocks) => blocks.dequantize(),
        }
    }

    /// Takes the weight out of `self`, leaving it empty.
    pub fn take(&mut self) -> Weight {
        std::mem::take(self)
    }

    /// Takes the weight out of `self` as f32 values (dequantized if they are blocks).
    pub fn take_f32(&mut self) -> Vec<f32> {
        self.take().into_f32()
    }

    /// The weight as a `rows x cols` quantized matrix: its blocks as they are (sharing their
    /// bytes), in whatever format they have, or its f32 values quantized to `format`.
    pub fn quantized(
        &self,
        format: QuantFormat,
        rows: usize,
        cols: usize,
    ) -> KernelResult<QuantizedMatrix> {
        match self {
            Weight::F32(values) => QuantizedMatrix::quantize(format, values, rows, cols),
            Weight::Blocks(blocks) => {
                check_length("quantized weight", "rows", rows, blocks.rows())?;
                check_length("quantized weight", "columns", cols, blocks.cols())?;
                Ok(blocks.clone())
            }
        }
    }

    /// The weight as blocks: itself if it already is, or its f32 values quantized to `format`
    /// as a `rows x cols` matrix. A tied embedding table takes this form once, so that the
    /// embedding and the head it is tied to share one quantized copy.
    pub fn into_quantized(
        self,
        format: QuantFormat,
        rows: usize,
        cols: usize,
    ) -> KernelResult<Weight> {
        Ok(Weight::Blocks(self.quantized(format, rows, cols)?))
    }

    /// `output[i, :] = table[ids[i], :]` with this weight as the `[num_embeddings,
    /// embedding_dim]` table: [`crate::kernels::embedding::embedding`] on f32 values, or only
    /// the looked-up rows dequantized from blocks.
    pub fn embedding(
        &self,
        num_embeddings: usize,
        embedding_dim: usize,
        ids: &[i64],
        output: &mut [f32],
    ) -> KernelResult<()> {
        match self {
            Weight::F32(table) => crate::kernels::embedding::embedding(
                table,
                num_embeddings,
                embedding_dim,
                ids,
                output,
            ),
            Weight::Blocks(table) => crate::kernels::quantized::quantized_embedding_of_size(
                table,
                num_embeddings,
                embedding_dim,
                ids,
                output,
            ),
        }
    }

    /// A linear layer on this `[out_features, in_features]` weight as it is stored: a
    /// [`QuantizedLinear`] on its blocks, or a [`PackedLinear`] of its f32 values.
    pub fn linear_as_stored(
        &self,
        out_features: usize,
        in_features: usize,
        bias: Option<&[f32]>,
        mode: QuantizedMode,
    ) -> KernelResult<StoredLinear> {
        Ok(match self {
            Weight::F32(values) => {
                StoredLinear::F32(PackedLinear::new(values, out_features, in_features, bias)?)
            }
            Weight::Blocks(_) => {
                let blocks = self.quantized(QuantFormat::Q8_0, out_features, in_features)?;
                StoredLinear::Quantized(QuantizedLinear::new(blocks, bias, mode)?)
            }
        })
    }
}

/// Why a weights file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("cannot read the weights file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a valid safetensors file: {message}")]
    Corrupt { path: String, message: String },
    #[error("{path} is not a valid GGUF file: {message}")]
    CorruptGguf { path: String, message: String },
    #[error("{path}: {message}")]
    Checkpoint { path: String, message: String },
    #[error("the weights in {path} do not match the network:\n{}", list(.problems))]
    Mismatch {
        path: String,
        problems: Vec<WeightProblem>,
    },
    /// A weight does not fit in memory.
    #[error(transparent)]
    OutOfMemory(#[from] crate::alloc::AllocError),
}

/// One way a weights file disagrees with the network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WeightProblem {
    /// The network needs a tensor the file lacks.
    Missing { name: String, shape: Vec<usize> },
    /// The file has a tensor the network does not use.
    Unexpected { name: String, shape: Vec<usize> },
    /// The tensor has another shape than the network needs.
    Shape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// The tensor is not floating point.
    DType { name: String, found: String },
    /// The GGUF tensor is stored in a type nnc cannot read, or its data does not fit its shape.
    Storage {
        name: String,
        /// The tensor's name in the file, when it differs (llama.cpp's name).
        file_name: Option<String>,
        message: String,
    },
}

impl fmt::Display for WeightProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightProblem::Missing { name, shape } => {
                write!(f, "missing tensor `{name}` of shape {shape:?}")
            }
            WeightProblem::Unexpected { name, shape } => {
                write!(
                    f,
                    "unexpected tensor `{name}` of shape {shape:?}: the network has no such weight"
                )
            }
            WeightProblem::Shape {
                name,
                expected,
                found,
            } => {
                write!(
                    f,
                    "tensor `{name}` has shape {found:?}, but the network needs {expected:?}"
                )
            }
            WeightProblem::DType { name, found } => {
                write!(
                    f,
                    "tensor `{name}` has dtype {found}, but weights must be F32, F16, BF16 or F64"
                )
            }
            WeightProblem::Storage {
                name,
                file_name,
                message,
            } => match file_name {
                Some(file_name) => {
                    write!(f, "tensor `{name}` (`{file_name}` in the file): {message}")
                }
                None => write!(f, "tensor `{name}`: {message}"),
            },
        }
    }
}

fn list(problems: &[WeightProblem]) -> String {
    let lines: Vec<String> = problems
        .iter()
        .map(|problem| format!("  - {problem}"))
        .collect();
    lines.join("\n")
}

/// Reads the file at `path` whole and hands its bytes and its name (for errors) to `load`.
fn read_with<T>(
    path: &Path,
    load: impl FnOnce(&[u8], &str) -> Result<T, WeightsError>,
) -> Result<T, WeightsError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| WeightsError::Io {
        path: name.clone(),
        source,
    })?;
    load(&bytes, &name)
}

/// Reads the weights in `specs` from the safetensors file at `path`, as f32, in spec order, with
/// the default (strict) [`LoadOptions`]. `path` may also be a sharded checkpoint's
/// `model.safetensors.index.json` or a folder holding one (see [`read_weights_with`]).
pub fn read_safetensors(
    path: &Path,
    specs: &[WeightSpec<'_>],
) -> Result<Vec<Vec<f32>>, WeightsError> {
    if sharded::is_index_or_folder(path) {
        return read_weights_with(path, specs, &LoadOptions::default())
            .map(|loaded| loaded.weights);
    }
    read_with(path, |bytes, name| load_safetensors(bytes, specs, name))
}

/// Loads the weights in `specs` from safetensors bytes, as f32, in spec order, with the default
/// (strict) [`LoadOptions`]; the notes of [`load_safetensors_with`] are dropped. `source_name`
/// names the bytes in errors.
pub fn load_safetensors(
    bytes: &[u8],
    specs: &[WeightSpec<'_>],
    source_name: &str,
) -> Result<Vec<Vec<f32>>, WeightsError> {
    load_safetensors_with(bytes, specs, source_name, &LoadOptions::default())
        .map(|loaded| loaded.weights)
}

/// Loads the weights in `specs` from safetensors bytes, as f32, in spec order, and says what it
/// ignored. `source_name` names the bytes in errors.
///
/// Tensors stored as F16, BF16 or F64 are converted. Names are matched as
/// [`matching`](self::matching) describes: known non-persistent buffers are ignored, a prefix
/// shared by every name is accepted, and other unused tensors are an error unless
/// `options.strict` is off.
pub fn load_safetensors_with(
    bytes: &[u8],
    specs: &[WeightSpec<'_>],
    source_name: &str,
    options: &LoadOptions,
) -> Result<LoadedWeights, WeightsError> {
    let tensors = SafeTensors::deserialize(bytes).map_err(|error| WeightsError::Corrupt {
        path: source_name.to_string(),
        message: error.to_string(),
    })?;
    load_safetensor_views(tensors.tensors(), specs, source_name, options)
}

/// Loads the weights in `specs` from the tensors of one or several safetensors files.
fn load_safetensor_views(
    views: Vec<(String, TensorView<'_>)>,
    specs: &[WeightSpec<'_>],
    source_name: &str,
    options: &LoadOptions,
) -> Result<LoadedWeights, WeightsError> {
    let names_and_shapes: Vec<(String, Vec<usize>)> = views
        .iter()
        .map(|(name, view)| (name.clone(), view.shape().to_vec()))
        .collect();
    let matching = matching::match_names(&names_and_shapes, specs, options);
    let mut problems = Vec::new();
    let mut loaded = Vec::with_capacity(specs.len());
    for (spec, file_index) in specs.iter().zip(&matching.file_index) {
        let Some(view) = file_index.map(|index| &views[index].1) else {
            problems.push(WeightProblem::Missing {
                name: spec.name.to_string(),
                shape: spec.shape.to_vec(),
            });
            loaded.push(Vec::new());
            continue;
        };
        if view.shape() != spec.shape {
            problems.push(WeightProblem::Shape {
                name: spec.name.to_string(),
                expected: spec.shape.to_vec(),
                found: view.shape().to_vec(),
            });
            loaded.push(Vec::new());
            continue;
        }
        match to_f32(spec.name, view.dtype(), view.data())? {
            Some(values) => loaded.push(values),
            None => {
                problems.push(WeightProblem::DType {
                    name: spec.name.to_string(),
                    found: format!("{:?}", view.dtype()),
                });
                loaded.push(Vec::new());
            }
        }
    }
    problems.extend(matching.unexpected);
    if problems.is_empty() {
        Ok(LoadedWeights {
            weights: loaded,
            notes: matching.notes,
        })
    } else {
        Err(WeightsError::Mismatch {
            path: source_name.to_string(),
            problems,
        })
    }
}

/// Reads the weights in `specs` from a safetensors or a GGUF file, told apart by the GGUF magic
/// number at the start of the file, with the default (strict) [`LoadOptions`].
pub fn read_weights(path: &Path, specs: &[WeightSpec<'_>]) -> Result<Vec<Vec<f32>>, WeightsError> {
    read_weights_with(path, specs, &LoadOptions::default()).map(|loaded| loaded.weights)
}

/// Reads the weights in `specs` from `path`, which is one of:
/// - a safetensors or a GGUF file (told apart by GGUF's magic number);
/// - a sharded safetensors checkpoint's index (`model.safetensors.index.json`, whose `weight_map`
///   names the shard of each tensor);
/// - a folder holding `model.safetensors.index.json`, `model.safetensors`, or a single
///   `.safetensors` or `.gguf` file.
pub fn read_weights_with(
    path: &Path,
    specs: &[WeightSpec<'_>],
    options: &LoadOptions,
) -> Result<LoadedWeights, WeightsError> {
    match sharded::resolve(path)? {
        sharded::Checkpoint::File(file) => read_with(&file, |bytes, name| {
            load_weights_with(bytes, specs, name, options)
        }),
        sharded::Checkpoint::Index(index) => {
            let shards = sharded::read_shards(&index)?;
            let views = shards.views()?;
            load_safetensor_views(views, specs, &index.display().to_string(), options)
        }
    }
}

/// [`read_weights_with`], keeping the blocks of the GGUF weights at the positions `keep_blocks`
/// lists (see [`load_gguf_keeping_blocks_with`]); safetensors weights come as f32.
pub fn read_weights_keeping_blocks_with(
    path: &Path,
    specs: &[WeightSpec<'_>],
    keep_blocks: &[usize],
    options: &LoadOptions,
) -> Result<LoadedWeights<Weight>, WeightsError> {
    match sharded::resolve(path)? {
        sharded::Checkpoint::File(file) => read_with(&file, |bytes, name| {
            load_weights_keeping_blocks_with(bytes, specs, keep_blocks, name, options)
        }),
        sharded::Checkpoint::Index(_) => {
            read_weights_with(path, specs, options).map(|loaded| loaded.map(Weight::F32))
        }
    }
}

/// Loads the weights in `specs` from safetensors or GGUF bytes (see [`read_weights`]).
pub fn load_weights(
    bytes: &[u8],
    specs: &[WeightSpec<'_>],
    source_name: &str,
) -> Result<Vec<Vec<f32>>, WeightsError> {
    load_weights_with(bytes, specs, source_name, &LoadOptions::default())
        .map(|loaded| loaded.weights)
}

/// Loads the weights in `specs` from safetensors or GGUF bytes with `options`, and says what it
/// ignored.
pub fn load_weights_with(
    bytes: &[u8],
    specs: &[WeightSpec<'_>],
    source_name: &str,
    options: &LoadOptions,
) -> Result<LoadedWeights, WeightsError> {
    if is_gguf(bytes) {
        load_gguf_with(bytes, specs, source_name, options)
    } else {
        load_safetensors_with(bytes, specs, source_name, options)
    }
}

/// Loads the weights in `specs` from safetensors or GGUF bytes, keeping the blocks of the GGUF
/// weights at the positions `keep_blocks` lists (see [`load_gguf_keeping_blocks`]); safetensors
/// weights come as f32.
pub fn load_weights_keeping_blocks(
    bytes: &[u8],
    specs: &[WeightSpec<'_>],
    keep_blocks: &[usize],
    source_name: &str,
) -> Result<Vec<Weight>, WeightsError> {
    load_weights_keeping_blocks_with(
        bytes,
        specs,
        keep_blocks,
        source_name,
        &LoadOptions::default(),
    )
    .map(|loaded| loaded.weights)
}

/// [`load_weights_keeping_blocks`] with `options`, and what it ignored.
pub fn load_weights_keeping_blocks_with(
    bytes: &[u8],
    specs: &[WeightSpec<'_>],
    keep_blocks: &[usize],
    source_name: &str,
    options: &LoadOptions,
) -> Result<LoadedWeights<Weight>, WeightsError> {
    if is_gguf(bytes) {
        load_gguf_keeping_blocks_with(bytes, specs, keep_blocks, source_name, options)
    } else {
        load_safetensors_with(bytes, specs, source_name, options)
            .map(|loaded| loaded.map(Weight::F32))
    }
}

/// Whether `bytes` start with GGUF's magic number.
pub fn is_gguf(bytes: &[u8]) -> bool {
    bytes.starts_with(b"GGUF")
}

/// Reads the weights in `specs` from the GGUF file at `path`, as f32, in spec order, with the
/// default (strict) [`LoadOptions`].
pub fn read_gguf(path: &Path, specs: &[WeightSpec<'_>]) -> Result<Vec<Vec<f32>>, WeightsError> {
    read_with(path, |bytes, name| load_gguf(bytes, specs, name))
}

/// Reads the weights in `specs` from the GGUF file at `path`, in spec order, keeping the blocks
/// of the weights at the positions `keep_blocks` lists (see [`load_gguf_keeping_blocks`]).
pub fn read_gguf_keeping_blocks(
    path: &Path,
    specs: &[WeightSpec<'_>],
    keep_blocks: &[usize],
) -> Result<Vec<Weight>, WeightsError> {
    read_with(path, |bytes, name| {
        load_gguf_keeping_blocks(bytes, specs, keep_blocks, name)
    })
}

/// Loads the weights in `specs` from GGUF bytes with the default (strict) [`LoadOptions`]; see
/// [`load_gguf_with`].
pub fn load_gguf(
    bytes: &[u8],
    specs: &[WeightSpec<'_>],
    source_name: &str,
) -> Result<Vec<Vec<f32>>, WeightsError> {
    load_gguf_with(bytes, specs, source_name, &LoadOptions::default()).map(|loaded| loaded.weights)
}

/// Loads the weights in `specs` from GGUF bytes, as f32, in spec order. `source_name` names the
/// bytes in errors.
///
/// Quantized tensors (Q8_0, Q4_0, Q4_1, Q4_K, Q6_K) are dequantized to f32 here, at load; F16
/// and BF16 are converted. When `general.architecture` is `llama`, llama.cpp's tensor names are
/// mapped to Hugging Face's (`blk.0.attn_q.weight` is `model.layers.0.self_attn.q_proj.weight`,
/// see [`llama_names`]), the rows of q and k are put back in Hugging Face's order, and a network
/// that wants `lm_head.weight` from a file without `output.weight` gets the token embeddings, as
/// llama.cpp does for tied models. Names are then matched as for safetensors (known buffers
/// ignored, a common prefix accepted, other unused tensors an error unless `options.strict` is
/// off).
pub fn load_gguf_with(
    bytes: &[u8],
    specs: &[WeightSpec<'_>],
    source_name: &str,
    options: &LoadOptions,
) -> Result<LoadedWeights, WeightsError> {
    load_gguf_keeping_blocks_with(bytes, specs, &[], source_name, options)
        .map(|loaded| loaded.map(Weight::into_f32))
}

/// [`load_gguf_keeping_blocks_with`] with the default (strict) [`LoadOptions`], without the notes.
pub fn load_gguf_keeping_blocks(
    bytes: &[u8],
    specs: &[WeightSpec<'_>],
    keep_blocks: &[usize],
    source_name: &str,
) -> Result<Vec<Weight>, WeightsError> {
    load_gguf_keeping_blocks_with(
        bytes,
        specs,
        keep_blocks,
        source_name,
        &LoadOptions::default(),
    )
    .map(|loaded| loaded.weights)
}

/// Loads the weights in `specs` from GGUF bytes, in spec order, as [`load_gguf_with`] does,
/// except that a weight whose position `keep_blocks` lists and that the file stores in a block
/// format the quantized kernels run (Q8_0, Q4_0, Q4_1: [`QuantFormat`]) comes as those blocks
/// ([`Weight::Blocks`]), in the file's format, with no f32 copy made. Other weights, and those
/// of other types (F32, F16, BF16, Q4_K, Q6_K, ...), come as f32. A tensor that two specs read
/// (a tied head) is one set of blocks that both share.
pub fn load_gguf_keeping_blocks_with(
    bytes: &[u8],
    specs: &[WeightSpec<'_>],
    keep_blocks: &[usize],
    source_name: &str,
    options: &LoadOptions,
) -> Result<LoadedWeights<Weight>, WeightsError> {
    let corrupt = |message: String| WeightsError::CorruptGguf {
        path: source_name.to_string(),
        message,
    };
    let file = gguf::GgufFile::parse(bytes).map_err(|error| corrupt(error.0))?;
    let is_llama = file
        .metadata("general.architecture")
        .and_then(gguf::MetadataValue::as_str)
        == Some("llama");
    let head_count = |key: &str| {
        file.metadata(key)
            .and_then(gguf::MetadataValue::as_u64)
            .and_then(|count| usize::try_from(count).ok())
    };
    let heads = head_count("llama.attention.head_count");
    let kv_heads = head_count("llama.attention.head_count_kv").or(heads);
    // The name each tensor goes by for the network, and its index in the file.
    let mut tensors_by_name: Vec<(String, usize)> = file
        .tensors
        .iter()
        .enumerate()
        .map(|(index, tensor)| {
            let name = is_llama
                .then(|| llama_names::hugging_face_name(&tensor.name))
                .flatten()
                .unwrap_or_else(|| tensor.name.clone());
            (name, index)
        })
        .collect();
    if is_llama
        && !tensors_by_name
            .iter()
            .any(|(name, _)| name == "lm_head.weight")
        && specs.iter().any(|spec| spec.name == "lm_head.weight")
        && let Some(&(_, embedding)) = tensors_by_name
            .iter()
            .find(|(name, _)| name == "model.embed_tokens.weight")
    {
        tensors_by_name.push(("lm_head.weight".to_string(), embedding));
    }

    let names_and_shapes: Vec<(String, Vec<usize>)> = tensors_by_name
        .iter()
        .map(|(name, index)| (name.clone(), file.tensors[*index].shape.clone()))
        .collect();
    let matching = matching::match_names(&names_and_shapes, specs, options);
    let mut problems = Vec::new();
    let mut loaded = Vec::with_capacity(specs.len());
    // The blocks already taken, by tensor index: a tied table and head share them.
    let mut blocks_of_tensor: Vec<(usize, QuantizedMatrix)> = Vec::new();
    for (position, (spec, file_index)) in specs.iter().zip(&matching.file_index).enumerate() {
        let Some(index) = file_index.map(|position| tensors_by_name[position].1) else {
            problems.push(WeightProblem::Missing {
                name: spec.name.to_string(),
                shape: spec.shape.to_vec(),
            });
            loaded.push(Weight::default());
            continue;
        };
        let tensor = &file.tensors[index];
        let file_name = (tensor.name != spec.name).then(|| tensor.name.clone());
        if tensor.shape != spec.shape {
            problems.push(WeightProblem::Shape {
                name: spec.name.to_string(),
                expected: spec.shape.to_vec(),
                found: tensor.shape.clone(),
            });
            loaded.push(Weight::default());
            continue;
        }
        let permuted_heads = if is_llama {
            llama_names::permuted_heads(&tensor.name, heads.unwrap_or(0), kv_heads.unwrap_or(0))
        } else {
            None
        };
        let permute_error = || {
            format!(
                "its {} rows do not split into {} heads of an even size \
                 (from llama.attention.head_count{}), so llama.cpp's row order cannot be undone",
                tensor.shape.first().copied().unwrap_or(1),
                permuted_heads.unwrap_or(0),
                if tensor.name.contains("attn_k") {
                    "_kv"
                } else {
                    ""
                }
            )
        };
        let block_format = keep_blocks
            .contains(&position)
            .then(|| block_format(tensor.ty))
            .flatten();
        let weight = match block_format {
            Some(format) => {
                if let Some((_, blocks)) = blocks_of_tensor.iter().find(|(i, _)| *i == index) {
                    Ok(Weight::Blocks(blocks.clone()))
                } else {
                    let cols = tensor.shape.last().copied().unwrap_or(1);
                    let rows = tensor.element_count() / cols.max(1);
                    // The rows are whole blocks: parse checked that the data holds them.
                    let row_bytes = format.row_bytes(cols).unwrap_or(0);
                    unpermute_rows(file.data(tensor).to_vec(), permuted_heads, row_bytes)
                        .ok_or_else(permute_error)
                        .and_then(|data| {
                            QuantizedMatrix::from_bytes(format, rows, cols, data)
                                .map_err(|error| error.to_string())
                        })
                        .map(|blocks| {
                            blocks_of_tensor.push((index, blocks.clone()));
                            Weight::Blocks(blocks)
                        })
                }
            }
            None => file
                .dequantize(tensor)
                .map_err(|error| error.to_string())
                .and_then(|values| {
                    let columns = tensor.shape[1..].iter().product();
                    unpermute_rows(values, permuted_heads, columns).ok_or_else(permute_error)
                })
                .map(Weight::F32),
        };
        match weight {
            Ok(weight) => loaded.push(weight),
            Err(message) => {
                problems.push(WeightProblem::Storage {
                    name: spec.name.to_string(),
                    file_name,
                    message,
                });
                loaded.push(Weight::default());
            }
        }
    }
    problems.extend(matching.unexpected);
    if problems.is_empty() {
        Ok(LoadedWeights {
            weights: loaded,
            notes: matching.notes,
        })
    } else {
        Err(WeightsError::Mismatch {
            path: source_name.to_string(),
            problems,
        })
    }
}

/// The block format of the quantized kernels that stores `ty` as it is, if any.
fn block_format(ty: ggml_types::GgmlType) -> Option<QuantFormat> {
    match ty {
        ggml_types::GgmlType::Q8_0 => Some(QuantFormat::Q8_0),
        ggml_types::GgmlType::Q4_0 => Some(QuantFormat::Q4_0),
        ggml_types::GgmlType::Q4_1 => Some(QuantFormat::Q4_1),
        _ => None,
    }
}

/// A tensor's rows of `columns` values (or bytes, for blocks), in Hugging Face's row order when
/// llama.cpp permuted them over `permuted_heads` heads; `None` when the rows do not split into
/// those heads.
fn unpermute_rows<T: Copy + Default>(
    values: Vec<T>,
    permuted_heads: Option<usize>,
    columns: usize,
) -> Option<Vec<T>> {
    match permuted_heads {
        None => Some(values),
        Some(heads) => llama_names::reverse_permute_rows(&values, heads, columns),
    }
}

/// Converts little-endian tensor bytes to f32; `None` for integer and boolean dtypes; an error
/// naming the weight when its f32 values do not fit in memory.
fn to_f32(
    name: &str,
    dtype: Dtype,
    data: &[u8],
) -> Result<Option<Vec<f32>>, crate::alloc::AllocError> {
    let element_bytes = match dtype {
        Dtype::F32 => 4,
        Dtype::F64 => 8,
        Dtype::F16 | Dtype::BF16 => 2,
        _ => return Ok(None),
    };
    let mut values = crate::alloc::with_capacity(
        || format!("weight `{name}` in f32"),
        data.len() / element_bytes,
    )?;
    let chunks = data.chunks_exact(element_bytes);
    match dtype {
        Dtype::F32 => values
            .extend(chunks.map(|bytes| f32::from_le_bytes(bytes.try_into().expect("4 bytes")))),
        Dtype::F64 => values.extend(
            chunks.map(|bytes| f64::from_le_bytes(bytes.try_into().expect("8 bytes")) as f32),
        ),
        Dtype::F16 => values
            .extend(chunks.map(|bytes| half::f16::from_le_bytes([bytes[0], bytes[1]]).to_f32())),
        _ => values
            .extend(chunks.map(|bytes| half::bf16::from_le_bytes([bytes[0], bytes[1]]).to_f32())),
    }
    Ok(Some(values))
}

/// Draws every weight from its [`Init`], deterministically from `seed`.
///
/// Each weight has its own stream, derived from the seed and the weight's name, so adding a layer
/// does not change the weights of the others.
///
/// Panics when a weight does not fit in memory, as `Vec::with_capacity` does; see
/// [`try_random_weights`] for an error instead.
pub fn random_weights(specs: &[WeightSpec<'_>], seed: u64) -> Vec<Vec<f32>> {
    try_random_weights(specs, seed).unwrap_or_else(|error| panic!("{error}"))
}

/// [`random_weights`], with an error naming the weight and its bytes when one does not fit in
/// memory (see [`crate::alloc`]) instead of a panic or an abort.
pub fn try_random_weights(
    specs: &[WeightSpec<'_>],
    seed: u64,
) -> Result<Vec<Vec<f32>>, WeightsError> {
    specs
        .iter()
        .map(|spec| {
            let count = spec
                .shape
                .iter()
                .try_fold(1usize, |count, &dimension| count.checked_mul(dimension))
                .unwrap_or(usize::MAX);
            let name = || format!("weight `{}`", spec.name);
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ name_hash(spec.name));
            Ok(match spec.init {
                Init::Ones => crate::alloc::filled(name, count, 1.0)?,
                Init::Zeros => crate::alloc::filled(name, count, 0.0)?,
                Init::Normal => {
                    let mut values = crate::alloc::with_capacity(name, count)?;
                    values.extend((0..count).map(|_| -> f32 { StandardNormal.sample(&mut rng) }));
                    values
                }
                Init::FanIn { fan_in } => {
                    let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
                    let mut values = crate::alloc::with_capacity(name, count)?;
                    values.extend((0..count).map(|_| rng.random_range(-bound..bound)));
                    values
                }
            })
        })
        .collect()
}

/// FNV-1a, a stable hash of a weight name.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
            .iter()
            .map(|(name, dtype, shape, data)| {
                (
                    name.to_string(),
                    safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).unwrap(),
                )
            })
            .collect();
        safetensors::serialize(views, None).unwrap()
    }

    fn f32_bytes(values: &[f32]) -> Vec<u8> {
        values
            .iter()
            .flat_map(|value| value.to_le_bytes())
            .collect()
    }

    const SPECS: [WeightSpec<'static>; 2] = [
        WeightSpec {
            name: "fc.weight",
            shape: &[2, 3],
            init: Init::FanIn { fan_in: 3 },
        },
        WeightSpec {
            name: "fc.bias",
            shape: &[2],
            init: Init::Zeros,
        },
    ];

    #[test]
    fn loads_by_name_and_converts_half_precision() {
        let bias: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|value| half::bf16::from_f32(*value).to_le_bytes())
            .collect();
        let bytes = file(&[
            ("fc.bias", Dtype::BF16, vec![2], bias),
            (
                "fc.weight",
                Dtype::F32,
                vec![2, 3],
                f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
            ),
        ]);
        let loaded = load_safetensors(&bytes, &SPECS, "test").unwrap();
        assert_eq!(
            loaded,
            vec![vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], vec![1.5, -2.0]]
        );
    }

    #[test]
    fn reports_every_problem_by_name() {
        let bytes = file(&[
            ("fc.weight", Dtype::F32, vec![3, 2], f32_bytes(&[0.0; 6])),
            ("head.weight", Dtype::F32, vec![1], f32_bytes(&[0.0])),
        ]);
        let error = load_safetensors(&bytes, &SPECS, "model.safetensors").unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("tensor `fc.weight` has shape [3, 2], but the network needs [2, 3]"),
            "{message}"
        );
        assert!(
            message.contains("missing tensor `fc.bias` of shape [2]"),
            "{message}"
        );
        assert!(
            message.contains("unexpected tensor `head.weight`"),
            "{message}"
        );

        let bytes = file(&[
            ("fc.weight", Dtype::I64, vec![2, 3], vec![0; 48]),
            ("fc.bias", Dtype::F32, vec![2], f32_bytes(&[0.0; 2])),
        ]);
        let message = load_safetensors(&bytes, &SPECS, "model.safetensors")
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("tensor `fc.weight` has dtype I64"),
            "{message}"
        );
    }

    #[test]
    fn truncated_or_garbage_files_are_errors_not_panics() {
        let bytes = file(&[
            ("fc.weight", Dtype::F32, vec![2, 3], f32_bytes(&[0.0; 6])),
            ("fc.bias", Dtype::F32, vec![2], f32_bytes(&[0.0; 2])),
        ]);
        for length in [0, 3, 8, 20, bytes.len() / 2, bytes.len() - 1] {
            let error = load_safetensors(&bytes[..length], &SPECS, "cut.safetensors").unwrap_err();
            assert!(
                matches!(error, WeightsError::Corrupt { .. }),
                "{length}: {error}"
            );
        }
        let mut garbage = bytes.clone();
        garbage[0] = 0xff;
        garbage[5] = 0x7f;
        assert!(load_safetensors(&garbage, &SPECS, "garbage.safetensors").is_err());
    }

    #[test]
    fn ignores_num_batches_tracked_next_to_batch_norm() {
        let specs = [WeightSpec {
            name: "bn.running_mean",
            shape: &[1],
            init: Init::Zeros,
        }];
        let bytes = file(&[
            ("bn.running_mean", Dtype::F32, vec![1], f32_bytes(&[0.5])),
            (
                "bn.num_batches_tracked",
                Dtype::I64,
                vec![],
                7i64.to_le_bytes().to_vec(),
            ),
        ]);
        assert_eq!(
            load_safetensors(&bytes, &specs, "bn").unwrap(),
            vec![vec![0.5]]
        );
    }

    fn weight_and_bias(prefix: &str) -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
        vec![
            (
                format!("{prefix}fc.weight"),
                Dtype::F32,
                vec![2, 3],
                f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
            ),
            (
                format!("{prefix}fc.bias"),
                Dtype::F32,
                vec![2],
                f32_bytes(&[7.0, 8.0]),
            ),
        ]
    }

    fn owned_file(tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
        let borrowed: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = tensors
            .iter()
            .map(|(name, dtype, shape, data)| (name.as_str(), *dtype, shape.clone(), data.clone()))
            .collect();
        file(&borrowed)
    }

    const EXPECTED: [[f32; 6]; 1] = [[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]];

    fn assert_loaded(loaded: &LoadedWeights) {
        assert_eq!(loaded.weights, vec![EXPECTED[0].to_vec(), vec![7.0, 8.0]]);
    }

    #[test]
    fn known_buffers_are_ignored_with_a_note() {
        let mut tensors = weight_and_bias("");
        for name in [
            "embeddings.position_ids",
            "layers.0.rotary_emb.inv_freq",
            "h.0.attn.bias",
            "h.0.attn.masked_bias",
        ] {
            tensors.push((name.to_string(), Dtype::I64, vec![1, 2], vec![0; 16]));
        }
        let loaded = load_safetensors_with(
            &owned_file(&tensors),
            &SPECS,
            "bert",
            &LoadOptions::default(),
        )
        .unwrap();
        assert_loaded(&loaded);
        let ignored: Vec<String> = loaded.notes.iter().map(ToString::to_string).collect();
        assert_eq!(ignored.len(), 4, "{ignored:?}");
        assert!(
            ignored[0].contains("ignored `embeddings.position_ids` of shape [1, 2]")
                && ignored[0].contains("non-persistent buffer"),
            "{ignored:?}"
        );
        assert!(is_known_buffer("bn.num_batches_tracked"));
        assert!(!is_known_buffer(
            "encoder.layer.0.attention.self.query.bias"
        ));
        assert!(!is_known_buffer("my_position_ids"));
    }

    #[test]
    fn other_unused_tensors_are_an_error_unless_not_strict() {
        let mut tensors = weight_and_bias("");
        tensors.push((
            "cls.weight".to_string(),
            Dtype::F32,
            vec![1],
            f32_bytes(&[0.0]),
        ));
        let bytes = owned_file(&tensors);
        let message = load_safetensors_with(&bytes, &SPECS, "head", &LoadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("unexpected tensor `cls.weight` of shape [1]"),
            "{message}"
        );
        let loaded =
            load_safetensors_with(&bytes, &SPECS, "head", &LoadOptions { strict: false }).unwrap();
        assert_loaded(&loaded);
        assert_eq!(
            loaded.notes,
            vec![LoadNote::IgnoredUnused {
                name: "cls.weight".to_string(),
                shape: vec![1]
            }]
        );
        // Not strict still reports what the network needs and the file lacks.
        let message = load_safetensors_with(
            &owned_file(&tensors[1..]),
            &SPECS,
            "head",
            &LoadOptions { strict: false },
        )
        .unwrap_err()
        .to_string();
        assert!(
            message.contains("missing tensor `fc.weight` of shape [2, 3]"),
            "{message}"
        );
    }

    #[test]
    fn a_prefix_on_every_name_is_accepted_either_way() {
        // The file's names carry `bert.`, as a checkpoint of a model with a head does.
        let mut tensors = weight_and_bias("bert.");
        tensors.push((
            "cls.predictions.bias".to_string(),
            Dtype::F32,
            vec![2],
            f32_bytes(&[0.0; 2]),
        ));
        let bytes = owned_file(&tensors);
        let message = load_safetensors_with(&bytes, &SPECS, "bert", &LoadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("unexpected tensor `cls.predictions.bias`"),
            "{message}"
        );
        let loaded =
            load_safetensors_with(&bytes, &SPECS, "bert", &LoadOptions { strict: false }).unwrap();
        assert_loaded(&loaded);
        assert_eq!(
            loaded.notes[0],
            LoadNote::FilePrefix {
                prefix: "bert.".to_string()
            }
        );
        assert!(loaded.notes[0].to_string().contains("prefix `bert.`"));

        // The network's names carry `model.`, the file's do not.
        let specs: Vec<WeightSpec<'static>> = vec![
            WeightSpec {
                name: "model.fc.weight",
                ..SPECS[0]
            },
            WeightSpec {
                name: "model.fc.bias",
                ..SPECS[1]
            },
        ];
        let loaded = load_safetensors_with(
            &owned_file(&weight_and_bias("")),
            &specs,
            "base",
            &LoadOptions::default(),
        )
        .unwrap();
        assert_loaded(&loaded);
        assert_eq!(
            loaded.notes,
            vec![LoadNote::NetworkPrefix {
                prefix: "model.".to_string()
            }]
        );

        // A prefix that finds only some of the names is no match: the missing ones are listed
        // under the network's names.
        let mut tensors = weight_and_bias("bert.");
        tensors.remove(1);
        let message = load_safetensors_with(
            &owned_file(&tensors),
            &SPECS,
            "partial",
            &LoadOptions::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(message.contains("missing tensor `fc.weight`"), "{message}");
        assert!(message.contains("missing tensor `fc.bias`"), "{message}");
    }

    /// A fresh folder under the system's temporary folder, for one test.
    fn scratch_folder(test: &str) -> std::path::PathBuf {
        let folder =
            std::env::temp_dir().join(format!("nnc-weights-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&folder);
        std::fs::create_dir_all(&folder).unwrap();
        folder
    }

    #[test]
    fn sharded_checkpoints_load_from_their_index_or_folder() {
        let folder = scratch_folder("sharded");
        let tensors = weight_and_bias("");
        let mut first = vec![tensors[0].clone()];
        first.push((
            "embeddings.position_ids".to_string(),
            Dtype::I64,
            vec![1, 2],
            vec![0; 16],
        ));
        std::fs::write(
            folder.join("model-00001-of-00002.safetensors"),
            owned_file(&first),
        )
        .unwrap();
        std::fs::write(
            folder.join("model-00002-of-00002.safetensors"),
            owned_file(&tensors[1..]),
        )
        .unwrap();
        let index = r#"{"metadata": {"total_size": 32}, "weight_map": {
            "fc.weight": "model-00001-of-00002.safetensors",
            "embeddings.position_ids": "model-00001-of-00002.safetensors",
            "fc.bias": "model-00002-of-00002.safetensors"}}"#;
        let index_path = folder.join("model.safetensors.index.json");
        std::fs::write(&index_path, index).unwrap();
        for path in [&index_path, &folder] {
            let loaded = read_weights_with(path, &SPECS, &LoadOptions::default()).unwrap();
            assert_loaded(&loaded);
            assert!(matches!(loaded.notes[0], LoadNote::IgnoredBuffer { .. }));
        }
        assert_eq!(
            read_safetensors(&folder, &SPECS).unwrap(),
            vec![EXPECTED[0].to_vec(), vec![7.0, 8.0]]
        );

        // A stale index is an error naming the tensor.
        std::fs::write(
            &index_path,
            index.replace(
                r#""fc.bias": "model-00002-of-00002.safetensors""#,
                r#""fc.bias": "model-00001-of-00002.safetensors""#,
            ),
        )
        .unwrap();
        let message = read_weights_with(&folder, &SPECS, &LoadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("the index puts `fc.bias` in model-00001-of-00002.safetensors"),
            "{message}"
        );
        std::fs::write(
            &index_path,
            r#"{"weight_map": {"fc.bias": "../x.safetensors"}}"#,
        )
        .unwrap();
        let message = read_weights_with(&index_path, &SPECS, &LoadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(message.contains("not a file beside the index"), "{message}");
        std::fs::write(&index_path, "{").unwrap();
        let message = read_weights_with(&index_path, &SPECS, &LoadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(message.contains("not valid JSON"), "{message}");

        // Without an index, a folder with one weights file loads it; with two, it asks which.
        std::fs::remove_file(&index_path).unwrap();
        let message = read_weights_with(&folder, &SPECS, &LoadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(message.contains("several weights files"), "{message}");
        std::fs::remove_file(folder.join("model-00002-of-00002.safetensors")).unwrap();
        std::fs::write(
            folder.join("model-00001-of-00002.safetensors"),
            owned_file(&tensors),
        )
        .unwrap();
        assert_loaded(&read_weights_with(&folder, &SPECS, &LoadOptions::default()).unwrap());
        std::fs::remove_dir_all(&folder).unwrap();
    }

    #[test]
    fn random_weights_are_deterministic_and_follow_the_init() {
        let first = random_weights(&SPECS, 7);
        assert_eq!(first, random_weights(&SPECS, 7));
        assert_ne!(first, random_weights(&SPECS, 8));
        let bound = 1.0 / 3f32.sqrt();
        assert!(first[0].iter().all(|value| value.abs() <= bound));
        assert_eq!(first[1], vec![0.0, 0.0]);
    }

    #[test]
    fn a_quantized_table_embeds_its_rows_dequantized_and_shares_its_blocks() {
        let (rows, cols) = (5, 64);
        let values: Vec<f32> = (0..rows * cols)
            .map(|index| ((index * 37 % 101) as f32 - 50.0) / 17.0)
            .collect();
        let ids = [4, 0, 4, 2];
        let mut from_f32 = vec![0.0; ids.len() * cols];
        Weight::F32(values.clone())
            .embedding(rows, cols, &ids, &mut from_f32)
            .unwrap();
        let table = Weight::F32(values)
            .into_quantized(QuantFormat::Q8_0, rows, cols)
            .unwrap();
        let Weight::Blocks(blocks) = &table else {
            panic!("into_quantized gives blocks");
        };
        let head = table.quantized(QuantFormat::Q4_0, rows, cols).unwrap();
        // Already blocks: the head shares them, whatever format it asks for.
        assert_eq!(head.format(), QuantFormat::Q8_0);
        assert!(std::ptr::eq(head.bytes(), blocks.bytes()));
        let mut from_blocks = vec![0.0; ids.len() * cols];
        table.embedding(rows, cols, &ids, &mut from_blocks).unwrap();
        let dequantized = blocks.dequantize();
        for (index, &id) in ids.iter().enumerate() {
            let row = &from_blocks[index * cols..][..cols];
            assert_eq!(row, &dequantized[id as usize * cols..][..cols]);
            for (quantized, exact) in row.iter().zip(&from_f32[index * cols..][..cols]) {
                assert!(
                    (quantized - exact).abs() <= 3.0 / 127.0,
                    "{quantized} vs {exact}"
                );
            }
        }
        // Bad ids and sizes are errors.
        assert!(table.embedding(rows, cols, &[5], &mut [0.0; 64]).is_err());
        assert!(table.embedding(rows, cols, &[-1], &mut [0.0; 64]).is_err());
        assert!(
            table
                .embedding(rows + 1, cols, &[0], &mut [0.0; 64])
                .is_err()
        );
        assert!(
            table
                .embedding(rows, cols, &[0, 1], &mut [0.0; 64])
                .is_err()
        );
    }
}
