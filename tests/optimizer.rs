//! The optimizer keeps results: every example, fixture and pass-test input computes the same
//! outputs at -O0 and -O2 (in the interpreter, with the same weights), and each pass's effect is
//! snapshotted.

use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use nnc_compiler::interpret::{self, Interpreter, Tensor};
use nnc_compiler::passes::{self, OptLevel};
use nnc_compiler::{FrontendOptions, compile_to_ir, ir};

const TOLERANCE: f32 = 1e-5;

/// A model to test: its name, source file, and dimension overrides.
type Model = (String, PathBuf, Vec<(String, i64)>);

fn models() -> Vec<Model> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut models = Vec::new();
    for name in [
        "mlp",
        "resnet18",
        "mobilenet_v2",
        "bert_encoder",
        "tiny_gpt",
        "llama_decoder",
        "seq2seq",
        "longformer",
    ] {
        let dims: Vec<(String, i64)> = match name {
            "bert_encoder" | "tiny_gpt" => vec![("seq".into(), 16)],
            "llama_decoder" => vec![("seq".into(), 4)],
            "longformer" => vec![("seq".into(), 260)],
            "seq2seq" => vec![("src_len".into(), 10), ("tgt_len".into(), 6)],
            _ => vec![],
        };
        models.push((
            name.to_string(),
            root.join("examples").join(format!("{name}.nn")),
            dims,
        ));
    }
    // The inputs of the pass snapshots, which show each rewrite in isolation.
    let mut pass_inputs: Vec<PathBuf> = std::fs::read_dir(root.join("tests/passes"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    pass_inputs.sort();
    for path in pass_inputs {
        let name = format!("passes/{}", path.file_stem().unwrap().to_string_lossy());
        models.push((name, path, vec![]));
    }
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(root.join("tests/fixtures"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    fixtures.sort();
    for folder in fixtures {
        models.push((
            folder.file_name().unwrap().to_string_lossy().to_string(),
            folder.join("model.nn"),
            vec![],
        ));
    }
    models
}

fn inputs(graph: &ir::Graph) -> Vec<(String, Tensor)> {
    graph
        .inputs
        .iter()
        .map(|input| {
            let ty = graph.ty(input.value);
            let count = ty.element_count() as usize;
            let tensor = match ty.dtype {
                ir::DType::I64 => Tensor::I64(
                    ArrayD::from_shape_vec(
                        IxDyn(&ty.shape),
                        (0..count).map(|i| (i % 2) as i64).collect(),
                    )
                    .unwrap(),
                ),
                ir::DType::F32 => Tensor::F32(
                    ArrayD::from_shape_vec(
                        IxDyn(&ty.shape),
                        (0..count)
                            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 5.0)
                            .collect(),
                    )
                    .unwrap(),
                ),
            };
            (input.name.clone(), tensor)
        })
        .collect()
}

#[test]
fn o0_and_o2_agree_on_every_example_and_fixture() {
    let mut failures = Vec::new();
    for (name, path, dims) in models() {
        let source = std::fs::read_to_string(&path).unwrap();
        let options = FrontendOptions { dims };
        let unoptimized = compile_to_ir(&source, &options).unwrap().networks.remove(0);
        let mut optimized = unoptimized.clone();
        let changed = passes::optimize(&mut optimized, OptLevel::O2, |_, _| {});
        let weights = interpret::random_weights(&unoptimized, 11);
        let inputs = inputs(&unoptimized);
        let named: Vec<(&str, Tensor)> = inputs
            .iter()
            .map(|(name, tensor)| (name.as_str(), tensor.clone()))
            .collect();
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
                "{name:>18} {output:>20}: {} -> {} nodes ({}), max error {error:.2e}",
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
    let source =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/resnet18.nn"))
            .unwrap();
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
