//! The row kernels: each weight row multiplied by every input row while it is in L1, the
//! weight rows cut among the threads. Portable versions here; AVX2 ones (and an AVX512-VNNI
//! one-row fast product) in `x86_64.rs`.

use super::QuantizedMatrix;
use super::blocks::{BLOCK_LENGTH, QuantFormat, read_f16};
use crate::kernels::gemm::{GemmKernels, MR, NR, StripOutput, TileEpilogue};
use crate::threading;

/// Weight bytes from which a call is split across threads. Streaming 256 KiB from memory takes
/// tens of microseconds, several times what waking the pool costs (the GEMM uses the same bound).
const PARALLEL_MIN_BYTES: usize = 1 << 18;

/// Which implementation of the block products runs, chosen once per call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RowKernels {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX2's kernels, but one-row fast-mode products with AVX512-VNNI (two blocks a step).
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
}

impl RowKernels {
    /// The fastest the processor supports.
    pub(super) fn detected() -> Self {
        #[cfg(target_arch = "x86_64")]
        if super::x86_64::vnni_available() {
            return RowKernels::Avx512Vnni;
        }
        #[cfg(target_arch = "x86_64")]
        if super::x86_64::available() {
            return RowKernels::Avx2;
        }
        RowKernels::Portable
    }

    /// `row . x` for a weight row and an f32 input row; `sums` are `x`'s block sums.
    #[inline]
    fn exact_dot(self, format: QuantFormat, row: &[u8], x: &[f32], sums: &[f32]) -> f32 {
        match self {
            RowKernels::Portable => exact_dot(format, row, x, sums),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx2` and `Avx512Vnni` are only chosen when `x86_64::available()` found
            // AVX2, FMA and F16C;
            // `row` holds `sums.len()` blocks and `x` as many blocks of values (the callers
            // slice all three from one layer's shapes).
            RowKernels::Avx2 | RowKernels::Avx512Vnni => unsafe {
                super::x86_64::exact_dot(format, row, x, sums)
            },
        }
    }

    /// Writes the values of the whole weight row `row` into `output` (`BLOCK_LENGTH` values per
    /// block).
    pub(super) fn dequantize_row(self, format: QuantFormat, row: &[u8], output: &mut [f32]) {
        let blocks = row.len() / format.block_bytes();
        assert!(
            row.len() == blocks * format.block_bytes() && output.len() >= blocks * BLOCK_LENGTH
        );
        match self {
            RowKernels::Portable => super::blocks::dequantize_row(format, row, output),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx2` and `Avx512Vnni` are only chosen when the processor has AVX2, FMA
            // and F16C; `row` is whole blocks and `output` holds their values (checked above).
            RowKernels::Avx2 | RowKernels::Avx512Vnni => unsafe {
                super::x86_64::dequantize_row(format, row, output)
            },
        }
    }

    /// `row . x` for a weight row and a quantized input row.
    #[inline]
    fn fast_dot(self, format: QuantFormat, row: &[u8], x: ActivationRow<'_>) -> f32 {
        match self {
            RowKernels::Portable => fast_dot(format, row, x),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as for `exact_dot`; `x` holds as many blocks as `row`.
            RowKernels::Avx2 => unsafe { super::x86_64::fast_dot(format, row, x) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx512Vnni` is only chosen when `x86_64::vnni_available()` found AVX2,
            // FMA, F16C and AVX512F, BW and VNNI; `x` holds as many blocks as `row`.
            RowKernels::Avx512Vnni => unsafe { super::x86_64::fast_dot_vnni(format, row, x) },
        }
    }
}

impl RowKernels {
    /// `row . x[i]` in the exact mode for every f32 input row `i` of `input` (`cols` values each,
    /// `sums` their block sums) into `outputs[i]`: four rows at a time where the kernel can
    /// share each weight block's widening among them.
    fn exact_dots(
        self,
        format: QuantFormat,
        row: &[u8],
        (input, cols): (&[f32], usize),
        sums: &[f32],
        outputs: &mut [f32],
    ) {
        let blocks = cols / BLOCK_LENGTH;
        let x = |index: usize| &input[index * cols..][..cols];
        let sums_of = |index: usize| &sums[index * blocks..][..blocks];
        let mut first = 0;
        #[cfg(target_arch = "x86_64")]
        if matches!(self, RowKernels::Avx2 | RowKernels::Avx512Vnni) {
            while first + 4 <= outputs.len() {
                // SAFETY: `Avx2` and `Avx512Vnni` are only chosen when the processor has AVX2,
                // FMA and F16C; each input row holds as many blocks as `row` (both have the
                // layer's input length), and its sums one per block.
                let dots = unsafe {
                    super::x86_64::exact_dot4(
                        format,
                        row,
                        std::array::from_fn(|offset| x(first + offset)),
                        std::array::from_fn(|offset| sums_of(first + offset)),
                    )
                };
                outputs[first..first + 4].copy_from_slice(&dots);
                first += 4;
            }
        }
        for (index, output) in outputs.iter_mut().enumerate().skip(first) {
            *output = self.exact_dot(format, row, x(index), sums_of(index));
        }
    }

    /// `row . x[i]` for every quantized input row `i` into `outputs[i]`: four rows at a time
    /// where the kernel can share each weight block's unpacking among them.
    fn fast_dots(
        self,
        format: QuantFormat,
        row: &[u8],
        input: &ActivationBlocks,
        outputs: &mut [f32],
    ) {
        let mut first = 0;
        #[cfg(target_arch = "x86_64")]
        if matches!(self, RowKernels::Avx2 | RowKernels::Avx512Vnni) {
            while first + 4 <= outputs.len() {
                let x = std::array::from_fn(|offset| input.row(first + offset));
                // SAFETY: `Avx2` and `Avx512Vnni` are only chosen when the processor has AVX2,
                // FMA and F16C; each
                // input row holds as many blocks as `row` (both have the layer's input length).
                let dots = unsafe { super::x86_64::fast_dot4(format, row, x) };
                outputs[first..first + 4].copy_from_slice(&dots);
                first += 4;
            }
        }
        for (index, output) in outputs.iter_mut().enumerate().skip(first) {
            *output = self.fast_dot(format, row, input.row(index));
        }
    }
}

/// The sum of each block of `BLOCK_LENGTH` values of `input` (rows of whole blocks).
pub(super) fn block_sums(input: &[f32]) -> Vec<f32> {
    input
        .chunks_exact(BLOCK_LENGTH)
        .map(|block| block.iter().sum())
        .collect()
}

/// Rows of activations quantized for the fast mode: per block of 32 values a scale `d`, the
/// values `round(x / d)` in `i8` (`d = max |x| / 127`), and `d * sum(q)`, the block's sum as
/// the integer products see it.
#[derive(Debug)]
pub(super) struct ActivationBlocks {
    pub(super) quants: Vec<i8>,
    pub(super) scales: Vec<f32>,
    pub(super) sums: Vec<f32>,
    cols: usize,
}

/// `x.round() as i8` (halves away from zero, saturating, NaN to 0) in operations that LLVM
/// vectorises: `f32::round` is a call to `roundf` per value, which took as long as the rest of
/// the quantization of a decoding step's activations. `|x|` plus the largest float below a
/// half, truncated, is `|x|` rounded half away from zero (a half rounds up to the next integer
/// in the addition; anything less stays below it); the same as `round` for every float (checked
/// exhaustively up to 512, and by `round_to_i8_is_round` on halves and their neighbours).
#[inline]
pub(super) fn round_to_i8(x: f32) -> i8 {
    const BELOW_HALF: f32 = f32::from_bits(0x3EFF_FFFF);
    let magnitude = (x.abs() + BELOW_HALF) as i32;
    let rounded = if x < 0.0 { -magnitude } else { magnitude };
    rounded.clamp(i32::from(i8::MIN), i32::from(i8::MAX)) as i8
}

/// A block's scale `d = max |x| / 127` (NaN if a value is not finite) and the factor `1 / d` (0
/// for a block of zeros) that takes its values to their 8-bit codes.
///
/// Eight lanes of maxima, and eight of `x * 0` (0, or NaN for a value that is not finite), so
/// that LLVM vectorises both: one running maximum over the block is a chain of 32 dependent
/// `max` operations, and a search for a non-finite value that stops at the first one is not
/// vectorised at all.
#[inline]
fn block_scale(values: &[f32]) -> (f32, f32) {
    const LANES: usize = 8;
    const { assert!(BLOCK_LENGTH.is_multiple_of(LANES)) };
    let mut maxima = [0.0f32; LANES];
    let mut probes = [0.0f32; LANES];
    for chunk in values.chunks_exact(LANES) {
        for lane in 0..LANES {
            maxima[lane] = maxima[lane].max(chunk[lane].abs());
            probes[lane] += chunk[lane] * 0.0;
        }
    }
    let amax = if probes.iter().all(|&probe| probe == 0.0) {
        maxima.into_iter().fold(0.0f32, f32::max)
    } else {
        f32::NAN
    };
    let d = amax / 127.0;
    let inverse = if d == 0.0 { 0.0 } else { 1.0 / d };
    (d, inverse)
}

/// One row of [`ActivationBlocks`].
#[derive(Clone, Copy, Debug)]
pub(super) struct ActivationRow<'a> {
    pub(super) quants: &'a [i8],
    pub(super) scales: &'a [f32],
    pub(super) sums: &'a [f32],
}

impl ActivationBlocks {
    /// Quantizes `rows` rows of `cols` values (`cols` a whole number of blocks). A non-finite
    /// value makes its block's scale non-finite, so the outputs it feeds are NaN or infinite
    /// as in the f32 layer, never silently finite.
    pub(super) fn quantize(input: &[f32], rows: usize, cols: usize) -> Self {
        let blocks = rows * (cols / BLOCK_LENGTH);
        let mut quants = vec![0i8; rows * cols];
        let mut scales = Vec::with_capacity(blocks);
        let mut sums = Vec::with_capacity(blocks);
        for (values, quants) in input
            .chunks_exact(BLOCK_LENGTH)
            .zip(quants.chunks_exact_mut(BLOCK_LENGTH))
        {
            let (d, inverse) = block_scale(values);
            let mut sum = 0i32;
            for (q, &value) in quants.iter_mut().zip(values) {
                // |value * inverse| <= 127; NaN converts to 0 (the scale carries the NaN).
                *q = round_to_i8(value * inverse);
                sum += i32::from(*q);
            }
            scales.push(d);
            sums.push(d * sum as f32);
        }
        Self {
            quants,
            scales,
            sums,
            cols,
        }
    }

    /// The values that `quantize(input, ..).dequantize()` gives, without the blocks: each value
    /// rounded to its block's 8-bit grid, `round(x / d) * d`.
    pub(super) fn rounded(input: &[f32]) -> Vec<f32> {
        let mut output = vec![0.0f32; input.len()];
        for (values, output) in input
            .chunks_exact(BLOCK_LENGTH)
            .zip(output.chunks_exact_mut(BLOCK_LENGTH))
        {
            let (d, inverse) = block_scale(values);
            for (output, &value) in output.iter_mut().zip(values) {
                *output = f32::from(round_to_i8(value * inverse)) * d;
            }
        }
        output
    }

    /// The values the quantized activations stand for, row-major: `q * d`.
    #[cfg(test)]
    pub(super) fn dequantize(&self) -> Vec<f32> {
        self.quants
            .chunks_exact(BLOCK_LENGTH)
            .zip(&self.scales)
            .flat_map(|(quants, &scale)| quants.iter().map(move |&q| f32::from(q) * scale))
            .collect()
    }

    fn row(&self, index: usize) -> ActivationRow<'_> {
        let blocks = self.cols / BLOCK_LENGTH;
        ActivationRow {
            quants: &self.quants[index * self.cols..][..self.cols],
            scales: &self.scales[index * blocks..][..blocks],
            sums: &self.sums[index * blocks..][..blocks],
        }
    }
}

/// `output[i, r] = weight[r] . input[i]` in the exact mode for `rows` input rows.
pub(super) fn multiply_exact(
    kernels: &RowKernels,
    weight: &QuantizedMatrix,
    input: &[f32],
    sums: &[f32],
    rows: usize,
    output: &mut [f32],
) {
    let cols = weight.cols;
    let blocks = cols / BLOCK_LENGTH;
    if rows == 1 {
        // A decoding step: the input row's slices taken once, not once per weight row.
        let (x, sums) = (&input[..cols], &sums[..blocks]);
        multiply(weight, rows, output, |weight_row, outputs| {
            outputs[0] = kernels.exact_dot(weight.format, weight_row, x, sums)
        });
    } else {
        multiply(weight, rows, output, |weight_row, outputs| {
            kernels.exact_dots(weight.format, weight_row, (input, cols), sums, outputs)
        });
    }
}

/// `output[i, r] = weight[r] . input[i]` in the fast mode for `rows` quantized input rows.
pub(super) fn multiply_fast(
    kernels: &RowKernels,
    weight: &QuantizedMatrix,
    input: &ActivationBlocks,
    rows: usize,
    output: &mut [f32],
) {
    if rows == 1 {
        // A decoding step: the input row's slices taken once, not once per weight row.
        let x = input.row(0);
        multiply(weight, rows, output, |weight_row, outputs| {
            outputs[0] = kernels.fast_dot(weight.format, weight_row, x)
        });
    } else {
        multiply(weight, rows, output, |weight_row, outputs| {
            kernels.fast_dots(weight.format, weight_row, input, outputs)
        });
    }
}

/// `output[i, r] = weight[r] . input[i]` for `rows` f32 input rows (a prompt's chunk: the exact
/// mode's, or the fast mode's rounded activations), on the f32 GEMM's micro-kernel: the input rows, transposed once into panels of `NR`
/// rows, are B, and each group of `MR` weight rows, dequantized into a row-major scratch of f32,
/// is A, read in place; the tiles are `MR` weight rows by up to `NR` input rows of the
/// transposed output. The weights are read once per call and dequantized with contiguous stores,
/// where packing them as B panels scattered each value `NR` floats from the last.
pub(super) fn multiply_exact_tiled(
    kernels: &RowKernels,
    weight: &QuantizedMatrix,
    input: &[f32],
    rows: usize,
    output: &mut [f32],
) {
    let cols = weight.cols;
    let gemm = GemmKernels::detected();
    let panels = rows.div_ceil(NR);
    let mut packed = vec![0.0f32; panels * cols * NR];
    for (panel_index, panel) in packed.chunks_exact_mut(cols * NR).enumerate() {
        let first = panel_index * NR;
        for lane in 0..NR.min(rows - first) {
            let x = &input[(first + lane) * cols..][..cols];
            for (step, &value) in panel.chunks_exact_mut(NR).zip(x) {
                step[lane] = value;
            }
        }
    }
    multiply_transposed(weight, rows, MR, output, |first_row, chunk| {
        let weight_rows = chunk.len() / rows;
        let mut dequantized = vec![0.0f32; MR * cols];
        for group in (0..weight_rows).step_by(MR) {
            let count = MR.min(weight_rows - group);
            for (offset, values) in dequantized.chunks_exact_mut(cols).take(count).enumerate() {
                let row = weight.row(first_row + group + offset);
                prefetch_ahead(row);
                kernels.dequantize_row(weight.format, row, values);
            }
            let c = &mut chunk[group * rows..][..count * rows];
            for panel_index in 0..panels {
                // The tile's panel and the ones after it, which a full tile fetches ahead.
                let panel = &packed[panel_index * cols * NR..];
                let first = panel_index * NR;
                let tile = StripOutput {
                    c: c[first..].as_mut_ptr(),
                    c_row_stride: rows,
                    rows: count,
                    cols: NR.min(rows - first),
                    accumulate: false,
                    epilogue: TileEpilogue::default(),
                };
                assert!(
                    dequantized.len() >= (count - 1) * cols + cols
                        && panel.len() >= cols * NR
                        && c.len() >= first + (count - 1) * rows + tile.cols,
                    "multiply_exact_tiled: a tile or operand is out of bounds"
                );
                // SAFETY: The kernel is the one this processor runs (`GemmKernels::detected`);
                // A's `count` rows of `cols` values, the panel's `cols * NR` values and the
                // tile's `count` rows of `tile.cols <= NR` values, `rows` apart, lie inside
                // their slices (checked just above); the epilogue reads nothing, and `c` is
                // borrowed mutably, so nothing else touches the tile.
                unsafe { (gemm.row_major_a)(cols, &dequantized, cols, panel, &tile) };
            }
        }
    });
}

/// How far ahead of the row being multiplied a one-row product prefetches the weight, in bytes.
/// The row kernels read a row faster than the hardware's prefetcher brings the next ones in from
/// memory (on a 2-vCPU Sapphire Rapids, SmolLM2's Q4_1 decode stalled on the weights' loads).
const PREFETCH_AHEAD_BYTES: usize = 4096;

/// Prefetches the cache lines `PREFETCH_AHEAD_BYTES` past each line of `row` (the rows that
/// follow it in the matrix). A prefetch never faults, so the addresses may run past the matrix.
fn prefetch_ahead(row: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in (0..row.len()).step_by(64) {
        crate::kernels::gemm::prefetch(row.as_ptr().wrapping_add(PREFETCH_AHEAD_BYTES + line));
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = row;
}

/// Runs `dots(weight_row_bytes, outputs)`, which writes `weight_row . input[i]` into
/// `outputs[i]` for every input row, for every weight row, into the row-major
/// `[rows, weight.rows]` output; the weight rows are cut among the threads.
fn multiply(
    weight: &QuantizedMatrix,
    rows: usize,
    output: &mut [f32],
    dots: impl Fn(&[u8], &mut [f32]) + Sync,
) {
    if rows == 1 {
        let rows_per_task = rows_per_task(weight, 4);
        threading::run_chunks_mut(output, rows_per_task, |task, output| {
            let first = task * rows_per_task;
            for (offset, output) in output.iter_mut().enumerate() {
                let row = weight.row(first + offset);
                prefetch_ahead(row);
                dots(row, std::slice::from_mut(output));
            }
        });
        return;
    }
    multiply_transposed(weight, rows, 4, output, |first_row, chunk| {
        for (offset, outputs) in chunk.chunks_exact_mut(rows).enumerate() {
            let row = weight.row(first_row + offset);
            prefetch_ahead(row);
            dots(row, outputs);
        }
    });
}

/// The weight rows of one task: the layer's rows cut evenly among the threads (one task for a
/// small layer), rounded up to a multiple of `multiple`.
fn rows_per_task(weight: &QuantizedMatrix, multiple: usize) -> usize {
    let threads = if weight.data.len() >= PARALLEL_MIN_BYTES {
        threading::parallel_width()
    } else {
        1
    };
    weight.rows.div_ceil(threads).next_multiple_of(multiple)
}

/// Several input rows: each task fills the output's columns of its weight rows, which are not
/// contiguous, so the tasks write a transposed `[weight.rows, rows]` buffer, which is then
/// copied into the row-major `[rows, weight.rows]` output. `task(first_weight_row, chunk)`
/// fills the rows of the buffer of a run of weight rows (a multiple of `multiple` of them but
/// the last).
fn multiply_transposed(
    weight: &QuantizedMatrix,
    rows: usize,
    multiple: usize,
    output: &mut [f32],
    task: impl Fn(usize, &mut [f32]) + Sync,
) {
    let out_features = weight.rows;
    let rows_per_task = rows_per_task(weight, multiple);
    let mut transposed = vec![0.0f32; out_features * rows];
    threading::run_chunks_mut(&mut transposed, rows_per_task * rows, |index, chunk| {
        task(index * rows_per_task, chunk)
    });
    // Copied back by blocks of weight rows, each in L1 while it is read with a stride and
    // written row by row: element by element, every store went to another line of the output
    // (1536 x 576 Q4_1 on the tiles, 16 rows, one thread: 1003 us a call, 837 by blocks).
    const BLOCK_WEIGHT_ROWS: usize = 64;
    for (index, block) in transposed.chunks(BLOCK_WEIGHT_ROWS * rows).enumerate() {
        let first = index * BLOCK_WEIGHT_ROWS;
        let count = block.len() / rows;
        for input_row in 0..rows {
            let destination = &mut output[input_row * out_features + first..][..count];
            for (offset, value) in destination.iter_mut().enumerate() {
                *value = block[offset * rows + input_row];
            }
        }
    }
}

/// The four-bit values of a 4-bit block, in order.
#[inline]
fn nibbles(values: &[u8]) -> [u8; BLOCK_LENGTH] {
    let mut output = [0u8; BLOCK_LENGTH];
    for j in 0..BLOCK_LENGTH / 2 {
        output[j] = values[j] & 0x0F;
        output[j + BLOCK_LENGTH / 2] = values[j] >> 4;
    }
    output
}

/// Where a block's values start, its scale `d` and the offset `m` added to every value:
/// `value = q * d + m` for the 4-bit formats (`m = -8 d` for Q4_0); F16 has no header (`d = 1`,
/// `m = 0`).
#[inline]
pub(super) fn block_header(format: QuantFormat, block: &[u8]) -> (usize, f32, f32) {
    match format {
        QuantFormat::Q8_0 => (2, read_f16(block, 0), 0.0),
        QuantFormat::Q4_0 => {
            let d = read_f16(block, 0);
            (2, d, -8.0 * d)
        }
        QuantFormat::Q4_1 => (4, read_f16(block, 0), read_f16(block, 2)),
        QuantFormat::F16 => (0, 1.0, 0.0),
    }
}

/// The 32 halves of an F16 block as f32.
#[inline]
fn halves(values: &[u8]) -> [f32; BLOCK_LENGTH] {
    std::array::from_fn(|j| read_f16(values, 2 * j))
}

fn exact_dot(format: QuantFormat, row: &[u8], x: &[f32], sums: &[f32]) -> f32 {
    let mut total = 0.0f32;
    for ((block, x), &sum) in row
        .chunks_exact(format.block_bytes())
        .zip(x.chunks_exact(BLOCK_LENGTH))
        .zip(sums)
    {
        let (start, d, m) = block_header(format, block);
        let products: f32 = match format {
            QuantFormat::Q8_0 => block[start..]
                .iter()
                .zip(x)
                .map(|(&q, &x)| f32::from(q as i8) * x)
                .sum(),
            QuantFormat::Q4_0 | QuantFormat::Q4_1 => nibbles(&block[start..])
                .iter()
                .zip(x)
                .map(|(&q, &x)| f32::from(q) * x)
                .sum(),
            QuantFormat::F16 => halves(block).iter().zip(x).map(|(&w, &x)| w * x).sum(),
        };
        total += products * d + m * sum;
    }
    total
}

/// `row . x` in the fast mode, the plain way; the AVX2 kernels' twin, and their F16 code.
pub(super) fn fast_dot(format: QuantFormat, row: &[u8], x: ActivationRow<'_>) -> f32 {
    let mut total = 0.0f32;
    for (((block, quants), &scale), &sum) in row
        .chunks_exact(format.block_bytes())
        .zip(x.quants.chunks_exact(BLOCK_LENGTH))
        .zip(x.scales)
        .zip(x.sums)
    {
        let (start, d, m) = block_header(format, block);
        let products: i32 = match format {
            QuantFormat::Q8_0 => block[start..]
                .iter()
                .zip(quants)
                .map(|(&q, &x)| i32::from(q as i8) * i32::from(x))
                .sum(),
            QuantFormat::Q4_0 | QuantFormat::Q4_1 => nibbles(&block[start..])
                .iter()
                .zip(quants)
                .map(|(&q, &x)| i32::from(q) * i32::from(x))
                .sum(),
            QuantFormat::F16 => {
                // Float weights have no integer product: the halves times the quantized
                // activations, in f32 (layers on F16 run the exact mode; see
                // `QuantizedLinear::new`).
                let products: f32 = halves(block)
                    .iter()
                    .zip(quants)
                    .map(|(&w, &x)| w * f32::from(x))
                    .sum();
                total += products * scale;
                continue;
            }
        };
        total += products as f32 * (d * scale) + m * sum;
    }
    total
}
