//! `goldcrest`: one crate that re-exports every layer for Rust users on a hosted target.
//!
//! Firmware depends on `goldcrest-core` alone (no heap, no OS); programs with a heap but no OS
//! add `goldcrest-alloc`; everything with `std` can take this facade:
//!
//! - [`core`]: `#![no_std]`, no `alloc`: formats, kernels, arena, models.
//! - [`alloc`]: owned models, growable caches, packing and quantizing float weights.
//! - [`std`]: files and mmap, converters, tokenizers, the `goldcrest` command-line tool.
//!
//! This package also owns the workspace's top-level `examples/`, `tests/` and `benches/`.
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub use goldcrest_alloc as alloc;
pub use goldcrest_core as core;
pub use goldcrest_std as std;
