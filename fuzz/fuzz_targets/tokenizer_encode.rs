//! Fuzzes the Qwen2 and RWKV World encoders on arbitrary input: UTF-8 text must round-trip
//! (after NFC for Qwen2), bytes must round-trip for RWKV World, and the streaming decoder must
//! agree with whole-output lossy decoding.
#![no_main]

use goldcrest_std::tokenize::Tokenizer;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn load(rel: &str) -> Tokenizer {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    Tokenizer::from_path(&root.join(rel)).expect("shipped vocabulary loads")
}

fuzz_target!(|bytes: &[u8]| {
    static QWEN: OnceLock<Tokenizer> = OnceLock::new();
    static WORLD: OnceLock<Tokenizer> = OnceLock::new();
    let qwen = QWEN.get_or_init(|| load("vocab/qwen2/tokenizer.json"));
    let world = WORLD.get_or_init(|| load("vocab/rwkv/rwkv_vocab_v20230424.txt"));
    if let Ok(text) = std::str::from_utf8(bytes) {
        for special in [false, true] {
            let ids = qwen.encode_bytes(bytes, special).expect("UTF-8 encodes");
            let back = qwen.decode(&ids).expect("own ids decode");
            let again = qwen.encode_bytes(&back, special).expect("decoded text encodes");
            assert_eq!(ids, again, "encoding NFC text is stable: {text:?}");
        }
    }
    let ids = world.encode_bytes(bytes, false).expect("RWKV encodes any bytes");
    assert_eq!(world.decode(&ids).expect("own ids decode"), bytes);
    let mut stream = world.stream_decoder();
    let mut text = String::new();
    for &id in &ids {
        text.push_str(&stream.push(id).expect("own id"));
    }
    text.push_str(&stream.finish());
    assert_eq!(text, String::from_utf8_lossy(bytes));
});
