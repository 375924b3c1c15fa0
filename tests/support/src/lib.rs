//! Helpers shared by nnc's tests, so that every test walks the same models, runs them at the same
//! sizes and feeds them the same kind of inputs.
//!
//! - [`models`]: the `.nn` files the tests run (examples, pass inputs, ONNX Runtime fixtures,
//!   codegen test models), found by one directory walk, sorted by name.
//! - [`header`]: the test dimensions a model declares in its header comment
//!   (`// test-dims: seq=16`), which every test that runs the model in the interpreter applies.
//! - [`inputs`] (feature `interpreter`): one deterministic input generator, plus loaders for the
//!   inputs and weights stored next to a fixture.
//! - [`model_cache`]: where the real pretrained models are (`bench/fetch_models.sh`), and the
//!   line a test prints when they are not.
//!
//! The crate is dev-only: no published crate depends on it.

pub mod header;
#[cfg(feature = "interpreter")]
pub mod inputs;
pub mod model_cache;
pub mod models;

pub use header::{HeaderError, test_dims};
pub use model_cache::{cached_model, model_cache_dir};
pub use models::{
    Collection, TestModel, codegen_models, example, examples, fixtures, nn_files, pass_inputs,
    workspace_root,
};
