//! RWKV-6 "Finch" (x060), exactly as the reference (`rwkv` 0.8.32, BlinkDL's demo) computes it.
//!
//! ```text
//! x = LN(emb[token]; ln0)
//! for each layer:
//!     x += TimeMix(LN(x; ln1))        data-dependent token shift and decay, WKV recurrence
//!     x += ChannelMix(LN(x; ln2))     token shift, squared ReLU, sigmoid receptance
//! logits = head @ LN(x; ln_out)
//! ```
//!
//! The details that are easy to get wrong, each checked against the reference:
//! - the token shift is `previous - current` of the **post-LayerNorm** values, and the state
//!   keeps the post-LayerNorm value of the last token;
//! - the five low-rank mixes come out in the order **w, k, v, r, g**;
//! - `decay = exp(-exp(time_decay + lora))` multiplies the WKV state along the **key** index;
//! - `time_faaaa` (the bonus `u`) is used raw, not exponentiated;
//! - the per-head GroupNorm uses eps **64e-5**; the other LayerNorms 1e-5;
//! - goldcrest files hold the true weights: fp16 exports that divide `att.output` and
//!   `ffn.value` by `2^(layer / 6)` must be undone by the converter, never here.
//!
//! Tensor names and shapes are the official ones (`blocks.N.att.time_maa_x` [1, 1, C], ...);
//! the low-rank matrices `time_maa_w1` [C, 5·D], `time_maa_w2` [5, D, C], `time_decay_w1`
//! [C, D'] and `time_decay_w2` [D', C] are stored `[in, out]` and must be f32/f16/bf16. The
//! seven large linear layers and the head may use any matrix format the kernels support
//! (f32, f16, bf16, i8, q8_0, q4_0, tq2_0, tq1_0).
//!
//! Memory: the state is `n_layer · n_embd · (head_size + 2)` f32 in caller memory ([`State`]);
//! a forward pass over up to `max_tokens` tokens at once uses a [`Scratch`] carved from caller
//! memory. [`Rwkv6::memory_plan`] gives the exact bytes of both.
//!
//! Firmware-style use, with the model in flash and every buffer static or on the stack:
//!
//! ```
//! use goldcrest_core::arena::{Aligned, Arena};
//! use goldcrest_core::format::SafeTensors;
//! use goldcrest_core::kernels::Kernels;
//! use goldcrest_core::models::rwkv6::{Rwkv6, Scratch, State};
//! use goldcrest_core::ops::sample::greedy;
//!
//! #[repr(C, align(8))]
//! struct Flash<Bytes: ?Sized>(Bytes);
//! static MODEL: &Flash<[u8]> =
//!     &Flash(*include_bytes!("../../../tests/fixtures/rwkv6/tiny_a.safetensors"));
//!
//! let file = SafeTensors::parse(&MODEL.0)?;
//! let mut layers = [None; 2];
//! let model = Rwkv6::load(&file, &mut layers, Kernels::for_target())?;
//! let plan = model.memory_plan(1)?; // decode only: one token at a time
//! let (mut state_ram, mut scratch_ram) = (Aligned([0u8; 16 << 10]), Aligned([0u8; 16 << 10]));
//! assert!(plan.state_bytes <= state_ram.0.len() && plan.scratch_bytes <= scratch_ram.0.len());
//! let mut state = State::carve(model.config(), &mut Arena::new(&mut state_ram.0)?)?;
//! let mut scratch = Scratch::carve(model.config(), 1, &mut Arena::new(&mut scratch_ram.0)?)?;
//!
//! let mut logits = [0.0f32; 96];
//! let mut token = 1;
//! for _ in 0..8 {
//!     model.step(&mut state, &mut scratch, token, &mut logits)?;
//!     token = greedy(&logits)?;
//! }
//! # Ok::<(), goldcrest_core::Error>(())
//! ```

use crate::arena::{Arena, Carve, MemoryPlan, Planner};
use crate::error::{Error, Name, Result, Shape};
use crate::kernels::Kernels;
use crate::models::{
    NameBuf, TensorRef, TensorSource, check_header, format_name, known_tensor_bytes, metadata_usize,
};
use crate::ops::{self, Vector};
use crate::quant::{self, Matrix};

/// Value of `goldcrest.arch` for this model.
pub const ARCH: &str = "rwkv6";
/// Epsilon of every LayerNorm (torch's default).
pub const LAYER_NORM_EPS: f32 = 1e-5;
/// Epsilon of the per-head GroupNorm `ln_x` (`1e-5 · head_size_divisor²` with divisor 8).
pub const GROUP_NORM_EPS: f32 = 64e-5;

/// Upper bound on every dimension, so products of dimensions cannot overflow `usize` on 32-bit
/// targets before they are checked against the file.
const MAX_DIM: usize = 1 << 20;

/// Hyperparameters, from the `goldcrest.rwkv6.*` metadata keys plus the low-rank dimensions,
/// which are read from the tensor shapes (they differ between model sizes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Number of blocks (`goldcrest.rwkv6.n_layer`).
    pub n_layer: usize,
    /// Width C of the residual stream (`goldcrest.rwkv6.n_embd`); also the attention width.
    pub n_embd: usize,
    /// Head size N (`goldcrest.rwkv6.head_size`, 64 in released models); C / N heads.
    pub head_size: usize,
    /// Channel-mix hidden width F (`goldcrest.rwkv6.dim_ffn`).
    pub dim_ffn: usize,
    /// Vocabulary size V (`goldcrest.rwkv6.vocab_size`).
    pub vocab_size: usize,
    /// Rank of the token-shift mix adapter (`time_maa_w1` is [C, 5 · rank]).
    pub lora_mix: usize,
    /// Rank of the decay adapter (`time_decay_w1` is [C, rank]).
    pub lora_decay: usize,
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
        let lora_mix = adapter_rank(src, "blocks.0.att.time_maa_w1", n_embd, 5)?;
        let lora_decay = adapter_rank(src, "blocks.0.att.time_decay_w1", n_embd, 1)?;
        let config = Config {
            n_layer,
            n_embd,
            head_size,
            dim_ffn,
            vocab_size,
            lora_mix,
            lora_decay,
        };
        // The state must be addressable on this target (32-bit microcontrollers included).
        config
            .state_floats()?
            .checked_mul(4)
            .ok_or(Error::OutOfRange)?;
        Ok(config)
    }

    /// Number of heads, `n_embd / head_size`.
    pub fn n_head(&self) -> usize {
        self.n_embd / self.head_size
    }

    /// State floats per layer: att shift (C), WKV (H·N·N = C·N), ffn shift (C). Saturates
    /// instead of overflowing (a saturated size then fails every buffer check).
    pub fn layer_state_floats(&self) -> usize {
        self.n_embd.saturating_mul(self.head_size.saturating_add(2))
    }

    /// State floats for the whole model, or [`Error::OutOfRange`] if that overflows `usize`.
    pub fn state_floats(&self) -> Result<usize> {
        self.n_embd
            .checked_mul(self.head_size.checked_add(2).ok_or(Error::OutOfRange)?)
            .and_then(|per_layer| per_layer.checked_mul(self.n_layer))
            .ok_or(Error::OutOfRange)
    }
}

/// The hyperparameters every Finch-family file (RWKV-6, GoldFinch) stores as
/// `goldcrest.<arch>.*` keys, each positive and at most `MAX_DIM`, with `n_embd` a multiple of
/// `head_size`.
pub(crate) struct FinchDims {
    pub(crate) n_layer: usize,
    pub(crate) n_embd: usize,
    pub(crate) head_size: usize,
    pub(crate) dim_ffn: usize,
    pub(crate) vocab_size: usize,
}

impl FinchDims {
    /// Checks the header of `src` (its `goldcrest.arch` must be `arch`), then reads the keys.
    pub(crate) fn from_source(src: &dyn TensorSource<'_>, arch: &str) -> Result<Self> {
        check_header(src, arch)?;
        let mut buf = NameBuf::new();
        let mut key = |k: &str| {
            let name = format_name(&mut buf, format_args!("goldcrest.{arch}.{k}"));
            let v = metadata_usize(src, name)?;
            if v > MAX_DIM {
                return Err(Error::BadMetadata {
                    key: Name::new(name),
                });
            }
            Ok(v)
        };
        let (n_layer, n_embd, head_size) = (key("n_layer")?, key("n_embd")?, key("head_size")?);
        let (dim_ffn, vocab_size) = (key("dim_ffn")?, key("vocab_size")?);
        if n_embd % head_size != 0 {
            let mut buf = NameBuf::new();
            return Err(Error::BadMetadata {
                key: Name::new(format_name(
                    &mut buf,
                    format_args!("goldcrest.{arch}.head_size"),
                )),
            });
        }
        Ok(FinchDims {
            n_layer,
            n_embd,
            head_size,
            dim_ffn,
            vocab_size,
        })
    }
}

/// The rank of a low-rank adapter from its first matrix `name`, `[n_embd, parts·rank]`
/// (`parts` adapters side by side), at most `MAX_DIM`.
pub(crate) fn adapter_rank(
    src: &dyn TensorSource<'_>,
    name: &str,
    n_embd: usize,
    parts: u64,
) -> Result<usize> {
    let t = src.tensor(name)?;
    let c = n_embd as u64;
    match t.shape.dims() {
        [rows, cols] if *rows == c && *cols > 0 && cols % parts == 0 => {
            let rank = (cols / parts) as usize;
            if rank > MAX_DIM {
                return Err(Error::OutOfRange);
            }
            Ok(rank)
        }
        _ => Err(Error::ShapeMismatch {
            tensor: Name::new(name),
            expected: Shape::new(&[c, parts]).unwrap_or_default(),
            found: t.shape,
        }),
    }
}

/// Fills `layers[..n_layer]` with `load(i)` and returns that part; too short a slice is
/// [`Error::BufferTooSmall`] with the count needed.
pub(crate) fn load_layers<L>(
    layers: &mut [Option<L>],
    n_layer: usize,
    mut load: impl FnMut(usize) -> Result<L>,
) -> Result<&[Option<L>]> {
    let provided = layers.len();
    let layers = layers.get_mut(..n_layer).ok_or(Error::BufferTooSmall {
        needed: n_layer as u64,
        provided: provided as u64,
    })?;
    for (i, slot) in layers.iter_mut().enumerate() {
        *slot = Some(load(i)?);
    }
    Ok(layers)
}

/// Entry `i` of the layers [`load_layers`] filled.
pub(crate) fn loaded_layer<L>(layers: &[Option<L>], i: usize) -> Result<&L> {
    layers
        .get(i)
        .and_then(Option::as_ref)
        .ok_or(Error::OutOfRange)
}

/// Time-mix ("attention") weights of one block.
#[derive(Debug, Clone, Copy)]
pub struct TimeMix<'a> {
    /// Static token-shift mix feeding the low-rank adapter.
    pub maa_x: Vector<'a>,
    /// Static token-shift mixes for w, k, v, r, g (in that order).
    pub maa: [Vector<'a>; 5],
    /// `time_maa_w1`, [C, 5·D] stored `[in, out]`.
    pub maa_w1: Matrix<'a>,
    /// `time_maa_w2`, [5, D, C]: five `[D, C]` matrices, in order w, k, v, r, g.
    pub maa_w2: [Matrix<'a>; 5],
    /// `time_decay`: the static part of the log-log decay.
    pub decay: Vector<'a>,
    /// `time_decay_w1`, [C, D'].
    pub decay_w1: Matrix<'a>,
    /// `time_decay_w2`, [D', C].
    pub decay_w2: Matrix<'a>,
    /// `time_faaaa`, the per-head bonus `u` for the current token, [H·N], raw.
    pub bonus: Vector<'a>,
    /// Receptance, key, value and gate projections, [C, C] each.
    pub receptance: Matrix<'a>,
    /// Key projection.
    pub key: Matrix<'a>,
    /// Value projection.
    pub value: Matrix<'a>,
    /// Gate projection (SiLU applied to its output).
    pub gate: Matrix<'a>,
    /// Output projection.
    pub output: Matrix<'a>,
    /// GroupNorm `ln_x` gain.
    pub ln_x_weight: Vector<'a>,
    /// GroupNorm `ln_x` bias.
    pub ln_x_bias: Vector<'a>,
}

/// Channel-mix ("feed-forward") weights of one block.
#[derive(Debug, Clone, Copy)]
pub struct ChannelMix<'a> {
    /// Token-shift mix for the key path.
    pub maa_k: Vector<'a>,
    /// Token-shift mix for the receptance path.
    pub maa_r: Vector<'a>,
    /// [F, C].
    pub key: Matrix<'a>,
    /// [C, C].
    pub receptance: Matrix<'a>,
    /// [C, F].
    pub value: Matrix<'a>,
}

/// All weights of one block.
#[derive(Debug, Clone, Copy)]
pub struct Layer<'a> {
    /// LayerNorm before the time mix.
    pub ln1: (Vector<'a>, Vector<'a>),
    /// LayerNorm before the channel mix.
    pub ln2: (Vector<'a>, Vector<'a>),
    /// Time mix.
    pub att: TimeMix<'a>,
    /// Channel mix.
    pub ffn: ChannelMix<'a>,
}

/// Every tensor name a block has, after `blocks.N.` (strict loading rejects anything else).
const LAYER_TENSORS: [&str; 28] = [
    "ln1.weight",
    "ln1.bias",
    "ln2.weight",
    "ln2.bias",
    "att.time_maa_x",
    "att.time_maa_w",
    "att.time_maa_k",
    "att.time_maa_v",
    "att.time_maa_r",
    "att.time_maa_g",
    "att.time_maa_w1",
    "att.time_maa_w2",
    "att.time_decay",
    "att.time_decay_w1",
    "att.time_decay_w2",
    "att.time_faaaa",
    "att.receptance.weight",
    "att.key.weight",
    "att.value.weight",
    "att.gate.weight",
    "att.output.weight",
    "att.ln_x.weight",
    "att.ln_x.bias",
    "ffn.time_maa_k",
    "ffn.time_maa_r",
    "ffn.key.weight",
    "ffn.receptance.weight",
    "ffn.value.weight",
];

/// Tensor names outside the blocks.
const GLOBAL_TENSORS: [&str; 7] = [
    "emb.weight",
    "blocks.0.ln0.weight",
    "blocks.0.ln0.bias",
    "ln_out.weight",
    "ln_out.bias",
    "head.weight",
    // An embedded tokenizer (goldcrest file convention) is not a weight but is allowed.
    "tokenizer",
];

fn is_known_tensor(name: &str, n_layer: usize) -> bool {
    if GLOBAL_TENSORS.contains(&name) {
        return true;
    }
    let Some(rest) = name.strip_prefix("blocks.") else {
        return false;
    };
    let Some((index, leaf)) = rest.split_once('.') else {
        return false;
    };
    let canonical = !index.is_empty()
        && index.bytes().all(|b| b.is_ascii_digit())
        && (index == "0" || !index.starts_with('0'));
    canonical && index.parse::<usize>().is_ok_and(|i| i < n_layer) && LAYER_TENSORS.contains(&leaf)
}

/// The model's weights: views into the source's bytes, all resolved and checked once by
/// [`Weights::load`], so a forward pass does no name lookups.
///
/// The per-block views live in a caller-provided slice of `n_layer` entries (about 1 KiB each
/// on 64-bit targets), so the struct has a fixed small size whatever the depth of the model:
/// `[None; 3]` on a microcontroller's stack, `vec![None; config.n_layer]` on a host.
#[derive(Clone, Copy)]
pub struct Weights<'w, 'a> {
    config: Config,
    layers: &'w [Option<Layer<'a>>],
    /// Token embeddings [V, C] (any matrix format; one row is dequantized per token).
    pub emb: Matrix<'a>,
    /// `ln0`, applied once to the embedding.
    pub ln0: (Vector<'a>, Vector<'a>),
    /// Final LayerNorm.
    pub ln_out: (Vector<'a>, Vector<'a>),
    /// Output head [V, C].
    pub head: Matrix<'a>,
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
    /// Loads and checks every tensor: each must be present with its exact shape and an
    /// accepted format, and no unknown tensor may be present (the error names the tensor).
    /// `layers` must hold at least `n_layer` entries; their previous contents are replaced.
    pub fn load(
        source: &dyn TensorSource<'a>,
        layers: &'w mut [Option<Layer<'a>>],
    ) -> Result<Self> {
        let config = Config::from_source(source)?;
        let c = config.n_embd as u64;
        let layers = load_layers(layers, config.n_layer, |i| load_layer(source, &config, i))?;
        let vector = |name: &str| source.tensor(name)?.vector(name, &[c]);
        let emb =
            source
                .tensor("emb.weight")?
                .matrix("emb.weight", config.vocab_size, config.n_embd)?;
        let head = source.tensor("head.weight")?.matrix(
            "head.weight",
            config.vocab_size,
            config.n_embd,
        )?;
        let ln0 = (vector("blocks.0.ln0.weight")?, vector("blocks.0.ln0.bias")?);
        let ln_out = (vector("ln_out.weight")?, vector("ln_out.bias")?);
        let bytes = known_tensor_bytes(source, |name| is_known_tensor(name, config.n_layer))?;
        Ok(Weights {
            config,
            layers,
            emb,
            ln0,
            ln_out,
            head,
            bytes,
        })
    }

    /// The configuration the weights were checked against.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Views of block `i`'s weights.
    pub fn layer(&self, i: usize) -> Result<&Layer<'a>> {
        loaded_layer(self.layers, i)
    }
}

/// Resolves and checks block `i`'s tensors.
fn load_layer<'a>(src: &dyn TensorSource<'a>, cfg: &Config, i: usize) -> Result<Layer<'a>> {
    let (c, n, h) = (cfg.n_embd, cfg.head_size, cfg.n_head());
    let (f, dm, dd) = (cfg.dim_ffn, cfg.lora_mix, cfg.lora_decay);
    let get = |leaf: &str| block_tensor(src, i, leaf);
    let vec_c = |leaf: &str| -> Result<Vector<'a>> {
        let (t, name) = get(leaf)?;
        t.vector(&name, &[c as u64])
    };
    let ln1 = (vec_c("ln1.weight")?, vec_c("ln1.bias")?);
    let ln2 = (vec_c("ln2.weight")?, vec_c("ln2.bias")?);
    let mix = |leaf: &str| -> Result<Vector<'a>> {
        let (t, name) = get(leaf)?;
        t.vector(&name, &[1, 1, c as u64])
    };
    let maa_x = mix("att.time_maa_x")?;
    let maa = [
        mix("att.time_maa_w")?,
        mix("att.time_maa_k")?,
        mix("att.time_maa_v")?,
        mix("att.time_maa_r")?,
        mix("att.time_maa_g")?,
    ];
    let decay = mix("att.time_decay")?;
    let lora = |leaf: &str, rows: usize, cols: usize| -> Result<Matrix<'a>> {
        let (t, name) = get(leaf)?;
        t.float_matrix(&name, rows, cols)
    };
    let maa_w1 = lora("att.time_maa_w1", c, 5 * dm)?;
    let decay_w1 = lora("att.time_decay_w1", c, dd)?;
    let decay_w2 = lora("att.time_decay_w2", dd, c)?;
    let maa_w2 = {
        let (t, name) = get("att.time_maa_w2")?;
        stacked_adapters::<5>(t, &name, dm, c)?
    };
    let bonus = {
        let (t, name) = get("att.time_faaaa")?;
        t.vector(&name, &[h as u64, n as u64])?
    };
    let linear = |leaf: &str, rows: usize, cols: usize| -> Result<Matrix<'a>> {
        let (t, name) = get(leaf)?;
        t.matrix(&name, rows, cols)
    };
    let att = TimeMix {
        maa_x,
        maa,
        maa_w1,
        maa_w2,
        decay,
        decay_w1,
        decay_w2,
        bonus,
        receptance: linear("att.receptance.weight", c, c)?,
        key: linear("att.key.weight", c, c)?,
        value: linear("att.value.weight", c, c)?,
        gate: linear("att.gate.weight", c, c)?,
        output: linear("att.output.weight", c, c)?,
        ln_x_weight: vec_c("att.ln_x.weight")?,
        ln_x_bias: vec_c("att.ln_x.bias")?,
    };
    let ffn = load_channel_mix(src, i, c, f)?;
    Ok(Layer { ln1, ln2, att, ffn })
}

/// Tensor `blocks.{i}.{leaf}` and its full name (for error messages).
pub(crate) fn block_tensor<'a>(
    src: &dyn TensorSource<'a>,
    i: usize,
    leaf: &str,
) -> Result<(TensorRef<'a>, NameBuf)> {
    let mut buf = NameBuf::new();
    let tensor = src.tensor(format_name(&mut buf, format_args!("blocks.{i}.{leaf}")))?;
    Ok((tensor, buf))
}

/// A `[P, rank, c]` float tensor as P `[rank, c]` adapter matrices (`time_maa_w2`).
pub(crate) fn stacked_adapters<'a, const P: usize>(
    t: TensorRef<'a>,
    name: &str,
    rank: usize,
    c: usize,
) -> Result<[Matrix<'a>; P]> {
    t.expect_shape(name, &[P as u64, rank as u64, c as u64])?;
    let all = TensorRef {
        shape: Shape::new(&[(P * rank) as u64, c as u64]).unwrap_or_default(),
        ..t
    }
    .float_matrix(name, P * rank, c)?;
    let part = all.row_bytes() * rank;
    let mut out = [all; P];
    for (k, m) in out.iter_mut().enumerate() {
        *m = Matrix::new(
            name,
            all.format(),
            rank,
            c,
            &all.data()[k * part..(k + 1) * part],
        )?;
    }
    Ok(out)
}

/// Block `i`'s `ffn.*` tensors (width `c`, hidden width `f`), shared with GoldFinch.
pub(crate) fn load_channel_mix<'a>(
    src: &dyn TensorSource<'a>,
    i: usize,
    c: usize,
    f: usize,
) -> Result<ChannelMix<'a>> {
    let get = |leaf: &str| block_tensor(src, i, leaf);
    let (t, name) = get("ffn.time_maa_k")?;
    let maa_k = t.vector(&name, &[1, 1, c as u64])?;
    let (t, name) = get("ffn.time_maa_r")?;
    let maa_r = t.vector(&name, &[1, 1, c as u64])?;
    let (t, name) = get("ffn.key.weight")?;
    let key = t.matrix(&name, f, c)?;
    let (t, name) = get("ffn.receptance.weight")?;
    let receptance = t.matrix(&name, c, c)?;
    let (t, name) = get("ffn.value.weight")?;
    let value = t.matrix(&name, c, f)?;
    Ok(ChannelMix {
        maa_k,
        maa_r,
        key,
        receptance,
        value,
    })
}

/// The recurrent state, a plain view over caller memory: per layer, in this order,
/// the time-mix shift (C floats: the post-ln1 value of the last token), the WKV matrices
/// (H × N × N floats, `[head][key][value]`, the layout of `rwkv` 0.8.32 and llama.cpp), and the
/// channel-mix shift (C floats: the post-ln2 value of the last token). All zero at the start.
#[derive(Debug)]
pub struct State<'s> {
    config: Config,
    data: &'s mut [f32],
}

/// Magic bytes at the start of a saved state.
pub const STATE_MAGIC: [u8; 8] = *b"GCSTATE\0";
/// Version of the saved-state format written by [`State::save`].
pub const STATE_VERSION: u16 = 1;
/// Layout id of the saved payload (see [`State`]); a future layout gets a new id.
pub const STATE_LAYOUT: u16 = 1;
const STATE_HEADER: usize = 40;

impl<'s> State<'s> {
    /// A state over exactly `config.state_floats()` floats of `data`, which it zeroes.
    pub fn new(config: &Config, data: &'s mut [f32]) -> Result<Self> {
        let need = config.state_floats()?;
        let provided = data.len() as u64;
        let data = data.get_mut(..need).ok_or(Error::BufferTooSmall {
            needed: need as u64,
            provided,
        })?;
        data.fill(0.0);
        Ok(State {
            config: *config,
            data,
        })
    }

    /// A state carved from `arena` (see [`Rwkv6::memory_plan`] for its size).
    pub fn carve(config: &Config, arena: &mut Arena<'s>) -> Result<Self> {
        let data = arena.take::<f32>(config.state_floats()?)?;
        Ok(State {
            config: *config,
            data,
        })
    }

    /// Back to the start of a sequence (all zeros).
    pub fn reset(&mut self) {
        self.data.fill(0.0);
    }

    /// Copies `other` (same configuration) into this state, e.g. to fork a conversation.
    pub fn copy_from(&mut self, other: &State<'_>) -> Result<()> {
        if other.config != self.config {
            return Err(Error::LengthMismatch {
                expected: self.data.len() as u64,
                found: other.data.len() as u64,
            });
        }
        self.data.copy_from_slice(other.data);
        Ok(())
    }

    /// The raw floats in the layout described on [`State`].
    pub fn as_slice(&self) -> &[f32] {
        self.data
    }

    /// The configuration the state is laid out for.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Layer `i`'s (att shift, WKV, ffn shift).
    fn layer_mut(&mut self, i: usize) -> Result<(&mut [f32], &mut [f32], &mut [f32])> {
        let c = self.config.n_embd;
        let per = self.config.layer_state_floats();
        let layer = self
            .data
            .get_mut(i * per..(i + 1) * per)
            .ok_or(Error::OutOfRange)?;
        let (att_shift, rest) = layer.split_at_mut(c);
        let (wkv, ffn_shift) = rest.split_at_mut(per - 2 * c);
        Ok((att_shift, wkv, ffn_shift))
    }

    /// Bytes [`State::save`] writes for `config`.
    pub fn saved_len(config: &Config) -> Result<usize> {
        config
            .state_floats()?
            .checked_mul(4)
            .and_then(|p| p.checked_add(STATE_HEADER + 4))
            .ok_or(Error::OutOfRange)
    }

    /// Writes the state to `out` (little-endian, versioned, CRC-32 checked) and returns the
    /// bytes written, [`State::saved_len`]:
    ///
    /// | bytes | content |
    /// |---|---|
    /// | 0..8 | `GCSTATE\0` |
    /// | 8..10 | format version (u16, 1) |
    /// | 10..12 | payload layout (u16, 1 = per layer: att shift, WKV [h][k][v], ffn shift) |
    /// | 12..20 | architecture, `rwkv6` padded with zeros |
    /// | 20..32 | n_layer, n_embd, head_size (u32 each) |
    /// | 32..40 | payload floats (u64) |
    /// | 40.. | payload, f32 |
    /// | last 4 | CRC-32 (IEEE) of everything before it |
    pub fn save(&self, out: &mut [u8]) -> Result<usize> {
        let len = Self::saved_len(&self.config)?;
        let provided = out.len() as u64;
        let mut rest = out.get_mut(..len).ok_or(Error::BufferTooSmall {
            needed: len as u64,
            provided,
        })?;
        self.save_with(&mut |bytes| {
            let (now, later) = core::mem::take(&mut rest).split_at_mut(bytes.len());
            now.copy_from_slice(bytes);
            rest = later;
            Ok(())
        })?;
        Ok(len)
    }

    /// Streams the same bytes as [`State::save`] to `write` in pieces of at most 256 bytes, so
    /// firmware can program flash page by page without a second state-sized buffer.
    pub fn save_with(&self, write: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let header = self.header();
        let mut crc = Crc32::new();
        crc.update(&header);
        write(&header)?;
        let mut buf = [0u8; 256];
        for floats in self.data.chunks(64) {
            let piece = &mut buf[..4 * floats.len()];
            for (dst, v) in piece.chunks_exact_mut(4).zip(floats) {
                dst.copy_from_slice(&v.to_le_bytes());
            }
            crc.update(piece);
            write(piece)?;
        }
        write(&crc.finish().to_le_bytes())
    }

    fn header(&self) -> [u8; STATE_HEADER] {
        let mut h = [0u8; STATE_HEADER];
        h[0..8].copy_from_slice(&STATE_MAGIC);
        h[8..10].copy_from_slice(&STATE_VERSION.to_le_bytes());
        h[10..12].copy_from_slice(&STATE_LAYOUT.to_le_bytes());
        h[12..12 + ARCH.len()].copy_from_slice(ARCH.as_bytes());
        let dims = [
            self.config.n_layer,
            self.config.n_embd,
            self.config.head_size,
        ];
        for (k, d) in dims.iter().enumerate() {
            h[20 + 4 * k..24 + 4 * k].copy_from_slice(&(*d as u32).to_le_bytes());
        }
        h[32..40].copy_from_slice(&(self.data.len() as u64).to_le_bytes());
        h
    }

    /// Replaces the state with one saved by [`State::save`]. Checks the magic, version,
    /// architecture and dimensions, the checksum and that every value is finite before
    /// touching the current state, which is left unchanged on error.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let len = Self::saved_len(&self.config)?;
        check_saved_prefix(
            bytes,
            STATE_HEADER,
            &STATE_MAGIC,
            STATE_VERSION,
            "state magic",
        )?;
        let expected = self.header();
        if bytes[10..STATE_HEADER] != expected[10..] {
            return Err(Error::BadMetadata {
                key: Name::new("state layout, architecture or dimensions"),
            });
        }
        if bytes.len() != len {
            return Err(Error::Truncated {
                needed: len as u64,
                available: bytes.len() as u64,
            });
        }
        let stored = u32::from_le_bytes([
            bytes[len - 4],
            bytes[len - 3],
            bytes[len - 2],
            bytes[len - 1],
        ]);
        if crc32(&bytes[..len - 4]) != stored {
            return Err(Error::Checksum);
        }
        let payload = &bytes[STATE_HEADER..len - 4];
        let value = |b: &[u8]| f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if !payload.chunks_exact(4).all(|b| value(b).is_finite()) {
            return Err(Error::NonFinite);
        }
        for (dst, b) in self.data.iter_mut().zip(payload.chunks_exact(4)) {
            *dst = value(b);
        }
        Ok(())
    }
}

/// Checks the start every saved form shares (RWKV-6 state, decoder KV cache, GoldFinch
/// context): room for the `header` bytes and the trailing CRC-32, the 8 magic bytes, and the
/// u16 format version at offset 8.
pub(crate) fn check_saved_prefix(
    bytes: &[u8],
    header: usize,
    magic: &[u8; 8],
    version: u16,
    what: &'static str,
) -> Result<()> {
    if bytes.len() < header + 4 {
        return Err(Error::Truncated {
            needed: (header + 4) as u64,
            available: bytes.len() as u64,
        });
    }
    if bytes[0..8] != *magic {
        return Err(Error::BadMetadata {
            key: Name::new(what),
        });
    }
    let found = u16::from_le_bytes([bytes[8], bytes[9]]);
    if found != version {
        return Err(Error::UnsupportedVersion {
            found_major: found,
            supported_major: version,
        });
    }
    Ok(())
}

/// CRC-32 (IEEE 802.3, reflected, as zlib) of `bytes`.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = Crc32::new();
    crc.update(bytes);
    crc.finish()
}

/// Incremental CRC-32 (IEEE, as zlib) with a half-byte table: small in flash, fast enough for
/// saving a state.
#[derive(Debug, Clone, Copy)]
pub struct Crc32(u32);

impl Default for Crc32 {
    fn default() -> Self {
        Self::new()
    }
}

impl Crc32 {
    const TABLE: [u32; 16] = {
        let mut t = [0u32; 16];
        let mut i = 0;
        while i < 16 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 4 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };

    /// A checksum over no bytes yet.
    pub const fn new() -> Self {
        Crc32(!0)
    }

    /// Adds `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        let mut crc = self.0;
        for &b in bytes {
            crc = Self::TABLE[((crc ^ b as u32) & 15) as usize] ^ (crc >> 4);
            crc = Self::TABLE[((crc ^ (b as u32 >> 4)) & 15) as usize] ^ (crc >> 4);
        }
        self.0 = crc;
    }

    /// The checksum of everything added.
    pub fn finish(&self) -> u32 {
        !self.0
    }
}

/// Working buffers for a forward pass over up to `max_tokens` tokens, token-major.
struct Buffers<C: Carve> {
    /// Residual stream [T, C].
    x: C::Out<f32>,
    /// LayerNorm output [T, C].
    xx: C::Out<f32>,
    /// Token shift `previous - current` [T, C].
    sx: C::Out<f32>,
    /// Mixed inputs for w, k, v, r, g [T, C] each.
    mixed: [C::Out<f32>; 5],
    /// Mix adapter hidden values [T, 5·D].
    lora_mix: C::Out<f32>,
    /// Decay adapter hidden values [T, D'].
    lora_decay: C::Out<f32>,
    /// Receptance, key, value, gate, decay [T, C] each.
    r: C::Out<f32>,
    k: C::Out<f32>,
    v: C::Out<f32>,
    g: C::Out<f32>,
    decay: C::Out<f32>,
    /// WKV output [T, C].
    y: C::Out<f32>,
    /// Output of a projection back to C [T, C].
    out: C::Out<f32>,
    /// Channel-mix hidden [T, F].
    hidden: C::Out<f32>,
}

fn carve_buffers<C: Carve>(c: &mut C, cfg: &Config, max_tokens: usize) -> Result<Buffers<C>> {
    let n = |width: usize| max_tokens.checked_mul(width).ok_or(Error::OutOfRange);
    let tc = n(cfg.n_embd)?;
    Ok(Buffers {
        x: c.take(tc)?,
        xx: c.take(tc)?,
        sx: c.take(tc)?,
        mixed: [
            c.take(tc)?,
            c.take(tc)?,
            c.take(tc)?,
            c.take(tc)?,
            c.take(tc)?,
        ],
        lora_mix: c.take(n(5 * cfg.lora_mix)?)?,
        lora_decay: c.take(n(cfg.lora_decay)?)?,
        r: c.take(tc)?,
        k: c.take(tc)?,
        v: c.take(tc)?,
        g: c.take(tc)?,
        decay: c.take(tc)?,
        y: c.take(tc)?,
        out: c.take(tc)?,
        hidden: c.take(n(cfg.dim_ffn)?)?,
    })
}

/// Scratch memory for forward passes of up to `max_tokens` tokens per chunk.
pub struct Scratch<'s> {
    config: Config,
    max_tokens: usize,
    b: Buffers<Arena<'s>>,
}

impl core::fmt::Debug for Scratch<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Scratch")
            .field("max_tokens", &self.max_tokens)
            .finish_non_exhaustive()
    }
}

impl<'s> Scratch<'s> {
    /// Scratch for chunks of up to `max_tokens` tokens, carved from `arena`.
    pub fn carve(config: &Config, max_tokens: usize, arena: &mut Arena<'s>) -> Result<Self> {
        if max_tokens == 0 {
            return Err(Error::OutOfRange);
        }
        Ok(Scratch {
            config: *config,
            max_tokens,
            b: carve_buffers(arena, config, max_tokens)?,
        })
    }

    /// Most tokens one internal chunk processes.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }
}

/// Which logits a forward pass writes.
enum Logits<'o> {
    /// None (an inner prefill chunk).
    Skip,
    /// Only after the last token, [V].
    Last(&'o mut [f32]),
    /// After every token, [T, V].
    All(&'o mut [f32]),
}

/// An RWKV-6 model ready to run: weights plus the kernels to run them with.
#[derive(Debug, Clone, Copy)]
pub struct Rwkv6<'w, 'a> {
    weights: Weights<'w, 'a>,
    kernels: Kernels,
}

impl<'w, 'a> Rwkv6<'w, 'a> {
    /// Loads (strictly) the model in `source`; `layers` holds the per-block weight views
    /// (at least `n_layer` entries, see [`Weights`]).
    pub fn load(
        source: &dyn TensorSource<'a>,
        layers: &'w mut [Option<Layer<'a>>],
        kernels: Kernels,
    ) -> Result<Self> {
        Ok(Rwkv6 {
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

    /// Exact bytes of weights, state and scratch for chunks of up to `max_tokens` tokens
    /// (use 1 for decode only), with state and scratch each in its own aligned buffer.
    pub fn memory_plan(&self, max_tokens: usize) -> Result<MemoryPlan> {
        Self::plan(self.config(), max_tokens, self.weights.bytes)
    }

    /// [`Rwkv6::memory_plan`] from a configuration alone.
    pub fn plan(config: &Config, max_tokens: usize, weight_bytes: usize) -> Result<MemoryPlan> {
        let mut state = Planner::new();
        state.take::<f32>(config.state_floats()?)?;
        let mut scratch = Planner::new();
        carve_buffers(&mut scratch, config, max_tokens)?;
        Ok(MemoryPlan {
            weight_bytes,
            state_bytes: state.bytes(),
            scratch_bytes: scratch.bytes(),
        })
    }

    /// Decodes one token: advances `state` and writes the next-token logits ([V]).
    pub fn step(
        &self,
        state: &mut State,
        scratch: &mut Scratch,
        token: u32,
        logits: &mut [f32],
    ) -> Result<()> {
        self.check(state, scratch)?;
        self.expect_len(logits.len(), self.config().vocab_size)?;
        self.forward(state, scratch, &[token], Logits::Last(logits))
    }

    /// Runs a prompt through the model in chunks of `scratch.max_tokens()` tokens, each chunk
    /// with matrix-matrix products. `logits` is either [V] (logits after the last token) or
    /// [T, V] (after every token). Same results as calling [`Rwkv6::step`] per token.
    pub fn prefill(
        &self,
        state: &mut State,
        scratch: &mut Scratch,
        tokens: &[u32],
        logits: &mut [f32],
    ) -> Result<()> {
        self.check(state, scratch)?;
        let v = self.config().vocab_size;
        if tokens.is_empty() {
            return Err(Error::OutOfRange);
        }
        let all = tokens.len().checked_mul(v).ok_or(Error::OutOfRange)?;
        let want_all = logits.len() == all && all != v;
        if !want_all {
            self.expect_len(logits.len(), v)?;
        }
        let chunks = tokens.chunks(scratch.max_tokens);
        let n_chunks = chunks.len();
        let mut rest = logits;
        for (i, chunk) in chunks.enumerate() {
            let out = if want_all {
                let (now, later) = core::mem::take(&mut rest).split_at_mut(chunk.len() * v);
                rest = later;
                Logits::All(now)
            } else if i + 1 == n_chunks {
                Logits::Last(core::mem::take(&mut rest))
            } else {
                Logits::Skip
            };
            self.forward(state, scratch, chunk, out)?;
        }
        Ok(())
    }

    fn expect_len(&self, found: usize, expected: usize) -> Result<()> {
        if found == expected {
            Ok(())
        } else {
            Err(Error::LengthMismatch {
                expected: expected as u64,
                found: found as u64,
            })
        }
    }

    fn check(&self, state: &State, scratch: &Scratch) -> Result<()> {
        if state.config != *self.config() || scratch.config != *self.config() {
            return Err(Error::LengthMismatch {
                expected: self.config().state_floats()? as u64,
                found: state.data.len() as u64,
            });
        }
        Ok(())
    }

    /// One chunk of `tokens.len() <= max_tokens` tokens.
    fn forward(
        &self,
        state: &mut State,
        scratch: &mut Scratch,
        tokens: &[u32],
        logits: Logits,
    ) -> Result<()> {
        let cfg = *self.config();
        let (t_n, c) = (tokens.len(), cfg.n_embd);
        let w = &self.weights;
        let b = &mut scratch.b;

        // Embedding, then ln0 (once, before block 0).
        for (t, &token) in tokens.iter().enumerate() {
            let token = token as usize;
            if token >= cfg.vocab_size {
                return Err(Error::OutOfRange);
            }
            let x = &mut b.x[t * c..(t + 1) * c];
            let row = w.emb.row(token).ok_or(Error::OutOfRange)?;
            quant::dequantize_row(w.emb.format(), row, c, x)?;
            ops::layer_norm(x, w.ln0.0, w.ln0.1, LAYER_NORM_EPS)?;
        }

        for i in 0..cfg.n_layer {
            let layer = w.layer(i)?;
            let (att_shift, wkv, ffn_shift) = state.layer_mut(i)?;
            self.time_mix(layer, att_shift, wkv, b, t_n)?;
            self.channel_mix(layer, ffn_shift, b, t_n)?;
        }

        // Final LayerNorm and head, only for the positions whose logits are wanted.
        let (first, out) = match logits {
            Logits::Skip => return Ok(()),
            Logits::Last(out) => (t_n - 1, out),
            Logits::All(out) => (0, out),
        };
        let rows = t_n - first;
        let xx = &mut b.xx[..rows * c];
        xx.copy_from_slice(&b.x[first * c..t_n * c]);
        for row in xx.chunks_exact_mut(c) {
            ops::layer_norm(row, w.ln_out.0, w.ln_out.1, LAYER_NORM_EPS)?;
        }
        self.kernels.gemm(&w.head, xx, rows, out)
    }

    /// `x += TimeMix(LN(x; ln1))` for `t_n` tokens.
    fn time_mix(
        &self,
        layer: &Layer,
        shift: &mut [f32],
        wkv: &mut [f32],
        b: &mut Buffers<Arena>,
        t_n: usize,
    ) -> Result<()> {
        let cfg = self.config();
        let (c, n, dd) = (cfg.n_embd, cfg.head_size, cfg.lora_decay);
        let att = &layer.att;
        let tc = t_n * c;

        // Data-dependent token shift: the adapter's five mixes come in the order w, k, v, r, g.
        finch_time_shift!(att, cfg.lora_mix, layer.ln1, shift, b, tc)?;
        let [xw, xk, xv, xr, xg] = &b.mixed;

        let kern = &self.kernels;
        kern.gemm(&att.receptance, &xr[..tc], t_n, &mut b.r[..tc])?;
        kern.gemm(&att.key, &xk[..tc], t_n, &mut b.k[..tc])?;
        kern.gemm(&att.value, &xv[..tc], t_n, &mut b.v[..tc])?;
        kern.gemm(&att.gate, &xg[..tc], t_n, &mut b.g[..tc])?;
        ops::map_in_place(&mut b.g[..tc], ops::silu);

        // Data-dependent decay, kept in f32: exp(-exp(time_decay + adapter)).
        for t in 0..t_n {
            let row = t * c..(t + 1) * c;
            let hidden = &mut b.lora_decay[t * dd..(t + 1) * dd];
            let decay = &mut b.decay[row.clone()];
            data_dependent_decay(
                &xw[row],
                att.decay,
                &att.decay_w1,
                &att.decay_w2,
                hidden,
                decay,
            )?;
        }

        // WKV recurrence, per head with state S[key i][value j]:
        //   y[j] = sum_i r[i] * (u[i] * k[i] * v[j] + S[i][j])
        //   S[i][j] = decay[i] * S[i][j] + k[i] * v[j]
        for t in 0..t_n {
            let row = t * c..(t + 1) * c;
            wkv_step(
                WkvInputs {
                    r: &b.r[row.clone()],
                    k: &b.k[row.clone()],
                    v: &b.v[row.clone()],
                    decay: &b.decay[row.clone()],
                    bonus: Some(att.bonus),
                },
                n,
                wkv,
                &mut b.y[row],
            );
        }

        // GroupNorm per head, gate, output projection, residual.
        let y = &mut b.y[..tc];
        for (y_t, g_t) in y.chunks_exact_mut(c).zip(b.g.chunks_exact(c)) {
            ops::group_norm(
                y_t,
                cfg.n_head(),
                att.ln_x_weight,
                att.ln_x_bias,
                GROUP_NORM_EPS,
            )?;
            for (yj, gj) in y_t.iter_mut().zip(g_t) {
                *yj *= gj;
            }
        }
        kern.gemm(&att.output, y, t_n, &mut b.out[..tc])?;
        for (xj, oj) in b.x[..tc].iter_mut().zip(&b.out[..tc]) {
            *xj += oj;
        }
        Ok(())
    }

    /// `x += ChannelMix(LN(x; ln2))` for `t_n` tokens.
    fn channel_mix(
        &self,
        layer: &Layer,
        shift: &mut [f32],
        b: &mut Buffers<Arena>,
        t_n: usize,
    ) -> Result<()> {
        let tc = t_n * self.config().n_embd;
        let [_, xk, _, xr, _] = &mut b.mixed;
        channel_mix(
            &self.kernels,
            &layer.ffn,
            layer.ln2,
            shift,
            &mut b.x[..tc],
            ChannelMixBuffers {
                xx: &mut b.xx[..tc],
                sx: &mut b.sx[..tc],
                xk: &mut xk[..tc],
                xr: &mut xr[..tc],
                hidden: &mut b.hidden[..t_n * self.config().dim_ffn],
                out: &mut b.out[..tc],
                r: &mut b.r[..tc],
            },
        )
    }
}

/// Working slices of [`channel_mix`], each `[T, width]` for the same T.
pub(crate) struct ChannelMixBuffers<'b> {
    pub(crate) xx: &'b mut [f32],
    pub(crate) sx: &'b mut [f32],
    pub(crate) xk: &'b mut [f32],
    pub(crate) xr: &'b mut [f32],
    pub(crate) hidden: &'b mut [f32],
    pub(crate) out: &'b mut [f32],
    pub(crate) r: &'b mut [f32],
}

/// RWKV-6 channel mix, `x += sigmoid(W_r x_r) * (W_v relu(W_k x_k)^2)` over the token-shifted
/// LN(x; ln2), for every token row of `x` (shared by RWKV-6 and GoldFinch).
pub(crate) fn channel_mix(
    kern: &Kernels,
    ffn: &ChannelMix,
    ln2: (Vector, Vector),
    shift: &mut [f32],
    x: &mut [f32],
    b: ChannelMixBuffers,
) -> Result<()> {
    let c = shift.len();
    let t_n = x.len() / c;
    norm_and_shift(x, b.xx, b.sx, ln2, shift)?;
    shift_mix(b.xx, b.sx, ffn.maa_k, None, &mut [], b.xk)?;
    shift_mix(b.xx, b.sx, ffn.maa_r, None, &mut [], b.xr)?;
    kern.gemm(&ffn.key, b.xk, t_n, b.hidden)?;
    ops::map_in_place(b.hidden, ops::relu_squared);
    kern.gemm(&ffn.value, b.hidden, t_n, b.out)?;
    kern.gemm(&ffn.receptance, b.xr, t_n, b.r)?;
    for ((xj, oj), rj) in x.iter_mut().zip(&*b.out).zip(&*b.r) {
        *xj += ops::sigmoid(*rj) * oj;
    }
    Ok(())
}

/// The hidden values of a data-dependent token-shift adapter for one token:
/// `lora = tanh((xx + sx * maa_x) @ w1)`, using `base` ([C]) as room.
pub(crate) fn mix_adapter_hidden(
    xx: &[f32],
    sx: &[f32],
    maa_x: Vector,
    w1: &Matrix,
    base: &mut [f32],
    lora: &mut [f32],
) -> Result<()> {
    for (j, b) in base.iter_mut().enumerate() {
        *b = xx[j] + sx[j] * maa_x.get(j);
    }
    ops::vecmat(base, w1, lora)?;
    ops::map_in_place(lora, libm::tanhf);
    Ok(())
}

/// `dst = xx + sx * (maa + lora_hidden @ w2)` row by row (the adapter term only when given,
/// one token then: `correction` is [C] room). Rows are whole multiples of `maa`'s length.
pub(crate) fn shift_mix(
    xx: &[f32],
    sx: &[f32],
    maa: Vector,
    adapter: Option<(&[f32], &Matrix)>,
    correction: &mut [f32],
    dst: &mut [f32],
) -> Result<()> {
    let c = maa.len();
    match adapter {
        Some((hidden, w2)) => {
            ops::vecmat(hidden, w2, correction)?;
            for j in 0..c {
                dst[j] = xx[j] + sx[j] * (maa.get(j) + correction[j]);
            }
        }
        None => {
            for (t, row) in dst.chunks_exact_mut(c).enumerate() {
                for (j, d) in row.iter_mut().enumerate() {
                    *d = xx[t * c + j] + sx[t * c + j] * maa.get(j);
                }
            }
        }
    }
    Ok(())
}

/// The weights of a Finch data-dependent token shift: a low-rank adapter of rank `rank` on
/// `xx + sx·maa_x` corrects five static mixes `maa` (in the layer's own order).
#[derive(Clone, Copy)]
pub(crate) struct ShiftWeights<'a> {
    pub(crate) maa_x: Vector<'a>,
    pub(crate) maa: [Vector<'a>; 5],
    pub(crate) w1: Matrix<'a>,
    pub(crate) w2: [Matrix<'a>; 5],
    pub(crate) rank: usize,
}

/// Working slices of [`data_dependent_shift`] for T token rows.
pub(crate) struct ShiftBuffers<'b, 's> {
    /// `LN(x)` and the token shift `previous - current`, [T, C] each.
    pub(crate) xx: &'b mut [f32],
    pub(crate) sx: &'b mut [f32],
    /// Adapter hidden values, at least [T, 5·rank].
    pub(crate) lora_mix: &'b mut [f32],
    /// Room, [T, C] each.
    pub(crate) base: &'b mut [f32],
    pub(crate) correction: &'b mut [f32],
    /// The five mixed inputs, at least [T, C] each.
    pub(crate) mixed: &'b mut [&'s mut [f32]; 5],
}

/// [`data_dependent_shift`] of a Finch time mix (`$att`, a reference to its weights) over the
/// first `$tc` values of `$buffers.x` (`$buffers`, a `&mut` to the model's scratch buffers).
/// RWKV-6's [`TimeMix`] and GoldFinch's `FinchC2Mix` name their shift weights alike (`maa_x`,
/// `maa`, `maa_w1`, `maa_w2`), and both models' scratch buffers name theirs alike (`x`, `xx`,
/// `sx`, `lora_mix`, `mixed`, with `y` and `out` lent as room): a macro, because the pairs are
/// different types, wires them once.
macro_rules! finch_time_shift {
    ($att:expr, $rank:expr, $ln:expr, $shift:expr, $buffers:expr, $tc:expr) => {{
        let (att, b, tc) = ($att, &mut *$buffers, $tc);
        $crate::models::rwkv6::data_dependent_shift(
            &$crate::models::rwkv6::ShiftWeights {
                maa_x: att.maa_x,
                maa: att.maa,
                w1: att.maa_w1,
                w2: att.maa_w2,
                rank: $rank,
            },
            $ln,
            &b.x[..tc],
            $shift,
            $crate::models::rwkv6::ShiftBuffers {
                xx: &mut b.xx[..tc],
                sx: &mut b.sx[..tc],
                lora_mix: &mut b.lora_mix[..],
                base: &mut b.y[..tc],
                correction: &mut b.out[..tc],
                mixed: &mut b.mixed,
            },
        )
    }};
}
pub(crate) use finch_time_shift;

/// The inputs of a Finch time mix over the rows of `x`: `xx = LN(x; ln)` and its token shift
/// `sx` (`shift` carries the last row across calls), then row by row the five mixes
/// `xx + sx·(maa + adapter)` into `b.mixed`.
pub(crate) fn data_dependent_shift(
    w: &ShiftWeights,
    ln: (Vector, Vector),
    x: &[f32],
    shift: &mut [f32],
    b: ShiftBuffers,
) -> Result<()> {
    let (c, dm) = (shift.len(), w.rank);
    norm_and_shift(x, b.xx, b.sx, ln, shift)?;
    for t in 0..x.len() / c {
        let row = t * c..(t + 1) * c;
        let (xx_t, sx_t) = (&b.xx[row.clone()], &b.sx[row.clone()]);
        let lora = &mut b.lora_mix[t * 5 * dm..(t + 1) * 5 * dm];
        mix_adapter_hidden(xx_t, sx_t, w.maa_x, &w.w1, &mut b.base[row.clone()], lora)?;
        for (k, mixed) in b.mixed.iter_mut().enumerate() {
            shift_mix(
                xx_t,
                sx_t,
                w.maa[k],
                Some((&lora[k * dm..(k + 1) * dm], &w.w2[k])),
                &mut b.correction[row.clone()],
                &mut mixed[row.clone()],
            )?;
        }
    }
    Ok(())
}

/// `out = tanh(x @ w1) @ w2`, a low-rank adapter; `hidden` is [rank] room.
pub(crate) fn low_rank(
    x: &[f32],
    w1: &Matrix,
    w2: &Matrix,
    hidden: &mut [f32],
    out: &mut [f32],
) -> Result<()> {
    ops::vecmat(x, w1, hidden)?;
    ops::map_in_place(hidden, libm::tanhf);
    ops::vecmat(hidden, w2, out)
}

/// Data-dependent decay of one token, kept in f32: `exp(-exp(time_decay + adapter(xw)))`.
pub(crate) fn data_dependent_decay(
    xw: &[f32],
    time_decay: Vector,
    w1: &Matrix,
    w2: &Matrix,
    hidden: &mut [f32],
    decay: &mut [f32],
) -> Result<()> {
    low_rank(xw, w1, w2, hidden, decay)?;
    for (j, d) in decay.iter_mut().enumerate() {
        *d = libm::expf(-libm::expf(time_decay.get(j) + *d));
    }
    Ok(())
}

/// One token's receptance, key, value and decay ([C] each) and the optional bonus `u`.
pub(crate) struct WkvInputs<'b, 'a> {
    pub(crate) r: &'b [f32],
    pub(crate) k: &'b [f32],
    pub(crate) v: &'b [f32],
    pub(crate) decay: &'b [f32],
    pub(crate) bonus: Option<Vector<'a>>,
}

/// One token of the WKV recurrence, per head of `n` with state S[key i][value j]:
///   y[j] = sum_i r[i] * (u[i] * k[i] * v[j] + S[i][j])    (u = 0 without a bonus)
///   S[i][j] = decay[i] * S[i][j] + k[i] * v[j]
pub(crate) fn wkv_step(x: WkvInputs, n: usize, state: &mut [f32], y: &mut [f32]) {
    for (h, s) in state.chunks_exact_mut(n * n).enumerate() {
        let head = h * n..(h + 1) * n;
        let (r, k, v) = (&x.r[head.clone()], &x.k[head.clone()], &x.v[head.clone()]);
        let decay = &x.decay[head.clone()];
        let y = &mut y[head];
        y.fill(0.0);
        for i in 0..n {
            let (ri, ki, wi) = (r[i], k[i], decay[i]);
            let ui = x.bonus.map_or(0.0, |u| u.get(h * n + i));
            let s_row = &mut s[i * n..(i + 1) * n];
            for j in 0..n {
                let kv = ki * v[j];
                y[j] += ri * (ui * kv + s_row[j]);
                s_row[j] = wi * s_row[j] + kv;
            }
        }
    }
}

/// `xx[t] = LN(x[t])` and `sx[t] = xx[t-1] - xx[t]`, where `xx[-1]` is the `shift` state;
/// then the state keeps the post-LN value of the last token.
pub(crate) fn norm_and_shift(
    x: &[f32],
    xx: &mut [f32],
    sx: &mut [f32],
    (weight, bias): (Vector, Vector),
    shift: &mut [f32],
) -> Result<()> {
    let c = shift.len();
    xx.copy_from_slice(x);
    for row in xx.chunks_exact_mut(c) {
        ops::layer_norm(row, weight, bias, LAYER_NORM_EPS)?;
    }
    for t in 0..xx.len() / c {
        let previous = if t == 0 {
            &*shift
        } else {
            &xx[(t - 1) * c..t * c]
        };
        for j in 0..c {
            sx[t * c + j] = previous[j] - xx[t * c + j];
        }
    }
    let last = xx.len() - c;
    shift.copy_from_slice(&xx[last..]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_zlib() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
        let mut c = Crc32::new();
        c.update(b"1234");
        c.update(b"56789");
        assert_eq!(c.finish(), 0xCBF4_3926);
    }

    #[test]
    fn known_tensor_names() {
        assert!(is_known_tensor("blocks.1.att.time_maa_w2", 2));
        assert!(is_known_tensor("blocks.0.ln0.weight", 2));
        assert!(!is_known_tensor("blocks.2.att.time_maa_w2", 2));
        assert!(!is_known_tensor("blocks.01.att.key.weight", 2));
        assert!(!is_known_tensor("blocks.1.ln0.weight", 2));
        assert!(!is_known_tensor("blocks.1.", 2));
        assert!(!is_known_tensor("blocks.1.att.time_state", 2));
    }
}
