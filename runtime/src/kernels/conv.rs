//! Convolution over NCHW images (and NCL sequences, as images of height 1); channels-last images
//! are in [`channels_last`].
//!
//! The weight `[out_channels, in_channels / groups, kernel_h, kernel_w]` is prepared once, at
//! load time, in a `PackedConv2d`, which also picks the method:
//!
//! - depthwise convolutions (one input channel per group, any channel multiplier) run a direct
//!   kernel over each output plane;
//! - 3x3 kernels with unit stride and dilation, one group and enough channels run Winograd's
//!   F(4x4, 3x3) (in [`winograd`]): four times fewer multiplications than direct convolution;
//!   up to 256 channels (above, its F(2x2, 3x3) reads more filter bytes than the GEMM's weight,
//!   and runs only when asked for);
//! - everything else is `W_g * im2col(x_g)` per image and group on the GEMM, with the weight of
//!   each group packed as the GEMM's left operand and the bias and activation fused into its
//!   epilogue. The im2col matrix is never built: it is an implicit GEMM, whose tasks pack their
//!   B panels straight from the image (`image_panels`), and for 1x1 kernels with unit stride
//!   and no padding the image already is the matrix.
//!
//! NCHW convolutions need no caller-owned scratch (the GEMM's packing buffers and Winograd's
//! transform buffers are per thread); the `ConvWorkspace` serves the channels-last im2col.

use crate::alloc::AlignedBuffer;
use crate::error::{KernelResult, check_length, invalid_parameter, shape_mismatch};
use crate::kernels::activation::{Activation, apply_activation_in_place};
use crate::kernels::gemm::{
    Bias, Epilogue, GemmOptions, Lhs, MatrixRef, PackedLhsMatrix, Rhs, gemm, gemm_from_source,
    indirect_strip_kernel,
};
use crate::threading;
#[cfg(test)]
pub(crate) use image_panels::IMAGE_PANEL_ROW_COST;
use image_panels::ImagePanels;

pub mod channels_last;
mod depthwise_rows;
mod image_panels;
mod indirect;
mod pooled;
mod transpose;
mod winograd;

pub use channels_last::{PackedConv2dChannelsLast, PackedDepthwiseBlock};
pub use nnc_ops::{Conv1dOptions, Conv2dOptions};
pub use pooled::PackedConv2dMaxPool;
pub use transpose::{ConvTranspose2dOptions, conv_transpose2d, conv_transpose2d_output_shape};

/// Scratch memory for the channels-last im2col, owned by the caller and reused across calls.
#[derive(Clone, Debug, Default)]
pub struct ConvWorkspace {
    /// On a cache line: the GEMM packs its panels from the columns.
    columns: AlignedBuffer,
    /// The int8 convolutions' quantized images and im2col rows.
    pub(crate) int8: crate::kernels::int8::Int8Workspace,
    /// An NCHW input rewritten channels-last, where a channels-last layer has no kernel that
    /// reads NCHW (`PackedConv2dChannelsLast::forward_from_nchw`).
    image: AlignedBuffer,
    /// A pooled convolution's whole output, where it is not pooled band by band
    /// (`PackedConv2dMaxPool`).
    unpooled: AlignedBuffer,
    /// Each parallel task's own scratch, `task_stride` floats apart (see `task_scratch`).
    tasks: AlignedBuffer,
    task_stride: usize,
}

impl ConvWorkspace {
    /// An empty workspace; it grows on first use.
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn columns(&mut self, length: usize) -> &mut [f32] {
        if self.columns.len() < length {
            self.columns.resize(length);
        }
        &mut self.columns[..length]
    }

    /// Scratch of `length` floats for each of `tasks` parallel tasks, and the distance between
    /// two tasks' scratch: task `t`'s starts at `t * stride`. The stride only grows (to the
    /// longest `length` asked for yet, on a cache line), so task `t`, which the pool runs on
    /// thread `t`, finds its scratch where it left it whatever layer asks. Packed end to end at
    /// each layer's own length, one thread's scratch of a layer was the other's of the next, and
    /// the first write of every line fetched it from the other core's cache: MobileNetV2's
    /// inverted residual blocks ran 5-9% slower at two threads.
    pub(crate) fn task_scratch(&mut self, tasks: usize, length: usize) -> (&mut [f32], usize) {
        self.task_stride = self
            .task_stride
            .max(length.next_multiple_of(crate::alloc::ALIGN_BYTES / size_of::<f32>()));
        let total = tasks.saturating_mul(self.task_stride);
        if self.tasks.len() < total {
            self.tasks.resize(total);
        }
        (&mut self.tasks[..total], self.task_stride)
    }
}

/// A 2-D convolution layer ready to run.
#[derive(Clone, Debug)]
pub struct PackedConv2d {
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
    /// One packed `[out / groups, in / groups * kh * kw]` matrix per group.
    Gemm { group_weights: Vec<PackedLhsMatrix> },
    /// The raw weight, `[out_channels, kh * kw]`.
    Depthwise { weight: Vec<f32> },
    /// The Winograd-transformed filters of a 3x3 convolution.
    Winograd(winograd::WinogradWeights),
}

/// Which method `PackedConv2d::new_with_method` uses; for benchmarks and tests that compare
/// the methods on the same layer.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvMethodChoice {
    /// What `PackedConv2d::new` picks.
    Automatic,
    /// The GEMM (im2col) method, or the depthwise kernel for depthwise layers.
    Gemm,
    /// Winograd F(4x4, 3x3), or F(2x2, 3x3) above 256 channels; an error for layers it does
    /// not compute (a 3x3 kernel, unit stride and dilation, one group and a padding of at most 2
    /// are needed).
    Winograd,
}

impl PackedConv2d {
    /// Prepares a weight of shape `[out_channels, in_channels / groups, kernel_h, kernel_w]`
    /// (row-major) with an optional bias of length `out_channels`.
    pub fn new(
        weight: &[f32],
        weight_shape: [usize; 4],
        bias: Option<&[f32]>,
        options: Conv2dOptions,
    ) -> KernelResult<Self> {
        Self::new_with_method(
            weight,
            weight_shape,
            bias,
            options,
            ConvMethodChoice::Automatic,
        )
    }

    /// `new`, with the method forced (for benchmarks and tests).
    #[doc(hidden)]
    pub fn new_with_method(
        weight: &[f32],
        weight_shape: [usize; 4],
        bias: Option<&[f32]>,
        options: Conv2dOptions,
        choice: ConvMethodChoice,
    ) -> KernelResult<Self> {
        let [out_channels, group_in_channels, kernel_h, kernel_w] = weight_shape;
        let groups = options.groups;
        if groups == 0 || !out_channels.is_multiple_of(groups) {
            return Err(invalid_parameter(
                "conv",
                format!("{out_channels} output channels do not split into {groups} groups"),
            ));
        }
        if options.stride.contains(&0) || options.dilation.contains(&0) {
            return Err(invalid_parameter(
                "conv",
                "stride and dilation must be positive",
            ));
        }
        if kernel_h == 0 || kernel_w == 0 || group_in_channels == 0 {
            return Err(invalid_parameter("conv", "the weight has an empty axis"));
        }
        let group_depth = group_in_channels * kernel_h * kernel_w;
        check_length("conv", "weight", out_channels * group_depth, weight.len())?;
        if let Some(bias) = bias {
            check_length("conv", "bias", out_channels, bias.len())?;
        }
        let winograd = match choice {
            ConvMethodChoice::Automatic => options.prefers_winograd(weight_shape),
            ConvMethodChoice::Gemm => false,
            ConvMethodChoice::Winograd if options.supports_winograd(weight_shape) => true,
            ConvMethodChoice::Winograd => {
                return Err(invalid_parameter(
                    "conv",
                    "Winograd needs a 3x3 kernel, unit stride and dilation, and one group",
                ));
            }
        };
        let method = if winograd {
            Method::Winograd(winograd::WinogradWeights::new(
                weight,
                out_channels,
                group_in_channels,
            )?)
        } else if group_in_channels == 1 {
            Method::Depthwise {
                weight: weight.to_vec(),
            }
        } else {
            let group_out_channels = out_channels / groups;
            let group_weights = weight
                .chunks_exact(group_out_channels * group_depth)
                .map(|group_weight| {
                    MatrixRef::row_major(group_weight, group_out_channels, group_depth)
                        .map(PackedLhsMatrix::from_matrix)
                })
                .collect::<KernelResult<Vec<_>>>()?;
            Method::Gemm { group_weights }
        };
        Ok(Self {
            out_channels,
            in_channels: group_in_channels * groups,
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

    /// The number of input channels.
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// The number of output channels.
    pub fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// The output shape `[N, out_channels, out_h, out_w]` for an input `[N, C, H, W]`.
    pub fn output_shape(&self, input_shape: [usize; 4]) -> KernelResult<[usize; 4]> {
        let [batch, channels, height, width] = input_shape;
        if channels != self.in_channels {
            return Err(shape_mismatch(
                "conv",
                format!(
                    "the input has {channels} channels, the layer expects {}",
                    self.in_channels
                ),
            ));
        }
        let out_h = convolved_size(height, self.kernel[0], self.options, 0)?;
        let out_w = convolved_size(width, self.kernel[1], self.options, 1)?;
        Ok([batch, self.out_channels, out_h, out_w])
    }

    /// Runs the layer on an `[N, C, H, W]` input into an output of `output_shape(..)`. The
    /// workspace is not used (an NCHW convolution's scratch is per thread); it keeps the
    /// signature of the channels-last layer, which generated code calls the same way.
    pub fn forward(
        &self,
        input: &[f32],
        input_shape: [usize; 4],
        output: &mut [f32],
        _workspace: &mut ConvWorkspace,
    ) -> KernelResult<()> {
        self.run(input, input_shape, None, output)
    }

    /// `output = activation(conv(input) + residual)`, with `residual` (a skip connection of the
    /// output's shape) added in the epilogue, after the bias, while each tile is still in cache,
    /// so the residual add costs no pass over memory of its own.
    pub fn forward_residual(
        &self,
        input: &[f32],
        input_shape: [usize; 4],
        residual: &[f32],
        output: &mut [f32],
        _workspace: &mut ConvWorkspace,
    ) -> KernelResult<()> {
        self.run(input, input_shape, Some(residual), output)
    }

    fn run(
        &self,
        input: &[f32],
        input_shape: [usize; 4],
        residual: Option<&[f32]>,
        output: &mut [f32],
    ) -> KernelResult<()> {
        let output_shape = self.output_shape(input_shape)?;
        check_buffers(input, input_shape, output, output_shape, residual)?;
        if output.is_empty() {
            return Ok(());
        }
        let geometry = Geometry::new(input_shape, output_shape, self.kernel, self.options);
        match &self.method {
            Method::Depthwise { weight } => {
                self.forward_depthwise(weight, input, residual, output, &geometry);
                Ok(())
            }
            Method::Gemm { group_weights } => {
                self.forward_gemm(group_weights, input, residual, output, &geometry)
            }
            Method::Winograd(weights) => weights.forward(
                &winograd::WinogradCall {
                    input,
                    batch: input_shape[0],
                    in_h: geometry.in_h,
                    in_w: geometry.in_w,
                    out_h: geometry.out_h,
                    out_w: geometry.out_w,
                    padding: self.options.padding,
                    bias: self.bias.as_deref(),
                    residual,
                    activation: self.activation,
                },
                output,
            ),
        }
    }

    fn forward_gemm(
        &self,
        group_weights: &[PackedLhsMatrix],
        input: &[f32],
        residual: Option<&[f32]>,
        output: &mut [f32],
        geometry: &Geometry,
    ) -> KernelResult<()> {
        let groups = self.options.groups;
        let group_in_channels = self.in_channels / groups;
        let group_out_channels = self.out_channels / groups;
        let input_plane = geometry.in_h * geometry.in_w;
        let output_plane = geometry.out_h * geometry.out_w;
        let group_depth = group_in_channels * self.kernel[0] * self.kernel[1];
        let direct = self.is_direct();
        let indirect = self.indirect_call(group_weights, geometry);
        let input_images = input.chunks_exact(self.in_channels * input_plane);
        let output_image_length = self.out_channels * output_plane;
        let output_images = output.chunks_exact_mut(output_image_length);
        for (image, (input_image, output_image)) in input_images.zip(output_images).enumerate() {
            let input_groups = input_image.chunks_exact(group_in_channels * input_plane);
            let output_group_length = group_out_channels * output_plane;
            let output_groups = output_image.chunks_exact_mut(output_group_length);
            for (group, (input_group, output_group)) in input_groups.zip(output_groups).enumerate()
            {
                // The residual is laid out like the output.
                let residual_group = residual.map(|residual| {
                    &residual[image * output_image_length + group * output_group_length..]
                        [..output_group_length]
                });
                let channels = group * group_out_channels..(group + 1) * group_out_channels;
                let bias = self.bias.as_ref().map(|bias| Bias::PerRow(&bias[channels]));
                let epilogue = Epilogue::from_parts(bias, self.activation);
                let options = GemmOptions {
                    accumulate: false,
                    epilogue,
                    residual: residual_group,
                };
                // Deeper layers stay on the packed GEMM: the indirect kernel reads B from the
                // image, `depth` lines of 128 bytes a strip, which past one block of `KC` steps
                // no longer stays in L1 for the strip's tiles (ResNet's 3x3/s2 64 to 128
                // channel layer, 576 deep, ran at 67% of the speed of the same GEMM on
                // operands packed beforehand, where the packed GEMM's convolution runs at 77%).
                if let Some((kernel, layer)) = &indirect {
                    let call = indirect::IndirectCall {
                        input: input_group,
                        residual: residual_group,
                        ..*layer
                    };
                    indirect::forward(&call, *kernel, output_group);
                    continue;
                }
                let weights = Lhs::Packed(&group_weights[group]);
                if direct {
                    let image_matrix =
                        MatrixRef::row_major(input_group, group_in_channels, input_plane)?;
                    gemm(
                        weights,
                        Rhs::Matrix(image_matrix),
                        output_group,
                        output_plane,
                        &options,
                    )?;
                } else {
                    let source = ImagePanels::new(input_group, geometry);
                    gemm_from_source(
                        weights,
                        &source,
                        group_depth,
                        output_plane,
                        output_group,
                        output_plane,
                        &options,
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Whether the layer is a plain GEMM on its input: a 1x1 kernel with unit stride and no
    /// padding, whose image already is the im2col matrix.
    fn is_direct(&self) -> bool {
        self.kernel == [1, 1] && self.options.stride == [1, 1] && self.options.padding == [0, 0]
    }

    /// The indirect micro-kernel and this layer's call, with no image yet (each image's call
    /// sets its `input` and `residual`), where the indirect path computes the layer: an
    /// ungrouped one, not a plain 1x1 GEMM, whose geometry it suits and whose packed weight is
    /// one block deep, on a processor with the kernel. It depends on the layer and the geometry
    /// only, so a call works it out once for all its images.
    fn indirect_call<'a>(
        &'a self,
        group_weights: &'a [PackedLhsMatrix],
        geometry: &'a Geometry,
    ) -> Option<(
        (crate::kernels::gemm::IndirectStripKernel, usize),
        indirect::IndirectCall<'a>,
    )> {
        if self.is_direct() || self.options.groups != 1 || !indirect::suits(geometry) {
            return None;
        }
        let kernel = indirect_strip_kernel()?;
        let weights = group_weights[0].single_block_panels()?;
        let call = indirect::IndirectCall {
            weights,
            out_channels: self.out_channels,
            input: &[],
            channels: self.in_channels,
            geometry,
            bias: self.bias.as_deref(),
            residual: None,
            activation: self.activation,
        };
        Some((kernel, call))
    }

    fn forward_depthwise(
        &self,
        weight: &[f32],
        input: &[f32],
        residual: Option<&[f32]>,
        output: &mut [f32],
        geometry: &Geometry,
    ) {
        let taps = self.kernel[0] * self.kernel[1];
        let input_plane = geometry.in_h * geometry.in_w;
        let output_plane = geometry.out_h * geometry.out_w;
        let multiplier = self.out_channels / self.in_channels;
        let planes_per_task = (PARALLEL_CHUNK / output_plane).max(1);
        threading::run_chunks_mut(
            output,
            planes_per_task * output_plane,
            |chunk_index, planes| {
                for (plane_offset, output_plane_values) in
                    planes.chunks_exact_mut(output_plane).enumerate()
                {
                    let plane = chunk_index * planes_per_task + plane_offset;
                    let (image, out_channel) =
                        (plane / self.out_channels, plane % self.out_channels);
                    let in_channel = out_channel / multiplier;
                    let input_plane_values = &input
                        [(image * self.in_channels + in_channel) * input_plane..][..input_plane];
                    let bias = self.bias.as_ref().map_or(0.0, |bias| bias[out_channel]);
                    depthwise_plane(
                        input_plane_values,
                        &weight[out_channel * taps..][..taps],
                        bias,
                        geometry,
                        output_plane_values,
                    );
                    if let Some(residual) = residual {
                        let residual_plane = &residual[plane * output_plane..][..output_plane];
                        for (value, &skip) in output_plane_values.iter_mut().zip(residual_plane) {
                            *value += skip;
                        }
                    }
                    if let Some(activation) = self.activation {
                        apply_activation_in_place(output_plane_values, activation);
                    }
                }
            },
        );
    }
}

/// `output = conv(input)`; the same as `conv.forward`.
pub fn conv2d(
    input: &[f32],
    input_shape: [usize; 4],
    conv: &PackedConv2d,
    output: &mut [f32],
    workspace: &mut ConvWorkspace,
) -> KernelResult<()> {
    conv.forward(input, input_shape, output, workspace)
}

/// A 1-D convolution layer ready to run: a `PackedConv2d` with a kernel of height 1.
#[derive(Clone, Debug)]
pub struct PackedConv1d {
    conv: PackedConv2d,
}

impl PackedConv1d {
    /// Prepares a weight of shape `[out_channels, in_channels / groups, kernel]`.
    pub fn new(
        weight: &[f32],
        weight_shape: [usize; 3],
        bias: Option<&[f32]>,
        options: Conv1dOptions,
    ) -> KernelResult<Self> {
        let [out_channels, group_in_channels, kernel] = weight_shape;
        let options = Conv2dOptions {
            stride: [1, options.stride],
            padding: [0, options.padding],
            dilation: [1, options.dilation],
            groups: options.groups,
        };
        let conv = PackedConv2d::new(
            weight,
            [out_channels, group_in_channels, 1, kernel],
            bias,
            options,
        )?;
        Ok(Self { conv })
    }

    /// The same layer with `activation` fused into its output.
    pub fn with_activation(self, activation: Option<Activation>) -> Self {
        Self {
            conv: self.conv.with_activation(activation),
        }
    }

    /// The output shape `[N, out_channels, out_len]` for an input `[N, C, L]`.
    pub fn output_shape(&self, input_shape: [usize; 3]) -> KernelResult<[usize; 3]> {
        let [batch, channels, length] = input_shape;
        let [_, out_channels, _, out_length] =
            self.conv.output_shape([batch, channels, 1, length])?;
        Ok([batch, out_channels, out_length])
    }

    /// Runs the layer on an `[N, C, L]` input.
    pub fn forward(
        &self,
        input: &[f32],
        input_shape: [usize; 3],
        output: &mut [f32],
        workspace: &mut ConvWorkspace,
    ) -> KernelResult<()> {
        let [batch, channels, length] = input_shape;
        self.conv
            .forward(input, [batch, channels, 1, length], output, workspace)
    }

    /// `output = activation(conv(input) + residual)`; see [`PackedConv2d::forward_residual`].
    pub fn forward_residual(
        &self,
        input: &[f32],
        input_shape: [usize; 3],
        residual: &[f32],
        output: &mut [f32],
        workspace: &mut ConvWorkspace,
    ) -> KernelResult<()> {
        let [batch, channels, length] = input_shape;
        let input_shape = [batch, channels, 1, length];
        self.conv
            .forward_residual(input, input_shape, residual, output, workspace)
    }
}

/// `output = conv(input)` for `[N, C, L]` inputs; the same as `conv.forward`.
pub fn conv1d(
    input: &[f32],
    input_shape: [usize; 3],
    conv: &PackedConv1d,
    output: &mut [f32],
    workspace: &mut ConvWorkspace,
) -> KernelResult<()> {
    conv.forward(input, input_shape, output, workspace)
}

/// Checks the buffers of one 2-D convolution call: the input, the output and the residual, which
/// is shaped like the output.
pub(crate) fn check_buffers(
    input: &[f32],
    input_shape: [usize; 4],
    output: &[f32],
    output_shape: [usize; 4],
    residual: Option<&[f32]>,
) -> KernelResult<()> {
    check_length("conv", "input", input_shape.iter().product(), input.len())?;
    check_length(
        "conv",
        "output",
        output_shape.iter().product(),
        output.len(),
    )?;
    if let Some(residual) = residual {
        check_length("conv", "residual", output.len(), residual.len())?;
    }
    Ok(())
}

/// Checks what preparing a 2-D convolution layer takes, the same for the f32 channels-last and the
/// int8 layer: positive stride and dilation, no empty axis in the weight `[out, in / groups, kh,
/// kw]`, and a weight and bias of those sizes.
pub(crate) fn check_layer(
    weight: &[f32],
    weight_shape: [usize; 4],
    bias: Option<&[f32]>,
    options: Conv2dOptions,
) -> KernelResult<()> {
    let [out_channels, group_in_channels, kernel_h, kernel_w] = weight_shape;
    if options.stride.contains(&0) || options.dilation.contains(&0) {
        return Err(invalid_parameter(
            "conv",
            "stride and dilation must be positive",
        ));
    }
    if out_channels == 0 || kernel_h == 0 || kernel_w == 0 || group_in_channels == 0 {
        return Err(invalid_parameter("conv", "the weight has an empty axis"));
    }
    check_length(
        "conv",
        "weight",
        out_channels * group_in_channels * kernel_h * kernel_w,
        weight.len(),
    )?;
    if let Some(bias) = bias {
        check_length("conv", "bias", out_channels, bias.len())?;
    }
    Ok(())
}

/// The output shape `[N, out_h, out_w, out_channels]` of a layer with `in_channels` inputs and a
/// `kernel` for an input `[N, H, W, C]`, or an error if `C` is not `in_channels` or the kernel
/// does not fit.
pub(crate) fn channels_last_output_shape(
    [batch, height, width, channels]: [usize; 4],
    in_channels: usize,
    out_channels: usize,
    kernel: [usize; 2],
    options: Conv2dOptions,
) -> KernelResult<[usize; 4]> {
    if channels != in_channels {
        return Err(shape_mismatch(
            "conv",
            format!("the input has {channels} channels, the layer expects {in_channels}"),
        ));
    }
    let out_h = convolved_size(height, kernel[0], options, 0)?;
    let out_w = convolved_size(width, kernel[1], options, 1)?;
    Ok([batch, out_h, out_w, out_channels])
}

/// Output planes per parallel task of the depthwise kernel (in elements).
const PARALLEL_CHUNK: usize = 1 << 14;

/// `(in + 2 pad - dilation (kernel - 1) - 1) / stride + 1` along `axis`, or an error if the
/// kernel does not fit.
pub(crate) fn convolved_size(
    input: usize,
    kernel: usize,
    options: Conv2dOptions,
    axis: usize,
) -> KernelResult<usize> {
    let padded = input + 2 * options.padding[axis];
    let extent = options.dilation[axis] * (kernel - 1) + 1;
    if padded < extent {
        return Err(shape_mismatch(
            "conv",
            format!("the kernel (extent {extent}) is larger than the padded input ({padded})"),
        ));
    }
    Ok((padded - extent) / options.stride[axis] + 1)
}

/// `output.copy_from_slice(source)` for the short runs of im2col (a tap's channels, a kernel
/// row), in pieces of fixed length (16, 8, 4, 2, 1) that compile to vector moves: a call to
/// `memcpy` per run of a few floats cost more than the copy.
#[inline]
fn copy_short(source: &[f32], output: &mut [f32]) {
    let length = output.len();
    let source = &source[..length];
    let mut done = 0;
    while length - done >= 16 {
        output[done..done + 16].copy_from_slice(&source[done..done + 16]);
        done += 16;
    }
    for piece in [8, 4, 2, 1] {
        if length - done >= piece {
            output[done..done + piece].copy_from_slice(&source[done..done + piece]);
            done += piece;
        }
    }
}

/// The sizes and geometry of one call, in one place.
#[derive(Debug)]
struct Geometry {
    in_h: usize,
    in_w: usize,
    out_h: usize,
    out_w: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
}

impl Geometry {
    fn new(
        input_shape: [usize; 4],
        output_shape: [usize; 4],
        kernel: [usize; 2],
        options: Conv2dOptions,
    ) -> Self {
        Self {
            in_h: input_shape[2],
            in_w: input_shape[3],
            out_h: output_shape[2],
            out_w: output_shape[3],
            kernel,
            stride: options.stride,
            padding: options.padding,
            dilation: options.dilation,
        }
    }

    /// The input row read by output row `out_y` through kernel row `kernel_y`, if inside.
    fn input_row(&self, out_y: usize, kernel_y: usize) -> Option<usize> {
        (out_y * self.stride[0] + kernel_y * self.dilation[0])
            .checked_sub(self.padding[0])
            .filter(|&row| row < self.in_h)
    }

    /// The output columns whose input column through kernel column `kernel_x` is inside.
    fn valid_columns(&self, kernel_x: usize) -> std::ops::Range<usize> {
        valid_output_range(
            self.out_w,
            self.stride[1],
            kernel_x * self.dilation[1],
            self.padding[1],
            self.in_w,
        )
    }
}

/// The outputs `o` in `0..output_len` for which `o * stride + tap_offset - padding` lands in
/// `0..input_len`.
pub(crate) fn valid_output_range(
    output_len: usize,
    stride: usize,
    tap_offset: usize,
    padding: usize,
    input_len: usize,
) -> std::ops::Range<usize> {
    let start = padding.saturating_sub(tap_offset).div_ceil(stride);
    let end = (input_len + padding)
        .saturating_sub(tap_offset)
        .div_ceil(stride)
        .min(output_len);
    start.min(end)..end
}

/// One output plane of a depthwise convolution, row by row: the outputs whose taps all lie
/// inside the input row (the interior) sum every tap in a register, eight at a time, whatever
/// the stride ([`depthwise_rows::accumulate_row`]); the few whose window hangs over the left or
/// right padding are summed one by one. Every output starts at the bias.
fn depthwise_plane(
    input: &[f32],
    weight: &[f32],
    bias: f32,
    geometry: &Geometry,
    output: &mut [f32],
) {
    output.fill(bias);
    let [kernel_h, kernel_w] = geometry.kernel;
    let [stride, dilation, padding] = [
        geometry.stride[1],
        geometry.dilation[1],
        geometry.padding[1],
    ];
    let interior = {
        let first = geometry.valid_columns(0);
        let last = geometry.valid_columns(kernel_w - 1);
        first.start.max(last.start)..first.end.min(last.end)
    };
    for (out_y, output_row) in output.chunks_exact_mut(geometry.out_w).enumerate() {
        let kernel_rows = (0..kernel_h).filter_map(|kernel_y| {
            geometry.input_row(out_y, kernel_y).map(|input_y| {
                (
                    &input[input_y * geometry.in_w..][..geometry.in_w],
                    &weight[kernel_y * kernel_w..][..kernel_w],
                )
            })
        });
        if !interior.is_empty() {
            // Each input row from the first interior output's first tap.
            let first_input = interior.start * stride - padding;
            let mut round: [depthwise_rows::KernelRow<'_>; depthwise_rows::ROWS_PER_CALL] =
                [(&[], &[]); depthwise_rows::ROWS_PER_CALL];
            let mut count = 0;
            for (input_row, kernel_row) in kernel_rows.clone() {
                round[count] = (&input_row[first_input..], kernel_row);
                count += 1;
                if count == depthwise_rows::ROWS_PER_CALL {
                    let outputs = &mut output_row[interior.clone()];
                    depthwise_rows::accumulate_row(outputs, &round, stride, dilation);
                    count = 0;
                }
            }
            let outputs = &mut output_row[interior.clone()];
            depthwise_rows::accumulate_row(outputs, &round[..count], stride, dilation);
        }
        // The columns outside the interior: all of them when it is empty.
        let (border_end, border_start) = if interior.is_empty() {
            (geometry.out_w, geometry.out_w)
        } else {
            (interior.start, interior.end)
        };
        for out_x in (0..border_end).chain(border_start..geometry.out_w) {
            let mut sum = 0.0;
            for (input_row, kernel_row) in kernel_rows.clone() {
                for (kernel_x, &tap) in kernel_row.iter().enumerate() {
                    if let Some(input_x) = (out_x * stride + kernel_x * dilation)
                        .checked_sub(padding)
                        .filter(|&x| x < geometry.in_w)
                    {
                        sum += tap * input_row[input_x];
                    }
                }
            }
            output_row[out_x] += sum;
        }
    }
}

#[cfg(test)]
mod tests;
