//! RWKV-6 checkpoints (official `blocks.N.att.*` names, or Hugging Face `rwkv.blocks.N.attention.*`
//! names) from safetensors into a goldcrest file.
//!
//! Hyperparameters come from the tensor shapes, so no `config.json` is needed. The eight large
//! linear layers per block take the requested weight format; the embedding and head take the
//! embedding format (f16 by default); norms, mixing vectors, the bonus, the decay and the
//! low-rank adapters stay f32 (they are small and precision-sensitive).
//!
//! Strict: a tensor the model does not have, a missing or misshapen one, names from both
//! schemes in one file, or a non-finite weight is an error that names the input tensor. The
//! output is checked by loading it with the core model before it is returned.

use std::collections::BTreeMap;

use anyhow::{Context, bail, ensure};
use goldcrest_core::kernels::Kernels;
use goldcrest_core::models::rwkv6::{ARCH, Rwkv6};
use goldcrest_core::quant::{self, Format};
use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};

use super::{Converted, Tensor};

/// Which naming scheme an input tensor uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// `emb.weight`, `blocks.N.att.*`, `blocks.N.ffn.*` (BlinkDL's `.pth` checkpoints).
    Official,
    /// `rwkv.embeddings.weight`, `rwkv.blocks.N.attention.*`, `rwkv.blocks.N.feed_forward.*`.
    HuggingFace,
}

/// What the converter writes.
#[derive(Debug, Clone)]
pub struct Options {
    /// Format of the eight linear layers of every block.
    pub weights: Format,
    /// Format of `emb.weight` and `head.weight`.
    pub embeddings: Format,
    /// Undo the fp16 export trick that divides `att.output` and `ffn.value` of layer `i` by
    /// `2^(i / n)`: `Some(6)` for weights taken from such an export (llama.cpp's GGUF, `rwkv`'s
    /// fp16-converted files). Official `.pth` and Hugging Face checkpoints need `None`.
    pub rescale_every: Option<usize>,
    /// A tokenizer to embed: its kind (`goldcrest.tokenizer`) and bytes.
    pub tokenizer: Option<(String, Vec<u8>)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            weights: Format::F16,
            embeddings: Format::F16,
            rescale_every: None,
            tokenizer: None,
        }
    }
}

/// The official name of `name`, and the scheme it was written in. `head.weight` is the same in
/// both schemes and reports `None` as its scheme.
pub fn official_name(name: &str) -> (String, Option<Naming>) {
    let Some(rest) = name.strip_prefix("rwkv.") else {
        let naming = (name != "head.weight").then_some(Naming::Official);
        return (name.to_string(), naming);
    };
    let mapped = if rest == "embeddings.weight" {
        "emb.weight".to_string()
    } else if let Some((index, leaf)) = rest.strip_prefix("blocks.").and_then(|b| b.split_once('.'))
    {
        let leaf = if let Some(l) = leaf.strip_prefix("attention.") {
            format!("att.{l}")
        } else if let Some(l) = leaf.strip_prefix("feed_forward.") {
            format!("ffn.{l}")
        } else if let Some(l) = leaf.strip_prefix("pre_ln.") {
            format!("ln0.{l}")
        } else {
            leaf.to_string()
        };
        format!("blocks.{index}.{leaf}")
    } else {
        // `rwkv.ln_out.*`, and anything unknown, which strict loading then reports.
        rest.to_string()
    };
    (mapped, Some(Naming::HuggingFace))
}

/// Whether an official name is one of the eight large linear layers of a block.
fn is_linear(name: &str) -> bool {
    const LINEAR: [&str; 8] = [
        ".att.receptance.weight",
        ".att.key.weight",
        ".att.value.weight",
        ".att.gate.weight",
        ".att.output.weight",
        ".ffn.key.weight",
        ".ffn.receptance.weight",
        ".ffn.value.weight",
    ];
    name.starts_with("blocks.") && LINEAR.iter().any(|s| name.ends_with(s))
}

/// Layer index of `blocks.N.*`.
pub(crate) fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("blocks.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// The hyperparameters a Finch-family checkpoint (RWKV-6, GoldFinch) gives through its tensor
/// shapes, under official names.
pub(crate) struct FinchDims {
    /// One more than the largest `N` of `blocks.N.*` (0 without blocks).
    pub n_layer: usize,
    vocab_size: usize,
    n_embd: usize,
    head_size: usize,
    dim_ffn: usize,
}

impl FinchDims {
    /// From every official tensor name and `shape_of`, the shape of an official tensor.
    pub(crate) fn from_shapes<'a>(
        names: impl IntoIterator<Item = &'a str>,
        shape_of: impl Fn(&str) -> anyhow::Result<Vec<usize>>,
    ) -> anyhow::Result<Self> {
        let emb = shape_of("emb.weight")?;
        let faaaa = shape_of("blocks.0.att.time_faaaa")?;
        let ffn_key = shape_of("blocks.0.ffn.key.weight")?;
        ensure!(
            emb.len() == 2,
            "emb.weight must be [vocab, n_embd], is {emb:?}"
        );
        ensure!(
            faaaa.len() == 2,
            "blocks.0.att.time_faaaa must be [n_head, head_size], is {faaaa:?}"
        );
        ensure!(
            ffn_key.len() == 2,
            "blocks.0.ffn.key.weight must be [dim_ffn, n_embd], is {ffn_key:?}"
        );
        let n_layer = names
            .into_iter()
            .filter_map(layer_of)
            .max()
            .map_or(0, |m| m + 1);
        Ok(FinchDims {
            n_layer,
            vocab_size: emb[0],
            n_embd: emb[1],
            head_size: faaaa[1],
            dim_ffn: ffn_key[0],
        })
    }

    /// Writes the architecture, these hyperparameters and the tokenizer into `out`'s header.
    pub(crate) fn write_header(
        &self,
        out: &mut Converted,
        arch: &str,
        tokenizer: Option<&(String, Vec<u8>)>,
    ) {
        out.set_header(
            arch,
            &[
                ("n_layer", self.n_layer),
                ("n_embd", self.n_embd),
                ("head_size", self.head_size),
                ("dim_ffn", self.dim_ffn),
                ("vocab_size", self.vocab_size),
            ],
            tokenizer,
        );
    }
}

/// How a Finch-family converter stores its tensors: the large matrices in `weights`, the
/// embedding and head in `embeddings`, everything else (norms, mixing vectors, the bonus, the
/// decay, the low-rank adapters: small and precision-sensitive) in f32.
pub(crate) struct FinchStorage {
    /// Format of the large matrices.
    pub weights: Format,
    /// Format of `emb.weight` and `head.weight`.
    pub embeddings: Format,
}

impl FinchStorage {
    /// Encodes `values` (input tensor `name`, `shape`) and adds it to `out` as `official`;
    /// `large` says whether it is one of the large matrices.
    pub(crate) fn store(
        &self,
        out: &mut Converted,
        official: &str,
        large: bool,
        name: &str,
        shape: &[usize],
        values: &[f32],
    ) -> anyhow::Result<()> {
        let format = if large {
            self.weights
        } else if official == "emb.weight" || official == "head.weight" {
            self.embeddings
        } else {
            Format::F32
        };
        let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
        let tensor = encode(values, &shape, format).with_context(|| format!("tensor '{name}'"))?;
        out.tensors.insert(official.to_string(), tensor);
        Ok(())
    }
}

pub(crate) fn to_f32(
    name: &str,
    view: &safetensors::tensor::TensorView,
) -> anyhow::Result<Vec<f32>> {
    let data = view.data();
    let values: Vec<f32> = match view.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => bail!("tensor '{name}': dtype {other:?} is not a float weight"),
    };
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        bail!("tensor '{name}': element {i} is {}", values[i]);
    }
    Ok(values)
}

/// Stores `values` (row-major, `shape`) in `format`. Block formats quantize each row of a 2-D
/// tensor on its own, padding the last block with zeros: q8_0 and q4_0 as ggml's reference
/// quantizers do; tq2_0 and tq1_0 with the block's absmean as scale (TriLM / BitNet style),
/// except that a block that already is `d·{-1, 0, 1}` keeps `d` exactly (lossless for weights
/// trained ternary).
pub fn encode(values: &[f32], shape: &[u64], format: Format) -> anyhow::Result<Tensor> {
    let bytes: Vec<u8> = match format {
        Format::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Format::F16 => values
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect(),
        Format::Bf16 => values
            .iter()
            .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
            .collect(),
        Format::Q8_0 | Format::Q4_0 | Format::Tq2_0 | Format::Tq1_0 => {
            let [rows, cols] = shape else {
                bail!("{} needs a 2-D tensor, shape is {shape:?}", format.name());
            };
            let (rows, cols) = (*rows as usize, *cols as usize);
            ensure!(
                rows * cols == values.len(),
                "shape {shape:?} does not match the data"
            );
            let mut out = Vec::with_capacity(rows * format.row_bytes(cols).unwrap_or(0));
            for row in values.chunks_exact(cols.max(1)).take(rows) {
                for block in row.chunks(format.block_elems()) {
                    quantize_block(format, block, &mut out);
                }
            }
            out
        }
        other => bail!("weights cannot be stored as {}", other.name()),
    };
    Ok(Tensor::new(format, shape.to_vec(), &bytes))
}

/// Appends one block of `format` holding `block` (at most one block of weights, zero padded).
fn quantize_block(format: Format, block: &[f32], out: &mut Vec<u8>) {
    fn padded<const N: usize>(block: &[f32]) -> [f32; N] {
        let mut x = [0.0f32; N];
        x[..block.len()].copy_from_slice(block);
        x
    }
    match format {
        Format::Q8_0 => out.extend(quant::q8_0::quantize_block(&padded(block))),
        Format::Q4_0 => out.extend(quant::q4_0::quantize_block(&padded(block))),
        Format::Tq2_0 | Format::Tq1_0 => {
            let x: [f32; 256] = padded(block);
            let max = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let already_ternary = x
                .iter()
                .all(|v| v.abs() == 0.0 || (v.abs() - max).abs() <= 1e-6 * max);
            let n = block.len().max(1) as f32;
            let d = if already_ternary {
                max
            } else {
                block.iter().map(|v| v.abs()).sum::<f32>() / n
            };
            let d16 = f16::from_f32(d);
            let inv = if d16.to_f32() > 0.0 {
                1.0 / d16.to_f32()
            } else {
                0.0
            };
            let mut trits = [0i8; 256];
            for (t, v) in trits.iter_mut().zip(&x) {
                *t = (v * inv).round().clamp(-1.0, 1.0) as i8;
            }
            if format == Format::Tq2_0 {
                out.extend(quant::tq2_0::pack_block(&trits, d16.to_le_bytes()));
            } else {
                out.extend(quant::tq1_0::pack_block(&trits, d16.to_le_bytes()));
            }
        }
        _ => {}
    }
}

/// Converts an RWKV-6 safetensors checkpoint (`input` is the whole file).
pub fn convert(input: &[u8], options: &Options) -> anyhow::Result<Converted> {
    let file = SafeTensors::deserialize(input).context("reading the input safetensors")?;

    // Names: map to official ones, one scheme per file, no duplicates after mapping.
    let mut sources: BTreeMap<String, String> = BTreeMap::new();
    let mut scheme: Option<(Naming, String)> = None;
    for name in file.names() {
        let (official, naming) = official_name(name);
        if let Some(naming) = naming {
            match &scheme {
                Some((s, first)) if *s != naming => bail!(
                    "tensor '{name}' uses {naming:?} names but '{first}' uses {s:?} names; one file must use one scheme"
                ),
                None => scheme = Some((naming, name.to_string())),
                _ => {}
            }
        }
        if let Some(previous) = sources.insert(official.clone(), name.to_string()) {
            bail!("tensors '{previous}' and '{name}' both map to '{official}'");
        }
    }
    let input_name = |official: &str| sources.get(official).cloned().unwrap_or_default();
    let shape_of = |official: &str| -> anyhow::Result<Vec<usize>> {
        let name = sources
            .get(official)
            .with_context(|| format!("missing tensor '{official}'"))?;
        Ok(file.tensor(name)?.shape().to_vec())
    };

    let dims = FinchDims::from_shapes(sources.keys().map(String::as_str), shape_of)?;
    let n_layer = dims.n_layer;
    ensure!(n_layer > 0, "no blocks.N.* tensors found");

    let storage = FinchStorage {
        weights: options.weights,
        embeddings: options.embeddings,
    };
    let mut out = Converted::default();
    for (official, name) in &sources {
        let view = file.tensor(name)?;
        let mut values = to_f32(name, &view)?;
        if let (Some(every), Some(layer)) = (options.rescale_every, layer_of(official)) {
            ensure!(every > 0, "--rescale-every must be positive");
            if official.ends_with(".att.output.weight") || official.ends_with(".ffn.value.weight") {
                let factor = 2f32.powi((layer / every) as i32);
                values.iter_mut().for_each(|v| *v *= factor);
            }
        }
        let large = is_linear(official);
        storage.store(&mut out, official, large, name, view.shape(), &values)?;
    }
    dims.write_header(&mut out, ARCH, options.tokenizer.as_ref());

    // The core model is the judge of completeness and shapes.
    let check = &out;
    if let Err(e) = Rwkv6::load(&check, &mut vec![None; n_layer], Kernels::for_target()) {
        let detail = match e {
            goldcrest_core::Error::UnexpectedTensor { tensor }
            | goldcrest_core::Error::MissingTensor { tensor }
            | goldcrest_core::Error::ShapeMismatch { tensor, .. } => {
                let original = input_name(tensor.as_str());
                if original.is_empty() || original == tensor.as_str() {
                    String::new()
                } else {
                    format!(" (input tensor '{original}')")
                }
            }
            _ => String::new(),
        };
        bail!("not a valid RWKV-6 checkpoint: {e}{detail}");
    }
    Ok(out)
}
