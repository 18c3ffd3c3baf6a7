//! Language models (RWKV-6, the LLaMA/Qwen2 decoder, GoldFinch): open, plan, sessions, sampling.

use core::mem::{align_of, size_of};

use goldcrest_core::arena::{ARENA_ALIGN, Arena, Carve, Planner};
use goldcrest_core::format::KEY_ARCH;
use goldcrest_core::format::SafeTensors;
use goldcrest_core::kernels::Kernels;
use goldcrest_core::models::{decoder, goldfinch, rwkv6};
use goldcrest_core::ops::sample::{Rng, SamplerConfig, sample};

use crate::status::*;

const LM_TAG: u32 = u32::from_le_bytes(*b"GCLM");
const SESSION_TAG: u32 = u32::from_le_bytes(*b"GCSS");
/// Alignment at which a session plan's `total_bytes` is exact: pass memory starting on this
/// boundary (a static array with `__attribute__((aligned(64)))` in GCC/Clang C99 or
/// `_Alignas(64)` in C11; `posix_memalign`), or add `GOLDCREST_MEMORY_ALIGN - 1` bytes for any
/// other address.
pub const GOLDCREST_MEMORY_ALIGN: usize = 64;
const _: () = assert!(GOLDCREST_MEMORY_ALIGN == ARENA_ALIGN);
/// Tokens remembered per session for the repetition penalty.
pub const GOLDCREST_REPETITION_WINDOW: usize = 64;

/// Which architecture a language model is.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoldcrestLmKind {
    /// RWKV-6 (recurrent: constant-size state, save/restore supported).
    Rwkv6 = 1,
    /// LLaMA-family decoder (KV cache).
    Llama = 2,
    /// Qwen2 decoder (KV cache).
    Qwen2 = 3,
    /// GoldFinch (RWKV-6 layers, then GOLD attention over a compressed key cache).
    GoldFinch = 4,
}

/// Facts about an open language model.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct GoldcrestLmInfo {
    /// The architecture.
    pub kind: GoldcrestLmKind,
    /// Vocabulary size: the length of a logits vector.
    pub vocab_size: usize,
    /// Number of blocks.
    pub n_layer: usize,
    /// Longest context a session may ask for (0: no limit from the model, as for RWKV-6 and
    /// GoldFinch).
    pub max_context: usize,
    /// Bytes of weights read in place from the model buffer.
    pub weight_bytes: usize,
}

/// Memory a session needs, from `goldcrest_lm_memory_plan()`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct GoldcrestMemoryPlan {
    /// Weights read in place (flash, mmap, the caller's buffer); never copied.
    pub weight_bytes: usize,
    /// Persistent state: recurrent state or KV cache.
    pub state_bytes: usize,
    /// Scratch reused by every call.
    pub scratch_bytes: usize,
    /// What to pass to the session/forecast call: state, scratch, the handle itself and the
    /// logits buffers. For sessions it is exact for memory starting on a
    /// `GOLDCREST_MEMORY_ALIGN` boundary (every byte is used, one byte less fails); memory at
    /// any other address needs up to `GOLDCREST_MEMORY_ALIGN - 1` more bytes. Forecasts accept
    /// `total_bytes` at any address.
    pub total_bytes: usize,
}

/// Sampler settings. Fill with `goldcrest_sampler_default()`, which sets `struct_size`; a
/// library newer than your header reads only the fields your `struct_size` covers.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct GoldcrestSampler {
    /// `sizeof(GoldcrestSampler)` as the caller compiled it.
    pub struct_size: u32,
    /// Divides the logits; 0 means greedy (argmax).
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; 0 disables.
    pub top_k: u32,
    /// Nucleus: keep the smallest set reaching this probability; 1 disables.
    pub top_p: f32,
    /// Penalty for tokens among the last `GOLDCREST_REPETITION_WINDOW` fed; 1 disables.
    pub repetition_penalty: f32,
}

const SAMPLER_V1_SIZE: usize = size_of::<GoldcrestSampler>();

/// Fills `out` with plain sampling at temperature 1, every filter off, and `struct_size`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn goldcrest_sampler_default(out: *mut GoldcrestSampler) -> GoldcrestStatus {
    guard(|| {
        let d = SamplerConfig::default();
        let value = GoldcrestSampler {
            struct_size: SAMPLER_V1_SIZE as u32,
            temperature: d.temperature,
            top_k: d.top_k as u32,
            top_p: d.top_p,
            repetition_penalty: d.repetition_penalty,
        };
        // SAFETY: caller passes a writable GoldcrestSampler or NULL (checked).
        unsafe { write_out(out, value) }
    })
}

enum Model {
    Rwkv6(rwkv6::Rwkv6<'static, 'static>),
    Decoder(decoder::Decoder<'static, 'static>),
    GoldFinch(goldfinch::GoldFinch<'static, 'static>),
}

/// An open language model (opaque). Read-only once open: one model may serve sessions on
/// several threads at once. Free with `goldcrest_lm_free()`.
// repr(C) puts the tag first, where check_tag reads it; the header keeps it opaque.
#[repr(C)]
pub struct GoldcrestLm {
    tag: u32,
    model: Model,
    #[cfg(feature = "std")]
    owned: Option<Owned>,
}

/// What a heap-allocated model owns besides the views (std flavour).
#[cfg(feature = "std")]
struct Owned {
    layers: OwnedLayers,
    _file: Option<goldcrest_std::load::ModelFile>,
}

#[cfg(feature = "std")]
enum OwnedLayers {
    Rwkv6(*mut [Option<rwkv6::Layer<'static>>]),
    Decoder(*mut [Option<decoder::Layer<'static>>]),
    GoldFinch(*mut [Option<goldfinch::Layer<'static>>]),
}

#[cfg(feature = "std")]
impl Drop for Owned {
    fn drop(&mut self) {
        // SAFETY: both pointers came from Box::into_raw in `open_owned`, and the model that
        // borrowed them is dropped before this (field order of GoldcrestLm).
        unsafe {
            match self.layers {
                OwnedLayers::Rwkv6(p) => drop(Box::from_raw(p)),
                OwnedLayers::Decoder(p) => drop(Box::from_raw(p)),
                OwnedLayers::GoldFinch(p) => drop(Box::from_raw(p)),
            }
        }
    }
}

fn kernels() -> Kernels {
    #[cfg(feature = "std")]
    {
        goldcrest_std::kernels::detect()
    }
    #[cfg(not(feature = "std"))]
    {
        Kernels::for_target()
    }
}

fn parse(bytes: &'static [u8]) -> Result<SafeTensors<'static>, Failure> {
    #[cfg(feature = "std")]
    {
        Ok(goldcrest_std::load::parse_hosted(bytes)?)
    }
    #[cfg(not(feature = "std"))]
    {
        Ok(SafeTensors::parse(bytes)?)
    }
}

enum Arch {
    Rwkv6(rwkv6::Config),
    Decoder(decoder::Config),
    GoldFinch(goldfinch::Config),
}

fn arch_of(st: &SafeTensors<'static>) -> Result<Arch, Failure> {
    let arch = st.metadata().get_str(KEY_ARCH).unwrap_or("");
    match arch {
        rwkv6::ARCH => Ok(Arch::Rwkv6(rwkv6::Config::from_source(st)?)),
        "llama" | "qwen2" => Ok(Arch::Decoder(decoder::Config::from_safetensors(st)?)),
        goldfinch::ARCH => Ok(Arch::GoldFinch(goldfinch::Config::from_source(st)?)),
        _ => fail(
            GoldcrestStatus::WrongModelKind,
            "not a language model (goldcrest.arch is not rwkv6, llama, qwen2 or goldfinch)",
        ),
    }
}

/// Carves `n` values of `T` from the front of `mem` (aligned for `T`); returns them and the rest.
fn carve_raw<T>(mem: &'static mut [u8], n: usize) -> Result<(*mut T, &'static mut [u8]), Failure> {
    let skip = mem.as_ptr().align_offset(align_of::<T>().max(16));
    let bytes = n
        .checked_mul(size_of::<T>())
        .and_then(|b| b.checked_add(skip));
    match bytes {
        Some(b) if b <= mem.len() => {
            let (head, rest) = mem.split_at_mut(b);
            Ok((head[skip..].as_mut_ptr().cast::<T>(), rest))
        }
        _ => fail(
            GoldcrestStatus::BufferTooSmall,
            "model memory smaller than goldcrest_lm_open_size() asked for",
        ),
    }
}

/// Fills `n` slots at `ptr` with `None` and returns them as a slice.
///
/// # Safety
/// `ptr` must be aligned and valid for writes of `n` values for `'static` (the caller's
/// memory contract), and nothing else may use that memory while the slice lives.
unsafe fn none_slots<L>(ptr: *mut Option<L>, n: usize) -> &'static mut [Option<L>] {
    for i in 0..n {
        // SAFETY: in bounds of the carved region (caller's contract).
        unsafe { ptr.add(i).write(None) };
    }
    // SAFETY: all n slots were just initialised.
    unsafe { core::slice::from_raw_parts_mut(ptr, n) }
}

fn layers_needed(arch: &Arch) -> usize {
    match arch {
        Arch::Rwkv6(c) => c.n_layer * size_of::<Option<rwkv6::Layer<'static>>>(),
        Arch::Decoder(c) => c.n_layer * size_of::<Option<decoder::Layer<'static>>>(),
        Arch::GoldFinch(c) => c.n_layer * size_of::<Option<goldfinch::Layer<'static>>>(),
    }
}

/// Bytes `goldcrest_lm_open_in()` needs for the model at `bytes`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn goldcrest_lm_open_size(
    bytes: *const u8,
    len: usize,
    out_size: *mut usize,
) -> GoldcrestStatus {
    guard(|| {
        need(out_size)?;
        // SAFETY: caller passes `len` readable bytes kept alive for the call.
        let bytes: &'static [u8] = unsafe { slice(bytes, len)? };
        let st = parse(bytes)?;
        let arch = arch_of(&st)?;
        let size = size_of::<GoldcrestLm>() + layers_needed(&arch) + 64;
        // SAFETY: checked non-null above; caller passes a writable size_t.
        unsafe { write_out(out_size, size) }
    })
}

fn load(
    st: &SafeTensors<'static>,
    arch: Arch,
    mem: &'static mut [u8],
) -> Result<(Model, &'static mut [u8]), Failure> {
    Ok(match arch {
        Arch::Rwkv6(c) => {
            let (ptr, rest) = carve_raw::<Option<rwkv6::Layer<'static>>>(mem, c.n_layer)?;
            // SAFETY: `ptr` is an aligned region of n_layer slots of the caller's memory.
            let layers = unsafe { none_slots(ptr, c.n_layer) };
            (
                Model::Rwkv6(rwkv6::Rwkv6::load(st, layers, kernels())?),
                rest,
            )
        }
        Arch::Decoder(c) => {
            let (ptr, rest) = carve_raw::<Option<decoder::Layer<'static>>>(mem, c.n_layer)?;
            // SAFETY: as above.
            let layers = unsafe { none_slots(ptr, c.n_layer) };
            let weights = decoder::Weights::load(st, layers)?;
            (
                Model::Decoder(decoder::Decoder::new(weights, kernels())),
                rest,
            )
        }
        Arch::GoldFinch(c) => {
            let (ptr, rest) = carve_raw::<Option<goldfinch::Layer<'static>>>(mem, c.n_layer)?;
            // SAFETY: as above.
            let layers = unsafe { none_slots(ptr, c.n_layer) };
            (
                Model::GoldFinch(goldfinch::GoldFinch::load(st, layers, kernels())?),
                rest,
            )
        }
    })
}

/// Opens a model in caller memory, without allocating (both flavours; the firmware's way).
/// `bytes` is the model file (zero-copy: keep it alive and unchanged until the model is
/// freed); `memory` (at least `goldcrest_lm_open_size()` bytes, any alignment) holds the
/// handle and the per-block views, and must outlive the model too. Free with
/// `goldcrest_lm_free()`, which then releases nothing but marks the handle dead.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn goldcrest_lm_open_in(
    bytes: *const u8,
    len: usize,
    memory: *mut u8,
    memory_len: usize,
    out: *mut *mut GoldcrestLm,
) -> GoldcrestStatus {
    guard(|| {
        need(out)?;
        if memory.is_null() {
            return fail(GoldcrestStatus::NullPointer, "NULL model memory");
        }
        // SAFETY: the caller keeps `bytes` alive and unchanged while the model lives (documented).
        let bytes: &'static [u8] = unsafe { slice(bytes, len)? };
        // SAFETY: the caller gives `memory_len` writable bytes for the model's lifetime.
        let mem: &'static mut [u8] = unsafe { slice_mut(memory, memory_len)? };
        let st = parse(bytes)?;
        let arch = arch_of(&st)?;
        let (handle, rest) = carve_raw::<GoldcrestLm>(mem, 1)?;
        let (model, _) = load(&st, arch, rest)?;
        let lm = GoldcrestLm {
            tag: LM_TAG,
            model,
            #[cfg(feature = "std")]
            owned: None,
        };
        // SAFETY: `handle` is aligned, sized for one GoldcrestLm, inside the caller's memory.
        unsafe { handle.write(lm) };
        // SAFETY: checked non-null; caller passes a writable pointer slot.
        unsafe { write_out(out, handle) }
    })
}

#[cfg(feature = "std")]
fn open_owned(
    bytes: &'static [u8],
    file: Option<goldcrest_std::load::ModelFile>,
) -> Result<*mut GoldcrestLm, Failure> {
    let st = parse(bytes)?;
    let arch = arch_of(&st)?;
    let (model, layers) = match arch {
        Arch::Rwkv6(c) => {
            let raw = Box::into_raw(vec![None; c.n_layer].into_boxed_slice());
            // SAFETY: freshly leaked, freed only in Owned::drop after the model is gone.
            let layers: &'static mut [Option<rwkv6::Layer<'static>>] = unsafe { &mut *raw };
            match rwkv6::Rwkv6::load(&st, layers, kernels()) {
                Ok(m) => (Model::Rwkv6(m), OwnedLayers::Rwkv6(raw)),
                Err(e) => {
                    // SAFETY: from Box::into_raw above, no longer borrowed.
                    drop(unsafe { Box::from_raw(raw) });
                    return Err(e.into());
                }
            }
        }
        Arch::Decoder(c) => {
            let raw = Box::into_raw(vec![None; c.n_layer].into_boxed_slice());
            // SAFETY: as above.
            let layers: &'static mut [Option<decoder::Layer<'static>>] = unsafe { &mut *raw };
            match decoder::Weights::load(&st, layers) {
                Ok(w) => (
                    Model::Decoder(decoder::Decoder::new(w, kernels())),
                    OwnedLayers::Decoder(raw),
                ),
                Err(e) => {
                    // SAFETY: as above.
                    drop(unsafe { Box::from_raw(raw) });
                    return Err(e.into());
                }
            }
        }
        Arch::GoldFinch(c) => {
            let raw = Box::into_raw(vec![None; c.n_layer].into_boxed_slice());
            // SAFETY: as above.
            let layers: &'static mut [Option<goldfinch::Layer<'static>>] = unsafe { &mut *raw };
            match goldfinch::GoldFinch::load(&st, layers, kernels()) {
                Ok(m) => (Model::GoldFinch(m), OwnedLayers::GoldFinch(raw)),
                Err(e) => {
                    // SAFETY: as above.
                    drop(unsafe { Box::from_raw(raw) });
                    return Err(e.into());
                }
            }
        }
    };
    Ok(Box::into_raw(Box::new(GoldcrestLm {
        tag: LM_TAG,
        model,
        owned: Some(Owned {
            layers,
            _file: file,
        }),
    })))
}

/// Opens a model from a caller buffer (zero-copy: keep it alive and unchanged until
/// `goldcrest_lm_free()`); the handle is heap-allocated. std flavour.
#[cfg(feature = "std")]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn goldcrest_lm_open_buffer(
    bytes: *const u8,
    len: usize,
    out: *mut *mut GoldcrestLm,
) -> GoldcrestStatus {
    guard(|| {
        need(out)?;
        // SAFETY: the caller keeps `bytes` alive and unchanged while the model lives.
        let bytes: &'static [u8] = unsafe { slice(bytes, len)? };
        let lm = open_owned(bytes, None)?;
        // SAFETY: checked non-null.
        unsafe { write_out(out, lm) }
    })
}

/// Opens a model file (memory-mapped, read in place). `path` is NUL-terminated UTF-8.
/// std flavour.
#[cfg(feature = "std")]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn goldcrest_lm_open_file(
    path: *const core::ffi::c_char,
    out: *mut *mut GoldcrestLm,
) -> GoldcrestStatus {
    guard(|| {
        need(out)?;
        let path = crate::tokenizer::path_arg(path)?;
        let file = goldcrest_std::load::ModelFile::open(path)?;
        let bytes = file.bytes();
        // SAFETY: the map is owned by the handle (dropped after the model) and never moves.
        let bytes: &'static [u8] =
            unsafe { core::slice::from_raw_parts(bytes.as_ptr(), bytes.len()) };
        let lm = open_owned(bytes, Some(file))?;
        // SAFETY: checked non-null.
        unsafe { write_out(out, lm) }
    })
}

/// Frees a model (NULL is a no-op). Free its sessions first.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn goldcrest_lm_free(lm: *mut GoldcrestLm) -> GoldcrestStatus {
    guard(|| {
        if lm.is_null() {
            return Ok(());
        }
        // SAFETY: a non-null pointer from an open function (caller's contract).
        unsafe { check_tag(lm.cast(), LM_TAG)? };
        // SAFETY: tag checked: this is a live GoldcrestLm.
        let handle = unsafe { &mut *lm };
        handle.tag = 0;
        #[cfg(feature = "std")]
        if handle.owned.is_some() {
            // SAFETY: owned handles come from Box::into_raw in open_owned.
            drop(unsafe { Box::from_raw(lm) });
            return Ok(());
        }
        // SAFETY: in caller memory; dropping in place releases nothing it owns.
        unsafe { core::ptr::drop_in_place(lm) };
        Ok(())
    })
}

/// # Safety
/// `lm` must be NULL or a pointer from an open function.
unsafe fn lm_ref<'a>(lm: *const GoldcrestLm) -> Result<&'a GoldcrestLm, Failure> {
    // SAFETY: caller's contract.
    unsafe { check_tag(lm.cast(), LM_TAG)? };
    // SAFETY: tag checked.
    Ok(unsafe { &*lm })
}

impl GoldcrestLm {
    fn info(&self) -> GoldcrestLmInfo {
        match &self.model {
            Model::Rwkv6(m) => GoldcrestLmInfo {
                kind: GoldcrestLmKind::Rwkv6,
                vocab_size: m.config().vocab_size,
                n_layer: m.config().n_layer,
                max_context: 0,
                weight_bytes: m.weights().bytes,
            },
            Model::Decoder(m) => GoldcrestLmInfo {
                kind: if m.config().arch == decoder::Arch::Qwen2 {
                    GoldcrestLmKind::Qwen2
                } else {
                    GoldcrestLmKind::Llama
                },
                vocab_size: m.config().vocab,
                n_layer: m.config().n_layer,
                max_context: m.config().max_positions,
                weight_bytes: m.weights().bytes(),
            },
            Model::GoldFinch(m) => GoldcrestLmInfo {
                kind: GoldcrestLmKind::GoldFinch,
                vocab_size: m.config().vocab_size,
                n_layer: m.config().n_layer,
                max_context: 0,
                weight_bytes: m.weights().bytes,
            },
        }
    }

    fn vocab(&self) -> usize {
        self.info().vocab_size
    }

    fn plan(&self, max_tokens: usize, context: usize) -> Result<GoldcrestMemoryPlan, Failure> {
        if max_tokens == 0 {
            return fail(
                GoldcrestStatus::InvalidArgument,
                "max_tokens must be at least 1",
            );
        }
        let plan = match &self.model {
            Model::Rwkv6(m) => m.memory_plan(max_tokens)?,
            Model::Decoder(m) => {
                if context == 0 || context > m.config().max_positions {
                    return fail(
                        GoldcrestStatus::InvalidArgument,
                        "context must be 1..=max_context for a decoder",
                    );
                }
                m.memory_plan(context, decoder::KvFormat::F16, max_tokens)?
            }
            Model::GoldFinch(m) => {
                if context == 0 {
                    return fail(
                        GoldcrestStatus::InvalidArgument,
                        "context must be at least 1 for GoldFinch (tokens its cache holds)",
                    );
                }
                m.memory_plan(context)?
            }
        };
        // The same sequence of carves as `build_session`, counted from an aligned start: each
        // part starts on the next ARENA_ALIGN boundary, exactly as it does when carved.
        let mut layout = Planner::new();
        layout.take::<u8>(size_of::<GoldcrestSession>())?;
        layout.take::<u8>(plan.state_bytes)?;
        layout.take::<u8>(plan.scratch_bytes)?;
        let v = self.vocab();
        layout.take::<f32>(v)?;
        layout.take::<f32>(v)?;
        layout.take::<u32>(v)?;
        let total = layout.bytes();
        Ok(GoldcrestMemoryPlan {
            weight_bytes: plan.weight_bytes,
            state_bytes: plan.state_bytes,
            scratch_bytes: plan.scratch_bytes,
            total_bytes: total,
        })
    }
}

/// Describes the model.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn goldcrest_lm_info(
    lm: *const GoldcrestLm,
    out: *mut GoldcrestLmInfo,
) -> GoldcrestStatus {
    guard(|| {
        // SAFETY: caller's contract on `lm` and `out`.
        unsafe { write_out(out, lm_ref(lm)?.info()) }
    })
}

/// Memory for a session that feeds up to `max_tokens` tokens per call (prompt chunking;
/// 1 is enough for token-by-token use) and, for decoders and GoldFinch, holds `context`
/// positions (ignored by RWKV-6; GoldFinch runs any feed up to `context` at once, so only
/// `max_tokens >= 1` matters for it). Pass `out->total_bytes` to `goldcrest_session_create()`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn goldcrest_lm_memory_plan(
    lm: *const GoldcrestLm,
    max_tokens: usize,
    context: usize,
    out: *mut GoldcrestMemoryPlan,
) -> GoldcrestStatus {
    guard(|| {
        // SAFETY: caller's contract.
        let lm = unsafe { lm_ref(lm)? };
        let plan = lm.plan(max_tokens, context)?;
        // SAFETY: caller's contract.
        unsafe { write_out(out, plan) }
    })
}

// One per session, in the caller's memory: there is no heap to box the larger variant into.
#[allow(clippy::large_enum_variant)]
enum Run {
    Rwkv6 {
        state: rwkv6::State<'static>,
        scratch: rwkv6::Scratch<'static>,
    },
    Decoder {
        cache: decoder::KvCache<'static>,
        scratch: decoder::Scratch<'static>,
    },
    GoldFinch {
        context: goldfinch::Context<'static>,
        scratch: goldfinch::Scratch<'static>,
    },
}

/// A generation session (opaque), living entirely in the caller's memory. Not thread-safe:
/// use it from one thread at a time (different sessions may run on different threads).
// repr(C) puts the tag first, where check_tag reads it; the header keeps it opaque.
#[repr(C)]
pub struct GoldcrestSession {
    tag: u32,
    lm: *const GoldcrestLm,
    run: Run,
    logits: &'static mut [f32],
    work: &'static mut [f32],
    order: &'static mut [u32],
    recent: [u32; GOLDCREST_REPETITION_WINDOW],
    recent_len: usize,
    has_logits: bool,
    rng: Rng,
}

/// Creates a session in `memory`: `goldcrest_lm_memory_plan()`'s `total_bytes` from a
/// `GOLDCREST_MEMORY_ALIGN` boundary (so at an unaligned address, up to
/// `GOLDCREST_MEMORY_ALIGN - 1` bytes more). The memory and the model must outlive the session;
/// `*out` points into `memory`. The sampler's random stream starts from seed 0 (see
/// `goldcrest_session_seed()`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn goldcrest_session_create(
    lm: *const GoldcrestLm,
    max_tokens: usize,
    context: usize,
    memory: *mut u8,
    memory_len: usize,
    out: *mut *mut GoldcrestSession,
) -> GoldcrestStatus {
    guard(|| {
        need(out)?;
        // SAFETY: caller's contract.
        let model = unsafe { lm_ref(lm)? };
        let plan = model.plan(max_tokens, context)?;
        if memory.is_null() {
            return fail(GoldcrestStatus::NullPointer, "NULL session memory");
        }
        let skip = memory.align_offset(GOLDCREST_MEMORY_ALIGN);
        if memory_len < skip || memory_len - skip < plan.total_bytes {
            return fail(
                GoldcrestStatus::BufferTooSmall,
                "session memory smaller than the plan's total_bytes (counted from the first \
                 GOLDCREST_MEMORY_ALIGN boundary of the buffer)",
            );
        }
        // SAFETY: the caller gives `memory_len` writable bytes that outlive the session.
        let mem: &'static mut [u8] = unsafe { slice_mut(memory, memory_len)? };
        let (handle, _) = build_session(lm, max_tokens, context, &mut mem[skip..])?;
        // SAFETY: checked non-null.
        unsafe { write_out(out, handle) }
    })
}

/// `build_session` for the plan-exactness test.
#[cfg(test)]
pub(crate) fn build_session_for_tests(
    lm: *mut GoldcrestLm,
    max_tokens: usize,
    context: usize,
    mem: &'static mut [u8],
) -> Result<(*mut GoldcrestSession, usize), Failure> {
    build_session(lm, max_tokens, context, mem)
}

/// Carves and initialises a session at the front of `mem` (which starts on an ARENA_ALIGN
/// boundary); returns it and the bytes used, which `GoldcrestLm::plan` predicts exactly.
fn build_session(
    lm: *const GoldcrestLm,
    max_tokens: usize,
    context: usize,
    mem: &'static mut [u8],
) -> Result<(*mut GoldcrestSession, usize), Failure> {
    // SAFETY: callers pass a live, tag-checked model.
    let model = unsafe { &*lm };
    let mut arena = Arena::new(mem)?;
    let handle = arena
        .take::<u8>(size_of::<GoldcrestSession>())?
        .as_mut_ptr()
        .cast::<GoldcrestSession>();
    let run = match &model.model {
        Model::Rwkv6(m) => Run::Rwkv6 {
            state: rwkv6::State::carve(m.config(), &mut arena)?,
            scratch: rwkv6::Scratch::carve(m.config(), max_tokens, &mut arena)?,
        },
        Model::Decoder(m) => Run::Decoder {
            cache: decoder::KvCache::carve(
                m.config(),
                context,
                decoder::KvFormat::F16,
                &mut arena,
            )?,
            scratch: decoder::Scratch::carve(m.config(), max_tokens, &mut arena)?,
        },
        Model::GoldFinch(m) => Run::GoldFinch {
            context: goldfinch::Context::carve(m.config(), context, &mut arena)?,
            scratch: goldfinch::Scratch::carve(m.config(), context, &mut arena)?,
        },
    };
    let v = model.vocab();
    let session = GoldcrestSession {
        tag: SESSION_TAG,
        lm,
        run,
        logits: arena.take::<f32>(v)?,
        work: arena.take::<f32>(v)?,
        order: arena.take::<u32>(v)?,
        recent: [0; GOLDCREST_REPETITION_WINDOW],
        recent_len: 0,
        has_logits: false,
        rng: Rng::new(0),
    };
    const _: () = assert!(align_of::<GoldcrestSession>() <= ARENA_ALIGN);
    // SAFETY: the first carve of an aligned arena: aligned for the session (asserted above),
    // size_of::<GoldcrestSession>() bytes, disjoint from every later carve.
    unsafe { handle.write(session) };
    Ok((handle, arena.used()))
}

/// # Safety
/// `s` must be NULL or a pointer from `goldcrest_session_create()`.
unsafe fn session_mut<'a>(s: *mut GoldcrestSession) -> Result<&'a mut GoldcrestSession, Failure> {
    // SAFETY: caller's contract.
    unsafe { check_tag(s.cast(), SESSION_TAG)? };
    // SAFETY: tag checked; one thread at a time (documented).
    let session = unsafe { &mut *s };
    // SAFETY: the model outlives its sessions (documented); check its tag too.
    unsafe { check_tag(session.lm.cast(), LM_TAG)? };
    Ok(session)
}

impl GoldcrestSession {
    fn feed(&mut self, tokens: &[u32]) -> FfiResult {
        if tokens.is_empty() {
            return fail(GoldcrestStatus::InvalidArgument, "no tokens to feed");
        }
        // SAFETY: see `model`; the model is not inside the session's memory.
        let model: &GoldcrestLm = unsafe { &*self.lm };
        let vocab = model.vocab();
        if tokens.iter().any(|&t| t as usize >= vocab) {
            return fail(
                GoldcrestStatus::InvalidArgument,
                "token id outside the vocabulary",
            );
        }
        self.has_logits = false;
        match (&model.model, &mut self.run) {
            (Model::Rwkv6(m), Run::Rwkv6 { state, scratch }) => {
                m.prefill(state, scratch, tokens, self.logits)?
            }
            (Model::Decoder(m), Run::Decoder { cache, scratch }) => {
                for chunk in tokens.chunks(scratch.max_tokens()) {
                    m.forward(cache, scratch, chunk, self.logits)?;
                }
            }
            (Model::GoldFinch(m), Run::GoldFinch { context, scratch }) => {
                m.prefill(context, scratch, tokens, self.logits)?
            }
            _ => {
                return fail(
                    GoldcrestStatus::WrongHandle,
                    "session does not match its model",
                );
            }
        }
        for &t in tokens {
            if self.recent_len == GOLDCREST_REPETITION_WINDOW {
                self.recent.copy_within(1.., 0);
                self.recent_len -= 1;
            }
            self.recent[self.recent_len] = t;
            self.recent_len += 1;
        }
        self.has_logits = true;
        Ok(())
    }
}

/// Frees a session (NULL is a no-op). Its memory is the caller's to reuse afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn goldcrest_session_free(s: *mut GoldcrestSession) -> GoldcrestStatus {
    guard(|| {
        if s.is_null() {
            return Ok(());
        }
        // SAFETY: caller's contract.
        unsafe { check_tag(s.cast(), SESSION_TAG)? };
        // SAFETY: live session in caller memory; it owns nothing to release.
        unsafe {
            (*s).tag = 0;
            core::ptr::drop_in_place(s);
        }
        Ok(())
    })
}

/// Feeds `n` tokens (a prompt or one sampled token): advances the state and computes the
/// logits after the last one. On `GOLDCREST_STATUS_CONTEXT_FULL` the session is unchanged.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn goldcrest_session_feed(
    s: *mut GoldcrestSession,
    tokens: *const u32,
    n: usize,
) -> GoldcrestStatus {
    guard(|| {
        // SAFETY: caller's contract.
        let session = unsafe { session_mut(s)? };
        // SAFETY: `n` readable token ids.
        let tokens = unsafe { slice(tokens, n)? };
        session.feed(tokens)
    })
}

/// Copies the logits after the last fed token into `out` (`cap` must equal the vocabulary).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn goldcrest_session_logits(
    s: *mut GoldcrestSession,
    out: *mut f32,
    cap: usize,
) -> GoldcrestStatus {
    guard(|| {
        // SAFETY: caller's contract.
        let session = unsafe { session_mut(s)? };
        if !session.has_logits {
            return fail(
                GoldcrestStatus::NoLogits,
                "feed tokens before asking for logits",
            );
        }
        if cap != session.logits.len() {
            return fail(
                GoldcrestStatus::LengthMismatch,
                "logits buffer length must equal vocab_size",
            );
        }
        // SAFETY: `cap` writable floats.
        let out = unsafe { slice_mut(out, cap)? };
        out.copy_from_slice(session.logits);
        Ok(())
    })
}

/// Picks the next token from the current logits (which stay unchanged, so sampling twice
/// draws twice). Does not feed it: call `goldcrest_session_feed()` with it next.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn goldcrest_session_sample(
    s: *mut GoldcrestSession,
    params: *const GoldcrestSampler,
    out_token: *mut u32,
) -> GoldcrestStatus {
    guard(|| {
        need(out_token)?;
        // SAFETY: caller's contract.
        let session = unsafe { session_mut(s)? };
        if params.is_null() {
            return fail(GoldcrestStatus::NullPointer, "NULL sampler parameters");
        }
        if !(params as usize).is_multiple_of(align_of::<GoldcrestSampler>()) {
            return fail(GoldcrestStatus::Misaligned, "sampler parameters misaligned");
        }
        // SAFETY: non-null, aligned; at least the 4-byte size field is readable.
        let size = unsafe { params.cast::<u32>().read() } as usize;
        if size < SAMPLER_V1_SIZE {
            return fail(
                GoldcrestStatus::InvalidArgument,
                "sampler struct_size too small: fill it with goldcrest_sampler_default()",
            );
        }
        // SAFETY: struct_size says the caller's struct covers every field we read.
        let p = unsafe { params.read() };
        if !session.has_logits {
            return fail(GoldcrestStatus::NoLogits, "feed tokens before sampling");
        }
        let config = SamplerConfig {
            temperature: p.temperature,
            top_k: p.top_k as usize,
            top_p: p.top_p,
            repetition_penalty: p.repetition_penalty,
        };
        let ok = config.temperature.is_finite()
            && config.temperature >= 0.0
            && config.top_p.is_finite()
            && config.top_p > 0.0
            && config.top_p <= 1.0
            && config.repetition_penalty.is_finite()
            && config.repetition_penalty > 0.0;
        if !ok {
            return fail(
                GoldcrestStatus::InvalidArgument,
                "sampler: temperature >= 0, 0 < top_p <= 1, repetition_penalty > 0, all finite",
            );
        }
        session.work.copy_from_slice(session.logits);
        let recent = &session.recent[..session.recent_len];
        let token = sample(
            session.work,
            &config,
            recent,
            &mut session.rng,
            session.order,
        )?;
        // SAFETY: checked non-null.
        unsafe { write_out(out_token, token) }
    })
}

/// Restarts the sampler's random stream from `seed`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn goldcrest_session_seed(
    s: *mut GoldcrestSession,
    seed: u64,
) -> GoldcrestStatus {
    guard(|| {
        // SAFETY: caller's contract.
        let session = unsafe { session_mut(s)? };
        session.rng = Rng::new(seed);
        Ok(())
    })
}

/// Forgets everything fed: back to the state of a new session (the random stream continues).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn goldcrest_session_reset(s: *mut GoldcrestSession) -> GoldcrestStatus {
    guard(|| {
        // SAFETY: caller's contract.
        let session = unsafe { session_mut(s)? };
        match &mut session.run {
            Run::Rwkv6 { state, .. } => state.reset(),
            Run::Decoder { cache, .. } => cache.clear(),
            Run::GoldFinch { context, .. } => context.reset(),
        }
        session.recent_len = 0;
        session.has_logits = false;
        Ok(())
    })
}

/// Bytes `goldcrest_session_save_state()` would write now. Constant for RWKV-6; for decoders
/// it grows with every position fed (the KV cache is saved up to the current position), up to
/// its value once `context` positions are filled.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn goldcrest_session_state_size(
    s: *mut GoldcrestSession,
    out_size: *mut usize,
) -> GoldcrestStatus {
    guard(|| {
        need(out_size)?;
        // SAFETY: caller's contract.
        let session = unsafe { session_mut(s)? };
        let size = session.saved_len()?;
        // SAFETY: checked non-null.
        unsafe { write_out(out_size, size) }
    })
}

impl GoldcrestSession {
    /// The session's model.
    fn model(&self) -> &'static GoldcrestLm {
        // SAFETY: the model outlives its sessions (documented) and `session_mut` checked its
        // tag; it is read-only and not inside the session's memory.
        unsafe { &*self.lm }
    }

    fn saved_len(&self) -> Result<usize, Failure> {
        Ok(match (&self.model().model, &self.run) {
            (_, Run::Rwkv6 { state, .. }) => rwkv6::State::saved_len(state.config())?,
            (_, Run::Decoder { cache, .. }) => cache.saved_len()?,
            (Model::GoldFinch(m), Run::GoldFinch { context, .. }) => m.saved_len(context.len())?,
            _ => return mismatch(),
        })
    }
}

fn mismatch<T>() -> Result<T, Failure> {
    fail(
        GoldcrestStatus::WrongHandle,
        "session does not match its model",
    )
}

/// Saves the session's sequence so far (RWKV-6: the recurrent state; decoders: the KV cache
/// and position), checksummed and tagged with the model's shape, into `out`, so a later
/// `goldcrest_session_restore_state()` resumes exactly here. The logits are not saved: feed
/// the next token after restoring. When `cap` is too small, returns `BUFFER_TOO_SMALL` and
/// writes the size needed to `*written`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn goldcrest_session_save_state(
    s: *mut GoldcrestSession,
    out: *mut u8,
    cap: usize,
    written: *mut usize,
) -> GoldcrestStatus {
    guard(|| {
        need(written)?;
        // SAFETY: caller's contract.
        let session = unsafe { session_mut(s)? };
        let size = session.saved_len()?;
        if cap < size {
            // SAFETY: checked non-null.
            unsafe { write_out(written, size)? };
            return fail(
                GoldcrestStatus::BufferTooSmall,
                "state buffer too small; *written says how big",
            );
        }
        // SAFETY: `cap` writable bytes.
        let out = unsafe { slice_mut(out, cap)? };
        let n = match (&session.model().model, &session.run) {
            (_, Run::Rwkv6 { state, .. }) => state.save(out)?,
            (_, Run::Decoder { cache, .. }) => cache.save(out)?,
            (Model::GoldFinch(m), Run::GoldFinch { context, .. }) => m.save(context, out)?,
            _ => return mismatch(),
        };
        // SAFETY: checked non-null.
        unsafe { write_out(written, n) }
    })
}

/// Restores a state saved by `goldcrest_session_save_state()` for a model of the same shape
/// (`len` = the bytes written). A decoder's state restores into any session with room for its
/// positions (`CONTEXT_FULL` otherwise; a wrapped sliding-window cache needs the same
/// `context`). On failure (`BAD_STATE`, `LENGTH_MISMATCH`, `CONTEXT_FULL`) the session is
/// unchanged.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn goldcrest_session_restore_state(
    s: *mut GoldcrestSession,
    bytes: *const u8,
    len: usize,
) -> GoldcrestStatus {
    guard(|| {
        // SAFETY: caller's contract.
        let session = unsafe { session_mut(s)? };
        // SAFETY: `len` readable bytes.
        let bytes = unsafe { slice(bytes, len)? };
        let model = session.model();
        let restored = match (&model.model, &mut session.run) {
            (_, Run::Rwkv6 { state, .. }) => state.restore(bytes),
            (_, Run::Decoder { cache, .. }) => cache.restore(bytes),
            (Model::GoldFinch(m), Run::GoldFinch { context, scratch }) => {
                m.restore(context, scratch, bytes)
            }
            _ => return mismatch(),
        };
        restored.map_err(|e| match e {
            goldcrest_core::Error::LengthMismatch { .. }
            | goldcrest_core::Error::ContextFull { .. } => Failure::Core(e),
            _ => Failure::Status(
                GoldcrestStatus::BadState,
                "not a state saved by goldcrest_session_save_state() for this model",
            ),
        })?;
        session.has_logits = false;
        session.recent_len = 0;
        Ok(())
    })
}
