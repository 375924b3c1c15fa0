//! Resizing `[n, c, h, w]` images (`resize`, `upsample`; ONNX's `Resize`), nearest or bilinear,
//! under any of ONNX's coordinate transforms, and padding any tensor (`pad`; ONNX's `Pad`) with a
//! constant, a reflection or the edge.
//!
//! Both map each output index to input indices through the shared definitions of `nnc-ops`
//! ([`CoordinateTransform::source`], [`NearestRounding::index`], [`linear_taps`],
//! [`PadMode::source`]); the reference twins in [`crate::reference`] compute the same maps in
//! `f64` and by whole-tensor loops.

use crate::error::{KernelResult, check_length, checked_element_count, invalid_parameter};
use crate::threading;

pub use nnc_ops::resize::linear_taps;
pub use nnc_ops::{CoordinateTransform, NearestRounding, PadMode, Resize2dOptions, ResizeMode};

#[cfg(test)]
mod tests;

/// The output shape of resizing an `[n, c, h, w]` input.
pub fn resize2d_output_shape(
    [batch, channels, _, _]: [usize; 4],
    options: &Resize2dOptions,
) -> [usize; 4] {
    [
        batch,
        channels,
        options.output_size[0],
        options.output_size[1],
    ]
}

/// Resizes `input [n, c, h, w]` into `output [n, c, out_h, out_w]`.
pub fn resize2d(
    input: &[f32],
    input_shape: [usize; 4],
    options: &Resize2dOptions,
    output: &mut [f32],
) -> KernelResult<()> {
    check_length(
        "resize2d",
        "input",
        checked_element_count("resize2d", &input_shape)?,
        input.len(),
    )?;
    let output_shape = resize2d_output_shape(input_shape, options);
    check_length(
        "resize2d",
        "output",
        checked_element_count("resize2d", &output_shape)?,
        output.len(),
    )?;
    let [_, _, height, width] = input_shape;
    let [out_height, out_width] = options.output_size;
    if options
        .scale
        .iter()
        .any(|scale| !(scale.is_finite() && *scale > 0.0))
    {
        return Err(invalid_parameter(
            "resize2d",
            format!("scales {:?} must be positive", options.scale),
        ));
    }
    if output.is_empty() {
        return Ok(());
    }
    if height == 0 || width == 0 {
        return Err(invalid_parameter(
            "resize2d",
            "cannot resize an empty image to a non-empty one",
        ));
    }
    let input_plane = height * width;
    let output_plane = out_height * out_width;
    let source = |axis: usize, x: usize, input: usize, output: usize| {
        options
            .coordinates
            .source(x, input, output, options.scale[axis])
    };
    let planes_per_task = (PARALLEL_CHUNK / output_plane.max(1)).max(1);
    threading::run_chunks_mut(
        output,
        planes_per_task * output_plane,
        |chunk_index, planes| {
            for (offset, plane_output) in planes.chunks_exact_mut(output_plane).enumerate() {
                let plane = chunk_index * planes_per_task + offset;
                let plane_input = &input[plane * input_plane..][..input_plane];
                for (y, row) in plane_output.chunks_exact_mut(out_width).enumerate() {
                    let source_y = source(0, y, height, out_height);
                    match options.mode {
                        ResizeMode::Nearest => {
                            let input_row = &plane_input
                                [options.nearest.index(source_y, height) * width..][..width];
                            for (x, value) in row.iter_mut().enumerate() {
                                let source_x = source(1, x, width, out_width);
                                *value = input_row[options.nearest.index(source_x, width)];
                            }
                        }
                        ResizeMode::Linear => {
                            let (top, bottom, weight_y) = linear_taps(source_y, height);
                            let top_row = &plane_input[top * width..][..width];
                            let bottom_row = &plane_input[bottom * width..][..width];
                            for (x, value) in row.iter_mut().enumerate() {
                                let (left, right, weight_x) =
                                    linear_taps(source(1, x, width, out_width), width);
                                let upper =
                                    top_row[left] + (top_row[right] - top_row[left]) * weight_x;
                                let lower = bottom_row[left]
                                    + (bottom_row[right] - bottom_row[left]) * weight_x;
                                *value = upper + (lower - upper) * weight_y;
                            }
                        }
                    }
                }
            }
        },
    );
    Ok(())
}

/// The output shape of padding `input_shape` by `before` and `after` elements on each axis.
pub fn pad_output_shape(input_shape: &[usize], before: &[usize], after: &[usize]) -> Vec<usize> {
    input_shape
        .iter()
        .zip(before.iter().zip(after))
        .map(|(&size, (&before, &after))| size + before + after)
        .collect()
}

/// Pads `input` (of `input_shape`) by `before[axis]` and `after[axis]` elements on each axis:
/// with `value` (`PadMode::Constant`), the mirror image without the edge (`Reflect`, which needs
/// fewer pad elements than the axis has) or the edge repeated (`Edge`).
pub fn pad(
    input: &[f32],
    input_shape: &[usize],
    before: &[usize],
    after: &[usize],
    mode: PadMode,
    value: f32,
    output: &mut [f32],
) -> KernelResult<()> {
    let rank = input_shape.len();
    if before.len() != rank || after.len() != rank || rank == 0 {
        return Err(invalid_parameter(
            "pad",
            format!("pads {before:?}, {after:?} for the shape {input_shape:?}"),
        ));
    }
    check_length(
        "pad",
        "input",
        checked_element_count("pad", input_shape)?,
        input.len(),
    )?;
    let padded = |axis: usize| input_shape[axis] + before[axis] + after[axis];
    let mut output_count = 1usize;
    for axis in 0..rank {
        output_count = output_count
            .checked_mul(padded(axis))
            .ok_or(crate::KernelError::SizeOverflow { operation: "pad" })?;
    }
    check_length("pad", "output", output_count, output.len())?;
    if output.is_empty() {
        return Ok(());
    }
    if mode != PadMode::Constant && input.is_empty() {
        return Err(invalid_parameter(
            "pad",
            "cannot reflect or extend an empty tensor",
        ));
    }
    if mode == PadMode::Reflect
        && (0..rank)
            .any(|axis| before[axis] >= input_shape[axis] || after[axis] >= input_shape[axis])
    {
        return Err(invalid_parameter(
            "pad",
            format!(
                "reflect pads {before:?}, {after:?} must be smaller than the shape {input_shape:?}"
            ),
        ));
    }
    let last = rank - 1;
    let input_width = input_shape[last];
    for (row_number, row) in output.chunks_exact_mut(padded(last)).enumerate() {
        // The input row this output row reads, or `None` in a constant border: the row number's
        // digits in the output's outer axes, each mapped to its input index.
        let mut remainder = row_number;
        let mut source_row = Some(0usize);
        let mut stride = 1usize;
        for axis in (0..last).rev() {
            let index = remainder % padded(axis);
            remainder /= padded(axis);
            source_row = match (
                source_row,
                mode.source(index, before[axis], input_shape[axis]),
            ) {
                (Some(offset), Some(source)) => Some(offset + source * stride),
                _ => None,
            };
            stride *= input_shape[axis];
        }
        match source_row {
            None => row.fill(value),
            Some(source_row) => {
                let input_row = &input[source_row * input_width..][..input_width];
                for (x, element) in row.iter_mut().enumerate() {
                    *element = match mode.source(x, before[last], input_width) {
                        Some(source) => input_row[source],
                        None => value,
                    };
                }
            }
        }
    }
    Ok(())
}

/// Output elements per parallel task.
const PARALLEL_CHUNK: usize = 1 << 15;
