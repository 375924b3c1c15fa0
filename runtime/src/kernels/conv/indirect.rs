//! NCHW convolution as an indirect GEMM: `W * im2col(x)` where the micro-kernel reads each step
//! of the im2col matrix straight from the image instead of from packed panels.
//!
//! The packed GEMM copies every column of `im2col(x)` into a panel before multiplying it; for a
//! stem (a 7x7 kernel at stride 2 on three channels: 147 steps of 12,544 pixels) that copy is a
//! strided gather of 1.8 M floats per image, a third of the layer's time. Here the image is
//! first rewritten once, padded and, for a stride `s`, split by column into `s` phases (column
//! `X` of a padded row goes to phase `X % s`, position `X / s`). Output pixels `ox..ox + 32` of
//! one output row then read, through tap `(c, ky, kx)`, the 32 consecutive floats of channel
//! `c`'s phase `kx % s`, padded row `oy * s + ky`, from position `ox + kx / s` on: one offset
//! per step from a base per output row (an indirection table, as in Dukhan's indirect
//! convolution), no gathers and no zeros to write, and the padding is read as the zeros it is.
//!
//! The weights are the GEMM's packed A (one block of the shared dimension), so a layer picks
//! this path or the packed GEMM at run time; the micro-kernel is the AVX2 or AVX-512 GEMM's tile
//! loop with B's rows at the offsets ([`crate::kernels::gemm::indirect_strip_kernel`]: strips of
//! 16 columns on AVX2, 32 on AVX-512). The portable path runs the packed GEMM.

use super::Geometry;
use crate::alloc::AlignedBuffer;
use crate::error::{KernelResult, check_length};
use crate::kernels::activation::{Activation, apply_activation_in_place};
use crate::kernels::gemm::{
    Clamp, IndirectLhsStripKernel, IndirectStripKernel, KC, MR, NR, StripOutput, TileEpilogue,
    with_scratch,
};
use crate::kernels::pool::{
    MaxPool2dOptions, max_pool2d_input_rows, max_pool2d_output_shape, max_pool2d_plane_rows,
};
use crate::threading;
use std::cell::RefCell;

/// Whether the indirect path computes a layer of this geometry and is worth it: unit dilation;
/// output rows wide enough to fill a tile's columns (a 7-wide row would leave most of a
/// 16-column panel empty, where the packed GEMM runs the plane's 49 pixels as whole panels);
/// and a kernel at least as large as the stride, so that the phase split copies no input the
/// layer does not read (a 1x1 downsampling layer reads a quarter of its input, and copying all
/// of it made ResNet's 64 to 128 channel one 2.8 times slower than the packed GEMM).
pub(super) fn suits(geometry: &Geometry) -> bool {
    geometry.dilation == [1, 1]
        && geometry.stride[1] <= MAX_PHASES
        && geometry.out_w >= NR
        && geometry.kernel[0] >= geometry.stride[0]
        && geometry.kernel[1] >= geometry.stride[1]
}

/// The most steps (input channels times kernel taps) of a layer on this path: one block of the
/// GEMM's packed A (`PackedLhsMatrix::single_block_panels`).
const MAX_DEPTH: usize = KC;

/// The largest column stride the phase split handles.
const MAX_PHASES: usize = 4;

// The layers `Conv2dOptions::reads_nchw_into_channels_last` admits (the rule the compiler's
// layout choice reads too) are the ones `forward_channels_last` computes.
const _: () = assert!(
    nnc_ops::conv::MAX_NCHW_TO_CHANNELS_LAST_DEPTH <= MAX_DEPTH
        && nnc_ops::conv::MAX_NCHW_TO_CHANNELS_LAST_STRIDE <= MAX_PHASES
);

/// One image's group of channels through the indirect kernel: [`forward`] (NCHW output) or
/// [`forward_channels_last`].
pub(super) struct IndirectCall<'a> {
    /// The packed weights, one block of `depth` steps: for [`forward`], the GEMM's A panels of
    /// `MR` output channels, steps ordered `(channel, kernel_y, kernel_x)`; for
    /// [`forward_channels_last`], its B panels of `NR` output channels, steps ordered
    /// `(kernel_y, kernel_x, channel)` (`PackedConv2dChannelsLast`'s order).
    pub(super) weights: &'a [f32],
    pub(super) out_channels: usize,
    /// `[channels, in_h, in_w]`, with `channels * kernel_h * kernel_w = depth`.
    pub(super) input: &'a [f32],
    pub(super) channels: usize,
    pub(super) geometry: &'a Geometry,
    pub(super) bias: Option<&'a [f32]>,
    /// Laid out like the output.
    pub(super) residual: Option<&'a [f32]>,
    pub(super) activation: Option<Activation>,
}

/// The order of a layer's steps, the rows of its packed weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StepOrder {
    /// `(channel, kernel_y, kernel_x)`: PyTorch's weight, as [`forward`]'s A.
    ChannelsFirst,
    /// `(kernel_y, kernel_x, channel)`: a channels-last weight, as [`forward_channels_last`]'s B.
    ChannelsLast,
}

/// A call's steps: the phase split of its image, and each step's offset from an output row's
/// base (the first `depth` of the table).
struct Steps {
    layout: PhaseLayout,
    offsets: [usize; MAX_DEPTH],
    depth: usize,
}

impl Steps {
    fn offsets(&self) -> &[usize] {
        &self.offsets[..self.depth]
    }
}

impl IndirectCall<'_> {
    /// Checks the call's slices against an output of `output_len` floats and weights of
    /// `panel_width`-channel panels, and lays out its steps in `order`, with
    /// `reads_past_offset` floats read from the last step's offset on the last output row.
    fn steps(
        &self,
        output_len: usize,
        panel_width: usize,
        order: StepOrder,
        reads_past_offset: usize,
    ) -> Steps {
        let geometry = self.geometry;
        let [kernel_h, kernel_w] = geometry.kernel;
        let depth = self.channels * kernel_h * kernel_w;
        assert_eq!(
            output_len,
            self.out_channels * geometry.out_h * geometry.out_w
        );
        assert!(
            self.weights.len() >= self.out_channels.div_ceil(panel_width) * panel_width * depth
        );
        assert_eq!(
            self.input.len(),
            self.channels * geometry.in_h * geometry.in_w
        );
        if let Some(residual) = self.residual {
            assert_eq!(residual.len(), output_len);
        }
        if let Some(bias) = self.bias {
            assert_eq!(bias.len(), self.out_channels);
        }
        let layout = PhaseLayout::new(geometry);
        // On the stack: a network's forward pass allocates nothing once it has run once.
        assert!(depth <= MAX_DEPTH, "indirect convolution: {depth} steps");
        let mut offsets = [0usize; MAX_DEPTH];
        let mut steps = 0;
        let mut push = |channel: usize, kernel_y: usize, kernel_x: usize| {
            offsets[steps] = layout.step_offset(channel, kernel_y, kernel_x);
            steps += 1;
        };
        match order {
            StepOrder::ChannelsFirst => {
                for channel in 0..self.channels {
                    for kernel_y in 0..kernel_h {
                        for kernel_x in 0..kernel_w {
                            push(channel, kernel_y, kernel_x);
                        }
                    }
                }
            }
            StepOrder::ChannelsLast => {
                for kernel_y in 0..kernel_h {
                    for kernel_x in 0..kernel_w {
                        for channel in 0..self.channels {
                            push(channel, kernel_y, kernel_x);
                        }
                    }
                }
            }
        }
        let last_read = offsets[..depth].iter().max().copied().unwrap_or(0)
            + (geometry.out_h - 1) * geometry.stride[0] * layout.row_stride
            + reads_past_offset;
        assert!(
            last_read <= layout.length(self.channels),
            "indirect convolution: a strip would read past the phase-split image"
        );
        Steps {
            layout,
            offsets,
            depth,
        }
    }
}

thread_local! {
    /// The calling thread's phase-split image; grown once, then reused.
    static PHASES: RefCell<AlignedBuffer> = RefCell::new(AlignedBuffer::default());
}

/// How the phase-split image is laid out: `[channels][phases][padded_h][row_stride]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PhaseLayout {
    phases: usize,
    padded_h: usize,
    row_stride: usize,
}

impl PhaseLayout {
    fn new(geometry: &Geometry) -> Self {
        let phases = geometry.stride[1];
        let padded_w = geometry.in_w + 2 * geometry.padding[1];
        // A strip of output pixels reads whole panels, past the row's last pixel when the row
        // is not a multiple of `NR` wide, and tap `kx` reads `kx / phases` further on: every
        // read stays inside its padded row, on zeros where it passes the image.
        let widest_read = geometry.out_w.div_ceil(NR) * NR + (geometry.kernel[1] - 1) / phases;
        Self {
            phases,
            padded_h: geometry.in_h + 2 * geometry.padding[0],
            row_stride: padded_w.div_ceil(phases).max(widest_read),
        }
    }

    fn length(&self, channels: usize) -> usize {
        channels * self.phases * self.padded_h * self.row_stride
    }

    /// The offset of step `(channel, kernel_y, kernel_x)` from an output row's base.
    fn step_offset(&self, channel: usize, kernel_y: usize, kernel_x: usize) -> usize {
        ((channel * self.phases + kernel_x % self.phases) * self.padded_h + kernel_y)
            * self.row_stride
            + kernel_x / self.phases
    }

    /// Writes `input` (`[channels, in_h, in_w]`) padded and split into phases into `phased`,
    /// zeroes included; one task per phase plane of a channel.
    fn fill(&self, input: &[f32], geometry: &Geometry, phased: &mut [f32]) {
        let [padding_y, padding_x] = geometry.padding;
        let input_plane = geometry.in_h * geometry.in_w;
        let phase_plane = self.padded_h * self.row_stride;
        threading::run_chunks_mut(phased, phase_plane, |index, plane| {
            let (channel, phase) = (index / self.phases, index % self.phases);
            // Input columns `x` with `(x + padding_x) % phases == phase`, from `first_x` on.
            let first_x = (phase + self.phases - padding_x % self.phases) % self.phases;
            let start = (first_x + padding_x) / self.phases;
            let channel_input = &input[channel * input_plane..][..input_plane];
            // Only the padding is zeroed: the rows above and below the image, and each image
            // row's slots before and after its values (zeroing the whole plane first, and a
            // `step_by` gather, made the fill of a 224x224 stem take a third of the layer).
            let (top, rest) = plane.split_at_mut(padding_y * self.row_stride);
            top.fill(0.0);
            let (image_rows, bottom) = rest.split_at_mut(geometry.in_h * self.row_stride);
            bottom.fill(0.0);
            let rows = image_rows.chunks_exact_mut(self.row_stride);
            for (input_row, row) in channel_input.chunks_exact(geometry.in_w).zip(rows) {
                let values = input_row.get(first_x..).unwrap_or_default();
                let count = values.len().div_ceil(self.phases);
                let (before, row) = row.split_at_mut(start);
                before.fill(0.0);
                let (slots, after) = row.split_at_mut(count);
                after.fill(0.0);
                match self.phases {
                    1 => slots.copy_from_slice(values),
                    2 => {
                        let pairs = values.chunks_exact(2);
                        let last = pairs.remainder().first().copied();
                        for (slot, pair) in slots.iter_mut().zip(pairs) {
                            *slot = pair[0];
                        }
                        if let Some(last) = last {
                            slots[count - 1] = last;
                        }
                    }
                    _ => {
                        for (slot, &value) in
                            slots.iter_mut().zip(values.iter().step_by(self.phases))
                        {
                            *slot = value;
                        }
                    }
                }
            }
        });
    }
}

/// Output rows of every channel written by parallel tasks, each task its own rows.
struct OutputRows(*mut f32);

impl OutputRows {
    /// The pointer (a method, so that closures capture the whole `Sync` wrapper).
    fn get(&self) -> *mut f32 {
        self.0
    }
}

// SAFETY: The tasks of `forward` write disjoint output rows (`out_y` of every channel) through
// this pointer, and `f32` is `Send`.
unsafe impl Sync for OutputRows {}

/// Output channels a task computes over all its rows before the next: the rows' image stays in
/// cache for the next block, and the block's stores go to that many planes at a time.
const CHANNEL_BLOCK: usize = 24;

/// Output elements per parallel task.
const PARALLEL_CHUNK: usize = 1 << 15;

/// `output = activation(conv(input) + bias + residual)` for one image's group, `[out_channels,
/// out_h, out_w]`, through `kernel` (the indirect micro-kernel and the widest strip it takes).
pub(super) fn forward(
    call: &IndirectCall<'_>,
    kernel: (IndirectStripKernel, usize),
    output: &mut [f32],
) {
    let geometry = call.geometry;
    let output_plane = geometry.out_h * geometry.out_w;
    // The last strip of the last output row reads whole panels from its last step's offset.
    let steps = call.steps(
        output.len(),
        MR,
        StepOrder::ChannelsFirst,
        geometry.out_w.div_ceil(NR) * NR,
    );
    let target = PlaneRows {
        values: output.as_mut_ptr(),
        plane_stride: output_plane,
        first_row: 0,
    };
    let run = |phased: &[f32]| {
        let rows_per_task = threading::balanced_rows_per_task(
            geometry.out_h,
            geometry.out_w * call.out_channels,
            PARALLEL_CHUNK,
        );
        threading::run_tasks(geometry.out_h.div_ceil(rows_per_task), |task| {
            let first = task * rows_per_task;
            let rows = first..(first + rows_per_task).min(geometry.out_h);
            // SAFETY: Each task computes its own output rows, of every channel; `target` is the
            // whole output.
            unsafe { compute_rows(call, &steps, kernel, phased, rows, &target) };
        });
    };
    with_scratch(&PHASES, steps.layout.length(call.channels), |phased| {
        steps.layout.fill(call.input, geometry, phased);
        run(phased);
    });
}

/// Where [`compute_rows`] writes: output row `out_y` of channel `c` at `values + c *
/// plane_stride + (out_y - first_row) * out_w`, whole output planes or a band of their rows.
struct PlaneRows {
    values: *mut f32,
    plane_stride: usize,
    first_row: usize,
}

// SAFETY: The tasks that share a `PlaneRows` write disjoint rows through it (see
// `compute_rows`), and `f32` is `Send`.
unsafe impl Sync for PlaneRows {}

/// Output rows `rows` of every channel of `call` (whose steps are `steps`, through `kernel`) into
/// `target`, from the phase-split image `phased`; a residual is read at the offsets of the
/// target (only whole planes take one).
///
/// # Safety
///
/// `target` must hold rows `rows` of `call.out_channels` planes of `out_w` columns, which no one
/// else reads or writes meanwhile, and `phased` must be the image `steps.layout` filled.
unsafe fn compute_rows(
    call: &IndirectCall<'_>,
    steps: &Steps,
    (kernel, strip_columns): (IndirectStripKernel, usize),
    phased: &[f32],
    rows: std::ops::Range<usize>,
    target: &PlaneRows,
) {
    let geometry = call.geometry;
    let (layout, offsets, depth) = (steps.layout, steps.offsets(), steps.depth);
    let (clamp, row_activation) = Clamp::split(call.activation);
    let row_offset = |channel: usize, out_y: usize| {
        channel * target.plane_stride + (out_y - target.first_row) * geometry.out_w
    };
    for first_channel in (0..call.out_channels).step_by(CHANNEL_BLOCK) {
        let channels = CHANNEL_BLOCK.min(call.out_channels - first_channel);
        for out_y in rows.clone() {
            let row_base = out_y * geometry.stride[0] * layout.row_stride;
            for first_x in (0..geometry.out_w).step_by(strip_columns) {
                let offset = row_offset(first_channel, out_y) + first_x;
                let strip = StripOutput {
                    // SAFETY: `offset` is pixel `(out_y, first_x)` of channel `first_channel`,
                    // inside the target (the caller's contract).
                    c: unsafe { target.values.add(offset) },
                    c_row_stride: target.plane_stride,
                    rows: channels,
                    cols: strip_columns.min(geometry.out_w - first_x),
                    accumulate: false,
                    epilogue: TileEpilogue {
                        column_bias: None,
                        row_bias: call.bias.map(|bias| &bias[first_channel..]),
                        residual: call.residual.map(|residual| &residual[offset..]),
                        clamp,
                    },
                };
                // SAFETY: The strip is row `out_y`'s pixels `first_x..` of channels
                // `first_channel..`, which only this call writes (the caller's contract); the
                // weights hold those channels' panels of `depth` steps from `first_channel *
                // depth` on (asserted by `IndirectCall::steps`; `first_channel` is a multiple of
                // `MR`); every step reads whole panels inside its padded row of `phased`
                // (`PhaseLayout::new`: padded rows reach `(out_h - 1) * stride + kernel_h - 1`,
                // and the row stride the widest read); the bias holds a value per channel and
                // the residual, laid out like the target, from the strip's first element on; the
                // kernel comes from `indirect_strip_kernel`, which checks the processor.
                unsafe {
                    kernel(
                        depth,
                        &call.weights[first_channel * depth..],
                        phased.as_ptr().add(row_base + first_x),
                        offsets,
                        &strip,
                    );
                }
            }
        }
    }
    let Some(activation) = row_activation else {
        return;
    };
    for out_y in rows {
        for channel in 0..call.out_channels {
            // SAFETY: Row `out_y` of `channel` in the target, which only this call writes, and
            // no other reference to it lives meanwhile.
            let row = unsafe {
                std::slice::from_raw_parts_mut(
                    target.values.add(row_offset(channel, out_y)),
                    geometry.out_w,
                )
            };
            apply_activation_in_place(row, activation);
        }
    }
}

/// Convolution rows per band of [`forward_max_pool`]: about this many bytes of every channel's
/// rows, which the pooling reads back from L2 right after they are written.
pub(super) const POOL_BAND_BYTES: usize = 1 << 19;

thread_local! {
    /// The calling thread's band of convolution rows for [`forward_max_pool`].
    static BAND: RefCell<AlignedBuffer> = RefCell::new(AlignedBuffer::default());
}

/// `output = max_pool(activation(conv(input) + bias))` for one image's group, `[out_channels,
/// pooled_h, pooled_w]`: the convolution's rows computed band by band (about `band_bytes` of
/// them, [`POOL_BAND_BYTES`] but in tests) into a per-task buffer, each band pooled while it is
/// in cache, so that the convolution's output never goes out to memory. Rows that consecutive
/// bands' windows share are kept (moved to the top of the buffer), not computed again; the tasks
/// (one per thread, contiguous pooled rows) compute the rows they share with the task before
/// them once more.
pub(super) fn forward_max_pool(
    call: &IndirectCall<'_>,
    kernel: (IndirectStripKernel, usize),
    pool: &MaxPool2dOptions,
    output: &mut [f32],
    band_bytes: usize,
) -> KernelResult<()> {
    assert!(
        call.residual.is_none(),
        "a pooled convolution adds no residual"
    );
    let geometry = call.geometry;
    let (out_h, out_w) = (geometry.out_h, geometry.out_w);
    let [_, _, pooled_h, pooled_w] = max_pool2d_output_shape([1, 1, out_h, out_w], pool)?;
    let pooled_plane = pooled_h * pooled_w;
    check_length(
        "conv_max_pool",
        "output",
        call.out_channels * pooled_plane,
        output.len(),
    )?;
    if output.is_empty() {
        return Ok(());
    }
    let steps = call.steps(
        call.out_channels * out_h * out_w,
        MR,
        StepOrder::ChannelsFirst,
        out_w.div_ceil(NR) * NR,
    );
    let row_bytes = call.out_channels * out_w * std::mem::size_of::<f32>();
    // Pooled rows per band, and the convolution rows a band can need.
    let pooled_per_band = (band_bytes / row_bytes.max(1) / pool.stride[0].max(1)).max(1);
    let band_capacity =
        (pooled_per_band - 1) * pool.stride[0] + (pool.kernel[0] - 1) * pool.dilation[0] + 1;
    let band_plane = band_capacity * out_w;
    let pooled_per_task = pooled_h.div_ceil(threading::parallel_width().max(1));
    let output_rows = OutputRows(output.as_mut_ptr());
    let run = |phased: &[f32]| {
        threading::run_tasks(pooled_h.div_ceil(pooled_per_task), |task| {
            let first = task * pooled_per_task;
            let pooled = first..(first + pooled_per_task).min(pooled_h);
            with_scratch(&BAND, call.out_channels * band_plane, |band| {
                // The convolution rows the band holds.
                let mut held = 0..0;
                for band_start in pooled.clone().step_by(pooled_per_band) {
                    let band_rows = band_start..(band_start + pooled_per_band).min(pooled.end);
                    let needed = max_pool2d_input_rows(band_rows.clone(), out_h, pool);
                    // The held rows the band needs again (empty, from `needed.start`, if none).
                    let kept = needed.start.max(held.start)..held.end.max(needed.start);
                    if !kept.is_empty() && kept.start > held.start {
                        let shift = (kept.start - held.start) * out_w;
                        for plane in band.chunks_exact_mut(band_plane) {
                            plane.copy_within(shift..shift + kept.len() * out_w, 0);
                        }
                    }
                    let target = PlaneRows {
                        values: band.as_mut_ptr(),
                        plane_stride: band_plane,
                        first_row: kept.start,
                    };
                    // SAFETY: The band holds rows `kept.start..needed.end` of every channel
                    // (`band_capacity` rows, the most a band of pooled rows reads), and only this
                    // task uses it.
                    unsafe {
                        compute_rows(call, &steps, kernel, phased, kept.end..needed.end, &target)
                    };
                    held = kept.start..needed.end;
                    for (channel, plane) in band.chunks_exact(band_plane).enumerate() {
                        let start = channel * pooled_plane + band_rows.start * pooled_w;
                        // SAFETY: Rows `band_rows` of pooled channel `channel`, inside the output
                        // (checked above), which only this task writes, and no other reference
                        // to them lives meanwhile.
                        let pooled_rows = unsafe {
                            std::slice::from_raw_parts_mut(
                                output_rows.get().add(start),
                                band_rows.len() * pooled_w,
                            )
                        };
                        let rows = &plane[..held.len() * out_w];
                        max_pool2d_plane_rows(
                            rows,
                            held.start,
                            [out_h, out_w],
                            pool,
                            band_rows.clone(),
                            pooled_rows,
                        )
                        .expect("the band holds the rows its pooled rows read");
                    }
                }
            });
        });
    };
    with_scratch(&PHASES, steps.layout.length(call.channels), |phased| {
        steps.layout.fill(call.input, geometry, phased);
        run(phased);
    });
    Ok(())
}

/// `output = activation(conv(input) + bias + residual)` for one NCHW image, into a channels-last
/// `[out_h, out_w, out_channels]` output, through `kernel` (the micro-kernel that reads A in
/// place, and the widest strip it takes): the GEMM `im2col(x)^T * W'` whose rows are output
/// pixels. The image is padded and split into phases as for [`forward`], so that pixels `ox..`
/// of one output row read tap `(c, ky, kx)` as consecutive floats: row `r` of a strip, step
/// `k`, is one float at the row's base plus the step's offset plus `r`, broadcast into the
/// FMA. A stem (three input channels) thus writes its channels-last output at the speed of the
/// NCHW one, with no transpose after it.
pub(super) fn forward_channels_last(
    call: &IndirectCall<'_>,
    (kernel, strip_columns): (IndirectLhsStripKernel, usize),
    output: &mut [f32],
) {
    let geometry = call.geometry;
    let output_row = geometry.out_w * call.out_channels;
    // The last output row's strip reads `out_w` floats from its last step's offset.
    let steps = call.steps(output.len(), NR, StepOrder::ChannelsLast, geometry.out_w);
    let (layout, offsets, depth) = (steps.layout, steps.offsets(), steps.depth);
    let (clamp, row_activation) = Clamp::split(call.activation);
    let mut run = |phased: &[f32]| {
        let rows_per_task =
            threading::balanced_rows_per_task(geometry.out_h, output_row, PARALLEL_CHUNK);
        threading::run_chunks_mut(output, rows_per_task * output_row, |task, rows| {
            for (row_in_task, row) in rows.chunks_exact_mut(output_row).enumerate() {
                let out_y = task * rows_per_task + row_in_task;
                let row_base = out_y * geometry.stride[0] * layout.row_stride;
                let row_offset = out_y * output_row;
                for first_channel in (0..call.out_channels).step_by(strip_columns) {
                    let strip = StripOutput {
                        c: row[first_channel..].as_mut_ptr(),
                        c_row_stride: call.out_channels,
                        rows: geometry.out_w,
                        cols: strip_columns.min(call.out_channels - first_channel),
                        accumulate: false,
                        epilogue: TileEpilogue {
                            column_bias: call.bias.map(|bias| &bias[first_channel..]),
                            row_bias: None,
                            residual: call
                                .residual
                                .map(|residual| &residual[row_offset + first_channel..]),
                            clamp,
                        },
                    };
                    // SAFETY: The strip is output row `out_y`'s pixels, channels
                    // `first_channel..` (a multiple of `NR`), inside `row`, which only this task
                    // holds; the weights hold those channels' panels of `depth` steps from
                    // `first_channel * depth` on (asserted above); every step reads `out_w`
                    // floats inside its padded row of `phased` (`PhaseLayout::new`: padded rows
                    // reach `(out_h - 1) * stride + kernel_h - 1`, and the row stride the widest
                    // read, checked through `last_read`); the bias holds a value per channel and
                    // the residual, laid out like the output, from the strip's first element
                    // on; the kernel comes from `indirect_lhs_strip_kernel`, which checks the
                    // processor.
                    unsafe {
                        kernel(
                            depth,
                            phased.as_ptr().add(row_base),
                            offsets,
                            &call.weights[first_channel * depth..],
                            &strip,
                        );
                    }
                }
                if let Some(activation) = row_activation {
                    apply_activation_in_place(row, activation);
                }
            }
        });
    };
    with_scratch(&PHASES, layout.length(call.channels), |phased| {
        layout.fill(call.input, geometry, phased);
        run(phased);
    });
}
