//! A convolution followed by max pooling, as one layer: a ResNet stem (7x7/s2, 3 to 64 channels,
//! then 3x3/s2 max pooling).
//!
//! Apart, the convolution writes its whole output (3.2 MB for a 224x224 stem, more than a core's
//! L2) and the pooling reads it back from memory: on a machine whose memory is slow to reach,
//! both layers wait on it (here the stem took 2.6 ms cold against 1.8 ms with its output in
//! cache, and the pooling 0.7 ms). Where the convolution runs on the indirect kernel (AVX2 and
//! AVX-512), [`PackedConv2dMaxPool`] computes it band by band of output rows into a per-task
//! buffer and pools each band right after, so only the pooled quarter goes out. Each output
//! element is the same arithmetic as the two layers apart, so the same bits. Elsewhere the
//! convolution runs whole into the workspace and the pooling after it, as two layers would.

use super::{ConvWorkspace, Geometry, Method, PackedConv2d, check_buffers, indirect};
use crate::error::KernelResult;
use crate::kernels::pool::{MaxPool2dOptions, max_pool2d, max_pool2d_output_shape};

/// A 2-D NCHW convolution layer and the max pooling of its output, ready to run.
#[derive(Clone, Debug)]
pub struct PackedConv2dMaxPool {
    conv: PackedConv2d,
    pool: MaxPool2dOptions,
}

impl PackedConv2dMaxPool {
    /// The convolution `conv` (with its activation) followed by max pooling with `pool`.
    pub fn new(conv: PackedConv2d, pool: MaxPool2dOptions) -> Self {
        Self { conv, pool }
    }

    /// The output shape `[N, out_channels, pooled_h, pooled_w]` for an input `[N, C, H, W]`.
    pub fn output_shape(&self, input_shape: [usize; 4]) -> KernelResult<[usize; 4]> {
        max_pool2d_output_shape(self.conv.output_shape(input_shape)?, &self.pool)
    }

    /// Runs the layer on an `[N, C, H, W]` input into an output of `output_shape(..)`.
    pub fn forward(
        &self,
        input: &[f32],
        input_shape: [usize; 4],
        output: &mut [f32],
        workspace: &mut ConvWorkspace,
    ) -> KernelResult<()> {
        self.forward_in_bands(input, input_shape, output, workspace, None)
    }

    /// [`Self::forward`], with bands of about `band_bytes` where given (tests try one row a
    /// band).
    pub(crate) fn forward_in_bands(
        &self,
        input: &[f32],
        input_shape: [usize; 4],
        output: &mut [f32],
        workspace: &mut ConvWorkspace,
        band_bytes: Option<usize>,
    ) -> KernelResult<()> {
        let conv_shape = self.conv.output_shape(input_shape)?;
        let output_shape = max_pool2d_output_shape(conv_shape, &self.pool)?;
        check_buffers(input, input_shape, output, output_shape, None)?;
        if output.is_empty() {
            return Ok(());
        }
        let geometry = Geometry::new(input_shape, conv_shape, self.conv.kernel, self.conv.options);
        if let Method::Gemm { group_weights } = &self.conv.method
            && let Some((kernel, layer)) = self.conv.indirect_call(group_weights, &geometry)
        {
            let band_bytes = band_bytes.unwrap_or(indirect::POOL_BAND_BYTES);
            let input_image = input_shape[1..].iter().product();
            let output_image = output_shape[1..].iter().product();
            let images = input.chunks_exact(input_image);
            for (input, output) in images.zip(output.chunks_exact_mut(output_image)) {
                let call = indirect::IndirectCall { input, ..layer };
                indirect::forward_max_pool(&call, kernel, &self.pool, output, band_bytes)?;
            }
            return Ok(());
        }
        let unpooled_len = conv_shape.iter().product();
        if workspace.unpooled.len() < unpooled_len {
            workspace.unpooled.resize(unpooled_len);
        }
        let unpooled = &mut workspace.unpooled[..unpooled_len];
        self.conv.run(input, input_shape, None, unpooled)?;
        max_pool2d(unpooled, conv_shape, &self.pool, output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::activation::Activation;
    use crate::kernels::conv::Conv2dOptions;
    use proptest::prelude::*;

    /// A convolution and a max pooling after it.
    #[derive(Clone, Debug)]
    struct Case {
        input_shape: [usize; 4],
        out_channels: usize,
        kernel: [usize; 2],
        conv: Conv2dOptions,
        pool: MaxPool2dOptions,
        bias: bool,
        activation: Option<Activation>,
    }

    fn values(length: usize, seed: usize) -> Vec<f32> {
        (0..length)
            .map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.0) - 1.0)
            .collect()
    }

    impl Case {
        /// The layer fused and the two layers apart, on one input, with bands of about
        /// `band_bytes`: the same bits.
        fn check(&self, band_bytes: Option<usize>) {
            let [_, channels, _, _] = self.input_shape;
            let weight_shape = [self.out_channels, channels, self.kernel[0], self.kernel[1]];
            let weight = values(weight_shape.iter().product(), 1);
            let bias = values(self.out_channels, 2);
            let conv = PackedConv2d::new(
                &weight,
                weight_shape,
                self.bias.then_some(&bias[..]),
                self.conv,
            )
            .unwrap()
            .with_activation(self.activation);
            let input = values(self.input_shape.iter().product(), 3);
            let conv_shape = conv.output_shape(self.input_shape).unwrap();
            let mut unpooled = vec![0.0; conv_shape.iter().product()];
            let mut workspace = ConvWorkspace::new();
            conv.forward(&input, self.input_shape, &mut unpooled, &mut workspace)
                .unwrap();
            let output_shape = max_pool2d_output_shape(conv_shape, &self.pool).unwrap();
            let mut expected = vec![0.0; output_shape.iter().product()];
            max_pool2d(&unpooled, conv_shape, &self.pool, &mut expected).unwrap();

            let fused = PackedConv2dMaxPool::new(conv, self.pool);
            assert_eq!(fused.output_shape(self.input_shape).unwrap(), output_shape);
            let mut output = vec![f32::NAN; expected.len()];
            fused
                .forward_in_bands(
                    &input,
                    self.input_shape,
                    &mut output,
                    &mut workspace,
                    band_bytes,
                )
                .unwrap();
            let same = output
                .iter()
                .zip(&expected)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{self:?}: fused {output:?}, apart {expected:?}");
        }
    }

    fn cases() -> impl Strategy<Value = Case> {
        (
            (1..3usize, 1..5usize, 8..40usize, 16..60usize),
            (1..30usize, 1..8usize, 1..8usize, 1..4usize, 0..4usize),
            (1..5usize, 1..4usize, 0..3usize, any::<bool>()),
            (any::<bool>(), 0..3usize),
        )
            .prop_filter_map(
                "a pooling padding over half its window, or an image smaller than a window",
                |(
                    (batch, channels, height, width),
                    (out_channels, kernel_h, kernel_w, stride, padding),
                    (pool_kernel, pool_stride, pool_padding, ceil_mode),
                    (bias, activation),
                )| {
                    let case = Case {
                        input_shape: [batch, channels, height, width],
                        out_channels,
                        kernel: [kernel_h, kernel_w],
                        conv: Conv2dOptions {
                            stride: [stride; 2],
                            padding: [padding.min(kernel_h - 1), padding.min(kernel_w - 1)],
                            ..Conv2dOptions::default()
                        },
                        pool: MaxPool2dOptions {
                            kernel: [pool_kernel; 2],
                            stride: [pool_stride; 2],
                            padding: [pool_padding; 2],
                            dilation: [1, 1],
                            ceil_mode,
                        },
                        bias,
                        // ReLU is clamped in the tile; GELU runs over each row after it.
                        activation: [None, Some(Activation::Relu), Some(Activation::Gelu)]
                            [activation],
                    };
                    let conv = PackedConv2d::new(
                        &values(out_channels * channels * kernel_h * kernel_w, 0),
                        [out_channels, channels, kernel_h, kernel_w],
                        None,
                        case.conv,
                    )
                    .ok()?;
                    let conv_shape = conv.output_shape(case.input_shape).ok()?;
                    max_pool2d_output_shape(conv_shape, &case.pool).ok()?;
                    Some(case)
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Bands of one pooled row (the rows two windows share kept from band to band), of a
        /// few, and of the size the kernel picks, on one and two threads (each task computing
        /// the rows it shares with the one before it again); the indirect path where the layer
        /// suits it (wide rows, a kernel no smaller than the stride), the layers apart elsewhere.
        #[test]
        fn conv_max_pool_matches_the_layers_apart(
            case in cases(),
            band_bytes in prop_oneof![Just(Some(1usize)), Just(Some(8192)), Just(None)],
            threads in 1..3usize,
        ) {
            let _guard = crate::test_support::lock_thread_count();
            crate::set_num_threads(threads);
            case.check(band_bytes);
            crate::set_num_threads(0);
        }
    }

    /// ResNet's stem (7x7/s2 and 3x3/s2 pooling) on a 64x64 image, bands of one pooled row.
    #[test]
    fn stem_in_bands_of_one_row() {
        let case = Case {
            input_shape: [1, 3, 64, 64],
            out_channels: 64,
            kernel: [7, 7],
            conv: Conv2dOptions {
                stride: [2, 2],
                padding: [3, 3],
                ..Conv2dOptions::default()
            },
            pool: MaxPool2dOptions {
                kernel: [3, 3],
                stride: [2, 2],
                padding: [1, 1],
                dilation: [1, 1],
                ceil_mode: false,
            },
            bias: true,
            activation: Some(Activation::Relu),
        };
        for band_bytes in [Some(1), None] {
            case.check(band_bytes);
        }
    }

    #[test]
    fn wrong_buffers_are_errors() {
        let conv =
            PackedConv2d::new(&[1.0; 9], [1, 1, 3, 3], None, Conv2dOptions::default()).unwrap();
        let pool = MaxPool2dOptions {
            kernel: [2, 2],
            stride: [2, 2],
            padding: [0, 0],
            dilation: [1, 1],
            ceil_mode: false,
        };
        let fused = PackedConv2dMaxPool::new(conv, pool);
        let mut workspace = ConvWorkspace::new();
        let mut output = vec![0.0; 4];
        assert!(
            fused
                .forward(&[0.0; 99], [1, 1, 10, 10], &mut output, &mut workspace)
                .is_err()
        );
        assert!(
            fused
                .forward(&[0.0; 100], [1, 1, 10, 10], &mut output, &mut workspace)
                .is_err()
        );
        assert!(
            fused
                .forward(&[0.0; 100], [1, 2, 10, 10], &mut output, &mut workspace)
                .is_err()
        );
    }
}
