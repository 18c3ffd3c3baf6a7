//! A tiny ternary GoldFinch (3 layers × 128, tq2_0 projections) from flash: prefill of five
//! tokens in chunks of two, then three one-token steps; the logits must equal the host's
//! (`goldfinch_expected.rs`, checked on the host by core/tests/goldfinch.rs) within 1e-4.
//! Prints the memory plan and the cache bytes per token on the device.

use cortex_m_semihosting::hprintln;
use goldcrest_core::Error;
use goldcrest_core::arena::{Aligned, Arena};
use goldcrest_core::format::SafeTensors;
use goldcrest_core::kernels::Kernels;
use goldcrest_core::models::goldfinch::{Context, GoldFinch, KvFormat, Scratch};

mod expected {
    include!("goldfinch_expected.rs");
}

const MODEL_BYTES: &[u8] =
    include_bytes!("../../../tests/fixtures/goldfinch/tiny_a_tq2.safetensors");
static MODEL: Aligned<{ MODEL_BYTES.len() }> = Aligned(*include_bytes!(
    "../../../tests/fixtures/goldfinch/tiny_a_tq2.safetensors"
));

const CAPACITY: usize = expected::TOKENS.len();
const CHUNK: usize = 2;
const N_LAYER: usize = 3;
/// Room for the context and the scratch (the plan is printed and checked against these).
const CONTEXT_RAM: usize = 96 * 1024;
const SCRATCH_RAM: usize = 32 * 1024;

/// Runs the check; `Ok(false)` on a mismatch.
pub fn run() -> Result<bool, Error> {
    let file = SafeTensors::parse(&MODEL.0)?;
    let mut layers = [None; N_LAYER];
    let model = GoldFinch::load(&file, &mut layers, Kernels::for_target())?;
    let cfg = *model.config();
    let plan = model.memory_plan_for(CAPACITY, CHUNK, KvFormat::F32)?;
    hprintln!(
        "goldfinch: {} layers ({} Finch-C2, {} GOLD) x {}, {} bytes in flash; context {} B, scratch {} B for {} tokens",
        cfg.n_layer,
        cfg.first_gold,
        cfg.n_gold(),
        cfg.n_embd,
        MODEL.0.len(),
        plan.state_bytes,
        plan.scratch_bytes,
        CAPACITY
    );
    let mut context_ram = [0u8; CONTEXT_RAM];
    let mut scratch_ram = [0u8; SCRATCH_RAM];
    let mut ctx = Context::carve(&cfg, CAPACITY, &mut Arena::new_unaligned(&mut context_ram))?;
    let mut scratch = Scratch::carve_chunked(
        &cfg,
        CAPACITY,
        CHUNK,
        &mut Arena::new_unaligned(&mut scratch_ram),
    )?;
    let v = expected::VOCAB;
    let mut logits = [0.0f32; expected::LOGITS.len()];
    let (prompt, rest) = expected::TOKENS.split_at(expected::PREFILL);
    model.prefill(&mut ctx, &mut scratch, prompt, &mut logits[..v])?;
    for (i, &token) in rest.iter().enumerate() {
        model.step(
            &mut ctx,
            &mut scratch,
            token,
            &mut logits[(i + 1) * v..(i + 2) * v],
        )?;
    }
    let worst = logits
        .iter()
        .zip(expected::LOGITS)
        .map(|(got, want)| libm_abs(got - f32::from_bits(want)))
        .fold(0.0f32, f32::max);
    let ok = worst <= 1e-4;
    hprintln!(
        "goldfinch logits after {} tokens: max |diff| vs host {:e}  {}",
        expected::TOKENS.len(),
        worst,
        if ok { "ok" } else { "MISMATCH" }
    );
    hprintln!(
        "goldfinch cache per token: {} B working (f32 K/V), {} B at rest (f32 keys), {} B at rest (f16 keys); {} B in use for {} tokens",
        cfg.working_bytes_per_token(KvFormat::F32).unwrap_or(0),
        cfg.at_rest_bytes_per_token(),
        4 + 2 * cfg.c_dim,
        ctx.working_cache_bytes(),
        ctx.len()
    );
    Ok(ok)
}

fn libm_abs(x: f32) -> f32 {
    if x < 0.0 { -x } else { x }
}
