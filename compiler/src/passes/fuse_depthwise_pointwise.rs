//! Depthwise-pointwise fusion: a channels-last 1×1 convolution that reads a depthwise
//! convolution runs it itself (`ConvAttrs::depthwise`), with the expansion the depthwise layer
//! may already run (`fuse-pointwise-depthwise`), and the depthwise node disappears.
//!
//! An inverted residual block (MobileNetV2) ends with a 1×1 convolution (the projection) over
//! its depthwise layer's output: 1.6 MB at the first block's 112 × 112 × 32, 1.8 MB at the third's
//! 56 × 56 × 144. Run one after the other, that output goes out of a core's L2 and comes back;
//! fused, the runtime (`PackedDepthwiseBlock`) computes it band by band of rows into a buffer
//! that stays in cache, and the projection's GEMM reads each band right after the depthwise
//! kernel wrote it, adding the block's residual in its epilogue. Every layer's arithmetic is
//! unchanged (the same GEMM and depthwise kernels, in the same order per element), so the fused
//! output has the same bits.
//!
//! Legal when the depthwise convolution's output feeds nothing but the 1×1 one (no one else
//! needs it, and it is no network output); the 1×1 layer is channels-last, ungrouped, with unit
//! stride and no padding (it may add a residual, which stays its last input); the depthwise
//! layer is 2-D, channels-last, reads its input as it is and has no residual; both have f32
//! weights (the int8 kernels have no fused form).
//!
//! This pass runs after the layout choice, which decides what is channels-last, and after
//! pointwise-depthwise fusion, so that a whole block becomes one node. The fused node takes the
//! 1×1 node's place: the depthwise layer's inputs are defined before it, hence before the 1×1
//! layer.

use crate::ir::{Graph, Node, Op};

/// Fuses depthwise convolutions into the 1×1 convolutions that read them; returns whether any
/// was fused.
pub fn run(graph: &mut Graph) -> bool {
    let uses = graph.use_counts();
    let mut changed = false;
    for index in 0..graph.nodes.len() {
        let pointwise = Node::from_index(index);
        let Op::Conv(attrs) = &graph.nodes[pointwise].op else {
            continue;
        };
        if !attrs.takes_depthwise() || graph.is_int8_conv(&graph.nodes[pointwise]) {
            continue;
        }
        let middle = graph.nodes[pointwise].inputs[0];
        let Some((depthwise, depthwise_attrs)) = super::sole_reader_conv(graph, &uses, middle)
        else {
            continue;
        };
        let weight = graph.ty(graph.nodes[depthwise].inputs[1]);
        if !depthwise_attrs.fuses_into_pointwise(&weight.shape) {
            continue;
        }

        let depthwise_data = graph.nodes[depthwise].clone();
        let data = &mut graph.nodes[pointwise];
        let Op::Conv(attrs) = &mut data.op else {
            unreachable!("fuse_depthwise_pointwise: checked above")
        };
        let Op::Conv(depthwise_attrs) = depthwise_data.op else {
            unreachable!("fuse_depthwise_pointwise: checked above")
        };
        // [x, own weights.., depthwise weights (and its expansion's).., residual?]
        let own = 1 + attrs.weight_inputs();
        let mut inputs = vec![depthwise_data.inputs[0]];
        inputs.extend(&data.inputs[1..own]);
        inputs.extend(&depthwise_data.inputs[1..]);
        inputs.extend(&data.inputs[own..]);
        attrs.depthwise = Some(Box::new(depthwise_attrs));
        data.inputs = inputs;
        super::prepend_origin(graph, pointwise, depthwise);
        // The depthwise node is now dead (the 1×1 one was its only reader); `compact` removes it.
        changed = true;
    }
    changed && {
        graph.compact();
        true
    }
}
