//! What each fuzz target checks, one function per target, shared by the libFuzzer binaries in
//! `fuzz_targets/` (nightly, `cargo +nightly fuzz run TARGET`) and by the stable replay test
//! `tests/fuzz_corpus.rs`, which runs every committed corpus entry and every past crash
//! (`fuzz/regressions/TARGET/`) through the same function on `cargo test`.
//!
//! Each function takes any bytes and must return without panicking: the readers answer with a
//! value or an error. Work per input is capped where noted (node counts, tensor sizes), never
//! the readers' own checks.

use ndarray_npy::ReadNpyExt;
use nnc_runtime::weights::gguf::GgufFile;
use nnc_runtime::weights::{Init, WeightSpec, load_gguf, load_safetensors};

/// What a target checks on one input.
pub type Check = fn(&[u8]);

/// The targets, by the name of their binary and corpus folder.
pub const TARGETS: &[(&str, Check)] = &[
    ("nn_frontend", nn_frontend),
    ("macro_tokens", macro_tokens),
    ("compile", compile),
    ("safetensors_npy", safetensors_npy),
    ("gguf", gguf),
    ("onnx", onnx),
];

/// The `.nn` front end to IR (parse, lower, infer shapes, verify) on any bytes: diagnostics,
/// never a panic; rendering them too, since spans must lie in the source.
pub fn nn_frontend(data: &[u8]) {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(errors) = nnc_compiler::compile_to_ir(source, &Default::default()) {
        let _ = nnc_compiler::diagnostics::render(&errors.0, "fuzz.nn", source);
    }
}

/// The `network!` macro's token path: Rust tokens (parsed from the bytes by proc_macro2),
/// printed back to `.nn` text by `TokenSource`, compiled to IR, and every diagnostic mapped back
/// to a token span, as the macro does.
pub fn macro_tokens(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(tokens) = text.parse::<proc_macro2::TokenStream>() else {
        return;
    };
    let source = nnc_compiler::syntax::tokens::TokenSource::new(tokens);
    if let Err(errors) = nnc_compiler::compile_to_ir(&source.text, &Default::default()) {
        for diagnostic in &errors.0 {
            let _ = source.span_at(diagnostic.span.start as usize);
        }
    }
}

/// `nnc compile` end to end: any model the front end accepts goes through the optimizer and code
/// generation (with its decoders) without a panic. Models are capped at 400 nodes per network
/// to keep each run fast; sizes are not capped, since codegen allocates nothing by them.
pub fn compile(data: &[u8]) {
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
}

const SAFETENSORS_SPECS: &[WeightSpec<'static>] = &[
    WeightSpec {
        name: "fc.weight",
        shape: &[2, 3],
        init: Init::FanIn { fan_in: 3 },
    },
    WeightSpec {
        name: "fc.bias",
        shape: &[2],
        init: Init::Zeros,
    },
];

/// Weights and inputs from untrusted files: safetensors bytes loaded against a small network's
/// weight specs, and the same bytes read as f32 and i64 `.npy` arrays, as `nnc run` does.
pub fn safetensors_npy(data: &[u8]) {
    let _ = load_safetensors(data, SAFETENSORS_SPECS, "fuzz.safetensors");
    let _ = ndarray::ArrayD::<f32>::read_npy(data);
    let _ = ndarray::ArrayD::<i64>::read_npy(data);
}

const GGUF_SPECS: &[WeightSpec<'static>] = &[WeightSpec {
    name: "fc.weight",
    shape: &[2, 32],
    init: Init::FanIn { fan_in: 32 },
}];

/// The GGUF reader on any bytes: the header, metadata and tensor table, every tensor's data
/// dequantized to f32 (tensors of up to 2^20 values), and loading a small network's weights.
pub fn gguf(data: &[u8]) {
    if let Ok(file) = GgufFile::parse(data) {
        for tensor in &file.tensors {
            if tensor.element_count() <= 1 << 20 {
                let _ = file.dequantize(tensor);
            }
        }
    }
    let _ = load_gguf(data, GGUF_SPECS, "fuzz.gguf");
}

/// The ONNX reader on any bytes: the protobuf decoder, then the importer (constant folding,
/// shape inference, translation to `.nn`). Each is an error or an answer, never a panic, and
/// whatever the importer writes must be a `.nn` model that the front end accepts.
pub fn onnx(data: &[u8]) {
    let Ok(model) = nnc_compiler::onnx::decode_model(data, std::path::Path::new("fuzz.onnx"))
    else {
        return;
    };
    let options = nnc_compiler::onnx::import::ImportOptions {
        source_name: "fuzz.onnx".into(),
        ..Default::default()
    };
    let Ok(imported) = nnc_compiler::onnx::import::import_model(&model, &options) else {
        return;
    };
    let _ = imported.safetensors();
    if let Err(errors) = nnc_compiler::compile_to_ir(&imported.source, &Default::default()) {
        panic!(
            "the importer wrote a model the front end rejects:\n{}\n{}",
            imported.source,
            nnc_compiler::diagnostics::render(&errors.0, "imported.nn", &imported.source)
        );
    }
}
