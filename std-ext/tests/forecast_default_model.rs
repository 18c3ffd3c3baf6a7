//! `goldcrest forecast` with the bundled tiny Toto (no `--model`): the README's main command.
//!
//! The golden is toto-ts 0.2.0's `TotoForecaster` (KV cache, mean mode, float64) on the weights
//! exactly as the bundled file stores them (ternary matrices, q8_0 unembedding), written by
//! `python tools/toto/train_tiny.py fixture ...` (docs/toto.md).

use std::path::{Path, PathBuf};
use std::process::Command;

use safetensors::SafeTensors;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

const EXAMPLE: &str = "examples/data/co2_mauna_loa_weekly.csv";

fn forecast(extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_goldcrest"))
        .arg("forecast")
        .arg("--input")
        .arg(repo(EXAMPLE))
        .args(extra)
        .output()
        .unwrap()
}

fn f64s(st: &SafeTensors<'_>, name: &str) -> Vec<f64> {
    let t = st.tensor(name).unwrap();
    t.data()
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

#[test]
fn bundled_model_matches_the_pytorch_reference() {
    let bytes = std::fs::read(repo("tests/fixtures/toto/tiny_default.golden.safetensors")).unwrap();
    let golden = SafeTensors::deserialize(&bytes).unwrap();
    let want = f64s(&golden, "mean");
    let context = f64s(&golden, "context");

    // The golden's context is the CLI's default context: the example's latest 256 steps.
    let csv = std::fs::read_to_string(repo(EXAMPLE)).unwrap();
    let values: Vec<f64> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(context, values[values.len() - context.len()..]);
    assert_eq!(context.len(), goldcrest_std::bundled::TOTO_TINY_CONTEXT);

    let horizon = want.len().to_string();
    let out = forecast(&["--horizon", &horizon, "--mean"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("step,timestamp,co2_ppm_mean"));
    let got: Vec<f64> = lines
        .map(|l| l.split(',').nth(2).unwrap().parse().unwrap())
        .collect();
    assert_eq!(got.len(), want.len());
    // Tolerance: the network runs in f32 (the reference in f64) and the CSV prints f32.
    for (t, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-4 * w.abs().max(1.0),
            "step {}: goldcrest {g}, toto-ts {w}",
            t + 1
        );
    }
}

#[test]
fn readme_command_writes_csv_and_plots_in_both_formats() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("forecast.csv");
    for plot in ["forecast.svg", "forecast.png"] {
        let plot = dir.path().join(plot);
        let out = forecast(&[
            "--horizon",
            "52",
            "--output",
            csv.to_str().unwrap(),
            "--plot",
            plot.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows = std::fs::read_to_string(&csv).unwrap();
        assert_eq!(
            rows.lines().next(),
            Some("step,timestamp,co2_ppm_median,co2_ppm_q10,co2_ppm_q50,co2_ppm_q90")
        );
        assert_eq!(rows.lines().count(), 53);
        assert!(rows.lines().nth(1).unwrap().starts_with("1,2002-01-05,"));
        let bytes = std::fs::read(&plot).unwrap();
        if plot.extension().unwrap() == "png" {
            let image = resvg::tiny_skia::Pixmap::decode_png(&bytes).unwrap();
            // Rendered at twice the SVG's 900 × 420 for high-DPI screens.
            assert_eq!((image.width(), image.height()), (1800, 840));
        } else {
            let svg = String::from_utf8(bytes).unwrap();
            assert!(svg.starts_with("<svg") && svg.contains("<polygon"));
            // Timestamps on the x axis, the first forecast step among them.
            assert!(svg.contains(">2002-01-05<"), "x axis labels");
        }
    }
    let bad = forecast(&["--horizon", "4", "--plot", "x.jpg"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains(".svg or .png"));
}
