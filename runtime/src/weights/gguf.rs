//! A reader for GGUF files, the format llama.cpp writes: a header, metadata key/values, tensor
//! infos, then the tensor data, each tensor at an aligned offset.
//!
//! [`GgufFile::parse`] borrows the file's bytes and checks everything before anything is
//! allocated by a count the file gives: every count and length is compared with the bytes left,
//! every tensor's extent with the data section, so a truncated or hostile file is an error that
//! names the tensor or key, never a panic or a huge allocation. Tensor data stays in its storage
//! type ([`GgufTensor::data`]); quantized kernels can read the blocks in place, and
//! [`GgufFile::dequantize`] gives f32.
//!
//! Layout (all little-endian): magic `GGUF`, version (2 or 3), tensor count (u64), metadata count
//! (u64); each key/value is a string key, a u32 type and the value; strings are a u64 length and
//! UTF-8 bytes. Each tensor info is a name, a u32 rank, that many u64 dimensions (innermost
//! first, the reverse of PyTorch's shape), a u32 type and a u64 offset into the data section, which
//! starts at the next multiple of `general.alignment` (32 if absent) after the infos.

use std::collections::HashSet;
use std::fmt;

use super::ggml_types::{DequantizeError, GgmlType};

/// The magic number, `GGUF` read as little-endian bytes.
const MAGIC: [u8; 4] = *b"GGUF";
/// The alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// llama.cpp's `GGML_MAX_DIMS`.
const MAX_RANK: usize = 4;
/// Arrays nest at most this deep, so a hostile file cannot overflow the stack.
const MAX_ARRAY_DEPTH: usize = 16;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum MetadataValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<MetadataValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl MetadataValue {
    /// The value as an unsigned integer, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetadataValue::U8(value) => Some(u64::from(value)),
            MetadataValue::U16(value) => Some(u64::from(value)),
            MetadataValue::U32(value) => Some(u64::from(value)),
            MetadataValue::U64(value) => Some(value),
            MetadataValue::I8(value) => u64::try_from(value).ok(),
            MetadataValue::I16(value) => u64::try_from(value).ok(),
            MetadataValue::I32(value) => u64::try_from(value).ok(),
            MetadataValue::I64(value) => u64::try_from(value).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is a float.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetadataValue::F32(value) => Some(f64::from(value)),
            MetadataValue::F64(value) => Some(value),
            _ => None,
        }
    }

    /// The value as a string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetadataValue::String(value) => Some(value),
            _ => None,
        }
    }
}

/// One tensor of a GGUF file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GgufTensor {
    pub name: String,
    /// The shape in PyTorch's order, outermost first (GGUF stores the dimensions reversed).
    pub shape: Vec<usize>,
    pub ty: GgmlType,
    /// The offset of the data from the start of the file (not of the data section).
    pub file_offset: usize,
    /// The length of the data in bytes.
    pub byte_len: usize,
}

impl GgufTensor {
    /// The number of values.
    pub fn element_count(&self) -> usize {
        // parse checked that the product does not overflow.
        self.shape.iter().product()
    }
}

/// A parsed GGUF file, borrowing its bytes.
#[derive(Debug)]
pub struct GgufFile<'a> {
    pub version: u32,
    /// The metadata in file order.
    pub metadata: Vec<(String, MetadataValue)>,
    /// The tensors in file order.
    pub tensors: Vec<GgufTensor>,
    pub alignment: u64,
    /// The offset of the data section from the start of the file.
    pub data_offset: usize,
    bytes: &'a [u8],
}

/// Why a GGUF file cannot be read: a message naming the key or tensor at fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GgufError(pub String);

impl fmt::Display for GgufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GgufError {}

fn error(message: impl Into<String>) -> GgufError {
    GgufError(message.into())
}

impl<'a> GgufFile<'a> {
    /// Parses and checks the header, metadata and tensor infos of `bytes`.
    pub fn parse(bytes: &'a [u8]) -> Result<GgufFile<'a>, GgufError> {
        let mut reader = Reader { bytes, position: 0 };
        let magic = reader.take(4, "the magic number")?;
        if magic != MAGIC {
            return Err(error(format!(
                "the file starts with {magic:02x?}, not the GGUF magic number `GGUF`"
            )));
        }
        let version = reader.u32("the version")?;
        if !(2..=3).contains(&version) {
            return Err(error(format!(
                "GGUF version {version} is not supported (nnc reads versions 2 and 3)"
            )));
        }
        let tensor_count = reader.u64("the tensor count")?;
        let metadata_count = reader.u64("the metadata count")?;
        // A key/value takes at least 12 bytes (an empty key and a type), a tensor info at least
        // 24 (an empty name, a rank, a type and an offset): larger counts cannot be honest.
        reader.check_count(metadata_count, 12, "metadata key/values")?;
        reader.check_count(tensor_count, 24, "tensor infos")?;

        let mut metadata = Vec::with_capacity(metadata_count as usize);
        let mut keys = HashSet::new();
        for index in 0..metadata_count {
            let key = reader
                .string()
                .map_err(|message| error(format!("metadata key {index}: {message}")))?;
            let value = reader
                .value(0)
                .map_err(|message| error(format!("metadata `{key}`: {message}")))?;
            if !keys.insert(key.clone()) {
                return Err(error(format!("metadata key `{key}` appears twice")));
            }
            metadata.push((key, value));
        }

        let alignment = match metadata.iter().find(|(key, _)| key == "general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some((_, value)) => match value.as_u64() {
                Some(alignment) if alignment.is_power_of_two() => alignment,
                _ => {
                    return Err(error(format!(
                        "metadata `general.alignment` is {value:?}, not a power of two"
                    )));
                }
            },
        };

        let mut infos = Vec::with_capacity(tensor_count as usize);
        let mut names = HashSet::new();
        for index in 0..tensor_count {
            let name = reader
                .string()
                .map_err(|message| error(format!("tensor info {index}: {message}")))?;
            let info = reader
                .tensor_info()
                .map_err(|message| error(format!("tensor `{name}`: {message}")))?;
            if !names.insert(name.clone()) {
                return Err(error(format!("tensor `{name}` appears twice")));
            }
            infos.push((name, info));
        }

        let data_offset = align_up(reader.position as u64, alignment)
            .filter(|&offset| offset <= bytes.len() as u64)
            .ok_or_else(|| {
                error(format!(
                    "the file ends in the tensor infos' padding (at byte {} of {})",
                    reader.position,
                    bytes.len()
                ))
            })? as usize;
        let data_len = (bytes.len() - data_offset) as u64;

        let mut tensors = Vec::with_capacity(infos.len());
        for (name, info) in infos {
            let tensor = info
                .check(alignment, data_offset, data_len)
                .map_err(|message| error(format!("tensor `{name}`: {message}")))?;
            tensors.push(GgufTensor { name, ..tensor });
        }
        check_no_overlap(&tensors)?;
        Ok(GgufFile {
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
            bytes,
        })
    }

    /// The metadata value of `key`.
    pub fn metadata(&self, key: &str) -> Option<&MetadataValue> {
        self.metadata
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value)
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&GgufTensor> {
        self.tensors.iter().find(|tensor| tensor.name == name)
    }

    /// The bytes of `tensor`'s data, in its storage type.
    pub fn data(&self, tensor: &GgufTensor) -> &'a [u8] {
        // parse checked that the extent lies inside the file.
        &self.bytes[tensor.file_offset..tensor.file_offset + tensor.byte_len]
    }

    /// `tensor`'s values as f32, in PyTorch's row-major order.
    pub fn dequantize(&self, tensor: &GgufTensor) -> Result<Vec<f32>, DequantizeError> {
        if !tensor.ty.can_dequantize() {
            return Err(DequantizeError::Unsupported(tensor.ty));
        }
        let mut values = crate::alloc::filled(
            || format!("the f32 values of GGUF tensor `{}`", tensor.name),
            tensor.element_count(),
            0.0,
        )?;
        super::ggml_types::dequantize(tensor.ty, self.data(tensor), &mut values)?;
        Ok(values)
    }
}

/// A tensor info as read, before it is checked against the data section.
struct TensorInfo {
    /// Dimensions in GGUF's order, innermost first.
    dimensions: Vec<u64>,
    type_id: u32,
    offset: u64,
}

impl TensorInfo {
    fn check(
        self,
        alignment: u64,
        data_offset: usize,
        data_len: u64,
    ) -> Result<GgufTensor, String> {
        let ty = GgmlType::from_id(self.type_id)
            .ok_or_else(|| format!("unknown tensor type {}", self.type_id))?;
        let element_count = self
            .dimensions
            .iter()
            .try_fold(1u64, |product, &dimension| product.checked_mul(dimension))
            .filter(|&count| usize::try_from(count).is_ok())
            .ok_or_else(|| {
                format!(
                    "the dimensions {:?} have a product that overflows",
                    self.dimensions
                )
            })?;
        let row = self.dimensions.first().copied().unwrap_or(1);
        let block_size = ty.block_size() as u64;
        if !row.is_multiple_of(block_size) {
            return Err(format!(
                "rows of {row} values are not a whole number of {ty} blocks of {block_size}"
            ));
        }
        let byte_len = (element_count / block_size)
            .checked_mul(ty.block_bytes() as u64)
            .ok_or_else(|| format!("{element_count} values of {ty} overflow the byte count"))?;
        if !self.offset.is_multiple_of(alignment) {
            return Err(format!(
                "data offset {} is not a multiple of the alignment {alignment}",
                self.offset
            ));
        }
        match self.offset.checked_add(byte_len) {
            Some(end) if end <= data_len => {}
            _ => {
                return Err(format!(
                    "data at offset {} of {byte_len} bytes runs past the end of the data section \
                     ({data_len} bytes)",
                    self.offset
                ));
            }
        }
        let shape = self
            .dimensions
            .iter()
            .rev()
            .map(|&dimension| dimension as usize)
            .collect();
        Ok(GgufTensor {
            name: String::new(),
            shape,
            ty,
            file_offset: data_offset + self.offset as usize,
            byte_len: byte_len as usize,
        })
    }
}

fn check_no_overlap(tensors: &[GgufTensor]) -> Result<(), GgufError> {
    let mut extents: Vec<&GgufTensor> = tensors.iter().filter(|t| t.byte_len > 0).collect();
    extents.sort_by_key(|tensor| tensor.file_offset);
    for pair in extents.windows(2) {
        if pair[0].file_offset + pair[0].byte_len > pair[1].file_offset {
            return Err(error(format!(
                "the data of tensors `{}` and `{}` overlap",
                pair[0].name, pair[1].name
            )));
        }
    }
    Ok(())
}

fn align_up(position: u64, alignment: u64) -> Option<u64> {
    position
        .checked_add(alignment - 1)
        .map(|end| end / alignment * alignment)
}

/// A cursor over the file's bytes; every read checks the bytes are there.
struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    fn take(&mut self, count: usize, what: &str) -> Result<&'a [u8], GgufError> {
        if count > self.remaining() {
            return Err(error(format!(
                "the file ends in {what} (at byte {} of {}, {count} bytes needed)",
                self.position,
                self.bytes.len()
            )));
        }
        let taken = &self.bytes[self.position..self.position + count];
        self.position += count;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        Ok(self.take(N, what)?.try_into().expect("take gave N bytes"))
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Fails unless `count` items of at least `minimum_bytes` each can fit in the bytes left.
    fn check_count(&self, count: u64, minimum_bytes: u64, what: &str) -> Result<(), GgufError> {
        match count.checked_mul(minimum_bytes) {
            Some(bytes) if bytes <= self.remaining() as u64 => Ok(()),
            _ => Err(error(format!(
                "the file claims {count} {what}, more than its {} remaining bytes can hold",
                self.remaining()
            ))),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        let length = self.u64("a string length").map_err(|e| e.0)?;
        if length > self.remaining() as u64 {
            return Err(format!(
                "a string of {length} bytes at byte {} runs past the end of the file ({} bytes)",
                self.position,
                self.bytes.len()
            ));
        }
        let bytes = self.take(length as usize, "a string").map_err(|e| e.0)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| format!("the string at byte {} is not UTF-8", self.position))
    }

    fn value(&mut self, depth: usize) -> Result<MetadataValue, String> {
        let type_id = self.u32("a value type").map_err(|e| e.0)?;
        self.value_of_type(type_id, depth)
    }

    fn value_of_type(&mut self, type_id: u32, depth: usize) -> Result<MetadataValue, String> {
        let what = "a metadata value";
        let value = match type_id {
            0 => MetadataValue::U8(u8::from_le_bytes(self.array(what).map_err(|e| e.0)?)),
            1 => MetadataValue::I8(i8::from_le_bytes(self.array(what).map_err(|e| e.0)?)),
            2 => MetadataValue::U16(u16::from_le_bytes(self.array(what).map_err(|e| e.0)?)),
            3 => MetadataValue::I16(i16::from_le_bytes(self.array(what).map_err(|e| e.0)?)),
            4 => MetadataValue::U32(u32::from_le_bytes(self.array(what).map_err(|e| e.0)?)),
            5 => MetadataValue::I32(i32::from_le_bytes(self.array(what).map_err(|e| e.0)?)),
            6 => MetadataValue::F32(f32::from_le_bytes(self.array(what).map_err(|e| e.0)?)),
            7 => match self.array::<1>(what).map_err(|e| e.0)?[0] {
                0 => MetadataValue::Bool(false),
                1 => MetadataValue::Bool(true),
                other => return Err(format!("a boolean is {other}, not 0 or 1")),
            },
            8 => MetadataValue::String(self.string()?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(format!("arrays nest deeper than {MAX_ARRAY_DEPTH}"));
                }
                let element_type = self.u32("an array's element type").map_err(|e| e.0)?;
                let count = self.u64("an array's length").map_err(|e| e.0)?;
                let minimum_bytes = match element_type {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    other => return Err(format!("unknown array element type {other}")),
                };
                self.check_count(count, minimum_bytes, "array elements")
                    .map_err(|e| e.0)?;
                let mut elements = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    elements.push(self.value_of_type(element_type, depth + 1)?);
                }
                MetadataValue::Array(elements)
            }
            10 => MetadataValue::U64(u64::from_le_bytes(self.array(what).map_err(|e| e.0)?)),
            11 => MetadataValue::I64(i64::from_le_bytes(self.array(what).map_err(|e| e.0)?)),
            12 => MetadataValue::F64(f64::from_le_bytes(self.array(what).map_err(|e| e.0)?)),
            other => return Err(format!("unknown value type {other}")),
        };
        Ok(value)
    }

    fn tensor_info(&mut self) -> Result<TensorInfo, String> {
        let rank = self.u32("a tensor rank").map_err(|e| e.0)? as usize;
        if rank > MAX_RANK {
            return Err(format!("rank {rank} is more than GGUF's {MAX_RANK}"));
        }
        let mut dimensions = Vec::with_capacity(rank);
        for _ in 0..rank {
            dimensions.push(self.u64("a tensor dimension").map_err(|e| e.0)?);
        }
        let type_id = self.u32("a tensor type").map_err(|e| e.0)?;
        let offset = self.u64("a tensor offset").map_err(|e| e.0)?;
        Ok(TensorInfo {
            dimensions,
            type_id,
            offset,
        })
    }
}
