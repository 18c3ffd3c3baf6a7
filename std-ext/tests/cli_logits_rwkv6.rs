//! `goldcrest logits` on the golden fixture: the JSON lines parse back to the reference logits
//! (tolerance 1e-4), whatever the chunk size.

use std::process::Command;

fn fixture(file: &str) -> String {
    format!(
        "{}/../tests/fixtures/rwkv6/{file}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn golden() -> (Vec<u32>, Vec<f32>) {
    let bytes = std::fs::read(fixture("tiny_a.golden.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let words = |name: &str| -> Vec<[u8; 4]> {
        let t = st.tensor(name).unwrap();
        t.data()
            .chunks_exact(4)
            .map(|b| [b[0], b[1], b[2], b[3]])
            .collect()
    };
    let tokens = words("tokens")
        .into_iter()
        .map(|b| i32::from_le_bytes(b) as u32)
        .collect();
    (
        tokens,
        words("step_logits")
            .into_iter()
            .map(f32::from_le_bytes)
            .collect(),
    )
}

#[test]
fn logits_lines_match_the_reference() {
    let (tokens, reference) = golden();
    let ids: Vec<String> = tokens.iter().map(|t| t.to_string()).collect();
    for chunk in ["1", "5", "64"] {
        let out = Command::new(env!("CARGO_BIN_EXE_goldcrest"))
            .args([
                "logits",
                "--model",
                &fixture("tiny_a.safetensors"),
                "--chunk",
                chunk,
            ])
            .args(["--ids", &ids.join(",")])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let mut got = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["pos"], i);
            got.extend(
                v["logits"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32),
            );
        }
        assert_eq!(got.len(), reference.len());
        let d = got
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(d <= 1e-4, "chunk {chunk}: {d}");
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_goldcrest"))
        .args([
            "logits",
            "--model",
            &fixture("tiny_a.safetensors"),
            "--ids",
            "1,96",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("token id 96 at position 1"));
}

#[test]
fn bench_json_reports_both_rates() {
    let out = Command::new(env!("CARGO_BIN_EXE_goldcrest"))
        .args(["bench", "--model", &fixture("tiny_b.safetensors"), "--json"])
        .args([
            "--prompt-tokens",
            "9",
            "--gen-tokens",
            "3",
            "--chunk",
            "4",
            "--repeat",
            "1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in ["prefill_tokens_per_s", "decode_tokens_per_s"] {
        assert!(v[key].as_f64().is_some_and(|r| r > 0.0), "{key} in {v}");
    }
    assert_eq!(v["prompt_tokens"], 9);
    let zero = Command::new(env!("CARGO_BIN_EXE_goldcrest"))
        .args([
            "bench",
            "--model",
            &fixture("tiny_b.safetensors"),
            "--repeat",
            "0",
        ])
        .output()
        .unwrap();
    assert!(!zero.status.success());
}
