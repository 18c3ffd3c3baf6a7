//! The `goldcrest` subcommands on the GoldFinch golden fixtures (`tests/fixtures/goldfinch/`,
//! from goldcrest's float64 numpy reference): `logits` equals the reference logits, `perplexity`
//! equals the NLL computed from them, a context saved by `generate --state-out` and restored by
//! `--state-in` continues exactly as one uninterrupted run, and `bench`/`inspect` report the
//! cache. Tolerance on logits 1e-4 absolute.

mod common;
use common::{goldcrest, goldcrest_ok, golden_f32, golden_ids, join_ids as join};

fn fixture(file: &str) -> String {
    let path = common::fixture(&format!("goldfinch/{file}"));
    path.to_str().unwrap().to_owned()
}

/// Tokens and whole-sequence logits [T, V] of a fixture's golden file.
fn golden(name: &str) -> (Vec<u32>, Vec<f32>) {
    let path = common::fixture(&format!("goldfinch/{name}.golden.safetensors"));
    (
        golden_ids(&path, "tokens"),
        golden_f32(&path, "full_logits"),
    )
}

#[test]
fn logits_match_the_reference() {
    for name in ["tiny_a", "tiny_b"] {
        let (tokens, reference) = golden(name);
        for chunk in ["1", "64"] {
            let model = fixture(&format!("{name}.safetensors"));
            let out = goldcrest_ok([
                "logits",
                "--model",
                &model,
                "--chunk",
                chunk,
                "--ids",
                &join(&tokens),
            ]);
            let d = common::max_abs_diff(&common::logits_lines(&out.stdout), &reference);
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
        let out = goldcrest_ok([
            "perplexity",
            "--model",
            &fixture("tiny_b.safetensors"),
            "--chunk",
            chunk,
            "--ids",
            &join(&tokens),
        ]);
        let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
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
    let out = goldcrest_ok(&args);
    (common::parse_ids(&out.stdout), out.stderr)
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
    let other = goldcrest([
        "generate",
        "--model",
        &fixture("tiny_b.safetensors"),
        "--ids",
        "1",
        "--greedy",
        "--state-in",
        saved,
    ]);
    assert!(!other.ok);
    assert!(other.stderr.contains("restoring the state"));
}

#[test]
fn bench_and_inspect_report_the_cache() {
    let out = goldcrest_ok([
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
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["arch"], "goldfinch");
    for key in ["prefill_tokens_per_s", "decode_tokens_per_s"] {
        assert!(v[key].as_f64().is_some_and(|r| r > 0.0), "{key} in {v}");
    }

    // With 20 tokens already in the context (restored from a synthetic saved context), and
    // the cache per token: tiny_b with f16 keys and values, 4 + 4·8 + 2·(2·128·2).
    let out = goldcrest_ok([
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
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
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

    let out = goldcrest_ok(["inspect", "--json", &fixture("tiny_b.safetensors")]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let plan = &v["memory_plan"];
    // tiny_b: C 128, 2 GOLD layers, c_dim 8: 4 + 4·8 + 2·(2·128·2) working with f16 keys and
    // values (4 + 4·(8 + 2·128·2) with f32), 4 + 4·8 at rest.
    let assumes = plan["assumes"].as_str().unwrap();
    assert!(assumes.contains("1060 B working with f16"), "{assumes}");
    assert!(assumes.contains("(2084 B with f32)"), "{assumes}");
    assert!(assumes.contains("36 B at rest"), "{assumes}");
    assert!(plan["state_bytes"].as_u64().unwrap() > 4096 * 1060);
}
