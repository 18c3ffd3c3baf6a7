//! The forecaster (Toto): open, plan, forecast into caller buffers.

use core::mem::{align_of, size_of};

use goldcrest_core::arena::ARENA_ALIGN;
use goldcrest_core::format::KEY_ARCH;
use goldcrest_core::kernels::Kernels;
use goldcrest_core::models::toto::{self, ForecastSpec, Mode, Series, Toto};

use crate::lm::GoldcrestMemoryPlan;
use crate::status::*;

const FORECASTER_TAG: u32 = u32::from_le_bytes(*b"GCFC");
/// Sample paths decoded together when the request leaves `batch` at 0.
pub const GOLDCREST_DEFAULT_FORECAST_BATCH: usize = 16;

/// One forecast call. Fill it after `memset(0)` and set `struct_size = sizeof(...)`; a newer
/// library reads only the fields your `struct_size` covers.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct GoldcrestForecastRequest {
    /// `sizeof(GoldcrestForecastRequest)` as the caller compiled it.
    pub struct_size: u32,
    /// `variates * context` values, variate-major; NaN or infinite marks a missing value.
    pub values: *const f64,
    /// Optional (NULL: none), `variates * context` flags: 0 marks a value missing.
    pub mask: *const u8,
    /// Number of series forecast jointly (they attend to each other).
    pub variates: usize,
    /// Steps of history per variate.
    pub context: usize,
    /// Steps to forecast.
    pub horizon: usize,
    /// Sampled trajectories for quantiles (0: mean forecast only).
    pub samples: usize,
    /// Trajectories decoded together (0: `GOLDCREST_DEFAULT_FORECAST_BATCH`); more is faster
    /// and needs more memory. Results do not depend on it.
    pub batch: usize,
    /// Seed of the sampled trajectories.
    pub seed: u64,
    /// Optional: `n_quantiles` levels in [0, 1] to report from the samples.
    pub quantiles: *const f64,
    /// Number of quantile levels (needs `samples > 0`).
    pub n_quantiles: usize,
}

/// Where a forecast writes; every pointer may be NULL to skip that output.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct GoldcrestForecastOutput {
    /// `variates * horizon` deterministic mean-mode values, `[v * horizon + t]`.
    pub mean: *mut f64,
    /// `variates * horizon * n_quantiles`, `[(v * horizon + t) * n_quantiles + q]`.
    pub quantiles: *mut f32,
    /// `variates * horizon * samples` sorted per step, `[(v * horizon + t) * samples + path]`.
    pub samples: *mut f32,
}

/// An open forecaster (opaque). Read-only once open: may serve forecasts on several threads
/// at once, each with its own memory. Free with `goldcrest_forecaster_free()`.
// repr(C) puts the tag first, where check_tag reads it; the header keeps it opaque.
#[repr(C)]
pub struct GoldcrestForecaster {
    tag: u32,
    model: Toto<'static>,
    #[cfg(feature = "std")]
    owned: Option<Option<goldcrest_std::load::ModelFile>>,
}

fn open(bytes: &'static [u8]) -> Result<Toto<'static>, Failure> {
    #[cfg(feature = "std")]
    let st = goldcrest_std::load::parse_hosted(bytes)?;
    #[cfg(not(feature = "std"))]
    let st = goldcrest_core::format::SafeTensors::parse(bytes)?;
    if st.metadata().get_str(KEY_ARCH).ok() != Some(toto::ARCH) {
        return fail(
            GoldcrestStatus::WrongModelKind,
            "not a forecaster (goldcrest.arch is not toto)",
        );
    }
    #[cfg(feature = "std")]
    let kernels = goldcrest_std::kernels::detect();
    #[cfg(not(feature = "std"))]
    let kernels = Kernels::for_target();
    let _: Kernels = kernels;
    Ok(Toto::new(st, kernels)?)
}

/// Bytes `goldcrest_forecaster_open_in()` needs (a constant of this build).
pub const GOLDCREST_FORECASTER_SIZE: usize = 1024;
const _: () = assert!(size_of::<GoldcrestForecaster>() + 16 <= GOLDCREST_FORECASTER_SIZE);

/// Opens a forecaster in caller memory without allocating (both flavours). `bytes` is the
/// model file (zero-copy: keep it alive and unchanged); `memory` holds the handle
/// (`GOLDCREST_FORECASTER_SIZE` bytes, any alignment) and must outlive it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn goldcrest_forecaster_open_in(
    bytes: *const u8,
    len: usize,
    memory: *mut u8,
    memory_len: usize,
    out: *mut *mut GoldcrestForecaster,
) -> GoldcrestStatus {
    guard(|| {
        need(out)?;
        if memory.is_null() {
            return fail(GoldcrestStatus::NullPointer, "NULL forecaster memory");
        }
        if memory_len < GOLDCREST_FORECASTER_SIZE {
            return fail(
                GoldcrestStatus::BufferTooSmall,
                "forecaster memory below GOLDCREST_FORECASTER_SIZE",
            );
        }
        // SAFETY: the caller keeps `bytes` alive and unchanged while the forecaster lives.
        let bytes: &'static [u8] = unsafe { slice(bytes, len)? };
        let model = open(bytes)?;
        let skip = memory.align_offset(align_of::<GoldcrestForecaster>());
        // SAFETY: `skip + size_of` fits in GOLDCREST_FORECASTER_SIZE (const assert above).
        let handle = unsafe { memory.add(skip) }.cast::<GoldcrestForecaster>();
        // SAFETY: aligned, in bounds, writable caller memory.
        unsafe {
            handle.write(GoldcrestForecaster {
                tag: FORECASTER_TAG,
                model,
                #[cfg(feature = "std")]
                owned: None,
            })
        };
        // SAFETY: checked non-null.
        unsafe { write_out(out, handle) }
    })
}

/// Opens a forecaster from a caller buffer (zero-copy; keep it alive). std flavour.
#[cfg(feature = "std")]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn goldcrest_forecaster_open_buffer(
    bytes: *const u8,
    len: usize,
    out: *mut *mut GoldcrestForecaster,
) -> GoldcrestStatus {
    guard(|| {
        need(out)?;
        // SAFETY: the caller keeps `bytes` alive and unchanged while the forecaster lives.
        let bytes: &'static [u8] = unsafe { slice(bytes, len)? };
        let model = open(bytes)?;
        let handle = Box::into_raw(Box::new(GoldcrestForecaster {
            tag: FORECASTER_TAG,
            model,
            owned: Some(None),
        }));
        // SAFETY: checked non-null.
        unsafe { write_out(out, handle) }
    })
}

/// Opens a forecaster file (memory-mapped). `path` is NUL-terminated UTF-8. std flavour.
#[cfg(feature = "std")]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn goldcrest_forecaster_open_file(
    path: *const core::ffi::c_char,
    out: *mut *mut GoldcrestForecaster,
) -> GoldcrestStatus {
    guard(|| {
        need(out)?;
        let path = crate::tokenizer::path_arg(path)?;
        let file = goldcrest_std::load::ModelFile::open(path)?;
        let b = file.bytes();
        // SAFETY: the map is owned by the handle, dropped after the model, and never moves.
        let bytes: &'static [u8] = unsafe { core::slice::from_raw_parts(b.as_ptr(), b.len()) };
        let model = open(bytes)?;
        let handle = Box::into_raw(Box::new(GoldcrestForecaster {
            tag: FORECASTER_TAG,
            model,
            owned: Some(Some(file)),
        }));
        // SAFETY: checked non-null.
        unsafe { write_out(out, handle) }
    })
}

/// Frees a forecaster (NULL is a no-op).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn goldcrest_forecaster_free(f: *mut GoldcrestForecaster) -> GoldcrestStatus {
    guard(|| {
        if f.is_null() {
            return Ok(());
        }
        // SAFETY: caller's contract.
        unsafe { check_tag(f.cast(), FORECASTER_TAG)? };
        // SAFETY: tag checked.
        let handle = unsafe { &mut *f };
        handle.tag = 0;
        #[cfg(feature = "std")]
        if handle.owned.is_some() {
            // SAFETY: owned handles come from Box::into_raw.
            drop(unsafe { Box::from_raw(f) });
            return Ok(());
        }
        // SAFETY: in caller memory; owns nothing.
        unsafe { core::ptr::drop_in_place(f) };
        Ok(())
    })
}

/// The request's fields, validated, for the prefix `struct_size` covers.
struct Shape {
    variates: usize,
    context: usize,
    horizon: usize,
    samples: usize,
    batch: usize,
}

/// # Safety
/// `req` must be NULL or point to a request of at least its `struct_size` bytes.
unsafe fn read_request(
    req: *const GoldcrestForecastRequest,
) -> Result<GoldcrestForecastRequest, Failure> {
    if req.is_null() {
        return fail(GoldcrestStatus::NullPointer, "NULL forecast request");
    }
    if !(req as usize).is_multiple_of(align_of::<GoldcrestForecastRequest>()) {
        return fail(GoldcrestStatus::Misaligned, "forecast request misaligned");
    }
    // SAFETY: non-null, aligned, the size field is readable.
    let size = unsafe { req.cast::<u32>().read() } as usize;
    if size < size_of::<GoldcrestForecastRequest>() {
        return fail(
            GoldcrestStatus::InvalidArgument,
            "request struct_size too small",
        );
    }
    // SAFETY: struct_size covers every field.
    Ok(unsafe { req.read() })
}

fn shape(r: &GoldcrestForecastRequest) -> Result<Shape, Failure> {
    if r.variates == 0 || r.context == 0 || r.horizon == 0 {
        return fail(
            GoldcrestStatus::InvalidArgument,
            "variates, context and horizon must be > 0",
        );
    }
    if r.n_quantiles > 0 && r.samples == 0 {
        return fail(
            GoldcrestStatus::InvalidArgument,
            "quantiles need samples > 0",
        );
    }
    let batch = if r.batch == 0 {
        GOLDCREST_DEFAULT_FORECAST_BATCH
    } else {
        r.batch
    };
    Ok(Shape {
        variates: r.variates,
        context: r.context,
        horizon: r.horizon,
        samples: r.samples,
        batch: batch.min(r.samples.max(1)),
    })
}

fn too_big<T>() -> Result<T, Failure> {
    fail(GoldcrestStatus::InvalidArgument, "request sizes overflow")
}

impl GoldcrestForecaster {
    /// Bytes for: values copy, samples, and the model's own plan (the larger of mean and
    /// sampled); each section padded to ARENA_ALIGN.
    fn plan(&self, s: &Shape) -> Result<(GoldcrestMemoryPlan, [usize; 3]), Failure> {
        let spec = |batch| ForecastSpec {
            variates: s.variates,
            context: s.context,
            horizon: s.horizon,
            batch,
        };
        let mean = self.model.memory_plan(&spec(1))?;
        let sampled = if s.samples > 0 {
            self.model.memory_plan(&spec(s.batch))?
        } else {
            mean
        };
        let model_bytes = mean.bytes_unaligned().max(sampled.bytes_unaligned());
        let pad = |n: Option<usize>| n.and_then(|n| n.checked_next_multiple_of(ARENA_ALIGN));
        let Some(values) = pad(s
            .variates
            .checked_mul(s.context)
            .and_then(|n| n.checked_mul(8)))
        else {
            return too_big();
        };
        let Some(samples) = pad(s
            .variates
            .checked_mul(s.horizon)
            .and_then(|n| n.checked_mul(s.samples))
            .and_then(|n| n.checked_mul(4)))
        else {
            return too_big();
        };
        let total = values + samples + model_bytes + ARENA_ALIGN;
        Ok((
            GoldcrestMemoryPlan {
                weight_bytes: mean.weight_bytes,
                state_bytes: mean.state_bytes.max(sampled.state_bytes),
                scratch_bytes: mean.scratch_bytes.max(sampled.scratch_bytes),
                total_bytes: total,
            },
            [values, samples, model_bytes],
        ))
    }
}

/// # Safety
/// `f` must be NULL or a pointer from an open function.
unsafe fn forecaster_ref<'a>(
    f: *const GoldcrestForecaster,
) -> Result<&'a GoldcrestForecaster, Failure> {
    // SAFETY: caller's contract.
    unsafe { check_tag(f.cast(), FORECASTER_TAG)? };
    // SAFETY: tag checked.
    Ok(unsafe { &*f })
}

/// Memory `goldcrest_forecast()` needs for requests of this shape (`variates`, `context`,
/// `horizon`, `samples`, `batch`; the pointers are not read).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn goldcrest_forecaster_memory_plan(
    f: *const GoldcrestForecaster,
    req: *const GoldcrestForecastRequest,
    out: *mut GoldcrestMemoryPlan,
) -> GoldcrestStatus {
    guard(|| {
        // SAFETY: caller's contract.
        let f = unsafe { forecaster_ref(f)? };
        // SAFETY: caller's contract.
        let r = unsafe { read_request(req)? };
        let (plan, _) = f.plan(&shape(&r)?)?;
        // SAFETY: caller's contract.
        unsafe { write_out(out, plan) }
    })
}

/// Forecasts `req` using `memory` (`goldcrest_forecaster_memory_plan()`'s `total_bytes`, any
/// alignment) and writes the outputs `out` asks for. Missing values (NaN, infinite, or masked)
/// are skipped, not propagated; a magnitude of 1e30 or more is `INVALID_ARGUMENT`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn goldcrest_forecast(
    f: *const GoldcrestForecaster,
    req: *const GoldcrestForecastRequest,
    memory: *mut u8,
    memory_len: usize,
    out: *const GoldcrestForecastOutput,
) -> GoldcrestStatus {
    guard(|| {
        // SAFETY: caller's contract.
        let f = unsafe { forecaster_ref(f)? };
        // SAFETY: caller's contract.
        let r = unsafe { read_request(req)? };
        if out.is_null() {
            return fail(GoldcrestStatus::NullPointer, "NULL output struct");
        }
        if !(out as usize).is_multiple_of(align_of::<GoldcrestForecastOutput>()) {
            return fail(GoldcrestStatus::Misaligned, "output struct misaligned");
        }
        // SAFETY: non-null, aligned, readable.
        let o = unsafe { out.read() };
        let s = shape(&r)?;
        let (plan, [values_bytes, samples_bytes, _]) = f.plan(&s)?;
        if memory.is_null() {
            return fail(GoldcrestStatus::NullPointer, "NULL forecast memory");
        }
        if memory_len < plan.total_bytes {
            return fail(
                GoldcrestStatus::BufferTooSmall,
                "forecast memory below the plan's total_bytes",
            );
        }
        let n_in = s.variates * s.context;
        let n_out = s.variates * s.horizon;
        // SAFETY: caller's buffers with the lengths the request states.
        let values = unsafe { slice(r.values, n_in)? };
        // SAFETY: as above (NULL allowed: no mask).
        let mask = if r.mask.is_null() {
            None
        } else {
            Some(unsafe { slice(r.mask, n_in)? })
        };
        // SAFETY: as above.
        let levels = unsafe { slice(r.quantiles, r.n_quantiles)? };
        if levels.iter().any(|q| !(0.0..=1.0).contains(q)) {
            return fail(
                GoldcrestStatus::InvalidArgument,
                "quantile levels must be in [0, 1] (and not NaN)",
            );
        }
        // SAFETY: the caller's memory, at least total_bytes long.
        let mem: &mut [u8] = unsafe { slice_mut(memory, memory_len)? };
        let skip = mem.as_ptr().align_offset(ARENA_ALIGN);
        let (_, mem) = mem.split_at_mut(skip);
        let (values_mem, rest) = mem.split_at_mut(values_bytes);
        let (samples_mem, model_mem) = rest.split_at_mut(samples_bytes);
        let Ok(copy) = bytemuck::try_cast_slice_mut::<u8, f64>(&mut values_mem[..n_in * 8]) else {
            return fail(
                GoldcrestStatus::Misaligned,
                "internal: value copy misaligned",
            );
        };
        for (i, (c, &v)) in copy.iter_mut().zip(values).enumerate() {
            *c = if mask.is_some_and(|m| m[i] == 0) {
                f64::NAN
            } else {
                v
            };
        }
        let series = Series {
            values: copy,
            variates: s.variates,
            groups: None,
        };
        if !o.mean.is_null() {
            // SAFETY: `n_out` writable doubles.
            let mean = unsafe { slice_mut(o.mean, n_out)? };
            f.model.forecast_mean(&series, s.horizon, model_mem, mean)?;
        }
        if s.samples > 0 && (!o.quantiles.is_null() || !o.samples.is_null()) {
            let Ok(paths) =
                bytemuck::try_cast_slice_mut::<u8, f32>(&mut samples_mem[..n_out * s.samples * 4])
            else {
                return fail(
                    GoldcrestStatus::Misaligned,
                    "internal: sample buffer misaligned",
                );
            };
            let mode = Mode::Samples {
                paths: s.samples,
                batch: s.batch,
                seed: r.seed,
            };
            f.model
                .forecast_samples(&series, s.horizon, mode, model_mem, paths)?;
            for run in paths.chunks_exact_mut(s.samples) {
                toto::sort_samples(run);
            }
            if !o.quantiles.is_null() {
                // SAFETY: `n_out * n_quantiles` writable floats.
                let q_out = unsafe { slice_mut(o.quantiles, n_out * levels.len())? };
                for (run, dst) in paths
                    .chunks_exact(s.samples)
                    .zip(q_out.chunks_exact_mut(levels.len().max(1)))
                {
                    for (d, &q) in dst.iter_mut().zip(levels) {
                        *d = toto::quantile_sorted(run, q).unwrap_or(f32::NAN);
                    }
                }
            }
            if !o.samples.is_null() {
                // SAFETY: `n_out * samples` writable floats.
                let dst = unsafe { slice_mut(o.samples, n_out * s.samples)? };
                dst.copy_from_slice(paths);
            }
        }
        Ok(())
    })
}
