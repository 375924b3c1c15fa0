//! The storage formats of quantized weights: GGUF's block formats, named and sized. The block
//! layouts and the kernels that read them are the runtime's (`nnc_runtime::kernels::quantized`);
//! the compiler needs only to name a format and to know which row lengths it can hold.

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
}

impl QuantFormat {
    /// Every format, for tests and command-line parsing.
    pub const ALL: [QuantFormat; 3] = [QuantFormat::Q8_0, QuantFormat::Q4_0, QuantFormat::Q4_1];

    /// Bytes of one block of `BLOCK_LENGTH` values.
    pub const fn block_bytes(self) -> usize {
        match self {
            QuantFormat::Q8_0 => 2 + BLOCK_LENGTH,
            QuantFormat::Q4_0 => 2 + BLOCK_LENGTH / 2,
            QuantFormat::Q4_1 => 4 + BLOCK_LENGTH / 2,
        }
    }

    /// The name llama.cpp and the command line use: `q8_0`, `q4_0`, `q4_1`.
    pub const fn name(self) -> &'static str {
        match self {
            QuantFormat::Q8_0 => "q8_0",
            QuantFormat::Q4_0 => "q4_0",
            QuantFormat::Q4_1 => "q4_1",
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
