//! What the integration tests share: fixture paths, running the `goldcrest` binary as a user
//! does, reading golden tensors and comparing floats.

// Each test file is its own crate and uses a subset of these.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `tests/fixtures/<rel>` at the workspace root.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(rel)
}

/// One run of the `goldcrest` binary.
pub struct Run {
    /// Whether it exited with status 0.
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `goldcrest ARGS…` and returns its status and output, whatever they are.
pub fn goldcrest<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_goldcrest"))
        .args(args)
        .output()
        .expect("the goldcrest binary runs");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// [`goldcrest`], failing the test (with the arguments and stderr) unless it succeeds.
pub fn goldcrest_ok<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>) -> Run {
    let args: Vec<S> = args.into_iter().collect();
    let run = goldcrest(&args);
    let shown: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
    assert!(run.ok, "goldcrest {shown:?}: {}", run.stderr);
    run
}

/// The little-endian 4-byte words of tensor `name` in the safetensors file at `path`.
fn words(path: &Path, name: &str) -> Vec<[u8; 4]> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("{name} in {}: {e}", path.display()));
    t.data()
        .chunks_exact(4)
        .map(|b| [b[0], b[1], b[2], b[3]])
        .collect()
}

/// An f32 tensor of a golden safetensors file.
pub fn golden_f32(path: &Path, name: &str) -> Vec<f32> {
    words(path, name)
        .into_iter()
        .map(f32::from_le_bytes)
        .collect()
}

/// An i32 tensor of token ids in a golden safetensors file.
pub fn golden_ids(path: &Path, name: &str) -> Vec<u32> {
    words(path, name)
        .into_iter()
        .map(|b| i32::from_le_bytes(b) as u32)
        .collect()
}

/// Token ids as `goldcrest --ids` takes them.
pub fn join_ids(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// The ids `goldcrest generate --emit-ids` prints (comma-separated).
pub fn parse_ids(text: &str) -> Vec<u32> {
    text.trim()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect()
}

/// The index of the largest value (the first of equal ones), as a token id.
pub fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

/// `goldcrest logits` output (one JSON object per position) as one flat `[T, V]` vector;
/// checks that the positions count up from 0.
pub fn logits_lines(stdout: &str) -> Vec<f32> {
    let mut got = Vec::new();
    for (i, line) in stdout.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["pos"], i, "{line}");
        got.extend(
            v["logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32),
        );
    }
    got
}

/// The largest absolute difference of two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
