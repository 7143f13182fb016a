//! The files of one model directory (a local checkpoint or a hub snapshot) and which of them a
//! run needs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::HubError;

pub const CONFIG: &str = "config.json";
pub const GENERATION_CONFIG: &str = "generation_config.json";
pub const TOKENIZER: &str = "tokenizer.json";
pub const TOKENIZER_CONFIG: &str = "tokenizer_config.json";
/// Newer checkpoints keep the chat template in its own file beside `tokenizer_config.json`.
pub const CHAT_TEMPLATE: &str = "chat_template.jinja";
pub const SINGLE_WEIGHTS: &str = "model.safetensors";
pub const WEIGHTS_INDEX: &str = "model.safetensors.index.json";

/// Files a hub download must bring besides the weights (generation_config.json is optional:
/// the stop tokens have a documented fallback).
pub const REQUIRED_FILES: [&str; 3] = [CONFIG, TOKENIZER, TOKENIZER_CONFIG];

/// Where a model came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A directory given with `--model`.
    Local,
    /// A snapshot in the Hugging Face cache.
    Hub {
        repo_id: String,
        revision: String,
        commit: String,
    },
}

/// Paths of a model's files, all inside [`ModelFiles::dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    pub origin: Origin,
    pub dir: PathBuf,
    pub config: PathBuf,
    /// `None` when the file does not exist (stop tokens then fall back, see `prompt::StopTokens`).
    pub generation_config: Option<PathBuf>,
    /// Where tokenizer.json is expected. For a local directory it may be missing (packing does
    /// not need it); loading it then fails with a message that names this path.
    pub tokenizer: PathBuf,
    /// Where tokenizer_config.json (the chat template) is expected; may be missing likewise.
    pub tokenizer_config: PathBuf,
    /// The safetensors files in the index's order of first appearance (sorted names), or the
    /// single `model.safetensors`.
    pub weights: Vec<PathBuf>,
    /// `model.safetensors.index.json` for a sharded checkpoint.
    pub weights_index: Option<PathBuf>,
}

impl ModelFiles {
    /// Collects the files of `dir`; config.json and the weights must exist.
    pub fn from_dir(dir: &Path, origin: Origin) -> Result<Self, HubError> {
        let config = dir.join(CONFIG);
        if !config.is_file() {
            return Err(HubError::LocalNoConfig {
                dir: dir.to_path_buf(),
            });
        }
        let Weights {
            files: weights,
            index: weights_index,
        } = weights_in(dir)?.ok_or_else(|| HubError::NoWeights {
            dir: dir.to_path_buf(),
            detail: String::new(),
        })?;
        let generation_config = Some(dir.join(GENERATION_CONFIG)).filter(|p| p.is_file());
        Ok(Self {
            origin,
            dir: dir.to_path_buf(),
            config,
            generation_config,
            tokenizer: dir.join(TOKENIZER),
            tokenizer_config: dir.join(TOKENIZER_CONFIG),
            weights,
            weights_index,
        })
    }
}

/// The safetensors files of a directory.
pub struct Weights {
    pub files: Vec<PathBuf>,
    /// The shard index, for a sharded checkpoint.
    pub index: Option<PathBuf>,
}

/// The weights of `dir`: `Ok(None)` when there is neither a single file nor an index; an error
/// when an index lists a shard that is missing (a half-finished download).
pub fn weights_in(dir: &Path) -> Result<Option<Weights>, HubError> {
    let single = dir.join(SINGLE_WEIGHTS);
    if single.is_file() {
        return Ok(Some(Weights {
            files: vec![single],
            index: None,
        }));
    }
    let index = dir.join(WEIGHTS_INDEX);
    if !index.is_file() {
        return Ok(None);
    }
    let shards = shard_names(&index)?;
    let mut paths = Vec::with_capacity(shards.len());
    for name in shards {
        let path = dir.join(&name);
        if !path.is_file() {
            return Err(HubError::NoWeights {
                dir: dir.to_path_buf(),
                detail: format!(": {} lists {name}, which is missing", index.display()),
            });
        }
        paths.push(path);
    }
    Ok(Some(Weights {
        files: paths,
        index: Some(index),
    }))
}

/// Shard file names listed by a `model.safetensors.index.json` (`weight_map` values), sorted and
/// deduplicated. Names must be plain file names: an index is input, and a `../` in it must not
/// make us read (or download to) a path outside the model directory.
pub fn shard_names(index: &Path) -> Result<Vec<String>, HubError> {
    let bad = |message: String| HubError::BadIndex {
        path: index.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(index).map_err(|e| bad(e.to_string()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("no \"weight_map\" object".into()))?;
    let mut names = BTreeSet::new();
    for (tensor, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| bad(format!("weight_map[{tensor:?}] is not a file name")))?;
        let plain = !file.is_empty()
            && !file.contains(['/', '\\'])
            && file != ".."
            && file != "."
            && file.ends_with(".safetensors");
        if !plain {
            return Err(bad(format!(
                "weight_map[{tensor:?}] = {file:?} is not a .safetensors file name"
            )));
        }
        names.insert(file.to_owned());
    }
    if names.is_empty() {
        return Err(bad("the weight_map is empty".into()));
    }
    Ok(names.into_iter().collect())
}
