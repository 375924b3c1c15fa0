//! A channels-last depthwise convolution run together with the 1×1 convolutions around it, band
//! by band of output rows, so that the tensors between them never leave the cache.
//!
//! An inverted residual block (MobileNetV2) widens its input six times in a 1×1 layer (the
//! expansion), runs a depthwise layer on the result and narrows it again in a second 1×1 layer
//! (the projection), which adds the block's input where the shapes allow. At 112 × 112 × 96 the
//! wide tensor is 4.8 MB, the depthwise output of the first block 1.6 MB: run one layer after
//! the other, each goes out of a core's L2 and comes back. Here each task (a run of output rows,
//! one per thread) keeps a band of the wide tensor's rows in a buffer of its own: for each band
//! of output rows it computes, with one GEMM, the rows of the wide tensor that the band reads and
//! it does not hold yet (the rows shared with the band before are moved to the buffer's start,
//! not computed again), runs the depthwise kernel on the buffer into a second buffer of the
//! band's rows, and projects those with a second GEMM into the output rows. Without an
//! expansion the depthwise kernel reads the input rows themselves; without a projection it
//! writes the output rows. Each element goes through the same GEMM and depthwise arithmetic as
//! when the layers run apart, so the output has the same bits.
//!
//! On a small image, where neighbouring tasks would compute too many of the same wide rows, the
//! block is cut by channels of the wide tensor instead (`forward_by_channels`): each thread
//! computes its channels of the expansion and of the depthwise layer for every pixel and their
//! share of the projection, and the threads then add the shares. Where that does not apply (no
//! expansion or no projection), one task runs the bands and spreads each band's GEMMs and
//! depthwise rows over the threads.

use std::ops::Range;
use std::sync::OnceLock;

use super::{DepthwiseRow, Method, PARALLEL_CHUNK, PackedConv2dChannelsLast};
use crate::alloc::AlignedBuffer;
use crate::error::{KernelResult, invalid_parameter};
use crate::kernels::activation::apply_activation_in_place;
use crate::kernels::conv::{ConvWorkspace, check_buffers};
use crate::kernels::gemm::{
    Bias, Epilogue, GemmOptions, KC, Lhs, MatrixRef, NR, PackedMatrix, Rhs, gemm_by_rows,
    gemm_sequential, gemm_sequential_prepacked,
};
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

/// Output rows per thread under which a block with both 1x1 layers runs cut by channels of the
/// wide tensor rather than by rows (see `forward_by_channels`). MobileNetV2's 7 x 7 outputs gave
/// two threads 4 and 3 rows, or one task whose GEMMs and depthwise rows were cut three times
/// apart; cut by channels, its last four blocks ran 12-17% faster at two threads (per-layer
/// profile, 800 inferences: 113 -> 99, 116 -> 97, 114 -> 97, 158 -> 141 us). Its 14 x 14 blocks
/// (7 rows each) stay cut by rows: cut by channels they ran 2-8% slower.
const MIN_ROWS_PER_TASK: usize = 6;

/// The most bytes one task's share of the wide tensor, of the depthwise output and of the
/// projection's partial sums may take when the block is cut by channels (every pixel at once).
const CHANNEL_TASK_MAX_BYTES: usize = 512 << 10;

/// A channels-last depthwise convolution with the 1×1 convolution it reads (`expand`) and the
/// one that reads it (`project`), either or both, ready to run together band by band (see the
/// module's documentation).
#[derive(Clone, Debug)]
pub struct PackedDepthwiseBlock {
    expand: Option<PackedConv2dChannelsLast>,
    depthwise: PackedConv2dChannelsLast,
    project: Option<PackedConv2dChannelsLast>,
    /// The weights cut for `forward_by_channels`, made the first time the block runs that way,
    /// for the number of threads it ran on then (at another number it runs cut by rows). They
    /// hold the depthwise and projection weights a second time: MobileNetV2's four blocks cut
    /// this way, 2.9 MB on top of the network's 14 MB.
    channel_split: OnceLock<ChannelSplit>,
}

/// The depthwise and projection weights of a block cut by channels of the wide tensor, one share
/// per task (the expansion's columns are read in place).
#[derive(Clone, Debug)]
struct ChannelSplit {
    /// Each task's wide channels: whole panels of the expansion's packed weight.
    channels: Vec<Range<usize>>,
    /// Each task's depthwise weights, `[taps, its channels]`.
    depthwise: Vec<AlignedBuffer>,
    /// Each task's rows of the projection's weight, packed on their own.
    project: Vec<PackedMatrix>,
}

/// What one task's bands read and write besides the layers (see `forward_in_bands`).
struct Bands<'a> {
    input: &'a [f32],
    input_shape: [usize; 4],
    residual: Option<&'a [f32]>,
    geometry: super::Geometry,
    /// Image rows one output row's kernel spans.
    reach: usize,
    /// Floats of an output row.
    output_row: usize,
    /// Output rows per band.
    band: usize,
    /// Floats of the wide rows a band reads (without an expansion, 0: it reads the input).
    wide_length: usize,
    /// How many tasks run at once: with more than one, each runs its GEMMs on its own thread.
    tasks: usize,
    /// Output rows per task (the last task may have fewer).
    rows_per_task: usize,
}

impl PackedDepthwiseBlock {
    /// Puts together a depthwise convolution (`depthwise`, one channel per group) with the 1×1
    /// convolution of unit stride and no padding whose output it reads (`expand`, as many output
    /// channels), and the one that reads its output (`project`, as many input channels), either
    /// of which may be absent.
    pub fn new(
        expand: Option<PackedConv2dChannelsLast>,
        depthwise: PackedConv2dChannelsLast,
        project: Option<PackedConv2dChannelsLast>,
    ) -> KernelResult<Self> {
        let is_pointwise = |layer: &PackedConv2dChannelsLast| {
            matches!(layer.method, Method::Gemm { .. }) && layer.is_pointwise()
        };
        if !matches!(depthwise.method, Method::Depthwise { .. }) {
            return Err(invalid_parameter(
                "conv",
                "the middle layer of a depthwise block is a depthwise convolution",
            ));
        }
        if let Some(expand) = &expand
            && (!is_pointwise(expand) || expand.out_channels != depthwise.in_channels)
        {
            return Err(invalid_parameter(
                "conv",
                format!(
                    "a depthwise block's first layer is a 1x1 convolution with unit stride and no \
                     padding into the depthwise layer's {} channels",
                    depthwise.in_channels
                ),
            ));
        }
        if let Some(project) = &project
            && (!is_pointwise(project) || project.in_channels != depthwise.out_channels)
        {
            return Err(invalid_parameter(
                "conv",
                format!(
                    "a depthwise block's last layer is a 1x1 convolution with unit stride and no \
                     padding from the depthwise layer's {} channels",
                    depthwise.out_channels
                ),
            ));
        }
        Ok(Self {
            expand,
            depthwise,
            project,
            channel_split: OnceLock::new(),
        })
    }

    /// The output shape `[N, out_h, out_w, channels]` for an input `[N, H, W, C]`.
    pub fn output_shape(&self, input_shape: [usize; 4]) -> KernelResult<[usize; 4]> {
        Ok(self.shapes(input_shape)?[2])
    }

    /// The shapes of the depthwise layer's input (the expansion's output, or the block's input),
    /// of its output, and of the block's output, for an input `[N, H, W, C]`.
    fn shapes(&self, input_shape: [usize; 4]) -> KernelResult<[[usize; 4]; 3]> {
        let wide_shape = match &self.expand {
            Some(expand) => expand.output_shape(input_shape)?,
            None => input_shape,
        };
        let depthwise_shape = self.depthwise.output_shape(wide_shape)?;
        let output_shape = match &self.project {
            Some(project) => project.output_shape(depthwise_shape)?,
            None => depthwise_shape,
        };
        Ok([wide_shape, depthwise_shape, output_shape])
    }

    /// Runs the layers on an `[N, H, W, C]` input into an output of `output_shape(..)`.
    pub fn forward(
        &self,
        input: &[f32],
        input_shape: [usize; 4],
        output: &mut [f32],
        workspace: &mut ConvWorkspace,
    ) -> KernelResult<()> {
        self.forward_in_bands(input, input_shape, None, output, workspace, BAND_BYTES)
    }

    /// [`Self::forward`] with a residual of the output's shape added by the projection (before
    /// its activation, as `PackedConv2dChannelsLast::forward_residual` adds it). A block
    /// without a projection takes none.
    pub fn forward_residual(
        &self,
        input: &[f32],
        input_shape: [usize; 4],
        residual: &[f32],
        output: &mut [f32],
        workspace: &mut ConvWorkspace,
    ) -> KernelResult<()> {
        if self.project.is_none() {
            return Err(invalid_parameter(
                "conv",
                "a depthwise block without a projection adds no residual",
            ));
        }
        self.forward_in_bands(
            input,
            input_shape,
            Some(residual),
            output,
            workspace,
            BAND_BYTES,
        )
    }

    /// [`Self::forward`] with bands of about `band_bytes` of the wide tensor (at least the rows
    /// one output row reads), which tests make small so that an image takes many bands.
    pub(in crate::kernels::conv) fn forward_in_bands(
        &self,
        input: &[f32],
        input_shape: [usize; 4],
        residual: Option<&[f32]>,
        output: &mut [f32],
        workspace: &mut ConvWorkspace,
        band_bytes: usize,
    ) -> KernelResult<()> {
        let depthwise = &self.depthwise;
        let [wide_shape, depthwise_shape, output_shape] = self.shapes(input_shape)?;
        check_buffers(input, input_shape, output, output_shape, residual)?;
        if output.is_empty() {
            return Ok(());
        }
        let [batch, in_h, in_w, _] = input_shape;
        let channels = depthwise.out_channels;
        let geometry = depthwise.geometry(wide_shape, depthwise_shape);
        let wide_row = in_w * channels;
        let [kernel_h, _] = geometry.kernel;
        let reach = (kernel_h - 1) * geometry.dilation[0] + 1;
        // Output rows per band: as many as keep the wide rows they read within `band_bytes`.
        let band_rows = (band_bytes / (wide_row * 4).max(1)).max(reach);
        let band = ((band_rows - reach) / geometry.stride[0] + 1).min(geometry.out_h);
        let band_wide_rows = ((band - 1) * geometry.stride[0] + reach).min(in_h);

        let rows = batch * geometry.out_h;
        if let Some(split) = self.channel_split(input_shape, [wide_shape, depthwise_shape]) {
            return self.forward_by_channels(
                split,
                input,
                input_shape,
                [wide_shape, depthwise_shape],
                residual,
                output,
                workspace,
            );
        }
        // One task per thread, each a run of output rows: with an expansion, two neighbouring
        // tasks both compute the wide rows that their rows' kernels share (`reach - stride` of
        // them), which is worth it while they are a small part of the image. On a small image
        // (7 x 7) one task runs the bands instead, and each band's GEMMs and depthwise rows
        // spread over the threads, as the layers would run apart.
        let threads = threading::parallel_width().min(rows);
        let shared_rows = if self.expand.is_some() {
            reach.saturating_sub(geometry.stride[0])
        } else {
            0
        };
        let tasks = if (threads - 1) * shared_rows * MIN_ROWS_PER_SHARED_ROW <= in_h {
            threads
        } else {
            1
        };
        let rows_per_task = rows.div_ceil(tasks);
        let tasks = rows.div_ceil(rows_per_task);
        let wide_length = if self.expand.is_some() {
            band_wide_rows * wide_row
        } else {
            0
        };
        let band_output_length = if self.project.is_some() {
            band * geometry.out_w * channels
        } else {
            0
        };
        let (scratch, scratch_stride) =
            workspace.task_scratch(tasks, wide_length + band_output_length);
        let output_row = output_shape[2] * output_shape[3];
        let bands = Bands {
            input,
            input_shape,
            residual,
            geometry,
            reach,
            output_row,
            band,
            wide_length,
            tasks,
            rows_per_task,
        };
        let failure = threading::FirstError::new();
        threading::run_chunks_with_scratch_mut(
            output,
            rows_per_task * output_row,
            scratch,
            scratch_stride,
            |task, output, scratch| failure.record(self.run_task(&bands, task, output, scratch)),
        );
        failure.into_result()
    }

    /// The bands of task `task`: its output rows (`output`) band by band, with `scratch` for the
    /// wide rows (`bands.wide_length`) and the depthwise rows of a band.
    fn run_task(
        &self,
        bands: &Bands<'_>,
        task: usize,
        output: &mut [f32],
        scratch: &mut [f32],
    ) -> KernelResult<()> {
        let depthwise = &self.depthwise;
        let Method::Depthwise { weight, bias } = &depthwise.method else {
            unreachable!("PackedDepthwiseBlock: `new` checked the method")
        };
        let geometry = &bands.geometry;
        let [_, in_h, in_w, in_channels] = bands.input_shape;
        let channels = depthwise.out_channels;
        let wide_row = in_w * channels;
        let depthwise_row = geometry.out_w * channels;
        let (reach, output_row) = (bands.reach, bands.output_row);
        let image_len = in_h * in_w * in_channels;
        let clamp = depthwise.depthwise_clamp(false);
        // Each of several tasks runs its GEMMs on its own thread.
        let gemm = if bands.tasks > 1 {
            gemm_sequential
        } else {
            gemm_by_rows
        };
        let (wide, band_output) = scratch.split_at_mut(bands.wide_length);
        // The wide rows `held` (image, first row, end) at the start of `wide`.
        let mut held: Option<(usize, usize, usize)> = None;
        let first_row = task * bands.rows_per_task;
        let end = first_row + output.len() / output_row;
        let mut row = first_row;
        while row < end {
            let (image, out_y) = (row / geometry.out_h, row % geometry.out_h);
            let band_end = (out_y + bands.band)
                .min(geometry.out_h)
                .min(out_y + end - row);
            let band_rows = band_end - out_y;
            // The wide rows the band reads: `first..last`.
            let last = ((band_end - 1) * geometry.stride[0] + reach)
                .saturating_sub(geometry.padding[0])
                .min(in_h);
            let first = (out_y * geometry.stride[0])
                .saturating_sub(geometry.padding[0])
                .min(last);
            let image_input = &bands.input[image * image_len..][..image_len];
            // The depthwise layer's input, from image row `band_first_row` on.
            let (band_input, band_first_row) = match &self.expand {
                Some(expand) => {
                    let Method::Gemm { weight } = &expand.method else {
                        unreachable!("PackedDepthwiseBlock: `new` checked the method")
                    };
                    let mut computed = first;
                    if let Some((held_image, held_first, held_end)) = held
                        && held_image == image
                        && held_end > first
                    {
                        wide.copy_within(
                            (first - held_first) * wide_row..(held_end - held_first) * wide_row,
                            0,
                        );
                        computed = held_end;
                    }
                    if last > computed {
                        let pixels =
                            &image_input[computed * in_w * in_channels..last * in_w * in_channels];
                        let matrix =
                            MatrixRef::row_major(pixels, (last - computed) * in_w, in_channels)?;
                        gemm(
                            Lhs::Matrix(matrix),
                            Rhs::Packed(weight),
                            &mut wide[(computed - first) * wide_row..(last - first) * wide_row],
                            channels,
                            &expand.gemm_options(None),
                        )?;
                    }
                    held = Some((image, first, last));
                    (&wide[..(last - first) * wide_row], first)
                }
                None => (image_input, 0),
            };
            let local = row - first_row;
            let band_depthwise = match &self.project {
                Some(_) => &mut band_output[..band_rows * depthwise_row],
                None => &mut output[local * output_row..(local + band_rows) * output_row],
            };
            let rows_per_chunk =
                threading::balanced_rows_per_task(band_rows, depthwise_row, PARALLEL_CHUNK);
            threading::run_chunks_mut(
                band_depthwise,
                rows_per_chunk * depthwise_row,
                |chunk, rows| {
                    depthwise.depthwise_output_rows(
                        rows,
                        depthwise_row,
                        |offset| DepthwiseRow {
                            input: band_input,
                            first_row: band_first_row,
                            weight,
                            bias,
                            geometry,
                            channels,
                            out_y: out_y + chunk * rows_per_chunk + offset,
                            clamp,
                        },
                        |_| None,
                    );
                },
            );
            if let Some(project) = &self.project {
                let Method::Gemm { weight } = &project.method else {
                    unreachable!("PackedDepthwiseBlock: `new` checked the method")
                };
                let matrix = MatrixRef::row_major(
                    &band_output[..band_rows * depthwise_row],
                    band_rows * geometry.out_w,
                    channels,
                )?;
                let residual = bands
                    .residual
                    .map(|residual| &residual[row * output_row..(row + band_rows) * output_row]);
                gemm(
                    Lhs::Matrix(matrix),
                    Rhs::Packed(weight),
                    &mut output[local * output_row..(local + band_rows) * output_row],
                    project.out_channels,
                    &project.gemm_options(residual),
                )?;
            }
            row = band_end + image * geometry.out_h;
        }
        Ok(())
    }

    /// Whether a block on an input of `input_shape` runs cut by channels of the wide tensor on
    /// this many threads (`forward_by_channels`), given the wide and depthwise shapes: with both
    /// 1x1 layers, an expansion one block of the shared dimension deep (its columns are then
    /// read in place), a panel of channels for each thread, too few output rows for a cut by
    /// rows (`MIN_ROWS_PER_TASK`), and every task's buffers within `CHANNEL_TASK_MAX_BYTES`.
    fn cuts_channels(
        &self,
        input_shape: [usize; 4],
        shapes: [[usize; 4]; 2],
        threads: usize,
    ) -> bool {
        let (Some(expand), Some(project)) = (&self.expand, &self.project) else {
            return false;
        };
        let Method::Gemm { weight } = &expand.method else {
            return false;
        };
        let [batch, in_h, in_w, _] = input_shape;
        let [_, [_, out_h, out_w, channels]] = shapes;
        let panels = channels.div_ceil(NR);
        if threads < 2 || weight.depth() > KC || panels < threads {
            return false;
        }
        if batch * out_h >= threads * MIN_ROWS_PER_TASK {
            return false;
        }
        let share = panels.div_ceil(threads) * NR;
        let out_pixels = batch * out_h * out_w;
        let floats = (batch * in_h * in_w + out_pixels) * share + out_pixels * project.out_channels;
        floats.saturating_mul(size_of::<f32>()) <= CHANNEL_TASK_MAX_BYTES
    }

    /// Whether the block runs cut by channels on an input of `input_shape` at the present
    /// number of threads, where its output then differs from its layers' in the last bits.
    #[cfg(test)]
    pub(in crate::kernels::conv) fn cuts_channels_now(&self, input_shape: [usize; 4]) -> bool {
        self.shapes(input_shape).is_ok_and(|[wide, depthwise, _]| {
            self.cuts_channels(input_shape, [wide, depthwise], threading::parallel_width())
        })
    }

    /// The weights cut by channels for this many threads when the block runs that way on an
    /// input of `input_shape` (see `cuts_channels`); `None` to cut it by rows, also when the
    /// weights were cut for another number of threads before.
    fn channel_split(
        &self,
        input_shape: [usize; 4],
        shapes: [[usize; 4]; 2],
    ) -> Option<&ChannelSplit> {
        let threads = threading::parallel_width();
        if !self.cuts_channels(input_shape, shapes, threads) {
            return None;
        }
        let split = self
            .channel_split
            .get_or_init(|| self.split_channels(threads));
        (split.channels.len() == threads).then_some(split)
    }

    /// The depthwise and projection weights cut into `tasks` shares of whole panels of wide
    /// channels.
    fn split_channels(&self, tasks: usize) -> ChannelSplit {
        let channels = self.depthwise.out_channels;
        let panels = channels.div_ceil(NR);
        let boundary = |task: usize| (panels * task / tasks * NR).min(channels);
        let ranges: Vec<Range<usize>> = (0..tasks)
            .map(|task| boundary(task)..boundary(task + 1))
            .collect();
        let Method::Depthwise { weight, .. } = &self.depthwise.method else {
            unreachable!("PackedDepthwiseBlock: `new` checked the method")
        };
        let taps = self.depthwise.kernel[0] * self.depthwise.kernel[1];
        let depthwise = ranges
            .iter()
            .map(|range| {
                let mut share = AlignedBuffer::zeroed(taps * range.len());
                for (tap, values) in share
                    .as_mut_slice()
                    .chunks_exact_mut(range.len().max(1))
                    .enumerate()
                {
                    values.copy_from_slice(&weight.as_slice()[tap * channels..][range.clone()]);
                }
                share
            })
            .collect();
        let project = match self.project.as_ref().map(|project| &project.method) {
            Some(Method::Gemm { weight }) => ranges
                .iter()
                .map(|range| weight.row_range(range.clone()))
                .collect(),
            _ => unreachable!("PackedDepthwiseBlock: `cuts_channels` checked the projection"),
        };
        ChannelSplit {
            channels: ranges,
            depthwise,
            project,
        }
    }

    /// The block cut by channels of the wide tensor, each task on its own thread: task `t`
    /// computes its channels of the expansion for every pixel (its columns of the expansion's
    /// weight), the depthwise layer on them, and the projection of those channels alone (its
    /// rows of the projection's weight), a partial sum of every output; then the output's rows,
    /// cut among the threads, add the tasks' partial sums, the bias and the residual, and the
    /// activation. Every task reads a share of each weight and writes only its own buffers;
    /// the two sums of the projection are added in another order than one GEMM adds them, so
    /// the output differs from the layers' run apart in the last bits.
    #[allow(clippy::too_many_arguments)]
    fn forward_by_channels(
        &self,
        split: &ChannelSplit,
        input: &[f32],
        input_shape: [usize; 4],
        [wide_shape, depthwise_shape]: [[usize; 4]; 2],
        residual: Option<&[f32]>,
        output: &mut [f32],
        workspace: &mut ConvWorkspace,
    ) -> KernelResult<()> {
        let Some(project) = &self.project else {
            unreachable!("PackedDepthwiseBlock: `cuts_channels` checked the layers")
        };
        let [batch, in_h, in_w, _] = input_shape;
        let [_, out_h, out_w, _] = depthwise_shape;
        let wide_pixels = batch * in_h * in_w;
        let out_pixels = batch * out_h * out_w;
        let out_channels = project.out_channels;
        let share = split.channels.iter().map(Range::len).max().unwrap_or(0);
        let (wide_length, depthwise_length) = (wide_pixels * share, out_pixels * share);
        let partial_length = out_pixels * out_channels;
        let tasks = split.channels.len();
        let (scratch, stride) =
            workspace.task_scratch(tasks, wide_length + depthwise_length + partial_length);
        let failure = threading::FirstError::new();
        threading::run_chunks_mut(scratch, stride, |task, scratch| {
            let (wide, rest) = scratch.split_at_mut(wide_length);
            let (depthwise_output, partial) = rest.split_at_mut(depthwise_length);
            let buffers = ChannelTaskBuffers {
                wide,
                depthwise: depthwise_output,
                partial: &mut partial[..partial_length],
            };
            let shapes = [input_shape, wide_shape, depthwise_shape];
            failure.record(self.run_channel_task(split, task, input, shapes, buffers));
        });
        failure.into_result()?;

        let scratch: &[f32] = scratch;
        let partial = |task: usize| {
            &scratch[task * stride + wide_length + depthwise_length..][..partial_length]
        };
        let pixels_per_task = out_pixels.div_ceil(threading::parallel_width());
        threading::run_chunks_mut(output, pixels_per_task * out_channels, |chunk, values| {
            let first = chunk * pixels_per_task * out_channels;
            values.copy_from_slice(&partial(0)[first..][..values.len()]);
            for task in 1..tasks {
                let sums = &partial(task)[first..][..values.len()];
                values
                    .iter_mut()
                    .zip(sums)
                    .for_each(|(value, sum)| *value += sum);
            }
            if let Some(bias) = &project.bias {
                for pixel in values.chunks_exact_mut(out_channels) {
                    pixel
                        .iter_mut()
                        .zip(bias)
                        .for_each(|(value, bias)| *value += bias);
                }
            }
            if let Some(residual) = residual {
                let residual = &residual[first..][..values.len()];
                values
                    .iter_mut()
                    .zip(residual)
                    .for_each(|(value, residual)| *value += residual);
            }
            if let Some(activation) = project.activation {
                apply_activation_in_place(values, activation);
            }
        });
        Ok(())
    }

    /// Task `task` of `forward_by_channels`: its channels of the expansion and of the depthwise
    /// layer for every pixel, and their projection (without bias) into `buffers.partial`.
    /// `shapes` are the input's, the wide tensor's and the depthwise output's.
    fn run_channel_task(
        &self,
        split: &ChannelSplit,
        task: usize,
        input: &[f32],
        [input_shape, wide_shape, depthwise_shape]: [[usize; 4]; 3],
        buffers: ChannelTaskBuffers<'_>,
    ) -> KernelResult<()> {
        let (Some(expand), Some(project)) = (&self.expand, &self.project) else {
            unreachable!("PackedDepthwiseBlock: `cuts_channels` checked the layers")
        };
        let (
            Method::Gemm {
                weight: expand_weight,
            },
            Method::Depthwise { bias, .. },
        ) = (&expand.method, &self.depthwise.method)
        else {
            unreachable!("PackedDepthwiseBlock: `new` checked the methods")
        };
        let channels = split.channels[task].clone();
        let width = channels.len();
        let [batch, in_h, in_w, in_channels] = input_shape;
        let [_, out_h, out_w, _] = depthwise_shape;
        let wide = &mut buffers.wide[..batch * in_h * in_w * width];
        let depthwise_output = &mut buffers.depthwise[..batch * out_h * out_w * width];
        let columns = expand_weight
            .column_range(channels.start, width)
            .ok_or_else(|| {
                invalid_parameter("conv", "a depthwise block's channels cut mid-panel")
            })?;
        let pixels = MatrixRef::row_major(input, batch * in_h * in_w, in_channels)?;
        let options = GemmOptions {
            accumulate: false,
            epilogue: Epilogue::from_parts(
                expand
                    .bias
                    .as_deref()
                    .map(|bias| Bias::PerColumn(&bias[channels.clone()])),
                expand.activation,
            ),
            residual: None,
        };
        gemm_sequential_prepacked(Lhs::Matrix(pixels), columns, wide, width, &options)?;

        let depthwise = &self.depthwise;
        let geometry = depthwise.geometry(wide_shape, depthwise_shape);
        let clamp = depthwise.depthwise_clamp(false);
        let image_length = in_h * in_w * width;
        let row_length = out_w * width;
        depthwise.depthwise_output_rows(
            depthwise_output,
            row_length,
            |row| {
                let (image, out_y) = (row / out_h, row % out_h);
                DepthwiseRow {
                    input: &wide[image * image_length..][..image_length],
                    first_row: 0,
                    weight: split.depthwise[task].as_slice(),
                    bias: &bias[channels.clone()],
                    geometry: &geometry,
                    channels: width,
                    out_y,
                    clamp,
                }
            },
            |_| None,
        );

        let matrix = MatrixRef::row_major(depthwise_output, batch * out_h * out_w, width)?;
        gemm_sequential(
            Lhs::Matrix(matrix),
            Rhs::Packed(&split.project[task]),
            buffers.partial,
            project.out_channels,
            &GemmOptions::default(),
        )
    }
}

/// One task's buffers in `PackedDepthwiseBlock::forward_by_channels`, each at least as long as
/// its share of channels needs.
struct ChannelTaskBuffers<'a> {
    /// Its channels of the expansion's output, `[pixels, channels]`.
    wide: &'a mut [f32],
    /// Its channels of the depthwise output.
    depthwise: &'a mut [f32],
    /// Its partial sums of the projection, `[output pixels, output channels]`.
    partial: &'a mut [f32],
}
