//! Front-end snapshots: the IR of every example, and the rendered diagnostics of every bad input.
//!
//! Adding a case is adding a file: `examples/*.nn` must compile, `tests/diagnostics/*.nn` must
//! fail with located diagnostics. Review snapshot changes with `cargo insta review`.

use std::path::Path;

use nnc_compiler::{FrontendOptions, compile_to_ir, diagnostics, ir};

/// The path of `path` relative to the workspace root, with `/` separators, for stable snapshots.
fn display_path(path: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let relative = path.strip_prefix(root).unwrap_or(path);
    relative
        .components()
        .map(|part| part.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

#[test]
fn examples_compile_to_verified_ir() {
    insta::glob!("../examples", "*.nn", |path| {
        let source = std::fs::read_to_string(path).unwrap();
        let module = match compile_to_ir(&source, &FrontendOptions::default()) {
            Ok(module) => module,
            Err(errors) => panic!(
                "{}",
                diagnostics::render(&errors.0, &display_path(path), &source)
            ),
        };
        for graph in &module.networks {
            if let Err(errors) = ir::verify::verify(graph) {
                panic!("{} does not verify:\n{}", graph.name, errors.join("\n"));
            }
        }
        insta::assert_snapshot!(ir::print::print_module(&module));
    });
}

#[test]
fn bad_inputs_render_located_diagnostics() {
    insta::glob!("diagnostics/*.nn", |path| {
        let source = std::fs::read_to_string(path).unwrap();
        let file_name = display_path(path);
        let errors = match compile_to_ir(&source, &FrontendOptions::default()) {
            Ok(_) => panic!("{file_name} compiled, but it is a bad input"),
            Err(errors) => errors,
        };
        assert!(!errors.0.is_empty());
        let rendered = diagnostics::render(&errors.0, &file_name, &source);
        // Every diagnostic names the file, a line and a column.
        assert_eq!(
            rendered.matches(&format!("┌─ {file_name}:")).count(),
            errors.0.len(),
            "{rendered}"
        );
        insta::assert_snapshot!(rendered);
    });
}

/// The published parameter counts of the architectures the examples reproduce.
#[test]
fn examples_have_the_published_parameter_counts() {
    let expected = [
        ("resnet18.nn", 11_689_512),
        ("mobilenet_v2.nn", 3_504_872),
        ("mlp.nn", 784 * 256 + 256 + 256 * 10 + 10),
        // sentence-transformers/all-MiniLM-L6-v2 (BertModel, pooler included).
        ("bert_encoder.nn", 22_713_216),
        // The same without the pooler, which sentence-transformers does not use.
        ("minilm_embed.nn", 22_713_216 - 384 * 384 - 384),
        // HuggingFaceTB/SmolLM2-135M (tied embeddings).
        ("llama_decoder.nn", 134_515_008),
    ];
    for (file, parameters) in expected {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(file);
        let source = std::fs::read_to_string(&path).unwrap();
        let module = compile_to_ir(&source, &FrontendOptions::default()).unwrap();
        assert_eq!(module.networks[0].parameter_count(), parameters, "{file}");
    }
}

#[test]
fn dimension_overrides_replace_where_clauses() {
    let source =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mlp.nn"))
            .unwrap();
    let options = FrontendOptions {
        dims: vec![("batch".to_string(), 8)],
        ..Default::default()
    };
    let module = compile_to_ir(&source, &options).unwrap();
    let graph = &module.networks[0];
    assert_eq!(graph.ty(graph.inputs[0].value).shape, [8, 784]);
    assert_eq!(graph.ty(graph.outputs[0].value).shape, [8, 10]);
}
