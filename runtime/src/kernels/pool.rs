//! Max and average pooling over NCHW (and NCL) tensors with PyTorch's rules, and global
//! pooling over all spatial axes.
//!
//! The output size is `floor_or_ceil((in + 2 pad - dilation (kernel - 1) - 1) / stride) + 1`,
//! and in ceil mode the last window is dropped if it would start in the right padding: every
//! window must start inside the input or the left padding. Padding may be at most half the
//! kernel. Max pooling treats padding as minus infinity and propagates NaN; average pooling
//! divides by the window clipped to the padded input (`count_include_pad`) or to the input.

use crate::error::{KernelResult, check_length, invalid_parameter, shape_mismatch};
use crate::kernels::softmax::{maximum, sum};
use crate::threading;

pub use nnc_ops::{AvgPool1dOptions, AvgPool2dOptions, MaxPool1dOptions, MaxPool2dOptions};

/// The pooled length of one axis under PyTorch's rules (see the module docs).
pub fn pooled_size(
    input: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
    ceil_mode: bool,
) -> KernelResult<usize> {
    if kernel == 0 || stride == 0 || dilation == 0 {
        return Err(invalid_parameter(
            "pool",
            "kernel, stride and dilation must be positive",
        ));
    }
    if padding > kernel / 2 {
        return Err(invalid_parameter(
            "pool",
            format!("padding {padding} is more than half the kernel {kernel}"),
        ));
    }
    let span = (input + 2 * padding) as isize - (dilation * (kernel - 1)) as isize - 1;
    let rounding = if ceil_mode { stride as isize - 1 } else { 0 };
    let mut size = (span + rounding).div_euclid(stride as isize) + 1;
    if ceil_mode && (size - 1) * stride as isize >= (input + padding) as isize {
        size -= 1;
    }
    if size < 1 {
        return Err(shape_mismatch(
            "pool",
            format!("an input of {input} is too small for the kernel {kernel}"),
        ));
    }
    Ok(size as usize)
}

/// The output shape `[N, C, out_h, out_w]` of `max_pool2d`.
pub fn max_pool2d_output_shape(
    input_shape: [usize; 4],
    options: &MaxPool2dOptions,
) -> KernelResult<[usize; 4]> {
    let size = |axis: usize| {
        pooled_size(
            input_shape[2 + axis],
            options.kernel[axis],
            options.stride[axis],
            options.padding[axis],
            options.dilation[axis],
            options.ceil_mode,
        )
    };
    Ok([input_shape[0], input_shape[1], size(0)?, size(1)?])
}

/// The output shape `[N, C, out_h, out_w]` of `avg_pool2d`.
pub fn avg_pool2d_output_shape(
    input_shape: [usize; 4],
    options: &AvgPool2dOptions,
) -> KernelResult<[usize; 4]> {
    let size = |axis: usize| {
        pooled_size(
            input_shape[2 + axis],
            options.kernel[axis],
            options.stride[axis],
            options.padding[axis],
            1,
            options.ceil_mode,
        )
    };
    Ok([input_shape[0], input_shape[1], size(0)?, size(1)?])
}

/// Max pooling of an `[N, C, H, W]` input into `max_pool2d_output_shape(..)`.
pub fn max_pool2d(
    input: &[f32],
    input_shape: [usize; 4],
    options: &MaxPool2dOptions,
    output: &mut [f32],
) -> KernelResult<()> {
    let output_shape = max_pool2d_output_shape(input_shape, options)?;
    let window = Window {
        kernel: options.kernel,
        stride: options.stride,
        padding: options.padding,
        dilation: options.dilation,
    };
    for_each_plane(
        input,
        input_shape,
        output_shape,
        output,
        |input_plane, output_plane| {
            max_pool_plane(
                input_plane,
                &window,
                input_shape,
                output_shape,
                output_plane,
            )
        },
    )
}

/// Average pooling of an `[N, C, H, W]` input into `avg_pool2d_output_shape(..)`.
pub fn avg_pool2d(
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
    let output_shape = avg_pool2d_output_shape(input_shape, options)?;
    for_each_plane(
        input,
        input_shape,
        output_shape,
        output,
        |input_plane, output_plane| {
            avg_pool_plane(
                input_plane,
                options,
                input_shape,
                output_shape,
                output_plane,
            )
        },
    )
}

/// Max pooling of an `[N, C, L]` input.
pub fn max_pool1d(
    input: &[f32],
    input_shape: [usize; 3],
    options: &MaxPool1dOptions,
    output: &mut [f32],
) -> KernelResult<()> {
    let options_2d = MaxPool2dOptions {
        kernel: [1, options.kernel],
        stride: [1, options.stride],
        padding: [0, options.padding],
        dilation: [1, options.dilation],
        ceil_mode: options.ceil_mode,
    };
    let [batch, channels, length] = input_shape;
    max_pool2d(input, [batch, channels, 1, length], &options_2d, output)
}

/// The output length of `max_pool1d`.
pub fn max_pool1d_output_len(length: usize, options: &MaxPool1dOptions) -> KernelResult<usize> {
    pooled_size(
        length,
        options.kernel,
        options.stride,
        options.padding,
        options.dilation,
        options.ceil_mode,
    )
}

/// Average pooling of an `[N, C, L]` input.
pub fn avg_pool1d(
    input: &[f32],
    input_shape: [usize; 3],
    options: &AvgPool1dOptions,
    output: &mut [f32],
) -> KernelResult<()> {
    let options_2d = AvgPool2dOptions {
        kernel: [1, options.kernel],
        stride: [1, options.stride],
        padding: [0, options.padding],
        ceil_mode: options.ceil_mode,
        count_include_pad: options.count_include_pad,
        divisor_override: None,
    };
    let [batch, channels, length] = input_shape;
    avg_pool2d(input, [batch, channels, 1, length], &options_2d, output)
}

/// The output length of `avg_pool1d`.
pub fn avg_pool1d_output_len(length: usize, options: &AvgPool1dOptions) -> KernelResult<usize> {
    pooled_size(
        length,
        options.kernel,
        options.stride,
        options.padding,
        1,
        options.ceil_mode,
    )
}

/// The mean over all spatial axes of an `[N, C, *]` tensor, into `[N, C]`.
pub fn global_avg_pool(input: &[f32], shape: &[usize], output: &mut [f32]) -> KernelResult<()> {
    global_pool(input, shape, output, |plane| {
        sum(plane) / plane.len() as f32
    })
}

/// The maximum over all spatial axes of an `[N, C, *]` tensor, into `[N, C]`.
pub fn global_max_pool(input: &[f32], shape: &[usize], output: &mut [f32]) -> KernelResult<()> {
    global_pool(input, shape, output, maximum)
}

/// The geometry of a max-pooling window.
struct Window {
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
}

/// Checks the buffers and runs `pool_plane(input_plane, output_plane)` over every `(n, c)`
/// plane, in parallel.
fn for_each_plane(
    input: &[f32],
    input_shape: [usize; 4],
    output_shape: [usize; 4],
    output: &mut [f32],
    pool_plane: impl Fn(&[f32], &mut [f32]) + Sync + Send,
) -> KernelResult<()> {
    check_length("pool", "input", input_shape.iter().product(), input.len())?;
    check_length(
        "pool",
        "output",
        output_shape.iter().product(),
        output.len(),
    )?;
    let input_plane = input_shape[2] * input_shape[3];
    let output_plane = output_shape[2] * output_shape[3];
    if output.is_empty() {
        return Ok(());
    }
    let planes_per_task = (PARALLEL_CHUNK / input_plane.max(1)).max(1);
    threading::run_chunks_mut(
        output,
        planes_per_task * output_plane,
        |chunk_index, planes| {
            for (plane_offset, output_plane_values) in
                planes.chunks_exact_mut(output_plane).enumerate()
            {
                let plane = chunk_index * planes_per_task + plane_offset;
                pool_plane(
                    &input[plane * input_plane..][..input_plane],
                    output_plane_values,
                );
            }
        },
    );
    Ok(())
}

/// Input elements per parallel task.
const PARALLEL_CHUNK: usize = 1 << 15;

fn max_pool_plane(
    input: &[f32],
    window: &Window,
    input_shape: [usize; 4],
    output_shape: [usize; 4],
    output: &mut [f32],
) {
    let [_, _, height, width] = input_shape;
    let [_, _, out_h, out_w] = output_shape;
    for out_y in 0..out_h {
        for out_x in 0..out_w {
            let mut best = f32::NEG_INFINITY;
            for kernel_y in 0..window.kernel[0] {
                let Some(y) = (out_y * window.stride[0] + kernel_y * window.dilation[0])
                    .checked_sub(window.padding[0])
                    .filter(|&y| y < height)
                else {
                    continue;
                };
                let row = &input[y * width..][..width];
                for kernel_x in 0..window.kernel[1] {
                    let Some(x) = (out_x * window.stride[1] + kernel_x * window.dilation[1])
                        .checked_sub(window.padding[1])
                        .filter(|&x| x < width)
                    else {
                        continue;
                    };
                    let value = row[x];
                    if value > best || value.is_nan() {
                        best = value;
                    }
                }
            }
            output[out_y * out_w + out_x] = best;
        }
    }
}

fn avg_pool_plane(
    input: &[f32],
    options: &AvgPool2dOptions,
    input_shape: [usize; 4],
    output_shape: [usize; 4],
    output: &mut [f32],
) {
    let [_, _, height, width] = input_shape;
    let [_, _, out_h, out_w] = output_shape;
    // A window's extent, first clipped to the padded input and then to the input itself.
    let clip = |out: usize, axis: usize, size: usize| {
        let start = (out * options.stride[axis]) as isize - options.padding[axis] as isize;
        let padded_end =
            (start + options.kernel[axis] as isize).min((size + options.padding[axis]) as isize);
        let padded_count = padded_end - start;
        let input_start = start.max(0) as usize;
        let input_end = padded_end.clamp(0, size as isize) as usize;
        (
            padded_count as usize,
            input_start..input_end.max(input_start),
        )
    };
    for out_y in 0..out_h {
        let (padded_rows, rows) = clip(out_y, 0, height);
        for out_x in 0..out_w {
            let (padded_cols, cols) = clip(out_x, 1, width);
            let value = if rows.is_empty() || cols.is_empty() {
                0.0
            } else {
                let total: f32 = rows
                    .clone()
                    .map(|y| input[y * width..][cols.clone()].iter().sum::<f32>())
                    .sum();
                let divisor = match options.divisor_override {
                    Some(divisor) => divisor,
                    None if options.count_include_pad => padded_rows * padded_cols,
                    None => rows.len() * cols.len(),
                };
                total / divisor as f32
            };
            output[out_y * out_w + out_x] = value;
        }
    }
}

fn global_pool(
    input: &[f32],
    shape: &[usize],
    output: &mut [f32],
    reduce: impl Fn(&[f32]) -> f32 + Sync + Send,
) -> KernelResult<()> {
    if shape.len() < 2 {
        return Err(shape_mismatch(
            "global_pool",
            format!("the input must be [N, C, *], got {shape:?}"),
        ));
    }
    let expected = crate::error::checked_element_count("global_pool", shape)?;
    check_length("global_pool", "input", expected, input.len())?;
    check_length("global_pool", "output", shape[0] * shape[1], output.len())?;
    let plane: usize = shape[2..].iter().product();
    if plane == 0 {
        return Err(shape_mismatch("global_pool", "the spatial axes are empty"));
    }
    let planes_per_task = (PARALLEL_CHUNK / plane).max(1);
    threading::run_chunks_mut(output, planes_per_task, |chunk_index, values| {
        for (offset, value) in values.iter_mut().enumerate() {
            let index = chunk_index * planes_per_task + offset;
            *value = reduce(&input[index * plane..][..plane]);
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests;
