//! The `network!` macro reads the same language as `.nn` files, inline or from a file, and
//! generates the same code as `nnc compile`.

nnc::network! {
    /// Doc comments are allowed: the macro drops them like `//` comments.
    block mlp_layer(x, features) {
        return relu(linear(x, features)) as fc
    }

    network inline_mlp(x: f32[batch, 784]) -> (logits: f32[batch, 10]) where batch = 2 {
        h = mlp_layer(x, 256) as layers[0]
        logits = linear(h, 10) as head
    }
}

mod from_file {
    nnc::network!(file = "examples/mlp.nn");
}

#[test]
fn inline_network_generates_a_model() {
    let names: Vec<&str> = InlineMlp::WEIGHTS.iter().map(|spec| spec.name).collect();
    assert_eq!(
        names,
        [
            "layers.0.fc.weight",
            "layers.0.fc.bias",
            "head.weight",
            "head.bias"
        ]
    );
    let mut model = InlineMlp::with_random_weights(1);
    let input = ndarray::Array2::<f32>::ones((2, 784));
    let logits = model.forward(input.view()).unwrap();
    assert_eq!(logits.shape(), [2, 10]);
    assert!(logits.iter().all(|value| value.is_finite()));
}

#[test]
fn file_network_matches_the_interpreter() {
    let source =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/mlp.nn")).unwrap();
    let module = nnc_compiler::compile_to_ir(&source, &Default::default()).unwrap();
    let graph = &module.networks[0];
    let weights = nnc_compiler::interpret::random_weights(graph, 5);
    let input = ndarray::Array2::from_shape_fn((1, 784), |(_, j)| (j % 7) as f32 / 7.0);
    let expected = nnc_compiler::interpret::Interpreter::new(graph, weights.clone())
        .unwrap()
        .run(&[(
            "x",
            nnc_compiler::interpret::Tensor::F32(input.clone().into_dyn()),
        )])
        .unwrap();
    let mut model = from_file::Mlp::from_weights(weights).unwrap();
    let logits = model.forward(input.view()).unwrap();
    assert_eq!(logits.into_dyn(), expected[0].1.view());
}

#[test]
fn wrong_input_shapes_are_errors() {
    let mut model = from_file::Mlp::with_random_weights(0);
    let wrong = ndarray::Array2::<f32>::zeros((1, 783));
    let error = model.forward(wrong.view()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "the input `x` must have shape [1, 784], but it has shape [1, 783]"
    );
}
