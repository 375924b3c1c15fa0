//! Thin `ndarray` front ends over the slice kernels: they take views of any memory layout
//! (copying to row-major only when needed), check shapes, and return freshly allocated arrays.
//! Generated code calls the slice kernels directly; these are for people and tests.

use crate::error::{KernelError, KernelResult, invalid_parameter, shape_mismatch};
use crate::kernels::activation::{Activation, apply_activation, apply_activation_in_place};
use crate::kernels::attention::{AttentionOptions, AttentionShape, scaled_dot_product_attention};
use crate::kernels::conv::{ConvWorkspace, PackedConv1d, PackedConv2d};
use crate::kernels::elementwise::{BinaryOp, broadcast_shapes};
use crate::kernels::linear::PackedLinear;
use crate::kernels::norm::{BatchNorm, LayerNormOptions, RmsNormOptions};
use crate::kernels::pool::{
    AvgPool1dOptions, AvgPool2dOptions, MaxPool1dOptions, MaxPool2dOptions, avg_pool1d_output_len,
    avg_pool2d_output_shape, max_pool1d_output_len, max_pool2d_output_shape,
};
use crate::kernels::rope::{RopeOptions, RopeTable};
use crate::kernels::{elementwise, embedding as embedding_kernel, matmul as matmul_kernel};
use crate::kernels::{norm, pool, rope as rope_kernel, shape, softmax as softmax_kernel};
use crate::tensor::TensorRef;
use ndarray::{
    Array, Array2, Array3, Array4, ArrayD, ArrayView, ArrayView2, ArrayView3, ArrayView4,
    ArrayViewD, ArrayViewMut, Dimension,
};
use std::borrow::Cow;

/// `layer(input)` over the last axis, which must have `layer.in_features()` elements.
pub fn linear(input: ArrayViewD<'_, f32>, layer: &PackedLinear) -> KernelResult<ArrayD<f32>> {
    let Some((&in_features, batch_shape)) = input.shape().split_last() else {
        return Err(shape_mismatch("linear", "the input is a scalar"));
    };
    if in_features != layer.in_features() {
        return Err(shape_mismatch(
            "linear",
            format!(
                "the input has {in_features} features, the layer {}",
                layer.in_features()
            ),
        ));
    }
    let rows: usize = batch_shape.iter().product();
    let mut output = vec![0.0; rows * layer.out_features()];
    layer.forward(&row_major(&input), rows, &mut output)?;
    let mut output_shape = batch_shape.to_vec();
    output_shape.push(layer.out_features());
    into_array(output_shape, output)
}

/// `torch.matmul(a, b)`.
pub fn matmul(a: ArrayViewD<'_, f32>, b: ArrayViewD<'_, f32>) -> KernelResult<ArrayD<f32>> {
    let output_shape = matmul_kernel::matmul_output_shape(a.shape(), b.shape())?;
    let mut output = vec![0.0; output_shape.iter().product()];
    let (a_data, b_data) = (row_major(&a), row_major(&b));
    matmul_kernel::matmul(
        TensorRef::new(&a_data, a.shape())?,
        TensorRef::new(&b_data, b.shape())?,
        &mut output,
    )?;
    into_array(output_shape, output)
}

/// `conv(input)` for an `[N, C, H, W]` input.
pub fn conv2d(input: ArrayView4<'_, f32>, conv: &PackedConv2d) -> KernelResult<Array4<f32>> {
    let input_shape = shape4(&input);
    let output_shape = conv.output_shape(input_shape)?;
    let mut output = vec![0.0; output_shape.iter().product()];
    conv.forward(
        &row_major(&input),
        input_shape,
        &mut output,
        &mut ConvWorkspace::new(),
    )?;
    into_array(output_shape, output)
}

/// `conv(input)` for an `[N, C, L]` input.
pub fn conv1d(input: ArrayView3<'_, f32>, conv: &PackedConv1d) -> KernelResult<Array3<f32>> {
    let input_shape = shape3(&input);
    let output_shape = conv.output_shape(input_shape)?;
    let mut output = vec![0.0; output_shape.iter().product()];
    conv.forward(
        &row_major(&input),
        input_shape,
        &mut output,
        &mut ConvWorkspace::new(),
    )?;
    into_array(output_shape, output)
}

/// `max_pool2d(input)` for an `[N, C, H, W]` input.
pub fn max_pool2d(
    input: ArrayView4<'_, f32>,
    options: &MaxPool2dOptions,
) -> KernelResult<Array4<f32>> {
    let input_shape = shape4(&input);
    let output_shape = max_pool2d_output_shape(input_shape, options)?;
    let mut output = vec![0.0; output_shape.iter().product()];
    pool::max_pool2d(&row_major(&input), input_shape, options, &mut output)?;
    into_array(output_shape, output)
}

/// `avg_pool2d(input)` for an `[N, C, H, W]` input.
pub fn avg_pool2d(
    input: ArrayView4<'_, f32>,
    options: &AvgPool2dOptions,
) -> KernelResult<Array4<f32>> {
    let input_shape = shape4(&input);
    let output_shape = avg_pool2d_output_shape(input_shape, options)?;
    let mut output = vec![0.0; output_shape.iter().product()];
    pool::avg_pool2d(&row_major(&input), input_shape, options, &mut output)?;
    into_array(output_shape, output)
}

/// `max_pool1d(input)` for an `[N, C, L]` input.
pub fn max_pool1d(
    input: ArrayView3<'_, f32>,
    options: &MaxPool1dOptions,
) -> KernelResult<Array3<f32>> {
    let input_shape = shape3(&input);
    let output_shape = [
        input_shape[0],
        input_shape[1],
        max_pool1d_output_len(input_shape[2], options)?,
    ];
    let mut output = vec![0.0; output_shape.iter().product()];
    pool::max_pool1d(&row_major(&input), input_shape, options, &mut output)?;
    into_array(output_shape, output)
}

/// `avg_pool1d(input)` for an `[N, C, L]` input.
pub fn avg_pool1d(
    input: ArrayView3<'_, f32>,
    options: &AvgPool1dOptions,
) -> KernelResult<Array3<f32>> {
    let input_shape = shape3(&input);
    let output_shape = [
        input_shape[0],
        input_shape[1],
        avg_pool1d_output_len(input_shape[2], options)?,
    ];
    let mut output = vec![0.0; output_shape.iter().product()];
    pool::avg_pool1d(&row_major(&input), input_shape, options, &mut output)?;
    into_array(output_shape, output)
}

/// The mean over the spatial axes of an `[N, C, *]` input, as `[N, C]`.
pub fn global_avg_pool(input: ArrayViewD<'_, f32>) -> KernelResult<Array2<f32>> {
    global_pool(input, pool::global_avg_pool)
}

/// The maximum over the spatial axes of an `[N, C, *]` input, as `[N, C]`.
pub fn global_max_pool(input: ArrayViewD<'_, f32>) -> KernelResult<Array2<f32>> {
    global_pool(input, pool::global_max_pool)
}

/// Inference batch norm over axis 1 of an `[N, C, *]` input.
pub fn batch_norm(input: ArrayViewD<'_, f32>, layer: &BatchNorm) -> KernelResult<ArrayD<f32>> {
    let mut output = row_major(&input).into_owned();
    norm::batch_norm_in_place(&mut output, input.shape(), layer)?;
    into_array(input.shape().to_vec(), output)
}

/// Layer norm over the last axis.
pub fn layer_norm(
    input: ArrayViewD<'_, f32>,
    options: &LayerNormOptions<'_>,
) -> KernelResult<ArrayD<f32>> {
    let size = last_axis_length("layer_norm", &input)?;
    let mut output = row_major(&input).into_owned();
    norm::layer_norm_in_place(&mut output, size, options)?;
    into_array(input.shape().to_vec(), output)
}

/// RMS norm over the last axis.
pub fn rms_norm(
    input: ArrayViewD<'_, f32>,
    options: &RmsNormOptions<'_>,
) -> KernelResult<ArrayD<f32>> {
    let size = last_axis_length("rms_norm", &input)?;
    let mut output = row_major(&input).into_owned();
    norm::rms_norm_in_place(&mut output, size, options)?;
    into_array(input.shape().to_vec(), output)
}

/// `activation(input)`, element-wise.
pub fn activation<D: Dimension>(
    input: ArrayView<'_, f32, D>,
    activation: Activation,
) -> KernelResult<Array<f32, D>> {
    let data = row_major(&input);
    let mut output = vec![0.0; data.len()];
    apply_activation(&data, &mut output, activation)?;
    Array::from_shape_vec(input.raw_dim(), output).map_err(shape_error)
}

/// Applies `activation` to every element of `values`, in place, whatever its layout.
pub fn activation_in_place<D: Dimension>(
    mut values: ArrayViewMut<'_, f32, D>,
    activation: Activation,
) {
    match values.as_slice_memory_order_mut() {
        Some(slice) => apply_activation_in_place(slice, activation),
        None => values.mapv_inplace(|x| activation.apply(x)),
    }
}

/// Softmax along `axis`.
pub fn softmax(input: ArrayViewD<'_, f32>, axis: usize) -> KernelResult<ArrayD<f32>> {
    let mut output = row_major(&input).into_owned();
    softmax_kernel::softmax_in_place(&mut output, input.shape(), axis)?;
    into_array(input.shape().to_vec(), output)
}

/// The rows of `table` (`[num_embeddings, dim]`) named by `ids`, shaped `ids.shape() + [dim]`.
pub fn embedding(
    table: ArrayView2<'_, f32>,
    ids: ArrayViewD<'_, i64>,
) -> KernelResult<ArrayD<f32>> {
    let (num_embeddings, dim) = table.dim();
    let id_values: Cow<'_, [i64]> = match ids.as_slice() {
        Some(slice) => Cow::Borrowed(slice),
        None => Cow::Owned(ids.iter().copied().collect()),
    };
    let mut output = vec![0.0; id_values.len() * dim];
    embedding_kernel::embedding(
        &row_major(&table),
        num_embeddings,
        dim,
        &id_values,
        &mut output,
    )?;
    let mut output_shape = ids.shape().to_vec();
    output_shape.push(dim);
    into_array(output_shape, output)
}

/// `op(lhs, rhs)` with numpy broadcasting.
pub fn binary(
    op: BinaryOp,
    lhs: ArrayViewD<'_, f32>,
    rhs: ArrayViewD<'_, f32>,
) -> KernelResult<ArrayD<f32>> {
    let output_shape = broadcast_shapes(lhs.shape(), rhs.shape())?;
    let mut output = vec![0.0; output_shape.iter().product()];
    let (lhs_data, rhs_data) = (row_major(&lhs), row_major(&rhs));
    elementwise::binary(
        op,
        TensorRef::new(&lhs_data, lhs.shape())?,
        TensorRef::new(&rhs_data, rhs.shape())?,
        &mut output,
    )?;
    into_array(output_shape, output)
}

/// `input.permute(permutation)`, materialised in row-major order.
pub fn permute(input: ArrayViewD<'_, f32>, permutation: &[usize]) -> KernelResult<ArrayD<f32>> {
    let output_shape = shape::permuted_shape(input.shape(), permutation)?;
    let mut output = vec![0.0; input.len()];
    let data = row_major(&input);
    shape::permute(
        TensorRef::new(&data, input.shape())?,
        permutation,
        &mut output,
    )?;
    into_array(output_shape, output)
}

/// `torch.cat(inputs, axis)`.
pub fn concat(inputs: &[ArrayViewD<'_, f32>], axis: usize) -> KernelResult<ArrayD<f32>> {
    let shapes: Vec<&[usize]> = inputs.iter().map(|input| input.shape()).collect();
    let output_shape = shape::concat_output_shape(&shapes, axis)?;
    let datas: Vec<Cow<'_, [f32]>> = inputs.iter().map(|input| row_major(input)).collect();
    let tensors = datas
        .iter()
        .zip(&shapes)
        .map(|(data, shape)| TensorRef::new(data, shape))
        .collect::<KernelResult<Vec<_>>>()?;
    let mut output = vec![0.0; output_shape.iter().product()];
    shape::concat(&tensors, axis, &mut output)?;
    into_array(output_shape, output)
}

/// Indices `start..end` along `axis`.
pub fn slice_axis(
    input: ArrayViewD<'_, f32>,
    axis: usize,
    start: usize,
    end: usize,
) -> KernelResult<ArrayD<f32>> {
    let mut output_shape = input.shape().to_vec();
    let Some(length) = output_shape.get_mut(axis) else {
        return Err(KernelError::AxisOutOfRange {
            operation: "slice",
            axis,
            rank: input.ndim(),
        });
    };
    *length = end.saturating_sub(start);
    let mut output = vec![0.0; output_shape.iter().product()];
    let data = row_major(&input);
    shape::slice_axis(
        TensorRef::new(&data, input.shape())?,
        axis,
        start,
        end,
        &mut output,
    )?;
    into_array(output_shape, output)
}

/// The slice at `index` along `axis`, which disappears.
pub fn select(input: ArrayViewD<'_, f32>, axis: usize, index: usize) -> KernelResult<ArrayD<f32>> {
    if axis >= input.ndim() {
        return Err(KernelError::AxisOutOfRange {
            operation: "select",
            axis,
            rank: input.ndim(),
        });
    }
    let mut output_shape = input.shape().to_vec();
    output_shape.remove(axis);
    let mut output = vec![0.0; output_shape.iter().product()];
    let data = row_major(&input);
    shape::select(
        TensorRef::new(&data, input.shape())?,
        axis,
        index,
        &mut output,
    )?;
    into_array(output_shape, output)
}

/// Rotary position embedding of a `[batch, seq, heads * head_dim]` input.
pub fn rope(
    input: ArrayView3<'_, f32>,
    table: &RopeTable,
    options: &RopeOptions,
) -> KernelResult<Array3<f32>> {
    let [batch, seq, hidden] = shape3(&input);
    let mut output = row_major(&input).into_owned();
    rope_kernel::apply_rope_in_place(&mut output, batch, seq, table, options)?;
    into_array([batch, seq, hidden], output)
}

/// Scaled dot-product attention of `q` (`[batch, query_len, n_heads * head_dim]`) over `k`
/// and `v` (`[batch, key_len, n_kv_heads * head_dim]`).
pub fn attention(
    q: ArrayView3<'_, f32>,
    k: ArrayView3<'_, f32>,
    v: ArrayView3<'_, f32>,
    n_heads: usize,
    n_kv_heads: usize,
    options: &AttentionOptions<'_>,
) -> KernelResult<Array3<f32>> {
    let [batch, query_len, hidden] = shape3(&q);
    let [_, key_len, _] = shape3(&k);
    if n_heads == 0 || !hidden.is_multiple_of(n_heads) {
        return Err(invalid_parameter(
            "attention",
            format!("{hidden} features do not split into {n_heads} heads"),
        ));
    }
    let shape = AttentionShape {
        batch,
        query_len,
        key_len,
        n_heads,
        n_kv_heads,
        head_dim: hidden / n_heads,
    };
    let mut output = vec![0.0; q.len()];
    scaled_dot_product_attention(
        &row_major(&q),
        &row_major(&k),
        &row_major(&v),
        &shape,
        options,
        &mut output,
    )?;
    into_array([batch, query_len, hidden], output)
}

/// The elements of `array` in row-major order, borrowed when already laid out that way.
fn row_major<'a, D: Dimension>(array: &'a ArrayView<'_, f32, D>) -> Cow<'a, [f32]> {
    match array.as_slice() {
        Some(slice) => Cow::Borrowed(slice),
        None => Cow::Owned(array.iter().copied().collect()),
    }
}

fn into_array<Shape: ndarray::ShapeBuilder>(
    shape: Shape,
    data: Vec<f32>,
) -> KernelResult<Array<f32, Shape::Dim>> {
    Array::from_shape_vec(shape, data).map_err(shape_error)
}

fn shape_error(error: ndarray::ShapeError) -> KernelError {
    shape_mismatch("ndarray", error.to_string())
}

fn shape4(array: &ArrayView4<'_, f32>) -> [usize; 4] {
    let (n, c, h, w) = array.dim();
    [n, c, h, w]
}

fn shape3(array: &ArrayView3<'_, f32>) -> [usize; 3] {
    let (n, c, l) = array.dim();
    [n, c, l]
}

fn last_axis_length(operation: &'static str, input: &ArrayViewD<'_, f32>) -> KernelResult<usize> {
    input
        .shape()
        .last()
        .copied()
        .ok_or_else(|| shape_mismatch(operation, "the input is a scalar"))
}

/// The signature of the global pooling kernels.
type GlobalPoolKernel = fn(&[f32], &[usize], &mut [f32]) -> KernelResult<()>;

fn global_pool(input: ArrayViewD<'_, f32>, kernel: GlobalPoolKernel) -> KernelResult<Array2<f32>> {
    let shape = input.shape();
    if shape.len() < 2 {
        return Err(shape_mismatch(
            "global_pool",
            format!("the input must be [N, C, *], got {shape:?}"),
        ));
    }
    let mut output = vec![0.0; shape[0] * shape[1]];
    kernel(&row_major(&input), shape, &mut output)?;
    into_array((shape[0], shape[1]), output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array, Axis, array};

    #[test]
    fn linear_over_batched_input() {
        let layer = PackedLinear::new(
            &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0],
            3,
            2,
            Some(&[0.5, 0.0, -1.0]),
        )
        .unwrap();
        let input = Array::from_shape_vec((2, 1, 2), vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let output = linear(input.view().into_dyn(), &layer).unwrap();
        assert_eq!(output.shape(), &[2, 1, 3]);
        assert_eq!(
            output.iter().copied().collect::<Vec<_>>(),
            [1.5, 2.0, 2.0, 3.5, 4.0, 6.0]
        );
        let wrong = Array::zeros((2, 3)).into_dyn();
        assert!(linear(wrong.view(), &layer).is_err());
    }

    #[test]
    fn non_contiguous_views_are_handled() {
        let a = array![[1.0f32, 2.0], [3.0, 4.0], [5.0, 6.0]];
        let transposed = a.t();
        let product = matmul(transposed.into_dyn(), a.view().into_dyn()).unwrap();
        let expected = transposed.dot(&a);
        assert_eq!(product, expected.into_dyn());
        let softened = softmax(a.t().into_dyn(), 1).unwrap();
        assert!((softened.sum_axis(Axis(1))[0] - 1.0).abs() < 1e-6);
        let mut values = a.clone();
        activation_in_place(values.view_mut().reversed_axes(), Activation::Relu6);
        assert_eq!(values[[2, 1]], 6.0);
    }

    #[test]
    fn shape_ops_and_errors() {
        let a = Array::from_shape_vec((2, 3), (0..6).map(|x| x as f32).collect())
            .unwrap()
            .into_dyn();
        assert_eq!(permute(a.view(), &[1, 0]).unwrap(), a.t().to_owned());
        assert_eq!(
            select(a.view(), 1, 2).unwrap().into_raw_vec_and_offset().0,
            [2.0, 5.0]
        );
        assert_eq!(slice_axis(a.view(), 1, 1, 3).unwrap().shape(), &[2, 2]);
        assert!(slice_axis(a.view(), 2, 0, 1).is_err());
        assert_eq!(concat(&[a.view(), a.view()], 0).unwrap().shape(), &[4, 3]);
        let table = array![[1.0f32, 2.0], [3.0, 4.0]];
        let ids = array![[1i64, 0, 1]].into_dyn();
        assert_eq!(
            embedding(table.view(), ids.view()).unwrap().shape(),
            &[1, 3, 2]
        );
        let bad_ids = array![2i64].into_dyn();
        assert!(matches!(
            embedding(table.view(), bad_ids.view()),
            Err(KernelError::EmbeddingIdOutOfRange { id: 2, .. })
        ));
        let sum = binary(
            BinaryOp::Add,
            a.view(),
            array![10.0f32, 20.0, 30.0].into_dyn().view(),
        )
        .unwrap();
        assert_eq!(sum[[1, 2]], 35.0);
        assert!(
            binary(
                BinaryOp::Add,
                a.view(),
                array![1.0f32, 2.0].into_dyn().view()
            )
            .is_err()
        );
    }
}
