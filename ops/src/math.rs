//! Scalar `exp`, `tanh`, `erf` and `ln_1p` in `f32`, written without branches or library calls
//! so that loops over them vectorise.
//!
//! Every polynomial step is a fused multiply-add (`f32::mul_add`): it is one instruction and one
//! rounding where the processor has FMA, which halves the latency of the long Horner chains that
//! bound these functions, and it pins the values down exactly, so that the runtime's loops
//! compiled with FMA and a scalar call (which `mul_add` turns into a call to `fmaf` without FMA)
//! give the same bits.
//!
//! `exp`, `tanh` and `ln_1p` follow the classic Cephes reductions (relative error about 1e-7). `erf`
//! uses two Chebyshev fits made for this crate: `x * P(x^2)` below 1 and
//! `1 - exp(-x^2) * Q(x)` from 1 to 4, where `Q` approximates `erfc(x) * exp(x^2)`; its absolute
//! error is below 1e-7. Beyond 4, `erf` is 1 in `f32`. NaN inputs give NaN.
//!
//! They live in this crate because the activations are defined with them; the runtime's
//! softmax and attention kernels use the same `exp`, so that all kernels agree on its values.

/// The constants of [`exp`], for the runtime's vector forms of it, which must give the same bits.
pub mod exp_constants {
    /// The clamp of the argument.
    pub const MIN: f32 = -104.0;
    pub const MAX: f32 = 88.8;
    pub const LOG2_E: f32 = std::f32::consts::LOG2_E;
    /// ln 2 split in two so that `n * LN2_HIGH` is exact.
    pub const LN2_HIGH: f32 = 0.693_359_4;
    pub const LN2_LOW: f32 = -2.121_944_4e-4;
    /// Adding 1.5 * 2^23 rounds to the nearest integer and leaves it in the low mantissa bits.
    pub const ROUNDING_SHIFT: f32 = 12_582_912.0;
    /// `P` of `e^r = 1 + r + r^2 P(r)`, lowest degree first.
    pub const POLYNOMIAL: [f32; 6] = [
        5e-1,
        1.666_666_5e-1,
        4.166_579_6e-2,
        8.333_452e-3,
        1.398_199_9e-3,
        1.987_569_1e-4,
    ];
}

/// `e^x`, overflowing to infinity above about 88.72 and underflowing to zero below about -104.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    use exp_constants::{LN2_HIGH, LN2_LOW, LOG2_E, MAX, MIN, POLYNOMIAL, ROUNDING_SHIFT};
    let x = x.clamp(MIN, MAX);
    let shifted = x.mul_add(LOG2_E, ROUNDING_SHIFT);
    let exponent = (shifted.to_bits() as i32).wrapping_sub(ROUNDING_SHIFT.to_bits() as i32);
    let n = shifted - ROUNDING_SHIFT;
    let r = (-n).mul_add(LN2_LOW, (-n).mul_add(LN2_HIGH, x));
    let polynomial = horner(&POLYNOMIAL, r);
    let mantissa = polynomial.mul_add(r * r, r) + 1.0;
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
    let polynomial = horner(
        &[
            -3.333_328e-1,
            1.333_144_2e-1,
            -5.373_971_6e-2,
            2.063_909e-2,
            -5.704_988_7e-3,
        ],
        square,
    );
    let small = (polynomial * square).mul_add(x, x);
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
    let small_argument = (2.0 * x).mul_add(x, -1.0);
    let small = x * horner(&SMALL, small_argument);
    // From 1 to 4: the fit is in `y = (2 x - 5) / 3`, over [-1, 1].
    let clamped = magnitude.clamp(1.0, 4.0);
    let large_argument = clamped.mul_add(2.0 / 3.0, -5.0 / 3.0);
    let complement = exp(-(clamped * clamped)) * horner(&LARGE, large_argument);
    let large = (1.0 - complement).copysign(x);
    if magnitude < 1.0 { small } else { large }
}

/// The error function as `x P(x^2) / Q(x^2)` with `x` clamped to [-3.92, 3.92] (beyond, `erf`
/// is 1 in `f32`) and the result to [-1, 1]: a rational fit made for this crate (degrees 6 and 4 in `x^2`, 4.3e-8 from
/// `erf` in exact arithmetic), whose absolute error in `f32` is below 3.5e-7, some three times
/// [`erf`]'s, for a quarter of its cost in a vectorised loop (no `exp`, one branch instead of
/// two). GELU uses it; every coefficient is positive but two tiny ones, so Horner's rule does
/// not cancel. NaN inputs give NaN.
#[inline(always)]
pub fn erf_rational(x: f32) -> f32 {
    use erf_rational_constants::{CLAMP, DENOMINATOR, NUMERATOR};
    let clamped = x.clamp(-CLAMP, CLAMP);
    let square = clamped * clamped;
    // The fit overshoots 1 by an ulp near the clamp; erf of a large magnitude must be exactly
    // ±1, so that GELU of a large negative input is exactly 0.
    (clamped * horner(&NUMERATOR, square) / horner(&DENOMINATOR, square)).clamp(-1.0, 1.0)
}

/// The constants of [`erf_rational`], for the runtime's vector form of GELU, which must give
/// the same bits.
pub mod erf_rational_constants {
    /// The clamp of the argument: beyond it, `erf` is ±1 in `f32`.
    pub const CLAMP: f32 = 3.92;
    /// `P` of `x P(x^2) / Q(x^2)`, lowest degree first.
    pub const NUMERATOR: [f32; 7] = [
        1.128_378_8,
        2.060_833_9e-1,
        5.139_304_3e-2,
        3.971_421e-3,
        1.489_392_7e-4,
        -1.993_874_3e-6,
        1.991_803_2e-8,
    ];
    /// `Q`, lowest degree first.
    pub const DENOMINATOR: [f32; 5] = [
        1.0,
        5.159_654e-1,
        1.175_516_4e-1,
        1.488_642_2e-2,
        1.023_725_5e-3,
    ];
}

/// `ln(1 + y)` for `y` from 0 to 1 (the range softplus needs), with a relative error of about
/// 1e-7 down to the smallest `y`: `1 + y` is split as `m 2^e` with `m` between `sqrt(1/2)` and
/// `sqrt(2)`, `ln(m)` follows Cephes' `logf`, and the rounding of `1 + y` is added back as
/// `(y - (u - 1)) / u`, so that tiny `y` keep their value instead of rounding to `ln(1) = 0`.
#[inline(always)]
pub fn ln_1p_unit(y: f32) -> f32 {
    const LN2_HIGH: f32 = 0.693_359_4;
    const LN2_LOW: f32 = -2.121_944_4e-4;
    let u = 1.0 + y;
    // The rounding error of `1 + y`, exact by Sterbenz's lemma.
    let rounding = y - (u - 1.0);
    // `u` is in [1, 2]: above sqrt(2) it is halved (exactly) and `e` is 1.
    let above = u > std::f32::consts::SQRT_2;
    let exponent: f32 = if above { 1.0 } else { 0.0 };
    let mantissa = if above { u * 0.5 } else { u };
    let m = mantissa - 1.0;
    let square = m * m;
    let polynomial = horner(
        &[
            3.333_333e-1,
            -2.499_999_4e-1,
            2.000_071_4e-1,
            -1.666_805_7e-1,
            1.424_932_3e-1,
            -1.242_014_1e-1,
            1.167_699_84e-1,
            -1.151_461e-1,
            7.037_683_6e-2,
        ],
        m,
    );
    let mut tail = (polynomial * m).mul_add(square, exponent * LN2_LOW);
    tail = (-0.5f32).mul_add(square, tail);
    let logarithm = exponent.mul_add(LN2_HIGH, m + tail);
    logarithm + rounding / u
}

/// Evaluates `coefficients[0] + coefficients[1] y + ...` by Horner's rule, one fused
/// multiply-add per step.
#[inline(always)]
fn horner<const N: usize>(coefficients: &[f32; N], y: f32) -> f32 {
    let mut value = coefficients[N - 1];
    for &coefficient in coefficients[..N - 1].iter().rev() {
        value = value.mul_add(y, coefficient);
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
