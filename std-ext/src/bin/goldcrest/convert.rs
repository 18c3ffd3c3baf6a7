//! `goldcrest convert <arch> IN OUT [...]`: checkpoints from other layouts into goldcrest files.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, bail};
use goldcrest_core::models::decoder::{self, Weights};
use goldcrest_core::models::rwkv6::{Config, Rwkv6};
use goldcrest_core::quant::Format;
use goldcrest_std::convert::decoder::{Options as DecoderOptions, convert_to_file};
use goldcrest_std::convert::rwkv6::{self, Options};
use goldcrest_std::load::ModelFile;
use goldcrest_std::tokenize::Tokenizer;

/// Arguments of `goldcrest convert`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    arch: Arch,
}

#[derive(clap::Subcommand)]
enum Arch {
    /// RWKV-6 "Finch" from safetensors with official (`blocks.N.att.*`) or Hugging Face
    /// (`rwkv.blocks.N.attention.*`) names; for a `.pth`, run tools/rwkv6/pth_to_safetensors.py
    /// first.
    Rwkv6(Rwkv6Args),
    /// GoldFinch (Finch-C2 + GOLD layers) from safetensors with the official names
    /// (`w_kv_cache_a.weight`, `blocks.N.att.time_maa_q_w1`, ...).
    Goldfinch(GoldfinchArgs),
    /// A Hugging Face `LlamaForCausalLM` directory (Llama-2-style, Spectra TriLM "Unpacked").
    Llama(DecoderArgs),
    /// A Hugging Face `Qwen2ForCausalLM` directory (Qwen2, Qwen2.5).
    Qwen2(DecoderArgs),
    /// Toto from a checkpoint directory (config.json + model.safetensors) with `toto-ts` module
    /// names or the released file's names (`mlp.0.w12`, `mlp.0.w3`, `rotary_emb.freqs`).
    Toto(TotoArgs),
    /// Toto 2.0 from a checkpoint directory (config.json + model.safetensors as `toto-2`'s
    /// `Toto2Model.save_pretrained` writes them), strictly by the module's tensor names.
    Toto2(Toto2Args),
}

#[derive(clap::Args)]
struct Toto2Args {
    /// Directory holding config.json and model.safetensors.
    dir: PathBuf,
    /// Output goldcrest file.
    output: PathBuf,
    /// Format of the layers' matrices (attention in/out, SwiGLU); the patch embedding, head,
    /// norms, biases and τ stay f32.
    #[arg(long, default_value = "f32", value_parser = ["f32", "f16", "bf16", "q8", "q4", "tq2", "tq1"])]
    weights: String,
}

#[derive(clap::Args)]
struct TotoArgs {
    /// Directory holding config.json and model.safetensors.
    dir: PathBuf,
    /// Output goldcrest file.
    output: PathBuf,
    /// Format of the transformer matrices and the unembedding (ternary keeps the unembedding q8).
    #[arg(long, default_value = "f32", value_parser = ["f32", "f16", "bf16", "q8", "q4", "tq2", "tq1"])]
    weights: String,
    /// Store the unembedding and the mixture head as one exact fused f32 matrix.
    #[arg(long)]
    fuse_head: bool,
}

#[derive(clap::Args)]
struct DecoderArgs {
    /// Checkpoint directory: config.json and model.safetensors (or shards with
    /// model.safetensors.index.json).
    input: PathBuf,
    /// Output goldcrest file.
    output: PathBuf,
    /// Format of the seven linear layers per block. tq2/tq1 import already-ternary weights
    /// exactly (TriLM) and refuse any other tensor, naming it.
    #[arg(long, default_value = "f16", value_parser = ["f32", "f16", "bf16", "q8", "q4", "tq2", "tq1"])]
    weights: String,
    /// Format of the embedding and untied head (default: f32 for f32 checkpoints, else f16).
    #[arg(long, value_parser = ["f32", "f16", "bf16", "q8", "q4"])]
    head_weights: Option<String>,
    /// Tokenizer to embed: a vocabulary file (tokenizer.json, *.tiktoken, *.gguf) or a
    /// checkpoint directory's tokenizer.json.
    #[arg(long, value_name = "PATH")]
    tokenizer: Option<String>,
    /// Kind of the embedded tokenizer when it cannot be told from the file name.
    #[arg(long, value_name = "KIND", requires = "tokenizer")]
    tokenizer_kind: Option<String>,
}

#[derive(clap::Args)]
struct GoldfinchArgs {
    /// Input safetensors checkpoint.
    input: PathBuf,
    /// Output goldcrest file.
    output: PathBuf,
    /// Format of the large matrices (block projections, channel mix, key compression).
    #[arg(long, default_value = "f16", value_parser = ["f32", "f16", "bf16", "q8", "q4", "tq2", "tq1"])]
    weights: String,
    /// Format of the embedding and the head.
    #[arg(long, default_value = "f16", value_parser = ["f32", "f16", "bf16", "q8", "q4"])]
    embeddings: String,
    /// Tokenizer to embed (as for `convert rwkv6`).
    #[arg(long, value_name = "PATH|world")]
    tokenizer: Option<String>,
    /// Kind of the embedded tokenizer when it cannot be told from the file name.
    #[arg(long, value_name = "KIND", requires = "tokenizer")]
    tokenizer_kind: Option<String>,
    /// RoPE base of the GOLD attention, for checkpoints of the paper's RoPE ablation
    /// (`configs/goldfinch_ablation_rope10k.yaml`: 10000); default: no RoPE.
    #[arg(long, value_name = "BASE")]
    rope_theta: Option<u32>,
}

#[derive(clap::Args)]
struct Rwkv6Args {
    /// Input safetensors checkpoint.
    input: PathBuf,
    /// Output goldcrest file.
    output: PathBuf,
    /// Format of the eight large linear layers per block.
    #[arg(long, default_value = "f16", value_parser = ["f32", "f16", "bf16", "q8", "q4", "tq2", "tq1"])]
    weights: String,
    /// Format of the embedding and the head.
    #[arg(long, default_value = "f16", value_parser = ["f32", "f16", "bf16", "q8", "q4"])]
    embeddings: String,
    /// Undo an fp16 export that divided att.output and ffn.value of layer i by 2^(i / N)
    /// (6 for llama.cpp GGUF-derived or `rwkv` fp16-converted weights; official and Hugging
    /// Face checkpoints need nothing).
    #[arg(long, value_name = "N")]
    rescale_every: Option<usize>,
    /// Tokenizer to embed: `world` (the bundled RWKV World vocabulary), a vocabulary file
    /// (tokenizer.json, *.tiktoken, rwkv_vocab_*.txt, *.gguf) or a directory with tokenizer.json.
    #[arg(long, value_name = "PATH|world")]
    tokenizer: Option<String>,
    /// Kind of the embedded tokenizer (`goldcrest.tokenizer`) when it cannot be told from the
    /// file name: `hf-json`, `tiktoken`, `world` or `gguf`.
    #[arg(long, value_name = "KIND", requires = "tokenizer")]
    tokenizer_kind: Option<String>,
}

fn format_arg(name: &str) -> anyhow::Result<Format> {
    Ok(match name {
        "q8" => Format::Q8_0,
        "q4" => Format::Q4_0,
        "tq2" => Format::Tq2_0,
        "tq1" => Format::Tq1_0,
        other => match Format::from_name(other) {
            Some(f) => f,
            None => bail!("unknown format {other:?}"),
        },
    })
}

/// Runs `goldcrest convert`.
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.arch {
        Arch::Rwkv6(a) => rwkv6_command(a),
        Arch::Goldfinch(a) => goldfinch_command(a),
        Arch::Llama(a) => decoder_command(decoder::Arch::Llama, a),
        Arch::Qwen2(a) => decoder_command(decoder::Arch::Qwen2, a),
        Arch::Toto(a) => toto_command(a),
        Arch::Toto2(a) => toto2_command(a),
    }
}

fn toto2_command(a: Toto2Args) -> anyhow::Result<()> {
    let options = goldcrest_std::convert::toto2::Options {
        weights: format_arg(&a.weights)?,
    };
    // The converter loads its own output with the model before returning it.
    let writer = goldcrest_std::convert::toto2::convert(&a.dir, options)
        .with_context(|| format!("converting {}", a.dir.display()))?;
    writer.write_file(&a.output)?;
    let size = std::fs::metadata(&a.output).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "{}: toto2, {size} bytes ({} layer weights)",
        a.output.display(),
        options.weights.name()
    );
    Ok(())
}

fn toto_command(a: TotoArgs) -> anyhow::Result<()> {
    let options = goldcrest_std::convert::toto::Options {
        weights: format_arg(&a.weights)?,
        fuse_head: a.fuse_head,
    };
    // The converter loads its own output with the model before returning it.
    let writer = goldcrest_std::convert::toto::convert(&a.dir, options)
        .with_context(|| format!("converting {}", a.dir.display()))?;
    writer.write_file(&a.output)?;
    let size = std::fs::metadata(&a.output).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "{}: toto, {size} bytes ({} linear weights{})",
        a.output.display(),
        options.weights.name(),
        if a.fuse_head { ", fused head" } else { "" }
    );
    Ok(())
}

/// The tokenizer `--tokenizer SPEC [--tokenizer-kind KIND]` names, as its kind and the bytes to embed.
fn embeddable_tokenizer(
    spec: Option<&str>,
    kind: Option<&str>,
) -> anyhow::Result<Option<(String, Vec<u8>)>> {
    spec.map(|spec| Tokenizer::embeddable(spec, kind).with_context(|| format!("tokenizer {spec}")))
        .transpose()
}

fn goldfinch_command(a: GoldfinchArgs) -> anyhow::Result<()> {
    use goldcrest_core::models::goldfinch;
    let input =
        std::fs::read(&a.input).with_context(|| format!("reading {}", a.input.display()))?;
    let tokenizer = embeddable_tokenizer(a.tokenizer.as_deref(), a.tokenizer_kind.as_deref())?;
    let options = goldcrest_std::convert::goldfinch::Options {
        weights: format_arg(&a.weights)?,
        embeddings: format_arg(&a.embeddings)?,
        tokenizer,
        rope_theta: a.rope_theta,
    };
    let converted = goldcrest_std::convert::goldfinch::convert(&input, &options)
        .with_context(|| format!("converting {}", a.input.display()))?;
    converted.writer()?.write_file(&a.output)?;
    let file = ModelFile::open(&a.output)?;
    let st = file.safetensors()?;
    let config = goldfinch::Config::from_source(&st)?;
    let mut layers = vec![None; config.n_layer];
    goldfinch::GoldFinch::load(&st, &mut layers, goldcrest_std::kernels::detect())
        .with_context(|| format!("loading the written {}", a.output.display()))?;
    eprintln!(
        "{}: goldfinch, {} layers ({} Finch-C2, {} GOLD), width {}, compressed key {}, vocabulary {}; {} bytes ({} weights); cache {} bytes/token at rest, {} working",
        a.output.display(),
        config.n_layer,
        config.first_gold,
        config.n_gold(),
        config.n_embd,
        config.c_dim,
        config.vocab_size,
        file.bytes().len(),
        options.weights.name(),
        config.at_rest_bytes_per_token(),
        4 + 4 * config.working_floats_per_token(),
    );
    Ok(())
}

fn rwkv6_command(a: Rwkv6Args) -> anyhow::Result<()> {
    let input =
        std::fs::read(&a.input).with_context(|| format!("reading {}", a.input.display()))?;
    let tokenizer = embeddable_tokenizer(a.tokenizer.as_deref(), a.tokenizer_kind.as_deref())?;
    let options = Options {
        weights: format_arg(&a.weights)?,
        embeddings: format_arg(&a.embeddings)?,
        rescale_every: a.rescale_every,
        tokenizer,
    };
    let converted = rwkv6::convert(&input, &options)
        .with_context(|| format!("converting {}", a.input.display()))?;
    converted.writer()?.write_file(&a.output)?;

    // Read back what was written, as a user would, and load it strictly.
    let file = ModelFile::open(&a.output)?;
    let st = file.safetensors()?;
    let config = Config::from_source(&st)?;
    let mut layers = vec![None; config.n_layer];
    Rwkv6::load(&st, &mut layers, goldcrest_std::kernels::detect())
        .with_context(|| format!("loading the written {}", a.output.display()))?;
    eprintln!(
        "{}: rwkv6, {} layers, width {}, head size {}, ffn {}, vocabulary {}; {} bytes ({} linear weights)",
        a.output.display(),
        config.n_layer,
        config.n_embd,
        config.head_size,
        config.dim_ffn,
        config.vocab_size,
        file.bytes().len(),
        options.weights.name()
    );
    Ok(())
}

fn decoder_command(arch: decoder::Arch, a: DecoderArgs) -> anyhow::Result<()> {
    let options = DecoderOptions {
        weights: format_arg(&a.weights)?,
        head_weights: a.head_weights.as_deref().map(format_arg).transpose()?,
    };
    let terminal = std::io::stderr().is_terminal();
    let mut progress = |done: usize, total: usize, name: &str| {
        if terminal {
            eprint!("\r\x1b[K[{done}/{total}] {name}");
        }
    };
    let tokenizer = embeddable_tokenizer(a.tokenizer.as_deref(), a.tokenizer_kind.as_deref())?;
    // Streams: header first, then each tensor as it is converted.
    convert_to_file(&a.input, arch, options, tokenizer, &a.output, &mut progress)
        .with_context(|| format!("converting {}", a.input.display()))?;
    if terminal {
        eprintln!();
    }

    // Read back what was written, as a user would, and load it strictly.
    let file = ModelFile::open(&a.output)?;
    let st = file.safetensors()?;
    let config = decoder::Config::from_safetensors(&st)?;
    let mut layers = vec![None; config.n_layer];
    let weights = Weights::load(&st, &mut layers)
        .with_context(|| format!("loading the written {}", a.output.display()))?;
    eprintln!(
        "{}: {}, {} layers, hidden {}, {} heads ({} kv) of {}, ffn {}, vocabulary {}{}; {} bytes ({} linear weights)",
        a.output.display(),
        arch.name(),
        config.n_layer,
        config.hidden,
        config.n_head,
        config.n_kv_head,
        config.head_dim,
        config.intermediate,
        config.vocab,
        if config.tied { ", tied head" } else { "" },
        weights.bytes(),
        options.weights.name()
    );
    Ok(())
}
