//! The sizes of an attention call. Its options, which may borrow masks, stay in the runtime.

/// The sizes of one attention call. `q` is `[batch, query_len, n_heads * head_dim]`, `k` and
/// `v` are `[batch, key_len, n_kv_heads * head_dim]`, and the output is shaped like `q`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    pub batch: usize,
    pub query_len: usize,
    pub key_len: usize,
    pub n_heads: usize,
    /// Key/value heads; query head `h` reads key/value head `h / (n_heads / n_kv_heads)`.
    pub n_kv_heads: usize,
    pub head_dim: usize,
}
