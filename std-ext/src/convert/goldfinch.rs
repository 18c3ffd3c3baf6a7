//! GoldFinch checkpoints (official names: `emb.weight`, `blocks.N.att.time_maa_q_w1`,
//! `w_kv_cache_a.weight`, ...) from safetensors into a goldcrest file.
//!
//! Hyperparameters come from the tensor shapes. The large matrices (every block's attention
//! projections, the channel mix, and the key compression `w_kv_cache_a` / decompression
//! `w_kv_cache_b`) take the requested weight format; embedding and head take the embedding
//! format; norms, mixing vectors, decays and low-rank adapters stay f32. Strict: the output is
//! loaded with the core model before it is returned, and errors name the tensor.

use anyhow::{Context, bail, ensure};
use goldcrest_core::kernels::Kernels;
use goldcrest_core::models::goldfinch::{ARCH, GoldFinch};
use goldcrest_core::quant::Format;
use safetensors::SafeTensors;

use super::Converted;
use super::rwkv6::{FinchDims, FinchStorage, to_f32};

/// What the converter writes.
#[derive(Debug, Clone)]
pub struct Options {
    /// Format of the large matrices.
    pub weights: Format,
    /// Format of `emb.weight` and `head.weight`.
    pub embeddings: Format,
    /// A tokenizer to embed: its kind (`goldcrest.tokenizer`) and bytes.
    pub tokenizer: Option<(String, Vec<u8>)>,
    /// RoPE base of the GOLD attention for checkpoints trained with the paper's RoPE ablation
    /// (its config, not its tensors, says so); `None` for the default config.
    pub rope_theta: Option<u32>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            weights: Format::F16,
            embeddings: Format::F16,
            tokenizer: None,
            rope_theta: None,
        }
    }
}

/// Whether `name` is one of the large matrices that take the weight format.
fn is_large(name: &str) -> bool {
    const LINEAR: [&str; 8] = [
        ".att.receptance.weight",
        ".att.key.weight",
        ".att.value.weight",
        ".att.query.weight",
        ".att.output.weight",
        ".ffn.key.weight",
        ".ffn.receptance.weight",
        ".ffn.value.weight",
    ];
    (name.starts_with("blocks.") && LINEAR.iter().any(|s| name.ends_with(s)))
        || name == "w_kv_cache_a.weight"
        || name == "w_kv_cache_b.weight"
}

/// Converts a GoldFinch safetensors checkpoint (`input` is the whole file).
pub fn convert(input: &[u8], options: &Options) -> anyhow::Result<Converted> {
    let file = SafeTensors::deserialize(input).context("reading the input safetensors")?;
    let shape_of = |name: &str| -> anyhow::Result<Vec<usize>> {
        Ok(file
            .tensor(name)
            .with_context(|| format!("missing tensor '{name}'"))?
            .shape()
            .to_vec())
    };
    let dims = FinchDims::from_shapes(file.names(), shape_of)?;
    let n_layer = dims.n_layer;
    ensure!(
        n_layer >= 2,
        "a GoldFinch model needs at least 2 blocks, found {n_layer}"
    );

    let storage = FinchStorage {
        weights: options.weights,
        embeddings: options.embeddings,
    };
    let mut out = Converted::default();
    for name in file.names() {
        let view = file.tensor(name)?;
        let values = to_f32(name, &view)?;
        storage.store(&mut out, name, is_large(name), name, view.shape(), &values)?;
    }
    dims.write_header(&mut out, ARCH, options.tokenizer.as_ref());
    if let Some(base) = options.rope_theta {
        out.metadata
            .insert(format!("goldcrest.{ARCH}.rope_theta"), base.to_string());
    }
    let check = &out;
    if let Err(e) = GoldFinch::load(&check, &mut vec![None; n_layer], Kernels::for_target()) {
        bail!("not a valid GoldFinch checkpoint: {e}");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use goldcrest_core::arena::Arena;
    use goldcrest_core::models::goldfinch::{Context as GoldContext, Scratch};

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../tests/fixtures/goldfinch/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(path).unwrap()
    }

    fn step_logits(converted: &Converted, tokens: &[u32]) -> Vec<f32> {
        let mut layers = vec![None; 8];
        let model = GoldFinch::load(&converted, &mut layers, Kernels::for_target()).unwrap();
        let cfg = *model.config();
        let plan = model.memory_plan(tokens.len()).unwrap();
        let (mut a, mut b) = (
            vec![0u8; plan.state_bytes + 64],
            vec![0u8; plan.scratch_bytes + 64],
        );
        let mut ctx =
            GoldContext::carve(&cfg, tokens.len(), &mut Arena::new_unaligned(&mut a)).unwrap();
        let mut scratch =
            Scratch::carve(&cfg, tokens.len(), &mut Arena::new_unaligned(&mut b)).unwrap();
        let v = cfg.vocab_size;
        let mut logits = vec![0.0; tokens.len() * v];
        model
            .prefill(&mut ctx, &mut scratch, tokens, &mut logits)
            .unwrap();
        logits
    }

    /// The reference's checkpoint (official names, f16) converts in every weight format; f32
    /// and f16 keep the logits (the weights are f16 values), the others stay close.
    #[test]
    fn converts_the_reference_checkpoint_in_every_format() {
        let input = fixture("tiny_a.safetensors");
        let tokens = [3u32, 17, 40, 2, 9, 63];
        let exact = step_logits(
            &convert(
                &input,
                &Options {
                    weights: Format::F32,
                    ..Options::default()
                },
            )
            .unwrap(),
            &tokens,
        );
        for (format, bound) in [
            (Format::F16, 1e-5),
            (Format::Bf16, 0.5),
            (Format::Q8_0, 0.5),
            (Format::Q4_0, 2.0),
            (Format::Tq2_0, 10.0),
            (Format::Tq1_0, 10.0),
        ] {
            let converted = convert(
                &input,
                &Options {
                    weights: format,
                    ..Options::default()
                },
            )
            .unwrap();
            assert_eq!(
                converted.tensors["blocks.2.att.query.weight"].format,
                format
            );
            assert_eq!(converted.tensors["w_kv_cache_b.weight"].format, format);
            assert_eq!(
                converted.tensors["blocks.2.att.time_key_w1"].format,
                Format::F32
            );
            let logits = step_logits(&converted, &tokens);
            let d = logits
                .iter()
                .zip(&exact)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(d.is_finite() && d <= bound, "{}: {d}", format.name());
        }
    }

    /// The RoPE ablation lives in the training config, not in the tensors: `rope_theta`
    /// records it, and the converted model runs with it.
    #[test]
    fn records_the_rope_ablation() {
        use goldcrest_core::models::goldfinch::Config;
        let input = fixture("tiny_rope.safetensors");
        let tokens = [3u32, 17, 40];
        let plain = convert(&input, &Options::default()).unwrap();
        let roped = convert(
            &input,
            &Options {
                rope_theta: Some(10000),
                ..Options::default()
            },
        )
        .unwrap();
        assert_eq!(Config::from_source(&&plain).unwrap().rope_theta, None);
        assert_eq!(
            Config::from_source(&&roped).unwrap().rope_theta,
            Some(10000)
        );
        // The first token attends only to itself (no rotation matters); later ones differ.
        let (a, b) = (step_logits(&plain, &tokens), step_logits(&roped, &tokens));
        let v = a.len() / tokens.len();
        let first = a[..v].iter().zip(&b[..v]).map(|(x, y)| (x - y).abs());
        assert!(first.fold(0.0f32, f32::max) < 1e-6);
        let later = a[v..].iter().zip(&b[v..]).map(|(x, y)| (x - y).abs());
        assert!(later.fold(0.0f32, f32::max) > 1e-3);
    }

    #[test]
    fn refuses_a_checkpoint_without_the_compression() {
        let input = fixture("tiny_a.safetensors");
        let file = SafeTensors::deserialize(&input).unwrap();
        let kept: Vec<(String, safetensors::tensor::TensorView)> = file
            .tensors()
            .into_iter()
            .filter(|(n, _)| n != "w_kv_cache_a.weight")
            .collect();
        let bytes = safetensors::serialize(kept, None).unwrap();
        let err = convert(&bytes, &Options::default()).unwrap_err();
        assert!(format!("{err:#}").contains("w_kv_cache_a"), "{err:#}");
    }
}
