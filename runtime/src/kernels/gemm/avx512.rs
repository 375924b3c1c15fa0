//! The AVX-512 micro-kernel: a tile of up to 12 rows (two packed panels of A) by up to 32
//! columns (two packed panels of B) of C, two zmm accumulators per row.
//!
//! It reads the same packed panels as the AVX2 kernel (A in panels of `MR = 6` rows, B in panels
//! of `NR = 16` columns), so packed weights do not depend on the processor; a strip covers two
//! neighbouring B panels ([`STRIP_PANELS`]). Each step of the k loop loads one vector of each B
//! panel and issues one FMA per row and panel, the row's value of A broadcast from memory
//! (`{1to16}`, folded into the FMA): 24 FMAs for 14 loads. A tile of one panel (twelve FMAs for
//! thirteen loads) is bound by the loads, not the FMAs, on a core with two 512-bit FMA units:
//! on Sapphire Rapids the encoder's 128 x 384 x 1536 product ran at 130 GFLOP/s on one panel
//! against MLAS's 161. A strip's last, odd panel runs as a tile of one panel.
//!
//! The epilogue (biases, residual, clamp) is applied to the accumulators before the one store of
//! each row, as in the AVX2 kernel; a tile cut short on the right loads and stores under a lane
//! mask instead of going through a buffer.

use super::tile::{Clamp, LineShare, NextPanelPrefetch, TileEpilogue, TileOutput, ahead_offset};
use super::{MR, NR};
use crate::kernels::vectorize::first_lanes16;
use std::arch::x86_64::{
    __m512, _CMP_LT_OQ, _mm512_add_ps, _mm512_cmp_ps_mask, _mm512_fmadd_ps, _mm512_loadu_ps,
    _mm512_mask_mul_ps, _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_max_ps, _mm512_min_ps,
    _mm512_set1_ps, _mm512_setzero_ps,
};

/// Rows of the widest tile: two packed panels of A.
const TILE_ROWS: usize = 2 * MR;
/// B panels a strip covers (see `GemmKernels::strip_panels`).
pub(super) const STRIP_PANELS: usize = 2;

/// Whether the running processor has the features this kernel needs.
pub(super) fn is_available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
}

/// Computes one strip of tiles, `C[0..rows, 0..cols] = epilogue(A_panels * B_panel (+ C))`;
/// the same contract as `portable::tile_kernel_with_epilogue`.
///
/// # Safety
///
/// The processor must support AVX-512F (`is_available()`), and the operands and `output` must
/// be as `portable::tile_kernel_with_epilogue` requires.
pub(super) unsafe fn tile_kernel_with_epilogue(
    depth: usize,
    a_panel: &[f32],
    b_panel: &[f32],
    output: &TileOutput<'_>,
) {
    debug_assert!(a_panel.len() >= output.rows.div_ceil(MR) * depth * MR);
    debug_assert!(b_panel.len() >= output.cols.div_ceil(NR) * depth * NR);
    output.debug_check();
    // SAFETY: The caller guarantees the CPU features, the panel lengths and the validity of the
    // destination strip and the epilogue's slices, which is what each tile's kernel needs.
    unsafe { strip_kernel::<false>(depth, a_panel.as_ptr(), 0, a_panel.len(), b_panel, output) };
}

/// Computes one strip of tiles, `C[0..rows, 0..cols] = epilogue(A * B_panel (+ C))` with a
/// row-major A; the same contract as `portable::tile_kernel_row_major_a_with_epilogue`.
///
/// # Safety
///
/// The processor must support AVX-512F (`is_available()`), and the operands and `output` must
/// be as `portable::tile_kernel_row_major_a_with_epilogue` requires.
pub(super) unsafe fn tile_kernel_row_major_a_with_epilogue(
    depth: usize,
    a: &[f32],
    a_row_stride: usize,
    b_panel: &[f32],
    output: &TileOutput<'_>,
) {
    debug_assert!(output.rows == 0 || a.len() >= (output.rows - 1) * a_row_stride + depth);
    debug_assert!(b_panel.len() >= output.cols.div_ceil(NR) * depth * NR);
    output.debug_check();
    // SAFETY: As for `tile_kernel_with_epilogue`, with A's reads `a[r * a_row_stride + p]`
    // inside `a`.
    unsafe { strip_kernel::<true>(depth, a.as_ptr(), a_row_stride, 0, b_panel, output) };
}

/// Runs the strip's tiles one after the other: tiles of `TILE_ROWS` rows, then the last,
/// shorter one, each with the loop monomorphised for its rows, over one B panel or two.
///
/// # Safety
///
/// As for `tile_kernel_with_epilogue` (or `tile_kernel_row_major_a_with_epilogue` with
/// `ROW_MAJOR_A`); a packed A has `a_len` floats from `a` (its strip's panels and any after
/// them, which the full tiles fetch ahead).
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn strip_kernel<const ROW_MAJOR_A: bool>(
    depth: usize,
    a: *const f32,
    a_row_stride: usize,
    a_len: usize,
    b: &[f32],
    output: &TileOutput<'_>,
) {
    // SAFETY: Forwarded from the caller; the strip's columns span `cols.div_ceil(NR)` panels.
    unsafe {
        if output.cols > NR {
            strip_of_panels::<ROW_MAJOR_A, 2>(depth, a, a_row_stride, a_len, b, output);
        } else {
            strip_of_panels::<ROW_MAJOR_A, 1>(depth, a, a_row_stride, a_len, b, output);
        }
    }
}

/// [`strip_kernel`] for a strip of `PANELS` B panels.
///
/// # Safety
///
/// As for [`strip_kernel`], with `output.cols` in `(PANELS - 1) * NR + 1..=PANELS * NR`.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn strip_of_panels<const ROW_MAJOR_A: bool, const PANELS: usize>(
    depth: usize,
    a: *const f32,
    a_row_stride: usize,
    a_len: usize,
    b: &[f32],
    output: &TileOutput<'_>,
) {
    // The distance from one tile's A to the next: two packed panels, or `TILE_ROWS` rows.
    let a_tile_step = if ROW_MAJOR_A {
        TILE_ROWS * a_row_stride
    } else {
        TILE_ROWS * depth
    };
    // The tile whose A starts `a_offset` floats in (see `ahead_offset`).
    let lhs = |a_offset: usize| LhsPointer {
        a: a.wrapping_add(a_offset),
        a_row_stride,
        depth,
        ahead: a.wrapping_add(ahead_offset(a_offset, a_tile_step, a_len)),
    };
    let mut first_row = 0;
    let mut a_offset = 0;
    // A strip that would end in a tile of one row ends in one of `TILE_ROWS + 1` instead (26
    // accumulators and two B vectors still fit the 32 registers): a lone row streams the
    // strip's B panels for one FMA per load, and MobileNetV2's 7x7 images (49 pixels: four
    // tiles and a row) spent on it what 3.6 rows of a full tile take.
    let last_tile_rows = match output.rows % TILE_ROWS {
        1 if output.rows > TILE_ROWS => TILE_ROWS + 1,
        rows => rows,
    };
    let full_tiles = (output.rows - last_tile_rows) / TILE_ROWS;
    let mut next_panel = NextPanelPrefetch::new(depth, b, PANELS, full_tiles);
    let b = b.as_ptr();
    while first_row < full_tiles * TILE_ROWS {
        let next = next_panel.next_share();
        let tile = output.rows_from(first_row, TILE_ROWS);
        // SAFETY: Rows `first_row..first_row + TILE_ROWS` are part of the strip the caller
        // vouched for, and `a` points at their first packed panel (or first row) of A.
        unsafe {
            match next.lines_per_iteration(k_loop_iterations::<PANELS, ROW_MAJOR_A>(depth)) {
                0 => tile_kernel_rows::<TILE_ROWS, PANELS, ROW_MAJOR_A, 0>(
                    lhs(a_offset),
                    b,
                    next,
                    &tile,
                ),
                1 => tile_kernel_rows::<TILE_ROWS, PANELS, ROW_MAJOR_A, 1>(
                    lhs(a_offset),
                    b,
                    next,
                    &tile,
                ),
                _ => tile_kernel_rows::<TILE_ROWS, PANELS, ROW_MAJOR_A, 2>(
                    lhs(a_offset),
                    b,
                    next,
                    &tile,
                ),
            }
        };
        first_row += TILE_ROWS;
        a_offset += a_tile_step;
    }
    if first_row < output.rows {
        let tile = output.rows_from(first_row, output.rows - first_row);
        // SAFETY: As above, for the last tile, shorter than a full one or one row longer.
        unsafe { dispatch_rows::<_, PANELS>(lhs(a_offset), PackedB::<ROW_MAJOR_A> { b }, &tile) };
    }
}

/// Calls the loop monomorphised for `tile.rows` rows (fewer than `TILE_ROWS`, or `TILE_ROWS +
/// 1`).
///
/// # Safety
///
/// As for `B::tile`.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn dispatch_rows<B: TileB, const PANELS: usize>(a: LhsPointer, b: B, tile: &TileOutput<'_>) {
    // SAFETY: Forwarded from the caller.
    unsafe {
        match tile.rows {
            13 => b.tile::<13, PANELS>(a, tile),
            11 => b.tile::<11, PANELS>(a, tile),
            10 => b.tile::<10, PANELS>(a, tile),
            9 => b.tile::<9, PANELS>(a, tile),
            8 => b.tile::<8, PANELS>(a, tile),
            7 => b.tile::<7, PANELS>(a, tile),
            6 => b.tile::<6, PANELS>(a, tile),
            5 => b.tile::<5, PANELS>(a, tile),
            4 => b.tile::<4, PANELS>(a, tile),
            3 => b.tile::<3, PANELS>(a, tile),
            2 => b.tile::<2, PANELS>(a, tile),
            1 => b.tile::<1, PANELS>(a, tile),
            _ => {}
        }
    }
}

/// Where a tile's B comes from, and the tile loop that reads it that way.
trait TileB: Copy {
    /// The k loop and the store of a tile of `ROWS` rows over `PANELS` panels of B.
    ///
    /// # Safety
    ///
    /// The processor has AVX-512F; `a` and `tile` are as `tile_kernel_rows` requires, and B
    /// is readable as the implementing type says.
    unsafe fn tile<const ROWS: usize, const PANELS: usize>(
        self,
        a: LhsPointer,
        tile: &TileOutput<'_>,
    );
}

/// Packed B panels at `b` (`depth * NR` floats each), under an A in packed panels or, with
/// `ROW_MAJOR_A`, row-major.
#[derive(Clone, Copy)]
struct PackedB<const ROW_MAJOR_A: bool> {
    b: *const f32,
}

impl<const ROW_MAJOR_A: bool> TileB for PackedB<ROW_MAJOR_A> {
    #[inline(always)]
    unsafe fn tile<const ROWS: usize, const PANELS: usize>(
        self,
        a: LhsPointer,
        tile: &TileOutput<'_>,
    ) {
        // SAFETY: Forwarded from the caller.
        unsafe {
            tile_kernel_rows::<ROWS, PANELS, ROW_MAJOR_A, 0>(a, self.b, LineShare::NONE, tile)
        }
    }
}

/// B read in place, step `k` being the `PANELS * NR` floats at `b + offsets[k]` (the indirect
/// convolution's image rows), under an A in packed panels.
#[derive(Clone, Copy)]
struct IndirectB<'a> {
    b: *const f32,
    offsets: &'a [usize],
}

impl TileB for IndirectB<'_> {
    #[inline(always)]
    unsafe fn tile<const ROWS: usize, const PANELS: usize>(
        self,
        a: LhsPointer,
        tile: &TileOutput<'_>,
    ) {
        // SAFETY: Forwarded from the caller.
        unsafe { indirect_tile_rows::<ROWS, PANELS>(a, self, tile) }
    }
}

/// Where a tile's values of A are: consecutive packed panels (row `r` of the tile at
/// `a[(r / MR) * depth * MR + p * MR + r % MR]`) or, with `ROW_MAJOR_A`, a row-major matrix
/// (`a[r * a_row_stride + p]`); and the packed panels a full tile of the packed GEMM fetches
/// into L2 as it runs (see `ahead_offset`).
#[derive(Clone, Copy)]
struct LhsPointer {
    a: *const f32,
    a_row_stride: usize,
    depth: usize,
    ahead: *const f32,
}

/// Iterations of `tile_kernel_rows`'s k loop that take two steps.
const fn unrolled_steps<const PANELS: usize, const ROW_MAJOR_A: bool>(depth: usize) -> usize {
    if PANELS == 1 || !ROW_MAJOR_A {
        depth / 2
    } else {
        0
    }
}

/// Iterations of `tile_kernel_rows`'s k loop: the unrolled ones, then single steps.
const fn k_loop_iterations<const PANELS: usize, const ROW_MAJOR_A: bool>(depth: usize) -> usize {
    depth - unrolled_steps::<PANELS, ROW_MAJOR_A>(depth)
}

/// The k loop for a tile of `ROWS` rows and `PANELS` B panels, followed by the store. A full
/// tile also fetches `next`, its share of the B panels after its strip's, into L2,
/// `NEXT_LINES` lines per iteration (see `NextPanelPrefetch`); a shorter one, the last of its
/// strip, fetches nothing (`NEXT_LINES` 0).
///
/// # Safety
///
/// As for `tile_kernel_with_epilogue` (or `tile_kernel_row_major_a_with_epilogue` with
/// `ROW_MAJOR_A`), for a tile of `ROWS` rows whose A starts at `a.a`, and columns in
/// `(PANELS - 1) * NR + 1..=PANELS * NR`.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn tile_kernel_rows<
    const ROWS: usize,
    const PANELS: usize,
    const ROW_MAJOR_A: bool,
    const NEXT_LINES: usize,
>(
    a: LhsPointer,
    b: *const f32,
    next: LineShare,
    tile: &TileOutput<'_>,
) {
    // As in the AVX2 kernel: fetch the rows the store reads (the old C, the residual) now, so
    // their misses hide behind the k loop; a C that is only written is not fetched.
    for row in 0..ROWS {
        if tile.accumulate {
            let destination = tile.c.wrapping_add(row * tile.c_row_stride);
            super::prefetch(destination);
            super::prefetch(destination.wrapping_add(tile.cols - 1));
        }
        if let Some(residual) = tile.epilogue.residual {
            let source = residual.as_ptr().wrapping_add(row * tile.c_row_stride);
            super::prefetch(source);
            super::prefetch(source.wrapping_add(tile.cols - 1));
        }
    }
    // The offset of each row's value within one step of A, and the distance between steps.
    let mut row_offsets = [0usize; ROWS];
    for (row, offset) in row_offsets.iter_mut().enumerate() {
        *offset = if ROW_MAJOR_A {
            row * a.a_row_stride
        } else {
            (row / MR) * a.depth * MR + row % MR
        };
    }
    let a_step = if ROW_MAJOR_A { 1 } else { MR };
    let depth = a.depth;
    // Panel `p`'s step `k` is at `b + p * panel_stride + k * NR`.
    let panel_stride = depth * NR;
    let mut accumulators = [[_mm512_setzero_ps(); PANELS]; ROWS];
    let ahead = a.ahead;
    let mut a = a.a;
    let mut b = b;
    // The packed A that follows a full tile's (the strip's next tile, or after the last the
    // first of the next block of rows, where A holds them: `ahead_offset`; else the tile's own
    // panels) is fetched into L2 as this tile reads its own, 48 bytes
    // of each panel per pair of steps, so one prefetch per panel and pair covers every line.
    // When A is a weight packed at load (a convolution), a strip reads each panel once and from
    // memory, and the hardware's prefetcher does not keep up with the kernel's 48 bytes per six
    // cycles: a 512 x 512 by 512 x 16 product ran at 60 GFLOP/s without this and 86 with it.
    // When A was packed during the call it is in L2 already, and this costs two instructions
    // per 24 FMAs. A short tile is the last of A: nothing of A follows it. The condition is a
    // constant: a flag tested in the loop made the kernel 40% slower.
    let prefetch_next = ROWS == TILE_ROWS && !ROW_MAJOR_A;
    let mut next_a = ahead;
    // Unrolling by two halves the loop overhead; the tail step is a plain single step. A
    // row-major A over two panels is not unrolled: LLVM then hoisted the second step's twelve
    // broadcasts above the first step's FMAs and spilled them to the stack (69 GFLOP/s instead
    // of 150 on the encoder's 128 x 384 x 1536).
    let unrolled_steps = unrolled_steps::<PANELS, ROW_MAJOR_A>(depth);
    let mut next = next.spread::<NEXT_LINES>(k_loop_iterations::<PANELS, ROW_MAJOR_A>(depth));
    for _ in 0..unrolled_steps {
        next.step();
        if prefetch_next {
            super::prefetch_l2(next_a);
            super::prefetch_l2(next_a.wrapping_add(MR * depth));
            next_a = next_a.wrapping_add(2 * MR);
        }
        // SAFETY: Step `p` reads A at `p * a_step + row_offsets[r]` for `r < ROWS` and
        // `b[panel * panel_stride + p * NR..][..NR]` for `panel < PANELS`, and `p < depth`, so
        // every read is inside what the caller vouched for.
        unsafe {
            fma_step(a, &row_offsets, b, panel_stride, &mut accumulators);
            fma_step(
                a.add(a_step),
                &row_offsets,
                b.add(NR),
                panel_stride,
                &mut accumulators,
            );
            a = a.add(2 * a_step);
            b = b.add(2 * NR);
        }
    }
    for _ in 2 * unrolled_steps..depth {
        next.step();
        if prefetch_next {
            super::prefetch_l2(next_a);
            super::prefetch_l2(next_a.wrapping_add(MR * depth));
            next_a = next_a.wrapping_add(MR);
        }
        // SAFETY: This is a step below `depth`, inside the operands as above.
        unsafe { fma_step(a, &row_offsets, b, panel_stride, &mut accumulators) };
        a = a.wrapping_add(a_step);
        b = b.wrapping_add(NR);
    }
    // A copy for the store: with the accumulators' own address passed, LLVM kept them in a
    // stack array that it zeroed with a call to `memset` for every tile (1536 bytes; 1.4% of
    // MobileNetV2's time, whose 1x1 layers are 16 to 160 steps deep).
    let finished = accumulators;
    // SAFETY: The caller vouched for `ROWS` rows of `tile.cols` elements at `tile.c`.
    unsafe { store_tile(&finished, tile) };
}

/// Computes one strip, `C[0..rows, 0..cols] = epilogue(A_panels * B)` (up to `STRIP_PANELS *
/// NR` columns), where A is packed in panels of `MR` rows and `depth` steps (one block: `depth`
/// at most the GEMM's `KC`) and step `k` of B is the `cols` floats at `b + offsets[k]`: the
/// indirect convolution, whose B is the image itself, never packed.
///
/// # Safety
///
/// The processor must support AVX-512F (`is_available()`); `a_panels` must hold the strip's
/// `rows.div_ceil(MR)` panels; `offsets` must hold `depth` offsets, and `b + offsets[k]` be
/// valid for reads of `cols.div_ceil(NR) * NR` floats for each; `output` must be as
/// `portable::tile_kernel_with_epilogue` requires.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(crate) unsafe fn indirect_strip(
    depth: usize,
    a_panels: &[f32],
    b: *const f32,
    offsets: &[usize],
    output: &TileOutput<'_>,
) {
    debug_assert!(a_panels.len() >= output.rows.div_ceil(MR) * depth * MR);
    debug_assert!(offsets.len() >= depth);
    output.debug_check();
    let b = IndirectB { b, offsets };
    // SAFETY: Forwarded from the caller; the strip's columns span `cols.div_ceil(NR)` panels.
    unsafe {
        if output.cols > NR {
            indirect_strip_of_panels::<2>(depth, a_panels.as_ptr(), b, output);
        } else {
            indirect_strip_of_panels::<1>(depth, a_panels.as_ptr(), b, output);
        }
    }
}

/// [`indirect_strip`] for `PANELS` panels' worth of columns: tiles of `TILE_ROWS` rows, then
/// the last, shorter one.
///
/// # Safety
///
/// As for [`indirect_strip`], with `output.cols` in `(PANELS - 1) * NR + 1..=PANELS * NR`.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn indirect_strip_of_panels<const PANELS: usize>(
    depth: usize,
    a: *const f32,
    b: IndirectB<'_>,
    output: &TileOutput<'_>,
) {
    let lhs = |first_row: usize| LhsPointer {
        a: a.wrapping_add(first_row * depth),
        a_row_stride: 0,
        depth,
        ahead: a.wrapping_add(first_row * depth),
    };
    let mut first_row = 0;
    while first_row + TILE_ROWS <= output.rows {
        let tile = output.rows_from(first_row, TILE_ROWS);
        // SAFETY: Rows `first_row..first_row + TILE_ROWS` are part of the strip the caller
        // vouched for, and their panels of A start `first_row * depth` floats in.
        unsafe { indirect_tile_rows::<TILE_ROWS, PANELS>(lhs(first_row), b, &tile) };
        first_row += TILE_ROWS;
    }
    if first_row < output.rows {
        let tile = output.rows_from(first_row, output.rows - first_row);
        // SAFETY: As above, for the last tile, shorter than a full one or one row longer.
        unsafe { dispatch_rows::<_, PANELS>(lhs(first_row), b, &tile) };
    }
}

/// The k loop of an indirect tile of `ROWS` rows (A in packed panels), then the store.
///
/// # Safety
///
/// As for [`indirect_strip`], for a tile of `ROWS` rows whose A starts at `a.a`, with
/// `tile.cols` in `(PANELS - 1) * NR + 1..=PANELS * NR`.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn indirect_tile_rows<const ROWS: usize, const PANELS: usize>(
    a: LhsPointer,
    b: IndirectB<'_>,
    tile: &TileOutput<'_>,
) {
    let mut row_offsets = [0usize; ROWS];
    for (row, offset) in row_offsets.iter_mut().enumerate() {
        *offset = (row / MR) * a.depth * MR + row % MR;
    }
    let mut accumulators = [[_mm512_setzero_ps(); PANELS]; ROWS];
    for (step, &offset) in b.offsets[..a.depth].iter().enumerate() {
        // SAFETY: Step `step < depth` reads A at `step * MR + row_offsets[r]`, inside the
        // tile's panels, and `PANELS * NR` floats of B at `b + offset`, which the caller
        // vouched for.
        unsafe {
            fma_step(
                a.a.add(step * MR),
                &row_offsets,
                b.b.add(offset),
                NR,
                &mut accumulators,
            );
        }
    }
    // SAFETY: The caller vouched for `ROWS` rows of `tile.cols` elements at `tile.c`.
    unsafe { store_tile(&accumulators, tile) };
}

/// Computes one strip, `C[0..rows, 0..cols] = epilogue(A * B_panels)` (up to `STRIP_PANELS *
/// NR` columns), where B is packed in panels of `NR` columns and `depth` steps (one block:
/// `depth` at most the GEMM's `KC`) and row `r`, step `k` of A is the float `r` places past
/// `a + offsets[k]`: the channels-last convolution of an NCHW image, whose rows are output
/// pixels and whose A is the image itself, read in place.
///
/// # Safety
///
/// The processor must support AVX-512F (`is_available()`); `b_panels` must hold the strip's
/// `cols.div_ceil(NR)` panels of `depth` steps; `offsets` must hold `depth` offsets, and `a +
/// offsets[k]` be valid for reads of `rows` floats for each; `output` must be as
/// `portable::tile_kernel_with_epilogue` requires.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(crate) unsafe fn indirect_lhs_strip(
    depth: usize,
    a: *const f32,
    offsets: &[usize],
    b_panels: &[f32],
    output: &TileOutput<'_>,
) {
    debug_assert!(b_panels.len() >= output.cols.div_ceil(NR) * depth * NR);
    debug_assert!(offsets.len() >= depth);
    output.debug_check();
    let b = IndirectA {
        b: b_panels.as_ptr(),
        depth,
        offsets,
    };
    // SAFETY: Forwarded from the caller; the strip's columns span `cols.div_ceil(NR)` panels.
    unsafe {
        if output.cols > NR {
            indirect_lhs_strip_of_panels::<2>(a, b, output);
        } else {
            indirect_lhs_strip_of_panels::<1>(a, b, output);
        }
    }
}

/// Packed B panels of `depth` steps at `b`, under an A read in place: row `r`, step `k` at
/// `a + offsets[k] + r`.
#[derive(Clone, Copy)]
struct IndirectA<'a> {
    b: *const f32,
    depth: usize,
    offsets: &'a [usize],
}

impl TileB for IndirectA<'_> {
    #[inline(always)]
    unsafe fn tile<const ROWS: usize, const PANELS: usize>(
        self,
        a: LhsPointer,
        tile: &TileOutput<'_>,
    ) {
        // SAFETY: Forwarded from the caller.
        unsafe { indirect_lhs_tile_rows::<ROWS, PANELS>(a.a, self, tile) }
    }
}

/// [`indirect_lhs_strip`] for `PANELS` panels' worth of columns: tiles of `TILE_ROWS` rows,
/// then the last, shorter one.
///
/// # Safety
///
/// As for [`indirect_lhs_strip`], with `output.cols` in `(PANELS - 1) * NR + 1..=PANELS * NR`.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn indirect_lhs_strip_of_panels<const PANELS: usize>(
    a: *const f32,
    b: IndirectA<'_>,
    output: &TileOutput<'_>,
) {
    let mut first_row = 0;
    while first_row + TILE_ROWS <= output.rows {
        let tile = output.rows_from(first_row, TILE_ROWS);
        // SAFETY: Rows `first_row..first_row + TILE_ROWS` are part of the strip the caller
        // vouched for, and their steps start `first_row` floats past the strip's.
        unsafe { indirect_lhs_tile_rows::<TILE_ROWS, PANELS>(a.add(first_row), b, &tile) };
        first_row += TILE_ROWS;
    }
    if first_row < output.rows {
        let tile = output.rows_from(first_row, output.rows - first_row);
        let lhs = LhsPointer {
            a: a.wrapping_add(first_row),
            a_row_stride: 1,
            depth: b.depth,
            ahead: a.wrapping_add(first_row),
        };
        // SAFETY: As above, for the last tile, shorter than a full one or one row longer.
        unsafe { dispatch_rows::<_, PANELS>(lhs, b, &tile) };
    }
}

/// The k loop of a tile of `ROWS` rows whose A is read in place from `a` (row `r`, step `k`
/// at `a + offsets[k] + r`), then the store.
///
/// # Safety
///
/// As for [`indirect_lhs_strip`], for a tile of `ROWS` rows whose first row reads from `a`,
/// with `tile.cols` in `(PANELS - 1) * NR + 1..=PANELS * NR`.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn indirect_lhs_tile_rows<const ROWS: usize, const PANELS: usize>(
    a: *const f32,
    b: IndirectA<'_>,
    tile: &TileOutput<'_>,
) {
    let mut row_offsets = [0usize; ROWS];
    for (row, offset) in row_offsets.iter_mut().enumerate() {
        *offset = row;
    }
    let mut accumulators = [[_mm512_setzero_ps(); PANELS]; ROWS];
    for (step, &offset) in b.offsets[..b.depth].iter().enumerate() {
        // SAFETY: Step `step < depth` reads A at `a + offset + r` for `r < ROWS`, and one
        // vector of each of the tile's B panels at `step * NR`, which the caller vouched for.
        unsafe {
            fma_step(
                a.add(offset),
                &row_offsets,
                b.b.add(step * NR),
                b.depth * NR,
                &mut accumulators,
            );
        }
    }
    // A copy, as in `tile_kernel_rows`.
    let finished = accumulators;
    // SAFETY: The caller vouched for `ROWS` rows of `tile.cols` elements at `tile.c`.
    unsafe { store_tile(&finished, tile) };
}

/// One step of the k loop: `accumulators[r][p] += a[row_offsets[r]] * b[p * panel_stride..]`
/// for one row of each B panel.
///
/// # Safety
///
/// `a` must be valid for reads at each of `row_offsets`, and `b + p * panel_stride` for `NR`
/// reads for every `p < PANELS`.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn fma_step<const ROWS: usize, const PANELS: usize>(
    a: *const f32,
    row_offsets: &[usize; ROWS],
    b: *const f32,
    panel_stride: usize,
    accumulators: &mut [[__m512; PANELS]; ROWS],
) {
    // SAFETY: Each panel's `b` is valid for `NR = 16` reads, one vector; `a` at every row
    // offset.
    unsafe {
        let mut b_rows = [_mm512_setzero_ps(); PANELS];
        for (panel, b_row) in b_rows.iter_mut().enumerate() {
            *b_row = _mm512_loadu_ps(b.add(panel * panel_stride));
        }
        for row in 0..ROWS {
            // A broadcast from memory that LLVM folds into the FMA as `{1to16}`.
            let a_value = _mm512_set1_ps(*a.add(row_offsets[row]));
            for panel in 0..PANELS {
                accumulators[row][panel] =
                    _mm512_fmadd_ps(a_value, b_rows[panel], accumulators[row][panel]);
            }
        }
    }
}

/// Applies the epilogue to the accumulators and writes them into C, one row at a time, each
/// panel's vector under the mask of its columns (the tile's `cols`, 16 to a panel).
///
/// # Safety
///
/// `tile` must describe `ROWS` rows of `tile.cols` elements at `tile.c`, spaced
/// `tile.c_row_stride`, valid for reads and writes, with `tile.cols` in
/// `(PANELS - 1) * NR + 1..=PANELS * NR`, and the epilogue's slices must be as long as
/// `TileEpilogue` says.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn store_tile<const ROWS: usize, const PANELS: usize>(
    accumulators: &[[__m512; PANELS]; ROWS],
    tile: &TileOutput<'_>,
) {
    let epilogue: &TileEpilogue<'_> = &tile.epilogue;
    for panel in 0..PANELS {
        let first_column = panel * NR;
        let mask = first_lanes16(tile.cols - first_column);
        // SAFETY: The column bias holds at least `cols` values, and the masked load reads no
        // others.
        let column_bias = epilogue
            .column_bias
            .map(|bias| unsafe { _mm512_maskz_loadu_ps(mask, bias.as_ptr().add(first_column)) });
        for (row, accumulator) in accumulators.iter().enumerate() {
            let mut values = accumulator[panel];
            // SAFETY: Row `row < ROWS` of the tile starts at `row * c_row_stride` and holds
            // `cols` elements, in C and in the residual alike, and the masked loads and stores
            // touch no others; the row bias holds `ROWS` values.
            unsafe {
                let offset = row * tile.c_row_stride + first_column;
                let destination = tile.c.add(offset);
                if tile.accumulate {
                    values = _mm512_add_ps(values, _mm512_maskz_loadu_ps(mask, destination));
                }
                if let Some(bias) = column_bias {
                    values = _mm512_add_ps(values, bias);
                }
                if let Some(bias) = epilogue.row_bias {
                    values = _mm512_add_ps(values, _mm512_set1_ps(*bias.get_unchecked(row)));
                }
                if let Some(residual) = epilogue.residual {
                    let skip = _mm512_maskz_loadu_ps(mask, residual.as_ptr().add(offset));
                    values = _mm512_add_ps(values, skip);
                }
                values = apply_clamp(values, epilogue.clamp);
                _mm512_mask_storeu_ps(destination, mask, values);
            }
        }
    }
}

/// The clamp activation of sixteen values, with the scalar functions' results: `max_ps` and
/// `min_ps` return their second operand when either is NaN, so NaN passes through as it does
/// in `relu` and `relu6`, and `-0.0` stays `-0.0`.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
fn apply_clamp(values: __m512, clamp: Clamp) -> __m512 {
    let zero = _mm512_setzero_ps();
    match clamp {
        Clamp::None => values,
        Clamp::Relu => _mm512_max_ps(zero, values),
        Clamp::Relu6 => _mm512_min_ps(_mm512_set1_ps(6.0), _mm512_max_ps(zero, values)),
        Clamp::LeakyRelu { negative_slope } => {
            let negative = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(values, zero);
            _mm512_mask_mul_ps(values, negative, values, _mm512_set1_ps(negative_slope))
        }
    }
}
