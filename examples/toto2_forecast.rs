//! Forecast two related series with a Toto 2.0 model: nine quantiles per step in one pass.
//! `cargo run --release --example toto2_forecast -- [MODEL]` where MODEL comes from
//! `goldcrest convert toto2 CHECKPOINT_DIR MODEL`. Without one, the example converts the tiny
//! test checkpoint `tests/fixtures/toto2/gqa` in memory: its weights are random, so the numbers
//! only show the API, not a real forecast.

use goldcrest::core::kernels::Kernels;
use goldcrest::core::models::toto::Series;
use goldcrest::core::models::toto::v2::{
    ForecastOptions, ForecastShape, MEDIAN, NUM_QUANTILES, QUANTILES, Toto2,
};
use goldcrest::std::load::ModelFile;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (file, words);
    let weights = match std::env::args().nth(1) {
        // Memory-mapped and read in place.
        Some(path) => {
            file = ModelFile::open(path)?;
            file.safetensors()?
        }
        None => {
            let dir =
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/toto2/gqa");
            let options = goldcrest::std::convert::toto2::Options {
                weights: goldcrest::core::quant::Format::F32,
            };
            let bytes = goldcrest::std::convert::toto2::convert(&dir, options)?.to_bytes()?;
            // u64 storage keeps every tensor aligned for zero-copy views.
            let mut storage = vec![0u64; bytes.len().div_ceil(8)];
            bytemuck::cast_slice_mut::<u64, u8>(&mut storage)[..bytes.len()]
                .copy_from_slice(&bytes);
            words = (storage, bytes.len());
            goldcrest::std::load::parse_hosted(
                &bytemuck::cast_slice::<u64, u8>(&words.0)[..words.1],
            )?
        }
    };
    let model = Toto2::new(weights, Kernels::for_target())?;

    // Hourly load and temperature, variate-major; NaN is a missing reading.
    let context = 96;
    let mut values: Vec<f64> = (0..context)
        .map(|t| 50.0 + 10.0 * (t as f64 * std::f64::consts::TAU / 24.0).sin())
        .chain((0..context).map(|t| 15.0 + 4.0 * (t as f64 * std::f64::consts::TAU / 24.0).cos()))
        .collect();
    values[40] = f64::NAN;
    let series = Series {
        values: &values,
        variates: 2,
        groups: None, // one group: the variate layers let the two series inform each other
    };
    let horizon = 12;
    let shape = ForecastShape {
        variates: 2,
        context,
        horizon,
    };
    let plan = model.memory_plan(&shape)?;
    println!("{}; RAM {} B", model.config(), plan.ram_bytes());
    let mut memory = vec![0u8; plan.bytes_unaligned()];
    let mut out = vec![0f32; 2 * horizon * NUM_QUANTILES];
    model.forecast(
        &series,
        horizon,
        &ForecastOptions::default(),
        &mut memory,
        &mut out,
    )?;
    println!(
        "step  load q{:.1}  median  q{:.1}",
        QUANTILES[0], QUANTILES[8]
    );
    for t in 0..horizon {
        let q = &out[t * NUM_QUANTILES..(t + 1) * NUM_QUANTILES];
        println!(
            "{:>4}  {:>8.3}  {:>6.3}  {:>6.3}",
            t + 1,
            q[0],
            q[MEDIAN],
            q[8]
        );
    }
    Ok(())
}
