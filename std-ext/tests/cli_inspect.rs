//! `goldcrest inspect` run as a user would: the built binary on real files.

use std::process::{Command, Output};

use goldcrest_core::quant::Format;
use goldcrest_std::write::ModelWriter;

fn goldcrest(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_goldcrest"))
        .args(args)
        .output()
        .expect("run the goldcrest binary")
}

fn sample(dir: &std::path::Path) -> std::path::PathBuf {
    let mut w = ModelWriter::new();
    w.arch("llama").unwrap();
    w.hyperparameter("n_layer", 1).unwrap();
    w.f32("norm.weight", &[4], &[1.0; 4]).unwrap();
    w.packed("layers.0.attn.q", Format::Tq2_0, 4, 256, vec![0; 4 * 66])
        .unwrap();
    w.packed("layers.0.attn.k", Format::Tq1_0, 2, 256, vec![0; 2 * 54])
        .unwrap();
    let path = dir.join("tiny.safetensors");
    w.write_file(&path).unwrap();
    path
}

#[test]
fn prints_metadata_tensors_and_plan() {
    let dir = tempfile::tempdir().unwrap();
    let path = sample(dir.path());
    let out = goldcrest(&["inspect".as_ref(), path.as_os_str()]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "format version  1.0",
        "architecture    llama",
        "goldcrest.llama.n_layer",
        "layers.0.attn.q",
        "tq2_0",
        "[4, 256]",
        "264",
        "tq1_0",
        "memory plan",
        "zero-copy",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
}

#[test]
fn json_output_is_complete() {
    let dir = tempfile::tempdir().unwrap();
    let path = sample(dir.path());
    let out = goldcrest(&["inspect".as_ref(), path.as_os_str(), "--json".as_ref()]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(v["format_version"], "1.0");
    assert_eq!(v["arch"], "llama");
    assert_eq!(
        v["metadata"]["goldcrest.tensor.layers.0.attn.q"],
        "tq2_0 4 256"
    );
    let tensors = v["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 3);
    let q = tensors
        .iter()
        .find(|t| t["name"] == "layers.0.attn.q")
        .unwrap();
    assert_eq!(q["format"], "tq2_0");
    assert_eq!(q["dtype"], "U8");
    assert_eq!(q["shape"], serde_json::json!([4, 256]));
    assert_eq!(q["stored_shape"], serde_json::json!([4, 66]));
    assert_eq!(q["bytes"], 264);
    let plan = &v["memory_plan"];
    assert_eq!(plan["weight_bytes"], 16 + 264 + 108);
    assert_eq!(plan["per_format"]["tq2_0"]["bytes"], 264);
    assert_eq!(plan["per_format"]["tq1_0"]["tensors"], 1);
    assert_eq!(plan["per_format"]["f32"]["bytes"], 16);
}

#[test]
fn failures_exit_nonzero_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.safetensors");
    let out = goldcrest(&["inspect".as_ref(), missing.as_os_str()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nope.safetensors"), "{stderr}");

    // A valid file with one byte of its header changed: the message says where.
    let path = sample(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8] = b'[';
    let broken = dir.path().join("broken.safetensors");
    std::fs::write(&broken, &bytes).unwrap();
    let out = goldcrest(&["inspect".as_ref(), broken.as_os_str()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("header JSON invalid at byte 0"), "{stderr}");
    assert!(out.stdout.is_empty());

    // A file from a newer major format version is refused with a message saying so.
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes
        .windows(5)
        .position(|w| w == b"\"1.0\"")
        .expect("version value in the header");
    bytes[at + 1] = b'2';
    let newer = dir.path().join("newer.safetensors");
    std::fs::write(&newer, &bytes).unwrap();
    let out = goldcrest(&["inspect".as_ref(), newer.as_os_str()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("version 2.x is newer"), "{stderr}");
    assert!(stderr.contains("upgrade goldcrest"), "{stderr}");
}
