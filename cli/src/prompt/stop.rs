//! Stop tokens: the ids that end generation.
//!
//! Order of sources, first that names any id wins:
//! 1. `generation_config.json`'s `eos_token_id` (what `model.generate` uses; for Qwen3-0.6B both
//!    `<|im_end|>` 151645 and `<|endoftext|>` 151643);
//! 2. `config.json`'s `eos_token_id` (older checkpoints have no generation config);
//! 3. the tokenizer's `<|im_end|>` and `<|endoftext|>`, the two end markers of the Qwen family.
//!
//! A file that exists but cannot be parsed is an error, not a reason to fall through: falling back
//! would hide a broken download. The chosen source is returned with the ids so the CLI can say
//! where they came from (no source is used silently).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{PromptError, PromptTokenizer};

/// Token texts tried when neither config file names an end-of-sequence id.
pub const FALLBACK_STOP_TOKENS: [&str; 2] = ["<|im_end|>", "<|endoftext|>"];

/// Where the stop ids came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopSource {
    GenerationConfig(PathBuf),
    ModelConfig(PathBuf),
    /// Neither file named one: the Qwen end markers found in the tokenizer.
    TokenizerFallback,
}

/// The set of ids that end generation, and their origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopTokens {
    pub ids: Vec<u32>,
    pub source: StopSource,
}

impl StopTokens {
    /// Reads the stop ids; `generation_config` and `config` may be absent (`None`, or a path to a
    /// file that does not exist).
    pub fn load(
        generation_config: Option<&Path>,
        config: Option<&Path>,
        tokenizer: &PromptTokenizer,
    ) -> Result<Self, PromptError> {
        let generation_text = generation_config.map(read_optional).transpose()?.flatten();
        let config_text = config.map(read_optional).transpose()?.flatten();
        Self::from_texts(
            generation_config.zip(generation_text.as_deref()),
            config.zip(config_text.as_deref()),
            tokenizer,
        )
    }

    /// [`StopTokens::load`] over texts already read (from a packed file): each is the file's
    /// label (a path, for messages) and its JSON text; `None` means the file does not exist.
    pub fn from_texts(
        generation_config: Option<(&Path, &str)>,
        config: Option<(&Path, &str)>,
        tokenizer: &PromptTokenizer,
    ) -> Result<Self, PromptError> {
        if let Some((path, text)) = generation_config
            && let Some(ids) = eos_ids_in(text, path)?
        {
            return Ok(Self {
                ids,
                source: StopSource::GenerationConfig(path.to_path_buf()),
            });
        }
        if let Some((path, text)) = config
            && let Some(ids) = eos_ids_in(text, path)?
        {
            return Ok(Self {
                ids,
                source: StopSource::ModelConfig(path.to_path_buf()),
            });
        }
        let ids: Vec<u32> = FALLBACK_STOP_TOKENS
            .iter()
            .filter_map(|t| tokenizer.token_id(t))
            .collect();
        if ids.is_empty() {
            let searched = [generation_config, config]
                .into_iter()
                .flatten()
                .map(|(p, _)| format!("no eos_token_id in {}", p.display()))
                .chain(std::iter::once(format!(
                    "neither {} nor {} in {}",
                    FALLBACK_STOP_TOKENS[0],
                    FALLBACK_STOP_TOKENS[1],
                    tokenizer.path().display()
                )))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(PromptError::NoStopTokens { searched });
        }
        Ok(Self {
            ids,
            source: StopSource::TokenizerFallback,
        })
    }

    pub fn contains(&self, id: u32) -> bool {
        self.ids.contains(&id)
    }

    /// A short phrase for logs: "from /…/generation_config.json".
    pub fn describe_source(&self) -> String {
        match &self.source {
            StopSource::GenerationConfig(p) | StopSource::ModelConfig(p) => {
                format!("from {}", p.display())
            }
            StopSource::TokenizerFallback => format!(
                "from the tokenizer ({} / {}: no eos_token_id in generation_config.json or config.json)",
                FALLBACK_STOP_TOKENS[0], FALLBACK_STOP_TOKENS[1]
            ),
        }
    }
}

/// `eos_token_id` is an integer or a list of integers in both config files.
#[derive(Deserialize)]
#[serde(untagged)]
enum EosIds {
    One(u32),
    Many(Vec<u32>),
}

#[derive(Deserialize)]
struct EosField {
    #[serde(default)]
    eos_token_id: Option<EosIds>,
}

/// The file's text; `Ok(None)` when it does not exist.
fn read_optional(path: &Path) -> Result<Option<String>, PromptError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PromptError::GenerationConfigRead {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// `Ok(None)` when the text names no id; an error when it is broken (`path` labels it).
fn eos_ids_in(text: &str, path: &Path) -> Result<Option<Vec<u32>>, PromptError> {
    let field: EosField =
        serde_json::from_str(text).map_err(|e| PromptError::GenerationConfigParse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    let ids = match field.eos_token_id {
        None => return Ok(None),
        Some(EosIds::One(id)) => vec![id],
        Some(EosIds::Many(ids)) => ids,
    };
    Ok(if ids.is_empty() { None } else { Some(ids) })
}
