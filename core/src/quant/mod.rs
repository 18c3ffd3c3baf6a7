//! Storage formats: one table for every way goldcrest stores a tensor.
//!
//! | format  | block (weights) | bytes / block | bits / weight | layout |
//! |---------|----------------:|--------------:|--------------:|--------|
//! | `f32`   | 1   | 4  | 32     | IEEE binary32, little-endian |
//! | `f16`   | 1   | 2  | 16     | IEEE binary16, little-endian |
//! | `bf16`  | 1   | 2  | 16     | bfloat16, little-endian |
//! | `i8`    | 1   | 1  | 8      | plain signed bytes (no scale) |
//! | `u8`    | 1   | 1  | 8      | plain bytes (tokenizers, blobs) |
//! | `q8_0`  | 32  | 34 | 8.5    | f16 scale, 32 × i8 (ggml `Q8_0`) |
//! | `q4_0`  | 32  | 18 | 4.5    | f16 scale, 16 bytes of nibbles (ggml `Q4_0`) |
//! | `tq2_0` | 256 | 66 | 2.0625 | 64 bytes of 2-bit codes, f16 scale (ggml `TQ2_0`) |
//! | `tq1_0` | 256 | 54 | 1.6875 | 48 + 4 bytes of base-3 codes, f16 scale (ggml `TQ1_0`) |
//!
//! Block formats quantize each row independently; a row whose length is not a multiple of the
//! block is padded with zero weights up to the next block (the *tail path*), so every row of a
//! matrix starts on a block boundary. `docs/format.md` carries the same table with kernels.

use crate::error::{Error, Name, Result};

pub mod float;
pub mod q4_0;
pub mod q8_0;
pub mod tq1_0;
pub mod tq2_0;
mod trits;

/// Checks a stored row of a block format against `cols` and an output buffer; returns the number
/// of blocks that hold the row.
pub(crate) fn check_block_row(
    row: &[u8],
    cols: usize,
    block_elems: usize,
    block_bytes: usize,
    out: &[f32],
) -> Result<usize> {
    let blocks = cols.div_ceil(block_elems);
    let need = blocks.checked_mul(block_bytes).ok_or(Error::OutOfRange)?;
    if row.len() < need {
        return Err(Error::Truncated {
            needed: need as u64,
            available: row.len() as u64,
        });
    }
    if out.len() < cols {
        return Err(Error::BufferTooSmall {
            needed: cols as u64,
            provided: out.len() as u64,
        });
    }
    Ok(blocks)
}

/// Dequantizes the first `cols` weights of a stored row of a block format whose blocks `unpack`
/// into a scale and `ELEMS` small integers (weight = integer · scale).
pub(crate) fn dequantize_blocks<const ELEMS: usize, const BYTES: usize>(
    row: &[u8],
    cols: usize,
    out: &mut [f32],
    unpack: fn(&[u8; BYTES]) -> (f32, [i8; ELEMS]),
) -> Result<()> {
    let blocks = check_block_row(row, cols, ELEMS, BYTES, out)?;
    for (b, chunk) in row.chunks_exact(BYTES).take(blocks).enumerate() {
        let block: &[u8; BYTES] = chunk.try_into().map_err(|_| Error::OutOfRange)?;
        let (d, q) = unpack(block);
        let start = b * ELEMS;
        let n = cols.saturating_sub(start).min(ELEMS);
        for (o, &v) in out[start..start + n].iter_mut().zip(&q) {
            *o = v as f32 * d;
        }
    }
    Ok(())
}

/// Dequantizes the first `cols` weights of one stored row of `format` into `out[..cols]`.
///
/// `u8` is not a matrix format and gives [`Error::UnsupportedFormat`].
pub fn dequantize_row(format: Format, row: &[u8], cols: usize, out: &mut [f32]) -> Result<()> {
    match format {
        Format::F32 => float::dequantize_row_f32(row, cols, out),
        Format::F16 => float::dequantize_row_f16(row, cols, out),
        Format::Bf16 => float::dequantize_row_bf16(row, cols, out),
        Format::I8 => float::dequantize_row_i8(row, cols, out),
        Format::Q8_0 => q8_0::dequantize_row(row, cols, out),
        Format::Q4_0 => q4_0::dequantize_row(row, cols, out),
        Format::Tq2_0 => tq2_0::dequantize_row(row, cols, out),
        Format::Tq1_0 => tq1_0::dequantize_row(row, cols, out),
        Format::U8 => Err(Error::UnsupportedFormat {
            tensor: Name::EMPTY,
        }),
    }
}

/// How a tensor's elements are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Format {
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16.
    Bf16,
    /// Signed bytes without scale.
    I8,
    /// Raw bytes.
    U8,
    /// Blocks of 32 int8 with an f16 scale (byte-compatible with ggml `Q8_0`).
    Q8_0,
    /// Blocks of 32 4-bit values with an f16 scale (byte-compatible with ggml `Q4_0`).
    Q4_0,
    /// Blocks of 256 ternary weights, 2 bits each, f16 scale (byte-compatible with ggml `TQ2_0`).
    Tq2_0,
    /// Blocks of 256 ternary weights, base-3 packed, f16 scale (byte-compatible with ggml `TQ1_0`).
    Tq1_0,
}

/// One row of the format table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FormatInfo {
    /// The format.
    pub format: Format,
    /// Name used in files, on the command line and in `docs/format.md`.
    pub name: &'static str,
    /// Weights per block (1 for element formats).
    pub block_elems: usize,
    /// Bytes per block.
    pub block_bytes: usize,
}

impl FormatInfo {
    /// Bits per weight, including the block scale.
    pub fn bits_per_weight(&self) -> f32 {
        (self.block_bytes * 8) as f32 / self.block_elems as f32
    }
}

/// The table: every format goldcrest stores, in one place.
pub const FORMATS: [FormatInfo; 9] = [
    FormatInfo {
        format: Format::F32,
        name: "f32",
        block_elems: 1,
        block_bytes: 4,
    },
    FormatInfo {
        format: Format::F16,
        name: "f16",
        block_elems: 1,
        block_bytes: 2,
    },
    FormatInfo {
        format: Format::Bf16,
        name: "bf16",
        block_elems: 1,
        block_bytes: 2,
    },
    FormatInfo {
        format: Format::I8,
        name: "i8",
        block_elems: 1,
        block_bytes: 1,
    },
    FormatInfo {
        format: Format::U8,
        name: "u8",
        block_elems: 1,
        block_bytes: 1,
    },
    FormatInfo {
        format: Format::Q8_0,
        name: "q8_0",
        block_elems: 32,
        block_bytes: 34,
    },
    FormatInfo {
        format: Format::Q4_0,
        name: "q4_0",
        block_elems: 32,
        block_bytes: 18,
    },
    FormatInfo {
        format: Format::Tq2_0,
        name: "tq2_0",
        block_elems: 256,
        block_bytes: 66,
    },
    FormatInfo {
        format: Format::Tq1_0,
        name: "tq1_0",
        block_elems: 256,
        block_bytes: 54,
    },
];

impl Format {
    /// This format's row of [`FORMATS`].
    pub const fn info(self) -> &'static FormatInfo {
        &FORMATS[self as usize]
    }

    /// Name used in files and on the command line.
    pub const fn name(self) -> &'static str {
        self.info().name
    }

    /// Parses a name from [`FORMATS`].
    pub fn from_name(name: &str) -> Option<Format> {
        FORMATS.iter().find(|i| i.name == name).map(|i| i.format)
    }

    /// Weights per block.
    pub const fn block_elems(self) -> usize {
        self.info().block_elems
    }

    /// Bytes per block.
    pub const fn block_bytes(self) -> usize {
        self.info().block_bytes
    }

    /// Whether values are stored in blocks with a scale (quantized) rather than one by one.
    pub const fn is_blocked(self) -> bool {
        self.info().block_elems > 1
    }

    /// Alignment a zero-copy view of the stored data needs (block formats are read bytewise).
    pub const fn alignment(self) -> usize {
        match self {
            Format::F32 => 4,
            Format::F16 | Format::Bf16 => 2,
            _ => 1,
        }
    }

    /// Bytes one row of `cols` weights occupies (rounded up to whole blocks), or `None` on
    /// overflow.
    pub fn row_bytes(self, cols: usize) -> Option<usize> {
        cols.checked_add(self.block_elems() - 1)
            .map(|c| c / self.block_elems())
            .and_then(|blocks| blocks.checked_mul(self.block_bytes()))
    }
}

/// A borrowed matrix of `rows × cols` weights in some [`Format`], rows contiguous.
///
/// Constructed only through [`Matrix::new`], which checks the byte length and alignment, so
/// kernels never fail on a `Matrix` they were given.
#[derive(Debug, Clone, Copy)]
pub struct Matrix<'a> {
    format: Format,
    rows: usize,
    cols: usize,
    data: &'a [u8],
}

impl<'a> Matrix<'a> {
    /// Wraps `data` as a `rows × cols` matrix stored in `format`.
    ///
    /// `name` only labels errors. Fails if the length is not exactly `rows` rows of
    /// [`Format::row_bytes`] or the data is not aligned for the element type.
    pub fn new(
        name: &str,
        format: Format,
        rows: usize,
        cols: usize,
        data: &'a [u8],
    ) -> Result<Self> {
        let need = format
            .row_bytes(cols)
            .and_then(|rb| rb.checked_mul(rows))
            .ok_or(Error::BadShape {
                tensor: Name::new(name),
            })?;
        if data.len() != need {
            return Err(Error::LengthMismatch {
                expected: need as u64,
                found: data.len() as u64,
            });
        }
        if !(data.as_ptr() as usize).is_multiple_of(format.alignment()) {
            return Err(Error::Misaligned {
                tensor: Name::new(name),
                required: format.alignment() as u8,
            });
        }
        Ok(Matrix {
            format,
            rows,
            cols,
            data,
        })
    }

    /// Storage format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Number of rows (outputs of a matrix-vector product).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (inputs of a matrix-vector product).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// All stored bytes.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// Bytes of one stored row.
    pub fn row_bytes(&self) -> usize {
        // Checked in `new`.
        self.data.len().checked_div(self.rows).unwrap_or(0)
    }

    /// The stored bytes of row `r`, or `None` if out of range.
    pub fn row(&self, r: usize) -> Option<&'a [u8]> {
        let rb = self.row_bytes();
        self.data.get(r * rb..(r + 1) * rb)
    }

    /// Rows `first..first + count` as a matrix of their own (the same bytes, no copy), or
    /// `None` if they are not all there. A fused projection's parts (for example the key and
    /// value rows of a fused QKV matrix) can run on their own this way.
    pub fn row_range(&self, first: usize, count: usize) -> Option<Matrix<'a>> {
        let end = first.checked_add(count).filter(|&end| end <= self.rows)?;
        let rb = self.row_bytes();
        let data = self.data.get(first * rb..end * rb)?;
        Matrix::new("row range", self.format, count, self.cols, data).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_range_views_the_same_rows() {
        let values: [f32; 12] = core::array::from_fn(|i| i as f32);
        let bytes: &[u8] = bytemuck::cast_slice(&values);
        let m = Matrix::new("m", Format::F32, 4, 3, bytes).unwrap();
        let middle = m.row_range(1, 2).unwrap();
        assert_eq!((middle.rows(), middle.cols()), (2, 3));
        assert_eq!(middle.row(0), m.row(1));
        assert_eq!(middle.row(1), m.row(2));
        assert_eq!(m.row_range(4, 0).map(|e| e.rows()), Some(0));
        assert!(m.row_range(3, 2).is_none());
        assert!(m.row_range(usize::MAX, 2).is_none());
    }

    #[test]
    fn table_is_indexed_by_discriminant() {
        for (i, info) in FORMATS.iter().enumerate() {
            assert_eq!(info.format as usize, i);
            assert_eq!(Format::from_name(info.name), Some(info.format));
        }
    }

    #[test]
    fn ggml_block_sizes() {
        assert_eq!(Format::Tq2_0.info().bits_per_weight(), 2.0625);
        assert_eq!(Format::Tq1_0.info().bits_per_weight(), 1.6875);
        assert_eq!(Format::Q8_0.info().bits_per_weight(), 8.5);
        assert_eq!(Format::Q4_0.info().bits_per_weight(), 4.5);
        assert_eq!(Format::Tq2_0.row_bytes(257), Some(132));
        assert_eq!(Format::F32.row_bytes(3), Some(12));
        assert_eq!(Format::Q8_0.row_bytes(usize::MAX), None);
    }

    #[test]
    fn matrix_checks_length() {
        let d = [0u8; 66];
        assert!(Matrix::new("w", Format::Tq2_0, 1, 256, &d).is_ok());
        assert!(Matrix::new("w", Format::Tq2_0, 1, 100, &d).is_ok());
        assert!(Matrix::new("w", Format::Tq2_0, 2, 256, &d).is_err());
    }
}
