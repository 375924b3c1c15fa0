//! `nnc export`: a model and its weights as an ONNX file (opset 17), for Netron, ONNX Runtime
//! and every tool that reads ONNX (see `nnc_compiler::onnx::export` and docs/onnx.md).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use nnc_compiler::passes::OptLevel;
use nnc_compiler::{FrontendOptions, onnx};

use crate::{WeightsArgs, compile, parse_dim, parse_opt_level, print, select_network};

/// Arguments of `nnc export`.
#[derive(clap::Args)]
pub struct ExportArgs {
    /// The `.nn` file.
    model: PathBuf,
    /// Where to write the ONNX model.
    #[arg(short, long)]
    output: PathBuf,
    #[command(flatten)]
    weights: WeightsArgs,
    /// The network to export, when the file defines several.
    #[arg(long)]
    network: Option<String>,
    /// Bind a symbolic dimension, overriding the `where` clause: `--dim seq=512`.
    #[arg(long = "dim", value_name = "NAME=SIZE", value_parser = parse_dim)]
    dims: Vec<(String, i64)>,
    /// Optimization level: 0 (the graph as written; the default), 1 (cleanups), 2 (also batch
    /// norms folded into the weights and fusions, written back as standard ops).
    #[arg(short = 'O', default_value = "0", value_parser = parse_opt_level)]
    opt_level: OptLevel,
}

/// Runs `nnc export`.
pub fn export(args: ExportArgs) -> Result<ExitCode> {
    let frontend = FrontendOptions {
        dims: args.dims,
        ..Default::default()
    };
    let module = match compile(&args.model, &frontend)? {
        Ok(module) => module,
        Err(code) => return Ok(code),
    };
    let mut graph = select_network(module, args.network.as_deref())?;
    let weights = args.weights.load_f32(&graph)?;
    onnx::export::optimize_for_export(&mut graph, args.opt_level);
    let model = onnx::export::export(&graph, &weights)?;
    let bytes = onnx::encode_model(&model);
    std::fs::write(&args.output, &bytes)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    let onnx_graph = model.graph.unwrap_or_default();
    print(&format!(
        "{}: {} nodes, {} initializers, opset {}, {:.1} MB written to {}\n",
        graph.name,
        onnx_graph.node.len(),
        onnx_graph.initializer.len(),
        onnx::export::OPSET,
        bytes.len() as f64 / 1e6,
        args.output.display()
    ))?;
    Ok(ExitCode::SUCCESS)
}
