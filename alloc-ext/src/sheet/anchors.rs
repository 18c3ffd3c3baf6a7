//! Structural-anchor extraction (SheetCompressor module 1, paper §3.2 and App. C).
//!
//! Anchors are rows (columns) that differ from their neighbour: a line where the sheet changes
//! from empty to filled, or where most cells change kind or style (header vs data, title vs
//! header), plus the edges of the heuristic table boxes of [`super::detect`]. Rows and columns
//! within `k` of an anchor are kept, everything else is dropped, and the kept cells are
//! re-addressed contiguously through a [`CoordMap`] that maps back exactly. Anchors come from
//! the sheet alone, never from labels.

use super::detect::detect_tables;
use super::{Cell, CellKind, CellRange, Sheet, Style};
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

/// Options of the extraction.
#[derive(Debug, Clone, Copy)]
pub struct AnchorOptions {
    /// Neighbourhood kept around each anchor (the paper's k = 4).
    pub k: u32,
}

impl Default for AnchorOptions {
    fn default() -> Self {
        AnchorOptions { k: 4 }
    }
}

/// Maps compressed coordinates to original ones and back. `rows[i]` is the original row of
/// compressed row `i`; both lists are strictly increasing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoordMap {
    /// Original row of each kept row.
    pub rows: Vec<u32>,
    /// Original column of each kept column.
    pub cols: Vec<u32>,
}

impl CoordMap {
    /// Original (row, col) of a compressed address.
    pub fn to_original(&self, row: u32, col: u32) -> Option<(u32, u32)> {
        Some((*self.rows.get(row as usize)?, *self.cols.get(col as usize)?))
    }

    /// Compressed (row, col) of an original address, if it was kept.
    pub fn to_compressed(&self, row: u32, col: u32) -> Option<(u32, u32)> {
        let r = self.rows.binary_search(&row).ok()?;
        let c = self.cols.binary_search(&col).ok()?;
        Some((r as u32, c as u32))
    }

    /// Maps a range given in compressed coordinates (e.g. a model's answer) back.
    pub fn range_to_original(&self, r: CellRange) -> Option<CellRange> {
        let (r0, c0) = self.to_original(r.first_row, r.first_col)?;
        let (r1, c1) = self.to_original(r.last_row, r.last_col)?;
        Some(CellRange::new(r0, c0, r1, c1))
    }
}

/// The per-cell signature compared between neighbouring lines.
fn signature(c: &Cell) -> u8 {
    let class = match c.kind {
        CellKind::Text => 1,
        CellKind::Number | CellKind::Duration => 2,
        CellKind::DateTime => 3,
        CellKind::Bool | CellKind::Error => 4,
    };
    let s = c.style;
    let mut sig = class;
    if s.has(Style::FILL) {
        sig |= 8;
    }
    if s.has(Style::BOLD) {
        sig |= 16;
    }
    if s.0 & (Style::TOP | Style::BOTTOM) != 0 {
        sig |= 32;
    }
    sig
}

/// Lines (rows when `by_row`) that are anchors by the heterogeneity rule, in original indices.
fn heterogeneous_lines(sheet: &Sheet, by_row: bool, range: CellRange) -> BTreeSet<u32> {
    // line -> [(position along the line, signature)], sorted by position.
    let mut lines: BTreeMap<u32, Vec<(u32, u8)>> = BTreeMap::new();
    for c in sheet.cells() {
        let (line, pos) = if by_row {
            (c.row, c.col)
        } else {
            (c.col, c.row)
        };
        lines.entry(line).or_default().push((pos, signature(c)));
    }
    for v in lines.values_mut() {
        v.sort_unstable();
    }
    let (first, last) = if by_row {
        (range.first_row, range.last_row)
    } else {
        (range.first_col, range.last_col)
    };
    let mut anchors = BTreeSet::new();
    anchors.insert(first);
    anchors.insert(last);
    let mut prev: Option<(u32, &Vec<(u32, u8)>)> = None;
    for (&line, cells) in &lines {
        match prev {
            // A gap of empty lines before this one: both edges of the gap are anchors.
            Some((p, _)) if p + 1 < line => {
                anchors.insert(p);
                anchors.insert(line);
            }
            None => {
                anchors.insert(line);
            }
            Some((_, prev_cells)) => {
                if differs(prev_cells, cells) {
                    anchors.insert(line - 1);
                    anchors.insert(line);
                }
            }
        }
        prev = Some((line, cells));
    }
    if let Some((p, _)) = prev {
        anchors.insert(p);
    }
    anchors
}

/// Whether two neighbouring lines are heterogeneous: more than half of the positions used by
/// either line change existence or signature, or the number of filled cells changes by more
/// than two.
fn differs(a: &[(u32, u8)], b: &[(u32, u8)]) -> bool {
    if a.len().abs_diff(b.len()) > 2 {
        return true;
    }
    let (mut i, mut j, mut union, mut diff) = (0, 0, 0usize, 0usize);
    while i < a.len() || j < b.len() {
        union += 1;
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x.0 == y.0 => {
                if x.1 != y.1 {
                    diff += 1;
                }
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x.0 < y.0 => {
                diff += 1;
                i += 1;
            }
            (Some(_), None) => {
                diff += 1;
                i += 1;
            }
            _ => {
                diff += 1;
                j += 1;
            }
        }
    }
    diff * 2 > union
}

/// Anchor rows and columns of a sheet (original indices).
pub fn find_anchors(sheet: &Sheet) -> (BTreeSet<u32>, BTreeSet<u32>) {
    let Some(range) = sheet.used_range() else {
        return (BTreeSet::new(), BTreeSet::new());
    };
    let mut rows = heterogeneous_lines(sheet, true, range);
    let mut cols = heterogeneous_lines(sheet, false, range);
    for t in detect_tables(sheet) {
        rows.insert(t.first_row);
        rows.insert(t.last_row);
        cols.insert(t.first_col);
        cols.insert(t.last_col);
    }
    (rows, cols)
}

fn keep_around(anchors: &BTreeSet<u32>, k: u32, lo: u32, hi: u32) -> Vec<u32> {
    let mut kept: Vec<u32> = Vec::new();
    for &a in anchors {
        let from = a.saturating_sub(k).max(lo);
        let to = a.saturating_add(k).min(hi);
        let start = match kept.last() {
            Some(&l) if l >= from => l + 1,
            _ => from,
        };
        for x in start..=to {
            kept.push(x);
        }
    }
    kept
}

/// Drops empty lines, except the edges of each interior run of empty lines (one line for a
/// single-line gap, first and last for longer runs), so a visible gap between tables survives.
/// The [code?] scripts also drop single empty lines; that glues neighbouring tables together
/// (a pivot next to its source, two tables split by one empty row), so we keep them.
fn drop_empty(kept: Vec<u32>, used: &BTreeSet<u32>) -> Vec<u32> {
    let (Some(&first), Some(&last)) = (used.iter().next(), used.iter().next_back()) else {
        return Vec::new();
    };
    kept.into_iter()
        .filter(|&x| {
            if used.contains(&x) {
                return true;
            }
            if x < first || x > last {
                return false;
            }
            let before = used.range(..x).next_back().copied();
            let after = used.range(x..).next().copied();
            match (before, after) {
                (Some(b), Some(a)) => x == b + 1 || x == a - 1,
                _ => false,
            }
        })
        .collect()
}

/// Extracts the anchor skeleton: a re-addressed sheet and the map back to the original.
pub fn extract(sheet: &Sheet, opts: &AnchorOptions) -> (Sheet, CoordMap) {
    let Some(range) = sheet.used_range() else {
        return (sheet.clone(), CoordMap::default());
    };
    let (ar, ac) = find_anchors(sheet);
    let used_rows: BTreeSet<u32> = sheet
        .cells()
        .iter()
        .map(|c| c.row)
        .chain(sheet.merged().iter().map(|m| m.first_row))
        .collect();
    let used_cols: BTreeSet<u32> = sheet
        .cells()
        .iter()
        .map(|c| c.col)
        .chain(sheet.merged().iter().map(|m| m.first_col))
        .collect();
    let rows = drop_empty(
        keep_around(&ar, opts.k, range.first_row, range.last_row),
        &used_rows,
    );
    let cols = drop_empty(
        keep_around(&ac, opts.k, range.first_col, range.last_col),
        &used_cols,
    );
    let map = CoordMap { rows, cols };
    let cells: Vec<Cell> = sheet
        .cells()
        .iter()
        .filter_map(|c| {
            let (r, k) = map.to_compressed(c.row, c.col)?;
            let mut c = c.clone();
            c.row = r;
            c.col = k;
            Some(c)
        })
        .collect();
    let merged: Vec<CellRange> = sheet
        .merged()
        .iter()
        .filter_map(|m| {
            let r0 = map.rows.partition_point(|&r| r < m.first_row);
            let r1 = map.rows.partition_point(|&r| r <= m.last_row);
            let c0 = map.cols.partition_point(|&c| c < m.first_col);
            let c1 = map.cols.partition_point(|&c| c <= m.last_col);
            (r1 > r0 && c1 > c0)
                .then(|| CellRange::new(r0 as u32, c0 as u32, r1 as u32 - 1, c1 as u32 - 1))
        })
        .collect();
    // Remapping keeps order and distinctness, so construction cannot fail; fall back to an
    // unmerged sheet rather than panicking if it ever did.
    let out = Sheet::new(sheet.name.clone(), cells.clone(), merged)
        .or_else(|_| Sheet::new(sheet.name.clone(), cells, Vec::new()))
        .unwrap_or_default();
    (out, map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::vec;
    use proptest::prelude::*;

    fn table(rows: u32) -> Sheet {
        let mut cells = vec![Cell::text(0, 0, "Title")];
        for c in 0..3 {
            cells.push(Cell::text(2, c, format!("h{c}")));
        }
        for r in 3..3 + rows {
            for c in 0..3 {
                cells.push(Cell::number(r, c, format!("{}", r * 10 + c), None));
            }
        }
        Sheet::new("t", cells, vec![]).unwrap()
    }

    #[test]
    fn long_homogeneous_body_is_cut_edges_are_kept() {
        let s = table(100);
        let (small, map) = extract(&s, &AnchorOptions { k: 4 });
        assert!(map.rows.len() < 30, "{:?}", map.rows);
        for needed in [0, 2, 3, 102] {
            assert!(map.rows.contains(&needed), "row {needed} missing");
        }
        // Every kept cell maps back to the original cell with the same text.
        for c in small.cells() {
            let (r, k) = map.to_original(c.row, c.col).unwrap();
            assert_eq!(s.get(r, k).unwrap().text, c.text);
        }
    }

    #[test]
    fn single_empty_column_between_tables_survives() {
        let mut cells = Vec::new();
        for r in 0..3 {
            cells.push(Cell::text(r, 0, "a"));
            cells.push(Cell::number(r, 2, "1", None));
        }
        let s = Sheet::new("t", cells, vec![]).unwrap();
        let (_, map) = extract(&s, &AnchorOptions { k: 4 });
        assert_eq!(map.cols, [0, 1, 2]);
    }

    proptest! {
        #[test]
        fn map_is_reversible(cells in proptest::collection::btree_map((0u32..60, 0u32..20), 0u8..3, 0..200), k in 0u32..6) {
            let cells: Vec<Cell> = cells.iter().map(|(&(r, c), &v)| match v {
                0 => Cell::text(r, c, "t"),
                _ => Cell::number(r, c, format!("{v}"), None),
            }).collect();
            let s = Sheet::new("p", cells, vec![]).unwrap();
            let (small, map) = extract(&s, &AnchorOptions { k });
            prop_assert!(map.rows.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(map.cols.windows(2).all(|w| w[0] < w[1]));
            for c in small.cells() {
                let (r, k) = map.to_original(c.row, c.col).unwrap();
                prop_assert_eq!(&s.get(r, k).unwrap().text, &c.text);
                prop_assert_eq!(map.to_compressed(r, k), Some((c.row, c.col)));
            }
            // Every original cell on a kept row and column survives.
            for c in s.cells() {
                if let Some((r, k)) = map.to_compressed(c.row, c.col) {
                    prop_assert_eq!(&small.get(r, k).unwrap().text, &c.text);
                }
            }
        }
    }
}
