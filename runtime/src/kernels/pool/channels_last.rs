//! Pooling over channels-last (NHWC) images, for the regions the compiler runs channels-last:
//! the same windows, padding, ceil mode and divisors as the NCHW kernels in the parent module,
//! on `[N, H, W, C]` inputs into `[N, out_h, out_w, C]` (and `[N, C]` for global pooling).
//!
//! The channels of a pixel are contiguous, so each output pixel combines its taps eight (or
//! sixteen) channels at a time in registers and stores once ([`rows::reduce_taps`]), whatever the
//! stride; the taps of a pixel near the border are just fewer. Rows of output pixels are
//! spread over the threads; global pooling spreads blocks of channels.

use super::rows::{self, Reduction};
use super::{
    AvgPool2dOptions, MaxPool2dOptions, PARALLEL_CHUNK, avg_pool2d_output_shape, clipped_window,
    max_pool2d_output_shape,
};
use crate::error::{KernelResult, check_length, invalid_parameter, shape_mismatch};
use crate::kernels::vectorize::Isa;
use crate::threading;

/// Max pooling of an `[N, H, W, C]` input into `[N, out_h, out_w, C]`, the sizes of
/// [`super::max_pool2d_output_shape`].
pub fn max_pool2d_channels_last(
    input: &[f32],
    input_shape: [usize; 4],
    options: &MaxPool2dOptions,
    output: &mut [f32],
) -> KernelResult<()> {
    let [batch, height, width, channels] = input_shape;
    let [_, _, out_h, out_w] = max_pool2d_output_shape([batch, channels, height, width], options)?;
    let geometry = Geometry {
        input_shape,
        output_shape: [batch, out_h, out_w, channels],
        kernel: options.kernel,
        stride: options.stride,
        padding: options.padding,
        dilation: options.dilation,
    };
    for_each_row(input, &geometry, output, |image, out_y, output_row| {
        pool_row(
            Reduction::Maximum,
            image,
            &geometry,
            out_y,
            output_row,
            |_| None,
        )
    })
}

/// Average pooling of an `[N, H, W, C]` input into `[N, out_h, out_w, C]`, the sizes of
/// [`super::avg_pool2d_output_shape`].
pub fn avg_pool2d_channels_last(
    input: &[f32],
    input_shape: [usize; 4],
    options: &AvgPool2dOptions,
    output: &mut [f32],
) -> KernelResult<()> {
    if options.divisor_override == Some(0) {
        return Err(invalid_parameter(
            "avg_pool",
            "the divisor override is zero",
        ));
    }
    let [batch, height, width, channels] = input_shape;
    let [_, _, out_h, out_w] = avg_pool2d_output_shape([batch, channels, height, width], options)?;
    let geometry = Geometry {
        input_shape,
        output_shape: [batch, out_h, out_w, channels],
        kernel: options.kernel,
        stride: options.stride,
        padding: options.padding,
        dilation: [1, 1],
    };
    for_each_row(input, &geometry, output, |image, out_y, output_row| {
        let (padded_rows, rows) = clipped_window(
            out_y,
            options.kernel[0],
            options.stride[0],
            options.padding[0],
            height,
        );
        pool_row(
            Reduction::Sum,
            image,
            &geometry,
            out_y,
            output_row,
            |out_x| {
                let (padded_columns, columns) = clipped_window(
                    out_x,
                    options.kernel[1],
                    options.stride[1],
                    options.padding[1],
                    width,
                );
                if rows.is_empty() || columns.is_empty() {
                    return None;
                }
                Some(match options.divisor_override {
                    Some(divisor) => divisor,
                    None if options.count_include_pad => padded_rows * padded_columns,
                    None => rows.len() * columns.len(),
                })
            },
        )
    })
}

/// The mean over the spatial axes of an `[N, H, W, C]` tensor, into `[N, C]`.
pub fn global_avg_pool_channels_last(
    input: &[f32],
    input_shape: [usize; 4],
    output: &mut [f32],
) -> KernelResult<()> {
    let pixels = input_shape[1] * input_shape[2];
    global_pool(Reduction::Sum, input, input_shape, output, |sums| {
        for value in sums {
            *value /= pixels as f32;
        }
    })
}

/// The maximum over the spatial axes of an `[N, H, W, C]` tensor, into `[N, C]`.
pub fn global_max_pool_channels_last(
    input: &[f32],
    input_shape: [usize; 4],
    output: &mut [f32],
) -> KernelResult<()> {
    global_pool(Reduction::Maximum, input, input_shape, output, |_| {})
}

/// The shapes and window of one call, in NHWC order.
struct Geometry {
    input_shape: [usize; 4],
    output_shape: [usize; 4],
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
}

/// Taps gathered before they are combined; larger windows are combined in several rounds.
const MAX_TAPS: usize = 32;

/// Checks the buffers and runs `pool_row(image, out_y, output_row)` over every output row, in
/// parallel.
fn for_each_row(
    input: &[f32],
    geometry: &Geometry,
    output: &mut [f32],
    pool_row: impl Fn(&[f32], usize, &mut [f32]) + Sync + Send,
) -> KernelResult<()> {
    check_length(
        "pool",
        "input",
        geometry.input_shape.iter().product(),
        input.len(),
    )?;
    check_length(
        "pool",
        "output",
        geometry.output_shape.iter().product(),
        output.len(),
    )?;
    if output.is_empty() {
        return Ok(());
    }
    let [_, height, width, channels] = geometry.input_shape;
    let [_, out_h, out_w, _] = geometry.output_shape;
    let image_len = height * width * channels;
    let output_row_len = out_w * channels;
    // A row reads about `kernel_h` input rows.
    let rows_per_task = (PARALLEL_CHUNK / (geometry.kernel[0] * width * channels).max(1)).max(1);
    threading::run_chunks_mut(
        output,
        rows_per_task * output_row_len,
        |chunk_index, rows| {
            for (row_offset, output_row) in rows.chunks_exact_mut(output_row_len).enumerate() {
                let row = chunk_index * rows_per_task + row_offset;
                let (image, out_y) = (row / out_h, row % out_h);
                pool_row(&input[image * image_len..][..image_len], out_y, output_row);
            }
        },
    );
    Ok(())
}

/// One output row `[out_w, C]`: every pixel combines the taps of its window that land inside the
/// image, then (for averages) divides by `divisor(out_x, ..)`; `None` there means the window
/// holds no input and the pixel is zero.
fn pool_row(
    reduction: Reduction,
    image: &[f32],
    geometry: &Geometry,
    out_y: usize,
    output_row: &mut [f32],
    divisor: impl Fn(usize) -> Option<usize>,
) {
    let isa = Isa::detect();
    let [_, height, width, channels] = geometry.input_shape;
    let [kernel_h, kernel_w] = geometry.kernel;
    let mut offsets = [0usize; MAX_TAPS];
    for (out_x, pixel) in output_row.chunks_exact_mut(channels).enumerate() {
        let mut count = 0;
        let mut accumulate = false;
        for kernel_y in 0..kernel_h {
            let Some(y) = (out_y * geometry.stride[0] + kernel_y * geometry.dilation[0])
                .checked_sub(geometry.padding[0])
                .filter(|&y| y < height)
            else {
                continue;
            };
            for kernel_x in 0..kernel_w {
                let Some(x) = (out_x * geometry.stride[1] + kernel_x * geometry.dilation[1])
                    .checked_sub(geometry.padding[1])
                    .filter(|&x| x < width)
                else {
                    continue;
                };
                offsets[count] = (y * width + x) * channels;
                count += 1;
                if count == MAX_TAPS {
                    rows::reduce_taps(isa, reduction, pixel, image, &offsets, accumulate);
                    accumulate = true;
                    count = 0;
                }
            }
        }
        rows::reduce_taps(isa, reduction, pixel, image, &offsets[..count], accumulate);
        if reduction == Reduction::Sum {
            match divisor(out_x) {
                Some(divisor) => {
                    for value in pixel.iter_mut() {
                        *value /= divisor as f32;
                    }
                }
                None => pixel.fill(0.0),
            }
        }
    }
}

/// Global pooling: blocks of output channels are spread over the threads, and each sums (or
/// takes the maximum of) its channels over every pixel, then `finish` turns the sums into means.
fn global_pool(
    reduction: Reduction,
    input: &[f32],
    input_shape: [usize; 4],
    output: &mut [f32],
    finish: impl Fn(&mut [f32]) + Sync + Send,
) -> KernelResult<()> {
    let [batch, height, width, channels] = input_shape;
    let expected = crate::error::checked_element_count("global_pool", &input_shape)?;
    check_length("global_pool", "input", expected, input.len())?;
    check_length("global_pool", "output", batch * channels, output.len())?;
    let pixels = height * width;
    if pixels == 0 {
        return Err(shape_mismatch("global_pool", "the spatial axes are empty"));
    }
    if output.is_empty() {
        return Ok(());
    }
    let isa = Isa::detect();
    let image_len = pixels * channels;
    // Blocks of whole vectors of channels, each about `PARALLEL_CHUNK` inputs.
    let block = ((PARALLEL_CHUNK / pixels) / 16 * 16).max(16);
    threading::run_chunks_mut(output, block, |chunk_index, values| {
        // The chunk may straddle images: split it where a new image starts.
        let mut start = chunk_index * block;
        let mut values = values;
        while !values.is_empty() {
            let (image, channel) = (start / channels, start % channels);
            let length = values.len().min(channels - channel);
            let (part, rest) = values.split_at_mut(length);
            let image_values = &input[image * image_len..][..image_len];
            let mut offsets = [0usize; MAX_TAPS];
            let mut accumulate = false;
            for first_pixel in (0..pixels).step_by(MAX_TAPS) {
                let count = MAX_TAPS.min(pixels - first_pixel);
                for (tap, offset) in offsets[..count].iter_mut().enumerate() {
                    *offset = (first_pixel + tap) * channels + channel;
                }
                rows::reduce_taps(
                    isa,
                    reduction,
                    part,
                    image_values,
                    &offsets[..count],
                    accumulate,
                );
                accumulate = true;
            }
            finish(part);
            start += length;
            values = rest;
        }
    });
    Ok(())
}
