//! The `network!` macro: a thin shim over nnc-compiler.
//!
//! The macro prints its tokens back to `.nn` text ([`TokenSource`]), runs the same front end as
//! `nnc check`, and turns each diagnostic into a `compile_error!` spanned on the offending token.
//! Everything else lives in the compiler crate, where it is tested without a compiler invocation.

#![forbid(unsafe_code)]

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2, TokenTree};
use quote::{quote, quote_spanned};

use nnc_compiler::calibration::Calibration;
use nnc_compiler::syntax::tokens::TokenSource;
use nnc_compiler::{FrontendOptions, QuantizedMode, codegen, diagnostics, ir};

/// Compiles a network written inline in Rust, or loaded with `network!(file = "model.nn")` from a
/// path relative to the crate's manifest directory.
///
/// For each network it defines the same struct that `nnc compile` generates: `mlp` becomes
/// `Mlp`, with `from_safetensors`, `with_random_weights` and `forward`.
///
/// Options come first, as `name = "value"` separated by commas: `quantize = "q4_1"` (or `q8_0`,
/// `q4_0`) and `quantize_mode = "fast"` (or `exact`, the default) quantize the linear layers'
/// weights as `nnc compile --quantize` does; `quantize = "int8"` with `calibration =
/// "scales.json"` (a path relative to the crate's manifest directory, written by `nnc calibrate`)
/// runs the 2-D convolutions in int8 as `nnc compile --quantize int8 --calibration` does. Inline
/// source follows the options after a `;`: `network!(quantize = "q8_0", file = "model.nn")`,
/// `network! { quantize = "q8_0"; network … }`.
#[proc_macro]
pub fn network(input: TokenStream) -> TokenStream {
    let input = TokenStream2::from(input);
    let (options, rest) = match options(input) {
        Ok(parsed) => parsed,
        Err(error) => return error.into(),
    };
    let frontend = match options.frontend() {
        Ok(frontend) => frontend,
        Err(error) => return error.into(),
    };
    match options.file {
        Some((path, span)) => from_file(&path, span, &frontend),
        None => inline(rest, &frontend),
    }
    .into()
}

/// The options before the model: `file`, `quantize`, `quantize_mode`.
#[derive(Default)]
struct Options {
    file: Option<(String, Span)>,
    quantize: Option<(String, Span)>,
    quantize_mode: Option<(String, Span)>,
    calibration: Option<(String, Span)>,
}

impl Options {
    fn frontend(&self) -> Result<FrontendOptions, TokenStream2> {
        let mode = match &self.quantize_mode {
            None => QuantizedMode::Exact,
            Some((name, span)) => QuantizedMode::from_name(name).ok_or_else(|| {
                let message =
                    format!("the quantize modes are \"exact\" and \"fast\", not \"{name}\"");
                quote_spanned!(*span=> compile_error!(#message);)
            })?,
        };
        if let (Some((_, span)), false) = (
            &self.calibration,
            self.quantize
                .as_ref()
                .is_some_and(|(name, _)| name.eq_ignore_ascii_case("int8")),
        ) {
            return Err(
                quote_spanned!(*span=> compile_error!("`calibration` is for `quantize = \"int8\"`");),
            );
        }
        let quantize = match &self.quantize {
            None => {
                if let Some((_, span)) = &self.quantize_mode {
                    return Err(
                        quote_spanned!(*span=> compile_error!("`quantize_mode` needs `quantize = \"q8_0\"` (or \"q4_0\", \"q4_1\")");),
                    );
                }
                None
            }
            Some((name, span)) if name.eq_ignore_ascii_case("int8") => {
                let Some((path, calibration_span)) = &self.calibration else {
                    return Err(
                        quote_spanned!(*span=> compile_error!("`quantize = \"int8\"` needs `calibration = \"scales.json\"`, the file `nnc calibrate` writes");),
                    );
                };
                let manifest_dir =
                    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".to_string());
                let full_path = std::path::Path::new(&manifest_dir).join(path);
                let calibration = std::fs::read_to_string(&full_path)
                    .map_err(|error| error.to_string())
                    .and_then(|text| Calibration::from_json(&text))
                    .map_err(|error| {
                        let message = format!("{}: {error}", full_path.display());
                        quote_spanned!(*calibration_span=> compile_error!(#message);)
                    })?;
                return Ok(FrontendOptions {
                    quantize: Some(ir::Quantization {
                        format: nnc_compiler::QuantFormat::Q8_0.into(),
                        mode,
                    }),
                    int8_convs: Some(calibration),
                    ..Default::default()
                });
            }
            Some((name, span)) => {
                let format = ir::QuantTarget::from_name(name).ok_or_else(|| {
                    let names: Vec<String> = ir::QuantTarget::names()
                        .iter()
                        .map(|name| format!("\"{name}\""))
                        .collect();
                    let message = format!(
                        "the quantize formats are {}, \"int8\", not \"{name}\"",
                        names.join(", ")
                    );
                    quote_spanned!(*span=> compile_error!(#message);)
                })?;
                Some(ir::Quantization { format, mode })
            }
        };
        Ok(FrontendOptions {
            quantize,
            ..Default::default()
        })
    }
}

/// Splits the leading `name = "value"` options off `input`; returns them and the tokens after
/// them (the inline model, after a `;`). Input that does not start with `name = "…"` is all
/// model: `.nn` source never does.
fn options(input: TokenStream2) -> Result<(Options, TokenStream2), TokenStream2> {
    let tokens: Vec<TokenTree> = input.clone().into_iter().collect();
    let mut options = Options::default();
    let mut position = 0;
    while let [TokenTree::Ident(key), TokenTree::Punct(eq), rest @ ..] = &tokens[position..] {
        if eq.as_char() != '=' {
            break;
        }
        let value = match rest.first() {
            Some(TokenTree::Literal(literal)) => {
                let text = literal.to_string();
                text.strip_prefix('"')
                    .and_then(|text| text.strip_suffix('"'))
                    .map(|value| (value.to_string(), literal.span()))
            }
            _ => None,
        };
        let span = rest.first().map_or(eq.span(), TokenTree::span);
        let slot = match key.to_string().as_str() {
            "file" => &mut options.file,
            "quantize" => &mut options.quantize,
            "quantize_mode" => &mut options.quantize_mode,
            "calibration" => &mut options.calibration,
            // `.nn` source never starts with `name = "…"`, so this is a misspelt option.
            _ if position == 0 && value.is_none() => break,
            other => {
                let message = format!(
                    "unknown option `{other}`: the options are `file`, `quantize`, `quantize_mode` and `calibration`"
                );
                let span = key.span();
                return Err(quote_spanned!(span=> compile_error!(#message);));
            }
        };
        let Some(value) = value else {
            let message = match key.to_string().as_str() {
                "file" => "expected a path string: `file = \"model.nn\"`".to_string(),
                name => format!("expected a string: `{name} = \"…\"`"),
            };
            return Err(quote_spanned!(span=> compile_error!(#message);));
        };
        *slot = Some(value);
        position += 3;
        match tokens.get(position) {
            Some(TokenTree::Punct(punct)) if punct.as_char() == ',' => position += 1,
            Some(TokenTree::Punct(punct)) if punct.as_char() == ';' => {
                position += 1;
                break;
            }
            None => break,
            Some(other) => {
                let span = other.span();
                return Err(
                    quote_spanned!(span=> compile_error!("expected `,` between options, or `;` before the model");),
                );
            }
        }
    }
    if position == 0 {
        return Ok((options, input));
    }
    Ok((options, tokens[position..].iter().cloned().collect()))
}

fn inline(input: TokenStream2, frontend: &FrontendOptions) -> TokenStream2 {
    let source = TokenSource::new(input);
    match compile(&source.text, frontend) {
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

fn from_file(path: &str, span: Span, frontend: &FrontendOptions) -> TokenStream2 {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".to_string());
    let full_path = std::path::Path::new(&manifest_dir).join(path);
    let source = match std::fs::read_to_string(&full_path) {
        Ok(source) => source,
        Err(error) => {
            let message = format!("cannot read {}: {error}", full_path.display());
            return quote_spanned!(span=> compile_error!(#message););
        }
    };
    match compile(&source, frontend) {
        Ok(code) => expand(&code, Some(&full_path.display().to_string())),
        Err(errors) => {
            let message = diagnostics::render(&errors.0, path, &source);
            quote_spanned!(span=> compile_error!(#message);)
        }
    }
}

/// The Rust code of a model, as `nnc compile` and `Builder` write it.
fn compile(source: &str, frontend: &FrontendOptions) -> Result<String, nnc_compiler::Diagnostics> {
    nnc_compiler::compile_to_rust(
        source,
        frontend,
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
