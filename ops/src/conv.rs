//! The geometry of the convolutions: strides, padding, dilation and groups.

/// Geometry of a 2-D convolution; each pair is `[height, width]`, padding is symmetric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dOptions {
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
}

impl Default for Conv2dOptions {
    fn default() -> Self {
        Self {
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
        }
    }
}

/// Below this many input or output channels Winograd's transforms cost more than they save.
pub const MIN_WINOGRAD_CHANNELS: usize = 16;

/// Above this many channels F(4x4, 3x3)'s transformed filters (four times the weight) stop
/// paying: such layers sit at the end of a network, on images too small to fill the products;
/// they run F(2x2, 3x3) when Winograd is asked for, the GEMM otherwise.
pub const MAX_F4X4_CHANNELS: usize = 256;

/// The most steps (`in_channels * kernel_h * kernel_w`) of a channels-last convolution that
/// reads an NCHW image in place: one block of the GEMM's packed weights.
pub const MAX_NCHW_TO_CHANNELS_LAST_DEPTH: usize = 384;

/// The largest column stride of a channels-last convolution that reads an NCHW image in place
/// (which splits the image into that many phases).
pub const MAX_NCHW_TO_CHANNELS_LAST_STRIDE: usize = 4;

impl Conv2dOptions {
    /// Whether the runtime's channels-last convolution reads an NCHW image in place, writing its
    /// channels-last output in the same pass (on processors with its kernel, AVX2 or AVX-512;
    /// elsewhere it transposes the image first), for a weight of `weight_shape` (`[out, in /
    /// groups, kh, kw]`): one group, unit dilation, a stride of at most
    /// [`MAX_NCHW_TO_CHANNELS_LAST_STRIDE`] and at most the kernel, and at most
    /// [`MAX_NCHW_TO_CHANNELS_LAST_DEPTH`] steps. A network's stem is such a layer; the
    /// compiler's layout choice lets one write the channels-last region after it.
    pub fn reads_nchw_into_channels_last(&self, weight_shape: [usize; 4]) -> bool {
        let [_, in_channels, kernel_h, kernel_w] = weight_shape;
        self.groups == 1
            && self.dilation == [1, 1]
            && self.stride[1] <= MAX_NCHW_TO_CHANNELS_LAST_STRIDE
            && self.stride[0] <= kernel_h
            && self.stride[1] <= kernel_w
            && in_channels
                .checked_mul(kernel_h)
                .and_then(|taps| taps.checked_mul(kernel_w))
                .is_some_and(|depth| depth <= MAX_NCHW_TO_CHANNELS_LAST_DEPTH)
    }

    /// Whether the runtime's NCHW convolution picks Winograd for a weight of `weight_shape`
    /// (`[out, in / groups, kh, kw]`): a 3x3 kernel, unit stride and dilation, one group,
    /// enough channels that the products dominate the transforms, and no more than
    /// [`MAX_F4X4_CHANNELS`]. Above, F(2x2, 3x3) (which such layers would run) does not pay once
    /// their weights come from memory: ResNet-18's 512-channel layers on 7x7 images read 16 MB
    /// of transformed filters where the GEMM reads the 9.4 MB weight, and in the network took
    /// 1.40 ms each at two threads against the GEMM's 0.98 (the same at one thread: `nnc bench`,
    /// 21.64 against 21.68 ms end to end). Asked for by name, they still run it. The compiler's
    /// layout choice asks too, to leave those layers NCHW.
    pub fn prefers_winograd(&self, weight_shape: [usize; 4]) -> bool {
        let [out_channels, in_channels, _, _] = weight_shape;
        self.supports_winograd(weight_shape)
            && in_channels.min(out_channels) >= MIN_WINOGRAD_CHANNELS
            && in_channels.max(out_channels) <= MAX_F4X4_CHANNELS
    }

    /// Whether the Winograd method computes a layer of this shape at all (a padding over 2
    /// would give tiles wholly inside the padding, which the input transform does not expect).
    pub fn supports_winograd(&self, weight_shape: [usize; 4]) -> bool {
        weight_shape[2..] == [3, 3]
            && self.padding[0] <= 2
            && self.padding[1] <= 2
            && self.stride == [1, 1]
            && self.dilation == [1, 1]
            && self.groups == 1
    }
}

/// Geometry of a 1-D convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv1dOptions {
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    pub groups: usize,
}

impl Default for Conv1dOptions {
    fn default() -> Self {
        Self {
            stride: 1,
            padding: 0,
            dilation: 1,
            groups: 1,
        }
    }
}
