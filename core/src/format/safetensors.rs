//! The safetensors container: header length, JSON header, tensor entries, and the whole-file
//! validation that lets every later lookup trust the header.
//!
//! Layout (<https://github.com/huggingface/safetensors>): 8 bytes little-endian header length
//! `N`, `N` bytes of UTF-8 JSON (an object mapping tensor names to `{dtype, shape,
//! data_offsets}`, plus an optional `__metadata__` string-to-string map), then the data section.
//! Offsets are relative to the data section; the tensors must cover it exactly, without
//! overlaps, holes or trailing bytes.

use core::cmp::Ordering;

use super::json::{JsonStr, Scanner};
use super::meta::{self, Metadata};
use super::view::TensorView;
use crate::error::{Error, Name, Result};
use crate::quant::Format;

/// Largest header accepted, in bytes (the same limit as the reference `safetensors` crate).
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// Most dimensions a tensor may have in a file goldcrest reads.
pub const MAX_RANK: usize = 8;

/// Key of the reserved metadata entry in the header object.
const METADATA_KEY: &str = "__metadata__";

/// Element types safetensors defines (names as written in files).
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dtype {
    /// Boolean, one byte.
    BOOL,
    /// 4-bit float (OCP MX FP4).
    F4,
    /// 6-bit float E2M3 (OCP MX).
    F6_E2M3,
    /// 6-bit float E3M2 (OCP MX).
    F6_E3M2,
    /// Unsigned byte.
    U8,
    /// Signed byte.
    I8,
    /// 8-bit float E5M2.
    F8_E5M2,
    /// 8-bit float E4M3.
    F8_E4M3,
    /// 8-bit exponent-only scale (OCP MX E8M0).
    F8_E8M0,
    /// 8-bit float E4M3, finite, no negative zero.
    F8_E4M3FNUZ,
    /// 8-bit float E5M2, finite, no negative zero.
    F8_E5M2FNUZ,
    /// Signed 16-bit integer.
    I16,
    /// Unsigned 16-bit integer.
    U16,
    /// IEEE binary16.
    F16,
    /// bfloat16.
    BF16,
    /// Signed 32-bit integer.
    I32,
    /// Unsigned 32-bit integer.
    U32,
    /// IEEE binary32.
    F32,
    /// Complex number of two f32.
    C64,
    /// IEEE binary64.
    F64,
    /// Signed 64-bit integer.
    I64,
    /// Unsigned 64-bit integer.
    U64,
}

/// Every dtype, for lookups by name.
pub const DTYPES: [Dtype; 22] = [
    Dtype::BOOL,
    Dtype::F4,
    Dtype::F6_E2M3,
    Dtype::F6_E3M2,
    Dtype::U8,
    Dtype::I8,
    Dtype::F8_E5M2,
    Dtype::F8_E4M3,
    Dtype::F8_E8M0,
    Dtype::F8_E4M3FNUZ,
    Dtype::F8_E5M2FNUZ,
    Dtype::I16,
    Dtype::U16,
    Dtype::F16,
    Dtype::BF16,
    Dtype::I32,
    Dtype::U32,
    Dtype::F32,
    Dtype::C64,
    Dtype::F64,
    Dtype::I64,
    Dtype::U64,
];

impl Dtype {
    /// The name used in safetensors headers.
    pub const fn name(self) -> &'static str {
        match self {
            Dtype::BOOL => "BOOL",
            Dtype::F4 => "F4",
            Dtype::F6_E2M3 => "F6_E2M3",
            Dtype::F6_E3M2 => "F6_E3M2",
            Dtype::U8 => "U8",
            Dtype::I8 => "I8",
            Dtype::F8_E5M2 => "F8_E5M2",
            Dtype::F8_E4M3 => "F8_E4M3",
            Dtype::F8_E8M0 => "F8_E8M0",
            Dtype::F8_E4M3FNUZ => "F8_E4M3FNUZ",
            Dtype::F8_E5M2FNUZ => "F8_E5M2FNUZ",
            Dtype::I16 => "I16",
            Dtype::U16 => "U16",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::I32 => "I32",
            Dtype::U32 => "U32",
            Dtype::F32 => "F32",
            Dtype::C64 => "C64",
            Dtype::F64 => "F64",
            Dtype::I64 => "I64",
            Dtype::U64 => "U64",
        }
    }

    /// Parses a header dtype name.
    pub fn from_name(name: &str) -> Option<Dtype> {
        DTYPES.iter().copied().find(|d| d.name() == name)
    }

    fn from_json(name: JsonStr<'_>) -> Option<Dtype> {
        DTYPES.iter().copied().find(|d| name == d.name())
    }

    /// Bits per element.
    pub const fn bits(self) -> u64 {
        match self {
            Dtype::F4 => 4,
            Dtype::F6_E2M3 | Dtype::F6_E3M2 => 6,
            Dtype::BOOL
            | Dtype::U8
            | Dtype::I8
            | Dtype::F8_E5M2
            | Dtype::F8_E4M3
            | Dtype::F8_E8M0
            | Dtype::F8_E4M3FNUZ
            | Dtype::F8_E5M2FNUZ => 8,
            Dtype::I16 | Dtype::U16 | Dtype::F16 | Dtype::BF16 => 16,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 32,
            Dtype::C64 | Dtype::F64 | Dtype::I64 | Dtype::U64 => 64,
        }
    }

    /// Natural alignment of one element in bytes (that of its scalar parts; 1 for sub-byte
    /// types). The writer orders tensors so each starts at a multiple of this.
    pub const fn alignment(self) -> usize {
        match self {
            Dtype::C64 => 4,
            _ => {
                let bytes = self.bits() / 8;
                if bytes == 0 { 1 } else { bytes as usize }
            }
        }
    }

    /// The goldcrest storage format with the same bytes, if there is one. `U8` tensors may
    /// instead carry a packed format named in the metadata (see [`TensorView::format`]).
    pub const fn format(self) -> Option<Format> {
        match self {
            Dtype::F32 => Some(Format::F32),
            Dtype::F16 => Some(Format::F16),
            Dtype::BF16 => Some(Format::Bf16),
            Dtype::I8 => Some(Format::I8),
            Dtype::U8 => Some(Format::U8),
            _ => None,
        }
    }
}

/// A tensor's dimensions, stored inline (at most [`MAX_RANK`]).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Dims {
    dims: [u64; MAX_RANK],
    rank: u8,
}

impl Dims {
    /// Dimensions from a slice; `None` if there are more than [`MAX_RANK`].
    pub fn new(dims: &[u64]) -> Option<Dims> {
        let mut d = Dims::default();
        for &x in dims {
            d.push(x).ok()?;
        }
        Some(d)
    }

    fn push(&mut self, x: u64) -> core::result::Result<(), ()> {
        let slot = self.dims.get_mut(self.rank as usize).ok_or(())?;
        *slot = x;
        self.rank += 1;
        Ok(())
    }

    /// The dimensions, outermost first.
    pub fn as_slice(&self) -> &[u64] {
        &self.dims[..self.rank as usize]
    }

    /// Number of elements, or `None` on overflow.
    pub fn elements(&self) -> Option<u64> {
        self.as_slice()
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
    }
}

impl core::fmt::Debug for Dims {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// A tensor entry exactly as the header describes it, after per-entry validation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawTensor<'a> {
    pub(crate) name: JsonStr<'a>,
    pub(crate) dtype: Dtype,
    pub(crate) shape: Dims,
    /// Byte range in the data section.
    pub(crate) start: u64,
    pub(crate) end: u64,
    /// Where the entry's `{...}` starts in the header, to parse it again without a search.
    pub(crate) entry_offset: usize,
}

impl RawTensor<'_> {
    fn len(&self) -> u64 {
        self.end - self.start
    }
}

/// Copies a (possibly escaped) header string into an error [`Name`], truncating long ones.
pub(crate) fn name_of(s: JsonStr<'_>) -> Name {
    // Room for NAME_CAPACITY bytes plus one more char, so `Name::new` sees the truncation.
    let mut buf = [0u8; crate::error::NAME_CAPACITY + 4];
    let mut len = 0;
    for c in s.chars() {
        let n = c.len_utf8();
        let Some(dst) = buf.get_mut(len..len + n) else {
            break;
        };
        c.encode_utf8(dst);
        len += n;
    }
    Name::new(core::str::from_utf8(&buf[..len]).unwrap_or(""))
}

/// One top-level header entry.
enum Entry<'a> {
    Tensor(RawTensor<'a>),
    /// Raw text of the `__metadata__` object (`None` when it is `null`).
    Metadata(Option<&'a str>),
}

/// Walks the top-level header object, validating syntax and each tensor entry on its own
/// (dtype, shape, size, offsets within `data_len`). Relations between entries (overlaps,
/// duplicates) are checked by [`SafeTensors::parse`].
struct Entries<'a> {
    scanner: Scanner<'a>,
    data_len: u64,
    started: bool,
    done: bool,
}

impl<'a> Entries<'a> {
    fn new(header: &'a str, data_len: u64) -> Self {
        Entries {
            scanner: Scanner::new(header),
            data_len,
            started: false,
            done: false,
        }
    }

    fn step(&mut self) -> Result<Option<Entry<'a>>> {
        let s = &mut self.scanner;
        if !self.started {
            self.started = true;
            s.expect(b'{', "'{' starting the header object")?;
            if s.eat(b'}') {
                return self.finish();
            }
        } else if !s.eat(b',') {
            s.expect(b'}', "',' or '}'")?;
            return self.finish();
        }
        let key = s.string()?;
        s.expect(b':', "':'")?;
        if key == METADATA_KEY {
            return Ok(Some(Entry::Metadata(metadata_object(s)?)));
        }
        tensor_info(s, key, self.data_len).map(|t| Some(Entry::Tensor(t)))
    }

    fn finish(&mut self) -> Result<Option<Entry<'a>>> {
        if !self.scanner.at_end() {
            return Err(self.scanner.error("end of header after the object"));
        }
        Ok(None)
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<Entry<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = self.step();
        if !matches!(r, Ok(Some(_))) {
            self.done = true;
        }
        r.transpose()
    }
}

/// Validates `{ "k": "v", ... }` or `null`; returns the object's raw text.
fn metadata_object<'a>(s: &mut Scanner<'a>) -> Result<Option<&'a str>> {
    if s.null() {
        return Ok(None);
    }
    s.expect(b'{', "'{' or null for __metadata__")?;
    let start = s.pos() - 1;
    if !s.eat(b'}') {
        loop {
            s.string()?;
            s.expect(b':', "':'")?;
            s.skip_ws();
            if s.peek() != Some(b'"') {
                return Err(s.error("string value (all __metadata__ values are strings)"));
            }
            s.string()?;
            if s.eat(b',') {
                continue;
            }
            s.expect(b'}', "',' or '}'")?;
            break;
        }
    }
    Ok(s.text_between(start))
}

/// Validates one tensor info object `{ "dtype": ..., "shape": [...], "data_offsets": [a, b] }`
/// (other keys are skipped, as the reference reader does).
fn tensor_info<'a>(s: &mut Scanner<'a>, name: JsonStr<'a>, data_len: u64) -> Result<RawTensor<'a>> {
    s.skip_ws();
    let entry_offset = s.pos();
    s.expect(b'{', "'{' starting a tensor entry")?;
    let mut dtype: Option<Dtype> = None;
    let mut shape: Option<Dims> = None;
    let mut offsets: Option<(u64, u64)> = None;
    let tensor = name_of(name);
    if !s.eat(b'}') {
        loop {
            let field = s.string()?;
            s.expect(b':', "':'")?;
            if field == "dtype" {
                if dtype.is_some() {
                    return Err(s.error("no duplicate \"dtype\""));
                }
                let d = s.string()?;
                dtype = Some(Dtype::from_json(d).ok_or(Error::UnknownDtype { tensor })?);
            } else if field == "shape" {
                if shape.is_some() {
                    return Err(s.error("no duplicate \"shape\""));
                }
                let mut dims = Dims::default();
                s.expect(b'[', "'[' starting the shape")?;
                if !s.eat(b']') {
                    loop {
                        let d = s.uint()?;
                        dims.push(d).map_err(|()| Error::BadShape { tensor })?;
                        if s.eat(b',') {
                            continue;
                        }
                        s.expect(b']', "',' or ']'")?;
                        break;
                    }
                }
                shape = Some(dims);
            } else if field == "data_offsets" {
                if offsets.is_some() {
                    return Err(s.error("no duplicate \"data_offsets\""));
                }
                s.expect(b'[', "'[' starting data_offsets")?;
                let a = s.uint()?;
                s.expect(b',', "',' between the two data_offsets")?;
                let b = s.uint()?;
                s.expect(b']', "']' after the two data_offsets")?;
                offsets = Some((a, b));
            } else {
                s.skip_value()?;
            }
            if s.eat(b',') {
                continue;
            }
            s.expect(b'}', "',' or '}'")?;
            break;
        }
    }
    let dtype = dtype.ok_or_else(|| s.error("a \"dtype\" field in the tensor entry"))?;
    let shape = shape.ok_or_else(|| s.error("a \"shape\" field in the tensor entry"))?;
    let (start, end) =
        offsets.ok_or_else(|| s.error("a \"data_offsets\" field in the tensor entry"))?;
    let bits = shape
        .elements()
        .and_then(|n| n.checked_mul(dtype.bits()))
        .ok_or(Error::BadShape { tensor })?;
    if bits % 8 != 0 {
        // Sub-byte dtypes must fill whole bytes.
        return Err(Error::BadShape { tensor });
    }
    if start > end || end > data_len || end - start != bits / 8 {
        return Err(Error::BadOffsets { tensor });
    }
    Ok(RawTensor {
        name,
        dtype,
        shape,
        start,
        end,
        entry_offset,
    })
}

/// Most sorted runs of names merged by the scratch-free duplicate check.
const MAX_NAME_RUNS: usize = 8;

/// Where the strictly increasing runs of tensor names start, in header order.
#[derive(Default)]
struct NameRuns<'a> {
    /// Index (in header order) of the first tensor of each of the first runs.
    starts: [usize; MAX_NAME_RUNS],
    /// Number of runs (may exceed `MAX_NAME_RUNS`).
    count: usize,
    /// Number of tensors seen.
    total: usize,
    last: Option<JsonStr<'a>>,
}

impl<'a> NameRuns<'a> {
    fn push(&mut self, name: JsonStr<'a>) {
        let continues = self
            .last
            .is_some_and(|l| l.cmp_decoded(&name) == Ordering::Less);
        if !continues {
            if let Some(start) = self.starts.get_mut(self.count) {
                *start = self.total;
            }
            self.count += 1;
        }
        self.last = Some(name);
        self.total += 1;
    }

    /// `(first index, length)` of run `k`; empty for runs that do not exist.
    fn bounds(&self, k: usize) -> (usize, usize) {
        if k >= self.count.min(MAX_NAME_RUNS) {
            return (0, 0);
        }
        let start = self.starts[k];
        let end = if k + 1 < self.count.min(MAX_NAME_RUNS) {
            self.starts[k + 1]
        } else {
            self.total
        };
        (start, end - start)
    }
}

/// Scratch space for [`SafeTensors::parse_with_scratch`]: one slot per tensor and per
/// metadata entry lets the relations between entries (overlaps, duplicate names and keys,
/// packed keys to tensors) be checked by sorting, in O(n log n), instead of by rescanning the
/// header.
#[derive(Debug, Clone, Copy, Default)]
pub struct TensorSlot {
    start: u64,
    end: u64,
    name_offset: u32,
    name_len: u32,
    entry_offset: u32,
    name_escaped: bool,
}

/// Smallest possible header entry (a metadata entry `"":""` plus a separator), so
/// `header_len / MIN_ENTRY_BYTES + 1` slots always suffice.
pub const MIN_ENTRY_BYTES: usize = 6;

/// A validated safetensors file borrowed from the caller's bytes.
///
/// [`SafeTensors::parse`] checks everything once; tensor lookups then rescan the (already
/// validated) header text without allocating and cannot fail for structural reasons.
#[derive(Debug, Clone, Copy)]
pub struct SafeTensors<'a> {
    header: &'a str,
    data: &'a [u8],
    data_offset: usize,
    tensor_count: usize,
    /// Whether any `goldcrest.tensor.*` key exists (lookups skip the metadata scan if not).
    has_packed: bool,
    metadata: Metadata<'a>,
}

impl<'a> SafeTensors<'a> {
    /// Parses and validates a whole safetensors file.
    ///
    /// Cost: one pass when tensors appear in the header in data order (as the `safetensors`
    /// crate and goldcrest write them) and their names form at most 8 sorted runs (one per
    /// dtype, for those writers); metadata keys are compared pairwise and each packed key costs
    /// one header scan. `docs/format.md` has the details and measurements. Hosts with memory to
    /// spare use [`SafeTensors::parse_with_scratch`].
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        Self::parse_impl(bytes, &mut [])
    }

    /// Like [`SafeTensors::parse`], but checks overlaps, duplicate names and keys, and packed
    /// keys by sorting `scratch` (O(n log n)): one slot per tensor plus one per metadata entry.
    /// With fewer slots it falls back to the scratch-free checks for what does not fit;
    /// `header_len / MIN_ENTRY_BYTES + 1` slots are always enough.
    pub fn parse_with_scratch(bytes: &'a [u8], scratch: &mut [TensorSlot]) -> Result<Self> {
        Self::parse_impl(bytes, scratch)
    }

    /// Reads the 8-byte header length and returns `(header_len, data_offset)`, checked
    /// against the input's length and [`MAX_HEADER_LEN`] (use it to size the scratch).
    pub fn header_bounds(bytes: &[u8]) -> Result<(usize, usize)> {
        let Some(prefix) = bytes.first_chunk::<8>() else {
            return Err(Error::Truncated {
                needed: 8,
                available: bytes.len() as u64,
            });
        };
        let declared = u64::from_le_bytes(*prefix);
        let available = bytes.len() as u64 - 8;
        if !(2..=MAX_HEADER_LEN).contains(&declared) || declared > available {
            return Err(Error::HeaderLength { declared });
        }
        // declared <= bytes.len(), so it fits usize.
        let n = declared as usize;
        Ok((n, 8 + n))
    }

    fn parse_impl(bytes: &'a [u8], scratch: &mut [TensorSlot]) -> Result<Self> {
        let (n, data_offset) = Self::header_bounds(bytes)?;
        let header = core::str::from_utf8(&bytes[8..data_offset]).map_err(|e| Error::Json {
            offset: u32::try_from(e.valid_up_to()).unwrap_or(u32::MAX),
            expected: "UTF-8",
        })?;
        debug_assert_eq!(header.len(), n);
        let data = &bytes[data_offset..];
        let data_len = data.len() as u64;

        // Pass 1: syntax and every entry on its own; collect what relations need.
        let mut count = 0usize;
        let mut covered = 0u64;
        let mut in_order = true;
        let mut prev_end = 0u64;
        let mut runs = NameRuns::default();
        let mut metadata: Option<Metadata<'a>> = None;
        for entry in Entries::new(header, data_len) {
            match entry? {
                Entry::Metadata(object) => {
                    if metadata.is_some() {
                        return Err(Error::DuplicateTensor {
                            tensor: Name::new(METADATA_KEY),
                        });
                    }
                    metadata = Some(Metadata::from_object(object));
                }
                Entry::Tensor(t) => {
                    if let Some(slot) = scratch.get_mut(count) {
                        *slot = TensorSlot {
                            start: t.start,
                            end: t.end,
                            name_offset: offset_in(header, t.name.raw()),
                            name_len: t.name.raw().len() as u32,
                            entry_offset: t.entry_offset as u32,
                            name_escaped: t.name.has_escapes(),
                        };
                    }
                    count += 1;
                    // Each length is at most data_len, so this cannot overflow for any header
                    // that fits in memory; checked anyway.
                    covered = covered.checked_add(t.len()).ok_or(Error::BadOffsets {
                        tensor: name_of(t.name),
                    })?;
                    in_order &= t.start == prev_end;
                    prev_end = t.end;
                    runs.push(t.name);
                }
            }
        }
        let mut file = SafeTensors {
            header,
            data,
            data_offset,
            tensor_count: count,
            has_packed: false,
            metadata: metadata.unwrap_or(Metadata::EMPTY),
        };

        // Pass 2: relations between tensors.
        if in_order && prev_end != data_len {
            return Err(Error::DataGap { covered, data_len });
        }
        let (tensor_slots, key_slots) = if count <= scratch.len() {
            let (t, k) = scratch.split_at_mut(count);
            (Some(t), k)
        } else {
            (None, &mut [][..])
        };
        match tensor_slots {
            Some(slots) => {
                if !in_order {
                    check_partition_sorted(header, slots, data_len, covered)?;
                }
                check_names_sorted(header, slots)?;
                // Pass 3: goldcrest conventions in the metadata.
                meta::check_version(&file.metadata)?;
                let keys = file.metadata.len();
                match key_slots.get_mut(..keys) {
                    Some(key_slots) => meta::check_keys_sorted(&file, slots, key_slots)?,
                    None => meta::check_keys(&file)?,
                }
            }
            None => {
                if !in_order {
                    file.check_partition_by_walk(data_len, covered)?;
                }
                file.check_names_without_scratch(&runs)?;
                meta::check_version(&file.metadata)?;
                meta::check_keys(&file)?;
            }
        }
        file.has_packed = file
            .metadata
            .iter()
            .any(|(k, _)| k.strip_prefix(meta::TENSOR_KEY_PREFIX).is_some());
        Ok(file)
    }

    /// Whether the file has packed tensors (`goldcrest.tensor.*` keys).
    pub fn has_packed(&self) -> bool {
        self.has_packed
    }

    fn raw_tensors(&self) -> impl Iterator<Item = RawTensor<'a>> + 'a {
        // Validated in `parse`, so no entry fails here; an error would end the iteration.
        Entries::new(self.header, self.data.len() as u64)
            .map_while(|e| match e {
                Ok(Entry::Tensor(t)) => Some(Some(t)),
                Ok(Entry::Metadata(_)) => Some(None),
                Err(_) => None,
            })
            .flatten()
    }

    /// Parses the (validated) tensor entry of a slot again, from its recorded offset.
    pub(crate) fn raw_at(&self, slot: &TensorSlot) -> Option<RawTensor<'a>> {
        let mut s = Scanner::at(self.header, slot.entry_offset as usize);
        tensor_info(&mut s, slot_name(self.header, slot), self.data.len() as u64).ok()
    }

    pub(crate) fn find_raw(&self, name: &str) -> Option<RawTensor<'a>> {
        self.raw_tensors().find(|t| t.name == name)
    }

    pub(crate) fn find_raw_chars(&self, name: super::json::Chars<'_>) -> Option<RawTensor<'a>> {
        self.raw_tensors().find(|t| t.name.chars().eq(name.clone()))
    }

    /// Without scratch: follow the chain of tensors from offset 0, one header scan per step.
    ///
    /// Each scan picks the one non-empty tensor starting where the chain ends, and rejects any
    /// tensor starting strictly inside the chain's last interval (an overlap, or an empty tensor
    /// off the boundaries, which the reference reader also refuses). Every tensor starts inside
    /// the data section, so after the walk each one is on the chain or has been rejected; a
    /// point where nothing starts is a byte no tensor covers.
    fn check_partition_by_walk(&self, data_len: u64, covered: u64) -> Result<()> {
        let (mut prev, mut cur) = (0u64, 0u64);
        loop {
            let mut next: Option<RawTensor<'a>> = None;
            for t in self.raw_tensors() {
                let inside_last = prev < t.start && t.start < cur;
                let second_at_cur = t.start == cur && t.len() > 0 && next.is_some();
                if inside_last || second_at_cur {
                    return Err(Error::BadOffsets {
                        tensor: name_of(t.name),
                    });
                }
                if t.start == cur && t.len() > 0 {
                    next = Some(t);
                }
            }
            match next {
                Some(t) => (prev, cur) = (cur, t.end),
                None if cur == data_len => return Ok(()),
                None => return Err(Error::DataGap { covered, data_len }),
            }
        }
    }

    /// Without scratch. Writers list names in a few sorted runs (the `safetensors` crate sorts
    /// by dtype, then name), so duplicates are found by merging up to [`MAX_NAME_RUNS`] runs
    /// in one pass per run; files with more runs fall back to comparing every pair (one
    /// header scan per tensor).
    fn check_names_without_scratch(&self, runs: &NameRuns<'a>) -> Result<()> {
        match runs.count {
            0 | 1 => Ok(()),
            n if n <= MAX_NAME_RUNS => self.check_names_merging(runs),
            _ => self.check_names_pairwise(),
        }
    }

    fn check_names_merging(&self, runs: &NameRuns<'a>) -> Result<()> {
        let mut heads: [_; MAX_NAME_RUNS] = core::array::from_fn(|k| {
            let (start, len) = runs.bounds(k);
            self.raw_tensors()
                .skip(start)
                .take(len)
                .map(|t| t.name)
                .peekable()
        });
        let mut last: Option<JsonStr<'a>> = None;
        loop {
            let mut best: Option<(usize, JsonStr<'a>)> = None;
            for (k, head) in heads.iter_mut().enumerate() {
                if let Some(&name) = head.peek() {
                    let smaller = best.is_none_or(|(_, b)| name.cmp_decoded(&b) == Ordering::Less);
                    if smaller {
                        best = Some((k, name));
                    }
                }
            }
            let Some((k, name)) = best else {
                return Ok(());
            };
            if let Some(head) = heads.get_mut(k) {
                head.next();
            }
            if last.is_some_and(|l| l == name) {
                return Err(Error::DuplicateTensor {
                    tensor: name_of(name),
                });
            }
            last = Some(name);
        }
    }

    fn check_names_pairwise(&self) -> Result<()> {
        for (i, t) in self.raw_tensors().enumerate() {
            let dup = self.raw_tensors().skip(i + 1).any(|u| u.name == t.name);
            if dup {
                return Err(Error::DuplicateTensor {
                    tensor: name_of(t.name),
                });
            }
        }
        Ok(())
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensor_count
    }

    /// Whether the file holds no tensors.
    pub fn is_empty(&self) -> bool {
        self.tensor_count == 0
    }

    /// The tensor called `name`, or [`Error::MissingTensor`] naming it.
    pub fn tensor(&self, name: &str) -> Result<TensorView<'a>> {
        let raw = self.find_raw(name).ok_or(Error::MissingTensor {
            tensor: Name::new(name),
        })?;
        TensorView::from_raw(self, raw)
    }

    /// The entries called `names[0]`, `names[1]`, ... found in one pass over the header
    /// ([`SafeTensors::tensor`] scans the header once per name); `None` where absent. For
    /// models that resolve a layer's tensors on every step.
    pub(crate) fn find_raws<const N: usize>(
        &self,
        names: &[&str; N],
    ) -> [Option<RawTensor<'a>>; N] {
        let mut found: [Option<RawTensor<'a>>; N] = [None; N];
        let mut left = N;
        for raw in self.raw_tensors() {
            if let Some(slot) = names
                .iter()
                .position(|n| raw.name == *n)
                .and_then(|i| found.get_mut(i))
                && slot.is_none()
            {
                *slot = Some(raw);
                left -= 1;
                if left == 0 {
                    break;
                }
            }
        }
        found
    }

    /// Whether a tensor called `name` exists.
    pub fn contains(&self, name: &str) -> bool {
        self.find_raw(name).is_some()
    }

    /// Every tensor, in header order.
    pub fn tensors(&self) -> impl Iterator<Item = TensorView<'a>> + 'a {
        let file = *self;
        self.raw_tensors()
            .filter_map(move |raw| TensorView::from_raw(&file, raw).ok())
    }

    /// The `__metadata__` map (empty if the file has none).
    pub fn metadata(&self) -> Metadata<'a> {
        self.metadata
    }

    /// The JSON header text.
    pub fn header(&self) -> &'a str {
        self.header
    }

    /// The data section (all tensor bytes).
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// Offset of the data section from the start of the file (8 + header length). Goldcrest's
    /// writer makes it a multiple of 8.
    pub fn data_offset(&self) -> usize {
        self.data_offset
    }

    pub(crate) fn bytes_of(&self, raw: &RawTensor<'_>) -> &'a [u8] {
        // Offsets were checked against the data length in `parse`.
        self.data
            .get(raw.start as usize..raw.end as usize)
            .unwrap_or(&[])
    }
}

/// Byte offset of `inner` (a subslice of `outer`) within `outer`.
pub(crate) fn offset_in(outer: &str, inner: &str) -> u32 {
    (inner.as_ptr() as usize).wrapping_sub(outer.as_ptr() as usize) as u32
}

impl TensorSlot {
    /// A slot naming a metadata key.
    pub(crate) fn for_key(header: &str, key: JsonStr<'_>) -> TensorSlot {
        TensorSlot {
            name_offset: offset_in(header, key.raw()),
            name_len: key.raw().len() as u32,
            name_escaped: key.has_escapes(),
            ..TensorSlot::default()
        }
    }
}

pub(crate) fn slot_name<'a>(header: &'a str, slot: &TensorSlot) -> JsonStr<'a> {
    let start = slot.name_offset as usize;
    let raw = header
        .get(start..start + slot.name_len as usize)
        .unwrap_or("");
    JsonStr::from_parts(raw, slot.name_escaped)
}

/// With scratch: sort by offsets, then each tensor must start where the previous ended.
fn check_partition_sorted(
    header: &str,
    slots: &mut [TensorSlot],
    data_len: u64,
    covered: u64,
) -> Result<()> {
    slots.sort_unstable_by_key(|s| (s.start, s.end));
    let mut end = 0u64;
    for s in slots.iter() {
        match s.start.cmp(&end) {
            Ordering::Less => {
                return Err(Error::BadOffsets {
                    tensor: name_of(slot_name(header, s)),
                });
            }
            Ordering::Greater => return Err(Error::DataGap { covered, data_len }),
            Ordering::Equal => end = s.end,
        }
    }
    if end != data_len {
        return Err(Error::DataGap { covered, data_len });
    }
    Ok(())
}

/// With scratch: sort by decoded name; duplicates end up adjacent.
fn check_names_sorted(header: &str, slots: &mut [TensorSlot]) -> Result<()> {
    slots.sort_unstable_by(|a, b| slot_name(header, a).cmp_decoded(&slot_name(header, b)));
    for pair in slots.windows(2) {
        let (a, b) = (slot_name(header, &pair[0]), slot_name(header, &pair[1]));
        if a == b {
            return Err(Error::DuplicateTensor { tensor: name_of(a) });
        }
    }
    Ok(())
}
