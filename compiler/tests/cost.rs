//! The cost model against published figures and against its own conventions
//! (docs/cost-model.md).

use std::path::{Path, PathBuf};

use nnc_compiler::codegen;
use nnc_compiler::cost::{self, kept_pairs};
use nnc_compiler::ir::{Graph, Op, SparsePattern};
use nnc_compiler::{FrontendOptions, compile_to_ir};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn graph_from(path: &Path) -> Graph {
    let source = std::fs::read_to_string(path).unwrap();
    let module = compile_to_ir(&source, &FrontendOptions::default())
        .unwrap_or_else(|errors| panic!("{}: {errors:?}", path.display()));
    module.networks.into_iter().next().unwrap()
}

fn example(name: &str) -> Graph {
    graph_from(&workspace().join("examples").join(name))
}

fn test_model(name: &str) -> Graph {
    graph_from(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/models")
            .join(name),
    )
}

fn graph_of(source: &str) -> Graph {
    compile_to_ir(source, &FrontendOptions::default())
        .unwrap()
        .networks
        .remove(0)
}

fn totals(graph: &Graph) -> cost::CostTotals {
    cost::analyze(graph).totals(graph)
}

fn assert_within(actual: u64, published: f64, tolerance: f64, what: &str) {
    let error = (actual as f64 - published).abs() / published;
    assert!(
        error <= tolerance,
        "{what}: {actual} is {:.2}% from the published {published}",
        error * 100.0
    );
}

#[test]
fn resnet18_has_the_published_parameters_and_macs() {
    let totals = totals(&example("resnet18.nn"));
    assert_eq!(totals.parameters, 11_689_512);
    // torchvision and ptflops: 1.82 GMACs; fvcore counts 1.814 G for the convolutions and fc.
    assert_within(totals.macs, 1.82e9, 0.02, "ResNet-18 MACs");
    assert_eq!(totals.macs, 1_814_073_344);
    assert_eq!(totals.buffers, 9_600);
}

#[test]
fn mobilenet_v2_has_the_published_parameters_and_macs() {
    let totals = totals(&example("mobilenet_v2.nn"));
    assert_eq!(totals.parameters, 3_504_872);
    // The paper's Table 4: 300 M multiply-adds; torchvision lists 0.301 GFLOPS (its MACs).
    assert_within(totals.macs, 300.8e6, 0.02, "MobileNetV2 MACs");
    assert_eq!(totals.macs, 300_774_272);
}

#[test]
fn bert_base_has_110m_parameters() {
    let graph = test_model("bert_base.nn");
    let totals = totals(&graph);
    // bert-base-uncased's BertModel, pooler included.
    assert_eq!(totals.parameters, 109_482_240);
    assert_within(totals.parameters, 110e6, 0.01, "BERT-base parameters");
    // At 128 tokens: 12 layers of 4·768² + 2·768·3072 MACs per token, the attention products
    // (2 · 128² · 768 per layer), and the pooler.
    let per_layer = 128 * (4 * 768 * 768 + 2 * 768 * 3072) + 2 * 128 * 128 * 768;
    assert_eq!(totals.macs, 12 * per_layer + 768 * 768);
    assert!(cost::kv_cache(&graph).is_none());
}

#[test]
fn gpt2_small_has_124m_parameters_and_a_kv_cache() {
    let graph = test_model("gpt2_small.nn");
    let totals = totals(&graph);
    assert_eq!(totals.parameters, 124_439_808);
    assert_within(totals.parameters, 124e6, 0.01, "GPT-2 small parameters");
    let cache = cost::kv_cache(&graph).unwrap();
    // Keys and values of 768 floats per token in each of the 12 layers.
    assert_eq!(cache.cached_layers, 12);
    assert_eq!(cache.bytes_per_token, 12 * 2 * 768 * 4);
    assert_eq!(cache.max_context, 1024);
    assert_eq!(cache.bytes_at_max_context, 12 * 2 * 768 * 4 * 1024);
}

#[test]
fn causal_attention_counts_the_kept_half() {
    let graph = test_model("gpt2_small.nn");
    let costs = cost::analyze(&graph);
    let (node, _) = graph
        .nodes
        .iter()
        .find(|(_, data)| matches!(data.op, Op::Attention(_)))
        .unwrap();
    let pairs = 1024 * 1025 / 2;
    // QKᵀ and AV, 64 MACs per kept pair each, in each of 12 heads.
    assert_eq!(costs.nodes[node].macs, 12 * pairs * 64 * 2);
    // Scale and softmax: 6 FLOPs per kept score.
    assert_eq!(
        costs.nodes[node].flops,
        2 * 12 * pairs * 64 * 2 + 6 * 12 * pairs
    );
}

#[test]
fn sparse_attention_counts_exactly_the_pairs_the_pattern_allows() {
    let graph = example("longformer.nn");
    let costs = cost::analyze(&graph);
    for (node, data) in graph.nodes.iter() {
        let Op::Attention(attrs) = &data.op else {
            continue;
        };
        let sequence = graph.ty(data.inputs[0]).shape[1];
        let mut brute_force = 0u64;
        for query in 0..sequence {
            for key in 0..sequence {
                brute_force += u64::from(attrs.pattern.allows(query, key));
            }
        }
        // Window 128 each side (255 keys, fewer at the edges) plus the global token.
        assert!(brute_force < (sequence * sequence) as u64 / 3);
        let expected = brute_force * attrs.heads as u64 * attrs.head_dim as u64 * 2;
        assert_eq!(costs.nodes[node].macs, expected, "{}", data.name);
    }
}

#[test]
fn pair_counts_scale_to_long_sequences() {
    let pattern = SparsePattern {
        window: Some(512),
        dilation: 1,
        global_tokens: vec![0, 1, 2, 3],
        ..SparsePattern::default()
    };
    let started = std::time::Instant::now();
    let pairs = kept_pairs(&pattern, true, 8192, 8192);
    assert!(started.elapsed().as_secs_f64() < 5.0);
    // Causal: row i keeps its last min(i + 1, 512) keys, plus any of the 4 global tokens the
    // window misses; rows 0..=3 are global and keep everything up to themselves.
    let mut expected = 0u64;
    for row in 0..8192u64 {
        let window = (row + 1).min(512);
        let globals_outside = if row < 4 {
            0
        } else {
            (0..4).filter(|&global| row - global >= 512).count() as u64
        };
        expected += window + globals_outside;
    }
    assert_eq!(pairs, expected);
}

#[test]
fn convolutions_count_per_group() {
    let graph = graph_of(
        "network convs(x: f32[1, 32, 16, 16]) -> (y) {
            d = conv2d(x, 32, kernel = 3, padding = 1, groups = 32, bias = false) as depthwise
            p = conv2d(d, 64, kernel = 1) as pointwise
            g = conv2d(p, 64, kernel = 3, padding = 1, groups = 4, bias = false) as grouped
            y = max_pool2d(g, kernel = 2)
        }",
    );
    let costs = cost::analyze(&graph);
    let macs: Vec<u64> = graph
        .nodes
        .handles()
        .map(|node| costs.nodes[node].macs)
        .collect();
    let positions = 16 * 16;
    assert_eq!(
        macs[0],
        32 * positions * 9,
        "depthwise: one channel per output"
    );
    assert_eq!(
        macs[1],
        64 * positions * 32,
        "pointwise: every input channel"
    );
    assert_eq!(
        macs[2],
        64 * positions * (64 / 4) * 9,
        "grouped: in / groups channels"
    );
    assert_eq!(macs[3], 0, "pooling has no MACs");
    let flops: Vec<u64> = graph
        .nodes
        .handles()
        .map(|node| costs.nodes[node].flops)
        .collect();
    assert_eq!(
        flops[1],
        2 * macs[1] + 64 * positions,
        "the bias adds one FLOP per output"
    );
    assert_eq!(
        flops[3],
        64 * 8 * 8 * 4,
        "one comparison per window element"
    );
}

#[test]
fn elementwise_ops_count_flops_per_element() {
    let graph = graph_of(
        "network ops(x: f32[2, 10]) -> (y) {
            a = relu(x)
            b = gelu(a, approximate = \"tanh\")
            c = softmax(b)
            d = layer_norm(c) as norm
            e = d * 0.5
            y = e + x
        }",
    );
    let costs = cost::analyze(&graph);
    let flops: Vec<u64> = graph
        .nodes
        .handles()
        .map(|node| costs.nodes[node].flops)
        .collect();
    assert_eq!(flops, [20, 9 * 20, 5 * 20, 7 * 20, 20, 20]);
    assert!(
        graph
            .nodes
            .handles()
            .all(|node| costs.nodes[node].macs == 0)
    );
}

#[test]
fn every_example_has_consistent_totals_and_memory_figures() {
    let examples = nnc_test_support::examples();
    assert!(examples.len() >= 8);
    for example in examples {
        let path = &example.path;
        let graph = graph_from(path);
        let costs = cost::analyze(&graph);
        let totals = costs.totals(&graph);
        assert_eq!(
            totals.parameters,
            graph.parameter_count(),
            "{}",
            path.display()
        );
        assert_eq!(totals.buffers, graph.buffer_count(), "{}", path.display());
        assert!(totals.flops >= 2 * totals.macs);
        let plan = codegen::plan(&graph);
        let memory = cost::memory_figures(&graph, &plan);
        assert!(
            memory.lower_bound_bytes <= memory.planned_bytes
                && memory.planned_bytes <= memory.naive_bytes,
            "{}: {memory:?}",
            path.display()
        );
        assert_eq!(memory.live_bytes.len(), graph.nodes.len() + 2);
        assert_eq!(
            memory.live_bytes[memory.lower_bound_step],
            memory.lower_bound_bytes
        );
    }
}

#[test]
fn llama_kv_cache_follows_grouped_query_heads() {
    let cache = cost::kv_cache(&example("llama_decoder.nn")).unwrap();
    // 30 layers, 3 key/value heads of 64: keys and values, 4 bytes each.
    assert_eq!(cache.bytes_per_token, 30 * 2 * 3 * 64 * 4);
    assert_eq!(cache.bytes_at_max_context, 30 * 2 * 3 * 64 * 4 * 2048);
}

#[test]
fn tied_weights_are_counted_once() {
    let graph = example("tiny_gpt.nn");
    let costs = cost::analyze(&graph);
    let (head, _) = graph
        .nodes
        .iter()
        .find(|(_, data)| data.name == "lm_head")
        .unwrap();
    assert_eq!(costs.nodes[head].parameters, 0);
    assert_eq!(costs.nodes[head].tied_parameters, 512 * 128);
}

/// With `--quantize`, the model size counts quantized linear weights in their block format
/// (Q4_1: 20 bytes per 32 values), a tied table once quantized for the head (in Q8_0) and once
/// in f32 for the embedding that reads it, and everything else in f32.
#[test]
fn model_size_counts_quantized_weights_in_their_format() {
    let source = "network tied(ids: i64[1, 4]) -> (logits: f32[1, 4, 100]) {\n\
        h = embedding(ids, 100, 64) as embed\n\
        h = linear(h, 64, bias = false) as proj\n\
        h = linear(h, 48) as narrow\n\
        h = linear(h, 64) as widen\n\
        logits = linear(h, 100, bias = false, tied = \"embed\") as head\n\
    }\n";
    let graph = |quantize| {
        compile_to_ir(
            source,
            &FrontendOptions {
                quantize,
                ..Default::default()
            },
        )
        .unwrap()
        .networks
        .remove(0)
    };
    let plain = graph(None);
    let quantized = graph(Some(nnc_compiler::ir::Quantization {
        format: nnc_compiler::QuantFormat::Q4_1.into(),
        mode: nnc_compiler::QuantizedMode::Exact,
    }));
    let bytes = |graph: &Graph| cost::analyze(graph).totals(graph).weight_bytes;
    let f32_bytes = 4 * (100 * 64 + 64 * 64 + 48 * 64 + 48 + 64 * 48 + 64);
    assert_eq!(bytes(&plain), f32_bytes);
    // The table twice (f32 for the embedding, Q8_0 for the tied head); proj and narrow in Q4_1
    // (rows of 64); widen in f32 (rows of 48 are not whole blocks); the biases in f32.
    let q4_1 = |elements: u64| elements / 32 * 20;
    let q8_0 = |elements: u64| elements / 32 * 34;
    let expected =
        4 * 100 * 64 + q8_0(100 * 64) + q4_1(64 * 64) + q4_1(48 * 64) + 4 * 48 + 4 * (64 * 48 + 64);
    assert_eq!(bytes(&quantized), expected);
}

/// F16 weights take two bytes a value and multiply in floats: a layer asked for the fast mode in
/// F16 is marked exact, so its multiply-adds count as float ones.
#[test]
fn f16_weights_are_two_bytes_and_multiply_in_floats() {
    let source = "network half(x: f32[1, 64]) -> (y: f32[1, 32]) {\n\
        y = linear(x, 32, bias = false) as fc\n\
    }\n";
    let graph = compile_to_ir(
        source,
        &FrontendOptions {
            quantize: Some(nnc_compiler::ir::Quantization {
                format: nnc_compiler::QuantFormat::F16.into(),
                mode: nnc_compiler::QuantizedMode::Fast,
            }),
            ..Default::default()
        },
    )
    .unwrap()
    .networks
    .remove(0);
    let (_, param) = graph.params.iter().next().unwrap();
    assert_eq!(
        param.storage,
        nnc_compiler::ir::WeightStorage::Quantized(nnc_compiler::ir::Quantization {
            format: nnc_compiler::QuantFormat::F16.into(),
            mode: nnc_compiler::QuantizedMode::Exact,
        })
    );
    let totals = cost::analyze(&graph).totals(&graph);
    assert_eq!(totals.weight_bytes, 2 * 64 * 32);
}
