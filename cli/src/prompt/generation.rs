//! The sampling defaults a checkpoint publishes in `generation_config.json`, read as
//! transformers reads them: greedy unless `do_sample` is true; then `temperature`, `top_k`,
//! `top_p`, `min_p` and `repetition_penalty`, each with transformers' default when absent
//! (1.0, 50, 1.0, none, 1.0).

use std::path::Path;

use serde::Deserialize;

use super::PromptError;

/// What the file asks for; `None` fields were not given.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct GenerationDefaults {
    #[serde(default)]
    pub do_sample: Option<bool>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_k: Option<u32>,
    #[serde(default)]
    pub top_p: Option<f32>,
    #[serde(default)]
    pub min_p: Option<f32>,
    #[serde(default)]
    pub repetition_penalty: Option<f32>,
}

impl GenerationDefaults {
    /// The file's settings; all `None` when there is no file. A file that exists but does not
    /// parse is an error (as for the stop tokens).
    pub fn load(path: Option<&Path>) -> Result<Self, PromptError> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(PromptError::GenerationConfigRead {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        Self::from_text(&text, path)
    }

    /// The settings of a generation config's text (`label` names it in errors: a path, or a
    /// file inside a packed model).
    pub fn from_text(text: &str, label: &Path) -> Result<Self, PromptError> {
        serde_json::from_str(text).map_err(|e| PromptError::GenerationConfigParse {
            path: label.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Whether the checkpoint asks for sampling at all.
    pub fn samples(&self) -> bool {
        self.do_sample == Some(true)
    }

    /// transformers' values when sampling: the file's, else its defaults.
    pub fn temperature(&self) -> f32 {
        if self.samples() {
            self.temperature.unwrap_or(1.0)
        } else {
            0.0
        }
    }
    pub fn top_k(&self) -> u32 {
        self.top_k.unwrap_or(50)
    }
    pub fn top_p(&self) -> f32 {
        self.top_p.unwrap_or(1.0)
    }
    pub fn min_p(&self) -> f32 {
        self.min_p.unwrap_or(0.0)
    }
    pub fn repetition_penalty(&self) -> f32 {
        self.repetition_penalty.unwrap_or(1.0)
    }
}
