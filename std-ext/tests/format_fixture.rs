//! The committed fixture `tests/fixtures/format/tiny.safetensors` (used by core's firmware-style
//! doctest): regenerate it with `cargo test -p goldcrest-std --test format_fixture -- --ignored`;
//! the normal test checks that the writer still produces the same content.

use std::collections::BTreeMap;
use std::path::PathBuf;

use goldcrest_core::format::SafeTensors;
use goldcrest_core::quant::Format;
use goldcrest_std::load::parse_hosted;
use goldcrest_std::write::ModelWriter;
use half::f16;

fn fixture_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/format/tiny.safetensors")
}

fn tiny() -> ModelWriter {
    let mut w = ModelWriter::new();
    w.arch("demo").unwrap();
    w.hyperparameter("d_model", 4).unwrap();
    w.hyperparameter("n_layer", 1).unwrap();
    // Trits cycling through the 2-bit codes, scale bytes included: any bytes are a valid block.
    let up: Vec<u8> = (0..4 * 66).map(|i| (i * 7 % 256) as u8).collect();
    w.packed("layers.0.ffn.up", Format::Tq2_0, 4, 256, up)
        .unwrap();
    w.f32("norm.weight", &[4], &[1.0, 0.5, -0.5, 2.0]).unwrap();
    let embed: Vec<f16> = (0..12).map(|i| f16::from_f32(i as f32 / 4.0)).collect();
    w.f16("embed", &[3, 4], &embed).unwrap();
    w.i8("head", &[2, 4], &[1, -1, 0, 1, -1, 0, 1, -1]).unwrap();
    w
}

type Content = (
    BTreeMap<String, (String, Vec<u64>, Vec<u8>)>,
    BTreeMap<String, String>,
);

/// Tensors and metadata, compared as maps.
fn content(st: &SafeTensors<'_>) -> Content {
    let tensors = st
        .tensors()
        .map(|t| {
            let format = t.format().map(|f| f.name().to_string()).unwrap_or_default();
            (
                t.name().to_string(),
                (format, t.shape().to_vec(), t.bytes().to_vec()),
            )
        })
        .collect();
    let meta = st
        .metadata()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (tensors, meta)
}

#[test]
#[ignore = "rewrites the committed fixture"]
fn regenerate() {
    tiny().write_file(fixture_path()).unwrap();
}

#[test]
fn committed_fixture_matches_the_writer() {
    let committed = std::fs::read(fixture_path()).expect("fixture is committed");
    let fresh = tiny().to_bytes().unwrap();
    let a = parse_hosted(&committed).unwrap();
    let b = parse_hosted(&fresh).unwrap();
    assert_eq!(content(&a), content(&b));
    // The writer is deterministic, so the bytes agree too.
    assert!(
        committed == fresh,
        "writer output changed; regenerate the fixture if intended"
    );
}

#[test]
fn writer_output_is_deterministic() {
    let mut w = tiny();
    for i in 0..32 {
        w.metadata(&format!("note.{i}"), &format!("value {i}"))
            .unwrap();
    }
    let first = w.to_bytes().unwrap();
    for _ in 0..4 {
        assert!(w.to_bytes().unwrap() == first);
    }
}
