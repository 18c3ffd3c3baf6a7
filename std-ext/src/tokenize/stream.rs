//! Streaming detokenisation: ids arrive one at a time (generation), text leaves in whole
//! characters only.

use super::{Result, Tokenizer, TokenizerError};

/// Turns a stream of ids into text without ever splitting a UTF-8 character.
///
/// A token may end inside a multi-byte character (1,448 Qwen tokens do); those bytes wait until
/// the character completes. Invalid sequences become U+FFFD exactly where
/// `String::from_utf8_lossy` on the whole output would put them, so the concatenated chunks
/// equal the lossy decoding of all ids.
pub struct StreamDecoder<'a> {
    tokenizer: &'a Tokenizer,
    pending: Vec<u8>,
}

impl<'a> StreamDecoder<'a> {
    pub(crate) fn new(tokenizer: &'a Tokenizer) -> Self {
        StreamDecoder {
            tokenizer,
            pending: Vec::with_capacity(8),
        }
    }

    /// Adds one id; returns the text that is now complete (possibly empty).
    pub fn push(&mut self, id: u32) -> Result<String> {
        let bytes = self
            .tokenizer
            .token(id)
            .ok_or(TokenizerError::UnknownId(id))?;
        Ok(self.push_bytes(bytes))
    }

    /// Adds raw bytes; returns the text that is now complete.
    pub fn push_bytes(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut start = 0;
        loop {
            let rest = &self.pending[start..];
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    start = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // `valid` bytes were just checked, so this cannot fail.
                    out.push_str(std::str::from_utf8(&rest[..valid]).unwrap_or_default());
                    match e.error_len() {
                        // The tail is an incomplete character: keep it for the next token.
                        None => {
                            start += valid;
                            break;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            start += valid + bad;
                        }
                    }
                }
            }
        }
        self.pending.drain(..start);
        out
    }

    /// Ends the stream: an unfinished character becomes U+FFFD.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }

    /// Bytes held back because they end in an incomplete character.
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }
}
