//! [`BlockSparseLayout`]: which (query block, key block) pairs flash attention computes, so
//! that a sparse attention pattern skips the blocks it masks out entirely.

use crate::error::{KernelResult, check_length, invalid_parameter};

/// Which key blocks each query block visits, in blocks of `block_size` queries and keys.
///
/// Query block `qb` covers queries `qb * block_size..` and key block `kb` keys
/// `kb * block_size..` (the last of each may be shorter). Each kept pair is either *full*, when
/// the element mask is known to allow every pair in it and is not evaluated there, or
/// *partial*, when `AttentionOptions::mask` is evaluated for every pair in it. Pairs absent
/// from the layout are never visited: they count as masked out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockSparseLayout {
    pub(super) block_size: usize,
    pub(super) query_len: usize,
    pub(super) key_len: usize,
    /// The key blocks of query block `qb` are entries `row_starts[qb]..row_starts[qb + 1]`.
    pub(super) row_starts: Vec<usize>,
    pub(super) key_blocks: Vec<usize>,
    /// Per entry, whether the element mask must be evaluated inside the block.
    pub(super) partial: Vec<bool>,
}

impl BlockSparseLayout {
    /// Every key block for every query block, all partial (the element mask, if any, is
    /// evaluated everywhere).
    pub fn dense(block_size: usize, query_len: usize, key_len: usize) -> KernelResult<Self> {
        let key_blocks = check_block_size(block_size, key_len)?;
        let all: Vec<usize> = (0..key_blocks).collect();
        let rows = vec![all; query_len.div_ceil(block_size)];
        Self::from_key_blocks(block_size, query_len, key_len, &rows)
    }

    /// An explicit layout: `key_blocks[qb]` lists the key blocks that query block `qb` visits
    /// (in any order; duplicates are dropped). Every listed block is partial.
    pub fn from_key_blocks(
        block_size: usize,
        query_len: usize,
        key_len: usize,
        key_blocks: &[Vec<usize>],
    ) -> KernelResult<Self> {
        let key_block_count = check_block_size(block_size, key_len)?;
        check_length(
            "flash_attention",
            "key_blocks",
            query_len.div_ceil(block_size),
            key_blocks.len(),
        )?;
        let mut layout = Self::empty(block_size, query_len, key_len);
        for row in key_blocks {
            let mut row = row.clone();
            row.sort_unstable();
            row.dedup();
            if let Some(&last) = row.last()
                && last >= key_block_count
            {
                return Err(invalid_parameter(
                    "flash_attention",
                    format!("key block {last} is out of range for {key_block_count} key blocks"),
                ));
            }
            layout.partial.extend(row.iter().map(|_| true));
            layout.key_blocks.extend(row);
            layout.row_starts.push(layout.key_blocks.len());
        }
        Ok(layout)
    }

    /// The layout of the mask `allowed(i, j)` (query row `i` in `0..query_len`, not offset, and
    /// key `j`): a block pair is kept if any pair in it is allowed, and marked partial unless
    /// every pair in it is. Evaluates `allowed` on every pair once.
    ///
    /// Pass the same predicate as `AttentionMask::Function` to `flash_attention` so that the
    /// partial blocks apply it element by element; the result then equals dense attention with
    /// that exact mask.
    pub fn from_predicate(
        block_size: usize,
        query_len: usize,
        key_len: usize,
        allowed: impl Fn(usize, usize) -> bool,
    ) -> KernelResult<Self> {
        let key_block_count = check_block_size(block_size, key_len)?;
        let mut layout = Self::empty(block_size, query_len, key_len);
        for query_start in (0..query_len).step_by(block_size) {
            let queries = query_start..(query_start + block_size).min(query_len);
            for key_block in 0..key_block_count {
                let key_start = key_block * block_size;
                let keys = key_start..(key_start + block_size).min(key_len);
                let (mut any, mut all) = (false, true);
                'scan: for query in queries.clone() {
                    for key in keys.clone() {
                        if allowed(query, key) {
                            any = true;
                        } else {
                            all = false;
                        }
                        if any && !all {
                            break 'scan;
                        }
                    }
                }
                if any {
                    layout.key_blocks.push(key_block);
                    layout.partial.push(!all);
                }
            }
            layout.row_starts.push(layout.key_blocks.len());
        }
        Ok(layout)
    }

    /// Queries (and keys) per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// The number of queries the layout was built for.
    pub fn query_len(&self) -> usize {
        self.query_len
    }

    /// The number of keys the layout was built for.
    pub fn key_len(&self) -> usize {
        self.key_len
    }

    /// The number of query blocks, `ceil(query_len / block_size)`.
    pub fn query_block_count(&self) -> usize {
        self.row_starts.len() - 1
    }

    /// The number of key blocks, `ceil(key_len / block_size)`.
    pub fn key_block_count(&self) -> usize {
        self.key_len.div_ceil(self.block_size)
    }

    /// The key blocks that query block `query_block` visits, in increasing order.
    pub fn key_blocks(&self, query_block: usize) -> &[usize] {
        &self.key_blocks[self.row_starts[query_block]..self.row_starts[query_block + 1]]
    }

    /// For each of `key_blocks(query_block)`, whether the element mask is evaluated inside.
    pub fn partial_blocks(&self, query_block: usize) -> &[bool] {
        &self.partial[self.row_starts[query_block]..self.row_starts[query_block + 1]]
    }

    /// The number of (query block, key block) pairs kept.
    pub fn kept_block_count(&self) -> usize {
        self.key_blocks.len()
    }

    fn empty(block_size: usize, query_len: usize, key_len: usize) -> Self {
        Self {
            block_size,
            query_len,
            key_len,
            row_starts: vec![0],
            key_blocks: Vec::new(),
            partial: Vec::new(),
        }
    }
}

/// Checks a block size and returns the number of key blocks.
fn check_block_size(block_size: usize, key_len: usize) -> KernelResult<usize> {
    if block_size == 0 {
        return Err(invalid_parameter(
            "flash_attention",
            "the block size must be positive",
        ));
    }
    Ok(key_len.div_ceil(block_size))
}
