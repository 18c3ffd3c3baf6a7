//! Converters from other projects' checkpoints to goldcrest files.

pub mod toto;
