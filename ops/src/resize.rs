//! The geometry of resizing (`resize`, `upsample`) and of the other spatial ops that the ONNX
//! importer needs: transposed convolution and padding. Plain numbers only, shared by the IR and
//! the runtime's kernels.

/// How an output pixel takes its value from the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResizeMode {
    /// The nearest input pixel, chosen by a [`NearestRounding`].
    Nearest,
    /// Bilinear interpolation of the four input pixels around the source coordinate.
    Linear,
}

/// How an output coordinate maps to an input coordinate (ONNX Resize's
/// `coordinate_transformation_mode`), for an axis of input size `in`, output size `out` and
/// scale `s` (the given scale, or `out / in` when sizes are given).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CoordinateTransform {
    /// `(x + 0.5) / s - 0.5`.
    HalfPixel,
    /// As `HalfPixel`, but 0 when `out` is 1 (PyTorch's bilinear with `align_corners=False`).
    PytorchHalfPixel,
    /// `x * (in - 1) / (out - 1)`, 0 when `out` is 1.
    AlignCorners,
    /// `x / s` (PyTorch's nearest).
    Asymmetric,
}

/// How a fractional source coordinate picks the nearest input pixel (ONNX's `nearest_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NearestRounding {
    /// Round to nearest, halves down.
    RoundPreferFloor,
    /// Round to nearest, halves up.
    RoundPreferCeil,
    /// Round down (PyTorch's nearest).
    Floor,
    /// Round up.
    Ceil,
}

/// Options of a 2-D resize of `[n, c, h, w]` images.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Resize2dOptions {
    /// The output's height and width.
    pub output_size: [usize; 2],
    /// The scale of each axis used by the coordinate transform: the given scale factor, or
    /// `output / input` when the output size was given.
    pub scale: [f32; 2],
    pub mode: ResizeMode,
    pub coordinates: CoordinateTransform,
    /// Used by `ResizeMode::Nearest` only.
    pub nearest: NearestRounding,
}

impl CoordinateTransform {
    /// Every transform, for tests and name tables.
    pub const ALL: [CoordinateTransform; 4] = [
        CoordinateTransform::HalfPixel,
        CoordinateTransform::PytorchHalfPixel,
        CoordinateTransform::AlignCorners,
        CoordinateTransform::Asymmetric,
    ];

    /// The name in `.nn` files and in ONNX.
    pub fn name(self) -> &'static str {
        match self {
            CoordinateTransform::HalfPixel => "half_pixel",
            CoordinateTransform::PytorchHalfPixel => "pytorch_half_pixel",
            CoordinateTransform::AlignCorners => "align_corners",
            CoordinateTransform::Asymmetric => "asymmetric",
        }
    }

    /// The transform called `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|mode| mode.name() == name)
    }

    /// The input coordinate of output coordinate `x` along an axis resized from `input` to
    /// `output` elements with `scale`.
    #[inline]
    pub fn source(self, x: usize, input: usize, output: usize, scale: f32) -> f32 {
        let x = x as f32;
        match self {
            CoordinateTransform::HalfPixel => (x + 0.5) / scale - 0.5,
            CoordinateTransform::PytorchHalfPixel if output > 1 => (x + 0.5) / scale - 0.5,
            CoordinateTransform::PytorchHalfPixel => 0.0,
            CoordinateTransform::AlignCorners if output > 1 => {
                x * (input - 1) as f32 / (output - 1) as f32
            }
            CoordinateTransform::AlignCorners => 0.0,
            CoordinateTransform::Asymmetric => x / scale,
        }
    }
}

impl NearestRounding {
    /// Every rounding, for tests and name tables.
    pub const ALL: [NearestRounding; 4] = [
        NearestRounding::RoundPreferFloor,
        NearestRounding::RoundPreferCeil,
        NearestRounding::Floor,
        NearestRounding::Ceil,
    ];

    /// The name in `.nn` files and in ONNX.
    pub fn name(self) -> &'static str {
        match self {
            NearestRounding::RoundPreferFloor => "round_prefer_floor",
            NearestRounding::RoundPreferCeil => "round_prefer_ceil",
            NearestRounding::Floor => "floor",
            NearestRounding::Ceil => "ceil",
        }
    }

    /// The rounding called `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|mode| mode.name() == name)
    }

    /// The input index nearest to source coordinate `x` on an axis of `input` elements,
    /// clamped into the axis.
    #[inline]
    pub fn index(self, x: f32, input: usize) -> usize {
        let rounded = match self {
            NearestRounding::RoundPreferFloor if x == x.floor() + 0.5 => x.floor(),
            NearestRounding::RoundPreferFloor => x.round(),
            NearestRounding::RoundPreferCeil => (x + 0.5).floor(),
            NearestRounding::Floor => x.floor(),
            NearestRounding::Ceil => x.ceil(),
        };
        (rounded.max(0.0) as usize).min(input.saturating_sub(1))
    }
}

impl ResizeMode {
    /// The name in `.nn` files (`bilinear` for `Linear`, as PyTorch calls it).
    pub fn name(self) -> &'static str {
        match self {
            ResizeMode::Nearest => "nearest",
            ResizeMode::Linear => "bilinear",
        }
    }
}

/// The two input indices and the weight of the second for a linear interpolation at source
/// coordinate `x` on an axis of `input` elements (the coordinate clamped into the axis first, as
/// ONNX Runtime and PyTorch do).
#[inline]
pub fn linear_taps(x: f32, input: usize) -> (usize, usize, f32) {
    let last = input.saturating_sub(1);
    let x = x.clamp(0.0, last as f32);
    let low = (x.floor() as usize).min(last);
    let high = (low + 1).min(last);
    (low, high, x - low as f32)
}

/// Options of a 2-D transposed convolution (PyTorch's `ConvTranspose2d`, ONNX's
/// `ConvTranspose`) of `[n, c, h, w]` images by a `[c, out / groups, kh, kw]` weight. The output
/// is `(in - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1` on each axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvTranspose2dOptions {
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub output_padding: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
}

impl Default for ConvTranspose2dOptions {
    fn default() -> Self {
        Self {
            stride: [1, 1],
            padding: [0, 0],
            output_padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
        }
    }
}

impl ConvTranspose2dOptions {
    /// The output size of one axis, `None` when padding removes everything.
    pub fn output_size(&self, axis: usize, input: usize, kernel: usize) -> Option<usize> {
        let full = input.checked_sub(1)? * self.stride[axis]
            + self.dilation[axis] * kernel.checked_sub(1)?
            + self.output_padding[axis]
            + 1;
        full.checked_sub(2 * self.padding[axis])
            .filter(|&size| size > 0)
    }
}

/// How `pad` fills the border.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PadMode {
    /// A constant value.
    Constant,
    /// The mirror image without repeating the edge (`[a b c]` -> `c b [a b c] b a`).
    Reflect,
    /// The edge value repeated.
    Edge,
}

impl PadMode {
    /// Every mode.
    pub const ALL: [PadMode; 3] = [PadMode::Constant, PadMode::Reflect, PadMode::Edge];

    /// The name in `.nn` files and in ONNX.
    pub fn name(self) -> &'static str {
        match self {
            PadMode::Constant => "constant",
            PadMode::Reflect => "reflect",
            PadMode::Edge => "edge",
        }
    }

    /// The mode called `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|mode| mode.name() == name)
    }

    /// The input index that output index `x` (in padded coordinates, `before` added on the
    /// left) reads on an axis of `input` elements, or `None` for the constant border. Reflection
    /// needs `before, after < input`, which the shape rule checks.
    #[inline]
    pub fn source(self, x: usize, before: usize, input: usize) -> Option<usize> {
        let position = x as isize - before as isize;
        let last = input as isize - 1;
        if (0..=last).contains(&position) {
            return Some(position as usize);
        }
        match self {
            PadMode::Constant => None,
            PadMode::Edge => Some(position.clamp(0, last) as usize),
            PadMode::Reflect => {
                let reflected = if position < 0 {
                    -position
                } else {
                    2 * last - position
                };
                Some(reflected.clamp(0, last) as usize)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rounding_follows_onnx() {
        let cases = [
            (1.5, [1, 2, 1, 2]),
            (1.2, [1, 1, 1, 2]),
            (1.7, [2, 2, 1, 2]),
        ];
        for (x, expected) in cases {
            let got: Vec<usize> = NearestRounding::ALL
                .iter()
                .map(|mode| mode.index(x, 10))
                .collect();
            assert_eq!(got, expected, "{x}");
        }
        assert_eq!(NearestRounding::Floor.index(-0.7, 4), 0);
        assert_eq!(NearestRounding::Ceil.index(3.2, 4), 3);
    }

    #[test]
    fn coordinate_transforms_and_names() {
        let half = CoordinateTransform::HalfPixel.source(0, 4, 8, 2.0);
        assert_eq!(half, -0.25);
        assert_eq!(CoordinateTransform::AlignCorners.source(7, 4, 8, 2.0), 3.0);
        assert_eq!(CoordinateTransform::Asymmetric.source(3, 4, 8, 2.0), 1.5);
        assert_eq!(
            CoordinateTransform::PytorchHalfPixel.source(0, 4, 1, 0.25),
            0.0
        );
        for mode in CoordinateTransform::ALL {
            assert_eq!(CoordinateTransform::from_name(mode.name()), Some(mode));
        }
        assert_eq!(linear_taps(-0.25, 4), (0, 1, 0.0));
        assert_eq!(linear_taps(3.5, 4), (3, 3, 0.0));
    }

    #[test]
    fn pad_sources() {
        let read = |mode: PadMode| -> Vec<Option<usize>> {
            (0..7).map(|x| mode.source(x, 2, 3)).collect()
        };
        assert_eq!(
            read(PadMode::Reflect),
            [2, 1, 0, 1, 2, 1, 0].map(Some).to_vec()
        );
        assert_eq!(
            read(PadMode::Edge),
            [0, 0, 0, 1, 2, 2, 2].map(Some).to_vec()
        );
        assert_eq!(read(PadMode::Constant)[..3], [None, None, Some(0)]);
    }

    #[test]
    fn transposed_output_size() {
        let options = ConvTranspose2dOptions {
            stride: [2, 2],
            padding: [1, 1],
            output_padding: [1, 0],
            ..Default::default()
        };
        assert_eq!(options.output_size(0, 5, 3), Some(10));
        assert_eq!(options.output_size(1, 5, 3), Some(9));
    }
}
