//! Inverted-index translation (SheetCompressor module 2): value -> addresses, empty cells
//! dropped, equal values merged into *exact* rectangles. Decoding reproduces every cell;
//! no range ever covers a cell with another value.

use super::{CellRange, push_json_str};
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

/// Covers a set of cells exactly by rectangles: row-major, each rectangle takes the longest run
/// to the right of its first uncovered cell, then grows down while the whole run is present.
/// `cells` may be in any order and may repeat.
pub fn cover_rectangles(cells: impl IntoIterator<Item = (u32, u32)>) -> Vec<CellRange> {
    let mut left: BTreeSet<(u32, u32)> = cells.into_iter().collect();
    let mut out = Vec::new();
    while let Some(&(r, c)) = left.iter().next() {
        let mut last_col = c;
        while last_col < u32::MAX && left.contains(&(r, last_col + 1)) {
            last_col += 1;
        }
        let mut last_row = r;
        'down: while last_row < u32::MAX {
            for col in c..=last_col {
                if !left.contains(&(last_row + 1, col)) {
                    break 'down;
                }
            }
            last_row += 1;
        }
        for row in r..=last_row {
            for col in c..=last_col {
                left.remove(&(row, col));
            }
        }
        out.push(CellRange::new(r, c, last_row, last_col));
    }
    out
}

/// An inverted index: distinct values in order of first appearance (row-major), each with the
/// rectangles holding it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InvertedIndex {
    /// (value, rectangles) pairs.
    pub entries: Vec<(String, Vec<CellRange>)>,
}

impl InvertedIndex {
    /// Builds the index from (row, col, text) triples; empty texts are skipped.
    pub fn build<'a>(cells: impl IntoIterator<Item = (u32, u32, &'a str)>) -> InvertedIndex {
        let mut order: Vec<&'a str> = Vec::new();
        let mut groups: BTreeMap<&'a str, Vec<(u32, u32)>> = BTreeMap::new();
        let mut first_seen: Vec<((u32, u32), &'a str)> = Vec::new();
        for (r, c, t) in cells {
            if t.is_empty() {
                continue;
            }
            let g = groups.entry(t).or_default();
            if g.is_empty() {
                first_seen.push(((r, c), t));
            }
            g.push((r, c));
        }
        first_seen.sort();
        order.extend(first_seen.into_iter().map(|(_, t)| t));
        let entries = order
            .into_iter()
            .map(|t| {
                let pts = groups.remove(t).unwrap_or_default();
                (String::from(t), cover_rectangles(pts))
            })
            .collect();
        InvertedIndex { entries }
    }

    /// Every (row, col, value) the index describes, row-major.
    pub fn decode(&self) -> Vec<(u32, u32, String)> {
        let mut out = Vec::new();
        for (v, rects) in &self.entries {
            for r in rects {
                for row in r.first_row..=r.last_row {
                    for col in r.first_col..=r.last_col {
                        out.push((row, col, v.clone()));
                    }
                }
            }
        }
        out.sort();
        out
    }

    /// The index as a JSON object, one value per line: `{"Year":"A1,C1:C9",…}`.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{");
        for (i, (v, rects)) in self.entries.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('\n');
            push_json_str(&mut out, v);
            out.push_str(":\"");
            for (j, r) in rects.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{r}");
            }
            out.push('"');
        }
        out.push_str("\n}\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use proptest::prelude::*;

    #[test]
    fn scattered_values_never_get_a_bounding_range() {
        let idx = InvertedIndex::build(vec![(0, 0, "x"), (2, 2, "x"), (0, 1, "y"), (1, 0, "x")]);
        assert_eq!(idx.entries[0].0, "x");
        let ranges: Vec<String> = idx.entries[0]
            .1
            .iter()
            .map(|r| alloc::format!("{r}"))
            .collect();
        assert_eq!(ranges, ["A1:A2", "C3"]);
        assert_eq!(idx.to_json(), "{\n\"x\":\"A1:A2,C3\",\n\"y\":\"B1\"\n}\n");
    }

    #[test]
    fn l_shape_is_two_rectangles() {
        let r = cover_rectangles(vec![(0, 0), (0, 1), (1, 0)]);
        assert_eq!(r, vec![CellRange::new(0, 0, 0, 1), CellRange::cell(1, 0)]);
    }

    proptest! {
        #[test]
        fn decoding_reproduces_every_cell(cells in proptest::collection::btree_map((0u32..12, 0u32..12), 0u8..4, 0..120)) {
            let texts = ["", "a", "b", "ccc"];
            let triples: Vec<(u32, u32, &str)> = cells.iter().map(|(&(r, c), &v)| (r, c, texts[v as usize])).collect();
            let idx = InvertedIndex::build(triples.iter().copied());
            let mut want: Vec<(u32, u32, String)> = triples.iter().filter(|t| !t.2.is_empty()).map(|&(r, c, t)| (r, c, String::from(t))).collect();
            want.sort();
            // Equality also proves no range covers a cell twice or a cell of another value.
            prop_assert_eq!(idx.decode(), want);
        }
    }
}
