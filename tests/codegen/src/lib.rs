//! Generated code for every example and ONNX Runtime fixture, compiled with warnings denied.
//!
//! `build.rs` generates each model with `nnc_compiler::Builder` and an adapter, `run`, that takes
//! dynamic inputs; the tests compare every model with the reference interpreter.

#![deny(warnings)]

/// A dynamically typed input for the adapters.
pub enum Input<'a> {
    F32(ndarray::ArrayViewD<'a, f32>),
    I64(ndarray::ArrayViewD<'a, i64>),
}

impl<'a> Input<'a> {
    /// The f32 view; panics on an i64 input, which the adapters never ask for.
    pub fn f32(&self) -> ndarray::ArrayViewD<'a, f32> {
        match self {
            Input::F32(view) => view.clone(),
            Input::I64(_) => panic!("expected an f32 input"),
        }
    }

    /// The i64 view; panics on an f32 input, which the adapters never ask for.
    pub fn i64(&self) -> ndarray::ArrayViewD<'a, i64> {
        match self {
            Input::I64(view) => view.clone(),
            Input::F32(_) => panic!("expected an i64 input"),
        }
    }
}

/// Builds a model from weights and runs it on inputs.
pub type Runner =
    fn(Vec<Vec<f32>>, &[Input<'_>]) -> Result<Vec<ndarray::ArrayD<f32>>, nnc::runtime::ModelError>;

include!(concat!(env!("OUT_DIR"), "/models.rs"));
