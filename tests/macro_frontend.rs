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
                format: nnc_compiler::QuantFormat::Q4_1.into(),
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

    /// A layer's own `quantize =` argument overrides the macro's `quantize` option: `false`
    /// keeps fc1 in f32, `"q8_0"` puts fc2 in Q8_0, fc3 follows the option (Q4_1).
    mod per_layer {
        nnc::network! {
            quantize = "q4_1";
            network per_layer_mlp(x: f32[1, 64]) -> (y: f32[1, 10]) {
                h = relu(linear(x, 64, quantize = false)) as fc1
                h = relu(linear(h, 32, quantize = "q8_0")) as fc2
                y = linear(h, 10) as fc3
            }
        }

        #[test]
        fn a_layer_opts_out_or_picks_its_format() {
            let source = "network per_layer_mlp(x: f32[1, 64]) -> (y: f32[1, 10]) {\n    h = relu(linear(x, 64, quantize = false)) as fc1\n    h = relu(linear(h, 32, quantize = \"q8_0\")) as fc2\n    y = linear(h, 10) as fc3\n}\n";
            let options = nnc_compiler::FrontendOptions {
                quantize: Some(nnc_compiler::ir::Quantization {
                    format: nnc_compiler::QuantFormat::Q4_1.into(),
                    mode: nnc_compiler::QuantizedMode::Exact,
                }),
                ..Default::default()
            };
            let module = nnc_compiler::compile_to_ir(source, &options).unwrap();
            let graph = &module.networks[0];
            let printed = nnc_compiler::ir::print::print_graph(graph);
            let stored: Vec<&str> = printed
                .lines()
                .filter(|line| line.contains(".weight\""))
                .collect();
            assert_eq!(stored.len(), 3, "{printed}");
            assert!(!stored[0].contains("stored"), "{}", stored[0]);
            assert!(stored[1].ends_with("stored q8_0"), "{}", stored[1]);
            assert!(stored[2].ends_with("stored q4_1"), "{}", stored[2]);

            let weights = nnc_compiler::interpret::random_weights(graph, 9);
            let input =
                ndarray::Array2::from_shape_fn((1, 64), |(_, j)| (j % 5) as f32 / 5.0 - 0.3);
            let expected = nnc_compiler::interpret::Interpreter::new(graph, weights.clone())
                .unwrap()
                .run(&[(
                    "x",
                    nnc_compiler::interpret::Tensor::F32(input.clone().into_dyn()),
                )])
                .unwrap();
            let mut model = PerLayerMlp::from_weights(weights).unwrap();
            let actual = model.forward(input.view()).unwrap();
            for (a, e) in actual.iter().zip(expected[0].1.iter()) {
                assert!((a - e).abs() <= 1e-5 * e.abs().max(1.0), "{a} vs {e}");
            }
        }
    }
}

mod int8 {
    nnc::network!(
        quantize = "int8",
        calibration = "tests/codegen/models/small_cnn.calibration.json",
        file = "tests/codegen/models/small_cnn.nn"
    );

    /// `quantize = "int8"` with a calibration reaches the compiler: the generated model equals
    /// the interpreter compiled with the same calibration (within the rounding flips that
    /// tests/codegen/tests/int8.rs explains).
    #[test]
    fn int8_options_run_the_convolutions_in_int8() {
        let root = nnc_test_support::workspace_root();
        let source =
            std::fs::read_to_string(root.join("tests/codegen/models/small_cnn.nn")).unwrap();
        let calibration = nnc_compiler::calibration::Calibration::from_json(
            &std::fs::read_to_string(root.join("tests/codegen/models/small_cnn.calibration.json"))
                .unwrap(),
        )
        .unwrap();
        let options = nnc_compiler::FrontendOptions {
            int8_convs: Some(calibration),
            ..Default::default()
        };
        let module = nnc_compiler::compile_to_ir(&source, &options).unwrap();
        let graph = &module.networks[0];
        let int8 = graph
            .params
            .iter()
            .filter(|(_, param)| matches!(param.storage, nnc_compiler::ir::WeightStorage::Int8(_)))
            .count();
        assert_eq!(int8, 8);
        let weights = nnc_compiler::interpret::random_weights(graph, 5);
        let input = ndarray::Array4::from_shape_fn((1, 3, 30, 30), |(_, c, y, x)| {
            ((c * 7 + y * 3 + x) % 11) as f32 / 5.0 - 1.0
        });
        let expected = nnc_compiler::interpret::Interpreter::new(graph, weights.clone())
            .unwrap()
            .run(&[(
                "image",
                nnc_compiler::interpret::Tensor::F32(input.clone().into_dyn()),
            )])
            .unwrap();
        let mut model = SmallCnn::from_weights(weights).unwrap();
        let actual = model.forward(input.view()).unwrap();
        let expected = &expected[0].1;
        let scale = expected
            .iter()
            .fold(0.0f32, |max, value| max.max(value.abs()));
        for (a, e) in actual.iter().zip(expected.iter()) {
            assert!((a - e).abs() <= 1e-3 * scale, "{a} vs {e}");
        }
    }
}
