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
