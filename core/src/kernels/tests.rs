//! Every SIMD path against the scalar reference: bit-identical for int8 activations, within the
//! documented bound for f32 activations.

extern crate std;

use super::*;
use crate::quant::{self, float, q4_0, q8_0, tq1_0, tq2_0};
use proptest::prelude::*;
use std::vec;
use std::vec::Vec;

/// Every implementation this machine can run (the scalar one included).
#[allow(unsafe_code)]
pub(crate) fn available() -> Vec<Kernels> {
    let mut v = vec![Kernels::scalar(), Kernels::for_target()];
    #[cfg(target_arch = "x86_64")]
    {
        use std::is_x86_feature_detected as has;
        let avx2 = CpuFeatures {
            avx2: has!("avx2"),
            fma: has!("fma"),
            f16c: has!("f16c"),
            ..CpuFeatures::default()
        };
        let avx512 = CpuFeatures {
            avx512f: has!("avx512f"),
            avx512bw: has!("avx512bw"),
            avx512vl: has!("avx512vl"),
            avx512vnni: has!("avx512vnni"),
            ..avx2
        };
        // SAFETY: features detected on this CPU.
        unsafe {
            v.push(Kernels::from_cpu_features(avx2));
            v.push(Kernels::from_cpu_features(avx512));
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        let neon = CpuFeatures {
            neon: std::arch::is_aarch64_feature_detected!("neon"),
            ..CpuFeatures::default()
        };
        let dot = CpuFeatures {
            dotprod: std::arch::is_aarch64_feature_detected!("dotprod"),
            ..neon
        };
        // SAFETY: features detected on this CPU.
        unsafe {
            v.push(Kernels::from_cpu_features(neon));
            v.push(Kernels::from_cpu_features(dot));
        }
    }
    v.dedup();
    v
}

/// A deterministic pseudo-random stream (xorshift), so matrices can be built from one seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn f(&mut self) -> f32 {
        (self.next() % 20001) as f32 / 10000.0 - 1.0
    }
    fn trit(&mut self) -> i8 {
        (self.next() % 3) as i8 - 1
    }
}

pub(crate) fn random_matrix(format: Format, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    let mut g = Rng(seed | 1);
    let mut out = Vec::new();
    for _ in 0..rows {
        match format {
            Format::Tq2_0 | Format::Tq1_0 => {
                for b in 0..cols.div_ceil(256) {
                    let mut t = [0i8; 256];
                    for (i, v) in t.iter_mut().enumerate() {
                        *v = if b * 256 + i < cols { g.trit() } else { 0 };
                    }
                    let d = float::f32_to_f16(0.01 + g.f().abs());
                    if format == Format::Tq2_0 {
                        out.extend_from_slice(&tq2_0::pack_block(&t, d));
                    } else {
                        out.extend_from_slice(&tq1_0::pack_block(&t, d));
                    }
                }
            }
            Format::Q8_0 | Format::Q4_0 => {
                for b in 0..cols.div_ceil(32) {
                    let mut x = [0.0f32; 32];
                    for (i, v) in x.iter_mut().enumerate() {
                        *v = if b * 32 + i < cols { g.f() } else { 0.0 };
                    }
                    if format == Format::Q8_0 {
                        out.extend_from_slice(&q8_0::quantize_block(&x));
                    } else {
                        out.extend_from_slice(&q4_0::quantize_block(&x));
                    }
                }
            }
            Format::F32 => (0..cols).for_each(|_| out.extend_from_slice(&g.f().to_le_bytes())),
            Format::F16 => (0..cols).for_each(|_| out.extend_from_slice(&float::f32_to_f16(g.f()))),
            Format::Bf16 => {
                (0..cols).for_each(|_| out.extend_from_slice(&float::f32_to_bf16(g.f())))
            }
            _ => (0..cols).for_each(|_| out.push(g.next() as u8)),
        }
    }
    out
}

/// Storage with the alignment f32 views need.
fn aligned(bytes: &[u8]) -> Vec<u32> {
    let mut v = vec![0u32; bytes.len().div_ceil(4)];
    bytemuck::cast_slice_mut::<u32, u8>(&mut v)[..bytes.len()].copy_from_slice(bytes);
    v
}

/// [`random_matrix`]'s bytes in storage with the alignment f32 views need.
struct RandomMatrix {
    store: Vec<u32>,
    len: usize,
    format: Format,
    rows: usize,
    cols: usize,
}

impl RandomMatrix {
    fn new(format: Format, rows: usize, cols: usize, seed: u64) -> Self {
        let bytes = random_matrix(format, rows, cols, seed);
        RandomMatrix {
            store: aligned(&bytes),
            len: bytes.len(),
            format,
            rows,
            cols,
        }
    }

    fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice::<u32, u8>(&self.store)[..self.len]
    }

    fn view(&self) -> Matrix<'_> {
        Matrix::new("w", self.format, self.rows, self.cols, self.bytes()).unwrap()
    }
}

/// `len` activations from seed `seed`, in `[-scale, scale]`.
fn random_acts(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut g = Rng(seed);
    (0..len).map(|_| g.f() * scale).collect()
}

/// `x` ([n, cols]) quantized by `k` into `scratch`, which grows to the size it needs.
fn quantized<'s>(
    k: Kernels,
    x: &[f32],
    n: usize,
    cols: usize,
    mode: ActScale,
    scratch: &'s mut Vec<u8>,
) -> Int8Acts<'s> {
    scratch.resize(Int8Acts::scratch_bytes(n, cols, mode).unwrap(), 0);
    k.quantize_acts(x, n, cols, mode, scratch).unwrap()
}

/// Runs `product` on a view of rows `part` of `n` runs `stride` apart in a NaN-filled output,
/// then checks that the view's outputs are `want`'s ([n, want.len() / n], by the same row
/// numbers) bit for bit and that nothing else was written.
fn check_strided_view(
    n: usize,
    stride: usize,
    part: core::ops::Range<usize>,
    want: &[f32],
    what: &dyn core::fmt::Debug,
    product: impl FnOnce(&mut StridedOut),
) {
    let want_rows = want.len() / n;
    let mut y = vec![f32::NAN; n * stride];
    let out = SharedOut {
        ptr: y.as_mut_ptr(),
        len: y.len(),
    };
    assert!(part.end <= stride);
    // SAFETY: the only view of `y` while it lives; rows `part` of `n` runs of `stride` lie
    // inside `y` (checked above).
    #[allow(unsafe_code)]
    let mut view = unsafe { StridedOut::rows_of(&out, part.start, part.len(), stride, n) };
    product(&mut view);
    for t in 0..n {
        for r in 0..stride {
            let got = y[t * stride + r];
            if part.contains(&r) {
                let want = want[t * want_rows + r];
                assert_eq!(got.to_bits(), want.to_bits(), "{what:?} t{t} r{r}");
            } else {
                assert!(got.is_nan(), "{what:?} wrote row {r} of token {t}");
            }
        }
    }
}

/// Whether `a` and `b` hold the same bits (over the shorter length).
fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits())
}

/// `k.gemm` of `w` and the tokens of `x` one call per `(first token, count)` of `split`, which
/// covers every token once; the outputs in token order.
fn gemm_in_parts(k: Kernels, w: &Matrix, x: &[f32], split: &[(usize, usize)]) -> Vec<f32> {
    let (rows, cols) = (w.rows(), w.cols());
    let mut out = vec![f32::NAN; x.len() / cols * rows];
    for &(first, count) in split {
        let x = &x[first * cols..(first + count) * cols];
        let y = &mut out[first * rows..(first + count) * rows];
        k.gemm(w, x, count, y).unwrap();
    }
    out
}

const FORMATS: [Format; 8] = [
    Format::F32,
    Format::F16,
    Format::Bf16,
    Format::I8,
    Format::Q8_0,
    Format::Q4_0,
    Format::Tq2_0,
    Format::Tq1_0,
];

fn check_float(format: Format, rows: usize, cols: usize, n: usize, seed: u64) {
    let stored = RandomMatrix::new(format, rows, cols, seed);
    let w = stored.view();
    let x = random_acts(n * cols, seed ^ 0x9e37_79b9_7f4a_7c15, 1.0);
    let mut want = vec![0.0f32; n * rows];
    Kernels::scalar().gemm(&w, &x, n, &mut want).unwrap();
    // Σ|w x| per output, from the dequantized weights.
    let mut wrow = vec![0.0f32; cols];
    for k in available() {
        let mut got = vec![f32::NAN; n * rows];
        k.gemm(&w, &x, n, &mut got).unwrap();
        for r in 0..rows {
            quant::dequantize_row(format, w.row(r).unwrap(), cols, &mut wrow).unwrap();
            for t in 0..n {
                let mag: f32 = wrow
                    .iter()
                    .zip(&x[t * cols..])
                    .map(|(a, b)| (a * b).abs())
                    .sum();
                let bound = 2.0 * (cols as f32 + 2.0) * f32::EPSILON / 2.0 * mag;
                let (a, b) = (got[t * rows + r], want[t * rows + r]);
                assert!(
                    (a - b).abs() <= bound,
                    "{:?} {format:?} {rows}x{cols} n={n} r{r} t{t}: {a} vs {b} (bound {bound})",
                    k.isa()
                );
            }
        }
        if n == 1 {
            let mut g1 = vec![0.0f32; rows];
            k.gemv(&w, &x, &mut g1).unwrap();
            assert_eq!(g1, got[..rows]);
        }
    }
}

fn check_int8(format: Format, rows: usize, cols: usize, n: usize, mode: ActScale, seed: u64) {
    let stored = RandomMatrix::new(format, rows, cols, seed);
    let w = stored.view();
    let x = random_acts(n * cols, seed ^ 0x5151, 3.0);
    let mut scratch = vec![0u8; Int8Acts::scratch_bytes(n, cols, mode).unwrap() + 3];
    // An odd offset checks that any scratch alignment works.
    let acts = Kernels::scalar()
        .quantize_acts(&x, n, cols, mode, &mut scratch[3..])
        .unwrap();
    let mut want = vec![0.0f32; n * rows];
    Kernels::scalar().gemm_i8(&w, &acts, &mut want).unwrap();
    for k in available() {
        let mut got = vec![f32::NAN; n * rows];
        k.gemm_i8(&w, &acts, &mut got).unwrap();
        let same = same_bits(&got, &want);
        assert!(
            same,
            "{:?} {format:?} {mode:?} {rows}x{cols} n={n}",
            k.isa()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The 32-block and dense int8 formats, with tails of any length and 1–9 tokens (every
    /// register-tile shape and its leftovers).
    #[test]
    fn block32_and_i8_float_paths_within_bound(fi in 0usize..3, rows in 1usize..12,
                                               cols in 1usize..300, n in 1usize..10,
                                               seed in any::<u64>()) {
        check_float([Format::Q8_0, Format::Q4_0, Format::I8][fi], rows, cols, n, seed);
    }

    #[test]
    fn float_paths_within_bound(fi in 0usize..8, rows in 1usize..19, cols in 1usize..700,
                                n in 1usize..8, seed in any::<u64>()) {
        check_float(FORMATS[fi], rows, cols, n, seed);
    }

    #[test]
    fn int8_paths_bit_identical(fi in 0usize..5, rows in 1usize..19, cols in 1usize..700,
                                n in 1usize..10, per_block in any::<bool>(), seed in any::<u64>()) {
        let format = [Format::Tq2_0, Format::Tq1_0, Format::I8, Format::Q8_0, Format::Q4_0][fi];
        let mode = if per_block { ActScale::PerBlock } else { ActScale::PerToken };
        check_int8(format, rows, cols, n, mode, seed);
    }

    /// Prefill shapes of the ternary panel kernels: several panel pairs and token tiles.
    #[test]
    fn ternary_prefill_bit_identical(tq1 in any::<bool>(), rows in 1usize..80,
                                     cols in 1usize..800, n in 1usize..40,
                                     per_block in any::<bool>(), seed in any::<u64>()) {
        let format = if tq1 { Format::Tq1_0 } else { Format::Tq2_0 };
        let mode = if per_block { ActScale::PerBlock } else { ActScale::PerToken };
        check_int8(format, rows, cols, n, mode, seed);
    }

    #[test]
    fn quantized_activations_identical(len in 1usize..700, n in 1usize..4, scale in -8i32..8,
                                       seed in any::<u64>()) {
        let mut g = Rng(seed | 1);
        let m = libm::ldexpf(1.0, scale);
        let x: Vec<f32> = (0..len * n).map(|_| g.f() * m).collect();
        check_quantize(&x, n, len);
    }
}

/// [`check_int8`] in both scale modes: 33 × 300 with every token count `1..=max_tokens`, then
/// rows around multiples of 16 and 32 with each `(tokens, cols)` of `shapes`.
fn check_tile_edges(formats: [Format; 2], max_tokens: usize, shapes: &[(usize, usize)]) {
    for format in formats {
        for mode in [ActScale::PerToken, ActScale::PerBlock] {
            for n in 1..=max_tokens {
                check_int8(format, 33, 300, n, mode, n as u64);
            }
            for rows in [1, 15, 16, 17, 31, 32, 47, 64, 65] {
                for &(n, cols) in shapes {
                    check_int8(format, rows, cols, n, mode, (rows * 100 + n) as u64);
                }
            }
        }
    }
}

/// The ternary prefill kernels' tile edges (AVX-512 VNNI: 16-row panels in pairs, 12-token
/// register tiles, switch-over at 4 tokens): rows around multiples of 16 and 32, every token
/// count 1..=37, whole and partial 256-blocks, both scale modes.
#[test]
fn ternary_prefill_tile_edges_bit_identical() {
    let shapes = [(4, 256), (12, 513), (13, 1), (25, 768)];
    check_tile_edges([Format::Tq2_0, Format::Tq1_0], 37, &shapes);
}

/// The `q8_0`/`q4_0` prefill kernels' edges (AVX-512 VNNI: 16-row panels in pairs, chunks of
/// 32 blocks and 128 tokens, 6-token register tiles; AVX2: 2 × 4 tiles): rows around
/// multiples of 16 and 32, every token count 1..=20 (the switch-over to the prefill order at
/// 4), 133 tokens (two token chunks), partial last blocks, 1–5 block chunks, both scale modes.
#[test]
fn q32_prefill_tile_edges_bit_identical() {
    let shapes = [(4, 32), (6, 257), (7, 1), (13, 1024 + 33), (25, 896)];
    check_tile_edges([Format::Q8_0, Format::Q4_0], 20, &shapes);
    for format in [Format::Q8_0, Format::Q4_0] {
        for mode in [ActScale::PerToken, ActScale::PerBlock] {
            check_int8(format, 37, 4864 + 7, 11, mode, 3);
            check_int8(format, 18, 700, 133, mode, 4);
        }
    }
}

/// The scalar reference picks its order by batch size, and each order is what its definition
/// says: `q32_row_i8` below [`scalar::Q32_PREFILL_MIN_TOKENS`] tokens, `q32_row_i8_blockwise`
/// from there on (checked against an independent straight-line version of the blockwise order).
#[test]
fn q32_order_follows_the_batch() {
    for format in [Format::Q8_0, Format::Q4_0] {
        for mode in [ActScale::PerToken, ActScale::PerBlock] {
            let (rows, cols) = (5, 8 * 256 + 70);
            let stored = RandomMatrix::new(format, rows, cols, 31);
            let w = stored.view();
            for n in [1, 3, 4, 9] {
                let x = random_acts(n * cols, 32 + n as u64, 5.0);
                let mut s = Vec::new();
                let acts = quantized(Kernels::scalar(), &x, n, cols, mode, &mut s);
                let mut y = vec![0.0f32; n * rows];
                Kernels::scalar().gemm_i8(&w, &acts, &mut y).unwrap();
                let mut wq = vec![0.0f32; cols];
                for r in 0..rows {
                    let row = w.row(r).unwrap();
                    quant::dequantize_row(format, row, cols, &mut wq).unwrap();
                    for t in 0..n {
                        let want = if n >= scalar::Q32_PREFILL_MIN_TOKENS {
                            let b = scalar::q32_row_i8_blockwise(format, row, &acts, t);
                            assert_eq!(b.to_bits(), blockwise_by_hand(format, row, &acts, t));
                            b
                        } else {
                            scalar::q32_row_i8(format, row, &acts, t)
                        };
                        assert_eq!(y[t * rows + r].to_bits(), want.to_bits(), "n={n} r{r} t{t}");
                    }
                }
            }
        }
    }
}

/// The blockwise order written out from the block bytes: per 32-block an exact integer sum,
/// `fma` by the f16 block scale into a chain that a per-block mode folds into the output at
/// every 256 activations.
fn blockwise_by_hand(format: Format, row: &[u8], acts: &Int8Acts, t: usize) -> u32 {
    let bb = format.block_bytes();
    let nb = row.len() / bb;
    let a = acts.token(t);
    let (mut chain, mut out) = (0.0f32, 0.0f32);
    for k in 0..nb {
        let blk = &row[k * bb..(k + 1) * bb];
        let d = float::f16_to_f32([blk[0], blk[1]]);
        let mut isum = 0i32;
        for i in 0..32 {
            let wv = if format == Format::Q8_0 {
                blk[2 + i] as i8 as i32
            } else {
                let byte = blk[2 + i % 16];
                let nib = if i < 16 { byte & 15 } else { byte >> 4 };
                nib as i32 - 8
            };
            isum += wv * a[32 * k + i] as i32;
        }
        chain = libm::fmaf(isum as f32, d, chain);
        if acts.mode == ActScale::PerBlock && (k % 8 == 7 || k == nb - 1) {
            out = libm::fmaf(chain, acts.token_scales(t)[k / 8], out);
            chain = 0.0;
        }
    }
    match acts.mode {
        ActScale::PerToken => (chain * acts.token_scales(t)[0]).to_bits(),
        ActScale::PerBlock => out.to_bits(),
    }
}

/// A token in a prefill batch (blockwise order) against the same token decoded alone
/// (sixteen-lane order), on every ISA: the int8 codes are identical (per-token and per-block
/// scales depend on the token only), so the two results are two float orders of one exact sum
/// `Σ_k d_k·s_k·i_k`. Each is within `(m + 8)·u·M` of it (Higham §4.2: `m` rounded steps
/// on exact terms; `M = Σ_k |d_k|·s_k·Σ_i |w_i·a_i|`, `u = 2⁻²⁴`; `m ≤ nb + nb/8 + 2` counts
/// the block FMAs, folds, scale products and the final multiply), so they differ by at most
/// `2·(nb + nb/8 + 10)·u·M`.
#[test]
fn q32_prefill_agrees_with_decode_within_bound() {
    for format in [Format::Q8_0, Format::Q4_0] {
        for mode in [ActScale::PerToken, ActScale::PerBlock] {
            let (rows, cols, n) = (35, 4864 + 40, 7);
            let stored = RandomMatrix::new(format, rows, cols, 41);
            let w = stored.view();
            let x = random_acts(n * cols, 42, 4.0);
            let nb = cols.div_ceil(32);
            for k in available() {
                let mut s = Vec::new();
                let acts = quantized(k, &x, n, cols, mode, &mut s);
                let mut prefill = vec![0.0f32; n * rows];
                k.gemm_i8(&w, &acts, &mut prefill).unwrap();
                let mut differ = 0;
                for t in 0..n {
                    let xt = &x[t * cols..(t + 1) * cols];
                    let mut s1 = vec![0u8; Int8Acts::scratch_bytes(1, cols, mode).unwrap()];
                    let one = k.quantize_acts(xt, 1, cols, mode, &mut s1).unwrap();
                    assert_eq!(one.token(0), acts.token(t));
                    let mut decode = vec![0.0f32; rows];
                    k.gemv_i8(&w, &one, &mut decode).unwrap();
                    for r in 0..rows {
                        let row = w.row(r).unwrap();
                        let mut m = 0.0f64;
                        for b in 0..nb {
                            let blk = &row[b * format.block_bytes()..];
                            let d = float::f16_to_f32([blk[0], blk[1]]).abs() as f64;
                            let sk = match mode {
                                ActScale::PerToken => one.token_scales(0)[0],
                                ActScale::PerBlock => one.token_scales(0)[b / 8],
                            } as f64;
                            let (_, q) = if format == Format::Q8_0 {
                                q8_0::unpack_block(blk[..34].try_into().unwrap())
                            } else {
                                q4_0::unpack_block(blk[..18].try_into().unwrap())
                            };
                            let a = &one.token(0)[32 * b..32 * b + 32];
                            let mag: i64 = q
                                .iter()
                                .zip(a)
                                .map(|(&w, &a)| (w as i64 * a as i64).abs())
                                .sum();
                            m += d * sk * mag as f64;
                        }
                        let bound = 2.0 * (nb + nb / 8 + 10) as f64 * libm::ldexp(1.0, -24) * m;
                        let (p, d) = (prefill[t * rows + r], decode[r]);
                        let err = (p as f64 - d as f64).abs();
                        assert!(
                            err <= bound,
                            "{:?} {format:?} {mode:?} r{r} t{t}: {p} vs {d}",
                            k.isa()
                        );
                        differ += usize::from(p != d);
                    }
                }
                // The orders really differ (else this test would not test the bound).
                assert!(differ > 0, "{:?} {format:?} {mode:?}", k.isa());
            }
        }
    }
}

/// The prefill entry point writes token `t`, row `r` at `y[t·stride + r]` of a strided view
/// and nothing else (the row-split threading hands it a part of a wider output).
#[cfg(target_arch = "x86_64")]
#[test]
#[allow(unsafe_code)]
fn q32_prefill_honours_the_output_stride() {
    for format in [Format::Q8_0, Format::Q4_0] {
        let (rows, cols, n, stride) = (37, 300, 9, 45);
        let stored = RandomMatrix::new(format, rows, cols, 51);
        let w = stored.view();
        let x = random_acts(n * cols, 52, 1.0);
        let mode = ActScale::PerBlock;
        let mut s = Vec::new();
        let acts = quantized(Kernels::scalar(), &x, n, cols, mode, &mut s);
        let mut want = vec![0.0f32; n * rows];
        Kernels::scalar().gemm_i8(&w, &acts, &mut want).unwrap();
        for k in available() {
            let isa = k.isa();
            if !matches!(isa, Isa::Avx2 | Isa::Avx512Vnni) {
                continue;
            }
            check_strided_view(n, stride, 0..rows, &want, &isa, |view| {
                // SAFETY: `available` only lists ISAs this CPU supports; shapes as required.
                unsafe { x86_q32::gemm_i8_prefill(isa, &w, &acts, view) }
            });
        }
    }
}

/// Every ISA's activation quantizer gives the scalar one's codes, scales and block sums bit
/// for bit, including exact halves (`x·127/max` landing on `k + 0.5`), zeros, a subnormal
/// maximum (where `127/max` overflows) and lengths that are not a multiple of the vector width.
#[test]
fn quantized_activations_are_identical_on_every_isa() {
    // With max |x| = 127 the products are the values themselves: every k + 0.5 in range.
    let mut halves: Vec<f32> = (0..299).map(|i| (i as f32 - 150.0) + 0.5).collect();
    halves.push(127.0);
    halves.iter_mut().for_each(|v| *v = v.clamp(-127.0, 127.0));
    let mut special = vec![0.0f32; 40];
    special[3] = f32::from_bits(1); // the smallest subnormal: 127 / max is +inf.
    special[7] = -f32::from_bits(1);
    let mut g = Rng(99);
    let random: Vec<f32> = (0..3 * 517).map(|_| g.f() * 7.0).collect();
    for (x, n, cols) in [
        (halves, 1, 300),
        (special, 2, 20),
        (random, 3, 517),
        (vec![0.0f32; 33], 1, 33),
    ] {
        check_quantize(&x, n, cols);
    }
}

fn check_quantize(x: &[f32], n: usize, cols: usize) {
    for mode in [ActScale::PerToken, ActScale::PerBlock] {
        let need = Int8Acts::scratch_bytes(n, cols, mode).unwrap();
        let mut s0 = vec![0u8; need];
        let want = Kernels::scalar()
            .quantize_acts(x, n, cols, mode, &mut s0)
            .unwrap();
        for k in available() {
            let mut s1 = vec![0xAAu8; need];
            let got = k.quantize_acts(x, n, cols, mode, &mut s1).unwrap();
            assert_eq!(got.q, want.q, "{:?} {mode:?} codes", k.isa());
            assert_eq!(got.sums, want.sums, "{:?} {mode:?} sums", k.isa());
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(got.scales), bits(want.scales), "{:?} scales", k.isa());
        }
    }
}

/// Distance in units in the last place between two finite floats of the same sign.
fn ulps(a: f32, b: f32) -> u32 {
    (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
}

fn check_exp(x: &[f32], shift: f32) {
    let mut want = x.to_vec();
    let want_sum = Kernels::scalar().exp_shifted(&mut want, shift);
    for k in available() {
        let mut got = x.to_vec();
        let sum = k.exp_shifted(&mut got, shift);
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            assert!(
                ulps(g, w) <= 4,
                "{:?} e^({} - {shift}): {g} vs {w}",
                k.isa(),
                x[i]
            );
        }
        let bound = (x.len() as f32 + 4.0) * f32::EPSILON / 2.0 * want_sum;
        let close = sum == want_sum || (sum - want_sum).abs() <= bound;
        assert!(close, "{:?} sum {sum} vs {want_sum}", k.isa());
    }
}

#[test]
fn exponentials_within_4_ulp_of_libm() {
    // The whole range: overflow to +inf, subnormal results, underflow to 0, exact 0 and 1.
    let x: Vec<f32> = (0..4000).map(|i| -110.0 + i as f32 * 0.0499).collect();
    check_exp(&x, 0.0);
    check_exp(&[0.0, -0.0, 88.7, 89.0, 200.0, -200.0, -1e30, 1e-30], 0.0);
    let mut g = Rng(5);
    let scores: Vec<f32> = (0..77).map(|_| g.f() * 30.0).collect();
    let max = scores.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    check_exp(&scores, max);
    for k in available() {
        let mut nan = [f32::NAN; 3];
        k.exp_shifted(&mut nan, 0.0);
        assert!(nan.iter().all(|v| v.is_nan()), "{:?}", k.isa());
    }
}

/// Every ISA's softmax is its own `exp_shifted` from the exact maximum, scaled by the
/// reciprocal of the sum, bit for bit; NaN or only −∞ is an error, empty is fine.
#[test]
fn softmax_is_exp_shifted_from_the_maximum_on_every_isa() {
    let mut g = Rng(23);
    for len in [1, 2, 7, 15, 16, 17, 33, 100] {
        let mut x: Vec<f32> = (0..len).map(|_| g.f() * 20.0).collect();
        if len > 3 {
            x[1] = f32::NEG_INFINITY;
            x[2] = -0.0;
        }
        for k in available() {
            let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            let mut want = x.clone();
            let inv = 1.0 / k.exp_shifted(&mut want, max);
            want.iter_mut().for_each(|v| *v *= inv);
            let mut got = x.clone();
            k.softmax(&mut got).unwrap();
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{:?} len {len}", k.isa());
            let sum: f32 = got.iter().sum();
            assert!((sum - 1.0).abs() < 1e-5, "{:?} len {len}: {sum}", k.isa());
        }
    }
    for k in available() {
        for bad in [vec![0.0, f32::NAN, 1.0], vec![f32::NEG_INFINITY; 20]] {
            let mut x = bad.clone();
            assert!(k.softmax(&mut x).is_err(), "{:?}", k.isa());
        }
        k.softmax(&mut []).unwrap();
    }
}

#[test]
fn silu_mul_within_8_ulp_of_scalar() {
    let mut g = Rng(17);
    let gate: Vec<f32> = (0..1000)
        .map(|i| {
            if i < 500 {
                g.f() * 12.0
            } else {
                -110.0 + i as f32 * 0.2
            }
        })
        .collect();
    let up: Vec<f32> = (0..1000).map(|_| g.f() * 3.0).collect();
    let mut want = gate.clone();
    Kernels::scalar().silu_mul(&mut want, &up).unwrap();
    for k in available() {
        let mut got = gate.clone();
        k.silu_mul(&mut got, &up).unwrap();
        for (i, (&a, &b)) in got.iter().zip(&want).enumerate() {
            let close = ulps(a, b) <= 8 || (a - b).abs() <= f32::MIN_POSITIVE;
            assert!(
                close,
                "{:?} silu({})·{}: {a} vs {b}",
                k.isa(),
                gate[i],
                up[i]
            );
        }
        assert!(k.silu_mul(&mut got, &up[1..]).is_err());
    }
}

#[test]
fn large_shapes_agree() {
    // Lists what this run covers (visible with --nocapture, e.g. under qemu with -cpu max vs
    // -cpu cortex-a53).
    let isas: Vec<&str> = available().iter().map(|k| k.isa().name()).collect();
    std::eprintln!("kernels under test: {isas:?}");
    for f in [
        Format::Tq2_0,
        Format::Tq1_0,
        Format::F16,
        Format::F32,
        Format::Q8_0,
        Format::Q4_0,
        Format::I8,
    ] {
        check_float(f, 37, 2048 + 256 + 5, 5, 7);
    }
    for mode in [ActScale::PerToken, ActScale::PerBlock] {
        check_int8(Format::Tq2_0, 37, 2048 + 100, 9, mode, 11);
        // Decode (one token) has its own kernels.
        check_int8(Format::Tq2_0, 37, 2048 + 100, 1, mode, 12);
        check_int8(Format::Tq1_0, 35, 1024 + 3, 1, mode, 14);
        check_int8(Format::I8, 37, 2048 + 100, 9, mode, 15);
        check_int8(Format::I8, 37, 2048, 1, mode, 16);
        check_int8(Format::Tq1_0, 33, 1024, 5, mode, 13);
        // Qwen2-0.5B widths: 896 (28 blocks of 32, 3.5 activation blocks), 4864 (152 blocks).
        for format in [Format::Q8_0, Format::Q4_0] {
            check_int8(format, 37, 896, 9, mode, 17);
            check_int8(format, 29, 4864, 5, mode, 18);
            check_int8(format, 41, 896 + 32, 1, mode, 19);
        }
    }
}

#[test]
fn ternary_f32_is_exact_on_integers() {
    // With integer activations and scale 1, every partial sum is exact: all ISAs agree exactly
    // with the dequantized dot product.
    let cols = 600;
    let mut t = [0i8; 256];
    let mut bytes = Vec::new();
    for b in 0..3 {
        for (i, v) in t.iter_mut().enumerate() {
            *v = if b * 256 + i < cols {
                ((i * 7 + b) % 3) as i8 - 1
            } else {
                0
            };
        }
        bytes.extend_from_slice(&tq2_0::pack_block(&t, float::f32_to_f16(1.0)));
    }
    let w = Matrix::new("w", Format::Tq2_0, 1, cols, &bytes).unwrap();
    let x: Vec<f32> = (0..cols).map(|i| (i % 11) as f32 - 5.0).collect();
    let mut wrow = vec![0.0f32; cols];
    quant::dequantize_row(Format::Tq2_0, &bytes, cols, &mut wrow).unwrap();
    let exact: f32 = wrow.iter().zip(&x).map(|(a, b)| a * b).sum();
    for k in available() {
        let mut y = [0.0f32];
        k.gemv(&w, &x, &mut y).unwrap();
        assert_eq!(y[0], exact, "{:?}", k.isa());
    }
}

#[test]
fn bad_shapes_are_errors() {
    let stored = RandomMatrix::new(Format::Tq2_0, 2, 300, 1);
    let w = stored.view();
    let k = Kernels::scalar();
    assert!(k.gemv(&w, &[0.0; 299], &mut [0.0; 2]).is_err());
    assert!(k.gemv(&w, &[0.0; 300], &mut [0.0; 3]).is_err());
    assert!(k.gemm(&w, &[0.0; 600], 3, &mut [0.0; 6]).is_err());
    let mut small = [0u8; 10];
    assert!(
        k.quantize_acts(&[0.0; 300], 1, 300, ActScale::PerToken, &mut small)
            .is_err()
    );
    let mut s = vec![0u8; Int8Acts::scratch_bytes(1, 300, ActScale::PerToken).unwrap()];
    assert!(
        k.quantize_acts(&[f32::NAN; 300], 1, 300, ActScale::PerToken, &mut s)
            .is_err()
    );
    let acts = k
        .quantize_acts(&[1.0; 300], 1, 300, ActScale::PerToken, &mut s)
        .unwrap();
    assert!(k.gemv_i8(&w, &acts, &mut [0.0; 3]).is_err());
    let f = random_matrix(Format::F32, 2, 300, 1);
    let store = aligned(&f);
    let wf = Matrix::new("w", Format::F32, 2, 300, bytemuck::cast_slice(&store)).unwrap();
    assert!(k.gemv_i8(&wf, &acts, &mut [0.0; 2]).is_err());
}

#[test]
fn int8_matches_bitnet_definition() {
    // y = s_x · Σ_b d_b · Σ_i t_i a_i with a = round(x·127/max|x|).
    let cols = 256;
    let t: [i8; 256] = core::array::from_fn(|i| (i % 3) as i8 - 1);
    let bytes = tq2_0::pack_block(&t, float::f32_to_f16(0.5));
    let w = Matrix::new("w", Format::Tq2_0, 1, cols, &bytes).unwrap();
    let x: Vec<f32> = (0..cols).map(|i| (i as f32 - 128.0) / 64.0).collect();
    let amax = 2.0f32;
    let a: Vec<i32> = x
        .iter()
        .map(|v| libm::roundf(v * 127.0 / amax) as i32)
        .collect();
    let isum: i32 = t.iter().zip(&a).map(|(&t, &a)| t as i32 * a).sum();
    let expect = isum as f32 * 0.5 * (amax / 127.0);
    let mut s = vec![0u8; Int8Acts::scratch_bytes(1, cols, ActScale::PerToken).unwrap()];
    for k in available() {
        let acts = k
            .quantize_acts(&x, 1, cols, ActScale::PerToken, &mut s)
            .unwrap();
        let mut y = [0.0f32];
        k.gemv_i8(&w, &acts, &mut y).unwrap();
        assert_eq!(y[0], expect);
    }
}

/// The `q8_0`/`q4_0` × int8 reference against the exact dot product of the dequantized
/// weights with the float activations: the only error is the activations' rounding to int8,
/// at most half a step (`scale / 2`) per activation, so `|Σ w·(x − x̂)| ≤ Σ|w|·scale/2`
/// (plus 1e-5 relative for the f32 sums).
#[test]
fn q32_int8_matches_the_float_product() {
    // 3 tokens: decode order; 5: prefill order.
    for (format, n) in [
        (Format::Q8_0, 3),
        (Format::Q4_0, 3),
        (Format::Q8_0, 5),
        (Format::Q4_0, 5),
    ] {
        for mode in [ActScale::PerToken, ActScale::PerBlock] {
            let (rows, cols) = (7, 896 + 17);
            let stored = RandomMatrix::new(format, rows, cols, 21);
            let w = stored.view();
            let x = random_acts(n * cols, 22, 2.0);
            let mut s = Vec::new();
            let acts = quantized(Kernels::scalar(), &x, n, cols, mode, &mut s);
            let mut got = vec![0.0f32; n * rows];
            Kernels::scalar().gemm_i8(&w, &acts, &mut got).unwrap();
            let mut wrow = vec![0.0f32; cols];
            for r in 0..rows {
                quant::dequantize_row(format, w.row(r).unwrap(), cols, &mut wrow).unwrap();
                for t in 0..n {
                    let xt = &x[t * cols..(t + 1) * cols];
                    let (mut exact, mut bound) = (0.0f64, 0.0f64);
                    for (c, (&wv, &xv)) in wrow.iter().zip(xt).enumerate() {
                        let step = acts.token_scales(t)[match mode {
                            ActScale::PerToken => 0,
                            ActScale::PerBlock => c / QBLOCK,
                        }];
                        exact += wv as f64 * xv as f64;
                        bound += (wv as f64).abs() * (step as f64 / 2.0 + 1e-5 * xv.abs() as f64);
                    }
                    let err = (got[t * rows + r] as f64 - exact).abs();
                    assert!(
                        err <= bound,
                        "{format:?} {mode:?} r{r} t{t}: {err} > {bound}"
                    );
                }
            }
        }
    }
}

#[test]
fn activation_rounding_is_libm_roundf() {
    let mut g = Rng(5);
    let mut xs: Vec<f32> = (0..20000).map(|_| g.f() * 140.0).collect();
    xs.extend([
        0.5,
        -0.5,
        1.5,
        -1.5,
        0.499_999_97,
        -0.499_999_97,
        126.5,
        -126.5,
        127.4,
        -0.0,
    ]);
    for y in xs {
        let want = libm::roundf(y).clamp(-127.0, 127.0) as i8;
        assert_eq!(round_to_i8(y), want, "{y}");
    }
}

#[test]
fn empty_matrices_give_zeros() {
    for format in FORMATS {
        for (rows, cols) in [(0usize, 5usize), (3, 0), (0, 0)] {
            let stored = RandomMatrix::new(format, rows, cols, 3);
            let w = stored.view();
            let x = vec![1.0f32; 4 * cols];
            for k in available() {
                let mut y = vec![f32::NAN; 4 * rows];
                k.gemm(&w, &x, 4, &mut y).unwrap();
                assert!(y.iter().all(|&v| v == 0.0), "{:?} {format:?}", k.isa());
                if Kernels::has_int8_path(format) {
                    let mode = ActScale::PerToken;
                    let mut s = Vec::new();
                    let acts = quantized(k, &x, 4, cols, mode, &mut s);
                    let mut y = vec![f32::NAN; 4 * rows];
                    k.gemm_i8(&w, &acts, &mut y).unwrap();
                    assert!(y.iter().all(|&v| v == 0.0), "{:?} {format:?} int8", k.isa());
                }
            }
        }
    }
}

/// A test pool: each `run` spawns one scoped thread per task, in reverse order, so parts
/// really run concurrently and out of order.
struct SpawningPool(usize);

// SAFETY: every index runs exactly once and the scope joins all threads before `run` returns.
#[allow(unsafe_code)]
unsafe impl Parallel for SpawningPool {
    fn workers(&self) -> usize {
        self.0
    }
    fn run(&self, tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        std::thread::scope(|s| {
            for i in (0..tasks).rev() {
                s.spawn(move || task(i));
            }
        });
    }
}

#[test]
fn split_products_are_bit_identical_to_one_thread() {
    let pools: [&'static SpawningPool; 2] = [
        std::boxed::Box::leak(std::boxed::Box::new(SpawningPool(2))),
        std::boxed::Box::leak(std::boxed::Box::new(SpawningPool(3))),
    ];
    // Above PARALLEL_MIN_WEIGHTS, with row counts that do not divide evenly: int8 products of
    // several tokens split by rows (301 rows: parts of 32 and a last part of 13; 77 rows: by
    // rows on two workers, by tokens on three), and a small matrix that only many tokens
    // make worth splitting (67 rows: parts of 32, 32 and 3, a partial 16-row panel).
    for (rows, cols) in [(301, 512), (77, 2000), (67, 256)] {
        assert!(rows * cols >= PARALLEL_MIN_WEIGHTS || rows * cols * 37 >= PARALLEL_MIN_WEIGHTS);
        for format in FORMATS {
            let stored = RandomMatrix::new(format, rows, cols, 7);
            let w = stored.view();
            for n in [1usize, 3, 8, 13, 37] {
                let x = random_acts(n * cols, n as u64, 1.0);
                let mut scratch =
                    vec![0u8; Int8Acts::scratch_bytes(n, cols, ActScale::PerBlock).unwrap()];
                let int8 = Kernels::has_int8_path(format);
                for k in available() {
                    let mut want = vec![0.0f32; n * rows];
                    k.gemm(&w, &x, n, &mut want).unwrap();
                    let mut want_i8 = vec![0.0f32; n * rows];
                    if int8 {
                        let acts = k
                            .quantize_acts(&x, n, cols, ActScale::PerBlock, &mut scratch)
                            .unwrap();
                        k.gemm_i8(&w, &acts, &mut want_i8).unwrap();
                    }
                    for pool in pools {
                        let kp = k.with_parallel(pool);
                        assert_eq!(kp.workers(), pool.0);
                        let mut got = vec![f32::NAN; n * rows];
                        kp.gemm(&w, &x, n, &mut got).unwrap();
                        assert!(
                            same_bits(&got, &want),
                            "{k:?} {format:?} {rows}x{cols} n={n}"
                        );
                        if n == 1 {
                            kp.gemv(&w, &x, &mut got).unwrap();
                            assert!(same_bits(&got, &want));
                        }
                        if int8 {
                            let acts = k
                                .quantize_acts(&x, n, cols, ActScale::PerBlock, &mut scratch)
                                .unwrap();
                            let mut got = vec![f32::NAN; n * rows];
                            kp.gemm_i8(&w, &acts, &mut got).unwrap();
                            assert!(same_bits(&got, &want_i8), "i8 {k:?} {format:?} n={n}");
                        }
                    }
                }
            }
        }
    }
}

/// The split each kind of product gets: int8 prefill by rows in whole panel pairs (each
/// worker unpacks only its own panels), float prefill by tokens (where no strided kernel
/// writes row ranges: see `dense_float_row_parts_write_only_their_rows`), decode by rows.
#[test]
fn int8_prefill_splits_by_aligned_rows_and_float_prefill_by_tokens() {
    let pool: &'static SpawningPool = std::boxed::Box::leak(std::boxed::Box::new(SpawningPool(2)));
    let k = Kernels::scalar().with_parallel(pool);
    for rows in [2048usize, 2000, 97] {
        let cols = 2048;
        let bytes = vec![0u8; rows * Format::Tq2_0.row_bytes(cols).unwrap()];
        let w = Matrix::new("w", Format::Tq2_0, rows, cols, &bytes).unwrap();
        let covers = |split: Split, units: usize, align: usize| {
            split.per.is_multiple_of(align)
                && split.per * split.parts >= units
                && split.per * (split.parts - 1) < units
        };
        let (_, s) = k.split(&w, 512, true).unwrap();
        assert!(matches!(s.by, SplitBy::Rows), "{rows}");
        assert!(covers(s, rows, PREFILL_ROW_SPLIT_ALIGN), "{rows}");
        assert!(s.parts <= 2 * ROW_PARTS_PER_WORKER && s.parts >= 2);
        let (_, s) = k.split(&w, 512, false).unwrap();
        assert!(matches!(s.by, SplitBy::Tokens) && covers(s, 512, TOKEN_SPLIT_ALIGN));
        let (_, s) = k.split(&w, 1, true).unwrap();
        assert!(matches!(s.by, SplitBy::Rows) && covers(s, rows, ROW_SPLIT_ALIGN));
    }
    // Too few rows for two aligned parts: tokens.
    let bytes = vec![0u8; 40 * Format::Tq2_0.row_bytes(4096).unwrap()];
    let w = Matrix::new("w", Format::Tq2_0, 40, 4096, &bytes).unwrap();
    let (_, s) = k.split(&w, 64, true).unwrap();
    assert!(matches!(s.by, SplitBy::Tokens));
    assert!(k.split(&w, 3, true).is_none());
    assert!(Kernels::scalar().split(&w, 64, true).is_none());
}

/// A strided view writes exactly its rows of every token and nothing between them.
#[test]
fn strided_parts_write_only_their_rows() {
    let (rows, cols, n) = (37usize, 300usize, 5usize);
    for format in FORMATS.into_iter().filter(|&f| Kernels::has_int8_path(f)) {
        let stored = RandomMatrix::new(format, rows, cols, 11);
        let w = stored.view();
        let x = random_acts(n * cols, 5, 1.0);
        for k in available() {
            let mut scratch = Vec::new();
            let acts = quantized(k, &x, n, cols, ActScale::PerToken, &mut scratch);
            let mut want = vec![0.0f32; n * rows];
            k.gemm_i8(&w, &acts, &mut want).unwrap();
            for (first, count) in [(0usize, 16usize), (16, 21), (5, 1)] {
                let part_bytes = &stored.bytes()[first * format.row_bytes(cols).unwrap()
                    ..(first + count) * format.row_bytes(cols).unwrap()];
                let part = Matrix::new("p", format, count, cols, part_bytes).unwrap();
                check_strided_view(n, rows, first..first + count, &want, &(k, format), |view| {
                    k.gemm_i8_checked(&part, &acts, view)
                });
            }
        }
    }
}

/// Dense float products of several tokens split by rows where the kernel writes strided row
/// ranges (AVX-512: each worker streams only its rows), and a row part writes exactly its rows
/// of every token, with the bits of the whole product.
#[test]
fn dense_float_row_parts_write_only_their_rows() {
    let pool: &'static SpawningPool = std::boxed::Box::leak(std::boxed::Box::new(SpawningPool(2)));
    let (rows, cols, n) = (37usize, 300usize, 5usize);
    for format in [Format::F32, Format::F16, Format::Bf16] {
        let bytes = random_matrix(format, rows, cols, 13);
        let store = aligned(&bytes);
        let data = &bytemuck::cast_slice::<u32, u8>(&store)[..bytes.len()];
        let w = Matrix::new("w", format, rows, cols, data).unwrap();
        let mut g = Rng(9);
        let x: Vec<f32> = (0..n * cols).map(|_| g.f()).collect();
        for k in available()
            .into_iter()
            .filter(|k| k.float_rows_strided(format))
        {
            // The split: by rows, in whole aligned parts.
            let big = vec![0u8; 4096 * format.row_bytes(1024).unwrap()];
            let store_big = aligned(&big);
            let data_big = &bytemuck::cast_slice::<u32, u8>(&store_big)[..big.len()];
            let wide = Matrix::new("w", format, 4096, 1024, data_big).unwrap();
            let (_, s) = k.with_parallel(pool).split(&wide, 16, false).unwrap();
            assert!(matches!(s.by, SplitBy::Rows) && s.per.is_multiple_of(ROW_SPLIT_ALIGN));
            let mut want = vec![0.0f32; n * rows];
            k.gemm(&w, &x, n, &mut want).unwrap();
            for (first, count) in [(0usize, 16usize), (16, 21), (5, 1), (3, 4)] {
                let part_bytes = &data[first * format.row_bytes(cols).unwrap()
                    ..(first + count) * format.row_bytes(cols).unwrap()];
                let part = Matrix::new("p", format, count, cols, part_bytes).unwrap();
                let mut y = vec![f32::NAN; n * rows];
                let out = SharedOut {
                    ptr: y.as_mut_ptr(),
                    len: y.len(),
                };
                // SAFETY: the only view of `y` while it lives; rows `first..first + count` of
                // `n` runs of `rows` lie inside `y`.
                #[allow(unsafe_code)]
                let mut view = unsafe { StridedOut::rows_of(&out, first, count, rows, n) };
                k.gemm_strided(&part, &x, n, &mut view);
                for t in 0..n {
                    for r in 0..rows {
                        let got = y[t * rows + r];
                        if (first..first + count).contains(&r) {
                            let want = want[t * rows + r];
                            assert_eq!(got.to_bits(), want.to_bits(), "{k:?} {format:?}");
                        } else {
                            assert!(got.is_nan(), "{k:?} {format:?} wrote row {r} of token {t}");
                        }
                    }
                }
            }
        }
    }
}

/// 9 tokens on 2 workers: 301 rows split by rows; 40 rows (too few for two panel pairs) split
/// by tokens, which leaves a 1-token part. Either way the `q8_0`/`q4_0` outputs keep the
/// prefill order of the whole batch.
#[test]
fn q32_split_parts_keep_the_batch_order() {
    let pool: &'static SpawningPool = std::boxed::Box::leak(std::boxed::Box::new(SpawningPool(2)));
    let n = 9;
    for (format, rows, cols) in [
        (Format::Q8_0, 301, 512),
        (Format::Q4_0, 301, 512),
        (Format::Q8_0, 40, 4096),
        (Format::Q4_0, 40, 4096),
    ] {
        let stored = RandomMatrix::new(format, rows, cols, 61);
        let w = stored.view();
        let x = random_acts(n * cols, 62, 1.0);
        for mode in [ActScale::PerToken, ActScale::PerBlock] {
            let mut s = Vec::new();
            let acts = quantized(Kernels::scalar(), &x, n, cols, mode, &mut s);
            let mut want = vec![0.0f32; n * rows];
            Kernels::scalar().gemm_i8(&w, &acts, &mut want).unwrap();
            for k in available() {
                let mut got = vec![f32::NAN; n * rows];
                k.with_parallel(pool).gemm_i8(&w, &acts, &mut got).unwrap();
                let same = same_bits(&got, &want);
                assert!(same, "{:?} {format:?} {mode:?}", k.isa());
            }
        }
    }
}

#[test]
fn parts_run_once_each_with_and_without_a_pool() {
    let pool: &'static SpawningPool = std::boxed::Box::leak(std::boxed::Box::new(SpawningPool(3)));
    let task = |i: usize, part: &mut [f32]| {
        for (j, v) in part.iter_mut().enumerate() {
            *v += (i * 10 + j) as f32;
        }
    };
    let mut want = vec![0.0f32; 7 * 5];
    Kernels::scalar()
        .for_each_part(&mut want, 5, usize::MAX, &task)
        .unwrap();
    let mut got = vec![0.0f32; 7 * 5];
    Kernels::scalar()
        .with_parallel(pool)
        .for_each_part(&mut got, 5, PARALLEL_MIN_WEIGHTS, &task)
        .unwrap();
    assert_eq!(got, want);
    assert_eq!(want[5 * 3 + 2], 32.0);
    assert!(
        Kernels::scalar()
            .for_each_part(&mut got, 4, 0, &task)
            .is_err()
    );
    assert!(
        Kernels::scalar()
            .for_each_part(&mut got, 0, 0, &task)
            .is_err()
    );
}

#[test]
fn small_products_and_single_threaded_stay_on_the_caller() {
    let pool: &'static SpawningPool = std::boxed::Box::leak(std::boxed::Box::new(SpawningPool(2)));
    let k = Kernels::scalar().with_parallel(pool);
    assert_eq!(k.workers(), 2);
    assert_eq!(k.single_threaded(), Kernels::scalar());
    assert_ne!(k, Kernels::scalar());
    let w = Matrix::new("w", Format::I8, 4, 8, &[1u8; 32]).unwrap();
    assert!(k.split(&w, 1, true).is_none());
    assert!(
        k.split(&w, 1000, true).is_none(),
        "32 weights × 1000 tokens: not worth a wake-up"
    );
}

/// Dense float products give every token the same result however many tokens share the call,
/// so a model's output does not depend on its batch (e.g. Toto's sample paths decoded one at a
/// time or 256 together): each output is one accumulator over its row, whatever the tile.
#[test]
fn dense_float_products_do_not_depend_on_the_token_count() {
    for format in [Format::F32, Format::F16, Format::Bf16] {
        // Tails of 0, 5 and 15 columns past the 16-lane chunks; rows not a multiple of 4 or 8.
        for (rows, cols) in [(13, 64), (9, 101), (21, 783)] {
            let stored = RandomMatrix::new(format, rows, cols, 3);
            let w = stored.view();
            let n = 23;
            let x = random_acts(n * cols, 99, 1.0);
            for k in available() {
                let mut all = vec![f32::NAN; n * rows];
                k.gemm(&w, &x, n, &mut all).unwrap();
                for t in 0..n {
                    let mut one = vec![f32::NAN; rows];
                    k.gemv(&w, &x[t * cols..(t + 1) * cols], &mut one).unwrap();
                    let same = same_bits(&one, &all[t * rows..(t + 1) * rows]);
                    assert!(same, "{:?} {format:?} {rows}x{cols} token {t}", k.isa());
                }
                // Any split of the tokens into calls.
                let parts = gemm_in_parts(k, &w, &x, &[(0, 7), (7, 2), (9, 14)]);
                assert!(same_bits(&all, &parts));
            }
        }
    }
}

/// Every format: calls of at least `GEMM_INVARIANT_TOKENS` tokens give each token the same bits
/// whatever the count (the AVX-512 transposed panels' 12-, 4- and 1-token tiles, AVX2 and NEON
/// tiles and their leftovers), with rows past one 32-row panel and columns past one 256 chunk.
#[test]
fn float_products_of_enough_tokens_do_not_depend_on_the_token_count() {
    let split = [(0usize, 12usize), (12, 4), (16, 5), (21, 8)];
    assert!(
        split
            .iter()
            .all(|&(_, count)| count >= GEMM_INVARIANT_TOKENS)
    );
    let n = 29;
    for format in FORMATS {
        for (rows, cols) in [(45, 64), (16, 128), (33, 300), (7, 513)] {
            let stored = RandomMatrix::new(format, rows, cols, 5);
            let w = stored.view();
            let x = random_acts(n * cols, 17, 1.0);
            for k in available() {
                let mut all = vec![f32::NAN; n * rows];
                k.gemm(&w, &x, n, &mut all).unwrap();
                let parts = gemm_in_parts(k, &w, &x, &split);
                let same = same_bits(&all, &parts);
                assert!(same, "{:?} {format:?} {rows}x{cols}", k.isa());
            }
        }
    }
}

#[test]
fn for_each_mut_visits_every_part_once() {
    let pool: &'static SpawningPool = std::boxed::Box::leak(std::boxed::Box::new(SpawningPool(3)));
    for k in [Kernels::scalar(), Kernels::scalar().with_parallel(pool)] {
        let mut parts: Vec<(usize, u32)> = (0..7).map(|i| (i, 0)).collect();
        k.for_each_mut(&mut parts, &|p| p.1 += 1 + p.0 as u32);
        assert!(parts.iter().all(|&(i, c)| c == 1 + i as u32));
        let mut one = [(0usize, 0u32)];
        k.for_each_mut(&mut one, &|p| p.1 += 5);
        assert_eq!(one[0].1, 5);
        k.for_each_mut(&mut [] as &mut [(usize, u32)], &|_| unreachable!());
    }
}
