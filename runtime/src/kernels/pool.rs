//! Max and average pooling over NCHW (and NCL) tensors with PyTorch's rules, and global
//! pooling over all spatial axes; the channels-last (NHWC) forms are in [`channels_last`].
//!
//! The output size is `floor_or_ceil((in + 2 pad - dilation (kernel - 1) - 1) / stride) + 1`,
//! and in ceil mode the last window is dropped if it would start in the right padding: every
//! window must start inside the input or the left padding. Padding may be at most half the
//! kernel. Max pooling treats padding as minus infinity and propagates NaN; average pooling
//! divides by the window clipped to the padded input (`count_include_pad`) or to the input.
//!
//! An NCHW output row is vectorised over its width where every window column lies inside the
//! input: eight outputs at a time combine all the taps of their windows in a register
//! ([`rows::reduce_window_row`], with an AVX2 form for strides 1 and 2). The few outputs whose
//! window hangs over the left or right padding take a scalar path. Max pooling over windows
//! wider and taller than one is separable instead (see `max_pool_plane`). Nothing is allocated
//! once a thread has pooled a row as wide before.

use crate::error::{KernelResult, check_length, invalid_parameter, shape_mismatch};
use crate::kernels::conv::valid_output_range;
use crate::kernels::softmax::{maximum, sum};
use crate::kernels::vectorize::Isa;
use crate::threading;
use rows::{Reduction, RowWindow, reduce_window_row};
use std::cell::RefCell;

pub mod channels_last;
mod rows;

pub use channels_last::{
    avg_pool2d_channels_last, global_avg_pool_channels_last, global_max_pool_channels_last,
    max_pool2d_channels_last,
};

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
    let window = Window::of(options);
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

/// The input rows of a `height`-row plane that max pooling's output rows `out_rows` read (their
/// windows' rows inside the plane).
pub(crate) fn max_pool2d_input_rows(
    out_rows: std::ops::Range<usize>,
    height: usize,
    options: &MaxPool2dOptions,
) -> std::ops::Range<usize> {
    if out_rows.is_empty() {
        return 0..0;
    }
    let padding = options.padding[0];
    let first = (out_rows.start * options.stride[0]).saturating_sub(padding);
    let end = ((out_rows.end - 1) * options.stride[0]
        + (options.kernel[0] - 1) * options.dilation[0]
        + 1)
    .saturating_sub(padding);
    first.min(height)..end.min(height).max(first.min(height))
}

/// Max pooling's output rows `out_rows` of one `[height, width]` plane (`size`) into `output`
/// (those rows, whole), from `input`, which holds the plane's rows `first_row..`: at least
/// [`max_pool2d_input_rows`] of `out_rows`. A convolution followed by max pooling pools each
/// band of rows it computes while the band is in cache (`PackedConv2dMaxPool`).
pub(crate) fn max_pool2d_plane_rows(
    input: &[f32],
    first_row: usize,
    size: [usize; 2],
    options: &MaxPool2dOptions,
    out_rows: std::ops::Range<usize>,
    output: &mut [f32],
) -> KernelResult<()> {
    let [_, _, out_h, out_w] = max_pool2d_output_shape([1, 1, size[0], size[1]], options)?;
    let needed = max_pool2d_input_rows(out_rows.clone(), size[0], options);
    if out_rows.end > out_h
        || output.len() != out_rows.len() * out_w
        || (!needed.is_empty()
            && (needed.start < first_row || input.len() < (needed.end - first_row) * size[1]))
    {
        return Err(invalid_parameter(
            "max_pool2d",
            format!(
                "output rows {out_rows:?} of a {size:?} plane need input rows {needed:?}: \
                 {} values from row {first_row}, {} outputs",
                input.len(),
                output.len()
            ),
        ));
    }
    let window = Window::of(options);
    max_pool_plane_rows(
        input,
        first_row,
        size,
        &window,
        out_rows.start,
        out_w,
        output,
    );
    Ok(())
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

impl Window {
    /// The window of a 2-D max pooling.
    fn of(options: &MaxPool2dOptions) -> Self {
        Self {
            kernel: options.kernel,
            stride: options.stride,
            padding: options.padding,
            dilation: options.dilation,
        }
    }
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

thread_local! {
    /// Each thread's row of column maxima for `max_pool_plane`; grown once, then reused.
    static COLUMN_MAXIMA: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// One output plane of max pooling: minus infinity (the padding) combined with every tap inside
/// the input.
///
/// A window wider and taller than one is separable, the maximum being associative and
/// commutative (NaN propagates whatever the order): for each output row, first the maximum
/// down each input column over the window's rows (contiguous loads, whatever the stride), into
/// a row padded with minus infinity, then the maximum across the window's columns of that row,
/// which has no border left to treat apart. A ResNet stem's 3x3/s2 pooling reads three
/// contiguous values per input column and three strided ones per output, where combining the
/// whole window reads nine strided ones per output (and took 476 µs on 64 planes of 112x112).
fn max_pool_plane(
    input: &[f32],
    window: &Window,
    input_shape: [usize; 4],
    output_shape: [usize; 4],
    output: &mut [f32],
) {
    let [_, _, height, width] = input_shape;
    max_pool_plane_rows(
        input,
        0,
        [height, width],
        window,
        0,
        output_shape[3],
        output,
    );
}

/// Output rows `first_out_y..` of one plane's max pooling (as many as `output` holds, `out_w`
/// a row), from `input`, which holds the plane's rows `first_row..` of `width` (`size` is the
/// whole plane's `[height, width]`): every input row the output rows' windows reach inside the
/// plane must be there. A convolution followed by a pooling pools each band of rows it computes
/// ([`max_pool2d_plane_rows`]).
fn max_pool_plane_rows(
    input: &[f32],
    first_row: usize,
    [height, width]: [usize; 2],
    window: &Window,
    first_out_y: usize,
    out_w: usize,
    output: &mut [f32],
) {
    let plane = PlaneRows {
        input,
        first_row,
        height,
        width,
        kernel_h: window.kernel[0],
        stride_h: window.stride[0],
        dilation_h: window.dilation[0],
        padding: window.padding,
        row_window: RowWindow {
            kernel_w: window.kernel[1],
            stride: window.stride[1],
            dilation: window.dilation[1],
        },
    };
    if window.kernel[0] > 1 && window.kernel[1] > 1 {
        COLUMN_MAXIMA.with(|row| {
            plane.max_separable(first_out_y, out_w, output, &mut row.borrow_mut());
        });
        return;
    }
    let interior = plane.interior(out_w);
    for (row, output_row) in output.chunks_exact_mut(out_w).enumerate() {
        plane.reduce_row(
            Reduction::Maximum,
            first_out_y + row,
            interior.clone(),
            output_row,
        );
    }
}

/// One output plane of average pooling: the sum of the taps inside the input, divided by the
/// window clipped to the padded input or to the input (see the module docs).
fn avg_pool_plane(
    input: &[f32],
    options: &AvgPool2dOptions,
    input_shape: [usize; 4],
    output_shape: [usize; 4],
    output: &mut [f32],
) {
    let [_, _, height, width] = input_shape;
    let out_w = output_shape[3];
    let [kernel_h, kernel_w] = options.kernel;
    let plane = PlaneRows {
        input,
        first_row: 0,
        height,
        width,
        kernel_h,
        stride_h: options.stride[0],
        dilation_h: 1,
        padding: options.padding,
        row_window: RowWindow {
            kernel_w,
            stride: options.stride[1],
            dilation: 1,
        },
    };
    let interior = plane.interior(out_w);
    for (out_y, output_row) in output.chunks_exact_mut(out_w).enumerate() {
        let (padded_rows, rows) = clipped_window(
            out_y,
            kernel_h,
            options.stride[0],
            options.padding[0],
            height,
        );
        if rows.is_empty() {
            output_row.fill(0.0);
            continue;
        }
        plane.reduce_row(Reduction::Sum, out_y, interior.clone(), output_row);
        let divisor = |padded_columns: usize, columns: usize| match options.divisor_override {
            Some(divisor) => divisor,
            None if options.count_include_pad => padded_rows * padded_columns,
            None => rows.len() * columns,
        };
        if !interior.is_empty() {
            // A window wholly inside the row has `kernel_w` columns, padded or not.
            let interior_divisor = divisor(kernel_w, kernel_w) as f32;
            for value in &mut output_row[interior.clone()] {
                *value /= interior_divisor;
            }
        }
        for out_x in border_columns(interior.clone(), out_w) {
            let (padded_columns, columns) = clipped_window(
                out_x,
                kernel_w,
                options.stride[1],
                options.padding[1],
                width,
            );
            output_row[out_x] = if columns.is_empty() {
                0.0
            } else {
                output_row[out_x] / divisor(padded_columns, columns.len()) as f32
            };
        }
    }
}

/// The input plane and window of one NCHW pooling, for reducing output rows.
struct PlaneRows<'a> {
    /// The plane's rows from `first_row` on (at least those the output rows reduced read).
    input: &'a [f32],
    first_row: usize,
    height: usize,
    width: usize,
    kernel_h: usize,
    stride_h: usize,
    dilation_h: usize,
    padding: [usize; 2],
    row_window: RowWindow,
}

/// Input rows combined per round of [`reduce_window_row`]; taller windows take several rounds.
const ROWS_PER_ROUND: usize = 8;

impl PlaneRows<'_> {
    /// The outputs of a row whose window columns all lie inside the input row: those whose
    /// first and last taps do.
    fn interior(&self, out_w: usize) -> std::ops::Range<usize> {
        let window = self.row_window;
        let first = valid_output_range(out_w, window.stride, 0, self.padding[1], self.width);
        let last = valid_output_range(
            out_w,
            window.stride,
            (window.kernel_w - 1) * window.dilation,
            self.padding[1],
            self.width,
        );
        first.start.max(last.start)..first.end.min(last.end)
    }

    /// Output row `out_y` reduced over the taps inside the input (the identity where there are
    /// none): `interior` in vectors, the border columns one by one.
    fn reduce_row(
        &self,
        reduction: Reduction,
        out_y: usize,
        interior: std::ops::Range<usize>,
        output_row: &mut [f32],
    ) {
        let window = self.row_window;
        let input_rows = self.input_rows(out_y);
        if !interior.is_empty() {
            // Each row from the first interior output's first input.
            let first_input = interior.start * window.stride - self.padding[1];
            let rows = input_rows.clone().map(|row| &row[first_input..]);
            reduce_rows(reduction, &mut output_row[interior.clone()], rows, window);
        }
        for out_x in border_columns(interior, output_row.len()) {
            let mut total = reduction.identity();
            for row in input_rows.clone() {
                for kernel_x in 0..window.kernel_w {
                    if let Some(x) = (out_x * window.stride + kernel_x * window.dilation)
                        .checked_sub(self.padding[1])
                        .filter(|&x| x < self.width)
                    {
                        total = reduction.combine(total, row[x]);
                    }
                }
            }
            output_row[out_x] = total;
        }
    }
}

impl<'a> PlaneRows<'a> {
    /// The input rows that output row `out_y`'s windows reach inside the input, top to bottom.
    fn input_rows(&self, out_y: usize) -> impl Iterator<Item = &'a [f32]> + Clone + use<'a> {
        let (input, first_row, width, height) =
            (self.input, self.first_row, self.width, self.height);
        let (stride_h, dilation_h, padding_h) = (self.stride_h, self.dilation_h, self.padding[0]);
        (0..self.kernel_h).filter_map(move |kernel_y| {
            (out_y * stride_h + kernel_y * dilation_h)
                .checked_sub(padding_h)
                .filter(|&y| y < height)
                .map(|y| &input[(y - first_row) * width..][..width])
        })
    }

    /// Max pooling of the plane into `output`, its rows `first_out_y..` (`out_w` outputs a row),
    /// by separable windows (see `max_pool_plane`), with `column_maxima` as the padded row of
    /// column maxima.
    fn max_separable(
        &self,
        first_out_y: usize,
        out_w: usize,
        output: &mut [f32],
        column_maxima: &mut Vec<f32>,
    ) {
        let across = self.row_window;
        let down = RowWindow {
            kernel_w: 1,
            stride: 1,
            dilation: 1,
        };
        let padding_w = self.padding[1];
        // The padded row holds input column `x` at `padding_w + x`, minus infinity around; the
        // last window reads up to `padded - 1`, which ceil mode may put past the right padding.
        let padded = (out_w - 1) * across.stride + (across.kernel_w - 1) * across.dilation + 1;
        // The usual 3-wide, stride-2 window with one column of padding (and rows enough to hold
        // a window's) runs in one pass per row where the processor has a form of it.
        let common = [across.kernel_w, across.stride, across.dilation, padding_w] == [3, 2, 1, 1]
            && self.kernel_h <= ROWS_PER_ROUND;
        let column_length = match common {
            true => rows::three_wide_stride_2_column(out_w, self.width),
            false => padded.max(padding_w + self.width),
        };
        if common {
            // Scratch for the portable form only, which fills it itself (the AVX2 and AVX-512
            // forms keep the column in registers): it need only be long enough.
            if column_maxima.len() < column_length {
                column_maxima.resize(column_length, f32::NEG_INFINITY);
            }
            let isa = Isa::detect();
            let mut rows: [&[f32]; ROWS_PER_ROUND] = [&[]; ROWS_PER_ROUND];
            for (row, output_row) in output.chunks_exact_mut(out_w).enumerate() {
                let mut count = 0;
                for input_row in self.input_rows(first_out_y + row) {
                    rows[count] = input_row;
                    count += 1;
                }
                if count == 0 {
                    output_row.fill(f32::NEG_INFINITY);
                    continue;
                }
                rows::max_rows_then_3_wide_stride_2(isa, &rows[..count], column_maxima, output_row);
            }
            return;
        }
        column_maxima.clear();
        column_maxima.resize(column_length, f32::NEG_INFINITY);
        for (row, output_row) in output.chunks_exact_mut(out_w).enumerate() {
            let columns = &mut column_maxima[padding_w..][..self.width];
            let input_rows = self.input_rows(first_out_y + row);
            reduce_rows(Reduction::Maximum, columns, input_rows, down);
            let rows = std::iter::once(&column_maxima[..padded]);
            reduce_rows(Reduction::Maximum, output_row, rows, across);
        }
    }
}

/// `outputs[i] = combine` over `rows` of [`reduce_window_row`]'s taps, the rows handed to it
/// `ROWS_PER_ROUND` at a time; no row at all leaves the identity.
fn reduce_rows<'a>(
    reduction: Reduction,
    outputs: &mut [f32],
    rows: impl Iterator<Item = &'a [f32]>,
    window: RowWindow,
) {
    let isa = Isa::detect();
    let mut round: [&[f32]; ROWS_PER_ROUND] = [&[]; ROWS_PER_ROUND];
    let mut count = 0;
    let mut accumulate = false;
    for row in rows {
        round[count] = row;
        count += 1;
        if count == ROWS_PER_ROUND {
            reduce_window_row(isa, reduction, outputs, &round, window, accumulate);
            accumulate = true;
            count = 0;
        }
    }
    if count > 0 || !accumulate {
        reduce_window_row(isa, reduction, outputs, &round[..count], window, accumulate);
    }
}

/// The outputs of a row outside `interior` (all of them when it is empty).
fn border_columns(interior: std::ops::Range<usize>, out_w: usize) -> impl Iterator<Item = usize> {
    let (start, end) = if interior.is_empty() {
        (out_w, out_w)
    } else {
        (interior.start, interior.end)
    };
    (0..start.min(out_w)).chain(end..out_w)
}

/// A window's extent along one axis: its length clipped to the padded input, and its positions
/// inside the input.
fn clipped_window(
    out: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    size: usize,
) -> (usize, std::ops::Range<usize>) {
    let start = (out * stride) as isize - padding as isize;
    let padded_end = (start + kernel as isize).min((size + padding) as isize);
    let input_start = start.max(0) as usize;
    let input_end = padded_end.clamp(0, size as isize) as usize;
    (
        (padded_end - start) as usize,
        input_start..input_end.max(input_start),
    )
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
