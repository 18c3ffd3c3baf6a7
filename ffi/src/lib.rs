//! The C ABI of goldcrest. The header is `include/goldcrest.h`, generated from this crate by
//! `cargo run --manifest-path tools/gen-header/Cargo.toml` and committed.
//!
//! Conventions every function follows:
//! - it returns a [`GoldcrestStatus`]; results go to out-parameters, which are written only on
//!   success (sizes reported with `GOLDCREST_STATUS_BUFFER_TOO_SMALL` are the exception);
//! - null pointers, wrong lengths, misaligned buffers and a handle of the wrong kind give a
//!   status, never undefined behaviour that the library could have detected;
//! - no panic crosses the boundary: the std flavour catches it (`GOLDCREST_STATUS_PANIC`),
//!   the firmware flavour calls the firmware's `goldcrest_platform_abort()`.
//!
//! Two flavours, selected by the cargo feature `std` (default on):
//! - std: models from a path (memory-mapped) or a buffer, heap-allocated handles, tokenizers,
//!   `goldcrest_last_error()` detail;
//! - firmware (`--no-default-features`): `no_std`, no allocator; models from a caller buffer
//!   into caller-provided handle storage.
#![cfg_attr(target_os = "none", no_std)]
#![deny(missing_docs)]
// The ABI is raw pointers by nature; every unsafe block states what the caller guarantees.
#![allow(unsafe_code)]
#![allow(clippy::missing_safety_doc)]

mod forecast;
mod lm;
mod status;
#[cfg(feature = "std")]
mod tokenizer;

pub use forecast::*;
pub use lm::*;
pub use status::*;
#[cfg(feature = "std")]
pub use tokenizer::*;

/// Major version of the library (and of the ABI: a new major may break it).
pub const GOLDCREST_VERSION_MAJOR: u32 = 0;
/// Minor version: additions only.
pub const GOLDCREST_VERSION_MINOR: u32 = 1;
/// Patch version.
pub const GOLDCREST_VERSION_PATCH: u32 = 0;
/// The version the header was generated for, as `major * 10000 + minor * 100 + patch`; compare
/// with `goldcrest_version()` at run time to catch a header/library mismatch.
pub const GOLDCREST_VERSION: u32 =
    GOLDCREST_VERSION_MAJOR * 10000 + GOLDCREST_VERSION_MINOR * 100 + GOLDCREST_VERSION_PATCH;

const _: () = {
    // The header's macro must follow Cargo.toml; a version bump that forgets this fails here.
    let v = env!("CARGO_PKG_VERSION").as_bytes();
    assert!(v.len() == 5 && v[0] == b'0' && v[2] == b'1' && v[4] == b'0');
};

/// The library's version as `major * 10000 + minor * 100 + patch` (see `GOLDCREST_VERSION`).
#[unsafe(no_mangle)]
pub extern "C" fn goldcrest_version() -> u32 {
    GOLDCREST_VERSION
}

/// The library's version as a static NUL-terminated string, e.g. "0.1.0".
#[unsafe(no_mangle)]
pub extern "C" fn goldcrest_version_string() -> *const core::ffi::c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

#[cfg(target_os = "none")]
unsafe extern "C" {
    /// Provided by the firmware: called if the library ever panics (a bug); must not return.
    fn goldcrest_platform_abort() -> !;
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: the firmware provides this symbol (documented in the header); it never returns.
    unsafe { goldcrest_platform_abort() }
}

#[cfg(test)]
mod tests;
