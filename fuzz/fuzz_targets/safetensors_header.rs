//! Fuzzes the safetensors reader: any input must give an error or a file whose every view and
//! lookup works in bounds (libFuzzer reports panics, out-of-bounds reads and timeouts).
#![no_main]

use goldcrest_core::format::{SafeTensors, TensorSlot};
use libfuzzer_sys::fuzz_target;

/// Exercises everything a consumer can do with a parsed file.
fn exercise(file: &SafeTensors<'_>) {
    let data = file.data();
    let base = data.as_ptr() as usize;
    let mut covered = 0usize;
    for t in file.tensors() {
        let start = t.bytes().as_ptr() as usize - base;
        assert!(start + t.bytes().len() <= data.len());
        covered += t.bytes().len();
        let mut name = [0u8; 256];
        if let Ok(n) = t.name().unescape(&mut name) {
            assert_eq!(file.tensor(n).map(|u| u.bytes().as_ptr()), Ok(t.bytes().as_ptr()));
        }
        let _ = (t.format(), t.f32s(), t.f16s(), t.bf16s(), t.i8s(), t.u8s(), t.matrix());
        let _ = t.expect_shape(&[1, 1]);
    }
    assert_eq!(covered, data.len());
    let meta = file.metadata();
    for (k, v) in meta.iter() {
        let mut buf = [0u8; 256];
        if let Ok(k) = k.unescape(&mut buf) {
            assert!(meta.get(k).is_some());
        }
        let _ = v.decoded_len();
    }
    let _ = (meta.format_version(), meta.arch(), meta.get_u64("goldcrest.x.n"));
}

/// Whether two errors report the same kind of problem. The scratch-free and sorting checks may
/// name different tensors, or see an overlap versus a hole first, when a file has several
/// layout problems or several duplicate names; both answers are correct.
fn same_kind(a: &goldcrest_core::Error, b: &goldcrest_core::Error) -> bool {
    use goldcrest_core::Error::{BadOffsets, DataGap};
    let layout = |e: &goldcrest_core::Error| matches!(e, BadOffsets { .. } | DataGap { .. });
    (layout(a) && layout(b)) || core::mem::discriminant(a) == core::mem::discriminant(b)
}

fuzz_target!(|bytes: &[u8]| {
    let plain = SafeTensors::parse(bytes);
    let mut slots = [TensorSlot::default(); 64];
    let sorted = SafeTensors::parse_with_scratch(bytes, &mut slots);
    match (&plain, &sorted) {
        (Ok(a), Ok(_)) => exercise(a),
        (Err(a), Err(b)) => assert!(same_kind(a, b), "{a:?} vs {b:?}"),
        _ => panic!("scratch and scratch-free checks disagree: {plain:?} vs {sorted:?}"),
    }
});
