//! Encoding throughput on one text file, for `tools/bench/tokenize_bench.py`, which runs this
//! beside tiktoken and HF tokenizers in the same session.
//!
//! Usage: `tokenize_throughput TOKENIZER TEXT_FILE ROUNDS IDS_OUT [--threads]`. Encodes the whole
//! file as one text (ordinary encoding: special-token text stays plain) `ROUNDS` times and
//! prints JSON with the best MB/s; writes the ids (u32 little-endian) to `IDS_OUT` so the script
//! can check they equal tiktoken's. `--threads` instead encodes the file's lines as a batch on
//! all cores.

use goldcrest::std::tokenize::{Scratch, Tokenizer};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        return Err(
            "usage: tokenize_throughput TOKENIZER TEXT_FILE ROUNDS IDS_OUT [--threads]".into(),
        );
    }
    let load = Instant::now();
    let tok = Tokenizer::from_path(args[1].as_ref())?;
    let load_s = load.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&args[2])?;
    let rounds: usize = args[3].parse()?;
    let threads = args.get(5).is_some_and(|a| a == "--threads");
    let mb = text.len() as f64 / 1e6;
    let mut best = f64::INFINITY;
    let mut ids = Vec::with_capacity(text.len() / 3);
    let mut scratch = Scratch::default();
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    for _ in 0..rounds {
        ids.clear();
        let start = Instant::now();
        if threads {
            let batch = tok.encode_batch(&lines, false);
            ids.extend(batch.into_iter().flatten());
        } else {
            tok.encode_into(&text, false, &mut ids, &mut scratch);
        }
        best = best.min(start.elapsed().as_secs_f64());
    }
    let bytes: Vec<u8> = ids.iter().flat_map(|i| i.to_le_bytes()).collect();
    std::fs::write(&args[4], bytes)?;
    println!(
        "{{\"engine\": \"goldcrest{}\", \"mb_per_s\": {:.3}, \"tokens\": {}, \"load_s\": {:.3}}}",
        if threads { "-batch" } else { "" },
        mb / best,
        ids.len(),
        load_s
    );
    Ok(())
}
