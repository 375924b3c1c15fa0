//! `torch.matmul`: batched products `[.., m, k] x [.., k, n]` with numpy broadcasting of the
//! batch axes, and PyTorch's rules for one-dimensional operands.
//!
//! The plan of a call lives in fixed-size arrays, so `matmul` itself never allocates (the GEMM
//! reuses per-thread packing buffers after warm-up); operands of more than `MAX_RANK` (8) axes
//! are rejected.

use crate::error::{KernelResult, check_length, checked_element_count, shape_mismatch};
use crate::kernels::elementwise::{broadcast_dims, broadcast_strides};
use crate::kernels::gemm::{GemmOptions, Lhs, MatrixRef, Rhs, gemm, gemm_sequential};
use crate::tensor::{Dims, TensorRef, check_rank};
use crate::threading;

/// The shape of `matmul(a, b)`: the broadcast batch axes, then `m` (unless `a` is a vector)
/// and `n` (unless `b` is a vector).
pub fn matmul_output_shape(a_shape: &[usize], b_shape: &[usize]) -> KernelResult<Vec<usize>> {
    Ok(MatmulPlan::new(a_shape, b_shape)?.output_shape.to_vec())
}

/// `output = a @ b` with PyTorch's semantics: a vector operand gains a unit axis (in front for
/// `a`, behind for `b`) that the result then drops, and the batch axes broadcast. `output` must
/// hold `matmul_output_shape(a, b)` elements.
pub fn matmul(a: TensorRef<'_>, b: TensorRef<'_>, output: &mut [f32]) -> KernelResult<()> {
    let plan = MatmulPlan::new(a.shape(), b.shape())?;
    let output_length = checked_element_count("matmul", &plan.output_shape)?;
    check_length("matmul", "output", output_length, output.len())?;
    let MatmulPlan {
        rows,
        depth,
        cols,
        batch_shape,
        a_batch_strides,
        b_batch_strides,
        ..
    } = plan;
    let batch_count: usize = batch_shape.iter().product();
    let (a_batch_strides, b_batch_strides) = (&a_batch_strides[..], &b_batch_strides[..]);
    if batch_count == 0 || rows == 0 || cols == 0 {
        return Ok(());
    }
    let a_matrix_size = rows * depth;
    let b_matrix_size = depth * cols;
    // When B is the same matrix for every batch and A is dense, the batches stack into one
    // tall product, which packs B once.
    if b_batch_strides.iter().all(|&stride| stride == 0)
        && a_batch_strides == &dense_strides(&batch_shape, a_matrix_size)[..]
    {
        let a = MatrixRef::row_major(a.data(), batch_count * rows, depth)?;
        let b = MatrixRef::row_major(&b.data()[..b_matrix_size], depth, cols)?;
        return gemm(
            Lhs::Matrix(a),
            Rhs::Matrix(b),
            output,
            cols,
            &GemmOptions::default(),
        );
    }
    let batch_offsets = |batch: usize| {
        let mut remainder = batch;
        let (mut a_offset, mut b_offset) = (0, 0);
        for axis in (0..batch_shape.len()).rev() {
            let index = remainder % batch_shape[axis];
            remainder /= batch_shape[axis];
            a_offset += index * a_batch_strides[axis];
            b_offset += index * b_batch_strides[axis];
        }
        (a_offset, b_offset)
    };
    let run_batch = |batch: usize, output: &mut [f32], parallel: bool| -> KernelResult<()> {
        let (a_offset, b_offset) = batch_offsets(batch);
        let a = MatrixRef::row_major(&a.data()[a_offset..][..a_matrix_size], rows, depth)?;
        let b = MatrixRef::row_major(&b.data()[b_offset..][..b_matrix_size], depth, cols)?;
        let options = GemmOptions::default();
        if parallel {
            gemm(Lhs::Matrix(a), Rhs::Matrix(b), output, cols, &options)
        } else {
            gemm_sequential(Lhs::Matrix(a), Rhs::Matrix(b), output, cols, &options)
        }
    };
    let output_matrix_size = rows * cols;
    // Many small products run one per task; few large ones run one after another, each
    // spread over the threads by the GEMM itself.
    if batch_count >= threading::parallel_width() && rows * cols * depth < (1 << 20) {
        let failure = threading::FirstError::new();
        threading::run_chunks_mut(output, output_matrix_size, |batch, output| {
            failure.record(run_batch(batch, output, false));
        });
        return failure.into_result();
    }
    for (batch, output) in output.chunks_exact_mut(output_matrix_size).enumerate() {
        run_batch(batch, output, true)?;
    }
    Ok(())
}

/// The shapes of one `matmul`, with vectors already promoted to matrices.
struct MatmulPlan {
    rows: usize,
    depth: usize,
    cols: usize,
    batch_shape: Dims,
    /// Element strides of each operand's matrices along the broadcast batch axes (zero where
    /// the operand is broadcast).
    a_batch_strides: Dims,
    b_batch_strides: Dims,
    output_shape: Dims,
}

impl MatmulPlan {
    fn new(a_shape: &[usize], b_shape: &[usize]) -> KernelResult<Self> {
        if a_shape.is_empty() || b_shape.is_empty() {
            return Err(shape_mismatch(
                "matmul",
                "both operands need at least one dimension",
            ));
        }
        check_rank("matmul", a_shape.len())?;
        check_rank("matmul", b_shape.len())?;
        let a_is_vector = a_shape.len() == 1;
        let b_is_vector = b_shape.len() == 1;
        let (a_batch, rows, depth) = match a_shape {
            &[depth] => (&[][..], 1, depth),
            [batch @ .., rows, depth] => (batch, *rows, *depth),
            [] => unreachable!("MatmulPlan::new: empty shapes were rejected above"),
        };
        let (b_batch, b_depth, cols) = match b_shape {
            &[depth] => (&[][..], depth, 1),
            [batch @ .., depth, cols] => (batch, *depth, *cols),
            [] => unreachable!("MatmulPlan::new: empty shapes were rejected above"),
        };
        if depth != b_depth {
            return Err(shape_mismatch(
                "matmul",
                format!("{a_shape:?} and {b_shape:?} disagree on the shared dimension"),
            ));
        }
        let batch_shape = broadcast_dims("matmul", a_batch, b_batch).map_err(|_| {
            shape_mismatch(
                "matmul",
                format!("the batch axes of {a_shape:?} and {b_shape:?} do not broadcast"),
            )
        })?;
        let a_batch_strides = broadcast_strides(a_batch, &batch_shape, rows * depth);
        let b_batch_strides = broadcast_strides(b_batch, &batch_shape, depth * cols);
        let mut output_shape = batch_shape;
        if !a_is_vector {
            output_shape.push(rows);
        }
        if !b_is_vector {
            output_shape.push(cols);
        }
        Ok(Self {
            rows,
            depth,
            cols,
            batch_shape,
            a_batch_strides,
            b_batch_strides,
            output_shape,
        })
    }
}

/// Batch strides of a dense operand that has every batch axis, for comparison (length-1 axes
/// get stride 0 either way, so the comparison is fair).
fn dense_strides(batch_shape: &[usize], matrix_size: usize) -> Dims {
    broadcast_strides(batch_shape, batch_shape, matrix_size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference;
    use crate::test_support::{assert_close, values};
    use proptest::prelude::*;

    /// Random operand shapes that broadcast: each batch axis is shared, or 1 on one side; now
    /// and then one side lacks some batch axes or is a vector.
    fn shapes() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
        (
            prop::collection::vec((1..4usize, 0..3u8), 0..3),
            (1..9usize, 1..13usize, 1..9usize),
            0..3u8,
            0..4u8,
        )
            .prop_map(|(batch, (rows, depth, cols), dropped_axes, vectors)| {
                let mut a_batch: Vec<usize> = batch
                    .iter()
                    .map(|&(length, which)| if which == 1 { 1 } else { length })
                    .collect();
                let mut b_batch: Vec<usize> = batch
                    .iter()
                    .map(|&(length, which)| if which == 2 { 1 } else { length })
                    .collect();
                if dropped_axes == 1 {
                    b_batch.clear();
                } else if dropped_axes == 2 && !a_batch.is_empty() {
                    a_batch.remove(0);
                }
                let a_shape = if vectors == 1 || vectors == 3 {
                    vec![depth]
                } else {
                    [a_batch, vec![rows, depth]].concat()
                };
                let b_shape = if vectors == 2 || vectors == 3 {
                    vec![depth]
                } else {
                    [b_batch, vec![depth, cols]].concat()
                };
                (a_shape, b_shape)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn matmul_matches_reference(
            ((a_shape, b_shape), seed) in (shapes(), values(1))
        ) {
            let a_length: usize = a_shape.iter().product();
            let b_length: usize = b_shape.iter().product();
            let a: Vec<f32> = (0..a_length).map(|i| ((i * 7 + 3) % 11) as f32 / 5.0 - 1.0 + seed[0]).collect();
            let b: Vec<f32> = (0..b_length).map(|i| ((i * 5 + 1) % 13) as f32 / 6.0 - 1.0).collect();
            let (expected, expected_shape) = reference::matmul(&a, &a_shape, &b, &b_shape);
            let shape = matmul_output_shape(&a_shape, &b_shape).unwrap();
            prop_assert_eq!(&shape, &expected_shape);
            let mut output = vec![0.0; expected.len()];
            matmul(
                TensorRef::new(&a, &a_shape).unwrap(),
                TensorRef::new(&b, &b_shape).unwrap(),
                &mut output,
            )
            .unwrap();
            assert_close(&output, &expected, 1e-4);
        }
    }

    #[test]
    fn vector_rules_follow_pytorch() {
        assert_eq!(
            matmul_output_shape(&[3], &[3]).unwrap(),
            Vec::<usize>::new()
        );
        assert_eq!(matmul_output_shape(&[2, 3], &[3]).unwrap(), vec![2]);
        assert_eq!(matmul_output_shape(&[3], &[5, 3, 4]).unwrap(), vec![5, 4]);
        assert_eq!(
            matmul_output_shape(&[7, 1, 2, 3], &[4, 3, 5]).unwrap(),
            vec![7, 4, 2, 5]
        );
        assert!(matmul_output_shape(&[2, 3], &[4, 5]).is_err());
        assert!(matmul_output_shape(&[2, 2, 3], &[3, 3, 5]).is_err());
        assert!(matmul_output_shape(&[], &[3]).is_err());
        // Up to eight axes per operand; nine is an error, not a panic.
        assert_eq!(
            matmul_output_shape(&[2, 1, 1, 1, 1, 1, 4, 3], &[3, 5]).unwrap(),
            vec![2, 1, 1, 1, 1, 1, 4, 5]
        );
        assert!(matmul_output_shape(&[1, 1, 1, 1, 1, 1, 1, 4, 3], &[3, 5]).is_err());
    }
}
