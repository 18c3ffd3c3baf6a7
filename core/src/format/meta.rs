//! The `__metadata__` map and goldcrest's keys in it (all documented in `docs/format.md`).
//!
//! Values are JSON strings borrowed from the header; lookups decode escapes on the fly and typed
//! getters parse through a small stack buffer, so nothing allocates.

use super::json::{JsonStr, Scanner};
use super::safetensors::{Dtype, SafeTensors, TensorSlot, name_of, slot_name};
use crate::error::{Error, NAME_CAPACITY, Name, Result, Shape};
use crate::quant::Format;

/// Format version goldcrest writes.
pub const FORMAT_VERSION: &str = "1.0";
/// Newest major format version this build reads; files with a larger major are refused.
pub const FORMAT_VERSION_MAJOR: u16 = 1;

/// Key: the goldcrest file format version, `"MAJOR.MINOR"`.
pub const KEY_FORMAT_VERSION: &str = "goldcrest.format_version";
/// Key: the model architecture (`"rwkv6"`, `"llama"`, `"qwen2"`, ...).
pub const KEY_ARCH: &str = "goldcrest.arch";
/// Key: the kind of the embedded tokenizer stored in the [`TOKENIZER_TENSOR`] tensor.
pub const KEY_TOKENIZER: &str = "goldcrest.tokenizer";
/// Key prefix: `goldcrest.tensor.<name>` = `"<format> <rows> <cols>"` for packed tensors.
pub const TENSOR_KEY_PREFIX: &str = "goldcrest.tensor.";
/// Name of the `U8` tensor holding an embedded tokenizer.
pub const TOKENIZER_TENSOR: &str = "tokenizer";

/// Longest value the typed getters parse (numbers, versions, packed specs).
const SCALAR_CAPACITY: usize = 64;

/// The `__metadata__` string-to-string map of a validated file.
#[derive(Debug, Clone, Copy)]
pub struct Metadata<'a> {
    /// Raw text of the validated object, `{...}`.
    object: Option<&'a str>,
    /// Whether any key contains a JSON escape (which rules out plain substring search).
    keys_escaped: bool,
}

impl<'a> Metadata<'a> {
    pub(crate) const EMPTY: Metadata<'static> = Metadata {
        object: None,
        keys_escaped: false,
    };

    /// Wraps a validated metadata object.
    pub(crate) fn from_object(object: Option<&'a str>) -> Self {
        let mut meta = Metadata {
            object,
            keys_escaped: false,
        };
        meta.keys_escaped = meta.iter().any(|(k, _)| k.has_escapes());
        meta
    }

    /// The metadata object's JSON text as it appears in the header (`None` if the file has no
    /// `__metadata__` or it is `null`).
    pub fn raw(&self) -> Option<&'a str> {
        self.object
    }

    /// Every `(key, value)` pair, in file order.
    pub fn iter(&self) -> MetadataIter<'a> {
        MetadataIter {
            scanner: self.object.map(Scanner::new),
            started: false,
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<JsonStr<'a>> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The value of `key`, or [`Error::BadMetadata`] naming it.
    pub fn require(&self, key: &str) -> Result<JsonStr<'a>> {
        self.get(key).ok_or(Error::BadMetadata {
            key: Name::new(key),
        })
    }

    /// The value of `key` borrowed as a `&str`, for values without JSON escapes (every value
    /// goldcrest writes except free text containing quotes, backslashes or control characters).
    /// [`Error::BadMetadata`] if it is missing or escaped; decode escaped values with
    /// [`Metadata::get`] and [`JsonStr::unescape`].
    pub fn get_str(&self, key: &str) -> Result<&'a str> {
        self.require(key)?.as_str().ok_or_else(|| bad(key))
    }

    /// The value of `key` parsed as an unsigned integer.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        parse_value(self.require(key)?, key)
    }

    /// The value of `key` parsed as a `usize`.
    pub fn get_usize(&self, key: &str) -> Result<usize> {
        parse_value(self.require(key)?, key)
    }

    /// The value of `key` parsed as a finite `f32`.
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        let v: f32 = parse_value(self.require(key)?, key)?;
        if v.is_finite() { Ok(v) } else { Err(bad(key)) }
    }

    /// The value of `key` parsed as `true` or `false`.
    pub fn get_bool(&self, key: &str) -> Result<bool> {
        parse_value(self.require(key)?, key)
    }

    /// The model architecture (`goldcrest.arch`), if present.
    pub fn arch(&self) -> Option<JsonStr<'a>> {
        self.get(KEY_ARCH)
    }

    /// Checks that `goldcrest.arch` is `arch`; [`Error::BadMetadata`] naming `goldcrest.arch`
    /// if it is missing or another architecture.
    pub fn expect_arch(&self, arch: &str) -> Result<()> {
        match self.arch() {
            Some(a) if a.as_str() == Some(arch) => Ok(()),
            _ => Err(bad(KEY_ARCH)),
        }
    }

    /// The hyperparameter `goldcrest.<arch>.<name>`, if present.
    pub fn hyperparameter(&self, arch: &str, name: &str) -> Option<JsonStr<'a>> {
        self.iter()
            .find(|(k, _)| {
                k.chars().eq("goldcrest."
                    .chars()
                    .chain(arch.chars())
                    .chain(".".chars())
                    .chain(name.chars()))
            })
            .map(|(_, v)| v)
    }

    /// The hyperparameter `goldcrest.<arch>.<name>` parsed as a `usize`; [`Error::BadMetadata`]
    /// names the key if it is missing or not a number.
    pub fn hyperparameter_usize(&self, arch: &str, name: &str) -> Result<usize> {
        let key = joined_name(&["goldcrest.", arch, ".", name]);
        let v = self
            .hyperparameter(arch, name)
            .ok_or(Error::BadMetadata { key })?;
        parse_with(v, key)
    }

    /// The hyperparameter `goldcrest.<arch>.<name>` parsed as `true` or `false`;
    /// [`Error::BadMetadata`] names the key if it is missing or neither.
    pub fn hyperparameter_bool(&self, arch: &str, name: &str) -> Result<bool> {
        let key = joined_name(&["goldcrest.", arch, ".", name]);
        let v = self
            .hyperparameter(arch, name)
            .ok_or(Error::BadMetadata { key })?;
        parse_with(v, key)
    }

    /// [`Metadata::hyperparameter_bool`], or `default` when the key is absent (a key that is
    /// present must still say `true` or `false`).
    pub fn hyperparameter_bool_or(&self, arch: &str, name: &str, default: bool) -> Result<bool> {
        match self.hyperparameter(arch, name) {
            None => Ok(default),
            Some(_) => self.hyperparameter_bool(arch, name),
        }
    }

    /// The hyperparameter `goldcrest.<arch>.<name>` parsed as a finite `f32`.
    pub fn hyperparameter_f32(&self, arch: &str, name: &str) -> Result<f32> {
        let key = joined_name(&["goldcrest.", arch, ".", name]);
        let v = self
            .hyperparameter(arch, name)
            .ok_or(Error::BadMetadata { key })?;
        let x: f32 = parse_with(v, key)?;
        if x.is_finite() {
            Ok(x)
        } else {
            Err(Error::BadMetadata { key })
        }
    }

    /// The format version `(major, minor)` (`goldcrest.format_version`), `None` for files
    /// without it (plain safetensors files); [`Error::BadMetadata`] if it is not `"M.m"`.
    pub fn format_version(&self) -> Result<Option<(u16, u16)>> {
        let Some(v) = self.get(KEY_FORMAT_VERSION) else {
            return Ok(None);
        };
        let mut buf = [0u8; SCALAR_CAPACITY];
        let text = v.unescape(&mut buf).map_err(|_| bad(KEY_FORMAT_VERSION))?;
        let (major, minor) = text.split_once('.').ok_or(bad(KEY_FORMAT_VERSION))?;
        let parse = |s: &str| {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(KEY_FORMAT_VERSION));
            }
            s.parse::<u16>().map_err(|_| bad(KEY_FORMAT_VERSION))
        };
        Ok(Some((parse(major)?, parse(minor)?)))
    }

    /// The packed format and logical shape recorded for tensor `name`, if any.
    pub(crate) fn packed_spec_for(&self, name: JsonStr<'_>) -> Option<(JsonStr<'a>, JsonStr<'a>)> {
        if let Some(found) = self.packed_spec_by_search(name) {
            return found;
        }
        self.iter().find(|(k, _)| {
            k.strip_prefix(TENSOR_KEY_PREFIX)
                .is_some_and(|rest| rest.eq(name.chars()))
        })
    }

    /// Fast path for [`Metadata::packed_spec_for`]: when neither the keys nor the name contain
    /// escapes, the key's raw text is `"goldcrest.tensor.<name>"`, found by substring search.
    /// In validated JSON such a quoted run followed by `:` can only be a key (a value is followed
    /// by `,` or `}`, and a quote inside a string is escaped, which `keys_escaped` rules out for
    /// keys). `None` when the fast path does not apply; `Some(None)` when there is no such key.
    fn packed_spec_by_search(
        &self,
        name: JsonStr<'_>,
    ) -> Option<Option<(JsonStr<'a>, JsonStr<'a>)>> {
        let object = self.object?;
        let name = name.as_str().filter(|_| !self.keys_escaped)?;
        let mut pattern = [0u8; 256];
        let len = TENSOR_KEY_PREFIX.len() + name.len() + 2;
        let dst = pattern.get_mut(..len)?;
        // Lengths add up by construction: quote, prefix, name, quote.
        let (open, rest) = dst.split_first_mut()?;
        *open = b'"';
        let (prefix, rest) = rest.split_at_mut(TENSOR_KEY_PREFIX.len());
        prefix.copy_from_slice(TENSOR_KEY_PREFIX.as_bytes());
        let (name_dst, close) = rest.split_at_mut(name.len());
        name_dst.copy_from_slice(name.as_bytes());
        close.copy_from_slice(b"\"");
        let dst = &pattern[..len];
        let pattern = core::str::from_utf8(dst).ok()?;
        let mut from = 0;
        while let Some(at) = object.get(from..).and_then(|rest| rest.find(pattern)) {
            let start = from + at;
            let mut s = Scanner::at(object, start);
            let key = s.string().ok()?;
            if s.eat(b':') {
                return Some(s.string().ok().map(|value| (key, value)));
            }
            from = start + 1;
        }
        Some(None)
    }
}

/// Iterator over metadata entries.
pub struct MetadataIter<'a> {
    scanner: Option<Scanner<'a>>,
    started: bool,
}

impl<'a> Iterator for MetadataIter<'a> {
    type Item = (JsonStr<'a>, JsonStr<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        // The object was validated when the file was parsed; any failure here ends iteration.
        let s = self.scanner.as_mut()?;
        let more = if self.started {
            s.eat(b',')
        } else {
            self.started = true;
            s.eat(b'{') && !s.eat(b'}')
        };
        let item = more
            .then(|| {
                let k = s.string().ok()?;
                s.expect(b':', "':'").ok()?;
                let v = s.string().ok()?;
                Some((k, v))
            })
            .flatten();
        if item.is_none() {
            self.scanner = None;
        }
        item
    }
}

fn bad(key: &str) -> Error {
    Error::BadMetadata {
        key: Name::new(key),
    }
}

/// Concatenates parts into an error name (truncated like any [`Name`]).
fn joined_name(parts: &[&str]) -> Name {
    let mut buf = [0u8; NAME_CAPACITY + 4];
    let mut len = 0;
    for c in parts.iter().flat_map(|p| p.chars()) {
        let Some(dst) = buf.get_mut(len..len + c.len_utf8()) else {
            break;
        };
        len += c.encode_utf8(dst).len();
    }
    Name::new(core::str::from_utf8(&buf[..len]).unwrap_or(""))
}

fn parse_value<T: core::str::FromStr>(v: JsonStr<'_>, key: &str) -> Result<T> {
    parse_with(v, Name::new(key))
}

fn parse_with<T: core::str::FromStr>(v: JsonStr<'_>, key: Name) -> Result<T> {
    let mut buf = [0u8; SCALAR_CAPACITY];
    let text = v
        .unescape(&mut buf)
        .map_err(|_| Error::BadMetadata { key })?;
    text.parse().map_err(|_| Error::BadMetadata { key })
}

/// A packed tensor's logical format and shape, from `goldcrest.tensor.<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedSpec {
    /// The block format the bytes are stored in.
    pub format: Format,
    /// Logical rows.
    pub rows: u64,
    /// Logical columns (weights per row before block padding).
    pub cols: u64,
}

impl PackedSpec {
    /// Parses `"<format> <rows> <cols>"` (single spaces, decimal, no signs or leading zeros);
    /// only block formats are packed.
    pub fn parse(text: &str) -> Option<PackedSpec> {
        let mut parts = text.split(' ');
        let format = Format::from_name(parts.next()?).filter(|f| f.is_blocked())?;
        let mut dim = || -> Option<u64> {
            let s = parts.next()?;
            let digits_ok = !s.is_empty()
                && s.bytes().all(|b| b.is_ascii_digit())
                && (s == "0" || !s.starts_with('0'));
            if !digits_ok {
                return None;
            }
            s.parse().ok()
        };
        let (rows, cols) = (dim()?, dim()?);
        if parts.next().is_some() {
            return None;
        }
        Some(PackedSpec { format, rows, cols })
    }

    fn from_json(v: JsonStr<'_>) -> Option<PackedSpec> {
        let mut buf = [0u8; SCALAR_CAPACITY];
        PackedSpec::parse(v.unescape(&mut buf).ok()?)
    }

    /// The stored `U8` shape this spec requires: `[rows, row_bytes(cols)]`.
    pub fn stored_shape(&self) -> Option<[u64; 2]> {
        let cols = usize::try_from(self.cols).ok()?;
        let row_bytes = self.format.row_bytes(cols)?;
        Some([self.rows, row_bytes as u64])
    }
}

/// Resolves and checks the packed spec of key `key` (value `value`) against the stored tensor
/// `tensor` (its dtype and stored shape).
pub(crate) fn resolve_packed(
    key: JsonStr<'_>,
    value: JsonStr<'_>,
    tensor: JsonStr<'_>,
    dtype: Dtype,
    stored: &[u64],
) -> Result<PackedSpec> {
    let spec = PackedSpec::from_json(value).ok_or(Error::BadMetadata { key: name_of(key) })?;
    if dtype != Dtype::U8 {
        return Err(Error::UnsupportedFormat {
            tensor: name_of(tensor),
        });
    }
    let expected = spec
        .stored_shape()
        .ok_or(Error::BadMetadata { key: name_of(key) })?;
    if stored != expected {
        return Err(Error::ShapeMismatch {
            tensor: name_of(tensor),
            expected: Shape::new(&expected).unwrap_or_default(),
            found: Shape::new(stored).unwrap_or_default(),
        });
    }
    Ok(spec)
}

/// Refuses files from a newer major format version.
pub(crate) fn check_version(meta: &Metadata<'_>) -> Result<()> {
    if let Some((major, _)) = meta.format_version()?
        && major > FORMAT_VERSION_MAJOR
    {
        return Err(Error::UnsupportedVersion {
            found_major: major,
            supported_major: FORMAT_VERSION_MAJOR,
        });
    }
    Ok(())
}

/// Rejects duplicate metadata keys, then checks every `goldcrest.tensor.*` key (in file order)
/// against the tensor it describes. Without scratch: keys compared pairwise, one header scan
/// per packed key.
pub(crate) fn check_keys(file: &SafeTensors<'_>) -> Result<()> {
    let meta = file.metadata();
    for (i, (key, _)) in meta.iter().enumerate() {
        if meta.iter().skip(i + 1).any(|(k, _)| k == key) {
            return Err(Error::BadMetadata { key: name_of(key) });
        }
    }
    for (key, value) in meta.iter() {
        if let Some(rest) = key.strip_prefix(TENSOR_KEY_PREFIX) {
            let raw = file
                .find_raw_chars(rest)
                .ok_or(Error::BadMetadata { key: name_of(key) })?;
            resolve_packed(key, value, raw.name, raw.dtype, raw.shape.as_slice())?;
        }
    }
    Ok(())
}

/// [`check_keys`] with scratch: `tensors` are the tensor slots sorted by name; `keys` has one
/// slot per metadata entry. Duplicates by sorting, tensors by binary search.
pub(crate) fn check_keys_sorted(
    file: &SafeTensors<'_>,
    tensors: &[TensorSlot],
    keys: &mut [TensorSlot],
) -> Result<()> {
    let header = file.header();
    let meta = file.metadata();
    for (slot, (key, _)) in keys.iter_mut().zip(meta.iter()) {
        *slot = TensorSlot::for_key(header, key);
    }
    keys.sort_unstable_by(|a, b| slot_name(header, a).cmp_decoded(&slot_name(header, b)));
    for pair in keys.windows(2) {
        let (a, b) = (slot_name(header, &pair[0]), slot_name(header, &pair[1]));
        if a == b {
            return Err(Error::BadMetadata { key: name_of(a) });
        }
    }
    for (key, value) in meta.iter() {
        let Some(rest) = key.strip_prefix(TENSOR_KEY_PREFIX) else {
            continue;
        };
        let raw = tensors
            .binary_search_by(|t| slot_name(header, t).chars().cmp(rest.clone()))
            .ok()
            .and_then(|i| tensors.get(i))
            .and_then(|slot| file.raw_at(slot))
            .ok_or(Error::BadMetadata { key: name_of(key) })?;
        resolve_packed(key, value, raw.name, raw.dtype, raw.shape.as_slice())?;
    }
    Ok(())
}
