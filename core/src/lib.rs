//! # goldcrest-core
//!
//! Inference for microcontrollers and bare metal: `#![no_std]`, and no `alloc` either.
//!
//! ## Memory behaviour
//!
//! - **Weights are never copied.** A model is a safetensors file read in place from a `&[u8]`
//!   (flash via `include_bytes!`, an mmap, a buffer the caller owns). Opening it validates the
//!   whole header once; tensor views then borrow the caller's bytes. Data that is not aligned for
//!   a zero-copy view is an error, never a silent copy.
//! - **Nothing is allocated.** Every model reports a [`arena::MemoryPlan`] (exact bytes of state
//!   and scratch for its config) before it runs; the caller provides that memory, and the model
//!   carves it with an [`arena::Arena`]. State structs live in caller memory, so firmware can keep
//!   them in a `static`, save them to flash and restore them.
//! - **Errors are values.** Every entry point returns [`Result`] with a small `Copy`
//!   [`Error`]; no input, however malformed, makes goldcrest panic or read out of bounds.
//!
//! ## Layers (each uses only those above it in this list)
//!
//! 1. [`error`]: the error type.
//! 2. [`quant`]: storage formats and the table of their block sizes.
//! 3. [`format`]: the safetensors parser, tensor views, model metadata.
//! 4. `kernels`: matrix-vector and matrix-matrix products per format; portable scalar reference
//!    plus SIMD paths that must equal it.
//! 5. [`arena`]: caller-provided memory and memory plans.
//! 6. [`ops`]: norms, activations, softmax, samplers ([`ops::sample`]).
//! 7. [`models`]: model architectures ([`models::rwkv6`]).
//!
//! `unsafe` is denied everywhere except the SIMD kernel modules, where each block carries a
//! `// SAFETY:` comment.
#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_code)]
// `Error` is a `Copy` value with inline names (no allocation, so no boxing in no_std); its
// size is deliberate.
#![allow(clippy::result_large_err)]

#[cfg(test)]
extern crate std;

pub mod arena;
pub mod error;
pub mod format;
pub mod kernels;
pub mod models;
pub mod ops;
pub mod quant;

pub use error::{Error, Result};
