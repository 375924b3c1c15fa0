//! Tests of the KV caches: each against a plain `Vec` of every row ever appended, and decoding
//! through a cache against one full attention call over the whole sequence.

use nnc_runtime::kernels::attention::SparsePattern;
use nnc_runtime::kernels::{
    AttentionMask, AttentionOptions, AttentionShape, BlockSparseLayout, FlashAttentionWorkspace,
    flash_attention,
};
use nnc_runtime::kv_cache::{DecodeCache, KvCache, KvCacheError, PagedKvCache};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Every row appended to one layer, committed or not, in position order.
#[derive(Clone, Debug, Default)]
struct ReferenceLayer {
    keys: Vec<f32>,
    values: Vec<f32>,
}

/// Rows for `tokens` positions whose values encode (seed, position, element), so that a row in
/// the wrong place or order shows up.
fn rows(seed: usize, first_position: usize, tokens: usize, row_length: usize) -> Vec<f32> {
    (0..tokens * row_length)
        .map(|index| {
            let position = first_position + index / row_length;
            (seed * 1_000_000 + position * 100 + index % row_length) as f32
        })
        .collect()
}

fn random_values(rng: &mut ChaCha8Rng, count: usize) -> Vec<f32> {
    (0..count).map(|_| rng.random_range(-1.0..1.0)).collect()
}

fn max_abs_difference(lhs: &[f32], rhs: &[f32]) -> f32 {
    assert_eq!(lhs.len(), rhs.len());
    lhs.iter()
        .zip(rhs)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

/// Appends a step of `tokens` positions to every layer of `cache` and `reference`, checking
/// each layer's view right after its append, then commits it.
fn append_step(cache: &mut KvCache, reference: &mut [ReferenceLayer], tokens: usize) {
    let row_length = cache.row_length();
    let first_position = cache.len();
    for (layer, reference_layer) in reference.iter_mut().enumerate() {
        let keys = rows(2 * layer, first_position, tokens, row_length);
        let values = rows(2 * layer + 1, first_position, tokens, row_length);
        cache.append(layer, &keys, &values, tokens).unwrap();
        reference_layer.keys.extend_from_slice(&keys);
        reference_layer.values.extend_from_slice(&values);
        assert_eq!(cache.pending_len(layer), tokens);
        let start = cache.first_cached_position() * row_length;
        assert_eq!(cache.keys(layer), &reference_layer.keys[start..]);
        assert_eq!(cache.values(layer), &reference_layer.values[start..]);
    }
    cache.advance(tokens).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn contiguous_appends_match_a_vec_reference(
        layers in 1usize..4,
        kv_heads in 1usize..4,
        head_dim in 1usize..6,
        steps in prop::collection::vec(0usize..6, 0..12),
    ) {
        let max_context = steps.iter().sum::<usize>() + 3;
        let mut cache = KvCache::new(layers, max_context, kv_heads, head_dim);
        let bytes = cache.allocated_bytes();
        let mut reference = vec![ReferenceLayer::default(); layers];
        let mut len = 0;
        for &tokens in &steps {
            append_step(&mut cache, &mut reference, tokens);
            len += tokens;
            prop_assert_eq!(cache.len(), len);
            prop_assert_eq!(cache.cached_len(), len);
            prop_assert_eq!(cache.first_cached_position(), 0);
            for (layer, reference_layer) in reference.iter().enumerate() {
                prop_assert_eq!(cache.keys(layer), &reference_layer.keys[..]);
                prop_assert_eq!(cache.values(layer), &reference_layer.values[..]);
            }
        }
        prop_assert_eq!(cache.allocated_bytes(), bytes);
    }

    #[test]
    fn rolling_cache_keeps_the_last_window_positions_in_order(
        layers in 1usize..3,
        kv_heads in 1usize..3,
        head_dim in 1usize..4,
        window in 1usize..9,
        step_seeds in prop::collection::vec(0usize..1000, 1..60),
    ) {
        let mut cache = KvCache::rolling(layers, window, kv_heads, head_dim);
        let bytes = cache.allocated_bytes();
        prop_assert_eq!(bytes, 2 * 2 * window * layers * kv_heads * head_dim * 4);
        let mut reference = vec![ReferenceLayer::default(); layers];
        let mut len = 0;
        for seed in step_seeds {
            let tokens = 1 + seed % window;
            append_step(&mut cache, &mut reference, tokens);
            len += tokens;
            prop_assert_eq!(cache.len(), len);
            prop_assert_eq!(cache.cached_len(), len.min(window));
            prop_assert_eq!(cache.first_cached_position(), len - len.min(window));
            let row_length = kv_heads * head_dim;
            let start = (len - len.min(window)) * row_length;
            for (layer, reference_layer) in reference.iter().enumerate() {
                prop_assert_eq!(cache.keys(layer), &reference_layer.keys[start..]);
                prop_assert_eq!(cache.values(layer), &reference_layer.values[start..]);
            }
            // Memory is bounded by the window, however long the sequence.
            prop_assert_eq!(cache.allocated_bytes(), bytes);
        }
    }

    #[test]
    fn paged_interleaved_sequences_match_separate_caches(
        layers in 1usize..3,
        kv_heads in 1usize..3,
        head_dim in 1usize..4,
        block_size in 1usize..6,
        steps in prop::collection::vec((0usize..3, 0usize..7), 0..30),
    ) {
        let total: usize = steps.iter().map(|&(_, tokens)| tokens).sum();
        // Enough blocks for the worst case: every sequence wastes at most one partial block.
        let num_blocks = total.div_ceil(block_size) + 3;
        let mut paged = PagedKvCache::new(layers, num_blocks, block_size, kv_heads, head_dim);
        let sequences: Vec<_> = (0..3).map(|_| paged.add_sequence()).collect();
        let mut separate: Vec<KvCache> =
            (0..3).map(|_| KvCache::new(layers, total, kv_heads, head_dim)).collect();
        let row_length = kv_heads * head_dim;
        let mut k_out = vec![0.0; total * row_length];
        let mut v_out = vec![0.0; total * row_length];
        for (index, tokens) in steps {
            let (seq, cache) = (sequences[index], &mut separate[index]);
            let first_position = cache.len();
            for layer in 0..layers {
                let seed = 10 * index + 2 * layer;
                let keys = rows(seed, first_position, tokens, row_length);
                let values = rows(seed + 1, first_position, tokens, row_length);
                paged.append(seq, layer, &keys, &values, tokens).unwrap();
                cache.append(layer, &keys, &values, tokens).unwrap();
                let gathered = paged.gather(seq, layer, &mut k_out, &mut v_out).unwrap();
                prop_assert_eq!(gathered, first_position + tokens);
                prop_assert_eq!(&k_out[..gathered * row_length], cache.keys(layer));
                prop_assert_eq!(&v_out[..gathered * row_length], cache.values(layer));
            }
            paged.advance(seq, tokens).unwrap();
            cache.advance(tokens).unwrap();
            prop_assert_eq!(paged.sequence_len(seq).unwrap(), cache.len());
        }
        for (index, &seq) in sequences.iter().enumerate() {
            let blocks = separate[index].len().div_ceil(block_size);
            prop_assert_eq!(paged.block_table(seq).unwrap().len(), blocks);
            for layer in 0..layers {
                let gathered = paged.gather(seq, layer, &mut k_out, &mut v_out).unwrap();
                prop_assert_eq!(&k_out[..gathered * row_length], separate[index].keys(layer));
                prop_assert_eq!(&v_out[..gathered * row_length], separate[index].values(layer));
            }
        }
        for seq in sequences {
            paged.free_sequence(seq).unwrap();
        }
        prop_assert_eq!(paged.free_block_count(), num_blocks);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A step padded after its real tokens, committed with `advance_dropping_padding`, leaves
    /// every kind of cache as if only the real tokens had been appended: the contiguous and the
    /// rolling cache hold the same views, the paged one the same rows and no block more.
    #[test]
    fn padded_steps_keep_only_the_real_positions(
        layers in 1usize..3,
        kv_heads in 1usize..3,
        head_dim in 1usize..4,
        window in 1usize..9,
        block_size in 1usize..6,
        steps in prop::collection::vec((1usize..8, 0usize..8), 1..24),
    ) {
        let row_length = kv_heads * head_dim;
        // A rolling step holds at most the window; the others take any step.
        let steps: Vec<(usize, usize)> = steps
            .into_iter()
            .map(|(tokens, padding)| {
                let tokens = 1 + (tokens - 1) % window;
                (tokens, padding.min(window - tokens))
            })
            .collect();
        let total: usize = steps.iter().map(|&(tokens, padding)| tokens + padding).sum();
        let mut contiguous = KvCache::new(layers, total, kv_heads, head_dim);
        let mut rolling = KvCache::rolling(layers, window, kv_heads, head_dim);
        let num_blocks = total.div_ceil(block_size) + 1;
        let mut paged = PagedKvCache::new(layers, num_blocks, block_size, kv_heads, head_dim);
        let seq = paged.add_sequence();
        let mut reference = vec![ReferenceLayer::default(); layers];
        let mut k_out = vec![0.0; total * row_length];
        let mut v_out = vec![0.0; total * row_length];
        let mut len = 0;
        for (tokens, padding) in steps {
            prop_assert!(rolling.has_room_for(tokens + padding));
            prop_assert!(paged.sequence(seq).unwrap().has_room_for(tokens + padding));
            for (layer, reference_layer) in reference.iter_mut().enumerate() {
                let mut keys = rows(2 * layer, len, tokens, row_length);
                let mut values = rows(2 * layer + 1, len, tokens, row_length);
                reference_layer.keys.extend_from_slice(&keys);
                reference_layer.values.extend_from_slice(&values);
                keys.resize((tokens + padding) * row_length, -1.0);
                values.resize((tokens + padding) * row_length, -1.0);
                contiguous.append(layer, &keys, &values, tokens + padding).unwrap();
                rolling.append(layer, &keys, &values, tokens + padding).unwrap();
                paged.append(seq, layer, &keys, &values, tokens + padding).unwrap();
            }
            contiguous.advance_dropping_padding(tokens, padding).unwrap();
            rolling.advance_dropping_padding(tokens, padding).unwrap();
            paged
                .sequence(seq)
                .unwrap()
                .advance_dropping_padding(tokens, padding)
                .unwrap();
            len += tokens;
            prop_assert_eq!((contiguous.len(), rolling.len()), (len, len));
            prop_assert_eq!(paged.sequence_len(seq).unwrap(), len);
            prop_assert_eq!(paged.block_table(seq).unwrap().len(), len.div_ceil(block_size));
            prop_assert_eq!(
                paged.free_block_count(),
                num_blocks - len.div_ceil(block_size)
            );
            let first_rolling = (len - len.min(window)) * row_length;
            for (layer, reference_layer) in reference.iter().enumerate() {
                prop_assert_eq!(contiguous.keys(layer), &reference_layer.keys[..]);
                prop_assert_eq!(contiguous.values(layer), &reference_layer.values[..]);
                prop_assert_eq!(rolling.keys(layer), &reference_layer.keys[first_rolling..]);
                prop_assert_eq!(
                    rolling.values(layer),
                    &reference_layer.values[first_rolling..]
                );
                let gathered = paged.gather(seq, layer, &mut k_out, &mut v_out).unwrap();
                prop_assert_eq!(gathered, len);
                prop_assert_eq!(&k_out[..len * row_length], &reference_layer.keys[..]);
                prop_assert_eq!(&v_out[..len * row_length], &reference_layer.values[..]);
            }
        }
    }
}

#[test]
fn room_for_a_step_follows_the_context_and_the_pool() {
    let mut cache = KvCache::new(1, 4, 1, 1);
    assert!(cache.has_room_for(4) && !cache.has_room_for(5));
    cache
        .append(0, &[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0], 3)
        .unwrap();
    cache.advance_dropping_padding(1, 2).unwrap();
    assert!(cache.has_room_for(3) && !cache.has_room_for(4));
    let rolling = KvCache::rolling(1, 3, 1, 1);
    assert!(rolling.has_room_for(3) && !rolling.has_room_for(4));
    // Two blocks of two positions: a sequence of one position has room for three more.
    let mut paged = PagedKvCache::new(1, 2, 2, 1, 1);
    let seq = paged.add_sequence();
    paged.append(seq, 0, &[1.0], &[1.0], 1).unwrap();
    paged.advance(seq, 1).unwrap();
    assert!(paged.has_room_for(seq, 3) && !paged.has_room_for(seq, 4));
    let other = paged.add_sequence();
    paged.append(other, 0, &[1.0], &[1.0], 1).unwrap();
    paged.advance(other, 1).unwrap();
    assert!(paged.has_room_for(seq, 1) && !paged.has_room_for(seq, 2));
    // An uneven padded advance is refused and changes nothing.
    paged.append(seq, 0, &[2.0], &[2.0], 1).unwrap();
    assert_eq!(
        paged.advance_dropping_padding(seq, 1, 1),
        Err(KvCacheError::UnevenAdvance {
            tokens: 2,
            layer: 0,
            appended: 1
        })
    );
    assert_eq!(paged.sequence_len(seq).unwrap(), 1);
}

#[test]
fn contiguous_cache_reports_full_without_writing() {
    let mut cache = KvCache::new(2, 4, 1, 2);
    let mut reference = vec![ReferenceLayer::default(); 2];
    append_step(&mut cache, &mut reference, 3);
    let too_many = rows(7, 3, 2, 2);
    assert_eq!(
        cache.append(0, &too_many, &too_many, 2),
        Err(KvCacheError::Full {
            max_context: 4,
            requested: 5
        })
    );
    assert_eq!(cache.pending_len(0), 0);
    assert_eq!(cache.keys(0), &reference[0].keys[..]);
    append_step(&mut cache, &mut reference, 1);
    assert_eq!(cache.len(), 4);
    // Pending rows count towards the limit too.
    let one = rows(7, 4, 1, 2);
    assert!(matches!(
        cache.append(1, &one, &one, 1),
        Err(KvCacheError::Full {
            max_context: 4,
            requested: 5
        })
    ));
    let message = cache.append(1, &one, &one, 1).unwrap_err().to_string();
    assert!(message.contains("full"), "{message}");
}

#[test]
fn reset_forgets_every_position_and_keeps_the_allocation() {
    for mut cache in [KvCache::new(2, 6, 2, 3), KvCache::rolling(2, 3, 2, 3)] {
        let bytes = cache.allocated_bytes();
        let mut reference = vec![ReferenceLayer::default(); 2];
        for tokens in [2, 3, 1] {
            append_step(&mut cache, &mut reference, tokens);
        }
        let pending = rows(9, 6, 1, 6);
        if cache.max_context().is_none() {
            cache.append(0, &pending, &pending, 1).unwrap();
        }
        cache.reset();
        assert_eq!((cache.len(), cache.cached_len()), (0, 0));
        assert!(cache.is_empty());
        assert_eq!(cache.pending_len(0), 0);
        assert!(cache.keys(0).is_empty() && cache.values(1).is_empty());
        assert_eq!(cache.allocated_bytes(), bytes);
        let mut reference = vec![ReferenceLayer::default(); 2];
        append_step(&mut cache, &mut reference, 2);
        assert_eq!(cache.keys(1), &reference[1].keys[..]);
    }
}

#[test]
fn advance_requires_every_layer_to_have_the_step() {
    let mut cache = KvCache::new(3, 8, 1, 2);
    let step = rows(0, 0, 2, 2);
    cache.append(0, &step, &step, 2).unwrap();
    cache.append(1, &step, &step, 2).unwrap();
    assert_eq!(
        cache.advance(2),
        Err(KvCacheError::UnevenAdvance {
            tokens: 2,
            layer: 2,
            appended: 0
        })
    );
    assert_eq!(cache.len(), 0);
    cache.append(2, &step, &step, 2).unwrap();
    cache.advance(2).unwrap();
    assert_eq!(cache.len(), 2);
}

#[test]
fn append_checks_the_layer_and_buffer_lengths() {
    let mut cache = KvCache::new(2, 8, 2, 2);
    let step = rows(0, 0, 2, 4);
    assert_eq!(
        cache.append(2, &step, &step, 2),
        Err(KvCacheError::LayerOutOfRange {
            layer: 2,
            layers: 2
        })
    );
    assert_eq!(
        cache.append(0, &step[..7], &step, 2),
        Err(KvCacheError::BufferLength {
            buffer: "k_new",
            expected: 8,
            actual: 7
        })
    );
    assert_eq!(
        cache.append(0, &step, &step, 1),
        Err(KvCacheError::BufferLength {
            buffer: "k_new",
            expected: 4,
            actual: 8
        })
    );
    assert_eq!(cache.pending_len(0), 0);
}

#[test]
fn sizes_are_reported_in_bytes() {
    let cache = KvCache::new(3, 10, 2, 4);
    assert_eq!(cache.bytes_per_token(), 2 * 3 * 2 * 4 * 4);
    assert_eq!(cache.allocated_bytes(), 10 * cache.bytes_per_token());
    let rolling = KvCache::rolling(3, 5, 2, 4);
    assert_eq!(rolling.allocated_bytes(), 2 * 5 * rolling.bytes_per_token());
    assert_eq!((rolling.window(), rolling.max_context()), (Some(5), None));
    let paged = PagedKvCache::new(3, 7, 4, 2, 4);
    assert_eq!(paged.bytes_per_token(), cache.bytes_per_token());
    assert_eq!(paged.allocated_bytes(), 7 * 4 * paged.bytes_per_token());
}

#[test]
fn rolling_cache_rejects_a_step_longer_than_the_window() {
    let mut cache = KvCache::rolling(1, 3, 1, 1);
    let four = [1.0, 2.0, 3.0, 4.0];
    assert_eq!(
        cache.append(0, &four, &four, 4),
        Err(KvCacheError::StepExceedsWindow {
            window: 3,
            tokens: 4
        })
    );
    cache.append(0, &four[..2], &four[..2], 2).unwrap();
    assert_eq!(
        cache.append(0, &four[..2], &four[..2], 2),
        Err(KvCacheError::StepExceedsWindow {
            window: 3,
            tokens: 4
        })
    );
    cache.append(0, &four[..1], &four[..1], 1).unwrap();
    cache.advance(3).unwrap();
    // Past the window there is no error: the oldest positions are dropped.
    for position in 3..20 {
        let row = [position as f32];
        cache.append(0, &row, &row, 1).unwrap();
        cache.advance(1).unwrap();
    }
    assert_eq!((cache.len(), cache.cached_len()), (20, 3));
    assert_eq!(cache.keys(0), &[17.0, 18.0, 19.0]);
}

#[test]
fn freed_blocks_are_reused_by_later_sequences() {
    // Four blocks of two positions: two sequences of four positions fill the pool, so twenty
    // such sequences only fit because each frees its blocks.
    let mut paged = PagedKvCache::new(2, 4, 2, 1, 3);
    let step = rows(0, 0, 4, 3);
    let mut k_out = vec![0.0; 4 * 3];
    let mut v_out = vec![0.0; 4 * 3];
    let mut previous = None;
    for round in 0..10 {
        let first = paged.add_sequence();
        let second = paged.add_sequence();
        for seq in [first, second] {
            for layer in 0..2 {
                paged.append(seq, layer, &step, &step, 4).unwrap();
            }
            paged.advance(seq, 4).unwrap();
        }
        assert_eq!(paged.free_block_count(), 0);
        let mut tables = paged.block_table(first).unwrap().to_vec();
        tables.extend_from_slice(paged.block_table(second).unwrap());
        tables.sort_unstable();
        assert_eq!(tables, [0, 1, 2, 3], "round {round}");
        assert_eq!(paged.gather(second, 1, &mut k_out, &mut v_out), Ok(4));
        assert_eq!(k_out, step);
        paged.free_sequence(first).unwrap();
        paged.free_sequence(second).unwrap();
        assert_eq!(paged.free_block_count(), 4);
        // Freed handles are rejected, even once their slots are reused.
        assert_eq!(
            paged.sequence_len(first),
            Err(KvCacheError::UnknownSequence(first))
        );
        if let Some(old) = previous {
            assert_eq!(
                paged.free_sequence(old),
                Err(KvCacheError::UnknownSequence(old))
            );
        }
        previous = Some(first);
    }
}

#[test]
fn paged_cache_reports_out_of_blocks_without_taking_any() {
    let mut paged = PagedKvCache::new(1, 3, 2, 1, 1);
    let first = paged.add_sequence();
    let second = paged.add_sequence();
    let five = [1.0, 2.0, 3.0, 4.0, 5.0];
    paged.append(first, 0, &five[..4], &five[..4], 4).unwrap();
    paged.advance(first, 4).unwrap();
    assert_eq!(
        paged.append(second, 0, &five[..3], &five[..3], 3),
        Err(KvCacheError::OutOfBlocks { needed: 2, free: 1 })
    );
    assert_eq!(paged.free_block_count(), 1);
    assert_eq!(paged.gathered_len(second, 0), Ok(0));
    paged.append(second, 0, &five[..2], &five[..2], 2).unwrap();
    paged.advance(second, 2).unwrap();
    assert_eq!(
        paged.append(first, 0, &five[..1], &five[..1], 1),
        Err(KvCacheError::OutOfBlocks { needed: 1, free: 0 })
    );
    let mut k_out = [0.0; 1];
    let mut v_out = [0.0; 4];
    assert_eq!(
        paged.gather(first, 0, &mut k_out, &mut v_out),
        Err(KvCacheError::BufferLength {
            buffer: "k_out",
            expected: 4,
            actual: 1
        })
    );
}

/// Random queries, keys and values of a whole sequence, `[len, heads * head_dim]` each.
struct Sequence {
    shape: AttentionShape,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

impl Sequence {
    fn random(len: usize, n_heads: usize, n_kv_heads: usize, head_dim: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let shape = AttentionShape {
            batch: 1,
            query_len: len,
            key_len: len,
            n_heads,
            n_kv_heads,
            head_dim,
        };
        Self {
            shape,
            q: random_values(&mut rng, len * n_heads * head_dim),
            k: random_values(&mut rng, len * n_kv_heads * head_dim),
            v: random_values(&mut rng, len * n_kv_heads * head_dim),
        }
    }

    fn query_row_length(&self) -> usize {
        self.shape.n_heads * self.shape.head_dim
    }

    fn key_row_length(&self) -> usize {
        self.shape.n_kv_heads * self.shape.head_dim
    }

    /// Decodes the sequence in steps of `step_lengths` (cycled) through `cache` (one layer),
    /// with queries at absolute positions `len()..` against the cache's view, keeping keys at
    /// absolute distance below `window` when one is given. Returns `[len, n_heads * head_dim]`.
    fn decode(
        &self,
        cache: &mut KvCache,
        step_lengths: &[usize],
        window: Option<usize>,
    ) -> Vec<f32> {
        let (query_row, key_row) = (self.query_row_length(), self.key_row_length());
        let len = self.shape.query_len;
        let mut output = vec![0.0; len * query_row];
        let mut workspace = FlashAttentionWorkspace::default();
        for &step in step_lengths.iter().cycle() {
            let first = cache.len();
            if first == len {
                break;
            }
            let tokens = step.min(len - first);
            let new_keys = first * key_row..(first + tokens) * key_row;
            cache
                .append(
                    0,
                    &self.k[new_keys.clone()],
                    &self.v[new_keys.clone()],
                    tokens,
                )
                .unwrap();
            let (keys, values) = (cache.keys(0), cache.values(0));
            let key_len = keys.len() / key_row;
            let first_key_position = cache.first_cached_position();
            let in_window = move |i: usize, j: usize| {
                let query_position = first + i;
                let key_position = first_key_position + j;
                window.is_none_or(|window| query_position.abs_diff(key_position) < window)
            };
            let options = AttentionOptions {
                causal: true,
                query_position_offset: cache.cached_len(),
                mask: AttentionMask::Function(&in_window),
                ..AttentionOptions::default()
            };
            let shape = AttentionShape {
                query_len: tokens,
                key_len,
                ..self.shape
            };
            let queries = first * query_row..(first + tokens) * query_row;
            flash_attention(
                &self.q[queries.clone()],
                keys,
                values,
                &shape,
                &options,
                None,
                &mut output[queries],
                &mut workspace,
            )
            .unwrap();
            cache.advance(tokens).unwrap();
        }
        output
    }

    /// One causal attention call over the whole sequence, within `window` when one is given
    /// (through a block-sparse layout and the same predicate as element mask).
    fn full_attention(&self, window: Option<usize>) -> Vec<f32> {
        let len = self.shape.query_len;
        let in_window =
            move |i: usize, j: usize| window.is_none_or(|window| i.abs_diff(j) < window);
        let block_size = 8;
        let layout = BlockSparseLayout::from_predicate(block_size, len, len, in_window).unwrap();
        let options = AttentionOptions {
            causal: true,
            mask: AttentionMask::Function(&in_window),
            ..AttentionOptions::default()
        };
        let mut workspace = FlashAttentionWorkspace::with_block_size(&self.shape, block_size);
        let mut output = vec![0.0; self.q.len()];
        let layout = window.map(|_| &layout);
        flash_attention(
            &self.q,
            &self.k,
            &self.v,
            &self.shape,
            &options,
            layout,
            &mut output,
            &mut workspace,
        )
        .unwrap();
        output
    }
}

#[test]
fn token_by_token_decoding_matches_full_causal_attention() {
    for (n_heads, n_kv_heads) in [(1, 1), (3, 3), (4, 2), (6, 1)] {
        let sequence = Sequence::random(37, n_heads, n_kv_heads, 8, n_heads as u64);
        let expected = sequence.full_attention(None);
        let mut cache = KvCache::new(1, 40, n_kv_heads, 8);
        let decoded = sequence.decode(&mut cache, &[1], None);
        let error = max_abs_difference(&decoded, &expected);
        assert!(error <= 1e-4, "{n_heads}/{n_kv_heads} heads: error {error}");
        // Prefill in chunks, then decode: the same result.
        cache.reset();
        let chunked = sequence.decode(&mut cache, &[5, 1, 3], None);
        let error = max_abs_difference(&chunked, &expected);
        assert!(
            error <= 1e-4,
            "{n_heads}/{n_kv_heads} heads, chunked: error {error}"
        );
    }
}

#[test]
fn rolling_decoding_matches_sliding_window_attention() {
    for (n_heads, n_kv_heads, window) in [(1, 1, 5), (4, 2, 7), (6, 1, 16)] {
        let sequence = Sequence::random(53, n_heads, n_kv_heads, 8, 100 + window as u64);
        let expected = sequence.full_attention(Some(window));
        let mut cache = KvCache::rolling(1, window, n_kv_heads, 8);
        let bytes = cache.allocated_bytes();
        let decoded = sequence.decode(&mut cache, &[1], Some(window));
        let error = max_abs_difference(&decoded, &expected);
        assert!(error <= 1e-4, "window {window}: error {error}");
        assert_eq!((cache.len(), cache.cached_len()), (53, window));
        cache.reset();
        let chunked = sequence.decode(&mut cache, &[window, 1, 2, window / 2], Some(window));
        let error = max_abs_difference(&chunked, &expected);
        assert!(error <= 1e-4, "window {window}, chunked: error {error}");
        assert_eq!(cache.allocated_bytes(), bytes);
    }
}

#[test]
fn decoding_through_a_paged_cache_matches_full_causal_attention() {
    let sequences: Vec<Sequence> = (0..3)
        .map(|seed| Sequence::random(21 + 4 * seed, 4, 2, 8, 200 + seed as u64))
        .collect();
    let mut paged = PagedKvCache::new(1, 40, 3, 2, 8);
    let ids: Vec<_> = sequences.iter().map(|_| paged.add_sequence()).collect();
    let mut outputs: Vec<Vec<f32>> = sequences.iter().map(|s| vec![0.0; s.q.len()]).collect();
    let mut k_scratch = vec![0.0; 40 * 16];
    let mut v_scratch = vec![0.0; 40 * 16];
    let mut workspace = FlashAttentionWorkspace::default();
    let longest = sequences.iter().map(|s| s.shape.query_len).max().unwrap();
    // Interleave the sequences token by token.
    for position in 0..longest {
        for ((sequence, &seq), output) in sequences.iter().zip(&ids).zip(&mut outputs) {
            if position >= sequence.shape.query_len {
                continue;
            }
            let (query_row, key_row) = (sequence.query_row_length(), sequence.key_row_length());
            let new_key = position * key_row..(position + 1) * key_row;
            paged
                .append(
                    seq,
                    0,
                    &sequence.k[new_key.clone()],
                    &sequence.v[new_key],
                    1,
                )
                .unwrap();
            let key_len = paged
                .gather(seq, 0, &mut k_scratch, &mut v_scratch)
                .unwrap();
            let shape = AttentionShape {
                query_len: 1,
                key_len,
                ..sequence.shape
            };
            let options = AttentionOptions {
                causal: true,
                query_position_offset: position,
                ..AttentionOptions::default()
            };
            let query = position * query_row..(position + 1) * query_row;
            flash_attention(
                &sequence.q[query.clone()],
                &k_scratch[..key_len * key_row],
                &v_scratch[..key_len * key_row],
                &shape,
                &options,
                None,
                &mut output[query],
                &mut workspace,
            )
            .unwrap();
            paged.advance(seq, 1).unwrap();
        }
    }
    for (sequence, output) in sequences.iter().zip(&outputs) {
        let error = max_abs_difference(output, &sequence.full_attention(None));
        assert!(error <= 1e-4, "error {error}");
    }
}

/// Decodes `sequence` in steps of `step_lengths` (cycled) through `DecodeCache::attend`, with
/// `pattern` masking by absolute position.
fn decode_through(
    cache: &mut impl DecodeCache,
    sequence: &Sequence,
    step_lengths: &[usize],
    pattern: Option<&SparsePattern<'_>>,
) -> Vec<f32> {
    let (query_row, key_row) = (sequence.query_row_length(), sequence.key_row_length());
    let len = sequence.shape.query_len;
    let mut output = vec![0.0; len * query_row];
    let mut workspace = FlashAttentionWorkspace::default();
    for &step in step_lengths.iter().cycle() {
        let first = cache.position();
        if first == len {
            break;
        }
        let tokens = step.min(len - first);
        let keys = first * key_row..(first + tokens) * key_row;
        let queries = first * query_row..(first + tokens) * query_row;
        let shape = AttentionShape {
            query_len: tokens,
            ..sequence.shape
        };
        let scale = 1.0 / (sequence.shape.head_dim as f32).sqrt();
        cache
            .attend(
                0,
                "attention",
                &sequence.q[queries.clone()],
                &sequence.k[keys.clone()],
                &sequence.v[keys],
                &shape,
                scale,
                pattern,
                &mut output[queries],
                &mut workspace,
            )
            .unwrap();
        cache.advance(tokens).unwrap();
    }
    output
}

#[test]
fn every_decode_cache_matches_full_attention_with_a_window_pattern() {
    let window = 6;
    let pattern = SparsePattern {
        window: Some(window),
        dilation: 1,
        global_tokens: &[],
        strided: None,
        block_size: 8,
        block_mask: &[],
    };
    let sequence = Sequence::random(45, 4, 2, 8, 300);
    for (pattern, expected) in [
        (None, sequence.full_attention(None)),
        (Some(&pattern), sequence.full_attention(Some(window))),
    ] {
        let steps: &[usize] = &[1, 4, 2, 5];
        let mut contiguous = KvCache::new(1, 48, 2, 8);
        let error = max_abs_difference(
            &decode_through(&mut contiguous, &sequence, steps, pattern),
            &expected,
        );
        assert!(error <= 1e-4, "contiguous: error {error}");
        if pattern.is_some() {
            let mut rolling = KvCache::rolling(1, window, 2, 8);
            let error = max_abs_difference(
                &decode_through(&mut rolling, &sequence, steps, pattern),
                &expected,
            );
            assert!(error <= 1e-4, "rolling: error {error}");
        }
        // A paged sequence beside another that holds some blocks, so its table is not 0, 1, ...
        let mut paged = PagedKvCache::new(1, 20, 3, 2, 8);
        let other = paged.add_sequence();
        paged.append(other, 0, &[0.0; 16], &[0.0; 16], 1).unwrap();
        paged.advance(other, 1).unwrap();
        let seq = paged.add_sequence();
        let decoded = decode_through(&mut paged.sequence(seq).unwrap(), &sequence, steps, pattern);
        assert_ne!(paged.block_table(seq).unwrap()[0], 0);
        let error = max_abs_difference(&decoded, &expected);
        assert!(error <= 1e-4, "paged: error {error}");
    }
}
