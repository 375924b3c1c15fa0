//! Times the tiled attention at an encoder's shape (MiniLM: 128 tokens, 12 heads of 32, no
//! mask) as generated code calls it, and prints the median microseconds per call: a process to
//! run under `perf record` or to alternate with another build's.
//!
//! ```text
//! cargo run --release -p nnc-runtime --example attention_timing -- [threads] [calls] [tokens]
//! ```

use nnc_runtime::kernels::attention::{AttentionOptions, AttentionShape};
use nnc_runtime::kernels::flash_attention::{FlashAttentionWorkspace, flash_attention};
use std::hint::black_box;
use std::time::Instant;

fn main() {
    let arguments: Vec<usize> = std::env::args()
        .skip(1)
        .map(|argument| argument.parse().expect("[threads] [calls] [tokens]"))
        .collect();
    let argument = |index: usize, default: usize| arguments.get(index).copied().unwrap_or(default);
    let (threads, calls, tokens) = (argument(0, 1), argument(1, 2000).max(1), argument(2, 128));
    nnc_runtime::set_num_threads(threads);
    let shape = AttentionShape {
        batch: 1,
        query_len: tokens,
        key_len: tokens,
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
    let mut output = vec![0.0; length];
    let mut workspace = FlashAttentionWorkspace::new(&shape);
    let options = AttentionOptions::default();
    let mut times: Vec<f64> = (0..calls + 20)
        .map(|_| {
            let start = Instant::now();
            flash_attention(
                black_box(&q),
                black_box(&k),
                black_box(&v),
                &shape,
                &options,
                None,
                &mut output,
                &mut workspace,
            )
            .expect("valid shapes");
            start.elapsed().as_secs_f64() * 1e6
        })
        .skip(20)
        .collect();
    times.sort_by(f64::total_cmp);
    let flops = 4.0 * (shape.n_heads * shape.query_len * shape.key_len * shape.head_dim) as f64;
    let median = times[times.len() / 2];
    let gflops = flops / median / 1e3;
    let shape = format!("{tokens} tokens, 12 heads x 32, {threads} threads");
    println!("attention {shape}: {median:.1} us, {gflops:.1} GFLOP/s");
}
