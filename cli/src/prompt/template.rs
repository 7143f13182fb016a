//! The model's chat template, rendered the way Hugging Face transformers renders it.
//!
//! `transformers` (`PreTrainedTokenizerBase.apply_chat_template`) compiles the template with
//! `ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)` and the `loopcontrols`
//! extension, replaces the `tojson` filter with `json.dumps(x, ensure_ascii=False)` (Python's
//! default separators, no key sorting, no HTML escaping), adds a `raise_exception` global, and
//! renders with `messages`, `add_generation_prompt`, the caller's extra kwargs (here
//! `enable_thinking`) and the special-token strings (`eos_token`, `pad_token`, ...). Jinja2's
//! `keep_trailing_newline` stays at its default (false): one trailing newline of the template
//! source is dropped. The rendered text is then tokenized with `add_special_tokens=False`.
//! Everything below mirrors those choices; minijinja-contrib's `pycompat` callback supplies the
//! Python string methods (`startswith`, `split`, `strip(chars)`, ...) the templates call.

use std::path::Path;

use minijinja::value::Kwargs;
use minijinja::{Environment, ErrorKind, Value};
use serde::Serialize;

use super::PromptError;

const TEMPLATE_NAME: &str = "chat";

/// One turn of a conversation, as the chat template sees it (`message.role`, `message.content`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    /// Qwen3's template reads `message.reasoning_content` when it is defined; it is left out of
    /// the context entirely when `None`, as a Python dict without the key would be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            reasoning_content: None,
        }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// The conversation `qwenmk generate` sends: an optional system turn, then the user's prompt.
pub fn single_turn(system: Option<&str>, user: &str) -> Vec<ChatMessage> {
    let mut messages = Vec::with_capacity(2);
    if let Some(system) = system {
        messages.push(ChatMessage::system(system));
    }
    messages.push(ChatMessage::user(user));
    messages
}

/// Options of one rendering, named after `apply_chat_template`'s arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderOptions {
    /// Append the opening of the assistant's turn (`<|im_start|>assistant\n`).
    pub add_generation_prompt: bool,
    /// Passed to the template as `enable_thinking`. Qwen3 renders an empty
    /// `<think>\n\n</think>\n\n` block when it is false, which makes the model skip reasoning.
    pub enable_thinking: bool,
}

impl Default for RenderOptions {
    /// What `qwenmk generate` uses unless told otherwise: a generation prompt, thinking off.
    fn default() -> Self {
        Self {
            add_generation_prompt: true,
            enable_thinking: false,
        }
    }
}

/// A compiled chat template plus the special-token strings transformers passes along with it.
pub struct ChatTemplate {
    env: Environment<'static>,
    special_tokens: Vec<(String, String)>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("special_tokens", &self.special_tokens)
            .finish()
    }
}

impl ChatTemplate {
    /// Loads the template the way transformers does: a `chat_template.jinja` beside
    /// `tokenizer_config.json` wins (newer checkpoints store it there); otherwise the config's
    /// `chat_template` entry, a string or a list of `{name, template}` of which `default` is used.
    pub fn load(tokenizer_config: &Path) -> Result<Self, PromptError> {
        let text = std::fs::read_to_string(tokenizer_config).map_err(|source| {
            PromptError::TokenizerConfigRead {
                path: tokenizer_config.to_path_buf(),
                source,
            }
        })?;
        let jinja_file = tokenizer_config.with_file_name("chat_template.jinja");
        let jinja = std::fs::read_to_string(&jinja_file).ok();
        Self::from_texts(&text, jinja, tokenizer_config, &jinja_file)
    }

    /// [`ChatTemplate::load`] over texts already read (from a packed file): `tokenizer_config`
    /// is the JSON text, `jinja` a `chat_template.jinja`'s when there is one. The paths only
    /// label errors.
    pub fn from_texts(
        tokenizer_config: &str,
        jinja: Option<String>,
        tokenizer_config_origin: &Path,
        jinja_origin: &Path,
    ) -> Result<Self, PromptError> {
        let config: serde_json::Value =
            serde_json::from_str(tokenizer_config).map_err(|source| {
                PromptError::TokenizerConfigParse {
                    path: tokenizer_config_origin.to_path_buf(),
                    source,
                }
            })?;
        let (source, source_path) = match jinja {
            Some(source) => (source, jinja_origin.to_path_buf()),
            None => {
                let source =
                    template_from_config(&config).ok_or_else(|| PromptError::NoChatTemplate {
                        path: tokenizer_config_origin.to_path_buf(),
                    })?;
                (source, tokenizer_config_origin.to_path_buf())
            }
        };
        Self::from_source(source, special_tokens_from_config(&config), &source_path)
    }

    /// Compiles `source`. `special_tokens` are (name, text) pairs such as
    /// `("eos_token", "<|im_end|>")`; `origin` only labels errors.
    pub fn from_source(
        source: String,
        special_tokens: Vec<(String, String)>,
        origin: &Path,
    ) -> Result<Self, PromptError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", python_tojson);
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned(TEMPLATE_NAME, source)
            .map_err(|e| PromptError::TemplateSyntax {
                path: origin.to_path_buf(),
                message: describe(&e),
            })?;
        Ok(Self {
            env,
            special_tokens,
        })
    }

    /// Renders `messages` exactly as `apply_chat_template(messages, tokenize=False, ...)` would.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        options: RenderOptions,
    ) -> Result<String, PromptError> {
        let template =
            self.env
                .get_template(TEMPLATE_NAME)
                .map_err(|e| PromptError::TemplateRender {
                    message: describe(&e),
                })?;
        let mut context: Vec<(String, Value)> = self
            .special_tokens
            .iter()
            .map(|(name, text)| (name.clone(), Value::from(text.as_str())))
            .collect();
        context.push(("messages".into(), Value::from_serialize(messages)));
        context.push((
            "add_generation_prompt".into(),
            Value::from(options.add_generation_prompt),
        ));
        context.push((
            "enable_thinking".into(),
            Value::from(options.enable_thinking),
        ));
        let context: Value = context.into_iter().collect();
        template
            .render(context)
            .map_err(|e| PromptError::TemplateRender {
                message: describe(&e),
            })
    }
}

fn template_from_config(config: &serde_json::Value) -> Option<String> {
    match config.get("chat_template")? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(named) => named
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .and_then(|t| t.get("template")?.as_str().map(str::to_owned)),
        _ => None,
    }
}

/// transformers passes `special_tokens_map` to the template: each token is a plain string or an
/// `{"content": ...}` object (AddedToken), and absent/null ones are not passed at all.
fn special_tokens_from_config(config: &serde_json::Value) -> Vec<(String, String)> {
    ["bos_token", "eos_token", "unk_token", "pad_token"]
        .into_iter()
        .filter_map(|name| {
            let text = match config.get(name)? {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Object(o) => o.get("content")?.as_str()?.to_owned(),
                _ => return None,
            };
            Some((name.to_owned(), text))
        })
        .collect()
}

/// The template's own way to refuse a conversation (e.g. "roles must alternate").
fn raise_exception(message: String) -> Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=indent)`. Python separates
/// items with ", " and keys with ": " when there is no indent, unlike minijinja's compact,
/// HTML-escaped default, and that difference changes the token ids of tool calls.
fn python_tojson(value: Value, kwargs: Kwargs) -> Result<Value, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let mut out = Vec::new();
    let result = match indent {
        Some(width) => {
            let pad = vec![b' '; width];
            let formatter = serde_json::ser::PrettyFormatter::with_indent(&pad);
            value.serialize(&mut serde_json::Serializer::with_formatter(
                &mut out, formatter,
            ))
        }
        None => value.serialize(&mut serde_json::Serializer::with_formatter(
            &mut out,
            PySeparators,
        )),
    };
    result.map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    let text = String::from_utf8(out)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    Ok(Value::from_safe_string(text))
}

/// Python `json.dumps`' default layout: `[1, 2]`, `{"a": 1, "b": 2}`.
struct PySeparators;

impl serde_json::ser::Formatter for PySeparators {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

/// minijinja's message (it already names the template line) followed by its causes.
fn describe(error: &minijinja::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}
