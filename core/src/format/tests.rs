//! Unit tests: one or more per error variant, plus the happy paths of views and metadata.

extern crate alloc;
extern crate std;

use alloc::string::String;
use alloc::vec::Vec;

use super::*;
use crate::error::Error;
use crate::quant::Format;

/// Bytes at an 8-aligned address (as an mmap or an aligned static would be).
struct AlignedBytes {
    words: Vec<u64>,
    len: usize,
}

impl AlignedBytes {
    fn new(bytes: &[u8]) -> Self {
        let mut words = alloc::vec![0u64; bytes.len().div_ceil(8) + 1];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        AlignedBytes {
            words,
            len: bytes.len(),
        }
    }
    fn get(&self) -> &[u8] {
        &bytemuck::cast_slice::<u64, u8>(&self.words)[..self.len]
    }
    /// The same bytes shifted by one, so nothing wider than a byte is aligned.
    fn shifted(&self) -> &[u8] {
        &bytemuck::cast_slice::<u64, u8>(&self.words)[..self.len + 1]
    }
}

/// A file from a header (padded to 8 bytes) and data section.
fn file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut h = String::from(header);
    while h.len() % 8 != 0 {
        h.push(' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out
}

fn parse_both(bytes: &[u8]) -> crate::Result<()> {
    let plain = SafeTensors::parse(bytes).map(|_| ());
    let mut slots = [TensorSlot::default(); 16];
    let scratch = SafeTensors::parse_with_scratch(bytes, &mut slots).map(|_| ());
    // Both strategies must agree on the kind of problem (which tensor they name may differ
    // when there are several; `format_props` covers that).
    assert_eq!(
        plain.map_err(|e| core::mem::discriminant(&e)),
        scratch.map_err(|e| core::mem::discriminant(&e)),
        "scratch and scratch-free checks disagree"
    );
    plain
}

fn f32_bytes(xs: &[f32]) -> Vec<u8> {
    xs.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn reads_tensors_and_views() {
    let data = [
        f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
        alloc::vec![0x00, 0x3c, 0x80, 0x3f],
        alloc::vec![0xff, 7],
    ]
    .concat();
    let bytes = file(
        r#"{"__metadata__":{"goldcrest.arch":"llama","goldcrest.llama.n_layer":"24","esc":"a\u00e9\n"},"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"h":{"dtype":"F16","shape":[1],"data_offsets":[24,26]},"b":{"dtype":"BF16","shape":[1],"data_offsets":[26,28]},"q":{"dtype":"I8","shape":[2],"data_offsets":[28,30]}}"#,
        &data,
    );
    let buf = AlignedBytes::new(&bytes);
    let st = SafeTensors::parse(buf.get()).unwrap();
    assert_eq!(st.len(), 4);
    assert_eq!(st.data_offset() % 8, 0);
    let w = st.tensor("w").unwrap();
    assert!(w.name() == "w");
    assert_eq!(w.format(), Ok(Format::F32));
    assert_eq!(w.shape(), &[2, 3]);
    assert_eq!(w.f32s().unwrap(), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert!(w.expect_shape(&[2, 3]).is_ok());
    let m = w.matrix().unwrap();
    assert_eq!((m.format(), m.rows(), m.cols()), (Format::F32, 2, 3));
    assert_eq!(st.tensor("h").unwrap().f16s().unwrap()[0].to_f32(), 1.0);
    assert_eq!(st.tensor("b").unwrap().bf16s().unwrap()[0].to_f32(), 1.0);
    assert_eq!(st.tensor("q").unwrap().i8s().unwrap(), &[-1, 7]);
    let names: Vec<String> = st
        .tensors()
        .map(|t| alloc::format!("{}", t.name()))
        .collect();
    assert_eq!(names, ["w", "h", "b", "q"]);

    let meta = st.metadata();
    assert_eq!(meta.len(), 3);
    assert!(meta.arch().unwrap() == "llama");
    assert_eq!(meta.hyperparameter_usize("llama", "n_layer"), Ok(24));
    assert_eq!(meta.get_u64("goldcrest.llama.n_layer"), Ok(24));
    let esc = meta.get("esc").unwrap();
    assert!(esc.as_str().is_none());
    let mut b = [0u8; 8];
    assert_eq!(esc.unescape(&mut b).unwrap(), "aé\n");
    assert_eq!(meta.format_version(), Ok(None));
    assert_eq!(meta.get_str("goldcrest.arch"), Ok("llama"));
    assert_eq!(meta.expect_arch("llama"), Ok(()));
    assert!(matches!(
        meta.expect_arch("qwen2"),
        Err(Error::BadMetadata { key }) if key.as_str() == "goldcrest.arch"
    ));
    // A number is not a flag; an absent flag takes the default only in the `_or` form.
    assert!(matches!(
        meta.hyperparameter_bool("llama", "n_layer"),
        Err(Error::BadMetadata { key }) if key.as_str() == "goldcrest.llama.n_layer"
    ));
    assert!(matches!(
        meta.hyperparameter_bool_or("llama", "n_layer", true),
        Err(Error::BadMetadata { .. })
    ));
    assert!(matches!(
        meta.hyperparameter_bool("llama", "tied"),
        Err(Error::BadMetadata { key }) if key.as_str() == "goldcrest.llama.tied"
    ));
    assert_eq!(meta.hyperparameter_bool_or("llama", "tied", true), Ok(true));
    assert!(matches!(
        meta.get_str("esc"),
        Err(Error::BadMetadata { .. })
    ));
    assert!(matches!(
        meta.get_str("absent"),
        Err(Error::BadMetadata { .. })
    ));
    assert!(matches!(
        meta.get_u64("esc"),
        Err(Error::BadMetadata { key }) if key.as_str() == "esc"
    ));
    assert!(matches!(
        meta.hyperparameter_usize("llama", "n_head"),
        Err(Error::BadMetadata { key }) if key.as_str() == "goldcrest.llama.n_head"
    ));
}

#[test]
fn empty_file_and_null_metadata() {
    let bytes = file("{}", &[]);
    let st = SafeTensors::parse(&bytes).unwrap();
    assert!(st.is_empty());
    assert!(st.metadata().is_empty());
    let bytes = file(r#"{"__metadata__":null}"#, &[]);
    assert!(SafeTensors::parse(&bytes).unwrap().metadata().is_empty());
}

#[test]
fn truncated_and_header_length() {
    assert_eq!(
        SafeTensors::parse(&[1, 0, 0]).unwrap_err(),
        Error::Truncated {
            needed: 8,
            available: 3
        }
    );
    for declared in [0u64, 1, 100, MAX_HEADER_LEN + 1, u64::MAX] {
        let mut b = declared.to_le_bytes().to_vec();
        b.extend_from_slice(b"{}      ");
        assert_eq!(
            SafeTensors::parse(&b).unwrap_err(),
            Error::HeaderLength { declared },
            "{declared}"
        );
    }
}

#[test]
fn json_errors() {
    let mut bad_utf8 = file("{}", &[]);
    bad_utf8[9] = 0xff;
    assert!(matches!(
        SafeTensors::parse(&bad_utf8),
        Err(Error::Json {
            offset: 1,
            expected: "UTF-8"
        })
    ));
    for header in [
        "[]",
        "{",
        r#"{"a":1}"#,
        r#"{} x"#,
        r#"{"a":{"dtype":"U8","shape":[1]}}"#,
        r#"{"a":{"dtype":"U8","data_offsets":[0,1]}}"#,
        r#"{"a":{"shape":[1],"data_offsets":[0,1]}}"#,
        r#"{"a":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#,
        r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1,2]}}"#,
        r#"{"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}}"#,
        r#"{"a":{"dtype":"U8","shape":[1.0],"data_offsets":[0,1]}}"#,
        r#"{"__metadata__":{"k":1}}"#,
        r#"{"__metadata__":{"k":"v",}}"#,
        r#"{"__metadata__":[]}"#,
    ] {
        let bytes = file(header, &[0]);
        assert!(
            matches!(parse_both(&bytes), Err(Error::Json { .. })),
            "{header}: {:?}",
            parse_both(&bytes)
        );
    }
    // Unknown fields are skipped (after validation), as the reference reader does.
    let ok = file(
        r#"{"a":{"extra":[{"x":null}],"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#,
        &[0],
    );
    assert!(parse_both(&ok).is_ok());
    let bad = file(
        r#"{"a":{"extra":[{"x":nul}],"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#,
        &[0],
    );
    assert!(matches!(parse_both(&bad), Err(Error::Json { .. })));
}

#[test]
fn dtype_errors_and_unsupported_views() {
    let bytes = file(
        r#"{"a":{"dtype":"F31","shape":[1],"data_offsets":[0,4]}}"#,
        &[0; 4],
    );
    assert!(
        matches!(parse_both(&bytes), Err(Error::UnknownDtype { tensor }) if tensor.as_str() == "a")
    );
    // Escaped dtype names decode like any JSON string.
    let bytes = file(
        r#"{"a":{"dtype":"F\u00364","shape":[1],"data_offsets":[0,8]}}"#,
        &[0; 8],
    );
    let buf = AlignedBytes::new(&bytes);
    let st = SafeTensors::parse(buf.get()).unwrap();
    let a = st.tensor("a").unwrap();
    assert_eq!(a.dtype(), Dtype::F64);
    assert!(matches!(a.format(), Err(Error::UnsupportedFormat { .. })));
    assert!(matches!(a.f32s(), Err(Error::UnsupportedFormat { .. })));
    assert!(matches!(a.matrix(), Err(Error::UnsupportedFormat { .. })));
    assert_eq!(a.bytes().len(), 8);
    for d in DTYPES {
        assert_eq!(Dtype::from_name(d.name()), Some(d));
    }
}

#[test]
fn shape_errors() {
    let rank9 = file(
        r#"{"a":{"dtype":"U8","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,1]}}"#,
        &[0],
    );
    assert!(matches!(parse_both(&rank9), Err(Error::BadShape { .. })));
    let overflow = file(
        r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}}"#,
        &[],
    );
    assert!(matches!(parse_both(&overflow), Err(Error::BadShape { .. })));
    let byte_overflow = file(
        r#"{"a":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,0]}}"#,
        &[],
    );
    assert!(matches!(
        parse_both(&byte_overflow),
        Err(Error::BadShape { .. })
    ));
    let half_byte = file(
        r#"{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,1]}}"#,
        &[0],
    );
    assert!(matches!(
        parse_both(&half_byte),
        Err(Error::BadShape { .. })
    ));
    let ok = file(
        r#"{"a":{"dtype":"F4","shape":[4],"data_offsets":[0,2]}}"#,
        &[0, 0],
    );
    assert!(parse_both(&ok).is_ok());
    let rank8 = file(
        r#"{"a":{"dtype":"U8","shape":[1,1,1,1,1,1,1,1],"data_offsets":[0,1]}}"#,
        &[0],
    );
    assert!(parse_both(&rank8).is_ok());
}

#[test]
fn offset_errors() {
    for (header, data) in [
        (
            r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[1,0]}}"#,
            1,
        ),
        (
            r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#,
            1,
        ),
        (
            r#"{"a":{"dtype":"U16","shape":[1],"data_offsets":[0,1]}}"#,
            1,
        ),
        // Overlap, out of order (the checks without the in-order fast path).
        (
            r#"{"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]},"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#,
            3,
        ),
        // Exact duplicate ranges, covering twice what exists.
        (
            r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#,
            4,
        ),
        // Empty tensor inside another one.
        (
            r#"{"b":{"dtype":"U8","shape":[0],"data_offsets":[1,1]},"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#,
            2,
        ),
    ] {
        let bytes = file(header, &alloc::vec![0u8; data]);
        assert!(
            matches!(
                parse_both(&bytes),
                Err(Error::BadOffsets { .. }) | Err(Error::DataGap { .. })
            ),
            "{header}: {:?}",
            parse_both(&bytes)
        );
    }
    let oob = file(
        r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#,
        &[0],
    );
    assert!(
        matches!(parse_both(&oob), Err(Error::BadOffsets { tensor }) if tensor.as_str() == "a")
    );
    let overlap = file(
        r#"{"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]},"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"c":{"dtype":"U8","shape":[1],"data_offsets":[3,4]}}"#,
        &[0; 4],
    );
    assert!(matches!(
        parse_both(&overlap),
        Err(Error::BadOffsets { .. })
    ));
}

#[test]
fn data_gaps() {
    let trailing = file(
        r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#,
        &[0, 0],
    );
    assert_eq!(
        parse_both(&trailing),
        Err(Error::DataGap {
            covered: 1,
            data_len: 2
        })
    );
    let hole = file(
        r#"{"b":{"dtype":"U8","shape":[1],"data_offsets":[2,3]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#,
        &[0; 3],
    );
    assert_eq!(
        parse_both(&hole),
        Err(Error::DataGap {
            covered: 2,
            data_len: 3
        })
    );
    let late_start = file(
        r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#,
        &[0; 2],
    );
    assert!(matches!(
        parse_both(&late_start),
        Err(Error::DataGap { .. })
    ));
}

#[test]
fn out_of_order_partitions_are_valid() {
    let bytes = file(
        r#"{"c":{"dtype":"U8","shape":[0],"data_offsets":[3,3]},"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]},"e":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"d":{"dtype":"U8","shape":[1],"data_offsets":[3,4]}}"#,
        &[1, 2, 3, 4],
    );
    parse_both(&bytes).unwrap();
    let st = SafeTensors::parse(&bytes).unwrap();
    assert_eq!(st.tensor("b").unwrap().bytes(), &[2, 3]);
    assert_eq!(st.tensor("d").unwrap().u8s().unwrap(), &[4]);
    // Too little scratch falls back to the scratch-free checks.
    let mut slots = [TensorSlot::default(); 2];
    assert!(SafeTensors::parse_with_scratch(&bytes, &mut slots).is_ok());
}

#[test]
fn duplicates() {
    for header in [
        r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#,
        r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"\u0061":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#,
    ] {
        let bytes = file(header, &[0; 2]);
        assert!(
            matches!(parse_both(&bytes), Err(Error::DuplicateTensor { tensor }) if tensor.as_str() == "a")
        );
    }
    let two_meta = file(r#"{"__metadata__":{},"__metadata__":{}}"#, &[]);
    assert!(matches!(
        parse_both(&two_meta),
        Err(Error::DuplicateTensor { .. })
    ));
    let dup_key = file(r#"{"__metadata__":{"k":"1","k":"2"}}"#, &[]);
    assert!(matches!(parse_both(&dup_key), Err(Error::BadMetadata { key }) if key.as_str() == "k"));
}

#[test]
fn escaped_names_are_found_and_reported() {
    let bytes = file(
        r#"{"w\u00e9\"":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#,
        &[9],
    );
    let st = SafeTensors::parse(&bytes).unwrap();
    let t = st.tensor("wé\"").unwrap();
    assert_eq!(t.u8s().unwrap(), &[9]);
    assert_eq!(alloc::format!("{}", t.name()), "wé\"");
    assert!(matches!(
        t.expect_shape(&[2]),
        Err(Error::ShapeMismatch { tensor, .. }) if tensor.as_str() == "wé\""
    ));
    assert!(
        matches!(st.tensor("nope"), Err(Error::MissingTensor { tensor }) if tensor.as_str() == "nope")
    );
}

#[test]
fn misaligned_views_are_errors() {
    let bytes = file(
        r#"{"w":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8]}}"#,
        &f32_bytes(&[1.0, 2.0]),
    );
    let buf = AlignedBytes::new(&bytes);
    // Shift by one: a one-byte prefix then the file.
    let mut shifted = alloc::vec![0u8];
    shifted.extend_from_slice(&bytes);
    let sbuf = AlignedBytes::new(&shifted);
    let st = SafeTensors::parse(&sbuf.get()[1..]).unwrap();
    let w = st.tensor("w").unwrap();
    assert_eq!(
        w.f32s(),
        Err(Error::Misaligned {
            tensor: crate::error::Name::new("w"),
            required: 4
        })
    );
    assert!(matches!(
        w.matrix(),
        Err(Error::Misaligned { required: 4, .. })
    ));
    let _ = buf.shifted();
    assert!(
        SafeTensors::parse(buf.get())
            .unwrap()
            .tensor("w")
            .unwrap()
            .f32s()
            .is_ok()
    );
}

fn packed_file(spec: &str, dtype: &str, shape: &str, len: usize) -> Vec<u8> {
    file(
        &alloc::format!(
            r#"{{"__metadata__":{{"goldcrest.format_version":"1.0","goldcrest.tensor.t":"{spec}"}},"t":{{"dtype":"{dtype}","shape":{shape},"data_offsets":[0,{len}]}}}}"#
        ),
        &alloc::vec![0u8; len],
    )
}

#[test]
fn packed_tensors() {
    // 3 rows of 300 ternary weights: 2 blocks of 66 bytes per row.
    let bytes = packed_file("tq2_0 3 300", "U8", "[3,132]", 396);
    let st = SafeTensors::parse(&bytes).unwrap();
    let t = st.tensor("t").unwrap();
    assert!(t.is_packed());
    assert_eq!(t.format(), Ok(Format::Tq2_0));
    assert_eq!(t.shape(), &[3, 300]);
    assert_eq!(t.stored_shape(), &[3, 132]);
    assert!(matches!(t.u8s(), Err(Error::UnsupportedFormat { .. })));
    let m = t.matrix().unwrap();
    assert_eq!(
        (m.format(), m.rows(), m.cols(), m.row_bytes()),
        (Format::Tq2_0, 3, 300, 132)
    );
    assert_eq!(st.metadata().format_version(), Ok(Some((1, 0))));

    let q8 = packed_file("q8_0 2 64", "U8", "[2,68]", 136);
    assert_eq!(
        SafeTensors::parse(&q8)
            .unwrap()
            .tensor("t")
            .unwrap()
            .format(),
        Ok(Format::Q8_0)
    );

    for spec in [
        "tq2_0 3",
        "tq2_0 3 300 1",
        "tq2_0  3 300",
        "f32 3 300",
        "zz 3 300",
        "tq2_0 03 300",
        "tq2_0 -3 300",
        "",
    ] {
        let bytes = packed_file(spec, "U8", "[3,132]", 396);
        assert!(
            matches!(parse_both(&bytes), Err(Error::BadMetadata { key }) if key.as_str() == "goldcrest.tensor.t"),
            "{spec:?}"
        );
    }
    let wrong_rows = packed_file("tq2_0 2 300", "U8", "[3,132]", 396);
    assert!(matches!(
        parse_both(&wrong_rows),
        Err(Error::ShapeMismatch { .. })
    ));
    let wrong_cols = packed_file("tq2_0 3 600", "U8", "[3,132]", 396);
    assert!(matches!(
        parse_both(&wrong_cols),
        Err(Error::ShapeMismatch { .. })
    ));
    let not_u8 = packed_file("tq2_0 3 300", "I8", "[3,132]", 396);
    assert!(matches!(
        parse_both(&not_u8),
        Err(Error::UnsupportedFormat { .. })
    ));
    let missing = file(
        r#"{"__metadata__":{"goldcrest.tensor.x":"tq2_0 1 256"}}"#,
        &[],
    );
    assert!(matches!(
        parse_both(&missing),
        Err(Error::BadMetadata { .. })
    ));
}

#[test]
fn format_versions() {
    let v = |s: &str| {
        file(
            &alloc::format!(r#"{{"__metadata__":{{"goldcrest.format_version":"{s}"}}}}"#),
            &[],
        )
    };
    assert!(parse_both(&v("1.0")).is_ok());
    assert!(parse_both(&v("1.7")).is_ok());
    assert!(parse_both(&v("0.9")).is_ok());
    assert_eq!(
        parse_both(&v("2.0")),
        Err(Error::UnsupportedVersion {
            found_major: 2,
            supported_major: 1
        })
    );
    for bad in ["1", "one.0", "1.", ".1", "1.0.0", "+1.0", "99999.0"] {
        assert!(
            matches!(parse_both(&v(bad)), Err(Error::BadMetadata { .. })),
            "{bad}"
        );
    }
}

#[test]
fn not_matrix() {
    let bytes = file(
        r#"{"v":{"dtype":"I8","shape":[3],"data_offsets":[0,3]}}"#,
        &[0; 3],
    );
    let st = SafeTensors::parse(&bytes).unwrap();
    assert!(matches!(
        st.tensor("v").unwrap().matrix(),
        Err(Error::NotMatrix { rank: 1, .. })
    ));
    let u = file(
        r#"{"u":{"dtype":"U8","shape":[1,3],"data_offsets":[0,3]}}"#,
        &[0; 3],
    );
    let st = SafeTensors::parse(&u).unwrap();
    assert!(matches!(
        st.tensor("u").unwrap().matrix(),
        Err(Error::UnsupportedFormat { .. })
    ));
}

#[test]
fn long_names_are_truncated_in_errors() {
    let long: String = core::iter::repeat_n('x', 100).collect();
    let bytes = file(
        &alloc::format!(r#"{{"{long}":{{"dtype":"F31","shape":[],"data_offsets":[0,0]}}}}"#),
        &[],
    );
    match SafeTensors::parse(&bytes) {
        Err(Error::UnknownDtype { tensor }) => {
            assert!(tensor.is_truncated());
            assert_eq!(tensor.as_str().len(), crate::error::NAME_CAPACITY);
        }
        other => panic!("{other:?}"),
    }
}

/// A header of one-byte U8 tensors with these names, in this order.
fn named(names: &[&str]) -> Vec<u8> {
    let entries: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            alloc::format!(
                r#""{n}":{{"dtype":"U8","shape":[1],"data_offsets":[{i},{}]}}"#,
                i + 1
            )
        })
        .collect();
    file(
        &alloc::format!("{{{}}}", entries.join(",")),
        &alloc::vec![0u8; names.len()],
    )
}

#[test]
fn duplicate_checks_for_every_name_order() {
    // One sorted run, a few runs (merged), more runs than the merge takes (pairwise).
    let sorted = ["a", "b", "c", "d"];
    let few_runs = ["b", "d", "a", "c", "e", "d2"];
    let many_runs = ["j", "i", "h", "g", "f", "e", "d", "c", "b", "a"];
    for names in [&sorted[..], &few_runs[..], &many_runs[..]] {
        assert!(parse_both(&named(names)).is_ok(), "{names:?}");
        for dup in 0..names.len() {
            let mut with_dup = names.to_vec();
            with_dup.push(names[dup]);
            assert!(
                matches!(parse_both(&named(&with_dup)), Err(Error::DuplicateTensor { tensor }) if tensor.as_str() == names[dup]),
                "{with_dup:?}"
            );
            let mut front = names.to_vec();
            front.insert(0, names[dup]);
            assert!(
                matches!(
                    parse_both(&named(&front)),
                    Err(Error::DuplicateTensor { .. })
                ),
                "{front:?}"
            );
        }
    }
}

#[test]
fn packed_lookup_with_and_without_escapes() {
    // Escaped key for a plain name, plain key for an escaped name, and a value that looks like
    // the key (must not be taken for it).
    for (key, name) in [
        (r"goldcrest.tensor.\u0074", "t"),
        ("goldcrest.tensor.é", r"\u00e9"),
        ("goldcrest.tensor.t", "t"),
    ] {
        let bytes = file(
            &alloc::format!(
                r#"{{"__metadata__":{{"decoy":"{key}","{key}":"tq2_0 1 256","after":"x"}},"{name}":{{"dtype":"U8","shape":[1,66],"data_offsets":[0,66]}}}}"#
            ),
            &[0u8; 66],
        );
        let st = parse_both(&bytes)
            .and_then(|()| SafeTensors::parse(&bytes))
            .unwrap();
        let t = st.tensors().next().unwrap();
        assert_eq!(t.format(), Ok(Format::Tq2_0), "{key} / {name}");
        assert_eq!(t.shape(), &[1, 256]);
    }
}
