//! `nnc embed`: sentences in, sentence embeddings out. Tokenizes the sentences with a
//! `tokenizer.json`, pads them into one batch with an attention mask, runs the network (a
//! sentence-transformers model such as `examples/minilm_embed.nn`) in the interpreter, as
//! `nnc run` does, prints the cosine similarity of every pair and writes the embeddings as `.npy`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use ndarray::{Array2, ArrayD, Ix2};
use ndarray_npy::WriteNpyExt;
use nnc_compiler::interpret::{Interpreter, Tensor};
use nnc_compiler::ir;
use nnc_runtime::tokenizer::{EncodedBatch, Tokenizer};

use crate::{Select, WeightsArgs, compile, print, select_network};

/// Arguments of `nnc embed`.
#[derive(clap::Args)]
pub struct EmbedArgs {
    /// The `.nn` file: a network with inputs `input_ids` and `attention_mask` (and optionally
    /// `token_type_ids`), all `i64[batch, seq]`, and one output `[batch, hidden]`.
    model: PathBuf,
    /// The sentences to embed, one batch.
    #[arg(required = true, value_name = "SENTENCE")]
    sentences: Vec<String>,
    #[command(flatten)]
    select: Select,
    #[command(flatten)]
    weights: WeightsArgs,
    /// The Hugging Face `tokenizer.json` of the model.
    #[arg(long)]
    tokenizer: PathBuf,
    /// Write the embeddings, f32 [sentences, hidden], to this `.npy` file.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Kernel threads (default: NNC_NUM_THREADS, else every core).
    #[arg(long)]
    threads: Option<usize>,
}

/// The symbolic dimensions `nnc embed` binds: the number of sentences and the longest one's tokens.
const BATCH_DIM: &str = "batch";
const SEQ_DIM: &str = "seq";

pub fn embed(args: EmbedArgs) -> Result<ExitCode> {
    if let Some(threads) = args.threads {
        nnc_runtime::set_num_threads(threads);
    }
    let tokenizer = Tokenizer::from_file(&args.tokenizer)?;
    let sentences: Vec<&str> = args.sentences.iter().map(String::as_str).collect();
    let batch = tokenizer.encode_batch(&sentences)?;

    // The batch decides `batch` and `seq`, unless the user binds them.
    let mut frontend = args.select.frontend()?;
    for (name, size) in [(BATCH_DIM, batch.texts), (SEQ_DIM, batch.seq)] {
        if !frontend.dims.iter().any(|(bound, _)| bound == name) {
            frontend.dims.push((name.to_string(), size as i64));
        }
    }
    let module = match compile(&args.model, &frontend)? {
        Ok(module) => module,
        Err(code) => return Ok(code),
    };
    let graph = select_network(module, args.select.network.as_deref())?;
    let inputs = model_inputs(&graph, &batch)?;
    let output = embedding_output(&graph)?;

    // Not strict: a sentence-transformers checkpoint is a whole BertModel, pooler included.
    let weights = WeightsArgs {
        allow_unused: true,
        ..args.weights
    }
    .load(&graph)?;
    let interpreter = Interpreter::new(&graph, weights)?;
    let named: Vec<(&str, Tensor)> = inputs
        .iter()
        .map(|(name, tensor)| (name.as_str(), tensor.clone()))
        .collect();
    let embeddings = interpreter
        .run(&named)?
        .into_iter()
        .find(|(name, _)| *name == output)
        .map(|(_, array)| array)
        .context("the network did not produce its output")?
        .into_dimensionality::<Ix2>()
        .context("the embeddings are not [batch, hidden]")?;

    let mut text = format!(
        "{} sentences, {} tokens at most: embeddings f32{:?} ({output})\n",
        batch.texts,
        batch.seq,
        embeddings.shape()
    );
    text.push_str(&similarity_table(&args.sentences, &embeddings));
    if let Some(path) = &args.output {
        let file = std::fs::File::create(path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        embeddings
            .write_npy(std::io::BufWriter::new(file))
            .with_context(|| format!("cannot write {}", path.display()))?;
        text.push_str(&format!(
            "embeddings f32{:?} written to {}\n",
            embeddings.shape(),
            path.display()
        ));
    }
    print(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// The network's inputs from the tokenized batch: `input_ids` and `attention_mask` are needed,
/// `token_type_ids` is optional, anything else is an error.
fn model_inputs(graph: &ir::Graph, batch: &EncodedBatch) -> Result<Vec<(String, Tensor)>> {
    let shape = [batch.texts, batch.seq];
    let names: Vec<&str> = graph
        .inputs
        .iter()
        .map(|input| input.name.as_str())
        .collect();
    for needed in ["input_ids", "attention_mask"] {
        if !names.contains(&needed) {
            bail!(
                "`nnc embed` needs a network with inputs input_ids, attention_mask (and optionally \
                 token_type_ids), all i64[{BATCH_DIM}, {SEQ_DIM}]; `{}` has no `{needed}` (its inputs: {})",
                graph.name,
                names.join(", ")
            );
        }
    }
    graph
        .inputs
        .iter()
        .map(|input| {
            let values = match input.name.as_str() {
                "input_ids" => &batch.input_ids,
                "attention_mask" => &batch.attention_mask,
                "token_type_ids" => &batch.token_type_ids,
                other => bail!(
                    "`nnc embed` feeds input_ids, attention_mask and token_type_ids; it has nothing \
                     for the input `{other}`"
                ),
            };
            let declared = &graph.ty(input.value).shape;
            if declared.as_slice() != shape {
                bail!(
                    "the input `{}` is {declared:?}, not [sentences, tokens] = {shape:?}: declare it \
                     i64[{BATCH_DIM}, {SEQ_DIM}] so that the batch can size it",
                    input.name
                );
            }
            let array = ArrayD::from_shape_vec(shape.to_vec(), values.clone())
                .expect("encode_batch gives sentences * tokens values");
            Ok((input.name.clone(), Tensor::I64(array)))
        })
        .collect()
}

/// The output holding the embeddings: `sentence_embedding`, else the network's only output.
fn embedding_output(graph: &ir::Graph) -> Result<String> {
    let names: Vec<&str> = graph
        .outputs
        .iter()
        .map(|output| output.name.as_str())
        .collect();
    match names.as_slice() {
        _ if names.contains(&"sentence_embedding") => Ok("sentence_embedding".to_string()),
        [only] => Ok(only.to_string()),
        _ => bail!(
            "`{}` has several outputs ({}); name the embeddings `sentence_embedding`",
            graph.name,
            names.join(", ")
        ),
    }
}

/// The cosine similarity of every pair of rows, as a table headed by the sentences.
fn similarity_table(sentences: &[String], embeddings: &Array2<f32>) -> String {
    let norms: Vec<f32> = embeddings
        .rows()
        .into_iter()
        .map(|row| row.dot(&row).sqrt())
        .collect();
    let mut text = String::from("cosine similarity:\n");
    for (index, sentence) in sentences.iter().enumerate() {
        text.push_str(&format!("  [{index}] {sentence}\n"));
    }
    text.push_str("     ");
    for column in 0..sentences.len() {
        text.push_str(&format!(" {:>7}", format!("[{column}]")));
    }
    text.push('\n');
    for (row, left) in embeddings.rows().into_iter().enumerate() {
        text.push_str(&format!("  {:<3}", format!("[{row}]")));
        for (column, right) in embeddings.rows().into_iter().enumerate() {
            let cosine = left.dot(&right) / (norms[row] * norms[column]).max(f32::MIN_POSITIVE);
            text.push_str(&format!(" {cosine:>7.4}"));
        }
        text.push('\n');
    }
    text
}
