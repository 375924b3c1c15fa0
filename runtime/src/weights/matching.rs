//! Which tensor of a file each weight of the network takes, and what happens to the others: the
//! part of loading that PyTorch's `load_state_dict` does, shared by safetensors (one file or
//! shards) and GGUF.
//!
//! Loading is strict, as `load_state_dict` is by default: a tensor the network does not use is an
//! error, because it usually means a name is wrong. Two exceptions are common enough in real
//! checkpoints to accept with a note rather than refuse:
//! - known non-persistent buffers (`embeddings.position_ids`, `num_batches_tracked`, rotary
//!   `inv_freq`, GPT-2's causal-mask `attn.bias`), which older Hugging Face and PyTorch versions
//!   saved but which hold no learned values;
//! - a prefix on every name (`bert.embeddings...` for a network that says `embeddings...`, or the
//!   other way round), which is how Hugging Face's base models and models with heads differ.
//!
//! With [`LoadOptions::strict`] off, every other unused tensor is skipped and listed too.

use std::collections::HashMap;
use std::fmt;

use super::{WeightProblem, WeightSpec};

/// How strictly a weights file must match the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Refuse a file holding tensors the network does not use (known non-persistent buffers
    /// aside). Off, they are skipped and listed in the notes, as PyTorch's
    /// `load_state_dict(strict=False)` does.
    pub strict: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { strict: true }
    }
}

/// Weights loaded from a file, in spec order, and what loading accepted that a reader should know.
/// `W` is `Vec<f32>`, or [`super::Weight`] when a loader keeps a GGUF file's blocks.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadedWeights<W = Vec<f32>> {
    pub weights: Vec<W>,
    pub notes: Vec<LoadNote>,
}

impl<W> LoadedWeights<W> {
    /// The same load with each weight converted by `convert` (f32 to [`super::Weight`], or back).
    pub fn map<V>(self, convert: impl FnMut(W) -> V) -> LoadedWeights<V> {
        LoadedWeights {
            weights: self.weights.into_iter().map(convert).collect(),
            notes: self.notes,
        }
    }
}

/// Something loading accepted without an error but which the user should be told about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadNote {
    /// A tensor the network does not use, skipped because it is a known non-persistent buffer.
    IgnoredBuffer { name: String, shape: Vec<usize> },
    /// A tensor the network does not use, skipped because loading is not strict.
    IgnoredUnused { name: String, shape: Vec<usize> },
    /// Every name in the file is the network's name with `prefix` in front.
    FilePrefix { prefix: String },
    /// Every name of the network is the file's name with `prefix` in front.
    NetworkPrefix { prefix: String },
}

impl fmt::Display for LoadNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadNote::IgnoredBuffer { name, shape } => write!(
                f,
                "ignored `{name}` of shape {shape:?}: a non-persistent buffer, not a weight"
            ),
            LoadNote::IgnoredUnused { name, shape } => write!(
                f,
                "ignored `{name}` of shape {shape:?}: the network has no such weight"
            ),
            LoadNote::FilePrefix { prefix } => write!(
                f,
                "the file's names carry the prefix `{prefix}` (`{prefix}embeddings...` for \
                 `embeddings...`); read them without it"
            ),
            LoadNote::NetworkPrefix { prefix } => write!(
                f,
                "the network's names carry the prefix `{prefix}` that the file's names lack; \
                 read them with it"
            ),
        }
    }
}

/// Whether `name` is a buffer that models register but that holds no learned values, so that a
/// checkpoint carrying it still fits a network without it: position ids (BERT), batch counters
/// (batch norm), rotary frequencies (Llama), causal masks (GPT-2, GPT-Neo).
pub fn is_known_buffer(name: &str) -> bool {
    const BUFFERS: [&str; 7] = [
        "position_ids",
        "token_type_ids",
        "num_batches_tracked",
        "inv_freq",
        "masked_bias",
        "attn.bias",
        "attention.bias",
    ];
    BUFFERS.iter().any(|buffer| {
        name == *buffer
            || name
                .strip_suffix(buffer)
                .is_some_and(|layer| layer.ends_with('.'))
    })
}

/// The outcome of matching a file's tensor names to the network's.
pub(super) struct Matching {
    /// For each spec, the index in the file's list of the tensor it takes, if there is one.
    pub(super) file_index: Vec<Option<usize>>,
    pub(super) notes: Vec<LoadNote>,
    /// Tensors the network does not use and loading may not skip, sorted.
    pub(super) unexpected: Vec<WeightProblem>,
}

/// Matches the tensors a file holds, by name and shape in file order, with the weights in `specs`.
pub(super) fn match_names(
    file_tensors: &[(String, Vec<usize>)],
    specs: &[WeightSpec<'_>],
    options: &LoadOptions,
) -> Matching {
    let index_of: HashMap<&str, usize> = file_tensors
        .iter()
        .enumerate()
        .map(|(index, (name, _))| (name.as_str(), index))
        .collect();
    let direct: Vec<Option<usize>> = specs
        .iter()
        .map(|spec| index_of.get(spec.name).copied())
        .collect();
    let mut notes = Vec::new();
    let file_index = if direct.iter().all(Option::is_some) {
        direct
    } else {
        match prefixed_matching(&index_of, specs) {
            Some((file_index, note)) => {
                notes.push(note);
                file_index
            }
            None => direct,
        }
    };

    let mut used = vec![false; file_tensors.len()];
    for index in file_index.iter().flatten() {
        used[*index] = true;
    }
    // Sorted by name within each kind, buffers first: the file's order is its writer's.
    let mut unused: Vec<(&String, &Vec<usize>)> = file_tensors
        .iter()
        .zip(used)
        .filter(|(_, used)| !used)
        .map(|((name, shape), _)| (name, shape))
        .collect();
    unused.sort();
    let mut unexpected = Vec::new();
    let mut skipped = Vec::new();
    for (name, shape) in unused {
        let (name, shape) = (name.clone(), shape.clone());
        if is_known_buffer(&name) {
            notes.push(LoadNote::IgnoredBuffer { name, shape });
        } else if options.strict {
            unexpected.push(WeightProblem::Unexpected { name, shape });
        } else {
            skipped.push(LoadNote::IgnoredUnused { name, shape });
        }
    }
    notes.extend(skipped);
    Matching {
        file_index,
        notes,
        unexpected,
    }
}

/// The matching under one prefix shared by every name, if there is one that finds every spec:
/// either the file's names are the network's with a prefix (`bert.` + `embeddings...`), or the
/// network's are the file's with a prefix. The candidates come from the first spec the names do
/// not match as they are.
fn prefixed_matching(
    index_of: &HashMap<&str, usize>,
    specs: &[WeightSpec<'_>],
) -> Option<(Vec<Option<usize>>, LoadNote)> {
    let first_missing = specs
        .iter()
        .find(|spec| !index_of.contains_key(spec.name))?;
    let mut file_prefixes: Vec<&str> = index_of
        .keys()
        .filter_map(|name| name.strip_suffix(first_missing.name))
        .filter(|prefix| prefix.ends_with('.'))
        .collect();
    file_prefixes.sort_unstable();
    for prefix in file_prefixes {
        let file_index: Option<Vec<usize>> = specs
            .iter()
            .map(|spec| {
                index_of
                    .get(format!("{prefix}{}", spec.name).as_str())
                    .copied()
            })
            .collect();
        if let Some(file_index) = file_index {
            let note = LoadNote::FilePrefix {
                prefix: prefix.to_string(),
            };
            return Some((file_index.into_iter().map(Some).collect(), note));
        }
    }
    let network_prefixes = first_missing
        .name
        .match_indices('.')
        .map(|(dot, _)| &first_missing.name[..=dot]);
    for prefix in network_prefixes {
        let file_index: Option<Vec<usize>> = specs
            .iter()
            .map(|spec| {
                let name = spec.name.strip_prefix(prefix)?;
                index_of.get(name).copied()
            })
            .collect();
        if let Some(file_index) = file_index {
            let note = LoadNote::NetworkPrefix {
                prefix: prefix.to_string(),
            };
            return Some((file_index.into_iter().map(Some).collect(), note));
        }
    }
    None
}
