//! The quantized kernels against plain twins: dequantize with `blocks`, multiply in f64.

use super::blocks::{dequantize_block, quantize_block};
use super::rows::{
    ActivationBlocks, RowKernels, block_sums, multiply_exact, multiply_exact_tiled, multiply_fast,
    round_to_i8,
};
use super::*;
use crate::kernels::gemm::NR;
use crate::test_support::lock_thread_count;
use proptest::prelude::*;

/// Every row kernel this processor can run.
fn row_kernels() -> Vec<RowKernels> {
    let mut kernels = vec![RowKernels::Portable];
    #[cfg(target_arch = "x86_64")]
    if super::x86_64::available() {
        kernels.push(RowKernels::Avx2);
    }
    #[cfg(target_arch = "x86_64")]
    if super::x86_64::vnni_available() {
        kernels.push(RowKernels::Avx512Vnni);
    }
    kernels
}

/// `output[i, r] = sum_c weight[r, c] * input[i, c]` in f64, then bias, residual, activation.
fn reference_linear(
    weight: &[f32],
    (out_features, in_features): (usize, usize),
    input: &[f32],
    rows: usize,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    activation: Option<Activation>,
) -> Vec<f32> {
    let mut output = vec![0.0f32; rows * out_features];
    for i in 0..rows {
        for r in 0..out_features {
            let mut sum = 0.0f64;
            for c in 0..in_features {
                sum +=
                    f64::from(weight[r * in_features + c]) * f64::from(input[i * in_features + c]);
            }
            let mut value = sum as f32 + bias.map_or(0.0, |bias| bias[r]);
            value += residual.map_or(0.0, |residual| residual[i * out_features + r]);
            output[i * out_features + r] = value;
        }
    }
    if let Some(activation) = activation {
        crate::kernels::activation::apply_activation_in_place(&mut output, activation);
    }
    output
}

/// `|actual - expected| <= tolerance * (1 + max |expected|)`: a dot product's rounding error
/// scales with the magnitude of its terms, not of its result, which may cancel to near zero.
#[track_caller]
fn assert_close_to_scale(actual: &[f32], expected: &[f32], tolerance: f32) {
    assert_eq!(actual.len(), expected.len());
    let scale = 1.0
        + expected
            .iter()
            .fold(0.0f32, |max, value| max.max(value.abs()));
    for (index, (&actual, &expected)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (actual - expected).abs() <= tolerance * scale,
            "element {index}: got {actual}, expected {expected} (scale {scale})"
        );
    }
}

fn format_strategy() -> impl Strategy<Value = QuantFormat> {
    prop_oneof![
        Just(QuantFormat::Q8_0),
        Just(QuantFormat::Q4_0),
        Just(QuantFormat::Q4_1),
        Just(QuantFormat::F16)
    ]
}

/// A format, a layer's shape (`in_features`, `out_features`), the input rows, the weights, the
/// input and a bias.
type LayerCase = (
    QuantFormat,
    usize,
    usize,
    usize,
    Vec<f32>,
    Vec<f32>,
    Vec<f32>,
);

/// A layer case (`in_features` a whole number of blocks, odd counts included) of 1 to 8 input
/// rows.
fn layer_cases() -> impl Strategy<Value = LayerCase> {
    layer_cases_of(1..9)
}

/// [`layer_cases`] with `rows` input rows.
fn layer_cases_of(rows: std::ops::Range<usize>) -> impl Strategy<Value = LayerCase> {
    (format_strategy(), 1..6usize, 1..40usize, rows).prop_flat_map(
        |(format, blocks, out_features, rows)| {
            let in_features = blocks * BLOCK_LENGTH;
            (
                Just(format),
                Just(in_features),
                Just(out_features),
                Just(rows),
                proptest::collection::vec(-2.0f32..2.0, out_features * in_features),
                proptest::collection::vec(-2.0f32..2.0, rows * in_features),
                proptest::collection::vec(-1.0f32..1.0, out_features),
            )
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Dequantizing a quantized block is within half a step of the original (plus the rounding
    /// of the scale to f16).
    #[test]
    fn quantization_error_is_within_half_a_step(
        format in format_strategy(),
        values in proptest::collection::vec(-100.0f32..100.0, BLOCK_LENGTH),
    ) {
        let mut block = vec![0u8; format.block_bytes()];
        quantize_block(format, &values, &mut block);
        let mut restored = [0.0f32; BLOCK_LENGTH];
        dequantize_block(format, &block, &mut restored);
        let (min, max) = values.iter().fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        let amax = min.abs().max(max.abs());
        let step = match format {
            QuantFormat::Q8_0 => amax / 127.0,
            QuantFormat::Q4_0 => amax / 8.0,
            QuantFormat::Q4_1 => (max - min) / 15.0,
            // Rounding to the nearest half: within `amax * 2e-3` below.
            QuantFormat::F16 => 0.0,
        };
        // Half a step, plus the f16 rounding of d (and m) times the largest code. Q4_0's codes
        // reach -8 d but only +7 d, so a value of the opposite sign to the extreme may be
        // clipped by up to a whole step.
        let steps = if format == QuantFormat::Q4_0 { 1.0 } else { 0.5 };
        let bound = step * steps + amax * 2e-3 + 1e-6;
        for (&value, &restored) in values.iter().zip(&restored) {
            prop_assert!((value - restored).abs() <= bound, "{value} -> {restored} (bound {bound})");
        }
    }

    /// The exact mode equals the f32 layer on the dequantized weights, up to 8 input rows, with
    /// a bias, a residual and an activation (the layer runs its row kernels below
    /// `TILED_MIN_ROWS` rows and its tiles from there, also checked on their own by
    /// `exact_tiles_match_the_dequantized_layer` and at the thresholds by
    /// `modes_on_tiles_and_as_a_gemm_match_their_plain_twins`), and so does every row kernel
    /// alone, one-row and four-row, at any of those row counts.
    #[test]
    fn exact_mode_matches_the_dequantized_layer(
        (format, in_features, out_features, rows, weight, input, bias) in layer_cases(),
        with_residual in any::<bool>(),
    ) {
        let matrix = QuantizedMatrix::quantize(format, &weight, out_features, in_features).unwrap();
        let dequantized = matrix.dequantize();
        let residual: Vec<f32> = (0..rows * out_features).map(|i| (i % 7) as f32 * 0.25 - 0.75).collect();
        let residual = with_residual.then_some(residual.as_slice());
        let activation = Some(Activation::Relu);
        let expected = reference_linear(&dequantized, (out_features, in_features), &input, rows, Some(&bias), residual, activation,
        );
        let layer = QuantizedLinear::new(matrix.clone(), Some(&bias), QuantizedMode::Exact)
            .unwrap()
            .with_activation(activation);
        let mut output = vec![0.0; rows * out_features];
        match residual {
            Some(residual) => layer.forward_residual(&input, rows, residual, &mut output).unwrap(),
            None => layer.forward(&input, rows, &mut output).unwrap(),
        }
        assert_close_to_scale(&output, &expected, 1e-5);

        // Each row kernel alone, without the epilogue.
        let plain = reference_linear(&dequantized, (out_features, in_features), &input, rows, None, None, None);
        let sums = block_sums(&input);
        for kernels in row_kernels() {
            let mut output = vec![0.0; rows * out_features];
            multiply_exact(&kernels, &matrix, &input, &sums, rows, &mut output);
            assert_close_to_scale(&output, &plain, 1e-5);
        }
    }

    /// The exact mode's tiles (weight rows dequantized into f32, the GEMM's micro-kernel against
    /// panels of the input rows) equal the plain product at any number of rows, whole panels of
    /// `NR` input rows and tails, and any number of weight rows, whole groups of `MR` and tails,
    /// with every row kernel's dequantization.
    #[test]
    fn exact_tiles_match_the_dequantized_layer(
        (format, in_features, out_features, rows, weight, input, _bias) in layer_cases_of(1..40),
    ) {
        let matrix = QuantizedMatrix::quantize(format, &weight, out_features, in_features).unwrap();
        let plain = reference_linear(&matrix.dequantize(), (out_features, in_features), &input, rows, None, None, None);
        for kernels in row_kernels() {
            let mut output = vec![f32::NAN; rows * out_features];
            multiply_exact_tiled(&kernels, &matrix, &input, rows, &mut output);
            assert_close_to_scale(&output, &plain, 1e-5);
        }
    }

    /// The fast mode equals the dequantized weights times the dequantized activations (what its
    /// integer products compute), and stays near the exact mode.
    #[test]
    fn fast_mode_matches_its_quantized_twin(
        (format, in_features, out_features, rows, weight, input, bias) in layer_cases(),
    ) {
        let matrix = QuantizedMatrix::quantize(format, &weight, out_features, in_features).unwrap();
        let dequantized = matrix.dequantize();
        let activations = ActivationBlocks::quantize(&input, rows, in_features);
        let restored_input = activations.dequantize();
        // What the tiles multiply in the fast mode: the same values, bit for bit.
        let rounded = ActivationBlocks::rounded(&input);
        prop_assert!(rounded.iter().zip(&restored_input).all(|(a, b)| a.to_bits() == b.to_bits()));
        let expected = reference_linear(&dequantized, (out_features, in_features), &restored_input, rows, None, None, None,
        );
        for kernels in row_kernels() {
            let mut output = vec![0.0; rows * out_features];
            multiply_fast(&kernels, &matrix, &activations, rows, &mut output);
            assert_close_to_scale(&output, &expected, 1e-5);
        }
        // Against the exact mode, the difference is the activations' rounding: at most half a
        // step (max |x| / 254) per value, times the sum of |w|.
        let layer = QuantizedLinear::new(matrix, Some(&bias), QuantizedMode::Fast).unwrap();
        let mut fast = vec![0.0; rows * out_features];
        layer.forward(&input, rows, &mut fast).unwrap();
        let exact = reference_linear(&dequantized, (out_features, in_features), &input, rows, Some(&bias), None, None);
        for i in 0..rows {
            let amax = input[i * in_features..][..in_features].iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for r in 0..out_features {
                let weight_sum: f32 = dequantized[r * in_features..][..in_features].iter().map(|w| w.abs()).sum();
                let bound = amax / 254.0 * weight_sum * 1.01 + 1e-4;
                let (fast, exact) = (fast[i * out_features + r], exact[i * out_features + r]);
                prop_assert!((fast - exact).abs() <= bound, "row {i} output {r}: fast {fast}, exact {exact}, bound {bound}");
            }
        }
    }

    /// The GEMM's panels packed from the blocks are `W^T` dequantized, for any window of k
    /// (aligned to the blocks or not) and any width up to `NR`.
    #[test]
    fn packed_panels_are_the_transposed_weight(
        format in format_strategy(),
        blocks in 1..5usize,
        out_features in 1..40usize,
        window in (0..160usize, 1..160usize, 0..40usize, 1..=NR),
    ) {
        let in_features = blocks * BLOCK_LENGTH;
        let weight: Vec<f32> = (0..out_features * in_features).map(|i| ((i * 37) % 23) as f32 - 11.0).collect();
        let matrix = QuantizedMatrix::quantize(format, &weight, out_features, in_features).unwrap();
        let dequantized = matrix.dequantize();
        let first_row = window.0 % in_features;
        let depth = window.1.min(in_features - first_row);
        let first_column = window.2 % out_features;
        let width = window.3.min(out_features - first_column);
        let mut panel = vec![f32::NAN; depth * NR];
        QuantizedSource(&matrix).pack_panel(first_row, depth, first_column, width, &mut panel);
        for row in 0..depth {
            for j in 0..NR {
                let expected = if j < width {
                    dequantized[(first_column + j) * in_features + first_row + row]
                } else {
                    0.0
                };
                // The vectorised dequantization rounds `q * d + m` once (FMA), the plain one
                // twice.
                let value = panel[row * NR + j];
                prop_assert!((value - expected).abs() <= 1e-6 * expected.abs().max(1.0), "{value} vs {expected}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every row kernel dequantizes a block, and a row of blocks, to the plain twin's values.
    #[test]
    fn block_dequantization_matches_the_plain_twin(
        format in format_strategy(),
        bytes in proptest::collection::vec(any::<u8>(), 64),
    ) {
        // Any bytes are a block, but f16 scales (and F16's values) may be NaN or infinite: keep
        // them finite.
        let mut block = bytes[..format.block_bytes()].to_vec();
        block[1] &= 0x3B;
        if format == QuantFormat::Q4_1 {
            block[3] &= 0x3B;
        }
        if format == QuantFormat::F16 {
            for high in block.iter_mut().skip(1).step_by(2) {
                *high &= 0xBB;
            }
        }
        let mut expected = [0.0f32; BLOCK_LENGTH];
        dequantize_block(format, &block, &mut expected);
        for kernels in row_kernels() {
            let mut actual = [0.0f32; BLOCK_LENGTH];
            kernels.dequantize_row(format, &block, &mut actual);
            for (&actual, &expected) in actual.iter().zip(&expected) {
                prop_assert!((actual - expected).abs() <= 1e-6 * expected.abs().max(1.0), "{kernels:?}: {actual} vs {expected}");
            }
            // A row of three copies of the block, whole: each copy's values in its place.
            let row = block.repeat(3);
            let mut values = [f32::NAN; 3 * BLOCK_LENGTH + 1];
            kernels.dequantize_row(format, &row, &mut values);
            for (index, &actual) in values[..3 * BLOCK_LENGTH].iter().enumerate() {
                let expected = expected[index % BLOCK_LENGTH];
                prop_assert!((actual - expected).abs() <= 1e-6 * expected.abs().max(1.0), "{kernels:?} row: {actual} vs {expected}");
            }
            prop_assert!(values[3 * BLOCK_LENGTH].is_nan(), "{kernels:?}: wrote past the row");
        }
    }
}

#[test]
fn blocks_are_laid_out_as_gguf_stores_them() {
    // Q8_0 of 0, 1, ..., 31: d = 31 / 127, q[j] = round(j * 127 / 31).
    let values: Vec<f32> = (0..32).map(|j| j as f32).collect();
    let mut block = vec![0u8; QuantFormat::Q8_0.block_bytes()];
    quantize_block(QuantFormat::Q8_0, &values, &mut block);
    assert_eq!(
        &block[..2],
        &half::f16::from_f32(31.0 / 127.0).to_le_bytes()
    );
    assert_eq!(block[2], 0);
    assert_eq!(block[2 + 31], 127);
    assert_eq!(block[2 + 1] as i8, (127.0f32 / 31.0).round() as i8);

    // Q4_0 of -8, -7.5, ..., 7.5: the extreme -8 gives d = 1, code = trunc(x + 8.5) capped at 15.
    let values: Vec<f32> = (0..32).map(|j| j as f32 * 0.5 - 8.0).collect();
    let mut block = vec![0u8; QuantFormat::Q4_0.block_bytes()];
    quantize_block(QuantFormat::Q4_0, &values, &mut block);
    assert_eq!(&block[..2], &half::f16::from_f32(1.0).to_le_bytes());
    // Value 0 (-8) -> code 0 in the low nibble of byte 0; value 16 (0.0) -> code 8 in its high.
    assert_eq!(block[2], 8 << 4);
    // Value 15 (-0.5) -> trunc(8.0) = 8; value 31 (7.5) -> min(15, trunc(16.0)) = 15.
    assert_eq!(block[2 + 15], 8 | (15 << 4));

    // Q4_1 of 1, 2, ..., 32 with an extra spread: m = 1, d = 31 / 15.
    let values: Vec<f32> = (1..=32).map(|j| j as f32).collect();
    let mut block = vec![0u8; QuantFormat::Q4_1.block_bytes()];
    quantize_block(QuantFormat::Q4_1, &values, &mut block);
    assert_eq!(&block[..2], &half::f16::from_f32(31.0 / 15.0).to_le_bytes());
    assert_eq!(&block[2..4], &half::f16::from_f32(1.0).to_le_bytes());
    assert_eq!(block[4] & 0x0F, 0);
    assert_eq!(block[4 + 15] >> 4, 15);
}

/// F16 blocks are 32 little-endian halves, rounded to nearest; a value beyond the largest half is
/// an error rather than an infinity; and a layer on F16 runs the exact mode whatever it is asked.
#[test]
fn f16_blocks_are_plain_halves() {
    let values: Vec<f32> = (0..32).map(|j| j as f32 * 0.1 - 1.0).collect();
    let matrix = QuantizedMatrix::quantize(QuantFormat::F16, &values, 1, 32).unwrap();
    assert_eq!(matrix.bytes().len(), 64);
    for (j, half) in matrix.bytes().chunks_exact(2).enumerate() {
        assert_eq!(half, half::f16::from_f32(values[j]).to_le_bytes());
    }
    let error = QuantizedMatrix::quantize(QuantFormat::F16, &[7e4; 32], 1, 32).unwrap_err();
    assert!(error.to_string().contains("largest f16"), "{error}");
    assert!(QuantizedMatrix::quantize(QuantFormat::F16, &[65504.0; 32], 1, 32).is_ok());
    let layer = QuantizedLinear::new(matrix, None, QuantizedMode::Fast).unwrap();
    assert_eq!(layer.mode(), QuantizedMode::Exact);
}

#[test]
fn malformed_matrices_and_inputs_are_errors() {
    let bytes = vec![0u8; 3 * QuantFormat::Q4_1.block_bytes()];
    assert!(QuantizedMatrix::from_bytes(QuantFormat::Q4_1, 3, 32, bytes.clone()).is_ok());
    // Rows that are not whole blocks, a byte count that does not match, a size that overflows.
    assert!(QuantizedMatrix::from_bytes(QuantFormat::Q4_1, 3, 33, bytes.clone()).is_err());
    assert!(QuantizedMatrix::from_bytes(QuantFormat::Q4_1, 2, 32, bytes.clone()).is_err());
    assert!(QuantizedMatrix::from_bytes(QuantFormat::Q4_1, usize::MAX, 32, bytes).is_err());
    let error = QuantizedMatrix::quantize(QuantFormat::Q8_0, &[f32::NAN; 32], 1, 32).unwrap_err();
    assert!(error.to_string().contains("finite"), "{error}");

    let matrix = QuantizedMatrix::quantize(QuantFormat::Q8_0, &[0.5; 64], 2, 32).unwrap();
    let layer = QuantizedLinear::new(matrix.clone(), None, QuantizedMode::Exact).unwrap();
    let mut output = vec![0.0; 2];
    assert!(layer.forward(&[0.0; 31], 1, &mut output).is_err());
    assert!(layer.forward(&[0.0; 32], 1, &mut output[..1]).is_err());
    assert!(QuantizedLinear::new(matrix.clone(), Some(&[0.0; 3]), QuantizedMode::Fast).is_err());
    let mut row = vec![0.0; 32];
    assert!(quantized_embedding(&matrix, &[2], &mut row).is_err());
    assert!(quantized_embedding(&matrix, &[-1], &mut row).is_err());
    assert!(matrix.dequantize_row(2, &mut row).is_err());
}

#[test]
fn embedding_rows_are_the_dequantized_rows() {
    let values: Vec<f32> = (0..5 * 64).map(|i| (i as f32 * 0.37).sin()).collect();
    for format in QuantFormat::ALL {
        let table = QuantizedMatrix::quantize(format, &values, 5, 64).unwrap();
        let dequantized = table.dequantize();
        let mut output = vec![0.0; 3 * 64];
        quantized_embedding(&table, &[4, 0, 4], &mut output).unwrap();
        assert_eq!(&output[..64], &dequantized[4 * 64..]);
        assert_eq!(&output[64..128], &dequantized[..64]);
        assert_eq!(&output[128..], &dequantized[4 * 64..]);
    }
}

/// A layer big enough to be split across threads gives the same bits on one and two threads
/// (the split is by whole weight rows, at multiples of the tiles' rows, and each dot product is
/// computed the same way); 1031 weight rows leave a short last tile.
#[test]
fn threads_do_not_change_the_result() {
    let _guard = lock_thread_count();
    let (out_features, in_features) = (1031, 512);
    let weight: Vec<f32> = (0..out_features * in_features)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let input: Vec<f32> = (0..17 * in_features)
        .map(|i| (i as f32 * 0.01).cos())
        .collect();
    for format in QuantFormat::ALL {
        let matrix = QuantizedMatrix::quantize(format, &weight, out_features, in_features).unwrap();
        assert!(
            matrix.bytes().len() >= 1 << 18,
            "the layer must be split across threads"
        );
        for mode in [QuantizedMode::Exact, QuantizedMode::Fast] {
            let layer = QuantizedLinear::new(matrix.clone(), None, mode).unwrap();
            // One row, the row kernels, and the exact mode's tiles (the fast mode's rows).
            for rows in [1, 3, 17] {
                let mut results = Vec::new();
                for threads in [1, 2] {
                    crate::set_num_threads(threads);
                    let mut output = vec![0.0; rows * out_features];
                    layer
                        .forward(&input[..rows * in_features], rows, &mut output)
                        .unwrap();
                    results.push(output);
                }
                crate::set_num_threads(0);
                assert_eq!(results[0], results[1], "{format} {mode:?} rows {rows}");
            }
        }
    }
}

/// A non-finite activation is not hidden by the fast mode's rounding.
#[test]
fn fast_mode_propagates_non_finite_inputs() {
    let matrix = QuantizedMatrix::quantize(QuantFormat::Q4_1, &[0.25; 64], 2, 32).unwrap();
    let layer = QuantizedLinear::new(matrix, None, QuantizedMode::Fast).unwrap();
    let mut input = vec![1.0; 32];
    input[5] = f32::INFINITY;
    let mut output = vec![0.0; 2];
    layer.forward(&input, 1, &mut output).unwrap();
    assert!(output.iter().all(|value| !value.is_finite()), "{output:?}");
    // A prompt's chunk, on the tiles: the row with the infinity, and only it, is not finite.
    let rows = TILED_MIN_ROWS;
    let mut chunk = vec![1.0; rows * 32];
    chunk[3 * 32..4 * 32].copy_from_slice(&input);
    let mut output = vec![0.0; rows * 2];
    layer.forward(&chunk, rows, &mut output).unwrap();
    for (row, values) in output.chunks_exact(2).enumerate() {
        assert_eq!(
            values.iter().all(|value| value.is_finite()),
            row != 3,
            "row {row}: {values:?}"
        );
    }
}

/// `round_to_i8` is `round() as i8` on every half from -600 to 600, on the floats next to
/// each (above and below), on whole numbers, out of range, at the extremes and on NaN.
#[test]
fn round_to_i8_is_round() {
    let mut cases = vec![
        0.0f32,
        -0.0,
        f32::MIN_POSITIVE,
        f32::MAX,
        f32::MIN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::from_bits(0x3EFF_FFFF),
    ];
    for twice in -1200i32..=1200 {
        let x = twice as f32 / 2.0;
        cases.extend([x, x.next_up(), x.next_down()]);
    }
    for x in cases {
        assert_eq!(round_to_i8(x), x.round() as i8, "{x:e}");
    }
}

/// From `TILED_MIN_ROWS` input rows on, both modes run on tiles of dequantized weight rows (the
/// fast mode on its rounded activations), and from `GEMM_MIN_ROWS` on as a GEMM on panels
/// packed from the blocks (the layer proptests stay below both, on the row kernels): both sides
/// of each threshold, with every format, a bias, a residual and an activation, against the plain
/// twin, which for the fast mode multiplies the activations as it rounds them.
#[test]
fn modes_on_tiles_and_as_a_gemm_match_their_plain_twins() {
    // More weight rows than one block of the transposed copy (64), not a multiple of the tiles.
    let (in_features, out_features) = (3 * BLOCK_LENGTH, 67);
    let weight: Vec<f32> = (0..out_features * in_features)
        .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 500.0)
        .collect();
    let bias: Vec<f32> = (0..out_features).map(|i| i as f32 * 0.125 - 2.0).collect();
    for (format, mode) in QuantFormat::ALL.into_iter().flat_map(|format| {
        [
            (format, QuantizedMode::Exact),
            (format, QuantizedMode::Fast),
        ]
    }) {
        let matrix = QuantizedMatrix::quantize(format, &weight, out_features, in_features).unwrap();
        let dequantized = matrix.dequantize();
        let layer = QuantizedLinear::new(matrix, Some(&bias), mode)
            .unwrap()
            .with_activation(Some(Activation::Relu));
        for rows in [
            TILED_MIN_ROWS - 1,
            TILED_MIN_ROWS,
            NR,
            NR + 1,
            GEMM_MIN_ROWS - 1,
            GEMM_MIN_ROWS,
            GEMM_MIN_ROWS + 5,
        ] {
            let input: Vec<f32> = (0..rows * in_features)
                .map(|i| ((i * 31 % 17) as f32 - 8.0) / 8.0)
                .collect();
            let residual: Vec<f32> = (0..rows * out_features)
                .map(|i| (i % 5) as f32 - 2.0)
                .collect();
            let multiplied = match layer.mode() {
                QuantizedMode::Exact => input.clone(),
                QuantizedMode::Fast => {
                    ActivationBlocks::quantize(&input, rows, in_features).dequantize()
                }
            };
            let expected = reference_linear(
                &dequantized,
                (out_features, in_features),
                &multiplied,
                rows,
                Some(&bias),
                Some(&residual),
                Some(Activation::Relu),
            );
            let mut output = vec![0.0; rows * out_features];
            layer
                .forward_residual(&input, rows, &residual, &mut output)
                .unwrap();
            assert_close_to_scale(&output, &expected, 1e-5);
            if layer.mode() == QuantizedMode::Fast {
                // The rounding of the activations shows: the twin on the unrounded input is off.
                let unrounded = reference_linear(
                    &dequantized,
                    (out_features, in_features),
                    &input,
                    rows,
                    Some(&bias),
                    Some(&residual),
                    Some(Activation::Relu),
                );
                assert_ne!(expected, unrounded, "{format} rows {rows}");
            }
            assert_close_to_scale(&output, &expected, 1e-5);
        }
    }
}
