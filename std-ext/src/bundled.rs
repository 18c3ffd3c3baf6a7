//! Models compiled into the library and the `goldcrest` binary.
//!
//! [`TOTO_TINY`] is the default model of `goldcrest forecast`: a Toto-architecture forecaster
//! of 194,720 parameters with ternary transformer matrices, trained by
//! `tools/toto/train_tiny.py` and evaluated by `tools/toto/evaluate.py` (docs/toto.md has the
//! configuration, data, training run and the accuracy table).

use goldcrest_core::arena::Aligned;
use goldcrest_core::format::SafeTensors;

const TOTO_TINY_BYTES: &[u8] = include_bytes!("../assets/toto-tiny.safetensors");

/// The file in the binary at a 64-byte aligned address, so every tensor view is zero-copy
/// (the writer aligns tensors within the data section; docs/format.md).
static TOTO_TINY_FILE: Aligned<{ TOTO_TINY_BYTES.len() }> =
    Aligned(*include_bytes!("../assets/toto-tiny.safetensors"));

/// The bytes of the bundled tiny ternary Toto (a goldcrest safetensors file).
pub static TOTO_TINY: &[u8] = &TOTO_TINY_FILE.0;

/// The context the bundled model was trained with: the CLI uses at most this many of the
/// latest steps unless told otherwise (longer contexts put positions the model never saw).
pub const TOTO_TINY_CONTEXT: usize = 256;

/// The bundled tiny Toto, parsed (a validated view of [`TOTO_TINY`]).
pub fn toto_tiny() -> Result<SafeTensors<'static>, goldcrest_core::Error> {
    crate::load::parse_hosted(TOTO_TINY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use goldcrest_core::models::toto::Toto;

    #[test]
    fn bundled_model_is_aligned_and_loads() {
        assert_eq!(TOTO_TINY.as_ptr() as usize % 64, 0);
        let file = toto_tiny().expect("bundled file parses");
        assert!(file.metadata().arch().is_some_and(|a| a == "toto"));
        let model = Toto::new(file, goldcrest_core::kernels::Kernels::scalar());
        assert!(model.is_ok(), "bundled model loads: {:?}", model.err());
    }
}
