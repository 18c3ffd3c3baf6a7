//! Forecast a series held in a slice with a Toto model, in mean mode and with 256 samples:
//! `cargo run --release --example toto_forecast -- [MODEL]` (default: the tiny random test
//! model, so the numbers only show the API; `goldcrest convert toto DIR OUT` makes real ones).

use goldcrest::core::kernels::Kernels;
use goldcrest::core::models::toto::{
    ForecastSpec, Mode, Series, Toto, quantile_sorted, sort_samples,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tests/fixtures/toto/small.model.safetensors".into());
    let file = goldcrest::std::load::ModelFile::open(&path)?;
    let model = Toto::new(file.safetensors()?, Kernels::for_target())?;
    // Hourly load with a daily cycle and one missing reading (NaN is masked, not propagated).
    let mut history: Vec<f64> = (0..96)
        .map(|t| 50.0 + 10.0 * (t as f64 * std::f64::consts::TAU / 24.0).sin())
        .collect();
    history[40] = f64::NAN;
    let series = Series {
        values: &history,
        variates: 1,
        groups: None,
    };
    let (horizon, paths, batch) = (24, 256, 32);
    let spec = ForecastSpec {
        variates: 1,
        context: history.len(),
        horizon,
        batch,
    };
    let plan = model.memory_plan(&spec)?; // exact: one buffer serves both calls
    println!("{}; RAM {} B", model.config(), plan.ram_bytes());
    let mut memory = vec![0u8; plan.bytes_unaligned()];
    let mut mean = vec![0f64; horizon];
    model.forecast_mean(&series, horizon, &mut memory, &mut mean)?;
    let mut samples = vec![0f32; horizon * paths];
    let mode = Mode::Samples {
        paths,
        batch,
        seed: 0,
    };
    model.forecast_samples(&series, horizon, mode, &mut memory, &mut samples)?;
    println!("step   mean     q10   median     q90");
    for (t, run) in samples.chunks_exact_mut(paths).enumerate() {
        sort_samples(run);
        let q = |p| quantile_sorted(run, p).unwrap_or(f32::NAN);
        println!(
            "{:>4} {:>6.2} {:>7.2} {:>8.2} {:>7.2}",
            t + 1,
            mean[t],
            q(0.1),
            q(0.5),
            q(0.9)
        );
    }
    Ok(())
}
