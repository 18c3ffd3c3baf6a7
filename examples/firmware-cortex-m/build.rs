//! Writes the firmware's flash image inputs into OUT_DIR:
//! - `model.safetensors`: packed-ternary matrices (tq2_0, tq1_0) with a tail block, a q8_0
//!   matrix and an f32 activation vector, laid out as goldcrest's writer lays files out;
//! - `expected.rs`: the products computed on the host with goldcrest's scalar reference kernels,
//!   as exact f32 bit patterns.
//! - `memory.x`: the board's memory map for cortex-m-rt.
//! - `tiny_greedy.rs`: the prompt, the 32 plain greedy (argmax) token ids of the bundled tiny
//!   RWKV-6 and the 32 ids of greedy with a repetition penalty, from the committed
//!   `tests/fixtures/rwkv6-tiny/greedy.json` that the host test `tests/rwkv6_tiny.rs` checks too
//!   (so host and firmware must agree with the same lists).

use goldcrest_core::kernels::{ActScale, Int8Acts, Kernels};
use goldcrest_core::quant::{Format, Matrix, q8_0, tq1_0, tq2_0};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;

const ROWS: usize = 48;
const COLS: usize = 300; // not a multiple of 256 or 32: exercises the tail path

struct Rng(u32);
impl Rng {
    fn next(&mut self) -> u32 {
        // xorshift32: deterministic across hosts, so the flash image is reproducible.
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
    }
}

/// Packs `rows × cols` weights, block by block, with `quantize` (tail zero-padded).
fn pack<const E: usize, const B: usize>(
    w: &[f32],
    cols: usize,
    quantize: fn(&[f32; E]) -> [u8; B],
) -> Vec<u8> {
    let mut out = Vec::new();
    for row in w.chunks(cols) {
        for chunk in row.chunks(E) {
            let mut block = [0.0f32; E];
            block[..chunk.len()].copy_from_slice(chunk);
            out.extend_from_slice(&quantize(&block));
        }
    }
    out
}

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=memory.x");
    std::fs::copy("memory.x", out.join("memory.x")).unwrap();
    println!("cargo:rustc-link-search={}", out.display());

    let mut rng = Rng(0x2545_F491);
    // Ternary weights with one scale per row, as TriLM/BitNet checkpoints have them.
    let mut ternary = vec![0.0f32; ROWS * COLS];
    for (r, row) in ternary.chunks_mut(COLS).enumerate() {
        let scale = 0.01 + 0.001 * r as f32;
        for v in row {
            *v = scale * ((rng.next() % 3) as f32 - 1.0);
        }
    }
    let dense: Vec<f32> = (0..ROWS * COLS).map(|_| rng.unit() * 0.5).collect();
    let x: Vec<f32> = (0..COLS).map(|_| rng.unit() * 2.0).collect();

    let tq2 = pack(&ternary, COLS, tq2_0::quantize_block);
    let tq1 = pack(&ternary, COLS, tq1_0::quantize_block);
    let q8 = pack(&dense, COLS, q8_0::quantize_block);
    let x_bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();

    let tensors = [
        ("w.tq2", Format::Tq2_0, &tq2),
        ("w.tq1", Format::Tq1_0, &tq1),
        ("w.q8", Format::Q8_0, &q8),
    ];
    let mut meta = HashMap::new();
    meta.insert("goldcrest.format_version".to_string(), "1.0".to_string());
    meta.insert("goldcrest.arch".to_string(), "kernel-test".to_string());
    let mut views = vec![(
        "x".to_string(),
        TensorView::new(Dtype::F32, vec![COLS], &x_bytes).unwrap(),
    )];
    for (name, format, bytes) in &tensors {
        meta.insert(
            format!("goldcrest.tensor.{name}"),
            format!("{} {ROWS} {COLS}", format.name()),
        );
        let row_bytes = bytes.len() / ROWS;
        views.push((
            name.to_string(),
            TensorView::new(Dtype::U8, vec![ROWS, row_bytes], bytes).unwrap(),
        ));
    }
    let file = safetensors::serialize(views, Some(meta)).unwrap();
    std::fs::write(out.join("model.safetensors"), &file).unwrap();

    // Expected results from the host's scalar reference.
    let k = Kernels::scalar();
    let mut expected = String::new();
    for (name, format, bytes) in &tensors {
        let m = Matrix::new(name, *format, ROWS, COLS, bytes).unwrap();
        let mut y = vec![0.0f32; ROWS];
        k.gemv(&m, &x, &mut y).unwrap();
        let ident = name.replace('.', "_").to_uppercase();
        emit(&mut expected, &format!("GEMV_F32_{ident}"), &y);
        if *format != Format::Q8_0 {
            let mut scratch =
                vec![0u8; Int8Acts::scratch_bytes(1, COLS, ActScale::PerToken).unwrap()];
            let acts = k
                .quantize_acts(&x, 1, COLS, ActScale::PerToken, &mut scratch)
                .unwrap();
            k.gemv_i8(&m, &acts, &mut y).unwrap();
            emit(&mut expected, &format!("GEMV_I8_{ident}"), &y);
        }
    }
    std::fs::write(out.join("expected.rs"), expected).unwrap();

    let greedy_path = "../../tests/fixtures/rwkv6-tiny/greedy.json";
    println!("cargo:rerun-if-changed={greedy_path}");
    println!("cargo:rerun-if-changed=../../models/rwkv6-tiny.safetensors");
    let greedy = std::fs::read_to_string(greedy_path).unwrap();
    let mut tiny = String::new();
    for (key, ident) in [
        ("prompt_ids", "PROMPT"),
        ("greedy_ids", "GREEDY"),
        ("penalty_ids", "PENALIZED"),
    ] {
        let ids = json_ids(&greedy, key);
        writeln!(tiny, "pub const {ident}: [u32; {}] = {ids:?};", ids.len()).unwrap();
    }
    let number = |key: &str| {
        let at = greedy.find(&format!("\"{key}\":")).unwrap() + key.len() + 3;
        let rest = greedy[at..].trim_start();
        let end = rest.find([',', '\n', '}']).unwrap();
        rest[..end].trim().to_string()
    };
    let penalty: f32 = number("repetition_penalty").parse().unwrap();
    let window: usize = number("repeat_window").parse().unwrap();
    writeln!(tiny, "pub const REPEAT_PENALTY: f32 = {penalty:?};").unwrap();
    writeln!(tiny, "pub const REPEAT_WINDOW: usize = {window};").unwrap();
    std::fs::write(out.join("tiny_greedy.rs"), tiny).unwrap();
}

/// The integer array under `"key":` in a small JSON object (the fixture's fixed layout; no
/// JSON crate in this build script).
fn json_ids(json: &str, key: &str) -> Vec<u32> {
    let at = json
        .find(&format!("\"{key}\""))
        .unwrap_or_else(|| panic!("no {key} in greedy.json"));
    let rest = &json[at..];
    let open = rest.find('[').unwrap();
    let close = rest.find(']').unwrap();
    rest[open + 1..close]
        .split(',')
        .map(|t| t.trim().parse().unwrap())
        .collect()
}

fn emit(out: &mut String, name: &str, y: &[f32]) {
    write!(out, "pub const {name}: [u32; {}] = [", y.len()).unwrap();
    for v in y {
        write!(out, "{:#010x}, ", v.to_bits()).unwrap();
    }
    out.push_str("];\n");
}
