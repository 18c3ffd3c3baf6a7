//! Model architectures, each readable top to bottom: config from file metadata, weights as
//! borrowed views, state in caller memory, forward passes over caller scratch.
//!
//! Models read their tensors through [`TensorSource`], a small trait over "a set of named
//! tensors plus string metadata". The safetensors parser implements it for files; tests and
//! converters can implement it over memory they own.

use core::fmt::Write;

use crate::error::{Error, Name, Result, Shape};
use crate::format::SafeTensors;
use crate::ops::Vector;
use crate::quant::{Format, Matrix};

pub mod decoder;
pub mod goldfinch;
pub mod rwkv6;
pub mod toto;

/// Newest major version of the goldcrest file conventions this build reads.
pub const FORMAT_MAJOR: u16 = 1;

/// A borrowed tensor: storage format, logical shape and the stored bytes.
#[derive(Debug, Clone, Copy)]
pub struct TensorRef<'a> {
    /// Storage format.
    pub format: Format,
    /// Logical shape (for packed formats, the shape of the weights, not of the bytes).
    pub shape: Shape,
    /// The stored bytes, borrowed from the model file.
    pub bytes: &'a [u8],
}

impl<'a> TensorRef<'a> {
    /// Errors with [`Error::ShapeMismatch`] naming `name` unless the shape is exactly `dims`.
    pub fn expect_shape(&self, name: &str, dims: &[u64]) -> Result<()> {
        if self.shape.dims() == dims {
            return Ok(());
        }
        Err(Error::ShapeMismatch {
            tensor: Name::new(name),
            expected: Shape::new(dims).unwrap_or_default(),
            found: self.shape,
        })
    }

    /// A `rows × cols` matrix view after checking the shape is `[rows, cols]`.
    pub fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Matrix<'a>> {
        self.expect_shape(name, &[rows as u64, cols as u64])?;
        if self.format == Format::U8 {
            return Err(Error::UnsupportedFormat {
                tensor: Name::new(name),
            });
        }
        Matrix::new(name, self.format, rows, cols, self.bytes)
    }

    /// Like [`TensorRef::matrix`], but only f32/f16/bf16 (embeddings, low-rank adapters).
    pub fn float_matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Matrix<'a>> {
        if !matches!(self.format, Format::F32 | Format::F16 | Format::Bf16) {
            return Err(Error::UnsupportedFormat {
                tensor: Name::new(name),
            });
        }
        self.matrix(name, rows, cols)
    }

    /// A float vector view after checking the shape is exactly `dims`.
    pub fn vector(&self, name: &str, dims: &[u64]) -> Result<Vector<'a>> {
        self.expect_shape(name, dims)?;
        Vector::from_bytes(name, self.format, self.bytes)
    }
}

/// A set of named tensors and string metadata that a model loads from.
pub trait TensorSource<'a> {
    /// The tensor called `name`, or [`Error::MissingTensor`] naming it.
    fn tensor(&self, name: &str) -> Result<TensorRef<'a>>;
    /// The metadata value for `key` (already unescaped), if present.
    fn metadata(&self, key: &str) -> Option<&str>;
    /// Calls `visit` with every tensor name, stopping at the first error (strict loading).
    fn for_each_tensor_name(&self, visit: &mut dyn FnMut(&str) -> Result<()>) -> Result<()>;
}

impl<'a> TensorSource<'a> for SafeTensors<'a> {
    fn tensor(&self, name: &str) -> Result<TensorRef<'a>> {
        let view = SafeTensors::tensor(self, name)?;
        Ok(TensorRef {
            format: view.format()?,
            shape: Shape::new(view.shape()).ok_or(Error::BadShape {
                tensor: Name::new(name),
            })?,
            bytes: view.bytes(),
        })
    }

    fn metadata(&self, key: &str) -> Option<&str> {
        // Values with JSON escapes are not plain numbers or names; models treat them as absent,
        // which reports the key as missing or invalid.
        SafeTensors::metadata(self)
            .get(key)
            .and_then(|v| v.as_str())
    }

    fn for_each_tensor_name(&self, visit: &mut dyn FnMut(&str) -> Result<()>) -> Result<()> {
        for view in self.tensors() {
            let name = view.name();
            // A name with JSON escapes cannot be any model's tensor name.
            let plain = name.as_str().ok_or(Error::UnexpectedTensor {
                tensor: Name::new(name.raw()),
            })?;
            visit(plain)?;
        }
        Ok(())
    }
}

/// Total bytes of the tensors in `source` but the embedded tokenizer; strict: a tensor that
/// `is_known` refuses is [`Error::UnexpectedTensor`].
pub(crate) fn known_tensor_bytes(
    source: &dyn TensorSource<'_>,
    is_known: impl Fn(&str) -> bool,
) -> Result<usize> {
    let mut bytes = 0usize;
    source.for_each_tensor_name(&mut |name| {
        if !is_known(name) {
            return Err(Error::UnexpectedTensor {
                tensor: Name::new(name),
            });
        }
        if name != "tokenizer" {
            bytes = bytes.saturating_add(source.tensor(name)?.bytes.len());
        }
        Ok(())
    })?;
    Ok(bytes)
}

/// A tensor name built without allocation (`blocks.12.att.key.weight`).
pub(crate) type NameBuf = heapless::String<96>;

/// Formats a tensor or metadata name into `buf`.
pub(crate) fn format_name<'b>(buf: &'b mut NameBuf, args: core::fmt::Arguments) -> &'b str {
    buf.clear();
    // A name longer than the buffer is cut short; it then fails lookup and is reported as
    // missing under its (truncated) name, which is the right error for an absurd name anyway.
    let _ = buf.write_fmt(args);
    buf.as_str()
}

/// Checks `goldcrest.format_version` (major at most [`FORMAT_MAJOR`]) and `goldcrest.arch`.
pub fn check_header(src: &dyn TensorSource<'_>, arch: &str) -> Result<()> {
    const VERSION: &str = "goldcrest.format_version";
    const ARCH: &str = "goldcrest.arch";
    let version = src.metadata(VERSION).ok_or(Error::BadMetadata {
        key: Name::new(VERSION),
    })?;
    let major: u16 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .ok_or(Error::BadMetadata {
            key: Name::new(VERSION),
        })?;
    if major > FORMAT_MAJOR {
        return Err(Error::UnsupportedVersion {
            found_major: major,
            supported_major: FORMAT_MAJOR,
        });
    }
    if src.metadata(ARCH) != Some(arch) {
        return Err(Error::BadMetadata {
            key: Name::new(ARCH),
        });
    }
    Ok(())
}

/// A positive integer from metadata key `key`.
pub fn metadata_usize(src: &dyn TensorSource<'_>, key: &str) -> Result<usize> {
    src.metadata(key)
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&v| v > 0)
        .ok_or(Error::BadMetadata {
            key: Name::new(key),
        })
}
