//! The contract between the GEMM's driver and its micro-kernels: where a tile of C goes, what the
//! kernel applies to it as it stores it (the fused epilogue), and the kernels' signatures.
//!
//! The epilogue runs on the accumulators, in registers, before the tile's single store: a tile
//! of C is then written once, instead of being stored, read back and rewritten by scalar code.
//! Only the work that costs one or two vector instructions per register lives here (the biases,
//! the residual and the clamp activations); the driver applies the other activations to whole
//! rows afterwards with the vectorised activation loops.

use super::{GemmIsa, MR, NR};
use crate::kernels::activation::Activation;

/// An activation that is a clamp of its input, which the micro-kernels apply to their
/// accumulators with a `max` (and a `min`, or a multiply and a blend).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) enum Clamp {
    #[default]
    None,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// `x` for `x >= 0`, `negative_slope * x` otherwise.
    LeakyRelu { negative_slope: f32 },
}

impl Clamp {
    /// The clamp that computes `activation`, or `None` for an activation that is not a clamp.
    pub(crate) fn of(activation: Activation) -> Option<Clamp> {
        match activation {
            Activation::Relu => Some(Clamp::Relu),
            Activation::Relu6 => Some(Clamp::Relu6),
            Activation::LeakyRelu { negative_slope } => Some(Clamp::LeakyRelu { negative_slope }),
            Activation::Sigmoid
            | Activation::Tanh
            | Activation::Silu
            | Activation::HardSwish
            | Activation::HardSigmoid
            | Activation::Gelu
            | Activation::GeluTanh
            | Activation::Softplus
            | Activation::Sqrt
            | Activation::Exp
            | Activation::Erf
            | Activation::Abs
            | Activation::Pow { .. } => None,
        }
    }

    /// An optional activation split into what a micro-kernel applies in registers (a clamp)
    /// and what must run over the stored rows afterwards (any other activation).
    pub(crate) fn split(activation: Option<Activation>) -> (Clamp, Option<Activation>) {
        match activation {
            Some(activation) => match Clamp::of(activation) {
                Some(clamp) => (clamp, None),
                None => (Clamp::None, Some(activation)),
            },
            None => (Clamp::None, None),
        }
    }

    /// The clamp of one value, as the portable kernel computes it; the same function as the
    /// activation's, so that NaN passes through and `-0.0` stays `-0.0`.
    #[inline(always)]
    pub(crate) fn apply(self, value: f32) -> f32 {
        match self {
            Clamp::None => value,
            Clamp::Relu => nnc_ops::activation::relu(value),
            Clamp::Relu6 => nnc_ops::activation::relu6(value),
            Clamp::LeakyRelu { negative_slope } => {
                nnc_ops::activation::leaky_relu(value, negative_slope)
            }
        }
    }
}

/// What a micro-kernel does to a tile before storing it:
/// `c[i][j] = clamp(product[i][j] (+ old c[i][j]) + column_bias[j] + row_bias[i] + residual[i][j])`,
/// the additions in that order, each one only where its operand is present.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TileEpilogue<'a> {
    /// The tile's own bias values, one per column: at least `cols` of them.
    pub(crate) column_bias: Option<&'a [f32]>,
    /// The tile's (or strip's) own bias values, one per row: at least `rows` of them.
    pub(crate) row_bias: Option<&'a [f32]>,
    /// Laid out like C (rows `c_row_stride` apart) and starting at the tile's first element: at
    /// least `(rows - 1) * c_row_stride + cols` elements.
    pub(crate) residual: Option<&'a [f32]>,
    pub(crate) clamp: Clamp,
}

/// Where a micro-kernel writes its tile, and the epilogue it applies on the way.
///
/// The `_with_epilogue` kernels take a strip of any number of rows: they compute it tile by
/// tile, `MR` rows at a time (the last tile shorter), against the same panel of B, reading A's
/// tiles one after the other (consecutive packed panels, or rows further down a row-major A).
/// One call per strip saves the call, the dispatch and the set-up of one call per tile, which
/// matter when k is small and a tile takes only a few dozen steps.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TileOutput<'a> {
    /// The strip's first element; rows `c_row_stride` apart.
    pub(crate) c: *mut f32,
    pub(crate) c_row_stride: usize,
    /// Any number (`MR` per tile).
    pub(crate) rows: usize,
    /// At most `NR` times the kernel's `GemmKernels::strip_panels`: a strip covers that many
    /// neighbouring B panels.
    pub(crate) cols: usize,
    /// Add the product to the old C instead of overwriting it.
    pub(crate) accumulate: bool,
    pub(crate) epilogue: TileEpilogue<'a>,
}

impl TileOutput<'_> {
    /// Checks, in debug builds, the lengths the epilogue's slices must have.
    pub(crate) fn debug_check(&self) {
        debug_assert!(self.cols <= MAX_STRIP_PANELS * NR);
        if let Some(bias) = self.epilogue.column_bias {
            debug_assert!(bias.len() >= self.cols);
        }
        if let Some(bias) = self.epilogue.row_bias {
            debug_assert!(bias.len() >= self.rows);
        }
        if let Some(residual) = self.epilogue.residual
            && self.rows > 0
        {
            debug_assert!(residual.len() >= (self.rows - 1) * self.c_row_stride + self.cols);
        }
    }
}

impl<'a> TileOutput<'a> {
    /// The tile of this strip that starts at row `first_row` (a multiple of `MR` below `rows`):
    /// at most `MR` rows, with the epilogue's slices moved along to it.
    #[inline(always)]
    pub(crate) fn tile(&self, first_row: usize) -> TileOutput<'a> {
        self.rows_from(first_row, MR.min(self.rows - first_row))
    }

    /// Rows `first_row..first_row + rows` of this strip (inside it), with the epilogue's slices
    /// moved along to them.
    #[inline(always)]
    pub(crate) fn rows_from(&self, first_row: usize, rows: usize) -> TileOutput<'a> {
        debug_assert!(first_row + rows <= self.rows);
        let offset = first_row * self.c_row_stride;
        TileOutput {
            c: self.c.wrapping_add(offset),
            c_row_stride: self.c_row_stride,
            rows,
            cols: self.cols,
            accumulate: self.accumulate,
            epilogue: TileEpilogue {
                column_bias: self.epilogue.column_bias,
                row_bias: self.epilogue.row_bias.map(|bias| &bias[first_row..]),
                residual: self.epilogue.residual.map(|residual| &residual[offset..]),
                clamp: self.epilogue.clamp,
            },
        }
    }
}

/// A micro-kernel over a packed A panel: `(depth, a_panel, b_panel, output)`; see
/// `portable::tile_kernel_with_epilogue` for the contract.
pub(crate) type PackedTileKernel = unsafe fn(usize, &[f32], &[f32], &TileOutput<'_>);

/// A micro-kernel over a row-major A: `(depth, a, a_row_stride, b_panel, output)`; see
/// `portable::tile_kernel_row_major_a_with_epilogue` for the contract.
pub(crate) type RowMajorTileKernelWithEpilogue =
    unsafe fn(usize, &[f32], usize, &[f32], &TileOutput<'_>);

/// The most B panels any kernel's strip covers.
pub(crate) const MAX_STRIP_PANELS: usize = 2;

/// The pair of micro-kernels a product runs with, both for the same processor.
#[derive(Clone, Copy)]
pub(crate) struct GemmKernels {
    pub(crate) packed_a: PackedTileKernel,
    pub(crate) row_major_a: RowMajorTileKernelWithEpilogue,
    /// How many neighbouring B panels one call may cover (its `TileOutput::cols` is at most
    /// `strip_panels * NR`); the B slice then holds them one after the other, `depth * NR`
    /// floats each. A caller may always pass fewer.
    pub(crate) strip_panels: usize,
    /// The deepest row-major A read in place when the task grid cuts C's columns (see
    /// `driver::ROW_MAJOR_LHS_MAX_DEPTH_COLUMN_CUT_AVX512`).
    pub(crate) row_major_a_max_depth_column_cut: usize,
    /// Kernels for a product of one row whose B streams from memory, where the instruction set
    /// has ones that read it faster than `packed_a` and `row_major_a` (see `for_one_row`).
    pub(crate) one_row: Option<OneRowKernels>,
}

/// The micro-kernels of [`GemmKernels::for_one_row`]: strips of at most one row.
#[derive(Clone, Copy)]
pub(crate) struct OneRowKernels {
    pub(crate) packed_a: PackedTileKernel,
    pub(crate) row_major_a: RowMajorTileKernelWithEpilogue,
}

impl GemmKernels {
    /// The plain-Rust kernels, which every processor runs.
    pub(crate) const PORTABLE: GemmKernels = GemmKernels {
        packed_a: super::portable::tile_kernel_with_epilogue,
        row_major_a: super::portable::tile_kernel_row_major_a_with_epilogue,
        strip_panels: 1,
        row_major_a_max_depth_column_cut: super::driver::ROW_MAJOR_LHS_MAX_DEPTH,
        one_row: None,
    };

    /// The fastest kernels this processor runs, up to the cap of `set_max_isa`.
    pub(crate) fn detected() -> GemmKernels {
        GemmKernels::for_isa(super::selected_isa())
            .expect("gemm: the selected instruction set runs on this processor")
    }

    /// The kernels for a product of one row whose B streams from memory (a linear layer's
    /// weights in a decoding step): `one_row`'s where the instruction set has them, else these.
    /// They round otherwise than the same row in a larger product, so only callers that never
    /// compare the two use them.
    pub(crate) fn for_one_row(self) -> GemmKernels {
        match self.one_row {
            Some(one_row) => GemmKernels {
                packed_a: one_row.packed_a,
                row_major_a: one_row.row_major_a,
                ..self
            },
            None => self,
        }
    }

    /// The kernels for one instruction set, or `None` if this processor lacks it.
    pub(crate) fn for_isa(isa: GemmIsa) -> Option<GemmKernels> {
        match isa {
            GemmIsa::Portable => Some(GemmKernels::PORTABLE),
            #[cfg(target_arch = "x86_64")]
            GemmIsa::Avx2Fma if super::x86_64::is_available() => Some(GemmKernels {
                packed_a: super::x86_64::tile_kernel_with_epilogue,
                row_major_a: super::x86_64::tile_kernel_row_major_a_with_epilogue,
                strip_panels: 1,
                row_major_a_max_depth_column_cut: super::driver::ROW_MAJOR_LHS_MAX_DEPTH,
                one_row: Some(OneRowKernels {
                    packed_a: super::x86_64::one_row_kernel_with_epilogue,
                    row_major_a: super::x86_64::one_row_kernel_row_major_a_with_epilogue,
                }),
            }),
            #[cfg(target_arch = "x86_64")]
            GemmIsa::Avx512 if super::avx512::is_available() => Some(GemmKernels {
                packed_a: super::avx512::tile_kernel_with_epilogue,
                row_major_a: super::avx512::tile_kernel_row_major_a_with_epilogue,
                strip_panels: super::avx512::STRIP_PANELS,
                row_major_a_max_depth_column_cut:
                    super::driver::ROW_MAJOR_LHS_MAX_DEPTH_COLUMN_CUT_AVX512,
                one_row: None,
            }),
            GemmIsa::Avx2Fma | GemmIsa::Avx512 => None,
        }
    }
}

/// Fetches the B panels after a strip's own into L2 while the strip runs, a share of their lines
/// in each of the strip's full tiles. Packed panels lie next to each other (the next one starts
/// `depth * NR` floats on, in the same block or at the start of the next), so the weights of a
/// `linear` layer, streamed from memory when a whole network's weights do not fit in the
/// caches, are on their way before the next strip's first tile needs them: that tile would
/// otherwise wait for all of its panel, at the pace one core's fill buffers allow.
///
/// The requests stay inside the B slice the kernel was given (its strip's panels and the ones
/// after them), one line short of its end, and tiles past the last line make none. A prefetch
/// never faults, but one to a page the process has not touched, or has not mapped, costs a page
/// walk each time (about 120 ns on a first-generation Zen, against 4.5 ns to a touched page):
/// the last strip of a product of 3136 x 144 x 24, whose requests all went to one line past the
/// end of its B, ran at 5 GFLOP/s instead of 30.
///
/// The lines are requested one or two per iteration of the tiles' k loops ([`SpreadLines`]),
/// not in a burst before each tile: a burst takes the core's fill buffers until its lines come
/// from memory, so the loop's own loads wait behind it as if the lines were read on demand. On
/// Sapphire Rapids, 128 x 384 x 1536 with the weights streamed (`gemm_timing --copies 16`) ran
/// at 123-126 GFLOP/s with a burst or with no prefetch at all, and at 148 spread; that is
/// 2.4 MB of weights in the 0.2 ms lost, about 12 GB/s, the pace of demand misses.
#[cfg(target_arch = "x86_64")]
pub(super) struct NextPanelPrefetch {
    next_panel: *const f32,
    lines_per_tile: usize,
    /// Lines after the strip's panels not handed to a tile yet.
    lines_left: usize,
    /// The share of a full tile once no lines are left: the strip's own first line (and the
    /// one after it, for loops that request two), which the tile reads anyway, so that every
    /// full tile runs the same loop (a second, request-free loop for them came out of line and
    /// cost 3% on 672 x 16 x 96); no share when `b` has fewer than two lines.
    idle: LineShare,
}

#[cfg(target_arch = "x86_64")]
impl NextPanelPrefetch {
    /// For a strip over the `panels` panels of `depth` steps at the start of `b` with
    /// `full_tiles` tiles of the kernel's full height; it fetches as many panels after them as
    /// `b` holds (keeping one line back, see [`SpreadLines`]), shared among the full tiles (the
    /// last, shorter tile's loop is compiled without the requests). A strip with no full tile
    /// (a product of a few rows, such as a decoding step's) fetches nothing: it streams its
    /// panels at the pace of the hardware's prefetcher.
    pub(super) fn new(depth: usize, b: &[f32], panels: usize, full_tiles: usize) -> Self {
        let own = depth * panels * NR;
        let lines_after = b.len().saturating_sub(own) / NR;
        let lines = (depth * panels).min(lines_after.saturating_sub(1));
        Self {
            next_panel: b.as_ptr().wrapping_add(own),
            lines_per_tile: lines.div_ceil(full_tiles.max(1)),
            lines_left: lines,
            idle: if b.len() >= 2 * NR {
                LineShare {
                    first: b.as_ptr(),
                    lines: 1,
                }
            } else {
                LineShare::NONE
            },
        }
    }

    /// The next full tile's share of the lines: the idle one once they have all been handed
    /// out.
    #[inline(always)]
    pub(super) fn next_share(&mut self) -> LineShare {
        let lines = self.lines_per_tile.min(self.lines_left);
        if lines == 0 {
            return self.idle;
        }
        let share = LineShare {
            first: self.next_panel,
            lines,
        };
        self.next_panel = self.next_panel.wrapping_add(lines * NR);
        self.lines_left -= lines;
        share
    }
}

/// The offset, from the start of a strip's packed A (`a_len` floats, its own panels and any
/// after them), of the A that a full tile at `tile_offset` fetches into L2 as it runs: the
/// next tile's, `step` floats on (the strip's next tile, or after its last the first of the
/// next block of rows), when all of it lies inside A; else the tile's own, which it reads
/// anyway (a request that finds its line in L1 costs an issue slot). As for B (see
/// [`NextPanelPrefetch`]), a request past the end of A may cost a page walk each time.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) fn ahead_offset(tile_offset: usize, step: usize, a_len: usize) -> usize {
    if tile_offset + 2 * step <= a_len {
        tile_offset + step
    } else {
        tile_offset
    }
}

/// Lines of B panels, `lines` 64-byte lines from `first`, that a tile's k loop fetches into L2
/// for the tiles after it.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(super) struct LineShare {
    first: *const f32,
    lines: usize,
}

#[cfg(target_arch = "x86_64")]
impl LineShare {
    /// No lines, for the tiles whose loop makes no requests.
    pub(super) const NONE: Self = Self {
        first: std::ptr::null(),
        lines: 0,
    };

    /// How many lines each iteration of a k loop of `iterations` iterations requests: none for
    /// an empty share, one, or two when the share has more lines than the loop has iterations
    /// (a strip of two or three full tiles). A second request in every iteration cost 2-4% on
    /// products whose weights stay in L2, where the requests find their lines already there.
    #[inline(always)]
    pub(super) fn lines_per_iteration(self, iterations: usize) -> usize {
        match self.lines {
            0 => 0,
            lines if lines > iterations => 2,
            _ => 1,
        }
    }

    /// Whether the share has no lines: a loop compiled without requests should run it.
    #[inline(always)]
    pub(super) fn is_empty(self) -> bool {
        self.lines == 0
    }

    /// Requests spread evenly over the `iterations` iterations of a k loop, `LINES` lines per
    /// iteration; with more lines than that, the lines in between are left out.
    #[inline(always)]
    pub(super) fn spread<const LINES: usize>(self, iterations: usize) -> SpreadLines<LINES> {
        let groups = self.lines.div_ceil(LINES.max(1)) as u64;
        SpreadLines {
            first: self.first,
            position: 0,
            increment: (groups << 32) / iterations.max(1) as u64,
        }
    }
}

/// A [`LineShare`] spread over a k loop, `LINES` lines per iteration (none when `LINES` is 0):
/// the group of lines to request is the integer part of `position` (32 fractional bits), which
/// each iteration advances by `increment`. With two lines per iteration and a share of an odd
/// number of lines, the last group's second line is the one after the share: the line that
/// [`NextPanelPrefetch`] keeps back.
#[cfg(target_arch = "x86_64")]
pub(super) struct SpreadLines<const LINES: usize> {
    first: *const f32,
    position: u64,
    increment: u64,
}

#[cfg(target_arch = "x86_64")]
impl<const LINES: usize> SpreadLines<LINES> {
    /// Requests this iteration's lines.
    #[inline(always)]
    pub(super) fn step(&mut self) {
        if LINES == 0 {
            return;
        }
        let line = self.next_group();
        super::prefetch_l2(line);
        if LINES == 2 {
            super::prefetch_l2(line.wrapping_add(NR));
        }
    }

    /// The first line of this iteration's group, and on to the next iteration.
    #[inline(always)]
    fn next_group(&mut self) -> *const f32 {
        let line = self
            .first
            .wrapping_add((self.position >> 32) as usize * LINES * NR);
        self.position += self.increment;
        line
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The lines a strip's full tiles request, as offsets in floats from the start of `b`, for
    /// k loops of `iterations` iterations and `lines_per_iteration` lines each.
    fn requested_lines(
        depth: usize,
        b: &[f32],
        panels: usize,
        full_tiles: usize,
        iterations: usize,
        two_lines: bool,
    ) -> Vec<usize> {
        let mut next_panel = NextPanelPrefetch::new(depth, b, panels, full_tiles);
        let mut offsets = Vec::new();
        for _ in 0..full_tiles {
            let share = next_panel.next_share();
            if share.is_empty() {
                continue;
            }
            let offset = |line: *const f32| (line as usize - b.as_ptr() as usize) / 4;
            if two_lines {
                let mut lines = share.spread::<2>(iterations);
                for _ in 0..iterations {
                    let line = offset(lines.next_group());
                    offsets.extend([line, line + NR]);
                }
            } else {
                let mut lines = share.spread::<1>(iterations);
                offsets.extend((0..iterations).map(|_| offset(lines.next_group())));
            }
        }
        offsets
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// A full tile fetches the next tile's A where all of it lies inside A, and its own
        /// A otherwise: never anything past A's end.
        #[test]
        fn a_ahead_stays_inside_a(
            step in 1usize..5000,
            tile in 0usize..20,
            extra in prop_oneof![0usize..16, 0usize..20_000],
        ) {
            let tile_offset = tile * step;
            let a_len = tile_offset + step + extra;
            let ahead = ahead_offset(tile_offset, step, a_len);
            prop_assert!(ahead + step <= a_len);
            let next_fits = tile_offset + 2 * step <= a_len;
            prop_assert_eq!(ahead, if next_fits { tile_offset + step } else { tile_offset });
        }

        /// Every line requested lies inside `b`, after the strip's panels or among the idle
        /// share's first two lines, however much of the next panels `b` holds (none, a part,
        /// all, more), and with room in `b` the requests cover the next panels' lines.
        #[test]
        fn requests_stay_inside_b(
            depth in prop_oneof![1usize..4, 1usize..300],
            panels in 1usize..=2,
            full_tiles in 0usize..600,
            extra_floats in prop_oneof![0usize..3 * NR, 0usize..20_000],
            iterations in 1usize..200,
            two_lines in any::<bool>(),
        ) {
            let own = depth * panels * NR;
            let b = vec![0.0f32; own + extra_floats];
            let offsets = requested_lines(depth, &b, panels, full_tiles, iterations, two_lines);
            for &offset in &offsets {
                // Ahead of the strip's panels, or the idle share's two lines at its start.
            prop_assert!(
                (offset >= own || offset < 2 * NR) && offset + NR <= b.len(),
                "line at {offset} of {}",
                b.len()
            );
            }
            let lines_after = extra_floats / NR;
            if full_tiles > 0 && lines_after > depth * panels && iterations * full_tiles >= depth * panels {
                let mut distinct = offsets.clone();
                distinct.sort_unstable();
                distinct.dedup();
                let wanted: Vec<usize> = (0..depth * panels).map(|line| own + line * NR).collect();
                prop_assert!(wanted.iter().all(|line| distinct.binary_search(line).is_ok()));
            }
        }
    }
}
