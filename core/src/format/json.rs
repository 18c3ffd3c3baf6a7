//! A minimal, strict, allocation-free JSON scanner for safetensors headers.
//!
//! It validates RFC 8259 syntax as it goes (strings with every escape form, numbers, literals,
//! nesting bounded by [`MAX_DEPTH`] without recursion) and hands out [`JsonStr`]: string
//! contents borrowed from the header, decoded lazily so nothing is ever copied or allocated.
//!
//! The input is a `&str`, so UTF-8 validity is established once, before scanning; the scanner
//! then works on bytes and only ever slices the text at ASCII delimiters.

use core::cmp::Ordering;
use core::fmt;

use crate::error::{Error, Result};

/// Deepest nesting of arrays and objects accepted inside a header (safetensors headers need
/// depth 3; the bound keeps malicious input from costing more than one pass).
pub const MAX_DEPTH: u32 = 64;

/// The contents of a JSON string, borrowed from the header, escapes not yet decoded.
///
/// Compare it with `==` against a `&str` (escapes are decoded on the fly), print it with
/// `Display`, get a plain `&str` without copying when it has no escapes ([`JsonStr::as_str`]),
/// or decode it into a caller buffer ([`JsonStr::unescape`]).
#[derive(Clone, Copy)]
pub struct JsonStr<'a> {
    raw: &'a str,
    escaped: bool,
}

impl<'a> JsonStr<'a> {
    #[cfg(test)]
    pub(crate) const fn plain(raw: &'a str) -> Self {
        JsonStr {
            raw,
            escaped: false,
        }
    }

    pub(crate) const fn from_parts(raw: &'a str, escaped: bool) -> Self {
        JsonStr { raw, escaped }
    }

    /// The text exactly as written between the quotes, escapes included.
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    /// Whether the text contains backslash escapes.
    pub fn has_escapes(&self) -> bool {
        self.escaped
    }

    /// The decoded text without copying, if it has no escapes.
    pub fn as_str(&self) -> Option<&'a str> {
        (!self.escaped).then_some(self.raw)
    }

    /// The decoded characters.
    pub fn chars(&self) -> Chars<'a> {
        Chars { rest: self.raw }
    }

    /// Length of the decoded text in UTF-8 bytes.
    pub fn decoded_len(&self) -> usize {
        if self.escaped {
            self.chars().map(char::len_utf8).sum()
        } else {
            self.raw.len()
        }
    }

    /// The decoded text: borrowed from the header when it has no escapes, otherwise decoded into
    /// `buf`. Fails with [`Error::BufferTooSmall`] if `buf` cannot hold it.
    pub fn unescape<'b>(&self, buf: &'b mut [u8]) -> Result<&'b str>
    where
        'a: 'b,
    {
        if !self.escaped {
            return Ok(self.raw);
        }
        let mut len = 0usize;
        for c in self.chars() {
            let n = c.len_utf8();
            let Some(dst) = buf.get_mut(len..len + n) else {
                return Err(Error::BufferTooSmall {
                    needed: self.decoded_len() as u64,
                    provided: buf.len() as u64,
                });
            };
            c.encode_utf8(dst);
            len += n;
        }
        // Only whole `char`s were encoded, so this is valid UTF-8.
        core::str::from_utf8(&buf[..len]).map_err(|_| Error::OutOfRange)
    }

    /// Whether the decoded text starts with `prefix`; if so, the decoded remainder's characters.
    pub(crate) fn strip_prefix(&self, prefix: &str) -> Option<Chars<'a>> {
        let mut chars = self.chars();
        for p in prefix.chars() {
            if chars.next() != Some(p) {
                return None;
            }
        }
        Some(chars)
    }

    /// Orders by decoded text (code point order, which equals UTF-8 byte order).
    pub fn cmp_decoded(&self, other: &JsonStr<'_>) -> Ordering {
        if !self.escaped && !other.escaped {
            return self.raw.cmp(other.raw);
        }
        self.chars().cmp(other.chars())
    }
}

impl PartialEq<str> for JsonStr<'_> {
    fn eq(&self, other: &str) -> bool {
        if self.escaped {
            self.chars().eq(other.chars())
        } else {
            self.raw == other
        }
    }
}

impl PartialEq<&str> for JsonStr<'_> {
    fn eq(&self, other: &&str) -> bool {
        *self == **other
    }
}

impl PartialEq for JsonStr<'_> {
    fn eq(&self, other: &JsonStr<'_>) -> bool {
        self.cmp_decoded(other) == Ordering::Equal
    }
}

impl Eq for JsonStr<'_> {}

impl fmt::Display for JsonStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.escaped {
            return f.write_str(self.raw);
        }
        for c in self.chars() {
            fmt::Write::write_char(f, c)?;
        }
        Ok(())
    }
}

impl fmt::Debug for JsonStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for c in self.chars() {
            for e in c.escape_debug() {
                fmt::Write::write_char(f, e)?;
            }
        }
        f.write_str("\"")
    }
}

/// Decoded characters of a [`JsonStr`].
#[derive(Clone)]
pub struct Chars<'a> {
    rest: &'a str,
}

fn hex4(b: &[u8]) -> Option<u32> {
    let digits = b.get(..4)?;
    let mut v = 0u32;
    for &d in digits {
        v = v * 16 + (d as char).to_digit(16)?;
    }
    Some(v)
}

impl Iterator for Chars<'_> {
    type Item = char;

    fn next(&mut self) -> Option<char> {
        let c = self.rest.chars().next()?;
        if c != '\\' {
            self.rest = self.rest.get(c.len_utf8()..).unwrap_or("");
            return Some(c);
        }
        let b = self.rest.as_bytes();
        let (decoded, used) = match b.get(1) {
            Some(b'"') => ('"', 2),
            Some(b'\\') => ('\\', 2),
            Some(b'/') => ('/', 2),
            Some(b'b') => ('\u{8}', 2),
            Some(b'f') => ('\u{c}', 2),
            Some(b'n') => ('\n', 2),
            Some(b'r') => ('\r', 2),
            Some(b't') => ('\t', 2),
            Some(b'u') => decode_u_escape(b),
            // Unreachable for validated strings; degrade instead of panicking.
            _ => (char::REPLACEMENT_CHARACTER, b.len().min(2)),
        };
        self.rest = self.rest.get(used..).unwrap_or("");
        Some(decoded)
    }
}

/// Decodes `\uXXXX` (and a following low surrogate) at the start of `b`; returns the character
/// and the bytes consumed.
fn decode_u_escape(b: &[u8]) -> (char, usize) {
    let Some(hi) = b.get(2..).and_then(hex4) else {
        return (char::REPLACEMENT_CHARACTER, b.len());
    };
    if (0xD800..0xDC00).contains(&hi) {
        let lo = match (b.get(6..8), b.get(8..).and_then(hex4)) {
            (Some(b"\\u"), Some(lo)) if (0xDC00..0xE000).contains(&lo) => lo,
            _ => return (char::REPLACEMENT_CHARACTER, 6),
        };
        let cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
        return (
            char::from_u32(cp).unwrap_or(char::REPLACEMENT_CHARACTER),
            12,
        );
    }
    (char::from_u32(hi).unwrap_or(char::REPLACEMENT_CHARACTER), 6)
}

/// A cursor over JSON text that validates as it reads.
#[derive(Clone)]
pub(crate) struct Scanner<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Scanner { text, pos: 0 }
    }

    /// A scanner positioned at byte `pos` of `text`.
    pub(crate) fn at(text: &'a str, pos: usize) -> Self {
        Scanner { text, pos }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Text from `start` up to the current position.
    pub(crate) fn text_between(&self, start: usize) -> Option<&'a str> {
        self.text.get(start..self.pos)
    }

    pub(crate) fn error(&self, expected: &'static str) -> Error {
        Error::Json {
            offset: u32::try_from(self.pos).unwrap_or(u32::MAX),
            expected,
        }
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    pub(crate) fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// Skips whitespace, then consumes `byte` or fails saying `expected`.
    pub(crate) fn expect(&mut self, byte: u8, expected: &'static str) -> Result<()> {
        self.skip_ws();
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(expected))
        }
    }

    /// Skips whitespace and consumes `byte` if it is next.
    pub(crate) fn eat(&mut self, byte: u8) -> bool {
        self.skip_ws();
        if self.peek() == Some(byte) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Whether only whitespace remains.
    pub(crate) fn at_end(&mut self) -> bool {
        self.skip_ws();
        self.pos == self.text.len()
    }

    /// Reads a string (after optional whitespace), validating escapes and rejecting raw control
    /// characters and lone surrogates.
    pub(crate) fn string(&mut self) -> Result<JsonStr<'a>> {
        self.expect(b'"', "string")?;
        let start = self.pos;
        let bytes = self.text.as_bytes();
        let mut escaped = false;
        loop {
            let Some(&b) = bytes.get(self.pos) else {
                return Err(self.error("closing quote"));
            };
            match b {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    self.escape()?;
                }
                0x00..=0x1F => return Err(self.error("escaped control character")),
                _ => self.pos += 1,
            }
        }
        let raw = self
            .text
            .get(start..self.pos)
            .ok_or_else(|| self.error("string"))?;
        self.pos += 1;
        Ok(JsonStr { raw, escaped })
    }

    /// Validates one escape sequence at `pos` (which is at the backslash) and steps over it.
    fn escape(&mut self) -> Result<()> {
        let bytes = self.text.as_bytes();
        match bytes.get(self.pos + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.pos += 2;
                Ok(())
            }
            Some(b'u') => {
                let unit = self.hex_unit(self.pos + 2)?;
                self.pos += 6;
                match unit {
                    0xD800..=0xDBFF => {
                        if bytes.get(self.pos..self.pos + 2) != Some(b"\\u") {
                            return Err(self.error("low surrogate after high surrogate"));
                        }
                        let low = self.hex_unit(self.pos + 2)?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return Err(self.error("low surrogate after high surrogate"));
                        }
                        self.pos += 6;
                        Ok(())
                    }
                    0xDC00..=0xDFFF => Err(self.error("high surrogate before low surrogate")),
                    _ => Ok(()),
                }
            }
            _ => Err(self.error("valid escape")),
        }
    }

    fn hex_unit(&self, at: usize) -> Result<u32> {
        self.text
            .as_bytes()
            .get(at..)
            .and_then(hex4)
            .ok_or(Error::Json {
                offset: u32::try_from(at).unwrap_or(u32::MAX),
                expected: "four hex digits",
            })
    }

    /// Reads a non-negative integer that fits `u64` (no sign, fraction, exponent or leading
    /// zeros), as safetensors requires for shapes and offsets.
    pub(crate) fn uint(&mut self) -> Result<u64> {
        self.skip_ws();
        let start = self.pos;
        let mut value = 0u64;
        while let Some(d @ b'0'..=b'9') = self.peek() {
            if self.pos > start && value == 0 {
                return Err(self.error("no leading zeros"));
            }
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(d - b'0')))
                .ok_or_else(|| self.error("integer below 2^64"))?;
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.error("non-negative integer"));
        }
        if let Some(b'.' | b'e' | b'E') = self.peek() {
            return Err(self.error("integer without fraction or exponent"));
        }
        Ok(value)
    }

    fn digits(&mut self) -> Result<()> {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.error("digit"));
        }
        Ok(())
    }

    /// Validates any JSON number.
    fn number(&mut self) -> Result<()> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits()?,
            _ => return Err(self.error("digit")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            self.digits()?;
        }
        Ok(())
    }

    fn literal(&mut self, word: &'static str) -> Result<()> {
        if self.text.as_bytes().get(self.pos..self.pos + word.len()) == Some(word.as_bytes()) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.error(word))
        }
    }

    /// Whether the next value is `null` (consumed if so).
    pub(crate) fn null(&mut self) -> bool {
        self.skip_ws();
        if self.text.as_bytes().get(self.pos..self.pos + 4) == Some(b"null") {
            self.pos += 4;
            true
        } else {
            false
        }
    }

    /// Validates and steps over one JSON value of any kind, iteratively, with nesting bounded by
    /// [`MAX_DEPTH`]. A bit per level records whether it is an object (1) or an array (0).
    pub(crate) fn skip_value(&mut self) -> Result<()> {
        let mut kinds: u64 = 0;
        let mut depth: u32 = 0;
        loop {
            // A value is expected here.
            self.skip_ws();
            let mut finished_value = true;
            match self.peek() {
                Some(open @ (b'{' | b'[')) => {
                    if depth == MAX_DEPTH {
                        return Err(self.error("shallower nesting"));
                    }
                    self.pos += 1;
                    let is_object = open == b'{';
                    kinds = (kinds << 1) | u64::from(is_object);
                    depth += 1;
                    let close = if is_object { b'}' } else { b']' };
                    if !self.eat(close) {
                        if is_object {
                            self.string()?;
                            self.expect(b':', "':'")?;
                        }
                        finished_value = false;
                    } else {
                        kinds >>= 1;
                        depth -= 1;
                    }
                }
                Some(b'"') => {
                    self.string()?;
                }
                Some(b't') => self.literal("true")?,
                Some(b'f') => self.literal("false")?,
                Some(b'n') => self.literal("null")?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                _ => return Err(self.error("value")),
            }
            if !finished_value {
                continue;
            }
            // A value just ended: close containers until one continues with ','.
            loop {
                if depth == 0 {
                    return Ok(());
                }
                let in_object = kinds & 1 == 1;
                if self.eat(b',') {
                    if in_object {
                        self.string()?;
                        self.expect(b':', "':'")?;
                    }
                    break;
                }
                let close = if in_object { b'}' } else { b']' };
                if !self.eat(close) {
                    return Err(self.error(if in_object {
                        "',' or '}'"
                    } else {
                        "',' or ']'"
                    }));
                }
                kinds >>= 1;
                depth -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skip(text: &str) -> Result<usize> {
        let mut s = Scanner::new(text);
        s.skip_value()?;
        if !s.at_end() {
            return Err(s.error("end"));
        }
        Ok(s.pos())
    }

    #[test]
    fn accepts_valid_values() {
        for v in [
            "0",
            "-0.5e+3",
            "12.25E-2",
            "true",
            "false",
            "null",
            "\"a\\u00e9\\ud83d\\ude00\"",
            "[]",
            "{}",
            "[1, [2, {\"a\": [null]}], \"x\"]",
            " { \"k\" : { \"k\" : [ ] } } ",
        ] {
            assert!(skip(v).is_ok(), "{v}");
        }
    }

    #[test]
    fn rejects_invalid_values() {
        for v in [
            "",
            "01",
            "1.",
            "-",
            "1e",
            ".5",
            "+1",
            "tru",
            "nul",
            "[1,]",
            "[1 2]",
            "{\"a\" 1}",
            "{\"a\":1,}",
            "{1:2}",
            "[",
            "{\"a\":",
            "\"abc",
            "\"\\x\"",
            "\"\\u12\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\ud800\\u0041\"",
            "\"tab\there\"",
            "[1]]",
            "}",
        ] {
            assert!(skip(v).is_err(), "{v:?}");
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let mut deep = [0u8; 2 * (MAX_DEPTH as usize + 1)];
        let (open, close) = deep.split_at_mut(MAX_DEPTH as usize + 1);
        open.fill(b'[');
        close.fill(b']');
        let too_deep = core::str::from_utf8(&deep).unwrap();
        assert!(matches!(skip(too_deep), Err(Error::Json { .. })));
        let ok = &too_deep[1..too_deep.len() - 1];
        assert!(skip(ok).is_ok());
    }

    #[test]
    fn strings_decode_lazily() {
        let mut s = Scanner::new(r#""a\"b\\c\/\n\u00e9\ud83d\ude00""#);
        let js = s.string().unwrap();
        assert!(js.has_escapes());
        assert!(js == "a\"b\\c/\né😀");
        assert_eq!(js.decoded_len(), "a\"b\\c/\né😀".len());
        let mut buf = [0u8; 32];
        assert_eq!(js.unescape(&mut buf).unwrap(), "a\"b\\c/\né😀");
        let mut small = [0u8; 4];
        assert!(matches!(
            js.unescape(&mut small),
            Err(Error::BufferTooSmall { .. })
        ));
        assert!(js.as_str().is_none());
        let plain = Scanner::new("\"plain\"").string().unwrap();
        assert_eq!(plain.as_str(), Some("plain"));
        assert!(plain == JsonStr::plain("plain"));
        let b = Scanner::new(r#""\u0062""#).string().unwrap();
        assert_eq!(b.cmp_decoded(&JsonStr::plain("a")), Ordering::Greater);
        assert_eq!(b.cmp_decoded(&JsonStr::plain("b")), Ordering::Equal);
        assert_eq!(b.cmp_decoded(&JsonStr::plain("bb")), Ordering::Less);
    }

    #[test]
    fn uints_are_strict() {
        for (t, v) in [("0", 0u64), ("18446744073709551615", u64::MAX), (" 42", 42)] {
            assert_eq!(Scanner::new(t).uint().unwrap(), v);
        }
        for t in ["18446744073709551616", "-1", "01", "1.0", "1e3", ""] {
            assert!(Scanner::new(t).uint().is_err(), "{t}");
        }
    }
}
