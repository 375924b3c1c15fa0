//! The options of max and average pooling, with PyTorch's defaults.

/// Options of `max_pool2d`; each pair is `[height, width]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxPool2dOptions {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub ceil_mode: bool,
}

impl MaxPool2dOptions {
    /// PyTorch's defaults for a kernel: stride equal to the kernel, no padding, no dilation.
    pub fn new(kernel: [usize; 2]) -> Self {
        Self {
            kernel,
            stride: kernel,
            padding: [0, 0],
            dilation: [1, 1],
            ceil_mode: false,
        }
    }
}

/// Options of `avg_pool2d`; each pair is `[height, width]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AvgPool2dOptions {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub ceil_mode: bool,
    /// Count padding elements in the divisor (PyTorch's default is `true`).
    pub count_include_pad: bool,
    /// Divide by this instead of the window size.
    pub divisor_override: Option<usize>,
}

impl AvgPool2dOptions {
    /// PyTorch's defaults for a kernel: stride equal to the kernel, no padding, padding counted.
    pub fn new(kernel: [usize; 2]) -> Self {
        Self {
            kernel,
            stride: kernel,
            padding: [0, 0],
            ceil_mode: false,
            count_include_pad: true,
            divisor_override: None,
        }
    }
}

/// Options of `max_pool1d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxPool1dOptions {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    pub ceil_mode: bool,
}

/// Options of `avg_pool1d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AvgPool1dOptions {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub ceil_mode: bool,
    pub count_include_pad: bool,
}
