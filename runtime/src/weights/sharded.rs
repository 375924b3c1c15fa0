//! Where a checkpoint's tensors are: one file, or the shards a `model.safetensors.index.json`
//! lists (Hugging Face's format for checkpoints split into several files), or a folder holding
//! either.
//!
//! The index is `{"metadata": {...}, "weight_map": {"tensor name": "model-00001-of-00002.safetensors",
//! ...}}`, the shard names relative to the index's folder. Every shard is read and every tensor
//! taken from the shard that holds it; the index is checked against the shards (a tensor it names
//! must be in that shard, and no tensor may be in two), so a stale index is an error, not a
//! silently different model.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use safetensors::tensor::TensorView;

use super::WeightsError;

/// The name Hugging Face gives a sharded checkpoint's index.
const INDEX_NAME: &str = "model.safetensors.index.json";

/// What a weights path names.
pub(super) enum Checkpoint {
    /// One safetensors or GGUF file.
    File(PathBuf),
    /// A sharded safetensors checkpoint's index.
    Index(PathBuf),
}

/// Whether `path` is a folder or an index rather than a weights file.
pub(super) fn is_index_or_folder(path: &Path) -> bool {
    path.is_dir() || is_index(path)
}

fn is_index(path: &Path) -> bool {
    path.extension()
        .is_some_and(|extension| extension == "json")
}

/// What `path` names: a folder is looked into for an index, `model.safetensors`, or a single
/// `.safetensors` or `.gguf` file.
pub(super) fn resolve(path: &Path) -> Result<Checkpoint, WeightsError> {
    if !path.is_dir() {
        return Ok(if is_index(path) {
            Checkpoint::Index(path.to_path_buf())
        } else {
            Checkpoint::File(path.to_path_buf())
        });
    }
    let index = path.join(INDEX_NAME);
    if index.is_file() {
        return Ok(Checkpoint::Index(index));
    }
    let single = path.join("model.safetensors");
    if single.is_file() {
        return Ok(Checkpoint::File(single));
    }
    let entries = std::fs::read_dir(path).map_err(|source| WeightsError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let mut candidates: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|file| {
            file.is_file()
                && file
                    .extension()
                    .is_some_and(|extension| extension == "safetensors" || extension == "gguf")
        })
        .collect();
    candidates.sort();
    match candidates.as_slice() {
        [only] => Ok(Checkpoint::File(only.clone())),
        [] => Err(WeightsError::Checkpoint {
            path: path.display().to_string(),
            message: format!(
                "the folder holds no {INDEX_NAME}, model.safetensors, or other .safetensors or \
                 .gguf file"
            ),
        }),
        several => Err(WeightsError::Checkpoint {
            path: path.display().to_string(),
            message: format!(
                "the folder holds several weights files ({}) and no {INDEX_NAME}; give one of \
                 them",
                several
                    .iter()
                    .filter_map(|file| file.file_name())
                    .map(|name| name.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// The shards of a checkpoint, read whole, and the index's map from tensor to shard.
pub(super) struct Shards {
    index_path: String,
    /// Each shard's file name (as the index writes it) and bytes.
    files: Vec<(String, Vec<u8>)>,
    weight_map: BTreeMap<String, String>,
}

/// Reads the index at `index_path` and every shard it names.
pub(super) fn read_shards(index_path: &Path) -> Result<Shards, WeightsError> {
    let index_name = index_path.display().to_string();
    let error = |message: String| WeightsError::Checkpoint {
        path: index_name.clone(),
        message,
    };
    let text = std::fs::read_to_string(index_path).map_err(|source| WeightsError::Io {
        path: index_name.clone(),
        source,
    })?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|parse_error| error(format!("not valid JSON: {parse_error}")))?;
    let map = json
        .get("weight_map")
        .and_then(serde_json::Value::as_object)
        .ok_or_else(|| error("no `weight_map` object: not a safetensors index".to_string()))?;
    let mut weight_map = BTreeMap::new();
    for (tensor, shard) in map {
        let shard = shard.as_str().ok_or_else(|| {
            error(format!(
                "`weight_map` gives `{tensor}` a shard that is not a file name: {shard}"
            ))
        })?;
        if Path::new(shard).components().count() != 1 {
            return Err(error(format!(
                "`weight_map` puts `{tensor}` in `{shard}`, which is not a file beside the index"
            )));
        }
        weight_map.insert(tensor.clone(), shard.to_string());
    }
    let folder = index_path.parent().unwrap_or(Path::new("."));
    let shard_names: BTreeSet<&String> = weight_map.values().collect();
    let mut files = Vec::with_capacity(shard_names.len());
    for shard in shard_names {
        let shard_path = folder.join(shard);
        let bytes = std::fs::read(&shard_path).map_err(|source| WeightsError::Io {
            path: shard_path.display().to_string(),
            source,
        })?;
        files.push((shard.clone(), bytes));
    }
    Ok(Shards {
        index_path: index_name,
        files,
        weight_map,
    })
}

impl Shards {
    /// Every tensor of every shard, checked against the index.
    pub(super) fn views(&self) -> Result<Vec<(String, TensorView<'_>)>, WeightsError> {
        let mut views = Vec::new();
        let mut shard_of: BTreeMap<String, &str> = BTreeMap::new();
        for (shard, bytes) in &self.files {
            let tensors =
                SafeTensors::deserialize(bytes).map_err(|error| WeightsError::Corrupt {
                    path: shard.clone(),
                    message: error.to_string(),
                })?;
            for (name, view) in tensors.tensors() {
                if let Some(other) = shard_of.insert(name.clone(), shard) {
                    return Err(self.error(format!(
                        "tensor `{name}` is in two shards, {other} and {shard}"
                    )));
                }
                views.push((name, view));
            }
        }
        for (tensor, shard) in &self.weight_map {
            if shard_of.get(tensor) != Some(&shard.as_str()) {
                return Err(self.error(format!(
                    "the index puts `{tensor}` in {shard}, which does not hold it"
                )));
            }
        }
        Ok(views)
    }

    fn error(&self, message: String) -> WeightsError {
        WeightsError::Checkpoint {
            path: self.index_path.clone(),
            message,
        }
    }
}
