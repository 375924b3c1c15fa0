//! The kernels of one decoding step at 1 and 2 threads: the one-row projections of a
//! SmolLM2-135M-sized Llama (30 layers of q, k, v, o, gate, up and down projections plus the tied
//! head, 538 MB of weights, so each pass streams them from memory as a real step does), and the
//! norms at decoding and at prefill sizes (which must not get slower with a second thread).
//!
//! The same step with quantized weights (Q8_0, Q4_0, Q4_1, in the exact and the fast mode)
//! follows, with the bandwidth each reaches in bytes of weights per second.
//!
//! `cargo bench -p nnc-runtime --bench decode_kernels`. Prints medians and the 2-thread speed-up.

use std::hint::black_box;
use std::time::{Duration, Instant};

use nnc_runtime::kernels::linear::PackedLinear;
use nnc_runtime::kernels::norm::{
    LayerNormOptions, RmsNormOptions, layer_norm_in_place, rms_norm_in_place,
};
use nnc_runtime::kernels::quantized::{
    QuantFormat, QuantizedLinear, QuantizedMatrix, QuantizedMode,
};

/// The median of `samples` timed calls, after one untimed call.
fn median_time(samples: usize, call: &mut dyn FnMut()) -> Duration {
    call();
    let mut times: Vec<Duration> = (0..samples)
        .map(|_| {
            let start = Instant::now();
            call();
            start.elapsed()
        })
        .collect();
    times.sort_unstable();
    times[samples / 2]
}

/// Median times at one thread and at two threads, measured alternately so that both see the
/// same load.
fn one_and_two_threads(samples: usize, call: &mut dyn FnMut()) -> (Duration, Duration) {
    let (mut one, mut two) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        nnc_runtime::set_num_threads(1);
        one.push(median_time(samples, call));
        nnc_runtime::set_num_threads(2);
        two.push(median_time(samples, call));
    }
    one.sort_unstable();
    two.sort_unstable();
    (one[1], two[1])
}

fn values(length: usize, seed: usize) -> Vec<f32> {
    (0..length)
        .map(|index| ((index * 7 + seed * 13) % 97) as f32 / 97.0 - 0.5)
        .collect()
}

fn report(name: &str, (one, two): (Duration, Duration)) {
    println!(
        "  {name:<34} 1 thread {:>10.1} us   2 threads {:>10.1} us   {:.2}x",
        one.as_secs_f64() * 1e6,
        two.as_secs_f64() * 1e6,
        one.as_secs_f64() / two.as_secs_f64()
    );
}

fn main() {
    let (hidden, kv, ffn, vocab, layers) = (576, 192, 1536, 49152, 30);
    println!("one-row projections (median of passes, weights streamed from memory):");
    let shapes = [
        ("576 -> 576 (q, o)", hidden, hidden),
        ("576 -> 192 (k, v)", hidden, kv),
        ("576 -> 1536 (gate, up)", hidden, ffn),
        ("1536 -> 576 (down)", ffn, hidden),
    ];
    for (name, inputs, outputs) in shapes {
        // Enough copies that they do not fit in the last-level cache.
        let copies = (64 << 20) / (inputs * outputs * 4) + 1;
        let weights: Vec<PackedLinear> = (0..copies)
            .map(|copy| {
                PackedLinear::new(&values(inputs * outputs, copy), outputs, inputs, None).unwrap()
            })
            .collect();
        let input = values(inputs, 99);
        let mut output = vec![0.0; outputs];
        let mut next = 0;
        let times = one_and_two_threads(201, &mut || {
            weights[next % copies]
                .forward(&input, 1, &mut output)
                .unwrap();
            next += 1;
            black_box(&output);
        });
        report(name, times);
    }
    let head = PackedLinear::new(&values(hidden * vocab, 1), vocab, hidden, None).unwrap();
    let (input, mut output) = (values(hidden, 2), vec![0.0; vocab]);
    report(
        "576 -> 49152 (tied head)",
        one_and_two_threads(21, &mut || {
            head.forward(&input, 1, &mut output).unwrap();
            black_box(&output);
        }),
    );
    drop(head);

    let layer_shapes = [
        (hidden, hidden),
        (hidden, kv),
        (hidden, kv),
        (hidden, hidden),
        (hidden, ffn),
        (hidden, ffn),
        (ffn, hidden),
    ];
    let stack: Vec<PackedLinear> = (0..layers)
        .flat_map(|layer| {
            layer_shapes
                .iter()
                .enumerate()
                .map(move |(index, &(inputs, outputs))| (layer * 7 + index, inputs, outputs))
        })
        .map(|(seed, inputs, outputs)| {
            PackedLinear::new(&values(inputs * outputs, seed), outputs, inputs, None).unwrap()
        })
        .collect();
    let input = values(ffn, 3);
    let mut output = vec![0.0; ffn];
    report(
        "30 layers of projections",
        one_and_two_threads(9, &mut || {
            for linear in &stack {
                let (inputs, outputs) = (linear.in_features(), linear.out_features());
                linear
                    .forward(&input[..inputs], 1, &mut output[..outputs])
                    .unwrap();
            }
            black_box(&output);
        }),
    );
    drop(stack);

    println!("30 layers of projections and the tied head, quantized (weights streamed per step):");
    for format in QuantFormat::ALL {
        let layers: Vec<QuantizedMatrix> = (0..layers)
            .flat_map(|layer| {
                layer_shapes
                    .iter()
                    .enumerate()
                    .map(move |(index, &(inputs, outputs))| (layer * 7 + index, inputs, outputs))
            })
            .chain(std::iter::once((1, hidden, vocab)))
            .map(|(seed, inputs, outputs)| {
                QuantizedMatrix::quantize(format, &values(inputs * outputs, seed), outputs, inputs)
                    .unwrap()
            })
            .collect();
        let bytes: usize = layers.iter().map(|matrix| matrix.bytes().len()).sum();
        for mode in [QuantizedMode::Exact, QuantizedMode::Fast] {
            let stack: Vec<QuantizedLinear> = layers
                .iter()
                .map(|matrix| QuantizedLinear::new(matrix.clone(), None, mode).unwrap())
                .collect();
            let mut output = vec![0.0; vocab];
            let times = one_and_two_threads(9, &mut || {
                for linear in &stack {
                    let (inputs, outputs) = (linear.in_features(), linear.out_features());
                    linear
                        .forward(&input[..inputs], 1, &mut output[..outputs])
                        .unwrap();
                }
                black_box(&output);
            });
            report(&format!("{format} {mode:?} ({} MB)", bytes >> 20), times);
            println!(
                "  {:<34} {:.1} GB/s at 1 thread, {:.1} GB/s at 2",
                "",
                bytes as f64 / times.0.as_secs_f64() / 1e9,
                bytes as f64 / times.1.as_secs_f64() / 1e9
            );
        }
    }

    println!("norms (median of calls):");
    for (rows, width) in [
        (1, 576),
        (16, 576),
        (64, 768),
        (128, 768),
        (512, 768),
        (2048, 768),
    ] {
        let mut data = values(rows * width, 4);
        let weight = values(width, 5);
        let bias = values(width, 6);
        let samples = (4_000_000 / (rows * width)).clamp(51, 2001);
        report(
            &format!("layer_norm [{rows}, {width}]"),
            one_and_two_threads(samples, &mut || {
                layer_norm_in_place(
                    &mut data,
                    width,
                    &LayerNormOptions {
                        weight: Some(&weight),
                        bias: Some(&bias),
                        eps: 1e-5,
                    },
                )
                .unwrap();
                black_box(&data);
            }),
        );
        report(
            &format!("rms_norm [{rows}, {width}]"),
            one_and_two_threads(samples, &mut || {
                rms_norm_in_place(
                    &mut data,
                    width,
                    &RmsNormOptions {
                        weight: Some(&weight),
                        eps: 1e-5,
                    },
                )
                .unwrap();
                black_box(&data);
            }),
        );
    }
}
