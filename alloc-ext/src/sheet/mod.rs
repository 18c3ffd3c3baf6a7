//! Spreadsheet encodings for language models (SpreadsheetLLM, arXiv 2407.09025).
//!
//! The encoder core needs only `alloc`, so a firmware can hand it cells it read itself; the
//! file readers live in `goldcrest-std`. Everything works on a [`Sheet`]: a sparse, row-major
//! list of non-empty [`Cell`]s plus merged ranges.
//!
//! * [`vanilla`]: the paper's `A1,value|B1,value` matrix encoding;
//! * [`index`]: inverted-index translation, value -> exact rectangles, written as the paper's
//!   `(value|A1:B3)` tuples (or a JSON dictionary) and read back;
//! * [`numfmt`]: number-format renderer (display text) and the rule-based type recognizer;
//! * [`aggregate`]: data-format-aware aggregation (module 3);
//! * [`anchors`]: structural-anchor extraction with a reversible coordinate map (module 1);
//! * [`compress`]: SheetCompressor, the three modules chained, each switchable;
//! * [`detect`]: heuristic table detection and the EoB metric;
//! * [`prompt`]: table-detection and Chain-of-Spreadsheet prompt builders, and readers of a
//!   model's replies.
//!
//! ```
//! use goldcrest_alloc::sheet::{Cell, Sheet, compress::{compress, CompressOptions}};
//!
//! let mut cells = vec![Cell::text(0, 0, "Region"), Cell::text(0, 1, "Sales")];
//! for r in 1..=3 {
//!     cells.push(Cell::text(r, 0, "North"));
//!     cells.push(Cell::number(r, 1, format!("{},000", r), Some("#,##0")));
//! }
//! let sheet = Sheet::new("Q1", cells, vec![]).unwrap();
//! let out = compress(&sheet, &CompressOptions::default()).unwrap();
//! assert_eq!(out.text, "(Region|A1)\n(Sales|B1)\n(North|A2:A4)\n(#,##0|B2:B4)\n");
//! // Answers given in compressed coordinates map back to the sheet.
//! assert_eq!(out.map.unwrap().to_original(3, 1), Some((3, 1)));
//! ```

pub mod aggregate;
pub mod anchors;
pub mod compress;
pub mod detect;
pub mod index;
pub mod numfmt;
pub mod prompt;
pub mod vanilla;

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// Largest row count of an Excel sheet (rows are 0-based internally).
pub const MAX_ROWS: u32 = 1 << 20;
/// Largest column count of an Excel sheet.
pub const MAX_COLS: u32 = 1 << 14;

/// Errors of the sheet encoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SheetError {
    /// A cell or range lies outside the Excel grid (1,048,576 rows x 16,384 columns).
    OutOfGrid {
        /// 0-based row.
        row: u32,
        /// 0-based column.
        col: u32,
    },
    /// Text that should be an A1 address or range is not one.
    BadAddress(String),
    /// The sheet holds more cells than the caller's budget allows.
    TooManyCells {
        /// The budget that was exceeded.
        limit: usize,
    },
    /// The dense area an encoding would have to walk is larger than its budget.
    TooLarge {
        /// Cells in the dense area.
        area: u64,
        /// The budget.
        limit: u64,
    },
}

impl fmt::Display for SheetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SheetError::OutOfGrid { row, col } => write!(
                f,
                "cell (row {row}, column {col}) lies outside the 1048576 x 16384 sheet grid"
            ),
            SheetError::BadAddress(s) => write!(f, "'{s}' is not an A1 address or range"),
            SheetError::TooManyCells { limit } => {
                write!(f, "sheet has more than {limit} non-empty cells")
            }
            SheetError::TooLarge { area, limit } => write!(
                f,
                "the used range spans {area} cells, more than the limit of {limit} for this encoding"
            ),
        }
    }
}

impl core::error::Error for SheetError {}

/// What a cell holds; the display text is in [`Cell::text`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CellKind {
    /// A string.
    Text,
    /// A number (integer or float).
    Number,
    /// TRUE or FALSE.
    Bool,
    /// A date, time or date-time (a number with a date format).
    DateTime,
    /// A duration.
    Duration,
    /// A formula error such as `#DIV/0!`.
    Error,
}

/// Style bits the anchor heuristic looks at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Style(pub u8);

impl Style {
    /// Bold font.
    pub const BOLD: u8 = 1;
    /// A fill colour other than none/white.
    pub const FILL: u8 = 2;
    /// Top border.
    pub const TOP: u8 = 4;
    /// Bottom border.
    pub const BOTTOM: u8 = 8;
    /// Left border.
    pub const LEFT: u8 = 16;
    /// Right border.
    pub const RIGHT: u8 = 32;

    /// Whether every bit of `flag` is set.
    pub fn has(self, flag: u8) -> bool {
        self.0 & flag == flag
    }

    /// Number of the four borders that are set.
    pub fn borders(self) -> u32 {
        (self.0 & (Self::TOP | Self::BOTTOM | Self::LEFT | Self::RIGHT)).count_ones()
    }
}

/// One non-empty cell. Rows and columns are 0-based.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// 0-based row.
    pub row: u32,
    /// 0-based column.
    pub col: u32,
    /// The text a user sees (rendered through the number format where there is one).
    pub text: String,
    /// Value type.
    pub kind: CellKind,
    /// Number-format string (NFS) such as `#,##0.00`, when the reader knows one.
    pub number_format: Option<String>,
    /// Formatting bits.
    pub style: Style,
}

impl Cell {
    /// A text cell without number format or style.
    pub fn text(row: u32, col: u32, text: impl Into<String>) -> Cell {
        Cell {
            row,
            col,
            text: text.into(),
            kind: CellKind::Text,
            number_format: None,
            style: Style::default(),
        }
    }

    /// A number cell showing `text`, optionally with its number format.
    pub fn number(row: u32, col: u32, text: impl Into<String>, nfs: Option<&str>) -> Cell {
        Cell {
            row,
            col,
            text: text.into(),
            kind: CellKind::Number,
            number_format: nfs.map(String::from),
            style: Style::default(),
        }
    }
}

/// An inclusive rectangle of cells, 0-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CellRange {
    /// Top row.
    pub first_row: u32,
    /// Left column.
    pub first_col: u32,
    /// Bottom row (inclusive).
    pub last_row: u32,
    /// Right column (inclusive).
    pub last_col: u32,
}

impl CellRange {
    /// A range from its corners, normalised so first <= last.
    pub fn new(r0: u32, c0: u32, r1: u32, c1: u32) -> CellRange {
        CellRange {
            first_row: r0.min(r1),
            first_col: c0.min(c1),
            last_row: r0.max(r1),
            last_col: c0.max(c1),
        }
    }

    /// A single cell.
    pub fn cell(row: u32, col: u32) -> CellRange {
        CellRange::new(row, col, row, col)
    }

    /// Whether (row, col) lies inside.
    pub fn contains(&self, row: u32, col: u32) -> bool {
        (self.first_row..=self.last_row).contains(&row)
            && (self.first_col..=self.last_col).contains(&col)
    }

    /// Whether the two ranges share a cell.
    pub fn intersects(&self, o: &CellRange) -> bool {
        self.first_row <= o.last_row
            && o.first_row <= self.last_row
            && self.first_col <= o.last_col
            && o.first_col <= self.last_col
    }

    /// Rows spanned.
    pub fn height(&self) -> u64 {
        u64::from(self.last_row - self.first_row) + 1
    }

    /// Columns spanned.
    pub fn width(&self) -> u64 {
        u64::from(self.last_col - self.first_col) + 1
    }

    /// Cells covered.
    pub fn area(&self) -> u64 {
        self.height() * self.width()
    }

    /// Parses `B3` or `B3:F20` (also `$B$3`), case-insensitive.
    pub fn parse(s: &str) -> Result<CellRange, SheetError> {
        let bad = || SheetError::BadAddress(String::from(s));
        let mut parts = s.trim().split(':');
        let a = parts.next().ok_or_else(bad)?;
        let b = parts.next();
        if parts.next().is_some() {
            return Err(bad());
        }
        let (r0, c0) = parse_a1(a).ok_or_else(bad)?;
        let (r1, c1) = match b {
            Some(b) => parse_a1(b).ok_or_else(bad)?,
            None => (r0, c0),
        };
        Ok(CellRange::new(r0, c0, r1, c1))
    }
}

impl fmt::Display for CellRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_a1(f, self.first_row, self.first_col)?;
        if self.first_row != self.last_row || self.first_col != self.last_col {
            f.write_str(":")?;
            write_a1(f, self.last_row, self.last_col)?;
        }
        Ok(())
    }
}

/// Writes a 0-based column as letters (`0` -> `A`, `26` -> `AA`).
pub fn write_col(out: &mut impl fmt::Write, col: u32) -> fmt::Result {
    let mut buf = [0u8; 8];
    let mut n = u64::from(col) + 1;
    let mut i = buf.len();
    while n > 0 {
        i -= 1;
        let rem = ((n - 1) % 26) as u8;
        buf[i] = b'A' + rem;
        n = (n - 1) / 26;
    }
    for &b in &buf[i..] {
        out.write_char(char::from(b))?;
    }
    Ok(())
}

/// Writes a 0-based (row, col) as an A1 address.
pub fn write_a1(out: &mut impl fmt::Write, row: u32, col: u32) -> fmt::Result {
    write_col(out, col)?;
    write!(out, "{}", u64::from(row) + 1)
}

/// The A1 address of a 0-based (row, col).
pub fn a1(row: u32, col: u32) -> String {
    let mut s = String::new();
    // Writing into a String cannot fail.
    let _ = write_a1(&mut s, row, col);
    s
}

/// Parses an A1 address into a 0-based (row, col) inside the Excel grid.
pub fn parse_a1(s: &str) -> Option<(u32, u32)> {
    let s = s.trim();
    let bytes = s.as_bytes();
    let mut i = 0;
    if bytes.get(i) == Some(&b'$') {
        i += 1;
    }
    let mut col: u64 = 0;
    let letters_start = i;
    while let Some(&b) = bytes.get(i) {
        if !b.is_ascii_alphabetic() {
            break;
        }
        col = col * 26 + u64::from(b.to_ascii_uppercase() - b'A' + 1);
        if col > u64::from(MAX_COLS) {
            return None;
        }
        i += 1;
    }
    if i == letters_start {
        return None;
    }
    if bytes.get(i) == Some(&b'$') {
        i += 1;
    }
    let digits = &s[i..];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 8 {
        return None;
    }
    let row: u64 = digits.parse().ok()?;
    if row == 0 || row > u64::from(MAX_ROWS) {
        return None;
    }
    Some(((row - 1) as u32, (col - 1) as u32))
}

/// A worksheet: non-empty cells in row-major order plus merged ranges.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sheet {
    /// Sheet name.
    pub name: String,
    cells: Vec<Cell>,
    merged: Vec<CellRange>,
    dropped_merges: usize,
}

impl Sheet {
    /// Builds a sheet. Cells are sorted row-major; empty-text cells are dropped; when two cells
    /// share an address the later one wins. Merged ranges that overlap an earlier merged range
    /// are dropped (Excel refuses such files; we keep the first and count the rest, see
    /// [`Sheet::dropped_merges`]). Addresses outside the Excel grid are an error.
    pub fn new(
        name: impl Into<String>,
        mut cells: Vec<Cell>,
        merged: Vec<CellRange>,
    ) -> Result<Sheet, SheetError> {
        for c in &cells {
            if c.row >= MAX_ROWS || c.col >= MAX_COLS {
                return Err(SheetError::OutOfGrid {
                    row: c.row,
                    col: c.col,
                });
            }
        }
        cells.retain(|c| !c.text.is_empty());
        // Stable sort keeps input order among duplicates, so "later wins" is well defined.
        cells.sort_by_key(|c| (c.row, c.col));
        // In place, so a sheet of millions of cells is never held twice. `dedup_by` keeps the
        // earlier element; swapping first makes the later duplicate win.
        cells.dedup_by(|later, kept| {
            let same = later.row == kept.row && later.col == kept.col;
            if same {
                core::mem::swap(later, kept);
            }
            same
        });
        let deduped = cells;
        let mut kept: Vec<CellRange> = Vec::new();
        let mut dropped = 0;
        for m in merged {
            if m.last_row >= MAX_ROWS || m.last_col >= MAX_COLS {
                return Err(SheetError::OutOfGrid {
                    row: m.last_row,
                    col: m.last_col,
                });
            }
            if m.area() < 2 {
                continue;
            }
            if kept.iter().any(|k| k.intersects(&m)) {
                dropped += 1;
            } else {
                kept.push(m);
            }
        }
        Ok(Sheet {
            name: name.into(),
            cells: deduped,
            merged: kept,
            dropped_merges: dropped,
        })
    }

    /// Non-empty cells, row-major.
    pub fn cells(&self) -> &[Cell] {
        &self.cells
    }

    /// Merged ranges (non-overlapping).
    pub fn merged(&self) -> &[CellRange] {
        &self.merged
    }

    /// How many merged ranges were dropped because they overlapped an earlier one.
    pub fn dropped_merges(&self) -> usize {
        self.dropped_merges
    }

    /// The cell at (row, col), if non-empty.
    pub fn get(&self, row: u32, col: u32) -> Option<&Cell> {
        self.cells
            .binary_search_by_key(&(row, col), |c| (c.row, c.col))
            .ok()
            .map(|i| &self.cells[i])
    }

    /// The bounding box of the non-empty cells and merged ranges, or `None` for an empty sheet.
    pub fn used_range(&self) -> Option<CellRange> {
        let mut it = self
            .cells
            .iter()
            .map(|c| CellRange::cell(c.row, c.col))
            .chain(self.merged.iter().copied());
        let first = it.next()?;
        Some(it.fold(first, |a, b| CellRange {
            first_row: a.first_row.min(b.first_row),
            first_col: a.first_col.min(b.first_col),
            last_row: a.last_row.max(b.last_row),
            last_col: a.last_col.max(b.last_col),
        }))
    }

    /// The cells inside `range`, row-major, with their original addresses.
    pub fn cells_in(&self, range: CellRange) -> impl Iterator<Item = &Cell> {
        let start = self
            .cells
            .partition_point(|c| (c.row, c.col) < (range.first_row, range.first_col));
        self.cells[start..]
            .iter()
            .take_while(move |c| c.row <= range.last_row)
            .filter(move |c| range.contains(c.row, c.col))
    }

    /// A new sheet holding only the cells and merges inside `range` (addresses unchanged).
    pub fn crop(&self, range: CellRange) -> Sheet {
        Sheet {
            name: self.name.clone(),
            cells: self.cells_in(range).cloned().collect(),
            merged: self
                .merged
                .iter()
                .filter(|m| m.intersects(&range))
                .copied()
                .collect(),
            dropped_merges: 0,
        }
    }
}

/// Appends `s` as a JSON string literal (quotes included).
pub fn push_json_str(out: &mut String, s: &str) {
    use core::fmt::Write;
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn a1_round_trip() {
        for (r, c, s) in [
            (0, 0, "A1"),
            (0, 25, "Z1"),
            (9, 26, "AA10"),
            (0, 16383, "XFD1"),
            (1048575, 0, "A1048576"),
        ] {
            assert_eq!(a1(r, c), s);
            assert_eq!(parse_a1(s), Some((r, c)));
        }
        assert_eq!(parse_a1("$B$3"), Some((2, 1)));
        for bad in ["", "A", "1", "A0", "XFE1", "A1048577", "A-1", "1A"] {
            assert_eq!(parse_a1(bad), None, "{bad}");
        }
        assert_eq!(CellRange::parse("b3:f20").unwrap().to_string(), "B3:F20");
        assert!(CellRange::parse("B3:F20:G1").is_err());
    }

    #[test]
    fn sheet_dedups_sorts_and_drops_overlapping_merges() {
        let s = Sheet::new(
            "s",
            alloc::vec![
                Cell::text(1, 0, "b"),
                Cell::text(0, 0, "x"),
                Cell::text(0, 0, "a"),
                Cell::text(2, 2, "")
            ],
            alloc::vec![
                CellRange::new(0, 0, 1, 1),
                CellRange::new(1, 1, 2, 2),
                CellRange::cell(5, 5)
            ],
        )
        .unwrap();
        let texts: Vec<&str> = s.cells().iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["a", "b"]);
        assert_eq!(s.merged().len(), 1);
        assert_eq!(s.dropped_merges(), 1);
        assert!(
            Sheet::new(
                "s",
                alloc::vec![Cell::text(MAX_ROWS, 0, "x")],
                alloc::vec![]
            )
            .is_err()
        );
    }
}
