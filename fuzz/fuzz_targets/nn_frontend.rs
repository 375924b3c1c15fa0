//! The `.nn` front end to IR (parse, lower, infer shapes, verify) on any bytes: diagnostics,
//! never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(errors) = nnc_compiler::compile_to_ir(source, &Default::default()) {
        // Rendering is part of the front end's answer: spans must lie in the source.
        let _ = nnc_compiler::diagnostics::render(&errors.0, "fuzz.nn", source);
    }
});
