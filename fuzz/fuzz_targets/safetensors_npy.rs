//! libFuzzer entry of the `safetensors_npy` target; what it checks is `nnc_fuzz::safetensors_npy` (fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nnc_fuzz::safetensors_npy(data));
