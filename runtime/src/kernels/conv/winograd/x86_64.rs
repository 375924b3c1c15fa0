//! The AVX2 transforms of one group of eight tiles, one tile per lane of a ymm register.
//!
//! The input transform reads each tile's patch rows as two 4-float loads (columns 0..4 and
//! 2..6) and turns them into one vector per column with in-lane 4x4 transposes (lane `k` of the
//! low half and lane `k + 4` of the high half come from tiles `k` and `k + 4`), so the eight
//! patches need no scalar gather; the output transform transposes back the same way and writes
//! each tile's 4x4 outputs as 4-float rows. Between the transposes, every step of `B^T d B` and
//! `A^T m A` is one vector operation for all eight tiles.

use super::{INPUT_TILE, LANES, OUTPUT_TILE, OutputPointer, OutputTiles, POINTS, PatchSource};
use std::arch::x86_64::{
    __m128, __m256, _mm_add_ps, _mm_loadu_ps, _mm_max_ps, _mm_setzero_ps, _mm_storeu_ps,
    _mm256_add_ps, _mm256_castps256_ps128, _mm256_extractf128_ps, _mm256_fmadd_ps, _mm256_loadu_ps,
    _mm256_mul_ps, _mm256_set_m128, _mm256_set1_ps, _mm256_setzero_ps, _mm256_shuffle_ps,
    _mm256_storeu_ps, _mm256_sub_ps, _mm256_unpackhi_ps, _mm256_unpacklo_ps,
};

/// `B^T d B` for the patches of one group of tiles, written as point `p` of lane `l` at
/// `destination[p * matrix_length + l]`; the same contract as the portable
/// `super::transform_input_group`.
///
/// # Safety
///
/// The processor must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn transform_input_group(
    sources: &[PatchSource<'_>; LANES],
    destination: &mut [f32],
    matrix_length: usize,
) {
    assert!(destination.len() >= (POINTS - 1) * matrix_length + LANES);
    // Built by `each_row`, as in `transform_output_group`.
    let row_done = |row: usize| {
        let mut left = [_mm_setzero_ps(); LANES];
        let mut right = [_mm_setzero_ps(); LANES];
        for lane in 0..LANES {
            let patch_row = sources[lane].row(row);
            // SAFETY: `patch_row` holds 6 floats, so both 4-float loads (at 0 and 2) are inside.
            unsafe {
                left[lane] = _mm_loadu_ps(patch_row.as_ptr());
                right[lane] = _mm_loadu_ps(patch_row[2..].as_ptr());
            }
        }
        let [x0, x1, x2, x3] = transpose_rows(&left);
        let [_, _, x4, x5] = transpose_rows(&right);
        input_points([x0, x1, x2, x3, x4, x5])
    };
    let rows_done: [[__m256; INPUT_TILE]; INPUT_TILE] = each_row(row_done);
    for column in 0..INPUT_TILE {
        let points = input_points(std::array::from_fn(|row| rows_done[row][column]));
        for (row, point) in points.into_iter().enumerate() {
            let values = &mut destination[(row * INPUT_TILE + column) * matrix_length..][..LANES];
            // SAFETY: `values` holds the 8 floats the store writes.
            unsafe { _mm256_storeu_ps(values.as_mut_ptr(), point) };
        }
    }
}

/// `A^T m A + bias` for the products of one group of tiles (point `p` of lane `l` at
/// `products[p * matrix_length + l]`), into each lane's 4x4 outputs; the same contract as the
/// portable `super::transform_output_group`.
///
/// # Safety
///
/// The processor must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn transform_output_group(
    products: &[f32],
    matrix_length: usize,
    bias: f32,
    outputs: &mut OutputTiles,
) {
    let store = |tile: usize, row: usize, values| {
        let destination = &mut outputs[tile][row * OUTPUT_TILE..][..OUTPUT_TILE];
        // SAFETY: `destination` holds the 4 floats the store writes.
        unsafe { _mm_storeu_ps(destination.as_mut_ptr(), values) };
    };
    // SAFETY: The caller's contract is this function's.
    unsafe { transform_output_rows(products, matrix_length, bias, store) }
}

/// `A^T m A + bias` for the products of one group of tiles, as in `transform_output_group`,
/// handing each tile's output rows to `emit(tile, row, values)` (rows in order, and in each
/// row tiles 0 and 4, 1 and 5, ...), so that the caller can finish and store them while they
/// are in registers.
///
/// # Safety
///
/// The processor must support AVX2 and FMA.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn transform_output_rows(
    products: &[f32],
    matrix_length: usize,
    bias: f32,
    mut emit: impl FnMut(usize, usize, __m128),
) {
    assert!(products.len() >= (POINTS - 1) * matrix_length + LANES);
    // Built by `each_row`: a zeroed array overwritten row by row was zeroed with a call to
    // `memset` (768 bytes) on every call, 1.4% of ResNet-18's time.
    let row_done = |row: usize| {
        let mut points = [_mm256_setzero_ps(); INPUT_TILE];
        for (column, point) in points.iter_mut().enumerate() {
            let values = &products[(row * INPUT_TILE + column) * matrix_length..][..LANES];
            // SAFETY: `values` holds the 8 floats the load reads.
            *point = unsafe { _mm256_loadu_ps(values.as_ptr()) };
        }
        output_points(points)
    };
    let rows_done: [[__m256; OUTPUT_TILE]; INPUT_TILE] = each_row(row_done);
    let bias = _mm256_set1_ps(bias);
    let mut columns = [[_mm256_setzero_ps(); OUTPUT_TILE]; OUTPUT_TILE];
    for (column, results) in columns.iter_mut().enumerate() {
        *results = output_points(std::array::from_fn(|row| rows_done[row][column]));
    }
    for row in 0..OUTPUT_TILE {
        let tile_rows = transpose_in_lanes(columns.map(|column| _mm256_add_ps(column[row], bias)));
        for (tile, tile_row) in tile_rows.into_iter().enumerate() {
            emit(tile, row, _mm256_castps256_ps128(tile_row));
            emit(tile + 4, row, _mm256_extractf128_ps::<1>(tile_row));
        }
    }
}

/// `A^T m A + bias` for the products of one output channel and one group of eight whole tiles
/// (every output of each lane's 4x4 tile inside the output), finished and stored in place: row
/// `r` of lane `l`'s tile goes to `destination[starts[l] + r * row_stride..][..4]`, plus the
/// `residual` at the same index, through ReLU when `relu`. The other cases (edge tiles, other
/// activations) go through `transform_output_group` and the caller's epilogue.
///
/// # Safety
///
/// The processor must support AVX2 and FMA.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn transform_output_group_into(
    products: &[f32],
    matrix_length: usize,
    bias: f32,
    starts: &[usize; LANES],
    row_stride: usize,
    residual: Option<&[f32]>,
    relu: bool,
    destination: &OutputPointer,
) {
    let finish = |tile: usize, row: usize, mut values| {
        let index = starts[tile] + row * row_stride;
        if let Some(residual) = residual {
            let skip = &residual[index..][..OUTPUT_TILE];
            // SAFETY: `skip` holds the 4 floats the load reads.
            values = _mm_add_ps(values, unsafe { _mm_loadu_ps(skip.as_ptr()) });
        }
        if relu {
            // `max(0, x)` returns `x` when it is NaN, as `relu` does.
            values = _mm_max_ps(_mm_setzero_ps(), values);
        }
        // SAFETY: Any 128 bits are four valid `f32`s.
        let values = unsafe { std::mem::transmute::<__m128, [f32; OUTPUT_TILE]>(values) };
        destination.write(index, &values);
    };
    // SAFETY: The caller's contract is this function's.
    unsafe { transform_output_rows(products, matrix_length, bias, finish) }
}

/// `[row(0), .., row(5)]`, one result per row of a 6x6 tile, written out: an array zeroed and
/// then overwritten row by row was zeroed with a call to `memset`, and `std::array::from_fn`
/// kept the rows' closures out of line (a call per row).
#[inline(always)]
fn each_row<T>(mut row: impl FnMut(usize) -> T) -> [T; INPUT_TILE] {
    const _: () = assert!(INPUT_TILE == 6);
    [row(0), row(1), row(2), row(3), row(4), row(5)]
}

/// F(2x2, 3x3)'s input transform, the portable code compiled for AVX2 (its lane loops become
/// vector operations); the same contract as `super::transform_input_group_f2x2`.
///
/// # Safety
///
/// The processor must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn transform_input_group_f2x2(
    sources: &[PatchSource<'_>; LANES],
    destination: &mut [f32],
    matrix_length: usize,
) {
    super::transform_input_group_f2x2(sources, destination, matrix_length);
}

/// F(2x2, 3x3)'s output transform, the portable code compiled for AVX2; the same contract as
/// `super::transform_output_group_f2x2`.
///
/// # Safety
///
/// The processor must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn transform_output_group_f2x2(
    products: &[f32],
    matrix_length: usize,
    bias: f32,
    outputs: &mut OutputTiles,
) {
    super::transform_output_group_f2x2(products, matrix_length, bias, outputs);
}

/// One vector per column from four columns (one `__m128` per tile) of eight tiles: tile `k`'s
/// values go to lane `k`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn transpose_rows(rows: &[__m128; LANES]) -> [__m256; 4] {
    transpose_in_lanes([
        _mm256_set_m128(rows[4], rows[0]),
        _mm256_set_m128(rows[5], rows[1]),
        _mm256_set_m128(rows[6], rows[2]),
        _mm256_set_m128(rows[7], rows[3]),
    ])
}

/// The 4x4 transpose of each 128-bit half: element `c` of half `h` of output `r` is element
/// `r` of half `h` of input `c`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn transpose_in_lanes([a, b, c, d]: [__m256; 4]) -> [__m256; 4] {
    let ab_low = _mm256_unpacklo_ps(a, b);
    let ab_high = _mm256_unpackhi_ps(a, b);
    let cd_low = _mm256_unpacklo_ps(c, d);
    let cd_high = _mm256_unpackhi_ps(c, d);
    [
        _mm256_shuffle_ps::<0x44>(ab_low, cd_low),
        _mm256_shuffle_ps::<0xEE>(ab_low, cd_low),
        _mm256_shuffle_ps::<0x44>(ab_high, cd_high),
        _mm256_shuffle_ps::<0xEE>(ab_high, cd_high),
    ]
}

/// `B^T x` for six vectors `x`; the vector form of `super::input_points`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn input_points([x0, x1, x2, x3, x4, x5]: [__m256; INPUT_TILE]) -> [__m256; INPUT_TILE] {
    let (two, four, minus_five) = (
        _mm256_set1_ps(2.0),
        _mm256_set1_ps(4.0),
        _mm256_set1_ps(-5.0),
    );
    let x4_minus_x2 = _mm256_sub_ps(x4, x2);
    let x3_minus_x1 = _mm256_sub_ps(x3, x1);
    [
        _mm256_fmadd_ps(minus_five, x2, _mm256_fmadd_ps(four, x0, x4)),
        _mm256_sub_ps(
            _mm256_add_ps(x3, x4),
            _mm256_mul_ps(four, _mm256_add_ps(x1, x2)),
        ),
        _mm256_fmadd_ps(four, _mm256_sub_ps(x1, x2), _mm256_sub_ps(x4, x3)),
        _mm256_fmadd_ps(two, x3_minus_x1, x4_minus_x2),
        _mm256_sub_ps(x4_minus_x2, _mm256_mul_ps(two, x3_minus_x1)),
        _mm256_fmadd_ps(minus_five, x3, _mm256_fmadd_ps(four, x1, x5)),
    ]
}

/// `A^T m` for six vectors `m`; the vector form of `super::output_points`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn output_points([m0, m1, m2, m3, m4, m5]: [__m256; INPUT_TILE]) -> [__m256; OUTPUT_TILE] {
    let (two, four, eight) = (
        _mm256_set1_ps(2.0),
        _mm256_set1_ps(4.0),
        _mm256_set1_ps(8.0),
    );
    let sum_12 = _mm256_add_ps(m1, m2);
    let difference_12 = _mm256_sub_ps(m1, m2);
    let sum_34 = _mm256_add_ps(m3, m4);
    let difference_34 = _mm256_sub_ps(m3, m4);
    [
        _mm256_add_ps(_mm256_add_ps(m0, sum_12), sum_34),
        _mm256_fmadd_ps(two, difference_34, difference_12),
        _mm256_fmadd_ps(four, sum_34, sum_12),
        _mm256_add_ps(_mm256_fmadd_ps(eight, difference_34, difference_12), m5),
    ]
}
