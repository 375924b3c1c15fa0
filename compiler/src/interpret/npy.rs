//! `.npy` files (NumPy's format) as interpreter tensors: what `nnc run` reads its inputs from.
//!
//! The array itself is read by `ndarray-npy`; its header, a Python dict literal, is checked here
//! first, because an untrusted file can make the literal parser take exponential time on a few
//! hundred nested brackets (found by the `safetensors_npy` fuzz target). A NumPy header is a
//! flat dict holding one shape tuple, so more than `MAX_NESTING` levels of brackets, or a header
//! longer than NumPy's own limit, is refused before parsing.

use super::Tensor;
use crate::ir::DType;
use ndarray::ArrayD;
use ndarray_npy::ReadNpyExt;

/// The longest header read, in bytes: NumPy's `max_header_size` (`np.load` refuses longer ones).
pub const MAX_HEADER_BYTES: usize = 10_000;

/// The deepest bracket nesting accepted: the dict, the shape tuple, and one spare level.
pub const MAX_NESTING: usize = 3;

/// Reads an `.npy` file's bytes as a tensor of `dtype`: an error, never a panic or a hang, on
/// any bytes.
pub fn read_npy(bytes: &[u8], dtype: DType) -> Result<Tensor, String> {
    check_header(bytes)?;
    Ok(match dtype {
        DType::F32 => Tensor::F32(
            ArrayD::<f32>::read_npy(bytes)
                .map_err(|error| format!("not an f32 .npy file: {error}"))?,
        ),
        DType::I64 => Tensor::I64(
            ArrayD::<i64>::read_npy(bytes)
                .map_err(|error| format!("not an i64 .npy file: {error}"))?,
        ),
    })
}

/// Refuses headers that are too long or nest too deep. Files too short to hold a header, or
/// without the magic string, are left to the reader, which names what is wrong.
fn check_header(bytes: &[u8]) -> Result<(), String> {
    const MAGIC: &[u8] = b"\x93NUMPY";
    if !bytes.starts_with(MAGIC) || bytes.len() < 12 {
        return Ok(());
    }
    // Version 1 stores the header length in 2 bytes, versions 2 and 3 in 4.
    let (length, start) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        _ => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
    };
    if length > MAX_HEADER_BYTES {
        return Err(format!(
            "the .npy header is {length} bytes, more than the {MAX_HEADER_BYTES} NumPy itself reads"
        ));
    }
    let header = &bytes[start.min(bytes.len())..(start + length).min(bytes.len())];
    let mut depth = 0usize;
    for &byte in header {
        match byte {
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(format!(
                        "the .npy header nests brackets more than {MAX_NESTING} deep; a NumPy \
                         header is a dict holding a shape tuple"
                    ));
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(header: &str, data: &[u8]) -> Vec<u8> {
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(data);
        bytes
    }

    #[test]
    fn reads_arrays_and_refuses_deep_or_long_headers() {
        let data: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let good = npy(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\n",
            &data,
        );
        match read_npy(&good, DType::F32).unwrap() {
            Tensor::F32(array) => assert_eq!(array.as_slice().unwrap(), &[1.0, 2.0]),
            other => panic!("{other:?}"),
        }
        assert!(
            read_npy(&good, DType::I64)
                .unwrap_err()
                .contains("not an i64 .npy file")
        );

        let deep = npy(&format!("{}\n", "[".repeat(400)), &[]);
        let start = std::time::Instant::now();
        let error = read_npy(&deep, DType::F32).unwrap_err();
        assert!(error.contains("nests brackets more than 3 deep"), "{error}");
        assert!(start.elapsed().as_secs() < 1);

        let mut long = b"\x93NUMPY\x02\x00".to_vec();
        long.extend_from_slice(&20_000u32.to_le_bytes());
        long.extend(std::iter::repeat_n(b' ', 20_000));
        let error = read_npy(&long, DType::F32).unwrap_err();
        assert!(error.contains("the .npy header is 20000 bytes"), "{error}");

        assert!(read_npy(b"\x93NUMPY", DType::F32).is_err());
        assert!(read_npy(b"", DType::F32).is_err());
    }
}
