//! `TensorRef`: a dense row-major tensor in a slice, with its shape.

use crate::error::{KernelError, KernelResult, checked_element_count};

/// A dense, row-major (C-order) tensor borrowed from a slice, whose length matches its shape.
#[derive(Clone, Copy, Debug)]
pub struct TensorRef<'a> {
    data: &'a [f32],
    shape: &'a [usize],
}

impl<'a> TensorRef<'a> {
    /// Pairs `data` with `shape`; fails unless `data` holds exactly the product of `shape`.
    pub fn new(data: &'a [f32], shape: &'a [usize]) -> KernelResult<Self> {
        let expected = checked_element_count("tensor", shape)?;
        if expected != data.len() {
            return Err(KernelError::BufferLength {
                operation: "tensor",
                buffer: "data",
                expected,
                actual: data.len(),
            });
        }
        Ok(Self { data, shape })
    }

    /// The elements, in row-major order.
    pub fn data(&self) -> &'a [f32] {
        self.data
    }

    /// The shape.
    pub fn shape(&self) -> &'a [usize] {
        self.shape
    }

    /// The number of axes.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
}

/// Splits `shape` around `axis` into (product before, length of the axis, product after).
pub(crate) fn split_at_axis(
    operation: &'static str,
    shape: &[usize],
    axis: usize,
) -> KernelResult<(usize, usize, usize)> {
    if axis >= shape.len() {
        return Err(KernelError::AxisOutOfRange {
            operation,
            axis,
            rank: shape.len(),
        });
    }
    let outer = shape[..axis].iter().product();
    let inner = shape[axis + 1..].iter().product();
    Ok((outer, shape[axis], inner))
}

/// The highest rank that the broadcasting and permuting kernels handle; their shape
/// bookkeeping lives in fixed-size arrays of this length so that a call never allocates.
pub const MAX_RANK: usize = 8;

/// A shape (or a list of strides) of at most `MAX_RANK` axes, stored inline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Dims {
    values: [usize; MAX_RANK],
    len: usize,
}

impl Dims {
    /// No axes.
    pub(crate) const fn empty() -> Self {
        Self {
            values: [0; MAX_RANK],
            len: 0,
        }
    }

    /// `len` axes, all equal to `value`; fails above `MAX_RANK`.
    pub(crate) fn filled(operation: &'static str, len: usize, value: usize) -> KernelResult<Self> {
        check_rank(operation, len)?;
        Ok(Self {
            values: [value; MAX_RANK],
            len,
        })
    }

    /// A copy of `values`; fails above `MAX_RANK` axes.
    pub(crate) fn from_slice(operation: &'static str, values: &[usize]) -> KernelResult<Self> {
        let mut dims = Self::filled(operation, values.len(), 0)?;
        dims.copy_from_slice(values);
        Ok(dims)
    }

    /// Appends an axis. The callers build at most as many axes as an input they checked, so
    /// running out of room is a bug in the kernel, not in the data.
    pub(crate) fn push(&mut self, value: usize) {
        assert!(self.len < MAX_RANK, "Dims::push: more than {MAX_RANK} axes");
        self.values[self.len] = value;
        self.len += 1;
    }

    /// The row-major strides (in elements) of this shape.
    pub(crate) fn row_major_strides(&self) -> Self {
        let mut strides = Self {
            values: [1; MAX_RANK],
            len: self.len,
        };
        for axis in (0..self.len.saturating_sub(1)).rev() {
            strides.values[axis] = strides.values[axis + 1] * self.values[axis + 1];
        }
        strides
    }
}

impl std::ops::Deref for Dims {
    type Target = [usize];

    fn deref(&self) -> &[usize] {
        &self.values[..self.len]
    }
}

impl std::ops::DerefMut for Dims {
    fn deref_mut(&mut self) -> &mut [usize] {
        &mut self.values[..self.len]
    }
}

/// Fails when `rank` exceeds `MAX_RANK`.
pub(crate) fn check_rank(operation: &'static str, rank: usize) -> KernelResult<()> {
    if rank > MAX_RANK {
        return Err(KernelError::InvalidParameter {
            operation,
            detail: format!("tensors of rank {rank} exceed the supported rank {MAX_RANK}"),
        });
    }
    Ok(())
}
