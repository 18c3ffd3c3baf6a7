//! The bundled tiny ternary Toto on the device: forecasts a series stored in flash from the
//! model in flash, in a static arena of the exact planned size, and checks every output bit
//! against the host's forecast (`toto_expected.rs`, checked on the host by
//! std-ext/tests/toto_firmware.rs). Also reports RAM and instruction counts.

use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::SYST;
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::exception;
use cortex_m_semihosting::hprintln;
use goldcrest_core::arena::Aligned;
use goldcrest_core::format::SafeTensors;
use goldcrest_core::kernels::Kernels;
use goldcrest_core::models::toto::{ForecastSpec, Series, Toto};

mod expected {
    include!("toto_expected.rs");
}

const MODEL_BYTES: &[u8] = include_bytes!("../../../models/toto-tiny.safetensors");
/// The bundled model (the default of `goldcrest forecast`) in flash, 64-byte aligned.
static MODEL: Aligned<{ MODEL_BYTES.len() }> =
    Aligned(*include_bytes!("../../../models/toto-tiny.safetensors"));

/// Stack the check below allows itself (with the arena, the whole forecast's RAM).
const STACK_BUDGET: usize = 16 * 1024;
/// The bound on the forecaster's RAM.
const RAM_BUDGET: usize = 64 * 1024;
const PAINT: u32 = 0x5AA5_C33C;

/// SysTick wraps (its counter is 24 bits): the exception counts them.
static WRAPS: AtomicU32 = AtomicU32::new(0);
const RELOAD: u32 = 0x00FF_FFFF;

#[exception]
fn SysTick() {
    WRAPS.fetch_add(1, Ordering::Relaxed);
}

struct Ticks<'a>(&'a mut SYST);

impl Ticks<'_> {
    fn start(syst: &mut SYST) -> Ticks<'_> {
        syst.disable_counter();
        syst.set_clock_source(SystClkSource::Core);
        syst.set_reload(RELOAD);
        syst.clear_current();
        WRAPS.store(0, Ordering::Relaxed);
        syst.enable_interrupt();
        syst.enable_counter();
        Ticks(syst)
    }

    /// Core clock ticks since `start`.
    fn elapsed(&self) -> u64 {
        let current = SYST::get_current();
        let wraps = u64::from(WRAPS.load(Ordering::Relaxed));
        wraps * (u64::from(RELOAD) + 1) + u64::from(RELOAD - current)
    }
}

impl Drop for Ticks<'_> {
    fn drop(&mut self) {
        self.0.disable_interrupt();
        self.0.disable_counter();
    }
}

/// Fills `bytes` of stack below the current stack pointer with a pattern.
fn paint_stack(bytes: usize) -> usize {
    let sp = cortex_m::register::msp::read() as usize;
    let bottom = sp - bytes;
    let mut p = bottom;
    while p < sp - 64 {
        // SAFETY: [sp - bytes, sp - 64) is unused stack: below the live frames, above the
        // statics (RAM is 4 MiB, the statics a few KiB at its start), 4-byte aligned because
        // the stack pointer is 8-byte aligned and `bytes` is a multiple of 4.
        unsafe { core::ptr::write_volatile(p as *mut u32, PAINT) };
        p += 4;
    }
    bottom
}

/// Bytes of stack used below the painting point's stack pointer.
fn stack_used(bottom: usize, bytes: usize) -> usize {
    let mut p = bottom;
    // SAFETY: the same painted region as above, read back word by word.
    while p < bottom + bytes && unsafe { core::ptr::read_volatile(p as *const u32) } == PAINT {
        p += 4;
    }
    bottom + bytes - p
}

/// Runs the check; `Ok(false)` is a mismatch.
pub fn run(syst: &mut SYST) -> Result<bool, goldcrest_core::Error> {
    let file = SafeTensors::parse(&MODEL.0)?;
    let model = Toto::new(file, Kernels::for_target())?.with_prefill_chunk(1);
    let series = Series {
        values: &expected::SERIES,
        variates: 1,
        groups: None,
    };
    let spec = ForecastSpec {
        variates: 1,
        context: expected::SERIES.len(),
        horizon: expected::HORIZON,
        batch: 1,
    };
    let plan = model.memory_plan(&spec)?;
    hprintln!(
        "toto: {} B model in flash, context {} steps, horizon {}, arena {} B (state {} + scratch {})",
        MODEL.0.len(),
        expected::SERIES.len(),
        expected::HORIZON,
        plan.state_bytes + plan.scratch_bytes,
        plan.state_bytes,
        plan.scratch_bytes
    );
    let arena = cortex_m::singleton!(: Aligned<{ expected::ARENA_BYTES }> =
        Aligned([0; expected::ARENA_BYTES]))
    .ok_or(goldcrest_core::Error::OutOfRange)?;

    // One generated patch costs the difference between a 3-patch and a 1-patch forecast.
    let patch = model.config().patch_size;
    let mut one = [0f64; 64];
    let one = &mut one[..patch.min(64)];
    let ticks = Ticks::start(syst);
    model.forecast_mean(&series, one.len(), &mut arena.0, one)?;
    let first = ticks.elapsed();
    drop(ticks);

    let painted = paint_stack(STACK_BUDGET);
    let mut mean = [0f64; expected::HORIZON];
    let ticks = Ticks::start(syst);
    model.forecast_mean(&series, expected::HORIZON, &mut arena.0, &mut mean)?;
    let all = ticks.elapsed();
    drop(ticks);
    let stack = stack_used(painted, STACK_BUDGET);

    // Calibration: `delay(n)` runs n/2 iterations of a two-instruction loop (n instructions).
    const CALIBRATION: u64 = 2_000_000;
    let ticks = Ticks::start(syst);
    cortex_m::asm::delay(CALIBRATION as u32);
    let calib = ticks.elapsed().max(1);
    drop(ticks);
    let instructions = |t: u64| t * CALIBRATION / calib;
    let extra = (expected::HORIZON / patch).saturating_sub(1).max(1) as u64;
    hprintln!(
        "toto: instructions (qemu -icount shift=0): {}-step forecast {}, first patch (context \
         of {} patches + head) {}, each further patch {}",
        expected::HORIZON,
        instructions(all),
        expected::SERIES.len() / patch,
        instructions(first),
        instructions(all.saturating_sub(first)) / extra
    );
    let ram = expected::ARENA_BYTES + stack;
    hprintln!(
        "toto: RAM: arena {} B + stack {} B = {} B (budget {} B)",
        expected::ARENA_BYTES,
        stack,
        ram,
        RAM_BUDGET
    );

    let mismatches = mean
        .iter()
        .zip(expected::MEAN_BITS)
        .filter(|(got, want)| got.to_bits() != *want)
        .count();
    hprintln!(
        "toto: mean forecast {:.4} {:.4} {:.4} ... {:.4}: {}",
        mean[0],
        mean[1],
        mean[2],
        mean[expected::HORIZON - 1],
        if mismatches == 0 {
            "ok (bit-exact with the host)"
        } else {
            "MISMATCH"
        }
    );
    Ok(
        mismatches == 0
            && one[..] == mean[..one.len()]
            && stack < STACK_BUDGET
            && ram <= RAM_BUDGET,
    )
}
