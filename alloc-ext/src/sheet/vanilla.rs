//! The paper's vanilla encoding: every cell of the used range, row-major, as
//! `A1,value|B1,value` with one line per row; empty cells are kept as `A1,` (App. L.1).

use super::{Sheet, SheetError, write_a1};
use alloc::string::String;

/// Options of the vanilla encoding.
#[derive(Debug, Clone, Copy)]
pub struct VanillaOptions {
    /// Append each cell's number-format string as a third field (`A1,3.5%,0.0%`).
    pub with_formats: bool,
    /// Refuse used ranges larger than this many cells (the encoding walks the dense range).
    pub max_area: u64,
}

impl Default for VanillaOptions {
    fn default() -> Self {
        VanillaOptions {
            with_formats: false,
            max_area: 50_000_000,
        }
    }
}

/// Calls `emit` once per row line (each ends in `\n`), so a caller can count tokens
/// without holding the whole encoding.
pub fn for_each_line(
    sheet: &Sheet,
    opts: &VanillaOptions,
    mut emit: impl FnMut(&str),
) -> Result<(), SheetError> {
    let Some(range) = sheet.used_range() else {
        return Ok(());
    };
    if range.area() > opts.max_area {
        return Err(SheetError::TooLarge {
            area: range.area(),
            limit: opts.max_area,
        });
    }
    let cells = sheet.cells();
    let mut next = cells.partition_point(|c| c.row < range.first_row);
    let mut line = String::new();
    for row in range.first_row..=range.last_row {
        line.clear();
        for col in range.first_col..=range.last_col {
            if col > range.first_col {
                line.push('|');
            }
            // Writing into a String cannot fail.
            let _ = write_a1(&mut line, row, col);
            line.push(',');
            while next < cells.len() && (cells[next].row, cells[next].col) < (row, col) {
                next += 1;
            }
            if let Some(c) = cells.get(next).filter(|c| c.row == row && c.col == col) {
                line.push_str(&c.text);
                if opts.with_formats {
                    line.push(',');
                    line.push_str(c.number_format.as_deref().unwrap_or("None"));
                }
            } else {
                line.push(' ');
            }
        }
        line.push('\n');
        emit(&line);
    }
    Ok(())
}

/// The whole vanilla encoding as one string.
pub fn encode(sheet: &Sheet, opts: &VanillaOptions) -> Result<String, SheetError> {
    let mut out = String::new();
    for_each_line(sheet, opts, |l| out.push_str(l))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sheet::{Cell, Sheet};
    use alloc::vec;

    #[test]
    fn rows_and_empty_cells() {
        let s = Sheet::new(
            "s",
            vec![
                Cell::text(0, 0, "Year"),
                Cell::text(0, 1, "Profit"),
                Cell::number(1, 0, "2024", None),
            ],
            vec![],
        )
        .unwrap();
        assert_eq!(
            encode(&s, &VanillaOptions::default()).unwrap(),
            "A1,Year|B1,Profit\nA2,2024|B2, \n"
        );
        let opts = VanillaOptions {
            with_formats: true,
            max_area: 2,
        };
        assert!(matches!(
            encode(&s, &opts),
            Err(SheetError::TooLarge { .. })
        ));
    }
}
