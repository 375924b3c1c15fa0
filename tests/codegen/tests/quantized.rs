//! Generated code with quantized linear layers (`Builder::quantize`, as `nnc compile
//! --quantize`), on the small Llama of `tests/codegen/models` in each format and mode built by
//! `build.rs`:
//! - it equals the reference interpreter compiled with the same quantization;
//! - the exact mode equals the f32 model whose linear weights are the quantized ones,
//!   dequantized (the weights are rounded once, at load; nothing else is);
//! - the fast mode stays near the exact mode (its only extra error is rounding activations);
//! - the quantized decoder's prefill equals decoding the prompt token by token.

use nnc::runtime::kernels::quantized::{QuantFormat, QuantizedMatrix, QuantizedMode};
use nnc_codegen_tests::{Input, Runner};
use nnc_compiler::interpret::{Interpreter, Tensor};
use nnc_compiler::ir::{Graph, QuantTarget, Quantization, WeightStorage};
use nnc_compiler::{FrontendOptions, compile_to_ir};
use nnc_test_support::inputs::{inputs_for, named, weights_for};
use nnc_test_support::{TestModel, codegen_models};

/// The quantized builds: module, format, mode and adapter.
const BUILDS: [(&str, QuantFormat, QuantizedMode, Runner); 5] = [
    (
        "q8_0 exact",
        QuantFormat::Q8_0,
        QuantizedMode::Exact,
        nnc_codegen_tests::quantized_q8_0_exact::run,
    ),
    (
        "q4_0 fast",
        QuantFormat::Q4_0,
        QuantizedMode::Fast,
        nnc_codegen_tests::quantized_q4_0_fast::run,
    ),
    (
        "q4_1 exact",
        QuantFormat::Q4_1,
        QuantizedMode::Exact,
        nnc_codegen_tests::quantized_q4_1_exact::run,
    ),
    (
        "q4_1 fast",
        QuantFormat::Q4_1,
        QuantizedMode::Fast,
        nnc_codegen_tests::quantized_q4_1_fast::run,
    ),
    (
        "f16 exact",
        QuantFormat::F16,
        QuantizedMode::Exact,
        nnc_codegen_tests::quantized_f16_exact::run,
    ),
];

fn small_llama() -> TestModel {
    codegen_models()
        .into_iter()
        .find(|model| model.name == "small_llama")
        .unwrap()
}

fn graph(model: &TestModel, quantize: Option<Quantization>) -> Graph {
    let options = FrontendOptions {
        quantize,
        ..Default::default()
    };
    compile_to_ir(&model.source(), &options)
        .unwrap()
        .networks
        .remove(0)
}

/// `max |actual - expected| / max(|expected|, 1)`.
fn max_error(actual: &[f32], expected: &[f32]) -> f32 {
    assert_eq!(actual.len(), expected.len());
    actual
        .iter()
        .zip(expected)
        .map(|(a, e)| (a - e).abs() / e.abs().max(1.0))
        .fold(0.0f32, f32::max)
}

fn run_generated(run: Runner, weights: Vec<Vec<f32>>, inputs: &[(String, Tensor)]) -> Vec<f32> {
    let dynamic: Vec<Input<'_>> = inputs
        .iter()
        .map(|(_, tensor)| match tensor {
            Tensor::F32(array) => Input::F32(array.view()),
            Tensor::I64(array) => Input::I64(array.view()),
        })
        .collect();
    let outputs = run(weights, &dynamic).unwrap();
    outputs[0].iter().copied().collect()
}

/// The position of the largest logit of each row of `vocab` logits.
fn greedy_tokens(logits: &[f32], vocab: usize) -> Vec<usize> {
    logits
        .chunks_exact(vocab)
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0, f32::MIN), |best, (index, &value)| {
                    if value > best.1 { (index, value) } else { best }
                })
                .0
        })
        .collect()
}

#[test]
fn quantized_code_equals_the_interpreter_and_the_dequantized_model() {
    let model = small_llama();
    let f32_graph = graph(&model, None);
    let weights = weights_for(&model, &f32_graph, 7);
    let inputs = inputs_for(&model, &f32_graph, 7);
    let vocab = *f32_graph
        .ty(f32_graph.outputs[0].value)
        .shape
        .last()
        .unwrap();
    let mut exact_logits = Vec::new();
    for (name, format, mode, run) in BUILDS {
        let quantization = Quantization {
            format: format.into(),
            mode,
        };
        let graph = graph(&model, Some(quantization));
        // Every linear layer of the model has rows of whole blocks (64 or 96 values); the tied
        // head's table, which the embedding also reads, is quantized to Q8_0.
        let quantized: Vec<(usize, QuantFormat)> = graph
            .params
            .iter()
            .enumerate()
            .filter_map(|(index, (_, param))| match param.storage {
                WeightStorage::Quantized(stored) => {
                    assert_eq!(stored.mode, mode);
                    let QuantTarget::Format(stored_format) = stored.format else {
                        panic!("{name}: param {index} is stored {}", stored.format)
                    };
                    Some((index, stored_format))
                }
                WeightStorage::F32 | WeightStorage::Int8(_) => None,
            })
            .collect();
        assert_eq!(
            quantized.len(),
            3 * 7 + 1,
            "{name}: q, k, v, o, gate, up, down and the head"
        );
        let tied: Vec<_> = quantized
            .iter()
            .filter(|(_, stored)| *stored != format)
            .collect();
        assert!(
            tied.len() == 1 && tied[0].1 == QuantFormat::Q8_0 || format == QuantFormat::Q8_0,
            "{name}: {quantized:?}"
        );

        let generated = run_generated(run, weights.clone(), &inputs);
        let interpreted = Interpreter::new(&graph, weights.clone())
            .unwrap()
            .run(&named(&inputs))
            .unwrap();
        let interpreted: Vec<f32> = interpreted[0].1.iter().copied().collect();
        let error = max_error(&generated, &interpreted);
        println!("{name}: generated vs interpreter {error:.2e}");
        assert!(error <= 1e-5, "{name}: generated vs interpreter {error:e}");

        // The f32 model on weights that the format holds exactly (quantized and dequantized
        // once), against the quantized model on the same weights, which quantizes them again
        // without loss: the weights are then the same, and only the order of additions differs.
        // (The tied table is quantized once, to Q8_0, and both the head and the embedding read
        // those blocks.)
        if mode == QuantizedMode::Exact {
            let mut rounded = weights.clone();
            for &(index, format) in &quantized {
                let shape = &graph
                    .ty(graph.params.iter().nth(index).unwrap().1.value)
                    .shape;
                let (rows, cols) = (shape[0], shape[1]);
                let matrix =
                    QuantizedMatrix::quantize(format, &weights[index], rows, cols).unwrap();
                rounded[index] = matrix.dequantize();
            }
            let f32_run = Interpreter::new(&f32_graph, rounded.clone())
                .unwrap()
                .run(&named(&inputs))
                .unwrap();
            let f32_logits: Vec<f32> = f32_run[0].1.iter().copied().collect();
            let on_rounded = run_generated(run, rounded, &inputs);
            let error = max_error(&on_rounded, &f32_logits);
            println!("{name}: exact mode vs the f32 model on the dequantized weights {error:.2e}");
            assert!(
                error <= 1e-4,
                "{name}: exact mode vs dequantized f32 {error:e}"
            );
            exact_logits.push((format, generated.clone()));
        } else {
            // `BUILDS` lists a format's exact build before its fast one; a fast build without
            // an exact twin (Q4_0) has nothing to drift from.
            let Some((_, exact)) = exact_logits
                .iter()
                .find(|(exact_format, _)| *exact_format == format)
            else {
                continue;
            };
            // Relative to the logits' scale: rounding the activations moves every logit by a
            // similar absolute amount, so a logit near zero has a large error of its own.
            let scale = exact.iter().fold(0.0f32, |max, value| max.max(value.abs()));
            let drift = generated
                .iter()
                .zip(exact)
                .fold(0.0f32, |max, (a, b)| max.max((a - b).abs()))
                / scale;
            let mean = generated
                .iter()
                .zip(exact)
                .map(|(a, b)| (a - b).abs())
                .sum::<f32>()
                / exact.len() as f32;
            let tokens = greedy_tokens(&generated, vocab);
            let exact_tokens = greedy_tokens(exact, vocab);
            let agreeing = tokens
                .iter()
                .zip(&exact_tokens)
                .filter(|(a, b)| a == b)
                .count();
            println!(
                "{name}: fast vs exact mode: max |difference| / max |logit| {drift:.2e} \
                 (max |logit| {scale:.1}, mean |difference| {mean:.2e}), greedy tokens {agreeing}/{}",
                tokens.len()
            );
            assert!(
                drift <= 1e-2,
                "{name}: fast mode drifts {drift:e} from the exact mode"
            );
            assert!(
                agreeing * 10 >= tokens.len() * 9,
                "{name}: {agreeing}/{}",
                tokens.len()
            );
        }
    }
}

/// The quantized decoders' prefill (chunks of several rows: the GEMM path of the exact mode,
/// the row kernels of the fast mode) gives the logits of decoding the prompt token by token.
#[test]
fn quantized_prefill_equals_decoding_token_by_token() {
    macro_rules! check {
        ($module:ident) => {{
            use nnc_codegen_tests::$module::SmallLlamaDecoder;
            let tokens: Vec<i64> = (0..40).map(|i| (i * 29 + 11) % 256).collect();
            let mut decoder = SmallLlamaDecoder::with_random_weights(3);
            let one_by_one: Vec<Vec<f32>> = tokens
                .iter()
                .map(|&token| decoder.decode(token).unwrap().to_vec())
                .collect();
            for length in [1, 2, 5, 16, 17, 35] {
                decoder.reset();
                let logits = decoder.prefill(&tokens[..length]).unwrap().to_vec();
                let error = max_error(&logits, &one_by_one[length - 1]);
                assert!(
                    error <= 1e-4,
                    "{}: prefill of {length} tokens: {error:e}",
                    stringify!($module)
                );
            }
        }};
    }
    check!(quantized_q8_0_exact);
    check!(quantized_q4_0_fast);
    check!(quantized_q4_1_exact);
    check!(quantized_q4_1_fast);
}

/// The tiny Llama of the GGUF fixtures, whose tensors the file stores in every type (Q8_0 table
/// and tied head, f32 q, Q4_1 k with llama.cpp's row order, Q4_0 v, F16 o, Q4_1 gate, BF16 up,
/// Q8_0 down), loaded by generated `from_gguf` with its linear layers quantized to Q4_1 and
/// kept as stored:
/// - generated code equals the interpreter on the same weights (`load_stored_weights`);
/// - as stored, the exact mode equals the f32 model on the dequantized weights: the blocks
///   are the file's, and the other tensors stay f32;
/// - in Q4_1, the exact mode equals the f32 model on weights rounded once: the file's blocks as
///   they are (Q8_0 stays Q8_0) and the f32, F16 and BF16 tensors quantized to Q4_1.
#[test]
fn gguf_blocks_are_taken_as_stored_by_generated_code_and_the_interpreter() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/gguf");
    let source = std::fs::read_to_string(fixtures.join("tiny_llama.nn")).unwrap();
    let path = fixtures.join("tiny_llama.gguf");
    let bytes = std::fs::read(&path).unwrap();
    let graph_of = |format: Option<QuantTarget>| {
        let options = FrontendOptions {
            quantize: format.map(|format| Quantization {
                format,
                mode: QuantizedMode::Exact,
            }),
            ..Default::default()
        };
        compile_to_ir(&source, &options).unwrap().networks.remove(0)
    };
    let tokens = ndarray::ArrayD::from_shape_vec(vec![1, 4], vec![3i64, 1, 4, 15]).unwrap();
    let inputs = [("input_ids".to_string(), Tensor::I64(tokens.clone()))];
    let interpret = |graph: &Graph, weights: Vec<nnc::runtime::weights::Weight>| -> Vec<f32> {
        let outputs = Interpreter::new(graph, weights)
            .unwrap()
            .run(&named(&inputs))
            .unwrap();
        outputs[0].1.iter().copied().collect()
    };
    let f32_graph = graph_of(None);
    let dequantized = nnc_compiler::interpret::load_weights(&f32_graph, &bytes, "tiny").unwrap();
    let f32_logits = interpret(
        &f32_graph,
        dequantized.iter().cloned().map(Into::into).collect(),
    );
    let dynamic = [Input::I64(tokens.view())];

    for (name, format, run_gguf) in [
        (
            "as stored",
            QuantTarget::AsStored,
            nnc_codegen_tests::gguf_tiny_llama_as_stored::run_gguf as fn(_, _) -> _,
        ),
        (
            "q4_1",
            QuantTarget::Format(QuantFormat::Q4_1),
            nnc_codegen_tests::gguf_tiny_llama_q4_1::run_gguf,
        ),
    ] {
        let graph = graph_of(Some(format));
        let stored = nnc_compiler::interpret::load_stored_weights(&graph, &bytes, "tiny").unwrap();
        let interpreted = interpret(&graph, stored.clone());
        let generated: Vec<f32> = run_gguf(&path, &dynamic).unwrap()[0]
            .iter()
            .copied()
            .collect();
        let error = max_error(&generated, &interpreted);
        println!("{name}: generated from_gguf vs interpreter {error:.2e}");
        assert!(error <= 1e-5, "{name}: generated vs interpreter {error:e}");

        // The f32 model on the weights the quantized model multiplies by.
        let rounded: Vec<Vec<f32>> = stored
            .iter()
            .zip(graph.params.iter())
            .map(|(weight, (_, param))| match (weight, param.storage) {
                (nnc::runtime::weights::Weight::Blocks(blocks), _) => blocks.dequantize(),
                (
                    nnc::runtime::weights::Weight::F32(values),
                    WeightStorage::Quantized(Quantization {
                        format: QuantTarget::Format(format),
                        ..
                    }),
                ) => {
                    let shape = &graph.ty(param.value).shape;
                    QuantizedMatrix::quantize(format, values, shape[0], shape[1])
                        .unwrap()
                        .dequantize()
                }
                (nnc::runtime::weights::Weight::F32(values), _) => values.clone(),
            })
            .collect();
        if format == QuantTarget::AsStored {
            assert_eq!(rounded, dequantized, "as stored, nothing is rounded again");
        }
        let expected = interpret(&f32_graph, rounded.into_iter().map(Into::into).collect());
        let error = max_error(&interpreted, &expected);
        println!("{name}: exact mode vs the f32 model on the same weights {error:.2e}");
        assert!(error <= 1e-5, "{name}: exact vs f32 {error:e}");
        if format == QuantTarget::AsStored {
            assert!(max_error(&interpreted, &f32_logits) <= 1e-5);
        }
    }
}
