//! The activation functions, with PyTorch's definitions: the [`Activation`] enum that both the
//! compiler's IR and the runtime's kernels use, and the scalar function of each activation.
//!
//! The scalar functions are the single definition of each activation's values: the runtime's
//! vectorised kernels call them inside their loops (they are `#[inline(always)]` and branch-free
//! so that those loops vectorise), and [`Activation::apply`] calls them one value at a time.
//! Every activation is finite wherever PyTorch's is: `sigmoid`, `silu`, `tanh` and both GELUs
//! saturate cleanly at large magnitudes (±1e4 and beyond) instead of producing NaN or infinity.
//! GELU uses a rational `erf` accurate to about 3.5e-7 (absolute).
//!
//! The unary math functions of ONNX (`sqrt`, `exp`, `erf`, `abs`, `pow` by a constant) are
//! activations too: elementwise functions of one value, fused, vectorised and counted like the
//! others. Unlike the rest they are not finite on every finite input (`sqrt` of a negative number
//! is NaN, `exp` overflows above about 88.7), which
//! [`Activation::is_finite_on_finite_inputs`] tells tests that feed random values.

use crate::math;

/// An activation function, with its parameter where it has one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// `x` for `x >= 0`, `negative_slope * x` otherwise (`torch.nn.LeakyReLU`).
    LeakyRelu { negative_slope: f32 },
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// The hyperbolic tangent.
    Tanh,
    /// `x * sigmoid(x)`, also called swish.
    Silu,
    /// `x * relu6(x + 3) / 6`.
    HardSwish,
    /// `relu6(x + 3) / 6` (PyTorch's definition, not Keras's `0.2 x + 0.5`).
    HardSigmoid,
    /// Exact GELU: `x / 2 * (1 + erf(x / sqrt(2)))` (`approximate="none"`).
    Gelu,
    /// GELU's tanh approximation: `x / 2 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3)))`
    /// (`approximate="tanh"`).
    GeluTanh,
    /// `ln(1 + e^x)`, a smooth ReLU (`torch.nn.Softplus` with `beta = 1`).
    Softplus,
    /// The square root; NaN for negative `x` (ONNX `Sqrt`).
    Sqrt,
    /// `e^x` (ONNX `Exp`).
    Exp,
    /// The error function (ONNX `Erf`).
    Erf,
    /// `|x|` (ONNX `Abs`).
    Abs,
    /// `x^exponent` for a constant exponent (ONNX `Pow` with a scalar constant exponent): NaN for
    /// a negative `x` and a fractional exponent, as `powf`.
    Pow { exponent: f32 },
}

impl Activation {
    /// One activation of every variant (both GELUs: their FLOPs differ), for tests and
    /// documentation checks that must cover every activation. A variant missing here is caught by
    /// the exhaustive match in this file's tests.
    pub const ALL: [Activation; 16] = [
        Activation::Relu,
        Activation::Relu6,
        Activation::LeakyRelu {
            negative_slope: 0.01,
        },
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Silu,
        Activation::HardSwish,
        Activation::HardSigmoid,
        Activation::Gelu,
        Activation::GeluTanh,
        Activation::Softplus,
        Activation::Sqrt,
        Activation::Exp,
        Activation::Erf,
        Activation::Abs,
        Activation::Pow { exponent: 3.0 },
    ];

    /// The name of the activation in `.nn` files. Both GELUs are `gelu`: the tanh approximation
    /// is an argument of that built-in, not a name of its own.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Relu6 => "relu6",
            Activation::LeakyRelu { .. } => "leaky_relu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::Silu => "silu",
            Activation::HardSwish => "hard_swish",
            Activation::HardSigmoid => "hard_sigmoid",
            Activation::Gelu => "gelu",
            Activation::GeluTanh => "gelu",
            Activation::Softplus => "softplus",
            Activation::Sqrt => "sqrt",
            Activation::Exp => "exp",
            Activation::Erf => "erf",
            Activation::Abs => "abs",
            Activation::Pow { .. } => "pow",
        }
    }

    /// Whether the activation is finite on every finite input: false for the math functions
    /// with a restricted domain (`sqrt`, `pow`) or that overflow (`exp`, `pow`). Tests that run
    /// activations on random values pick those for which this holds.
    pub fn is_finite_on_finite_inputs(self) -> bool {
        match self {
            Activation::Sqrt | Activation::Exp | Activation::Pow { .. } => false,
            Activation::Relu
            | Activation::Relu6
            | Activation::LeakyRelu { .. }
            | Activation::Sigmoid
            | Activation::Tanh
            | Activation::Silu
            | Activation::HardSwish
            | Activation::HardSigmoid
            | Activation::Gelu
            | Activation::GeluTanh
            | Activation::Softplus
            | Activation::Erf
            | Activation::Abs => true,
        }
    }

    /// FLOPs per element, transcendental functions (`exp`, `tanh`, `erf`) counted as one FLOP
    /// each, as nnc's `docs/cost-model.md` states.
    pub fn flops_per_element(self) -> u64 {
        match self {
            // max(x, 0)
            Activation::Relu => 1,
            // min(max(x, 0), 6)
            Activation::Relu6 => 2,
            // compare, multiply
            Activation::LeakyRelu { .. } => 2,
            // negate, exp, add 1, divide
            Activation::Sigmoid => 4,
            Activation::Tanh => 1,
            // sigmoid, then multiply by x
            Activation::Silu => 5,
            // add 3, max, min, divide by 6
            Activation::HardSigmoid => 4,
            // hard sigmoid, then multiply by x
            Activation::HardSwish => 5,
            // x * 0.5 * (1 + erf(x / sqrt 2)): multiply, erf, add, multiply, multiply
            Activation::Gelu => 5,
            // 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x³))): x³ (2), ×c (1), + x (1), ×sqrt(2/pi) (1),
            // tanh (1), + 1 (1), × 0.5 (1), × x (1)
            Activation::GeluTanh => 9,
            // max(x, 0) + ln(1 + e^-|x|): abs, negate, exp, add 1, ln, max, add
            Activation::Softplus => 7,
            // One function each; `pow` is one FLOP whatever the exponent, as a transcendental.
            Activation::Sqrt
            | Activation::Exp
            | Activation::Erf
            | Activation::Abs
            | Activation::Pow { .. } => 1,
        }
    }

    /// The activation of one value.
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        struct One(f32);
        impl ScalarMap for One {
            type Output = f32;
            #[inline(always)]
            fn map(self, function: impl Fn(f32) -> f32 + Copy) -> f32 {
                function(self.0)
            }
        }
        self.with_scalar_function(One(x))
    }

    /// Hands this activation's scalar function to `map`. Each activation's function is a type of
    /// its own, so the caller's loop is compiled once per activation, and vectorised: this is the
    /// only place that dispatches on the activation, and the runtime's slice kernels go through it.
    #[inline(always)]
    pub fn with_scalar_function<M: ScalarMap>(self, map: M) -> M::Output {
        match self {
            Activation::Relu => map.map(relu),
            Activation::Relu6 => map.map(relu6),
            Activation::LeakyRelu { negative_slope } => {
                map.map(move |x| leaky_relu(x, negative_slope))
            }
            Activation::Sigmoid => map.map_costly(sigmoid),
            Activation::Tanh => map.map_costly(math::tanh),
            Activation::Silu => map.map_costly(silu),
            Activation::HardSwish => map.map(hard_swish),
            Activation::HardSigmoid => map.map(hard_sigmoid),
            Activation::Gelu => map.map_costly(gelu),
            Activation::GeluTanh => map.map_costly(gelu_tanh),
            Activation::Softplus => map.map_costly(softplus),
            Activation::Sqrt => map.map(f32::sqrt),
            Activation::Exp => map.map_costly(math::exp),
            Activation::Erf => map.map_costly(math::erf),
            Activation::Abs => map.map(f32::abs),
            // The square (RMS norms, variances) is one multiplication, which vectorises;
            // other exponents call `powf`.
            Activation::Pow { exponent: 2.0 } => map.map(|x| x * x),
            Activation::Pow { exponent } => map.map(move |x| x.powf(exponent)),
        }
    }

    /// The activation of one value by its textbook formula, computed in `f64`: the reference the
    /// tests hold every kernel to. It shares no code with the `f32` functions.
    pub fn reference(self, x: f32) -> f32 {
        let x = x as f64;
        let relu6 = |x: f64| x.clamp(0.0, 6.0);
        let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
        let value = match self {
            Activation::Relu => x.max(0.0),
            Activation::Relu6 => relu6(x),
            Activation::LeakyRelu { negative_slope } => {
                if x >= 0.0 {
                    x
                } else {
                    x * negative_slope as f64
                }
            }
            Activation::Sigmoid => sigmoid(x),
            Activation::Tanh => x.tanh(),
            Activation::Silu => x * sigmoid(x),
            Activation::HardSwish => x * relu6(x + 3.0) / 6.0,
            Activation::HardSigmoid => relu6(x + 3.0) / 6.0,
            Activation::Gelu => 0.5 * x * (1.0 + math::erf_f64(x / std::f64::consts::SQRT_2)),
            Activation::GeluTanh => {
                let beta = (2.0 / std::f64::consts::PI).sqrt();
                0.5 * x * (1.0 + (beta * (x + 0.044715 * x * x * x)).tanh())
            }
            // e^x overflows f64 only past 709, where ln(1 + e^x) is x to the last bit.
            Activation::Softplus if x > 700.0 => x,
            Activation::Softplus => x.exp().ln_1p(),
            Activation::Sqrt => x.sqrt(),
            Activation::Exp => x.exp(),
            Activation::Erf => math::erf_f64(x),
            Activation::Abs => x.abs(),
            Activation::Pow { exponent } => x.powf(exponent as f64),
        };
        value as f32
    }
}

/// A computation over data that takes a scalar function: the runtime's vectorised loops over
/// slices, or one value in [`Activation::apply`]. See [`Activation::with_scalar_function`].
pub trait ScalarMap {
    type Output;
    fn map(self, function: impl Fn(f32) -> f32 + Copy) -> Self::Output;

    /// [`ScalarMap::map`] for a function built on `exp`, `erf` or `tanh`: a long chain of
    /// dependent multiply-adds, which a loop may want to run on several vectors side by side
    /// (the runtime's loops do; they must not for cheap functions, which that unrolling spoils).
    fn map_costly(self, function: impl Fn(f32) -> f32 + Copy) -> Self::Output
    where
        Self: Sized,
    {
        self.map(function)
    }
}

/// `max(x, 0)`, written so that NaN passes through, as in PyTorch.
#[inline(always)]
pub fn relu(x: f32) -> f32 {
    if x < 0.0 { 0.0 } else { x }
}

/// `min(max(x, 0), 6)`.
#[inline(always)]
pub fn relu6(x: f32) -> f32 {
    x.clamp(0.0, 6.0)
}

/// `x` for `x >= 0`, `negative_slope * x` otherwise.
#[inline(always)]
pub fn leaky_relu(x: f32, negative_slope: f32) -> f32 {
    if x < 0.0 { x * negative_slope } else { x }
}

/// `1 / (1 + e^-x)`.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    // `e^-x` overflows to infinity for very negative x, and 1 / infinity is the right 0.
    1.0 / (1.0 + math::exp(-x))
}

/// `x * sigmoid(x)`.
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + math::exp(-x))
}

/// `relu6(x + 3) / 6`.
#[inline(always)]
pub fn hard_sigmoid(x: f32) -> f32 {
    (x + 3.0).clamp(0.0, 6.0) / 6.0
}

/// `x * relu6(x + 3) / 6`.
#[inline(always)]
pub fn hard_swish(x: f32) -> f32 {
    x * (x + 3.0).clamp(0.0, 6.0) / 6.0
}

/// Exact GELU, `x / 2 * (1 + erf(x / sqrt(2)))`, with `erf` from [`math::erf_rational`]: a
/// dozen multiply-adds and one division, about a quarter of the cost of [`math::erf`] in a
/// vectorised loop, at most 2.4e-7 (two units in the last place) from the exact GELU between
/// -12 and 12. The last step is one fused multiply-add, `x / 2 + x / 2 * erf`, so that `1 + erf`
/// is not rounded on its own.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    let half = 0.5 * x;
    half.mul_add(
        math::erf_rational(x * std::f32::consts::FRAC_1_SQRT_2),
        half,
    )
}

/// `ln(1 + e^x)`, as `max(x, 0) + ln(1 + e^-|x|)` so that it neither overflows for large `x`
/// nor loses the small values of very negative `x`.
#[inline(always)]
pub fn softplus(x: f32) -> f32 {
    x.max(0.0) + math::ln_1p_unit(math::exp(-x.abs()))
}

/// GELU's tanh approximation.
#[inline(always)]
pub fn gelu_tanh(x: f32) -> f32 {
    // sqrt(2 / pi).
    const BETA: f32 = 0.797_884_6;
    const KAPPA: f32 = 0.044_715;
    0.5 * x * (1.0 + math::tanh(BETA * (x + KAPPA * x * x * x)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Activation; 16] = Activation::ALL;

    // This match fails to compile when a variant is added: a reminder to list it in `ALL`.
    fn is_listed(activation: Activation) -> bool {
        match activation {
            Activation::Relu
            | Activation::Relu6
            | Activation::LeakyRelu { .. }
            | Activation::Sigmoid
            | Activation::Tanh
            | Activation::Silu
            | Activation::HardSwish
            | Activation::HardSigmoid
            | Activation::Gelu
            | Activation::GeluTanh
            | Activation::Softplus
            | Activation::Sqrt
            | Activation::Exp
            | Activation::Erf
            | Activation::Abs => ALL.contains(&activation),
            Activation::Pow { .. } => ALL.iter().any(|listed| listed.name() == "pow"),
        }
    }

    #[test]
    fn every_variant_is_listed_and_costs_flops() {
        for activation in ALL {
            assert!(is_listed(activation), "{activation:?}");
            assert!(activation.flops_per_element() >= 1, "{activation:?}");
        }
    }

    #[test]
    fn names_are_the_nn_built_ins() {
        let names: Vec<&str> = ALL.iter().map(|activation| activation.name()).collect();
        assert_eq!(
            names,
            [
                "relu",
                "relu6",
                "leaky_relu",
                "sigmoid",
                "tanh",
                "silu",
                "hard_swish",
                "hard_sigmoid",
                "gelu",
                "gelu",
                "softplus",
                "sqrt",
                "exp",
                "erf",
                "abs",
                "pow"
            ]
        );
    }

    #[test]
    fn apply_matches_the_textbook_formulas() {
        let exact_gelu = |x: f32| {
            // erf(1 / sqrt(2)) and erf(-1 / sqrt(2)), rounded to f32.
            let erf = if x > 0.0 { 0.682_689_5 } else { -0.682_689_5 };
            x * 0.5 * (1.0 + erf)
        };
        for x in [-1.0f32, 1.0] {
            let close = |activation: Activation, expected: f32| {
                let got = activation.apply(x);
                assert!(
                    (got - expected).abs() < 1e-6,
                    "{activation:?}({x}) = {got}, expected {expected}"
                );
            };
            close(Activation::Relu, x.max(0.0));
            close(Activation::Relu6, x.clamp(0.0, 6.0));
            close(
                Activation::LeakyRelu {
                    negative_slope: 0.01,
                },
                if x < 0.0 { 0.01 * x } else { x },
            );
            close(Activation::Sigmoid, 1.0 / (1.0 + (-x).exp()));
            close(Activation::Tanh, x.tanh());
            close(Activation::Silu, x / (1.0 + (-x).exp()));
            close(Activation::HardSwish, x * (x + 3.0).clamp(0.0, 6.0) / 6.0);
            close(Activation::HardSigmoid, (x + 3.0).clamp(0.0, 6.0) / 6.0);
            close(Activation::Gelu, exact_gelu(x));
            let inner = 0.797_884_6 * (x + 0.044_715 * x * x * x);
            close(Activation::GeluTanh, 0.5 * x * (1.0 + inner.tanh()));
        }
    }

    #[test]
    fn large_magnitudes_saturate_and_nan_propagates() {
        for activation in ALL {
            for x in [-1e4f32, 1e4] {
                let finite = activation.reference(x).is_finite();
                assert_eq!(
                    activation.apply(x).is_finite(),
                    finite,
                    "{activation:?}({x})"
                );
                assert!(
                    finite || !activation.is_finite_on_finite_inputs(),
                    "{activation:?}({x})"
                );
            }
            assert!(activation.apply(f32::NAN).is_nan(), "{activation:?}(NaN)");
        }
    }

    #[test]
    fn math_functions_match_their_definitions() {
        let cases = [
            (Activation::Sqrt, 2.25, 1.5),
            (Activation::Exp, 1.0, std::f32::consts::E),
            (Activation::Exp, -1.0, 1.0 / std::f32::consts::E),
            (Activation::Erf, 0.5, 0.520_499_9),
            (Activation::Erf, -1.0, -0.842_700_8),
            (Activation::Abs, -3.5, 3.5),
            (Activation::Pow { exponent: 2.0 }, -3.0, 9.0),
            (Activation::Pow { exponent: 3.0 }, -2.0, -8.0),
            (Activation::Pow { exponent: 0.5 }, 6.25, 2.5),
        ];
        for (activation, x, expected) in cases {
            let got = activation.apply(x);
            assert!(
                (got - expected).abs() <= 1e-6 * expected.abs().max(1.0),
                "{activation:?}({x}) = {got}, expected {expected}"
            );
        }
        assert!(Activation::Sqrt.apply(-1.0).is_nan());
        assert!(Activation::Pow { exponent: 0.5 }.apply(-1.0).is_nan());
        assert_eq!(Activation::Exp.apply(100.0), f32::INFINITY);
        assert_eq!(Activation::Exp.apply(-200.0), 0.0);
    }
}
