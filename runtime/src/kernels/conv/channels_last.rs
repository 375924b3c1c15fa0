//! Convolution over channels-last (NHWC) images, for the layout the compiler picks where
//! depthwise and 1×1 convolutions dominate.
//!
//! The weight keeps PyTorch's `[out_channels, in_channels / groups, kernel_h, kernel_w]` shape and
//! is repacked once, at load time, in a `PackedConv2dChannelsLast`, which picks the method:
//!
//! - depthwise convolutions (one input and one output channel per group) run a direct kernel that
//!   walks output pixels and vectorises across channels, which are contiguous: every tap is one
//!   `output[c] += weight[tap][c] * input[pixel][c]` over all channels, whatever the stride;
//! - convolutions without groups are one GEMM per image, `im2col(x)[pixels, kh * kw * in] *
//!   W'[kh * kw * in, out]`, with `W'` packed as the GEMM's right operand and the bias (one per
//!   column) and activation in its epilogue. A 1×1 kernel with unit stride and no padding skips
//!   im2col: the input already is the `[n * h * w, in]` matrix, and the whole batch is one GEMM.
//!
//! Other grouped convolutions are not supported in this layout; the compiler leaves them NCHW.

use crate::alloc::AlignedBuffer;
use crate::error::{KernelResult, invalid_parameter};
use crate::kernels::activation::{Activation, apply_activation_in_place};
use crate::kernels::gemm::{
    Bias, Epilogue, GemmOptions, IndirectLhsStripKernel, Lhs, MatrixRef, PackedMatrix, Rhs,
    gemm_by_rows, indirect_lhs_strip_kernel,
};
use crate::kernels::vectorize;
use crate::threading;

mod depthwise_block;

pub use depthwise_block::PackedDepthwiseBlock;

use super::{
    Conv2dOptions, ConvWorkspace, Geometry, channels_last_output_shape, check_buffers, check_layer,
};

/// A 2-D convolution layer over `[N, H, W, C]` images, ready to run.
#[derive(Clone, Debug)]
pub struct PackedConv2dChannelsLast {
    out_channels: usize,
    in_channels: usize,
    kernel: [usize; 2],
    options: Conv2dOptions,
    bias: Option<Vec<f32>>,
    activation: Option<Activation>,
    method: Method,
}

#[derive(Clone, Debug)]
enum Method {
    /// `W'` of shape `[kh * kw * in, out]`, packed; its rows are ordered `(ky, kx, c)`, the
    /// order of an NHWC patch.
    Gemm { weight: PackedMatrix },
    /// The weight transposed to `[kh * kw, channels]`, so each tap is a contiguous channel row,
    /// and the bias (zeros without one), which starts every output row.
    /// `[taps][channels]`, on a cache line (each tap's blocks of sixteen channels are loaded whole).
    Depthwise {
        weight: AlignedBuffer,
        bias: Vec<f32>,
    },
}

impl PackedConv2dChannelsLast {
    /// Prepares a weight of shape `[out_channels, in_channels / groups, kernel_h, kernel_w]`
    /// (row-major, PyTorch's layout) with an optional bias of length `out_channels`. `groups`
    /// must be 1, or equal to both channel counts (depthwise).
    pub fn new(
        weight: &[f32],
        weight_shape: [usize; 4],
        bias: Option<&[f32]>,
        options: Conv2dOptions,
    ) -> KernelResult<Self> {
        let [out_channels, group_in_channels, kernel_h, kernel_w] = weight_shape;
        check_layer(weight, weight_shape, bias, options)?;
        let taps = kernel_h * kernel_w;
        let depthwise = group_in_channels == 1 && options.groups == out_channels;
        let method = if depthwise {
            let mut transposed = AlignedBuffer::zeroed(taps * out_channels);
            for (channel, channel_weight) in weight.chunks_exact(taps).enumerate() {
                for (tap, &value) in channel_weight.iter().enumerate() {
                    transposed[tap * out_channels + channel] = value;
                }
            }
            Method::Depthwise {
                weight: transposed,
                bias: bias.map_or_else(|| vec![0.0; out_channels], <[f32]>::to_vec),
            }
        } else if options.groups == 1 {
            // [out, in, kh, kw] -> [out, kh, kw, in], then packed as the transposed right operand.
            let depth = group_in_channels * taps;
            let mut reordered = vec![0.0; out_channels * depth];
            for (out_channel, filter) in weight.chunks_exact(depth).enumerate() {
                for (channel, channel_taps) in filter.chunks_exact(taps).enumerate() {
                    for (tap, &value) in channel_taps.iter().enumerate() {
                        reordered[out_channel * depth + tap * group_in_channels + channel] = value;
                    }
                }
            }
            Method::Gemm {
                weight: PackedMatrix::from_linear_weight(&reordered, out_channels, depth)?,
            }
        } else {
            return Err(invalid_parameter(
                "conv",
                format!(
                    "a channels-last convolution has groups = 1 or is depthwise, not groups = {}",
                    options.groups
                ),
            ));
        };
        Ok(Self {
            out_channels,
            in_channels: group_in_channels * options.groups,
            kernel: [kernel_h, kernel_w],
            options,
            bias: bias.map(<[f32]>::to_vec),
            activation: None,
            method,
        })
    }

    /// The same layer with `activation` fused into its output.
    pub fn with_activation(mut self, activation: Option<Activation>) -> Self {
        self.activation = activation;
        self
    }

    /// The output shape `[N, out_h, out_w, out_channels]` for an input `[N, H, W, C]`.
    pub fn output_shape(&self, input_shape: [usize; 4]) -> KernelResult<[usize; 4]> {
        channels_last_output_shape(
            input_shape,
            self.in_channels,
            self.out_channels,
            self.kernel,
            self.options,
        )
    }

    /// Runs the layer on an `[N, H, W, C]` input into an output of `output_shape(..)`.
    pub fn forward(
        &self,
        input: &[f32],
        input_shape: [usize; 4],
        output: &mut [f32],
        workspace: &mut ConvWorkspace,
    ) -> KernelResult<()> {
        self.run(input, input_shape, None, output, workspace)
    }

    /// [`Self::forward`] with a residual shaped like the output, added after the bias and
    /// before the activation.
    pub fn forward_residual(
        &self,
        input: &[f32],
        input_shape: [usize; 4],
        residual: &[f32],
        output: &mut [f32],
        workspace: &mut ConvWorkspace,
    ) -> KernelResult<()> {
        self.run(input, input_shape, Some(residual), output, workspace)
    }

    /// Runs the layer on an NCHW input `[N, C, H, W]` into a channels-last output of
    /// `output_shape([N, H, W, C])`: the convolution and the change of layout in one pass, for a
    /// network's stem, whose NCHW image would otherwise be transposed before or after it. With
    /// AVX2 or AVX-512, a layer that `Conv2dOptions::reads_nchw_into_channels_last` admits reads
    /// the image in place (`indirect::forward_channels_last`); any other layer runs on a
    /// channels-last copy of the input.
    pub fn forward_from_nchw(
        &self,
        input: &[f32],
        input_shape: [usize; 4],
        output: &mut [f32],
        workspace: &mut ConvWorkspace,
    ) -> KernelResult<()> {
        let kernel = indirect_lhs_strip_kernel();
        self.forward_from_nchw_with(input, input_shape, output, workspace, kernel)
    }

    /// [`Self::forward_from_nchw`] with the micro-kernel that reads the image in place, or
    /// `None` for the channels-last copy (which tests compare it with).
    pub(super) fn forward_from_nchw_with(
        &self,
        input: &[f32],
        input_shape: [usize; 4],
        output: &mut [f32],
        workspace: &mut ConvWorkspace,
        kernel: Option<(IndirectLhsStripKernel, usize)>,
    ) -> KernelResult<()> {
        let [batch, channels, in_h, in_w] = input_shape;
        let channels_last_shape = [batch, in_h, in_w, channels];
        let output_shape = self.output_shape(channels_last_shape)?;
        check_buffers(input, input_shape, output, output_shape, None)?;
        if output.is_empty() {
            return Ok(());
        }
        let geometry = self.geometry(channels_last_shape, output_shape);
        let [_, out_h, out_w, _] = output_shape;
        if let Method::Gemm { weight } = &self.method
            && let Some(panels) = weight.single_block_panels()
            && let Some(kernel) = kernel
            && self.options.reads_nchw_into_channels_last([
                self.out_channels,
                channels,
                self.kernel[0],
                self.kernel[1],
            ])
        {
            let bias = self.bias.as_deref();
            let image_len = channels * in_h * in_w;
            let output_len = out_h * out_w * self.out_channels;
            for (image, output) in input
                .chunks_exact(image_len)
                .zip(output.chunks_exact_mut(output_len))
            {
                let call = super::indirect::IndirectCall {
                    weights: panels,
                    out_channels: self.out_channels,
                    input: image,
                    channels,
                    geometry: &geometry,
                    bias,
                    residual: None,
                    activation: self.activation,
                };
                super::indirect::forward_channels_last(&call, kernel, output);
            }
            return Ok(());
        }
        let mut image = std::mem::take(&mut workspace.image);
        if image.len() < input.len() {
            image.resize(input.len());
        }
        let transposed = &mut image.as_mut_slice()[..input.len()];
        crate::kernels::shape::permute_any_type(input, &input_shape, &[0, 2, 3, 1], transposed)?;
        let result = self.forward(transposed, channels_last_shape, output, workspace);
        workspace.image = image;
        result
    }

    /// The layer's `Geometry` between a channels-last input and output shape (`Geometry` speaks
    /// NCHW; only the spatial sizes matter here).
    fn geometry(&self, input_shape: [usize; 4], output_shape: [usize; 4]) -> Geometry {
        let [batch, in_h, in_w, _] = input_shape;
        let [_, out_h, out_w, _] = output_shape;
        Geometry::new(
            [batch, self.in_channels, in_h, in_w],
            [batch, self.out_channels, out_h, out_w],
            self.kernel,
            self.options,
        )
    }

    fn run(
        &self,
        input: &[f32],
        input_shape: [usize; 4],
        residual: Option<&[f32]>,
        output: &mut [f32],
        workspace: &mut ConvWorkspace,
    ) -> KernelResult<()> {
        let output_shape = self.output_shape(input_shape)?;
        check_buffers(input, input_shape, output, output_shape, residual)?;
        if output.is_empty() {
            return Ok(());
        }
        let geometry = self.geometry(input_shape, output_shape);
        let batch = input_shape[0];
        match &self.method {
            Method::Depthwise { weight, bias } => {
                self.forward_depthwise(weight, bias, input, residual, output, &geometry);
                Ok(())
            }
            Method::Gemm { weight } => {
                self.forward_gemm(weight, input, batch, residual, output, &geometry, workspace)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn forward_gemm(
        &self,
        weight: &PackedMatrix,
        input: &[f32],
        batch: usize,
        residual: Option<&[f32]>,
        output: &mut [f32],
        geometry: &Geometry,
        workspace: &mut ConvWorkspace,
    ) -> KernelResult<()> {
        let options = self.gemm_options(residual);
        if self.is_pointwise() {
            let pixels = batch * geometry.in_h * geometry.in_w;
            let matrix = MatrixRef::row_major(input, pixels, self.in_channels)?;
            return gemm_by_rows(
                Lhs::Matrix(matrix),
                Rhs::Packed(weight),
                output,
                self.out_channels,
                &options,
            );
        }
        let depth = weight.depth();
        let output_pixels = geometry.out_h * geometry.out_w;
        let columns = workspace.columns(output_pixels * depth);
        let input_images = input.chunks_exact(geometry.in_h * geometry.in_w * self.in_channels);
        let image_len = output_pixels * self.out_channels;
        let output_images = output.chunks_exact_mut(image_len);
        for (image, (input_image, output_image)) in input_images.zip(output_images).enumerate() {
            im2col_channels_last(input_image, self.in_channels, geometry, columns);
            let matrix = MatrixRef::row_major(columns, output_pixels, depth)?;
            let options = GemmOptions {
                residual: residual.map(|residual| &residual[image * image_len..][..image_len]),
                ..options
            };
            gemm_by_rows(
                Lhs::Matrix(matrix),
                Rhs::Packed(weight),
                output_image,
                self.out_channels,
                &options,
            )?;
        }
        Ok(())
    }

    fn forward_depthwise(
        &self,
        weight: &[f32],
        bias: &[f32],
        input: &[f32],
        residual: Option<&[f32]>,
        output: &mut [f32],
        geometry: &Geometry,
    ) {
        let channels = self.out_channels;
        let output_row = geometry.out_w * channels;
        let input_image = geometry.in_h * geometry.in_w * channels;
        let clamp = self.depthwise_clamp(residual.is_some());
        let rows_per_task = threading::balanced_rows_per_task(
            output.len() / output_row.max(1),
            output_row,
            PARALLEL_CHUNK,
        );
        threading::run_chunks_mut(output, rows_per_task * output_row, |chunk_index, rows| {
            let first_row = chunk_index * rows_per_task;
            self.depthwise_output_rows(
                rows,
                output_row,
                |offset| {
                    let row = first_row + offset;
                    let (image, out_y) = (row / geometry.out_h, row % geometry.out_h);
                    DepthwiseRow {
                        input: &input[image * input_image..][..input_image],
                        first_row: 0,
                        weight,
                        bias,
                        geometry,
                        channels,
                        out_y,
                        clamp,
                    }
                },
                |offset| {
                    let row = first_row + offset;
                    residual.map(|residual| &residual[row * output_row..][..output_row])
                },
            );
        });
    }

    /// The options of the layer's GEMM: its bias (one per column) and activation in the
    /// epilogue, and `residual`.
    fn gemm_options<'a>(&'a self, residual: Option<&'a [f32]>) -> GemmOptions<'a> {
        GemmOptions {
            accumulate: false,
            epilogue: Epilogue::from_parts(
                self.bias.as_deref().map(Bias::PerColumn),
                self.activation,
            ),
            residual,
        }
    }

    /// Whether the layer is a 1×1 convolution with unit stride and no padding, whose input
    /// already is its GEMM's left operand.
    fn is_pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.options.stride == [1, 1] && self.options.padding == [0, 0]
    }

    /// The activation a depthwise row applies in the kernel's registers before the store: a
    /// clamp (`Relu`, `Relu6`), unless a residual is added first.
    fn depthwise_clamp(&self, residual: bool) -> Option<Activation> {
        self.activation
            .filter(|activation| matches!(activation, Activation::Relu | Activation::Relu6))
            .filter(|_| !residual)
    }

    /// One output row of the depthwise layer: the kernel, then the residual row and any
    /// activation the kernel did not apply (`row.clamp` is `self.depthwise_clamp(..)`).
    fn depthwise_output_row(
        &self,
        row: &DepthwiseRow<'_>,
        residual: Option<&[f32]>,
        output: &mut [f32],
    ) {
        depthwise_row(row, output);
        self.finish_depthwise_row(row, residual, output);
    }

    /// The output rows of the depthwise layer in `output`, `row_length` floats each, as
    /// [`Self::depthwise_output_row`] computes them: row `index` reads as `row_at(index)` says,
    /// with the residual row `residual_at(index)`. Two consecutive rows of one image
    /// (`out_y` and `out_y + 1`) run together ([`depthwise_row_pair`]).
    fn depthwise_output_rows<'a>(
        &self,
        output: &mut [f32],
        row_length: usize,
        row_at: impl Fn(usize) -> DepthwiseRow<'a>,
        residual_at: impl Fn(usize) -> Option<&'a [f32]>,
    ) {
        let count = output.len() / row_length.max(1);
        let mut index = 0;
        while index < count {
            let row = row_at(index);
            let values = &mut output[index * row_length..];
            if index + 1 < count {
                let next = row_at(index + 1);
                if next.out_y == row.out_y + 1
                    && std::ptr::eq(next.input, row.input)
                    && next.first_row == row.first_row
                {
                    let (upper, lower) = values[..2 * row_length].split_at_mut(row_length);
                    depthwise_row_pair(&row, &next, upper, lower);
                    self.finish_depthwise_row(&row, residual_at(index), upper);
                    self.finish_depthwise_row(&next, residual_at(index + 1), lower);
                    index += 2;
                    continue;
                }
            }
            self.depthwise_output_row(&row, residual_at(index), &mut values[..row_length]);
            index += 1;
        }
    }

    /// What follows the kernel on an output row: the residual row, then any activation the
    /// kernel did not apply.
    fn finish_depthwise_row(
        &self,
        row: &DepthwiseRow<'_>,
        residual: Option<&[f32]>,
        output: &mut [f32],
    ) {
        if let Some(residual) = residual {
            vectorize::zip_map_in_place(output, residual, |y, r| y + r);
        }
        if let Some(activation) = self.activation.filter(|_| row.clamp.is_none()) {
            apply_activation_in_place(output, activation);
        }
    }
}

/// Output elements per parallel task of the depthwise kernel.
const PARALLEL_CHUNK: usize = 1 << 14;

/// What one output row of a channels-last depthwise convolution reads.
struct DepthwiseRow<'a> {
    /// One image, `[H, W, C]`, or its rows from `first_row` on.
    input: &'a [f32],
    /// The image row at the start of `input`: 0 for a whole image, a band's first row where the
    /// depthwise layer reads the rows a pointwise one just wrote (`pointwise_depthwise`).
    first_row: usize,
    /// `[kh * kw, C]`.
    weight: &'a [f32],
    /// `[C]`.
    bias: &'a [f32],
    geometry: &'a Geometry,
    channels: usize,
    out_y: usize,
    /// `Relu` or `Relu6`, applied to each output as it is stored.
    clamp: Option<Activation>,
}

/// One output row `[out_w, C]` of a channels-last depthwise convolution, compiled for AVX2 + FMA
/// when the processor has them (the channel loop then runs 8 lanes wide) and for the baseline
/// target otherwise.
fn depthwise_row(row: &DepthwiseRow<'_>, output: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::vectorize::has_avx2_fma() {
        // SAFETY: The processor supports AVX2 and FMA, checked just above; the function is
        // otherwise safe Rust.
        unsafe { depthwise_row_avx2(row, output) };
        return;
    }
    depthwise_row_body(row, output);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn depthwise_row_avx2(row: &DepthwiseRow<'_>, output: &mut [f32]) {
    depthwise_row_body(row, output);
}

/// Channels one accumulator block holds in registers (two AVX2 vectors).
const CHANNEL_BLOCK: usize = 16;
/// Taps gathered before they are applied; larger kernels are applied in several rounds.
const MAX_TAPS: usize = 32;

/// Each block of channels of an output pixel sums all its taps in registers and is stored once.
/// The taps of an interior pixel (every kernel column inside the row) are the same offsets
/// shifted by the pixel's position, listed once per row; border pixels list their own.
#[inline(always)]
fn depthwise_row_body(row: &DepthwiseRow<'_>, output: &mut [f32]) {
    let mut taps = [(0usize, 0usize); MAX_TAPS];
    let (interior, count) = interior_taps(row, &mut taps);
    border_pixels(row, &interior, output);
    if !interior.is_empty() {
        let pixels = interior_run(row, &interior, &taps[..count]);
        let channels = row.channels;
        interior_pixels(
            &pixels,
            &mut output[interior.start * channels..interior.end * channels],
        );
    }
}

/// Two vertically adjacent output rows of one image (`lower.out_y == upper.out_y + 1`, the same
/// buffers), as [`depthwise_row`] computes each: with AVX2 + FMA and a 3 x 3 kernel of unit
/// stride wholly inside both rows, their interior pixels run together, so that each input row
/// the two share is loaded once for both (see [`interior_pixel_pairs`]).
fn depthwise_row_pair(
    upper: &DepthwiseRow<'_>,
    lower: &DepthwiseRow<'_>,
    upper_output: &mut [f32],
    lower_output: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::vectorize::has_avx2_fma() {
        // SAFETY: The processor supports AVX2 and FMA, checked just above; the function is
        // otherwise safe Rust.
        unsafe { depthwise_row_pair_avx2(upper, lower, upper_output, lower_output) };
        return;
    }
    depthwise_row_body(upper, upper_output);
    depthwise_row_body(lower, lower_output);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn depthwise_row_pair_avx2(
    upper: &DepthwiseRow<'_>,
    lower: &DepthwiseRow<'_>,
    upper_output: &mut [f32],
    lower_output: &mut [f32],
) {
    let mut upper_taps = [(0usize, 0usize); MAX_TAPS];
    let (interior, upper_count) = interior_taps(upper, &mut upper_taps);
    let mut lower_taps = [(0usize, 0usize); MAX_TAPS];
    let (lower_interior, lower_count) = interior_taps(lower, &mut lower_taps);
    // The interior depends on the columns only, so the two runs are the same; were they not,
    // or were there none, each row would go alone.
    if interior.is_empty() || interior != lower_interior {
        depthwise_row_body(upper, upper_output);
        depthwise_row_body(lower, lower_output);
        return;
    }
    border_pixels(upper, &interior, upper_output);
    border_pixels(lower, &interior, lower_output);
    let pixels = interior.start * upper.channels..interior.end * upper.channels;
    interior_pixel_pairs(
        &interior_run(upper, &interior, &upper_taps[..upper_count]),
        &interior_run(lower, &interior, &lower_taps[..lower_count]),
        &mut upper_output[pixels.clone()],
        &mut lower_output[pixels],
    );
}

/// The run of interior pixels of `row` (every kernel column inside the row), empty for kernels
/// of more than [`MAX_TAPS`] taps, and the count of their taps, listed in `taps` relative to a
/// pixel's first input column: every kernel row inside the image, each of its columns in order.
#[inline(always)]
fn interior_taps(
    row: &DepthwiseRow<'_>,
    taps: &mut [(usize, usize); MAX_TAPS],
) -> (std::ops::Range<usize>, usize) {
    let geometry = row.geometry;
    let channels = row.channels;
    let [kernel_h, kernel_w] = geometry.kernel;
    let interior = if kernel_h * kernel_w <= MAX_TAPS {
        geometry.valid_columns(0).start..geometry.valid_columns(kernel_w - 1).end
    } else {
        0..0
    };
    let mut count = 0;
    if !interior.is_empty() {
        for kernel_y in 0..kernel_h {
            let Some(input_y) = geometry.input_row(row.out_y, kernel_y) else {
                continue;
            };
            for kernel_x in 0..kernel_w {
                taps[count] = (
                    ((input_y - row.first_row) * geometry.in_w + kernel_x * geometry.dilation[1])
                        * channels,
                    (kernel_y * kernel_w + kernel_x) * channels,
                );
                count += 1;
            }
        }
    }
    (interior, count)
}

/// Every pixel of `row` outside `interior`, through [`border_pixel`].
#[inline(always)]
fn border_pixels(row: &DepthwiseRow<'_>, interior: &std::ops::Range<usize>, output: &mut [f32]) {
    let channels = row.channels;
    let count = output.len() / channels;
    let (left, right) = if interior.is_empty() {
        (0..count, count..count)
    } else {
        (0..interior.start.min(count), interior.end.min(count)..count)
    };
    for out_x in left.chain(right) {
        border_pixel(row, out_x, &mut output[out_x * channels..][..channels]);
    }
}

/// The interior pixels `interior` (not empty) of `row`, whose taps `interior_taps` listed.
#[inline(always)]
fn interior_run<'a>(
    row: &DepthwiseRow<'a>,
    interior: &std::ops::Range<usize>,
    taps: &'a [(usize, usize)],
) -> InteriorPixels<'a> {
    let geometry = row.geometry;
    InteriorPixels {
        input: row.input,
        first_base: (interior.start * geometry.stride[1] - geometry.padding[1]) * row.channels,
        pixel_step: geometry.stride[1] * row.channels,
        weight: row.weight,
        bias: row.bias,
        taps,
        clamp: row.clamp,
    }
}

/// A run of interior pixels of one output row: pixel `p` of the run reads
/// `input[first_base + p * pixel_step + i + c]` with `weight[w + c]` for each tap `(i, w)`.
struct InteriorPixels<'a> {
    /// One image, `[H, W, C]`.
    input: &'a [f32],
    first_base: usize,
    pixel_step: usize,
    /// `[kh * kw, C]`.
    weight: &'a [f32],
    /// `[C]`.
    bias: &'a [f32],
    taps: &'a [(usize, usize)],
    /// `Relu` or `Relu6` (the only activations callers pass here), applied before the store.
    clamp: Option<Activation>,
}

/// For each pixel `p` of the run and channel `c`: `output[p][c] = clamp(bias[c] + sum over taps
/// of weight[w + c] * input[first_base + p * pixel_step + i + c])`; `output` is `[pixels, C]`.
/// With AVX2 + FMA, eight pixels of eight channels at a time: each tap's weights are loaded once
/// for eight pixels and the sums stay in registers until they are stored, so the loop does about
/// one load per multiply-add (the per-pixel form loads the weights for every pixel: two).
fn interior_pixels(pixels: &InteriorPixels<'_>, output: &mut [f32]) {
    let channels = pixels.bias.len();
    if check_run(pixels, output) == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if channels >= 16 && depthwise_x86_64::has_avx512() {
        // SAFETY: The processor has AVX-512F, AVX2 and FMA, checked just above; the bounds as
        // below.
        unsafe { depthwise_x86_64::interior_pixels_avx512(pixels, output) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if channels >= 8 && crate::kernels::vectorize::has_avx2_fma() {
        // SAFETY: The processor has AVX2 and FMA, checked just above; every tap of every pixel
        // and every tap's weights are inside their slices, and `output` holds whole pixels
        // (`check_run`).
        unsafe { depthwise_x86_64::interior_pixels(pixels, output) };
        return;
    }
    interior_pixels_portable(pixels, output);
}

/// [`interior_pixels`] for the same run of two vertically adjacent output rows, `upper` and
/// `lower`, into `upper_output` and `lower_output`. Where the runs are a 3 x 3 kernel of unit
/// stride wholly inside both rows (`lower`'s taps are `upper`'s one input row down) and the
/// processor has AVX2 and FMA but not AVX-512, tiles of four pixels of both rows run together
/// ([`depthwise_x86_64::interior_pixel_pairs`]): the two rows share two of the four input rows
/// they read, and each of those is loaded once for both. Each sum takes its taps in the same
/// order as in [`interior_pixels`], so the outputs have the same bits. Other runs go row by row.
fn interior_pixel_pairs(
    upper: &InteriorPixels<'_>,
    lower: &InteriorPixels<'_>,
    upper_output: &mut [f32],
    lower_output: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if upper.bias.len() >= 8
        && !depthwise_x86_64::has_avx512()
        && crate::kernels::vectorize::has_avx2_fma()
        && let Some(row_step) = lower_row_step(upper, lower)
        && upper_output.len() == lower_output.len()
        && check_run(upper, upper_output) > 0
        && check_run(lower, lower_output) > 0
    {
        // SAFETY: The processor has AVX2 and FMA, checked just above; both runs' taps and
        // weights are inside their slices and both outputs hold the same whole pixels
        // (`check_run`), and `lower`'s taps are `upper`'s `row_step` further on, three-wide at
        // unit stride (`lower_row_step`).
        unsafe {
            depthwise_x86_64::interior_pixel_pairs(upper, row_step, upper_output, lower_output)
        };
        return;
    }
    interior_pixels(upper, upper_output);
    interior_pixels(lower, lower_output);
}

/// The input offset from `upper`'s taps to `lower`'s where both runs are nine taps, three kernel
/// rows three columns wide at unit stride, one input row apart (`lower` reads `upper`'s last two
/// kernel rows and the row after them), over the same buffers; `None` otherwise.
#[cfg(target_arch = "x86_64")]
fn lower_row_step(upper: &InteriorPixels<'_>, lower: &InteriorPixels<'_>) -> Option<usize> {
    if depthwise_x86_64::three_wide_stride(upper) != Some(1) {
        return None;
    }
    let (taps, lower_taps) = (upper.taps, lower.taps);
    if taps.len() != 9 || lower_taps.len() != 9 {
        return None;
    }
    let row_step = taps[3].0.checked_sub(taps[0].0)?;
    let same_buffers = std::ptr::eq(upper.input, lower.input)
        && std::ptr::eq(upper.weight, lower.weight)
        && std::ptr::eq(upper.bias, lower.bias)
        && upper.clamp == lower.clamp
        && (upper.first_base, upper.pixel_step) == (lower.first_base, lower.pixel_step);
    let one_row_apart = taps[6].0 == taps[3].0 + row_step
        && taps
            .iter()
            .zip(lower_taps)
            .all(|(&(input, weight), &lower)| lower == (input + row_step, weight));
    (row_step > 0 && same_buffers && one_row_apart).then_some(row_step)
}

/// Checks that `output` is whole pixels of the run and that every tap of every pixel and every
/// tap's weights are inside `input` and `weight`, and returns the count of pixels.
///
/// # Panics
/// If they are not.
fn check_run(pixels: &InteriorPixels<'_>, output: &[f32]) -> usize {
    let channels = pixels.bias.len();
    let count = output.len() / channels;
    assert_eq!(
        count * channels,
        output.len(),
        "interior_pixels: a partial pixel"
    );
    if count == 0 {
        return 0;
    }
    // Without taps (a row whose kernel lies wholly in the padding) nothing is read: a band of
    // such rows (`pointwise_depthwise`) has no input at all.
    let last_input = pixels
        .taps
        .iter()
        .map(|&(input, _)| input)
        .max()
        .map_or(0, |last| {
            last + pixels.first_base + (count - 1) * pixels.pixel_step + channels
        });
    let last_weight = pixels
        .taps
        .iter()
        .map(|&(_, weight)| weight)
        .max()
        .map_or(0, |last| last + channels);
    assert!(
        last_input <= pixels.input.len() && last_weight <= pixels.weight.len(),
        "interior_pixels: a tap lies outside the input or the weights"
    );
    count
}

/// The plain twin of [`interior_pixels`], one pixel at a time.
fn interior_pixels_portable(pixels: &InteriorPixels<'_>, output: &mut [f32]) {
    let channels = pixels.bias.len();
    for (index, pixel) in output.chunks_exact_mut(channels).enumerate() {
        pixel.copy_from_slice(pixels.bias);
        let base = pixels.first_base + index * pixels.pixel_step;
        accumulate_taps(pixels.input, base, pixels.weight, pixels.taps, pixel);
        if let Some(clamp) = pixels.clamp {
            pixel
                .iter_mut()
                .for_each(|value| *value = clamp.apply(*value));
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod depthwise_x86_64 {
    //! The AVX2 + FMA and AVX-512 forms of [`super::interior_pixels`]; the caller checks the
    //! processor and the bounds.

    use super::InteriorPixels;
    use crate::kernels::activation::Activation;
    use std::arch::x86_64::*;

    /// See [`super::interior_pixels`].
    ///
    /// # Safety
    /// The processor has AVX2 and FMA; `output` is whole pixels of `bias.len()` channels, and
    /// every pixel's taps and every tap's weights are inside `input` and `weight`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn interior_pixels(pixels: &InteriorPixels<'_>, output: &mut [f32]) {
        let stride = three_wide_stride(pixels);
        for_each_tile(pixels, output, |output, first, tile_pixels| {
            // SAFETY: `for_each_tile` passes tiles below the run's pixel count; the caller
            // guarantees the rest, and `three_wide_stride` the taps' rows.
            unsafe {
                match (tile_pixels, stride) {
                    (8, Some(1)) => tile_three_wide::<8, 1>(pixels, output, first),
                    (8, Some(2)) => tile_three_wide::<8, 2>(pixels, output, first),
                    (4, Some(1)) => tile_three_wide::<4, 1>(pixels, output, first),
                    (4, Some(2)) => tile_three_wide::<4, 2>(pixels, output, first),
                    (8, _) => tile::<8>(pixels, output, first),
                    (4, _) => tile::<4>(pixels, output, first),
                    _ => tile::<1>(pixels, output, first),
                }
            }
        });
    }

    /// The pixel step in input columns, 1 or 2, where the run's taps are whole kernel rows of
    /// three neighbouring columns, in order: `(i, w)`, `(i + C, w + C)`, `(i + 2C, w + 2C)`
    /// for each row (a 3-wide kernel of unit dilation, as `depthwise_row_body` lists an
    /// interior pixel's taps). The tiles of [`accumulate_taps`] then load each input column
    /// once for the taps of all the pixels that read it; `None` elsewhere.
    pub(super) fn three_wide_stride(pixels: &InteriorPixels<'_>) -> Option<usize> {
        let channels = pixels.bias.len();
        let stride = [1, 2]
            .into_iter()
            .find(|&stride| pixels.pixel_step == stride * channels)?;
        let rows = pixels.taps.chunks_exact(3);
        let whole_rows = rows.remainder().is_empty()
            && !pixels.taps.is_empty()
            && rows.into_iter().all(|row| {
                let (input, weight) = row[0];
                (1..3).all(|kx| row[kx] == (input + kx * channels, weight + kx * channels))
            });
        whole_rows.then_some(stride)
    }

    /// Calls `tile(output, first, pixels)` for tiles of eight pixels, then four, then one, that
    /// cover the run's pixels.
    #[inline(always)]
    fn for_each_tile(
        pixels: &InteriorPixels<'_>,
        output: &mut [f32],
        mut tile: impl FnMut(&mut [f32], usize, usize),
    ) {
        let count = output.len() / pixels.bias.len();
        let mut first = 0;
        for tile_pixels in [8, 4, 1] {
            while first + tile_pixels <= count {
                tile(output, first, tile_pixels);
                first += tile_pixels;
            }
        }
    }

    /// Pixels `first..first + TILE` of the run (`$tile` is `TILE`), from channel `$channel` on
    /// the whole groups of `$blocks` blocks of `$lanes` channels, in registers of that many
    /// lanes (`$load` and the other intrinsics of one width): every tap multiply-added into
    /// `TILE * $blocks` sums as `$taps` says ([`accumulate_taps`]), clamped and stored.
    /// Evaluates to the first channel past the last whole group. A macro, expanded in each
    /// kernel, so that its intrinsics compile with that kernel's target features.
    ///
    /// Unsafe to expand: `$channel..channels` and every tap of these pixels, every tap's weights
    /// and the pixels' outputs are inside their slices, and the taps are as `$taps` needs.
    macro_rules! channel_blocks {
        (
            $taps:tt, $pixels:expr, $output:expr, $first:expr, $channel:expr, $tile:ident,
            $blocks:expr, $lanes:literal, $load:ident, $set1:ident, $fmadd:ident, $min:ident,
            $max:ident, $store:ident
        ) => {{
            let pixels: &InteriorPixels<'_> = $pixels;
            let (first, mut channel): (usize, usize) = ($first, $channel);
            let channels = pixels.bias.len();
            let destination = $output.as_mut_ptr();
            let base = pixels.first_base + first * pixels.pixel_step;
            let (low, high) = clamp_bounds(pixels.clamp);
            let (low, high) = ($set1(low), $set1(high));
            while channel + $blocks * $lanes <= channels {
                let mut bias = [$set1(0.0); $blocks];
                for (block, value) in bias.iter_mut().enumerate() {
                    *value = $load(pixels.bias.as_ptr().add(channel + block * $lanes));
                }
                let mut sums = [bias; $tile];
                accumulate_taps!(
                    $taps, pixels, sums, base, channel, $tile, $blocks, $lanes, $load, $set1,
                    $fmadd
                );
                for (index, sum) in sums.into_iter().enumerate() {
                    let pixel = destination.add((first + index) * channels + channel);
                    for (block, sum) in sum.into_iter().enumerate() {
                        $store(pixel.add(block * $lanes), $min(high, $max(low, sum)));
                    }
                }
                channel += $blocks * $lanes;
            }
            channel
        }};
    }

    /// [`channel_blocks`] sixteen channels a zmm register (AVX-512F).
    macro_rules! zmm_blocks {
        (
            $taps:tt, $pixels:expr, $output:expr, $first:expr, $channel:expr, $tile:ident,
            $blocks:expr
        ) => {
            channel_blocks!(
                $taps,
                $pixels,
                $output,
                $first,
                $channel,
                $tile,
                $blocks,
                16,
                _mm512_loadu_ps,
                _mm512_set1_ps,
                _mm512_fmadd_ps,
                _mm512_min_ps,
                _mm512_max_ps,
                _mm512_storeu_ps
            )
        };
    }

    /// [`channel_blocks`] eight channels a ymm register (AVX2 and FMA).
    macro_rules! ymm_blocks {
        (
            $taps:tt, $pixels:expr, $output:expr, $first:expr, $channel:expr, $tile:ident,
            $blocks:expr
        ) => {
            channel_blocks!(
                $taps,
                $pixels,
                $output,
                $first,
                $channel,
                $tile,
                $blocks,
                8,
                _mm256_loadu_ps,
                _mm256_set1_ps,
                _mm256_fmadd_ps,
                _mm256_min_ps,
                _mm256_max_ps,
                _mm256_storeu_ps
            )
        };
    }

    /// For column `$c` of an input row that a tile of `$tile` pixels reads through a kernel row
    /// three taps wide at unit stride, runs `$body` with `$tap` and `$pixel` bound to each
    /// (tap, pixel) pair that reads it: tap 0 of pixel `c`, 1 of `c - 1`, 2 of `c - 2`, those
    /// of the pixels in the tile, in that order. `$c` runs from 0 to `$tile + 1`; with both
    /// constant once the loop over columns unrolls, the tests fold away. The one place where
    /// that order, which makes each pixel take its taps column by column, is written down: the
    /// tiles of one row (`accumulate_taps`) and of two (`pair_tile`) share it, and so their bits.
    macro_rules! unit_stride_column {
        ($tile:expr, $c:expr, |$tap:ident, $pixel:ident| $body:block) => {{
            let (tile, c): (usize, usize) = ($tile, $c);
            for $tap in 0..3 {
                if c >= $tap && c - $tap < tile {
                    let $pixel = c - $tap;
                    $body
                }
            }
        }};
    }

    /// The multiply-adds of [`channel_blocks`] into `$sums` (`[[vector; $blocks]; $tile]`) for
    /// the group of channels from `$channel` on, of the pixels from input offset `$base` on:
    ///
    /// - `general`: tap by tap, each tap's weights loaded once and every pixel's input vector
    ///   loaded for it;
    /// - `(three_wide $stride)`, for runs whose taps are whole kernel rows three columns wide
    ///   (`three_wide_stride` is `Some($stride)`): for each kernel row, the three taps' weights
    ///   stay in registers and each input column the pixels read is loaded once and
    ///   multiply-added into every pixel that reads it (three at stride 1), so a row of a tile
    ///   of eight pixels loads ten columns for twenty-four multiply-adds instead of twenty-seven
    ///   vectors. Each pixel still adds its taps in the order of `taps` (a column's taps reach
    ///   the pixels in the order of the columns), so the sums are `general`'s, bit for bit.
    macro_rules! accumulate_taps {
        (
            general, $pixels:ident, $sums:ident, $base:ident, $channel:ident, $tile:ident,
            $blocks:expr, $lanes:literal, $load:ident, $set1:ident, $fmadd:ident
        ) => {{
            let (input, weight) = ($pixels.input.as_ptr(), $pixels.weight.as_ptr());
            for &(input_offset, weight_offset) in $pixels.taps {
                let tap = input.add($base + input_offset + $channel);
                for block in 0..$blocks {
                    let weights = $load(weight.add(weight_offset + $channel + block * $lanes));
                    for (index, sum) in $sums.iter_mut().enumerate() {
                        let values = $load(tap.add(index * $pixels.pixel_step + block * $lanes));
                        sum[block] = $fmadd(weights, values, sum[block]);
                    }
                }
            }
        }};
        (
            (three_wide $stride:ident), $pixels:ident, $sums:ident, $base:ident,
            $channel:ident, $tile:ident, $blocks:expr, $lanes:literal, $load:ident,
            $set1:ident, $fmadd:ident
        ) => {{
            let (input, weight) = ($pixels.input.as_ptr(), $pixels.weight.as_ptr());
            let channels = $pixels.bias.len();
            let mut row_step = |row: &[(usize, usize)]| {
                let (row_input, row_weight) = row[0];
                let mut weights = [[$set1(0.0); $blocks]; 3];
                for (kx, tap) in weights.iter_mut().enumerate() {
                    for (block, value) in tap.iter_mut().enumerate() {
                        *value = $load(
                            weight.add(row_weight + kx * channels + $channel + block * $lanes),
                        );
                    }
                }
                let source = input.add($base + row_input + $channel);
                let column = |column: usize, block: usize| {
                    $load(source.add(column * channels + block * $lanes))
                };
                // Pixel `p` reads column `p * stride + kx` through tap `kx`. The loops run a
                // fixed number of times with fixed sums per step, so that they unroll and the
                // sums stay in registers.
                if $stride == 1 {
                    for c in 0..$tile + 2 {
                        for block in 0..$blocks {
                            let values = column(c, block);
                            unit_stride_column!($tile, c, |tap, pixel| {
                                $sums[pixel][block] =
                                    $fmadd(weights[tap][block], values, $sums[pixel][block]);
                            });
                        }
                    }
                } else {
                    // Column `2p` is tap 0 of pixel `p` and 2 of `p - 1`; `2p + 1` is tap 1 of
                    // `p`; the last, `2 * tile`, tap 2 of the last pixel.
                    for p in 0..$tile {
                        for block in 0..$blocks {
                            let values = column(2 * p, block);
                            $sums[p][block] = $fmadd(weights[0][block], values, $sums[p][block]);
                            if p >= 1 {
                                $sums[p - 1][block] =
                                    $fmadd(weights[2][block], values, $sums[p - 1][block]);
                            }
                            let values = column(2 * p + 1, block);
                            $sums[p][block] = $fmadd(weights[1][block], values, $sums[p][block]);
                        }
                    }
                    for block in 0..$blocks {
                        let values = column(2 * $tile, block);
                        $sums[$tile - 1][block] =
                            $fmadd(weights[2][block], values, $sums[$tile - 1][block]);
                    }
                }
            };
            // A 3 x 3 kernel's three rows as straight-line code, so that the compiler schedules
            // their loads and FMAs together (`depthwise_timing`, one thread, medians of three
            // runs, against the loop: 28 x 28 x 192 36.0 -> 31.9 us, stride 2 11.5 -> 10.2,
            // 14 x 14 x 576 27.4 -> 25.4, 14 x 14 x 384 17.9 -> 16.9, 112 x 112 x 32 141.8 ->
            // 133.6; the others within 3%).
            match <&[(usize, usize); 9]>::try_from($pixels.taps) {
                Ok(nine) => {
                    row_step(&nine[0..3]);
                    row_step(&nine[3..6]);
                    row_step(&nine[6..9]);
                }
                Err(_) => {
                    for row in $pixels.taps.chunks_exact(3) {
                        row_step(row);
                    }
                }
            }
        }};
    }

    /// See [`super::interior_pixel_pairs`]: tiles of four pixels of both rows, one block of
    /// eight channels at a time, hold eight sums, the three taps' weights of the two kernel rows
    /// that meet an input row (one for each output row) and a column: fifteen registers. Each
    /// input row's six columns are loaded once for the four pixels of each output row that read
    /// them, so the tile loads twenty-four columns for seventy-two multiply-adds where two rows
    /// of tiles of eight load thirty for each seventy-two. The pixels past the last whole tile
    /// go in one more tile, the run's last four; the channels past the last whole block go row
    /// by row as [`interior_pixels`] takes them.
    ///
    /// # Safety
    /// The processor has AVX2 and FMA; both outputs are the same whole pixels of `upper`'s run,
    /// its taps are three-wide at unit stride (`three_wide_stride` is `Some(1)`), nine of them,
    /// and every tap of every pixel, every tap moved `row_step` on, and every tap's weights are
    /// inside `upper.input` and `upper.weight`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn interior_pixel_pairs(
        upper: &InteriorPixels<'_>,
        row_step: usize,
        upper_output: &mut [f32],
        lower_output: &mut [f32],
    ) {
        const TILE: usize = 4;
        let channels = upper.bias.len();
        let whole_blocks = channels / 8 * 8;
        let count = upper_output.len() / channels;
        let lower = InteriorPixels {
            first_base: upper.first_base + row_step,
            ..*upper
        };
        // The pixels past the last whole tile go in one more tile, the run's last four: its
        // first pixels are computed again, to the same bits (every sum is computed the same
        // way), where a tile of one pixel a row would chain each sum's multiply-adds.
        let last = (!count.is_multiple_of(TILE) && count >= TILE).then(|| count - TILE);
        for first in (0..count / TILE).map(|tile| tile * TILE).chain(last) {
            // SAFETY: The tile's pixels are below `count`, its blocks below `channels`, and the
            // caller guarantees the rest.
            unsafe {
                pair_tile(
                    upper,
                    row_step,
                    upper_output,
                    lower_output,
                    first,
                    whole_blocks,
                );
                if whole_blocks < channels {
                    tile_from::<TILE>(upper, upper_output, first, whole_blocks);
                    tile_from::<TILE>(&lower, lower_output, first, whole_blocks);
                }
            }
        }
        if count < TILE {
            for first in 0..count {
                // SAFETY: As above, for one pixel of each row.
                unsafe {
                    tile::<1>(upper, upper_output, first);
                    tile::<1>(&lower, lower_output, first);
                }
            }
        }
    }

    /// Pixels `first..first + 4` of both rows of [`interior_pixel_pairs`], the blocks of eight
    /// channels below `end`. Input row `r` (0 to 3: the upper row's three kernel rows, then the
    /// lower row's last) is kernel row `r` of the upper pixels and `r - 1` of the lower ones;
    /// each sum takes the taps row by row, column by column, as `accumulate_taps` does.
    ///
    /// # Safety
    /// As [`interior_pixel_pairs`], with `first + 4` at most the run's pixel count and `end` a
    /// multiple of eight at most the channel count.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn pair_tile(
        upper: &InteriorPixels<'_>,
        row_step: usize,
        upper_output: &mut [f32],
        lower_output: &mut [f32],
        first: usize,
        end: usize,
    ) {
        const TILE: usize = 4;
        let channels = upper.bias.len();
        let (input, weight) = (upper.input.as_ptr(), upper.weight.as_ptr());
        let base = upper.first_base + first * upper.pixel_step;
        let (low, high) = clamp_bounds(upper.clamp);
        let (low, high) = (_mm256_set1_ps(low), _mm256_set1_ps(high));
        // Input row `r`'s first column and kernel row `r`'s weights, from the upper run's taps,
        // at channel 0; the loop below adds the block's channel.
        let rows = [
            input.wrapping_add(base + upper.taps[0].0),
            input.wrapping_add(base + upper.taps[3].0),
            input.wrapping_add(base + upper.taps[6].0),
            input.wrapping_add(base + upper.taps[6].0 + row_step),
        ];
        let kernel_rows = [
            weight.wrapping_add(upper.taps[0].1),
            weight.wrapping_add(upper.taps[3].1),
            weight.wrapping_add(upper.taps[6].1),
        ];
        let destinations = [
            upper_output.as_mut_ptr().wrapping_add(first * channels),
            lower_output.as_mut_ptr().wrapping_add(first * channels),
        ];
        let mut channel = 0;
        while channel + 8 <= end {
            // SAFETY: Every load is a tap of one of the tile's pixels in one of the two rows, or
            // a tap's weights, of a block below `end`; the stores are the tile's pixels.
            unsafe {
                let bias = _mm256_loadu_ps(upper.bias.as_ptr().add(channel));
                let mut sums = [[bias; TILE]; 2];
                let kernel_row = |row: usize| {
                    let at = kernel_rows[row].add(channel);
                    [
                        _mm256_loadu_ps(at),
                        _mm256_loadu_ps(at.add(channels)),
                        _mm256_loadu_ps(at.add(2 * channels)),
                    ]
                };
                // Column `c` of an input row into the sums of output row `$out` (0 upper, 1
                // lower) with a kernel row's `$weights`.
                macro_rules! column {
                    ($out:literal, $weights:ident, $values:ident, $c:ident) => {{
                        let row_sums = &mut sums[$out];
                        unit_stride_column!(TILE, $c, |tap, pixel| {
                            row_sums[pixel] =
                                _mm256_fmadd_ps($weights[tap], $values, row_sums[pixel]);
                        });
                    }};
                }
                // Input row `$r`, column by column, into output row `$out` through kernel row
                // `$kernel` (and `$out2` through `$kernel2`). The row's pointer goes through
                // `black_box` once a block: without it LLVM kept a pointer for each of the
                // twenty-four columns the tile reads, most of them on the stack, and loaded one
                // before each column (`perf annotate`); with it, one pointer a row and the
                // columns' offsets in registers.
                macro_rules! input_row {
                    ($r:literal, $out:literal, $kernel:literal) => {{
                        let source = std::hint::black_box(rows[$r]).add(channel);
                        let weights = kernel_row($kernel);
                        for c in 0..TILE + 2 {
                            let values = _mm256_loadu_ps(source.add(c * channels));
                            column!($out, weights, values, c);
                        }
                    }};
                    (
                        $r:literal, $out:literal, $kernel:literal, $out2:literal,
                        $kernel2:literal
                    ) => {{
                        let source = std::hint::black_box(rows[$r]).add(channel);
                        let (weights, weights2) = (kernel_row($kernel), kernel_row($kernel2));
                        for c in 0..TILE + 2 {
                            let values = _mm256_loadu_ps(source.add(c * channels));
                            column!($out, weights, values, c);
                            column!($out2, weights2, values, c);
                        }
                    }};
                }
                input_row!(0, 0, 0);
                input_row!(1, 0, 1, 1, 0);
                input_row!(2, 0, 2, 1, 1);
                input_row!(3, 1, 2);
                for (row, row_sums) in sums.into_iter().enumerate() {
                    for (index, sum) in row_sums.into_iter().enumerate() {
                        let pixel = destinations[row].add(index * channels + channel);
                        _mm256_storeu_ps(pixel, _mm256_min_ps(high, _mm256_max_ps(low, sum)));
                    }
                }
            }
            channel += 8;
        }
    }

    /// Whether the processor runs [`interior_pixels_avx512`], and the GEMM's instruction-set
    /// cap (`set_max_isa`, which tests and benchmarks use to compare kernels) allows it.
    pub(super) fn has_avx512() -> bool {
        crate::kernels::gemm::selected_isa() == crate::kernels::gemm::GemmIsa::Avx512
    }

    /// [`interior_pixels`] sixteen channels a register: eight pixels of sixteen channels at a
    /// time, then the channels past the last whole block of sixteen through the AVX2 tile. The
    /// tiles of the run's last pixels (four, then one at a time) take two and eight blocks at
    /// once, so that each still has eight sums in flight: one sum per tap chains the FMAs'
    /// latency (a 14x14 row is a tile of eight, one of four and two border pixels of one).
    ///
    /// # Safety
    /// As [`interior_pixels`], and the processor has AVX-512F.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn interior_pixels_avx512(pixels: &InteriorPixels<'_>, output: &mut [f32]) {
        let stride = three_wide_stride(pixels);
        for_each_tile(pixels, output, |output, first, tile_pixels| {
            // SAFETY: `for_each_tile` passes tiles below the run's pixel count; the caller
            // guarantees the rest, AVX-512F included, and `three_wide_stride` the taps' rows.
            unsafe {
                match (tile_pixels, stride) {
                    (8, Some(1)) => tile_three_wide_avx512::<8, 1, 1>(pixels, output, first),
                    (8, Some(2)) => tile_three_wide_avx512::<8, 1, 2>(pixels, output, first),
                    (4, Some(1)) => tile_three_wide_avx512::<4, 2, 1>(pixels, output, first),
                    (4, Some(2)) => tile_three_wide_avx512::<4, 2, 2>(pixels, output, first),
                    (8, _) => tile_avx512::<8, 1>(pixels, output, first),
                    (4, _) => tile_avx512::<4, 2>(pixels, output, first),
                    _ => tile_avx512::<1, 8>(pixels, output, first),
                }
            }
        });
    }

    /// Pixels `first..first + TILE` of the run: groups of `BLOCKS` blocks of sixteen channels in
    /// `TILE * BLOCKS` zmm registers, then single blocks, then the rest of the channels through
    /// the AVX2 tile from the first channel past the last whole block.
    ///
    /// # Safety
    /// As [`interior_pixels_avx512`], and `first + TILE` is at most the run's pixel count.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn tile_avx512<const TILE: usize, const BLOCKS: usize>(
        pixels: &InteriorPixels<'_>,
        output: &mut [f32],
        first: usize,
    ) {
        // SAFETY: The blocks stay below `channels` (the macro's loop bound), and the caller
        // guarantees every tap of these pixels, every tap's weights and the pixels' outputs are
        // inside their slices.
        let channel = unsafe { zmm_blocks!(general, pixels, output, first, 0, TILE, BLOCKS) };
        // SAFETY: As above, for the blocks past the last group of `BLOCKS`.
        let channel = unsafe { zmm_blocks!(general, pixels, output, first, channel, TILE, 1) };
        // SAFETY: As above, for the channels from `channel` on.
        unsafe { tile_from::<TILE>(pixels, output, first, channel) };
    }

    /// [`tile_avx512`] for runs of three-wide kernel rows at a pixel step of `STRIDE` columns
    /// (see [`accumulate_taps`]): groups of `BLOCKS` blocks of sixteen channels, then single
    /// blocks, then the rest of the channels through the AVX2 tile.
    ///
    /// # Safety
    /// As [`tile_avx512`], and `three_wide_stride(pixels)` is `Some(STRIDE)`.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn tile_three_wide_avx512<
        const TILE: usize,
        const BLOCKS: usize,
        const STRIDE: usize,
    >(
        pixels: &InteriorPixels<'_>,
        output: &mut [f32],
        first: usize,
    ) {
        // SAFETY: The blocks stay below `channels` (the macro's loop bound), each column loaded
        // is a tap of one of these pixels, and the caller guarantees every tap of these pixels,
        // every tap's weights and the pixels' outputs are inside their slices.
        let channel = unsafe {
            zmm_blocks!(
                (three_wide STRIDE),
                pixels,
                output,
                first,
                0,
                TILE,
                BLOCKS
            )
        };
        // SAFETY: As above, for the blocks past the last group of `BLOCKS`.
        let channel = unsafe {
            zmm_blocks!(
                (three_wide STRIDE),
                pixels,
                output,
                first,
                channel,
                TILE,
                1
            )
        };
        // SAFETY: As above, for the channels from `channel` on.
        unsafe { tile_three_wide_from::<TILE, STRIDE>(pixels, output, first, channel) };
    }

    /// [`tile`] for runs of three-wide kernel rows at a pixel step of `STRIDE` columns.
    ///
    /// # Safety
    /// As [`tile`], and `three_wide_stride(pixels)` is `Some(STRIDE)`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile_three_wide<const TILE: usize, const STRIDE: usize>(
        pixels: &InteriorPixels<'_>,
        output: &mut [f32],
        first: usize,
    ) {
        // SAFETY: Forwarded from the caller.
        unsafe { tile_three_wide_from::<TILE, STRIDE>(pixels, output, first, 0) };
    }

    /// Blocks of eight channels from `first_channel` on through [`accumulate_taps`] (a tile of
    /// four pixels two blocks at once, as [`tile_from`]), then the channels past the last whole
    /// block as [`tile_from`] does.
    ///
    /// # Safety
    /// As [`tile_three_wide`].
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile_three_wide_from<const TILE: usize, const STRIDE: usize>(
        pixels: &InteriorPixels<'_>,
        output: &mut [f32],
        first: usize,
        first_channel: usize,
    ) {
        let mut channel = first_channel;
        if TILE == 4 {
            // SAFETY: As in `tile_three_wide_avx512`, eight channels a register: eight sums,
            // the three taps' weights of two blocks and a column, fifteen registers.
            channel = unsafe {
                ymm_blocks!(
                    (three_wide STRIDE),
                    pixels,
                    output,
                    first,
                    channel,
                    TILE,
                    2
                )
            };
        }
        // SAFETY: As in `tile_three_wide_avx512`, eight channels a register.
        let channel = unsafe {
            ymm_blocks!(
                (three_wide STRIDE),
                pixels,
                output,
                first,
                channel,
                TILE,
                1
            )
        };
        // SAFETY: Forwarded from the caller; the channels from `channel` on.
        unsafe { tile_from::<TILE>(pixels, output, first, channel) };
    }

    /// The bounds of a clamp (`max_ps(low, x)`, then `min_ps(high, x)`): ReLU's and ReLU6's,
    /// or infinite ones that change nothing. `max_ps(0, x)` and `min_ps(6, x)` return `x` when
    /// it is NaN, as `relu` and `relu6` do, and keep `-0.0`.
    fn clamp_bounds(clamp: Option<Activation>) -> (f32, f32) {
        match clamp {
            Some(Activation::Relu) => (0.0, f32::INFINITY),
            Some(Activation::Relu6) => (0.0, 6.0),
            _ => (f32::NEG_INFINITY, f32::INFINITY),
        }
    }

    /// Pixels `first..first + TILE` of the run, every channel: blocks of eight channels in
    /// `TILE` registers (a tile of fewer than eight pixels several blocks at once, so that
    /// eight sums are in flight, as [`interior_pixels_avx512`] does), then the channels past
    /// the last whole block one by one.
    ///
    /// # Safety
    /// As [`interior_pixels`], and `first + TILE` is at most the run's pixel count.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const TILE: usize>(
        pixels: &InteriorPixels<'_>,
        output: &mut [f32],
        first: usize,
    ) {
        // SAFETY: Forwarded from the caller.
        unsafe { tile_from::<TILE>(pixels, output, first, 0) };
    }

    /// [`tile`] for the channels from `first_channel` on.
    ///
    /// # Safety
    /// As [`tile`].
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile_from<const TILE: usize>(
        pixels: &InteriorPixels<'_>,
        output: &mut [f32],
        first: usize,
        first_channel: usize,
    ) {
        // With one sum per pixel and block, a tile of one pixel (the border pixels, and the last
        // of a run) chains each sum's multiply-adds through the FMA's latency. Groups of as
        // many blocks as keep eight sums, then of fewer for the channels left (144 is two groups
        // of 64 and one of 16): `depthwise_timing`, one thread, 7 x 7 x 960 24.1 -> 22.4 us,
        // 14 x 14 x 384 31.5 -> 28.8.
        // SAFETY: The blocks of every group stay below `channels` (the macro's loop bound), and
        // the caller guarantees every tap of these pixels, every tap's weights and the pixels'
        // outputs are inside their slices.
        let channel = unsafe {
            let mut channel = first_channel;
            if TILE == 1 {
                channel = ymm_blocks!(general, pixels, output, first, channel, TILE, 8);
                channel = ymm_blocks!(general, pixels, output, first, channel, TILE, 4);
            }
            if TILE <= 4 {
                channel = ymm_blocks!(general, pixels, output, first, channel, TILE, 2);
            }
            ymm_blocks!(general, pixels, output, first, channel, TILE, 1)
        };
        let channels = pixels.bias.len();
        let base = pixels.first_base + first * pixels.pixel_step;
        for channel in channel..channels {
            for index in 0..TILE {
                let pixel_base = base + index * pixels.pixel_step + channel;
                let mut sum = pixels.bias[channel];
                for &(input_offset, weight_offset) in pixels.taps {
                    sum += pixels.weight[weight_offset + channel]
                        * pixels.input[pixel_base + input_offset];
                }
                output[(first + index) * channels + channel] =
                    pixels.clamp.map_or(sum, |clamp| clamp.apply(sum));
            }
        }
    }
}

/// One output pixel whose kernel hangs over the left or right edge: its taps are checked one by
/// one. When they fit one round, they run through the interior pixels' kernel as a run of one
/// pixel (on a 7 x 7 map two pixels of seven are border pixels); more taps are applied round by
/// round.
#[inline(always)]
fn border_pixel(row: &DepthwiseRow<'_>, out_x: usize, pixel: &mut [f32]) {
    let geometry = row.geometry;
    let channels = row.channels;
    let [kernel_h, kernel_w] = geometry.kernel;
    if kernel_h * kernel_w <= MAX_TAPS {
        let mut taps = [(0usize, 0usize); MAX_TAPS];
        let count = border_taps(row, out_x, &mut taps);
        let pixels = InteriorPixels {
            input: row.input,
            first_base: 0,
            pixel_step: 0,
            weight: row.weight,
            bias: row.bias,
            taps: &taps[..count],
            clamp: row.clamp,
        };
        interior_pixels(&pixels, pixel);
        return;
    }
    pixel.copy_from_slice(row.bias);
    let mut taps = [(0usize, 0usize); MAX_TAPS];
    let mut count = 0;
    for kernel_y in 0..kernel_h {
        let Some(input_y) = geometry.input_row(row.out_y, kernel_y) else {
            continue;
        };
        for kernel_x in 0..kernel_w {
            let Some(input_x) = (out_x * geometry.stride[1] + kernel_x * geometry.dilation[1])
                .checked_sub(geometry.padding[1])
                .filter(|&column| column < geometry.in_w)
            else {
                continue;
            };
            taps[count] = (
                ((input_y - row.first_row) * geometry.in_w + input_x) * channels,
                (kernel_y * kernel_w + kernel_x) * channels,
            );
            count += 1;
            if count == MAX_TAPS {
                accumulate_taps(row.input, 0, row.weight, &taps, pixel);
                count = 0;
            }
        }
    }
    accumulate_taps(row.input, 0, row.weight, &taps[..count], pixel);
    if let Some(clamp) = row.clamp {
        pixel
            .iter_mut()
            .for_each(|value| *value = clamp.apply(*value));
    }
}

/// The taps `(input offset, weight offset)` of a border pixel whose kernel has at most
/// `MAX_TAPS` taps, in `taps`; returns their count.
#[inline(always)]
fn border_taps(
    row: &DepthwiseRow<'_>,
    out_x: usize,
    taps: &mut [(usize, usize); MAX_TAPS],
) -> usize {
    let geometry = row.geometry;
    let channels = row.channels;
    let [kernel_h, kernel_w] = geometry.kernel;
    let mut count = 0;
    for kernel_y in 0..kernel_h {
        let Some(input_y) = geometry.input_row(row.out_y, kernel_y) else {
            continue;
        };
        for kernel_x in 0..kernel_w {
            let Some(input_x) = (out_x * geometry.stride[1] + kernel_x * geometry.dilation[1])
                .checked_sub(geometry.padding[1])
                .filter(|&column| column < geometry.in_w)
            else {
                continue;
            };
            taps[count] = (
                ((input_y - row.first_row) * geometry.in_w + input_x) * channels,
                (kernel_y * kernel_w + kernel_x) * channels,
            );
            count += 1;
        }
    }
    count
}

/// `pixel[c] += sum over taps of weight[w + c] * input[base + i + c]` for the taps' `(i, w)`,
/// block by block of channels.
#[inline(always)]
fn accumulate_taps(
    input: &[f32],
    base: usize,
    weight: &[f32],
    taps: &[(usize, usize)],
    pixel: &mut [f32],
) {
    if taps.is_empty() {
        return;
    }
    let input = &input[base..];
    let channels = pixel.len();
    let mut start = 0;
    while start + CHANNEL_BLOCK <= channels {
        accumulate_block::<CHANNEL_BLOCK>(input, weight, taps, pixel, start);
        start += CHANNEL_BLOCK;
    }
    if start + CHANNEL_BLOCK / 2 <= channels {
        accumulate_block::<{ CHANNEL_BLOCK / 2 }>(input, weight, taps, pixel, start);
        start += CHANNEL_BLOCK / 2;
    }
    for channel in start..channels {
        let mut sum = pixel[channel];
        for &(input_offset, weight_offset) in taps {
            sum += weight[weight_offset + channel] * input[input_offset + channel];
        }
        pixel[channel] = sum;
    }
}

/// One block of `N` channels from `start`: fixed-size arrays, so the sum stays in registers.
#[inline(always)]
fn accumulate_block<const N: usize>(
    input: &[f32],
    weight: &[f32],
    taps: &[(usize, usize)],
    pixel: &mut [f32],
    start: usize,
) {
    let block = &mut pixel[start..start + N];
    let mut sum: [f32; N] = (&*block).try_into().expect("the block has N channels");
    for &(input_offset, weight_offset) in taps {
        let inputs: &[f32; N] = input[input_offset + start..][..N]
            .try_into()
            .expect("the block has N channels");
        let weights: &[f32; N] = weight[weight_offset + start..][..N]
            .try_into()
            .expect("the block has N channels");
        for lane in 0..N {
            sum[lane] += weights[lane] * inputs[lane];
        }
    }
    block.copy_from_slice(&sum);
}

/// Unfolds one `[H, W, C]` image into `columns`, `[out_h * out_w, kh * kw * C]`: each row is the
/// patch under one output pixel, zero where it hangs over the padding. Output rows are split
/// across the thread pool. Without dilation a kernel row of a patch that lies inside the image
/// is `kw * C` contiguous floats (9 for MobileNetV2's stem), copied at once; a patch at the
/// border is copied tap by tap.
fn im2col_channels_last(input: &[f32], channels: usize, geometry: &Geometry, columns: &mut [f32]) {
    let [kernel_h, kernel_w] = geometry.kernel;
    let depth = kernel_h * kernel_w * channels;
    let row_length = kernel_w * channels;
    let out_w = geometry.out_w;
    let rows_per_task = IM2COL_ROWS_PER_TASK.max(1);
    let task_length = rows_per_task * out_w * depth;
    let columns = &mut columns[..geometry.out_h * out_w * depth];
    let run = |task: usize, task_columns: &mut [f32]| {
        for (row_in_task, row_columns) in task_columns.chunks_mut(out_w * depth).enumerate() {
            let out_y = task * rows_per_task + row_in_task;
            for (out_x, patch) in row_columns.chunks_exact_mut(depth).enumerate() {
                for (kernel_y, patch_row) in patch.chunks_exact_mut(row_length).enumerate() {
                    let Some(input_y) = geometry.input_row(out_y, kernel_y) else {
                        patch_row.fill(0.0);
                        continue;
                    };
                    let input_row =
                        &input[input_y * geometry.in_w * channels..][..geometry.in_w * channels];
                    let first_x = (out_x * geometry.stride[1]).checked_sub(geometry.padding[1]);
                    match first_x {
                        Some(first_x)
                            if geometry.dilation[1] == 1 && first_x + kernel_w <= geometry.in_w =>
                        {
                            let source = &input_row[first_x * channels..][..row_length];
                            match row_length {
                                // MobileNetV2's stem (3x3 over 3 channels), ResNet's (7x7):
                                // a copy of a known length is a few vector moves.
                                9 => patch_row[..9].copy_from_slice(&source[..9]),
                                21 => patch_row[..21].copy_from_slice(&source[..21]),
                                _ => super::copy_short(source, patch_row),
                            }
                        }
                        _ => {
                            for (kernel_x, tap) in patch_row.chunks_exact_mut(channels).enumerate()
                            {
                                let input_x = (out_x * geometry.stride[1]
                                    + kernel_x * geometry.dilation[1])
                                    .checked_sub(geometry.padding[1])
                                    .filter(|&column| column < geometry.in_w);
                                match input_x {
                                    Some(input_x) => super::copy_short(
                                        &input_row[input_x * channels..][..channels],
                                        tap,
                                    ),
                                    None => tap.fill(0.0),
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    if columns.len() < PARALLEL_IM2COL_MIN_FLOATS {
        run(0, columns);
    } else {
        threading::run_chunks_mut(columns, task_length, run);
    }
}

/// Output rows of one task of `im2col_channels_last`.
const IM2COL_ROWS_PER_TASK: usize = 4;
/// Columns (floats) below which `im2col_channels_last` runs on the calling thread alone.
const PARALLEL_IM2COL_MIN_FLOATS: usize = 1 << 15;

#[cfg(test)]
mod interior_pixel_tests {
    use super::*;
    use crate::test_support::{assert_close, values};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// The dispatched kernel (AVX2 or AVX-512 where the machine has it) agrees with its
        /// portable twin on runs of 0 to 21 pixels (tiles of eight, four and one), channel
        /// counts with and without a tail past the last block of eight or sixteen, and past the
        /// groups of two and eight blocks that the AVX-512 tiles of four and one pixel take,
        /// steps of one and two pixels, up to nine taps at arbitrary offsets, and each clamp.
        #[test]
        fn interior_pixels_match_portable(
            (channels, count, pixel_step_pixels, taps, data, weight, bias) in
                (prop_oneof![1..27usize, 28..50usize, 120..150usize], 0..22usize, 1..3usize, 1..10usize).prop_flat_map(
                    |(channels, count, step, tap_count)| {
                        let input_pixels = count * step + 12;
                        (
                            Just(channels), Just(count), Just(step),
                            proptest::collection::vec((0..12usize, 0..9usize), tap_count),
                            values(input_pixels * channels),
                            values(9 * channels),
                            values(channels),
                        )
                    },
                ),
            first_base_pixels in 0..3usize,
            clamp in prop_oneof![Just(None), Just(Some(Activation::Relu)), Just(Some(Activation::Relu6))],
        ) {
            let taps: Vec<(usize, usize)> = taps
                .iter()
                .map(|&(input, weight_tap)| (input * channels, weight_tap * channels))
                .collect();
            // The input holds every pixel's farthest tap (offset 11 from a base of at most 2
            // pixels past `first_base`), padded as `input_pixels` above.
            let mut data = data;
            data.resize(data.len() + first_base_pixels * channels, 0.5);
            let pixels = InteriorPixels {
                input: &data,
                first_base: first_base_pixels * channels,
                pixel_step: pixel_step_pixels * channels,
                weight: &weight,
                bias: &bias,
                taps: &taps,
                clamp,
            };
            let mut expected = vec![f32::NAN; count * channels];
            interior_pixels_portable(&pixels, &mut expected);
            let mut output = vec![f32::NAN; count * channels];
            interior_pixels(&pixels, &mut output);
            assert_close(&output, &expected, 1e-5);
        }

        /// Taps that are whole kernel rows three columns wide, as `depthwise_row_body` lists an
        /// interior pixel's, take the kernels that load each column once
        /// (`three_wide_stride`): they agree with the portable twin on runs of 0 to 21 pixels,
        /// steps of one and two pixels, one to three kernel rows of any input row and kernel
        /// row, channel counts with and without tails, and each clamp.
        #[test]
        fn three_wide_rows_match_portable(
            (channels, count, step, rows, data, weight, bias) in
                (prop_oneof![1..27usize, 28..50usize, 120..150usize], 0..22usize, 1..3usize, 1..4usize).prop_flat_map(
                    |(channels, count, step, row_count)| {
                        let input_pixels = 3 * (count * step + 4);
                        (
                            Just(channels), Just(count), Just(step),
                            proptest::collection::vec((0..3usize, 0..3usize), row_count),
                            values(input_pixels * channels),
                            values(9 * channels),
                            values(channels),
                        )
                    },
                ),
            first_base_pixels in 0..3usize,
            clamp in prop_oneof![Just(None), Just(Some(Activation::Relu)), Just(Some(Activation::Relu6))],
        ) {
            // Input rows of `count * step + 4` pixels; each kernel row `(input row, kernel row)`
            // lists its three columns.
            let row_pixels = count * step + 4;
            let taps: Vec<(usize, usize)> = rows
                .iter()
                .flat_map(|&(input_row, kernel_row)| {
                    (0..3).map(move |column| {
                        (
                            (input_row * row_pixels + column) * channels,
                            (kernel_row * 3 + column) * channels,
                        )
                    })
                })
                .collect();
            let mut data = data;
            data.resize(data.len() + first_base_pixels * channels, 0.5);
            let pixels = InteriorPixels {
                input: &data,
                first_base: first_base_pixels * channels,
                pixel_step: step * channels,
                weight: &weight,
                bias: &bias,
                taps: &taps,
                clamp,
            };
            #[cfg(target_arch = "x86_64")]
            prop_assert_eq!(depthwise_x86_64::three_wide_stride(&pixels), Some(step));
            let mut expected = vec![f32::NAN; count * channels];
            interior_pixels_portable(&pixels, &mut expected);
            let mut output = vec![f32::NAN; count * channels];
            interior_pixels(&pixels, &mut output);
            assert_close(&output, &expected, 1e-5);
        }
    }

    /// Taps that are not whole three-wide rows in order, or a step of three pixels, take the
    /// general kernels.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn three_wide_stride_needs_whole_rows() {
        let (data, weight, bias) = (vec![0.0; 64], vec![0.0; 36], vec![0.0; 4]);
        let pixels = |taps: &'static [(usize, usize)], step: usize| InteriorPixels {
            input: &data,
            first_base: 0,
            pixel_step: step * 4,
            weight: &weight,
            bias: &bias,
            taps,
            clamp: None,
        };
        let row = &[(8, 12), (12, 16), (16, 20)];
        assert_eq!(
            depthwise_x86_64::three_wide_stride(&pixels(row, 1)),
            Some(1)
        );
        assert_eq!(
            depthwise_x86_64::three_wide_stride(&pixels(row, 2)),
            Some(2)
        );
        assert_eq!(depthwise_x86_64::three_wide_stride(&pixels(row, 3)), None);
        assert_eq!(depthwise_x86_64::three_wide_stride(&pixels(&[], 1)), None);
        for taps in [
            &[(8, 12), (12, 16)][..],
            &[(8, 12), (16, 20), (12, 16)],
            &[(8, 12), (12, 16), (16, 24)],
            &[(8, 12), (12, 16), (20, 20)],
        ] {
            let pixels = InteriorPixels {
                taps,
                ..pixels(row, 1)
            };
            assert_eq!(
                depthwise_x86_64::three_wide_stride(&pixels),
                None,
                "{taps:?}"
            );
        }
    }
}

#[cfg(test)]
mod row_pair_tests {
    use super::*;
    use crate::test_support::values;
    use proptest::prelude::*;

    /// Runs `layer` (depthwise) over `input` (`[N, H, W, C]`) with `residual`, once through
    /// `depthwise_output_rows` (rows paired where it can) and once row by row, and returns both.
    fn paired_and_one_by_one(
        layer: &PackedConv2dChannelsLast,
        input: &[f32],
        input_shape: [usize; 4],
        residual: Option<&[f32]>,
    ) -> (Vec<f32>, Vec<f32>) {
        let output_shape = layer.output_shape(input_shape).unwrap();
        let geometry = layer.geometry(input_shape, output_shape);
        let Method::Depthwise { weight, bias } = &layer.method else {
            panic!("not a depthwise layer");
        };
        let [_, in_h, in_w, channels] = input_shape;
        let [batch, out_h, out_w, _] = output_shape;
        let (image, row_length) = (in_h * in_w * channels, out_w * channels);
        let clamp = layer.depthwise_clamp(residual.is_some());
        let row_at = |row: usize| DepthwiseRow {
            input: &input[row / out_h * image..][..image],
            first_row: 0,
            weight: weight.as_slice(),
            bias,
            geometry: &geometry,
            channels,
            out_y: row % out_h,
            clamp,
        };
        let residual_at =
            |row: usize| residual.map(|residual| &residual[row * row_length..][..row_length]);
        let mut paired = vec![f32::NAN; batch * out_h * row_length];
        layer.depthwise_output_rows(&mut paired, row_length, row_at, residual_at);
        let mut one_by_one = vec![f32::NAN; paired.len()];
        for (row, values) in one_by_one.chunks_exact_mut(row_length).enumerate() {
            layer.depthwise_output_row(&row_at(row), residual_at(row), values);
        }
        (paired, one_by_one)
    }

    fn assert_same_bits(actual: &[f32], expected: &[f32]) {
        assert_eq!(actual.len(), expected.len());
        for (index, (actual, expected)) in actual.iter().zip(expected).enumerate() {
            assert_eq!(
                actual.to_bits(),
                expected.to_bits(),
                "element {index}: {actual} against {expected}"
            );
        }
    }

    fn depthwise_layer(
        channels: usize,
        options: Conv2dOptions,
        activation: Option<Activation>,
        weight: &[f32],
        bias: &[f32],
    ) -> PackedConv2dChannelsLast {
        PackedConv2dChannelsLast::new(weight, [channels, 1, 3, 3], Some(bias), options)
            .unwrap()
            .with_activation(activation)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Rows run two at a time (`depthwise_row_pair`: the AVX2 tiles of four pixels of two
        /// rows where the kernel is 3 x 3 at unit stride and wholly inside both rows) have the
        /// bits of rows run one by one: images of 1 to 9 rows (pairs never span two images),
        /// rows of 1 to 14 pixels (runs shorter than a tile, whole tiles, and a last tile that
        /// overlaps the one before), channel counts below, at and past blocks of eight, strides,
        /// paddings and dilations that pair and that do not, clamps, an activation applied after
        /// the kernel, and a residual.
        #[test]
        fn row_pairs_have_the_bits_of_single_rows(
            (batch, height, width, channels, input, weight, bias, residual) in
                (1..3usize, 1..10usize, 1..15usize, prop_oneof![1..27usize, 28..42usize])
                    .prop_flat_map(|(batch, height, width, channels)| {
                        let length = batch * height * width * channels;
                        (
                            Just(batch), Just(height), Just(width), Just(channels),
                            values(length),
                            values(9 * channels),
                            values(channels),
                            values(length),
                        )
                    }),
            stride in prop_oneof![3 => Just(1usize), 1 => Just(2usize)],
            padding in prop_oneof![3 => Just(1usize), 1 => 0..3usize],
            dilation in prop_oneof![3 => Just(1usize), 1 => Just(2usize)],
            activation in prop_oneof![
                Just(None),
                Just(Some(Activation::Relu)),
                Just(Some(Activation::Relu6)),
                Just(Some(Activation::HardSwish)),
            ],
            with_residual in any::<bool>(),
        ) {
            let options = Conv2dOptions {
                stride: [stride, stride],
                padding: [padding, padding],
                dilation: [dilation, dilation],
                groups: channels,
            };
            let input_shape = [batch, height, width, channels];
            let layer = depthwise_layer(channels, options, activation, &weight, &bias);
            // Kernels that do not fit the padded image are refused; nothing to compare.
            let Ok(output_shape) = layer.output_shape(input_shape) else {
                return Ok(());
            };
            // A residual of the output's length where the input is as long (padding 2 makes the
            // output longer): its first values.
            let output_length = output_shape.iter().product::<usize>();
            let residual = (with_residual && output_length <= residual.len())
                .then(|| &residual[..output_length]);
            let (paired, one_by_one) =
                paired_and_one_by_one(&layer, &input, input_shape, residual);
            assert_same_bits(&paired, &one_by_one);
        }
    }

    /// The shapes whose rows pair on AVX2 (3 x 3, unit stride, padding 1): interior runs of 2,
    /// 3, 4, 5, 7, 8 and 13 pixels (no tile, one, and one that overlaps the tile before), with
    /// channel counts of whole blocks, a tail, and MobileNetV2's 144; against the reference
    /// convolution too, so that a pair kernel and the single-row one cannot agree on a wrong
    /// result.
    #[test]
    fn row_pairs_match_the_reference() {
        for (width, channels) in [
            (4, 8),
            (5, 19),
            (6, 16),
            (7, 40),
            (9, 3),
            (10, 144),
            (15, 27),
        ] {
            let height = 7;
            let input_shape = [1, height, width, channels];
            let input: Vec<f32> = (0..height * width * channels)
                .map(|i| ((i * 13) % 23) as f32 / 11.0 - 1.0)
                .collect();
            let weight: Vec<f32> = (0..channels * 9)
                .map(|i| ((i * 5) % 17) as f32 / 8.0 - 1.0)
                .collect();
            let bias: Vec<f32> = (0..channels).map(|i| i as f32 / 7.0).collect();
            let options = Conv2dOptions {
                padding: [1, 1],
                groups: channels,
                ..Conv2dOptions::default()
            };
            let layer = depthwise_layer(channels, options, Some(Activation::Relu6), &weight, &bias);
            let (paired, one_by_one) = paired_and_one_by_one(&layer, &input, input_shape, None);
            assert_same_bits(&paired, &one_by_one);
            // The reference: every output pixel and channel summed tap by tap.
            for y in 0..height {
                for x in 0..width {
                    for c in 0..channels {
                        let mut sum = f64::from(bias[c]);
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (iy, ix) = ((y + ky).wrapping_sub(1), (x + kx).wrapping_sub(1));
                                if iy < height && ix < width {
                                    sum += f64::from(weight[c * 9 + ky * 3 + kx])
                                        * f64::from(input[(iy * width + ix) * channels + c]);
                                }
                            }
                        }
                        let expected = sum.clamp(0.0, 6.0) as f32;
                        let actual = paired[(y * width + x) * channels + c];
                        assert!(
                            (actual - expected).abs() <= 1e-5 * expected.abs().max(1.0),
                            "width {width}, channels {channels}, ({y}, {x}, {c}): {actual} \
                             against {expected}"
                        );
                    }
                }
            }
        }
    }
}
