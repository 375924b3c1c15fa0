//! Exact counts of the (query, key) pairs an attention keeps.
//!
//! The cost of attention is proportional to the pairs it scores, so a sparse pattern must be
//! counted exactly, not estimated: the count is the number of `(i, j)` with `i < queries`,
//! `j < keys`, [`SparsePattern::allows`]`(i, j)`, and `j <= i` when causal (the kernels place
//! query `i` at position `i`, as [`crate::ir::op::AttentionAttrs`] documents).
//!
//! Calling `allows` for every pair costs `queries × keys` calls (67 million at 8192 tokens), so
//! each query row is counted from the pattern's structure instead: the keys each component keeps
//! are marked in a bitset (ranges for windows and blocks, one bit per multiple for strides and
//! dilations), and the row's count is the number of set bits below the causal limit. A row costs
//! `O(keys / 64)` plus the number of marks, and agrees with `allows` by construction; the tests
//! compare the two on random patterns.

use crate::ir::SparsePattern;

/// The number of (query, key) pairs kept by `pattern` and, if `causal`, the causal mask.
pub fn kept_pairs(pattern: &SparsePattern, causal: bool, queries: usize, keys: usize) -> u64 {
    if pattern.is_dense() {
        return dense_pairs(causal, queries, keys);
    }
    let mut row = Bitset::new(keys);
    let mut total = 0u64;
    for query in 0..queries {
        row.clear();
        mark_row(pattern, query, &mut row);
        let limit = if causal { keys.min(query + 1) } else { keys };
        total += row.count_below(limit);
    }
    total
}

/// Pairs of a dense attention: every key, or the keys at or before the query when causal.
fn dense_pairs(causal: bool, queries: usize, keys: usize) -> u64 {
    let (queries, keys) = (queries as u64, keys as u64);
    if !causal {
        return queries * keys;
    }
    // Query i keeps min(i + 1, keys) keys.
    let full_rows = queries.min(keys);
    let triangle = full_rows * (full_rows + 1) / 2;
    triangle + (queries - full_rows) * keys
}

/// Marks the keys `pattern` keeps for `query`, before the causal mask.
fn mark_row(pattern: &SparsePattern, query: usize, row: &mut Bitset) {
    let keys = row.len;
    if let Some(window) = pattern.window.filter(|&window| window > 0) {
        let dilation = pattern.dilation.max(1);
        // Keys at distance d < window * dilation with d a multiple of dilation: d = 0, dilation,
        // .., (window - 1) * dilation, on both sides.
        if dilation == 1 {
            let reach = window.saturating_sub(1);
            row.set_range(query.saturating_sub(reach), query.saturating_add(reach) + 1);
        } else {
            for step in 0..window {
                let distance = step.saturating_mul(dilation);
                if let Some(key) = query.checked_sub(distance) {
                    row.set(key);
                }
                row.set(query.saturating_add(distance));
            }
        }
    }
    if !pattern.global_tokens.is_empty() {
        if pattern.global_tokens.contains(&query) {
            row.set_range(0, keys);
        } else {
            for &key in &pattern.global_tokens {
                row.set(key);
            }
        }
    }
    if let Some(stride) = pattern.strided {
        if stride == 0 {
            // Only distance 0 is a multiple of 0.
            row.set(query);
            return mark_blocks(pattern, query, row);
        }
        // |i - j| < stride, or i - j a multiple of stride.
        let reach = stride - 1;
        row.set_range(query.saturating_sub(reach), query.saturating_add(reach) + 1);
        let mut key = query % stride;
        while key < keys {
            row.set(key);
            key += stride;
        }
    }
    mark_blocks(pattern, query, row);
}

/// Marks the key blocks the block mask keeps for `query`.
fn mark_blocks(pattern: &SparsePattern, query: usize, row: &mut Bitset) {
    if let Some(blocks) = &pattern.block_mask {
        let block_size = blocks.block_size.max(1);
        if let Some(mask_row) = blocks.rows().nth(query / block_size) {
            for (column, &keep) in mask_row.iter().enumerate() {
                if keep {
                    let start = column.saturating_mul(block_size);
                    row.set_range(start, start.saturating_add(block_size));
                }
            }
        }
    }
}

/// A fixed-length set of key positions; marks past the end are ignored.
struct Bitset {
    words: Vec<u64>,
    len: usize,
}

impl Bitset {
    fn new(len: usize) -> Self {
        Bitset {
            words: vec![0; len.div_ceil(64)],
            len,
        }
    }

    fn clear(&mut self) {
        self.words.fill(0);
    }

    fn set(&mut self, index: usize) {
        if index < self.len {
            self.words[index / 64] |= 1 << (index % 64);
        }
    }

    /// Sets `start..end`, clipped to the set's length.
    fn set_range(&mut self, start: usize, end: usize) {
        let end = end.min(self.len);
        if start >= end {
            return;
        }
        let (first_word, last_word) = (start / 64, (end - 1) / 64);
        for word in first_word..=last_word {
            let low = if word == first_word { start % 64 } else { 0 };
            let high = if word == last_word {
                (end - 1) % 64 + 1
            } else {
                64
            };
            self.words[word] |= bits_between(low, high);
        }
    }

    /// The number of set positions below `limit`.
    fn count_below(&self, limit: usize) -> u64 {
        let limit = limit.min(self.len);
        let full_words = limit / 64;
        let mut count: u64 = self.words[..full_words]
            .iter()
            .map(|word| u64::from(word.count_ones()))
            .sum();
        if !limit.is_multiple_of(64) {
            count += u64::from((self.words[full_words] & bits_between(0, limit % 64)).count_ones());
        }
        count
    }
}

/// A word with bits `low..high` set, for `low < high <= 64`.
fn bits_between(low: usize, high: usize) -> u64 {
    let upto_high = if high == 64 {
        u64::MAX
    } else {
        (1u64 << high) - 1
    };
    upto_high & !((1u64 << low) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::BlockMask;
    use proptest::prelude::*;

    /// The definition: one `allows` call per pair.
    fn brute_force(pattern: &SparsePattern, causal: bool, queries: usize, keys: usize) -> u64 {
        let mut count = 0;
        for query in 0..queries {
            for key in 0..keys {
                if pattern.allows(query, key) && !(causal && key > query) {
                    count += 1;
                }
            }
        }
        count
    }

    fn pattern_strategy() -> impl Strategy<Value = SparsePattern> {
        (
            proptest::option::of(1usize..20),
            1usize..5,
            proptest::collection::vec(0usize..80, 0..4),
            proptest::option::of(1usize..12),
            proptest::option::of((1usize..16, proptest::collection::vec(any::<bool>(), 1..40))),
        )
            .prop_map(|(window, dilation, global_tokens, strided, blocks)| {
                let block_mask = blocks.map(|(block_size, bits)| {
                    let side = (bits.len() as f64).sqrt().ceil() as usize;
                    let mut mask = bits;
                    mask.resize(side * side, false);
                    BlockMask {
                        block_size,
                        blocks_per_row: side,
                        mask,
                    }
                });
                SparsePattern {
                    window,
                    dilation,
                    global_tokens,
                    strided,
                    block_mask,
                }
            })
    }

    proptest! {
        #[test]
        fn row_counting_agrees_with_allows(
            pattern in pattern_strategy(),
            causal in any::<bool>(),
            queries in 1usize..90,
            keys in 1usize..90,
        ) {
            prop_assert_eq!(
                kept_pairs(&pattern, causal, queries, keys),
                brute_force(&pattern, causal, queries, keys)
            );
        }
    }

    #[test]
    fn dense_and_causal_counts() {
        let dense = SparsePattern::default();
        assert_eq!(kept_pairs(&dense, false, 128, 128), 128 * 128);
        assert_eq!(kept_pairs(&dense, true, 128, 128), 128 * 129 / 2);
        // More queries than keys: the later rows see every key.
        assert_eq!(kept_pairs(&dense, true, 6, 4), 1 + 2 + 3 + 4 + 4 + 4);
        assert_eq!(kept_pairs(&dense, true, 4, 6), 1 + 2 + 3 + 4);
    }

    #[test]
    fn longformer_window_with_a_global_token() {
        let pattern = SparsePattern {
            window: Some(128),
            dilation: 1,
            global_tokens: vec![0],
            ..SparsePattern::default()
        };
        let sequence = 1024;
        assert_eq!(
            kept_pairs(&pattern, false, sequence, sequence),
            brute_force(&pattern, false, sequence, sequence)
        );
    }

    #[test]
    fn long_sequences_are_fast_and_exact() {
        // A causal sliding window of 256 over 8192 tokens: row i keeps min(i + 1, 256) keys.
        let pattern = SparsePattern {
            window: Some(256),
            dilation: 1,
            ..SparsePattern::default()
        };
        let sequence = 8192u64;
        let expected = 256 * 257 / 2 + (sequence - 256) * 256;
        let started = std::time::Instant::now();
        assert_eq!(
            kept_pairs(&pattern, true, sequence as usize, sequence as usize),
            expected
        );
        assert!(started.elapsed().as_secs_f64() < 2.0);
    }
}
