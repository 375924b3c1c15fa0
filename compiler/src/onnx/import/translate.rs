//! ONNX nodes to `.nn` statements, one node at a time in graph order (ONNX requires it to be
//! topological).
//!
//! Nodes whose inputs are all constants are folded ([`super::fold`]); the rest become layer calls
//! (`Conv` to `conv2d` with its weights), operators (`Add` to `a + b`) or nothing (`Identity`);
//! `resampling.rs` translates the resizing and padding ops, `math.rs` the reductions,
//! `LogSoftmax` and the unary math ops.
//! Small fusions read back to what a person writes: a bias `Add` after `MatMul` or `Conv` goes into
//! the layer, `Gemm`'s transposes and scales go into the weight, and Paddle's hard swish
//! (`x * relu6(x + 3) / 6`) becomes `hard_swish(x)`. A node that cannot be translated is recorded
//! with the reason, and its outputs are left unknown so that the nodes after it are skipped instead
//! of reported again.

mod math;
mod resampling;

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use super::attributes as attr;
use super::fold::{self, SliceRange};
use super::program::{Arg, Expr, Layer, Operand, Program, Stmt, TensorInfo, ValueId};
use super::tensor::{Constant, data_type, decode_tensor};
use crate::onnx::proto::NodeProto;

/// What a name of the ONNX graph stands for.
#[derive(Clone, Debug)]
pub enum Known {
    /// A constant, with the ONNX name it was defined under (for weight names).
    Const(Rc<Constant>, String),
    Tensor(ValueId),
}

/// Why a node was not translated.
pub enum NodeError {
    /// It cannot be expressed; the reason is for the user.
    Unsupported(String),
    /// An input is unknown because an earlier node failed: not reported again.
    Skipped,
}

impl From<String> for NodeError {
    fn from(reason: String) -> Self {
        NodeError::Unsupported(reason)
    }
}

impl From<&str> for NodeError {
    fn from(reason: &str) -> Self {
        NodeError::Unsupported(reason.to_string())
    }
}

type NodeResult = Result<(), NodeError>;

/// The op types translated on tensors (beyond [`fold::FOLDABLE`] on constants).
pub const TRANSLATED: &[&str] = &[
    "Constant",
    "Identity",
    "Dropout",
    "Cast",
    "Shape",
    "Size",
    "Conv",
    "BatchNormalization",
    "Gemm",
    "MatMul",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Relu",
    "Sigmoid",
    "Tanh",
    "Softplus",
    "HardSwish",
    "HardSigmoid",
    "LeakyRelu",
    "Clip",
    "Gelu",
    "Softmax",
    "LogSoftmax",
    "ReduceSum",
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceSumSquare",
    "ReduceLogSumExp",
    "Sqrt",
    "Exp",
    "Erf",
    "Abs",
    "Neg",
    "Pow",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Flatten",
    "Reshape",
    "Transpose",
    "Concat",
    "Squeeze",
    "Unsqueeze",
    "Slice",
    "Split",
    "Gather",
    "LayerNormalization",
    "Resize",
    "Upsample",
    "ConvTranspose",
    "Pad",
];

/// The state of the translation.
pub struct Translator<'p> {
    pub opset: i64,
    pub program: &'p mut Program,
    pub known: HashMap<String, Known>,
    /// How many times each ONNX name is read (by nodes and as a graph output).
    pub onnx_uses: HashMap<String, usize>,
    /// How many readers each value has left to fuse into: fusions need a single reader.
    value_uses: HashMap<ValueId, usize>,
    /// The statement that computes each value.
    producer: HashMap<ValueId, usize>,
    layer_names: HashSet<String>,
    counters: HashMap<&'static str, usize>,
    /// The `parameter` statement of each constant tensor used in arithmetic, by ONNX name.
    parameters: HashMap<String, ValueId>,
}

impl<'p> Translator<'p> {
    pub fn new(opset: i64, program: &'p mut Program, onnx_uses: HashMap<String, usize>) -> Self {
        Translator {
            opset,
            program,
            known: HashMap::new(),
            onnx_uses,
            value_uses: HashMap::new(),
            producer: HashMap::new(),
            layer_names: HashSet::new(),
            counters: HashMap::new(),
            parameters: HashMap::new(),
        }
    }

    /// A new tensor value for the ONNX name `name` (empty for an intermediate of a fusion).
    pub fn new_tensor(&mut self, name: &str, shape: Vec<usize>, float: bool) -> ValueId {
        let id = ValueId(self.program.tensors.len());
        self.program.tensors.push(TensorInfo { shape, float });
        let uses = if name.is_empty() {
            1
        } else {
            self.onnx_uses.get(name).copied().unwrap_or(0)
        };
        self.value_uses.insert(id, uses);
        if !name.is_empty() {
            self.known.insert(name.to_string(), Known::Tensor(id));
        }
        id
    }

    fn info(&self, value: ValueId) -> &TensorInfo {
        &self.program.tensors[value.0]
    }

    pub(super) fn shape(&self, value: ValueId) -> Vec<usize> {
        self.info(value).shape.clone()
    }

    pub(super) fn is_float(&self, value: ValueId) -> bool {
        self.info(value).float
    }

    /// Adds a statement computing a new value named `name`.
    pub(super) fn push(
        &mut self,
        name: &str,
        expr: Expr,
        layer: Option<Layer>,
        shape: Vec<usize>,
        float: bool,
    ) -> ValueId {
        let output = self.new_tensor(name, shape, float);
        self.producer.insert(output, self.program.stmts.len());
        self.program.stmts.push(Stmt {
            output,
            expr,
            layer,
            dead: false,
        });
        output
    }

    /// `name` stands for `value` too (Identity, a fused bias): its readers become the value's.
    fn alias(&mut self, name: &str, value: ValueId) {
        let extra = self.onnx_uses.get(name).copied().unwrap_or(0);
        *self.value_uses.entry(value).or_insert(0) += extra;
        self.known.insert(name.to_string(), Known::Tensor(value));
    }

    /// The statement that computes `value`, if it has exactly one reader left (the caller).
    fn sole_producer(&self, value: ValueId) -> Option<usize> {
        (self.value_uses.get(&value) == Some(&1))
            .then(|| self.producer.get(&value).copied())
            .flatten()
            .filter(|&index| !self.program.stmts[index].dead)
    }

    /// Translates one node.
    pub fn node(&mut self, node: &NodeProto) -> NodeResult {
        let op = node.op_type.as_deref().unwrap_or("");
        if op == "Constant" {
            return self.constant(node);
        }
        if matches!(op, "If" | "Loop" | "Scan") {
            return Err(
                "control flow is not supported: export the model with the branch or loop fixed (trace it with fixed inputs, or simplify it with onnxsim), so that the graph has no If/Loop/Scan".into(),
            );
        }
        let mut inputs: Vec<Option<Known>> = Vec::with_capacity(node.input.len());
        for name in &node.input {
            if name.is_empty() {
                inputs.push(None);
            } else {
                inputs.push(Some(
                    self.known.get(name).cloned().ok_or(NodeError::Skipped)?,
                ));
            }
        }
        let all_constant = inputs
            .iter()
            .all(|input| !matches!(input, Some(Known::Tensor(_))));
        if all_constant && fold::FOLDABLE.contains(&op) {
            let constants: Vec<Option<&Constant>> = inputs
                .iter()
                .map(|input| match input {
                    Some(Known::Const(constant, _)) => Some(constant.as_ref()),
                    _ => None,
                })
                .collect();
            let outputs = fold::fold(node, self.opset, &constants)?;
            for (name, constant) in node.output.iter().zip(outputs) {
                self.known
                    .insert(name.clone(), Known::Const(Rc::new(constant), name.clone()));
            }
            return Ok(());
        }
        let cx = Cx { node, inputs };
        match op {
            "Identity" | "Dropout" => {
                if node.output.get(1).is_some_and(|mask| self.onnx_uses.get(mask).copied().unwrap_or(0) > 0) {
                    return Err("Dropout's mask output is used".into());
                }
                let x = cx.tensor(0)?;
                self.alias(cx.output(), x);
                Ok(())
            }
            "Cast" => self.cast(&cx),
            "Shape" | "Size" => {
                let x = cx.tensor(0)?;
                let shape = self.shape(x);
                let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
                let constant = if op == "Size" {
                    Constant::i64(vec![], vec![dims.iter().product()])
                } else {
                    let rank = dims.len() as i64;
                    let clamp = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
                    let start = clamp(attr::int(node, "start", 0));
                    let end = clamp(attr::int(node, "end", rank)).max(start);
                    Constant::i64(vec![end - start], dims[start..end].to_vec())
                };
                let name = cx.output().to_string();
                self.known.insert(name.clone(), Known::Const(Rc::new(constant), name));
                Ok(())
            }
            "Conv" => self.conv(&cx),
            "BatchNormalization" => self.batch_norm(&cx),
            "Gemm" => self.gemm(&cx),
            "MatMul" => self.matmul(&cx),
            "Add" | "Sub" | "Mul" | "Div" => self.binary(&cx, op),
            "Relu" | "Sigmoid" | "Tanh" | "Softplus" | "HardSwish" => {
                let function = match op {
                    "Relu" => "relu",
                    "Sigmoid" => "sigmoid",
                    "Tanh" => "tanh",
                    "Softplus" => "softplus",
                    _ => "hard_swish",
                };
                self.unary_call(&cx, function, vec![])
            }
            "LeakyRelu" => {
                let alpha = attr::float(node, "alpha", 0.01);
                let extra = if (alpha - 0.01).abs() > 1e-9 {
                    vec![Arg::keyword("negative_slope", Arg::Float(alpha))]
                } else {
                    vec![]
                };
                self.unary_call(&cx, "leaky_relu", extra)
            }
            "HardSigmoid" => self.hard_sigmoid(&cx),
            "Clip" => self.clip(&cx),
            "Gelu" => {
                let extra = match attr::string(node, "approximate").as_deref() {
                    None | Some("none") => vec![],
                    Some("tanh") => vec![Arg::keyword("approximate", Arg::Str("tanh"))],
                    Some(other) => return Err(format!("Gelu with approximate = {other:?}").into()),
                };
                self.unary_call(&cx, "gelu", extra)
            }
            "Softmax" | "LogSoftmax" => self.softmax(&cx, op),
            "ReduceSum" | "ReduceMean" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ReduceL1"
            | "ReduceL2" | "ReduceSumSquare" | "ReduceLogSumExp" => self.reduce(&cx, op),
            "Sqrt" | "Exp" | "Erf" | "Abs" | "Neg" => self.unary_math(&cx, op),
            "Pow" => self.pow(&cx),
            "MaxPool" | "AveragePool" => self.pool(&cx, op == "MaxPool"),
            "GlobalAveragePool" | "GlobalMaxPool" => {
                let x = cx.tensor(0)?;
                let mut shape = self.shape(x);
                if shape.len() < 3 {
                    return Err(format!("{op} of a rank-{} tensor", shape.len()).into());
                }
                shape[2..].iter_mut().for_each(|d| *d = 1);
                let function = if op == "GlobalAveragePool" { "global_avg_pool" } else { "global_max_pool" };
                self.push(cx.output(), call(function, vec![Arg::Value(x)]), None, shape, true);
                Ok(())
            }
            "Flatten" => {
                let x = cx.tensor(0)?;
                let input_shape = self.shape(x);
                let axis = attr::int(node, "axis", 1);
                let shape = fold::flatten_shape(&input_shape, axis)?;
                self.reshape_to(&cx, x, shape);
                Ok(())
            }
            "Reshape" => {
                let x = cx.tensor(0)?;
                let target = cx.constant(1)?;
                let shape = fold::reshape_target(
                    &self.shape(x),
                    &target.to_i64(),
                    attr::int(node, "allowzero", 0) != 0,
                )?;
                self.reshape_to(&cx, x, shape);
                Ok(())
            }
            "Squeeze" | "Unsqueeze" => {
                let x = cx.tensor(0)?;
                let constants = cx.constants();
                let axes = fold::axes_of(node, self.opset, 13, &constants.iter().map(|c| c.as_deref()).collect::<Vec<_>>())?;
                let input_shape = self.shape(x);
                let shape = if op == "Squeeze" {
                    fold::squeeze_shape(&input_shape, axes.as_deref())?
                } else {
                    fold::unsqueeze_shape(&input_shape, &axes.ok_or("Unsqueeze needs axes")?)?
                };
                self.reshape_to(&cx, x, shape);
                Ok(())
            }
            "Transpose" => {
                let x = cx.tensor(0)?;
                let input_shape = self.shape(x);
                let perm = fold::transpose_perm(node, input_shape.len())?;
                let moved: Vec<usize> = (0..perm.len()).filter(|&i| perm[i] != i).collect();
                if moved.is_empty() {
                    self.alias(cx.output(), x);
                    return Ok(());
                }
                let shape: Vec<usize> = perm.iter().map(|&axis| input_shape[axis]).collect();
                let expr = if let [a, b] = moved[..] {
                    call("transpose", vec![Arg::Value(x), Arg::Int(a as i64), Arg::Int(b as i64)])
                } else {
                    call(
                        "permute",
                        vec![Arg::Value(x), Arg::Ints(perm.iter().map(|&a| a as i64).collect())],
                    )
                };
                let float = self.info(x).float;
                self.push(cx.output(), expr, None, shape, float);
                Ok(())
            }
            "Concat" => self.concat(&cx),
            "Slice" => {
                let x = cx.tensor(0)?;
                let constants = cx.constants();
                let refs: Vec<Option<&Constant>> = constants.iter().map(|c| c.as_deref()).collect();
                let ranges = fold::slice_ranges(node, self.opset, &self.shape(x), &refs)?;
                self.slices(x, &ranges, cx.output())
            }
            "Split" => self.split(&cx),
            "Gather" => self.gather(&cx),
            "LayerNormalization" => self.layer_norm(&cx),
            "Resize" | "Upsample" => self.resize(&cx, op),
            "ConvTranspose" => self.conv_transpose(&cx),
            "Pad" => self.pad(&cx),
            other if fold::FOLDABLE.contains(&other) => {
                Err(format!("`{other}` is supported on constants only, and an input here is a tensor computed at run time").into())
            }
            _ => Err("no translation to .nn".into()),
        }
    }

    fn constant(&mut self, node: &NodeProto) -> NodeResult {
        let constant = if let Some(tensor) = attr::tensor(node, "value") {
            decode_tensor(tensor).map_err(|reason| format!("its value cannot be read: {reason}"))?
        } else if attr::has(node, "value_float") {
            Constant::f32(vec![], vec![attr::float(node, "value_float", 0.0)])
        } else if let Some(values) = attr::floats(node, "value_floats") {
            Constant::f32(vec![values.len()], values)
        } else if attr::has(node, "value_int") {
            Constant::i64(vec![], vec![attr::int(node, "value_int", 0)])
        } else if let Some(values) = attr::ints(node, "value_ints") {
            Constant::i64(vec![values.len()], values)
        } else {
            return Err("a Constant without a value, value_float(s) or value_int(s)".into());
        };
        let name = node.output.first().cloned().unwrap_or_default();
        self.known
            .insert(name.clone(), Known::Const(Rc::new(constant), name));
        Ok(())
    }

    fn cast(&mut self, cx: &Cx<'_>) -> NodeResult {
        let x = cx.tensor(0)?;
        let to = attr::int(cx.node, "to", 0) as i32;
        let float = self.info(x).float;
        let to_float = matches!(
            to,
            data_type::FLOAT | data_type::DOUBLE | data_type::FLOAT16
        );
        if to_float == float && (to_float || to == data_type::INT64 || to == data_type::INT32) {
            self.alias(cx.output(), x);
            Ok(())
        } else {
            Err(format!("Cast of a tensor to element type {to}").into())
        }
    }

    fn unary_call(&mut self, cx: &Cx<'_>, function: &'static str, extra: Vec<Arg>) -> NodeResult {
        let x = cx.tensor(0)?;
        let mut args = vec![Arg::Value(x)];
        args.extend(extra);
        let shape = self.shape(x);
        self.push(cx.output(), call(function, args), None, shape, true);
        Ok(())
    }

    /// ONNX's `clip(alpha * x + beta, 0, 1)` as nnc's `hard_sigmoid(y) = clip(y / 6 + 1/2, 0, 1)`
    /// with `y = 6 alpha x + 6 beta - 3`: PyTorch's slope 1/6 needs no rescaling, Paddle's 0.2 does.
    fn hard_sigmoid(&mut self, cx: &Cx<'_>) -> NodeResult {
        let x = cx.tensor(0)?;
        let alpha = attr::float(cx.node, "alpha", 0.2);
        let beta = attr::float(cx.node, "beta", 0.5);
        let (scale, shift) = (6.0 * alpha, 6.0 * beta - 3.0);
        let shape = self.shape(x);
        let mut y = x;
        if (scale - 1.0).abs() > 1e-6 {
            y = self.push(
                "",
                binary('*', Operand::Value(y), Operand::Number(scale)),
                None,
                shape.clone(),
                true,
            );
        }
        if shift.abs() > 1e-6 {
            y = self.push(
                "",
                binary('+', Operand::Value(y), Operand::Number(shift)),
                None,
                shape.clone(),
                true,
            );
        }
        self.push(
            cx.output(),
            call("hard_sigmoid", vec![Arg::Value(y)]),
            None,
            shape,
            true,
        );
        Ok(())
    }

    fn clip(&mut self, cx: &Cx<'_>) -> NodeResult {
        let x = cx.tensor(0)?;
        let (min, max) = if self.opset < 11 {
            (
                Some(attr::float(cx.node, "min", f32::MIN)),
                Some(attr::float(cx.node, "max", f32::MAX)),
            )
        } else {
            let bound = |index: usize| -> Result<Option<f32>, NodeError> {
                match cx.inputs.get(index) {
                    None | Some(None) => Ok(None),
                    Some(Some(Known::Const(constant, _))) => Ok(Some(
                        constant.scalar_f32().ok_or("Clip bounds must be scalars")?,
                    )),
                    Some(Some(Known::Tensor(_))) => Err("Clip bounds computed at run time".into()),
                }
            };
            (bound(1)?, bound(2)?)
        };
        let unbounded = |bound: Option<f32>| bound.is_none_or(|b| b >= f32::MAX || b.is_infinite());
        let function = match (min, max) {
            (Some(min), max) if min == 0.0 && unbounded(max) => "relu",
            (Some(min), Some(max)) if min == 0.0 && max == 6.0 => "relu6",
            _ => {
                return Err(format!(
                    "Clip to [{}, {}]: the .nn language has relu (0 to infinity) and relu6 (0 to 6)",
                    min.map_or("-inf".into(), |v| v.to_string()),
                    max.map_or("inf".into(), |v| v.to_string())
                )
                .into());
            }
        };
        let shape = self.shape(x);
        self.push(
            cx.output(),
            call(function, vec![Arg::Value(x)]),
            None,
            shape,
            true,
        );
        Ok(())
    }

    /// `Softmax` or `LogSoftmax` along one axis.
    fn softmax(&mut self, cx: &Cx<'_>, op: &str) -> NodeResult {
        let x = cx.tensor(0)?;
        let shape = self.shape(x);
        let rank = shape.len();
        let default = if self.opset < 13 { 1 } else { -1 };
        let axis = fold::axis(attr::int(cx.node, "axis", default), rank)?;
        // Before opset 13 Softmax flattened the axes from `axis` on into one.
        if self.opset < 13 && shape[axis + 1..].iter().any(|&d| d != 1) {
            return Err(format!(
                "{op} (opset {}) over axes {axis}.. of {shape:?} together",
                self.opset
            )
            .into());
        }
        let mut args = vec![Arg::Value(x)];
        if axis + 1 != rank {
            args.push(Arg::keyword("dim", Arg::Int(axis as i64)));
        }
        let function = if op == "LogSoftmax" {
            "log_softmax"
        } else {
            "softmax"
        };
        self.push(cx.output(), call(function, args), None, shape, true);
        Ok(())
    }

    fn reshape_to(&mut self, cx: &Cx<'_>, x: ValueId, shape: Vec<usize>) {
        let input = self.shape(x);
        if shape == input {
            self.alias(cx.output(), x);
            return;
        }
        let float = self.info(x).float;
        let flattened = input.len() >= 2 && shape == [input[0], input[1..].iter().product()];
        let expr = if flattened {
            call("flatten", vec![Arg::Value(x)])
        } else {
            call(
                "reshape",
                vec![
                    Arg::Value(x),
                    Arg::Ints(shape.iter().map(|&d| d as i64).collect()),
                ],
            )
        };
        self.push(cx.output(), expr, None, shape, float);
    }

    fn conv(&mut self, cx: &Cx<'_>) -> NodeResult {
        let node = cx.node;
        let x = cx.tensor(0)?;
        let (weight, weight_name) = cx.constant_named(1)?;
        let bias = cx.optional_constant_named(2)?;
        let input = self.shape(x);
        let spatial = input.len().saturating_sub(2);
        if !(1..=2).contains(&spatial) || weight.shape.len() != input.len() {
            return Err(format!(
                "Conv of a {input:?} input with a {:?} weight: nnc has conv1d and conv2d",
                weight.shape
            )
            .into());
        }
        let groups = attr::int(node, "group", 1);
        let out_channels = weight.shape[0];
        if groups < 1
            || weight.shape[1] * groups as usize != input[1]
            || out_channels % groups as usize != 0
        {
            return Err(format!(
                "Conv with group {groups}, input {input:?}, weight {:?}",
                weight.shape
            )
            .into());
        }
        let kernel: Vec<i64> = weight.shape[2..].iter().map(|&k| k as i64).collect();
        if let Some(declared) = attr::ints(node, "kernel_shape")
            && declared != kernel
        {
            return Err(format!(
                "kernel_shape {declared:?} does not match the weight {:?}",
                weight.shape
            )
            .into());
        }
        let window = Window::read(node, &input[2..], &kernel, true)?;
        let output_spatial = window.output(&input[2..], false)?;
        let mut args = vec![
            Arg::Value(x),
            Arg::Int(out_channels as i64),
            Arg::keyword("kernel", Arg::spatial(&kernel)),
        ];
        window.push_args(&mut args, &kernel, true);
        let (weights, sources) = conv_weights(
            "Conv",
            &mut args,
            groups,
            (weight, weight_name),
            bias,
            out_channels,
        )?;
        let function = if spatial == 1 { "conv1d" } else { "conv2d" };
        let layer = self.layer(node, "conv", weights, sources);
        let mut shape = vec![input[0], out_channels];
        shape.extend(output_spatial);
        self.push(cx.output(), call(function, args), Some(layer), shape, true);
        Ok(())
    }

    fn batch_norm(&mut self, cx: &Cx<'_>) -> NodeResult {
        let x = cx.tensor(0)?;
        let shape = self.shape(x);
        if shape.len() < 2 {
            return Err("BatchNormalization of a rank-1 tensor".into());
        }
        let channels = shape[1];
        let mut weights = Vec::new();
        let mut sources = Vec::new();
        for (index, suffix) in [
            (1, "weight"),
            (2, "bias"),
            (3, "running_mean"),
            (4, "running_var"),
        ] {
            let (constant, name) = cx.constant_named(index)?;
            if constant.len() != channels {
                return Err(format!(
                    "BatchNormalization's {suffix} has {} values for {channels} channels",
                    constant.len()
                )
                .into());
            }
            weights.push((suffix, Constant::f32(vec![channels], constant.to_f32())));
            sources.push(name);
        }
        let eps = attr::float(cx.node, "epsilon", 1e-5);
        let mut args = vec![Arg::Value(x)];
        if (eps - 1e-5).abs() > 1e-9 {
            args.push(Arg::keyword("eps", Arg::Float(eps)));
        }
        let layer = self.layer(cx.node, "bn", weights, sources);
        self.push(
            cx.output(),
            call("batch_norm", args),
            Some(layer),
            shape,
            true,
        );
        Ok(())
    }

    fn layer_norm(&mut self, cx: &Cx<'_>) -> NodeResult {
        let x = cx.tensor(0)?;
        let shape = self.shape(x);
        let axis = fold::axis(attr::int(cx.node, "axis", -1), shape.len())?;
        if axis + 1 != shape.len() {
            return Err(format!("LayerNormalization over axes {axis}.. of {shape:?}: nnc's layer_norm is over the last axis").into());
        }
        let features = shape[axis];
        let (scale, scale_name) = cx.constant_named(1)?;
        let bias = cx.optional_constant_named(2)?;
        if scale.len() != features || bias.as_ref().is_some_and(|(b, _)| b.len() != features) {
            return Err("LayerNormalization's scale or bias does not match the last axis".into());
        }
        let mut weights = vec![("weight", Constant::f32(vec![features], scale.to_f32()))];
        let mut sources = vec![scale_name];
        match bias {
            Some((bias, name)) => {
                weights.push(("bias", Constant::f32(vec![features], bias.to_f32())));
                sources.push(name);
            }
            None => weights.push(("bias", Constant::f32(vec![features], vec![0.0; features]))),
        }
        let eps = attr::float(cx.node, "epsilon", 1e-5);
        let mut args = vec![Arg::Value(x)];
        if (eps - 1e-5).abs() > 1e-9 {
            args.push(Arg::keyword("eps", Arg::Float(eps)));
        }
        let layer = self.layer(cx.node, "norm", weights, sources);
        self.push(
            cx.output(),
            call("layer_norm", args),
            Some(layer),
            shape,
            true,
        );
        Ok(())
    }

    fn gemm(&mut self, cx: &Cx<'_>) -> NodeResult {
        let node = cx.node;
        let x = cx.tensor(0)?;
        let (b, b_name) = cx.constant_named(1)?;
        let input = self.shape(x);
        if attr::int(node, "transA", 0) != 0 || input.len() != 2 || b.shape.len() != 2 {
            return Err(format!(
                "Gemm of {input:?} by {:?} (transA = {})",
                b.shape,
                attr::int(node, "transA", 0)
            )
            .into());
        }
        let mut weight = if attr::int(node, "transB", 0) != 0 {
            b.as_ref().clone()
        } else {
            b.transposed_2d()
        };
        let weight = {
            let alpha = attr::float(node, "alpha", 1.0);
            if alpha != 1.0 {
                weight = Constant::f32(
                    weight.shape.clone(),
                    weight.to_f32().iter().map(|v| v * alpha).collect(),
                );
            }
            Constant::f32(weight.shape.clone(), weight.to_f32())
        };
        let (out_features, in_features) = (weight.shape[0], weight.shape[1]);
        if in_features != input[1] {
            return Err(
                format!("Gemm of {input:?} by a [{out_features}, {in_features}] weight").into(),
            );
        }
        let beta = attr::float(node, "beta", 1.0);
        let bias = cx.optional_constant_named(2)?.filter(|_| beta != 0.0);
        let mut args = vec![Arg::Value(x), Arg::Int(out_features as i64)];
        let mut weights = vec![("weight", weight)];
        let mut sources = vec![b_name];
        match bias {
            Some((c, name)) => {
                let values = c.to_f32();
                let values = match values.len() {
                    1 => vec![values[0] * beta; out_features],
                    n if n == out_features => values.iter().map(|v| v * beta).collect(),
                    _ => return Err(format!("a Gemm bias of shape {:?}", c.shape).into()),
                };
                weights.push(("bias", Constant::f32(vec![out_features], values)));
                sources.push(name);
            }
            None => args.push(Arg::keyword("bias", Arg::Bool(false))),
        }
        let layer = self.layer(node, "fc", weights, sources);
        self.push(
            cx.output(),
            call("linear", args),
            Some(layer),
            vec![input[0], out_features],
            true,
        );
        Ok(())
    }

    fn matmul(&mut self, cx: &Cx<'_>) -> NodeResult {
        let a = cx.tensor(0)?;
        let a_shape = self.shape(a);
        match cx.inputs.get(1) {
            Some(Some(Known::Const(b, b_name))) => {
                if b.shape.len() != 2
                    || a_shape.len() < 2
                    || *a_shape.last().unwrap_or(&0) != b.shape[0]
                {
                    return Err(format!("MatMul of {a_shape:?} by a constant {:?}", b.shape).into());
                }
                let out_features = b.shape[1];
                let weight = b.transposed_2d();
                let layer = self.layer(
                    cx.node,
                    "fc",
                    vec![("weight", weight)],
                    vec![b_name.clone()],
                );
                let mut shape = a_shape.clone();
                *shape.last_mut().expect("rank >= 2") = out_features;
                let args = vec![
                    Arg::Value(a),
                    Arg::Int(out_features as i64),
                    Arg::keyword("bias", Arg::Bool(false)),
                ];
                self.push(cx.output(), call("linear", args), Some(layer), shape, true);
                Ok(())
            }
            Some(Some(Known::Tensor(b))) => {
                let b = *b;
                let b_shape = self.shape(b);
                let (ra, rb) = (a_shape.len(), b_shape.len());
                if ra < 2 || rb < 2 || a_shape[ra - 1] != b_shape[rb - 2] {
                    return Err(format!("MatMul of {a_shape:?} by {b_shape:?}").into());
                }
                let mut shape = fold::broadcast_shapes(&a_shape[..ra - 2], &b_shape[..rb - 2])?;
                shape.extend([a_shape[ra - 2], b_shape[rb - 1]]);
                self.push(
                    cx.output(),
                    call("matmul", vec![Arg::Value(a), Arg::Value(b)]),
                    None,
                    shape,
                    true,
                );
                Ok(())
            }
            _ => Err("MatMul without a second input".into()),
        }
    }

    fn binary(&mut self, cx: &Cx<'_>, op: &str) -> NodeResult {
        let symbol = match op {
            "Add" => '+',
            "Sub" => '-',
            "Mul" => '*',
            _ => '/',
        };
        let (lhs, rhs) = (cx.known(0)?, cx.known(1)?);
        match (lhs, rhs) {
            (Known::Tensor(a), Known::Tensor(b)) => {
                let (a, b) = (*a, *b);
                if !self.info(a).float || !self.info(b).float {
                    return Err(format!("{op} of integer tensors").into());
                }
                let shape = fold::broadcast_shapes(&self.shape(a), &self.shape(b))?;
                self.push(
                    cx.output(),
                    binary(symbol, Operand::Value(a), Operand::Value(b)),
                    None,
                    shape,
                    true,
                );
                Ok(())
            }
            (Known::Tensor(x), Known::Const(c, name))
            | (Known::Const(c, name), Known::Tensor(x)) => {
                let x = *x;
                let tensor_first = matches!(lhs, Known::Tensor(_));
                let x_shape = self.shape(x);
                let shape = fold::broadcast_shapes(&x_shape, &c.shape)?;
                if symbol == '+' && self.try_fuse_bias(cx, x, c, name)? {
                    return Ok(());
                }
                let Some(number) = c.uniform_f32().filter(|_| shape == x_shape) else {
                    // A constant tensor: a `parameter` whose weight it is.
                    if !self.info(x).float || !c.is_nonempty_f32() {
                        return Err(format!(
                            "{op} of a tensor and an integer or empty constant of shape {:?}",
                            c.shape
                        )
                        .into());
                    }
                    let p = self.parameter(cx.node, c, name);
                    let (lhs, rhs) = match tensor_first {
                        true => (Operand::Value(x), Operand::Value(p)),
                        false => (Operand::Value(p), Operand::Value(x)),
                    };
                    self.push(cx.output(), binary(symbol, lhs, rhs), None, shape, true);
                    return Ok(());
                };
                if !number.is_finite() {
                    return Err(format!("{op} with {number}").into());
                }
                if !self.info(x).float {
                    return Err(format!("{op} of an integer tensor").into());
                }
                if symbol == '/' && (!tensor_first || number == 0.0) {
                    return Err(format!("{op} of a number by a tensor").into());
                }
                if symbol == '/' && self.try_hard_swish_number(cx, x, number)? {
                    return Ok(());
                }
                let expr = match (symbol, tensor_first) {
                    ('-', false) => binary('-', Operand::Number(number), Operand::Value(x)),
                    (_, _) => binary(symbol, Operand::Value(x), Operand::Number(number)),
                };
                self.push(cx.output(), expr, None, shape, true);
                Ok(())
            }
            (Known::Const(..), Known::Const(..)) => {
                Err(format!("{op} of constants that cannot be folded").into())
            }
        }
    }

    /// The value of `parameter(shape) as NAME` holding the constant `name` (its first use writes
    /// the statement, named after the constant where that is a module path, `pixel_mean` or
    /// `blocks.0.gamma`).
    fn parameter(&mut self, node: &NodeProto, constant: &Constant, name: &str) -> ValueId {
        if let Some(&value) = self.parameters.get(name) {
            *self.value_uses.entry(value).or_insert(0) += 1;
            return value;
        }
        let candidate = (!name.contains("::") && !name.starts_with('/'))
            .then(|| sanitize_layer_name(name))
            .filter(|candidate| !candidate.is_empty());
        let layer = self.unique_layer(
            node,
            candidate,
            "param",
            vec![("", constant.clone())],
            vec![name.to_string()],
        );
        let dims = constant.shape.iter().map(|&d| d as i64).collect();
        let value = self.push(
            "",
            call("parameter", vec![Arg::Ints(dims)]),
            Some(layer),
            constant.shape.clone(),
            true,
        );
        self.parameters.insert(name.to_string(), value);
        value
    }

    /// `conv(x) + b` or `linear(x) + b` with a per-channel constant `b`: the layer's bias.
    fn try_fuse_bias(
        &mut self,
        cx: &Cx<'_>,
        x: ValueId,
        bias: &Constant,
        name: &str,
    ) -> Result<bool, NodeError> {
        let Some(index) = self.sole_producer(x) else {
            return Ok(false);
        };
        let shape = self.shape(x);
        let stmt = &self.program.stmts[index];
        let Expr::Call { function, args } = &stmt.expr else {
            return Ok(false);
        };
        let channel_axis = match *function {
            "linear" => shape.len() - 1,
            "conv1d" | "conv2d" | "conv_transpose2d" => 1,
            _ => return Ok(false),
        };
        let has_bias = !args.iter().any(
            |arg| matches!(arg, Arg::Keyword("bias", value) if matches!(**value, Arg::Bool(false))),
        );
        let channels = shape[channel_axis];
        let offset = shape.len().checked_sub(bias.shape.len());
        let fits = offset.is_some_and(|offset| {
            bias.shape
                .iter()
                .enumerate()
                .all(|(i, &d)| d == 1 || (i + offset == channel_axis && d == channels))
        }) && bias.len() == channels;
        if has_bias || !fits {
            return Ok(false);
        }
        let stmt = &mut self.program.stmts[index];
        if let Expr::Call { args, .. } = &mut stmt.expr {
            args.retain(|arg| !matches!(arg, Arg::Keyword("bias", _)));
        }
        if let Some(layer) = &mut stmt.layer {
            layer
                .weights
                .push(("bias", Constant::f32(vec![channels], bias.to_f32())));
            layer.sources.push(name.to_string());
        }
        self.alias(cx.output(), x);
        // The Add read `x` once; its readers are now `x`'s.
        *self.value_uses.entry(x).or_insert(1) -= 1;
        Ok(true)
    }

    /// `t / 6` where `t = x * relu6(x + 3)`: Paddle's and older PyTorch exports' hard swish.
    fn try_hard_swish_number(
        &mut self,
        cx: &Cx<'_>,
        t: ValueId,
        divisor: f32,
    ) -> Result<bool, NodeError> {
        if divisor != 6.0 {
            return Ok(false);
        }
        let Some(product) = self.sole_producer(t) else {
            return Ok(false);
        };
        let Expr::Binary {
            op: '*',
            lhs: Operand::Value(a),
            rhs: Operand::Value(b),
        } = self.program.stmts[product].expr
        else {
            return Ok(false);
        };
        for (x, clipped) in [(a, b), (b, a)] {
            let Some(relu6) = self.sole_producer(clipped) else {
                continue;
            };
            let Expr::Call {
                function: "relu6",
                args,
            } = &self.program.stmts[relu6].expr
            else {
                continue;
            };
            let [Arg::Value(shifted)] = args[..] else {
                continue;
            };
            let Some(add) = self.sole_producer(shifted) else {
                continue;
            };
            let Expr::Binary {
                op: '+',
                lhs: Operand::Value(source),
                rhs: Operand::Number(three),
            } = self.program.stmts[add].expr
            else {
                continue;
            };
            if source != x || three != 3.0 {
                continue;
            }
            for index in [product, relu6, add] {
                self.program.stmts[index].dead = true;
            }
            // `x` was read by the add and the product; the hard swish reads it once.
            *self.value_uses.entry(x).or_insert(2) -= 1;
            let shape = self.shape(x);
            self.push(
                cx.output(),
                call("hard_swish", vec![Arg::Value(x)]),
                None,
                shape,
                true,
            );
            return Ok(true);
        }
        Ok(false)
    }

    fn pool(&mut self, cx: &Cx<'_>, max: bool) -> NodeResult {
        let node = cx.node;
        let x = cx.tensor(0)?;
        if node
            .output
            .get(1)
            .is_some_and(|indices| self.onnx_uses.get(indices).copied().unwrap_or(0) > 0)
        {
            return Err("MaxPool's indices output is used".into());
        }
        let input = self.shape(x);
        let spatial = input.len().saturating_sub(2);
        if !(1..=2).contains(&spatial) {
            return Err(format!(
                "pooling of a rank-{} tensor: nnc pools 1-D and 2-D",
                input.len()
            )
            .into());
        }
        let kernel = attr::ints(node, "kernel_shape").ok_or("pooling without kernel_shape")?;
        if kernel.len() != spatial || kernel.iter().any(|&k| k < 1) {
            return Err(format!("kernel_shape {kernel:?} for a {input:?} input").into());
        }
        let window = Window::read(node, &input[2..], &kernel, max)?;
        let ceil_mode = attr::int(node, "ceil_mode", 0) != 0;
        let output_spatial = window.output(&input[2..], ceil_mode)?;
        let mut args = vec![Arg::Value(x), Arg::keyword("kernel", Arg::spatial(&kernel))];
        if window.strides != kernel {
            args.push(Arg::keyword("stride", Arg::spatial(&window.strides)));
        }
        window.push_args(&mut args, &kernel, false);
        if ceil_mode {
            args.push(Arg::keyword("ceil_mode", Arg::Bool(true)));
        }
        if !max
            && attr::int(node, "count_include_pad", 0) == 0
            && window.pads.iter().any(|&p| p > 0)
        {
            args.push(Arg::keyword("count_include_pad", Arg::Bool(false)));
        }
        let function = match (max, spatial) {
            (true, 1) => "max_pool1d",
            (true, _) => "max_pool2d",
            (false, 1) => "avg_pool1d",
            (false, _) => "avg_pool2d",
        };
        let mut shape = input[..2].to_vec();
        shape.extend(output_spatial);
        self.push(cx.output(), call(function, args), None, shape, true);
        Ok(())
    }

    fn concat(&mut self, cx: &Cx<'_>) -> NodeResult {
        let mut values = Vec::new();
        for index in 0..cx.inputs.len() {
            // A constant (a class token) is a `parameter`.
            let value = match cx.known(index)? {
                Known::Tensor(value) => *value,
                Known::Const(constant, name) if constant.is_nonempty_f32() => {
                    let (constant, name) = (constant.clone(), name.clone());
                    self.parameter(cx.node, &constant, &name)
                }
                Known::Const(..) => {
                    return Err("Concat of an integer or empty constant with tensors".into());
                }
            };
            values.push(value);
        }
        let first = self.shape(*values.first().ok_or("Concat of nothing")?);
        let axis = fold::axis(attr::int(cx.node, "axis", 0), first.len())?;
        let mut shape = first.clone();
        shape[axis] = 0;
        for &value in &values {
            let part = self.shape(value);
            if part.len() != first.len()
                || (0..first.len()).any(|i| i != axis && part[i] != first[i])
            {
                return Err(format!("Concat of {first:?} and {part:?}").into());
            }
            shape[axis] += part[axis];
        }
        let float = self.info(values[0]).float;
        let mut args = vec![Arg::Values(values)];
        if axis != 0 {
            args.push(Arg::keyword("dim", Arg::Int(axis as i64)));
        }
        self.push(cx.output(), call("concat", args), None, shape, float);
        Ok(())
    }

    /// One `slice` per axis that the ranges narrow; `name` is the result's ONNX name.
    fn slices(&mut self, x: ValueId, ranges: &[SliceRange], name: &str) -> NodeResult {
        let shape = self.shape(x);
        let narrowed: Vec<usize> = (0..ranges.len())
            .filter(|&axis| ranges[axis].count != shape[axis] || ranges[axis].start != 0)
            .collect();
        if narrowed.iter().any(|&axis| ranges[axis].step != 1) {
            return Err("Slice with a step other than 1".into());
        }
        if narrowed.iter().any(|&axis| ranges[axis].count == 0) {
            return Err("Slice to an empty tensor".into());
        }
        let float = self.info(x).float;
        let mut current = x;
        let mut current_shape = shape;
        for (position, &axis) in narrowed.iter().enumerate() {
            let range = ranges[axis];
            current_shape[axis] = range.count;
            let mut args = vec![Arg::Value(current), Arg::Int(axis as i64)];
            if range.start != 0 {
                args.push(Arg::keyword("start", Arg::Int(range.start)));
            }
            args.push(Arg::keyword(
                "end",
                Arg::Int(range.start + range.count as i64),
            ));
            let target = if position + 1 == narrowed.len() {
                name
            } else {
                ""
            };
            current = self.push(
                target,
                call("slice", args),
                None,
                current_shape.clone(),
                float,
            );
        }
        if narrowed.is_empty() {
            self.alias(name, x);
        }
        Ok(())
    }

    fn split(&mut self, cx: &Cx<'_>) -> NodeResult {
        let x = cx.tensor(0)?;
        let shape = self.shape(x);
        let axis = fold::axis(attr::int(cx.node, "axis", 0), shape.len())?;
        let outputs = cx.node.output.len();
        let sizes: Vec<i64> = if self.opset < 13 {
            attr::ints(cx.node, "split").unwrap_or_default()
        } else {
            match cx.inputs.get(1) {
                Some(Some(Known::Const(sizes, _))) => sizes.to_i64(),
                Some(Some(Known::Tensor(_))) => {
                    return Err("Split sizes computed at run time".into());
                }
                _ => vec![],
            }
        };
        let sizes = if sizes.is_empty() {
            let parts = attr::int(cx.node, "num_outputs", outputs as i64).max(1) as usize;
            let chunk = shape[axis].div_ceil(parts);
            (0..parts)
                .map(|i| (chunk.min(shape[axis].saturating_sub(i * chunk))) as i64)
                .collect()
        } else {
            sizes
        };
        if sizes.len() != outputs
            || sizes.iter().any(|&s| s < 0)
            || sizes.iter().sum::<i64>() != shape[axis] as i64
        {
            return Err(format!("Split of {shape:?} along {axis} into {sizes:?}").into());
        }
        let mut start = 0;
        for (name, &size) in cx.node.output.iter().zip(&sizes) {
            let mut ranges: Vec<SliceRange> = shape
                .iter()
                .map(|&d| SliceRange {
                    start: 0,
                    step: 1,
                    count: d,
                })
                .collect();
            ranges[axis] = SliceRange {
                start,
                step: 1,
                count: size as usize,
            };
            self.slices(x, &ranges, name)?;
            start += size;
        }
        Ok(())
    }

    fn gather(&mut self, cx: &Cx<'_>) -> NodeResult {
        match (cx.known(0)?, cx.known(1)?) {
            (Known::Tensor(x), Known::Const(indices, _)) => {
                let x = *x;
                let shape = self.shape(x);
                let axis = fold::axis(attr::int(cx.node, "axis", 0), shape.len())?;
                let dim = shape[axis] as i64;
                let [index] = indices.to_i64()[..] else {
                    return Err("Gather of several indices from a tensor".into());
                };
                let index = if index < 0 { index + dim } else { index };
                if !(0..dim).contains(&index) {
                    return Err(format!("Gather index {index} out of range for size {dim}").into());
                }
                if indices.shape.is_empty() {
                    let mut out = shape.clone();
                    out.remove(axis);
                    let float = self.info(x).float;
                    let args = vec![Arg::Value(x), Arg::Int(axis as i64), Arg::Int(index)];
                    self.push(cx.output(), call("select", args), None, out, float);
                    Ok(())
                } else {
                    let mut ranges: Vec<SliceRange> = shape
                        .iter()
                        .map(|&d| SliceRange {
                            start: 0,
                            step: 1,
                            count: d,
                        })
                        .collect();
                    ranges[axis] = SliceRange {
                        start: index,
                        step: 1,
                        count: 1,
                    };
                    let mut target = shape.clone();
                    target[axis] = 1;
                    let mut expected = shape[..axis].to_vec();
                    expected.extend(&indices.shape);
                    expected.extend(&shape[axis + 1..]);
                    if expected != target {
                        return Err("Gather with multi-dimensional indices".into());
                    }
                    self.slices(x, &ranges, cx.output())
                }
            }
            (Known::Const(table, table_name), Known::Tensor(ids)) => {
                let ids = *ids;
                if table.shape.len() != 2
                    || attr::int(cx.node, "axis", 0) != 0
                    || self.info(ids).float
                {
                    return Err("Gather from a constant other than an embedding table".into());
                }
                let (count, dim) = (table.shape[0], table.shape[1]);
                let layer = self.layer(
                    cx.node,
                    "embedding",
                    vec![("weight", Constant::f32(table.shape.clone(), table.to_f32()))],
                    vec![table_name.clone()],
                );
                let mut shape = self.shape(ids);
                shape.push(dim);
                let args = vec![
                    Arg::Value(ids),
                    Arg::Int(count as i64),
                    Arg::Int(dim as i64),
                ];
                self.push(
                    cx.output(),
                    call("embedding", args),
                    Some(layer),
                    shape,
                    true,
                );
                Ok(())
            }
            _ => Err("Gather of a tensor by indices computed at run time".into()),
        }
    }

    /// The layer for `node`: named after its weights' ONNX names when they carry a module path
    /// (`layer1.0.conv1.weight`), else after the node's scope (`/layer1/layer1.0/conv1/Conv`),
    /// else `kind` and a number; sanitized, and made unique.
    pub(super) fn layer(
        &mut self,
        node: &NodeProto,
        kind: &'static str,
        weights: Vec<(&'static str, Constant)>,
        sources: Vec<String>,
    ) -> Layer {
        let node_name = node.name.clone().unwrap_or_default();
        let candidate = sources
            .first()
            .and_then(|name| name_from_weight(name))
            .or_else(|| name_from_scope(&node_name))
            .map(|name| sanitize_layer_name(&name))
            .filter(|name| !name.is_empty());
        self.unique_layer(node, candidate, kind, weights, sources)
    }

    /// The layer named `candidate` (else `kind` and a number), made unique with `_2`, `_3` ...
    fn unique_layer(
        &mut self,
        node: &NodeProto,
        candidate: Option<String>,
        kind: &'static str,
        weights: Vec<(&'static str, Constant)>,
        sources: Vec<String>,
    ) -> Layer {
        let node_name = node.name.clone().unwrap_or_default();
        let candidate = candidate.unwrap_or_else(|| {
            loop {
                let counter = self.counters.entry(kind).or_insert(0);
                *counter += 1;
                let name = format!("{kind}{counter}");
                if !self.layer_names.contains(&name) {
                    break name;
                }
            }
        });
        let mut name = candidate.clone();
        let mut suffix = 2;
        while !self.layer_names.insert(name.clone()) {
            name = format!("{candidate}_{suffix}");
            suffix += 1;
        }
        Layer {
            name,
            weights,
            sources,
            node_name,
        }
    }
}

/// A node with its inputs looked up.
pub struct Cx<'n> {
    node: &'n NodeProto,
    inputs: Vec<Option<Known>>,
}

impl Cx<'_> {
    fn output(&self) -> &str {
        self.node.output.first().map(String::as_str).unwrap_or("")
    }

    fn known(&self, index: usize) -> Result<&Known, NodeError> {
        self.inputs
            .get(index)
            .and_then(Option::as_ref)
            .ok_or_else(|| format!("input {index} is missing").into())
    }

    fn tensor(&self, index: usize) -> Result<ValueId, NodeError> {
        match self.known(index)? {
            Known::Tensor(value) => Ok(*value),
            Known::Const(..) => {
                Err(format!("input {index} is a constant where nnc needs a tensor").into())
            }
        }
    }

    fn constant(&self, index: usize) -> Result<Rc<Constant>, NodeError> {
        self.constant_named(index).map(|(constant, _)| constant)
    }

    fn constant_named(&self, index: usize) -> Result<(Rc<Constant>, String), NodeError> {
        match self.known(index)? {
            Known::Const(constant, name) => Ok((constant.clone(), name.clone())),
            Known::Tensor(_) => Err(format!(
                "input {index} (`{}`) is computed at run time; nnc needs a constant (an initializer)",
                self.node.input.get(index).map(String::as_str).unwrap_or("")
            )
            .into()),
        }
    }

    fn optional_constant_named(
        &self,
        index: usize,
    ) -> Result<Option<(Rc<Constant>, String)>, NodeError> {
        match self.inputs.get(index) {
            None | Some(None) => Ok(None),
            Some(Some(_)) => self.constant_named(index).map(Some),
        }
    }

    /// The constant inputs, `None` where an input is a tensor or omitted.
    fn constants(&self) -> Vec<Option<Rc<Constant>>> {
        self.inputs
            .iter()
            .map(|input| match input {
                Some(Known::Const(constant, _)) => Some(constant.clone()),
                _ => None,
            })
            .collect()
    }
}

/// The strides, padding and dilation of a conv or pool, from its attributes.
struct Window {
    strides: Vec<i64>,
    /// One per spatial axis: ONNX's begin and end pads are equal (nnc pads both sides alike).
    pads: Vec<i64>,
    dilations: Vec<i64>,
    /// The extent of the dilated kernel along each axis.
    extents: Vec<i64>,
}

impl Window {
    fn read(
        node: &NodeProto,
        input: &[usize],
        kernel: &[i64],
        dilated: bool,
    ) -> Result<Window, NodeError> {
        let spatial = input.len();
        let strides = attr::ints(node, "strides").unwrap_or_else(|| vec![1; spatial]);
        let dilations = if dilated {
            attr::ints(node, "dilations").unwrap_or_else(|| vec![1; spatial])
        } else {
            vec![1; spatial]
        };
        if strides.len() != spatial
            || dilations.len() != spatial
            || strides.iter().chain(&dilations).any(|&v| v < 1)
        {
            return Err(format!(
                "strides {strides:?} or dilations {dilations:?} for {spatial} spatial axes"
            )
            .into());
        }
        let auto_pad = attr::string(node, "auto_pad").unwrap_or_default();
        let full: Vec<i64> = match auto_pad.as_str() {
            "" | "NOTSET" => attr::ints(node, "pads").unwrap_or_else(|| vec![0; 2 * spatial]),
            "VALID" => vec![0; 2 * spatial],
            "SAME_UPPER" | "SAME_LOWER" => {
                let mut begin = Vec::new();
                let mut end = Vec::new();
                for axis in 0..spatial {
                    let size = input[axis] as i64;
                    let out = (size + strides[axis] - 1) / strides[axis];
                    let total =
                        ((out - 1) * strides[axis] + (kernel[axis] - 1) * dilations[axis] + 1
                            - size)
                            .max(0);
                    let small = total / 2;
                    let (b, e) = if auto_pad == "SAME_UPPER" {
                        (small, total - small)
                    } else {
                        (total - small, small)
                    };
                    begin.push(b);
                    end.push(e);
                }
                begin.into_iter().chain(end).collect()
            }
            other => return Err(format!("auto_pad {other:?}").into()),
        };
        if full.len() != 2 * spatial || full.iter().any(|&p| p < 0) {
            return Err(format!("pads {full:?} for {spatial} spatial axes").into());
        }
        if full[..spatial] != full[spatial..] {
            return Err(
                format!("asymmetric pads {full:?}: nnc pads both sides of an axis alike").into(),
            );
        }
        let extents = (0..spatial)
            .map(|axis| dilations[axis] * (kernel[axis] - 1) + 1)
            .collect();
        Ok(Window {
            strides,
            pads: full[..spatial].to_vec(),
            dilations,
            extents,
        })
    }

    /// The output's spatial sizes; `ceil_mode` as PyTorch and ONNX define it (a last window
    /// must start inside the input or its left padding).
    fn output(&self, input: &[usize], ceil_mode: bool) -> Result<Vec<usize>, NodeError> {
        Ok(input
            .iter()
            .enumerate()
            .map(|(axis, &size)| {
                let (size, stride, pad) = (size as i64, self.strides[axis], self.pads[axis]);
                let extent = self.extents[axis];
                let span = size + 2 * pad - extent;
                if span < 0 {
                    return Err(format!(
                        "a window of {extent} over {size} (padded by {pad})"
                    ));
                }
                let mut out = if ceil_mode {
                    (span + stride - 1) / stride + 1
                } else {
                    span / stride + 1
                };
                if ceil_mode && (out - 1) * stride >= size + pad {
                    out -= 1;
                }
                Ok(out as usize)
            })
            .collect::<Result<Vec<_>, _>>()?)
    }

    /// `stride`, `padding` and `dilation` arguments where they differ from 1, 0 and 1 (the
    /// caller writes a pool's stride).
    fn push_args(&self, args: &mut Vec<Arg>, _kernel: &[i64], with_stride: bool) {
        if with_stride && self.strides.iter().any(|&s| s != 1) {
            args.push(Arg::keyword("stride", Arg::spatial(&self.strides)));
        }
        if self.pads.iter().any(|&p| p != 0) {
            args.push(Arg::keyword("padding", Arg::spatial(&self.pads)));
        }
        if self.dilations.iter().any(|&d| d != 1) {
            args.push(Arg::keyword("dilation", Arg::spatial(&self.dilations)));
        }
    }
}

fn call(function: &'static str, args: Vec<Arg>) -> Expr {
    Expr::Call { function, args }
}

fn binary(op: char, lhs: Operand, rhs: Operand) -> Expr {
    Expr::Binary { op, lhs, rhs }
}

/// The suffixes of weight names that name a layer's tensor rather than the layer: PyTorch's
/// state dict, Paddle's and Keras's conventions.
const WEIGHT_SUFFIXES: &[&str] = &[
    ".weight",
    ".bias",
    ".running_mean",
    ".running_var",
    ".w_0",
    ".b_0",
    ".gamma",
    ".beta",
    ".kernel",
    "_weights",
    "_weight",
    "_bias",
    "_scale",
    "_offset",
    "_mean",
    "_variance",
    "_w",
    "_b",
];

/// A layer name from a weight's name, when it carries one: `layer1.0.conv1.weight` gives
/// `layer1.0.conv1`; exporters' generated names (`onnx::Conv_193`) give none.
fn name_from_weight(name: &str) -> Option<String> {
    if name.contains("::") || name.starts_with('/') {
        return None;
    }
    WEIGHT_SUFFIXES
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .filter(|stem| !stem.is_empty())
        .map(str::to_string)
}

/// A layer name from a PyTorch node name: `/layer1/layer1.0/conv1/Conv` gives `layer1.0.conv1`
/// (each scope is either the full path so far or one more level).
fn name_from_scope(node_name: &str) -> Option<String> {
    let segments: Vec<&str> = node_name.split('/').filter(|s| !s.is_empty()).collect();
    let (_, scopes) = segments.split_last()?;
    let mut path = String::new();
    for scope in scopes {
        if path.is_empty() || scope.starts_with(&format!("{path}.")) {
            path = scope.to_string();
        } else {
            path = format!("{path}.{scope}");
        }
    }
    (!path.is_empty()).then_some(path)
}

/// A dotted name whose segments are `.nn` names or numbers.
fn sanitize_layer_name(name: &str) -> String {
    name.split(['.', '/'])
        .filter(|segment| !segment.is_empty())
        .map(|segment| match segment.parse::<u32>() {
            Ok(number) if segment.bytes().all(|b| b.is_ascii_digit()) => number.to_string(),
            _ => super::sanitize_identifier(segment),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// A layer's weights by suffix (`weight`, `bias`), and the ONNX names they came from.
type LayerWeights = (Vec<(&'static str, Constant)>, Vec<String>);

/// The end of a convolution's (`op`: `Conv`, `ConvTranspose`) arguments and its weights: the
/// `groups` keyword unless 1, and the bias, which must hold `out_channels` values, or
/// `bias = false` without one. Returns the weights by suffix and their ONNX names.
pub(super) fn conv_weights(
    op: &str,
    args: &mut Vec<Arg>,
    groups: i64,
    (weight, weight_name): (Rc<Constant>, String),
    bias: Option<(Rc<Constant>, String)>,
    out_channels: usize,
) -> Result<LayerWeights, NodeError> {
    if groups != 1 {
        args.push(Arg::keyword("groups", Arg::Int(groups)));
    }
    let mut weights = vec![("weight", weight.as_ref().clone())];
    let mut sources = vec![weight_name];
    match bias {
        Some((bias, name)) if bias.len() == out_channels => {
            weights.push(("bias", bias.reshaped(vec![out_channels])));
            sources.push(name);
        }
        Some((bias, _)) => return Err(format!("a {op} bias of shape {:?}", bias.shape).into()),
        None => args.push(Arg::keyword("bias", Arg::Bool(false))),
    }
    Ok((weights, sources))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_names_come_from_weights_then_scopes() {
        assert_eq!(
            name_from_weight("layer1.0.conv1.weight").as_deref(),
            Some("layer1.0.conv1")
        );
        assert_eq!(
            name_from_weight("conv1_bn_scale").as_deref(),
            Some("conv1_bn")
        );
        assert_eq!(name_from_weight("fc_0.w_0").as_deref(), Some("fc_0"));
        assert_eq!(name_from_weight("onnx::Conv_193"), None);
        assert_eq!(
            name_from_scope("/layer1/layer1.0/conv1/Conv").as_deref(),
            Some("layer1.0.conv1")
        );
        assert_eq!(
            name_from_scope("/features/features.0/features.0.0/Conv").as_deref(),
            Some("features.0.0")
        );
        assert_eq!(name_from_scope("Conv@0"), None);
        assert_eq!(
            sanitize_layer_name("blocks.01.attn-proj"),
            "blocks.1.attn_proj"
        );
    }
}
