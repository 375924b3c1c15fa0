//! Pointwise-depthwise fusion: a channels-last depthwise convolution that reads a 1×1
//! convolution runs it itself (`ConvAttrs::pointwise`), and the 1×1 node disappears.
//!
//! An inverted residual block (MobileNetV2) widens its input six times with a 1×1 convolution
//! and runs a 3×3 depthwise one on the result. Run one after the other, the wide tensor goes out
//! to memory whole (4.8 MB for the first block's 112 × 112 × 96, more than a core's L2) and
//! comes back; fused, the runtime (`PackedPointwiseDepthwise`) computes it band by band of rows
//! into a buffer that stays in cache, and the depthwise kernel reads each band right after the
//! GEMM wrote it. Both layers' arithmetic is unchanged (the same GEMM and depthwise kernels, in
//! the same order per element), so the fused output has the same bits.
//!
//! Legal when the 1×1 convolution's output feeds nothing but the depthwise one (no one else needs
//! the wide tensor, and it is no network output); the 1×1 layer is channels-last, ungrouped,
//! with unit stride, no padding and no residual; the depthwise layer is channels-last and reads
//! its input as it is (not an NCHW image) and has no residual (the fused kernel adds none); both
//! have f32 weights (the int8 kernels have no fused form).
//!
//! This pass runs after the layout choice, which decides what is channels-last. The fused node
//! takes the depthwise node's place: the 1×1 layer's inputs are defined before the 1×1 layer,
//! hence before it.

use crate::ir::{ConvAttrs, Graph, Node, NodeData, Op};

/// Fuses 1×1 convolutions into the depthwise convolutions that read them; returns whether any
/// was fused.
pub fn run(graph: &mut Graph) -> bool {
    let uses = graph.use_counts();
    let mut changed = false;
    for index in 0..graph.nodes.len() {
        let depthwise = Node::from_index(index);
        let Op::Conv(attrs) = &graph.nodes[depthwise].op else {
            continue;
        };
        if !is_depthwise(graph, &graph.nodes[depthwise], attrs) {
            continue;
        }
        let wide = graph.nodes[depthwise].inputs[0];
        let Some((pointwise, pointwise_attrs)) = super::sole_reader_conv(graph, &uses, wide) else {
            continue;
        };
        if !pointwise_attrs.fuses_into_depthwise() {
            continue;
        }

        let pointwise_data = graph.nodes[pointwise].clone();
        let data = &mut graph.nodes[depthwise];
        let Op::Conv(attrs) = &mut data.op else {
            unreachable!("fuse_pointwise_depthwise: checked above")
        };
        let Op::Conv(pointwise_attrs) = pointwise_data.op else {
            unreachable!("fuse_pointwise_depthwise: checked above")
        };
        // [x, own weights.., pointwise weights..]
        let mut inputs = vec![pointwise_data.inputs[0]];
        inputs.extend(&data.inputs[1..]);
        inputs.extend(&pointwise_data.inputs[1..]);
        attrs.pointwise = Some(Box::new(pointwise_attrs));
        data.inputs = inputs;
        super::prepend_origin(graph, depthwise, pointwise);
        // The 1×1 node is now dead (the depthwise one was its only reader); `compact` removes it.
        changed = true;
    }
    changed && {
        graph.compact();
        true
    }
}

/// Whether `data` is a channels-last depthwise convolution with f32 weights and no residual,
/// reading its input as it is, without a fused pointwise layer yet.
fn is_depthwise(graph: &Graph, data: &NodeData, attrs: &ConvAttrs) -> bool {
    attrs.fuses_into_pointwise(&graph.ty(data.inputs[1]).shape)
        && attrs.pointwise.is_none()
        && !graph.is_int8_conv(data)
}
