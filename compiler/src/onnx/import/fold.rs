//! Constant folding: the value of a node whose inputs are all constants, and the shape rules that
//! folding shares with the translation of the same ops on tensors (Reshape's `0` and `-1`, the
//! axes of Squeeze and Unsqueeze, Slice's clamping).
//!
//! Exporters compute shapes at run time (`x.view(x.size(0), -1)` becomes Shape, Gather,
//! Unsqueeze, Concat, Reshape); with every input shape fixed at import these chains are constants,
//! and folding them is what lets the Reshape become a `flatten` or a `reshape` with a literal shape.

use super::attributes as attr;
use super::tensor::{Constant, Data, data_type};
use crate::onnx::proto::NodeProto;

/// The ops [`fold`] evaluates.
pub const FOLDABLE: &[&str] = &[
    "Identity",
    "Cast",
    "Shape",
    "Size",
    "Reshape",
    "Flatten",
    "Unsqueeze",
    "Squeeze",
    "Concat",
    "Gather",
    "Slice",
    "Transpose",
    "Expand",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Min",
    "Max",
    "Equal",
    "Less",
    "Greater",
    "Where",
    "Not",
    "Neg",
    "Sqrt",
    "Abs",
    "Exp",
    "Reciprocal",
    "Floor",
    "Ceil",
    "ConstantOfShape",
    "Range",
];

/// Evaluates `node` (of the default domain at `opset`) on constant `inputs` (`None` for an
/// omitted optional input). The error says why it cannot be folded.
pub fn fold(
    node: &NodeProto,
    opset: i64,
    inputs: &[Option<&Constant>],
) -> Result<Vec<Constant>, String> {
    let op = node.op_type.as_deref().unwrap_or("");
    let input = |index: usize| -> Result<&Constant, String> {
        inputs
            .get(index)
            .copied()
            .flatten()
            .ok_or_else(|| format!("input {index} is missing"))
    };
    let folded = match op {
        "Identity" => input(0)?.clone(),
        "Cast" => cast(
            input(0)?,
            attr::int(node, "to", data_type::FLOAT as i64) as i32,
        )?,
        "Shape" => {
            let data = input(0)?;
            let dims: Vec<i64> = data.shape.iter().map(|&d| d as i64).collect();
            let (start, end) = shape_range(node, dims.len());
            Constant::i64(vec![end - start], dims[start..end].to_vec())
        }
        "Size" => Constant::i64(vec![], vec![input(0)?.len() as i64]),
        "Reshape" => {
            let data = input(0)?;
            let shape = reshape_target(
                &data.shape,
                &input(1)?.to_i64(),
                attr::int(node, "allowzero", 0) != 0,
            )?;
            data.reshaped(shape)
        }
        "Flatten" => {
            let data = input(0)?;
            let shape = flatten_shape(&data.shape, attr::int(node, "axis", 1))?;
            data.reshaped(shape)
        }
        "Unsqueeze" => {
            let data = input(0)?;
            let axes = axes_of(node, opset, 13, inputs)?.ok_or("Unsqueeze needs axes")?;
            data.reshaped(unsqueeze_shape(&data.shape, &axes)?)
        }
        "Squeeze" => {
            let data = input(0)?;
            let axes = axes_of(node, opset, 13, inputs)?;
            data.reshaped(squeeze_shape(&data.shape, axes.as_deref())?)
        }
        "Concat" => {
            let parts: Vec<&Constant> = inputs.iter().copied().flatten().collect();
            concat(&parts, attr::int(node, "axis", 0))?
        }
        "Gather" => gather(input(0)?, input(1)?, attr::int(node, "axis", 0))?,
        "Slice" => {
            let data = input(0)?;
            let ranges = slice_ranges(node, opset, &data.shape, inputs)?;
            slice(data, &ranges)
        }
        "Transpose" => {
            let data = input(0)?;
            let perm = transpose_perm(node, data.shape.len())?;
            transpose(data, &perm)
        }
        "Expand" => {
            let data = input(0)?;
            let target: Vec<usize> = input(1)?
                .to_i64()
                .iter()
                .map(|&d| usize::try_from(d).map_err(|_| format!("Expand to a negative size {d}")))
                .collect::<Result<_, _>>()?;
            let shape = broadcast_shapes(&data.shape, &target)?;
            broadcast_to(data, &shape)?
        }
        "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Min" | "Max" | "Equal" | "Less" | "Greater" => {
            binary(op, input(0)?, input(1)?)?
        }
        "Where" => where_(input(0)?, input(1)?, input(2)?)?,
        "Not" => unary_i64(input(0)?, |v| i64::from(v == 0)),
        "Neg" | "Sqrt" | "Abs" | "Exp" | "Reciprocal" | "Floor" | "Ceil" => unary(op, input(0)?),
        "ConstantOfShape" => {
            let shape: Vec<usize> = input(0)?
                .to_i64()
                .iter()
                .map(|&d| usize::try_from(d).map_err(|_| format!("a negative size {d}")))
                .collect::<Result<_, _>>()?;
            let count: usize = shape.iter().product();
            if count > 1 << 24 {
                return Err(format!(
                    "ConstantOfShape of {count} elements is too large to fold"
                ));
            }
            let value = match attr::tensor(node, "value") {
                Some(tensor) => super::tensor::decode_tensor(tensor)?,
                None => Constant::f32(vec![1], vec![0.0]),
            };
            match value.data {
                Data::F32(values) => {
                    Constant::f32(shape, vec![*values.first().unwrap_or(&0.0); count])
                }
                Data::I64(values) => {
                    Constant::i64(shape, vec![*values.first().unwrap_or(&0); count])
                }
            }
        }
        "Range" => range(input(0)?, input(1)?, input(2)?)?,
        other => return Err(format!("`{other}` cannot be folded")),
    };
    Ok(vec![folded])
}

/// Normalizes a possibly negative axis of a tensor of rank `rank`.
pub fn axis(axis: i64, rank: usize) -> Result<usize, String> {
    let rank_i = rank as i64;
    let normalized = if axis < 0 { axis + rank_i } else { axis };
    if (0..rank_i).contains(&normalized) {
        Ok(normalized as usize)
    } else {
        Err(format!("axis {axis} is out of range for rank {rank}"))
    }
}

/// The `start..end` of Shape (opset 15's `start` and `end` attributes).
fn shape_range(node: &NodeProto, rank: usize) -> (usize, usize) {
    let clamp = |value: i64| -> usize {
        let value = if value < 0 {
            value + rank as i64
        } else {
            value
        };
        value.clamp(0, rank as i64) as usize
    };
    let start = clamp(attr::int(node, "start", 0));
    let end = clamp(attr::int(node, "end", rank as i64));
    (start, end.max(start))
}

/// The shape Reshape gives: `0` copies the input's dimension (unless `allow_zero`), one `-1`
/// takes what is left.
pub fn reshape_target(
    input: &[usize],
    target: &[i64],
    allow_zero: bool,
) -> Result<Vec<usize>, String> {
    let total: usize = input.iter().product();
    let mut shape = Vec::with_capacity(target.len());
    let mut inferred = None;
    for (index, &dim) in target.iter().enumerate() {
        match dim {
            -1 if inferred.is_none() => {
                inferred = Some(index);
                shape.push(1);
            }
            0 if !allow_zero => shape.push(
                *input
                    .get(index)
                    .ok_or_else(|| format!("Reshape copies axis {index}, which the input lacks"))?,
            ),
            dim if dim >= 0 => shape.push(dim as usize),
            dim => return Err(format!("Reshape to {target:?}: bad size {dim}")),
        }
    }
    let known = shape
        .iter()
        .try_fold(1usize, |known, &dim| known.checked_mul(dim))
        .ok_or_else(|| format!("Reshape to {target:?} overflows"))?;
    if let Some(index) = inferred {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(format!("cannot reshape {input:?} to {target:?}"));
        }
        shape[index] = total / known;
    } else if known != total {
        return Err(format!(
            "cannot reshape {input:?} ({total} elements) to {target:?}"
        ));
    }
    Ok(shape)
}

/// Flatten's two-dimensional shape.
pub fn flatten_shape(input: &[usize], axis_attr: i64) -> Result<Vec<usize>, String> {
    let split = if axis_attr == input.len() as i64 {
        input.len()
    } else {
        axis(axis_attr, input.len())?
    };
    Ok(vec![
        input[..split].iter().product(),
        input[split..].iter().product(),
    ])
}

/// The `axes` of Squeeze, Unsqueeze and the reductions: an attribute before `input_from` (the
/// opset that moved it to the second input), the second input from then on.
pub fn axes_of(
    node: &NodeProto,
    opset: i64,
    input_from: i64,
    inputs: &[Option<&Constant>],
) -> Result<Option<Vec<i64>>, String> {
    if opset < input_from {
        return Ok(attr::ints(node, "axes"));
    }
    match (
        node.input.get(1).filter(|name| !name.is_empty()),
        inputs.get(1).copied().flatten(),
    ) {
        (None, _) => Ok(None),
        (Some(_), Some(axes)) => Ok(Some(axes.to_i64())),
        (Some(name), None) => Err(format!("the axes `{name}` are not a constant")),
    }
}

/// Unsqueeze's shape: a 1 inserted at each axis (of the output's rank).
pub fn unsqueeze_shape(input: &[usize], axes: &[i64]) -> Result<Vec<usize>, String> {
    let rank = input.len() + axes.len();
    let mut positions = axes
        .iter()
        .map(|&a| axis(a, rank))
        .collect::<Result<Vec<_>, _>>()?;
    positions.sort_unstable();
    let mut dims = input.iter();
    Ok((0..rank)
        .map(|index| {
            if positions.binary_search(&index).is_ok() {
                1
            } else {
                *dims.next().unwrap_or(&1)
            }
        })
        .collect())
}

/// Squeeze's shape: the given axes (which must be 1) removed, or every 1 without axes.
pub fn squeeze_shape(input: &[usize], axes: Option<&[i64]>) -> Result<Vec<usize>, String> {
    let Some(axes) = axes else {
        return Ok(input.iter().copied().filter(|&d| d != 1).collect());
    };
    let positions = axes
        .iter()
        .map(|&a| axis(a, input.len()))
        .collect::<Result<Vec<_>, _>>()?;
    for &position in &positions {
        if input[position] != 1 {
            return Err(format!(
                "Squeeze of axis {position} of size {}",
                input[position]
            ));
        }
    }
    Ok(input
        .iter()
        .enumerate()
        .filter(|(index, _)| !positions.contains(index))
        .map(|(_, &d)| d)
        .collect())
}

/// Transpose's permutation: the attribute, or the reversed axes.
pub fn transpose_perm(node: &NodeProto, rank: usize) -> Result<Vec<usize>, String> {
    let perm = match attr::ints(node, "perm") {
        Some(perm) => perm
            .iter()
            .map(|&a| axis(a, rank))
            .collect::<Result<Vec<_>, _>>()?,
        None => (0..rank).rev().collect(),
    };
    let mut sorted = perm.clone();
    sorted.sort_unstable();
    if sorted != (0..rank).collect::<Vec<_>>() {
        return Err(format!("{perm:?} is not a permutation of {rank} axes"));
    }
    Ok(perm)
}

/// One axis of a slice: `start`, `step` and the number of elements taken.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SliceRange {
    pub start: i64,
    pub step: i64,
    pub count: usize,
}

/// The range Slice takes along every axis of `shape` (whole axes where it names none): the
/// inputs from opset 10 on, the attributes before.
pub fn slice_ranges(
    node: &NodeProto,
    opset: i64,
    shape: &[usize],
    inputs: &[Option<&Constant>],
) -> Result<Vec<SliceRange>, String> {
    let constant = |index: usize| -> Result<Option<Vec<i64>>, String> {
        match (
            node.input.get(index).filter(|name| !name.is_empty()),
            inputs.get(index).copied().flatten(),
        ) {
            (None, _) => Ok(None),
            (Some(_), Some(values)) => Ok(Some(values.to_i64())),
            (Some(name), None) => Err(format!("the slice bound `{name}` is not a constant")),
        }
    };
    let (starts, ends, axes, steps) = if opset < 10 {
        (
            attr::ints(node, "starts").ok_or("Slice needs starts")?,
            attr::ints(node, "ends").ok_or("Slice needs ends")?,
            attr::ints(node, "axes"),
            None,
        )
    } else {
        (
            constant(1)?.ok_or("Slice needs starts")?,
            constant(2)?.ok_or("Slice needs ends")?,
            constant(3)?,
            constant(4)?,
        )
    };
    let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err("Slice's starts, ends, axes and steps differ in length".into());
    }
    let mut ranges: Vec<SliceRange> = shape
        .iter()
        .map(|&dim| SliceRange {
            start: 0,
            step: 1,
            count: dim,
        })
        .collect();
    for index in 0..starts.len() {
        let position = axis(axes[index], shape.len())?;
        let dim = shape[position] as i64;
        let step = steps[index];
        if step == 0 {
            return Err("Slice with step 0".into());
        }
        let resolve = |value: i64| {
            if value < 0 {
                value.saturating_add(dim)
            } else {
                value
            }
        };
        let (start, end) = if step > 0 {
            (
                resolve(starts[index]).clamp(0, dim),
                resolve(ends[index]).clamp(0, dim),
            )
        } else {
            (
                resolve(starts[index]).clamp(0, dim - 1),
                resolve(ends[index]).clamp(-1, dim - 1),
            )
        };
        let span = if step > 0 { end - start } else { start - end };
        let count = if span <= 0 {
            0
        } else {
            (span + step.abs() - 1) / step.abs()
        };
        ranges[position] = SliceRange {
            start,
            step,
            count: count as usize,
        };
    }
    Ok(ranges)
}

/// The row-major strides of `shape`.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for index in (0..shape.len().saturating_sub(1)).rev() {
        strides[index] = strides[index + 1] * shape[index + 1];
    }
    strides
}

/// The elements of `data` at the flat positions `positions`.
fn pick(data: &Constant, shape: Vec<usize>, positions: impl Iterator<Item = usize>) -> Constant {
    match &data.data {
        Data::F32(values) => Constant::f32(shape, positions.map(|p| values[p]).collect()),
        Data::I64(values) => Constant::i64(shape, positions.map(|p| values[p]).collect()),
    }
}

/// Calls `visit` with the multi-index of each element of `shape`, in row-major order.
fn for_each_index(shape: &[usize], mut visit: impl FnMut(&[usize])) {
    if shape.contains(&0) {
        return;
    }
    let mut index = vec![0; shape.len()];
    loop {
        visit(&index);
        let mut axis = shape.len();
        loop {
            if axis == 0 {
                return;
            }
            axis -= 1;
            index[axis] += 1;
            if index[axis] < shape[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
}

fn slice(data: &Constant, ranges: &[SliceRange]) -> Constant {
    let in_strides = strides(&data.shape);
    let shape: Vec<usize> = ranges.iter().map(|range| range.count).collect();
    let mut positions = Vec::new();
    for_each_index(&shape, |index| {
        positions.push(
            index
                .iter()
                .zip(ranges)
                .zip(&in_strides)
                .map(|((&i, range), &stride)| {
                    (range.start + i as i64 * range.step) as usize * stride
                })
                .sum(),
        );
    });
    pick(data, shape, positions.into_iter())
}

fn transpose(data: &Constant, perm: &[usize]) -> Constant {
    let in_strides = strides(&data.shape);
    let shape: Vec<usize> = perm.iter().map(|&axis| data.shape[axis]).collect();
    let mut positions = Vec::new();
    for_each_index(&shape, |index| {
        positions.push(
            index
                .iter()
                .zip(perm)
                .map(|(&i, &axis)| i * in_strides[axis])
                .sum(),
        );
    });
    pick(data, shape, positions.into_iter())
}

fn concat(parts: &[&Constant], axis_attr: i64) -> Result<Constant, String> {
    let first = parts.first().ok_or("Concat of nothing")?;
    let axis = axis(axis_attr, first.shape.len())?;
    let floats = parts.iter().any(|part| matches!(part.data, Data::F32(_)));
    let mut shape = first.shape.clone();
    shape[axis] = 0;
    for part in parts {
        if part.shape.len() != shape.len()
            || part
                .shape
                .iter()
                .enumerate()
                .any(|(i, &d)| i != axis && d != first.shape[i])
        {
            return Err(format!(
                "Concat of shapes {:?} and {:?}",
                first.shape, part.shape
            ));
        }
        shape[axis] += part.shape[axis];
    }
    let outer: usize = shape[..axis].iter().product();
    let mut f32_values = Vec::new();
    let mut i64_values = Vec::new();
    for row in 0..outer {
        for part in parts {
            let chunk: usize = part.shape[axis..].iter().product();
            if floats {
                f32_values.extend_from_slice(&part.to_f32()[row * chunk..(row + 1) * chunk]);
            } else {
                i64_values.extend_from_slice(&part.to_i64()[row * chunk..(row + 1) * chunk]);
            }
        }
    }
    Ok(if floats {
        Constant::f32(shape, f32_values)
    } else {
        Constant::i64(shape, i64_values)
    })
}

fn gather(data: &Constant, indices: &Constant, axis_attr: i64) -> Result<Constant, String> {
    let axis = axis(axis_attr, data.shape.len())?;
    let dim = data.shape[axis] as i64;
    let indices_values = indices
        .to_i64()
        .into_iter()
        .map(|i| {
            let i = if i < 0 { i + dim } else { i };
            if (0..dim).contains(&i) {
                Ok(i as usize)
            } else {
                Err(format!("Gather index {i} is out of range for size {dim}"))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let outer: usize = data.shape[..axis].iter().product();
    let inner: usize = data.shape[axis + 1..].iter().product();
    let mut shape = data.shape[..axis].to_vec();
    shape.extend_from_slice(&indices.shape);
    shape.extend_from_slice(&data.shape[axis + 1..]);
    let mut positions = Vec::new();
    for row in 0..outer {
        for &index in &indices_values {
            let base = (row * data.shape[axis] + index) * inner;
            positions.extend(base..base + inner);
        }
    }
    Ok(pick(data, shape, positions.into_iter()))
}

/// NumPy's broadcast of two shapes.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let rank = a.len().max(b.len());
    let dim = |shape: &[usize], i: usize| {
        if i < rank - shape.len() {
            1
        } else {
            shape[i - (rank - shape.len())]
        }
    };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => Err(format!("shapes {a:?} and {b:?} do not broadcast")),
        })
        .collect()
}

/// `data` broadcast to `shape` (which it must broadcast to).
fn broadcast_to(data: &Constant, shape: &[usize]) -> Result<Constant, String> {
    let count = shape
        .iter()
        .try_fold(1usize, |count, &dim| count.checked_mul(dim));
    if count.is_none_or(|count| count > 1 << 26) {
        return Err(format!(
            "a constant of shape {shape:?} is too large to fold"
        ));
    }
    let offset = shape.len() - data.shape.len();
    let in_strides = strides(&data.shape);
    let mut positions = Vec::new();
    for_each_index(shape, |index| {
        positions.push(
            (0..data.shape.len())
                .map(|i| {
                    if data.shape[i] == 1 {
                        0
                    } else {
                        index[i + offset] * in_strides[i]
                    }
                })
                .sum(),
        );
    });
    Ok(pick(data, shape.to_vec(), positions.into_iter()))
}

fn binary(op: &str, a: &Constant, b: &Constant) -> Result<Constant, String> {
    let shape = broadcast_shapes(&a.shape, &b.shape)?;
    let (a, b) = (broadcast_to(a, &shape)?, broadcast_to(b, &shape)?);
    let comparison = matches!(op, "Equal" | "Less" | "Greater");
    let floats = matches!(a.data, Data::F32(_)) || matches!(b.data, Data::F32(_));
    if floats || op == "Pow" {
        let (x, y) = (a.to_f32(), b.to_f32());
        let pairs = x.iter().zip(&y);
        if comparison {
            let values = pairs
                .map(|(&x, &y)| {
                    i64::from(match op {
                        "Equal" => x == y,
                        "Less" => x < y,
                        _ => x > y,
                    })
                })
                .collect();
            return Ok(Constant::i64(shape, values));
        }
        let values = pairs
            .map(|(&x, &y)| match op {
                "Add" => x + y,
                "Sub" => x - y,
                "Mul" => x * y,
                "Div" => x / y,
                "Pow" => x.powf(y),
                "Min" => x.min(y),
                _ => x.max(y),
            })
            .collect();
        let folded = Constant::f32(shape, values);
        // Pow of integers stays an integer.
        return Ok(if floats {
            folded
        } else {
            Constant::i64(folded.shape.clone(), folded.to_i64())
        });
    }
    let (x, y) = (a.to_i64(), b.to_i64());
    let values = x
        .iter()
        .zip(&y)
        .map(|(&x, &y)| match op {
            "Add" => Ok(x.wrapping_add(y)),
            "Sub" => Ok(x.wrapping_sub(y)),
            "Mul" => Ok(x.wrapping_mul(y)),
            "Div" if y == 0 => Err("integer division by zero".to_string()),
            "Div" => Ok(x.wrapping_div(y)),
            "Min" => Ok(x.min(y)),
            "Max" => Ok(x.max(y)),
            "Equal" => Ok(i64::from(x == y)),
            "Less" => Ok(i64::from(x < y)),
            _ => Ok(i64::from(x > y)),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Constant::i64(shape, values))
}

fn where_(condition: &Constant, a: &Constant, b: &Constant) -> Result<Constant, String> {
    let shape = broadcast_shapes(&broadcast_shapes(&condition.shape, &a.shape)?, &b.shape)?;
    let condition = broadcast_to(condition, &shape)?.to_i64();
    let (a, b) = (broadcast_to(a, &shape)?, broadcast_to(b, &shape)?);
    Ok(match (&a.data, &b.data) {
        (Data::I64(x), Data::I64(y)) => Constant::i64(
            shape,
            condition
                .iter()
                .zip(x.iter().zip(y))
                .map(|(&c, (&x, &y))| if c != 0 { x } else { y })
                .collect(),
        ),
        _ => {
            let (x, y) = (a.to_f32(), b.to_f32());
            Constant::f32(
                shape,
                condition
                    .iter()
                    .zip(x.iter().zip(&y))
                    .map(|(&c, (&x, &y))| if c != 0 { x } else { y })
                    .collect(),
            )
        }
    })
}

fn unary(op: &str, data: &Constant) -> Constant {
    if let (Data::I64(values), "Neg" | "Abs") = (&data.data, op) {
        let values = values.iter().map(|&v| {
            if op == "Neg" {
                v.wrapping_neg()
            } else {
                v.wrapping_abs()
            }
        });
        return Constant::i64(data.shape.clone(), values.collect());
    }
    let values = data.to_f32().into_iter().map(|v| match op {
        "Neg" => -v,
        "Sqrt" => v.sqrt(),
        "Abs" => v.abs(),
        "Exp" => v.exp(),
        "Reciprocal" => 1.0 / v,
        "Floor" => v.floor(),
        _ => v.ceil(),
    });
    Constant::f32(data.shape.clone(), values.collect())
}

fn unary_i64(data: &Constant, f: impl Fn(i64) -> i64) -> Constant {
    Constant::i64(
        data.shape.clone(),
        data.to_i64().into_iter().map(f).collect(),
    )
}

fn cast(data: &Constant, to: i32) -> Result<Constant, String> {
    use data_type::*;
    Ok(match to {
        FLOAT | DOUBLE | FLOAT16 => Constant::f32(data.shape.clone(), data.to_f32()),
        BOOL => unary_i64(
            &Constant::i64(
                data.shape.clone(),
                data.to_f32().iter().map(|&v| i64::from(v != 0.0)).collect(),
            ),
            |v| v,
        ),
        INT64 | INT32 | INT16 | INT8 | UINT8 | UINT16 | UINT32 | UINT64 => {
            Constant::i64(data.shape.clone(), data.to_i64())
        }
        other => return Err(format!("Cast to element type {other}")),
    })
}

fn range(start: &Constant, limit: &Constant, delta: &Constant) -> Result<Constant, String> {
    let floats = [start, limit, delta]
        .iter()
        .any(|c| matches!(c.data, Data::F32(_)));
    let (s, l, d) = (
        start.scalar_f32().ok_or("Range needs scalars")? as f64,
        limit.scalar_f32().ok_or("Range needs scalars")? as f64,
        delta.scalar_f32().ok_or("Range needs scalars")? as f64,
    );
    if d == 0.0 {
        return Err("Range with delta 0".into());
    }
    let count = ((l - s) / d).ceil().max(0.0) as usize;
    if count > 1 << 24 {
        return Err("Range too large to fold".into());
    }
    let values: Vec<f64> = (0..count).map(|i| s + i as f64 * d).collect();
    Ok(if floats {
        Constant::f32(vec![count], values.iter().map(|&v| v as f32).collect())
    } else {
        Constant::i64(vec![count], values.iter().map(|&v| v as i64).collect())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op: &str) -> NodeProto {
        NodeProto {
            op_type: Some(op.into()),
            ..Default::default()
        }
    }

    #[test]
    fn the_flatten_chain_of_pytorch_folds_to_a_shape() {
        // Shape(x) -> Gather(0) -> Unsqueeze(0), Concat with [-1]: x.view(x.size(0), -1).
        let x = Constant::f32(vec![2, 3, 1, 1], vec![0.0; 6]);
        let shape = fold(&node("Shape"), 17, &[Some(&x)]).unwrap().remove(0);
        let index = Constant::i64(vec![], vec![0]);
        let batch = fold(&node("Gather"), 17, &[Some(&shape), Some(&index)])
            .unwrap()
            .remove(0);
        assert_eq!(batch, Constant::i64(vec![], vec![2]));
        let axes = Constant::i64(vec![1], vec![0]);
        let mut unsqueeze = node("Unsqueeze");
        unsqueeze.input = vec!["b".into(), "axes".into()];
        let batch = fold(&unsqueeze, 17, &[Some(&batch), Some(&axes)])
            .unwrap()
            .remove(0);
        let rest = Constant::i64(vec![1], vec![-1]);
        let target = fold(&node("Concat"), 17, &[Some(&batch), Some(&rest)])
            .unwrap()
            .remove(0);
        assert_eq!(target, Constant::i64(vec![2], vec![2, -1]));
        assert_eq!(
            reshape_target(&x.shape, &target.to_i64(), false).unwrap(),
            vec![2, 3]
        );
    }

    #[test]
    fn slices_clamp_and_step_like_onnx() {
        let data = Constant::i64(vec![5], vec![0, 1, 2, 3, 4]);
        let mut slice_node = node("Slice");
        slice_node.input = vec!["d".into(), "s".into(), "e".into(), "a".into(), "t".into()];
        let run = |start: i64, end: i64, step: i64| {
            let (s, e, a, t) = (
                Constant::i64(vec![1], vec![start]),
                Constant::i64(vec![1], vec![end]),
                Constant::i64(vec![1], vec![0]),
                Constant::i64(vec![1], vec![step]),
            );
            fold(
                &slice_node,
                13,
                &[Some(&data), Some(&s), Some(&e), Some(&a), Some(&t)],
            )
            .unwrap()
            .remove(0)
            .to_i64()
        };
        assert_eq!(run(1, i64::MAX, 1), vec![1, 2, 3, 4]);
        assert_eq!(run(-2, 100, 1), vec![3, 4]);
        assert_eq!(run(-1, i64::MIN, -2), vec![4, 2, 0]);
        assert_eq!(run(3, 1, 1), Vec::<i64>::new());
    }

    #[test]
    fn transpose_gather_and_broadcasting_arithmetic() {
        let m = Constant::f32(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let t = fold(&node("Transpose"), 17, &[Some(&m)]).unwrap().remove(0);
        assert_eq!(
            t,
            Constant::f32(vec![3, 2], vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0])
        );
        assert_eq!(t, m.transposed_2d());
        let rows = Constant::i64(vec![1], vec![-1]);
        let g = fold(&node("Gather"), 17, &[Some(&m), Some(&rows)])
            .unwrap()
            .remove(0);
        assert_eq!(g, Constant::f32(vec![1, 3], vec![4.0, 5.0, 6.0]));
        let column = Constant::f32(vec![2, 1], vec![10.0, 20.0]);
        let sum = fold(&node("Add"), 17, &[Some(&m), Some(&column)])
            .unwrap()
            .remove(0);
        assert_eq!(sum.to_f32(), vec![11.0, 12.0, 13.0, 24.0, 25.0, 26.0]);
        assert!(broadcast_shapes(&[2, 3], &[4]).is_err());
    }

    #[test]
    fn squeeze_and_unsqueeze_shapes() {
        assert_eq!(
            unsqueeze_shape(&[3, 4], &[0, -1]).unwrap(),
            vec![1, 3, 4, 1]
        );
        assert_eq!(squeeze_shape(&[1, 3, 1], None).unwrap(), vec![3]);
        assert_eq!(squeeze_shape(&[1, 3, 1], Some(&[-1])).unwrap(), vec![1, 3]);
        assert!(squeeze_shape(&[1, 3], Some(&[1])).is_err());
    }
}
