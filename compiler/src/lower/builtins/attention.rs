//! Attention and the positions it uses: `attention` (dense, grouped-query, masked, sparse patterns,
//! KV cache) and `rope` (rotary position embeddings on queries and keys).

use crate::ir::{AttentionAttrs, BlockMask, Op, SparsePattern};
use crate::lower::Eval;
use crate::lower::call::CallCx;
use crate::lower::value::Value;

/// `attention(q, k, v, heads, ...)`: see the attention section of docs/language.md.
pub(super) fn attention(cx: &mut CallCx<'_, '_>) -> Eval<Value> {
    let q = cx.tensor("q")?;
    let k = cx.tensor("k")?;
    let v = cx.tensor("v")?;
    let heads = cx.positive("heads", None)?;
    let kv_heads = cx.positive("kv_heads", Some(heads as i64))?;
    let width = cx.last_dim(q, "q")?;
    if width % heads != 0 {
        return Err(cx.error(
            "heads",
            format!("heads = {heads} does not divide the query size {width}"),
            Some("the query size is heads × head_dim"),
        ));
    }
    let head_dim = width / heads;
    let causal = cx.bool("causal", Some(false))?;
    let scale = match cx.present("scale") {
        true => cx.float("scale", None)? as f32,
        false => 1.0 / (head_dim as f32).sqrt(),
    };
    let mask = cx.optional_tensor("mask")?;
    let queries = cx.shape(q).get(1).copied().unwrap_or(1);
    let keys = cx.shape(k).get(1).copied().unwrap_or(1);
    let positions = queries.max(keys);

    let window = cx.optional_positive("window")?;
    let dilation = cx.positive("dilation", Some(1))?;
    if cx.present("dilation") && window.is_none() {
        return Err(cx.error(
            "dilation",
            "`dilation` needs a `window`",
            Some("a dilated window is `window = w, dilation = d`"),
        ));
    }
    let global_tokens = match cx.slot("global_tokens") {
        None => Vec::new(),
        Some((Value::Int(count), _)) => {
            // A count means the first `count` tokens, as in Longformer's classification setup.
            if count < 1 || count as usize > positions {
                return Err(cx.error(
                    "global_tokens",
                    format!("{count} global tokens do not fit a sequence of {positions}"),
                    None,
                ));
            }
            (0..count as usize).collect()
        }
        Some(_) => {
            let tokens = cx.int_list("global_tokens", None)?;
            let mut result = Vec::new();
            for token in tokens {
                if token < 0 || token as usize >= positions {
                    return Err(cx.error(
                        "global_tokens",
                        format!("global token {token} is outside the sequence of {positions}"),
                        None,
                    ));
                }
                result.push(token as usize);
            }
            result.sort_unstable();
            result.dedup();
            result
        }
    };
    let strided = cx.optional_positive("strided")?;
    let block_size = cx.optional_positive("block_size")?;
    let block_mask = match (cx.present("block_mask"), block_size) {
        (false, None) => None,
        (false, Some(_)) => {
            return Err(cx.error("block_size", "`block_size` needs a `block_mask`", None));
        }
        (true, None) => {
            return Err(cx.error(
                "block_mask",
                "`block_mask` needs a `block_size`",
                Some("add `block_size = 64`, the side of each block"),
            ));
        }
        (true, Some(block_size)) => {
            let rows = cx.bool_matrix("block_mask")?;
            Some(BlockMask {
                block_size,
                blocks_per_row: rows.len(),
                mask: rows.concat(),
            })
        }
    };
    let kv_cache = cx.optional_positive("kv_cache")?;
    if let Some(max_context) = kv_cache
        && max_context < keys
    {
        return Err(cx.error(
            "kv_cache",
            format!("the KV cache holds {max_context} positions, fewer than the {keys} keys"),
            None,
        ));
    }
    let pattern = SparsePattern {
        window,
        dilation,
        global_tokens,
        strided,
        block_mask,
    };
    let attrs = AttentionAttrs {
        heads,
        kv_heads,
        head_dim,
        causal,
        scale,
        pattern,
        kv_cache,
        key_padding_mask: mask.is_some(),
    };
    let mut inputs = vec![(q, Some("q")), (k, Some("k")), (v, Some("v"))];
    if let Some(mask) = mask {
        inputs.push((mask, Some("mask")));
    }
    cx.node(Op::Attention(attrs), &inputs).map(Value::Tensor)
}

/// `rope(x, heads, theta, interleaved)`.
pub(super) fn rope(cx: &mut CallCx<'_, '_>) -> Eval<Value> {
    let x = cx.tensor("x")?;
    let heads = cx.positive("heads", None)?;
    let theta = cx.float("theta", Some(10000.0))?;
    if theta <= 1.0 {
        return Err(cx.error(
            "theta",
            format!("theta must be greater than 1, but it is {theta}"),
            None,
        ));
    }
    let interleaved = cx.bool("interleaved", Some(false))?;
    cx.node(
        Op::Rope {
            heads,
            theta: theta as f32,
            interleaved,
        },
        &[(x, Some("x"))],
    )
    .map(Value::Tensor)
}
