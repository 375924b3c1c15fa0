//! The compute kernels: plain functions over slices with explicit shapes, writing into
//! caller-provided outputs. Each module opens with its semantics; the most used items are
//! re-exported here.

pub mod activation;
pub mod attention;
pub mod conv;
pub mod elementwise;
pub mod embedding;
#[cfg(target_arch = "x86_64")]
mod exp_avx2;
#[cfg(target_arch = "x86_64")]
mod exp_avx512;
#[cfg(all(test, target_arch = "x86_64"))]
mod exp_checks;
pub mod flash_attention;
pub mod gemm;
pub mod int8;
pub mod linear;
pub mod matmul;
pub mod norm;
pub mod paged_attention;
pub mod pool;
pub mod quantized;
pub mod reduce;
pub mod resize;
pub mod rope;
pub mod shape;
pub mod softmax;
mod vectorize;

pub use activation::{Activation, apply_activation, apply_activation_in_place};
pub use attention::{
    AttentionMask, AttentionOptions, AttentionShape, AttentionWorkspace,
    scaled_dot_product_attention, scaled_dot_product_attention_with_workspace,
};
pub use conv::{
    Conv1dOptions, Conv2dOptions, ConvWorkspace, PackedConv1d, PackedConv2d, conv1d, conv2d,
};
pub use elementwise::{
    BinaryOp, add_row_vector_in_place, binary, binary_row_vector, binary_row_vector_in_place,
    binary_same_shape, binary_same_shape_in_place, broadcast_shapes,
};
pub use embedding::embedding;
pub use flash_attention::{BlockSparseLayout, FlashAttentionWorkspace, flash_attention};
pub use gemm::{
    Bias, Epilogue, GemmOptions, Lhs, MatrixRef, PackedLhsMatrix, PackedMatrix, Rhs, gemm,
};
pub use linear::{PackedLinear, linear};
pub use matmul::{matmul, matmul_output_shape};
pub use norm::{
    BatchNorm, BatchNormParams, LayerNormOptions, RmsNormOptions, batch_norm, batch_norm_in_place,
    layer_norm, layer_norm_in_place, rms_norm, rms_norm_in_place,
};
pub use pool::{
    AvgPool1dOptions, AvgPool2dOptions, MaxPool1dOptions, MaxPool2dOptions, avg_pool1d, avg_pool2d,
    global_avg_pool, global_max_pool, max_pool1d, max_pool2d,
};
pub use reduce::{ReduceOp, reduce};
pub use rope::{RopeConvention, RopeOptions, RopeTable, apply_rope, apply_rope_in_place};
pub use shape::{concat, permute, select, slice_axis, transpose};
pub use softmax::{log_softmax, log_softmax_in_place, softmax, softmax_in_place};
