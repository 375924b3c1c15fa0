//! Element-wise loops compiled twice: for the baseline target and with AVX2 + FMA enabled,
//! picked at run time, so that simple closures vectorise with 8-wide registers where they can.
//!
//! The two versions compute the same values: Rust never contracts `a * b + c` into a fused
//! multiply-add on its own, so enabling FMA changes only which instructions run.

/// `values[i] = function(values[i])`.
pub(crate) fn map_in_place(values: &mut [f32], function: impl Fn(f32) -> f32 + Copy) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: The processor supports AVX2 and FMA, checked just above.
        unsafe { map_in_place_avx2(values, function) };
        return;
    }
    map_in_place_body(values, function);
}

/// `output[i] = function(input[i])`; the slices must have the same length.
pub(crate) fn map(input: &[f32], output: &mut [f32], function: impl Fn(f32) -> f32 + Copy) {
    debug_assert_eq!(input.len(), output.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: The processor supports AVX2 and FMA, checked just above.
        unsafe { map_avx2(input, output, function) };
        return;
    }
    map_body(input, output, function);
}

/// `output[i] = function(left[i], right[i])`; the slices must have the same length.
pub(crate) fn zip_map(
    left: &[f32],
    right: &[f32],
    output: &mut [f32],
    function: impl Fn(f32, f32) -> f32 + Copy,
) {
    debug_assert!(left.len() == output.len() && right.len() == output.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: The processor supports AVX2 and FMA, checked just above.
        unsafe { zip_map_avx2(left, right, output, function) };
        return;
    }
    zip_map_body(left, right, output, function);
}

/// `values[i] = function(values[i], other[i])`; the slices must have the same length.
pub(crate) fn zip_map_in_place(
    values: &mut [f32],
    other: &[f32],
    function: impl Fn(f32, f32) -> f32 + Copy,
) {
    debug_assert_eq!(values.len(), other.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: The processor supports AVX2 and FMA, checked just above.
        unsafe { zip_map_in_place_avx2(values, other, function) };
        return;
    }
    zip_map_in_place_body(values, other, function);
}

/// Whether the processor has AVX2 and FMA (the result is cached by the standard library).
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2_fma() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

#[inline(always)]
fn map_in_place_body(values: &mut [f32], function: impl Fn(f32) -> f32 + Copy) {
    for value in values.iter_mut() {
        *value = function(*value);
    }
}

#[inline(always)]
fn map_body(input: &[f32], output: &mut [f32], function: impl Fn(f32) -> f32 + Copy) {
    for (output, &input) in output.iter_mut().zip(input) {
        *output = function(input);
    }
}

#[inline(always)]
fn zip_map_body(
    left: &[f32],
    right: &[f32],
    output: &mut [f32],
    function: impl Fn(f32, f32) -> f32 + Copy,
) {
    for ((output, &left), &right) in output.iter_mut().zip(left).zip(right) {
        *output = function(left, right);
    }
}

#[inline(always)]
fn zip_map_in_place_body(
    values: &mut [f32],
    other: &[f32],
    function: impl Fn(f32, f32) -> f32 + Copy,
) {
    for (value, &other) in values.iter_mut().zip(other) {
        *value = function(*value, other);
    }
}

/// # Safety
///
/// The processor must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn map_in_place_avx2(values: &mut [f32], function: impl Fn(f32) -> f32 + Copy) {
    map_in_place_body(values, function);
}

/// # Safety
///
/// The processor must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn map_avx2(input: &[f32], output: &mut [f32], function: impl Fn(f32) -> f32 + Copy) {
    map_body(input, output, function);
}

/// # Safety
///
/// The processor must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn zip_map_avx2(
    left: &[f32],
    right: &[f32],
    output: &mut [f32],
    function: impl Fn(f32, f32) -> f32 + Copy,
) {
    zip_map_body(left, right, output, function);
}

/// # Safety
///
/// The processor must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn zip_map_in_place_avx2(
    values: &mut [f32],
    other: &[f32],
    function: impl Fn(f32, f32) -> f32 + Copy,
) {
    zip_map_in_place_body(values, other, function);
}
