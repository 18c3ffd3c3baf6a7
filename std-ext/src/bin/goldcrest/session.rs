//! Loading a language model file for the subcommands that run one (`generate`, `perplexity`,
//! `logits`, `bench`): open and validate the file, detect the kernels, plan the memory, carve
//! the state and scratch, and build the model its `goldcrest.arch` names.
//!
//! The weights borrow the mapped file, so the loaded model is handed to a closure rather than
//! returned: [`with_model`] keeps the file, the layer table and the RAM alive around it.

use std::path::Path;

use anyhow::{Context, bail};
use goldcrest_core::Error;
use goldcrest_core::arena::{Arena, MemoryPlan};
use goldcrest_core::format::SafeTensors;
use goldcrest_core::kernels::{ActScale, Kernels};
use goldcrest_core::models::decoder::{self, Decoder, KvCache, KvFormat};
use goldcrest_core::models::goldfinch::{self, GoldFinch};
use goldcrest_core::models::rwkv6::{self, Rwkv6};
use goldcrest_std::load::ModelFile;

/// How to size and configure the model's working memory.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Positions the caller intends to run in one sequence (sizes the decoder's KV cache;
    /// clamped to the model's trained positions, see [`LanguageModel::context`]).
    pub positions: usize,
    /// Tokens per prefill chunk (scratch grows with it).
    pub chunk: usize,
    /// KV cache storage (decoder models; goldfinch's GOLD keys and values, f32 or f16).
    pub kv: KvFormat,
    /// Int8 activations for ternary layers (decoder models).
    pub int8_acts: bool,
    /// Threads for large matrix products (1: the calling thread only).
    pub threads: usize,
}

/// A loaded language model with its state and scratch: the part of each architecture the
/// subcommands need.
pub trait LanguageModel {
    /// The `goldcrest.arch` value.
    fn arch(&self) -> &'static str;
    /// Vocabulary size (rows of the head).
    fn vocab(&self) -> usize;
    /// Positions one sequence can hold before [`Error::ContextFull`], or `None` when the model
    /// never fills (recurrent, or a sliding-window ring cache).
    fn context(&self) -> Option<usize>;
    /// Forgets the sequence.
    fn reset(&mut self);
    /// Runs `ids` at the next positions; `logits` is `vocab` long (after the last id) or
    /// `ids.len() · vocab` (after every id).
    fn forward(&mut self, ids: &[u32], logits: &mut [f32]) -> Result<(), Error>;
    /// The recurrent state in the model's versioned, checksummed byte format.
    fn save_state(&self) -> anyhow::Result<Vec<u8>>;
    /// Restores a state written by [`LanguageModel::save_state`].
    fn restore_state(&mut self, bytes: &[u8]) -> anyhow::Result<()>;
    /// Bytes of weights, state and scratch.
    fn plan(&self) -> MemoryPlan;
    /// One line for people: architecture and shape.
    fn describe(&self) -> String;
    /// The cache the sequence occupies now, for models that keep one per token.
    fn cache_use(&self) -> Option<CacheUse> {
        None
    }
    /// Makes the sequence `positions` long with keys and values drawn from `value` instead of
    /// computed (for speed measurements at long context); `Ok(false)` when the model keeps no
    /// per-position cache that could be filled this way.
    fn fill_synthetic(
        &mut self,
        _positions: usize,
        _value: &mut dyn FnMut() -> f32,
    ) -> anyhow::Result<bool> {
        Ok(false)
    }
}

/// Bytes a sequence's per-token cache takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheUse {
    /// Tokens held.
    pub tokens: usize,
    /// Bytes of the working cache holding them (what decoding reads).
    pub bytes: usize,
    /// Bytes per token of the form that is saved or shipped, when it differs from the working
    /// form (GoldFinch: token id + compressed key).
    pub at_rest_per_token: Option<usize>,
}

/// Context of a GoldFinch session when the caller asks for "as long as the model allows"
/// (perplexity without `--ctx`): the file records no trained length, and the working cache
/// grows linearly with it.
pub const GOLDFINCH_DEFAULT_CONTEXT: usize = 4096;

/// The architecture a file declares (empty when it declares none).
pub fn arch_of(st: &SafeTensors<'_>) -> String {
    st.metadata()
        .arch()
        .and_then(|a| a.as_str())
        .unwrap_or("")
        .to_string()
}

/// Opens `path` (the bundled tiny RWKV-6 when `None`), loads the model it holds with memory for
/// `options`, and runs `run` on it (with the parsed file, for the embedded tokenizer).
pub fn with_model<R>(
    path: Option<&Path>,
    options: &Options,
    run: impl FnOnce(&mut dyn LanguageModel, &SafeTensors<'_>) -> anyhow::Result<R>,
) -> anyhow::Result<R> {
    if options.chunk == 0 {
        bail!("the prefill chunk must hold at least one token");
    }
    let file;
    let (st, label) = match path {
        Some(path) => {
            file = ModelFile::open(path)?;
            (file.safetensors()?, path.display().to_string())
        }
        None => (
            goldcrest_std::load::parse_hosted(goldcrest_std::bundled::RWKV6_TINY)?,
            "the bundled rwkv6-tiny".to_string(),
        ),
    };
    let kernels = goldcrest_std::kernels::detect_with_threads(options.threads);
    let loading = || format!("loading {label}");
    match arch_of(&st).as_str() {
        "llama" | "qwen2" => {
            let config = decoder::Config::from_safetensors(&st).with_context(loading)?;
            let mut layers = vec![None; config.n_layer];
            let weights = decoder::Weights::load(&st, &mut layers).with_context(loading)?;
            let mut model = Decoder::new(weights, kernels);
            if options.int8_acts {
                model = model.with_int8_activations(ActScale::PerBlock);
            }
            let (context, chunk, ring) = decoder_context(&config, options);
            let plan = model.memory_plan(context, options.kv, chunk)?;
            let mut ram = vec![0u8; plan.bytes_unaligned()];
            let mut arena = Arena::new_unaligned(&mut ram);
            let cache = KvCache::carve(&config, context, options.kv, &mut arena)?;
            let scratch = decoder::Scratch::carve(&config, chunk, &mut arena)?;
            let mut session = DecoderSession {
                model,
                cache,
                scratch,
                plan,
                ring,
            };
            run(&mut session, &st)
        }
        a if a == rwkv6::ARCH => {
            let config = rwkv6::Config::from_source(&st).with_context(loading)?;
            let mut layers = vec![None; config.n_layer];
            let model = Rwkv6::load(&st, &mut layers, kernels).with_context(loading)?;
            let plan = model.memory_plan(options.chunk)?;
            let mut state_mem = vec![0u8; plan.bytes_unaligned()];
            let mut scratch_mem = vec![0u8; plan.bytes_unaligned()];
            let state = rwkv6::State::carve(&config, &mut Arena::new_unaligned(&mut state_mem))?;
            let scratch = rwkv6::Scratch::carve(
                &config,
                options.chunk,
                &mut Arena::new_unaligned(&mut scratch_mem),
            )?;
            let mut session = Rwkv6Session {
                model,
                state,
                scratch,
                plan,
            };
            run(&mut session, &st)
        }
        a if a == goldfinch::ARCH => {
            let config = goldfinch::Config::from_source(&st).with_context(loading)?;
            let mut layers = vec![None; config.n_layer];
            let model = GoldFinch::load(&st, &mut layers, kernels).with_context(loading)?;
            let capacity = goldfinch_capacity(options.positions);
            if options.kv == KvFormat::I8 {
                bail!(
                    "goldfinch keeps its GOLD keys and values as f32 or f16; --kv i8 is for \
                     llama and qwen2"
                );
            }
            let plan = model.memory_plan_for(capacity, options.chunk, options.kv)?;
            let mut context_mem = vec![0u8; plan.bytes_unaligned()];
            let mut scratch_mem = vec![0u8; plan.bytes_unaligned()];
            let context = goldfinch::Context::carve_with(
                &config,
                capacity,
                options.kv,
                &mut Arena::new_unaligned(&mut context_mem),
            )?;
            let scratch = goldfinch::Scratch::carve_chunked(
                &config,
                capacity,
                options.chunk,
                &mut Arena::new_unaligned(&mut scratch_mem),
            )?;
            let mut session = GoldFinchSession {
                model,
                context,
                scratch,
                plan,
            };
            run(&mut session, &st)
        }
        "" => bail!(
            "{label}: no goldcrest.arch in the metadata; convert the checkpoint with `goldcrest convert`"
        ),
        other => bail!(
            "{label}: architecture {other:?} is not a language model goldcrest runs (rwkv6, goldfinch, llama, qwen2)"
        ),
    }
}

/// The cache length, prefill chunk and whether the cache is a ring that never fills: a model
/// with a sliding window in every layer only needs `window - 1 + chunk` positions however long
/// the sequence (the chunk shrinks if that would exceed the trained positions, which bound
/// every cache); any other cache is clamped to the trained positions.
fn decoder_context(config: &decoder::Config, options: &Options) -> (usize, usize, bool) {
    let wanted = options.positions.max(1);
    let mut chunk = options.chunk;
    if config.slides_everywhere() && config.sliding_window <= config.max_positions {
        chunk = chunk.min(config.max_positions + 1 - config.sliding_window);
        let ring = config.sliding_window - 1 + chunk;
        if wanted > ring {
            return (ring, chunk, true);
        }
    }
    (wanted.min(config.max_positions), chunk, false)
}

struct DecoderSession<'w, 'a, 's> {
    model: Decoder<'w, 'a>,
    cache: KvCache<'s>,
    scratch: decoder::Scratch<'s>,
    plan: MemoryPlan,
    ring: bool,
}

impl LanguageModel for DecoderSession<'_, '_, '_> {
    fn arch(&self) -> &'static str {
        self.model.config().arch.name()
    }
    fn vocab(&self) -> usize {
        self.model.config().vocab
    }
    fn context(&self) -> Option<usize> {
        (!self.ring).then_some(self.cache.context())
    }
    fn reset(&mut self) {
        self.cache.clear();
    }
    fn forward(&mut self, ids: &[u32], logits: &mut [f32]) -> Result<(), Error> {
        self.model
            .forward(&mut self.cache, &mut self.scratch, ids, logits)
    }
    fn save_state(&self) -> anyhow::Result<Vec<u8>> {
        bail!(
            "{} models keep a KV cache, not a recurrent state: --state-out is for rwkv6",
            self.arch()
        )
    }
    fn restore_state(&mut self, _: &[u8]) -> anyhow::Result<()> {
        bail!(
            "{} models keep a KV cache, not a recurrent state: --state-in is for rwkv6",
            self.arch()
        )
    }
    fn plan(&self) -> MemoryPlan {
        self.plan
    }
    fn describe(&self) -> String {
        let c = self.model.config();
        format!(
            "{} {}x{}, {} KV cache of {} positions{}",
            c.arch.name(),
            c.n_layer,
            c.hidden,
            self.cache.format().name(),
            self.cache.context(),
            if self.ring { " (sliding ring)" } else { "" }
        )
    }
    fn cache_use(&self) -> Option<CacheUse> {
        let c = self.model.config();
        let rows = 2 * c.n_layer * c.n_kv_head;
        let per_position = match self.cache.format() {
            KvFormat::F32 => rows * c.head_dim * 4,
            KvFormat::F16 => rows * c.head_dim * 2,
            // Codes plus an f32 scale and an f32 offset per row.
            KvFormat::I8 => rows * (c.head_dim + 8),
            KvFormat::I4 => rows * (c.head_dim / 2 + 8),
        };
        let tokens = self.cache.len().min(self.cache.context());
        Some(CacheUse {
            tokens,
            bytes: tokens * per_position,
            at_rest_per_token: None,
        })
    }
    fn fill_synthetic(
        &mut self,
        positions: usize,
        value: &mut dyn FnMut() -> f32,
    ) -> anyhow::Result<bool> {
        self.cache.fill_synthetic(positions, value)?;
        Ok(true)
    }
}

struct Rwkv6Session<'w, 'a, 's> {
    model: Rwkv6<'w, 'a>,
    state: rwkv6::State<'s>,
    scratch: rwkv6::Scratch<'s>,
    plan: MemoryPlan,
}

impl LanguageModel for Rwkv6Session<'_, '_, '_> {
    fn arch(&self) -> &'static str {
        rwkv6::ARCH
    }
    fn vocab(&self) -> usize {
        self.model.config().vocab_size
    }
    fn context(&self) -> Option<usize> {
        None
    }
    fn reset(&mut self) {
        self.state.reset();
    }
    fn forward(&mut self, ids: &[u32], logits: &mut [f32]) -> Result<(), Error> {
        match ids {
            [id] if logits.len() == self.vocab() => {
                self.model
                    .step(&mut self.state, &mut self.scratch, *id, logits)
            }
            _ => self
                .model
                .prefill(&mut self.state, &mut self.scratch, ids, logits),
        }
    }
    fn save_state(&self) -> anyhow::Result<Vec<u8>> {
        let mut out = vec![0u8; rwkv6::State::saved_len(self.model.config())?];
        let n = self.state.save(&mut out)?;
        out.truncate(n);
        Ok(out)
    }
    fn restore_state(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.state.restore(bytes)?;
        Ok(())
    }
    fn plan(&self) -> MemoryPlan {
        self.plan
    }
    fn describe(&self) -> String {
        let c = self.model.config();
        format!("rwkv6 {}x{}", c.n_layer, c.n_embd)
    }
}

/// Tokens a GoldFinch context holds for a request of `positions` (see
/// [`GOLDFINCH_DEFAULT_CONTEXT`]).
pub fn goldfinch_capacity(positions: usize) -> usize {
    if positions >= usize::MAX / 4 {
        GOLDFINCH_DEFAULT_CONTEXT
    } else {
        positions.max(1)
    }
}

struct GoldFinchSession<'w, 'a, 's> {
    model: GoldFinch<'w, 'a>,
    context: goldfinch::Context<'s>,
    scratch: goldfinch::Scratch<'s>,
    plan: MemoryPlan,
}

impl LanguageModel for GoldFinchSession<'_, '_, '_> {
    fn arch(&self) -> &'static str {
        goldfinch::ARCH
    }
    fn vocab(&self) -> usize {
        self.model.config().vocab_size
    }
    fn context(&self) -> Option<usize> {
        Some(self.context.capacity())
    }
    fn reset(&mut self) {
        self.context.reset();
    }
    fn forward(&mut self, ids: &[u32], logits: &mut [f32]) -> Result<(), Error> {
        self.model
            .prefill(&mut self.context, &mut self.scratch, ids, logits)
    }
    fn save_state(&self) -> anyhow::Result<Vec<u8>> {
        let mut out = vec![0u8; self.model.saved_len(self.context.len())?];
        let n = self.model.save(&self.context, &mut out)?;
        out.truncate(n);
        Ok(out)
    }
    fn restore_state(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.model
            .restore(&mut self.context, &mut self.scratch, bytes)?;
        Ok(())
    }
    fn plan(&self) -> MemoryPlan {
        self.plan
    }
    fn describe(&self) -> String {
        let c = self.model.config();
        format!(
            "goldfinch {}x{} ({} Finch-C2 + {} GOLD layers), {} GOLD K/V cache of {} tokens",
            c.n_layer,
            c.n_embd,
            c.first_gold,
            c.n_gold(),
            self.context.kv_format().name(),
            self.context.capacity()
        )
    }
    fn cache_use(&self) -> Option<CacheUse> {
        Some(CacheUse {
            tokens: self.context.len(),
            bytes: self.context.working_cache_bytes(),
            at_rest_per_token: Some(self.model.config().at_rest_bytes_per_token()),
        })
    }
}

/// Checks that every id fits the model's vocabulary, naming the first that does not.
pub fn check_ids(ids: &[u32], vocab: usize) -> anyhow::Result<()> {
    if let Some((pos, id)) = ids
        .iter()
        .enumerate()
        .find(|(_, id)| **id as usize >= vocab)
    {
        bail!("token id {id} at position {pos} is outside the model's vocabulary (0..{vocab})");
    }
    Ok(())
}

/// Parses `--kv` values.
pub fn kv_format(name: &str) -> anyhow::Result<KvFormat> {
    KvFormat::from_name(name).with_context(|| format!("unknown KV cache format {name:?}"))
}

/// The kernels the session uses (for reports).
pub fn kernels() -> Kernels {
    goldcrest_std::kernels::detect()
}

/// `--threads`: threads for large matrix products; all the CPUs this process may use when
/// not given. Results do not depend on it (the split kernels are bit-identical).
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct Threads {
    /// Threads for large matrix products [default: all cores].
    #[arg(long = "threads")]
    threads: Option<usize>,
}

impl Threads {
    /// The thread count to use (at least 1).
    pub fn get(&self) -> usize {
        self.threads
            .unwrap_or_else(goldcrest_std::parallel::Pool::available)
            .max(1)
    }
}

/// The tokenizer to use: `--tokenizer world` (the bundled RWKV World vocabulary), a vocabulary
/// path, or else the one embedded in the model file; `None` when there is none.
pub fn tokenizer(
    spec: Option<&str>,
    st: &SafeTensors<'_>,
) -> anyhow::Result<Option<goldcrest_std::tokenize::Tokenizer>> {
    use goldcrest_std::tokenize::{BUNDLED_WORLD_VOCAB, Tokenizer};
    Ok(Some(match spec {
        Some("world") => Tokenizer::from_bytes("world", BUNDLED_WORLD_VOCAB)?,
        Some(path) => Tokenizer::from_path(Path::new(path))
            .with_context(|| format!("loading the tokenizer {path}"))?,
        None => match Tokenizer::from_model(st).context("the model file's tokenizer")? {
            Some(t) => t,
            None => return Ok(None),
        },
    }))
}
