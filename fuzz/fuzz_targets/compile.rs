//! `nnc compile` end to end: any model the front end accepts goes through the optimizer and
//! code generation (with its decoders) without a panic. Models are capped at 400 nodes per
//! network to keep each run fast; sizes are not capped, since codegen allocates nothing by them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let options = Default::default();
    let Ok(module) = nnc_compiler::compile_to_ir(source, &options) else {
        return;
    };
    if module.networks.iter().any(|graph| graph.nodes.len() > 400) {
        return;
    }
    let _ = nnc_compiler::compile_to_rust(
        source,
        &options,
        nnc_compiler::passes::OptLevel::O2,
        &Default::default(),
    );
});
