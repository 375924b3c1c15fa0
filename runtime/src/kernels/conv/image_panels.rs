//! The im2col matrix of one image (one group of its channels) as a source of the GEMM's B
//! panels, so that a convolution is an implicit GEMM: the matrix is never built, and each task
//! packs the panels of its own output pixels straight from the image, into a block that stays
//! in cache until the micro-kernel has used it.
//!
//! Row `d = (channel, kernel_y, kernel_x)` and column `j = (out_y, out_x)` of the matrix hold
//! `input[channel][out_y * stride_y + kernel_y * dilation_y - padding_y][out_x * stride_x +
//! kernel_x * dilation_x - padding_x]`, or zero where that lies in the padding. A panel covers
//! 16 consecutive output pixels, which fall into a few runs along output rows ("segments"); for
//! each row of the panel, each segment is one contiguous copy (unit stride) or one strided
//! gather from one input row, with zeros where the kernel tap reaches into the padding.

use super::Geometry;
use crate::kernels::gemm::{NR, RhsSource};
use std::ops::Range;

/// The im2col matrix of `input`, `[channels, in_h, in_w]`, under `geometry`.
pub(super) struct ImagePanels<'a> {
    pub(super) input: &'a [f32],
    pub(super) geometry: &'a Geometry,
}

/// The kernel widths up to which a panel computes each kernel column's valid output columns
/// once, up front (wider kernels recompute them per row).
const MAX_PRECOMPUTED_KERNEL_WIDTH: usize = 16;

/// A run of a panel's pixels along one output row.
#[derive(Clone, Copy, Default)]
struct Segment {
    /// The first of the run's positions in the panel.
    position: usize,
    /// The number of pixels.
    length: usize,
    out_y: usize,
    first_out_x: usize,
}

impl RhsSource for ImagePanels<'_> {
    fn pack_panel(
        &self,
        first_row: usize,
        depth: usize,
        first_column: usize,
        width: usize,
        panel: &mut [f32],
    ) {
        let geometry = self.geometry;
        let [kernel_h, kernel_w] = geometry.kernel;
        let taps = kernel_h * kernel_w;
        let input_plane = geometry.in_h * geometry.in_w;

        let mut segments = [Segment::default(); NR];
        let mut segment_count = 0;
        let (mut out_y, mut out_x) = (first_column / geometry.out_w, first_column % geometry.out_w);
        let mut position = 0;
        while position < width {
            let length = (geometry.out_w - out_x).min(width - position);
            segments[segment_count] = Segment {
                position,
                length,
                out_y,
                first_out_x: out_x,
            };
            segment_count += 1;
            position += length;
            out_x = 0;
            out_y += 1;
        }
        let segments = &segments[..segment_count];

        let valid_columns: [Range<usize>; MAX_PRECOMPUTED_KERNEL_WIDTH] =
            std::array::from_fn(|kernel_x| {
                if kernel_x < kernel_w {
                    geometry.valid_columns(kernel_x)
                } else {
                    0..0
                }
            });

        let (mut channel, tap) = (first_row / taps, first_row % taps);
        let (mut kernel_y, mut kernel_x) = (tap / kernel_w, tap % kernel_w);
        for panel_row in panel[..depth * NR].chunks_exact_mut(NR) {
            let valid = if kernel_x < MAX_PRECOMPUTED_KERNEL_WIDTH {
                valid_columns[kernel_x].clone()
            } else {
                geometry.valid_columns(kernel_x)
            };
            let channel_input = &self.input[channel * input_plane..][..input_plane];
            panel_row[width..].fill(0.0);
            for segment in segments {
                pack_segment(
                    channel_input,
                    geometry,
                    segment,
                    kernel_y,
                    kernel_x,
                    valid.clone(),
                    &mut panel_row[segment.position..][..segment.length],
                );
            }
            kernel_x += 1;
            if kernel_x == kernel_w {
                kernel_x = 0;
                kernel_y += 1;
                if kernel_y == kernel_h {
                    kernel_y = 0;
                    channel += 1;
                }
            }
        }
    }
}

/// Fills one segment of one panel row from one channel's plane: the tap `(kernel_y, kernel_x)`
/// of the segment's pixels, where `valid` are the output columns whose tap lies inside the
/// input's width.
fn pack_segment(
    channel_input: &[f32],
    geometry: &Geometry,
    segment: &Segment,
    kernel_y: usize,
    kernel_x: usize,
    valid: Range<usize>,
    output: &mut [f32],
) {
    let Some(input_y) = geometry.input_row(segment.out_y, kernel_y) else {
        output.fill(0.0);
        return;
    };
    let input_row = &channel_input[input_y * geometry.in_w..][..geometry.in_w];
    let segment_end = segment.first_out_x + segment.length;
    let first_valid = valid.start.clamp(segment.first_out_x, segment_end);
    let end_valid = valid.end.clamp(first_valid, segment_end);
    let stride = geometry.stride[1];
    if first_valid == end_valid {
        output.fill(0.0);
        return;
    }
    let first_input = first_valid * stride + kernel_x * geometry.dilation[1] - geometry.padding[1];
    let valid_length = end_valid - first_valid;
    if let Ok(output) = <&mut [f32; NR]>::try_from(&mut *output)
        && valid_length == NR
    {
        // The common case inside the image: sixteen pixels of one output row, all inside.
        copy_sixteen(&input_row[first_input..], stride, output);
        return;
    }
    let (before, rest) = output.split_at_mut(first_valid - segment.first_out_x);
    let (inside, after) = rest.split_at_mut(valid_length);
    before.fill(0.0);
    after.fill(0.0);
    if stride == 1 {
        inside.copy_from_slice(&input_row[first_input..][..valid_length]);
    } else {
        for (value, &input) in inside
            .iter_mut()
            .zip(input_row[first_input..].iter().step_by(stride))
        {
            *value = input;
        }
    }
}

/// `output[p] = input[p * stride]` for sixteen pixels, with a fixed length so that the copy
/// compiles to whole-vector moves (unit stride) or an unrolled gather.
#[inline]
fn copy_sixteen(input: &[f32], stride: usize, output: &mut [f32; NR]) {
    match stride {
        1 => output.copy_from_slice(&input[..NR]),
        2 => {
            let input = &input[..2 * (NR - 1) + 1];
            for (position, value) in output.iter_mut().enumerate() {
                *value = input[2 * position];
            }
        }
        _ => {
            let input = &input[..stride * (NR - 1) + 1];
            for (position, value) in output.iter_mut().enumerate() {
                *value = input[stride * position];
            }
        }
    }
}
