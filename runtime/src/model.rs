//! The paths generated code reached through `model::` before the runtime was split into modules
//! with one job each, kept as re-exports so that generated code keeps compiling until code
//! generation moves to the new paths; then this module goes.
//!
//! Where each item lives now: errors in [`crate::error`], the arena helpers in [`crate::arena`],
//! `SparsePattern` in [`crate::kernels::attention::mask`], batch-norm folding in
//! [`crate::kernels::norm::fold`], the affine map and elementwise chains in
//! [`crate::kernels::elementwise::chain`], the element-type-generic data movement in
//! [`crate::kernels::shape`] and `ElementwiseStep` in `nnc_ops`.

pub use crate::arena::{check_weights, copy_input, output_view, split_mut};
pub use crate::error::{ModelError, at};
pub use crate::kernels::attention::SparsePattern;
pub use crate::kernels::elementwise::chain::{
    affine, affine_in_place, elementwise_chain, elementwise_chain_in_place,
};
pub use crate::kernels::norm::fold::{BatchNormToFold, FoldedBatchNorm, fold_batch_norm};
pub use crate::kernels::shape::{
    concat_any_type as concat, permute_any_type as permute, slice_axis_any_type as slice,
};
pub use crate::tensor::MAX_RANK;
pub use nnc_ops::ElementwiseStep;
