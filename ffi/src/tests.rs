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
        let mut plan = GoldcrestMemoryPlan::default();
        assert_eq!(
            goldcrest_lm_memory_plan(lm, 4, 0, &mut plan),
            GoldcrestStatus::Ok
        );
        let mut mem = vec![0u8; plan.total_bytes];
        let mut session = null_mut();
        assert_eq!(
            goldcrest_session_create(lm, 4, 0, mem.as_mut_ptr(), mem.len(), &mut session),
            GoldcrestStatus::Ok
        );
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
        let mut lm = null_mut();
        assert_eq!(
            goldcrest_lm_open_buffer(bytes.as_ptr(), bytes.len(), &mut lm),
            GoldcrestStatus::Ok
        );
        let tokens = [0u32; 3];
        let odd = tokens.as_ptr().cast::<u8>().add(1).cast::<u32>();
        let mut plan = GoldcrestMemoryPlan::default();
        assert_eq!(
            goldcrest_lm_memory_plan(lm, 1, 0, &mut plan),
            GoldcrestStatus::Ok
        );
        let mut mem = vec![0u8; plan.total_bytes];
        let mut s = null_mut();
        assert_eq!(
            goldcrest_session_create(lm, 1, 0, mem.as_mut_ptr(), mem.len(), &mut s),
            GoldcrestStatus::Ok
        );
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
