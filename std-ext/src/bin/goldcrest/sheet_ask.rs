//! `goldcrest sheet ask FILE --question "…" --model M`: Chain of Spreadsheet (§3.5, App. M.2)
//! end to end with a goldcrest language model. Stage 1 shows the model the compressed sheet and
//! asks for the one table that answers the question; its range is read from the reply and
//! mapped back through the extraction's coordinate map. Stage 2 shows that table without
//! compression, split into header + body chunks when it exceeds the token budget, and reads
//! the `[B3]` / `[SUM(A2:A10)]` answer of each part. Decoding is greedy (the paper runs at
//! temperature 0). Prints one JSON object with every reply, so a weak model's failures show.
//!
//! When the stage 1 reply holds no usable range, the pipeline still runs stage 2 on the
//! heuristic detector's first table (or the used range) and says so (`region_from`), so the
//! second stage can be exercised with any model.

use anyhow::{Context, Result, bail};
use goldcrest_alloc::sheet::compress::{CompressOptions, compress};
use goldcrest_alloc::sheet::detect::detect_tables;
use goldcrest_alloc::sheet::{Sheet, prompt};
use goldcrest_core::Error;
use goldcrest_std::tokenize::Tokenizer;
use serde_json::json;

use crate::generate::end_ids;
use crate::session::{self, LanguageModel, Options, check_ids, with_model};
use crate::sheet::{AskArgs, load};

/// Runs `goldcrest sheet ask`.
pub fn run(a: AskArgs) -> Result<()> {
    let mut sheets = load(&a.input)?;
    if sheets.len() > 1 {
        bail!(
            "the workbook has {} sheets ({}): choose one with --sheet",
            sheets.len(),
            sheets
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let sheet = sheets.pop().context("the workbook has no sheet")?;
    if sheet.cells().is_empty() {
        bail!("sheet '{}' has no non-empty cells", sheet.name);
    }
    // Size the decoder's KV cache for this run, not for the model's longest context: the
    // stage 1 prompt, or a stage 2 table of `budget` tokens with room for the template, plus
    // the answer. (The tokenizer is read from the mapped file once here, again in the run.)
    let enc = compress(&sheet, &CompressOptions::default())?;
    let stage1_tokens = {
        let file = goldcrest_std::load::ModelFile::open(&a.model)
            .with_context(|| format!("opening {}", a.model.display()))?;
        let st = file.safetensors()?;
        match session::tokenizer(a.tokenizer.as_deref(), &st)? {
            Some(tok) => tok
                .encode(&prompt::cos_stage1(&enc.text, &a.question))?
                .len(),
            None => 0,
        }
    };
    let options = Options {
        positions: stage1_tokens
            .max(a.budget.saturating_add(STAGE2_TEMPLATE_ROOM))
            .saturating_add(a.max_tokens),
        chunk: a.chunk,
        kv: session::kv_format("f16")?,
        int8_acts: false,
        threads: goldcrest_std::parallel::Pool::available(),
    };
    with_model(Some(&a.model), &options, |model, st| {
        let tokenizer = session::tokenizer(a.tokenizer.as_deref(), st)?.context(
            "the model file carries no tokenizer: give its vocabulary with --tokenizer world|PATH",
        )?;
        let report = ask(&a, &sheet, model, &tokenizer)?;
        println!("{}", serde_json::to_string_pretty(&report)?);
        Ok(())
    })
}

/// Positions reserved for the stage 2 instructions and question next to a full budget.
const STAGE2_TEMPLATE_ROOM: usize = 1024;

fn ask(
    a: &AskArgs,
    sheet: &Sheet,
    model: &mut dyn LanguageModel,
    tok: &Tokenizer,
) -> Result<serde_json::Value> {
    let count = |t: &str| tok.encode(t).map_or(usize::MAX, |ids| ids.len());
    let room = model.context().map(|c| c.saturating_sub(a.max_tokens));

    // Stage 1: the compressed sheet.
    let enc = compress(sheet, &CompressOptions::default())?;
    let stage1_prompt = prompt::cos_stage1(&enc.text, &a.question);
    if let Some(room) = room
        && count(&stage1_prompt) > room
    {
        bail!(
            "the stage 1 prompt (compressed sheet and question) takes {} tokens; the model holds \
             {room} next to the {} answer tokens",
            count(&stage1_prompt),
            a.max_tokens
        );
    }
    if a.show_prompts {
        eprintln!("### stage 1 prompt\n{stage1_prompt}");
    }
    let (reply1, tokens1) = greedy(model, tok, &stage1_prompt, a.max_tokens)?;
    let named = prompt::parse_range_answer(&reply1);
    let mapped = named.and_then(|r| match &enc.map {
        Some(m) => m.range_to_original(r),
        None => Some(r),
    });
    let (region, region_from) = match mapped {
        Some(r) => (r, "model"),
        None => match detect_tables(sheet).first() {
            Some(&t) => (t, "detector"),
            None => (
                sheet.used_range().context("sheet has no used range")?,
                "used range",
            ),
        },
    };

    // Stage 2: the region without compression, fitted to the budget and the model's context.
    let template = count(&prompt::stage2_text("", &a.question));
    let budget = match room {
        Some(room) if room <= template => bail!(
            "the model's context leaves no room for a table next to the stage 2 prompt \
             ({template} tokens) and {} answer tokens",
            a.max_tokens
        ),
        Some(room) => a.budget.min(room - template),
        None => a.budget,
    };
    let split = a
        .chunk_rows
        .map_or(prompt::Split::FillBudget, prompt::Split::Rows);
    let prompts = prompt::cos_stage2(sheet, region, &a.question, budget, split, &count)?;
    let mut parts = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        if a.show_prompts {
            eprintln!(
                "### stage 2 prompt, part {} of {}\n{p}",
                i + 1,
                prompts.len()
            );
        }
        let (reply, tokens) = greedy(model, tok, p, a.max_tokens)
            .with_context(|| format!("stage 2, part {} of {}", i + 1, prompts.len()))?;
        parts.push(json!({
            "prompt_tokens": count(p),
            "generated_tokens": tokens,
            "reply": reply,
            "answer": prompt::parse_stage2_answer(&reply),
        }));
    }
    Ok(json!({
        "sheet": sheet.name,
        "question": a.question,
        "model": model.describe(),
        "stage1": {
            "prompt_tokens": count(&stage1_prompt),
            "generated_tokens": tokens1,
            "reply": reply1,
            "range": named.map(|r| r.to_string()),
            "region": region.to_string(),
            "region_from": region_from,
        },
        "stage2": {"budget": budget, "parts": parts},
    }))
}

/// Greedy decoding from a fresh state: the reply's text (invalid UTF-8 replaced) and how many
/// tokens were generated. Stops at the tokenizer's end-of-text ids or after `max_tokens`.
fn greedy(
    model: &mut dyn LanguageModel,
    tok: &Tokenizer,
    prompt: &str,
    max_tokens: usize,
) -> Result<(String, usize)> {
    let ids = tok.encode(prompt)?;
    if ids.is_empty() {
        bail!("the prompt encodes to no tokens");
    }
    check_ids(&ids, model.vocab())?;
    model.reset();
    let mut logits = vec![0.0f32; model.vocab()];
    let full = |e: Error, n: usize| match e {
        Error::ContextFull { capacity } => {
            anyhow::anyhow!("{n} tokens do not fit the model's context of {capacity} positions")
        }
        other => other.into(),
    };
    model
        .forward(&ids, &mut logits)
        .map_err(|e| full(e, ids.len()))?;
    let ends = end_ids(Some(tok));
    let mut out = Vec::new();
    while out.len() < max_tokens {
        let next = argmax(&logits);
        if ends.contains(&next) {
            break;
        }
        out.push(next);
        if out.len() == max_tokens {
            break;
        }
        model
            .forward(&[next], &mut logits)
            .map_err(|e| full(e, ids.len() + out.len()))?;
    }
    Ok((tok.decode_lossy(&out)?, out.len()))
}

/// The first index of the largest logit (NaN never wins).
fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] || logits[best].is_nan() {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::argmax;

    #[test]
    fn argmax_takes_the_first_largest_and_never_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.5, f32::NAN, 0.25]), 1);
        assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NEG_INFINITY]), 0);
        assert_eq!(argmax(&[2.0]), 0);
    }
}
