//! The `network!` macro reads the same language as `.nn` files, inline or from a file.

nnc::network! {
    /// Doc comments are allowed: the macro drops them like `//` comments.
    block mlp_layer(x, features) {
        return relu(linear(x, features)) as fc
    }

    network inline_mlp(x: f32[batch, 784]) -> (logits: f32[batch, 10]) where batch = 2 {
        h = mlp_layer(x, 256) as layers[0]
        logits = linear(h, 10) as head
    }
}

nnc::network!(file = "examples/resnet18.nn");

#[test]
fn inline_network_is_checked_at_compile_time() {
    assert_eq!(inline_mlp::PARAMETER_COUNT, 784 * 256 + 256 + 256 * 10 + 10);
    assert!(inline_mlp::IR.contains("param \"layers.0.fc.weight\""));
    assert!(inline_mlp::IR.contains("%0: f32[2, 784] = input x"));
}

#[test]
fn file_network_matches_nnc_check() {
    let source = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/resnet18.nn")).unwrap();
    let module = nnc_compiler::compile_to_ir(&source, &Default::default()).unwrap();
    assert_eq!(resnet18::IR, nnc_compiler::ir::print::print_graph(&module.networks[0]));
    assert_eq!(resnet18::PARAMETER_COUNT, 11_689_512);
}
