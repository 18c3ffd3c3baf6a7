//! The kernel demo: pack a random weight matrix into both ternary formats, run the best
//! matrix-vector kernel for this CPU beside the portable scalar reference, and report
//! agreement and speed.
//!
//! `cargo run --release --example ternary_demo [ROWS COLS]` (default 2048 × 5632, a TriLM
//! 1.5B-sized MLP projection).

use goldcrest::alloc::quantize::quantize;
use goldcrest::core::kernels::{ActScale, Int8Acts, Kernels};
use goldcrest::core::quant::{Format, Matrix};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (rows, cols) = match args[..] {
        [r, c] => (r, c),
        _ => (2048, 5632),
    };
    // A deterministic xorshift stream: the demo prints the same numbers on every machine.
    let mut state = 0x9E37_79B9u32;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        (state >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
    };
    let weights: Vec<f32> = (0..rows * cols).map(|_| uniform() * 0.02).collect();
    let x: Vec<f32> = (0..cols).map(|_| uniform()).collect();

    let best = goldcrest::std::kernels::detect();
    let scalar = Kernels::scalar();
    println!(
        "matrix {rows} x {cols}, kernels: {} (reference: scalar)",
        best.isa().name()
    );
    println!(
        "{:<7} {:>10} {:>14} {:>12} {:>12} {:>10}",
        "format", "MiB", "max |best-ref|", "best ms", "scalar ms", "best GB/s"
    );
    for format in [Format::Tq2_0, Format::Tq1_0] {
        let packed = quantize("demo", &weights, rows, cols, format)?;
        let w = Matrix::new("demo", format, rows, cols, &packed)?;
        let (mut y_best, mut y_ref) = (vec![0.0f32; rows], vec![0.0f32; rows]);
        let t_best = time(|| best.gemv(&w, &x, &mut y_best))?;
        let t_ref = time(|| scalar.gemv(&w, &x, &mut y_ref))?;
        let err = y_best
            .iter()
            .zip(&y_ref)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        println!(
            "{:<7} {:>10.2} {:>14.3e} {:>12.3} {:>12.3} {:>10.1}",
            format.name(),
            packed.len() as f64 / (1 << 20) as f64,
            err,
            t_best * 1e3,
            t_ref * 1e3,
            packed.len() as f64 / t_best / 1e9
        );

        // BitNet-style int8 activations: integer paths must agree bit for bit.
        let mut scratch =
            vec![0u8; Int8Acts::scratch_bytes(1, cols, ActScale::PerToken).unwrap_or(0)];
        let acts = best.quantize_acts(&x, 1, cols, ActScale::PerToken, &mut scratch)?;
        best.gemv_i8(&w, &acts, &mut y_best)?;
        scalar.gemv_i8(&w, &acts, &mut y_ref)?;
        let same = y_best
            .iter()
            .zip(&y_ref)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        println!(
            "{:<7} int8 activations: {}",
            "",
            if same {
                "bit-exact with scalar"
            } else {
                "DIFFERENT from scalar"
            }
        );
        if !same {
            return Err("SIMD int8 path disagrees with the scalar reference".into());
        }
    }
    Ok(())
}

/// Median seconds of a few runs after one warm-up.
fn time(mut f: impl FnMut() -> goldcrest::core::Result<()>) -> goldcrest::core::Result<f64> {
    f()?;
    let mut runs = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        f()?;
        runs.push(t.elapsed().as_secs_f64());
    }
    runs.sort_by(f64::total_cmp);
    Ok(runs[runs.len() / 2])
}
