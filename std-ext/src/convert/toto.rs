//! Toto checkpoint (`config.json` + `model.safetensors` as `toto-ts` saves them, or the released
//! Toto-Open-Base-1.0 file) to a goldcrest file.
//!
//! Names: the module's own (`model.transformer.layers.{i}.mlp.0.weight`, ...), and the released
//! file's xformers names (`mlp.0.w12.*` for the SwiGLU input projection, `mlp.0.w3.*` for its
//! output) are both accepted; the leading `model.` is dropped. `model.transformer.rotary_emb.freqs`
//! is checked against the RoPE frequencies goldcrest computes (base 10000) and dropped. Any other
//! unknown or missing tensor is an error: the reference loader's `strict=False` would hide it.
//! Element types f64, f32, f16 and bf16 are read (f64 is rounded to f32).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail, ensure};
use goldcrest_alloc::quantize::quantize;
use goldcrest_core::quant::{Format, float};

use crate::write::ModelWriter;

/// Which format the large matrices are stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Format of the transformer layers' matrices (QKV, output, SwiGLU) and the unembedding.
    /// Ternary formats keep the unembedding in q8_0: the head is sensitive to it, and it is not
    /// trained ternary. Patch embedding, head projections, norms and biases stay f32.
    pub weights: Format,
    /// Replace the unembedding and the four head projections by their exact product
    /// `head.fused` (`p·4k × d`, f32, computed in f64): about `d/(4k)` times fewer output-side
    /// multiply-adds and weights (8× for the released model).
    pub fuse_head: bool,
}

/// A tensor read as f32.
pub(crate) struct Tensor {
    pub(crate) shape: Vec<usize>,
    pub(crate) values: Vec<f32>,
}

pub(crate) fn read_tensors(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow!("{}: not a safetensors file: {e}", path.display()))?;
    let mut out = BTreeMap::new();
    for (name, t) in st.tensors() {
        let data = t.data();
        let values: Vec<f32> = match t.dtype() {
            safetensors::Dtype::F64 => data
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
                .collect(),
            safetensors::Dtype::F32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap_or([0; 4])))
                .collect(),
            safetensors::Dtype::F16 => data
                .chunks_exact(2)
                .map(|c| float::f16_to_f32([c[0], c[1]]))
                .collect(),
            safetensors::Dtype::BF16 => data
                .chunks_exact(2)
                .map(|c| float::bf16_to_f32([c[0], c[1]]))
                .collect(),
            other => bail!("{name}: element type {other:?} is not a float type goldcrest reads"),
        };
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            bail!("{name}: element {i} is not finite (or overflows f32)");
        }
        out.insert(
            name,
            Tensor {
                shape: t.shape().to_vec(),
                values,
            },
        );
    }
    Ok(out)
}

/// The goldcrest name of a checkpoint tensor, `None` for tensors that are checked and dropped.
fn goldcrest_name(name: &str) -> Result<Option<String>> {
    let Some(rest) = name.strip_prefix("model.") else {
        bail!("unexpected tensor {name:?}: Toto checkpoint names start with \"model.\"");
    };
    if rest == "transformer.rotary_emb.freqs" {
        return Ok(None);
    }
    let renamed = rest
        .replace(".mlp.0.w12.", ".mlp.0.")
        .replace(".mlp.0.w3.", ".mlp.2.");
    Ok(Some(renamed))
}

fn config_usize(config: &serde_json::Value, key: &str) -> Result<usize> {
    config
        .get(key)
        .and_then(|v| v.as_u64())
        .map(|v| v as usize)
        .ok_or_else(|| anyhow!("config.json: {key:?} missing or not a non-negative integer"))
}

/// Converts the checkpoint in `dir` into a goldcrest file's contents.
pub fn convert(dir: &Path, options: Options) -> Result<ModelWriter> {
    let config_path = dir.join("config.json");
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&config_path)
            .with_context(|| format!("reading {}", config_path.display()))?,
    )
    .with_context(|| format!("{}: not JSON", config_path.display()))?;

    let patch = config_usize(&config, "patch_size")?;
    let stride = config_usize(&config, "stride")?;
    ensure!(
        patch == stride,
        "config.json: stride {stride} differs from patch_size {patch}; Toto's scaler needs them equal"
    );
    let embed = config_usize(&config, "embed_dim")?;
    let layers = config_usize(&config, "num_layers")?;
    let heads = config_usize(&config, "num_heads")?;
    let hidden = config_usize(&config, "mlp_hidden_dim")?;
    let every = config
        .get("spacewise_every_n_layers")
        .and_then(|v| v.as_i64())
        .ok_or_else(|| anyhow!("config.json: spacewise_every_n_layers missing"))?;
    let first = config
        .get("spacewise_first")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let scaler = config
        .get("scaler_cls")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    ensure!(
        scaler.ends_with("CausalPatchStdMeanScaler'>"),
        "config.json: scaler {scaler:?} is not supported (goldcrest implements CausalPatchStdMeanScaler)"
    );
    let outputs = config
        .get("output_distribution_classes")
        .and_then(|v| v.as_array())
        .cloned()
        .unwrap_or_default();
    ensure!(
        outputs.len() == 1
            && outputs[0]
                .as_str()
                .is_some_and(|s| s.ends_with("MixtureOfStudentTsOutput'>")),
        "config.json: output distribution {outputs:?} is not supported (goldcrest implements MixtureOfStudentTsOutput)"
    );
    let k = config
        .get("output_distribution_kwargs")
        .and_then(|v| v.get("k_components"))
        .and_then(|v| v.as_u64())
        .ok_or_else(|| anyhow!("config.json: output_distribution_kwargs.k_components missing"))?
        as usize;
    let stabilize = config
        .get("stabilize_with_global")
        .and_then(|v| v.as_bool())
        .unwrap_or(true);
    let exponent = config
        .get("scale_factor_exponent")
        .and_then(|v| v.as_f64())
        .unwrap_or(10.0);
    ensure!(
        heads > 0 && embed % heads == 0,
        "config.json: embed_dim {embed} is not a multiple of num_heads {heads}"
    );

    let tensors = read_tensors(&dir.join("model.safetensors"))?;
    let mut writer = ModelWriter::new();
    writer.arch("toto")?;
    writer.hyperparameter("patch_size", patch)?;
    writer.hyperparameter("embed_dim", embed)?;
    writer.hyperparameter("num_layers", layers)?;
    writer.hyperparameter("num_heads", heads)?;
    writer.hyperparameter("mlp_hidden_dim", hidden)?;
    writer.hyperparameter("spacewise_every_n_layers", every)?;
    writer.hyperparameter("spacewise_first", first)?;
    writer.hyperparameter("k_components", k)?;
    writer.hyperparameter("stabilize_with_global", stabilize)?;
    writer.hyperparameter("scale_factor_exponent", exponent)?;

    let head_dim = embed / heads;
    if options.fuse_head {
        let (weight, bias) = fuse_head(&tensors, patch, embed, k)?;
        writer.f32("head.fused.weight", &[patch * 4 * k, embed], &weight)?;
        writer.f32("head.fused.bias", &[patch * 4 * k], &bias)?;
    }
    for (name, t) in &tensors {
        let Some(out_name) = goldcrest_name(name)? else {
            check_rotary(name, t, head_dim)?;
            continue;
        };
        if options.fuse_head
            && (out_name.starts_with("unembed.") || out_name.starts_with("output_distribution."))
        {
            continue;
        }
        let big = out_name.starts_with("transformer.layers.") && out_name.ends_with(".weight")
            || out_name == "unembed.weight";
        let format = if !big {
            Format::F32
        } else if out_name == "unembed.weight"
            && matches!(options.weights, Format::Tq2_0 | Format::Tq1_0)
        {
            Format::Q8_0
        } else {
            options.weights
        };
        match (t.shape.as_slice(), format) {
            (_, Format::F32) => {
                writer.f32(&out_name, &t.shape, &t.values)?;
            }
            (&[rows, cols], format) => {
                let bytes = quantize(&out_name, &t.values, rows, cols, format)
                    .map_err(|e| anyhow!("{out_name}: {e}"))?;
                if format.is_blocked() {
                    writer.packed(&out_name, format, rows, cols, bytes)?;
                } else {
                    writer.plain(&out_name, format, &t.shape, bytes)?;
                }
            }
            _ => bail!("{name}: expected a matrix, found shape {:?}", t.shape),
        }
    }
    // Strictness and shapes: open the result with the model itself.
    let bytes = writer.to_bytes()?;
    let st = crate::load::parse_hosted(&bytes).map_err(|e| anyhow!("{e}"))?;
    goldcrest_core::models::toto::Toto::new(st, goldcrest_core::kernels::Kernels::scalar())
        .map_err(|e| anyhow!("{}: {e}", dir.display()))?;
    Ok(writer)
}

/// `head.fused` from `unembed` (U, u) and the projections (H_j, h_j): for position `s`, part `j`
/// and component `c`, row `(s·4 + j)·k + c` is `Σ_e H_j[c,e]·U[s·d+e, :]` with bias
/// `Σ_e H_j[c,e]·u[s·d+e] + h_j[c]`, summed in f64.
fn fuse_head(
    tensors: &BTreeMap<String, Tensor>,
    patch: usize,
    embed: usize,
    k: usize,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let get = |name: &str, shape: &[usize]| -> Result<&Tensor> {
        let t = tensors
            .get(name)
            .ok_or_else(|| anyhow!("--fuse-head: tensor {name:?} missing"))?;
        ensure!(
            t.shape == shape,
            "{name}: shape {:?}, expected {shape:?}",
            t.shape
        );
        Ok(t)
    };
    let d = embed;
    let unembed_w = get("model.unembed.weight", &[patch * d, d])?;
    let unembed_b = get("model.unembed.bias", &[patch * d])?;
    let mut weight = vec![0f32; patch * 4 * k * d];
    let mut bias = vec![0f32; patch * 4 * k];
    let mut row = vec![0f64; d];
    for (j, part) in ["df", "loc_proj", "scale_proj", "mixture_weights"]
        .iter()
        .enumerate()
    {
        let hw = get(&format!("model.output_distribution.{part}.weight"), &[k, d])?;
        let hb = get(&format!("model.output_distribution.{part}.bias"), &[k])?;
        for s in 0..patch {
            for c in 0..k {
                row.fill(0.0);
                let mut b = hb.values[c] as f64;
                for e in 0..d {
                    let h = hw.values[c * d + e] as f64;
                    let u = &unembed_w.values[(s * d + e) * d..(s * d + e + 1) * d];
                    for (r, x) in row.iter_mut().zip(u) {
                        *r += h * *x as f64;
                    }
                    b += h * unembed_b.values[s * d + e] as f64;
                }
                let out = (s * 4 + j) * k + c;
                for (w, r) in weight[out * d..(out + 1) * d].iter_mut().zip(&row) {
                    *w = *r as f32;
                }
                bias[out] = b as f32;
            }
        }
    }
    Ok((weight, bias))
}

fn check_rotary(name: &str, t: &Tensor, head_dim: usize) -> Result<()> {
    ensure!(
        t.shape == [head_dim / 2],
        "{name}: shape {:?}, expected [{}]",
        t.shape,
        head_dim / 2
    );
    for (i, &f) in t.values.iter().enumerate() {
        let expected = 1.0 / 10000f32.powf((2 * i) as f32 / head_dim as f32);
        ensure!(
            // bf16 storage keeps about 3 digits; another base would differ by far more.
            (f - expected).abs() <= 1e-2 * expected.abs(),
            "{name}[{i}] = {f}, but goldcrest's RoPE uses base 10000 ({expected})"
        );
    }
    Ok(())
}
