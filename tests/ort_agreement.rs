//! Agreement with ONNX Runtime: the interpreter against fixtures an independent engine computed.
//!
//! Each folder of `tests/fixtures/` holds a `.nn` model, its weights, inputs and the outputs ONNX
//! Runtime computed for the same model built in ONNX (`bench/ort_fixtures.py` writes them). The
//! error of an output is `max |nnc - ort| / max(|ort|, 1)`: relative for values of magnitude 1 and
//! more, absolute below, so that ORT's fast sigmoid rounding tiny tails to 0 does not count as a
//! large relative error.

use std::path::{Path, PathBuf};

use ndarray::ArrayD;
use ndarray_npy::ReadNpyExt;
use nnc_compiler::interpret::{self, Interpreter, Tensor};
use nnc_compiler::{FrontendOptions, compile_to_ir, diagnostics, ir};

const TOLERANCE: f32 = 1e-4;

fn fixture_folders() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut folders: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_dir())
        .collect();
    folders.sort();
    folders
}

/// Runs the fixture in `folder`; returns each output's name and error.
fn run_fixture(folder: &Path) -> Vec<(String, f32)> {
    let source = std::fs::read_to_string(folder.join("model.nn")).unwrap();
    let module = compile_to_ir(&source, &FrontendOptions::default())
        .unwrap_or_else(|errors| panic!("{}", diagnostics::render(&errors.0, "model.nn", &source)));
    let graph = &module.networks[0];
    let bytes = std::fs::read(folder.join("weights.safetensors")).unwrap();
    let weights = interpret::load_weights(graph, &bytes, "weights.safetensors").unwrap();
    let interpreter = Interpreter::new(graph, weights).unwrap();

    let inputs: Vec<(&str, Tensor)> = graph
        .inputs
        .iter()
        .map(|input| {
            let file =
                std::fs::File::open(folder.join(format!("input_{}.npy", input.name))).unwrap();
            let tensor = match graph.ty(input.value).dtype {
                ir::DType::F32 => Tensor::F32(ArrayD::<f32>::read_npy(file).unwrap()),
                ir::DType::I64 => Tensor::I64(ArrayD::<i64>::read_npy(file).unwrap()),
            };
            (input.name.as_str(), tensor)
        })
        .collect();
    let outputs = interpreter.run(&inputs).unwrap();
    outputs
        .into_iter()
        .map(|(name, actual)| {
            let file = std::fs::File::open(folder.join(format!("output_{name}.npy"))).unwrap();
            let expected = ArrayD::<f32>::read_npy(file).unwrap();
            assert_eq!(
                actual.shape(),
                expected.shape(),
                "{}: output {name}",
                folder.display()
            );
            let error = actual
                .iter()
                .zip(&expected)
                .map(|(a, e)| (a - e).abs() / e.abs().max(1.0))
                .fold(0.0f32, f32::max);
            (name, error)
        })
        .collect()
}

#[test]
fn interpreter_agrees_with_onnx_runtime_on_every_fixture() {
    let folders = fixture_folders();
    assert!(
        folders.len() >= 6,
        "fixtures are missing: run bench/ort_fixtures.py"
    );
    let mut failures = Vec::new();
    for folder in &folders {
        for (output, error) in run_fixture(folder) {
            let fixture = folder.file_name().unwrap().to_string_lossy().to_string();
            println!("{fixture:>16} {output:>22}: max error {error:.3e}");
            if error.is_nan() || error > TOLERANCE {
                failures.push(format!("{fixture}/{output}: error {error:e}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "outputs differ from ONNX Runtime:\n{}",
        failures.join("\n")
    );
}
