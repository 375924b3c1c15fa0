//! [`PackedConv2dInt8`]: a 2-D convolution layer with int8 weights, over NCHW or channels-last
//! images, mirroring `PackedConv2dChannelsLast`.
//!
//! A call quantizes its f32 input to u8 once, into a channels-last image (an NCHW input is
//! transposed on the way), then:
//! - without groups, multiplies `im2col(x_q)[pixels, kh * kw * in]` by the packed weights on the
//!   int8 GEMM, image by image (an image whose im2col rows pass `WHOLE_COLUMNS_BYTES` a chunk of
//!   rows at a time, each built and multiplied on one thread while it is in cache); a 1x1 kernel
//!   with unit stride and no padding skips im2col (the quantized image is the matrix, and the
//!   whole batch is one GEMM);
//! - depthwise, runs the direct int8 depthwise kernel.
//!
//! Channels-last calls write the output directly, with the bias, residual and activation fused
//! into the epilogue. NCHW calls compute a channels-last output into the workspace and transpose
//! it, adding the residual and applying the activation as they go.

use super::depthwise::{
    DepthwiseCall, DepthwiseInt8Weights, MAX_DEPTHWISE_TAPS, depthwise_forward,
};
use super::gemm::{GemmOutput, Int8Epilogue, Int8Lhs, MAX_DEPTH, PackedInt8Weights, int8_gemm};
use super::quantize::{ConvGeometry, im2col, quantize_rows, quantize_rows_from_planes};
use super::{ActivationQuantization, Int8Isa, grown, selected_isa};
use crate::error::{KernelResult, check_length, checked_element_count, invalid_parameter};
use crate::kernels::activation::{Activation, apply_activation_sequential};
use crate::kernels::conv::{Conv2dOptions, ConvWorkspace, channels_last_output_shape, check_layer};
use crate::threading;

/// The input of [`PackedConv2dInt8::forward_int8`].
pub enum Int8Input<'a> {
    /// f32 values in the layer's layout, which the layer quantizes.
    Float(&'a [f32]),
    /// Bytes already quantized for this layer by the layer before (an
    /// [`Int8Output::QuantizedFor`] this layer): channels-last pixels laid out as
    /// [`PackedConv2dInt8::quantized_input_layout`] says.
    Quantized(&'a [u8]),
}

/// The output of [`PackedConv2dInt8::forward_int8`].
pub enum Int8Output<'a> {
    /// f32 values in the layer's layout.
    Float(&'a mut [f32]),
    /// Bytes quantized as `next` quantizes its input, laid out as it reads them.
    QuantizedFor {
        next: &'a PackedConv2dInt8,
        bytes: &'a mut [u8],
    },
}

/// im2col bytes of one image above which a layer builds its columns a chunk of output pixels at
/// a time, each chunk multiplied while it is in cache (ResNet-18's 56x56 3x3 layers have 1.8 MB,
/// which written whole and read back from memory cost a fifth of the layer's time).
pub(super) const WHOLE_COLUMNS_BYTES: usize = 1 << 19;
/// The im2col bytes of one chunk.
const CHUNK_BYTES: usize = 1 << 16;

thread_local! {
    /// Each thread's im2col rows of one chunk; grown once, then reused.
    static CHUNK_COLUMNS: std::cell::RefCell<Vec<u8>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// One image's im2col GEMM in chunks of output pixels, on the pool: each task builds a chunk's
/// rows in its thread's buffer and multiplies them on that thread.
struct ChunkedColumns<'a> {
    isa: Int8Isa,
    image: &'a [u8],
    channels: usize,
    geometry: &'a ConvGeometry,
    zero_point: u8,
    weights: &'a PackedInt8Weights,
    depth: usize,
}

impl ChunkedColumns<'_> {
    /// The image's output pixels into `output` (the image's rows).
    fn multiply(&self, epilogue: Int8Epilogue<'_>, output: GemmOutput<'_>) {
        let pixels = self.geometry.out_h * self.geometry.out_w;
        let chunk_rows = (CHUNK_BYTES / self.depth)
            .max(1)
            .next_multiple_of(super::gemm::MR)
            .min(pixels.max(1));
        let cols = self.weights.cols;
        match output {
            GemmOutput::Float(values) => {
                threading::run_chunks_mut(values, chunk_rows * cols, |chunk, values| {
                    let first = chunk * chunk_rows;
                    let count = values.len() / cols;
                    let epilogue = Int8Epilogue {
                        residual: epilogue
                            .residual
                            .map(|residual| &residual[first * cols..][..count * cols]),
                        ..epilogue
                    };
                    self.chunk(first, count, epilogue, GemmOutput::Float(values));
                });
            }
            GemmOutput::Quantized {
                bytes,
                row_stride,
                quantization,
            } => {
                threading::run_chunks_mut(bytes, chunk_rows * row_stride, |chunk, bytes| {
                    let count = bytes.len() / row_stride;
                    let output = GemmOutput::Quantized {
                        bytes,
                        row_stride,
                        quantization,
                    };
                    self.chunk(chunk * chunk_rows, count, epilogue, output);
                });
            }
        }
    }

    /// Output pixels `first..first + count`: their im2col rows, then the GEMM (inline: a call
    /// from a pool task runs on its thread).
    fn chunk(
        &self,
        first: usize,
        count: usize,
        epilogue: Int8Epilogue<'_>,
        output: GemmOutput<'_>,
    ) {
        CHUNK_COLUMNS.with(|cell| {
            let mut buffer = cell.borrow_mut();
            let columns = grown(&mut buffer, count * self.depth);
            im2col(
                self.image,
                self.channels,
                self.geometry,
                self.zero_point,
                self.depth,
                first,
                columns,
            );
            let lhs = Int8Lhs {
                data: columns,
                rows: count,
                stride: self.depth,
            };
            int8_gemm(self.isa, lhs, self.weights, epilogue, output);
        });
    }
}

/// A 2-D convolution layer with per-output-channel int8 weights and a calibrated u8 input
/// quantization, ready to run.
#[derive(Clone, Debug)]
pub struct PackedConv2dInt8 {
    out_channels: usize,
    in_channels: usize,
    kernel: [usize; 2],
    options: Conv2dOptions,
    channels_last: bool,
    input_quantization: ActivationQuantization,
    activation: Option<Activation>,
    method: Method,
}

#[derive(Clone, Debug)]
enum Method {
    /// The weight as `[kh * kw * in, out]` (rows ordered `(ky, kx, c)`, an NHWC patch), packed.
    Gemm {
        weights: PackedInt8Weights,
    },
    Depthwise {
        weights: DepthwiseInt8Weights,
    },
}

impl PackedConv2dInt8 {
    /// Quantizes a weight of shape `[out, in / groups, kh, kw]` (row-major, PyTorch's layout) per
    /// output channel, symmetrically: `s_w[c] = max |w_c| / 127` (1 if all zero), `q =
    /// clamp(round(w / s_w[c]), -127, 127)`, rounding ties to even. `groups` must be 1, or equal
    /// to both channel counts (depthwise). `channels_last` picks the layout of the input and the
    /// output (`[N, H, W, C]` if true, `[N, C, H, W]` if false), and `input` is the calibrated
    /// quantization of the input.
    pub fn new(
        weight: &[f32],
        weight_shape: [usize; 4],
        bias: Option<&[f32]>,
        options: Conv2dOptions,
        channels_last: bool,
        input: ActivationQuantization,
    ) -> KernelResult<Self> {
        let [out_channels, group_in_channels, kernel_h, kernel_w] = weight_shape;
        check_layer(weight, weight_shape, bias, options)?;
        // A normal scale has a finite inverse, which the quantizing epilogues rely on.
        if !(input.scale >= f32::MIN_POSITIVE && input.scale.is_finite()) {
            return Err(invalid_parameter(
                "conv",
                "the input's quantization scale must be a positive, normal, finite number",
            ));
        }
        let taps = kernel_h * kernel_w;
        let depthwise = group_in_channels == 1 && options.groups == out_channels;
        let method = if depthwise {
            if taps > MAX_DEPTHWISE_TAPS {
                return Err(invalid_parameter(
                    "conv",
                    format!(
                        "an int8 depthwise kernel has at most {MAX_DEPTHWISE_TAPS} taps, not {taps}"
                    ),
                ));
            }
            Method::Depthwise {
                weights: DepthwiseInt8Weights::new(
                    weight,
                    out_channels,
                    [kernel_h, kernel_w],
                    bias,
                    input.scale,
                    input.zero_point,
                ),
            }
        } else if options.groups == 1 {
            let depth = group_in_channels * taps;
            if depth > MAX_DEPTH {
                return Err(invalid_parameter(
                    "conv",
                    format!(
                        "an int8 convolution sums at most {MAX_DEPTH} products per output, not {depth}"
                    ),
                ));
            }
            // [out, in, kh, kw] -> [out, kh, kw, in]: each filter in the order of an NHWC patch.
            let mut reordered = vec![0.0; out_channels * depth];
            for (out_channel, filter) in weight.chunks_exact(depth).enumerate() {
                for (channel, channel_taps) in filter.chunks_exact(taps).enumerate() {
                    for (tap, &value) in channel_taps.iter().enumerate() {
                        reordered[out_channel * depth + tap * group_in_channels + channel] = value;
                    }
                }
            }
            Method::Gemm {
                weights: PackedInt8Weights::new(
                    &reordered,
                    out_channels,
                    depth,
                    bias,
                    input.scale,
                    input.zero_point,
                ),
            }
        } else {
            return Err(invalid_parameter(
                "conv",
                format!(
                    "an int8 convolution has groups = 1 or is depthwise, not groups = {}",
                    options.groups
                ),
            ));
        };
        Ok(Self {
            out_channels,
            in_channels: group_in_channels * options.groups,
            kernel: [kernel_h, kernel_w],
            options,
            channels_last,
            input_quantization: input,
            activation: None,
            method,
        })
    }

    /// The same layer with `activation` fused into its output.
    pub fn with_activation(mut self, activation: Option<Activation>) -> Self {
        self.activation = activation;
        self
    }

    /// The output shape for an input of `input_shape`, both in the layer's layout.
    pub fn output_shape(&self, input_shape: [usize; 4]) -> KernelResult<[usize; 4]> {
        let output = channels_last_output_shape(
            self.as_nhwc(input_shape),
            self.in_channels,
            self.out_channels,
            self.kernel,
            self.options,
        )?;
        Ok(self.in_layout(output))
    }

    /// Runs the layer on an input of `input_shape` into an output of `output_shape(..)`: the input
    /// is quantized to u8, multiplied in integers, and the epilogue computes `y = s_x * s_w[c] *
    /// sum((x_q - zp) * w_q) + bias[c]`, then the activation.
    pub fn forward(
        &self,
        input: &[f32],
        input_shape: [usize; 4],
        output: &mut [f32],
        workspace: &mut ConvWorkspace,
    ) -> KernelResult<()> {
        self.run(
            selected_isa(),
            Int8Input::Float(input),
            input_shape,
            None,
            Int8Output::Float(output),
            workspace,
        )
    }

    /// [`Self::forward`] with a residual shaped like the output, added after the bias and before
    /// the activation.
    pub fn forward_residual(
        &self,
        input: &[f32],
        input_shape: [usize; 4],
        residual: &[f32],
        output: &mut [f32],
        workspace: &mut ConvWorkspace,
    ) -> KernelResult<()> {
        self.run(
            selected_isa(),
            Int8Input::Float(input),
            input_shape,
            Some(residual),
            Int8Output::Float(output),
            workspace,
        )
    }

    /// [`Self::forward`] or [`Self::forward_residual`] between int8 layers: the input may be
    /// bytes that the layer before quantized for this one ([`Int8Input::Quantized`]), and the
    /// output may be bytes quantized for the next layer ([`Int8Output::QuantizedFor`]), so that
    /// a value read only by an int8 layer never goes through f32 in memory. Both are exactly
    /// what the f32 path computes: the epilogue's f32 results, quantized as the next layer
    /// quantizes its input. Quantized inputs and outputs need a channels-last layer; a
    /// quantized output takes no residual.
    pub fn forward_int8(
        &self,
        input: Int8Input<'_>,
        input_shape: [usize; 4],
        residual: Option<&[f32]>,
        output: Int8Output<'_>,
        workspace: &mut ConvWorkspace,
    ) -> KernelResult<()> {
        self.run(
            selected_isa(),
            input,
            input_shape,
            residual,
            output,
            workspace,
        )
    }

    /// How this layer reads a quantized input: its quantization, and the bytes from one pixel
    /// to the next (the channels, or for a 1x1 layer the channels rounded up to a group of the
    /// GEMM, whose extra bytes meet zero weights).
    pub fn quantized_input_layout(&self) -> (ActivationQuantization, usize) {
        (self.input_quantization, self.input_row_stride())
    }

    fn input_row_stride(&self) -> usize {
        match &self.method {
            Method::Gemm { weights } if self.is_pointwise() => weights.padded_depth(),
            _ => self.in_channels,
        }
    }

    fn is_pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.options.stride == [1, 1] && self.options.padding == [0, 0]
    }

    /// A 1x1 layer without padding that skips pixels: a pointwise product of the pixels it
    /// reads.
    fn is_strided_pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.options.stride != [1, 1] && self.options.padding == [0, 0]
    }

    /// Bytes of the stored weights (int8 values, scales and biases), for the cost report.
    pub fn weight_bytes(&self) -> usize {
        match &self.method {
            Method::Gemm { weights } => weights.bytes(),
            Method::Depthwise { weights } => weights.bytes(),
        }
    }

    /// `shape` in the layer's layout, as `[N, H, W, C]`.
    fn as_nhwc(&self, [n, a, b, c]: [usize; 4]) -> [usize; 4] {
        if self.channels_last {
            [n, a, b, c]
        } else {
            [n, b, c, a]
        }
    }

    /// `[N, H, W, C]` in the layer's layout.
    fn in_layout(&self, [n, h, w, c]: [usize; 4]) -> [usize; 4] {
        if self.channels_last {
            [n, h, w, c]
        } else {
            [n, c, h, w]
        }
    }

    /// The whole call, with the instruction set given (tests run each).
    pub(super) fn run(
        &self,
        isa: Int8Isa,
        input: Int8Input<'_>,
        input_shape: [usize; 4],
        residual: Option<&[f32]>,
        output: Int8Output<'_>,
        workspace: &mut ConvWorkspace,
    ) -> KernelResult<()> {
        let output_shape = self.output_shape(input_shape)?;
        let [batch, in_h, in_w, _] = self.as_nhwc(input_shape);
        let [_, out_h, out_w, _] = self.as_nhwc(output_shape);
        let row_stride = self.input_row_stride();
        let target =
            self.check_int8_buffers(&input, input_shape, residual, output, output_shape)?;
        let output_pixels = out_h * out_w;
        if batch * output_pixels * self.out_channels == 0 {
            return Ok(());
        }
        let geometry = ConvGeometry {
            in_h,
            in_w,
            out_h,
            out_w,
            kernel: self.kernel,
            stride: self.options.stride,
            padding: self.options.padding,
            dilation: self.options.dilation,
        };
        let scratch = &mut workspace.int8;
        // A strided 1x1 layer (ResNet's downsampling shortcut) on an f32 input quantizes only
        // the pixels it reads, straight into its GEMM rows.
        let sampled_input = match input {
            Int8Input::Float(values)
                if self.is_strided_pointwise()
                    && self.channels_last
                    && matches!(self.method, Method::Gemm { .. }) =>
            {
                Some(values)
            }
            _ => None,
        };
        // The quantized images, channels-last, each pixel `row_stride` bytes.
        let pixels = batch * in_h * in_w;
        let image: &[u8] = match input {
            _ if sampled_input.is_some() => &[],
            Int8Input::Float(values) => {
                let image = grown(&mut scratch.image, pixels * row_stride);
                self.quantize_input(values, in_h * in_w, row_stride, image);
                image
            }
            Int8Input::Quantized(bytes) => &bytes[..pixels * row_stride],
        };
        let output_length = batch * output_pixels * self.out_channels;
        let mut nchw_output = None;
        let (epilogue, mut destination) = match target {
            GemmOutput::Float(values) if self.channels_last => (
                Int8Epilogue {
                    residual,
                    activation: self.activation,
                },
                GemmOutput::Float(values),
            ),
            // NCHW: a channels-last result in the staging buffer, finished by the transpose.
            GemmOutput::Float(values) => {
                nchw_output = Some(values);
                (
                    Int8Epilogue::default(),
                    GemmOutput::Float(grown(&mut scratch.staging, output_length)),
                )
            }
            quantized @ GemmOutput::Quantized { .. } => (
                Int8Epilogue {
                    residual: None,
                    activation: self.activation,
                },
                quantized,
            ),
        };
        match (&self.method, sampled_input) {
            (Method::Depthwise { weights }, _) => {
                let call = DepthwiseCall {
                    isa,
                    images: image,
                    geometry,
                    zero_point: self.input_quantization.zero_point,
                    residual: epilogue.residual,
                    activation: epilogue.activation,
                };
                depthwise_forward(
                    weights,
                    &call,
                    destination.rows(0, batch * output_pixels, self.out_channels),
                );
            }
            (Method::Gemm { weights }, Some(values)) => {
                let depth = weights.padded_depth();
                let rows = batch * output_pixels;
                let columns = grown(&mut scratch.columns, rows * depth);
                self.quantize_sampled_pixels(values, &geometry, depth, columns);
                let lhs = Int8Lhs {
                    data: columns,
                    rows,
                    stride: depth,
                };
                int8_gemm(
                    isa,
                    lhs,
                    weights,
                    epilogue,
                    destination.rows(0, rows, self.out_channels),
                );
            }
            (Method::Gemm { weights }, None) if self.is_pointwise() => {
                let lhs = Int8Lhs {
                    data: image,
                    rows: pixels,
                    stride: row_stride,
                };
                int8_gemm(
                    isa,
                    lhs,
                    weights,
                    epilogue,
                    destination.rows(0, pixels, self.out_channels),
                );
            }
            (Method::Gemm { weights }, None) => {
                let depth = weights.padded_depth();
                let image_length = in_h * in_w * self.in_channels;
                let output_image_length = output_pixels * self.out_channels;
                // An image's im2col rows up to `WHOLE_COLUMNS_BYTES` are built whole, in the
                // workspace; larger ones a chunk at a time.
                let mut whole_columns = (output_pixels * depth <= WHOLE_COLUMNS_BYTES)
                    .then(|| grown(&mut scratch.columns, output_pixels * depth));
                for index in 0..batch {
                    let image = &image[index * image_length..][..image_length];
                    let epilogue = Int8Epilogue {
                        residual: epilogue.residual.map(|residual| {
                            &residual[index * output_image_length..][..output_image_length]
                        }),
                        ..epilogue
                    };
                    let rows =
                        destination.rows(index * output_pixels, output_pixels, self.out_channels);
                    let Some(columns) = whole_columns.as_deref_mut() else {
                        let chunked = ChunkedColumns {
                            isa,
                            image,
                            channels: self.in_channels,
                            geometry: &geometry,
                            zero_point: self.input_quantization.zero_point,
                            weights,
                            depth,
                        };
                        chunked.multiply(epilogue, rows);
                        continue;
                    };
                    // Rows in parallel, in chunks of tens of thousands of bytes.
                    let rows_per_task =
                        threading::balanced_rows_per_task(output_pixels, depth, 1 << 16);
                    threading::run_chunks_mut(
                        columns,
                        rows_per_task * depth,
                        |chunk_index, rows| {
                            im2col(
                                image,
                                self.in_channels,
                                &geometry,
                                self.input_quantization.zero_point,
                                depth,
                                chunk_index * rows_per_task,
                                rows,
                            );
                        },
                    );
                    let lhs = Int8Lhs {
                        data: columns,
                        rows: output_pixels,
                        stride: depth,
                    };
                    int8_gemm(isa, lhs, weights, epilogue, rows);
                }
            }
        }
        if let Some(output) = nchw_output {
            let staging = &scratch.staging[..output_length];
            self.finish_nchw(staging, output_pixels, residual, output);
        }
        Ok(())
    }

    /// Checks the sizes of a call's buffers and what a quantized input or output needs, and
    /// returns where the results go.
    fn check_int8_buffers<'a>(
        &self,
        input: &Int8Input<'_>,
        input_shape: [usize; 4],
        residual: Option<&[f32]>,
        output: Int8Output<'a>,
        output_shape: [usize; 4],
    ) -> KernelResult<GemmOutput<'a>> {
        let quantized = !matches!(
            (input, &output),
            (Int8Input::Float(_), Int8Output::Float(_))
        );
        if quantized && !self.channels_last {
            return Err(invalid_parameter(
                "conv",
                "quantized inputs and outputs need a channels-last int8 layer",
            ));
        }
        let [batch, in_h, in_w, _] = self.as_nhwc(input_shape);
        let [_, out_h, out_w, _] = self.as_nhwc(output_shape);
        let output_elements = checked_element_count("conv", &output_shape)?;
        match input {
            Int8Input::Float(values) => check_length(
                "conv",
                "input",
                checked_element_count("conv", &input_shape)?,
                values.len(),
            )?,
            Int8Input::Quantized(bytes) => {
                let needed =
                    checked_element_count("conv", &[batch, in_h, in_w, self.input_row_stride()])?;
                if bytes.len() < needed {
                    return Err(invalid_parameter(
                        "conv",
                        format!(
                            "a quantized input of {} bytes, where the layer reads {needed}",
                            bytes.len()
                        ),
                    ));
                }
            }
        }
        if let Some(residual) = residual {
            check_length("conv", "residual", output_elements, residual.len())?;
        }
        match output {
            Int8Output::Float(values) => {
                check_length("conv", "output", output_elements, values.len())?;
                Ok(GemmOutput::Float(values))
            }
            Int8Output::QuantizedFor { next, bytes } => {
                let (quantization, row_stride) = next.quantized_input_layout();
                let needed = checked_element_count("conv", &[batch, out_h, out_w, row_stride])?;
                if next.in_channels != self.out_channels {
                    return Err(invalid_parameter(
                        "conv",
                        format!(
                            "a quantized output of {} channels for a layer that reads {}",
                            self.out_channels, next.in_channels
                        ),
                    ));
                }
                if bytes.len() < needed || residual.is_some() {
                    return Err(invalid_parameter(
                        "conv",
                        format!(
                            "a quantized output needs {needed} bytes (not {}) and no residual",
                            bytes.len()
                        ),
                    ));
                }
                Ok(GemmOutput::Quantized {
                    bytes,
                    quantization,
                    row_stride,
                })
            }
        }
    }

    /// Quantizes every image of `input` (of `plane` pixels each) into channels-last rows of
    /// `row_stride` bytes.
    fn quantize_input(&self, input: &[f32], plane: usize, row_stride: usize, image: &mut [u8]) {
        let quantization = self.input_quantization;
        let channels = self.in_channels;
        if self.channels_last {
            // Rows in parallel, in chunks of tens of thousands of values.
            let pixels = image.len() / row_stride;
            let rows_per_task = threading::balanced_rows_per_task(pixels, row_stride, 1 << 16);
            threading::run_chunks_mut(image, rows_per_task * row_stride, |index, rows| {
                let first = index * rows_per_task * channels;
                let values = &input[first..][..rows.len() / row_stride * channels];
                quantize_rows(values, channels, row_stride, quantization, rows);
            });
        } else {
            // One task per image.
            threading::run_chunks_mut(image, plane * row_stride, |index, rows| {
                let values = &input[index * plane * channels..][..plane * channels];
                quantize_rows_from_planes(values, channels, row_stride, quantization, rows);
            });
        }
    }

    /// Quantizes the pixels a strided 1x1 layer reads from the channels-last f32 `input` into
    /// `columns`, one row of `depth` bytes (the channels, then zeros) per output pixel.
    fn quantize_sampled_pixels(
        &self,
        input: &[f32],
        geometry: &ConvGeometry,
        depth: usize,
        columns: &mut [u8],
    ) {
        let channels = self.in_channels;
        let quantization = self.input_quantization;
        let [stride_y, stride_x] = geometry.stride;
        let output_pixels = geometry.out_h * geometry.out_w;
        let rows = columns.len() / depth;
        let rows_per_task = threading::balanced_rows_per_task(rows, depth, 1 << 16);
        threading::run_chunks_mut(columns, rows_per_task * depth, |index, chunk| {
            for (offset, row) in chunk.chunks_exact_mut(depth).enumerate() {
                let pixel = index * rows_per_task + offset;
                let (image, within) = (pixel / output_pixels, pixel % output_pixels);
                let (y, x) = (within / geometry.out_w, within % geometry.out_w);
                let source = (image * geometry.in_h + y * stride_y) * geometry.in_w + x * stride_x;
                let values = &input[source * channels..][..channels];
                quantize_rows(values, channels, depth, quantization, row);
            }
        });
    }

    /// Transposes the channels-last `staging` result into the NCHW `output`, adding the
    /// residual and applying the activation.
    fn finish_nchw(
        &self,
        staging: &[f32],
        plane: usize,
        residual: Option<&[f32]>,
        output: &mut [f32],
    ) {
        let channels = self.out_channels;
        let activation = self.activation;
        // Whole output planes (a channel of an image) per task, a few thousand values each.
        let planes = output.len() / plane;
        let planes_per_task = threading::balanced_rows_per_task(planes, plane, 1 << 14);
        threading::run_chunks_mut(output, planes_per_task * plane, |chunk_index, values| {
            for (offset, plane_values) in values.chunks_exact_mut(plane).enumerate() {
                let index = chunk_index * planes_per_task + offset;
                let (image, channel) = (index / channels, index % channels);
                let source = &staging[image * plane * channels..][..plane * channels];
                for (pixel, value) in plane_values.iter_mut().enumerate() {
                    *value = source[pixel * channels + channel];
                }
                if let Some(residual) = residual {
                    let residual = &residual[index * plane..][..plane];
                    for (value, &skip) in plane_values.iter_mut().zip(residual) {
                        *value += skip;
                    }
                }
                if let Some(activation) = activation {
                    apply_activation_sequential(plane_values, activation);
                }
            }
        });
    }
}
