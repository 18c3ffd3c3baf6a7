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
//! Reading a model from flash, as firmware does (the bytes are placed at an 8-byte aligned
//! address so every tensor view is zero-copy; see `docs/format.md`):
//!
//! ```
//! use goldcrest_core::format::SafeTensors;
//! use goldcrest_core::quant::Format;
//!
//! #[repr(C, align(8))]
//! struct Aligned<Bytes: ?Sized>(Bytes);
//!
//! static MODEL: &Aligned<[u8]> =
//!     &Aligned(*include_bytes!("../../../tests/fixtures/format/tiny.safetensors"));
//!
//! let file = SafeTensors::parse(&MODEL.0)?;
//! let meta = file.metadata();
//! assert!(meta.arch().is_some_and(|a| a == "demo"));
//! assert_eq!(meta.hyperparameter_usize("demo", "d_model")?, 4);
//!
//! let norm = file.tensor("norm.weight")?;
//! norm.expect_shape(&[4])?;
//! assert_eq!(norm.f32s()?, &[1.0, 0.5, -0.5, 2.0]); // borrowed from MODEL, not copied
//!
//! let up = file.tensor("layers.0.ffn.up")?.matrix()?; // packed ternary, for the kernels
//! assert_eq!((up.format(), up.rows(), up.cols()), (Format::Tq2_0, 4, 256));
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
