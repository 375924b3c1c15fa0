//! The inner loop of the NCHW depthwise convolution, with an AVX2 + FMA form and a portable
//! twin: the outputs of one row whose taps all lie inside the input, eight at a time, every
//! tap of every kernel row multiplied and added in a register and the sum added to the output
//! once. At stride 2 each tap loads fifteen consecutive inputs and keeps the even ones with a
//! shuffle and a permute, so no strided gather is left in the loop.

/// One kernel row's input row and weights: `input[i * stride + k * dilation]` meets
/// `weights[k]` for output `i`.
pub(super) type KernelRow<'a> = (&'a [f32], &'a [f32]);

/// Kernel rows combined per call; taller kernels take several calls.
pub(super) const ROWS_PER_CALL: usize = 8;

/// `output[i] += sum over kernel rows (input, weights) and k of weights[k] * input[i * stride +
/// k * dilation]`. Every input row must hold the last output's last tap.
pub(super) fn accumulate_row(
    output: &mut [f32],
    kernel_rows: &[KernelRow<'_>],
    stride: usize,
    dilation: usize,
) {
    if output.is_empty() || kernel_rows.is_empty() {
        return;
    }
    let kernel_w = kernel_rows[0].1.len();
    assert!(kernel_w > 0, "accumulate_row: the kernel rows are empty");
    let last_input = (output.len() - 1) * stride + (kernel_w - 1) * dilation;
    assert!(
        kernel_rows
            .iter()
            .all(|(input, weights)| input.len() > last_input && weights.len() == kernel_w),
        "accumulate_row: an input row is too short or a kernel row has another width"
    );
    #[cfg(target_arch = "x86_64")]
    if stride <= 2 && output.len() >= 8 && crate::kernels::vectorize::has_avx2_fma() {
        // SAFETY: The processor has AVX2 and FMA, checked just above, and every input row holds
        // the last output's last tap, checked above.
        unsafe { x86_64::accumulate_row(output, kernel_rows, stride, dilation) };
        return;
    }
    accumulate_row_portable(output, kernel_rows, stride, dilation);
}

fn accumulate_row_portable(
    output: &mut [f32],
    kernel_rows: &[KernelRow<'_>],
    stride: usize,
    dilation: usize,
) {
    for (index, value) in output.iter_mut().enumerate() {
        let mut sum = 0.0;
        for (input, weights) in kernel_rows {
            for (kernel_x, &weight) in weights.iter().enumerate() {
                sum += weight * input[index * stride + kernel_x * dilation];
            }
        }
        *value += sum;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86_64 {
    //! The AVX2 + FMA loop; the caller checks the processor and the bounds.

    use super::KernelRow;
    use std::arch::x86_64::*;

    /// Eight inputs for outputs `index..index + 8` at `stride` 1 or 2; at stride 2, the even
    /// lanes of fifteen values (the second load starts at 7, so the last block reads nothing
    /// past its last even input; its wanted lanes are then the odd ones).
    ///
    /// # Safety
    /// `(index + 7) * stride` is inside the row at `input`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load_inputs(input: *const f32, index: usize, stride: usize) -> __m256 {
        // SAFETY: The caller guarantees the last input read, `(index + 7) * stride`, is inside.
        unsafe {
            if stride == 1 {
                _mm256_loadu_ps(input.add(index))
            } else {
                let pointer = input.add(2 * index);
                let (low, high) = (_mm256_loadu_ps(pointer), _mm256_loadu_ps(pointer.add(7)));
                // [p0 p2 p8 p10 | p4 p6 p12 p14], then the 64-bit pairs reordered 0, 2, 1, 3.
                let even = _mm256_shuffle_ps::<0b11_01_10_00>(low, high);
                _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(
                    even,
                )))
            }
        }
    }

    /// The sums of every tap for the `BLOCKS` blocks of eight outputs from `index`, in as
    /// many independent registers (one chain of fused multiply-adds would wait on its latency).
    ///
    /// # Safety
    /// The processor has AVX2 and FMA, and every input row holds `(index + 8 * BLOCKS - 1) *
    /// stride + (kernel_w - 1) * dilation`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn block_sums<const BLOCKS: usize>(
        kernel_rows: &[KernelRow<'_>],
        index: usize,
        stride: usize,
        dilation: usize,
    ) -> [__m256; BLOCKS] {
        let mut sums = [_mm256_setzero_ps(); BLOCKS];
        for (input, weights) in kernel_rows {
            for (kernel_x, &weight) in weights.iter().enumerate() {
                let weight = _mm256_set1_ps(weight);
                // SAFETY: The caller guarantees the taps' inputs are inside the row.
                let start = unsafe { input.as_ptr().add(kernel_x * dilation) };
                for (block, sum) in sums.iter_mut().enumerate() {
                    // SAFETY: As above, for block `block`.
                    let inputs = unsafe { load_inputs(start, index + 8 * block, stride) };
                    *sum = _mm256_fmadd_ps(weight, inputs, *sum);
                }
            }
        }
        sums
    }

    /// See [`super::accumulate_row`]; the last, partial block is the last eight outputs with
    /// the sums of those already done masked to zero.
    ///
    /// # Safety
    /// The processor has AVX2 and FMA, `output.len() >= 8`, `stride` is 1 or 2, and every input
    /// row holds the last output's last tap.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn accumulate_row(
        output: &mut [f32],
        kernel_rows: &[KernelRow<'_>],
        stride: usize,
        dilation: usize,
    ) {
        let length = output.len();
        let destination = output.as_mut_ptr();
        let mut index = 0;
        while index + 32 <= length {
            // SAFETY: `index + 32 <= length`, and the rows hold every output's taps.
            unsafe {
                let sums = block_sums::<4>(kernel_rows, index, stride, dilation);
                for (block, sum) in sums.into_iter().enumerate() {
                    let pointer = destination.add(index + 8 * block);
                    _mm256_storeu_ps(pointer, _mm256_add_ps(_mm256_loadu_ps(pointer), sum));
                }
            }
            index += 32;
        }
        while index + 8 <= length {
            // SAFETY: `index + 8 <= length`, and the rows hold every output's taps.
            unsafe {
                let [sum] = block_sums::<1>(kernel_rows, index, stride, dilation);
                let total = _mm256_add_ps(_mm256_loadu_ps(destination.add(index)), sum);
                _mm256_storeu_ps(destination.add(index), total);
            }
            index += 8;
        }
        if index < length {
            let last = length - 8;
            let done = (index - last) as i32;
            // SAFETY: `length >= 8`, so outputs `last..length` are in bounds.
            unsafe {
                let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                let fresh =
                    _mm256_castsi256_ps(_mm256_cmpgt_epi32(lanes, _mm256_set1_epi32(done - 1)));
                let [sum] = block_sums::<1>(kernel_rows, last, stride, dilation);
                let sum = _mm256_and_ps(sum, fresh);
                let total = _mm256_add_ps(_mm256_loadu_ps(destination.add(last)), sum);
                _mm256_storeu_ps(destination.add(last), total);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{assert_close, values};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// The dispatched form (AVX2 where the machine has it) agrees with the portable one on
        /// odd lengths, strides 1 to 3, and input rows exactly as long as needed.
        #[test]
        fn accumulate_row_matches_portable(
            (length, kernel_w, stride, dilation, row_length, data, weights) in
                (0..40usize, 1..5usize, 1..4usize, 1..3usize, 0..3usize)
                    .prop_flat_map(|(length, kernel_w, stride, dilation, spare)| {
                        let needed =
                            length.saturating_sub(1) * stride + (kernel_w - 1) * dilation + 1;
                        let row_length = needed + spare;
                        (
                            Just(length), Just(kernel_w), Just(stride), Just(dilation),
                            Just(row_length), values(3 * row_length), values(3 * kernel_w),
                        )
                    }),
            row_count in 0..4usize,
            start in values(40),
        ) {
            let kernel_rows: Vec<KernelRow<'_>> = data
                .chunks_exact(row_length)
                .zip(weights.chunks_exact(kernel_w))
                .take(row_count)
                .collect();
            let mut expected = start[..length].to_vec();
            accumulate_row_portable(&mut expected, &kernel_rows, stride, dilation);
            let mut output = start[..length].to_vec();
            accumulate_row(&mut output, &kernel_rows, stride, dilation);
            assert_close(&output, &expected, 1e-5);
        }
    }
}
