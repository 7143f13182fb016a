//! `qwenmk generate`: prompt in, continuation streamed to stdout, stats to stderr.
//!
//! 1. resolve the model (a checkpoint, or a packed file that carries everything) and its config;
//! 2. the prompt (words, -p, -f or stdin), tokenizer, chat template (unless `--raw`), stop
//!    tokens and sampling settings; encode the prompt and check that it fits the context — all
//!    before any expensive work;
//! 3. open the packed weights: the packed file given, or the checkpoint's in qwenmk's cache,
//!    packed on first use (or when the cached file is unusable);
//! 4. open the engine, prefill, decode, stream the text (Ctrl-C stops between steps);
//! 5. stats to stderr; with `--json` the one JSON document on stdout instead of the text.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use qwenmk_weights::{ModelConfig, PackedModel};
use serde_json::json;

use super::decode::{DecodeOptions, StopReason, decode};
use super::interrupt::{self, QuietExit};
use crate::cli::{Device, GenerateArgs};
use crate::commands::model::ModelInput;
use crate::commands::pack::pack_with_progress;
use crate::engine::{ContextSize, check_device, open_engine};
use crate::hub::{HubSettings, ModelFiles, packed_cache_path};
use crate::prompt::{
    PromptInput, PromptSource, StopSource, encode_prompt, read_prompt, stdin_is_terminal,
};

/// The emulator allocates its whole KV cache up front; without `--max-context` it gets at most
/// this many positions.
pub const EMULATOR_DEFAULT_CONTEXT: usize = 4096;

pub fn run(args: &GenerateArgs) -> Result<()> {
    let started = Instant::now();
    let mut notice = |line: &str| {
        // A closed stderr must not turn a notice into a panic.
        let _ = writeln!(std::io::stderr(), "{line}");
    };
    let source = PromptSource::choose(
        args.prompt.as_deref(),
        &args.words,
        args.file.as_ref(),
        stdin_is_terminal(),
    )?;
    let text = read_prompt(&source)?;

    // 1. The model and its config (a packed file carries everything; a checkpoint is found or
    //    downloaded, its weights packed in step 3).
    let model_input = ModelInput::resolve(&args.model)?;
    let config = model_input.config().clone();

    // 2. The prompt, whether it fits, and how tokens are chosen.
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
        PromptInput::Raw(text)
    } else {
        PromptInput::Chat {
            system: args.system.clone(),
            user: text,
            enable_thinking: args.think,
        }
    };
    let prompt = encode_prompt(&tokenizer, template.as_ref(), &input)?;
    if prompt.ids.is_empty() {
        bail!("the prompt encodes to no tokens; give some text");
    }
    check_vocabulary(&prompt.ids, &model_input.tokenizer_label(), &config)?;
    let max_context = context_size(args.max_context, args.device, &config, &mut notice)?;
    if prompt.ids.len() > max_context {
        bail!(
            "the prompt has {} tokens but the context holds {max_context}; shorten it or raise \
             --max-context (the model allows up to {})",
            prompt.ids.len(),
            config.max_position_embeddings
        );
    }
    let defaults = model_input.generation_defaults()?;
    let sampling = super::sampling::resolve(&args.sampling, &defaults, max_context, &mut notice)?;

    // 3. Weights and engine.
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
    // The gpu engine may hold fewer positions than asked for when memory is short.
    let max_context = engine.max_context();
    if prompt.ids.len() > max_context {
        bail!(
            "the prompt has {} tokens but the {} engine's context holds {max_context}; shorten it \
             or free GPU memory",
            prompt.ids.len(),
            engine.name()
        );
    }
    engine.set_sampling(&sampling)?;

    // 4. Decode.
    let out = std::io::stdout();
    let mut out = out.lock();
    let options = DecodeOptions {
        max_tokens: args.max_tokens,
        ignore_eos: args.ignore_eos,
        stream: !args.json,
    };
    let outcome = decode(
        engine.as_mut(),
        &tokenizer,
        &stop,
        &options,
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
            "stats": outcome.stats_json(engine.name(), max_context, engine.kv_cache(), &sampling),
        });
        writeln!(out, "{report}").context("cannot write to stdout")?;
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
    notice(&outcome.stats_line(engine.name(), &sampling));
    if outcome.stop_reason == StopReason::Interrupted {
        return Err(QuietExit(interrupt::INTERRUPTED).into());
    }
    Ok(())
}

/// Fails when the tokenizer (`tokenizer` names it) produced an id the model has no row for.
pub(crate) fn check_vocabulary(ids: &[u32], tokenizer: &Path, config: &ModelConfig) -> Result<()> {
    if let Some(&id) = ids.iter().find(|&&id| id as usize >= config.vocab_size) {
        bail!(
            "the tokenizer {} produced token id {id}, but the model's vocabulary has {} entries; \
             tokenizer.json does not belong to this model",
            tokenizer.display(),
            config.vocab_size
        );
    }
    Ok(())
}

/// `--max-context`, or its default: the model's maximum, except on the emulator, which allocates
/// its cache up front and gets at most [`EMULATOR_DEFAULT_CONTEXT`] (with a notice).
pub(crate) fn context_size(
    requested: Option<usize>,
    device: Device,
    config: &ModelConfig,
    notice: &mut dyn FnMut(&str),
) -> Result<usize> {
    let model_max = config.max_position_embeddings;
    match requested {
        Some(0) => bail!("--max-context must be at least 1"),
        Some(n) if n > model_max => bail!(
            "--max-context {n} is more than the {model_max} positions the model supports; lower it"
        ),
        Some(n) => Ok(n),
        None if device == Device::Emulator && model_max > EMULATOR_DEFAULT_CONTEXT => {
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
