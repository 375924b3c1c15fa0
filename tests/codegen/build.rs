//! Compiles every example and every ONNX Runtime fixture with `nnc_compiler::Builder`, and writes
//! `models.rs`: a module per model that includes its generated code, plus a `run` adapter that
//! the tests call with dynamic inputs.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use nnc_compiler::calibration::Calibration;
use nnc_compiler::{FrontendOptions, QuantFormat, QuantizedMode, compile_to_ir, ir};

fn main() {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    // The models are generated at their declared sizes, not at their headers' test dimensions:
    // the decoder and allocation tests drive the generated examples at those sizes.
    let mut models = Vec::new();
    for model in nnc_test_support::examples() {
        models.push((format!("example_{}", model.name), model.path));
    }
    for model in nnc_test_support::codegen_models() {
        models.push((format!("model_{}", model.name), model.path));
    }
    for model in nnc_test_support::fixtures() {
        models.push((format!("fixture_{}", model.name), model.path));
    }

    let mut modules = String::new();
    let mut table = String::from(
        "/// Every model: its name, source file and adapter.\npub const MODELS: &[(&str, &str, Runner)] = &[\n",
    );
    for (module, path) in &models {
        let dir = out_dir.join(module);
        std::fs::create_dir_all(&dir).unwrap();
        nnc_compiler::Builder::new()
            .out_dir(&dir)
            .compile(&[path])
            .unwrap_or_else(|error| panic!("{error}"));
        let source = std::fs::read_to_string(path).unwrap();
        let graph = compile_to_ir(&source, &FrontendOptions::default())
            .unwrap()
            .networks
            .remove(0);
        let generated = dir.join(path.file_stem().unwrap()).with_extension("rs");
        write_module(&mut modules, module, &generated, &graph);
        writeln!(
            table,
            "    (\"{module}\", {:?}, {module}::run),",
            path.canonicalize().unwrap().display().to_string()
        )
        .unwrap();
    }
    table.push_str("];\n");

    // Unoptimized builds of the CNN examples, for the -O0 vs -O2 benchmark.
    for name in ["resnet18", "mobilenet_v2"] {
        let module = format!("o0_{name}");
        let dir = out_dir.join(&module);
        std::fs::create_dir_all(&dir).unwrap();
        let path = nnc_test_support::example(name).path;
        nnc_compiler::Builder::new()
            .out_dir(&dir)
            .opt_level(nnc_compiler::passes::OptLevel::O0)
            .compile(&[&path])
            .unwrap_or_else(|error| panic!("{error}"));
        writeln!(
            modules,
            "/// `{name}` compiled at -O0.\npub mod {module} {{\n    include!({:?});\n}}",
            dir.join(format!("{name}.rs")).display().to_string()
        )
        .unwrap();
    }
    // The small Llama with quantized linear layers, in each format and mode that
    // `tests/quantized.rs` checks: `quantized_<format>_<mode>`.
    let llama = nnc_test_support::codegen_models()
        .into_iter()
        .find(|model| model.name == "small_llama")
        .expect("tests/codegen/models/small_llama.nn");
    let source = std::fs::read_to_string(&llama.path).unwrap();
    for (format, mode) in [
        (QuantFormat::Q8_0, QuantizedMode::Exact),
        (QuantFormat::Q4_0, QuantizedMode::Fast),
        (QuantFormat::Q4_1, QuantizedMode::Exact),
        (QuantFormat::Q4_1, QuantizedMode::Fast),
        (QuantFormat::F16, QuantizedMode::Exact),
    ] {
        let module = format!("quantized_{}_{}", format.name(), mode.name());
        let dir = out_dir.join(&module);
        std::fs::create_dir_all(&dir).unwrap();
        nnc_compiler::Builder::new()
            .out_dir(&dir)
            .quantize(format, mode)
            .compile(&[&llama.path])
            .unwrap_or_else(|error| panic!("{error}"));
        let options = FrontendOptions {
            quantize: Some(ir::Quantization {
                format: format.into(),
                mode,
            }),
            ..Default::default()
        };
        let graph = compile_to_ir(&source, &options).unwrap().networks.remove(0);
        write_module(&mut modules, &module, &dir.join("small_llama.rs"), &graph);
    }
    // The small CNN with its 2-D convolutions in int8, calibrated by the checked-in
    // `small_cnn.calibration.json` (which `tests/int8.rs` checks is current): `int8_small_cnn`.
    let cnn = nnc_test_support::codegen_models()
        .into_iter()
        .find(|model| model.name == "small_cnn")
        .expect("tests/codegen/models/small_cnn.nn");
    let calibration_path = cnn.path.with_extension("calibration.json");
    println!("cargo:rerun-if-changed={}", calibration_path.display());
    let calibration = Calibration::from_json(&std::fs::read_to_string(&calibration_path).unwrap())
        .unwrap_or_else(|error| panic!("{}: {error}", calibration_path.display()));
    let module = "int8_small_cnn";
    let dir = out_dir.join(module);
    std::fs::create_dir_all(&dir).unwrap();
    nnc_compiler::Builder::new()
        .out_dir(&dir)
        .quantize_int8(calibration.clone(), QuantizedMode::Exact)
        .compile(&[&cnn.path])
        .unwrap_or_else(|error| panic!("{error}"));
    let options = FrontendOptions {
        int8_convs: Some(calibration),
        ..Default::default()
    };
    let source = std::fs::read_to_string(&cnn.path).unwrap();
    let graph = compile_to_ir(&source, &options).unwrap().networks.remove(0);
    write_module(&mut modules, module, &dir.join("small_cnn.rs"), &graph);
    // The tiny Llama of the GGUF fixtures (each tensor in another type), with its linear layers
    // quantized to Q4_1 and kept as stored, for `from_gguf` in `tests/quantized.rs`.
    let tiny_llama = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/gguf/tiny_llama.nn")
        .canonicalize()
        .unwrap();
    println!("cargo:rerun-if-changed={}", tiny_llama.display());
    let source = std::fs::read_to_string(&tiny_llama).unwrap();
    for (module, format) in [
        (
            "gguf_tiny_llama_q4_1",
            ir::QuantTarget::Format(QuantFormat::Q4_1),
        ),
        ("gguf_tiny_llama_as_stored", ir::QuantTarget::AsStored),
    ] {
        let dir = out_dir.join(module);
        std::fs::create_dir_all(&dir).unwrap();
        let mut builder = nnc_compiler::Builder::new();
        match format {
            ir::QuantTarget::Format(format) => builder.quantize(format, QuantizedMode::Exact),
            ir::QuantTarget::AsStored => builder.quantize_as_stored(QuantizedMode::Exact),
        };
        builder
            .out_dir(&dir)
            .compile(&[&tiny_llama])
            .unwrap_or_else(|error| panic!("{error}"));
        let options = FrontendOptions {
            quantize: Some(ir::Quantization {
                format,
                mode: QuantizedMode::Exact,
            }),
            ..Default::default()
        };
        let graph = compile_to_ir(&source, &options).unwrap().networks.remove(0);
        write_module(&mut modules, module, &dir.join("tiny_llama.rs"), &graph);
    }
    std::fs::write(out_dir.join("models.rs"), modules + &table).unwrap();
}

/// A module including the generated code of `graph`, with an adapter from dynamic inputs.
fn write_module(out: &mut String, module: &str, generated: &Path, graph: &ir::Graph) {
    let struct_name = nnc_compiler::codegen::struct_name(&graph.name);
    writeln!(out, "pub mod {module} {{").unwrap();
    writeln!(out, "    include!({:?});", generated.display().to_string()).unwrap();
    let outputs = "Result<Vec<::ndarray::ArrayD<f32>>, ::nnc::runtime::ModelError>";
    writeln!(
        out,
        "    /// Builds the model from `weights` and runs it on `inputs`, in declaration order.
    pub fn run(weights: Vec<Vec<f32>>, inputs: &[crate::Input<'_>]) -> {outputs} {{
        run_model({struct_name}::from_weights(weights)?, inputs)
    }}
    /// As `run`, with weights as loaded (blocks or f32).
    pub fn run_stored(weights: Vec<::nnc::runtime::weights::Weight>, inputs: &[crate::Input<'_>]) -> {outputs} {{
        run_model({struct_name}::from_weights(weights)?, inputs)
    }}
    /// As `run`, with the weights of the GGUF file at `path` (`from_gguf`).
    pub fn run_gguf(path: &::std::path::Path, inputs: &[crate::Input<'_>]) -> {outputs} {{
        run_model({struct_name}::from_gguf(path)?, inputs)
    }}
    fn run_model(mut model: {struct_name}, inputs: &[crate::Input<'_>]) -> {outputs} {{"
    )
    .unwrap();
    let mut arguments = Vec::new();
    for (index, input) in graph.inputs.iter().enumerate() {
        let ty = graph.ty(input.value);
        let accessor = match ty.dtype {
            ir::DType::F32 => "f32",
            ir::DType::I64 => "i64",
        };
        writeln!(
            out,
            "        let {} = inputs[{index}].{accessor}().into_dimensionality::<::ndarray::Ix{}>().expect(\"input rank\");",
            input.name,
            ty.rank()
        )
        .unwrap();
        arguments.push(input.name.clone());
    }
    let call = if arguments.len() == 1 {
        format!("model.forward({})?", arguments[0])
    } else {
        format!(
            "model.forward({struct_name}Inputs {{ {} }})?",
            arguments.join(", ")
        )
    };
    writeln!(out, "        let outputs = {call};").unwrap();
    if graph.outputs.len() == 1 {
        writeln!(out, "        Ok(vec![outputs.to_owned().into_dyn()])").unwrap();
    } else {
        let fields: Vec<String> = graph
            .outputs
            .iter()
            .map(|output| format!("outputs.{}.to_owned().into_dyn()", output.name))
            .collect();
        writeln!(out, "        Ok(vec![{}])", fields.join(", ")).unwrap();
    }
    writeln!(out, "    }}\n}}").unwrap();
}
