//! The block formats of quantized weights, byte for byte as GGUF (llama.cpp's `ggml`) stores
//! them, with the plain quantizers and dequantizers that every kernel is checked against.
//!
//! Each format cuts a row into blocks of 32 values and stores per block one or two `f16`
//! numbers and the 32 quantized values:
//!
//! | format | bytes | layout | value `j` |
//! |---|---|---|---|
//! | Q8_0 | 34 | `d: f16, q: [i8; 32]` | `q[j] * d` |
//! | Q4_0 | 18 | `d: f16, q: [u8; 16]` | `(nibble(j) - 8) * d` |
//! | Q4_1 | 20 | `d: f16, m: f16, q: [u8; 16]` | `nibble(j) * d + m` |
//! | F16 | 64 | `v: [f16; 32]` | `v[j]` |
//!
//! where `nibble(j)` is the low four bits of `q[j]` for `j < 16` and the high four bits of
//! `q[j - 16]` for `j >= 16`. The quantizers are llama.cpp's reference ones (`*_ref`), so a row
//! quantized here is the row llama.cpp would write; F16 rounds each value to the nearest half
//! (ties to even), as llama.cpp's `ggml_fp32_to_fp16` does. F16 is not a block format in GGUF
//! (a row is plain halves), but 32 halves are a block of it byte for byte, so rows of whole
//! blocks are GGUF's rows.

use half::f16;

pub use nnc_ops::quant::{BLOCK_LENGTH, QuantFormat};

/// Reads the little-endian `f16` at `bytes[offset..offset + 2]` as an `f32`.
#[inline]
pub(super) fn read_f16(bytes: &[u8], offset: usize) -> f32 {
    f16::from_le_bytes([bytes[offset], bytes[offset + 1]]).to_f32()
}

/// The four-bit value `j` (`0..32`) of a 4-bit block's 16 bytes of values.
#[inline]
fn nibble(values: &[u8], j: usize) -> u8 {
    if j < BLOCK_LENGTH / 2 {
        values[j] & 0x0F
    } else {
        values[j - BLOCK_LENGTH / 2] >> 4
    }
}

/// Writes the values of one block into `output` (`BLOCK_LENGTH` values).
pub(super) fn dequantize_block(format: QuantFormat, block: &[u8], output: &mut [f32]) {
    let d = read_f16(block, 0);
    match format {
        QuantFormat::F16 => {
            for (j, output) in output.iter_mut().enumerate().take(BLOCK_LENGTH) {
                *output = read_f16(block, 2 * j);
            }
        }
        QuantFormat::Q8_0 => {
            for (output, &q) in output.iter_mut().zip(&block[2..2 + BLOCK_LENGTH]) {
                *output = f32::from(q as i8) * d;
            }
        }
        QuantFormat::Q4_0 => {
            let values = &block[2..];
            for (j, output) in output.iter_mut().enumerate().take(BLOCK_LENGTH) {
                *output = (f32::from(nibble(values, j)) - 8.0) * d;
            }
        }
        QuantFormat::Q4_1 => {
            let m = read_f16(block, 2);
            let values = &block[4..];
            for (j, output) in output.iter_mut().enumerate().take(BLOCK_LENGTH) {
                *output = f32::from(nibble(values, j)) * d + m;
            }
        }
    }
}

/// Writes the values of a row (`row.len() / block_bytes` whole blocks) into `output`.
pub(super) fn dequantize_row(format: QuantFormat, row: &[u8], output: &mut [f32]) {
    for (block, output) in row
        .chunks_exact(format.block_bytes())
        .zip(output.chunks_exact_mut(BLOCK_LENGTH))
    {
        dequantize_block(format, block, output);
    }
}

/// Quantizes one block of `BLOCK_LENGTH` finite values (within the range of `f16` for F16) into
/// `block` (`block_bytes` bytes), as llama.cpp's reference quantizers do.
pub(super) fn quantize_block(format: QuantFormat, values: &[f32], block: &mut [u8]) {
    let values = &values[..BLOCK_LENGTH];
    match format {
        QuantFormat::F16 => {
            for (half, &value) in block.chunks_exact_mut(2).zip(values) {
                half.copy_from_slice(&f16::from_f32(value).to_le_bytes());
            }
        }
        QuantFormat::Q8_0 => {
            let amax = values
                .iter()
                .fold(0.0f32, |amax, value| amax.max(value.abs()));
            let d = amax / 127.0;
            let inverse = if d == 0.0 { 0.0 } else { 1.0 / d };
            block[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
            for (q, &value) in block[2..].iter_mut().zip(values) {
                // `round` rounds half away from zero, as C's `roundf`; |value * inverse| <= 127.
                *q = (value * inverse).round() as i8 as u8;
            }
        }
        QuantFormat::Q4_0 => {
            // The value of largest magnitude, with its sign, maps to -8.
            let extreme = values.iter().fold(0.0f32, |extreme, &value| {
                if value.abs() > extreme.abs() {
                    value
                } else {
                    extreme
                }
            });
            let d = extreme / -8.0;
            let inverse = if d == 0.0 { 0.0 } else { 1.0 / d };
            block[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
            let quantize = |value: f32| ((value * inverse + 8.5) as i8).min(15) as u8;
            for j in 0..BLOCK_LENGTH / 2 {
                block[2 + j] = quantize(values[j]) | (quantize(values[j + BLOCK_LENGTH / 2]) << 4);
            }
        }
        QuantFormat::Q4_1 => {
            let (min, max) = values
                .iter()
                .fold((f32::MAX, f32::MIN), |(min, max), &value| {
                    (min.min(value), max.max(value))
                });
            let d = (max - min) / 15.0;
            let inverse = if d == 0.0 { 0.0 } else { 1.0 / d };
            block[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
            block[2..4].copy_from_slice(&f16::from_f32(min).to_le_bytes());
            let quantize = |value: f32| (((value - min) * inverse + 0.5) as i8).min(15) as u8;
            for j in 0..BLOCK_LENGTH / 2 {
                block[4 + j] = quantize(values[j]) | (quantize(values[j + BLOCK_LENGTH / 2]) << 4);
            }
        }
    }
}
