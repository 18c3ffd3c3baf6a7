//! `goldcrest convert toto2` then `goldcrest forecast` on the Toto 2.0 fixture (tests/fixtures/
//! toto2/gqa): the CSV's quantile columns equal the reference's forecast (case `multi`: the
//! GluonTS predictor's settings, which the CLI uses) within 1e-5 relative to max(1, |value|);
//! a level between two of the nine is their linear interpolation.

use std::path::PathBuf;

mod common;
use common::goldcrest;

fn fixture() -> PathBuf {
    common::fixture("toto2/gqa")
}

fn golden(key: &str) -> Vec<f64> {
    let values = common::golden_f32(&fixture().join("golden.safetensors"), key);
    values.into_iter().map(f64::from).collect()
}

#[test]
fn converted_model_forecasts_reference_quantiles() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("toto2.gc");
    let run = goldcrest([
        "convert".as_ref(),
        "toto2".as_ref(),
        fixture().as_os_str(),
        model.as_os_str(),
    ]);
    assert!(run.ok, "{}", run.stderr);

    // The fixture's three variates, 22 steps; NaN is an empty cell.
    let values = golden("values");
    let (variates, steps, horizon) = (3, 22, 10);
    let mut csv = String::from("s0,s1,s2\n");
    for t in 0..steps {
        let row: Vec<String> = (0..variates)
            .map(|v| {
                let x = values[v * steps + t];
                if x.is_nan() {
                    String::new()
                } else {
                    format!("{x:?}")
                }
            })
            .collect();
        csv.push_str(&row.join(","));
        csv.push('\n');
    }
    let input = dir.path().join("in.csv");
    std::fs::write(&input, csv).unwrap();
    // `goldcrest forecast --input in.csv --model toto2.gc` and `options`.
    let forecast = |options: &[&str]| {
        let fixed = [
            "forecast".as_ref(),
            "--input".as_ref(),
            input.as_os_str(),
            "--model".as_ref(),
            model.as_os_str(),
        ];
        goldcrest(fixed.into_iter().chain(options.iter().map(|o| o.as_ref())))
    };
    let run = forecast(&["--horizon", "10", "--quantiles", "0.1,0.25,0.9"]);
    assert!(run.ok, "{}", run.stderr);
    let mut lines = run.stdout.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let rows: Vec<Vec<f64>> = lines
        .map(|l| l.split(',').map(|x| x.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), horizon);
    let column = |name: &str| {
        let i = header.iter().position(|h| *h == name).unwrap();
        rows.iter().map(|r| r[i]).collect::<Vec<_>>()
    };
    let reference = golden("multi.quantiles"); // (9, variates, horizon)
    let knot = |q: usize, v: usize| &reference[(q * variates + v) * horizon..][..horizon];
    let close = |a: &[f64], b: &[f64]| {
        a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-5 * y.abs().max(1.0))
    };
    for v in 0..variates {
        assert!(
            close(&column(&format!("s{v}_median")), knot(4, v)),
            "s{v} median"
        );
        assert!(close(&column(&format!("s{v}_q10")), knot(0, v)), "s{v} q10");
        assert!(close(&column(&format!("s{v}_q90")), knot(8, v)), "s{v} q90");
        let between: Vec<f64> = knot(1, v)
            .iter()
            .zip(knot(2, v))
            .map(|(a, b)| 0.5 * a + 0.5 * b)
            .collect();
        assert!(close(&column(&format!("s{v}_q25")), &between), "s{v} q25");
    }

    // Options that do not apply to Toto 2.0 are refused with a reason.
    let run = forecast(&["--horizon", "3", "--quantiles", "0.05,0.5"]);
    assert!(
        !run.ok && run.stderr.contains("0.1 … 0.9"),
        "{}",
        run.stderr
    );
    let run = forecast(&["--horizon", "3", "--mean"]);
    assert!(!run.ok && run.stderr.contains("--mean"), "{}", run.stderr);
}
