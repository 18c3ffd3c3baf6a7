//! goldcrest-core on a Cortex-M4F: loads a packed-ternary model from flash, runs the kernels
//! through the public API and checks every output bit against the host's scalar reference;
//! then runs the bundled tiny ternary RWKV-6 (models/rwkv6-tiny.safetensors) from flash,
//! generates 32 tokens greedily (plain argmax, then again with a repetition penalty) and checks
//! both against the host's committed lists; forecasts a
//! series with the bundled tiny Toto and runs a tiny ternary GoldFinch, each checked against
//! the host.
//! Prints over semihosting and exits with QEMU status 0 (pass) or 1 (fail, panic, HardFault).
#![no_std]
#![no_main]

use cortex_m::peripheral::{SYST, syst::SystClkSource};
use cortex_m_rt::{ExceptionFrame, entry, exception};
use cortex_m_semihosting::{debug, hprintln};
use goldcrest_core::arena::{Aligned, Arena};
use goldcrest_core::format::SafeTensors;
use goldcrest_core::kernels::{ActScale, Int8Acts, Kernels};
use goldcrest_core::models::rwkv6::{Config, Rwkv6, Scratch, State};
use goldcrest_core::ops::sample::{Rng, SamplerConfig, greedy, sample};
use panic_semihosting as _;

mod goldfinch;
mod toto;

mod expected {
    include!(concat!(env!("OUT_DIR"), "/expected.rs"));
}

const MODEL_BYTES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/model.safetensors"));
/// The model in flash, at an address aligned for every tensor's element type: this wrapper is
/// the whole recipe for `include_bytes!` data (docs/format.md).
static MODEL: Aligned<{ MODEL_BYTES.len() }> = Aligned(*include_bytes!(concat!(
    env!("OUT_DIR"),
    "/model.safetensors"
)));

mod tiny {
    include!(concat!(env!("OUT_DIR"), "/tiny_greedy.rs"));
}

const TINY_BYTES: &[u8] = include_bytes!("../../../models/rwkv6-tiny.safetensors");
/// The bundled tiny RWKV-6 in flash, aligned like every goldcrest file must be.
static TINY: Aligned<{ TINY_BYTES.len() }> =
    Aligned(*include_bytes!("../../../models/rwkv6-tiny.safetensors"));
/// RAM for the model's state and one-token scratch (the memory plan says how much is used).
const TINY_RAM: usize = 128 * 1024;
/// Blocks the firmware has room for (the tiny model has 3).
const MAX_LAYERS: usize = 4;
/// mps2-an386 runs its SysTick from the 25 MHz system clock; under `-icount shift=0` QEMU
/// executes one instruction per virtual nanosecond, so one tick is 40 instructions.
const INSTRUCTIONS_PER_TICK: u64 = 40;

const ROWS: usize = 48;
const COLS: usize = 300;

fn check(label: &str, got: &[f32], want: &[u32]) -> bool {
    let mismatches = got
        .iter()
        .zip(want)
        .filter(|(g, w)| g.to_bits() != **w)
        .count();
    let ok = mismatches == 0 && got.len() == want.len();
    hprintln!(
        "{:<24} y[0] = {:>12.6}  {}",
        label,
        got[0],
        if ok { "ok (bit-exact)" } else { "MISMATCH" }
    );
    ok
}

fn run() -> Result<bool, goldcrest_core::Error> {
    let file = SafeTensors::parse(&MODEL.0)?;
    hprintln!(
        "model: {} bytes in flash at {:p}, {} tensors",
        MODEL.0.len(),
        MODEL.0.as_ptr(),
        file.len()
    );
    let kernels = Kernels::for_target();
    let x = file.tensor("x")?.expect_shape(&[COLS as u64])?.f32s()?;
    let mut y = [0.0f32; ROWS];
    let mut scratch = [0u8; 1024];
    let mut ok = true;
    let cases: [(&str, &[u32], Option<&[u32]>); 3] = [
        (
            "w.tq2",
            &expected::GEMV_F32_W_TQ2,
            Some(&expected::GEMV_I8_W_TQ2),
        ),
        (
            "w.tq1",
            &expected::GEMV_F32_W_TQ1,
            Some(&expected::GEMV_I8_W_TQ1),
        ),
        ("w.q8", &expected::GEMV_F32_W_Q8, None),
    ];
    for (name, want_f32, want_i8) in cases {
        let w = file.tensor(name)?.matrix()?;
        kernels.gemv(&w, x, &mut y)?;
        ok &= check(name, &y, want_f32);
        if let Some(want) = want_i8 {
            let need = Int8Acts::scratch_bytes(1, COLS, ActScale::PerToken).unwrap_or(usize::MAX);
            let acts = kernels.quantize_acts(
                x,
                1,
                COLS,
                ActScale::PerToken,
                &mut scratch[..need.min(1024)],
            )?;
            kernels.gemv_i8(&w, &acts, &mut y)?;
            ok &= check("  int8 activations", &y, want);
        }
    }
    // A truncated model must be an error, never a fault.
    let truncated = SafeTensors::parse(&MODEL.0[..MODEL.0.len() / 2]);
    hprintln!("truncated model -> {:?}", truncated.err());
    ok &= truncated.is_err();
    Ok(ok)
}

/// SysTick ticks elapsed between two reads of the down-counter (one wrap at most).
fn ticks_between(start: u32, end: u32) -> u64 {
    u64::from(start.wrapping_sub(end) & 0x00FF_FFFF)
}

fn run_tiny_rwkv6() -> Result<bool, goldcrest_core::Error> {
    let file = SafeTensors::parse(&TINY.0)?;
    let config = Config::from_source(&file)?;
    let mut layers = [None; MAX_LAYERS];
    let model = Rwkv6::load(&file, &mut layers, Kernels::for_target())?;
    let plan = model.memory_plan(1)?;
    hprintln!(
        "rwkv6-tiny: {} bytes in flash at {:p}; L {} C {} F {} V {}; weights {} B, state {} B, scratch {} B",
        TINY.0.len(),
        TINY.0.as_ptr(),
        config.n_layer,
        config.n_embd,
        config.dim_ffn,
        config.vocab_size,
        plan.weight_bytes,
        plan.state_bytes,
        plan.scratch_bytes
    );
    let mut ram = [0u8; TINY_RAM];
    let mut arena = Arena::new_unaligned(&mut ram);
    let mut state = State::carve(&config, &mut arena)?;
    let mut scratch = Scratch::carve(&config, 1, &mut arena)?;
    hprintln!(
        "rwkv6-tiny: RAM arena {} of {} bytes used",
        arena.used(),
        TINY_RAM
    );

    const V: usize = 1024;
    if config.vocab_size != V {
        hprintln!("rwkv6-tiny: vocabulary {} is not {}", config.vocab_size, V);
        return Ok(false);
    }
    let (mut logits, mut order) = ([0.0f32; V], [0u32; V]);

    // Plain greedy: argmax after each step, timed per step.
    run_prompt(&model, &mut state, &mut scratch, &mut logits)?;
    let mut plain = [0u32; tiny::GREEDY.len()];
    let mut ticks = 0u64;
    for slot in plain.iter_mut() {
        let next = greedy(&logits)?;
        *slot = next;
        let start = SYST::get_current();
        model.step(&mut state, &mut scratch, next, &mut logits)?;
        ticks += ticks_between(start, SYST::get_current());
    }
    let plain_ok = plain == tiny::GREEDY;
    hprintln!("rwkv6-tiny greedy: {:?}", plain);
    hprintln!(
        "rwkv6-tiny: {} greedy tokens {}; {} instructions per token (SysTick under -icount shift=0)",
        plain.len(),
        if plain_ok {
            "equal the host's"
        } else {
            "DIFFER from the host's"
        },
        ticks * INSTRUCTIONS_PER_TICK / plain.len() as u64
    );

    // Extra check: greedy with the host's repetition penalty over the last REPEAT_WINDOW tokens
    // (the sampler path, with its history window).
    run_prompt(&model, &mut state, &mut scratch, &mut logits)?;
    let sampler = SamplerConfig {
        repetition_penalty: tiny::REPEAT_PENALTY,
        ..SamplerConfig::GREEDY
    };
    let mut rng = Rng::new(0);
    let mut history = [0u32; tiny::PROMPT.len() + tiny::PENALIZED.len()];
    history[..tiny::PROMPT.len()].copy_from_slice(&tiny::PROMPT);
    for n in tiny::PROMPT.len()..history.len() {
        let recent = &history[n.saturating_sub(tiny::REPEAT_WINDOW)..n];
        let next = sample(&mut logits, &sampler, recent, &mut rng, &mut order)?;
        history[n] = next;
        model.step(&mut state, &mut scratch, next, &mut logits)?;
    }
    let penalized = &history[tiny::PROMPT.len()..];
    let penalized_ok = penalized == tiny::PENALIZED;
    hprintln!(
        "rwkv6-tiny: {} tokens with repetition penalty {} {}",
        penalized.len(),
        tiny::REPEAT_PENALTY,
        if penalized_ok {
            "equal the host's"
        } else {
            "DIFFER from the host's"
        }
    );
    Ok(plain_ok && penalized_ok)
}

/// Resets the state and runs the prompt, leaving the logits after its last token.
fn run_prompt(
    model: &Rwkv6,
    state: &mut State,
    scratch: &mut Scratch,
    logits: &mut [f32],
) -> Result<(), goldcrest_core::Error> {
    state.reset();
    for &id in &tiny::PROMPT {
        model.step(state, scratch, id, logits)?;
    }
    Ok(())
}

#[entry]
fn main() -> ! {
    let mut peripherals = cortex_m::Peripherals::take().unwrap();
    // A free-running SysTick, read around each token for the instruction count.
    let syst = &mut peripherals.SYST;
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(0x00FF_FFFF);
    syst.clear_current();
    syst.enable_counter();
    let kernels_ok = match run() {
        Ok(ok) => ok,
        Err(e) => {
            hprintln!("error: {}", e);
            false
        }
    };
    let tiny_ok = match run_tiny_rwkv6() {
        Ok(ok) => ok,
        Err(e) => {
            hprintln!("rwkv6-tiny error: {}", e);
            false
        }
    };
    let toto_ok = match toto::run(syst) {
        Ok(ok) => ok,
        Err(e) => {
            hprintln!("toto error: {}", e);
            false
        }
    };
    let goldfinch_ok = match goldfinch::run() {
        Ok(ok) => ok,
        Err(e) => {
            hprintln!("goldfinch error: {}", e);
            false
        }
    };
    let results = [kernels_ok, tiny_ok, toto_ok, goldfinch_ok];
    let passed = results.iter().filter(|&&ok| ok).count();
    hprintln!("{} passed, {} failed", passed, results.len() - passed);
    let ok = passed == results.len();
    debug::exit(if ok {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    loop {}
}

#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    // Never hang CI: report the fault and exit non-zero.
    hprintln!("HardFault: {:?}", frame);
    debug::exit(debug::EXIT_FAILURE);
    loop {}
}
