//! `nnc import`: an ONNX model to a `.nn` file and a safetensors file of its weights, then a
//! check that the `.nn` file compiles and that the weights fit it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use nnc_compiler::onnx::import::{self, ImportOptions};
use nnc_compiler::{FrontendOptions, compile_to_ir, diagnostics};

/// Arguments of `nnc import`.
#[derive(clap::Args)]
pub struct ImportArgs {
    /// The `.onnx` file (opsets 11 to 21, weights inside the file).
    model: PathBuf,
    /// Where to write the `.nn` file.
    #[arg(short, long)]
    output: PathBuf,
    /// Where to write the weights; the output with the extension `.safetensors` if not given.
    #[arg(long, value_name = "FILE")]
    weights_out: Option<PathBuf>,
    /// Fix the whole shape of an input, dynamic dimensions included: `--input-shape x=1,3,224,224`.
    #[arg(long = "input-shape", value_name = "NAME=D0,D1,...", value_parser = parse_input_shape)]
    input_shapes: Vec<(String, Vec<usize>)>,
    /// The value of a named dynamic dimension (its `dim_param`), written to the `where` clause:
    /// `--dim batch=8`. Unnamed ones default to 1.
    #[arg(long = "dim", value_name = "NAME=SIZE", value_parser = parse_dim)]
    dims: Vec<(String, usize)>,
    /// The network's name; the model file's name if not given.
    #[arg(long)]
    name: Option<String>,
}

/// Runs `nnc import`.
pub fn import(args: ImportArgs) -> Result<ExitCode> {
    let stem = args
        .model
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned());
    let options = ImportOptions {
        network_name: args.name.clone().or(stem),
        input_shapes: args.input_shapes.clone(),
        dims: args.dims.clone(),
        source_name: file_name(&args.model),
    };
    let model = nnc_compiler::onnx::read_model(&args.model)?;
    let imported = import::import_model(&model, &options)
        .with_context(|| format!("cannot import {}", args.model.display()))?;
    let weights_path = args
        .weights_out
        .clone()
        .unwrap_or_else(|| args.output.with_extension("safetensors"));
    std::fs::write(&args.output, &imported.source)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    std::fs::write(&weights_path, imported.safetensors()?)
        .with_context(|| format!("cannot write {}", weights_path.display()))?;

    // The generated file must compile and want exactly the weights written beside it.
    let module = match compile_to_ir(&imported.source, &FrontendOptions::default()) {
        Ok(module) => module,
        Err(errors) => {
            let path = args.output.display().to_string();
            eprint!(
                "{}",
                diagnostics::render(&errors.0, &path, &imported.source)
            );
            anyhow::bail!("the imported model does not compile: this is a bug of nnc import");
        }
    };
    let graph = &module.networks[0];
    let wanted = nnc_compiler::interpret::weight_requirements(graph);
    let parameters: usize = imported.weights.iter().map(|(_, c)| c.len()).sum();
    if wanted.len() != imported.weights.len() {
        anyhow::bail!(
            "the imported model wants {} weights but {} were written: this is a bug of nnc import",
            wanted.len(),
            imported.weights.len()
        );
    }
    println!(
        "{}: {} layers' weights ({parameters} parameters) in {}",
        args.output.display(),
        wanted.len(),
        weights_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |name| name.to_string_lossy().into_owned(),
    )
}

fn parse_input_shape(text: &str) -> Result<(String, Vec<usize>), String> {
    let (name, sizes) = text
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=D0,D1,..., got `{text}`"))?;
    let sizes = sizes
        .split(',')
        .map(|size| {
            size.trim()
                .parse::<usize>()
                .ok()
                .filter(|&size| size > 0)
                .ok_or_else(|| format!("`{size}` is not a positive size"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((name.to_string(), sizes))
}

fn parse_dim(text: &str) -> Result<(String, usize), String> {
    let (name, size) = text
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=SIZE, got `{text}`"))?;
    let size = size
        .parse::<usize>()
        .ok()
        .filter(|&size| size > 0)
        .ok_or_else(|| format!("`{size}` is not a positive size"))?;
    Ok((name.to_string(), size))
}
