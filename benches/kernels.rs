//! Kernel throughput against this machine's roofline.
//!
//! - `bandwidth/stream-read`: a streaming read of 256 MiB (the memory roofline; bytes/s).
//! - `gemv/<shape>/<format>-<acts>`: decode, one token; throughput = weight bytes per call,
//!   so criterion's bytes/s divided by the stream-read figure is the fraction of bandwidth.
//! - `gemm/<shape>/<format>-<acts>`: prefill of 64 tokens; throughput = multiply-adds per call
//!   (criterion's "elements/s" = MAC/s), to compare with the int8 SIMD peak.
//! - `qwen2-prefill-<tokens>/<shape>/<format>-i8blk`: `q8_0`/`q4_0` prefill kernels alone at
//!   Qwen2-0.5B's shapes, 64 and 512 tokens (MAC/s).
//!
//! Time is this thread's **CPU time** (from `/proc/thread-self/schedstat`; wall time where
//! that is unavailable), so that other processes on a shared machine do not inflate it; they
//! still share the memory bandwidth, so state the load (`uptime`) with the figures.
//!
//! `tools/bench/roofline.py` turns criterion's JSON into the table in `docs/performance.md`.
//! Kernels come from `goldcrest_std::kernels::detect()`; set `GOLDCREST_KERNELS=scalar` (the
//! reference) or `GOLDCREST_KERNELS=avx2` (the AVX2 path) to measure those instead.

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use goldcrest::alloc::quantize;
use goldcrest::core::kernels::{ActScale, Int8Acts, Kernels};
use goldcrest::core::quant::{Format, Matrix};
use std::hint::black_box;
use std::time::Duration;

/// Nanoseconds this thread has run on a CPU, or wall-clock nanoseconds without procfs.
fn cpu_ns(origin: std::time::Instant) -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| origin.elapsed().as_nanos() as u64)
}

/// Criterion measurement: thread CPU time in nanoseconds.
struct ThreadCpu {
    origin: std::time::Instant,
}

impl Measurement for ThreadCpu {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        cpu_ns(self.origin)
    }
    fn end(&self, start: u64) -> u64 {
        cpu_ns(self.origin).saturating_sub(start)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &Nanos
    }
}

struct Nanos;

impl ValueFormatter for Nanos {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (div, unit) = match typical {
            t if t < 1e3 => (1.0, "ns"),
            t if t < 1e6 => (1e3, "µs"),
            t if t < 1e9 => (1e6, "ms"),
            _ => (1e9, "s"),
        };
        values.iter_mut().for_each(|v| *v /= div);
        unit
    }
    fn scale_throughputs(&self, _typical: f64, t: &Throughput, values: &mut [f64]) -> &'static str {
        let (per_call, unit) = match t {
            Throughput::Bytes(b) | Throughput::BytesDecimal(b) => (*b as f64, "GB/s"),
            Throughput::Elements(e) => (*e as f64, "Gelem/s"),
            _ => (1.0, "G/s"),
        };
        // per_call units per `v` ns = per_call / v G units per second.
        values.iter_mut().for_each(|v| *v = per_call / *v);
        unit
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

const SHAPES: [(usize, usize); 4] = [(2048, 2048), (2048, 5632), (5632, 2048), (4096, 4096)];
const PREFILL_TOKENS: usize = 64;
/// Bytes of weights a decode benchmark cycles through: by default four times this machine's
/// 32 MiB L3; `GOLDCREST_BENCH_WORKING_SET_MIB=0` keeps one copy (cache-resident when it fits).
fn working_set() -> usize {
    std::env::var("GOLDCREST_BENCH_WORKING_SET_MIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(128)
        << 20
}

/// The kernels under test: detected by default; `GOLDCREST_KERNELS=scalar` or `=avx2` (the
/// AVX2 path on an AVX-512 machine, as on CPUs without AVX-512) to compare.
fn kernels() -> Kernels {
    match std::env::var("GOLDCREST_KERNELS").as_deref() {
        Ok("scalar") => Kernels::scalar(),
        Ok("avx2") => {
            let f = goldcrest::std::kernels::cpu_features();
            let avx2_only = goldcrest::core::kernels::CpuFeatures {
                avx2: f.avx2,
                fma: f.fma,
                f16c: f.f16c,
                ..Default::default()
            };
            // SAFETY: a subset of the features detected on this CPU.
            #[allow(unsafe_code)]
            unsafe {
                Kernels::from_cpu_features(avx2_only)
            }
        }
        _ => goldcrest::std::kernels::detect(),
    }
}

/// Deterministic pseudo-random values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut g = seed | 1;
    (0..n)
        .map(|_| {
            g ^= g << 13;
            g ^= g >> 7;
            g ^= g << 17;
            (g >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// Weights stored with at least 4-byte alignment (for f32 views).
fn aligned(bytes: Vec<u8>) -> Vec<u32> {
    let mut v = vec![0u32; bytes.len().div_ceil(4)];
    bytemuck::cast_slice_mut::<u32, u8>(&mut v)[..bytes.len()].copy_from_slice(&bytes);
    v
}

fn stream_read(c: &mut Criterion<ThreadCpu>) {
    let words = vec![1u64; 32 << 20];
    let mut g = c.benchmark_group("bandwidth");
    g.throughput(Throughput::Bytes((words.len() * 8) as u64));
    g.bench_function("stream-read", |b| {
        b.iter(|| {
            // Four independent sums so the loop is load-bound, not add-latency-bound.
            let mut s = [0u64; 4];
            for ch in black_box(&words).chunks_exact(4) {
                for k in 0..4 {
                    s[k] = s[k].wrapping_add(ch[k]);
                }
            }
            black_box(s)
        })
    });
    g.finish();
}

struct Case {
    format: Format,
    bytes: Vec<u32>,
    len: usize,
}

fn cases(rows: usize, cols: usize) -> Vec<Case> {
    let w = values(rows * cols, (rows * 31 + cols) as u64);
    // Dense i8 stores integers: the same values scaled to -127..=127.
    let w_int: Vec<f32> = w.iter().map(|v| (v * 127.0).round()).collect();
    [
        Format::Tq2_0,
        Format::Tq1_0,
        Format::F32,
        Format::F16,
        Format::Q8_0,
        Format::Q4_0,
        Format::I8,
    ]
    .into_iter()
    .map(|format| {
        let src = if format == Format::I8 { &w_int } else { &w };
        let b = quantize::quantize("w", src, rows, cols, format).expect("quantize");
        let len = b.len();
        Case {
            format,
            bytes: aligned(b),
            len,
        }
    })
    .collect()
}

fn run(c: &mut Criterion<ThreadCpu>, group: &str, tokens: usize) {
    let k = kernels();
    let mut g = c.benchmark_group(group);
    for (rows, cols) in SHAPES {
        let shape = format!("{rows}x{cols}");
        let x = values(tokens * cols, 7);
        let mut y = vec![0.0f32; tokens * rows];
        for case in cases(rows, cols) {
            // Decode cycles through enough copies of the weights to overflow the caches, as a
            // model's layers do; prefill reuses one copy (it is compute-bound).
            let copies = if tokens == 1 {
                working_set().div_ceil(case.len).max(1)
            } else {
                1
            };
            let stores: Vec<Vec<u32>> = (0..copies).map(|_| case.bytes.clone()).collect();
            let mats: Vec<Matrix> = stores
                .iter()
                .map(|s| {
                    let data = &bytemuck::cast_slice::<u32, u8>(s)[..case.len];
                    Matrix::new("w", case.format, rows, cols, data).expect("matrix")
                })
                .collect();
            let mut next = 0usize;
            let mut pick = move || {
                next = (next + 1) % mats.len();
                mats[next]
            };
            let per_call = if tokens == 1 {
                Throughput::Bytes(case.len as u64)
            } else {
                Throughput::Elements((rows * cols * tokens) as u64)
            };
            g.throughput(per_call);
            let id = format!("{}-f32", case.format.name());
            g.bench_function(BenchmarkId::new(&shape, id), |b| {
                b.iter(|| {
                    k.gemm(&pick(), black_box(&x), tokens, &mut y)
                        .expect("gemm")
                })
            });
            if Kernels::has_int8_path(case.format) {
                for (mode, tag) in [(ActScale::PerToken, "i8tok"), (ActScale::PerBlock, "i8blk")] {
                    let need = Int8Acts::scratch_bytes(tokens, cols, mode).expect("size");
                    let mut scratch = vec![0u8; need];
                    let id = format!("{}-{tag}", case.format.name());
                    // Activation quantization is part of the measured work.
                    g.bench_function(BenchmarkId::new(&shape, id), |b| {
                        b.iter(|| {
                            let acts = k
                                .quantize_acts(black_box(&x), tokens, cols, mode, &mut scratch)
                                .expect("quantize");
                            k.gemm_i8(&pick(), &acts, &mut y).expect("gemm_i8")
                        })
                    });
                }
            }
        }
    }
    g.finish();
}

fn gemv(c: &mut Criterion<ThreadCpu>) {
    run(c, "gemv", 1);
}

fn gemm(c: &mut Criterion<ThreadCpu>) {
    run(c, "gemm", PREFILL_TOKENS);
}

/// Qwen2-0.5B's linear layers (rows × cols: q/o 896×896, gate/up 4864×896, down 896×4864)
/// in `q8_0`/`q4_0` against int8 activations with per-256 scales (what `--int8-acts` runs),
/// prefill of 64 and 512 tokens. The activations are quantized once outside the timed loop,
/// so this is the kernel alone; throughput = multiply-adds per call.
fn qwen2_prefill(c: &mut Criterion<ThreadCpu>) {
    let k = kernels();
    let mode = ActScale::PerBlock;
    for tokens in [64usize, 512] {
        let mut g = c.benchmark_group(format!("qwen2-prefill-{tokens}"));
        for (rows, cols) in [(896usize, 896usize), (4864, 896), (896, 4864)] {
            let x = values(tokens * cols, 7);
            let mut y = vec![0.0f32; tokens * rows];
            let mut scratch = vec![0u8; Int8Acts::scratch_bytes(tokens, cols, mode).expect("size")];
            let acts = k
                .quantize_acts(&x, tokens, cols, mode, &mut scratch)
                .expect("quantize");
            let w = values(rows * cols, (rows * 31 + cols) as u64);
            for format in [Format::Q8_0, Format::Q4_0] {
                let b = quantize::quantize("w", &w, rows, cols, format).expect("quantize");
                let len = b.len();
                let store = aligned(b);
                let data = &bytemuck::cast_slice::<u32, u8>(&store)[..len];
                let m = Matrix::new("w", format, rows, cols, data).expect("matrix");
                g.throughput(Throughput::Elements((rows * cols * tokens) as u64));
                let id = format!("{}-i8blk", format.name());
                g.bench_function(BenchmarkId::new(format!("{rows}x{cols}"), id), |b| {
                    b.iter(|| k.gemm_i8(&m, black_box(&acts), &mut y).expect("gemm_i8"))
                });
            }
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .with_measurement(ThreadCpu { origin: std::time::Instant::now() })
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1500));
    targets = stream_read, gemv, gemm, qwen2_prefill
}
criterion_main!(benches);
