//! `goldcrest forecast --input series.csv [--model toto.gc] --horizon H [--mean | --samples S
//! --seed N] [--quantiles 0.1,0.5,0.9] [--output forecast.csv] [--plot forecast.svg]
//! [--threads N]`.
//!
//! A Toto 2.0 file (`goldcrest convert toto2`) forecasts its nine quantiles 0.1 … 0.9 in one
//! pass: `<name>_median` is its 0.5 output, requested levels among the nine are its outputs, and
//! other levels within [0.1, 0.9] are interpolated linearly between the two nearest; levels
//! outside that range, `--mean`, and the sampling options do not apply.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, anyhow, ensure};
use goldcrest_core::models::toto::v2::{self, ForecastOptions, ForecastShape, Toto2};
use goldcrest_core::models::toto::{
    ForecastSpec, Mode, Series, Toto, quantile_sorted, sort_samples,
};
use goldcrest_std::load::ModelFile;
use goldcrest_std::plot::{PlotSeries, svg};
use goldcrest_std::series_csv::{self, format_timestamp, future_timestamps, quantile_label};

/// Arguments of `goldcrest forecast`.
#[derive(clap::Args)]
pub struct Args {
    /// CSV file: a header row, an optional timestamp first column, one column per variate;
    /// empty cells or NA are missing values.
    #[arg(long)]
    input: PathBuf,
    /// A goldcrest Toto model file (`goldcrest convert toto` or `goldcrest convert toto2`);
    /// default: the bundled tiny ternary Toto (docs/toto.md).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Steps to forecast.
    #[arg(long)]
    horizon: usize,
    /// The reference's deterministic mean mode (one `<name>_mean` column per variate).
    #[arg(long, conflicts_with_all = ["samples", "seed", "quantiles"])]
    mean: bool,
    /// Sampled trajectories.
    #[arg(long, default_value_t = 256)]
    samples: usize,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Quantiles to write, comma-separated, each in (0, 1).
    #[arg(long, default_value = "0.1,0.5,0.9")]
    quantiles: String,
    /// Trajectories decoded together (memory grows with it).
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Use at most this many of the latest steps as context [default: 4096 with --model, 256
    /// (its training context) with the bundled model].
    #[arg(long)]
    context: Option<usize>,
    /// Output CSV (default: stdout).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Print the forecast's own wall and CPU time to stderr: the model call only (no file I/O
    /// or parsing), warm as a benchmark times its reference: the weights are paged in and the
    /// forecast runs once untimed first (its working memory paged in, caches warm), then once
    /// timed (the same numbers: the output is that run's).
    #[arg(long)]
    timing: bool,
    /// Plot file: `.svg` or `.png` (by extension).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Context patches run through the network together (more: faster, more scratch memory).
    #[arg(long, default_value_t = 64)]
    prefill_chunk: usize,
    #[command(flatten)]
    threads: crate::session::Threads,
}

/// Runs `forecast`; with `timing`, once untimed and once timed (see `--timing`), and prints the
/// timed run's wall and CPU time, labelled `what`.
fn timed(
    timing: bool,
    what: &str,
    mut forecast: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    if !timing {
        return forecast();
    }
    forecast()?;
    let cpu_started = goldcrest_std::cpu_time::process();
    let started = std::time::Instant::now();
    forecast()?;
    eprintln!(
        "forecast time: {:.6} s ({what})",
        started.elapsed().as_secs_f64()
    );
    report_cpu_time(cpu_started);
    Ok(())
}

/// `forecast cpu time:` line of `--timing`: CPU seconds of all threads since `started`, which
/// (unlike wall time) other processes on a busy machine barely inflate.
fn report_cpu_time(started: Option<std::time::Duration>) {
    if let (Some(a), Some(b)) = (started, goldcrest_std::cpu_time::process()) {
        eprintln!(
            "forecast cpu time: {:.6} s (all threads)",
            b.saturating_sub(a).as_secs_f64()
        );
    }
}

fn parse_quantiles(text: &str) -> anyhow::Result<Vec<f64>> {
    text.split(',')
        .map(|q| {
            let v: f64 = q
                .trim()
                .parse()
                .map_err(|_| anyhow!("--quantiles: {q:?} is not a number"))?;
            ensure!(v > 0.0 && v < 1.0, "--quantiles: {v} is not in (0, 1)");
            Ok(v)
        })
        .collect()
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<()> {
    ensure!(args.horizon > 0, "--horizon must be at least 1");
    let context = args.context.unwrap_or(if args.model.is_some() {
        4096
    } else {
        goldcrest_std::bundled::TOTO_TINY_CONTEXT
    });
    ensure!(context > 0, "--context must be at least 1");
    let quantiles = if args.mean {
        Vec::new()
    } else {
        ensure!(args.samples > 0, "--samples must be at least 1");
        ensure!(args.batch > 0, "--batch must be at least 1");
        parse_quantiles(&args.quantiles)?
    };
    if let Some(plot) = &args.plot {
        ensure!(
            is_png(plot) || plot_extension(plot).eq_ignore_ascii_case("svg"),
            "--plot {}: the file name must end in .svg or .png",
            plot.display()
        );
    }
    let text = std::fs::read_to_string(&args.input)
        .with_context(|| format!("reading {}", args.input.display()))?;
    let csv = series_csv::parse(&text).with_context(|| format!("{}", args.input.display()))?;

    let file;
    let (st, model_name) = match &args.model {
        Some(path) => {
            file = ModelFile::open(path)?;
            if args.timing {
                // Time the forecast, not page faults on the weights (the reference's weights
                // are in memory when it is timed).
                file.prefault();
            }
            (file.safetensors()?, path.display().to_string())
        }
        None => (
            goldcrest_std::bundled::toto_tiny().map_err(|e| anyhow!("bundled model: {e}"))?,
            "bundled toto-tiny".to_string(),
        ),
    };
    let is_toto2 = st.metadata().arch().and_then(|a| a.as_str()) == Some(v2::ARCH);
    let kernels = goldcrest_std::kernels::detect_with_threads(args.threads.get());

    // The latest `context` steps of every variate.
    let v_count = csv.names.len();
    let start = csv.steps.saturating_sub(context);
    let steps = csv.steps - start;
    let mut values = Vec::with_capacity(v_count * steps);
    for v in 0..v_count {
        values.extend_from_slice(&csv.values[v * csv.steps + start..(v + 1) * csv.steps]);
    }
    let series = Series {
        values: &values,
        variates: v_count,
        groups: None,
    };
    let h = args.horizon;
    if is_toto2 {
        ensure!(
            !args.mean,
            "--mean: a Toto 2.0 model predicts quantiles, not a mean (use the median column)"
        );
        let model = Toto2::new(st, kernels).map_err(|e| anyhow!("{model_name}: {e}"))?;
        let columns = toto2_columns(&model, &series, h, &quantiles, &csv.names, args.timing)?;
        let title = format!("Toto 2.0 forecast, {h} steps: median and quantile band");
        return write_and_plot(&args, &csv, &quantiles, &columns, &title);
    }
    let model = Toto::new(st, kernels)
        .map_err(|e| anyhow!("{model_name}: {e}"))?
        .with_prefill_chunk(args.prefill_chunk);
    let batch = if args.mean {
        1
    } else {
        args.batch.min(args.samples)
    };
    let spec = ForecastSpec {
        variates: v_count,
        context: steps,
        horizon: h,
        batch,
    };
    let plan = model.memory_plan(&spec).map_err(|e| anyhow!("{e}"))?;
    let mut memory = vec![0u8; plan.bytes_unaligned()];

    // Per variate: columns of (label, values per step); the first is the point forecast.
    let mut columns: Vec<Columns> = Vec::with_capacity(v_count);
    if args.mean {
        let mut out = vec![0f64; v_count * h];
        timed(args.timing, "mean mode", || {
            model
                .forecast_mean(&series, h, &mut memory, &mut out)
                .map_err(|e| anyhow!("forecast: {e}"))
        })?;
        for (v, name) in csv.names.iter().enumerate() {
            columns.push(vec![(
                format!("{name}_mean"),
                out[v * h..(v + 1) * h].to_vec(),
            )]);
        }
    } else {
        let paths = args.samples;
        let mut out = vec![0f32; v_count * h * paths];
        let mode = Mode::Samples {
            paths,
            batch,
            seed: args.seed,
        };
        timed(args.timing, &format!("{paths} samples"), || {
            model
                .forecast_samples(&series, h, mode, &mut memory, &mut out)
                .map_err(|e| anyhow!("forecast: {e}"))
        })?;
        for (v, name) in csv.names.iter().enumerate() {
            let mut cols = vec![(format!("{name}_median"), Vec::with_capacity(h))];
            for q in &quantiles {
                cols.push((
                    format!("{name}_{}", quantile_label(*q)),
                    Vec::with_capacity(h),
                ));
            }
            for t in 0..h {
                let run = &mut out[(v * h + t) * paths..(v * h + t + 1) * paths];
                sort_samples(run);
                let at = |q: f64| quantile_sorted(run, q).map(f64::from).unwrap_or(f64::NAN);
                cols[0].1.push(at(0.5));
                for (i, q) in quantiles.iter().enumerate() {
                    cols[i + 1].1.push(at(*q));
                }
            }
            columns.push(cols);
        }
    }

    let title = if args.mean {
        format!("Toto mean forecast, {h} steps")
    } else {
        format!(
            "Toto forecast, {h} steps: median and {}–{} band ({} samples)",
            quantile_label(
                quantiles
                    .iter()
                    .copied()
                    .fold(f64::INFINITY, f64::min)
                    .min(0.5)
            ),
            quantile_label(
                quantiles
                    .iter()
                    .copied()
                    .fold(f64::NEG_INFINITY, f64::max)
                    .max(0.5)
            ),
            args.samples
        )
    };
    write_and_plot(&args, &csv, &quantiles, &columns, &title)
}

/// One variate's output columns: (label, value per step); the first is the point forecast.
type Columns = Vec<(String, Vec<f64>)>;

/// Per variate: the median column, then one column per requested quantile.
fn toto2_columns(
    model: &Toto2<'_>,
    series: &Series<'_>,
    h: usize,
    quantiles: &[f64],
    names: &[String],
    timing: bool,
) -> anyhow::Result<Vec<Columns>> {
    for &q in quantiles {
        ensure!(
            (0.1 - 1e-9..=0.9 + 1e-9).contains(&q),
            "--quantiles: {q} is outside the Toto 2.0 head's range 0.1 … 0.9"
        );
    }
    let shape = ForecastShape {
        variates: series.variates,
        context: series.values.len() / series.variates.max(1),
        horizon: h,
    };
    let plan = model.memory_plan(&shape).map_err(|e| anyhow!("{e}"))?;
    let mut memory = vec![0u8; plan.bytes_unaligned()];
    let mut out = vec![0f32; series.variates * h * v2::NUM_QUANTILES];
    timed(timing, "one pass", || {
        model
            .forecast(
                series,
                h,
                &ForecastOptions::default(),
                &mut memory,
                &mut out,
            )
            .map_err(|e| anyhow!("forecast: {e}"))
    })?;
    let mut columns = Vec::with_capacity(series.variates);
    for (v, name) in names.iter().enumerate() {
        let at = |t: usize| &out[(v * h + t) * v2::NUM_QUANTILES..][..v2::NUM_QUANTILES];
        let mut cols = vec![(
            format!("{name}_median"),
            (0..h).map(|t| f64::from(at(t)[v2::MEDIAN])).collect(),
        )];
        for &q in quantiles {
            cols.push((
                format!("{name}_{}", quantile_label(q)),
                (0..h).map(|t| interpolate_quantile(at(t), q)).collect(),
            ));
        }
        columns.push(cols);
    }
    Ok(columns)
}

/// The level-`q` value from the nine knots 0.1 … 0.9: a knot's own value, else linear between
/// the two nearest knots.
fn interpolate_quantile(knots: &[f32], q: f64) -> f64 {
    let position = ((q - 0.1) / 0.1).clamp(0.0, 8.0);
    let nearest = position.round();
    if (position - nearest).abs() < 1e-9 {
        return f64::from(knots[nearest as usize]);
    }
    let below = position.floor() as usize;
    let frac = position - below as f64;
    f64::from(knots[below]) * (1.0 - frac) + f64::from(knots[below + 1]) * frac
}

fn plot_extension(plot: &std::path::Path) -> &str {
    plot.extension().and_then(|e| e.to_str()).unwrap_or("")
}

fn is_png(plot: &std::path::Path) -> bool {
    plot_extension(plot).eq_ignore_ascii_case("png")
}

/// Writes the forecast CSV and the optional plot.
fn write_and_plot(
    args: &Args,
    csv: &series_csv::CsvSeries,
    quantiles: &[f64],
    columns: &[Columns],
    title: &str,
) -> anyhow::Result<()> {
    let h = args.horizon;
    let stamps = match &csv.time {
        Some((stamps, format)) => Some((future_timestamps(stamps, h)?, *format)),
        None => None,
    };
    let mut text = String::from("step");
    if stamps.is_some() {
        text.push_str(",timestamp");
    }
    for cols in columns {
        for (label, _) in cols {
            text.push(',');
            text.push_str(label);
        }
    }
    text.push('\n');
    for t in 0..h {
        text.push_str(&(t + 1).to_string());
        if let Some((future, format)) = &stamps {
            text.push(',');
            text.push_str(&format_timestamp(future[t], *format));
        }
        for cols in columns {
            for (_, vals) in cols {
                text.push(',');
                text.push_str(&format!("{}", vals[t] as f32));
            }
        }
        text.push('\n');
    }
    match &args.output {
        Some(path) => {
            std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?
        }
        None => std::io::stdout().write_all(text.as_bytes())?,
    }

    if let Some(plot) = &args.plot {
        let shown = csv.steps.min((4 * h).max(256));
        // The band spans the lowest and highest requested quantiles.
        let by = |better: fn(f64, f64) -> bool| {
            (0..quantiles.len())
                .reduce(|a, b| {
                    if better(quantiles[b], quantiles[a]) {
                        b
                    } else {
                        a
                    }
                })
                .unwrap_or(0)
        };
        let band_columns = (by(|x, y| x < y), by(|x, y| x > y));
        let plots: Vec<PlotSeries<'_>> = columns
            .iter()
            .enumerate()
            .map(|(v, cols)| {
                let hist = &csv.values[v * csv.steps..(v + 1) * csv.steps];
                let band = if quantiles.len() >= 2 {
                    let (lo, hi) = (band_columns.0 + 1, band_columns.1 + 1);
                    (&cols[lo].1[..], &cols[hi].1[..])
                } else {
                    (&[][..], &[][..])
                };
                PlotSeries {
                    name: &csv.names[v],
                    history: &hist[hist.len() - shown..],
                    center: &cols[0].1,
                    band,
                }
            })
            .collect();
        // Timestamps under the x axis when the input has them (history, then forecast).
        let x_labels: Vec<String> = match (&csv.time, &stamps) {
            (Some((past, format)), Some((future, _))) => past[past.len() - shown..]
                .iter()
                .chain(future)
                .map(|&t| format_timestamp(t, *format))
                .collect(),
            _ => Vec::new(),
        };
        let drawing = svg(&plots, title, &x_labels, 900.0, 420.0);
        let bytes = if is_png(plot) {
            goldcrest_std::plot::png(&drawing, 2.0).map_err(|e| anyhow!(e))?
        } else {
            drawing.into_bytes()
        };
        std::fs::write(plot, bytes).with_context(|| format!("writing {}", plot.display()))?;
    }
    Ok(())
}
