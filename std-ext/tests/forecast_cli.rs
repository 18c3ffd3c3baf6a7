//! `goldcrest forecast` end to end on the small Toto fixture model.

use std::path::{Path, PathBuf};
use std::process::Command;

fn model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/toto/small.model.safetensors")
}

fn run(csv: &str, extra: &[&str]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    std::fs::write(&input, csv).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_goldcrest"))
        .arg("forecast")
        .arg("--input")
        .arg(&input)
        .arg("--model")
        .arg(model())
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn series_csv() -> String {
    let mut s = String::from("timestamp,load,temp\n");
    for i in 0..40 {
        let load = if i == 7 {
            String::new()
        } else {
            format!("{:.3}", 100.0 + 10.0 * (i as f64 * 0.9).sin())
        };
        s.push_str(&format!(
            "2024-03-01 {:02}:{:02}:00,{load},{}\n",
            i / 4,
            (i % 4) * 15,
            5.0 + 0.1 * i as f64
        ));
    }
    s
}

#[test]
fn quantile_forecast_with_timestamps() {
    let (ok, out, err) = run(
        &series_csv(),
        &[
            "--horizon",
            "5",
            "--samples",
            "64",
            "--quantiles",
            "0.025,0.5,0.975",
        ],
    );
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "step,timestamp,load_median,load_q2.5,load_q50,load_q97.5,temp_median,temp_q2.5,temp_q50,temp_q97.5"
    );
    assert_eq!(lines.len(), 6);
    // 40 steps of 15 minutes from 00:00 end at 09:45; the forecast continues at 10:00.
    assert!(
        lines[1].starts_with("1,2024-03-01 10:00:00,"),
        "{}",
        lines[1]
    );
    assert!(
        lines[5].starts_with("5,2024-03-01 11:00:00,"),
        "{}",
        lines[5]
    );
    for line in &lines[1..] {
        let v: Vec<f64> = line
            .split(',')
            .skip(2)
            .map(|c| c.parse().unwrap())
            .collect();
        assert!(v.iter().all(|x| x.is_finite()));
        assert!(v[1] <= v[0] && v[0] <= v[3], "{line}");
        assert_eq!(v[0], v[2]);
    }
}

#[test]
fn mean_mode_is_deterministic() {
    let (ok, a, err) = run(&series_csv(), &["--horizon", "3", "--mean"]);
    assert!(ok, "{err}");
    assert_eq!(a.lines().next(), Some("step,timestamp,load_mean,temp_mean"));
    let (_, b, _) = run(&series_csv(), &["--horizon", "3", "--mean"]);
    assert_eq!(a, b);
}

/// Threads and the context pass's chunking change the speed, never the output (the split
/// kernels are bit-identical; each token's products do not depend on the chunk); `--timing`
/// reports wall and CPU time on stderr only.
#[test]
fn threads_and_prefill_chunk_do_not_change_the_forecast() {
    let csv = series_csv();
    for mode in [&["--mean"][..], &["--samples", "20", "--batch", "7"][..]] {
        let base = [&["--horizon", "6", "--threads", "1"][..], mode].concat();
        let (ok, want, err) = run(&csv, &base);
        assert!(ok, "{err}");
        for extra in [
            &["--threads", "2"][..],
            &["--prefill-chunk", "1"],
            &["--prefill-chunk", "3", "--threads", "2", "--timing"],
        ] {
            let args = [&["--horizon", "6"][..], mode, extra].concat();
            let (ok, got, err) = run(&csv, &args);
            assert!(ok, "{err}");
            assert_eq!(got, want, "{extra:?}");
            if extra.contains(&"--timing") {
                assert!(err.contains("forecast time:") && err.contains("forecast cpu time:"));
            }
        }
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    let (ok, _, err) = run("", &["--horizon", "3"]);
    assert!(!ok && err.contains("empty"), "{err}");
    let (ok, _, err) = run("a\n1\nx\n", &["--horizon", "3"]);
    assert!(!ok && err.contains("not a number"), "{err}");
    let (ok, out, err) = run("a\n5\n", &["--horizon", "2", "--mean"]);
    assert!(ok, "a single point forecasts: {err}");
    assert_eq!(out.lines().count(), 3);
    let (ok, _, err) = run("a\n1e300\n", &["--horizon", "2", "--mean"]);
    assert!(!ok && err.contains("too large"), "{err}");
    let (ok, out, err) = run("a\n7\n7\n7\n7\n", &["--horizon", "2", "--mean"]);
    assert!(ok, "a constant series forecasts: {err}");
    assert!(out.lines().nth(1).unwrap().starts_with("1,"));
}
