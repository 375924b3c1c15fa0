//! The AVX512-VNNI depthwise row: sixteen channels of one output pixel per zmm accumulator,
//! four taps per instruction.
//!
//! For a group of four taps, the four inputs' sixteen bytes are loaded into the four 128-bit
//! lanes of one register, and one `vpermb` interleaves them channel by channel (`x_0[c], x_1[c],
//! x_2[c], x_3[c]`), the layout of `vpdpbusd`, which adds `sum_t x_t[c] * w_t[c]` to lane `c`
//! exactly (u8 times s8, summed in i32). The weights are stored in that layout once, at load
//! ([`GroupedWeights`]), with zero weights for the taps that pad the last group. The zero point
//! comes out through the accumulator's start, `-zp * sum_t w_t[c]`, so the loop multiplies the
//! raw bytes; a tap outside the image reads a row of zero-point bytes (adding `zp * w`, which
//! the start takes back: a padding pixel adds nothing, as in the reference).
//!
//! The epilogue runs in registers: `sum * s_x * s_w[c] + bias[c]` (a multiply then an add, as
//! the other instruction sets compute it), the residual, the clamp, and for a quantized output
//! the next layer's quantization, stored as bytes.

use super::ActivationQuantization;
use super::depthwise::DepthwiseCall;
use super::gemm::quantize_filter;
use super::quantize::ConvGeometry;
use crate::kernels::gemm::Clamp;

/// The most taps the grouped kernel takes (a 7x7 kernel); larger kernels run the generic loop.
pub(super) const MAX_GROUPED_TAPS: usize = 49;
/// Channels of one accumulator.
const LANES: usize = 16;
/// Taps of one `vpdpbusd`.
const GROUP: usize = 4;
/// Tap slots of a pixel: the taps rounded up to whole groups.
const MAX_SLOTS: usize = MAX_GROUPED_TAPS.next_multiple_of(GROUP);

/// A depthwise layer's weights in the grouped layout, with what the epilogue reads, all padded
/// to a multiple of [`LANES`] channels (zero weights, scales and biases past the last channel).
#[derive(Clone, Debug)]
pub(super) struct GroupedWeights {
    /// Channels rounded up to [`LANES`].
    padded_channels: usize,
    /// `[group][channel][GROUP]`: taps `4 g..4 g + 4` of each channel (zero past the last tap).
    groups: Vec<i8>,
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
    /// The grouped layout of `[channels, taps]` f32 weights (quantized per channel as
    /// `quantize_filter` does), or `None` for a kernel of more than [`MAX_GROUPED_TAPS`] taps.
    pub(super) fn new(
        weight: &[f32],
        channels: usize,
        taps: usize,
        output_scales: &[f32],
        bias: &[f32],
        zero_point: u8,
    ) -> Option<Self> {
        if taps > MAX_GROUPED_TAPS {
            return None;
        }
        let padded_channels = channels.next_multiple_of(LANES);
        let group_count = taps.div_ceil(GROUP);
        let mut groups = vec![0i8; group_count * padded_channels * GROUP];
        let mut starts = vec![0i32; padded_channels];
        for (channel, filter) in weight.chunks_exact(taps).enumerate() {
            let (_, quantized) = quantize_filter(filter);
            for (tap, &value) in quantized.iter().enumerate() {
                let (group, slot) = (tap / GROUP, tap % GROUP);
                groups[(group * padded_channels + channel) * GROUP + slot] = value;
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
            groups,
            starts,
            output_scales: padded(output_scales),
            bias: padded(bias),
            zero_point,
            zero_row: vec![zero_point; padded_channels],
        })
    }
}

/// Where one output row goes.
pub(super) enum RowOutput<'a> {
    /// `out_w * channels` f32 values.
    Float(&'a mut [f32]),
    /// `out_w` pixels of `pixel_stride >= channels` bytes, the first `channels` of each written
    /// quantized with `quantization`.
    Bytes {
        bytes: &'a mut [u8],
        pixel_stride: usize,
        quantization: ActivationQuantization,
    },
}

/// What every channel block of one output row shares.
#[cfg(target_arch = "x86_64")]
struct RowContext<'a> {
    weights: &'a GroupedWeights,
    channels: usize,
    /// The row's image, `[in_h, in_w, channels]`.
    input: &'a [u8],
    geometry: &'a ConvGeometry,
    /// Each kernel row's input row, if inside the image.
    input_rows: [Option<usize>; MAX_GROUPED_TAPS],
    /// An interior pixel's taps as offsets from its first input (the slots that pad the last
    /// group repeat tap 0, which meets zero weights).
    offsets: [usize; MAX_SLOTS],
    /// The output columns whose taps are all inside the image.
    interior: std::ops::Range<usize>,
    /// The clamp as `min(high, max(low, x))` (exact for none, ReLU and ReLU6: NaN and -0.0
    /// pass as in the scalar functions), or the leaky slope.
    low: f32,
    high: f32,
    slope: Option<f32>,
    residual: Option<&'a [f32]>,
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
    output: RowOutput<'_>,
) {
    let geometry: &ConvGeometry = &call.geometry;
    let (image, out_y) = (row / geometry.out_h, row % geometry.out_h);
    let image_length = geometry.in_h * geometry.in_w * channels;
    let input = &call.images[image * image_length..][..image_length];
    let [kernel_h, kernel_w] = geometry.kernel;
    let taps = kernel_h * kernel_w;
    let group_count = taps.div_ceil(GROUP);
    assert!(
        (1..=MAX_GROUPED_TAPS).contains(&taps)
            && weights.groups.len() == group_count * weights.padded_channels * GROUP
            && weights.padded_channels == channels.next_multiple_of(LANES)
            && call.zero_point == weights.zero_point,
        "int8 depthwise: the grouped weights do not match the call"
    );
    let out_w = geometry.out_w;
    match &output {
        RowOutput::Float(values) => assert!(
            values.len() == out_w * channels
                && residual.is_none_or(|residual| residual.len() == values.len()),
            "int8 depthwise: the output row has the wrong size"
        ),
        RowOutput::Bytes {
            bytes,
            pixel_stride,
            ..
        } => assert!(
            *pixel_stride >= channels
                && residual.is_none()
                && (out_w == 0 || bytes.len() >= (out_w - 1) * pixel_stride + channels),
            "int8 depthwise: the quantized output row has the wrong size"
        ),
    }
    let clamp = call.activation.and_then(Clamp::of).unwrap_or_default();
    let (low, high, slope) = match clamp {
        Clamp::None => (f32::NEG_INFINITY, f32::INFINITY, None),
        Clamp::Relu => (0.0, f32::INFINITY, None),
        Clamp::Relu6 => (0.0, 6.0, None),
        Clamp::LeakyRelu { negative_slope } => {
            (f32::NEG_INFINITY, f32::INFINITY, Some(negative_slope))
        }
    };
    let mut input_rows = [None; MAX_GROUPED_TAPS];
    for (kernel_y, input_row) in input_rows.iter_mut().enumerate().take(kernel_h) {
        *input_row = geometry.input_row(out_y, kernel_y);
    }
    let rows_inside = input_rows[..kernel_h].iter().all(Option::is_some);
    let mut offsets = [0usize; MAX_SLOTS];
    for (slot, offset) in offsets.iter_mut().enumerate().take(group_count * GROUP) {
        let tap = if slot < taps { slot } else { 0 };
        let (kernel_y, kernel_x) = (tap / kernel_w, tap % kernel_w);
        let input_y = input_rows[kernel_y].unwrap_or(0);
        *offset = (input_y * geometry.in_w + kernel_x * geometry.dilation[1]) * channels;
    }
    let interior = if rows_inside {
        let first = valid_output_range(geometry, 0);
        let last = valid_output_range(geometry, kernel_w - 1);
        first.start.max(last.start)..first.end.min(last.end)
    } else {
        0..0
    };
    let context = RowContext {
        weights,
        channels,
        input,
        geometry,
        input_rows,
        offsets,
        interior,
        low,
        high,
        slope,
        residual,
    };
    let mut start = 0;
    while start < channels {
        let count = (channels - start).min(LANES);
        macro_rules! dispatch {
            ($($groups:literal)*) => {
                match (group_count, count == LANES) {
                    $(
                        // SAFETY: The processor has the features (the caller vouches), and
                        // `start < channels`.
                        ($groups, true) => unsafe {
                            block_row::<$groups, false>(&context, start, count, &output)
                        },
                        // SAFETY: As above.
                        ($groups, false) => unsafe {
                            block_row::<$groups, true>(&context, start, count, &output)
                        },
                    )*
                    _ => unreachable!("a kernel of at most MAX_GROUPED_TAPS taps"),
                }
            };
        }
        dispatch!(1 2 3 4 5 6 7 8 9 10 11 12 13);
        start += LANES;
    }
}

/// Channels `start..start + count` of every pixel of the row, `GROUPS` groups of taps (the
/// block's weights, scales and biases stay in registers along the row): `MASKED` when `count`
/// is less than sixteen.
///
/// # Safety
/// The processor has AVX512F, BW, VL, VBMI and VNNI; `start < channels` and `count` is
/// `min(16, channels - start)`; `GROUPS` is the context's kernel's groups.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni")]
unsafe fn block_row<const GROUPS: usize, const MASKED: bool>(
    context: &RowContext<'_>,
    start: usize,
    count: usize,
    output: &RowOutput<'_>,
) {
    use std::arch::x86_64::*;
    let weights = context.weights;
    let (channels, geometry) = (context.channels, context.geometry);
    let [kernel_h, kernel_w] = geometry.kernel;
    let mask: __mmask16 = ((1u32 << count) - 1) as __mmask16;
    let group_stride = weights.padded_channels * GROUP;
    // SAFETY: The weight vectors hold `padded_channels >= start + 16` channels; group `g`'s
    // sixteen channels from `start` are 64 bytes inside `groups`.
    let (starts, scales, bias, group_weights) = unsafe {
        (
            _mm512_loadu_si512(weights.starts.as_ptr().add(start).cast()),
            _mm512_loadu_ps(weights.output_scales.as_ptr().add(start)),
            _mm512_loadu_ps(weights.bias.as_ptr().add(start)),
            std::array::from_fn::<__m512i, GROUPS, _>(|group| {
                _mm512_loadu_si512(
                    weights
                        .groups
                        .as_ptr()
                        .add(group * group_stride + start * GROUP)
                        .cast(),
                )
            }),
        )
    };
    let (low, high) = (_mm512_set1_ps(context.low), _mm512_set1_ps(context.high));
    // Byte `4 c + t` of the result is byte `c` of lane `t`: tap `t` of channel `c`.
    let interleave = _mm512_set_epi8(
        63, 47, 31, 15, 62, 46, 30, 14, 61, 45, 29, 13, 60, 44, 28, 12, 59, 43, 27, 11, 58, 42, 26,
        10, 57, 41, 25, 9, 56, 40, 24, 8, 55, 39, 23, 7, 54, 38, 22, 6, 53, 37, 21, 5, 52, 36, 20,
        4, 51, 35, 19, 3, 50, 34, 18, 2, 49, 33, 17, 1, 48, 32, 16, 0,
    );
    // A macro rather than a closure: a closure does not inherit the target features, and its
    // loads would be calls.
    macro_rules! load {
        ($pointer:expr) => {
            // SAFETY: Every tap pointer addresses `channels` readable bytes (a pixel of the
            // image, or the zero row of `padded_channels`); this reads `count` of them from
            // `start`, all sixteen only when `count` is sixteen.
            unsafe {
                if MASKED {
                    _mm_maskz_loadu_epi8(mask, $pointer.add(start).cast())
                } else {
                    _mm_loadu_si128($pointer.add(start).cast())
                }
            }
        };
    }
    let zero_row = weights.zero_row.as_ptr();
    let input = context.input.as_ptr();
    for out_x in 0..geometry.out_w {
        let mut pointers = [[zero_row; GROUP]; GROUPS];
        if context.interior.contains(&out_x) {
            let base =
                input.wrapping_add((out_x * geometry.stride[1] - geometry.padding[1]) * channels);
            for (group, group_pointers) in pointers.iter_mut().enumerate() {
                for (slot, pointer) in group_pointers.iter_mut().enumerate() {
                    *pointer = base.wrapping_add(context.offsets[group * GROUP + slot]);
                }
            }
        } else {
            // A border pixel: taps outside the image (and the slots past the last tap) read
            // the zero row.
            for kernel_x in 0..kernel_w {
                let Some(x) = geometry.input_column(out_x, kernel_x) else {
                    continue;
                };
                for (kernel_y, input_y) in context.input_rows[..kernel_h].iter().enumerate() {
                    if let Some(y) = input_y {
                        let tap = kernel_y * kernel_w + kernel_x;
                        pointers[tap / GROUP][tap % GROUP] =
                            input.wrapping_add((y * geometry.in_w + x) * channels);
                    }
                }
            }
        }
        let mut sums = starts;
        for (group, taps) in pointers.iter().enumerate() {
            // Lane `t` holds tap `t`'s sixteen bytes: masked broadcasts of the loads, which
            // keep the shuffle unit free for the interleave.
            let mut lanes = _mm512_castsi128_si512(load!(taps[0]));
            lanes = _mm512_mask_broadcast_i32x4(lanes, 0x00f0, load!(taps[1]));
            lanes = _mm512_mask_broadcast_i32x4(lanes, 0x0f00, load!(taps[2]));
            lanes = _mm512_mask_broadcast_i32x4(lanes, 0xf000, load!(taps[3]));
            let interleaved = _mm512_permutexvar_epi8(interleave, lanes);
            sums = _mm512_dpbusd_epi32(sums, interleaved, group_weights[group]);
        }
        let mut values = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(sums), scales), bias);
        let offset = out_x * channels + start;
        if let Some(residual) = context.residual {
            // SAFETY: The residual row holds `out_w * channels` values; the masked load reads
            // `count` from `offset`.
            let skip = unsafe { _mm512_maskz_loadu_ps(mask, residual.as_ptr().add(offset)) };
            values = _mm512_add_ps(values, skip);
        }
        values = match context.slope {
            None => _mm512_min_ps(high, _mm512_max_ps(low, values)),
            Some(slope) => super::kernels::apply_clamp_avx512(
                values,
                Clamp::LeakyRelu {
                    negative_slope: slope,
                },
            ),
        };
        match output {
            RowOutput::Float(row_values) => {
                let destination = row_values.as_ptr().wrapping_add(offset).cast_mut();
                // SAFETY: The row holds `out_w * channels` values; the store writes `count`
                // from `offset` (masked stores, slow on some processors, only for a last block
                // of fewer than sixteen), and `row_values` is borrowed mutably by `output`.
                unsafe {
                    if MASKED {
                        _mm512_mask_storeu_ps(destination, mask, values);
                    } else {
                        _mm512_storeu_ps(destination, values);
                    }
                }
            }
            RowOutput::Bytes {
                bytes,
                pixel_stride,
                quantization,
            } => {
                let quantized = super::kernels::quantize_avx512(values, *quantization);
                let destination = bytes
                    .as_ptr()
                    .wrapping_add(out_x * pixel_stride + start)
                    .cast_mut();
                // SAFETY: Pixel `out_x` holds `channels` bytes from `out_x * pixel_stride`
                // (checked by the caller); the store writes `count` from `start`, masked for a
                // last block of fewer than sixteen.
                unsafe {
                    if MASKED {
                        _mm_mask_storeu_epi8(destination.cast(), mask, quantized);
                    } else {
                        _mm_storeu_si128(destination.cast(), quantized);
                    }
                }
            }
        }
    }
}

/// The output columns whose input column through kernel column `kernel_x` is inside.
fn valid_output_range(geometry: &ConvGeometry, kernel_x: usize) -> std::ops::Range<usize> {
    crate::kernels::conv::valid_output_range(
        geometry.out_w,
        geometry.stride[1],
        kernel_x * geometry.dilation[1],
        geometry.padding[1],
        geometry.in_w,
    )
}
