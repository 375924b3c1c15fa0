//! The int8 depthwise convolution over channels-last images: each output pixel sums, for each
//! block of channels, `(x_q - zp) * w_q` over the taps inside the image in i32 (padding pixels
//! are at the zero point, so they add nothing), then applies the epilogue to the block while it
//! is in registers. A product fits in i16 (`255 * 127 < 2^15`), so the loop multiplies 16-bit
//! lanes and widens only to add; it is compiled for AVX-512, AVX2 and the baseline. On
//! AVX512-VNNI (with VBMI), kernels of up to 49 taps run `depthwise_vnni`'s row instead, four taps
//! per instruction.

use super::depthwise_vnni::GroupedWeights;
use super::gemm::{GemmOutput, quantize_filter};
use super::quantize::{ConvGeometry, quantize_slice};
use super::{ActivationQuantization, Int8Isa};
use crate::kernels::activation::{Activation, apply_activation_sequential};
use crate::kernels::gemm::Clamp;
use crate::threading;

/// The quantized weights of a depthwise layer.
#[derive(Clone, Debug)]
pub(crate) struct DepthwiseInt8Weights {
    channels: usize,
    /// `[taps][channels]`, widened to i16 for the loop.
    weights: Vec<i16>,
    /// `s_x * s_w[c]`.
    output_scales: Vec<f32>,
    bias: Vec<f32>,
    /// Bytes the weights take stored as int8 with their scales and biases.
    stored_bytes: usize,
    /// The layout of the AVX512-VNNI kernel, for kernels of up to `MAX_GROUPED_TAPS` taps.
    grouped: Option<GroupedWeights>,
}

impl DepthwiseInt8Weights {
    /// Quantizes `[channels, kernel_h * kernel_w]` weights per channel, for inputs quantized
    /// with `input_scale` and `input_zero_point`.
    pub(crate) fn new(
        weight: &[f32],
        channels: usize,
        kernel: [usize; 2],
        bias: Option<&[f32]>,
        input_scale: f32,
        input_zero_point: u8,
    ) -> Self {
        let taps = kernel[0] * kernel[1];
        let mut weights = vec![0i16; taps * channels];
        let mut output_scales = Vec::with_capacity(channels);
        for (channel, filter) in weight.chunks_exact(taps).enumerate() {
            let (scale, quantized) = quantize_filter(filter);
            for (tap, &value) in quantized.iter().enumerate() {
                weights[tap * channels + channel] = i16::from(value);
            }
            output_scales.push(input_scale * scale);
        }
        let bias = bias.map_or_else(|| vec![0.0; channels], <[f32]>::to_vec);
        let grouped = GroupedWeights::new(
            weight,
            channels,
            kernel,
            &output_scales,
            &bias,
            input_zero_point,
        );
        Self {
            channels,
            weights,
            output_scales,
            bias,
            stored_bytes: taps * channels + 8 * channels,
            grouped,
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

/// The most taps a depthwise kernel may have: kernels of more than `MAX_TAPS` keep partial sums
/// in f32, exact while they stay below `2^24` (`512 * 255 * 127 < 2^24`).
pub(crate) const MAX_DEPTHWISE_TAPS: usize = 512;
/// Output elements per parallel task.
const PARALLEL_CHUNK: usize = 1 << 14;
/// Channels one accumulator block holds in registers (four zmm or eight ymm of i32).
const CHANNEL_BLOCK: usize = 64;
/// Taps gathered per round; larger kernels run several rounds.
const MAX_TAPS: usize = 49;

thread_local! {
    /// Each thread's f32 output row of a quantized call; grown once, then reused.
    static ROW: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The depthwise convolution of every image into `output`, `[batch, out_h, out_w, channels]`:
/// f32 values, or bytes quantized for the next int8 layer (pixels `row_stride >= channels`
/// bytes apart; the bytes past `channels` are left as they are), on the pool, a few output rows
/// per task. A quantized output takes no residual.
pub(crate) fn depthwise_forward(
    weights: &DepthwiseInt8Weights,
    call: &DepthwiseCall<'_>,
    output: GemmOutput<'_>,
) {
    let output = match output {
        GemmOutput::Float(output) => output,
        GemmOutput::Quantized {
            bytes,
            row_stride,
            quantization,
        } => return depthwise_quantized(weights, call, bytes, row_stride, quantization),
    };
    let geometry = call.geometry;
    let channels = weights.channels;
    let output_row = geometry.out_w * channels;
    let rows_per_task = threading::balanced_rows_per_task(
        output.len() / output_row.max(1),
        output_row,
        PARALLEL_CHUNK,
    );
    let other_activation = call
        .activation
        .filter(|activation| Clamp::of(*activation).is_none());
    threading::run_chunks_mut(output, rows_per_task * output_row, |chunk_index, rows| {
        for (row_offset, output_values) in rows.chunks_exact_mut(output_row).enumerate() {
            let row = chunk_index * rows_per_task + row_offset;
            let residual = call
                .residual
                .map(|residual| &residual[row * output_row..][..output_row]);
            depthwise_row(weights, call, row, residual, output_values);
            if let Some(activation) = other_activation {
                apply_activation_sequential(output_values, activation);
            }
        }
    });
}

/// [`depthwise_forward`] into bytes: each output row is computed in f32 into the thread's row
/// buffer, by the same code as a float output's, then quantized pixel by pixel.
fn depthwise_quantized(
    weights: &DepthwiseInt8Weights,
    call: &DepthwiseCall<'_>,
    bytes: &mut [u8],
    row_stride: usize,
    quantization: ActivationQuantization,
) {
    let geometry = call.geometry;
    let channels = weights.channels;
    let batch_rows =
        call.images.len() / (geometry.in_h * geometry.in_w * channels).max(1) * geometry.out_h;
    let byte_row = geometry.out_w * row_stride;
    assert!(
        call.residual.is_none() && row_stride >= channels && bytes.len() >= batch_rows * byte_row,
        "int8 depthwise: the quantized output has the wrong size, or a residual"
    );
    let rows_per_task =
        threading::balanced_rows_per_task(batch_rows, geometry.out_w * channels, PARALLEL_CHUNK);
    let other_activation = call
        .activation
        .filter(|activation| Clamp::of(*activation).is_none());
    let bytes = &mut bytes[..batch_rows * byte_row];
    threading::run_chunks_mut(bytes, rows_per_task * byte_row, |chunk_index, rows| {
        ROW.with(|cell| {
            let mut buffer = cell.borrow_mut();
            let values = super::grown(&mut buffer, geometry.out_w * channels);
            for (row_offset, row_bytes) in rows.chunks_exact_mut(byte_row).enumerate() {
                let row = chunk_index * rows_per_task + row_offset;
                if other_activation.is_none() {
                    let output = GemmOutput::Quantized {
                        bytes: row_bytes,
                        row_stride,
                        quantization,
                    };
                    if grouped_row(weights, call, row, None, output) {
                        continue;
                    }
                }
                depthwise_row(weights, call, row, None, values);
                if let Some(activation) = other_activation {
                    apply_activation_sequential(values, activation);
                }
                if row_stride == channels {
                    quantize_slice(values, row_bytes, quantization);
                    continue;
                }
                for (pixel, pixel_bytes) in values
                    .chunks_exact(channels)
                    .zip(row_bytes.chunks_exact_mut(row_stride))
                {
                    quantize_slice(pixel, &mut pixel_bytes[..channels], quantization);
                }
            }
        });
    });
}

/// Output row `row` (of all images' rows) with the epilogue but not the non-clamp activations,
/// compiled for AVX-512 or AVX2 when the processor has them.
fn depthwise_row(
    weights: &DepthwiseInt8Weights,
    call: &DepthwiseCall<'_>,
    row: usize,
    residual: Option<&[f32]>,
    output: &mut [f32],
) {
    if grouped_row(
        weights,
        call,
        row,
        residual,
        GemmOutput::Float(&mut *output),
    ) {
        return;
    }
    match call.isa {
        #[cfg(target_arch = "x86_64")]
        Int8Isa::Avx512Vnni | Int8Isa::Amx if Int8Isa::Avx512Vnni.is_available() => {
            // SAFETY: The processor has AVX512F and BW (checked just above); the body is safe.
            unsafe { depthwise_row_avx512(weights, call, row, residual, output) }
        }
        #[cfg(target_arch = "x86_64")]
        Int8Isa::Avx2 | Int8Isa::Avx512Vnni | Int8Isa::Amx if Int8Isa::Avx2.is_available() => {
            // SAFETY: The processor has AVX2 (checked just above); the body is safe.
            unsafe { depthwise_row_avx2(weights, call, row, residual, output) }
        }
        _ => depthwise_row_body(weights, call, row, residual, output),
    }
}

/// Output row `row` by the AVX512-VNNI grouped kernel, if the call runs on AVX512-VNNI (with
/// VBMI and VL) and the kernel has at most `MAX_GROUPED_TAPS` taps; `false` (and nothing
/// written) otherwise.
fn grouped_row(
    weights: &DepthwiseInt8Weights,
    call: &DepthwiseCall<'_>,
    row: usize,
    residual: Option<&[f32]>,
    output: GemmOutput<'_>,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if let Some(grouped) = &weights.grouped
        && call.isa >= Int8Isa::Avx512Vnni
        && Int8Isa::Avx512Vnni.is_available()
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vbmi")
    {
        // SAFETY: The processor has AVX512F, BW, VL, VBMI and VNNI (checked just above); the
        // kernel checks the sizes.
        unsafe {
            super::depthwise_vnni::grouped_row(
                grouped,
                weights.channels,
                call,
                row,
                residual,
                output,
            )
        };
        return true;
    }
    let _ = (weights, call, row, residual, output);
    false
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
unsafe fn depthwise_row_avx512(
    weights: &DepthwiseInt8Weights,
    call: &DepthwiseCall<'_>,
    row: usize,
    residual: Option<&[f32]>,
    output: &mut [f32],
) {
    depthwise_row_body(weights, call, row, residual, output);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn depthwise_row_avx2(
    weights: &DepthwiseInt8Weights,
    call: &DepthwiseCall<'_>,
    row: usize,
    residual: Option<&[f32]>,
    output: &mut [f32],
) {
    depthwise_row_body(weights, call, row, residual, output);
}

/// One output row. The taps of an interior pixel (every kernel column inside the image) are the
/// same offsets shifted by the pixel's position, listed once per row; border pixels list their
/// own. Each pixel then runs its channels in blocks whose sums stay in registers.
#[inline(always)]
fn depthwise_row_body(
    weights: &DepthwiseInt8Weights,
    call: &DepthwiseCall<'_>,
    row: usize,
    residual: Option<&[f32]>,
    output: &mut [f32],
) {
    let geometry = &call.geometry;
    let channels = weights.channels;
    let (image, out_y) = (row / geometry.out_h, row % geometry.out_h);
    let image_length = geometry.in_h * geometry.in_w * channels;
    let input = &call.images[image * image_length..][..image_length];
    let [kernel_h, kernel_w] = geometry.kernel;
    let clamp = call.activation.and_then(Clamp::of).unwrap_or_default();
    let pixel_call = PixelCall {
        weights,
        zero_point: call.zero_point,
        clamp,
    };
    let interior = if kernel_h * kernel_w <= MAX_TAPS {
        geometry.interior_columns()
    } else {
        0..0
    };
    let mut relative_taps = [(0usize, 0usize); MAX_TAPS];
    let mut count = 0;
    if !interior.is_empty() {
        for kernel_y in 0..kernel_h {
            let Some(input_y) = geometry.input_row(out_y, kernel_y) else {
                continue;
            };
            for kernel_x in 0..kernel_w {
                relative_taps[count] = (
                    (input_y * geometry.in_w + kernel_x * geometry.dilation[1]) * channels,
                    (kernel_y * kernel_w + kernel_x) * channels,
                );
                count += 1;
            }
        }
    }
    let relative_taps = &relative_taps[..count];
    for (out_x, pixel) in output.chunks_exact_mut(channels).enumerate() {
        let residual = residual.map(|residual| &residual[out_x * channels..][..channels]);
        if interior.contains(&out_x) {
            let base = (out_x * geometry.stride[1] - geometry.padding[1]) * channels;
            pixel_output(&pixel_call, &input[base..], relative_taps, residual, pixel);
            continue;
        }
        let mut taps = [(0usize, 0usize); MAX_TAPS];
        let mut count = 0;
        let mut first_round = true;
        for kernel_y in 0..kernel_h {
            let Some(input_y) = geometry.input_row(out_y, kernel_y) else {
                continue;
            };
            for kernel_x in 0..kernel_w {
                let Some(input_x) = geometry.input_column(out_x, kernel_x) else {
                    continue;
                };
                taps[count] = (
                    (input_y * geometry.in_w + input_x) * channels,
                    (kernel_y * kernel_w + kernel_x) * channels,
                );
                count += 1;
                if count == MAX_TAPS {
                    // A kernel of more than MAX_TAPS taps: the first rounds add into the output,
                    // which the last round's epilogue then reads back (see `pixel_output`).
                    pixel_sums_into(&pixel_call, input, &taps, first_round, pixel);
                    first_round = false;
                    count = 0;
                }
            }
        }
        if first_round {
            pixel_output(&pixel_call, input, &taps[..count], residual, pixel);
        } else {
            pixel_sums_into(&pixel_call, input, &taps[..count], false, pixel);
            finish_from_sums(&pixel_call, residual, pixel);
        }
    }
}

/// What each pixel of a call needs.
struct PixelCall<'a> {
    weights: &'a DepthwiseInt8Weights,
    zero_point: u8,
    clamp: Clamp,
}

/// One pixel from its taps `(input offset, weight offset)`, blocks of channels at a time, with
/// the epilogue.
#[inline(always)]
fn pixel_output(
    call: &PixelCall<'_>,
    input: &[u8],
    taps: &[(usize, usize)],
    residual: Option<&[f32]>,
    pixel: &mut [f32],
) {
    let channels = pixel.len();
    let mut start = 0;
    while start + CHANNEL_BLOCK <= channels {
        block_output::<CHANNEL_BLOCK>(call, input, taps, residual, pixel, start);
        start += CHANNEL_BLOCK;
    }
    while start + 16 <= channels {
        block_output::<16>(call, input, taps, residual, pixel, start);
        start += 16;
    }
    while start < channels {
        block_output::<1>(call, input, taps, residual, pixel, start);
        start += 1;
    }
}

/// Channels `start..start + N` of a pixel: i32 sums of `(x - zp) * w`, each product exact in
/// i16, then `clamp(sum * s_x * s_w[c] + bias[c] (+ residual[c]))`.
#[inline(always)]
fn block_output<const N: usize>(
    call: &PixelCall<'_>,
    input: &[u8],
    taps: &[(usize, usize)],
    residual: Option<&[f32]>,
    pixel: &mut [f32],
    start: usize,
) {
    let sums = block_sums::<N>(call, input, taps, start);
    let weights = call.weights;
    let scales: &[f32; N] = weights.output_scales[start..][..N]
        .try_into()
        .expect("the block has N channels");
    let bias: &[f32; N] = weights.bias[start..][..N]
        .try_into()
        .expect("the block has N channels");
    let output: &mut [f32; N] = (&mut pixel[start..][..N])
        .try_into()
        .expect("the block has N channels");
    match residual {
        Some(residual) => {
            let residual: &[f32; N] = residual[start..][..N]
                .try_into()
                .expect("the block has N channels");
            for lane in 0..N {
                let value = sums[lane] as f32 * scales[lane] + bias[lane];
                output[lane] = call.clamp.apply(value + residual[lane]);
            }
        }
        None => {
            for lane in 0..N {
                output[lane] = call
                    .clamp
                    .apply(sums[lane] as f32 * scales[lane] + bias[lane]);
            }
        }
    }
}

#[inline(always)]
fn block_sums<const N: usize>(
    call: &PixelCall<'_>,
    input: &[u8],
    taps: &[(usize, usize)],
    start: usize,
) -> [i32; N] {
    let zero_point = i16::from(call.zero_point);
    let mut sums = [0i32; N];
    for &(input_offset, weight_offset) in taps {
        let inputs: &[u8; N] = input[input_offset + start..][..N]
            .try_into()
            .expect("the block has N channels");
        let weights: &[i16; N] = call.weights.weights[weight_offset + start..][..N]
            .try_into()
            .expect("the block has N channels");
        for lane in 0..N {
            // |x - zp| <= 255 and |w| <= 127: the product fits in i16.
            let product = (i16::from(inputs[lane]) - zero_point).wrapping_mul(weights[lane]);
            sums[lane] += i32::from(product);
        }
    }
    sums
}

/// For kernels of more than `MAX_TAPS` taps: the sums of `taps`, added to (or, on the first
/// round, stored in) `pixel`, which holds them as f32 (exact: every partial sum of a pixel is
/// below `2^24` for kernels of at most `MAX_DEPTHWISE_TAPS` taps, which the layer checks).
fn pixel_sums_into(
    call: &PixelCall<'_>,
    input: &[u8],
    taps: &[(usize, usize)],
    first_round: bool,
    pixel: &mut [f32],
) {
    for (channel, value) in pixel.iter_mut().enumerate() {
        let sum = block_sums::<1>(call, input, taps, channel)[0] as f32;
        *value = if first_round { sum } else { *value + sum };
    }
}

/// The epilogue of a pixel whose sums `pixel_sums_into` left in it.
fn finish_from_sums(call: &PixelCall<'_>, residual: Option<&[f32]>, pixel: &mut [f32]) {
    let weights = call.weights;
    for (channel, value) in pixel.iter_mut().enumerate() {
        let mut result = *value * weights.output_scales[channel] + weights.bias[channel];
        if let Some(residual) = residual {
            result += residual[channel];
        }
        *value = call.clamp.apply(result);
    }
}
