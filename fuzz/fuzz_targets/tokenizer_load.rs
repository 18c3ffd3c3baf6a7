//! Fuzzes the vocabulary loaders (tokenizer.json, tiktoken, RWKV World, GGUF): any input must
//! give an error or a tokenizer that encodes and decodes without panicking.
#![no_main]

use goldcrest_std::tokenize::{KINDS, Tokenizer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    for kind in KINDS {
        if let Ok(tok) = Tokenizer::from_bytes(kind, bytes) {
            let text = "Hello, world! 中文 <|im_end|>  \n\t½";
            for special in [false, true] {
                if let Ok(ids) = tok.encode_bytes(text.as_bytes(), special) {
                    let _ = tok.decode(&ids);
                }
            }
        }
    }
});
