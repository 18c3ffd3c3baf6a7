//! Writing goldcrest model files (for converters), on top of the `safetensors` crate.
//!
//! [`ModelWriter`] takes tensors in any goldcrest [`Format`] (packed block formats included),
//! records `goldcrest.format_version`, the architecture, hyperparameters and one
//! `goldcrest.tensor.<name>` key per packed tensor, and checks the result with core's reader
//! before it counts as written.
//!
//! **Alignment rule.** The data section starts at `8 + header_len`, and the header is padded
//! with spaces to a multiple of 8, so the data section is 8-aligned in the file. Tensors are
//! laid out by element alignment, largest first (F64/I64/U64, then F32/I32/U32/C64, then
//! F16/BF16/I16/U16, then byte types, packed formats included; by name within a group). Every
//! tensor's size is a multiple of its own element size, so each one starts at a multiple of
//! its alignment: when the file itself starts 8-aligned (an mmap, an aligned static), every
//! view is zero-copy. The `safetensors` crate applies exactly this order; [`ModelWriter`]
//! verifies it on every file instead of trusting it.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use goldcrest_core::format::{
    FORMAT_VERSION, KEY_ARCH, KEY_FORMAT_VERSION, KEY_TOKENIZER, MAX_RANK, SafeTensors,
    TENSOR_KEY_PREFIX, TOKENIZER_TENSOR,
};
use goldcrest_core::quant::{Format, Matrix};
use half::{bf16, f16};

use crate::load::{FileError, ModelFile, parse_hosted};

/// Alignment of the data section that goldcrest's writer guarantees (within the file).
pub const DATA_ALIGN: usize = 8;

#[derive(Debug, Clone)]
struct Pending {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    /// Empty for a planned tensor (see [`ModelWriter::planned`]).
    bytes: Vec<u8>,
    /// Byte length in the file.
    len: usize,
    planned: bool,
}

/// A tensor as the `safetensors` crate sees it; `header_only` hides the bytes so that
/// serializing gives just the header, with the offsets of the declared lengths.
struct PendingView<'a> {
    pending: &'a Pending,
    header_only: bool,
}

impl safetensors::View for PendingView<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        self.pending.dtype
    }

    fn shape(&self) -> &[usize] {
        &self.pending.shape
    }

    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        if self.header_only {
            std::borrow::Cow::Borrowed(&[])
        } else {
            std::borrow::Cow::Borrowed(&self.pending.bytes)
        }
    }

    fn data_len(&self) -> usize {
        self.pending.len
    }
}

/// Collects tensors and metadata, then writes one goldcrest file.
///
/// ```
/// use goldcrest_std::write::ModelWriter;
/// let mut w = ModelWriter::new();
/// w.arch("llama")?.hyperparameter("n_layer", 2)?;
/// w.f32("norm.weight", &[4], &[1.0, 1.0, 1.0, 1.0])?;
/// let bytes = w.to_bytes()?;
/// # Ok::<(), goldcrest_std::load::FileError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct ModelWriter {
    tensors: BTreeMap<String, Pending>,
    metadata: BTreeMap<String, String>,
    arch: Option<String>,
}

fn invalid(msg: impl Into<String>) -> FileError {
    FileError::Invalid(msg.into())
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + use<> {
    let path = path.to_path_buf();
    move |source| FileError::Io { path, source }
}

fn reference_dtype(format: Format) -> Option<safetensors::Dtype> {
    Some(match format {
        Format::F32 => safetensors::Dtype::F32,
        Format::F16 => safetensors::Dtype::F16,
        Format::Bf16 => safetensors::Dtype::BF16,
        Format::I8 => safetensors::Dtype::I8,
        Format::U8 => safetensors::Dtype::U8,
        _ => return None,
    })
}

impl ModelWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `goldcrest.arch` (lowercase letters, digits, `_` and `-`).
    pub fn arch(&mut self, arch: &str) -> Result<&mut Self, FileError> {
        let ok = !arch.is_empty()
            && arch
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !ok {
            return Err(invalid(format!(
                "architecture {arch:?}: use lowercase letters, digits, '_' or '-'"
            )));
        }
        self.arch = Some(arch.to_string());
        self.metadata.insert(KEY_ARCH.to_string(), arch.to_string());
        Ok(self)
    }

    /// Sets the hyperparameter `goldcrest.<arch>.<name>` (call [`ModelWriter::arch`] first).
    pub fn hyperparameter(
        &mut self,
        name: &str,
        value: impl Display,
    ) -> Result<&mut Self, FileError> {
        let arch = self.arch.as_deref().ok_or_else(|| {
            invalid(format!(
                "hyperparameter {name:?}: set the architecture first"
            ))
        })?;
        if name.is_empty() || name.contains('.') {
            return Err(invalid(format!(
                "hyperparameter {name:?}: name must be non-empty and contain no '.'"
            )));
        }
        let key = format!("goldcrest.{arch}.{name}");
        self.metadata.insert(key, value.to_string());
        Ok(self)
    }

    /// Sets any other metadata key. Keys goldcrest manages itself (the format version, the
    /// architecture, the tokenizer kind and `goldcrest.tensor.*`) are refused: use the
    /// dedicated methods.
    pub fn metadata(&mut self, key: &str, value: &str) -> Result<&mut Self, FileError> {
        if key == KEY_FORMAT_VERSION
            || key == KEY_ARCH
            || key == KEY_TOKENIZER
            || key.starts_with(TENSOR_KEY_PREFIX)
        {
            return Err(invalid(format!(
                "metadata key {key:?} is managed by the writer; use its dedicated method"
            )));
        }
        self.metadata.insert(key.to_string(), value.to_string());
        Ok(self)
    }

    /// Embeds a tokenizer: a `U8` tensor `tokenizer` and `goldcrest.tokenizer` = `kind`
    /// (e.g. `"hf-json"`, `"world"`).
    pub fn tokenizer(&mut self, kind: &str, bytes: Vec<u8>) -> Result<&mut Self, FileError> {
        if kind.is_empty() {
            return Err(invalid("tokenizer kind must not be empty"));
        }
        let len = bytes.len();
        self.insert(TOKENIZER_TENSOR, safetensors::Dtype::U8, vec![len], bytes)?;
        self.metadata
            .insert(KEY_TOKENIZER.to_string(), kind.to_string());
        Ok(self)
    }

    fn insert(
        &mut self,
        name: &str,
        dtype: safetensors::Dtype,
        shape: Vec<usize>,
        bytes: Vec<u8>,
    ) -> Result<(), FileError> {
        self.insert_with(name, dtype, shape, Some(bytes))
    }

    /// [`ModelWriter::insert`], or a planned tensor when `bytes` is `None`.
    fn insert_with(
        &mut self,
        name: &str,
        dtype: safetensors::Dtype,
        shape: Vec<usize>,
        bytes: Option<Vec<u8>>,
    ) -> Result<(), FileError> {
        if name == "__metadata__" {
            return Err(invalid(
                "'__metadata__' is reserved and cannot name a tensor",
            ));
        }
        if self.tensors.contains_key(name) {
            return Err(invalid(format!("tensor {name:?} added twice")));
        }
        if shape.len() > MAX_RANK {
            return Err(invalid(format!(
                "tensor {name:?}: {} dimensions, goldcrest reads at most {MAX_RANK}",
                shape.len()
            )));
        }
        let expected = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .and_then(|n| n.checked_mul(dtype.bitsize() / 8))
            .ok_or_else(|| invalid(format!("tensor {name:?}: shape {shape:?} overflows")))?;
        if let Some(bytes) = &bytes
            && bytes.len() != expected
        {
            return Err(invalid(format!(
                "tensor {name:?}: {} bytes given, shape {shape:?} of {dtype} needs {expected}",
                bytes.len()
            )));
        }
        self.tensors.insert(
            name.to_string(),
            Pending {
                dtype,
                shape,
                planned: bytes.is_none(),
                bytes: bytes.unwrap_or_default(),
                len: expected,
            },
        );
        Ok(())
    }

    /// Adds a tensor stored in a plain element format (f32, f16, bf16, i8, u8) from its
    /// little-endian bytes.
    pub fn plain(
        &mut self,
        name: &str,
        format: Format,
        shape: &[usize],
        bytes: Vec<u8>,
    ) -> Result<&mut Self, FileError> {
        self.plain_with(name, format, shape, Some(bytes))
    }

    fn plain_with(
        &mut self,
        name: &str,
        format: Format,
        shape: &[usize],
        bytes: Option<Vec<u8>>,
    ) -> Result<&mut Self, FileError> {
        let dtype = reference_dtype(format).ok_or_else(|| {
            invalid(format!(
                "tensor {name:?}: {} is a block format; use ModelWriter::packed",
                format.name()
            ))
        })?;
        self.insert_with(name, dtype, shape.to_vec(), bytes)?;
        Ok(self)
    }

    /// Declares a tensor whose bytes [`ModelWriter::write_file_streaming`] asks for when it
    /// reaches it in the file: `shape` is the logical shape (`[rows, cols]` for block formats,
    /// stored packed as by [`ModelWriter::packed`]). The header is written from these
    /// declarations first, so a converter never holds the whole output in memory.
    pub fn planned(
        &mut self,
        name: &str,
        format: Format,
        shape: &[usize],
    ) -> Result<&mut Self, FileError> {
        if format.is_blocked() {
            let &[rows, cols] = shape else {
                return Err(invalid(format!(
                    "tensor {name:?}: block formats are 2-D, got shape {shape:?}"
                )));
            };
            self.packed_with(name, format, rows, cols, None)
        } else {
            self.plain_with(name, format, shape, None)
        }
    }

    /// Adds an f32 tensor.
    pub fn f32(
        &mut self,
        name: &str,
        shape: &[usize],
        values: &[f32],
    ) -> Result<&mut Self, FileError> {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.plain(name, Format::F32, shape, bytes)
    }

    /// Adds an f16 tensor.
    pub fn f16(
        &mut self,
        name: &str,
        shape: &[usize],
        values: &[f16],
    ) -> Result<&mut Self, FileError> {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.plain(name, Format::F16, shape, bytes)
    }

    /// Adds a bf16 tensor.
    pub fn bf16(
        &mut self,
        name: &str,
        shape: &[usize],
        values: &[bf16],
    ) -> Result<&mut Self, FileError> {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.plain(name, Format::Bf16, shape, bytes)
    }

    /// Adds an i8 tensor.
    pub fn i8(
        &mut self,
        name: &str,
        shape: &[usize],
        values: &[i8],
    ) -> Result<&mut Self, FileError> {
        let bytes = values.iter().map(|&v| v as u8).collect();
        self.plain(name, Format::I8, shape, bytes)
    }

    /// Adds a u8 tensor (a blob).
    pub fn u8(
        &mut self,
        name: &str,
        shape: &[usize],
        values: Vec<u8>,
    ) -> Result<&mut Self, FileError> {
        self.plain(name, Format::U8, shape, values)
    }

    /// Adds a `rows × cols` matrix stored in a block format (q8_0, q4_0, tq2_0, tq1_0):
    /// written as `U8 [rows, row_bytes]` plus `goldcrest.tensor.<name>` =
    /// `"<format> <rows> <cols>"`.
    pub fn packed(
        &mut self,
        name: &str,
        format: Format,
        rows: usize,
        cols: usize,
        bytes: Vec<u8>,
    ) -> Result<&mut Self, FileError> {
        self.packed_with(name, format, rows, cols, Some(bytes))
    }

    fn packed_with(
        &mut self,
        name: &str,
        format: Format,
        rows: usize,
        cols: usize,
        bytes: Option<Vec<u8>>,
    ) -> Result<&mut Self, FileError> {
        if !format.is_blocked() {
            return Err(invalid(format!(
                "tensor {name:?}: {} is not a block format; use ModelWriter::plain",
                format.name()
            )));
        }
        let row_bytes = format
            .row_bytes(cols)
            .ok_or_else(|| invalid(format!("tensor {name:?}: {cols} columns overflow")))?;
        self.insert_with(name, safetensors::Dtype::U8, vec![rows, row_bytes], bytes)?;
        self.metadata.insert(
            format!("{TENSOR_KEY_PREFIX}{name}"),
            format!("{} {rows} {cols}", format.name()),
        );
        Ok(self)
    }

    /// Adds a matrix in any format (plain formats as 2-D tensors, block formats packed).
    pub fn matrix(&mut self, name: &str, m: &Matrix<'_>) -> Result<&mut Self, FileError> {
        if m.format().is_blocked() {
            self.packed(name, m.format(), m.rows(), m.cols(), m.data().to_vec())
        } else {
            self.plain(name, m.format(), &[m.rows(), m.cols()], m.data().to_vec())
        }
    }

    fn prepared(
        &self,
        header_only: bool,
    ) -> (Vec<(String, PendingView<'_>)>, HashMap<String, String>) {
        let views = self
            .tensors
            .iter()
            .map(|(name, pending)| {
                let view = PendingView {
                    pending,
                    header_only,
                };
                (name.clone(), view)
            })
            .collect();
        let mut metadata: HashMap<String, String> = self
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        metadata.insert(KEY_FORMAT_VERSION.to_string(), FORMAT_VERSION.to_string());
        (views, metadata)
    }

    /// The file as bytes (checked with core's reader and the alignment rule).
    ///
    /// The output is deterministic: the same tensors and metadata give the same bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, FileError> {
        if let Some((name, _)) = self.tensors.iter().find(|(_, p)| p.planned) {
            return Err(invalid(format!(
                "tensor {name:?} is only planned: use ModelWriter::write_file_streaming"
            )));
        }
        let (views, metadata) = self.prepared(false);
        let mut bytes =
            safetensors::serialize(views, Some(metadata)).map_err(FileError::Serialize)?;
        self.sort_metadata_in_place(&mut bytes)?;
        let parsed =
            parse_hosted(&bytes).map_err(|source| FileError::Format { path: None, source })?;
        self.verify(&parsed)?;
        Ok(bytes)
    }

    /// The `safetensors` crate takes metadata as a `HashMap`, so its order changes from run to
    /// run. The same entries sorted by key serialize to the same number of bytes, so the object
    /// is rewritten in place, and every offset stays as it was.
    fn sort_metadata_in_place(&self, bytes: &mut [u8]) -> Result<(), FileError> {
        let span = {
            let parsed =
                parse_hosted(bytes).map_err(|source| FileError::Format { path: None, source })?;
            let Some(raw) = parsed.metadata().raw() else {
                return Err(invalid("written file lost its metadata"));
            };
            let start = raw.as_ptr() as usize - bytes.as_ptr() as usize;
            start..start + raw.len()
        };
        let mut sorted = self.metadata.clone();
        sorted.insert(KEY_FORMAT_VERSION.to_string(), FORMAT_VERSION.to_string());
        let text = serde_json::to_string(&sorted)
            .map_err(|e| invalid(format!("metadata does not serialize: {e}")))?;
        let Some(target) = bytes.get_mut(span) else {
            return Err(invalid("metadata span outside the file"));
        };
        if target.len() != text.len() {
            return Err(invalid(
                "sorted metadata differs in length from the safetensors crate's serialization",
            ));
        }
        target.copy_from_slice(text.as_bytes());
        Ok(())
    }

    /// Writes the file to `path`: to a sibling temporary file first, checked with core's
    /// reader through a memory map, then renamed over `path` (so existing maps of an old file
    /// stay valid and a failed write leaves no half-written model behind).
    ///
    /// The file is assembled in memory first (the `safetensors` crate's streaming writer
    /// creates files readable by their owner only); the new file gets the usual permissions
    /// for the process's umask.
    pub fn write_file(&self, path: impl AsRef<Path>) -> Result<(), FileError> {
        let bytes = self.to_bytes()?;
        self.write_checked(path.as_ref(), &mut |f, tmp| {
            f.write_all(&bytes).map_err(io_error(tmp))
        })
    }

    /// Writes the file to `path` like [`ModelWriter::write_file`], but the header first and
    /// then each tensor as it comes: `produce(name)` gives the bytes of every tensor declared
    /// with [`ModelWriter::planned`], in file order, and each is dropped once written. Memory
    /// stays at one tensor (plus the tensors added with their bytes), whatever the model size.
    /// The file is byte-identical to what [`ModelWriter::to_bytes`] gives for the same tensors.
    pub fn write_file_streaming(
        &self,
        path: impl AsRef<Path>,
        produce: &mut dyn FnMut(&str) -> Result<Vec<u8>, FileError>,
    ) -> Result<(), FileError> {
        let (views, metadata) = self.prepared(true);
        let mut header =
            safetensors::serialize(views, Some(metadata)).map_err(FileError::Serialize)?;
        let order = self.sort_header_metadata(&mut header)?;
        self.write_checked(path.as_ref(), &mut |f, tmp| {
            let mut out = std::io::BufWriter::with_capacity(1 << 20, &mut *f);
            out.write_all(&header).map_err(io_error(tmp))?;
            for name in &order {
                let pending = &self.tensors[name];
                if pending.planned {
                    let bytes = produce(name)?;
                    if bytes.len() != pending.len {
                        return Err(invalid(format!(
                            "tensor {name:?}: {} bytes produced, {} planned",
                            bytes.len(),
                            pending.len
                        )));
                    }
                    out.write_all(&bytes).map_err(io_error(tmp))?;
                } else {
                    out.write_all(&pending.bytes).map_err(io_error(tmp))?;
                }
            }
            out.flush().map_err(io_error(tmp))
        })
    }

    /// Sorts the `__metadata__` object of a header-only serialization (as
    /// [`ModelWriter::sort_metadata_in_place`] does for a whole file) and returns the tensor
    /// names in data order.
    fn sort_header_metadata(&self, header: &mut [u8]) -> Result<Vec<String>, FileError> {
        let json = header
            .get(8..)
            .ok_or_else(|| invalid("header shorter than its length prefix"))?;
        let parsed: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(json)
            .map_err(|e| invalid(format!("header does not parse: {e}")))?;
        let mut order: Vec<(u64, String)> = Vec::new();
        for (name, info) in &parsed {
            if name != "__metadata__" {
                let begin = info["data_offsets"][0]
                    .as_u64()
                    .ok_or_else(|| invalid(format!("tensor {name:?} has no offsets")))?;
                order.push((begin, name.clone()));
            }
        }
        order.sort();
        let mut sorted = self.metadata.clone();
        sorted.insert(KEY_FORMAT_VERSION.to_string(), FORMAT_VERSION.to_string());
        let text = serde_json::to_string(&sorted)
            .map_err(|e| invalid(format!("metadata does not serialize: {e}")))?;
        let key = b"\"__metadata__\":";
        let start = json
            .windows(key.len())
            .position(|w| w == key)
            .map(|p| 8 + p + key.len())
            .ok_or_else(|| invalid("header has no __metadata__"))?;
        let target = header
            .get_mut(start..start + text.len())
            .ok_or_else(|| invalid("metadata span outside the header"))?;
        if target.first() != Some(&b'{') || target.last() != Some(&b'}') {
            return Err(invalid(
                "sorted metadata differs in length from the safetensors crate's serialization",
            ));
        }
        target.copy_from_slice(text.as_bytes());
        let check: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&header[8..])
                .map_err(|e| invalid(format!("sorted header does not parse: {e}")))?;
        if check != parsed {
            return Err(invalid("sorting the metadata changed the header"));
        }
        Ok(order.into_iter().map(|(_, name)| name).collect())
    }

    /// Creates a sibling temporary file, lets `fill` write it, syncs it, checks it with core's
    /// reader through a memory map, then renames it over `path` (so existing maps of an old
    /// file stay valid and a failed write leaves no half-written model behind).
    fn write_checked(
        &self,
        path: &Path,
        fill: &mut dyn FnMut(&mut File, &Path) -> Result<(), FileError>,
    ) -> Result<(), FileError> {
        let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(".goldcrest-tmp");
        let tmp: PathBuf = path.with_file_name(tmp_name);
        let written = (|| {
            let mut f = File::create(&tmp).map_err(io_error(&tmp))?;
            fill(&mut f, &tmp)?;
            f.sync_all().map_err(io_error(&tmp))?;
            drop(f);
            let m = ModelFile::open(&tmp)?;
            self.verify(&m.safetensors()?)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, path).map_err(io_error(path))
    }

    /// Every tensor present with its declared bytes, and the alignment rule.
    fn verify(&self, st: &SafeTensors<'_>) -> Result<(), FileError> {
        if st.len() != self.tensors.len() {
            return Err(invalid("written file lost tensors"));
        }
        check_alignment(st).map_err(invalid)
    }
}

/// Checks goldcrest's alignment rule on a parsed file: the data section starts at a multiple
/// of [`DATA_ALIGN`] and every tensor at a multiple of its dtype's alignment (both relative to
/// the start of the file).
pub fn check_alignment(st: &SafeTensors<'_>) -> Result<(), String> {
    if !st.data_offset().is_multiple_of(DATA_ALIGN) {
        return Err(format!(
            "data section starts at byte {}, not a multiple of {DATA_ALIGN}",
            st.data_offset()
        ));
    }
    for t in st.tensors() {
        let offset = st.data_offset() as u64 + t.data_offset();
        let align = t.dtype().alignment() as u64;
        if !offset.is_multiple_of(align) {
            return Err(format!(
                "tensor '{}' ({}) starts at file byte {offset}, not a multiple of {align}",
                t.name(),
                t.dtype().name()
            ));
        }
    }
    Ok(())
}
