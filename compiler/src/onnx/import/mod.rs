//! `nnc import`: an ONNX model to a `.nn` file a person would have written, and its initializers
//! to a safetensors file under the weight names that file gives them.
//!
//! The steps, top to bottom ([`import_model`]):
//!
//! 1. the model's opset (11 to 21) and its initializers ([`tensor`]), refusing external data with
//!    a message saying how to inline it;
//! 2. the inputs' shapes: fixed sizes, `dim_param`s as `where` bindings (values from
//!    [`ImportOptions::dims`], else 1), or whole shapes from [`ImportOptions::input_shapes`];
//! 3. the nodes in order, with decomposed layers recognized first ([`recognize`]), ([`translate`]): constants folded ([`fold`]), layers recognized with
//!    their weights in nnc's layout, every node that cannot be imported recorded;
//! 4. repeated instances (a transformer layer, a residual block) folded into `block`s
//!    ([`blocks`]);
//! 5. the statements rendered with variables chosen by liveness ([`program`]).
//!
//! Every problem of a model is reported at once, in one [`ImportError::Nodes`] listing op type,
//! node name and opset; nothing in here panics on a malformed file (a property test mutates the
//! bytes of valid models to check it).

mod attributes;
mod blocks;
mod fold;
mod mask_pattern;
mod program;
mod recognize;
mod tensor;
mod translate;

use std::collections::HashMap;

use super::proto::{self, ModelProto, tensor_shape_proto::dimension, type_proto};
use program::{Input, Program};
pub use tensor::{Constant, Data};
use translate::{Known, NodeError, Translator};

/// The opsets of the default domain that the importer reads.
pub const OPSETS: std::ops::RangeInclusive<i64> = 11..=21;

/// How to import.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// The network's name; the graph's name if not given.
    pub network_name: Option<String>,
    /// Whole input shapes, fixing dynamic dimensions (`--input-shape x=1,3,224,224`).
    pub input_shapes: Vec<(String, Vec<usize>)>,
    /// Values of symbolic dimensions, by `dim_param` or by its sanitized name (`--dim batch=8`).
    pub dims: Vec<(String, usize)>,
    /// The model's file name, for the header comment.
    pub source_name: String,
}

/// An imported model.
#[derive(Debug)]
pub struct Imported {
    /// The `.nn` source.
    pub source: String,
    /// The weights under their nnc names, in the order the network uses them.
    pub weights: Vec<(String, Constant)>,
}

impl Imported {
    /// The weights as the bytes of a safetensors file (f32).
    pub fn safetensors(&self) -> Result<Vec<u8>, ImportError> {
        let buffers: Vec<(String, Vec<usize>, Vec<u8>)> = self
            .weights
            .iter()
            .map(|(name, constant)| {
                let bytes = constant
                    .to_f32()
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect();
                (name.clone(), constant.shape.clone(), bytes)
            })
            .collect();
        let views = buffers
            .iter()
            .map(|(name, shape, bytes)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                    .map(|view| (name.clone(), view))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| ImportError::Weights(error.to_string()))?;
        safetensors::serialize(views, None).map_err(|error| ImportError::Weights(error.to_string()))
    }
}

/// One node that cannot be imported.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeProblem {
    pub op_type: String,
    pub node_name: String,
    pub opset: i64,
    pub reason: String,
}

/// Why a model cannot be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Decode(#[from] super::ProtoError),
    #[error("the model has no graph")]
    NoGraph,
    #[error("the graph has no outputs: a network must compute something")]
    NoOutputs,
    #[error(
        "the model uses opset {opset} of the default ONNX domain; nnc imports opsets 11 to 21. Convert it first: `onnx.save(onnx.version_converter.convert_version(onnx.load(path), 17), out)`"
    )]
    Opset { opset: i64 },
    #[error(
        "the weights {} are stored in external data files ({}); nnc reads single-file models. Inline them with `onnx.save(onnx.load(path), out, save_as_external_data=False)` (for models under 2 GB)",
        names.join(", "),
        locations.join(", ")
    )]
    ExternalData {
        names: Vec<String>,
        locations: Vec<String>,
    },
    #[error("the inputs cannot be typed:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Inputs(Vec<String>),
    #[error("{} node(s) cannot be imported:\n{}", .0.len(), render_problems(.0))]
    Nodes(Vec<NodeProblem>),
    #[error("the weights cannot be written: {0}")]
    Weights(String),
    #[error(
        "a tensor of the model cannot be represented: {0} (fix the input shapes with --input-shape NAME=D0,D1,...)"
    )]
    Shape(crate::ir::types::ShapeOverflow),
    #[error(
        "the model uses the constant {0} in arithmetic or as an attribute; the .nn language writes only finite numbers"
    )]
    NonFinite(f32),
    #[error(
        "nnc import could not write this model as a valid .nn file, a case the importer does not check yet (please report it with the model):\n{0}"
    )]
    Unreadable(String),
}

fn render_problems(problems: &[NodeProblem]) -> String {
    problems
        .iter()
        .map(|p| {
            let name = if p.node_name.is_empty() {
                "(unnamed)"
            } else {
                p.node_name.as_str()
            };
            format!(
                "  - {} `{name}` (opset {}): {}",
                p.op_type, p.opset, p.reason
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Decodes the bytes of an `.onnx` file and imports the model.
pub fn import_bytes(bytes: &[u8], options: &ImportOptions) -> Result<Imported, ImportError> {
    let model = super::decode_model(bytes, std::path::Path::new(&options.source_name))?;
    import_model(&model, options)
}

/// Imports a decoded model.
pub fn import_model(model: &ModelProto, options: &ImportOptions) -> Result<Imported, ImportError> {
    let graph = model.graph.as_ref().ok_or(ImportError::NoGraph)?;
    if graph.output.is_empty() {
        return Err(ImportError::NoOutputs);
    }
    let opset = model
        .opset_import
        .iter()
        .find(|set| matches!(set.domain.as_deref(), None | Some("") | Some("ai.onnx")))
        .and_then(|set| set.version)
        .unwrap_or(0);
    if !OPSETS.contains(&opset) {
        return Err(ImportError::Opset { opset });
    }
    check_external_data(graph)?;

    let mut program = Program {
        name: sanitize_identifier(
            options
                .network_name
                .as_deref()
                .or(graph.name.as_deref())
                .filter(|name| !name.is_empty())
                .unwrap_or("model"),
        ),
        ..Default::default()
    };
    let producer = [
        model.producer_name.as_deref(),
        model.producer_version.as_deref(),
    ]
    .into_iter()
    .flatten()
    .filter(|part| !part.is_empty())
    .collect::<Vec<_>>()
    .join(" ");
    let source = if options.source_name.is_empty() {
        "an ONNX model"
    } else {
        &options.source_name
    };
    let made_by = if producer.is_empty() {
        String::new()
    } else {
        format!(", exported by {producer}")
    };
    program.header = vec![
        format!("Imported by `nnc import` from {source} (opset {opset}{made_by})."),
        "The weights are in the safetensors file written with it, under the layer names below."
            .into(),
    ];

    let mut onnx_uses: HashMap<String, usize> = HashMap::new();
    for node in &graph.node {
        for input in node.input.iter().filter(|name| !name.is_empty()) {
            *onnx_uses.entry(input.clone()).or_insert(0) += 1;
        }
    }
    for output in &graph.output {
        *onnx_uses
            .entry(output.name.clone().unwrap_or_default())
            .or_insert(0) += 1;
    }

    let mut problems = Vec::new();
    let mut translator = Translator::new(opset, &mut program, onnx_uses);
    for initializer in &graph.initializer {
        let name = initializer.name.clone().unwrap_or_default();
        match tensor::decode_tensor(initializer) {
            Ok(constant) => {
                translator
                    .known
                    .insert(name.clone(), Known::Const(std::rc::Rc::new(constant), name));
            }
            Err(reason) => problems.push(NodeProblem {
                op_type: "initializer".into(),
                node_name: name,
                opset,
                reason,
            }),
        }
    }
    read_inputs(graph, options, &mut translator)?;

    for item in recognize::recognize(graph, opset) {
        match item {
            recognize::Item::Node(node) => {
                translate_node(&mut translator, node, opset, &mut problems);
            }
            recognize::Item::Fused { node, parts } => {
                match recognize::translate(&mut translator, &node) {
                    Ok(()) | Err(NodeError::Skipped) => {}
                    // The shapes do not fit the layer: the nodes it stood for, one by one.
                    Err(NodeError::Unsupported(_)) => {
                        for part in parts {
                            // A mask that several attentions share is translated once.
                            let known = !part.output.is_empty()
                                && part
                                    .output
                                    .iter()
                                    .all(|output| translator.known.contains_key(output));
                            if !known {
                                translate_node(&mut translator, part, opset, &mut problems);
                            }
                        }
                    }
                }
            }
        }
    }

    let mut outputs = Vec::new();
    for output in &graph.output {
        let name = output.name.clone().unwrap_or_default();
        let identifier = sanitize_identifier(&name);
        if let Some((_, _, first)) = outputs.iter().find(|(known, _, _)| *known == identifier) {
            problems.push(NodeProblem {
                op_type: "output".into(),
                node_name: name.clone(),
                opset,
                reason: if *first == name {
                    "the graph lists this output twice".into()
                } else {
                    format!("it and the output `{first}` would both be named `{identifier}`")
                },
            });
            continue;
        }
        match translator.known.get(&name) {
            Some(Known::Tensor(value)) => outputs.push((identifier, *value, name)),
            Some(Known::Const(..)) => problems.push(NodeProblem {
                op_type: "output".into(),
                node_name: name,
                opset,
                reason: "the output is a constant".into(),
            }),
            None if problems.is_empty() => problems.push(NodeProblem {
                op_type: "output".into(),
                node_name: name,
                opset,
                reason: "no node computes it".into(),
            }),
            None => {}
        }
    }
    if !problems.is_empty() {
        return Err(ImportError::Nodes(problems));
    }
    let input_values: Vec<_> = program.inputs.iter().map(|input| input.value).collect();
    if let Some((name, _, _)) = outputs
        .iter()
        .find(|(_, value, _)| input_values.contains(value))
    {
        return Err(ImportError::Nodes(vec![NodeProblem {
            op_type: "output".into(),
            node_name: name.clone(),
            opset,
            reason: "the output is an input of the network".into(),
        }]));
    }
    // Shapes the front end would refuse (a zero or an overflowing size, from a bad attribute or
    // input shape) are the import's error, not a `.nn` file that does not compile.
    for tensor in &program.tensors {
        let dtype = if tensor.float {
            crate::ir::DType::F32
        } else {
            crate::ir::DType::I64
        };
        crate::ir::types::TensorType::new(dtype, tensor.shape.clone())
            .map_err(ImportError::Shape)?;
    }
    // Numbers written into the text must be finite: `.nn` has no literal for inf or NaN.
    if let Some(value) = program.stmts.iter().find_map(non_finite_number) {
        return Err(ImportError::NonFinite(value));
    }
    program.outputs = outputs
        .into_iter()
        .map(|(identifier, value, _)| (identifier, value))
        .collect();
    blocks::fold(&mut program);
    let source = program.render();
    // The last line of defence: what the importer writes must be a model the front end accepts
    // (an integer input fed to a float layer is not caught above yet; found by fuzzing).
    if let Err(errors) = crate::compile_to_ir(&source, &Default::default()) {
        return Err(ImportError::Unreadable(crate::diagnostics::render(
            &errors.0,
            "imported.nn",
            &source,
        )));
    }
    Ok(Imported {
        source,
        weights: program.weights(),
    })
}

/// The first number of `stmt` (an operand, an argument) that is not finite.
fn non_finite_number(stmt: &program::Stmt) -> Option<f32> {
    use program::{Arg, Expr, Operand};
    fn in_arg(arg: &Arg) -> Option<f32> {
        match arg {
            Arg::Float(value) => (!value.is_finite()).then_some(*value),
            Arg::Floats(values) => values.iter().copied().find(|value| !value.is_finite()),
            Arg::Keyword(_, inner) => in_arg(inner),
            _ => None,
        }
    }
    match &stmt.expr {
        Expr::Call { args, .. } => args.iter().find_map(in_arg),
        Expr::Binary { lhs, rhs, .. } => [lhs, rhs].into_iter().find_map(|operand| match operand {
            Operand::Number(value) if !value.is_finite() => Some(*value),
            _ => None,
        }),
        Expr::Block { args, inner, .. } => args
            .iter()
            .find_map(in_arg)
            .or_else(|| inner.iter().find_map(non_finite_number)),
    }
}

/// Translates one ONNX node, recording why when it cannot be.
fn translate_node(
    translator: &mut Translator<'_>,
    node: &proto::NodeProto,
    opset: i64,
    problems: &mut Vec<NodeProblem>,
) {
    let op_type = node.op_type.clone().unwrap_or_default();
    let domain = node.domain.as_deref().unwrap_or("");
    let problem = |reason: String| NodeProblem {
        op_type: op_type.clone(),
        node_name: node.name.clone().unwrap_or_default(),
        opset,
        reason,
    };
    if !domain.is_empty() && domain != "ai.onnx" {
        problems.push(problem(format!("the domain `{domain}` is not supported")));
        return;
    }
    let known_op = translate::TRANSLATED.contains(&op_type.as_str())
        || fold::FOLDABLE.contains(&op_type.as_str())
        || matches!(op_type.as_str(), "If" | "Loop" | "Scan");
    if !known_op {
        problems.push(problem("not supported by nnc import".into()));
        return;
    }
    match translator.node(node) {
        Ok(()) | Err(NodeError::Skipped) => {}
        Err(NodeError::Unsupported(reason)) => problems.push(problem(reason)),
    }
}

/// Refuses a model whose tensors live in external files, naming them and the files.
fn check_external_data(graph: &proto::GraphProto) -> Result<(), ImportError> {
    let mut names = Vec::new();
    let mut locations = Vec::new();
    let constants = graph
        .node
        .iter()
        .flat_map(|node| node.attribute.iter().filter_map(|a| a.t.as_ref()));
    for tensor in graph.initializer.iter().chain(constants) {
        if tensor.data_location == Some(1) {
            names.push(format!("`{}`", tensor.name.as_deref().unwrap_or("")));
            for entry in &tensor.external_data {
                if entry.key.as_deref() == Some("location")
                    && let Some(location) = &entry.value
                    && !locations.contains(location)
                {
                    locations.push(location.clone());
                }
            }
        }
    }
    if names.is_empty() {
        return Ok(());
    }
    names.truncate(5);
    Err(ImportError::ExternalData { names, locations })
}

/// The largest size of an input dimension, and of a whole input.
const MAX_DIM: usize = 1 << 31;
const MAX_ELEMENTS: usize = 1 << 36;

/// Types the graph's inputs (those that are not initializers) and makes them values.
fn read_inputs(
    graph: &proto::GraphProto,
    options: &ImportOptions,
    translator: &mut Translator<'_>,
) -> Result<(), ImportError> {
    let mut problems = Vec::new();
    let mut bindings: Vec<(String, usize)> = Vec::new();
    let mut inputs = Vec::new();
    for input in &graph.input {
        let name = input.name.clone().unwrap_or_default();
        if translator.known.contains_key(&name) {
            continue; // An initializer listed as an input (IR version 3 and older).
        }
        let Some(type_proto::Value::TensorType(tensor_type)) =
            input.r#type.as_ref().and_then(|t| t.value.as_ref())
        else {
            problems.push(format!("`{name}` is not a tensor"));
            continue;
        };
        let float = match tensor_type.elem_type.unwrap_or(0) {
            tensor::data_type::FLOAT => true,
            tensor::data_type::INT64 => false,
            other => {
                problems.push(format!(
                    "`{name}` has element type {other}; nnc's inputs are f32 or i64"
                ));
                continue;
            }
        };
        let declared = tensor_type
            .shape
            .as_ref()
            .map(|s| s.dim.as_slice())
            .unwrap_or(&[]);
        let mut dims = Vec::new();
        let mut shape = Vec::new();
        if let Some((_, fixed)) = options.input_shapes.iter().find(|(n, _)| *n == name) {
            if tensor_type.shape.is_some() && fixed.len() != declared.len() {
                problems.push(format!(
                    "`{name}` has rank {}, but --input-shape gives {} sizes",
                    declared.len(),
                    fixed.len()
                ));
                continue;
            }
            shape = fixed.clone();
            dims = fixed.iter().map(usize::to_string).collect();
        } else {
            for (axis, dim) in declared.iter().enumerate() {
                let (symbol, size) = match &dim.value {
                    Some(dimension::Value::DimValue(size)) if *size > 0 => (None, *size as usize),
                    Some(dimension::Value::DimParam(param))
                        if param.chars().any(|c| c.is_ascii_alphanumeric()) =>
                    {
                        let symbol = sanitize_identifier(param);
                        let size = options
                            .dims
                            .iter()
                            .find(|(n, _)| *n == symbol || n == param)
                            .map_or(1, |(_, size)| *size);
                        (Some(symbol), size)
                    }
                    _ if axis == 0 => {
                        let size = options
                            .dims
                            .iter()
                            .find(|(n, _)| n == "batch")
                            .map_or(1, |(_, s)| *s);
                        (Some("batch".to_string()), size)
                    }
                    _ => {
                        problems.push(format!(
                            "axis {axis} of `{name}` has no size and no name: give the whole shape with --input-shape {name}=N,C,H,W (one size per axis)"
                        ));
                        (None, 1)
                    }
                };
                match symbol {
                    Some(symbol) => {
                        match bindings.iter().find(|(n, _)| *n == symbol) {
                            Some((_, bound)) if *bound != size => {
                                problems.push(format!("`{symbol}` is bound twice"))
                            }
                            Some(_) => {}
                            None => bindings.push((symbol.clone(), size)),
                        }
                        dims.push(symbol);
                    }
                    None => dims.push(size.to_string()),
                }
                shape.push(size);
            }
        }
        let elements = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if shape.iter().any(|&d| d == 0 || d > MAX_DIM) || elements.is_none_or(|n| n > MAX_ELEMENTS)
        {
            problems.push(format!("`{name}` has the unusable shape {shape:?}"));
            continue;
        }
        inputs.push((name, shape, float, dims));
    }
    if !problems.is_empty() {
        return Err(ImportError::Inputs(problems));
    }
    for (name, shape, float, dims) in inputs {
        let value = translator.new_tensor(&name, shape, float);
        translator.program.inputs.push(Input {
            name: sanitize_identifier(&name),
            value,
            float,
            dims,
        });
    }
    translator.program.dims = bindings;
    Ok(())
}

/// A `.nn` name for an ONNX name: other characters become `_`, a leading digit gets a `v`, and a
/// keyword gets a trailing `_`.
pub fn sanitize_identifier(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        let c = if c.is_ascii_alphanumeric() { c } else { '_' };
        if !(c == '_' && out.ends_with('_')) {
            out.push(c);
        }
    }
    let out = out.trim_matches('_').to_string();
    let out = match out.chars().next() {
        None => "v".to_string(),
        Some(c) if c.is_ascii_digit() => format!("v{out}"),
        Some(_) => out,
    };
    const KEYWORDS: &[&str] = &[
        "const", "block", "network", "where", "return", "if", "else", "for", "in", "repeat", "as",
        "true", "false",
    ];
    if KEYWORDS.contains(&out.as_str()) || matches!(out.as_str(), "f32" | "i64") {
        format!("{out}_")
    } else {
        out
    }
}
