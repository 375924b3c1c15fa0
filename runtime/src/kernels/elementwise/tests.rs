use super::*;
use crate::reference;
use crate::test_support::{assert_close, values};
use proptest::prelude::*;

fn operations() -> impl Strategy<Value = BinaryOp> {
    prop_oneof![
        Just(BinaryOp::Add),
        Just(BinaryOp::Sub),
        Just(BinaryOp::Mul),
        Just(BinaryOp::Div),
        Just(BinaryOp::Pow),
    ]
}

/// Two shapes that broadcast: a common shape with some axes set to 1 on one side and, now and
/// then, leading axes dropped from one side.
fn broadcast_pairs() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    (
        prop::collection::vec((1..6usize, 0..4u8), 0..5),
        0..3usize,
        any::<bool>(),
    )
        .prop_map(|(axes, dropped, drop_from_lhs)| {
            let mut lhs: Vec<usize> = axes
                .iter()
                .map(|&(length, which)| if which == 1 { 1 } else { length })
                .collect();
            let mut rhs: Vec<usize> = axes
                .iter()
                .map(|&(length, which)| if which == 2 { 1 } else { length })
                .collect();
            let side = if drop_from_lhs { &mut lhs } else { &mut rhs };
            let dropped = dropped.min(side.len());
            side.drain(..dropped);
            (lhs, rhs)
        })
}

fn ramp(length: usize, seed: f32) -> Vec<f32> {
    (0..length)
        .map(|index| ((index * 7 + 3) % 17) as f32 / 4.0 - 2.1 + seed)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn broadcasting_matches_reference(
        (lhs_shape, rhs_shape) in broadcast_pairs(),
        op in operations(),
        seed in -1.0f32..1.0,
    ) {
        let lhs = ramp(lhs_shape.iter().product(), seed);
        let rhs = ramp(rhs_shape.iter().product(), -seed * 0.5);
        let (expected, expected_shape) = reference::binary(op, &lhs, &lhs_shape, &rhs, &rhs_shape);
        prop_assert_eq!(broadcast_shapes(&lhs_shape, &rhs_shape).unwrap(), expected_shape);
        let mut output = vec![0.0; expected.len()];
        binary(
            op,
            TensorRef::new(&lhs, &lhs_shape).unwrap(),
            TensorRef::new(&rhs, &rhs_shape).unwrap(),
            &mut output,
        )
        .unwrap();
        assert_close(&output, &expected, 1e-6);
    }

    #[test]
    fn row_vector_paths_match_reference(
        (rows, cols) in (1..9usize, 1..37usize),
        op in operations(),
        seed in -1.0f32..1.0,
    ) {
        let matrix = ramp(rows * cols, seed);
        let row = ramp(cols, 0.3);
        let (expected, _) = reference::binary(op, &matrix, &[rows, cols], &row, &[cols]);
        let mut output = vec![0.0; rows * cols];
        binary_row_vector(op, &matrix, &row, &mut output).unwrap();
        assert_close(&output, &expected, 1e-6);
        let mut in_place = matrix.clone();
        binary_row_vector_in_place(op, &mut in_place, &row).unwrap();
        assert_close(&in_place, &expected, 1e-6);
    }

    #[test]
    fn same_shape_paths_match_reference(lhs in values(45), rhs in values(45), op in operations()) {
        let (expected, _) = reference::binary(op, &lhs, &[45], &rhs, &[45]);
        let mut output = vec![0.0; 45];
        binary_same_shape(op, &lhs, &rhs, &mut output).unwrap();
        assert_close(&output, &expected, 1e-6);
        let mut in_place = lhs.clone();
        binary_same_shape_in_place(op, &mut in_place, &rhs).unwrap();
        assert_close(&in_place, &expected, 1e-6);
    }
}

#[test]
fn large_tensors_split_across_threads_correctly() {
    let shape = [3, 200, 129];
    let length: usize = shape.iter().product();
    let lhs = ramp(length, 0.1);
    let rhs = ramp(3 * 129, 0.2);
    let rhs_shape = [3, 1, 129];
    let (expected, _) = reference::binary(BinaryOp::Sub, &lhs, &shape, &rhs, &rhs_shape);
    let mut output = vec![0.0; length];
    binary(
        BinaryOp::Sub,
        TensorRef::new(&lhs, &shape).unwrap(),
        TensorRef::new(&rhs, &rhs_shape).unwrap(),
        &mut output,
    )
    .unwrap();
    assert_close(&output, &expected, 1e-6);
    let mut row_added = lhs.clone();
    add_row_vector_in_place(&mut row_added, &rhs[..129]).unwrap();
    assert_eq!(row_added[129 * 5 + 7], lhs[129 * 5 + 7] + rhs[7]);
}

#[test]
fn incompatible_shapes_are_errors() {
    let data = [0.0; 6];
    let lhs = TensorRef::new(&data, &[2, 3]).unwrap();
    let rhs = TensorRef::new(&data[..2], &[2]).unwrap();
    let mut output = [0.0; 6];
    assert!(matches!(
        binary(BinaryOp::Add, lhs, rhs, &mut output),
        Err(KernelError::BroadcastIncompatible { .. })
    ));
    let rhs = TensorRef::new(&data[..3], &[3]).unwrap();
    assert!(binary(BinaryOp::Add, lhs, rhs, &mut output[..5]).is_err());
    assert!(binary_row_vector(BinaryOp::Add, &data, &data[..4], &mut output).is_err());
    assert!(binary_same_shape(BinaryOp::Add, &data, &data[..5], &mut output).is_err());
}

#[test]
fn ranks_above_the_limit_are_errors() {
    // Nine axes: beyond the fixed-size shape arrays, so an error rather than a panic.
    let data = [1.0; 4];
    let shape = [1, 1, 1, 1, 1, 1, 1, 2, 2];
    let lhs = TensorRef::new(&data, &shape).unwrap();
    let rhs = TensorRef::new(&data[..2], &[2]).unwrap();
    let mut output = [0.0; 4];
    assert!(matches!(
        binary(BinaryOp::Add, lhs, rhs, &mut output),
        Err(KernelError::InvalidParameter { .. })
    ));
    // Eight axes are fine, through the general broadcast.
    let shape = [2, 1, 1, 1, 1, 1, 1, 2];
    let lhs = TensorRef::new(&data, &shape).unwrap();
    let rhs = TensorRef::new(&data[..2], &[2, 1]).unwrap();
    let mut output = [0.0; 8];
    binary(BinaryOp::Add, lhs, rhs, &mut output).unwrap();
    assert_eq!(output, [2.0; 8]);
}
