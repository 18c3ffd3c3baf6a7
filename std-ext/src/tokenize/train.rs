//! Training a byte-level BPE vocabulary (Qwen2-style pre-tokenisation and NFC) from text, and
//! writing it as a HF `tokenizer.json` that both goldcrest and HF `tokenizers` load.
//!
//! Input is streamed in chunks cut after a line break, pre-tokenised and counted on all cores
//! (rayon), then merged. A cut can only change how a whitespace run that spans it is split, which
//! shifts piece counts negligibly; encoding itself never cuts.
//!
//! The merge loop is the standard one: count adjacent pairs over distinct pieces weighted by
//! frequency, repeatedly merge the most frequent pair (ties: the smaller `(left, right)` id pair),
//! and update only the pieces that contain it, using an index from pair to pieces and a max-heap
//! with lazy invalidation.

use super::bpe::FxMap;
use super::load::byte_to_char_table;
use super::pretokenize::Pattern;
use super::{Result, TokenizerError};
use rayon::prelude::*;
use std::collections::BinaryHeap;
use std::io::Read;

/// What to train.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// Final vocabulary size including the 256 byte tokens and the special tokens.
    pub vocab_size: u32,
    /// Pre-tokenisation pattern (Qwen2's by default).
    pub pattern: Pattern,
    /// NFC-normalise the input (and write an NFC normaliser).
    pub nfc: bool,
    /// Special tokens appended after the learned vocabulary, e.g. `<|endoftext|>`.
    pub special_tokens: Vec<String>,
    /// Pairs seen fewer times than this are never merged.
    pub min_frequency: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            vocab_size: 32_000,
            pattern: Pattern::Qwen2,
            nfc: true,
            special_tokens: vec!["<|endoftext|>".to_string()],
            min_frequency: 2,
        }
    }
}

/// Piece frequencies from a text stream.
#[derive(Default)]
pub struct PieceCounts {
    counts: FxMap<Box<[u8]>, u64>,
    /// Bytes of text read.
    pub bytes_read: u64,
}

const CHUNK: usize = 4 << 20;

impl PieceCounts {
    /// Reads all of `input` (UTF-8 text) and counts its pieces, in parallel per chunk.
    pub fn from_reader(mut input: impl Read, pattern: Pattern, nfc: bool) -> Result<PieceCounts> {
        let mut total = PieceCounts::default();
        let mut buf: Vec<u8> = Vec::with_capacity(CHUNK * 2);
        let mut offset = 0u64;
        loop {
            let start = buf.len();
            buf.resize(start + CHUNK, 0);
            let n = input.read(&mut buf[start..])?;
            buf.truncate(start + n);
            let at_end = n == 0;
            // Cut after the last line break (or take all at end of input).
            let cut = if at_end {
                buf.len()
            } else {
                match buf.iter().rposition(|&b| b == b'\n') {
                    Some(i) => i + 1,
                    None if buf.len() >= 64 * CHUNK => buf.len(),
                    None => continue,
                }
            };
            let valid = utf8_prefix(&buf[..cut]);
            if valid < cut && (at_end || valid + 4 < cut) {
                return Err(TokenizerError::InvalidUtf8 {
                    offset: (offset + valid as u64) as usize,
                });
            }
            let text = std::str::from_utf8(&buf[..valid]).unwrap_or_default();
            total.add_text(text, pattern, nfc);
            offset += valid as u64;
            buf.drain(..valid);
            if at_end {
                if !buf.is_empty() {
                    return Err(TokenizerError::InvalidUtf8 {
                        offset: offset as usize,
                    });
                }
                break;
            }
        }
        Ok(total)
    }

    /// Counts the pieces of `text` (split across threads at line breaks).
    pub fn add_text(&mut self, text: &str, pattern: Pattern, nfc: bool) {
        self.bytes_read += text.len() as u64;
        let parts = split_at_lines(text, rayon::current_num_threads().max(1) * 4);
        let maps: Vec<FxMap<Box<[u8]>, u64>> = parts
            .par_iter()
            .map(|part| {
                let normalized;
                let part: &str = if nfc {
                    normalized = super::nfc(part);
                    &normalized
                } else {
                    part
                };
                let mut m: FxMap<Box<[u8]>, u64> = FxMap::default();
                for piece in pattern.pieces(part) {
                    match m.get_mut(piece.as_bytes()) {
                        Some(c) => *c += 1,
                        None => {
                            m.insert(piece.as_bytes().into(), 1);
                        }
                    }
                }
                m
            })
            .collect();
        for m in maps {
            for (k, v) in m {
                *self.counts.entry(k).or_insert(0) += v;
            }
        }
    }

    /// Number of distinct pieces.
    pub fn distinct(&self) -> usize {
        self.counts.len()
    }
}

fn utf8_prefix(b: &[u8]) -> usize {
    match std::str::from_utf8(b) {
        Ok(_) => b.len(),
        Err(e) => e.valid_up_to(),
    }
}

fn split_at_lines(text: &str, parts: usize) -> Vec<&str> {
    let mut out = Vec::with_capacity(parts);
    let target = text.len() / parts + 1;
    let mut rest = text;
    while rest.len() > target {
        let cut = rest.as_bytes()[target..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |i| target + i + 1);
        let (a, b) = rest.split_at(cut);
        out.push(a);
        rest = b;
    }
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

/// A trained vocabulary: byte tokens 0–255 (id = byte value), then one token per merge, then
/// the special tokens.
pub struct TrainedBpe {
    /// Token bytes by id (regular tokens only).
    pub tokens: Vec<Vec<u8>>,
    /// Merges in order, as (left id, right id); merge *i* creates id 256 + *i*.
    pub merges: Vec<(u32, u32)>,
    /// Special tokens and their ids.
    pub special_tokens: Vec<(String, u32)>,
    /// The configuration trained with.
    pub pattern: Pattern,
    /// Whether the tokenizer normalises to NFC.
    pub nfc: bool,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct HeapEntry {
    count: u64,
    // Reverse order so that the smaller pair wins ties in the max-heap.
    pair: std::cmp::Reverse<(u32, u32)>,
}

/// Learns merges from piece counts until the vocabulary reaches `config.vocab_size` or no pair
/// is frequent enough.
pub fn train(counts: &PieceCounts, config: &TrainConfig) -> Result<TrainedBpe> {
    let n_special = config.special_tokens.len() as u32;
    if config.vocab_size < 256 + n_special {
        return Err(TokenizerError::Unsupported(format!(
            "vocabulary size {} is below 256 bytes + {n_special} special tokens",
            config.vocab_size
        )));
    }
    let target_merges = (config.vocab_size - 256 - n_special) as usize;
    let mut words: Vec<Vec<u32>> = Vec::with_capacity(counts.counts.len());
    let mut freqs: Vec<u64> = Vec::with_capacity(counts.counts.len());
    let mut sorted: Vec<(&Box<[u8]>, &u64)> = counts.counts.iter().collect();
    // Deterministic order regardless of hashing and thread timing.
    sorted.sort_unstable();
    for (piece, &c) in sorted {
        words.push(piece.iter().map(|&b| b as u32).collect());
        freqs.push(c);
    }
    let mut pair_counts: FxMap<(u32, u32), i64> = FxMap::default();
    let mut where_: FxMap<(u32, u32), Vec<u32>> = FxMap::default();
    for (wi, w) in words.iter().enumerate() {
        for p in w.windows(2) {
            let pair = (p[0], p[1]);
            *pair_counts.entry(pair).or_insert(0) += freqs[wi] as i64;
            let list = where_.entry(pair).or_default();
            if list.last() != Some(&(wi as u32)) {
                list.push(wi as u32);
            }
        }
    }
    let mut heap: BinaryHeap<HeapEntry> = pair_counts
        .iter()
        .map(|(&pair, &count)| HeapEntry {
            count: count as u64,
            pair: std::cmp::Reverse(pair),
        })
        .collect();
    let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    let mut merges = Vec::with_capacity(target_merges);
    let mut changed: FxMap<(u32, u32), i64> = FxMap::default();
    while merges.len() < target_merges {
        let Some(top) = heap.pop() else { break };
        let pair = top.pair.0;
        let current = pair_counts.get(&pair).copied().unwrap_or(0);
        if current as u64 != top.count {
            if current > 0 {
                heap.push(HeapEntry {
                    count: current as u64,
                    pair: top.pair,
                });
            }
            continue;
        }
        if (current as u64) < config.min_frequency.max(1) {
            break;
        }
        let new_id = tokens.len() as u32;
        let mut bytes = tokens[pair.0 as usize].clone();
        bytes.extend_from_slice(&tokens[pair.1 as usize]);
        tokens.push(bytes);
        merges.push(pair);
        changed.clear();
        let list = where_.remove(&pair).unwrap_or_default();
        for &wi in &list {
            let w = &mut words[wi as usize];
            let f = freqs[wi as usize] as i64;
            let mut i = 0;
            while i + 1 < w.len() {
                if w[i] == pair.0 && w[i + 1] == pair.1 {
                    if i > 0 {
                        *changed.entry((w[i - 1], w[i])).or_insert(0) -= f;
                        *changed.entry((w[i - 1], new_id)).or_insert(0) += f;
                    }
                    if i + 2 < w.len() {
                        *changed.entry((w[i + 1], w[i + 2])).or_insert(0) -= f;
                        *changed.entry((new_id, w[i + 2])).or_insert(0) += f;
                    }
                    *changed.entry(pair).or_insert(0) -= f;
                    w[i] = new_id;
                    w.remove(i + 1);
                }
                i += 1;
            }
            for p in w.windows(2) {
                if p[0] == new_id || p[1] == new_id {
                    let l = where_.entry((p[0], p[1])).or_default();
                    if l.last() != Some(&wi) {
                        l.push(wi);
                    }
                }
            }
        }
        for (&p, &delta) in &changed {
            if delta == 0 {
                continue;
            }
            let c = pair_counts.entry(p).or_insert(0);
            *c += delta;
            if *c <= 0 {
                pair_counts.remove(&p);
            } else if delta > 0 {
                heap.push(HeapEntry {
                    count: *c as u64,
                    pair: std::cmp::Reverse(p),
                });
            }
        }
        pair_counts.remove(&pair);
    }
    let first_special = tokens.len() as u32;
    let special_tokens = config
        .special_tokens
        .iter()
        .cloned()
        .zip(first_special..)
        .collect();
    Ok(TrainedBpe {
        tokens,
        merges,
        special_tokens,
        pattern: config.pattern,
        nfc: config.nfc,
    })
}

impl TrainedBpe {
    /// The HF `tokenizer.json` for this vocabulary (legacy `"left right"` merges, which every
    /// `tokenizers` version reads).
    pub fn to_tokenizer_json(&self) -> String {
        use serde_json::{Value, json};
        let table = byte_to_char_table();
        let mapped = |b: &[u8]| -> String { b.iter().map(|&x| table[x as usize]).collect() };
        let mut vocab = serde_json::Map::new();
        for (id, t) in self.tokens.iter().enumerate() {
            vocab.insert(mapped(t), json!(id));
        }
        let merges: Vec<Value> = self
            .merges
            .iter()
            .map(|&(l, r)| {
                Value::String(format!(
                    "{} {}",
                    mapped(&self.tokens[l as usize]),
                    mapped(&self.tokens[r as usize])
                ))
            })
            .collect();
        let added: Vec<Value> = self
            .special_tokens
            .iter()
            .map(|(c, id)| {
                json!({"id": id, "content": c, "single_word": false, "lstrip": false,
                       "rstrip": false, "normalized": false, "special": true})
            })
            .collect();
        let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false,
                                "trim_offsets": false, "use_regex": false});
        let pre = match self.pattern {
            Pattern::Qwen2 => json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": self.pattern.regex()},
                 "behavior": "Isolated", "invert": false},
                byte_level]}),
            Pattern::Gpt2 => json!({"type": "ByteLevel", "add_prefix_space": false,
                                    "trim_offsets": true, "use_regex": true}),
        };
        let doc = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": if self.nfc { json!({"type": "NFC"}) } else { Value::Null },
            "pre_tokenizer": pre,
            "post_processor": null,
            "decoder": byte_level,
            "model": {"type": "BPE", "dropout": null, "unk_token": null,
                      "continuing_subword_prefix": "", "end_of_word_suffix": "",
                      "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": vocab, "merges": merges},
        });
        doc.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenize::Tokenizer;

    fn sample() -> String {
        let mut s = String::new();
        for i in 0..200 {
            s.push_str(&format!(
                "the quick brown fox {i} jumps over the lazy dog; 中文分词 {} 😀\n",
                i % 7
            ));
        }
        s
    }

    #[test]
    fn trained_vocabulary_loads_and_round_trips() {
        let text = sample();
        let counts = PieceCounts::from_reader(text.as_bytes(), Pattern::Qwen2, true).unwrap();
        let config = TrainConfig {
            vocab_size: 300,
            ..TrainConfig::default()
        };
        let trained = train(&counts, &config).unwrap();
        assert_eq!(trained.tokens.len() + 1, 300);
        // The most frequent pair in this text is inside " the"/"the" etc.; every merge product
        // must be a concatenation of earlier tokens.
        for (i, &(l, r)) in trained.merges.iter().enumerate() {
            assert!((l as usize) < 256 + i && (r as usize) < 256 + i);
        }
        let json = trained.to_tokenizer_json();
        let tok = Tokenizer::from_bytes("hf-json", json.as_bytes()).unwrap();
        let ids = tok.encode(&text).unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), text.as_bytes());
        assert!(
            ids.len() * 2 < text.len(),
            "{} ids for {} bytes",
            ids.len(),
            text.len()
        );
        assert_eq!(tok.encode_with_special("<|endoftext|>").unwrap(), vec![299]);
    }

    #[test]
    fn training_is_deterministic_and_rejects_bad_input() {
        let text = sample();
        let counts = PieceCounts::from_reader(text.as_bytes(), Pattern::Qwen2, true).unwrap();
        let config = TrainConfig {
            vocab_size: 280,
            ..TrainConfig::default()
        };
        let a = train(&counts, &config).unwrap().merges;
        let b = train(&counts, &config).unwrap().merges;
        assert_eq!(a, b);
        assert!(PieceCounts::from_reader(&b"ok\n\xff\xfe"[..], Pattern::Qwen2, true).is_err());
        let small = TrainConfig {
            vocab_size: 10,
            ..TrainConfig::default()
        };
        assert!(train(&counts, &small).is_err());
    }
}
