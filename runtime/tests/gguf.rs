//! The GGUF reader against files the Python `gguf` package wrote (`tests/fixtures/gguf/`, from
//! `bench/gguf_fixtures.py`), and against malformed files: every corruption is an error that names
//! the file, never a panic.

use std::path::PathBuf;

use ndarray::ArrayD;
use ndarray_npy::ReadNpyExt;
use nnc_runtime::weights::ggml_types::GgmlType;
use nnc_runtime::weights::gguf::{GgufFile, MetadataValue};
use nnc_runtime::weights::{
    Init, WeightProblem, WeightSpec, WeightsError, load_gguf, load_safetensors, load_weights,
};
use proptest::prelude::*;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/gguf")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap_or_else(|error| panic!("{name}: {error}"))
}

#[test]
fn reads_every_metadata_value_type() {
    let bytes = read("types.gguf");
    let file = GgufFile::parse(&bytes).unwrap();
    assert_eq!(file.version, 3);
    assert_eq!(file.alignment, 64);
    assert_eq!(file.data_offset % 64, 0);
    let expected = [
        (
            "general.architecture",
            MetadataValue::String("nnc-test".into()),
        ),
        ("test.u8", MetadataValue::U8(200)),
        ("test.i8", MetadataValue::I8(-100)),
        ("test.u16", MetadataValue::U16(60000)),
        ("test.i16", MetadataValue::I16(-30000)),
        ("test.u32", MetadataValue::U32(4_000_000_000)),
        ("test.i32", MetadataValue::I32(-2_000_000_000)),
        ("test.f32", MetadataValue::F32(1.5)),
        ("test.bool", MetadataValue::Bool(true)),
        ("test.string", MetadataValue::String("héllo".into())),
        ("test.u64", MetadataValue::U64((1 << 40) + 1)),
        ("test.i64", MetadataValue::I64(-(1 << 40))),
        ("test.f64", MetadataValue::F64(-0.25)),
        (
            "test.strings",
            MetadataValue::Array(vec![
                MetadataValue::String("a".into()),
                MetadataValue::String("bc".into()),
                MetadataValue::String(String::new()),
            ]),
        ),
        (
            "test.floats",
            MetadataValue::Array(vec![MetadataValue::F32(0.5), MetadataValue::F32(-1.0)]),
        ),
        (
            "test.nested",
            MetadataValue::Array(vec![
                MetadataValue::Array(vec![MetadataValue::I32(1), MetadataValue::I32(2)]),
                MetadataValue::Array(vec![MetadataValue::I32(3)]),
            ]),
        ),
    ];
    for (key, value) in expected {
        assert_eq!(file.metadata(key), Some(&value), "{key}");
    }
    assert_eq!(
        file.metadata("general.alignment")
            .and_then(MetadataValue::as_u64),
        Some(64)
    );
}

#[test]
fn dequantizes_every_type_as_the_gguf_package_does() {
    let bytes = read("types.gguf");
    let file = GgufFile::parse(&bytes).unwrap();
    let cases = [
        ("plain_f32", GgmlType::F32),
        ("plain_f16", GgmlType::F16),
        ("plain_bf16", GgmlType::BF16),
        ("quant_q8_0", GgmlType::Q8_0),
        ("quant_q4_0", GgmlType::Q4_0),
        ("quant_q4_1", GgmlType::Q4_1),
        ("quant_q4_k", GgmlType::Q4K),
        ("quant_q6_k", GgmlType::Q6K),
    ];
    assert_eq!(file.tensors.len(), cases.len());
    for (name, ty) in cases {
        let tensor = file
            .tensor(name)
            .unwrap_or_else(|| panic!("no tensor {name}"));
        assert_eq!(tensor.ty, ty, "{name}");
        assert_eq!(tensor.file_offset % 64, 0, "{name}");
        let expected = ArrayD::<f32>::read_npy(
            std::fs::File::open(fixture(&format!("types.{name}.npy"))).unwrap(),
        )
        .unwrap();
        assert_eq!(tensor.shape, expected.shape(), "{name}");
        let values = file.dequantize(tensor).unwrap();
        // The Python package computes in f32 too, in the same order: the values agree exactly
        // but for the last bit of an occasional product.
        for (index, (&value, &reference)) in values.iter().zip(expected.iter()).enumerate() {
            assert!(
                (value - reference).abs() <= 1e-6 * reference.abs().max(1e-3),
                "{name}[{index}]: {value} vs {reference}"
            );
        }
    }
}

/// Specs for every tensor of a safetensors file, as a network with exactly those weights has.
fn specs_of(names_and_shapes: &[(String, Vec<usize>)]) -> Vec<WeightSpec<'_>> {
    names_and_shapes
        .iter()
        .map(|(name, shape)| WeightSpec {
            name,
            shape,
            init: Init::Zeros,
        })
        .collect()
}

fn safetensors_names_and_shapes(bytes: &[u8]) -> Vec<(String, Vec<usize>)> {
    let tensors = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let mut names: Vec<(String, Vec<usize>)> = tensors
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, view.shape().to_vec()))
        .collect();
    names.sort();
    names
}

#[test]
fn llama_names_and_q_k_rows_come_back_as_hugging_face_has_them() {
    let expected_bytes = read("tiny_llama.safetensors");
    let names_and_shapes = safetensors_names_and_shapes(&expected_bytes);
    assert!(
        names_and_shapes
            .iter()
            .any(|(name, _)| name == "model.layers.0.self_attn.q_proj.weight")
    );
    let specs = specs_of(&names_and_shapes);
    let expected = load_safetensors(&expected_bytes, &specs, "tiny_llama.safetensors").unwrap();
    let gguf_bytes = read("tiny_llama.gguf");
    let loaded = load_gguf(&gguf_bytes, &specs, "tiny_llama.gguf").unwrap();
    for ((name, _), (loaded, expected)) in names_and_shapes.iter().zip(loaded.iter().zip(&expected))
    {
        assert_eq!(loaded, expected, "{name}");
    }
    // load_weights tells the formats apart by the magic number.
    assert_eq!(
        load_weights(&gguf_bytes, &specs, "tiny_llama.gguf").unwrap(),
        expected
    );
}

#[test]
fn a_tied_head_takes_the_token_embeddings_and_mismatches_name_the_tensors() {
    let gguf_bytes = read("tiny_llama.gguf");
    let expected_bytes = read("tiny_llama.safetensors");
    let mut names_and_shapes = safetensors_names_and_shapes(&expected_bytes);
    names_and_shapes.push(("lm_head.weight".to_string(), vec![16, 32]));
    let specs = specs_of(&names_and_shapes);
    let loaded = load_gguf(&gguf_bytes, &specs, "tiny_llama.gguf").unwrap();
    let embedding = names_and_shapes
        .iter()
        .position(|(name, _)| name == "model.embed_tokens.weight")
        .unwrap();
    assert_eq!(loaded.last(), Some(&loaded[embedding]));

    // A network without the last norm and with another q shape.
    let mut names_and_shapes = safetensors_names_and_shapes(&expected_bytes);
    names_and_shapes.retain(|(name, _)| name != "model.norm.weight");
    for (name, shape) in &mut names_and_shapes {
        if name == "model.layers.0.self_attn.q_proj.weight" {
            *shape = vec![32, 64];
        }
    }
    let error =
        load_gguf(&gguf_bytes, &specs_of(&names_and_shapes), "tiny_llama.gguf").unwrap_err();
    let message = error.to_string();
    assert!(message.contains("tiny_llama.gguf"), "{message}");
    assert!(
        message.contains("tensor `model.layers.0.self_attn.q_proj.weight` has shape [32, 32], but the network needs [32, 64]"),
        "{message}"
    );
    assert!(
        message.contains("unexpected tensor `model.norm.weight`"),
        "{message}"
    );
}

/// A GGUF file put together by hand: `metadata` as (key, type id, value bytes), `tensors` as
/// (name, GGUF dimensions, type id, offset), then `data` at the next multiple of 32.
fn handmade(
    version: u32,
    metadata: &[(&str, u32, Vec<u8>)],
    tensors: &[(&str, &[u64], u32, u64)],
    data: &[u8],
) -> Vec<u8> {
    fn string(bytes: &mut Vec<u8>, text: &str) {
        bytes.extend((text.len() as u64).to_le_bytes());
        bytes.extend(text.as_bytes());
    }
    let mut bytes = b"GGUF".to_vec();
    bytes.extend(version.to_le_bytes());
    bytes.extend((tensors.len() as u64).to_le_bytes());
    bytes.extend((metadata.len() as u64).to_le_bytes());
    for (key, type_id, value) in metadata {
        string(&mut bytes, key);
        bytes.extend(type_id.to_le_bytes());
        bytes.extend(value);
    }
    for (name, dimensions, type_id, offset) in tensors {
        string(&mut bytes, name);
        bytes.extend((dimensions.len() as u32).to_le_bytes());
        for dimension in *dimensions {
            bytes.extend(dimension.to_le_bytes());
        }
        bytes.extend(type_id.to_le_bytes());
        bytes.extend(offset.to_le_bytes());
    }
    while !bytes.len().is_multiple_of(32) {
        bytes.push(0);
    }
    bytes.extend(data);
    bytes
}

const SPEC: [WeightSpec<'static>; 1] = [WeightSpec {
    name: "w",
    shape: &[2, 32],
    init: Init::Zeros,
}];

fn corrupt_message(bytes: &[u8]) -> String {
    match load_gguf(bytes, &SPEC, "bad.gguf") {
        Err(error @ WeightsError::CorruptGguf { .. }) => {
            let message = error.to_string();
            assert!(
                message.starts_with("bad.gguf is not a valid GGUF file: "),
                "{message}"
            );
            message
        }
        other => panic!("expected a corrupt-file error, got {other:?}"),
    }
}

#[test]
fn a_handmade_file_loads() {
    let data = [0u8; 64 * 4];
    let bytes = handmade(3, &[], &[("w", &[32, 2], 0, 0)], &data);
    assert_eq!(
        load_gguf(&bytes, &SPEC, "ok.gguf").unwrap(),
        vec![vec![0.0; 64]]
    );
    // Version 2 is read the same way.
    let bytes = handmade(2, &[], &[("w", &[32, 2], 0, 0)], &data);
    assert!(load_gguf(&bytes, &SPEC, "ok.gguf").is_ok());
}

#[test]
fn malformed_files_are_clear_errors() {
    let data = [0u8; 64 * 4];
    let good = handmade(3, &[], &[("w", &[32, 2], 0, 0)], &data);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"GGUX"
                .iter()
                .copied()
                .chain(good[4..].iter().copied())
                .collect(),
            "not the GGUF magic number",
        ),
        (
            handmade(1, &[], &[("w", &[32, 2], 0, 0)], &data),
            "GGUF version 1 is not supported",
        ),
        (good[..6].to_vec(), "the file ends in the version"),
        (good[..30].to_vec(), "the file claims 1 tensor infos"),
        (
            good[..good.len() - 1].to_vec(),
            "tensor `w`: data at offset 0 of 256 bytes runs past the end",
        ),
        (
            handmade(3, &[], &[("w", &[32, 2], 77, 0)], &data),
            "tensor `w`: unknown tensor type 77",
        ),
        (
            handmade(3, &[], &[("w", &[1 << 32, 1 << 33], 0, 0)], &data),
            "tensor `w`: the dimensions [4294967296, 8589934592] have a product that overflows",
        ),
        (
            handmade(3, &[], &[("w", &[48, 2], 8, 0)], &data),
            "tensor `w`: rows of 48 values are not a whole number of Q8_0 blocks of 32",
        ),
        (
            handmade(3, &[], &[("w", &[32, 2], 0, 16)], &data),
            "tensor `w`: data offset 16 is not a multiple of the alignment 32",
        ),
        (
            handmade(3, &[], &[("w", &[32, 2], 0, 1 << 62)], &data),
            "tensor `w`: data at offset",
        ),
        (
            handmade(
                3,
                &[],
                &[("w", &[32, 2], 0, 0), ("v", &[32], 0, 128)],
                &data,
            ),
            "the data of tensors `w` and `v` overlap",
        ),
        (
            handmade(3, &[], &[("w", &[32, 2], 0, 0), ("w", &[32], 0, 0)], &data),
            "tensor `w` appears twice",
        ),
        (
            handmade(3, &[], &[("w", &[1, 1, 1, 1, 1], 0, 0)], &data),
            "tensor `w`: rank 5",
        ),
        (
            handmade(
                3,
                &[("general.alignment", 4, 24u32.to_le_bytes().to_vec())],
                &[],
                &[],
            ),
            "not a power of two",
        ),
        (
            handmade(3, &[("k", 8, u64::MAX.to_le_bytes().to_vec())], &[], &[]),
            "metadata `k`: a string of",
        ),
        (
            handmade(3, &[("k", 13, vec![])], &[], &[]),
            "metadata `k`: unknown value type 13",
        ),
        (
            handmade(3, &[("k", 7, vec![2])], &[], &[]),
            "metadata `k`: a boolean is 2",
        ),
        (
            handmade(
                3,
                &[(
                    "k",
                    9,
                    [4u32.to_le_bytes().as_slice(), &u64::MAX.to_le_bytes()].concat(),
                )],
                &[],
                &[],
            ),
            "metadata `k`: the file claims 18446744073709551615 array elements",
        ),
        (
            handmade(3, &[("k", 0, vec![1]), ("k", 0, vec![1])], &[], &[]),
            "metadata key `k` appears twice",
        ),
    ];
    for (bytes, expected) in cases {
        let message = corrupt_message(&bytes);
        assert!(
            message.contains(expected),
            "expected `{expected}` in: {message}"
        );
    }

    // Counts larger than the file are refused before anything is allocated.
    let mut huge = good.clone();
    huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(corrupt_message(&huge).contains("tensor infos"));
    let mut huge = good.clone();
    huge[16..24].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    assert!(corrupt_message(&huge).contains("metadata key/values"));

    // Arrays nested too deep are refused, not recursed into.
    let mut nested = Vec::new();
    for _ in 0..40 {
        nested.extend(9u32.to_le_bytes());
        nested.extend(1u64.to_le_bytes());
    }
    let bytes = handmade(3, &[("k", 9, nested)], &[], &[]);
    assert!(corrupt_message(&bytes).contains("nest deeper"));
}

#[test]
fn unsupported_types_are_named_problems() {
    // Q5_K: readable layout, no dequantization in nnc.
    let data = vec![0u8; 176 * 2];
    let bytes = handmade(3, &[], &[("w", &[256, 2], 13, 0)], &data);
    let specs = [WeightSpec {
        name: "w",
        shape: &[2, 256],
        init: Init::Zeros,
    }];
    match load_gguf(&bytes, &specs, "q5k.gguf") {
        Err(WeightsError::Mismatch { path, problems }) => {
            assert_eq!(path, "q5k.gguf");
            assert!(matches!(&problems[..], [WeightProblem::Storage { name, .. }] if name == "w"));
            assert!(
                problems[0]
                    .to_string()
                    .contains("nnc does not read Q5_K tensors")
            );
        }
        other => panic!("{other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Cutting a valid file anywhere, or flipping bytes in it, gives an error or a load, never a
    /// panic.
    #[test]
    fn truncated_or_flipped_files_never_panic(
        which in 0..2usize,
        cut in 0.0..1.0f64,
        flips in proptest::collection::vec((0.0..1.0f64, any::<u8>()), 0..6),
    ) {
        let (name, truncate) = [("types.gguf", true), ("tiny_llama.gguf", false)][which];
        let mut bytes = read(name);
        for (position, value) in flips {
            let index = ((bytes.len() - 1) as f64 * position) as usize;
            bytes[index] ^= value;
        }
        if truncate || cut < 0.5 {
            bytes.truncate((bytes.len() as f64 * cut) as usize);
        }
        let expected_bytes = read("tiny_llama.safetensors");
        let names_and_shapes = safetensors_names_and_shapes(&expected_bytes);
        let _ = load_gguf(&bytes, &specs_of(&names_and_shapes), name);
        if let Ok(file) = GgufFile::parse(&bytes) {
            for tensor in &file.tensors {
                let _ = file.dequantize(tensor);
            }
        }
    }
}
