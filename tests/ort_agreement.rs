//! Agreement with ONNX Runtime: the interpreter against fixtures an independent engine computed.
//!
//! Each folder of `tests/fixtures/` holds a `.nn` model, its weights, inputs and the outputs ONNX
//! Runtime computed for the same model built in ONNX (`bench/ort_fixtures.py` writes them). The
//! error of an output is `max |nnc - ort| / max(|ort|, 1)`: relative for values of magnitude 1 and
//! more, absolute below, so that ORT's fast sigmoid rounding tiny tails to 0 does not count as a
//! large relative error.

use nnc_compiler::interpret::Interpreter;
use nnc_compiler::{FrontendOptions, compile_to_ir, diagnostics};
use nnc_test_support::inputs::{fixture_output, inputs_for, named, weights_for};
use nnc_test_support::{TestModel, fixtures};

const TOLERANCE: f32 = 1e-4;

/// Runs `fixture`; returns each output's name and error.
fn run_fixture(fixture: &TestModel) -> Vec<(String, f32)> {
    let source = fixture.source();
    let module = compile_to_ir(&source, &FrontendOptions::default())
        .unwrap_or_else(|errors| panic!("{}", diagnostics::render(&errors.0, "model.nn", &source)));
    let graph = &module.networks[0];
    let interpreter = Interpreter::new(graph, weights_for(fixture, graph, 0)).unwrap();
    let inputs = inputs_for(fixture, graph, 0);
    let outputs = interpreter.run(&named(&inputs)).unwrap();
    outputs
        .into_iter()
        .map(|(name, actual)| {
            let expected = fixture_output(fixture, &name);
            assert_eq!(
                actual.shape(),
                expected.shape(),
                "{}: output {name}",
                fixture.name
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
    let fixtures = fixtures();
    assert!(
        fixtures.len() >= 6,
        "fixtures are missing: run bench/ort_fixtures.py"
    );
    let mut failures = Vec::new();
    for fixture in &fixtures {
        for (output, error) in run_fixture(fixture) {
            let fixture = &fixture.name;
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
