//! aarch64 NEON kernels (placeholder replaced below).
