use super::*;
use crate::reference;
use crate::test_support::{assert_close, values};
use proptest::prelude::*;

/// A random attention problem: sizes, options and data.
#[derive(Debug, Clone)]
struct Case {
    shape: AttentionShape,
    causal: bool,
    offset: usize,
    scale: Option<f32>,
    padding: Option<Vec<i64>>,
    dense_mask: Option<Vec<bool>>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

fn cases() -> impl Strategy<Value = Case> {
    (
        (1..3usize, 1..9usize, 0..11usize),
        (1..3usize, 1..4usize, 1..10usize),
        (any::<bool>(), 0..4usize, prop::option::of(0.1f32..1.0)),
        (any::<bool>(), any::<bool>()),
    )
        .prop_flat_map(
            |((batch, query_len, key_len), (n_kv_heads, group, head_dim), options, masks)| {
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
                    Just((shape, options, masks)),
                    values(q_length),
                    values(kv_length),
                    values(kv_length),
                    prop::collection::vec(0..3i64, batch * key_len),
                    prop::collection::vec(any::<bool>(), query_len * key_len),
                )
            },
        )
        .prop_map(
            |(
                (shape, (causal, offset, scale), (with_padding, with_mask)),
                q,
                k,
                v,
                padding,
                mask,
            )| {
                Case {
                    shape,
                    causal,
                    offset,
                    scale,
                    padding: with_padding.then_some(padding),
                    dense_mask: with_mask.then_some(mask),
                    q,
                    k,
                    v,
                }
            },
        )
}

impl Case {
    fn options(&self) -> AttentionOptions<'_> {
        AttentionOptions {
            scale: self.scale,
            causal: self.causal,
            query_position_offset: self.offset,
            key_padding_mask: self.padding.as_deref(),
            mask: match &self.dense_mask {
                Some(mask) => AttentionMask::Dense(mask),
                None => AttentionMask::None,
            },
        }
    }

    fn expected(&self) -> Vec<f32> {
        let dense = self.dense_mask.as_deref();
        let key_len = self.shape.key_len;
        let allowed = |i: usize, j: usize| dense.is_none_or(|mask| mask[i * key_len + j]);
        reference::attention(
            &self.q,
            &self.k,
            &self.v,
            &reference::AttentionParams {
                batch: self.shape.batch,
                query_len: self.shape.query_len,
                key_len,
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn attention_matches_reference(case in cases()) {
        let mut output = vec![0.0; case.q.len()];
        scaled_dot_product_attention(
            &case.q, &case.k, &case.v, &case.shape, &case.options(), &mut output,
        )
        .unwrap();
        assert_close(&output, &case.expected(), 1e-4);
    }
}

#[test]
fn function_mask_and_long_queries_match_reference() {
    // More queries than one block, a sliding window as the general mask, and causal decoding
    // with an offset.
    let shape = AttentionShape {
        batch: 1,
        query_len: 70,
        key_len: 75,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 8,
    };
    let q: Vec<f32> = (0..70 * 32)
        .map(|i| ((i * 7) % 19) as f32 / 10.0 - 0.9)
        .collect();
    let k: Vec<f32> = (0..75 * 16)
        .map(|i| ((i * 5) % 17) as f32 / 9.0 - 0.9)
        .collect();
    let v: Vec<f32> = (0..75 * 16)
        .map(|i| ((i * 3) % 13) as f32 / 7.0 - 0.9)
        .collect();
    let window = |i: usize, j: usize| j + 8 > i + 5;
    let options = AttentionOptions {
        causal: true,
        query_position_offset: 5,
        mask: AttentionMask::Function(&window),
        ..AttentionOptions::default()
    };
    let mut output = vec![0.0; q.len()];
    scaled_dot_product_attention(&q, &k, &v, &shape, &options, &mut output).unwrap();
    let expected = reference::attention(
        &q,
        &k,
        &v,
        &reference::AttentionParams {
            batch: 1,
            query_len: 70,
            key_len: 75,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 8,
            scale: None,
            causal: true,
            query_position_offset: 5,
            key_padding_mask: None,
            allowed: &window,
        },
    );
    assert_close(&output, &expected, 1e-4);
}

#[test]
fn fully_masked_rows_give_zeros() {
    let shape = AttentionShape {
        batch: 1,
        query_len: 2,
        key_len: 2,
        n_heads: 1,
        n_kv_heads: 1,
        head_dim: 2,
    };
    let data = [1.0, 2.0, 3.0, 4.0];
    let options = AttentionOptions {
        key_padding_mask: Some(&[0, 0]),
        ..AttentionOptions::default()
    };
    let mut output = [7.0; 4];
    scaled_dot_product_attention(&data, &data, &data, &shape, &options, &mut output).unwrap();
    assert_eq!(output, [0.0; 4]);
}

#[test]
fn invalid_shapes_are_errors() {
    let shape = AttentionShape {
        batch: 1,
        query_len: 1,
        key_len: 1,
        n_heads: 3,
        n_kv_heads: 2,
        head_dim: 1,
    };
    let data = [0.0; 3];
    let mut output = [0.0; 3];
    let options = AttentionOptions::default();
    assert!(
        scaled_dot_product_attention(&data, &data[..2], &data[..2], &shape, &options, &mut output)
            .is_err()
    );
    let shape = AttentionShape {
        n_kv_heads: 1,
        ..shape
    };
    assert!(
        scaled_dot_product_attention(&data, &data[..1], &data[..1], &shape, &options, &mut output)
            .is_ok()
    );
    let options = AttentionOptions {
        mask: AttentionMask::Dense(&[true, false]),
        ..AttentionOptions::default()
    };
    assert!(
        scaled_dot_product_attention(&data, &data[..1], &data[..1], &shape, &options, &mut output)
            .is_err()
    );
}
