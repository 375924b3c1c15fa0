//! The storage types of GGUF tensors (llama.cpp's `ggml_type`): their block sizes, and a plain
//! dequantize-to-f32 function for each type nnc reads.
//!
//! A quantized type stores a row as blocks of `block_size` values, each block `block_bytes` long
//! (a scale, sometimes a minimum, then packed integers). The functions here are the reference
//! twins for quantized kernels: they follow llama.cpp's `dequantize_row_*` in `ggml-quants.c`
//! value by value, and the tests compare them with the Python `gguf` package's dequantization
//! (`tests/fixtures/gguf/`, written by `bench/gguf_fixtures.py`).

use std::fmt;

/// A GGUF tensor type: the numeric ids are llama.cpp's `enum ggml_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
    I8,
    I16,
    I32,
    I64,
    F64,
    BF16,
}

/// Every type, for lookups by id and for tests.
const ALL_TYPES: [GgmlType; 20] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q8_1,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
    GgmlType::Q8K,
    GgmlType::I8,
    GgmlType::I16,
    GgmlType::I32,
    GgmlType::I64,
    GgmlType::F64,
    GgmlType::BF16,
];

/// Values per block of the k-quants (`QK_K`).
const SUPER_BLOCK: usize = 256;

impl GgmlType {
    /// The type with llama.cpp's id `id`; `None` for ids nnc does not know (the IQ types, the
    /// removed Q4_2/Q4_3, ids from the future).
    pub fn from_id(id: u32) -> Option<GgmlType> {
        ALL_TYPES.into_iter().find(|ty| ty.id() == id)
    }

    /// llama.cpp's id of the type.
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q8_1 => 9,
            GgmlType::Q2K => 10,
            GgmlType::Q3K => 11,
            GgmlType::Q4K => 12,
            GgmlType::Q5K => 13,
            GgmlType::Q6K => 14,
            GgmlType::Q8K => 15,
            GgmlType::I8 => 24,
            GgmlType::I16 => 25,
            GgmlType::I32 => 26,
            GgmlType::I64 => 27,
            GgmlType::F64 => 28,
            GgmlType::BF16 => 30,
        }
    }

    /// llama.cpp's name of the type, e.g. `Q4_K`.
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q8_1 => "Q8_1",
            GgmlType::Q2K => "Q2_K",
            GgmlType::Q3K => "Q3_K",
            GgmlType::Q4K => "Q4_K",
            GgmlType::Q5K => "Q5_K",
            GgmlType::Q6K => "Q6_K",
            GgmlType::Q8K => "Q8_K",
            GgmlType::I8 => "I8",
            GgmlType::I16 => "I16",
            GgmlType::I32 => "I32",
            GgmlType::I64 => "I64",
            GgmlType::F64 => "F64",
            GgmlType::BF16 => "BF16",
        }
    }

    /// How many values one block holds (1 for the plain types). A row (the first GGUF
    /// dimension) must be a whole number of blocks.
    pub fn block_size(self) -> usize {
        match self {
            GgmlType::F32
            | GgmlType::F16
            | GgmlType::BF16
            | GgmlType::F64
            | GgmlType::I8
            | GgmlType::I16
            | GgmlType::I32
            | GgmlType::I64 => 1,
            GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q8_0
            | GgmlType::Q8_1 => 32,
            GgmlType::Q2K
            | GgmlType::Q3K
            | GgmlType::Q4K
            | GgmlType::Q5K
            | GgmlType::Q6K
            | GgmlType::Q8K => SUPER_BLOCK,
        }
    }

    /// How many bytes one block takes (`sizeof(block_q4_0)` and so on).
    pub fn block_bytes(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::I32 => 4,
            GgmlType::F16 | GgmlType::BF16 | GgmlType::I16 => 2,
            GgmlType::F64 | GgmlType::I64 => 8,
            GgmlType::I8 => 1,
            // f16 scale, 16 bytes of nibbles.
            GgmlType::Q4_0 => 2 + 16,
            // f16 scale and minimum, 16 bytes of nibbles.
            GgmlType::Q4_1 => 2 + 2 + 16,
            // f16 scale, 4 bytes of fifth bits, 16 bytes of nibbles.
            GgmlType::Q5_0 => 2 + 4 + 16,
            GgmlType::Q5_1 => 2 + 2 + 4 + 16,
            // f16 scale, 32 signed bytes.
            GgmlType::Q8_0 => 2 + 32,
            // f16 scale and sum, 32 signed bytes.
            GgmlType::Q8_1 => 2 + 2 + 32,
            GgmlType::Q2K => 16 + 64 + 2 + 2,
            GgmlType::Q3K => 32 + 64 + 12 + 2,
            // f16 scale and minimum, 12 bytes of 6-bit sub-block scales and minimums, nibbles.
            GgmlType::Q4K => 2 + 2 + 12 + 128,
            GgmlType::Q5K => 2 + 2 + 12 + 32 + 128,
            // Low nibbles, high bit pairs, 16 signed sub-block scales, f16 scale.
            GgmlType::Q6K => 128 + 64 + 16 + 2,
            GgmlType::Q8K => 4 + 256 + 2 * 16,
        }
    }

    /// Whether [`dequantize`] reads this type.
    pub fn can_dequantize(self) -> bool {
        matches!(
            self,
            GgmlType::F32
                | GgmlType::F16
                | GgmlType::BF16
                | GgmlType::F64
                | GgmlType::Q8_0
                | GgmlType::Q4_0
                | GgmlType::Q4_1
                | GgmlType::Q4K
                | GgmlType::Q6K
        )
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why bytes cannot be dequantized.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DequantizeError {
    #[error(
        "nnc does not read {0} tensors (it reads F32, F16, BF16, F64, Q8_0, Q4_0, Q4_1, Q4_K and Q6_K)"
    )]
    Unsupported(GgmlType),
    #[error(
        "{ty} data of {bytes} bytes does not hold {values} values ({block_bytes} bytes per {block_size} values)"
    )]
    Length {
        ty: GgmlType,
        bytes: usize,
        values: usize,
        block_size: usize,
        block_bytes: usize,
    },
    /// The f32 values do not fit in memory (a file's tensor can hold up to 7 values per byte).
    #[error("{0}")]
    Alloc(#[from] crate::alloc::AllocError),
}

/// Dequantizes `data`, stored as `ty`, into `output`: `output.len()` values, which must be a
/// whole number of blocks taking exactly `data.len()` bytes.
pub fn dequantize(ty: GgmlType, data: &[u8], output: &mut [f32]) -> Result<(), DequantizeError> {
    if !ty.can_dequantize() {
        return Err(DequantizeError::Unsupported(ty));
    }
    let (block_size, block_bytes) = (ty.block_size(), ty.block_bytes());
    if !output.len().is_multiple_of(block_size)
        || output.len() / block_size * block_bytes != data.len()
    {
        return Err(DequantizeError::Length {
            ty,
            bytes: data.len(),
            values: output.len(),
            block_size,
            block_bytes,
        });
    }
    let blocks = data
        .chunks_exact(block_bytes)
        .zip(output.chunks_exact_mut(block_size));
    match ty {
        GgmlType::F32 => blocks.for_each(|(bytes, value)| {
            value[0] = f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        }),
        GgmlType::F64 => blocks.for_each(|(bytes, value)| {
            value[0] = f64::from_le_bytes(bytes.try_into().expect("8-byte blocks")) as f32;
        }),
        GgmlType::F16 => blocks.for_each(|(bytes, value)| value[0] = f16_at(bytes, 0)),
        GgmlType::BF16 => blocks.for_each(|(bytes, value)| {
            value[0] = half::bf16::from_le_bytes([bytes[0], bytes[1]]).to_f32();
        }),
        GgmlType::Q8_0 => blocks.for_each(|(block, values)| dequantize_block_q8_0(block, values)),
        GgmlType::Q4_0 => blocks.for_each(|(block, values)| dequantize_block_q4_0(block, values)),
        GgmlType::Q4_1 => blocks.for_each(|(block, values)| dequantize_block_q4_1(block, values)),
        GgmlType::Q4K => blocks.for_each(|(block, values)| dequantize_block_q4_k(block, values)),
        GgmlType::Q6K => blocks.for_each(|(block, values)| dequantize_block_q6_k(block, values)),
        GgmlType::Q5_0
        | GgmlType::Q5_1
        | GgmlType::Q8_1
        | GgmlType::Q2K
        | GgmlType::Q3K
        | GgmlType::Q5K
        | GgmlType::Q8K
        | GgmlType::I8
        | GgmlType::I16
        | GgmlType::I32
        | GgmlType::I64 => unreachable!("dequantize: can_dequantize rejected {ty}"),
    }
    Ok(())
}

/// The little-endian f16 at `offset`, as f32.
fn f16_at(bytes: &[u8], offset: usize) -> f32 {
    half::f16::from_le_bytes([bytes[offset], bytes[offset + 1]]).to_f32()
}

/// Q8_0: `value = scale * q`, q a signed byte.
pub fn dequantize_block_q8_0(block: &[u8], values: &mut [f32]) {
    let scale = f16_at(block, 0);
    for (value, &quant) in values.iter_mut().zip(&block[2..34]) {
        *value = scale * f32::from(quant as i8);
    }
}

/// Q4_0: `value = scale * (q - 8)`, the low nibbles giving values 0..16 and the high nibbles
/// values 16..32.
pub fn dequantize_block_q4_0(block: &[u8], values: &mut [f32]) {
    let scale = f16_at(block, 0);
    let (low, high) = values.split_at_mut(16);
    for (index, &byte) in block[2..18].iter().enumerate() {
        low[index] = scale * (f32::from(byte & 0x0f) - 8.0);
        high[index] = scale * (f32::from(byte >> 4) - 8.0);
    }
}

/// Q4_1: `value = scale * q + minimum`, nibbles as in Q4_0 but unsigned.
pub fn dequantize_block_q4_1(block: &[u8], values: &mut [f32]) {
    let scale = f16_at(block, 0);
    let minimum = f16_at(block, 2);
    let (low, high) = values.split_at_mut(16);
    for (index, &byte) in block[4..20].iter().enumerate() {
        low[index] = scale * f32::from(byte & 0x0f) + minimum;
        high[index] = scale * f32::from(byte >> 4) + minimum;
    }
}

/// The 6-bit scale and minimum of sub-block `index` (0..8) of a Q4_K block, packed in 12 bytes
/// (llama.cpp's `get_scale_min_k4`).
fn scale_and_minimum_k4(index: usize, packed: &[u8]) -> (u8, u8) {
    if index < 4 {
        (packed[index] & 63, packed[index + 4] & 63)
    } else {
        (
            (packed[index + 4] & 0x0f) | ((packed[index - 4] >> 6) << 4),
            (packed[index + 4] >> 4) | ((packed[index] >> 6) << 4),
        )
    }
}

/// Q4_K: a super-block of 256 values in 8 sub-blocks of 32, each with a 6-bit scale and minimum
/// relative to the block's f16 scale and minimum: `value = scale * sub_scale * q - minimum *
/// sub_minimum`. Each 32 bytes of nibbles hold two sub-blocks, low nibbles first.
pub fn dequantize_block_q4_k(block: &[u8], values: &mut [f32]) {
    let scale = f16_at(block, 0);
    let minimum = f16_at(block, 2);
    let packed_scales = &block[4..16];
    let quants = &block[16..144];
    for (pair, (bytes, output)) in quants
        .chunks_exact(32)
        .zip(values.chunks_exact_mut(64))
        .enumerate()
    {
        let (sub_scale_low, sub_minimum_low) = scale_and_minimum_k4(2 * pair, packed_scales);
        let (sub_scale_high, sub_minimum_high) = scale_and_minimum_k4(2 * pair + 1, packed_scales);
        let (scale_low, minimum_low) = (
            scale * f32::from(sub_scale_low),
            minimum * f32::from(sub_minimum_low),
        );
        let (scale_high, minimum_high) = (
            scale * f32::from(sub_scale_high),
            minimum * f32::from(sub_minimum_high),
        );
        let (low, high) = output.split_at_mut(32);
        for (index, &byte) in bytes.iter().enumerate() {
            low[index] = scale_low * f32::from(byte & 0x0f) - minimum_low;
            high[index] = scale_high * f32::from(byte >> 4) - minimum_high;
        }
    }
}

/// Q6_K: a super-block of 256 values in 16 sub-blocks of 16, each with a signed 8-bit scale:
/// `value = scale * sub_scale * (q - 32)`, q six bits: four from `low_nibbles`, two from
/// `high_bits`. Each half of 128 values interleaves four runs of 32 (llama.cpp's layout).
pub fn dequantize_block_q6_k(block: &[u8], values: &mut [f32]) {
    let low_nibbles = &block[0..128];
    let high_bits = &block[128..192];
    let sub_scales = &block[192..208];
    let scale = f16_at(block, 208);
    for half in 0..2 {
        let low_nibbles = &low_nibbles[64 * half..64 * half + 64];
        let high_bits = &high_bits[32 * half..32 * half + 32];
        let sub_scales = &sub_scales[8 * half..8 * half + 8];
        let output = &mut values[128 * half..128 * half + 128];
        for index in 0..32 {
            let sub = index / 16;
            let high = high_bits[index];
            let quants = [
                (low_nibbles[index] & 0x0f) | ((high & 3) << 4),
                (low_nibbles[index + 32] & 0x0f) | (((high >> 2) & 3) << 4),
                (low_nibbles[index] >> 4) | (((high >> 4) & 3) << 4),
                (low_nibbles[index + 32] >> 4) | (((high >> 6) & 3) << 4),
            ];
            for (run, quant) in quants.into_iter().enumerate() {
                let sub_scale = f32::from(sub_scales[sub + 2 * run] as i8);
                output[index + 32 * run] = scale * sub_scale * (f32::from(quant) - 32.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_unknown_ids_are_none() {
        for ty in ALL_TYPES {
            assert_eq!(GgmlType::from_id(ty.id()), Some(ty));
        }
        assert_eq!(GgmlType::from_id(4), None);
        assert_eq!(GgmlType::from_id(31), None);
        assert_eq!(GgmlType::from_id(u32::MAX), None);
    }

    #[test]
    fn block_sizes_match_llama_cpp() {
        let expected = [
            (GgmlType::Q4_0, 18),
            (GgmlType::Q4_1, 20),
            (GgmlType::Q5_0, 22),
            (GgmlType::Q5_1, 24),
            (GgmlType::Q8_0, 34),
            (GgmlType::Q8_1, 36),
            (GgmlType::Q2K, 84),
            (GgmlType::Q3K, 110),
            (GgmlType::Q4K, 144),
            (GgmlType::Q5K, 176),
            (GgmlType::Q6K, 210),
            (GgmlType::Q8K, 292),
        ];
        for (ty, bytes) in expected {
            assert_eq!(ty.block_bytes(), bytes, "{ty}");
        }
    }

    #[test]
    fn hand_made_blocks() {
        // Q8_0 with scale 0.5: q = -4, 6 gives -2, 3.
        let mut block = vec![0u8; 34];
        block[..2].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
        block[2] = (-4i8) as u8;
        block[3] = 6;
        let mut values = [0.0f32; 32];
        dequantize(GgmlType::Q8_0, &block, &mut values).unwrap();
        assert_eq!(&values[..3], &[-2.0, 3.0, 0.0]);

        // Q4_1 with scale 2 and minimum -1: byte 0x3a holds 10 (value 0) and 3 (value 16).
        let mut block = vec![0u8; 20];
        block[..2].copy_from_slice(&half::f16::from_f32(2.0).to_le_bytes());
        block[2..4].copy_from_slice(&half::f16::from_f32(-1.0).to_le_bytes());
        block[4] = 0x3a;
        let mut values = [0.0f32; 32];
        dequantize(GgmlType::Q4_1, &block, &mut values).unwrap();
        assert_eq!((values[0], values[16], values[1]), (19.0, 5.0, -1.0));

        // Q4_0 with scale 1: nibble 0 is -8, nibble 15 is 7.
        let mut block = vec![0u8; 18];
        block[..2].copy_from_slice(&half::f16::from_f32(1.0).to_le_bytes());
        block[2] = 0xf0;
        let mut values = [0.0f32; 32];
        dequantize(GgmlType::Q4_0, &block, &mut values).unwrap();
        assert_eq!((values[0], values[16]), (-8.0, 7.0));
    }

    #[test]
    fn wrong_lengths_and_unsupported_types_are_errors() {
        let mut values = [0.0f32; 32];
        assert!(matches!(
            dequantize(GgmlType::Q8_0, &[0; 33], &mut values),
            Err(DequantizeError::Length { .. })
        ));
        assert!(matches!(
            dequantize(GgmlType::Q4_0, &[0; 18], &mut values[..31]),
            Err(DequantizeError::Length { .. })
        ));
        assert_eq!(
            dequantize(GgmlType::Q5K, &[0; 176], &mut [0.0; 256]),
            Err(DequantizeError::Unsupported(GgmlType::Q5K))
        );
    }
}
