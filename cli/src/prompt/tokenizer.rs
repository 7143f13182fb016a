//! The model's `tokenizer.json`, loaded with the `tokenizers` crate (the same Rust code that backs
//! transformers' fast tokenizers, so ids match `AutoTokenizer` by construction).

use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

use super::{PromptError, TextStream};

/// A loaded tokenizer. Text is always encoded with `add_special_tokens=False`: a chat template
/// already writes every special token it wants, and raw mode means "exactly this text". Special
/// tokens written in the text (`<|im_start|>`) still map to their single ids.
pub struct PromptTokenizer {
    inner: Tokenizer,
    path: PathBuf,
}

impl std::fmt::Debug for PromptTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptTokenizer")
            .field("path", &self.path)
            .finish()
    }
}

impl PromptTokenizer {
    /// Reads and parses `tokenizer.json`. A missing file and a corrupt one get different
    /// messages, because the fixes differ (point elsewhere vs. download again).
    pub fn load(path: &Path) -> Result<Self, PromptError> {
        let bytes = std::fs::read(path).map_err(|source| PromptError::TokenizerRead {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes, path)
    }

    /// Parses `tokenizer.json` bytes already read (from a packed file); `origin` labels errors.
    pub fn from_bytes(bytes: &[u8], origin: &Path) -> Result<Self, PromptError> {
        let inner = Tokenizer::from_bytes(bytes).map_err(|e| PromptError::TokenizerParse {
            path: origin.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(Self {
            inner,
            path: origin.to_path_buf(),
        })
    }

    /// Where the tokenizer was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Token ids of `text`, without adding any special token.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, PromptError> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| PromptError::Encode {
                message: e.to_string(),
            })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Text of `ids` in one go (not for streaming: see [`PromptTokenizer::stream`]).
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, PromptError> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| PromptError::Decode {
                ids: ids.to_vec(),
                message: e.to_string(),
            })
    }

    /// The id of a token written as text, e.g. `"<|im_end|>"`; `None` when not in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The text of one id, e.g. `151645` → `"<|im_end|>"` (byte-level form for ordinary tokens).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Number of ids the tokenizer knows, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// A decoder for generated ids that yields text as soon as it is whole (see [`TextStream`]).
    pub fn stream(&self, skip_special_tokens: bool) -> TextStream<'_> {
        TextStream::new(&self.inner, skip_special_tokens)
    }
}
