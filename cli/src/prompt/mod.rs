//! From the user's text to prompt token ids, and from generated ids back to text.
//!
//! - [`PromptTokenizer`]: `tokenizer.json`, encode/decode;
//! - [`ChatTemplate`]: `tokenizer_config.json`'s chat template rendered like transformers'
//!   `apply_chat_template`;
//! - [`StopTokens`]: the ids that end generation;
//! - [`TextStream`]: streaming decode that never prints half a character.
//!
//! [`encode_prompt`] ties them together for `qwenmk generate`.

mod error;
mod generation;
mod source;
mod stop;
mod stream;
mod template;
mod tokenizer;

pub use error::PromptError;
pub use generation::GenerationDefaults;
pub use source::{PromptSource, read_prompt, stdin_is_terminal};
pub use stop::{FALLBACK_STOP_TOKENS, StopSource, StopTokens};
pub use stream::TextStream;
pub use template::{ChatMessage, ChatTemplate, RenderOptions, single_turn};
pub use tokenizer::PromptTokenizer;

/// What the user asked to send to the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptInput {
    /// A one-turn chat formatted by the model's template.
    Chat {
        system: Option<String>,
        user: String,
        enable_thinking: bool,
    },
    /// The text exactly as given, no template, no special tokens added (`--raw`).
    Raw(String),
}

/// The text that was tokenized (after templating) and its ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedPrompt {
    pub text: String,
    pub ids: Vec<u32>,
}

/// Formats and tokenizes `input`. Chat input needs `template` (load it with
/// [`ChatTemplate::load`], whose error tells the user about `--raw`); raw input ignores it.
pub fn encode_prompt(
    tokenizer: &PromptTokenizer,
    template: Option<&ChatTemplate>,
    input: &PromptInput,
) -> Result<EncodedPrompt, PromptError> {
    let text = match input {
        PromptInput::Raw(text) => text.clone(),
        PromptInput::Chat {
            system,
            user,
            enable_thinking,
        } => {
            let template = template.ok_or_else(|| PromptError::TemplateRender {
                message: "no chat template was loaded for chat mode; use --raw to encode the \
                          prompt text as-is"
                    .into(),
            })?;
            let messages = single_turn(system.as_deref(), user);
            let options = RenderOptions {
                add_generation_prompt: true,
                enable_thinking: *enable_thinking,
            };
            template.render(&messages, options)?
        }
    };
    let ids = tokenizer.encode(&text)?;
    Ok(EncodedPrompt { text, ids })
}

#[cfg(test)]
mod tests;
