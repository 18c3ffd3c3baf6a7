//! Every SIMD attention primitive against the scalar reference, within the bound of [`super`].

extern crate std;

use super::*;
use crate::kernels::tests::available;
use half::f16;
use proptest::prelude::*;
use std::vec::Vec;

const U: f32 = 1.0 / (1u32 << 24) as f32;

fn close_dot(got: f32, want: f32, terms: impl Iterator<Item = f32>, n: usize) -> bool {
    let mass: f32 = terms.map(f32::abs).sum();
    (got - want).abs() <= (n as f32 + 2.0) * U * mass + f32::MIN_POSITIVE
}

fn close_axpy(got: &[f32], want: &[f32], before: &[f32], w: f32, v: &[f32]) -> bool {
    got.iter()
        .zip(want)
        .zip(before.iter().zip(v))
        .all(|((g, e), (b, x))| {
            (g - e).abs() <= 2.0 * U * (b.abs() + (w * x).abs() + e.abs()) + f32::MIN_POSITIVE
        })
}

fn values(len: usize) -> impl Strategy<Value = Vec<f32>> {
    proptest::collection::vec(-100.0f32..100.0, len)
}

proptest! {
    #[test]
    fn simd_matches_scalar(
        half in 0usize..40,
        seed in values(160),
        codes in proptest::collection::vec(any::<u8>(), 80),
        w in -3.0f32..3.0,
    ) {
        let n = 2 * half;
        let q = &seed[..n];
        let kf = &seed[80..80 + n];
        let kh: Vec<u16> = kf.iter().map(|&v| f16::from_f32(v).to_bits()).collect();
        let kh_f: Vec<f32> = kh.iter().map(|&b| f16::from_bits(b).to_f32()).collect();
        let u8s = &codes[..n.min(80)];
        let u8_f: Vec<f32> = u8s.iter().map(|&u| u as f32).collect();
        let u4s = &codes[..half];
        let u4_f: Vec<f32> = u4s.iter().map(|&u| (u & 15) as f32)
            .chain(u4s.iter().map(|&u| (u >> 4) as f32)).collect();
        for k in available() {
            let prod = |a: &[f32]| a.iter().zip(q).map(|(x, y)| x * y).collect::<Vec<_>>();
            let cases = [
                (k.dot_f32(kf, q).unwrap(), scalar::dot_f32(kf, q), prod(kf)),
                (k.dot_f16(&kh, q).unwrap(), scalar::dot_f16(&kh, q), prod(&kh_f)),
                (k.dot_u8(u8s, q).unwrap(), scalar::dot_u8(u8s, q), prod(&u8_f)),
                (k.dot_u4(u4s, q).unwrap(), scalar::dot_u4(u4s, q), prod(&u4_f)),
            ];
            for (i, (got, want, terms)) in cases.into_iter().enumerate() {
                prop_assert!(close_dot(got, want, terms.into_iter(), n),
                    "{:?} dot {i}: {got} vs {want}", k.isa());
            }
            let before = q.to_vec();
            let check = |got: &[f32], want: &[f32], v: &[f32]| close_axpy(got, want, &before, w, v);
            let (mut a, mut b) = (before.clone(), before.clone());
            k.axpy_f32(w, kf, &mut a).unwrap();
            scalar::axpy_f32(w, kf, &mut b);
            prop_assert!(check(&a, &b, kf), "{:?} axpy_f32", k.isa());
            let (mut a, mut b) = (before.clone(), before.clone());
            k.axpy_f16(w, &kh, &mut a).unwrap();
            scalar::axpy_f16(w, &kh, &mut b);
            prop_assert!(check(&a, &b, &kh_f), "{:?} axpy_f16", k.isa());
            let (mut a, mut b) = (before.clone(), before.clone());
            k.axpy_u8(w, u8s, &mut a).unwrap();
            scalar::axpy_u8(w, u8s, &mut b);
            prop_assert!(check(&a, &b, &u8_f), "{:?} axpy_u8", k.isa());
            let (mut a, mut b) = (before.clone(), before.clone());
            k.axpy_u4(w, u4s, &mut a).unwrap();
            scalar::axpy_u4(w, u4s, &mut b);
            prop_assert!(check(&a, &b, &u4_f), "{:?} axpy_u4", k.isa());
        }
    }
}

proptest! {
    /// The multi-row f16 calls give exactly what one call per row gives, on every ISA.
    #[test]
    fn row_runs_equal_one_call_per_row(
        d in 0usize..140,
        rows in 0usize..6,
        seed in values(6 * 140 + 6 + 140),
    ) {
        let v: Vec<u16> = seed[..rows * d].iter().map(|&x| f16::from_f32(x).to_bits()).collect();
        let w: Vec<f32> = seed[6 * 140..6 * 140 + rows].iter().map(|x| x / 50.0).collect();
        let q = &seed[6 * 140 + 6..6 * 140 + 6 + d];
        for k in available() {
            let mut dots = std::vec![f32::NAN; rows];
            k.dot_rows_f16(&v, q, &mut dots).unwrap();
            let mut out = q.to_vec();
            k.axpy_rows_f16(&w, &v, &mut out).unwrap();
            let mut want = q.to_vec();
            for r in 0..rows {
                let row = &v[r * d..(r + 1) * d];
                prop_assert_eq!(dots[r].to_bits(), k.dot_f16(row, q).unwrap().to_bits());
                k.axpy_f16(w[r], row, &mut want).unwrap();
            }
            let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&out), bits(&want), "{:?}", k.isa());
            prop_assert!(k.dot_rows_f16(&v, q, &mut [0.0; 7]).is_err() || rows * d == 7 * d);
        }
    }
}

proptest! {
    /// Strided f32 rows give exactly what one `dot_f32` per row gives, on every ISA; rows past
    /// the end of `k` are an error, not a panic.
    #[test]
    fn strided_f32_rows_equal_one_call_per_row(
        d in 0usize..40,
        extra in 0usize..9,
        rows in 0usize..6,
        seed in values(6 * 48 + 40),
    ) {
        let stride = d + extra;
        let k_len = if rows == 0 { 0 } else { (rows - 1) * stride + d };
        let k = &seed[..k_len];
        let q = &seed[6 * 48..6 * 48 + d];
        for kern in available() {
            let mut dots = std::vec![f32::NAN; rows];
            kern.dot_rows_f32(k, stride, q, &mut dots).unwrap();
            for r in 0..rows {
                let want = kern.dot_f32(&k[r * stride..r * stride + d], q).unwrap();
                prop_assert_eq!(dots[r].to_bits(), want.to_bits(), "{:?}", kern.isa());
            }
            let mut one_more = std::vec![0.0; rows + 1];
            let fits = rows * stride + d <= k_len;
            prop_assert_eq!(kern.dot_rows_f32(k, stride, q, &mut one_more).is_ok(), fits);
        }
    }

    /// Weighted sums of strided f32 rows equal one `axpy_f32` per row in order, bit for bit,
    /// on every ISA (widths around the 8- and 64-lane runs); rows past the end are an error.
    #[test]
    fn strided_f32_axpy_rows_equal_one_call_per_row(
        d in 0usize..80,
        extra in 0usize..9,
        rows in 0usize..6,
        seed in values(6 * 88 + 80 + 6),
    ) {
        let stride = d + extra;
        let v_len = if rows == 0 { 0 } else { (rows - 1) * stride + d };
        let v = &seed[..v_len];
        let start = &seed[6 * 88..6 * 88 + d];
        let w: Vec<f32> = seed[6 * 88 + 80..6 * 88 + 80 + rows].iter().map(|x| x / 7.0).collect();
        for kern in available() {
            let mut out = start.to_vec();
            kern.axpy_rows_f32(&w, v, stride, &mut out).unwrap();
            let mut want = start.to_vec();
            for r in 0..rows {
                kern.axpy_f32(w[r], &v[r * stride..r * stride + d], &mut want).unwrap();
            }
            let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&out), bits(&want), "{:?}", kern.isa());
            let mut w_more = w.clone();
            w_more.push(1.0);
            let fits = rows * stride + d <= v_len;
            prop_assert_eq!(kern.axpy_rows_f32(&w_more, v, stride, &mut out).is_ok(), fits);
        }
    }
}

/// f16 specials (subnormals, infinities, NaN, signed zero) widen exactly on every ISA.
#[test]
fn f16_specials_widen_exactly() {
    let bits: Vec<u16> = [
        0x0000, 0x8000, 0x0001, 0x83ff, 0x0400, 0x7bff, 0xfbff, 0x3c00, 0xbc00,
    ]
    .into_iter()
    .cycle()
    .take(16)
    .collect();
    for k in available() {
        for (i, &b) in bits.iter().enumerate() {
            let mut q = [0.0f32; 16];
            q[i] = 1.0;
            let want = f16::from_bits(b).to_f32();
            assert_eq!(k.dot_f16(&bits, &q).unwrap(), want, "{:?} {b:#x}", k.isa());
            let mut out = [0.0f32; 16];
            k.axpy_f16(1.0, &bits, &mut out).unwrap();
            assert_eq!(out[i], want, "{:?} {b:#x}", k.isa());
        }
        let inf = [0x7c00u16; 8];
        assert_eq!(k.dot_f16(&inf, &[1.0; 8]).unwrap(), f32::INFINITY);
        assert!(k.dot_f16(&[0x7e00u16; 8], &[1.0; 8]).unwrap().is_nan());
    }
}

#[test]
fn length_mismatches_are_errors() {
    for k in available() {
        assert!(k.dot_f32(&[1.0; 3], &[1.0; 4]).is_err());
        assert!(k.dot_u4(&[1; 3], &[1.0; 5]).is_err());
        assert!(k.axpy_u8(1.0, &[1; 3], &mut [0.0; 4]).is_err());
        assert!(k.axpy_u4(1.0, &[1; 2], &mut [0.0; 4]).is_ok());
    }
}
