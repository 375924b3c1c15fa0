//! The input side of an int8 convolution: f32 images quantized to u8 (channels-last, from either
//! layout), and the im2col rows of a quantized image, with padding pixels at the zero point.

use super::ActivationQuantization;

/// Where the output pixels of one image read their input, for the im2col and depthwise loops.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConvGeometry {
    pub(crate) in_h: usize,
    pub(crate) in_w: usize,
    pub(crate) out_h: usize,
    pub(crate) out_w: usize,
    pub(crate) kernel: [usize; 2],
    pub(crate) stride: [usize; 2],
    pub(crate) padding: [usize; 2],
    pub(crate) dilation: [usize; 2],
}

impl ConvGeometry {
    /// The input row that output row `out_y` reads through kernel row `kernel_y`, if inside.
    pub(crate) fn input_row(&self, out_y: usize, kernel_y: usize) -> Option<usize> {
        (out_y * self.stride[0] + kernel_y * self.dilation[0])
            .checked_sub(self.padding[0])
            .filter(|&row| row < self.in_h)
    }

    /// The input column that output column `out_x` reads through kernel column `kernel_x`, if
    /// inside.
    pub(crate) fn input_column(&self, out_x: usize, kernel_x: usize) -> Option<usize> {
        (out_x * self.stride[1] + kernel_x * self.dilation[1])
            .checked_sub(self.padding[1])
            .filter(|&column| column < self.in_w)
    }
}

/// Quantizes `input`, `pixels` rows of `channels` values (channels-last), into `output`, rows of
/// `row_stride >= channels` bytes whose extra bytes are zero.
pub(crate) fn quantize_rows(
    input: &[f32],
    channels: usize,
    row_stride: usize,
    quantization: ActivationQuantization,
    output: &mut [u8],
) {
    if row_stride == channels {
        quantize_slice(input, &mut output[..input.len()], quantization);
        return;
    }
    for (row, output_row) in input
        .chunks_exact(channels)
        .zip(output.chunks_exact_mut(row_stride))
    {
        let (values, padding) = output_row.split_at_mut(channels);
        quantize_slice(row, values, quantization);
        padding.fill(0);
    }
}

/// Quantizes one NCHW image, `[channels, pixels]`, into channels-last rows of `row_stride` bytes
/// (extra bytes zero): the transpose happens on the way, a block of pixels at a time so that
/// the reads of every channel plane stay in cache.
pub(crate) fn quantize_rows_from_planes(
    input: &[f32],
    channels: usize,
    row_stride: usize,
    quantization: ActivationQuantization,
    output: &mut [u8],
) {
    const PIXEL_BLOCK: usize = 64;
    let pixels = input.len() / channels.max(1);
    let mut values = [0.0f32; PIXEL_BLOCK];
    let mut bytes = [0u8; PIXEL_BLOCK];
    for block_start in (0..pixels).step_by(PIXEL_BLOCK) {
        let block = PIXEL_BLOCK.min(pixels - block_start);
        for channel in 0..channels {
            values[..block].copy_from_slice(&input[channel * pixels + block_start..][..block]);
            quantize_slice(&values[..block], &mut bytes[..block], quantization);
            for (pixel, &byte) in bytes[..block].iter().enumerate() {
                output[(block_start + pixel) * row_stride + channel] = byte;
            }
        }
        for pixel in block_start..block_start + block {
            output[pixel * row_stride + channels..(pixel + 1) * row_stride].fill(0);
        }
    }
}

/// `output[i] = quantization.quantize(input[i])`, vectorised where the processor allows.
pub(crate) fn quantize_slice(
    input: &[f32],
    output: &mut [u8],
    quantization: ActivationQuantization,
) {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::vectorize::has_avx2_fma() {
        // SAFETY: The processor has AVX2 and FMA (checked just above); the body is safe.
        unsafe { quantize_slice_avx2(input, output, quantization) };
        return;
    }
    quantize_slice_body(input, output, quantization);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_slice_avx2(
    input: &[f32],
    output: &mut [u8],
    quantization: ActivationQuantization,
) {
    quantize_slice_body(input, output, quantization);
}

#[inline(always)]
fn quantize_slice_body(input: &[f32], output: &mut [u8], quantization: ActivationQuantization) {
    for (out, &x) in output.iter_mut().zip(input) {
        *out = quantization.quantize(x);
    }
}

/// The im2col rows of one quantized channels-last image `[in_h, in_w, channels]`: row `p` of
/// `columns` (`row_stride` bytes) is the patch under output pixel `p`, ordered `(ky, kx, c)`,
/// with `zero_point` where the patch hangs over the padding and zeros after the patch.
pub(crate) fn im2col(
    image: &[u8],
    channels: usize,
    geometry: &ConvGeometry,
    zero_point: u8,
    row_stride: usize,
    columns: &mut [u8],
) {
    let [kernel_h, kernel_w] = geometry.kernel;
    let tap_row = kernel_w * channels;
    let patch = kernel_h * tap_row;
    for (pixel, row) in columns
        .chunks_exact_mut(row_stride)
        .take(geometry.out_h * geometry.out_w)
        .enumerate()
    {
        let (out_y, out_x) = (pixel / geometry.out_w, pixel % geometry.out_w);
        let (patch_values, tail) = row.split_at_mut(patch);
        tail.fill(0);
        // With unit dilation, a kernel row's taps inside the image are one contiguous run.
        let whole_row = geometry.dilation[1] == 1
            && geometry.input_column(out_x, 0).is_some()
            && geometry.input_column(out_x, kernel_w - 1).is_some();
        for (kernel_y, values) in patch_values.chunks_exact_mut(tap_row).enumerate() {
            let Some(input_y) = geometry.input_row(out_y, kernel_y) else {
                values.fill(zero_point);
                continue;
            };
            let image_row =
                &image[input_y * geometry.in_w * channels..][..geometry.in_w * channels];
            if whole_row {
                let start = out_x * geometry.stride[1] - geometry.padding[1];
                values.copy_from_slice(&image_row[start * channels..][..tap_row]);
                continue;
            }
            for (kernel_x, tap) in values.chunks_exact_mut(channels).enumerate() {
                match geometry.input_column(out_x, kernel_x) {
                    Some(input_x) => {
                        tap.copy_from_slice(&image_row[input_x * channels..][..channels])
                    }
                    None => tap.fill(zero_point),
                }
            }
        }
    }
}
