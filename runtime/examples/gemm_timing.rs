//! Times one GEMM shape with its fused epilogue and prints the median seconds per call, for
//! `bench/peers/gemm_mlas.py`, which runs it interleaved with ONNX Runtime (MLAS) on the same
//! shapes. B is packed once before timing, as `linear` packs its weight at load time.
//!
//! ```text
//! cargo run --release -p nnc-runtime --example gemm_timing -- \
//!     --m 128 --k 384 --n 1536 --epilogue bias-gelu --threads 1 --calls 200 [--max-isa avx2]
//! ```
//!
//! `--epilogue` is one of `none`, `bias`, `bias-gelu`, `bias-residual`. `--max-isa` (`portable`,
//! `avx2`, `avx512`, or a comma-separated list) caps the micro-kernel as `set_max_isa` does; with
//! a list, the caps take turns call after call in this one process, so their figures share the
//! machine's load. `--weights-left` times the product the way convolution runs it: A (the weight,
//! `m x k`) packed once and B (`k x n`, the im2col matrix) packed during the call. `--copies N`
//! packs N copies of the weight and takes them in turn, so that with enough of them each call
//! streams its weight from memory as a layer of a whole network does (one weight stays in the
//! caches from call to call). The output is one line per cap: `median_seconds=<s> median_cpu_seconds=<s> gflops=<GFLOP/s>
//! cpu_gflops=<GFLOP/s> kernel=<name>`, the CPU time being the calling thread's (the whole call's
//! on one thread).

use nnc_runtime::kernels::activation::Activation;
use nnc_runtime::kernels::gemm::{
    Bias, Epilogue, GemmIsa, GemmOptions, MatrixRef, PackedLhsMatrix, PackedMatrix, gemm,
    selected_isa, set_max_isa,
};
use std::hint::black_box;
use std::time::Instant;

fn main() {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let value_of = |name: &str| {
        arguments
            .iter()
            .position(|argument| argument == name)
            .and_then(|index| arguments.get(index + 1))
            .cloned()
    };
    let number = |name: &str, default: usize| {
        value_of(name).map_or(default, |value| {
            value
                .parse()
                .unwrap_or_else(|_| panic!("{name} wants a number, not {value:?}"))
        })
    };
    let (rows, depth, cols) = (number("--m", 128), number("--k", 384), number("--n", 384));
    let threads = number("--threads", 1);
    let calls = number("--calls", 100).max(1);
    let epilogue_name = value_of("--epilogue").unwrap_or_else(|| "none".to_owned());
    // Each listed cap is timed in turn, call after call, in this one process.
    let isas: Vec<GemmIsa> = value_of("--max-isa")
        .map(|list| {
            list.split(',')
                .map(|isa| match isa {
                    "portable" => GemmIsa::Portable,
                    "avx2" => GemmIsa::Avx2Fma,
                    "avx512" => GemmIsa::Avx512,
                    other => panic!("--max-isa: unknown {other:?} (portable, avx2, avx512)"),
                })
                .collect()
        })
        .unwrap_or_else(|| vec![selected_isa()]);
    let weights_on_the_left = arguments
        .iter()
        .any(|argument| argument == "--weights-left");
    nnc_runtime::set_num_threads(threads);

    let a: Vec<f32> = (0..rows * depth)
        .map(|index| ((index * 7 % 13) as f32 - 6.0) / 13.0)
        .collect();
    let b: Vec<f32> = (0..depth * cols)
        .map(|index| ((index * 5 % 11) as f32 - 5.0) / 11.0)
        .collect();
    let bias: Vec<f32> = (0..cols)
        .map(|index| ((index * 3 % 7) as f32 - 3.0) / 7.0)
        .collect();
    let residual: Vec<f32> = (0..rows * cols)
        .map(|index| ((index * 11 % 17) as f32 - 8.0) / 17.0)
        .collect();
    let mut c = vec![0.0f32; rows * cols];
    // `--copies N` packs N copies of the weight and takes them in turn, call after call: with
    // enough of them they do not fit in the caches, and each call streams its weight from
    // memory, as a layer of a whole network does.
    let copies = number("--copies", 1).max(1);
    // Weights on the right (`linear`): B packed once, A packed per call. On the left (a
    // convolution, `W * im2col(x)`): A packed once, B packed per call by the tasks.
    let packed_bs: Vec<PackedMatrix> = (0..if weights_on_the_left { 1 } else { copies })
        .map(|_| PackedMatrix::from_matrix(MatrixRef::row_major(&b, depth, cols).unwrap()))
        .collect();
    let mut next_copy = 0;
    let packed_as: Vec<PackedLhsMatrix> = (0..if weights_on_the_left { copies } else { 1 })
        .map(|_| PackedLhsMatrix::from_matrix(MatrixRef::row_major(&a, rows, depth).unwrap()))
        .collect();
    let options = match epilogue_name.as_str() {
        "none" => GemmOptions::default(),
        "bias" => GemmOptions {
            epilogue: Epilogue::Bias(Bias::PerColumn(&bias)),
            ..GemmOptions::default()
        },
        "bias-gelu" => GemmOptions {
            epilogue: Epilogue::BiasActivation(Bias::PerColumn(&bias), Activation::Gelu),
            ..GemmOptions::default()
        },
        "bias-residual" => GemmOptions {
            epilogue: Epilogue::Bias(Bias::PerColumn(&bias)),
            residual: Some(&residual),
            ..GemmOptions::default()
        },
        other => panic!("--epilogue: unknown {other:?} (none, bias, bias-gelu, bias-residual)"),
    };
    let a_matrix = MatrixRef::row_major(&a, rows, depth).unwrap();
    let b_matrix = MatrixRef::row_major(&b, depth, cols).unwrap();
    let mut run = || {
        if weights_on_the_left {
            let packed_a = &packed_as[next_copy % packed_as.len()];
            next_copy = (next_copy + 1) % copies;
            gemm(packed_a.into(), b_matrix.into(), &mut c, cols, &options).unwrap();
        } else {
            let packed_b = &packed_bs[next_copy % packed_bs.len()];
            next_copy = (next_copy + 1) % copies;
            gemm(a_matrix.into(), packed_b.into(), &mut c, cols, &options).unwrap();
        }
        black_box(&c);
    };
    // Warm-up: the pool's threads, the packing scratch, the caches.
    for &isa in &isas {
        set_max_isa(isa);
        let warm_up = Instant::now();
        while warm_up.elapsed().as_secs_f64() < 0.05 {
            run();
        }
    }
    let mut seconds = vec![Vec::with_capacity(calls); isas.len()];
    let mut cpu_seconds = vec![Vec::with_capacity(calls); isas.len()];
    for _ in 0..calls {
        for (index, &isa) in isas.iter().enumerate() {
            set_max_isa(isa);
            let cpu_before = thread_cpu_seconds();
            let start = Instant::now();
            run();
            seconds[index].push(start.elapsed().as_secs_f64());
            cpu_seconds[index].push(thread_cpu_seconds() - cpu_before);
        }
    }
    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let flops = 2.0 * rows as f64 * depth as f64 * cols as f64;
    for (index, &isa) in isas.iter().enumerate() {
        set_max_isa(isa);
        let median_seconds = median(&mut seconds[index]);
        let median_cpu_seconds = median(&mut cpu_seconds[index]);
        println!(
            "median_seconds={median_seconds:.9} median_cpu_seconds={median_cpu_seconds:.9} \
             gflops={:.2} cpu_gflops={:.2} kernel={}",
            flops / median_seconds / 1e9,
            flops / median_cpu_seconds / 1e9,
            selected_isa().name()
        );
    }
}

/// The calling thread's time on a CPU so far (`CLOCK_THREAD_CPUTIME_ID`; Linux only, else
/// zero): on a loaded machine, the time a one-thread call really computed.
#[cfg(target_os = "linux")]
fn thread_cpu_seconds() -> f64 {
    #[repr(C)]
    struct Timespec {
        seconds: i64,
        nanoseconds: i64,
    }
    unsafe extern "C" {
        fn clock_gettime(clock: i32, time: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut time = Timespec {
        seconds: 0,
        nanoseconds: 0,
    };
    // SAFETY: `clock_gettime` from the C library the standard library already links writes one
    // `struct timespec` (two 64-bit fields on 64-bit Linux) through the pointer, which points
    // to a live, writable one.
    let status = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut time) };
    if status == 0 {
        time.seconds as f64 + time.nanoseconds as f64 * 1e-9
    } else {
        0.0
    }
}

#[cfg(not(target_os = "linux"))]
fn thread_cpu_seconds() -> f64 {
    0.0
}
