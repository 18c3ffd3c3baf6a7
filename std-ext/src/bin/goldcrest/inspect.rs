//! `goldcrest inspect FILE [--json]`: metadata, tensors and memory plan of a model file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use goldcrest_core::format::{SafeTensors, TensorView};
use goldcrest_core::models::{decoder, goldfinch, rwkv6, toto};
use goldcrest_std::load::ModelFile;
use serde::Serialize;

/// Arguments of `goldcrest inspect`.
#[derive(clap::Args)]
pub struct Args {
    /// The model file (safetensors with goldcrest metadata).
    file: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    path: String,
    file_bytes: usize,
    header_bytes: usize,
    data_offset: usize,
    format_version: Option<String>,
    arch: Option<String>,
    metadata: BTreeMap<String, String>,
    tensors: Vec<TensorReport>,
    memory_plan: PlanReport,
}

#[derive(Serialize)]
struct TensorReport {
    name: String,
    dtype: &'static str,
    /// goldcrest storage format, `None` for dtypes goldcrest has no views for.
    format: Option<&'static str>,
    shape: Vec<u64>,
    stored_shape: Vec<u64>,
    bytes: usize,
    offset: u64,
}

#[derive(Serialize, Default)]
struct FormatTotal {
    tensors: usize,
    bytes: usize,
}

#[derive(Serialize)]
struct PlanReport {
    /// Read in place from the file (mmap or flash); never copied.
    weight_bytes: usize,
    per_format: BTreeMap<String, FormatTotal>,
    /// Model state and scratch depend on the architecture; `None` until a model for this
    /// file's `goldcrest.arch` reports its plan.
    state_bytes: Option<usize>,
    scratch_bytes: Option<usize>,
    /// What the state and scratch figures assume (context, cache format, chunk size), or why
    /// there is no plan for a known architecture (its hyperparameters do not load).
    assumes: Option<String>,
}

/// State and scratch of a model this build knows, under stated defaults; for a known
/// architecture whose hyperparameters do not load, the reason instead (inspect still works on
/// broken files).
fn model_plan(st: &SafeTensors<'_>) -> (Option<(usize, usize)>, Option<String>) {
    const CHUNK: usize = 64;
    let arch = st.metadata().arch().and_then(|a| a.as_str());
    let planned = match arch {
        Some("llama" | "qwen2") => decoder::Config::from_safetensors(st).and_then(|config| {
            let context = config.max_positions.min(4096);
            decoder::Decoder::plan(&config, context, decoder::KvFormat::F16, CHUNK, 0).map(|plan| {
                let assumes =
                    format!("context {context}, f16 KV cache, prompt chunks of {CHUNK} tokens");
                (plan, assumes)
            })
        }),
        Some(rwkv6::ARCH) => rwkv6::Config::from_source(st).and_then(|config| {
            rwkv6::Rwkv6::plan(&config, CHUNK, st.data().len())
                .map(|plan| (plan, format!("prompt chunks of {CHUNK} tokens")))
        }),
        Some(goldfinch::ARCH) => goldfinch::Config::from_source(st).and_then(|config| {
            use goldfinch::KvFormat;
            const CONTEXT: usize = 4096;
            let plan = goldfinch::GoldFinch::plan_for(
                &config,
                CONTEXT,
                CHUNK,
                KvFormat::F16,
                st.data().len(),
            )?;
            let per_token = |kv| config.working_bytes_per_token(kv).unwrap_or(0);
            let assumes = format!(
                "context {CONTEXT} tokens, f16 GOLD K/V cache, prompt chunks of {CHUNK} tokens; \
                 {} Finch-C2 then {} GOLD layers; cache per token: {} B working with f16 keys \
                 and values ({} B with f32), {} B at rest (token id + {} compressed f32, {} B \
                 with f16)",
                config.first_gold,
                config.n_gold(),
                per_token(KvFormat::F16),
                per_token(KvFormat::F32),
                config.at_rest_bytes_per_token(),
                config.c_dim,
                4 + 2 * config.c_dim,
            );
            Ok((plan, assumes))
        }),
        Some(toto::v2::ARCH) => {
            toto::v2::Toto2::new(*st, goldcrest_core::kernels::Kernels::scalar()).and_then(
                |model| {
                    let shape = toto::v2::ForecastShape {
                        variates: 1,
                        context: 4096,
                        horizon: 256,
                    };
                    let assumes = format!(
                        "{}; one variate, context 4096 steps, horizon 256 (one pass, scratch \
                         grows with variates × patches)",
                        model.config()
                    );
                    model.memory_plan(&shape).map(|plan| (plan, assumes))
                },
            )
        }
        _ => return (None, None),
    };
    match planned {
        Ok((plan, assumes)) => (Some((plan.state_bytes, plan.scratch_bytes)), Some(assumes)),
        Err(e) => (None, Some(format!("no plan: {e}"))),
    }
}

fn format_label(t: &TensorView<'_>) -> Option<&'static str> {
    t.format().ok().map(|f| f.name())
}

fn report(model: &ModelFile, st: &SafeTensors<'_>) -> anyhow::Result<Report> {
    let meta = st.metadata();
    let (plan, assumes) = model_plan(st);
    let version = meta
        .format_version()
        .context("reading goldcrest.format_version")?
        .map(|(major, minor)| format!("{major}.{minor}"));
    let mut tensors = Vec::with_capacity(st.len());
    let mut per_format: BTreeMap<String, FormatTotal> = BTreeMap::new();
    for t in st.tensors() {
        let key = match format_label(&t) {
            Some(f) => f.to_string(),
            None => format!("{} (no goldcrest view)", t.dtype().name()),
        };
        let total = per_format.entry(key).or_default();
        total.tensors += 1;
        total.bytes += t.bytes().len();
        tensors.push(TensorReport {
            name: t.name().to_string(),
            dtype: t.dtype().name(),
            format: format_label(&t),
            shape: t.shape().to_vec(),
            stored_shape: t.stored_shape().to_vec(),
            bytes: t.bytes().len(),
            offset: t.data_offset(),
        });
    }
    Ok(Report {
        path: model.path().display().to_string(),
        file_bytes: model.bytes().len(),
        header_bytes: st.header().len(),
        data_offset: st.data_offset(),
        format_version: version,
        arch: meta.arch().map(|a| a.to_string()),
        metadata: meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        memory_plan: PlanReport {
            weight_bytes: st.data().len(),
            per_format,
            state_bytes: plan.map(|p| p.0),
            scratch_bytes: plan.map(|p| p.1),
            assumes,
        },
        tensors,
    })
}

fn human_bytes(n: usize) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = "B";
    for u in UNITS {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit} ({n} B)")
}

/// Control characters (possible in names and values) escaped, so they cannot garble a terminal.
fn printable(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let escaped = c.is_control().then(|| c.escape_default());
            let plain = (!c.is_control()).then_some(c);
            escaped.into_iter().flatten().chain(plain)
        })
        .collect()
}

fn shorten(value: &str) -> String {
    const MAX: usize = 72;
    let flat = printable(value);
    if flat.chars().count() <= MAX {
        return flat;
    }
    let head: String = flat.chars().take(MAX).collect();
    format!("{head}… ({} bytes)", value.len())
}

fn print_text(r: &Report) {
    println!("file            {}", r.path);
    println!("size            {}", human_bytes(r.file_bytes));
    println!(
        "format version  {}",
        r.format_version
            .as_deref()
            .unwrap_or("none (plain safetensors file)")
    );
    println!("architecture    {}", r.arch.as_deref().unwrap_or("none"));
    println!(
        "header          {} B, data section at byte {}",
        r.header_bytes, r.data_offset
    );

    println!("\nmetadata ({} keys)", r.metadata.len());
    let key_width = r
        .metadata
        .keys()
        .map(|k| k.chars().count())
        .max()
        .unwrap_or(0);
    for (k, v) in &r.metadata {
        println!("  {:<key_width$}  {}", printable(k), shorten(v));
    }

    println!("\ntensors ({})", r.tensors.len());
    let name_width = r
        .tensors
        .iter()
        .map(|t| t.name.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "  {:<name_width$}  {:<24}  {:<20}  {:>12}",
        "name", "format", "shape", "bytes"
    );
    for t in &r.tensors {
        let format = match t.format {
            Some(f) => f.to_string(),
            None => format!("{} (no view)", t.dtype),
        };
        let shape = format!("{:?}", t.shape);
        println!(
            "  {:<name_width$}  {format:<24}  {shape:<20}  {:>12}",
            printable(&t.name),
            t.bytes
        );
    }

    let p = &r.memory_plan;
    println!("\nmemory plan");
    println!(
        "  weights (zero-copy, read in place)  {}",
        human_bytes(p.weight_bytes)
    );
    for (f, total) in &p.per_format {
        let noun = if total.tensors == 1 {
            "tensor"
        } else {
            "tensors"
        };
        println!(
            "    {f:<30}  {:>5} {noun:<7}  {}",
            total.tensors,
            human_bytes(total.bytes)
        );
    }
    if let (Some(state), Some(scratch), Some(assumes)) =
        (p.state_bytes, p.scratch_bytes, &p.assumes)
    {
        println!(
            "  state (caller memory)               {}",
            human_bytes(state)
        );
        println!(
            "  scratch                             {}",
            human_bytes(scratch)
        );
        println!("    assuming {assumes}");
        return;
    }
    if let Some(note) = &p.assumes {
        println!("  state and scratch                   {note}");
        return;
    }
    match &r.arch {
        Some(arch) => println!(
            "  state and scratch                   depend on the model; no plan for architecture '{arch}' in this build"
        ),
        None => println!(
            "  state and scratch                   depend on the model; the file names no architecture (goldcrest.arch)"
        ),
    }
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<()> {
    let model = ModelFile::open(&args.file)?;
    let st = model.safetensors()?;
    let r = report(&model, &st)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print_text(&r);
    }
    Ok(())
}
