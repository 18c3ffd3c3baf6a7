//! Golden tests against the reference implementations (fixtures from
//! tools/tokenizer/gen_fixtures.py) and property tests for the loaders and encoders.

use super::*;
use proptest::prelude::*;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::OnceLock;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn json(rel: &str) -> Value {
    serde_json::from_slice(&read(rel)).expect("fixture is JSON")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("id list")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn qwen2_json() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| Tokenizer::from_path(&repo().join("vocab/qwen2/tokenizer.json")).unwrap())
}

fn qwen2_tiktoken() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| Tokenizer::from_path(&repo().join("vocab/qwen2/qwen.tiktoken")).unwrap())
}

fn world() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        Tokenizer::from_path(&repo().join("vocab/rwkv/rwkv_vocab_v20230424.txt")).unwrap()
    })
}

fn golden_rows() -> Vec<Value> {
    json("tests/fixtures/tokenizer/golden.json")["rows"]
        .as_array()
        .expect("rows")
        .clone()
}

fn text_of(row: &Value) -> &str {
    row["text"].as_str().expect("text")
}

#[test]
fn qwen2_tokenizer_json_matches_hf_with_special_tokens() {
    let tok = qwen2_json();
    let mut failures = Vec::new();
    for row in golden_rows() {
        let got = tok.encode_with_special(text_of(&row)).unwrap();
        if got != ids(&row["hf_qwen2"]) {
            failures.push(text_of(&row).to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "{} rows differ: {failures:?}",
        failures.len()
    );
}

#[test]
fn qwen2_ordinary_encoding_matches_tiktoken_for_both_loaders() {
    for tok in [qwen2_json(), qwen2_tiktoken()] {
        let mut failures = Vec::new();
        for row in golden_rows() {
            if tok.encode(text_of(&row)).unwrap() != ids(&row["tiktoken"]) {
                failures.push(text_of(&row).to_string());
            }
        }
        assert!(
            failures.is_empty(),
            "{} rows differ: {failures:?}",
            failures.len()
        );
    }
}

#[test]
fn tiktoken_loader_with_special_matches_hf() {
    let tok = qwen2_tiktoken();
    for row in golden_rows() {
        assert_eq!(
            tok.encode_with_special(text_of(&row)).unwrap(),
            ids(&row["hf_qwen2"]),
            "{:?}",
            text_of(&row)
        );
    }
}

#[test]
fn vocab_and_merges_directory_with_config_matches_hf_qwen3() {
    let tok = Tokenizer::from_path(&repo().join("vocab/qwen3")).unwrap();
    let Tokenizer::Bpe(bpe) = &tok else {
        panic!("expected BPE")
    };
    assert_eq!(bpe.added_tokens().len(), 26);
    for row in golden_rows() {
        assert_eq!(
            tok.encode_with_special(text_of(&row)).unwrap(),
            ids(&row["hf_qwen3"]),
            "{:?}",
            text_of(&row)
        );
    }
}

#[test]
fn legacy_string_merges_load_to_the_same_tokenizer() {
    let mut root: Value = serde_json::from_slice(&read("vocab/qwen2/tokenizer.json")).unwrap();
    let merges = root["model"]["merges"].as_array_mut().unwrap();
    assert!(merges[0].is_array(), "the shipped file uses the pair form");
    for m in merges.iter_mut() {
        let pair = m.as_array().unwrap();
        *m = Value::String(format!(
            "{} {}",
            pair[0].as_str().unwrap(),
            pair[1].as_str().unwrap()
        ));
    }
    let legacy = Tokenizer::from_bytes("hf-json", &serde_json::to_vec(&root).unwrap()).unwrap();
    for row in golden_rows() {
        assert_eq!(
            legacy.encode_with_special(text_of(&row)).unwrap(),
            ids(&row["hf_qwen2"])
        );
    }
}

#[test]
fn llama_cpp_qwen2_vectors() {
    let inp =
        String::from_utf8(read("tests/fixtures/tokenizer/ggml-vocab-qwen2.gguf.inp")).unwrap();
    let out =
        String::from_utf8(read("tests/fixtures/tokenizer/ggml-vocab-qwen2.gguf.out")).unwrap();
    let inputs: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    let outputs: Vec<&str> = out.split('\n').collect();
    let mut checked = 0;
    for (text, expected) in inputs.iter().zip(&outputs) {
        let expected: Vec<u32> = expected
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        assert_eq!(qwen2_json().encode(text).unwrap(), expected, "{text:?}");
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} vectors");
}

#[test]
fn decoding_round_trips_nfc_text() {
    use unicode_normalization::UnicodeNormalization;
    for row in golden_rows() {
        let text = text_of(&row);
        let nfc: String = text.nfc().collect();
        for tok in [qwen2_json(), world()] {
            let ids = tok.encode(text).unwrap();
            let back = tok.decode(&ids).unwrap();
            let expect = if matches!(tok, Tokenizer::Bpe(_)) {
                &nfc
            } else {
                text
            };
            assert_eq!(back, expect.as_bytes());
        }
    }
}

#[test]
fn special_tokens_are_plain_text_unless_asked() {
    let tok = qwen2_json();
    let plain = tok.encode("<|im_end|>").unwrap();
    assert!(plain.len() > 1 && !plain.contains(&151645));
    assert_eq!(tok.encode_with_special("<|im_end|>").unwrap(), vec![151645]);
    assert_eq!(
        tok.decode_skip_special(&[151644, 9707, 151645]).unwrap(),
        b"Hello"
    );
}

#[test]
fn world_matches_rwkv_reference_on_text() {
    let tok = world();
    for row in golden_rows() {
        assert_eq!(
            tok.encode(text_of(&row)).unwrap(),
            ids(&row["rwkv"]),
            "{:?}",
            text_of(&row)
        );
    }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

#[test]
fn world_matches_rwkv_reference_on_invalid_utf8_and_partial_decodes() {
    let tok = world();
    let fixture = json("tests/fixtures/tokenizer/world_bytes.json");
    for case in fixture["encode_bytes"].as_array().unwrap() {
        let bytes = unhex(case["hex"].as_str().unwrap());
        assert_eq!(tok.encode_bytes(&bytes, false).unwrap(), ids(&case["ids"]));
    }
    for case in fixture["decode"].as_array().unwrap() {
        let got = tok.decode(&ids(&case["ids"])).unwrap();
        assert_eq!(got, unhex(case["hex"].as_str().unwrap()));
        let valid = std::str::from_utf8(&got);
        assert_eq!(valid.is_ok(), case["utf8_ok"].as_bool().unwrap());
        let reference = case["reference_text"].as_str().unwrap();
        match valid {
            Ok(text) => assert_eq!(text, reference),
            // rwkv's `decode` turns any invalid output into one U+FFFD; goldcrest's lossy decode
            // replaces only the invalid sequences, and `decode` keeps the exact bytes.
            Err(_) => assert_eq!(reference, "\u{fffd}"),
        }
    }
}

#[test]
fn stream_decoding_never_splits_a_character_and_equals_lossy_decoding() {
    for tok in [qwen2_json(), world()] {
        for row in golden_rows() {
            let ids = tok.encode(text_of(&row)).unwrap();
            let mut dec = tok.stream_decoder();
            let mut all = String::new();
            for &id in &ids {
                all.push_str(&dec.push(id).unwrap());
            }
            all.push_str(&dec.finish());
            assert_eq!(all, tok.decode_lossy(&ids).unwrap());
        }
    }
    // Qwen id 51461 is b" \xe6\xa0": the space comes out, the partial character waits.
    let tok = qwen2_json();
    let mut dec = tok.stream_decoder();
    assert_eq!(dec.push(51461).unwrap(), " ");
    assert_eq!(dec.pending(), &[0xe6, 0xa0]);
    assert_eq!(dec.finish(), "\u{fffd}");
}

#[test]
fn corrupt_vocabularies_are_errors_naming_the_problem() {
    let good = read("vocab/qwen2/tokenizer.json");
    for cut in [0, 1, 100, good.len() / 2, good.len() - 1] {
        assert!(Tokenizer::from_bytes("hf-json", &good[..cut]).is_err());
    }
    let tt = read("vocab/qwen2/qwen.tiktoken");
    let err = Tokenizer::from_bytes("tiktoken", &tt[..tt.len() / 2 + 3])
        .err()
        .expect("truncated tiktoken fails");
    let msg = err.to_string();
    assert!(msg.contains("tiktoken line"), "{msg}");
    let rw = read("vocab/rwkv/rwkv_vocab_v20230424.txt");
    // Cut mid-line: the last line's literal or length column is broken.
    let cut = &rw[..rw.len() / 3];
    assert!(Tokenizer::from_bytes("world", cut).is_err() || cut.ends_with(b"\n"));
    let bad_world = b"1 'a' 1\n2 'b' 7\n";
    let msg = Tokenizer::from_bytes("world", bad_world)
        .err()
        .expect("bad length")
        .to_string();
    assert!(msg.contains("line 2"), "{msg}");
    assert!(Tokenizer::from_bytes("nope", b"").is_err());
    // Found by fuzzing: a huge rank made the loader allocate a table that large.
    let msg = Tokenizer::from_bytes("tiktoken", b"IQ== 4000000000\n")
        .err()
        .expect("sparse ids")
        .to_string();
    assert!(msg.contains("sparse"), "{msg}");
    assert!(Tokenizer::from_bytes("world", b"16000000 'a' 1\n").is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn loaders_never_panic_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        for kind in KINDS {
            let _ = Tokenizer::from_bytes(kind, &bytes);
        }
    }

    #[test]
    fn loaders_never_panic_on_mutated_vocab_lines(line in "[A-Za-z0-9+/=' \\\\xbu\"\\n\\r]{0,80}") {
        let _ = Tokenizer::from_bytes("tiktoken", line.as_bytes());
        let _ = Tokenizer::from_bytes("world", line.as_bytes());
        let _ = Tokenizer::from_bytes("hf-json", line.as_bytes());
    }

    #[test]
    fn gguf_loader_never_panics_on_corrupted_files(at in 0usize..4096, byte in any::<u8>(), cut in 0usize..200_000) {
        static GOOD: OnceLock<Vec<u8>> = OnceLock::new();
        let good = GOOD.get_or_init(|| read("vocab/gpt-neox/ggml-vocab-gpt-neox.gguf"));
        let mut bad = good[..good.len().min(cut.max(at + 1))].to_vec();
        if let Some(b) = bad.get_mut(at) {
            *b = byte;
        }
        let _ = Tokenizer::from_bytes("gguf", &bad);
    }

    #[test]
    fn encoders_never_panic_and_round_trip(text in "\\PC{0,64}", bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        use unicode_normalization::UnicodeNormalization;
        let nfc: String = text.nfc().collect();
        let tok = qwen2_json();
        let ids = tok.encode(&text).unwrap();
        prop_assert_eq!(tok.decode(&ids).unwrap(), nfc.as_bytes());
        prop_assert_eq!(&ids, &qwen2_tiktoken().encode(&text).unwrap());
        let _ = tok.encode_bytes(&bytes, true);
        let w = world();
        let ids = w.encode_bytes(&bytes, false).unwrap();
        prop_assert_eq!(w.decode(&ids).unwrap(), bytes);
    }
}

fn neox() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        Tokenizer::from_path(&repo().join("vocab/gpt-neox/ggml-vocab-gpt-neox.gguf")).unwrap()
    })
}

#[test]
fn gpt_neox_from_gguf_matches_hf_built_from_the_same_vocabulary() {
    let tok = neox();
    assert_eq!(tok.id_limit(), 50_432);
    let mut failures = Vec::new();
    for row in golden_rows() {
        let text = text_of(&row);
        if tok.encode(text).unwrap() != ids(&row["hf_neox_plain"]) {
            failures.push(format!("plain {text:?}"));
        }
        if tok.encode_with_special(text).unwrap() != ids(&row["hf_neox_special"]) {
            failures.push(format!("special {text:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} rows differ: {failures:?}",
        failures.len()
    );
}

#[test]
fn corrupt_gguf_is_an_error() {
    let good = read("vocab/gpt-neox/ggml-vocab-gpt-neox.gguf");
    for cut in [0, 3, 4, 8, 24, 100, good.len() / 2, good.len() - 1] {
        assert!(
            Tokenizer::from_bytes("gguf", &good[..cut]).is_err(),
            "cut {cut}"
        );
    }
    let mut bad = good.clone();
    bad[0] = b'X';
    assert!(Tokenizer::from_bytes("gguf", &bad).is_err());
}

#[test]
fn batch_encoding_equals_encoding_each_text() {
    let rows = golden_rows();
    let texts: Vec<&str> = rows.iter().map(text_of).collect();
    for (tok, special) in [
        (qwen2_json(), true),
        (qwen2_json(), false),
        (world(), false),
    ] {
        let batch = tok.encode_batch(&texts, special);
        assert_eq!(batch.len(), texts.len());
        for (text, got) in texts.iter().zip(&batch) {
            let want = if special {
                tok.encode_with_special(text).unwrap()
            } else {
                tok.encode(text).unwrap()
            };
            assert_eq!(got, &want, "{text:?}");
        }
    }
}
