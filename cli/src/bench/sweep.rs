//! The measurement: for each depth, fill the KV cache to it (with real decode steps, or with
//! pseudo-random rows), warm up,
//! then time `repetitions` runs of `tokens` decode steps, each from the same depth (the cache is
//! truncated back after every run, so every repetition does the same work). Then, the same way,
//! `repetitions` prefills of a `prompt`-token prompt from that depth (llama-bench's pp beside its
//! tg), after a shorter warm-up prefill.

use anyhow::{Context, Result, bail};

use super::engine::BenchEngine;
use super::simulated::{ProfileSum, SimulatedProfile};
use crate::cli::Fill;

/// What to measure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepPlan {
    /// Ascending, without duplicates; each fits: `depth + span() ≤ max_context`.
    pub depths: Vec<usize>,
    pub tokens: usize,
    /// Prompt tokens per prompt-processing run; 0 = none.
    pub prompt: usize,
    pub repetitions: usize,
    pub warmup: usize,
    /// Seeds the pseudo-random tokens (or rows) that fill the cache.
    pub seed: u64,
    pub fill: Fill,
}

/// A depth that was asked for but does not fit, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    pub depth: usize,
    pub reason: String,
}

impl SweepPlan {
    /// Sorts and de-duplicates `requested` and keeps the depths that fit in `limit` positions
    /// (the model's maximum context): the runs from depth `d` use positions
    /// `d .. d + max(warmup, tokens, prompt)`. The rest are returned as skipped.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        requested: &[usize],
        tokens: usize,
        prompt: usize,
        repetitions: usize,
        warmup: usize,
        (seed, fill): (u64, Fill),
        limit: usize,
    ) -> Result<(SweepPlan, Vec<Skipped>)> {
        if tokens == 0 {
            bail!("-n must be at least 1");
        }
        if repetitions == 0 {
            bail!("-r must be at least 1");
        }
        let mut depths = requested.to_vec();
        depths.sort_unstable();
        depths.dedup();
        let span = warmup.max(tokens).max(prompt);
        let (fit, skipped): (Vec<usize>, Vec<usize>) =
            depths.into_iter().partition(|&d| d + span <= limit);
        let skipped = skipped
            .into_iter()
            .map(|depth| Skipped {
                depth,
                reason: format!(
                    "depth {depth} + {span} tokens (decoded or prompt) exceeds the model's \
                     context of {limit} positions"
                ),
            })
            .collect::<Vec<_>>();
        if fit.is_empty() {
            bail!(
                "no depth fits: a depth plus {span} tokens (decoded or prompt) must be at most \
                 the model's context of {limit} positions; lower --depth, -n or -p"
            );
        }
        let plan = SweepPlan {
            depths: fit,
            tokens,
            prompt,
            repetitions,
            warmup,
            seed,
            fill,
        };
        Ok((plan, skipped))
    }

    /// Positions the runs from a depth use beyond it: the longest of the warm-up, a decode run
    /// and a prompt.
    pub fn span(&self) -> usize {
        self.warmup.max(self.tokens).max(self.prompt)
    }

    /// Positions the KV cache must hold: the deepest depth plus its longest run.
    pub fn context_needed(&self) -> usize {
        self.depths.last().copied().unwrap_or(0) + self.span()
    }

    /// Prompt tokens of the untimed prefill before the prompt-processing runs: as many as the
    /// decode warm-up's steps, at most a whole prompt.
    pub fn prompt_warmup(&self) -> usize {
        self.warmup.min(self.prompt)
    }

    /// Tokens the whole sweep feeds (for the progress bar).
    pub fn total_steps(&self) -> u64 {
        let fill = match self.fill {
            Fill::Steps => self.depths.last().copied().unwrap_or(0),
            Fill::Random => 0,
        };
        let decode = self.warmup + self.repetitions * self.tokens;
        let prompt = self.prompt_warmup() + self.repetitions * self.prompt;
        (fill + self.depths.len() * (decode + prompt)) as u64
    }

    /// The prompt of the prompt-processing runs at `depth`: the tokens a fill would feed there.
    pub fn prompt_at(&self, depth: usize, vocab: usize) -> Vec<u32> {
        (depth..depth + self.prompt)
            .map(|p| self.token_at(p, vocab))
            .collect()
    }

    /// The token fed at `position` while filling, and as the first of every timed run from
    /// that depth: pseudo-random, the same for every run and engine.
    pub fn token_at(&self, position: usize, vocab: usize) -> u32 {
        let mut z = self
            .seed
            .wrapping_add((position as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z % vocab as u64) as u32
    }
}

/// One depth's timed repetitions.
#[derive(Debug, Clone, PartialEq)]
pub struct DepthSamples {
    pub depth: usize,
    /// Seconds for each repetition of `tokens` steps.
    pub samples_s: Vec<f64>,
    /// Where the timed steps' time went, on a virtual GPU with a timing model.
    pub profile: Option<SimulatedProfile>,
    /// Seconds for each prefill of a `prompt`-token prompt (empty when `prompt` is 0).
    pub prompt_samples_s: Vec<f64>,
}

/// What the sweep reports as it goes.
pub enum Progress<'a> {
    /// `stage` of `depth` began ("filling", "warm-up", "run 2/5", "prompt 1/5").
    Stage { depth: usize, stage: &'a str },
    /// Steps done since the last report.
    Steps(u64),
}

/// Runs `plan` on `engine`, whose cache must be empty and hold [`SweepPlan::context_needed`]
/// positions.
pub fn run(
    engine: &mut dyn BenchEngine,
    plan: &SweepPlan,
    vocab: usize,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Vec<DepthSamples>> {
    if engine.position() != 0 {
        bail!("the bench needs an empty KV cache; this is a qwenmk bug");
    }
    if engine.max_context() < plan.context_needed() {
        bail!(
            "the KV cache holds {} positions but the sweep needs {}; this is a qwenmk bug",
            engine.max_context(),
            plan.context_needed()
        );
    }
    let mut results = Vec::with_capacity(plan.depths.len());
    for &depth in &plan.depths {
        // 1. Fill: real decode steps through the same kernel with pseudo-random tokens, or
        //    pseudo-random rows written into the cache.
        progress(Progress::Stage {
            depth,
            stage: "filling",
        });
        match plan.fill {
            Fill::Steps => {
                while engine.position() < depth {
                    let position = engine.position();
                    engine
                        .step(plan.token_at(position, vocab))
                        .with_context(|| format!("filling the KV cache at position {position}"))?;
                    progress(Progress::Steps(1));
                }
            }
            Fill::Random => engine
                .fill_random(depth, plan.seed)
                .with_context(|| format!("filling the KV cache to depth {depth}"))?,
        }
        let first = plan.token_at(depth, vocab);

        // 2. Warm-up, on the timed path, then back to the depth.
        if plan.warmup > 0 {
            progress(Progress::Stage {
                depth,
                stage: "warm-up",
            });
            engine
                .decode_timed(first, plan.warmup)
                .with_context(|| format!("warming up at depth {depth}"))?;
            engine.truncate(depth)?;
            progress(Progress::Steps(plan.warmup as u64));
        }

        // 3. The timed runs, each from `depth`, profiled on a timing model (what came before
        //    is dropped).
        engine.take_profile(&mut ProfileSum::default())?;
        let mut profile = ProfileSum::default();
        let mut samples_s = Vec::with_capacity(plan.repetitions);
        for run in 0..plan.repetitions {
            let stage = format!("run {}/{}", run + 1, plan.repetitions);
            progress(Progress::Stage {
                depth,
                stage: &stage,
            });
            let timed = engine
                .decode_timed(first, plan.tokens)
                .with_context(|| format!("decoding at depth {depth}"))?;
            engine.take_profile(&mut profile)?;
            engine.truncate(depth)?;
            if !(timed.seconds.is_finite() && timed.seconds > 0.0) {
                bail!(
                    "the timer gave {} s for {} steps at depth {depth}",
                    timed.seconds,
                    plan.tokens
                );
            }
            samples_s.push(timed.seconds);
            progress(Progress::Steps(plan.tokens as u64));
        }

        let prompt_samples_s = time_prompts(engine, plan, depth, vocab, progress)?;
        results.push(DepthSamples {
            depth,
            samples_s,
            profile: profile.finish(),
            prompt_samples_s,
        });
    }
    Ok(results)
}

/// The prompt-processing runs at `depth` (whose cache is filled): a warm-up prefill, then
/// `repetitions` timed prefills of the plan's prompt, each from `depth`.
fn time_prompts(
    engine: &mut dyn BenchEngine,
    plan: &SweepPlan,
    depth: usize,
    vocab: usize,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Vec<f64>> {
    if plan.prompt == 0 {
        return Ok(Vec::new());
    }
    let prompt = plan.prompt_at(depth, vocab);
    let warmup = plan.prompt_warmup();
    if warmup > 0 {
        progress(Progress::Stage {
            depth,
            stage: "prompt warm-up",
        });
        engine
            .prefill_timed(&prompt[..warmup])
            .with_context(|| format!("warming up the prompt processing at depth {depth}"))?;
        engine.truncate(depth)?;
        progress(Progress::Steps(warmup as u64));
    }
    let mut samples_s = Vec::with_capacity(plan.repetitions);
    for run in 0..plan.repetitions {
        let stage = format!("prompt {}/{}", run + 1, plan.repetitions);
        progress(Progress::Stage {
            depth,
            stage: &stage,
        });
        let timed = engine.prefill_timed(&prompt).with_context(|| {
            format!(
                "processing a {}-token prompt at depth {depth}",
                prompt.len()
            )
        })?;
        engine.truncate(depth)?;
        if !(timed.seconds.is_finite() && timed.seconds > 0.0) {
            bail!(
                "the timer gave {} s for a {}-token prompt at depth {depth}",
                timed.seconds,
                prompt.len()
            );
        }
        samples_s.push(timed.seconds);
        progress(Progress::Steps(plan.prompt as u64));
    }
    Ok(samples_s)
}

#[cfg(test)]
mod tests {
    use super::super::engine::Timed;
    use super::*;
    use crate::engine::Engine;

    /// An engine that only counts: every step takes "1 ms" and returns position + 1.
    struct Counting {
        position: usize,
        max: usize,
        steps: usize,
        positions_timed: Vec<usize>,
        /// (position, tokens) of each timed prefill.
        prompts_timed: Vec<(usize, usize)>,
        fills: Vec<(usize, u64)>,
    }

    impl Counting {
        fn new(max: usize) -> Self {
            Counting {
                position: 0,
                max,
                steps: 0,
                positions_timed: Vec::new(),
                prompts_timed: Vec::new(),
                fills: Vec::new(),
            }
        }
    }

    impl Engine for Counting {
        fn name(&self) -> &'static str {
            "counting"
        }
        fn max_context(&self) -> usize {
            self.max
        }
        fn position(&self) -> usize {
            self.position
        }
        fn kv_cache(&self) -> crate::engine::KvDtype {
            crate::engine::KvDtype::F32
        }
        fn set_sampling(&mut self, _sampling: &crate::engine::Sampling) -> Result<()> {
            Ok(())
        }
        fn feed(&mut self, _token: u32, _next: crate::engine::Next) -> Result<u32> {
            if self.position >= self.max {
                bail!("full");
            }
            self.position += 1;
            self.steps += 1;
            Ok(self.position as u32)
        }
        fn truncate(&mut self, position: usize) -> Result<()> {
            assert!(position <= self.position);
            self.position = position;
            Ok(())
        }
    }

    impl BenchEngine for Counting {
        fn fill_random(&mut self, depth: usize, seed: u64) -> Result<()> {
            self.fills.push((depth, seed));
            self.position = depth;
            Ok(())
        }

        fn decode_timed(&mut self, first: u32, n: usize) -> Result<Timed> {
            self.positions_timed.push(self.position);
            let mut t = first;
            for _ in 0..n {
                t = self.step(t)?;
            }
            Ok(Timed {
                last: t,
                seconds: n as f64 * 1e-3,
            })
        }

        fn prefill_timed(&mut self, tokens: &[u32]) -> Result<Timed> {
            self.prompts_timed.push((self.position, tokens.len()));
            let last = self.prefill(tokens)?;
            Ok(Timed {
                last,
                seconds: tokens.len() as f64 * 1e-3,
            })
        }
    }

    #[test]
    fn depths_are_sorted_deduplicated_and_checked_against_the_context() {
        let (plan, skipped) = SweepPlan::new(
            &[128, 0, 32, 32, 1000, 200],
            8,
            0,
            2,
            4,
            (0, Fill::Steps),
            136,
        )
        .unwrap();
        assert_eq!(plan.depths, vec![0, 32, 128]);
        assert_eq!(
            skipped.iter().map(|s| s.depth).collect::<Vec<_>>(),
            vec![200, 1000]
        );
        assert!(skipped[0].reason.contains("136 positions"), "{skipped:?}");
        assert_eq!(plan.context_needed(), 136);
        assert!(SweepPlan::new(&[200], 8, 0, 2, 4, (0, Fill::Steps), 100).is_err());
        assert!(SweepPlan::new(&[0], 0, 0, 2, 4, (0, Fill::Steps), 100).is_err());
        assert!(SweepPlan::new(&[0], 1, 0, 0, 4, (0, Fill::Steps), 100).is_err());
        // A prompt longer than the decode runs sets the span.
        let (plan, skipped) =
            SweepPlan::new(&[0, 32, 100], 8, 40, 2, 4, (0, Fill::Steps), 136).unwrap();
        assert_eq!(plan.depths, vec![0, 32]);
        assert_eq!(plan.context_needed(), 72);
        assert!(skipped[0].reason.contains("100 + 40 tokens"), "{skipped:?}");
        let err = SweepPlan::new(&[0], 8, 200, 2, 4, (0, Fill::Steps), 136).unwrap_err();
        assert!(err.to_string().contains("-p"), "{err}");
    }

    #[test]
    fn every_run_starts_at_its_depth_and_steps_add_up() {
        let (plan, _) = SweepPlan::new(&[0, 5, 20], 3, 0, 2, 4, (9, Fill::Steps), 64).unwrap();
        let mut engine = Counting::new(plan.context_needed());
        let mut reported = 0;
        let results = run(&mut engine, &plan, 100, &mut |p| {
            if let Progress::Steps(n) = p {
                reported += n;
            }
        })
        .unwrap();
        assert_eq!(results.len(), 3);
        for (r, depth) in results.iter().zip([0, 5, 20]) {
            assert_eq!(r.depth, depth);
            assert_eq!(r.samples_s, vec![3e-3, 3e-3]);
            assert!(r.prompt_samples_s.is_empty(), "no prompt asked for");
        }
        // Warm-up then two runs per depth, each from the depth itself.
        assert_eq!(engine.positions_timed, vec![0, 0, 0, 5, 5, 5, 20, 20, 20]);
        assert!(engine.prompts_timed.is_empty());
        assert_eq!(engine.steps as u64, plan.total_steps());
        assert_eq!(reported, plan.total_steps());
    }

    #[test]
    fn a_random_fill_writes_the_cache_instead_of_stepping() {
        let (plan, _) = SweepPlan::new(&[0, 5, 20], 3, 0, 2, 4, (9, Fill::Random), 64).unwrap();
        let mut engine = Counting::new(plan.context_needed());
        let mut reported = 0;
        let results = run(&mut engine, &plan, 100, &mut |p| {
            if let Progress::Steps(n) = p {
                reported += n;
            }
        })
        .unwrap();
        assert_eq!(results.len(), 3);
        assert_eq!(engine.fills, vec![(0, 9), (5, 9), (20, 9)]);
        assert_eq!(engine.positions_timed, vec![0, 0, 0, 5, 5, 5, 20, 20, 20]);
        // Only the warm-up and timed steps ran.
        assert_eq!(engine.steps, 3 * (4 + 2 * 3));
        assert_eq!(engine.steps as u64, plan.total_steps());
        assert_eq!(reported, plan.total_steps());
    }

    #[test]
    fn prompt_runs_start_at_their_depth_after_a_warm_up_prefill() {
        let (plan, _) = SweepPlan::new(&[0, 7], 3, 6, 2, 4, (9, Fill::Steps), 64).unwrap();
        assert_eq!(plan.context_needed(), 13);
        let mut engine = Counting::new(plan.context_needed());
        let mut reported = 0;
        let results = run(&mut engine, &plan, 100, &mut |p| {
            if let Progress::Steps(n) = p {
                reported += n;
            }
        })
        .unwrap();
        for (r, depth) in results.iter().zip([0, 7]) {
            // Each prefill takes "1 ms" per token.
            assert_eq!(r.prompt_samples_s, vec![6e-3, 6e-3], "depth {depth}");
        }
        // (position, tokens): a 4-token warm-up, then two 6-token prompts, from each depth.
        assert_eq!(
            engine.prompts_timed,
            vec![(0, 4), (0, 6), (0, 6), (7, 4), (7, 6), (7, 6)]
        );
        assert_eq!(engine.steps as u64, plan.total_steps());
        assert_eq!(reported, plan.total_steps());
        // The prompt is what a fill would have fed there.
        assert_eq!(plan.prompt_at(7, 100)[0], plan.token_at(7, 100));
    }

    #[test]
    fn fill_tokens_are_in_the_vocabulary_and_reproducible() {
        let (plan, _) = SweepPlan::new(&[0], 1, 0, 1, 0, (42, Fill::Steps), 10).unwrap();
        let tokens: Vec<u32> = (0..1000).map(|p| plan.token_at(p, 300)).collect();
        assert!(tokens.iter().all(|&t| t < 300));
        assert!(tokens.windows(2).any(|w| w[0] != w[1]));
        assert_eq!(tokens[17], plan.token_at(17, 300));
    }
}
