//! The `goldcrest` subcommands on the GoldFinch golden fixtures (`tests/fixtures/goldfinch/`,
//! from goldcrest's float64 numpy reference): `logits` equals the reference logits, `perplexity`
//! equals the NLL computed from them, a context saved by `generate --state-out` and restored by
//! `--state-in` continues exactly as one uninterrupted run, and `bench`/`inspect` report the
//! cache. Tolerance on logits 1e-4 absolute.

use std::process::{Command, Output};

fn fixture(file: &str) -> String {
    format!(
        "{}/../tests/fixtures/goldfinch/{file}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn goldcrest(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_goldcrest"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Tokens and whole-sequence logits [T, V] of a fixture's golden file.
fn golden(name: &str) -> (Vec<u32>, Vec<f32>) {
    let bytes = std::fs::read(fixture(&format!("{name}.golden.safetensors"))).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let words = |name: &str| -> Vec<[u8; 4]> {
        st.tensor(name)
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|b| [b[0], b[1], b[2], b[3]])
            .collect()
    };
    (
        words("tokens")
            .into_iter()
            .map(|b| i32::from_le_bytes(b) as u32)
            .collect(),
        words("full_logits")
            .into_iter()
            .map(f32::from_le_bytes)
            .collect(),
    )
}

fn join(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

#[test]
fn logits_match_the_reference() {
    for name in ["tiny_a", "tiny_b"] {
        let (tokens, reference) = golden(name);
        for chunk in ["1", "64"] {
            let model = fixture(&format!("{name}.safetensors"));
            let out = goldcrest(&[
                "logits",
                "--model",
                &model,
                "--chunk",
                chunk,
                "--ids",
                &join(&tokens),
            ]);
            let mut got = Vec::new();
            for (i, line) in String::from_utf8(out.stdout).unwrap().lines().enumerate() {
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
            assert!(d <= 1e-4, "{name} chunk {chunk}: {d}");
        }
    }
}

#[test]
fn perplexity_equals_the_reference_nll() {
    let (tokens, reference) = golden("tiny_b");
    let v = reference.len() / tokens.len();
    let nll: f64 = (0..tokens.len() - 1)
        .map(|t| {
            let row = &reference[t * v..(t + 1) * v];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
            max + sum.ln() - row[tokens[t + 1] as usize] as f64
        })
        .sum::<f64>()
        / (tokens.len() - 1) as f64;
    for chunk in ["1", "3"] {
        let out = goldcrest(&[
            "perplexity",
            "--model",
            &fixture("tiny_b.safetensors"),
            "--chunk",
            chunk,
            "--ids",
            &join(&tokens),
        ]);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["arch"], "goldfinch");
        assert_eq!(report["tokens"], tokens.len() - 1);
        let got = report["mean_nll"].as_f64().unwrap();
        assert!((got - nll).abs() < 1e-4, "chunk {chunk}: {got} vs {nll}");
    }
}

/// Greedy ids printed by `generate --emit-ids` and its stderr.
fn generate(model: &str, ids: &[u32], max: usize, state: &[&str]) -> (Vec<u32>, String) {
    let max = max.to_string();
    let mut args = vec![
        "generate",
        "--model",
        model,
        "--greedy",
        "--emit-ids",
        "--max-tokens",
        &max,
    ];
    let ids = join(ids);
    args.extend(["--ids", &ids]);
    args.extend(state);
    let out = goldcrest(&args);
    let text = String::from_utf8(out.stdout).unwrap();
    (
        text.trim()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn saved_context_continues_like_one_run() {
    let model = fixture("tiny_a.safetensors");
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("context.gcgf");
    let saved = saved.to_str().unwrap();
    let prompt = [5u32, 17, 3, 40];
    // tiny_a: C 128, one GOLD layer, c_dim 8: 4 + 4·8 + 2·(2·128) bytes per token with the
    // default f16 keys and values.
    let (first, log) = generate(&model, &prompt, 4, &["--state-out", saved]);
    assert_eq!(first.len(), 4);
    // The context holds the prompt and every printed token (the last one is run for the save).
    let held = prompt.len() + first.len();
    assert!(
        log.contains(&format!(
            "cache in use: {held} tokens, {} bytes working",
            held * 548
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!("{} bytes at rest (36 per token", held * 36)),
        "{log}"
    );
    let bytes = std::fs::read(saved).unwrap();
    assert_eq!(&bytes[..8], b"GCGOLDF\0");

    let (continued, _) = generate(&model, &[9], 5, &["--state-in", saved]);
    let mut whole: Vec<u32> = prompt.to_vec();
    whole.extend(&first);
    whole.push(9);
    let (uninterrupted, _) = generate(&model, &whole, 5, &[]);
    assert_eq!(continued, uninterrupted);

    // A context saved from one model does not restore into another.
    let other = Command::new(env!("CARGO_BIN_EXE_goldcrest"))
        .args(["generate", "--model", &fixture("tiny_b.safetensors")])
        .args(["--ids", "1", "--greedy", "--state-in", saved])
        .output()
        .unwrap();
    assert!(!other.status.success());
    assert!(String::from_utf8_lossy(&other.stderr).contains("restoring the state"));
}

#[test]
fn bench_and_inspect_report_the_cache() {
    let out = goldcrest(&[
        "bench",
        "--model",
        &fixture("tiny_b.safetensors"),
        "--json",
        "--prompt-tokens",
        "6",
        "--gen-tokens",
        "3",
        "--repeat",
        "1",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["arch"], "goldfinch");
    for key in ["prefill_tokens_per_s", "decode_tokens_per_s"] {
        assert!(v[key].as_f64().is_some_and(|r| r > 0.0), "{key} in {v}");
    }

    // With 20 tokens already in the context (restored from a synthetic saved context), and
    // the cache per token: tiny_b with f16 keys and values, 4 + 4·8 + 2·(2·128·2).
    let out = goldcrest(&[
        "bench",
        "--model",
        &fixture("tiny_b.safetensors"),
        "--json",
        "--context",
        "20",
        "--prompt-tokens",
        "4",
        "--gen-tokens",
        "2",
        "--repeat",
        "1",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["context"], 20);
    assert!(
        v["context_filled"]
            .as_str()
            .unwrap()
            .starts_with("restored"),
        "{v}"
    );
    assert_eq!(v["cache_bytes_per_token"], 1060);
    assert_eq!(v["cache_at_rest_bytes_per_token"], 36);

    let out = goldcrest(&["inspect", "--json", &fixture("tiny_b.safetensors")]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let plan = &v["memory_plan"];
    // tiny_b: C 128, 2 GOLD layers, c_dim 8: 4 + 4·8 + 2·(2·128·2) working with f16 keys and
    // values (4 + 4·(8 + 2·128·2) with f32), 4 + 4·8 at rest.
    let assumes = plan["assumes"].as_str().unwrap();
    assert!(assumes.contains("1060 B working with f16"), "{assumes}");
    assert!(assumes.contains("(2084 B with f32)"), "{assumes}");
    assert!(assumes.contains("36 B at rest"), "{assumes}");
    assert!(plan["state_bytes"].as_u64().unwrap() > 4096 * 1060);
}
