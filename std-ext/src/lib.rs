//! # goldcrest-std
//!
//! goldcrest on hosted targets: loading files (memory-mapped), writing goldcrest files,
//! converters, tokenizers and the `goldcrest` command-line tool.
#![deny(missing_docs)]
#![deny(unsafe_code)]
// `Error` is a `Copy` value with inline names (no allocation, so no boxing in no_std); its
// size is deliberate.
#![allow(clippy::result_large_err)]

pub mod cpu_time;
pub mod kernels;
pub mod parallel;

pub use goldcrest_alloc as alloc_api;
pub use goldcrest_core as core_api;

pub mod bundled;
pub mod convert;
pub mod load;
pub mod plot;
pub mod series_csv;
pub mod sheet;
pub mod tokenize;
pub mod write;
