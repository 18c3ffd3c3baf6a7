//! Reader tests over the committed corpus (tests/fixtures/sheets) and hostile inputs.

use goldcrest_alloc::sheet::compress::{CompressOptions, compress};
use goldcrest_alloc::sheet::index::InvertedIndex;
use goldcrest_alloc::sheet::{CellKind, SheetError};
use goldcrest_std::sheet::{ReadError, ReadOptions, count_tokens, read_bytes, read_csv, read_path};
use proptest::prelude::*;
use std::path::PathBuf;

fn corpus(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/sheets/corpus")
        .join(rel)
}

#[test]
fn xlsx_values_number_formats_and_dates() {
    let sheets = read_path(
        &corpus("r-cran-readxl-1.4.2-1/deaths.xlsx"),
        Some("arts"),
        &ReadOptions::default(),
    )
    .unwrap();
    let s = &sheets[0];
    assert_eq!(s.get(4, 0).unwrap().text, "Name");
    let age = s.get(5, 2).unwrap();
    assert_eq!((age.text.as_str(), age.kind), ("69", CellKind::Number));
    let born = s.get(5, 4).unwrap();
    assert_eq!(born.kind, CellKind::DateTime);
    assert!(born.number_format.is_some());
    // David Bowie, born 8 January 1947, shown through the sheet's own date format.
    assert_eq!(born.text, "01-08-47");
    assert_eq!(s.get(5, 3).unwrap().kind, CellKind::Bool);
}

#[test]
fn xlsx_and_xls_merged_cells() {
    let x = read_path(
        &corpus("xlrd-1.2.0/merged_cells.xlsx"),
        None,
        &ReadOptions::default(),
    )
    .unwrap();
    assert!(x.iter().any(|s| !s.merged().is_empty()));
    let xls = read_path(
        &corpus("xlrd-1.2.0/xf_class.xls"),
        None,
        &ReadOptions::default(),
    )
    .unwrap();
    assert!(!xls.is_empty());
}

#[test]
fn every_corpus_file_reads_or_fails_cleanly() {
    let dir = corpus("");
    for group in std::fs::read_dir(&dir).unwrap() {
        for f in std::fs::read_dir(group.unwrap().path()).unwrap() {
            let path = f.unwrap().path();
            match read_path(&path, None, &ReadOptions::default()) {
                Ok(sheets) => {
                    for s in sheets {
                        let idx = InvertedIndex::build(
                            s.cells().iter().map(|c| (c.row, c.col, c.text.as_str())),
                        );
                        let mut want: Vec<_> = s
                            .cells()
                            .iter()
                            .map(|c| (c.row, c.col, c.text.clone()))
                            .collect();
                        want.sort();
                        assert_eq!(idx.decode(), want, "{}", path.display());
                        compress(&s, &CompressOptions::default()).unwrap();
                    }
                }
                Err(e) => assert!(!e.to_string().is_empty()),
            }
        }
    }
}

#[test]
fn zip_bomb_guard_refuses_large_declared_size() {
    let bytes = std::fs::read(corpus("r-cran-readxl-1.4.2-1/deaths.xlsx")).unwrap();
    let opts = ReadOptions {
        max_decompressed_bytes: 10_000,
        ..ReadOptions::default()
    };
    assert!(matches!(
        read_bytes(&bytes, None, &opts),
        Err(ReadError::DecompressedTooLarge { .. })
    ));
}

#[test]
fn cell_cap_bounds_memory() {
    let opts = ReadOptions {
        max_cells: 100,
        ..ReadOptions::default()
    };
    let err = read_path(
        &corpus("r-cran-readxl-1.4.2-1/datasets.xls"),
        Some("iris"),
        &opts,
    )
    .unwrap_err();
    let ReadError::InSheet { sheet, source } = err else {
        panic!("expected a sheet error, got {err}");
    };
    assert_eq!(sheet, "iris");
    assert!(matches!(
        *source,
        ReadError::Sheet(SheetError::TooManyCells { limit: 100 })
    ));
}

#[test]
fn encrypted_and_garbage_inputs_are_errors() {
    let mut ole = vec![0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];
    ole.extend(vec![0u8; 504]);
    ole.extend(
        "EncryptedPackage"
            .encode_utf16()
            .flat_map(|u| u.to_le_bytes()),
    );
    assert!(matches!(
        read_bytes(&ole, None, &ReadOptions::default()),
        Err(ReadError::Encrypted)
    ));
    assert!(read_bytes(b"not a workbook", None, &ReadOptions::default()).is_err());
    let bytes = std::fs::read(corpus("r-cran-readxl-1.4.2-1/deaths.xlsx")).unwrap();
    assert!(read_bytes(&bytes[..bytes.len() / 2], None, &ReadOptions::default()).is_err());
    assert!(matches!(
        read_path(
            &corpus("r-cran-readxl-1.4.2-1/deaths.xlsx"),
            Some("nope"),
            &ReadOptions::default()
        ),
        Err(ReadError::NoSuchSheet(_))
    ));
}

#[test]
fn csv_ragged_rows_and_numbers() {
    let s = read_csv(
        b"a,b,c\n1,2\n,x,3.5,extra\n",
        "t",
        b',',
        &ReadOptions::default(),
    )
    .unwrap();
    assert_eq!(s.cells().len(), 8);
    assert_eq!(s.get(1, 0).unwrap().kind, CellKind::Number);
    assert_eq!(s.get(2, 3).unwrap().text, "extra");
}

#[test]
fn cl100k_counts() {
    // tiktoken cl100k_base: "hello world" is [15339, 1917].
    assert_eq!(count_tokens("hello world"), 2);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn corrupted_xlsx_never_panics(pos in 0usize..9000, val in any::<u8>(), cut in 100usize..9403) {
        let mut bytes = std::fs::read(corpus("r-cran-readxl-1.4.2-1/clippy.xlsx")).unwrap();
        let p = pos % bytes.len();
        bytes[p] = val;
        bytes.truncate(cut.max(p + 1));
        let _ = read_bytes(&bytes, None, &ReadOptions::default());
    }
}

#[test]
fn formula_errors_are_error_cells() {
    let x = read_path(
        &corpus("r-cran-openxlsx-4.2.5.2-1/readTest.xlsx"),
        Some("Sheet1"),
        &ReadOptions::default(),
    )
    .unwrap();
    let c = x[0].get(1, 7).unwrap();
    assert_eq!((c.text.as_str(), c.kind), ("#DIV/0!", CellKind::Error));
    let xls = read_path(
        &corpus("xlrd-1.2.0/formula_test_sjmachin.xls"),
        None,
        &ReadOptions::default(),
    )
    .unwrap();
    let c = xls[0].get(6, 1).unwrap();
    assert_eq!((c.text.as_str(), c.kind), ("#DIV/0!", CellKind::Error));
}

/// A minimal OpenDocument spreadsheet, stored uncompressed.
fn tiny_ods(content: &str) -> Vec<u8> {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    w.start_file("mimetype", stored).unwrap();
    w.write_all(b"application/vnd.oasis.opendocument.spreadsheet")
        .unwrap();
    w.start_file("META-INF/manifest.xml", stored).unwrap();
    w.write_all(br#"<?xml version="1.0" encoding="UTF-8"?><manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.2"><manifest:file-entry manifest:full-path="/" manifest:media-type="application/vnd.oasis.opendocument.spreadsheet"/><manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/></manifest:manifest>"#).unwrap();
    w.start_file("content.xml", stored).unwrap();
    w.write_all(content.as_bytes()).unwrap();
    w.finish().unwrap().into_inner()
}

#[test]
fn ods_values_and_dates() {
    let content = r#"<?xml version="1.0" encoding="UTF-8"?>
<office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" office:version="1.2"><office:body><office:spreadsheet>
<table:table table:name="Data">
<table:table-row><table:table-cell office:value-type="string"><text:p>Year</text:p></table:table-cell><table:table-cell office:value-type="string"><text:p>When</text:p></table:table-cell></table:table-row>
<table:table-row><table:table-cell office:value-type="float" office:value="2024"><text:p>2024</text:p></table:table-cell><table:table-cell office:value-type="date" office:date-value="2024-02-14"><text:p>14.02.24</text:p></table:table-cell></table:table-row>
</table:table></office:spreadsheet></office:body></office:document-content>"#;
    let sheets = read_bytes(&tiny_ods(content), None, &ReadOptions::default()).unwrap();
    assert_eq!(sheets[0].name, "Data");
    let year = sheets[0].get(1, 0).unwrap();
    assert_eq!((year.text.as_str(), year.kind), ("2024", CellKind::Number));
    let when = sheets[0].get(1, 1).unwrap();
    assert_eq!(when.kind, CellKind::DateTime);
    assert!(when.text.starts_with("2024-02-14"), "{}", when.text);
}

#[test]
fn xls_dates_and_times_without_format_strings() {
    let s = read_path(
        &corpus("xlrd-1.2.0/Formate.xls"),
        Some("Blätt1"),
        &ReadOptions::default(),
    )
    .unwrap();
    let text = |r, c| s[0].get(r, c).unwrap().text.clone();
    assert_eq!(text(0, 0), "Huber");
    assert_eq!(text(0, 1), "1907-07-03");
    assert_eq!(text(3, 1), "06:34:00");
    assert_eq!(text(6, 1), "0.974");
}

#[test]
fn real_zip_bomb_is_stopped_while_inflating() {
    use std::io::Write;
    // 64 MiB of zeros deflate to about 64 KiB; the cap is 8 MiB.
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let deflated = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(false);
    w.start_file("xl/sharedStrings.xml", deflated).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        w.write_all(&zeros).unwrap();
    }
    let bytes = w.finish().unwrap().into_inner();
    assert!(bytes.len() < 1 << 20);
    let opts = ReadOptions {
        max_decompressed_bytes: 8 << 20,
        ..ReadOptions::default()
    };
    let err = read_bytes(&bytes, None, &opts).unwrap_err();
    assert!(
        matches!(err, ReadError::DecompressedTooLarge { .. }),
        "{err}"
    );
}
