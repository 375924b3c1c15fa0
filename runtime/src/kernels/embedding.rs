//! Embedding lookup: gathers rows of a table by `i64` id, rejecting ids out of range.

use crate::error::{KernelError, KernelResult, check_length};
use crate::threading;

/// `output[i, :] = table[ids[i], :]` for a row-major table of `num_embeddings` rows of
/// `embedding_dim` values. Every id is checked before anything is written: a negative id or
/// one not below `num_embeddings` is an `EmbeddingIdOutOfRange` error, as in PyTorch.
pub fn embedding(
    table: &[f32],
    num_embeddings: usize,
    embedding_dim: usize,
    ids: &[i64],
    output: &mut [f32],
) -> KernelResult<()> {
    let table_length =
        num_embeddings
            .checked_mul(embedding_dim)
            .ok_or(KernelError::SizeOverflow {
                operation: "embedding",
            })?;
    check_length("embedding", "table", table_length, table.len())?;
    let output_length = ids
        .len()
        .checked_mul(embedding_dim)
        .ok_or(KernelError::SizeOverflow {
            operation: "embedding",
        })?;
    check_length("embedding", "output", output_length, output.len())?;
    check_ids(ids, num_embeddings)?;
    if embedding_dim == 0 {
        return Ok(());
    }
    let rows_per_task = (PARALLEL_CHUNK / embedding_dim).max(1);
    threading::run_chunks_mut(
        output,
        rows_per_task * embedding_dim,
        |chunk_index, output| {
            let ids = &ids[chunk_index * rows_per_task..];
            for (output_row, &id) in output.chunks_exact_mut(embedding_dim).zip(ids) {
                // The ids were all checked above, so this conversion and slice cannot fail.
                let row = id as usize;
                output_row.copy_from_slice(&table[row * embedding_dim..][..embedding_dim]);
            }
        },
    );
    Ok(())
}

/// Fails with `EmbeddingIdOutOfRange` on the first id that is negative or not below
/// `num_embeddings`.
pub(crate) fn check_ids(ids: &[i64], num_embeddings: usize) -> KernelResult<()> {
    match ids
        .iter()
        .enumerate()
        .find(|&(_, &id)| usize::try_from(id).map_or(true, |row| row >= num_embeddings))
    {
        Some((position, &id)) => Err(KernelError::EmbeddingIdOutOfRange {
            id,
            position,
            num_embeddings,
        }),
        None => Ok(()),
    }
}

/// Elements per parallel task.
const PARALLEL_CHUNK: usize = 1 << 16;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference;
    use crate::test_support::values;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn embedding_matches_reference(
            (rows, dim, table, ids) in (1..20usize, 0..19usize).prop_flat_map(|(rows, dim)| {
                (
                    Just(rows),
                    Just(dim),
                    values(rows * dim),
                    prop::collection::vec(0..rows as i64, 0..30),
                )
            })
        ) {
            let expected = reference::embedding(&table, dim, &ids);
            let mut output = vec![0.0; ids.len() * dim];
            embedding(&table, rows, dim, &ids, &mut output).unwrap();
            prop_assert_eq!(output, expected);
        }
    }

    #[test]
    fn out_of_range_ids_are_errors_and_nothing_is_written() {
        let table = [1.0, 2.0, 3.0, 4.0];
        let mut output = [9.0; 4];
        let result = embedding(&table, 2, 2, &[1, 2], &mut output);
        assert_eq!(
            result,
            Err(KernelError::EmbeddingIdOutOfRange {
                id: 2,
                position: 1,
                num_embeddings: 2
            })
        );
        assert_eq!(output, [9.0; 4]);
        let result = embedding(&table, 2, 2, &[-1, 0], &mut output);
        assert!(matches!(
            result,
            Err(KernelError::EmbeddingIdOutOfRange { id: -1, .. })
        ));
        embedding(&table, 2, 2, &[1, 0], &mut output).unwrap();
        assert_eq!(output, [3.0, 4.0, 1.0, 2.0]);
    }
}
