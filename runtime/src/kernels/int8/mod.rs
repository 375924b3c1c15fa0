//! Int8 convolution: u8 activations times s8 weights with per-output-channel scales, summed
//! exactly in i32, as ONNX Runtime's static (QDQ) quantization computes a convolution.
//!
//! A layer's weight is quantized once, at load time, symmetrically per output channel
//! (`s_w[c] = max |w_c| / 127`, `q = clamp(round(w / s_w[c]), -127, 127)`); the input's scale
//! and zero point come from calibration (`ActivationQuantization`). A call quantizes its f32 input
//! to u8 once, multiplies in integers, and turns the i32 sums back to f32 in the epilogue:
//! `y = s_x * s_w[c] * sum((x_q - zp) * w_q) + bias[c] (+ residual)`, then the activation.
//!
//! - `gemm.rs`: the u8 x s8 -> i32 GEMM. A is row-major u8 (im2col rows, or the quantized image
//!   itself for a 1x1 stride-1 convolution), B the weights packed once in panels of 16 columns and
//!   groups of 4 steps of k (the layout of AVX512-VNNI's `vpdpbusd`, 64 MACs per instruction).
//!   The zero point is taken out afterwards with the per-column sums of the weights.
//! - `amx.rs`: the GEMM's blocks of 32 rows in AMX tiles, on processors that have AMX-INT8.
//! - `kernels.rs`: the micro-kernels, chosen at run time: AMX, AVX512-VNNI, AVX2 (exact: u8 and s8
//!   widened to i16 and multiplied with `vpmaddwd`, since `vpmaddubsw` saturates), and portable.
//!   [`set_max_isa`] caps the choice, as the f32 GEMM's does.
//! - `depthwise.rs`: the depthwise convolution over channels-last images.
//! - `depthwise_vnni.rs`: its AVX512-VNNI row, four taps per `vpdpbusd` and the epilogue in
//!   registers.
//! - `conv.rs`: [`PackedConv2dInt8`], which quantizes the input (and transposes an NCHW one to
//!   channels-last as it goes), builds the im2col rows and calls the above.

#[cfg(target_arch = "x86_64")]
mod amx;
mod conv;
mod depthwise;
mod depthwise_vnni;
mod gemm;
mod kernels;
mod quantize;
#[cfg(test)]
mod tests;

pub use conv::{Int8Input, Int8Output, PackedConv2dInt8};
pub use nnc_ops::ActivationQuantization;

/// The instruction sets the int8 kernels have micro-kernels for, from the slowest to the fastest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Int8Isa {
    /// Plain Rust, which every processor runs.
    Portable,
    /// AVX2: u8 and s8 widened to i16, pairs multiplied and added into i32 with `vpmaddwd`.
    Avx2,
    /// AVX512-VNNI (with AVX512F and BW): `vpdpbusd`, four u8 x s8 products per i32 lane.
    Avx512Vnni,
    /// AMX-INT8 for the GEMM's strips (`tdpbusd`, a 16 x 64 by 64 x 16 tile product per
    /// instruction), AVX512-VNNI for the rest; where the operating system lets the process use
    /// the tiles.
    Amx,
}

impl Int8Isa {
    /// Every instruction set, the slowest first.
    pub const ALL: [Int8Isa; 4] = [
        Int8Isa::Portable,
        Int8Isa::Avx2,
        Int8Isa::Avx512Vnni,
        Int8Isa::Amx,
    ];

    /// A short lower-case name (`portable`, `avx2`, `avx512vnni`, `amx`).
    pub fn name(self) -> &'static str {
        match self {
            Int8Isa::Portable => "portable",
            Int8Isa::Avx2 => "avx2",
            Int8Isa::Avx512Vnni => "avx512vnni",
            Int8Isa::Amx => "amx",
        }
    }

    /// Whether the running processor has this instruction set.
    pub fn is_available(self) -> bool {
        match self {
            Int8Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Int8Isa::Avx2 => is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Int8Isa::Avx512Vnni => {
                is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "x86_64")]
            Int8Isa::Amx => amx::is_available(),
            #[cfg(not(target_arch = "x86_64"))]
            Int8Isa::Avx2 | Int8Isa::Avx512Vnni | Int8Isa::Amx => false,
        }
    }
}

/// The cap `set_max_isa` sets, as an `Int8Isa` discriminant (the fastest by default).
static MAX_ISA: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(Int8Isa::Amx as u8);

/// Caps the instruction set of the int8 kernels for the whole process, so that one binary can
/// time or test each; the default is the fastest the processor has. Packed weights do not depend
/// on it.
pub fn set_max_isa(isa: Int8Isa) {
    MAX_ISA.store(isa as u8, std::sync::atomic::Ordering::Relaxed);
}

/// The instruction set the int8 kernels run with: the fastest this processor has, up to the cap
/// of `set_max_isa`.
pub fn selected_isa() -> Int8Isa {
    let cap = MAX_ISA.load(std::sync::atomic::Ordering::Relaxed);
    [Int8Isa::Amx, Int8Isa::Avx512Vnni, Int8Isa::Avx2]
        .into_iter()
        .find(|isa| *isa as u8 <= cap && isa.is_available())
        .unwrap_or(Int8Isa::Portable)
}

/// Scratch memory of the int8 convolutions, kept in `ConvWorkspace` and reused across calls.
#[derive(Clone, Debug, Default)]
pub(crate) struct Int8Workspace {
    /// The quantized input image (or images), channels-last.
    image: Vec<u8>,
    /// The im2col rows of one image.
    columns: Vec<u8>,
    /// The channels-last f32 output of an NCHW call, before it is transposed.
    staging: Vec<f32>,
}

/// `buffer[..length]`, grown (never shrunk) if it is shorter.
fn grown<T: Clone + Default>(buffer: &mut Vec<T>, length: usize) -> &mut [T] {
    if buffer.len() < length {
        buffer.resize(length, T::default());
    }
    &mut buffer[..length]
}
