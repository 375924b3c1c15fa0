//! Scalar `exp`, `tanh` and `erf` in `f32`, written without branches or library calls so that
//! loops over them vectorise.
//!
//! `exp` and `tanh` follow the classic Cephes reductions (relative error about 1e-7). `erf`
//! uses two Chebyshev fits made for this crate: `x * P(x^2)` below 1 and
//! `1 - exp(-x^2) * Q(x)` from 1 to 4, where `Q` approximates `erfc(x) * exp(x^2)`; its absolute
//! error is below 1e-7. Beyond 4, `erf` is 1 in `f32`. NaN inputs give NaN.
//!
//! They live in this crate because the activations are defined with them; the runtime's
//! softmax and attention kernels use the same `exp`, so that all kernels agree on its values.

/// `e^x`, overflowing to infinity above about 88.72 and underflowing to zero below about -104.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that `n * LN2_HIGH` is exact.
    const LN2_HIGH: f32 = 0.693_359_4;
    const LN2_LOW: f32 = -2.121_944_4e-4;
    // Adding 1.5 * 2^23 rounds to the nearest integer and leaves it in the low mantissa bits.
    const ROUNDING_SHIFT: f32 = 12_582_912.0;
    let x = x.clamp(-104.0, 88.8);
    let shifted = x * LOG2_E + ROUNDING_SHIFT;
    let exponent = (shifted.to_bits() as i32).wrapping_sub(ROUNDING_SHIFT.to_bits() as i32);
    let n = shifted - ROUNDING_SHIFT;
    let r = x - n * LN2_HIGH - n * LN2_LOW;
    let mut polynomial = 1.987_569_1e-4;
    polynomial = polynomial * r + 1.398_199_9e-3;
    polynomial = polynomial * r + 8.333_452e-3;
    polynomial = polynomial * r + 4.166_579_6e-2;
    polynomial = polynomial * r + 1.666_666_5e-1;
    polynomial = polynomial * r + 5e-1;
    let mantissa = polynomial * (r * r) + r + 1.0;
    // 2^n as two factors, each a normal float, so that results down to the subnormal range and
    // up to the overflow threshold come out right.
    let half = exponent >> 1;
    let first = f32::from_bits((half.wrapping_add(127) as u32) << 23);
    let second = f32::from_bits((exponent.wrapping_sub(half).wrapping_add(127) as u32) << 23);
    mantissa * first * second
}

/// The hyperbolic tangent.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let magnitude = x.abs();
    let square = x * x;
    let mut polynomial = -5.704_988_7e-3;
    polynomial = polynomial * square + 2.063_909e-2;
    polynomial = polynomial * square - 5.373_971_6e-2;
    polynomial = polynomial * square + 1.333_144_2e-1;
    polynomial = polynomial * square - 3.333_328e-1;
    let small = polynomial * square * x + x;
    let large = (1.0 - 2.0 / (exp(2.0 * magnitude) + 1.0)).copysign(x);
    if magnitude < 0.625 { small } else { large }
}

/// The error function.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    const SMALL: [f32; 7] = [
        9.654_687_6e-1,
        -1.405_361e-1,
        1.985_249_9e-2,
        -2.285_419_5e-3,
        2.175_119_9e-4,
        -1.766_908_1e-5,
        1.231_640_1e-6,
    ];
    const LARGE: [f32; 11] = [
        2.108_063_5e-1,
        -1.115_214e-1,
        5.611_096e-2,
        -2.699_779_2e-2,
        1.248_403_5e-2,
        -5.611_763e-3,
        2.425_885e-3,
        -9.155_638e-4,
        3.678_686_6e-4,
        -2.455_026e-4,
        9.640_452e-5,
    ];
    let magnitude = x.abs();
    // Below 1: the fit is in `y = 2 x^2 - 1`, over [-1, 1].
    let small_argument = 2.0 * (x * x) - 1.0;
    let small = x * horner(&SMALL, small_argument);
    // From 1 to 4: the fit is in `y = (2 x - 5) / 3`, over [-1, 1].
    let clamped = magnitude.clamp(1.0, 4.0);
    let large_argument = clamped * (2.0 / 3.0) - 5.0 / 3.0;
    let complement = exp(-(clamped * clamped)) * horner(&LARGE, large_argument);
    let large = (1.0 - complement).copysign(x);
    if magnitude < 1.0 { small } else { large }
}

/// Evaluates `coefficients[0] + coefficients[1] y + ...` by Horner's rule.
#[inline(always)]
fn horner<const N: usize>(coefficients: &[f32; N], y: f32) -> f32 {
    let mut value = coefficients[N - 1];
    for &coefficient in coefficients[..N - 1].iter().rev() {
        value = value * y + coefficient;
    }
    value
}

/// The error function in `f64` (about 1e-13 absolute): its Maclaurin series below 2.5, the
/// continued fraction of `erfc` above.
pub fn erf_f64(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let magnitude = x.abs();
    if magnitude < 2.5 {
        let mut term = x;
        let mut sum = x;
        let square = x * x;
        for n in 1..200 {
            term *= -square / n as f64;
            let contribution = term / (2 * n + 1) as f64;
            sum += contribution;
            if contribution.abs() < 1e-17 * sum.abs() {
                break;
            }
        }
        return sum * 2.0 / std::f64::consts::PI.sqrt();
    }
    // erfc(x) = e^{-x^2} / sqrt(pi) / (x + (1/2) / (x + 1 / (x + (3/2) / (x + ...)))).
    let mut fraction = magnitude;
    for n in (1..=80).rev() {
        fraction = magnitude + (n as f64 / 2.0) / fraction;
    }
    let complement = (-magnitude * magnitude).exp() / std::f64::consts::PI.sqrt() / fraction;
    (1.0 - complement).copysign(x)
}
