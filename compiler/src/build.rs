//! The `build.rs` API, in the style of prost-build: compile `.nn` files to Rust in `OUT_DIR`.
//!
//! ```no_run
//! // In build.rs's `main`:
//! nnc_compiler::Builder::new().compile(&["models/mobilenet_v2.nn"]).unwrap();
//! ```
//!
//! ```text
//! // src/lib.rs: `mobilenet_v2.rs` defines `pub struct MobilenetV2`.
//! include!(concat!(env!("OUT_DIR"), "/mobilenet_v2.rs"));
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use crate::FrontendOptions;
use crate::calibration::Calibration;
use crate::codegen::CodegenOptions;
use crate::diagnostics::render;
use crate::ir::Quantization;
use crate::passes::OptLevel;
use nnc_ops::{QuantFormat, QuantizedMode};

/// Compiles `.nn` files to Rust source files, one per model, named after the model file.
#[derive(Clone, Debug)]
pub struct Builder {
    out_dir: Option<PathBuf>,
    runtime_path: String,
    dims: Vec<(String, i64)>,
    emit_rerun_if_changed: bool,
    opt_level: OptLevel,
    quantize: Option<Quantization>,
    int8_convs: Option<Calibration>,
}

/// Why a build failed: the rendered diagnostics, or an I/O error.
#[derive(Debug)]
pub struct BuildError {
    message: String,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BuildError {}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    /// A builder writing to `OUT_DIR`, for code that reaches the runtime as `::nnc::runtime`.
    pub fn new() -> Self {
        Builder {
            out_dir: None,
            runtime_path: CodegenOptions::default().runtime_path,
            dims: Vec::new(),
            emit_rerun_if_changed: true,
            opt_level: OptLevel::default(),
            quantize: None,
            int8_convs: None,
        }
    }

    /// Writes to `dir` instead of `OUT_DIR`.
    pub fn out_dir(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.out_dir = Some(dir.into());
        self
    }

    /// The path by which generated code reaches nnc-runtime (`::nnc_runtime` for crates that
    /// depend on the runtime directly).
    pub fn runtime_path(&mut self, path: impl Into<String>) -> &mut Self {
        self.runtime_path = path.into();
        self
    }

    /// Binds a symbolic dimension, overriding the models' `where` clauses.
    pub fn dim(&mut self, name: impl Into<String>, size: i64) -> &mut Self {
        self.dims.push((name.into(), size));
        self
    }

    /// How hard to optimize (`O2` by default).
    pub fn opt_level(&mut self, level: OptLevel) -> &mut Self {
        self.opt_level = level;
        self
    }

    /// Quantizes the weights of the linear layers to `format` when the generated code loads
    /// them, and runs those layers on the quantized weights in `mode` (as `nnc compile
    /// --quantize`). Layers whose rows are not whole blocks of 32 keep f32 weights.
    /// A GGUF tensor already in one of the block formats keeps its blocks as they are.
    pub fn quantize(&mut self, format: QuantFormat, mode: QuantizedMode) -> &mut Self {
        self.quantize = Some(Quantization {
            format: format.into(),
            mode,
        });
        self
    }

    /// Keeps the weights of the linear layers as the GGUF file stores them (as `nnc compile
    /// --quantize as-stored`): Q8_0, Q4_0 and Q4_1 tensors as their blocks, run in `mode`,
    /// anything else (and every safetensors weight) in f32.
    pub fn quantize_as_stored(&mut self, mode: QuantizedMode) -> &mut Self {
        self.quantize = Some(Quantization {
            format: crate::ir::QuantTarget::AsStored,
            mode,
        });
        self
    }

    /// Runs the 2-D convolutions in int8, as `nnc compile --quantize int8 --calibration FILE`
    /// does: their weights quantized per output channel when the generated code loads them,
    /// their inputs quantized to u8 with the ranges of `calibration` (written by `nnc
    /// calibrate`, read with [`Calibration::from_json`]); the linear layers get Q8_0 weights run
    /// in `mode`. A calibration belongs to one model: compile one model per builder.
    pub fn quantize_int8(&mut self, calibration: Calibration, mode: QuantizedMode) -> &mut Self {
        self.quantize = Some(Quantization {
            format: QuantFormat::Q8_0.into(),
            mode,
        });
        self.int8_convs = Some(calibration);
        self
    }

    /// Whether to print `cargo:rerun-if-changed` for each model (on by default).
    pub fn emit_rerun_if_changed(&mut self, emit: bool) -> &mut Self {
        self.emit_rerun_if_changed = emit;
        self
    }

    /// Compiles each model to `<out_dir>/<file stem>.rs`. All models are compiled, and the
    /// diagnostics of every failing one are reported together.
    pub fn compile(&self, models: &[impl AsRef<Path>]) -> Result<(), BuildError> {
        let out_dir = match &self.out_dir {
            Some(dir) => dir.clone(),
            None => PathBuf::from(std::env::var_os("OUT_DIR").ok_or_else(|| {
                BuildError {
                    message:
                        "OUT_DIR is not set: call Builder::out_dir, or run from a build script"
                            .to_string(),
                }
            })?),
        };
        let mut failures = Vec::new();
        for model in models {
            let model = model.as_ref();
            if self.emit_rerun_if_changed {
                println!("cargo:rerun-if-changed={}", model.display());
            }
            if let Err(message) = self.compile_one(model, &out_dir) {
                failures.push(message);
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(BuildError {
                message: failures.join("\n"),
            })
        }
    }

    fn compile_one(&self, model: &Path, out_dir: &Path) -> Result<(), String> {
        let source = std::fs::read_to_string(model)
            .map_err(|error| format!("cannot read {}: {error}", model.display()))?;
        let file_name = model.display().to_string();
        let source_name = model
            .file_name()
            .map(|name| name.to_string_lossy().to_string());
        let options = CodegenOptions {
            runtime_path: self.runtime_path.clone(),
            source_name,
        };
        let frontend = FrontendOptions {
            dims: self.dims.clone(),
            quantize: self.quantize,
            int8_convs: self.int8_convs.clone(),
        };
        let code = crate::compile_to_rust(&source, &frontend, self.opt_level, &options)
            .map_err(|errors| render(&errors.0, &file_name, &source))?;
        let stem = model
            .file_stem()
            .ok_or_else(|| format!("{} has no file name", model.display()))?;
        let destination = out_dir.join(stem).with_extension("rs");
        // Rewrite only on change, so that cargo does not rebuild what did not change.
        if std::fs::read_to_string(&destination).ok().as_deref() != Some(code.as_str()) {
            std::fs::write(&destination, code)
                .map_err(|error| format!("cannot write {}: {error}", destination.display()))?;
        }
        Ok(())
    }
}
