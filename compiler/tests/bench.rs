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
use nnc_compiler::passes::{self, OptLevel};
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
        // only a reshape done in place and a position embedding read in its table, which run
        // no code, have none.
        let names: Vec<&str> = instrumented
            .labels
            .iter()
            .map(|label| instrument::layer_name(label))
            .collect();
        let layers: Vec<(_, &str)> = graph
            .nodes
            .iter()
            .filter(|(_, data)| !matches!(data.op, Op::Reshape { .. } | Op::PositionEmbedding))
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
                remaining.any(|label| instrument::names_layer(label, layer)),
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
            // `nnc bench --warmup-seconds` reaches it as an argument.
            assert!(main.contains("\"warmup_seconds\" =>"), "{name}");
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
    // An f32 model counts no integer operations and shows no column for them.
    assert_eq!(bench_report.ops, 0);
    assert!(!text.contains("GOP/s"), "{text}");
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
fn every_iteration_of_a_rolled_loop_that_starts_with_the_layer_before_is_credited() {
    let mut graph = example("bert_encoder.nn");
    passes::optimize(&mut graph, OptLevel::O2, |_, _| {});
    let report = report::build(&graph, &codegen::plan(&graph), &ReportOptions::default());
    // What the harness of the rolled encoder times, block by block: the loop's body starts with
    // the layer norm that ends the layer before it, labelled with its first iteration's name
    // (`embeddings.LayerNorm`); its other blocks with a `{index}` template. The last layer's
    // norm runs after the loop, under its own name. The residual adds and GELU run fused into
    // the products before them and have no block.
    let blocks: Vec<(usize, String)> = report
        .layers
        .iter()
        .enumerate()
        .filter_map(|(index, layer)| {
            let (name, op) = (layer.name.as_str(), layer.op);
            let label = match name
                .strip_prefix("encoder.layer.")
                .and_then(|rest| rest.split_once('.'))
            {
                Some(_) if op == "add" || op == "gelu" => return None,
                Some((layer, "output.LayerNorm")) if layer != "5" => {
                    "embeddings.LayerNorm: layer_norm {eps = 1e-12, affine = true} -> f32[1, 128, \
                     384]"
                        .to_string()
                }
                Some((_, tail)) => {
                    format!("encoder.layer.{{index}}.{tail}: {op} -> f32[1, 128, 384]")
                }
                None => format!("{name}: {op} -> f32[1, 128, 384]"),
            };
            Some((index, label))
        })
        .collect();
    let rolled_norms = blocks
        .iter()
        .filter(|(_, label)| label.ends_with("affine = true} -> f32[1, 128, 384]"))
        .count();
    assert_eq!(rolled_norms, 5, "{blocks:#?}");
    let measurements = Measurements {
        threads: 1,
        latencies_ns: vec![1_000],
        profiled_iterations: 1,
        layer_median_ns: (1..=blocks.len() as u64).collect(),
        labels: blocks.iter().map(|(_, label)| label.clone()).collect(),
        ..Measurements::default()
    };
    let times: Vec<Option<u64>> = bench::bench_report(&report, None, &measurements)
        .layers
        .iter()
        .map(|layer| layer.median_ns)
        .collect();
    // Every block's time lands on its layer, the rolled norms' included.
    let mut expected = vec![None; report.layers.len()];
    for (nanos, (index, _)) in (1..).zip(&blocks) {
        expected[*index] = Some(nanos);
    }
    assert_eq!(times, expected);
}

/// The deeper fix of the case above: in the generated code of the rolled encoder, each block
/// of the loop records under the name of the layer it runs at that iteration (the name it
/// reports errors under, from the generated `LAYER_NAMES`), so the table needs no label
/// matching for it.
#[test]
fn every_block_of_a_rolled_loop_records_its_iterations_layer() {
    let mut graph = example("bert_encoder.nn");
    passes::optimize(&mut graph, OptLevel::O2, |_, _| {});
    let report = report::build(&graph, &codegen::plan(&graph), &ReportOptions::default());
    let instrumented = instrument::instrument(&generated(&graph));
    syn::parse_file(&instrumented.source).expect("instrumented code parses");

    // The layer names of each iteration, as the generated code lists them.
    let source = &instrumented.source;
    let table = &source[source.find("const LAYER_NAMES").expect("a rolled loop")..];
    let table = &table[..table.find("];").unwrap()];
    let iterations: Vec<Vec<&str>> = table
        .split('"')
        .skip(1)
        .step_by(2)
        .map(|names| names.split(' ').collect())
        .collect();
    assert_eq!(iterations.len(), 6);

    // The record calls in order: a block outside the loop once, the loop's blocks (named by
    // `names[k]`) once per iteration, in the order the harness runs them.
    let records: Vec<(usize, Option<usize>)> = source
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("crate::nnc_profile::record_named(") {
                let (slot, rest) = rest.split_once(", names[").unwrap();
                let (index, _) = rest.split_once(']').unwrap();
                Some((slot.parse().unwrap(), Some(index.parse().unwrap())))
            } else {
                let rest = line.strip_prefix("crate::nnc_profile::record(")?;
                Some((rest.split_once(',').unwrap().0.parse().unwrap(), None))
            }
        })
        .collect();
    assert_eq!(records.len(), instrumented.labels.len());
    let first_rolled = records.iter().position(|(_, name)| name.is_some()).unwrap();
    let rolled = records[first_rolled..]
        .iter()
        .take_while(|(_, name)| name.is_some())
        .count();
    // The loop's first block is its layer norm, labelled with its first iteration's name.
    assert!(
        instrumented.labels[first_rolled].starts_with("embeddings.LayerNorm: layer_norm"),
        "{:?}",
        instrumented.labels
    );
    let mut slots = Vec::new();
    let mut names = Vec::new();
    for &(slot, _) in &records[..first_rolled] {
        slots.push(slot);
        names.push(None);
    }
    for iteration in &iterations {
        for &(slot, index) in &records[first_rolled..first_rolled + rolled] {
            slots.push(slot);
            names.push(Some(iteration[index.unwrap()].to_string()));
        }
    }
    for &(slot, name) in &records[first_rolled + rolled..] {
        assert_eq!(name, None, "one rolled loop");
        slots.push(slot);
        names.push(None);
    }

    let measurements = Measurements {
        threads: 1,
        latencies_ns: vec![1_000],
        profiled_iterations: 1,
        layer_median_ns: (1..=slots.len() as u64).collect(),
        labels: bench::labels_of_runs(&instrumented.labels, &slots, &names),
        layer_slots: slots.clone(),
        layer_names: names.clone(),
        ..Measurements::default()
    };
    let layers = bench::bench_report(&report, None, &measurements).layers;
    // Every run lands on the layer it ran: the named ones on their names, the five rolled norms
    // (`encoder.layer.0-4.output.LayerNorm`) among them.
    let timed: Vec<&str> = layers
        .iter()
        .filter(|layer| layer.median_ns.is_some())
        .map(|layer| layer.name.as_str())
        .collect();
    assert_eq!(timed.len(), slots.len(), "{timed:?}");
    // (The embedding sums are named after the layer norm they feed, as is the norm.)
    for (run, name) in names.iter().enumerate() {
        if let Some(name) = name {
            assert!(
                layers
                    .iter()
                    .any(|layer| &layer.name == name && layer.median_ns == Some(run as u64 + 1)),
                "run {run} of {name}: {timed:?}"
            );
        }
    }
    for layer in 0..5 {
        assert!(timed.contains(&format!("encoder.layer.{layer}.output.LayerNorm").as_str()));
    }
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
            "\"warmup_seconds\" =>",
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

#[test]
fn layers_inside_rolled_loops_are_reported_per_iteration() {
    // What `nnc bench` compiles: MobileNetV2 at -O2, whose inverted residuals are rolled loops.
    let mut graph = example("mobilenet_v2.nn");
    passes::optimize(&mut graph, OptLevel::O2, |_, _| {});
    let runs = repeat::find_runs(&graph);
    assert!(!runs.is_empty(), "MobileNetV2 has rolled loops");
    let instrumented = instrument::instrument(&generated(&graph));
    syn::parse_file(&instrumented.source).expect("instrumented code parses");

    // The blocks as the harness runs them: each rolled loop's body (its consecutive blocks
    // labelled with `{index}`; MobileNetV2's loops are apart) once per iteration, in order.
    let mut slots = Vec::new();
    let mut counts = runs.iter().map(|run| run.count);
    let mut block = 0;
    while block < instrumented.labels.len() {
        let rolled = |label: &String| label.contains("{index}");
        if !rolled(&instrumented.labels[block]) {
            slots.push(block);
            block += 1;
            continue;
        }
        let body_len = instrumented.labels[block..]
            .iter()
            .take_while(|label| rolled(label))
            .count();
        let count = counts.next().expect("a run per rolled loop");
        for _ in 0..count {
            slots.extend(block..block + body_len);
        }
        block += body_len;
    }
    assert_eq!(counts.next(), None, "every run is a rolled loop");

    // The k-th block run took k + 1 µs.
    let measurements = Measurements {
        threads: 1,
        warmup: 1,
        latencies_ns: vec![1_000_000],
        profiled_iterations: 3,
        layer_median_ns: (1..=slots.len() as u64).map(|k| k * 1_000).collect(),
        labels: bench::labels_of_runs(&instrumented.labels, &slots, &[]),
        layer_slots: slots.clone(),
        ..Measurements::default()
    };
    let report = report::build(&graph, &codegen::plan(&graph), &ReportOptions::default());
    let bench_report = bench::bench_report(&report, None, &measurements);
    // Every block run is credited to a layer of its own, so none is lost.
    let timed: Vec<(&str, u64)> = bench_report
        .layers
        .iter()
        .filter_map(|layer| layer.median_ns.map(|nanos| (layer.name.as_str(), nanos)))
        .collect();
    assert_eq!(timed.len(), slots.len(), "{timed:?}");
    let expected: Vec<u64> = (1..=slots.len() as u64).map(|k| k * 1_000).collect();
    assert_eq!(
        timed.iter().map(|&(_, nanos)| nanos).collect::<Vec<_>>(),
        expected
    );
    // The iterations of the first loop (features.5 and features.6) under their own names, and
    // the layers after the loops too.
    let time_of = |name: &str| {
        bench_report
            .layers
            .iter()
            .find(|layer| layer.name == name)
            .and_then(|layer| layer.median_ns)
    };
    // (Each block's expanding and depthwise layers run inside its projecting 1x1 one, under the
    // latter's name.)
    for name in [
        "features.5.conv.2",
        "features.6.conv.2",
        "features.16.conv.2",
        "features.17.conv.2",
    ] {
        assert!(time_of(name).is_some(), "{name} has no time: {timed:?}");
    }
    assert!(time_of("features.6.conv.2") > time_of("features.5.conv.2"));
    let text = bench_report.render_text(None);
    assert!(text.contains("features.15.conv.2 (conv2d)"), "{text}");
    assert!(!text.contains("{index}"), "{text}");

    // The JSON the harness prints carries the block of each run, and the layer it ran where the
    // block named it.
    let output = r#"{"threads":1,"warmup":1,"latencies_ns":[5],"profiled_iterations":1,"layer_median_ns":[1,2,3,4],"layer_slots":[0,1,1,2],"layer_names":[null,null,null,"c.1"]}"#;
    let parsed: Measurements = serde_json::from_str(output).unwrap();
    assert_eq!(parsed.layer_slots, [0, 1, 1, 2]);
    let labels = [
        "a: relu -> f32[4]".to_string(),
        "b.{index}: relu -> f32[4]".to_string(),
        "c.0: layer_norm -> f32[4]".to_string(),
    ];
    assert_eq!(
        bench::labels_of_runs(&labels, &parsed.layer_slots, &parsed.layer_names),
        [
            "a: relu -> f32[4]",
            "b.{index}: relu -> f32[4]",
            "b.{index}: relu -> f32[4]",
            "c.1: layer_norm -> f32[4]"
        ]
    );
    assert_eq!(bench::labels_of_runs(&labels, &[], &[]), labels);
    // From a harness before names, none.
    let older = r#"{"threads":1,"warmup":1,"latencies_ns":[5],"profiled_iterations":1,"layer_median_ns":[1],"layer_slots":[0]}"#;
    let parsed: Measurements = serde_json::from_str(older).unwrap();
    assert!(parsed.layer_names.is_empty());
}

/// A layer quantized in the fast mode multiplies in integers: the report counts its integer
/// operations apart from the FLOPs, and gives their rate, in the summary and per layer.
#[test]
fn integer_operations_are_reported_apart() {
    let source = "network small(x: f32[batch, 64]) -> (y: f32[batch, 10]) where batch = 1 {
        h = linear(x, 48) as fc1
        h = relu(h)
        y = linear(h, 10) as fc2
    }";
    let options = FrontendOptions {
        quantize: Some(nnc_compiler::ir::Quantization {
            format: nnc_compiler::QuantFormat::Q4_1.into(),
            mode: nnc_compiler::QuantizedMode::Fast,
        }),
        ..FrontendOptions::default()
    };
    let graph = compile_to_ir(source, &options).unwrap().networks.remove(0);
    let report = report::build(&graph, &codegen::plan(&graph), &ReportOptions::default());
    let measurements = Measurements {
        threads: 1,
        warmup: 1,
        latencies_ns: vec![1_000],
        profiled_iterations: 1,
        layer_median_ns: vec![500, 100, 400],
        labels: vec![
            "fc1: linear -> f32[1, 48]".to_string(),
            "h: relu -> f32[1, 48]".to_string(),
            "fc2: linear -> f32[1, 10]".to_string(),
        ],
        ..Measurements::default()
    };
    let bench_report = bench::bench_report(&report, None, &measurements);
    // fc1 (64 -> 48, Q4_1 blocks, fast mode): 48 x 64 integer multiply-adds, two operations each.
    assert_eq!(bench_report.ops, 2 * 48 * 64);
    assert!((bench_report.achieved_gops - 6.144).abs() < 1e-9);
    assert_eq!(bench_report.layers[0].ops, 2 * 48 * 64);
    assert_eq!(bench_report.layers[0].gops, Some(2.0 * 48.0 * 64.0 / 500.0));
    let text = bench_report.render_text(None);
    assert!(
        text.contains("GOP/s of integer operations achieved")
            && text.contains("6.14 k integer operations per inference")
            && text.contains("GOP/s (int)"),
        "{text}"
    );
}
