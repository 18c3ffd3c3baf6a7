//! `goldcrest sheet`: SpreadsheetLLM encodings, table detection and Chain-of-Spreadsheet prompts.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use goldcrest_alloc::sheet::anchors::{AnchorOptions, extract};
use goldcrest_alloc::sheet::compress::{CompressOptions, Surface, compress};
use goldcrest_alloc::sheet::detect::detect_tables;
use goldcrest_alloc::sheet::index::InvertedIndex;
use goldcrest_alloc::sheet::vanilla::{self, VanillaOptions};
use goldcrest_alloc::sheet::{CellRange, Sheet, prompt};
use goldcrest_std::sheet::{ReadOptions, TokenCounter, read_path};
use serde_json::json;
use std::path::PathBuf;

/// Spreadsheet subcommands.
#[derive(Subcommand)]
pub enum SheetCommand {
    /// Print the encoding of each sheet (all sheets unless --sheet).
    Encode(EncodeArgs),
    /// Print detected tables as JSON: [{"sheet":…, "range":"B3:F20"}].
    Tables(FileArgs),
    /// Print Chain-of-Spreadsheet prompts for a question.
    Prompt(PromptArgs),
    /// Print token counts of every module combination as JSON (for corpus evaluation).
    Report(ReportArgs),
    /// Answer a question with a language model, Chain of Spreadsheet end to end: stage 1 finds
    /// the table on the compressed sheet, stage 2 answers on that table uncompressed.
    Ask(AskArgs),
}

/// Which encoding to print.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Mode {
    /// `A1,value|B1,value`, every cell of the used range.
    Vanilla,
    /// SheetCompressor with the modules not switched off.
    Compressed,
}

/// How the inverted index is written.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum SurfaceArg {
    /// `(value|A1,C3:C9)`, one value per line.
    Tuples,
    /// `{"value":"A1,C3:C9",…}`.
    Json,
}

impl From<SurfaceArg> for Surface {
    fn from(s: SurfaceArg) -> Surface {
        match s {
            SurfaceArg::Tuples => Surface::Tuples,
            SurfaceArg::Json => Surface::Json,
        }
    }
}

/// A workbook and optional sheet.
#[derive(Args)]
pub struct FileArgs {
    /// Workbook: xlsx, xlsm, xlsb, xls, ods, csv or tsv.
    pub(crate) file: PathBuf,
    /// Only this sheet.
    #[arg(long)]
    pub(crate) sheet: Option<String>,
}

/// Which tokenizer counts tokens.
#[derive(Args)]
pub struct TokenizerArg {
    /// `cl100k` (GPT-4's, the paper's), `o200k`, or a vocabulary file: an HF `tokenizer.json`
    /// (or a directory with one, or with vocab.json + merges.txt), `*.gguf`, `rwkv_vocab_*.txt`,
    /// or a tiktoken-format file (`*.tiktoken`, Llama 3 `tokenizer.model`).
    #[arg(long, default_value = "cl100k")]
    tokenizer: String,
}

impl TokenizerArg {
    fn counter(&self) -> Result<TokenCounter> {
        Ok(match self.tokenizer.as_str() {
            "cl100k" => TokenCounter::cl100k(),
            "o200k" => TokenCounter::o200k(),
            path => TokenCounter::from_path(std::path::Path::new(path))
                .map_err(|e| anyhow::anyhow!("tokenizer {path}: {e}"))?,
        })
    }
}

/// Arguments of `sheet report`.
#[derive(Args)]
pub struct ReportArgs {
    #[command(flatten)]
    input: FileArgs,
    #[command(flatten)]
    tokenizer: TokenizerArg,
}

/// Arguments of `sheet encode`.
#[derive(Args)]
pub struct EncodeArgs {
    #[command(flatten)]
    input: FileArgs,
    /// Encoding mode.
    #[arg(long, value_enum, default_value = "compressed")]
    mode: Mode,
    /// Switch off structural-anchor extraction.
    #[arg(long)]
    no_anchors: bool,
    /// Switch off inverted-index translation.
    #[arg(long)]
    no_index: bool,
    /// Switch off data-format-aware aggregation.
    #[arg(long)]
    no_aggregate: bool,
    /// Rows/columns kept around each anchor.
    #[arg(long, default_value_t = 4)]
    k: u32,
    /// How the inverted index is written: `(value|A1:B3)` tuples (App. L.2) or a JSON object.
    #[arg(long, value_enum, default_value = "tuples")]
    surface: SurfaceArg,
    /// Print a JSON line with cell and token counts last.
    #[arg(long)]
    stats: bool,
    /// Vanilla mode: add each cell's number-format string as a third field.
    #[arg(long)]
    formats: bool,
    #[command(flatten)]
    tokenizer: TokenizerArg,
}

/// Arguments of `sheet prompt`.
#[derive(Args)]
pub struct PromptArgs {
    #[command(flatten)]
    input: FileArgs,
    /// The question to answer.
    #[arg(long)]
    question: String,
    /// Stage 1's answer (a range such as B3:F20); prints the stage 2 prompts for it.
    #[arg(long)]
    range: Option<String>,
    /// Token budget of one stage 2 prompt's table before it is split.
    #[arg(long, default_value_t = 4096)]
    budget: usize,
    /// Body rows per stage 2 chunk when split (the paper uses 3); default: fill the budget.
    #[arg(long)]
    chunk_rows: Option<usize>,
    #[command(flatten)]
    tokenizer: TokenizerArg,
}

/// Arguments of `sheet ask`.
#[derive(Args)]
pub struct AskArgs {
    #[command(flatten)]
    pub(crate) input: FileArgs,
    /// The question to answer.
    #[arg(long)]
    pub(crate) question: String,
    /// The language model file (rwkv6, llama or qwen2).
    #[arg(long)]
    pub(crate) model: PathBuf,
    /// The model's tokenizer: `world` or a vocabulary path; default: the one embedded in the
    /// model file. It also counts the tokens of the stage 2 budget.
    #[arg(long, value_name = "world|PATH")]
    pub(crate) tokenizer: Option<String>,
    /// Token budget of one stage 2 table before it is split (the paper's 4096); lowered to what
    /// the model's context holds next to the prompt and the answer.
    #[arg(long, default_value_t = 4096)]
    pub(crate) budget: usize,
    /// Body rows per stage 2 chunk when split (the paper uses 3); default: fill the budget.
    #[arg(long)]
    pub(crate) chunk_rows: Option<usize>,
    /// Tokens each stage may generate (the paper's max_tokens is 300).
    #[arg(long, default_value_t = 64)]
    pub(crate) max_tokens: usize,
    /// Tokens per prefill chunk.
    #[arg(long, default_value_t = 64)]
    pub(crate) chunk: usize,
    /// Print every prompt to stderr before it is run.
    #[arg(long)]
    pub(crate) show_prompts: bool,
}

pub(crate) fn load(args: &FileArgs) -> Result<Vec<Sheet>> {
    read_path(&args.file, args.sheet.as_deref(), &ReadOptions::default())
        .with_context(|| format!("reading {}", args.file.display()))
}

fn vanilla_tokens(sheet: &Sheet, tok: &TokenCounter) -> Result<usize> {
    let mut n = 0;
    vanilla::for_each_line(sheet, &VanillaOptions::default(), |l| n += tok.count(l))?;
    Ok(n)
}

/// Runs a `sheet` subcommand.
pub fn run(cmd: SheetCommand) -> Result<()> {
    match cmd {
        SheetCommand::Encode(a) => encode(a),
        SheetCommand::Tables(a) => {
            let mut out = Vec::new();
            for s in load(&a)? {
                for t in detect_tables(&s) {
                    out.push(json!({"sheet": s.name, "range": t.to_string()}));
                }
            }
            println!("{}", serde_json::to_string(&out)?);
            Ok(())
        }
        SheetCommand::Prompt(a) => prompt_cmd(a),
        SheetCommand::Report(a) => report(a),
        SheetCommand::Ask(a) => crate::sheet_ask::run(a),
    }
}

fn encode(a: EncodeArgs) -> Result<()> {
    let opts = CompressOptions {
        anchors: !a.no_anchors,
        k: a.k,
        index: !a.no_index,
        aggregate: !a.no_aggregate,
        surface: a.surface.into(),
    };
    let vopts = VanillaOptions {
        with_formats: a.formats,
        ..VanillaOptions::default()
    };
    let tok = a.tokenizer.counter()?;
    let (mut cells, mut ct) = (0usize, 0usize);
    // None once some sheet is too large to walk densely: the stats then say so.
    let mut vt = Some(0usize);
    for s in load(&a.input)? {
        println!("## sheet: {}", s.name);
        let text = match a.mode {
            Mode::Vanilla => vanilla::encode(&s, &vopts)?,
            Mode::Compressed => compress(&s, &opts)?.text,
        };
        print!("{text}");
        cells += s.cells().len();
        ct += tok.count(&text);
        if a.stats {
            vt = match (vt, vanilla_tokens(&s, &tok)) {
                (Some(total), Ok(n)) => Some(total + n),
                (_, Err(e)) => {
                    eprintln!(
                        "warning: no vanilla token count for sheet '{}': {e}",
                        s.name
                    );
                    None
                }
                (None, Ok(_)) => None,
            };
        }
    }
    if a.stats {
        let ratio = vt.filter(|_| ct > 0).map(|v| v as f64 / ct as f64);
        println!(
            "{}",
            json!({"cells": cells, "vanilla_tokens": vt, "compressed_tokens": ct, "ratio": ratio})
        );
    }
    Ok(())
}

fn report(args: ReportArgs) -> Result<()> {
    let tok = args.tokenizer.counter()?;
    let a = args.input;
    let combos: [(&str, bool, bool, bool); 7] = [
        ("anchors", true, false, false),
        ("index", false, true, false),
        ("aggregate", false, false, true),
        ("anchors+index", true, true, false),
        ("anchors+aggregate", true, false, true),
        ("index+aggregate", false, true, true),
        ("all", true, true, true),
    ];
    let mut sheets = Vec::new();
    for s in load(&a)? {
        let mut row = serde_json::Map::new();
        row.insert("sheet".into(), json!(s.name));
        row.insert("cells".into(), json!(s.cells().len()));
        row.insert("vanilla".into(), json!(vanilla_tokens(&s, &tok)?));
        for (name, anchors, index, aggregate) in combos {
            let opts = CompressOptions {
                anchors,
                k: 4,
                index,
                aggregate,
                surface: Surface::Tuples,
            };
            row.insert(name.into(), json!(tok.count(&compress(&s, &opts)?.text)));
        }
        let json_surface = CompressOptions {
            surface: Surface::Json,
            ..CompressOptions::default()
        };
        row.insert(
            "all_json".into(),
            json!(tok.count(&compress(&s, &json_surface)?.text)),
        );
        // The full pipeline's content without any address or punctuation: each distinct value
        // or label it writes, tokenized alone. No encoding that keeps these verbatim, as the
        // paper's does, can take fewer tokens, so vanilla / floor bounds its ratio.
        let full = compress(&s, &CompressOptions::default())?;
        let floor: usize = InvertedIndex::parse_tuples(&full.text)?
            .entries
            .iter()
            .map(|(v, _)| tok.count(v))
            .sum();
        row.insert("floor".into(), json!(floor));
        // Which original rows/columns the skeleton keeps (0-based), to check that table
        // boundaries survive extraction.
        let (_, map) = extract(&s, &AnchorOptions { k: 4 });
        row.insert("kept_rows".into(), json!(map.rows));
        row.insert("kept_cols".into(), json!(map.cols));
        sheets.push(serde_json::Value::Object(row));
    }
    println!(
        "{}",
        json!({"file": a.file.display().to_string(), "sheets": sheets})
    );
    Ok(())
}

fn prompt_cmd(a: PromptArgs) -> Result<()> {
    let tok = a.tokenizer.counter()?;
    let sheets = load(&a.input)?;
    if sheets.len() > 1 && a.range.is_some() {
        bail!("--range needs --sheet when the workbook has several sheets");
    }
    for s in &sheets {
        println!("## sheet: {}", s.name);
        let enc = compress(s, &CompressOptions::default())?;
        println!(
            "### stage 1\n{}",
            prompt::cos_stage1(&enc.text, &a.question)
        );
        if let Some(r) = &a.range {
            // The model saw compressed coordinates; map its answer back to the sheet.
            let compressed = CellRange::parse(r)?;
            let original = enc
                .map
                .as_ref()
                .and_then(|m| m.range_to_original(compressed))
                .with_context(|| format!("{r} lies outside the compressed sheet"))?;
            let prompts = prompt::cos_stage2(
                s,
                original,
                &a.question,
                a.budget,
                a.chunk_rows
                    .map_or(prompt::Split::FillBudget, prompt::Split::Rows),
                &|t: &str| tok.count(t),
            )?;
            for (i, p) in prompts.iter().enumerate() {
                println!(
                    "### stage 2 ({original}, part {} of {})\n{p}",
                    i + 1,
                    prompts.len()
                );
            }
        }
    }
    Ok(())
}
