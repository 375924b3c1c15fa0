//! Lowering: from the AST to one shape-inferred IR graph per network.
//!
//! Lowering is an evaluator. Constants and integer arithmetic are computed, `if` is decided,
//! `for` and `repeat` are unrolled, blocks are instantiated with their layer-name prefix, and every
//! layer call becomes IR nodes whose types [`infer`](crate::ir::infer::infer) computes on the spot.
//! So every shape error is found here, with the source span of the call that caused it.
//!
//! Errors do not stop lowering: a statement that fails binds its variable to a poisoned value,
//! whose later uses are skipped silently, so each mistake is reported once and all of them at once.
//!
//! The files follow the evaluator's structure, outermost first:
//! - `network.rs`: item names, a network's header (dimensions, inputs, outputs) and its types;
//! - `statements.rs`: `const`, assignments, `if`, `for`, `repeat` and `return`;
//! - `expressions.rs`: literals, variables, operators and calls;
//! - `scope.rs`: variables and file-level constants;
//! - `blocks.rs`: instantiating a user-defined block;
//! - `naming.rs`: layer names (`as` names, PyTorch state-dict names of weights);
//! - `call.rs` and `arguments.rs`: binding a built-in's arguments and reading them by type;
//! - `builtins/`: the table of built-in layers and functions, one file per family.

mod arguments;
mod blocks;
mod builtins;
mod call;
mod expressions;
mod naming;
mod network;
mod quantize;
mod scope;
mod statements;
mod value;

use std::collections::HashMap;

use crate::diagnostics::{Diagnostic, Diagnostics, Span};
use crate::ir::{self, Graph, Module};
use crate::syntax::ast;
use scope::GlobalConst;

pub use builtins::builtin_names;

/// Options of lowering.
#[derive(Clone, Debug, Default)]
pub struct LowerOptions {
    /// Values for symbolic dimensions that replace those of the `where` clauses, e.g. `seq = 512`.
    pub dims: Vec<(String, i64)>,
    /// Quantize the weights of the linear layers at load time (`--quantize`); see `quantize.rs`.
    pub quantize: Option<ir::Quantization>,
    /// Run the 2-D convolutions in int8, their inputs quantized with the ranges of this
    /// calibration (`--quantize int8 --calibration FILE`); see `quantize.rs`.
    pub int8_convs: Option<crate::calibration::Calibration>,
}

/// Lowers every network of `file`.
pub fn lower(file: &ast::File, options: &LowerOptions) -> Result<Module, Diagnostics> {
    let mut lowerer = Lowerer::new(file);
    lowerer.check_item_names(file);
    let mut module = Module::default();
    for item in &file.items {
        if let ast::Item::Network(network) = item
            && let Some(mut graph) = lowerer.lower_network(network, options)
        {
            quantize::quantize_linear_weights(&mut graph, options.quantize);
            if let Some(calibration) = &options.int8_convs
                && let Err(missing) = quantize::quantize_conv_weights(&mut graph, calibration)
            {
                let shown: Vec<String> = missing
                    .iter()
                    .take(5)
                    .map(|name| format!("`{name}`"))
                    .collect();
                let more = if missing.len() > shown.len() {
                    format!(" and {} more", missing.len() - shown.len())
                } else {
                    String::new()
                };
                lowerer.errors.push(
                    Diagnostic::error(
                        network.name.span,
                        format!(
                            "network `{}`: the calibration has no input range for {}{more}",
                            graph.name,
                            shown.join(", ")
                        ),
                    )
                    .with_hint("calibrate this model and these dimensions: `nnc calibrate MODEL --weights W --input SAMPLE.npy -o scales.json`"),
                );
            }
            module.networks.push(graph);
        }
    }
    // Constants no network used are still part of the file, so their mistakes are still errors.
    for item in &file.items {
        if let ast::Item::Const(constant) = item {
            let _ = lowerer.global_const(&constant.name.name, constant.name.span);
        }
    }
    if module.networks.is_empty() && lowerer.errors.is_empty() {
        lowerer.errors.push(
            Diagnostic::error(Span::new(0, 0), "the file defines no network")
                .with_hint("add one: `network mlp(x: f32[1, 784]) -> (y) { y = linear(x, 10) }`"),
        );
    }
    if lowerer.errors.is_empty() {
        Ok(module)
    } else {
        lowerer
            .errors
            .sort_by_key(|diagnostic| (diagnostic.span.start, diagnostic.span.end));
        lowerer.errors.dedup();
        Err(Diagnostics(lowerer.errors))
    }
}

/// The most nested block calls allowed; deeper means a block (indirectly) calls itself.
const MAX_BLOCK_DEPTH: usize = 64;
/// The most nodes one network may unroll to, so that a runaway loop is an error, not a hang.
const MAX_NODES: usize = 1_000_000;

/// Evaluation stopped; the reason is already in `Lowerer::errors` (or was reported earlier).
#[derive(Debug)]
struct Stop;

type Eval<T> = Result<T, Stop>;

/// The state of lowering one file: its items by name, and the errors found so far.
struct Lowerer<'a> {
    consts: HashMap<&'a str, GlobalConst<'a>>,
    blocks: HashMap<&'a str, &'a ast::BlockDef>,
    errors: Vec<Diagnostic>,
}

/// The graph under construction, with what is needed to report duplicate weight names.
struct Builder {
    graph: Graph,
    param_spans: HashMap<String, Span>,
    /// Where `tied` may find weights: param name to value.
    param_values: HashMap<String, ir::Value>,
}

impl Builder {
    /// An empty graph named `name`.
    fn new(name: &str) -> Self {
        Builder {
            graph: Graph::new(name),
            param_spans: HashMap::new(),
            param_values: HashMap::new(),
        }
    }
}

impl<'a> Lowerer<'a> {
    fn new(file: &'a ast::File) -> Self {
        let mut consts = HashMap::new();
        let mut blocks = HashMap::new();
        for item in &file.items {
            match item {
                ast::Item::Const(constant) => {
                    consts
                        .entry(constant.name.name.as_str())
                        .or_insert(GlobalConst::Pending(constant));
                }
                ast::Item::Block(block) => {
                    blocks.entry(block.name.name.as_str()).or_insert(block);
                }
                ast::Item::Network(_) => {}
            }
        }
        Lowerer {
            consts,
            blocks,
            errors: Vec::new(),
        }
    }
}

/// The candidate closest to `name`, if any is close enough to be a likely typo.
pub(crate) fn did_you_mean<'n>(
    name: &str,
    candidates: impl Iterator<Item = &'n str>,
) -> Option<&'n str> {
    candidates
        .filter(|candidate| !candidate.starts_with('<'))
        .map(|candidate| (strsim::damerau_levenshtein(name, candidate), candidate))
        .filter(|(distance, candidate)| *distance <= (name.len().max(candidate.len()) / 3).max(1))
        .min()
        .map(|(_, candidate)| candidate)
}
