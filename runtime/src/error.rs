//! The error type that every fallible kernel returns.
//!
//! Kernels never panic on user data: a buffer of the wrong length, a shape that does not
//! broadcast or an embedding id out of range all come back as a `KernelError`.

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
