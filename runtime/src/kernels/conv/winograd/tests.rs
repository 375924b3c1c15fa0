//! The Winograd method against the f64 reference convolution: the transforms on one tile, odd
//! image sizes with every epilogue at one and two threads, and the precision at ResNet depths.

use super::*;
use crate::kernels::conv::{ConvMethodChoice, ConvWorkspace, PackedConv2d};
use crate::reference;
use crate::test_support::values;
use nnc_ops::Conv2dOptions;
use proptest::prelude::*;

/// The 1-D identity behind the method: `A^T ((G g) .* (B^T d))` is the 3-tap correlation of
/// six inputs.
#[test]
fn one_dimensional_transforms_compute_a_correlation() {
    let filter = [0.5f32, -1.25, 2.0];
    let inputs = [1.0f32, -2.0, 0.75, 3.0, -0.5, 1.5];
    // The filter as the first column of a 3x3 (the other columns zero) and the inputs as the
    // first column of a patch: the 2-D transforms then reduce to the 1-D ones on column 0.
    let mut filter_2d = [0.0f32; 9];
    for (k, &value) in filter.iter().enumerate() {
        filter_2d[k * 3] = value;
    }
    let transformed_filter = transform_filter(&filter_2d);
    let mut patches = [[0.0f32; LANES]; POINTS];
    for (row, &value) in inputs.iter().enumerate() {
        patches[row * INPUT_TILE][3] = value;
    }
    let transformed_input = transform_input_tile(&patches);
    let mut products = [[0.0f32; LANES]; POINTS];
    for point in 0..POINTS {
        products[point][3] = transformed_filter[point] * transformed_input[point][3];
    }
    let outputs = transform_output_tile(&products);
    for row in 0..OUTPUT_TILE {
        let expected: f32 = (0..3).map(|k| filter[k] * inputs[row + k]).sum();
        let actual = outputs[row * OUTPUT_TILE][3];
        assert!(
            (actual - expected).abs() < 1e-5,
            "row {row}: {actual} vs {expected}"
        );
        assert_eq!(outputs[row * OUTPUT_TILE + 1][3], 0.0);
        assert_eq!(outputs[row * OUTPUT_TILE][2], 0.0);
    }
}

/// The same identity for F(2x2, 3x3) on four inputs.
#[test]
fn one_dimensional_f2x2_transforms_compute_a_correlation() {
    let filter = [0.5f32, -1.25, 2.0];
    let inputs = [1.0f32, -2.0, 0.75, 3.0];
    let mut filter_2d = [0.0f32; 9];
    for (k, &value) in filter.iter().enumerate() {
        filter_2d[k * 3] = value;
    }
    let transformed_filter = transform_filter_f2x2(&filter_2d);
    let mut plane = [0.0f32; F2X2_POINTS];
    for (row, &value) in inputs.iter().enumerate() {
        plane[row * F2X2_INPUT_TILE] = value;
    }
    let zeros = [0.0f32; F2X2_POINTS];
    let sources: [PatchSource<'_>; LANES] = std::array::from_fn(|lane| PatchSource {
        data: if lane == 3 { &plane } else { &zeros },
        offset: 0,
        row_stride: F2X2_INPUT_TILE,
    });
    let mut transformed_input = [0.0f32; F2X2_POINTS * LANES];
    transform_input_group_f2x2(&sources, &mut transformed_input, LANES);
    let mut products = [0.0f32; F2X2_POINTS * LANES];
    for point in 0..F2X2_POINTS {
        products[point * LANES + 3] =
            transformed_filter[point] * transformed_input[point * LANES + 3];
    }
    let mut outputs: OutputTiles = [[f32::NAN; 16]; LANES];
    transform_output_group_f2x2(&products, LANES, 0.0, &mut outputs);
    for row in 0..2 {
        let expected: f32 = (0..3).map(|k| filter[k] * inputs[row + k]).sum();
        let actual = outputs[3][row * 2];
        assert!(
            (actual - expected).abs() < 1e-5,
            "row {row}: {actual} vs {expected}"
        );
        assert_eq!(outputs[3][row * 2 + 1], 0.0);
        assert_eq!(outputs[2][row * 2], 0.0);
    }
}

/// One Winograd layer and its data.
#[derive(Debug, Clone)]
struct Case {
    input_shape: [usize; 4],
    out_channels: usize,
    padding: [usize; 2],
    input: Vec<f32>,
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    residual: Option<Vec<f32>>,
    activation: Option<Activation>,
    threads: usize,
    variant: Variant,
    /// The block budget, where not the machine's (`WinogradWeights::block_scratch_bytes`).
    block_scratch_bytes: Option<usize>,
}

impl Case {
    fn weight_shape(&self) -> [usize; 4] {
        [self.out_channels, self.input_shape[1], 3, 3]
    }

    fn options(&self) -> Conv2dOptions {
        Conv2dOptions {
            padding: self.padding,
            ..Conv2dOptions::default()
        }
    }

    /// `activation(conv + bias + residual)` from the f64 reference.
    fn expected(&self) -> Vec<f32> {
        let (mut expected, _) = reference::conv2d(
            &self.input,
            self.input_shape,
            &self.weight,
            self.weight_shape(),
            self.bias.as_deref(),
            self.options(),
        );
        if let Some(residual) = &self.residual {
            for (value, &skip) in expected.iter_mut().zip(residual) {
                *value += skip;
            }
        }
        if let Some(activation) = self.activation {
            for value in &mut expected {
                *value = reference::activation(*value, activation);
            }
        }
        expected
    }

    /// Runs the layer through the Winograd method.
    fn run(&self) -> Vec<f32> {
        let conv = PackedConv2d::new_with_method(
            &self.weight,
            self.weight_shape(),
            self.bias.as_deref(),
            self.options(),
            ConvMethodChoice::Winograd,
        )
        .unwrap()
        .with_activation(self.activation);
        assert!(matches!(conv.method, super::super::Method::Winograd(_)));
        let mut conv = conv;
        let mut weights = WinogradWeights::with_variant(
            &self.weight,
            self.out_channels,
            self.input_shape[1],
            self.variant,
        )
        .unwrap();
        if let Some(bytes) = self.block_scratch_bytes {
            weights.block_scratch_bytes = bytes;
        }
        conv.method = super::super::Method::Winograd(weights);
        let output_shape = conv.output_shape(self.input_shape).unwrap();
        let mut output = vec![f32::NAN; output_shape.iter().product()];
        let mut workspace = ConvWorkspace::new();
        crate::set_num_threads(self.threads);
        match &self.residual {
            Some(residual) => conv.forward_residual(
                &self.input,
                self.input_shape,
                residual,
                &mut output,
                &mut workspace,
            ),
            None => conv.forward(&self.input, self.input_shape, &mut output, &mut workspace),
        }
        .unwrap();
        crate::set_num_threads(0);
        output
    }

    /// The largest magnitude of the sums behind any output: `|x| * |w| + |bias| + |residual|`,
    /// the scale of the rounding error any order of summation may make, Winograd's transforms
    /// included (an output whose terms cancel is small, its error is not).
    fn magnitude(&self) -> f32 {
        let absolute = |values: &[f32]| values.iter().map(|value| value.abs()).collect::<Vec<_>>();
        let bias = self.bias.as_deref().map(absolute);
        let (mut magnitudes, _) = reference::conv2d(
            &absolute(&self.input),
            self.input_shape,
            &absolute(&self.weight),
            self.weight_shape(),
            bias.as_deref(),
            self.options(),
        );
        if let Some(residual) = &self.residual {
            for (value, &skip) in magnitudes.iter_mut().zip(residual) {
                *value += skip.abs();
            }
        }
        magnitudes.into_iter().fold(1.0f32, f32::max)
    }

    /// `max |winograd - reference|` over the largest magnitude of the sums (at least 1): the
    /// error relative to the terms summed, not to the sums, which random data makes cancel (a
    /// 90-term sum of values up to 2 is around 10 while its terms add up to 45 or more).
    fn relative_error(&self) -> f32 {
        let expected = self.expected();
        let actual = self.run();
        let largest = self.magnitude();
        let error = actual
            .iter()
            .zip(&expected)
            .map(|(actual, expected)| (actual - expected).abs())
            .fold(0.0f32, |max, difference| {
                // A NaN (an output left unwritten) must fail the comparison.
                if difference.is_nan() {
                    f32::INFINITY
                } else {
                    max.max(difference)
                }
            });
        error / largest
    }
}

/// The activations finite on every finite input (random outputs may be negative or large);
/// an index past the end stands for none.
static FINITE_ACTIVATIONS: std::sync::LazyLock<Vec<Activation>> = std::sync::LazyLock::new(|| {
    Activation::ALL
        .into_iter()
        .filter(|activation| activation.is_finite_on_finite_inputs())
        .collect()
});

fn cases() -> impl Strategy<Value = Case> {
    (
        (1..3usize, 1..12usize, 1..12usize, 0..3usize, 0..3usize),
        (1..10usize, 1..10usize),
        (
            any::<bool>(),
            any::<bool>(),
            0..=FINITE_ACTIVATIONS.len(),
            1..3usize,
        ),
        prop_oneof![Just(Variant::F4x4), Just(Variant::F2x2)],
    )
        .prop_filter(
            "the kernel must fit the padded input",
            |&((_, _, _, pad_h, pad_w), (height, width), _, _)| {
                height + 2 * pad_h >= 3 && width + 2 * pad_w >= 3
            },
        )
        .prop_flat_map(
            |(
                (batch, in_channels, out_channels, pad_h, pad_w),
                (height, width),
                (with_bias, with_residual, activation, threads),
                variant,
            )| {
                let input_shape = [batch, in_channels, height, width];
                let output_length =
                    batch * out_channels * (height + 2 * pad_h - 2) * (width + 2 * pad_w - 2);
                (
                    Just((input_shape, out_channels, [pad_h, pad_w], threads, variant)),
                    values(input_shape.iter().product()),
                    values(out_channels * in_channels * 9),
                    values(out_channels),
                    values(output_length),
                    Just((
                        with_bias,
                        with_residual,
                        FINITE_ACTIVATIONS.get(activation).copied(),
                    )),
                )
            },
        )
        .prop_map(
            |(
                (input_shape, out_channels, padding, threads, variant),
                input,
                weight,
                bias,
                residual,
                (with_bias, with_residual, activation),
            )| Case {
                input_shape,
                out_channels,
                padding,
                input,
                weight,
                bias: with_bias.then_some(bias),
                residual: with_residual.then_some(residual),
                activation,
                threads,
                variant,
                block_scratch_bytes: None,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Images of 1x1 to 9x9 (mostly not multiples of the tile), batch 1 or 2, paddings 0 to 2,
    /// with and without bias and residual, every activation, at one and two threads, both
    /// variants. The error is measured against the magnitude of the terms summed: against the
    /// largest output it was at times 1.2e-4 (2 x 10 x 9 x 6 images, F(4x4)), on the code
    /// before it as well.
    #[test]
    fn winograd_matches_reference(case in cases()) {
        let error = case.relative_error();
        prop_assert!(error <= 1e-4, "relative error {error}");
    }
}

/// A deterministic pseudo-random sequence in `[-scale, scale)`.
fn pseudo_random(length: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// A layer at a ResNet depth: He-scaled weights, inputs in `[-1, 1)`, bias, a residual and
/// ReLU, with an image that is not a multiple of the tile.
fn deep_case(channels: usize, size: usize, threads: usize) -> Case {
    let weight_scale = (6.0 / (9.0 * channels as f32)).sqrt();
    let output_length = channels * size * size;
    Case {
        input_shape: [1, channels, size, size],
        out_channels: channels,
        padding: [1, 1],
        input: pseudo_random(channels * size * size, 1, 1.0),
        weight: pseudo_random(channels * channels * 9, 2, weight_scale),
        bias: Some(pseudo_random(channels, 3, 0.1)),
        residual: Some(pseudo_random(output_length, 4, 1.0)),
        activation: Some(Activation::Relu),
        threads,
        variant: Variant::for_channels(channels, channels),
        block_scratch_bytes: None,
    }
}

/// Both variants stay within the 1e-4 relative tolerance at 64 to 512 channels; the measured
/// errors (about 1e-6) are in the report of the change that added this method.
#[test]
fn winograd_is_accurate_at_resnet_depths() {
    for (channels, size, threads, variant) in [
        (64, 19, 2, Variant::F4x4),
        (128, 13, 1, Variant::F4x4),
        (256, 9, 2, Variant::F4x4),
        (512, 7, 1, Variant::F4x4),
        (512, 7, 2, Variant::F2x2),
        (64, 19, 1, Variant::F2x2),
    ] {
        let case = Case {
            variant,
            ..deep_case(channels, size, threads)
        };
        let error = case.relative_error();
        println!(
            "winograd {variant:?} relative error at {channels} channels, {size}x{size}: {error:e}"
        );
        assert!(
            error <= 1e-4,
            "{channels} channels, {size}x{size}: relative error {error}"
        );
    }
}

/// Blocks that start inside an image and span two images of a batch, on an image that is not
/// square and reaches into the padding on every side, for both variants, under three block
/// budgets: blocks of 16 tiles, of 32 (F(4x4)) or 64 (F(2x2)), and of 64, which for F(4x4) is
/// the whole batch's 60 tiles.
#[test]
fn blocks_across_images_and_edges_match_reference() {
    for ((variant, padding, threads), block_scratch_bytes) in [
        (Variant::F4x4, [1, 2], 1),
        (Variant::F2x2, [2, 1], 2),
        (Variant::F2x2, [0, 0], 1),
    ]
    .into_iter()
    .flat_map(|layer| [0, 512 << 10, 1 << 20].map(|bytes| (layer, bytes)))
    {
        let (channels, height, width) = (48, 23, 17);
        let input_shape = [2, channels, height, width];
        let output_length =
            2 * channels * (height + 2 * padding[0] - 2) * (width + 2 * padding[1] - 2);
        let case = Case {
            input_shape,
            out_channels: channels,
            padding,
            input: pseudo_random(input_shape.iter().product(), 5, 1.0),
            weight: pseudo_random(channels * channels * 9, 6, 0.2),
            bias: Some(pseudo_random(channels, 7, 0.1)),
            residual: Some(pseudo_random(output_length, 8, 1.0)),
            activation: Some(Activation::Relu6),
            threads,
            variant,
            block_scratch_bytes: Some(block_scratch_bytes),
        };
        let error = case.relative_error();
        assert!(
            error <= 1e-5,
            "{variant:?}, padding {padding:?}, {block_scratch_bytes} bytes a block: relative \
             error {error}"
        );
    }
}

/// Groups of eight whole tiles, which the AVX2 code finishes in registers (bias, residual, ReLU
/// or no activation), beside a last row of clipped tiles and a second image, which take the
/// general epilogue; and an activation only the general epilogue applies.
#[test]
fn whole_tile_groups_match_reference() {
    let (in_channels, out_channels, height, width) = (24, 40, 33, 32);
    let input_shape = [2, in_channels, height, width];
    let output_length = 2 * out_channels * height * width;
    for (with_residual, activation, threads) in [
        (true, Some(Activation::Relu), 1),
        (true, Some(Activation::Relu), 2),
        (false, Some(Activation::Relu), 2),
        (true, None, 1),
        (false, None, 2),
        (true, Some(Activation::Relu6), 1),
    ] {
        let case = Case {
            input_shape,
            out_channels,
            padding: [1, 1],
            input: pseudo_random(input_shape.iter().product(), 9, 1.0),
            weight: pseudo_random(out_channels * in_channels * 9, 10, 0.3),
            bias: Some(pseudo_random(out_channels, 11, 0.5)),
            residual: with_residual.then(|| pseudo_random(output_length, 12, 1.0)),
            activation,
            threads,
            variant: Variant::F4x4,
            block_scratch_bytes: None,
        };
        let error = case.relative_error();
        assert!(
            error <= 1e-5,
            "residual {with_residual}, {activation:?}, {threads} threads: relative error {error}"
        );
    }
}

#[test]
fn automatic_choice_takes_winograd_only_where_it_pays() {
    let options = Conv2dOptions {
        padding: [1, 1],
        ..Conv2dOptions::default()
    };
    let choose = |out_channels: usize, in_channels: usize, options: Conv2dOptions| {
        let weight = vec![0.0; out_channels * in_channels * 9];
        let conv =
            PackedConv2d::new(&weight, [out_channels, in_channels, 3, 3], None, options).unwrap();
        match conv.method {
            super::super::Method::Winograd(weights) => Some(weights.variant),
            _ => None,
        }
    };
    assert_eq!(choose(64, 64, options), Some(Variant::F4x4));
    assert_eq!(choose(256, 128, options), Some(Variant::F4x4));
    assert_eq!(choose(8, 64, options), None);
    // Above 256 channels the GEMM; F(2x2, 3x3) when asked for.
    assert_eq!(choose(512, 512, options), None);
    assert_eq!(choose(512, 256, options), None);
    let asked = PackedConv2d::new_with_method(
        &[0.0; 512 * 256 * 9],
        [512, 256, 3, 3],
        None,
        options,
        ConvMethodChoice::Winograd,
    )
    .unwrap();
    assert!(matches!(
        asked.method,
        super::super::Method::Winograd(ref weights) if weights.variant == Variant::F2x2
    ));
    let strided = Conv2dOptions {
        stride: [2, 2],
        ..options
    };
    assert_eq!(choose(64, 64, strided), None);
    let forced = PackedConv2d::new_with_method(
        &[0.0; 64 * 64 * 9],
        [64, 64, 3, 3],
        None,
        strided,
        ConvMethodChoice::Winograd,
    );
    assert!(forced.is_err());
}

/// Whether two computations of the same transformed values agree to 1e-5 of their scale (the
/// largest magnitude among them, at least 1). The transforms sum terms several times larger
/// than some of their results (F(4x4)'s input transform weighs values by up to 25), so a value
/// that cancels to near zero carries the rounding of its terms: measured against itself, the
/// FMA and the plain forms at times disagreed by more than 1e-5 of such a value (proptest found
/// one such patch on the code before this measure as well).
fn agree(actual: &[f32], expected: &[f32]) -> bool {
    let scale = expected
        .iter()
        .fold(1.0f32, |largest, value| largest.max(value.abs()));
    actual.len() == expected.len()
        && actual
            .iter()
            .zip(expected)
            .all(|(actual, expected)| (actual - expected).abs() <= 1e-5 * scale)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// The AVX2 transforms of one group of tiles agree with their portable twins, on patches
    /// read from a strided plane and from 6-wide copies.
    #[test]
    fn vector_transforms_match_portable_ones(
        plane in values(9 * 40),
        products in values(POINTS * 11),
        bias in -2.0f32..2.0,
    ) {
        #[cfg(target_arch = "x86_64")]
        if avx2_available() {
            let sources: [PatchSource<'_>; LANES] = std::array::from_fn(|lane| PatchSource {
                data: &plane,
                offset: (lane % 3) * 40 + lane * 4,
                row_stride: if lane == 5 { INPUT_TILE } else { 40 },
            });
            let matrix_length = 11;
            let mut expected = vec![0.0; POINTS * matrix_length];
            let mut actual = expected.clone();
            transform_input_group(&sources, &mut expected, matrix_length);
            // SAFETY: AVX2 and FMA are available (checked above).
            unsafe { x86_64::transform_input_group(&sources, &mut actual, matrix_length) };
            prop_assert!(agree(&actual, &expected), "{actual:?}\n{expected:?}");
            let mut expected_outputs: OutputTiles = [[0.0; 16]; LANES];
            let mut actual_outputs = expected_outputs;
            transform_output_group(&products, matrix_length, bias, &mut expected_outputs);
            // SAFETY: As above.
            unsafe {
                x86_64::transform_output_group(&products, matrix_length, bias, &mut actual_outputs)
            };
            prop_assert!(agree(
                actual_outputs.as_flattened(),
                expected_outputs.as_flattened()
            ));
            // F(2x2, 3x3): the AVX2 build of the same code.
            let mut expected = vec![0.0; F2X2_POINTS * matrix_length];
            let mut actual = expected.clone();
            transform_input_group_f2x2(&sources, &mut expected, matrix_length);
            // SAFETY: As above.
            unsafe { x86_64::transform_input_group_f2x2(&sources, &mut actual, matrix_length) };
            prop_assert!(agree(&actual, &expected), "{actual:?}\n{expected:?}");
            let mut expected_outputs: OutputTiles = [[0.0; 16]; LANES];
            let mut actual_outputs = expected_outputs;
            transform_output_group_f2x2(&products, matrix_length, bias, &mut expected_outputs);
            // SAFETY: As above.
            unsafe {
                x86_64::transform_output_group_f2x2(
                    &products,
                    matrix_length,
                    bias,
                    &mut actual_outputs,
                )
            };
            prop_assert_eq!(actual_outputs, expected_outputs);
        }
    }
}

/// Point matrices are whole cache lines apart, an odd number of them, so that the 36 lines of
/// one group of tiles fall into 36 different sets of a 64-set cache.
#[test]
fn point_strides_spread_the_points_over_cache_sets() {
    const LINE: usize = 16;
    for length in (1..20_000)
        .step_by(7)
        .chain([1024, 2048, 3072, 4096, 16384])
    {
        let stride = super::point_stride(length);
        assert!(
            stride >= length && stride < length + 2 * LINE,
            "{length}: {stride}"
        );
        assert_eq!(stride % LINE, 0, "{length}: {stride}");
        let sets: std::collections::BTreeSet<usize> = (0..POINTS)
            .map(|point| point * stride / LINE % 64)
            .collect();
        assert_eq!(sets.len(), POINTS, "{length}: {stride}");
    }
}
