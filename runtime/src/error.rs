//! The error types of the runtime: [`KernelError`], which every fallible kernel returns,
//! [`KvCacheError`] of the KV caches, and [`ModelError`], which generated models return and
//! which wraps the other two.
//!
//! Kernels never panic on user data: a buffer of the wrong length, a shape that does not
//! broadcast or an embedding id out of range all come back as a `KernelError`.
//!
//! This module depends on no other module of the crate but `weights` (whose error a model can
//! return) and `alloc` (whose error any of them can), so that kernels, the arena helpers and the KV caches can all use it.

use crate::weights::WeightsError;

/// Everything that can go wrong when calling a kernel.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KernelError {
    /// A buffer does not hold the number of elements that its shape implies.
    #[error("{operation}: `{buffer}` must hold {expected} elements, but it holds {actual}")]
    BufferLength {
        operation: &'static str,
        buffer: &'static str,
        expected: usize,
        actual: usize,
    },
    /// Two shapes that must agree do not.
    #[error("{operation}: shape mismatch: {detail}")]
    ShapeMismatch {
        operation: &'static str,
        detail: String,
    },
    /// Two shapes cannot be broadcast together under numpy's rules.
    #[error("{operation}: shapes {lhs_shape:?} and {rhs_shape:?} cannot be broadcast together")]
    BroadcastIncompatible {
        operation: &'static str,
        lhs_shape: Vec<usize>,
        rhs_shape: Vec<usize>,
    },
    /// An axis is not smaller than the rank of the tensor it indexes.
    #[error("{operation}: axis {axis} is out of range for a tensor of rank {rank}")]
    AxisOutOfRange {
        operation: &'static str,
        axis: usize,
        rank: usize,
    },
    /// An index along some axis is not smaller than that axis's length.
    #[error("{operation}: index {index} is out of range for an axis of length {length}")]
    IndexOutOfRange {
        operation: &'static str,
        index: usize,
        length: usize,
    },
    /// An embedding id is negative or not smaller than the number of rows of the table.
    #[error(
        "embedding: id {id} at position {position} is out of range for a table of {num_embeddings} rows"
    )]
    EmbeddingIdOutOfRange {
        id: i64,
        position: usize,
        num_embeddings: usize,
    },
    /// A parameter is outside the range that the operation accepts (a zero stride, say).
    #[error("{operation}: invalid parameter: {detail}")]
    InvalidParameter {
        operation: &'static str,
        detail: String,
    },
    /// The sizes involved overflow `usize`.
    #[error("{operation}: sizes overflow usize")]
    SizeOverflow { operation: &'static str },
}

/// The result type of the fallible kernels.
pub type KernelResult<T> = Result<T, KernelError>;

/// Why a generated model could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error("the input `{name}` must have shape {expected:?}, but it has shape {found:?}")]
    InputShape {
        name: &'static str,
        expected: &'static [usize],
        found: Vec<usize>,
    },
    #[error("layer `{layer}` failed: {source}")]
    Kernel {
        layer: &'static str,
        source: KernelError,
    },
    #[error(transparent)]
    KvCache(#[from] KvCacheError),
    #[error("the prompt is empty: a decoder needs at least one token to predict the next")]
    EmptyPrompt,
    #[error("the decoder has no source: call `encode` before `decode`, `prefill` or `generate`")]
    NotEncoded,
    /// A buffer (the arena, a weight, a cache) does not fit in memory.
    #[error(transparent)]
    OutOfMemory(#[from] crate::alloc::AllocError),
}

/// Turns a kernel error into a [`ModelError`] naming the layer: `.map_err(at("fc1"))?`.
pub fn at(layer: &'static str) -> impl FnOnce(KernelError) -> ModelError {
    move |source| ModelError::Kernel { layer, source }
}

/// Everything that can go wrong when writing to or reading from a KV cache.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
    /// A paged cache's blocks must hold at least one position.
    #[error("the block size of a paged KV cache must be positive")]
    ZeroBlockSize,
    /// The cache's buffers do not fit in memory.
    #[error(transparent)]
    OutOfMemory(#[from] crate::alloc::AllocError),
}

/// A handle to one sequence of a `PagedKvCache`. Handles of freed sequences are rejected, even
/// once their slot is reused.
///
/// It is defined here, beside the [`KvCacheError`] that names it, so that this module depends on
/// no cache; `kv_cache::SequenceId` re-exports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SequenceId {
    pub(crate) slot: u32,
    pub(crate) generation: u32,
}

/// Checks that `buffer` holds exactly `expected` elements.
pub(crate) fn check_length(
    operation: &'static str,
    buffer: &'static str,
    expected: usize,
    actual: usize,
) -> KernelResult<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(KernelError::BufferLength {
            operation,
            buffer,
            expected,
            actual,
        })
    }
}

/// Multiplies the dimensions of a shape, reporting overflow as an error.
pub(crate) fn checked_element_count(
    operation: &'static str,
    shape: &[usize],
) -> KernelResult<usize> {
    shape
        .iter()
        .try_fold(1usize, |count, &dimension| count.checked_mul(dimension))
        .ok_or(KernelError::SizeOverflow { operation })
}

/// Builds an `InvalidParameter` error.
pub(crate) fn invalid_parameter(operation: &'static str, detail: impl Into<String>) -> KernelError {
    KernelError::InvalidParameter {
        operation,
        detail: detail.into(),
    }
}

/// Builds a `ShapeMismatch` error.
pub(crate) fn shape_mismatch(operation: &'static str, detail: impl Into<String>) -> KernelError {
    KernelError::ShapeMismatch {
        operation,
        detail: detail.into(),
    }
}
