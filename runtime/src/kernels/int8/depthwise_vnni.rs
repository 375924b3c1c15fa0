//! The AVX512-VNNI depthwise row: sixteen channels of one output pixel per zmm accumulator,
//! four taps per instruction.
//!
//! Taps are grouped by kernel row, four kernel columns a group (a 3x3 kernel has three groups,
//! each of three taps and a zero weight). For a group, `vpdpbusd` adds `sum_t x_t[c] * w_t[c]`
//! to lane `c` exactly (u8 times s8, summed in i32) once the four taps' bytes are interleaved
//! channel by channel (`x_0[c], x_1[c], x_2[c], x_3[c]`). The weights are stored in that layout
//! once, at load ([`GroupedWeights`]). The zero point comes out through the accumulator's start,
//! `-zp * sum_t w_t[c]`, so the loop multiplies the raw bytes; a tap outside the image reads a
//! row of zero-point bytes (adding `zp * w`, which the start takes back: a padding pixel adds
//! nothing, as in the reference).
//!
//! The interleaving is the work. Each pixel computes its tap pointers once (an interior pixel
//! adds its position to the row's offsets) and then runs its channels 32 at a time: per group,
//! two registers hold taps 0 and 1 and taps 2 and 3 (32 bytes each, one load and one insert),
//! and one `vpermt2b` per sixteen channels picks and interleaves them. The last sixteen (or
//! fewer, with masks) gather the four taps' bytes into the lanes of one register and interleave
//! them with one `vpermb`.
//!
//! The interior pixels of a row written as bytes for the next layer (MobileNetV2's depthwise
//! layers), for kernels of at most four columns, run block by block instead
//! ([`interior_blocks`]): each block of 32 channels goes over the whole row with its epilogue
//! constants in registers (its weights, 64 bytes a kernel row and half, are read from L1 as
//! `vpdpbusd`'s memory operand), a pixel's taps are its row pointers plus its column, and a
//! 3x3 kernel's loop is unrolled for its size (the third column's 32 bytes fill the second
//! register alone). MobileNetV2's 3x3 layers at 112x112x32 and 56x56x144: 206 and 208 us per
//! pixel, 110 and 145 us by blocks (`int8_conv_timing --bytes`, one thread).
//!
//! The epilogue runs in registers: `sum * s_x * s_w[c] + bias[c]` (a multiply then an add, as
//! the other instruction sets compute it), the residual, the clamp, and for a quantized output
//! the next layer's quantization, stored as bytes (with the clamp's steps that change no byte
//! left out, as `kernels::Quantizer` says).

use super::depthwise::DepthwiseCall;
use super::gemm::{GemmOutput, quantize_filter};
use super::quantize::ConvGeometry;
use crate::alloc::AlignedBuffer;
use crate::kernels::gemm::Clamp;

/// The most taps the grouped kernel takes (a 7x7 kernel); larger kernels run the generic loop.
pub(super) const MAX_GROUPED_TAPS: usize = 49;
/// Channels of one accumulator.
const LANES: usize = 16;
/// Taps of one `vpdpbusd`.
const GROUP: usize = 4;
/// The most groups of a kernel: one per kernel row of a 49x1 kernel.
const MAX_GROUPS: usize = MAX_GROUPED_TAPS;

/// A depthwise layer's weights in the grouped layout, with what the epilogue reads, all padded
/// to a multiple of [`LANES`] channels (zero weights, scales and biases past the last channel).
#[derive(Clone, Debug)]
pub(super) struct GroupedWeights {
    /// Channels rounded up to [`LANES`].
    padded_channels: usize,
    /// Kernel columns of the layer.
    kernel_w: usize,
    /// `[kernel row][group of the row][channel][GROUP]`: kernel columns `4 g..4 g + 4` of each
    /// channel (zero past the last column), on a cache line (a group of sixteen channels is 64
    /// bytes, one line).
    groups: AlignedBuffer<i8>,
    /// `-zero_point * sum_t w_t[c]`, where each pixel's sums start.
    starts: Vec<i32>,
    /// `s_x * s_w[c]`.
    output_scales: Vec<f32>,
    bias: Vec<f32>,
    /// The input's zero point, the value of every byte of `zero_row`.
    zero_point: u8,
    /// `padded_channels` bytes at the zero point, which taps outside the image read.
    zero_row: Vec<u8>,
}

impl GroupedWeights {
    /// The grouped layout of `[channels, kernel_h * kernel_w]` f32 weights (quantized per
    /// channel as `quantize_filter` does), or `None` for a kernel of more than
    /// [`MAX_GROUPED_TAPS`] taps.
    pub(super) fn new(
        weight: &[f32],
        channels: usize,
        [kernel_h, kernel_w]: [usize; 2],
        output_scales: &[f32],
        bias: &[f32],
        zero_point: u8,
    ) -> Option<Self> {
        let taps = kernel_h * kernel_w;
        if taps == 0 || taps > MAX_GROUPED_TAPS {
            return None;
        }
        let padded_channels = channels.next_multiple_of(LANES);
        let row_groups = kernel_w.div_ceil(GROUP);
        let mut groups = AlignedBuffer::zeroed(kernel_h * row_groups * padded_channels * GROUP);
        let mut starts = vec![0i32; padded_channels];
        for (channel, filter) in weight.chunks_exact(taps).enumerate() {
            let (_, quantized) = quantize_filter(filter);
            for (tap, &value) in quantized.iter().enumerate() {
                let (kernel_y, kernel_x) = (tap / kernel_w, tap % kernel_w);
                let group = kernel_y * row_groups + kernel_x / GROUP;
                groups[(group * padded_channels + channel) * GROUP + kernel_x % GROUP] = value;
            }
            let sum: i32 = quantized.iter().map(|&value| i32::from(value)).sum();
            starts[channel] = -i32::from(zero_point) * sum;
        }
        let padded = |values: &[f32]| {
            let mut padded = values.to_vec();
            padded.resize(padded_channels, 0.0);
            padded
        };
        Some(Self {
            padded_channels,
            kernel_w,
            groups,
            starts,
            output_scales: padded(output_scales),
            bias: padded(bias),
            zero_point,
            zero_row: vec![zero_point; padded_channels],
        })
    }
}

/// Output row `row` (of all images' rows) through the epilogue with the clamp of
/// `call.activation` (other activations are the caller's), into `output`; `residual` is the
/// row's residual (f32 outputs only).
///
/// # Safety
/// The processor has AVX512F, BW, VL, VBMI and VNNI. (The sizes are checked.)
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni")]
pub(super) unsafe fn grouped_row(
    weights: &GroupedWeights,
    channels: usize,
    call: &DepthwiseCall<'_>,
    row: usize,
    residual: Option<&[f32]>,
    output: GemmOutput<'_>,
) {
    let zero_point = match &output {
        GemmOutput::Quantized { quantization, .. } => quantization.zero_point != 0,
        GemmOutput::Float(_) => false,
    };
    // SAFETY: Passed on from the caller.
    unsafe {
        if zero_point {
            grouped_row_with::<true>(weights, channels, call, row, residual, output);
        } else {
            grouped_row_with::<false>(weights, channels, call, row, residual, output);
        }
    }
}

/// [`grouped_row`], for a quantized output whose zero point is not 0 when `ZERO_POINT` (see
/// `kernels::Quantizer`).
///
/// # Safety
/// As [`grouped_row`].
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni")]
unsafe fn grouped_row_with<const ZERO_POINT: bool>(
    weights: &GroupedWeights,
    channels: usize,
    call: &DepthwiseCall<'_>,
    row: usize,
    residual: Option<&[f32]>,
    output: GemmOutput<'_>,
) {
    use std::arch::x86_64::*;

    let geometry: &ConvGeometry = &call.geometry;
    let (image, out_y) = (row / geometry.out_h, row % geometry.out_h);
    let image_length = geometry.in_h * geometry.in_w * channels;
    let input = &call.images[image * image_length..][..image_length];
    let [kernel_h, kernel_w] = geometry.kernel;
    let row_groups = kernel_w.div_ceil(GROUP);
    let group_count = kernel_h * row_groups;
    assert!(
        (1..=MAX_GROUPED_TAPS).contains(&(kernel_h * kernel_w))
            && weights.kernel_w == kernel_w
            && weights.groups.len() == group_count * weights.padded_channels * GROUP
            && weights.padded_channels == channels.next_multiple_of(LANES)
            && call.zero_point == weights.zero_point,
        "int8 depthwise: the grouped weights do not match the call"
    );
    let out_w = geometry.out_w;
    match &output {
        GemmOutput::Float(values) => assert!(
            values.len() == out_w * channels
                && residual.is_none_or(|residual| residual.len() == values.len()),
            "int8 depthwise: the output row has the wrong size"
        ),
        GemmOutput::Quantized {
            bytes,
            row_stride: pixel_stride,
            ..
        } => assert!(
            *pixel_stride >= channels
                && residual.is_none()
                && (out_w == 0 || bytes.len() >= (out_w - 1) * pixel_stride + channels),
            "int8 depthwise: the quantized output row has the wrong size"
        ),
    }
    // The clamp as `min(high, max(low, x))` (exact for none, ReLU and ReLU6: NaN and -0.0 pass
    // as in the scalar functions), or the leaky slope.
    let clamp = call.activation.and_then(Clamp::of).unwrap_or_default();
    let (low, high, slope) = match clamp {
        Clamp::None => (f32::NEG_INFINITY, f32::INFINITY, None),
        Clamp::Relu => (0.0, f32::INFINITY, None),
        Clamp::Relu6 => (0.0, 6.0, None),
        Clamp::LeakyRelu { negative_slope } => {
            (f32::NEG_INFINITY, f32::INFINITY, Some(negative_slope))
        }
    };
    let (low, high) = (_mm512_set1_ps(low), _mm512_set1_ps(high));
    let quantizer = match &output {
        GemmOutput::Quantized { quantization, .. } => {
            super::kernels::QuantizerAvx512::new(*quantization, clamp)
        }
        // Unused: f32 outputs are not quantized.
        GemmOutput::Float(_) => super::kernels::QuantizerAvx512::new(
            super::ActivationQuantization {
                scale: 1.0,
                zero_point: 0,
            },
            clamp,
        ),
    };
    let mut input_rows = [None; MAX_GROUPS];
    for (kernel_y, input_row) in input_rows.iter_mut().enumerate().take(kernel_h) {
        *input_row = geometry.input_row(out_y, kernel_y);
    }
    let interior = if input_rows[..kernel_h].iter().all(Option::is_some) {
        geometry.interior_columns()
    } else {
        0..0
    };
    // An interior pixel's taps, as offsets from its first input pixel (the slots past a kernel
    // row's last column repeat its first tap; their weights are zero).
    let mut offsets = [[0usize; GROUP]; MAX_GROUPS];
    if !interior.is_empty() {
        for (group, group_offsets) in offsets.iter_mut().enumerate().take(group_count) {
            let (kernel_y, first_column) = (group / row_groups, GROUP * (group % row_groups));
            let input_y = input_rows[kernel_y].unwrap_or(0);
            for (slot, offset) in group_offsets.iter_mut().enumerate() {
                let kernel_x = if first_column + slot < kernel_w {
                    first_column + slot
                } else {
                    first_column
                };
                *offset = (input_y * geometry.in_w + kernel_x * geometry.dilation[1]) * channels;
            }
        }
    }
    let group_stride = weights.padded_channels * GROUP;
    let zero_row = weights.zero_row.as_ptr();
    let image = input.as_ptr();
    // Byte `4 c + t` of the result is byte `c` of lane `t`: tap `t` of channel `c`.
    let interleave = _mm512_set_epi8(
        63, 47, 31, 15, 62, 46, 30, 14, 61, 45, 29, 13, 60, 44, 28, 12, 59, 43, 27, 11, 58, 42, 26,
        10, 57, 41, 25, 9, 56, 40, 24, 8, 55, 39, 23, 7, 54, 38, 22, 6, 53, 37, 21, 5, 52, 36, 20,
        4, 51, 35, 19, 3, 50, 34, 18, 2, 49, 33, 17, 1, 48, 32, 16, 0,
    );
    let [pairs_low, pairs_high] = pair_indices();
    // The interior pixels of a quantized output, for a kernel of at most four columns, run in
    // `interior_blocks`; the others pixel by pixel below.
    let interior_bytes = match &output {
        GemmOutput::Quantized {
            bytes, row_stride, ..
        } if row_groups == 1 && !interior.is_empty() => Some((bytes, *row_stride)),
        _ => None,
    };
    let interior_done = interior_bytes.is_some();
    if let Some((bytes, pixel_stride)) = interior_bytes {
        let mut rows = [image; MAX_GROUPS];
        for (row, input_y) in rows.iter_mut().zip(&input_rows[..kernel_h]) {
            *row = image.wrapping_add(input_y.unwrap_or(0) * geometry.in_w * channels);
        }
        // SAFETY: The rows of an interior pixel's taps are inside the image, and so are its
        // columns; the output pixels' bytes were checked above.
        unsafe {
            interior_blocks::<ZERO_POINT>(
                weights,
                &InteriorRow {
                    rows: &rows[..kernel_h],
                    channels,
                    columns: interior.clone(),
                    column_step: geometry.stride[1] * channels,
                    first_column: interior.start * geometry.stride[1] - geometry.padding[1],
                    tap_step: geometry.dilation[1] * channels,
                    kernel_w,
                    output: bytes.as_ptr().cast_mut(),
                    pixel_stride,
                },
                &quantizer,
                clamp,
            )
        };
    }
    let mut pointers = [[zero_row; GROUP]; MAX_GROUPS];
    for out_x in 0..out_w {
        if interior_done && interior.contains(&out_x) {
            continue;
        }
        if interior.contains(&out_x) {
            let first = out_x * geometry.stride[1] - geometry.padding[1];
            let base = image.wrapping_add(first * channels);
            for (group_pointers, group_offsets) in
                pointers.iter_mut().zip(&offsets).take(group_count)
            {
                for (pointer, &offset) in group_pointers.iter_mut().zip(group_offsets) {
                    *pointer = base.wrapping_add(offset);
                }
            }
        } else {
            // A border pixel: taps outside the image (and the slots past a kernel row's last
            // column) read the zero row.
            for group_pointers in &mut pointers[..group_count] {
                *group_pointers = [zero_row; GROUP];
            }
            for kernel_x in 0..kernel_w {
                let Some(x) = geometry.input_column(out_x, kernel_x) else {
                    continue;
                };
                for (kernel_y, input_y) in input_rows[..kernel_h].iter().enumerate() {
                    if let Some(y) = input_y {
                        pointers[kernel_y * row_groups + kernel_x / GROUP][kernel_x % GROUP] =
                            image.wrapping_add((y * geometry.in_w + x) * channels);
                    }
                }
            }
        }
        let pointers = &pointers[..group_count];
        // The epilogue's f32 values of sixteen channels from `start` (the residual's `$mask`ed),
        // before the clamp.
        macro_rules! values {
            ($sums:expr, $start:expr, $mask:expr) => {{
                let (start, mask): (usize, __mmask16) = ($start, $mask);
                // SAFETY: The weight vectors hold `padded_channels >= start + 16` channels.
                let (scales, bias) = unsafe {
                    (
                        _mm512_loadu_ps(weights.output_scales.as_ptr().add(start)),
                        _mm512_loadu_ps(weights.bias.as_ptr().add(start)),
                    )
                };
                let mut values =
                    _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps($sums), scales), bias);
                let offset = out_x * channels + start;
                if let Some(residual) = residual {
                    let skip = residual.as_ptr().wrapping_add(offset);
                    // SAFETY: The residual row holds `out_w * channels` values; the masked
                    // load reads the block's from `offset`.
                    values = _mm512_add_ps(values, unsafe { _mm512_maskz_loadu_ps(mask, skip) });
                }
                values
            }};
        }
        // Sixteen channels' values from `start` (`$mask`ed when `$masked`), stored.
        macro_rules! store {
            ($values:expr, $start:expr, $masked:expr, $mask:expr) => {{
                let (values, start, masked, mask): (__m512, usize, bool, __mmask16) =
                    ($values, $start, $masked, $mask);
                let offset = out_x * channels + start;
                match &output {
                    GemmOutput::Float(row_values) => {
                        let values = match slope {
                            None => _mm512_min_ps(high, _mm512_max_ps(low, values)),
                            Some(slope) => super::kernels::apply_clamp_avx512(
                                values,
                                Clamp::LeakyRelu {
                                    negative_slope: slope,
                                },
                            ),
                        };
                        let destination = row_values.as_ptr().wrapping_add(offset).cast_mut();
                        // SAFETY: The row holds `out_w * channels` values; the store writes
                        // the block's from `offset` (masked stores, slow on some processors,
                        // only for a last block of fewer than sixteen), and `row_values` is
                        // borrowed mutably by `output`.
                        unsafe {
                            if masked {
                                _mm512_mask_storeu_ps(destination, mask, values);
                            } else {
                                _mm512_storeu_ps(destination, values);
                            }
                        }
                    }
                    GemmOutput::Quantized {
                        bytes,
                        row_stride: pixel_stride,
                        ..
                    } => {
                        let quantized = super::kernels::quantize_avx512::<ZERO_POINT>(
                            values, &quantizer, clamp,
                        );
                        let destination = bytes
                            .as_ptr()
                            .wrapping_add(out_x * pixel_stride + start)
                            .cast_mut();
                        // SAFETY: Pixel `out_x` holds `channels` bytes from
                        // `out_x * pixel_stride` (checked above); the store writes the block's
                        // from `start`, masked for a last block of fewer than sixteen.
                        unsafe {
                            if masked {
                                _mm_mask_storeu_epi8(destination.cast(), mask, quantized);
                            } else {
                                _mm_storeu_si128(destination.cast(), quantized);
                            }
                        }
                    }
                }
            }};
        }
        // Thirty-two channels at a time: per group, two registers of two taps' 32 bytes, and
        // one `vpermt2b` per sixteen channels.
        let mut start = 0;
        while start + 2 * LANES <= channels {
            // SAFETY: The weight vectors hold `padded_channels >= start + 32` channels.
            let mut sums = unsafe {
                [
                    _mm512_loadu_si512(weights.starts.as_ptr().add(start).cast()),
                    _mm512_loadu_si512(weights.starts.as_ptr().add(start + LANES).cast()),
                ]
            };
            for (group, taps) in pointers.iter().enumerate() {
                // SAFETY: Every tap addresses `channels >= start + 32` readable bytes (a pixel
                // of the image, or the zero row); the group's 128 weight bytes from `start`
                // are inside `groups`.
                let (first, second, weight) = unsafe {
                    let two = |a: *const u8, b: *const u8| (a.add(start), b.add(start));
                    let (a, b) = two(taps[0], taps[1]);
                    let (c, d) = two(taps[2], taps[3]);
                    let weight = weights
                        .groups
                        .as_ptr()
                        .add(group * group_stride + start * GROUP);
                    (
                        _mm512_inserti64x4::<1>(
                            _mm512_castsi256_si512(_mm256_loadu_si256(a.cast())),
                            _mm256_loadu_si256(b.cast()),
                        ),
                        _mm512_inserti64x4::<1>(
                            _mm512_castsi256_si512(_mm256_loadu_si256(c.cast())),
                            _mm256_loadu_si256(d.cast()),
                        ),
                        [
                            _mm512_loadu_si512(weight.cast()),
                            _mm512_loadu_si512(weight.add(LANES * GROUP).cast()),
                        ],
                    )
                };
                let low_taps = _mm512_permutex2var_epi8(first, pairs_low, second);
                let high_taps = _mm512_permutex2var_epi8(first, pairs_high, second);
                sums[0] = _mm512_dpbusd_epi32(sums[0], low_taps, weight[0]);
                sums[1] = _mm512_dpbusd_epi32(sums[1], high_taps, weight[1]);
            }
            let first_values = values!(sums[0], start, 0xffff);
            let second_values = values!(sums[1], start + LANES, 0xffff);
            match &output {
                // Both quantized and packed together: one store of 32 bytes.
                GemmOutput::Quantized {
                    bytes,
                    row_stride: pixel_stride,
                    ..
                } => {
                    let packed = super::kernels::quantize_pair_avx512::<ZERO_POINT>(
                        first_values,
                        second_values,
                        &quantizer,
                        clamp,
                    );
                    let destination = bytes
                        .as_ptr()
                        .wrapping_add(out_x * pixel_stride + start)
                        .cast_mut();
                    // SAFETY: Pixel `out_x` holds `channels >= start + 32` bytes from
                    // `out_x * pixel_stride` (checked above).
                    unsafe { _mm256_storeu_si256(destination.cast(), packed) };
                }
                GemmOutput::Float(_) => {
                    store!(first_values, start, false, 0xffff);
                    store!(second_values, start + LANES, false, 0xffff);
                }
            }
            start += 2 * LANES;
        }
        // Sixteen at a time: per group, the four taps' bytes in the lanes of one register.
        while start < channels {
            let count = (channels - start).min(LANES);
            let masked = count < LANES;
            let mask: __mmask16 = ((1u32 << count) - 1) as __mmask16;
            // SAFETY: The weight vectors hold `padded_channels >= start + 16` channels.
            let mut sums = unsafe { _mm512_loadu_si512(weights.starts.as_ptr().add(start).cast()) };
            for (group, taps) in pointers.iter().enumerate() {
                // A macro rather than a closure: a closure does not inherit the target
                // features, and its loads would be calls.
                macro_rules! load {
                    ($pointer:expr) => {
                        // SAFETY: Every tap addresses `channels` readable bytes; this reads
                        // `count` of them from `start`, all sixteen only when `count` is
                        // sixteen.
                        unsafe {
                            if masked {
                                _mm_maskz_loadu_epi8(mask, $pointer.add(start).cast())
                            } else {
                                _mm_loadu_si128($pointer.add(start).cast())
                            }
                        }
                    };
                }
                let mut lanes = _mm512_castsi128_si512(load!(taps[0]));
                lanes = _mm512_inserti32x4::<1>(lanes, load!(taps[1]));
                lanes = _mm512_inserti32x4::<2>(lanes, load!(taps[2]));
                lanes = _mm512_inserti32x4::<3>(lanes, load!(taps[3]));
                let interleaved = _mm512_permutexvar_epi8(interleave, lanes);
                // SAFETY: The group's 64 weight bytes from `start` are inside `groups`.
                let weight = unsafe {
                    _mm512_loadu_si512(
                        weights
                            .groups
                            .as_ptr()
                            .add(group * group_stride + start * GROUP)
                            .cast(),
                    )
                };
                sums = _mm512_dpbusd_epi32(sums, interleaved, weight);
            }
            store!(values!(sums, start, mask), start, masked, mask);
            start += LANES;
        }
    }
}

/// The `vpermt2b` indices that interleave 32 channels of four taps: for two registers holding
/// taps 0 and 1 (the first) and taps 2 and 3 (the second), byte `4 c + t` of the first index
/// picks channel `c` of tap `t`, and of the second channel `c + 16`.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn pair_indices() -> [std::arch::x86_64::__m512i; 2] {
    use std::arch::x86_64::*;
    let low = _mm512_set_epi8(
        111, 79, 47, 15, 110, 78, 46, 14, 109, 77, 45, 13, 108, 76, 44, 12, 107, 75, 43, 11, 106,
        74, 42, 10, 105, 73, 41, 9, 104, 72, 40, 8, 103, 71, 39, 7, 102, 70, 38, 6, 101, 69, 37, 5,
        100, 68, 36, 4, 99, 67, 35, 3, 98, 66, 34, 2, 97, 65, 33, 1, 96, 64, 32, 0,
    );
    [low, _mm512_add_epi8(low, _mm512_set1_epi8(16))]
}

/// The interior pixels of one output row, for [`interior_blocks`].
#[cfg(target_arch = "x86_64")]
struct InteriorRow<'a> {
    /// The first pixel of each kernel row's input row.
    rows: &'a [*const u8],
    channels: usize,
    /// The output columns, all interior.
    columns: std::ops::Range<usize>,
    /// Bytes from one output column's first input pixel to the next's.
    column_step: usize,
    /// The input column of the first output column's first tap.
    first_column: usize,
    /// Bytes from one kernel column's input pixel to the next's.
    tap_step: usize,
    /// Kernel columns, at most [`GROUP`].
    kernel_w: usize,
    /// The output row's pixel 0, `pixel_stride` bytes from one pixel to the next.
    output: *mut u8,
    pixel_stride: usize,
}

/// The quantized outputs of a row's interior pixels, 32 channels at a time for the whole row
/// (the last block masked): the block's epilogue constants stay in registers (its weights stay
/// in L1), and each pixel's taps are its row pointers plus its column. A kernel row of three columns leaves
/// the fourth slot's bytes zero (its weight is zero), and so do channels past the last.
///
/// # Safety
/// The processor has AVX512F, BW, VL, VBMI and VNNI; `row` describes pixels inside the image
/// (every tap of every column of `row.columns` reads `channels` bytes inside it) and output
/// pixels of `channels` writable bytes; the weights are the layer's, with one group per kernel
/// row.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni")]
unsafe fn interior_blocks<const ZERO_POINT: bool>(
    weights: &GroupedWeights,
    row: &InteriorRow<'_>,
    quantizer: &super::kernels::QuantizerAvx512,
    clamp: Clamp,
) {
    // 3x3 kernels (nearly every depthwise layer) with the kernel's size known to the compiler,
    // which unrolls the kernel rows and drops the checks of the columns.
    let three = row.rows.len() == 3 && row.kernel_w == 3;
    let whole = row.channels / (2 * LANES) * (2 * LANES);
    let mut start = 0;
    while start < row.channels {
        // SAFETY: Passed on from the caller, for the block from `start`.
        unsafe {
            let arguments = (weights, row, start, quantizer, clamp);
            match (three, start < whole) {
                (true, true) => interior_block::<ZERO_POINT, 3, 3, true>(arguments),
                (true, false) => interior_block::<ZERO_POINT, 3, 3, false>(arguments),
                (false, true) => interior_block::<ZERO_POINT, 0, 0, true>(arguments),
                (false, false) => interior_block::<ZERO_POINT, 0, 0, false>(arguments),
            }
        };
        start += 2 * LANES;
    }
}

/// One block of [`interior_blocks`], channels `start..start + 32` (or to the last, and then not
/// `WHOLE`), for a kernel of `KERNEL_H x KERNEL_W` (or the row's, when they are 0).
///
/// # Safety
/// As [`interior_blocks`]; `start` is below the channels, a multiple of 32, and `WHOLE` when 32
/// channels start there.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni")]
unsafe fn interior_block<
    const ZERO_POINT: bool,
    const KERNEL_H: usize,
    const KERNEL_W: usize,
    const WHOLE: bool,
>(
    (weights, row, start, quantizer, clamp): (
        &GroupedWeights,
        &InteriorRow<'_>,
        usize,
        &super::kernels::QuantizerAvx512,
        Clamp,
    ),
) {
    use std::arch::x86_64::*;
    let kernel_h = if KERNEL_H > 0 {
        KERNEL_H
    } else {
        row.rows.len()
    };
    let kernel_w = if KERNEL_W > 0 { KERNEL_W } else { row.kernel_w };
    assert!(kernel_h <= row.rows.len() && kernel_w == row.kernel_w);
    let [pairs_low, pairs_high] = pair_indices();
    let group_stride = weights.padded_channels * GROUP;
    let tap = row.tap_step;
    let count = if WHOLE {
        2 * LANES
    } else {
        (row.channels - start).min(2 * LANES)
    };
    // Bytes of the block's channels (all 32 but in a last block).
    let mask: __mmask32 = if WHOLE { !0 } else { (1u32 << count) - 1 };
    // The weight vectors hold `padded_channels` (a multiple of 16) channels: the block's
    // second half only when it has more than sixteen.
    let halves = if count > LANES { 2 } else { 1 };
    let (mut sums_start, mut scales, mut bias) = (
        [_mm512_setzero_si512(); 2],
        [_mm512_setzero_ps(); 2],
        [_mm512_setzero_ps(); 2],
    );
    for half in 0..halves {
        let first = start + half * LANES;
        // SAFETY: The weight vectors hold `padded_channels >= first + 16` channels.
        unsafe {
            sums_start[half] = _mm512_loadu_si512(weights.starts.as_ptr().add(first).cast());
            scales[half] = _mm512_loadu_ps(weights.output_scales.as_ptr().add(first));
            bias[half] = _mm512_loadu_ps(weights.bias.as_ptr().add(first));
        }
    }
    let mut offset = row.first_column * row.channels + start;
    for out_x in row.columns.clone() {
        let mut sums = sums_start;
        for group in 0..kernel_h {
            let input_row = row.rows[group];
            // SAFETY: The group's weights of the block's halves are inside `groups` (one
            // group of `padded_channels` per kernel row); the kernel row's taps of this pixel
            // read the block's bytes from `start` of pixels inside the image (the caller's
            // promise), and only the kernel's columns are read.
            let (weight, first, second) = unsafe {
                let weight = weights
                    .groups
                    .as_ptr()
                    .add(group * group_stride + start * GROUP);
                let weight = [
                    _mm512_loadu_si512(weight.cast()),
                    if halves == 2 {
                        _mm512_loadu_si512(weight.add(LANES * GROUP).cast())
                    } else {
                        _mm512_setzero_si512()
                    },
                ];
                let pixel = input_row.add(offset);
                let load = |column: usize| {
                    if column >= kernel_w {
                        _mm256_setzero_si256()
                    } else if WHOLE {
                        _mm256_loadu_si256(pixel.add(column * tap).cast())
                    } else {
                        _mm256_maskz_loadu_epi8(mask, pixel.add(column * tap).cast())
                    }
                };
                let first = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(load(0)), load(1));
                let second = if kernel_w > 3 {
                    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(load(2)), load(3))
                } else {
                    _mm512_zextsi256_si512(load(2))
                };
                (weight, first, second)
            };
            let low_taps = _mm512_permutex2var_epi8(first, pairs_low, second);
            let high_taps = _mm512_permutex2var_epi8(first, pairs_high, second);
            sums[0] = _mm512_dpbusd_epi32(sums[0], low_taps, weight[0]);
            sums[1] = _mm512_dpbusd_epi32(sums[1], high_taps, weight[1]);
        }
        let mut values = [_mm512_setzero_ps(); 2];
        for (panel, value) in values.iter_mut().enumerate() {
            *value = _mm512_add_ps(
                _mm512_mul_ps(_mm512_cvtepi32_ps(sums[panel]), scales[panel]),
                bias[panel],
            );
        }
        let packed = super::kernels::quantize_pair_avx512::<ZERO_POINT>(
            values[0], values[1], quantizer, clamp,
        );
        // SAFETY: Output pixel `out_x` holds `channels >= start + count` writable bytes
        // (the caller's promise); the store writes the block's.
        unsafe {
            let destination = row.output.add(out_x * row.pixel_stride + start);
            if WHOLE {
                _mm256_storeu_si256(destination.cast(), packed);
            } else {
                _mm256_mask_storeu_epi8(destination.cast(), mask, packed);
            }
        };
        offset += row.column_step;
    }
}
