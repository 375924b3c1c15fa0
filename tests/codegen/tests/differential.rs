//! Generated code equals the reference interpreter on every example and every fixture.
//!
//! Both run with the same weights (random ones for the examples, ONNX Runtime's for the
//! fixtures) on the same inputs. The error is `max |generated - interpreted| / max(|interpreted|,
//! 1)` and must stay within 1e-5.

use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use ndarray_npy::ReadNpyExt;
use nnc_codegen_tests::{Input, MODELS};
use nnc_compiler::interpret::{self, Interpreter, Tensor};
use nnc_compiler::{FrontendOptions, compile_to_ir, ir};

const TOLERANCE: f32 = 1e-5;

fn inputs_for(graph: &ir::Graph, source: &Path) -> Vec<Tensor> {
    let fixture_folder = source
        .parent()
        .filter(|folder| folder.join("weights.safetensors").exists());
    graph
        .inputs
        .iter()
        .map(|input| {
            let ty = graph.ty(input.value);
            if let Some(folder) = fixture_folder {
                let file =
                    std::fs::File::open(folder.join(format!("input_{}.npy", input.name))).unwrap();
                return match ty.dtype {
                    ir::DType::F32 => Tensor::F32(ArrayD::<f32>::read_npy(file).unwrap()),
                    ir::DType::I64 => Tensor::I64(ArrayD::<i64>::read_npy(file).unwrap()),
                };
            }
            let count = ty.element_count() as usize;
            match ty.dtype {
                ir::DType::I64 => Tensor::I64(
                    ArrayD::from_shape_vec(
                        IxDyn(&ty.shape),
                        (0..count).map(|i| (i * 7 % 2) as i64).collect(),
                    )
                    .unwrap(),
                ),
                ir::DType::F32 => Tensor::F32(
                    ArrayD::from_shape_vec(
                        IxDyn(&ty.shape),
                        (0..count)
                            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 7.0)
                            .collect(),
                    )
                    .unwrap(),
                ),
            }
        })
        .collect()
}

#[test]
fn generated_code_equals_the_interpreter() {
    let mut failures = Vec::new();
    for (name, source_path, run) in MODELS {
        let source_path = Path::new(source_path);
        let source = std::fs::read_to_string(source_path).unwrap();
        let module = compile_to_ir(&source, &FrontendOptions::default()).unwrap();
        let graph = &module.networks[0];
        let weights = match source_path
            .parent()
            .map(|folder| folder.join("weights.safetensors"))
            .filter(|path| path.exists())
        {
            Some(path) => {
                interpret::load_weights(graph, &std::fs::read(path).unwrap(), "weights").unwrap()
            }
            None => interpret::random_weights(graph, 7),
        };
        let inputs = inputs_for(graph, source_path);
        let named: Vec<(&str, Tensor)> = graph
            .inputs
            .iter()
            .zip(&inputs)
            .map(|(input, tensor)| (input.name.as_str(), tensor.clone()))
            .collect();
        let expected = Interpreter::new(graph, weights.clone())
            .unwrap()
            .run(&named)
            .unwrap();
        let dynamic: Vec<Input<'_>> = inputs
            .iter()
            .map(|tensor| match tensor {
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
