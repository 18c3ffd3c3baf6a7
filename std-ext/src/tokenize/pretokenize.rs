//! Pre-tokenisation: cutting text into the pieces BPE runs on, as the model's regex would.
//!
//! The reference tokenizers use backtracking regexes with look-ahead (`\s+(?!\S)`). Here each
//! pattern is a hand-written scanner that makes the same leftmost-first choices the regex engine
//! makes, in one forward pass with at most one character of look-ahead. The tests check every
//! scanner against `fancy-regex` running the original pattern, on the golden corpus and on
//! generated strings.
//!
//! Character classes follow the Unicode tables of the `unicode-properties` crate (`\p{L}`,
//! `\p{N}`) and of Rust's `char::is_whitespace` (`\s` = `White_Space`).

use std::sync::OnceLock;
use unicode_properties::{GeneralCategoryGroup, UnicodeGeneralCategory};

/// The pre-tokenisation regexes this crate implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// Qwen / Qwen2 / Qwen2.5 / Qwen3 (single digits, case-insensitive contractions):
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    Qwen2,
    /// GPT-2 and GPT-NeoX (byte-level BPE with `use_regex: true`):
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    Gpt2,
}

/// The Qwen2 regex as written in its `tokenizer.json`.
pub const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// The GPT-2 regex as written in GPT-2's encoder and HF's ByteLevel pre-tokeniser.
pub const GPT2_REGEX: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

impl Pattern {
    /// Recognises a regex string from a tokenizer file; `None` if it is not one of ours.
    pub fn from_regex(regex: &str) -> Option<Pattern> {
        match regex {
            QWEN2_REGEX => Some(Pattern::Qwen2),
            GPT2_REGEX => Some(Pattern::Gpt2),
            _ => None,
        }
    }

    /// The regex this scanner is equivalent to.
    pub fn regex(self) -> &'static str {
        match self {
            Pattern::Qwen2 => QWEN2_REGEX,
            Pattern::Gpt2 => GPT2_REGEX,
        }
    }

    /// The pieces of `text`, in order; they are non-empty and concatenate to `text`.
    pub fn pieces(self, text: &str) -> Pieces<'_> {
        Pieces {
            text,
            pos: 0,
            pattern: self,
        }
    }

    /// The end (byte offset) of the piece starting at `pos`, which must be a char boundary
    /// strictly inside `text`.
    fn piece_end(self, text: &str, pos: usize) -> usize {
        match self {
            Pattern::Qwen2 => qwen2_piece_end(text, pos),
            Pattern::Gpt2 => gpt2_piece_end(text, pos),
        }
    }
}

/// Iterator over the pre-tokenisation pieces of a text.
pub struct Pieces<'a> {
    text: &'a str,
    pos: usize,
    pattern: Pattern,
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        if self.pos >= self.text.len() {
            return None;
        }
        let start = self.pos;
        let end = self.pattern.piece_end(self.text, start);
        self.pos = end;
        self.text.get(start..end)
    }
}

const LETTER: u8 = 1;
const NUMBER: u8 = 2;
const SPACE: u8 = 4;

fn class_uncached(c: char) -> u8 {
    let mut class = match c.general_category_group() {
        GeneralCategoryGroup::Letter => LETTER,
        GeneralCategoryGroup::Number => NUMBER,
        _ => 0,
    };
    if c.is_whitespace() {
        class |= SPACE;
    }
    class
}

/// Class bits of every Basic Multilingual Plane code point, built once (64 KiB): the scanners
/// look up every character, and the general-category crate does a binary search per call.
fn bmp_classes() -> &'static [u8] {
    static TABLE: OnceLock<Vec<u8>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0u32..0x10000)
            .map(|cp| char::from_u32(cp).map_or(0, class_uncached))
            .collect()
    })
}

#[inline]
fn class(c: char) -> u8 {
    let cp = c as usize;
    if cp < 0x10000 {
        bmp_classes().get(cp).copied().unwrap_or(0)
    } else {
        class_uncached(c)
    }
}

/// The char at byte offset `pos` and its UTF-8 length, or `None` at the end.
#[inline]
fn char_at(text: &str, pos: usize) -> Option<(char, usize)> {
    let b = *text.as_bytes().get(pos)?;
    if b < 0x80 {
        return Some((b as char, 1));
    }
    let c = text.get(pos..)?.chars().next()?;
    Some((c, c.len_utf8()))
}

#[inline]
fn is_letter(c: char) -> bool {
    class(c) & LETTER != 0
}
#[inline]
fn is_number(c: char) -> bool {
    class(c) & NUMBER != 0
}
/// `[^\s\p{L}\p{N}]`
#[inline]
fn is_other(c: char) -> bool {
    class(c) == 0
}

/// End of the maximal run of chars satisfying `pred` starting at `pos`.
#[inline]
fn scan_while(text: &str, mut pos: usize, pred: impl Fn(char) -> bool) -> usize {
    while let Some((c, len)) = char_at(text, pos) {
        if !pred(c) {
            break;
        }
        pos += len;
    }
    pos
}

/// Length in bytes of a contraction suffix (`s`, `t`, `re`, `ve`, `m`, `ll`, `d`) at the start
/// of `rest`. With `fold`, letters match under Unicode simple case folding: for these letters
/// that adds the upper case and `ſ` (U+017F), which folds to `s`.
fn contraction_len(rest: &[u8], fold: bool) -> Option<usize> {
    let lower = |b: u8| if fold { b.to_ascii_lowercase() } else { b };
    let first = *rest.first()?;
    if fold && rest.starts_with("ſ".as_bytes()) {
        return Some(2);
    }
    match lower(first) {
        b's' | b't' | b'm' | b'd' => Some(1),
        b'r' | b'v' if rest.get(1).map(|&b| lower(b)) == Some(b'e') => Some(2),
        b'l' if rest.get(1).map(|&b| lower(b)) == Some(b'l') => Some(2),
        _ => None,
    }
}

/// The whitespace alternatives shared by both patterns, for a whitespace char at `pos`:
/// `\s+(?!\S)|\s+` (and, with `newline_alt`, Qwen2's `\s*[\r\n]+` tried first).
fn whitespace_end(text: &str, pos: usize, newline_alt: bool) -> usize {
    let mut end = pos;
    let mut last_start = pos;
    let mut after_newline = pos;
    while let Some((c, len)) = char_at(text, end) {
        if !c.is_whitespace() {
            break;
        }
        last_start = end;
        end += len;
        if c == '\r' || c == '\n' {
            after_newline = end;
        }
    }
    if newline_alt && after_newline > pos {
        // `\s*[\r\n]+`: the greedy `\s*` backs off to the last line break of the run.
        return after_newline;
    }
    if end == text.len() || last_start == pos {
        // At the end of text `(?!\S)` holds after the whole run; a single space before a
        // non-space fails `\s+(?!\S)` and falls through to `\s+`.
        return end;
    }
    // `\s+(?!\S)` backs off by one char so the run is followed by whitespace.
    last_start
}

fn qwen2_piece_end(text: &str, pos: usize) -> usize {
    let Some((c, len)) = char_at(text, pos) else {
        return text.len();
    };
    let after = pos + len;
    let bytes = text.as_bytes();
    // (?i:'s|'t|'re|'ve|'m|'ll|'d)
    if c == '\''
        && let Some(n) = contraction_len(bytes.get(after..).unwrap_or(&[]), true)
    {
        return after + n;
    }
    let next = char_at(text, after);
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if is_letter(c) {
        return scan_while(text, after, is_letter);
    }
    if c != '\r'
        && c != '\n'
        && !is_number(c)
        && let Some((c2, len2)) = next
        && is_letter(c2)
    {
        return scan_while(text, after + len2, is_letter);
    }
    // \p{N}
    if is_number(c) {
        return after;
    }
    // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
    let crlf = |c: char| c == '\r' || c == '\n';
    if is_other(c) {
        let end = scan_while(text, after, is_other);
        return scan_while(text, end, crlf);
    }
    if c == ' '
        && let Some((c2, len2)) = next
        && is_other(c2)
    {
        let end = scan_while(text, after + len2, is_other);
        return scan_while(text, end, crlf);
    }
    // c is whitespace here: `\s*[\r\n]+|\s+(?!\S)|\s+`
    whitespace_end(text, pos, true)
}

fn gpt2_piece_end(text: &str, pos: usize) -> usize {
    let Some((c, len)) = char_at(text, pos) else {
        return text.len();
    };
    let after = pos + len;
    if c == '\''
        && let Some(n) = contraction_len(text.as_bytes().get(after..).unwrap_or(&[]), false)
    {
        return after + n;
    }
    // ` ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+`: the optional space only when followed by the class.
    let (head, head_end) = if c == ' ' {
        match char_at(text, after) {
            Some((c2, len2)) => (c2, after + len2),
            None => return after,
        }
    } else {
        (c, after)
    };
    if is_letter(head) {
        return scan_while(text, head_end, is_letter);
    }
    if is_number(head) {
        return scan_while(text, head_end, is_number);
    }
    if is_other(head) {
        return scan_while(text, head_end, is_other);
    }
    if c != ' ' && !c.is_whitespace() {
        // Unreachable by the class partition; keep the scanner total anyway.
        return after;
    }
    whitespace_end(text, pos, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(pattern: Pattern, text: &str) -> Vec<String> {
        let re = fancy_regex::Regex::new(pattern.regex()).expect("pattern compiles");
        re.find_iter(text)
            .map(|m| m.expect("no backtrack limit").as_str().to_string())
            .collect()
    }

    fn ours(pattern: Pattern, text: &str) -> Vec<String> {
        pattern.pieces(text).map(str::to_string).collect()
    }

    fn check(text: &str) {
        for p in [Pattern::Qwen2, Pattern::Gpt2] {
            assert_eq!(ours(p, text), reference(p, text), "{p:?} on {text:?}");
        }
    }

    #[test]
    fn hand_picked_cases_match_the_regex() {
        for t in [
            "",
            "Hello world",
            "  leading spaces",
            "trailing   ",
            "a\n\n  b",
            " \r\n\t x",
            "x  \n",
            "I'm 'S 'RE 'ſ 'K we'LL 'll'",
            "½ ² Ⅻ ① 12345",
            "!!!\n\n?",
            " ,.;\r\n\r\nabc",
            "\t\tfoo",
            " \u{3000}中文 日本語",
            "👨‍👩‍👧 emoji",
            "a\u{301}",
            "' ",
            "'",
            " ",
            "\u{85}\u{a0}x",
        ] {
            check(t);
        }
    }

    fn interesting_char() -> impl Strategy<Value = char> {
        prop::sample::select(vec![
            'a', 'Z', 'é', '中', '1', '½', ' ', ' ', '\t', '\n', '\r', '\'', 's', 'S', 'l', 'r',
            'e', 'ſ', '!', '.', '😀', '\u{200d}', '\u{3000}', '\u{a0}', '\u{85}', '\u{301}', '-',
        ])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1500))]
        #[test]
        fn scanners_equal_the_regex_on_tricky_alphabets(chars in prop::collection::vec(interesting_char(), 0..24)) {
            let text: String = chars.into_iter().collect();
            check(&text);
        }

        #[test]
        fn scanners_equal_the_regex_on_any_text(text in "\\PC{0,40}") {
            check(&text);
        }
    }
}
