//! The GGUF reader on any bytes: the header, metadata and tensor table, every tensor's data
//! dequantized to f32, and loading a small network's weights from it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nnc_runtime::weights::gguf::GgufFile;
use nnc_runtime::weights::{Init, WeightSpec, load_gguf};

const SPECS: &[WeightSpec<'static>] = &[WeightSpec {
    name: "fc.weight",
    shape: &[2, 32],
    init: Init::FanIn { fan_in: 32 },
}];

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = GgufFile::parse(data) {
        for tensor in &file.tensors {
            // Cap the work per input, not the reader's checks.
            if tensor.element_count() <= 1 << 20 {
                let _ = file.dequantize(tensor);
            }
        }
    }
    let _ = load_gguf(data, SPECS, "fuzz.gguf");
});
