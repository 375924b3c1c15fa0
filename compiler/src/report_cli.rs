//! `nnc report`, `nnc graph` and `nnc bench`: the cost-report subcommands of the binary.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use nnc_compiler::bench::{self, BenchOptions, Progress};
use nnc_compiler::passes::OptLevel;
use nnc_compiler::report::{self, FusionGroups, ReportOptions, chart, graph_view, table};
use nnc_compiler::{codegen, ir};

use crate::{Select, compile, parse_opt_level, print, select_network};

/// Arguments of `nnc report`.
#[derive(clap::Args)]
pub struct ReportArgs {
    /// The `.nn` file.
    model: PathBuf,
    #[command(flatten)]
    select: Select,
    /// How to print the report. The JSON schema is documented in docs/cost-model.md.
    #[arg(long, value_enum, default_value = "table")]
    format: ReportFormat,
    /// Also write SVG charts into this directory: `<network>-macs.svg` (MACs per layer) and
    /// `<network>-memory.svg` (the activation arena over time).
    #[arg(long, value_name = "DIR")]
    svg: Option<PathBuf>,
    /// Optimization level of the graph reported: 0 (the model as written; the default), 1 or 2
    /// (what `nnc compile` generates code for, with batch norms folded and layers fused).
    #[arg(short = 'O', default_value = "0", value_parser = parse_opt_level)]
    opt_level: OptLevel,
}

#[derive(Clone, Copy, ValueEnum)]
enum ReportFormat {
    /// A terminal table, like torchinfo's.
    Table,
    /// JSON with a stable, versioned schema.
    Json,
    /// GitHub-flavoured Markdown.
    Markdown,
}

/// Arguments of `nnc graph`.
#[derive(clap::Args)]
pub struct GraphArgs {
    /// The `.nn` file.
    model: PathBuf,
    #[command(flatten)]
    select: Select,
    /// The directory for `<network>.dot` and `<network>.svg`.
    #[arg(short, long, default_value = ".")]
    out_dir: PathBuf,
    /// Who lays out the SVG: Graphviz's `dot` if it is installed (auto), always Graphviz, or
    /// nnc's own layered layout.
    #[arg(long, value_enum, default_value = "auto")]
    layout: Layout,
    /// Optimization level of the graph drawn (see `nnc report -O`).
    #[arg(short = 'O', default_value = "0", value_parser = parse_opt_level)]
    opt_level: OptLevel,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Layout {
    Auto,
    Graphviz,
    Builtin,
}

/// Arguments of `nnc bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// The `.nn` file.
    model: PathBuf,
    #[command(flatten)]
    select: Select,
    /// The weights, a safetensors or `.gguf` file (quantized GGUF tensors are dequantized to f32
    /// at load); random weights (from --seed) if not given.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// The seed of the random weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Untimed runs before measuring.
    #[arg(long, default_value_t = 10)]
    warmup: usize,
    /// The least time to spend on the untimed runs, in seconds: more than --warmup run until it
    /// has passed.
    #[arg(long, default_value_t = 0.0, value_parser = finite_seconds)]
    warmup_seconds: f64,
    /// Timed runs; by default as many as fit in --seconds.
    #[arg(long)]
    iterations: Option<usize>,
    /// Seconds to spend measuring when --iterations is not given (at least 10 timed runs, at
    /// most 100000).
    #[arg(long, default_value_t = 2.0, value_parser = finite_seconds)]
    seconds: f64,
    /// Runs of the per-layer profile; 0 skips it.
    #[arg(long, default_value_t = 20)]
    profile_iterations: usize,
    /// Kernel threads (default: NNC_NUM_THREADS, else every core).
    #[arg(long)]
    threads: Option<usize>,
    /// Show only the N slowest layers.
    #[arg(long, value_name = "N")]
    top: Option<usize>,
    /// How to print the results.
    #[arg(long, value_enum, default_value = "table")]
    format: BenchFormat,
    /// Optimization level of the code benchmarked (as `nnc compile -O`).
    #[arg(short = 'O', default_value = "2", value_parser = parse_opt_level)]
    opt_level: OptLevel,
    /// Where to write and build the benchmark crate.
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Time the generated decoder instead of forward passes: per sequence, `prefill` of a
    /// prompt, then one-token `decode` steps (networks with a KV cache only). --iterations then
    /// counts sequences, and there is no per-layer profile.
    #[arg(long)]
    decode: bool,
    /// With --decode: the prompt's length in tokens.
    #[arg(long, default_value_t = 5, requires = "decode")]
    prompt_tokens: usize,
    /// With --decode: the decode steps timed after the prompt, per sequence.
    #[arg(long, default_value_t = 32, requires = "decode")]
    new_tokens: usize,
}

#[derive(Clone, Copy, ValueEnum)]
enum BenchFormat {
    Table,
    Json,
}

/// The fused groups of `graph`: what `-O2` runs as one kernel.
fn fusion_groups(graph: &ir::Graph) -> FusionGroups {
    let mut optimized = graph.clone();
    nnc_compiler::passes::optimize(&mut optimized, OptLevel::O2, |_, _| {});
    FusionGroups::from_optimized(graph, &optimized)
}

/// Compiles, selects and optimizes the network named by `select`.
pub(crate) fn load(
    model: &PathBuf,
    select: Select,
    level: OptLevel,
) -> Result<Result<ir::Graph, ExitCode>> {
    let module = match compile(model, &select.frontend()?)? {
        Ok(module) => module,
        Err(code) => return Ok(Err(code)),
    };
    let mut graph = select_network(module, select.network.as_deref())?;
    nnc_compiler::passes::optimize(&mut graph, level, |_, _| {});
    Ok(Ok(graph))
}

pub fn report(args: ReportArgs) -> Result<ExitCode> {
    let graph = match load(&args.model, args.select, args.opt_level)? {
        Ok(graph) => graph,
        Err(code) => return Ok(code),
    };
    crate::memory_warning::warn_if_too_big(&graph);
    let plan = codegen::plan(&graph);
    let options = ReportOptions {
        groups: Some(fusion_groups(&graph)),
    };
    let report = report::build(&graph, &plan, &options);
    if let Some(dir) = &args.svg {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let macs = dir.join(format!("{}-macs.svg", graph.name));
        write(&macs, &chart::macs_bar_chart(&report))?;
        let memory = dir.join(format!("{}-memory.svg", graph.name));
        write(&memory, &chart::memory_timeline(&graph, &plan))?;
        eprintln!("wrote {} and {}", macs.display(), memory.display());
    }
    print(&match args.format {
        ReportFormat::Table => table::render_text(&report),
        ReportFormat::Json => report.to_json(),
        ReportFormat::Markdown => table::render_markdown(&report),
    })?;
    Ok(ExitCode::SUCCESS)
}

pub fn graph(args: GraphArgs) -> Result<ExitCode> {
    let graph = match load(&args.model, args.select, args.opt_level)? {
        Ok(graph) => graph,
        Err(code) => return Ok(code),
    };
    let groups = fusion_groups(&graph);
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("cannot create {}", args.out_dir.display()))?;
    let dot_path = args.out_dir.join(format!("{}.dot", graph.name));
    let svg_path = args.out_dir.join(format!("{}.svg", graph.name));
    let dot = graph_view::to_dot(&graph, &groups);
    write(&dot_path, &dot)?;
    let graphviz = match args.layout {
        Layout::Builtin => false,
        Layout::Graphviz => true,
        Layout::Auto => which_dot(),
    };
    let how = if graphviz {
        let spinner = spinner(format!("laying out {} with Graphviz", graph.name));
        let output = std::process::Command::new("dot")
            .args(["-Tsvg", "-o"])
            .arg(&svg_path)
            .arg(&dot_path)
            .output();
        spinner.finish_and_clear();
        match output {
            Ok(output) if output.status.success() => "Graphviz",
            Ok(output) => bail!(
                "Graphviz failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            Err(error) => bail!("cannot run Graphviz's `dot` ({error}); try --layout builtin"),
        }
    } else {
        write(&svg_path, &graph_view::to_svg(&graph, &groups))?;
        "the built-in layout"
    };
    print(&format!(
        "wrote {} and {} ({how})\n",
        dot_path.display(),
        svg_path.display()
    ))?;
    Ok(ExitCode::SUCCESS)
}

pub fn bench(args: BenchArgs) -> Result<ExitCode> {
    let frontend = args.select.frontend()?;
    let graph = match load(&args.model, args.select, args.opt_level)? {
        Ok(graph) => graph,
        Err(code) => return Ok(code),
    };
    // A decoder is benchmarked, and counted, as its one-token step graph.
    let decoder = if args.decode {
        if args.new_tokens == 0 || args.prompt_tokens == 0 {
            bail!("--prompt-tokens and --new-tokens must be at least 1");
        }
        Some(decoder_graphs(
            &args.model,
            &frontend,
            &graph,
            args.opt_level,
        )?)
    } else {
        None
    };
    let counted = decoder.as_ref().map_or(&graph, |graphs| &graphs.step);
    let plan = codegen::plan(counted);
    let report = report::build(counted, &plan, &ReportOptions::default());
    let options = BenchOptions {
        warmup: args.warmup,
        warmup_seconds: args.warmup_seconds,
        iterations: args.iterations,
        seconds: args.seconds,
        profile_iterations: args.profile_iterations,
        seed: args.seed,
        weights: args.weights,
        threads: args.threads,
        work_dir: args.work_dir.unwrap_or_else(bench::default_work_dir),
    };
    let bar = spinner(format!("{}: generating code", graph.name));
    let mut phase = String::new();
    let mut on_progress = |update| match update {
        Progress::Building(status) => {
            bar.set_message(format!("{}: cargo build --release: {status}", graph.name));
        }
        Progress::Running {
            phase: new_phase,
            done,
            total,
        } => {
            if new_phase != phase {
                bar.set_style(bar_style());
                bar.set_length(total);
                bar.set_message(format!("{}: {new_phase}", graph.name));
                phase = new_phase;
            }
            bar.set_position(done);
        }
    };
    let result = match &decoder {
        Some(graphs) => {
            let decode = bench::DecodeOptions {
                prompt_tokens: args.prompt_tokens,
                new_tokens: args.new_tokens,
            };
            bench::run_decoder(&graph, graphs, &decode, &options, &mut on_progress)
        }
        None => bench::run(&graph, &options, &mut on_progress),
    };
    bar.finish_and_clear();
    let measurements = result?;
    let tokens = match &decoder {
        Some(_) => Some(1),
        None => bench::tokens_per_inference(&graph),
    };
    let bench_report = bench::bench_report(&report, tokens, &measurements);
    print(&match args.format {
        BenchFormat::Table => bench_report.render_text(args.top),
        BenchFormat::Json => bench_report.to_json(),
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The one-token step graphs of the decoder of `graph`, which is the network of `model` compiled
/// with `frontend`, or an error if it has none.
pub(crate) fn decoder_graphs(
    model: &Path,
    frontend: &nnc_compiler::FrontendOptions,
    graph: &ir::Graph,
    level: OptLevel,
) -> Result<codegen::DecoderGraphs> {
    let source = std::fs::read_to_string(model)
        .with_context(|| format!("cannot read {}", model.display()))?;
    let module = nnc_compiler::compile_to_ir(&source, frontend)
        .map_err(|_| anyhow::anyhow!("cannot compile {}", model.display()))?;
    nnc_compiler::decoder_steps(&source, frontend, &module, level)
        .into_iter()
        .find(|graphs| graphs.step.name == graph.name)
        .with_context(|| {
            format!(
                "`{}` has no decoder: --decode needs a network whose causal attention has a KV \
                 cache (`kv_cache = N`) and whose sequence length can be set to 1",
                graph.name
            )
        })
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Whether Graphviz's `dot` runs.
fn which_dot() -> bool {
    std::process::Command::new("dot")
        .arg("-V")
        .output()
        .is_ok_and(|output| output.status.success())
}

/// A spinner on standard error (drawn only when it is a terminal).
pub(crate) fn spinner(message: String) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed:>4} {wide_msg}")
            .expect("a valid template"),
    );
    bar.set_message(message);
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {elapsed:>4} {msg} [{bar:30}] {pos}/{len}")
        .expect("a valid template")
        .progress_chars("=> ")
}

/// A duration in seconds for `clap`: a finite number, zero or more.
fn finite_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds >= 0.0 => Ok(seconds),
        Ok(_) => Err(format!(
            "`{text}` is not a finite number of seconds, zero or more"
        )),
        Err(error) => Err(format!("`{text}`: {error}")),
    }
}
