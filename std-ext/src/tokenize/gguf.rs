//! The vocabulary inside a GGUF file (`tokenizer.ggml.*` keys), for byte-level BPE models
//! (`tokenizer.ggml.model = "gpt2"`). Only the metadata is read; tensors are ignored.
//!
//! Token types: 1 (normal) are byte-level BPE tokens; 3 (control) become special added tokens
//! and 4 (user-defined, e.g. GPT-NeoX's space runs and `[PAD…]` fillers) non-special added
//! tokens, matched literally when special-token parsing is on. GGUF records no normaliser; NFC is
//! applied for `pre = qwen2` (Qwen's tokenizer.json names it) and not otherwise.

use super::error::{Result, TokenizerError, format_err};
use super::load::{inverse_byte_table, unmap_byte_level};
use super::pretokenize::Pattern;
use super::{AddedToken, BpeModel, BpeTokenizer, MergeRule};

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

enum Value<'a> {
    Str(&'a [u8]),
    Strings(Vec<&'a [u8]>),
    Ints(Vec<i128>),
    Other,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| format_err(format!("GGUF truncated at byte {}", self.pos)))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn len(&mut self) -> Result<usize> {
        let n = self.u64()?;
        // Every element takes at least one byte, so a count beyond the file is corrupt.
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.bytes.len())
            .ok_or_else(|| format_err(format!("GGUF length {n} at byte {} is too large", self.pos)))
    }
    fn string(&mut self) -> Result<&'a [u8]> {
        let n = self.len()?;
        self.take(n)
    }
    fn scalar(&mut self, ty: u32) -> Result<Option<i128>> {
        Ok(Some(match ty {
            0 => self.take(1)?[0] as i128,
            1 => self.take(1)?[0] as i8 as i128,
            2 => u16::from_le_bytes([self.take(1)?[0], self.take(1)?[0]]) as i128,
            3 => i16::from_le_bytes([self.take(1)?[0], self.take(1)?[0]]) as i128,
            4 => self.u32()? as i128,
            5 => self.u32()? as i32 as i128,
            6 => {
                self.u32()?;
                return Ok(None);
            }
            7 => self.take(1)?[0] as i128,
            10 => self.u64()? as i128,
            11 => self.u64()? as i64 as i128,
            12 => {
                self.u64()?;
                return Ok(None);
            }
            other => return Err(format_err(format!("GGUF value type {other} is unknown"))),
        }))
    }
    fn value(&mut self, ty: u32, depth: u32) -> Result<Value<'a>> {
        match ty {
            8 => Ok(Value::Str(self.string()?)),
            9 => {
                if depth > 2 {
                    return Err(format_err("GGUF arrays nested too deeply"));
                }
                let elem = self.u32()?;
                let n = self.len()?;
                match elem {
                    8 => (0..n)
                        .map(|_| self.string())
                        .collect::<Result<_>>()
                        .map(Value::Strings),
                    9 => {
                        for _ in 0..n {
                            self.value(9, depth + 1)?;
                        }
                        Ok(Value::Other)
                    }
                    _ => {
                        let mut v = Vec::with_capacity(n.min(1 << 20));
                        for _ in 0..n {
                            v.push(self.scalar(elem)?.unwrap_or(0));
                        }
                        Ok(Value::Ints(v))
                    }
                }
            }
            _ => {
                self.scalar(ty)?;
                Ok(Value::Other)
            }
        }
    }
}

fn utf8<'a>(b: &'a [u8], what: &str) -> Result<&'a str> {
    std::str::from_utf8(b).map_err(|_| format_err(format!("GGUF {what} is not UTF-8")))
}

/// Reads the byte-level BPE vocabulary from a GGUF file's metadata.
pub fn from_gguf(bytes: &[u8]) -> Result<BpeTokenizer> {
    let mut r = Reader { bytes, pos: 0 };
    if r.take(4)? != b"GGUF" {
        return Err(format_err("not a GGUF file (magic)"));
    }
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        return Err(TokenizerError::Unsupported(format!(
            "GGUF version {version}"
        )));
    }
    let _tensors = r.u64()?;
    let n_kv = r.len()?;
    let (mut model, mut pre) = (None, None);
    let (mut tokens, mut types, mut merges) = (None, None, None);
    for _ in 0..n_kv {
        let key = r.string()?;
        let ty = r.u32()?;
        let value = r.value(ty, 0)?;
        match (key, value) {
            (b"tokenizer.ggml.model", Value::Str(s)) => model = Some(utf8(s, "model")?),
            (b"tokenizer.ggml.pre", Value::Str(s)) => pre = Some(utf8(s, "pre")?),
            (b"tokenizer.ggml.tokens", Value::Strings(v)) => tokens = Some(v),
            (b"tokenizer.ggml.token_type", Value::Ints(v)) => types = Some(v),
            (b"tokenizer.ggml.merges", Value::Strings(v)) => merges = Some(v),
            _ => {}
        }
    }
    match model {
        Some("gpt2") => {}
        other => {
            return Err(TokenizerError::Unsupported(format!(
                "GGUF tokenizer model {other:?} (only byte-level BPE, \"gpt2\", is implemented)"
            )));
        }
    }
    let (pattern, nfc) = match pre {
        None | Some("default") | Some("gpt-2") | Some("gpt2") => (Pattern::Gpt2, false),
        Some("qwen2") => (Pattern::Qwen2, true),
        Some(other) => {
            return Err(TokenizerError::Unsupported(format!(
                "GGUF pre-tokenizer {other:?}"
            )));
        }
    };
    let tokens = tokens.ok_or_else(|| format_err("GGUF has no tokenizer.ggml.tokens"))?;
    let types = types.unwrap_or_else(|| vec![1; tokens.len()]);
    if types.len() != tokens.len() {
        return Err(format_err("GGUF token_type and tokens differ in length"));
    }
    let merges = merges.ok_or_else(|| format_err("GGUF has no tokenizer.ggml.merges"))?;
    let inverse = inverse_byte_table();
    let mut regular = Vec::new();
    let mut ids = std::collections::HashMap::new();
    let mut added = Vec::new();
    for (id, (tok, &ty)) in tokens.iter().zip(&types).enumerate() {
        let id = id as u32;
        let text = utf8(tok, "token")?;
        match ty {
            1 => {
                regular.push((id, unmap_byte_level(text, &inverse, "GGUF token")?));
                ids.insert(text, id);
            }
            3 | 4 => added.push(AddedToken {
                id,
                content: text.to_string(),
                special: ty == 3,
            }),
            other => {
                return Err(TokenizerError::Unsupported(format!(
                    "GGUF token {id} has type {other} in a byte-level vocabulary"
                )));
            }
        }
    }
    let merges = merges
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let m = utf8(m, "merge")?;
            let (l, r) = m
                .split_once(' ')
                .ok_or_else(|| format_err(format!("GGUF merge {i} has no space")))?;
            let id = |s: &str| {
                ids.get(s)
                    .copied()
                    .ok_or_else(|| format_err(format!("GGUF merge {i}: {s:?} is not a token")))
            };
            Ok((id(l)?, id(r)?))
        })
        .collect::<Result<Vec<_>>>()?;
    let model = BpeModel::new(regular, &merges, MergeRule::MergeList)?;
    BpeTokenizer::new(model, pattern, nfc, added)
}
