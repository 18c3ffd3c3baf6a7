//! The tokenizer error type: every loader and encoder failure says what was wrong and where.

use std::fmt;

/// Why a vocabulary could not be loaded or a text could not be encoded or decoded.
#[derive(Debug)]
pub enum TokenizerError {
    /// A vocabulary or merges file is malformed; the message names the file part and the problem.
    Format(String),
    /// The file names a feature (normaliser, pre-tokeniser pattern, model type) this crate does not implement.
    Unsupported(String),
    /// A token id is outside the vocabulary.
    UnknownId(u32),
    /// Input text that must be UTF-8 is not; `offset` is the first bad byte.
    InvalidUtf8 {
        /// Byte offset of the first invalid byte.
        offset: usize,
    },
    /// Reading a file failed.
    Io(std::io::Error),
}

impl fmt::Display for TokenizerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenizerError::Format(m) => write!(f, "malformed vocabulary: {m}"),
            TokenizerError::Unsupported(m) => write!(f, "unsupported tokenizer feature: {m}"),
            TokenizerError::UnknownId(id) => write!(f, "token id {id} is not in the vocabulary"),
            TokenizerError::InvalidUtf8 { offset } => {
                write!(
                    f,
                    "text is not valid UTF-8 (first bad byte at offset {offset})"
                )
            }
            TokenizerError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for TokenizerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TokenizerError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for TokenizerError {
    fn from(e: std::io::Error) -> Self {
        TokenizerError::Io(e)
    }
}

/// Shorthand for a malformed-file error.
pub(crate) fn format_err(msg: impl Into<String>) -> TokenizerError {
    TokenizerError::Format(msg.into())
}

/// Result alias for the tokenizer module.
pub type Result<T> = std::result::Result<T, TokenizerError>;
