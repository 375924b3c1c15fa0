//! libFuzzer entry of the `onnx` target; what it checks is `nnc_fuzz::onnx` (fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nnc_fuzz::onnx(data));
