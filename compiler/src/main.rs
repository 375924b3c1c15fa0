//! The `nnc` command-line tool.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use nnc_compiler::{FrontendOptions, diagnostics, ir, syntax};

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
}

#[derive(Clone, Copy, ValueEnum)]
enum Emit {
    /// The syntax tree, as parsed.
    Ast,
    /// The IR of every network, after shape inference.
    Ir,
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

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
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
            let options = FrontendOptions { dims };
            match nnc_compiler::compile_to_ir(&source, &options) {
                Ok(module) => {
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
