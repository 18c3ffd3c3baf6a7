//! One pre-norm transformer decoder for the LLaMA family: Spectra TriLM (`llama`) and Qwen2
//! (`qwen2`).
//!
//! Per layer, exactly as Hugging Face `transformers` computes it:
//!
//! ```text
//! h = RMSNorm(x) · g_attn
//! q, k, v = h·Wq (+bq), h·Wk (+bk), h·Wv (+bv)        (GQA: n_kv_head ≤ n_head)
//! q, k = rope(q, pos), rope(k, pos)                    (half-split "rotate_half" layout)
//! x += softmax(q·kᵀ / √head_dim, causal) · v · Wo (+bo)
//! h = RMSNorm(x) · g_mlp
//! x += (silu(h·Wgate (+b)) ⊙ (h·Wup (+b))) · Wdown (+b)
//! ```
//!
//! then `logits = RMSNorm(x) · g · headᵀ`, where `head` is the embedding when tied. Qwen2 has
//! q/k/v biases only; LLaMA's `attention_bias` adds them to q, k, v **and** o; `mlp_bias` to
//! the three MLP projections.
//!
//! Memory: weights are read in place (any matrix format, the kernels dequantize on the fly);
//! the KV cache and scratch live in caller memory sized by [`Decoder::plan`], which is exact
//! because planning and carving run the same code. Prompts go through the matrix-matrix kernels
//! in chunks of up to `max_tokens`; single tokens through the matrix-vector ones.
//!
//! The cache holds `context` positions. When it is full, [`Decoder::forward`] returns
//! [`Error::ContextFull`] before touching anything, so it never overruns.

use core::fmt::Write as _;
use core::sync::atomic::{AtomicBool, Ordering};

use half::f16;

use crate::arena::{Arena, Carve, MemoryPlan, Planner};
use crate::error::{Error, Name, Result};
use crate::format::SafeTensors;
use crate::kernels::{ActScale, Int8Acts, Kernels};
use crate::models::known_tensor_bytes;
use crate::ops::{self, Vector};
use crate::quant::{Matrix, dequantize_row};

/// Largest dimension accepted from metadata; keeps every product of two dimensions in range.
const MAX_DIM: usize = 1 << 22;

/// Hyperparameters, read from `goldcrest.<arch>.*` metadata.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// `"llama"` or `"qwen2"` (the metadata namespace; the math is the same).
    pub arch: Arch,
    /// Transformer blocks.
    pub n_layer: usize,
    /// Residual width.
    pub hidden: usize,
    /// MLP inner width.
    pub intermediate: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (divides `n_head`).
    pub n_kv_head: usize,
    /// Width of one head (even, for RoPE).
    pub head_dim: usize,
    /// Vocabulary size (embedding and head rows).
    pub vocab: usize,
    /// RoPE base θ.
    pub rope_theta: f32,
    /// RMSNorm ε.
    pub rms_eps: f32,
    /// q, k and v projections have biases.
    pub qkv_bias: bool,
    /// The attention output projection has a bias.
    pub o_bias: bool,
    /// gate, up and down projections have biases.
    pub mlp_bias: bool,
    /// The output head is the token embedding.
    pub tied: bool,
    /// Positions the model was trained for; the largest usable context.
    pub max_positions: usize,
    /// Sliding-window attention: a query attends to itself and the `window - 1` positions
    /// before it, in layers `first_sliding_layer..`; 0 means full causal attention everywhere.
    pub sliding_window: usize,
    /// First layer with sliding-window attention (layers before it attend to everything).
    pub first_sliding_layer: usize,
}

/// Which checkpoint family a file came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// `LlamaForCausalLM` (Spectra TriLM, Llama-2-style).
    Llama,
    /// `Qwen2ForCausalLM`.
    Qwen2,
}

impl Arch {
    /// The `goldcrest.arch` value.
    pub const fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
        }
    }
}

fn key(arch: Arch, name: &str) -> Name {
    let mut s = heapless::String::<64>::new();
    let _ = write!(s, "goldcrest.{}.{name}", arch.name());
    Name::new(&s)
}

fn hyper<'a>(st: &SafeTensors<'a>, arch: Arch, name: &str) -> Result<&'a str> {
    st.metadata()
        .hyperparameter(arch.name(), name)
        .and_then(|v| v.as_str())
        .ok_or(Error::BadMetadata {
            key: key(arch, name),
        })
}

fn hyper_usize(st: &SafeTensors<'_>, arch: Arch, name: &str) -> Result<usize> {
    let v: usize = hyper(st, arch, name)?
        .parse()
        .map_err(|_| Error::BadMetadata {
            key: key(arch, name),
        })?;
    if v == 0 || v > MAX_DIM {
        return Err(Error::BadMetadata {
            key: key(arch, name),
        });
    }
    Ok(v)
}

/// An optional hyperparameter: absent is 0.
fn optional_usize(st: &SafeTensors<'_>, arch: Arch, name: &str) -> Result<usize> {
    if st.metadata().hyperparameter(arch.name(), name).is_none() {
        return Ok(0);
    }
    let v: usize = hyper(st, arch, name)?
        .parse()
        .map_err(|_| Error::BadMetadata {
            key: key(arch, name),
        })?;
    if v > MAX_DIM {
        return Err(Error::BadMetadata {
            key: key(arch, name),
        });
    }
    Ok(v)
}

fn hyper_f32(st: &SafeTensors<'_>, arch: Arch, name: &str) -> Result<f32> {
    let v: f32 = hyper(st, arch, name)?
        .parse()
        .map_err(|_| Error::BadMetadata {
            key: key(arch, name),
        })?;
    if !v.is_finite() || v <= 0.0 {
        return Err(Error::BadMetadata {
            key: key(arch, name),
        });
    }
    Ok(v)
}

fn hyper_bool(st: &SafeTensors<'_>, arch: Arch, name: &str) -> Result<bool> {
    match hyper(st, arch, name)? {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(Error::BadMetadata {
            key: key(arch, name),
        }),
    }
}

impl Config {
    /// Reads and checks the hyperparameters of a `llama` or `qwen2` file.
    pub fn from_safetensors(st: &SafeTensors<'_>) -> Result<Config> {
        let meta = st.metadata();
        // `SafeTensors::parse` has already refused files of a newer major format version.
        let arch = match meta.arch().and_then(|a| a.as_str()) {
            Some("llama") => Arch::Llama,
            Some("qwen2") => Arch::Qwen2,
            _ => {
                return Err(Error::BadMetadata {
                    key: Name::new("goldcrest.arch"),
                });
            }
        };
        let cfg = Config {
            arch,
            n_layer: hyper_usize(st, arch, "n_layer")?,
            hidden: hyper_usize(st, arch, "hidden_size")?,
            intermediate: hyper_usize(st, arch, "intermediate_size")?,
            n_head: hyper_usize(st, arch, "n_head")?,
            n_kv_head: hyper_usize(st, arch, "n_kv_head")?,
            head_dim: hyper_usize(st, arch, "head_dim")?,
            vocab: hyper_usize(st, arch, "vocab_size")?,
            rope_theta: hyper_f32(st, arch, "rope_theta")?,
            rms_eps: hyper_f32(st, arch, "rms_norm_eps")?,
            qkv_bias: hyper_bool(st, arch, "qkv_bias")?,
            o_bias: hyper_bool(st, arch, "o_bias")?,
            mlp_bias: hyper_bool(st, arch, "mlp_bias")?,
            tied: hyper_bool(st, arch, "tie_word_embeddings")?,
            max_positions: hyper_usize(st, arch, "context_length")?,
            sliding_window: optional_usize(st, arch, "sliding_window")?,
            first_sliding_layer: optional_usize(st, arch, "first_sliding_layer")?,
        };
        if !cfg.n_head.is_multiple_of(cfg.n_kv_head) {
            return Err(Error::BadMetadata {
                key: key(arch, "n_kv_head"),
            });
        }
        if !cfg.head_dim.is_multiple_of(2) || cfg.n_head * cfg.head_dim > MAX_DIM {
            return Err(Error::BadMetadata {
                key: key(arch, "head_dim"),
            });
        }
        Ok(cfg)
    }

    /// The attention window of layer `l` (positions a query sees, itself included), `None`
    /// for full causal attention.
    pub fn window(&self, l: usize) -> Option<usize> {
        (self.sliding_window > 0 && l >= self.first_sliding_layer).then_some(self.sliding_window)
    }

    /// Whether every layer has a sliding window, so the cache can be a ring that never fills.
    pub fn slides_everywhere(&self) -> bool {
        self.sliding_window > 0 && self.first_sliding_layer == 0
    }

    /// Width of all query heads together.
    pub fn q_width(&self) -> usize {
        self.n_head * self.head_dim
    }

    /// Width of all key (or value) heads together.
    pub fn kv_width(&self) -> usize {
        self.n_kv_head * self.head_dim
    }
}

/// `y[r·width + i] += b[i]` for every row of `y`.
fn add_bias(b: &Vector, y: &mut [f32], width: usize) {
    for row in y.chunks_exact_mut(width) {
        for (i, v) in row.iter_mut().enumerate() {
            *v += b.get(i);
        }
    }
}

/// One block's weights, resolved once.
#[derive(Debug, Clone, Copy)]
pub struct Layer<'a> {
    attn_norm: Vector<'a>,
    q: Matrix<'a>,
    k: Matrix<'a>,
    v: Matrix<'a>,
    o: Matrix<'a>,
    q_bias: Option<Vector<'a>>,
    k_bias: Option<Vector<'a>>,
    v_bias: Option<Vector<'a>>,
    o_bias: Option<Vector<'a>>,
    mlp_norm: Vector<'a>,
    gate: Matrix<'a>,
    up: Matrix<'a>,
    down: Matrix<'a>,
    gate_bias: Option<Vector<'a>>,
    up_bias: Option<Vector<'a>>,
    down_bias: Option<Vector<'a>>,
}

type NameBuf = heapless::String<96>;

fn layer_name(i: usize, suffix: &str) -> NameBuf {
    let mut s = NameBuf::new();
    let _ = write!(s, "model.layers.{i}.{suffix}");
    s
}

fn matrix<'a>(st: &SafeTensors<'a>, name: &str, rows: usize, cols: usize) -> Result<Matrix<'a>> {
    let view = st.tensor(name)?;
    view.expect_shape(&[rows as u64, cols as u64])?;
    view.matrix()
}

fn vector<'a>(st: &SafeTensors<'a>, name: &str, len: usize) -> Result<Vector<'a>> {
    let view = st.tensor(name)?;
    view.expect_shape(&[len as u64])?;
    Vector::from_bytes(name, view.format()?, view.bytes())
}

fn bias<'a>(st: &SafeTensors<'a>, on: bool, name: &str, len: usize) -> Result<Option<Vector<'a>>> {
    if on {
        vector(st, name, len).map(Some)
    } else {
        Ok(None)
    }
}

fn load_layer<'a>(st: &SafeTensors<'a>, c: &Config, i: usize) -> Result<Layer<'a>> {
    let n = |s: &str| layer_name(i, s);
    let (h, qw, kvw, ff) = (c.hidden, c.q_width(), c.kv_width(), c.intermediate);
    Ok(Layer {
        attn_norm: vector(st, &n("input_layernorm.weight"), h)?,
        q: matrix(st, &n("self_attn.q_proj.weight"), qw, h)?,
        k: matrix(st, &n("self_attn.k_proj.weight"), kvw, h)?,
        v: matrix(st, &n("self_attn.v_proj.weight"), kvw, h)?,
        o: matrix(st, &n("self_attn.o_proj.weight"), h, qw)?,
        q_bias: bias(st, c.qkv_bias, &n("self_attn.q_proj.bias"), qw)?,
        k_bias: bias(st, c.qkv_bias, &n("self_attn.k_proj.bias"), kvw)?,
        v_bias: bias(st, c.qkv_bias, &n("self_attn.v_proj.bias"), kvw)?,
        o_bias: bias(st, c.o_bias, &n("self_attn.o_proj.bias"), h)?,
        mlp_norm: vector(st, &n("post_attention_layernorm.weight"), h)?,
        gate: matrix(st, &n("mlp.gate_proj.weight"), ff, h)?,
        up: matrix(st, &n("mlp.up_proj.weight"), ff, h)?,
        down: matrix(st, &n("mlp.down_proj.weight"), h, ff)?,
        gate_bias: bias(st, c.mlp_bias, &n("mlp.gate_proj.bias"), ff)?,
        up_bias: bias(st, c.mlp_bias, &n("mlp.up_proj.bias"), ff)?,
        down_bias: bias(st, c.mlp_bias, &n("mlp.down_proj.bias"), h)?,
    })
}

/// Whether `name` is a tensor this model reads (for strict loading).
fn is_known(name: &str, c: &Config) -> bool {
    if matches!(
        name,
        "model.embed_tokens.weight" | "model.norm.weight" | "tokenizer"
    ) {
        return true;
    }
    if name == "lm_head.weight" {
        return !c.tied;
    }
    let Some(rest) = name.strip_prefix("model.layers.") else {
        return false;
    };
    let Some((index, suffix)) = rest.split_once('.') else {
        return false;
    };
    let in_range = index.parse::<usize>().is_ok_and(|i| {
        i < c.n_layer && !index.starts_with('+') && (index == "0" || !index.starts_with('0'))
    });
    in_range
        && match suffix {
            "input_layernorm.weight" | "post_attention_layernorm.weight" => true,
            "self_attn.q_proj.weight" | "self_attn.k_proj.weight" | "self_attn.v_proj.weight" => {
                true
            }
            "self_attn.o_proj.weight" => true,
            "mlp.gate_proj.weight" | "mlp.up_proj.weight" | "mlp.down_proj.weight" => true,
            "self_attn.q_proj.bias" | "self_attn.k_proj.bias" | "self_attn.v_proj.bias" => {
                c.qkv_bias
            }
            "self_attn.o_proj.bias" => c.o_bias,
            "mlp.gate_proj.bias" | "mlp.up_proj.bias" | "mlp.down_proj.bias" => c.mlp_bias,
            _ => false,
        }
}

/// All weights, resolved and shape-checked once; a forward pass does no name lookups.
///
/// The per-layer views live in a caller-provided slice of at least `n_layer` entries (a few
/// hundred bytes each), so this struct has a fixed size whatever the depth: a small array on a
/// microcontroller, `vec![None; n_layer]` on a host.
#[derive(Debug, Clone, Copy)]
pub struct Weights<'w, 'a> {
    config: Config,
    layers: &'w [Option<Layer<'a>>],
    embed: Matrix<'a>,
    norm: Vector<'a>,
    head: Matrix<'a>,
    bytes: usize,
}

impl<'w, 'a> Weights<'w, 'a> {
    /// Reads the config, then every tensor with its exact shape. A missing tensor, a wrong
    /// shape, a format the kernels cannot use, or an unknown tensor is an error naming it.
    pub fn load(st: &SafeTensors<'a>, layers: &'w mut [Option<Layer<'a>>]) -> Result<Self> {
        let config = Config::from_safetensors(st)?;
        let provided = layers.len();
        let layers = layers
            .get_mut(..config.n_layer)
            .ok_or(Error::BufferTooSmall {
                needed: config.n_layer as u64,
                provided: provided as u64,
            })?;
        for (i, slot) in layers.iter_mut().enumerate() {
            *slot = Some(load_layer(st, &config, i)?);
        }
        let embed = matrix(st, "model.embed_tokens.weight", config.vocab, config.hidden)?;
        let head = if config.tied {
            embed
        } else {
            matrix(st, "lm_head.weight", config.vocab, config.hidden)?
        };
        let norm = vector(st, "model.norm.weight", config.hidden)?;
        let bytes = known_tensor_bytes(st, |name| is_known(name, &config))?;
        Ok(Weights {
            config,
            layers,
            embed,
            norm,
            head,
            bytes,
        })
    }

    /// The configuration the weights were checked against.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Bytes of weights read in place.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn layer(&self, i: usize) -> Result<&Layer<'a>> {
        self.layers
            .get(i)
            .and_then(|l| l.as_ref())
            .ok_or(Error::OutOfRange)
    }
}

/// How keys and values are stored in the cache.
///
/// The integer forms quantize each `(position, head)` row of keys or values on its own,
/// asymmetrically: `x ≈ m + s·u` with `m` the row's minimum, `s = (max − m)/(2ᵇ − 1)` and
/// codes `u = round((x − m)/s)` in `0..2ᵇ`, `s` and `m` in f32. Against symmetric absmax
/// codes (`±(2ᵇ⁻¹ − 1)`) this uses every level and follows a row's offset (a key bias, a
/// rotated outlier channel); on the golden models it cut the RMS logit error by about a third
/// for 8 bits and a fifth for 4 bits (docs/decoder.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvFormat {
    /// 4 bytes per value: exact.
    F32,
    /// 2 bytes per value.
    F16,
    /// 1 byte per value plus an f32 scale and offset per token, per head (K and V separately).
    I8,
    /// Half a byte per value plus an f32 scale and offset per token, per head.
    I4,
}

impl KvFormat {
    /// Name used on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            KvFormat::F32 => "f32",
            KvFormat::F16 => "f16",
            KvFormat::I8 => "int8",
            KvFormat::I4 => "int4",
        }
    }

    /// Parses a [`KvFormat::name`] (`i8` and `i4` are accepted too).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "f32" => Some(KvFormat::F32),
            "f16" => Some(KvFormat::F16),
            "i8" | "int8" => Some(KvFormat::I8),
            "i4" | "int4" => Some(KvFormat::I4),
            _ => None,
        }
    }

    /// Code levels above zero of the integer forms (`2ᵇ − 1`).
    const fn levels(self) -> f32 {
        match self {
            KvFormat::I4 => 15.0,
            _ => 255.0,
        }
    }
}

/// The cache's f32 values, f16 values, integer codes and per-row (scale, offset) pairs.
type CacheParts<C> = (
    <C as Carve>::Out<f32>,
    <C as Carve>::Out<u16>,
    <C as Carve>::Out<u8>,
    <C as Carve>::Out<f32>,
);

/// Layout of the cache: `[layer][K, V][kv_head][position][head_dim]` (4-bit: `head_dim / 2`
/// bytes per row), plus for the integer forms one (scale, offset) pair per
/// `[layer][K, V][kv_head][position]`. Exactly one of the three value slices is non-empty.
fn carve_cache<C: Carve>(
    c: &mut C,
    cfg: &Config,
    context: usize,
    format: KvFormat,
) -> Result<CacheParts<C>> {
    let rows = cfg
        .n_layer
        .checked_mul(2 * cfg.n_kv_head)
        .and_then(|v| v.checked_mul(context))
        .ok_or(Error::OutOfRange)?;
    let values = rows.checked_mul(cfg.head_dim).ok_or(Error::OutOfRange)?;
    let n = |f: KvFormat| if f == format { values } else { 0 };
    let integer = matches!(format, KvFormat::I8 | KvFormat::I4);
    let code_bytes = match format {
        KvFormat::I8 => values,
        KvFormat::I4 => values / 2,
        _ => 0,
    };
    Ok((
        c.take::<f32>(n(KvFormat::F32))?,
        c.take::<u16>(n(KvFormat::F16))?,
        c.take::<u8>(code_bytes)?,
        c.take::<f32>(if integer { 2 * rows } else { 0 })?,
    ))
}

/// The KV cache of one sequence, in caller memory.
#[derive(Debug)]
pub struct KvCache<'s> {
    config: Config,
    format: KvFormat,
    context: usize,
    len: usize,
    f32s: &'s mut [f32],
    f16s: &'s mut [u16],
    codes: &'s mut [u8],
    /// `(scale, offset)` of each row of codes.
    params: &'s mut [f32],
}

impl<'s> KvCache<'s> {
    /// Carves a cache of `context` positions (at most the model's `max_positions`).
    pub fn carve(
        config: &Config,
        context: usize,
        format: KvFormat,
        arena: &mut Arena<'s>,
    ) -> Result<Self> {
        if context == 0 || context > config.max_positions {
            return Err(Error::OutOfRange);
        }
        let (f32s, f16s, codes, params) = carve_cache(arena, config, context, format)?;
        Ok(KvCache {
            config: *config,
            format,
            context,
            len: 0,
            f32s,
            f16s,
            codes,
            params,
        })
    }

    /// Positions processed so far (the next token's position; with a sliding window in every
    /// layer it can exceed [`KvCache::context`], the cache then being a ring).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is filled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions the cache holds.
    pub fn context(&self) -> usize {
        self.context
    }

    /// Storage format.
    pub fn format(&self) -> KvFormat {
        self.format
    }

    /// Forgets every position (a new sequence).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Drops positions after `len` (rewind, e.g. to reuse a shared prompt prefix). Fails with
    /// [`Error::OutOfRange`] (nothing changed) when a ring cache has already overwritten
    /// positions the shorter sequence would still attend to.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len >= self.len {
            return Ok(());
        }
        let needed_from = len.saturating_sub(self.config.sliding_window.saturating_sub(1));
        if self.len > self.context && needed_from + self.context < self.len {
            return Err(Error::OutOfRange);
        }
        self.len = len;
        Ok(())
    }

    /// Makes the cache hold `len` positions whose keys and values are `value()` drawn in turn,
    /// stored in the cache's format exactly as [`Decoder::forward`] stores computed ones; the
    /// values at earlier positions are replaced. Attention costs the same whatever the cached
    /// values, so this measures decode and prefill speed at long context without running the
    /// model over `len` tokens (`goldcrest bench --context`), and builds caches for tests. Fails
    /// with [`Error::ContextFull`] (cache unchanged) when `len` exceeds [`KvCache::context`]
    /// on a model without a sliding window in every layer, and with [`Error::NonFinite`] (cache
    /// partly overwritten, position unchanged) if `value` returns NaN or an infinity, and with
    /// [`Error::OutOfRange`] for a `head_dim` above 1024 (one row is staged on the stack).
    pub fn fill_synthetic(&mut self, len: usize, mut value: impl FnMut() -> f32) -> Result<()> {
        if len > self.context && !self.config.slides_everywhere() {
            return Err(Error::ContextFull {
                capacity: self.context as u64,
            });
        }
        const MAX_SYNTHETIC_HEAD_DIM: usize = 1024;
        let live = len.min(self.context);
        let mut row_values = [0.0f32; MAX_SYNTHETIC_HEAD_DIM];
        let row_values = row_values
            .get_mut(..self.config.head_dim)
            .ok_or(Error::OutOfRange)?;
        for row in 0..self.rows() {
            for slot in 0..live {
                for v in row_values.iter_mut() {
                    *v = value();
                    if !v.is_finite() {
                        return Err(Error::NonFinite);
                    }
                }
                self.store(row * self.context + slot, row_values);
            }
        }
        self.len = len;
        Ok(())
    }

    /// Index of the row (`head_dim` values) for `(layer, K=0/V=1, kv_head, position)`;
    /// positions map onto the `context` slots modulo `context` (a ring when sliding).
    fn row(&self, layer: usize, kv: usize, head: usize, pos: usize) -> usize {
        ((layer * 2 + kv) * self.config.n_kv_head + head) * self.context + pos % self.context
    }

    fn store(&mut self, row: usize, x: &[f32]) {
        let hd = x.len();
        let at = row * hd;
        match self.format {
            KvFormat::F32 => self.f32s[at..at + hd].copy_from_slice(x),
            KvFormat::F16 => {
                for (o, &v) in self.f16s[at..at + hd].iter_mut().zip(x) {
                    *o = f16::from_f32(v).to_bits();
                }
            }
            KvFormat::I8 | KvFormat::I4 => {
                let lo = x.iter().fold(f32::INFINITY, |m, &v| m.min(v));
                let hi = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                let levels = self.format.levels();
                let scale = (hi - lo) / levels;
                let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
                let code = |v: f32| libm::roundf((v - lo) * inv).clamp(0.0, levels) as u8;
                if self.format == KvFormat::I8 {
                    for (o, &v) in self.codes[at..at + hd].iter_mut().zip(x) {
                        *o = code(v);
                    }
                } else {
                    let (first, second) = x.split_at(hd / 2);
                    let bytes = &mut self.codes[row * (hd / 2)..(row + 1) * (hd / 2)];
                    for ((o, &a), &b) in bytes.iter_mut().zip(first).zip(second) {
                        *o = code(a) | (code(b) << 4);
                    }
                }
                self.params[2 * row] = scale;
                self.params[2 * row + 1] = lo;
            }
        }
    }

    /// `Σ q[i]·K[row][i]`; `q_sum` is `Σ q[i]` (used by the integer forms).
    fn dot(&self, kernels: &Kernels, row: usize, q: &[f32], q_sum: f32) -> Result<f32> {
        let hd = q.len();
        let at = row * hd;
        Ok(match self.format {
            KvFormat::F32 => kernels.dot_f32(&self.f32s[at..at + hd], q)?,
            KvFormat::F16 => kernels.dot_f16(&self.f16s[at..at + hd], q)?,
            KvFormat::I8 => {
                let (scale, offset) = (self.params[2 * row], self.params[2 * row + 1]);
                scale * kernels.dot_u8(&self.codes[at..at + hd], q)? + offset * q_sum
            }
            KvFormat::I4 => {
                let (scale, offset) = (self.params[2 * row], self.params[2 * row + 1]);
                let bytes = &self.codes[row * (hd / 2)..(row + 1) * (hd / 2)];
                scale * kernels.dot_u4(bytes, q)? + offset * q_sum
            }
        })
    }

    /// [`KvCache::dot`] for positions `first..first + out.len()` of one head's keys; f16 rows
    /// go to the kernel in runs of consecutive slots (two when the ring wraps).
    #[allow(clippy::too_many_arguments)]
    fn dot_range(
        &self,
        kernels: &Kernels,
        layer: usize,
        head: usize,
        first: usize,
        q: &[f32],
        q_sum: f32,
        out: &mut [f32],
    ) -> Result<()> {
        if self.format != KvFormat::F16 {
            for (j, o) in out.iter_mut().enumerate() {
                *o = self.dot(kernels, self.row(layer, 0, head, first + j), q, q_sum)?;
            }
            return Ok(());
        }
        let hd = q.len();
        let mut done = 0;
        while done < out.len() {
            let row = self.row(layer, 0, head, first + done);
            let run = (self.context - (first + done) % self.context).min(out.len() - done);
            let keys = &self.f16s[row * hd..(row + run) * hd];
            kernels.dot_rows_f16(keys, q, &mut out[done..done + run])?;
            done += run;
        }
        Ok(())
    }

    /// [`KvCache::add_scaled`] for positions `first..first + w.len()` of one head's values with
    /// weights `w`, in position order; returns the summed offsets.
    fn add_range(
        &self,
        kernels: &Kernels,
        layer: usize,
        head: usize,
        first: usize,
        w: &[f32],
        out: &mut [f32],
    ) -> Result<f32> {
        if self.format != KvFormat::F16 {
            let mut offset = 0.0;
            for (j, &wj) in w.iter().enumerate() {
                offset += self.add_scaled(kernels, self.row(layer, 1, head, first + j), wj, out)?;
            }
            return Ok(offset);
        }
        let hd = out.len();
        let mut done = 0;
        while done < w.len() {
            let row = self.row(layer, 1, head, first + done);
            let run = (self.context - (first + done) % self.context).min(w.len() - done);
            let values = &self.f16s[row * hd..(row + run) * hd];
            kernels.axpy_rows_f16(&w[done..done + run], values, out)?;
            done += run;
        }
        Ok(0.0)
    }

    /// `out[i] += w·V[row][i]`, except that the integer forms leave out the row offset and
    /// return `w·offset`, which the caller adds to every output once for all rows.
    fn add_scaled(&self, kernels: &Kernels, row: usize, w: f32, out: &mut [f32]) -> Result<f32> {
        let hd = out.len();
        let at = row * hd;
        match self.format {
            KvFormat::F32 => kernels.axpy_f32(w, &self.f32s[at..at + hd], out)?,
            KvFormat::F16 => kernels.axpy_f16(w, &self.f16s[at..at + hd], out)?,
            KvFormat::I8 => {
                let codes = &self.codes[at..at + hd];
                kernels.axpy_u8(w * self.params[2 * row], codes, out)?;
                return Ok(w * self.params[2 * row + 1]);
            }
            KvFormat::I4 => {
                let bytes = &self.codes[row * (hd / 2)..(row + 1) * (hd / 2)];
                kernels.axpy_u4(w * self.params[2 * row], bytes, out)?;
                return Ok(w * self.params[2 * row + 1]);
            }
        }
        Ok(0.0)
    }
}

/// Positions whose scores are computed, exponentiated and applied together in
/// [`Heads::attend`] (on the stack: attention needs no scratch per thread).
const ATTEND_CHUNK: usize = 64;

/// One layer's cached keys and values of one KV head, as attention reads them.
struct Heads<'c, 'k, 'm> {
    cache: &'c KvCache<'m>,
    kernels: &'k Kernels,
    layer: usize,
    group: usize,
}

impl Heads<'_, '_, '_> {
    /// `oh = softmax(q·Kᵀ·scale)·V` over positions `first..=pos`, in chunks with a running
    /// maximum (the online softmax): each chunk's scores are exponentiated against the
    /// largest score so far, and what was accumulated under a smaller maximum is rescaled
    /// by `e^(old − new)`. Equal to the two-pass softmax up to rounding, without a buffer
    /// of `context` scores.
    fn attend(
        &self,
        qh: &[f32],
        first: usize,
        pos: usize,
        scale: f32,
        oh: &mut [f32],
    ) -> Result<()> {
        let (cache, l, g) = (self.cache, self.layer, self.group);
        let q_sum: f32 = qh.iter().sum();
        oh.fill(0.0);
        let (mut max, mut sum, mut offset) = (f32::NEG_INFINITY, 0.0f32, 0.0f32);
        let mut scores = [0.0f32; ATTEND_CHUNK];
        let mut j0 = first;
        while j0 <= pos {
            let sc = &mut scores[..ATTEND_CHUNK.min(pos + 1 - j0)];
            cache.dot_range(self.kernels, l, g, j0, qh, q_sum, sc)?;
            sc.iter_mut().for_each(|v| *v *= scale);
            let chunk_max = sc.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            if chunk_max > max {
                if sum != 0.0 {
                    let alpha = ops::exp_fast(max - chunk_max);
                    oh.iter_mut().for_each(|o| *o *= alpha);
                    sum *= alpha;
                    offset *= alpha;
                }
                max = chunk_max;
            }
            sum += self.kernels.exp_shifted(sc, max);
            offset += cache.add_range(self.kernels, l, g, j0, sc, oh)?;
            j0 += sc.len();
        }
        let inv = 1.0 / sum;
        oh.iter_mut().for_each(|o| *o = (*o + offset) * inv);
        Ok(())
    }
}

/// Per-call working memory for up to `max_tokens` tokens at a time.
#[derive(Debug)]
pub struct Scratch<'s> {
    max_tokens: usize,
    x: &'s mut [f32],
    h: &'s mut [f32],
    q: &'s mut [f32],
    k: &'s mut [f32],
    v: &'s mut [f32],
    attn: &'s mut [f32],
    gate: &'s mut [f32],
    up: &'s mut [f32],
    rope: &'s mut [f32],
    /// Int8 copies of a linear layer's input (with [`Decoder::with_int8_activations`]).
    acts: &'s mut [u8],
}

type ScratchParts<C> = ([<C as Carve>::Out<f32>; 9], <C as Carve>::Out<u8>);

fn carve_scratch<C: Carve>(c: &mut C, cfg: &Config, max_tokens: usize) -> Result<ScratchParts<C>> {
    let t = |w: usize| max_tokens.checked_mul(w).ok_or(Error::OutOfRange);
    let widest = cfg.hidden.max(cfg.q_width()).max(cfg.intermediate);
    let acts =
        Int8Acts::scratch_bytes(max_tokens, widest, ActScale::PerBlock).ok_or(Error::OutOfRange)?;
    let floats = [
        c.take(t(cfg.hidden)?)?,
        c.take(t(cfg.hidden)?)?,
        c.take(t(cfg.q_width())?)?,
        c.take(t(cfg.kv_width())?)?,
        c.take(t(cfg.kv_width())?)?,
        c.take(t(cfg.q_width())?)?,
        c.take(t(cfg.intermediate)?)?,
        c.take(t(cfg.intermediate)?)?,
        c.take(cfg.head_dim)?,
    ];
    Ok((floats, c.take(acts)?))
}

impl<'s> Scratch<'s> {
    /// Carves scratch for chunks of up to `max_tokens` tokens. Its size does not depend on the
    /// context length: attention keeps its running scores on the stack.
    pub fn carve(config: &Config, max_tokens: usize, arena: &mut Arena<'s>) -> Result<Self> {
        if max_tokens == 0 {
            return Err(Error::OutOfRange);
        }
        let ([x, h, q, k, v, attn, gate, up, rope], acts) =
            carve_scratch(arena, config, max_tokens)?;
        Ok(Scratch {
            max_tokens,
            x,
            h,
            q,
            k,
            v,
            attn,
            gate,
            up,
            rope,
            acts,
        })
    }

    /// Most tokens one chunk of a forward pass handles.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }
}

/// `out = RMSNorm(x) · g` (normalised in f32, as transformers does), keeping `x` for the
/// residual.
fn rms_norm(x: &[f32], g: &Vector, eps: f32, out: &mut [f32]) -> Result<()> {
    out.copy_from_slice(x);
    ops::rms_norm(out, *g, eps)
}

/// `inv_freq` for the half-split RoPE: `cos_sin[i] = θ^(-2i/head_dim)`, i < head_dim/2; the
/// second half of the buffer is unused.
fn rope_frequencies(theta: f32, out: &mut [f32]) {
    let hd = out.len();
    for (i, f) in out[..hd / 2].iter_mut().enumerate() {
        *f = 1.0 / libm::powf(theta, (2 * i) as f32 / hd as f32);
    }
}

/// Rotates one head in place: `x' = x·cos + rotate_half(x)·sin` with
/// `rotate_half(x) = [-x[d/2..], x[..d/2]]` and angles `pos · inv_freq[i mod d/2]`.
fn rope(x: &mut [f32], pos: usize, inv_freq: &[f32]) {
    let half = x.len() / 2;
    for i in 0..half {
        let angle = pos as f32 * inv_freq[i];
        let (s, c) = (libm::sinf(angle), libm::cosf(angle));
        let (a, b) = (x[i], x[i + half]);
        x[i] = a * c - b * s;
        x[i + half] = b * c + a * s;
    }
}

/// The decoder: weights plus the kernels chosen for this machine.
#[derive(Debug, Clone, Copy)]
pub struct Decoder<'w, 'a> {
    weights: Weights<'w, 'a>,
    kernels: Kernels,
    int8_acts: Option<ActScale>,
}

impl<'w, 'a> Decoder<'w, 'a> {
    /// A decoder over loaded weights.
    pub fn new(weights: Weights<'w, 'a>, kernels: Kernels) -> Self {
        Decoder {
            weights,
            kernels,
            int8_acts: None,
        }
    }

    /// Quantizes the input of every ternary (`tq2_0`, `tq1_0`), `i8`, `q8_0` or `q4_0` linear
    /// layer (the head included) to int8 and uses the integer kernels (what llama.cpp does for
    /// TQ2_0/TQ1_0/Q8_0/Q4_0). Faster, and no longer bit-comparable with the float model;
    /// f32/f16/bf16 layers keep f32 activations.
    pub fn with_int8_activations(mut self, scale: ActScale) -> Self {
        self.int8_acts = Some(scale);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.weights.config
    }

    /// The weights.
    pub fn weights(&self) -> &Weights<'w, 'a> {
        &self.weights
    }

    /// Exact memory for a `context`-position cache in `kv` format (state) and chunks of up to
    /// `max_tokens` (scratch); carve the cache first, then the scratch, from one arena or two.
    pub fn plan(
        config: &Config,
        context: usize,
        kv: KvFormat,
        max_tokens: usize,
        weight_bytes: usize,
    ) -> Result<MemoryPlan> {
        let mut state = Planner::new();
        carve_cache(&mut state, config, context, kv)?;
        let mut scratch = Planner::new();
        carve_scratch(&mut scratch, config, max_tokens)?;
        Ok(MemoryPlan {
            weight_bytes,
            state_bytes: state.bytes(),
            scratch_bytes: scratch.bytes(),
        })
    }

    /// [`Decoder::plan`] for this model's weights.
    pub fn memory_plan(
        &self,
        context: usize,
        kv: KvFormat,
        max_tokens: usize,
    ) -> Result<MemoryPlan> {
        Self::plan(
            &self.weights.config,
            context,
            kv,
            max_tokens,
            self.weights.bytes,
        )
    }

    /// Runs `tokens` at the next positions of `cache` and writes logits: `logits.len()` must be
    /// `vocab` (the last token's) or `tokens.len() · vocab` (every token's, token-major).
    ///
    /// When every layer has a sliding window and the cache holds at least `window - 1 +
    /// max_tokens` positions, the cache is a ring and never fills. Otherwise
    /// fails with [`Error::ContextFull`] (cache unchanged) if the tokens do not fit, and with
    /// [`Error::OutOfRange`] for a token id outside the vocabulary.
    pub fn forward(
        &self,
        cache: &mut KvCache<'_>,
        scratch: &mut Scratch<'_>,
        tokens: &[u32],
        logits: &mut [f32],
    ) -> Result<()> {
        let cfg = &self.weights.config;
        if cache.config != *cfg || scratch.rope.len() != cfg.head_dim {
            return Err(Error::LengthMismatch {
                expected: cfg.head_dim as u64,
                found: scratch.rope.len() as u64,
            });
        }
        if tokens.is_empty() {
            return Err(Error::LengthMismatch {
                expected: 1,
                found: 0,
            });
        }
        let all = logits.len() == tokens.len() * cfg.vocab;
        if !all && logits.len() != cfg.vocab {
            return Err(Error::LengthMismatch {
                expected: cfg.vocab as u64,
                found: logits.len() as u64,
            });
        }
        let ring =
            cfg.slides_everywhere() && cache.context >= cfg.sliding_window - 1 + scratch.max_tokens;
        if !ring && cache.len + tokens.len() > cache.context {
            return Err(Error::ContextFull {
                capacity: cache.context as u64,
            });
        }
        if tokens.iter().any(|&t| t as usize >= cfg.vocab) {
            return Err(Error::OutOfRange);
        }
        let chunk = scratch.max_tokens;
        let mut done = 0;
        for part in tokens.chunks(chunk) {
            let n = part.len();
            self.run_chunk(cache, scratch, part)?;
            let last = n == tokens.len() - done;
            if all {
                let out = &mut logits[done * cfg.vocab..(done + n) * cfg.vocab];
                self.head(scratch, n, out)?;
            } else if last {
                self.head_last(scratch, n, logits)?;
            }
            done += n;
        }
        Ok(())
    }

    /// Embeds `part`, runs every layer (filling the cache), leaves the residual in `scratch.x`.
    fn run_chunk(&self, cache: &mut KvCache<'_>, s: &mut Scratch<'_>, part: &[u32]) -> Result<()> {
        let cfg = &self.weights.config;
        let n = part.len();
        let h = cfg.hidden;
        for (t, &id) in part.iter().enumerate() {
            let row = self
                .weights
                .embed
                .row(id as usize)
                .ok_or(Error::OutOfRange)?;
            dequantize_row(
                self.weights.embed.format(),
                row,
                h,
                &mut s.x[t * h..(t + 1) * h],
            )?;
        }
        rope_frequencies(cfg.rope_theta, s.rope);
        for l in 0..cfg.n_layer {
            self.attention(l, cache, s, n)?;
            self.mlp(l, s, n)?;
        }
        cache.len += n;
        Ok(())
    }

    /// `y = W·x` for `n` tokens: matrix-vector kernel for one token, matrix-matrix otherwise.
    fn linear(
        &self,
        w: &Matrix,
        b: Option<&Vector>,
        x: &[f32],
        n: usize,
        y: &mut [f32],
        acts: &mut [u8],
    ) -> Result<()> {
        if let Some(mode) = self
            .int8_acts
            .filter(|_| Kernels::has_int8_path(w.format()))
        {
            let a = self.kernels.quantize_acts(x, n, w.cols(), mode, acts)?;
            self.kernels.gemm_i8(w, &a, y)?;
        } else if n == 1 {
            self.kernels.gemv(w, x, y)?;
        } else {
            self.kernels.gemm(w, x, n, y)?;
        }
        if let Some(b) = b {
            add_bias(b, y, w.rows());
        }
        Ok(())
    }

    /// Several linear layers of the same input: with int8 activations the input is quantized
    /// once for all of them (q, k, v; gate, up), with the same result as one at a time.
    fn linears(
        &self,
        x: &[f32],
        n: usize,
        acts: &mut [u8],
        outs: &mut [(&Matrix, Option<&Vector>, &mut [f32])],
    ) -> Result<()> {
        let cols = x.len() / n.max(1);
        let shared = self.int8_acts.filter(|_| {
            outs.iter()
                .all(|(w, _, _)| Kernels::has_int8_path(w.format()) && w.cols() == cols)
        });
        let Some(mode) = shared else {
            for (w, b, y) in outs.iter_mut() {
                self.linear(w, *b, x, n, y, acts)?;
            }
            return Ok(());
        };
        let a = self.kernels.quantize_acts(x, n, cols, mode, acts)?;
        for (w, b, y) in outs.iter_mut() {
            self.kernels.gemm_i8(w, &a, y)?;
            if let Some(b) = b {
                add_bias(b, y, w.rows());
            }
        }
        Ok(())
    }

    fn attention(
        &self,
        l: usize,
        cache: &mut KvCache<'_>,
        s: &mut Scratch<'_>,
        n: usize,
    ) -> Result<()> {
        let cfg = &self.weights.config;
        let layer = self.weights.layer(l)?;
        let (h, hd, qw, kvw) = (cfg.hidden, cfg.head_dim, cfg.q_width(), cfg.kv_width());
        let (x, hn) = (&s.x[..n * h], &mut s.h[..n * h]);
        for t in 0..n {
            rms_norm(
                &x[t * h..(t + 1) * h],
                &layer.attn_norm,
                cfg.rms_eps,
                &mut hn[t * h..(t + 1) * h],
            )?;
        }
        let (q, k, v) = (&mut s.q[..n * qw], &mut s.k[..n * kvw], &mut s.v[..n * kvw]);
        self.linears(
            hn,
            n,
            s.acts,
            &mut [
                (&layer.q, layer.q_bias.as_ref(), &mut *q),
                (&layer.k, layer.k_bias.as_ref(), &mut *k),
                (&layer.v, layer.v_bias.as_ref(), &mut *v),
            ],
        )?;
        let start = cache.len;
        for t in 0..n {
            let pos = start + t;
            for head in q[t * qw..(t + 1) * qw].chunks_exact_mut(hd) {
                rope(head, pos, s.rope);
            }
            for g in 0..cfg.n_kv_head {
                let kh = &mut k[t * kvw + g * hd..t * kvw + (g + 1) * hd];
                rope(kh, pos, s.rope);
                cache.store(cache.row(l, 0, g, pos), kh);
                cache.store(
                    cache.row(l, 1, g, pos),
                    &v[t * kvw + g * hd..t * kvw + (g + 1) * hd],
                );
            }
        }
        let group = cfg.n_head / cfg.n_kv_head;
        let scale = 1.0 / libm::sqrtf(hd as f32);
        let out = &mut s.attn[..n * qw];
        let (cache, q, kernels) = (&*cache, &*q, self.kernels);
        let failed = AtomicBool::new(false);
        // Multiply-adds of the scores and the weighted sum, to decide whether threads pay.
        let work = n
            .saturating_mul(cfg.n_head)
            .saturating_mul(start + n)
            .saturating_mul(2 * hd);
        // One part per (token, head): independent outputs, so they may run on any thread.
        kernels.for_each_part(out, hd, work, &|i, oh| {
            let (t, head) = (i / cfg.n_head, i % cfg.n_head);
            // Causal, and within the window: positions first..=pos.
            let pos = start + t;
            let first = cfg.window(l).map_or(0, |w| (pos + 1).saturating_sub(w));
            let qh = &q[t * qw + head * hd..t * qw + (head + 1) * hd];
            let heads = Heads {
                cache,
                kernels: &kernels,
                layer: l,
                group: head / group,
            };
            if heads.attend(qh, first, pos, scale, oh).is_err() {
                failed.store(true, Ordering::Relaxed);
            }
        })?;
        if failed.load(Ordering::Relaxed) {
            return Err(Error::LengthMismatch {
                expected: hd as u64,
                found: 0,
            });
        }
        self.linear(&layer.o, layer.o_bias.as_ref(), out, n, hn, s.acts)?;
        for (xv, &o) in s.x[..n * h].iter_mut().zip(hn.iter()) {
            *xv += o;
        }
        Ok(())
    }

    fn mlp(&self, l: usize, s: &mut Scratch<'_>, n: usize) -> Result<()> {
        let cfg = &self.weights.config;
        let layer = self.weights.layer(l)?;
        let (h, ff) = (cfg.hidden, cfg.intermediate);
        let hn = &mut s.h[..n * h];
        for t in 0..n {
            rms_norm(
                &s.x[t * h..(t + 1) * h],
                &layer.mlp_norm,
                cfg.rms_eps,
                &mut hn[t * h..(t + 1) * h],
            )?;
        }
        let (gate, up) = (&mut s.gate[..n * ff], &mut s.up[..n * ff]);
        self.linears(
            hn,
            n,
            s.acts,
            &mut [
                (&layer.gate, layer.gate_bias.as_ref(), &mut *gate),
                (&layer.up, layer.up_bias.as_ref(), &mut *up),
            ],
        )?;
        self.kernels.silu_mul(gate, up)?;
        self.linear(&layer.down, layer.down_bias.as_ref(), gate, n, hn, s.acts)?;
        for (xv, &o) in s.x[..n * h].iter_mut().zip(hn.iter()) {
            *xv += o;
        }
        Ok(())
    }

    /// Final norm and head for every token of the chunk.
    fn head(&self, s: &mut Scratch<'_>, n: usize, logits: &mut [f32]) -> Result<()> {
        let cfg = &self.weights.config;
        let h = cfg.hidden;
        for t in 0..n {
            rms_norm(
                &s.x[t * h..(t + 1) * h],
                &self.weights.norm,
                cfg.rms_eps,
                &mut s.h[t * h..(t + 1) * h],
            )?;
        }
        self.linear(&self.weights.head, None, &s.h[..n * h], n, logits, s.acts)
    }

    /// Final norm and head for the chunk's last token only (generation needs no more).
    fn head_last(&self, s: &mut Scratch<'_>, n: usize, logits: &mut [f32]) -> Result<()> {
        let cfg = &self.weights.config;
        let h = cfg.hidden;
        let last = &s.x[(n - 1) * h..n * h];
        rms_norm(last, &self.weights.norm, cfg.rms_eps, &mut s.h[..h])?;
        self.linear(&self.weights.head, None, &s.h[..h], 1, logits, s.acts)
    }
}

/// Magic bytes at the start of a saved KV cache ([`KvCache::save`]).
pub const KV_STATE_MAGIC: [u8; 8] = *b"GCKVSTA\0";
/// Version of the saved-KV-cache format written by [`KvCache::save`].
pub const KV_STATE_VERSION: u16 = 1;
const KV_STATE_HEADER: usize = 64;

impl KvCache<'_> {
    /// Slots holding a live position: all of them once a ring has wrapped.
    fn live_slots(&self) -> usize {
        self.len.min(self.context)
    }

    /// Stored bytes of one slot (one position of one K or V head) in this cache's format.
    fn slot_bytes(&self) -> usize {
        let hd = self.config.head_dim;
        match self.format {
            KvFormat::F32 => 4 * hd,
            KvFormat::F16 => 2 * hd,
            KvFormat::I8 | KvFormat::I4 => 8 + self.code_bytes(),
        }
    }

    /// Bytes of codes in one row of an integer form (one byte per value, or two values a byte).
    fn code_bytes(&self) -> usize {
        match self.format {
            KvFormat::I4 => self.config.head_dim / 2,
            _ => self.config.head_dim,
        }
    }

    fn rows(&self) -> usize {
        self.config.n_layer * 2 * self.config.n_kv_head
    }

    /// Bytes [`KvCache::save`] writes now: the header, the filled positions and the checksum.
    /// It grows with every position fed, up to the value at a full (or wrapped) cache.
    pub fn saved_len(&self) -> Result<usize> {
        self.rows()
            .checked_mul(self.live_slots())
            .and_then(|n| n.checked_mul(self.slot_bytes()))
            .and_then(|n| n.checked_add(KV_STATE_HEADER + 4))
            .ok_or(Error::OutOfRange)
    }

    fn state_header(&self, payload: usize) -> [u8; KV_STATE_HEADER] {
        let mut h = [0u8; KV_STATE_HEADER];
        h[0..8].copy_from_slice(&KV_STATE_MAGIC);
        h[8..10].copy_from_slice(&KV_STATE_VERSION.to_le_bytes());
        let format: u16 = match self.format {
            KvFormat::F32 => 1,
            KvFormat::F16 => 2,
            KvFormat::I8 => 3,
            KvFormat::I4 => 4,
        };
        h[10..12].copy_from_slice(&format.to_le_bytes());
        let arch = self.config.arch.name().as_bytes();
        h[12..12 + arch.len().min(8)].copy_from_slice(&arch[..arch.len().min(8)]);
        let c = &self.config;
        let dims = [
            c.n_layer,
            c.hidden,
            c.n_head,
            c.n_kv_head,
            c.head_dim,
            c.vocab,
            self.context,
        ];
        for (k, d) in dims.iter().enumerate() {
            h[20 + 4 * k..24 + 4 * k].copy_from_slice(&(*d as u32).to_le_bytes());
        }
        h[48..56].copy_from_slice(&(self.len as u64).to_le_bytes());
        h[56..64].copy_from_slice(&(payload as u64).to_le_bytes());
        h
    }

    /// Writes the filled part of the cache and its position to `out` (little-endian,
    /// versioned, CRC-32 checked; layout in docs/decoder.md) and returns the bytes written,
    /// [`KvCache::saved_len`]. Values are saved as stored, so a restore is exact.
    pub fn save(&self, out: &mut [u8]) -> Result<usize> {
        let len = self.saved_len()?;
        let provided = out.len() as u64;
        let out = out.get_mut(..len).ok_or(Error::BufferTooSmall {
            needed: len as u64,
            provided,
        })?;
        let (header, rest) = out.split_at_mut(KV_STATE_HEADER);
        header.copy_from_slice(&self.state_header(len - KV_STATE_HEADER - 4));
        let payload = &mut rest[..len - KV_STATE_HEADER - 4];
        let (hd, live) = (self.config.head_dim, self.live_slots());
        let mut slots = payload.chunks_exact_mut(self.slot_bytes());
        for row in 0..self.rows() {
            for slot in 0..live {
                let at = (row * self.context + slot) * hd;
                let dst = slots.next().ok_or(Error::OutOfRange)?;
                match self.format {
                    KvFormat::F32 => {
                        for (d, v) in dst.chunks_exact_mut(4).zip(&self.f32s[at..at + hd]) {
                            d.copy_from_slice(&v.to_le_bytes());
                        }
                    }
                    KvFormat::F16 => {
                        for (d, v) in dst.chunks_exact_mut(2).zip(&self.f16s[at..at + hd]) {
                            d.copy_from_slice(&v.to_le_bytes());
                        }
                    }
                    KvFormat::I8 | KvFormat::I4 => {
                        let r = row * self.context + slot;
                        let cb = self.code_bytes();
                        dst[..4].copy_from_slice(&self.params[2 * r].to_le_bytes());
                        dst[4..8].copy_from_slice(&self.params[2 * r + 1].to_le_bytes());
                        dst[8..].copy_from_slice(&self.codes[r * cb..(r + 1) * cb]);
                    }
                }
            }
        }
        let sum = crate::models::rwkv6::crc32(&out[..len - 4]);
        out[len - 4..].copy_from_slice(&sum.to_le_bytes());
        Ok(len)
    }

    /// Replaces the cache's content and position with bytes from [`KvCache::save`] of a cache
    /// of the same model shape and format. A cache that never wrapped restores into any cache
    /// with room for its positions; a wrapped ring only into one of the same context. Checks
    /// magic, version, format, shape, length, checksum and finiteness before changing
    /// anything: on error the cache is unchanged.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        crate::models::rwkv6::check_saved_prefix(
            bytes,
            KV_STATE_HEADER,
            &KV_STATE_MAGIC,
            KV_STATE_VERSION,
            "KV state magic",
        )?;
        let ours = self.state_header(0);
        if bytes[10..44] != ours[10..44] {
            return Err(Error::BadMetadata {
                key: Name::new("KV state format, architecture or dimensions"),
            });
        }
        let word = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let long = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let saved_context = word(44) as usize;
        let positions = usize::try_from(long(48)).map_err(|_| Error::OutOfRange)?;
        let live = positions.min(saved_context);
        let wrapped = positions > saved_context;
        if (wrapped && saved_context != self.context) || (!wrapped && positions > self.context) {
            return Err(Error::ContextFull {
                capacity: self.context as u64,
            });
        }
        let payload_len = self
            .rows()
            .checked_mul(live)
            .and_then(|n| n.checked_mul(self.slot_bytes()))
            .ok_or(Error::OutOfRange)?;
        let total = payload_len + KV_STATE_HEADER + 4;
        if long(56) != payload_len as u64 || bytes.len() != total {
            return Err(Error::Truncated {
                needed: total as u64,
                available: bytes.len() as u64,
            });
        }
        if crate::models::rwkv6::crc32(&bytes[..total - 4]) != word(total - 4) {
            return Err(Error::Checksum);
        }
        let payload = &bytes[KV_STATE_HEADER..total - 4];
        let finite = match self.format {
            KvFormat::F32 => payload
                .chunks_exact(4)
                .all(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite()),
            KvFormat::F16 => payload
                .chunks_exact(2)
                .all(|b| f16::from_bits(u16::from_le_bytes([b[0], b[1]])).is_finite()),
            KvFormat::I8 | KvFormat::I4 => payload.chunks_exact(self.slot_bytes()).all(|s| {
                f32::from_le_bytes([s[0], s[1], s[2], s[3]]).is_finite()
                    && f32::from_le_bytes([s[4], s[5], s[6], s[7]]).is_finite()
            }),
        };
        if !finite {
            return Err(Error::NonFinite);
        }
        let hd = self.config.head_dim;
        let mut slots = payload.chunks_exact(self.slot_bytes());
        for row in 0..self.rows() {
            for slot in 0..live {
                let at = (row * self.context + slot) * hd;
                let src = slots.next().ok_or(Error::OutOfRange)?;
                match self.format {
                    KvFormat::F32 => {
                        for (v, b) in self.f32s[at..at + hd].iter_mut().zip(src.chunks_exact(4)) {
                            *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                        }
                    }
                    KvFormat::F16 => {
                        for (v, b) in self.f16s[at..at + hd].iter_mut().zip(src.chunks_exact(2)) {
                            *v = u16::from_le_bytes([b[0], b[1]]);
                        }
                    }
                    KvFormat::I8 | KvFormat::I4 => {
                        let r = row * self.context + slot;
                        let cb = self.code_bytes();
                        self.params[2 * r] = f32::from_le_bytes([src[0], src[1], src[2], src[3]]);
                        self.params[2 * r + 1] =
                            f32::from_le_bytes([src[4], src[5], src[6], src[7]]);
                        self.codes[r * cb..(r + 1) * cb].copy_from_slice(&src[8..]);
                    }
                }
            }
        }
        self.len = positions;
        Ok(())
    }
}

#[cfg(test)]
mod kv_state_tests {
    extern crate std;
    use super::*;
    use std::vec;
    use std::vec::Vec;

    fn config() -> Config {
        Config {
            arch: Arch::Qwen2,
            n_layer: 2,
            hidden: 16,
            intermediate: 32,
            n_head: 4,
            n_kv_head: 2,
            head_dim: 6,
            vocab: 40,
            rope_theta: 1e4,
            rms_eps: 1e-6,
            qkv_bias: true,
            o_bias: false,
            mlp_bias: false,
            tied: true,
            max_positions: 32,
            sliding_window: 0,
            first_sliding_layer: 0,
        }
    }

    /// A cache of `context` slots with `positions` stored positions of distinct values.
    fn filled<'s>(
        mem: &'s mut [u8],
        context: usize,
        format: KvFormat,
        positions: usize,
    ) -> KvCache<'s> {
        let cfg = config();
        let mut cache =
            KvCache::carve(&cfg, context, format, &mut Arena::new_unaligned(mem)).unwrap();
        let rows = cfg.n_layer * 2 * cfg.n_kv_head;
        for pos in 0..positions {
            for r in 0..rows {
                let x: Vec<f32> = (0..cfg.head_dim)
                    .map(|i| ((r * 31 + pos * 7 + i) % 23) as f32 * 0.37 - 4.0)
                    .collect();
                cache.store(r * context + pos % context, &x);
            }
        }
        cache.len = positions;
        cache
    }

    fn live_values(c: &KvCache<'_>) -> Vec<f32> {
        let rows = c.rows();
        let mut out = Vec::new();
        let mut q = vec![0.0f32; c.config.head_dim];
        for r in 0..rows {
            for slot in 0..c.live_slots() {
                // Every value, read back through the cache's own accessor with unit queries.
                for i in 0..c.config.head_dim {
                    q.fill(0.0);
                    q[i] = 1.0;
                    out.push(
                        c.dot(&Kernels::scalar(), r * c.context + slot, &q, 1.0)
                            .unwrap(),
                    );
                }
            }
        }
        out
    }

    fn bytes_for(context: usize, format: KvFormat) -> Vec<u8> {
        let plan = Decoder::plan(&config(), context, format, 1, 0).unwrap();
        vec![0u8; plan.state_bytes + 64]
    }

    #[test]
    fn round_trip_is_exact_in_every_format_and_into_a_longer_cache() {
        for format in [KvFormat::F32, KvFormat::F16, KvFormat::I8, KvFormat::I4] {
            let mut a = bytes_for(8, format);
            let cache = filled(&mut a, 8, format, 5);
            let mut saved = vec![0u8; cache.saved_len().unwrap()];
            assert_eq!(cache.save(&mut saved).unwrap(), saved.len());
            assert!(cache.save(&mut vec![0u8; saved.len() - 1]).is_err());
            let mut b = bytes_for(16, format);
            let mut other = filled(&mut b, 16, format, 0);
            other.restore(&saved).unwrap();
            assert_eq!(other.len(), 5);
            assert_eq!(live_values(&other), live_values(&cache));
        }
    }

    #[test]
    fn synthetic_fill_stores_like_forward_and_saves_like_a_real_cache() {
        let cfg = config();
        for format in [KvFormat::F32, KvFormat::F16, KvFormat::I8, KvFormat::I4] {
            let value = |k: usize| ((k * 13) % 17) as f32 * 0.25 - 2.0;
            let mut a = bytes_for(8, format);
            let mut synthetic = filled(&mut a, 8, format, 2);
            let mut k = 0;
            synthetic
                .fill_synthetic(5, || {
                    k += 1;
                    value(k - 1)
                })
                .unwrap();
            assert_eq!(synthetic.len(), 5);
            // The same values stored row by row, as forward stores keys and values.
            let mut b = bytes_for(8, format);
            let mut stored = filled(&mut b, 8, format, 0);
            let mut k = 0;
            for r in 0..stored.rows() {
                for slot in 0..5 {
                    let x: Vec<f32> = (0..cfg.head_dim).map(|i| value(k + i)).collect();
                    k += cfg.head_dim;
                    stored.store(r * 8 + slot, &x);
                }
            }
            stored.len = 5;
            assert_eq!(live_values(&synthetic), live_values(&stored));
            let mut saved = vec![0u8; synthetic.saved_len().unwrap()];
            synthetic.save(&mut saved).unwrap();
            let mut c = bytes_for(16, format);
            let mut restored = filled(&mut c, 16, format, 0);
            restored.restore(&saved).unwrap();
            assert_eq!(live_values(&restored), live_values(&synthetic));
        }
    }

    #[test]
    fn synthetic_fill_refuses_overflow_and_non_finite_values() {
        let mut a = bytes_for(8, KvFormat::F16);
        let mut cache = filled(&mut a, 8, KvFormat::F16, 3);
        assert!(matches!(
            cache.fill_synthetic(9, || 0.5),
            Err(Error::ContextFull { capacity: 8 })
        ));
        assert_eq!(cache.len(), 3);
        assert!(matches!(
            cache.fill_synthetic(4, || f32::NAN),
            Err(Error::NonFinite)
        ));
        assert_eq!(cache.len(), 3);
        cache.fill_synthetic(8, || 0.5).unwrap();
        assert_eq!(cache.len(), 8);
    }

    #[test]
    fn a_wrapped_ring_restores_only_into_the_same_context() {
        let mut a = bytes_for(4, KvFormat::F16);
        let ring = filled(&mut a, 4, KvFormat::F16, 11);
        let mut saved = vec![0u8; ring.saved_len().unwrap()];
        ring.save(&mut saved).unwrap();
        let mut b = bytes_for(8, KvFormat::F16);
        let mut longer = filled(&mut b, 8, KvFormat::F16, 2);
        assert!(matches!(
            longer.restore(&saved),
            Err(Error::ContextFull { .. })
        ));
        assert_eq!(longer.len(), 2);
        let mut c = bytes_for(4, KvFormat::F16);
        let mut same = filled(&mut c, 4, KvFormat::F16, 0);
        same.restore(&saved).unwrap();
        assert_eq!(same.len(), 11);
        assert_eq!(live_values(&same), live_values(&ring));
    }

    #[test]
    fn bad_bytes_are_refused_and_leave_the_cache_unchanged() {
        let mut a = bytes_for(8, KvFormat::F32);
        let cache = filled(&mut a, 8, KvFormat::F32, 6);
        let mut saved = vec![0u8; cache.saved_len().unwrap()];
        cache.save(&mut saved).unwrap();
        let mut b = bytes_for(8, KvFormat::F32);
        let mut target = filled(&mut b, 8, KvFormat::F32, 3);
        let before = live_values(&target);
        let mut check = |bytes: &[u8], want: fn(&Error) -> bool| {
            let e = target.restore(bytes).unwrap_err();
            assert!(want(&e), "{e:?}");
            assert_eq!(target.len(), 3);
            assert_eq!(live_values(&target), before);
        };
        check(&saved[..saved.len() - 1], |e| {
            matches!(e, Error::Truncated { .. })
        });
        check(&saved[..10], |e| matches!(e, Error::Truncated { .. }));
        let mut flipped = saved.clone();
        flipped[KV_STATE_HEADER + 5] ^= 1;
        check(&flipped, |e| matches!(e, Error::Checksum));
        let mut magic = saved.clone();
        magic[0] = b'X';
        check(&magic, |e| matches!(e, Error::BadMetadata { .. }));
        let mut version = saved.clone();
        version[8] = 2;
        check(&version, |e| matches!(e, Error::UnsupportedVersion { .. }));
        let mut dims = saved.clone();
        dims[20] ^= 1; // n_layer
        check(&dims, |e| matches!(e, Error::BadMetadata { .. }));
        // A NaN with a valid checksum: refused all the same.
        let mut nan = saved.clone();
        nan[KV_STATE_HEADER..KV_STATE_HEADER + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        let n = nan.len();
        let sum = crate::models::rwkv6::crc32(&nan[..n - 4]);
        nan[n - 4..].copy_from_slice(&sum.to_le_bytes());
        check(&nan, |e| matches!(e, Error::NonFinite));
        // Another format of the same model.
        let mut c = bytes_for(8, KvFormat::F16);
        let f16 = filled(&mut c, 8, KvFormat::F16, 6);
        let mut other = vec![0u8; f16.saved_len().unwrap()];
        f16.save(&mut other).unwrap();
        check(&other, |e| matches!(e, Error::BadMetadata { .. }));
        // More positions than this cache holds.
        let mut d = bytes_for(8, KvFormat::F32);
        let mut short = filled(&mut d, 2, KvFormat::F32, 0);
        assert!(matches!(
            short.restore(&saved),
            Err(Error::ContextFull { .. })
        ));
    }
}
