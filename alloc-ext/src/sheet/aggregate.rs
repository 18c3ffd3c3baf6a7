//! Data-format-aware aggregation (SheetCompressor module 3). Each typed cell gets a key: its
//! number-format string when that says more than General, else the recognizer's label
//! (`IntNum`, `DateData`, …). Runs of 4-adjacent cells with the same key collapse to that key;
//! text cells and lone typed cells keep their text, so nothing textual is lost.

use super::numfmt::{is_generic, recognize};
use super::{Cell, CellKind};
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

/// The aggregation key of a cell, or `None` when the cell keeps its own text.
pub fn type_key(cell: &Cell) -> Option<String> {
    match cell.kind {
        CellKind::Bool | CellKind::Error => None,
        CellKind::Number | CellKind::DateTime | CellKind::Duration => {
            match cell.number_format.as_deref() {
                Some(nfs) if !is_generic(nfs) => Some(String::from(nfs)),
                _ => recognize(&cell.text).map(|t| String::from(t.label())),
            }
        }
        CellKind::Text => recognize(&cell.text).map(|t| String::from(t.label())),
    }
}

/// The (row, col, text) triples after aggregation: cells in a same-key component of two or more
/// cells show the key instead of their value.
pub fn aggregate(cells: &[Cell]) -> Vec<(u32, u32, String)> {
    let keys: Vec<Option<String>> = cells.iter().map(type_key).collect();
    let pos: BTreeMap<(u32, u32), usize> = cells
        .iter()
        .enumerate()
        .map(|(i, c)| ((c.row, c.col), i))
        .collect();
    let mut component = alloc::vec![usize::MAX; cells.len()];
    let mut size: Vec<usize> = Vec::new();
    for start in 0..cells.len() {
        if component[start] != usize::MAX || keys[start].is_none() {
            continue;
        }
        let id = size.len();
        let mut n = 0;
        let mut stack = alloc::vec![start];
        component[start] = id;
        while let Some(i) = stack.pop() {
            n += 1;
            let (r, c) = (cells[i].row, cells[i].col);
            let around = [
                r.checked_sub(1).map(|r| (r, c)),
                Some((r + 1, c)),
                c.checked_sub(1).map(|c| (r, c)),
                Some((r, c + 1)),
            ];
            for p in around.into_iter().flatten() {
                if let Some(&j) = pos.get(&p)
                    && component[j] == usize::MAX
                    && keys[j] == keys[i]
                {
                    component[j] = id;
                    stack.push(j);
                }
            }
        }
        size.push(n);
    }
    cells
        .iter()
        .zip(keys)
        .enumerate()
        .map(|(i, (c, key))| {
            let text = match key {
                Some(k) if size[component[i]] >= 2 => k,
                _ => c.text.clone(),
            };
            (c.row, c.col, text)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn typed_runs_collapse_text_stays() {
        let cells = vec![
            Cell::text(0, 0, "Revenue"),
            Cell::number(1, 0, "1,200", Some("#,##0")),
            Cell::number(2, 0, "1,300", Some("#,##0")),
            Cell::number(3, 0, "7", None),
            Cell::text(0, 1, "Email"),
            Cell::text(1, 1, "a@b.org"),
            Cell::text(2, 1, "c@d.org"),
        ];
        let got: Vec<String> = aggregate(&cells).into_iter().map(|t| t.2).collect();
        assert_eq!(
            got,
            [
                "Revenue",
                "#,##0",
                "#,##0",
                "7",
                "Email",
                "EmailData",
                "EmailData"
            ]
        );
    }
}
