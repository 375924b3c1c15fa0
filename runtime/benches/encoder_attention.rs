//! Attention at an encoder's shape: MiniLM / BERT-small, batch 1, 128 tokens, 12 heads of 32,
//! with a key padding mask (the last 16 keys padded) and without, at the current thread count.
//! At this size the two products are small (12.6 M multiply-adds), so the masking and softmax
//! around them matter as much as the GEMM. Times the plain kernel and the tiled one (as
//! generated code calls it, and with dense layouts of blocks of 64 and 96).
//!
//! Run with `cargo bench -p nnc-runtime --bench encoder_attention`; prints the median of
//! `RUNS` calls in µs and GFLOP/s (2 FLOPs per multiply-add of the two products).

use nnc_runtime::kernels::attention::{
    AttentionOptions, AttentionShape, AttentionWorkspace,
    scaled_dot_product_attention_with_workspace,
};
use nnc_runtime::kernels::flash_attention::{
    BlockSparseLayout, DEFAULT_BLOCK_SIZE, FlashAttentionWorkspace, dense_block_size,
    flash_attention,
};
use std::hint::black_box;
use std::time::Instant;

const RUNS: usize = 401;

fn main() {
    let shape = AttentionShape {
        batch: 1,
        query_len: 128,
        key_len: 128,
        n_heads: 12,
        n_kv_heads: 12,
        head_dim: 32,
    };
    let length = shape.query_len * shape.n_heads * shape.head_dim;
    let values = |seed: usize| -> Vec<f32> {
        (0..length)
            .map(|index| (((index * 7919 + seed * 104729) % 2001) as f32 / 1000.0) - 1.0)
            .collect()
    };
    let (q, k, v) = (values(1), values(2), values(3));
    let padding: Vec<i64> = (0..shape.key_len)
        .map(|key| i64::from(key < shape.key_len - 16))
        .collect();
    let mut output = vec![0.0; length];
    let mut workspace = AttentionWorkspace::new(&shape);
    let flops =
        2.0 * 2.0 * (shape.n_heads * shape.query_len * shape.key_len * shape.head_dim) as f64;
    println!(
        "encoder attention: 128 tokens, 12 heads x 32, {} threads",
        nnc_runtime::num_threads()
    );
    for (name, mask) in [("padding mask", Some(&padding[..])), ("no mask", None)] {
        let options = AttentionOptions {
            key_padding_mask: mask,
            ..AttentionOptions::default()
        };
        let median = median_seconds(|| {
            scaled_dot_product_attention_with_workspace(
                black_box(&q),
                black_box(&k),
                black_box(&v),
                &shape,
                &options,
                &mut output,
                &mut workspace,
            )
            .expect("valid shapes");
        });
        println!(
            "{name:>13}: {:8.1} µs  {:6.1} GFLOP/s",
            median * 1e6,
            flops / median / 1e9
        );
        // The tiled kernel as generated code calls it (no layout: `dense_block_size`), and
        // with dense layouts of other block sizes.
        for block_size in [None, Some(64), Some(DEFAULT_BLOCK_SIZE)] {
            let layout = block_size.map(|block_size| {
                BlockSparseLayout::dense(block_size, shape.query_len, shape.key_len)
                    .expect("a dense layout")
            });
            let mut workspace = match block_size {
                Some(block_size) => FlashAttentionWorkspace::with_block_size(&shape, block_size),
                None => FlashAttentionWorkspace::new(&shape),
            };
            let block_size = block_size.unwrap_or_else(|| dense_block_size(&shape));
            let median = median_seconds(|| {
                flash_attention(
                    black_box(&q),
                    black_box(&k),
                    black_box(&v),
                    &shape,
                    &options,
                    layout.as_ref(),
                    &mut output,
                    &mut workspace,
                )
                .expect("valid shapes");
            });
            println!(
                "{name:>13} flash {block_size:3}: {:8.1} µs  {:6.1} GFLOP/s",
                median * 1e6,
                flops / median / 1e9
            );
        }
    }
}

/// The median time of `RUNS` calls of `call`, in seconds.
fn median_seconds(mut call: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            call();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[RUNS / 2]
}
