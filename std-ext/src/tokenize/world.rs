//! The RWKV World tokenizer: greedy longest match over a byte trie of
//! `rwkv_vocab_v20230424.txt`. No normalisation, no pre-tokenisation, no merges; it encodes any
//! bytes, valid UTF-8 or not.

use super::bpe::FxMap;
use super::error::{Result, format_err};

/// RWKV World vocabulary and its trie.
pub struct WorldTokenizer {
    /// Bytes of token `id` are `bytes[offsets[id]..offsets[id + 1]]`; id 0 (end of text) is empty.
    bytes: Vec<u8>,
    offsets: Vec<u32>,
    /// Trie edges: (node, byte) -> child node. Node 0 is the root.
    edges: FxMap<(u32, u8), u32>,
    /// Root children by first byte, as an array: every byte is a token, and the first step of
    /// every match goes through here.
    root: [u32; 256],
    /// Token id ending at each node (0 = none).
    node_token: Vec<u32>,
}

impl WorldTokenizer {
    /// Parses the vocabulary file: lines `<id> <Python str or bytes literal> <byte length>`.
    pub fn from_vocab_file(file: &[u8]) -> Result<WorldTokenizer> {
        let text = std::str::from_utf8(file).map_err(|e| {
            format_err(format!(
                "RWKV vocabulary is not UTF-8 (byte {})",
                e.valid_up_to()
            ))
        })?;
        let mut tokens: Vec<(u32, Vec<u8>)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.is_empty() {
                continue;
            }
            let n = i + 1;
            let bad = |what: &str| format_err(format!("RWKV vocabulary line {n}: {what}"));
            let (id, rest) = line.split_once(' ').ok_or_else(|| bad("no id"))?;
            let (literal, len) = rest.rsplit_once(' ').ok_or_else(|| bad("no length"))?;
            let id: u32 = id.parse().map_err(|_| bad("id is not a number"))?;
            let len: usize = len.parse().map_err(|_| bad("length is not a number"))?;
            if id == 0 || id > 1 << 24 {
                return Err(bad("id out of range (1..2^24)"));
            }
            let bytes = parse_python_literal(literal).map_err(|e| bad(&e))?;
            if bytes.len() != len {
                return Err(bad(&format!(
                    "literal has {} bytes, length column says {len}",
                    bytes.len()
                )));
            }
            tokens.push((id, bytes));
        }
        WorldTokenizer::new(tokens)
    }

    /// Builds the trie from `(id, bytes)` tokens; every single byte must be a token.
    pub fn new(mut tokens: Vec<(u32, Vec<u8>)>) -> Result<WorldTokenizer> {
        tokens.sort_by_key(|t| t.0);
        let limit = tokens.last().map_or(1, |t| t.0 as usize + 1);
        // Tables are indexed by id; this also bounds what a corrupt file can make us allocate.
        if limit > 2 * tokens.len() + 1024 {
            return Err(format_err(format!(
                "RWKV token ids are too sparse: largest id {} for {} tokens",
                limit - 1,
                tokens.len()
            )));
        }
        let mut slots: Vec<Option<Vec<u8>>> = vec![None; limit];
        let mut edges = FxMap::default();
        let mut node_token = vec![0u32];
        for (id, b) in tokens {
            if b.is_empty() {
                return Err(format_err(format!("RWKV token {id} is empty")));
            }
            let mut node = 0u32;
            for &byte in &b {
                let next = node_token.len() as u32;
                node = *edges.entry((node, byte)).or_insert_with(|| {
                    node_token.push(0);
                    next
                });
            }
            if node_token[node as usize] != 0 {
                return Err(format_err(format!(
                    "RWKV tokens {} and {id} have the same bytes",
                    node_token[node as usize]
                )));
            }
            node_token[node as usize] = id;
            if slots[id as usize].replace(b).is_some() {
                return Err(format_err(format!("RWKV token id {id} appears twice")));
            }
        }
        let mut root = [0u32; 256];
        for (b, slot) in root.iter_mut().enumerate() {
            let node = edges
                .get(&(0, b as u8))
                .copied()
                .filter(|&n| node_token[n as usize] != 0)
                .ok_or_else(|| format_err(format!("byte 0x{b:02x} has no RWKV token")))?;
            *slot = node;
        }
        let mut bytes = Vec::new();
        let mut offsets = vec![0u32];
        for slot in &slots {
            if let Some(b) = slot {
                bytes.extend_from_slice(b);
            }
            offsets.push(bytes.len() as u32);
        }
        Ok(WorldTokenizer {
            bytes,
            offsets,
            edges,
            root,
            node_token,
        })
    }

    /// One past the largest id.
    pub fn id_limit(&self) -> u32 {
        (self.offsets.len() - 1) as u32
    }

    /// The bytes of token `id`; `None` for id 0 (end of text, which has no text) and unknown ids.
    pub fn token(&self, id: u32) -> Option<&[u8]> {
        let i = id as usize;
        let (start, end) = (
            *self.offsets.get(i)? as usize,
            *self.offsets.get(i + 1)? as usize,
        );
        if start == end {
            return None;
        }
        self.bytes.get(start..end)
    }

    /// Appends the greedy longest-match encoding of `input` to `out`.
    pub fn encode_into(&self, input: &[u8], out: &mut Vec<u32>) {
        let mut pos = 0;
        while let Some(&first) = input.get(pos) {
            let mut node = self.root[first as usize];
            let mut best = (self.node_token[node as usize], pos + 1);
            let mut at = pos + 1;
            while let Some(&b) = input.get(at) {
                match self.edges.get(&(node, b)) {
                    Some(&child) => {
                        node = child;
                        at += 1;
                        let t = self.node_token[node as usize];
                        if t != 0 {
                            best = (t, at);
                        }
                    }
                    None => break,
                }
            }
            out.push(best.0);
            pos = best.1;
        }
    }
}

/// Parses a Python `'…'`, `"…"`, `b'…'` or `b"…"` literal with the escapes the RWKV file uses
/// (`\xNN \n \t \r \\ \' \" \uNNNN`). Str literals are UTF-8 encoded; in them `\xNN` is the
/// code point U+00NN.
fn parse_python_literal(lit: &str) -> std::result::Result<Vec<u8>, String> {
    let (is_bytes, body) = match lit.strip_prefix('b') {
        Some(rest) => (true, rest),
        None => (false, lit),
    };
    let quote = body.chars().next().ok_or("empty literal")?;
    if (quote != '\'' && quote != '"') || body.len() < 2 || !body.ends_with(quote) {
        return Err(format!("{lit} is not a quoted literal"));
    }
    let inner = &body[1..body.len() - 1];
    let mut out = Vec::new();
    let mut chars = inner.chars();
    let push_char = |out: &mut Vec<u8>, c: char| {
        let mut buf = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    };
    while let Some(c) = chars.next() {
        if c != '\\' {
            if is_bytes && !c.is_ascii() {
                return Err(format!("non-ASCII char in bytes literal {lit}"));
            }
            push_char(&mut out, c);
            continue;
        }
        let e = chars.next().ok_or("literal ends in a backslash")?;
        let mut hex = |n: usize| -> std::result::Result<u32, String> {
            let s: String = chars.by_ref().take(n).collect();
            if s.len() != n {
                return Err(format!("short \\x/\\u escape in {lit}"));
            }
            u32::from_str_radix(&s, 16).map_err(|_| format!("bad hex escape in {lit}"))
        };
        match e {
            'n' => out.push(b'\n'),
            't' => out.push(b'\t'),
            'r' => out.push(b'\r'),
            '\\' | '\'' | '"' => out.push(e as u8),
            'x' => {
                let v = hex(2)?;
                if is_bytes {
                    out.push(v as u8);
                } else {
                    push_char(&mut out, char::from_u32(v).ok_or("bad \\x escape")?);
                }
            }
            'u' if !is_bytes => {
                let v = hex(4)?;
                push_char(
                    &mut out,
                    char::from_u32(v).ok_or_else(|| format!("\\u{v:04x} is not a char"))?,
                );
            }
            other => return Err(format!("unsupported escape \\{other} in {lit}")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_parse_like_python() {
        assert_eq!(parse_python_literal(r"'\x00'").unwrap(), vec![0]);
        assert_eq!(parse_python_literal(r"'\xe9'").unwrap(), "é".as_bytes());
        assert_eq!(parse_python_literal(r"b'\xe9'").unwrap(), vec![0xe9]);
        assert_eq!(parse_python_literal(r#""it's""#).unwrap(), b"it's");
        assert_eq!(parse_python_literal(r"'\u4e2d'").unwrap(), "中".as_bytes());
        assert_eq!(parse_python_literal(r"'a\\b\n'").unwrap(), b"a\\b\n");
        assert!(parse_python_literal("'abc").is_err());
        assert!(parse_python_literal(r"'\q'").is_err());
        assert!(parse_python_literal(r"'\x4'").is_err());
        assert!(parse_python_literal("").is_err());
    }

    #[test]
    fn greedy_longest_match_backs_off_to_last_token() {
        let mut tokens: Vec<(u32, Vec<u8>)> =
            (0..=255u8).map(|b| (b as u32 + 1, vec![b])).collect();
        tokens.push((300, b"abc".to_vec()));
        tokens.push((301, b"abcde".to_vec()));
        let t = WorldTokenizer::new(tokens).unwrap();
        let mut out = Vec::new();
        // "abcd" walks to d (no token), so it takes "abc" then "d".
        t.encode_into(b"abcdabcde", &mut out);
        assert_eq!(out, vec![300, b'd' as u32 + 1, 301]);
    }

    #[test]
    fn bad_files_are_errors() {
        for f in [
            "1 'a' 2\n",
            "x 'a' 1\n",
            "1 'a\n",
            "0 'a' 1\n",
            "1 'a' 1\n1 'a' 1\n",
        ] {
            assert!(
                WorldTokenizer::from_vocab_file(f.as_bytes()).is_err(),
                "{f}"
            );
        }
    }
}
