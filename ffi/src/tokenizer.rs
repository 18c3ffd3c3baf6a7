//! Tokenizers (std flavour): encode, decode, incremental decode.

use core::ffi::c_char;
use std::ffi::CStr;

use goldcrest_std::tokenize::{StreamDecoder, Tokenizer};

use crate::status::*;

const TOKENIZER_TAG: u32 = u32::from_le_bytes(*b"GCTK");
const STREAM_TAG: u32 = u32::from_le_bytes(*b"GCDS");

/// A tokenizer (opaque, heap-allocated). Read-only: may be shared between threads.
// repr(C) puts the tag first, where check_tag reads it; the header keeps it opaque.
#[repr(C)]
pub struct GoldcrestTokenizer {
    tag: u32,
    tokenizer: Tokenizer,
}

/// An incremental decoder (opaque): turns ids arriving one at a time into whole UTF-8
/// characters. One thread at a time; its tokenizer must outlive it.
// repr(C) puts the tag first, where check_tag reads it; the header keeps it opaque.
#[repr(C)]
pub struct GoldcrestDecodeStream {
    tag: u32,
    stream: StreamDecoder<'static>,
    /// Complete text not yet handed to the caller (their buffer was too small).
    ready: String,
}

fn tokenizer_failure(e: impl std::fmt::Display) -> Failure {
    Failure::Detail(GoldcrestStatus::Tokenizer, e.to_string())
}

/// A NUL-terminated UTF-8 path argument.
pub(crate) fn path_arg<'a>(path: *const c_char) -> Result<&'a str, Failure> {
    if path.is_null() {
        return fail(GoldcrestStatus::NullPointer, "NULL path");
    }
    // SAFETY: non-null, NUL-terminated (caller's contract).
    let path = unsafe { CStr::from_ptr(path) };
    path.to_str()
        .or_else(|_| fail(GoldcrestStatus::InvalidArgument, "path is not UTF-8"))
}

fn boxed(tokenizer: Tokenizer, out: *mut *mut GoldcrestTokenizer) -> FfiResult {
    let handle = Box::into_raw(Box::new(GoldcrestTokenizer {
        tag: TOKENIZER_TAG,
        tokenizer,
    }));
    // SAFETY: `out` was checked non-null by the caller of this helper.
    unsafe { write_out(out, handle) }
}

/// Opens the tokenizer embedded in a goldcrest model file held in a buffer (copied: the
/// buffer may be freed afterwards). `GOLDCREST_STATUS_TOKENIZER` if it carries none.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn goldcrest_tokenizer_open_model_buffer(
    bytes: *const u8,
    len: usize,
    out: *mut *mut GoldcrestTokenizer,
) -> GoldcrestStatus {
    guard(|| {
        need(out)?;
        // SAFETY: `len` readable bytes for the duration of the call.
        let bytes = unsafe { slice(bytes, len)? };
        let st = goldcrest_std::load::parse_hosted(bytes)?;
        let tokenizer = Tokenizer::from_model(&st)
            .map_err(tokenizer_failure)?
            .ok_or_else(|| tokenizer_failure("the model file carries no tokenizer"))?;
        boxed(tokenizer, out)
    })
}

/// Opens a tokenizer from a file: a goldcrest model (`.safetensors`, its embedded
/// tokenizer) or a tokenizer file (`tokenizer.json`, RWKV World vocabulary…).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn goldcrest_tokenizer_open_file(
    path: *const c_char,
    out: *mut *mut GoldcrestTokenizer,
) -> GoldcrestStatus {
    guard(|| {
        need(out)?;
        let path = path_arg(path)?;
        let tokenizer = if path.ends_with(".safetensors") {
            let file = goldcrest_std::load::ModelFile::open(path)?;
            Tokenizer::from_model(&file.safetensors()?)
                .map_err(tokenizer_failure)?
                .ok_or_else(|| tokenizer_failure("the model file carries no tokenizer"))?
        } else {
            Tokenizer::from_path(std::path::Path::new(path)).map_err(tokenizer_failure)?
        };
        boxed(tokenizer, out)
    })
}

/// # Safety
/// `t` must be NULL or a pointer from a tokenizer open function.
unsafe fn tokenizer_ref<'a>(
    t: *const GoldcrestTokenizer,
) -> Result<&'a GoldcrestTokenizer, Failure> {
    // SAFETY: caller's contract.
    unsafe { check_tag(t.cast(), TOKENIZER_TAG)? };
    // SAFETY: tag checked.
    Ok(unsafe { &*t })
}

/// Frees a tokenizer (NULL is a no-op). Free its decode streams first.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn goldcrest_tokenizer_free(t: *mut GoldcrestTokenizer) -> GoldcrestStatus {
    guard(|| {
        if t.is_null() {
            return Ok(());
        }
        // SAFETY: caller's contract.
        unsafe { check_tag(t.cast(), TOKENIZER_TAG)? };
        // SAFETY: tag checked; from Box::into_raw.
        unsafe {
            (*t).tag = 0;
            drop(Box::from_raw(t));
        }
        Ok(())
    })
}

/// Encodes `len` bytes of UTF-8 `text` (special tokens written in the text are matched when
/// `special` is non-zero) into `out` (`cap` ids). `*n_out` gets the count; when it exceeds
/// `cap` the status is `BUFFER_TOO_SMALL` and nothing is written to `out`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn goldcrest_tokenizer_encode(
    t: *const GoldcrestTokenizer,
    text: *const c_char,
    len: usize,
    special: i32,
    out: *mut u32,
    cap: usize,
    n_out: *mut usize,
) -> GoldcrestStatus {
    guard(|| {
        need(n_out)?;
        // SAFETY: caller's contract.
        let t = unsafe { tokenizer_ref(t)? };
        // SAFETY: `len` readable bytes.
        let text = unsafe { slice(text.cast::<u8>(), len)? };
        let ids = t
            .tokenizer
            .encode_bytes(text, special != 0)
            .map_err(tokenizer_failure)?;
        // SAFETY: checked non-null.
        unsafe { write_out(n_out, ids.len())? };
        if ids.len() > cap {
            return fail(
                GoldcrestStatus::BufferTooSmall,
                "id buffer too small; *n_out says how many",
            );
        }
        // SAFETY: `cap` writable ids.
        let out = unsafe { slice_mut(out, cap)? };
        out[..ids.len()].copy_from_slice(&ids);
        Ok(())
    })
}

/// Copies `bytes` and a NUL into `out`; `*written` gets the length without the NUL.
fn write_text(bytes: &[u8], out: *mut c_char, cap: usize, written: *mut usize) -> FfiResult {
    // SAFETY: checked non-null by every caller.
    unsafe { write_out(written, bytes.len())? };
    if bytes.len() >= cap {
        return fail(
            GoldcrestStatus::BufferTooSmall,
            "text buffer too small; it needs *written + 1 bytes",
        );
    }
    // SAFETY: `cap` writable bytes (caller's contract).
    let out = unsafe { slice_mut(out.cast::<u8>(), cap)? };
    out[..bytes.len()].copy_from_slice(bytes);
    out[bytes.len()] = 0;
    Ok(())
}

/// Decodes `n` ids into `out` (`cap` bytes, NUL-terminated; invalid UTF-8 kept as bytes).
/// `*written` gets the text length without the NUL; `BUFFER_TOO_SMALL` when `cap` is not
/// at least `*written + 1`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn goldcrest_tokenizer_decode(
    t: *const GoldcrestTokenizer,
    ids: *const u32,
    n: usize,
    out: *mut c_char,
    cap: usize,
    written: *mut usize,
) -> GoldcrestStatus {
    guard(|| {
        need(written)?;
        // SAFETY: caller's contract.
        let t = unsafe { tokenizer_ref(t)? };
        // SAFETY: `n` readable ids.
        let ids = unsafe { slice(ids, n)? };
        let bytes = t.tokenizer.decode(ids).map_err(tokenizer_failure)?;
        write_text(&bytes, out, cap, written)
    })
}

/// Starts an incremental decode. The tokenizer must outlive the stream.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn goldcrest_decode_stream_create(
    t: *const GoldcrestTokenizer,
    out: *mut *mut GoldcrestDecodeStream,
) -> GoldcrestStatus {
    guard(|| {
        need(out)?;
        // SAFETY: caller's contract; the tokenizer outlives the stream (documented).
        let t: &'static GoldcrestTokenizer = unsafe { tokenizer_ref(t)? };
        let handle = Box::into_raw(Box::new(GoldcrestDecodeStream {
            tag: STREAM_TAG,
            stream: t.tokenizer.stream_decoder(),
            ready: String::new(),
        }));
        // SAFETY: checked non-null.
        unsafe { write_out(out, handle) }
    })
}

/// # Safety
/// `s` must be NULL or a pointer from `goldcrest_decode_stream_create()`.
unsafe fn stream_mut<'a>(
    s: *mut GoldcrestDecodeStream,
) -> Result<&'a mut GoldcrestDecodeStream, Failure> {
    // SAFETY: caller's contract.
    unsafe { check_tag(s.cast(), STREAM_TAG)? };
    // SAFETY: tag checked; one thread at a time (documented).
    Ok(unsafe { &mut *s })
}

fn hand_out(
    s: &mut GoldcrestDecodeStream,
    out: *mut c_char,
    cap: usize,
    written: *mut usize,
) -> FfiResult {
    write_text(s.ready.as_bytes(), out, cap, written)?;
    s.ready.clear();
    Ok(())
}

/// Adds one id and writes the text completed so far (possibly "") to `out`, NUL-terminated.
/// On `BUFFER_TOO_SMALL` the text is kept: fetch it with `goldcrest_decode_stream_push()`
/// of the next id or `goldcrest_decode_stream_finish()` with a bigger buffer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn goldcrest_decode_stream_push(
    s: *mut GoldcrestDecodeStream,
    id: u32,
    out: *mut c_char,
    cap: usize,
    written: *mut usize,
) -> GoldcrestStatus {
    guard(|| {
        need(written)?;
        // SAFETY: caller's contract.
        let s = unsafe { stream_mut(s)? };
        let text = s.stream.push(id).map_err(tokenizer_failure)?;
        s.ready.push_str(&text);
        hand_out(s, out, cap, written)
    })
}

/// Ends the stream: writes the remaining text (an unfinished character becomes U+FFFD).
/// The stream may be reused afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn goldcrest_decode_stream_finish(
    s: *mut GoldcrestDecodeStream,
    out: *mut c_char,
    cap: usize,
    written: *mut usize,
) -> GoldcrestStatus {
    guard(|| {
        need(written)?;
        // SAFETY: caller's contract.
        let s = unsafe { stream_mut(s)? };
        let text = s.stream.finish();
        s.ready.push_str(&text);
        hand_out(s, out, cap, written)
    })
}

/// Frees a decode stream (NULL is a no-op).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn goldcrest_decode_stream_free(
    s: *mut GoldcrestDecodeStream,
) -> GoldcrestStatus {
    guard(|| {
        if s.is_null() {
            return Ok(());
        }
        // SAFETY: caller's contract.
        unsafe { check_tag(s.cast(), STREAM_TAG)? };
        // SAFETY: tag checked; from Box::into_raw.
        unsafe {
            (*s).tag = 0;
            drop(Box::from_raw(s));
        }
        Ok(())
    })
}
