//! `goldcrest logits` on the golden fixture: the JSON lines parse back to the reference logits
//! (tolerance 1e-4), whatever the chunk size.

mod common;
use common::{fixture, goldcrest, goldcrest_ok, golden_f32, golden_ids, join_ids};

#[test]
fn logits_lines_match_the_reference() {
    let golden = fixture("rwkv6/tiny_a.golden.safetensors");
    let (tokens, reference) = (
        golden_ids(&golden, "tokens"),
        golden_f32(&golden, "step_logits"),
    );
    let model = fixture("rwkv6/tiny_a.safetensors");
    let model = model.to_str().unwrap();
    for chunk in ["1", "5", "64"] {
        let run = goldcrest_ok([
            "logits",
            "--model",
            model,
            "--chunk",
            chunk,
            "--ids",
            &join_ids(&tokens),
        ]);
        let d = common::max_abs_diff(&common::logits_lines(&run.stdout), &reference);
        assert!(d <= 1e-4, "chunk {chunk}: {d}");
    }
    let bad = goldcrest(["logits", "--model", model, "--ids", "1,96"]);
    assert!(!bad.ok);
    assert!(bad.stderr.contains("token id 96 at position 1"));
}
