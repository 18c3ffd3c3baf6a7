//! Writer + reader round trips: what `ModelWriter` writes, core reads back exactly, aligned.

use goldcrest_core::format::{Dtype, SafeTensors};
use goldcrest_core::quant::{Format, Matrix};
use goldcrest_std::load::{FileError, ModelFile};
use goldcrest_std::write::{ModelWriter, check_alignment};
use half::{bf16, f16};
use proptest::prelude::*;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(37).wrapping_add(seed))
        .collect()
}

fn sample_writer() -> ModelWriter {
    let mut w = ModelWriter::new();
    w.arch("rwkv6").unwrap();
    w.hyperparameter("n_layer", 2).unwrap();
    w.hyperparameter("rescale", 0.5).unwrap();
    w.metadata("source", "unit test \"quoted\"\nline").unwrap();
    w.tokenizer("world", b"hello tokenizer".to_vec()).unwrap();
    w.u8("odd_bytes", &[3], vec![1, 2, 3]).unwrap();
    w.i8("qi8", &[1, 5], &[-1, 2, -3, 4, -5]).unwrap();
    w.f16(
        "h",
        &[3],
        &[f16::from_f32(1.5), f16::from_f32(-2.0), f16::from_f32(0.25)],
    )
    .unwrap();
    w.bf16("b", &[1], &[bf16::from_f32(3.0)]).unwrap();
    w.f32("w", &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
        .unwrap();
    w.packed("tq2", Format::Tq2_0, 3, 300, pattern(3 * 132, 1))
        .unwrap();
    w.packed("tq1", Format::Tq1_0, 2, 256, pattern(2 * 54, 2))
        .unwrap();
    w.packed("q8", Format::Q8_0, 1, 33, pattern(68, 3)).unwrap();
    w.packed("q4", Format::Q4_0, 2, 32, pattern(36, 4)).unwrap();
    w
}

#[test]
fn file_round_trip_through_mmap() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    sample_writer().write_file(&path).unwrap();
    assert!(!dir.path().join("model.safetensors.goldcrest-tmp").exists());

    let model = ModelFile::open(&path).unwrap();
    assert_eq!(
        model.bytes().as_ptr() as usize % 4096,
        0,
        "maps are page-aligned"
    );
    let st = model.safetensors().unwrap();
    check_alignment(&st).unwrap();
    assert_eq!(st.data_offset() % 8, 0);
    assert_eq!(st.len(), 10);

    let meta = st.metadata();
    assert_eq!(meta.format_version().unwrap(), Some((1, 0)));
    assert!(meta.arch().unwrap() == "rwkv6");
    assert_eq!(meta.hyperparameter_usize("rwkv6", "n_layer"), Ok(2));
    assert_eq!(meta.hyperparameter_f32("rwkv6", "rescale"), Ok(0.5));
    assert_eq!(
        meta.get("source").unwrap().to_string(),
        "unit test \"quoted\"\nline"
    );
    assert!(meta.get("goldcrest.tokenizer").unwrap() == "world");
    assert!(meta.get("goldcrest.tensor.tq2").unwrap() == "tq2_0 3 300");

    let w = st.tensor("w").unwrap();
    assert_eq!(w.f32s().unwrap(), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(w.matrix().unwrap().rows(), 2);
    let h: Vec<f32> = st
        .tensor("h")
        .unwrap()
        .f16s()
        .unwrap()
        .iter()
        .map(|x| x.to_f32())
        .collect();
    assert_eq!(h, [1.5, -2.0, 0.25]);
    assert_eq!(st.tensor("b").unwrap().bf16s().unwrap()[0].to_f32(), 3.0);
    assert_eq!(
        st.tensor("qi8").unwrap().i8s().unwrap(),
        &[-1, 2, -3, 4, -5]
    );
    assert_eq!(st.tensor("odd_bytes").unwrap().u8s().unwrap(), &[1, 2, 3]);
    assert_eq!(
        st.tensor("tokenizer").unwrap().u8s().unwrap(),
        b"hello tokenizer"
    );

    for (name, format, rows, cols, row_bytes, seed) in [
        ("tq2", Format::Tq2_0, 3, 300, 132, 1),
        ("tq1", Format::Tq1_0, 2, 256, 54, 2),
        ("q8", Format::Q8_0, 1, 33, 68, 3),
        ("q4", Format::Q4_0, 2, 32, 18, 4),
    ] {
        let t = st.tensor(name).unwrap();
        assert!(t.is_packed());
        assert_eq!(t.dtype(), Dtype::U8);
        assert_eq!(t.format(), Ok(format));
        assert_eq!(t.shape(), &[rows, cols]);
        assert_eq!(t.stored_shape(), &[rows, row_bytes]);
        let m = t.matrix().unwrap();
        assert_eq!(
            (m.rows(), m.cols(), m.row_bytes()),
            (rows as usize, cols as usize, row_bytes as usize)
        );
        assert_eq!(
            m.data(),
            pattern(rows as usize * row_bytes as usize, seed).as_slice()
        );
    }
}

#[test]
fn writer_orders_by_alignment() {
    let bytes = sample_writer().to_bytes().unwrap();
    let st = goldcrest_std::load::parse_hosted(&bytes).unwrap();
    let aligns: Vec<usize> = {
        let mut ts: Vec<_> = st.tensors().collect();
        ts.sort_by_key(|t| t.data_offset());
        ts.iter().map(|t| t.dtype().alignment()).collect()
    };
    assert!(aligns.windows(2).all(|w| w[0] >= w[1]), "{aligns:?}");
    check_alignment(&st).unwrap();
}

#[test]
fn matrix_round_trip() {
    let data = pattern(2 * 66, 9);
    let m = Matrix::new("m", Format::Tq2_0, 2, 200, &data).unwrap();
    let mut w = ModelWriter::new();
    w.matrix("m", &m).unwrap();
    let f = [0.5f32, 1.5];
    let fb: Vec<u8> = f.iter().flat_map(|x| x.to_le_bytes()).collect();
    let words: Vec<u32> = f.iter().map(|x| x.to_bits()).collect();
    let plain = Matrix::new("p", Format::F32, 1, 2, bytemuck::cast_slice(&words)).unwrap();
    w.matrix("p", &plain).unwrap();
    let bytes = w.to_bytes().unwrap();
    let st = goldcrest_std::load::parse_hosted(&bytes).unwrap();
    assert_eq!(
        st.tensor("m").unwrap().matrix().unwrap().data(),
        data.as_slice()
    );
    assert_eq!(st.tensor("p").unwrap().bytes(), fb.as_slice());
}

#[test]
fn writer_refuses_inconsistent_input() {
    let mut w = ModelWriter::new();
    assert!(matches!(
        w.f32("a", &[3], &[1.0, 2.0]),
        Err(FileError::Invalid(_))
    ));
    w.f32("a", &[2], &[1.0, 2.0]).unwrap();
    assert!(matches!(
        w.f32("a", &[2], &[1.0, 2.0]),
        Err(FileError::Invalid(_))
    ));
    assert!(matches!(
        w.hyperparameter("n", 1),
        Err(FileError::Invalid(_))
    ));
    assert!(matches!(w.arch("Llama 2"), Err(FileError::Invalid(_))));
    w.arch("llama").unwrap();
    assert!(matches!(
        w.hyperparameter("a.b", 1),
        Err(FileError::Invalid(_))
    ));
    for key in [
        "goldcrest.format_version",
        "goldcrest.arch",
        "goldcrest.tensor.a",
        "goldcrest.tokenizer",
    ] {
        assert!(
            matches!(w.metadata(key, "x"), Err(FileError::Invalid(_))),
            "{key}"
        );
    }
    assert!(matches!(
        w.plain("q", Format::Tq2_0, &[1, 66], vec![0; 66]),
        Err(FileError::Invalid(_))
    ));
    assert!(matches!(
        w.packed("q", Format::F32, 1, 1, vec![0; 4]),
        Err(FileError::Invalid(_))
    ));
    assert!(matches!(
        w.packed("q", Format::Tq2_0, 1, 256, vec![0; 65]),
        Err(FileError::Invalid(_))
    ));
    assert!(matches!(
        w.u8("__metadata__", &[1], vec![0]),
        Err(FileError::Invalid(_))
    ));
    assert!(matches!(
        w.u8("deep", &[1; 9], vec![0]),
        Err(FileError::Invalid(_))
    ));
    let msg = w.f32("b", &[3], &[1.0]).unwrap_err().to_string();
    assert!(msg.contains("needs 12"), "{msg}");
}

#[test]
fn open_reports_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.safetensors");
    let e = ModelFile::open(&missing).unwrap_err();
    assert!(matches!(e, FileError::Io { .. }));
    assert!(e.to_string().contains("missing.safetensors"));

    let garbage = dir.path().join("garbage.bin");
    std::fs::write(&garbage, b"definitely not a model").unwrap();
    let e = ModelFile::open(&garbage).unwrap_err();
    assert!(
        matches!(
            e,
            FileError::Format {
                source: goldcrest_core::Error::HeaderLength { .. },
                ..
            }
        ),
        "{e}"
    );

    let empty = dir.path().join("empty.bin");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(
        ModelFile::open(&empty).unwrap_err(),
        FileError::Format {
            source: goldcrest_core::Error::Truncated { .. },
            ..
        }
    ));
}

#[derive(Debug, Clone)]
enum Item {
    Plain(Format, Vec<usize>),
    Packed(Format, usize, usize),
}

fn item() -> impl Strategy<Value = Item> {
    let plain = (
        prop::sample::select(vec![
            Format::F32,
            Format::F16,
            Format::Bf16,
            Format::I8,
            Format::U8,
        ]),
        prop::collection::vec(0usize..5, 0..4),
    )
        .prop_map(|(f, s)| Item::Plain(f, s));
    let packed = (
        prop::sample::select(vec![
            Format::Q8_0,
            Format::Q4_0,
            Format::Tq2_0,
            Format::Tq1_0,
        ]),
        0usize..4,
        0usize..600,
    )
        .prop_map(|(f, r, c)| Item::Packed(f, r, c));
    prop_oneof![plain, packed]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Any mix of formats and shapes comes back byte for byte, aligned, with its logical shape.
    #[test]
    fn any_model_round_trips(items in prop::collection::btree_map("[a-z]{1,6}(\\.[a-z0-9]{1,4}){0,2}", item(), 0..8)) {
        let mut w = ModelWriter::new();
        let mut expected = Vec::new();
        for (i, (name, it)) in items.iter().enumerate() {
            match it {
                Item::Plain(f, shape) => {
                    let n: usize = shape.iter().product::<usize>() * f.block_bytes();
                    let bytes = pattern(n, i as u8);
                    w.plain(name, *f, shape, bytes.clone()).unwrap();
                    expected.push((name.clone(), *f, shape.iter().map(|&d| d as u64).collect::<Vec<_>>(), bytes));
                }
                Item::Packed(f, rows, cols) => {
                    let bytes = pattern(rows * f.row_bytes(*cols).unwrap(), i as u8);
                    w.packed(name, *f, *rows, *cols, bytes.clone()).unwrap();
                    expected.push((name.clone(), *f, vec![*rows as u64, *cols as u64], bytes));
                }
            }
        }
        let bytes = w.to_bytes().unwrap();
        // An 8-aligned copy, as an mmap would give.
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(&bytes);
        let buf = &bytemuck::cast_slice::<u64, u8>(&words)[..bytes.len()];
        let st = SafeTensors::parse(buf).unwrap();
        prop_assert!(check_alignment(&st).is_ok());
        prop_assert_eq!(st.len(), expected.len());
        for (name, f, shape, data) in expected {
            let t = st.tensor(&name).unwrap();
            prop_assert_eq!(t.format(), Ok(f));
            prop_assert_eq!(t.shape(), shape.as_slice());
            prop_assert_eq!(t.bytes(), data.as_slice());
            let typed_ok = match f {
                Format::F32 => t.f32s().is_ok(),
                Format::F16 => t.f16s().is_ok(),
                Format::Bf16 => t.bf16s().is_ok(),
                Format::I8 => t.i8s().is_ok(),
                Format::U8 => t.u8s().is_ok(),
                _ => t.matrix().is_ok(),
            };
            prop_assert!(typed_ok, "zero-copy view of {} failed", name);
            if shape.len() == 2 && f != Format::U8 {
                prop_assert!(t.matrix().is_ok());
            }
        }
    }
}
