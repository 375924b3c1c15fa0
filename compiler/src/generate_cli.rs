//! `nnc generate`: text in, text out. Tokenizes the prompt (a `tokenizer.json`, or the
//! tokenizer stored in a GGUF file's metadata), builds the network's generated decoder into a
//! small cached crate (see `nnc_compiler::bench::generate`), runs it, and prints the text of each
//! new token as the program reports it.

use std::io::{BufRead, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, Result, bail};
use nnc_compiler::bench::{self, Progress, generate::Event};
use nnc_compiler::passes::OptLevel;
use nnc_runtime::tokenizer::Tokenizer;

use crate::report_cli::{decoder_graphs, load, spinner};
use crate::{Select, parse_opt_level};

/// Arguments of `nnc generate`.
#[derive(clap::Args)]
pub struct GenerateArgs {
    /// The `.nn` file: a network whose causal attention has a KV cache.
    model: PathBuf,
    #[command(flatten)]
    select: Select,
    /// The weights, a safetensors or `.gguf` file.
    #[arg(long)]
    weights: PathBuf,
    /// A Hugging Face `tokenizer.json`; by default the tokenizer in the GGUF weights.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// The text to continue.
    #[arg(long)]
    prompt: String,
    /// The most tokens to generate (fewer at an end-of-text token or a full context).
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// Sample at this temperature (default 1 with --top-k); greedy without it or --top-k.
    #[arg(long, conflicts_with = "greedy")]
    temperature: Option<f32>,
    /// Sample among the K most likely tokens.
    #[arg(long, value_name = "K", conflicts_with = "greedy")]
    top_k: Option<usize>,
    /// The seed of the sampler.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Always take the most likely token (the default without --temperature or --top-k).
    #[arg(long)]
    greedy: bool,
    /// Kernel threads (default: NNC_NUM_THREADS, else every core).
    #[arg(long)]
    threads: Option<usize>,
    /// Optimization level of the generated code (as `nnc compile -O`).
    #[arg(short = 'O', default_value = "2", value_parser = parse_opt_level)]
    opt_level: OptLevel,
    /// Where to write and build the decoder's crate (kept between runs).
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
}

pub fn generate(args: GenerateArgs) -> Result<ExitCode> {
    let tokenizer = match &args.tokenizer {
        Some(path) => Tokenizer::from_file(path)?,
        None if args.weights.extension().is_some_and(|e| e == "gguf") => {
            Tokenizer::from_gguf_path(&args.weights)?
        }
        None => bail!(
            "{} is not a GGUF file, which would carry its tokenizer: pass --tokenizer tokenizer.json",
            args.weights.display()
        ),
    };
    let prompt = tokenizer.encode(&args.prompt)?;
    if prompt.is_empty() {
        bail!("the prompt is empty");
    }

    let frontend = args.select.frontend()?;
    let graph = match load(&args.model, args.select, args.opt_level)? {
        Ok(graph) => graph,
        Err(code) => return Ok(code),
    };
    let decoder = decoder_graphs(&args.model, &frontend, &graph, args.opt_level)?;
    let sources = bench::generate::sources(&graph, &decoder);
    let project = bench::generate::project_name(&graph.name, &sources[1].1);
    let work_dir = args.work_dir.unwrap_or_else(bench::default_work_dir);
    let bar = spinner(format!("{}: generating code", graph.name));
    let binary = bench::build_project(&project, &sources, &work_dir, &mut |update| {
        if let Progress::Building(status) = update {
            bar.set_message(format!("{}: cargo build --release: {status}", graph.name));
        }
    });
    bar.finish_and_clear();
    let binary = binary?;

    let list = |ids: &[u32]| ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let weights = args.weights.canonicalize().unwrap_or(args.weights);
    let mut command = Command::new(&binary);
    command
        .arg(format!("weights={}", weights.display()))
        .arg(format!("prompt={}", list(&prompt)))
        .arg(format!("stop={}", list(tokenizer.stop_tokens())))
        .arg(format!("max_new_tokens={}", args.max_new_tokens))
        .arg(format!("seed={}", args.seed));
    if !args.greedy {
        if let Some(temperature) = args.temperature {
            command.arg(format!("temperature={temperature}"));
        }
        if let Some(k) = args.top_k {
            command.arg(format!("top_k={k}"));
        }
    }
    if let Some(threads) = args.threads {
        command.arg(format!("threads={threads}"));
    }
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    let stdout = child.stdout.take().context("the decoder's output")?;

    let mut out = std::io::stdout().lock();
    out.write_all(args.prompt.as_bytes())?;
    out.flush()?;
    let mut stream = tokenizer.stream();
    let mut done = None;
    for line in BufReader::new(stdout).lines() {
        match bench::generate::parse_event(&line?) {
            Some(Event::Token(id)) => {
                if tokenizer.is_stop(id) {
                    continue;
                }
                if let Some(text) = stream.step(id)? {
                    out.write_all(text.as_bytes())?;
                    out.flush()?;
                }
            }
            Some(event @ Event::Done { .. }) => done = Some(event),
            None => {}
        }
    }
    writeln!(out)?;
    let status = child.wait().context("cannot wait for the decoder")?;
    if !status.success() {
        bail!("the decoder failed ({status})");
    }
    if let Some(Event::Done {
        prompt_tokens,
        prefill_ns,
        decode_steps,
        decode_ns,
    }) = done
    {
        let rate = |tokens: usize, ns: u64| tokens as f64 / (ns.max(1) as f64 * 1e-9);
        eprintln!(
            "prompt: {prompt_tokens} tokens in {:.1} ms ({:.1} tokens/s); decode: {decode_steps} tokens in {:.1} ms ({:.1} tokens/s)",
            prefill_ns as f64 * 1e-6,
            rate(prompt_tokens, prefill_ns),
            decode_ns as f64 * 1e-6,
            rate(decode_steps, decode_ns),
        );
    }
    Ok(ExitCode::SUCCESS)
}
