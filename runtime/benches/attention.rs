//! Attention at growing sequence lengths: the plain kernel (`scaled_dot_product_attention`,
//! which scores each block of 64 queries against every key), the tiled kernel
//! (`flash_attention`, blocks of `DEFAULT_BLOCK_SIZE`) on the same dense problem, and the tiled
//! kernel on a block-sparse sliding-window causal layout (window 256, blocks of 64). Also the plain kernel on the sliding-window
//! problem, given as a mask function, which is what the sparse layout replaces.
//!
//! Run with `cargo bench -p nnc-runtime --bench attention`. Each case prints the best of a few
//! timed calls and the peak of the bytes live during one call that also builds its workspace
//! (counted by a global allocator), then the ratios. Shapes: batch 1, 8 heads, head_dim 64.
//! `NNC_BENCH_LENGTHS=512,1024` picks the lengths; the plain kernel is skipped where one call
//! would take longer than `DENSE_TIME_BUDGET`, estimated from the previous length.

#[path = "../tests/counting_allocator/mod.rs"]
mod counting_allocator;

use counting_allocator::{CountingAllocator, measure, measure_peak};
use nnc_runtime::kernels::attention::{
    AttentionMask, AttentionOptions, AttentionShape, scaled_dot_product_attention,
};
use nnc_runtime::kernels::flash_attention::{
    BlockSparseLayout, DEFAULT_BLOCK_SIZE, FlashAttentionWorkspace, flash_attention,
};
use std::hint::black_box;
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const LENGTHS: [usize; 5] = [512, 1024, 2048, 4096, 8192];
const HEADS: usize = 8;
const HEAD_DIM: usize = 64;
const WINDOW: usize = 256;
/// The block size of the sparse layout.
const BLOCK_SIZE: usize = 64;
/// Timed calls stop after this much time (but run at least `MIN_RUNS`).
const TIME_PER_CASE: Duration = Duration::from_secs(2);
const MIN_RUNS: usize = 2;
const MAX_RUNS: usize = 10;
/// The plain kernel is skipped when one call is expected to take longer than this.
const DENSE_TIME_BUDGET: Duration = Duration::from_secs(20);

fn main() {
    let lengths: Vec<usize> = std::env::var("NNC_BENCH_LENGTHS")
        .ok()
        .map(|lengths| {
            lengths
                .split(',')
                .filter_map(|length| length.trim().parse().ok())
                .collect()
        })
        .unwrap_or_else(|| LENGTHS.to_vec());
    println!(
        "attention: batch 1, {HEADS} heads, head_dim {HEAD_DIM}, {} threads; sparse = sliding \
         window {WINDOW} + causal, blocks of {BLOCK_SIZE}",
        nnc_runtime::num_threads()
    );
    println!(
        "{:>6} | {:>26} | {:>26} | {:>26} | {:>26}",
        "N", "plain (dense)", "tiled (dense)", "plain (window mask)", "tiled sparse (window)"
    );
    let mut rows = Vec::new();
    let mut previous_dense: Option<(usize, Duration)> = None;
    for &length in &lengths {
        let problem = Problem::new(length);
        // The plain kernel's time grows with N^2: skip it when the estimate is over budget.
        let estimate = previous_dense.map(|(previous_length, time)| {
            time.mul_f64((length as f64 / previous_length as f64).powi(2))
        });
        let run_dense = estimate.is_none_or(|estimate| estimate <= DENSE_TIME_BUDGET);
        let dense = run_dense.then(|| problem.plain(false));
        let dense_window = run_dense.then(|| problem.plain(true));
        if let Some(dense) = &dense {
            previous_dense = Some((length, dense.time));
        }
        let tiled = problem.tiled();
        let sparse = problem.sparse();
        let show = |measurement: &Option<Measurement>| match measurement {
            Some(measurement) => measurement.to_string(),
            None => format!(
                "skipped (~{:.0} s/call)",
                estimate.unwrap_or_default().as_secs_f64()
            ),
        };
        println!(
            "{length:>6} | {:>26} | {:>26} | {:>26} | {:>26}",
            show(&dense),
            tiled.to_string(),
            show(&dense_window),
            sparse.to_string()
        );
        rows.push((
            length,
            dense,
            dense_window,
            tiled,
            sparse,
            problem.layout_info,
        ));
    }
    println!();
    println!(
        "{:>6} | {:>13} | {:>14} | {:>20} | {:>13} | {:>12} | {:>14}",
        "N",
        "plain/tiled",
        "plain/sparse",
        "plain(window)/sparse",
        "memory p/t",
        "kept blocks",
        "layout build"
    );
    for (length, dense, dense_window, tiled, sparse, layout_info) in rows {
        let ratio = |numerator: &Option<Measurement>, denominator: &Measurement| {
            numerator.as_ref().map_or("-".to_string(), |numerator| {
                format!(
                    "{:.2}x",
                    numerator.time.as_secs_f64() / denominator.time.as_secs_f64()
                )
            })
        };
        let memory = dense.as_ref().map_or("-".to_string(), |dense| {
            format!("{:.1}x", dense.peak_bytes as f64 / tiled.peak_bytes as f64)
        });
        println!(
            "{length:>6} | {:>13} | {:>14} | {:>20} | {:>13} | {:>12} | {:>11.1} ms",
            ratio(&dense, &tiled),
            ratio(&dense, &sparse),
            ratio(&dense_window, &sparse),
            memory,
            format!("{}/{}", layout_info.0, layout_info.1),
            layout_info.2.as_secs_f64() * 1e3,
        );
    }
}

/// The time and memory of one kernel on one problem.
struct Measurement {
    /// The best of the timed calls.
    time: Duration,
    /// The most bytes live at once during a call that also builds its workspace.
    peak_bytes: usize,
    /// Allocations during a call with a warm workspace.
    warm_allocations: usize,
}

impl std::fmt::Display for Measurement {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = format!(
            "{:.1} ms, {} ({} al.)",
            self.time.as_secs_f64() * 1e3,
            format_bytes(self.peak_bytes),
            self.warm_allocations
        );
        formatter.pad(&text)
    }
}

fn format_bytes(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
    } else {
        format!("{:.0} KiB", bytes as f64 / 1024.0)
    }
}

/// One sequence length: the data, the sliding-window mask and its layout.
struct Problem {
    shape: AttentionShape,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    output: Vec<f32>,
    layout: BlockSparseLayout,
    /// Kept blocks, all blocks, and the time to build the layout.
    layout_info: (usize, usize, Duration),
}

/// Whether query `i` may see key `j` in the sparse problem: causal, and less than `WINDOW` back.
fn in_window(i: usize, j: usize) -> bool {
    j <= i && i - j < WINDOW
}

impl Problem {
    fn new(length: usize) -> Self {
        let shape = AttentionShape {
            batch: 1,
            query_len: length,
            key_len: length,
            n_heads: HEADS,
            n_kv_heads: HEADS,
            head_dim: HEAD_DIM,
        };
        let size = length * HEADS * HEAD_DIM;
        let ramp = |seed: usize| -> Vec<f32> {
            (0..size)
                .map(|index| ((index * 7 + seed * 13) % 23) as f32 / 11.0 - 1.0)
                .collect()
        };
        let start = Instant::now();
        let layout = BlockSparseLayout::from_predicate(BLOCK_SIZE, length, length, in_window)
            .expect("a valid layout");
        let build_time = start.elapsed();
        let blocks = length.div_ceil(BLOCK_SIZE).pow(2);
        Self {
            shape,
            q: ramp(1),
            k: ramp(2),
            v: ramp(3),
            output: vec![0.0; size],
            layout_info: (layout.kept_block_count(), blocks, build_time),
            layout,
        }
    }

    /// The plain kernel, which builds its workspace on every call.
    fn plain(&self, window: bool) -> Measurement {
        let mut output = self.output.clone();
        let options = if window {
            AttentionOptions {
                causal: true,
                mask: AttentionMask::Function(&in_window),
                ..AttentionOptions::default()
            }
        } else {
            AttentionOptions::default()
        };
        let mut call = || {
            scaled_dot_product_attention(
                &self.q,
                &self.k,
                &self.v,
                &self.shape,
                &options,
                &mut output,
            )
            .expect("valid shapes");
            black_box(&output);
        };
        // The first call grows the GEMM's per-thread packing buffers; the peak is of a later
        // one, which still builds its own workspace.
        call();
        let ((), peak_bytes) = measure_peak(&mut call);
        let ((), warm) = measure(&mut call);
        Measurement {
            time: best_time(&mut call),
            peak_bytes,
            warm_allocations: warm.count,
        }
    }

    /// The tiled kernel on the dense problem.
    fn tiled(&self) -> Measurement {
        self.flash(&AttentionOptions::default(), None, DEFAULT_BLOCK_SIZE)
    }

    /// The tiled kernel on the sliding-window layout.
    fn sparse(&self) -> Measurement {
        let options = AttentionOptions {
            causal: true,
            mask: AttentionMask::Function(&in_window),
            ..AttentionOptions::default()
        };
        self.flash(&options, Some(&self.layout), BLOCK_SIZE)
    }

    fn flash(
        &self,
        options: &AttentionOptions<'_>,
        layout: Option<&BlockSparseLayout>,
        block_size: usize,
    ) -> Measurement {
        let mut output = self.output.clone();
        let (mut workspace, peak_bytes) = measure_peak(|| {
            let mut workspace = FlashAttentionWorkspace::with_block_size(&self.shape, block_size);
            self.run_flash(options, layout, &mut output, &mut workspace);
            workspace
        });
        let ((), warm) = measure(|| self.run_flash(options, layout, &mut output, &mut workspace));
        Measurement {
            time: best_time(&mut || self.run_flash(options, layout, &mut output, &mut workspace)),
            peak_bytes,
            warm_allocations: warm.count,
        }
    }

    fn run_flash(
        &self,
        options: &AttentionOptions<'_>,
        layout: Option<&BlockSparseLayout>,
        output: &mut [f32],
        workspace: &mut FlashAttentionWorkspace,
    ) {
        flash_attention(
            &self.q,
            &self.k,
            &self.v,
            &self.shape,
            options,
            layout,
            output,
            workspace,
        )
        .expect("valid shapes");
        black_box(output);
    }
}

/// The best time of a few calls: at least `MIN_RUNS`, then more until `TIME_PER_CASE`.
fn best_time(call: &mut dyn FnMut()) -> Duration {
    let started = Instant::now();
    let mut best = Duration::MAX;
    for run in 0..MAX_RUNS {
        if run >= MIN_RUNS && started.elapsed() > TIME_PER_CASE {
            break;
        }
        let start = Instant::now();
        call();
        best = best.min(start.elapsed());
    }
    best
}
