//! Heuristic table detection (no model) and the paper's EoB metric.
//!
//! Tables are grown as connected regions of non-empty cells (merged areas count as filled),
//! tolerating one empty column inside a row but no empty row; regions whose boxes overlap are
//! joined. A box then loses a title row on top (one filled cell above a wider row) and comment
//! rows at the bottom (one text cell below a wider row), since the task asks for header plus
//! data only. Boxes with fewer than two rows or fewer than four filled cells are not tables.

use super::{CellKind, CellRange, Sheet};
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

/// Empty columns tolerated between two cells of one table row.
const GAP_COLS: u32 = 1;

fn find(parent: &mut [usize], mut x: usize) -> usize {
    while parent[x] != x {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    x
}

/// Detected table ranges, top-to-bottom then left-to-right.
pub fn detect_tables(sheet: &Sheet) -> Vec<CellRange> {
    let mut pos: BTreeMap<(u32, u32), usize> = BTreeMap::new();
    for c in sheet.cells() {
        let n = pos.len();
        pos.entry((c.row, c.col)).or_insert(n);
    }
    for m in sheet.merged() {
        // Huge merges would flood the map; their corners are enough for connectivity of the
        // edges, and the bounding box joins them in the overlap pass.
        if m.area() <= 4096 {
            for r in m.first_row..=m.last_row {
                for c in m.first_col..=m.last_col {
                    let n = pos.len();
                    pos.entry((r, c)).or_insert(n);
                }
            }
        } else {
            for (r, c) in [(m.first_row, m.first_col), (m.last_row, m.last_col)] {
                let n = pos.len();
                pos.entry((r, c)).or_insert(n);
            }
        }
    }
    let mut parent: Vec<usize> = (0..pos.len()).collect();
    for (&(r, c), &i) in &pos {
        // Neighbours below, and to the right within the gap tolerance (including diagonals).
        for dr in 0..=1u32 {
            for dc in -(GAP_COLS as i64 + 1)..=(GAP_COLS as i64 + 1) {
                if dr == 0 && dc <= 0 {
                    continue;
                }
                let (Some(nr), Some(nc)) = (r.checked_add(dr), (i64::from(c) + dc).try_into().ok())
                else {
                    continue;
                };
                if dr == 1 && dc.abs() > 1 {
                    continue;
                }
                if let Some(&j) = pos.get(&(nr, nc)) {
                    let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                    if a != b {
                        parent[a] = b;
                    }
                }
            }
        }
    }
    let mut boxes: BTreeMap<usize, CellRange> = BTreeMap::new();
    for (&(r, c), &i) in &pos {
        let root = find(&mut parent, i);
        boxes
            .entry(root)
            .and_modify(|b| {
                b.first_row = b.first_row.min(r);
                b.last_row = b.last_row.max(r);
                b.first_col = b.first_col.min(c);
                b.last_col = b.last_col.max(c);
            })
            .or_insert(CellRange::cell(r, c));
    }
    let mut boxes: Vec<CellRange> = boxes.into_values().collect();
    // Join overlapping boxes until none overlap.
    loop {
        let mut joined = false;
        'outer: for i in 0..boxes.len() {
            for j in i + 1..boxes.len() {
                if boxes[i].intersects(&boxes[j]) {
                    let b = boxes.swap_remove(j);
                    let a = &mut boxes[i];
                    *a = CellRange::new(
                        a.first_row.min(b.first_row),
                        a.first_col.min(b.first_col),
                        a.last_row.max(b.last_row),
                        a.last_col.max(b.last_col),
                    );
                    joined = true;
                    break 'outer;
                }
            }
        }
        if !joined {
            break;
        }
    }
    let mut out: Vec<CellRange> = boxes.into_iter().filter_map(|b| trim(sheet, b)).collect();
    out.sort_by_key(|b| (b.first_row, b.first_col));
    out
}

fn row_count(sheet: &Sheet, b: CellRange, row: u32) -> (usize, bool) {
    let cells: Vec<_> = sheet
        .cells_in(CellRange::new(row, b.first_col, row, b.last_col))
        .collect();
    let all_text = cells.iter().all(|c| c.kind == CellKind::Text);
    (cells.len(), all_text)
}

fn trim(sheet: &Sheet, mut b: CellRange) -> Option<CellRange> {
    while b.height() > 2 && b.width() >= 2 {
        let (top, _) = row_count(sheet, b, b.first_row);
        let (next, _) = row_count(sheet, b, b.first_row + 1);
        if top <= 1 && next >= 2 {
            b.first_row += 1;
        } else {
            break;
        }
    }
    while b.height() > 2 && b.width() >= 3 {
        let (bottom, text) = row_count(sheet, b, b.last_row);
        let (above, _) = row_count(sheet, b, b.last_row - 1);
        if bottom <= 1 && text && above >= 2 {
            b.last_row -= 1;
        } else {
            break;
        }
    }
    let filled = sheet.cells_in(b).count();
    (b.height() >= 2 && filled >= 4).then_some(b)
}

/// The paper's EoB distance: the largest of the four edge offsets, in cells.
pub fn eob(a: CellRange, b: CellRange) -> u32 {
    [
        a.first_row.abs_diff(b.first_row),
        a.last_row.abs_diff(b.last_row),
        a.first_col.abs_diff(b.first_col),
        a.last_col.abs_diff(b.last_col),
    ]
    .into_iter()
    .max()
    .unwrap_or(0)
}

/// Counts for F1 at EoB-`tolerance`: (matched, predicted, gold). Each gold table matches at
/// most one prediction and vice versa (greedy, closest first).
pub fn match_tables(
    pred: &[CellRange],
    gold: &[CellRange],
    tolerance: u32,
) -> (usize, usize, usize) {
    let mut pairs: Vec<(u32, usize, usize)> = Vec::new();
    for (i, p) in pred.iter().enumerate() {
        for (j, g) in gold.iter().enumerate() {
            let d = eob(*p, *g);
            if d <= tolerance {
                pairs.push((d, i, j));
            }
        }
    }
    pairs.sort_unstable();
    let mut used_p = alloc::vec![false; pred.len()];
    let mut used_g = alloc::vec![false; gold.len()];
    let mut hits = 0;
    for (_, i, j) in pairs {
        if !used_p[i] && !used_g[j] {
            used_p[i] = true;
            used_g[j] = true;
            hits += 1;
        }
    }
    (hits, pred.len(), gold.len())
}

/// F1 from summed (matched, predicted, gold) counts; 0 when nothing was predicted or labelled.
pub fn f1(hits: usize, pred: usize, gold: usize) -> f64 {
    if pred == 0 || gold == 0 {
        return 0.0;
    }
    let p = hits as f64 / pred as f64;
    let r = hits as f64 / gold as f64;
    if p + r == 0.0 {
        0.0
    } else {
        2.0 * p * r / (p + r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sheet::Cell;
    use alloc::format;
    use alloc::vec;

    #[test]
    fn two_tables_title_and_note() {
        let mut cells = vec![Cell::text(0, 0, "Quarterly report")];
        for (top, left) in [(2u32, 0u32), (2, 5)] {
            for c in 0..3 {
                cells.push(Cell::text(top, left + c, format!("h{c}")));
                for r in 1..4 {
                    cells.push(Cell::number(top + r, left + c, format!("{r}"), None));
                }
            }
        }
        cells.push(Cell::text(6, 0, "Source: nobody"));
        let s = Sheet::new("s", cells, vec![]).unwrap();
        let got: Vec<_> = detect_tables(&s).iter().map(|r| format!("{r}")).collect();
        assert_eq!(got, ["A3:C6", "F3:H6"]);
    }

    #[test]
    fn eob_and_f1() {
        let a = CellRange::parse("B3:F20").unwrap();
        let b = CellRange::parse("B4:F21").unwrap();
        assert_eq!(eob(a, b), 1);
        assert_eq!(match_tables(&[a], &[b], 0), (0, 1, 1));
        assert_eq!(match_tables(&[a, b], &[b], 2), (1, 2, 1));
        assert!((f1(1, 2, 1) - 2.0 / 3.0).abs() < 1e-12);
    }
}
