//! GGUF weights through the compiler: the tiny llama of `tests/fixtures/gguf/` (written by
//! `bench/gguf_fixtures.py`) loads from its GGUF file under the `.nn`'s Hugging Face names, exactly
//! as from the safetensors file of the same weights, and runs.

use std::path::PathBuf;

use ndarray::ArrayD;
use nnc_compiler::interpret::{self, Interpreter, Tensor};
use nnc_compiler::{FrontendOptions, compile_to_ir, diagnostics};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gguf")
        .join(name)
}

#[test]
fn tiny_llama_loads_from_gguf_as_from_safetensors() {
    let source = std::fs::read_to_string(fixture("tiny_llama.nn")).unwrap();
    let module = compile_to_ir(&source, &FrontendOptions::default()).unwrap_or_else(|errors| {
        panic!(
            "{}",
            diagnostics::render(&errors.0, "tiny_llama.nn", &source)
        )
    });
    let graph = &module.networks[0];
    let gguf = std::fs::read(fixture("tiny_llama.gguf")).unwrap();
    let safetensors = std::fs::read(fixture("tiny_llama.safetensors")).unwrap();
    let from_gguf = interpret::load_weights(graph, &gguf, "tiny_llama.gguf").unwrap();
    let from_safetensors =
        interpret::load_weights(graph, &safetensors, "tiny_llama.safetensors").unwrap();
    assert_eq!(from_gguf, from_safetensors);

    let tokens = ArrayD::from_shape_vec(vec![1, 4], vec![3i64, 1, 4, 15]).unwrap();
    let run = |weights| {
        let interpreter = Interpreter::new(graph, weights).unwrap();
        interpreter
            .run(&[("input_ids", Tensor::I64(tokens.clone()))])
            .unwrap()
    };
    let outputs = run(from_gguf);
    assert_eq!(outputs[0].1.shape(), &[1, 4, 16]);
    assert!(outputs[0].1.iter().all(|value| value.is_finite()));
    assert_eq!(outputs, run(from_safetensors));
}

/// Compiled with quantized linear layers (`--quantize q4_1` or `as-stored`), the weights of those
/// layers that the file stores as Q8_0, Q4_0 or Q4_1 arrive as the file's blocks, byte for byte
/// (k's rows put back in Hugging Face's order), in the file's format whatever was asked; the
/// others (f32 q, F16 o, BF16 up, and the f32 norms) arrive as f32.
#[test]
fn quantized_layers_take_the_files_blocks_as_they_are() {
    use nnc::runtime::kernels::quantized::QuantFormat;
    use nnc::runtime::weights::{Weight, gguf::GgufFile, llama_names};
    use nnc_compiler::ir::{QuantTarget, Quantization};

    let source = std::fs::read_to_string(fixture("tiny_llama.nn")).unwrap();
    let bytes = std::fs::read(fixture("tiny_llama.gguf")).unwrap();
    let file = GgufFile::parse(&bytes).unwrap();
    for format in [
        QuantTarget::Format(QuantFormat::Q4_1),
        QuantTarget::AsStored,
    ] {
        let options = FrontendOptions {
            quantize: Some(Quantization {
                format,
                mode: nnc::runtime::kernels::quantized::QuantizedMode::Exact,
            }),
            ..Default::default()
        };
        let graph = &compile_to_ir(&source, &options).unwrap().networks[0];
        let weights = interpret::load_stored_weights(graph, &bytes, "tiny_llama.gguf").unwrap();
        let stored = |name: &str| {
            let index = graph
                .params
                .iter()
                .position(|(_, param)| param.name == name)
                .unwrap();
            &weights[index]
        };
        for (name, file_name, expected_format) in [
            // The table, which the tied head multiplies by.
            (
                "model.embed_tokens.weight",
                "token_embd.weight",
                Some(QuantFormat::Q8_0),
            ),
            (
                "model.layers.0.self_attn.q_proj.weight",
                "blk.0.attn_q.weight",
                None,
            ),
            (
                "model.layers.0.self_attn.k_proj.weight",
                "blk.0.attn_k.weight",
                Some(QuantFormat::Q4_1),
            ),
            (
                "model.layers.0.self_attn.v_proj.weight",
                "blk.0.attn_v.weight",
                Some(QuantFormat::Q4_0),
            ),
            (
                "model.layers.0.self_attn.o_proj.weight",
                "blk.0.attn_output.weight",
                None,
            ),
            (
                "model.layers.0.mlp.gate_proj.weight",
                "blk.0.ffn_gate.weight",
                Some(QuantFormat::Q4_1),
            ),
            (
                "model.layers.0.mlp.up_proj.weight",
                "blk.0.ffn_up.weight",
                None,
            ),
            (
                "model.layers.0.mlp.down_proj.weight",
                "blk.0.ffn_down.weight",
                Some(QuantFormat::Q8_0),
            ),
        ] {
            let weight = stored(name);
            match (weight, expected_format) {
                (Weight::Blocks(blocks), Some(expected_format)) => {
                    assert_eq!(blocks.format(), expected_format, "{name}");
                    let data = file.data(file.tensor(file_name).unwrap());
                    let expected = if name.contains("k_proj") {
                        let row_bytes = expected_format.row_bytes(blocks.cols()).unwrap();
                        llama_names::reverse_permute_rows(data, 1, row_bytes).unwrap()
                    } else {
                        data.to_vec()
                    };
                    assert_eq!(blocks.bytes(), &expected[..], "{name}");
                }
                (Weight::F32(_), None) => {}
                (weight, expected_format) => {
                    panic!("{name} ({format}): {weight:?}, expected {expected_format:?}")
                }
            }
        }
    }
}
