//! What `qwenmk bench` needs of an engine beyond [`Engine`]: going back to a depth after a
//! timed run, timing `n` decode steps the way the engine runs them best, and timing a prompt's
//! prefill. The cpu and emulator engines are timed with the host clock around their steps; the
//! gpu engine launches the steps back to back and times them with CUDA events. Prefills are
//! timed with the host clock on every engine, as `generate` sees them.

use std::time::Instant;

use anyhow::Result;

use super::simulated::{ProfileSum, RawProfile};
use crate::engine::Engine;
use crate::engine::cpu::CpuEngine;
use crate::engine::emulator::EmulatorEngine;
use crate::engine::gpu::{GpuEngine, GpuInfo};

/// `n` decode steps (or a prompt's prefill) and the time they took.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timed {
    /// The token the last step chose.
    pub last: u32,
    pub seconds: f64,
}

pub trait BenchEngine: Engine {
    /// Decodes `n` tokens greedily from [`Engine::position`], `first` first, and times them.
    fn decode_timed(&mut self, first: u32, n: usize) -> Result<Timed> {
        let started = Instant::now();
        let mut token = first;
        for _ in 0..n {
            token = self.step(token)?;
        }
        Ok(Timed {
            last: token,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Fills the KV cache to `depth` positions with pseudo-random rows instead of decode steps
    /// (`--fill random`).
    fn fill_random(&mut self, depth: usize, seed: u64) -> Result<()>;

    /// How [`BenchEngine::decode_timed`] measures, for the report.
    fn timer(&self) -> &'static str {
        "host clock around the steps"
    }

    /// Adds the timing model's profile of the steps since the last call to `into`: only a
    /// virtual GPU with a timing model has one.
    fn take_profile(&mut self, into: &mut ProfileSum) -> Result<()> {
        let _ = into;
        Ok(())
    }

    /// Feeds `tokens` as one prompt from [`Engine::position`] ([`Engine::prefill`]) and times
    /// it, the choice of the next token included.
    fn prefill_timed(&mut self, tokens: &[u32]) -> Result<Timed> {
        let started = Instant::now();
        let last = self.prefill(tokens)?;
        Ok(Timed {
            last,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// How [`Engine::prefill`] processes a prompt, for the report.
    fn prefill_method(&self) -> String {
        "one decode step per token, host clock around the prefill".to_owned()
    }

    /// The GPU the engine runs on, if any.
    fn gpu(&self) -> Option<&GpuInfo> {
        None
    }
}

impl BenchEngine for CpuEngine {
    fn fill_random(&mut self, depth: usize, seed: u64) -> Result<()> {
        CpuEngine::fill_random(self, depth, seed)
    }

    fn prefill_method(&self) -> String {
        format!(
            "batched: up to {} tokens per pass through matrix–matrix products, host clock \
             around the prefill",
            self.prefill_batch()
        )
    }
}

impl BenchEngine for EmulatorEngine {
    fn fill_random(&mut self, depth: usize, seed: u64) -> Result<()> {
        EmulatorEngine::fill_random(self, depth, seed)
    }
}

impl BenchEngine for GpuEngine {
    fn fill_random(&mut self, depth: usize, seed: u64) -> Result<()> {
        GpuEngine::fill_random(self, depth, seed)
    }

    fn take_profile(&mut self, into: &mut ProfileSum) -> Result<()> {
        if let Some(json) = self.take_simulated_profile()? {
            into.add(&RawProfile::parse(&json)?, self.plan().dims.layers as usize)?;
        }
        Ok(())
    }

    fn decode_timed(&mut self, first: u32, n: usize) -> Result<Timed> {
        let (last, seconds) = GpuEngine::decode_timed(self, first, n)?;
        Ok(Timed { last, seconds })
    }

    fn timer(&self) -> &'static str {
        if self.info().is_simulated() {
            "simulated: the virtual GPU's timing model between CUDA events (a model of an H100, \
             not a measurement)"
        } else if self.info().is_virtual() {
            "virtual: the virtual GPU's clock between CUDA events (an interpreter's model, not a \
             measurement)"
        } else {
            "CUDA events around back-to-back launches"
        }
    }

    fn gpu(&self) -> Option<&GpuInfo> {
        Some(self.info())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use qwenmk_weights::PackedModel;
    use qwenmk_weights::synthetic::{pack_random, tiny_config};

    use super::*;

    fn tiny_model() -> (tempfile::TempDir, Arc<PackedModel>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.qwenmk");
        pack_random(&tiny_config(true), 3, &path, |_| {}).unwrap();
        let model = PackedModel::open(&path).unwrap();
        (dir, Arc::new(model))
    }

    /// Decoding from a truncated cache equals decoding from a fresh one filled with the same
    /// prefix: what was past the truncation point is never read.
    fn truncation_forgets_only_the_tail(engine: &mut dyn BenchEngine, fresh: &mut dyn BenchEngine) {
        let prefix = [5u32, 17, 42, 99, 7, 250];
        let tail = [1u32, 2, 3, 4, 5, 6, 7];
        for &t in prefix.iter().chain(&tail) {
            engine.step(t).unwrap();
        }
        engine.truncate(prefix.len()).unwrap();
        assert_eq!(engine.position(), prefix.len());
        let again = engine.decode_timed(11, 5).unwrap();
        assert_eq!(engine.position(), prefix.len() + 5);

        for &t in &prefix {
            fresh.step(t).unwrap();
        }
        let expected = fresh.decode_timed(11, 5).unwrap();
        assert_eq!(again.last, expected.last);
        assert!(again.seconds > 0.0 && again.seconds.is_finite());

        // Truncating forward is refused.
        assert!(engine.truncate(engine.position() + 1).is_err());

        // A prompt prefilled over a truncated cache chooses what it chooses over a fresh one.
        let prompt = [9u32, 8, 7, 6, 5];
        engine.truncate(prefix.len()).unwrap();
        let timed = engine.prefill_timed(&prompt).unwrap();
        assert_eq!(engine.position(), prefix.len() + prompt.len());
        assert!(timed.seconds > 0.0 && timed.seconds.is_finite());
        fresh.truncate(prefix.len()).unwrap();
        assert_eq!(timed.last, fresh.prefill(&prompt).unwrap());
    }

    #[test]
    fn the_cpu_engine_truncates() {
        let (_dir, model) = tiny_model();
        let mut a = CpuEngine::new(model.clone(), 64).unwrap();
        let mut b = CpuEngine::new(model, 64).unwrap();
        truncation_forgets_only_the_tail(&mut a, &mut b);
    }

    #[test]
    fn the_emulator_truncates() {
        let (_dir, model) = tiny_model();
        let mut a = EmulatorEngine::new(model.clone(), 64).unwrap();
        let mut b = EmulatorEngine::new(model, 64).unwrap();
        truncation_forgets_only_the_tail(&mut a, &mut b);
    }
}
