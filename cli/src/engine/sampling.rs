//! How the next token is chosen: the settings every engine takes, their translation into the
//! kernel's [`SampleParams`], and the cpu engine's implementation over a logits vector.
//!
//! The cpu engine calls the kernel crate's own noise ([`rng`]) and final choice ([`choose`]),
//! and builds the same 64-bit keys, so the same seed gives the same tokens on every engine (up
//! to the last-bit differences of the logits themselves, as for greedy decoding).

use anyhow::{Result, bail};
use qwenmk_kernels::ops::argmax::{argmax_key, key_row};
use qwenmk_kernels::ops::sample::candidates::CANDIDATES;
use qwenmk_kernels::ops::sample::{SampleParams, choose, rng};

/// Sampling settings, llama.cpp's and transformers' knobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// 0 = greedy.
    pub temperature: f32,
    /// 0 = off; at most [`MAX_TOP_K`].
    pub top_k: u32,
    /// 1 = off.
    pub top_p: f32,
    /// 0 = off.
    pub min_p: f32,
    /// 1 = off.
    pub repeat_penalty: f32,
    /// Positions the penalty looks back over (the token just fed included); 0 = off.
    pub repeat_last_n: usize,
    pub seed: u64,
}

/// The most candidates the fused sampler keeps.
pub const MAX_TOP_K: u32 = CANDIDATES as u32;

impl Sampling {
    /// Greedy decoding, no penalty: what every engine does unless told otherwise.
    pub const fn greedy() -> Self {
        Sampling {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            repeat_last_n: 0,
            seed: 0,
        }
    }

    /// Checks the ranges, with a sentence that names the flag.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            bail!(
                "--temp must be 0 (greedy) or a positive number, not {}",
                self.temperature
            );
        }
        if self.top_k > MAX_TOP_K {
            bail!(
                "--top-k {} is more than the {MAX_TOP_K} candidates the fused sampler keeps; use \
                 --top-k {MAX_TOP_K} or less (0 turns top-k off)",
                self.top_k
            );
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            bail!(
                "--top-p must be in (0, 1] (1 turns it off), not {}",
                self.top_p
            );
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            bail!(
                "--min-p must be in [0, 1] (0 turns it off), not {}",
                self.min_p
            );
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            bail!(
                "--repeat-penalty must be a positive number (1 turns it off), not {}",
                self.repeat_penalty
            );
        }
        Ok(())
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Whether top-k, top-p or min-p cut the distribution (the candidates mode).
    pub fn truncates(&self) -> bool {
        self.top_k > 0 || self.top_p < 1.0 || self.min_p > 0.0
    }

    /// The penalty's window in positions, 0 when the penalty is off.
    pub fn penalty_window(&self) -> usize {
        if self.repeat_penalty == 1.0 {
            0
        } else {
            self.repeat_last_n
        }
    }

    /// The kernel's parameters for a step whose output is `used` (prompt tokens but the last
    /// are not: they run greedy, without penalty, only recording their input). Pointers are
    /// left null for the engine to fill.
    pub fn kernel_params(&self, used: bool) -> SampleParams {
        let mut p = SampleParams::greedy();
        p.penalty_window = self.penalty_window() as u32;
        p.seed = self.seed;
        if !used {
            return p;
        }
        p.repeat_penalty = self.repeat_penalty;
        p.temperature = self.temperature;
        p.top_p = self.top_p;
        p.min_p = self.min_p;
        p.mode = if self.is_greedy() {
            SampleParams::GREEDY
        } else if self.truncates() {
            p.top_k = if self.top_k == 0 {
                MAX_TOP_K
            } else {
                self.top_k
            };
            SampleParams::CANDIDATES
        } else {
            SampleParams::TEMPERATURE
        };
        p
    }

    /// The settings in a few words, for the stats line.
    pub fn describe(&self) -> String {
        if self.is_greedy() {
            let mut text = "greedy".to_owned();
            if self.penalty_window() > 0 {
                text += &format!(
                    ", repeat-penalty {} over {}",
                    self.repeat_penalty, self.repeat_last_n
                );
            }
            return text;
        }
        let mut parts = vec![format!("temp {}", self.temperature)];
        if self.top_k > 0 {
            parts.push(format!("top-k {}", self.top_k));
        }
        if self.top_p < 1.0 {
            parts.push(format!("top-p {}", self.top_p));
        }
        if self.min_p > 0.0 {
            parts.push(format!("min-p {}", self.min_p));
        }
        if self.penalty_window() > 0 {
            parts.push(format!(
                "repeat-penalty {} over {}",
                self.repeat_penalty, self.repeat_last_n
            ));
        }
        parts.push(format!("seed {}", self.seed));
        parts.join(", ")
    }
}

/// The cpu engine's choice of the token after `logits` (the step at `position`), `window`
/// being the tokens at the last positions up to and including `position`. The same keys and
/// the same [`choose`] as the kernel. `None` when a logit is NaN.
pub fn choose_token(
    logits: &[f32],
    window: &[u32],
    sampling: &Sampling,
    position: u32,
) -> Option<u32> {
    if logits.iter().any(|l| l.is_nan()) {
        return None;
    }
    let params = sampling.kernel_params(true);
    let mut in_window = vec![false; if params.penalises() { logits.len() } else { 0 }];
    for &t in window {
        if let Some(slot) = in_window.get_mut(t as usize) {
            *slot = true;
        }
    }
    let value = |row: usize| {
        let logit = logits[row];
        if in_window.get(row) == Some(&true) {
            params.penalise(logit)
        } else {
            logit
        }
    };
    let keys = (0..logits.len()).map(|row| (row, value(row)));
    let best = |keys: &mut dyn Iterator<Item = u64>| keys.max().map(key_row);
    match params.mode {
        SampleParams::TEMPERATURE => best(&mut keys.map(|(row, v)| {
            let noise = rng::gumbel(params.seed, position, row as u32);
            argmax_key(v / params.temperature + noise, row as u32)
        })),
        SampleParams::CANDIDATES => {
            let mut all: Vec<u64> = keys.map(|(row, v)| argmax_key(v, row as u32)).collect();
            let kept = all.len().min(CANDIDATES);
            if kept == 0 {
                return None;
            }
            all.select_nth_unstable_by(kept - 1, |a, b| b.cmp(a));
            let top = &mut all[..kept];
            top.sort_unstable_by(|a, b| b.cmp(a));
            let n = params.top_k.min(kept as u32);
            let i = choose(n, |i| top[i as usize], &params, position);
            Some(key_row(top[i as usize]))
        }
        _ => best(&mut keys.map(|(row, v)| argmax_key(v, row as u32))),
    }
}
