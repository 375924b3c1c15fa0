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

/// The row-major strides (in elements) of a shape.
pub(crate) fn row_major_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for axis in (0..shape.len().saturating_sub(1)).rev() {
        strides[axis] = strides[axis + 1] * shape[axis + 1];
    }
    strides
}
