//! GEMM throughput: GFLOP/s of square products, set against this machine's single-thread FMA
//! peak, which the benchmark measures itself with a loop of independent AVX2 FMA chains.
//!
//! Run with `cargo bench -p nnc-runtime --bench gemm`. A summary table comes first (best of a
//! few timed runs per case): the square products, then the shapes of real models on one thread
//! (the MiniLM encoder's projections and MobileNetV2's early 1x1 convolutions, each with the
//! epilogue the compiler fuses into it). Criterion's own measurements follow, whose throughput
//! lines read as GFLOP/s because each product counts `2 m k n` elements. `-- --summary-only`
//! stops after the table.

use criterion::{BenchmarkId, Criterion, Throughput};
use nnc_runtime::kernels::activation::Activation;
use nnc_runtime::kernels::gemm::{Bias, Epilogue, GemmOptions, MatrixRef, PackedMatrix, gemm};
use std::hint::black_box;
use std::time::{Duration, Instant};

const SIZES: [usize; 3] = [256, 1024, 2048];

fn main() {
    print_summary();
    if std::env::args().any(|argument| argument == "--summary-only") {
        return;
    }
    let mut criterion = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    benchmark_square_gemm(&mut criterion);
    benchmark_model_shapes(&mut criterion);
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

/// GFLOP/s of the best of several timed runs, by wall clock and, where Linux reports it, by
/// the calling thread's on-CPU time (which other processes on a shared machine do not inflate;
/// meaningful for single-threaded runs only).
#[derive(Clone, Copy)]
struct Rate {
    wall: f64,
    on_cpu: Option<f64>,
}

fn best_rate(flops: f64, mut run: impl FnMut()) -> Rate {
    run();
    let mut best_wall = f64::INFINITY;
    let mut best_on_cpu = f64::INFINITY;
    let started = Instant::now();
    let mut runs = 0;
    while runs < 3 || (started.elapsed() < Duration::from_millis(800) && runs < 200) {
        let cpu_before = thread_cpu_seconds();
        let start = Instant::now();
        run();
        best_wall = best_wall.min(start.elapsed().as_secs_f64());
        if let (Some(before), Some(after)) = (cpu_before, thread_cpu_seconds()) {
            best_on_cpu = best_on_cpu.min(after - before);
        }
        runs += 1;
    }
    Rate {
        wall: flops / best_wall / 1e9,
        on_cpu: best_on_cpu.is_finite().then(|| flops / best_on_cpu / 1e9),
    }
}

/// The calling thread's time on a CPU so far (`CLOCK_THREAD_CPUTIME_ID`, Linux only).
#[cfg(target_os = "linux")]
fn thread_cpu_seconds() -> Option<f64> {
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
    (status == 0).then_some(time.seconds as f64 + time.nanoseconds as f64 * 1e-9)
}

#[cfg(not(target_os = "linux"))]
fn thread_cpu_seconds() -> Option<f64> {
    None
}

fn print_summary() {
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned());
    let core_count = std::thread::available_parallelism()
        .map(|cores| cores.get())
        .unwrap_or(1);
    println!("{core_count} cores, load average {load} at start");
    let peak = single_thread_fma_peak();
    match peak {
        Some(peak) => println!(
            "single-thread FMA peak (12 independent AVX2 FMA chains): {:.1} GFLOP/s wall{}",
            peak.wall,
            peak.on_cpu.map_or(String::new(), |on_cpu| format!(
                ", {on_cpu:.1} GFLOP/s on-CPU"
            )),
        ),
        None => println!("single-thread FMA peak: not measured (needs x86-64 with AVX2 + FMA)"),
    }
    let ratio = |gflops: f64, peak: Option<f64>| match peak {
        Some(peak) => format!("({:4.1}% of 1T peak)", 100.0 * gflops / peak),
        None => String::new(),
    };
    let describe = |rate: Rate, threads: usize| {
        let mut text = format!(
            "{:6.1} GFLOP/s {}",
            rate.wall,
            ratio(rate.wall, peak.map(|peak| peak.wall))
        );
        if threads == 1
            && let Some(on_cpu) = rate.on_cpu
        {
            text += &format!(
                "; on-CPU {on_cpu:6.1} GFLOP/s {}",
                ratio(on_cpu, peak.and_then(|peak| peak.on_cpu))
            );
        }
        text
    };
    nnc_runtime::set_num_threads(1);
    for shape in SHAPES {
        let mut problem = ShapeProblem::new(shape);
        let rate = best_rate(problem.flops(), || problem.run());
        println!(
            "{:<20} {:>5}x{:>4}x{:>4}, 1 thread, {:<16} {}",
            problem.name,
            problem.rows,
            problem.depth,
            problem.cols,
            format!("{}:", problem.describe_epilogue()),
            describe(rate, 1)
        );
    }
    for size in SIZES {
        let mut problem = SquareProblem::new(size);
        let flops = problem.flops();
        let mut thread_counts = vec![1];
        if core_count > 1 {
            thread_counts.push(2);
        }
        for threads in thread_counts {
            nnc_runtime::set_num_threads(threads);
            let prepacked = best_rate(flops, || problem.run_prepacked());
            let unpacked = best_rate(flops, || problem.run_unpacked());
            println!(
                "gemm {size:>4}^3, {threads} thread(s), B packed at load:  {}",
                describe(prepacked, threads)
            );
            println!(
                "gemm {size:>4}^3, {threads} thread(s), B packed per call: {}",
                describe(unpacked, threads)
            );
        }
    }
    nnc_runtime::set_num_threads(0);
}

/// The epilogue of one model-shaped case.
#[derive(Clone, Copy)]
enum ShapeEpilogue {
    None,
    BiasActivation(Activation),
    BiasResidual,
}

/// One product of a real model: `[m, k] x [k, n]`, A row-major (the activations), B packed at
/// load (the weights), with the epilogue the compiler fuses into it.
struct ShapeProblem {
    name: &'static str,
    rows: usize,
    depth: usize,
    cols: usize,
    epilogue: ShapeEpilogue,
    a: Vec<f32>,
    bias: Vec<f32>,
    residual: Vec<f32>,
    c: Vec<f32>,
    packed_b: PackedMatrix,
}

/// The shapes: the MiniLM encoder (sequence 128, hidden 384, feed-forward 1536) and
/// MobileNetV2's early pointwise expansions (channels-last, `[h * w, in] x [in, out]`).
const SHAPES: [(&str, usize, usize, usize, ShapeEpilogue); 6] = [
    ("encoder qkv/out", 128, 384, 384, ShapeEpilogue::None),
    (
        "encoder ffn up",
        128,
        384,
        1536,
        ShapeEpilogue::BiasActivation(Activation::Gelu),
    ),
    (
        "encoder ffn down",
        128,
        1536,
        384,
        ShapeEpilogue::BiasResidual,
    ),
    (
        "mobilenet 112^2 1x1",
        12544,
        16,
        96,
        ShapeEpilogue::BiasActivation(Activation::Relu6),
    ),
    (
        "mobilenet 56^2 1x1",
        3136,
        24,
        144,
        ShapeEpilogue::BiasActivation(Activation::Relu6),
    ),
    (
        "mobilenet 28^2 1x1",
        784,
        32,
        192,
        ShapeEpilogue::BiasActivation(Activation::Relu6),
    ),
];

impl ShapeProblem {
    fn new(
        (name, rows, depth, cols, epilogue): (&'static str, usize, usize, usize, ShapeEpilogue),
    ) -> Self {
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
        let packed_b = PackedMatrix::from_matrix(MatrixRef::row_major(&b, depth, cols).unwrap());
        Self {
            name,
            rows,
            depth,
            cols,
            epilogue,
            a,
            bias,
            residual,
            c: vec![0.0; rows * cols],
            packed_b,
        }
    }

    fn flops(&self) -> f64 {
        2.0 * self.rows as f64 * self.depth as f64 * self.cols as f64
    }

    fn describe_epilogue(&self) -> String {
        match self.epilogue {
            ShapeEpilogue::None => "none".to_owned(),
            ShapeEpilogue::BiasActivation(activation) => format!("bias + {}", activation.name()),
            ShapeEpilogue::BiasResidual => "bias + residual".to_owned(),
        }
    }

    fn run(&mut self) {
        let a = MatrixRef::row_major(&self.a, self.rows, self.depth).unwrap();
        let options = match self.epilogue {
            ShapeEpilogue::None => GemmOptions::default(),
            ShapeEpilogue::BiasActivation(activation) => GemmOptions {
                epilogue: Epilogue::BiasActivation(Bias::PerColumn(&self.bias), activation),
                ..GemmOptions::default()
            },
            ShapeEpilogue::BiasResidual => GemmOptions {
                epilogue: Epilogue::Bias(Bias::PerColumn(&self.bias)),
                residual: Some(&self.residual),
                ..GemmOptions::default()
            },
        };
        gemm(
            a.into(),
            (&self.packed_b).into(),
            &mut self.c,
            self.cols,
            &options,
        )
        .unwrap();
        black_box(&self.c);
    }
}

fn benchmark_model_shapes(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("model_shapes_1_thread");
    nnc_runtime::set_num_threads(1);
    for shape in SHAPES {
        let mut problem = ShapeProblem::new(shape);
        group.throughput(Throughput::Elements(problem.flops() as u64));
        let id = format!("{}x{}x{}", problem.rows, problem.depth, problem.cols);
        group.bench_function(BenchmarkId::new(problem.name, id), |b| {
            b.iter(|| problem.run())
        });
    }
    nnc_runtime::set_num_threads(0);
    group.finish();
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
fn single_thread_fma_peak() -> Option<Rate> {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        let iterations = 20_000_000u64;
        let flops = (iterations * 12 * 8 * 2) as f64;
        return Some(best_rate(flops, || {
            // SAFETY: AVX2 and FMA are available, checked just above.
            black_box(unsafe { fma_chains(black_box(iterations)) });
        }));
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
