//! `qwenmk chat`: a multi-turn conversation over one KV cache.
//!
//! Each turn feeds only its new tokens: the end of the previous reply's turn (unless the model
//! already ended it with its stop token), the user's turn and the opening of the assistant's,
//! as the chat template renders them. Past turns are never re-rendered or re-fed, so what the
//! model sees is exactly what it was fed and what it generated (like llama.cpp's
//! `llama-cli`).
//!
//! On a terminal the input is edited with rustyline (history included) and Ctrl-C stops the
//! reply in progress; with stdin not a terminal every line is one user turn and the replies go
//! to stdout, so a conversation can be scripted. Stats for each turn go to stderr.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::json;

use super::decode::{DecodeOptions, StopReason, decode};
use super::generate::{check_vocabulary, context_size};
use super::interrupt;
use super::model::ModelInput;
use crate::cli::ChatArgs;
use crate::engine::{ContextSize, Engine, Sampling, check_device, open_engine};
use crate::prompt::{ChatMessage, ChatTemplate, PromptTokenizer, RenderOptions, StopTokens};

/// Stands for the previous reply when rendering the text between two turns.
const REPLY_SENTINEL: &str = "\u{1}qwenmk-reply\u{1}";

const HELP: &str = "commands: /think on|off (the model reasons first, or not), /clear (forget \
                    the conversation), /exit (or Ctrl-D); Ctrl-C stops a reply";

pub fn run(args: &ChatArgs) -> Result<()> {
    let mut notice = |line: &str| {
        let _ = writeln!(std::io::stderr(), "{line}");
    };
    // A checkpoint, or a packed file that carries its tokenizer, template and configs.
    let model_input = ModelInput::resolve(&args.model)?;
    let config = model_input.config().clone();
    let tokenizer = model_input.tokenizer()?;
    let template = model_input.chat_template()?;
    let stop = model_input.stop_tokens(&tokenizer)?;
    let tokenizer_label = model_input.tokenizer_label();
    let max_context = context_size(args.max_context, args.device, &config, &mut notice)?;
    let defaults = model_input.generation_defaults()?;
    let sampling = super::sampling::resolve(&args.sampling, &defaults, max_context, &mut notice)?;
    check_device(args.device)?;
    let model = model_input.weights(&mut notice)?;
    let context = ContextSize {
        positions: max_context,
        explicit: args.max_context.is_some(),
    };
    let mut engine = open_engine(
        args.device,
        model,
        context,
        args.kv_cache.map(Into::into),
        &mut notice,
    )?;
    engine.set_sampling(&sampling)?;
    notice(&format!(
        "chat on {} ({} positions, {} KV cache; {}). {HELP}",
        engine.name(),
        engine.max_context(),
        engine.kv_cache().name(),
        sampling.describe()
    ));

    let mut chat = Conversation {
        engine: engine.as_mut(),
        tokenizer: &tokenizer,
        template: &template,
        stop: &stop,
        sampling,
        system: args.system.clone(),
        think: args.think,
        turns: 0,
        history: Vec::new(),
        reply_closed: true,
        pending: None,
        json: args.json,
        max_tokens: args.max_tokens,
        check: &|ids| check_vocabulary(ids, &tokenizer_label, &config),
    };
    if std::io::stdin().is_terminal() {
        interactive(&mut chat)
    } else {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let line = line.context("cannot read a chat line from stdin (is it UTF-8 text?)")?;
            if !chat.input(&line)? {
                break;
            }
        }
        Ok(())
    }
}

/// A terminal session: rustyline with history, until /exit or Ctrl-D.
fn interactive(chat: &mut Conversation) -> Result<()> {
    use rustyline::error::ReadlineError;
    let mut editor =
        rustyline::DefaultEditor::new().context("cannot set up line editing on this terminal")?;
    loop {
        match editor.readline(if chat.think { "think> " } else { "> " }) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                if !chat.input(&line)? {
                    return Ok(());
                }
            }
            Err(ReadlineError::Interrupted) => {
                eprintln!("(Ctrl-C stops a reply; /exit or Ctrl-D ends the chat)");
            }
            Err(ReadlineError::Eof) => return Ok(()),
            Err(e) => return Err(e).context("cannot read the terminal"),
        }
    }
}

struct Conversation<'a> {
    engine: &'a mut dyn Engine,
    tokenizer: &'a PromptTokenizer,
    template: &'a ChatTemplate,
    stop: &'a StopTokens,
    sampling: Sampling,
    system: Option<String>,
    think: bool,
    turns: usize,
    /// The conversation so far, as the template sees it (the system turn not included).
    history: Vec<ChatMessage>,
    /// The last reply ended with the model's stop token, which then closes its turn.
    reply_closed: bool,
    /// The last token of the last reply: chosen but not yet fed (the next turn feeds it first).
    pending: Option<u32>,
    json: bool,
    max_tokens: usize,
    check: &'a dyn Fn(&[u32]) -> Result<()>,
}

impl Conversation<'_> {
    /// Handles one input line; false when the chat should end.
    fn input(&mut self, line: &str) -> Result<bool> {
        let line = line.trim_end_matches(['\r', '\n']);
        let command = line.trim();
        match command {
            "" => return Ok(true),
            "/exit" | "/quit" | "/bye" => return Ok(false),
            "/help" | "/?" => eprintln!("{HELP}"),
            "/clear" => {
                self.engine.truncate(0)?;
                self.history.clear();
                self.reply_closed = true;
                self.pending = None;
                eprintln!("(conversation cleared)");
            }
            "/think" | "/think on" => {
                self.think = true;
                eprintln!("(thinking on)");
            }
            "/think off" | "/no_think" | "/nothink" => {
                self.think = false;
                eprintln!("(thinking off)");
            }
            _ if command.starts_with('/') && !command.contains(' ') => {
                eprintln!("unknown command {command}; {HELP}");
            }
            _ => {
                if let Err(e) = self.turn(line) {
                    if super::interrupt::is_broken_pipe(&e) {
                        return Err(e);
                    }
                    // A turn that cannot run (a full context) leaves the chat usable.
                    eprintln!("error: {e:#}");
                }
            }
        }
        Ok(true)
    }

    /// The text this turn feeds: the whole first prompt, or what follows the previous reply.
    fn new_text(&self, user: &str) -> Result<String> {
        let options = RenderOptions {
            add_generation_prompt: true,
            enable_thinking: self.think,
        };
        if self.history.is_empty() {
            let mut messages = Vec::new();
            if let Some(system) = &self.system {
                messages.push(ChatMessage::system(system.as_str()));
            }
            messages.push(ChatMessage::user(user));
            return Ok(self.template.render(&messages, options)?);
        }
        // What the template writes after a reply: its turn's end, the user's turn, the
        // assistant's opening. Rendered around a sentinel reply so that nothing of the real
        // past is re-rendered (templates may render old turns differently, e.g. without
        // their reasoning).
        let messages = [
            ChatMessage::user("x"),
            ChatMessage::assistant(REPLY_SENTINEL),
            ChatMessage::user(user),
        ];
        let rendered = self.template.render(&messages, options)?;
        let Some(at) = rendered.find(REPLY_SENTINEL) else {
            bail!("the chat template does not write the assistant's reply back; use generate");
        };
        let mut after = &rendered[at + REPLY_SENTINEL.len()..];
        if self.reply_closed {
            // The model's stop token already ended its turn; do not feed it twice.
            for &id in &self.stop.ids {
                if let Some(text) = self.tokenizer.id_to_token(id)
                    && let Some(rest) = after.strip_prefix(text.as_str())
                {
                    after = rest;
                    break;
                }
            }
        }
        Ok(after.to_owned())
    }

    fn turn(&mut self, user: &str) -> Result<()> {
        let started = Instant::now();
        let text = self.new_text(user)?;
        let ids: Vec<u32> = self
            .pending
            .into_iter()
            .chain(self.tokenizer.encode(&text)?)
            .collect();
        (self.check)(&ids)?;
        let (position, max) = (self.engine.position(), self.engine.max_context());
        if position + ids.len() >= max {
            bail!(
                "this turn's {} tokens do not fit: the conversation holds {position} of {max} \
                 positions; /clear to start over, or raise --max-context",
                ids.len()
            );
        }
        self.turns += 1;
        interrupt::clear();
        let options = DecodeOptions {
            max_tokens: self.max_tokens,
            ignore_eos: false,
            stream: !self.json,
        };
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        let outcome = decode(
            self.engine,
            self.tokenizer,
            self.stop,
            &options,
            &ids,
            started,
            &mut out,
        )?;
        interrupt::clear();
        self.reply_closed = outcome.stop_reason == StopReason::Eos;
        self.pending = outcome.tokens.last().copied();
        if self.json {
            let report = json!({
                "turn": self.turns,
                "user": user,
                "new_tokens": ids.len(),
                "reply": outcome.text,
                "tokens": outcome.tokens,
                "position": self.engine.position(),
                "stats": outcome.stats_json(
                    self.engine.name(),
                    self.engine.max_context(),
                    self.engine.kv_cache(),
                    &self.sampling
                ),
            });
            writeln!(out, "{report}").context("cannot write to stdout")?;
        } else {
            writeln!(out).context("cannot write to stdout")?;
        }
        out.flush().context("cannot write to stdout")?;
        eprintln!(
            "turn {}: fed {} new tokens (cache {} of {}); {}",
            self.turns,
            ids.len(),
            self.engine.position(),
            self.engine.max_context(),
            outcome.stats_line(self.engine.name(), &self.sampling)
        );
        self.history.push(ChatMessage::user(user));
        self.history
            .push(ChatMessage::assistant(outcome.text.as_str()));
        Ok(())
    }
}
