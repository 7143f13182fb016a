//! `qwenmk generate`: prompt in, greedy continuation streamed to stdout, stats to stderr.
//!
//! 1. resolve the model (a checkpoint, or a packed file that carries everything) and its config;
//! 2. tokenizer, chat template (unless `--raw`), stop tokens; encode the prompt and check that it
//!    fits the context — all before any expensive work;
//! 3. open the packed weights: the packed file given, or the checkpoint's in qwenmk's cache,
//!    packed on first use (or when the cached file is unusable);
//! 4. open the engine, prefill, decode greedily, stream the text;
//! 5. stats to stderr, and with `--json` one JSON line at the end of stdout.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use qwenmk_weights::{ModelConfig, PackedModel};
use serde_json::json;

use crate::cli::{Device, GenerateArgs};
use crate::commands::model::ModelInput;
use crate::commands::pack::pack_with_progress;
use crate::engine::{ContextSize, Engine, check_device, open_engine};
use crate::hub::{HubSettings, ModelFiles, packed_cache_path};
use crate::prompt::{PromptInput, PromptTokenizer, StopSource, StopTokens, encode_prompt};

/// The emulator allocates its whole KV cache up front; without `--max-context` it gets at most
/// this many positions.
pub const EMULATOR_DEFAULT_CONTEXT: usize = 4096;

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A stop token was generated (it is in `tokens`, not in the text).
    Eos,
    /// `-n` tokens were generated.
    Length,
    /// The KV cache is full.
    Context,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Eos => "eos",
            StopReason::Length => "length",
            StopReason::Context => "context",
        }
    }
}

pub fn run(args: &GenerateArgs) -> Result<()> {
    let started = Instant::now();
    let mut notice = |line: &str| {
        // A closed stderr must not turn a notice into a panic.
        let _ = writeln!(std::io::stderr(), "{line}");
    };

    // 1. The model and its config (a packed file carries everything; a checkpoint is found or
    //    downloaded, its weights packed in step 3).
    let model_input = ModelInput::resolve(&args.model)?;
    let config = model_input.config().clone();

    // 2. The prompt, and whether it fits.
    let tokenizer = model_input.tokenizer()?;
    let template = if args.raw {
        None
    } else {
        Some(model_input.chat_template()?)
    };
    let stop = model_input.stop_tokens(&tokenizer)?;
    if !matches!(stop.source, StopSource::GenerationConfig(_)) && !args.ignore_eos {
        notice(&format!(
            "stop tokens {:?} {}",
            stop.ids,
            stop.describe_source()
        ));
    }
    let input = if args.raw {
        PromptInput::Raw(args.prompt.clone())
    } else {
        PromptInput::Chat {
            system: args.system.clone(),
            user: args.prompt.clone(),
            enable_thinking: args.think,
        }
    };
    let prompt = encode_prompt(&tokenizer, template.as_ref(), &input)?;
    if prompt.ids.is_empty() {
        bail!("the prompt encodes to no tokens; give some text");
    }
    if let Some(&id) = prompt
        .ids
        .iter()
        .find(|&&id| id as usize >= config.vocab_size)
    {
        bail!(
            "the tokenizer {} produced token id {id}, but the model's vocabulary has {} entries; \
             tokenizer.json does not belong to this model",
            tokenizer.path().display(),
            config.vocab_size
        );
    }
    let max_context = context_size(args, &config, &mut notice)?;
    if prompt.ids.len() > max_context {
        bail!(
            "the prompt has {} tokens but the context holds {max_context}; shorten it or raise \
             --max-context (the model allows up to {})",
            prompt.ids.len(),
            config.max_position_embeddings
        );
    }

    // 3. Weights and engine.
    check_device(args.device)?;
    let model = model_input.weights(&mut notice)?;
    let context = ContextSize {
        positions: max_context,
        explicit: args.max_context.is_some(),
    };
    let mut engine = open_engine(args.device, model, context, &mut notice)?;
    // The gpu engine may hold fewer positions than asked for when memory is short.
    let max_context = engine.max_context();
    if prompt.ids.len() > max_context {
        bail!(
            "the prompt has {} tokens but the {} engine's context holds {max_context}; shorten it              or free GPU memory",
            prompt.ids.len(),
            engine.name()
        );
    }

    // 4. Decode.
    let out = std::io::stdout();
    let mut out = out.lock();
    let outcome = decode(
        engine.as_mut(),
        &tokenizer,
        &stop,
        args,
        &prompt.ids,
        started,
        &mut out,
    )?;

    // 5. Report.
    if args.json {
        let report = json!({
            "prompt_tokens": prompt.ids,
            "tokens": outcome.tokens,
            "text": outcome.text,
            "stats": outcome.stats_json(engine.name(), prompt.ids.len(), max_context),
        });
        // A newline ends the streamed text, so the JSON is always a line of its own.
        writeln!(out, "\n{report}").context("cannot write to stdout")?;
    } else if !outcome.text.is_empty() && !outcome.text.ends_with('\n') {
        writeln!(out).context("cannot write to stdout")?;
    }
    out.flush().context("cannot write to stdout")?;
    if outcome.stop_reason == StopReason::Context {
        notice(&format!(
            "stopped: the context is full ({max_context} positions); raise --max-context (the \
             model allows up to {}) to generate more",
            config.max_position_embeddings
        ));
    }
    notice(&outcome.stats_line(engine.name(), prompt.ids.len()));
    Ok(())
}

/// `--max-context`, or its default: the model's maximum, except on the emulator, which allocates
/// its cache up front and gets at most [`EMULATOR_DEFAULT_CONTEXT`] (with a notice).
fn context_size(
    args: &GenerateArgs,
    config: &ModelConfig,
    notice: &mut dyn FnMut(&str),
) -> Result<usize> {
    let model_max = config.max_position_embeddings;
    match args.max_context {
        Some(0) => bail!("--max-context must be at least 1"),
        Some(n) if n > model_max => bail!(
            "--max-context {n} is more than the {model_max} positions the model supports; lower it"
        ),
        Some(n) => Ok(n),
        None if args.device == Device::Emulator && model_max > EMULATOR_DEFAULT_CONTEXT => {
            notice(&format!(
                "the emulator allocates its KV cache up front: using a context of \
                 {EMULATOR_DEFAULT_CONTEXT} positions (the model allows {model_max}; raise it \
                 with --max-context)"
            ));
            Ok(EMULATOR_DEFAULT_CONTEXT)
        }
        None => Ok(model_max),
    }
}

/// The packed weights of `files` from qwenmk's cache. Packs them when the cached file is missing,
/// and packs them again when it cannot be used (corrupt, truncated, another format version),
/// saying so in one line.
pub(crate) fn open_or_pack(
    files: &ModelFiles,
    settings: &HubSettings,
    notice: &mut dyn FnMut(&str),
) -> Result<PackedModel> {
    let path = packed_cache_path(files, settings)?;
    if path.exists() {
        match PackedModel::open(&path) {
            Ok(model) => return Ok(model),
            Err(why) => notice(&format!(
                "the cached packed weights are unusable ({why:#}); packing {} again",
                files.dir.display()
            )),
        }
    } else {
        notice(&format!(
            "packing {} into {} (first use; later runs reuse it)",
            files.dir.display(),
            path.display()
        ));
    }
    crate::commands::pack::ensure_cache_dir(&settings.packed_dir)?;
    pack_with_progress(files, &path)?;
    PackedModel::open(&path)
        .with_context(|| format!("the freshly packed weights {} do not open", path.display()))
}

/// What [`decode`] produced.
struct Outcome {
    /// Generated ids, a stop token that ended generation included (as Hugging Face's `generate`
    /// returns the EOS id).
    tokens: Vec<u32>,
    /// Their text, without the stop token; what was streamed.
    text: String,
    stop_reason: StopReason,
    prefill: Duration,
    /// From the start of the command to the first token on stdout.
    ttft: Option<Duration>,
    /// Time in the steps after the prefill, and how many there were.
    decode: Duration,
    decode_steps: usize,
}

impl Outcome {
    fn decode_rate(&self) -> Option<f64> {
        let secs = self.decode.as_secs_f64();
        (self.decode_steps > 0 && secs > 0.0).then(|| self.decode_steps as f64 / secs)
    }

    fn stats_json(
        &self,
        engine: &str,
        prompt_tokens: usize,
        max_context: usize,
    ) -> serde_json::Value {
        json!({
            "engine": engine,
            "prompt_tokens": prompt_tokens,
            "generated_tokens": self.tokens.len(),
            "max_context": max_context,
            "prefill_s": self.prefill.as_secs_f64(),
            "ttft_s": self.ttft.map(|t| t.as_secs_f64()),
            "decode_s": self.decode.as_secs_f64(),
            "tokens_per_s": self.decode_rate(),
            "stop_reason": self.stop_reason.as_str(),
        })
    }

    fn stats_line(&self, engine: &str, prompt_tokens: usize) -> String {
        let prefill_s = self.prefill.as_secs_f64();
        let mut line = format!("{engine}: prompt {prompt_tokens} tokens, prefill {prefill_s:.3} s");
        if prefill_s > 0.0 {
            line += &format!(" ({:.1} tok/s)", prompt_tokens as f64 / prefill_s);
        }
        line += &format!("; generated {} tokens", self.tokens.len());
        if let Some(ttft) = self.ttft {
            line += &format!(", first after {:.3} s", ttft.as_secs_f64());
        }
        if let Some(rate) = self.decode_rate() {
            line += &format!(
                ", decode {:.1} tok/s ({} steps in {:.3} s)",
                rate,
                self.decode_steps,
                self.decode.as_secs_f64()
            );
        }
        line += &format!("; stop: {}", self.stop_reason.as_str());
        line
    }
}

/// Prefills `prompt` and decodes greedily, streaming text to `out` as it becomes whole.
///
/// Ends at a stop token (unless `--ignore-eos`), after `-n` tokens, or when the cache is full:
/// the prefill leaves `prompt.len()` positions in the cache and every further token takes one,
/// so at most `max_context - prompt.len() + 1` tokens come out (the last from a full cache).
fn decode(
    engine: &mut dyn Engine,
    tokenizer: &PromptTokenizer,
    stop: &StopTokens,
    args: &GenerateArgs,
    prompt: &[u32],
    started: Instant,
    out: &mut impl Write,
) -> Result<Outcome> {
    let mut outcome = Outcome {
        tokens: Vec::new(),
        text: String::new(),
        stop_reason: StopReason::Length,
        prefill: Duration::ZERO,
        ttft: None,
        decode: Duration::ZERO,
        decode_steps: 0,
    };
    if args.max_tokens == 0 {
        return Ok(outcome);
    }
    let mut stream = tokenizer.stream(false);
    let mut emit = |text: &str, outcome: &mut Outcome| -> Result<()> {
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .context("cannot write to stdout")?;
        outcome.text.push_str(text);
        Ok(())
    };

    let prefill_start = Instant::now();
    let mut next = engine.prefill(prompt)?;
    outcome.prefill = prefill_start.elapsed();
    let decode_start = Instant::now();
    loop {
        outcome.tokens.push(next);
        if !args.ignore_eos && stop.contains(next) {
            outcome.stop_reason = StopReason::Eos;
            break;
        }
        if let Some(text) = stream.push(next)? {
            emit(&text, &mut outcome)?;
        }
        if outcome.ttft.is_none() {
            outcome.ttft = Some(started.elapsed());
        }
        if outcome.tokens.len() >= args.max_tokens {
            outcome.stop_reason = StopReason::Length;
            break;
        }
        if engine.position() >= engine.max_context() {
            outcome.stop_reason = StopReason::Context;
            break;
        }
        next = engine.step(next)?;
        outcome.decode_steps += 1;
    }
    outcome.decode = decode_start.elapsed();
    if let Some(tail) = stream.finish()? {
        emit(&tail, &mut outcome)?;
    }
    Ok(outcome)
}
