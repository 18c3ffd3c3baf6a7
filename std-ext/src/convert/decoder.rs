//! `LlamaForCausalLM` / `Qwen2ForCausalLM` checkpoints → goldcrest `llama` / `qwen2` files.
//!
//! `config.json` becomes `goldcrest.<arch>.*` metadata (both the transformers 4.x spelling,
//! `rope_theta`, and the 5.x one, `rope_parameters.rope_theta`, are read; a missing θ is an
//! error rather than a silent default). Tensor names are kept as Hugging Face writes them, and
//! loading is strict: every tensor the config implies must be present with its shape, and any
//! other tensor is an error naming it (`rotary_emb.inv_freq` buffers that old checkpoints carry
//! are derived data and skipped).
//!
//! The seven linear layers of every block are stored in `--weights` format. `tq2_0`/`tq1_0`
//! are an **exact import** for already-ternary checkpoints (Spectra TriLM "Unpacked"): a tensor
//! that is not `scale · {-1, 0, 1}` per 256-block is refused, naming it, instead of being
//! quantized. Norms and biases are stored in f32; the embedding and untied head keep f32 for
//! f32 checkpoints and f16 otherwise, unless a head format is given.

use std::path::Path;

use goldcrest_alloc::quantize::{import_ternary, quantize};
use goldcrest_core::models::decoder::Arch;
use goldcrest_core::quant::Format;

use super::hf::{HfCheckpoint, invalid, to_f32};
use crate::load::FileError;
use crate::write::ModelWriter;

/// What to convert to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Format of the block linear layers (q, k, v, o, gate, up, down).
    pub weights: Format,
    /// Format of the embedding and the untied head; `None`: f32 for f32 checkpoints, else f16.
    pub head_weights: Option<Format>,
}

/// Hyperparameters read from `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct HfConfig {
    /// Checkpoint family.
    pub arch: Arch,
    /// `num_hidden_layers`.
    pub n_layer: usize,
    /// `hidden_size`.
    pub hidden: usize,
    /// `intermediate_size`.
    pub intermediate: usize,
    /// `num_attention_heads`.
    pub n_head: usize,
    /// `num_key_value_heads` (defaults to `num_attention_heads`).
    pub n_kv_head: usize,
    /// `head_dim` (defaults to `hidden_size / num_attention_heads`).
    pub head_dim: usize,
    /// `vocab_size`.
    pub vocab: usize,
    /// RoPE θ.
    pub rope_theta: f64,
    /// `rms_norm_eps`.
    pub rms_eps: f64,
    /// q/k/v biases (Qwen2: always; LLaMA: `attention_bias`).
    pub qkv_bias: bool,
    /// o_proj bias (LLaMA `attention_bias`).
    pub o_bias: bool,
    /// MLP biases (LLaMA `mlp_bias`).
    pub mlp_bias: bool,
    /// `tie_word_embeddings`.
    pub tied: bool,
    /// `max_position_embeddings`.
    pub max_positions: usize,
    /// Attention window of the sliding layers (0: none).
    pub sliding_window: usize,
    /// First sliding layer (Qwen2 `max_window_layers`; layers before it attend to everything).
    pub first_sliding_layer: usize,
}

/// Sliding-window attention as transformers 5 decides it: `layer_types` when present
/// (full layers first, then sliding ones), else Qwen2's `use_sliding_window` with
/// `max_window_layers`. Returns `(window, first sliding layer)`, `(0, 0)` for none.
fn sliding(
    cfg: &serde_json::Value,
    arch: Arch,
    n_layer: usize,
) -> Result<(usize, usize), FileError> {
    let use_sliding = bool_field(cfg, "use_sliding_window", false)?;
    let types: Option<Vec<&str>> = field(cfg, "layer_types")
        .map(|v| {
            v.as_array()
                .and_then(|a| a.iter().map(|t| t.as_str()).collect::<Option<Vec<_>>>())
                .filter(|t| t.len() == n_layer)
                .ok_or_else(|| invalid("config.json: 'layer_types' is not one string per layer"))
        })
        .transpose()?;
    let first = match &types {
        Some(types) => {
            let first = types
                .iter()
                .position(|&t| t == "sliding_attention")
                .unwrap_or(n_layer);
            let valid = types.iter().enumerate().all(|(i, &t)| {
                t == if i < first {
                    "full_attention"
                } else {
                    "sliding_attention"
                }
            });
            if !valid {
                return Err(invalid(format!(
                    "config.json: layer_types {types:?} (only full layers followed by sliding ones are supported)"
                )));
            }
            first
        }
        None if use_sliding && arch == Arch::Qwen2 => field(cfg, "max_window_layers")
            .and_then(|v| v.as_u64())
            .unwrap_or(0) as usize,
        None => n_layer,
    };
    if first >= n_layer {
        return Ok((0, 0));
    }
    if arch == Arch::Llama {
        return Err(invalid(
            "config.json: LLaMA has no sliding-window attention",
        ));
    }
    let window = usize_field(cfg, "sliding_window")?;
    Ok((window, first))
}

fn field<'j>(cfg: &'j serde_json::Value, key: &str) -> Option<&'j serde_json::Value> {
    cfg.get(key).filter(|v| !v.is_null())
}

fn usize_field(cfg: &serde_json::Value, key: &str) -> Result<usize, FileError> {
    field(cfg, key)
        .and_then(|v| v.as_u64())
        .filter(|&v| v > 0)
        .map(|v| v as usize)
        .ok_or_else(|| {
            invalid(format!(
                "config.json: '{key}' missing or not a positive integer"
            ))
        })
}

fn bool_field(cfg: &serde_json::Value, key: &str, default: bool) -> Result<bool, FileError> {
    match field(cfg, key) {
        None => Ok(default),
        Some(v) => v
            .as_bool()
            .ok_or_else(|| invalid(format!("config.json: '{key}' is not true/false"))),
    }
}

impl HfConfig {
    /// Parses `config.json` text for `arch`. `has_lm_head` decides tying when the config
    /// does not say.
    pub fn parse(text: &str, arch: Arch, has_lm_head: bool) -> Result<Self, FileError> {
        let cfg: serde_json::Value =
            serde_json::from_str(text).map_err(|e| invalid(format!("config.json: {e}")))?;
        let class = match arch {
            Arch::Llama => "LlamaForCausalLM",
            Arch::Qwen2 => "Qwen2ForCausalLM",
        };
        let classes = field(&cfg, "architectures").and_then(|a| a.as_array());
        if !classes.is_some_and(|a| a.iter().any(|c| c.as_str() == Some(class))) {
            return Err(invalid(format!(
                "config.json: 'architectures' does not list {class}; use the converter for its family"
            )));
        }
        if field(&cfg, "rope_scaling").is_some() {
            return Err(invalid(
                "config.json: 'rope_scaling' is not supported (default RoPE only)",
            ));
        }
        let params = field(&cfg, "rope_parameters");
        if let Some(kind) = params.and_then(|p| field(p, "rope_type"))
            && kind.as_str() != Some("default")
        {
            return Err(invalid(format!(
                "config.json: rope_type {kind} is not supported (default RoPE only)"
            )));
        }
        let rope_theta = field(&cfg, "rope_theta")
            .or_else(|| params.and_then(|p| field(p, "rope_theta")))
            .and_then(|v| v.as_f64())
            .filter(|v| v.is_finite() && *v > 0.0)
            .ok_or_else(|| {
                invalid("config.json: no 'rope_theta' (nor rope_parameters.rope_theta)")
            })?;
        let n_layer = usize_field(&cfg, "num_hidden_layers")?;
        let (sliding_window, first_sliding_layer) = sliding(&cfg, arch, n_layer)?;
        if let Some(act) = field(&cfg, "hidden_act")
            && act.as_str() != Some("silu")
        {
            return Err(invalid(format!(
                "config.json: hidden_act {act} (only silu)"
            )));
        }
        let n_head = usize_field(&cfg, "num_attention_heads")?;
        let hidden = usize_field(&cfg, "hidden_size")?;
        let head_dim = match field(&cfg, "head_dim") {
            Some(_) => usize_field(&cfg, "head_dim")?,
            None if hidden % n_head == 0 => hidden / n_head,
            None => return Err(invalid("config.json: hidden_size not divisible by heads")),
        };
        let n_kv_head = match field(&cfg, "num_key_value_heads") {
            Some(_) => usize_field(&cfg, "num_key_value_heads")?,
            None => n_head,
        };
        let attention_bias = bool_field(&cfg, "attention_bias", false)?;
        let (qkv_bias, o_bias, mlp_bias) = match arch {
            Arch::Qwen2 => (true, false, false),
            Arch::Llama => (
                attention_bias,
                attention_bias,
                bool_field(&cfg, "mlp_bias", false)?,
            ),
        };
        let rms_eps = field(&cfg, "rms_norm_eps")
            .and_then(|v| v.as_f64())
            .filter(|v| v.is_finite() && *v > 0.0)
            .ok_or_else(|| invalid("config.json: 'rms_norm_eps' missing or invalid"))?;
        Ok(HfConfig {
            arch,
            n_layer,
            hidden,
            intermediate: usize_field(&cfg, "intermediate_size")?,
            n_head,
            n_kv_head,
            head_dim,
            vocab: usize_field(&cfg, "vocab_size")?,
            rope_theta,
            rms_eps,
            qkv_bias,
            o_bias,
            mlp_bias,
            tied: bool_field(&cfg, "tie_word_embeddings", !has_lm_head)?,
            max_positions: usize_field(&cfg, "max_position_embeddings")?,
            sliding_window,
            first_sliding_layer,
        })
    }

    /// Every tensor name with its shape and role.
    fn expected(&self) -> Vec<(String, Vec<usize>, Role)> {
        let (h, ff) = (self.hidden, self.intermediate);
        let (qw, kvw) = (self.n_head * self.head_dim, self.n_kv_head * self.head_dim);
        let mut out = vec![
            (
                "model.embed_tokens.weight".to_string(),
                vec![self.vocab, h],
                Role::Embedding,
            ),
            ("model.norm.weight".to_string(), vec![h], Role::Small),
        ];
        if !self.tied {
            out.push((
                "lm_head.weight".to_string(),
                vec![self.vocab, h],
                Role::Embedding,
            ));
        }
        for i in 0..self.n_layer {
            let p = |s: &str| format!("model.layers.{i}.{s}");
            out.push((p("input_layernorm.weight"), vec![h], Role::Small));
            out.push((p("post_attention_layernorm.weight"), vec![h], Role::Small));
            for (name, rows, cols, has_bias) in [
                ("self_attn.q_proj", qw, h, self.qkv_bias),
                ("self_attn.k_proj", kvw, h, self.qkv_bias),
                ("self_attn.v_proj", kvw, h, self.qkv_bias),
                ("self_attn.o_proj", h, qw, self.o_bias),
                ("mlp.gate_proj", ff, h, self.mlp_bias),
                ("mlp.up_proj", ff, h, self.mlp_bias),
                ("mlp.down_proj", h, ff, self.mlp_bias),
            ] {
                out.push((p(&format!("{name}.weight")), vec![rows, cols], Role::Linear));
                if has_bias {
                    out.push((p(&format!("{name}.bias")), vec![rows], Role::Small));
                }
            }
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Linear,
    Embedding,
    Small,
}

/// A checked checkpoint and the file it converts to: metadata set, and every tensor's name,
/// shape, role and output format decided (nothing converted yet).
struct Plan {
    ckpt: HfCheckpoint,
    writer: ModelWriter,
    tensors: Vec<(String, Vec<usize>, Role, Format)>,
}

fn plan(dir: &Path, arch: Arch, options: Options) -> Result<Plan, FileError> {
    let ckpt = HfCheckpoint::open(dir)?;
    let config_path = dir.join("config.json");
    let text = std::fs::read_to_string(&config_path).map_err(|source| FileError::Io {
        path: config_path.clone(),
        source,
    })?;
    let cfg = HfConfig::parse(&text, arch, ckpt.contains("lm_head.weight"))?;
    let expected = cfg.expected();
    for name in ckpt.names() {
        if name.ends_with("rotary_emb.inv_freq") {
            continue;
        }
        if !expected.iter().any(|(n, _, _)| n == name) {
            return Err(invalid(format!(
                "unexpected tensor '{name}' for this {} config",
                arch.name()
            )));
        }
    }
    let mut w = ModelWriter::new();
    w.arch(arch.name())?;
    w.hyperparameter("n_layer", cfg.n_layer)?
        .hyperparameter("hidden_size", cfg.hidden)?
        .hyperparameter("intermediate_size", cfg.intermediate)?
        .hyperparameter("n_head", cfg.n_head)?
        .hyperparameter("n_kv_head", cfg.n_kv_head)?
        .hyperparameter("head_dim", cfg.head_dim)?
        .hyperparameter("vocab_size", cfg.vocab)?
        .hyperparameter("rope_theta", cfg.rope_theta as f32)?
        .hyperparameter("rms_norm_eps", cfg.rms_eps as f32)?
        .hyperparameter("qkv_bias", cfg.qkv_bias)?
        .hyperparameter("o_bias", cfg.o_bias)?
        .hyperparameter("mlp_bias", cfg.mlp_bias)?
        .hyperparameter("tie_word_embeddings", cfg.tied)?
        .hyperparameter("context_length", cfg.max_positions)?;
    if cfg.sliding_window > 0 {
        w.hyperparameter("sliding_window", cfg.sliding_window)?
            .hyperparameter("first_sliding_layer", cfg.first_sliding_layer)?;
    }
    let mut tensors = Vec::with_capacity(expected.len());
    // Shapes and source formats are checked here, from the mapped headers only, so a bad
    // checkpoint fails before anything is converted or written.
    for (name, shape, role) in expected {
        let source_format = ckpt.with_tensor(&name, |view| {
            let found: Vec<usize> = view.shape().iter().map(|&d| d as usize).collect();
            if found != shape {
                return Err(invalid(format!(
                    "tensor '{name}': expected shape {shape:?}, found {found:?}"
                )));
            }
            view.format()
                .map_err(|source| FileError::Format { path: None, source })
        })?;
        let format = match role {
            Role::Small => Format::F32,
            Role::Linear => options.weights,
            Role::Embedding => options
                .head_weights
                .unwrap_or(if source_format == Format::F32 {
                    Format::F32
                } else {
                    Format::F16
                }),
        };
        tensors.push((name, shape, role, format));
    }
    Ok(Plan {
        ckpt,
        writer: w,
        tensors,
    })
}

/// The stored bytes of one planned tensor.
fn convert_tensor(
    ckpt: &HfCheckpoint,
    name: &str,
    shape: &[usize],
    role: Role,
    format: Format,
) -> Result<Vec<u8>, FileError> {
    ckpt.with_tensor(name, |view| {
        let values = to_f32(view)?;
        let core = |source| FileError::Format { path: None, source };
        if role == Role::Small {
            return Ok(values.iter().flat_map(|v| v.to_le_bytes()).collect());
        }
        let (rows, cols) = (shape[0], shape[1]);
        if role == Role::Linear && matches!(format, Format::Tq2_0 | Format::Tq1_0) {
            import_ternary(name, &values, rows, cols, format).map_err(core)
        } else {
            quantize(name, &values, rows, cols, format).map_err(core)
        }
    })
}

/// Converts the checkpoint in `dir` in memory; `progress` is called after each tensor with
/// `(done, total, name)`. [`convert_to_file`] writes the same file without holding it.
pub fn convert(
    dir: &Path,
    arch: Arch,
    options: Options,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<ModelWriter, FileError> {
    let Plan {
        ckpt,
        mut writer,
        tensors,
    } = plan(dir, arch, options)?;
    let total = tensors.len();
    for (done, (name, shape, role, format)) in tensors.iter().enumerate() {
        let bytes = convert_tensor(&ckpt, name, shape, *role, *format)?;
        if format.is_blocked() {
            writer.packed(name, *format, shape[0], shape[1], bytes)?;
        } else {
            writer.plain(name, *format, shape, bytes)?;
        }
        progress(done + 1, total, name);
    }
    Ok(writer)
}

/// Converts the checkpoint in `dir` straight into the file `out`, embedding `tokenizer`
/// (kind, bytes) if given: the header is written from the planned sizes, then each tensor as
/// soon as it is converted, so memory holds one tensor rather than the whole output (the
/// input shards are memory-mapped). The file is byte-identical to [`convert`]'s. `progress`
/// is called after each tensor with `(done, total, name)`, in file order.
pub fn convert_to_file(
    dir: &Path,
    arch: Arch,
    options: Options,
    tokenizer: Option<(String, Vec<u8>)>,
    out: &Path,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<(), FileError> {
    let Plan {
        ckpt,
        mut writer,
        tensors,
    } = plan(dir, arch, options)?;
    for (name, shape, _, format) in &tensors {
        writer.planned(name, *format, shape)?;
    }
    if let Some((kind, bytes)) = tokenizer {
        writer.tokenizer(&kind, bytes)?;
    }
    let total = tensors.len();
    let mut done = 0;
    writer.write_file_streaming(out, &mut |name| {
        let (_, shape, role, format) = tensors
            .iter()
            .find(|(n, ..)| n == name)
            .ok_or_else(|| invalid(format!("tensor '{name}' was not planned")))?;
        let bytes = convert_tensor(&ckpt, name, shape, *role, *format)?;
        done += 1;
        progress(done, total, name);
        Ok(bytes)
    })
}

/// Parses a `--weights` value: a format name (`f32`, `q8_0`, `tq2_0`, …) or a short alias
/// (`q8`, `q4`, `tq2`, `tq1`).
pub fn parse_format(name: &str) -> Option<Format> {
    let full = match name {
        "q8" => "q8_0",
        "q4" => "q4_0",
        "tq2" => "tq2_0",
        "tq1" => "tq1_0",
        other => other,
    };
    Format::from_name(full).filter(|f| !matches!(f, Format::U8 | Format::I8))
}
