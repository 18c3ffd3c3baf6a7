//! Rust-side tests of the C ABI (the C programs in examples/c test it from C).
