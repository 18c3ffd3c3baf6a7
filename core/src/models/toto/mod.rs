//! Toto (Datadog's decoder-only forecaster, `toto-ts` 0.2.0, Toto-Open-Base-1.0 architecture)
//! for any configuration: causal patch scaler, patch embedding, time-wise causal attention with
//! interleaved RoPE and xPos, variate-wise attention with group masks, SwiGLU, and a Student-T
//! mixture head, decoded patch by patch with a KV cache in caller memory.
//!
//! # Memory
//!
//! [`Toto::memory_plan`] gives the exact bytes for a [`ForecastSpec`]; the caller passes one
//! buffer of [`MemoryPlan::ram_bytes`] starting on an [`ARENA_ALIGN`] boundary (or
//! [`MemoryPlan::bytes_unaligned`] anywhere). The context is processed once, patch by patch, into
//! a shared KV cache; each batch of sample paths then decodes with its own small cache for the
//! generated patches, so 256 samples cost one context pass plus 256 decodes.
//!
//! # Matching the reference
//!
//! - The context is computed as one chunk: every context patch uses the xPos centre
//!   `(N−1)/2` of the chunk; each generated patch at position `n` uses `n/2`, and cached keys keep
//!   their own centre. This is the reference's KV-cache path, which every published evaluation
//!   uses (a full recompute differs by about 1e-5 relative).
//! - The fused QKV projection's output columns are `(qkv, head_dim, n_heads)` with heads fastest;
//!   heads are concatenated head-major before `wO`.
//! - Rotary angles are computed in f32, pairs interleaved; the xPos scale vector is the half-split
//!   `concat(ζ^p, ζ^p)`, so element `j` uses `ζ_{j mod hd/2}`.
//! - Generated values that are NaN, infinite or at least `f32::MAX / 2` in magnitude become 0,
//!   as the reference replaces them.
//!
//! # Missing values
//!
//! NaN or infinite inputs are missing: their weight in the scaler is 0 (like the reference's
//! padding mask) and the model sees the last observed value of that variate (0 before the first
//! observation, as for left padding). Magnitudes of 1e30 or more are rejected
//! ([`Error::OutOfRange`]).

mod sample;
mod scaler;
pub mod v2;

pub use sample::{Rng, mixture_mean, quantile_sorted, sample_mixture, sort_samples};
pub use scaler::{MINIMUM_SCALE, RunningStats, ScaleClamp};

use crate::arena::{ARENA_ALIGN, Arena, Carve, MemoryPlan, Planner};
use crate::error::{Error, Name, Result};
use crate::format::{SafeTensors, TensorView};
use crate::kernels::Kernels;
use crate::models::known_tensor_bytes;
use crate::ops::{self, Vector};
use crate::quant::Matrix;
use core::fmt::Write;

/// `goldcrest.arch` of a Toto file.
pub const ARCH: &str = "toto";

/// RMSNorm epsilon of Toto's layers.
pub const RMS_EPS: f32 = 1e-8;

/// RoPE base.
const ROPE_THETA: f32 = 10000.0;

/// xPos scale base.
const XPOS_SCALE_BASE: f64 = 512.0;

/// Inputs at or above this magnitude are rejected.
pub const MAX_INPUT_MAGNITUDE: f64 = 1e30;

/// Toto hyperparameters (`goldcrest.toto.*` metadata).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TotoConfig {
    /// Steps per patch (the released model: 64). Stride equals the patch size.
    pub patch_size: usize,
    /// Model width.
    pub embed_dim: usize,
    /// Transformer layers.
    pub num_layers: usize,
    /// Attention heads (head size `embed_dim / num_heads`, even).
    pub num_heads: usize,
    /// SwiGLU hidden width (the first projection has twice as many outputs).
    pub mlp_hidden_dim: usize,
    /// Every this many layers one is variate-wise; `None` (the reference's `-1`): none is.
    pub spacewise_every_n_layers: Option<usize>,
    /// Whether the variate-wise layer opens each block instead of closing it.
    pub spacewise_first: bool,
    /// Student-T mixture components.
    pub k_components: usize,
    /// Whether the scale is clamped around the context's global scale.
    pub stabilize_with_global: bool,
    /// Clamp range exponent: the scale stays within `10^±e` of the global scale.
    pub scale_factor_exponent: f64,
}

pub(crate) fn bad_meta(key: &str) -> Error {
    Error::BadMetadata {
        key: Name::new(key),
    }
}

/// Checks that every `(key, size)` is in `1..=65536` ([`Error::BadMetadata`] naming the first
/// that is not): the bound keeps every product of sizes a plan makes in range on 32-bit targets.
pub(crate) fn check_sizes(sizes: &[(&str, usize)]) -> Result<()> {
    match sizes.iter().find(|&&(_, v)| v == 0 || v > 1 << 16) {
        Some(&(key, _)) => Err(bad_meta(key)),
        None => Ok(()),
    }
}

impl TotoConfig {
    /// Reads and checks the configuration from a file's metadata.
    pub fn from_safetensors(st: &SafeTensors<'_>) -> Result<TotoConfig> {
        let meta = st.metadata();
        // `SafeTensors::parse` has already refused files of a newer major format version.
        meta.expect_arch(ARCH)?;
        let int = |name: &str| meta.hyperparameter_usize(ARCH, name);
        let every_key = "goldcrest.toto.spacewise_every_n_layers";
        let every = match meta.get_str(every_key)? {
            "-1" => None,
            s => Some(s.parse::<usize>().map_err(|_| bad_meta(every_key))?),
        };
        let flag = |name: &str, default: bool| meta.hyperparameter_bool_or(ARCH, name, default);
        let exponent = match meta.hyperparameter(ARCH, "scale_factor_exponent") {
            None => 10.0,
            Some(_) => meta.hyperparameter_f32(ARCH, "scale_factor_exponent")? as f64,
        };
        let config = TotoConfig {
            patch_size: int("patch_size")?,
            embed_dim: int("embed_dim")?,
            num_layers: int("num_layers")?,
            num_heads: int("num_heads")?,
            mlp_hidden_dim: int("mlp_hidden_dim")?,
            spacewise_every_n_layers: every,
            spacewise_first: flag("spacewise_first", false)?,
            k_components: int("k_components")?,
            stabilize_with_global: flag("stabilize_with_global", true)?,
            scale_factor_exponent: exponent,
        };
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<()> {
        check_sizes(&[
            ("goldcrest.toto.patch_size", self.patch_size),
            ("goldcrest.toto.embed_dim", self.embed_dim),
            ("goldcrest.toto.num_layers", self.num_layers),
            ("goldcrest.toto.num_heads", self.num_heads),
            ("goldcrest.toto.mlp_hidden_dim", self.mlp_hidden_dim),
            ("goldcrest.toto.k_components", self.k_components),
        ])?;
        if !self.embed_dim.is_multiple_of(self.num_heads) || !self.head_dim().is_multiple_of(2) {
            return Err(bad_meta("goldcrest.toto.num_heads"));
        }
        if let Some(n) = self.spacewise_every_n_layers
            && (n == 0 || !self.num_layers.is_multiple_of(n))
        {
            return Err(bad_meta("goldcrest.toto.spacewise_every_n_layers"));
        }
        if !self.scale_factor_exponent.is_finite() || self.scale_factor_exponent < 0.0 {
            return Err(bad_meta("goldcrest.toto.scale_factor_exponent"));
        }
        Ok(())
    }

    /// Size of one attention head.
    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads
    }

    /// Whether layer `i` attends across variates (otherwise across time).
    pub fn is_spacewise(&self, i: usize) -> bool {
        match self.spacewise_every_n_layers {
            None => false,
            Some(n) if self.spacewise_first => i.is_multiple_of(n),
            Some(n) => i % n == n - 1,
        }
    }

    /// Number of time-wise layers (the ones with a KV cache).
    pub fn time_layers(&self) -> usize {
        (0..self.num_layers)
            .filter(|&i| !self.is_spacewise(i))
            .count()
    }
}

/// What a forecast call will look like, for [`Toto::memory_plan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForecastSpec {
    /// Number of series forecast jointly.
    pub variates: usize,
    /// Steps of context per variate.
    pub context: usize,
    /// Steps to forecast.
    pub horizon: usize,
    /// Sample paths decoded together (1 for [`Mode::Mean`]); more uses more memory and runs the
    /// matrix products over more rows at once.
    pub batch: usize,
}

/// How forecast values are produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The reference's deterministic mean mode: each patch's mixture mean is fed back.
    Mean,
    /// `paths` sampled trajectories from `seed`, decoded `batch` at a time.
    Samples {
        /// Number of trajectories.
        paths: usize,
        /// Trajectories decoded together (must equal the plan's `batch`).
        batch: usize,
        /// Seed; path `i` uses stream `i`, so results do not depend on `batch`.
        seed: u64,
    },
}

/// One multivariate input series.
#[derive(Debug, Clone, Copy)]
pub struct Series<'s> {
    /// `variates × steps` values, variate-major; NaN or infinite marks a missing value.
    pub values: &'s [f64],
    /// Number of variates.
    pub variates: usize,
    /// Group id per variate: variates attend to each other only within a group. `None`: one group.
    pub groups: Option<&'s [u32]>,
}

impl Series<'_> {
    fn steps(&self) -> Result<usize> {
        if self.variates == 0 || self.values.is_empty() {
            return Err(Error::OutOfRange);
        }
        if !self.values.len().is_multiple_of(self.variates) {
            return Err(Error::LengthMismatch {
                expected: (self.values.len() / self.variates * self.variates) as u64,
                found: self.values.len() as u64,
            });
        }
        if let Some(g) = self.groups
            && g.len() != self.variates
        {
            return Err(Error::LengthMismatch {
                expected: self.variates as u64,
                found: g.len() as u64,
            });
        }
        if self
            .values
            .iter()
            .any(|x| x.is_finite() && x.abs() >= MAX_INPUT_MAGNITUDE)
        {
            return Err(Error::OutOfRange);
        }
        Ok(self.values.len() / self.variates)
    }

    fn group(&self, v: usize) -> u32 {
        self.groups.and_then(|g| g.get(v).copied()).unwrap_or(0)
    }
}

/// Receives `(token, step in patch, raw head projections, 4k scratch)` for each position.
type HeadSink<'f> = dyn FnMut(usize, usize, &RawHead<'_>, &mut [f32]) -> Result<()> + 'f;

/// Receives `(variate, patch, step in patch, head parameters)` for each context position.
type PositionSink<'f> = dyn FnMut(usize, usize, usize, &[f32]) + 'f;

/// A linear layer: weights in any matrix format, f32 bias.
#[derive(Debug, Clone, Copy)]
struct Linear<'a> {
    w: Matrix<'a>,
    b: &'a [f32],
}

impl Linear<'_> {
    fn apply(&self, k: &Kernels, x: &[f32], n: usize, y: &mut [f32]) -> Result<()> {
        self.apply_rows(k, 0, self.w.rows(), x, n, y)
    }

    /// Outputs `first..first + count` alone: `y` holds `n` rows of `count`.
    fn apply_rows(
        &self,
        k: &Kernels,
        first: usize,
        count: usize,
        x: &[f32],
        n: usize,
        y: &mut [f32],
    ) -> Result<()> {
        let w = self.w.row_range(first, count).ok_or(Error::OutOfRange)?;
        let b = self.b.get(first..first + count).ok_or(Error::OutOfRange)?;
        let y = y.get_mut(..n * count).ok_or(Error::OutOfRange)?;
        k.gemm(&w, x.get(..n * w.cols()).ok_or(Error::OutOfRange)?, n, y)?;
        for row in y.chunks_exact_mut(count) {
            for (v, b) in row.iter_mut().zip(b) {
                *v += *b;
            }
        }
        Ok(())
    }
}

struct LayerWeights<'a> {
    norm1: Vector<'a>,
    norm2: Vector<'a>,
    qkv: Linear<'a>,
    wo: Linear<'a>,
    mlp_in: Linear<'a>,
    mlp_out: Linear<'a>,
}

type NameBuf = heapless::String<128>;

fn tensor_name(parts: core::fmt::Arguments<'_>) -> Result<NameBuf> {
    let mut s = NameBuf::new();
    s.write_fmt(parts).map_err(|_| Error::OutOfRange)?;
    Ok(s)
}

/// A Toto model reading its weights in place.
#[derive(Debug, Clone, Copy)]
pub struct Toto<'a> {
    st: SafeTensors<'a>,
    config: TotoConfig,
    kernels: Kernels,
    patch_embed: Linear<'a>,
    output: OutputHead<'a>,
    prefill_chunk: usize,
}

/// Context patches processed per pass by default (see [`Toto::with_prefill_chunk`]).
pub const DEFAULT_PREFILL_CHUNK: usize = 8;

/// The unembedding plus the four mixture projections, or their exact product.
// One per model and no allocator to box with: the size difference is harmless.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy)]
enum OutputHead<'a> {
    /// `unembed` (`p·d × d`) then `df`, `loc_proj`, `scale_proj`, `mixture_weights` (`k × d`).
    Separate {
        unembed: Linear<'a>,
        projections: [Linear<'a>; 4],
    },
    /// `head.fused` (`p·4k × d`): rows by position, then df/loc/scale/weight, then component.
    Fused(Linear<'a>),
}

/// Name of the fused output head written by `goldcrest convert toto --fuse-head`.
pub const FUSED_HEAD: &str = "head.fused";

const LAYER_TENSORS: [&str; 10] = [
    "norm1.scale",
    "norm2.scale",
    "attention.wQKV.weight",
    "attention.wQKV.bias",
    "attention.wO.weight",
    "attention.wO.bias",
    "mlp.0.weight",
    "mlp.0.bias",
    "mlp.2.weight",
    "mlp.2.bias",
];

const HEAD_NAMES: [&str; 4] = ["df", "loc_proj", "scale_proj", "mixture_weights"];

impl<'a> Toto<'a> {
    /// Opens a goldcrest Toto file: reads the config and checks every tensor's presence and
    /// shape, and that the file has no other tensors.
    pub fn new(st: SafeTensors<'a>, kernels: Kernels) -> Result<Toto<'a>> {
        let config = TotoConfig::from_safetensors(&st)?;
        let (d, p, k) = (config.embed_dim, config.patch_size, config.k_components);
        let linear = |name: &str, rows: usize, cols: usize| -> Result<Linear<'a>> {
            Self::load_linear(&st, name, rows, cols)
        };
        let fused_rows = p
            .checked_mul(4 * k)
            .ok_or_else(|| bad_meta("goldcrest.toto.k_components"))?;
        let output = if st.contains(&tensor_name(format_args!("{FUSED_HEAD}.weight"))?) {
            OutputHead::Fused(linear(FUSED_HEAD, fused_rows, d)?)
        } else {
            OutputHead::Separate {
                unembed: linear("unembed", p * d, d)?,
                projections: [
                    linear("output_distribution.df", k, d)?,
                    linear("output_distribution.loc_proj", k, d)?,
                    linear("output_distribution.scale_proj", k, d)?,
                    linear("output_distribution.mixture_weights", k, d)?,
                ],
            }
        };
        let model = Toto {
            st,
            config,
            kernels,
            patch_embed: linear("patch_embed.projection", d, p)?,
            output,
            prefill_chunk: DEFAULT_PREFILL_CHUNK,
        };
        for i in 0..config.num_layers {
            model.layer(i)?;
        }
        known_tensor_bytes(&st, |name| model.is_expected(name))?;
        Ok(model)
    }

    fn is_expected(&self, name: &str) -> bool {
        let linear_named = |base: &str| {
            name.strip_prefix(base)
                .is_some_and(|r| r == ".weight" || r == ".bias")
        };
        if linear_named("patch_embed.projection") {
            return true;
        }
        match self.output {
            OutputHead::Fused(_) => {
                if linear_named(FUSED_HEAD) {
                    return true;
                }
            }
            OutputHead::Separate { .. } => {
                if linear_named("unembed") {
                    return true;
                }
                for h in HEAD_NAMES {
                    if let Some(r) = name.strip_prefix("output_distribution.")
                        && let Some(r) = r.strip_prefix(h)
                        && (r == ".weight" || r == ".bias")
                    {
                        return true;
                    }
                }
            }
        }
        if let Some(rest) = name.strip_prefix("transformer.layers.")
            && let Some((idx, field)) = rest.split_once('.')
            && idx
                .parse::<usize>()
                .is_ok_and(|i| i < self.config.num_layers)
        {
            return LAYER_TENSORS.contains(&field);
        }
        false
    }

    fn load_linear(
        st: &SafeTensors<'a>,
        base: &str,
        rows: usize,
        cols: usize,
    ) -> Result<Linear<'a>> {
        let wname = tensor_name(format_args!("{base}.weight"))?;
        let bname = tensor_name(format_args!("{base}.bias"))?;
        let w = st.tensor(&wname)?;
        w.expect_shape(&[rows as u64, cols as u64])?;
        let b = st.tensor(&bname)?;
        b.expect_shape(&[rows as u64])?;
        Ok(Linear {
            w: w.matrix()?,
            b: b.f32s()?,
        })
    }

    /// Layer `i`'s weights, found in one pass over the header (looked up by name one at a
    /// time, the ten tensors took about 2 ms of header scanning per step at the released size).
    fn layer(&self, i: usize) -> Result<LayerWeights<'a>> {
        let c = &self.config;
        let (d, h) = (c.embed_dim, c.mlp_hidden_dim);
        let mut names = [const { NameBuf::new() }; LAYER_TENSORS.len()];
        for (name, field) in names.iter_mut().zip(LAYER_TENSORS) {
            *name = tensor_name(format_args!("transformer.layers.{i}.{field}"))?;
        }
        let raws = self.st.find_raws(&names.each_ref().map(|n| n.as_str()));
        let view = |k: usize| -> Result<TensorView<'a>> {
            let name = names[k].as_str();
            let raw = raws[k].ok_or(Error::MissingTensor {
                tensor: Name::new(name),
            })?;
            TensorView::from_raw(&self.st, raw)
        };
        let vector = |k: usize, len: usize| -> Result<Vector<'a>> {
            let t = view(k)?;
            t.expect_shape(&[len as u64])?;
            Vector::from_bytes(names[k].as_str(), t.format()?, t.bytes())
        };
        // `LAYER_TENSORS` lists each linear layer's weight, then its bias.
        let lin = |k: usize, rows: usize, cols: usize| -> Result<Linear<'a>> {
            let (w, b) = (view(k)?, view(k + 1)?);
            w.expect_shape(&[rows as u64, cols as u64])?;
            b.expect_shape(&[rows as u64])?;
            Ok(Linear {
                w: w.matrix()?,
                b: b.f32s()?,
            })
        };
        Ok(LayerWeights {
            norm1: vector(0, d)?,
            norm2: vector(1, d)?,
            qkv: lin(2, 3 * d, d)?,
            wo: lin(4, d, d)?,
            mlp_in: lin(6, 2 * h, d)?,
            mlp_out: lin(8, d, h)?,
        })
    }

    /// Sets how many context patches go through the network per pass (at least 1). Larger
    /// chunks turn matrix-vector products into faster matrix products at the cost of scratch
    /// memory proportional to the chunk; firmware with little RAM uses 1. Results are the same
    /// for every chunk size (up to float summation order).
    pub fn with_prefill_chunk(mut self, patches: usize) -> Self {
        self.prefill_chunk = patches.max(1);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &TotoConfig {
        &self.config
    }

    /// Bytes of weights (read in place, never copied).
    pub fn weight_bytes(&self) -> usize {
        self.st.data().len()
    }

    fn dims(&self, spec: &ForecastSpec) -> Result<Dims> {
        let c = &self.config;
        if spec.variates == 0 || spec.context == 0 || spec.horizon == 0 || spec.batch == 0 {
            return Err(Error::OutOfRange);
        }
        let p = c.patch_size;
        let nc = spec.context.div_ceil(p);
        let hp = spec.horizon.div_ceil(p);
        let prefill = self.prefill_chunk.min(nc);
        let fused = matches!(self.output, OutputHead::Fused(_));
        let tokens = spec
            .batch
            .max(prefill)
            .checked_mul(spec.variates)
            .ok_or(Error::OutOfRange)?;
        let chunk = tokens.min(HEAD_CHUNK);
        // Sample paths split across workers in units of whole paths holding whole head chunks,
        // only when every part gets at least one unit (smaller batches stay on one thread).
        let unit_paths = lcm(chunk, spec.variates) / spec.variates;
        let parts = self
            .kernels
            .workers()
            .min(spec.batch / unit_paths)
            .clamp(1, MAX_PARTS);
        Ok(Dims {
            v: spec.variates,
            batch: spec.batch,
            nc,
            ng: hp - 1,
            hp,
            lt: c.time_layers(),
            d: c.embed_dim,
            hd: c.head_dim(),
            heads: c.num_heads,
            hid: c.mlp_hidden_dim,
            k: c.k_components,
            p,
            tokens,
            chunk,
            prefill,
            scores: (nc + hp - 1).max(spec.variates),
            un: if fused {
                0
            } else {
                mul(&[chunk, p, c.embed_dim])?
            },
            proj: mul(&[4, chunk, p, c.k_components])?,
            parts,
            unit_paths,
        })
    }

    /// Exact memory for a forecast of this shape: state (KV caches, scaler statistics, the
    /// context's next-patch distribution) and scratch. With a worker pool in the model's
    /// kernels and a batch large enough to split, the scratch holds head and attention buffers
    /// for each part (one per worker at most): plan with the kernels you forecast with.
    pub fn memory_plan(&self, spec: &ForecastSpec) -> Result<MemoryPlan> {
        let dims = self.dims(spec)?;
        let mut planner = Planner::new();
        carve_state(&mut planner, &dims)?;
        let state = planner
            .bytes()
            .checked_next_multiple_of(ARENA_ALIGN)
            .ok_or(Error::OutOfRange)?;
        carve_scratch(&mut planner, &dims)?;
        Ok(MemoryPlan {
            weight_bytes: self.weight_bytes(),
            state_bytes: state,
            scratch_bytes: planner.bytes() - state.min(planner.bytes()),
        })
    }

    /// Mean-mode forecast (deterministic): `out[v·horizon + t]`.
    pub fn forecast_mean(
        &self,
        series: &Series<'_>,
        horizon: usize,
        memory: &mut [u8],
        out: &mut [f64],
    ) -> Result<()> {
        let steps = series.steps()?;
        check_len(out.len(), series.variates * horizon)?;
        let spec = ForecastSpec {
            variates: series.variates,
            context: steps,
            horizon,
            batch: 1,
        };
        self.run(series, &spec, Mode::Mean, memory, &mut |v, t, _, x| {
            out[v * horizon + t] = x;
        })
    }

    /// Sampled forecast: `paths` trajectories into `out[(v·horizon + t)·paths + path]`.
    /// Use [`sort_samples`] and [`quantile_sorted`] on each `paths`-long run for quantiles.
    pub fn forecast_samples(
        &self,
        series: &Series<'_>,
        horizon: usize,
        mode: Mode,
        memory: &mut [u8],
        out: &mut [f32],
    ) -> Result<()> {
        let steps = series.steps()?;
        let Mode::Samples { paths, batch, .. } = mode else {
            return Err(Error::OutOfRange);
        };
        if paths == 0 || batch == 0 {
            return Err(Error::OutOfRange);
        }
        check_len(
            out.len(),
            series
                .variates
                .checked_mul(horizon)
                .and_then(|n| n.checked_mul(paths))
                .ok_or(Error::OutOfRange)?,
        )?;
        let spec = ForecastSpec {
            variates: series.variates,
            context: steps,
            horizon,
            batch,
        };
        self.run(series, &spec, mode, memory, &mut |v, t, path, x| {
            out[(v * horizon + t) * paths + path] = x as f32;
        })
    }

    /// The model's distribution for every step of the context given the patches before it
    /// (useful for anomaly scores): per variate and padded step, `[df; k], [loc; k], [scale; k],
    /// [weight; k]` in scaled space, into `out[(v·padded + step)·4k ..]` where `padded` is the
    /// context rounded up to whole patches. Memory as for a forecast with horizon 1.
    pub fn context_distributions(
        &self,
        series: &Series<'_>,
        memory: &mut [u8],
        out: &mut [f32],
    ) -> Result<()> {
        let steps = series.steps()?;
        let spec = ForecastSpec {
            variates: series.variates,
            context: steps,
            horizon: 1,
            batch: 1,
        };
        let dims = self.dims(&spec)?;
        let width = 4 * dims.k;
        check_len(out.len(), dims.v * dims.nc * dims.p * width)?;
        let mut arena = Arena::new_unaligned(memory);
        let mut state = carve_state(&mut arena, &dims)?;
        let mut scratch = carve_scratch(&mut arena, &dims)?;
        self.prefill(
            series,
            steps,
            &dims,
            &mut state,
            &mut scratch,
            Some(&mut |v, patch, s, params| {
                let at = ((v * dims.nc + patch) * dims.p + s) * width;
                out[at..at + width].copy_from_slice(params);
            }),
        )
    }

    /// Per-patch scaler statistics of the context (f64): `loc[v·patches + j]`,
    /// `scale[v·patches + j]`, `patches = ceil(steps / patch_size)`.
    pub fn context_statistics(
        &self,
        series: &Series<'_>,
        loc: &mut [f64],
        scale: &mut [f64],
    ) -> Result<()> {
        let steps = series.steps()?;
        let p = self.config.patch_size;
        let nc = steps.div_ceil(p);
        check_len(loc.len(), series.variates * nc)?;
        check_len(scale.len(), series.variates * nc)?;
        for v in 0..series.variates {
            let input = PaddedInput::new(series, v, steps, nc * p);
            let clamp = self.clamp(&input, nc * p);
            let mut stats = RunningStats::default();
            for j in 0..nc {
                for i in j * p..(j + 1) * p {
                    let (x, w) = input.at(i);
                    stats.push(x, w);
                }
                loc[v * nc + j] = stats.mean;
                scale[v * nc + j] = clamp.apply(stats.scale());
            }
        }
        Ok(())
    }

    fn clamp(&self, input: &PaddedInput<'_>, steps: usize) -> ScaleClamp {
        if self.config.stabilize_with_global {
            ScaleClamp::from_context(steps, |i| input.at(i), self.config.scale_factor_exponent)
        } else {
            ScaleClamp::NONE
        }
    }

    /// Runs the context through the model, patch by patch, into the shared KV cache; leaves the
    /// next patch's distribution in `state.next`. `each` sees every position's head parameters
    /// (`None` skips the per-patch heads).
    fn prefill(
        &self,
        series: &Series<'_>,
        steps: usize,
        dims: &Dims,
        state: &mut State<'_>,
        scratch: &mut Scratch<'_>,
        mut each: Option<&mut PositionSink<'_>>,
    ) -> Result<()> {
        let (p, v_count, nc) = (dims.p, dims.v, dims.nc);
        let padded = nc * p;
        for v in 0..v_count {
            let input = PaddedInput::new(series, v, steps, padded);
            let clamp = self.clamp(&input, padded);
            state.clamp[2 * v] = clamp.low;
            state.clamp[2 * v + 1] = clamp.high;
        }
        let center = (nc - 1) / 2;
        let width = 4 * dims.k;
        let mut j0 = 0;
        while j0 < nc {
            let m = dims.prefill.min(nc - j0);
            for j in j0..j0 + m {
                for v in 0..v_count {
                    let input = PaddedInput::new(series, v, steps, padded);
                    let mut stats = RunningStats::from_slice(&state.stats[4 * v..4 * v + 4]);
                    for i in j * p..(j + 1) * p {
                        let (x, w) = input.at(i);
                        stats.push(x, w);
                    }
                    state.stats[4 * v..4 * v + 4].copy_from_slice(&stats.to_array());
                    let clamp = ScaleClamp {
                        low: state.clamp[2 * v],
                        high: state.clamp[2 * v + 1],
                    };
                    let (loc, scale) = (stats.mean, clamp.apply(stats.scale()));
                    state.affine[2 * v] = loc;
                    state.affine[2 * v + 1] = scale;
                    let token = (j - j0) * v_count + v;
                    for i in 0..p {
                        let (x, _) = input.at(j * p + i);
                        scratch.patch[token * p + i] = ((x - loc) / scale) as f32;
                    }
                }
            }
            let last_chunk = j0 + m == nc;
            let last_only = each.is_none() && last_chunk;
            let last = self.step(dims, state, scratch, series, j0, m, center, last_only)?;
            let next = &mut *state.next;
            if let Some(each) = each.as_mut() {
                // Every position's distribution (tokens are patch-major, then variate).
                self.head(dims, scratch, 0, m * v_count, &mut |t, s, params| {
                    let (j, v) = (j0 + t / v_count, t % v_count);
                    each(v, j, s, params);
                    if j + 1 == nc {
                        let at = (v * p + s) * width;
                        next[at..at + width].copy_from_slice(params);
                    }
                })?;
            } else if last_chunk {
                // Only the last patch's distribution: the first forecast patch.
                self.head(dims, scratch, last, v_count, &mut |v, s, params| {
                    let at = (v * p + s) * width;
                    next[at..at + width].copy_from_slice(params);
                })?;
            }
            j0 += m;
        }
        Ok(())
    }

    fn run(
        &self,
        series: &Series<'_>,
        spec: &ForecastSpec,
        mode: Mode,
        memory: &mut [u8],
        emit: &mut dyn FnMut(usize, usize, usize, f64),
    ) -> Result<()> {
        let dims = self.dims(spec)?;
        let (paths, seed) = match mode {
            Mode::Mean => (1, 0),
            Mode::Samples { paths, batch, seed } => {
                if batch != spec.batch {
                    return Err(Error::OutOfRange);
                }
                (paths, seed)
            }
        };
        let mut arena = Arena::new_unaligned(memory);
        let mut state = carve_state(&mut arena, &dims)?;
        let mut scratch = carve_scratch(&mut arena, &dims)?;
        self.prefill(series, spec.context, &dims, &mut state, &mut scratch, None)?;
        let (p, v_count) = (dims.p, dims.v);
        let mut first = 0;
        while first < paths {
            let nb = dims.batch.min(paths - first);
            let n = nb * v_count;
            for b in 0..nb {
                let rng = Rng::new(seed, (first + b) as u64);
                scratch.rng[4 * b..4 * b + 4].copy_from_slice(&rng.to_array());
                for v in 0..v_count {
                    let t = b * v_count + v;
                    scratch.stats[4 * t..4 * t + 4].copy_from_slice(&state.stats[4 * v..4 * v + 4]);
                    scratch.affine[2 * t..2 * t + 2]
                        .copy_from_slice(&state.affine[2 * v..2 * v + 2]);
                }
            }
            for s in 0..dims.hp {
                self.generate_patch(&dims, &mut state, &mut scratch, series, nb, s, mode)?;
                for t in 0..n {
                    let (b, v) = (t / v_count, t % v_count);
                    for i in 0..p {
                        let step = s * p + i;
                        if step < spec.horizon {
                            emit(v, step, first + b, scratch.values[t * p + i]);
                        }
                    }
                }
            }
            first += nb;
        }
        Ok(())
    }

    /// Context patches `pos..pos + positions` of every variate: `scratch.patch` (scaled) in,
    /// `scratch.h` (final hidden states) out, the context KV cache written at those positions.
    /// With `last_only`, only the last position's final states are wanted (see [`Self::layers`]).
    /// Returns the row of `scratch.h` where the last position's tokens start.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &self,
        dims: &Dims,
        state: &mut State<'_>,
        scratch: &mut Scratch<'_>,
        series: &Series<'_>,
        pos: usize,
        positions: usize,
        center: usize,
        last_only: bool,
    ) -> Result<usize> {
        let kern = &self.kernels;
        let n = positions * dims.v;
        let (mut tokens, rest) = scratch.split();
        let (q, scores) = (&mut rest.q[..dims.hd], &mut rest.scores[..dims.scores]);
        let mut kv = Kv {
            k_ctx: Ctx::Write(state.k_ctx),
            v_ctx: Ctx::Write(state.v_ctx),
            k_gen: &mut [],
            v_gen: &mut [],
        };
        let mut time_layer = 0;
        let keep_last = last_only.then_some(dims.v);
        self.layers(dims, n, keep_last, &mut tokens, &mut |l, tokens, t| {
            if self.config.is_spacewise(l) {
                space_attention(dims, t.qkv, t.att, scores, series, tokens / dims.v)
            } else {
                let at = Attend {
                    layer: time_layer,
                    paths: 1,
                    first_pos: pos,
                    positions,
                    center,
                };
                time_layer += 1;
                time_attention(kern, dims, &mut kv, t.qkv, t.att, q, scores, &at)
            }
        })
    }

    /// Patch embedding and every layer for `n` tokens of `t.patch`, into `t.h`; `attend(layer,
    /// tokens, t)` fills the first `tokens` rows of `t.att` from `t.qkv`. With `keep_last =
    /// Some(k)`, only the last `k` tokens' final states are wanted (the context pass before a
    /// forecast): the last time-wise layer computes every token's keys and values (the cache
    /// needs them) but the queries, output projection and MLP of the last `k` alone, and the
    /// variate-wise layers after it (where positions do not interact) run on those `k`, moved to
    /// the start of `t.h`. For Toto-Open-Base (11 time-wise layers, then one variate-wise) that
    /// saves about a sixth of a 16-patch context pass. Returns the row of `t.h` where those `k`
    /// tokens end up (0 without `keep_last`).
    fn layers(
        &self,
        dims: &Dims,
        mut n: usize,
        keep_last: Option<usize>,
        t: &mut TokenBufs<'_>,
        attend: &mut dyn FnMut(usize, usize, &mut TokenBufs<'_>) -> Result<()>,
    ) -> Result<usize> {
        let kern = &self.kernels;
        let (d, hid) = (dims.d, dims.hid);
        // One past the last time-wise layer (0 when there is none).
        let tail = (0..self.config.num_layers)
            .rev()
            .find(|&l| !self.config.is_spacewise(l))
            .map_or(0, |l| l + 1);
        self.patch_embed.apply(kern, t.patch, n, t.h)?;
        let keep = keep_last.filter(|&k| k < n);
        if let Some(k) = keep
            && tail == 0
        {
            t.h.copy_within((n - k) * d..n * d, 0);
            n = k;
        }
        for l in 0..self.config.num_layers {
            let lw = self.layer(l)?;
            rms_norm_rows(&t.h[..n * d], lw.norm1, &mut t.xn[..n * d])?;
            // The tokens of this layer whose outputs nobody reads: all but the kept ones in the
            // last time-wise layer.
            let dropped = match keep {
                Some(k) if l + 1 == tail && n > k => n - k,
                _ => 0,
            };
            if dropped > 0 {
                // Keys and values (rows d..3d of the fused QKV) of the dropped tokens, 2d-wide
                // at the start of `t.qkv`, then spread to their 3d-wide rows, last first (row
                // i moves to i·3d + d ≥ i·2d, past every row not yet moved), with the queries
                // zeroed (their attention outputs are not read).
                lw.qkv
                    .apply_rows(kern, d, 2 * d, &t.xn[..dropped * d], dropped, t.qkv)?;
                for i in (0..dropped).rev() {
                    t.qkv.copy_within(i * 2 * d..(i + 1) * 2 * d, i * 3 * d + d);
                    t.qkv[i * 3 * d..i * 3 * d + d].fill(0.0);
                }
                lw.qkv.apply(
                    kern,
                    &t.xn[dropped * d..n * d],
                    n - dropped,
                    &mut t.qkv[dropped * 3 * d..],
                )?;
            } else {
                lw.qkv.apply(kern, t.xn, n, t.qkv)?;
            }
            attend(l, n, t)?;
            if dropped > 0 {
                t.h.copy_within(dropped * d..n * d, 0);
                t.att.copy_within(dropped * d..n * d, 0);
                n -= dropped;
            }
            lw.wo.apply(kern, t.att, n, t.xn)?;
            add_rows(&mut t.h[..n * d], &t.xn[..n * d]);
            rms_norm_rows(&t.h[..n * d], lw.norm2, &mut t.xn[..n * d])?;
            lw.mlp_in.apply(kern, t.xn, n, t.up)?;
            for i in 0..n {
                let u = &t.up[i * 2 * hid..(i + 1) * 2 * hid];
                let g = &mut t.gate[i * hid..(i + 1) * hid];
                let (a, b) = u.split_at(hid);
                for ((g, &a), &b) in g.iter_mut().zip(a).zip(b) {
                    *g = silu(a) * b;
                }
            }
            lw.mlp_out.apply(kern, t.gate, n, t.xn)?;
            add_rows(&mut t.h[..n * d], &t.xn[..n * d]);
        }
        Ok(keep_last.map_or(0, |k| n - k.min(n)))
    }

    /// Paths per part when `nb` paths decode together (the last part also takes what is left):
    /// whole units of whole head chunks of whole paths, so every token meets the same products
    /// (each head chunk the same tokens; layer products of at least
    /// [`crate::kernels::GEMM_INVARIANT_TOKENS`] tokens) and the same draws whichever part
    /// and thread it falls in.
    fn part_paths(dims: &Dims, nb: usize) -> usize {
        let unit = dims.unit_paths.max(1);
        let units = nb / unit;
        let parts = dims.parts.min(units).max(1);
        (units.div_ceil(parts) * unit).max(unit)
    }

    /// Generated patch `s` (0: drawn from the context's distribution) of `nb` paths into
    /// `scratch.values`, split into parts of whole paths that run on the kernels' workers.
    #[allow(clippy::too_many_arguments)]
    fn generate_patch(
        &self,
        dims: &Dims,
        state: &mut State<'_>,
        scratch: &mut Scratch<'_>,
        series: &Series<'_>,
        nb: usize,
        s: usize,
        mode: Mode,
    ) -> Result<()> {
        let per = Self::part_paths(dims, nb);
        let (v, d, p, k) = (dims.v, dims.d, dims.p, dims.k);
        let gen_per_path = mul(&[dims.lt, v, dims.ng, d])?;
        let (mut tokens, mut rest) = scratch.split();
        let (mut k_gen, mut v_gen) = (&mut *state.k_gen, &mut *state.v_gen);
        let mut parts: heapless::Vec<DecodePart<'_>, MAX_PARTS> = heapless::Vec::new();
        let mut b0 = 0;
        while b0 < nb {
            let left = nb - b0;
            let paths = if left < per + dims.unit_paths {
                left
            } else {
                per
            };
            let n = paths * v;
            let part = DecodePart {
                paths,
                tokens: tokens.take_front(n, dims)?,
                q: cut(&mut rest.q, dims.hd)?,
                scores: cut(&mut rest.scores, dims.scores)?,
                un: cut(&mut rest.un, dims.un)?,
                proj: cut(&mut rest.proj, dims.proj)?,
                mix: cut(&mut rest.mix, 4 * k)?,
                values: cut(&mut rest.values, n * p)?,
                stats: cut(&mut rest.stats, n * 4)?,
                affine: cut(&mut rest.affine, n * 2)?,
                rng: cut(&mut rest.rng, paths * 4)?,
                k_gen: cut(&mut k_gen, paths * gen_per_path)?,
                v_gen: cut(&mut v_gen, paths * gen_per_path)?,
                result: Ok(()),
            };
            parts.push(part).map_err(|_| Error::OutOfRange)?;
            b0 += paths;
        }
        let shared = Shared {
            k_ctx: state.k_ctx,
            v_ctx: state.v_ctx,
            clamp: state.clamp,
            next: state.next,
        };
        // Parts on the workers run their products on their own thread: the pool's workers
        // are all busy with the parts (one part runs with the pool as usual).
        let per_part = if parts.len() >= 2 {
            Toto {
                kernels: self.kernels.single_threaded(),
                ..*self
            }
        } else {
            *self
        };
        self.kernels.for_each_mut(&mut parts, &|part| {
            part.result = per_part.decode_part(dims, part, &shared, series, s, mode);
        });
        parts.iter().try_for_each(|part| part.result)
    }

    /// [`Toto::generate_patch`] for one part.
    fn decode_part(
        &self,
        dims: &Dims,
        part: &mut DecodePart<'_>,
        shared: &Shared<'_>,
        series: &Series<'_>,
        s: usize,
        mode: Mode,
    ) -> Result<()> {
        let (v_count, p, k) = (dims.v, dims.p, dims.k);
        let width = 4 * k;
        let n = part.paths * v_count;
        let kern = &self.kernels;
        if s == 0 {
            for t in 0..n {
                let v = t % v_count;
                for i in 0..p {
                    let at = (v * p + i) * width;
                    let params = &shared.next[at..at + width];
                    let x = generate(mode, part.rng, t / v_count, params, k);
                    part.values[t * p + i] = unscale(&part.affine[2 * t..2 * t + 2], x);
                }
            }
            return Ok(());
        }
        for t in 0..n {
            let v = t % v_count;
            let mut stats = RunningStats::from_slice(&part.stats[4 * t..4 * t + 4]);
            for i in 0..p {
                stats.push(part.values[t * p + i], 1.0);
            }
            part.stats[4 * t..4 * t + 4].copy_from_slice(&stats.to_array());
            let clamp = ScaleClamp {
                low: shared.clamp[2 * v],
                high: shared.clamp[2 * v + 1],
            };
            let (loc, scale) = (stats.mean, clamp.apply(stats.scale()));
            part.affine[2 * t] = loc;
            part.affine[2 * t + 1] = scale;
            for i in 0..p {
                part.tokens.patch[t * p + i] = ((part.values[t * p + i] - loc) / scale) as f32;
            }
        }
        let pos = dims.nc + s - 1;
        let DecodePart {
            paths,
            tokens,
            q,
            scores,
            un,
            proj,
            mix,
            values,
            affine,
            rng,
            k_gen,
            v_gen,
            ..
        } = part;
        let mut kv = Kv {
            k_ctx: Ctx::Read(shared.k_ctx),
            v_ctx: Ctx::Read(shared.v_ctx),
            k_gen,
            v_gen,
        };
        let mut time_layer = 0;
        self.layers(dims, n, None, tokens, &mut |l, _, t| {
            if self.config.is_spacewise(l) {
                space_attention(dims, t.qkv, t.att, scores, series, *paths)
            } else {
                let at = Attend {
                    layer: time_layer,
                    paths: *paths,
                    first_pos: pos,
                    positions: 1,
                    center: pos / 2,
                };
                time_layer += 1;
                time_attention(kern, dims, &mut kv, t.qkv, t.att, q, scores, &at)
            }
        })?;
        let mut hs = HeadScratch {
            h: tokens.h,
            un,
            proj,
            mix,
        };
        let (values, affine, rng) = (&mut **values, &**affine, &mut **rng);
        self.head_split(dims, &mut hs, n, &mut |t, i, raw, weights| {
            let x = generate_raw(kern, mode, rng, t / v_count, raw, weights)?;
            values[t * p + i] = unscale(&affine[2 * t..2 * t + 2], x);
            Ok(())
        })
    }

    fn head(
        &self,
        dims: &Dims,
        scratch: &mut Scratch<'_>,
        first: usize,
        n: usize,
        each: &mut dyn FnMut(usize, usize, &[f32]),
    ) -> Result<()> {
        let mut hs = HeadScratch {
            h: &scratch.h[first * dims.d..],
            un: scratch.un,
            proj: scratch.proj,
            mix: scratch.mix,
        };
        let width = 4 * dims.k;
        self.head_split(dims, &mut hs, n, &mut |t, s, raw, mix| {
            raw.params(&self.kernels, mix)?;
            each(t, s, &mix[..width]);
            Ok(())
        })
    }

    /// Unembeds `n` tokens' hidden states and hands each of their `p` positions' mixture
    /// projections to `each` (with a `4k` scratch), `chunk` tokens at a time.
    fn head_split(
        &self,
        dims: &Dims,
        hs: &mut HeadScratch<'_>,
        n: usize,
        each: &mut HeadSink<'_>,
    ) -> Result<()> {
        let (d, p, k) = (dims.d, dims.p, dims.k);
        let kern = &self.kernels;
        let width = 4 * k;
        let mut t0 = 0;
        while t0 < n {
            let c = dims.chunk.min(n - t0);
            let rows = &hs.h[t0 * d..(t0 + c) * d];
            // Where (token tc, position s, part j) starts in `proj`.
            let at: &dyn Fn(usize, usize, usize) -> usize = match self.output {
                OutputHead::Separate {
                    unembed,
                    projections,
                } => {
                    unembed.apply(kern, rows, c, hs.un)?;
                    for (j, proj) in projections.iter().enumerate() {
                        let out =
                            &mut hs.proj[j * dims.chunk * p * k..(j + 1) * dims.chunk * p * k];
                        proj.apply(kern, hs.un, c * p, out)?;
                    }
                    &|tc, s, j| j * dims.chunk * p * k + (tc * p + s) * k
                }
                OutputHead::Fused(fused) => {
                    fused.apply(kern, rows, c, hs.proj)?;
                    &|tc, s, j| (tc * p + s) * width + j * k
                }
            };
            for tc in 0..c {
                for s in 0..p {
                    let part = |j: usize| &hs.proj[at(tc, s, j)..at(tc, s, j) + k];
                    let raw = RawHead {
                        df: part(0),
                        loc: part(1),
                        scale: part(2),
                        logits: part(3),
                    };
                    each(t0 + tc, s, &raw, &mut hs.mix[..width])?;
                }
            }
            t0 += c;
        }
        Ok(())
    }
}

fn check_len(found: usize, expected: usize) -> Result<()> {
    if found == expected {
        Ok(())
    } else {
        Err(Error::LengthMismatch {
            expected: expected as u64,
            found: found as u64,
        })
    }
}

/// Feeds back a value as the reference does: the mixture mean or a draw, unscaled.
fn generate(mode: Mode, rng_state: &mut [u64], path: usize, params: &[f32], k: usize) -> f64 {
    match mode {
        Mode::Mean => mixture_mean(params, k),
        Mode::Samples { .. } => {
            let slot = &mut rng_state[4 * path..4 * path + 4];
            let mut rng = Rng::from_array([slot[0], slot[1], slot[2], slot[3]]);
            let x = sample_mixture(&mut rng, params, k);
            slot.copy_from_slice(&rng.to_array());
            x
        }
    }
}

/// One position's mixture projections before their activations: `[df; k], [loc; k],
/// [scale; k], [logits; k]` as the linear layers give them.
struct RawHead<'p> {
    df: &'p [f32],
    loc: &'p [f32],
    scale: &'p [f32],
    logits: &'p [f32],
}

impl RawHead<'_> {
    /// The mixture parameters `[df; k], [loc; k], [scale; k], [weight; k]` into `mix` (`4k`).
    fn params(&self, kern: &Kernels, mix: &mut [f32]) -> Result<()> {
        let k = self.loc.len();
        for i in 0..k {
            mix[i] = student_df(self.df[i]);
            mix[k + i] = self.loc[i];
            mix[2 * k + i] = student_scale(self.scale[i]);
        }
        mix[3 * k..4 * k].copy_from_slice(self.logits);
        kern.softmax(&mut mix[3 * k..4 * k])
    }
}

/// A component's degrees of freedom from its projection (above 2, so its variance is finite).
fn student_df(raw: f32) -> f32 {
    2.0 + softplus(raw).max(f32::EPSILON)
}

/// A component's scale from its projection.
fn student_scale(raw: f32) -> f32 {
    softplus(raw).max(f32::EPSILON)
}

/// [`generate`] from the raw projections: only the picked component's degrees of freedom and
/// scale go through softplus (the same numbers as [`RawHead::params`] then [`generate`], for a
/// fraction of the transcendental functions). `weights`: `k` scratch.
fn generate_raw(
    kern: &Kernels,
    mode: Mode,
    rng_state: &mut [u64],
    path: usize,
    raw: &RawHead<'_>,
    weights: &mut [f32],
) -> Result<f64> {
    let k = raw.loc.len();
    let weights = &mut weights[..k];
    weights.copy_from_slice(raw.logits);
    kern.softmax(weights)?;
    Ok(match mode {
        Mode::Mean => sample::weighted_mean(raw.loc, weights),
        Mode::Samples { .. } => {
            let slot = &mut rng_state[4 * path..4 * path + 4];
            let mut rng = Rng::from_array([slot[0], slot[1], slot[2], slot[3]]);
            let pick = sample::pick_component(&mut rng, weights);
            let x = sample::student_t_draw(
                &mut rng,
                student_df(raw.df[pick]),
                raw.loc[pick],
                student_scale(raw.scale[pick]),
            );
            slot.copy_from_slice(&rng.to_array());
            x
        }
    })
}

fn unscale(affine: &[f64], z: f64) -> f64 {
    let x = affine[0] + affine[1] * z;
    if !x.is_finite() || x.abs() >= (f32::MAX / 2.0) as f64 {
        0.0
    } else {
        x
    }
}

/// The input of one variate as the reference sees it after left padding: `(value, weight)`.
struct PaddedInput<'s> {
    row: &'s [f64],
    pad: usize,
}

impl<'s> PaddedInput<'s> {
    fn new(series: &Series<'s>, v: usize, steps: usize, padded: usize) -> Self {
        PaddedInput {
            row: &series.values[v * steps..(v + 1) * steps],
            pad: padded - steps,
        }
    }

    /// Missing values carry the last observed value forward (0 before the first).
    fn at(&self, i: usize) -> (f64, f64) {
        if i < self.pad {
            return (0.0, 0.0);
        }
        let j = i - self.pad;
        let x = self.row[j];
        if x.is_finite() {
            return (x, 1.0);
        }
        let last = self.row[..j].iter().rev().find(|x| x.is_finite());
        (last.copied().unwrap_or(0.0), 0.0)
    }
}

/// Tokens whose head runs in one matrix product (bounds the unembedding scratch: at the
/// released size, 64 tokens take 12.6 MB; each chunk streams the 151 MB f32 unembedding once).
const HEAD_CHUNK: usize = 64;

#[derive(Debug, Clone, Copy)]
struct Dims {
    v: usize,
    batch: usize,
    nc: usize,
    ng: usize,
    hp: usize,
    lt: usize,
    d: usize,
    hd: usize,
    heads: usize,
    hid: usize,
    k: usize,
    p: usize,
    tokens: usize,
    chunk: usize,
    prefill: usize,
    /// Attention score scratch per part.
    scores: usize,
    /// Unembedding scratch per part (0 with a fused head).
    un: usize,
    /// Mixture projection scratch per part.
    proj: usize,
    /// Parts a batch of sample paths may be split into (each with its own head scratch).
    parts: usize,
    /// Paths per split unit: whole head chunks of whole paths.
    unit_paths: usize,
}

/// Most parts a batch of sample paths is split into.
const MAX_PARTS: usize = 16;

struct Bufs<C: Carve> {
    k_ctx: C::Out<f32>,
    v_ctx: C::Out<f32>,
    k_gen: C::Out<f32>,
    v_gen: C::Out<f32>,
    stats: C::Out<f64>,
    clamp: C::Out<f64>,
    affine: C::Out<f64>,
    next: C::Out<f32>,
}

type State<'m> = Bufs<Arena<'m>>;

fn lcm(a: usize, b: usize) -> usize {
    let (mut x, mut y) = (a, b);
    while y != 0 {
        (x, y) = (y, x % y);
    }
    a.checked_div(x).map_or(0, |q| q * b)
}

/// The first `n` elements of `*buf`, leaving the rest in `*buf`.
fn cut<'b, T>(buf: &mut &'b mut [T], n: usize) -> Result<&'b mut [T]> {
    if n > buf.len() {
        return Err(Error::OutOfRange);
    }
    let (head, rest) = core::mem::take(buf).split_at_mut(n);
    *buf = rest;
    Ok(head)
}

/// Token-major buffers of the layers.
struct TokenBufs<'b> {
    h: &'b mut [f32],
    xn: &'b mut [f32],
    att: &'b mut [f32],
    qkv: &'b mut [f32],
    up: &'b mut [f32],
    gate: &'b mut [f32],
    patch: &'b mut [f32],
}

impl<'b> TokenBufs<'b> {
    /// The first `n` tokens' rows of every buffer, taken off the front (the rest stays).
    fn take_front(&mut self, n: usize, dims: &Dims) -> Result<TokenBufs<'b>> {
        let (d, hid) = (dims.d, dims.hid);
        Ok(TokenBufs {
            h: cut(&mut self.h, n * d)?,
            xn: cut(&mut self.xn, n * d)?,
            att: cut(&mut self.att, n * d)?,
            qkv: cut(&mut self.qkv, n * 3 * d)?,
            up: cut(&mut self.up, n * 2 * hid)?,
            gate: cut(&mut self.gate, n * hid)?,
            patch: cut(&mut self.patch, n * dims.p)?,
        })
    }
}

/// The scratch buffers besides the layers' [`TokenBufs`]: attention, head and sampler state.
struct ScratchRest<'b> {
    q: &'b mut [f32],
    scores: &'b mut [f32],
    un: &'b mut [f32],
    proj: &'b mut [f32],
    mix: &'b mut [f32],
    values: &'b mut [f64],
    stats: &'b mut [f64],
    affine: &'b mut [f64],
    rng: &'b mut [u64],
}

impl Scratch<'_> {
    /// Every buffer at once: the layers' token buffers and the rest.
    fn split(&mut self) -> (TokenBufs<'_>, ScratchRest<'_>) {
        let ScratchBufs {
            h,
            xn,
            att,
            qkv,
            q,
            up,
            gate,
            patch,
            scores,
            un,
            proj,
            mix,
            values,
            stats,
            affine,
            rng,
        } = self;
        (
            TokenBufs {
                h,
                xn,
                att,
                qkv,
                up,
                gate,
                patch,
            },
            ScratchRest {
                q,
                scores,
                un,
                proj,
                mix,
                values,
                stats,
                affine,
                rng,
            },
        )
    }
}

/// A group of sample paths generating one patch, with its own buffers (see
/// [`Toto::generate_patch`]).
struct DecodePart<'b> {
    paths: usize,
    tokens: TokenBufs<'b>,
    q: &'b mut [f32],
    scores: &'b mut [f32],
    un: &'b mut [f32],
    proj: &'b mut [f32],
    mix: &'b mut [f32],
    values: &'b mut [f64],
    stats: &'b mut [f64],
    affine: &'b mut [f64],
    rng: &'b mut [u64],
    k_gen: &'b mut [f32],
    v_gen: &'b mut [f32],
    result: Result<()>,
}

/// What every part reads: the context's KV cache, scale clamps and next-patch distribution.
struct Shared<'b> {
    k_ctx: &'b [f32],
    v_ctx: &'b [f32],
    clamp: &'b [f64],
    next: &'b [f32],
}

/// The context cache: written while the context is processed, read while paths decode.
enum Ctx<'c> {
    Write(&'c mut [f32]),
    Read(&'c [f32]),
}

impl Ctx<'_> {
    fn read(&self) -> &[f32] {
        match self {
            Ctx::Write(c) => c,
            Ctx::Read(c) => c,
        }
    }
}

/// Key and value caches: the context's, and the generated patches' of the paths at hand
/// (path-major: `((path · time layers + layer) · variates + variate) · generated + patch`).
struct Kv<'c> {
    k_ctx: Ctx<'c>,
    v_ctx: Ctx<'c>,
    k_gen: &'c mut [f32],
    v_gen: &'c mut [f32],
}

/// Which tokens a time-wise attention call covers.
struct Attend {
    layer: usize,
    paths: usize,
    first_pos: usize,
    positions: usize,
    center: usize,
}

fn mul(xs: &[usize]) -> Result<usize> {
    xs.iter()
        .try_fold(1usize, |a, &x| a.checked_mul(x))
        .ok_or(Error::OutOfRange)
}

fn carve_state<C: Carve>(c: &mut C, d: &Dims) -> Result<Bufs<C>> {
    let ctx = mul(&[d.lt, d.v, d.nc, d.d])?;
    let generated = mul(&[d.lt, d.batch, d.v, d.ng, d.d])?;
    Ok(Bufs {
        k_ctx: c.take(ctx)?,
        v_ctx: c.take(ctx)?,
        k_gen: c.take(generated)?,
        v_gen: c.take(generated)?,
        stats: c.take(4 * d.v)?,
        clamp: c.take(2 * d.v)?,
        affine: c.take(2 * d.v)?,
        next: c.take(mul(&[d.v, d.p, 4, d.k])?)?,
    })
}

struct ScratchBufs<C: Carve> {
    h: C::Out<f32>,
    xn: C::Out<f32>,
    att: C::Out<f32>,
    qkv: C::Out<f32>,
    q: C::Out<f32>,
    up: C::Out<f32>,
    gate: C::Out<f32>,
    patch: C::Out<f32>,
    scores: C::Out<f32>,
    un: C::Out<f32>,
    proj: C::Out<f32>,
    mix: C::Out<f32>,
    values: C::Out<f64>,
    stats: C::Out<f64>,
    affine: C::Out<f64>,
    rng: C::Out<u64>,
}

type Scratch<'m> = ScratchBufs<Arena<'m>>;

fn carve_scratch<C: Carve>(c: &mut C, d: &Dims) -> Result<ScratchBufs<C>> {
    let t = d.tokens;
    Ok(ScratchBufs {
        h: c.take(mul(&[t, d.d])?)?,
        xn: c.take(mul(&[t, d.d])?)?,
        att: c.take(mul(&[t, d.d])?)?,
        qkv: c.take(mul(&[t, 3, d.d])?)?,
        q: c.take(mul(&[d.parts, d.hd])?)?,
        up: c.take(mul(&[t, 2, d.hid])?)?,
        gate: c.take(mul(&[t, d.hid])?)?,
        patch: c.take(mul(&[t, d.p])?)?,
        scores: c.take(mul(&[d.parts, d.scores])?)?,
        un: c.take(mul(&[d.parts, d.un])?)?,
        proj: c.take(mul(&[d.parts, d.proj])?)?,
        mix: c.take(mul(&[d.parts, 4, d.k])?)?,
        values: c.take(mul(&[t, d.p])?)?,
        stats: c.take(mul(&[t, 4])?)?,
        affine: c.take(mul(&[t, 2])?)?,
        rng: c.take(mul(&[d.batch, 4])?)?,
    })
}

struct HeadScratch<'b> {
    h: &'b [f32],
    un: &'b mut [f32],
    proj: &'b mut [f32],
    mix: &'b mut [f32],
}

fn rms_norm_rows(x: &[f32], scale: Vector<'_>, out: &mut [f32]) -> Result<()> {
    let d = scale.len();
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        or.copy_from_slice(xr);
        ops::rms_norm(or, scale, RMS_EPS)?;
    }
    Ok(())
}

fn add_rows(h: &mut [f32], delta: &[f32]) {
    for (a, b) in h.iter_mut().zip(delta) {
        *a += *b;
    }
}

/// `torch.nn.functional.softplus` (linear above 20).
fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        libm::log1pf(crate::ops::exp_fast(x))
    }
}

/// SiLU with [`crate::ops::exp_fast`]: branch-free, so the SwiGLU loop over a row vectorises
/// (with `libm::expf`, the SwiGLU gate and the head's softplus took a fifth of a small model's
/// sampled forecast).
#[inline]
fn silu(x: f32) -> f32 {
    x * (1.0 / (1.0 + crate::ops::exp_fast(-x)))
}

/// Head dimensions up to this use a per-position [`RopeTable`] (on the stack); larger ones
/// compute the factors for every head vector.
const ROPE_TABLE_DIM: usize = 256;

/// RoPE and xPos factors of one (position, xPos centre), shared by every head, query and key
/// of that position: the transcendental functions run once per position instead of once per
/// head vector (the same values, bit for bit).
struct RopeTable {
    hd: usize,
    pos: usize,
    center: usize,
    cos: [f32; ROPE_TABLE_DIM / 2],
    sin: [f32; ROPE_TABLE_DIM / 2],
    zeta: [f32; ROPE_TABLE_DIM],
    zeta_inverse: [f32; ROPE_TABLE_DIM],
}

impl RopeTable {
    fn new() -> Self {
        RopeTable {
            hd: 0,
            pos: usize::MAX,
            center: usize::MAX,
            cos: [0.0; ROPE_TABLE_DIM / 2],
            sin: [0.0; ROPE_TABLE_DIM / 2],
            zeta: [0.0; ROPE_TABLE_DIM],
            zeta_inverse: [0.0; ROPE_TABLE_DIM],
        }
    }

    /// Fills the table for `pos` and `center` unless it holds them already; false when `hd`
    /// is too large for a table.
    fn prepare(&mut self, hd: usize, pos: usize, center: usize) -> bool {
        if hd > ROPE_TABLE_DIM {
            return false;
        }
        if (self.hd, self.pos, self.center) == (hd, pos, center) {
            return true;
        }
        let half = hd / 2;
        for i in 0..half {
            let (sin, cos) = rope_angle(i, hd, pos);
            self.cos[i] = cos;
            self.sin[i] = sin;
        }
        for j in 0..half * 2 {
            let s = xpos_factor(j, hd, pos, center);
            self.zeta[j] = s as f32;
            self.zeta_inverse[j] = (1.0 / s) as f32;
        }
        (self.hd, self.pos, self.center) = (hd, pos, center);
        true
    }

    /// [`rope_xpos`] with the prepared factors.
    fn apply(&self, x: &mut [f32], inverse: bool) {
        let zeta = if inverse {
            &self.zeta_inverse
        } else {
            &self.zeta
        };
        for i in 0..self.hd / 2 {
            let (sin, cos) = (self.sin[i], self.cos[i]);
            let (a, b) = (x[2 * i], x[2 * i + 1]);
            x[2 * i] = (a * cos - b * sin) * zeta[2 * i];
            x[2 * i + 1] = (b * cos + a * sin) * zeta[2 * i + 1];
        }
    }
}

/// `(sin, cos)` of rotary pair `i` at `pos`: f32 angles as rotary-embedding-torch computes them.
fn rope_angle(i: usize, hd: usize, pos: usize) -> (f32, f32) {
    let freq = 1.0 / libm::powf(ROPE_THETA, (2 * i) as f32 / hd as f32);
    let angle = pos as f32 * freq;
    (libm::sinf(angle), libm::cosf(angle))
}

/// xPos scale of element `j`: the half-split (`cat`) scale vector, in f64.
fn xpos_factor(j: usize, hd: usize, pos: usize, center: usize) -> f64 {
    let half = hd / 2;
    let power = (pos as f64 - center as f64) / XPOS_SCALE_BASE;
    let base = ((2 * (j % half)) as f64 + 0.4 * hd as f64) / (1.4 * hd as f64);
    libm::pow(base, power)
}

/// Rotates and xPos-scales one head vector in place; `inverse` divides by the scale (keys).
fn rope_xpos(x: &mut [f32], pos: usize, center: usize, inverse: bool) {
    let hd = x.len();
    for i in 0..hd / 2 {
        let (sin, cos) = rope_angle(i, hd, pos);
        let zeta = |j: usize| -> f32 {
            let s = xpos_factor(j, hd, pos, center);
            (if inverse { 1.0 / s } else { s }) as f32
        };
        let (a, b) = (x[2 * i], x[2 * i + 1]);
        x[2 * i] = (a * cos - b * sin) * zeta(2 * i);
        x[2 * i + 1] = (b * cos + a * sin) * zeta(2 * i + 1);
    }
}

/// Column of element `dim` of `head` in part `part` (0 q, 1 k, 2 v) of the fused QKV output.
fn qkv_col(dims: &Dims, part: usize, head: usize, dim: usize) -> usize {
    part * dims.d + dim * dims.heads + head
}

/// Where position `pos` of (time layer, path, variate) starts: in the generated-patch cache
/// (`true`; `path` counts from the first path of the cache at hand) or the context's.
fn cache_index(dims: &Dims, layer: usize, path: usize, v: usize, pos: usize) -> (bool, usize) {
    if pos < dims.nc {
        (false, ((layer * dims.v + v) * dims.nc + pos) * dims.d)
    } else {
        (
            true,
            (((path * dims.lt + layer) * dims.v + v) * dims.ng + (pos - dims.nc)) * dims.d,
        )
    }
}

#[allow(clippy::too_many_arguments)]
fn time_attention(
    kern: &Kernels,
    dims: &Dims,
    kv: &mut Kv<'_>,
    qkv: &[f32],
    att: &mut [f32],
    q: &mut [f32],
    scores: &mut [f32],
    at: &Attend,
) -> Result<()> {
    let (hd, d) = (dims.hd, dims.d);
    let norm = 1.0 / libm::sqrtf(hd as f32);
    let mut table = RopeTable::new();
    let layer = at.layer;
    // Tokens are position-major, then path, then variate; earlier positions are written to the
    // cache before later ones attend to them.
    for (step, path, v) in (0..at.positions)
        .flat_map(|j| (0..at.paths).flat_map(move |b| (0..dims.v).map(move |v| (j, b, v))))
    {
        let pos = at.first_pos + step;
        let t = (step * at.paths + path) * dims.v + v;
        let row = &qkv[t * 3 * d..(t + 1) * 3 * d];
        let (is_gen, base) = cache_index(dims, layer, path, v, pos);
        for head in 0..dims.heads {
            let (kc, vc): (&mut [f32], &mut [f32]) = if is_gen {
                (kv.k_gen, kv.v_gen)
            } else {
                match (&mut kv.k_ctx, &mut kv.v_ctx) {
                    (Ctx::Write(k), Ctx::Write(v)) => (k, v),
                    // Decoding never writes context positions.
                    _ => return Err(Error::OutOfRange),
                }
            };
            let kslot = &mut kc[base + head * hd..base + (head + 1) * hd];
            for j in 0..hd {
                q[j] = row[qkv_col(dims, 0, head, j)];
                kslot[j] = row[qkv_col(dims, 1, head, j)];
                vc[base + head * hd + j] = row[qkv_col(dims, 2, head, j)];
            }
            if table.prepare(hd, pos, at.center) {
                table.apply(q, false);
                table.apply(kslot, true);
            } else {
                rope_xpos(q, pos, at.center, false);
                rope_xpos(kslot, pos, at.center, true);
            }
            let scores = &mut scores[..=pos];
            // Context positions, then generated ones: in each run, this head's keys (and
            // values) are `d` apart, starting at `ctx_at` and `gen_at`.
            let in_ctx = (pos + 1).min(dims.nc);
            let ctx_at = cache_index(dims, layer, path, v, 0).1 + head * hd;
            let gen_at = cache_index(dims, layer, path, v, dims.nc).1 + head * hd;
            fn run(cache: &[f32], at: usize) -> &[f32] {
                cache.get(at..).unwrap_or(&[])
            }
            let (ctx_scores, gen_scores) = scores.split_at_mut(in_ctx);
            kern.dot_rows_f32(run(kv.k_ctx.read(), ctx_at), d, q, ctx_scores)?;
            if !gen_scores.is_empty() {
                kern.dot_rows_f32(run(kv.k_gen, gen_at), d, q, gen_scores)?;
            }
            for score in scores.iter_mut() {
                *score *= norm;
            }
            kern.softmax(scores)?;
            let out = &mut att[t * d + head * hd..t * d + (head + 1) * hd];
            out.fill(0.0);
            let (ctx_scores, gen_scores) = scores.split_at(in_ctx);
            kern.axpy_rows_f32(ctx_scores, run(kv.v_ctx.read(), ctx_at), d, out)?;
            if !gen_scores.is_empty() {
                kern.axpy_rows_f32(gen_scores, run(kv.v_gen, gen_at), d, out)?;
            }
        }
    }
    Ok(())
}

fn space_attention(
    dims: &Dims,
    qkv: &[f32],
    att: &mut [f32],
    scores: &mut [f32],
    series: &Series<'_>,
    paths: usize,
) -> Result<()> {
    let (hd, d, vn) = (dims.hd, dims.d, dims.v);
    let norm = 1.0 / libm::sqrtf(hd as f32);
    for path in 0..paths {
        for v1 in 0..vn {
            let t1 = path * vn + v1;
            for head in 0..dims.heads {
                let scores = &mut scores[..vn];
                for (v2, score) in scores.iter_mut().enumerate() {
                    if series.group(v1) != series.group(v2) {
                        *score = f32::NEG_INFINITY;
                        continue;
                    }
                    let t2 = path * vn + v2;
                    let mut acc = 0.0;
                    for j in 0..hd {
                        acc += qkv[t1 * 3 * d + qkv_col(dims, 0, head, j)]
                            * qkv[t2 * 3 * d + qkv_col(dims, 1, head, j)];
                    }
                    *score = acc * norm;
                }
                ops::softmax(scores)?;
                for j in 0..hd {
                    let mut acc = 0.0;
                    for (v2, w) in scores.iter().enumerate() {
                        acc += w * qkv[(path * vn + v2) * 3 * d + qkv_col(dims, 2, head, j)];
                    }
                    att[t1 * d + head * hd + j] = acc;
                }
            }
        }
    }
    Ok(())
}

impl core::fmt::Display for TotoConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "toto: patch {}, width {}, {} layers ({} time-wise), {} heads, hidden {}, {} components",
            self.patch_size,
            self.embed_dim,
            self.num_layers,
            self.time_layers(),
            self.num_heads,
            self.mlp_hidden_dim,
            self.k_components
        )
    }
}

#[cfg(test)]
mod rope_tests {
    use super::*;

    #[test]
    fn silu_and_softplus_are_flat_at_the_ends() {
        assert_eq!(silu(200.0), 200.0);
        assert!(silu(-200.0).abs() < 1e-30);
        assert!((softplus(-3.0) - libm::log1pf(libm::expf(-3.0))).abs() < 1e-7);
    }

    #[test]
    fn rope_table_equals_the_direct_rotation_bit_for_bit() {
        let mut table = RopeTable::new();
        for (hd, pos, center) in [
            (16, 0, 0),
            (16, 17, 8),
            (64, 70, 35),
            (8, 3, 9),
            (256, 5, 2),
        ] {
            assert!(table.prepare(hd, pos, center));
            for inverse in [false, true] {
                let mut x = [0f32; ROPE_TABLE_DIM];
                for (i, v) in x.iter_mut().enumerate() {
                    *v = libm::sinf(i as f32 * 0.37) * 3.0;
                }
                let (mut direct, mut tabled) = (x, x);
                rope_xpos(&mut direct[..hd], pos, center, inverse);
                table.apply(&mut tabled[..hd], inverse);
                for (a, b) in direct.iter().zip(&tabled) {
                    assert_eq!(
                        a.to_bits(),
                        b.to_bits(),
                        "hd {hd} pos {pos} centre {center}"
                    );
                }
            }
        }
        assert!(!table.prepare(ROPE_TABLE_DIM + 2, 1, 0));
    }
}
