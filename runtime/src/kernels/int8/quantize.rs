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

    /// The output columns whose every kernel column reads inside the image (the first and the
    /// last kernel column do, so the ones between do too).
    pub(crate) fn interior_columns(&self) -> std::ops::Range<usize> {
        let valid = |kernel_x: usize| {
            crate::kernels::conv::valid_output_range(
                self.out_w,
                self.stride[1],
                kernel_x * self.dilation[1],
                self.padding[1],
                self.in_w,
            )
        };
        let (first, last) = (valid(0), valid(self.kernel[1] - 1));
        first.start.max(last.start)..first.end.min(last.end)
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
        if channels < 8 {
            // A stem's few channels: inline, where calls of the vector loop (which would do
            // them one by one) and of `memset` cost more than the values.
            for (value, &x) in values.iter_mut().zip(row) {
                *value = quantization.quantize(x);
            }
        } else {
            quantize_slice(row, values, quantization);
        }
        for byte in padding {
            *byte = 0;
        }
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

/// Thirty-two values at a time: `x * (1 / scale)` rounded to the nearest even (`vroundps`), plus
/// the zero point, clamped to `0..=255` in f32 (`max` first, with 0 as its second operand, so NaN
/// becomes 0 as in the scalar function), converted exactly and packed to bytes. Every step is
/// the scalar function's, so the bytes are the same.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_slice_avx2(
    input: &[f32],
    output: &mut [u8],
    quantization: ActivationQuantization,
) {
    use std::arch::x86_64::*;
    let length = input.len().min(output.len());
    let inverse_scale = _mm256_set1_ps(quantization.inverse_scale());
    let zero_point = _mm256_set1_ps(f32::from(quantization.zero_point));
    let (zero, top) = (_mm256_setzero_ps(), _mm256_set1_ps(255.0));
    let one = |pointer: *const f32| {
        // SAFETY: The callers below pass pointers to eight values inside `input`.
        let values = unsafe { _mm256_loadu_ps(pointer) };
        let rounded = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(values, inverse_scale),
        );
        let shifted = _mm256_add_ps(rounded, zero_point);
        _mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(shifted, zero), top))
    };
    let mut index = 0;
    while index + 32 <= length {
        let pointer = input[index..].as_ptr();
        // SAFETY: `index + 32 <= length`: the four loads read values `index..index + 32`.
        let (a, b, c, d) = unsafe {
            (
                one(pointer),
                one(pointer.add(8)),
                one(pointer.add(16)),
                one(pointer.add(24)),
            )
        };
        // Packing works within 128-bit lanes; the permute puts the dwords back in order.
        let packed = _mm256_packus_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
        let ordered =
            _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        // SAFETY: `output[index..index + 32]` is inside `output`.
        unsafe { _mm256_storeu_si256(output[index..].as_mut_ptr().cast(), ordered) };
        index += 32;
    }
    // Eight at a time for the rest (a row of 24 channels, a tile of 16 columns): the scalar
    // function rounds through a call of `rintf` per value.
    while index + 8 <= length {
        // `index + 8 <= length`: `one` reads values `index..index + 8`.
        let values = one(input[index..].as_ptr());
        // Packing works within 128-bit lanes: each lane's four bytes end up in its low dword.
        let bytes = _mm256_packus_epi16(
            _mm256_packs_epi32(values, values),
            _mm256_packs_epi32(values, values),
        );
        let ordered = _mm_unpacklo_epi32(
            _mm256_castsi256_si128(bytes),
            _mm256_extracti128_si256::<1>(bytes),
        );
        // SAFETY: `output[index..index + 8]` is inside `output`; the store writes 8 bytes.
        unsafe { _mm_storel_epi64(output[index..].as_mut_ptr().cast(), ordered) };
        index += 8;
    }
    quantize_slice_body(
        &input[index..length],
        &mut output[index..length],
        quantization,
    );
}

#[inline(always)]
fn quantize_slice_body(input: &[f32], output: &mut [u8], quantization: ActivationQuantization) {
    for (out, &x) in output.iter_mut().zip(input) {
        *out = quantization.quantize(x);
    }
}

/// `destination.copy_from_slice(source)`, inlined for the short runs of an image with few
/// channels: a stem's kernel row is 7 taps of 3 bytes, 21 bytes, and a call of `memcpy` for each
/// (88,000 per image on ResNet-18's stem) cost more than the products. Runs of 8 to 32 bytes are
/// two overlapping fixed-size copies; longer ones go to `memcpy`.
#[inline(always)]
pub(super) fn copy_run(destination: &mut [u8], source: &[u8]) {
    let length = source.len();
    assert_eq!(destination.len(), length, "copy_run: lengths differ");
    fn overlapping<const N: usize>(destination: &mut [u8], source: &[u8]) {
        let length = source.len();
        let head: [u8; N] = source[..N].try_into().expect("N <= length");
        let tail: [u8; N] = source[length - N..].try_into().expect("N <= length");
        destination[..N].copy_from_slice(&head);
        destination[length - N..].copy_from_slice(&tail);
    }
    match length {
        16..=32 => overlapping::<16>(destination, source),
        8..16 => overlapping::<8>(destination, source),
        33.. => destination.copy_from_slice(source),
        _ => {
            for (to, &from) in destination.iter_mut().zip(source) {
                *to = from;
            }
        }
    }
}

/// Kernel rows whose input rows `im2col` finds once per output row (taller kernels find them
/// per pixel).
const MAX_IM2COL_KERNEL_ROWS: usize = 16;

/// The im2col rows of one quantized channels-last image `[in_h, in_w, channels]` from output
/// pixel `first_pixel` on: row `p` of `columns` (`row_stride` bytes) is the patch under output
/// pixel `first_pixel + p`, ordered `(ky, kx, c)`, with `zero_point` where the patch hangs over
/// the padding and zeros after the patch. Rows run out with `columns` or with the image's
/// output pixels, whichever comes first, so that tasks can each fill a share of the rows.
pub(crate) fn im2col(
    image: &[u8],
    channels: usize,
    geometry: &ConvGeometry,
    zero_point: u8,
    row_stride: usize,
    first_pixel: usize,
    columns: &mut [u8],
) {
    let [kernel_h, kernel_w] = geometry.kernel;
    let tap_row = kernel_w * channels;
    let patch = kernel_h * tap_row;
    let out_w = geometry.out_w;
    let pixels = (geometry.out_h * out_w).saturating_sub(first_pixel);
    // With unit dilation, the kernel rows of the output columns in `whole` read one contiguous
    // run of the image each.
    let whole = if geometry.dilation[1] == 1 {
        geometry.interior_columns()
    } else {
        0..0
    };
    let row_length = geometry.in_w * channels;
    let mut rows = columns.chunks_exact_mut(row_stride).take(pixels);
    let (mut out_y, mut out_x) = (first_pixel / out_w.max(1), first_pixel % out_w.max(1));
    while let Some(row) = rows.next() {
        // The output row's kernel rows, found once for its pixels.
        let mut image_rows = [None; MAX_IM2COL_KERNEL_ROWS];
        let cached = kernel_h <= MAX_IM2COL_KERNEL_ROWS;
        if cached {
            for (kernel_y, image_row) in image_rows.iter_mut().enumerate().take(kernel_h) {
                *image_row = geometry
                    .input_row(out_y, kernel_y)
                    .map(|input_y| &image[input_y * row_length..][..row_length]);
            }
        }
        let mut row = Some(row);
        while let Some(current) = row {
            let (patch_values, tail) = current.split_at_mut(patch);
            // A few bytes (the patch rounded up to whole groups of k): no call of `memset`.
            for byte in tail {
                *byte = 0;
            }
            for (kernel_y, values) in patch_values.chunks_exact_mut(tap_row).enumerate() {
                let image_row = if cached {
                    image_rows[kernel_y]
                } else {
                    geometry
                        .input_row(out_y, kernel_y)
                        .map(|input_y| &image[input_y * row_length..][..row_length])
                };
                let Some(image_row) = image_row else {
                    values.fill(zero_point);
                    continue;
                };
                if whole.contains(&out_x) {
                    let start = out_x * geometry.stride[1] - geometry.padding[1];
                    copy_run(values, &image_row[start * channels..][..tap_row]);
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
            out_x += 1;
            if out_x == out_w {
                (out_y, out_x) = (out_y + 1, 0);
                break;
            }
            row = rows.next();
        }
    }
}
