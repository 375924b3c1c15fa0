//! Layout choice: regions of 2-D convolutions that contain depthwise convolutions run
//! channels-last (NHWC), with explicit transposes where values enter and leave the region.
//!
//! A depthwise convolution over NCHW images walks one plane at a time and cannot vectorise
//! across channels; with a stride it reads every other element (about 0.7 GFLOP/s). Over NHWC
//! images every tap is one contiguous multiply-add across all channels, whatever the stride, and a
//! 1×1 convolution is a single GEMM `[n * h * w, in] x [in, out]`. Changing the layout costs a
//! transpose, so it pays over a region of several layers, not around one.
//!
//! # What it rewrites
//!
//! A node can be in a region if it has a fast channels-last form: a 2-D convolution that is
//! depthwise (`groups` = in = out channels), pointwise (1×1, unit stride, no padding, no
//! groups), int8 (any kernel) or ungrouped on a small output plane (see below), with its fused
//! residual if it has one, an elementwise op (activation, affine,
//! elementwise chain) on a 4-D value, a binary op whose two operands and output all have the
//! same 4-D shape (no broadcasting), or a 2-D or global pooling of a 4-D value. Regions are the
//! connected components of such nodes, joined where one's output feeds another. A global pooling
//! ends its region: its output `[n, c, 1, 1]` is the same memory in both layouts, so it leaves
//! the region without a transpose (and does not join the region of a reader). A region switches
//! to channels-last when it pays by this rule:
//!
//! - it contains a depthwise convolution, and its depthwise multiply-adds are at least
//!   [`MACS_PER_TRANSPOSED_ELEMENT`] times the number of elements the transposes at its boundary
//!   move; or
//! - its int8 convolutions (`--quantize int8`, any kernel: the int8 kernel is channels-last
//!   inside, and over NCHW images transposes its input and output itself) move more elements in
//!   those transposes than the region's boundary does. A quantized ResNet-18 becomes one region,
//!   transposed once at the input; or
//! - its ungrouped convolutions on small planes (at most [`SMALL_PLANE_PIXELS`] output pixels
//!   per image, and not a layer the NCHW kernel runs as Winograd) have at least
//!   [`SMALL_PLANE_MACS_PER_TRANSPOSED_ELEMENT`] multiply-adds per element its boundary
//!   transposes. ResNet-18's last stage (7x7 images, 512 channels) becomes one region, transposed
//!   once where it starts; its global pooling ends it.
//!
//! A switched region's convolutions and poolings get `channels_last`, and its values (but global
//! poolings' outputs) become `[n, h, w, c]`. An
//! activation from outside gets a `transpose(perm = [0, 2, 3, 1])` before its first reader in the
//! region; a region value read outside (or a network output) gets a
//! `transpose(perm = [0, 3, 1, 2])` before its first reader outside. Each value is transposed at
//! most once each way.
//!
//! A value that enters a region is not transposed where its producer is an ungrouped 2-D
//! convolution (f32, without a residual) that the runtime computes from its NCHW input straight
//! into a channels-last output (`Conv2dOptions::reads_nchw_into_channels_last`), and whose every
//! reader is in a switched region and reads it as an activation: that convolution gets
//! `channels_last` and `nchw_input` instead. MobileNetV2's stem (3x3 over the 3-channel image)
//! so writes the first region's input itself; its output was 1.6 MB to transpose.
//!
//! # Why it is legal
//!
//! A channels-last convolution (or pooling) computes the NCHW convolution of the transposed input,
//! transposed (one that reads NCHW, the NCHW convolution of its input, transposed); a
//! channels-last global pooling computes the NCHW one's very values, since the transpose of `[n,
//! 1, 1, c]` is a reshape; elementwise and same-shape binary ops commute with any permutation of
//! the axes. Every edge that crosses the region boundary gets the transpose that undoes the
//! layout change, so every value read outside the region, network outputs included, is exactly
//! the value of the original graph.
//! No weight changes: the kernel repacks the weight when the model is built.
//!
//! Other ungrouped convolutions stay out of regions although the runtime has a channels-last
//! form for them: its im2col copies one pixel's channels at a time, and on MobileNetV2's stem
//! (3 input channels) it measured 2.5 ms against 1.4 ms for NCHW, more than the 0.4 ms transpose
//! it would save. On a small plane it is the other way round: NCHW runs the plane's pixels as
//! the GEMM's columns, in panels of 16, so 49 pixels fill four panels (64 columns), while
//! channels-last runs them as rows and the channels as columns.

use std::collections::HashMap;

use crate::diagnostics::Span;
use crate::ir::{
    Arena, Graph, Node, NodeData, Op, SecondaryMap, TensorType, Value, ValueData, ValueDef, infer,
};

/// The threshold of the cost rule, from `cargo bench -p nnc-runtime --bench conv_layout` on a
/// 2-core AVX2 machine: a layout change moves about 1.1 G elements/s (0.9 ns per element), and a
/// channels-last 3×3 depthwise convolution saves 0.03–0.17 ns per multiply-add at stride 1 and
/// 0.8–2.2 ns at stride 2 over NCHW. At stride 1 that breaks even around 5–30 multiply-adds per
/// transposed element; 8 lets regions with strided layers through and keeps a lone depthwise
/// layer (9 multiply-adds per output against 2 or more transposed elements) NCHW.
pub const MACS_PER_TRANSPOSED_ELEMENT: u64 = 8;

/// The largest output plane (pixels per image) on which an ungrouped convolution may join a
/// region: up to four panels of the NCHW GEMM's 16 columns.
pub const SMALL_PLANE_PIXELS: usize = 64;

/// The threshold of the small-plane rule. On Sapphire Rapids (AVX-512, one thread,
/// `int8_conv_timing`'s f32 columns) ResNet-18's 3x3 512-channel layer on 7x7 images took
/// 1627 µs channels-last against 2057 µs NCHW: 3.7 ps saved per multiply-add, against about
/// 0.9 ns per transposed element, a break-even near 240 multiply-adds per element. Its last
/// stage has about 9,400 (469 M multiply-adds, 50,176 elements transposed at its start), and
/// runs 3% faster at one thread and 7% at two (`nnc bench`, 25.26 -> 24.43 ms and 14.53 ->
/// 13.52 ms).
pub const SMALL_PLANE_MACS_PER_TRANSPOSED_ELEMENT: u64 = 256;

/// Switches the regions that pay to channels-last; returns whether any was switched.
pub fn run(graph: &mut Graph) -> bool {
    let region_of = regions(graph);
    let switched = regions_that_pay(graph, &region_of);
    if switched.iter().all(|&switch| !switch) {
        return false;
    }
    let in_switched = |node: Node| region_of[node].is_some_and(|region: usize| switched[region]);
    let changes_layout = layout_changing_convs(graph, &in_switched);
    rewrite(graph, &in_switched, &|node| changes_layout[node]);
    true
}

/// The convolutions left NCHW that write a channels-last output for their readers instead of
/// having it transposed: ungrouped 2-D f32 ones, without a residual, that the runtime computes
/// that way in one pass (`Conv2dOptions::reads_nchw_into_channels_last`), whose every reader is
/// in a switched region and reads the output as an activation, and whose output is no network
/// output. MobileNetV2's stem is one: its 3-channel NCHW image in, its 32 channels out
/// channels-last for the first depthwise layer.
fn layout_changing_convs(
    graph: &Graph,
    in_switched: &dyn Fn(Node) -> bool,
) -> SecondaryMap<Node, bool> {
    let mut changes = SecondaryMap::with_default(graph.nodes.len(), false);
    // Whether each value is read only by switched nodes, as an activation.
    let mut read_channels_last: HashMap<Value, bool> = HashMap::new();
    for (node, data) in graph.nodes.iter() {
        let activations = if in_switched(node) {
            activation_inputs(graph, data).unwrap_or_default()
        } else {
            Vec::new()
        };
        for (position, &input) in data.inputs.iter().enumerate() {
            let reads = read_channels_last.entry(input).or_insert(true);
            *reads &= activations.contains(&position);
        }
    }
    for output in &graph.outputs {
        read_channels_last.insert(output.value, false);
    }
    for (node, data) in graph.nodes.iter() {
        let Op::Conv(attrs) = &data.op else {
            continue;
        };
        let (Some(options), Some(weight_shape)) =
            (attrs.conv2d_options(), weight_shape(graph, data))
        else {
            continue;
        };
        changes[node] = !in_switched(node)
            && !attrs.channels_last
            && data.residual_input().is_none()
            && !graph.is_int8_conv(data)
            && options.reads_nchw_into_channels_last(weight_shape)
            && read_channels_last.get(&data.outputs[0]) == Some(&true);
    }
    changes
}

/// Whether `node` can join a region (it has a fast channels-last form for its shapes, and is not
/// channels-last already), and which of its inputs are activations (the rest are weights).
fn activation_inputs(graph: &Graph, data: &NodeData) -> Option<Vec<usize>> {
    if !data.op.has_channels_last_form() {
        return None;
    }
    let rank_four = |value: Value| graph.ty(value).rank() == 4;
    if let Op::MaxPool(attrs) | Op::AvgPool(attrs) = &data.op {
        return (!attrs.channels_last && rank_four(data.inputs[0])).then(|| vec![0]);
    }
    if let Op::GlobalAvgPool { channels_last } | Op::GlobalMaxPool { channels_last } = &data.op {
        return (!channels_last && rank_four(data.inputs[0])).then(|| vec![0]);
    }
    if data.op.is_elementwise() {
        // Elementwise ops commute with the permutation when no operand broadcasts: every
        // operand has the output's 4-D shape (a unary op's one operand always has).
        let output = graph.ty(data.outputs[0]);
        let same = |value: Value| output.rank() == 4 && graph.ty(value).shape == output.shape;
        return data
            .inputs
            .iter()
            .all(|&input| same(input))
            .then(|| (0..data.inputs.len()).collect());
    }
    let Op::Conv(attrs) = &data.op else {
        unreachable!(
            "choose_layout: only convolutions, poolings and elementwise ops have a channels-last form"
        )
    };
    if attrs.channels_last {
        return None;
    }
    let weight = graph.ty(data.inputs[1]);
    let (out_channels, group_in_channels) = (weight.shape[0], weight.shape[1]);
    let depthwise = group_in_channels == 1 && attrs.groups == out_channels;
    let pointwise = attrs.groups == 1
        && attrs.kernel == [1, 1]
        && attrs.stride == [1, 1]
        && attrs.padding == [0, 0];
    // A fused residual (the last input) has the output's layout, so it is an activation of the
    // region too.
    let residual = data.residual_input().map(|_| data.inputs.len() - 1);
    (depthwise || pointwise || graph.is_int8_conv(data) || is_small_plane_conv(graph, data))
        .then(|| std::iter::once(0).chain(residual).collect())
}

/// Whether a node of a switched region writes a channels-last output: all but global poolings,
/// whose `[n, c, 1, 1]` output is the same memory in both layouts and leaves the region as is.
fn writes_channels_last(op: &Op) -> bool {
    !matches!(op, Op::GlobalAvgPool { .. } | Op::GlobalMaxPool { .. })
}

/// Whether `data` is an ungrouped 2-D convolution with at most [`SMALL_PLANE_PIXELS`] output
/// pixels per image that the NCHW kernel would not run as Winograd (which beats the
/// channels-last im2col on the planes it takes).
fn is_small_plane_conv(graph: &Graph, data: &NodeData) -> bool {
    let Op::Conv(attrs) = &data.op else {
        return false;
    };
    let output = graph.ty(data.outputs[0]);
    let (Some(options), Some(weight_shape)) = (attrs.conv2d_options(), weight_shape(graph, data))
    else {
        return false;
    };
    if attrs.groups != 1 || output.rank() != 4 {
        return false;
    }
    // An NCHW output's plane is its last two axes.
    output.shape[2].saturating_mul(output.shape[3]) <= SMALL_PLANE_PIXELS
        && !options.prefers_winograd(weight_shape)
}

/// The `[out, in / groups, kh, kw]` shape of a 2-D convolution's weight.
fn weight_shape(graph: &Graph, data: &NodeData) -> Option<[usize; 4]> {
    graph.ty(data.inputs[1]).shape.as_slice().try_into().ok()
}

/// A convolution's multiply-adds: each output element takes `in / groups * kh * kw` (the
/// window, for a depthwise one).
fn conv_macs(graph: &Graph, data: &NodeData) -> u64 {
    let taps: u64 = graph.ty(data.inputs[1]).shape[1..]
        .iter()
        .map(|&dim| dim as u64)
        .product();
    graph
        .ty(data.outputs[0])
        .element_count()
        .saturating_mul(taps)
}

fn is_depthwise(graph: &Graph, data: &NodeData) -> bool {
    matches!(&data.op, Op::Conv(attrs) if graph.ty(data.inputs[1]).shape[1] == 1 && attrs.groups > 1)
}

/// The region of every node that has a channels-last form: connected components, numbered
/// densely.
fn regions(graph: &Graph) -> SecondaryMap<Node, Option<usize>> {
    let count = graph.nodes.len();
    let mut parent: Vec<usize> = (0..count).collect();
    fn root(parent: &mut [usize], mut node: usize) -> usize {
        while parent[node] != node {
            parent[node] = parent[parent[node]];
            node = parent[node];
        }
        node
    }
    let mut candidate = vec![false; count];
    for (node, data) in graph.nodes.iter() {
        let Some(activations) = activation_inputs(graph, data) else {
            continue;
        };
        candidate[node.index()] = true;
        for position in activations {
            if let Some(producer) = graph.producer(data.inputs[position])
                && candidate[producer.index()]
                && writes_channels_last(&graph.nodes[producer].op)
            {
                let (a, b) = (
                    root(&mut parent, producer.index()),
                    root(&mut parent, node.index()),
                );
                parent[a] = b;
            }
        }
    }
    let mut region_of = SecondaryMap::with_default(count, None);
    let mut numbers = HashMap::new();
    for node in graph.nodes.handles() {
        if candidate[node.index()] {
            let next = numbers.len();
            let root = root(&mut parent, node.index());
            region_of[node] = Some(*numbers.entry(root).or_insert(next));
        }
    }
    region_of
}

/// Which regions pay for their transposes, by the rule in the header.
fn regions_that_pay(graph: &Graph, region_of: &SecondaryMap<Node, Option<usize>>) -> Vec<bool> {
    let region_count = graph
        .nodes
        .handles()
        .filter_map(|node| region_of[node])
        .max()
        .map_or(0, |last| last + 1);
    let mut depthwise_macs = vec![0u64; region_count];
    let mut int8_transposes_saved = vec![0u64; region_count];
    let mut small_plane_macs = vec![0u64; region_count];
    let mut transposed = vec![0u64; region_count];
    let mut entering: Vec<(usize, Value)> = Vec::new();
    let mut leaving: Vec<(usize, Value)> = Vec::new();
    let region_of_value = |value: Value| {
        graph
            .producer(value)
            .filter(|&node| writes_channels_last(&graph.nodes[node].op))
            .and_then(|node| region_of[node])
    };
    for (node, data) in graph.nodes.iter() {
        let Some(region) = region_of[node] else {
            for &input in &data.inputs {
                if let Some(producer_region) = region_of_value(input) {
                    leaving.push((producer_region, input));
                }
            }
            continue;
        };
        if is_depthwise(graph, data) {
            depthwise_macs[region] += conv_macs(graph, data);
        }
        if is_small_plane_conv(graph, data) {
            small_plane_macs[region] += conv_macs(graph, data);
        }
        if graph.is_int8_conv(data) {
            int8_transposes_saved[region] += graph.ty(data.inputs[0]).element_count()
                + graph.ty(data.outputs[0]).element_count();
        }
        for position in activation_inputs(graph, data).unwrap_or_default() {
            let input = data.inputs[position];
            if region_of_value(input) != Some(region) {
                entering.push((region, input));
            }
        }
    }
    for output in &graph.outputs {
        if let Some(region) = region_of_value(output.value) {
            leaving.push((region, output.value));
        }
    }
    for list in [&mut entering, &mut leaving] {
        list.sort_unstable();
        list.dedup();
        for &(region, value) in list.iter() {
            transposed[region] += graph.ty(value).element_count();
        }
    }
    (0..region_count)
        .map(|region| {
            let depthwise_pays = depthwise_macs[region] > 0
                && depthwise_macs[region]
                    >= MACS_PER_TRANSPOSED_ELEMENT.saturating_mul(transposed[region]);
            let int8_pays = int8_transposes_saved[region] > transposed[region];
            let small_planes_pay = small_plane_macs[region] > 0
                && small_plane_macs[region]
                    >= SMALL_PLANE_MACS_PER_TRANSPOSED_ELEMENT.saturating_mul(transposed[region]);
            depthwise_pays || int8_pays || small_planes_pay
        })
        .collect()
}

/// Rebuilds the graph with the switched nodes channels-last and transposes on the boundary, but
/// where a convolution outside writes a channels-last output (`changes_layout`).
fn rewrite(
    graph: &mut Graph,
    in_switched: &dyn Fn(Node) -> bool,
    changes_layout: &dyn Fn(Node) -> bool,
) {
    let old = std::mem::take(graph);
    *graph = Graph {
        name: old.name.clone(),
        dims: old.dims.clone(),
        params: old.params.clone(),
        inputs: old.inputs.clone(),
        outputs: old.outputs.clone(),
        values: Arena::new(),
        nodes: Arena::new(),
        spans: SecondaryMap::with_default(0, Span::default()),
    };
    // New handles of the old values; channels-last values map to their NHWC form.
    let mut map: Vec<Option<Value>> = vec![None; old.values.len()];
    for (value, data) in old.values.iter() {
        if !matches!(data.def, ValueDef::Node { .. }) {
            map[value.index()] = Some(graph.values.push(data.clone()));
        }
    }
    let is_nhwc = |value: Value| {
        old.producer(value).is_some_and(|node| {
            (in_switched(node) && writes_channels_last(&old.nodes[node].op)) || changes_layout(node)
        })
    };
    let mut to_nhwc: HashMap<Value, Value> = HashMap::new();
    let mut to_nchw: HashMap<Value, Value> = HashMap::new();
    for (node, data) in old.nodes.iter() {
        let switched = in_switched(node);
        let activations = if switched {
            activation_inputs(&old, data).expect("switched nodes have a channels-last form")
        } else {
            Vec::new()
        };
        let mut inputs = Vec::with_capacity(data.inputs.len());
        for (position, &input) in data.inputs.iter().enumerate() {
            let mapped = map[input.index()].expect("inputs are defined before use");
            let new_input = match (switched && activations.contains(&position), is_nhwc(input)) {
                (true, false) => transpose_once(
                    graph,
                    &mut to_nhwc,
                    mapped,
                    [0, 2, 3, 1],
                    "to_channels_last",
                ),
                (false, true) => transpose_once(
                    graph,
                    &mut to_nchw,
                    mapped,
                    [0, 3, 1, 2],
                    "to_channels_first",
                ),
                _ => mapped,
            };
            inputs.push(new_input);
        }
        let mut op = data.op.clone();
        if switched {
            op.set_channels_last();
        }
        if changes_layout(node) {
            let Op::Conv(attrs) = &mut op else {
                unreachable!("choose_layout: only convolutions change the layout")
            };
            attrs.channels_last = true;
            attrs.nchw_input = true;
        }
        let span = old.spans.get(node).copied().unwrap_or_default();
        let outputs = push_node(
            graph,
            op,
            inputs,
            data.name.clone(),
            data.origin.clone(),
            span,
        );
        for (&old_output, new_output) in data.outputs.iter().zip(outputs) {
            map[old_output.index()] = Some(new_output);
        }
    }
    let remap = |value: Value| map[value.index()].expect("kept values are remapped");
    for index in 0..graph.params.len() {
        let param = &mut graph.params[crate::ir::Param::from_index(index)];
        param.value = remap(param.value);
    }
    for input in &mut graph.inputs {
        input.value = remap(input.value);
    }
    for index in 0..graph.outputs.len() {
        let value = graph.outputs[index].value;
        let mapped = remap(value);
        graph.outputs[index].value = if is_nhwc(value) {
            transpose_once(
                graph,
                &mut to_nchw,
                mapped,
                [0, 3, 1, 2],
                "to_channels_first",
            )
        } else {
            mapped
        };
    }
}

/// The transpose of `value` by `perm`, made on first use and cached.
fn transpose_once(
    graph: &mut Graph,
    cache: &mut HashMap<Value, Value>,
    value: Value,
    perm: [usize; 4],
    name: &str,
) -> Value {
    *cache.entry(value).or_insert_with(|| {
        let op = Op::Transpose {
            perm: perm.to_vec(),
        };
        push_node(
            graph,
            op,
            vec![value],
            name.to_string(),
            Vec::new(),
            Span::default(),
        )[0]
    })
}

/// Appends a node with inferred output types, keeping its name, origin and span.
fn push_node(
    graph: &mut Graph,
    op: Op,
    inputs: Vec<Value>,
    name: String,
    origin: Vec<usize>,
    span: Span,
) -> Vec<Value> {
    let input_types: Vec<&TensorType> = inputs.iter().map(|&input| graph.ty(input)).collect();
    let output_types = infer::infer(&op, &input_types)
        .unwrap_or_else(|error| panic!("choose_layout: {name} does not infer: {}", error.message));
    let node = Node::from_index(graph.nodes.len());
    let outputs: Vec<Value> = output_types
        .into_iter()
        .enumerate()
        .map(|(position, ty)| {
            graph.values.push(ValueData {
                ty,
                def: ValueDef::Node { node, position },
            })
        })
        .collect();
    graph.nodes.push(NodeData {
        op,
        inputs,
        outputs: outputs.clone(),
        name,
        origin,
    });
    graph.spans.insert(node, span, Span::default());
    outputs
}
