//! Marks the weights that `LowerOptions::quantize` quantizes: the weight of every linear layer
//! whose input rows are whole blocks of the format. Nothing is quantized here; the mark
//! (`ParamData::storage`) travels through the passes to the layer's preparation (generated
//! `from_weights`, the interpreter), which takes a GGUF tensor's blocks as they are when the file
//! stores it in a block format the kernels run, and quantizes any other loaded weight (or, for
//! `QuantTarget::AsStored`, keeps it in f32).
//!
//! A layer's own `quantize =` argument (`ParamData::layer_quantize`, set by the built-ins)
//! overrides `--quantize` for its weight: `false` keeps it f32, a format picks that format (in
//! `--quantize-mode`'s mode, exact without it), even when nothing else is quantized.
//!
//! A linear layer with another row length keeps f32 weights: a block format cannot hold a
//! partial block. A weight that other operations also read as a tensor (a tied embedding table)
//! is quantized for its linear layers; an embedding then looks its rows up in the same blocks,
//! dequantizing only those rows (`ir::Graph::is_stored_table`), and any other operation keeps
//! reading it in f32. Such a
//! table is quantized to Q8_0 whatever the format asked for, as llama.cpp's quantizers keep the
//! token table of 4-bit models in 8 bits: as the tied head it decides every logit, and 4 bits
//! there cost far more accuracy than in any one layer (SmolLM2-135M: see docs/weights.md).

use crate::calibration::{Calibration, is_int8_conv};
use crate::ir::{
    Graph, Int8Conv, LayerQuantize, Op, QuantTarget, Quantization, SecondaryMap, ValueDef,
    WeightStorage,
};
use nnc_ops::quant::{BLOCK_LENGTH, QuantFormat, QuantizedMode};

/// Marks the weights of `graph`'s linear layers for `quantization` (`--quantize`, if given) and
/// for their layers' own `quantize =` arguments; returns how many it marked.
pub(super) fn quantize_linear_weights(
    graph: &mut Graph,
    quantization: Option<Quantization>,
) -> usize {
    let mut marked = Vec::new();
    for (_, node) in graph.nodes.iter() {
        if !matches!(node.op, Op::Linear { .. }) {
            continue;
        }
        let weight = node.inputs[1];
        let in_features = graph.ty(weight).shape.last().copied().unwrap_or(0);
        if let ValueDef::Param(param) = graph.values[weight].def
            && in_features > 0
            && in_features.is_multiple_of(BLOCK_LENGTH)
        {
            marked.push(param);
        }
    }
    marked.sort_unstable();
    marked.dedup();
    // One pass over the nodes, not one per weight: a network of a million nodes stays linear.
    let mut read_as_tensor = SecondaryMap::with_default(graph.values.len(), false);
    for (_, node) in graph.nodes.iter() {
        if !matches!(node.op, Op::Linear { .. }) {
            for &input in &node.inputs {
                read_as_tensor[input] = true;
            }
        }
    }
    let mut count = 0;
    for &param in &marked {
        let read_as_tensor = read_as_tensor[graph.params[param].value];
        let quantization = match (graph.params[param].layer_quantize, quantization) {
            (Some(LayerQuantize::Off), _) | (None, None) => continue,
            // The layer's own format wins, in the mode asked for the others.
            (Some(LayerQuantize::Format(format)), quantization) => Quantization {
                format: QuantTarget::Format(format),
                mode: quantization
                    .map(|quantization| quantization.mode)
                    .unwrap_or_default(),
            },
            (None, Some(quantization)) => Quantization {
                // As stored, the file decides (SmolLM2's Q4_1 file keeps its table in Q8_0).
                format: match quantization.format {
                    QuantTarget::Format(_) if read_as_tensor => {
                        QuantTarget::Format(QuantFormat::Q8_0)
                    }
                    format => format,
                },
                ..quantization
            },
        };
        // F16 has no integer products: its layers multiply in the exact mode whatever mode was
        // asked, as `QuantizedLinear::new` does at run time (the cost model's MAC split reads
        // the mode).
        let quantization = match quantization.format {
            QuantTarget::Format(QuantFormat::F16) => Quantization {
                mode: QuantizedMode::Exact,
                ..quantization
            },
            _ => quantization,
        };
        graph.params[param].storage = WeightStorage::Quantized(quantization);
        count += 1;
    }
    count
}

/// Marks the weight of every int8-eligible convolution ([`is_int8_conv`]) of `graph` for int8
/// (`--quantize int8`), its input quantized as `calibration` says, except the layers whose own
/// `quantize = false` keeps them in f32; returns how many it marked, or the layers the
/// calibration does not know (then nothing is marked).
///
/// A weight read by anything but its one convolution stays f32: the int8 kernel owns its copy.
pub(super) fn quantize_conv_weights(
    graph: &mut Graph,
    calibration: &Calibration,
) -> Result<usize, Vec<String>> {
    // How many nodes read each value, counted once for all convolutions.
    let mut readers = SecondaryMap::with_default(graph.values.len(), 0usize);
    for (_, node) in graph.nodes.iter() {
        for (position, &input) in node.inputs.iter().enumerate() {
            if !node.inputs[..position].contains(&input) {
                readers[input] += 1;
            }
        }
    }
    let mut marked = Vec::new();
    let mut missing = Vec::new();
    for (_, node) in graph.nodes.iter() {
        if !is_int8_conv(graph, node) {
            continue;
        }
        let weight = node.inputs[1];
        let ValueDef::Param(param) = graph.values[weight].def else {
            continue;
        };
        // `quantize = false` keeps the layer in f32 (it then needs no calibrated range).
        if graph.params[param].layer_quantize == Some(LayerQuantize::Off) {
            continue;
        }
        if readers[weight] != 1 {
            continue;
        }
        match calibration.input_quantization(&node.name) {
            Some(input) => marked.push((param, input)),
            None => missing.push(node.name.clone()),
        }
    }
    if !missing.is_empty() {
        return Err(missing);
    }
    for &(param, input) in &marked {
        graph.params[param].storage = WeightStorage::Int8(Int8Conv { input });
    }
    Ok(marked.len())
}
