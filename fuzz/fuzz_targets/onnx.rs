//! The ONNX protobuf decoder on any bytes: an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = nnc_compiler::onnx::decode_model(data, std::path::Path::new("fuzz.onnx"));
});
