//! One decoding step's attention: a few new queries against a cache of `key_len` keys. The
//! tiled kernel (`flash_attention`, which packs the keys and values of each head per call)
//! against the direct kernel (`paged_attention` over the cache as one block, which reads them in
//! place). Shapes like SmolLM2-135M's: 9 query heads, 3 key/value heads, head_dim 64.
//!
//! `cargo bench -p nnc-runtime --bench decode_attention`. Prints the best of many calls.

use std::hint::black_box;
use std::time::{Duration, Instant};

use nnc_runtime::kernels::attention::{AttentionOptions, AttentionShape};
use nnc_runtime::kernels::flash_attention::{FlashAttentionWorkspace, flash_attention};
use nnc_runtime::kernels::paged_attention::{PagedKv, paged_attention};

fn best_time(call: &mut dyn FnMut()) -> Duration {
    call();
    let start = Instant::now();
    let mut best = Duration::MAX;
    while start.elapsed() < Duration::from_millis(500) {
        let call_start = Instant::now();
        call();
        best = best.min(call_start.elapsed());
    }
    best
}

fn main() {
    nnc_runtime::set_num_threads(1);
    let (heads, kv_heads, head_dim) = (9, 3, 64);
    println!("one thread; time per call, tiled / direct:");
    for queries in [1, 4, 16] {
        for key_len in [128, 512, 2048, 8192] {
            let shape = AttentionShape {
                batch: 1,
                query_len: queries,
                key_len,
                n_heads: heads,
                n_kv_heads: kv_heads,
                head_dim,
            };
            let values = |len: usize| -> Vec<f32> {
                (0..len).map(|i| (i % 97) as f32 / 97.0 - 0.5).collect()
            };
            let q = values(queries * heads * head_dim);
            let k = values(key_len * kv_heads * head_dim);
            let v = values(key_len * kv_heads * head_dim);
            let options = AttentionOptions {
                causal: true,
                query_position_offset: key_len - queries,
                ..AttentionOptions::default()
            };
            let mut output = vec![0.0; q.len()];
            let mut workspace = FlashAttentionWorkspace::new(&shape);
            let tiled = best_time(&mut || {
                flash_attention(
                    &q,
                    &k,
                    &v,
                    &shape,
                    &options,
                    None,
                    &mut output,
                    &mut workspace,
                )
                .unwrap();
                black_box(&output);
            });
            let kv = PagedKv {
                keys: &k,
                values: &v,
                block_table: &[0],
                block_size: key_len,
            };
            let direct = best_time(&mut || {
                paged_attention(&q, &kv, &shape, &options, &mut output).unwrap();
                black_box(&output);
            });
            println!(
                "  {queries:>2} queries x {key_len:>5} keys: tiled {:>8.1} us, direct {:>8.1} us ({:.2}x)",
                tiled.as_secs_f64() * 1e6,
                direct.as_secs_f64() * 1e6,
                tiled.as_secs_f64() / direct.as_secs_f64()
            );
        }
    }
}
