//! goldcrest-core on a Cortex-M4F: loads a packed-ternary model from flash, runs the kernels
//! through the public API and checks every output bit against the host's scalar reference.
//! Prints over semihosting and exits with QEMU status 0 (pass) or 1 (fail, panic, HardFault).
#![no_std]
#![no_main]

use cortex_m_rt::{ExceptionFrame, entry, exception};
use cortex_m_semihosting::{debug, hprintln};
use goldcrest_core::arena::Aligned;
use goldcrest_core::format::SafeTensors;
use goldcrest_core::kernels::{ActScale, Int8Acts, Kernels};
use panic_semihosting as _;

mod toto;
mod goldfinch;

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
        ("w.tq2", &expected::GEMV_F32_W_TQ2, Some(&expected::GEMV_I8_W_TQ2)),
        ("w.tq1", &expected::GEMV_F32_W_TQ1, Some(&expected::GEMV_I8_W_TQ1)),
        ("w.q8", &expected::GEMV_F32_W_Q8, None),
    ];
    for (name, want_f32, want_i8) in cases {
        let w = file.tensor(name)?.matrix()?;
        kernels.gemv(&w, x, &mut y)?;
        ok &= check(name, &y, want_f32);
        if let Some(want) = want_i8 {
            let need = Int8Acts::scratch_bytes(1, COLS, ActScale::PerToken).unwrap_or(usize::MAX);
            let acts =
                kernels.quantize_acts(x, 1, COLS, ActScale::PerToken, &mut scratch[..need.min(1024)])?;
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

#[entry]
fn main() -> ! {
    let ok = match run() {
        Ok(ok) => ok,
        Err(e) => {
            hprintln!("error: {}", e);
            false
        }
    };
    let Some(mut core) = cortex_m::Peripherals::take() else {
        hprintln!("core peripherals already taken");
        debug::exit(debug::EXIT_FAILURE);
        loop {}
    };
    let toto_ok = match toto::run(&mut core.SYST) {
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
    let passed = usize::from(ok) + usize::from(toto_ok) + usize::from(goldfinch_ok);
    hprintln!("{} passed, {} failed", passed, 3 - passed);
    let ok = ok && toto_ok && goldfinch_ok;
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
