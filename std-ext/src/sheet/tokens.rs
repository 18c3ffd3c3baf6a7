//! Token counters for the compression report: OpenAI's cl100k_base (the paper's, default),
//! o200k_base, any vocabulary goldcrest's tokenizer module reads (an HF `tokenizer.json` or a
//! directory holding one or `vocab.json` + `merges.txt`, a GGUF vocabulary, an RWKV World
//! `rwkv_vocab_*.txt`), counted exactly as that module encodes, or a tiktoken-format
//! vocabulary file (`<base64 token> <rank>` per line, as OpenAI's `*.tiktoken` files and
//! Llama 3's `tokenizer.model`). A tiktoken file carries no pre-tokenization pattern, so it is
//! split with cl100k's.

use crate::tokenize::{self, Scratch};
use bpe_openai::Tokenizer;
use bpe_openai::byte_pair_encoding::BytePairEncoding;
use std::cell::RefCell;
use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

/// Counts tokens.
pub enum TokenCounter {
    /// A vocabulary bundled with `bpe-openai`.
    Bundled(&'static Tokenizer),
    /// A tiktoken-format vocabulary read from a file.
    Loaded(Box<Tokenizer>),
    /// A tokenizer goldcrest runs models with (its encoding is the count), with reusable
    /// encoding buffers.
    Goldcrest(Box<tokenize::Tokenizer>, RefCell<(Vec<u32>, Scratch)>),
}

impl std::fmt::Debug for TokenCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenCounter::Bundled(_) => f.write_str("TokenCounter::Bundled"),
            TokenCounter::Loaded(_) => f.write_str("TokenCounter::Loaded"),
            TokenCounter::Goldcrest(..) => f.write_str("TokenCounter::Goldcrest"),
        }
    }
}

const CL100K_PATTERN: &str = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+$";

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        })
    };
    let s = s.trim_end_matches('=').as_bytes();
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut acc = 0u32;
        for &c in chunk {
            acc = acc << 6 | val(c)?;
        }
        acc <<= 6 * (4 - chunk.len() as u32);
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

impl TokenCounter {
    /// cl100k_base, GPT-4's vocabulary (the paper's).
    pub fn cl100k() -> TokenCounter {
        TokenCounter::Bundled(bpe_openai::cl100k_base())
    }

    /// o200k_base.
    pub fn o200k() -> TokenCounter {
        TokenCounter::Bundled(bpe_openai::o200k_base())
    }

    /// Reads a tiktoken-format vocabulary. Ranks must run 0, 1, 2, … without gaps, tokens must be
    /// distinct, all 256 single bytes must be present (so any text can be encoded), and the
    /// vocabulary must be a consistent byte-pair encoding; anything else is an error.
    pub fn from_tiktoken(data: &str) -> Result<TokenCounter, String> {
        let mut tokens = Vec::new();
        for (i, line) in data.lines().filter(|l| !l.trim().is_empty()).enumerate() {
            let mut parts = line.split_whitespace();
            let (Some(tok), Some(rank), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(format!("line {}: expected '<base64> <rank>'", i + 1));
            };
            let bytes = base64_decode(tok).ok_or_else(|| format!("line {}: bad base64", i + 1))?;
            if rank.parse::<usize>().ok() != Some(i) {
                return Err(format!(
                    "line {}: rank {rank} out of order (expected {i})",
                    i + 1
                ));
            }
            if bytes.is_empty() {
                return Err(format!("line {}: empty token", i + 1));
            }
            tokens.push(bytes);
        }
        let distinct: HashSet<&[u8]> = tokens.iter().map(Vec::as_slice).collect();
        if distinct.len() != tokens.len() {
            return Err("vocabulary repeats a token".into());
        }
        if (0..=255u8).any(|b| !distinct.contains(&[b][..])) {
            return Err("vocabulary lacks some single-byte tokens; not a byte-level BPE".into());
        }
        // bpe asserts on hash collisions and on dictionaries that are not consistent BPE merges;
        // turn those into errors, trying a few hash factors before giving up.
        let quiet = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let mut built = None;
        for factor in [
            1u64,
            0x9E37_79B9_7F4A_7C15,
            0xC2B2_AE3D_27D4_EB4F,
            0x1656_67B1_9E37_79F9,
        ] {
            let t = tokens.clone();
            if let Ok(bpe) = catch_unwind(AssertUnwindSafe(|| {
                BytePairEncoding::from_dictionary(t, Some(factor))
            })) {
                built = Some(bpe);
                break;
            }
        }
        std::panic::set_hook(quiet);
        let bpe = built.ok_or("vocabulary is not a consistent byte-pair encoding")?;
        let tok = Tokenizer::new_lookahead(
            bpe,
            &[(CL100K_PATTERN, false), ("\\s+\\s", true), ("\\s+", false)],
            false,
        )
        .map_err(|e| format!("pre-tokenizer: {e}"))?;
        Ok(TokenCounter::Loaded(Box::new(tok)))
    }

    /// Wraps a goldcrest tokenizer: counts are the lengths of its encodings (special-token
    /// text in a sheet is counted as plain text, as a model would be fed it).
    pub fn from_tokenizer(tokenizer: tokenize::Tokenizer) -> TokenCounter {
        TokenCounter::Goldcrest(Box::new(tokenizer), RefCell::default())
    }

    /// Loads a vocabulary file by its kind: `*.tiktoken` and Llama 3's `tokenizer.model` through
    /// [`TokenCounter::from_tiktoken`]; anything goldcrest's tokenizer module recognizes
    /// (`tokenizer.json`, a directory, `*.gguf`, `rwkv_vocab_*.txt`) through that module.
    pub fn from_path(path: &Path) -> Result<TokenCounter, String> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let tiktoken_format = !path.is_dir()
            && (name.ends_with(".tiktoken")
                || name.ends_with(".model")
                || tokenize::Tokenizer::kind_of_path(path).is_err());
        if tiktoken_format {
            let data = std::fs::read_to_string(path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            return TokenCounter::from_tiktoken(&data);
        }
        tokenize::Tokenizer::from_path(path)
            .map(TokenCounter::from_tokenizer)
            .map_err(|e| e.to_string())
    }

    /// Tokens in `text`.
    pub fn count(&self, text: &str) -> usize {
        match self {
            TokenCounter::Bundled(t) => t.count(text),
            TokenCounter::Loaded(t) => t.count(text),
            TokenCounter::Goldcrest(t, buffers) => {
                let mut buffers = buffers.borrow_mut();
                let (ids, scratch) = &mut *buffers;
                ids.clear();
                t.encode_into(text, false, ids, scratch);
                ids.len()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let mut n = 0u32;
            for (i, &b) in chunk.iter().enumerate() {
                n |= u32::from(b) << (16 - 8 * i);
            }
            for i in 0..=chunk.len() {
                out.push(char::from(A[(n >> (18 - 6 * i) & 63) as usize]));
            }
            for _ in chunk.len()..3 {
                out.push('=');
            }
        }
        out
    }

    fn vocab(extra: &[&[u8]]) -> String {
        let mut toks: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        toks.extend(extra.iter().map(|t| t.to_vec()));
        toks.iter()
            .enumerate()
            .map(|(i, t)| format!("{} {i}\n", b64(t)))
            .collect()
    }

    #[test]
    fn base64_round_trip() {
        for s in [&b""[..], b"a", b"ab", b"abc", b"\xff\x00\x10hello"] {
            assert_eq!(base64_decode(&b64(s)).unwrap(), s);
        }
        assert!(base64_decode("a").is_none());
        assert!(base64_decode("a$==").is_none());
    }

    #[test]
    fn tiny_vocabulary_counts_merges() {
        let t = TokenCounter::from_tiktoken(&vocab(&[b"ab", b"abab"])).unwrap();
        assert_eq!(t.count("abab"), 1);
        assert_eq!(t.count("aba"), 2);
        assert_eq!(t.count("xyz"), 3);
    }

    #[test]
    fn broken_vocabularies_are_errors() {
        assert!(TokenCounter::from_tiktoken("YQ== 0\n").is_err());
        assert!(TokenCounter::from_tiktoken("YQ== 1\n").is_err());
        assert!(TokenCounter::from_tiktoken(&vocab(&[b"a"])).is_err());
        // "abc" before its parts "ab"/"bc" exist is not reachable by merges.
        assert!(TokenCounter::from_tiktoken(&vocab(&[b"abc"])).is_err());
    }

    fn repo(rel: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
    }

    #[test]
    fn hf_tokenizer_json_counts_with_its_own_pre_tokenizer() {
        let qwen = TokenCounter::from_path(&repo("vocab/qwen2/tokenizer.json")).unwrap();
        assert!(matches!(qwen, TokenCounter::Goldcrest(..)));
        // Qwen2 splits digits one by one; cl100k groups up to three.
        assert_eq!(qwen.count("12345"), 5);
        assert_eq!(TokenCounter::cl100k().count("12345"), 2);
        // "hello world" is [14990, 1879] in Qwen2 (HF tokenizers); counting twice reuses buffers.
        assert_eq!(qwen.count("hello world"), 2);
        assert_eq!(qwen.count("hello world"), 2);
        assert_eq!(qwen.count(""), 0);
        // A directory with vocab.json + merges.txt, and the World vocabulary, load too.
        let qwen3 = TokenCounter::from_path(&repo("vocab/qwen3")).unwrap();
        assert_eq!(qwen3.count("12345"), 5);
        let world = TokenCounter::from_path(&repo("vocab/rwkv/rwkv_vocab_v20230424.txt")).unwrap();
        assert!(world.count("hello world") >= 2);
    }

    #[test]
    fn unreadable_tokenizer_files_are_errors() {
        let dir = std::env::temp_dir().join(format!("goldcrest-tokcount-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("tokenizer.json");
        std::fs::write(&bad, "{\"model\": 3").unwrap();
        assert!(TokenCounter::from_path(&bad).is_err());
        assert!(TokenCounter::from_path(&dir.join("missing.tiktoken")).is_err());
        assert!(TokenCounter::from_path(&dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bundled_cl100k_matches_tiktoken() {
        assert_eq!(TokenCounter::cl100k().count("hello world"), 2);
    }
}
