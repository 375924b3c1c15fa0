//! The `network!` macro's token path: Rust tokens (parsed from the bytes by proc_macro2),
//! printed back to `.nn` text by `TokenSource`, compiled to IR, and every diagnostic mapped back
//! to a token span, as the macro does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nnc_compiler::syntax::tokens::TokenSource;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(tokens) = text.parse::<proc_macro2::TokenStream>() else {
        return;
    };
    let source = TokenSource::new(tokens);
    if let Err(errors) = nnc_compiler::compile_to_ir(&source.text, &Default::default()) {
        for diagnostic in &errors.0 {
            let _ = source.span_at(diagnostic.span.start as usize);
        }
    }
});
