//! SheetCompressor: anchors -> inverted index -> format aggregation, each switchable.

use super::aggregate::aggregate;
use super::anchors::{AnchorOptions, CoordMap, extract};
use super::index::{InvertedIndex, cover_rectangles, push_tuple};
use super::vanilla::{self, VanillaOptions};
use super::{Sheet, SheetError};
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

/// How the inverted index is written out. Both are the paper's: §3.3 describes the index as a
/// JSON dictionary, the compressed prompts of App. L.2 use `(value|address)` tuples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Surface {
    /// `(Year|A1,C1:C9)`, one value per line (the default: fewer tokens).
    #[default]
    Tuples,
    /// `{"Year":"A1,C1:C9",…}`, one value per line.
    Json,
}

/// Which modules run.
#[derive(Debug, Clone, Copy)]
pub struct CompressOptions {
    /// Module 1: structural-anchor extraction.
    pub anchors: bool,
    /// Neighbourhood around anchors.
    pub k: u32,
    /// Module 2: inverted-index translation.
    pub index: bool,
    /// Module 3: data-format-aware aggregation.
    pub aggregate: bool,
    /// How the index is written.
    pub surface: Surface,
}

impl Default for CompressOptions {
    fn default() -> Self {
        CompressOptions {
            anchors: true,
            k: 4,
            index: true,
            aggregate: true,
            surface: Surface::Tuples,
        }
    }
}

/// A compressed encoding and what is needed to read answers back.
#[derive(Debug, Clone)]
pub struct Compressed {
    /// The text handed to the model.
    pub text: String,
    /// Compressed -> original coordinates when extraction ran.
    pub map: Option<CoordMap>,
}

/// Encodes a sheet with the selected modules. Without any module this is the vanilla encoding.
pub fn compress(sheet: &Sheet, opts: &CompressOptions) -> Result<Compressed, SheetError> {
    let (skeleton, map) = if opts.anchors {
        let (s, m) = extract(sheet, &AnchorOptions { k: opts.k });
        (s, Some(m))
    } else {
        (sheet.clone(), None)
    };
    let text = match (opts.index, opts.aggregate) {
        (false, false) => vanilla::encode(&skeleton, &VanillaOptions::default())?,
        (true, agg) => {
            let triples: Vec<(u32, u32, String)> = if agg {
                aggregate(skeleton.cells())
            } else {
                skeleton
                    .cells()
                    .iter()
                    .map(|c| (c.row, c.col, c.text.clone()))
                    .collect()
            };
            let index = InvertedIndex::build(triples.iter().map(|(r, c, t)| (*r, *c, t.as_str())));
            match opts.surface {
                Surface::Tuples => index.to_tuples(),
                // An empty sheet has nothing to say, in either surface (vanilla is empty too).
                Surface::Json if index.entries.is_empty() => String::new(),
                Surface::Json => index.to_json(),
            }
        }
        (false, true) => aggregated_tuples(&skeleton),
    };
    Ok(Compressed { text, map })
}

/// Aggregation without the index: `(value|range)` tuples, one per line, in row-major order;
/// aggregated cells are grouped into exact rectangles per label, other cells stand alone.
fn aggregated_tuples(sheet: &Sheet) -> String {
    let triples = aggregate(sheet.cells());
    let mut by_label: BTreeMap<&str, Vec<(u32, u32)>> = BTreeMap::new();
    let mut tuples: Vec<(super::CellRange, &str)> = Vec::new();
    for ((r, c, t), cell) in triples.iter().zip(sheet.cells()) {
        if *t != cell.text {
            by_label.entry(t.as_str()).or_default().push((*r, *c));
        } else {
            tuples.push((super::CellRange::cell(*r, *c), t.as_str()));
        }
    }
    for (label, pts) in by_label {
        for rect in cover_rectangles(pts) {
            tuples.push((rect, label));
        }
    }
    tuples.sort_by_key(|(r, _)| (r.first_row, r.first_col));
    let mut out = String::new();
    for (range, t) in tuples {
        push_tuple(&mut out, t, &[range]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sheet::{Cell, CellKind, Style};
    use proptest::prelude::*;

    fn arb_cell() -> impl Strategy<Value = Cell> {
        (
            0u32..40,
            0u32..12,
            prop_oneof![
                Just(String::new()),
                "[a-c]{1,2}",
                "-?[0-9]{1,5}",
                "[0-9]{1,3}\\.[0-9]{1,2}%?",
                "\\PC{0,6}",
            ],
            0u8..6,
            prop::option::of(prop_oneof![
                Just("General"),
                Just("#,##0"),
                Just("0.00%"),
                Just("yyyy-mm-dd"),
                Just("")
            ]),
            any::<u8>(),
        )
            .prop_map(|(row, col, text, kind, nfs, style)| Cell {
                row,
                col,
                text,
                kind: [
                    CellKind::Text,
                    CellKind::Number,
                    CellKind::Bool,
                    CellKind::DateTime,
                    CellKind::Duration,
                    CellKind::Error,
                ][kind as usize],
                number_format: nfs.map(String::from),
                style: Style(style),
            })
    }

    proptest! {
        #[test]
        fn every_module_combination_handles_arbitrary_cells(
            cells in proptest::collection::vec(arb_cell(), 0..150),
            anchors in any::<bool>(), index in any::<bool>(), agg in any::<bool>(), k in 0u32..6,
            json in any::<bool>(),
        ) {
            let sheet = Sheet::new("p", cells, Vec::new()).unwrap();
            let surface = if json { Surface::Json } else { Surface::Tuples };
            let out = compress(&sheet, &CompressOptions { anchors, k, index, aggregate: agg, surface }).unwrap();
            if sheet.cells().is_empty() {
                prop_assert_eq!(out.text.as_str(), "");
            }
            if !anchors && index && agg {
                // Aggregation relabels cells but never moves, drops or duplicates one.
                let triples = aggregate(sheet.cells());
                let idx = InvertedIndex::build(triples.iter().map(|(r, c, t)| (*r, *c, t.as_str())));
                let got: Vec<(u32, u32)> = idx.decode().into_iter().map(|(r, c, _)| (r, c)).collect();
                let want: Vec<(u32, u32)> = sheet.cells().iter().map(|c| (c.row, c.col)).collect();
                prop_assert_eq!(got, want);
                if !sheet.cells().is_empty() {
                    prop_assert_eq!(if json { idx.to_json() } else { idx.to_tuples() }, out.text.clone());
                }
            }
            if !anchors && index && !agg {
                // Lossless: decoding the index gives back exactly the sheet's cells.
                let idx = InvertedIndex::build(sheet.cells().iter().map(|c| (c.row, c.col, c.text.as_str())));
                let mut want: Vec<(u32, u32, String)> = sheet.cells().iter().map(|c| (c.row, c.col, c.text.clone())).collect();
                want.sort();
                prop_assert_eq!(idx.decode(), want);
                if !json {
                    // The text alone gives the cells back.
                    prop_assert_eq!(InvertedIndex::parse_tuples(&out.text).unwrap().decode(), idx.decode());
                } else if !sheet.cells().is_empty() {
                    prop_assert_eq!(idx.to_json(), out.text);
                }
            }
        }
    }
}

#[cfg(test)]
mod huge_tests {
    use super::*;
    use crate::sheet::{Cell, MAX_COLS, MAX_ROWS};
    use alloc::vec;

    #[test]
    fn far_apart_cells_compress_without_walking_the_grid() {
        let s = Sheet::new(
            "huge",
            vec![
                Cell::text(0, 0, "first"),
                Cell::text(MAX_ROWS - 1, MAX_COLS - 1, "last"),
            ],
            vec![],
        )
        .unwrap();
        assert!(matches!(
            vanilla::encode(&s, &VanillaOptions::default()),
            Err(SheetError::TooLarge { .. })
        ));
        let out = compress(&s, &CompressOptions::default()).unwrap();
        assert_eq!(out.text, "(first|A1)\n(last|D4)\n");
        let map = out.map.unwrap();
        // The long empty gap shows as two empty lines (its edges).
        assert_eq!(map.to_original(3, 3), Some((MAX_ROWS - 1, MAX_COLS - 1)));
    }
}
