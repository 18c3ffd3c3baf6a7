//! Zero-copy model files: a bounded, allocation-free safetensors reader.
//!
//! A goldcrest model is a [safetensors](https://github.com/huggingface/safetensors) file read in
//! place from a `&[u8]` (flash via `include_bytes!`, an mmap, a caller's buffer).
//! [`SafeTensors::parse`] validates the whole file once: header length (at most
//! [`MAX_HEADER_LEN`]), strict JSON syntax with bounded nesting, dtypes, shapes (overflow
//! checked), offsets (in bounds, consistent with shape × dtype, covering the data section
//! without overlaps or holes), unique names, the `goldcrest.format_version` and every packed
//! tensor's `goldcrest.tensor.<name>` key. Lookups afterwards cannot fail for structural
//! reasons; views cast the caller's bytes in place and report [`crate::Error::Misaligned`]
//! instead of copying.
//!
//! ```
//! use goldcrest_core::format::SafeTensors;
//! # fn file() -> Vec<u8> {
//! #     let header = br#"{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#;
//! #     let mut pad = header.to_vec();
//! #     while (8 + pad.len()) % 8 != 0 { pad.push(b' '); }
//! #     let mut f = (pad.len() as u64).to_le_bytes().to_vec();
//! #     f.extend(pad);
//! #     for x in [1.0f32, 2.0, 3.0, 4.0] { f.extend(x.to_le_bytes()); }
//! #     f
//! # }
//! # let bytes = file();
//! # // A Vec<u8> is only byte-aligned; copy into u64s to get the alignment a real mmap has.
//! # let mut words = vec![0u64; bytes.len().div_ceil(8)];
//! # bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(&bytes);
//! # let bytes = &bytemuck::cast_slice::<u64, u8>(&words)[..bytes.len()];
//! let file = SafeTensors::parse(bytes)?;
//! let w = file.tensor("w")?;
//! w.expect_shape(&[2, 2])?;
//! assert_eq!(w.f32s()?, &[1.0, 2.0, 3.0, 4.0]);
//! let m = w.matrix()?;
//! assert_eq!((m.rows(), m.cols()), (2, 2));
//! # Ok::<(), goldcrest_core::Error>(())
//! ```

mod json;
mod meta;
mod safetensors;
mod view;

pub use json::{Chars, JsonStr, MAX_DEPTH};
pub use meta::{
    FORMAT_VERSION, FORMAT_VERSION_MAJOR, KEY_ARCH, KEY_FORMAT_VERSION, KEY_TOKENIZER, Metadata,
    MetadataIter, PackedSpec, TENSOR_KEY_PREFIX, TOKENIZER_TENSOR,
};
pub use safetensors::{
    DTYPES, Dims, Dtype, MAX_HEADER_LEN, MAX_RANK, MIN_ENTRY_BYTES, SafeTensors, TensorSlot,
};
pub use view::TensorView;

#[cfg(test)]
mod tests;
