//! The tokenizer subcommands, run as a user would.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(args: &[&str], stdin: &[u8]) -> (bool, Vec<u8>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_goldcrest"))
        .args(args)
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("goldcrest runs");
    // The tool may exit before reading (a bad --tokenizer), closing the pipe early.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const QWEN: &str = "vocab/qwen2/tokenizer.json";

#[test]
fn tokenize_and_detokenize_round_trip_byte_for_byte() {
    let text = "Hello, world!\n\n  <|im_end|> 中文 😀\r\n";
    let (ok, ids, err) = run(&["tokenize", "--tokenizer", QWEN], text.as_bytes());
    assert!(ok, "{err}");
    let parsed: Vec<u32> = serde_json::from_slice(&ids).unwrap();
    assert!(
        !parsed.contains(&151645),
        "special text is plain by default"
    );
    let (ok, back, err) = run(&["detokenize", "--tokenizer", QWEN], &ids);
    assert!(ok, "{err}");
    assert_eq!(back, text.as_bytes());
    let (_, special, _) = run(
        &["tokenize", "--tokenizer", QWEN, "--special"],
        text.as_bytes(),
    );
    let parsed: Vec<u32> = serde_json::from_slice(&special).unwrap();
    assert!(parsed.contains(&151645));
}

#[test]
fn tokens_escape_partial_characters_and_jsonl_keeps_newlines() {
    let (ok, out, err) = run(
        &[
            "tokenize",
            "--tokenizer",
            "vocab/rwkv/rwkv_vocab_v20230424.txt",
            "--tokens",
        ],
        b"ab\xff",
    );
    assert!(ok, "{err}");
    let tokens: Vec<String> = serde_json::from_slice(&out).unwrap();
    assert_eq!(tokens.last().unwrap(), "\\xff");
    let input = b"{\"text\": \"a\\nb\"}\n{\"text\": \"\"}\n";
    let (ok, out, err) = run(&["tokenize", "--tokenizer", QWEN, "--jsonl"], input);
    assert!(ok, "{err}");
    let lines: Vec<&str> = std::str::from_utf8(&out).unwrap().lines().collect();
    assert_eq!(lines, vec![r#"{"ids":[64,198,65]}"#, r#"{"ids":[]}"#]);
}

#[test]
fn bad_inputs_fail_with_a_message() {
    let (ok, _, err) = run(&["tokenize", "--tokenizer", "Cargo.toml"], b"x");
    assert!(!ok && err.contains("error"), "{err}");
    let (ok, _, err) = run(
        &["tokenize", "--tokenizer", QWEN, "--jsonl"],
        b"{\"txt\": 1}\n",
    );
    assert!(!ok && err.contains("\"text\""), "{err}");
    let (ok, _, err) = run(&["detokenize", "--tokenizer", QWEN], b"[1, -2]");
    assert!(!ok && err.contains("not a token id"), "{err}");
    let (ok, _, err) = run(&["detokenize", "--tokenizer", QWEN], b"[999999]");
    assert!(!ok && err.contains("999999"), "{err}");
}

#[test]
fn vocab_size_prints_the_three_methods() {
    let (ok, out, err) = run(
        &[
            "vocab-size",
            "--non-vocab-params",
            "3e9",
            "--flops",
            "2.3e21",
        ],
        b"",
    );
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    for key in ["isoflops", "derivative", "parametric"] {
        assert!(v[key].as_u64().unwrap() > 30_000, "{v}");
    }
    assert_eq!((v["parametric"].as_u64().unwrap() + 500) / 1000, 43);
}

#[test]
fn train_bpe_writes_a_loadable_tokenizer() {
    let dir = std::env::temp_dir().join(format!("goldcrest-train-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let corpus = dir.join("corpus.txt");
    let text: String = (0..300)
        .map(|i| format!("line {i}: the cat sat on the mat, 中文 {} times\n", i % 5))
        .collect();
    std::fs::write(&corpus, &text).unwrap();
    let output = dir.join("tokenizer.json");
    let (ok, _, err) = run(
        &[
            "train-bpe",
            "--vocab-size",
            "320",
            "--input",
            corpus.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ],
        b"",
    );
    assert!(ok, "{err}");
    let (ok, ids, err) = run(
        &["tokenize", "--tokenizer", output.to_str().unwrap()],
        b"the cat sat",
    );
    assert!(ok, "{err}");
    let ids: Vec<u32> = serde_json::from_slice(&ids).unwrap();
    assert!(ids.len() < 11, "{ids:?}");
    std::fs::remove_dir_all(&dir).ok();
}
