//! 2-D transposed convolution (PyTorch's `ConvTranspose2d`, ONNX's `ConvTranspose`): each input
//! pixel scatters its channels, weighted by the kernel, into a window of the output.
//!
//! Per image and group, one GEMM computes every pixel's contributions at once, `columns
//! [out_g * kh * kw, h * w] = weight_gᵀ [out_g * kh * kw, c_g] · x_g [c_g, h * w]`, and a
//! scatter (col2im) adds each column into the output window it belongs to. The GEMM does all
//! the multiplications; the scatter is one add per product term. The reference twin,
//! [`crate::reference::conv_transpose2d`], loops over the definition.

use super::ConvWorkspace;
use crate::error::{KernelResult, check_length, checked_element_count, invalid_parameter};
use crate::kernels::gemm::{GemmOptions, MatrixRef, gemm};

pub use nnc_ops::ConvTranspose2dOptions;

/// The output shape of a transposed convolution of an `[n, c, h, w]` input by a
/// `[c, out / groups, kh, kw]` weight.
pub fn conv_transpose2d_output_shape(
    [batch, channels, height, width]: [usize; 4],
    [weight_in, out_per_group, kernel_h, kernel_w]: [usize; 4],
    options: &ConvTranspose2dOptions,
) -> KernelResult<[usize; 4]> {
    let groups = options.groups;
    if groups == 0 || channels % groups != 0 || weight_in != channels {
        return Err(invalid_parameter(
            "conv_transpose2d",
            format!(
                "a weight of {weight_in} input channels and {groups} groups for {channels} channels"
            ),
        ));
    }
    if options.stride.contains(&0)
        || options.dilation.contains(&0)
        || kernel_h == 0
        || kernel_w == 0
    {
        return Err(invalid_parameter(
            "conv_transpose2d",
            "stride, dilation and kernel must be positive",
        ));
    }
    if (0..2).any(|axis| {
        options.output_padding[axis] >= options.stride[axis].max(options.dilation[axis])
    }) {
        return Err(invalid_parameter(
            "conv_transpose2d",
            "output_padding must be smaller than the stride or the dilation",
        ));
    }
    let size = |axis: usize, input: usize, kernel: usize| {
        options.output_size(axis, input, kernel).ok_or_else(|| {
            invalid_parameter(
                "conv_transpose2d",
                format!("padding {:?} leaves no output", options.padding),
            )
        })
    };
    Ok([
        batch,
        out_per_group * groups,
        size(0, height, kernel_h)?,
        size(1, width, kernel_w)?,
    ])
}

/// `output = conv_transpose2d(input, weight) + bias` for `input [n, c, h, w]`, `weight
/// [c, out / groups, kh, kw]` and `bias [out]`; the column matrix lives in `workspace`.
#[allow(clippy::too_many_arguments)]
pub fn conv_transpose2d(
    input: &[f32],
    input_shape: [usize; 4],
    weight: &[f32],
    weight_shape: [usize; 4],
    bias: Option<&[f32]>,
    options: &ConvTranspose2dOptions,
    output: &mut [f32],
    workspace: &mut ConvWorkspace,
) -> KernelResult<()> {
    const OPERATION: &str = "conv_transpose2d";
    let output_shape = conv_transpose2d_output_shape(input_shape, weight_shape, options)?;
    check_length(
        OPERATION,
        "input",
        checked_element_count(OPERATION, &input_shape)?,
        input.len(),
    )?;
    check_length(
        OPERATION,
        "weight",
        checked_element_count(OPERATION, &weight_shape)?,
        weight.len(),
    )?;
    check_length(
        OPERATION,
        "output",
        checked_element_count(OPERATION, &output_shape)?,
        output.len(),
    )?;
    let [batch, channels, height, width] = input_shape;
    let [_, out_channels, out_height, out_width] = output_shape;
    if let Some(bias) = bias {
        check_length(OPERATION, "bias", out_channels, bias.len())?;
    }
    let [_, out_per_group, kernel_h, kernel_w] = weight_shape;
    let groups = options.groups;
    let in_per_group = channels / groups;
    let pixels = height * width;
    let rows = out_per_group * kernel_h * kernel_w;
    let out_plane = out_height * out_width;
    for (channel, plane) in output.chunks_exact_mut(out_plane.max(1)).enumerate() {
        plane.fill(bias.map_or(0.0, |bias| bias[channel % out_channels]));
    }
    if output.is_empty() || pixels == 0 {
        return Ok(());
    }
    let columns = workspace.columns(rows * pixels);
    for image in 0..batch {
        for group in 0..groups {
            let first_in = image * channels + group * in_per_group;
            let x = MatrixRef::row_major(
                &input[first_in * pixels..][..in_per_group * pixels],
                in_per_group,
                pixels,
            )?;
            let weight_group = &weight[group * in_per_group * rows..][..in_per_group * rows];
            let weight_t = MatrixRef::row_major(weight_group, in_per_group, rows)?.transposed();
            gemm(
                weight_t.into(),
                x.into(),
                columns,
                pixels,
                &GemmOptions::default(),
            )?;
            let first_out = (image * out_channels + group * out_per_group) * out_plane;
            let planes = &mut output[first_out..][..out_per_group * out_plane];
            scatter_columns(
                columns,
                planes,
                [height, width],
                [out_height, out_width],
                [kernel_h, kernel_w],
                options,
            );
        }
    }
    Ok(())
}

/// Adds the columns `[out_g, kh, kw, h * w]` into the output planes `[out_g, out_h, out_w]`:
/// input pixel `(y, x)` with kernel tap `(i, j)` lands on output pixel
/// `(y * stride - padding + i * dilation, x * stride - padding + j * dilation)`.
fn scatter_columns(
    columns: &[f32],
    planes: &mut [f32],
    [height, width]: [usize; 2],
    [out_height, out_width]: [usize; 2],
    [kernel_h, kernel_w]: [usize; 2],
    options: &ConvTranspose2dOptions,
) {
    let [stride_h, stride_w] = options.stride;
    let [pad_h, pad_w] = options.padding;
    let [dilation_h, dilation_w] = options.dilation;
    let pixels = height * width;
    let out_plane = out_height * out_width;
    for (row, column) in columns.chunks_exact(pixels).enumerate() {
        let channel = row / (kernel_h * kernel_w);
        let (tap_i, tap_j) = ((row / kernel_w) % kernel_h, row % kernel_w);
        let plane = &mut planes[channel * out_plane..][..out_plane];
        // The input columns x whose output column x * stride + offset lies in 0..out_width.
        let offset_w = (tap_j * dilation_w) as isize - pad_w as isize;
        let (first_x, end_x) = valid_range(offset_w, stride_w, width, out_width);
        for y in 0..height {
            let out_y = (y * stride_h + tap_i * dilation_h) as isize - pad_h as isize;
            if out_y < 0 || out_y as usize >= out_height {
                continue;
            }
            let out_row = &mut plane[out_y as usize * out_width..][..out_width];
            let input_row = &column[y * width..][..width];
            for (x, &value) in input_row.iter().enumerate().take(end_x).skip(first_x) {
                let out_x = (x * stride_w) as isize + offset_w;
                out_row[out_x as usize] += value;
            }
        }
    }
}

/// The range of `x` in `0..input` with `0 <= x * stride + offset < output`.
fn valid_range(offset: isize, stride: usize, input: usize, output: usize) -> (usize, usize) {
    let stride = stride as isize;
    // First x with x * stride + offset >= 0.
    let first = if offset >= 0 {
        0
    } else {
        (-offset + stride - 1) / stride
    };
    // First x with x * stride + offset >= output.
    let end = (output as isize - offset + stride - 1)
        .div_euclid(stride)
        .max(0);
    let first = (first as usize).min(input);
    (first, (end as usize).clamp(first, input))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference;
    use crate::test_support::{assert_close, values};
    use proptest::prelude::*;

    /// Input shape, weight shape, options and data of one transposed convolution.
    type Case = (
        [usize; 4],
        [usize; 4],
        ConvTranspose2dOptions,
        Vec<f32>,
        Vec<f32>,
        Vec<f32>,
    );

    fn case() -> impl Strategy<Value = Case> {
        (
            (
                1..3usize,
                1..3usize,
                1..4usize,
                1..4usize,
                1..7usize,
                1..8usize,
            ),
            (
                1..4usize,
                1..4usize,
                1..4usize,
                1..4usize,
                1..3usize,
                1..3usize,
            ),
            (0..3usize, 0..3usize, 0..2usize, 0..2usize),
        )
            .prop_filter_map(
                "the output must be non-empty",
                |(
                    (batch, groups, in_g, out_g, h, w),
                    (kh, kw, sh, sw, dh, dw),
                    (ph, pw, oph, opw),
                )| {
                    let options = ConvTranspose2dOptions {
                        stride: [sh, sw],
                        padding: [ph, pw],
                        output_padding: [oph.min(sh.max(dh) - 1), opw.min(sw.max(dw) - 1)],
                        dilation: [dh, dw],
                        groups,
                    };
                    let input = [batch, groups * in_g, h, w];
                    let weight = [groups * in_g, out_g, kh, kw];
                    conv_transpose2d_output_shape(input, weight, &options).ok()?;
                    Some((input, weight, options))
                },
            )
            .prop_flat_map(|(input, weight, options)| {
                let out_channels = weight[1] * options.groups;
                (
                    Just(input),
                    Just(weight),
                    Just(options),
                    values(input.iter().product()),
                    values(weight.iter().product()),
                    values(out_channels),
                )
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn matches_reference((input_shape, weight_shape, options, input, weight, bias) in case()) {
            let expected = reference::conv_transpose2d(&input, input_shape, &weight, weight_shape, Some(&bias), &options);
            let shape = conv_transpose2d_output_shape(input_shape, weight_shape, &options).unwrap();
            let mut output = vec![f32::NAN; shape.iter().product()];
            let mut workspace = ConvWorkspace::new();
            conv_transpose2d(&input, input_shape, &weight, weight_shape, Some(&bias), &options, &mut output, &mut workspace).unwrap();
            assert_close(&output, &expected, 1e-4);
        }
    }

    #[test]
    fn bad_geometry_is_an_error() {
        let options = ConvTranspose2dOptions {
            output_padding: [1, 0],
            ..Default::default()
        };
        assert!(conv_transpose2d_output_shape([1, 2, 3, 3], [2, 1, 3, 3], &options).is_err());
        let options = ConvTranspose2dOptions {
            padding: [3, 3],
            ..Default::default()
        };
        assert!(conv_transpose2d_output_shape([1, 2, 1, 1], [2, 1, 3, 3], &options).is_err());
        let options = ConvTranspose2dOptions {
            groups: 2,
            ..Default::default()
        };
        assert!(conv_transpose2d_output_shape([1, 3, 3, 3], [3, 1, 3, 3], &options).is_err());
        let mut output = vec![0.0; 4];
        let result = conv_transpose2d(
            &[0.0; 3],
            [1, 1, 2, 2],
            &[0.0; 1],
            [1, 1, 1, 1],
            None,
            &ConvTranspose2dOptions::default(),
            &mut output,
            &mut ConvWorkspace::new(),
        );
        assert!(result.is_err());
    }
}
