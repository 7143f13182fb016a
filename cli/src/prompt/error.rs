//! Errors of the prompt pipeline. Each message is a sentence a user can act on: it names the file
//! involved and says what to do, because these errors reach the terminal unchanged.

use std::path::PathBuf;

/// Everything that can go wrong between a user's text and token ids (and back).
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error(
        "cannot read the tokenizer {path}: {source}. The model directory needs the tokenizer.json \
         published with the model: download the model again or point --model at a directory that has it"
    )]
    TokenizerRead {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error(
        "{path} is not a usable tokenizer.json ({message}). The file is probably truncated or \
         corrupt: delete it and download the model again"
    )]
    TokenizerParse { path: PathBuf, message: String },

    #[error(
        "cannot read {path}: {source}. Chat mode needs the model's tokenizer_config.json (it holds \
         the chat template); download the model again, or use --raw to encode the prompt text as-is"
    )]
    TokenizerConfigRead {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error(
        "{path} is not valid JSON ({source}): delete it and download the model again, or use --raw \
         to encode the prompt text without a chat template"
    )]
    TokenizerConfigParse {
        path: PathBuf,
        source: serde_json::Error,
    },

    #[error(
        "{path} has no chat template (no \"chat_template\" entry and no chat_template.jinja beside \
         it), so the prompt cannot be formatted as a chat: use --raw to encode the prompt text as-is"
    )]
    NoChatTemplate { path: PathBuf },

    #[error("the chat template in {path} does not compile: {message}. Use --raw to bypass it")]
    TemplateSyntax { path: PathBuf, message: String },

    #[error("the chat template failed while formatting the conversation: {message}")]
    TemplateRender { message: String },

    #[error("the tokenizer could not encode the prompt: {message}")]
    Encode { message: String },

    #[error("the tokenizer could not decode token ids {ids:?}: {message}")]
    Decode { ids: Vec<u32>, message: String },

    #[error("cannot read {path}: {source}")]
    GenerationConfigRead {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error(
        "{path} is not valid JSON or its eos_token_id is neither an integer nor a list of \
         integers ({message}): fix or delete the file (stop tokens then come from config.json)"
    )]
    GenerationConfigParse { path: PathBuf, message: String },

    #[error(
        "no stop token found: {searched}. Generation would never stop on its own; provide a \
         generation_config.json with \"eos_token_id\""
    )]
    NoStopTokens { searched: String },
}
