//! Models compiled into the library, so that `goldcrest generate` and the examples run with no
//! download.

use goldcrest_core::arena::Aligned;

const RWKV6_TINY_LEN: usize = include_bytes!("../../models/rwkv6-tiny.safetensors").len();
/// Aligned storage: safetensors data must sit at an address aligned for its element types.
static RWKV6_TINY_ALIGNED: Aligned<RWKV6_TINY_LEN> =
    Aligned(*include_bytes!("../../models/rwkv6-tiny.safetensors"));

/// The tiny default RWKV-6 (models/rwkv6-tiny.safetensors, under 1 MiB): 3 blocks of width 128,
/// tq1_0 ternary linear layers, f16 embedding and head, and its own 1024-token byte-level BPE
/// embedded. Trained by tools/rwkv6/train_tiny.py on 36 of Shakespeare's plays (public domain);
/// see models/README.md for its data, losses and licence.
pub static RWKV6_TINY: &[u8] = &RWKV6_TINY_ALIGNED.0;
