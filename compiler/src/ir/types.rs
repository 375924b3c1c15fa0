//! Element types and static tensor types.

use std::fmt;

/// The element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit IEEE float: activations and weights.
    F32,
    /// 64-bit signed integer: token ids and other indices.
    I64,
}

impl DType {
    /// The name used in `.nn` files and printed IR.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::I64 => "i64",
        }
    }

    /// Bytes per element.
    pub fn size_in_bytes(self) -> u64 {
        match self {
            DType::F32 => 4,
            DType::I64 => 8,
        }
    }
}

/// A tensor type: an element type and a fully static shape.
///
/// Every dimension is at least 1 and the byte size fits in a `u64` and an `isize`; the constructor
/// [`TensorType::new`] checks both, so no later stage has to worry about overflow.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Vec<usize>,
}

/// Why a shape is not a valid tensor shape.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShapeOverflow {
    #[error("dimension {axis} is {size}, but every dimension must be at least 1")]
    Empty { axis: usize, size: usize },
    #[error("the tensor has more elements than fit in memory ({shape})")]
    TooLarge { shape: String },
}

impl TensorType {
    /// Checks that `shape` describes an addressable tensor of `dtype`.
    pub fn new(dtype: DType, shape: Vec<usize>) -> Result<Self, ShapeOverflow> {
        if let Some((axis, &size)) = shape.iter().enumerate().find(|(_, size)| **size == 0) {
            return Err(ShapeOverflow::Empty { axis, size });
        }
        let bytes = shape.iter().try_fold(dtype.size_in_bytes(), |bytes, &dim| {
            bytes.checked_mul(dim as u64)
        });
        match bytes {
            Some(bytes) if bytes <= isize::MAX as u64 => Ok(TensorType { dtype, shape }),
            _ => Err(ShapeOverflow::TooLarge {
                shape: format_shape(&shape),
            }),
        }
    }

    /// An `f32` tensor type. Panics on an invalid shape; for shapes the compiler built itself.
    pub fn f32(shape: Vec<usize>) -> Self {
        TensorType::new(DType::F32, shape).expect("compiler-built shapes are valid")
    }

    /// The number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The number of elements.
    pub fn element_count(&self) -> u64 {
        self.shape.iter().map(|&dim| dim as u64).product()
    }

    /// The size in bytes.
    pub fn size_in_bytes(&self) -> u64 {
        self.element_count() * self.dtype.size_in_bytes()
    }

    /// The last dimension. Tensors of rank 0 have none.
    pub fn last_dim(&self) -> Option<usize> {
        self.shape.last().copied()
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.dtype.name(), format_shape(&self.shape))
    }
}

/// Formats a shape as `[1, 3, 224, 224]`.
pub fn format_shape(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|dim| dim.to_string()).collect();
    format!("[{}]", dims.join(", "))
}
