//! Reading a node's attributes by name, with ONNX's defaults.

use crate::onnx::proto::{AttributeProto, NodeProto};

fn find<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute
        .iter()
        .find(|attribute| attribute.name.as_deref() == Some(name))
}

/// An integer attribute, or `default`.
pub fn int(node: &NodeProto, name: &str, default: i64) -> i64 {
    find(node, name).and_then(|a| a.i).unwrap_or(default)
}

/// A float attribute, or `default`.
pub fn float(node: &NodeProto, name: &str, default: f32) -> f32 {
    find(node, name).and_then(|a| a.f).unwrap_or(default)
}

/// A list-of-integers attribute, if present.
pub fn ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    find(node, name).map(|a| a.ints.clone())
}

/// A list-of-floats attribute, if present.
pub fn floats(node: &NodeProto, name: &str) -> Option<Vec<f32>> {
    find(node, name).map(|a| a.floats.clone())
}

/// A string attribute, if present (lossily decoded).
pub fn string(node: &NodeProto, name: &str) -> Option<String> {
    find(node, name)
        .and_then(|a| a.s.as_deref())
        .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
}

/// A tensor attribute (`Constant`'s `value`), if present.
pub fn tensor<'a>(node: &'a NodeProto, name: &str) -> Option<&'a crate::onnx::proto::TensorProto> {
    find(node, name).and_then(|a| a.t.as_ref())
}

/// Whether the node has the attribute at all.
pub fn has(node: &NodeProto, name: &str) -> bool {
    find(node, name).is_some()
}
