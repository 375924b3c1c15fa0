//! `nnc bench` without running cargo: the instrumented code and the harnesses (forward and
//! `--decode`) are valid Rust that times every layer, and measurements merge with the static
//! report. (Building a harness takes minutes in release mode — it compiles nnc-runtime and the
//! generated model with optimizations — so the end-to-end run is checked by hand, and by
//! bench/peers/run.sh, which runs both harnesses; see docs/cost-model.md.)

#![cfg(feature = "cli")]

use std::path::Path;

use nnc_compiler::bench::{self, Measurements, harness, instrument};
use nnc_compiler::codegen::{self, CodegenOptions, repeat};
use nnc_compiler::ir::{Graph, Module, Op};
use nnc_compiler::report::{self, ReportOptions};
use nnc_compiler::{FrontendOptions, compile_to_ir};

fn example(name: &str) -> Graph {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name);
    let source = std::fs::read_to_string(path).unwrap();
    compile_to_ir(&source, &FrontendOptions::default())
        .unwrap()
        .networks
        .remove(0)
}

fn generated(graph: &Graph) -> String {
    codegen::generate(
        &Module {
            networks: vec![graph.clone()],
        },
        &CodegenOptions {
            runtime_path: "::nnc_runtime".to_string(),
            source_name: None,
        },
    )
}

#[test]
fn every_layer_of_generated_code_gets_a_clock() {
    for name in ["mlp.nn", "resnet18.nn", "bert_encoder.nn", "seq2seq.nn"] {
        let graph = example(name);
        let code = generated(&graph);
        let instrumented = instrument::instrument(&code);
        syn::parse_file(&instrumented.source)
            .unwrap_or_else(|error| panic!("{name}: instrumented code does not parse: {error}"));
        // One timed block per node of the unoptimized graph, in order, named after the layer;
        // only a reshape done in place, which runs no code, has none.
        let names: Vec<&str> = instrumented
            .labels
            .iter()
            .map(|label| instrument::layer_name(label))
            .collect();
        let layers: Vec<(_, &str)> = graph
            .nodes
            .iter()
            .filter(|(_, data)| !matches!(data.op, Op::Reshape { .. }))
            .map(|(node, data)| (node, data.name.as_str()))
            .collect();
        // A rolled loop's later iterations run the first one's timed block, named with
        // `{index}` for the iteration.
        let runs = repeat::find_runs(&graph);
        let mut remaining = names.iter();
        for (node, layer) in &layers {
            let repeat = runs.iter().any(|run| {
                run.position_of(node.index())
                    .is_some_and(|(iteration, _)| iteration > 0)
            });
            if repeat {
                continue;
            }
            assert!(
                remaining.any(|label| names_the_layer(label, layer)),
                "{name}: no timed block for `{layer}`"
            );
        }
        assert!(names.len() <= graph.nodes.len(), "{name}");
        assert_eq!(
            instrumented
                .source
                .matches(instrument::RECORD_FUNCTION)
                .count(),
            names.len()
        );
    }
}

#[test]
fn the_harness_is_valid_rust() {
    for name in ["mlp.nn", "bert_encoder.nn", "seq2seq.nn"] {
        let graph = example(name);
        for layers in [None, Some(graph.nodes.len())] {
            let main = harness::main_source(&graph, layers);
            syn::parse_file(&main)
                .unwrap_or_else(|error| panic!("{name}: harness does not parse: {error}\n{main}"));
        }
        let manifest = harness::manifest(&graph.name, "/path/to/runtime");
        assert!(manifest.contains("[workspace]"));
        assert!(manifest.contains(&format!(
            "name = \"{}\"",
            harness::package_name(&graph.name)
        )));
    }
    // Several inputs go through the generated `...Inputs` struct.
    let main = harness::main_source(&example("bert_encoder.nn"), None);
    assert!(main.contains("model::BertEncoderInputs {"));
}

#[test]
fn measurements_merge_with_the_report() {
    let graph = example("mlp.nn");
    let report = report::build(&graph, &codegen::plan(&graph), &ReportOptions::default());
    let measurements = Measurements {
        threads: 1,
        warmup: 10,
        latencies_ns: vec![1_000, 1_200, 900, 1_100, 1_000],
        profiled_iterations: 20,
        layer_median_ns: vec![600, 100, 300],
        labels: vec![
            "fc1: linear -> f32[1, 256]".to_string(),
            "h: relu -> f32[1, 256]".to_string(),
            "fc2: linear -> f32[1, 10]".to_string(),
        ],
        ..Measurements::default()
    };
    let bench_report = bench::bench_report(&report, None, &measurements);
    assert_eq!(bench_report.latency.median_ns, 1_000);
    assert_eq!(bench_report.iterations, 5);
    assert!((bench_report.inferences_per_second - 1e6).abs() < 1e-6);
    // 407,050 FLOPs in 1 µs.
    assert!((bench_report.achieved_gflops - 407.05).abs() < 1e-9);
    let times: Vec<Option<u64>> = bench_report
        .layers
        .iter()
        .map(|layer| layer.median_ns)
        .collect();
    assert_eq!(times, [Some(600), Some(100), Some(300)]);
    assert_eq!(bench_report.layers[0].share, Some(0.6));
    let text = bench_report.render_text(Some(2));
    assert!(text.contains("the 2 slowest"), "{text}");
    assert!(
        text.contains("fc1 (linear)") && !text.contains("h (relu)"),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&bench_report.to_json()).unwrap();
    assert_eq!(json["layers"][2]["median_ns"], 300);
    assert_eq!(json["tokens_per_second"], serde_json::Value::Null);

    // Fused code times fewer blocks; they are matched to layers by name.
    let fused = Measurements {
        layer_median_ns: vec![700, 300],
        labels: vec![
            "fc1: linear {activation = relu} -> f32[1, 256]".to_string(),
            "fc2: linear -> f32[1, 10]".to_string(),
        ],
        ..measurements
    };
    let times: Vec<Option<u64>> = bench::bench_report(&report, None, &fused)
        .layers
        .iter()
        .map(|layer| layer.median_ns)
        .collect();
    assert_eq!(times, [Some(700), None, Some(300)]);
}

#[test]
fn the_decoder_harness_is_valid_rust_and_names_the_generated_decoder() {
    for (name, decoder) in [
        ("tiny_gpt.nn", "TinyGptDecoder"),
        ("llama_decoder.nn", "LlamaDecoderDecoder"),
    ] {
        let graph = example(name);
        let main = harness::decoder_main_source(&graph);
        syn::parse_file(&main).unwrap_or_else(|error| {
            panic!("{name}: decoder harness does not parse: {error}\n{main}")
        });
        assert!(main.contains(&format!("model::{decoder}::from_safetensors")));
        // It takes the decode arguments, and prints the prefill times as JSON (a key escaped in
        // the format string).
        for key in [
            "\"prompt_tokens\" =>",
            "\"new_tokens\" =>",
            r#"\"prefill_ns\":["#,
        ] {
            assert!(main.contains(key), "{name}: {key}");
        }
    }
    // Its project and binary are apart from the forward harness's.
    let project = bench::decoder_project_name("tiny_gpt");
    assert_ne!(project, "tiny_gpt");
    let binary = bench::harness_binary(Path::new("/work"), &project);
    assert!(
        binary.ends_with("target/release/nnc-bench-tiny-gpt-decode"),
        "{}",
        binary.display()
    );
}

#[test]
fn decoder_measurements_report_prefill_and_decode() {
    let graph = example("tiny_gpt.nn");
    let report = report::build(&graph, &codegen::plan(&graph), &ReportOptions::default());
    // What the decoder harness prints: two sequences of a 5-token prompt and 3 new tokens.
    let output = r#"{"threads":1,"warmup":1,"latencies_ns":[100,300,200,100,200,400],"profiled_iterations":0,"layer_median_ns":[],"prompt_tokens":5,"new_tokens":3,"prefill_ns":[2000,1000]}"#;
    let measurements: Measurements = serde_json::from_str(output).unwrap();
    let bench_report = bench::bench_report(&report, Some(1), &measurements);
    let decode = bench_report.decode.as_ref().expect("a decode section");
    assert_eq!(
        (decode.prompt_tokens, decode.new_tokens, decode.sequences),
        (5, 3, 2)
    );
    assert_eq!(decode.prefill.median_ns, 1000);
    assert_eq!(decode.decode_step.median_ns, 200);
    assert!((decode.decode_ms_per_token - 2e-4).abs() < 1e-12);
    assert!((decode.decode_tokens_per_second - 5e6).abs() < 1e-3);
    let json: serde_json::Value = serde_json::from_str(&bench_report.to_json()).unwrap();
    assert_eq!(json["decode"]["prefill"]["median_ns"], 1000);
    assert_eq!(json["tokens_per_second"], 5e6);
    let text = bench_report.render_text(None);
    assert!(text.contains("prefill     median 1.0 µs"), "{text}");
    assert!(text.contains("decode      median 200 ns"), "{text}");
    // Forward measurements have no decode section.
    let forward = Measurements {
        prompt_tokens: 0,
        new_tokens: 0,
        prefill_ns: Vec::new(),
        ..measurements
    };
    let json = bench::bench_report(&report, None, &forward).to_json();
    assert!(!json.contains("\"decode\""), "{json}");
}

#[test]
fn decoders_report_tokens() {
    assert_eq!(
        bench::tokens_per_inference(&example("tiny_gpt.nn")),
        Some(64)
    );
    assert_eq!(bench::tokens_per_inference(&example("resnet18.nn")), None);
}

/// Whether a timed block's `label` names `layer`: the same name, or a rolled loop's template
/// with `{index}` standing for a number.
fn names_the_layer(label: &str, layer: &str) -> bool {
    match label.split_once("{index}") {
        None => label == layer,
        Some((prefix, suffix)) => layer
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(suffix))
            .is_some_and(|index| {
                !index.is_empty() && index.bytes().all(|byte| byte.is_ascii_digit())
            }),
    }
}
