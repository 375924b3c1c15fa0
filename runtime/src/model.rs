//! Support for generated code: the activation arena, input checks and the error type at a
//! generated model's boundary.
//!
//! Generated `forward` functions keep every intermediate tensor in one arena per element type,
//! at offsets the compiler planned. [`split_mut`] hands a kernel its output range mutably and its
//! input ranges immutably; the compiler guarantees they are disjoint, and this checks it.

use ndarray::{ArrayView, Dimension, IntoDimension};

use crate::KernelError;
use crate::weights::{WeightProblem, WeightSpec, WeightsError};

/// Why a generated model could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error("the input `{name}` must have shape {expected:?}, but it has shape {found:?}")]
    InputShape {
        name: &'static str,
        expected: &'static [usize],
        found: Vec<usize>,
    },
    #[error("layer `{layer}` failed: {source}")]
    Kernel {
        layer: &'static str,
        source: KernelError,
    },
    #[error(transparent)]
    KvCache(#[from] crate::kv_cache::KvCacheError),
    #[error("the prompt is empty: a decoder needs at least one token to predict the next")]
    EmptyPrompt,
    #[error("the decoder has no source: call `encode` before `decode`, `prefill` or `generate`")]
    NotEncoded,
}

/// The output range of `arena` mutably and the input ranges immutably, for one kernel call.
/// Ranges are `(start, end)` element offsets.
///
/// Panics if a range is out of bounds or an input overlaps the output: the compiler's memory plan
/// never does that, so it would be a compiler bug, not a user error.
pub fn split_mut<T, const N: usize>(
    arena: &mut [T],
    output: (usize, usize),
    inputs: [(usize, usize); N],
) -> (&mut [T], [&[T]; N]) {
    let in_bounds = |(start, end): (usize, usize)| start <= end && end <= arena.len();
    assert!(
        in_bounds(output),
        "output range {output:?} is outside the arena"
    );
    for input in inputs {
        assert!(
            in_bounds(input),
            "input range {input:?} is outside the arena"
        );
        assert!(
            input.1 <= output.0 || output.1 <= input.0,
            "input range {input:?} overlaps output range {output:?}"
        );
    }
    let base = arena.as_mut_ptr();
    // SAFETY: every range lies inside `arena` (checked above), so the pointers stay in bounds of
    // one allocation. The output range is disjoint from every input range (checked above), so the
    // one mutable slice aliases none of the shared ones; the shared slices may overlap each other,
    // which shared borrows allow. All borrows live as long as the exclusive borrow of `arena`.
    unsafe {
        let output_slice = std::slice::from_raw_parts_mut(base.add(output.0), output.1 - output.0);
        let input_slices = inputs.map(|(start, end)| {
            std::slice::from_raw_parts(base.add(start).cast_const(), end - start)
        });
        (output_slice, input_slices)
    }
}

/// Checks an input's shape and copies it, in row-major order, into its arena range.
pub fn copy_input<T: Copy, D: Dimension>(
    name: &'static str,
    input: ArrayView<'_, T, D>,
    expected: &'static [usize],
    destination: &mut [T],
) -> Result<(), ModelError> {
    if input.shape() != expected {
        return Err(ModelError::InputShape {
            name,
            expected,
            found: input.shape().to_vec(),
        });
    }
    match input.as_slice() {
        Some(contiguous) => destination.copy_from_slice(contiguous),
        None => destination
            .iter_mut()
            .zip(input.iter())
            .for_each(|(slot, value)| *slot = *value),
    }
    Ok(())
}

/// Turns a kernel error into a [`ModelError`] naming the layer: `.map_err(at("fc1"))?`.
pub fn at(layer: &'static str) -> impl FnOnce(KernelError) -> ModelError {
    move |source| ModelError::Kernel { layer, source }
}

/// Checks that `weights` has one tensor of the right size per spec.
pub fn check_weights(weights: &[Vec<f32>], specs: &[WeightSpec<'_>]) -> Result<(), ModelError> {
    let mut problems = Vec::new();
    for (index, spec) in specs.iter().enumerate() {
        let expected: usize = spec.shape.iter().product();
        match weights.get(index) {
            None => problems.push(WeightProblem::Missing {
                name: spec.name.to_string(),
                shape: spec.shape.to_vec(),
            }),
            Some(tensor) if tensor.len() != expected => problems.push(WeightProblem::Shape {
                name: spec.name.to_string(),
                expected: spec.shape.to_vec(),
                found: vec![tensor.len()],
            }),
            Some(_) => {}
        }
    }
    for (index, tensor) in weights.iter().enumerate().skip(specs.len()) {
        problems.push(WeightProblem::Unexpected {
            name: format!("#{index}"),
            shape: vec![tensor.len()],
        });
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ModelError::Weights(WeightsError::Mismatch {
            path: "the weights given".to_string(),
            problems,
        }))
    }
}

/// A view of an output in the arena.
pub fn output_view<T, D: IntoDimension>(data: &[T], shape: D) -> ArrayView<'_, T, D::Dim> {
    ArrayView::from_shape(shape.into_dimension(), data)
        .expect("the memory plan sizes every output by its shape")
}

/// `output = input * scale + shift`, elementwise.
pub fn affine(input: &[f32], output: &mut [f32], scale: f32, shift: f32) {
    for (out, &value) in output.iter_mut().zip(input) {
        *out = value * scale + shift;
    }
}

/// `values = values * scale + shift`, elementwise, in place.
pub fn affine_in_place(values: &mut [f32], scale: f32, shift: f32) {
    for value in values {
        *value = *value * scale + shift;
    }
}

/// The most axes the data-movement helpers handle.
pub const MAX_RANK: usize = 8;

/// `output = input.permute(permutation)` for a row-major `input` of `shape`, any element type,
/// without allocating.
pub fn permute<T: Copy>(
    input: &[T],
    shape: &[usize],
    permutation: &[usize],
    output: &mut [T],
) -> Result<(), KernelError> {
    let rank = shape.len();
    let invalid = rank > MAX_RANK
        || permutation.len() != rank
        || permutation.iter().any(|&axis| axis >= rank);
    let count: usize = shape.iter().product();
    if invalid || input.len() != count || output.len() != count {
        return Err(KernelError::InvalidParameter {
            operation: "permute",
            detail: format!("permutation {permutation:?} of shape {shape:?}"),
        });
    }
    if let Some((rows, cols)) = batched_transpose(shape, permutation) {
        for (input, output) in input
            .chunks_exact(rows * cols)
            .zip(output.chunks_exact_mut(rows * cols))
        {
            transpose_tiled(input, rows, cols, output);
        }
        return Ok(());
    }
    let mut input_strides = [0usize; MAX_RANK];
    let mut stride = 1;
    for axis in (0..rank).rev() {
        input_strides[axis] = stride;
        stride *= shape[axis];
    }
    let mut output_shape = [1usize; MAX_RANK];
    let mut strides = [0usize; MAX_RANK];
    for (axis, &source) in permutation.iter().enumerate() {
        output_shape[axis] = shape[source];
        strides[axis] = input_strides[source];
    }
    let mut index = [0usize; MAX_RANK];
    for slot in output.iter_mut() {
        let offset: usize = (0..rank).map(|axis| index[axis] * strides[axis]).sum();
        *slot = input[offset];
        for axis in (0..rank).rev() {
            index[axis] += 1;
            if index[axis] < output_shape[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
    Ok(())
}

/// Whether `permutation` keeps leading axes and swaps two blocks of the others, as the layout
/// changes NCHW <-> NHWC do (`[0, 2, 3, 1]`, `[0, 3, 1, 2]`): then it is a batch of 2-D
/// transposes, returned as the `(rows, cols)` of each input matrix.
fn batched_transpose(shape: &[usize], permutation: &[usize]) -> Option<(usize, usize)> {
    let kept = permutation
        .iter()
        .enumerate()
        .take_while(|&(axis, &source)| axis == source)
        .count();
    let rest = &permutation[kept..];
    // The rest is a rotation: `split..rank` followed by `kept..split`.
    let split = *rest.first()?;
    let rotated = (split..shape.len()).chain(kept..split);
    if split == kept || !rest.iter().copied().eq(rotated) {
        return None;
    }
    let product = |axes: std::ops::Range<usize>| shape[axes].iter().product::<usize>();
    Some((product(kept..split), product(split..shape.len())))
}

/// `output[c][r] = input[r][c]` for a row-major `rows x cols` input, in square tiles so that
/// both sides stream through the cache.
fn transpose_tiled<T: Copy>(input: &[T], rows: usize, cols: usize, output: &mut [T]) {
    const TILE: usize = 16;
    for row_start in (0..rows).step_by(TILE) {
        let row_end = (row_start + TILE).min(rows);
        for col_start in (0..cols).step_by(TILE) {
            let col_end = (col_start + TILE).min(cols);
            for col in col_start..col_end {
                let output_row = &mut output[col * rows..][..rows];
                for row in row_start..row_end {
                    output_row[row] = input[row * cols + col];
                }
            }
        }
    }
}

/// Joins row-major `inputs` (data and shape) along `axis`, any element type, without allocating.
pub fn concat<T: Copy>(
    inputs: &[(&[T], &[usize])],
    axis: usize,
    output: &mut [T],
) -> Result<(), KernelError> {
    let Some(&(_, first_shape)) = inputs.first() else {
        return Err(KernelError::InvalidParameter {
            operation: "concat",
            detail: "no inputs".to_string(),
        });
    };
    if axis >= first_shape.len() {
        return Err(KernelError::AxisOutOfRange {
            operation: "concat",
            axis,
            rank: first_shape.len(),
        });
    }
    let outer: usize = first_shape[..axis].iter().product();
    let total: usize = inputs.iter().map(|(data, _)| data.len()).sum();
    if output.len() != total {
        return Err(KernelError::BufferLength {
            operation: "concat",
            buffer: "output",
            expected: total,
            actual: output.len(),
        });
    }
    let mut position = 0;
    for outer_index in 0..outer {
        for (data, _) in inputs {
            let block = data.len() / outer.max(1);
            output[position..position + block]
                .copy_from_slice(&data[outer_index * block..(outer_index + 1) * block]);
            position += block;
        }
    }
    Ok(())
}

/// Keeps `start..end` of `axis` of a row-major `input` of `shape`, any element type.
pub fn slice<T: Copy>(
    input: &[T],
    shape: &[usize],
    axis: usize,
    start: usize,
    end: usize,
    output: &mut [T],
) -> Result<(), KernelError> {
    if axis >= shape.len() || start > end || end > shape[axis] {
        return Err(KernelError::InvalidParameter {
            operation: "slice",
            detail: format!("{start}..{end} of axis {axis} of {shape:?}"),
        });
    }
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let (block, kept) = (shape[axis] * inner, (end - start) * inner);
    if output.len() != outer * kept || input.len() != outer * block {
        return Err(KernelError::BufferLength {
            operation: "slice",
            buffer: "output",
            expected: outer * kept,
            actual: output.len(),
        });
    }
    for outer_index in 0..outer {
        let source = &input[outer_index * block + start * inner..][..kept];
        output[outer_index * kept..][..kept].copy_from_slice(source);
    }
    Ok(())
}

/// A sparse attention pattern, as generated code describes it: which (query, key) position pairs
/// attention may look at before the causal mask. A pair is kept if any present component keeps
/// it; with no component the pattern is dense. This is the same definition as the compiler's.
#[derive(Clone, Copy, Debug)]
pub struct SparsePattern<'a> {
    /// Sliding window: keeps `|i - j| < window * dilation` with `(i - j) % dilation == 0`.
    pub window: Option<usize>,
    pub dilation: usize,
    /// Positions that see and are seen by every position.
    pub global_tokens: &'a [usize],
    /// Keeps `|i - j| < stride` or `(i - j) % stride == 0`.
    pub strided: Option<usize>,
    pub block_size: usize,
    /// A square row-major block mask; empty when there is none.
    pub block_mask: &'a [bool],
}

impl SparsePattern<'_> {
    /// Whether query position `query` may attend to key position `key`.
    pub fn allows(&self, query: usize, key: usize) -> bool {
        if self.window.is_none()
            && self.global_tokens.is_empty()
            && self.strided.is_none()
            && self.block_mask.is_empty()
        {
            return true;
        }
        let distance = query.abs_diff(key);
        let in_window = self.window.is_some_and(|window| {
            let dilation = self.dilation.max(1);
            distance < window.saturating_mul(dilation) && distance.is_multiple_of(dilation)
        });
        let global = self.global_tokens.contains(&query) || self.global_tokens.contains(&key);
        let strided = self
            .strided
            .is_some_and(|stride| distance < stride || distance.is_multiple_of(stride));
        let blocks_per_row = self.block_mask.len().isqrt();
        let (row, column) = (query / self.block_size.max(1), key / self.block_size.max(1));
        let in_block = row < blocks_per_row
            && column < blocks_per_row
            && self.block_mask[row * blocks_per_row + column];
        in_window || global || strided || in_block
    }
}

/// Folds an inference batch norm that follows a conv or linear layer into that layer's weights:
/// each output channel's row of `weight` is scaled by `bn_weight / sqrt(variance + eps)` and the
/// bias becomes `(bias - mean) * scale + bn_bias`. Runs once, when a model is built.
pub struct FoldedBatchNorm {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// The parameters of a batch norm to fold; see [`fold_batch_norm`].
pub struct BatchNormToFold<'a> {
    pub weight: &'a [f32],
    pub bias: &'a [f32],
    pub mean: &'a [f32],
    pub variance: &'a [f32],
    pub eps: f32,
}

/// Folds `batch_norm` into a layer with `weight` (`out_channels` rows) and optional `bias`.
pub fn fold_batch_norm(
    weight: &[f32],
    bias: Option<&[f32]>,
    batch_norm: &BatchNormToFold<'_>,
) -> Result<FoldedBatchNorm, KernelError> {
    let channels = batch_norm.mean.len();
    let lengths_agree = channels > 0
        && [
            batch_norm.weight.len(),
            batch_norm.bias.len(),
            batch_norm.variance.len(),
        ]
        .iter()
        .all(|&length| length == channels)
        && weight.len().is_multiple_of(channels)
        && bias.is_none_or(|bias| bias.len() == channels);
    if !lengths_agree {
        return Err(KernelError::InvalidParameter {
            operation: "fold_batch_norm",
            detail: format!(
                "{channels} channels do not match a weight of {} values",
                weight.len()
            ),
        });
    }
    let row = weight.len() / channels;
    let mut folded_weight = weight.to_vec();
    let mut folded_bias = vec![0.0; channels];
    for channel in 0..channels {
        let scale =
            batch_norm.weight[channel] / (batch_norm.variance[channel] + batch_norm.eps).sqrt();
        folded_weight[channel * row..(channel + 1) * row]
            .iter_mut()
            .for_each(|value| *value *= scale);
        let bias = bias.map_or(0.0, |bias| bias[channel]);
        folded_bias[channel] = (bias - batch_norm.mean[channel]) * scale + batch_norm.bias[channel];
    }
    Ok(FoldedBatchNorm {
        weight: folded_weight,
        bias: folded_bias,
    })
}

/// One step of a fused chain of elementwise operations.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ElementwiseStep {
    Activation(crate::kernels::activation::Activation),
    /// `x * scale + shift`.
    Affine {
        scale: f32,
        shift: f32,
    },
}

/// Applies `steps` in order to every element of `values`, in place.
pub fn elementwise_chain_in_place(values: &mut [f32], steps: &[ElementwiseStep]) {
    for value in values {
        *value = steps.iter().fold(*value, |value, step| match step {
            ElementwiseStep::Activation(activation) => activation.apply(value),
            ElementwiseStep::Affine { scale, shift } => value * scale + shift,
        });
    }
}

/// Applies `steps` in order to every element, in one pass over memory.
pub fn elementwise_chain(
    input: &[f32],
    output: &mut [f32],
    steps: &[ElementwiseStep],
) -> Result<(), KernelError> {
    if input.len() != output.len() {
        return Err(KernelError::BufferLength {
            operation: "elementwise",
            buffer: "output",
            expected: input.len(),
            actual: output.len(),
        });
    }
    for (out, &value) in output.iter_mut().zip(input) {
        *out = steps.iter().fold(value, |value, step| match step {
            ElementwiseStep::Activation(activation) => activation.apply(value),
            ElementwiseStep::Affine { scale, shift } => value * scale + shift,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_movement_matches_ndarray() {
        let data: Vec<i64> = (0..24).collect();
        let array = ndarray::ArrayD::from_shape_vec(vec![2, 3, 4], data.clone()).unwrap();
        let mut output = vec![0i64; 24];
        permute(&data, &[2, 3, 4], &[2, 0, 1], &mut output).unwrap();
        let expected: Vec<i64> = array
            .view()
            .permuted_axes(vec![2, 0, 1])
            .iter()
            .copied()
            .collect();
        assert_eq!(output, expected);

        let mut output = vec![0i64; 16];
        slice(&data, &[2, 3, 4], 1, 1, 3, &mut output).unwrap();
        let expected: Vec<i64> = array
            .slice_axis(ndarray::Axis(1), (1..3).into())
            .iter()
            .copied()
            .collect();
        assert_eq!(output, expected);

        let other: Vec<i64> = (100..108).collect();
        let mut output = vec![0i64; 32];
        concat(&[(&data, &[2, 3, 4]), (&other, &[2, 1, 4])], 1, &mut output).unwrap();
        let other_array = ndarray::ArrayD::from_shape_vec(vec![2, 1, 4], other).unwrap();
        let expected =
            ndarray::concatenate(ndarray::Axis(1), &[array.view(), other_array.view()]).unwrap();
        assert_eq!(output, expected.iter().copied().collect::<Vec<_>>());
    }

    #[test]
    fn layout_changes_match_ndarray() {
        // Batched 2-D transposes (the fast path), on sizes that are not multiples of its tile,
        // and a permutation that is not one.
        let shapes = [[2, 17, 5, 3], [1, 3, 33, 19], [3, 1, 1, 40]];
        let permutations: [&[usize]; 4] =
            [&[0, 2, 3, 1], &[0, 3, 1, 2], &[1, 2, 3, 0], &[0, 2, 1, 3]];
        for shape in shapes {
            let count: usize = shape.iter().product();
            let data: Vec<i64> = (0..count as i64).collect();
            let array = ndarray::ArrayD::from_shape_vec(shape.to_vec(), data.clone()).unwrap();
            for permutation in permutations {
                let mut output = vec![0i64; count];
                permute(&data, &shape, permutation, &mut output).unwrap();
                let expected: Vec<i64> = array
                    .view()
                    .permuted_axes(permutation.to_vec())
                    .iter()
                    .copied()
                    .collect();
                assert_eq!(output, expected, "{shape:?} by {permutation:?}");
            }
        }
    }

    #[test]
    fn split_gives_disjoint_views() {
        let mut arena: Vec<f32> = (0..10).map(|i| i as f32).collect();
        let (output, [a, b]) = split_mut(&mut arena, (6, 9), [(0, 3), (2, 5)]);
        assert_eq!(a, [0.0, 1.0, 2.0]);
        assert_eq!(b, [2.0, 3.0, 4.0]);
        output.copy_from_slice(&[7.0, 7.0, 7.0]);
        assert_eq!(arena[6..9], [7.0, 7.0, 7.0]);
        // Empty and edge ranges.
        let (output, []) = split_mut(&mut arena, (10, 10), []);
        assert!(output.is_empty());
        let (output, [input]) = split_mut(&mut arena, (0, 1), [(1, 10)]);
        assert_eq!((output.len(), input.len()), (1, 9));
    }

    #[test]
    fn split_rejects_overlap_and_out_of_bounds_ranges() {
        for (output, input) in [
            ((2, 5), (4, 6)),
            ((0, 3), (0, 1)),
            ((6, 9), (0, 1)),
            ((0, 1), (7, 9)),
        ] {
            let result = std::panic::catch_unwind(move || {
                let mut arena = vec![0i64; 8];
                let _ = split_mut(&mut arena, output, [input]);
            });
            assert!(result.is_err());
        }
    }

    #[test]
    fn copy_input_checks_the_shape_and_handles_strides() {
        let data = ndarray::Array2::from_shape_fn((2, 3), |(i, j)| (i * 3 + j) as f32);
        let mut destination = [0.0; 6];
        copy_input("x", data.t(), &[3, 2], &mut destination).unwrap();
        assert_eq!(destination, [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        let error = copy_input("x", data.view(), &[3, 2], &mut destination).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the input `x` must have shape [3, 2], but it has shape [2, 3]"
        );
    }
}
