//! Typed, zero-copy views of tensors.
//!
//! Every accessor borrows the file's bytes: element slices are reinterpreted in place with
//! `bytemuck`, and a view whose data is not aligned for its element type is an
//! [`Error::Misaligned`], never a silent copy.

use half::slice::HalfBitsSliceExt;
use half::{bf16, f16};

use super::json::JsonStr;
use super::meta::resolve_packed;
use super::safetensors::{Dims, Dtype, RawTensor, SafeTensors, name_of};
use crate::error::{Error, Result, Shape};
use crate::quant::{Format, Matrix};

/// One tensor of a [`SafeTensors`] file, borrowing its bytes.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    name: JsonStr<'a>,
    dtype: Dtype,
    format: Option<Format>,
    shape: Dims,
    stored_shape: Dims,
    data: &'a [u8],
    offset: u64,
}

impl<'a> TensorView<'a> {
    pub(crate) fn from_raw(file: &SafeTensors<'a>, raw: RawTensor<'a>) -> Result<Self> {
        let data = file.bytes_of(&raw);
        let mut view = TensorView {
            name: raw.name,
            dtype: raw.dtype,
            format: raw.dtype.format(),
            shape: raw.shape,
            stored_shape: raw.shape,
            data,
            offset: raw.start,
        };
        // Packed keys were checked to name `U8` tensors only.
        let may_be_packed = file.has_packed() && raw.dtype == Dtype::U8;
        if let Some((key, value)) = may_be_packed
            .then(|| file.metadata().packed_spec_for(raw.name))
            .flatten()
        {
            let spec = resolve_packed(key, value, raw.name, raw.dtype, raw.shape.as_slice())?;
            view.format = Some(spec.format);
            view.shape = Dims::new(&[spec.rows, spec.cols]).unwrap_or_default();
        }
        Ok(view)
    }

    /// The tensor's name (compare with `==` against a `&str`; print with `Display`).
    pub fn name(&self) -> JsonStr<'a> {
        self.name
    }

    /// The safetensors dtype the bytes are stored as (`U8` for packed formats).
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// The goldcrest storage format: the packed format from the metadata for packed tensors,
    /// else the one matching the dtype; [`Error::UnsupportedFormat`] for dtypes goldcrest has
    /// no views for (F64, I32, ...).
    pub fn format(&self) -> Result<Format> {
        self.format.ok_or_else(|| self.unsupported())
    }

    /// Whether the tensor holds a packed block format described by a `goldcrest.tensor.*` key.
    pub fn is_packed(&self) -> bool {
        self.format.is_some_and(Format::is_blocked)
    }

    /// The logical shape (for packed tensors, `[rows, cols]` in weights).
    pub fn shape(&self) -> &[u64] {
        self.shape.as_slice()
    }

    /// The shape as stored in the header (for packed tensors, `[rows, row_bytes]`).
    pub fn stored_shape(&self) -> &[u64] {
        self.stored_shape.as_slice()
    }

    /// The raw stored bytes, whatever the dtype.
    pub fn bytes(&self) -> &'a [u8] {
        self.data
    }

    /// Offset of the bytes within the file's data section.
    pub fn data_offset(&self) -> u64 {
        self.offset
    }

    /// Fails with [`Error::ShapeMismatch`] naming the tensor unless the logical shape is
    /// `expected`.
    pub fn expect_shape(&self, expected: &[u64]) -> Result<&Self> {
        if self.shape() == expected {
            return Ok(self);
        }
        Err(Error::ShapeMismatch {
            tensor: name_of(self.name),
            expected: Shape::new(expected).unwrap_or_default(),
            found: Shape::new(self.shape()).unwrap_or_default(),
        })
    }

    fn unsupported(&self) -> Error {
        Error::UnsupportedFormat {
            tensor: name_of(self.name),
        }
    }

    fn require(&self, format: Format) -> Result<()> {
        if self.format == Some(format) {
            Ok(())
        } else {
            Err(self.unsupported())
        }
    }

    fn cast<T: bytemuck::Pod>(&self) -> Result<&'a [T]> {
        bytemuck::try_cast_slice(self.data).map_err(|e| match e {
            bytemuck::PodCastError::TargetAlignmentGreaterAndInputNotAligned => Error::Misaligned {
                tensor: name_of(self.name),
                required: core::mem::align_of::<T>() as u8,
            },
            // Lengths were checked against shape × dtype when the file was parsed.
            _ => Error::BadOffsets {
                tensor: name_of(self.name),
            },
        })
    }

    /// The elements of an `F32` tensor, in place.
    pub fn f32s(&self) -> Result<&'a [f32]> {
        self.require(Format::F32)?;
        self.cast()
    }

    /// The elements of an `F16` tensor, in place.
    pub fn f16s(&self) -> Result<&'a [f16]> {
        self.require(Format::F16)?;
        Ok(self.cast::<u16>()?.reinterpret_cast::<f16>())
    }

    /// The elements of a `BF16` tensor, in place.
    pub fn bf16s(&self) -> Result<&'a [bf16]> {
        self.require(Format::Bf16)?;
        Ok(self.cast::<u16>()?.reinterpret_cast::<bf16>())
    }

    /// The elements of an `I8` tensor, in place.
    pub fn i8s(&self) -> Result<&'a [i8]> {
        self.require(Format::I8)?;
        self.cast()
    }

    /// The bytes of a plain `U8` tensor (not a packed one; use [`TensorView::bytes`] for those).
    pub fn u8s(&self) -> Result<&'a [u8]> {
        self.require(Format::U8)?;
        Ok(self.data)
    }

    /// The tensor as a `rows × cols` matrix for the kernels: 2-D tensors in f32, f16, bf16, i8
    /// and the packed block formats.
    pub fn matrix(&self) -> Result<Matrix<'a>> {
        let format = self.format()?;
        if matches!(format, Format::U8) {
            return Err(self.unsupported());
        }
        let [rows, cols] = *self.shape() else {
            return Err(Error::NotMatrix {
                tensor: name_of(self.name),
                rank: self.shape().len() as u8,
            });
        };
        let too_big = || Error::BadShape {
            tensor: name_of(self.name),
        };
        let rows = usize::try_from(rows).map_err(|_| too_big())?;
        let cols = usize::try_from(cols).map_err(|_| too_big())?;
        if !(self.data.as_ptr() as usize).is_multiple_of(format.alignment()) {
            return Err(Error::Misaligned {
                tensor: name_of(self.name),
                required: format.alignment() as u8,
            });
        }
        let mut label = [0u8; crate::error::NAME_CAPACITY];
        let label = self.name.unescape(&mut label).unwrap_or(self.name.raw());
        Matrix::new(label, format, rows, cols, self.data)
    }
}
