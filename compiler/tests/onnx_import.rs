//! `nnc import` against ONNX Runtime: each model of `tests/fixtures/onnx/` (written by
//! `bench/onnx_import_fixtures.py` with ONNX Runtime's outputs) is imported, its `.nn` text
//! snapshotted, compiled, run in the interpreter with the imported weights, and compared with ONNX
//! Runtime within 1e-4 relative. Then the errors: every unsupported node listed at once, and no
//! panic on mutated files. The test on a real pretrained model (PP-OCR's text-direction
//! classifier, shipped by the rapidocr-onnxruntime wheel) runs when the wheel is unpacked on this
//! machine (see [`real_model`]).

use std::path::{Path, PathBuf};

mod onnx_common;

use ndarray::ArrayD;
use ndarray_npy::ReadNpyExt;
use nnc_compiler::interpret::{self, Interpreter, Tensor};
use nnc_compiler::onnx::import::{ImportError, ImportOptions, import_bytes, import_model};
use nnc_compiler::onnx::proto;
use nnc_compiler::{FrontendOptions, compile_to_ir};
use onnx_common::relative_error;
use proptest::prelude::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/onnx")
}

/// The fixture folders that hold a model, sorted.
fn cases() -> Vec<String> {
    let mut cases: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.join("model.onnx").is_file())
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    cases.sort();
    cases
}

/// Imports `bytes`, compiles the `.nn` text, runs it on `inputs` with the imported weights.
fn import_and_run(
    bytes: &[u8],
    options: &ImportOptions,
    inputs: &[(String, Tensor)],
) -> (String, Vec<(String, ArrayD<f32>)>) {
    let imported = import_bytes(bytes, options).unwrap_or_else(|error| panic!("{error}"));
    let module = compile_to_ir(&imported.source, &FrontendOptions::default())
        .unwrap_or_else(|errors| panic!("{errors}\n{}", imported.source));
    let graph = &module.networks[0];
    let safetensors = imported.safetensors().unwrap();
    let weights = interpret::load_weights(graph, &safetensors, "imported").unwrap();
    let interpreter = Interpreter::new(graph, weights).unwrap();
    let named: Vec<(&str, Tensor)> = inputs
        .iter()
        .map(|(name, tensor)| (name.as_str(), tensor.clone()))
        .collect();
    let outputs = interpreter.run(&named).unwrap();
    (imported.source, outputs)
}

fn read_npy_tensor(path: &Path) -> Tensor {
    let file = || std::fs::File::open(path).unwrap();
    match ArrayD::<f32>::read_npy(file()) {
        Ok(array) => Tensor::F32(array),
        Err(_) => Tensor::I64(ArrayD::<i64>::read_npy(file()).unwrap()),
    }
}

#[test]
fn every_fixture_matches_onnx_runtime() {
    let cases = cases();
    assert!(cases.len() >= 10, "{cases:?}");
    for case in cases {
        let folder = fixtures().join(&case);
        let mut inputs = Vec::new();
        let mut expected = Vec::new();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for path in files {
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            if let Some(name) = stem.strip_prefix("input_") {
                inputs.push((name.to_string(), read_npy_tensor(&path)));
            } else if let Some(name) = stem.strip_prefix("output_") {
                let array = ArrayD::<f32>::read_npy(std::fs::File::open(&path).unwrap()).unwrap();
                expected.push((name.to_string(), array));
            }
        }
        let options = ImportOptions {
            network_name: Some(case.clone()),
            source_name: "model.onnx".into(),
            ..Default::default()
        };
        let bytes = std::fs::read(folder.join("model.onnx")).unwrap();
        let (source, outputs) = import_and_run(&bytes, &options, &inputs);
        insta::assert_snapshot!(format!("import_{case}"), source);
        for (name, reference) in &expected {
            let (_, actual) = outputs
                .iter()
                .find(|(output, _)| output == name)
                .unwrap_or_else(|| panic!("{case}: no output {name}"));
            let error = relative_error(actual, reference);
            assert!(
                error <= 1e-4,
                "{case}/{name}: relative error {error}\n{source}"
            );
        }
    }
}

fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> proto::NodeProto {
    proto::NodeProto {
        op_type: Some(op.into()),
        name: Some(name.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn input(name: &str, dims: &[i64]) -> proto::ValueInfoProto {
    use proto::tensor_shape_proto::{Dimension, dimension};
    proto::ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(proto::TypeProto {
            value: Some(proto::type_proto::Value::TensorType(
                proto::type_proto::Tensor {
                    elem_type: Some(1),
                    shape: Some(proto::TensorShapeProto {
                        dim: dims
                            .iter()
                            .map(|&d| Dimension {
                                value: Some(if d > 0 {
                                    dimension::Value::DimValue(d)
                                } else {
                                    dimension::Value::DimParam("?".into())
                                }),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn model(
    opset: i64,
    nodes: Vec<proto::NodeProto>,
    initializers: Vec<proto::TensorProto>,
) -> proto::ModelProto {
    proto::ModelProto {
        ir_version: Some(8),
        opset_import: vec![proto::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        graph: Some(proto::GraphProto {
            name: Some("g".into()),
            node: nodes,
            initializer: initializers,
            input: vec![input("x", &[1, 3, 8, 8])],
            output: vec![proto::ValueInfoProto {
                name: Some("y".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn every_unsupported_node_is_listed_at_once() {
    // Cubic interpolation is one of the attributes nnc refuses.
    let mut resize = node("Resize", "/up/Resize", &["x", "", ""], &["u"]);
    resize.attribute.push(proto::AttributeProto {
        name: Some("mode".into()),
        s: Some(b"cubic".to_vec()),
        r#type: Some(3),
        ..Default::default()
    });
    let nodes = vec![
        resize,
        node("If", "branch", &["cond"], &["b"]),
        node("NonZero", "nz", &["x"], &["n"]),
        node("Relu", "after", &["u"], &["y"]),
        node("Conv", "conv_from_input", &["x", "x"], &["c"]),
    ];
    let error = import_model(&model(17, nodes, vec![]), &ImportOptions::default()).unwrap_err();
    let ImportError::Nodes(problems) = &error else {
        panic!("{error}");
    };
    let listed: Vec<(&str, &str, i64)> = problems
        .iter()
        .map(|p| (p.op_type.as_str(), p.node_name.as_str(), p.opset))
        .collect();
    assert_eq!(
        listed,
        [
            ("Resize", "/up/Resize", 17),
            ("If", "branch", 17),
            ("NonZero", "nz", 17),
            ("Conv", "conv_from_input", 17),
        ],
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.starts_with("4 node(s) cannot be imported"),
        "{message}"
    );
    assert!(
        message.contains("control flow is not supported"),
        "{message}"
    );
}

/// Hugging Face's `(1.0 - Cast(mask)) * MIN` key padding mask, made `[batch, 1, 1, keys]` by
/// `Unsqueeze`s before the `Cast` or by a `Reshape` after the `Mul`, is the attention's `mask`
/// (the fixture's outputs are checked against ONNX Runtime with the others).
#[test]
fn hugging_face_padding_masks_are_the_attentions_mask() {
    assert_mask_is_the_attentions("hugging_face_padding_mask", &[" - ", " * "]);
}

/// Newer Hugging Face models' `_prepare_4d_attention_mask` (`Expand`, `Cast`, `1 - m`,
/// `Where(Cast(inverted, bool), MIN, inverted)`), computed once and read by both layers, is each
/// attention's `mask`, and the nodes that computed it are gone (the outputs are checked against
/// ONNX Runtime with the other fixtures).
#[test]
fn an_expanded_mask_shared_by_every_layer_is_the_attentions_mask() {
    assert_mask_is_the_attentions("hugging_face_expanded_mask", &[" - ", "where(", "expand("]);
}

/// The two attention layers of fixture `case` come back as one block called twice, with the
/// key padding mask input as `mask`, and none of `gone` (what computed the additive mask) is left.
fn assert_mask_is_the_attentions(case: &str, gone: &[&str]) {
    let bytes = std::fs::read(fixtures().join(case).join("model.onnx")).unwrap();
    let source = import_bytes(&bytes, &ImportOptions::default())
        .unwrap()
        .source;
    assert!(
        source.contains("attention(h, y, z, heads = 2, mask = attention_mask)")
            && source.contains("for i in 0..2 {"),
        "{case}:\n{source}"
    );
    for text in gone {
        assert!(!source.contains(text), "{case}: `{text}` left\n{source}");
    }
}

/// A sequence whose every key is masked: nnc's attention gives zeros, where the Hugging Face
/// graph under ONNX Runtime spreads each query over all keys (with `MIN` = `f32::MIN` the
/// masked scores are all equal) or, with -10^4, over the keys as if unmasked (docs/onnx.md).
/// The other sequence is unchanged.
#[test]
fn a_sequence_with_every_key_masked_gives_zeros() {
    let folder = fixtures().join("hugging_face_padding_mask");
    let bytes = std::fs::read(folder.join("model.onnx")).unwrap();
    let x = read_npy_tensor(&folder.join("input_x.npy"));
    let mask = ArrayD::from_shape_vec(vec![2, 5], vec![1i64, 1, 1, 1, 1, 0, 0, 0, 0, 0]).unwrap();
    let inputs = [
        ("x".to_string(), x),
        ("attention_mask".to_string(), Tensor::I64(mask)),
    ];
    let (_, outputs) = import_and_run(&bytes, &ImportOptions::default(), &inputs);
    let y = &outputs[0].1;
    let expected =
        ArrayD::<f32>::read_npy(std::fs::File::open(folder.join("output_y.npy")).unwrap()).unwrap();
    // The fixture's first sequence keeps every key too.
    let first = y.index_axis(ndarray::Axis(0), 0).to_owned().into_dyn();
    let reference = expected
        .index_axis(ndarray::Axis(0), 0)
        .to_owned()
        .into_dyn();
    assert!(relative_error(&first, &reference) <= 1e-4);
    assert!(
        y.index_axis(ndarray::Axis(0), 1)
            .iter()
            .all(|&value| value == 0.0)
    );
}

#[test]
fn bad_reduction_axes_and_tensor_exponents_are_listed() {
    // Opset 18: the axes are an input. -3 is axis 1 of the rank-4 input, listed twice; axis 4
    // does not exist; Pow's exponent is an integer constant tensor of different numbers (an f32
    // one imports as a `parameter`, and a tensor computed at run time as `pow(x, y)`); ReduceL2
    // over no axes with noop_with_empty_axes.
    let axes = |name: &str, values: &[i64]| proto::TensorProto {
        name: Some(name.into()),
        data_type: Some(7),
        dims: vec![values.len() as i64],
        int64_data: values.to_vec(),
        ..Default::default()
    };
    let nodes = vec![
        node("ReduceSum", "twice", &["x", "twice_axes"], &["a"]),
        node("ReduceMean", "outside", &["x", "outside_axes"], &["b"]),
        node("Pow", "power", &["x", "exponents"], &["y"]),
        {
            let mut nothing = node("ReduceL2", "nothing", &["x"], &["c"]);
            nothing.attribute.push(proto::AttributeProto {
                name: Some("noop_with_empty_axes".into()),
                r#type: Some(proto::attribute_proto::AttributeType::Int as i32),
                i: Some(1),
                ..Default::default()
            });
            nothing
        },
    ];
    let exponents = axes("exponents", &[2, 3, 2, 3, 2, 3, 2, 3]);
    let initializers = vec![
        axes("twice_axes", &[1, -3]),
        axes("outside_axes", &[4]),
        exponents,
    ];
    let error =
        import_model(&model(18, nodes, initializers), &ImportOptions::default()).unwrap_err();
    let ImportError::Nodes(problems) = &error else {
        panic!("{error}");
    };
    let reasons: Vec<(&str, &str)> = problems
        .iter()
        .map(|p| (p.node_name.as_str(), p.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("twice", "ReduceSum lists axis -3 twice in [1, -3]"),
            ("outside", "ReduceMean: axis 4 is out of range for rank 4"),
            (
                "power",
                "Pow with a constant exponent of shape [8] that is not a finite f32 tensor"
            ),
            (
                "nothing",
                "ReduceL2 with noop_with_empty_axes = 1 and no axes (a reduction over nothing)"
            ),
        ],
        "{error}"
    );
}

#[test]
fn opsets_external_data_and_unnamed_dims_say_what_to_do() {
    let relu = || vec![node("Relu", "r", &["x"], &["y"])];
    let error = import_model(&model(9, relu(), vec![]), &ImportOptions::default()).unwrap_err();
    assert!(error.to_string().contains("version_converter"), "{error}");

    let external = proto::TensorProto {
        name: Some("w".into()),
        data_type: Some(1),
        dims: vec![4],
        data_location: Some(1),
        external_data: vec![proto::StringStringEntryProto {
            key: Some("location".into()),
            value: Some("model.onnx.data".into()),
        }],
        ..Default::default()
    };
    let error = import_model(
        &model(17, relu(), vec![external]),
        &ImportOptions::default(),
    )
    .unwrap_err();
    assert!(
        error.to_string().contains("model.onnx.data")
            && error.to_string().contains("save_as_external_data=False"),
        "{error}"
    );

    let mut dynamic = model(17, relu(), vec![]);
    dynamic.graph.as_mut().unwrap().input = vec![input("x", &[-1, 3, -1, 8])];
    let error = import_model(&dynamic, &ImportOptions::default()).unwrap_err();
    assert!(error.to_string().contains("--input-shape x="), "{error}");
    let fixed = ImportOptions {
        input_shapes: vec![("x".into(), vec![1, 3, 5, 8])],
        ..Default::default()
    };
    let imported = import_model(&dynamic, &fixed).unwrap();
    assert!(
        imported.source.contains("x: f32[1, 3, 5, 8]"),
        "{}",
        imported.source
    );
}

#[test]
fn named_dynamic_dims_become_where_bindings() {
    let bytes = std::fs::read(fixtures().join("conv1d_same_leaky/model.onnx")).unwrap();
    let imported = import_bytes(&bytes, &ImportOptions::default()).unwrap();
    assert!(
        imported.source.contains("x: f32[batch, 3, 10]"),
        "{}",
        imported.source
    );
    assert!(
        imported.source.contains("where batch = 1"),
        "{}",
        imported.source
    );
    let options = ImportOptions {
        dims: vec![("batch".into(), 4)],
        ..Default::default()
    };
    let imported = import_bytes(&bytes, &options).unwrap();
    assert!(
        imported.source.contains("where batch = 4"),
        "{}",
        imported.source
    );
    compile_to_ir(&imported.source, &FrontendOptions::default()).unwrap();
}

/// Every fixture's bytes, for the mutation test.
fn fixture_models() -> Vec<Vec<u8>> {
    cases()
        .iter()
        .map(|case| std::fs::read(fixtures().join(case).join("model.onnx")).unwrap())
        .collect()
}

/// A change to the bytes of a file.
#[derive(Clone, Debug)]
enum Mutation {
    Flip { position: usize, bit: u8 },
    Set { position: usize, value: u8 },
    Truncate { length: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(position, bit)| Mutation::Flip { position, bit }),
        (any::<usize>(), any::<u8>())
            .prop_map(|(position, value)| Mutation::Set { position, value }),
        any::<usize>().prop_map(|length| Mutation::Truncate { length }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Import reports errors on damaged files, and never panics.
    #[test]
    fn mutated_models_never_panic(which in any::<usize>(), mutations in prop::collection::vec(mutation(), 1..4)) {
        let models = fixture_models();
        let mut bytes = models[which % models.len()].clone();
        for mutation in mutations {
            if bytes.is_empty() {
                break;
            }
            match mutation {
                Mutation::Flip { position, bit } => {
                    let position = position % bytes.len();
                    bytes[position] ^= 1 << bit;
                }
                Mutation::Set { position, value } => {
                    let position = position % bytes.len();
                    bytes[position] = value;
                }
                Mutation::Truncate { length } => bytes.truncate(length % bytes.len()),
            }
        }
        let _ = import_bytes(&bytes, &ImportOptions::default());
    }
}

/// A PP-OCR model (`file`) of the rapidocr-onnxruntime wheel, if it is unpacked on this machine:
/// in the model cache (`bench/fetch_models.sh` puts it there) or under `/tmp/onnximp/rapidocr`
/// (`pip download rapidocr-onnxruntime --no-deps` and unzip the wheel).
fn real_model_file(file: &str) -> Option<PathBuf> {
    let roots = [
        nnc_test_support::model_cache_dir(),
        PathBuf::from("/tmp/onnximp/rapidocr"),
    ];
    let layouts = [
        "rapidocr_onnxruntime/models",
        "rapidocr/rapidocr_onnxruntime/models",
    ];
    roots
        .iter()
        .flat_map(|root| {
            layouts
                .iter()
                .map(move |layout| root.join(layout).join(file))
        })
        .find(|path| path.is_file())
}

/// The PP-OCR text-direction classifier.
fn real_model() -> Option<PathBuf> {
    real_model_file("ch_ppocr_mobile_v2.0_cls_infer.onnx")
}

#[test]
fn a_real_paddle_ocr_classifier_matches_onnx_runtime() {
    let Some(path) = real_model() else {
        eprintln!(
            "skipped: run bench/fetch_models.sh to fetch PP-OCR's classifier (rapidocr-onnxruntime)"
        );
        return;
    };
    let shape = vec![1, 3, 48, 192];
    let options = ImportOptions {
        network_name: Some("ppocr_cls".into()),
        input_shapes: vec![("x".into(), shape.clone())],
        source_name: "ch_ppocr_mobile_v2.0_cls_infer.onnx".into(),
        ..Default::default()
    };
    let count: usize = shape.iter().product();
    let image: Vec<f32> = (0..count).map(|i| (0.01 * i as f64).sin() as f32).collect();
    let image = ArrayD::from_shape_vec(shape, image).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let (source, outputs) = import_and_run(&bytes, &options, &[("x".into(), Tensor::F32(image))]);
    insta::assert_snapshot!("import_ppocr_cls", source);
    // The Rust that `nnc compile` writes for it, reviewed as code like the examples'.
    let options = nnc_compiler::codegen::CodegenOptions {
        source_name: Some("ppocr_cls.nn".into()),
        ..Default::default()
    };
    let code = nnc_compiler::compile_to_rust(
        &source,
        &FrontendOptions::default(),
        nnc_compiler::passes::OptLevel::default(),
        &options,
    )
    .unwrap_or_else(|errors| panic!("{errors}"));
    insta::assert_snapshot!("generated_ppocr_cls", code);
    let expected_path = fixtures().join("ppocr_cls/output.npy");
    let expected = ArrayD::<f32>::read_npy(std::fs::File::open(expected_path).unwrap()).unwrap();
    let error = relative_error(&outputs[0].1, &expected);
    eprintln!(
        "ppocr_cls: nnc {:?} vs ONNX Runtime {:?}: relative error {error:e}",
        outputs[0].1, expected
    );
    assert!(error <= 1e-4, "relative error {error}");
}

/// PP-OCRv4's text detector (DBNet: nearest Resize in its FPN, ConvTranspose in its head) on a
/// `[1, 3, 64, 96]` image of dark bars, against ONNX Runtime's probability map.
#[test]
fn a_real_paddle_ocr_detector_matches_onnx_runtime() {
    let Some(path) = real_model_file("ch_PP-OCRv4_det_infer.onnx") else {
        eprintln!(
            "skipped: run bench/fetch_models.sh to fetch PP-OCR's detector (rapidocr-onnxruntime)"
        );
        return;
    };
    let shape = vec![1, 3, 64, 96];
    let options = ImportOptions {
        network_name: Some("ppocr_det".into()),
        input_shapes: vec![("x".into(), shape.clone())],
        source_name: "ch_PP-OCRv4_det_infer.onnx".into(),
        ..Default::default()
    };
    // The image bench/onnx_import_fixtures.py gives ONNX Runtime: -2 on the bars, 2 elsewhere.
    let image = ArrayD::from_shape_fn(shape, |index| {
        let dark = index[3] % 12 < 4 && (index[2] / 16) % 2 == 0;
        if dark { -2.0f32 } else { 2.0 }
    });
    let bytes = std::fs::read(&path).unwrap();
    let (source, outputs) = import_and_run(&bytes, &options, &[("x".into(), Tensor::F32(image))]);
    insta::assert_snapshot!("import_ppocr_det", source);
    let expected_path = fixtures().join("ppocr_det/output.npy");
    let expected = ArrayD::<f32>::read_npy(std::fs::File::open(expected_path).unwrap()).unwrap();
    let error = relative_error(&outputs[0].1, &expected);
    eprintln!(
        "ppocr_det: relative error {error:e} over a map with maximum {}",
        expected.iter().fold(0f32, |m, v| m.max(*v))
    );
    assert!(error <= 1e-4, "relative error {error}");
}
