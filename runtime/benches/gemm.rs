//! GEMM throughput: GFLOP/s of square products, set against this machine's single-thread FMA
//! peak, which the benchmark measures itself with a loop of independent AVX2 FMA chains.
//!
//! Run with `cargo bench -p nnc-runtime --bench gemm`. A summary table comes first (best of a
//! few timed runs per case), then criterion's own measurements, whose throughput lines read as
//! GFLOP/s because each product counts `2 n^3` elements.

use criterion::{BenchmarkId, Criterion, Throughput};
use nnc_runtime::kernels::gemm::{GemmOptions, MatrixRef, PackedMatrix, gemm};
use std::hint::black_box;
use std::time::{Duration, Instant};

const SIZES: [usize; 3] = [256, 1024, 2048];

fn main() {
    print_summary();
    let mut criterion = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    benchmark_square_gemm(&mut criterion);
    criterion.final_summary();
}

/// Square operands for one size.
struct SquareProblem {
    size: usize,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    packed_b: PackedMatrix,
}

impl SquareProblem {
    fn new(size: usize) -> Self {
        let a: Vec<f32> = (0..size * size)
            .map(|index| ((index * 7 % 13) as f32 - 6.0) / 13.0)
            .collect();
        let b: Vec<f32> = (0..size * size)
            .map(|index| ((index * 5 % 11) as f32 - 5.0) / 11.0)
            .collect();
        let packed_b = PackedMatrix::from_matrix(MatrixRef::row_major(&b, size, size).unwrap());
        Self {
            size,
            a,
            b,
            c: vec![0.0; size * size],
            packed_b,
        }
    }

    fn flops(&self) -> f64 {
        2.0 * (self.size as f64).powi(3)
    }

    /// One product with B packed during the call (the `matmul` case).
    fn run_unpacked(&mut self) {
        let size = self.size;
        let a = MatrixRef::row_major(&self.a, size, size).unwrap();
        let b = MatrixRef::row_major(&self.b, size, size).unwrap();
        gemm(
            a.into(),
            b.into(),
            &mut self.c,
            size,
            &GemmOptions::default(),
        )
        .unwrap();
        black_box(&self.c);
    }

    /// One product with B packed beforehand (the `linear` case, weights packed at load time).
    fn run_prepacked(&mut self) {
        let size = self.size;
        let a = MatrixRef::row_major(&self.a, size, size).unwrap();
        gemm(
            a.into(),
            (&self.packed_b).into(),
            &mut self.c,
            size,
            &GemmOptions::default(),
        )
        .unwrap();
        black_box(&self.c);
    }
}

/// The best GFLOP/s of several timed runs of `run`, after one warm-up run.
fn best_gflops(flops: f64, mut run: impl FnMut()) -> f64 {
    run();
    let mut best = f64::INFINITY;
    let started = Instant::now();
    let mut runs = 0;
    while runs < 3 || (started.elapsed() < Duration::from_millis(600) && runs < 200) {
        let start = Instant::now();
        run();
        best = best.min(start.elapsed().as_secs_f64());
        runs += 1;
    }
    flops / best / 1e9
}

fn print_summary() {
    let peak = single_thread_fma_peak_gflops();
    match peak {
        Some(peak) => {
            println!("single-thread FMA peak (12 independent AVX2 FMA chains): {peak:.1} GFLOP/s")
        }
        None => println!("single-thread FMA peak: not measured (needs x86-64 with AVX2 + FMA)"),
    }
    let core_count = std::thread::available_parallelism()
        .map(|cores| cores.get())
        .unwrap_or(1);
    println!(
        "{:>6} {:>8} {:>22} {:>22}",
        "size", "threads", "B packed per call", "B packed at load"
    );
    for size in SIZES {
        let mut problem = SquareProblem::new(size);
        let flops = problem.flops();
        let mut thread_counts = vec![1];
        if core_count > 1 {
            thread_counts.push(2);
        }
        for threads in thread_counts {
            nnc_runtime::set_num_threads(threads);
            let unpacked = best_gflops(flops, || problem.run_unpacked());
            let prepacked = best_gflops(flops, || problem.run_prepacked());
            let ratio = |gflops: f64| match peak {
                Some(peak) => format!("{:5.1}% of 1T peak", 100.0 * gflops / peak),
                None => String::new(),
            };
            println!(
                "{size:>6} {threads:>8} {unpacked:>9.1} GFLOP/s {:>17} {prepacked:>9.1} GFLOP/s {:>17}",
                ratio(unpacked),
                ratio(prepacked),
            );
        }
    }
    nnc_runtime::set_num_threads(0);
}

fn benchmark_square_gemm(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("square_gemm");
    for size in SIZES {
        let mut problem = SquareProblem::new(size);
        group.throughput(Throughput::Elements(problem.flops() as u64));
        for threads in [1, 2] {
            nnc_runtime::set_num_threads(threads);
            group.bench_function(BenchmarkId::new(format!("{threads}_threads"), size), |b| {
                b.iter(|| problem.run_prepacked())
            });
        }
    }
    nnc_runtime::set_num_threads(0);
    group.finish();
}

/// Measures the single-thread peak with a loop of 12 independent FMA chains (enough to cover
/// the FMA latency on both FMA pipes of current x86 cores).
fn single_thread_fma_peak_gflops() -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        let iterations = 20_000_000u64;
        let flops = (iterations * 12 * 8 * 2) as f64;
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let start = Instant::now();
            // SAFETY: AVX2 and FMA are available, checked just above.
            black_box(unsafe { fma_chains(black_box(iterations)) });
            best = best.min(start.elapsed().as_secs_f64());
        }
        return Some(flops / best / 1e9);
    }
    None
}

/// # Safety
///
/// The processor must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_chains(iterations: u64) -> f32 {
    use std::arch::x86_64::{
        _mm256_add_ps, _mm256_cvtss_f32, _mm256_fmadd_ps, _mm256_set1_ps, _mm256_setzero_ps,
    };
    let multiplier = _mm256_set1_ps(0.999_999);
    let addend = _mm256_set1_ps(1e-7);
    let mut chains = [_mm256_setzero_ps(); 12];
    for _ in 0..iterations {
        for chain in chains.iter_mut() {
            *chain = _mm256_fmadd_ps(*chain, multiplier, addend);
        }
    }
    let total = chains
        .iter()
        .fold(_mm256_setzero_ps(), |sum, &chain| _mm256_add_ps(sum, chain));
    _mm256_cvtss_f32(total)
}
