//! `nnc export`: every example and codegen test model without a KV cache exports to ONNX at
//! `-O0` and `-O2`, decodes back, and is a well-formed graph (every node input is computed
//! before, an initializer or a graph input; inputs and outputs keep their names, types and
//! shapes); models with a KV cache are refused with every cached attention listed. When ONNX
//! Runtime is installed, `bench/onnx_export_check.py` also runs the ONNX checker and compares
//! ONNX Runtime's outputs with the interpreter's on a few small models.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

use nnc_compiler::onnx::export::{self, ExportError, IR_VERSION, OPSET};
use nnc_compiler::onnx::{decode_model, encode_model, proto};
use nnc_compiler::passes::OptLevel;
use nnc_compiler::{FrontendOptions, interpret, ir};
use nnc_test_support::models::{self, TestModel};

fn graphs(model: &TestModel) -> Vec<ir::Graph> {
    let options = FrontendOptions {
        dims: model.test_dims(),
        ..Default::default()
    };
    nnc_compiler::compile_to_ir(&model.source(), &options)
        .unwrap_or_else(|errors| panic!("{}: {errors}", model.name))
        .networks
}

fn cached_attentions(graph: &ir::Graph) -> Vec<String> {
    graph
        .nodes
        .iter()
        .filter(
            |(_, node)| matches!(&node.op, ir::Op::Attention(attrs) if attrs.kv_cache.is_some()),
        )
        .map(|(_, node)| node.name.clone())
        .collect()
}

/// The element type and shape of a graph input or output.
fn value_type(info: &proto::ValueInfoProto) -> (i32, Vec<i64>) {
    let Some(proto::type_proto::Value::TensorType(tensor)) =
        info.r#type.as_ref().and_then(|ty| ty.value.as_ref())
    else {
        panic!("{:?} has no tensor type", info.name);
    };
    let shape = tensor
        .shape
        .as_ref()
        .map(|shape| {
            shape
                .dim
                .iter()
                .map(|dim| match dim.value {
                    Some(proto::tensor_shape_proto::dimension::Value::DimValue(size)) => size,
                    _ => panic!("{:?} has a symbolic dimension", info.name),
                })
                .collect()
        })
        .unwrap_or_default();
    (tensor.elem_type.unwrap_or_default(), shape)
}

fn onnx_type(ty: &ir::TensorType) -> (i32, Vec<i64>) {
    let data_type = match ty.dtype {
        ir::DType::F32 => proto::tensor_proto::DataType::Float,
        ir::DType::I64 => proto::tensor_proto::DataType::Int64,
    };
    (
        data_type as i32,
        ty.shape.iter().map(|&size| size as i64).collect(),
    )
}

/// Checks that `model` is the well-formed export of `graph`.
fn check_structure(name: &str, graph: &ir::Graph, model: &proto::ModelProto, level: OptLevel) {
    assert_eq!(model.ir_version, Some(IR_VERSION), "{name}");
    assert_eq!(model.opset_import.len(), 1, "{name}");
    assert_eq!(model.opset_import[0].version, Some(OPSET), "{name}");
    let onnx_graph = model.graph.as_ref().expect("a graph");
    let mut defined: HashSet<&str> = HashSet::new();
    for initializer in &onnx_graph.initializer {
        let initializer_name = initializer.name.as_deref().unwrap_or_default();
        assert!(
            defined.insert(initializer_name),
            "{name}: initializer `{initializer_name}` is written twice"
        );
        let elements: i64 = initializer.dims.iter().product();
        let width = match initializer.data_type {
            Some(1) => 4,
            Some(7) => 8,
            other => panic!("{name}: initializer `{initializer_name}` has type {other:?}"),
        };
        assert_eq!(
            initializer.raw_data.as_ref().map_or(0, Vec::len) as i64,
            elements * width,
            "{name}: initializer `{initializer_name}` has the wrong byte count"
        );
    }
    for (input, info) in graph.inputs.iter().zip(&onnx_graph.input) {
        assert_eq!(info.name.as_deref(), Some(input.name.as_str()), "{name}");
        assert_eq!(value_type(info), onnx_type(graph.ty(input.value)), "{name}");
        assert!(
            defined.insert(&input.name),
            "{name}: `{}` twice",
            input.name
        );
    }
    assert_eq!(graph.inputs.len(), onnx_graph.input.len(), "{name}");
    for node in &onnx_graph.node {
        // An empty name is an optional input left out (Resize's `roi` and `scales`).
        for input in node.input.iter().filter(|input| !input.is_empty()) {
            assert!(
                defined.contains(input.as_str()),
                "{name}: node `{:?}` ({:?}) reads `{input}`, which nothing defined before it",
                node.name,
                node.op_type
            );
        }
        assert!(
            !node.output.is_empty(),
            "{name}: {:?} has no output",
            node.name
        );
        for output in &node.output {
            assert!(
                defined.insert(output),
                "{name}: `{output}` is defined twice"
            );
        }
    }
    assert_eq!(graph.outputs.len(), onnx_graph.output.len(), "{name}");
    for (output, info) in graph.outputs.iter().zip(&onnx_graph.output) {
        assert_eq!(info.name.as_deref(), Some(output.name.as_str()), "{name}");
        assert_eq!(
            value_type(info),
            onnx_type(graph.ty(output.value)),
            "{name}"
        );
        assert!(
            defined.contains(output.name.as_str()),
            "{name}: `{}` is never computed",
            output.name
        );
    }
    // As written, every weight a node reads is an initializer under its state-dict name.
    if level == OptLevel::O0 {
        let initializers: HashSet<&str> = onnx_graph
            .initializer
            .iter()
            .filter_map(|initializer| initializer.name.as_deref())
            .collect();
        for (_, node) in graph.nodes.iter() {
            for &input in &node.inputs {
                if let Some(param) = graph.param_of(input) {
                    assert!(
                        initializers.contains(param.name.as_str()),
                        "{name}: weight `{}` is not an initializer",
                        param.name
                    );
                }
            }
        }
    }
}

#[test]
fn every_model_without_a_kv_cache_exports_to_well_formed_onnx() {
    let mut exported = 0;
    for model in models::examples()
        .into_iter()
        .chain(models::codegen_models())
    {
        for graph in graphs(&model) {
            let weights = interpret::random_weights(&graph, 7);
            let cached = cached_attentions(&graph);
            for level in [OptLevel::O0, OptLevel::O2] {
                let name = format!("{} ({}, {level:?})", model.name, graph.name);
                let mut optimized = graph.clone();
                export::optimize_for_export(&mut optimized, level);
                let result = export::export(&optimized, &weights);
                if !cached.is_empty() {
                    let Err(ExportError::Unsupported { nodes, .. }) = result else {
                        panic!("{name}: a KV cache must be refused");
                    };
                    let refused: Vec<&str> = nodes.iter().map(|node| node.node.as_str()).collect();
                    assert_eq!(refused, cached, "{name}: every cached attention, at once");
                    continue;
                }
                let onnx_model = result.unwrap_or_else(|error| panic!("{name}: {error}"));
                let bytes = encode_model(&onnx_model);
                let decoded = decode_model(&bytes, Path::new("model.onnx")).unwrap();
                assert_eq!(decoded, onnx_model, "{name}");
                check_structure(&name, &optimized, &decoded, level);
                exported += 1;
            }
        }
    }
    assert!(exported >= 10, "only {exported} exports were checked");
}

#[test]
fn a_kv_cache_is_refused_with_a_message_listing_every_cached_attention() {
    let model = models::example("tiny_gpt");
    let graph = graphs(&model).remove(0);
    let weights = interpret::random_weights(&graph, 1);
    let error = export::export(&graph, &weights).unwrap_err();
    let message = error.to_string();
    let cached = cached_attentions(&graph);
    assert!(cached.len() >= 2, "tiny_gpt has several layers");
    assert!(
        message.contains(&format!("{} nodes use", cached.len())),
        "{message}"
    );
    for layer in &cached {
        assert!(
            message.contains(&format!("`{layer}` (attention)")),
            "{message}"
        );
    }
    assert!(message.contains("KV cache"), "{message}");
}

#[test]
fn weights_that_do_not_fit_are_an_error() {
    let graph = graphs(&models::example("mlp")).remove(0);
    let mut weights = interpret::random_weights(&graph, 1);
    weights[0].pop();
    let message = export::export(&graph, &weights).unwrap_err().to_string();
    assert!(message.contains("fc1.weight"), "{message}");
    weights.pop();
    let message = export::export(&graph, &weights).unwrap_err().to_string();
    assert!(message.contains("weights but"), "{message}");
}

#[test]
fn batch_norm_is_folded_away_at_o2() {
    let model = models::example("resnet18");
    let graph = graphs(&model).remove(0);
    let weights = interpret::random_weights(&graph, 3);
    let count = |level: OptLevel| {
        let mut optimized = graph.clone();
        export::optimize_for_export(&mut optimized, level);
        let onnx_model = export::export(&optimized, &weights).unwrap();
        let nodes = onnx_model.graph.unwrap().node;
        nodes
            .iter()
            .filter(|node| node.op_type.as_deref() == Some("BatchNormalization"))
            .count()
    };
    assert_eq!(count(OptLevel::O0), 20);
    assert_eq!(count(OptLevel::O2), 0);
}

/// A Python with onnx and onnxruntime: `NNC_PYTHON`, the peers' venv, or `python3`.
fn python_with_onnxruntime() -> Option<String> {
    let root = models::workspace_root();
    let candidates = [
        std::env::var("NNC_PYTHON").ok(),
        Some(
            root.join("bench/peers/.venv/bin/python")
                .to_string_lossy()
                .to_string(),
        ),
        Some("python3".to_string()),
    ];
    candidates.into_iter().flatten().find(|python| {
        Command::new(python)
            .args(["-c", "import onnx, onnxruntime, numpy"])
            .output()
            .is_ok_and(|output| output.status.success())
    })
}

#[test]
fn onnx_runtime_agrees_with_the_interpreter_on_small_models() {
    let Some(python) = python_with_onnxruntime() else {
        println!("skipped: no python3 with onnx, onnxruntime and numpy (set NNC_PYTHON)");
        return;
    };
    let root = models::workspace_root();
    let output = Command::new(python)
        .arg(root.join("bench/onnx_export_check.py"))
        .args(["--nnc", env!("CARGO_BIN_EXE_nnc")])
        .args([
            "--models",
            "mlp",
            "small_cnn",
            "every_activation",
            "handwritten_attention",
            "upsampling_cnn",
            "reductions",
        ])
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
