//! The int8 micro-kernels: one tile of at most `MR` rows of A times one or two packed panels of
//! B, summed in i32, in AVX512-VNNI, AVX2 and portable forms with the same contract; and the
//! epilogue that turns a tile's sums into f32 outputs. The VNNI kernel applies the epilogue to
//! its accumulators in registers and stores each output once (masked for a last panel of fewer
//! than 16 columns); the others store the sums to a small buffer and run the epilogue row by
//! row (vectorised by the compiler).
//!
//! AVX512-VNNI's `vpdpbusd` multiplies four u8 by four s8 and adds the four products to an i32
//! lane, exactly. AVX2 has no exact equivalent (`vpmaddubsw` adds pairs into saturating i16,
//! and 255 * 127 * 2 overflows it), so the AVX2 kernel widens both operands to i16 and uses
//! `vpmaddwd`, whose pair sums are exact in i32: it keeps the two pair sums of each column in
//! adjacent lanes and adds them once, when the tile is stored.

use super::gemm::{K_GROUP, MR, NR, Tile};
use super::quantize::quantize_slice;
use super::{ActivationQuantization, Int8Isa};
use crate::kernels::gemm::Clamp;

/// Columns of one tile: two panels.
pub(crate) const TILE_COLS: usize = 2 * NR;

/// The operands of one tile.
#[derive(Clone, Copy)]
pub(crate) struct TileOperands<'a> {
    /// Row 0 of the tile's A; row `r` starts `r * a_stride` bytes in and holds `4 * groups`
    /// bytes.
    pub(crate) a: &'a [u8],
    pub(crate) a_stride: usize,
    /// Rows of the tile, `1..=MR`.
    pub(crate) rows: usize,
    /// Groups of `K_GROUP` steps of k.
    pub(crate) groups: usize,
    /// A packed panel, `groups * NR * K_GROUP` values.
    pub(crate) first_panel: &'a [i8],
    /// The next panel, or empty for a tile of one panel.
    pub(crate) second_panel: &'a [i8],
}

/// `tile[r * TILE_COLS + j] = sum_k A[r][k] * B[k][j]` for the tile's rows and its one or two
/// panels' columns (the other entries are left as they are).
pub(crate) fn tile(isa: Int8Isa, operands: TileOperands<'_>, tile: &mut Tile) {
    check_operands(&operands, MR);
    match isa {
        #[cfg(target_arch = "x86_64")]
        Int8Isa::Amx if Int8Isa::Amx.is_available() => {
            // SAFETY: The processor has AMX, AVX512F, BW and VNNI, and the process may use the
            // tiles (checked just above); the operands' sizes were checked above.
            unsafe { x86_64::tile_amx(&operands, tile) }
        }
        #[cfg(target_arch = "x86_64")]
        Int8Isa::Avx512Vnni | Int8Isa::Amx if Int8Isa::Avx512Vnni.is_available() => {
            // SAFETY: The processor has AVX512F, BW and VNNI (checked just above), and the
            // operands' sizes were checked above.
            unsafe { x86_64::tile_avx512_vnni(&operands, tile) }
        }
        #[cfg(target_arch = "x86_64")]
        Int8Isa::Avx2 | Int8Isa::Avx512Vnni | Int8Isa::Amx if Int8Isa::Avx2.is_available() => {
            // SAFETY: The processor has AVX2 (checked just above), and the operands' sizes were
            // checked above.
            unsafe { x86_64::tile_avx2(&operands, tile) }
        }
        _ => tile_portable(&operands, tile),
    }
}

/// The shallowest product the strips run on AMX: one chunk of depth (64 steps of k).
#[cfg(target_arch = "x86_64")]
const AMX_MIN_GROUPS: usize = super::amx::CHUNK_GROUPS;

/// Scratch memory of the kernels, made once per task of the GEMM and used by each of its tiles
/// and strips in turn.
pub(crate) struct TileScratch {
    pub(crate) tile: Tile,
    #[cfg(target_arch = "x86_64")]
    amx: super::amx::Scratch,
}

impl TileScratch {
    pub(crate) fn new() -> Self {
        TileScratch {
            tile: [0; MR * TILE_COLS],
            #[cfg(target_arch = "x86_64")]
            amx: super::amx::Scratch::new(),
        }
    }
}

/// Where one tile's f32 results go, and what the epilogue needs for its columns.
pub(crate) struct FloatTile<'a> {
    /// `zero_point * column sum`, `cols` values.
    pub(crate) corrections: &'a [i32],
    /// `s_x * s_w[c]`, `cols` values.
    pub(crate) scales: &'a [f32],
    /// `cols` values.
    pub(crate) bias: &'a [f32],
    /// The residual's rectangle, laid out as the output's (from its first element).
    pub(crate) residual: Option<&'a [f32]>,
    /// The output's rectangle: `rows` rows of `cols` values, `stride` apart (unused, and may be
    /// null, when `bytes` is set).
    pub(crate) output: *mut f32,
    pub(crate) stride: usize,
    pub(crate) clamp: Clamp,
    /// Where the results go quantized instead, if they do (then without a residual).
    pub(crate) bytes: Option<ByteTile>,
}

/// A tile's quantized destination: `rows` rows of `cols` bytes, `stride` apart, each value
/// `quantization.quantize`d from the epilogue's f32 result.
#[derive(Clone, Copy)]
pub(crate) struct ByteTile {
    pub(crate) output: *mut u8,
    pub(crate) stride: usize,
    pub(crate) quantization: ActivationQuantization,
}

/// Computes one tile and writes `clamp((sums - corrections) * scales + bias (+ residual))` to
/// its rectangle of the output, or those values quantized to its rectangle of `float.bytes`.
/// The VNNI kernel applies the epilogue (and the quantization) to its accumulators, in
/// registers; the others store the sums to `tile` and run the epilogue row by row.
///
/// # Safety
/// `float.output` (or `float.bytes`' output, when set) points at `operands.rows` rows of
/// `float.corrections.len() <= TILE_COLS` writable values, `float.stride` (its `stride`) apart,
/// that nothing else accesses during the call; the residual (if any) holds the same rectangle.
pub(crate) unsafe fn tile_to_output(
    isa: Int8Isa,
    operands: TileOperands<'_>,
    float: &FloatTile<'_>,
    tile: &mut Tile,
) {
    let (rows, cols) = (operands.rows, float.corrections.len());
    check_epilogue(&operands, float);
    #[cfg(target_arch = "x86_64")]
    if isa >= Int8Isa::Avx512Vnni && Int8Isa::Avx512Vnni.is_available() {
        // One tile of AMX would cost more than the VNNI tile: its sums go through memory.
        check_operands(&operands, MR);
        // SAFETY: The processor has AVX512F, BW and VNNI (checked just above), the operands'
        // sizes were checked, and the caller vouches for the output.
        unsafe { x86_64::tile_avx512_vnni_to_output(&operands, float) };
        return;
    }
    self::tile(isa, operands, tile);
    let mut row_values = [0.0f32; TILE_COLS];
    for row in 0..rows {
        let output = match float.bytes {
            Some(_) => &mut row_values[..cols],
            // SAFETY: The caller vouches for row `row` of the rectangle.
            None => unsafe {
                std::slice::from_raw_parts_mut(float.output.add(row * float.stride), cols)
            },
        };
        epilogue_row(
            &tile[row * TILE_COLS..][..cols],
            float.corrections,
            float.scales,
            float.bias,
            float
                .residual
                .map(|residual| &residual[row * float.stride..][..cols]),
            float.clamp,
            output,
        );
        if let Some(bytes) = float.bytes {
            // SAFETY: The caller vouches for row `row` of the bytes' rectangle.
            let destination = unsafe {
                std::slice::from_raw_parts_mut(bytes.output.add(row * bytes.stride), cols)
            };
            quantize_slice(&row_values[..cols], destination, bytes.quantization);
        }
    }
}

impl FloatTile<'_> {
    /// The rectangle from row `row` on (the same columns).
    fn rows_from(&self, row: usize) -> FloatTile<'_> {
        FloatTile {
            residual: self.residual.map(|residual| &residual[row * self.stride..]),
            output: self.output.wrapping_add(row * self.stride),
            bytes: self.bytes.map(|bytes| ByteTile {
                output: bytes.output.wrapping_add(row * bytes.stride),
                ..bytes
            }),
            ..*self
        }
    }
}

/// [`tile_to_output`] over a strip of any number of rows (`operands.rows`), `MR` at a time:
/// the VNNI kernel runs the whole strip in one call, which keeps the column vectors and the
/// constants of the epilogue in registers and spares a dispatch per tile (a fifth of the time of
/// a 1x1 convolution of 16 input channels); the others call [`tile_to_output`] per tile.
///
/// # Safety
/// As [`tile_to_output`], for the strip's rows; `scratch` has served only the tiles of this
/// GEMM (of the same depth) since it was made.
pub(crate) unsafe fn strip_to_output(
    isa: Int8Isa,
    operands: TileOperands<'_>,
    float: &FloatTile<'_>,
    scratch: &mut TileScratch,
) {
    let rows = operands.rows;
    check_operands(&operands, usize::MAX);
    // A depth of less than one AMX chunk runs faster on VNNI: AMX would copy all of it to the
    // stack, and a short depth leaves the epilogue, which AMX runs through memory, the most work
    // (MobileNetV2's 1x1 24 -> 144 at 56x56: 128 us on VNNI, 174 us on AMX).
    #[cfg(target_arch = "x86_64")]
    if isa == Int8Isa::Amx && operands.groups >= AMX_MIN_GROUPS && Int8Isa::Amx.is_available() {
        check_epilogue(&operands, float);
        // SAFETY: The processor has AMX, AVX512F, BW and VNNI, and the process may use the
        // tiles (checked just above); the operands' sizes were checked, and the caller vouches
        // for the output.
        unsafe { x86_64::strip_amx_to_output(&operands, float, &mut scratch.amx) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if isa >= Int8Isa::Avx512Vnni && Int8Isa::Avx512Vnni.is_available() {
        // The tiles' checks of `tile_to_output`, once for the strip.
        check_epilogue(&operands, float);
        // SAFETY: The processor has AVX512F, BW and VNNI (checked just above), the operands'
        // sizes were checked, and the caller vouches for the output.
        unsafe { x86_64::strip_avx512_vnni_to_output(&operands, float) };
        return;
    }
    let mut first = 0;
    while first < rows {
        let tile_rows = MR.min(rows - first);
        let tile_operands = TileOperands {
            a: &operands.a[first * operands.a_stride..],
            rows: tile_rows,
            ..operands
        };
        // SAFETY: The tile's rows are rows of the strip, which the caller vouches for.
        unsafe {
            tile_to_output(
                isa,
                tile_operands,
                &float.rows_from(first),
                &mut scratch.tile,
            )
        };
        first += tile_rows;
    }
}

/// Checks the sizes of the epilogue's operands for the rows of `operands`: the column vectors,
/// as many columns as the panels hold, the residual's rectangle, and no residual with bytes.
fn check_epilogue(operands: &TileOperands<'_>, float: &FloatTile<'_>) {
    let (rows, cols) = (operands.rows, float.corrections.len());
    let panels = if operands.second_panel.is_empty() {
        1
    } else {
        2
    };
    assert!(
        cols <= NR * panels
            && float.scales.len() == cols
            && float.bias.len() == cols
            && float
                .residual
                .is_none_or(|residual| residual.len() >= (rows - 1) * float.stride + cols)
            && (float.bytes.is_none() || float.residual.is_none()),
        "int8 tile epilogue: an operand has the wrong size"
    );
}

/// Checks the sizes of a tile's (or a strip's, of at most `max_rows` rows) operands, which the
/// kernels rely on.
fn check_operands(operands: &TileOperands<'_>, max_rows: usize) {
    let panel_length = operands.groups * NR * K_GROUP;
    assert!(
        (1..=max_rows).contains(&operands.rows)
            && operands.first_panel.len() == panel_length
            && (operands.second_panel.is_empty() || operands.second_panel.len() == panel_length)
            && operands.a.len()
                >= (operands.rows - 1) * operands.a_stride + operands.groups * K_GROUP,
        "int8 tile: an operand has the wrong size"
    );
}

/// The portable tile: plain loops over the packed layout.
fn tile_portable(operands: &TileOperands<'_>, tile: &mut Tile) {
    let panels = [operands.first_panel, operands.second_panel];
    for row in 0..operands.rows {
        let a = &operands.a[row * operands.a_stride..][..operands.groups * K_GROUP];
        for (panel_index, panel) in panels.iter().enumerate() {
            if panel.is_empty() {
                continue;
            }
            let mut sums = [0i32; NR];
            for (group, a_group) in a.chunks_exact(K_GROUP).enumerate() {
                let b_group = &panel[group * NR * K_GROUP..][..NR * K_GROUP];
                for (sum, b_column) in sums.iter_mut().zip(b_group.chunks_exact(K_GROUP)) {
                    for (&x, &w) in a_group.iter().zip(b_column) {
                        *sum += i32::from(x) * i32::from(w);
                    }
                }
            }
            tile[row * TILE_COLS + panel_index * NR..][..NR].copy_from_slice(&sums);
        }
    }
}

/// One row of a tile to f32: `output[j] = clamp((sums[j] - corrections[j]) * scales[j] +
/// bias[j] (+ residual[j]))`, compiled for AVX-512 or AVX2 where the processor has them (the loop
/// is then vectorised 16 or 8 wide).
pub(crate) fn epilogue_row(
    sums: &[i32],
    corrections: &[i32],
    scales: &[f32],
    bias: &[f32],
    residual: Option<&[f32]>,
    clamp: Clamp,
    output: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    {
        if Int8Isa::Avx512Vnni.is_available() {
            // SAFETY: The processor has AVX512F and BW (checked just above); the body is safe.
            unsafe {
                x86_64::epilogue_row_avx512(
                    sums,
                    corrections,
                    scales,
                    bias,
                    residual,
                    clamp,
                    output,
                )
            };
            return;
        }
        if Int8Isa::Avx2.is_available() {
            // SAFETY: The processor has AVX2 (checked just above); the body is safe.
            unsafe {
                x86_64::epilogue_row_avx2(sums, corrections, scales, bias, residual, clamp, output)
            };
            return;
        }
    }
    epilogue_row_body(sums, corrections, scales, bias, residual, clamp, output);
}

#[inline(always)]
fn epilogue_row_body(
    sums: &[i32],
    corrections: &[i32],
    scales: &[f32],
    bias: &[f32],
    residual: Option<&[f32]>,
    clamp: Clamp,
    output: &mut [f32],
) {
    let columns = output.len();
    let (sums, corrections) = (&sums[..columns], &corrections[..columns]);
    let (scales, bias) = (&scales[..columns], &bias[..columns]);
    let value = |j: usize| (sums[j] - corrections[j]) as f32 * scales[j] + bias[j];
    match residual {
        Some(residual) => {
            let residual = &residual[..columns];
            for (j, out) in output.iter_mut().enumerate() {
                *out = clamp.apply(value(j) + residual[j]);
            }
        }
        None => {
            for (j, out) in output.iter_mut().enumerate() {
                *out = clamp.apply(value(j));
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) use x86_64::{
    Quantizer as QuantizerAvx512, apply_clamp as apply_clamp_avx512, quantize as quantize_avx512,
    quantize_pair as quantize_pair_avx512,
};

#[cfg(target_arch = "x86_64")]
mod x86_64 {
    //! The x86-64 tiles and epilogues; the callers check the processor and the operands.

    use super::super::amx::{self, BLOCK_ROWS, TileConfig};
    use super::{
        ActivationQuantization, ByteTile, Clamp, FloatTile, K_GROUP, MR, NR, TILE_COLS, Tile,
        TileOperands, epilogue_row_body,
    };
    use crate::kernels::vectorize::first_lanes16;
    use std::arch::x86_64::*;

    /// The AMX tile: one block's sums, copied into `tile`.
    ///
    /// # Safety
    /// The processor has AMX, AVX512F, BW and VNNI, the process may use the tiles, and the
    /// operands are as `super::tile` checks.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn tile_amx(operands: &TileOperands<'_>, tile: &mut Tile) {
        let mut scratch = amx::Scratch::new();
        let cols = if operands.second_panel.is_empty() {
            NR
        } else {
            TILE_COLS
        };
        amx::prepare_tail(operands, &mut scratch);
        // SAFETY: Passed on from the caller; the configuration is the block's.
        unsafe {
            TileConfig::for_rows(operands.rows).load();
            amx::block_sums(operands, 0, operands.rows, &mut scratch);
            amx::release();
        }
        for row in 0..operands.rows {
            tile[row * TILE_COLS..][..cols]
                .copy_from_slice(&scratch.sums[row * TILE_COLS..][..cols]);
        }
    }

    /// Rows of sums an AMX block's epilogue takes at a time.
    const EPILOGUE_ROWS: usize = 8;

    /// `ROWS` rows of `PANELS` panels of sums from a block's buffer (rows `TILE_COLS` apart),
    /// corrected: plus `negated_corrections`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn load_sums<const ROWS: usize, const PANELS: usize>(
        sums: &[i32],
        negated_corrections: &[__m512i; PANELS],
    ) -> [[__m512i; PANELS]; ROWS] {
        let mut vectors = [[_mm512_setzero_si512(); PANELS]; ROWS];
        for (row, row_vectors) in vectors.iter_mut().enumerate() {
            for (panel, vector) in row_vectors.iter_mut().enumerate() {
                let sixteen = &sums[row * TILE_COLS + panel * NR..][..NR];
                // SAFETY: `sixteen` holds 16 i32.
                let loaded = unsafe { _mm512_loadu_si512(sixteen.as_ptr().cast()) };
                *vector = _mm512_add_epi32(loaded, negated_corrections[panel]);
            }
        }
        vectors
    }

    /// A strip of any number of rows in AMX blocks of 32 rows, each block's sums through the
    /// epilogue row by row.
    ///
    /// # Safety
    /// As `super::strip_to_output` requires, on a processor with AMX, AVX512F, BW and VNNI
    /// whose tiles the process may use.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn strip_amx_to_output(
        operands: &TileOperands<'_>,
        float: &FloatTile<'_>,
        scratch: &mut amx::Scratch,
    ) {
        let rows = operands.rows;
        let two_panels = !operands.second_panel.is_empty();
        let (one, two) = (
            negated_corrections::<1>(float.corrections),
            negated_corrections::<2>(float.corrections),
        );
        amx::prepare_tail(operands, scratch);
        let mut configured = 0;
        let mut first = 0;
        while first < rows {
            let block = BLOCK_ROWS.min(rows - first);
            // SAFETY: Passed on from the caller; the configuration is the block's (the same
            // for blocks of the same height).
            unsafe {
                if block != configured {
                    TileConfig::for_rows(block).load();
                    configured = block;
                }
                amx::block_sums(operands, first, block, scratch);
            }
            // The epilogue eight rows at a time, then row by row.
            let mut row = 0;
            while row < block {
                let float = float.rows_from(first + row);
                let rows = &scratch.sums[row * TILE_COLS..];
                // SAFETY: `rows` holds the sums of rows `row..block` (32 i32 each); the caller
                // vouches for those rows of the output.
                unsafe {
                    match (block - row >= EPILOGUE_ROWS, two_panels) {
                        (true, true) => {
                            sums_to_output(&load_sums::<EPILOGUE_ROWS, 2>(rows, &two), &float)
                        }
                        (true, false) => {
                            sums_to_output(&load_sums::<EPILOGUE_ROWS, 1>(rows, &one), &float)
                        }
                        (false, true) => sums_to_output(&load_sums::<1, 2>(rows, &two), &float),
                        (false, false) => sums_to_output(&load_sums::<1, 1>(rows, &one), &float),
                    }
                }
                row += if block - row >= EPILOGUE_ROWS {
                    EPILOGUE_ROWS
                } else {
                    1
                };
            }
            first += block;
        }
        // SAFETY: The caller vouches for AMX.
        unsafe { amx::release() };
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn epilogue_row_avx512(
        sums: &[i32],
        corrections: &[i32],
        scales: &[f32],
        bias: &[f32],
        residual: Option<&[f32]>,
        clamp: Clamp,
        output: &mut [f32],
    ) {
        epilogue_row_body(sums, corrections, scales, bias, residual, clamp, output);
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn epilogue_row_avx2(
        sums: &[i32],
        corrections: &[i32],
        scales: &[f32],
        bias: &[f32],
        residual: Option<&[f32]>,
        clamp: Clamp,
        output: &mut [f32],
    ) {
        epilogue_row_body(sums, corrections, scales, bias, residual, clamp, output);
    }

    /// The VNNI tile.
    ///
    /// # Safety
    /// The processor has AVX512F, BW and VNNI, and the operands are as `super::tile` checks.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn tile_avx512_vnni(operands: &TileOperands<'_>, tile: &mut Tile) {
        // SAFETY: Passed on from the caller.
        unsafe {
            match (operands.rows, operands.second_panel.is_empty()) {
                (6, false) => vnni::<6, 2>(operands, tile),
                (5, false) => vnni::<5, 2>(operands, tile),
                (4, false) => vnni::<4, 2>(operands, tile),
                (3, false) => vnni::<3, 2>(operands, tile),
                (2, false) => vnni::<2, 2>(operands, tile),
                (1, false) => vnni::<1, 2>(operands, tile),
                (6, true) => vnni::<6, 1>(operands, tile),
                (5, true) => vnni::<5, 1>(operands, tile),
                (4, true) => vnni::<4, 1>(operands, tile),
                (3, true) => vnni::<3, 1>(operands, tile),
                (2, true) => vnni::<2, 1>(operands, tile),
                _ => vnni::<1, 1>(operands, tile),
            }
        }
    }

    /// The VNNI tile with the epilogue applied in registers.
    ///
    /// # Safety
    /// As `tile_avx512_vnni`, and as `super::tile_to_output` requires of `float`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn tile_avx512_vnni_to_output(
        operands: &TileOperands<'_>,
        float: &FloatTile<'_>,
    ) {
        // SAFETY: Passed on from the caller.
        unsafe {
            match (operands.rows, operands.second_panel.is_empty()) {
                (6, false) => vnni_to_output::<6, 2>(operands, float),
                (5, false) => vnni_to_output::<5, 2>(operands, float),
                (4, false) => vnni_to_output::<4, 2>(operands, float),
                (3, false) => vnni_to_output::<3, 2>(operands, float),
                (2, false) => vnni_to_output::<2, 2>(operands, float),
                (1, false) => vnni_to_output::<1, 2>(operands, float),
                (6, true) => vnni_to_output::<6, 1>(operands, float),
                (5, true) => vnni_to_output::<5, 1>(operands, float),
                (4, true) => vnni_to_output::<4, 1>(operands, float),
                (3, true) => vnni_to_output::<3, 1>(operands, float),
                (2, true) => vnni_to_output::<2, 1>(operands, float),
                _ => vnni_to_output::<1, 1>(operands, float),
            }
        }
    }

    /// A strip of any number of rows, six at a time, in one call (the epilogue's column vectors
    /// and constants stay in registers from tile to tile).
    ///
    /// # Safety
    /// As `super::strip_to_output` requires, on a processor with AVX512F, BW and VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn strip_avx512_vnni_to_output(
        operands: &TileOperands<'_>,
        float: &FloatTile<'_>,
    ) {
        let rows = operands.rows;
        let mut first = 0;
        while first + MR <= rows {
            let tile = TileOperands {
                a: &operands.a[first * operands.a_stride..],
                rows: MR,
                ..*operands
            };
            let float = float.rows_from(first);
            // SAFETY: Passed on from the caller, for six rows of the strip.
            unsafe {
                if operands.second_panel.is_empty() {
                    vnni_to_output::<MR, 1>(&tile, &float);
                } else {
                    vnni_to_output::<MR, 2>(&tile, &float);
                }
            }
            first += MR;
        }
        if first < rows {
            let tile = TileOperands {
                a: &operands.a[first * operands.a_stride..],
                rows: rows - first,
                ..*operands
            };
            // SAFETY: Passed on from the caller, for the strip's last rows.
            unsafe { tile_avx512_vnni_to_output(&tile, &float.rows_from(first)) };
        }
    }

    /// `ROWS` rows times `PANELS` panels, one zmm accumulator each, each starting at its panel's
    /// `start`: per group of four k, one load of each panel, one broadcast of four bytes per row,
    /// and `ROWS * PANELS` `vpdpbusd`.
    ///
    /// # Safety
    /// The processor has AVX512F, BW and VNNI; the operands are as `super::tile` checks, with
    /// `ROWS == operands.rows` and `PANELS` the panels present.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn vnni_sums<const ROWS: usize, const PANELS: usize>(
        operands: &TileOperands<'_>,
        start: [__m512i; PANELS],
    ) -> [[__m512i; PANELS]; ROWS] {
        const { assert!(ROWS <= MR && PANELS <= 2) };
        let mut sums = [start; ROWS];
        let a = operands.a.as_ptr();
        let panels = [
            operands.first_panel.as_ptr(),
            operands.second_panel.as_ptr(),
        ];
        for group in 0..operands.groups {
            let mut weights = [_mm512_setzero_si512(); PANELS];
            for (panel, weight) in weights.iter_mut().enumerate() {
                // SAFETY: Group `group` of a panel is 64 bytes at `group * 64`, inside the panel
                // (`groups * NR * K_GROUP` bytes).
                *weight =
                    unsafe { _mm512_loadu_si512(panels[panel].add(group * NR * K_GROUP).cast()) };
            }
            for (row, row_sums) in sums.iter_mut().enumerate() {
                // SAFETY: Row `row < rows` holds `groups * K_GROUP` bytes from
                // `row * a_stride`.
                let four = unsafe {
                    std::ptr::read_unaligned(
                        a.add(row * operands.a_stride + group * K_GROUP)
                            .cast::<i32>(),
                    )
                };
                let inputs = _mm512_set1_epi32(four);
                for (sum, &weight) in row_sums.iter_mut().zip(&weights) {
                    *sum = _mm512_dpbusd_epi32(*sum, inputs, weight);
                }
            }
        }
        sums
    }

    /// The raw sums of a tile, stored to `tile`.
    ///
    /// # Safety
    /// As `vnni_sums`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn vnni<const ROWS: usize, const PANELS: usize>(
        operands: &TileOperands<'_>,
        tile: &mut Tile,
    ) {
        // SAFETY: Passed on from the caller.
        let sums = unsafe { vnni_sums::<ROWS, PANELS>(operands, [_mm512_setzero_si512(); PANELS]) };
        for (row, row_sums) in sums.iter().enumerate() {
            for (panel, sum) in row_sums.iter().enumerate() {
                let destination = &mut tile[row * TILE_COLS + panel * NR..][..NR];
                // SAFETY: `destination` holds 16 i32.
                unsafe { _mm512_storeu_si512(destination.as_mut_ptr().cast(), *sum) };
            }
        }
    }

    /// The columns of panel `panel` (16 each) among `cols`, as a mask, or `None` for a panel past
    /// the last column.
    #[inline]
    fn panel_mask(cols: usize, panel: usize) -> Option<__mmask16> {
        let first = panel * NR;
        (first < cols).then(|| first_lanes16(cols - first))
    }

    /// `-corrections`, 16 columns per panel (zero past the last column).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn negated_corrections<const PANELS: usize>(corrections: &[i32]) -> [__m512i; PANELS] {
        let cols = corrections.len();
        let mut negated = [_mm512_setzero_si512(); PANELS];
        for (panel, vector) in negated.iter_mut().enumerate() {
            let Some(mask) = panel_mask(cols, panel) else {
                break;
            };
            let first = panel * NR;
            // SAFETY: The masked load reads only the columns from `first` that `corrections`
            // holds.
            let loaded = unsafe { _mm512_maskz_loadu_epi32(mask, corrections.as_ptr().add(first)) };
            *vector = _mm512_sub_epi32(_mm512_setzero_si512(), loaded);
        }
        negated
    }

    /// The sums of a tile through the epilogue, in registers, into the output: masked loads
    /// and stores cover a last panel with fewer than 16 columns.
    ///
    /// # Safety
    /// As `vnni_sums`, and as `super::tile_to_output` requires of `float`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn vnni_to_output<const ROWS: usize, const PANELS: usize>(
        operands: &TileOperands<'_>,
        float: &FloatTile<'_>,
    ) {
        // The sums start at `-corrections`, which leaves the epilogue the corrected sums.
        let start = negated_corrections::<PANELS>(float.corrections);
        // SAFETY: Passed on from the caller.
        let sums = unsafe { vnni_sums::<ROWS, PANELS>(operands, start) };
        // SAFETY: Passed on from the caller.
        unsafe { sums_to_output(&sums, float) };
    }

    /// A tile's corrected sums (`sums - corrections`), `ROWS` rows of `PANELS` vectors, through
    /// the epilogue into the output (or quantized into its bytes). (Written for arrays of
    /// registers: over a row count and a function that gives the sums, the VNNI strips ran 8%
    /// slower.)
    ///
    /// # Safety
    /// The processor has AVX512F and BW; `float` is as `super::tile_to_output` requires for
    /// `ROWS` rows.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn sums_to_output<const ROWS: usize, const PANELS: usize>(
        sums: &[[__m512i; PANELS]; ROWS],
        float: &FloatTile<'_>,
    ) {
        if let Some(bytes) = &float.bytes {
            // SAFETY: Passed on from the caller.
            unsafe {
                if bytes.quantization.zero_point == 0 {
                    store_bytes::<ROWS, PANELS, false>(sums, float, bytes);
                } else {
                    store_bytes::<ROWS, PANELS, true>(sums, float, bytes);
                }
            }
            return;
        }
        let cols = float.corrections.len();
        for panel in 0..PANELS {
            let Some(mask) = panel_mask(cols, panel) else {
                break;
            };
            let first = panel * NR;
            // SAFETY: The column vectors hold `cols` values; the masked loads read only those
            // from `first`.
            let (scales, bias) = unsafe {
                (
                    _mm512_maskz_loadu_ps(mask, float.scales.as_ptr().add(first)),
                    _mm512_maskz_loadu_ps(mask, float.bias.as_ptr().add(first)),
                )
            };
            for (row, row_sums) in sums.iter().enumerate() {
                let mut values = _mm512_fmadd_ps(_mm512_cvtepi32_ps(row_sums[panel]), scales, bias);
                let offset = row * float.stride + first;
                if let Some(residual) = float.residual {
                    // SAFETY: The residual holds the tile's rectangle; the masked load reads
                    // only its columns.
                    let skip =
                        unsafe { _mm512_maskz_loadu_ps(mask, residual.as_ptr().add(offset)) };
                    values = _mm512_add_ps(values, skip);
                }
                values = apply_clamp(values, float.clamp);
                // SAFETY: The caller vouches for the output rectangle; the store writes only its
                // columns (masked stores, slow on some processors, only for a panel of fewer
                // than 16).
                unsafe {
                    if mask == 0xffff {
                        _mm512_storeu_ps(float.output.add(offset), values);
                    } else {
                        _mm512_mask_storeu_ps(float.output.add(offset), mask, values);
                    }
                }
            }
        }
    }

    /// A tile's corrected sums through the epilogue and quantized, row by row: both panels'
    /// sixteen values are clamped and quantized by [`quantize_pair`] and stored with one store.
    /// `ZERO_POINT` is whether the quantization's zero point is not 0 (see [`Quantizer`]).
    ///
    /// # Safety
    /// As `super::tile_to_output` requires of `bytes`' rectangle.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn store_bytes<const ROWS: usize, const PANELS: usize, const ZERO_POINT: bool>(
        sums: &[[__m512i; PANELS]; ROWS],
        float: &FloatTile<'_>,
        bytes: &ByteTile,
    ) {
        let cols = float.corrections.len();
        let quantizer = Quantizer::new(bytes.quantization, float.clamp);
        // The column vectors of each panel, zero past `cols`.
        let mut columns = [(_mm512_setzero_ps(), _mm512_setzero_ps()); PANELS];
        for (panel, column) in columns.iter_mut().enumerate() {
            let Some(mask) = panel_mask(cols, panel) else {
                break;
            };
            let first = panel * NR;
            // SAFETY: The column vectors hold `cols` values; the masked loads read only those
            // from `first`.
            *column = unsafe {
                (
                    _mm512_maskz_loadu_ps(mask, float.scales.as_ptr().add(first)),
                    _mm512_maskz_loadu_ps(mask, float.bias.as_ptr().add(first)),
                )
            };
        }
        let store_mask: __mmask64 = (1u64 << cols) - 1;
        for (row, row_sums) in sums.iter().enumerate() {
            let mut values = [_mm512_setzero_ps(); 2];
            for (panel, &(scales, bias)) in columns.iter().enumerate() {
                values[panel] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(row_sums[panel]), scales, bias);
            }
            let packed = _mm512_castsi256_si512(quantize_pair::<ZERO_POINT>(
                values[0],
                values[1],
                &quantizer,
                float.clamp,
            ));
            let destination = bytes.output.wrapping_add(row * bytes.stride);
            // SAFETY: The caller vouches for the bytes' rectangle; the store writes only row
            // `row`'s `cols <= 32` bytes (masked stores, slow on some processors, only for
            // other widths than 32 and 16).
            unsafe {
                match cols {
                    32 => _mm256_storeu_si256(destination.cast(), _mm512_castsi512_si256(packed)),
                    16 => _mm_storeu_si128(destination.cast(), _mm512_castsi512_si128(packed)),
                    _ => _mm512_mask_storeu_epi8(destination.cast(), store_mask, packed),
                }
            };
        }
    }

    /// The constants that clamp sixteen values and quantize them as
    /// `ActivationQuantization::quantize` does, with as few instructions as give the same bytes.
    ///
    /// `quantize` rounds `x / scale` to the nearest even (`cvtps2dq`, in the default rounding
    /// mode), adds the zero point and saturates to `0..=255` (the packs, or `vpmovusdb`), and a
    /// NaN gives 0 (it converts to `i32::MIN`). The clamp before it is `min(high, max(low, x))`
    /// (or the leaky slope below zero). Two steps of that can go:
    /// - With a zero point of 0, the lower bound (0, or none) and the leaky slope change no byte:
    ///   whatever they act on is negative and saturates to 0 as it is.
    /// - The upper bound and the cap that keeps `cvtps2dq` from overflowing (any value at or
    ///   past `2^16 * scale` gives 255) are one `min` with the smaller of the two, before the
    ///   scaling. `min(cap, x)` with the cap first lets NaN through to become 0.
    #[derive(Clone, Copy)]
    pub(in crate::kernels::int8) struct Quantizer {
        inverse_scale: __m512,
        cap: __m512,
        zero_point: __m512i,
    }

    impl Quantizer {
        /// The constants for `quantization` after `clamp`. The scale is normal, so its inverse
        /// is finite (`PackedConv2dInt8::new` checks it).
        #[inline]
        #[target_feature(enable = "avx512f")]
        pub(in crate::kernels::int8) fn new(
            quantization: ActivationQuantization,
            clamp: Clamp,
        ) -> Self {
            let high = match clamp {
                Clamp::Relu6 => 6.0,
                Clamp::None | Clamp::Relu | Clamp::LeakyRelu { .. } => f32::INFINITY,
            };
            let overflow = (65536.0 * quantization.scale).min(f32::MAX);
            Quantizer {
                inverse_scale: _mm512_set1_ps(quantization.inverse_scale()),
                cap: _mm512_set1_ps(high.min(overflow)),
                zero_point: _mm512_set1_epi32(i32::from(quantization.zero_point)),
            }
        }
    }

    /// The lower side of the clamp: `max(0, x)` for ReLU and ReLU6, the leaky slope below zero.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn clamp_below(values: __m512, clamp: Clamp) -> __m512 {
        match clamp {
            Clamp::None => values,
            Clamp::Relu | Clamp::Relu6 => _mm512_max_ps(_mm512_setzero_ps(), values),
            Clamp::LeakyRelu { .. } => apply_clamp(values, clamp),
        }
    }

    /// Sixteen values clamped and quantized, before the narrowing to bytes (which saturates to
    /// `0..=255`); `ZERO_POINT` is whether the zero point is not 0.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn quantize_to_i32<const ZERO_POINT: bool>(
        values: __m512,
        quantizer: &Quantizer,
        clamp: Clamp,
    ) -> __m512i {
        let values = if ZERO_POINT {
            clamp_below(values, clamp)
        } else {
            values
        };
        let scaled = _mm512_mul_ps(
            _mm512_min_ps(quantizer.cap, values),
            quantizer.inverse_scale,
        );
        let rounded = _mm512_cvtps_epi32(scaled);
        if ZERO_POINT {
            _mm512_add_epi32(rounded, quantizer.zero_point)
        } else {
            rounded
        }
    }

    /// Thirty-two values, `first` then `second`, clamped by `clamp` and quantized as
    /// `ActivationQuantization::quantize` does (see [`Quantizer`]), as 32 bytes: both rounded
    /// to i32, packed to bytes with the saturating packs (which clamp to `0..=255`: NaN, rounded
    /// to `i32::MIN`, gives 0) and put back in order.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(in crate::kernels::int8) fn quantize_pair<const ZERO_POINT: bool>(
        first: __m512,
        second: __m512,
        quantizer: &Quantizer,
        clamp: Clamp,
    ) -> __m256i {
        let words = _mm512_packs_epi32(
            quantize_to_i32::<ZERO_POINT>(first, quantizer, clamp),
            quantize_to_i32::<ZERO_POINT>(second, quantizer, clamp),
        );
        // After `packs` and `packus`, 128-bit lane `l` holds values `4 l..4 l + 4` of `first`
        // in its first dword and of `second` in its second.
        let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 3, 6, 7, 10, 11, 14, 15);
        _mm512_castsi512_si256(_mm512_permutexvar_epi32(
            order,
            _mm512_packus_epi16(words, words),
        ))
    }

    /// Sixteen values clamped by `clamp` and quantized as `ActivationQuantization::quantize`
    /// does, as bytes.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(in crate::kernels::int8) fn quantize<const ZERO_POINT: bool>(
        values: __m512,
        quantizer: &Quantizer,
        clamp: Clamp,
    ) -> __m128i {
        let rounded = quantize_to_i32::<ZERO_POINT>(values, quantizer, clamp);
        _mm512_cvtusepi32_epi8(_mm512_max_epi32(rounded, _mm512_setzero_si512()))
    }

    /// The clamp activation of sixteen values, with the scalar functions' results: `max_ps` and
    /// `min_ps` return their second operand when either is NaN, so NaN passes through.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(in crate::kernels::int8) fn apply_clamp(values: __m512, clamp: Clamp) -> __m512 {
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

    /// The AVX2 tile, two rows and one panel at a time.
    ///
    /// # Safety
    /// The processor has AVX2, and the operands are as `super::tile` checks.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn tile_avx2(operands: &TileOperands<'_>, tile: &mut Tile) {
        let panels = [operands.first_panel, operands.second_panel];
        for (panel_index, panel) in panels.iter().enumerate() {
            if panel.is_empty() {
                continue;
            }
            let mut row = 0;
            while row < operands.rows {
                let rows = (operands.rows - row).min(2);
                let a = &operands.a[row * operands.a_stride..];
                let offset = row * TILE_COLS + panel_index * NR;
                // SAFETY: Passed on from the caller: rows `row..row + rows` of A are inside.
                unsafe {
                    if rows == 2 {
                        avx2::<2>(a, operands.a_stride, operands.groups, panel, tile, offset);
                    } else {
                        avx2::<1>(a, operands.a_stride, operands.groups, panel, tile, offset);
                    }
                }
                row += rows;
            }
        }
    }

    /// `ROWS` rows of A times one panel: the panel's 64 bytes of a group are four times four
    /// columns of four k, widened to i16; the row's four bytes, widened and repeated four
    /// times, meet them in `vpmaddwd`, which leaves for each column the sum of k 0-1 and of k
    /// 2-3 side by side. Those pairs are added once, at the end.
    ///
    /// # Safety
    /// The processor has AVX2; `ROWS` rows of A (`a_stride` apart) hold `4 * groups` bytes and
    /// the panel `groups * 64`.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn avx2<const ROWS: usize>(
        a: &[u8],
        a_stride: usize,
        groups: usize,
        panel: &[i8],
        tile: &mut Tile,
        offset: usize,
    ) {
        let mut sums = [[_mm256_setzero_si256(); 4]; ROWS];
        let a = a.as_ptr();
        let panel = panel.as_ptr();
        for group in 0..groups {
            let mut weights = [_mm256_setzero_si256(); 4];
            for (quarter, weight) in weights.iter_mut().enumerate() {
                // SAFETY: 16 bytes at `group * 64 + quarter * 16`, inside the panel.
                *weight = _mm256_cvtepi8_epi16(unsafe {
                    _mm_loadu_si128(panel.add(group * NR * K_GROUP + quarter * 16).cast())
                });
            }
            for (row, row_sums) in sums.iter_mut().enumerate() {
                // SAFETY: Row `row` holds `4 * groups` bytes.
                let four = unsafe {
                    std::ptr::read_unaligned(a.add(row * a_stride + group * K_GROUP).cast::<i32>())
                };
                let inputs = _mm256_cvtepu8_epi16(_mm_set1_epi32(four));
                for (sum, &weight) in row_sums.iter_mut().zip(&weights) {
                    *sum = _mm256_add_epi32(*sum, _mm256_madd_epi16(inputs, weight));
                }
            }
        }
        for (row, row_sums) in sums.iter().enumerate() {
            let mut pairs = [0i32; 2 * NR];
            for (quarter, sum) in row_sums.iter().enumerate() {
                // SAFETY: `pairs[quarter * 8..]` holds 8 i32.
                unsafe { _mm256_storeu_si256(pairs.as_mut_ptr().add(quarter * 8).cast(), *sum) };
            }
            let destination = &mut tile[offset + row * TILE_COLS..][..NR];
            for (column, value) in destination.iter_mut().enumerate() {
                *value = pairs[2 * column] + pairs[2 * column + 1];
            }
        }
    }
}
