//! Model architectures, each reading its weights in place from a goldcrest file and running in
//! caller-provided memory.

pub mod toto;
