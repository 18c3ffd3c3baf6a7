//! Tokenizers: byte-level BPE (Qwen2, GPT-2/GPT-NeoX) and RWKV World, exact against their
//! reference implementations, plus streaming decoding, the ChatML template, a BPE trainer and
//! vocabulary sizing.
//!
//! ```no_run
//! use goldcrest_std::tokenize::Tokenizer;
//! let tok = Tokenizer::from_path("vocab/qwen2/tokenizer.json".as_ref())?;
//! let ids = tok.encode("Hello, world!")?; // special-token text stays plain text
//! let text = tok.decode(&ids)?;
//! assert_eq!(text, b"Hello, world!");
//! # Ok::<(), goldcrest_std::tokenize::TokenizerError>(())
//! ```
//!
//! Loading: [`Tokenizer::from_path`] takes a `tokenizer.json`, a `.tiktoken` rank file, an RWKV
//! `rwkv_vocab_*.txt`, or a directory holding `tokenizer.json` or `vocab.json` + `merges.txt`;
//! [`Tokenizer::from_bytes`] takes a kind name (as stored in a goldcrest file's
//! `goldcrest.tokenizer` key) and the file's bytes.

mod bpe;
pub mod chat;
mod error;
mod gguf;
mod load;
pub mod pretokenize;
mod stream;
pub mod train;
pub mod vocab_size;
mod world;

pub use bpe::{BpeModel, MergeRule, Scratch, escape_bytes};
pub use error::{Result, TokenizerError};
pub use gguf::from_gguf;
pub use load::{
    added_tokens_from_config, base64_decode, byte_to_char_table, from_tiktoken,
    from_tokenizer_json, from_vocab_and_merges,
};
pub use pretokenize::Pattern;
pub use stream::StreamDecoder;
pub use world::WorldTokenizer;

use bpe::FxMap;
use goldcrest_core::format::SafeTensors;
use std::borrow::Cow;
use std::path::Path;

/// Metadata key naming the kind of the tokenizer a model file embeds.
pub const TOKENIZER_KIND_KEY: &str = "goldcrest.tokenizer";
/// Name of the `U8` tensor holding an embedded tokenizer's file bytes.
pub const TOKENIZER_TENSOR: &str = "tokenizer";
/// The RWKV World vocabulary (`rwkv` 0.8.32, Apache-2.0; see `vocab/SOURCES.md`), so that
/// `--tokenizer world` needs no file.
pub const BUNDLED_WORLD_VOCAB: &[u8] =
    include_bytes!("../../../vocab/rwkv/rwkv_vocab_v20230424.txt");

/// A token matched as a literal string before normalisation and pre-tokenisation (HF "added
/// tokens": control tokens like `<|im_end|>` and user-defined ones).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddedToken {
    /// Its id.
    pub id: u32,
    /// The literal text.
    pub content: String,
    /// Whether it is a special (control) token, which [`Tokenizer::decode_skip_special`] drops.
    pub special: bool,
}

/// Qwen2's three control tokens, which `.tiktoken` files do not list, placed after `n_regular`
/// regular tokens (151,643 for Qwen).
pub fn qwen2_specials(n_regular: u32) -> Vec<AddedToken> {
    ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        .iter()
        .zip(n_regular..)
        .map(|(c, id)| AddedToken {
            id,
            content: (*c).to_string(),
            special: true,
        })
        .collect()
}

/// A byte-level BPE tokenizer: added-token splitting, NFC, pre-tokenisation, BPE.
pub struct BpeTokenizer {
    model: BpeModel,
    pattern: Pattern,
    nfc: bool,
    added: Vec<AddedToken>,
    added_by_id: FxMap<u32, usize>,
    /// Indices into `added`, longest content first, so the first hit at a position is the
    /// longest (HF matches added tokens leftmost-longest).
    added_longest_first: Vec<usize>,
    added_first_byte: [bool; 256],
    id_limit: u32,
}

impl BpeTokenizer {
    /// Assembles a tokenizer from its parts.
    pub fn new(
        model: BpeModel,
        pattern: Pattern,
        nfc: bool,
        added: Vec<AddedToken>,
    ) -> Result<BpeTokenizer> {
        let mut added_by_id = FxMap::default();
        let mut added_first_byte = [false; 256];
        let mut id_limit = model.id_limit();
        for (i, t) in added.iter().enumerate() {
            if added_by_id.insert(t.id, i).is_some() {
                return Err(error::format_err(format!(
                    "added token id {} appears twice",
                    t.id
                )));
            }
            let first = *t
                .content
                .as_bytes()
                .first()
                .ok_or_else(|| error::format_err(format!("added token {} is empty", t.id)))?;
            added_first_byte[first as usize] = true;
            id_limit = id_limit.max(t.id.saturating_add(1));
        }
        let mut added_longest_first: Vec<usize> = (0..added.len()).collect();
        added_longest_first.sort_by_key(|&i| std::cmp::Reverse(added[i].content.len()));
        Ok(BpeTokenizer {
            model,
            pattern,
            nfc,
            added,
            added_by_id,
            added_longest_first,
            added_first_byte,
            id_limit,
        })
    }

    /// The BPE model.
    pub fn model(&self) -> &BpeModel {
        &self.model
    }
    /// The pre-tokenisation pattern.
    pub fn pattern(&self) -> Pattern {
        self.pattern
    }
    /// Whether text is NFC-normalised before pre-tokenisation.
    pub fn normalizes_nfc(&self) -> bool {
        self.nfc
    }
    /// The added (special and user-defined) tokens.
    pub fn added_tokens(&self) -> &[AddedToken] {
        &self.added
    }

    /// The bytes of token `id` (added tokens: their UTF-8 content).
    pub fn token(&self, id: u32) -> Option<&[u8]> {
        match self.added_by_id.get(&id) {
            Some(&i) => self.added.get(i).map(|t| t.content.as_bytes()),
            None => self.model.token(id),
        }
    }

    /// Whether `id` is a special (control) added token.
    pub fn is_special(&self, id: u32) -> bool {
        self.added_by_id
            .get(&id)
            .and_then(|&i| self.added.get(i))
            .is_some_and(|t| t.special)
    }

    /// Encodes text with no added-token parsing: `<|im_end|>` in the text is plain text
    /// (tiktoken's `encode_ordinary` after NFC).
    pub fn encode_ordinary_into(&self, text: &str, out: &mut Vec<u32>, scratch: &mut Scratch) {
        let text: Cow<'_, str> = if self.nfc {
            nfc(text)
        } else {
            Cow::Borrowed(text)
        };
        for piece in self.pattern.pieces(&text) {
            self.model.encode_piece(piece.as_bytes(), out, scratch);
        }
    }

    /// Encodes text, first splitting off added tokens as HF `tokenizers` does; each segment
    /// between them is then normalised and encoded.
    pub fn encode_with_added_into(&self, text: &str, out: &mut Vec<u32>, scratch: &mut Scratch) {
        let mut rest = text;
        while let Some((at, len, id)) = self.find_added(rest) {
            let (before, after) = rest.split_at(at);
            self.encode_ordinary_into(before, out, scratch);
            out.push(id);
            rest = after.get(len..).unwrap_or("");
        }
        self.encode_ordinary_into(rest, out, scratch);
    }

    /// The leftmost-longest added token in `text`: (byte offset, length, id).
    fn find_added(&self, text: &str) -> Option<(usize, usize, u32)> {
        if self.added.is_empty() {
            return None;
        }
        let bytes = text.as_bytes();
        for (at, &b) in bytes.iter().enumerate() {
            if !self.added_first_byte[b as usize] {
                continue;
            }
            let rest = &bytes[at..];
            for &i in &self.added_longest_first {
                let t = &self.added[i];
                if rest.starts_with(t.content.as_bytes()) {
                    return Some((at, t.content.len(), t.id));
                }
            }
        }
        None
    }
}

/// NFC without allocating when the text is already NFC (the common case), normalising only the
/// lines that need it otherwise: a line break is a starter that never composes with what
/// precedes it, so NFC of the text is the concatenation of NFC of its lines.
pub(crate) fn nfc(text: &str) -> Cow<'_, str> {
    use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};
    if is_nfc_quick(text.chars()) == IsNormalized::Yes {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for line in text.split_inclusive('\n') {
        if is_nfc_quick(line.chars()) == IsNormalized::Yes {
            out.push_str(line);
        } else {
            out.extend(line.nfc());
        }
    }
    Cow::Owned(out)
}

/// Any tokenizer goldcrest can run.
// A program holds one or two tokenizers for its whole run; the size difference between the
// variants (the BPE byte tables) costs nothing, while boxing would add an indirection per call.
#[allow(clippy::large_enum_variant)]
pub enum Tokenizer {
    /// Byte-level BPE (Qwen2, GPT-2, GPT-NeoX).
    Bpe(BpeTokenizer),
    /// RWKV World (greedy longest match).
    World(WorldTokenizer),
}

/// The vocabulary file kinds [`Tokenizer::from_bytes`] accepts, by their metadata name.
pub const KINDS: &[&str] = &["hf-json", "tiktoken", "world", "gguf"];

impl Tokenizer {
    /// Loads a tokenizer from bytes of the given kind (`"hf-json"`: a `tokenizer.json`;
    /// `"tiktoken"`: a Qwen `.tiktoken` rank file, with Qwen2's regex, NFC and control tokens;
    /// `"world"`: an RWKV World vocabulary; `"gguf"`: the vocabulary in a GGUF file's metadata). This is how a goldcrest file's embedded
    /// `tokenizer` tensor is read.
    pub fn from_bytes(kind: &str, bytes: &[u8]) -> Result<Tokenizer> {
        match kind {
            "hf-json" => Ok(Tokenizer::Bpe(from_tokenizer_json(bytes)?)),
            "tiktoken" => {
                let tok = from_tiktoken(bytes, Pattern::Qwen2, true, Vec::new())?;
                let n = tok.model.id_limit();
                Ok(Tokenizer::Bpe(BpeTokenizer::new(
                    tok.model,
                    Pattern::Qwen2,
                    true,
                    qwen2_specials(n),
                )?))
            }
            "world" => Ok(Tokenizer::World(WorldTokenizer::from_vocab_file(bytes)?)),
            "gguf" => Ok(Tokenizer::Bpe(from_gguf(bytes)?)),
            other => Err(TokenizerError::Unsupported(format!(
                "tokenizer kind {other:?} (known: {})",
                KINDS.join(", ")
            ))),
        }
    }

    /// The kind name a file at `path` would be loaded as (see [`Tokenizer::from_path`]).
    pub fn kind_of_path(path: &Path) -> Result<&'static str> {
        if path.is_dir() {
            return Ok("hf-json");
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.ends_with(".tiktoken") {
            Ok("tiktoken")
        } else if name.ends_with(".gguf") {
            Ok("gguf")
        } else if name.ends_with(".json") {
            Ok("hf-json")
        } else if name.starts_with("rwkv_vocab") && name.ends_with(".txt") {
            Ok("world")
        } else {
            Err(TokenizerError::Unsupported(format!(
                "cannot tell the vocabulary format of {} (expected tokenizer.json, *.tiktoken, \
                 rwkv_vocab_*.txt or a directory with vocab.json and merges.txt)",
                path.display()
            )))
        }
    }

    /// Loads a `tokenizer.json`, `*.tiktoken`, `rwkv_vocab_*.txt`, or a directory holding
    /// `tokenizer.json` or `vocab.json` + `merges.txt` (read with Qwen2's regex and NFC, and the
    /// added tokens of a `tokenizer_config.json` beside them, if any).
    pub fn from_path(path: &Path) -> Result<Tokenizer> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| {
                TokenizerError::Io(std::io::Error::new(
                    e.kind(),
                    format!("{}: {e}", p.display()),
                ))
            })
        };
        if path.is_dir() {
            let json = path.join("tokenizer.json");
            if json.is_file() {
                return Tokenizer::from_bytes("hf-json", &read(&json)?);
            }
            let vocab = path.join("vocab.json");
            let merges = path.join("merges.txt");
            if !vocab.is_file() || !merges.is_file() {
                return Err(TokenizerError::Io(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!(
                        "{} holds neither tokenizer.json nor vocab.json + merges.txt",
                        path.display()
                    ),
                )));
            }
            let config = path.join("tokenizer_config.json");
            let added = if config.is_file() {
                added_tokens_from_config(&read(&config)?)?
            } else {
                Vec::new()
            };
            return Ok(Tokenizer::Bpe(from_vocab_and_merges(
                &read(&vocab)?,
                &read(&merges)?,
                Pattern::Qwen2,
                true,
                added,
            )?));
        }
        Tokenizer::from_bytes(Tokenizer::kind_of_path(path)?, &read(path)?)
    }

    /// What `convert --tokenizer SPEC` embeds in a model file: the kind name (for the
    /// `goldcrest.tokenizer` key) and the vocabulary file's bytes. `SPEC` is `world` (the RWKV
    /// World vocabulary bundled with goldcrest), a vocabulary file, or a directory holding a
    /// `tokenizer.json`. `kind` overrides the kind [`Tokenizer::kind_of_path`] infers. The
    /// bytes are parsed here, so a broken vocabulary fails the conversion, not a later run.
    pub fn embeddable(spec: &str, kind: Option<&str>) -> Result<(String, Vec<u8>)> {
        let (kind, bytes) = if spec == "world" && kind.is_none_or(|k| k == "world") {
            ("world".to_string(), BUNDLED_WORLD_VOCAB.to_vec())
        } else {
            let mut path = Path::new(spec).to_path_buf();
            if path.is_dir() {
                path = path.join("tokenizer.json");
                if !path.is_file() {
                    return Err(TokenizerError::Unsupported(format!(
                        "{spec} has no tokenizer.json; a model file embeds one vocabulary file \
                         (tokenizer.json, *.tiktoken, rwkv_vocab_*.txt or *.gguf)"
                    )));
                }
            }
            let kind = match kind {
                Some(k) => k.to_string(),
                None => Tokenizer::kind_of_path(&path)?.to_string(),
            };
            let bytes = std::fs::read(&path).map_err(|e| {
                TokenizerError::Io(std::io::Error::new(
                    e.kind(),
                    format!("{}: {e}", path.display()),
                ))
            })?;
            (kind, bytes)
        };
        Tokenizer::from_bytes(&kind, &bytes)?;
        Ok((kind, bytes))
    }

    /// The tokenizer a goldcrest file carries (tensor `tokenizer`, kind in the
    /// `goldcrest.tokenizer` key), or `None` when it carries none.
    pub fn from_model(file: &SafeTensors<'_>) -> Result<Option<Tokenizer>> {
        let meta = file.metadata();
        let Some(kind) = meta.get(TOKENIZER_KIND_KEY) else {
            return Ok(None);
        };
        let kind = kind
            .as_str()
            .ok_or_else(|| TokenizerError::Format(format!("{TOKENIZER_KIND_KEY} holds escapes")))?;
        let bytes = file
            .tensor(TOKENIZER_TENSOR)
            .and_then(|t| t.u8s())
            .map_err(|e| {
                TokenizerError::Format(format!(
                    "{TOKENIZER_KIND_KEY} is {kind:?} but the `{TOKENIZER_TENSOR}` tensor is unusable: {e}"
                ))
            })?;
        Tokenizer::from_bytes(kind, bytes).map(Some)
    }

    /// One past the largest token id (the embedding needs at least this many rows).
    pub fn id_limit(&self) -> u32 {
        match self {
            Tokenizer::Bpe(t) => t.id_limit,
            Tokenizer::World(t) => t.id_limit(),
        }
    }

    /// The bytes of token `id`.
    pub fn token(&self, id: u32) -> Option<&[u8]> {
        match self {
            Tokenizer::Bpe(t) => t.token(id),
            Tokenizer::World(t) => t.token(id),
        }
    }

    /// The id of the special/added token spelled `content`, if there is one.
    pub fn added_token_id(&self, content: &str) -> Option<u32> {
        match self {
            Tokenizer::Bpe(t) => t.added.iter().find(|a| a.content == content).map(|a| a.id),
            Tokenizer::World(_) => None,
        }
    }

    /// Encodes text with special-token text kept as plain text, so user input cannot forge
    /// control tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        self.encode_into(text, false, &mut out, &mut Scratch::default());
        Ok(out)
    }

    /// Encodes text, parsing added/special tokens in it as HF `tokenizers` does.
    pub fn encode_with_special(&self, text: &str) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        self.encode_into(text, true, &mut out, &mut Scratch::default());
        Ok(out)
    }

    /// Appends the encoding of `text` to `out`, reusing `scratch` (the allocation-free form).
    pub fn encode_into(
        &self,
        text: &str,
        special: bool,
        out: &mut Vec<u32>,
        scratch: &mut Scratch,
    ) {
        match self {
            Tokenizer::Bpe(t) if special => t.encode_with_added_into(text, out, scratch),
            Tokenizer::Bpe(t) => t.encode_ordinary_into(text, out, scratch),
            Tokenizer::World(t) => t.encode_into(text.as_bytes(), out),
        }
    }

    /// Encodes raw bytes. BPE vocabularies are defined on text, so they require UTF-8 (the error
    /// gives the offset of the first bad byte); RWKV World encodes any bytes.
    pub fn encode_bytes(&self, bytes: &[u8], special: bool) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        match self {
            Tokenizer::World(t) => t.encode_into(bytes, &mut out),
            Tokenizer::Bpe(_) => {
                let text = std::str::from_utf8(bytes).map_err(|e| TokenizerError::InvalidUtf8 {
                    offset: e.valid_up_to(),
                })?;
                self.encode_into(text, special, &mut out, &mut Scratch::default());
            }
        }
        Ok(out)
    }

    /// Encodes many texts on all cores (rayon); results are in input order.
    pub fn encode_batch(&self, texts: &[&str], special: bool) -> Vec<Vec<u32>> {
        use rayon::prelude::*;
        texts
            .par_iter()
            .map_init(Scratch::default, |scratch, text| {
                let mut out = Vec::new();
                self.encode_into(text, special, &mut out, scratch);
                out
            })
            .collect()
    }

    /// The concatenated bytes of `ids`, which may not be UTF-8 (a token can hold part of a
    /// character).
    pub fn decode(&self, ids: &[u32]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for &id in ids {
            out.extend_from_slice(self.token(id).ok_or(TokenizerError::UnknownId(id))?);
        }
        Ok(out)
    }

    /// Like [`Tokenizer::decode`] but leaves out special (control) tokens.
    pub fn decode_skip_special(&self, ids: &[u32]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for &id in ids {
            if let Tokenizer::Bpe(t) = self
                && t.is_special(id)
            {
                continue;
            }
            out.extend_from_slice(self.token(id).ok_or(TokenizerError::UnknownId(id))?);
        }
        Ok(out)
    }

    /// Decodes to a string, replacing invalid UTF-8 with U+FFFD (HF's `errors="replace"`).
    pub fn decode_lossy(&self, ids: &[u32]) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.decode(ids)?).into_owned())
    }

    /// A decoder for ids arriving one at a time that emits only whole characters.
    pub fn stream_decoder(&self) -> StreamDecoder<'_> {
        StreamDecoder::new(self)
    }
}

#[cfg(test)]
mod tests;
