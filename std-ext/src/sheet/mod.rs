//! Spreadsheet readers and token counting for the encoder in [`goldcrest_alloc::sheet`].
//!
//! xlsx/xlsm (values, number-format strings, styles, merged cells; streamed cell by cell),
//! xls (values, merged cells), ods and xlsb (values) through `calamine`; csv through `csv`.
//! Zip containers are checked before decompression: the declared uncompressed total must stay
//! under [`ReadOptions::max_decompressed_bytes`], which stops zip bombs. Every sheet is capped at
//! [`ReadOptions::max_cells`] non-empty cells, so memory stays bounded on huge sheets.

pub mod tokens;

pub use tokens::TokenCounter;

use calamine::{Data, DataRef, Reader, Sheets, open_workbook_auto_from_rs};
use goldcrest_alloc::sheet::numfmt::{general, render};
use goldcrest_alloc::sheet::{
    Cell, CellKind, CellRange, MAX_COLS, MAX_ROWS, Sheet, SheetError, Style,
};
use std::fmt;
use std::io::{Cursor, Read, Seek};
use std::path::Path;

/// Limits applied while reading.
#[derive(Debug, Clone, Copy)]
pub struct ReadOptions {
    /// Largest input file accepted.
    pub max_file_bytes: u64,
    /// Largest total uncompressed size of a zip container (xlsx, ods).
    pub max_decompressed_bytes: u64,
    /// Largest number of non-empty cells per sheet.
    pub max_cells: usize,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            max_file_bytes: 256 << 20,
            max_decompressed_bytes: 1 << 30,
            max_cells: 5_000_000,
        }
    }
}

/// Why a workbook could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The file could not be opened or read.
    Io(std::io::Error),
    /// The file is larger than [`ReadOptions::max_file_bytes`].
    FileTooLarge {
        /// File size.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// A zip container would decompress to more than the limit (zip bomb guard).
    DecompressedTooLarge {
        /// Declared uncompressed total.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// The file is encrypted or password protected.
    Encrypted,
    /// The bytes are not a workbook this reader understands.
    Format(String),
    /// A sheet exceeded a limit of the encoder model.
    Sheet(SheetError),
    /// No sheet of that name.
    NoSuchSheet(String),
    /// One sheet could not be read; the others may be fine (read it alone with `only`).
    InSheet {
        /// Sheet name.
        sheet: String,
        /// What went wrong.
        source: Box<ReadError>,
    },
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "cannot read the file: {e}"),
            ReadError::FileTooLarge { bytes, limit } => {
                write!(f, "file is {bytes} bytes, more than the limit of {limit}")
            }
            ReadError::DecompressedTooLarge { bytes, limit } => write!(
                f,
                "archive would decompress to {bytes} bytes, more than the limit of {limit} (zip bomb?)"
            ),
            ReadError::Encrypted => f.write_str(
                "workbook is encrypted or password protected; save an unprotected copy first",
            ),
            ReadError::Format(m) => write!(f, "not a readable spreadsheet: {m}"),
            ReadError::Sheet(e) => write!(f, "{e}"),
            ReadError::NoSuchSheet(n) => write!(f, "workbook has no sheet named '{n}'"),
            ReadError::InSheet { sheet, source } => write!(f, "sheet '{sheet}': {source}"),
        }
    }
}

impl std::error::Error for ReadError {}

impl From<std::io::Error> for ReadError {
    fn from(e: std::io::Error) -> Self {
        ReadError::Io(e)
    }
}

impl From<SheetError> for ReadError {
    fn from(e: SheetError) -> Self {
        ReadError::Sheet(e)
    }
}

/// Reads every sheet of a workbook file (or only `only`), choosing the reader by content.
pub fn read_path(
    path: &Path,
    only: Option<&str>,
    opts: &ReadOptions,
) -> Result<Vec<Sheet>, ReadError> {
    let meta = std::fs::metadata(path)?;
    if meta.len() > opts.max_file_bytes {
        return Err(ReadError::FileTooLarge {
            bytes: meta.len(),
            limit: opts.max_file_bytes,
        });
    }
    let bytes = std::fs::read(path)?;
    let is_csv = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("csv") || e.eq_ignore_ascii_case("tsv"));
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("Sheet1")
        .to_string();
    if is_csv {
        let delim = if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("tsv"))
        {
            b'\t'
        } else {
            b','
        };
        return Ok(vec![read_csv(&bytes, &name, delim, opts)?]);
    }
    read_bytes(&bytes, only, opts)
}

const OLE_MAGIC: [u8; 8] = [0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];

/// Reads a workbook from memory (xlsx, xlsm, xlsb, xls, ods).
pub fn read_bytes(
    bytes: &[u8],
    only: Option<&str>,
    opts: &ReadOptions,
) -> Result<Vec<Sheet>, ReadError> {
    if bytes.len() as u64 > opts.max_file_bytes {
        return Err(ReadError::FileTooLarge {
            bytes: bytes.len() as u64,
            limit: opts.max_file_bytes,
        });
    }
    if bytes.starts_with(b"PK") {
        check_zip(bytes, opts)?;
    } else if bytes.starts_with(&OLE_MAGIC) && ole_is_encrypted_package(bytes) {
        // An encrypted xlsx is an OLE container holding "EncryptedPackage".
        return Err(ReadError::Encrypted);
    }
    let cursor = Cursor::new(bytes);
    let workbook = open_workbook_auto_from_rs(cursor).map_err(calamine_error)?;
    match workbook {
        Sheets::Xlsx(mut x) => read_xlsx(&mut x, only, opts),
        other => read_other(other, only, opts),
    }
}

fn ole_is_encrypted_package(bytes: &[u8]) -> bool {
    // Directory entry names are UTF-16LE; a plain search is enough to recognise the stream.
    let needle: Vec<u8> = "EncryptedPackage"
        .encode_utf16()
        .flat_map(|u| u.to_le_bytes())
        .collect();
    bytes.windows(needle.len()).any(|w| w == needle.as_slice())
}

fn calamine_error(e: calamine::Error) -> ReadError {
    let msg = e.to_string();
    if msg.to_ascii_lowercase().contains("password") || msg.to_ascii_lowercase().contains("encrypt")
    {
        ReadError::Encrypted
    } else {
        ReadError::Format(msg)
    }
}

/// Refuses zip containers that decompress to more than the limit. The declared sizes are
/// checked first (cheap); then every entry is actually inflated into a counting sink with the
/// remaining budget, because a hostile archive can declare small sizes and inflate far more,
/// and calamine keeps some parts (shared strings) whole in memory.
fn check_zip(bytes: &[u8], opts: &ReadOptions) -> Result<(), ReadError> {
    let broken = |e: zip::result::ZipError| ReadError::Format(format!("broken zip container: {e}"));
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(broken)?;
    let limit = opts.max_decompressed_bytes;
    let too_large = |total: u64| ReadError::DecompressedTooLarge {
        bytes: total,
        limit,
    };
    if let Some(total) = archive.decompressed_size() {
        let total = u64::try_from(total).unwrap_or(u64::MAX);
        if total > limit {
            return Err(too_large(total));
        }
    }
    let mut total: u64 = 0;
    for i in 0..archive.len() {
        let entry = archive.by_index(i).map_err(broken)?;
        if entry.encrypted() {
            return Err(ReadError::Encrypted);
        }
        let budget = limit - total;
        let n = std::io::copy(&mut entry.take(budget + 1), &mut std::io::sink())
            .map_err(|e| ReadError::Format(format!("broken zip entry: {e}")))?;
        total += n;
        if n > budget {
            return Err(too_large(total));
        }
    }
    Ok(())
}

fn style_bits(s: &calamine::Style) -> Style {
    let mut bits = 0u8;
    if s.font.as_ref().is_some_and(|f| f.is_bold()) {
        bits |= Style::BOLD;
    }
    if let Some(fill) = &s.fill
        && fill.is_visible()
    {
        let white = fill
            .get_color()
            .is_some_and(|c| c.red == 255 && c.green == 255 && c.blue == 255);
        if !white {
            bits |= Style::FILL;
        }
    }
    if let Some(b) = &s.borders {
        for (border, flag) in [
            (&b.top, Style::TOP),
            (&b.bottom, Style::BOTTOM),
            (&b.left, Style::LEFT),
            (&b.right, Style::RIGHT),
        ] {
            if border.is_visible() {
                bits |= flag;
            }
        }
    }
    Style(bits)
}

fn nfs_of(s: Option<&calamine::Style>) -> Option<String> {
    s.and_then(|s| s.number_format.as_ref())
        .map(|n| n.format_code.clone())
}

/// Display text and kind of a value, rendered through `nfs` when there is one.
fn display(value: &DataRef<'_>, nfs: Option<&str>) -> Option<(String, CellKind)> {
    let fmt_num = |v: f64| match nfs {
        Some(n) => render(v, n, false),
        None => general(v),
    };
    Some(match value {
        DataRef::Empty => return None,
        DataRef::Int(i) => (fmt_num(*i as f64), CellKind::Number),
        DataRef::Float(f) => (fmt_num(*f), CellKind::Number),
        DataRef::String(s) => (s.clone(), CellKind::Text),
        DataRef::SharedString(s) => ((*s).to_string(), CellKind::Text),
        DataRef::Bool(b) => (
            (if *b { "TRUE" } else { "FALSE" }).to_string(),
            CellKind::Bool,
        ),
        DataRef::DateTime(d) => {
            let kind = if d.is_duration() {
                CellKind::Duration
            } else {
                CellKind::DateTime
            };
            // Without the workbook's format (xls, xlsb) pick the shortest faithful ISO form.
            let v = d.as_f64();
            let code = nfs.unwrap_or(if d.is_duration() {
                "[h]:mm:ss"
            } else if (0.0..1.0).contains(&v) {
                "hh:mm:ss"
            } else if v.fract() == 0.0 {
                "yyyy-mm-dd"
            } else {
                "yyyy-mm-dd hh:mm:ss"
            });
            (render(d.as_f64(), code, false), kind)
        }
        DataRef::DateTimeIso(s) => (s.clone(), CellKind::DateTime),
        DataRef::DurationIso(s) => (s.clone(), CellKind::Duration),
        DataRef::Error(e) => (e.to_string(), CellKind::Error),
    })
}

fn data_ref(d: &Data) -> DataRef<'_> {
    match d {
        Data::Int(i) => DataRef::Int(*i),
        Data::Float(f) => DataRef::Float(*f),
        Data::String(s) => DataRef::SharedString(s),
        Data::Bool(b) => DataRef::Bool(*b),
        Data::DateTime(d) => DataRef::DateTime(*d),
        Data::DateTimeIso(s) => DataRef::DateTimeIso(s.clone()),
        Data::DurationIso(s) => DataRef::DurationIso(s.clone()),
        Data::Error(e) => DataRef::Error(e.clone()),
        Data::Empty => DataRef::Empty,
    }
}

fn push_cell(cells: &mut Vec<Cell>, cell: Cell, opts: &ReadOptions) -> Result<(), ReadError> {
    if cells.len() >= opts.max_cells {
        return Err(SheetError::TooManyCells {
            limit: opts.max_cells,
        }
        .into());
    }
    if cell.row >= MAX_ROWS || cell.col >= MAX_COLS {
        return Err(SheetError::OutOfGrid {
            row: cell.row,
            col: cell.col,
        }
        .into());
    }
    cells.push(cell);
    Ok(())
}

/// [`push_cell`] for a reader's plain cell (no number format, default style) at a position
/// that may not fit the grid's `u32` coordinates.
fn push_plain_cell(
    cells: &mut Vec<Cell>,
    (row, col): (Option<u32>, Option<u32>),
    (text, kind): (String, CellKind),
    opts: &ReadOptions,
) -> Result<(), ReadError> {
    let (Some(row), Some(col)) = (row, col) else {
        return Err(SheetError::OutOfGrid {
            row: MAX_ROWS,
            col: MAX_COLS,
        }
        .into());
    };
    let cell = Cell {
        row,
        col,
        text,
        kind,
        number_format: None,
        style: Style::default(),
    };
    push_cell(cells, cell, opts)
}

fn merges(dims: Vec<calamine::Dimensions>) -> Vec<CellRange> {
    dims.into_iter()
        .map(|d| CellRange::new(d.start.0, d.start.1, d.end.0, d.end.1))
        .collect()
}

fn selected(names: Vec<String>, only: Option<&str>) -> Result<Vec<String>, ReadError> {
    match only {
        None => Ok(names),
        Some(n) if names.iter().any(|x| x == n) => Ok(vec![n.to_string()]),
        Some(n) => Err(ReadError::NoSuchSheet(n.to_string())),
    }
}

fn read_xlsx<RS: Read + Seek>(
    x: &mut calamine::Xlsx<RS>,
    only: Option<&str>,
    opts: &ReadOptions,
) -> Result<Vec<Sheet>, ReadError> {
    let mut out = Vec::new();
    for name in selected(x.sheet_names(), only)? {
        let sheet = read_xlsx_sheet(x, &name, opts).map_err(|e| ReadError::InSheet {
            sheet: name.clone(),
            source: Box::new(e),
        })?;
        out.push(sheet);
    }
    Ok(out)
}

fn read_xlsx_sheet<RS: Read + Seek>(
    x: &mut calamine::Xlsx<RS>,
    name: &str,
    opts: &ReadOptions,
) -> Result<Sheet, ReadError> {
    let name = name.to_string();
    {
        let merged = merges(
            x.merge_cells_by_sheet_name(&name)
                .map_err(|e| ReadError::Format(e.to_string()))?,
        );
        let mut cells = Vec::new();
        {
            let mut reader = x
                .worksheet_cells_reader(&name)
                .map_err(|e| ReadError::Format(e.to_string()))?;
            while let Some((cell, style_id)) = reader
                .next_cell_with_style_id()
                .map_err(|e| ReadError::Format(e.to_string()))?
            {
                let style = reader.styles().get(style_id);
                let nfs = nfs_of(style);
                let Some((text, kind)) = display(cell.get_value(), nfs.as_deref()) else {
                    continue;
                };
                let (row, col) = cell.get_position();
                push_cell(
                    &mut cells,
                    Cell {
                        row,
                        col,
                        text,
                        kind,
                        number_format: nfs,
                        style: style.map(style_bits).unwrap_or_default(),
                    },
                    opts,
                )?;
            }
        }
        Ok(Sheet::new(name, cells, merged)?)
    }
}

fn read_other<RS: Read + Seek>(
    mut wb: Sheets<RS>,
    only: Option<&str>,
    opts: &ReadOptions,
) -> Result<Vec<Sheet>, ReadError> {
    let mut out = Vec::new();
    for name in selected(wb.sheet_names(), only)? {
        let sheet = read_other_sheet(&mut wb, &name, opts).map_err(|e| ReadError::InSheet {
            sheet: name.clone(),
            source: Box::new(e),
        })?;
        out.push(sheet);
    }
    Ok(out)
}

fn read_other_sheet<RS: Read + Seek>(
    wb: &mut Sheets<RS>,
    name: &str,
    opts: &ReadOptions,
) -> Result<Sheet, ReadError> {
    let name = name.to_string();
    {
        let merged = match &*wb {
            Sheets::Xls(x) => merges(
                x.merge_cells_by_sheet_name(&name)
                    .map_err(|e| ReadError::Format(e.to_string()))?,
            ),
            _ => Vec::new(),
        };
        let range = wb.worksheet_range(&name).map_err(calamine_error)?;
        let (r0, c0) = range.start().unwrap_or((0, 0));
        let mut cells = Vec::new();
        for (r, c, v) in range.used_cells() {
            let Some(shown) = display(&data_ref(v), None) else {
                continue;
            };
            let at = (
                u32::try_from(r).ok().and_then(|r| r.checked_add(r0)),
                u32::try_from(c).ok().and_then(|c| c.checked_add(c0)),
            );
            push_plain_cell(&mut cells, at, shown, opts)?;
        }
        Ok(Sheet::new(name, cells, merged)?)
    }
}

/// Reads delimited text. Fields that parse as numbers become number cells (text kept as
/// written); everything else is text. Ragged rows are fine.
pub fn read_csv(
    bytes: &[u8],
    name: &str,
    delimiter: u8,
    opts: &ReadOptions,
) -> Result<Sheet, ReadError> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(bytes);
    let mut cells = Vec::new();
    for (row, rec) in rdr.byte_records().enumerate() {
        let rec = rec.map_err(|e| ReadError::Format(format!("csv: {e}")))?;
        for (col, field) in rec.iter().enumerate() {
            if field.is_empty() {
                continue;
            }
            let text = String::from_utf8_lossy(field).into_owned();
            let kind = if text.trim().parse::<f64>().is_ok_and(f64::is_finite) {
                CellKind::Number
            } else {
                CellKind::Text
            };
            let at = (u32::try_from(row).ok(), u32::try_from(col).ok());
            push_plain_cell(&mut cells, at, (text, kind), opts)?;
        }
    }
    Ok(Sheet::new(name, cells, Vec::new())?)
}

/// Counts tokens with OpenAI's cl100k_base, the paper's tokenizer.
pub fn count_tokens(text: &str) -> usize {
    bpe_openai::cl100k_base().count(text)
}
