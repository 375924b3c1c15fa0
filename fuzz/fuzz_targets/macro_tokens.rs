//! libFuzzer entry of the `macro_tokens` target; what it checks is `nnc_fuzz::macro_tokens` (fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nnc_fuzz::macro_tokens(data));
