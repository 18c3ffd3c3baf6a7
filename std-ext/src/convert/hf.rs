//! Reading Hugging Face checkpoint directories: `model.safetensors` or the shards listed in
//! `model.safetensors.index.json`, memory-mapped, with each tensor's shard.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use goldcrest_core::format::TensorView;
use goldcrest_core::quant::{Format, dequantize_row};

use crate::load::{FileError, ModelFile};

/// The safetensors files of a Hugging Face checkpoint directory, memory-mapped, with the file
/// holding each tensor.
#[derive(Debug)]
pub struct HfCheckpoint {
    files: Vec<ModelFile>,
    owner: BTreeMap<String, usize>,
}

pub(crate) fn invalid(msg: impl Into<String>) -> FileError {
    FileError::Invalid(msg.into())
}

fn io(path: &Path, source: std::io::Error) -> FileError {
    FileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl HfCheckpoint {
    /// Opens `dir/model.safetensors`, or every shard named by `dir/model.safetensors.index.json`
    /// (each tensor must be in the shard the index names, and nowhere else).
    pub fn open(dir: &Path) -> Result<Self, FileError> {
        let index_path = dir.join("model.safetensors.index.json");
        let shard_names: Vec<(String, Option<Vec<String>>)> = if index_path.exists() {
            let text = std::fs::read_to_string(&index_path).map_err(|e| io(&index_path, e))?;
            let index: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| invalid(format!("{}: {e}", index_path.display())))?;
            let map = index
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| invalid(format!("{}: no weight_map", index_path.display())))?;
            let mut by_file: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (tensor, file) in map {
                let file = file.as_str().ok_or_else(|| {
                    invalid(format!(
                        "{}: {tensor} maps to a non-string",
                        index_path.display()
                    ))
                })?;
                if file.contains('/') || file.contains('\\') || file.starts_with('.') {
                    return Err(invalid(format!(
                        "{}: shard name {file:?} must be a plain file name",
                        index_path.display()
                    )));
                }
                by_file
                    .entry(file.to_string())
                    .or_default()
                    .push(tensor.clone());
            }
            by_file.into_iter().map(|(f, t)| (f, Some(t))).collect()
        } else {
            vec![("model.safetensors".to_string(), None)]
        };
        let mut files = Vec::new();
        let mut owner = BTreeMap::new();
        for (name, listed) in shard_names {
            let path: PathBuf = dir.join(&name);
            let file = ModelFile::open(&path)?;
            let st = file.safetensors()?;
            let mut names: Vec<String> = Vec::new();
            for view in st.tensors() {
                let tensor = view_name(&view);
                if owner.insert(tensor.clone(), files.len()).is_some() {
                    return Err(invalid(format!("tensor '{tensor}' appears in two shards")));
                }
                names.push(tensor);
            }
            if let Some(mut listed) = listed {
                listed.sort();
                names.sort();
                if listed != names {
                    return Err(invalid(format!(
                        "{}: its tensors differ from the ones model.safetensors.index.json lists",
                        path.display()
                    )));
                }
            }
            files.push(file);
        }
        Ok(HfCheckpoint { files, owner })
    }

    /// Every tensor name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.owner.keys().map(String::as_str)
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.owner.contains_key(name)
    }

    /// Runs `f` on tensor `name` (a view into its mapped shard).
    pub fn with_tensor<R>(
        &self,
        name: &str,
        f: impl FnOnce(&TensorView<'_>) -> Result<R, FileError>,
    ) -> Result<R, FileError> {
        let &i = self
            .owner
            .get(name)
            .ok_or_else(|| invalid(format!("missing tensor '{name}'")))?;
        let file = &self.files[i];
        let st = file.safetensors()?;
        let view = st.tensor(name).map_err(|source| FileError::Format {
            path: Some(file.path().to_path_buf()),
            source,
        })?;
        f(&view)
    }
}

fn view_name(view: &TensorView<'_>) -> String {
    view.name().chars().collect()
}

/// The elements of an f32, f16 or bf16 tensor as f32 (exact conversions).
pub fn to_f32(view: &TensorView<'_>) -> Result<Vec<f32>, FileError> {
    let name = view_name(view);
    let format = view
        .format()
        .map_err(|source| FileError::Format { path: None, source })?;
    if !matches!(format, Format::F32 | Format::F16 | Format::Bf16) {
        return Err(invalid(format!(
            "tensor '{name}': {} is not a checkpoint float type (f32, f16, bf16)",
            format.name()
        )));
    }
    let n = view.bytes().len() / format.row_bytes(1).unwrap_or(1);
    let mut out = vec![0.0f32; n];
    dequantize_row(format, view.bytes(), n, &mut out)
        .map_err(|source| FileError::Format { path: None, source })?;
    Ok(out)
}
