//! The sizes of an attention call and the sparse pattern of positions it may look at. Its
//! options, which may borrow masks, stay in the runtime.

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

/// A sparse attention pattern: which (query, key) position pairs attention may look at before
/// the causal mask. A pair is kept if any present component keeps it; with no component the
/// pattern is dense. Distances are `|i - j|` for query position `i` and key position `j`.
///
/// This is the one definition of the pattern: the compiler's IR (which owns its lists) borrows
/// itself as this type to answer the same question, generated code writes it as a constant, and
/// every kernel and the cost model must agree with [`SparsePattern::allows`].
#[derive(Clone, Copy, Debug)]
pub struct SparsePattern<'a> {
    /// Sliding window: keeps `|i - j| < window * dilation` with `(i - j) % dilation == 0`.
    pub window: Option<usize>,
    pub dilation: usize,
    /// Positions that see and are seen by every position.
    pub global_tokens: &'a [usize],
    /// Keeps `|i - j| < stride` or `(i - j) % stride == 0`.
    pub strided: Option<usize>,
    pub block_size: usize,
    /// A square row-major block mask; empty when there is none.
    pub block_mask: &'a [bool],
}

impl SparsePattern<'_> {
    /// Whether query position `query` may attend to key position `key`.
    pub fn allows(&self, query: usize, key: usize) -> bool {
        if self.window.is_none()
            && self.global_tokens.is_empty()
            && self.strided.is_none()
            && self.block_mask.is_empty()
        {
            return true;
        }
        let distance = query.abs_diff(key);
        let in_window = self.window.is_some_and(|window| {
            let dilation = self.dilation.max(1);
            distance < window.saturating_mul(dilation) && distance.is_multiple_of(dilation)
        });
        let global = self.global_tokens.contains(&query) || self.global_tokens.contains(&key);
        let strided = self
            .strided
            .is_some_and(|stride| distance < stride || distance.is_multiple_of(stride));
        let blocks_per_row = self.block_mask.len().isqrt();
        let (row, column) = (query / self.block_size.max(1), key / self.block_size.max(1));
        let in_block = row < blocks_per_row
            && column < blocks_per_row
            && self.block_mask[row * blocks_per_row + column];
        in_window || global || strided || in_block
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_patterns_keep_what_any_component_keeps() {
        let dense = SparsePattern {
            window: None,
            dilation: 1,
            global_tokens: &[],
            strided: None,
            block_size: 1,
            block_mask: &[],
        };
        assert!(dense.allows(0, 9) && dense.allows(9, 0));
        let window = SparsePattern {
            window: Some(2),
            dilation: 2,
            ..dense
        };
        // Distances 0 and 2 are kept; 1 is not a multiple of the dilation, 4 is outside.
        let kept: Vec<usize> = (0..6).filter(|&key| window.allows(5, key)).collect();
        assert_eq!(kept, [3, 5]);
        let global = SparsePattern {
            global_tokens: &[0],
            ..window
        };
        assert!(global.allows(5, 0) && global.allows(0, 4) && !global.allows(5, 1));
        let strided = SparsePattern {
            strided: Some(3),
            ..dense
        };
        let kept: Vec<usize> = (0..8).filter(|&key| strided.allows(7, key)).collect();
        assert_eq!(kept, [1, 4, 5, 6, 7]);
        let blocks = SparsePattern {
            block_size: 2,
            block_mask: &[true, false, false, true],
            ..dense
        };
        assert!(blocks.allows(1, 0) && !blocks.allows(1, 2) && blocks.allows(3, 2));
        // Positions past the block mask are masked out.
        assert!(!blocks.allows(4, 4));
    }
}
