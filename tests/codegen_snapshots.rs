//! Snapshots of the generated code of every example at the default -O2, reviewed as code: a change in what nnc
//! generates shows up here as a diff. `nnc compile`, `Builder` and `network!` all produce this
//! text (the macro minus comments).

use std::path::Path;

use nnc_compiler::codegen::{CodegenOptions, generate};
use nnc_compiler::passes::OptLevel;
use nnc_compiler::{FrontendOptions, compile_to_ir};

#[test]
fn generated_code_of_every_example() {
    insta::glob!("../examples", "*.nn", |path| {
        let source = std::fs::read_to_string(path).unwrap();
        let source_name = path
            .file_name()
            .map(|name| name.to_string_lossy().to_string());
        let options = CodegenOptions {
            source_name,
            ..CodegenOptions::default()
        };
        let code = nnc_compiler::compile_to_rust(
            &source,
            &FrontendOptions::default(),
            OptLevel::default(),
            &options,
        )
        .unwrap();
        insta::assert_snapshot!(code);
    });
}

/// The generated code of the reductions, log-softmax and unary math functions (no example uses
/// them): `k::reduce::reduce` over the last axis, a middle axis and two axes, `log_softmax` over
/// a middle and the last axis, and the math functions as activations, fused into linear layers.
#[test]
fn generated_code_of_reductions_and_math_functions() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/codegen/models/reductions.nn");
    let source = std::fs::read_to_string(path).unwrap();
    let options = CodegenOptions {
        source_name: Some("reductions.nn".to_string()),
        ..CodegenOptions::default()
    };
    let code = nnc_compiler::compile_to_rust(
        &source,
        &FrontendOptions::default(),
        OptLevel::default(),
        &options,
    )
    .unwrap();
    insta::assert_snapshot!(code);
}

#[test]
fn cli_and_builder_write_the_same_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out_dir = std::env::temp_dir().join(format!("nnc-builder-{}", std::process::id()));
    std::fs::create_dir_all(&out_dir).unwrap();
    nnc_compiler::Builder::new()
        .out_dir(&out_dir)
        .emit_rerun_if_changed(false)
        .compile(&[root.join("examples/resnet18.nn")])
        .unwrap();
    let built = std::fs::read_to_string(out_dir.join("resnet18.rs")).unwrap();
    std::fs::remove_dir_all(&out_dir).unwrap();

    let source = std::fs::read_to_string(root.join("examples/resnet18.nn")).unwrap();
    let mut module = compile_to_ir(&source, &FrontendOptions::default()).unwrap();
    nnc_compiler::optimize_module(&mut module, OptLevel::default());
    let options = CodegenOptions {
        source_name: Some("resnet18.nn".to_string()),
        ..CodegenOptions::default()
    };
    assert_eq!(built, generate(&module, &options));
}

/// A tied embedding table under `--quantize`: one field holding the table as loaded
/// (`rt::weights::Weight`, quantized to Q8_0 once in `from_weights`), read by the embedding
/// (`Weight::embedding`, which dequantizes only the rows it looks up) and shared by the head:
/// no f32 copy of the table.
#[test]
fn a_quantized_tied_table_is_stored_once_in_blocks() {
    use nnc_compiler::ir::{QuantTarget, Quantization};
    use nnc_compiler::{QuantFormat, QuantizedMode};

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let source = std::fs::read_to_string(root.join("examples/tiny_gpt.nn")).unwrap();
    for format in [
        QuantTarget::Format(QuantFormat::Q4_0),
        QuantTarget::AsStored,
    ] {
        let frontend = FrontendOptions {
            quantize: Some(Quantization {
                format,
                mode: QuantizedMode::Exact,
            }),
            ..FrontendOptions::default()
        };
        let code = nnc_compiler::compile_to_rust(
            &source,
            &frontend,
            OptLevel::default(),
            &CodegenOptions::default(),
        )
        .unwrap();
        assert!(code.contains(": rt::weights::Weight,"), "{format}: {code}");
        assert!(code.contains(".embedding("), "{format}: {code}");
        assert!(!code.contains("into_f32()"), "{format}: {code}");
        if let QuantTarget::Format(_) = format {
            assert!(code.contains(".into_quantized("), "{code}");
            assert!(code.contains("QuantFormat::Q8_0"), "{code}");
        }
    }
}
