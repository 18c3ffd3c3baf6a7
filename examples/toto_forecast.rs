//! Forecast a series held in a slice with a Toto model, in mean mode and with 256 samples:
//! `cargo run --release --example toto_forecast -- [MODEL]` (default: the bundled tiny ternary
//! Toto; `goldcrest convert toto DIR OUT` makes others).

use goldcrest::core::kernels::Kernels;
use goldcrest::core::models::toto::{ForecastSpec, Mode, Series, Toto};
use goldcrest::core::models::toto::{quantile_sorted, sort_samples};
use goldcrest::std::load::ModelFile;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = std::env::args().nth(1).map(ModelFile::open).transpose()?;
    let weights = match &file {
        Some(file) => file.safetensors()?,
        None => goldcrest::std::bundled::toto_tiny()?,
    };
    let model = Toto::new(weights, Kernels::for_target())?;
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
        let [lo, mid, hi] = [0.1, 0.5, 0.9].map(|p| quantile_sorted(run, p).unwrap_or(f32::NAN));
        println!(
            "{:>4} {:>6.2} {lo:>7.2} {mid:>8.2} {hi:>7.2}",
            t + 1,
            mean[t]
        );
    }
    Ok(())
}
