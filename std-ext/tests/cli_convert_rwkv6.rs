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
