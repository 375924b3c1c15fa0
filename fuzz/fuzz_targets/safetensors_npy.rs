//! Weights and inputs from untrusted files: safetensors bytes loaded against a small network's
//! weight specs, and the same bytes read as f32 and i64 `.npy` arrays, as `nnc run` does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ndarray_npy::ReadNpyExt;
use nnc_runtime::weights::{Init, WeightSpec, load_safetensors};

const SPECS: &[WeightSpec<'static>] = &[
    WeightSpec {
        name: "fc.weight",
        shape: &[2, 3],
        init: Init::FanIn { fan_in: 3 },
    },
    WeightSpec {
        name: "fc.bias",
        shape: &[2],
        init: Init::Zeros,
    },
];

fuzz_target!(|data: &[u8]| {
    let _ = load_safetensors(data, SPECS, "fuzz.safetensors");
    let _ = ndarray::ArrayD::<f32>::read_npy(data);
    let _ = ndarray::ArrayD::<i64>::read_npy(data);
});
