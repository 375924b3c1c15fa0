//! Reductions over a set of axes (ONNX's `ReduceSum`, `ReduceMean` and `ReduceMax`): the
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    /// The sum.
    Sum,
    /// The sum divided by the number of elements reduced.
    Mean,
    /// The maximum; NaN if the group holds one, as `torch.amax`.
    Max,
}

impl ReduceOp {
    /// Every reduction.
    pub const ALL: [ReduceOp; 3] = [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max];

    /// The name of the layer in `.nn` files and printed IR.
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "reduce_sum",
            ReduceOp::Mean => "reduce_mean",
            ReduceOp::Max => "reduce_max",
        }
    }

    /// FLOPs of a reduction of `input_elements` values into `output_elements` results: one add
    /// (or compare) per input element, and for the mean one multiplication per result by
    /// `1 / count`.
    pub fn flops(self, input_elements: u64, output_elements: u64) -> u64 {
        match self {
            ReduceOp::Sum | ReduceOp::Max => input_elements,
            ReduceOp::Mean => input_elements + output_elements,
        }
    }

    /// The value a group starts from: 0 for sums, negative infinity for maxima.
    pub fn initial(self) -> f32 {
        match self {
            ReduceOp::Sum | ReduceOp::Mean => 0.0,
            ReduceOp::Max => f32::NEG_INFINITY,
        }
    }

    /// A group's running value with one more element.
    #[inline(always)]
    pub fn combine(self, accumulated: f32, x: f32) -> f32 {
        match self {
            ReduceOp::Sum | ReduceOp::Mean => accumulated + x,
            ReduceOp::Max => maximum(accumulated, x),
        }
    }

    /// The result of a group of `count` elements from its running value.
    pub fn finish(self, accumulated: f32, count: usize) -> f32 {
        match self {
            ReduceOp::Sum | ReduceOp::Max => accumulated,
            ReduceOp::Mean => accumulated / count as f32,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reductions_have_names_and_values() {
        let names: Vec<&str> = ReduceOp::ALL.iter().map(|op| op.name()).collect();
        assert_eq!(names, ["reduce_sum", "reduce_mean", "reduce_max"]);
        for (op, expected) in ReduceOp::ALL.into_iter().zip([6.0, 2.0, 3.0]) {
            let accumulated = [1.0, 3.0, 2.0]
                .into_iter()
                .fold(op.initial(), |accumulated, x| op.combine(accumulated, x));
            assert_eq!(op.finish(accumulated, 3), expected, "{op:?}");
        }
        assert!(ReduceOp::Max.combine(1.0, f32::NAN).is_nan());
        assert!(ReduceOp::Max.combine(f32::NAN, 1.0).is_nan());
        assert_eq!(ReduceOp::Mean.flops(12, 3), 15);
    }
}
