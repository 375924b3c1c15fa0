//! Typed readers of a built-in's arguments: tensors, integers, numbers, booleans, strings, lists,
//! spatial sizes and axes, each with an optional default and an error at the argument if it is of
//! the wrong kind or out of range.

use super::call::{CallCx, normalize_axis};
use super::value::Value;
use super::{Eval, Stop};
use crate::ir;
use nnc_ops::quant::QuantFormat;

impl CallCx<'_, '_> {
    /// The tensor argument `name`.
    pub(super) fn tensor(&mut self, name: &str) -> Eval<ir::Value> {
        match self.required(name)? {
            Value::Tensor(value) => Ok(value),
            other => Err(self.wrong_type(name, "a tensor", &other)),
        }
    }

    /// The tensor argument `name`, if given.
    pub(super) fn optional_tensor(&mut self, name: &str) -> Eval<Option<ir::Value>> {
        if self.present(name) {
            self.tensor(name).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A non-empty list of tensors, like `[a, b]`.
    pub(super) fn tensor_list(&mut self, name: &str) -> Eval<Vec<ir::Value>> {
        match self.required(name)? {
            Value::List(items) if !items.is_empty() => {
                let mut tensors = Vec::new();
                for item in &items {
                    match item {
                        Value::Tensor(value) => tensors.push(*value),
                        other => return Err(self.wrong_type(name, "a list of tensors", other)),
                    }
                }
                Ok(tensors)
            }
            other => {
                Err(self.wrong_type(name, "a non-empty list of tensors, like `[a, b]`", &other))
            }
        }
    }

    /// The `quantize` argument of a layer that owns quantizable weights: `false` keeps its
    /// weight in f32, a format name (`"q8_0"`) picks that format, `true` (the default) follows
    /// `--quantize`. A format needs rows of whole blocks: `row_length` is the layer's.
    pub(super) fn layer_quantize(&mut self, row_length: usize) -> Eval<Option<ir::LayerQuantize>> {
        let formats = || {
            let names: Vec<String> = QuantFormat::ALL
                .iter()
                .map(|format| format!("\"{format}\""))
                .collect();
            names.join(", ")
        };
        match self.slot("quantize") {
            None | Some((Value::Bool(true), _)) => Ok(None),
            Some((Value::Poison, _)) => Err(Stop),
            Some((Value::Bool(false), _)) => Ok(Some(ir::LayerQuantize::Off)),
            Some((Value::Str(name), _)) => {
                let Some(format) = QuantFormat::from_name(&name) else {
                    let message = format!(
                        "`quantize` of `{}` must be `false` or a format, {}, not \"{name}\"",
                        self.name,
                        formats()
                    );
                    return Err(self.error(
                        "quantize",
                        message,
                        Some("`quantize = false` keeps the layer's weights in f32"),
                    ));
                };
                if !row_length.is_multiple_of(nnc_ops::quant::BLOCK_LENGTH) {
                    let message = format!(
                        "a {format} row holds whole blocks of {} values, but the rows of this \
                         layer's weight have {row_length}",
                        nnc_ops::quant::BLOCK_LENGTH
                    );
                    return Err(self.error("quantize", message, None));
                }
                Ok(Some(ir::LayerQuantize::Format(format)))
            }
            Some((other, _)) => {
                let expected = format!("`false` or a format name ({})", formats());
                Err(self.wrong_type("quantize", &expected, &other))
            }
        }
    }

    /// Records the layer's `quantize` argument on its weight `weight`.
    pub(super) fn set_layer_quantize(
        &mut self,
        weight: ir::Value,
        layer_quantize: Option<ir::LayerQuantize>,
    ) {
        let graph = &mut self.builder.graph;
        if let (Some(layer_quantize), ir::ValueDef::Param(param)) =
            (layer_quantize, graph.values[weight].def)
        {
            graph.params[param].layer_quantize = Some(layer_quantize);
        }
    }

    /// The argument `name`, or `default` if it was not given and there is one.
    fn value_or_default(&mut self, name: &str, default: Option<Value>) -> Eval<Value> {
        match (self.present(name), default) {
            (false, Some(default)) => Ok(default),
            _ => self.required(name),
        }
    }

    /// An integer argument.
    pub(super) fn int(&mut self, name: &str, default: Option<i64>) -> Eval<i64> {
        match self.value_or_default(name, default.map(Value::Int))? {
            Value::Int(value) => Ok(value),
            other => Err(self.wrong_type(name, "an integer", &other)),
        }
    }

    /// An integer argument that must be at least 1.
    pub(super) fn positive(&mut self, name: &str, default: Option<i64>) -> Eval<usize> {
        let value = self.int(name, default)?;
        if value >= 1 {
            usize::try_from(value).map_err(|_| Stop)
        } else {
            Err(self.error(
                name,
                format!("`{name}` must be at least 1, but it is {value}"),
                None,
            ))
        }
    }

    /// An integer argument that must be at least 1, if given.
    pub(super) fn optional_positive(&mut self, name: &str) -> Eval<Option<usize>> {
        if self.present(name) {
            self.positive(name, None).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A number argument, integer or float, that fits in an `f32`.
    pub(super) fn float(&mut self, name: &str, default: Option<f64>) -> Eval<f64> {
        let value = self.value_or_default(name, default.map(Value::Float))?;
        match value.as_float() {
            Some(number) if number.is_finite() && (number as f32).is_finite() => Ok(number),
            Some(number) => Err(self.error(
                name,
                format!("`{name}` = {number} does not fit in an f32"),
                None,
            )),
            None => Err(self.wrong_type(name, "a number", &value)),
        }
    }

    /// A boolean argument.
    pub(super) fn bool(&mut self, name: &str, default: Option<bool>) -> Eval<bool> {
        match self.value_or_default(name, default.map(Value::Bool))? {
            Value::Bool(value) => Ok(value),
            other => Err(self.wrong_type(name, "`true` or `false`", &other)),
        }
    }

    /// A string argument.
    pub(super) fn string(&mut self, name: &str, default: Option<&str>) -> Eval<String> {
        match self.value_or_default(name, default.map(|text| Value::Str(text.to_string())))? {
            Value::Str(value) => Ok(value),
            other => Err(self.wrong_type(name, "a string", &other)),
        }
    }

    /// A string argument, if given.
    pub(super) fn optional_string(&mut self, name: &str) -> Eval<Option<String>> {
        if self.present(name) {
            self.string(name, None).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A list of integers, like `[0, 2, 1]`.
    pub(super) fn int_list(&mut self, name: &str, default: Option<Vec<i64>>) -> Eval<Vec<i64>> {
        let value = self.value_or_default(
            name,
            default.map(|items| Value::List(items.into_iter().map(Value::Int).collect())),
        )?;
        match &value {
            Value::List(items) => items
                .iter()
                .map(|item| match item {
                    Value::Int(value) => Ok(*value),
                    other => Err(self.wrong_type(name, "a list of integers", other)),
                })
                .collect(),
            other => Err(self.wrong_type(name, "a list of integers, like `[1, 2]`", other)),
        }
    }

    /// A square matrix of 0s and 1s (or booleans), as a list of rows: a block mask.
    pub(super) fn bool_matrix(&mut self, name: &str) -> Eval<Vec<Vec<bool>>> {
        let value = self.required(name)?;
        let rows = match &value {
            Value::List(rows) if !rows.is_empty() => rows,
            other => return Err(self.wrong_type(name, "a list of rows of 0s and 1s", other)),
        };
        let mut matrix = Vec::new();
        for row in rows {
            let Value::List(cells) = row else {
                return Err(self.wrong_type(name, "a list of rows of 0s and 1s", row));
            };
            let mut parsed = Vec::new();
            for cell in cells {
                parsed.push(match cell {
                    Value::Int(0) | Value::Bool(false) => false,
                    Value::Int(1) | Value::Bool(true) => true,
                    other => return Err(self.wrong_type(name, "made of 0s and 1s", other)),
                });
            }
            matrix.push(parsed);
        }
        if matrix.iter().any(|row| row.len() != matrix.len()) {
            return Err(self.error(name, "the block mask must be square", None));
        }
        Ok(matrix)
    }

    /// An integer or a list of `count` integers, each at least 1: `kernel = 3` or `kernel = [3, 1]`.
    pub(super) fn spatial(
        &mut self,
        name: &str,
        count: usize,
        default: Option<i64>,
    ) -> Eval<Vec<usize>> {
        let values = self.spatial_allow_zero(name, count, default)?;
        if values.contains(&0) {
            return Err(self.error(name, format!("`{name}` must be at least 1"), None));
        }
        Ok(values)
    }

    /// An integer or a list of `count` non-negative integers.
    pub(super) fn spatial_allow_zero(
        &mut self,
        name: &str,
        count: usize,
        default: Option<i64>,
    ) -> Eval<Vec<usize>> {
        let value = self.value_or_default(name, default.map(Value::Int))?;
        let items = match &value {
            Value::Int(single) => vec![*single; count],
            Value::List(items)
                if items.len() == count
                    && items.iter().all(|item| matches!(item, Value::Int(_))) =>
            {
                items
                    .iter()
                    .map(|item| {
                        if let Value::Int(value) = item {
                            *value
                        } else {
                            0
                        }
                    })
                    .collect()
            }
            other => {
                let expected = if count == 1 {
                    "an integer".to_string()
                } else {
                    format!("an integer or a list of {count} integers")
                };
                return Err(self.wrong_type(name, &expected, other));
            }
        };
        items
            .into_iter()
            .map(|item| {
                usize::try_from(item).map_err(|_| {
                    self.error(
                        name,
                        format!("`{name}` cannot be negative, but it is {item}"),
                        None,
                    )
                })
            })
            .collect()
    }

    /// An axis argument, negative counting from the end as in PyTorch.
    pub(super) fn axis(&mut self, name: &str, rank: usize, default: Option<i64>) -> Eval<usize> {
        let value = self.int(name, default)?;
        normalize_axis(value, rank).ok_or_else(|| {
            self.error(
                name,
                format!("dim {value} is out of range for a tensor of rank {rank}"),
                Some("dims count from 0, or from -1 at the end"),
            )
        })
    }

    /// The shape of a tensor of the graph.
    pub(super) fn shape(&self, value: ir::Value) -> Vec<usize> {
        self.builder.graph.ty(value).shape.clone()
    }

    /// The rank of a tensor of the graph.
    pub(super) fn rank(&self, value: ir::Value) -> usize {
        self.builder.graph.ty(value).rank()
    }

    /// The size of the last axis of a tensor; an error at argument `name` if it has none.
    pub(super) fn last_dim(&mut self, value: ir::Value, name: &str) -> Eval<usize> {
        match self.builder.graph.ty(value).last_dim() {
            Some(dim) => Ok(dim),
            None => Err(self.error(
                name,
                format!("`{}` needs a tensor with at least one dimension", self.name),
                None,
            )),
        }
    }
}
