//! End-to-end runs of `goldcrest sheet` on corpus files.

use std::path::PathBuf;
use std::process::Command;

fn corpus(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/sheets/corpus")
        .join(rel)
}

fn goldcrest(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_goldcrest"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn encode_stats_line_has_the_promised_fields() {
    let f = corpus("r-cran-readxl-1.4.2-1/datasets.xls");
    let (ok, out, err) = goldcrest(&[
        "sheet",
        "encode",
        f.to_str().unwrap(),
        "--sheet",
        "iris",
        "--stats",
    ]);
    assert!(ok, "{err}");
    let last = out.lines().last().unwrap();
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(v["cells"], 755);
    let (vt, ct) = (
        v["vanilla_tokens"].as_u64().unwrap(),
        v["compressed_tokens"].as_u64().unwrap(),
    );
    assert!(ct > 0 && vt > ct);
    assert!((v["ratio"].as_f64().unwrap() - vt as f64 / ct as f64).abs() < 1e-9);
    // The encoding keeps the header and the species values, as (value|addresses) tuples.
    assert!(out.contains("\n(Sepal.Length|A1)\n"), "{out}");
    assert!(out.contains("\n(setosa|E2:E"), "{out}");
    // The JSON surface of the same index costs more tokens.
    let (ok, json_out, err) = goldcrest(&[
        "sheet",
        "encode",
        f.to_str().unwrap(),
        "--sheet",
        "iris",
        "--surface",
        "json",
        "--stats",
    ]);
    assert!(ok, "{err}");
    assert!(json_out.contains("\"Sepal.Length\":\"A1\""));
    let jv: serde_json::Value = serde_json::from_str(json_out.lines().last().unwrap()).unwrap();
    assert!(jv["compressed_tokens"].as_u64().unwrap() > ct);

    let (ok, out, _) = goldcrest(&[
        "sheet",
        "encode",
        f.to_str().unwrap(),
        "--sheet",
        "iris",
        "--mode",
        "vanilla",
        "--stats",
    ]);
    assert!(ok);
    assert!(out.contains("A1,Sepal.Length|B1,Sepal.Width|"));
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(v["ratio"], 1.0);
}

#[test]
fn tables_json_and_prompts() {
    let f = corpus("r-cran-readxl-1.4.2-1/geometry.xlsx");
    let (ok, out, err) = goldcrest(&["sheet", "tables", f.to_str().unwrap()]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        v,
        serde_json::json!([{"sheet": "Sheet1", "range": "B3:D6"}])
    );

    // Stage 2: the range is given in the compressed sheet's coordinates (A1 = first kept cell,
    // here B3) and printed back in the original ones.
    let (ok, out, err) = goldcrest(&[
        "sheet",
        "prompt",
        f.to_str().unwrap(),
        "--question",
        "What is in D6?",
        "--range",
        "A1:C4",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("### stage 1"));
    assert!(out.contains("### stage 2 (B3:D6, part 1 of 1)"));
    assert!(out.contains("B3,B3|C3,C3|D3,D3\n"));
}

#[test]
fn bad_input_is_a_clear_error() {
    let f = corpus("xlrd-1.2.0/biff4_no_format_no_window2.xls");
    let (ok, _, err) = goldcrest(&["sheet", "encode", f.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.starts_with("error: reading"), "{err}");
    assert!(!err.contains("panicked"));
    let (ok, _, err) = goldcrest(&["sheet", "tables", "/nonexistent.xlsx"]);
    assert!(!ok && err.contains("cannot read the file"), "{err}");
}

#[test]
fn tokenizer_choice_changes_counts_and_bad_files_are_errors() {
    let f = corpus("r-cran-readxl-1.4.2-1/geometry.xlsx");
    let f = f.to_str().unwrap();
    let stats = |tok: &str| {
        let (ok, out, err) = goldcrest(&["sheet", "encode", f, "--stats", "--tokenizer", tok]);
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        v["vanilla_tokens"].as_u64().unwrap()
    };
    // A vocabulary of the 256 single bytes only: every byte is one token.
    let dir = std::env::temp_dir().join(format!("goldcrest-sheet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bytes_only = dir.join("bytes.tiktoken");
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let vocab: String = (0..=255u32)
        .map(|b| {
            let (c0, c1) = (A[(b >> 2) as usize], A[((b & 3) << 4) as usize]);
            format!("{}{}== {b}\n", c0 as char, c1 as char)
        })
        .collect();
    std::fs::write(&bytes_only, vocab).unwrap();
    let (ok, out, _) = goldcrest(&["sheet", "encode", f, "--mode", "vanilla"]);
    assert!(ok);
    let vanilla_bytes: usize = out.lines().skip(1).map(|l| l.len() + 1).sum();
    assert_eq!(stats(bytes_only.to_str().unwrap()) as usize, vanilla_bytes);
    assert!(stats("cl100k") < vanilla_bytes as u64);
    // An HF tokenizer.json goes through goldcrest's tokenizer: Qwen2 splits digits one by one,
    // so the many-digit addresses and values of iris cost more than under cl100k.
    let qwen = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../vocab/qwen2/tokenizer.json");
    let iris = corpus("r-cran-readxl-1.4.2-1/datasets.xls");
    let iris_stats = |tok: &str| {
        let args = [
            "sheet",
            "encode",
            iris.to_str().unwrap(),
            "--sheet",
            "iris",
            "--stats",
            "--tokenizer",
            tok,
        ];
        let (ok, out, err) = goldcrest(&args);
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        v["vanilla_tokens"].as_u64().unwrap()
    };
    let (qwen_count, cl100k_count) = (iris_stats(qwen.to_str().unwrap()), iris_stats("cl100k"));
    assert!(qwen_count > cl100k_count, "{qwen_count} {cl100k_count}");
    let (ok, _, err) = goldcrest(&[
        "sheet",
        "report",
        f,
        "--tokenizer",
        "/nonexistent/tokenizer.json",
    ]);
    assert!(
        !ok && err.contains("tokenizer") && !err.contains("panicked"),
        "{err}"
    );
    let broken = dir.join("broken.tiktoken");
    std::fs::write(&broken, "no$base64 0\n").unwrap();
    let (ok, _, err) = goldcrest(&[
        "sheet",
        "encode",
        f,
        "--tokenizer",
        broken.to_str().unwrap(),
    ]);
    assert!(
        !ok && err.contains("bad base64") && !err.contains("panicked"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ask_runs_chain_of_spreadsheet_with_a_goldcrest_model() {
    // A tiny random RWKV-6 with a byte-level vocabulary (tools/sheet/make_ask_fixture.py): the
    // replies are noise; this checks the pipeline, not the answers.
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/sheets/tiny_rwkv6_bytes.safetensors");
    let model = model.to_str().unwrap();
    let f = corpus("r-cran-readxl-1.4.2-1/geometry.xlsx");
    let f = f.to_str().unwrap();
    let ask = |extra: &[&str]| {
        let mut args = vec![
            "sheet",
            "ask",
            f,
            "--question",
            "What is in D6?",
            "--model",
            model,
        ];
        args.extend_from_slice(extra);
        let (ok, out, err) = goldcrest(&args);
        assert!(ok, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    let v = ask(&["--max-tokens", "12"]);
    let s1 = &v["stage1"];
    // The compressed sheet plus the question, one token per byte.
    assert!(s1["prompt_tokens"].as_u64().unwrap() > 300);
    assert!(s1["generated_tokens"].as_u64().unwrap() <= 12);
    match s1["region_from"].as_str().unwrap() {
        // A range the model named, mapped back to the sheet's own coordinates.
        "model" => assert!(s1["range"].is_string()),
        // Otherwise the heuristic detector's table (this sheet's only table).
        from => {
            assert_eq!(from, "detector");
            assert!(s1["range"].is_null());
            assert_eq!(s1["region"], "B3:D6");
        }
    }
    let parts = v["stage2"]["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 1);
    assert!(parts[0]["generated_tokens"].as_u64().unwrap() <= 12);
    // Greedy decoding: the same run gives the same replies.
    assert_eq!(ask(&["--max-tokens", "12"]), v);

    // Over the budget the table is split: header + one body row per prompt (the paper's rule,
    // with chunks of one row), so one part per body row of whatever region stage 1 chose.
    let v = ask(&["--max-tokens", "2", "--budget", "20", "--chunk-rows", "1"]);
    let region = v["stage1"]["region"].as_str().unwrap();
    let row = |a1: &str| {
        a1.trim_start_matches(char::is_alphabetic)
            .parse::<usize>()
            .unwrap()
    };
    let (top, bottom) = region.split_once(':').map_or((region, region), |p| p);
    let body_rows = row(bottom) - row(top);
    assert_eq!(
        v["stage2"]["parts"].as_array().unwrap().len(),
        body_rows.max(1)
    );
    assert_eq!(v["stage2"]["budget"], 20);
}

#[test]
fn ask_refuses_what_it_cannot_run() {
    let tiny = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/rwkv6/tiny_a.safetensors");
    let f = corpus("r-cran-readxl-1.4.2-1/geometry.xlsx");
    let base = [
        "sheet",
        "ask",
        f.to_str().unwrap(),
        "--question",
        "q",
        "--model",
        tiny.to_str().unwrap(),
    ];
    // tiny_a embeds no tokenizer; the World vocabulary's ids exceed its 96-token head.
    let (ok, _, err) = goldcrest(&base);
    assert!(!ok && err.contains("no tokenizer"), "{err}");
    let (ok, _, err) = goldcrest(&[&base[..], &["--tokenizer", "world"]].concat());
    assert!(
        !ok && err.contains("outside the model's vocabulary"),
        "{err}"
    );
    // A workbook with several sheets needs --sheet.
    let multi = corpus("r-cran-readxl-1.4.2-1/clippy.xlsx");
    let (ok, _, err) = goldcrest(&[
        "sheet",
        "ask",
        multi.to_str().unwrap(),
        "--question",
        "q",
        "--model",
        tiny.to_str().unwrap(),
    ]);
    assert!(
        !ok && err.contains("--sheet") && !err.contains("panicked"),
        "{err}"
    );
}
