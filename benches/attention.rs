//! Attention over a KV cache, per cache form: `scores/<form>/<isa>` computes `q·k` for 1024
//! cached rows of 64 values (one query head at position 1024), `values/<form>/<isa>` adds the
//! 1024 weighted value rows. Throughput is in cached values read. `scalar` is the portable
//! reference, `simd` what `goldcrest_std::kernels::detect()` picks.
//!
//! Wall time, one thread; state the machine load (`uptime`) with the figures.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use goldcrest::core::kernels::Kernels;
use half::f16;
use std::hint::black_box;

const ROWS: usize = 1024;
const HEAD: usize = 64;

fn bench(c: &mut Criterion) {
    let values: Vec<f32> = (0..ROWS * HEAD)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let halves: Vec<u16> = values.iter().map(|&v| f16::from_f32(v).to_bits()).collect();
    let bytes: Vec<u8> = (0..ROWS * HEAD).map(|i| (i * 31 % 251) as u8).collect();
    let q: Vec<f32> = values[..HEAD].to_vec();
    let mut out = vec![0.0f32; HEAD];
    let mut scores = vec![0.0f32; ROWS];
    for (isa, k) in [
        ("scalar", Kernels::scalar()),
        ("simd", goldcrest::std::kernels::detect()),
    ] {
        let mut g = c.benchmark_group("scores");
        g.throughput(Throughput::Elements((ROWS * HEAD) as u64));
        g.bench_function(BenchmarkId::new("f32", isa), |b| {
            b.iter(|| {
                for (s, row) in scores.iter_mut().zip(values.chunks_exact(HEAD)) {
                    *s = k.dot_f32(row, &q).unwrap();
                }
                black_box(&scores);
            })
        });
        g.bench_function(BenchmarkId::new("f16", isa), |b| {
            b.iter(|| {
                for (s, row) in scores.iter_mut().zip(halves.chunks_exact(HEAD)) {
                    *s = k.dot_f16(row, &q).unwrap();
                }
                black_box(&scores);
            })
        });
        g.bench_function(BenchmarkId::new("int8", isa), |b| {
            b.iter(|| {
                for (s, row) in scores.iter_mut().zip(bytes.chunks_exact(HEAD)) {
                    *s = k.dot_u8(row, &q).unwrap();
                }
                black_box(&scores);
            })
        });
        g.bench_function(BenchmarkId::new("int4", isa), |b| {
            b.iter(|| {
                for (s, row) in scores.iter_mut().zip(bytes.chunks_exact(HEAD / 2)) {
                    *s = k.dot_u4(row, &q).unwrap();
                }
                black_box(&scores);
            })
        });
        g.finish();
        let mut g = c.benchmark_group("values");
        g.throughput(Throughput::Elements((ROWS * HEAD) as u64));
        g.bench_function(BenchmarkId::new("f32", isa), |b| {
            b.iter(|| {
                for row in values.chunks_exact(HEAD) {
                    k.axpy_f32(1e-3, row, &mut out).unwrap();
                }
                black_box(&out);
            })
        });
        g.bench_function(BenchmarkId::new("f16", isa), |b| {
            b.iter(|| {
                for row in halves.chunks_exact(HEAD) {
                    k.axpy_f16(1e-3, row, &mut out).unwrap();
                }
                black_box(&out);
            })
        });
        g.bench_function(BenchmarkId::new("int8", isa), |b| {
            b.iter(|| {
                for row in bytes.chunks_exact(HEAD) {
                    k.axpy_u8(1e-3, row, &mut out).unwrap();
                }
                black_box(&out);
            })
        });
        g.bench_function(BenchmarkId::new("int4", isa), |b| {
            b.iter(|| {
                for row in bytes.chunks_exact(HEAD / 2) {
                    k.axpy_u4(1e-3, row, &mut out).unwrap();
                }
                black_box(&out);
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
