//! Status codes, the error-detail channel, and the guard every exported function runs in.

use core::ffi::c_char;
use goldcrest_core::Error;

/// What a call did. `GOLDCREST_STATUS_OK` is 0; every other value is a failure, and the
/// out-parameters are then left untouched (except sizes reported with `BUFFER_TOO_SMALL`).
/// Functions taking a status from C take it as `int32_t`, so an unknown value is never UB.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoldcrestStatus {
    /// Success.
    Ok = 0,
    /// A required pointer argument was NULL.
    NullPointer = 1,
    /// An argument is out of its range (a zero count, a bad sampler setting, a NaN quantile…).
    InvalidArgument = 2,
    /// A caller buffer is too small; the needed size was written where the function says.
    BufferTooSmall = 3,
    /// A caller buffer does not start on the alignment the function requires.
    Misaligned = 4,
    /// A length does not match what the model expects (e.g. logits buffer ≠ vocabulary).
    LengthMismatch = 5,
    /// The handle is not of the kind the function takes (or was already freed).
    WrongHandle = 6,
    /// The model file is valid but of another architecture than the function serves.
    WrongModelKind = 7,
    /// The model bytes are not a valid goldcrest file (truncated, bad header, missing tensor…).
    BadModel = 8,
    /// The file's `goldcrest.format_version` is newer than this library reads.
    UnsupportedVersion = 9,
    /// A value that must be finite was NaN or infinite.
    NonFinite = 10,
    /// The session's context (KV cache) is full; reset it or create a longer one.
    ContextFull = 11,
    /// A saved state does not belong to this model or is corrupted (checksum).
    BadState = 12,
    /// The operation does not exist for this model or build.
    Unsupported = 13,
    /// A file could not be opened or mapped (std flavour).
    Io = 14,
    /// Tokenizer failure: no tokenizer in the model, or text/ids it cannot handle.
    Tokenizer = 15,
    /// Logits were requested before any token was fed.
    NoLogits = 16,
    /// The library panicked (a bug; please report it with `goldcrest_last_error()`).
    Panic = 17,
}

const NAMES: [(GoldcrestStatus, &str); 18] = [
    (GoldcrestStatus::Ok, "ok\0"),
    (GoldcrestStatus::NullPointer, "null pointer\0"),
    (GoldcrestStatus::InvalidArgument, "invalid argument\0"),
    (GoldcrestStatus::BufferTooSmall, "buffer too small\0"),
    (GoldcrestStatus::Misaligned, "buffer misaligned\0"),
    (GoldcrestStatus::LengthMismatch, "length mismatch\0"),
    (GoldcrestStatus::WrongHandle, "wrong handle kind\0"),
    (GoldcrestStatus::WrongModelKind, "wrong model kind\0"),
    (GoldcrestStatus::BadModel, "bad model file\0"),
    (
        GoldcrestStatus::UnsupportedVersion,
        "unsupported format version\0",
    ),
    (GoldcrestStatus::NonFinite, "non-finite value\0"),
    (GoldcrestStatus::ContextFull, "context full\0"),
    (GoldcrestStatus::BadState, "bad saved state\0"),
    (GoldcrestStatus::Unsupported, "unsupported for this model\0"),
    (GoldcrestStatus::Io, "i/o error\0"),
    (GoldcrestStatus::Tokenizer, "tokenizer error\0"),
    (GoldcrestStatus::NoLogits, "no logits yet\0"),
    (GoldcrestStatus::Panic, "internal panic\0"),
];

/// A static NUL-terminated name for `status` ("unknown status" for values this library does
/// not define). Available in both flavours.
#[unsafe(no_mangle)]
pub extern "C" fn goldcrest_status_str(status: i32) -> *const c_char {
    let name = NAMES
        .iter()
        .find(|(s, _)| *s as i32 == status)
        .map_or("unknown status\0", |(_, n)| n);
    name.as_ptr().cast()
}

/// A failure inside the library, before it becomes a status (and, with std, a message).
#[derive(Debug)]
pub(crate) enum Failure {
    Core(Error),
    // The message only reaches C through goldcrest_last_error(), which firmware lacks.
    Status(
        GoldcrestStatus,
        #[cfg_attr(not(feature = "std"), allow(dead_code))] &'static str,
    ),
    #[cfg(feature = "std")]
    Detail(GoldcrestStatus, String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Core(e)
    }
}

#[cfg(feature = "std")]
impl From<goldcrest_std::load::FileError> for Failure {
    fn from(e: goldcrest_std::load::FileError) -> Self {
        use goldcrest_std::load::FileError;
        match e {
            FileError::Format { source, .. } => Failure::Detail(status_of(&source), e.to_string()),
            _ => Failure::Detail(GoldcrestStatus::Io, e.to_string()),
        }
    }
}

pub(crate) fn status_of(e: &Error) -> GoldcrestStatus {
    use GoldcrestStatus as S;
    match e {
        Error::UnsupportedVersion { .. } => S::UnsupportedVersion,
        Error::BufferTooSmall { .. } => S::BufferTooSmall,
        Error::BufferMisaligned { .. } => S::Misaligned,
        Error::LengthMismatch { .. } => S::LengthMismatch,
        Error::NonFinite => S::NonFinite,
        Error::OutOfRange => S::InvalidArgument,
        Error::Checksum => S::BadState,
        Error::ContextFull { .. } => S::ContextFull,
        _ => S::BadModel,
    }
}

pub(crate) type FfiResult = Result<(), Failure>;

/// Shorthand for an early-return failure with a fixed message.
pub(crate) fn fail<T>(status: GoldcrestStatus, why: &'static str) -> Result<T, Failure> {
    Err(Failure::Status(status, why))
}

#[cfg(feature = "std")]
std::thread_local! {
    static LAST_ERROR: std::cell::RefCell<std::ffi::CString> =
        std::cell::RefCell::new(std::ffi::CString::default());
}

#[cfg(feature = "std")]
fn set_last_error(message: String) {
    let c = std::ffi::CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|slot| *slot.borrow_mut() = c);
}

/// Detail of this thread's most recent failure ("" after a success): which tensor, which
/// shape, which file. The pointer stays valid until the next goldcrest call on this thread.
/// std flavour only.
#[cfg(feature = "std")]
#[unsafe(no_mangle)]
pub extern "C" fn goldcrest_last_error() -> *const c_char {
    LAST_ERROR.with(|slot| slot.borrow().as_ptr())
}

/// Runs an exported function's body: turns its result into a status, records the detail
/// (std) and stops any panic at the boundary.
pub(crate) fn guard(body: impl FnOnce() -> FfiResult) -> GoldcrestStatus {
    #[cfg(feature = "std")]
    {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
        let (status, message) = match outcome {
            Ok(Ok(())) => (GoldcrestStatus::Ok, String::new()),
            Ok(Err(Failure::Core(e))) => (status_of(&e), e.to_string()),
            Ok(Err(Failure::Status(s, why))) => (s, why.to_string()),
            Ok(Err(Failure::Detail(s, why))) => (s, why),
            Err(payload) => {
                let what = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                (GoldcrestStatus::Panic, format!("panic: {what}"))
            }
        };
        set_last_error(message);
        status
    }
    #[cfg(not(feature = "std"))]
    {
        match body() {
            Ok(()) => GoldcrestStatus::Ok,
            Err(Failure::Core(e)) => status_of(&e),
            Err(Failure::Status(s, _)) => s,
        }
    }
}

/// Checks the pointer of a non-empty buffer: not NULL, aligned for its element type.
fn check_buffer<T>(ptr: *const T) -> FfiResult {
    if ptr.is_null() {
        return fail(
            GoldcrestStatus::NullPointer,
            "NULL buffer with a non-zero length",
        );
    }
    if !(ptr as usize).is_multiple_of(core::mem::align_of::<T>()) {
        return fail(
            GoldcrestStatus::Misaligned,
            "buffer not aligned for its element type",
        );
    }
    Ok(())
}

/// `ptr` as a shared slice of `len` elements; NULL is allowed only when `len` is 0.
///
/// # Safety
/// A non-null `ptr` must be valid for reads of `len` elements for `'a`.
pub(crate) unsafe fn slice<'a, T>(ptr: *const T, len: usize) -> Result<&'a [T], Failure> {
    if len == 0 {
        return Ok(&[]);
    }
    check_buffer(ptr)?;
    // SAFETY: non-null and aligned (checked), valid for `len` reads (caller's contract).
    Ok(unsafe { core::slice::from_raw_parts(ptr, len) })
}

/// `ptr` as a mutable slice of `len` elements; NULL is allowed only when `len` is 0.
///
/// # Safety
/// A non-null `ptr` must be valid for reads and writes of `len` elements for `'a`, and not
/// aliased by any other argument.
pub(crate) unsafe fn slice_mut<'a, T>(ptr: *mut T, len: usize) -> Result<&'a mut [T], Failure> {
    if len == 0 {
        return Ok(&mut []);
    }
    check_buffer(ptr.cast_const())?;
    // SAFETY: non-null and aligned (checked), valid for `len` reads and writes, unaliased
    // (caller's contract).
    Ok(unsafe { core::slice::from_raw_parts_mut(ptr, len) })
}

/// Writes `value` through an out-parameter that must not be NULL.
///
/// # Safety
/// A non-null `out` must be valid for a write of `T`.
pub(crate) unsafe fn write_out<T>(out: *mut T, value: T) -> FfiResult {
    need(out)?;
    if !(out as usize).is_multiple_of(core::mem::align_of::<T>()) {
        return fail(GoldcrestStatus::Misaligned, "out-parameter misaligned");
    }
    // SAFETY: non-null, aligned, valid for a write (caller's contract).
    unsafe { out.write(value) };
    Ok(())
}

/// Checks an out-parameter before any work, so a NULL one fails fast.
pub(crate) fn need<T>(out: *const T) -> FfiResult {
    if out.is_null() {
        return fail(GoldcrestStatus::NullPointer, "NULL out-parameter");
    }
    Ok(())
}

/// Reads the tag word every handle starts with and checks it names the expected kind.
///
/// # Safety
/// A non-null `handle` must point to at least 4 readable bytes.
pub(crate) unsafe fn check_tag(handle: *const u32, expected: u32) -> FfiResult {
    if handle.is_null() {
        return fail(GoldcrestStatus::NullPointer, "NULL handle");
    }
    if !(handle as usize).is_multiple_of(core::mem::align_of::<u32>()) {
        return fail(GoldcrestStatus::WrongHandle, "handle pointer misaligned");
    }
    // SAFETY: non-null, aligned, readable (caller's contract).
    if unsafe { handle.read() } != expected {
        return fail(
            GoldcrestStatus::WrongHandle,
            "handle of another kind, or already freed",
        );
    }
    Ok(())
}
