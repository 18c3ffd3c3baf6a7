//! Converters from other checkpoint layouts into goldcrest files.
//!
//! - [`rwkv6`]: RWKV-6 safetensors checkpoints.
//! - [`goldfinch`]: GoldFinch safetensors checkpoints (official names).
//! - [`decoder`]: Hugging Face `LlamaForCausalLM` (incl. Spectra TriLM) and `Qwen2ForCausalLM`
//!   directories (`config.json` + `model.safetensors`, or shards listed in
//!   `model.safetensors.index.json`), read through [`hf`]; it writes with
//!   [`crate::write::ModelWriter`] directly, and `goldcrest convert` loads the written file.
//!
//! A converter produces a [`Converted`] model in memory: tensors in their goldcrest storage
//! format plus the metadata keys. It is also a [`TensorSource`], so the converter checks its own
//! output by loading it with the core model before anything is written.

use std::collections::BTreeMap;

use goldcrest_core::Error;
use goldcrest_core::error::{Name, Result, Shape};
use goldcrest_core::models::{TensorRef, TensorSource};
use goldcrest_core::quant::Format;

use crate::load::FileError;
use crate::tokenize::{TOKENIZER_KIND_KEY, TOKENIZER_TENSOR};
use crate::write::ModelWriter;

pub mod decoder;
pub mod goldfinch;
pub mod hf;
pub mod rwkv6;
pub mod toto;
pub mod toto2;

/// One output tensor. The bytes are kept in `u64` words so that every in-memory view is
/// aligned as the core requires (a file writer aligns them in the file).
#[derive(Debug, Clone)]
pub struct Tensor {
    /// Storage format.
    pub format: Format,
    /// Logical shape.
    pub shape: Vec<u64>,
    words: Vec<u64>,
    len: usize,
}

impl Tensor {
    /// A tensor holding a copy of `bytes`.
    pub fn new(format: Format, shape: Vec<u64>, bytes: &[u8]) -> Tensor {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        Tensor {
            format,
            shape,
            words,
            len: bytes.len(),
        }
    }

    /// The stored bytes (little-endian values or packed blocks).
    pub fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.words)[..self.len]
    }
}

/// A converted model: tensors by name, and the `__metadata__` string pairs.
#[derive(Debug, Clone, Default)]
pub struct Converted {
    /// Tensors by goldcrest name.
    pub tensors: BTreeMap<String, Tensor>,
    /// Metadata keys and values.
    pub metadata: BTreeMap<String, String>,
}

impl Converted {
    /// Records the header every converted file carries: format version, architecture, its
    /// `goldcrest.<arch>.<name>` hyperparameters, and the tokenizer to embed (kind and bytes).
    pub fn set_header(
        &mut self,
        arch: &str,
        hyperparameters: &[(&str, usize)],
        tokenizer: Option<&(String, Vec<u8>)>,
    ) {
        self.metadata
            .insert("goldcrest.format_version".to_string(), "1.0".to_string());
        self.metadata
            .insert("goldcrest.arch".to_string(), arch.to_string());
        for (name, value) in hyperparameters {
            self.metadata
                .insert(format!("goldcrest.{arch}.{name}"), value.to_string());
        }
        if let Some((kind, bytes)) = tokenizer {
            self.tensors.insert(
                TOKENIZER_TENSOR.to_string(),
                Tensor::new(Format::U8, vec![bytes.len() as u64], bytes),
            );
            self.metadata
                .insert(TOKENIZER_KIND_KEY.to_string(), kind.clone());
        }
    }

    /// A writer holding this model: the architecture, its `goldcrest.<arch>.*`
    /// hyperparameters, other metadata, the tokenizer and every tensor (block formats packed).
    pub fn writer(&self) -> std::result::Result<ModelWriter, FileError> {
        let mut w = ModelWriter::new();
        let arch = self
            .metadata
            .get("goldcrest.arch")
            .ok_or_else(|| FileError::Invalid("converted model has no goldcrest.arch".into()))?;
        w.arch(arch)?;
        let prefix = format!("goldcrest.{arch}.");
        for (key, value) in &self.metadata {
            if let Some(name) = key.strip_prefix(&prefix) {
                w.hyperparameter(name, value)?;
            } else if !matches!(
                key.as_str(),
                "goldcrest.arch" | "goldcrest.format_version" | "goldcrest.tokenizer"
            ) {
                w.metadata(key, value)?;
            }
        }
        for (name, t) in &self.tensors {
            if name == "tokenizer" {
                let kind = self.metadata.get("goldcrest.tokenizer").ok_or_else(|| {
                    FileError::Invalid("tokenizer tensor without goldcrest.tokenizer".into())
                })?;
                w.tokenizer(kind, t.bytes().to_vec())?;
            } else if t.format.is_blocked() {
                let [rows, cols] = t.shape[..] else {
                    return Err(FileError::Invalid(format!(
                        "{name}: packed tensors are 2-D"
                    )));
                };
                w.packed(
                    name,
                    t.format,
                    rows as usize,
                    cols as usize,
                    t.bytes().to_vec(),
                )?;
            } else {
                let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
                w.plain(name, t.format, &shape, t.bytes().to_vec())?;
            }
        }
        Ok(w)
    }
}

impl<'a> TensorSource<'a> for &'a Converted {
    fn tensor(&self, name: &str) -> Result<TensorRef<'a>> {
        let t = self.tensors.get(name).ok_or(Error::MissingTensor {
            tensor: Name::new(name),
        })?;
        Ok(TensorRef {
            format: t.format,
            shape: Shape::new(&t.shape).ok_or(Error::BadShape {
                tensor: Name::new(name),
            })?,
            bytes: t.bytes(),
        })
    }

    fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    fn for_each_tensor_name(&self, visit: &mut dyn FnMut(&str) -> Result<()>) -> Result<()> {
        self.tensors.keys().try_for_each(|k| visit(k))
    }
}
