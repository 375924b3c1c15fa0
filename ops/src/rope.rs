//! The options of rotary position embedding (RoPE): which elements of a head form the rotated
//! pairs, and where the rotated tokens sit.

/// Which elements of a head form the rotated pairs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeConvention {
    /// Pairs `(x[i], x[i + d/2])`, Hugging Face Llama / GPT-NeoX (`rotate_half`).
    HalfSplit,
    /// Pairs `(x[2i], x[2i + 1])`, GPT-J / the original RoFormer (`rotate_every_two`).
    Interleaved,
}

/// Options of `apply_rope`.
#[derive(Clone, Copy, Debug)]
pub struct RopeOptions {
    pub n_heads: usize,
    pub convention: RopeConvention,
    /// The absolute position of the first token (the KV-cache length when decoding).
    pub position_offset: usize,
}
