//! Toto 2.0 checkpoint (`config.json` + `model.safetensors` as `Toto2Model.save_pretrained`
//! writes them) to a goldcrest file.
//!
//! Tensor names are the module's state-dict names (`patch_proj.linear1.weight`,
//! `transformer.layers.{i}.attn.in_proj.weight`, `transformer.layers.{i}.attn_tau`, ...) and are
//! kept as they are. The converter opens its own output with the core model, which refuses any
//! missing, unexpected or misshapen tensor by name (the reference loads with `strict=True`
//! too). Element types f64, f32, f16 and bf16 are read (f64 is rounded to f32). Options of the
//! configuration the port does not implement (`num_output_patches` other than 1, dropout) are
//! refused.

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail, ensure};
use goldcrest_alloc::quantize::quantize;
use goldcrest_core::models::toto::v2::Toto2;
use goldcrest_core::quant::Format;
use serde_json::Value;

use super::toto::read_tensors;
use crate::write::ModelWriter;

/// Which format the transformer matrices are stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Format of the layers' four matrices (`in_proj`, `out_proj`, `fc1`, `fc2`). The patch
    /// embedding and the head, norms, biases, per-dimension scales and τ stay f32.
    pub weights: Format,
}

fn usize_or(config: &Value, key: &str, default: Option<usize>) -> Result<usize> {
    match config.get(key) {
        None | Some(Value::Null) => default.ok_or_else(|| anyhow!("config.json: {key:?} missing")),
        Some(v) => v
            .as_u64()
            .map(|v| v as usize)
            .ok_or_else(|| anyhow!("config.json: {key:?} is not a non-negative integer")),
    }
}

fn bool_or(config: &Value, key: &str, default: Option<bool>) -> Result<bool> {
    match config.get(key) {
        None | Some(Value::Null) => default.ok_or_else(|| anyhow!("config.json: {key:?} missing")),
        Some(v) => v
            .as_bool()
            .ok_or_else(|| anyhow!("config.json: {key:?} is not true or false")),
    }
}

/// Converts the checkpoint in `dir` into a goldcrest file's contents.
pub fn convert(dir: &Path, options: Options) -> Result<ModelWriter> {
    let config_path = dir.join("config.json");
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(&config_path)
            .with_context(|| format!("reading {}", config_path.display()))?,
    )
    .with_context(|| format!("{}: not JSON", config_path.display()))?;

    // Defaults and derived values as `Toto2ModelConfig.__post_init__` sets them.
    let patch = usize_or(&config, "patch_size", None)?;
    let d_model = usize_or(&config, "d_model", None)?;
    let heads = usize_or(&config, "num_heads", None)?;
    ensure!(
        heads > 0 && d_model % heads == 0,
        "config.json: d_model {d_model} is not a multiple of num_heads {heads}"
    );
    let layers = usize_or(&config, "num_layers", None)?;
    let group_size = usize_or(&config, "layer_group_size", None)?;
    let variate_layers = usize_or(&config, "num_variate_layers_per_group", None)?;
    let variate_first = bool_or(&config, "variate_layer_first", None)?;
    let d_ff = usize_or(
        &config,
        "d_ff",
        Some((4 * d_model * 2 / 3).next_multiple_of(8)),
    )?;
    let groups = match usize_or(&config, "num_groups", Some(0))? {
        0 => heads,
        g => g,
    };
    let qk_dim = match usize_or(&config, "qk_dim", Some(0))? {
        0 => d_model / heads,
        q => q,
    };
    let v_dim = match usize_or(&config, "v_dim", Some(0))? {
        0 => qk_dim,
        v => v,
    };
    let norm_include_weight = bool_or(&config, "norm_include_weight", Some(false))?;
    let qk_norm_include_weight =
        bool_or(&config, "qk_norm_include_weight", Some(norm_include_weight))?;
    let norm_eps = match config.get("norm_eps") {
        None | Some(Value::Null) => 5e-5,
        Some(v) => v
            .as_f64()
            .ok_or_else(|| anyhow!("config.json: \"norm_eps\" is not a number"))?,
    };
    let output_patches = usize_or(&config, "num_output_patches", Some(1))?;
    ensure!(
        output_patches == 1,
        "config.json: num_output_patches {output_patches} is not supported (the reference's \
         forecast() only works with 1)"
    );
    let dropout = config
        .get("dropout_p")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    ensure!(dropout == 0.0, "config.json: dropout_p {dropout} is not 0");
    let pre_norm = bool_or(&config, "pre_norm", Some(true))?;
    ensure!(pre_norm, "config.json: pre_norm false is not supported");

    let tensors = read_tensors(&dir.join("model.safetensors"))?;
    let mut writer = ModelWriter::new();
    writer.arch(goldcrest_core::models::toto::v2::ARCH)?;
    let ints = [
        ("patch_size", patch),
        ("d_model", d_model),
        ("num_heads", heads),
        ("num_groups", groups),
        ("qk_dim", qk_dim),
        ("v_dim", v_dim),
        ("d_ff", d_ff),
        ("num_layers", layers),
        ("layer_group_size", group_size),
        ("num_variate_layers_per_group", variate_layers),
    ];
    for (name, v) in ints {
        writer.hyperparameter(name, v)?;
    }
    writer.hyperparameter("norm_eps", norm_eps as f32)?;
    writer.hyperparameter("variate_layer_first", variate_first)?;
    writer.hyperparameter("norm_include_weight", norm_include_weight)?;
    writer.hyperparameter("qk_norm_include_weight", qk_norm_include_weight)?;
    for (name, default) in [
        ("qk_norm", true),
        ("per_dim_scale", false),
        ("use_xpos", false),
        ("attn_bias", false),
        ("mlp_bias", false),
    ] {
        writer.hyperparameter(name, bool_or(&config, name, Some(default))?)?;
    }

    for (name, t) in &tensors {
        let big = name.starts_with("transformer.layers.")
            && [
                ".attn.in_proj.weight",
                ".attn.out_proj.weight",
                ".ffn.fc1.weight",
                ".ffn.fc2.weight",
            ]
            .iter()
            .any(|s| name.ends_with(s));
        let format = if big { options.weights } else { Format::F32 };
        match (t.shape.as_slice(), format) {
            (_, Format::F32) => {
                writer.f32(name, &t.shape, &t.values)?;
            }
            (&[rows, cols], format) => {
                let bytes = quantize(name, &t.values, rows, cols, format)
                    .map_err(|e| anyhow!("{name}: {e}"))?;
                if format.is_blocked() {
                    writer.packed(name, format, rows, cols, bytes)?;
                } else {
                    writer.plain(name, format, &t.shape, bytes)?;
                }
            }
            _ => bail!("{name}: expected a matrix, found shape {:?}", t.shape),
        }
    }
    // Strictness and shapes: open the result with the model itself.
    let bytes = writer.to_bytes()?;
    let st = crate::load::parse_hosted(&bytes).map_err(|e| anyhow!("{e}"))?;
    Toto2::new(st, goldcrest_core::kernels::Kernels::scalar())
        .map_err(|e| anyhow!("{}: {e}", dir.display()))?;
    Ok(writer)
}
