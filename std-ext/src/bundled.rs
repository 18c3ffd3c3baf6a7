//! Models compiled into the library and the `goldcrest` binary, so `goldcrest forecast`,
//! `goldcrest generate` and the examples run with no download. Both files live in `models/`
//! (models/README.md has their data, training runs, losses and licences).
//!
//! Each file is stored at a 64-byte aligned address, so every tensor view is zero-copy (the
//! writer aligns tensors within the data section; docs/format.md).

use goldcrest_core::arena::Aligned;
use goldcrest_core::format::SafeTensors;

const TOTO_TINY_LEN: usize = include_bytes!("../../models/toto-tiny.safetensors").len();
static TOTO_TINY_FILE: Aligned<TOTO_TINY_LEN> =
    Aligned(*include_bytes!("../../models/toto-tiny.safetensors"));

/// The default model of `goldcrest forecast`: a Toto-architecture forecaster of 194,720
/// parameters with ternary transformer matrices, trained by `tools/toto/train_tiny.py` and
/// evaluated by `tools/toto/evaluate.py` (docs/toto.md has the configuration, data, training
/// run and the accuracy table).
pub static TOTO_TINY: &[u8] = &TOTO_TINY_FILE.0;

/// The context the bundled Toto was trained with: the CLI uses at most this many of the
/// latest steps unless told otherwise (longer contexts put positions the model never saw).
pub const TOTO_TINY_CONTEXT: usize = 256;

/// The bundled tiny Toto, parsed (a validated view of [`TOTO_TINY`]).
pub fn toto_tiny() -> Result<SafeTensors<'static>, goldcrest_core::Error> {
    crate::load::parse_hosted(TOTO_TINY)
}

const RWKV6_TINY_LEN: usize = include_bytes!("../../models/rwkv6-tiny.safetensors").len();
static RWKV6_TINY_FILE: Aligned<RWKV6_TINY_LEN> =
    Aligned(*include_bytes!("../../models/rwkv6-tiny.safetensors"));

/// The default model of `goldcrest generate` (under 1 MiB): an RWKV-6 of 3 blocks of width 128,
/// tq1_0 ternary linear layers, f16 embedding and head, and its own 1024-token byte-level BPE
/// embedded. Trained by `tools/rwkv6/train_tiny.py` on 36 of Shakespeare's plays (public
/// domain).
pub static RWKV6_TINY: &[u8] = &RWKV6_TINY_FILE.0;

#[cfg(test)]
mod tests {
    use super::*;
    use goldcrest_core::models::toto::Toto;

    #[test]
    fn bundled_models_are_aligned_and_load() {
        assert_eq!(TOTO_TINY.as_ptr() as usize % 64, 0);
        assert_eq!(RWKV6_TINY.as_ptr() as usize % 64, 0);
        let file = toto_tiny().expect("bundled file parses");
        assert!(file.metadata().arch().is_some_and(|a| a == "toto"));
        let model = Toto::new(file, goldcrest_core::kernels::Kernels::scalar());
        assert!(model.is_ok(), "bundled model loads: {:?}", model.err());
        let lm = crate::load::parse_hosted(RWKV6_TINY).expect("bundled rwkv6 parses");
        assert!(lm.metadata().arch().is_some_and(|a| a == "rwkv6"));
    }
}
