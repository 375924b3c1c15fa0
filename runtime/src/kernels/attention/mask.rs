//! The masks attention kernels accept: [`AttentionMask`], a restriction over (query row, key)
//! pairs of one call, and [`SparsePattern`], the sparse attention pattern of a model over
//! absolute positions (defined in `nnc-ops`, where the compiler's IR shares it).

/// A general mask over (query row, key index) pairs, shared by every batch and head.
#[derive(Clone, Copy, Default)]
pub enum AttentionMask<'a> {
    #[default]
    None,
    /// Row-major `[query_len, key_len]`; `true` allows the pair.
    Dense(&'a [bool]),
    /// `allowed(i, j)` for query row `i` (in `0..query_len`, not offset) and key `j`.
    Function(&'a (dyn Fn(usize, usize) -> bool + Sync)),
}

impl std::fmt::Debug for AttentionMask<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttentionMask::None => formatter.write_str("None"),
            AttentionMask::Dense(mask) => write!(formatter, "Dense({} entries)", mask.len()),
            AttentionMask::Function(_) => formatter.write_str("Function(..)"),
        }
    }
}

/// The sparse attention pattern over absolute positions, defined once for the compiler and the
/// runtime in `nnc-ops`.
pub use nnc_ops::SparsePattern;
