//! Where the real pretrained models live: the cache folder `bench/fetch_models.sh` fills. Every
//! test that runs real weights finds them here, and says how to fetch them when they are absent.

use std::path::PathBuf;

/// The model cache: `$NNC_MODEL_CACHE`, else `$XDG_CACHE_HOME/nnc/models`, else
/// `~/.cache/nnc/models` (as `bench/fetch_models.sh` chooses it).
pub fn model_cache_dir() -> PathBuf {
    let non_empty = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    if let Some(cache) = non_empty("NNC_MODEL_CACHE") {
        return PathBuf::from(cache);
    }
    let base = non_empty("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| non_empty("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("nnc").join("models")
}

/// all-MiniLM-L6-v2's folder (model.safetensors, tokenizer.json, config.json).
pub const MINILM: &str = "all-MiniLM-L6-v2";
/// SmolLM2-135M-Instruct in llama.cpp's Q4_1 GGUF file.
pub const SMOLLM2_Q4_1: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// `relative` (a file or folder) in the model cache, or, when it is not there, the line a test
/// prints before it skips: `skipped: run bench/fetch_models.sh to fetch …`.
pub fn cached_model(relative: &str) -> Result<PathBuf, String> {
    let path = model_cache_dir().join(relative);
    match path.exists() {
        true => Ok(path),
        false => Err(format!(
            "skipped: run bench/fetch_models.sh to fetch {relative} (looked for {})",
            path.display()
        )),
    }
}
