//! The `network!` macro: a thin shim over nnc-compiler.
//!
//! The macro prints its tokens back to `.nn` text ([`TokenSource`]), runs the same front end as
//! `nnc check`, and turns each diagnostic into a `compile_error!` spanned on the offending token.
//! Everything else lives in the compiler crate, where it is tested without a compiler invocation.

#![forbid(unsafe_code)]

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2, TokenTree};
use quote::{quote, quote_spanned};

use nnc_compiler::syntax::tokens::TokenSource;
use nnc_compiler::{FrontendOptions, codegen, diagnostics};

/// Compiles a network written inline in Rust, or loaded with `network!(file = "model.nn")` from a
/// path relative to the crate's manifest directory.
///
/// For each network it defines the same struct that `nnc compile` generates: `mlp` becomes
/// `Mlp`, with `from_safetensors`, `with_random_weights` and `forward`.
#[proc_macro]
pub fn network(input: TokenStream) -> TokenStream {
    let input = TokenStream2::from(input);
    match file_argument(&input) {
        Some(Ok((path, span))) => from_file(&path, span),
        Some(Err(error)) => error,
        None => inline(input),
    }
    .into()
}

/// `file = "path"`, if the input starts with `file =`.
fn file_argument(input: &TokenStream2) -> Option<Result<(String, Span), TokenStream2>> {
    let tokens: Vec<TokenTree> = input.clone().into_iter().collect();
    let [TokenTree::Ident(key), TokenTree::Punct(eq), rest @ ..] = tokens.as_slice() else {
        return None;
    };
    if key != "file" || eq.as_char() != '=' {
        return None;
    }
    let path = match rest {
        [TokenTree::Literal(literal)] => {
            let text = literal.to_string();
            text.strip_prefix('"')
                .and_then(|text| text.strip_suffix('"'))
                .map(|path| (path.to_string(), literal.span()))
        }
        _ => None,
    };
    let span = rest.first().map_or(eq.span(), TokenTree::span);
    Some(path.ok_or_else(
        || quote_spanned!(span=> compile_error!("expected a path string: `file = \"model.nn\"`");),
    ))
}

fn inline(input: TokenStream2) -> TokenStream2 {
    let source = TokenSource::new(input);
    match compile(&source.text) {
        Ok(code) => expand(&code, None),
        Err(errors) => {
            let errors = errors.0.iter().map(|diagnostic| {
                let span = source.span_at(diagnostic.span.start as usize);
                let mut message = diagnostic.message.clone();
                if !diagnostic.label.is_empty() {
                    message.push_str(&format!(": {}", diagnostic.label));
                }
                for hint in &diagnostic.hints {
                    message.push_str(&format!("\nhelp: {hint}"));
                }
                quote_spanned!(span=> compile_error!(#message);)
            });
            quote!(#(#errors)*)
        }
    }
}

fn from_file(path: &str, span: Span) -> TokenStream2 {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".to_string());
    let full_path = std::path::Path::new(&manifest_dir).join(path);
    let source = match std::fs::read_to_string(&full_path) {
        Ok(source) => source,
        Err(error) => {
            let message = format!("cannot read {}: {error}", full_path.display());
            return quote_spanned!(span=> compile_error!(#message););
        }
    };
    match compile(&source) {
        Ok(code) => expand(&code, Some(&full_path.display().to_string())),
        Err(errors) => {
            let message = diagnostics::render(&errors.0, path, &source);
            quote_spanned!(span=> compile_error!(#message);)
        }
    }
}

/// The Rust code of a model, as `nnc compile` and `Builder` write it.
fn compile(source: &str) -> Result<String, nnc_compiler::Diagnostics> {
    nnc_compiler::compile_to_rust(
        source,
        &FrontendOptions::default(),
        Default::default(),
        &codegen::CodegenOptions::default(),
    )
}

/// The generated code as tokens (its comments vanish when the text becomes tokens).
fn expand(code: &str, file: Option<&str>) -> TokenStream2 {
    let items: TokenStream2 = match code.parse() {
        Ok(items) => items,
        Err(error) => {
            let message = format!("nnc generated code that does not parse (a bug in nnc): {error}");
            return quote!(compile_error!(#message););
        }
    };
    // Rebuild when the model file changes.
    let dependency = file.map(|file| {
        quote!(
            const _: &[u8] = include_bytes!(#file);
        )
    });
    quote!(#dependency #items)
}
