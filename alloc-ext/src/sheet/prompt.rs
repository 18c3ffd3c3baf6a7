//! Prompt builders: table detection on the compressed sheet (App. L.2) and Chain of
//! Spreadsheet (§3.5, App. M.2): stage 1 finds the one table relevant to a question on the
//! compressed sheet; stage 2 answers on that region encoded without compression, split into
//! header + body chunks when it exceeds a token budget.
//!
//! The wording is ours; it asks for the same things as the paper's prompts.

use super::vanilla::{self, VanillaOptions};
use super::{CellRange, Sheet, SheetError};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

const COMPRESSED_INTRO: &str = "You are given a spreadsheet in a compressed form. Each line \
is a tuple (value|addresses): a cell value, then after the last | the cell addresses or \
rectangular ranges (A1 notation) that hold it; empty cells are not listed. Runs of numbers, dates and similar typed cells may be replaced by \
their number-format string (such as #,##0 or yyyy-mm-dd) or by a type label (IntNum, FloatNum, \
PercentageNum, ScientificNum, DateData, TimeData, CurrencyData, EmailData, YearData).";

/// The table-detection prompt over an already compressed encoding.
pub fn table_detection(encoding: &str) -> String {
    format!(
        "{COMPRESSED_INTRO}\n\nFind every table in the spreadsheet. A table range covers only \
its header rows and its data rows; do not include titles, notes or comments around it. \
Answer with the ranges only, in the form ['range': 'A1:F9', 'range': 'A12:F18'].\n\n\
Spreadsheet:\n{encoding}"
    )
}

/// Chain of Spreadsheet stage 1: which single table answers the question.
pub fn cos_stage1(encoding: &str, question: &str) -> String {
    format!(
        "{COMPRESSED_INTRO}\n\nQuestion: {question}\n\nDecide which table of the spreadsheet \
holds the answer to the question and return the range of that ONE table only, in the form \
['range': 'A1:F9'].\n\nSpreadsheet:\n{encoding}"
    )
}

/// The stage 2 prompt around an already encoded table region (used by [`cos_stage2`]; public
/// so a caller can measure the template's own tokens when fitting a model's context).
pub fn stage2_text(region: &str, question: &str) -> String {
    format!(
        "Below is one table of a spreadsheet, one row per line, as address,value pairs \
separated by |; an empty cell shows only its address. Answer the question with the address \
of the cell holding the answer, as [B3], or with a formula over addresses that computes it, \
as [SUM(A2:A10)].\n\nQuestion: {question}\n\nTable:\n{region}"
    )
}

/// How stage 2 cuts a table that exceeds the token budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// As many body rows per prompt as fit the budget next to the header (at least one).
    FillBudget,
    /// A fixed number of body rows per prompt; the paper's App. M.2 uses 3.
    Rows(usize),
}

/// Chain of Spreadsheet stage 2 prompts for `region` (original addresses), encoded without
/// compression. When the region's encoding takes more than `budget` tokens (as counted by
/// `count_tokens`), the first row is taken as the header and the body is cut into chunks of
/// consecutive rows per `split`, each sent with the header, one prompt per chunk.
pub fn cos_stage2(
    sheet: &Sheet,
    region: CellRange,
    question: &str,
    budget: usize,
    split: Split,
    count_tokens: &dyn Fn(&str) -> usize,
) -> Result<Vec<String>, SheetError> {
    let region_sheet = sheet.crop(region);
    let opts = VanillaOptions::default();
    let mut lines: Vec<String> = Vec::new();
    // Encode over the full region so addresses and empty cells are the region's own.
    let mut padded = region_sheet.clone();
    padded = pad_to(padded, region)?;
    vanilla::for_each_line(&padded, &opts, |l| lines.push(String::from(l)))?;
    let whole: String = lines.concat();
    if count_tokens(&whole) <= budget || lines.len() <= 1 {
        return Ok(alloc::vec![stage2_text(&whole, question)]);
    }
    let header = &lines[0];
    let header_tokens = count_tokens(header);
    let mut prompts = Vec::new();
    let mut chunk = String::new();
    let mut chunk_tokens = 0;
    let mut chunk_rows = 0;
    for line in &lines[1..] {
        let t = count_tokens(line);
        let full = match split {
            Split::FillBudget => header_tokens + chunk_tokens + t > budget,
            Split::Rows(n) => chunk_rows >= n.max(1),
        };
        if !chunk.is_empty() && full {
            prompts.push(stage2_text(&format!("{header}{chunk}"), question));
            chunk.clear();
            chunk_tokens = 0;
            chunk_rows = 0;
        }
        chunk.push_str(line);
        chunk_tokens += t;
        chunk_rows += 1;
    }
    if !chunk.is_empty() {
        prompts.push(stage2_text(&format!("{header}{chunk}"), question));
    }
    Ok(prompts)
}

/// The first A1 range in a model's stage 1 (or table detection) answer, such as
/// `['range': 'B2:D9']` or `The table is B2:D9.`; a lone cell counts as a one-cell range. The
/// range is in the coordinates of the sheet the model saw (map it back with
/// [`super::anchors::CoordMap::range_to_original`]).
pub fn parse_range_answer(answer: &str) -> Option<CellRange> {
    let bytes = answer.as_bytes();
    let mut start = 0;
    while start < bytes.len() {
        // A candidate starts at a letter that does not continue a word.
        let boundary = start == 0 || !bytes[start - 1].is_ascii_alphanumeric();
        if boundary && bytes[start].is_ascii_alphabetic() {
            let mut end = start;
            while end < bytes.len()
                && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b':' || bytes[end] == b'$')
            {
                end += 1;
            }
            let word = answer[start..end].trim_end_matches(':');
            if let Ok(r) = CellRange::parse(word) {
                return Some(r);
            }
            start = end.max(start + 1);
        } else {
            start += 1;
        }
    }
    None
}

/// The answer of a stage 2 reply: the text inside the first `[...]` (a cell address such as
/// `B3` or a formula such as `SUM(A2:A10)`), trimmed; `None` when there is no bracketed answer.
pub fn parse_stage2_answer(answer: &str) -> Option<&str> {
    let open = answer.find('[')?;
    let rest = &answer[open + 1..];
    let close = rest.find(']')?;
    let inner = rest[..close].trim();
    (!inner.is_empty()).then_some(inner)
}

/// Makes the vanilla walk cover exactly `region`: corner markers are empty merges, which widen
/// the used range without adding text.
fn pad_to(sheet: Sheet, region: CellRange) -> Result<Sheet, SheetError> {
    let mut merged: Vec<CellRange> = Vec::new();
    let cells = sheet.cells().to_vec();
    // A merged range over the whole region is enough to fix the used range; it carries no text.
    if region.area() >= 2 {
        merged.push(region);
    }
    Sheet::new(sheet.name, cells, merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sheet::Cell;
    use alloc::vec;
    use proptest::prelude::*;

    #[test]
    fn ranges_and_answers_are_read_from_model_replies() {
        let r = |s: &str| parse_range_answer(s).map(|r| alloc::format!("{r}"));
        assert_eq!(r("['range': 'B2:D9']").as_deref(), Some("B2:D9"));
        assert_eq!(r("The table is b2:d9.").as_deref(), Some("B2:D9"));
        assert_eq!(r("range A1").as_deref(), Some("A1"));
        assert_eq!(r("Table1 is at $C$3:$E$5").as_deref(), Some("C3:E5"));
        // Words that only contain an address do not count; neither do off-grid ones.
        assert_eq!(r("XA1B2 ZZZZ1 A0"), None);
        assert_eq!(r("no range here"), None);
        assert_eq!(r(""), None);
        assert_eq!(parse_stage2_answer("The answer is [B3]."), Some("B3"));
        assert_eq!(
            parse_stage2_answer("[ SUM(A2:A10) ] and [C1]"),
            Some("SUM(A2:A10)")
        );
        assert_eq!(parse_stage2_answer("[]"), None);
        assert_eq!(parse_stage2_answer("B3]"), None);
        assert_eq!(parse_stage2_answer("[B3"), None);
    }

    proptest! {
        #[test]
        fn reply_parsers_never_panic(s in "\\PC{0,40}") {
            let _ = parse_range_answer(&s);
            let _ = parse_stage2_answer(&s);
        }
    }

    #[test]
    fn stage2_splits_over_budget_and_repeats_header() {
        let mut cells = vec![Cell::text(1, 1, "Name"), Cell::text(1, 2, "Score")];
        for r in 2..12 {
            cells.push(Cell::text(r, 1, "x"));
            cells.push(Cell::number(r, 2, "1", None));
        }
        let s = Sheet::new("s", cells, vec![]).unwrap();
        let region = CellRange::parse("B2:C12").unwrap();
        let count = |t: &str| t.len();
        let one = cos_stage2(&s, region, "q", 10_000, Split::FillBudget, &count).unwrap();
        assert_eq!(one.len(), 1);
        assert!(one[0].contains("B2,Name|C2,Score\nB3,x|C3,1\n"));
        let many = cos_stage2(&s, region, "q", 60, Split::FillBudget, &count).unwrap();
        assert!(many.len() > 1);
        for p in &many {
            assert!(p.contains("B2,Name|C2,Score\n"));
        }
        assert!(many.last().unwrap().contains("B12,x|C12,1\n"));
        // The paper's rule: 10 body rows in chunks of 3 -> 4 prompts, the last with one row.
        let paper = cos_stage2(&s, region, "q", 60, Split::Rows(3), &count).unwrap();
        assert_eq!(paper.len(), 4);
        assert!(paper[3].contains("B2,Name|C2,Score\nB12,x|C12,1\n"));
        assert!(table_detection("(x|A1)").contains("'range'"));
        assert!(stage2_text("A1,x\n", "Who?").contains("Question: Who?"));
        assert!(cos_stage1("(x|A1)", "Who?").contains("Question: Who?"));
    }
}
