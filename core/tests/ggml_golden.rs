//! Byte compatibility with ggml: our block quantizers must produce exactly the bytes gguf-py's
//! reference implementation writes (fixtures from `tools/fixtures/quant_golden.py`), and our
//! dequantizers must read them back to the inputs (exactly for ternary, within half a step for
//! q8_0/q4_0).

use goldcrest_core::quant::{self, Format, q4_0, q8_0, tq1_0, tq2_0};

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn pack<const E: usize, const B: usize>(x: &[f32], q: fn(&[f32; E]) -> [u8; B]) -> Vec<u8> {
    x.chunks_exact(E)
        .flat_map(|c| q(c.try_into().unwrap()))
        .collect()
}

fn check(name: &str, rows: usize, cols: usize, format: Format, ours: Vec<u8>, exact: bool) {
    let input = f32s(&std::fs::read(format!("tests/fixtures/quant/{name}.input.f32")).unwrap());
    let golden =
        std::fs::read(format!("tests/fixtures/quant/{name}.{}.bin", format.name())).unwrap();
    assert_eq!(ours, golden, "{name} {format:?} bytes differ from ggml");
    let rb = format.row_bytes(cols).unwrap();
    let mut out = vec![0.0f32; cols];
    for r in 0..rows {
        quant::dequantize_row(format, &golden[r * rb..(r + 1) * rb], cols, &mut out).unwrap();
        for (c, (&a, &b)) in input[r * cols..(r + 1) * cols].iter().zip(&out).enumerate() {
            if exact {
                assert_eq!(a, b, "{name} {format:?} r{r} c{c}");
            } else {
                let block = &golden[r * rb + (c / 32) * format.block_bytes()..];
                let d = half::f16::from_le_bytes([block[0], block[1]])
                    .to_f32()
                    .abs();
                // q8_0: half a step plus the f16 rounding of the scale (relative 2^-11) times
                // the largest code (127). q4_0: codes run -8..=7 with -8 at the extreme, so
                // values on the other side clip at 7 steps: up to one step.
                let bound = match format {
                    Format::Q8_0 => d * 0.5 + 128.0 * d / 2048.0,
                    _ => d + 8.0 * d / 2048.0,
                };
                assert!((a - b).abs() <= bound, "{name} r{r} c{c}: {a} vs {b}");
            }
        }
    }
}

#[test]
fn ternary_blocks_match_llama_cpp() {
    let input = f32s(&std::fs::read("tests/fixtures/quant/ternary_4x512.input.f32").unwrap());
    check(
        "ternary_4x512",
        4,
        512,
        Format::Tq2_0,
        pack(&input, tq2_0::quantize_block),
        true,
    );
    check(
        "ternary_4x512",
        4,
        512,
        Format::Tq1_0,
        pack(&input, tq1_0::quantize_block),
        true,
    );
}

#[test]
fn q8_0_and_q4_0_blocks_match_ggml() {
    let input = f32s(&std::fs::read("tests/fixtures/quant/gauss_3x96.input.f32").unwrap());
    check(
        "gauss_3x96",
        3,
        96,
        Format::Q8_0,
        pack(&input, q8_0::quantize_block),
        false,
    );
    check(
        "gauss_3x96",
        3,
        96,
        Format::Q4_0,
        pack(&input, q4_0::quantize_block),
        false,
    );
}
