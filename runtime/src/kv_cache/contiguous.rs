//! [`KvCache`]: the key/value cache of one sequence, contiguous with a fixed maximum context or
//! a rolling buffer for sliding-window attention (see the parent module for the protocol).

use super::{
    DIRECT_ATTENTION_QUERIES, DecodeCache, StepPositions, check_buffer, check_layer,
    with_step_options,
};
use crate::error::{KvCacheError, ModelError, at};
use crate::kernels::attention::{AttentionShape, SparsePattern};
use crate::kernels::flash_attention::{FlashAttentionWorkspace, flash_attention};
use crate::kernels::paged_attention::{PagedKv, paged_attention};

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
    ///
    /// Panics when the buffers do not fit in memory; [`KvCache::try_new`] returns an error.
    pub fn new(layers: usize, max_context: usize, kv_heads: usize, head_dim: usize) -> Self {
        Self::try_new(layers, max_context, kv_heads, head_dim)
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// [`KvCache::new`], with `KvCacheError::OutOfMemory` when the buffers do not fit in memory
    /// (see [`crate::alloc`]).
    pub fn try_new(
        layers: usize,
        max_context: usize,
        kv_heads: usize,
        head_dim: usize,
    ) -> Result<Self, KvCacheError> {
        Self::with_kind(
            CacheKind::Contiguous { max_context },
            layers,
            max_context,
            kv_heads.saturating_mul(head_dim),
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
    ///
    /// Panics when the buffers do not fit in memory; [`KvCache::try_rolling`] returns an error.
    pub fn rolling(layers: usize, window: usize, kv_heads: usize, head_dim: usize) -> Self {
        Self::try_rolling(layers, window, kv_heads, head_dim)
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// [`KvCache::rolling`], with `KvCacheError::OutOfMemory` when the buffers do not fit in
    /// memory.
    pub fn try_rolling(
        layers: usize,
        window: usize,
        kv_heads: usize,
        head_dim: usize,
    ) -> Result<Self, KvCacheError> {
        Self::with_kind(
            CacheKind::Rolling { window },
            layers,
            window.saturating_mul(2),
            kv_heads.saturating_mul(head_dim),
        )
    }

    fn with_kind(
        kind: CacheKind,
        layers: usize,
        capacity_rows: usize,
        row_length: usize,
    ) -> Result<Self, KvCacheError> {
        // A saturated size fails the allocation's overflow check with its error.
        let floats = capacity_rows.saturating_mul(row_length);
        let layers = (0..layers)
            .map(|layer| {
                Ok(LayerBuffer {
                    keys: crate::alloc::filled(
                        || format!("the KV cache keys of layer {layer}"),
                        floats,
                        0.0,
                    )?,
                    values: crate::alloc::filled(
                        || format!("the KV cache values of layer {layer}"),
                        floats,
                        0.0,
                    )?,
                    start: 0,
                    pending: 0,
                })
            })
            .collect::<Result<_, KvCacheError>>()?;
        Ok(Self {
            kind,
            row_length,
            capacity_rows,
            layers,
            len: 0,
            cached: 0,
        })
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
        self.advance_dropping_padding(tokens, 0)
    }

    /// Commits the first `tokens` positions of a step that appended `tokens + padding` rows to
    /// every layer (`KvCacheError::UnevenAdvance` otherwise, and nothing changes) and forgets
    /// the other `padding`: they lie after the view, where the next step writes over them. A
    /// rolling cache drops old positions for the `tokens` committed only, so the view keeps
    /// every position the window still needs.
    pub fn advance_dropping_padding(
        &mut self,
        tokens: usize,
        padding: usize,
    ) -> Result<(), KvCacheError> {
        let appended = tokens + padding;
        if let Some((layer, buffer)) = self
            .layers
            .iter()
            .enumerate()
            .find(|(_, buffer)| buffer.pending != appended)
        {
            return Err(KvCacheError::UnevenAdvance {
                tokens: appended,
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

    /// Whether a step of `tokens` positions fits: within the maximum context of a contiguous
    /// cache, at most the window of a rolling one.
    pub fn has_room_for(&self, tokens: usize) -> bool {
        match self.kind {
            CacheKind::Contiguous { max_context } => self.len + tokens <= max_context,
            CacheKind::Rolling { window } => tokens <= window,
        }
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

    fn advance_dropping_padding(
        &mut self,
        tokens: usize,
        padding: usize,
    ) -> Result<(), KvCacheError> {
        KvCache::advance_dropping_padding(self, tokens, padding)
    }

    fn has_room_for(&self, tokens: usize) -> bool {
        KvCache::has_room_for(self, tokens)
    }
}
