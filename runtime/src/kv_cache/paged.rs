//! [`PagedKvCache`]: key/value caches for many sequences in one pool of fixed-size blocks, and
//! [`PagedSequence`], one of its sequences borrowed for decoding steps.

use super::{
    DIRECT_ATTENTION_QUERIES, DecodeCache, StepPositions, check_buffer, check_layer,
    with_step_options,
};
use crate::error::{KvCacheError, ModelError, SequenceId, at};
use crate::kernels::attention::{AttentionOptions, AttentionShape, SparsePattern};
use crate::kernels::flash_attention::{FlashAttentionWorkspace, flash_attention};
use crate::kernels::paged_attention::{PagedKv, paged_attention};

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
    /// up front. Panics if `block_size` is zero or the pool does not fit in memory;
    /// [`PagedKvCache::try_new`] returns an error instead.
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
        Self::try_new(layers, num_blocks, block_size, kv_heads, head_dim)
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// [`PagedKvCache::new`], with `KvCacheError::BlockSize` for a zero `block_size` and
    /// `KvCacheError::OutOfMemory` when the pool does not fit in memory (see [`crate::alloc`]).
    pub fn try_new(
        layers: usize,
        num_blocks: usize,
        block_size: usize,
        kv_heads: usize,
        head_dim: usize,
    ) -> Result<Self, KvCacheError> {
        if block_size == 0 {
            return Err(KvCacheError::ZeroBlockSize);
        }
        let row_length = kv_heads.saturating_mul(head_dim);
        // A saturated size fails the allocation's overflow check with its error.
        let floats = num_blocks
            .saturating_mul(block_size)
            .saturating_mul(row_length);
        let pool = |what: &'static str| {
            (0..layers)
                .map(|layer| {
                    crate::alloc::filled(
                        || format!("the paged KV cache {what} of layer {layer}"),
                        floats,
                        0.0,
                    )
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let keys = pool("keys")?;
        let values = pool("values")?;
        let mut free_blocks = crate::alloc::with_capacity(
            || "the paged KV cache's free block list".to_string(),
            num_blocks,
        )?;
        // Popped from the end, so blocks are handed out in ascending order at first.
        free_blocks.extend((0..num_blocks).rev());
        Ok(Self {
            block_size,
            num_blocks,
            row_length,
            keys,
            values,
            free_blocks,
            sequences: Vec::new(),
            free_slots: Vec::new(),
            gathered: (Vec::new(), Vec::new()),
        })
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
        self.advance_dropping_padding(seq, tokens, 0)
    }

    /// Commits the first `tokens` positions of a step of `seq` that appended `tokens + padding`
    /// rows to every layer (`KvCacheError::UnevenAdvance` otherwise, and nothing changes) and
    /// forgets the other `padding`, returning the blocks that held only padding to the pool.
    pub fn advance_dropping_padding(
        &mut self,
        seq: SequenceId,
        tokens: usize,
        padding: usize,
    ) -> Result<(), KvCacheError> {
        let block_size = self.block_size;
        let sequence = sequence_mut(&mut self.sequences, seq)?;
        let appended = tokens + padding;
        if let Some((layer, &pending)) = sequence
            .pending
            .iter()
            .enumerate()
            .find(|(_, pending)| **pending != appended)
        {
            return Err(KvCacheError::UnevenAdvance {
                tokens: appended,
                layer,
                appended: pending,
            });
        }
        sequence.len += tokens;
        sequence.pending.fill(0);
        // The table only ever grew to the blocks the step's rows needed, so the blocks past the
        // committed positions held padding alone.
        let blocks_kept = sequence.len.div_ceil(block_size);
        while sequence.block_table.len() > blocks_kept {
            let block = sequence.block_table.pop().expect("longer than blocks_kept");
            self.free_blocks.push(block);
        }
        Ok(())
    }

    /// Whether the pool has the blocks for `tokens` more positions of `seq` (false for an
    /// unknown sequence).
    pub fn has_room_for(&self, seq: SequenceId, tokens: usize) -> bool {
        sequence_ref(&self.sequences, seq).is_ok_and(|sequence| {
            let first = sequence.len + sequence.pending.iter().copied().max().unwrap_or(0);
            let needed = (first + tokens).div_ceil(self.block_size);
            needed.saturating_sub(sequence.block_table.len()) <= self.free_blocks.len()
        })
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

    fn advance_dropping_padding(
        &mut self,
        tokens: usize,
        padding: usize,
    ) -> Result<(), KvCacheError> {
        self.cache
            .advance_dropping_padding(self.seq, tokens, padding)
    }

    fn has_room_for(&self, tokens: usize) -> bool {
        self.cache.has_room_for(self.seq, tokens)
    }
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

/// The `BufferLength` error of a buffer shorter than it must be.
fn too_short(buffer: &'static str, expected: usize, actual: usize) -> KvCacheError {
    KvCacheError::BufferLength {
        buffer,
        expected,
        actual,
    }
}
