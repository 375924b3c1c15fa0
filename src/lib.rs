//! nnc: a neural-network model compiler.
//!
//! This facade crate is what a user depends on: it re-exports the runtime that generated code links
//! against and the [`network!`] macro that compiles a model written inline in Rust.

pub use nnc_macros::network;
pub use nnc_runtime as runtime;
