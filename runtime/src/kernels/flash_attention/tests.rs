use super::*;
use crate::reference;
use crate::test_support::values;
use proptest::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The element-level restriction of a random case, beyond causality and padding.
#[derive(Clone, Debug)]
enum MaskKind {
    None,
    /// A random `[query_len, key_len]` mask, passed as `AttentionMask::Dense`.
    Dense(Vec<bool>),
    /// Query `i` (at absolute position `offset + i`) sees keys less than `window` away.
    SlidingWindow {
        window: usize,
    },
    /// Keys at a multiple of `stride` before the query, plus a local window (Sparse
    /// Transformer's strided pattern).
    Strided {
        stride: usize,
        local: usize,
    },
    /// The first `globals` queries and keys see and are seen by everything, plus a local window
    /// (Longformer's global tokens).
    GlobalTokens {
        globals: usize,
        local: usize,
    },
    /// Random block pairs, kept whole (a layout built from key block lists, no element mask).
    RandomBlocks(Vec<Vec<usize>>),
}

/// A random attention problem for the tiled kernel.
#[derive(Clone, Debug)]
struct Case {
    shape: AttentionShape,
    block_size: usize,
    causal: bool,
    offset: usize,
    scale: Option<f32>,
    padding: Option<Vec<i64>>,
    mask: MaskKind,
    /// Whether to pass a layout built from the mask (for predicates) or to run dense.
    use_layout: bool,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

impl Case {
    /// The element mask, without causality and padding.
    fn allowed(&self, query: usize, key: usize) -> bool {
        let position = self.offset + query;
        match &self.mask {
            MaskKind::None => true,
            MaskKind::Dense(mask) => mask[query * self.shape.key_len + key],
            MaskKind::SlidingWindow { window } => position.abs_diff(key) < *window,
            MaskKind::Strided { stride, local } => {
                position.abs_diff(key) < *local
                    || (key <= position && (position - key).is_multiple_of(*stride))
            }
            MaskKind::GlobalTokens { globals, local } => {
                query < *globals || key < *globals || position.abs_diff(key) < *local
            }
            MaskKind::RandomBlocks(rows) => {
                rows[query / self.block_size].contains(&(key / self.block_size))
            }
        }
    }

    fn layout(&self) -> Option<BlockSparseLayout> {
        let AttentionShape {
            query_len, key_len, ..
        } = self.shape;
        match &self.mask {
            MaskKind::RandomBlocks(rows) => Some(
                BlockSparseLayout::from_key_blocks(self.block_size, query_len, key_len, rows)
                    .unwrap(),
            ),
            _ if self.use_layout => Some(
                BlockSparseLayout::from_predicate(self.block_size, query_len, key_len, |i, j| {
                    self.allowed(i, j)
                })
                .unwrap(),
            ),
            _ => None,
        }
    }

    fn run(&self) -> Vec<f32> {
        let allowed = |i: usize, j: usize| self.allowed(i, j);
        let mask = match &self.mask {
            MaskKind::None | MaskKind::RandomBlocks(_) => AttentionMask::None,
            MaskKind::Dense(mask) => AttentionMask::Dense(mask),
            _ => AttentionMask::Function(&allowed),
        };
        let options = AttentionOptions {
            scale: self.scale,
            causal: self.causal,
            query_position_offset: self.offset,
            key_padding_mask: self.padding.as_deref(),
            mask,
        };
        let layout = self.layout();
        let mut workspace = FlashAttentionWorkspace::with_block_size(&self.shape, self.block_size);
        let mut output = vec![f32::NAN; self.q.len()];
        flash_attention(
            &self.q,
            &self.k,
            &self.v,
            &self.shape,
            &options,
            layout.as_ref(),
            &mut output,
            &mut workspace,
        )
        .unwrap();
        output
    }

    fn expected(&self) -> Vec<f32> {
        let allowed = |i: usize, j: usize| self.allowed(i, j);
        reference::attention(
            &self.q,
            &self.k,
            &self.v,
            &reference::AttentionParams {
                batch: self.shape.batch,
                query_len: self.shape.query_len,
                key_len: self.shape.key_len,
                n_heads: self.shape.n_heads,
                n_kv_heads: self.shape.n_kv_heads,
                head_dim: self.shape.head_dim,
                scale: self.scale,
                causal: self.causal,
                query_position_offset: self.offset,
                key_padding_mask: self.padding.as_deref(),
                allowed: &allowed,
            },
        )
    }
}

/// Asserts that no element differs by more than `tolerance`.
#[track_caller]
fn assert_max_abs_error(actual: &[f32], expected: &[f32], tolerance: f32) {
    assert_eq!(actual.len(), expected.len());
    let (index, error) = actual
        .iter()
        .zip(expected)
        .map(|(&actual, &expected)| (actual - expected).abs())
        .enumerate()
        .fold((0, 0.0f32), |(best_index, best), (index, error)| {
            if error > best || error.is_nan() {
                (index, error)
            } else {
                (best_index, best)
            }
        });
    assert!(
        error <= tolerance,
        "element {index}: got {}, expected {} (error {error})",
        actual[index],
        expected[index]
    );
}

fn mask_kinds(
    query_len: usize,
    key_len: usize,
    block_size: usize,
) -> impl Strategy<Value = MaskKind> {
    let query_blocks = query_len.div_ceil(block_size);
    let key_blocks = key_len.div_ceil(block_size);
    prop_oneof![
        Just(MaskKind::None),
        prop::collection::vec(any::<bool>(), query_len * key_len).prop_map(MaskKind::Dense),
        (1..40usize).prop_map(|window| MaskKind::SlidingWindow { window }),
        (1..9usize, 1..6usize).prop_map(|(stride, local)| MaskKind::Strided { stride, local }),
        (0..4usize, 1..10usize)
            .prop_map(|(globals, local)| MaskKind::GlobalTokens { globals, local }),
        prop::collection::vec(
            prop::collection::vec(0..key_blocks, 0..=key_blocks),
            query_blocks
        )
        .prop_map(MaskKind::RandomBlocks),
    ]
}

fn cases() -> impl Strategy<Value = Case> {
    (
        (1..3usize, 1..120usize, 1..120usize),
        (1..3usize, 1..4usize, 8..=64usize),
        prop_oneof![Just(16usize), Just(64), 1..70usize],
        (any::<bool>(), 0..40usize, prop::option::of(0.05f32..0.5)),
        (any::<bool>(), any::<bool>()),
    )
        .prop_flat_map(
            |(
                (batch, query_len, key_len),
                (n_kv_heads, group, head_dim),
                block_size,
                options,
                (with_padding, use_layout),
            )| {
                let shape = AttentionShape {
                    batch,
                    query_len,
                    key_len,
                    n_heads: n_kv_heads * group,
                    n_kv_heads,
                    head_dim,
                };
                let q_length = batch * query_len * shape.n_heads * head_dim;
                let kv_length = batch * key_len * n_kv_heads * head_dim;
                (
                    Just((shape, block_size, options, with_padding, use_layout)),
                    values(q_length),
                    values(kv_length),
                    values(kv_length),
                    prop::collection::vec(0..4i64, batch * key_len),
                    mask_kinds(query_len, key_len, block_size),
                )
            },
        )
        .prop_map(
            |(
                (shape, block_size, (causal, offset, scale), with_padding, use_layout),
                q,
                k,
                v,
                padding,
                mask,
            )| Case {
                shape,
                block_size,
                causal,
                offset: if causal { offset } else { 0 },
                scale,
                padding: with_padding.then_some(padding),
                mask,
                use_layout,
                q,
                k,
                v,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn tiled_attention_matches_reference(case in cases()) {
        assert_max_abs_error(&case.run(), &case.expected(), 1e-4);
    }
}

fn ramp_case(shape: AttentionShape) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let q_length = shape.batch * shape.query_len * shape.n_heads * shape.head_dim;
    let kv_length = shape.batch * shape.key_len * shape.n_kv_heads * shape.head_dim;
    let q = (0..q_length)
        .map(|i| ((i * 7) % 19) as f32 / 10.0 - 0.9)
        .collect();
    let k = (0..kv_length)
        .map(|i| ((i * 5) % 17) as f32 / 9.0 - 0.9)
        .collect();
    let v = (0..kv_length)
        .map(|i| ((i * 3) % 13) as f32 / 7.0 - 0.9)
        .collect();
    (q, k, v)
}

/// The plain kernel's output and the tiled kernel's (no layout, through `workspace`) on the same
/// problem.
fn plain_and_tiled(
    (q, k, v): (&[f32], &[f32], &[f32]),
    shape: &AttentionShape,
    options: &AttentionOptions<'_>,
    workspace: &mut FlashAttentionWorkspace,
) -> (Vec<f32>, Vec<f32>) {
    let mut expected = vec![0.0; q.len()];
    crate::kernels::attention::scaled_dot_product_attention(q, k, v, shape, options, &mut expected)
        .unwrap();
    let mut output = vec![0.0; q.len()];
    flash_attention(q, k, v, shape, options, None, &mut output, workspace).unwrap();
    (expected, output)
}

#[test]
fn agrees_with_the_plain_kernel_for_every_thread_count() {
    let _guard = crate::test_support::lock_thread_count();
    // Two heads sharing one key/value head, fewer heads than threads (so query blocks are
    // split between threads), causal decoding with an offset and a long key sequence.
    let shape = AttentionShape {
        batch: 1,
        query_len: 200,
        key_len: 230,
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 24,
    };
    let (q, k, v) = ramp_case(shape);
    let options = AttentionOptions {
        causal: true,
        query_position_offset: 30,
        ..AttentionOptions::default()
    };
    for threads in [1, 3, 4] {
        crate::set_num_threads(threads);
        let mut workspace = FlashAttentionWorkspace::new(&shape);
        let (expected, output) = plain_and_tiled((&q, &k, &v), &shape, &options, &mut workspace);
        assert_max_abs_error(&output, &expected, 1e-4);
    }
    crate::set_num_threads(0);
}

#[test]
fn units_claimed_by_any_number_of_threads_give_the_same_bits() {
    let _guard = crate::test_support::lock_thread_count();
    // Two sequences of eight heads on two key/value heads (claims of the four units that share
    // one at two threads, of one unit at three), of six heads each with its own, and one of
    // nine heads on three (SmolLM2's: three claims of three units would leave a slot one, so
    // single units).
    for (batch, n_heads, n_kv_heads, claim_at_two) in [(2, 8, 2, 4), (2, 6, 6, 1), (1, 9, 3, 1)] {
        let shape = AttentionShape {
            batch,
            query_len: 40,
            key_len: 40,
            n_heads,
            n_kv_heads,
            head_dim: 16,
        };
        let (q, k, v) = ramp_case(shape);
        let options = AttentionOptions {
            causal: true,
            ..AttentionOptions::default()
        };
        let mut outputs = Vec::new();
        for threads in [1, 2, 3] {
            crate::set_num_threads(threads);
            if threads == 2 {
                assert_eq!(
                    WorkPlan::new(&shape, 40).claim,
                    claim_at_two,
                    "{n_heads} heads"
                );
            }
            let mut workspace = FlashAttentionWorkspace::new(&shape);
            let (expected, output) =
                plain_and_tiled((&q, &k, &v), &shape, &options, &mut workspace);
            assert_max_abs_error(&output, &expected, 1e-4);
            outputs.push(
                output
                    .iter()
                    .map(|value| value.to_bits())
                    .collect::<Vec<_>>(),
            );
        }
        assert_eq!(outputs[0], outputs[1], "{n_heads} heads, two threads");
        assert_eq!(outputs[0], outputs[2], "{n_heads} heads, three threads");
    }
    crate::set_num_threads(0);
}

#[test]
fn short_sequences_are_one_block_and_a_cache_keeps_its_block_size() {
    let _guard = crate::test_support::lock_thread_count();
    crate::set_num_threads(2);
    let encoder = AttentionShape {
        batch: 1,
        query_len: 100,
        key_len: 100,
        n_heads: 4,
        n_kv_heads: 4,
        head_dim: 8,
    };
    assert_eq!(
        FlashAttentionWorkspace::new(&encoder).dense_block_size(),
        100
    );
    // Fewer heads than threads: blocks of the default size, which split between threads.
    let one_head = AttentionShape {
        n_heads: 1,
        n_kv_heads: 1,
        ..encoder
    };
    assert_eq!(
        FlashAttentionWorkspace::new(&one_head).dense_block_size(),
        DEFAULT_BLOCK_SIZE
    );
    // A KV cache's workspace, made for its largest step, keeps that step's block size for
    // shorter ones, whose own choice would be one block (and would grow the workspace).
    let largest = AttentionShape {
        query_len: 16,
        key_len: 300,
        ..encoder
    };
    let mut workspace = FlashAttentionWorkspace::new(&largest);
    assert_eq!(workspace.dense_block_size(), DEFAULT_BLOCK_SIZE);
    let bytes = workspace.allocated_bytes();
    for (query_len, key_len) in [(16, 16), (1, 120), (16, 128), (1, 300)] {
        let shape = AttentionShape {
            query_len,
            key_len,
            ..encoder
        };
        let (q, k, v) = ramp_case(shape);
        let options = AttentionOptions {
            causal: true,
            query_position_offset: key_len - query_len,
            key_padding_mask: None,
            ..AttentionOptions::default()
        };
        let (expected, output) = plain_and_tiled((&q, &k, &v), &shape, &options, &mut workspace);
        assert_max_abs_error(&output, &expected, 1e-4);
        assert_eq!(
            workspace.allocated_bytes(),
            bytes,
            "{query_len} x {key_len}"
        );
    }
    crate::set_num_threads(0);
}

#[test]
fn trailing_padding_is_left_out_and_inner_padding_masked() {
    // Two sequences of a batch: the first padded at its end (the keys left out of both
    // products), the second with padding inside and at its end; one block of 40 keys, and
    // blocks of 16 whose last ones are wholly padding.
    let shape = AttentionShape {
        batch: 2,
        query_len: 40,
        key_len: 40,
        n_heads: 2,
        n_kv_heads: 2,
        head_dim: 16,
    };
    let (q, k, v) = ramp_case(shape);
    let mut padding = vec![1i64; 2 * 40];
    padding[23..40].fill(0);
    padding[40 + 5] = 0;
    padding[40 + 17..40 + 19].fill(0);
    padding[40 + 30..].fill(0);
    let options = AttentionOptions {
        key_padding_mask: Some(&padding),
        ..AttentionOptions::default()
    };
    for block_size in [40, 16] {
        let mut workspace = FlashAttentionWorkspace::with_block_size(&shape, block_size);
        let (expected, output) = plain_and_tiled((&q, &k, &v), &shape, &options, &mut workspace);
        assert_max_abs_error(&output, &expected, 1e-5);
    }
}

#[test]
fn only_partial_blocks_of_the_layout_evaluate_the_element_mask() {
    let _guard = crate::test_support::lock_thread_count();
    let shape = AttentionShape {
        batch: 1,
        query_len: 64,
        key_len: 64,
        n_heads: 1,
        n_kv_heads: 1,
        head_dim: 8,
    };
    let (q, k, v) = ramp_case(shape);
    let block_size = 16;
    // A sliding window of 20 around the diagonal: per query block, the diagonal block is full,
    // its neighbours partial, and the rest absent.
    let window = |i: usize, j: usize| i.abs_diff(j) < 20;
    let layout = BlockSparseLayout::from_predicate(block_size, 64, 64, window).unwrap();
    assert_eq!(layout.key_blocks(0), &[0, 1, 2]);
    assert_eq!(layout.partial_blocks(0), &[false, true, true]);
    assert_eq!(layout.key_blocks(2), &[0, 1, 2, 3]);
    assert_eq!(layout.kept_block_count(), 14);
    let calls = AtomicUsize::new(0);
    let counted = |i: usize, j: usize| {
        calls.fetch_add(1, Ordering::Relaxed);
        window(i, j)
    };
    let options = AttentionOptions {
        mask: AttentionMask::Function(&counted),
        ..AttentionOptions::default()
    };
    crate::set_num_threads(1);
    let mut workspace = FlashAttentionWorkspace::with_block_size(&shape, block_size);
    let mut output = vec![0.0; q.len()];
    flash_attention(
        &q,
        &k,
        &v,
        &shape,
        &options,
        Some(&layout),
        &mut output,
        &mut workspace,
    )
    .unwrap();
    crate::set_num_threads(0);
    let partial_blocks = layout.partial.iter().filter(|&&partial| partial).count();
    assert_eq!(
        calls.load(Ordering::Relaxed),
        partial_blocks * block_size * block_size
    );
    let expected = reference::attention(
        &q,
        &k,
        &v,
        &reference::AttentionParams {
            batch: 1,
            query_len: 64,
            key_len: 64,
            n_heads: 1,
            n_kv_heads: 1,
            head_dim: 8,
            scale: None,
            causal: false,
            query_position_offset: 0,
            key_padding_mask: None,
            allowed: &window,
        },
    );
    assert_max_abs_error(&output, &expected, 1e-4);
}

#[test]
fn rows_without_allowed_keys_give_zeros() {
    let shape = AttentionShape {
        batch: 2,
        query_len: 3,
        key_len: 5,
        n_heads: 1,
        n_kv_heads: 1,
        head_dim: 4,
    };
    let (q, k, v) = ramp_case(shape);
    // The first batch has no key left; in the second, only the last key, which the causal mask
    // hides from the first two queries.
    let padding = [0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let options = AttentionOptions {
        causal: true,
        query_position_offset: 2,
        key_padding_mask: Some(&padding),
        ..AttentionOptions::default()
    };
    let mut workspace = FlashAttentionWorkspace::new(&shape);
    let mut output = vec![7.0; q.len()];
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
    assert!(output[..12].iter().all(|&value| value == 0.0));
    let last_value = &v[9 * 4..10 * 4];
    assert_max_abs_error(&output[12..], &[&[0.0; 8][..], last_value].concat(), 1e-6);
}

#[test]
fn invalid_layouts_are_errors() {
    assert!(BlockSparseLayout::dense(0, 4, 4).is_err());
    assert!(BlockSparseLayout::from_key_blocks(2, 4, 4, &[vec![0], vec![2]]).is_err());
    assert!(BlockSparseLayout::from_key_blocks(2, 4, 4, &[vec![0]]).is_err());
    let layout = BlockSparseLayout::from_key_blocks(2, 4, 4, &[vec![1, 0, 1], vec![]]).unwrap();
    assert_eq!(layout.key_blocks(0), &[0, 1]);
    assert!(layout.key_blocks(1).is_empty());
    let shape = AttentionShape {
        batch: 1,
        query_len: 4,
        key_len: 5,
        n_heads: 1,
        n_kv_heads: 1,
        head_dim: 2,
    };
    let data = [0.0; 10];
    let mut output = [0.0; 8];
    let mut workspace = FlashAttentionWorkspace::new(&shape);
    let result = flash_attention(
        &data[..8],
        &data,
        &data,
        &shape,
        &AttentionOptions::default(),
        Some(&layout),
        &mut output,
        &mut workspace,
    );
    assert!(result.is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The packed key panel, through whichever kernel this processor takes (AVX2's transposes
    /// of eight by eight, AVX-512's gathers, the portable loop for a short panel), holds every
    /// key times the scale at `step * NR + lane`, and the lanes past the last key are left as
    /// they were.
    #[test]
    fn packed_key_panels_match_the_transpose(
        count in prop_oneof![Just(NR), 1..=NR],
        head_dim in 1..70usize,
        extra_stride in 0..20usize,
        scale in 0.05f32..2.0,
    ) {
        let key_stride = head_dim + extra_stride;
        let keys: Vec<f32> = (0..(count - 1) * key_stride + head_dim)
            .map(|index| ((index * 7919) % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        let mut packed = vec![f32::NAN; head_dim * NR];
        pack_key_panel(
            KeyPanel { keys: &keys, key_stride, count, head_dim, scale },
            &mut packed,
        );
        for step in 0..head_dim {
            for lane in 0..NR {
                let actual = packed[step * NR + lane];
                if lane < count {
                    prop_assert_eq!(actual, keys[lane * key_stride + step] * scale);
                } else {
                    prop_assert!(actual.is_nan());
                }
            }
        }
    }
}
