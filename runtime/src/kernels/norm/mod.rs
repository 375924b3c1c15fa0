//! Normalisations: inference batch norm over the channel axis, layer norm and RMS norm over
//! the last axis.
//!
//! Batch norm is folded once, at load time, into a per-channel scale and shift (as PyTorch's
//! CPU inference path does), so a call is one multiply-add per element. Layer norm uses two
//! passes (mean, then the biased variance of the centred values) for accuracy.

use crate::error::{KernelResult, check_length, invalid_parameter, shape_mismatch};
use crate::kernels::vectorize;
use crate::threading;

pub mod fold;

pub use fold::{BatchNormToFold, FoldedBatchNorm, fold_batch_norm};

/// The running statistics and affine parameters of a batch norm layer.
#[derive(Clone, Copy, Debug)]
pub struct BatchNormParams<'a> {
    pub mean: &'a [f32],
    pub variance: &'a [f32],
    /// `gamma`; `None` means 1.
    pub weight: Option<&'a [f32]>,
    /// `beta`; `None` means 0.
    pub bias: Option<&'a [f32]>,
    pub eps: f32,
}

/// A batch norm layer folded into `y = x * scale[c] + shift[c]`.
#[derive(Clone, Debug)]
pub struct BatchNorm {
    scale: Vec<f32>,
    shift: Vec<f32>,
}

impl BatchNorm {
    /// Folds the parameters: `scale = weight / sqrt(variance + eps)`,
    /// `shift = bias - mean * scale`.
    pub fn new(params: &BatchNormParams<'_>) -> KernelResult<Self> {
        let channels = params.mean.len();
        check_length("batch_norm", "variance", channels, params.variance.len())?;
        if let Some(weight) = params.weight {
            check_length("batch_norm", "weight", channels, weight.len())?;
        }
        if let Some(bias) = params.bias {
            check_length("batch_norm", "bias", channels, bias.len())?;
        }
        let scale: Vec<f32> = (0..channels)
            .map(|c| {
                let inverse_deviation = 1.0 / (params.variance[c] + params.eps).sqrt();
                inverse_deviation * params.weight.map_or(1.0, |weight| weight[c])
            })
            .collect();
        let shift = (0..channels)
            .map(|c| params.bias.map_or(0.0, |bias| bias[c]) - params.mean[c] * scale[c])
            .collect();
        Ok(Self { scale, shift })
    }

    /// The number of channels.
    pub fn channels(&self) -> usize {
        self.scale.len()
    }

    /// The per-channel multiplier (for folding into a preceding convolution, say).
    pub fn scale(&self) -> &[f32] {
        &self.scale
    }

    /// The per-channel offset.
    pub fn shift(&self) -> &[f32] {
        &self.shift
    }
}

/// `output = batch_norm(input)` for an `[N, C, *]` tensor (rank at least 2).
pub fn batch_norm(
    input: &[f32],
    output: &mut [f32],
    shape: &[usize],
    norm: &BatchNorm,
) -> KernelResult<()> {
    check_length("batch_norm", "output", input.len(), output.len())?;
    let spatial = check_batch_norm_shape(input.len(), shape, norm)?;
    if spatial == 0 {
        return Ok(());
    }
    let planes_per_task = (PARALLEL_CHUNK / spatial).max(1);
    threading::run_chunks_mut(output, planes_per_task * spatial, |chunk_index, output| {
        let first_plane = chunk_index * planes_per_task;
        let input = &input[first_plane * spatial..][..output.len()];
        for (plane_offset, (output, input)) in output
            .chunks_exact_mut(spatial)
            .zip(input.chunks_exact(spatial))
            .enumerate()
        {
            let channel = (first_plane + plane_offset) % norm.channels();
            let (scale, shift) = (norm.scale[channel], norm.shift[channel]);
            vectorize::map(input, output, |x| x * scale + shift);
        }
    });
    Ok(())
}

/// Batch norm in place.
pub fn batch_norm_in_place(
    values: &mut [f32],
    shape: &[usize],
    norm: &BatchNorm,
) -> KernelResult<()> {
    let spatial = check_batch_norm_shape(values.len(), shape, norm)?;
    if spatial == 0 {
        return Ok(());
    }
    let planes_per_task = (PARALLEL_CHUNK / spatial).max(1);
    threading::run_chunks_mut(values, planes_per_task * spatial, |chunk_index, values| {
        let first_plane = chunk_index * planes_per_task;
        for (plane_offset, values) in values.chunks_exact_mut(spatial).enumerate() {
            let channel = (first_plane + plane_offset) % norm.channels();
            let (scale, shift) = (norm.scale[channel], norm.shift[channel]);
            vectorize::map_in_place(values, |x| x * scale + shift);
        }
    });
    Ok(())
}

/// Options of `layer_norm`.
#[derive(Clone, Copy, Debug)]
pub struct LayerNormOptions<'a> {
    /// Per-element scale of length `normalized_size`; `None` means 1.
    pub weight: Option<&'a [f32]>,
    /// Per-element offset of length `normalized_size`; `None` means 0.
    pub bias: Option<&'a [f32]>,
    pub eps: f32,
}

/// `output = layer_norm(input)` over rows of `normalized_size` elements:
/// `(x - mean) / sqrt(var + eps) * weight + bias`, with the biased variance.
pub fn layer_norm(
    input: &[f32],
    output: &mut [f32],
    normalized_size: usize,
    options: &LayerNormOptions<'_>,
) -> KernelResult<()> {
    check_length("layer_norm", "output", input.len(), output.len())?;
    output.copy_from_slice(input);
    layer_norm_in_place(output, normalized_size, options)
}

/// Layer norm in place.
pub fn layer_norm_in_place(
    values: &mut [f32],
    normalized_size: usize,
    options: &LayerNormOptions<'_>,
) -> KernelResult<()> {
    check_rows("layer_norm", values.len(), normalized_size, options.weight)?;
    if let Some(bias) = options.bias {
        check_length("layer_norm", "bias", normalized_size, bias.len())?;
    }
    let rows_per_task = rows_per_task(values.len(), normalized_size);
    threading::run_chunks_mut(values, rows_per_task * normalized_size, |_, values| {
        // One choice of instructions per call, not per row: five dispatched element-wise
        // passes per row (the centring, the scale and the offset written back separately) took
        // 25 µs for the encoder's 128 rows of 384.
        vectorize::with_widest_vectors(Rows {
            values,
            normalized_size,
            options,
        });
    });
    Ok(())
}

/// The rows of one task of a row-wise norm, with the norm's options: the work that
/// `vectorize::with_widest_vectors` builds for the widest vectors.
struct Rows<'a, Options> {
    values: &'a mut [f32],
    normalized_size: usize,
    options: &'a Options,
}

impl vectorize::VectorWork for Rows<'_, LayerNormOptions<'_>> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        layer_norm_rows(self.values, self.normalized_size, self.options);
    }
}

impl vectorize::VectorWork for Rows<'_, RmsNormOptions<'_>> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        rms_norm_rows(self.values, self.normalized_size, self.options);
    }
}

/// Three passes per row: the sum, the sum of squares of the centred values (not stored), and
/// `(x - mean) * inverse_deviation * weight + bias` written back. The sums run in
/// [`SUM_LANES`] independent lanes: with eight, each pass waited on one register's chain of
/// additions.
#[inline(always)]
fn layer_norm_rows(values: &mut [f32], normalized_size: usize, options: &LayerNormOptions<'_>) {
    let count = normalized_size as f32;
    for row in values.chunks_exact_mut(normalized_size) {
        let mean = sum_of(row, |x| x) / count;
        let variance = sum_of(row, |x| (x - mean) * (x - mean)) / count;
        let inverse_deviation = 1.0 / (variance + options.eps).sqrt();
        let scaled = |x: f32| (x - mean) * inverse_deviation;
        match (options.weight, options.bias) {
            (Some(weight), Some(bias)) => {
                for ((x, &weight), &bias) in row.iter_mut().zip(weight).zip(bias) {
                    *x = scaled(*x) * weight + bias;
                }
            }
            (Some(weight), None) => {
                for (x, &weight) in row.iter_mut().zip(weight) {
                    *x = scaled(*x) * weight;
                }
            }
            (None, Some(bias)) => {
                for (x, &bias) in row.iter_mut().zip(bias) {
                    *x = scaled(*x) + bias;
                }
            }
            (None, None) => {
                for x in row.iter_mut() {
                    *x = scaled(*x);
                }
            }
        }
    }
}

/// Independent partial sums of [`sum_of`]: two AVX-512 or four AVX2 registers.
const SUM_LANES: usize = 32;

/// The sum of `term(x)` over a slice, in [`SUM_LANES`] independent lanes.
#[inline(always)]
fn sum_of(values: &[f32], term: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0.0f32; SUM_LANES];
    let mut chunks = values.chunks_exact(SUM_LANES);
    for chunk in &mut chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane += term(x);
        }
    }
    lanes.iter().sum::<f32>() + chunks.remainder().iter().map(|&x| term(x)).sum::<f32>()
}

/// Options of `rms_norm`.
#[derive(Clone, Copy, Debug)]
pub struct RmsNormOptions<'a> {
    /// Per-element scale of length `normalized_size`; `None` means 1.
    pub weight: Option<&'a [f32]>,
    pub eps: f32,
}

/// `output = x / sqrt(mean(x^2) + eps) * weight` over rows of `normalized_size` elements (the
/// Llama `RMSNorm`).
pub fn rms_norm(
    input: &[f32],
    output: &mut [f32],
    normalized_size: usize,
    options: &RmsNormOptions<'_>,
) -> KernelResult<()> {
    check_length("rms_norm", "output", input.len(), output.len())?;
    output.copy_from_slice(input);
    rms_norm_in_place(output, normalized_size, options)
}

/// RMS norm in place.
pub fn rms_norm_in_place(
    values: &mut [f32],
    normalized_size: usize,
    options: &RmsNormOptions<'_>,
) -> KernelResult<()> {
    check_rows("rms_norm", values.len(), normalized_size, options.weight)?;
    let rows_per_task = rows_per_task(values.len(), normalized_size);
    threading::run_chunks_mut(values, rows_per_task * normalized_size, |_, values| {
        // One choice of instructions per call, as for layer norm.
        vectorize::with_widest_vectors(Rows {
            values,
            normalized_size,
            options,
        });
    });
    Ok(())
}

/// Two passes per row: the sum of squares, and `x * inverse_root * weight` written back.
#[inline(always)]
fn rms_norm_rows(values: &mut [f32], normalized_size: usize, options: &RmsNormOptions<'_>) {
    for row in values.chunks_exact_mut(normalized_size) {
        let mean_square = sum_of_squares(row) / normalized_size as f32;
        let inverse_root = 1.0 / (mean_square + options.eps).sqrt();
        match options.weight {
            Some(weight) => {
                for (x, &weight) in row.iter_mut().zip(weight) {
                    *x = *x * inverse_root * weight;
                }
            }
            None => {
                for x in row.iter_mut() {
                    *x *= inverse_root;
                }
            }
        }
    }
}

/// Elements per parallel task of batch norm.
const PARALLEL_CHUNK: usize = 1 << 15;

/// From this many elements (64 KiB) on, layer norm and RMS norm split their rows across threads.
/// A norm makes two or three cheap passes over rows that the previous layer just wrote. Where
/// one thread wrote them all (`benches/decode_kernels.rs`), a second thread first pulls its
/// half over to its own core and pays for waking the pool: with tasks of 32K elements two
/// threads made layer norm slower there (0.5x to 0.9x from 64 to 2048 rows of 768). But in a
/// network at two threads the rows come from a GEMM whose tasks split the columns, so every
/// row is half in each core's cache whoever normalizes it: the encoder's layer norms (128 rows
/// of 384) took 32 µs on one thread and 24 µs on two (`nnc bench` per-layer profile at 2
/// threads; 25 µs at 1 thread). Below the threshold (a decoder's few rows) the pool's wake-up
/// would cost more than the rows.
const NORM_PARALLEL_MIN_ELEMENTS: usize = 1 << 14;

/// Rows per task of a row-wise norm over `length` elements in rows of `normalized_size`: all of
/// them below `NORM_PARALLEL_MIN_ELEMENTS`, else an even share per thread.
fn rows_per_task(length: usize, normalized_size: usize) -> usize {
    let rows = length / normalized_size.max(1);
    if length < NORM_PARALLEL_MIN_ELEMENTS {
        return rows.max(1);
    }
    rows.div_ceil(threading::parallel_width()).max(1)
}

/// Checks an `[N, C, *]` shape against the data and the layer; returns the spatial size.
fn check_batch_norm_shape(length: usize, shape: &[usize], norm: &BatchNorm) -> KernelResult<usize> {
    if shape.len() < 2 {
        return Err(shape_mismatch(
            "batch_norm",
            format!("the input must be [N, C, *], got {shape:?}"),
        ));
    }
    if shape[1] != norm.channels() {
        return Err(shape_mismatch(
            "batch_norm",
            format!(
                "the input has {} channels, the layer {}",
                shape[1],
                norm.channels()
            ),
        ));
    }
    let expected = crate::error::checked_element_count("batch_norm", shape)?;
    check_length("batch_norm", "input", expected, length)?;
    Ok(shape[2..].iter().product())
}

fn check_rows(
    operation: &'static str,
    length: usize,
    normalized_size: usize,
    weight: Option<&[f32]>,
) -> KernelResult<()> {
    if let Some(weight) = weight {
        check_length(operation, "weight", normalized_size, weight.len())?;
    }
    if normalized_size == 0 {
        return if length == 0 {
            Ok(())
        } else {
            Err(invalid_parameter(operation, "the normalized size is zero"))
        };
    }
    if !length.is_multiple_of(normalized_size) {
        return Err(shape_mismatch(
            operation,
            format!("{length} elements are not rows of {normalized_size}"),
        ));
    }
    Ok(())
}

/// The sum of squares of a slice, in eight independent lanes.
#[inline(always)]
fn sum_of_squares(values: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let mut chunks = values.chunks_exact(8);
    for chunk in &mut chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane += x * x;
        }
    }
    lanes.iter().sum::<f32>() + chunks.remainder().iter().map(|&x| x * x).sum::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference;
    use crate::test_support::{assert_close, values};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn batch_norm_matches_reference(
            (shape, input, statistics, affine) in prop::collection::vec(1..6usize, 2..5)
                .prop_flat_map(|shape| {
                    let length: usize = shape.iter().product();
                    let channels = shape[1];
                    (Just(shape), values(length), values(4 * channels), any::<bool>())
                })
        ) {
            let channels = shape[1];
            let (mean, rest) = statistics.split_at(channels);
            let (variance, rest) = rest.split_at(channels);
            let variance: Vec<f32> = variance.iter().map(|v| v.abs() + 0.1).collect();
            let (weight, bias) = rest.split_at(channels);
            let (weight, bias) = if affine { (Some(weight), Some(bias)) } else { (None, None) };
            let params = BatchNormParams { mean, variance: &variance, weight, bias, eps: 1e-5 };
            let norm = BatchNorm::new(&params).unwrap();
            let expected =
                reference::batch_norm(&input, &shape, mean, &variance, weight, bias, 1e-5);
            let mut output = vec![0.0; input.len()];
            batch_norm(&input, &mut output, &shape, &norm).unwrap();
            assert_close(&output, &expected, 1e-5);
            let mut in_place = input.clone();
            batch_norm_in_place(&mut in_place, &shape, &norm).unwrap();
            assert_eq!(in_place, output);
        }

        #[test]
        fn layer_norm_matches_reference(
            (rows, size, input, affine, with_bias) in (1..5usize, 1..70usize)
                .prop_flat_map(|(rows, size)| {
                    (Just(rows), Just(size), values(rows * size), values(2 * size), any::<bool>())
                })
        ) {
            let (weight, bias) = affine.split_at(size);
            let options = LayerNormOptions {
                weight: Some(weight),
                bias: with_bias.then_some(bias),
                eps: 1e-5,
            };
            let expected = reference::layer_norm(&input, size, options.weight, options.bias, 1e-5);
            let mut output = vec![0.0; rows * size];
            layer_norm(&input, &mut output, size, &options).unwrap();
            assert_close(&output, &expected, 1e-4);
            let plain = LayerNormOptions { weight: None, bias: None, eps: 1e-5 };
            let expected = reference::layer_norm(&input, size, None, None, 1e-5);
            layer_norm(&input, &mut output, size, &plain).unwrap();
            assert_close(&output, &expected, 1e-4);
            let offset_only = LayerNormOptions { weight: None, bias: Some(bias), eps: 1e-5 };
            let expected = reference::layer_norm(&input, size, None, Some(bias), 1e-5);
            layer_norm(&input, &mut output, size, &offset_only).unwrap();
            assert_close(&output, &expected, 1e-4);
        }

        #[test]
        fn rms_norm_matches_reference(
            (rows, size, input, weight, with_weight) in (1..5usize, 1..70usize)
                .prop_flat_map(|(rows, size)| {
                    (Just(rows), Just(size), values(rows * size), values(size), any::<bool>())
                })
        ) {
            let options = RmsNormOptions { weight: with_weight.then_some(weight.as_slice()), eps: 1e-6 };
            let expected = reference::rms_norm(&input, size, options.weight, 1e-6);
            let mut output = vec![0.0; rows * size];
            rms_norm(&input, &mut output, size, &options).unwrap();
            assert_close(&output, &expected, 1e-5);
        }
    }

    #[test]
    fn norms_split_across_threads_equal_one_thread() {
        // Past the threshold, with an odd row count so that the last task is shorter.
        let (rows, size) = (NORM_PARALLEL_MIN_ELEMENTS / 97 + 3, 97);
        assert!(rows * size >= NORM_PARALLEL_MIN_ELEMENTS);
        let input: Vec<f32> = (0..rows * size)
            .map(|i| (i % 89) as f32 / 89.0 - 0.3)
            .collect();
        let weight: Vec<f32> = (0..size).map(|i| 1.0 + i as f32 / 97.0).collect();
        let layer = LayerNormOptions {
            weight: Some(&weight),
            bias: Some(&weight),
            eps: 1e-5,
        };
        let rms = RmsNormOptions {
            weight: Some(&weight),
            eps: 1e-5,
        };
        let mut outputs = Vec::new();
        for threads in [1, 2, 3] {
            crate::set_num_threads(threads);
            let mut layer_output = input.clone();
            layer_norm_in_place(&mut layer_output, size, &layer).unwrap();
            let mut rms_output = input.clone();
            rms_norm_in_place(&mut rms_output, size, &rms).unwrap();
            outputs.push((layer_output, rms_output));
        }
        crate::set_num_threads(0);
        assert!(outputs.iter().all(|output| *output == outputs[0]));
        let expected = reference::rms_norm(&input[..3 * size], size, Some(&weight), 1e-5);
        assert_close(&outputs[0].1[..3 * size], &expected, 1e-5);
    }

    #[test]
    fn shape_errors_are_reported() {
        let norm = BatchNorm::new(&BatchNormParams {
            mean: &[0.0; 3],
            variance: &[1.0; 3],
            weight: None,
            bias: None,
            eps: 1e-5,
        })
        .unwrap();
        let mut values = [0.0; 12];
        assert!(batch_norm_in_place(&mut values, &[2, 2, 3], &norm).is_err());
        assert!(batch_norm_in_place(&mut values, &[12], &norm).is_err());
        assert!(batch_norm_in_place(&mut values, &[2, 3, 2], &norm).is_ok());
        let options = LayerNormOptions {
            weight: None,
            bias: None,
            eps: 1e-5,
        };
        assert!(layer_norm_in_place(&mut values, 5, &options).is_err());
        assert!(layer_norm_in_place(&mut values, 0, &options).is_err());
        let options = RmsNormOptions {
            weight: Some(&[1.0; 4]),
            eps: 1e-5,
        };
        assert!(rms_norm_in_place(&mut values, 3, &options).is_err());
    }
}
