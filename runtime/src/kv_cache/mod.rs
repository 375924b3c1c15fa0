//! Key/value caches for autoregressive decoding: a preallocated contiguous cache
//! ([`KvCache::new`]), a rolling buffer for sliding-window attention ([`KvCache::rolling`]) and
//! a paged cache whose sequences share a pool of fixed-size blocks ([`PagedKvCache`]).
//!
//! # Protocol of a decoding step
//!
//! A step adds the same number of positions to every layer. For each layer in turn the model
//! computes the keys and values of the new tokens, calls `append(layer, ..)`, and runs
//! attention with the new tokens as queries and `keys(layer)` / `values(layer)` as keys and
//! values: the view already holds the rows just appended to that layer (they are *pending*).
//! Once every layer has been appended to, `advance(tokens)` commits the step; it checks that
//! every layer received exactly `tokens` rows. `len()` counts committed positions only, so
//! during a step it is the absolute position of the first new token.
//!
//! The causal mask of the attention kernels compares a key's index *in the view* with
//! `query_position_offset + i`, so pass `query_position_offset = cached_len()`: the number of
//! committed keys in the view in front of the new ones. For [`KvCache::new`] that equals
//! `len()`. For a rolling cache the view starts at absolute position `first_cached_position()`,
//! so view key `j` is absolute position `first_cached_position() + j`.
//!
//! # Layout
//!
//! Rows are `kv_heads * head_dim` floats (heads interleaved as the attention kernels expect,
//! `[key_len, n_kv_heads * head_dim]` with batch 1), so a view is directly the `k` or `v`
//! argument of `flash_attention` with `key_len` equal to the view's rows. Appending never moves
//! existing rows in a [`KvCache::new`] cache; a rolling cache moves at most `window` rows once
//! per `window` appended rows (see [`KvCache::rolling`]).

//!
//! # Modules
//!
//! [`contiguous`] holds [`KvCache`], [`paged`] holds [`PagedKvCache`] and [`PagedSequence`];
//! this module holds what both share: the [`DecodeCache`] trait generated decoders step
//! against, the step's attention options, and the argument checks.

use crate::error::ModelError;
use crate::kernels::attention::{AttentionMask, AttentionOptions, AttentionShape, SparsePattern};
use crate::kernels::flash_attention::FlashAttentionWorkspace;

pub mod contiguous;
pub mod paged;

pub use crate::error::{KvCacheError, SequenceId};
pub use contiguous::KvCache;
pub use paged::{PagedKvCache, PagedSequence};

/// The keys and values of the one sequence a decoding step extends: a [`KvCache`], or one
/// sequence of a [`PagedKvCache`] ([`PagedKvCache::sequence`]). Generated decoders run their
/// step against this trait, so one set of weights serves both.
///
/// A step calls `attend` once per cached attention layer, in layer order, then `advance`.
pub trait DecodeCache {
    /// Committed positions: the absolute position of the step's first token.
    fn position(&self) -> usize;

    /// Appends the step's keys and values (`[tokens, kv_heads * head_dim]` each, `tokens =
    /// shape.query_len`) to `layer`, then writes causal attention of the step's queries `q`
    /// over every key the layer holds to `output`. `shape.key_len` is ignored (the cache knows
    /// it); `pattern` masks (query, key) pairs by absolute position. Kernel errors name
    /// `layer_name`.
    #[allow(clippy::too_many_arguments)]
    fn attend(
        &mut self,
        layer: usize,
        layer_name: &'static str,
        q: &[f32],
        k_new: &[f32],
        v_new: &[f32],
        shape: &AttentionShape,
        scale: f32,
        pattern: Option<&SparsePattern<'_>>,
        output: &mut [f32],
        workspace: &mut FlashAttentionWorkspace,
    ) -> Result<(), ModelError>;

    /// Commits a step of `tokens` positions (see the module docs).
    fn advance(&mut self, tokens: usize) -> Result<(), KvCacheError>;

    /// Commits the first `tokens` positions of a step that appended `tokens + padding` rows to
    /// every layer, and forgets the last `padding` rows, as if the step had been `tokens` long:
    /// the end of a prefill chunk padded to the length the network was compiled for. Causal
    /// attention kept the real tokens from seeing the padding, which came after them; dropping
    /// it keeps later steps from seeing it. Blocks taken only for the padding go back to the pool.
    fn advance_dropping_padding(
        &mut self,
        tokens: usize,
        padding: usize,
    ) -> Result<(), KvCacheError>;

    /// Whether a step of `tokens` positions fits: a contiguous cache has the room, a rolling
    /// one takes that many in one step, a paged pool has the blocks. A decoder asks before
    /// padding a prefill chunk, and steps token by token instead when the padding does not fit.
    fn has_room_for(&self, tokens: usize) -> bool;
}

/// Steps of at most this many tokens attend through the direct kernel
/// (`kernels::paged_attention`: a paged sequence's blocks, or a contiguous cache's view as one
/// block, read in place on the calling thread); longer ones use the tiled kernel (a paged
/// sequence's blocks gathered first).
pub const DIRECT_ATTENTION_QUERIES: usize = 2;

/// Where a decoding step's queries and keys sit in the sequence.
#[derive(Clone, Copy)]
pub(crate) struct StepPositions {
    /// The absolute position of the step's first query.
    pub(crate) first_query: usize,
    /// The absolute position of the first key the cache hands to attention.
    pub(crate) first_key: usize,
    /// Keys in front of the step's first query: the causal mask's `query_position_offset`.
    pub(crate) queries_after: usize,
}

/// Runs `attend` with the options of a decoding step: causal, scaled by `scale`, and masked by
/// `pattern` (if any) at absolute positions.
pub(crate) fn with_step_options<R>(
    scale: f32,
    pattern: Option<&SparsePattern<'_>>,
    step: StepPositions,
    attend: impl FnOnce(&AttentionOptions<'_>) -> R,
) -> R {
    let allows = |query: usize, key: usize| {
        pattern.is_none_or(|pattern| pattern.allows(step.first_query + query, step.first_key + key))
    };
    let options = AttentionOptions {
        scale: Some(scale),
        causal: true,
        query_position_offset: step.queries_after,
        key_padding_mask: None,
        mask: match pattern {
            Some(_) => AttentionMask::Function(&allows),
            None => AttentionMask::None,
        },
    };
    attend(&options)
}

/// A `LayerOutOfRange` error unless `layer < layers`.
pub(crate) fn check_layer(layer: usize, layers: usize) -> Result<(), KvCacheError> {
    if layer < layers {
        Ok(())
    } else {
        Err(KvCacheError::LayerOutOfRange { layer, layers })
    }
}

/// A `BufferLength` error unless `actual == expected`.
pub(crate) fn check_buffer(
    buffer: &'static str,
    expected: usize,
    actual: usize,
) -> Result<(), KvCacheError> {
    if expected == actual {
        Ok(())
    } else {
        Err(KvCacheError::BufferLength {
            buffer,
            expected,
            actual,
        })
    }
}
