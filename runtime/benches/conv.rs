//! NCHW convolution throughput on ResNet-18's layer shapes (and MobileNetV2's stem) at batch 1, at one and two threads,
//! set against the GEMM of the same `m x k x n` with both operands packed beforehand (the speed
//! a convolution would have if its im2col matrix cost nothing).
//!
//! Run with `cargo bench -p nnc-runtime --bench conv`. A summary table comes first (the median
//! of several timed runs per case, in GFLOP/s, each multiply-add counting two), then criterion's
//! own measurements; `cargo bench -p nnc-runtime --bench conv -- summary-only` prints the table
//! alone (no criterion benchmark has that name).

use criterion::{BenchmarkId, Criterion, Throughput};
use nnc_runtime::kernels::activation::Activation;
use nnc_runtime::kernels::conv::{Conv2dOptions, ConvWorkspace, PackedConv2d};
use nnc_runtime::kernels::gemm::{
    GemmOptions, MatrixRef, PackedLhsMatrix, PackedMatrix, Rhs, gemm,
};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// A layer: name, channels in, channels out, input size, kernel, stride, padding.
type Layer = (&'static str, usize, usize, usize, usize, usize, usize);

const LAYERS: [Layer; 8] = [
    ("stem7x7_s2_c3_c64_224", 3, 64, 224, 7, 2, 3),
    // MobileNetV2's stem.
    ("stem3x3_s2_c3_c32_224", 3, 32, 224, 3, 2, 1),
    ("conv3x3_c64_56", 64, 64, 56, 3, 1, 1),
    ("conv3x3_s2_c64_c128_56", 64, 128, 56, 3, 2, 1),
    ("conv1x1_s2_c64_c128_56", 64, 128, 56, 1, 2, 0),
    ("conv3x3_c128_28", 128, 128, 28, 3, 1, 1),
    ("conv3x3_c256_14", 256, 256, 14, 3, 1, 1),
    ("conv3x3_c512_7", 512, 512, 7, 3, 1, 1),
];

fn main() {
    print_summary();
    let mut criterion = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    benchmark_layers(&mut criterion);
    criterion.final_summary();
}

/// One layer's operands and prepared weights.
struct Problem {
    name: &'static str,
    conv: PackedConv2d,
    input_shape: [usize; 4],
    input: Vec<f32>,
    output: Vec<f32>,
    workspace: ConvWorkspace,
    /// The layer as one GEMM: its weight packed as A, its im2col matrix packed as B.
    packed_weight: PackedLhsMatrix,
    packed_columns: PackedMatrix,
    gemm_output: Vec<f32>,
    flops: f64,
}

impl Problem {
    fn new((name, in_channels, out_channels, size, kernel, stride, padding): Layer) -> Self {
        let options = Conv2dOptions {
            stride: [stride, stride],
            padding: [padding, padding],
            ..Conv2dOptions::default()
        };
        let weight_shape = [out_channels, in_channels, kernel, kernel];
        let weight: Vec<f32> = (0..weight_shape.iter().product::<usize>())
            .map(|index| (index % 7) as f32 / 7.0 - 0.5)
            .collect();
        let bias: Vec<f32> = (0..out_channels)
            .map(|index| index as f32 / 100.0)
            .collect();
        let input_shape = [1, in_channels, size, size];
        let input: Vec<f32> = (0..in_channels * size * size)
            .map(|index| (index % 11) as f32 / 11.0 - 0.5)
            .collect();
        let conv = PackedConv2d::new(&weight, weight_shape, Some(&bias), options)
            .unwrap()
            .with_activation(Some(Activation::Relu));
        let output_shape = conv.output_shape(input_shape).unwrap();
        let pixels = output_shape[2] * output_shape[3];
        let depth = in_channels * kernel * kernel;
        let packed_weight = PackedLhsMatrix::from_matrix(
            MatrixRef::row_major(&weight, out_channels, depth).unwrap(),
        );
        // The values of B do not change the GEMM's speed, so any `depth x pixels` matrix does.
        let columns: Vec<f32> = (0..depth * pixels)
            .map(|index| (index % 13) as f32 / 13.0 - 0.5)
            .collect();
        let packed_columns =
            PackedMatrix::from_matrix(MatrixRef::row_major(&columns, depth, pixels).unwrap());
        Self {
            name,
            conv,
            input_shape,
            input,
            output: vec![0.0; output_shape.iter().product()],
            workspace: ConvWorkspace::new(),
            packed_weight,
            packed_columns,
            gemm_output: vec![0.0; out_channels * pixels],
            flops: 2.0 * (out_channels * depth * pixels) as f64,
        }
    }

    fn run_conv(&mut self) {
        self.conv
            .forward(
                &self.input,
                self.input_shape,
                &mut self.output,
                &mut self.workspace,
            )
            .unwrap();
        black_box(&self.output);
    }

    fn run_gemm(&mut self) {
        let pixels = self.packed_columns.cols();
        gemm(
            (&self.packed_weight).into(),
            Rhs::Packed(&self.packed_columns),
            &mut self.gemm_output,
            pixels,
            &GemmOptions::default(),
        )
        .unwrap();
        black_box(&self.gemm_output);
    }
}

/// GFLOP/s of the median of several timed runs (after one warm-up run), by wall clock and by
/// the calling thread's on-CPU time (which other processes on a loaded machine inflate less;
/// meaningful for single-threaded runs only).
fn median_rate(flops: f64, mut run: impl FnMut()) -> (f64, f64) {
    run();
    let mut wall_times = Vec::new();
    let mut cpu_times = Vec::new();
    let started = Instant::now();
    while wall_times.len() < 5
        || (started.elapsed() < Duration::from_millis(700) && wall_times.len() < 101)
    {
        let cpu_before = thread_cpu_seconds();
        let start = Instant::now();
        run();
        wall_times.push(start.elapsed().as_secs_f64());
        if let (Some(before), Some(after)) = (cpu_before, thread_cpu_seconds()) {
            cpu_times.push(after - before);
        }
    }
    let median = |times: &mut Vec<f64>| {
        times.sort_by(f64::total_cmp);
        times
            .get(times.len() / 2)
            .map_or(f64::NAN, |&time| flops / time / 1e9)
    };
    (median(&mut wall_times), median(&mut cpu_times))
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
    println!(
        "load average {load} at start; GFLOP/s, median of runs (wall clock; 'cpu': on-CPU time)"
    );
    println!(
        "{:<24} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>9} {:>9} {:>9}",
        "layer",
        "conv 1T",
        "cpu",
        "gemm 1T",
        "cpu",
        "conv 2T",
        "gemm 2T",
        "c/g 1Tcpu",
        "c/g 2T",
        "conv 2/1T"
    );
    // `NNC_BENCH_LAYERS=conv3x3_c64_56,stem` limits the table to layers whose names contain one
    // of the words (for profiling one layer).
    let wanted = std::env::var("NNC_BENCH_LAYERS").unwrap_or_default();
    let is_wanted =
        |name: &str| wanted.is_empty() || wanted.split(',').any(|word| name.contains(word.trim()));
    for layer in LAYERS.into_iter().filter(|layer| is_wanted(layer.0)) {
        let mut problem = Problem::new(layer);
        let flops = problem.flops;
        nnc_runtime::set_num_threads(1);
        let (conv_1, conv_1_cpu) = median_rate(flops, || problem.run_conv());
        let (gemm_1, gemm_1_cpu) = median_rate(flops, || problem.run_gemm());
        nnc_runtime::set_num_threads(2);
        let (conv_2, _) = median_rate(flops, || problem.run_conv());
        let (gemm_2, _) = median_rate(flops, || problem.run_gemm());
        println!(
            "{:<24} {:>7.1} {:>7.1} {:>7.1} {:>7.1} {:>7.1} {:>7.1} {:>8.0}% {:>8.0}% {:>8.2}x",
            problem.name,
            conv_1,
            conv_1_cpu,
            gemm_1,
            gemm_1_cpu,
            conv_2,
            gemm_2,
            100.0 * conv_1_cpu / gemm_1_cpu,
            100.0 * conv_2 / gemm_2,
            conv_2 / conv_1,
        );
    }
    nnc_runtime::set_num_threads(0);
}

fn benchmark_layers(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("conv");
    for layer in LAYERS {
        let mut problem = Problem::new(layer);
        group.throughput(Throughput::Elements(problem.flops as u64));
        group.bench_function(BenchmarkId::new("nchw", problem.name), |bencher| {
            bencher.iter(|| problem.run_conv())
        });
        group.bench_function(BenchmarkId::new("packed_gemm", problem.name), |bencher| {
            bencher.iter(|| problem.run_gemm())
        });
    }
    group.finish();
}
