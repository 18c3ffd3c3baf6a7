//! Decoder speed on a TriLM-99M-shaped random model (hidden 512, 16 layers, 8 heads, ffn 1280,
//! vocabulary 50304, untied f16 embedding and head), with the block linear layers in each
//! weight format: `prefill/<format>` runs 64 prompt tokens (throughput = tokens), and
//! `decode/<format>` one cached token at position 64 (throughput = tokens); ternary formats
//! also with int8 activations (`<format>-int8acts`).
//!
//! Wall time, one thread; state the machine load (`uptime`) with the figures. Kernels come
//! from `goldcrest_std::kernels::detect()`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use goldcrest::core::arena::Arena;
use goldcrest::core::format::SafeTensors;
use goldcrest::core::kernels::ActScale;
use goldcrest::core::models::decoder::{Decoder, KvCache, KvFormat, Scratch, Weights};
use goldcrest::core::quant::Format;
use goldcrest::std::write::ModelWriter;
use half::f16;
use std::hint::black_box;
use std::time::Duration;

const HIDDEN: usize = 512;
const LAYERS: usize = 16;
const HEADS: usize = 8;
const FFN: usize = 1280;
const VOCAB: usize = 50304;
const PROMPT: usize = 64;

/// A small deterministic generator (xorshift), so the bench needs no extra dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn normal_ish(&mut self) -> f32 {
        (0..4)
            .map(|_| (self.next() % 1000) as f32 / 1000.0 - 0.5)
            .sum::<f32>()
            * 0.5
    }
}

fn model(format: Format) -> Vec<u64> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut w = ModelWriter::new();
    w.arch("llama").unwrap();
    for (k, v) in [
        ("n_layer", LAYERS.to_string()),
        ("hidden_size", HIDDEN.to_string()),
        ("intermediate_size", FFN.to_string()),
        ("n_head", HEADS.to_string()),
        ("n_kv_head", HEADS.to_string()),
        ("head_dim", (HIDDEN / HEADS).to_string()),
        ("vocab_size", VOCAB.to_string()),
        ("rope_theta", "10000".into()),
        ("rms_norm_eps", "0.00001".into()),
        ("qkv_bias", "false".into()),
        ("o_bias", "false".into()),
        ("mlp_bias", "false".into()),
        ("tie_word_embeddings", "false".into()),
        ("context_length", "2048".into()),
    ] {
        w.hyperparameter(k, v).unwrap();
    }
    let mut table = |w: &mut ModelWriter, name: &str| {
        let values: Vec<f16> = (0..VOCAB * HIDDEN)
            .map(|_| f16::from_f32(rng.normal_ish() * 0.05))
            .collect();
        w.f16(name, &[VOCAB, HIDDEN], &values).unwrap();
    };
    table(&mut w, "model.embed_tokens.weight");
    table(&mut w, "lm_head.weight");
    let mut rng = Rng(7);
    w.f32("model.norm.weight", &[HIDDEN], &vec![1.0; HIDDEN])
        .unwrap();
    for l in 0..LAYERS {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        w.f32(&p("input_layernorm.weight"), &[HIDDEN], &vec![1.0; HIDDEN])
            .unwrap();
        w.f32(
            &p("post_attention_layernorm.weight"),
            &[HIDDEN],
            &vec![1.0; HIDDEN],
        )
        .unwrap();
        for (name, rows, cols) in [
            ("self_attn.q_proj.weight", HIDDEN, HIDDEN),
            ("self_attn.k_proj.weight", HIDDEN, HIDDEN),
            ("self_attn.v_proj.weight", HIDDEN, HIDDEN),
            ("self_attn.o_proj.weight", HIDDEN, HIDDEN),
            ("mlp.gate_proj.weight", FFN, HIDDEN),
            ("mlp.up_proj.weight", FFN, HIDDEN),
            ("mlp.down_proj.weight", HIDDEN, FFN),
        ] {
            let values: Vec<f32> = (0..rows * cols).map(|_| rng.normal_ish() * 0.05).collect();
            let bytes =
                goldcrest::alloc::quantize::quantize(name, &values, rows, cols, format).unwrap();
            if format.is_blocked() {
                w.packed(&p(name), format, rows, cols, bytes).unwrap();
            } else {
                w.plain(&p(name), format, &[rows, cols], bytes).unwrap();
            }
        }
    }
    let bytes = w.to_bytes().unwrap();
    let mut words = vec![0u64; bytes.len().div_ceil(8) + 1];
    bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(&bytes);
    *words.last_mut().unwrap() = bytes.len() as u64;
    words
}

fn bench(c: &mut Criterion) {
    let kernels = goldcrest::std::kernels::detect();
    let mut group = c.benchmark_group("decoder-trilm99m");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for format in [
        Format::Tq2_0,
        Format::Tq1_0,
        Format::Q8_0,
        Format::Q4_0,
        Format::F16,
    ] {
        let words = model(format);
        let (len, data) = words.split_last().unwrap();
        let st =
            SafeTensors::parse(&bytemuck::cast_slice::<u64, u8>(data)[..*len as usize]).unwrap();
        let mut layers = vec![None; LAYERS];
        let float_decoder = Decoder::new(Weights::load(&st, &mut layers).unwrap(), kernels);
        let ternary = matches!(format, Format::Tq2_0 | Format::Tq1_0);
        for (decoder, label) in [
            (float_decoder, format.name().to_string()),
            (
                float_decoder.with_int8_activations(ActScale::PerBlock),
                format!("{}-int8acts", format.name()),
            ),
        ]
        .into_iter()
        .take(if ternary { 2 } else { 1 })
        {
            let cfg = *decoder.config();
            let context = PROMPT + 1;
            let plan = decoder.memory_plan(context, KvFormat::F16, PROMPT).unwrap();
            let mut ram = vec![0u8; plan.bytes_unaligned()];
            let mut arena = Arena::new_unaligned(&mut ram);
            let mut cache = KvCache::carve(&cfg, context, KvFormat::F16, &mut arena).unwrap();
            let mut scratch = Scratch::carve(&cfg, PROMPT, &mut arena).unwrap();
            let prompt: Vec<u32> = (0..PROMPT as u32).map(|i| i * 7 % VOCAB as u32).collect();
            let mut logits = vec![0.0f32; VOCAB];
            group.throughput(Throughput::Elements(PROMPT as u64));
            group.bench_function(BenchmarkId::new("prefill", &label), |b| {
                b.iter(|| {
                    cache.clear();
                    decoder
                        .forward(&mut cache, &mut scratch, black_box(&prompt), &mut logits)
                        .unwrap();
                })
            });
            group.throughput(Throughput::Elements(1));
            group.bench_function(BenchmarkId::new("decode", &label), |b| {
                b.iter(|| {
                    cache.truncate(PROMPT).unwrap();
                    decoder
                        .forward(&mut cache, &mut scratch, black_box(&[42]), &mut logits)
                        .unwrap();
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
