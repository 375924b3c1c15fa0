//! The AVX2 + FMA micro-kernel: a `rows x 16` tile of C from packed panels of A and B.
//!
//! The tile lives in `2 * rows` ymm accumulators (12 for the full 6-row tile), and every step
//! of the k loop loads two vectors of B, broadcasts `rows` scalars of A and issues `2 * rows`
//! FMAs. Each row count has its own monomorphised loop so that short tiles (the last rows of C,
//! or a matrix-vector product) do no wasted arithmetic.
//!
//! A second entry point, `tile_kernel_row_major_a_with_epilogue`, reads A straight from a
//! row-major matrix instead of a packed panel (flash attention multiplies its probabilities this
//! way, without repacking them, and the GEMM when A is too shallow for packing to pay); it is
//! the same loop, monomorphised apart.
//!
//! Both entry points take a strip of rows and apply the tile's epilogue (`TileEpilogue`:
//! biases, residual, clamp) to the accumulators before the one store of each row, so a tile is
//! written once. A tile cut short on the right goes through a 16-float buffer on the stack.

use super::tile::{Clamp, LineShare, NextPanelPrefetch, TileOutput, ahead_offset};
use super::{MR, NR};
use std::arch::x86_64::{
    __m256, _CMP_LT_OQ, _mm256_add_ps, _mm256_blendv_ps, _mm256_broadcast_ss, _mm256_cmp_ps,
    _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_max_ps, _mm256_min_ps, _mm256_mul_ps, _mm256_set1_ps,
    _mm256_setzero_ps, _mm256_storeu_ps,
};

/// Whether the running processor has the features this kernel needs.
pub(super) fn is_available() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// Computes one strip of tiles, `C[0..rows, 0..cols] = epilogue(A_panels * B_panel (+ C))`;
/// the same contract as `portable::tile_kernel_with_epilogue`.
///
/// # Safety
///
/// The processor must support AVX2 and FMA (`is_available()`), and the operands and `output`
/// must be as `portable::tile_kernel_with_epilogue` requires.
pub(super) unsafe fn tile_kernel_with_epilogue(
    depth: usize,
    a_panel: &[f32],
    b_panel: &[f32],
    output: &TileOutput<'_>,
) {
    debug_assert!(a_panel.len() >= output.rows.div_ceil(MR) * depth * MR);
    debug_assert!(b_panel.len() >= depth * NR);
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
/// The processor must support AVX2 and FMA (`is_available()`), and the operands and `output`
/// must be as `portable::tile_kernel_row_major_a_with_epilogue` requires.
pub(super) unsafe fn tile_kernel_row_major_a_with_epilogue(
    depth: usize,
    a: &[f32],
    a_row_stride: usize,
    b_panel: &[f32],
    output: &TileOutput<'_>,
) {
    debug_assert!(output.rows == 0 || a.len() >= (output.rows - 1) * a_row_stride + depth);
    debug_assert!(b_panel.len() >= depth * NR);
    output.debug_check();
    // SAFETY: As for `tile_kernel_with_epilogue`, with A's reads `a[r * a_row_stride + p]`
    // inside `a`.
    unsafe { strip_kernel::<true>(depth, a.as_ptr(), a_row_stride, 0, b_panel, output) };
}

/// [`tile_kernel_with_epilogue`] for a strip of at most one row, read as [`row_kernel`] reads
/// it: the kernel of a product of one row whose weights stream from memory
/// (`GemmKernels::for_one_row`).
///
/// # Safety
///
/// As for [`tile_kernel_with_epilogue`], with `output.rows <= 1`.
pub(super) unsafe fn one_row_kernel_with_epilogue(
    depth: usize,
    a_panel: &[f32],
    b_panel: &[f32],
    output: &TileOutput<'_>,
) {
    debug_assert!(output.rows <= 1 && a_panel.len() >= output.rows * depth * MR);
    debug_assert!(b_panel.len() >= depth * NR);
    output.debug_check();
    let a = LhsPointer {
        a: a_panel.as_ptr(),
        a_row_stride: 0,
        ahead: a_panel.as_ptr(),
    };
    // SAFETY: As for `tile_kernel_with_epilogue`, for the one row (or none).
    unsafe { one_row_strip::<false>(depth, a, b_panel.as_ptr(), output) };
}

/// [`tile_kernel_row_major_a_with_epilogue`] for a strip of at most one row, read as
/// [`row_kernel`] reads it (see [`one_row_kernel_with_epilogue`]).
///
/// # Safety
///
/// As for [`tile_kernel_row_major_a_with_epilogue`], with `output.rows <= 1`.
pub(super) unsafe fn one_row_kernel_row_major_a_with_epilogue(
    depth: usize,
    a: &[f32],
    a_row_stride: usize,
    b_panel: &[f32],
    output: &TileOutput<'_>,
) {
    debug_assert!(output.rows <= 1 && a.len() >= output.rows * depth);
    debug_assert!(b_panel.len() >= depth * NR);
    output.debug_check();
    let a = LhsPointer {
        a: a.as_ptr(),
        a_row_stride,
        ahead: a.as_ptr(),
    };
    // SAFETY: As for `tile_kernel_row_major_a_with_epilogue`, for the one row (or none).
    unsafe { one_row_strip::<true>(depth, a, b_panel.as_ptr(), output) };
}

/// A strip of at most one row through [`row_kernel`], over a whole panel or its left half.
///
/// # Safety
///
/// As for [`strip_kernel`], with `output.rows <= 1`.
#[target_feature(enable = "avx2,fma")]
unsafe fn one_row_strip<const ROW_MAJOR_A: bool>(
    depth: usize,
    a: LhsPointer,
    b: *const f32,
    output: &TileOutput<'_>,
) {
    if output.rows == 0 {
        return;
    }
    let tile = output.tile(0);
    // SAFETY: Forwarded from the caller, for the strip's one row.
    unsafe {
        if output.cols <= HALF_NR {
            row_kernel::<ROW_MAJOR_A, true>(depth, a, b, &tile);
        } else {
            row_kernel::<ROW_MAJOR_A, false>(depth, a, b, &tile);
        }
    }
}

/// Runs the strip's tiles one after the other, each with the loop monomorphised for its rows:
/// full tiles of `MR` rows, then the last, shorter one.
///
/// # Safety
///
/// As for `tile_kernel_with_epilogue` (or `tile_kernel_row_major_a_with_epilogue` with
/// `ROW_MAJOR_A`); a packed A has `a_len` floats from `a` (its strip's panels and any after
/// them, which the full tiles fetch ahead).
#[target_feature(enable = "avx2,fma")]
unsafe fn strip_kernel<const ROW_MAJOR_A: bool>(
    depth: usize,
    a: *const f32,
    a_row_stride: usize,
    a_len: usize,
    b: &[f32],
    output: &TileOutput<'_>,
) {
    // The distance from one tile's A to the next: one packed panel, or `MR` rows.
    let a_tile_step = if ROW_MAJOR_A {
        MR * a_row_stride
    } else {
        MR * depth
    };
    // SAFETY: Forwarded from the caller.
    unsafe {
        if output.cols <= HALF_NR {
            strip_of_width::<ROW_MAJOR_A, true>(
                depth,
                a,
                a_row_stride,
                a_len,
                a_tile_step,
                b,
                output,
            );
        } else {
            strip_of_width::<ROW_MAJOR_A, false>(
                depth,
                a,
                a_row_stride,
                a_len,
                a_tile_step,
                b,
                output,
            );
        }
    }
}

/// The columns of one ymm register: a panel's left half.
const HALF_NR: usize = NR / 2;

/// [`strip_kernel`]'s tiles, with `a_tile_step` floats from one tile's A to the next; with
/// `HALF`, over the left half of the B panel only (a strip of at most [`HALF_NR`] columns, such
/// as the last panel of a layer of 24 or 40 output channels), half the FMAs of a full tile. The
/// strip's panel starts `b`; the full tiles fetch the panels after it that `b` holds, and, of a
/// packed A of `a_len` floats, the panel after their own.
///
/// # Safety
///
/// As for [`strip_kernel`], with `output.cols <= HALF_NR` under `HALF`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn strip_of_width<const ROW_MAJOR_A: bool, const HALF: bool>(
    depth: usize,
    a: *const f32,
    a_row_stride: usize,
    a_len: usize,
    a_tile_step: usize,
    b: &[f32],
    output: &TileOutput<'_>,
) {
    let mut first_row = 0;
    let mut a_offset = 0;
    let mut next_panel = NextPanelPrefetch::new(depth, b, 1, output.rows / MR);
    let b = b.as_ptr();
    while first_row + MR <= output.rows {
        let next = next_panel.next_share();
        let tile = output.tile(first_row);
        let lhs = LhsPointer {
            a: a.wrapping_add(a_offset),
            a_row_stride,
            ahead: a.wrapping_add(ahead_offset(a_offset, a_tile_step, a_len)),
        };
        // SAFETY: Rows `first_row..first_row + MR` are a tile of the strip the caller vouched
        // for, and `a` points at that tile's panel (or first row) of A.
        // Two lines an iteration whatever the share: with one, LLVM spilled an accumulator of
        // the row-major loop to the stack (52 GFLOP/s instead of 100 on 128 x 384 x 1536). None
        // only for a B of fewer than two lines, where even the idle share would reach past it.
        unsafe {
            if next.is_empty() {
                tile_kernel_rows::<MR, ROW_MAJOR_A, 0, HALF>(depth, lhs, b, next, &tile);
            } else {
                tile_kernel_rows::<MR, ROW_MAJOR_A, 2, HALF>(depth, lhs, b, next, &tile);
            }
        };
        first_row += MR;
        a_offset += a_tile_step;
    }
    if first_row < output.rows {
        let tile = output.tile(first_row);
        let a = a.wrapping_add(a_offset);
        let lhs = LhsPointer {
            a,
            a_row_stride,
            ahead: a,
        };
        // SAFETY: As above, for the last, shorter tile.
        unsafe { dispatch_rows(PackedTile::<ROW_MAJOR_A, HALF> { depth, a: lhs, b }, &tile) };
    }
}

/// A tile's k loop and store, for any number of rows up to `MR`: the packed GEMM's
/// ([`PackedTile`]) or the indirect convolution's ([`IndirectTile`]), so that one
/// [`dispatch_rows`] picks the loop monomorphised for a tile's rows (the AVX-512 kernel's
/// `TileB`).
trait TileLoop: Copy {
    /// The k loop and the store of a tile of `ROWS` rows.
    ///
    /// # Safety
    ///
    /// The processor has AVX2 and FMA; the operands are as the implementing type's loop
    /// requires for `ROWS` rows, and `tile` holds `ROWS` rows.
    unsafe fn tile<const ROWS: usize>(self, tile: &TileOutput<'_>);
}

/// The last, shorter tile of a packed-GEMM strip (`tile_kernel_rows`, fetching nothing ahead).
#[derive(Clone, Copy)]
struct PackedTile<const ROW_MAJOR_A: bool, const HALF: bool> {
    depth: usize,
    a: LhsPointer,
    b: *const f32,
}

impl<const ROW_MAJOR_A: bool, const HALF: bool> TileLoop for PackedTile<ROW_MAJOR_A, HALF> {
    #[inline(always)]
    unsafe fn tile<const ROWS: usize>(self, tile: &TileOutput<'_>) {
        // SAFETY: Forwarded from the caller.
        unsafe {
            tile_kernel_rows::<ROWS, ROW_MAJOR_A, 0, HALF>(
                self.depth,
                self.a,
                self.b,
                LineShare::NONE,
                tile,
            )
        }
    }
}

/// A tile of an indirect strip (`indirect_tile_rows`).
#[derive(Clone, Copy)]
struct IndirectTile<'a, const A_IN_PLACE: bool> {
    a: *const f32,
    b: *const f32,
    offsets: &'a [usize],
}

impl<const A_IN_PLACE: bool> TileLoop for IndirectTile<'_, A_IN_PLACE> {
    #[inline(always)]
    unsafe fn tile<const ROWS: usize>(self, tile: &TileOutput<'_>) {
        // SAFETY: Forwarded from the caller.
        unsafe { indirect_tile_rows::<ROWS, A_IN_PLACE>(self.a, self.b, self.offsets, tile) }
    }
}

/// Calls `tile_loop`'s loop monomorphised for `tile.rows <= MR` rows.
///
/// # Safety
///
/// As for `T::tile`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn dispatch_rows<T: TileLoop>(tile_loop: T, tile: &TileOutput<'_>) {
    // SAFETY: Forwarded from the caller.
    unsafe {
        match tile.rows {
            6 => tile_loop.tile::<6>(tile),
            5 => tile_loop.tile::<5>(tile),
            4 => tile_loop.tile::<4>(tile),
            3 => tile_loop.tile::<3>(tile),
            2 => tile_loop.tile::<2>(tile),
            1 => tile_loop.tile::<1>(tile),
            _ => {}
        }
    }
}

/// Where A's values are: a packed panel (`a[p * MR + r]`) or, with `ROW_MAJOR_A`, a row-major
/// matrix (`a[r * a_row_stride + p]`); and the packed panel a full tile fetches into L2 as it
/// runs (see [`ahead_offset`]).
#[derive(Clone, Copy)]
struct LhsPointer {
    a: *const f32,
    a_row_stride: usize,
    ahead: *const f32,
}

/// The k loop for a tile of `ROWS` rows, followed by the store; a full tile also fetches `next`
/// into L2, `NEXT_LINES` lines per iteration, as in the AVX-512 kernel. With `HALF`, only the
/// left half of each B step is read and multiplied (the right accumulators stay zero).
///
/// # Safety
///
/// As for `tile_kernel_with_epilogue` (or `tile_kernel_row_major_a_with_epilogue` with
/// `ROW_MAJOR_A`), for a tile of `ROWS <= MR` rows, and `tile.cols <= HALF_NR` under `HALF`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_kernel_rows<
    const ROWS: usize,
    const ROW_MAJOR_A: bool,
    const NEXT_LINES: usize,
    const HALF: bool,
>(
    depth: usize,
    a: LhsPointer,
    b: *const f32,
    next: LineShare,
    tile: &TileOutput<'_>,
) {
    prefetch_stored_rows::<ROWS>(tile);
    // The offset of each row's value within one step of A, and the distance between steps.
    let mut row_offsets = [0usize; ROWS];
    for (row, offset) in row_offsets.iter_mut().enumerate() {
        *offset = if ROW_MAJOR_A {
            row * a.a_row_stride
        } else {
            row
        };
    }
    let a_step = if ROW_MAJOR_A { 1 } else { MR };
    let mut left = [_mm256_setzero_ps(); ROWS];
    let mut right = [_mm256_setzero_ps(); ROWS];
    // The packed panel of A after a full tile's, fetched into L2 as this one is read (see the
    // AVX-512 kernel).
    let prefetch_next = ROWS == MR && !ROW_MAJOR_A;
    let mut next_a = a.ahead;
    let mut a = a.a;
    let mut b = b;
    // Unrolling by two halves the loop overhead; the tail step is a plain single step.
    let pairs = depth / 2;
    let mut next = next.spread::<NEXT_LINES>(pairs);
    for _ in 0..pairs {
        next.step();
        if prefetch_next {
            super::prefetch_l2(next_a);
            next_a = next_a.wrapping_add(2 * MR);
        }
        // SAFETY: Step `p` reads A at `p * a_step + row_offsets[r]` for `r < ROWS` and
        // `b[p * NR..][..NR]`, and `p < depth`, so every read is inside what the caller vouched
        // for.
        unsafe {
            fma_step::<ROWS, HALF>(a, &row_offsets, b, &mut left, &mut right);
            fma_step::<ROWS, HALF>(
                a.add(a_step),
                &row_offsets,
                b.add(NR),
                &mut left,
                &mut right,
            );
            a = a.add(2 * a_step);
            b = b.add(2 * NR);
        }
    }
    if depth % 2 == 1 {
        // SAFETY: This is step `depth - 1`, inside the operands as above.
        unsafe { fma_step::<ROWS, HALF>(a, &row_offsets, b, &mut left, &mut right) };
    }
    // SAFETY: The caller vouched for `ROWS` rows of `tile.cols` elements at `tile.c`.
    unsafe { store_accumulators::<ROWS, HALF>(left, right, tile) };
}

/// Fetches the rows of `ROWS` that the store of `tile` reads (the old C when accumulating, the
/// residual), so that their cache misses hide behind the k loop. A C that is only written is not
/// fetched: the store buffer absorbs those misses, and on shallow products (k = 16 to 32) the
/// twelve prefetches per tile cost more than they saved (5% measured).
#[inline(always)]
fn prefetch_stored_rows<const ROWS: usize>(tile: &TileOutput<'_>) {
    for row in 0..ROWS {
        if tile.accumulate {
            let destination = tile.c.wrapping_add(row * tile.c_row_stride);
            super::prefetch(destination);
            super::prefetch(destination.wrapping_add(NR - 1));
        }
        if let Some(residual) = tile.epilogue.residual {
            let source = residual.as_ptr().wrapping_add(row * tile.c_row_stride);
            super::prefetch(source);
            super::prefetch(source.wrapping_add(NR - 1));
        }
    }
}

/// The k loop and store of a strip of one row (a decoding step's projections, which stream their
/// weights from memory): the panel's steps cut into [`ROW_STREAMS`] consecutive parts, read side
/// by side into accumulators of their own, which are added at the end. The sums round otherwise
/// than the same row's in a tile of [`tile_kernel_rows`].
///
/// Streams a few kilobytes apart keep more of memory's bandwidth busy than one: a plain loop
/// over 538 MB read 19-20 GB/s at one thread on this machine's Zen 3, 23-25 GB/s with each
/// 24 KB block's halves read side by side. SmolLM2-135M's f32 decoding step (`nnc bench
/// --decode`'s harness alternated six times with the one-part loop, median of the paired
/// ratios, two such runs): 0.93x and 0.96x the time at one thread, 0.98x and 0.92x at two; four
/// parts gave 1.00x and 1.02x. On a first-generation Zen, four parts against two: 1.03x at one
/// thread, 1.01x at two.
///
/// # Safety
///
/// As for [`tile_kernel_rows`] with `ROWS = 1`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_kernel<const ROW_MAJOR_A: bool, const HALF: bool>(
    depth: usize,
    a: LhsPointer,
    b: *const f32,
    tile: &TileOutput<'_>,
) {
    prefetch_stored_rows::<1>(tile);
    let a_step = if ROW_MAJOR_A { 1 } else { MR };
    // Steps per part; the last part also takes the `depth % ROW_STREAMS` steps left over.
    let part = depth / ROW_STREAMS;
    let mut left = [[_mm256_setzero_ps(); 1]; ROW_STREAMS];
    let mut right = [[_mm256_setzero_ps(); 1]; ROW_STREAMS];
    let mut a_at: [*const f32; ROW_STREAMS] =
        std::array::from_fn(|stream| a.a.wrapping_add(stream * part * a_step));
    let mut b_at: [*const f32; ROW_STREAMS] =
        std::array::from_fn(|stream| b.wrapping_add(stream * part * NR));
    let mut step = |stream: usize| {
        // SAFETY: Each part's pointers start at its first step and move one step per call, and
        // the calls below take part `s` through steps `s * part..(s + 1) * part` (the last on
        // to `depth`): every step is below `depth`, with A at the step times `a_step` and B's
        // `NR` floats of it, inside what the caller vouched for.
        unsafe {
            fma_step::<1, HALF>(
                a_at[stream],
                &[0],
                b_at[stream],
                &mut left[stream],
                &mut right[stream],
            );
            a_at[stream] = a_at[stream].add(a_step);
            b_at[stream] = b_at[stream].add(NR);
        }
    };
    for _ in 0..part {
        (0..ROW_STREAMS).for_each(&mut step);
    }
    for _ in part * ROW_STREAMS..depth {
        step(ROW_STREAMS - 1);
    }
    let sum = |parts: &[[__m256; 1]; ROW_STREAMS]| {
        [parts[1..]
            .iter()
            .fold(parts[0][0], |total, part| _mm256_add_ps(total, part[0]))]
    };
    let (finished_left, finished_right) = (sum(&left), sum(&right));
    // SAFETY: The caller vouched for one row of `tile.cols` elements at `tile.c`.
    unsafe { store_tile::<1>(&finished_left, &finished_right, tile) };
}

/// The parts of a one-row strip's steps that [`row_kernel`] reads side by side.
const ROW_STREAMS: usize = 2;

/// Computes one strip, `C[0..rows, 0..cols] = epilogue(A_panels * B)` (at most `NR` columns),
/// where A is packed in panels of `MR` rows and `depth` steps (one block: `depth` at most the
/// GEMM's `KC`) and step `k` of B is the `NR` floats at `b + offsets[k]`: the indirect
/// convolution of an NCHW image, whose B is the image itself, never packed. The contract of
/// `avx512::indirect_strip`, one B panel wide.
///
/// # Safety
///
/// The processor must support AVX2 and FMA (`is_available()`); `a_panels` must hold the strip's
/// `rows.div_ceil(MR)` panels; `offsets` must hold `depth` offsets, and `b + offsets[k]` be
/// valid for reads of `NR` floats for each; `output` must be as
/// `portable::tile_kernel_with_epilogue` requires, with at most `NR` columns.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn indirect_strip(
    depth: usize,
    a_panels: &[f32],
    b: *const f32,
    offsets: &[usize],
    output: &TileOutput<'_>,
) {
    debug_assert!(a_panels.len() >= output.rows.div_ceil(MR) * depth * MR);
    // SAFETY: Forwarded from the caller; each tile's packed panel of A starts `MR * depth`
    // floats after the previous one's.
    unsafe { indirect_tiles::<false>(a_panels.as_ptr(), MR * depth, b, &offsets[..depth], output) };
}

/// Computes one strip, `C[0..rows, 0..cols] = epilogue(A * B_panel)` (at most `NR` columns),
/// where B is packed in one panel of `NR` columns and `depth` steps (one block: `depth` at most
/// the GEMM's `KC`) and row `r`, step `k` of A is the float `r` places past `a + offsets[k]`:
/// the channels-last convolution of an NCHW image, whose rows are output pixels and whose A is
/// the image itself, read in place. The contract of `avx512::indirect_lhs_strip`, one B panel
/// wide.
///
/// # Safety
///
/// The processor must support AVX2 and FMA (`is_available()`); `b_panel` must hold `depth`
/// steps of `NR` floats; `offsets` must hold `depth` offsets, and `a + offsets[k]` be valid for
/// reads of `rows` floats for each; `output` must be as `portable::tile_kernel_with_epilogue`
/// requires, with at most `NR` columns.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn indirect_lhs_strip(
    depth: usize,
    a: *const f32,
    offsets: &[usize],
    b_panel: &[f32],
    output: &TileOutput<'_>,
) {
    debug_assert!(b_panel.len() >= depth * NR);
    // SAFETY: Forwarded from the caller; each tile's rows start `MR` floats past the previous
    // one's, at every step.
    unsafe { indirect_tiles::<true>(a, MR, b_panel.as_ptr(), &offsets[..depth], output) };
}

/// The tiles of an indirect strip ([`indirect_strip`], or [`indirect_lhs_strip`] with
/// `A_IN_PLACE`), tile `t`'s A starting `t * a_tile_step` floats past `a`.
///
/// # Safety
///
/// As for the strip function, with `offsets` its `depth` offsets.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn indirect_tiles<const A_IN_PLACE: bool>(
    a: *const f32,
    a_tile_step: usize,
    b: *const f32,
    offsets: &[usize],
    output: &TileOutput<'_>,
) {
    debug_assert!(output.cols <= NR);
    output.debug_check();
    for first_row in (0..output.rows).step_by(MR) {
        let tile = output.tile(first_row);
        let a = a.wrapping_add(first_row / MR * a_tile_step);
        // SAFETY: The tile's rows are part of the strip the caller vouched for, and its A starts
        // at `a` (the caller's step from tile to tile); B's steps are the caller's.
        unsafe { dispatch_rows(IndirectTile::<A_IN_PLACE> { a, b, offsets }, &tile) };
    }
}

/// The k loop of a tile of `ROWS` rows, one step per offset, then the store. Step `k` reads
/// A at `a + k * MR + r` (a packed panel) and B at `b + offsets[k]` (an image row), or, with
/// `A_IN_PLACE`, A at `a + offsets[k] + r` (an image row) and B at `b + k * NR` (a packed
/// panel).
///
/// # Safety
///
/// As for [`indirect_strip`] (or [`indirect_lhs_strip`] with `A_IN_PLACE`), for a tile of
/// `ROWS <= MR` rows whose operands start at `a` and `b`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn indirect_tile_rows<const ROWS: usize, const A_IN_PLACE: bool>(
    a: *const f32,
    b: *const f32,
    offsets: &[usize],
    tile: &TileOutput<'_>,
) {
    let row_offsets: [usize; ROWS] = std::array::from_fn(|row| row);
    let mut left = [_mm256_setzero_ps(); ROWS];
    let mut right = [_mm256_setzero_ps(); ROWS];
    for (step, &offset) in offsets.iter().enumerate() {
        // SAFETY: Step `step < depth` reads A at `step * MR + r` of the tile's panel, or `r`
        // floats past `a + offset`, and `NR` floats of B at `b + offset`, or of its panel at
        // `step * NR`: all of it inside what the caller vouched for.
        unsafe {
            let (a_step, b_step) = if A_IN_PLACE {
                (a.add(offset), b.add(step * NR))
            } else {
                (a.add(step * MR), b.add(offset))
            };
            fma_step::<ROWS, false>(a_step, &row_offsets, b_step, &mut left, &mut right);
        }
    }
    // SAFETY: The caller vouched for `ROWS` rows of `tile.cols` elements at `tile.c`.
    unsafe { store_accumulators::<ROWS, false>(left, right, tile) };
}

/// One step of the k loop: `acc[r] += a[row_offsets[r]] * b` for the two halves of the B row,
/// or with `HALF` for its left half only.
///
/// # Safety
///
/// `a` must be valid for reads at each of `row_offsets` and `b` for `NR` reads (`HALF_NR` with
/// `HALF`).
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_step<const ROWS: usize, const HALF: bool>(
    a: *const f32,
    row_offsets: &[usize; ROWS],
    b: *const f32,
    left: &mut [__m256; ROWS],
    right: &mut [__m256; ROWS],
) {
    // SAFETY: `b` is valid for `NR = 16` reads, two vectors of eight (the first eight under
    // `HALF`); `a` at every row offset.
    unsafe {
        let b_left = _mm256_loadu_ps(b);
        if HALF {
            for row in 0..ROWS {
                let a_value = _mm256_broadcast_ss(&*a.add(row_offsets[row]));
                left[row] = _mm256_fmadd_ps(a_value, b_left, left[row]);
            }
            return;
        }
        let b_right = _mm256_loadu_ps(b.add(8));
        for row in 0..ROWS {
            let a_value = _mm256_broadcast_ss(&*a.add(row_offsets[row]));
            left[row] = _mm256_fmadd_ps(a_value, b_left, left[row]);
            right[row] = _mm256_fmadd_ps(a_value, b_right, right[row]);
        }
    }
}

/// Writes a tile's accumulators, still in registers, into C as [`store_tile`] does. A tile of
/// `NR` or [`HALF_NR`] columns that overwrites C with no clamp, ReLU or ReLU6 (every tile of a
/// layer but those of a right edge of another width, and the accumulating ones of a product
/// deeper than one block) is stored here, in the k loop's own code; any other goes through
/// `store_tile`.
///
/// Passed to `store_tile`, the accumulators go through the stack (twelve stores and twelve
/// loads a tile, inlined or not), and on a first-generation Zen, whose one store unit writes
/// 128 bits a cycle, that was a quarter of a shallow product's time: `gemm_timing --m 384 --k 16
/// --n 96 --epilogue bias` 31.8 GFLOP/s through `store_tile`, 36.2 stored here (k = 24: 35.8
/// and 39.1; k = 384: 45.4 either way).
///
/// # Safety
///
/// As for [`store_tile`]; the caller is compiled with AVX2 and FMA.
#[inline(always)]
unsafe fn store_accumulators<const ROWS: usize, const HALF: bool>(
    left: [__m256; ROWS],
    right: [__m256; ROWS],
    tile: &TileOutput<'_>,
) {
    let width = if HALF { HALF_NR } else { NR };
    if !tile.accumulate && tile.cols == width {
        // SAFETY: Forwarded from the caller: the tile is `width` columns wide and overwrites C.
        unsafe {
            match tile.epilogue.clamp {
                Clamp::None => {
                    return store_whole_rows::<ROWS, CLAMP_NONE, HALF>(left, right, tile);
                }
                Clamp::Relu => {
                    return store_whole_rows::<ROWS, CLAMP_RELU, HALF>(left, right, tile);
                }
                Clamp::Relu6 => {
                    return store_whole_rows::<ROWS, CLAMP_RELU6, HALF>(left, right, tile);
                }
                Clamp::LeakyRelu { .. } => {}
            }
        }
    }
    // Copies for `store_tile`, as in the AVX-512 kernel: with the accumulators' own addresses
    // passed, LLVM kept them in stack arrays, zeroed for every tile and written back after its
    // k loop for the store to read.
    let (finished_left, finished_right) = (left, right);
    // SAFETY: Forwarded from the caller.
    unsafe { store_tile::<ROWS>(&finished_left, &finished_right, tile) };
}

/// [`store_accumulators`]' store of a tile that overwrites C, `NR` columns wide, or with `HALF`
/// [`HALF_NR`] (the left accumulators only), with the clamp `CLAMP` (none, ReLU or ReLU6): each
/// row through [`epilogue_row`], as `store_rows` does. `store_tile` takes it for such tiles too
/// (a LeakyReLU clamp, a one-row strip).
///
/// # Safety
///
/// As for [`store_tile_clamped`], with `tile.cols` `NR` (`HALF_NR` under `HALF`) and
/// `!tile.accumulate`; the caller is compiled with AVX2 and FMA.
#[inline(always)]
unsafe fn store_whole_rows<const ROWS: usize, const CLAMP: u8, const HALF: bool>(
    left: [__m256; ROWS],
    right: [__m256; ROWS],
    tile: &TileOutput<'_>,
) {
    // Both vectors of a row at `source`, or under `HALF` the first and zeros.
    let load = |source: *const f32| {
        // SAFETY: The calls below pass the column bias or a row of the residual, each valid for
        // `tile.cols` reads (`NR`, or `HALF_NR` under `HALF`); the processor has AVX (the
        // caller's promise).
        unsafe {
            let low = _mm256_loadu_ps(source);
            if HALF {
                (low, _mm256_setzero_ps())
            } else {
                (low, _mm256_loadu_ps(source.add(8)))
            }
        }
    };
    let column_bias = tile.epilogue.column_bias.map(|bias| load(bias.as_ptr()));
    for row in 0..ROWS {
        // SAFETY: Row `row < ROWS` of the tile starts at `row * c_row_stride` and holds
        // `tile.cols` elements, in C and in the residual alike; the row bias holds `ROWS` values.
        unsafe {
            let residual = tile
                .epilogue
                .residual
                .map(|residual| load(residual.as_ptr().add(row * tile.c_row_stride)));
            let (low, high) =
                epilogue_row::<CLAMP>((left[row], right[row]), row, column_bias, residual, tile);
            let destination = tile.c.add(row * tile.c_row_stride);
            _mm256_storeu_ps(destination, low);
            if !HALF {
                _mm256_storeu_ps(destination.add(8), high);
            }
        }
    }
}

/// One row of a tile after its k loop, `(left, right)`, with the epilogue applied: the column
/// bias (loaded once per tile), the row bias, the residual row and the clamp `CLAMP`, in that
/// order. The old C, when accumulating, is already added.
///
/// # Safety
///
/// The row bias, if any, holds a value for `row`; the caller is compiled with AVX2 and FMA.
#[inline(always)]
unsafe fn epilogue_row<const CLAMP: u8>(
    (mut low, mut high): (__m256, __m256),
    row: usize,
    column_bias: Option<(__m256, __m256)>,
    residual: Option<(__m256, __m256)>,
    tile: &TileOutput<'_>,
) -> (__m256, __m256) {
    // SAFETY: The processor has AVX (the caller's promise); the row bias holds a value for
    // `row`.
    unsafe {
        if let Some((bias_low, bias_high)) = column_bias {
            low = _mm256_add_ps(low, bias_low);
            high = _mm256_add_ps(high, bias_high);
        }
        if let Some(bias) = tile.epilogue.row_bias {
            let bias = _mm256_broadcast_ss(bias.get_unchecked(row));
            low = _mm256_add_ps(low, bias);
            high = _mm256_add_ps(high, bias);
        }
        if let Some((skip_low, skip_high)) = residual {
            low = _mm256_add_ps(low, skip_low);
            high = _mm256_add_ps(high, skip_high);
        }
        let zero = _mm256_setzero_ps();
        let clamp = |values: __m256| match CLAMP {
            CLAMP_NONE => values,
            CLAMP_RELU => _mm256_max_ps(zero, values),
            CLAMP_RELU6 => _mm256_min_ps(_mm256_set1_ps(6.0), _mm256_max_ps(zero, values)),
            _ => apply_clamp(values, tile.epilogue.clamp),
        };
        (clamp(low), clamp(high))
    }
}

/// Applies the epilogue to the accumulators and writes them into C, one row at a time: straight
/// vector loads and stores for a full-width tile, through a buffer for a tile cut short on the
/// right.
///
/// The clamp is matched once per tile, not per row, and a full-width tile that overwrites C
/// (every tile of a product but the right edge's and the accumulating ones) takes a loop whose
/// rows LLVM unrolls, with no call and no jump between the loads of the tile's copies and the
/// stores to C. In one loop for all cases, the rows were not unrolled (the short tile's buffer
/// copies are calls to `memcpy`) and each row jumped through a table for its clamp: about a
/// quarter of `perf`'s samples on a 16-deep product (MobileNetV2's 16 to 96 channel expansion,
/// `gemm_timing` 1568x16x96 58 GFLOP/s then, 65 since). The function itself stays a call, its
/// accumulators passed through the stack: inlined into the k loop (`#[inline(always)]`), it
/// left the profile but not the time (1344x16x96 best of 4 runs 69.3 GFLOP/s either way).
///
/// # Safety
///
/// `tile` must describe `ROWS` rows of `tile.cols` elements at `tile.c`, spaced
/// `tile.c_row_stride`, valid for reads and writes, and the epilogue's slices must be as long as
/// `TileEpilogue` says.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn store_tile<const ROWS: usize>(
    left: &[__m256; ROWS],
    right: &[__m256; ROWS],
    tile: &TileOutput<'_>,
) {
    let clamp = tile.epilogue.clamp;
    // SAFETY: Forwarded from the caller.
    unsafe {
        match clamp {
            Clamp::None => store_tile_clamped::<ROWS, CLAMP_NONE>(left, right, tile),
            Clamp::Relu => store_tile_clamped::<ROWS, CLAMP_RELU>(left, right, tile),
            Clamp::Relu6 => store_tile_clamped::<ROWS, CLAMP_RELU6>(left, right, tile),
            Clamp::LeakyRelu { .. } => store_tile_clamped::<ROWS, CLAMP_ANY>(left, right, tile),
        }
    }
}

/// The clamps [`store_tile_clamped`] is compiled for: none, ReLU, ReLU6, and any (`tile`'s,
/// matched per vector).
const CLAMP_NONE: u8 = 0;
const CLAMP_RELU: u8 = 1;
const CLAMP_RELU6: u8 = 2;
const CLAMP_ANY: u8 = 3;

/// [`store_tile`] with the clamp `CLAMP`.
///
/// # Safety
///
/// As for [`store_tile`], with `tile.epilogue.clamp` the clamp `CLAMP` names.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn store_tile_clamped<const ROWS: usize, const CLAMP: u8>(
    left: &[__m256; ROWS],
    right: &[__m256; ROWS],
    tile: &TileOutput<'_>,
) {
    // SAFETY: Forwarded from the caller; a full-width tile holds `NR` columns.
    unsafe {
        if tile.cols == NR && !tile.accumulate {
            store_whole_rows::<ROWS, CLAMP, false>(*left, *right, tile);
        } else {
            store_rows::<ROWS, CLAMP>(left, right, tile);
        }
    }
}

/// The rows of [`store_tile_clamped`] that are not a whole-width overwrite
/// ([`store_whole_rows`]): the old C added when accumulating, and the rows of fewer than `NR`
/// columns through `load_row` and `store_row`.
///
/// # Safety
///
/// As for [`store_tile_clamped`].
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn store_rows<const ROWS: usize, const CLAMP: u8>(
    left: &[__m256; ROWS],
    right: &[__m256; ROWS],
    tile: &TileOutput<'_>,
) {
    let cols = tile.cols;
    // SAFETY: The column bias holds at least `cols` values.
    let column_bias = tile
        .epilogue
        .column_bias
        .map(|bias| unsafe { load_row(bias.as_ptr(), cols) });
    for row in 0..ROWS {
        let (mut low, mut high) = (left[row], right[row]);
        // SAFETY: Row `row < ROWS` of the tile starts at `row * c_row_stride` and holds `cols`
        // elements, in C and in the residual alike; the row bias holds `ROWS` values.
        unsafe {
            let destination = tile.c.add(row * tile.c_row_stride);
            if tile.accumulate {
                let (old_low, old_high) = load_row(destination, cols);
                low = _mm256_add_ps(low, old_low);
                high = _mm256_add_ps(high, old_high);
            }
            let residual = tile
                .epilogue
                .residual
                .map(|residual| load_row(residual.as_ptr().add(row * tile.c_row_stride), cols));
            let (low, high) = epilogue_row::<CLAMP>((low, high), row, column_bias, residual, tile);
            store_row(destination, cols, low, high);
        }
    }
}

/// Loads `cols <= 16` floats as two vectors, the lanes past `cols` zero.
///
/// # Safety
///
/// `source` must be valid for `cols` reads.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn load_row(source: *const f32, cols: usize) -> (__m256, __m256) {
    // SAFETY: A full row is 16 readable floats, a half row 8; a short one is copied into a
    // buffer of 16.
    unsafe {
        if cols == NR {
            return (_mm256_loadu_ps(source), _mm256_loadu_ps(source.add(8)));
        }
        if cols == HALF_NR {
            return (_mm256_loadu_ps(source), _mm256_setzero_ps());
        }
        let mut buffer = [0.0f32; NR];
        std::ptr::copy_nonoverlapping(source, buffer.as_mut_ptr(), cols);
        (
            _mm256_loadu_ps(buffer.as_ptr()),
            _mm256_loadu_ps(buffer.as_ptr().add(8)),
        )
    }
}

/// Stores the first `cols <= 16` lanes of two vectors.
///
/// # Safety
///
/// `destination` must be valid for `cols` writes.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn store_row(destination: *mut f32, cols: usize, low: __m256, high: __m256) {
    // SAFETY: A full row is 16 writable floats, a half row 8 (the last panel of 24 or 40
    // channels); a short one goes through a buffer of 16.
    unsafe {
        if cols == NR {
            _mm256_storeu_ps(destination, low);
            _mm256_storeu_ps(destination.add(8), high);
            return;
        }
        if cols == HALF_NR {
            _mm256_storeu_ps(destination, low);
            return;
        }
        let mut buffer = [0.0f32; NR];
        _mm256_storeu_ps(buffer.as_mut_ptr(), low);
        _mm256_storeu_ps(buffer.as_mut_ptr().add(8), high);
        std::ptr::copy_nonoverlapping(buffer.as_ptr(), destination, cols);
    }
}

/// The clamp activation of eight values, with the scalar functions' results: `max_ps` and
/// `min_ps` return their second operand when either is NaN, so NaN passes through as it does
/// in `relu` and `relu6`, and `-0.0` stays `-0.0`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn apply_clamp(values: __m256, clamp: Clamp) -> __m256 {
    let zero = _mm256_setzero_ps();
    match clamp {
        Clamp::None => values,
        Clamp::Relu => _mm256_max_ps(zero, values),
        Clamp::Relu6 => _mm256_min_ps(_mm256_set1_ps(6.0), _mm256_max_ps(zero, values)),
        Clamp::LeakyRelu { negative_slope } => {
            let negative = _mm256_cmp_ps::<_CMP_LT_OQ>(values, zero);
            let scaled = _mm256_mul_ps(values, _mm256_set1_ps(negative_slope));
            _mm256_blendv_ps(values, scaled, negative)
        }
    }
}
