//! Convolution-max-pool fusion: a max pooling that reads a convolution runs inside it
//! (`ConvAttrs::max_pool`), and the pooling node takes the convolution's place.
//!
//! A ResNet stem (7×7/s2 to 64 channels at 112 × 112) writes 3.2 MB, more than a core's L2, that
//! the 3×3/s2 max pooling after it reads back from memory, only to keep a quarter of it. Fused,
//! the runtime (`PackedConv2dMaxPool`) computes the convolution band by band of output rows into
//! a buffer that stays in cache and pools each band right after; each output is the same
//! arithmetic as the two layers apart, so the same bits.
//!
//! Legal when the convolution's output feeds nothing but the pooling (no one else needs the
//! unpooled tensor, and it is no network output); the convolution is 2-D, NCHW (the layout
//! pass, which runs before, left it so), with f32 weights and no residual; the pooling is a 2-D
//! NCHW max pooling. The fused node takes the pooling node's place, after the convolution's
//! inputs, and the convolution's name and source span.

use crate::ir::{Graph, Node, Op};

/// Fuses max poolings into the convolutions they read; returns whether any was fused.
pub fn run(graph: &mut Graph) -> bool {
    let uses = graph.use_counts();
    let mut changed = false;
    for index in 0..graph.nodes.len() {
        let pool_node = Node::from_index(index);
        let Op::MaxPool(pool) = &graph.nodes[pool_node].op else {
            continue;
        };
        if !pool.fuses_into_conv() {
            continue;
        }
        let unpooled = graph.nodes[pool_node].inputs[0];
        let Some((conv_node, attrs)) = super::sole_reader_conv(graph, &uses, unpooled) else {
            continue;
        };
        if !attrs.takes_max_pool() {
            continue;
        }

        let pool = pool.clone();
        let conv_data = graph.nodes[conv_node].clone();
        let Op::Conv(mut attrs) = conv_data.op else {
            unreachable!("fuse_conv_max_pool: checked above")
        };
        attrs.max_pool = Some(pool);
        let data = &mut graph.nodes[pool_node];
        data.op = Op::Conv(attrs);
        data.inputs = conv_data.inputs;
        super::take_over_layer(graph, pool_node, conv_node);
        // The convolution node is now dead (the pooling was its only reader); `compact` removes
        // it.
        changed = true;
    }
    changed && {
        graph.compact();
        true
    }
}
