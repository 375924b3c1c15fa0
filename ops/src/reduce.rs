//! Reductions over a set of axes (ONNX's `ReduceSum`, `ReduceMean`, `ReduceMax`, `ReduceMin`,
//! `ReduceProd`, `ReduceL1`, `ReduceL2`, `ReduceSumSquare` and `ReduceLogSumExp`): the
//! [`ReduceOp`] both the compiler's IR and the runtime's kernel take, with its name, its FLOPs
//! and the scalar steps that define its values.

/// The shape of a reduction of `shape` over `axes`: each reduced axis kept as 1 with `keepdims`,
/// dropped without it.
pub fn reduced_shape(shape: &[usize], axes: &[usize], keepdims: bool) -> Vec<usize> {
    shape
        .iter()
        .enumerate()
        .filter_map(|(axis, &size)| match axes.contains(&axis) {
            true if keepdims => Some(1),
            true => None,
            false => Some(size),
        })
        .collect()
}

/// How a reduction combines the elements of each group.
///
/// A group's value is built from [`ReduceOp::initial`] by [`ReduceOp::combine`] with each element
/// (which [`ReduceOp::merge`]s the element's [`ReduceOp::map`] in), and two partial values of a
/// group merge; [`ReduceOp::finish`] turns the value into the result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    /// The sum.
    Sum,
    /// The sum divided by the number of elements reduced.
    Mean,
    /// The maximum; NaN if the group holds one, as `torch.amax`.
    Max,
    /// The minimum; NaN if the group holds one, as `torch.amin`.
    Min,
    /// The product.
    Prod,
    /// The sum of absolute values (ONNX's `ReduceL1`).
    L1,
    /// The square root of the sum of squares (ONNX's `ReduceL2`).
    L2,
    /// The sum of squares (ONNX's `ReduceSumSquare`).
    SumSquare,
    /// `ln Σ e^x`, kept finite for large `x` (ONNX's `ReduceLogSumExp`, `torch.logsumexp`).
    LogSumExp,
}

impl ReduceOp {
    /// Every reduction.
    pub const ALL: [ReduceOp; 9] = [
        ReduceOp::Sum,
        ReduceOp::Mean,
        ReduceOp::Max,
        ReduceOp::Min,
        ReduceOp::Prod,
        ReduceOp::L1,
        ReduceOp::L2,
        ReduceOp::SumSquare,
        ReduceOp::LogSumExp,
    ];

    /// The name of the layer in `.nn` files and printed IR.
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "reduce_sum",
            ReduceOp::Mean => "reduce_mean",
            ReduceOp::Max => "reduce_max",
            ReduceOp::Min => "reduce_min",
            ReduceOp::Prod => "reduce_prod",
            ReduceOp::L1 => "reduce_l1",
            ReduceOp::L2 => "reduce_l2",
            ReduceOp::SumSquare => "reduce_sum_square",
            ReduceOp::LogSumExp => "reduce_log_sum_exp",
        }
    }

    /// FLOPs of a reduction of `input_elements` values into `output_elements` results: one add,
    /// compare or multiply per input element, one more for the absolute value or the square of
    /// L1, L2 and the sum of squares; the mean's multiplication by `1 / count` and L2's square
    /// root per result; for log-sum-exp a subtraction, an exponential and an add per element and
    /// a logarithm and an add per result, besides the maximum.
    pub fn flops(self, input_elements: u64, output_elements: u64) -> u64 {
        match self {
            ReduceOp::Sum | ReduceOp::Max | ReduceOp::Min | ReduceOp::Prod => input_elements,
            ReduceOp::Mean => input_elements + output_elements,
            ReduceOp::L1 | ReduceOp::SumSquare => 2 * input_elements,
            ReduceOp::L2 => 2 * input_elements + output_elements,
            ReduceOp::LogSumExp => 4 * input_elements + 2 * output_elements,
        }
    }

    /// The value a group starts from: 0 for sums, 1 for products, negative infinity for maxima
    /// and log-sum-exp, positive infinity for minima.
    pub fn initial(self) -> f32 {
        match self {
            ReduceOp::Sum | ReduceOp::Mean | ReduceOp::L1 | ReduceOp::L2 | ReduceOp::SumSquare => {
                0.0
            }
            ReduceOp::Prod => 1.0,
            ReduceOp::Max | ReduceOp::LogSumExp => f32::NEG_INFINITY,
            ReduceOp::Min => f32::INFINITY,
        }
    }

    /// What an element contributes: its absolute value for L1, its square for L2 and the sum of
    /// squares, itself otherwise.
    #[inline(always)]
    pub fn map(self, x: f32) -> f32 {
        match self {
            ReduceOp::L1 => x.abs(),
            ReduceOp::L2 | ReduceOp::SumSquare => x * x,
            _ => x,
        }
    }

    /// Two partial values of one group, merged.
    #[inline(always)]
    pub fn merge(self, accumulated: f32, partial: f32) -> f32 {
        match self {
            ReduceOp::Sum | ReduceOp::Mean | ReduceOp::L1 | ReduceOp::L2 | ReduceOp::SumSquare => {
                accumulated + partial
            }
            ReduceOp::Max => maximum(accumulated, partial),
            ReduceOp::Min => minimum(accumulated, partial),
            ReduceOp::Prod => accumulated * partial,
            ReduceOp::LogSumExp => log_add_exp(accumulated, partial),
        }
    }

    /// A group's running value with one more element.
    #[inline(always)]
    pub fn combine(self, accumulated: f32, x: f32) -> f32 {
        self.merge(accumulated, self.map(x))
    }

    /// Whether [`ReduceOp::finish`] changes a value (the mean and L2).
    pub fn has_finish(self) -> bool {
        matches!(self, ReduceOp::Mean | ReduceOp::L2)
    }

    /// The result of a group of `count` elements from its running value.
    pub fn finish(self, accumulated: f32, count: usize) -> f32 {
        match self {
            ReduceOp::Mean => accumulated / count as f32,
            ReduceOp::L2 => accumulated.sqrt(),
            _ => accumulated,
        }
    }
}

/// The larger of two values, NaN if either is: the branch-free form loops vectorise.
#[inline(always)]
pub fn maximum(accumulated: f32, x: f32) -> f32 {
    if x > accumulated || x.is_nan() {
        x
    } else {
        accumulated
    }
}

/// The smaller of two values, NaN if either is.
#[inline(always)]
pub fn minimum(accumulated: f32, x: f32) -> f32 {
    if x < accumulated || x.is_nan() {
        x
    } else {
        accumulated
    }
}

/// `ln(e^a + e^b)` without overflow: the larger plus `ln(1 + e^(smaller - larger))`. NaN if either
/// is; negative infinity is the identity.
#[inline(always)]
pub fn log_add_exp(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        return f32::NAN;
    }
    let (high, low) = if a >= b { (a, b) } else { (b, a) };
    if low == f32::NEG_INFINITY || high == f32::INFINITY {
        return high;
    }
    high + (low - high).exp().ln_1p()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reductions_have_names_and_values() {
        let names: Vec<&str> = ReduceOp::ALL.iter().map(|op| op.name()).collect();
        assert_eq!(
            names,
            [
                "reduce_sum",
                "reduce_mean",
                "reduce_max",
                "reduce_min",
                "reduce_prod",
                "reduce_l1",
                "reduce_l2",
                "reduce_sum_square",
                "reduce_log_sum_exp"
            ]
        );
        let log_sum_exp = (1f32.exp() + (-3f32).exp() + 2f32.exp()).ln();
        let expected = [
            0.0,
            0.0,
            2.0,
            -3.0,
            -6.0,
            6.0,
            14f32.sqrt(),
            14.0,
            log_sum_exp,
        ];
        for (op, expected) in ReduceOp::ALL.into_iter().zip(expected) {
            let accumulated = [1.0, -3.0, 2.0]
                .into_iter()
                .fold(op.initial(), |accumulated, x| op.combine(accumulated, x));
            let value = op.finish(accumulated, 3);
            assert!(
                (value - expected).abs() <= 1e-6 * expected.abs().max(1.0),
                "{op:?}: {value}"
            );
        }
        assert!(ReduceOp::Max.combine(1.0, f32::NAN).is_nan());
        assert!(ReduceOp::Max.combine(f32::NAN, 1.0).is_nan());
        assert!(ReduceOp::Min.combine(f32::NAN, 1.0).is_nan());
        assert_eq!(ReduceOp::Mean.flops(12, 3), 15);
    }

    #[test]
    fn log_add_exp_stays_finite_and_propagates_nan() {
        assert_eq!(log_add_exp(1000.0, 1000.0), 1000.0 + 2f32.ln());
        assert_eq!(log_add_exp(f32::NEG_INFINITY, -5.0), -5.0);
        assert_eq!(
            log_add_exp(f32::NEG_INFINITY, f32::NEG_INFINITY),
            f32::NEG_INFINITY
        );
        assert_eq!(log_add_exp(f32::INFINITY, 1.0), f32::INFINITY);
        assert!(log_add_exp(f32::NAN, 1.0).is_nan());
        assert!(log_add_exp(1.0, f32::NAN).is_nan());
    }
}
