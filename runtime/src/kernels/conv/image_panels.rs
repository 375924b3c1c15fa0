//! The im2col matrix of one image (one group of its channels) as a source of the GEMM's B
//! panels, so that a convolution is an implicit GEMM: the matrix is never built, and each task
//! packs the panels of its own output pixels straight from the image, into a block that stays
//! in cache until the micro-kernel has used it.
//!
//! Row `d = (channel, kernel_y, kernel_x)` and column `j = (out_y, out_x)` of the matrix hold
//! `input[channel][out_y * stride_y + kernel_y * dilation_y - padding_y][out_x * stride_x +
//! kernel_x * dilation_x - padding_x]`, or zero where that lies in the padding. A panel covers
//! 16 consecutive output pixels, which fall into a few runs along output rows ("segments"). For
//! each kernel tap, what the segments read is planned once (`TapPlan`: one contiguous copy or
//! strided gather per segment, from one input row, zeros where the tap reaches into the
//! padding), and the plan then runs for every channel of the panel's rows.

use super::Geometry;
use crate::kernels::gemm::{NR, RhsSource};
use std::ops::Range;

/// The im2col matrix of `input`, `[channels, in_h, in_w]`, under `geometry`.
pub(super) struct ImagePanels<'a> {
    input: &'a [f32],
    geometry: &'a Geometry,
    /// Whether the reads at strides 1 and 2 take the AVX-512 form: only where the processor
    /// has AVX-512F.
    avx512: bool,
}

impl<'a> ImagePanels<'a> {
    /// The panels of `input` under `geometry`, with the AVX-512 form where the processor has it.
    pub(super) fn new(input: &'a [f32], geometry: &'a Geometry) -> Self {
        #[cfg(target_arch = "x86_64")]
        let avx512 = is_x86_feature_detected!("avx512f");
        #[cfg(not(target_arch = "x86_64"))]
        let avx512 = false;
        Self {
            input,
            geometry,
            avx512,
        }
    }

    /// The same panels through the plain form only, so that tests check it on any processor.
    #[cfg(test)]
    pub(super) fn plain(self) -> Self {
        Self {
            avx512: false,
            ..self
        }
    }
}

/// The kernel widths up to which a panel works out each kernel column's valid output columns up
/// front.
const PRECOMPUTED_KERNEL_WIDTH: usize = 16;

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

/// One contiguous (unit stride) or strided read of a panel row: `length` pixels from panel
/// position `position` on, read from a channel's plane at `source`, `source + stride`, ...
#[derive(Clone, Copy, Default)]
struct Read {
    position: usize,
    length: usize,
    source: usize,
}

/// What one kernel tap reads for the panel's pixels, the same in every channel: a few reads,
/// and zeros everywhere else.
struct TapPlan {
    reads: [Read; NR],
    read_count: usize,
}

impl TapPlan {
    /// The plan of tap `(kernel_y, kernel_x)` for `segments`, where `valid` are the output
    /// columns whose input column through `kernel_x` lies inside the image.
    fn new(
        geometry: &Geometry,
        segments: &[Segment],
        kernel_y: usize,
        kernel_x: usize,
        valid: Range<usize>,
    ) -> Self {
        let mut plan = TapPlan {
            reads: [Read::default(); NR],
            read_count: 0,
        };
        for segment in segments {
            let Some(input_y) = geometry.input_row(segment.out_y, kernel_y) else {
                continue;
            };
            let segment_end = segment.first_out_x + segment.length;
            let first_valid = valid.start.clamp(segment.first_out_x, segment_end);
            let end_valid = valid.end.clamp(first_valid, segment_end);
            if first_valid == end_valid {
                continue;
            }
            let first_input_x = first_valid * geometry.stride[1] + kernel_x * geometry.dilation[1]
                - geometry.padding[1];
            plan.reads[plan.read_count] = Read {
                position: segment.position + first_valid - segment.first_out_x,
                length: end_valid - first_valid,
                source: input_y * geometry.in_w + first_input_x,
            };
            plan.read_count += 1;
        }
        plan
    }

    /// Whether one read fills the whole panel row, so that nothing needs zeroing.
    fn is_one_full_read(&self) -> bool {
        self.read_count == 1 && self.reads[0].length == NR
    }
}

/// What packing one row of an image panel costs in the GEMM's task-grid model, where a tile's
/// step costs 4 and a row copied from a plain matrix 1: its reads are short copies or gathers
/// planned tap by tap. On ResNet-18's 3x3/s2 64 to 128 channel layer the panels took 245 µs of
/// the 926 µs one thread spent (22 cycles a row), and the model, counting a row as 1, cut C's
/// rows on two threads so that both packed every panel: 586 µs, against 477 µs cut by columns
/// (`int8_conv_timing --threads 2`, f32 NCHW).
pub(crate) const IMAGE_PANEL_ROW_COST: usize = 16;

impl RhsSource for ImagePanels<'_> {
    fn panel_row_cost(&self) -> usize {
        IMAGE_PANEL_ROW_COST
    }

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
        let stride = geometry.stride[1];

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
        let vector_reads = self.avx512 && stride <= 2;
        // The valid output columns of each kernel column take two divisions, so narrow kernels
        // work them out once per panel rather than once per tap (a 7x7 stem has 49 taps of
        // three channels each).
        let valid_columns: [Range<usize>; PRECOMPUTED_KERNEL_WIDTH] =
            std::array::from_fn(|kernel_x| {
                if kernel_x < kernel_w {
                    geometry.valid_columns(kernel_x)
                } else {
                    0..0
                }
            });

        // Row `d` of the matrix is tap `d % taps` of channel `d / taps`. Tap by tap, the plan
        // of its reads is made once and then run for every channel of the block, down the
        // panel rows `taps` apart.
        let panel = &mut panel[..depth * NR];
        let first_channel = first_row / taps;
        let first_tap = first_row % taps;
        for tap in 0..taps.min(depth) {
            let tap_index = (first_tap + tap) % taps;
            let (kernel_y, kernel_x) = (tap_index / kernel_w, tap_index % kernel_w);
            let valid = match valid_columns.get(kernel_x) {
                Some(valid) => valid.clone(),
                None => geometry.valid_columns(kernel_x),
            };
            let plan = TapPlan::new(geometry, segments, kernel_y, kernel_x, valid);
            let channel = first_channel + (first_tap + tap) / taps;
            let rows = panel[tap * NR..].chunks_mut(NR).step_by(taps);
            let channel_inputs = self.input[channel * input_plane..].chunks(input_plane);
            // A whole contiguous row is one copy already.
            #[cfg(target_arch = "x86_64")]
            if vector_reads && !(stride == 1 && plan.is_one_full_read()) {
                // SAFETY: The processor supports AVX-512F (`self.avx512`, see `new`).
                unsafe {
                    x86_64::pack_tap_rows(
                        &plan.reads[..plan.read_count],
                        stride,
                        rows.zip(channel_inputs),
                    )
                };
                continue;
            }
            if plan.is_one_full_read() {
                let source = plan.reads[0].source;
                for (panel_row, channel_input) in rows.zip(channel_inputs) {
                    let panel_row: &mut [f32; NR] = panel_row
                        .try_into()
                        .expect("pack_panel: panel rows are NR long");
                    copy_sixteen(&channel_input[source..], stride, panel_row);
                }
            } else {
                let reads = &plan.reads[..plan.read_count];
                for (panel_row, channel_input) in rows.zip(channel_inputs) {
                    panel_row.fill(0.0);
                    for read in reads {
                        copy_run(
                            &channel_input[read.source..],
                            stride,
                            &mut panel_row[read.position..][..read.length],
                        );
                    }
                }
            }
        }
    }
}

/// The AVX-512 form of a tap's panel rows at stride 1 or 2: each read of the plan is two masked
/// loads of the floats it uses and a permute that moves them to their panel positions, merged
/// into one register per row, which is stored once. The plain form zeroed each row, then copied
/// or gathered each read in pieces of four (on ResNet-18's 3x3/s2 64 to 128 channel layer, a
/// panel's row cost 22 cycles).
#[cfg(target_arch = "x86_64")]
mod x86_64 {
    use super::{NR, Read};
    use std::arch::x86_64::{
        __m512i, __mmask16, _mm512_loadu_si512, _mm512_mask_mov_ps, _mm512_maskz_loadu_ps,
        _mm512_permutex2var_ps, _mm512_setzero_ps, _mm512_setzero_si512, _mm512_storeu_ps,
    };

    /// One read as vector operations: the floats it uses from `source` on (`low`: lanes of the
    /// first 16, `high`: of the next 16), the permute `index` into those 32, and the panel
    /// `lanes` it fills.
    #[derive(Clone, Copy)]
    struct VectorRead {
        source: usize,
        low: __mmask16,
        high: __mmask16,
        index: __m512i,
        lanes: __mmask16,
    }

    /// Packs the rows of one tap, one per channel: `panel_row = reads of input` (zero outside
    /// the reads), for `stride` 1 or 2.
    ///
    /// # Safety
    ///
    /// The processor must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pack_tap_rows<'a>(
        reads: &[Read],
        stride: usize,
        rows: impl Iterator<Item = (&'a mut [f32], &'a [f32])>,
    ) {
        assert!(stride == 1 || stride == 2, "pack_tap_rows: stride {stride}");
        let mut vector_reads = [VectorRead {
            source: 0,
            low: 0,
            high: 0,
            index: _mm512_setzero_si512(),
            lanes: 0,
        }; NR];
        // The floats of an input plane the reads reach, checked against every row's input.
        let mut needed = 0;
        for (vector_read, read) in vector_reads.iter_mut().zip(reads) {
            let span = (read.length - 1) * stride + 1;
            needed = needed.max(read.source + span);
            let mut index = [0i32; NR];
            for (offset, lane) in index[read.position..][..read.length].iter_mut().enumerate() {
                *lane = (offset * stride) as i32;
            }
            let mask = |count: usize| ((1u32 << count.min(NR)) - 1) as __mmask16;
            *vector_read = VectorRead {
                source: read.source,
                low: mask(span),
                high: mask(span.saturating_sub(NR)),
                // SAFETY: `index` holds 16 `i32`s, the 64 bytes the load reads.
                index: unsafe { _mm512_loadu_si512(index.as_ptr().cast()) },
                lanes: mask(read.length) << read.position,
            };
        }
        let vector_reads = &vector_reads[..reads.len()];
        for (panel_row, input) in rows {
            let panel_row: &mut [f32; NR] = panel_row
                .try_into()
                .expect("pack_tap_rows: panel rows are NR long");
            assert!(
                needed <= input.len(),
                "pack_tap_rows: a read leaves the plane"
            );
            let mut row = _mm512_setzero_ps();
            for read in vector_reads {
                let pointer = input.as_ptr().wrapping_add(read.source);
                // SAFETY: The lanes the masks enable are the floats `source..source + span` of
                // the read, inside `input` (`needed` was checked); masked-off lanes are not
                // accessed, so the second pointer may lie past the plane.
                let (low, high) = unsafe {
                    (
                        _mm512_maskz_loadu_ps(read.low, pointer),
                        _mm512_maskz_loadu_ps(read.high, pointer.wrapping_add(NR)),
                    )
                };
                let values = _mm512_permutex2var_ps(low, read.index, high);
                row = _mm512_mask_mov_ps(row, read.lanes, values);
            }
            // SAFETY: `panel_row` holds the 16 floats the store writes.
            unsafe { _mm512_storeu_ps(panel_row.as_mut_ptr(), row) };
        }
    }
}

/// `output[p] = input[p * stride]` for a run of at most 16 pixels; unit-stride runs are copied
/// by `copy_short`, in pieces of fixed length rather than by a call to `memcpy`.
#[inline]
fn copy_run(input: &[f32], stride: usize, output: &mut [f32]) {
    if stride != 1 {
        let done = if stride == 2 {
            gather_even_pieces(input, output)
        } else {
            0
        };
        for (value, &input) in output[done..]
            .iter_mut()
            .zip(input[done * stride..].iter().step_by(stride))
        {
            *value = input;
        }
        return;
    }
    super::copy_short(input, output);
}

/// `output[p] = input[p * stride]` for sixteen pixels, with a fixed length so that the copy
/// compiles to whole-vector moves (unit stride) or an unrolled gather.
#[inline]
fn copy_sixteen(input: &[f32], stride: usize, output: &mut [f32; NR]) {
    match stride {
        1 => output.copy_from_slice(&input[..NR]),
        2 => {
            let done = gather_even_pieces(input, output);
            // Near the end of the image the last piece is one float short of its load.
            let input = &input[..2 * (NR - 1) + 1];
            for (position, value) in output.iter_mut().enumerate().skip(done) {
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

/// `output[p] = input[2 p]` for four pixels: stride-2 convolutions (a ResNet stem,
/// downsampling) read every other float, which SSE's shuffle picks out of two vectors at once;
/// the compiler leaves the plain loop as scalar moves.
#[cfg(target_arch = "x86_64")]
#[inline]
fn gather_even_four(input: &[f32; 8], output: &mut [f32; 4]) {
    use std::arch::x86_64::{_mm_loadu_ps, _mm_shuffle_ps, _mm_storeu_ps};
    // SAFETY: SSE is part of the x86-64 baseline; the loads read `input[0..4]` and
    // `input[4..8]` and the store writes `output[0..4]`, all inside the arrays.
    unsafe {
        let low = _mm_loadu_ps(input.as_ptr());
        let high = _mm_loadu_ps(input.as_ptr().add(4));
        _mm_storeu_ps(
            output.as_mut_ptr(),
            _mm_shuffle_ps::<0b10_00_10_00>(low, high),
        );
    }
}

/// The portable twin of the SSE `gather_even_four`.
#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn gather_even_four(input: &[f32; 8], output: &mut [f32; 4]) {
    for (position, value) in output.iter_mut().enumerate() {
        *value = input[2 * position];
    }
}

/// `output[p] = input[2 p]` for as many whole pieces of four pixels as `output` holds and
/// `input` can load (a piece loads eight floats, one past the last it uses); returns how many
/// pixels it wrote.
#[inline]
fn gather_even_pieces(input: &[f32], output: &mut [f32]) -> usize {
    let mut done = 0;
    for (piece_input, piece_output) in input.chunks_exact(8).zip(output.chunks_exact_mut(4)) {
        let piece_input: &[f32; 8] = piece_input.try_into().expect("chunks of eight");
        let piece_output: &mut [f32; 4] = piece_output.try_into().expect("chunks of four");
        gather_even_four(piece_input, piece_output);
        done += 4;
    }
    done
}
