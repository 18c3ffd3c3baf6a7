//! Inverted-index translation (SheetCompressor module 2): value -> addresses, empty cells
//! dropped, equal values merged into *exact* rectangles. Decoding reproduces every cell;
//! no range ever covers a cell with another value.

use super::{CellRange, SheetError, push_json_str};
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

    /// The index in the tuple surface of the paper's compressed prompts (App. L.2), one
    /// value per line: `(Year|A1,C1:C9)`. The value is written as it is, except that `\`, line
    /// feeds and carriage returns are escaped (`\\`, `\n`, `\r`) so each tuple is one line;
    /// the addresses follow the *last* `|`, so a value may itself hold `|` or parentheses.
    /// An empty index is the empty string. [`InvertedIndex::parse_tuples`] reads it back.
    pub fn to_tuples(&self) -> String {
        let mut out = String::new();
        for (v, rects) in &self.entries {
            push_tuple(&mut out, v, rects);
        }
        out
    }

    /// Reads back what [`InvertedIndex::to_tuples`] wrote.
    pub fn parse_tuples(text: &str) -> Result<InvertedIndex, SheetError> {
        let mut entries = Vec::new();
        for line in text.lines() {
            let bad = || SheetError::BadAddress(String::from(line));
            let inner = line
                .strip_prefix('(')
                .and_then(|l| l.strip_suffix(')'))
                .ok_or_else(bad)?;
            let (value, ranges) = inner.rsplit_once('|').ok_or_else(bad)?;
            let rects = ranges
                .split(',')
                .map(CellRange::parse)
                .collect::<Result<Vec<_>, _>>()?;
            entries.push((unescape_tuple_value(value).ok_or_else(bad)?, rects));
        }
        Ok(InvertedIndex { entries })
    }

    /// The index as a JSON object, one value per line: `{"Year":"A1,C1:C9",…}` (the dictionary
    /// form of the paper's §3.3; it costs more tokens than the tuples, the quotes mostly).
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

/// Appends one `(value|A1,B2:C3)` line.
pub fn push_tuple(out: &mut String, value: &str, rects: &[CellRange]) {
    out.push('(');
    for ch in value.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('|');
    for (j, r) in rects.iter().enumerate() {
        if j > 0 {
            out.push(',');
        }
        let _ = write!(out, "{r}");
    }
    out.push_str(")\n");
}

fn unescape_tuple_value(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(ch) = chars.next() {
        if ch != '\\' {
            out.push(ch);
            continue;
        }
        out.push(match chars.next()? {
            '\\' => '\\',
            'n' => '\n',
            'r' => '\r',
            _ => return None,
        });
    }
    Some(out)
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
        assert_eq!(idx.to_tuples(), "(x|A1:A2,C3)\n(y|B1)\n");
        assert_eq!(InvertedIndex::parse_tuples(&idx.to_tuples()).unwrap(), idx);
    }

    #[test]
    fn tuple_values_with_separators_and_line_breaks_read_back() {
        let idx = InvertedIndex::build(vec![
            (0, 0, "a|b (c)"),
            (0, 1, "two\nlines\\"),
            (1, 0, "|"),
            (1, 1, ")"),
        ]);
        let text = idx.to_tuples();
        assert_eq!(text.lines().count(), 4);
        assert_eq!(InvertedIndex::parse_tuples(&text).unwrap(), idx);
        for bad in ["x|A1)", "(x A1)", "(x|A0)", "(x\\q|A1)", "(x|A1:B2:C3)"] {
            assert!(InvertedIndex::parse_tuples(bad).is_err(), "{bad}");
        }
        assert_eq!(
            InvertedIndex::parse_tuples("").unwrap(),
            InvertedIndex::default()
        );
    }

    #[test]
    fn l_shape_is_two_rectangles() {
        let r = cover_rectangles(vec![(0, 0), (0, 1), (1, 0)]);
        assert_eq!(r, vec![CellRange::new(0, 0, 0, 1), CellRange::cell(1, 0)]);
    }

    proptest! {
        #[test]
        fn arbitrary_values_survive_the_tuple_surface(values in proptest::collection::vec("\\PC{0,8}|[|()\\\\\n\r]{1,4}", 1..20)) {
            let idx = InvertedIndex::build(values.iter().enumerate().map(|(i, v)| (i as u32, 0, v.as_str())));
            prop_assert_eq!(InvertedIndex::parse_tuples(&idx.to_tuples()).unwrap(), idx);
        }

        #[test]
        fn decoding_reproduces_every_cell(cells in proptest::collection::btree_map((0u32..12, 0u32..12), 0u8..4, 0..120)) {
            let texts = ["", "a", "b", "ccc"];
            let triples: Vec<(u32, u32, &str)> = cells.iter().map(|(&(r, c), &v)| (r, c, texts[v as usize])).collect();
            let idx = InvertedIndex::build(triples.iter().copied());
            let mut want: Vec<(u32, u32, String)> = triples.iter().filter(|t| !t.2.is_empty()).map(|&(r, c, t)| (r, c, String::from(t))).collect();
            want.sort();
            // Equality also proves no range covers a cell twice or a cell of another value.
            prop_assert_eq!(idx.decode(), want);
            prop_assert_eq!(InvertedIndex::parse_tuples(&idx.to_tuples()).unwrap(), idx);
        }
    }
}
