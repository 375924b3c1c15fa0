//! Attention over keys and values stored in the fixed-size blocks of a paged KV cache
//! (vLLM's paged attention), read in place through the sequence's block table.
//!
//! Key `j` of the sequence lives in block `block_table[j / block_size]`, row `j % block_size`,
//! of per-layer pools shaped `[num_blocks, block_size, n_kv_heads * head_dim]`. The result is the
//! same as `scaled_dot_product_attention` on the gathered `[key_len, n_kv_heads * head_dim]`
//! keys and values, with the same masks and the same convention for a query row that may attend
//! to no key (zeros). Batch is 1: a paged cache holds one sequence per block table.
//!
//! Each (query, head) row keeps a running maximum and sum (online softmax, as in the tiled
//! kernel), accumulating into its output row. The rows that share a key/value head (grouped
//! queries, and the step's several tokens) walk the keys together, a tile of up to eight rows at
//! a time, in chunks of at most [`CHUNK`] keys within a block: each key and value row is read once
//! per tile, the chunk's scores go to a stack buffer, and the accumulators are rescaled once per
//! chunk. Nothing is allocated.

use crate::KernelError;
use crate::error::{KernelResult, check_length, invalid_parameter};
use crate::kernels::attention::{AttentionMask, AttentionOptions, AttentionShape, check_heads};
use crate::kernels::vectorize;
use crate::threading;
use nnc_ops::math;

/// Keys scored together before the accumulators are rescaled.
pub const CHUNK: usize = 64;

/// (query, head) rows sharing a key/value head that walk the keys together.
const ROWS: usize = 8;

/// Multiply-adds (keys × heads × head size) from which one query's key/value heads run on the
/// thread pool.
const PARALLEL_WORK: usize = 1 << 18;

/// A sequence's keys and values in a paged KV cache.
#[derive(Clone, Copy, Debug)]
pub struct PagedKv<'a> {
    /// One layer's key pool, `[num_blocks, block_size, n_kv_heads * head_dim]`.
    pub keys: &'a [f32],
    /// One layer's value pool, shaped like `keys`.
    pub values: &'a [f32],
    /// The sequence's blocks in position order.
    pub block_table: &'a [usize],
    /// Positions per block.
    pub block_size: usize,
}

/// `output = softmax(scale * q k^T, masked) v` for `q [query_len, n_heads * head_dim]` against
/// the first `shape.key_len` keys and values of `kv`; see the module docs.
pub fn paged_attention(
    q: &[f32],
    kv: &PagedKv<'_>,
    shape: &AttentionShape,
    options: &AttentionOptions<'_>,
    output: &mut [f32],
) -> KernelResult<()> {
    check(q, kv, shape, options, output)?;
    #[cfg(target_arch = "x86_64")]
    if vectorize::has_avx2_fma() {
        // SAFETY: The processor supports AVX2 and FMA, checked just above.
        unsafe { attend_avx2(q, kv, shape, options, output) };
        return Ok(());
    }
    attend(q, kv, shape, options, output);
    Ok(())
}

/// [`attend`] compiled with AVX2 and FMA, so that its dot products and row updates use 8-wide
/// registers.
///
/// # Safety
///
/// The processor must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_avx2(
    q: &[f32],
    kv: &PagedKv<'_>,
    shape: &AttentionShape,
    options: &AttentionOptions<'_>,
    output: &mut [f32],
) {
    attend(q, kv, shape, options, output);
}

/// The kernel, on checked arguments.
// A tile's rows index several per-row arrays (scores, maxima, sums, visible lengths) at once.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn attend(
    q: &[f32],
    kv: &PagedKv<'_>,
    shape: &AttentionShape,
    options: &AttentionOptions<'_>,
    output: &mut [f32],
) {
    let AttentionShape {
        query_len,
        key_len,
        n_heads,
        n_kv_heads,
        head_dim,
        ..
    } = *shape;
    let scale = options
        .scale
        .unwrap_or_else(|| 1.0 / (head_dim as f32).sqrt());
    let group = n_heads / n_kv_heads;
    let row_length = n_kv_heads * head_dim;
    let allowed = |query: usize, key: usize| {
        if options.causal && key > options.query_position_offset + query {
            return false;
        }
        if let Some(padding) = options.key_padding_mask
            && padding[key] == 0
        {
            return false;
        }
        match options.mask {
            AttentionMask::None => true,
            AttentionMask::Dense(mask) => mask[query * key_len + key],
            AttentionMask::Function(allows) => allows(query, key),
        }
    };
    // Rows (query, head) that share a key/value head are processed together, up to `ROWS` at a
    // time, so each key and value row is read from memory once per tile, not once per head.
    // `output` is the whole output (`base` 0) or, when one query's kv heads run in parallel, the
    // kv head's own columns, which start at `base`.
    let run_kv_head = |kv_head: usize, output: &mut [f32], base: usize| {
        let mut scores = [[0.0f32; CHUNK]; ROWS];
        let rows_per_kv_head = query_len * group;
        let kv_offset = kv_head * head_dim;
        let row_of = |index: usize| (index / group, kv_head * group + index % group);
        for tile_start in (0..rows_per_kv_head).step_by(ROWS) {
            let rows = (rows_per_kv_head - tile_start).min(ROWS);
            let mut maxima = [f32::NEG_INFINITY; ROWS];
            let mut sums = [0.0f32; ROWS];
            // The keys any row of the tile sees: causal rows stop at their own position.
            let mut visible = [key_len; ROWS];
            let mut tile_visible = 0;
            for row in 0..rows {
                let (query, head) = row_of(tile_start + row);
                if options.causal {
                    visible[row] = (options.query_position_offset + query + 1).min(key_len);
                }
                tile_visible = tile_visible.max(visible[row]);
                let offset = (query * n_heads + head) * head_dim - base;
                output[offset..offset + head_dim].fill(0.0);
            }
            let mut start = 0;
            while start < tile_visible {
                let block = kv.block_table[start / kv.block_size];
                let in_block = start % kv.block_size;
                let count = (kv.block_size - in_block)
                    .min(tile_visible - start)
                    .min(CHUNK);
                let first_row = block * kv.block_size + in_block;
                for row in 0..rows {
                    let (query, head) = row_of(tile_start + row);
                    let q_offset = (query * n_heads + head) * head_dim;
                    let q_row = &q[q_offset..q_offset + head_dim];
                    let offset = q_offset - base;
                    let mut chunk_maximum = f32::NEG_INFINITY;
                    for (index, score) in scores[row][..count].iter_mut().enumerate() {
                        let key = start + index;
                        *score = if key < visible[row] && allowed(query, key) {
                            let at = (first_row + index) * row_length + kv_offset;
                            scale * dot(q_row, &kv.keys[at..at + head_dim])
                        } else {
                            f32::NEG_INFINITY
                        };
                        chunk_maximum = chunk_maximum.max(*score);
                    }
                    if chunk_maximum == f32::NEG_INFINITY {
                        // Nothing in this chunk for this row: no weight.
                        scores[row][..count].fill(0.0);
                        continue;
                    }
                    // Rescale what the row has so far to the new maximum, then turn the
                    // chunk's scores into weights.
                    let new_maximum = maxima[row].max(chunk_maximum);
                    let correction = math::exp(maxima[row] - new_maximum);
                    if correction != 1.0 {
                        output[offset..offset + head_dim]
                            .iter_mut()
                            .for_each(|value| *value *= correction);
                    }
                    sums[row] *= correction;
                    maxima[row] = new_maximum;
                    for score in &mut scores[row][..count] {
                        *score = if *score == f32::NEG_INFINITY {
                            0.0
                        } else {
                            math::exp(*score - new_maximum)
                        };
                        sums[row] += *score;
                    }
                }
                for index in 0..count {
                    let at = (first_row + index) * row_length + kv_offset;
                    let value = &kv.values[at..at + head_dim];
                    for row in 0..rows {
                        let weight = scores[row][index];
                        if weight == 0.0 || index + start >= visible[row] {
                            continue;
                        }
                        let (query, head) = row_of(tile_start + row);
                        let offset = (query * n_heads + head) * head_dim - base;
                        for (out, &v) in output[offset..offset + head_dim].iter_mut().zip(value) {
                            *out += weight * v;
                        }
                    }
                }
                start += count;
            }
            for row in 0..rows {
                if sums[row] > 0.0 {
                    let (query, head) = row_of(tile_start + row);
                    let offset = (query * n_heads + head) * head_dim - base;
                    let inverse = 1.0 / sums[row];
                    output[offset..offset + head_dim]
                        .iter_mut()
                        .for_each(|value| *value *= inverse);
                }
            }
        }
    };
    // One query's kv heads write disjoint columns: in parallel when there is enough work.
    let work = key_len * n_heads * head_dim;
    if query_len == 1 && n_kv_heads > 1 && work >= PARALLEL_WORK {
        threading::run_chunks_mut(output, group * head_dim, |kv_head, columns| {
            run_kv_head(kv_head, columns, kv_head * group * head_dim)
        });
    } else {
        for kv_head in 0..n_kv_heads {
            run_kv_head(kv_head, output, 0);
        }
    }
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent partial sums, which the compiler keeps in one vector register.
    let mut partial = [0.0f32; 8];
    let (a_chunks, a_tail) = a.split_at(a.len() / 8 * 8);
    let (b_chunks, b_tail) = b.split_at(a_chunks.len());
    for (x, y) in a_chunks.chunks_exact(8).zip(b_chunks.chunks_exact(8)) {
        for lane in 0..8 {
            partial[lane] += x[lane] * y[lane];
        }
    }
    let tail: f32 = a_tail.iter().zip(b_tail).map(|(x, y)| x * y).sum();
    partial.iter().sum::<f32>() + tail
}

fn check(
    q: &[f32],
    kv: &PagedKv<'_>,
    shape: &AttentionShape,
    options: &AttentionOptions<'_>,
    output: &[f32],
) -> KernelResult<()> {
    let operation = "paged_attention";
    let overflow = KernelError::SizeOverflow { operation };
    if shape.batch != 1 {
        return Err(invalid_parameter(
            operation,
            format!(
                "a block table holds one sequence, but the batch is {}",
                shape.batch
            ),
        ));
    }
    check_heads(operation, shape)?;
    if kv.block_size == 0 {
        return Err(invalid_parameter(operation, "the block size is zero"));
    }
    let q_length = [shape.query_len, shape.n_heads, shape.head_dim]
        .iter()
        .try_fold(1usize, |total, &length| total.checked_mul(length))
        .ok_or(overflow.clone())?;
    check_length(operation, "q", q_length, q.len())?;
    check_length(operation, "output", q_length, output.len())?;
    let row_length = shape
        .n_kv_heads
        .checked_mul(shape.head_dim)
        .ok_or(overflow.clone())?;
    let block_floats = kv
        .block_size
        .checked_mul(row_length)
        .ok_or(overflow.clone())?;
    check_length(operation, "values", kv.keys.len(), kv.values.len())?;
    let blocks_needed = shape.key_len.div_ceil(kv.block_size);
    if blocks_needed > kv.block_table.len() {
        return Err(invalid_parameter(
            operation,
            format!(
                "{} keys need {blocks_needed} blocks of {}, but the block table lists {}",
                shape.key_len,
                kv.block_size,
                kv.block_table.len()
            ),
        ));
    }
    let pool_blocks = kv.keys.len().checked_div(block_floats).unwrap_or(0);
    if let Some(&block) = kv.block_table[..blocks_needed]
        .iter()
        .find(|&&block| block >= pool_blocks)
    {
        return Err(KernelError::IndexOutOfRange {
            operation,
            index: block,
            length: pool_blocks,
        });
    }
    if let Some(padding) = options.key_padding_mask {
        check_length(operation, "key_padding_mask", shape.key_len, padding.len())?;
    }
    if let AttentionMask::Dense(mask) = options.mask {
        let entries = shape.query_len.checked_mul(shape.key_len).ok_or(overflow)?;
        check_length(operation, "mask", entries, mask.len())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::attention::scaled_dot_product_attention;
    use proptest::prelude::*;

    /// Scatters `[key_len, row]` keys and values into a pool along a shuffled block table.
    fn paged(
        keys: &[f32],
        values: &[f32],
        row_length: usize,
        block_size: usize,
        seed: usize,
    ) -> (Vec<f32>, Vec<f32>, Vec<usize>) {
        let key_len = keys.len() / row_length;
        let blocks = key_len.div_ceil(block_size);
        // Two spare blocks and a permutation, so table order is not pool order.
        let pool_blocks = blocks + 2;
        let mut table: Vec<usize> = (0..pool_blocks).collect();
        table.rotate_left(seed % pool_blocks);
        table.reverse();
        table.truncate(blocks);
        let mut pool_keys = vec![f32::NAN; pool_blocks * block_size * row_length];
        let mut pool_values = pool_keys.clone();
        for key in 0..key_len {
            let target = (table[key / block_size] * block_size + key % block_size) * row_length;
            pool_keys[target..target + row_length]
                .copy_from_slice(&keys[key * row_length..(key + 1) * row_length]);
            pool_values[target..target + row_length]
                .copy_from_slice(&values[key * row_length..(key + 1) * row_length]);
        }
        (pool_keys, pool_values, table)
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|index| {
                let x = (index as u32)
                    .wrapping_mul(2_654_435_761)
                    .wrapping_add(seed);
                (x % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    proptest! {
        #[test]
        fn equals_dense_attention_on_gathered_keys(
            query_len in 1usize..4,
            key_extra in 0usize..150,
            kv_heads in 1usize..3,
            group in 1usize..3,
            head_dim in 1usize..20,
            block_size in 1usize..40,
            causal in any::<bool>(),
            masked in any::<bool>(),
            padded in any::<bool>(),
            seed in 0usize..100,
        ) {
            let key_len = query_len + key_extra;
            let n_heads = kv_heads * group;
            let shape = AttentionShape {
                batch: 1, query_len, key_len, n_heads, n_kv_heads: kv_heads, head_dim,
            };
            let q = values(query_len * n_heads * head_dim, seed as u32);
            let k = values(key_len * kv_heads * head_dim, seed as u32 + 1);
            let v = values(key_len * kv_heads * head_dim, seed as u32 + 2);
            let window = |query: usize, key: usize| (key_extra + query).abs_diff(key) < 5 || key == 0;
            let padding: Vec<i64> = (0..key_len).map(|key| i64::from(key % 3 != 1)).collect();
            let options = AttentionOptions {
                scale: None,
                causal,
                query_position_offset: key_extra,
                key_padding_mask: padded.then_some(padding.as_slice()),
                mask: if masked { AttentionMask::Function(&window) } else { AttentionMask::None },
            };
            let mut expected = vec![0.0; q.len()];
            scaled_dot_product_attention(&q, &k, &v, &shape, &options, &mut expected).unwrap();
            let (keys, values, block_table) = paged(&k, &v, kv_heads * head_dim, block_size, seed);
            let kv = PagedKv { keys: &keys, values: &values, block_table: &block_table, block_size };
            let mut actual = vec![f32::NAN; q.len()];
            paged_attention(&q, &kv, &shape, &options, &mut actual).unwrap();
            for (index, (a, e)) in actual.iter().zip(&expected).enumerate() {
                prop_assert!((a - e).abs() <= 1e-4 * (1.0 + e.abs()), "element {index}: {a} vs {e}");
            }
        }
    }

    #[test]
    fn one_query_over_many_keys_runs_heads_in_parallel_with_the_same_result() {
        // 3000 keys x 8 heads x 16 = 384,000 multiply-adds: past `PARALLEL_WORK`.
        let (key_len, n_heads, n_kv_heads, head_dim) = (3000, 8, 4, 16);
        assert!(key_len * n_heads * head_dim >= PARALLEL_WORK);
        let shape = AttentionShape {
            batch: 1,
            query_len: 1,
            key_len,
            n_heads,
            n_kv_heads,
            head_dim,
        };
        let q = values(n_heads * head_dim, 1);
        let k = values(key_len * n_kv_heads * head_dim, 2);
        let v = values(key_len * n_kv_heads * head_dim, 3);
        let window = |_: usize, key: usize| key % 5 != 3;
        for mask in [AttentionMask::None, AttentionMask::Function(&window)] {
            let options = AttentionOptions {
                causal: true,
                query_position_offset: key_len - 1,
                mask,
                ..AttentionOptions::default()
            };
            let mut expected = vec![0.0; q.len()];
            scaled_dot_product_attention(&q, &k, &v, &shape, &options, &mut expected).unwrap();
            let (keys, values, block_table) = paged(&k, &v, n_kv_heads * head_dim, 64, 5);
            let kv = PagedKv {
                keys: &keys,
                values: &values,
                block_table: &block_table,
                block_size: 64,
            };
            let mut actual = vec![f32::NAN; q.len()];
            paged_attention(&q, &kv, &shape, &options, &mut actual).unwrap();
            for (a, e) in actual.iter().zip(&expected) {
                assert!((a - e).abs() <= 1e-4 * (1.0 + e.abs()), "{a} vs {e}");
            }
        }
    }

    #[test]
    fn rejects_short_block_tables_and_foreign_blocks() {
        let shape = AttentionShape {
            batch: 1,
            query_len: 1,
            key_len: 5,
            n_heads: 1,
            n_kv_heads: 1,
            head_dim: 2,
        };
        let pool = vec![0.0; 4 * 2 * 2];
        let options = AttentionOptions::default();
        let mut output = [0.0; 2];
        let short = PagedKv {
            keys: &pool,
            values: &pool,
            block_table: &[0, 1],
            block_size: 2,
        };
        let error = paged_attention(&[1.0, 1.0], &short, &shape, &options, &mut output);
        assert!(error.unwrap_err().to_string().contains("3 blocks"));
        let foreign = PagedKv {
            block_table: &[0, 1, 9],
            ..short
        };
        let error = paged_attention(&[1.0, 1.0], &foreign, &shape, &options, &mut output);
        assert!(matches!(
            error,
            Err(KernelError::IndexOutOfRange { index: 9, .. })
        ));
    }

    #[test]
    fn a_row_with_no_allowed_key_is_zero() {
        let shape = AttentionShape {
            batch: 1,
            query_len: 1,
            key_len: 3,
            n_heads: 1,
            n_kv_heads: 1,
            head_dim: 2,
        };
        let pool = vec![1.0; 3 * 2];
        let kv = PagedKv {
            keys: &pool,
            values: &pool,
            block_table: &[0],
            block_size: 3,
        };
        let options = AttentionOptions {
            key_padding_mask: Some(&[0, 0, 0]),
            ..AttentionOptions::default()
        };
        let mut output = [f32::NAN; 2];
        paged_attention(&[1.0, 1.0], &kv, &shape, &options, &mut output).unwrap();
        assert_eq!(output, [0.0, 0.0]);
    }
}
