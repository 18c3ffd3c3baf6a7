//! Toto 2.0 (Datadog, PyPI `toto-2` 2.0.0): a patch transformer with u-μP scaling that
//! forecasts nine quantiles (0.1 … 0.9) of the whole horizon in one forward pass.
//!
//! # The forward pass (docs/toto.md, "Toto 2.0", has the equations and traps)
//!
//! 1. The context is left-padded to whole patches (padding is unobserved), the horizon's patches
//!    are appended as unobserved zeros, and the last context patch is marked observed.
//! 2. Causal patch scaler in f64 (running mean, Bessel variance, scale floor 1e-6, statistics
//!    of each patch's last step), optionally replaced on leading patches with too few
//!    observations; values become `asinh((x − loc)/scale)`, unobserved ones 0.
//! 3. Patch embedding: a residual MLP over `[scaled patch, missing flags]` (`2p` inputs).
//! 4. Pre-norm layers with τ-weighted residuals. Time layers attend causally along patches
//!    within the same series id (patches with no observation form their own group), with
//!    optional QK-norm, per-dimension query scale, grouped-query attention, RoPE on the first
//!    half of each head (optionally with xPos) and scores scaled by `1/head_dim`. Variate layers
//!    attend across variates at the same patch without RoPE. A final RMSNorm follows.
//! 5. The outputs at the last context patch and at every horizon patch but the last go through a
//!    residual-MLP head to `p × 9` values `q`; the forecast is `sinh(q)·scale + loc`, infinite
//!    values are replaced, values are optionally capped around the context's range, and each
//!    step's nine values are sorted.
//!
//! Every `uu.Linear` multiplies `W·x + b` by `1/√fan_in` (`1/fan_in` for the head's readout
//! projections), and the residual MLPs' SiLU carries u-μP's constant output scale
//! ([`SILU_SCALE`]); goldcrest applies these at run time, so files keep the reference's weights.
//!
//! # Memory
//!
//! [`Toto2::memory_plan`] gives the exact bytes for a [`ForecastShape`]; every activation of the
//! single pass lives in the caller's buffer (no KV cache: the whole sequence is one pass).

use super::{RunningStats, Series, bad_meta, check_sizes, rope_angle, softplus, tensor_name};
use crate::arena::{ARENA_ALIGN, Arena, Carve, MemoryPlan, Planner};
use crate::error::{Error, Name, Result};
use crate::format::SafeTensors;
use crate::kernels::Kernels;
use crate::models::known_tensor_bytes;
use crate::ops::{self, Vector};
use crate::quant::Matrix;

/// `goldcrest.arch` of a Toto 2.0 file.
pub const ARCH: &str = "toto2";

/// The quantile levels of the head's nine outputs, in output order.
pub const QUANTILES: [f32; 9] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];

/// Number of quantiles the head predicts.
pub const NUM_QUANTILES: usize = QUANTILES.len();

/// Index of the median (0.5) among [`QUANTILES`].
pub const MEDIAN: usize = 4;

/// The scaler's lower bound on the scale.
pub const MINIMUM_SCALE: f64 = 1e-6;

/// xPos scale base of Toto 2.0's rotary projection.
const XPOS_SCALE_BASE: f32 = 256.0;

/// `unit_scaling.functional.silu`'s forward output scale at `mult = 1`: the logarithmic
/// interpolation `2^0.2 · (2/(1 − 1/π))^0.4` (≈ 1.76678).
pub const SILU_SCALE: f64 = 1.766_782_999_038_696_3;

/// u-μP's per-dimension-scale output constant (`softplus`'s `1/0.52103` cancels it in exact
/// arithmetic; goldcrest applies both, in the reference's order).
const PER_DIM_SCALE_CONSTANT: f32 = 0.52103;

/// Toto 2.0 hyperparameters (`goldcrest.toto2.*` metadata; names as in `Toto2ModelConfig`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Toto2Config {
    /// Steps per patch.
    pub patch_size: usize,
    /// Model width.
    pub d_model: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `num_heads`).
    pub num_groups: usize,
    /// Query/key size per head.
    pub qk_dim: usize,
    /// Value size per head.
    pub v_dim: usize,
    /// SwiGLU hidden width.
    pub d_ff: usize,
    /// Transformer layers.
    pub num_layers: usize,
    /// Layers per group: each group has `num_variate_layers_per_group` variate layers.
    pub layer_group_size: usize,
    /// Variate-wise layers per group.
    pub num_variate_layers_per_group: usize,
    /// Whether a group's variate layers come first (otherwise last).
    pub variate_layer_first: bool,
    /// RMSNorm epsilon.
    pub norm_eps: f32,
    /// Whether queries and keys are RMS-normalised per head.
    pub qk_norm: bool,
    /// Whether the layer norms have weights.
    pub norm_include_weight: bool,
    /// Whether the QK norms have weights.
    pub qk_norm_include_weight: bool,
    /// Whether queries carry a learned per-dimension scale.
    pub per_dim_scale: bool,
    /// Whether the rotary projection carries xPos scaling.
    pub use_xpos: bool,
    /// Whether the attention projections have biases.
    pub attn_bias: bool,
    /// Whether the SwiGLU projections have biases.
    pub mlp_bias: bool,
}

impl Toto2Config {
    /// Reads and checks the configuration from a file's metadata.
    pub fn from_safetensors(st: &SafeTensors<'_>) -> Result<Toto2Config> {
        let meta = st.metadata();
        // `SafeTensors::parse` has already refused files of a newer major format version.
        meta.expect_arch(ARCH)?;
        let int = |name: &str| meta.hyperparameter_usize(ARCH, name);
        let flag = |name: &str| meta.hyperparameter_bool(ARCH, name);
        let config = Toto2Config {
            patch_size: int("patch_size")?,
            d_model: int("d_model")?,
            num_heads: int("num_heads")?,
            num_groups: int("num_groups")?,
            qk_dim: int("qk_dim")?,
            v_dim: int("v_dim")?,
            d_ff: int("d_ff")?,
            num_layers: int("num_layers")?,
            layer_group_size: int("layer_group_size")?,
            num_variate_layers_per_group: int("num_variate_layers_per_group")?,
            variate_layer_first: flag("variate_layer_first")?,
            norm_eps: meta.hyperparameter_f32(ARCH, "norm_eps")?,
            qk_norm: flag("qk_norm")?,
            norm_include_weight: flag("norm_include_weight")?,
            qk_norm_include_weight: flag("qk_norm_include_weight")?,
            per_dim_scale: flag("per_dim_scale")?,
            use_xpos: flag("use_xpos")?,
            attn_bias: flag("attn_bias")?,
            mlp_bias: flag("mlp_bias")?,
        };
        config.check()?;
        Ok(config)
    }

    /// Checks the values are positive, bounded and consistent (the reference's assertions).
    pub fn check(&self) -> Result<()> {
        check_sizes(&[
            ("goldcrest.toto2.patch_size", self.patch_size),
            ("goldcrest.toto2.d_model", self.d_model),
            ("goldcrest.toto2.num_heads", self.num_heads),
            ("goldcrest.toto2.num_groups", self.num_groups),
            ("goldcrest.toto2.qk_dim", self.qk_dim),
            ("goldcrest.toto2.v_dim", self.v_dim),
            ("goldcrest.toto2.d_ff", self.d_ff),
            ("goldcrest.toto2.num_layers", self.num_layers),
            ("goldcrest.toto2.layer_group_size", self.layer_group_size),
        ])?;
        if !self.num_heads.is_multiple_of(self.num_groups) {
            return Err(bad_meta("goldcrest.toto2.num_groups"));
        }
        if !self.num_layers.is_multiple_of(self.layer_group_size) {
            return Err(bad_meta("goldcrest.toto2.layer_group_size"));
        }
        if self.num_variate_layers_per_group > self.layer_group_size {
            return Err(bad_meta("goldcrest.toto2.num_variate_layers_per_group"));
        }
        // RoPE rotates pairs within the first half of each head.
        if self.time_layers() > 0 && !self.rope_width().is_multiple_of(2) {
            return Err(bad_meta("goldcrest.toto2.qk_dim"));
        }
        if !(self.norm_eps.is_finite() && self.norm_eps >= 0.0) {
            return Err(bad_meta("goldcrest.toto2.norm_eps"));
        }
        Ok(())
    }

    /// Whether layer `i` attends across variates (otherwise along time).
    pub fn is_variate_layer(&self, i: usize) -> bool {
        let (g, n) = (self.layer_group_size, self.num_variate_layers_per_group);
        if self.variate_layer_first {
            i % g < n
        } else {
            i % g >= g - n
        }
    }

    /// Number of time-wise layers.
    pub fn time_layers(&self) -> usize {
        (0..self.num_layers)
            .filter(|&i| !self.is_variate_layer(i))
            .count()
    }

    /// Leading elements of each query/key head that RoPE rotates (the reference's partial
    /// factor `(0, 0.5)`).
    pub fn rope_width(&self) -> usize {
        self.qk_dim / 2
    }

    fn heads_per_group(&self) -> usize {
        self.num_heads / self.num_groups
    }

    fn qkv_width(&self) -> usize {
        (self.num_heads + self.num_groups) * self.qk_dim + self.num_groups * self.v_dim
    }
}

impl core::fmt::Display for Toto2Config {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "toto2: patch {}, width {}, {} layers ({} time-wise), {} heads over {} key/value \
             groups of size {}, hidden {}, 9 quantiles",
            self.patch_size,
            self.d_model,
            self.num_layers,
            self.time_layers(),
            self.num_heads,
            self.num_groups,
            self.qk_dim,
            self.d_ff
        )
    }
}

/// How the forecast treats the scaler and the output range: the reference's keyword arguments
/// to `Toto2Model.forecast`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ForecastOptions {
    /// Leading patches whose cumulative observation count is below this use the statistics of
    /// the first this-many observations (`scaler_fallback_min_obs`; 0 disables).
    pub scaler_fallback_min_obs: usize,
    /// Caps each forecast to `[min − k·s, max + k·s]` of the observed context, `s` the scale at
    /// the last context step (`quantile_real_cap_k`; 0 disables).
    pub quantile_cap: f64,
}

impl Default for ForecastOptions {
    /// The GluonTS predictor's defaults (`Toto2GluonTSModelConfig`): 8 and 1e4, the settings
    /// of the published evaluations.
    fn default() -> Self {
        ForecastOptions {
            scaler_fallback_min_obs: 8,
            quantile_cap: 1e4,
        }
    }
}

impl ForecastOptions {
    /// `Toto2Model.forecast`'s own defaults: no fallback, no cap.
    pub const NONE: ForecastOptions = ForecastOptions {
        scaler_fallback_min_obs: 0,
        quantile_cap: 0.0,
    };
}

/// The size of a forecast, for [`Toto2::memory_plan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForecastShape {
    /// Number of series forecast jointly.
    pub variates: usize,
    /// Steps of context per variate.
    pub context: usize,
    /// Steps to forecast.
    pub horizon: usize,
}

/// `uu.Linear`: `(W·x + b)·scale`.
#[derive(Debug, Clone, Copy)]
struct Linear<'a> {
    w: Matrix<'a>,
    b: Option<&'a [f32]>,
    scale: f32,
}

impl Linear<'_> {
    fn apply(&self, k: &Kernels, x: &[f32], n: usize, y: &mut [f32]) -> Result<()> {
        let rows = self.w.rows();
        let y = y.get_mut(..n * rows).ok_or(Error::OutOfRange)?;
        k.gemm(
            &self.w,
            x.get(..n * self.w.cols()).ok_or(Error::OutOfRange)?,
            n,
            y,
        )?;
        for row in y.chunks_exact_mut(rows) {
            if let Some(b) = self.b {
                for (v, b) in row.iter_mut().zip(b) {
                    *v += *b;
                }
            }
            for v in row.iter_mut() {
                *v *= self.scale;
            }
        }
        Ok(())
    }
}

/// `ResidualMLP` with τ = 1: `(linear2(silu_u(linear1(x))) + skip_proj(x)) / √2`.
#[derive(Debug, Clone, Copy)]
struct ResidualMlp<'a> {
    linear1: Linear<'a>,
    linear2: Linear<'a>,
    skip: Linear<'a>,
}

impl ResidualMlp<'_> {
    /// `hidden` holds `n × hidden width`, `skip` holds `n × out`.
    fn apply(
        &self,
        k: &Kernels,
        x: &[f32],
        n: usize,
        hidden: &mut [f32],
        skip: &mut [f32],
        out: &mut [f32],
    ) -> Result<()> {
        let width = self.linear1.w.rows();
        self.linear1.apply(k, x, n, hidden)?;
        let silu_scale = SILU_SCALE as f32;
        for v in hidden[..n * width].iter_mut() {
            *v = ops::silu(*v) * silu_scale;
        }
        self.linear2.apply(k, hidden, n, out)?;
        self.skip.apply(k, x, n, skip)?;
        let half = core::f64::consts::FRAC_1_SQRT_2 as f32;
        let m = n * self.linear2.w.rows();
        for (o, s) in out[..m].iter_mut().zip(&skip[..m]) {
            *o = *o * half + *s * half;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
struct Layer<'a> {
    variate: bool,
    norm1: Option<Vector<'a>>,
    norm2: Option<Vector<'a>>,
    q_norm: Option<Option<Vector<'a>>>,
    k_norm: Option<Option<Vector<'a>>>,
    per_dim_scale: Option<&'a [f32]>,
    in_proj: Linear<'a>,
    out_proj: Linear<'a>,
    fc1: Linear<'a>,
    fc2: Linear<'a>,
    attn_tau: f32,
    mlp_tau: f32,
}

/// A Toto 2.0 model reading its weights in place.
#[derive(Debug, Clone, Copy)]
pub struct Toto2<'a> {
    st: SafeTensors<'a>,
    config: Toto2Config,
    kernels: Kernels,
    patch_proj: ResidualMlp<'a>,
    head: ResidualMlp<'a>,
    out_norm: Option<Vector<'a>>,
}

/// A linear layer's weight and optional bias, checked for shape.
fn load_linear<'a>(
    st: &SafeTensors<'a>,
    base: &str,
    rows: usize,
    cols: usize,
    bias: bool,
    scale: f32,
) -> Result<Linear<'a>> {
    let w = st.tensor(&tensor_name(format_args!("{base}.weight"))?)?;
    w.expect_shape(&[rows as u64, cols as u64])?;
    let b = if bias {
        let b = st.tensor(&tensor_name(format_args!("{base}.bias"))?)?;
        b.expect_shape(&[rows as u64])?;
        Some(b.f32s()?)
    } else {
        None
    };
    Ok(Linear {
        w: w.matrix()?,
        b,
        scale,
    })
}

fn inv_sqrt(n: usize) -> f32 {
    (1.0 / libm::sqrt(n as f64)) as f32
}

fn load_mlp<'a>(
    st: &SafeTensors<'a>,
    base: &str,
    dims: (usize, usize, usize),
    readout: bool,
) -> Result<ResidualMlp<'a>> {
    let (input, hidden, output) = dims;
    let name = |part: &str| tensor_name(format_args!("{base}.{part}"));
    // The head's second projection and skip are `LinearReadout`s: scale 1/fan_in.
    let (scale2, scale_skip) = if readout {
        ((1.0 / hidden as f64) as f32, (1.0 / input as f64) as f32)
    } else {
        (inv_sqrt(hidden), inv_sqrt(input))
    };
    Ok(ResidualMlp {
        linear1: load_linear(st, &name("linear1")?, hidden, input, true, inv_sqrt(input))?,
        linear2: load_linear(st, &name("linear2")?, output, hidden, true, scale2)?,
        skip: load_linear(st, &name("skip_proj")?, output, input, true, scale_skip)?,
    })
}

fn vector<'a>(st: &SafeTensors<'a>, name: &str, len: usize) -> Result<Vector<'a>> {
    let t = st.tensor(name)?;
    t.expect_shape(&[len as u64])?;
    Vector::from_bytes(name, t.format()?, t.bytes())
}

fn scalar(st: &SafeTensors<'_>, name: &str) -> Result<f32> {
    let t = st.tensor(name)?;
    t.expect_shape(&[])?;
    let x = t.f32s()?.first().copied().ok_or(Error::BadOffsets {
        tensor: Name::new(name),
    })?;
    if x.is_finite() {
        Ok(x)
    } else {
        Err(Error::NonFinite)
    }
}

impl<'a> Toto2<'a> {
    /// Opens a goldcrest Toto 2.0 file: reads the config, checks every tensor's presence and
    /// shape (by its `toto-2` module name), and that the file has no other tensors.
    pub fn new(st: SafeTensors<'a>, kernels: Kernels) -> Result<Toto2<'a>> {
        let config = Toto2Config::from_safetensors(&st)?;
        let (d, p) = (config.d_model, config.patch_size);
        let model = Toto2 {
            st,
            config,
            kernels,
            patch_proj: load_mlp(&st, "patch_proj", (2 * p, 4 * d, d), false)?,
            head: load_mlp(
                &st,
                "output_head.param_projection.proj",
                (d, 4 * d, p * NUM_QUANTILES),
                true,
            )?,
            out_norm: if config.norm_include_weight {
                Some(vector(&st, "transformer.out_norm.weight", d)?)
            } else {
                None
            },
        };
        for i in 0..config.num_layers {
            model.layer(i)?;
        }
        known_tensor_bytes(&st, |name| model.is_expected(name))?;
        Ok(model)
    }

    fn is_expected(&self, name: &str) -> bool {
        let c = &self.config;
        for mlp in ["patch_proj", "output_head.param_projection.proj"] {
            if let Some(r) = name.strip_prefix(mlp).and_then(|r| r.strip_prefix('.'))
                && ["linear1", "linear2", "skip_proj"].iter().any(|part| {
                    r.strip_prefix(part)
                        .is_some_and(|r| r == ".weight" || r == ".bias")
                })
            {
                return true;
            }
        }
        if name == "transformer.out_norm.weight" {
            return c.norm_include_weight;
        }
        let Some(rest) = name.strip_prefix("transformer.layers.") else {
            return false;
        };
        let Some((idx, field)) = rest.split_once('.') else {
            return false;
        };
        if !idx.parse::<usize>().is_ok_and(|i| i < c.num_layers) {
            return false;
        }
        match field {
            "attn_tau" | "mlp_tau" => true,
            "norm1.weight" | "norm2.weight" => c.norm_include_weight,
            "attn.q_norm.weight" | "attn.k_norm.weight" => c.qk_norm && c.qk_norm_include_weight,
            "attn._pds.per_dim_scale" => c.per_dim_scale,
            f => {
                linear_field(f, "attn.in_proj", c.attn_bias)
                    || linear_field(f, "attn.out_proj", c.attn_bias)
                    || linear_field(f, "ffn.fc1", c.mlp_bias)
                    || linear_field(f, "ffn.fc2", c.mlp_bias)
            }
        }
    }

    fn layer(&self, i: usize) -> Result<Layer<'a>> {
        let c = &self.config;
        let st = &self.st;
        let (d, dk) = (c.d_model, c.qk_dim);
        let name = |field: &str| tensor_name(format_args!("transformer.layers.{i}.{field}"));
        let norm = |field: &str, len: usize, present: bool| -> Result<Option<Vector<'a>>> {
            if present {
                Ok(Some(vector(st, &name(field)?, len)?))
            } else {
                Ok(None)
            }
        };
        let qk_norm = |field: &str| -> Result<Option<Option<Vector<'a>>>> {
            if c.qk_norm {
                Ok(Some(norm(field, dk, c.qk_norm_include_weight)?))
            } else {
                Ok(None)
            }
        };
        let per_dim_scale = if c.per_dim_scale {
            let n = name("attn._pds.per_dim_scale")?;
            let t = st.tensor(&n)?;
            t.expect_shape(&[dk as u64])?;
            Some(t.f32s()?)
        } else {
            None
        };
        let attn_out = c.num_heads * c.v_dim;
        Ok(Layer {
            variate: c.is_variate_layer(i),
            norm1: norm("norm1.weight", d, c.norm_include_weight)?,
            norm2: norm("norm2.weight", d, c.norm_include_weight)?,
            q_norm: qk_norm("attn.q_norm.weight")?,
            k_norm: qk_norm("attn.k_norm.weight")?,
            per_dim_scale,
            in_proj: load_linear(
                st,
                &name("attn.in_proj")?,
                c.qkv_width(),
                d,
                c.attn_bias,
                inv_sqrt(d),
            )?,
            out_proj: load_linear(
                st,
                &name("attn.out_proj")?,
                d,
                attn_out,
                c.attn_bias,
                inv_sqrt(attn_out),
            )?,
            fc1: load_linear(
                st,
                &name("ffn.fc1")?,
                2 * c.d_ff,
                d,
                c.mlp_bias,
                inv_sqrt(d),
            )?,
            fc2: load_linear(
                st,
                &name("ffn.fc2")?,
                d,
                c.d_ff,
                c.mlp_bias,
                inv_sqrt(c.d_ff),
            )?,
            attn_tau: scalar(st, &name("attn_tau")?)?,
            mlp_tau: scalar(st, &name("mlp_tau")?)?,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Toto2Config {
        &self.config
    }

    /// Bytes of weights (read in place, never copied).
    pub fn weight_bytes(&self) -> usize {
        self.st.data().len()
    }

    fn dims(&self, shape: &ForecastShape) -> Result<Dims> {
        let c = &self.config;
        if shape.variates == 0 || shape.context == 0 || shape.horizon == 0 {
            return Err(Error::OutOfRange);
        }
        let p = c.patch_size;
        let context_patches = shape.context.div_ceil(p);
        let horizon_patches = shape.horizon.div_ceil(p);
        let patches = context_patches
            .checked_add(horizon_patches)
            .ok_or(Error::OutOfRange)?;
        let tokens = mul(&[shape.variates, patches])?;
        Ok(Dims {
            v: shape.variates,
            steps: shape.context,
            pad: context_patches * p - shape.context,
            nc: context_patches,
            nh: horizon_patches,
            n: patches,
            len: mul(&[patches, p])?,
            tokens,
            p,
            d: c.d_model,
        })
    }

    /// Exact memory for a forecast of this shape.
    pub fn memory_plan(&self, shape: &ForecastShape) -> Result<MemoryPlan> {
        let dims = self.dims(shape)?;
        let mut planner = Planner::new();
        carve(&mut planner, &self.config, &dims)?;
        Ok(MemoryPlan {
            weight_bytes: self.weight_bytes(),
            state_bytes: 0,
            scratch_bytes: planner
                .bytes()
                .checked_next_multiple_of(ARENA_ALIGN)
                .ok_or(Error::OutOfRange)?,
        })
    }

    /// Forecasts nine quantiles for every variate and step of the horizon into
    /// `out[(v·horizon + t)·9 + q]` (levels [`QUANTILES`], ascending; the median is `q = 4`).
    /// `series` values that are NaN or infinite are missing. `memory` needs
    /// [`MemoryPlan::bytes_unaligned`] of [`Toto2::memory_plan`] bytes.
    pub fn forecast(
        &self,
        series: &Series<'_>,
        horizon: usize,
        options: &ForecastOptions,
        memory: &mut [u8],
        out: &mut [f32],
    ) -> Result<()> {
        let dims = self.series_dims(series, horizon)?;
        check_len(out.len(), mul(&[dims.v, horizon, NUM_QUANTILES])?)?;
        check_options(options)?;
        let mut arena = Arena::new_unaligned(memory);
        let mut b = carve(&mut arena, &self.config, &dims)?;
        prepare_inputs(series, &dims, options, &mut b);
        self.embed(&dims, &mut b)?;
        for i in 0..self.config.num_layers {
            let layer = self.layer(i)?;
            self.attention_block(&layer, &dims, &mut b)?;
            self.mlp_block(&layer, &dims, &mut b)?;
        }
        for row in b.h.chunks_exact_mut(dims.d) {
            rms_norm(row, self.out_norm, self.config.norm_eps);
        }
        self.quantiles(&dims, options, &mut b, horizon, out)
    }

    /// The sizes of one forecast of `horizon` steps over `series`.
    fn series_dims(&self, series: &Series<'_>, horizon: usize) -> Result<Dims> {
        self.dims(&ForecastShape {
            variates: series.variates,
            context: series.steps()?,
            horizon,
        })
    }

    /// What the network sees of the context: per variate and padded context step, the scaled
    /// value `asinh((x − loc)/scale)` (0 where unobserved) into `scaled[v·padded + i]`, and
    /// the scaler's `loc`/`scale` for every step of the padded context and the horizon's
    /// patches into `loc[v·len + i]`, `scale[v·len + i]`, where `padded` is the context rounded
    /// up to whole patches and `len = padded + ceil(horizon/p)·p`. Memory as for
    /// [`Toto2::forecast`].
    #[allow(clippy::too_many_arguments)]
    pub fn scaled_inputs(
        &self,
        series: &Series<'_>,
        horizon: usize,
        options: &ForecastOptions,
        memory: &mut [u8],
        scaled: &mut [f32],
        loc: &mut [f32],
        scale: &mut [f32],
    ) -> Result<()> {
        let dims = self.series_dims(series, horizon)?;
        let padded = dims.nc * dims.p;
        check_len(scaled.len(), mul(&[dims.v, padded])?)?;
        check_len(loc.len(), mul(&[dims.v, dims.len])?)?;
        check_len(scale.len(), mul(&[dims.v, dims.len])?)?;
        check_options(options)?;
        let mut arena = Arena::new_unaligned(memory);
        let mut b = carve(&mut arena, &self.config, &dims)?;
        prepare_inputs(series, &dims, options, &mut b);
        loc.copy_from_slice(b.loc);
        scale.copy_from_slice(b.scale);
        let p = dims.p;
        for v in 0..dims.v {
            for j in 0..dims.nc {
                let row = &b.embed_in[(v * dims.n + j) * 2 * p..][..p];
                scaled[v * padded + j * p..][..p].copy_from_slice(row);
            }
        }
        Ok(())
    }

    /// Patch embedding of every token.
    fn embed(&self, dims: &Dims, b: &mut Bufs<'_>) -> Result<()> {
        self.patch_proj.apply(
            &self.kernels,
            b.embed_in,
            dims.tokens,
            b.hidden,
            b.delta,
            b.h,
        )
    }

    /// `h ← h/√(1+τ²) + τ/√(1+τ²) · out_proj(attention(norm1(h)))`.
    fn attention_block(&self, layer: &Layer<'_>, dims: &Dims, b: &mut Bufs<'_>) -> Result<()> {
        let c = &self.config;
        let (d, t) = (dims.d, dims.tokens);
        b.xn.copy_from_slice(b.h);
        for row in b.xn.chunks_exact_mut(d) {
            rms_norm(row, layer.norm1, c.norm_eps);
        }
        layer.in_proj.apply(&self.kernels, b.xn, t, b.qkv)?;
        self.prepare_queries_keys(layer, dims, b);
        attend(c, layer.variate, dims, b)?;
        layer.out_proj.apply(&self.kernels, b.att, t, b.delta)?;
        residual_add(b.h, b.delta, layer.attn_tau);
        Ok(())
    }

    /// `h ← h/√(1+τ²) + τ/√(1+τ²) · fc2(a ⊙ silu(g))`, `[a | g] = fc1(norm2(h))`.
    fn mlp_block(&self, layer: &Layer<'_>, dims: &Dims, b: &mut Bufs<'_>) -> Result<()> {
        let c = &self.config;
        let (d, t, f) = (dims.d, dims.tokens, c.d_ff);
        b.xn.copy_from_slice(b.h);
        for row in b.xn.chunks_exact_mut(d) {
            rms_norm(row, layer.norm2, c.norm_eps);
        }
        layer.fc1.apply(&self.kernels, b.xn, t, b.up)?;
        // The first half multiplies; the second half goes through SiLU.
        for (row, out) in b.up.chunks_exact(2 * f).zip(b.hidden.chunks_exact_mut(f)) {
            let (a, g) = row.split_at(f);
            for ((o, a), g) in out.iter_mut().zip(a).zip(g) {
                *o = *a * ops::silu(*g);
            }
        }
        layer.fc2.apply(&self.kernels, b.hidden, t, b.delta)?;
        residual_add(b.h, b.delta, layer.mlp_tau);
        Ok(())
    }

    /// QK-norm, the per-dimension query scale and (time layers) RoPE/xPos, in place in `qkv`.
    fn prepare_queries_keys(&self, layer: &Layer<'_>, dims: &Dims, b: &mut Bufs<'_>) {
        let c = &self.config;
        let (dk, width) = (c.qk_dim, c.qkv_width());
        let k_start = c.num_heads * dk;
        // The reference's xPos centre: ⌊(max position + 1)/2⌋ over the whole sequence.
        let center = (dims.n / 2) as f32;
        for (token, row) in b.qkv.chunks_exact_mut(width).enumerate() {
            let pos = token % dims.n;
            let (queries, rest) = row.split_at_mut(k_start);
            let keys = &mut rest[..c.num_groups * dk];
            for q in queries.chunks_exact_mut(dk) {
                if let Some(weight) = layer.q_norm {
                    rms_norm(q, weight, c.norm_eps);
                }
                if let Some(p) = layer.per_dim_scale {
                    for (x, p) in q.iter_mut().zip(p) {
                        let r =
                            softplus(*p) * (1.0 / PER_DIM_SCALE_CONSTANT) / core::f32::consts::LN_2;
                        *x = PER_DIM_SCALE_CONSTANT * (*x * r);
                    }
                }
                if !layer.variate {
                    rotate(&mut q[..c.rope_width()], pos, center, c.use_xpos, false);
                }
            }
            for k in keys.chunks_exact_mut(dk) {
                if let Some(weight) = layer.k_norm {
                    rms_norm(k, weight, c.norm_eps);
                }
                if !layer.variate {
                    rotate(&mut k[..c.rope_width()], pos, center, c.use_xpos, true);
                }
            }
        }
    }

    /// The head on the last context patch and every horizon patch but the last, unscaled,
    /// repaired, capped and sorted.
    fn quantiles(
        &self,
        dims: &Dims,
        options: &ForecastOptions,
        b: &mut Bufs<'_>,
        horizon: usize,
        out: &mut [f32],
    ) -> Result<()> {
        let (d, p) = (dims.d, dims.p);
        let rows = dims.v * dims.nh;
        // Gather the anchor tokens: position nc−1+j predicts horizon patch j.
        for v in 0..dims.v {
            for j in 0..dims.nh {
                let src = (v * dims.n + dims.nc - 1 + j) * d;
                let dst = (v * dims.nh + j) * d;
                b.xn[dst..dst + d].copy_from_slice(&b.h[src..src + d]);
            }
        }
        let width = p * NUM_QUANTILES;
        self.head
            .apply(&self.kernels, b.xn, rows, b.hidden, b.delta, b.head_out)?;
        let padded = dims.nc * p;
        for v in 0..dims.v {
            let cap = cap_range(dims, options, b, v);
            for j in 0..dims.nh {
                let row = &mut b.head_out[(v * dims.nh + j) * width..][..width];
                let at = v * dims.len + padded + j * p;
                // Row layout: step-major, quantile fastest.
                for (s, qs) in row.chunks_exact_mut(NUM_QUANTILES).enumerate() {
                    let (loc, scale) = (b.loc[at + s], b.scale[at + s]);
                    for q in qs.iter_mut() {
                        *q = libm::sinhf(*q) * scale + loc;
                    }
                }
                replace_infinities(row, p);
                for qs in row.chunks_exact_mut(NUM_QUANTILES) {
                    if let Some((low, high)) = cap {
                        for q in qs.iter_mut() {
                            // NaN stays NaN, as in torch's clamp.
                            if *q < low {
                                *q = low;
                            } else if *q > high {
                                *q = high;
                            }
                        }
                    }
                    sort_nan_last(qs);
                }
                for s in 0..p {
                    let t = j * p + s;
                    if t < horizon {
                        let src = &row[s * NUM_QUANTILES..(s + 1) * NUM_QUANTILES];
                        out[(v * horizon + t) * NUM_QUANTILES..][..NUM_QUANTILES]
                            .copy_from_slice(src);
                    }
                }
            }
        }
        Ok(())
    }
}

fn linear_field(field: &str, base: &str, bias: bool) -> bool {
    field
        .strip_prefix(base)
        .and_then(|r| r.strip_prefix('.'))
        .is_some_and(|r| r == "weight" || (bias && r == "bias"))
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

fn check_options(options: &ForecastOptions) -> Result<()> {
    if options.quantile_cap.is_finite() && options.quantile_cap >= 0.0 {
        Ok(())
    } else {
        Err(Error::OutOfRange)
    }
}

fn mul(xs: &[usize]) -> Result<usize> {
    xs.iter()
        .try_fold(1usize, |a, &x| a.checked_mul(x))
        .ok_or(Error::OutOfRange)
}

#[derive(Debug, Clone, Copy)]
struct Dims {
    /// Variates.
    v: usize,
    /// Context steps as given.
    steps: usize,
    /// Left padding to whole patches.
    pad: usize,
    /// Context patches, horizon patches, all patches.
    nc: usize,
    nh: usize,
    n: usize,
    /// Steps of the whole sequence (`n·p`).
    len: usize,
    /// `v·n`: tokens are variate-major, then patch.
    tokens: usize,
    p: usize,
    d: usize,
}

struct Buffers<C: Carve> {
    values: C::Out<f32>,
    observed: C::Out<u8>,
    loc: C::Out<f32>,
    scale: C::Out<f32>,
    group: C::Out<i64>,
    embed_in: C::Out<f32>,
    h: C::Out<f32>,
    xn: C::Out<f32>,
    qkv: C::Out<f32>,
    att: C::Out<f32>,
    delta: C::Out<f32>,
    up: C::Out<f32>,
    hidden: C::Out<f32>,
    head_out: C::Out<f32>,
    scores: C::Out<f32>,
}

type Bufs<'m> = Buffers<Arena<'m>>;

fn carve<C: Carve>(c: &mut C, config: &Toto2Config, d: &Dims) -> Result<Buffers<C>> {
    let t = d.tokens;
    let hidden = config.d_ff.max(4 * d.d);
    Ok(Buffers {
        values: c.take(mul(&[d.v, d.len])?)?,
        observed: c.take(mul(&[d.v, d.len])?)?,
        loc: c.take(mul(&[d.v, d.len])?)?,
        scale: c.take(mul(&[d.v, d.len])?)?,
        group: c.take(t)?,
        embed_in: c.take(mul(&[t, 2, d.p])?)?,
        h: c.take(mul(&[t, d.d])?)?,
        xn: c.take(mul(&[t, d.d])?)?,
        qkv: c.take(mul(&[t, config.qkv_width()])?)?,
        att: c.take(mul(&[t, config.num_heads, config.v_dim])?)?,
        // Also the skip output of both residual MLPs (`p·9` wide for the head).
        delta: c.take(mul(&[t, d.d.max(d.p * NUM_QUANTILES)])?)?,
        up: c.take(mul(&[t, 2, config.d_ff])?)?,
        hidden: c.take(mul(&[t, hidden])?)?,
        head_out: c.take(mul(&[d.v, d.nh, d.p, NUM_QUANTILES])?)?,
        scores: c.take(d.n.max(d.v))?,
    })
}

/// Values, observed flags, scaler statistics, group ids and the patch-embedding inputs, as
/// `Toto2Model.forecast` builds them from a GluonTS-prepared context.
fn prepare_inputs(series: &Series<'_>, dims: &Dims, options: &ForecastOptions, b: &mut Bufs<'_>) {
    let (p, len, padded) = (dims.p, dims.len, dims.nc * dims.p);
    for v in 0..dims.v {
        let row = &series.values[v * dims.steps..(v + 1) * dims.steps];
        let values = &mut b.values[v * len..(v + 1) * len];
        let observed = &mut b.observed[v * len..(v + 1) * len];
        // Left padding and the horizon are unobserved zeros; missing values repeat the last
        // observation (0 before the first), as the GluonTS predictor's forward fill does.
        let mut last = 0.0f32;
        for (i, x) in row.iter().enumerate() {
            let at = dims.pad + i;
            if x.is_finite() {
                last = *x as f32;
                observed[at] = 1;
            }
            values[at] = last;
        }
        // The reference marks the last context patch observed whatever it holds.
        observed[padded - p..padded].fill(1);
        scale_variate(
            values,
            observed,
            p,
            options.scaler_fallback_min_obs,
            &mut b.loc[v * len..(v + 1) * len],
            &mut b.scale[v * len..(v + 1) * len],
        );
        let id = i64::from(series.group(v));
        for j in 0..dims.n {
            let token = v * dims.n + j;
            let any_observed = observed[j * p..(j + 1) * p].iter().any(|&o| o != 0);
            // Context patches without any observation get their own group id (−1).
            b.group[token] = if j < dims.nc && !any_observed { -1 } else { id };
            let (scaled, flags) = b.embed_in[token * 2 * p..(token + 1) * 2 * p].split_at_mut(p);
            for s in 0..p {
                let i = j * p + s;
                let is_observed = observed[i] != 0;
                scaled[s] = if is_observed {
                    libm::asinhf((values[i] - b.loc[v * len + i]) / b.scale[v * len + i])
                } else {
                    0.0
                };
                flags[s] = if is_observed { 0.0 } else { 1.0 };
            }
        }
    }
}

/// The causal patch scaler of one variate (f64, rounded to f32 per step) and the optional
/// fallback on leading patches with fewer than `min_obs` observations.
fn scale_variate(
    values: &[f32],
    observed: &[u8],
    p: usize,
    min_obs: usize,
    loc: &mut [f32],
    scale: &mut [f32],
) {
    let mut stats = RunningStats::default();
    for (j, patch) in values.chunks_exact(p).enumerate() {
        for (s, x) in patch.iter().enumerate() {
            stats.push(*x as f64, f64::from(observed[j * p + s]));
        }
        let variance = stats.m2 / (stats.weight.max(1.0) - 1.0).max(1.0);
        let (l, sc) = (
            stats.mean as f32,
            libm::sqrt(variance).max(MINIMUM_SCALE) as f32,
        );
        loc[j * p..(j + 1) * p].fill(l);
        scale[j * p..(j + 1) * p].fill(sc);
    }
    if min_obs == 0 {
        return;
    }
    // Donor statistics: the first `min_obs` observations (fewer if there are fewer).
    let donors = || {
        values
            .iter()
            .zip(observed)
            .filter(|(_, o)| **o != 0)
            .take(min_obs)
            .map(|(x, _)| *x as f64)
    };
    let n = donors().count().max(1) as f64;
    let donor_loc = donors().sum::<f64>() / n;
    let donor_var = donors()
        .map(|x| (x - donor_loc) * (x - donor_loc))
        .sum::<f64>()
        / (n - 1.0).max(1.0);
    let (donor_loc, donor_scale) = (
        donor_loc as f32,
        libm::sqrt(donor_var).max(MINIMUM_SCALE) as f32,
    );
    let mut count = 0usize;
    for j in 0..values.len() / p {
        count += observed[j * p..(j + 1) * p]
            .iter()
            .filter(|&&o| o != 0)
            .count();
        if count < min_obs {
            loc[j * p..(j + 1) * p].fill(donor_loc);
            scale[j * p..(j + 1) * p].fill(donor_scale);
        }
    }
}

/// `[min − k·s, max + k·s]` over the observed context (0 for an empty side), `s` the scale at
/// the last context step; `None` when capping is off.
fn cap_range(dims: &Dims, options: &ForecastOptions, b: &Bufs<'_>, v: usize) -> Option<(f32, f32)> {
    if options.quantile_cap <= 0.0 {
        return None;
    }
    let padded = dims.nc * dims.p;
    let at = v * dims.len;
    let (mut low, mut high) = (f32::INFINITY, f32::NEG_INFINITY);
    for i in 0..padded {
        if b.observed[at + i] != 0 {
            low = low.min(b.values[at + i]);
            high = high.max(b.values[at + i]);
        }
    }
    let margin = options.quantile_cap as f32 * b.scale[at + padded - 1];
    let low = if low.is_finite() { low } else { 0.0 };
    let high = if high.is_finite() { high } else { 0.0 };
    Some((low - margin, high + margin))
}

/// `+∞` becomes the largest finite value of the same quantile within the patch, `−∞` the
/// smallest (the reference's `_clamp_nonfinite`).
fn replace_infinities(row: &mut [f32], p: usize) {
    for q in 0..NUM_QUANTILES {
        let column = (0..p).map(|s| row[s * NUM_QUANTILES + q]);
        let finite = column.clone().filter(|x| x.is_finite());
        let max = finite.clone().fold(f32::NEG_INFINITY, f32::max);
        let min = finite.fold(f32::INFINITY, f32::min);
        for s in 0..p {
            let x = &mut row[s * NUM_QUANTILES + q];
            if *x == f32::INFINITY {
                *x = max;
            } else if *x == f32::NEG_INFINITY {
                *x = min;
            }
        }
    }
}

/// Ascending insertion sort with NaN last (torch's order).
fn sort_nan_last(xs: &mut [f32]) {
    let before = |a: f32, b: f32| !a.is_nan() && (b.is_nan() || a < b);
    for i in 1..xs.len() {
        let mut j = i;
        while j > 0 && before(xs[j], xs[j - 1]) {
            xs.swap(j, j - 1);
            j -= 1;
        }
    }
}

/// `x / sqrt(mean(x²) + eps)`, times the weight if there is one.
fn rms_norm(x: &mut [f32], weight: Option<Vector<'_>>, eps: f32) {
    if x.is_empty() {
        return;
    }
    let mean_sq = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let rms = libm::sqrtf(mean_sq + eps);
    for (i, v) in x.iter_mut().enumerate() {
        *v /= rms;
        if let Some(w) = weight {
            *v *= w.get(i);
        }
    }
}

/// `h ← h·(1/√(1+τ²)) + delta·(τ/√(1+τ²))` in f32, as `residual_add` computes it.
fn residual_add(h: &mut [f32], delta: &[f32], tau: f32) {
    let denom = libm::sqrtf(1.0 + tau * tau);
    let (skip, residual) = (1.0 / denom, tau / denom);
    for (x, y) in h.iter_mut().zip(delta) {
        *x = *y * residual + *x * skip;
    }
}

/// Interleaved-pair RoPE over `x` (the rotated part of one head) at `pos`, f32 angles; with
/// xPos, pair `i` is also multiplied (queries) or divided (keys) by
/// `ζ_i^((pos − center)/256)`, `ζ_i = (2i + 0.4w)/(1.4w)`.
fn rotate(x: &mut [f32], pos: usize, center: f32, xpos: bool, inverse: bool) {
    let w = x.len();
    let power = (pos as f32 - center) / XPOS_SCALE_BASE;
    for i in 0..w / 2 {
        let (sin, cos) = rope_angle(i, w, pos);
        let (a, b) = (x[2 * i], x[2 * i + 1]);
        let (mut ra, mut rb) = (cos * a - sin * b, cos * b + sin * a);
        if xpos {
            let base = ((2 * i) as f32 + (0.4 * w as f64) as f32) / ((1.4 * w as f64) as f32);
            let zeta = libm::powf(base, power);
            let factor = if inverse { 1.0 / zeta } else { zeta };
            ra *= factor;
            rb *= factor;
        }
        x[2 * i] = ra;
        x[2 * i + 1] = rb;
    }
}

/// Scaled dot-product attention with scale `1/qk_dim`, grouped-query heads and the group-id
/// mask: time layers attend to earlier-or-equal patches of the same variate with the same
/// group id, variate layers to the variates with the same group id at the same patch.
fn attend(c: &Toto2Config, variate: bool, dims: &Dims, b: &mut Bufs<'_>) -> Result<()> {
    let (dk, dv, width) = (c.qk_dim, c.v_dim, c.qkv_width());
    let k_start = c.num_heads * dk;
    let v_start = k_start + c.num_groups * dk;
    let norm = (1.0 / dk as f64) as f32;
    for v in 0..dims.v {
        for j in 0..dims.n {
            let token = v * dims.n + j;
            let keys = if variate { dims.v } else { j + 1 };
            let key_token = |i: usize| {
                if variate {
                    i * dims.n + j
                } else {
                    v * dims.n + i
                }
            };
            for head in 0..c.num_heads {
                let group = head / c.heads_per_group();
                let q = &b.qkv[token * width + head * dk..][..dk];
                let scores = &mut b.scores[..keys];
                for (i, score) in scores.iter_mut().enumerate() {
                    let kt = key_token(i);
                    *score = if b.group[kt] != b.group[token] {
                        f32::NEG_INFINITY
                    } else {
                        let k = &b.qkv[kt * width + k_start + group * dk..][..dk];
                        q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() * norm
                    };
                }
                ops::softmax(scores)?;
                let out = &mut b.att[(token * c.num_heads + head) * dv..][..dv];
                out.fill(0.0);
                for (i, w) in scores.iter().enumerate() {
                    if *w == 0.0 {
                        continue;
                    }
                    let value = &b.qkv[key_token(i) * width + v_start + group * dv..][..dv];
                    for (o, x) in out.iter_mut().zip(value) {
                        *o += w * x;
                    }
                }
            }
        }
    }
    Ok(())
}
