//! Converters from upstream checkpoints to goldcrest files.
//!
//! - [`decoder`]: Hugging Face `LlamaForCausalLM` (incl. Spectra TriLM) and `Qwen2ForCausalLM`
//!   directories (`config.json` + `model.safetensors`, or shards listed in
//!   `model.safetensors.index.json`), read through [`hf`].

pub mod decoder;
pub mod hf;
