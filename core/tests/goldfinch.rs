//! GoldFinch against golden outputs of goldcrest's own float64 numpy reference
//! (`tools/goldfinch/reference.py`, fixtures in `tests/fixtures/goldfinch/`).
//!
//! Tolerance: 1e-4 absolute on logits (|logits| up to ~3.5) for every mode: whole prompt with
//! all logits, one token at a time, prefill then decode, save/restore then decode.
#![allow(clippy::result_large_err)] // goldcrest's `Error` is large by design (inline names).

use goldcrest_core::Error;
use goldcrest_core::arena::Arena;
use goldcrest_core::format::SafeTensors;
use goldcrest_core::kernels::Kernels;
use goldcrest_core::models::goldfinch::{Context, GoldFinch, Layer, Scratch};

const TOLERANCE: f32 = 1e-4;

/// File bytes in u64 words, so the safetensors data is aligned.
fn read_aligned(file: &str) -> (Vec<u64>, usize) {
    let path = format!(
        "{}/../tests/fixtures/goldfinch/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(path).unwrap();
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(&bytes);
    (words, bytes.len())
}

struct Golden {
    tokens: Vec<u32>,
    split: usize,
    full: Vec<f32>,
    step: Vec<f32>,
    prefill: Vec<f32>,
    restore: Vec<f32>,
}

fn golden(name: &str) -> Golden {
    let (words, len) = read_aligned(&format!("{name}.golden.safetensors"));
    let bytes = &bytemuck::cast_slice::<u64, u8>(&words)[..len];
    let file = SafeTensors::parse(bytes).unwrap();
    let f = |k: &str| file.tensor(k).unwrap().f32s().unwrap().to_vec();
    let tokens = bytemuck::cast_slice::<u8, i32>(file.tensor("tokens").unwrap().bytes())
        .iter()
        .map(|&t| t as u32)
        .collect();
    Golden {
        tokens,
        split: file
            .metadata()
            .get("split")
            .unwrap()
            .as_str()
            .unwrap()
            .parse()
            .unwrap(),
        full: f("full_logits"),
        step: f("step_logits"),
        prefill: f("prefill_logits"),
        restore: f("restore_logits"),
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Every mode of one fixture; returns the worst difference.
fn check(name: &str) -> f32 {
    let g = golden(name);
    let (words, len) = read_aligned(&format!("{name}.safetensors"));
    let bytes = &bytemuck::cast_slice::<u64, u8>(&words)[..len];
    let file = SafeTensors::parse(bytes).unwrap();
    let mut layers: Vec<Option<Layer>> = vec![None; 8];
    let model = GoldFinch::load(&file, &mut layers, Kernels::scalar()).unwrap();
    let cfg = *model.config();
    let (v, t_n, cap) = (cfg.vocab_size, g.tokens.len(), g.tokens.len());
    let plan = model.memory_plan(cap).unwrap();
    let mut ctx_ram = vec![0u8; plan.state_bytes + 64];
    let mut scratch_ram = vec![0u8; plan.scratch_bytes + 64];
    let mut scratch =
        Scratch::carve(&cfg, cap, &mut Arena::new_unaligned(&mut scratch_ram)).unwrap();
    let mut worst = 0.0f32;
    let mut compare = |what: &str, got: &[f32], want: &[f32]| {
        let d = max_abs_diff(got, want);
        assert!(d <= TOLERANCE, "{name} {what}: max |diff| {d}");
        worst = worst.max(d);
    };

    // Whole prompt, logits after every token.
    let mut ctx = Context::carve(&cfg, cap, &mut Arena::new_unaligned(&mut ctx_ram)).unwrap();
    let mut logits = vec![0.0; t_n * v];
    model
        .prefill(&mut ctx, &mut scratch, &g.tokens, &mut logits)
        .unwrap();
    compare("full", &logits, &g.full);

    // One token at a time.
    ctx.reset();
    for (t, &tok) in g.tokens.iter().enumerate() {
        model
            .step(&mut ctx, &mut scratch, tok, &mut logits[t * v..(t + 1) * v])
            .unwrap();
    }
    compare("step", &logits, &g.step);

    // Prefill (last logits only: GOLD layers over the tail), save, then decode.
    ctx.reset();
    let s = g.split;
    let mut out = vec![0.0; (t_n - s + 1) * v];
    model
        .prefill(&mut ctx, &mut scratch, &g.tokens[..s], &mut out[..v])
        .unwrap();
    let mut saved = vec![0u8; model.saved_len(ctx.len()).unwrap()];
    assert_eq!(model.save(&ctx, &mut saved).unwrap(), saved.len());
    for (i, &tok) in g.tokens[s..].iter().enumerate() {
        model
            .step(
                &mut ctx,
                &mut scratch,
                tok,
                &mut out[(i + 1) * v..(i + 2) * v],
            )
            .unwrap();
    }
    compare("prefill-decode", &out, &g.prefill);

    // Restore into a fresh context, then decode (the golden's row 0 is the prefill's own row).
    let mut ram2 = vec![0u8; plan.state_bytes + 64];
    let mut ctx2 = Context::carve(&cfg, cap, &mut Arena::new_unaligned(&mut ram2)).unwrap();
    model.restore(&mut ctx2, &mut scratch, &saved).unwrap();
    assert_eq!(ctx2.tokens(), &g.tokens[..s]);
    for (i, &tok) in g.tokens[s..].iter().enumerate() {
        model
            .step(
                &mut ctx2,
                &mut scratch,
                tok,
                &mut out[(i + 1) * v..(i + 2) * v],
            )
            .unwrap();
    }
    compare("restore-decode", &out[v..], &g.restore[v..]);

    // The context is full now; one more token is refused, not written out of bounds.
    assert!(matches!(
        model.step(&mut ctx2, &mut scratch, 0, &mut out[..v]),
        Err(Error::ContextFull { .. })
    ));
    worst
}

#[test]
fn tiny_a_matches_reference_in_every_mode() {
    let d = check("tiny_a");
    eprintln!("tiny_a worst |diff| {d:e}");
}

#[test]
fn tiny_b_matches_reference_in_every_mode() {
    let d = check("tiny_b");
    eprintln!("tiny_b worst |diff| {d:e}");
}
