//! RWKV-6 decode and prefill throughput on random ternary (tq2_0) models: a small one
//! (6 × 512, vocabulary 4096) always, and the 1.6B shape (24 × 2048, F 7168, vocabulary 65536,
//! ~0.9 GB in memory) when `GOLDCREST_BENCH_LARGE=1`. Speed does not depend on weight values,
//! so random codes stand in for a trained model. Throughput is reported in tokens.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use goldcrest::core::arena::Arena;
use goldcrest::core::models::rwkv6::{Rwkv6, Scratch, State};
use goldcrest::core::quant::Format;
use goldcrest::std::convert::{Converted, Tensor};

struct Shape {
    label: &'static str,
    n_layer: usize,
    n_embd: usize,
    dim_ffn: usize,
    vocab: usize,
}

/// xorshift64*: fast deterministic filler.
struct Fill(u64);
impl Fill {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn small(&mut self, scale: f32) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * scale
    }
}

fn floats(fill: &mut Fill, n: usize, scale: f32, offset: f32, format: Format) -> Vec<u8> {
    let values = (0..n).map(|_| offset + fill.small(scale));
    match format {
        Format::F16 => values
            .flat_map(|v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        _ => values.flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// Random ternary rows in ggml TQ2_0 layout: codes 0..=2 (weights -1, 0, +1), scale 1/sqrt(cols).
fn ternary(fill: &mut Fill, rows: usize, cols: usize) -> Vec<u8> {
    let blocks = rows * cols.div_ceil(256);
    let d = half::f16::from_f32(1.0 / (cols as f32).sqrt()).to_le_bytes();
    let mut out = Vec::with_capacity(blocks * 66);
    for _ in 0..blocks {
        let mut r = fill.next();
        for i in 0..64 {
            if i % 8 == 0 {
                r = fill.next();
            }
            let mut byte = 0u8;
            for k in 0..4 {
                byte |= ((((r >> (8 * (i % 8) + 2 * k)) & 3) % 3) as u8) << (2 * k);
            }
            out.push(byte);
        }
        out.extend_from_slice(&d);
    }
    out
}

fn model(s: &Shape) -> Converted {
    let (c, f, v) = (s.n_embd, s.dim_ffn, s.vocab);
    let (n, dm, dd) = (64, 32, 64);
    let mut fill = Fill(0x9E37_79B9_7F4A_7C15);
    let mut m = Converted::default();
    let mut put = |name: String, format: Format, shape: Vec<u64>, bytes: Vec<u8>| {
        m.tensors.insert(name, Tensor::new(format, shape, &bytes));
    };
    let cu = c as u64;
    put(
        "emb.weight".into(),
        Format::F16,
        vec![v as u64, cu],
        floats(&mut fill, v * c, 1.0, 0.0, Format::F16),
    );
    put(
        "head.weight".into(),
        Format::F16,
        vec![v as u64, cu],
        floats(&mut fill, v * c, 0.05, 0.0, Format::F16),
    );
    for norm in ["blocks.0.ln0", "ln_out"] {
        put(
            format!("{norm}.weight"),
            Format::F32,
            vec![cu],
            floats(&mut fill, c, 0.1, 1.0, Format::F32),
        );
        put(
            format!("{norm}.bias"),
            Format::F32,
            vec![cu],
            floats(&mut fill, c, 0.1, 0.0, Format::F32),
        );
    }
    for i in 0..s.n_layer {
        let b = format!("blocks.{i}.");
        for norm in ["ln1", "ln2", "att.ln_x"] {
            put(
                format!("{b}{norm}.weight"),
                Format::F32,
                vec![cu],
                floats(&mut fill, c, 0.1, 1.0, Format::F32),
            );
            put(
                format!("{b}{norm}.bias"),
                Format::F32,
                vec![cu],
                floats(&mut fill, c, 0.1, 0.0, Format::F32),
            );
        }
        for mix in [
            "att.time_maa_x",
            "att.time_maa_w",
            "att.time_maa_k",
            "att.time_maa_v",
            "att.time_maa_r",
            "att.time_maa_g",
            "ffn.time_maa_k",
            "ffn.time_maa_r",
        ] {
            put(
                format!("{b}{mix}"),
                Format::F32,
                vec![1, 1, cu],
                floats(&mut fill, c, 0.5, 0.5, Format::F32),
            );
        }
        put(
            format!("{b}att.time_decay"),
            Format::F32,
            vec![1, 1, cu],
            floats(&mut fill, c, 3.0, -2.0, Format::F32),
        );
        put(
            format!("{b}att.time_faaaa"),
            Format::F32,
            vec![(c / n) as u64, n as u64],
            floats(&mut fill, c, 0.5, 0.0, Format::F32),
        );
        put(
            format!("{b}att.time_maa_w1"),
            Format::F32,
            vec![cu, 5 * dm as u64],
            floats(&mut fill, c * 5 * dm, 0.01, 0.0, Format::F32),
        );
        put(
            format!("{b}att.time_maa_w2"),
            Format::F32,
            vec![5, dm as u64, cu],
            floats(&mut fill, 5 * dm * c, 0.05, 0.0, Format::F32),
        );
        put(
            format!("{b}att.time_decay_w1"),
            Format::F32,
            vec![cu, dd as u64],
            floats(&mut fill, c * dd, 0.01, 0.0, Format::F32),
        );
        put(
            format!("{b}att.time_decay_w2"),
            Format::F32,
            vec![dd as u64, cu],
            floats(&mut fill, dd * c, 0.05, 0.0, Format::F32),
        );
        for lin in [
            "att.receptance",
            "att.key",
            "att.value",
            "att.gate",
            "att.output",
            "ffn.receptance",
        ] {
            put(
                format!("{b}{lin}.weight"),
                Format::Tq2_0,
                vec![cu, cu],
                ternary(&mut fill, c, c),
            );
        }
        put(
            format!("{b}ffn.key.weight"),
            Format::Tq2_0,
            vec![f as u64, cu],
            ternary(&mut fill, f, c),
        );
        put(
            format!("{b}ffn.value.weight"),
            Format::Tq2_0,
            vec![cu, f as u64],
            ternary(&mut fill, c, f),
        );
    }
    for (k, val) in [
        ("goldcrest.format_version", "1.0".to_string()),
        ("goldcrest.arch", "rwkv6".to_string()),
        ("goldcrest.rwkv6.n_layer", s.n_layer.to_string()),
        ("goldcrest.rwkv6.n_embd", c.to_string()),
        ("goldcrest.rwkv6.head_size", n.to_string()),
        ("goldcrest.rwkv6.dim_ffn", f.to_string()),
        ("goldcrest.rwkv6.vocab_size", v.to_string()),
    ] {
        m.metadata.insert(k.to_string(), val);
    }
    m
}

fn bench_shape(c: &mut Criterion, s: &Shape, prompt: usize) {
    let weights = model(s);
    let src = &weights;
    let mut model_layers = vec![None; 32];
    let model = Rwkv6::load(&src, &mut model_layers, goldcrest::std::kernels::detect())
        .expect("bench model loads");
    let plan = model.memory_plan(prompt).expect("plan");
    let mut state_buf = vec![0u8; plan.bytes_unaligned()];
    let mut scratch_buf = vec![0u8; plan.bytes_unaligned()];
    let mut sa = Arena::new_unaligned(&mut state_buf);
    let mut state = State::carve(model.config(), &mut sa).expect("state");
    let mut sb = Arena::new_unaligned(&mut scratch_buf);
    let mut scratch = Scratch::carve(model.config(), prompt, &mut sb).expect("scratch");
    let mut logits = vec![0.0f32; s.vocab];
    let tokens: Vec<u32> = (0..prompt as u32)
        .map(|t| (t * 7919) % s.vocab as u32)
        .collect();

    let mut group = c.benchmark_group(format!("rwkv6_{}_tq2_0", s.label));
    group.sample_size(10);
    group.throughput(Throughput::Elements(1));
    group.bench_function("decode", |b| {
        let mut t = 0u32;
        b.iter(|| {
            t = (t + 1) % s.vocab as u32;
            model
                .step(&mut state, &mut scratch, black_box(t), &mut logits)
                .expect("step");
        })
    });
    group.throughput(Throughput::Elements(prompt as u64));
    group.bench_function(format!("prefill_{prompt}"), |b| {
        b.iter(|| {
            state.reset();
            model
                .prefill(&mut state, &mut scratch, black_box(&tokens), &mut logits)
                .expect("prefill");
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    let small = Shape {
        label: "small_6x512",
        n_layer: 6,
        n_embd: 512,
        dim_ffn: 1792,
        vocab: 4096,
    };
    bench_shape(c, &small, 64);
    if std::env::var("GOLDCREST_BENCH_LARGE").is_ok_and(|v| v == "1") {
        let large = Shape {
            label: "1b6_24x2048",
            n_layer: 24,
            n_embd: 2048,
            dim_ffn: 7168,
            vocab: 65536,
        };
        bench_shape(c, &large, 64);
    }
}

criterion_group!(rwkv6, benches);
criterion_main!(rwkv6);
