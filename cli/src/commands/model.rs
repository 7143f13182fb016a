//! What `--model` names for the commands that run a model (`generate`, `bench`): a checkpoint
//! (a directory or a hub repo, packed into qwenmk's cache on first use) or a packed file, which
//! carries its own config, tokenizer, chat template and generation config and needs nothing else.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use qwenmk_weights::pack::{
    CHAT_TEMPLATE_FILE, GENERATION_CONFIG_FILE, TOKENIZER_CONFIG_FILE, TOKENIZER_FILE,
};
use qwenmk_weights::{ModelConfig, PackedModel};

use crate::cli::ModelArgs;
use crate::hub::{HubSettings, ModelFiles, ModelSource};
use crate::prompt::{ChatTemplate, GenerationDefaults, PromptError, PromptTokenizer, StopTokens};

/// A model ready to be run: its config is known, its weights may still need packing.
pub enum ModelInput {
    Checkpoint(Box<CheckpointInput>),
    Packed(Arc<PackedModel>),
}

/// A checkpoint's files and config, and the settings that locate qwenmk's cache.
pub struct CheckpointInput {
    pub settings: HubSettings,
    pub files: ModelFiles,
    pub config: ModelConfig,
}

impl ModelInput {
    /// Resolves `--model`: a packed file is opened and verified at once (its config lives
    /// inside); a checkpoint is found or downloaded and its config read.
    pub fn resolve(args: &ModelArgs) -> Result<Self> {
        let settings = HubSettings::from_env()?;
        match ModelSource::parse(&args.model, &args.revision)? {
            ModelSource::Packed(path) => {
                Ok(ModelInput::Packed(Arc::new(PackedModel::open(&path)?)))
            }
            source => {
                let files = source.fetch(args.offline, &settings)?;
                let config = ModelConfig::from_file(&files.config)?;
                Ok(ModelInput::Checkpoint(Box::new(CheckpointInput {
                    settings,
                    files,
                    config,
                })))
            }
        }
    }

    pub fn config(&self) -> &ModelConfig {
        match self {
            ModelInput::Checkpoint(c) => &c.config,
            ModelInput::Packed(model) => model.config(),
        }
    }

    /// `tokenizer.json`, from the checkpoint or from inside the packed file.
    pub fn tokenizer(&self) -> Result<PromptTokenizer> {
        match self {
            ModelInput::Checkpoint(c) => Ok(PromptTokenizer::load(&c.files.tokenizer)?),
            ModelInput::Packed(model) => {
                let bytes = model.attachment(TOKENIZER_FILE).ok_or_else(|| {
                    missing_inside(model.path(), TOKENIZER_FILE, "to encode a prompt")
                })?;
                Ok(PromptTokenizer::from_bytes(
                    bytes,
                    &inside(model.path(), TOKENIZER_FILE),
                )?)
            }
        }
    }

    /// The chat template (`tokenizer_config.json`, or `chat_template.jinja` beside it).
    pub fn chat_template(&self) -> Result<ChatTemplate> {
        match self {
            ModelInput::Checkpoint(c) => Ok(ChatTemplate::load(&c.files.tokenizer_config)?),
            ModelInput::Packed(model) => {
                let path = model.path();
                let Some(config) = model.attachment(TOKENIZER_CONFIG_FILE) else {
                    return Err(PromptError::NoChatTemplate {
                        path: inside(path, TOKENIZER_CONFIG_FILE),
                    }
                    .into());
                };
                let config = text(config, path, TOKENIZER_CONFIG_FILE)?;
                let jinja = model
                    .attachment(CHAT_TEMPLATE_FILE)
                    .map(|bytes| text(bytes, path, CHAT_TEMPLATE_FILE).map(str::to_owned))
                    .transpose()?;
                Ok(ChatTemplate::from_texts(
                    config,
                    jinja,
                    &inside(path, TOKENIZER_CONFIG_FILE),
                    &inside(path, CHAT_TEMPLATE_FILE),
                )?)
            }
        }
    }

    /// The stop tokens: the generation config's, else the model config's, else the tokenizer's
    /// end markers (see [`StopTokens`]).
    pub fn stop_tokens(&self, tokenizer: &PromptTokenizer) -> Result<StopTokens> {
        match self {
            ModelInput::Checkpoint(c) => Ok(StopTokens::load(
                c.files.generation_config.as_deref(),
                Some(&c.files.config),
                tokenizer,
            )?),
            ModelInput::Packed(model) => {
                let path = model.path();
                let generation = model
                    .attachment(GENERATION_CONFIG_FILE)
                    .map(|bytes| text(bytes, path, GENERATION_CONFIG_FILE))
                    .transpose()?;
                let generation_label = inside(path, GENERATION_CONFIG_FILE);
                let config = model.config().to_json_string();
                let config_label = inside(path, "config.json");
                Ok(StopTokens::from_texts(
                    generation.map(|t| (generation_label.as_path(), t)),
                    Some((config_label.as_path(), config.as_str())),
                    tokenizer,
                )?)
            }
        }
    }

    /// Where the tokenizer comes from, for messages.
    pub fn tokenizer_label(&self) -> PathBuf {
        match self {
            ModelInput::Checkpoint(c) => c.files.tokenizer.clone(),
            ModelInput::Packed(model) => inside(model.path(), TOKENIZER_FILE),
        }
    }

    /// The sampling defaults of the generation config (none when there is no such file).
    pub fn generation_defaults(&self) -> Result<GenerationDefaults> {
        match self {
            ModelInput::Checkpoint(c) => Ok(GenerationDefaults::load(
                c.files.generation_config.as_deref(),
            )?),
            ModelInput::Packed(model) => match model.attachment(GENERATION_CONFIG_FILE) {
                None => Ok(GenerationDefaults::default()),
                Some(bytes) => {
                    let path = model.path();
                    Ok(GenerationDefaults::from_text(
                        text(bytes, path, GENERATION_CONFIG_FILE)?,
                        &inside(path, GENERATION_CONFIG_FILE),
                    )?)
                }
            },
        }
    }

    /// The packed weights: the packed file itself, or the checkpoint's file in qwenmk's cache
    /// (packed on first use, see [`super::generate::open_or_pack`]).
    pub fn weights(&self, notice: &mut dyn FnMut(&str)) -> Result<Arc<PackedModel>> {
        match self {
            ModelInput::Checkpoint(c) => Ok(Arc::new(super::generate::open_or_pack(
                &c.files,
                &c.settings,
                notice,
            )?)),
            ModelInput::Packed(model) => Ok(model.clone()),
        }
    }
}

/// `model.qwenmk#tokenizer.json`: how messages name a file carried inside a packed file.
fn inside(packed: &Path, name: &str) -> PathBuf {
    PathBuf::from(format!("{}#{name}", packed.display()))
}

fn missing_inside(packed: &Path, name: &str, why: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{} carries no {name}, which is needed {why}: it was packed from a checkpoint without \
         one (or holds random weights); pack the checkpoint again with its {name} beside \
         config.json",
        packed.display()
    )
}

fn text<'a>(bytes: &'a [u8], packed: &Path, name: &str) -> Result<&'a str> {
    std::str::from_utf8(bytes)
        .with_context(|| format!("{} is not UTF-8 text", inside(packed, name).display()))
}
