//! Generated `forward` reads an input where the caller holds it when the view is contiguous in
//! row-major order, and copies it otherwise (`rt::arena::input_data`): both give the same
//! outputs, bit for bit, and the caller's array is left as it was.

use nnc_codegen_tests::example_bert_encoder::{BertEncoder, BertEncoderInputs};
use nnc_codegen_tests::{example_mlp::Mlp, example_mobilenet_v2::MobilenetV2};

#[test]
fn strided_and_permuted_inputs_match_contiguous_ones() {
    // Every other column of a wider array: not contiguous.
    let wide = ndarray::Array2::from_shape_fn((1, 2 * 784), |(_, j)| (j % 13) as f32 / 13.0);
    let strided = wide.slice(ndarray::s![.., ..;2]);
    assert!(strided.as_slice().is_none());
    let contiguous = strided.to_owned();
    let mut mlp = Mlp::with_random_weights(3);
    let expected = mlp.forward(contiguous.view()).unwrap().to_owned();
    assert_eq!(mlp.forward(strided).unwrap(), expected);

    // An image held channels-last, viewed as NCHW: the first layer reads the copy.
    let channels_last = ndarray::Array4::from_shape_fn((1, 224, 224, 3), |(_, y, x, c)| {
        ((y * 7 + x * 3 + c) % 17) as f32 / 17.0 - 0.5
    });
    let before = channels_last.clone();
    let permuted = channels_last.view().permuted_axes([0, 3, 1, 2]);
    assert!(permuted.as_slice().is_none());
    let contiguous = permuted.to_owned();
    let mut mobilenet = MobilenetV2::with_random_weights(4);
    let expected = mobilenet.forward(contiguous.view()).unwrap().to_owned();
    assert_eq!(mobilenet.forward(permuted).unwrap(), expected);
    assert_eq!(channels_last, before);
}

#[test]
fn integer_inputs_are_read_in_place_or_copied_alike() {
    // Token ids in the rows of a `[2, 128]` array: the second row is a contiguous view, the
    // column-major copy's row a strided one.
    let ids = ndarray::Array2::from_shape_fn((2, 128), |(row, i)| ((i * 31 + row) % 1000) as i64);
    let column_major = ids.t().as_standard_layout().t().to_owned();
    let mask = ndarray::Array2::from_shape_fn((1, 128), |(_, i)| i64::from(i < 100));
    let mut bert = BertEncoder::with_random_weights(5);
    let row = ndarray::s![1..2, ..];
    let expected = bert
        .forward(BertEncoderInputs {
            input_ids: ids.slice(row),
            token_type_ids: ids.slice(row).mapv(|id| id % 2).view(),
            attention_mask: mask.view(),
        })
        .unwrap()
        .last_hidden_state
        .to_owned();
    let strided = column_major.slice(row);
    assert!(strided.as_slice().is_none());
    let output = bert
        .forward(BertEncoderInputs {
            input_ids: strided,
            token_type_ids: strided.mapv(|id| id % 2).view(),
            attention_mask: mask.view(),
        })
        .unwrap();
    assert_eq!(output.last_hidden_state, expected);
}
