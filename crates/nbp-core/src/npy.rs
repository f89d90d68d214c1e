//! Reading and writing NumPy `.npy` files (format versions 1.0–3.0, C order, little-endian), so that token ids
//! and pixels can be inspected with `numpy.load` and test fixtures made by Python can be read back.

use std::path::Path;

use crate::error::{Error, Result, write_atomic};

/// The element data of an [`NpyArray`].
#[derive(Debug, Clone, PartialEq)]
pub enum NpyData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    U8(Vec<u8>),
}

/// An n-dimensional array read from or written to a `.npy` file.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    /// Dimensions, outermost first (C order).
    pub shape: Vec<usize>,
    /// Elements in C order.
    pub data: NpyData,
}

impl NpyArray {
    /// A float32 array. Panics if `data.len()` does not match `shape`.
    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Self {
        assert_eq!(shape.iter().product::<usize>(), data.len(), "npy: shape does not match data");
        Self { shape, data: NpyData::F32(data) }
    }

    /// An int32 array. Panics if `data.len()` does not match `shape`.
    pub fn i32(shape: Vec<usize>, data: Vec<i32>) -> Self {
        assert_eq!(shape.iter().product::<usize>(), data.len(), "npy: shape does not match data");
        Self { shape, data: NpyData::I32(data) }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when the array has no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements converted to `f32`.
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            NpyData::F32(v) => v.clone(),
            NpyData::F64(v) => v.iter().map(|&x| x as f32).collect(),
            NpyData::I32(v) => v.iter().map(|&x| x as f32).collect(),
            NpyData::I64(v) => v.iter().map(|&x| x as f32).collect(),
            NpyData::U8(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// The elements converted to `i64`; floats must hold integral values.
    pub fn to_i64(&self) -> Result<Vec<i64>> {
        let from_float = |x: f64| {
            // Beyond ±2^63 a cast would saturate, and the id reported would not be the one in the file.
            if x.fract() == 0.0 && x.abs() < 2f64.powi(63) {
                Ok(x as i64)
            } else if x.fract() == 0.0 {
                Err(Error::invalid(format!("npy array holds the value {x:e}, far beyond any integer id")))
            } else {
                Err(Error::invalid(format!("npy array holds the non-integer value {x} where integer ids are expected")))
            }
        };
        match &self.data {
            NpyData::F32(v) => v.iter().map(|&x| from_float(x as f64)).collect(),
            NpyData::F64(v) => v.iter().map(|&x| from_float(x)).collect(),
            NpyData::I32(v) => Ok(v.iter().map(|&x| x as i64).collect()),
            NpyData::I64(v) => Ok(v.clone()),
            NpyData::U8(v) => Ok(v.iter().map(|&x| x as i64).collect()),
        }
    }

    /// Serialises the array in `.npy` format 1.0.
    pub fn to_bytes(&self) -> Vec<u8> {
        let (descr, payload): (&str, Vec<u8>) = match &self.data {
            NpyData::F32(v) => ("<f4", v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            NpyData::F64(v) => ("<f8", v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            NpyData::I32(v) => ("<i4", v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            NpyData::I64(v) => ("<i8", v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            NpyData::U8(v) => ("|u1", v.clone()),
        };
        let shape = match self.shape.len() {
            1 => format!("({},)", self.shape[0]),
            _ => format!("({})", self.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
        };
        let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        // Magic (6) + version (2) + header length (2) + header + '\n' is padded to a multiple of 64 bytes.
        let unpadded = 10 + header.len() + 1;
        header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
        header.push('\n');
        let mut out = Vec::with_capacity(10 + header.len() + payload.len());
        out.extend_from_slice(b"\x93NUMPY\x01\x00");
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// Parses `.npy` bytes; `origin` names the source in error messages.
    pub fn from_bytes(bytes: &[u8], origin: &Path) -> Result<Self> {
        let bad = |m: &str| Error::file(origin, format!("not a valid .npy file: {m}"));
        if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
            return Err(bad("missing the \\x93NUMPY magic"));
        }
        let (header_len, start) = match bytes[6] {
            1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
            2 | 3 => {
                if bytes.len() < 12 {
                    return Err(bad("truncated header"));
                }
                (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12)
            }
            v => return Err(bad(&format!("unsupported format version {v}"))),
        };
        let header = bytes.get(start..start + header_len).ok_or_else(|| bad("truncated header"))?;
        let header = std::str::from_utf8(header).map_err(|_| bad("header is not text"))?;
        let field = |name: &str| -> Result<&str> {
            let key = format!("'{name}':");
            let at = header.find(&key).ok_or_else(|| bad(&format!("header has no '{name}'")))?;
            Ok(header[at + key.len()..].trim_start())
        };
        let descr = field("descr")?;
        let descr =
            descr.strip_prefix('\'').and_then(|d| d.split('\'').next()).ok_or_else(|| bad("unreadable 'descr'"))?;
        if field("fortran_order")?.starts_with("True") {
            return Err(bad("Fortran-ordered arrays are not supported; save with numpy.ascontiguousarray"));
        }
        let shape_text = field("shape")?;
        let shape_text =
            shape_text.strip_prefix('(').and_then(|s| s.split(')').next()).ok_or_else(|| bad("unreadable 'shape'"))?;
        let shape = shape_text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<usize>().map_err(|_| bad(&format!("bad dimension '{s}'"))))
            .collect::<Result<Vec<_>>>()?;
        let count = shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .filter(|n| n.checked_mul(8).is_some())
            .ok_or_else(|| bad(&format!("shape {shape:?} has more elements than any file can hold")))?;
        let payload = &bytes[start + header_len..];
        let take = |size: usize| -> Result<&[u8]> {
            payload.get(..count * size).ok_or_else(|| {
                bad(&format!(
                    "data is truncated: shape {shape:?} needs {} bytes, the file has {}",
                    count * size,
                    payload.len()
                ))
            })
        };
        let data = match descr {
            "<f4" => {
                NpyData::F32(take(4)?.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect())
            }
            "<f8" => {
                NpyData::F64(take(8)?.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect())
            }
            "<i4" => {
                NpyData::I32(take(4)?.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap())).collect())
            }
            "<i8" => {
                NpyData::I64(take(8)?.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect())
            }
            "|u1" | "<u1" => NpyData::U8(take(1)?.to_vec()),
            "|b1" => NpyData::U8(take(1)?.to_vec()),
            other => {
                return Err(bad(&format!(
                    "unsupported dtype '{other}' (supported: float32, float64, int32, int64, uint8)"
                )));
            }
        };
        Ok(Self { shape, data })
    }
}

/// Reads a `.npy` file.
pub fn read_npy(path: impl AsRef<Path>) -> Result<NpyArray> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    NpyArray::from_bytes(&bytes, path)
}

/// Writes a `.npy` file (atomically).
pub fn write_npy(path: impl AsRef<Path>, array: &NpyArray) -> Result<()> {
    write_atomic(path, &array.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_values_and_shape() {
        let a = NpyArray::f32(vec![2, 3], vec![0.5, -1.0, 2.25, 3.0, 4.0, 1e-7]);
        let b = NpyArray::from_bytes(&a.to_bytes(), Path::new("mem")).unwrap();
        assert_eq!(a, b);
        let i = NpyArray::i32(vec![4], vec![0, 63999, -3, 7]);
        assert_eq!(NpyArray::from_bytes(&i.to_bytes(), Path::new("mem")).unwrap(), i);
    }

    #[test]
    fn header_is_64_byte_aligned_and_numpy_compatible() {
        let bytes = NpyArray::i32(vec![1, 5, 16, 16], vec![0; 1280]).to_bytes();
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
        assert!(header.starts_with("{'descr': '<i4', 'fortran_order': False, 'shape': (1, 5, 16, 16), }"));
        assert!(header.ends_with('\n'));
    }

    #[test]
    fn truncated_and_foreign_files_are_clear_errors() {
        let bytes = NpyArray::f32(vec![8], vec![1.0; 8]).to_bytes();
        let err = NpyArray::from_bytes(&bytes[..bytes.len() - 4], Path::new("x.npy")).unwrap_err();
        assert!(err.to_string().contains("x.npy") && err.to_string().contains("truncated"), "{err}");
        let err = NpyArray::from_bytes(b"GIF89a.....", Path::new("y.npy")).unwrap_err();
        assert!(err.to_string().contains("magic"), "{err}");
        // A damaged header whose shape overflows the element count.
        let header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 1099511627776), }\n";
        let mut damaged = b"\x93NUMPY\x01\x00".to_vec();
        damaged.extend((header.len() as u16).to_le_bytes());
        damaged.extend(header);
        damaged.extend([0; 32]);
        let err = NpyArray::from_bytes(&damaged, Path::new("z.npy")).unwrap_err().to_string();
        assert!(err.contains("z.npy") && err.contains("more elements than any file can hold"), "{err}");
    }

    #[test]
    fn integer_conversion_rejects_fractions() {
        assert_eq!(NpyArray::f32(vec![2], vec![3.0, 4.0]).to_i64().unwrap(), vec![3, 4]);
        assert!(NpyArray::f32(vec![1], vec![3.5]).to_i64().is_err());
        // Integral but beyond i64: named as it is in the file, not saturated into another id.
        let big = NpyArray { shape: vec![1], data: NpyData::F64(vec![1e20]) };
        let e = big.to_i64().unwrap_err().to_string();
        assert_eq!(e, "npy array holds the value 1e20, far beyond any integer id");
        assert_eq!(NpyArray::f32(vec![1], vec![-1e18]).to_i64().unwrap(), vec![-999_999_984_306_749_440]);
    }
}
