//! Readers for the vocabulary file formats: HF `tokenizer.json`, `vocab.json` + `merges.txt`,
//! and tiktoken rank files. Each checks what it reads and names the problem when it refuses.

use super::bpe::{BpeModel, MergeRule};
use super::error::{Result, TokenizerError, format_err};
use super::pretokenize::Pattern;
use super::{AddedToken, BpeTokenizer};
use serde_json::Value;

/// GPT-2's reversible byte <-> printable-char map used by byte-level vocabularies: printable
/// Latin-1 bytes stand for themselves, the other 68 bytes for U+0100 onwards in byte order.
pub fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for (b, slot) in table.iter_mut().enumerate() {
        let printable = (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || b >= 0xae;
        let cp = if printable {
            b as u32
        } else {
            next += 1;
            next - 1
        };
        *slot = char::from_u32(cp).unwrap_or('\0');
    }
    table
}

/// Decodes a byte-level token string (GPT-2 char map) back to its bytes.
pub(crate) fn unmap_byte_level(s: &str, inverse: &ByteInverse, what: &str) -> Result<Vec<u8>> {
    s.chars()
        .map(|c| {
            inverse.get(c as usize).copied().flatten().ok_or_else(|| {
                format_err(format!(
                    "{what}: {s:?} has {c:?}, which is not a byte-level character"
                ))
            })
        })
        .collect()
}

/// Char code point (< 324) -> the byte it stands for.
pub(crate) type ByteInverse = [Option<u8>; 324];

pub(crate) fn inverse_byte_table() -> ByteInverse {
    let mut inv = [None; 324];
    for (b, &c) in byte_to_char_table().iter().enumerate() {
        if let Some(slot) = inv.get_mut(c as usize) {
            *slot = Some(b as u8);
        }
    }
    inv
}

fn obj<'a>(v: &'a Value, what: &str) -> Result<&'a serde_json::Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| format_err(format!("{what} is not a JSON object")))
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn bool_field(v: &Value, key: &str) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn parse_vocab(v: &Value, what: &str) -> Result<Vec<(u32, Vec<u8>)>> {
    let inverse = inverse_byte_table();
    obj(v, what)?
        .iter()
        .map(|(k, id)| {
            let id = id
                .as_u64()
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| format_err(format!("{what}: id of {k:?} is not a u32")))?;
            Ok((id, unmap_byte_level(k, &inverse, what)?))
        })
        .collect()
}

/// Resolves merges given as token strings to id pairs.
fn resolve_merges<'a>(
    pairs: impl Iterator<Item = Result<(&'a str, &'a str)>>,
    vocab: &Value,
) -> Result<Vec<(u32, u32)>> {
    let id = |s: &str, i: usize| -> Result<u32> {
        vocab
            .get(s)
            .and_then(Value::as_u64)
            .and_then(|x| u32::try_from(x).ok())
            .ok_or_else(|| format_err(format!("merge {i}: {s:?} is not in the vocabulary")))
    };
    pairs
        .enumerate()
        .map(|(i, p)| {
            let (l, r) = p?;
            Ok((id(l, i)?, id(r, i)?))
        })
        .collect()
}

fn split_merge_line(line: &str, i: usize) -> Result<(&str, &str)> {
    let mut parts = line.split(' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(l), Some(r), None) if !l.is_empty() && !r.is_empty() => Ok((l, r)),
        _ => Err(format_err(format!(
            "merge {i}: {line:?} is not two tokens separated by one space"
        ))),
    }
}

/// Reads the normaliser: `None` (no normaliser) or NFC, alone or in a sequence.
fn parse_normalizer(v: &Value) -> Result<bool> {
    match v {
        Value::Null => Ok(false),
        _ => match str_field(v, "type") {
            Some("NFC") => Ok(true),
            Some("Sequence") => {
                let list = v
                    .get("normalizers")
                    .and_then(Value::as_array)
                    .ok_or_else(|| format_err("normalizer Sequence without a list"))?;
                let mut nfc = false;
                for n in list {
                    nfc |= parse_normalizer(n)?;
                }
                Ok(nfc)
            }
            other => Err(TokenizerError::Unsupported(format!(
                "normalizer {other:?} (only NFC is implemented)"
            ))),
        },
    }
}

fn check_byte_level(v: &Value) -> Result<()> {
    if bool_field(v, "add_prefix_space") {
        return Err(TokenizerError::Unsupported(
            "ByteLevel add_prefix_space: true".into(),
        ));
    }
    Ok(())
}

/// Reads the pre-tokeniser: a `Split` with a known regex followed by a `ByteLevel` without its
/// own regex, or a lone `ByteLevel` with the GPT-2 regex.
fn parse_pre_tokenizer(v: &Value) -> Result<Pattern> {
    let unsupported = |m: String| Err(TokenizerError::Unsupported(m));
    match str_field(v, "type") {
        Some("ByteLevel") => {
            check_byte_level(v)?;
            if v.get("use_regex").and_then(Value::as_bool) == Some(false) {
                return unsupported("ByteLevel without a regex and without a Split".into());
            }
            Ok(Pattern::Gpt2)
        }
        Some("Sequence") => {
            let list = v
                .get("pretokenizers")
                .and_then(Value::as_array)
                .ok_or_else(|| format_err("pre_tokenizer Sequence without a list"))?;
            match list.as_slice() {
                [split, byte_level] if str_field(byte_level, "type") == Some("ByteLevel") => {
                    check_byte_level(byte_level)?;
                    if byte_level.get("use_regex").and_then(Value::as_bool) != Some(false) {
                        return unsupported(
                            "Split followed by a ByteLevel with its own regex".into(),
                        );
                    }
                    if str_field(split, "type") != Some("Split")
                        || str_field(split, "behavior") != Some("Isolated")
                        || bool_field(split, "invert")
                    {
                        return unsupported(format!("pre-tokenizer {split}"));
                    }
                    let regex = split
                        .get("pattern")
                        .and_then(|p| str_field(p, "Regex"))
                        .ok_or_else(|| format_err("Split pre-tokenizer without a Regex"))?;
                    Pattern::from_regex(regex).ok_or_else(|| {
                        TokenizerError::Unsupported(format!("pre-tokenization regex {regex:?}"))
                    })
                }
                [only] => parse_pre_tokenizer(only),
                _ => unsupported(format!("pre-tokenizer sequence {v}")),
            }
        }
        other => unsupported(format!("pre-tokenizer {other:?}")),
    }
}

fn parse_added_tokens(list: &Value, what: &str) -> Result<Vec<AddedToken>> {
    let Some(items) = list.as_array() else {
        return Err(format_err(format!("{what} is not a list")));
    };
    items
        .iter()
        .map(|t| {
            let id = t
                .get("id")
                .and_then(Value::as_u64)
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| format_err(format!("{what}: entry without a u32 id")))?;
            parse_added_token(t, id, what)
        })
        .collect()
}

fn parse_added_token(t: &Value, id: u32, what: &str) -> Result<AddedToken> {
    let content = str_field(t, "content")
        .ok_or_else(|| format_err(format!("{what}: token {id} has no content")))?;
    if content.is_empty() {
        return Err(format_err(format!("{what}: token {id} is empty")));
    }
    for flag in ["single_word", "lstrip", "rstrip"] {
        if bool_field(t, flag) {
            return Err(TokenizerError::Unsupported(format!(
                "added token {content:?} with {flag}: true"
            )));
        }
    }
    Ok(AddedToken {
        id,
        content: content.to_string(),
        special: bool_field(t, "special"),
    })
}

/// Parses a HF `tokenizer.json` holding a byte-level BPE model.
pub fn from_tokenizer_json(bytes: &[u8]) -> Result<BpeTokenizer> {
    let root: Value = serde_json::from_slice(bytes)
        .map_err(|e| format_err(format!("tokenizer.json is not valid JSON: {e}")))?;
    let model = root
        .get("model")
        .ok_or_else(|| format_err("tokenizer.json has no \"model\""))?;
    if let Some(t) = str_field(model, "type")
        && t != "BPE"
    {
        return Err(TokenizerError::Unsupported(format!("model type {t:?}")));
    }
    if bool_field(model, "byte_fallback")
        || str_field(model, "continuing_subword_prefix").is_some_and(|s| !s.is_empty())
        || str_field(model, "end_of_word_suffix").is_some_and(|s| !s.is_empty())
        || model.get("dropout").is_some_and(|d| !d.is_null())
    {
        return Err(TokenizerError::Unsupported(
            "BPE with byte_fallback, subword prefix/suffix or dropout".into(),
        ));
    }
    let vocab_value = model
        .get("vocab")
        .ok_or_else(|| format_err("model has no \"vocab\""))?;
    let vocab = parse_vocab(vocab_value, "model.vocab")?;
    let merges_value = model
        .get("merges")
        .and_then(Value::as_array)
        .ok_or_else(|| format_err("model.merges is missing or not a list"))?;
    let merge_strings = merges_value.iter().enumerate().map(|(i, m)| match m {
        // Legacy form "left right"; since tokenizers 0.20 also ["left", "right"].
        Value::String(s) => split_merge_line(s, i),
        Value::Array(pair) => match pair.as_slice() {
            [Value::String(l), Value::String(r)] => Ok((l.as_str(), r.as_str())),
            _ => Err(format_err(format!("merge {i} is not a pair of strings"))),
        },
        _ => Err(format_err(format!(
            "merge {i} is neither a string nor a pair"
        ))),
    });
    let merges = resolve_merges(merge_strings, vocab_value)?;
    let nfc = parse_normalizer(root.get("normalizer").unwrap_or(&Value::Null))?;
    let pattern = parse_pre_tokenizer(
        root.get("pre_tokenizer")
            .ok_or_else(|| format_err("tokenizer.json has no \"pre_tokenizer\""))?,
    )?;
    let added = match root.get("added_tokens") {
        None | Some(Value::Null) => Vec::new(),
        Some(list) => parse_added_tokens(list, "added_tokens")?,
    };
    let model = BpeModel::new(vocab, &merges, MergeRule::MergeList)?;
    BpeTokenizer::new(model, pattern, nfc, added)
}

/// Parses `vocab.json` + `merges.txt` (GPT-2 slow-tokenizer format). The files carry no
/// pre-tokeniser or normaliser, so the caller says which; `added` comes from elsewhere (e.g.
/// `tokenizer_config.json`, see [`added_tokens_from_config`]).
pub fn from_vocab_and_merges(
    vocab_json: &[u8],
    merges_txt: &[u8],
    pattern: Pattern,
    nfc: bool,
    added: Vec<AddedToken>,
) -> Result<BpeTokenizer> {
    let vocab_value: Value = serde_json::from_slice(vocab_json)
        .map_err(|e| format_err(format!("vocab.json is not valid JSON: {e}")))?;
    let vocab = parse_vocab(&vocab_value, "vocab.json")?;
    let text = std::str::from_utf8(merges_txt).map_err(|e| {
        format_err(format!(
            "merges.txt is not UTF-8 (byte {})",
            e.valid_up_to()
        ))
    })?;
    let lines = text
        .lines()
        .filter(|l| !l.starts_with("#version") && !l.is_empty())
        .enumerate()
        .map(|(i, l)| split_merge_line(l.trim_end_matches('\r'), i));
    let merges = resolve_merges(lines, &vocab_value)?;
    // Added tokens that repeat a vocab entry keep the vocab's bytes; drop them from the model map.
    let model = BpeModel::new(vocab, &merges, MergeRule::MergeList)?;
    BpeTokenizer::new(model, pattern, nfc, added)
}

/// The added tokens listed in a `tokenizer_config.json` (`added_tokens_decoder`).
pub fn added_tokens_from_config(config_json: &[u8]) -> Result<Vec<AddedToken>> {
    let root: Value = serde_json::from_slice(config_json)
        .map_err(|e| format_err(format!("tokenizer_config.json is not valid JSON: {e}")))?;
    let Some(map) = root.get("added_tokens_decoder") else {
        return Ok(Vec::new());
    };
    let mut out = obj(map, "added_tokens_decoder")?
        .iter()
        .map(|(k, t)| {
            let id = k
                .parse::<u32>()
                .map_err(|_| format_err(format!("added_tokens_decoder key {k:?} is not an id")))?;
            parse_added_token(t, id, "added_tokens_decoder")
        })
        .collect::<Result<Vec<_>>>()?;
    out.sort_by_key(|t| t.id);
    Ok(out)
}

/// Decodes standard base64 (with `=` padding), as used by tiktoken rank files.
pub fn base64_decode(s: &[u8]) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    if !s.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let chunks = s.len() / 4;
    for (i, c) in s.chunks_exact(4).enumerate() {
        let pad = c.iter().rev().take_while(|&&b| b == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != chunks) {
            return None;
        }
        let mut acc = 0u32;
        for &b in &c[..4 - pad] {
            acc = (acc << 6) | value(b)?;
        }
        acc <<= 6 * pad as u32;
        let bytes = [(acc >> 16) as u8, (acc >> 8) as u8, acc as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

/// Parses a tiktoken rank file (`base64(token) rank` per line). `specials` are the model's
/// special tokens (the file has none); [`super::qwen2_specials`] gives Qwen's.
pub fn from_tiktoken(
    bytes: &[u8],
    pattern: Pattern,
    nfc: bool,
    specials: Vec<AddedToken>,
) -> Result<BpeTokenizer> {
    let mut tokens = Vec::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split(|&b| b == b' ');
        let (Some(token), Some(rank), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format_err(format!(
                "tiktoken line {}: expected `base64 rank`",
                i + 1
            )));
        };
        let token = base64_decode(token)
            .ok_or_else(|| format_err(format!("tiktoken line {}: token is not base64", i + 1)))?;
        let rank = std::str::from_utf8(rank)
            .ok()
            .and_then(|r| r.parse::<u32>().ok())
            .ok_or_else(|| format_err(format!("tiktoken line {}: rank is not a u32", i + 1)))?;
        tokens.push((rank, token));
    }
    let model = BpeModel::new(tokens, &[], MergeRule::Ranks)?;
    BpeTokenizer::new(model, pattern, nfc, specials)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_gpt2s() {
        let t = byte_to_char_table();
        assert_eq!(t[b'!' as usize], '!');
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(t[0], 'Ā');
        assert_eq!(t[0xad], '\u{143}');
        let inv = inverse_byte_table();
        for (b, &c) in t.iter().enumerate() {
            assert_eq!(inv[c as usize], Some(b as u8));
        }
        assert!(unmap_byte_level("a\u{0}", &inv, "t").is_err());
        assert!(unmap_byte_level("€", &inv, "t").is_err());
    }

    #[test]
    fn base64_round_trips_and_rejects_garbage() {
        assert_eq!(base64_decode(b"aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode(b"aGk=").unwrap(), b"hi");
        assert_eq!(base64_decode(b"aGVs").unwrap(), b"hel");
        assert_eq!(base64_decode(b"IQ==").unwrap(), b"!");
        assert!(base64_decode(b"aGk").is_none());
        assert!(base64_decode(b"a=Gk").is_none());
        assert!(base64_decode(b"IQ==IQ==").is_none());
        assert!(base64_decode(b"a*Gk").is_none());
    }
}
