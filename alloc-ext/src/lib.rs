//! # goldcrest-alloc
//!
//! goldcrest for targets with a heap but not necessarily an OS: `#![no_std]` with `alloc`.
//! Owned models and buffers, growable caches, and packing/quantizing float weights into the
//! formats of [`goldcrest_core::quant`].
#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_code)]
// `Error` is a `Copy` value with inline names (no allocation, so no boxing in no_std); its
// size is deliberate.
#![allow(clippy::result_large_err)]

extern crate alloc;

pub mod quantize;

pub use goldcrest_core as core_api;

pub mod sheet;
