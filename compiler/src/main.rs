//! The `nnc` command-line tool.

#![forbid(unsafe_code)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use ndarray::ArrayD;
use ndarray_npy::WriteNpyExt;
use nnc_compiler::interpret::{self, Interpreter, Tensor};
use nnc_compiler::passes::{self, OptLevel};
use nnc_compiler::{FrontendOptions, diagnostics, ir, syntax};
use nnc_ops::{QuantFormat, QuantizedMode};
use nnc_runtime::weights::{LoadOptions, WeightProblem, WeightsError};

mod embed_cli;
mod export_cli;
mod generate_cli;
mod import_cli;
mod memory_warning;
mod report_cli;

/// nnc: compile neural networks described in `.nn` files to specialized Rust code.
#[derive(Parser)]
#[command(name = "nnc", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Parse, shape-check and verify a model; print its IR or AST on request.
    Check {
        /// The `.nn` file.
        model: PathBuf,
        /// What to print once the model checks.
        #[arg(long, value_enum)]
        emit: Option<Emit>,
        /// Bind a symbolic dimension, overriding the `where` clause: `--dim seq=512`.
        #[arg(long = "dim", value_name = "NAME=SIZE", value_parser = parse_dim)]
        dims: Vec<(String, i64)>,
    },
    /// Generate specialized Rust code for a model, linked against nnc-runtime.
    Compile {
        /// The `.nn` file.
        model: PathBuf,
        /// Where to write the Rust source; standard output if not given.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// The path by which the generated code reaches nnc-runtime.
        #[arg(long, default_value = "::nnc::runtime")]
        runtime_path: String,
        /// Bind a symbolic dimension, overriding the `where` clause: `--dim seq=512`.
        #[arg(long = "dim", value_name = "NAME=SIZE", value_parser = parse_dim)]
        dims: Vec<(String, i64)>,
        /// Optimization level: 0 (none), 1 (cleanups), 2 (fusion; the default).
        #[arg(short = 'O', default_value = "2", value_parser = parse_opt_level)]
        opt_level: OptLevel,
        /// Print the IR after this pass (or `all` for after every pass) instead of the code.
        #[arg(long, value_name = "PASS")]
        emit_ir_after: Option<String>,
        #[command(flatten)]
        quantize: QuantizeArgs,
    },
    /// Count parameters, MACs, FLOPs and activation memory per layer and in total.
    Report(report_cli::ReportArgs),
    /// Draw the network as Graphviz DOT and SVG, fused groups boxed.
    Graph(report_cli::GraphArgs),
    /// Build the generated code and time it: latency, throughput, GFLOP/s, time per layer.
    Bench(report_cli::BenchArgs),
    /// Continue a text prompt with a decoder network: tokenizes, builds the generated decoder
    /// (cached between runs), and prints the new text as it comes.
    Generate(generate_cli::GenerateArgs),
    /// Write a model and its weights as an ONNX file (opset 17), for Netron and ONNX Runtime;
    /// the weights become initializers under their state-dict names (f32; quantized blocks are
    /// dequantized).
    Export(export_cli::ExportArgs),
    /// Turn an ONNX model into a `.nn` file and a safetensors file of its weights.
    Import(import_cli::ImportArgs),
    /// Embed sentences with a sentence-transformers network: tokenizes, pads a batch with an
    /// attention mask, prints the cosine similarities and writes the embeddings as `.npy`.
    /// Tensors of the weights file the network does not use (BertModel's pooler) are always
    /// listed and skipped.
    Embed(embed_cli::EmbedArgs),
    /// List the weights a model expects: names, shapes and dtypes, as a weights file must hold them.
    Weights {
        /// The `.nn` file.
        model: PathBuf,
        #[command(flatten)]
        select: Select,
        /// Also check a weights file (safetensors or GGUF, a sharded checkpoint's
        /// model.safetensors.index.json, or a folder) against the list: every tensor present,
        /// with the right shape, readable, and none left over but known non-persistent buffers.
        #[arg(long, value_name = "FILE")]
        check: Option<PathBuf>,
        /// With --check: list and skip tensors the network does not use instead of refusing the
        /// file (PyTorch's `load_state_dict(strict=False)`).
        #[arg(long, requires = "check")]
        allow_unused: bool,
    },
    /// Run a model with the reference interpreter on `.npy` inputs.
    Run {
        /// The `.nn` file.
        model: PathBuf,
        #[command(flatten)]
        select: Select,
        #[command(flatten)]
        weights: WeightsArgs,
        /// An input: `--input x.npy` for a network with one input, else `--input NAME=x.npy`.
        #[arg(long = "input", value_name = "[NAME=]FILE", required = true)]
        inputs: Vec<String>,
        /// Where to write an output: `--output y.npy` for one output, else `--output NAME=y.npy`.
        /// Outputs without a file are summarized on standard output.
        #[arg(long = "output", value_name = "[NAME=]FILE")]
        outputs: Vec<String>,
    },
    /// Record the input range of every 2-D convolution on sample inputs, for `--quantize int8`.
    Calibrate {
        /// The `.nn` file.
        model: PathBuf,
        /// The network to use, when the file defines several.
        #[arg(long)]
        network: Option<String>,
        /// Bind a symbolic dimension, overriding the `where` clause: `--dim seq=512`.
        #[arg(long = "dim", value_name = "NAME=SIZE", value_parser = parse_dim)]
        dims: Vec<(String, i64)>,
        #[command(flatten)]
        weights: WeightsArgs,
        /// Sample inputs, `.npy` files: `--input a.npy b.npy ...` for a network with one input,
        /// else `--input NAME=a.npy ...` (the k-th file of each input makes the k-th sample). A
        /// file holding several samples stacked on the first axis counts as that many.
        #[arg(long = "input", value_name = "[NAME=]FILE", required = true, num_args = 1..)]
        inputs: Vec<String>,
        /// Where to write the calibration (JSON); standard output if not given.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

/// Which network of a file, and its dimensions.
#[derive(clap::Args)]
struct Select {
    /// The network to use, when the file defines several.
    #[arg(long)]
    network: Option<String>,
    /// Bind a symbolic dimension, overriding the `where` clause: `--dim seq=512`.
    #[arg(long = "dim", value_name = "NAME=SIZE", value_parser = parse_dim)]
    dims: Vec<(String, i64)>,
    #[command(flatten)]
    quantize: QuantizeArgs,
}

impl Select {
    /// The front end's options these arguments ask for.
    fn frontend(&self) -> Result<FrontendOptions> {
        self.quantize.frontend(self.dims.clone())
    }
}

/// Quantized weights.
#[derive(clap::Args, Clone, Debug)]
struct QuantizeArgs {
    /// Quantize weights when they are loaded. q8_0, q4_0, q4_1, f16: the linear layers' weights
    /// to this block format, or to half precision (layers whose rows are not whole blocks of 32
    /// keep f32; a GGUF tensor in Q8_0, Q4_0 or Q4_1 keeps its blocks as they are). as-stored:
    /// each GGUF tensor as the file stores it (Q8_0, Q4_0, Q4_1 blocks; anything else f32). int8: the 2-D
    /// convolutions run in integers, weights in int8 per output channel and inputs in u8 with
    /// the ranges of --calibration; the linear layers get q8_0.
    #[arg(long, value_name = "FORMAT", value_parser = parse_quantize_choice)]
    quantize: Option<QuantizeChoice>,
    /// How quantized linear layers multiply: `exact` (f32 activations, weights dequantized in
    /// registers) or `fast` (activations quantized to 8 bits per block, as llama.cpp does).
    #[arg(long, value_name = "MODE", default_value = "exact", value_parser = parse_quantized_mode, requires = "quantize")]
    quantize_mode: QuantizedMode,
    /// The input ranges of the convolutions for `--quantize int8`, as `nnc calibrate` writes.
    #[arg(long, value_name = "FILE", alias = "scales", requires = "quantize")]
    calibration: Option<PathBuf>,
}

/// What `--quantize` names.
#[derive(Clone, Copy, Debug)]
enum QuantizeChoice {
    Blocks(ir::QuantTarget),
    Int8,
}

impl QuantizeArgs {
    /// The front end's options for `dims` and these arguments; reads the calibration file.
    fn frontend(&self, dims: Vec<(String, i64)>) -> Result<FrontendOptions> {
        let mode = self.quantize_mode;
        let (quantize, int8_convs) = match (self.quantize, &self.calibration) {
            (None, _) => (None, None),
            (Some(QuantizeChoice::Blocks(format)), None) => {
                (Some(ir::Quantization { format, mode }), None)
            }
            (Some(QuantizeChoice::Blocks(format)), Some(_)) => {
                bail!("--calibration is for --quantize int8, not --quantize {format}")
            }
            (Some(QuantizeChoice::Int8), None) => bail!(
                "--quantize int8 needs the input ranges of the convolutions: \
                 `nnc calibrate MODEL --weights W --input SAMPLES.npy -o scales.json`, \
                 then --calibration scales.json"
            ),
            (Some(QuantizeChoice::Int8), Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the calibration {}", path.display()))?;
                let calibration = nnc_compiler::calibration::Calibration::from_json(&text)
                    .map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?;
                let linear = ir::Quantization {
                    format: QuantFormat::Q8_0.into(),
                    mode,
                };
                (Some(linear), Some(calibration))
            }
        };
        Ok(FrontendOptions {
            dims,
            quantize,
            int8_convs,
        })
    }
}

fn parse_quantize_choice(text: &str) -> Result<QuantizeChoice, String> {
    if text.eq_ignore_ascii_case("int8") {
        return Ok(QuantizeChoice::Int8);
    }
    ir::QuantTarget::from_name(text)
        .map(QuantizeChoice::Blocks)
        .ok_or_else(|| {
            format!(
                "the formats are {}, int8, not `{text}`",
                ir::QuantTarget::names().join(", ")
            )
        })
}

fn parse_quantized_mode(text: &str) -> Result<QuantizedMode, String> {
    QuantizedMode::from_name(text)
        .ok_or_else(|| format!("the modes are `exact` and `fast`, not `{text}`"))
}

#[derive(Clone, Copy, ValueEnum)]
enum Emit {
    /// The syntax tree, as parsed.
    Ast,
    /// The IR of every network, after shape inference.
    Ir,
}

fn parse_opt_level(text: &str) -> Result<OptLevel, String> {
    match text {
        "0" => Ok(OptLevel::O0),
        "1" => Ok(OptLevel::O1),
        "2" => Ok(OptLevel::O2),
        other => Err(format!(
            "the optimization level is 0, 1 or 2, not `{other}`"
        )),
    }
}

fn parse_dim(text: &str) -> Result<(String, i64), String> {
    let (name, size) = text
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=SIZE, got `{text}`"))?;
    let size = size
        .trim()
        .parse::<i64>()
        .map_err(|error| format!("`{size}` is not an integer: {error}"))?;
    Ok((name.trim().to_string(), size))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        // A closed pipe (`nnc check --emit ir | head`) is the reader's choice, not an error.
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<std::io::Error>()
        .is_some_and(|error| error.kind() == std::io::ErrorKind::BrokenPipe)
}

/// Writes `text` to standard output, returning (not panicking on) a closed pipe.
fn print(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// Reads and compiles a model, printing diagnostics on failure.
fn compile(
    model: &PathBuf,
    frontend: &FrontendOptions,
) -> Result<std::result::Result<ir::Module, ExitCode>> {
    let source = std::fs::read_to_string(model)
        .with_context(|| format!("cannot read {}", model.display()))?;
    let file_name = model.display().to_string();
    Ok(
        nnc_compiler::compile_to_ir(&source, frontend).map_err(|errors| {
            eprint!("{}", diagnostics::render(&errors.0, &file_name, &source));
            let count = errors.0.len();
            eprintln!(
                "error: could not compile `{file_name}` due to {count} previous error{}",
                if count == 1 { "" } else { "s" }
            );
            ExitCode::FAILURE
        }),
    )
}

/// The network `name` of a module, or its only one.
fn select_network(module: ir::Module, name: Option<&str>) -> Result<ir::Graph> {
    let names: Vec<String> = module
        .networks
        .iter()
        .map(|graph| format!("`{}`", graph.name))
        .collect();
    match name {
        Some(name) => module
            .networks
            .into_iter()
            .find(|graph| graph.name == name)
            .with_context(|| {
                format!(
                    "there is no network `{name}`; the file defines {}",
                    names.join(", ")
                )
            }),
        None if module.networks.len() == 1 => {
            Ok(module.networks.into_iter().next().expect("one network"))
        }
        None => bail!(
            "the file defines several networks ({}); choose one with --network",
            names.join(", ")
        ),
    }
}

/// Splits `NAME=FILE`, or pairs a bare `FILE` with the only name there is.
fn named_paths(arguments: &[String], names: &[&str], what: &str) -> Result<Vec<(String, PathBuf)>> {
    arguments
        .iter()
        .map(|argument| match argument.split_once('=') {
            Some((name, path)) => {
                if !names.contains(&name) {
                    bail!(
                        "the network has no {what} `{name}`; its {what}s are {}",
                        names.join(", ")
                    );
                }
                Ok((name.to_string(), PathBuf::from(path)))
            }
            None if names.len() == 1 => Ok((names[0].to_string(), PathBuf::from(argument))),
            None => bail!(
                "the network has several {what}s ({}); write `--{what} NAME={argument}`",
                names.join(", ")
            ),
        })
        .collect()
}

/// Reads the `.npy` file at `path` as a value of the input `name` of `graph` (the interpreter
/// checks its shape).
fn read_input(graph: &ir::Graph, name: &str, path: &std::path::Path) -> Result<Tensor> {
    let input = graph
        .inputs
        .iter()
        .find(|input| input.name == name)
        .expect("named_paths checked the name");
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read the input file {}", path.display()))?;
    interpret::npy::read_npy(&bytes, graph.ty(input.value).dtype)
        .map_err(|message| anyhow::anyhow!("{}: {message}", path.display()))
}

/// Where a command's weights come from: `--weights FILE` (with `--allow-unused`) or
/// `--random-weights SEED`; one definition for `run`, `calibrate`, `export` and `embed`.
#[derive(clap::Args, Clone, Debug)]
struct WeightsArgs {
    /// The weights: a safetensors file with the names `nnc weights` lists, a sharded
    /// checkpoint's model.safetensors.index.json, a folder holding one of them, or a GGUF file
    /// (llama.cpp's names are mapped to Hugging Face's for llama models).
    #[arg(
        long,
        conflicts_with = "random_weights",
        required_unless_present = "random_weights"
    )]
    weights: Option<PathBuf>,
    /// List and skip tensors of the weights file the network does not use instead of refusing
    /// the file (PyTorch's `load_state_dict(strict=False)`).
    #[arg(long, requires = "weights")]
    allow_unused: bool,
    /// Use random weights drawn from this seed instead of a file (the same seed gives the same
    /// weights in every command).
    #[arg(long, value_name = "SEED")]
    random_weights: Option<u64>,
}

impl WeightsArgs {
    /// The weights of `graph`; the weights of quantized layers keep a GGUF file's blocks as they
    /// are.
    fn load(&self, graph: &ir::Graph) -> Result<Vec<nnc_runtime::weights::Weight>> {
        Ok(match (&self.weights, self.random_weights) {
            (Some(path), _) => {
                let loaded = interpret::read_stored_weights(graph, path, &self.load_options())
                    .map_err(|error| with_unused_hint(error, self.allow_unused))?;
                print_notes(&loaded.notes);
                loaded.weights
            }
            (None, Some(seed)) => interpret::try_random_weights(graph, seed)?
                .into_iter()
                .map(nnc_runtime::weights::Weight::F32)
                .collect(),
            (None, None) => bail!("give --weights FILE or --random-weights SEED"),
        })
    }

    /// The weights of `graph` as f32 values, quantized blocks dequantized.
    fn load_f32(&self, graph: &ir::Graph) -> Result<Vec<Vec<f32>>> {
        Ok(match (&self.weights, self.random_weights) {
            (Some(path), _) => read_weights(graph, path, self.allow_unused)?,
            (None, Some(seed)) => interpret::try_random_weights(graph, seed)?,
            (None, None) => bail!("give --weights FILE or --random-weights SEED"),
        })
    }

    fn load_options(&self) -> LoadOptions {
        LoadOptions {
            strict: !self.allow_unused,
        }
    }
}

/// Splits a file's tensor into samples of the input's shape: the tensor itself when it has that
/// shape, else its slices along the first axis when it stacks whole samples there.
fn split_samples(
    tensor: Tensor,
    expected: &[usize],
    path: &std::path::Path,
) -> Result<Vec<Tensor>> {
    fn split<T: Clone>(array: ArrayD<T>, expected: &[usize]) -> Option<Vec<ArrayD<T>>> {
        if array.shape() == expected {
            return Some(vec![array]);
        }
        let (&first, rest) = expected.split_first()?;
        if first == 0
            || array.ndim() != expected.len()
            || &array.shape()[1..] != rest
            || !array.shape()[0].is_multiple_of(first)
        {
            return None;
        }
        let samples = array.shape()[0] / first;
        Some(
            (0..samples)
                .map(|sample| {
                    array
                        .slice_axis(
                            ndarray::Axis(0),
                            ndarray::Slice::from(sample * first..(sample + 1) * first),
                        )
                        .to_owned()
                })
                .collect(),
        )
    }
    let shape = match &tensor {
        Tensor::F32(array) => array.shape().to_vec(),
        Tensor::I64(array) => array.shape().to_vec(),
    };
    let samples = match tensor {
        Tensor::F32(array) => {
            split(array, expected).map(|arrays| arrays.into_iter().map(Tensor::F32).collect())
        }
        Tensor::I64(array) => {
            split(array, expected).map(|arrays| arrays.into_iter().map(Tensor::I64).collect())
        }
    };
    samples.with_context(|| {
        format!(
            "{} has shape {shape:?}: a sample of this input is {expected:?}, or several stacked on the first axis",
            path.display()
        )
    })
}

fn calibrate(
    graph: &ir::Graph,
    weights: &WeightsArgs,
    inputs: &[String],
) -> Result<nnc_compiler::calibration::Calibration> {
    let interpreter = Interpreter::new(graph, weights.load(graph)?)?;
    let input_names: Vec<&str> = graph
        .inputs
        .iter()
        .map(|input| input.name.as_str())
        .collect();
    let mut per_input: Vec<Vec<Tensor>> = vec![Vec::new(); input_names.len()];
    for (name, path) in named_paths(inputs, &input_names, "input")? {
        let index = input_names
            .iter()
            .position(|&known| known == name)
            .expect("named_paths checked the name");
        let expected = &graph.ty(graph.inputs[index].value).shape;
        per_input[index].extend(split_samples(
            read_input(graph, &name, &path)?,
            expected,
            &path,
        )?);
    }
    let count = per_input[0].len();
    if let Some((index, samples)) = per_input
        .iter()
        .enumerate()
        .find(|(_, samples)| samples.len() != count)
    {
        bail!(
            "the input `{}` has {} samples and `{}` has {count}: every input needs one per sample",
            input_names[index],
            samples.len(),
            input_names[0]
        );
    }
    let samples: Vec<Vec<(&str, Tensor)>> = (0..count)
        .map(|sample| {
            input_names
                .iter()
                .zip(&per_input)
                .map(|(&name, tensors)| (name, tensors[sample].clone()))
                .collect()
        })
        .collect();
    Ok(nnc_compiler::calibration::calibrate(
        &interpreter,
        &samples,
    )?)
}

/// Reads the weights of `graph` from `path`, printing what loading ignored on standard error.
fn read_weights(graph: &ir::Graph, path: &Path, allow_unused: bool) -> Result<Vec<Vec<f32>>> {
    let options = LoadOptions {
        strict: !allow_unused,
    };
    let loaded = interpret::read_weights(graph, path, &options)
        .map_err(|error| with_unused_hint(error, allow_unused))?;
    print_notes(&loaded.notes);
    Ok(loaded.weights)
}

/// `error`, with a hint to pass `--allow-unused` when the file has tensors the network does not
/// use and loading was strict.
fn with_unused_hint(error: WeightsError, allow_unused: bool) -> anyhow::Error {
    let unused = matches!(&error, WeightsError::Mismatch { problems, .. }
        if problems.iter().any(|problem| matches!(problem, WeightProblem::Unexpected { .. })));
    match unused && !allow_unused {
        true => anyhow::anyhow!(
            "{error}\nhint: pass --allow-unused to skip the tensors the network does not use, \
             as load_state_dict(strict=False) does"
        ),
        false => error.into(),
    }
}

/// Prints what loading ignored or accepted, on standard error.
fn print_notes(notes: &[nnc_runtime::weights::LoadNote]) {
    for note in notes {
        eprintln!("note: {note}");
    }
}

fn run_network(
    graph: &ir::Graph,
    weights: &WeightsArgs,
    inputs: &[String],
    outputs: &[String],
) -> Result<()> {
    let interpreter = Interpreter::new(graph, weights.load(graph)?)?;

    let input_names: Vec<&str> = graph
        .inputs
        .iter()
        .map(|input| input.name.as_str())
        .collect();
    let mut tensors = Vec::new();
    for (name, path) in named_paths(inputs, &input_names, "input")? {
        let tensor = read_input(graph, &name, &path)?;
        tensors.push((name, tensor));
    }
    let named_inputs: Vec<(&str, Tensor)> = tensors
        .iter()
        .map(|(name, tensor)| (name.as_str(), tensor.clone()))
        .collect();
    let results = interpreter.run(&named_inputs)?;

    let output_names: Vec<&str> = graph
        .outputs
        .iter()
        .map(|output| output.name.as_str())
        .collect();
    let destinations = named_paths(outputs, &output_names, "output")?;
    for (name, array) in &results {
        match destinations
            .iter()
            .find(|(destination, _)| destination == name)
        {
            Some((_, path)) => {
                let file = std::fs::File::create(path)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                array
                    .write_npy(std::io::BufWriter::new(file))
                    .with_context(|| format!("cannot write {}", path.display()))?;
                print(&format!(
                    "{name}: f32{:?} written to {}\n",
                    array.shape(),
                    path.display()
                ))?;
            }
            None => {
                let preview: Vec<String> = array
                    .iter()
                    .take(8)
                    .map(|value| format!("{value:.6}"))
                    .collect();
                let more = if array.len() > 8 { ", ..." } else { "" };
                print(&format!(
                    "{name}: f32{:?} [{}{more}]\n",
                    array.shape(),
                    preview.join(", ")
                ))?;
            }
        }
    }
    Ok(())
}

fn run(cli: Cli) -> Result<ExitCode> {
    // A bad thread count is an error here, not the kernels' silent fallback.
    nnc_runtime::num_threads_from_env().map_err(anyhow::Error::msg)?;
    match cli.command {
        Command::Compile {
            model,
            output,
            runtime_path,
            dims,
            opt_level,
            emit_ir_after,
            quantize,
        } => {
            let frontend = quantize.frontend(dims)?;
            let mut module = match compile(&model, &frontend)? {
                Ok(module) => module,
                Err(code) => return Ok(code),
            };
            if let Some(wanted) = emit_ir_after {
                if wanted != "all" && !passes::pass_names().contains(&wanted.as_str()) {
                    bail!(
                        "there is no pass `{wanted}`; the passes are {}",
                        passes::pass_names().join(", ")
                    );
                }
                let mut text = String::new();
                for graph in &mut module.networks {
                    passes::optimize(graph, opt_level, |name, graph| {
                        if wanted == "all" || wanted == name {
                            text.push_str(&format!(
                                "// after {name}\n{}\n",
                                ir::print::print_graph(graph)
                            ));
                        }
                    });
                }
                print(&text)?;
                return Ok(ExitCode::SUCCESS);
            }
            let source_name = model
                .file_name()
                .map(|name| name.to_string_lossy().to_string());
            let options = nnc_compiler::codegen::CodegenOptions {
                runtime_path,
                source_name,
            };
            // The source compiled above, so it compiles again: one code path with the Builder.
            let source = std::fs::read_to_string(&model)?;
            let code = nnc_compiler::compile_to_rust(&source, &frontend, opt_level, &options)
                .map_err(|errors| anyhow::anyhow!("{errors}"))?;
            match output {
                Some(path) => std::fs::write(&path, code)
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => print(&code)?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Report(args) => report_cli::report(args),
        Command::Graph(args) => report_cli::graph(args),
        Command::Bench(args) => report_cli::bench(args),
        Command::Generate(args) => generate_cli::generate(args),
        Command::Export(args) => export_cli::export(args),
        Command::Import(args) => import_cli::import(args),
        Command::Embed(args) => embed_cli::embed(args),
        Command::Weights {
            model,
            select,
            check,
            allow_unused,
        } => {
            let module = match compile(&model, &select.frontend()?)? {
                Ok(module) => module,
                Err(code) => return Ok(code),
            };
            let graph = select_network(module, select.network.as_deref())?;
            let requirements = interpret::weight_requirements(&graph);
            let width = requirements
                .iter()
                .map(|weight| weight.name.len())
                .max()
                .unwrap_or(4)
                .max(4);
            let mut text = format!("{:<width$}  {:<20}  dtype  kind\n", "name", "shape");
            for weight in &requirements {
                let shape = ir::types::format_shape(&weight.shape);
                let kind = if weight.is_buffer { "buffer" } else { "param" };
                text.push_str(&format!(
                    "{:<width$}  {shape:<20}  f32    {kind}\n",
                    weight.name
                ));
            }
            text.push_str(&format!(
                "{} tensors, {} parameters\n",
                requirements.len(),
                ir::print::group_digits(graph.parameter_count())
            ));
            print(&text)?;
            if let Some(path) = check {
                read_weights(&graph, &path, allow_unused)?;
                print(&format!(
                    "{} holds every weight, with the right shapes\n",
                    path.display()
                ))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            model,
            select,
            weights,
            inputs,
            outputs,
        } => {
            let module = match compile(&model, &select.frontend()?)? {
                Ok(module) => module,
                Err(code) => return Ok(code),
            };
            let graph = select_network(module, select.network.as_deref())?;
            run_network(&graph, &weights, &inputs, &outputs)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Calibrate {
            model,
            network,
            dims,
            weights,
            inputs,
            output,
        } => {
            let frontend = FrontendOptions {
                dims,
                ..Default::default()
            };
            let module = match compile(&model, &frontend)? {
                Ok(module) => module,
                Err(code) => return Ok(code),
            };
            let graph = select_network(module, network.as_deref())?;
            let calibration = calibrate(&graph, &weights, &inputs)?;
            let json = calibration.to_json() + "\n";
            let summary = format!(
                "calibrated {} convolution inputs on {} samples",
                calibration.layers.len(),
                calibration.samples
            );
            match output {
                Some(path) => {
                    std::fs::write(&path, json)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    print(&format!("{summary}: written to {}\n", path.display()))?;
                }
                None => {
                    print(&json)?;
                    eprintln!("{summary}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { model, emit, dims } => {
            let source = std::fs::read_to_string(&model)
                .with_context(|| format!("cannot read {}", model.display()))?;
            let file_name = model.display().to_string();
            let fail = |errors: nnc_compiler::Diagnostics| {
                eprint!("{}", diagnostics::render(&errors.0, &file_name, &source));
                let count = errors.0.len();
                eprintln!(
                    "error: could not compile `{file_name}` due to {count} previous error{}",
                    if count == 1 { "" } else { "s" }
                );
                ExitCode::FAILURE
            };
            if let Some(Emit::Ast) = emit {
                return Ok(match syntax::parse(&source) {
                    Ok(ast) => {
                        print(&format!("{ast:#?}\n"))?;
                        ExitCode::SUCCESS
                    }
                    Err(errors) => fail(errors),
                });
            }
            let options = FrontendOptions {
                dims,
                ..Default::default()
            };
            match nnc_compiler::compile_to_ir(&source, &options) {
                Ok(module) => {
                    module
                        .networks
                        .iter()
                        .for_each(memory_warning::warn_if_too_big);
                    match emit {
                        Some(Emit::Ir) => print(&ir::print::print_module(&module))?,
                        _ => {
                            for graph in &module.networks {
                                print(&format!(
                                    "{}: ok ({} nodes, {} parameters)\n",
                                    graph.name,
                                    graph.nodes.len(),
                                    ir::print::group_digits(graph.parameter_count())
                                ))?;
                            }
                        }
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(errors) => Ok(fail(errors)),
            }
        }
    }
}
