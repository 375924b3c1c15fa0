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

/// A safetensors file of f32 tensors, written by hand: an 8-byte header length, the JSON header,
/// the data.
fn safetensors_bytes(tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
    let mut entries = Vec::new();
    let mut data = Vec::new();
    for (name, shape, values) in tensors {
        let start = data.len();
        data.extend(values.iter().flat_map(|value| value.to_le_bytes()));
        entries.push(format!(
            r#""{name}":{{"dtype":"F32","shape":{shape:?},"data_offsets":[{start},{}]}}"#,
            data.len()
        ));
    }
    let header = format!("{{{}}}", entries.join(","));
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.extend(data);
    bytes
}

#[test]
fn generated_code_loads_checkpoints_like_load_state_dict() {
    // The checkpoint of a model with a head: every name under `model.`, a stale `position_ids`
    // buffer, and a head the network does not have.
    let weights = nnc::runtime::weights::random_weights(InlineMlp::WEIGHTS, 3);
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = InlineMlp::WEIGHTS
        .iter()
        .zip(&weights)
        .map(|(spec, values)| {
            (
                format!("model.{}", spec.name),
                spec.shape.to_vec(),
                values.clone(),
            )
        })
        .collect();
    tensors.push((
        "model.embeddings.position_ids".to_string(),
        vec![1, 2],
        vec![0.0, 1.0],
    ));
    tensors.push(("classifier.weight".to_string(), vec![1], vec![0.5]));
    let path = std::env::temp_dir().join(format!("nnc-macro-{}.safetensors", std::process::id()));
    std::fs::write(&path, safetensors_bytes(&tensors)).unwrap();

    let strict = InlineMlp::from_checkpoint(&path, &Default::default());
    let message = strict.err().unwrap().to_string();
    assert!(
        message.contains("unexpected tensor `classifier.weight`"),
        "{message}"
    );
    let (mut model, notes) =
        InlineMlp::from_checkpoint(&path, &nnc::runtime::weights::LoadOptions { strict: false })
            .unwrap();
    std::fs::remove_file(&path).unwrap();
    let notes: Vec<String> = notes.iter().map(ToString::to_string).collect();
    assert_eq!(notes.len(), 3, "{notes:?}");
    assert!(notes[0].contains("prefix `model.`"), "{notes:?}");
    assert!(
        notes[1].contains("model.embeddings.position_ids"),
        "{notes:?}"
    );
    assert!(notes[2].contains("classifier.weight"), "{notes:?}");
    let input = ndarray::Array2::<f32>::ones((2, 784));
    let mut reference = InlineMlp::from_weights(weights).unwrap();
    assert_eq!(
        model.forward(input.view()).unwrap(),
        reference.forward(input.view()).unwrap()
    );
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

mod quantized {
    nnc::network! {
        quantize = "q4_1", quantize_mode = "fast";
        network quantized_mlp(x: f32[1, 64]) -> (y: f32[1, 10]) {
            h = relu(linear(x, 32)) as fc1
            y = linear(h, 10) as fc2
        }
    }

    mod from_file {
        nnc::network!(quantize = "q8_0", file = "examples/mlp.nn");
    }

    /// The options reach the compiler: the generated model equals the interpreter compiled with
    /// the same quantization.
    #[test]
    fn quantize_options_quantize_the_linear_layers() {
        let source = "network quantized_mlp(x: f32[1, 64]) -> (y: f32[1, 10]) {\n    h = relu(linear(x, 32)) as fc1\n    y = linear(h, 10) as fc2\n}\n";
        let options = nnc_compiler::FrontendOptions {
            quantize: Some(nnc_compiler::ir::Quantization {
                format: nnc_compiler::QuantFormat::Q4_1,
                mode: nnc_compiler::QuantizedMode::Fast,
            }),
            ..Default::default()
        };
        let module = nnc_compiler::compile_to_ir(source, &options).unwrap();
        let graph = &module.networks[0];
        let weights = nnc_compiler::interpret::random_weights(graph, 5);
        let input = ndarray::Array2::from_shape_fn((1, 64), |(_, j)| (j % 7) as f32 / 7.0 - 0.4);
        let expected = nnc_compiler::interpret::Interpreter::new(graph, weights.clone())
            .unwrap()
            .run(&[(
                "x",
                nnc_compiler::interpret::Tensor::F32(input.clone().into_dyn()),
            )])
            .unwrap();
        let mut model = QuantizedMlp::from_weights(weights).unwrap();
        let actual = model.forward(input.view()).unwrap();
        let expected = &expected[0].1;
        for (a, e) in actual.iter().zip(expected.iter()) {
            assert!((a - e).abs() <= 1e-5 * e.abs().max(1.0), "{a} vs {e}");
        }
        // Both layers have rows of whole blocks (64 and 32 values), so both are quantized.
        let quantized = graph
            .params
            .iter()
            .filter(|(_, param)| param.storage != nnc_compiler::ir::WeightStorage::F32)
            .count();
        assert_eq!(quantized, 2);
        let mut from_file = from_file::Mlp::with_random_weights(3);
        let logits = from_file
            .forward(ndarray::Array2::<f32>::ones((1, 784)).view())
            .unwrap();
        assert!(logits.iter().all(|value| value.is_finite()));
    }
}
