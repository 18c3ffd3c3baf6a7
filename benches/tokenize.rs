//! Encoding throughput (bytes/s) of the shipped vocabularies on the golden corpus, repeated to
//! about 1 MB. For the side-by-side comparison with tiktoken and HF tokenizers on a few MB of
//! real text, run tools/bench/tokenize_bench.py.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use goldcrest::std::tokenize::{Scratch, Tokenizer};
use std::hint::black_box;
use std::path::PathBuf;

fn corpus() -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let raw = std::fs::read(root.join("tests/fixtures/tokenizer/golden.json")).expect("fixture");
    let v: serde_json::Value = serde_json::from_slice(&raw).expect("json");
    let mut text = String::new();
    for row in v["rows"].as_array().expect("rows") {
        text.push_str(row["text"].as_str().expect("text"));
        text.push('\n');
    }
    let once = text.clone();
    while text.len() < 1 << 20 {
        text.push_str(&once);
    }
    text
}

fn bench(c: &mut Criterion) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let text = corpus();
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.sample_size(10);
    for (name, path) in [
        ("qwen2-tokenizer.json", "vocab/qwen2/tokenizer.json"),
        ("qwen2-tiktoken", "vocab/qwen2/qwen.tiktoken"),
        ("rwkv-world", "vocab/rwkv/rwkv_vocab_v20230424.txt"),
    ] {
        let tok = Tokenizer::from_path(&root.join(path)).expect("vocabulary loads");
        let mut ids = Vec::with_capacity(text.len());
        let mut scratch = Scratch::default();
        group.bench_function(name, |b| {
            b.iter(|| {
                ids.clear();
                tok.encode_into(black_box(&text), false, &mut ids, &mut scratch);
                black_box(ids.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
