//! The sparse pattern behind a constant attention mask: `nnc export` writes an attention's causal
//! mask and sparse pattern (sliding window, dilation, global tokens, strided, block mask) as one
//! constant `[queries, keys]` keep matrix, and the import wants `attention(..., window = ..)` back.
//!
//! The parameters are read off the matrix (the window from the distances the ordinary rows keep,
//! the global tokens from the rows and columns that keep more than that), and a candidate is
//! accepted only when the pattern it describes, evaluated with [`SparsePattern::allows`] (the
//! definition every kernel and the exporter use), keeps exactly the matrix's pairs. Anything else
//! (a mask no single pattern describes) gives `None`, and the caller translates the nodes as they
//! are.

use crate::ir::{BlockMask, SparsePattern};

/// A constant mask as an attention's own arguments.
#[derive(Clone, Debug, PartialEq)]
pub struct MaskPattern {
    /// Keys after the query are masked (then `queries == keys`).
    pub causal: bool,
    /// The pattern before the causal mask; dense when the mask is causal only.
    pub pattern: SparsePattern,
}

/// The most blocks per row a recognized block mask may have: a larger one would be written out as
/// a `.nn` literal of that many rows, which says no more than the constant itself.
const MAX_BLOCKS_PER_ROW: usize = 64;

/// The causal flag and sparse pattern that keep exactly the pairs `keep` (row-major, `queries`
/// rows of `keys`) marks, if there is one.
pub fn mask_pattern(keep: &[bool], queries: usize, keys: usize) -> Option<MaskPattern> {
    if queries == 0 || keys == 0 || keep.len() != queries * keys {
        return None;
    }
    let mask = Keep {
        keep,
        queries,
        keys,
    };
    for causal in [false, true] {
        if causal && (queries != keys || (0..queries).any(|q| (q + 1..keys).any(|k| mask.at(q, k))))
        {
            continue;
        }
        let visible = |q: usize, k: usize| !causal || k <= q;
        if (0..queries).all(|q| (0..keys).all(|k| mask.at(q, k) == visible(q, k))) {
            return Some(MaskPattern {
                causal,
                pattern: SparsePattern {
                    dilation: 1,
                    ..SparsePattern::default()
                },
            });
        }
        let globals = mask.global_candidates(causal);
        for base in mask.base_candidates(causal, &globals) {
            if let Some(pattern) = mask.with_globals(base, causal, &globals) {
                return Some(MaskPattern { causal, pattern });
            }
        }
    }
    None
}

/// The keep matrix.
struct Keep<'a> {
    keep: &'a [bool],
    queries: usize,
    keys: usize,
}

impl Keep<'_> {
    fn at(&self, query: usize, key: usize) -> bool {
        self.keep[query * self.keys + key]
    }

    /// Positions whose row keeps every visible key and whose column is kept by every query that
    /// sees it: the global tokens are among them.
    fn global_candidates(&self, causal: bool) -> Vec<bool> {
        let positions = self.queries.max(self.keys);
        (0..positions)
            .map(|p| {
                let row =
                    p >= self.queries || (0..self.keys).all(|k| self.at(p, k) || (causal && k > p));
                let column =
                    p >= self.keys || (0..self.queries).all(|q| self.at(q, p) || (causal && p > q));
                row && column
            })
            .collect()
    }

    /// Patterns without global tokens that may explain the rows and columns that are not
    /// candidates for them: a (dilated) window, a strided pattern, a block mask, and none (global
    /// tokens alone).
    fn base_candidates(&self, causal: bool, globals: &[bool]) -> Vec<SparsePattern> {
        let ordinary = |p: usize| !globals[p];
        // Which distances the ordinary pairs keep and mask.
        let span = self.queries.max(self.keys);
        let mut kept = vec![false; span];
        let mut masked = vec![false; span];
        for q in (0..self.queries).filter(|&q| ordinary(q)) {
            for k in (0..self.keys).filter(|&k| ordinary(k) && (!causal || k <= q)) {
                let distance = q.abs_diff(k);
                if self.at(q, k) {
                    kept[distance] = true;
                } else {
                    masked[distance] = true;
                }
            }
        }
        let none = SparsePattern {
            dilation: 1,
            ..SparsePattern::default()
        };
        let mut candidates = Vec::new();
        if let Some(farthest) = kept.iter().rposition(|&k| k) {
            let dilation = (1..span).find(|&d| kept[d]).unwrap_or(1);
            candidates.push(SparsePattern {
                window: Some(farthest / dilation + 1),
                dilation,
                ..none.clone()
            });
            // Strided with stride s keeps the distances below s and the multiples of s: the first
            // masked distance is s + 1.
            if let Some(first_masked) = (1..span).find(|&d| masked[d] && !kept[d])
                && first_masked >= 2
            {
                candidates.push(SparsePattern {
                    strided: Some(first_masked - 1),
                    ..none.clone()
                });
            }
        }
        if let Some(blocks) = self.block_mask(causal) {
            candidates.push(SparsePattern {
                block_mask: Some(blocks),
                ..none.clone()
            });
        }
        candidates.push(none);
        candidates
    }

    /// The block mask whose blocks are the largest squares the matrix is constant on (up to the
    /// causal mask), at least 2 positions wide.
    fn block_mask(&self, causal: bool) -> Option<BlockMask> {
        let mut block_size = 0;
        for q in 1..self.queries {
            // Where both rows see the key.
            if (0..q).any(|k| k < self.keys && self.at(q, k) != self.at(q - 1, k))
                || !causal && (q..self.keys).any(|k| self.at(q, k) != self.at(q - 1, k))
            {
                block_size = gcd(block_size, q);
            }
        }
        for k in 1..self.keys {
            let from = if causal { k } else { 0 };
            if (from..self.queries).any(|q| self.at(q, k) != self.at(q, k - 1)) {
                block_size = gcd(block_size, k);
            }
        }
        let positions = self.queries.max(self.keys);
        if block_size == 0 {
            block_size = positions;
        }
        let blocks_per_row = positions.div_ceil(block_size);
        if block_size < 2 || blocks_per_row > MAX_BLOCKS_PER_ROW {
            return None;
        }
        let mut mask = vec![false; blocks_per_row * blocks_per_row];
        for q in 0..self.queries {
            for k in 0..self.keys {
                if self.at(q, k) {
                    mask[(q / block_size) * blocks_per_row + k / block_size] = true;
                }
            }
        }
        Some(BlockMask {
            block_size,
            blocks_per_row,
            mask,
        })
    }

    /// `base` with the candidate global tokens whose rows or columns it does not explain, if that
    /// keeps exactly the matrix's pairs.
    fn with_globals(
        &self,
        base: SparsePattern,
        causal: bool,
        candidates: &[bool],
    ) -> Option<SparsePattern> {
        let base_keeps = |q: usize, k: usize| (!causal || k <= q) && keeps(&base, q, k);
        let mut global = vec![false; candidates.len()];
        for q in 0..self.queries {
            for k in 0..self.keys {
                if self.at(q, k) != base_keeps(q, k) {
                    global[q] |= candidates[q];
                    global[k] |= candidates[k];
                }
            }
        }
        // `SparsePattern::allows` keeps a pair when any component does: the base's components,
        // or a global query or key (looked up here in `global`, not in the list, to stay
        // quadratic however many tokens are global).
        let exact = (0..self.queries).all(|q| {
            (0..self.keys).all(|k| {
                let kept = (!causal || k <= q) && (keeps(&base, q, k) || global[q] || global[k]);
                self.at(q, k) == kept
            })
        });
        let pattern = SparsePattern {
            global_tokens: (0..global.len()).filter(|&p| global[p]).collect(),
            ..base
        };
        (exact && !pattern.is_dense()).then_some(pattern)
    }
}

/// Whether `pattern` keeps the pair; a pattern without components keeps nothing here (it is a
/// part of a larger one), not everything as [`SparsePattern::allows`] says of a dense pattern.
fn keeps(pattern: &SparsePattern, query: usize, key: usize) -> bool {
    !pattern.is_dense() && pattern.allows(query, key)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keep_matrix(
        pattern: &SparsePattern,
        causal: bool,
        queries: usize,
        keys: usize,
    ) -> Vec<bool> {
        let mut keep = Vec::with_capacity(queries * keys);
        for q in 0..queries {
            for k in 0..keys {
                keep.push((!causal || k <= q) && (pattern.is_dense() || pattern.allows(q, k)));
            }
        }
        keep
    }

    fn pattern(window: Option<usize>, dilation: usize, global_tokens: Vec<usize>) -> SparsePattern {
        SparsePattern {
            window,
            dilation,
            global_tokens,
            ..SparsePattern::default()
        }
    }

    #[test]
    fn longformer_gives_back_its_window_and_global_token() {
        let longformer = pattern(Some(128), 1, vec![0]);
        let keep = keep_matrix(&longformer, false, 260, 260);
        let found = mask_pattern(&keep, 260, 260).unwrap();
        assert_eq!(
            found,
            MaskPattern {
                causal: false,
                pattern: longformer
            }
        );
    }

    #[test]
    fn the_usual_patterns_come_back_as_written() {
        let blocks = BlockMask {
            block_size: 4,
            blocks_per_row: 3,
            mask: vec![true, false, false, true, true, false, false, true, true],
        };
        let cases = [
            (pattern(Some(3), 2, vec![]), false),
            (pattern(Some(4), 1, vec![]), true),
            (pattern(Some(2), 1, vec![1, 7]), false),
            (
                SparsePattern {
                    strided: Some(3),
                    ..pattern(None, 1, vec![])
                },
                true,
            ),
            (
                SparsePattern {
                    block_mask: Some(blocks),
                    ..pattern(None, 1, vec![])
                },
                false,
            ),
        ];
        for (written, causal) in cases {
            let keep = keep_matrix(&written, causal, 12, 12);
            let found = mask_pattern(&keep, 12, 12).unwrap();
            assert_eq!(
                found,
                MaskPattern {
                    causal,
                    pattern: written
                }
            );
        }
    }

    #[test]
    fn masks_no_pattern_describes_are_refused() {
        // One pair masked in a dense matrix, and a mask of the wrong size.
        let mut keep = vec![true; 36];
        keep[2 * 6 + 3] = false;
        assert_eq!(mask_pattern(&keep, 6, 6), None);
        assert_eq!(mask_pattern(&keep, 5, 6), None);
        assert_eq!(mask_pattern(&[], 0, 0), None);
    }

    fn pattern_strategy() -> impl Strategy<Value = SparsePattern> {
        (
            proptest::option::of(1usize..6),
            1usize..3,
            proptest::collection::vec(0usize..11, 0..3),
            proptest::option::of(2usize..5),
            proptest::option::of((2usize..5, proptest::collection::vec(any::<bool>(), 36))),
        )
            .prop_map(|(window, dilation, global_tokens, strided, blocks)| {
                let mut global_tokens = global_tokens;
                global_tokens.sort_unstable();
                global_tokens.dedup();
                SparsePattern {
                    window,
                    dilation: if window.is_some() { dilation } else { 1 },
                    global_tokens,
                    strided,
                    block_mask: blocks.map(|(block_size, cells)| {
                        let blocks_per_row = 11usize.div_ceil(block_size);
                        BlockMask {
                            block_size,
                            blocks_per_row,
                            mask: cells[..blocks_per_row * blocks_per_row].to_vec(),
                        }
                    }),
                }
            })
    }

    proptest! {
        /// Whatever pattern is found keeps exactly the matrix's pairs; the usual patterns (one
        /// component and global tokens) are always found.
        #[test]
        fn a_found_pattern_keeps_exactly_the_mask(
            written in pattern_strategy(),
            causal in any::<bool>(),
            keys in 9usize..12,
        ) {
            let queries = if causal { keys } else { 11 };
            let keep = keep_matrix(&written, causal, queries, keys);
            let components = [
                written.window.is_some(),
                written.strided.is_some(),
                written.block_mask.is_some(),
            ];
            let simple = components.iter().filter(|&&c| c).count() <= 1
                && (written.block_mask.is_none() || written.global_tokens.is_empty());
            match mask_pattern(&keep, queries, keys) {
                Some(found) => {
                    let again = keep_matrix(&found.pattern, found.causal, queries, keys);
                    prop_assert_eq!(again, keep);
                }
                None => prop_assert!(!simple, "{:?} causal {} not found", written, causal),
            }
        }
    }
}
