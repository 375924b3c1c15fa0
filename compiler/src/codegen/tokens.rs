//! Small token helpers of code generation: literals, ranges, and [`ToRust`], which prints the
//! runtime's own values (its option structs, its `Activation`) as the Rust expressions that
//! rebuild them.
//!
//! Generated code names the runtime through two aliases its module declares: `rt` for the
//! runtime and `k` for `rt::kernels` (see [`super::network_module`]).

use std::fmt::Debug;

use nnc_ops::Activation;
use nnc_ops::AttentionShape;
use nnc_ops::BinaryOp;
use nnc_ops::ElementwiseStep;
use nnc_ops::ReduceOp;
use nnc_ops::RopeConvention;
use nnc_ops::quant::ActivationQuantization;
use nnc_ops::{AvgPool1dOptions, AvgPool2dOptions, MaxPool1dOptions, MaxPool2dOptions};
use nnc_ops::{Conv1dOptions, Conv2dOptions, ConvTranspose2dOptions};
use nnc_ops::{PadMode, Resize2dOptions};
use nnc_ops::{QuantFormat, QuantizedMode};
use proc_macro2::{Literal, Spacing, TokenStream, TokenTree};
use quote::{format_ident, quote};

use crate::ir::DType;

/// A runtime value printed as the expression that builds it in generated code.
pub(super) trait ToRust {
    fn to_rust(&self) -> TokenStream;
}

/// Runtime types whose `Debug` form, under their module's path, is the expression that builds
/// them: derived `Debug` of plain enums and structs of numbers, arrays and options.
/// [`from_debug`] checks that each printed value has that form, so a variant added to the
/// runtime (a new activation) needs no code here.
macro_rules! to_rust_from_debug {
    ($($type:ty => $prefix:expr;)*) => {$(
        impl ToRust for $type {
            fn to_rust(&self) -> TokenStream {
                from_debug($prefix, self)
            }
        }
    )*};
}

to_rust_from_debug! {
    Activation => quote!(k::activation::Activation::);
    BinaryOp => quote!(k::elementwise::BinaryOp::);
    ReduceOp => quote!(k::reduce::ReduceOp::);
    RopeConvention => quote!(k::rope::RopeConvention::);
    MaxPool1dOptions => quote!(k::pool::);
    MaxPool2dOptions => quote!(k::pool::);
    AvgPool1dOptions => quote!(k::pool::);
    AvgPool2dOptions => quote!(k::pool::);
    Conv1dOptions => quote!(k::conv::);
    Conv2dOptions => quote!(k::conv::);
    ConvTranspose2dOptions => quote!(k::conv::);
    PadMode => quote!(k::resize::PadMode::);
    AttentionShape => quote!(k::attention::);
    QuantFormat => quote!(k::quantized::QuantFormat::);
    QuantizedMode => quote!(k::quantized::QuantizedMode::);
    ActivationQuantization => quote!(k::int8::);
}

/// Its enums are fields, which `from_debug` would print without their paths.
impl ToRust for Resize2dOptions {
    fn to_rust(&self) -> TokenStream {
        let output_size = literal_list(&self.output_size);
        let (scale_h, scale_w) = (f32_lit(self.scale[0]), f32_lit(self.scale[1]));
        let mode = from_debug(quote!(k::resize::ResizeMode::), &self.mode);
        let coordinates = from_debug(quote!(k::resize::CoordinateTransform::), &self.coordinates);
        let nearest = from_debug(quote!(k::resize::NearestRounding::), &self.nearest);
        quote!(k::resize::Resize2dOptions {
            output_size: #output_size, scale: [#scale_h, #scale_w], mode: #mode,
            coordinates: #coordinates, nearest: #nearest,
        })
    }
}

impl ToRust for ElementwiseStep {
    fn to_rust(&self) -> TokenStream {
        match self {
            ElementwiseStep::Activation(activation) => {
                let activation = activation.to_rust();
                quote!(k::elementwise::ElementwiseStep::Activation(#activation))
            }
            ElementwiseStep::Affine { scale, shift } => {
                let (scale, shift) = (f32_lit(*scale), f32_lit(*shift));
                quote!(k::elementwise::ElementwiseStep::Affine { scale: #scale, shift: #shift })
            }
        }
    }
}

impl<T: ToRust> ToRust for Option<T> {
    fn to_rust(&self) -> TokenStream {
        match self {
            Some(value) => {
                let value = value.to_rust();
                quote!(Some(#value))
            }
            None => quote!(None),
        }
    }
}

/// `prefix` followed by the `Debug` form of `value`, after checking that the form is a
/// constructor (`Relu`, `LeakyRelu { negative_slope: 0.01 }`, `MaxPool2dOptions { .. }`) whose
/// arguments are literals, arrays of them, or options of them. Anything else, such as a
/// non-finite float printed as `NaN`, is a bug in the caller and panics.
fn from_debug(prefix: TokenStream, value: &impl Debug) -> TokenStream {
    let text = format!("{value:?}");
    let expression: syn::Expr = syn::parse_str(&text)
        .unwrap_or_else(|error| panic!("from_debug: `{text}` is not an expression: {error}"));
    assert!(
        is_constructor(&expression),
        "from_debug: `{text}` is not a constructor of plain data"
    );
    quote!(#prefix #expression)
}

/// A unit variant, a struct or struct-like variant, or a tuple variant, of plain data.
fn is_constructor(expression: &syn::Expr) -> bool {
    match expression {
        syn::Expr::Path(path) => is_single_name(&path.path),
        syn::Expr::Struct(constructor) => {
            is_single_name(&constructor.path)
                && constructor.rest.is_none()
                && constructor
                    .fields
                    .iter()
                    .all(|field| is_plain_data(&field.expr))
        }
        syn::Expr::Call(call) => {
            matches!(&*call.func, syn::Expr::Path(path) if is_single_name(&path.path))
                && call.args.iter().all(is_plain_data)
        }
        _ => false,
    }
}

/// A literal (possibly negated), an array of plain data, `None`, or `Some` of plain data.
fn is_plain_data(expression: &syn::Expr) -> bool {
    match expression {
        syn::Expr::Lit(literal) => matches!(
            literal.lit,
            syn::Lit::Int(_) | syn::Lit::Float(_) | syn::Lit::Bool(_)
        ),
        syn::Expr::Unary(unary) => {
            matches!(unary.op, syn::UnOp::Neg(_))
                && matches!(&*unary.expr, syn::Expr::Lit(literal) if matches!(literal.lit, syn::Lit::Int(_) | syn::Lit::Float(_)))
        }
        syn::Expr::Array(array) => array.elems.iter().all(is_plain_data),
        syn::Expr::Path(path) => path.path.is_ident("None"),
        syn::Expr::Call(call) => {
            matches!(&*call.func, syn::Expr::Path(path) if path.path.is_ident("Some"))
                && call.args.len() == 1
                && call.args.iter().all(is_plain_data)
        }
        _ => false,
    }
}

fn is_single_name(path: &syn::Path) -> bool {
    path.leading_colon.is_none() && path.segments.len() == 1 && path.segments[0].arguments.is_none()
}

/// Whether `tokens` use `name` as the first segment of a path (`name::..`), groups included.
pub(super) fn mentions_path_root(tokens: &TokenStream, name: &str) -> bool {
    let trees: Vec<TokenTree> = tokens.clone().into_iter().collect();
    trees.iter().enumerate().any(|(index, tree)| match tree {
        TokenTree::Ident(ident) => {
            ident == name
                && matches!(trees.get(index + 1), Some(TokenTree::Punct(punct)) if punct.as_char() == ':' && punct.spacing() == Spacing::Joint)
                && !matches!(index.checked_sub(1).and_then(|before| trees.get(before)), Some(TokenTree::Punct(punct)) if punct.as_char() == ':' || punct.as_char() == '.')
        }
        TokenTree::Group(group) => mentions_path_root(&group.stream(), name),
        _ => false,
    })
}

/// A suffixed `f32` literal.
pub(super) fn f32_lit(value: f32) -> Literal {
    Literal::f32_suffixed(value)
}

/// An unsuffixed integer literal.
pub(super) fn lit(value: usize) -> Literal {
    Literal::usize_unsuffixed(value)
}

/// `[1, 2, 3]` with unsuffixed literals.
pub(super) fn literal_list(values: &[usize]) -> TokenStream {
    let values = values.iter().map(|&value| lit(value));
    quote!([#(#values),*])
}

/// `start..end`.
pub(super) fn range_tokens(range: std::ops::Range<usize>) -> TokenStream {
    let (start, end) = (lit(range.start), lit(range.end));
    quote!(#start..#end)
}

/// `Some(value)` or `None`.
pub(super) fn option_tokens(value: Option<usize>) -> TokenStream {
    match value {
        Some(value) => {
            let value = lit(value);
            quote!(Some(#value))
        }
        None => quote!(None),
    }
}

/// The arena field holding values of `dtype`.
pub(super) fn arena_field(dtype: DType) -> syn::Ident {
    match dtype {
        DType::F32 => format_ident!("arena"),
        DType::I64 => format_ident!("arena_i64"),
    }
}

pub(super) fn element_type(dtype: DType) -> TokenStream {
    match dtype {
        DType::F32 => quote!(f32),
        DType::I64 => quote!(i64),
    }
}

/// `rt::ndarray::Ix<rank>`.
pub(super) fn dimension_type(rank: usize) -> TokenStream {
    let name = format_ident!("Ix{}", rank);
    quote!(rt::ndarray::#name)
}

/// An identifier from any name, for fields and locals: lowercase ASCII letters, digits and
/// underscores, not starting with a digit, not a keyword. `layer1.0.conv1` is `layer1_0_conv1`.
pub(super) fn sanitized_name(name: &str) -> String {
    let mut base: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if base.is_empty() || base.starts_with(|c: char| c.is_ascii_digit()) {
        base = format!("layer_{base}");
    }
    if syn::parse_str::<syn::Ident>(&base).is_err() {
        base.push('_');
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_values_print_as_their_constructors() {
        let printed = |tokens: TokenStream| tokens.to_string().replace(' ', "");
        assert_eq!(
            printed(Activation::Relu.to_rust()),
            "k::activation::Activation::Relu"
        );
        assert_eq!(
            printed(
                Activation::LeakyRelu {
                    negative_slope: -0.25
                }
                .to_rust()
            ),
            "k::activation::Activation::LeakyRelu{negative_slope:-0.25}"
        );
        assert_eq!(
            printed(AvgPool2dOptions::new([2, 3]).to_rust()),
            "k::pool::AvgPool2dOptions{kernel:[2,3],stride:[2,3],padding:[0,0],ceil_mode:false,count_include_pad:true,divisor_override:None}"
        );
    }

    #[test]
    fn a_value_that_is_not_plain_data_is_refused() {
        let nan = std::panic::catch_unwind(|| {
            Activation::LeakyRelu {
                negative_slope: f32::NAN,
            }
            .to_rust()
        });
        assert!(nan.is_err(), "NaN would print as a path");
    }
}
