//! The int8 depthwise convolution over channels-last images: each output pixel sums, for each
//! block of channels, `(x_q - zp) * w_q` over the taps inside the image in i32 (padding pixels
//! are at the zero point, so they add nothing), and the shared epilogue turns the sums to f32.
//! A product fits in i16 (`255 * 127 < 2^15`), so the vectorised loop is cheap on every ISA.

use super::Int8Isa;
use super::gemm::quantize_filter;
use super::kernels::epilogue_row;
use super::quantize::ConvGeometry;
use crate::kernels::activation::{Activation, apply_activation_sequential};
use crate::kernels::gemm::Clamp;
use crate::threading;

/// The quantized weights of a depthwise layer.
#[derive(Clone, Debug)]
pub(crate) struct DepthwiseInt8Weights {
    channels: usize,
    /// `[taps][channels]`, widened to i32 for the loop.
    weights: Vec<i32>,
    /// `s_x * s_w[c]`.
    output_scales: Vec<f32>,
    bias: Vec<f32>,
    /// Zeros: the depthwise sums need no zero point correction.
    no_corrections: Vec<i32>,
    /// Bytes the weights take stored as int8 with their scales and biases.
    stored_bytes: usize,
}

impl DepthwiseInt8Weights {
    /// Quantizes `[channels, taps]` weights per channel.
    pub(crate) fn new(
        weight: &[f32],
        channels: usize,
        taps: usize,
        bias: Option<&[f32]>,
        input_scale: f32,
    ) -> Self {
        let mut weights = vec![0i32; taps * channels];
        let mut output_scales = Vec::with_capacity(channels);
        for (channel, filter) in weight.chunks_exact(taps).enumerate() {
            let (scale, quantized) = quantize_filter(filter);
            for (tap, &value) in quantized.iter().enumerate() {
                weights[tap * channels + channel] = i32::from(value);
            }
            output_scales.push(input_scale * scale);
        }
        Self {
            channels,
            weights,
            output_scales,
            bias: bias.map_or_else(|| vec![0.0; channels], <[f32]>::to_vec),
            no_corrections: vec![0; channels],
            stored_bytes: taps * channels + 8 * channels,
        }
    }

    pub(crate) fn bytes(&self) -> usize {
        self.stored_bytes
    }
}

/// What one depthwise call reads besides the weights.
pub(crate) struct DepthwiseCall<'a> {
    pub(crate) isa: Int8Isa,
    /// The quantized images, `[batch, in_h, in_w, channels]`.
    pub(crate) images: &'a [u8],
    pub(crate) geometry: ConvGeometry,
    pub(crate) zero_point: u8,
    /// Shaped like the output, or `None`.
    pub(crate) residual: Option<&'a [f32]>,
    pub(crate) activation: Option<Activation>,
}

/// Output elements per parallel task.
const PARALLEL_CHUNK: usize = 1 << 14;
/// Channels summed in one stack block.
const CHANNEL_BLOCK: usize = 64;
/// Taps gathered per round; larger kernels run several rounds.
const MAX_TAPS: usize = 49;

/// The depthwise convolution of every image into `output`, `[batch, out_h, out_w, channels]`.
pub(crate) fn depthwise_forward(
    weights: &DepthwiseInt8Weights,
    call: &DepthwiseCall<'_>,
    output: &mut [f32],
) {
    let geometry = call.geometry;
    let channels = weights.channels;
    let output_row = geometry.out_w * channels;
    let image_length = geometry.in_h * geometry.in_w * channels;
    let rows_per_task = threading::balanced_rows_per_task(
        output.len() / output_row.max(1),
        output_row,
        PARALLEL_CHUNK,
    );
    let clamp = call.activation.and_then(Clamp::of).unwrap_or_default();
    let other_activation = call
        .activation
        .filter(|activation| Clamp::of(*activation).is_none());
    threading::run_chunks_mut(output, rows_per_task * output_row, |chunk_index, rows| {
        for (row_offset, output_values) in rows.chunks_exact_mut(output_row).enumerate() {
            let row = chunk_index * rows_per_task + row_offset;
            let (image, out_y) = (row / geometry.out_h, row % geometry.out_h);
            let image_values = &call.images[image * image_length..][..image_length];
            for (out_x, pixel) in output_values.chunks_exact_mut(channels).enumerate() {
                let residual = call
                    .residual
                    .map(|residual| &residual[row * output_row + out_x * channels..][..channels]);
                let mut taps = [(0usize, 0usize); MAX_TAPS];
                let mut count = 0;
                let mut sums = [0i32; CHANNEL_BLOCK];
                for start in (0..channels).step_by(CHANNEL_BLOCK) {
                    let block = CHANNEL_BLOCK.min(channels - start);
                    sums[..block].fill(0);
                    for kernel_y in 0..geometry.kernel[0] {
                        let Some(input_y) = geometry.input_row(out_y, kernel_y) else {
                            continue;
                        };
                        for kernel_x in 0..geometry.kernel[1] {
                            let Some(input_x) = geometry.input_column(out_x, kernel_x) else {
                                continue;
                            };
                            taps[count] = (
                                (input_y * geometry.in_w + input_x) * channels + start,
                                (kernel_y * geometry.kernel[1] + kernel_x) * channels + start,
                            );
                            count += 1;
                            if count == MAX_TAPS {
                                accumulate(call, weights, &taps, &mut sums[..block], image_values);
                                count = 0;
                            }
                        }
                    }
                    accumulate(
                        call,
                        weights,
                        &taps[..count],
                        &mut sums[..block],
                        image_values,
                    );
                    count = 0;
                    let columns = start..start + block;
                    let output_block = &mut pixel[columns.clone()];
                    epilogue_row(
                        &sums[..block],
                        &weights.no_corrections[columns.clone()],
                        &weights.output_scales[columns.clone()],
                        &weights.bias[columns.clone()],
                        residual.map(|residual| &residual[columns.clone()]),
                        clamp,
                        output_block,
                    );
                }
                if let Some(activation) = other_activation {
                    apply_activation_sequential(pixel, activation);
                }
            }
        }
    });
}

/// `sums[j] += sum over taps (image[i + j] - zp) * weights[w + j]` for the taps' `(i, w)`.
fn accumulate(
    call: &DepthwiseCall<'_>,
    weights: &DepthwiseInt8Weights,
    taps: &[(usize, usize)],
    sums: &mut [i32],
    image: &[u8],
) {
    let zero_point = i32::from(call.zero_point);
    let weights = &weights.weights[..];
    match call.isa {
        #[cfg(target_arch = "x86_64")]
        Int8Isa::Avx512Vnni if Int8Isa::Avx512Vnni.is_available() => {
            // SAFETY: The processor has AVX512F and BW (checked just above); the body is safe.
            unsafe { accumulate_avx512(taps, sums, image, weights, zero_point) }
        }
        #[cfg(target_arch = "x86_64")]
        Int8Isa::Avx2 | Int8Isa::Avx512Vnni if Int8Isa::Avx2.is_available() => {
            // SAFETY: The processor has AVX2 (checked just above); the body is safe.
            unsafe { accumulate_avx2(taps, sums, image, weights, zero_point) }
        }
        _ => accumulate_body(taps, sums, image, weights, zero_point),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn accumulate_avx512(
    taps: &[(usize, usize)],
    sums: &mut [i32],
    image: &[u8],
    weights: &[i32],
    zero_point: i32,
) {
    accumulate_body(taps, sums, image, weights, zero_point);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn accumulate_avx2(
    taps: &[(usize, usize)],
    sums: &mut [i32],
    image: &[u8],
    weights: &[i32],
    zero_point: i32,
) {
    accumulate_body(taps, sums, image, weights, zero_point);
}

#[inline(always)]
fn accumulate_body(
    taps: &[(usize, usize)],
    sums: &mut [i32],
    image: &[u8],
    weights: &[i32],
    zero_point: i32,
) {
    let block = sums.len();
    for &(input_offset, weight_offset) in taps {
        let inputs = &image[input_offset..][..block];
        let weights = &weights[weight_offset..][..block];
        for ((sum, &x), &w) in sums.iter_mut().zip(inputs).zip(weights) {
            *sum += (i32::from(x) - zero_point) * w;
        }
    }
}
