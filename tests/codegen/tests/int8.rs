//! Generated code with int8 convolutions (`Builder::quantize_int8`, as `nnc compile --quantize
//! int8 --calibration FILE`), on the small CNN of `tests/codegen/models`, built by `build.rs`
//! with the checked-in `small_cnn.calibration.json`:
//! - the calibration is what `calibrate` computes today on the test weights and samples;
//! - every 2-D convolution is stored in int8, with its input's calibrated quantization;
//! - the generated code (-O2: channels-last, batch norms folded, activations and residuals
//!   fused) equals the interpreter (the graph as lowered, NCHW), both in int8;
//! - int8 stays near the f32 model: small logit error, same top-1.

use nnc_codegen_tests::{Input, int8_small_cnn};
use nnc_compiler::calibration::{Calibration, calibrate};
use nnc_compiler::interpret::{Interpreter, Tensor};
use nnc_compiler::ir::{Graph, WeightStorage};
use nnc_compiler::{FrontendOptions, compile_to_ir};
use nnc_test_support::inputs::{inputs_for, named, weights_for};
use nnc_test_support::{TestModel, codegen_models};

/// The seed of the weights every test here uses, the calibration's included.
const WEIGHTS_SEED: u64 = 7;
/// The seeds of the calibration samples.
const CALIBRATION_SEEDS: std::ops::RangeInclusive<u64> = 1..=8;

fn small_cnn() -> TestModel {
    codegen_models()
        .into_iter()
        .find(|model| model.name == "small_cnn")
        .unwrap()
}

fn graph(model: &TestModel, int8_convs: Option<Calibration>) -> Graph {
    let options = FrontendOptions {
        int8_convs,
        ..Default::default()
    };
    compile_to_ir(&model.source(), &options)
        .unwrap()
        .networks
        .remove(0)
}

fn checked_in_calibration(model: &TestModel) -> (std::path::PathBuf, Calibration) {
    let path = model.path.with_extension("calibration.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let calibration = Calibration::from_json(&text).unwrap();
    (path, calibration)
}

fn run_generated(weights: Vec<Vec<f32>>, inputs: &[(String, Tensor)]) -> Vec<f32> {
    let dynamic: Vec<Input<'_>> = inputs
        .iter()
        .map(|(_, tensor)| match tensor {
            Tensor::F32(array) => Input::F32(array.view()),
            Tensor::I64(array) => Input::I64(array.view()),
        })
        .collect();
    let outputs = int8_small_cnn::run(weights, &dynamic).unwrap();
    outputs[0].iter().copied().collect()
}

fn run_interpreter(graph: &Graph, weights: &[Vec<f32>], inputs: &[(String, Tensor)]) -> Vec<f32> {
    let outputs = Interpreter::new(graph, weights.to_vec())
        .unwrap()
        .run(&named(inputs))
        .unwrap();
    outputs[0].1.iter().copied().collect()
}

fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .fold((0, f32::MIN), |best, (index, &value)| {
            if value > best.1 { (index, value) } else { best }
        })
        .0
}

/// `max |a - b|` over the largest `|b|`: the error on the logits' own scale.
fn scaled_error(actual: &[f32], expected: &[f32]) -> f32 {
    let scale = expected
        .iter()
        .fold(0.0f32, |max, value| max.max(value.abs()));
    actual
        .iter()
        .zip(expected)
        .fold(0.0f32, |max, (a, b)| max.max((a - b).abs()))
        / scale
}

#[test]
fn checked_in_calibration_is_what_calibrate_computes() {
    let model = small_cnn();
    let f32_graph = graph(&model, None);
    let weights = weights_for(&model, &f32_graph, WEIGHTS_SEED);
    let interpreter = Interpreter::new(&f32_graph, weights).unwrap();
    let samples: Vec<Vec<(String, Tensor)>> = CALIBRATION_SEEDS
        .map(|seed| inputs_for(&model, &f32_graph, seed))
        .collect();
    let samples: Vec<Vec<(&str, Tensor)>> = samples.iter().map(|sample| named(sample)).collect();
    let computed = calibrate(&interpreter, &samples).unwrap();
    let (path, checked_in) = checked_in_calibration(&model);
    if std::env::var_os("NNC_UPDATE_CALIBRATION").is_some() {
        std::fs::write(&path, computed.to_json() + "\n").unwrap();
        return;
    }
    assert_eq!(computed.samples, CALIBRATION_SEEDS.count());
    // The eight convolutions, the stem's input (the image) among them.
    assert_eq!(computed.layers.len(), 8, "{:?}", computed.layers.keys());
    assert_eq!(
        computed,
        checked_in,
        "{} is stale: rerun this test with NNC_UPDATE_CALIBRATION=1",
        path.display()
    );
    // The image is uniform in [-2, 2): its range is nearly that.
    let stem = computed.layers["stem.0"];
    assert!(stem.min < -1.9 && stem.max > 1.9, "{stem:?}");
    // A ReLU6 output feeds the depthwise convolution.
    let depthwise = computed.layers["block2.depthwise.0"];
    assert!(
        depthwise.min == 0.0 && depthwise.max <= 6.0,
        "{depthwise:?}"
    );
}

#[test]
fn every_conv_is_stored_in_int8_with_its_calibrated_input() {
    let model = small_cnn();
    let (_, calibration) = checked_in_calibration(&model);
    let graph = graph(&model, Some(calibration.clone()));
    let mut int8 = Vec::new();
    for (_, node) in graph.nodes.iter() {
        if let nnc_compiler::ir::Op::Conv(_) = node.op {
            let nnc_compiler::ir::ValueDef::Param(param) = graph.values[node.inputs[1]].def else {
                panic!("{}: the weight is a param", node.name);
            };
            let WeightStorage::Int8(stored) = graph.params[param].storage else {
                panic!("{} is not stored in int8", node.name);
            };
            assert_eq!(
                Some(stored.input),
                calibration.input_quantization(&node.name),
                "{}",
                node.name
            );
            int8.push(node.name.clone());
        }
    }
    assert_eq!(int8.len(), 8, "{int8:?}");
    let printed = nnc_compiler::ir::print::print_graph(&graph);
    assert!(printed.contains("stored int8 (input scale"), "{printed}");
}

#[test]
fn a_calibration_missing_a_layer_is_an_error_naming_it() {
    let model = small_cnn();
    let (_, mut calibration) = checked_in_calibration(&model);
    calibration.layers.remove("block2.depthwise.0");
    let options = FrontendOptions {
        int8_convs: Some(calibration),
        ..Default::default()
    };
    let errors = compile_to_ir(&model.source(), &options).unwrap_err();
    let message = errors.0[0].message.clone();
    assert!(
        message.contains("no input range for `block2.depthwise.0`"),
        "{message}"
    );
}

#[test]
fn int8_code_equals_the_interpreter_and_stays_near_f32() {
    let model = small_cnn();
    let (_, calibration) = checked_in_calibration(&model);
    let f32_graph = graph(&model, None);
    let int8_graph = graph(&model, Some(calibration));
    let weights = weights_for(&model, &f32_graph, WEIGHTS_SEED);
    let mut worst_generated = 0.0f32;
    let mut worst_f32 = 0.0f32;
    let mut same_top1 = 0;
    // The calibration samples, then inputs the calibration never saw.
    let seeds: Vec<u64> = CALIBRATION_SEEDS.chain(100..108).collect();
    for &seed in &seeds {
        let inputs = inputs_for(&model, &f32_graph, seed);
        let generated = run_generated(weights.clone(), &inputs);
        let interpreted = run_interpreter(&int8_graph, &weights, &inputs);
        let reference = run_interpreter(&f32_graph, &weights, &inputs);
        worst_generated = worst_generated.max(scaled_error(&generated, &interpreted));
        worst_f32 = worst_f32.max(scaled_error(&generated, &reference));
        same_top1 += usize::from(argmax(&generated) == argmax(&reference));
    }
    println!(
        "int8 generated vs int8 interpreter {worst_generated:.2e}; int8 vs f32 {worst_f32:.2e}; \
         top-1 agrees on {same_top1}/{}",
        seeds.len()
    );
    // Both quantize with the same scales and sum exactly in int32, but their f32 paths differ
    // (a folded batch norm, fused epilogues, another order of additions), and an input within
    // an ulp of a rounding boundary can then quantize to the neighbouring step in one of them:
    // one such flip moves an output by s_x * |w|, about 1e-4 of the logits here. 1e-3 allows a
    // few; a wrong scale, zero point or sum would be off by far more.
    assert!(worst_generated <= 1e-3, "{worst_generated:e}");
    // Eight layers of 8-bit rounding: a few percent of the logits' scale.
    assert!(worst_f32 <= 0.08, "{worst_f32:e}");
    assert!(same_top1 >= seeds.len() - 2, "{same_top1}/{}", seeds.len());
}

#[test]
fn quantize_false_keeps_a_conv_in_f32_and_needs_no_range() {
    let model = small_cnn();
    let (_, mut calibration) = checked_in_calibration(&model);
    calibration.layers.remove("stem.0");
    let source = model.source().replace(
        "padding = (kernel - 1) / 2, groups = groups, bias = false) as 0",
        "padding = (kernel - 1) / 2, groups = groups, bias = false, quantize = kernel != 5) as 0",
    );
    assert_ne!(
        source,
        model.source(),
        "the stem's conv call is in the model"
    );
    let options = FrontendOptions {
        int8_convs: Some(calibration),
        ..Default::default()
    };
    let graph = compile_to_ir(&source, &options).unwrap().networks.remove(0);
    let storage = |name: &str| {
        let param = graph
            .params
            .iter()
            .find(|(_, param)| param.name == name)
            .unwrap()
            .1;
        param.storage
    };
    assert_eq!(storage("stem.0.weight"), WeightStorage::F32);
    assert!(matches!(
        storage("block1.conv1.0.weight"),
        WeightStorage::Int8(_)
    ));
}
