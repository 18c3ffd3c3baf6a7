//! Opening model files: memory-mapped, validated once, read in place.
//!
//! The map starts on a page boundary, and goldcrest's writer pads the header so the data
//! section starts on an 8-byte boundary; every tensor is then aligned for zero-copy views.

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use goldcrest_core::format::{MIN_ENTRY_BYTES, SafeTensors, TensorSlot};

/// What went wrong reading or writing a model file, with the path involved.
#[derive(Debug)]
pub enum FileError {
    /// The file could not be opened, mapped, created or written.
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file's contents are not a valid goldcrest/safetensors file.
    Format {
        /// The file, if the bytes came from one.
        path: Option<PathBuf>,
        /// What core's validation found.
        source: goldcrest_core::Error,
    },
    /// A writer was given inconsistent input (the message says what to fix).
    Invalid(String),
    /// The `safetensors` crate refused to serialize.
    Serialize(safetensors::SafeTensorError),
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            FileError::Format {
                path: Some(path),
                source,
            } => write!(f, "{}: {source}", path.display()),
            FileError::Format { path: None, source } => write!(f, "{source}"),
            FileError::Invalid(msg) => f.write_str(msg),
            FileError::Serialize(e) => write!(f, "safetensors serialization failed: {e}"),
        }
    }
}

// `Display` already includes the underlying error's message (so a plain `{}` says everything),
// hence no `source()`: error reporters would print it twice.
impl std::error::Error for FileError {}

/// Parses with enough scratch for the O(n log n) checks (hosts can afford it).
pub fn parse_hosted(bytes: &[u8]) -> Result<SafeTensors<'_>, goldcrest_core::Error> {
    let (header_len, _) = SafeTensors::header_bounds(bytes)?;
    let mut scratch = vec![TensorSlot::default(); header_len / MIN_ENTRY_BYTES + 1];
    SafeTensors::parse_with_scratch(bytes, &mut scratch)
}

/// A model file mapped into memory read-only, validated when opened.
///
/// Weights are never copied: [`ModelFile::safetensors`] hands out views into the map.
#[derive(Debug)]
pub struct ModelFile {
    map: memmap2::Mmap,
    path: PathBuf,
}

impl ModelFile {
    /// Maps `path` and validates it as a safetensors file with goldcrest's conventions.
    pub fn open(path: impl AsRef<Path>) -> Result<ModelFile, FileError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| FileError::Io {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(io)?;
        // SAFETY: the map is read-only and private to this process. Rust's aliasing rules
        // assume the bytes do not change while borrowed; that holds unless another process
        // truncates or rewrites the file while it is mapped, which goldcrest cannot prevent
        // (the same caveat as every mmap-based model loader). Writers that replace files
        // (including `ModelWriter::write_file`) write a new file and rename it over the old
        // one, which leaves existing maps intact.
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        let model = ModelFile { map, path };
        model.safetensors()?;
        Ok(model)
    }

    /// The parsed file, borrowing the map. Parsing validates the header again (O(n log n) in
    /// the number of tensors); keep the returned value rather than calling this per lookup.
    pub fn safetensors(&self) -> Result<SafeTensors<'_>, FileError> {
        parse_hosted(&self.map).map_err(|source| FileError::Format {
            path: Some(self.path.clone()),
            source,
        })
    }

    /// Maps every page of the file now (reading it from disk if it is not cached), so that
    /// the first inference does not pay for page faults on its weights. Callers that time
    /// their first call (benchmarks, `forecast --timing`) use it; otherwise pages fault in on
    /// first use, which costs the same in total.
    pub fn prefault(&self) {
        #[cfg(target_os = "linux")]
        if self.map.advise(memmap2::Advice::PopulateRead).is_ok() {
            return;
        }
        // Elsewhere (or on kernels before 5.14): touch one byte per page.
        let touched = self.map.iter().step_by(4096).fold(0u8, |a, &b| a ^ b);
        std::hint::black_box(touched);
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// The path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
