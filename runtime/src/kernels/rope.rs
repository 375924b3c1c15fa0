//! Rotary position embedding (RoPE) on `[batch, seq, heads * head_dim]` activations.
//!
//! Frequencies are `inv_freq[i] = theta^(-2i / head_dim)` for `i < head_dim / 2`, and the
//! angle of position `p` is `p * inv_freq[i]`, computed in `f32` as Hugging Face does, and
//! tabulated once in a `RopeTable`. Two pairings are supported: the half-split one of Hugging
//! Face Llama's `rotate_half` (element `i` pairs with `i + head_dim / 2`) and the interleaved
//! one of GPT-J (element `2i` pairs with `2i + 1`).

use crate::error::{KernelResult, check_length, invalid_parameter};

pub use nnc_ops::{RopeConvention, RopeOptions};

/// Cosines and sines for positions `0..max_positions`, `[max_positions, head_dim / 2]` each.
#[derive(Clone, Debug)]
pub struct RopeTable {
    head_dim: usize,
    max_positions: usize,
    cosines: Vec<f32>,
    sines: Vec<f32>,
}

impl RopeTable {
    /// Tabulates the rotation for an even `head_dim` and base `theta` (10000 in most models).
    pub fn new(head_dim: usize, theta: f32, max_positions: usize) -> KernelResult<Self> {
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(invalid_parameter(
                "rope",
                format!("head_dim must be even and positive, got {head_dim}"),
            ));
        }
        if theta.is_nan() || theta <= 0.0 {
            return Err(invalid_parameter(
                "rope",
                format!("theta must be positive, got {theta}"),
            ));
        }
        let half = head_dim / 2;
        let inverse_frequencies: Vec<f32> = (0..half)
            .map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32))
            .collect();
        let mut cosines = Vec::with_capacity(max_positions * half);
        let mut sines = Vec::with_capacity(max_positions * half);
        for position in 0..max_positions {
            for &inverse_frequency in &inverse_frequencies {
                let angle = position as f32 * inverse_frequency;
                cosines.push(angle.cos());
                sines.push(angle.sin());
            }
        }
        Ok(Self {
            head_dim,
            max_positions,
            cosines,
            sines,
        })
    }

    /// The head dimension the table was built for.
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// The number of positions tabulated.
    pub fn max_positions(&self) -> usize {
        self.max_positions
    }
}

/// Rotates `values` of shape `[batch, seq, n_heads * head_dim]` in place: token `t` is at
/// position `position_offset + t`, which must be below `table.max_positions()`.
pub fn apply_rope_in_place(
    values: &mut [f32],
    batch: usize,
    seq: usize,
    table: &RopeTable,
    options: &RopeOptions,
) -> KernelResult<()> {
    let hidden = options.n_heads * table.head_dim;
    check_length("rope", "values", batch * seq * hidden, values.len())?;
    if options.position_offset + seq > table.max_positions {
        return Err(invalid_parameter(
            "rope",
            format!(
                "positions {}..{} exceed the table's {}",
                options.position_offset,
                options.position_offset + seq,
                table.max_positions
            ),
        ));
    }
    if hidden == 0 {
        return Ok(());
    }
    let half = table.head_dim / 2;
    for (token_index, token) in values.chunks_exact_mut(hidden).enumerate() {
        let position = options.position_offset + token_index % seq;
        let cosines = &table.cosines[position * half..][..half];
        let sines = &table.sines[position * half..][..half];
        for head in token.chunks_exact_mut(table.head_dim) {
            match options.convention {
                RopeConvention::HalfSplit => rotate_half_split(head, cosines, sines),
                RopeConvention::Interleaved => rotate_interleaved(head, cosines, sines),
            }
        }
    }
    Ok(())
}

/// `output = rope(input)`; see `apply_rope_in_place`.
pub fn apply_rope(
    input: &[f32],
    output: &mut [f32],
    batch: usize,
    seq: usize,
    table: &RopeTable,
    options: &RopeOptions,
) -> KernelResult<()> {
    check_length("rope", "output", input.len(), output.len())?;
    output.copy_from_slice(input);
    apply_rope_in_place(output, batch, seq, table, options)
}

fn rotate_half_split(head: &mut [f32], cosines: &[f32], sines: &[f32]) {
    let (first, second) = head.split_at_mut(cosines.len());
    for (((x1, x2), &cosine), &sine) in first.iter_mut().zip(second).zip(cosines).zip(sines) {
        let (a, b) = (*x1, *x2);
        *x1 = a * cosine - b * sine;
        *x2 = b * cosine + a * sine;
    }
}

fn rotate_interleaved(head: &mut [f32], cosines: &[f32], sines: &[f32]) {
    for ((pair, &cosine), &sine) in head.chunks_exact_mut(2).zip(cosines).zip(sines) {
        let (a, b) = (pair[0], pair[1]);
        pair[0] = a * cosine - b * sine;
        pair[1] = b * cosine + a * sine;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference;
    use crate::test_support::{assert_close, values};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn rope_matches_reference(
            (batch, seq, n_heads, half, offset, interleaved, input) in
                (1..3usize, 1..6usize, 1..4usize, 1..9usize, 0..40usize, any::<bool>())
                    .prop_flat_map(|(batch, seq, n_heads, half, offset, interleaved)| {
                        let length = batch * seq * n_heads * 2 * half;
                        (Just(batch), Just(seq), Just(n_heads), Just(half), Just(offset),
                         Just(interleaved), values(length))
                    })
        ) {
            let head_dim = 2 * half;
            let convention = if interleaved {
                RopeConvention::Interleaved
            } else {
                RopeConvention::HalfSplit
            };
            let table = RopeTable::new(head_dim, 10_000.0, 64).unwrap();
            let options = RopeOptions { n_heads, convention, position_offset: offset };
            let expected = reference::rope(
                &input, batch, seq, n_heads, head_dim, 10_000.0, offset, interleaved,
            );
            let mut output = vec![0.0; input.len()];
            apply_rope(&input, &mut output, batch, seq, &table, &options).unwrap();
            assert_close(&output, &expected, 1e-5);
        }
    }

    #[test]
    fn position_zero_is_identity_and_known_rotation() {
        let table = RopeTable::new(4, 10_000.0, 2).unwrap();
        let options = RopeOptions {
            n_heads: 1,
            convention: RopeConvention::HalfSplit,
            position_offset: 0,
        };
        // Two tokens at positions 0 and 1; at position 1 the first pair turns by 1 radian and
        // the second by 1 / 100.
        let mut values = [1.0, 2.0, 3.0, 4.0, 1.0, 0.0, 0.0, 0.0];
        apply_rope_in_place(&mut values, 1, 2, &table, &options).unwrap();
        assert_eq!(values[..4], [1.0, 2.0, 3.0, 4.0]);
        assert_close(&values[4..], &[1f32.cos(), 0.0, 1f32.sin(), 0.0], 1e-6);
    }

    #[test]
    fn invalid_arguments_are_errors() {
        assert!(RopeTable::new(3, 10_000.0, 4).is_err());
        assert!(RopeTable::new(4, 0.0, 4).is_err());
        let table = RopeTable::new(4, 10_000.0, 4).unwrap();
        let options = RopeOptions {
            n_heads: 2,
            convention: RopeConvention::Interleaved,
            position_offset: 3,
        };
        let mut values = [0.0; 16];
        assert!(apply_rope_in_place(&mut values, 1, 2, &table, &options).is_err());
        assert!(apply_rope_in_place(&mut values[..15], 1, 2, &table, &options).is_err());
    }
}
