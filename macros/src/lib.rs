//! The `network!` macro: a thin shim over nnc-compiler.

use proc_macro::TokenStream;

/// Compiles a network written inline in Rust.
#[proc_macro]
pub fn network(input: TokenStream) -> TokenStream {
    let _ = input;
    TokenStream::new()
}
