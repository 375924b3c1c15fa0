//! A pointwise (1×1) convolution and the depthwise convolution that reads it, run together band
//! by band of output rows, so the wide tensor between them never leaves the cache.
//!
//! An inverted residual block (MobileNetV2) widens its input six times in a 1×1 layer and runs a
//! depthwise layer on the result: at 112 × 112 × 96 that tensor is 4.8 MB, more than a core's
//! L2, so run one layer after the other it goes out to memory and comes back. Here each task
//! (a run of output rows, one per thread) keeps a band of the wide tensor's rows in a buffer of
//! its own: for each band of output rows it computes, with one GEMM, the rows of the wide tensor
//! that the band reads and it does not hold yet (the rows shared with the band before are moved
//! to the buffer's start, not computed again), then runs the depthwise kernel on the buffer.
//! Each element goes through the same GEMM and depthwise arithmetic as when the layers run apart,
//! so the output has the same bits.
//!
//! On a small image, where neighbouring tasks would compute too many of the same wide rows, one
//! task runs the bands and spreads each band's GEMM and depthwise rows over the threads.

use super::{DepthwiseRow, Method, PARALLEL_CHUNK, PackedConv2dChannelsLast};
use crate::error::{KernelResult, invalid_parameter};
use crate::kernels::conv::{ConvWorkspace, check_buffers};
use crate::kernels::gemm::{Lhs, MatrixRef, Rhs, gemm_by_rows, gemm_sequential};
use crate::threading;

/// About how many bytes of the wide tensor a band holds: half of a 512 KB L2, which leaves room
/// for the pointwise weights and the input and output rows passing through (`pointwise_depthwise
/// _timing` on a 2 MB L2 ran 64 KB bands slower and 512 KB ones no faster).
const BAND_BYTES: usize = 256 << 10;

/// Image rows per wide row that two tasks both compute, at least, for the rows to be cut among
/// threads (see `forward_in_bands`): at two threads a 3 x 3 kernel of stride 1 shares 2 rows, so
/// images from 8 rows up are cut; 7 x 7 ones (MobileNetV2's last blocks) run band by band on all
/// threads. `pointwise_depthwise_timing` at 2 threads, against the layers run apart: 14 x 14 x 384
/// cut 0.74x, one task 1.11x; 7 x 7 x 960 cut 1.04x, one task 0.94x.
const MIN_ROWS_PER_SHARED_ROW: usize = 4;

/// A 1×1 convolution and the channels-last depthwise convolution that reads it, ready to run
/// together band by band (see the module's documentation).
#[derive(Clone, Debug)]
pub struct PackedPointwiseDepthwise {
    pointwise: PackedConv2dChannelsLast,
    depthwise: PackedConv2dChannelsLast,
}

impl PackedPointwiseDepthwise {
    /// Pairs a 1×1 convolution with unit stride and no padding (`pointwise`) with the depthwise
    /// convolution that reads its output (`depthwise`, as many channels).
    pub fn new(
        pointwise: PackedConv2dChannelsLast,
        depthwise: PackedConv2dChannelsLast,
    ) -> KernelResult<Self> {
        if !matches!(pointwise.method, Method::Gemm { .. }) || !pointwise.is_pointwise() {
            return Err(invalid_parameter(
                "conv",
                "the first layer of a pointwise-depthwise pair is a 1x1 convolution with unit \
                 stride and no padding",
            ));
        }
        if !matches!(depthwise.method, Method::Depthwise { .. })
            || depthwise.in_channels != pointwise.out_channels
        {
            return Err(invalid_parameter(
                "conv",
                format!(
                    "the second layer of a pointwise-depthwise pair is a depthwise convolution of \
                     the first's {} channels",
                    pointwise.out_channels
                ),
            ));
        }
        Ok(Self {
            pointwise,
            depthwise,
        })
    }

    /// The output shape `[N, out_h, out_w, channels]` for an input `[N, H, W, C]`.
    pub fn output_shape(&self, input_shape: [usize; 4]) -> KernelResult<[usize; 4]> {
        self.depthwise
            .output_shape(self.pointwise.output_shape(input_shape)?)
    }

    /// Runs both layers on an `[N, H, W, C]` input into an output of `output_shape(..)`.
    pub fn forward(
        &self,
        input: &[f32],
        input_shape: [usize; 4],
        output: &mut [f32],
        workspace: &mut ConvWorkspace,
    ) -> KernelResult<()> {
        self.forward_in_bands(input, input_shape, output, workspace, BAND_BYTES)
    }

    /// [`Self::forward`] with bands of about `band_bytes` of the wide tensor (at least the rows
    /// one output row reads), which tests make small so that an image takes many bands.
    pub(in crate::kernels::conv) fn forward_in_bands(
        &self,
        input: &[f32],
        input_shape: [usize; 4],
        output: &mut [f32],
        workspace: &mut ConvWorkspace,
        band_bytes: usize,
    ) -> KernelResult<()> {
        let (pointwise, depthwise) = (&self.pointwise, &self.depthwise);
        let wide_shape = pointwise.output_shape(input_shape)?;
        let output_shape = depthwise.output_shape(wide_shape)?;
        check_buffers(input, input_shape, output, output_shape, None)?;
        if output.is_empty() {
            return Ok(());
        }
        let (
            Method::Gemm {
                weight: pointwise_weight,
            },
            Method::Depthwise { weight, bias },
        ) = (&pointwise.method, &depthwise.method)
        else {
            unreachable!("PackedPointwiseDepthwise: `new` checked the methods")
        };
        let [batch, in_h, in_w, in_channels] = input_shape;
        let channels = depthwise.out_channels;
        let geometry = depthwise.geometry(wide_shape, output_shape);
        let wide_row = in_w * channels;
        let output_row = geometry.out_w * channels;
        let [kernel_h, _] = geometry.kernel;
        let reach = (kernel_h - 1) * geometry.dilation[0] + 1;
        // Output rows per band: as many as keep the wide rows they read within `BAND_BYTES`.
        let band_rows = (band_bytes / (wide_row * 4).max(1)).max(reach);
        let band = ((band_rows - reach) / geometry.stride[0] + 1).min(geometry.out_h);
        let band_wide_rows = ((band - 1) * geometry.stride[0] + reach).min(in_h);

        let rows = batch * geometry.out_h;
        // One task per thread, each a run of output rows: two neighbouring tasks both compute
        // the wide rows that their rows' kernels share (`reach - stride` of them), which is
        // worth it while they are a small part of the image. On a small image (7 x 7) one task
        // runs the bands instead, and each band's GEMM and depthwise rows spread over the
        // threads, as the two layers would run apart.
        let threads = threading::parallel_width().min(rows);
        let shared_rows = reach.saturating_sub(geometry.stride[0]);
        let tasks = if (threads - 1) * shared_rows * MIN_ROWS_PER_SHARED_ROW <= in_h {
            threads
        } else {
            1
        };
        let rows_per_task = rows.div_ceil(tasks);
        let tasks = rows.div_ceil(rows_per_task);
        let scratch_length = band_wide_rows * wide_row;
        let scratch = workspace.columns(tasks * scratch_length);

        let gemm_options = pointwise.gemm_options(None);
        // Each of several tasks runs its GEMMs on its own thread.
        let gemm = if tasks > 1 {
            gemm_sequential
        } else {
            gemm_by_rows
        };
        let image_len = in_h * in_w * in_channels;
        let clamp = depthwise.depthwise_clamp(false);
        let failure = std::sync::Mutex::new(None);
        threading::run_chunks_with_scratch_mut(
            output,
            rows_per_task * output_row,
            scratch,
            scratch_length,
            |task, output, scratch| {
                // The wide rows `held` (image, first row, end) at the start of `scratch`.
                let mut held: Option<(usize, usize, usize)> = None;
                let first_row = task * rows_per_task;
                let end = first_row + output.len() / output_row;
                let mut row = first_row;
                while row < end {
                    let (image, out_y) = (row / geometry.out_h, row % geometry.out_h);
                    let band_end = (out_y + band).min(geometry.out_h).min(out_y + end - row);
                    // The wide rows the band reads: `first..last`.
                    let last = ((band_end - 1) * geometry.stride[0] + reach)
                        .saturating_sub(geometry.padding[0])
                        .min(in_h);
                    let first = (out_y * geometry.stride[0])
                        .saturating_sub(geometry.padding[0])
                        .min(last);
                    let mut computed = first;
                    if let Some((held_image, held_first, held_end)) = held
                        && held_image == image
                        && held_end > first
                    {
                        scratch.copy_within(
                            (first - held_first) * wide_row..(held_end - held_first) * wide_row,
                            0,
                        );
                        computed = held_end;
                    }
                    if last > computed {
                        let pixels = &input[image * image_len..]
                            [computed * in_w * in_channels..last * in_w * in_channels];
                        let result =
                            MatrixRef::row_major(pixels, (last - computed) * in_w, in_channels)
                                .and_then(|matrix| {
                                    gemm(
                                        Lhs::Matrix(matrix),
                                        Rhs::Packed(pointwise_weight),
                                        &mut scratch[(computed - first) * wide_row
                                            ..(last - first) * wide_row],
                                        channels,
                                        &gemm_options,
                                    )
                                });
                        if let Err(error) = result {
                            if let Ok(mut failure) = failure.lock() {
                                *failure = Some(error);
                            }
                            return;
                        }
                    }
                    held = Some((image, first, last));
                    let band_input = &scratch[..(last - first) * wide_row];
                    let band_output = &mut output[(row - first_row) * output_row
                        ..(row - first_row + band_end - out_y) * output_row];
                    let rows_per_chunk = threading::balanced_rows_per_task(
                        band_end - out_y,
                        output_row,
                        PARALLEL_CHUNK,
                    );
                    threading::run_chunks_mut(
                        band_output,
                        rows_per_chunk * output_row,
                        |chunk, rows| {
                            for (offset, output_row_values) in
                                rows.chunks_exact_mut(output_row).enumerate()
                            {
                                let row_input = DepthwiseRow {
                                    input: band_input,
                                    first_row: first,
                                    weight,
                                    bias,
                                    geometry: &geometry,
                                    channels,
                                    out_y: out_y + chunk * rows_per_chunk + offset,
                                    clamp,
                                };
                                depthwise.depthwise_output_row(&row_input, None, output_row_values);
                            }
                        },
                    );
                    row += band_end - out_y;
                }
            },
        );
        match failure.into_inner().ok().flatten() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}
