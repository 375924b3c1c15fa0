//! nnc-compiler: the nnc model compiler as a library.
//!
//! The pipeline, top to bottom:
//!
//! 1. [`syntax`]: `.nn` text to an AST (pest grammar in `syntax/nn.pest`);
//! 2. [`lower`]: AST to one IR [`ir::Graph`] per network, with every shape inferred and checked;
//! 3. [`ir::verify`]: the IR invariants, checked after every stage in debug builds and tests;
//! 4. [`passes`]: the optimizer (`passes::optimize` lists the passes in order);
//! 5. [`codegen`]: Rust source for each network, with its memory plan.
//!
//! The `interpreter` feature adds [`interpret`], which runs a graph with nnc-runtime's kernels.
//!
//! Analyses beside the pipeline: [`cost`] counts parameters, MACs, FLOPs and memory per node; the
//! `report` feature renders them ([`report`]: tables, JSON, SVG charts, the graph as DOT/SVG), and
//! the `cli` feature adds [`bench`], which builds generated code and times it layer by layer.
//!
//! Errors are [`diagnostics::Diagnostic`]s; [`diagnostics::render`] prints them like rustc.

#![forbid(unsafe_code)]

#[cfg(feature = "cli")]
pub mod bench;
mod build;
pub mod calibration;
pub mod codegen;
pub mod cost;
pub mod diagnostics;
#[cfg(feature = "interpreter")]
pub mod interpret;
pub mod ir;
pub mod kernel_call;
pub mod lower;
#[cfg(feature = "onnx")]
pub mod onnx;
pub mod passes;
#[cfg(feature = "report")]
pub mod report;
pub mod syntax;

pub use build::{BuildError, Builder};
pub use diagnostics::{Diagnostic, Diagnostics, Span};
pub use lower::LowerOptions;
pub use nnc_ops::quant::{QuantFormat, QuantizedMode};

/// Options of the front end.
pub type FrontendOptions = LowerOptions;

/// Compiles `source` to Rust: every network, and for each decoder with a KV cache a one-token
/// decoder with `prefill`, `decode` and `generate` (and `encode` for an encoder–decoder). A
/// network is a decoder when setting one of its dimensions to 1 — its target sequence length —
/// makes every KV-cached attention a one-query attention over the new token (see
/// [`codegen::is_decoder_step`]); a dimension named `seq` is tried first. The one code path of
/// `nnc compile`, `Builder` and `network!`.
pub fn compile_to_rust(
    source: &str,
    frontend: &FrontendOptions,
    level: passes::OptLevel,
    codegen_options: &codegen::CodegenOptions,
) -> Result<String, Diagnostics> {
    let mut module = compile_to_ir(source, frontend)?;
    optimize_module(&mut module, level);
    let step_graphs = decoder_steps(source, frontend, &module, level);
    Ok(codegen::generate_with_decoders(
        &module,
        &step_graphs,
        codegen_options,
    ))
}

/// The step graphs of the decoders among `module`'s networks, optimized at `level`: one token,
/// and a prefill chunk (see [`codegen::prefill_chunk_len`]). `module` is `source` compiled with
/// `frontend`. Also what `nnc bench --decode` builds its decoder from.
pub fn decoder_steps(
    source: &str,
    frontend: &FrontendOptions,
    module: &ir::Module,
    level: passes::OptLevel,
) -> Vec<codegen::DecoderGraphs> {
    let cached: Vec<&ir::Graph> = module
        .networks
        .iter()
        .filter(|graph| {
            graph.nodes.iter().any(|(_, node)| {
                matches!(&node.op, ir::Op::Attention(attrs) if attrs.kv_cache.is_some())
            })
        })
        .collect();
    let mut candidates: Vec<&str> = cached
        .iter()
        .flat_map(|graph| &graph.dims)
        .filter(|(_, size)| *size != 1)
        .map(|(name, _)| name.as_str())
        .collect();
    candidates.sort_by_key(|&name| name != "seq");
    let mut seen = std::collections::HashSet::new();
    candidates.retain(|&name| seen.insert(name));
    // The networks of `source` with `dim` set to `size`, if it compiles.
    let with_dim = |dim: &str, size: i64| {
        let mut dims = frontend.dims.clone();
        dims.retain(|(name, _)| name != dim);
        dims.push((dim.to_string(), size));
        // A network that does not compile with these sizes has no decoder; that is not an error.
        compile_to_ir(
            source,
            &FrontendOptions {
                dims,
                ..frontend.clone()
            },
        )
        .map(|module| module.networks)
    };
    let mut steps: Vec<codegen::DecoderGraphs> = Vec::new();
    for dim in candidates {
        if steps.len() == cached.len() {
            break;
        }
        let Ok(networks) = with_dim(dim, 1) else {
            continue;
        };
        for mut step in networks {
            let new = cached.iter().any(|network| network.name == step.name)
                && !steps.iter().any(|graphs| graphs.step.name == step.name);
            if !new || !codegen::is_decoder_step(&step) {
                continue;
            }
            let chunk = codegen::prefill_chunk_len(&step).and_then(|tokens| {
                let networks = with_dim(dim, i64::try_from(tokens).ok()?).ok()?;
                let mut chunk = networks.into_iter().find(|graph| graph.name == step.name)?;
                passes::optimize(&mut chunk, level, |_, _| {});
                Some(chunk)
            });
            passes::optimize(&mut step, level, |_, _| {});
            steps.push(codegen::DecoderGraphs { step, chunk });
        }
    }
    steps
}

/// Runs the optimizer over every network of `module`.
pub fn optimize_module(module: &mut ir::Module, level: passes::OptLevel) {
    for graph in &mut module.networks {
        passes::optimize(graph, level, |_, _| {});
    }
}

/// Parses, lowers and verifies `source`, the text of one `.nn` file.
pub fn compile_to_ir(source: &str, options: &FrontendOptions) -> Result<ir::Module, Diagnostics> {
    let file = syntax::parse(source)?;
    let module = lower::lower(&file, options)?;
    if cfg!(debug_assertions) {
        for graph in &module.networks {
            if let Err(errors) = ir::verify::verify(graph) {
                panic!(
                    "lowering produced an invalid graph for `{}`:\n{}",
                    graph.name,
                    errors.join("\n")
                );
            }
        }
    }
    Ok(module)
}
