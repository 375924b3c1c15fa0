//! `nnc bench`: builds the generated code of a network with cargo, runs it, and merges the
//! measured times with the static counts of the cost report.
//!
//! The generated code is compiled twice into one harness crate (see [`harness`]): as is, for
//! the latency of whole forward passes, and rewritten by [`instrument`] with a clock around each
//! layer, for the per-layer table. Timing every layer costs two clock reads per layer, which
//! would distort the latency of small networks; keeping the copies apart keeps it honest.

pub mod generate;
pub mod harness;
pub mod instrument;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::codegen::{CodegenOptions, DecoderGraphs, generate, generate_with_decoders};
use crate::ir::{Graph, Module, Op};
use crate::report::{Report, group_digits, human_count};

/// How to run a benchmark.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Untimed forward passes before measuring.
    pub warmup: usize,
    /// The least time, in seconds, to spend on those passes: more than `warmup` run until it
    /// has passed.
    pub warmup_seconds: f64,
    /// Timed forward passes; `None` runs as many as fit in `seconds`.
    pub iterations: Option<usize>,
    /// The time to spend measuring when `iterations` is `None`.
    pub seconds: f64,
    /// Forward passes of the per-layer profile; 0 skips it (and its build).
    pub profile_iterations: usize,
    /// The seed of the random weights, when no weights file is given.
    pub seed: u64,
    /// A safetensors or GGUF file (told apart by the `.gguf` extension) with the network's weights.
    pub weights: Option<PathBuf>,
    /// Kernel threads; `None` leaves the runtime's default.
    pub threads: Option<usize>,
    /// Where the harness projects and their shared target directory live.
    pub work_dir: PathBuf,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            warmup: 10,
            warmup_seconds: 0.0,
            iterations: None,
            seconds: 2.0,
            profile_iterations: 20,
            seed: 0,
            weights: None,
            threads: None,
            work_dir: default_work_dir(),
        }
    }
}

/// Where `nnc bench` and `nnc generate` build their crates by default: `bench-<checkout>` in
/// nnc's cache folder, outside the source tree so that a read-only checkout works. The cache
/// folder is `$NNC_CACHE_DIR`, else `$XDG_CACHE_HOME/nnc`, else `$HOME/.cache/nnc`, else (no
/// home) `target/nnc-bench` of the workspace nnc was built in. `<checkout>` is a short hash of the
/// nnc-runtime path the crates depend on, so that two checkouts do not rebuild each other's.
pub fn default_work_dir() -> PathBuf {
    let variable = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    let cache = variable("NNC_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| variable("XDG_CACHE_HOME").map(|cache| PathBuf::from(cache).join("nnc")))
        .or_else(|| variable("HOME").map(|home| PathBuf::from(home).join(".cache/nnc")));
    match cache {
        Some(cache) => cache.join(format!("bench-{:08x}", checkout_hash())),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/nnc-bench"),
    }
}

/// FNV-1a of the nnc-runtime path, folded to 32 bits: stable across runs and Rust versions.
fn checkout_hash() -> u32 {
    let hash = runtime_dir()
        .to_string_lossy()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    (hash ^ (hash >> 32)) as u32
}

/// The nnc-runtime sources nnc was built with.
pub fn runtime_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime")
}

/// What is happening, for a progress indicator.
#[derive(Clone, Debug, PartialEq)]
pub enum Progress {
    /// Cargo is building; the message is its latest status line.
    Building(String),
    /// The harness is in `phase` (`warmup`, `measure`, `profile`), `done` of `total` passes.
    Running {
        phase: String,
        done: u64,
        total: u64,
    },
}

/// Why a benchmark failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("building the generated code failed:\n{log}")]
    Build { log: String },
    #[error("the benchmark failed:\n{log}")]
    Run { log: String },
    #[error("cannot read the benchmark's results ({reason}):\n{output}")]
    Results { reason: String, output: String },
}

/// The work of one timed sequence of `nnc bench --decode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Tokens of the prompt given to `prefill`.
    pub prompt_tokens: usize,
    /// One-token `decode` steps after the prompt.
    pub new_tokens: usize,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            prompt_tokens: 5,
            new_tokens: 32,
        }
    }
}

/// What the harness measured.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Measurements {
    pub threads: usize,
    pub warmup: usize,
    /// Forward passes; for a decoder harness, one-token decode steps.
    pub latencies_ns: Vec<u64>,
    pub profiled_iterations: usize,
    /// The median time of each timed block run of a forward pass, in the order they ran: a block
    /// inside a rolled loop has one entry per iteration.
    pub layer_median_ns: Vec<u64>,
    /// The timed block of each entry of `layer_median_ns` (an index into
    /// [`instrument::Instrumented::labels`]); empty from a harness that ran each block once.
    #[serde(default)]
    pub layer_slots: Vec<usize>,
    /// The layer each entry of `layer_median_ns` ran where its block named it (an iteration of
    /// a rolled loop, see [`instrument`]), `None` where the block's label does; empty from a
    /// harness that names none.
    #[serde(default)]
    pub layer_names: Vec<Option<String>>,
    /// The comment of the timed block of each entry of `layer_median_ns` (see
    /// [`instrument::Instrumented::labels`]), with the layer the entry ran where the harness
    /// named it; a rolled loop's names `{index}` for its iteration.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Decoder harness only: the prompt's length, the decode steps per sequence, and the time
    /// of `prefill` of each timed sequence.
    #[serde(default)]
    pub prompt_tokens: usize,
    #[serde(default)]
    pub new_tokens: usize,
    #[serde(default)]
    pub prefill_ns: Vec<u64>,
}

/// Writes, builds and runs the harness of `graph`: the latency of whole forward passes, and
/// unless `options.profile_iterations` is 0 the per-layer profile.
pub fn run(
    graph: &Graph,
    options: &BenchOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Measurements, BenchError> {
    let module = Module {
        networks: vec![graph.clone()],
    };
    let code = generate(&module, &codegen_options());
    let profiled = (options.profile_iterations > 0).then(|| instrument::instrument(&code));
    let mut sources = vec![
        (
            "main.rs",
            harness::main_source(graph, profiled.as_ref().map(|p| p.labels.len())),
        ),
        ("model.rs", code.clone()),
    ];
    if let Some(profiled) = &profiled {
        sources.push(("model_profiled.rs", profiled.source.clone()));
    }
    let mut measurements = build_and_run(&graph.name, &sources, &[], options, progress)?;
    let labels = profiled.map(|p| p.labels).unwrap_or_default();
    measurements.labels = labels_of_runs(
        &labels,
        &measurements.layer_slots,
        &measurements.layer_names,
    );
    Ok(measurements)
}

/// The label of each timed block run, from the labels of the blocks, the block each run timed
/// (`slots`) and the layer it ran where the harness named it (`names`, see
/// [`Measurements::layer_names`]; empty for none): the block's label, with the named layer in
/// place of the label's. Without `slots`, each block ran once, in order.
pub fn labels_of_runs(labels: &[String], slots: &[usize], names: &[Option<String>]) -> Vec<String> {
    if slots.is_empty() {
        return labels.to_vec();
    }
    slots
        .iter()
        .enumerate()
        .filter_map(|(run, &slot)| {
            let label = labels.get(slot)?;
            Some(match names.get(run) {
                Some(Some(name)) => {
                    let rest = label.split_once(": ").map_or("", |(_, rest)| rest);
                    format!("{name}: {rest}")
                }
                _ => label.clone(),
            })
        })
        .collect()
}

/// Writes, builds and runs the decoder harness of `graph` (`nnc bench --decode`): the time of
/// `prefill` of a prompt and of each one-token `decode` step after it, of the decoder generated
/// from `decoder` (the network compiled with one token, see
/// [`decoder_steps`](crate::decoder_steps)). The harness is a project of its own, named
/// [`decoder_project_name`], so that it does not rebuild the forward harness's.
pub fn run_decoder(
    graph: &Graph,
    decoder: &DecoderGraphs,
    decode: &DecodeOptions,
    options: &BenchOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Measurements, BenchError> {
    let module = Module {
        networks: vec![graph.clone()],
    };
    let code = generate_with_decoders(&module, std::slice::from_ref(decoder), &codegen_options());
    let sources = vec![
        ("main.rs", harness::decoder_main_source(graph)),
        ("model.rs", code),
    ];
    let arguments = [
        format!("prompt_tokens={}", decode.prompt_tokens),
        format!("new_tokens={}", decode.new_tokens),
    ];
    build_and_run(
        &decoder_project_name(&graph.name),
        &sources,
        &arguments,
        options,
        progress,
    )
}

/// The name of the harness project (and of its folder under the work directory) of the decoder
/// of `network`.
pub fn decoder_project_name(network: &str) -> String {
    format!("{network}_decode")
}

/// The harness binary of project `project` (a network's name, or [`decoder_project_name`]) once
/// built under `work_dir`: it can be run again directly, with the same `key=value` arguments,
/// without rebuilding (bench/peers does this to time each engine in fresh processes).
pub fn harness_binary(work_dir: &Path, project: &str) -> PathBuf {
    work_dir
        .join("target")
        .join("release")
        .join(harness::package_name(project))
        .with_extension(std::env::consts::EXE_EXTENSION)
}

fn codegen_options() -> CodegenOptions {
    CodegenOptions {
        runtime_path: "::nnc_runtime".to_string(),
        source_name: None,
    }
}

/// Writes the harness project `project` (its `Cargo.toml` and `sources` under `src/`), builds
/// it in release mode and runs it with `options` and `extra_arguments`.
fn build_and_run(
    project_name: &str,
    sources: &[(&str, String)],
    extra_arguments: &[String],
    options: &BenchOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Measurements, BenchError> {
    let io = |context: String| move |source| BenchError::Io { context, source };
    let binary = build_project(project_name, sources, &options.work_dir, progress)?;

    // Run.
    let mut command = Command::new(&binary);
    command.arg(format!("warmup={}", options.warmup.max(1)));
    command.arg(format!("warmup_seconds={}", options.warmup_seconds));
    command.arg(format!("seconds={}", options.seconds));
    command.arg(format!("profile_iterations={}", options.profile_iterations));
    command.arg(format!("seed={}", options.seed));
    if let Some(iterations) = options.iterations {
        command.arg(format!("iterations={}", iterations.max(1)));
    }
    if let Some(weights) = &options.weights {
        let weights = weights.canonicalize().unwrap_or_else(|_| weights.clone());
        command.arg(format!("weights={}", weights.display()));
    }
    if let Some(threads) = options.threads {
        command.arg(format!("threads={threads}"));
    }
    command.args(extra_arguments);
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io(format!("cannot run {}", binary.display())))?;
    let stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut output = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stdout), &mut output);
        output
    });
    let mut log = String::new();
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines() {
            let line = line.map_err(io("cannot read the benchmark's output".to_string()))?;
            match parse_progress(&line) {
                Some(update) => progress(update),
                None => {
                    log.push_str(&line);
                    log.push('\n');
                }
            }
        }
    }
    let status = child
        .wait()
        .map_err(io("cannot wait for the benchmark".to_string()))?;
    let output = reader.join().unwrap_or_default();
    if !status.success() {
        return Err(BenchError::Run { log });
    }
    serde_json::from_str(output.trim()).map_err(|error| BenchError::Results {
        reason: error.to_string(),
        output: output.clone(),
    })
}

/// Writes the project `project_name` under `work_dir` (its `Cargo.toml` and `sources` under
/// `src/`) and builds it in release mode against the nnc-runtime sources nnc was built from;
/// returns its binary. Cargo rebuilds only what changed, so a second call is quick.
pub fn build_project(
    project_name: &str,
    sources: &[(&str, String)],
    work_dir: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<PathBuf, BenchError> {
    let io = |context: String| move |source| BenchError::Io { context, source };
    let project = work_dir.join(project_name);
    let source_dir = project.join("src");
    std::fs::create_dir_all(&source_dir)
        .map_err(io(format!("cannot create {}", source_dir.display())))?;
    let runtime = runtime_dir();
    let runtime = runtime.canonicalize().map_err(io(format!(
        "nnc bench builds against the nnc-runtime sources nnc was built from, but {} is gone",
        runtime.display()
    )))?;
    write_if_changed(
        &project.join("Cargo.toml"),
        &harness::manifest(project_name, &runtime.display().to_string()),
    )?;
    for (file, text) in sources {
        write_if_changed(&source_dir.join(file), text)?;
    }
    // Pin the harness's dependencies to the versions the workspace uses.
    let lock = project.join("Cargo.lock");
    let workspace_lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock");
    if !lock.exists() && workspace_lock.exists() {
        std::fs::copy(&workspace_lock, &lock)
            .map_err(io(format!("cannot copy {}", workspace_lock.display())))?;
    }

    // Build.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = work_dir.join("target");
    let mut child = Command::new(&cargo)
        .args(["build", "--release", "--color", "never", "--manifest-path"])
        .arg(project.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io("cannot run cargo".to_string()))?;
    let mut log = String::new();
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines() {
            let line = line.map_err(io("cannot read cargo's output".to_string()))?;
            let status = line.trim_start();
            if status.starts_with("Compiling") || status.starts_with("Building") {
                progress(Progress::Building(status.to_string()));
            }
            log.push_str(&line);
            log.push('\n');
        }
    }
    let status = child
        .wait()
        .map_err(io("cannot wait for cargo".to_string()))?;
    if !status.success() {
        return Err(BenchError::Build { log });
    }

    Ok(harness_binary(work_dir, project_name))
}

/// Reads a `nnc-progress PHASE DONE TOTAL` line.
pub fn parse_progress(line: &str) -> Option<Progress> {
    let mut words = line.strip_prefix("nnc-progress ")?.split_whitespace();
    let phase = words.next()?.to_string();
    let done = words.next()?.parse().ok()?;
    let total = words.next()?.parse().ok()?;
    Some(Progress::Running { phase, done, total })
}

fn write_if_changed(path: &Path, text: &str) -> Result<(), BenchError> {
    if std::fs::read_to_string(path).ok().as_deref() == Some(text) {
        return Ok(());
    }
    std::fs::write(path, text).map_err(|source| BenchError::Io {
        context: format!("cannot write {}", path.display()),
        source,
    })
}

/// Latency percentiles of a set of runs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Latency {
    pub median_ns: u64,
    pub p10_ns: u64,
    pub p90_ns: u64,
    pub mean_ns: u64,
    pub min_ns: u64,
    pub max_ns: u64,
}

/// Nearest-rank percentiles of `latencies` (which must not be empty).
pub fn summarize(latencies: &[u64]) -> Latency {
    let mut sorted = latencies.to_vec();
    sorted.sort_unstable();
    let percentile = |p: f64| {
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    };
    Latency {
        median_ns: percentile(50.0),
        p10_ns: percentile(10.0),
        p90_ns: percentile(90.0),
        mean_ns: sorted.iter().sum::<u64>() / sorted.len() as u64,
        min_ns: sorted[0],
        max_ns: sorted[sorted.len() - 1],
    }
}

/// The tokens one forward pass processes, for decoders: batch × the query length of the first
/// causal attention. `None` for networks without causal attention.
pub fn tokens_per_inference(graph: &Graph) -> Option<u64> {
    graph.nodes.iter().find_map(|(_, data)| match &data.op {
        Op::Attention(attrs) if attrs.causal => {
            let query = graph.ty(data.inputs[0]);
            Some(query.shape[0] as u64 * query.shape[1] as u64)
        }
        _ => None,
    })
}

/// The benchmark of one network: measured times beside the static counts. What
/// `nnc bench --format json` prints; its schema is in `docs/cost-model.md`.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub schema_version: u32,
    pub network: String,
    pub threads: usize,
    pub warmup: usize,
    pub iterations: usize,
    pub latency: Latency,
    pub inferences_per_second: f64,
    /// For decoders: tokens processed per second at the median latency.
    pub tokens_per_second: Option<f64>,
    pub flops: u64,
    /// Counted FLOPs divided by the median latency.
    pub achieved_gflops: f64,
    /// Counted integer operations (two per integer multiply-add: int8 convolutions, quantized
    /// layers in the fast mode), which `flops` leaves out.
    pub ops: u64,
    /// Integer operations divided by the median latency.
    pub achieved_gops: f64,
    pub profiled_iterations: usize,
    /// Every layer of the report, with its median time if it was timed.
    pub layers: Vec<LayerTime>,
    /// `nnc bench --decode` only: prefill and per-token decode times. `latency` is then that
    /// of one decode step, and `flops` those of the one-token graph.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decode: Option<DecodeReport>,
}

/// The times of a decoder (`nnc bench --decode`): per sequence, `prefill` of a prompt of
/// `prompt_tokens` tokens, then `new_tokens` one-token `decode` steps.
#[derive(Clone, Debug, Serialize)]
pub struct DecodeReport {
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    /// Timed sequences.
    pub sequences: usize,
    /// The time of `prefill`, over the timed sequences.
    pub prefill: Latency,
    /// The median prefill time, in milliseconds.
    pub prefill_ms: f64,
    /// The time of one decode step, over every step of every timed sequence.
    pub decode_step: Latency,
    /// The median decode step, in milliseconds per token.
    pub decode_ms_per_token: f64,
    /// New tokens per second at the median decode step.
    pub decode_tokens_per_second: f64,
}

/// One layer: static counts and measured time.
#[derive(Clone, Debug, Serialize)]
pub struct LayerTime {
    pub index: usize,
    pub name: String,
    pub op: &'static str,
    pub macs: u64,
    pub flops: u64,
    /// Integer operations.
    pub ops: u64,
    /// The median time of the layer over the profiled passes; `None` if it was not timed.
    pub median_ns: Option<u64>,
    /// The share of the sum of all layer medians.
    pub share: Option<f64>,
    pub gflops: Option<f64>,
    /// Integer operations per nanosecond, as `gflops`.
    pub gops: Option<f64>,
}

/// Merges measurements with the static report. Timed blocks are matched to layers in order,
/// by layer name, so a block that runs several fused layers is credited to its first; a block
/// inside a rolled loop is credited at each iteration to the layer the harness named for that
/// iteration (see [`labels_of_runs`]), or else to the next layer its label names, a template
/// (`features.{index}.conv.0` names `features.5.conv.0`, then `features.6.conv.0`). A rolled
/// block whose iterations' names share no template and which the harness did not name is
/// labelled with its first iteration's name (MiniLM's loop starts with the layer norm that
/// ends the layer before it: `embeddings.LayerNorm`, then `encoder.layer.0.output.LayerNorm`,
/// ...): a later iteration's time, which no later layer's name matches, goes to the next layer
/// when that layer's op is the label's.
pub fn bench_report(
    report: &Report,
    tokens_per_inference: Option<u64>,
    measurements: &Measurements,
) -> BenchReport {
    let latency = summarize(&measurements.latencies_ns);
    let median_seconds = latency.median_ns.max(1) as f64 * 1e-9;
    let mut times: Vec<Option<u64>> = vec![None; report.layers.len()];
    let mut next_layer = 0;
    for (label, &nanos) in measurements
        .labels
        .iter()
        .zip(&measurements.layer_median_ns)
    {
        let name = instrument::layer_name(label);
        let by_name = report.layers[next_layer..]
            .iter()
            .position(|layer| instrument::names_layer(name, &layer.name));
        let next_by_op = || {
            report
                .layers
                .get(next_layer)
                .filter(|layer| layer.op == instrument::layer_op(label))
                .map(|_| 0)
        };
        if let Some(offset) = by_name.or_else(next_by_op) {
            times[next_layer + offset] = Some(nanos);
            next_layer += offset + 1;
        }
    }
    let total_layer_ns: u64 = times.iter().flatten().sum();
    let layers = report
        .layers
        .iter()
        .zip(times)
        .map(|(layer, median_ns)| LayerTime {
            index: layer.index,
            name: layer.name.clone(),
            op: layer.op,
            macs: layer.macs,
            flops: layer.flops,
            ops: layer.ops,
            median_ns,
            share: median_ns.map(|nanos| nanos as f64 / total_layer_ns.max(1) as f64),
            gflops: median_ns
                .filter(|&nanos| nanos > 0)
                .map(|nanos| layer.flops as f64 / nanos as f64),
            gops: median_ns
                .filter(|&nanos| nanos > 0)
                .map(|nanos| layer.ops as f64 / nanos as f64),
        })
        .collect();
    BenchReport {
        schema_version: crate::report::SCHEMA_VERSION,
        network: report.network.clone(),
        threads: measurements.threads,
        warmup: measurements.warmup,
        iterations: measurements.latencies_ns.len(),
        latency,
        inferences_per_second: 1.0 / median_seconds,
        tokens_per_second: tokens_per_inference.map(|tokens| tokens as f64 / median_seconds),
        flops: report.totals.flops,
        achieved_gflops: report.totals.flops as f64 / latency.median_ns.max(1) as f64,
        ops: report.totals.ops,
        achieved_gops: report.totals.ops as f64 / latency.median_ns.max(1) as f64,
        profiled_iterations: measurements.profiled_iterations,
        layers,
        decode: decode_report(measurements, &latency),
    }
}

/// The decode section of a report, when `measurements` come from the decoder harness.
fn decode_report(measurements: &Measurements, decode_step: &Latency) -> Option<DecodeReport> {
    if measurements.prefill_ns.is_empty() {
        return None;
    }
    let prefill = summarize(&measurements.prefill_ns);
    Some(DecodeReport {
        prompt_tokens: measurements.prompt_tokens,
        new_tokens: measurements.new_tokens,
        sequences: measurements.prefill_ns.len(),
        prefill,
        prefill_ms: prefill.median_ns as f64 * 1e-6,
        decode_step: *decode_step,
        decode_ms_per_token: decode_step.median_ns as f64 * 1e-6,
        decode_tokens_per_second: 1e9 / decode_step.median_ns.max(1) as f64,
    })
}

impl BenchReport {
    /// Pretty-printed JSON, ending in a newline.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("a bench report serializes");
        text.push('\n');
        text
    }

    /// The achieved rates: GFLOP/s, and GOP/s of integer operations when there are any.
    fn achieved(&self) -> String {
        if self.ops == 0 {
            return format!("{:.2} GFLOP/s achieved", self.achieved_gflops);
        }
        format!(
            "{:.2} GFLOP/s and {:.2} GOP/s of integer operations achieved",
            self.achieved_gflops, self.achieved_gops
        )
    }

    /// The counted operations of one pass.
    fn counted(&self) -> String {
        if self.ops == 0 {
            return format!("{} FLOPs", human_count(self.flops));
        }
        format!(
            "{} FLOPs and {} integer operations",
            human_count(self.flops),
            human_count(self.ops)
        )
    }

    /// The summary and the per-layer table; `top` keeps only the slowest layers.
    pub fn render_text(&self, top: Option<usize>) -> String {
        let latency = &self.latency;
        if let Some(decode) = &self.decode {
            return render_decode(self, decode);
        }
        let mut out = format!(
            "{}: {} timed runs after {} warm-up runs, {} thread{}\n",
            self.network,
            group_digits(self.iterations as u64),
            self.warmup,
            self.threads,
            if self.threads == 1 { "" } else { "s" }
        );
        out.push_str(&format!(
            "latency     median {}  p10 {}  p90 {}  (min {}, max {})\n",
            duration(latency.median_ns),
            duration(latency.p10_ns),
            duration(latency.p90_ns),
            duration(latency.min_ns),
            duration(latency.max_ns),
        ));
        out.push_str(&format!(
            "throughput  {:.1} inferences/s",
            self.inferences_per_second
        ));
        if let Some(tokens) = self.tokens_per_second {
            out.push_str(&format!(", {tokens:.0} tokens/s"));
        }
        out.push('\n');
        out.push_str(&format!(
            "compute     {} ({} per inference)\n",
            self.achieved(),
            self.counted()
        ));
        let timed: Vec<&LayerTime> = self
            .layers
            .iter()
            .filter(|layer| layer.median_ns.is_some())
            .collect();
        if timed.is_empty() {
            return out;
        }
        let mut rows: Vec<&LayerTime> = timed.clone();
        if let Some(top) = top {
            rows.sort_by_key(|layer| std::cmp::Reverse(layer.median_ns));
            rows.truncate(top);
        }
        let layer_sum: u64 = timed.iter().filter_map(|layer| layer.median_ns).sum();
        out.push_str(&format!(
            "\nper layer: medians of {} profiled runs (sum {}){}\n",
            self.profiled_iterations,
            duration(layer_sum),
            match top {
                Some(top) if top < timed.len() => format!(", the {top} slowest"),
                _ => String::new(),
            }
        ));
        // Integer operations get their own column when a shown layer has any.
        let integer = rows.iter().any(|layer| layer.ops > 0);
        let rate = |rate: Option<f64>, count: u64| {
            rate.filter(|_| count > 0)
                .map(|rate| format!("{rate:.2}"))
                .unwrap_or_default()
        };
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|layer| {
                let mut cells = vec![
                    format!("{} ({})", layer.name, layer.op),
                    group_digits(layer.macs),
                    group_digits(layer.flops),
                    layer.median_ns.map(duration).unwrap_or_default(),
                    layer
                        .share
                        .map(|share| format!("{:.1}%", share * 100.0))
                        .unwrap_or_default(),
                    rate(layer.gflops, layer.flops),
                ];
                if integer {
                    cells.push(rate(layer.gops, layer.ops));
                }
                cells
            })
            .collect();
        let mut headers = vec!["Layer (op)", "MACs", "FLOPs", "Time", "Share", "GFLOP/s"];
        if integer {
            headers.push("GOP/s (int)");
        }
        let headers: Vec<String> = headers.into_iter().map(String::from).collect();
        let mut widths: Vec<usize> = headers.iter().map(String::len).collect();
        for row in &cells {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut text = String::new();
            for (index, (cell, &width)) in cells.iter().zip(&widths).enumerate() {
                if index == 0 {
                    text.push_str(&format!("{cell:<width$}"));
                } else {
                    text.push_str(&format!("  {cell:>width$}"));
                }
            }
            text.trim_end().to_string() + "\n"
        };
        out.push_str(&line(&headers));
        out.push_str(&format!(
            "{}\n",
            "-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1))
        ));
        for row in &cells {
            out.push_str(&line(row));
        }
        out
    }
}

/// The text of a decoder's benchmark: prefill and decode times.
fn render_decode(report: &BenchReport, decode: &DecodeReport) -> String {
    let (prefill, step) = (&decode.prefill, &decode.decode_step);
    format!(
        "{} decoder: {} timed sequences of a {}-token prompt and {} new tokens after {} warm-up sequences, {} thread{}\n\
         prefill     median {}  p10 {}  p90 {}  ({} tokens)\n\
         decode      median {}  p10 {}  p90 {}  per token ({:.1} tokens/s)\n\
         compute     {} by decode ({} per one-token step)\n",
        report.network,
        group_digits(decode.sequences as u64),
        decode.prompt_tokens,
        decode.new_tokens,
        report.warmup,
        report.threads,
        if report.threads == 1 { "" } else { "s" },
        duration(prefill.median_ns),
        duration(prefill.p10_ns),
        duration(prefill.p90_ns),
        decode.prompt_tokens,
        duration(step.median_ns),
        duration(step.p10_ns),
        duration(step.p90_ns),
        decode.decode_tokens_per_second,
        report.achieved(),
        report.counted(),
    )
}

/// `12.3 µs`, `4.56 ms`, `1.23 s`.
pub fn duration(nanos: u64) -> String {
    let value = nanos as f64;
    if value >= 1e9 {
        format!("{:.2} s", value / 1e9)
    } else if value >= 1e6 {
        format!("{:.2} ms", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.1} µs", value / 1e3)
    } else {
        format!("{nanos} ns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let latencies: Vec<u64> = (1..=10).rev().collect();
        let summary = summarize(&latencies);
        assert_eq!(
            (summary.p10_ns, summary.median_ns, summary.p90_ns),
            (1, 5, 9)
        );
        assert_eq!(
            (summary.min_ns, summary.max_ns, summary.mean_ns),
            (1, 10, 5)
        );
        assert_eq!(summarize(&[7]).median_ns, 7);
    }

    #[test]
    fn progress_lines_parse() {
        assert_eq!(
            parse_progress("nnc-progress measure 3 10"),
            Some(Progress::Running {
                phase: "measure".to_string(),
                done: 3,
                total: 10
            })
        );
        assert_eq!(parse_progress("warning: something"), None);
    }
}
