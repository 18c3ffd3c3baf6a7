//! One small `Copy` error type for everything in core.
//!
//! Errors carry enough context to act on (which tensor, which shape, which byte offset) without
//! allocating: names are copied into a fixed inline buffer ([`Name`]) and truncated if longer.

use core::fmt;

/// Result alias used throughout goldcrest-core.
pub type Result<T> = core::result::Result<T, Error>;

/// Maximum bytes of a tensor name kept inside an [`Error`]; longer names are truncated.
pub const NAME_CAPACITY: usize = 64;

/// A tensor (or metadata key) name copied into an error, truncated to [`NAME_CAPACITY`] bytes
/// on a UTF-8 character boundary.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Name {
    bytes: [u8; NAME_CAPACITY],
    len: u8,
    truncated: bool,
}

impl Name {
    /// An empty name (used where no tensor is involved).
    pub const EMPTY: Name = Name {
        bytes: [0; NAME_CAPACITY],
        len: 0,
        truncated: false,
    };

    /// Copies `s`, truncating on a character boundary if it is longer than [`NAME_CAPACITY`].
    pub fn new(s: &str) -> Name {
        let mut end = s.len().min(NAME_CAPACITY);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        let mut bytes = [0u8; NAME_CAPACITY];
        bytes[..end].copy_from_slice(&s.as_bytes()[..end]);
        Name {
            bytes,
            len: end as u8,
            truncated: end < s.len(),
        }
    }

    /// The (possibly truncated) name.
    pub fn as_str(&self) -> &str {
        // Built only from a `&str` cut on a char boundary, so this never fails.
        core::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }

    /// Whether the original name was longer than what is kept.
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())?;
        if self.truncated {
            f.write_str("…")?;
        }
        Ok(())
    }
}

/// A tensor shape as found in a file or expected by a model (up to [`MAX_DIMS`] dimensions).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Shape {
    dims: [u64; MAX_DIMS],
    ndim: u8,
}

/// Most dimensions a tensor may have in a goldcrest file.
pub const MAX_DIMS: usize = 4;

impl Shape {
    /// A shape from its dimensions; `None` if there are more than [`MAX_DIMS`].
    pub fn new(dims: &[u64]) -> Option<Shape> {
        if dims.len() > MAX_DIMS {
            return None;
        }
        let mut d = [0u64; MAX_DIMS];
        d[..dims.len()].copy_from_slice(dims);
        Some(Shape {
            dims: d,
            ndim: dims.len() as u8,
        })
    }

    /// The dimensions, outermost first.
    pub fn dims(&self) -> &[u64] {
        &self.dims[..self.ndim as usize]
    }

    /// Number of elements, or `None` on overflow.
    pub fn elements(&self) -> Option<u64> {
        self.dims()
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.dims().iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// Everything that can go wrong in goldcrest-core.
///
/// `Copy`, allocation-free, and specific: each variant says what to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The input ended before a structure it announced (`needed` bytes, `available` present).
    Truncated {
        /// Bytes the structure needs.
        needed: u64,
        /// Bytes actually available.
        available: u64,
    },
    /// The safetensors header length is zero, larger than the file, or above the parser's limit.
    HeaderLength {
        /// The length read from the first 8 bytes.
        declared: u64,
    },
    /// The header is not the JSON object safetensors specifies.
    Json {
        /// Byte offset inside the header where parsing failed.
        offset: u32,
        /// What was expected there.
        expected: &'static str,
    },
    /// A tensor's dtype string is not one goldcrest reads.
    UnknownDtype {
        /// The tensor.
        tensor: Name,
    },
    /// A tensor appears twice in the header.
    DuplicateTensor {
        /// The tensor.
        tensor: Name,
    },
    /// A tensor's shape has too many dimensions, or its byte size overflows.
    BadShape {
        /// The tensor.
        tensor: Name,
    },
    /// A tensor's data offsets are reversed, outside the data section, inconsistent with its
    /// shape and dtype, or overlap another tensor.
    BadOffsets {
        /// The tensor.
        tensor: Name,
    },
    /// The tensors do not cover the data section exactly: safetensors forbids holes between
    /// tensors and bytes after the last one (they would let a file carry hidden content).
    DataGap {
        /// Bytes of the data section that belong to tensors.
        covered: u64,
        /// Bytes in the data section.
        data_len: u64,
    },
    /// A tensor used as a matrix does not have exactly two (logical) dimensions.
    NotMatrix {
        /// The tensor.
        tensor: Name,
        /// Its number of dimensions.
        rank: u8,
    },
    /// Tensor data is not aligned for a zero-copy view of its element type. Goldcrest never
    /// copies silently: place the model bytes at an aligned address (see `docs/format.md`).
    Misaligned {
        /// The tensor.
        tensor: Name,
        /// Alignment the element type needs, in bytes.
        required: u8,
    },
    /// A tensor the model needs is absent.
    MissingTensor {
        /// The tensor.
        tensor: Name,
    },
    /// A tensor is present that the model does not know (strict loading).
    UnexpectedTensor {
        /// The tensor.
        tensor: Name,
    },
    /// A tensor has the wrong shape.
    ShapeMismatch {
        /// The tensor.
        tensor: Name,
        /// Shape the model expects.
        expected: Shape,
        /// Shape found in the file.
        found: Shape,
    },
    /// A tensor's storage format is not accepted where it is used.
    UnsupportedFormat {
        /// The tensor.
        tensor: Name,
    },
    /// A metadata key is missing or its value does not parse.
    BadMetadata {
        /// The key.
        key: Name,
    },
    /// The file was written by a newer, incompatible goldcrest format version.
    UnsupportedVersion {
        /// Major version found in the file.
        found_major: u16,
        /// Newest major version this build reads.
        supported_major: u16,
    },
    /// A caller-provided buffer is too small.
    BufferTooSmall {
        /// Bytes (or elements, for typed slices) needed.
        needed: u64,
        /// Bytes (or elements) provided.
        provided: u64,
    },
    /// A caller-provided buffer does not start at the alignment required.
    BufferMisaligned {
        /// Required alignment in bytes.
        required: u16,
    },
    /// Two slices that must agree in length do not (for example weights and activations).
    LengthMismatch {
        /// Expected length.
        expected: u64,
        /// Found length.
        found: u64,
    },
    /// A tensor imported as already-ternary is not `scale·{-1, 0, 1}` with one f16 scale per
    /// 256-block of a row.
    NotTernary {
        /// The tensor.
        tensor: Name,
        /// Index (row-major) of the first element that breaks the rule.
        element: u64,
    },
    /// A value is NaN or infinite where a finite number is required.
    NonFinite,
    /// A value is outside the range that the operation accepts.
    OutOfRange,
    /// A checksum does not match (saved state, container data).
    Checksum,
    /// A model's context (KV cache) is full: `capacity` positions are in use. Start a new
    /// sequence, or open the model with a longer context.
    ContextFull {
        /// Positions the cache holds.
        capacity: u64,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated { needed, available } => write!(
                f,
                "input truncated: needs {needed} bytes, only {available} present"
            ),
            Error::HeaderLength { declared } => write!(
                f,
                "safetensors header length {declared} is zero, exceeds the file, or exceeds the parser limit"
            ),
            Error::Json { offset, expected } => {
                write!(
                    f,
                    "header JSON invalid at byte {offset}: expected {expected}"
                )
            }
            Error::UnknownDtype { tensor } => write!(f, "tensor '{tensor}': unknown dtype"),
            Error::DuplicateTensor { tensor } => write!(f, "tensor '{tensor}' appears twice"),
            Error::BadShape { tensor } => {
                write!(
                    f,
                    "tensor '{tensor}': too many dimensions or size overflows"
                )
            }
            Error::BadOffsets { tensor } => write!(
                f,
                "tensor '{tensor}': data offsets out of bounds, inconsistent with shape, or overlapping"
            ),
            Error::DataGap { covered, data_len } => write!(
                f,
                "tensors cover {covered} of the {data_len} data bytes; safetensors forbids holes and trailing bytes"
            ),
            Error::NotMatrix { tensor, rank } => write!(
                f,
                "tensor '{tensor}' has {rank} dimensions; a matrix needs exactly 2"
            ),
            Error::Misaligned { tensor, required } => write!(
                f,
                "tensor '{tensor}': data not aligned to {required} bytes; place the model bytes at an aligned address (docs/format.md)"
            ),
            Error::MissingTensor { tensor } => write!(f, "missing tensor '{tensor}'"),
            Error::UnexpectedTensor { tensor } => write!(f, "unexpected tensor '{tensor}'"),
            Error::ShapeMismatch {
                tensor,
                expected,
                found,
            } => write!(
                f,
                "tensor '{tensor}': expected shape {expected}, found {found}"
            ),
            Error::UnsupportedFormat { tensor } => {
                write!(f, "tensor '{tensor}': storage format not supported here")
            }
            Error::BadMetadata { key } => write!(f, "metadata '{key}' missing or invalid"),
            Error::UnsupportedVersion {
                found_major,
                supported_major,
            } => write!(
                f,
                "file format version {found_major}.x is newer than this goldcrest reads ({supported_major}.x); upgrade goldcrest"
            ),
            Error::BufferTooSmall { needed, provided } => {
                write!(f, "buffer too small: needs {needed}, got {provided}")
            }
            Error::BufferMisaligned { required } => {
                write!(f, "buffer must start at a {required}-byte aligned address")
            }
            Error::LengthMismatch { expected, found } => {
                write!(f, "length mismatch: expected {expected}, found {found}")
            }
            Error::NotTernary { tensor, element } => write!(
                f,
                "tensor '{tensor}' is not ternary: element {element} is not 0 or ±(its 256-block's f16 scale); quantize it with absmean instead"
            ),
            Error::NonFinite => f.write_str("value is NaN or infinite"),
            Error::OutOfRange => f.write_str("value out of range"),
            Error::Checksum => f.write_str("checksum mismatch"),
            Error::ContextFull { capacity } => write!(
                f,
                "context full: all {capacity} positions of the KV cache are used; start a new sequence or use a longer context"
            ),
        }
    }
}

impl core::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_truncates_on_char_boundary() {
        let long = "é".repeat(40); // 80 bytes
        let n = Name::new(&long);
        assert!(n.is_truncated());
        assert_eq!(n.as_str().len(), 64);
        assert!(n.as_str().chars().all(|c| c == 'é'));
    }

    #[test]
    fn shape_overflow_is_none() {
        let s = Shape::new(&[u64::MAX, 2]).unwrap();
        assert_eq!(s.elements(), None);
        assert!(Shape::new(&[1, 2, 3, 4, 5]).is_none());
    }
}
