//! The optimizer keeps results: every example, fixture and pass-test input computes the same
//! outputs at -O0 and -O2 (in the interpreter, with the same weights), and each pass's effect is
//! snapshotted.

use nnc_compiler::interpret::{self, Interpreter};
use nnc_compiler::passes::{self, OptLevel};
use nnc_compiler::{FrontendOptions, compile_to_ir, ir};
use nnc_test_support::inputs::{named, random_inputs};
use nnc_test_support::{TestModel, example, examples, fixtures, pass_inputs};

const TOLERANCE: f32 = 1e-5;

/// Every model this test runs, each at the test dimensions of its header: the examples, the pass
/// inputs (which show each rewrite in isolation) and the ONNX Runtime fixtures.
fn models() -> Vec<TestModel> {
    let mut models = examples();
    models.extend(pass_inputs());
    models.extend(fixtures());
    models
}

#[test]
fn o0_and_o2_agree_on_every_example_and_fixture() {
    let mut failures = Vec::new();
    for model in models() {
        let name = format!("{}/{}", model.collection.folder(), model.name);
        let options = FrontendOptions {
            dims: model.test_dims(),
            ..Default::default()
        };
        let source = model.source();
        let unoptimized = compile_to_ir(&source, &options).unwrap().networks.remove(0);
        let mut optimized = unoptimized.clone();
        let changed = passes::optimize(&mut optimized, OptLevel::O2, |_, _| {});
        let weights = interpret::random_weights(&unoptimized, 11);
        let inputs = random_inputs(&unoptimized, 11);
        let named = named(&inputs);
        let expected = Interpreter::new(&unoptimized, weights.clone())
            .unwrap()
            .run(&named)
            .unwrap();
        let actual = Interpreter::new(&optimized, weights)
            .unwrap()
            .run(&named)
            .unwrap();
        for ((output, expected), (_, actual)) in expected.iter().zip(&actual) {
            let error = actual
                .iter()
                .zip(expected)
                .map(|(a, e)| (a - e).abs() / e.abs().max(1.0))
                .fold(0.0f32, f32::max);
            println!(
                "{name:>34} {output:>20}: {} -> {} nodes ({}), max error {error:.2e}",
                unoptimized.nodes.len(),
                optimized.nodes.len(),
                changed.join(", ")
            );
            if error.is_nan() || error > TOLERANCE {
                failures.push(format!("{name}/{output}: {error:e}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "-O2 differs from -O0:\n{}",
        failures.join("\n")
    );
}

/// The IR before the passes and after each pass that changed it, for every `tests/passes/*.nn`.
#[test]
fn passes_before_and_after() {
    insta::glob!("passes/*.nn", |path| {
        let source = std::fs::read_to_string(path).unwrap();
        let mut graph = compile_to_ir(&source, &FrontendOptions::default())
            .unwrap()
            .networks
            .remove(0);
        let mut text = format!("// before\n{}", ir::print::print_graph(&graph));
        let mut previous = ir::print::print_graph(&graph);
        passes::optimize(&mut graph, OptLevel::O2, |name, graph| {
            let printed = ir::print::print_graph(graph);
            if printed != previous {
                text.push_str(&format!("\n// after {name}\n{printed}"));
                previous = printed;
            }
        });
        insta::assert_snapshot!(text);
    });
}

/// Fused nodes remember what they absorbed, so reports can show a graph's fused groups.
#[test]
fn fused_groups_follow_the_fusion_passes() {
    let source = example("resnet18").source();
    let graph = compile_to_ir(&source, &FrontendOptions::default())
        .unwrap()
        .networks
        .remove(0);
    let mut optimized = graph.clone();
    passes::optimize(&mut optimized, OptLevel::O2, |_, _| {});
    let groups = nnc_compiler::report::FusionGroups::from_optimized(&graph, &optimized);
    let group = |name: &str| {
        let node = graph
            .nodes
            .iter()
            .find(|(_, data)| data.name == name)
            .map(|(node, _)| node)
            .unwrap();
        groups.group_of[node]
    };
    // conv1 -> bn1 -> relu run as one conv kernel; the max pool is its own group.
    assert_eq!(group("conv1"), group("bn1"));
    assert_eq!(group("layer1.0.conv1"), group("layer1.0.bn1"));
    assert_ne!(group("conv1"), group("layer1.0.conv1"));
    // conv2 -> bn2 -> + shortcut -> relu run as one conv kernel, the residual in its epilogue.
    let block_end: Vec<&str> = graph
        .nodes
        .iter()
        .filter(|(node, _)| groups.group_of[*node] == group("layer1.0.conv2"))
        .map(|(_, data)| data.op.name())
        .collect();
    assert_eq!(block_end, ["conv2d", "batch_norm", "add", "relu"]);
    assert_eq!(
        groups.fused(&graph).len(),
        optimized
            .nodes
            .iter()
            .filter(|(_, data)| data.origin.len() > 1)
            .count()
    );
}

/// With `--quantize int8`, ResNet-18 (no depthwise layer) runs channels-last from its input to
/// its global pool: the int8 kernel is channels-last inside, so an NCHW int8 layer would
/// transpose its input and output on every call. One transpose enters the region, none leaves
/// (the global pool's `[1, 512, 1, 1]` is the same in both layouts). In f32 only its last stage
/// (7x7 planes, five convolutions) runs channels-last, entered by one transpose.
#[test]
fn int8_convolutions_run_channels_last() {
    let source = example("resnet18").source();
    let layouts = |int8: bool| {
        let mut calibration = nnc_compiler::calibration::Calibration::default();
        let mut graph = compile_to_ir(&source, &FrontendOptions::default())
            .unwrap()
            .networks
            .remove(0);
        for (_, data) in graph.nodes.iter() {
            let range = nnc_compiler::calibration::ActivationRange {
                min: -1.0,
                max: 1.0,
            };
            calibration.observe(&data.name, range);
        }
        let options = FrontendOptions {
            int8_convs: int8.then_some(calibration),
            ..Default::default()
        };
        graph = compile_to_ir(&source, &options).unwrap().networks.remove(0);
        passes::optimize(&mut graph, OptLevel::O2, |_, _| {});
        let convs: Vec<bool> = graph
            .nodes
            .iter()
            .filter_map(|(_, data)| match &data.op {
                ir::Op::Conv(attrs) => Some(attrs.channels_last),
                _ => None,
            })
            .collect();
        let transposes = graph
            .nodes
            .iter()
            .filter(|(_, data)| matches!(data.op, ir::Op::Transpose { .. }))
            .count();
        (convs, transposes)
    };
    let (convs, transposes) = layouts(true);
    assert_eq!(convs.len(), 20);
    assert!(convs.iter().all(|&channels_last| channels_last));
    assert_eq!(transposes, 1);
    let (convs, transposes) = layouts(false);
    assert_eq!(convs.len(), 20);
    let last_stage = convs.len() - 5;
    assert!(
        convs[..last_stage]
            .iter()
            .all(|&channels_last| !channels_last)
    );
    assert!(
        convs[last_stage..]
            .iter()
            .all(|&channels_last| channels_last)
    );
    assert_eq!(transposes, 1);
}
