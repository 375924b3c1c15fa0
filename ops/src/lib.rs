//! nnc-ops: the vocabulary shared by the compiler's IR and the runtime's kernels.
//!
//! The compiler describes a network with these types and the runtime's kernels take them as
//! arguments, so there is one definition of each: one [`Activation`] enum, one [`BinaryOp`], one
//! [`ElementwiseStep`], one [`ReduceOp`], and the option structs of the kernels whose options are plain numbers
//! (convolution, pooling, rotary embedding, the attention shape). Options that borrow tensors
//! (a layer norm's weight, an attention mask) stay in the runtime, beside the kernels that read
//! them.
//!
//! The crate has no dependencies and no `unsafe`, so that the compiler and the proc macro can
//! depend on it without pulling in the runtime. Besides the types it holds the scalar definition
//! of each activation ([`Activation::apply`] and the functions of [`activation`]), written with
//! the branch-free [`math`] so that the runtime's vectorised kernels, which call the same
//! functions in their loops, and any scalar evaluation in the compiler compute the same values.

#![forbid(unsafe_code)]

pub mod activation;
pub mod attention;
pub mod conv;
pub mod elementwise;
pub mod math;
pub mod pool;
pub mod quant;
pub mod reduce;
pub mod resize;
pub mod rope;

pub use activation::Activation;
pub use attention::{AttentionShape, SparsePattern};
pub use conv::{Conv1dOptions, Conv2dOptions};
pub use elementwise::{BinaryOp, ElementwiseStep};
pub use pool::{AvgPool1dOptions, AvgPool2dOptions, MaxPool1dOptions, MaxPool2dOptions};
pub use quant::{ActivationQuantization, QuantFormat, QuantizedMode};
pub use reduce::ReduceOp;
pub use resize::{
    ConvTranspose2dOptions, CoordinateTransform, NearestRounding, PadMode, Resize2dOptions,
    ResizeMode,
};
pub use rope::{RopeConvention, RopeOptions};
