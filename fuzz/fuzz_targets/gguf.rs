//! libFuzzer entry of the `gguf` target; what it checks is `nnc_fuzz::gguf` (fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nnc_fuzz::gguf(data));
