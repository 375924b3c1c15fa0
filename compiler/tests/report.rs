//! Cost reports: JSON snapshots, the documented schema, text renderings, SVG charts and the graph
//! picture. Review snapshot changes with `cargo insta review`.

#![cfg(feature = "report")]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use nnc_compiler::codegen;
use nnc_compiler::ir::{Graph, SecondaryMap};
use nnc_compiler::report::{self, FusionGroups, ReportOptions, chart, graph_view, table};
use nnc_compiler::{FrontendOptions, QuantFormat, QuantizedMode, compile_to_ir};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn example(name: &str) -> Graph {
    let source = std::fs::read_to_string(workspace().join("examples").join(name)).unwrap();
    compile_to_ir(&source, &FrontendOptions::default())
        .unwrap()
        .networks
        .remove(0)
}

fn build(graph: &Graph) -> report::Report {
    report::build(graph, &codegen::plan(graph), &ReportOptions::default())
}

/// The first network of `source`, with its linear layers quantized as `--quantize` would.
fn quantized(source: &str, format: QuantFormat, mode: QuantizedMode) -> Graph {
    let options = FrontendOptions {
        quantize: Some(nnc_compiler::ir::Quantization {
            format: format.into(),
            mode,
        }),
        ..FrontendOptions::default()
    };
    compile_to_ir(source, &options).unwrap().networks.remove(0)
}

/// fc1's rows (64) are two blocks of 32, so its weight is quantized; fc2's (48) are not whole
/// blocks, so it stays f32.
const SMALL_QUANTIZABLE: &str = "
network small(x: f32[batch, 64]) -> (y: f32[batch, 10]) where batch = 1 {
    h = linear(x, 48) as fc1
    h = relu(h)
    y = linear(h, 10) as fc2
}
";

#[test]
fn a_small_quantized_model_counted_by_hand() {
    let graph = quantized(SMALL_QUANTIZABLE, QuantFormat::Q4_1, QuantizedMode::Fast);
    let totals = build(&graph).totals;
    // f32: fc1.bias [48], fc2.weight [10, 48], fc2.bias [10]; q4_1: fc1.weight [48, 64], 96
    // blocks of 20 bytes (two f16 for scale and minimum, 16 bytes of nibbles).
    let storages: Vec<(&str, usize, u64, u64)> = totals
        .weight_storage
        .iter()
        .map(|size| (size.storage, size.tensors, size.elements, size.bytes))
        .collect();
    assert_eq!(
        storages,
        [
            ("f32", 3, 48 + 480 + 10, (48 + 480 + 10) * 4),
            ("q4_1", 1, 48 * 64, 48 * 64 / 32 * 20),
        ]
    );
    assert_eq!(totals.weight_bytes, 538 * 4 + 1920);
    assert_eq!(totals.weight_dtype, "mixed");
    assert_eq!(totals.weight_bytes_per_token, None);
    // fc1 multiplies in integers (fast mode); fc2 in f32.
    assert_eq!(totals.integer_macs, 48 * 64);
    assert_eq!(totals.float_macs, 10 * 48);
    assert_eq!(totals.macs, 48 * 64 + 10 * 48);
    assert_eq!(totals.ops, 2 * 48 * 64);
    // 2 x float MACs, fc1's bias adds, the ReLU, fc2's bias adds.
    assert_eq!(totals.flops, 2 * 480 + 48 + 48 + 10);

    // The exact mode stores the same bytes but multiplies in f32.
    let exact = build(&quantized(
        SMALL_QUANTIZABLE,
        QuantFormat::Q4_1,
        QuantizedMode::Exact,
    ))
    .totals;
    assert_eq!(exact.weight_bytes, totals.weight_bytes);
    assert_eq!((exact.integer_macs, exact.ops), (0, 0));
    assert_eq!(exact.flops, 2 * (48 * 64 + 480) + 48 + 48 + 10);

    // Q8_0: 34-byte blocks.
    let q8 = build(&quantized(
        SMALL_QUANTIZABLE,
        QuantFormat::Q8_0,
        QuantizedMode::Exact,
    ))
    .totals;
    assert_eq!(q8.weight_bytes, 538 * 4 + 48 * 64 / 32 * 34);
    assert_eq!(q8.weight_storage[1].storage, "q8_0");

    // Unquantized: everything f32, one storage, named as before.
    let f32_totals = build(&example_source(SMALL_QUANTIZABLE)).totals;
    assert_eq!(f32_totals.weight_dtype, "f32");
    assert_eq!(f32_totals.weight_storage.len(), 1);
    assert_eq!(f32_totals.weight_bytes, (538 + 3072) * 4);
}

fn example_source(source: &str) -> Graph {
    compile_to_ir(source, &FrontendOptions::default())
        .unwrap()
        .networks
        .remove(0)
}

#[test]
fn decoder_weight_bytes_per_token_by_hand() {
    // SmolLM2-135M's shape: 30 layers, hidden 576, 9 query heads and 3 key/value heads of 64,
    // FFN 1536, vocabulary 49,152, the head tied to the token table.
    let (layers, hidden, kv, ffn, vocab) = (30u64, 576u64, 3 * 64u64, 1536u64, 49_152u64);
    let linear_per_layer = 2 * hidden * hidden + 2 * kv * hidden + 3 * ffn * hidden;
    let norms = (2 * layers + 1) * hidden;
    let source = std::fs::read_to_string(workspace().join("examples/llama_decoder.nn")).unwrap();

    // f32: every weight once, and the token's row of the table on top of the head's whole table.
    let f32_totals = build(&example("llama_decoder.nn")).totals;
    let all_f32 = (layers * linear_per_layer + norms + vocab * hidden) * 4;
    assert_eq!(f32_totals.weight_bytes, all_f32);
    assert_eq!(
        f32_totals.weight_bytes_per_token,
        Some(all_f32 + hidden * 4)
    );

    // Q4_1: the layers' linear weights in 20-byte blocks, the tied head in Q8_0 (34-byte
    // blocks), the norms in f32, and one f32 row of the table, which stays resident in f32 for
    // the lookup beside its Q8_0 copy.
    let totals = build(&quantized(&source, QuantFormat::Q4_1, QuantizedMode::Fast)).totals;
    let q4_1 = layers * linear_per_layer / 32 * 20;
    let head_q8_0 = vocab * hidden / 32 * 34;
    assert_eq!(
        totals.weight_bytes_per_token,
        Some(q4_1 + head_q8_0 + norms * 4 + hidden * 4)
    );
    assert_eq!(totals.weight_bytes_per_token, Some(96_579_072));
    assert_eq!(
        totals.weight_bytes,
        q4_1 + head_q8_0 + (norms + vocab * hidden) * 4
    );
    let storages: Vec<&str> = totals
        .weight_storage
        .iter()
        .map(|size| size.storage)
        .collect();
    assert_eq!(storages, ["f32", "q4_1", "q8_0"]);
    // Every linear layer multiplies in integers; attention's QKᵀ and AV stay float.
    assert_eq!(totals.float_macs + totals.integer_macs, totals.macs);
    assert_eq!(
        totals.integer_macs,
        64 * (layers * linear_per_layer + vocab * hidden)
    );

    // Networks without a KV cache have no per-token figure.
    assert_eq!(
        build(&example("mlp.nn")).totals.weight_bytes_per_token,
        None
    );
}

#[test]
fn json_of_mlp() {
    insta::assert_snapshot!(build(&example("mlp.nn")).to_json());
}

#[test]
fn json_of_resnet18() {
    insta::assert_snapshot!(build(&example("resnet18.nn")).to_json());
}

#[test]
fn table_of_mlp() {
    insta::assert_snapshot!(table::render_text(&build(&example("mlp.nn"))));
}

#[test]
fn markdown_of_tiny_gpt() {
    insta::assert_snapshot!(table::render_markdown(&build(&example("tiny_gpt.nn"))));
}

/// Every key path of a JSON value, arrays entered through `[]`: `layers[].name`.
fn key_paths(value: &serde_json::Value, prefix: &str, paths: &mut BTreeSet<String>) {
    match value {
        serde_json::Value::Object(fields) => {
            for (key, field) in fields {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                paths.insert(path.clone());
                key_paths(field, &path, paths);
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                key_paths(item, &format!("{prefix}[]"), paths);
            }
        }
        _ => {}
    }
}

/// The field names in the first column of the report's schema table in docs/cost-model.md.
fn documented_fields() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(workspace().join("docs/cost-model.md")).unwrap();
    let start = doc.find("## JSON schema").expect("a JSON schema section");
    let section = &doc[start..];
    let table_start = section.find("| field |").expect("the report's field table");
    let mut fields = BTreeSet::new();
    for line in section[table_start..].lines().skip(2) {
        if !line.starts_with('|') {
            break;
        }
        let first_cell = line.split('|').nth(1).unwrap_or_default();
        // A cell may name several fields: `inputs`, `outputs`.
        for name in first_cell.split(',') {
            fields.insert(name.trim().trim_matches('`').to_string());
        }
    }
    fields
}

#[test]
fn the_json_schema_is_documented_field_by_field() {
    let documented = documented_fields();
    let mut present = BTreeSet::new();
    for name in ["mlp.nn", "llama_decoder.nn", "resnet18.nn"] {
        let json: serde_json::Value =
            serde_json::from_str(&build(&example(name)).to_json()).unwrap();
        key_paths(&json, "", &mut present);
    }
    // Entries of `dims`, `inputs` and `outputs` are documented in the row of their array.
    let present: BTreeSet<String> = present
        .into_iter()
        .filter(|path| {
            !["dims[].", "inputs[].", "outputs[]."]
                .iter()
                .any(|prefix| path.starts_with(prefix))
        })
        .collect();
    let undocumented: Vec<&String> = present.difference(&documented).collect();
    let missing: Vec<&String> = documented.difference(&present).collect();
    assert!(
        undocumented.is_empty() && missing.is_empty(),
        "fields in the JSON but not in docs/cost-model.md: {undocumented:?}; \
         documented but not in the JSON: {missing:?}"
    );
    assert_eq!(report::SCHEMA_VERSION, 2);
}

#[test]
fn charts_are_well_formed_svg_with_one_mark_per_item() {
    let graph = example("resnet18.nn");
    let plan = codegen::plan(&graph);
    let report = report::build(&graph, &plan, &ReportOptions::default());

    let bars = chart::macs_bar_chart(&report);
    let document = roxmltree::Document::parse(&bars).expect("the MACs chart parses as XML");
    let titled_rects = document
        .descendants()
        .filter(|node| {
            node.has_tag_name("rect") && node.children().any(|c| c.has_tag_name("title"))
        })
        .count();
    let layers_with_macs = report.layers.iter().filter(|layer| layer.macs > 0).count();
    assert_eq!(titled_rects, layers_with_macs);
    assert_eq!(
        layers_with_macs, 21,
        "17 convolutions, 3 downsamples and fc"
    );

    let timeline = chart::memory_timeline(&graph, &plan);
    let document = roxmltree::Document::parse(&timeline).expect("the timeline parses as XML");
    let tensors = document
        .descendants()
        .filter(|node| {
            node.has_tag_name("rect") && node.children().any(|c| c.has_tag_name("title"))
        })
        .count();
    // One rectangle per activation: the input and every node output.
    assert_eq!(tensors, 1 + graph.nodes.len());
    assert!(timeline.contains("lower bound"));
}

/// Conv, batch norm and ReLU in one group, as a fusion pass would group them.
fn conv_bn_relu_groups(graph: &Graph) -> FusionGroups {
    let mut group_of = SecondaryMap::with_default(graph.nodes.len(), 0);
    let mut group = 0;
    for (node, data) in graph.nodes.iter() {
        let starts_group = !matches!(data.op.name(), "batch_norm" | "relu") || node.index() == 0;
        if starts_group && node.index() > 0 {
            group += 1;
        }
        group_of[node] = group;
    }
    FusionGroups { group_of }
}

#[test]
fn the_graph_boxes_fused_groups() {
    let graph = example("resnet18.nn");
    let groups = conv_bn_relu_groups(&graph);
    let fused = groups.fused(&graph);
    assert!(!fused.is_empty());

    let dot = graph_view::to_dot(&graph, &groups);
    assert!(dot.starts_with("digraph \"resnet18\" {"));
    assert_eq!(dot.matches("subgraph cluster_group_").count(), fused.len());
    // Every non-weight input of every node is an edge, plus one per network output.
    assert!(dot.contains("v0 -> v1;"));

    let svg = graph_view::to_svg(&graph, &groups);
    // Left for a person to look at: `rsvg-convert` or `dot -Tsvg` turn them into pictures.
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::write(scratch.join("resnet18-grouped.svg"), &svg).unwrap();
    std::fs::write(scratch.join("resnet18-grouped.dot"), &dot).unwrap();
    let document = roxmltree::Document::parse(&svg).expect("the graph parses as XML");
    let group_boxes = document
        .descendants()
        .filter(|node| {
            node.has_tag_name("title")
                && node
                    .text()
                    .is_some_and(|text| text.starts_with("fused group "))
        })
        .count();
    assert_eq!(group_boxes, fused.len());
    let vertices = document
        .descendants()
        .filter(|node| {
            node.has_tag_name("title") && node.text().is_some_and(|text| text.contains(" — "))
        })
        .count();
    assert_eq!(
        vertices,
        graph.inputs.len() + graph.nodes.len() + graph.outputs.len()
    );

    let report = report::build(
        &graph,
        &codegen::plan(&graph),
        &ReportOptions {
            groups: Some(groups),
        },
    );
    assert_eq!(
        report.totals.groups,
        fused.len() + {
            // Singleton groups: nodes outside every fused group.
            let in_fused: usize = fused.iter().map(|(_, members)| members.len()).sum();
            report.layers.len() - in_fused
        }
    );
}
