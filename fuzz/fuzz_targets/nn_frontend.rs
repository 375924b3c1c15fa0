//! libFuzzer entry of the `nn_frontend` target; what it checks is `nnc_fuzz::nn_frontend` (fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nnc_fuzz::nn_frontend(data));
