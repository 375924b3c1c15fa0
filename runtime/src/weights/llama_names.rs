//! llama.cpp's tensor names for the llama architecture, mapped to the Hugging Face names the
//! `.nn` models use, and the undoing of llama.cpp's q/k row permutation.
//!
//! llama.cpp's `convert_hf_to_gguf.py` renames `model.layers.N.self_attn.q_proj.weight` to
//! `blk.N.attn_q.weight` and so on, and permutes the rows of q and k so that its rotary kernel
//! can rotate adjacent pairs (GPT-J style) where Hugging Face rotates the two halves of each head
//! (NeoX style). nnc's `rope` rotates halves, as Hugging Face does, so the rows are put back as
//! transformers' GGUF loader does (`reverse_permute_weights` in
//! `transformers/modeling_gguf_pytorch_utils.py`).

/// The Hugging Face name of the llama.cpp tensor `name`, or `None` if it is not a llama tensor
/// nnc knows (it then keeps its name).
pub fn hugging_face_name(name: &str) -> Option<String> {
    let global = match name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(global) = global {
        return Some(global.to_string());
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    if layer.is_empty() || !layer.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let (tensor, suffix) = rest.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    let module = match tensor {
        "attn_norm" => "input_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_norm" => "post_attention_layernorm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{module}.{suffix}"))
}

/// How many heads the rows of the llama.cpp tensor `name` were permuted over: `head_count` for
/// q, `head_count_kv` for k, `None` for tensors that were not permuted.
pub fn permuted_heads(name: &str, head_count: usize, head_count_kv: usize) -> Option<usize> {
    let (_, tensor) = name.strip_prefix("blk.")?.split_once('.')?;
    match tensor {
        "attn_q.weight" | "attn_q.bias" => Some(head_count),
        "attn_k.weight" | "attn_k.bias" => Some(head_count_kv),
        _ => None,
    }
}

/// Undoes llama.cpp's permutation of the rows of a q or k projection with `heads` heads:
/// `values` holds `rows` rows of `columns` values (columns = 1 for a bias), or of `columns`
/// bytes when the rows are blocks of a quantized format kept as the file stores them.
///
/// llama.cpp stores, within each head of `2 * half` rows, row `2 * i + j` (pair `i`, element `j`)
/// where Hugging Face has row `j * half + i`. Returns `None` when the rows do not split into
/// `heads` heads of an even size.
pub fn reverse_permute_rows<T: Copy + Default>(
    values: &[T],
    heads: usize,
    columns: usize,
) -> Option<Vec<T>> {
    if heads == 0 || columns == 0 || !values.len().is_multiple_of(columns) {
        return None;
    }
    let rows = values.len() / columns;
    if !rows.is_multiple_of(2 * heads) {
        return None;
    }
    let half = rows / heads / 2;
    let mut output = vec![T::default(); values.len()];
    for head in 0..heads {
        for pair in 0..half {
            for element in 0..2 {
                let from = head * 2 * half + 2 * pair + element;
                let to = head * 2 * half + element * half + pair;
                output[to * columns..(to + 1) * columns]
                    .copy_from_slice(&values[from * columns..(from + 1) * columns]);
            }
        }
    }
    Some(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_llama_cpp_names_to_hugging_face() {
        let cases = [
            ("token_embd.weight", "model.embed_tokens.weight"),
            ("output_norm.weight", "model.norm.weight"),
            ("output.weight", "lm_head.weight"),
            (
                "blk.0.attn_q.weight",
                "model.layers.0.self_attn.q_proj.weight",
            ),
            (
                "blk.12.attn_k.bias",
                "model.layers.12.self_attn.k_proj.bias",
            ),
            (
                "blk.3.attn_output.weight",
                "model.layers.3.self_attn.o_proj.weight",
            ),
            (
                "blk.29.ffn_norm.weight",
                "model.layers.29.post_attention_layernorm.weight",
            ),
            (
                "blk.1.ffn_down.weight",
                "model.layers.1.mlp.down_proj.weight",
            ),
            (
                "blk.1.attn_norm.weight",
                "model.layers.1.input_layernorm.weight",
            ),
        ];
        for (llama_cpp, hugging_face) in cases {
            assert_eq!(
                hugging_face_name(llama_cpp).as_deref(),
                Some(hugging_face),
                "{llama_cpp}"
            );
        }
        for unknown in [
            "rope_freqs.weight",
            "blk.x.attn_q.weight",
            "blk.0.attn_q",
            "blk.0.foo.weight",
        ] {
            assert_eq!(hugging_face_name(unknown), None, "{unknown}");
        }
    }

    /// llama.cpp's `permute` in `convert_hf_to_gguf.py`: `reshape(heads, 2, half, ...)
    /// .swapaxes(1, 2).reshape(shape)`.
    fn permute_like_llama_cpp(values: &[f32], heads: usize, columns: usize) -> Vec<f32> {
        let rows = values.len() / columns;
        let half = rows / heads / 2;
        let mut output = vec![0.0; values.len()];
        for head in 0..heads {
            for element in 0..2 {
                for pair in 0..half {
                    let from = head * 2 * half + element * half + pair;
                    let to = head * 2 * half + pair * 2 + element;
                    output[to * columns..(to + 1) * columns]
                        .copy_from_slice(&values[from * columns..(from + 1) * columns]);
                }
            }
        }
        output
    }

    #[test]
    fn reverse_permutation_undoes_llama_cpp_permutation() {
        for (heads, half, columns) in [(1, 1, 1), (3, 2, 5), (9, 32, 3), (2, 4, 1)] {
            let rows = heads * half * 2;
            let original: Vec<f32> = (0..rows * columns).map(|value| value as f32).collect();
            let permuted = permute_like_llama_cpp(&original, heads, columns);
            assert_eq!(
                reverse_permute_rows(&permuted, heads, columns).unwrap(),
                original
            );
        }
        // One head of four rows: llama.cpp's rows 0, 1, 2, 3 are Hugging Face's rows 0, 2, 1, 3.
        assert_eq!(
            reverse_permute_rows(&[0.0, 1.0, 2.0, 3.0], 1, 1).unwrap(),
            vec![0.0, 2.0, 1.0, 3.0]
        );
        assert_eq!(reverse_permute_rows(&[0.0; 6], 2, 1), None);
        assert_eq!(reverse_permute_rows(&[0.0; 6], 0, 1), None);
    }

    #[test]
    fn only_q_and_k_are_permuted() {
        assert_eq!(permuted_heads("blk.0.attn_q.weight", 9, 3), Some(9));
        assert_eq!(permuted_heads("blk.0.attn_k.weight", 9, 3), Some(3));
        assert_eq!(permuted_heads("blk.0.attn_v.weight", 9, 3), None);
        assert_eq!(permuted_heads("token_embd.weight", 9, 3), None);
    }
}
