//! The two loops every pooling kernel is made of, with an AVX2 form and a portable twin:
//!
//! - [`reduce_window_row`]: the outputs of one NCHW row whose window lies inside the input,
//!   eight at a time, every tap of the window combined in a register and the result stored once
//!   (stride 1 is a contiguous load; stride 2 loads two vectors and keeps their even lanes with a
//!   shuffle and a permute); sixteen at a time with AVX-512, where one two-source permute keeps
//!   the even lanes;
//! - [`reduce_taps`]: `output[c] = combine over taps t of input[offset_t + c]`, all the taps of
//!   one channels-last pixel summed in registers, eight channels at a time.
//!
//! and, for the most common max pooling (3 wide at stride 2 with one column of padding), one
//! AVX-512 or AVX2 pass down the rows and across them, [`max_rows_then_3_wide_stride_2`].
//!
//! The maximum propagates NaN as the reference does (`if x > best || x.is_nan() { x }`): the
//! result is NaN if any value is. With no NaN both forms give the maximum; sums may differ from a
//! sequential sum in rounding only.

use crate::kernels::vectorize::Isa;

/// What a pooling window computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reduction {
    Maximum,
    Sum,
}

impl Reduction {
    /// The value of an empty window before any tap: minus infinity for the maximum (padding
    /// never wins), zero for the sum.
    pub(super) fn identity(self) -> f32 {
        match self {
            Reduction::Maximum => f32::NEG_INFINITY,
            Reduction::Sum => 0.0,
        }
    }

    #[inline(always)]
    pub(super) fn combine(self, accumulator: f32, value: f32) -> f32 {
        match self {
            Reduction::Maximum => {
                if value > accumulator || value.is_nan() {
                    value
                } else {
                    accumulator
                }
            }
            Reduction::Sum => accumulator + value,
        }
    }
}

/// The horizontal geometry of a pooling window.
#[derive(Clone, Copy, Debug)]
pub(super) struct RowWindow {
    pub(super) kernel_w: usize,
    pub(super) stride: usize,
    pub(super) dilation: usize,
}

/// `output[i] = combine(start, rows[r][i * stride + k * dilation] for every row r and kernel
/// column k)`, where `start` is `output[i]` itself when `accumulate`, else the identity. Every
/// row must hold `(output.len() - 1) * stride + (kernel_w - 1) * dilation + 1` values.
pub(super) fn reduce_window_row(
    isa: Isa,
    reduction: Reduction,
    output: &mut [f32],
    rows: &[&[f32]],
    window: RowWindow,
    accumulate: bool,
) {
    if output.is_empty() {
        return;
    }
    let last_input = (output.len() - 1) * window.stride + (window.kernel_w - 1) * window.dilation;
    assert!(
        rows.iter().all(|row| row.len() > last_input),
        "reduce_window_row: an input row is too short"
    );
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            // SAFETY: `Isa::Avx2` is only made by `detect` (and `available`) after checking the
            // processor has AVX2; the row lengths were checked just above.
            unsafe { x86_64::reduce_window_row(reduction, output, rows, window, 0, accumulate) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            // SAFETY: `Isa::Avx512` is only made after checking the processor has AVX2 and
            // AVX-512F; the row lengths were checked just above.
            unsafe { x86_64::reduce_window_row_avx512(reduction, output, rows, window, accumulate) }
        }
        Isa::Portable => reduce_window_row_portable(reduction, output, rows, window, accumulate),
    }
}

/// Max pooling's most common window across a row, 3 wide at stride 2 with one column of
/// padding (ResNet's stem pooling), after the maximum down `rows`: `output[i]` is the maximum of
/// `column[2i..2i + 3]`, where `column[1 + x]` is the maximum of `rows[..][x]` and the rest of
/// `column` is minus infinity, in the order of the general loops (each row, then each tap,
/// combined into the one before), so the same values. With AVX-512 and AVX2, one pass over
/// the rows with the column in registers (`column` unused); the portable form runs
/// [`reduce_window_row`] down into `column`, then across it. `rows` holds at least one row, all
/// of one width; `column` holds [`three_wide_stride_2_column`] values at least.
pub(super) fn max_rows_then_3_wide_stride_2(
    isa: Isa,
    rows: &[&[f32]],
    column: &mut [f32],
    output: &mut [f32],
) {
    let width = rows.first().map_or(0, |row| row.len());
    assert!(
        !rows.is_empty()
            && rows.iter().all(|row| row.len() == width)
            && column.len() >= three_wide_stride_2_column(output.len(), width),
        "max_rows_then_3_wide_stride_2: no rows, rows of unequal widths or too short a column"
    );
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            // SAFETY: `Isa::Avx512` is only made after checking the processor has AVX-512F; the
            // rows were checked just above.
            unsafe { x86_64::max_rows_then_3_wide_stride_2(rows, output) };
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            // SAFETY: `Isa::Avx2` is only made after checking the processor has AVX2; the rows
            // were checked just above.
            unsafe { x86_64::max_rows_then_3_wide_stride_2_avx2(rows, output) };
        }
        _ => {
            column.fill(f32::NEG_INFINITY);
            let down = RowWindow {
                kernel_w: 1,
                stride: 1,
                dilation: 1,
            };
            let maximum = Reduction::Maximum;
            reduce_window_row(isa, maximum, &mut column[1..=width], rows, down, false);
            let across = RowWindow {
                kernel_w: 3,
                stride: 2,
                dilation: 1,
            };
            reduce_window_row(isa, maximum, output, &[&*column], across, false);
        }
    }
}

/// The length of the `column` that [`max_rows_then_3_wide_stride_2`] takes for `outputs` outputs
/// from rows `width` wide: the windows read up to `column[2 * outputs]`, and the maximum down the
/// rows fills one more than a row. (The AVX-512 form keeps its column in registers.)
pub(super) fn three_wide_stride_2_column(outputs: usize, width: usize) -> usize {
    (2 * outputs + 1).max(width + 1)
}

/// `output[c] = combine(start[c], input[offset + c] for offset in offsets)`, where `start` is
/// `output` itself when `accumulate`, else the reduction's identity. Every `offset + output.len()`
/// must be within `input`.
pub(super) fn reduce_taps(
    isa: Isa,
    reduction: Reduction,
    output: &mut [f32],
    input: &[f32],
    offsets: &[usize],
    accumulate: bool,
) {
    let channels = output.len();
    assert!(
        offsets
            .iter()
            .all(|&offset| offset + channels <= input.len()),
        "reduce_taps: a tap is outside the input"
    );
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 => {
            // SAFETY: Both are only made after checking the processor has AVX2; every tap
            // was checked to lie inside `input` just above.
            unsafe { x86_64::reduce_taps(reduction, output, input, offsets, accumulate) }
        }
        Isa::Portable => reduce_taps_portable(reduction, output, input, offsets, accumulate),
    }
}

fn reduce_window_row_portable(
    reduction: Reduction,
    output: &mut [f32],
    rows: &[&[f32]],
    window: RowWindow,
    accumulate: bool,
) {
    for (index, value) in output.iter_mut().enumerate() {
        let mut total = if accumulate {
            *value
        } else {
            reduction.identity()
        };
        for row in rows {
            for kernel_x in 0..window.kernel_w {
                total = reduction.combine(
                    total,
                    row[index * window.stride + kernel_x * window.dilation],
                );
            }
        }
        *value = total;
    }
}

fn reduce_taps_portable(
    reduction: Reduction,
    output: &mut [f32],
    input: &[f32],
    offsets: &[usize],
    accumulate: bool,
) {
    if !accumulate {
        output.fill(reduction.identity());
    }
    for &offset in offsets {
        for (value, &x) in output.iter_mut().zip(&input[offset..]) {
            *value = reduction.combine(*value, x);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86_64 {
    //! The AVX2 loops; the callers check the processor and the bounds.

    use super::Reduction;
    use crate::kernels::vectorize::first_lanes16;
    use std::arch::x86_64::*;

    /// Eight lanes of `combine(accumulator, value)`. `vmaxps` returns its second operand when
    /// either is NaN, so a NaN `value` wins; a NaN accumulator is kept by OR-ing in its NaN
    /// mask, which makes the lane all ones, a NaN. (A blend with the accumulator would be
    /// turned by LLVM into a masked store, `vmaskmovps`, which is microcoded and about three
    /// times slower on AMD processors.)
    #[inline]
    #[target_feature(enable = "avx2")]
    fn combine(reduction: Reduction, accumulator: __m256, value: __m256) -> __m256 {
        match reduction {
            Reduction::Maximum => {
                let maximum = _mm256_max_ps(accumulator, value);
                let accumulator_is_nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(accumulator, accumulator);
                _mm256_or_ps(maximum, accumulator_is_nan)
            }
            Reduction::Sum => _mm256_add_ps(accumulator, value),
        }
    }

    /// The even lanes of the fifteen values at `pointer`: `pointer[0, 2, .., 14]`. The second
    /// load starts at 7, not 8, so that the last block of a row reads nothing past its last
    /// even element; its wanted lanes are then the odd ones.
    ///
    /// # Safety
    /// Fifteen values must be readable from `pointer`.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load_even_lanes(pointer: *const f32) -> __m256 {
        // SAFETY: The caller guarantees fifteen readable values: 0..8 and 7..15.
        let (low, high) = unsafe { (_mm256_loadu_ps(pointer), _mm256_loadu_ps(pointer.add(7))) };
        // Per 128-bit half: lanes 0 and 2 of `low`, lanes 1 and 3 of `high`, giving
        // [p0 p2 p8 p10 | p4 p6 p12 p14]; then the 64-bit pairs reordered to 0, 2, 1, 3.
        let even = _mm256_shuffle_ps::<0b11_01_10_00>(low, high);
        _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(
            even,
        )))
    }

    /// Eight inputs for outputs `index..index + 8` at `stride` 1 or 2.
    ///
    /// # Safety
    /// `input` holds `index * stride + 7 * stride + 1` values at least.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load_inputs(input: *const f32, index: usize, stride: usize) -> __m256 {
        // SAFETY: The caller guarantees the last input read, `(index + 7) * stride`, is inside.
        unsafe {
            if stride == 1 {
                _mm256_loadu_ps(input.add(index))
            } else {
                load_even_lanes(input.add(2 * index))
            }
        }
    }

    /// See [`super::reduce_window_row`]: the outputs from `first` on, in blocks of eight; the
    /// last, partial block is the last eight outputs computed again (the same values stored
    /// again), except when summing into `output`, where it is finished one output at a time.
    ///
    /// # Safety
    /// The processor has AVX2, and every row holds the inputs of the last output's last tap.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn reduce_window_row(
        reduction: Reduction,
        output: &mut [f32],
        rows: &[&[f32]],
        window: super::RowWindow,
        first: usize,
        accumulate: bool,
    ) {
        let length = output.len();
        if window.stride > 2 || length < 8 {
            debug_assert_eq!(
                first, 0,
                "only the AVX-512 form starts past the first output"
            );
            super::reduce_window_row_portable(reduction, output, rows, window, accumulate);
            return;
        }
        let mut index = first;
        while index + 8 <= length {
            // SAFETY: `index + 8 <= length`, and the rows hold the inputs of every output.
            unsafe { window_block(reduction, output, rows, window, index, accumulate) };
            index += 8;
        }
        if index < length {
            if accumulate && reduction == Reduction::Sum {
                let rest = &mut output[index..];
                for (offset, value) in rest.iter_mut().enumerate() {
                    let mut total = *value;
                    for row in rows {
                        for kernel_x in 0..window.kernel_w {
                            total +=
                                row[(index + offset) * window.stride + kernel_x * window.dilation];
                        }
                    }
                    *value = total;
                }
            } else {
                // SAFETY: `length >= 8`, so the last eight outputs are in bounds.
                unsafe { window_block(reduction, output, rows, window, length - 8, accumulate) };
            }
        }
    }

    /// Outputs `index..index + 8` of [`reduce_window_row`].
    ///
    /// # Safety
    /// The processor has AVX2, `index + 8 <= output.len()`, and every row holds the inputs of
    /// output `index + 7`'s last tap, `(index + 7) * stride + (kernel_w - 1) * dilation`.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn window_block(
        reduction: Reduction,
        output: &mut [f32],
        rows: &[&[f32]],
        window: super::RowWindow,
        index: usize,
        accumulate: bool,
    ) {
        let destination = output.as_mut_ptr();
        // SAFETY: The caller guarantees the outputs and every input read are in bounds.
        unsafe {
            let mut total = if accumulate {
                _mm256_loadu_ps(destination.add(index))
            } else {
                _mm256_set1_ps(reduction.identity())
            };
            for row in rows {
                let source = row.as_ptr();
                for kernel_x in 0..window.kernel_w {
                    let start = source.add(kernel_x * window.dilation);
                    total = combine(reduction, total, load_inputs(start, index, window.stride));
                }
            }
            _mm256_storeu_ps(destination.add(index), total);
        }
    }

    /// Sixteen lanes of `combine`: as the AVX2 `combine`, the NaN accumulator kept by a masked
    /// move in registers.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn combine16(reduction: Reduction, accumulator: __m512, value: __m512) -> __m512 {
        match reduction {
            Reduction::Maximum => {
                let maximum = _mm512_max_ps(accumulator, value);
                let accumulator_is_nan =
                    _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(accumulator, accumulator);
                _mm512_mask_mov_ps(maximum, accumulator_is_nan, accumulator)
            }
            Reduction::Sum => _mm512_add_ps(accumulator, value),
        }
    }

    /// Sixteen inputs for outputs `index..index + 16` at `stride` 1 or 2. At stride 2 the even
    /// lanes of 31 values: a second load masked to 15 lanes, so that the last block of a row
    /// reads nothing past its last even element, and one two-source permute.
    ///
    /// # Safety
    /// `input` holds `index * stride + 15 * stride + 1` values at least.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load_inputs16(input: *const f32, index: usize, stride: usize) -> __m512 {
        // SAFETY: The caller guarantees the last input read, `(index + 15) * stride`, is inside:
        // at stride 2, lanes 0..16 of the first load and 0..15 of the second.
        unsafe {
            if stride == 1 {
                _mm512_loadu_ps(input.add(index))
            } else {
                let pointer = input.add(2 * index);
                let low = _mm512_loadu_ps(pointer);
                let high = _mm512_maskz_loadu_ps(0x7fff, pointer.add(16));
                let even =
                    _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
                _mm512_permutex2var_ps(low, even, high)
            }
        }
    }

    /// [`reduce_window_row`] in blocks of sixteen outputs; the outputs past the last whole
    /// block go to the AVX2 form.
    ///
    /// # Safety
    /// The processor has AVX2 and AVX-512F, and every row holds the inputs of the last output's
    /// last tap.
    #[target_feature(enable = "avx2,avx512f")]
    pub(super) unsafe fn reduce_window_row_avx512(
        reduction: Reduction,
        output: &mut [f32],
        rows: &[&[f32]],
        window: super::RowWindow,
        accumulate: bool,
    ) {
        let length = output.len();
        let mut index = 0;
        if window.stride <= 2 {
            let destination = output.as_mut_ptr();
            while index + 16 <= length {
                // SAFETY: `index + 16 <= length`, and the rows hold the inputs of every output.
                unsafe {
                    let mut total = if accumulate {
                        _mm512_loadu_ps(destination.add(index))
                    } else {
                        _mm512_set1_ps(reduction.identity())
                    };
                    for row in rows {
                        let source = row.as_ptr();
                        for kernel_x in 0..window.kernel_w {
                            let start = source.add(kernel_x * window.dilation);
                            total = combine16(
                                reduction,
                                total,
                                load_inputs16(start, index, window.stride),
                            );
                        }
                    }
                    _mm512_storeu_ps(destination.add(index), total);
                }
                index += 16;
            }
        }
        if index < length {
            // SAFETY: The caller's contract; `index` is 0 unless `length >= 16`, so the AVX2 form
            // starts past the first output only on rows of eight outputs or more.
            unsafe { reduce_window_row(reduction, output, rows, window, index, accumulate) };
        }
    }

    /// See [`super::max_rows_then_3_wide_stride_2`]. The column of maxima never goes through
    /// memory: each block of 16 outputs takes the maxima down the rows of its 32 input columns
    /// as two vectors, splits them into the even and odd columns, and shifts the odd ones by one
    /// lane (bringing in the previous block's last) for each window's first tap. (Stored and
    /// read back at other offsets, the column cost a failed store forward per load: ResNet-18's
    /// stem pooling, 64x112x112 on its own, took 375 us against 325 now.)
    ///
    /// # Safety
    /// The processor has AVX-512F, and every row holds `width` values (the first row's length).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn max_rows_then_3_wide_stride_2(rows: &[&[f32]], output: &mut [f32]) {
        let reduction = Reduction::Maximum;
        let width = rows[0].len();
        let minus_infinity = _mm512_set1_ps(f32::NEG_INFINITY);
        // The maxima down the rows of input columns `x..x + 16`, minus infinity past the row
        // (as in the padded column of the general loops).
        let down = |x: usize| {
            if x >= width {
                return minus_infinity;
            }
            let mask = first_lanes16(width - x);
            // SAFETY: The masked lanes, columns `x..width` at most, of every row (each holds
            // `width` values).
            unsafe {
                let mut total = _mm512_mask_loadu_ps(minus_infinity, mask, rows[0].as_ptr().add(x));
                for row in &rows[1..] {
                    let value = _mm512_mask_loadu_ps(minus_infinity, mask, row.as_ptr().add(x));
                    total = combine16(reduction, total, value);
                }
                total
            }
        };
        let even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
        let odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
        let length = output.len();
        // Input column `2 * index - 1` in the last lane: the left padding at first.
        let mut previous_odds = minus_infinity;
        let mut index = 0;
        while index < length {
            // Output `index + l` reads input columns `2 (index + l) - 1 ..= 2 (index + l) + 1`,
            // taps combined in that order, as the general loops do.
            let (low, high) = (down(2 * index), down(2 * index + 16));
            let evens = _mm512_permutex2var_ps(low, even, high);
            let odds = _mm512_permutex2var_ps(low, odd, high);
            let lefts = _mm512_castsi512_ps(_mm512_alignr_epi32::<15>(
                _mm512_castps_si512(odds),
                _mm512_castps_si512(previous_odds),
            ));
            let total = combine16(reduction, combine16(reduction, lefts, evens), odds);
            let mask = first_lanes16(length - index);
            // SAFETY: The masked store writes outputs `index..length` at most.
            unsafe { _mm512_mask_storeu_ps(output.as_mut_ptr().add(index), mask, total) };
            previous_odds = odds;
            index += 16;
        }
    }

    /// See [`super::max_rows_then_3_wide_stride_2`]: the AVX-512 form's pass (above), eight
    /// outputs at a time, the previous block's last odd column brought in by a rotation and a
    /// blend. A block whose input columns pass the end of the rows reads them from copies
    /// padded with minus infinity; the last, partial block of outputs is stored through a copy.
    /// (Down into a column in memory and across it through [`super::reduce_window_row`], whose
    /// loops over rows and taps cost more than the maxima, `stem_timing` at one thread, best of
    /// six alternated runs: ResNet-18's stem with its pooling 3413 us against 3050 now, the
    /// pooling alone 560 us against 280.)
    ///
    /// # Safety
    /// The processor has AVX2, and every row holds `width` values (the first row's length).
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn max_rows_then_3_wide_stride_2_avx2(rows: &[&[f32]], output: &mut [f32]) {
        let reduction = Reduction::Maximum;
        // The 64-bit pairs of a vector reordered to 0, 2, 1, 3.
        let pairs = |values: __m256| {
            _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(
                values,
            )))
        };
        let rotate_right = _mm256_setr_epi32(7, 0, 1, 2, 3, 4, 5, 6);
        let length = output.len();
        // The odd columns of the block before, rotated right a lane: input column
        // `2 * index - 1` in the first lane, the left padding at first.
        let mut previous = _mm256_set1_ps(f32::NEG_INFINITY);
        let mut index = 0;
        while index < length {
            // Output `index + l` reads input columns `2 (index + l) - 1 ..= 2 (index + l) + 1`,
            // taps combined in that order, as the general loops do.
            // SAFETY: Every row holds as many values as the first (the caller's contract).
            let (low, high) = unsafe { (down8(rows, 2 * index), down8(rows, 2 * index + 8)) };
            // Per 128-bit half, [l0 l2 h0 h2 | l4 l6 h4 h6] (the odd lanes likewise), then the
            // pairs in order.
            let evens = pairs(_mm256_shuffle_ps::<0b10_00_10_00>(low, high));
            let odds = pairs(_mm256_shuffle_ps::<0b11_01_11_01>(low, high));
            let rotated = _mm256_permutevar8x32_ps(odds, rotate_right);
            let lefts = _mm256_blend_ps::<1>(rotated, previous);
            let total = combine(reduction, combine(reduction, lefts, evens), odds);
            if index + 8 <= length {
                // SAFETY: Outputs `index..index + 8`, inside `output`.
                unsafe { _mm256_storeu_ps(output.as_mut_ptr().add(index), total) };
            } else {
                let mut lanes = [0.0; 8];
                // SAFETY: `lanes` holds eight values.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), total) };
                output[index..].copy_from_slice(&lanes[..length - index]);
            }
            previous = rotated;
            index += 8;
        }
    }

    /// The maxima down `rows` (each as long as the first) of input columns `x..x + 8`, minus
    /// infinity past the row, as in the padded column of the general loops.
    ///
    /// # Safety
    /// The processor has AVX2, and every row holds as many values as the first.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn down8(rows: &[&[f32]], x: usize) -> __m256 {
        if x + 8 > rows[0].len() {
            return down8_padded(rows, x);
        }
        // SAFETY: Columns `x..x + 8` of every row, inside it (checked just above).
        unsafe {
            let mut total = _mm256_loadu_ps(rows[0].as_ptr().add(x));
            for row in &rows[1..] {
                let value = _mm256_loadu_ps(row.as_ptr().add(x));
                total = combine(Reduction::Maximum, total, value);
            }
            total
        }
    }

    /// [`down8`] at the end of the rows, through copies padded with minus infinity.
    #[cold]
    #[target_feature(enable = "avx2")]
    fn down8_padded(rows: &[&[f32]], x: usize) -> __m256 {
        let padded = |row: &[f32]| {
            let mut lanes = [f32::NEG_INFINITY; 8];
            let tail = row.get(x..).unwrap_or_default();
            lanes[..tail.len()].copy_from_slice(tail);
            // SAFETY: `lanes` holds eight values.
            unsafe { _mm256_loadu_ps(lanes.as_ptr()) }
        };
        let mut total = padded(rows[0]);
        for row in &rows[1..] {
            total = combine(Reduction::Maximum, total, padded(row));
        }
        total
    }

    /// See [`super::reduce_taps`]: sixteen channels at a time in two registers, then eight,
    /// then one by one.
    ///
    /// # Safety
    /// The processor has AVX2, and `offset + output.len() <= input.len()` for every offset.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn reduce_taps(
        reduction: Reduction,
        output: &mut [f32],
        input: &[f32],
        offsets: &[usize],
        accumulate: bool,
    ) {
        let channels = output.len();
        let destination = output.as_mut_ptr();
        let source = input.as_ptr();
        let identity = _mm256_set1_ps(reduction.identity());
        let mut channel = 0;
        while channel + 16 <= channels {
            // SAFETY: `channel + 16 <= channels`, so both output vectors and, for each tap,
            // both input vectors (`offset + channels <= input.len()`) are in bounds.
            unsafe {
                let (mut first, mut second) = if accumulate {
                    (
                        _mm256_loadu_ps(destination.add(channel)),
                        _mm256_loadu_ps(destination.add(channel + 8)),
                    )
                } else {
                    (identity, identity)
                };
                for &offset in offsets {
                    let pointer = source.add(offset + channel);
                    first = combine(reduction, first, _mm256_loadu_ps(pointer));
                    second = combine(reduction, second, _mm256_loadu_ps(pointer.add(8)));
                }
                _mm256_storeu_ps(destination.add(channel), first);
                _mm256_storeu_ps(destination.add(channel + 8), second);
            }
            channel += 16;
        }
        if channel + 8 <= channels {
            // SAFETY: As above, for eight channels.
            unsafe {
                let mut first = if accumulate {
                    _mm256_loadu_ps(destination.add(channel))
                } else {
                    identity
                };
                for &offset in offsets {
                    first = combine(
                        reduction,
                        first,
                        _mm256_loadu_ps(source.add(offset + channel)),
                    );
                }
                _mm256_storeu_ps(destination.add(channel), first);
            }
            channel += 8;
        }
        for channel in channel..channels {
            let mut value = if accumulate {
                output[channel]
            } else {
                reduction.identity()
            };
            for &offset in offsets {
                value = reduction.combine(value, input[offset + channel]);
            }
            output[channel] = value;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::values;
    use proptest::prelude::*;

    fn same(left: &[f32], right: &[f32]) -> bool {
        left.len() == right.len()
            && left
                .iter()
                .zip(right)
                .all(|(a, b)| a == b || (a.is_nan() && b.is_nan()))
    }

    /// Values with a NaN now and then, to check it propagates through both forms.
    fn with_nans(mut data: Vec<f32>, every: usize) -> Vec<f32> {
        for value in data.iter_mut().step_by(every.max(1)) {
            *value = f32::NAN;
        }
        data
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn reduce_window_row_forms_agree(
            (window, start, data, row_length) in (0..40usize, 1..4usize, 1..4usize, 1..3usize, 0..3usize)
                .prop_flat_map(|(length, kernel_w, stride, dilation, spare)| {
                    let window = RowWindow { kernel_w, stride, dilation };
                    // Each row is exactly as long as needed, or a little longer.
                    let needed = length.saturating_sub(1) * stride + (kernel_w - 1) * dilation + 1;
                    (Just(window), values(length), values(3 * (needed + spare)), Just(needed + spare))
                }),
            row_count in 0..4usize,
            nan_every in prop::option::of(5..60usize),
            maximum in any::<bool>(),
            accumulate in any::<bool>(),
        ) {
            let reduction = if maximum { Reduction::Maximum } else { Reduction::Sum };
            let data = match nan_every { Some(every) => with_nans(data, every), None => data };
            let rows: Vec<&[f32]> = data.chunks_exact(row_length).take(row_count).collect();
            let mut expected = start.clone();
            reduce_window_row_portable(reduction, &mut expected, &rows, window, accumulate);
            for isa in Isa::available() {
                let mut output = start.clone();
                reduce_window_row(isa, reduction, &mut output, &rows, window, accumulate);
                let close = output.iter().zip(&expected).all(|(a, b)| {
                    a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-5 * b.abs().max(1.0)
                });
                prop_assert!(close, "{isa:?}: {output:?} vs {expected:?}");
            }
        }

        /// The one-pass form of the 3-wide, stride-2 window against the general loops (the
        /// maximum down the rows into a padded column, then across it), odd widths, tails and
        /// NaNs included: the same bits.
        #[test]
        fn three_wide_stride_two_matches_the_general_loops(
            (width, data) in (1..70usize).prop_flat_map(|width| (Just(width), values(3 * width))),
            row_count in 1..4usize,
            nan_every in prop::option::of(3..40usize),
        ) {
            let data = match nan_every { Some(every) => with_nans(data, every), None => data };
            let rows: Vec<&[f32]> = data.chunks_exact(width).take(row_count).collect();
            let out_w = (width + 2 - 3) / 2 + 1;
            let mut column = vec![f32::NEG_INFINITY; width + 2];
            reduce_window_row_portable(
                Reduction::Maximum,
                &mut column[1..=width],
                &rows,
                RowWindow { kernel_w: 1, stride: 1, dilation: 1 },
                false,
            );
            let mut expected = vec![0.0; out_w];
            let across = RowWindow { kernel_w: 3, stride: 2, dilation: 1 };
            reduce_window_row_portable(Reduction::Maximum, &mut expected, &[&column], across, false);
            for isa in Isa::available() {
                let mut output = vec![0.0; out_w];
                let mut scratch = vec![0.0; three_wide_stride_2_column(out_w, width)];
                max_rows_then_3_wide_stride_2(isa, &rows, &mut scratch, &mut output);
                prop_assert!(same(&output, &expected), "{isa:?}: {output:?} vs {expected:?}");
            }
        }

        #[test]
        fn reduce_taps_forms_agree(
            (channels, input) in (0..40usize).prop_flat_map(|channels| (Just(channels), values(channels * 5 + 7))),
            offsets in prop::collection::vec(0..=7usize, 0..5),
            nan_every in prop::option::of(5..40usize),
            maximum in any::<bool>(),
            accumulate in any::<bool>(),
        ) {
            let reduction = if maximum { Reduction::Maximum } else { Reduction::Sum };
            let input = match nan_every { Some(every) => with_nans(input, every), None => input };
            let offsets: Vec<usize> = offsets.iter().map(|&tap| tap * channels / 2).collect();
            let start: Vec<f32> = (0..channels).map(|channel| channel as f32 - 3.0).collect();
            let mut expected = start.clone();
            for (channel, value) in expected.iter_mut().enumerate() {
                let mut total = if accumulate { *value } else { reduction.identity() };
                for &offset in &offsets {
                    total = reduction.combine(total, input[offset + channel]);
                }
                *value = total;
            }
            for isa in Isa::available() {
                let mut output = start.clone();
                reduce_taps(isa, reduction, &mut output, &input, &offsets, accumulate);
                prop_assert!(same(&output, &expected), "{isa:?}: {output:?} vs {expected:?}");
            }
        }
    }
}
