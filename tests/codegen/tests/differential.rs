//! Generated code equals the reference interpreter on every example and every fixture.
//!
//! Both run with the same weights (random ones for the examples, ONNX Runtime's for the
//! fixtures) on the same inputs. The error is `max |generated - interpreted| / max(|interpreted|,
//! 1)` and must stay within 1e-5.

use std::path::Path;

use nnc_codegen_tests::{Input, MODELS};
use nnc_compiler::interpret::{Interpreter, Tensor};
use nnc_compiler::{FrontendOptions, compile_to_ir};
use nnc_test_support::inputs::{inputs_for, named, weights_for};
use nnc_test_support::{TestModel, codegen_models, examples, fixtures};

const TOLERANCE: f32 = 1e-5;

/// The test model whose source is `path`, as `build.rs` found it.
fn test_model(path: &Path) -> TestModel {
    let path = path.canonicalize().unwrap();
    [examples(), codegen_models(), fixtures()]
        .into_iter()
        .flatten()
        .find(|model| model.path.canonicalize().unwrap() == path)
        .unwrap_or_else(|| panic!("{} is in no collection of test models", path.display()))
}

#[test]
fn generated_code_equals_the_interpreter() {
    let mut failures = Vec::new();
    for (name, source_path, run) in MODELS {
        // The generated code is compiled at the declared sizes, so the interpreter runs at them
        // too, not at the header's test dimensions.
        let model = test_model(Path::new(source_path));
        let module = compile_to_ir(&model.source(), &FrontendOptions::default()).unwrap();
        let graph = &module.networks[0];
        let weights = weights_for(&model, graph, 7);
        let named_inputs = inputs_for(&model, graph, 7);
        let named = named(&named_inputs);
        let expected = Interpreter::new(graph, weights.clone())
            .unwrap()
            .run(&named)
            .unwrap();
        let dynamic: Vec<Input<'_>> = named_inputs
            .iter()
            .map(|(_, tensor)| match tensor {
                Tensor::F32(array) => Input::F32(array.view()),
                Tensor::I64(array) => Input::I64(array.view()),
            })
            .collect();
        let actual = run(weights, &dynamic).unwrap();
        assert_eq!(actual.len(), expected.len(), "{name}");
        for (actual, (output, expected)) in actual.iter().zip(&expected) {
            assert_eq!(actual.shape(), expected.shape(), "{name}/{output}");
            let error = actual
                .iter()
                .zip(expected)
                .map(|(a, e)| (a - e).abs() / e.abs().max(1.0))
                .fold(0.0f32, f32::max);
            println!("{name:>28} {output:>20}: max error {error:.2e}");
            if error.is_nan() || error > TOLERANCE {
                failures.push(format!("{name}/{output}: {error:e}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "generated code differs from the interpreter:\n{}",
        failures.join("\n")
    );
}
