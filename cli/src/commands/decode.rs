//! The decode loop `generate` and `chat` share: feed the new tokens, then choose, stream and
//! stop, with the timings that go into the stats.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;

use super::interrupt;
use crate::engine::{Engine, KvDtype, Sampling};
use crate::prompt::{PromptTokenizer, StopTokens};

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A stop token was generated (it is in `tokens`, not in the text).
    Eos,
    /// `-n` tokens were generated.
    Length,
    /// The KV cache is full.
    Context,
    /// Ctrl-C.
    Interrupted,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Eos => "eos",
            StopReason::Length => "length",
            StopReason::Context => "context",
            StopReason::Interrupted => "interrupted",
        }
    }
}

/// What [`decode`] produced.
pub struct Outcome {
    /// Generated ids, a stop token that ended generation included (as Hugging Face's `generate`
    /// returns the EOS id).
    pub tokens: Vec<u32>,
    /// Their text, without the stop token; what was streamed.
    pub text: String,
    pub stop_reason: StopReason,
    /// Tokens fed before the first choice, and the time that took.
    pub prompt_tokens: usize,
    pub prefill: Duration,
    /// From `started` to the first token.
    pub ttft: Option<Duration>,
    /// Time in the steps after the prefill, and how many there were.
    pub decode: Duration,
    pub decode_steps: usize,
}

impl Outcome {
    fn new(prompt_tokens: usize) -> Self {
        Outcome {
            tokens: Vec::new(),
            text: String::new(),
            stop_reason: StopReason::Length,
            prompt_tokens,
            prefill: Duration::ZERO,
            ttft: None,
            decode: Duration::ZERO,
            decode_steps: 0,
        }
    }

    pub fn decode_rate(&self) -> Option<f64> {
        let secs = self.decode.as_secs_f64();
        (self.decode_steps > 0 && secs > 0.0).then(|| self.decode_steps as f64 / secs)
    }

    pub fn prefill_rate(&self) -> Option<f64> {
        let secs = self.prefill.as_secs_f64();
        (self.prompt_tokens > 0 && secs > 0.0).then(|| self.prompt_tokens as f64 / secs)
    }

    pub fn stats_json(
        &self,
        engine: &str,
        max_context: usize,
        kv_cache: KvDtype,
        sampling: &Sampling,
    ) -> serde_json::Value {
        json!({
            "engine": engine,
            "prompt_tokens": self.prompt_tokens,
            "generated_tokens": self.tokens.len(),
            "max_context": max_context,
            "kv_cache": kv_cache.name(),
            "prefill_s": self.prefill.as_secs_f64(),
            "prefill_tokens_per_s": self.prefill_rate(),
            "ttft_s": self.ttft.map(|t| t.as_secs_f64()),
            "decode_s": self.decode.as_secs_f64(),
            "tokens_per_s": self.decode_rate(),
            "sampling": sampling_json(sampling),
            "stop_reason": self.stop_reason.as_str(),
        })
    }

    /// `cpu: prompt 12 tokens, prefill 0.120 s (100.0 tok/s); generated …; sampling …; stop: …`
    pub fn stats_line(&self, engine: &str, sampling: &Sampling) -> String {
        let prefill_s = self.prefill.as_secs_f64();
        let mut line = format!(
            "{engine}: prompt {} tokens, prefill {prefill_s:.3} s",
            self.prompt_tokens
        );
        if let Some(rate) = self.prefill_rate() {
            line += &format!(" ({rate:.1} tok/s)");
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
        line += &format!("; {}", sampling.describe());
        line += &format!("; stop: {}", self.stop_reason.as_str());
        line
    }
}

/// An f32 as the decimal it was written as (0.6, not 0.6000000238418579).
fn short(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

/// The settings as JSON.
pub fn sampling_json(s: &Sampling) -> serde_json::Value {
    if s.is_greedy() {
        return json!({
            "temperature": 0.0,
            "repeat_penalty": short(s.repeat_penalty),
            "repeat_last_n": s.repeat_last_n,
        });
    }
    json!({
        "temperature": short(s.temperature),
        "top_k": s.top_k,
        "top_p": short(s.top_p),
        "min_p": short(s.min_p),
        "repeat_penalty": short(s.repeat_penalty),
        "repeat_last_n": s.repeat_last_n,
        "seed": s.seed,
    })
}

/// How a decode runs.
pub struct DecodeOptions {
    pub max_tokens: usize,
    pub ignore_eos: bool,
    /// Stream the text to the output as it becomes whole (else only collect it).
    pub stream: bool,
}

/// Feeds `prompt` (the new tokens) and decodes, streaming text to `out` as it becomes whole.
///
/// Ends at a stop token (unless ignored), after `max_tokens` tokens, when the cache is full
/// (the feed leaves the cache one position fuller per token, so at most `max_context -
/// position + 1` tokens come out), or at Ctrl-C (checked between steps).
pub fn decode(
    engine: &mut dyn Engine,
    tokenizer: &PromptTokenizer,
    stop: &StopTokens,
    options: &DecodeOptions,
    prompt: &[u32],
    started: Instant,
    out: &mut dyn Write,
) -> Result<Outcome> {
    let mut outcome = Outcome::new(prompt.len());
    if options.max_tokens == 0 {
        return Ok(outcome);
    }
    // Ctrl-C now stops the loop below between steps, not the process.
    let _soft = interrupt::stop_softly();
    let mut stream = tokenizer.stream(false);
    let mut emit = |text: &str, outcome: &mut Outcome| -> Result<()> {
        if options.stream {
            out.write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .context("cannot write to stdout")?;
        }
        outcome.text.push_str(text);
        Ok(())
    };

    let prefill_start = Instant::now();
    let mut next = engine.prefill(prompt)?;
    outcome.prefill = prefill_start.elapsed();
    let decode_start = Instant::now();
    loop {
        outcome.tokens.push(next);
        if !options.ignore_eos && stop.contains(next) {
            outcome.stop_reason = StopReason::Eos;
            break;
        }
        if let Some(text) = stream.push(next)? {
            emit(&text, &mut outcome)?;
        }
        if outcome.ttft.is_none() {
            outcome.ttft = Some(started.elapsed());
        }
        if outcome.tokens.len() >= options.max_tokens {
            outcome.stop_reason = StopReason::Length;
            break;
        }
        if engine.position() >= engine.max_context() {
            outcome.stop_reason = StopReason::Context;
            break;
        }
        if interrupt::requested() {
            outcome.stop_reason = StopReason::Interrupted;
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
