//! # goldcrest-std
//!
//! goldcrest on hosted targets: loading files (memory-mapped), writing goldcrest files,
//! converters, tokenizers and the `goldcrest` command-line tool.
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub use goldcrest_alloc as alloc_api;
pub use goldcrest_core as core_api;
pub mod tokenize;
