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

use thiserror::Error;

use crate::kernels::attention::{AttentionMask, AttentionOptions, AttentionShape};
use crate::kernels::flash_attention::{FlashAttentionWorkspace, flash_attention};
use crate::kernels::paged_attention::{PagedKv, paged_attention};
use crate::model::{ModelError, SparsePattern, at};

/// Everything that can go wrong when writing to or reading from a KV cache.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KvCacheError {
    /// An append would take the cache past its `max_context` positions. Nothing was written.
    #[error(
        "the KV cache is full: it holds at most {max_context} positions, but {requested} were requested"
    )]
    Full {
        max_context: usize,
        requested: usize,
    },
    /// The block pool of a `PagedKvCache` has fewer free blocks than an append needs. Nothing
    /// was written or allocated.
    #[error("the KV cache block pool is exhausted: {needed} more blocks needed, {free} free")]
    OutOfBlocks { needed: usize, free: usize },
    /// One step of a rolling cache appended more rows to a layer than the window holds.
    #[error(
        "a step of {tokens} tokens does not fit a rolling KV cache of window {window}: split it into steps of at most {window}"
    )]
    StepExceedsWindow { window: usize, tokens: usize },
    /// A layer index is not smaller than the number of layers.
    #[error("layer {layer} is out of range for a KV cache of {layers} layers")]
    LayerOutOfRange { layer: usize, layers: usize },
    /// A buffer does not hold the number of floats its token count implies.
    #[error("`{buffer}` must hold {expected} floats, but it holds {actual}")]
    BufferLength {
        buffer: &'static str,
        expected: usize,
        actual: usize,
    },
    /// `advance(tokens)` was called while some layer had received a different number of rows
    /// in this step.
    #[error("advance by {tokens} positions, but layer {layer} has {appended} rows appended")]
    UnevenAdvance {
        tokens: usize,
        layer: usize,
        appended: usize,
    },
    /// The sequence was freed, or belongs to another cache.
    #[error("unknown sequence {0:?}")]
    UnknownSequence(SequenceId),
}

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
}

/// An empty cache of no layers: a placeholder that allocates nothing.
impl Default for KvCache {
    fn default() -> Self {
        Self::new(0, 0, 0, 0)
    }
}

impl DecodeCache for KvCache {
    fn position(&self) -> usize {
        self.len
    }

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
    ) -> Result<(), ModelError> {
        let (position, first) = (self.len(), self.first_cached_position());
        self.append(layer, k_new, v_new, shape.query_len)?;
        let shape = AttentionShape {
            key_len: self.cached_len() + self.pending_len(layer),
            ..*shape
        };
        // View key `key` is absolute position `first + key`: a rolling cache's view starts
        // after the positions it dropped.
        let step = StepPositions {
            first_query: position,
            first_key: first,
            queries_after: self.cached_len(),
        };
        let (keys, values) = (self.keys(layer), self.values(layer));
        with_step_options(scale, pattern, step, |options| {
            if shape.query_len <= DIRECT_ATTENTION_QUERIES {
                // The view is one block: the direct kernel reads it in place, on this thread,
                // which for a token or two beats packing it for the tiled kernel and waking
                // the pool.
                let kv = PagedKv {
                    keys,
                    values,
                    block_table: &[0],
                    block_size: shape.key_len.max(1),
                };
                return paged_attention(q, &kv, &shape, options, output).map_err(at(layer_name));
            }
            flash_attention(q, keys, values, &shape, options, None, output, workspace)
                .map_err(at(layer_name))
        })
    }

    fn advance(&mut self, tokens: usize) -> Result<(), KvCacheError> {
        KvCache::advance(self, tokens)
    }
}

/// Steps of at most this many tokens attend through the direct kernel
/// (`kernels::paged_attention`: a paged sequence's blocks, or a contiguous cache's view as one
/// block, read in place on the calling thread); longer ones use the tiled kernel (a paged
/// sequence's blocks gathered first).
pub const DIRECT_ATTENTION_QUERIES: usize = 2;

/// One sequence of a [`PagedKvCache`], borrowed for decoding steps: attention reads its blocks
/// in place through the block table (`kernels::paged_attention`) for one-token steps, and from a
/// gathered copy for prefill chunks (see [`DIRECT_ATTENTION_QUERIES`]).
#[derive(Debug)]
pub struct PagedSequence<'a> {
    cache: &'a mut PagedKvCache,
    seq: SequenceId,
}

impl PagedSequence<'_> {
    /// The sequence this borrows.
    pub fn id(&self) -> SequenceId {
        self.seq
    }
}

impl DecodeCache for PagedSequence<'_> {
    fn position(&self) -> usize {
        sequence_ref(&self.cache.sequences, self.seq).map_or(0, |sequence| sequence.len)
    }

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
    ) -> Result<(), ModelError> {
        let cache = &mut *self.cache;
        let position = cache.sequence_len(self.seq)?;
        cache.append(self.seq, layer, k_new, v_new, shape.query_len)?;
        let shape = AttentionShape {
            key_len: cache.gathered_len(self.seq, layer)?,
            ..*shape
        };
        // A sequence's keys are all its positions, in order.
        let step = StepPositions {
            first_query: position,
            first_key: 0,
            queries_after: position,
        };
        with_step_options(scale, pattern, step, |options| {
            cache.attend_sequence(
                self.seq, layer, layer_name, q, &shape, options, output, workspace,
            )
        })
    }

    fn advance(&mut self, tokens: usize) -> Result<(), KvCacheError> {
        self.cache.advance(self.seq, tokens)
    }
}

/// Where a decoding step's queries and keys sit in the sequence.
#[derive(Clone, Copy)]
struct StepPositions {
    /// The absolute position of the step's first query.
    first_query: usize,
    /// The absolute position of the first key the cache hands to attention.
    first_key: usize,
    /// Keys in front of the step's first query: the causal mask's `query_position_offset`.
    queries_after: usize,
}

/// Runs `attend` with the options of a decoding step: causal, scaled by `scale`, and masked by
/// `pattern` (if any) at absolute positions.
fn with_step_options<R>(
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

impl PagedKvCache {
    /// Attention of a step of `seq` over its keys in `layer` (see `DecodeCache::attend`).
    #[allow(clippy::too_many_arguments)]
    fn attend_sequence(
        &mut self,
        seq: SequenceId,
        layer: usize,
        layer_name: &'static str,
        q: &[f32],
        shape: &AttentionShape,
        options: &AttentionOptions<'_>,
        output: &mut [f32],
        workspace: &mut FlashAttentionWorkspace,
    ) -> Result<(), ModelError> {
        if shape.query_len <= DIRECT_ATTENTION_QUERIES {
            let kv = PagedKv {
                keys: &self.keys[layer],
                values: &self.values[layer],
                block_table: self.block_table(seq)?,
                block_size: self.block_size,
            };
            return paged_attention(q, &kv, shape, options, output).map_err(at(layer_name));
        }
        // Several queries amortize a copy into contiguous scratch for the tiled kernel, which
        // is faster than the direct one from a few queries on.
        let floats = shape.key_len * self.row_length;
        let (mut keys, mut values) = std::mem::take(&mut self.gathered);
        if keys.len() < floats {
            keys.resize(floats, 0.0);
            values.resize(floats, 0.0);
        }
        let gathered = self.gather(seq, layer, &mut keys, &mut values);
        let attended = gathered.map_err(ModelError::from).and_then(|_| {
            flash_attention(
                q,
                &keys[..floats],
                &values[..floats],
                shape,
                options,
                None,
                output,
                workspace,
            )
            .map_err(at(layer_name))
        });
        self.gathered = (keys, values);
        attended
    }
}

/// A per-layer key/value cache for one sequence (batch 1): either contiguous with a fixed
/// maximum context, or a rolling buffer for sliding-window attention. See the module docs for
/// the append / attend / advance protocol.
#[derive(Clone, Debug)]
pub struct KvCache {
    kind: CacheKind,
    row_length: usize,
    /// Rows of each layer's buffer: `max_context`, or `2 * window` for a rolling cache.
    capacity_rows: usize,
    layers: Vec<LayerBuffer>,
    /// Committed positions (all layers).
    len: usize,
    /// Committed positions in the view (all layers): `len`, or at most `window` when rolling.
    cached: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CacheKind {
    Contiguous { max_context: usize },
    Rolling { window: usize },
}

#[derive(Clone, Debug)]
struct LayerBuffer {
    keys: Vec<f32>,
    values: Vec<f32>,
    /// The buffer row of the first row of the view.
    start: usize,
    /// Rows appended in the current, uncommitted step.
    pending: usize,
}

impl KvCache {
    /// A contiguous cache of `max_context` positions per layer, allocated up front as two
    /// `[max_context, kv_heads * head_dim]` buffers (keys and values) per layer. Appends write
    /// after the last row and never move existing rows; an append past `max_context` fails with
    /// `KvCacheError::Full`.
    pub fn new(layers: usize, max_context: usize, kv_heads: usize, head_dim: usize) -> Self {
        Self::with_kind(
            CacheKind::Contiguous { max_context },
            layers,
            max_context,
            kv_heads * head_dim,
        )
    }

    /// A rolling cache that keeps the last `window` committed positions of each layer, for
    /// sliding-window attention; memory is bounded by the window, not by the sequence.
    ///
    /// Trade-off: each layer holds a buffer of `2 * window` rows (twice the minimum) so that
    /// the view stays contiguous and in order: rows are written after the view, and when they
    /// would run past the end of the buffer the view (at most `window` committed rows plus the
    /// step's pending rows) is first copied down to the start. With single-token steps that is
    /// one copy of `window` rows every `window` tokens, O(1) amortized per token, and attention
    /// gets a plain slice instead of a wrapped ring it would have to unroll. A step may append
    /// at most `window` rows to a layer (`KvCacheError::StepExceedsWindow` otherwise).
    ///
    /// The view after an append holds the last `min(len, window)` committed positions plus the
    /// pending ones, so the oldest committed key is `window` positions before the first new
    /// token: attention with the window `|i - j| < window` must still mask it (and any other
    /// out-of-window key when a step has several tokens), using `first_cached_position()`.
    pub fn rolling(layers: usize, window: usize, kv_heads: usize, head_dim: usize) -> Self {
        Self::with_kind(
            CacheKind::Rolling { window },
            layers,
            2 * window,
            kv_heads * head_dim,
        )
    }

    fn with_kind(kind: CacheKind, layers: usize, capacity_rows: usize, row_length: usize) -> Self {
        let layers = (0..layers)
            .map(|_| LayerBuffer {
                keys: vec![0.0; capacity_rows * row_length],
                values: vec![0.0; capacity_rows * row_length],
                start: 0,
                pending: 0,
            })
            .collect();
        Self {
            kind,
            row_length,
            capacity_rows,
            layers,
            len: 0,
            cached: 0,
        }
    }

    /// Writes `tokens` rows of keys and values (each `[tokens, kv_heads * head_dim]`) after the
    /// rows already in `layer`'s view. They are pending until `advance`; `keys(layer)` includes
    /// them at once. On error nothing is written.
    pub fn append(
        &mut self,
        layer: usize,
        k_new: &[f32],
        v_new: &[f32],
        tokens: usize,
    ) -> Result<(), KvCacheError> {
        check_layer(layer, self.layers.len())?;
        let floats = tokens * self.row_length;
        check_buffer("k_new", floats, k_new.len())?;
        check_buffer("v_new", floats, v_new.len())?;
        let row_length = self.row_length;
        let buffer = &mut self.layers[layer];
        let pending = buffer.pending + tokens;
        match self.kind {
            CacheKind::Contiguous { max_context } => {
                if self.len + pending > max_context {
                    return Err(KvCacheError::Full {
                        max_context,
                        requested: self.len + pending,
                    });
                }
            }
            CacheKind::Rolling { window } => {
                if pending > window {
                    return Err(KvCacheError::StepExceedsWindow {
                        window,
                        tokens: pending,
                    });
                }
            }
        }
        let view_rows = self.cached + buffer.pending;
        if buffer.start + view_rows + tokens > self.capacity_rows {
            // Only a rolling cache gets here: its view holds at most `2 * window - tokens`
            // rows, so after moving it to the start of the buffer the new rows fit.
            let range = buffer.start * row_length..(buffer.start + view_rows) * row_length;
            buffer.keys.copy_within(range.clone(), 0);
            buffer.values.copy_within(range, 0);
            buffer.start = 0;
        }
        let write_start = (buffer.start + view_rows) * row_length;
        buffer.keys[write_start..write_start + floats].copy_from_slice(k_new);
        buffer.values[write_start..write_start + floats].copy_from_slice(v_new);
        buffer.pending = pending;
        Ok(())
    }

    /// Commits a step of `tokens` positions: every layer must have received exactly `tokens`
    /// rows since the last `advance` (`KvCacheError::UnevenAdvance` otherwise, and nothing
    /// changes). A rolling cache then drops the positions that fell out of the window.
    pub fn advance(&mut self, tokens: usize) -> Result<(), KvCacheError> {
        if let Some((layer, buffer)) = self
            .layers
            .iter()
            .enumerate()
            .find(|(_, buffer)| buffer.pending != tokens)
        {
            return Err(KvCacheError::UnevenAdvance {
                tokens,
                layer,
                appended: buffer.pending,
            });
        }
        self.len += tokens;
        let cached = match self.kind {
            CacheKind::Contiguous { .. } => self.len,
            CacheKind::Rolling { window } => (self.cached + tokens).min(window),
        };
        let dropped = self.cached + tokens - cached;
        for buffer in &mut self.layers {
            buffer.start += dropped;
            buffer.pending = 0;
        }
        self.cached = cached;
        Ok(())
    }

    /// Forgets every position (committed and pending), keeping the allocation.
    pub fn reset(&mut self) {
        self.len = 0;
        self.cached = 0;
        for buffer in &mut self.layers {
            buffer.start = 0;
            buffer.pending = 0;
        }
    }

    /// Committed positions: every position seen, including those a rolling cache dropped.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position has been committed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Committed positions still in the view: `len()`, or `min(len(), window)` when rolling.
    /// This is the `query_position_offset` of the step's queries against `keys(layer)`.
    pub fn cached_len(&self) -> usize {
        self.cached
    }

    /// The absolute position of the first row of every view: `len() - cached_len()`.
    pub fn first_cached_position(&self) -> usize {
        self.len - self.cached
    }

    /// Rows appended to `layer` in the current step. Panics if `layer` is out of range.
    pub fn pending_len(&self, layer: usize) -> usize {
        self.layers[layer].pending
    }

    /// The number of layers.
    pub fn layers(&self) -> usize {
        self.layers.len()
    }

    /// Floats per row: `kv_heads * head_dim`.
    pub fn row_length(&self) -> usize {
        self.row_length
    }

    /// The most positions a contiguous cache holds, or `None` for a rolling one.
    pub fn max_context(&self) -> Option<usize> {
        match self.kind {
            CacheKind::Contiguous { max_context } => Some(max_context),
            CacheKind::Rolling { .. } => None,
        }
    }

    /// The window of a rolling cache, or `None` for a contiguous one.
    pub fn window(&self) -> Option<usize> {
        match self.kind {
            CacheKind::Contiguous { .. } => None,
            CacheKind::Rolling { window } => Some(window),
        }
    }

    /// `layer`'s keys, `[cached_len() + pending_len(layer), kv_heads * head_dim]` in position
    /// order: the `k` argument of attention. Panics if `layer` is out of range.
    pub fn keys(&self, layer: usize) -> &[f32] {
        let buffer = &self.layers[layer];
        &buffer.keys[self.view_range(buffer)]
    }

    /// `layer`'s values, shaped like `keys(layer)`. Panics if `layer` is out of range.
    pub fn values(&self, layer: usize) -> &[f32] {
        let buffer = &self.layers[layer];
        &buffer.values[self.view_range(buffer)]
    }

    /// Bytes of keys and values that one position takes across all layers.
    pub fn bytes_per_token(&self) -> usize {
        2 * self.layers.len() * self.row_length * std::mem::size_of::<f32>()
    }

    /// The bytes of key and value storage held.
    pub fn allocated_bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|buffer| buffer.keys.capacity() + buffer.values.capacity())
            .sum::<usize>()
            * std::mem::size_of::<f32>()
    }

    fn view_range(&self, buffer: &LayerBuffer) -> std::ops::Range<usize> {
        let rows = self.cached + buffer.pending;
        buffer.start * self.row_length..(buffer.start + rows) * self.row_length
    }
}

/// A handle to one sequence of a `PagedKvCache`. Handles of freed sequences are rejected, even
/// once their slot is reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SequenceId {
    slot: u32,
    generation: u32,
}

/// Key/value caches for many sequences sharing one pool of fixed-size blocks (vLLM's paged
/// attention layout). Block `b` holds `block_size` positions of every layer; each sequence has
/// a block table listing its blocks in position order, so position `p` lives in block
/// `table[p / block_size]`, row `p % block_size`. Blocks are taken from the pool as a sequence
/// grows and returned by `free_sequence`.
///
/// Each sequence follows the step protocol of the module docs (`append` per layer, then
/// `advance`). Attention reads a sequence's blocks in place (`kernels::paged_attention`, which
/// [`PagedSequence`] uses); `gather` copies them into contiguous scratch for other kernels.
#[derive(Clone, Debug)]
pub struct PagedKvCache {
    block_size: usize,
    num_blocks: usize,
    row_length: usize,
    /// Per layer, `[num_blocks, block_size, row_length]`.
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    free_blocks: Vec<usize>,
    sequences: Vec<SequenceSlot>,
    free_slots: Vec<u32>,
    /// Scratch for the keys and values `PagedSequence::attend` gathers for several queries;
    /// grows to the longest sequence gathered.
    gathered: (Vec<f32>, Vec<f32>),
}

#[derive(Clone, Debug, Default)]
struct SequenceSlot {
    generation: u32,
    sequence: Option<Sequence>,
}

#[derive(Clone, Debug)]
struct Sequence {
    block_table: Vec<usize>,
    len: usize,
    /// Per layer, rows appended in the current step.
    pending: Vec<usize>,
}

impl PagedKvCache {
    /// A pool of `num_blocks` blocks of `block_size` positions for `layers` layers, allocated
    /// up front. Panics if `block_size` is zero.
    pub fn new(
        layers: usize,
        num_blocks: usize,
        block_size: usize,
        kv_heads: usize,
        head_dim: usize,
    ) -> Self {
        assert!(
            block_size > 0,
            "PagedKvCache::new: block_size must be positive"
        );
        let row_length = kv_heads * head_dim;
        let floats = num_blocks * block_size * row_length;
        Self {
            block_size,
            num_blocks,
            row_length,
            keys: (0..layers).map(|_| vec![0.0; floats]).collect(),
            values: (0..layers).map(|_| vec![0.0; floats]).collect(),
            // Popped from the end, so blocks are handed out in ascending order at first.
            free_blocks: (0..num_blocks).rev().collect(),
            sequences: Vec::new(),
            free_slots: Vec::new(),
            gathered: (Vec::new(), Vec::new()),
        }
    }

    /// Borrows `seq` for decoding steps (see [`DecodeCache`]).
    pub fn sequence(&mut self, seq: SequenceId) -> Result<PagedSequence<'_>, KvCacheError> {
        sequence_ref(&self.sequences, seq)?;
        Ok(PagedSequence { cache: self, seq })
    }

    /// Starts an empty sequence; it takes no block until its first append.
    pub fn add_sequence(&mut self) -> SequenceId {
        let sequence = Sequence {
            block_table: Vec::new(),
            len: 0,
            pending: vec![0; self.keys.len()],
        };
        let slot = match self.free_slots.pop() {
            Some(slot) => slot,
            None => {
                self.sequences.push(SequenceSlot::default());
                u32::try_from(self.sequences.len() - 1).expect("more than u32::MAX sequences")
            }
        };
        let entry = &mut self.sequences[slot as usize];
        entry.sequence = Some(sequence);
        SequenceId {
            slot,
            generation: entry.generation,
        }
    }

    /// Writes `tokens` rows of keys and values (each `[tokens, kv_heads * head_dim]`) after
    /// `seq`'s rows in `layer`, taking blocks from the pool as needed (the first layer of a step
    /// takes them, the others find them there). On error nothing is written or taken.
    pub fn append(
        &mut self,
        seq: SequenceId,
        layer: usize,
        k_new: &[f32],
        v_new: &[f32],
        tokens: usize,
    ) -> Result<(), KvCacheError> {
        check_layer(layer, self.keys.len())?;
        let floats = tokens * self.row_length;
        check_buffer("k_new", floats, k_new.len())?;
        check_buffer("v_new", floats, v_new.len())?;
        let (block_size, row_length) = (self.block_size, self.row_length);
        let sequence = sequence_mut(&mut self.sequences, seq)?;
        let first = sequence.len + sequence.pending[layer];
        let blocks_needed = (first + tokens).div_ceil(block_size);
        let missing = blocks_needed.saturating_sub(sequence.block_table.len());
        if missing > self.free_blocks.len() {
            return Err(KvCacheError::OutOfBlocks {
                needed: missing,
                free: self.free_blocks.len(),
            });
        }
        for _ in 0..missing {
            let block = self.free_blocks.pop().expect("checked above");
            sequence.block_table.push(block);
        }
        let (keys, values) = (&mut self.keys[layer], &mut self.values[layer]);
        let mut written = 0;
        while written < tokens {
            let position = first + written;
            let row_in_block = position % block_size;
            let rows = (block_size - row_in_block).min(tokens - written);
            let block = sequence.block_table[position / block_size];
            let target = (block * block_size + row_in_block) * row_length;
            let source = written * row_length..(written + rows) * row_length;
            let length = rows * row_length;
            keys[target..target + length].copy_from_slice(&k_new[source.clone()]);
            values[target..target + length].copy_from_slice(&v_new[source]);
            written += rows;
        }
        sequence.pending[layer] += tokens;
        Ok(())
    }

    /// Commits a step of `tokens` positions of `seq`: every layer must have received exactly
    /// `tokens` rows since its last `advance` (`KvCacheError::UnevenAdvance` otherwise).
    pub fn advance(&mut self, seq: SequenceId, tokens: usize) -> Result<(), KvCacheError> {
        let sequence = sequence_mut(&mut self.sequences, seq)?;
        if let Some((layer, &appended)) = sequence
            .pending
            .iter()
            .enumerate()
            .find(|(_, pending)| **pending != tokens)
        {
            return Err(KvCacheError::UnevenAdvance {
                tokens,
                layer,
                appended,
            });
        }
        sequence.len += tokens;
        sequence.pending.fill(0);
        Ok(())
    }

    /// Ends `seq`, returning its blocks to the pool; its handle is invalid afterwards.
    pub fn free_sequence(&mut self, seq: SequenceId) -> Result<(), KvCacheError> {
        sequence_ref(&self.sequences, seq)?;
        let entry = &mut self.sequences[seq.slot as usize];
        let sequence = entry.sequence.take().expect("checked above");
        entry.generation = entry.generation.wrapping_add(1);
        self.free_blocks.extend(sequence.block_table.iter().rev());
        self.free_slots.push(seq.slot);
        Ok(())
    }

    /// Committed positions of `seq`.
    pub fn sequence_len(&self, seq: SequenceId) -> Result<usize, KvCacheError> {
        Ok(sequence_ref(&self.sequences, seq)?.len)
    }

    /// The rows `gather(seq, layer, ..)` writes: committed plus pending in `layer`.
    pub fn gathered_len(&self, seq: SequenceId, layer: usize) -> Result<usize, KvCacheError> {
        check_layer(layer, self.keys.len())?;
        let sequence = sequence_ref(&self.sequences, seq)?;
        Ok(sequence.len + sequence.pending[layer])
    }

    /// The blocks of `seq`, in position order.
    pub fn block_table(&self, seq: SequenceId) -> Result<&[usize], KvCacheError> {
        Ok(&sequence_ref(&self.sequences, seq)?.block_table)
    }

    /// Copies `seq`'s keys and values of `layer` (committed and pending rows, in position
    /// order) into the front of `k_out` and `v_out`, which must hold at least
    /// `gathered_len(seq, layer) * kv_heads * head_dim` floats, and returns the number of rows.
    /// The fronts are then the `k` and `v` arguments of attention with `key_len` = rows.
    pub fn gather(
        &self,
        seq: SequenceId,
        layer: usize,
        k_out: &mut [f32],
        v_out: &mut [f32],
    ) -> Result<usize, KvCacheError> {
        let rows = self.gathered_len(seq, layer)?;
        let sequence = sequence_ref(&self.sequences, seq)?;
        let floats = rows * self.row_length;
        if k_out.len() < floats {
            return Err(too_short("k_out", floats, k_out.len()));
        }
        if v_out.len() < floats {
            return Err(too_short("v_out", floats, v_out.len()));
        }
        let block_floats = self.block_size * self.row_length;
        let (keys, values) = (&self.keys[layer], &self.values[layer]);
        for (index, &block) in sequence.block_table.iter().enumerate() {
            let done = index * block_floats;
            if done >= floats {
                break;
            }
            let length = block_floats.min(floats - done);
            let source = block * block_floats..block * block_floats + length;
            k_out[done..done + length].copy_from_slice(&keys[source.clone()]);
            v_out[done..done + length].copy_from_slice(&values[source]);
        }
        Ok(rows)
    }

    /// Blocks in the pool that no sequence holds.
    pub fn free_block_count(&self) -> usize {
        self.free_blocks.len()
    }

    /// Blocks in the pool.
    pub fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    /// Positions per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Bytes of keys and values that one position takes across all layers.
    pub fn bytes_per_token(&self) -> usize {
        2 * self.keys.len() * self.row_length * std::mem::size_of::<f32>()
    }

    /// The bytes of key and value storage held by the pool.
    pub fn allocated_bytes(&self) -> usize {
        self.keys
            .iter()
            .chain(&self.values)
            .map(Vec::capacity)
            .sum::<usize>()
            * std::mem::size_of::<f32>()
    }
}

fn check_layer(layer: usize, layers: usize) -> Result<(), KvCacheError> {
    if layer < layers {
        Ok(())
    } else {
        Err(KvCacheError::LayerOutOfRange { layer, layers })
    }
}

fn check_buffer(buffer: &'static str, expected: usize, actual: usize) -> Result<(), KvCacheError> {
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

fn too_short(buffer: &'static str, expected: usize, actual: usize) -> KvCacheError {
    KvCacheError::BufferLength {
        buffer,
        expected,
        actual,
    }
}

fn sequence_ref(slots: &[SequenceSlot], seq: SequenceId) -> Result<&Sequence, KvCacheError> {
    slots
        .get(seq.slot as usize)
        .filter(|entry| entry.generation == seq.generation)
        .and_then(|entry| entry.sequence.as_ref())
        .ok_or(KvCacheError::UnknownSequence(seq))
}

fn sequence_mut(
    slots: &mut [SequenceSlot],
    seq: SequenceId,
) -> Result<&mut Sequence, KvCacheError> {
    slots
        .get_mut(seq.slot as usize)
        .filter(|entry| entry.generation == seq.generation)
        .and_then(|entry| entry.sequence.as_mut())
        .ok_or(KvCacheError::UnknownSequence(seq))
}
