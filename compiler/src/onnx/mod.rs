//! ONNX models: the protobuf messages of `onnx.proto` and reading and writing them.
//!
//! [`proto`] holds the prost bindings of the ONNX 1.17 `onnx.proto`, generated once by
//! `compiler/proto/regenerate.sh` and checked in, so that a build needs no protobuf compiler.
//! Import (`nnc import`) and export (`nnc export`) are built on them.

use prost::Message;

pub mod export;
pub mod import;

/// The messages of `onnx.proto` (package `onnx`), as prost generated them.
#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod proto {
    include!("proto.rs");
}

/// Why an ONNX file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not an ONNX model: {source}")]
    Decode {
        path: std::path::PathBuf,
        source: prost::DecodeError,
    },
}

/// Decodes an ONNX model from the bytes of a `.onnx` file. `path` only names the file in errors.
pub fn decode_model(bytes: &[u8], path: &std::path::Path) -> Result<proto::ModelProto, ProtoError> {
    proto::ModelProto::decode(bytes).map_err(|source| ProtoError::Decode {
        path: path.to_owned(),
        source,
    })
}

/// Reads and decodes the ONNX model in the file at `path`.
pub fn read_model(path: &std::path::Path) -> Result<proto::ModelProto, ProtoError> {
    let bytes = std::fs::read(path).map_err(|source| ProtoError::Io {
        path: path.to_owned(),
        source,
    })?;
    decode_model(&bytes, path)
}

/// Encodes `model` as the bytes of a `.onnx` file.
pub fn encode_model(model: &proto::ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_survives_encoding_and_decoding() {
        let model = proto::ModelProto {
            ir_version: Some(8),
            opset_import: vec![proto::OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(17),
            }],
            graph: Some(proto::GraphProto {
                name: Some("g".into()),
                node: vec![proto::NodeProto {
                    op_type: Some("Relu".into()),
                    input: vec!["x".into()],
                    output: vec!["y".into()],
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let bytes = encode_model(&model);
        let back = decode_model(&bytes, std::path::Path::new("m.onnx")).unwrap();
        assert_eq!(back, model);
    }

    #[test]
    fn garbage_is_an_error_naming_the_file() {
        let err = decode_model(&[0xff, 0xff, 0xff], std::path::Path::new("bad.onnx")).unwrap_err();
        assert!(
            err.to_string().starts_with("bad.onnx is not an ONNX model"),
            "{err}"
        );
    }
}
