//! Measures what bounds the benchmarks on this machine at this moment, so that a peer run's
//! ratios can be read against it: the GEMM's rate on a product that stays in cache (bound by the
//! core's multiply-adds, so it follows the clock, which on a shared virtual machine moves by a
//! quarter from minute to minute) and the rate at which one and two threads read a buffer far
//! larger than the caches (what a decoding step, which streams every weight once, runs into).
//! The read is a plain loop, and a lower bound of the bandwidth: nnc's decoding step at two
//! threads streamed 32.5 GB/s in a peer run whose probes read 28.7 and 28.8. Prints one line of
//! JSON:
//!
//! ```text
//! cargo run --release -p nnc-runtime --example machine_probe -- [read MiB]
//! {"gemm_gflops": 93.5, "gemm_shape": [128, 384, 384], "gemm_kernel": "Avx2Fma",
//!  "read_gb_per_s": {"1": 16.8, "2": 28.7}, "read_mib": 512}
//! ```
//!
//! Each figure is the best of several short runs: the machine's rate when nothing else holds it.

use nnc_runtime::kernels::gemm::{GemmOptions, MatrixRef, PackedMatrix, gemm, selected_isa};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// The product timed: the encoder's attention projections, A read in place and B packed, which
/// run at the kernel's highest rate (`gemm_timing`).
const SHAPE: [usize; 3] = [128, 384, 384];

fn main() {
    let read_mib: usize = std::env::args()
        .nth(1)
        .map_or(512, |argument| argument.parse().expect("[read MiB]"));
    let gemm_gflops = gemm_rate();
    let buffer = vec![1.0f32; read_mib * (1 << 20) / 4];
    let threads = std::thread::available_parallelism().map_or(1, |count| count.get());
    let reads: Vec<String> = [1, 2]
        .into_iter()
        .filter(|&count| count <= threads)
        .map(|count| format!("\"{count}\": {:.1}", read_rate(&buffer, count)))
        .collect();
    let kernel = selected_isa();
    println!(
        "{{\"gemm_gflops\": {gemm_gflops:.1}, \"gemm_shape\": {SHAPE:?}, \
         \"gemm_kernel\": \"{kernel:?}\", \"read_gb_per_s\": {{{}}}, \"read_mib\": {read_mib}}}",
        reads.join(", ")
    );
}

/// GFLOP/s of the best of 40 runs of 20 products of `SHAPE` at one thread.
fn gemm_rate() -> f64 {
    nnc_runtime::set_num_threads(1);
    let [rows, depth, cols] = SHAPE;
    let a: Vec<f32> = (0..rows * depth)
        .map(|index| ((index * 7 % 13) as f32 - 6.0) / 13.0)
        .collect();
    let b: Vec<f32> = (0..depth * cols)
        .map(|index| ((index * 5 % 11) as f32 - 5.0) / 11.0)
        .collect();
    let packed = PackedMatrix::from_matrix(MatrixRef::row_major(&b, depth, cols).unwrap());
    let a = MatrixRef::row_major(&a, rows, depth).unwrap();
    let mut c = vec![0.0f32; rows * cols];
    let options = GemmOptions::default();
    let mut run = || {
        gemm(a.into(), (&packed).into(), &mut c, cols, &options).unwrap();
        black_box(&c);
    };
    let warm_up = Instant::now();
    while warm_up.elapsed() < Duration::from_millis(100) {
        run();
    }
    let calls = 20;
    let best = (0..40)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..calls {
                run();
            }
            start.elapsed().as_secs_f64() / calls as f64
        })
        .fold(f64::INFINITY, f64::min);
    2.0 * (rows * depth * cols) as f64 / best / 1e9
}

/// GB/s of the best of 5 passes of `threads` threads, each summing its share of `buffer`.
fn read_rate(buffer: &[f32], threads: usize) -> f64 {
    let share = buffer.len().div_ceil(threads);
    let best = (0..5)
        .map(|_| {
            let start = Instant::now();
            std::thread::scope(|scope| {
                for part in buffer.chunks(share) {
                    scope.spawn(move || black_box(sum(part)));
                }
            });
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    std::mem::size_of_val(buffer) as f64 / best / 1e9
}

/// The sum of `values` in 32 independent lanes, which the compiler keeps in vector registers:
/// the loop is bound by the loads, not by the additions' latency.
fn sum(values: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 32];
    let mut chunks = values.chunks_exact(32);
    for chunk in &mut chunks {
        for (lane, &value) in lanes.iter_mut().zip(chunk) {
            *lane += value;
        }
    }
    lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}
