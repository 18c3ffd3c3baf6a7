//! Rust-side tests of the C ABI (the programs in examples/c test it from C): results through
//! the ABI must equal the Rust API's bit for bit, and bad calls must return their status.

use core::ptr::{null, null_mut};
use std::ffi::CStr;

use super::*;
use goldcrest_core::arena::Arena;
use goldcrest_core::kernels::Kernels;
use goldcrest_core::models::rwkv6::{Config, Rwkv6, Scratch, State};

const RWKV: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/rwkv6/tiny_a.safetensors"
);
const TOTO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/toto/small.model.safetensors"
);

fn name(status: i32) -> String {
    // SAFETY: goldcrest_status_str returns a static NUL-terminated string.
    unsafe { CStr::from_ptr(goldcrest_status_str(status)) }
        .to_string_lossy()
        .into_owned()
}

#[test]
fn every_status_has_a_distinct_name_and_unknown_values_are_safe() {
    let names: Vec<String> = (0..=17).map(name).collect();
    assert!(names.iter().all(|n| n != "unknown status"));
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len());
    assert_eq!(name(18), "unknown status");
    assert_eq!(name(-1), "unknown status");
    assert_eq!(goldcrest_version(), GOLDCREST_VERSION);
}

#[test]
fn logits_through_the_abi_equal_the_rust_api_and_open_in_needs_no_heap() {
    let bytes = std::fs::read(RWKV).unwrap();
    let prompt = [1u32, 2, 3, 7];

    // Rust API.
    let st = goldcrest_std::load::parse_hosted(&bytes).unwrap();
    let config = Config::from_source(&st).unwrap();
    let mut layers = vec![None; config.n_layer];
    let model = Rwkv6::load(&st, &mut layers, Kernels::scalar()).unwrap();
    let plan = model.memory_plan(4).unwrap();
    let (mut a, mut b) = (
        vec![0u8; plan.bytes_unaligned()],
        vec![0u8; plan.bytes_unaligned()],
    );
    let mut state = State::carve(&config, &mut Arena::new_unaligned(&mut a)).unwrap();
    let mut scratch = Scratch::carve(&config, 4, &mut Arena::new_unaligned(&mut b)).unwrap();
    let mut want = vec![0f32; config.vocab_size];
    model
        .prefill(&mut state, &mut scratch, &prompt, &mut want)
        .unwrap();

    // ABI, model in caller memory.
    let mut size = 0usize;
    // SAFETY: valid buffers for every call below; handles used only while alive.
    unsafe {
        assert_eq!(
            goldcrest_lm_open_size(bytes.as_ptr(), bytes.len(), &mut size),
            GoldcrestStatus::Ok
        );
        let mut model_mem = vec![0u8; size];
        let mut lm = null_mut();
        assert_eq!(
            goldcrest_lm_open_in(
                bytes.as_ptr(),
                bytes.len(),
                model_mem.as_mut_ptr(),
                size,
                &mut lm
            ),
            GoldcrestStatus::Ok
        );
        let (session, _mem) = new_session(lm, 4, 0);
        assert_eq!(
            goldcrest_session_feed(session, prompt.as_ptr(), prompt.len()),
            GoldcrestStatus::Ok
        );
        let mut got = vec![0f32; want.len()];
        assert_eq!(
            goldcrest_session_logits(session, got.as_mut_ptr(), got.len()),
            GoldcrestStatus::Ok
        );
        // Kernels differ (detected vs scalar), so compare within float tolerance.
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{g} vs {w}");
        }
        // Greedy sampling picks the argmax of those logits.
        let mut params = core::mem::zeroed();
        assert_eq!(goldcrest_sampler_default(&mut params), GoldcrestStatus::Ok);
        params.temperature = 0.0;
        let mut token = u32::MAX;
        assert_eq!(
            goldcrest_session_sample(session, &params, &mut token),
            GoldcrestStatus::Ok
        );
        assert_eq!(token, goldcrest_core::ops::sample::greedy(&got).unwrap());
        // Reset then refeed gives the same logits again.
        assert_eq!(goldcrest_session_reset(session), GoldcrestStatus::Ok);
        assert_eq!(
            goldcrest_session_logits(session, got.as_mut_ptr(), got.len()),
            GoldcrestStatus::NoLogits
        );
        assert_eq!(
            goldcrest_session_feed(session, prompt.as_ptr(), prompt.len()),
            GoldcrestStatus::Ok
        );
        let mut again = vec![0f32; want.len()];
        assert_eq!(
            goldcrest_session_logits(session, again.as_mut_ptr(), again.len()),
            GoldcrestStatus::Ok
        );
        assert_eq!(again, got);
        assert_eq!(goldcrest_session_free(session), GoldcrestStatus::Ok);
        assert_eq!(goldcrest_lm_free(lm), GoldcrestStatus::Ok);
        // The handle in caller memory is dead now: using it is an error, not UB.
        let mut plan = GoldcrestMemoryPlan::default();
        assert_eq!(
            goldcrest_lm_memory_plan(lm, 4, 0, &mut plan),
            GoldcrestStatus::WrongHandle
        );
    }
}

#[test]
fn forecast_mean_through_the_abi_equals_the_rust_api() {
    let bytes = std::fs::read(TOTO).unwrap();
    let history: Vec<f64> = (0..48).map(|t| 20.0 + (t as f64 * 0.4).sin()).collect();
    let st = goldcrest_std::load::parse_hosted(&bytes).unwrap();
    let model =
        goldcrest_core::models::toto::Toto::new(st, goldcrest_std::kernels::detect()).unwrap();
    let spec = goldcrest_core::models::toto::ForecastSpec {
        variates: 1,
        context: 48,
        horizon: 5,
        batch: 1,
    };
    let mut memory = vec![0u8; model.memory_plan(&spec).unwrap().bytes_unaligned()];
    let mut want = vec![0f64; 5];
    let series = goldcrest_core::models::toto::Series {
        values: &history,
        variates: 1,
        groups: None,
    };
    model
        .forecast_mean(&series, 5, &mut memory, &mut want)
        .unwrap();

    let mut handle_mem = [0u8; GOLDCREST_FORECASTER_SIZE];
    // SAFETY: valid buffers; handles used only while alive.
    unsafe {
        let mut fc = null_mut();
        assert_eq!(
            goldcrest_forecaster_open_in(
                bytes.as_ptr(),
                bytes.len(),
                handle_mem.as_mut_ptr(),
                handle_mem.len(),
                &mut fc
            ),
            GoldcrestStatus::Ok
        );
        let mut req: GoldcrestForecastRequest = core::mem::zeroed();
        req.struct_size = core::mem::size_of::<GoldcrestForecastRequest>() as u32;
        req.values = history.as_ptr();
        req.variates = 1;
        req.context = 48;
        req.horizon = 5;
        let mut plan = GoldcrestMemoryPlan::default();
        assert_eq!(
            goldcrest_forecaster_memory_plan(fc, &req, &mut plan),
            GoldcrestStatus::Ok
        );
        let mut mem = vec![0u8; plan.total_bytes];
        let mut got = vec![0f64; 5];
        let out = GoldcrestForecastOutput {
            mean: got.as_mut_ptr(),
            quantiles: null_mut(),
            samples: null_mut(),
        };
        assert_eq!(
            goldcrest_forecast(fc, &req, mem.as_mut_ptr(), mem.len(), &out),
            GoldcrestStatus::Ok
        );
        assert_eq!(got, want);
        // A mask marks a value missing exactly as NaN does.
        let mut with_nan = history.clone();
        with_nan[10] = f64::NAN;
        let mut mask = [1u8; 48];
        mask[10] = 0;
        req.mask = mask.as_ptr();
        let mut masked = vec![0f64; 5];
        let out = GoldcrestForecastOutput {
            mean: masked.as_mut_ptr(),
            quantiles: null_mut(),
            samples: null_mut(),
        };
        assert_eq!(
            goldcrest_forecast(fc, &req, mem.as_mut_ptr(), mem.len(), &out),
            GoldcrestStatus::Ok
        );
        req.mask = null();
        req.values = with_nan.as_ptr();
        let mut nan = vec![0f64; 5];
        let out = GoldcrestForecastOutput {
            mean: nan.as_mut_ptr(),
            quantiles: null_mut(),
            samples: null_mut(),
        };
        assert_eq!(
            goldcrest_forecast(fc, &req, mem.as_mut_ptr(), mem.len(), &out),
            GoldcrestStatus::Ok
        );
        assert_eq!(masked, nan);
        assert_ne!(masked, want);
        assert_eq!(goldcrest_forecaster_free(fc), GoldcrestStatus::Ok);
    }
}

#[test]
fn misaligned_and_wrong_kind_pointers_are_errors() {
    let bytes = std::fs::read(RWKV).unwrap();
    // SAFETY: every pointer is valid for what the function may read before it fails.
    unsafe {
        let lm = open_lm(&bytes);
        let tokens = [0u32; 3];
        let odd = tokens.as_ptr().cast::<u8>().add(1).cast::<u32>();
        let (s, _mem) = new_session(lm, 1, 0);
        assert_eq!(
            goldcrest_session_feed(s, odd, 1),
            GoldcrestStatus::Misaligned
        );
        assert_eq!(
            goldcrest_forecaster_free(lm.cast()),
            GoldcrestStatus::WrongHandle
        );
        assert_eq!(
            goldcrest_tokenizer_free(s.cast()),
            GoldcrestStatus::WrongHandle
        );
        assert_eq!(goldcrest_session_free(s), GoldcrestStatus::Ok);
        assert_eq!(goldcrest_lm_free(lm), GoldcrestStatus::Ok);
    }
}

/// A Hugging Face fixture converted to a goldcrest file, in 8-aligned storage (tensors are read
/// in place); the second value is the file's length in bytes.
fn decoder_file(name: &str, arch: goldcrest_core::models::decoder::Arch) -> (Vec<u64>, usize) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/decoder")
        .join(name);
    let options = goldcrest_std::convert::decoder::Options {
        weights: goldcrest_core::quant::Format::F32,
        head_weights: None,
    };
    let bytes = goldcrest_std::convert::decoder::convert(&dir, arch, options, &mut |_, _, _| {})
        .unwrap()
        .to_bytes()
        .unwrap();
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(&bytes);
    (words, bytes.len())
}

/// The prompt of tests/fixtures/decoder/*/golden.json.
const DECODER_PROMPT: [u32; 8] = [1, 17, 42, 99, 200, 7, 255, 64];

/// Session memory starting on a GOLDCREST_MEMORY_ALIGN boundary, `len` bytes long.
struct AlignedMemory {
    storage: Vec<u8>,
    skip: usize,
    len: usize,
}

impl AlignedMemory {
    fn new(len: usize) -> Self {
        let storage = vec![0u8; len + GOLDCREST_MEMORY_ALIGN];
        let skip = storage.as_ptr().align_offset(GOLDCREST_MEMORY_ALIGN);
        AlignedMemory { storage, skip, len }
    }
    fn ptr(&mut self) -> *mut u8 {
        self.storage[self.skip..].as_mut_ptr()
    }
}

/// A model over `bytes`, which it borrows (goldcrest_lm_open_buffer).
///
/// # Safety
/// `bytes` outlives the model.
unsafe fn open_lm(bytes: &[u8]) -> *mut GoldcrestLm {
    let mut lm = null_mut();
    // SAFETY: valid buffer and out-parameter; `bytes` outlives the model (caller).
    let status = unsafe { goldcrest_lm_open_buffer(bytes.as_ptr(), bytes.len(), &mut lm) };
    assert_eq!(status, GoldcrestStatus::Ok);
    lm
}

/// What goldcrest_lm_info says of a live model.
///
/// # Safety
/// `lm` is a live model.
unsafe fn lm_info(lm: *const GoldcrestLm) -> GoldcrestLmInfo {
    let mut info = GoldcrestLmInfo {
        kind: GoldcrestLmKind::Rwkv6,
        vocab_size: 0,
        n_layer: 0,
        max_context: 0,
        weight_bytes: 0,
    };
    // SAFETY: `lm` is live (caller); `info` is a valid out-parameter.
    assert_eq!(
        unsafe { goldcrest_lm_info(lm, &mut info) },
        GoldcrestStatus::Ok
    );
    info
}

/// A session of `lm` in fresh memory of exactly the planned size; the memory is returned
/// with it and must outlive it.
///
/// # Safety
/// `lm` is a live model.
unsafe fn new_session(
    lm: *const GoldcrestLm,
    max_tokens: usize,
    context: usize,
) -> (*mut GoldcrestSession, AlignedMemory) {
    let mut plan = GoldcrestMemoryPlan::default();
    let mut session = null_mut();
    // SAFETY: `lm` is live (caller); the memory is aligned and `plan.total_bytes` long.
    unsafe {
        assert_eq!(
            goldcrest_lm_memory_plan(lm, max_tokens, context, &mut plan),
            GoldcrestStatus::Ok
        );
        let mut mem = AlignedMemory::new(plan.total_bytes);
        assert_eq!(
            goldcrest_session_create(lm, max_tokens, context, mem.ptr(), mem.len, &mut session),
            GoldcrestStatus::Ok
        );
        (session, mem)
    }
}

/// Feeds `feed`, then picks `steps` tokens greedily, feeding each but the last; returns them and
/// the logits the last one was picked from.
///
/// # Safety
/// `s` is a live session.
unsafe fn decode(
    s: *mut GoldcrestSession,
    feed: &[u32],
    steps: usize,
    vocab: usize,
) -> (Vec<u32>, Vec<f32>) {
    let mut params = GoldcrestSampler {
        struct_size: 0,
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
        repetition_penalty: 1.0,
    };
    let mut tokens = Vec::new();
    let mut logits = vec![0f32; vocab];
    // SAFETY: valid pointers for every call; `s` is live (caller).
    unsafe {
        assert_eq!(goldcrest_sampler_default(&mut params), GoldcrestStatus::Ok);
        params.temperature = 0.0;
        assert_eq!(
            goldcrest_session_feed(s, feed.as_ptr(), feed.len()),
            GoldcrestStatus::Ok
        );
        for i in 0..steps {
            if i > 0 {
                assert_eq!(
                    goldcrest_session_feed(s, &tokens[i - 1], 1),
                    GoldcrestStatus::Ok
                );
            }
            let mut t = u32::MAX;
            assert_eq!(
                goldcrest_session_sample(s, &params, &mut t),
                GoldcrestStatus::Ok
            );
            tokens.push(t);
        }
        assert_eq!(
            goldcrest_session_logits(s, logits.as_mut_ptr(), vocab),
            GoldcrestStatus::Ok
        );
    }
    (tokens, logits)
}
#[test]
fn decoder_through_the_abi_equals_the_rust_api_and_the_reference() {
    use goldcrest_core::models::decoder::{Arch, Decoder, KvCache, KvFormat, Scratch, Weights};
    for (name, arch, kind) in [
        ("qwen2", Arch::Qwen2, GoldcrestLmKind::Qwen2),
        ("llama", Arch::Llama, GoldcrestLmKind::Llama),
    ] {
        let (words, len) = decoder_file(name, arch);
        let bytes = &bytemuck::cast_slice::<u64, u8>(&words)[..len];
        let golden = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../tests/fixtures/decoder")
                .join(name)
                .join("logits_prompt.f32"),
        )
        .unwrap();
        let reference: Vec<f32> = golden
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();

        // Rust API, the kernels and KV format the ABI uses.
        let st = goldcrest_std::load::parse_hosted(bytes).unwrap();
        let mut layers = vec![None; 8];
        let weights = Weights::load(&st, &mut layers).unwrap();
        let decoder = Decoder::new(weights, goldcrest_std::kernels::detect());
        let cfg = *decoder.config();
        let plan = decoder.memory_plan(32, KvFormat::F16, 8).unwrap();
        let (mut a, mut b) = (
            vec![0u8; plan.state_bytes + 64],
            vec![0u8; plan.scratch_bytes + 64],
        );
        let mut cache =
            KvCache::carve(&cfg, 32, KvFormat::F16, &mut Arena::new_unaligned(&mut a)).unwrap();
        let mut scratch = Scratch::carve(&cfg, 8, &mut Arena::new_unaligned(&mut b)).unwrap();
        let mut want = vec![0f32; cfg.vocab];
        decoder
            .forward(&mut cache, &mut scratch, &DECODER_PROMPT, &mut want)
            .unwrap();

        // SAFETY: valid buffers for every call; handles used only while alive.
        unsafe {
            let lm = open_lm(bytes);
            let info = lm_info(lm);
            assert_eq!(info.kind, kind);
            assert_eq!(info.vocab_size, cfg.vocab);
            let (s, _mem) = new_session(lm, 8, 32);
            assert_eq!(
                goldcrest_session_feed(s, DECODER_PROMPT.as_ptr(), DECODER_PROMPT.len()),
                GoldcrestStatus::Ok
            );
            let mut got = vec![0f32; cfg.vocab];
            assert_eq!(
                goldcrest_session_logits(s, got.as_mut_ptr(), got.len()),
                GoldcrestStatus::Ok
            );
            assert_eq!(got, want, "{name}: ABI and Rust API differ");
            // transformers' logits at the prompt's last position, within the f16 KV cache's
            // tolerance of std-ext/tests/decoder.rs: 2e-3 of the largest |logit|.
            let last = &reference
                [(DECODER_PROMPT.len() - 1) * cfg.vocab..DECODER_PROMPT.len() * cfg.vocab];
            let scale = last.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let err = got
                .iter()
                .zip(last)
                .fold(0.0f32, |m, (g, r)| m.max((g - r).abs()));
            assert!(
                err <= 2e-3 * scale,
                "{name}: {err} off the reference (scale {scale})"
            );
            assert_eq!(goldcrest_session_free(s), GoldcrestStatus::Ok);
            assert_eq!(goldcrest_lm_free(lm), GoldcrestStatus::Ok);
        }
    }
}

#[test]
fn decoder_state_restored_then_decoded_equals_uninterrupted_decoding() {
    let (words, len) = decoder_file("qwen2", goldcrest_core::models::decoder::Arch::Qwen2);
    let bytes = &bytemuck::cast_slice::<u64, u8>(&words)[..len];
    // SAFETY: valid buffers for every call; handles used only while alive.
    unsafe {
        let lm = open_lm(bytes);
        let vocab = lm_info(lm).vocab_size;
        let (s, _mem) = new_session(lm, 8, 32);

        // Prompt and 3 fed tokens; the 4th is picked but not fed: the checkpoint.
        let (head, _) = decode(s, &DECODER_PROMPT, 4, vocab);
        let mut size = 0usize;
        assert_eq!(
            goldcrest_session_state_size(s, &mut size),
            GoldcrestStatus::Ok
        );
        let mut written = 0usize;
        let mut saved = vec![0u8; size];
        assert_eq!(
            goldcrest_session_save_state(s, saved.as_mut_ptr(), size - 1, &mut written),
            GoldcrestStatus::BufferTooSmall
        );
        assert_eq!(written, size);
        assert_eq!(
            goldcrest_session_save_state(s, saved.as_mut_ptr(), size, &mut written),
            GoldcrestStatus::Ok
        );
        assert_eq!(written, size);

        // Uninterrupted decoding from there.
        let (tail, tail_logits) = decode(s, &[head[3]], 8, vocab);
        let mut grown = 0usize;
        assert_eq!(
            goldcrest_session_state_size(s, &mut grown),
            GoldcrestStatus::Ok
        );
        assert!(
            grown > size,
            "the saved KV cache grows with the positions fed"
        );

        // Restored into the same session, and into a new one with a longer context.
        assert_eq!(
            goldcrest_session_restore_state(s, saved.as_ptr(), size),
            GoldcrestStatus::Ok
        );
        let (again, again_logits) = decode(s, &[head[3]], 8, vocab);
        assert_eq!(again, tail);
        assert_eq!(again_logits, tail_logits);
        let (longer, _longer_mem) = new_session(lm, 8, 64);
        assert_eq!(
            goldcrest_session_restore_state(longer, saved.as_ptr(), size),
            GoldcrestStatus::Ok
        );
        let (resumed, resumed_logits) = decode(longer, &[head[3]], 8, vocab);
        assert_eq!(resumed, tail);
        assert_eq!(resumed_logits, tail_logits);

        // 11 positions do not fit a context of 8; bad bytes are BAD_STATE; nothing changes.
        let (short, _short_mem) = new_session(lm, 8, 8);
        assert_eq!(
            goldcrest_session_restore_state(short, saved.as_ptr(), size),
            GoldcrestStatus::ContextFull
        );
        assert_eq!(
            goldcrest_session_restore_state(s, saved.as_ptr(), size - 1),
            GoldcrestStatus::BadState
        );
        let mut flipped = saved.clone();
        flipped[100] ^= 0x10;
        assert_eq!(
            goldcrest_session_restore_state(s, flipped.as_ptr(), size),
            GoldcrestStatus::BadState
        );
        assert_eq!(
            goldcrest_session_restore_state(s, null(), size),
            GoldcrestStatus::NullPointer
        );
        let (after, _) = decode(s, &[tail[7]], 1, vocab);
        let (reference, _) = {
            assert_eq!(
                goldcrest_session_restore_state(s, saved.as_ptr(), size),
                GoldcrestStatus::Ok
            );
            let _ = decode(s, &[head[3]], 8, vocab);
            decode(s, &[tail[7]], 1, vocab)
        };
        assert_eq!(
            after, reference,
            "failed restores left the session as it was"
        );
        for x in [s, longer, short] {
            assert_eq!(goldcrest_session_free(x), GoldcrestStatus::Ok);
        }
        assert_eq!(goldcrest_lm_free(lm), GoldcrestStatus::Ok);
    }
}

#[test]
fn session_plans_are_exact() {
    let rwkv = std::fs::read(RWKV).unwrap();
    let (words, len) = decoder_file("qwen2", goldcrest_core::models::decoder::Arch::Qwen2);
    let qwen = &bytemuck::cast_slice::<u64, u8>(&words)[..len];
    for (bytes, max_tokens, context) in [
        (&rwkv[..], 1, 0),
        (&rwkv[..], 7, 0),
        (qwen, 1, 16),
        (qwen, 8, 40),
    ] {
        // SAFETY: valid buffers for every call; handles used only while alive.
        unsafe {
            let lm = open_lm(bytes);
            let mut plan = GoldcrestMemoryPlan::default();
            assert_eq!(
                goldcrest_lm_memory_plan(lm, max_tokens, context, &mut plan),
                GoldcrestStatus::Ok
            );
            let total = plan.total_bytes;
            // Every planned byte is used: carving into exactly `total` uses all of it, and one
            // byte less fails in the carving itself, not only in the up-front check.
            let mut exact = AlignedMemory::new(total);
            let all: &'static mut [u8] = core::slice::from_raw_parts_mut(exact.ptr(), total);
            let (s, used) =
                super::lm::build_session_for_tests(lm, max_tokens, context, all).unwrap();
            assert_eq!(used, total);
            assert_eq!(goldcrest_session_free(s), GoldcrestStatus::Ok);
            let short: &'static mut [u8] = core::slice::from_raw_parts_mut(exact.ptr(), total - 1);
            assert!(super::lm::build_session_for_tests(lm, max_tokens, context, short).is_err());

            let mut s = null_mut();
            assert_eq!(
                goldcrest_session_create(lm, max_tokens, context, exact.ptr(), total - 1, &mut s),
                GoldcrestStatus::BufferTooSmall
            );
            assert!(s.is_null());
            assert_eq!(
                goldcrest_session_create(lm, max_tokens, context, exact.ptr(), total, &mut s),
                GoldcrestStatus::Ok
            );
            assert_eq!(goldcrest_session_free(s), GoldcrestStatus::Ok);
            // At an unaligned address the session starts on the next boundary.
            let mut loose = AlignedMemory::new(total + GOLDCREST_MEMORY_ALIGN);
            let odd = loose.ptr().add(1);
            assert_eq!(
                goldcrest_session_create(lm, max_tokens, context, odd, total, &mut s),
                GoldcrestStatus::BufferTooSmall
            );
            assert_eq!(
                goldcrest_session_create(
                    lm,
                    max_tokens,
                    context,
                    odd,
                    total + GOLDCREST_MEMORY_ALIGN - 1,
                    &mut s
                ),
                GoldcrestStatus::Ok
            );
            assert_eq!(goldcrest_session_free(s), GoldcrestStatus::Ok);
            assert_eq!(goldcrest_lm_free(lm), GoldcrestStatus::Ok);
        }
    }
}

const GOLDFINCH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/goldfinch/tiny_a.safetensors"
);

#[test]
fn goldfinch_through_the_abi_matches_the_reference_and_resumes_from_its_at_rest_state() {
    let bytes = std::fs::read(GOLDFINCH).unwrap();
    let golden_bytes =
        std::fs::read(GOLDFINCH.replace(".safetensors", ".golden.safetensors")).unwrap();
    let golden = goldcrest_std::load::parse_hosted(&golden_bytes).unwrap();
    let floats = |name: &str| -> Vec<f32> {
        bytemuck::cast_slice::<u8, f32>(golden.tensor(name).unwrap().bytes()).to_vec()
    };
    let tokens: Vec<u32> =
        bytemuck::cast_slice::<u8, i32>(golden.tensor("tokens").unwrap().bytes())
            .iter()
            .map(|&t| t as u32)
            .collect();
    let full = floats("full_logits");
    // SAFETY: valid buffers for every call; handles used only while alive.
    unsafe {
        let lm = open_lm(&bytes);
        let info = lm_info(lm);
        assert_eq!(info.kind, GoldcrestLmKind::GoldFinch);
        let vocab = info.vocab_size;
        let mut plan = GoldcrestMemoryPlan::default();
        assert_eq!(
            goldcrest_lm_memory_plan(lm, 1, 0, &mut plan),
            GoldcrestStatus::InvalidArgument
        );
        assert_eq!(
            goldcrest_lm_memory_plan(lm, 1, 32, &mut plan),
            GoldcrestStatus::Ok
        );
        let mut mem = AlignedMemory::new(plan.total_bytes);
        let mut s = null_mut();
        assert_eq!(
            goldcrest_session_create(lm, 1, 32, mem.ptr(), plan.total_bytes - 1, &mut s),
            GoldcrestStatus::BufferTooSmall
        );
        assert_eq!(
            goldcrest_session_create(lm, 1, 32, mem.ptr(), plan.total_bytes, &mut s),
            GoldcrestStatus::Ok
        );
        // Every position's logits against the float64 reference (f16-rounded weights run in
        // f32): 1e-4 absolute, the tolerance of core/tests/goldfinch.rs.
        let mut got = vec![0f32; vocab];
        for (i, t) in tokens.iter().enumerate() {
            assert_eq!(goldcrest_session_feed(s, t, 1), GoldcrestStatus::Ok);
            assert_eq!(
                goldcrest_session_logits(s, got.as_mut_ptr(), vocab),
                GoldcrestStatus::Ok
            );
            let want = &full[i * vocab..(i + 1) * vocab];
            let err = got
                .iter()
                .zip(want)
                .fold(0.0f32, |m, (g, w)| m.max((g - w).abs()));
            assert!(err <= 1e-4, "position {i}: logits off by {err}");
        }

        // Save after a prefix, decode on; restore into a new session and decode the same.
        assert_eq!(goldcrest_session_reset(s), GoldcrestStatus::Ok);
        let (head, _) = decode(s, &tokens[..5], 3, vocab);
        let mut size = 0usize;
        assert_eq!(
            goldcrest_session_state_size(s, &mut size),
            GoldcrestStatus::Ok
        );
        let mut saved = vec![0u8; size];
        let mut written = 0usize;
        assert_eq!(
            goldcrest_session_save_state(s, saved.as_mut_ptr(), size, &mut written),
            GoldcrestStatus::Ok
        );
        let (tail, tail_logits) = decode(s, &[head[2]], 6, vocab);
        let (r, _other) = new_session(lm, 1, 32);
        assert_eq!(
            goldcrest_session_restore_state(r, saved.as_ptr(), size - 1),
            GoldcrestStatus::BadState
        );
        assert_eq!(
            goldcrest_session_restore_state(r, saved.as_ptr(), size),
            GoldcrestStatus::Ok
        );
        let (again, again_logits) = decode(r, &[head[2]], 6, vocab);
        assert_eq!(again, tail);
        assert_eq!(again_logits, tail_logits);
        for x in [s, r] {
            assert_eq!(goldcrest_session_free(x), GoldcrestStatus::Ok);
        }
        assert_eq!(goldcrest_lm_free(lm), GoldcrestStatus::Ok);
    }
}
