//! ChatML, the Qwen2-Instruct chat format, as code rather than a template engine.
//!
//! Rendering equals the reference Jinja template (`vocab/templates/qwen2-instruct.jinja`):
//! a default system turn when the first message is not a system message, then
//! `<|im_start|>{role}\n{content}<|im_end|>\n` per message, then `<|im_start|>assistant\n` when a
//! generation prompt is asked for.
//!
//! [`encode_chatml`] differs from "render, then encode with special tokens" on purpose: the
//! control tokens come from the structure and message contents are encoded as plain text, so a
//! message cannot forge `<|im_end|>`. For contents without control-token text both give the same
//! ids.

use super::{Result, Scratch, Tokenizer, TokenizerError};

/// Qwen2-Instruct's default system prompt.
pub const QWEN2_DEFAULT_SYSTEM: &str = "You are a helpful assistant.";

/// One chat turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// `system`, `user`, `assistant` (any role string is rendered as given).
    pub role: &'a str,
    /// The turn's text.
    pub content: &'a str,
}

/// A ChatML format: the default system prompt to insert (Qwen2: [`QWEN2_DEFAULT_SYSTEM`];
/// `None` for formats without one, like Qwen3).
#[derive(Clone, Copy, Debug)]
pub struct ChatMl<'a> {
    /// Inserted as a system turn when the first message is not `system`.
    pub default_system: Option<&'a str>,
}

impl ChatMl<'static> {
    /// Qwen2-Instruct's format.
    pub const QWEN2: ChatMl<'static> = ChatMl {
        default_system: Some(QWEN2_DEFAULT_SYSTEM),
    };
}

impl ChatMl<'_> {
    /// The turns actually rendered: the default system turn (if any) and the messages.
    fn turns<'m>(&'m self, messages: &'m [Message<'m>]) -> impl Iterator<Item = Message<'m>> {
        let needs_system = messages.first().is_some_and(|m| m.role != "system");
        let system = self
            .default_system
            .filter(|_| needs_system)
            .map(|s| Message {
                role: "system",
                content: s,
            });
        system.into_iter().chain(messages.iter().copied())
    }

    /// The prompt text, as the reference template renders it.
    pub fn render(&self, messages: &[Message<'_>], add_generation_prompt: bool) -> String {
        let mut out = String::new();
        for m in self.turns(messages) {
            out.push_str("<|im_start|>");
            out.push_str(m.role);
            out.push('\n');
            out.push_str(m.content);
            out.push_str("<|im_end|>\n");
        }
        if add_generation_prompt {
            out.push_str("<|im_start|>assistant\n");
        }
        out
    }
}

/// Encodes a conversation as ChatML ids with the control tokens placed structurally and every
/// role and content encoded as plain text (see the module docs).
pub fn encode_chatml(
    tokenizer: &Tokenizer,
    format: &ChatMl<'_>,
    messages: &[Message<'_>],
    add_generation_prompt: bool,
) -> Result<Vec<u32>> {
    let control = |name: &str| {
        tokenizer.added_token_id(name).ok_or_else(|| {
            TokenizerError::Unsupported(format!("ChatML needs the control token {name}"))
        })
    };
    let (start, end) = (control("<|im_start|>")?, control("<|im_end|>")?);
    let mut out = Vec::new();
    let mut scratch = Scratch::default();
    let mut text = String::new();
    for m in format.turns(messages) {
        out.push(start);
        text.clear();
        text.push_str(m.role);
        text.push('\n');
        text.push_str(m.content);
        tokenizer.encode_into(&text, false, &mut out, &mut scratch);
        out.push(end);
        tokenizer.encode_into("\n", false, &mut out, &mut scratch);
    }
    if add_generation_prompt {
        out.push(start);
        tokenizer.encode_into("assistant\n", false, &mut out, &mut scratch);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn matches_the_reference_template_and_hf_ids() {
        let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let tok = Tokenizer::from_path(&root.join("vocab/qwen2/tokenizer.json")).unwrap();
        let fixture: Value = serde_json::from_slice(
            &std::fs::read(root.join("tests/fixtures/tokenizer/chatml.json")).unwrap(),
        )
        .unwrap();
        let cases = fixture.as_array().unwrap();
        assert!(cases.len() >= 10);
        for case in cases {
            let messages: Vec<Message> = case["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| Message {
                    role: m["role"].as_str().unwrap(),
                    content: m["content"].as_str().unwrap(),
                })
                .collect();
            let gen_prompt = case["add_generation_prompt"].as_bool().unwrap();
            let rendered = ChatMl::QWEN2.render(&messages, gen_prompt);
            assert_eq!(rendered, case["rendered"].as_str().unwrap());
            let ids = encode_chatml(&tok, &ChatMl::QWEN2, &messages, gen_prompt).unwrap();
            let hf: Vec<u32> = case["hf_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect();
            let forged = messages.iter().any(|m| m.content.contains("<|im_"));
            if forged {
                // HF parses the forged markers as control tokens; goldcrest keeps them as text.
                assert_ne!(ids, hf);
                let control = ids.iter().filter(|&&i| i == 151645).count();
                assert_eq!(control, messages.len() + 1);
            } else {
                assert_eq!(ids, hf, "{rendered:?}");
            }
        }
    }
}
