//! GoldFinch (arXiv 2407.12077): RWKV-6 "Finch-C2" layers below, GOLD attention layers above,
//! and a key cache compressed to `n_embd / 16` floats per token.
//!
//! ```text
//! x = LN(emb[token]; ln0)                                  (x0, kept for the keys and values)
//! layers 0 .. G-1 (G = floor(2 n_layer / 3)), Finch-C2:
//!     x += FinchC2(LN(x; ln1));  x += ChannelMix(LN(x; ln2))
//! c    = W_a x                                             compressed key, n_embd/16 floats
//! khat = rms(W_b [x0; c])    xo = rms(x0)                  rms(x) = x / (sqrt(mean x²) + 1e-8)
//! layers G .. n_layer-1, GOLD:
//!     x += Gold(LN(x; ln1), cache);  x += ChannelMix(LN(x; ln2))
//! logits = head @ LN(x; ln_out)
//! ```
//!
//! Finch-C2 is the RWKV-6 time mix with five adapter mixes in the order r, k, v, w, v2, no gate,
//! no bonus (`time_faaaa` is in checkpoints but unused), keys scaled by `1 - decay`, a second
//! value `v2 = W_v x_v2 + adapter(x_v2)` added to the WKV output, and `ln_x` a LayerNorm over
//! the whole width. The RWKV-6 pieces (channel mix, token shift, adapters, decay, WKV) are the
//! functions of [`crate::models::rwkv6`], not copies.
//!
//! GOLD attention: the query is a token-shifted, adapter-mixed `ln_q(W_q x)`; for every cached
//! position s the key mixes `khat_s` with `khat_{s-1}` and the value mixes `xo_s` with `xo_{s-1}`
//! (zero before position 0), each plus a low-rank adapter and a LayerNorm (`ln_k`, `ln_v`);
//! causal softmax attention per head, `ln_x`, output projection. No positional encoding in the
//! default config; with `goldcrest.goldfinch.rope_theta` (the paper's RoPE ablation) each
//! head's query and keys are rotated in consecutive pairs by `pos · base^(-2i/N)` after their
//! LayerNorms (keys at their cache position, stored rotated).
//!
//! # The cache
//! - **At rest** ([`GoldFinch::save`]): per token its id and its compressed key `c`
//!   (1 + n_embd/16 entries; goldcrest stores both as 4 bytes), plus the constant-size Finch-C2
//!   states and token shifts. Everything else is recomputed from these on [`GoldFinch::restore`].
//! - **Working** ([`Context`]): because a position's key and value in a GOLD layer depend only on
//!   that position and the previous one, they are computed once when the token enters the
//!   cache and kept per GOLD layer (f32, `2 · n_embd` floats per GOLD layer per token). Decode
//!   then costs one dot product and one axpy per cached position and head, instead of the
//!   reference code's recomputation of every key and value on every step.
//!
//! Prefill runs the Finch-C2 layers and the compression over every prompt token (in chunks,
//! with matrix-matrix products), and the GOLD
//! layers only over the last `2 · n_gold + 1` tokens: a GOLD layer's output at position p
//! depends on its inputs at p, p-1 and p-2 only (token shifts of the query and the channel mix),
//! so starting the GOLD stack that far back with stale shifts is exact at the last token.
//!
//! Memory: everything lives in caller memory. [`GoldFinch::memory_plan`] gives the exact bytes
//! of the [`Context`] (for a given context length) and of the [`Scratch`].

use crate::arena::{Arena, Carve, MemoryPlan, Planner};
use crate::error::{Error, Name, Result, Shape};
use crate::kernels::Kernels;
pub use crate::models::decoder::KvFormat;
use crate::models::rwkv6::{
    self, ChannelMix, ChannelMixBuffers, FinchDims, WkvInputs, adapter_rank, block_tensor,
    channel_mix, data_dependent_decay, finch_time_shift, load_channel_mix, load_layers, low_rank,
    mix_adapter_hidden, norm_and_shift, shift_mix, stacked_adapters, wkv_step,
};
use crate::models::{NameBuf, TensorSource, format_name, known_tensor_bytes};
use crate::ops::{self, Vector};
use crate::quant::{self, Matrix};

/// Value of `goldcrest.arch` for this model.
pub const ARCH: &str = "goldfinch";
/// Epsilon of every LayerNorm (torch's default), `ln_x` of both layer kinds included.
pub const LAYER_NORM_EPS: f32 = 1e-5;
/// Added to the root mean square (outside the square root) by the weightless RMS norm.
pub const RMS_EPS: f32 = 1e-8;

/// Hyperparameters from the `goldcrest.goldfinch.*` metadata plus adapter ranks read from the
/// tensor shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Number of blocks.
    pub n_layer: usize,
    /// Width C of the residual stream (also the attention width).
    pub n_embd: usize,
    /// Head size N of both layer kinds (64 in released models).
    pub head_size: usize,
    /// Channel-mix hidden width.
    pub dim_ffn: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Index of the first GOLD layer, `floor(2 · n_layer / 3)`.
    pub first_gold: usize,
    /// Width of the compressed key (`w_kv_cache_a` is [c_dim, C]).
    pub c_dim: usize,
    /// Finch-C2 mix adapter rank (`time_maa_w1` is [C, 5 · rank]).
    pub lora_mix: usize,
    /// Finch-C2 decay adapter rank.
    pub lora_decay: usize,
    /// Finch-C2 second-value adapter rank.
    pub lora_value2: usize,
    /// GOLD query mix adapter rank (`time_maa_q_w1` is [C, rank]).
    pub lora_query: usize,
    /// GOLD key/value mix adapter rank (`time_maa_kv_w1` is [C, 2 · rank]).
    pub lora_kv_mix: usize,
    /// GOLD key and value adapter rank (`time_key_w1` is [C, rank]).
    pub lora_kv: usize,
    /// RoPE base of the GOLD queries and keys (`goldcrest.goldfinch.rope_theta`, a whole
    /// number), or `None` for the default config, which has no positional encoding. The
    /// paper's ablation uses 10000.
    pub rope_theta: Option<u32>,
}

fn shape_error(name: &str, expected: &[u64], found: Shape) -> Error {
    Error::ShapeMismatch {
        tensor: Name::new(name),
        expected: Shape::new(expected).unwrap_or_default(),
        found,
    }
}

impl Config {
    /// Reads and checks the configuration of the model in `src`.
    pub fn from_source(src: &dyn TensorSource<'_>) -> Result<Config> {
        let FinchDims {
            n_layer,
            n_embd,
            head_size,
            dim_ffn,
            vocab_size,
        } = FinchDims::from_source(src, ARCH)?;
        let first_gold = n_layer * 2 / 3;
        if first_gold == 0 || first_gold >= n_layer {
            return Err(Error::BadMetadata {
                key: Name::new("goldcrest.goldfinch.n_layer"),
            });
        }
        let c = n_embd as u64;
        let rank_of = |name: &str, parts: u64| adapter_rank(src, name, n_embd, parts);
        let mut buf = NameBuf::new();
        let mut gold = |leaf: &str| -> NameBuf {
            let name = format_name(&mut buf, format_args!("blocks.{first_gold}.att.{leaf}"));
            NameBuf::try_from(name).unwrap_or_default()
        };
        let (q_name, kv_name, key_name) = (
            gold("time_maa_q_w1"),
            gold("time_maa_kv_w1"),
            gold("time_key_w1"),
        );
        let compress = src.tensor("w_kv_cache_a.weight")?;
        let c_dim = match compress.shape.dims() {
            [rows, cols] if *cols == c && *rows > 0 && (*rows as usize) <= n_embd => *rows as usize,
            _ => {
                return Err(shape_error(
                    "w_kv_cache_a.weight",
                    &[c / 16, c],
                    compress.shape,
                ));
            }
        };
        let config = Config {
            n_layer,
            n_embd,
            head_size,
            dim_ffn,
            vocab_size,
            first_gold,
            c_dim,
            lora_mix: rank_of("blocks.0.att.time_maa_w1", 5)?,
            lora_decay: rank_of("blocks.0.att.time_decay_w1", 1)?,
            lora_value2: rank_of("blocks.0.att.time_value2_w1", 1)?,
            lora_query: rank_of(&q_name, 1)?,
            lora_kv_mix: rank_of(&kv_name, 2)?,
            lora_kv: rank_of(&key_name, 1)?,
            rope_theta: match src.metadata("goldcrest.goldfinch.rope_theta") {
                None => None,
                Some(v) => Some(v.trim().parse::<u32>().ok().filter(|&b| b > 1).ok_or(
                    Error::BadMetadata {
                        key: Name::new("goldcrest.goldfinch.rope_theta"),
                    },
                )?),
            },
        };
        if config.rope_theta.is_some() && head_size % 2 != 0 {
            return Err(Error::BadMetadata {
                key: Name::new("goldcrest.goldfinch.rope_theta"),
            });
        }
        config.fixed_floats()?;
        Ok(config)
    }

    /// Number of heads.
    pub fn n_head(&self) -> usize {
        self.n_embd / self.head_size
    }

    /// Number of GOLD layers.
    pub fn n_gold(&self) -> usize {
        self.n_layer - self.first_gold
    }

    /// Floats of the constant-size part of a context: per Finch-C2 layer its RWKV state
    /// (att shift C, WKV C·N, ffn shift C), per GOLD layer its two token shifts (2C).
    pub fn fixed_floats(&self) -> Result<usize> {
        let c = self.n_embd;
        let finch = c
            .checked_mul(self.head_size + 2)
            .and_then(|p| p.checked_mul(self.first_gold));
        let gold = (2 * c).checked_mul(self.n_gold());
        finch
            .zip(gold)
            .and_then(|(f, g)| f.checked_add(g))
            .ok_or(Error::OutOfRange)
    }

    /// Working-cache floats per token: the compressed key plus every GOLD layer's key and value.
    pub fn working_floats_per_token(&self) -> usize {
        self.c_dim + 2 * self.n_embd * self.n_gold()
    }

    /// Working-cache bytes per token with the GOLD keys and values stored as `kv`: token id
    /// (u32), compressed key (f32) and every GOLD layer's key and value. `None` for a format
    /// the GOLD cache does not offer ([`KvFormat::I8`]).
    pub fn working_bytes_per_token(&self, kv: KvFormat) -> Option<usize> {
        let per_value = kv_value_bytes(kv)?;
        Some(4 + 4 * self.c_dim + per_value * 2 * self.n_embd * self.n_gold())
    }

    /// Bytes per token of the at-rest form: a u32 token id and `c_dim` f32.
    pub fn at_rest_bytes_per_token(&self) -> usize {
        4 + 4 * self.c_dim
    }
}

/// Finch-C2 time-mix weights.
#[derive(Debug, Clone, Copy)]
pub struct FinchC2Mix<'a> {
    /// Static mix feeding the adapter.
    pub maa_x: Vector<'a>,
    /// Static mixes, in order r, k, v, w, v2.
    pub maa: [Vector<'a>; 5],
    /// [C, 5·D].
    pub maa_w1: Matrix<'a>,
    /// Five [D, C], in order r, k, v, w, v2.
    pub maa_w2: [Matrix<'a>; 5],
    /// Static log-log decay.
    pub decay: Vector<'a>,
    /// [C, D'].
    pub decay_w1: Matrix<'a>,
    /// [D', C].
    pub decay_w2: Matrix<'a>,
    /// [C, D''].
    pub value2_w1: Matrix<'a>,
    /// [D'', C].
    pub value2_w2: Matrix<'a>,
    /// [C, C].
    pub receptance: Matrix<'a>,
    /// [C, C].
    pub key: Matrix<'a>,
    /// [C, C], also used for the second value.
    pub value: Matrix<'a>,
    /// [C, C].
    pub output: Matrix<'a>,
    /// LayerNorm over the whole width.
    pub ln_x: (Vector<'a>, Vector<'a>),
}

/// GOLD attention weights.
#[derive(Debug, Clone, Copy)]
pub struct GoldMix<'a> {
    /// Static mix feeding the query adapter.
    pub maa_x: Vector<'a>,
    /// Static query mix.
    pub maa_q: Vector<'a>,
    /// Static mix feeding the key/value adapter (over the cache).
    pub maa_v_cache: Vector<'a>,
    /// Static key mix.
    pub maa_k: Vector<'a>,
    /// Static value mix.
    pub maa_v: Vector<'a>,
    /// [C, Dq].
    pub maa_q_w1: Matrix<'a>,
    /// [Dq, C].
    pub maa_q_w2: Matrix<'a>,
    /// [C, 2·Dkv].
    pub maa_kv_w1: Matrix<'a>,
    /// Two [Dkv, C]: key then value.
    pub maa_kv_w2: [Matrix<'a>; 2],
    /// Key adapter [C, R] and [R, C].
    pub key_w: (Matrix<'a>, Matrix<'a>),
    /// Value adapter [C, R] and [R, C].
    pub value_w: (Matrix<'a>, Matrix<'a>),
    /// [C, C].
    pub query: Matrix<'a>,
    /// [C, C].
    pub output: Matrix<'a>,
    /// LayerNorms of query, key, value and output.
    pub ln_q: (Vector<'a>, Vector<'a>),
    /// Key LayerNorm.
    pub ln_k: (Vector<'a>, Vector<'a>),
    /// Value LayerNorm.
    pub ln_v: (Vector<'a>, Vector<'a>),
    /// Output LayerNorm.
    pub ln_x: (Vector<'a>, Vector<'a>),
}

/// The time mix of a block: Finch-C2 below, GOLD above.
#[derive(Debug, Clone, Copy)]
pub enum Mix<'a> {
    /// A Finch-C2 (RWKV-6 variant) layer.
    FinchC2(FinchC2Mix<'a>),
    /// A GOLD attention layer.
    Gold(GoldMix<'a>),
}

/// All weights of one block.
#[derive(Debug, Clone, Copy)]
pub struct Layer<'a> {
    /// LayerNorm before the time mix.
    pub ln1: (Vector<'a>, Vector<'a>),
    /// LayerNorm before the channel mix.
    pub ln2: (Vector<'a>, Vector<'a>),
    /// Time mix.
    pub att: Mix<'a>,
    /// RWKV-6 channel mix.
    pub ffn: ChannelMix<'a>,
}

const COMMON_TENSORS: [&str; 9] = [
    "ln1.weight",
    "ln1.bias",
    "ln2.weight",
    "ln2.bias",
    "ffn.time_maa_k",
    "ffn.time_maa_r",
    "ffn.key.weight",
    "ffn.receptance.weight",
    "ffn.value.weight",
];

const FINCH_TENSORS: [&str; 20] = [
    "att.time_maa_x",
    "att.time_maa_r",
    "att.time_maa_k",
    "att.time_maa_v",
    "att.time_maa_w",
    "att.time_maa_v2",
    "att.time_maa_w1",
    "att.time_maa_w2",
    "att.time_decay",
    "att.time_decay_w1",
    "att.time_decay_w2",
    "att.time_value2_w1",
    "att.time_value2_w2",
    "att.time_faaaa",
    "att.receptance.weight",
    "att.key.weight",
    "att.value.weight",
    "att.output.weight",
    "att.ln_x.weight",
    "att.ln_x.bias",
];

const GOLD_TENSORS: [&str; 23] = [
    "att.time_maa_x",
    "att.time_maa_q",
    "att.time_maa_v_cache",
    "att.time_maa_k",
    "att.time_maa_v",
    "att.time_maa_q_w1",
    "att.time_maa_q_w2",
    "att.time_maa_kv_w1",
    "att.time_maa_kv_w2",
    "att.time_key_w1",
    "att.time_key_w2",
    "att.time_value_w1",
    "att.time_value_w2",
    "att.query.weight",
    "att.output.weight",
    "att.ln_q.weight",
    "att.ln_q.bias",
    "att.ln_k.weight",
    "att.ln_k.bias",
    "att.ln_v.weight",
    "att.ln_v.bias",
    "att.ln_x.weight",
    "att.ln_x.bias",
];

const GLOBAL_TENSORS: [&str; 9] = [
    "emb.weight",
    "blocks.0.ln0.weight",
    "blocks.0.ln0.bias",
    "ln_out.weight",
    "ln_out.bias",
    "head.weight",
    "w_kv_cache_a.weight",
    "w_kv_cache_b.weight",
    "tokenizer",
];

fn is_known_tensor(name: &str, cfg: &Config) -> bool {
    if GLOBAL_TENSORS.contains(&name) {
        return true;
    }
    let Some((index, leaf)) = name.strip_prefix("blocks.").and_then(|r| r.split_once('.')) else {
        return false;
    };
    let canonical = !index.is_empty()
        && index.bytes().all(|b| b.is_ascii_digit())
        && (index == "0" || !index.starts_with('0'));
    let Some(i) = index
        .parse::<usize>()
        .ok()
        .filter(|&i| canonical && i < cfg.n_layer)
    else {
        return false;
    };
    COMMON_TENSORS.contains(&leaf)
        || if i < cfg.first_gold {
            FINCH_TENSORS.contains(&leaf)
        } else {
            GOLD_TENSORS.contains(&leaf)
        }
}

fn load_layer<'a>(src: &dyn TensorSource<'a>, cfg: &Config, i: usize) -> Result<Layer<'a>> {
    let (c, cu) = (cfg.n_embd, cfg.n_embd as u64);
    let get = |leaf: &str| block_tensor(src, i, leaf);
    let vec_c = |leaf: &str| -> Result<Vector<'a>> {
        let (t, name) = get(leaf)?;
        t.vector(&name, &[cu])
    };
    let norm = |prefix: &str| -> Result<(Vector<'a>, Vector<'a>)> {
        let mut w = NameBuf::new();
        let mut b = NameBuf::new();
        Ok((
            vec_c(format_name(&mut w, format_args!("{prefix}.weight")))?,
            vec_c(format_name(&mut b, format_args!("{prefix}.bias")))?,
        ))
    };
    let mix = |leaf: &str| -> Result<Vector<'a>> {
        let (t, name) = get(leaf)?;
        t.vector(&name, &[1, 1, cu])
    };
    let lora = |leaf: &str, rows: usize, cols: usize| -> Result<Matrix<'a>> {
        let (t, name) = get(leaf)?;
        t.float_matrix(&name, rows, cols)
    };
    let linear = |leaf: &str| -> Result<Matrix<'a>> {
        let (t, name) = get(leaf)?;
        t.matrix(&name, c, c)
    };
    let att = if i < cfg.first_gold {
        let (dm, dd, dv) = (cfg.lora_mix, cfg.lora_decay, cfg.lora_value2);
        let (t, name) = get("att.time_maa_w2")?;
        let maa_w2 = stacked_adapters::<5>(t, &name, dm, c)?;
        // Unused by Finch-C2, but checked so a malformed file is refused.
        let (t, name) = get("att.time_faaaa")?;
        t.vector(&name, &[cfg.n_head() as u64, cfg.head_size as u64])?;
        Mix::FinchC2(FinchC2Mix {
            maa_x: mix("att.time_maa_x")?,
            maa: [
                mix("att.time_maa_r")?,
                mix("att.time_maa_k")?,
                mix("att.time_maa_v")?,
                mix("att.time_maa_w")?,
                mix("att.time_maa_v2")?,
            ],
            maa_w1: lora("att.time_maa_w1", c, 5 * dm)?,
            maa_w2,
            decay: mix("att.time_decay")?,
            decay_w1: lora("att.time_decay_w1", c, dd)?,
            decay_w2: lora("att.time_decay_w2", dd, c)?,
            value2_w1: lora("att.time_value2_w1", c, dv)?,
            value2_w2: lora("att.time_value2_w2", dv, c)?,
            receptance: linear("att.receptance.weight")?,
            key: linear("att.key.weight")?,
            value: linear("att.value.weight")?,
            output: linear("att.output.weight")?,
            ln_x: norm("att.ln_x")?,
        })
    } else {
        let (dq, dkv, r) = (cfg.lora_query, cfg.lora_kv_mix, cfg.lora_kv);
        let (t, name) = get("att.time_maa_kv_w2")?;
        let maa_kv_w2 = stacked_adapters::<2>(t, &name, dkv, c)?;
        Mix::Gold(GoldMix {
            maa_x: mix("att.time_maa_x")?,
            maa_q: mix("att.time_maa_q")?,
            maa_v_cache: mix("att.time_maa_v_cache")?,
            maa_k: mix("att.time_maa_k")?,
            maa_v: mix("att.time_maa_v")?,
            maa_q_w1: lora("att.time_maa_q_w1", c, dq)?,
            maa_q_w2: lora("att.time_maa_q_w2", dq, c)?,
            maa_kv_w1: lora("att.time_maa_kv_w1", c, 2 * dkv)?,
            maa_kv_w2,
            key_w: (
                lora("att.time_key_w1", c, r)?,
                lora("att.time_key_w2", r, c)?,
            ),
            value_w: (
                lora("att.time_value_w1", c, r)?,
                lora("att.time_value_w2", r, c)?,
            ),
            query: linear("att.query.weight")?,
            output: linear("att.output.weight")?,
            ln_q: norm("att.ln_q")?,
            ln_k: norm("att.ln_k")?,
            ln_v: norm("att.ln_v")?,
            ln_x: norm("att.ln_x")?,
        })
    };
    Ok(Layer {
        ln1: norm("ln1")?,
        ln2: norm("ln2")?,
        att,
        ffn: load_channel_mix(src, i, c, cfg.dim_ffn)?,
    })
}

/// The model's weights, views into the source's bytes, checked once.
#[derive(Clone, Copy)]
pub struct Weights<'w, 'a> {
    config: Config,
    layers: &'w [Option<Layer<'a>>],
    /// Token embeddings [V, C].
    pub emb: Matrix<'a>,
    /// `ln0`.
    pub ln0: (Vector<'a>, Vector<'a>),
    /// Final LayerNorm.
    pub ln_out: (Vector<'a>, Vector<'a>),
    /// Output head [V, C].
    pub head: Matrix<'a>,
    /// Key compression `W_a` [c_dim, C].
    pub compress: Matrix<'a>,
    /// Key decompression `W_b` [C, C + c_dim].
    pub decompress: Matrix<'a>,
    /// Total bytes of all weight tensors.
    pub bytes: usize,
}

impl core::fmt::Debug for Weights<'_, '_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Weights")
            .field("config", &self.config)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl<'w, 'a> Weights<'w, 'a> {
    /// Loads and checks every tensor (strict: unknown tensors are refused). `layers` must hold
    /// at least `n_layer` entries.
    pub fn load(
        source: &dyn TensorSource<'a>,
        layers: &'w mut [Option<Layer<'a>>],
    ) -> Result<Self> {
        let config = Config::from_source(source)?;
        let (c, v) = (config.n_embd, config.vocab_size);
        let layers = load_layers(layers, config.n_layer, |i| load_layer(source, &config, i))?;
        let vector = |name: &str| source.tensor(name)?.vector(name, &[c as u64]);
        let matrix = |name: &str, rows, cols| source.tensor(name)?.matrix(name, rows, cols);
        let bytes = known_tensor_bytes(source, |name| is_known_tensor(name, &config))?;
        Ok(Weights {
            config,
            layers,
            emb: matrix("emb.weight", v, c)?,
            ln0: (vector("blocks.0.ln0.weight")?, vector("blocks.0.ln0.bias")?),
            ln_out: (vector("ln_out.weight")?, vector("ln_out.bias")?),
            head: matrix("head.weight", v, c)?,
            compress: matrix("w_kv_cache_a.weight", config.c_dim, c)?,
            decompress: matrix("w_kv_cache_b.weight", c, c + config.c_dim)?,
            bytes,
        })
    }

    /// The configuration the weights were checked against.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Views of block `i`'s weights.
    pub fn layer(&self, i: usize) -> Result<&Layer<'a>> {
        rwkv6::loaded_layer(self.layers, i)
    }
}

/// Bytes of one stored GOLD key or value element.
fn kv_value_bytes(kv: KvFormat) -> Option<usize> {
    match kv {
        KvFormat::F32 => Some(4),
        KvFormat::F16 => Some(2),
        KvFormat::I8 | KvFormat::I4 => None,
    }
}

/// A GoldFinch context in caller memory: the constant-size recurrent state and the cache for up
/// to `capacity` tokens, in its working form.
///
/// Float layout: per Finch-C2 layer (att shift C, WKV [head][key][value], ffn shift C); per GOLD
/// layer (att shift C, ffn shift C); previous `khat` (C) and previous `xo` (C); compressed keys
/// [capacity, c_dim]; then, with f32 keys and values, per GOLD layer keys [capacity, C] then
/// values [capacity, C]. With f16 keys and values the same per-layer rows live in a separate
/// half-precision slice.
#[derive(Debug)]
pub struct Context<'s> {
    config: Config,
    capacity: usize,
    len: usize,
    kv_format: KvFormat,
    tokens: &'s mut [u32],
    floats: &'s mut [f32],
    halves: &'s mut [u16],
}

/// Floats of the context and f16 values of its GOLD keys and values.
fn context_sizes(cfg: &Config, capacity: usize, kv: KvFormat) -> Result<(usize, usize)> {
    kv_value_bytes(kv).ok_or(Error::OutOfRange)?;
    let kv_values = capacity
        .checked_mul(2 * cfg.n_embd)
        .and_then(|v| v.checked_mul(cfg.n_gold()))
        .ok_or(Error::OutOfRange)?;
    let compressed = capacity.checked_mul(cfg.c_dim).ok_or(Error::OutOfRange)?;
    let floats = cfg
        .fixed_floats()?
        .checked_add(2 * cfg.n_embd)
        .and_then(|f| f.checked_add(compressed))
        .ok_or(Error::OutOfRange)?;
    Ok(match kv {
        KvFormat::F16 => (floats, kv_values),
        _ => (floats.checked_add(kv_values).ok_or(Error::OutOfRange)?, 0),
    })
}

type ContextParts<C> = (
    <C as Carve>::Out<u32>,
    <C as Carve>::Out<f32>,
    <C as Carve>::Out<u16>,
);

fn carve_context<C: Carve>(
    arena: &mut C,
    cfg: &Config,
    capacity: usize,
    kv: KvFormat,
) -> Result<ContextParts<C>> {
    if capacity == 0 {
        return Err(Error::OutOfRange);
    }
    let (floats, halves) = context_sizes(cfg, capacity, kv)?;
    let tokens = arena.take::<u32>(capacity)?;
    let floats = arena.take::<f32>(floats)?;
    let halves = arena.take::<u16>(halves)?;
    Ok((tokens, floats, halves))
}

/// The GOLD keys and values, per layer keys [capacity, C] then values [capacity, C].
enum KvRows<'c> {
    F32(&'c mut [f32]),
    F16(&'c mut [u16]),
}

impl KvRows<'_> {
    fn store(&mut self, at: usize, row: &[f32]) {
        match self {
            KvRows::F32(v) => v[at..at + row.len()].copy_from_slice(row),
            KvRows::F16(v) => {
                for (dst, x) in v[at..at + row.len()].iter_mut().zip(row) {
                    *dst = half::f16::from_f32(*x).to_bits();
                }
            }
        }
    }

    /// `Σ a[j] · row[at + j]`, through the attention kernels (SIMD where the target has it).
    fn dot(&self, kernels: &Kernels, at: usize, a: &[f32]) -> Result<f32> {
        match self {
            KvRows::F32(v) => kernels.dot_f32(&v[at..at + a.len()], a),
            KvRows::F16(v) => kernels.dot_f16(&v[at..at + a.len()], a),
        }
    }

    /// `y += p · row[at..]`.
    fn axpy(&self, kernels: &Kernels, at: usize, p: f32, y: &mut [f32]) -> Result<()> {
        let n = y.len();
        match self {
            KvRows::F32(v) => kernels.axpy_f32(p, &v[at..at + n], y),
            KvRows::F16(v) => kernels.axpy_f16(p, &v[at..at + n], y),
        }
    }
}

/// Disjoint views of a context's parts.
struct Parts<'c> {
    fixed: &'c mut [f32],
    prev_khat: &'c mut [f32],
    prev_xo: &'c mut [f32],
    compressed: &'c mut [f32],
    kv: KvRows<'c>,
}

impl<'s> Context<'s> {
    /// An empty context for up to `capacity` tokens with f32 GOLD keys and values, carved from
    /// `arena` (see [`GoldFinch::memory_plan`] for its size).
    pub fn carve(config: &Config, capacity: usize, arena: &mut Arena<'s>) -> Result<Self> {
        Self::carve_with(config, capacity, KvFormat::F32, arena)
    }

    /// [`Context::carve`] with the GOLD keys and values stored as `kv` (f32 or f16; see
    /// [`GoldFinch::plan_for`] for its size).
    pub fn carve_with(
        config: &Config,
        capacity: usize,
        kv: KvFormat,
        arena: &mut Arena<'s>,
    ) -> Result<Self> {
        let (tokens, floats, halves) = carve_context(arena, config, capacity, kv)?;
        floats.fill(0.0);
        halves.fill(0);
        Ok(Context {
            config: *config,
            capacity,
            len: 0,
            kv_format: kv,
            tokens,
            floats,
            halves,
        })
    }

    /// How the GOLD keys and values are stored.
    pub fn kv_format(&self) -> KvFormat {
        self.kv_format
    }

    /// Tokens in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no token has been run yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Most tokens the cache holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The tokens in the cache.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens[..self.len]
    }

    /// Back to an empty sequence.
    pub fn reset(&mut self) {
        self.len = 0;
        self.floats.fill(0.0);
        self.halves.fill(0);
    }

    /// Bytes of the working cache in use (compressed keys, token ids and per-layer keys and
    /// values of the cached tokens), excluding the constant-size state.
    pub fn working_cache_bytes(&self) -> usize {
        self.len
            * self
                .config
                .working_bytes_per_token(self.kv_format)
                .unwrap_or(0)
    }

    fn parts(&mut self) -> Parts<'_> {
        let cfg = &self.config;
        let c = cfg.n_embd;
        let fixed_len = cfg.fixed_floats().unwrap_or(0);
        let (fixed, rest) = self.floats.split_at_mut(fixed_len);
        let (prev_khat, rest) = rest.split_at_mut(c);
        let (prev_xo, rest) = rest.split_at_mut(c);
        let (compressed, kv) = rest.split_at_mut(self.capacity * cfg.c_dim);
        let kv = match self.kv_format {
            KvFormat::F16 => KvRows::F16(&mut *self.halves),
            _ => KvRows::F32(kv),
        };
        Parts {
            fixed,
            prev_khat,
            prev_xo,
            compressed,
            kv,
        }
    }
}

/// Offsets of layer `i`'s parts in the fixed state.
fn finch_state<'f>(
    cfg: &Config,
    fixed: &'f mut [f32],
    i: usize,
) -> (&'f mut [f32], &'f mut [f32], &'f mut [f32]) {
    let c = cfg.n_embd;
    let per = c * (cfg.head_size + 2);
    let layer = &mut fixed[i * per..(i + 1) * per];
    let (att, rest) = layer.split_at_mut(c);
    let (wkv, ffn) = rest.split_at_mut(per - 2 * c);
    (att, wkv, ffn)
}

fn gold_shifts<'f>(cfg: &Config, fixed: &'f mut [f32], g: usize) -> (&'f mut [f32], &'f mut [f32]) {
    let c = cfg.n_embd;
    let base = cfg.first_gold * c * (cfg.head_size + 2) + g * 2 * c;
    fixed[base..base + 2 * c].split_at_mut(c)
}

/// One-token working buffers.
struct Buffers<C: Carve> {
    x: C::Out<f32>,
    x0: C::Out<f32>,
    xx: C::Out<f32>,
    sx: C::Out<f32>,
    mixed: [C::Out<f32>; 5],
    base: C::Out<f32>,
    adapter: C::Out<f32>,
    hidden_small: C::Out<f32>,
    r: C::Out<f32>,
    k: C::Out<f32>,
    v: C::Out<f32>,
    y: C::Out<f32>,
    out: C::Out<f32>,
    hidden: C::Out<f32>,
    cat: C::Out<f32>,
    khat: C::Out<f32>,
    xo: C::Out<f32>,
    scores: C::Out<f32>,
}

fn carve_buffers<C: Carve>(a: &mut C, cfg: &Config, capacity: usize) -> Result<Buffers<C>> {
    let c = cfg.n_embd;
    let adapter = (5 * cfg.lora_mix)
        .max(cfg.lora_query)
        .max(2 * cfg.lora_kv_mix);
    let small = cfg.lora_decay.max(cfg.lora_value2).max(cfg.lora_kv);
    Ok(Buffers {
        x: a.take(c)?,
        x0: a.take(c)?,
        xx: a.take(c)?,
        sx: a.take(c)?,
        mixed: [a.take(c)?, a.take(c)?, a.take(c)?, a.take(c)?, a.take(c)?],
        base: a.take(c)?,
        adapter: a.take(adapter)?,
        hidden_small: a.take(small)?,
        r: a.take(c)?,
        k: a.take(c)?,
        v: a.take(c)?,
        y: a.take(c)?,
        out: a.take(c)?,
        hidden: a.take(cfg.dim_ffn)?,
        cat: a.take(c + cfg.c_dim)?,
        khat: a.take(c)?,
        xo: a.take(c)?,
        scores: a.take(capacity)?,
    })
}

/// Token-major rows for running the Finch-C2 layers and the compression over a chunk of up
/// to `max_tokens` tokens with matrix-matrix products.
struct ChunkBuffers<C: Carve> {
    /// Residual stream and normalised embeddings [T, C].
    x: C::Out<f32>,
    x0: C::Out<f32>,
    /// LayerNorm output and token shift [T, C].
    xx: C::Out<f32>,
    sx: C::Out<f32>,
    /// Mixed inputs r, k, v, w, v2 [T, C] each.
    mixed: [C::Out<f32>; 5],
    /// Mix adapter hidden values [T, 5·D].
    lora_mix: C::Out<f32>,
    /// Decay and second-value adapter hidden values [T, max(D', D'')].
    lora_small: C::Out<f32>,
    r: C::Out<f32>,
    k: C::Out<f32>,
    v: C::Out<f32>,
    decay: C::Out<f32>,
    y: C::Out<f32>,
    out: C::Out<f32>,
    /// Channel-mix hidden [T, F].
    hidden: C::Out<f32>,
    /// Compressed keys [T, c_dim].
    compressed: C::Out<f32>,
}

fn carve_chunk<C: Carve>(a: &mut C, cfg: &Config, max_tokens: usize) -> Result<ChunkBuffers<C>> {
    let n = |width: usize| max_tokens.checked_mul(width).ok_or(Error::OutOfRange);
    let tc = n(cfg.n_embd)?;
    Ok(ChunkBuffers {
        x: a.take(tc)?,
        x0: a.take(tc)?,
        xx: a.take(tc)?,
        sx: a.take(tc)?,
        mixed: [
            a.take(tc)?,
            a.take(tc)?,
            a.take(tc)?,
            a.take(tc)?,
            a.take(tc)?,
        ],
        lora_mix: a.take(n(5 * cfg.lora_mix)?)?,
        lora_small: a.take(n(cfg.lora_decay.max(cfg.lora_value2))?)?,
        r: a.take(tc)?,
        k: a.take(tc)?,
        v: a.take(tc)?,
        decay: a.take(tc)?,
        y: a.take(tc)?,
        out: a.take(tc)?,
        hidden: a.take(n(cfg.dim_ffn)?)?,
        compressed: a.take(n(cfg.c_dim)?)?,
    })
}

/// Scratch memory: one-token buffers with room for attention over `capacity` positions, and
/// rows for prefill chunks of up to `max_tokens` tokens.
pub struct Scratch<'s> {
    config: Config,
    capacity: usize,
    max_tokens: usize,
    b: Buffers<Arena<'s>>,
    chunk: ChunkBuffers<Arena<'s>>,
}

impl core::fmt::Debug for Scratch<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Scratch")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl<'s> Scratch<'s> {
    /// Scratch for contexts of up to `capacity` tokens, running prompts one token at a time
    /// (the least memory), carved from `arena`.
    pub fn carve(config: &Config, capacity: usize, arena: &mut Arena<'s>) -> Result<Self> {
        Self::carve_chunked(config, capacity, 1, arena)
    }

    /// Scratch for contexts of up to `capacity` tokens whose prefill runs the Finch-C2 layers
    /// and the compression over chunks of up to `max_tokens` tokens with matrix-matrix
    /// products (see [`GoldFinch::memory_plan_chunked`]).
    pub fn carve_chunked(
        config: &Config,
        capacity: usize,
        max_tokens: usize,
        arena: &mut Arena<'s>,
    ) -> Result<Self> {
        if capacity == 0 || max_tokens == 0 {
            return Err(Error::OutOfRange);
        }
        Ok(Scratch {
            config: *config,
            capacity,
            max_tokens,
            b: carve_buffers(arena, config, capacity)?,
            chunk: carve_chunk(arena, config, max_tokens)?,
        })
    }

    /// Most tokens one prefill chunk processes.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }
}

/// `x / (sqrt(mean(x²)) + 1e-8)`, no weight.
fn rms_normalize(x: &mut [f32]) {
    let mean = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv = 1.0 / (libm::sqrtf(mean) + RMS_EPS);
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// Rotates every head (size `n`) of `x` in consecutive pairs `(x[2i], x[2i+1])` by the angle
/// `pos · base^(-2i/n)` (the paper's RoPE ablation: complex multiplication of adjacent pairs).
fn rope(x: &mut [f32], n: usize, pos: usize, base: u32) {
    let ln_base = libm::log(f64::from(base));
    for head in x.chunks_exact_mut(n) {
        for (i, pair) in head.chunks_exact_mut(2).enumerate() {
            let freq = libm::exp(-ln_base * (2 * i) as f64 / n as f64);
            let angle = pos as f64 * freq;
            let (sin, cos) = (libm::sin(angle) as f32, libm::cos(angle) as f32);
            let (a, b) = (pair[0], pair[1]);
            pair[0] = a * cos - b * sin;
            pair[1] = a * sin + b * cos;
        }
    }
}

/// Magic bytes at the start of a saved GoldFinch context.
pub const CONTEXT_MAGIC: [u8; 8] = *b"GCGOLDF\0";
/// Version of the saved-context format.
pub const CONTEXT_VERSION: u16 = 1;
/// Payload layout id: fixed state f32, token ids u32, compressed keys f32.
pub const CONTEXT_LAYOUT: u16 = 1;
/// Payload layout id with the compressed keys in f16 (the paper's at-rest size):
/// [`GoldFinch::save_as`] with [`KvFormat::F16`].
pub const CONTEXT_LAYOUT_F16_KEYS: u16 = 2;

/// Layout id and bytes per compressed-key element of an at-rest key format.
fn key_layout(keys: KvFormat) -> Result<(u16, usize)> {
    match keys {
        KvFormat::F32 => Ok((CONTEXT_LAYOUT, 4)),
        KvFormat::F16 => Ok((CONTEXT_LAYOUT_F16_KEYS, 2)),
        KvFormat::I8 | KvFormat::I4 => Err(Error::OutOfRange),
    }
}
const CONTEXT_HEADER: usize = 40;

/// Tokens held by a context saved by [`GoldFinch::save`], read from its header alone (so a
/// caller can size the [`Context`] to restore it into); `None` when `bytes` does not start
/// with a saved-context header. [`GoldFinch::restore`] still checks everything.
pub fn saved_context_tokens(bytes: &[u8]) -> Option<u64> {
    if bytes.get(..8)? != CONTEXT_MAGIC {
        return None;
    }
    let count: [u8; 8] = bytes.get(32..40)?.try_into().ok()?;
    Some(u64::from_le_bytes(count))
}

/// A GoldFinch model ready to run.
#[derive(Debug, Clone, Copy)]
pub struct GoldFinch<'w, 'a> {
    weights: Weights<'w, 'a>,
    kernels: Kernels,
}

impl<'w, 'a> GoldFinch<'w, 'a> {
    /// Loads (strictly) the model in `source`; `layers` holds at least `n_layer` entries.
    pub fn load(
        source: &dyn TensorSource<'a>,
        layers: &'w mut [Option<Layer<'a>>],
        kernels: Kernels,
    ) -> Result<Self> {
        Ok(GoldFinch {
            weights: Weights::load(source, layers)?,
            kernels,
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &Config {
        &self.weights.config
    }

    /// The model's weights.
    pub fn weights(&self) -> &Weights<'w, 'a> {
        &self.weights
    }

    /// Exact bytes of weights, context (state + working cache for `capacity` tokens) and
    /// scratch for one-token prefill ([`Scratch::carve`]), each in its own aligned buffer.
    pub fn memory_plan(&self, capacity: usize) -> Result<MemoryPlan> {
        Self::plan(self.config(), capacity, self.weights.bytes)
    }

    /// [`GoldFinch::memory_plan`] with scratch for prefill chunks of up to `max_tokens`
    /// tokens ([`Scratch::carve_chunked`]).
    pub fn memory_plan_chunked(&self, capacity: usize, max_tokens: usize) -> Result<MemoryPlan> {
        Self::plan_chunked(self.config(), capacity, max_tokens, self.weights.bytes)
    }

    /// [`GoldFinch::memory_plan_chunked`] for a context whose GOLD keys and values are stored
    /// as `kv` ([`Context::carve_with`]).
    pub fn memory_plan_for(
        &self,
        capacity: usize,
        max_tokens: usize,
        kv: KvFormat,
    ) -> Result<MemoryPlan> {
        Self::plan_for(self.config(), capacity, max_tokens, kv, self.weights.bytes)
    }

    /// [`GoldFinch::memory_plan`] from a configuration alone.
    pub fn plan(config: &Config, capacity: usize, weight_bytes: usize) -> Result<MemoryPlan> {
        Self::plan_chunked(config, capacity, 1, weight_bytes)
    }

    /// [`GoldFinch::memory_plan_chunked`] from a configuration alone.
    pub fn plan_chunked(
        config: &Config,
        capacity: usize,
        max_tokens: usize,
        weight_bytes: usize,
    ) -> Result<MemoryPlan> {
        Self::plan_for(config, capacity, max_tokens, KvFormat::F32, weight_bytes)
    }

    /// [`GoldFinch::memory_plan_for`] from a configuration alone.
    pub fn plan_for(
        config: &Config,
        capacity: usize,
        max_tokens: usize,
        kv: KvFormat,
        weight_bytes: usize,
    ) -> Result<MemoryPlan> {
        let mut state = Planner::new();
        carve_context(&mut state, config, capacity, kv)?;
        let mut scratch = Planner::new();
        carve_buffers(&mut scratch, config, capacity)?;
        carve_chunk(&mut scratch, config, max_tokens)?;
        Ok(MemoryPlan {
            weight_bytes,
            state_bytes: state.bytes(),
            scratch_bytes: scratch.bytes(),
        })
    }

    fn check(&self, ctx: &Context, scratch: &Scratch) -> Result<()> {
        if ctx.config != *self.config()
            || scratch.config != *self.config()
            || scratch.capacity < ctx.capacity
        {
            return Err(Error::LengthMismatch {
                expected: ctx.capacity as u64,
                found: scratch.capacity as u64,
            });
        }
        Ok(())
    }

    /// Decodes one token and writes the next-token logits ([V]).
    pub fn step(
        &self,
        ctx: &mut Context,
        scratch: &mut Scratch,
        token: u32,
        logits: &mut [f32],
    ) -> Result<()> {
        self.prefill(ctx, scratch, &[token], logits)
    }

    /// Runs `tokens` after the context. `logits` is [V] (after the last token: the GOLD layers
    /// then run only over the last `2 · n_gold + 1` tokens) or [T, V] (after every token).
    /// The Finch-C2 layers and the compression run over chunks of `scratch.max_tokens()`
    /// tokens with matrix-matrix products; the result does not depend on the chunk size.
    pub fn prefill(
        &self,
        ctx: &mut Context,
        scratch: &mut Scratch,
        tokens: &[u32],
        logits: &mut [f32],
    ) -> Result<()> {
        self.check(ctx, scratch)?;
        let cfg = *self.config();
        let v = cfg.vocab_size;
        let t_n = tokens.len();
        if t_n == 0 {
            return Err(Error::OutOfRange);
        }
        let all = t_n.checked_mul(v).ok_or(Error::OutOfRange)?;
        let want_all = logits.len() == all && t_n > 1;
        if !want_all && logits.len() != v {
            return Err(Error::LengthMismatch {
                expected: v as u64,
                found: logits.len() as u64,
            });
        }
        if ctx.len + t_n > ctx.capacity {
            return Err(Error::ContextFull {
                capacity: ctx.capacity as u64,
            });
        }
        // Checked before anything runs, so a bad token leaves the context unchanged.
        if tokens.iter().any(|&t| t as usize >= v) {
            return Err(Error::OutOfRange);
        }
        let window = if want_all { t_n } else { 2 * cfg.n_gold() + 1 };
        let (c, cd) = (cfg.n_embd, cfg.c_dim);
        let mut first = 0;
        for chunk in tokens.chunks(scratch.max_tokens) {
            let rows = chunk.len();
            let cb = &mut scratch.chunk;
            for (t, &token) in chunk.iter().enumerate() {
                self.embed(token, &mut cb.x0[t * c..(t + 1) * c])?;
            }
            cb.x[..rows * c].copy_from_slice(&cb.x0[..rows * c]);
            for i in 0..cfg.first_gold {
                self.finch_chunk(ctx, cb, i, rows)?;
            }
            self.kernels.gemm(
                &self.weights.compress,
                &cb.x[..rows * c],
                rows,
                &mut cb.compressed[..rows * cd],
            )?;
            for (t, &token) in chunk.iter().enumerate() {
                let p = first + t;
                let b = &mut scratch.b;
                b.x0.copy_from_slice(&cb.x0[t * c..(t + 1) * c]);
                b.x.copy_from_slice(&cb.x[t * c..(t + 1) * c]);
                b.cat[c..].copy_from_slice(&cb.compressed[t * cd..(t + 1) * cd]);
                let pos = ctx.len;
                ctx.parts().compressed[pos * cd..(pos + 1) * cd].copy_from_slice(&b.cat[c..]);
                ctx.tokens[pos] = token;
                self.append_keys_values(ctx, b, pos)?;
                ctx.len = pos + 1;
                if p + window < t_n {
                    continue;
                }
                for g in 0..cfg.n_gold() {
                    self.gold_block(ctx, b, g)?;
                }
                if want_all || p + 1 == t_n {
                    let out = if want_all {
                        &mut logits[p * v..(p + 1) * v]
                    } else {
                        &mut *logits
                    };
                    b.xx.copy_from_slice(b.x);
                    ops::layer_norm(
                        b.xx,
                        self.weights.ln_out.0,
                        self.weights.ln_out.1,
                        LAYER_NORM_EPS,
                    )?;
                    self.kernels.gemv(&self.weights.head, b.xx, out)?;
                }
            }
            first += rows;
        }
        Ok(())
    }

    /// `out = LN(emb[token]; ln0)`.
    fn embed(&self, token: u32, out: &mut [f32]) -> Result<()> {
        let w = &self.weights;
        let row = w.emb.row(token as usize).ok_or(Error::OutOfRange)?;
        quant::dequantize_row(w.emb.format(), row, self.config().n_embd, out)?;
        ops::layer_norm(out, w.ln0.0, w.ln0.1, LAYER_NORM_EPS)
    }

    /// The keys and values of cache position `pos` in every GOLD layer, from the token's
    /// normalised embedding (`b.x0`) and compressed key (`b.cat[C..]`); shifts from the previous
    /// position's `khat` and `xo` in the context, which then move on to this position.
    fn append_keys_values(
        &self,
        ctx: &mut Context,
        b: &mut Buffers<Arena>,
        pos: usize,
    ) -> Result<()> {
        let cfg = *self.config();
        let c = cfg.n_embd;
        let cap = ctx.capacity;
        b.cat[..c].copy_from_slice(b.x0);
        self.kernels.gemv(&self.weights.decompress, b.cat, b.khat)?;
        rms_normalize(b.khat);
        b.xo.copy_from_slice(b.x0);
        rms_normalize(b.xo);
        let mut parts = ctx.parts();
        // sx = previous - current, for the values (xo) and the keys (khat).
        for j in 0..c {
            b.sx[j] = parts.prev_xo[j] - b.xo[j];
            b.base[j] = parts.prev_khat[j] - b.khat[j];
        }
        for g in 0..cfg.n_gold() {
            let Mix::Gold(att) = &self.weights.layer(cfg.first_gold + g)?.att else {
                return Err(Error::OutOfRange);
            };
            let rk = cfg.lora_kv_mix;
            let hidden = &mut b.adapter[..2 * rk];
            mix_adapter_hidden(b.xo, b.sx, att.maa_v_cache, &att.maa_kv_w1, b.y, hidden)?;
            // Key: khat mixed with the previous khat, plus its adapter, LayerNorm.
            shift_mix(
                b.khat,
                b.base,
                att.maa_k,
                Some((&hidden[..rk], &att.maa_kv_w2[0])),
                b.out,
                b.k,
            )?;
            low_rank(
                b.k,
                &att.key_w.0,
                &att.key_w.1,
                &mut b.hidden_small[..cfg.lora_kv],
                b.out,
            )?;
            for (kj, oj) in b.k.iter_mut().zip(b.out.iter()) {
                *kj += oj;
            }
            ops::layer_norm(b.k, att.ln_k.0, att.ln_k.1, LAYER_NORM_EPS)?;
            if let Some(base) = cfg.rope_theta {
                rope(b.k, cfg.head_size, pos, base);
            }
            shift_mix(
                b.xo,
                b.sx,
                att.maa_v,
                Some((&hidden[rk..], &att.maa_kv_w2[1])),
                b.out,
                b.v,
            )?;
            low_rank(
                b.v,
                &att.value_w.0,
                &att.value_w.1,
                &mut b.hidden_small[..cfg.lora_kv],
                b.out,
            )?;
            for (vj, oj) in b.v.iter_mut().zip(b.out.iter()) {
                *vj += oj;
            }
            ops::layer_norm(b.v, att.ln_v.0, att.ln_v.1, LAYER_NORM_EPS)?;
            let layer_base = g * 2 * cap * c;
            parts.kv.store(layer_base + pos * c, b.k);
            parts.kv.store(layer_base + (cap + pos) * c, b.v);
        }
        parts.prev_khat.copy_from_slice(b.khat);
        parts.prev_xo.copy_from_slice(b.xo);
        Ok(())
    }

    /// `x += FinchC2(LN(x; ln1)); x += ChannelMix(LN(x; ln2))` for the first `rows` token
    /// rows of the chunk, the projections as matrix-matrix products.
    fn finch_chunk(
        &self,
        ctx: &mut Context,
        cb: &mut ChunkBuffers<Arena>,
        i: usize,
        rows: usize,
    ) -> Result<()> {
        let cfg = *self.config();
        let c = cfg.n_embd;
        let small = cfg.lora_decay.max(cfg.lora_value2);
        let tc = rows * c;
        let layer = self.weights.layer(i)?;
        let Mix::FinchC2(att) = &layer.att else {
            return Err(Error::OutOfRange);
        };
        let parts = ctx.parts();
        let (att_shift, wkv, ffn_shift) = finch_state(&cfg, parts.fixed, i);
        finch_time_shift!(att, cfg.lora_mix, layer.ln1, att_shift, cb, tc)?;
        let [xr, xk, xv, xw, xv2] = &cb.mixed;
        let kern = &self.kernels;
        kern.gemm(&att.receptance, &xr[..tc], rows, &mut cb.r[..tc])?;
        kern.gemm(&att.key, &xk[..tc], rows, &mut cb.k[..tc])?;
        kern.gemm(&att.value, &xv[..tc], rows, &mut cb.v[..tc])?;
        for t in 0..rows {
            let row = t * c..(t + 1) * c;
            let decay = &mut cb.decay[row.clone()];
            data_dependent_decay(
                &xw[row.clone()],
                att.decay,
                &att.decay_w1,
                &att.decay_w2,
                &mut cb.lora_small[t * small..t * small + cfg.lora_decay],
                decay,
            )?;
            let k = &mut cb.k[row.clone()];
            for (kj, dj) in k.iter_mut().zip(decay.iter()) {
                *kj *= 1.0 - dj;
            }
            wkv_step(
                WkvInputs {
                    r: &cb.r[row.clone()],
                    k,
                    v: &cb.v[row.clone()],
                    decay,
                    bonus: None,
                },
                cfg.head_size,
                wkv,
                &mut cb.y[row],
            );
        }
        // The second value stands in for the bonus: v2 = W_v x_v2 + adapter(x_v2).
        kern.gemm(&att.value, &xv2[..tc], rows, &mut cb.v[..tc])?;
        for t in 0..rows {
            let row = t * c..(t + 1) * c;
            let out = &mut cb.out[row.clone()];
            low_rank(
                &xv2[row.clone()],
                &att.value2_w1,
                &att.value2_w2,
                &mut cb.lora_small[t * small..t * small + cfg.lora_value2],
                out,
            )?;
            let y = &mut cb.y[row.clone()];
            for ((yj, vj), oj) in y.iter_mut().zip(&cb.v[row]).zip(out.iter()) {
                *yj += vj + oj;
            }
            ops::layer_norm(y, att.ln_x.0, att.ln_x.1, LAYER_NORM_EPS)?;
        }
        kern.gemm(&att.output, &cb.y[..tc], rows, &mut cb.out[..tc])?;
        for (xj, oj) in cb.x[..tc].iter_mut().zip(&cb.out[..tc]) {
            *xj += oj;
        }
        let [_, xk, _, xr, _] = &mut cb.mixed;
        channel_mix(
            kern,
            &layer.ffn,
            layer.ln2,
            ffn_shift,
            &mut cb.x[..tc],
            ChannelMixBuffers {
                xx: &mut cb.xx[..tc],
                sx: &mut cb.sx[..tc],
                xk: &mut xk[..tc],
                xr: &mut xr[..tc],
                hidden: &mut cb.hidden[..rows * cfg.dim_ffn],
                out: &mut cb.out[..tc],
                r: &mut cb.r[..tc],
            },
        )
    }

    fn ffn(&self, layer: &Layer, shift: &mut [f32], b: &mut Buffers<Arena>) -> Result<()> {
        let [_, xk, _, xr, _] = &mut b.mixed;
        channel_mix(
            &self.kernels,
            &layer.ffn,
            layer.ln2,
            shift,
            b.x,
            ChannelMixBuffers {
                xx: b.xx,
                sx: b.sx,
                xk,
                xr,
                hidden: b.hidden,
                out: b.out,
                r: b.r,
            },
        )
    }

    /// GOLD block `g` (0-based among the GOLD layers) for the newest cached token.
    fn gold_block(&self, ctx: &mut Context, b: &mut Buffers<Arena>, g: usize) -> Result<()> {
        let cfg = *self.config();
        let (c, n) = (cfg.n_embd, cfg.head_size);
        let layer = self.weights.layer(cfg.first_gold + g)?;
        let Mix::Gold(att) = &layer.att else {
            return Err(Error::OutOfRange);
        };
        let (cap, len) = (ctx.capacity, ctx.len);
        let parts = ctx.parts();
        let (att_shift, ffn_shift) = gold_shifts(&cfg, parts.fixed, g);
        norm_and_shift(b.x, b.xx, b.sx, layer.ln1, att_shift)?;
        let hidden = &mut b.adapter[..cfg.lora_query];
        mix_adapter_hidden(b.xx, b.sx, att.maa_x, &att.maa_q_w1, b.base, hidden)?;
        shift_mix(
            b.xx,
            b.sx,
            att.maa_q,
            Some((hidden, &att.maa_q_w2)),
            b.out,
            b.mixed[0],
        )?;
        self.kernels.gemv(&att.query, b.mixed[0], b.r)?;
        ops::layer_norm(b.r, att.ln_q.0, att.ln_q.1, LAYER_NORM_EPS)?;
        if let Some(base) = cfg.rope_theta {
            rope(b.r, n, len - 1, base);
        }
        let keys = g * 2 * cap * c;
        let values = keys + cap * c;
        let scale = 1.0 / libm::sqrtf(n as f32);
        let scores = &mut b.scores[..len];
        for h in 0..cfg.n_head() {
            let head = h * n..(h + 1) * n;
            let q = &b.r[head.clone()];
            for (s, score) in scores.iter_mut().enumerate() {
                *score = parts.kv.dot(&self.kernels, keys + s * c + h * n, q)? * scale;
            }
            ops::softmax(scores)?;
            let y = &mut b.y[head];
            y.fill(0.0);
            for (s, &p) in scores.iter().enumerate() {
                parts.kv.axpy(&self.kernels, values + s * c + h * n, p, y)?;
            }
        }
        ops::layer_norm(b.y, att.ln_x.0, att.ln_x.1, LAYER_NORM_EPS)?;
        self.kernels.gemv(&att.output, b.y, b.out)?;
        for (xj, oj) in b.x.iter_mut().zip(b.out.iter()) {
            *xj += oj;
        }
        self.ffn(layer, ffn_shift, b)
    }

    /// Bytes [`GoldFinch::save`] writes for a context of `len` tokens.
    pub fn saved_len(&self, len: usize) -> Result<usize> {
        self.saved_len_as(len, KvFormat::F32)
    }

    /// Bytes [`GoldFinch::save_as`] writes for a context of `len` tokens with compressed keys
    /// stored as `keys` (f32 or f16).
    pub fn saved_len_as(&self, len: usize, keys: KvFormat) -> Result<usize> {
        let cfg = self.config();
        let (_, key_bytes) = key_layout(keys)?;
        let per_token = 4 + key_bytes * cfg.c_dim;
        cfg.fixed_floats()?
            .checked_mul(4)
            .and_then(|f| f.checked_add(len.checked_mul(per_token)?))
            .and_then(|f| f.checked_add(CONTEXT_HEADER + 4))
            .ok_or(Error::OutOfRange)
    }

    fn header(&self, len: usize, layout: u16) -> [u8; CONTEXT_HEADER] {
        let cfg = self.config();
        let mut h = [0u8; CONTEXT_HEADER];
        h[0..8].copy_from_slice(&CONTEXT_MAGIC);
        h[8..10].copy_from_slice(&CONTEXT_VERSION.to_le_bytes());
        h[10..12].copy_from_slice(&layout.to_le_bytes());
        let dims = [
            cfg.n_layer,
            cfg.n_embd,
            cfg.head_size,
            cfg.first_gold,
            cfg.c_dim,
        ];
        for (k, d) in dims.iter().enumerate() {
            h[12 + 4 * k..16 + 4 * k].copy_from_slice(&(*d as u32).to_le_bytes());
        }
        h[32..40].copy_from_slice(&(len as u64).to_le_bytes());
        h
    }

    /// Saves `ctx` in the at-rest form (little-endian, versioned, CRC-32 checked) and returns
    /// the bytes written, [`GoldFinch::saved_len`]:
    ///
    /// | bytes | content |
    /// |---|---|
    /// | 0..8 | `GCGOLDF\0` |
    /// | 8..10 | format version (u16, 1) |
    /// | 10..12 | payload layout (u16, 1; 2 from [`GoldFinch::save_as`] with f16 keys) |
    /// | 12..32 | n_layer, n_embd, head_size, first GOLD layer, c_dim (u32 each) |
    /// | 32..40 | tokens in the context (u64) |
    /// | 40.. | fixed state (f32, [`Context`] order), token ids (u32), compressed keys (f32; f16 in layout 2) |
    /// | last 4 | CRC-32 (IEEE) of everything before it |
    pub fn save(&self, ctx: &Context, out: &mut [u8]) -> Result<usize> {
        self.save_as(ctx, KvFormat::F32, out)
    }

    /// [`GoldFinch::save`] with the compressed keys stored as `keys`: f32 (layout 1, restores
    /// bit for bit) or f16 (layout 2, `4 + 2·c_dim` bytes per token, the paper's at-rest
    /// size; the restored keys are the f16-rounded ones).
    pub fn save_as(&self, ctx: &Context, keys: KvFormat, out: &mut [u8]) -> Result<usize> {
        if ctx.config != *self.config() {
            return Err(Error::OutOfRange);
        }
        let (layout, _) = key_layout(keys)?;
        let len = self.saved_len_as(ctx.len, keys)?;
        let provided = out.len() as u64;
        let out = out.get_mut(..len).ok_or(Error::BufferTooSmall {
            needed: len as u64,
            provided,
        })?;
        let n = ctx.len;
        let c_dim = self.config().c_dim;
        out[..CONTEXT_HEADER].copy_from_slice(&self.header(n, layout));
        let mut at = CONTEXT_HEADER;
        let mut put = |bytes: [u8; 4]| {
            out[at..at + 4].copy_from_slice(&bytes);
            at += 4;
        };
        let fixed_len = self.config().fixed_floats()?;
        let compressed_at = fixed_len + 2 * self.config().n_embd;
        for v in &ctx.floats[..fixed_len] {
            put(v.to_le_bytes());
        }
        for t in &ctx.tokens[..n] {
            put(t.to_le_bytes());
        }
        for v in &ctx.floats[compressed_at..compressed_at + n * c_dim] {
            if layout == CONTEXT_LAYOUT {
                out[at..at + 4].copy_from_slice(&v.to_le_bytes());
                at += 4;
            } else {
                out[at..at + 2].copy_from_slice(&half::f16::from_f32(*v).to_bits().to_le_bytes());
                at += 2;
            }
        }
        let crc = rwkv6::crc32(&out[..at]);
        out[at..at + 4].copy_from_slice(&crc.to_le_bytes());
        Ok(len)
    }

    /// Replaces `ctx` with a context saved by [`GoldFinch::save`], rebuilding the working
    /// cache (every GOLD layer's keys and values) from the token ids and compressed keys. The
    /// bytes are fully checked (header, length, checksum, finite values, token ids, capacity)
    /// before `ctx` is touched.
    pub fn restore(&self, ctx: &mut Context, scratch: &mut Scratch, bytes: &[u8]) -> Result<()> {
        self.check(ctx, scratch)?;
        let cfg = *self.config();
        crate::models::rwkv6::check_saved_prefix(
            bytes,
            CONTEXT_HEADER,
            &CONTEXT_MAGIC,
            CONTEXT_VERSION,
            "context magic",
        )?;
        let mut n_bytes = [0u8; 8];
        n_bytes.copy_from_slice(&bytes[32..40]);
        let n = u64::from_le_bytes(n_bytes);
        if n > ctx.capacity as u64 {
            return Err(Error::ContextFull {
                capacity: ctx.capacity as u64,
            });
        }
        let n = n as usize;
        let layout = u16::from_le_bytes([bytes[10], bytes[11]]);
        let keys = if layout == CONTEXT_LAYOUT_F16_KEYS {
            KvFormat::F16
        } else {
            KvFormat::F32
        };
        let (_, key_bytes) = key_layout(keys)?;
        if bytes[10..CONTEXT_HEADER] != self.header(n, key_layout(keys)?.0)[10..] {
            return Err(Error::BadMetadata {
                key: Name::new("context layout or dimensions"),
            });
        }
        let len = self.saved_len_as(n, keys)?;
        if bytes.len() != len {
            return Err(Error::Truncated {
                needed: len as u64,
                available: bytes.len() as u64,
            });
        }
        let word = |b: &[u8]| [b[0], b[1], b[2], b[3]];
        if rwkv6::crc32(&bytes[..len - 4]) != u32::from_le_bytes(word(&bytes[len - 4..])) {
            return Err(Error::Checksum);
        }
        let fixed_len = cfg.fixed_floats()?;
        let payload = &bytes[CONTEXT_HEADER..len - 4];
        let (fixed, rest) = payload.split_at(4 * fixed_len);
        let (tokens, compressed) = rest.split_at(4 * n);
        let float = |b: &[u8]| f32::from_le_bytes(word(b));
        let key = |b: &[u8]| match b {
            [lo, hi] => half::f16::from_bits(u16::from_le_bytes([*lo, *hi])).to_f32(),
            _ => float(b),
        };
        if !fixed.chunks_exact(4).all(|b| float(b).is_finite())
            || !compressed
                .chunks_exact(key_bytes)
                .all(|b| key(b).is_finite())
        {
            return Err(Error::NonFinite);
        }
        if !tokens
            .chunks_exact(4)
            .all(|b| (u32::from_le_bytes(word(b)) as usize) < cfg.vocab_size)
        {
            return Err(Error::OutOfRange);
        }
        ctx.reset();
        for (dst, b) in ctx.floats[..fixed_len]
            .iter_mut()
            .zip(fixed.chunks_exact(4))
        {
            *dst = float(b);
        }
        let c = cfg.n_embd;
        for (pos, (t, stored)) in tokens
            .chunks_exact(4)
            .zip(compressed.chunks_exact(key_bytes * cfg.c_dim))
            .enumerate()
        {
            let token = u32::from_le_bytes(word(t));
            let b = &mut scratch.b;
            self.embed(token, b.x0)?;
            for (dst, src) in b.cat[c..].iter_mut().zip(stored.chunks_exact(key_bytes)) {
                *dst = key(src);
            }
            ctx.tokens[pos] = token;
            ctx.parts().compressed[pos * cfg.c_dim..(pos + 1) * cfg.c_dim]
                .copy_from_slice(&b.cat[c..]);
            self.append_keys_values(ctx, b, pos)?;
            ctx.len = pos + 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_normalize_puts_eps_outside_the_root() {
        let mut x = [3.0f32, 4.0];
        rms_normalize(&mut x);
        let rms = libm::sqrtf(12.5);
        assert!((x[0] - 3.0 / (rms + 1e-8)).abs() < 1e-7);
        let mut zero = [0.0f32; 4];
        rms_normalize(&mut zero);
        assert_eq!(zero, [0.0; 4]);
    }
}
