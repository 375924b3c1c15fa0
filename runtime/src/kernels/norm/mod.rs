//! Normalisations: inference batch norm over the channel axis, layer norm and RMS norm over
//! the last axis.
//!
//! Batch norm is folded once, at load time, into a per-channel scale and shift (as PyTorch's
//! CPU inference path does), so a call is one multiply-add per element. Layer norm uses two
//! passes (mean, then the biased variance of the centred values) for accuracy.

use crate::error::{KernelResult, check_length, invalid_parameter, shape_mismatch};
use crate::kernels::vectorize::{self, Isa};
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
    check_layer_norm(output.len(), normalized_size, options)?;
    run_rows(Some(input), output, normalized_size, options);
    Ok(())
}

/// Layer norm in place.
pub fn layer_norm_in_place(
    values: &mut [f32],
    normalized_size: usize,
    options: &LayerNormOptions<'_>,
) -> KernelResult<()> {
    check_layer_norm(values.len(), normalized_size, options)?;
    run_rows(None, values, normalized_size, options);
    Ok(())
}

fn check_layer_norm(
    length: usize,
    normalized_size: usize,
    options: &LayerNormOptions<'_>,
) -> KernelResult<()> {
    check_rows("layer_norm", length, normalized_size, options.weight)?;
    if let Some(bias) = options.bias {
        check_length("layer_norm", "bias", normalized_size, bias.len())?;
    }
    Ok(())
}

/// Runs a row-wise norm over the rows of `input` into `output` (as long), or over `output` in
/// place, the rows split among the threads.
fn run_rows<Options: Sync>(
    input: Option<&[f32]>,
    output: &mut [f32],
    normalized_size: usize,
    options: &Options,
) where
    for<'a> Rows<'a, Options>: vectorize::VectorWork<Output = ()>,
{
    let rows_per_task = rows_per_task(output.len(), normalized_size);
    let task_length = rows_per_task * normalized_size;
    let isa = Isa::detect();
    threading::run_chunks_mut(output, task_length, |task, output| {
        // One choice of instructions per call, not per row: five dispatched element-wise
        // passes per row (the centring, the scale and the offset written back separately) took
        // 25 µs for the encoder's 128 rows of 384.
        vectorize::with_widest_vectors(Rows {
            input: input.map(|input| &input[task * task_length..][..output.len()]),
            output,
            normalized_size,
            options,
            isa,
        });
    });
}

/// The rows of one task of a row-wise norm, with the norm's options: the work that
/// `vectorize::with_widest_vectors` builds for the widest vectors.
struct Rows<'a, Options> {
    /// The rows to normalize into `output`; `None`: `output`'s own.
    input: Option<&'a [f32]>,
    output: &'a mut [f32],
    normalized_size: usize,
    options: &'a Options,
    isa: Isa,
}

impl vectorize::VectorWork for Rows<'_, LayerNormOptions<'_>> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        layer_norm_rows(
            self.input,
            self.output,
            self.normalized_size,
            self.options,
            self.isa,
        );
    }
}

impl vectorize::VectorWork for Rows<'_, RmsNormOptions<'_>> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        rms_norm_rows(
            self.input,
            self.output,
            self.normalized_size,
            self.options,
            self.isa,
        );
    }
}

/// Three passes per row: the sum, the sum of squares of the centred values (not stored), and
/// `(x - mean) * inverse_deviation * weight + bias` written to the output row.
#[inline(always)]
fn layer_norm_rows(
    input: Option<&[f32]>,
    output: &mut [f32],
    normalized_size: usize,
    options: &LayerNormOptions<'_>,
    isa: Isa,
) {
    let count = normalized_size as f32;
    for (index, out) in output.chunks_exact_mut(normalized_size).enumerate() {
        let row = input.map(|input| &input[index * normalized_size..][..normalized_size]);
        let (mean, variance) = {
            let row = row.unwrap_or(out);
            let mean = row_sum(isa, row) / count;
            (mean, squared_deviations(isa, row, mean) / count)
        };
        let inverse_deviation = 1.0 / (variance + options.eps).sqrt();
        let affine =
            |x: f32, weight: f32, bias: f32| (x - mean) * inverse_deviation * weight + bias;
        map_row(row, out, options.weight, options.bias, affine);
    }
}

/// `out[j] = f(x[j], weight[j], bias[j])` where `x` is `row`, or `out` itself when `row` is
/// `None`; a missing weight is 1 and a missing bias -0 (which leaves every value, -0 included,
/// as it is), constants that fold into `f`.
#[inline(always)]
fn map_row(
    row: Option<&[f32]>,
    out: &mut [f32],
    weight: Option<&[f32]>,
    bias: Option<&[f32]>,
    f: impl Fn(f32, f32, f32) -> f32,
) {
    let (ones, zeros) = (std::iter::repeat(1.0), std::iter::repeat(-0.0));
    match (weight, bias) {
        (Some(weight), Some(bias)) => {
            map_row_with(row, out, weight.iter().copied(), bias.iter().copied(), f)
        }
        (Some(weight), None) => map_row_with(row, out, weight.iter().copied(), zeros, f),
        (None, Some(bias)) => map_row_with(row, out, ones, bias.iter().copied(), f),
        (None, None) => map_row_with(row, out, ones, zeros, f),
    }
}

#[inline(always)]
fn map_row_with(
    row: Option<&[f32]>,
    out: &mut [f32],
    weights: impl Iterator<Item = f32>,
    biases: impl Iterator<Item = f32>,
    f: impl Fn(f32, f32, f32) -> f32,
) {
    match row {
        Some(row) => {
            for (((y, &x), weight), bias) in out.iter_mut().zip(row).zip(weights).zip(biases) {
                *y = f(x, weight, bias);
            }
        }
        None => {
            for ((y, weight), bias) in out.iter_mut().zip(weights).zip(biases) {
                *y = f(*y, weight, bias);
            }
        }
    }
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
    check_rows("rms_norm", output.len(), normalized_size, options.weight)?;
    run_rows(Some(input), output, normalized_size, options);
    Ok(())
}

/// RMS norm in place.
pub fn rms_norm_in_place(
    values: &mut [f32],
    normalized_size: usize,
    options: &RmsNormOptions<'_>,
) -> KernelResult<()> {
    check_rows("rms_norm", values.len(), normalized_size, options.weight)?;
    run_rows(None, values, normalized_size, options);
    Ok(())
}

/// Two passes per row: the sum of squares, and `x * inverse_root * weight` written back.
#[inline(always)]
fn rms_norm_rows(
    input: Option<&[f32]>,
    output: &mut [f32],
    normalized_size: usize,
    options: &RmsNormOptions<'_>,
    isa: Isa,
) {
    for (index, out) in output.chunks_exact_mut(normalized_size).enumerate() {
        let row = input.map(|input| &input[index * normalized_size..][..normalized_size]);
        let mean_square = squared_deviations(isa, row.unwrap_or(out), 0.0) / normalized_size as f32;
        let inverse_root = 1.0 / (mean_square + options.eps).sqrt();
        map_row(row, out, options.weight, None, |x, weight, _| {
            x * inverse_root * weight
        });
    }
}

/// Elements per parallel task of batch norm.
const PARALLEL_CHUNK: usize = 1 << 15;

/// From this many elements (64 KiB) on, layer norm and RMS norm split their rows across threads.
/// A norm makes two or three cheap passes over rows that the previous layer just wrote. Where
/// one thread wrote them all (`benches/decode_kernels.rs`), a second thread first pulls its
/// half over to its own core and pays for waking the pool: with tasks of 32K elements two
/// threads made layer norm slower there (0.5x to 0.9x from 64 to 2048 rows of 768). But in a
/// network at two threads the rows come from a GEMM split among the threads (the encoder's, by
/// rows), so each thread finds its own rows in its own cache: the encoder's layer norms (128
/// rows of 384) take 10.2 µs at one thread and 6.5 µs at two in the per-layer profile of the
/// harness (24.6 and 24.4 µs before the sums were vectorized). Below the threshold (a
/// decoder's few rows) the pool's wake-up would cost more than the rows.
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

/// The sum of `row`. A norm's sums are reductions, whose additions LLVM keeps in order, so
/// their vector forms are written out: autovectorized, a sum of 32 independent lanes came out as
/// sixteen pairs of floats shuffled through two-float registers, and layer norm over the
/// encoder's 128 rows of 384 took 18 µs.
#[inline(always)]
fn row_sum(isa: Isa, row: &[f32]) -> f32 {
    match isa {
        Isa::Portable => sums_portable(row, |x| x),
        // SAFETY: `Isa::Avx2` is only made after checking the processor has AVX2.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { sums_x86_64::sum_avx2(row) },
        // SAFETY: `Isa::Avx512` is only made after checking the processor has AVX-512F.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { sums_x86_64::sum_avx512::<false>(row, 0.0) },
    }
}

/// The sum of `(x - center)^2` over `row`, written out as [`row_sum`] is.
#[inline(always)]
fn squared_deviations(isa: Isa, row: &[f32], center: f32) -> f32 {
    match isa {
        Isa::Portable => sums_portable(row, |x| (x - center) * (x - center)),
        // SAFETY: `Isa::Avx2` is only made after checking the processor has AVX2.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { sums_x86_64::squared_deviations_avx2(row, center) },
        // SAFETY: `Isa::Avx512` is only made after checking the processor has AVX-512F.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { sums_x86_64::sum_avx512::<true>(row, center) },
    }
}

/// The sum of `term(x)` over a slice, in eight independent lanes.
#[inline(always)]
fn sums_portable(values: &[f32], term: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (chunks, remainder) = values.as_chunks::<8>();
    for chunk in chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane += term(x);
        }
    }
    lanes.iter().sum::<f32>() + remainder.iter().map(|&x| term(x)).sum::<f32>()
}

#[cfg(target_arch = "x86_64")]
mod sums_x86_64 {
    //! The AVX2 and AVX-512 forms of [`super::row_sum`] and [`super::squared_deviations`]: 32
    //! floats a step in independent accumulators (a single one would wait on its own additions'
    //! latency), added together once at the end.

    use crate::kernels::vectorize::first_lanes16;
    use std::arch::x86_64::*;

    /// With `SQUARE`, the sum of `(x - center)^2` over `row`; else the sum of `row` (`center`
    /// unused).
    ///
    /// # Safety
    /// The processor has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn sum_avx512<const SQUARE: bool>(row: &[f32], center: f32) -> f32 {
        let center = _mm512_set1_ps(center);
        let term = |x: __m512| {
            if SQUARE {
                let deviation = _mm512_sub_ps(x, center);
                _mm512_mul_ps(deviation, deviation)
            } else {
                x
            }
        };
        let (mut low, mut high) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let (chunks, remainder) = row.as_chunks::<32>();
        for chunk in chunks {
            // SAFETY: Both loads read inside `chunk`, 32 floats.
            let (x, y) = unsafe {
                (
                    _mm512_loadu_ps(chunk.as_ptr()),
                    _mm512_loadu_ps(chunk.as_ptr().add(16)),
                )
            };
            low = _mm512_add_ps(low, term(x));
            high = _mm512_add_ps(high, term(y));
        }
        // The last 0 to 31 floats in two masked loads; the lanes past the row add zero.
        for (index, part) in remainder.chunks(16).enumerate() {
            let mask = first_lanes16(part.len());
            // SAFETY: The load reads the first `part.len()` lanes, inside `part`, and no others.
            let x = unsafe { _mm512_maskz_loadu_ps(mask, part.as_ptr()) };
            let x = _mm512_maskz_mov_ps(mask, term(x));
            if index == 0 {
                low = _mm512_add_ps(low, x);
            } else {
                high = _mm512_add_ps(high, x);
            }
        }
        _mm512_reduce_add_ps(_mm512_add_ps(low, high))
    }

    /// The sum of `row`.
    ///
    /// # Safety
    /// The processor has AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn sum_avx2(row: &[f32]) -> f32 {
        // SAFETY: Forwarded.
        unsafe { sums_avx2(row, |x| x, |x| x) }
    }

    /// The sum of `(x - center)^2` over `row`.
    ///
    /// # Safety
    /// The processor has AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn squared_deviations_avx2(row: &[f32], center: f32) -> f32 {
        let vector_center = _mm256_set1_ps(center);
        let square = |x: __m256| {
            let deviation = _mm256_sub_ps(x, vector_center);
            _mm256_mul_ps(deviation, deviation)
        };
        // SAFETY: Forwarded.
        unsafe { sums_avx2(row, square, |x| (x - center) * (x - center)) }
    }

    /// The sum of `term` over `row`: four accumulators of eight lanes, the last 0 to 31 floats
    /// one at a time (`scalar_term`).
    ///
    /// # Safety
    /// The processor has AVX2.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn sums_avx2(
        row: &[f32],
        term: impl Fn(__m256) -> __m256,
        scalar_term: impl Fn(f32) -> f32,
    ) -> f32 {
        let mut sums = [_mm256_setzero_ps(); 4];
        let (chunks, remainder) = row.as_chunks::<32>();
        for chunk in chunks {
            for (part, sum) in sums.iter_mut().enumerate() {
                // SAFETY: The load reads floats `8 * part..8 * part + 8` of `chunk`.
                let x = unsafe { _mm256_loadu_ps(chunk.as_ptr().add(8 * part)) };
                *sum = _mm256_add_ps(*sum, term(x));
            }
        }
        let total = _mm256_add_ps(
            _mm256_add_ps(sums[0], sums[1]),
            _mm256_add_ps(sums[2], sums[3]),
        );
        let halves = _mm_add_ps(
            _mm256_castps256_ps128(total),
            _mm256_extractf128_ps::<1>(total),
        );
        let mut lanes = [0.0f32; 4];
        // SAFETY: `lanes` holds four floats.
        unsafe { _mm_storeu_ps(lanes.as_mut_ptr(), halves) };
        (lanes[0] + lanes[2])
            + (lanes[1] + lanes[3])
            + remainder.iter().map(|&x| scalar_term(x)).sum::<f32>()
    }
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
            let mut in_place = input.clone();
            layer_norm_in_place(&mut in_place, size, &options).unwrap();
            assert_eq!(in_place, output);
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

    /// Every form of the sums this processor has, against sums in f64, over lengths that end
    /// in each remainder of the 32-float steps (the AVX-512 form's masked loads, the AVX2
    /// form's scalar tail), centred and not.
    #[test]
    fn every_form_of_the_row_sums_matches_f64() {
        let forms = Isa::available();
        assert!(forms.contains(&Isa::detect()));
        for length in 0..=100 {
            let row: Vec<f32> = (0..length)
                .map(|i| ((i * 37) % 101) as f32 / 25.0 - 2.0)
                .collect();
            let sum: f64 = row.iter().map(|&x| f64::from(x)).sum();
            let center = 0.75f32;
            let squares: f64 = row
                .iter()
                .map(|&x| (f64::from(x) - f64::from(center)).powi(2))
                .sum();
            for &form in &forms {
                assert!(
                    (f64::from(row_sum(form, &row)) - sum).abs() <= 1e-4 * (1.0 + sum.abs()),
                    "{form:?}, {length} values"
                );
                let deviations = f64::from(squared_deviations(form, &row, center));
                assert!(
                    (deviations - squares).abs() <= 1e-4 * (1.0 + squares),
                    "{form:?}, {length} values"
                );
            }
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
