//! libFuzzer entry of the `compile` target; what it checks is `nnc_fuzz::compile` (fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nnc_fuzz::compile(data));
