//! The interpreter's API boundary: the wrong number of weights, weights and tensors larger than
//! memory, and NaN inputs are errors or documented results, never panics.

use nnc_compiler::interpret::{self, InterpretError, Interpreter, Tensor};

fn graph(source: &str) -> nnc_compiler::ir::Graph {
    nnc_compiler::compile_to_ir(source, &Default::default())
        .unwrap()
        .networks
        .remove(0)
}

#[test]
fn the_wrong_number_of_weights_is_an_error() {
    let graph = graph("network mlp(x: f32[1, 4]) -> (y) { y = linear(x, 2) as fc }");
    for count in [0, 1, 3] {
        let weights = vec![vec![0.0f32; 2]; count];
        let error = Interpreter::new(&graph, weights).err().unwrap();
        assert!(
            matches!(error, InterpretError::WeightCount { expected: 2, found } if found == count),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!("the network has 2 weights, but {count} were given")
        );
    }
}

#[test]
fn weights_larger_than_memory_are_an_error_naming_the_weight() {
    // 10^7 × 10^8 f32 weights: 4 PB, more than any machine has.
    let graph = graph("network big(x: f32[1, 100000000]) -> (y) { y = linear(x, 10000000) as fc }");
    let error = interpret::try_random_weights(&graph, 1).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("cannot allocate 4,000,000,000,000,000 bytes"),
        "{error}"
    );
    assert!(
        error.to_string().contains("for weight `fc.weight`"),
        "{error}"
    );
}

#[test]
fn a_tensor_larger_than_memory_is_an_error_naming_the_layer() {
    // An outer product of a 160 MB input with itself: 6.4 PB, more than any machine has.
    let graph = graph(
        "network outer(x: f32[1, 40000000]) -> (y) {
            column = reshape(x, [1, 40000000, 1])
            row = reshape(x, [1, 1, 40000000])
            y = column * row
        }",
    );
    let interpreter = Interpreter::new(&graph, Vec::<Vec<f32>>::new()).unwrap();
    let input = ndarray::ArrayD::<f32>::zeros(ndarray::IxDyn(&[1, 40_000_000]));
    let error = interpreter.run(&[("x", Tensor::F32(input))]).unwrap_err();
    assert!(matches!(error, InterpretError::OutOfMemory(_)), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with("cannot allocate 6,400,000,000,000,000 bytes"),
        "{error}"
    );
    assert!(
        error.to_string().contains("for the output of layer"),
        "{error}"
    );
    assert!(
        error.to_string().contains("f32[1, 40000000, 40000000]"),
        "{error}"
    );
}

#[test]
fn nan_and_infinite_inputs_propagate_without_panicking() {
    let graph = graph(
        "network net(x: f32[1, 4]) -> (y) {
            h = linear(x, 3) as fc
            y = softmax(h)
        }",
    );
    let interpreter = Interpreter::new(&graph, interpret::random_weights(&graph, 3)).unwrap();
    let input = ndarray::arr2(&[[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1.0]]).into_dyn();
    let outputs = interpreter.run(&[("x", Tensor::F32(input))]).unwrap();
    // NaN in, NaN out: nnc does not check values, as PyTorch does not.
    assert!(
        outputs[0].1.iter().any(|value| value.is_nan()),
        "{outputs:?}"
    );
}
