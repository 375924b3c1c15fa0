//! Reference twins of the kernels: naive loops straight from the definitions, accumulating in
//! `f64`, slow and obviously correct. The property tests compare every fast kernel against its
//! twin here; they are public so that other crates (an IR interpreter, say) can test against
//! them too. They panic on malformed input, since they are test oracles, not kernels.

use crate::kernels::activation::Activation;
use crate::kernels::conv::Conv2dOptions;
use crate::kernels::elementwise::BinaryOp;
use crate::kernels::gemm::MatrixRef;
use crate::kernels::pool::{AvgPool2dOptions, MaxPool2dOptions};
use nnc_ops::ReduceOp;

/// `A * B` for an `m x k` A and a `k x n` B, row-major `m x n`.
pub fn gemm(a: MatrixRef<'_>, b: MatrixRef<'_>) -> Vec<f32> {
    assert_eq!(
        a.cols(),
        b.rows(),
        "reference::gemm: inner dimensions differ"
    );
    let mut c = vec![0.0; a.rows() * b.cols()];
    for i in 0..a.rows() {
        for j in 0..b.cols() {
            let mut sum = 0.0f64;
            for p in 0..a.cols() {
                sum +=
                    a.get(i, p).expect("in range") as f64 * b.get(p, j).expect("in range") as f64;
            }
            c[i * b.cols() + j] = sum as f32;
        }
    }
    c
}

/// `y[m, n] = sum_k x[m, k] * weight[n, k] + bias[n]`, PyTorch's `linear`.
pub fn linear(
    x: &[f32],
    rows: usize,
    weight: &[f32],
    out_features: usize,
    in_features: usize,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let mut y = vec![0.0; rows * out_features];
    for m in 0..rows {
        for n in 0..out_features {
            let mut sum = bias.map_or(0.0, |bias| bias[n] as f64);
            for k in 0..in_features {
                sum += x[m * in_features + k] as f64 * weight[n * in_features + k] as f64;
            }
            y[m * out_features + n] = sum as f32;
        }
    }
    y
}

/// The activation of one value, computed in `f64` (the definition is
/// [`Activation::reference`], beside the activation's own).
pub fn activation(x: f32, activation: Activation) -> f32 {
    activation.reference(x)
}

pub use nnc_ops::math::erf_f64 as erf;

/// The global mean (or maximum) over the spatial axes of an `[N, C, *]` tensor, `[N, C]`.
pub fn global_pool(input: &[f32], shape: &[usize], maximum: bool) -> Vec<f32> {
    let plane: usize = shape[2..].iter().product();
    input
        .chunks(plane)
        .map(|values| {
            if maximum {
                values.iter().copied().fold(f32::NEG_INFINITY, f32::max)
            } else {
                (values.iter().map(|&x| x as f64).sum::<f64>() / plane as f64) as f32
            }
        })
        .collect()
}

/// The numpy broadcast of two shapes, or `None` if they do not broadcast.
pub fn broadcast_shape(a_shape: &[usize], b_shape: &[usize]) -> Option<Vec<usize>> {
    let rank = a_shape.len().max(b_shape.len());
    let padded = |shape: &[usize]| -> Vec<usize> {
        let mut padded = vec![1; rank - shape.len()];
        padded.extend_from_slice(shape);
        padded
    };
    let (a_shape, b_shape) = (padded(a_shape), padded(b_shape));
    a_shape
        .iter()
        .zip(&b_shape)
        .map(|(&a, &b)| match (a, b) {
            (a, b) if a == b => Some(a),
            (1, b) => Some(b),
            (a, 1) => Some(a),
            _ => None,
        })
        .collect()
}

/// The multi-index of flat row-major position `flat` in `shape`.
pub fn unravel_index(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for axis in (0..shape.len()).rev() {
        index[axis] = flat % shape[axis];
        flat /= shape[axis];
    }
    index
}

/// The flat row-major position in `shape` of the multi-index `index` of a broadcast result
/// (right-aligned, with length-1 axes of `shape` pinned to 0).
pub fn broadcast_flat_index(index: &[usize], shape: &[usize]) -> usize {
    let offset = index.len() - shape.len();
    shape.iter().enumerate().fold(0, |flat, (axis, &length)| {
        let position = if length == 1 { 0 } else { index[offset + axis] };
        flat * length + position
    })
}

/// `torch.matmul(a, b)`: the result and its shape.
pub fn matmul(
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
) -> (Vec<f32>, Vec<usize>) {
    let a_shape_2d: Vec<usize> = if a_shape.len() == 1 {
        vec![1, a_shape[0]]
    } else {
        a_shape.to_vec()
    };
    let b_shape_2d: Vec<usize> = if b_shape.len() == 1 {
        vec![b_shape[0], 1]
    } else {
        b_shape.to_vec()
    };
    let (a_batch, a_matrix) = a_shape_2d.split_at(a_shape_2d.len() - 2);
    let (b_batch, b_matrix) = b_shape_2d.split_at(b_shape_2d.len() - 2);
    let (rows, depth, cols) = (a_matrix[0], a_matrix[1], b_matrix[1]);
    assert_eq!(
        depth, b_matrix[0],
        "reference::matmul: inner dimensions differ"
    );
    let batch_shape = broadcast_shape(a_batch, b_batch).expect("batch axes broadcast");
    let batch_count: usize = batch_shape.iter().product();
    let mut output = Vec::with_capacity(batch_count * rows * cols);
    for batch in 0..batch_count {
        let index = unravel_index(batch, &batch_shape);
        let a_base = broadcast_flat_index(&index, a_batch) * rows * depth;
        let b_base = broadcast_flat_index(&index, b_batch) * depth * cols;
        for i in 0..rows {
            for j in 0..cols {
                let mut sum = 0.0f64;
                for p in 0..depth {
                    sum += a[a_base + i * depth + p] as f64 * b[b_base + p * cols + j] as f64;
                }
                output.push(sum as f32);
            }
        }
    }
    let mut output_shape = batch_shape;
    if a_shape.len() > 1 {
        output_shape.push(rows);
    }
    if b_shape.len() > 1 {
        output_shape.push(cols);
    }
    (output, output_shape)
}

/// `op(a, b)` with numpy broadcasting: the result and its shape.
pub fn binary(
    op: BinaryOp,
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
) -> (Vec<f32>, Vec<usize>) {
    let shape = broadcast_shape(a_shape, b_shape).expect("shapes broadcast");
    let length: usize = shape.iter().product();
    let output = (0..length)
        .map(|flat| {
            let index = unravel_index(flat, &shape);
            let left = a[broadcast_flat_index(&index, a_shape)];
            let right = b[broadcast_flat_index(&index, b_shape)];
            match op {
                BinaryOp::Add => left + right,
                BinaryOp::Sub => left - right,
                BinaryOp::Mul => left * right,
                BinaryOp::Div => left / right,
                BinaryOp::Pow => left.powf(right),
            }
        })
        .collect();
    (output, shape)
}

/// Softmax along `axis` of `shape`, in `f64`.
pub fn softmax(input: &[f32], shape: &[usize], axis: usize) -> Vec<f32> {
    along_axis_with_max_and_total(input, shape, axis, |x, maximum, total| {
        (x - maximum).exp() / total
    })
}

/// Log-softmax along `axis` of `shape`, in `f64`: `x - max - ln(sum(exp(x - max)))`.
pub fn log_softmax(input: &[f32], shape: &[usize], axis: usize) -> Vec<f32> {
    along_axis_with_max_and_total(input, shape, axis, |x, maximum, total| {
        x - maximum - total.ln()
    })
}

/// `value(x, max, sum(exp(x - max)))` for each `x`, with the maximum and the sum of each line
/// along `axis` of `shape`, in `f64`.
fn along_axis_with_max_and_total(
    input: &[f32],
    shape: &[usize],
    axis: usize,
    value: impl Fn(f64, f64, f64) -> f64,
) -> Vec<f32> {
    let outer: usize = shape[..axis].iter().product();
    let length = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let mut output = vec![0.0; input.len()];
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| (o * length + j) * inner + i;
            let maximum = (0..length)
                .map(|j| input[at(j)] as f64)
                .fold(f64::NEG_INFINITY, f64::max);
            let total: f64 = (0..length)
                .map(|j| (input[at(j)] as f64 - maximum).exp())
                .sum();
            for j in 0..length {
                output[at(j)] = value(input[at(j)] as f64, maximum, total) as f32;
            }
        }
    }
    output
}

/// The reduction `op` of `input` (of `shape`) over `axes`, in `f64`: one output element per
/// index of the kept axes, in row-major order (the reduced axes dropped; keeping them as 1 changes
/// no element). Each group's elements are gathered, then reduced by the textbook formula.
pub fn reduce(input: &[f32], shape: &[usize], axes: &[usize], op: ReduceOp) -> Vec<f32> {
    let kept: Vec<usize> = (0..shape.len())
        .filter(|axis| !axes.contains(axis))
        .collect();
    let output_length: usize = kept.iter().map(|&axis| shape[axis]).product();
    let mut groups = vec![Vec::new(); output_length];
    let mut index = vec![0usize; shape.len()];
    for &x in input {
        let position = kept
            .iter()
            .fold(0, |position, &axis| position * shape[axis] + index[axis]);
        groups[position].push(x as f64);
        // The next row-major index.
        for axis in (0..shape.len()).rev() {
            index[axis] += 1;
            if index[axis] < shape[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
    let any_nan = |group: &[f64]| group.iter().any(|x| x.is_nan());
    let maximum = |group: &[f64]| match any_nan(group) {
        true => f64::NAN,
        false => group.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    };
    let finish = |group: &Vec<f64>| match op {
        ReduceOp::Sum => group.iter().sum(),
        ReduceOp::Mean => group.iter().sum::<f64>() / group.len() as f64,
        ReduceOp::Max => maximum(group),
        ReduceOp::Min => match any_nan(group) {
            true => f64::NAN,
            false => group.iter().copied().fold(f64::INFINITY, f64::min),
        },
        ReduceOp::Prod => group.iter().product(),
        ReduceOp::L1 => group.iter().map(|x| x.abs()).sum(),
        ReduceOp::L2 => group.iter().map(|x| x * x).sum::<f64>().sqrt(),
        ReduceOp::SumSquare => group.iter().map(|x| x * x).sum(),
        ReduceOp::LogSumExp => {
            let largest = maximum(group);
            if largest.is_finite() {
                largest + group.iter().map(|x| (x - largest).exp()).sum::<f64>().ln()
            } else {
                largest
            }
        }
    };
    groups.iter().map(|group| finish(group) as f32).collect()
}

/// Inference batch norm over axis 1 of an `[N, C, *]` tensor:
/// `(x - mean) / sqrt(var + eps) * weight + bias`.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm(
    input: &[f32],
    shape: &[usize],
    mean: &[f32],
    variance: &[f32],
    weight: Option<&[f32]>,
    bias: Option<&[f32]>,
    eps: f32,
) -> Vec<f32> {
    let channels = shape[1];
    let spatial: usize = shape[2..].iter().product();
    input
        .iter()
        .enumerate()
        .map(|(flat, &x)| {
            let c = flat / spatial % channels;
            let normalized = (x as f64 - mean[c] as f64) / (variance[c] as f64 + eps as f64).sqrt();
            let scaled = normalized * weight.map_or(1.0, |w| w[c] as f64);
            (scaled + bias.map_or(0.0, |b| b[c] as f64)) as f32
        })
        .collect()
}

/// Layer norm over the last `size` elements of each row, biased variance, optional affine.
pub fn layer_norm(
    input: &[f32],
    size: usize,
    weight: Option<&[f32]>,
    bias: Option<&[f32]>,
    eps: f32,
) -> Vec<f32> {
    let mut output = Vec::with_capacity(input.len());
    for row in input.chunks(size) {
        let mean = row.iter().map(|&x| x as f64).sum::<f64>() / size as f64;
        let variance = row.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / size as f64;
        let inverse = 1.0 / (variance + eps as f64).sqrt();
        for (i, &x) in row.iter().enumerate() {
            let normalized = (x as f64 - mean) * inverse;
            let scaled = normalized * weight.map_or(1.0, |w| w[i] as f64);
            output.push((scaled + bias.map_or(0.0, |b| b[i] as f64)) as f32);
        }
    }
    output
}

/// RMS norm over the last `size` elements of each row: `x / sqrt(mean(x^2) + eps) * weight`.
pub fn rms_norm(input: &[f32], size: usize, weight: Option<&[f32]>, eps: f32) -> Vec<f32> {
    let mut output = Vec::with_capacity(input.len());
    for row in input.chunks(size) {
        let mean_square = row.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / size as f64;
        let inverse = 1.0 / (mean_square + eps as f64).sqrt();
        for (i, &x) in row.iter().enumerate() {
            output.push((x as f64 * inverse * weight.map_or(1.0, |w| w[i] as f64)) as f32);
        }
    }
    output
}

/// Embedding lookup: the rows of `table` (rows of `dim` values) named by `ids`.
pub fn embedding(table: &[f32], dim: usize, ids: &[i64]) -> Vec<f32> {
    let mut output = Vec::with_capacity(ids.len() * dim);
    for &id in ids {
        let row = usize::try_from(id).expect("id is not negative");
        output.extend_from_slice(&table[row * dim..(row + 1) * dim]);
    }
    output
}

/// `input.permute(permutation)`: the result and its shape.
pub fn permute(input: &[f32], shape: &[usize], permutation: &[usize]) -> (Vec<f32>, Vec<usize>) {
    let output_shape: Vec<usize> = permutation.iter().map(|&axis| shape[axis]).collect();
    let output = (0..input.len())
        .map(|flat| {
            let output_index = unravel_index(flat, &output_shape);
            let mut input_index = vec![0; shape.len()];
            for (output_axis, &input_axis) in permutation.iter().enumerate() {
                input_index[input_axis] = output_index[output_axis];
            }
            input[broadcast_flat_index(&input_index, shape)]
        })
        .collect();
    (output, output_shape)
}

/// `torch.cat` of `(data, shape)` parts along `axis`: the result and its shape.
pub fn concat(parts: &[(&[f32], &[usize])], axis: usize) -> (Vec<f32>, Vec<usize>) {
    let mut output_shape = parts[0].1.to_vec();
    output_shape[axis] = parts.iter().map(|(_, shape)| shape[axis]).sum();
    let length: usize = output_shape.iter().product();
    let output = (0..length)
        .map(|flat| {
            let mut index = unravel_index(flat, &output_shape);
            for (data, shape) in parts {
                if index[axis] < shape[axis] {
                    return data[broadcast_flat_index(&index, shape)];
                }
                index[axis] -= shape[axis];
            }
            unreachable!("reference::concat: index past the last part")
        })
        .collect();
    (output, output_shape)
}

/// Indices `start..end` of `axis`: the result and its shape.
pub fn slice_axis(
    input: &[f32],
    shape: &[usize],
    axis: usize,
    start: usize,
    end: usize,
) -> (Vec<f32>, Vec<usize>) {
    let mut output_shape = shape.to_vec();
    output_shape[axis] = end - start;
    let length: usize = output_shape.iter().product();
    let output = (0..length)
        .map(|flat| {
            let mut index = unravel_index(flat, &output_shape);
            index[axis] += start;
            input[broadcast_flat_index(&index, shape)]
        })
        .collect();
    (output, output_shape)
}

/// Rotary position embedding of `[batch, seq, n_heads * head_dim]` activations, in `f64`,
/// straight from the definition: the pair `(x1, x2)` at frequency `i` of position `p` becomes
/// `(x1 cos - x2 sin, x2 cos + x1 sin)` with angle `p * theta^(-2i / head_dim)`.
#[allow(clippy::too_many_arguments)]
pub fn rope(
    input: &[f32],
    batch: usize,
    seq: usize,
    n_heads: usize,
    head_dim: usize,
    theta: f32,
    position_offset: usize,
    interleaved: bool,
) -> Vec<f32> {
    let mut output = input.to_vec();
    let half = head_dim / 2;
    for b in 0..batch {
        for t in 0..seq {
            let position = (position_offset + t) as f64;
            for h in 0..n_heads {
                let base = ((b * seq + t) * n_heads + h) * head_dim;
                for i in 0..half {
                    let angle = position * (theta as f64).powf(-((2 * i) as f64) / head_dim as f64);
                    let (first, second) = if interleaved {
                        (base + 2 * i, base + 2 * i + 1)
                    } else {
                        (base + i, base + i + half)
                    };
                    let (x1, x2) = (input[first] as f64, input[second] as f64);
                    output[first] = (x1 * angle.cos() - x2 * angle.sin()) as f32;
                    output[second] = (x2 * angle.cos() + x1 * angle.sin()) as f32;
                }
            }
        }
    }
    output
}

/// The parameters of `attention`, mirroring the kernel's shape and options.
pub struct AttentionParams<'a> {
    pub batch: usize,
    pub query_len: usize,
    pub key_len: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub scale: Option<f32>,
    pub causal: bool,
    pub query_position_offset: usize,
    pub key_padding_mask: Option<&'a [i64]>,
    /// The general mask, `allowed(query_row, key)`.
    pub allowed: &'a dyn Fn(usize, usize) -> bool,
}

/// Scaled dot-product attention in `f64`, one query row at a time; rows with no allowed key
/// give zeros.
pub fn attention(q: &[f32], k: &[f32], v: &[f32], params: &AttentionParams<'_>) -> Vec<f32> {
    let d = params.head_dim;
    let scale = params
        .scale
        .map_or(1.0 / (d as f64).sqrt(), |scale| scale as f64);
    let group = params.n_heads / params.n_kv_heads;
    let q_at = |b: usize, i: usize, h: usize, x: usize| {
        q[((b * params.query_len + i) * params.n_heads + h) * d + x] as f64
    };
    let kv_at = |data: &[f32], b: usize, j: usize, h: usize, x: usize| {
        data[((b * params.key_len + j) * params.n_kv_heads + h) * d + x] as f64
    };
    let mut output = vec![0.0; q.len()];
    for b in 0..params.batch {
        for h in 0..params.n_heads {
            let kv_head = h / group;
            for i in 0..params.query_len {
                let allowed: Vec<bool> = (0..params.key_len)
                    .map(|j| {
                        let causal_ok = !params.causal || j <= params.query_position_offset + i;
                        let padding_ok = params
                            .key_padding_mask
                            .is_none_or(|mask| mask[b * params.key_len + j] != 0);
                        causal_ok && padding_ok && (params.allowed)(i, j)
                    })
                    .collect();
                let scores: Vec<f64> = (0..params.key_len)
                    .map(|j| {
                        (0..d)
                            .map(|x| q_at(b, i, h, x) * kv_at(k, b, j, kv_head, x))
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let maximum = (0..params.key_len)
                    .filter(|&j| allowed[j])
                    .map(|j| scores[j])
                    .fold(f64::NEG_INFINITY, f64::max);
                if maximum == f64::NEG_INFINITY {
                    continue;
                }
                let weights: Vec<f64> = (0..params.key_len)
                    .map(|j| {
                        if allowed[j] {
                            (scores[j] - maximum).exp()
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let total: f64 = weights.iter().sum();
                for x in 0..d {
                    let value: f64 = (0..params.key_len)
                        .map(|j| weights[j] * kv_at(v, b, j, kv_head, x))
                        .sum::<f64>()
                        / total;
                    output[((b * params.query_len + i) * params.n_heads + h) * d + x] =
                        value as f32;
                }
            }
        }
    }
    output
}

/// 2-D convolution (PyTorch's `conv2d`, NCHW) straight from the definition: the result and its
/// shape.
pub fn conv2d(
    input: &[f32],
    input_shape: [usize; 4],
    weight: &[f32],
    weight_shape: [usize; 4],
    bias: Option<&[f32]>,
    options: Conv2dOptions,
) -> (Vec<f32>, [usize; 4]) {
    let [batch, channels, height, width] = input_shape;
    let [out_channels, group_channels, kernel_h, kernel_w] = weight_shape;
    let group_out_channels = out_channels / options.groups;
    let out_size = |input: usize, axis: usize, kernel: usize| {
        (input + 2 * options.padding[axis] - options.dilation[axis] * (kernel - 1) - 1)
            / options.stride[axis]
            + 1
    };
    let (out_h, out_w) = (out_size(height, 0, kernel_h), out_size(width, 1, kernel_w));
    let mut output = vec![0.0; batch * out_channels * out_h * out_w];
    for n in 0..batch {
        for oc in 0..out_channels {
            let group = oc / group_out_channels;
            for oy in 0..out_h {
                for ox in 0..out_w {
                    let mut sum = bias.map_or(0.0, |bias| bias[oc] as f64);
                    for gc in 0..group_channels {
                        let c = group * group_channels + gc;
                        for ky in 0..kernel_h {
                            for kx in 0..kernel_w {
                                let y = (oy * options.stride[0] + ky * options.dilation[0])
                                    as isize
                                    - options.padding[0] as isize;
                                let x = (ox * options.stride[1] + kx * options.dilation[1])
                                    as isize
                                    - options.padding[1] as isize;
                                if y < 0 || x < 0 || y >= height as isize || x >= width as isize {
                                    continue;
                                }
                                let input_value = input[((n * channels + c) * height + y as usize)
                                    * width
                                    + x as usize];
                                let weight_value = weight
                                    [((oc * group_channels + gc) * kernel_h + ky) * kernel_w + kx];
                                sum += input_value as f64 * weight_value as f64;
                            }
                        }
                    }
                    output[((n * out_channels + oc) * out_h + oy) * out_w + ox] = sum as f32;
                }
            }
        }
    }
    (output, [batch, out_channels, out_h, out_w])
}

/// 2-D convolution of a channels-last `[N, H, W, C]` image: [`conv2d`] between two layout
/// changes. Returns the `[N, out_h, out_w, out_channels]` result and its shape.
pub fn conv2d_channels_last(
    input: &[f32],
    input_shape: [usize; 4],
    weight: &[f32],
    weight_shape: [usize; 4],
    bias: Option<&[f32]>,
    options: Conv2dOptions,
) -> (Vec<f32>, [usize; 4]) {
    let [batch, height, width, channels] = input_shape;
    let nchw_input = nhwc_to_nchw(input, [batch, height, width, channels]);
    let (output, [_, out_channels, out_h, out_w]) = conv2d(
        &nchw_input,
        [batch, channels, height, width],
        weight,
        weight_shape,
        bias,
        options,
    );
    let nhwc_output = nchw_to_nhwc(&output, [batch, out_channels, out_h, out_w]);
    (nhwc_output, [batch, out_h, out_w, out_channels])
}

/// An `[N, C, H, W]` tensor as `[N, H, W, C]`.
pub fn nchw_to_nhwc(input: &[f32], [batch, channels, height, width]: [usize; 4]) -> Vec<f32> {
    let mut output = vec![0.0; input.len()];
    for n in 0..batch {
        for c in 0..channels {
            for y in 0..height {
                for x in 0..width {
                    output[((n * height + y) * width + x) * channels + c] =
                        input[((n * channels + c) * height + y) * width + x];
                }
            }
        }
    }
    output
}

/// An `[N, H, W, C]` tensor as `[N, C, H, W]`.
pub fn nhwc_to_nchw(input: &[f32], [batch, height, width, channels]: [usize; 4]) -> Vec<f32> {
    let mut output = vec![0.0; input.len()];
    for n in 0..batch {
        for c in 0..channels {
            for y in 0..height {
                for x in 0..width {
                    output[((n * channels + c) * height + y) * width + x] =
                        input[((n * height + y) * width + x) * channels + c];
                }
            }
        }
    }
    output
}

/// PyTorch's pooled length: `floor((in + 2 pad - dilation (kernel - 1) - 1 [+ stride - 1 in
/// ceil mode]) / stride) + 1`, minus one in ceil mode if the last window would start past the
/// input and left padding.
pub fn pooled_size(
    input: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
    ceil_mode: bool,
) -> usize {
    let numerator = (input + 2 * padding) as f64 - (dilation * (kernel - 1)) as f64 - 1.0;
    let quotient = numerator / stride as f64;
    let mut size = if ceil_mode {
        quotient.ceil()
    } else {
        quotient.floor()
    } as isize
        + 1;
    if ceil_mode && (size - 1) * stride as isize >= (input + padding) as isize {
        size -= 1;
    }
    size as usize
}

/// Max pooling (NCHW): the maximum over each window's elements inside the input, NaN winning.
pub fn max_pool2d(
    input: &[f32],
    input_shape: [usize; 4],
    options: &MaxPool2dOptions,
) -> (Vec<f32>, [usize; 4]) {
    let [batch, channels, height, width] = input_shape;
    let size = |axis: usize, input: usize| {
        pooled_size(
            input,
            options.kernel[axis],
            options.stride[axis],
            options.padding[axis],
            options.dilation[axis],
            options.ceil_mode,
        )
    };
    let (out_h, out_w) = (size(0, height), size(1, width));
    let mut output = Vec::with_capacity(batch * channels * out_h * out_w);
    for plane in 0..batch * channels {
        for oy in 0..out_h {
            for ox in 0..out_w {
                let mut best = f32::NEG_INFINITY;
                for ky in 0..options.kernel[0] {
                    for kx in 0..options.kernel[1] {
                        let y = (oy * options.stride[0] + ky * options.dilation[0]) as isize
                            - options.padding[0] as isize;
                        let x = (ox * options.stride[1] + kx * options.dilation[1]) as isize
                            - options.padding[1] as isize;
                        if y < 0 || x < 0 || y >= height as isize || x >= width as isize {
                            continue;
                        }
                        let value = input[(plane * height + y as usize) * width + x as usize];
                        if value.is_nan() || value > best {
                            best = value;
                        }
                    }
                }
                output.push(best);
            }
        }
    }
    (output, [batch, channels, out_h, out_w])
}

/// Average pooling (NCHW) with PyTorch's divisor rules.
pub fn avg_pool2d(
    input: &[f32],
    input_shape: [usize; 4],
    options: &AvgPool2dOptions,
) -> (Vec<f32>, [usize; 4]) {
    let [batch, channels, height, width] = input_shape;
    let size = |axis: usize, input: usize| {
        pooled_size(
            input,
            options.kernel[axis],
            options.stride[axis],
            options.padding[axis],
            1,
            options.ceil_mode,
        )
    };
    let (out_h, out_w) = (size(0, height), size(1, width));
    let mut output = Vec::with_capacity(batch * channels * out_h * out_w);
    for plane in 0..batch * channels {
        for oy in 0..out_h {
            for ox in 0..out_w {
                let y_start = (oy * options.stride[0]) as isize - options.padding[0] as isize;
                let x_start = (ox * options.stride[1]) as isize - options.padding[1] as isize;
                let y_end = (y_start + options.kernel[0] as isize)
                    .min((height + options.padding[0]) as isize);
                let x_end = (x_start + options.kernel[1] as isize)
                    .min((width + options.padding[1]) as isize);
                let padded_count = (y_end - y_start) * (x_end - x_start);
                let mut total = 0.0f64;
                let mut count = 0;
                for y in y_start..y_end {
                    for x in x_start..x_end {
                        if y >= 0 && x >= 0 && y < height as isize && x < width as isize {
                            total +=
                                input[(plane * height + y as usize) * width + x as usize] as f64;
                            count += 1;
                        }
                    }
                }
                let divisor = match options.divisor_override {
                    Some(divisor) => divisor as f64,
                    None if options.count_include_pad => padded_count as f64,
                    None => count as f64,
                };
                output.push(if count == 0 {
                    0.0
                } else {
                    (total / divisor) as f32
                });
            }
        }
    }
    (output, [batch, channels, out_h, out_w])
}

/// 2-D transposed convolution (PyTorch's `conv_transpose2d`, NCHW, weight
/// `[c, out / groups, kh, kw]`) as a gather: output pixel `o` sums input pixel `i` with tap `k`
/// wherever `i * stride - padding + k * dilation == o`.
pub fn conv_transpose2d(
    input: &[f32],
    input_shape: [usize; 4],
    weight: &[f32],
    weight_shape: [usize; 4],
    bias: Option<&[f32]>,
    options: &crate::kernels::conv::ConvTranspose2dOptions,
) -> Vec<f32> {
    let [batch, channels, height, width] = input_shape;
    let [_, out_per_group, kernel_h, kernel_w] = weight_shape;
    let groups = options.groups;
    let in_per_group = channels / groups;
    let out_channels = out_per_group * groups;
    let out_h = options
        .output_size(0, height, kernel_h)
        .expect("a valid geometry");
    let out_w = options
        .output_size(1, width, kernel_w)
        .expect("a valid geometry");
    let mut output = vec![0.0; batch * out_channels * out_h * out_w];
    for n in 0..batch {
        for oc in 0..out_channels {
            let group = oc / out_per_group;
            for oy in 0..out_h {
                for ox in 0..out_w {
                    let mut sum = bias.map_or(0.0, |bias| bias[oc] as f64);
                    for gc in 0..in_per_group {
                        let c = group * in_per_group + gc;
                        for ky in 0..kernel_h {
                            for kx in 0..kernel_w {
                                let y = oy as isize + options.padding[0] as isize
                                    - (ky * options.dilation[0]) as isize;
                                let x = ox as isize + options.padding[1] as isize
                                    - (kx * options.dilation[1]) as isize;
                                let (stride_h, stride_w) =
                                    (options.stride[0] as isize, options.stride[1] as isize);
                                if y < 0 || x < 0 || y % stride_h != 0 || x % stride_w != 0 {
                                    continue;
                                }
                                let (y, x) = ((y / stride_h) as usize, (x / stride_w) as usize);
                                if y >= height || x >= width {
                                    continue;
                                }
                                let input_value =
                                    input[((n * channels + c) * height + y) * width + x];
                                let weight_value =
                                    weight[((c * out_per_group + oc % out_per_group) * kernel_h
                                        + ky)
                                        * kernel_w
                                        + kx];
                                sum += input_value as f64 * weight_value as f64;
                            }
                        }
                    }
                    output[((n * out_channels + oc) * out_h + oy) * out_w + ox] = sum as f32;
                }
            }
        }
    }
    output
}

/// Resizing `[n, c, h, w]` images, straight from ONNX's definition in `f64`: each output pixel's
/// source coordinates, then the nearest pixel or the bilinear blend of the four around them.
pub fn resize2d(
    input: &[f32],
    [batch, channels, height, width]: [usize; 4],
    options: &crate::kernels::resize::Resize2dOptions,
) -> Vec<f32> {
    use crate::kernels::resize::{CoordinateTransform, NearestRounding, ResizeMode};
    let [out_h, out_w] = options.output_size;
    // The source coordinate in `f32`, as ONNX Runtime computes it: the nearest modes round it,
    // and a coordinate on a tie (2.5 for 9.5 / (19 / 6) - 0.5) lands on either side of the tie
    // in `f64` and `f32`, so an `f64` coordinate would pick a different pixel than every engine.
    let source = |x: usize, input: usize, output: usize, scale: f32| -> f64 {
        let x = x as f32;
        f64::from(match options.coordinates {
            CoordinateTransform::HalfPixel => (x + 0.5) / scale - 0.5,
            CoordinateTransform::PytorchHalfPixel if output > 1 => (x + 0.5) / scale - 0.5,
            CoordinateTransform::AlignCorners if output > 1 => {
                x * (input as f32 - 1.0) / (output as f32 - 1.0)
            }
            CoordinateTransform::PytorchHalfPixel | CoordinateTransform::AlignCorners => 0.0,
            CoordinateTransform::Asymmetric => x / scale,
        })
    };
    let nearest = |x: f64, input: usize| -> usize {
        let rounded = match options.nearest {
            NearestRounding::RoundPreferFloor => (x - 0.5).ceil(),
            NearestRounding::RoundPreferCeil => (x + 0.5).floor(),
            NearestRounding::Floor => x.floor(),
            NearestRounding::Ceil => x.ceil(),
        };
        rounded.clamp(0.0, input as f64 - 1.0) as usize
    };
    let at = |plane: usize, y: usize, x: usize| input[(plane * height + y) * width + x] as f64;
    let mut output = Vec::with_capacity(batch * channels * out_h * out_w);
    for plane in 0..batch * channels {
        for oy in 0..out_h {
            let sy = source(oy, height, out_h, options.scale[0]);
            for ox in 0..out_w {
                let sx = source(ox, width, out_w, options.scale[1]);
                let value = match options.mode {
                    ResizeMode::Nearest => at(plane, nearest(sy, height), nearest(sx, width)),
                    ResizeMode::Linear => {
                        let sy = sy.clamp(0.0, height as f64 - 1.0);
                        let sx = sx.clamp(0.0, width as f64 - 1.0);
                        let (y0, x0) = (sy.floor() as usize, sx.floor() as usize);
                        let (y1, x1) = ((y0 + 1).min(height - 1), (x0 + 1).min(width - 1));
                        let (wy, wx) = (sy - y0 as f64, sx - x0 as f64);
                        (1.0 - wy) * ((1.0 - wx) * at(plane, y0, x0) + wx * at(plane, y0, x1))
                            + wy * ((1.0 - wx) * at(plane, y1, x0) + wx * at(plane, y1, x1))
                    }
                };
                output.push(value as f32);
            }
        }
    }
    output
}

/// Padding by index arithmetic on whole multi-indices: each output element's input index on
/// every axis (numpy's `pad` with `constant`, `reflect` and `edge`).
pub fn pad(
    input: &[f32],
    shape: &[usize],
    before: &[usize],
    after: &[usize],
    mode: crate::kernels::resize::PadMode,
    value: f32,
) -> Vec<f32> {
    use crate::kernels::resize::PadMode;
    let output_shape: Vec<usize> = (0..shape.len())
        .map(|axis| shape[axis] + before[axis] + after[axis])
        .collect();
    let count: usize = output_shape.iter().product();
    let mut output = Vec::with_capacity(count);
    'elements: for flat in 0..count {
        let index = unravel_index(flat, &output_shape);
        let mut source = Vec::with_capacity(shape.len());
        for axis in 0..shape.len() {
            let position = index[axis] as i64 - before[axis] as i64;
            let size = shape[axis] as i64;
            let mapped = if (0..size).contains(&position) {
                position
            } else {
                match mode {
                    PadMode::Constant => {
                        output.push(value);
                        continue 'elements;
                    }
                    PadMode::Edge => position.clamp(0, size - 1),
                    PadMode::Reflect if position < 0 => -position,
                    PadMode::Reflect => 2 * (size - 1) - position,
                }
            };
            source.push(mapped as usize);
        }
        let mut offset = 0;
        for axis in 0..shape.len() {
            offset = offset * shape[axis] + source[axis];
        }
        output.push(input[offset]);
    }
    output
}
