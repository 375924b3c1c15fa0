//! Constant tensors: ONNX initializers and `Constant` nodes decoded to f32 or i64 values, and the
//! few operations on them that constant folding and weight layout need.

use crate::onnx::proto::TensorProto;

/// ONNX's element type codes (`TensorProto.DataType`) that the importer reads.
pub(super) mod data_type {
    pub const FLOAT: i32 = 1;
    pub const UINT8: i32 = 2;
    pub const INT8: i32 = 3;
    pub const UINT16: i32 = 4;
    pub const INT16: i32 = 5;
    pub const INT32: i32 = 6;
    pub const INT64: i32 = 7;
    pub const BOOL: i32 = 9;
    pub const FLOAT16: i32 = 10;
    pub const DOUBLE: i32 = 11;
    pub const UINT32: i32 = 12;
    pub const UINT64: i32 = 13;
}

/// A constant tensor, in row-major order.
#[derive(Clone, Debug, PartialEq)]
pub struct Constant {
    pub shape: Vec<usize>,
    pub data: Data,
}

/// The elements of a constant: floats as f32, integers and booleans as i64.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl Constant {
    pub fn f32(shape: Vec<usize>, values: Vec<f32>) -> Self {
        Constant {
            shape,
            data: Data::F32(values),
        }
    }

    pub fn i64(shape: Vec<usize>, values: Vec<i64>) -> Self {
        Constant {
            shape,
            data: Data::I64(values),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether it holds `f32` values, at least one: what a `parameter` can hold.
    pub fn is_nonempty_f32(&self) -> bool {
        matches!(self.data, Data::F32(_)) && !self.is_empty()
    }

    pub fn len(&self) -> usize {
        match &self.data {
            Data::F32(values) => values.len(),
            Data::I64(values) => values.len(),
        }
    }

    /// The elements as f32 (integers converted).
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            Data::F32(values) => values.clone(),
            Data::I64(values) => values.iter().map(|&value| value as f32).collect(),
        }
    }

    /// The elements as i64 (floats truncated, as ONNX's Cast does).
    pub fn to_i64(&self) -> Vec<i64> {
        match &self.data {
            Data::F32(values) => values.iter().map(|&value| value as i64).collect(),
            Data::I64(values) => values.clone(),
        }
    }

    /// The single value of a constant with one element (any rank), as f32.
    pub fn scalar_f32(&self) -> Option<f32> {
        (self.len() == 1).then(|| self.to_f32()[0])
    }

    /// The value every element has, when they are all equal (and there is at least one).
    pub fn uniform_f32(&self) -> Option<f32> {
        let values = self.to_f32();
        let first = *values.first()?;
        values
            .iter()
            .all(|&value| value.to_bits() == first.to_bits())
            .then_some(first)
    }

    /// The same elements under another shape with as many elements.
    pub fn reshaped(&self, shape: Vec<usize>) -> Self {
        Constant {
            shape,
            data: self.data.clone(),
        }
    }

    /// A 2-D constant transposed: `[rows, cols]` to `[cols, rows]`.
    pub fn transposed_2d(&self) -> Self {
        let (rows, cols) = (self.shape[0], self.shape[1]);
        let values = self.to_f32();
        let mut out = vec![0.0; values.len()];
        for row in 0..rows {
            for col in 0..cols {
                out[col * rows + row] = values[row * cols + col];
            }
        }
        Constant::f32(vec![cols, rows], out)
    }
}

/// Decodes an initializer or a `Constant` node's tensor. The error says why it cannot be read.
pub fn decode_tensor(tensor: &TensorProto) -> Result<Constant, String> {
    use data_type::*;
    if tensor.data_location == Some(1) {
        return Err("its data is in an external file".into());
    }
    let mut shape = Vec::with_capacity(tensor.dims.len());
    for &dim in &tensor.dims {
        shape.push(usize::try_from(dim).map_err(|_| format!("it has a negative dimension {dim}"))?);
    }
    let count = shape
        .iter()
        .try_fold(1usize, |count, &dim| count.checked_mul(dim))
        .filter(|&count| count <= (1 << 32))
        .ok_or_else(|| format!("its shape {shape:?} is too large"))?;
    let data_type = tensor.data_type.unwrap_or(0);
    let raw = tensor.raw_data.as_deref();
    let data = match (data_type, raw) {
        (FLOAT, Some(raw)) => Data::F32(little_endian(raw, count, f32::from_le_bytes)?),
        (FLOAT, None) => Data::F32(tensor.float_data.clone()),
        (DOUBLE, Some(raw)) => Data::F32(
            little_endian(raw, count, |b: [u8; 8]| f64::from_le_bytes(b))?
                .into_iter()
                .map(|value| value as f32)
                .collect(),
        ),
        (DOUBLE, None) => Data::F32(tensor.double_data.iter().map(|&v| v as f32).collect()),
        (FLOAT16, Some(raw)) => Data::F32(little_endian(raw, count, |b: [u8; 2]| {
            half::f16::from_le_bytes(b).to_f32()
        })?),
        // Typed f16 data sits in `int32_data`, one value per element, bits in the low half.
        (FLOAT16, None) => Data::F32(
            tensor
                .int32_data
                .iter()
                .map(|&bits| half::f16::from_bits(bits as u16).to_f32())
                .collect(),
        ),
        (INT64, Some(raw)) => Data::I64(little_endian(raw, count, i64::from_le_bytes)?),
        (INT64, None) => Data::I64(tensor.int64_data.clone()),
        (INT32, Some(raw)) => Data::I64(widen(little_endian(raw, count, i32::from_le_bytes)?)),
        (INT16, Some(raw)) => Data::I64(widen(little_endian(raw, count, i16::from_le_bytes)?)),
        (UINT16, Some(raw)) => Data::I64(widen(little_endian(raw, count, u16::from_le_bytes)?)),
        (UINT32, Some(raw)) => Data::I64(widen(little_endian(raw, count, u32::from_le_bytes)?)),
        (INT8, Some(raw)) => Data::I64(raw.iter().map(|&byte| byte as i8 as i64).collect()),
        (UINT8 | BOOL, Some(raw)) => Data::I64(raw.iter().map(|&byte| byte as i64).collect()),
        (INT32 | INT16 | UINT16 | INT8 | UINT8 | BOOL, None) => Data::I64(
            tensor
                .int32_data
                .iter()
                .map(|&value| value as i64)
                .collect(),
        ),
        (UINT32 | UINT64, None) => Data::I64(
            tensor
                .uint64_data
                .iter()
                .map(|&value| value as i64)
                .collect(),
        ),
        (UINT64, Some(raw)) => Data::I64(
            little_endian(raw, count, u64::from_le_bytes)?
                .into_iter()
                .map(|value| value as i64)
                .collect(),
        ),
        (other, _) => return Err(format!("its element type {other} is not supported")),
    };
    let constant = Constant { shape, data };
    if constant.len() != count {
        return Err(format!(
            "it holds {} values for its shape {:?}",
            constant.len(),
            constant.shape
        ));
    }
    Ok(constant)
}

/// Reads `count` little-endian values of `N` bytes each.
fn little_endian<const N: usize, T>(
    raw: &[u8],
    count: usize,
    read: impl Fn([u8; N]) -> T,
) -> Result<Vec<T>, String> {
    if raw.len() != count * N {
        return Err(format!(
            "its raw data has {} bytes, not {} ({count} values of {N} bytes)",
            raw.len(),
            count * N
        ));
    }
    Ok(raw
        .chunks_exact(N)
        .map(|chunk| read(chunk.try_into().expect("chunks_exact gives N bytes")))
        .collect())
}

fn widen<T: Into<i64>>(values: Vec<T>) -> Vec<i64> {
    values.into_iter().map(Into::into).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(data_type: i32, dims: Vec<i64>) -> TensorProto {
        TensorProto {
            data_type: Some(data_type),
            dims,
            ..Default::default()
        }
    }

    #[test]
    fn raw_and_typed_fields_give_the_same_values() {
        let mut raw = tensor(data_type::FLOAT, vec![2]);
        raw.raw_data = Some(
            [1.5f32, -2.0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        );
        let mut typed = tensor(data_type::FLOAT, vec![2]);
        typed.float_data = vec![1.5, -2.0];
        assert_eq!(decode_tensor(&raw).unwrap(), decode_tensor(&typed).unwrap());

        let mut raw = tensor(data_type::INT32, vec![3]);
        raw.raw_data = Some([7i32, -1, 0].iter().flat_map(|v| v.to_le_bytes()).collect());
        assert_eq!(decode_tensor(&raw).unwrap().data, Data::I64(vec![7, -1, 0]));
    }

    #[test]
    fn f16_is_widened_to_f32() {
        let mut raw = tensor(data_type::FLOAT16, vec![2]);
        raw.raw_data = Some(vec![0x00, 0x3c, 0x00, 0xc0]); // 1.0, -2.0
        assert_eq!(
            decode_tensor(&raw).unwrap().data,
            Data::F32(vec![1.0, -2.0])
        );
        let mut typed = tensor(data_type::FLOAT16, vec![1]);
        typed.int32_data = vec![0x3800]; // 0.5
        assert_eq!(decode_tensor(&typed).unwrap().data, Data::F32(vec![0.5]));
    }

    #[test]
    fn wrong_sizes_and_external_data_are_errors() {
        let mut short = tensor(data_type::FLOAT, vec![3]);
        short.raw_data = Some(vec![0; 8]);
        assert!(
            decode_tensor(&short)
                .unwrap_err()
                .contains("raw data has 8 bytes")
        );
        let mut external = tensor(data_type::FLOAT, vec![3]);
        external.data_location = Some(1);
        assert!(
            decode_tensor(&external)
                .unwrap_err()
                .contains("external file")
        );
        let huge = tensor(data_type::FLOAT, vec![1 << 40, 1 << 40]);
        assert!(decode_tensor(&huge).unwrap_err().contains("too large"));
    }
}
