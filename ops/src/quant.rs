//! The storage formats of quantized weights: GGUF's block formats, and half precision, named and
//! sized. The block layouts and the kernels that read them are the runtime's
//! (`nnc_runtime::kernels::quantized`); the compiler needs only to name a format and to know
//! which row lengths it can hold.

/// Values per block, in every format.
pub const BLOCK_LENGTH: usize = 32;

/// The storage format of a quantized matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantFormat {
    /// 8-bit values with one scale per block.
    Q8_0,
    /// 4-bit values centred on 8, with one scale per block.
    Q4_0,
    /// 4-bit values with a scale and a minimum per block.
    Q4_1,
    /// IEEE half-precision values (GGUF's `F16`), 32 to a block with no scale: half the bytes of
    /// f32 and about three decimal digits. It has no integer products, so layers on it always
    /// multiply in the exact mode.
    F16,
}

impl QuantFormat {
    /// Every format, for tests and command-line parsing.
    pub const ALL: [QuantFormat; 4] = [
        QuantFormat::Q8_0,
        QuantFormat::Q4_0,
        QuantFormat::Q4_1,
        QuantFormat::F16,
    ];

    /// Bytes of one block of `BLOCK_LENGTH` values.
    pub const fn block_bytes(self) -> usize {
        match self {
            QuantFormat::Q8_0 => 2 + BLOCK_LENGTH,
            QuantFormat::Q4_0 => 2 + BLOCK_LENGTH / 2,
            QuantFormat::Q4_1 => 4 + BLOCK_LENGTH / 2,
            QuantFormat::F16 => 2 * BLOCK_LENGTH,
        }
    }

    /// The name llama.cpp and the command line use: `q8_0`, `q4_0`, `q4_1`, `f16`.
    pub const fn name(self) -> &'static str {
        match self {
            QuantFormat::Q8_0 => "q8_0",
            QuantFormat::Q4_0 => "q4_0",
            QuantFormat::Q4_1 => "q4_1",
            QuantFormat::F16 => "f16",
        }
    }

    /// The format named `name` (as [`QuantFormat::name`] spells it, in any case).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|format| format.name().eq_ignore_ascii_case(name))
    }

    /// Bytes of a row of `cols` values, or `None` if `cols` is not a whole number of blocks or
    /// the size overflows.
    pub fn row_bytes(self, cols: usize) -> Option<usize> {
        if !cols.is_multiple_of(BLOCK_LENGTH) {
            return None;
        }
        (cols / BLOCK_LENGTH).checked_mul(self.block_bytes())
    }
}

impl std::fmt::Display for QuantFormat {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.name())
    }
}

/// How a layer multiplies by quantized weights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum QuantizedMode {
    /// f32 activations; each block of weights is dequantized in registers before it is used.
    /// Matches the f32 layer on the dequantized weights up to the order of additions.
    #[default]
    Exact,
    /// Activations quantized to 8 bits per block of 32 and multiplied in integers, as llama.cpp
    /// does: less to read and compute, at the cost of rounding the activations.
    Fast,
}

impl QuantizedMode {
    /// The name the command line uses: `exact` or `fast`.
    pub const fn name(self) -> &'static str {
        match self {
            QuantizedMode::Exact => "exact",
            QuantizedMode::Fast => "fast",
        }
    }

    /// The mode named `name` (`exact` or `fast`, in any case).
    pub fn from_name(name: &str) -> Option<Self> {
        [QuantizedMode::Exact, QuantizedMode::Fast]
            .into_iter()
            .find(|mode| mode.name().eq_ignore_ascii_case(name))
    }
}

/// An affine u8 quantization of activations: `real = scale * (q - zero_point)`, as ONNX
/// Runtime's static quantization stores activations (`QUInt8`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActivationQuantization {
    /// The real value of one step of `q`.
    pub scale: f32,
    /// The `q` that stands for a real zero (padding pixels are this value).
    pub zero_point: u8,
}

impl ActivationQuantization {
    /// ONNX Runtime's MinMax rule: the range is widened to include 0, `scale = (max - min) /
    /// 255`, `zero_point = round(-min / scale)` clamped to `0..=255`; a zero-width range (or one
    /// too narrow for a normal `f32` scale) gets scale 1 and zero point 0. Rounding is to the
    /// nearest, ties to even, as NumPy's `round` that ONNX Runtime's calibration uses.
    pub fn from_range(min: f32, max: f32) -> Self {
        let min = min.min(0.0);
        let max = max.max(0.0);
        let scale = (max - min) / 255.0;
        let usable = scale.is_finite() && scale >= f32::MIN_POSITIVE;
        if !usable {
            return Self {
                scale: 1.0,
                zero_point: 0,
            };
        }
        let zero_point = (-min / scale).round_ties_even().clamp(0.0, 255.0) as u8;
        Self { scale, zero_point }
    }

    /// `clamp(round_ties_even(x * (1 / scale)) + zero_point, 0, 255)` (a NaN becomes 0): ONNX
    /// Runtime's `QuantizeLinear` divides by the scale instead, and the two differ only where
    /// `x / scale` lies within an ulp of a half step, by one step. A division costs a vector
    /// `vdivps` per eight values, which was a fifth of an int8 MobileNetV2 whose layers pass
    /// quantized values to each other; every int8 path (kernels, interpreter, references)
    /// quantizes with this one function's arithmetic.
    #[inline(always)]
    pub fn quantize(self, x: f32) -> u8 {
        ((x * self.inverse_scale()).round_ties_even() + f32::from(self.zero_point))
            .clamp(0.0, 255.0) as u8
    }

    /// `1 / scale`, by which [`Self::quantize`] multiplies.
    #[inline(always)]
    pub fn inverse_scale(self) -> f32 {
        1.0 / self.scale
    }

    /// The real value `q` stands for.
    pub fn dequantize(self, q: u8) -> f32 {
        self.scale * (f32::from(q) - f32::from(self.zero_point))
    }
}

#[cfg(test)]
mod activation_quantization_tests {
    use super::ActivationQuantization;

    #[test]
    fn from_range_follows_onnx_runtime_min_max() {
        let quantization = ActivationQuantization::from_range(-1.0, 3.0);
        assert_eq!(quantization.scale, 4.0 / 255.0);
        assert_eq!(quantization.zero_point, 64);
        // A range above zero is widened to start at zero.
        let positive = ActivationQuantization::from_range(2.0, 5.1);
        assert_eq!(positive.zero_point, 0);
        assert_eq!(positive.scale, 5.1 / 255.0);
        // A range below zero puts zero at the top.
        assert_eq!(
            ActivationQuantization::from_range(-2.0, -1.0).zero_point,
            255
        );
        let empty = ActivationQuantization::from_range(0.0, 0.0);
        assert_eq!((empty.scale, empty.zero_point), (1.0, 0));
    }

    #[test]
    fn quantize_rounds_ties_to_even_and_clamps() {
        let quantization = ActivationQuantization {
            scale: 0.5,
            zero_point: 10,
        };
        assert_eq!(quantization.quantize(0.0), 10);
        assert_eq!(quantization.quantize(0.25), 10); // 0.5 rounds to 0
        assert_eq!(quantization.quantize(0.75), 12); // 1.5 rounds to 2
        assert_eq!(quantization.quantize(-100.0), 0);
        assert_eq!(quantization.quantize(1000.0), 255);
        assert_eq!(quantization.quantize(f32::NAN), 0);
        assert_eq!(quantization.dequantize(12), 1.0);
    }
}
