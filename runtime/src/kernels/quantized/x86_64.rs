//! AVX2 + FMA + F16C block products. A 4-bit block's 16 bytes become 32 values in one `ymm`
//! (low nibbles, then high nibbles, the order of the values); the exact mode widens them to
//! four `ymm` of f32 and multiplies by the f32 activations, the fast mode multiplies bytes by
//! the quantized activations with `vpmaddubsw` (u8 x i8 pairs summed in i16, at most
//! 2 * 255 * 127 < 2^15) and `vpmaddwd` (pairs of i16 summed in i32).

use std::arch::x86_64::*;

use super::blocks::{BLOCK_LENGTH, QuantFormat};
use super::rows::ActivationRow;

/// The block formats as const generic parameters of the block loops (`exact_dot_of`,
/// `fast_dot_of`), so that a loop carries no branch on the format and its two accumulators stay
/// in registers: with the format matched block by block and the accumulators indexed by the
/// block's parity, LLVM kept them on the stack, and every block's FMA waited on the store of the
/// one before last. SmolLM2-135M's decode from its Q4_1 file, one thread, first-generation Zen,
/// ms a token: fast mode 26.36 -> 22.36, `--quantize q8_0` fast 26.77 -> 22.11, exact 37.44 ->
/// 32.58.
const Q8_0: u8 = 0;
const Q4_0: u8 = 1;
const Q4_1: u8 = 2;
const F16: u8 = 3;

/// The `QuantFormat` of a const generic format code.
const fn format_of(code: u8) -> QuantFormat {
    match code {
        Q8_0 => QuantFormat::Q8_0,
        Q4_0 => QuantFormat::Q4_0,
        Q4_1 => QuantFormat::Q4_1,
        _ => QuantFormat::F16,
    }
}

/// Whether these kernels can run here.
pub(super) fn available() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// Reads a block's `d` and, for Q4_1, `m`, as `exact_dot` and `fast_dot` use them: returns
/// `(offset of the values, d, m)` with `m = -8 d` for Q4_0 and 0 for Q8_0.
///
/// # Safety
/// The processor has F16C, and `block` points at a whole block of `format`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn header(format: QuantFormat, block: *const u8) -> (usize, f32, f32) {
    // SAFETY: A block starts with two (Q4_1: four) bytes of f16, or is 64 bytes of them (F16);
    // reading 4 bytes stays inside every block (the shortest is 18 bytes).
    let halves = unsafe { block.cast::<i32>().read_unaligned() };
    let floats = _mm_cvtph_ps(_mm_cvtsi32_si128(halves));
    let d = _mm_cvtss_f32(floats);
    match format {
        QuantFormat::Q8_0 => (2, d, 0.0),
        QuantFormat::Q4_0 => (2, d, -8.0 * d),
        QuantFormat::Q4_1 => (4, d, _mm_cvtss_f32(_mm_movehdup_ps(floats))),
        QuantFormat::F16 => (0, 1.0, 0.0),
    }
}

/// The 32 halves of an F16 block as four vectors of eight f32, in order.
///
/// # Safety
/// AVX2 and F16C are available and 64 bytes can be read at `values`.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn widen_halves(values: *const u8) -> [__m256; 4] {
    // SAFETY: The four 16-byte loads read `values[0..64]` (the caller's contract).
    std::array::from_fn(|index| unsafe {
        _mm256_cvtph_ps(_mm_loadu_si128(values.add(16 * index).cast()))
    })
}

/// The 32 four-bit values of the 16 bytes at `values`, as bytes in value order.
///
/// # Safety
/// AVX2 is available and 16 bytes can be read at `values`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn unpack_nibbles(values: *const u8) -> __m256i {
    // SAFETY: 16 bytes are readable at `values` (the caller's contract).
    let packed = unsafe { _mm_loadu_si128(values.cast()) };
    let mask = _mm_set1_epi8(0x0F);
    let low = _mm_and_si128(packed, mask);
    let high = _mm_and_si128(_mm_srli_epi16::<4>(packed), mask);
    _mm256_set_m128i(high, low)
}

/// The 32 stored values of a block (the integers `q`, or F16's halves) as four vectors of eight
/// f32, in order; `values` points at the block's values, after its header.
///
/// # Safety
/// AVX2 and F16C are available and the block's values (32 bytes for Q8_0, 16 for Q4_0/Q4_1, 64
/// for F16) can be read at `values`.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn widen_block(format: QuantFormat, values: *const u8) -> [__m256; 4] {
    // SAFETY: Every read stays inside the block's values (the caller's contract).
    unsafe {
        let integers = match format {
            QuantFormat::Q8_0 => [
                _mm256_cvtepi8_epi32(_mm_loadl_epi64(values.cast())),
                _mm256_cvtepi8_epi32(_mm_loadl_epi64(values.add(8).cast())),
                _mm256_cvtepi8_epi32(_mm_loadl_epi64(values.add(16).cast())),
                _mm256_cvtepi8_epi32(_mm_loadl_epi64(values.add(24).cast())),
            ],
            QuantFormat::Q4_0 | QuantFormat::Q4_1 => {
                let bytes = unpack_nibbles(values);
                let low = _mm256_castsi256_si128(bytes);
                let high = _mm256_extracti128_si256::<1>(bytes);
                [
                    _mm256_cvtepu8_epi32(low),
                    _mm256_cvtepu8_epi32(_mm_srli_si128::<8>(low)),
                    _mm256_cvtepu8_epi32(high),
                    _mm256_cvtepu8_epi32(_mm_srli_si128::<8>(high)),
                ]
            }
            QuantFormat::F16 => return widen_halves(values),
        };
        integers.map(|integers| _mm256_cvtepi32_ps(integers))
    }
}

/// The sum of a vector's eight lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn horizontal_sum(vector: __m256) -> f32 {
    let quad = _mm_add_ps(
        _mm256_castps256_ps128(vector),
        _mm256_extractf128_ps::<1>(vector),
    );
    let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
    _mm_cvtss_f32(_mm_add_ss(pair, _mm_movehdup_ps(pair)))
}

/// `row . x` in the exact mode: `sum over blocks of d * (q . x) + m * sum(x)`.
///
/// # Safety
/// The processor has AVX2, FMA and F16C; `row` holds `sums.len()` whole blocks of `format` and
/// `x` at least `sums.len() * BLOCK_LENGTH` values.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn exact_dot(format: QuantFormat, row: &[u8], x: &[f32], sums: &[f32]) -> f32 {
    // SAFETY: Passed on from the caller.
    unsafe {
        match format {
            QuantFormat::Q8_0 => exact_dot_of::<Q8_0>(row, x, sums),
            QuantFormat::Q4_0 => exact_dot_of::<Q4_0>(row, x, sums),
            QuantFormat::Q4_1 => exact_dot_of::<Q4_1>(row, x, sums),
            QuantFormat::F16 => exact_dot_of::<F16>(row, x, sums),
        }
    }
}

/// [`exact_dot`] for one format: even and odd blocks in two accumulators (one chain of
/// additions per block would wait on the previous block's, four cycles of FMA latency, longer
/// than a block's work), summed at the end.
///
/// # Safety
/// As for [`exact_dot`], with `row` in `FORMAT`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn exact_dot_of<const FORMAT: u8>(row: &[u8], x: &[f32], sums: &[f32]) -> f32 {
    let format = format_of(FORMAT);
    let blocks = sums.len();
    let block_bytes = format.block_bytes();
    assert!(
        row.len() >= blocks * block_bytes && x.len() >= blocks * BLOCK_LENGTH,
        "exact_dot: the row or the activations are shorter than their blocks"
    );
    // Block `index`'s products with its activations, its `d` and its offset term.
    let block = |index: usize| {
        // SAFETY: Block `index < blocks` lies inside `row`, its values inside `x` and `index`
        // indexes `sums` (checked above); every read below stays inside them.
        unsafe {
            let block = row.as_ptr().add(index * block_bytes);
            let x = x.as_ptr().add(index * BLOCK_LENGTH);
            let (start, d, m) = header(format, block);
            let [first, second, third, fourth] = widen_block(format, block.add(start));
            let mut products = _mm256_mul_ps(first, _mm256_loadu_ps(x));
            products = _mm256_fmadd_ps(second, _mm256_loadu_ps(x.add(8)), products);
            products = _mm256_fmadd_ps(third, _mm256_loadu_ps(x.add(16)), products);
            products = _mm256_fmadd_ps(fourth, _mm256_loadu_ps(x.add(24)), products);
            (products, d, m * *sums.get_unchecked(index))
        }
    };
    let (mut even, mut odd) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let (mut even_offset, mut odd_offset) = (0.0f32, 0.0f32);
    let mut index = 0;
    while index + 2 <= blocks {
        let (products, d, offset) = block(index);
        even = _mm256_fmadd_ps(products, _mm256_set1_ps(d), even);
        even_offset += offset;
        let (products, d, offset) = block(index + 1);
        odd = _mm256_fmadd_ps(products, _mm256_set1_ps(d), odd);
        odd_offset += offset;
        index += 2;
    }
    if index < blocks {
        let (products, d, offset) = block(index);
        even = _mm256_fmadd_ps(products, _mm256_set1_ps(d), even);
        even_offset += offset;
    }
    horizontal_sum(_mm256_add_ps(even, odd)) + (even_offset + odd_offset)
}

/// `row . x[i]` in the exact mode for four f32 input rows at once (`sums[i]` their block
/// sums), each weight block widened to f32 once for the four.
///
/// # Safety
/// As for [`exact_dot`], for each of the four rows of `x` and `sums`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn exact_dot4(
    format: QuantFormat,
    row: &[u8],
    x: [&[f32]; 4],
    sums: [&[f32]; 4],
) -> [f32; 4] {
    // SAFETY: Passed on from the caller.
    unsafe {
        match format {
            QuantFormat::Q8_0 => exact_dot4_of::<Q8_0>(row, x, sums),
            QuantFormat::Q4_0 => exact_dot4_of::<Q4_0>(row, x, sums),
            QuantFormat::Q4_1 => exact_dot4_of::<Q4_1>(row, x, sums),
            QuantFormat::F16 => exact_dot4_of::<F16>(row, x, sums),
        }
    }
}

/// [`exact_dot4`] for one format.
///
/// # Safety
/// As for [`exact_dot4`], with `row` in `FORMAT`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn exact_dot4_of<const FORMAT: u8>(
    row: &[u8],
    x: [&[f32]; 4],
    sums: [&[f32]; 4],
) -> [f32; 4] {
    let format = format_of(FORMAT);
    let blocks = sums[0].len();
    let block_bytes = format.block_bytes();
    assert!(
        row.len() >= blocks * block_bytes
            && x.iter().all(|x| x.len() >= blocks * BLOCK_LENGTH)
            && sums.iter().all(|sums| sums.len() >= blocks),
        "exact_dot4: the row or the activations are shorter than their blocks"
    );
    let mut scaled = [_mm256_setzero_ps(); 4];
    let mut offsets = [0.0f32; 4];
    for index in 0..blocks {
        // SAFETY: Block `index < blocks` lies inside `row`, its values inside every `x[i]`,
        // and `index` indexes every `sums[i]` (checked above).
        unsafe {
            let block = row.as_ptr().add(index * block_bytes);
            let (start, d, m) = header(format, block);
            let [first, second, third, fourth] = widen_block(format, block.add(start));
            for input in 0..4 {
                let x = x[input].as_ptr().add(index * BLOCK_LENGTH);
                let mut products = _mm256_mul_ps(first, _mm256_loadu_ps(x));
                products = _mm256_fmadd_ps(second, _mm256_loadu_ps(x.add(8)), products);
                products = _mm256_fmadd_ps(third, _mm256_loadu_ps(x.add(16)), products);
                products = _mm256_fmadd_ps(fourth, _mm256_loadu_ps(x.add(24)), products);
                scaled[input] = _mm256_fmadd_ps(products, _mm256_set1_ps(d), scaled[input]);
                offsets[input] += m * *sums[input].get_unchecked(index);
            }
        }
    }
    std::array::from_fn(|input| horizontal_sum(scaled[input]) + offsets[input])
}

/// `row . x` in the fast mode: `sum over blocks of d * d_x * (q . q_x) + m * sum_x`.
///
/// # Safety
/// The processor has AVX2, FMA and F16C; `row` holds `x.scales.len()` whole blocks of
/// `format`, and `x.quants` and `x.sums` as many blocks.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn fast_dot(format: QuantFormat, row: &[u8], x: ActivationRow<'_>) -> f32 {
    // SAFETY: Passed on from the caller.
    unsafe {
        match format {
            QuantFormat::Q8_0 => fast_dot_of::<Q8_0>(row, x),
            QuantFormat::Q4_0 => fast_dot_of::<Q4_0>(row, x),
            QuantFormat::Q4_1 => fast_dot_of::<Q4_1>(row, x),
            // Float weights have no integer product: the portable kernel's float one.
            QuantFormat::F16 => super::rows::fast_dot(format, row, x),
        }
    }
}

/// One block's part of a fast-mode product: its integer products with the block's quantized
/// `activations` as eight partial sums in f32, the scale they take (`d * scale`, `scale` the
/// activations' scale) and the offset term (`m * sum`, `sum` the activations' block sum).
///
/// # Safety
/// The processor has AVX2, FMA and F16C, and `block` points at a whole block of `FORMAT`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fast_block<const FORMAT: u8>(
    block: *const u8,
    activations: __m256i,
    scale: f32,
    sum: f32,
) -> (__m256, f32, f32) {
    // SAFETY: `block` is a whole block (the caller's contract): its header, then its values.
    unsafe {
        let (start, d, m) = header(format_of(FORMAT), block);
        let values = block.add(start);
        let pairs = if FORMAT == Q8_0 {
            // `vpmaddubsw` needs one unsigned operand: |w| times x with w's sign.
            let weights = _mm256_loadu_si256(values.cast());
            _mm256_maddubs_epi16(
                _mm256_sign_epi8(weights, weights),
                _mm256_sign_epi8(activations, weights),
            )
        } else {
            _mm256_maddubs_epi16(unpack_nibbles(values), activations)
        };
        let products = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
        (products, d * scale, m * sum)
    }
}

/// [`fast_dot`] for one integer format: even and odd blocks in two accumulators (one chain of
/// additions would wait on the previous block's), summed at the end.
///
/// # Safety
/// As for [`fast_dot`], with `row` in `FORMAT`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fast_dot_of<const FORMAT: u8>(row: &[u8], x: ActivationRow<'_>) -> f32 {
    let blocks = x.scales.len();
    let block_bytes = format_of(FORMAT).block_bytes();
    assert!(
        row.len() >= blocks * block_bytes
            && x.quants.len() >= blocks * BLOCK_LENGTH
            && x.sums.len() >= blocks,
        "fast_dot: the row or the activations are shorter than their blocks"
    );
    // Block `index`'s part; `index < blocks`, inside `row` and `x` (checked above).
    let block = |index: usize| {
        // SAFETY: Block `index < blocks` lies inside `row`, its 32 quantized activations inside
        // `x.quants`, and `index` indexes `x.scales` and `x.sums` (checked above).
        unsafe {
            let activations =
                _mm256_loadu_si256(x.quants.as_ptr().add(index * BLOCK_LENGTH).cast());
            fast_block::<FORMAT>(
                row.as_ptr().add(index * block_bytes),
                activations,
                *x.scales.get_unchecked(index),
                *x.sums.get_unchecked(index),
            )
        }
    };
    let (mut even, mut odd) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let (mut even_offset, mut odd_offset) = (0.0f32, 0.0f32);
    let mut index = 0;
    while index + 2 <= blocks {
        let (products, scale, offset) = block(index);
        even = _mm256_fmadd_ps(products, _mm256_set1_ps(scale), even);
        even_offset += offset;
        let (products, scale, offset) = block(index + 1);
        odd = _mm256_fmadd_ps(products, _mm256_set1_ps(scale), odd);
        odd_offset += offset;
        index += 2;
    }
    if index < blocks {
        let (products, scale, offset) = block(index);
        even = _mm256_fmadd_ps(products, _mm256_set1_ps(scale), even);
        even_offset += offset;
    }
    horizontal_sum(_mm256_add_ps(even, odd)) + (even_offset + odd_offset)
}

/// Whether the processor has what [`fast_dot_vnni`] needs besides `available()`'s: AVX512F, BW
/// and VNNI.
pub(super) fn vnni_available() -> bool {
    available()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni")
}

/// [`fast_dot`] two blocks at a time with AVX512-VNNI: the pair's 64 weights in one register,
/// each block's in its own 256-bit half (a Q4 block's low nibbles, values 0..16, then its high
/// ones, 16..32: the activations' order), summed with one `vpdpbusd` against the activations;
/// the sums are scaled by `d * x.scale` of their block and added into one f32 accumulator. The
/// two blocks' `d` and `m` are widened together, and multiplied by their activation scales and
/// block sums together. An odd last block goes through [`fast_dot`].
///
/// `vpdpbusd` multiplies unsigned by signed bytes: Q4 values are unsigned nibbles, and Q8_0's
/// signed weights give their absolute values and their signs to the activations, as in
/// `fast_dot` (an activation is at most 127 in size, so negating it cannot overflow).
///
/// # Safety
/// As for [`fast_dot`], and the processor has AVX512F, BW and VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn fast_dot_vnni(format: QuantFormat, row: &[u8], x: ActivationRow<'_>) -> f32 {
    let blocks = x.scales.len();
    let block_bytes = format.block_bytes();
    let (start, has_min) = match format {
        QuantFormat::Q8_0 => (2, false),
        QuantFormat::Q4_0 => (2, false),
        QuantFormat::Q4_1 => (4, true),
        // SAFETY: Passed on from the caller.
        QuantFormat::F16 => return unsafe { fast_dot(format, row, x) },
    };
    assert!(
        row.len() >= blocks * block_bytes
            && x.quants.len() >= blocks * BLOCK_LENGTH
            && x.sums.len() >= blocks,
        "fast_dot_vnni: the row or the activations are shorter than their blocks"
    );
    let mask = _mm256_set1_epi8(0x0F);
    // Lanes 0..8 take the first block's scale (lane 0 of the products below), 8..16 the
    // second's (lane 2).
    let spread = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2);
    let mut scaled = _mm512_setzero_ps();
    // Lanes 1 and 3 gather `m * sum` of the first and second blocks of each pair.
    let mut offsets = _mm_setzero_ps();
    let pairs = blocks / 2;
    for pair in 0..pairs {
        let index = 2 * pair;
        // SAFETY: Blocks `index` and `index + 1 < blocks` lie inside `row` (checked above),
        // their activations inside `x.quants` and their scales and sums inside `x.scales` and
        // `x.sums`; every load below reads inside them.
        unsafe {
            let first = row.as_ptr().add(index * block_bytes);
            let second = first.add(block_bytes);
            let activations =
                _mm512_loadu_si512(x.quants.as_ptr().add(index * BLOCK_LENGTH).cast());
            let (weights, activations) = match format {
                QuantFormat::Q8_0 => {
                    let weights = _mm512_inserti64x4::<1>(
                        _mm512_castsi256_si512(_mm256_loadu_si256(first.add(start).cast())),
                        _mm256_loadu_si256(second.add(start).cast()),
                    );
                    let negative = _mm512_movepi8_mask(weights);
                    (
                        _mm512_abs_epi8(weights),
                        _mm512_mask_sub_epi8(
                            activations,
                            negative,
                            _mm512_setzero_si512(),
                            activations,
                        ),
                    )
                }
                _ => {
                    let packed = _mm256_inserti128_si256::<1>(
                        _mm256_castsi128_si256(_mm_loadu_si128(first.add(start).cast())),
                        _mm_loadu_si128(second.add(start).cast()),
                    );
                    let low = _mm256_and_si256(packed, mask);
                    let high = _mm256_and_si256(_mm256_srli_epi16::<4>(packed), mask);
                    // [first low, second low, first high, second high] in 128-bit lanes, then
                    // [first low, first high, second low, second high].
                    let lanes = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(low), high);
                    (
                        _mm512_shuffle_i64x2::<0b11_01_10_00>(lanes, lanes),
                        activations,
                    )
                }
            };
            let sums = _mm512_dpbusd_epi32(_mm512_setzero_si512(), weights, activations);
            // [d, m, d', m'] as halves (Q4_0 and Q8_0 have no m: its lanes are unused).
            let first_header = first.cast::<i32>().read_unaligned();
            let second_header = second.cast::<i32>().read_unaligned();
            let halves = _mm_insert_epi32::<1>(_mm_cvtsi32_si128(first_header), second_header);
            let header = _mm_cvtph_ps(halves);
            let header = if has_min {
                header
            } else {
                // [d, -8 d or 0, d', -8 d' or 0].
                let d = _mm_shuffle_ps::<0b10_10_00_00>(header, header);
                let factor = if format == QuantFormat::Q4_0 {
                    -8.0
                } else {
                    0.0
                };
                _mm_mul_ps(d, _mm_setr_ps(1.0, factor, 1.0, factor))
            };
            let scales = _mm_castpd_ps(_mm_load_sd(x.scales.as_ptr().add(index).cast()));
            let block_sums = _mm_castpd_ps(_mm_load_sd(x.sums.as_ptr().add(index).cast()));
            // [d x.scale, m x.sum, d' x.scale', m' x.sum'].
            let products = _mm_mul_ps(header, _mm_unpacklo_ps(scales, block_sums));
            offsets = _mm_add_ps(offsets, products);
            let block_scales = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(products));
            scaled = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), block_scales, scaled);
        }
    }
    let offsets = _mm_cvtss_f32(_mm_shuffle_ps::<1>(offsets, offsets))
        + _mm_cvtss_f32(_mm_shuffle_ps::<3>(offsets, offsets));
    let mut total = _mm512_reduce_add_ps(scaled) + offsets;
    if blocks % 2 == 1 {
        let last = blocks - 1;
        let tail = ActivationRow {
            quants: &x.quants[last * BLOCK_LENGTH..],
            scales: &x.scales[last..],
            sums: &x.sums[last..],
        };
        // SAFETY: Passed on from the caller, for the row's last block.
        total += unsafe { fast_dot(format, &row[last * block_bytes..], tail) };
    }
    total
}

/// Writes the values of the whole blocks of `row` into `output`, as `blocks::dequantize_row`
/// does, in one loop for the format: a call and a match per block took a third of the time of
/// the tiles that multiply the values (`rows::multiply_exact_tiled`).
///
/// # Safety
/// The processor has AVX2, FMA and F16C; `row` holds whole blocks of `format` and `output` at
/// least `BLOCK_LENGTH` values per block.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dequantize_row(format: QuantFormat, row: &[u8], output: &mut [f32]) {
    // SAFETY: Passed on from the caller.
    unsafe {
        match format {
            QuantFormat::Q8_0 => dequantize_row_of::<Q8_0>(row, output),
            QuantFormat::Q4_0 => dequantize_row_of::<Q4_0>(row, output),
            QuantFormat::Q4_1 => dequantize_row_of::<Q4_1>(row, output),
            QuantFormat::F16 => dequantize_row_of::<F16>(row, output),
        }
    }
}

/// [`dequantize_row`] for one format.
///
/// # Safety
/// As for [`dequantize_row`], with `row` in `FORMAT`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dequantize_row_of<const FORMAT: u8>(row: &[u8], output: &mut [f32]) {
    let format = format_of(FORMAT);
    let block_bytes = format.block_bytes();
    let blocks = row.len() / block_bytes;
    debug_assert!(output.len() >= blocks * BLOCK_LENGTH);
    // SAFETY: Block `b` is `row[b * block_bytes..][..block_bytes]`, inside `row`, and its values
    // go to `output[b * BLOCK_LENGTH..][..BLOCK_LENGTH]`, inside `output` (the contract).
    unsafe {
        for b in 0..blocks {
            let block = row.as_ptr().add(b * block_bytes);
            let (start, d, m) = header(format, block);
            let stored = widen_block(format, block.add(start));
            let (scale, offset) = (_mm256_set1_ps(d), _mm256_set1_ps(m));
            let destination = output.as_mut_ptr().add(b * BLOCK_LENGTH);
            for (index, stored) in stored.into_iter().enumerate() {
                _mm256_storeu_ps(
                    destination.add(index * 8),
                    _mm256_fmadd_ps(stored, scale, offset),
                );
            }
        }
    }
}

/// `row . x[i]` for four quantized input rows at once, each weight block unpacked once.
///
/// # Safety
/// As for `fast_dot`, for each of the four rows of `x`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn fast_dot4(
    format: QuantFormat,
    row: &[u8],
    x: [ActivationRow<'_>; 4],
) -> [f32; 4] {
    // SAFETY: Passed on from the caller.
    unsafe {
        match format {
            QuantFormat::Q8_0 => fast_dot4_of::<Q8_0>(row, x),
            QuantFormat::Q4_0 => fast_dot4_of::<Q4_0>(row, x),
            QuantFormat::Q4_1 => fast_dot4_of::<Q4_1>(row, x),
            // Float weights have no integer product: the portable kernel's float one.
            QuantFormat::F16 => x.map(|x| super::rows::fast_dot(format, row, x)),
        }
    }
}

/// [`fast_dot4`] for one integer format.
///
/// # Safety
/// As for [`fast_dot4`], with `row` in `FORMAT`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fast_dot4_of<const FORMAT: u8>(row: &[u8], x: [ActivationRow<'_>; 4]) -> [f32; 4] {
    let blocks = x[0].scales.len();
    let block_bytes = format_of(FORMAT).block_bytes();
    assert!(
        row.len() >= blocks * block_bytes
            && x.iter().all(|x| x.quants.len() >= blocks * BLOCK_LENGTH
                && x.scales.len() >= blocks
                && x.sums.len() >= blocks),
        "fast_dot4: the row or the activations are shorter than their blocks"
    );
    let ones = _mm256_set1_epi16(1);
    let mut scaled = [_mm256_setzero_ps(); 4];
    let mut offsets = [0.0f32; 4];
    for index in 0..blocks {
        // SAFETY: Block `index < blocks` lies inside `row`, and its quantized activations inside
        // each `x[i].quants`; `index` indexes every `scales`, `sums` (checked above).
        unsafe {
            let block = row.as_ptr().add(index * block_bytes);
            let (start, d, m) = header(format_of(FORMAT), block);
            let values = block.add(start);
            let (weights, signs) = if FORMAT == Q8_0 {
                let weights = _mm256_loadu_si256(values.cast());
                (_mm256_sign_epi8(weights, weights), weights)
            } else {
                (unpack_nibbles(values), _mm256_setzero_si256())
            };
            for (input, x) in x.iter().enumerate() {
                let mut activations =
                    _mm256_loadu_si256(x.quants.as_ptr().add(index * BLOCK_LENGTH).cast());
                if FORMAT == Q8_0 {
                    activations = _mm256_sign_epi8(activations, signs);
                }
                let pairs = _mm256_maddubs_epi16(weights, activations);
                let products = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, ones));
                let scale = d * *x.scales.get_unchecked(index);
                scaled[input] = _mm256_fmadd_ps(products, _mm256_set1_ps(scale), scaled[input]);
                offsets[input] += m * *x.sums.get_unchecked(index);
            }
        }
    }
    std::array::from_fn(|input| horizontal_sum(scaled[input]) + offsets[input])
}
