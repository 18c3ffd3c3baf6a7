//! `goldcrest convert rwkv6` end to end through the binary.

use std::process::Command;

fn fixture(file: &str) -> String {
    format!(
        "{}/../tests/fixtures/rwkv6/{file}",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn converts_and_reports_errors() {
    let dir = std::env::temp_dir().join(format!("goldcrest-cli-rwkv6-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("tiny_a.tq1.safetensors");
    let run = Command::new(env!("CARGO_BIN_EXE_goldcrest"))
        .args(["convert", "rwkv6", &fixture("tiny_a.safetensors")])
        .arg(&out)
        .args(["--weights", "tq1"])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("2 layers") && stderr.contains("tq1_0"),
        "{stderr}"
    );
    let bytes = std::fs::read(&out).unwrap();
    assert!(
        bytes.len()
            < std::fs::metadata(fixture("tiny_a.safetensors"))
                .unwrap()
                .len() as usize
    );

    // A golden file is not a model: the error names what is missing and the exit code says so.
    let bad = Command::new(env!("CARGO_BIN_EXE_goldcrest"))
        .args(["convert", "rwkv6", &fixture("tiny_a.golden.safetensors")])
        .arg(dir.join("bad.safetensors"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let msg = String::from_utf8_lossy(&bad.stderr);
    assert!(msg.contains("missing tensor 'emb.weight'"), "{msg}");
    assert!(!dir.join("bad.safetensors").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn embeds_the_tokenizer_it_is_given() {
    use goldcrest_std::load::ModelFile;
    use goldcrest_std::tokenize::{BUNDLED_WORLD_VOCAB, Tokenizer};

    let dir = std::env::temp_dir().join(format!("goldcrest-cli-rwkv6-tok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let convert = |spec: &str, out: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_goldcrest"))
            .args(["convert", "rwkv6", &fixture("tiny_a.safetensors")])
            .arg(out)
            .args(["--tokenizer", spec])
            .output()
            .unwrap()
    };
    let text = "Hello 世界 🙂 fn main() {}";

    // `world` names the bundled RWKV World vocabulary; reading the file back needs no other file.
    let out = dir.join("world.safetensors");
    let run = convert("world", &out);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let file = ModelFile::open(&out).unwrap();
    let embedded = Tokenizer::from_model(&file.safetensors().unwrap())
        .unwrap()
        .expect("the file carries its tokenizer");
    let bundled = Tokenizer::from_bytes("world", BUNDLED_WORLD_VOCAB).unwrap();
    assert_eq!(
        embedded.encode(text).unwrap(),
        bundled.encode(text).unwrap()
    );

    // A tokenizer.json path: the kind is inferred from the name.
    let qwen = format!(
        "{}/../vocab/qwen2/tokenizer.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = dir.join("qwen.safetensors");
    let run = convert(&qwen, &out);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let file = ModelFile::open(&out).unwrap();
    let embedded = Tokenizer::from_model(&file.safetensors().unwrap())
        .unwrap()
        .unwrap();
    let direct = Tokenizer::from_path(qwen.as_ref()).unwrap();
    assert_eq!(embedded.encode(text).unwrap(), direct.encode(text).unwrap());

    // Without --tokenizer there is none; a vocabulary that does not parse fails the conversion.
    let plain = dir.join("plain.safetensors");
    let run = Command::new(env!("CARGO_BIN_EXE_goldcrest"))
        .args(["convert", "rwkv6", &fixture("tiny_a.safetensors")])
        .arg(&plain)
        .output()
        .unwrap();
    assert!(run.status.success());
    let file = ModelFile::open(&plain).unwrap();
    assert!(
        Tokenizer::from_model(&file.safetensors().unwrap())
            .unwrap()
            .is_none()
    );
    let broken = dir.join("rwkv_vocab_broken.txt");
    std::fs::write(&broken, b"not a vocabulary line\n").unwrap();
    let run = convert(broken.to_str().unwrap(), &dir.join("bad.safetensors"));
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("tokenizer"));
    std::fs::remove_dir_all(&dir).unwrap();
}
