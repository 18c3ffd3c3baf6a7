//! `goldcrest generate` and `goldcrest perplexity` through the binary, on the committed tiny
//! fixtures converted with `goldcrest convert`: greedy tokens against the transformers golden
//! tokens (decoder) and against a greedy loop over `goldcrest logits` (rwkv6), state save and
//! resume, perplexity against exp(mean NLL) from `goldcrest logits`, and error exits.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

mod common;
use common::{Run, argmax, goldcrest, join_ids as join, parse_ids};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Its stdout, failing the test with its stderr unless it succeeded.
fn ok(run: Run) -> String {
    assert!(run.ok, "{}", run.stderr);
    run.stdout
}

/// Converted fixtures, made once per test run: (rwkv6 with the World tokenizer, qwen2, llama).
fn models() -> &'static (PathBuf, PathBuf, PathBuf) {
    static MODELS: OnceLock<(PathBuf, PathBuf, PathBuf)> = OnceLock::new();
    MODELS.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("goldcrest-cli-generate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fixtures = root().join("tests/fixtures");
        let rwkv = dir.join("rwkv6.safetensors");
        let rwkv_in = fixtures.join("rwkv6/tiny_a.safetensors");
        ok(goldcrest([
            "convert",
            "rwkv6",
            rwkv_in.to_str().unwrap(),
            rwkv.to_str().unwrap(),
            "--weights",
            "f32",
            "--embeddings",
            "f32",
            "--tokenizer",
            "world",
        ]));
        let mut decoders = Vec::new();
        for arch in ["qwen2", "llama"] {
            let out = dir.join(format!("{arch}.safetensors"));
            let input = fixtures.join("decoder").join(arch);
            ok(goldcrest([
                "convert",
                arch,
                input.to_str().unwrap(),
                out.to_str().unwrap(),
                "--weights",
                "f32",
            ]));
            decoders.push(out);
        }
        let llama = decoders.pop().unwrap();
        let qwen2 = decoders.pop().unwrap();
        (rwkv, qwen2, llama)
    })
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every position's logits from `goldcrest logits`.
fn logits(model: &Path, ids: &[u32]) -> Vec<Vec<f32>> {
    let text = ok(goldcrest([
        "logits",
        "--model",
        path(model),
        "--ids",
        &join(ids),
    ]));
    let flat = common::logits_lines(&text);
    let vocab = flat.len() / ids.len();
    flat.chunks(vocab).map(<[f32]>::to_vec).collect()
}

fn greedy_ids(model: &Path, prompt: &[u32], n: usize, extra: &[&str]) -> Vec<u32> {
    let n = n.to_string();
    let mut args = vec![
        "generate",
        "--model",
        path(model),
        "--greedy",
        "--emit-ids",
        "--max-tokens",
        &n,
    ];
    let ids = join(prompt);
    args.extend(["--ids", &ids]);
    args.extend(extra);
    parse_ids(&ok(goldcrest(&args)))
}

#[test]
fn decoder_greedy_generation_equals_the_transformers_tokens() {
    let (_, qwen2, llama) = models();
    for (name, model) in [("qwen2", qwen2), ("llama", llama)] {
        let golden: serde_json::Value = serde_json::from_slice(
            &std::fs::read(
                root()
                    .join("tests/fixtures/decoder")
                    .join(name)
                    .join("golden.json"),
            )
            .unwrap(),
        )
        .unwrap();
        let ids = |key: &str| -> Vec<u32> {
            golden[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        };
        let got = greedy_ids(model, &ids("prompt"), 16, &["--kv", "f32"]);
        assert_eq!(got, ids("generated"), "{name}");
    }

    // A window in every layer: the cache is a ring, so generation runs past the 64 trained
    // positions, and its first 16 tokens are still transformers' (whatever the chunk size).
    let fixture = root().join("tests/fixtures/decoder/qwen2_swa");
    let swa = std::env::temp_dir().join(format!(
        "goldcrest-cli-swa-{}.safetensors",
        std::process::id()
    ));
    ok(goldcrest([
        "convert",
        "qwen2",
        path(&fixture),
        path(&swa),
        "--weights",
        "f32",
    ]));
    let golden: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture.join("golden.json")).unwrap()).unwrap();
    let ids = |key: &str| -> Vec<u32> {
        golden[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    for chunk in ["3", "64"] {
        let got = greedy_ids(&swa, &ids("prompt"), 80, &["--kv", "f32", "--chunk", chunk]);
        assert_eq!(got.len(), 80, "chunk {chunk}");
        assert_eq!(got[..16], ids("generated")[..], "chunk {chunk}");
    }
    std::fs::remove_file(&swa).ok();
}

#[test]
fn rwkv6_greedy_generation_follows_the_model_and_streams_text() {
    let (rwkv, _, _) = models();
    let prompt = [66u32, 12, 40];
    // The reference continuation: argmax of the model's logits, fed back, via `goldcrest logits`.
    // Id 0 is the World tokenizer's end of text, where generate stops.
    let mut expected = Vec::new();
    let mut seq = prompt.to_vec();
    for _ in 0..6 {
        let next = argmax(logits(rwkv, &seq).last().unwrap());
        if next == 0 {
            break;
        }
        expected.push(next);
        seq.push(next);
    }
    assert!(!expected.is_empty());
    assert_eq!(greedy_ids(rwkv, &prompt, 6, &[]), expected);

    // Without --emit-ids the embedded World tokenizer turns the same ids into text.
    let text = ok(goldcrest([
        "generate",
        "--model",
        path(rwkv),
        "--greedy",
        "--max-tokens",
        "6",
        "--ids",
        &join(&prompt),
    ]));
    let tok = goldcrest_std::tokenize::Tokenizer::from_bytes(
        "world",
        goldcrest_std::tokenize::BUNDLED_WORLD_VOCAB,
    )
    .unwrap();
    assert_eq!(text, tok.decode_lossy(&expected).unwrap());

    // --stop: the output ends right before the first occurrence of the stop string.
    let chars: Vec<char> = text.chars().collect();
    assert!(chars.len() >= 3, "{text:?}");
    let stop: String = chars[chars.len() - 2..].iter().collect();
    let cut = text.find(&stop).unwrap();
    let stopped = ok(goldcrest([
        "generate",
        "--model",
        path(rwkv),
        "--greedy",
        "--max-tokens",
        "6",
        "--ids",
        &join(&prompt),
        "--stop",
        &stop,
    ]));
    assert_eq!(stopped, text[..cut]);
}

#[test]
fn rwkv6_state_out_then_state_in_continues_identically() {
    let (rwkv, _, _) = models();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.bin");
    let (first_prompt, second_prompt) = ([66u32, 12, 40, 7], [50u32, 51]);
    // Sampling (seeded) rather than greedy, so the RNG path is covered too.
    let sampling = ["--temperature", "0.9", "--top-k", "20", "--seed", "7"];
    let mut args = vec!["--state-out", path(&state)];
    args.extend(sampling);
    let first = {
        let n = "5";
        let ids = join(&first_prompt);
        let mut a = vec![
            "generate",
            "--model",
            path(rwkv),
            "--emit-ids",
            "--max-tokens",
            n,
            "--ids",
            &ids,
        ];
        a.extend(&args);
        parse_ids(&ok(goldcrest(&a)))
    };
    assert!(state.is_file());
    let run = |prompt: &[u32], state_in: Option<&Path>| {
        let ids = join(prompt);
        let mut a = vec![
            "generate",
            "--model",
            path(rwkv),
            "--emit-ids",
            "--max-tokens",
            "5",
            "--ids",
            &ids,
        ];
        a.extend(sampling);
        if let Some(s) = state_in {
            a.extend(["--state-in", path(s)]);
        }
        parse_ids(&ok(goldcrest(&a)))
    };
    let resumed = run(&second_prompt, Some(&state));
    let mut whole = first_prompt.to_vec();
    whole.extend(&first);
    whole.extend(second_prompt);
    assert_eq!(resumed, run(&whole, None));

    // A damaged state file is refused.
    let mut bytes = std::fs::read(&state).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&state, bytes).unwrap();
    let out = goldcrest([
        "generate",
        "--model",
        path(rwkv),
        "--ids",
        "1",
        "--state-in",
        path(&state),
    ]);
    assert!(!out.ok);
    assert!(out.stderr.contains("state"), "{}", out.stderr);
}

#[test]
fn context_limit_stops_generation_with_a_message() {
    let (_, qwen2, _) = models();
    // The qwen2 fixture holds 64 positions: 60 prompt ids leave room for 4 more.
    let prompt: Vec<u32> = (0..60).map(|i| (i * 7 % 256) as u32).collect();
    let out = goldcrest([
        "generate",
        "--model",
        path(qwen2),
        "--greedy",
        "--emit-ids",
        "--max-tokens",
        "20",
        "--ids",
        &join(&prompt),
    ]);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(parse_ids(&out.stdout).len(), 5);
    assert!(out.stderr.contains("context limit of 64"), "{}", out.stderr);
}

/// exp(mean NLL of each next token) over the logits of `goldcrest logits`, window by window.
fn perplexity_from_logits(model: &Path, ids: &[u32], window: usize) -> (f64, usize) {
    let (mut nll, mut n) = (0.0f64, 0usize);
    for win in ids.chunks(window) {
        let rows = logits(model, win);
        for (row, &target) in rows.iter().zip(&win[1..]) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = max
                + row
                    .iter()
                    .map(|&x| (x as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            nll += lse - row[target as usize] as f64;
            n += 1;
        }
    }
    ((nll / n as f64).exp(), n)
}

fn perplexity_json(args: &[&str]) -> serde_json::Value {
    let mut a = vec!["perplexity"];
    a.extend(args);
    serde_json::from_str(&ok(goldcrest(&a))).unwrap()
}

#[test]
fn perplexity_equals_exp_mean_nll_from_logits() {
    let (rwkv, qwen2, _) = models();
    let ids: Vec<u32> = (0..23).map(|i| (i * 37 % 90 + 3) as u32).collect();

    // Decoder: non-overlapping windows of --ctx tokens (23 = 8 + 8 + 7).
    let v = perplexity_json(&[
        "--model",
        path(qwen2),
        "--ids",
        &join(&ids),
        "--ctx",
        "8",
        "--chunk",
        "3",
    ]);
    let (expected, n) = perplexity_from_logits(qwen2, &ids, 8);
    assert_eq!(v["tokens"], n);
    assert_eq!(v["windows"], 3);
    let got = v["perplexity"].as_f64().unwrap();
    assert!((got / expected - 1.0).abs() < 1e-5, "{got} vs {expected}");

    // rwkv6: one recurrent stream without --ctx.
    let v = perplexity_json(&["--model", path(rwkv), "--ids", &join(&ids), "--chunk", "5"]);
    let (expected, n) = perplexity_from_logits(rwkv, &ids, ids.len());
    assert_eq!(v["tokens"], n);
    let got = v["perplexity"].as_f64().unwrap();
    assert!((got / expected - 1.0).abs() < 1e-5, "{got} vs {expected}");

    // A text through the embedded World tokenizer: bits per byte from the same NLL.
    let dir = tempfile::tempdir().unwrap();
    let text_path = dir.path().join("text.txt");
    // Characters whose World ids fit the fixture's 96-entry vocabulary (byte b is id b + 1).
    let text = "A:B;C<D=E>F?G@H";
    std::fs::write(&text_path, text).unwrap();
    let tok = goldcrest_std::tokenize::Tokenizer::from_bytes(
        "world",
        goldcrest_std::tokenize::BUNDLED_WORLD_VOCAB,
    )
    .unwrap();
    let text_ids = tok.encode(text).unwrap();
    assert!(text_ids.iter().all(|&i| i < 96), "{text_ids:?}");
    let v = perplexity_json(&["--model", path(rwkv), "--input", path(&text_path)]);
    let (expected, n) = perplexity_from_logits(rwkv, &text_ids, text_ids.len());
    let got = v["perplexity"].as_f64().unwrap();
    assert!((got / expected - 1.0).abs() < 1e-5, "{got} vs {expected}");
    let scored_bytes: usize = text_ids[1..]
        .iter()
        .map(|&i| tok.token(i).unwrap().len())
        .sum();
    let bpb = expected.ln() * n as f64 / std::f64::consts::LN_2 / scored_bytes as f64;
    let got = v["bits_per_byte"].as_f64().unwrap();
    assert!((got / bpb - 1.0).abs() < 1e-5, "{got} vs {bpb}");
}

fn fails_saying(args: &[&str], needle: &str) {
    let out = goldcrest(args);
    assert!(!out.ok, "{args:?} succeeded");
    let err = &out.stderr;
    assert!(err.contains(needle), "{args:?}: {err}");
}

#[test]
fn errors_exit_non_zero_with_a_message() {
    let (rwkv, qwen2, _) = models();
    fails_saying(
        &[
            "generate",
            "--model",
            "/nonexistent/m.safetensors",
            "--ids",
            "1",
        ],
        "/nonexistent/m.safetensors",
    );
    fails_saying(
        &["generate", "--model", path(qwen2), "--ids", "1,999"],
        "token id 999 at position 1",
    );
    fails_saying(
        &["generate", "--model", path(qwen2), "--ids", "1,x"],
        "invalid value",
    );
    fails_saying(
        &["generate", "--model", path(qwen2), "--prompt", "hello"],
        "no tokenizer",
    );
    fails_saying(
        &[
            "generate",
            "--model",
            path(qwen2),
            "--ids",
            "1",
            "--state-out",
            "/tmp/x",
        ],
        "rwkv6",
    );
    fails_saying(
        &["perplexity", "--model", path(rwkv), "--ids", "1"],
        "at least 2",
    );
    fails_saying(
        &[
            "generate",
            "--model",
            path(rwkv),
            "--greedy",
            "--temperature",
            "0.5",
            "--ids",
            "1",
        ],
        "cannot be used with",
    );
}
