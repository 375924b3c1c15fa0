//! Element-wise activations over a slice, in place: the standalone kernel on the output of
//! MiniLM's FFN (128 x 1536) and the GEMM epilogue's short rows (64 columns at a time), one
//! thread.
//!
//! Run with `cargo bench -p nnc-runtime --bench activation`. Throughput reads as elements per
//! second.

use criterion::{BenchmarkId, Criterion, Throughput};
use nnc_runtime::kernels::activation::{Activation, apply_activation_in_place};
use nnc_runtime::set_num_threads;
use std::hint::black_box;
use std::time::Duration;

/// Elements of the FFN's hidden activation at seq 128.
const LENGTH: usize = 128 * 1536;

/// The width of the pieces of a row the GEMM's epilogue hands to the activation.
const EPILOGUE_ROW: usize = 64;

fn activations(criterion: &mut Criterion) {
    set_num_threads(1);
    let inputs: Vec<f32> = (0..LENGTH)
        .map(|index| ((index * 7919) % 2001) as f32 / 200.0 - 5.0)
        .collect();
    let mut values = inputs.clone();
    let mut group = criterion.benchmark_group("activation");
    group.throughput(Throughput::Elements(LENGTH as u64));
    for activation in Activation::ALL {
        let name = format!("{activation:?}");
        group.bench_function(BenchmarkId::new("slice", &name), |bencher| {
            bencher.iter(|| {
                values.copy_from_slice(&inputs);
                apply_activation_in_place(black_box(&mut values), activation);
            })
        });
        group.bench_function(BenchmarkId::new("rows_of_64", &name), |bencher| {
            bencher.iter(|| {
                values.copy_from_slice(&inputs);
                for row in values.chunks_mut(EPILOGUE_ROW) {
                    apply_activation_in_place(black_box(row), activation);
                }
            })
        });
    }
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20)
        .configure_from_args();
    activations(&mut criterion);
    criterion.final_summary();
}
