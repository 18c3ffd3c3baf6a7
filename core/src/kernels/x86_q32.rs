//! x86-64 `q8_0`/`q4_0` × int8 products (decode and prefill), bit-identical to
//! [`scalar::q32_row_i8`](super::scalar::q32_row_i8).
//!
//! Weights become unsigned codes (`q8_0`: `w + 128`, one `xor`; `q4_0`: the raw nibbles,
//! `w + 8`) so they feed `vpdpbusd` (VNNI) or `vpmaddubsw` (AVX2); the offset is removed by
//! starting each dot product from `−offset·Σa` over the same four activations, computed once
//! per token and block and shared by every row of a tile. Each 32-block yields eight exact
//! partial sums that are converted and added with one FMA per lane into sixteen f32 lanes
//! (lanes `0..8` for even blocks, `8..16` for odd ones), reduced once per output: the scalar
//! reference's order, so results are bit-identical.
//!
//! Tiles of `R` rows × `T` tokens share every activation load (and its offset correction)
//! and every weight load; decode streams eight rows at once with software prefetch.

#![allow(unsafe_code)]
// Tiles index rows and tokens with the same counters.
#![allow(clippy::needless_range_loop)]

use super::{ActScale, Int8Acts, Isa, StridedOut};
use crate::quant::{Format, Matrix};
use core::arch::x86_64::*;

const Q8: u8 = 0;
const Q4: u8 = 1;

/// Minimum distance of the decode kernels' software prefetch. Decode fetches the next tile's
/// bytes while it works on this one: with short rows (Qwen2's 896 columns
/// make 952-byte `q8_0` rows, 7.6 KB tiles), one tile ahead measured −1 to +25% against
/// three (the old 16 KiB minimum) in seven interleaved runs on a loaded machine.
const PREFETCH_BYTES: usize = 4096;

/// `q8_0`/`q4_0` weights × int8 activations. Caller checked shapes and format.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C (and AVX-512 F/BW/VL/VNNI for `Isa::Avx512Vnni`).
pub unsafe fn gemm_i8(isa: Isa, w: &Matrix, acts: &Int8Acts, y: &mut StridedOut) {
    let q4 = w.format() == Format::Q4_0;
    let per_block = acts.mode == ActScale::PerBlock;
    // SAFETY: the caller guarantees the features of `isa`.
    unsafe {
        match (isa == Isa::Avx512Vnni, q4, per_block) {
            (true, false, false) => drive_vnni::<Q8, false>(w, acts, y),
            (true, false, true) => drive_vnni::<Q8, true>(w, acts, y),
            (true, true, false) => drive_vnni::<Q4, false>(w, acts, y),
            (true, true, true) => drive_vnni::<Q4, true>(w, acts, y),
            (false, false, false) => drive_avx2::<Q8, false>(w, acts, y),
            (false, false, true) => drive_avx2::<Q8, true>(w, acts, y),
            (false, true, false) => drive_avx2::<Q4, false>(w, acts, y),
            (false, true, true) => drive_avx2::<Q4, true>(w, acts, y),
        }
    }
}

/// Defines a driver that covers every (row, token) output with one ISA's tiles: prefill tiles
/// (`$pr` rows × `$pt` tokens) with row blocks outermost, so a block of weights stays in cache
/// while every token passes; the leftover tokens one at a time with decode tiles (`$dr` rows).
macro_rules! driver {
    ($name:ident, $features:literal, $tile:ident, $dr:literal, $pr:literal, $pt:literal) => {
        #[target_feature(enable = $features)]
        unsafe fn $name<const F: u8, const PB: bool>(
            w: &Matrix,
            acts: &Int8Acts,
            y: &mut StridedOut,
        ) {
            let (rows, n) = (w.rows(), acts.tokens);
            let full_t = n - n % $pt;
            let full_pr = rows - rows % $pr;
            let full_dr = rows - rows % $dr;
            // SAFETY: every tile stays inside `rows` × `n`; same features as this function.
            unsafe {
                for r0 in (0..full_pr).step_by($pr) {
                    for t0 in (0..full_t).step_by($pt) {
                        $tile::<F, PB, $pr, $pt>(w, acts, r0, t0, y);
                    }
                }
                for r in full_pr..rows {
                    for t0 in (0..full_t).step_by($pt) {
                        $tile::<F, PB, 1, $pt>(w, acts, r, t0, y);
                    }
                }
                for t in full_t..n {
                    for r0 in (0..full_dr).step_by($dr) {
                        $tile::<F, PB, $dr, 1>(w, acts, r0, t, y);
                    }
                    for r in full_dr..rows {
                        $tile::<F, PB, 1, 1>(w, acts, r, t, y);
                    }
                }
            }
        }
    };
}

driver!(
    drive_vnni,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
    tile_vnni,
    8,
    4,
    4
);
driver!(drive_avx2, "avx2,fma,f16c", tile_avx2, 4, 2, 2);

/// The code offset removed per product: `q8_0` codes are `w + 128`, `q4_0` nibbles `w + 8`.
const fn offset<const F: u8>() -> i8 {
    if F == Q8 { -128 } else { 8 }
}

/// Row pointers of a tile.
fn row_ptrs<const R: usize>(w: &Matrix, r0: usize) -> [*const u8; R] {
    let mut rs = [core::ptr::null::<u8>(); R];
    for (r, p) in rs.iter_mut().enumerate() {
        *p = w.row(r0 + r).unwrap_or(&[]).as_ptr();
    }
    rs
}

/// Whether a tile prefetches weights, and how far ahead. Decode streams the matrix once, so
/// it fetches whole tiles at least [`PREFETCH_BYTES`] ahead. Prefill reads a block of rows
/// once per group of tokens: the first group (`t0 == 0`) fetches the next block of rows,
/// which the later groups give time to arrive; without it each new block stalls on DRAM.
fn prefetch_plan<const R: usize, const T: usize>(w: &Matrix, t0: usize) -> (bool, usize) {
    let tile_bytes = (R * w.row_bytes()).max(1);
    if T == 1 {
        (true, PREFETCH_BYTES.div_ceil(tile_bytes) * tile_bytes)
    } else {
        (t0 == 0, tile_bytes)
    }
}

/// The f16 scale of the block at `p` (F16C conversion is exact).
///
/// # Safety
/// `p` must point to a whole block.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn block_scale(p: *const u8) -> __m128 {
    // SAFETY: the first two bytes of a block are its scale.
    let bits = unsafe { core::ptr::read_unaligned(p.cast::<u16>()) };
    _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32))
}

/// Finishes one output from its sixteen lanes, in the reference's order.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn finish<const PB: bool>(s8: __m256, acts: &Int8Acts, t: usize) -> f32 {
    let s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps::<1>(s8));
    let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    let s1 = _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps::<1>(s2, s2)));
    if PB { s1 } else { s1 * acts.scales[t] }
}

// ---------------------------------------------------------------------------------------------
// AVX-512 VNNI: two blocks per 512-bit register.

/// The codes of blocks `k` (lanes `0..32`) and `k + 1` (lanes `32..64`, zero when `!two`) as
/// unsigned bytes in weight order.
///
/// # Safety
/// `p` must point to block `k` of a row, and to two whole blocks when `two`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn codes_zmm<const F: u8>(p: *const u8, bb: usize, two: bool) -> __m512i {
    // SAFETY: block bytes `2..bb` of each block that exists.
    unsafe {
        if F == Q8 {
            let lo = _mm256_loadu_si256(p.add(2).cast());
            let hi = if two {
                _mm256_loadu_si256(p.add(bb + 2).cast())
            } else {
                _mm256_setzero_si256()
            };
            let z = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
            _mm512_xor_si512(z, _mm512_set1_epi8(-128))
        } else {
            let x = if two {
                _mm256_loadu2_m128i(p.add(bb + 2).cast(), p.add(2).cast())
            } else {
                _mm256_zextsi128_si256(_mm_loadu_si128(p.add(2).cast()))
            };
            let mask = _mm256_set1_epi8(0x0f);
            let lo = _mm256_and_si256(x, mask);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(x), mask);
            // [lo_k, lo_k1, hi_k, hi_k1] → [lo_k, hi_k, lo_k1, hi_k1] (128-bit lanes).
            let z = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
            _mm512_shuffle_i64x2::<0b11_01_10_00>(z, z)
        }
    }
}

/// What both ISAs' tiles of `R` rows × `T` tokens set up before their block loop.
struct Tile<const R: usize, const T: usize> {
    /// Bytes per block and blocks per row.
    bb: usize,
    nb: usize,
    /// The tile's weight rows and token activations.
    rs: [*const u8; R],
    ap: [*const i8; T],
    /// [`prefetch_plan`]'s answer for this tile.
    prefetch: bool,
    ahead: usize,
}

impl<const R: usize, const T: usize> Tile<R, T> {
    #[inline(always)]
    fn new(w: &Matrix, acts: &Int8Acts, r0: usize, t0: usize) -> Self {
        let bb = w.format().block_bytes();
        let (prefetch, ahead) = prefetch_plan::<R, T>(w, t0);
        let mut ap = [core::ptr::null::<i8>(); T];
        for (t, p) in ap.iter_mut().enumerate() {
            *p = acts.token(t0 + t).as_ptr();
        }
        Tile {
            bb,
            nb: w.row_bytes() / bb,
            rs: row_ptrs::<R>(w, r0),
            ap,
            prefetch,
            ahead,
        }
    }
}

/// `q8_0`/`q4_0` × int8 on a tile of `R` rows × `T` tokens with 512-bit vectors.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI, AVX2, FMA, F16C; `r0 + R <= rows`, `t0 + T <= tokens`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile_vnni<const F: u8, const PB: bool, const R: usize, const T: usize>(
    w: &Matrix,
    acts: &Int8Acts,
    r0: usize,
    t0: usize,
    y: &mut StridedOut,
) {
    let Tile {
        bb,
        nb,
        rs,
        prefetch,
        ahead,
        ap,
    } = Tile::<R, T>::new(w, acts, r0, t0);
    let off = _mm512_set1_epi8(offset::<F>());
    // Lanes 0..8 take element 0 (block k's scale), lanes 8..16 element 1 (block k + 1's).
    let pick = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    let mut acc = [[_mm512_setzero_ps(); T]; R];
    let mut k = 0;
    while k < nb {
        let two = k + 1 < nb;
        let mut a = [_mm512_setzero_si512(); T];
        let mut c = [_mm512_setzero_si512(); T];
        for t in 0..T {
            // SAFETY: 64 bytes from 32k: blocks k and k + 1 lie inside the zero-padded
            // activations (an odd block count never ends on a 256-boundary).
            a[t] = unsafe { _mm512_loadu_si512(ap[t].add(32 * k).cast()) };
            let sum = _mm512_dpbusd_epi32(_mm512_setzero_si512(), off, a[t]);
            c[t] = _mm512_sub_epi32(_mm512_setzero_si512(), sum);
        }
        for r in 0..R {
            let p = rs[r].wrapping_add(k * bb);
            if prefetch {
                // A prefetch never faults, hence wrapping arithmetic. One step reads two
                // blocks: 68 bytes of `q8_0`, so a single prefetch per step would leave one
                // cache line in seventeen to a demand miss; the second covers it (with one
                // tile ahead: +22–28% decode bandwidth on Qwen2's shapes, three runs).
                let at = p.wrapping_add(ahead);
                _mm_prefetch::<_MM_HINT_T0>(at.cast());
                if F == Q8 {
                    _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(64).cast());
                }
            }
            // SAFETY: block k (and k + 1 when `two`) of row `r0 + r`.
            let (codes, d) = unsafe {
                let d0 = block_scale(p);
                let d01 = if two {
                    _mm_unpacklo_ps(d0, block_scale(p.add(bb)))
                } else {
                    d0
                };
                (
                    codes_zmm::<F>(p, bb, two),
                    _mm512_permutexvar_ps(pick, _mm512_castps128_ps512(d01)),
                )
            };
            for t in 0..T {
                let dot = _mm512_dpbusd_epi32(c[t], codes, a[t]);
                // The activation scale is broadcast from memory here rather than held in a
                // register: a 4 × 4 tile already uses 24 of the 32 vector registers.
                let s = if PB {
                    _mm512_mul_ps(
                        d,
                        _mm512_set1_ps(acts.scales[(t0 + t) * acts.blocks + k / 8]),
                    )
                } else {
                    d
                };
                acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), s, acc[r][t]);
            }
        }
        k += 2;
    }
    for r in 0..R {
        for t in 0..T {
            let v = acc[r][t];
            let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
            let s8 = _mm256_add_ps(_mm512_castps512_ps256(v), hi);
            y.set(t0 + t, r0 + r, finish::<PB>(s8, acts, t0 + t));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// AVX2: one block per 256-bit register, even and odd blocks in separate accumulators.

/// `Σ₄ w·a` per i32 lane of one block (exact) on AVX2. `q8_0` moves `w`'s sign onto `a`
/// (`|w| ≤ 128` keeps `vpmaddubsw` from saturating); `q4_0` multiplies the nibbles and adds
/// `c = −8·Σ₄a`.
///
/// # Safety
/// `p` must point to a whole block.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn block_dot_avx2<const F: u8>(p: *const u8, a: __m256i, c: __m256i) -> __m256i {
    let ones = _mm256_set1_epi16(1);
    // SAFETY: block bytes `2..34` (q8_0) or `2..18` (q4_0).
    unsafe {
        if F == Q8 {
            let w = _mm256_loadu_si256(p.add(2).cast());
            let pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(a, w));
            _mm256_madd_epi16(pairs, ones)
        } else {
            let x = _mm_loadu_si128(p.add(2).cast());
            let mask = _mm_set1_epi8(0x0f);
            let lo = _mm_and_si128(x, mask);
            let hi = _mm_and_si128(_mm_srli_epi16::<4>(x), mask);
            let u = _mm256_set_m128i(hi, lo);
            _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(u, a), ones), c)
        }
    }
}

/// `q8_0`/`q4_0` × int8 on a tile of `R` rows × `T` tokens with 256-bit vectors.
///
/// # Safety
/// AVX2, FMA, F16C; `r0 + R <= rows`, `t0 + T <= tokens`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_avx2<const F: u8, const PB: bool, const R: usize, const T: usize>(
    w: &Matrix,
    acts: &Int8Acts,
    r0: usize,
    t0: usize,
    y: &mut StridedOut,
) {
    let Tile {
        bb,
        nb,
        rs,
        prefetch,
        ahead,
        ap,
    } = Tile::<R, T>::new(w, acts, r0, t0);
    // [even blocks, odd blocks] per output.
    let mut acc = [[[_mm256_setzero_ps(); 2]; T]; R];
    for k in 0..nb {
        let mut a = [_mm256_setzero_si256(); T];
        let mut c = [_mm256_setzero_si256(); T];
        let mut sa = [_mm256_setzero_ps(); T];
        for t in 0..T {
            // SAFETY: block k's 32 activations lie inside the zero-padded token.
            a[t] = unsafe { _mm256_loadu_si256(ap[t].add(32 * k).cast()) };
            if F == Q4 {
                let eights = _mm256_maddubs_epi16(_mm256_set1_epi8(8), a[t]);
                let sum = _mm256_madd_epi16(eights, _mm256_set1_epi16(1));
                c[t] = _mm256_sub_epi32(_mm256_setzero_si256(), sum);
            }
            if PB {
                sa[t] = _mm256_set1_ps(acts.scales[(t0 + t) * acts.blocks + k / 8]);
            }
        }
        for r in 0..R {
            let p = rs[r].wrapping_add(k * bb);
            if prefetch {
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(ahead).cast());
            }
            // SAFETY: block k of row `r0 + r`.
            let d = unsafe { _mm256_broadcastss_ps(block_scale(p)) };
            for t in 0..T {
                // SAFETY: as above.
                let dot = unsafe { block_dot_avx2::<F>(p, a[t], c[t]) };
                let s = if PB { _mm256_mul_ps(d, sa[t]) } else { d };
                let lane = &mut acc[r][t][k % 2];
                *lane = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), s, *lane);
            }
        }
    }
    for r in 0..R {
        for t in 0..T {
            let s8 = _mm256_add_ps(acc[r][t][0], acc[r][t][1]);
            y.set(t0 + t, r0 + r, finish::<PB>(s8, acts, t0 + t));
        }
    }
}
