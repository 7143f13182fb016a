//! Where a decode step's time goes on the virtual GPU's timing model
//! (`QWENMK_VGPU_TIMING=h100`, see docs/VGPU.md). The driver reports, per launch, the simulated
//! cycles, the memory traffic and every stage mark (block, cycle): a profiled step's blocks
//! each count the end of each of their stages (`StepParams::profile`), so the time between the
//! last blocks' marks of two consecutive stages is what the stage cost the whole grid.
//! Everything here is **simulated**: a model's figure, never a measurement.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// The kernel's stages in order; `combine` runs only when attention is split.
pub const STAGES: [&str; 8] = [
    "QKV",
    "attention",
    "combine",
    "O projection",
    "gate/up",
    "down",
    "LM head",
    "end of step",
];
const QKV: usize = 0;
const COMBINE: usize = 2;
const LM_HEAD: usize = 6;
const END: usize = 7;

/// The driver's profile (see `qwenmkVgpuTakeProfile` in vgpu-driver); fields it has and this
/// does not read are ignored.
#[derive(Debug, Deserialize)]
pub struct RawProfile {
    pub model: String,
    pub clock_ghz: f64,
    /// Cycles per bin of [`RawLaunch::hbm_bins`] (0: a driver without them).
    #[serde(default)]
    pub hbm_bin_cycles: u64,
    pub launches: Vec<RawLaunch>,
}

#[derive(Debug, Deserialize)]
pub struct RawLaunch {
    pub cycles: u64,
    pub hbm_bytes: u64,
    pub hbm_busy_cycles: f64,
    pub l2_hit_bytes: u64,
    pub l2_far_hit_bytes: u64,
    /// (block, cycles since the launch began) of every reduction (`red`): the blocks' stage
    /// marks, the kernel's only reductions.
    pub marks: Vec<(u32, u64)>,
    /// HBM busy cycles in each bin of `hbm_bin_cycles` from the launch's start.
    #[serde(default)]
    pub hbm_bins: Vec<f64>,
}

/// HBM busy cycles between cycles `from` and `to` of a launch, from its `bins` of `width`
/// cycles (a bin's busy time taken as spread evenly over it).
fn busy_between(bins: &[f64], width: u64, from: u64, to: u64) -> f64 {
    if width == 0 || to <= from {
        return 0.0;
    }
    let (first, last) = (from / width, (to - 1) / width);
    (first..=last)
        .filter_map(|i| {
            let busy = *bins.get(i as usize)?;
            let (lo, hi) = ((i * width).max(from), ((i + 1) * width).min(to));
            Some(busy * (hi - lo) as f64 / width as f64)
        })
        .sum()
}

impl RawProfile {
    pub fn parse(json: &str) -> Result<RawProfile> {
        serde_json::from_str(json).context("the virtual GPU's profile is not the expected JSON")
    }
}

/// The sum of the timed steps' profiles at one depth.
#[derive(Debug, Default)]
pub struct ProfileSum {
    model: Option<String>,
    clock_ghz: f64,
    steps: usize,
    cycles: f64,
    /// Per stage of [`STAGES`]: cycles from the previous barrier's last arrival to this one's,
    /// and from this barrier's mean arrival to its last.
    span: [f64; STAGES.len()],
    imbalance: [f64; STAGES.len()],
    /// Per stage: HBM busy cycles during its spans.
    hbm_busy: [f64; STAGES.len()],
    /// Whether a profile came from a driver without HBM bins (their width 0): the stages'
    /// busy shares are then unknown.
    unbinned: bool,
    /// Per layer: cycles from the previous layer's last barrier to its own last.
    layer_span: Vec<f64>,
    hbm_bytes: f64,
    hbm_busy_cycles: f64,
    l2_hit_bytes: f64,
    l2_far_hit_bytes: f64,
}

impl ProfileSum {
    /// Adds the launches of `profile`, each a decode step of a `layers`-layer model.
    pub fn add(&mut self, profile: &RawProfile, layers: usize) -> Result<()> {
        self.model.get_or_insert_with(|| profile.model.clone());
        self.clock_ghz = profile.clock_ghz;
        // A launch with no bins at all never missed in L2 (a tiny model's weights stay there
        // from step to step): busy 0, not unknown.
        self.unbinned |= profile.hbm_bin_cycles == 0;
        for launch in &profile.launches {
            let busy = |from, to| busy_between(&launch.hbm_bins, profile.hbm_bin_cycles, from, to);
            let barriers = barrier_times(&launch.marks)?;
            let stages = stage_of_barriers(barriers.len(), layers)?;
            let per_layer = (barriers.len() - 1) / layers;
            self.layer_span.resize(layers, 0.0);
            let mut previous = 0u64;
            for (k, (b, &stage)) in barriers.iter().zip(&stages).enumerate() {
                let span = b.last.saturating_sub(previous) as f64;
                self.span[stage] += span;
                if let Some(layer) = self.layer_span.get_mut(k / per_layer) {
                    *layer += span;
                }
                self.imbalance[stage] += b.last as f64 - b.mean;
                self.hbm_busy[stage] += busy(previous, b.last);
                previous = b.last;
            }
            self.span[END] += launch.cycles.saturating_sub(previous) as f64;
            self.hbm_busy[END] += busy(previous, launch.cycles);
            self.steps += 1;
            self.cycles += launch.cycles as f64;
            self.hbm_bytes += launch.hbm_bytes as f64;
            self.hbm_busy_cycles += launch.hbm_busy_cycles;
            self.l2_hit_bytes += launch.l2_hit_bytes as f64;
            self.l2_far_hit_bytes += launch.l2_far_hit_bytes as f64;
        }
        Ok(())
    }

    /// Per-step means; `None` when nothing was profiled.
    pub fn finish(&self) -> Option<SimulatedProfile> {
        let model = self.model.clone()?;
        if self.steps == 0 || self.clock_ghz <= 0.0 {
            return None;
        }
        let per_step = |x: f64| x / self.steps as f64;
        let us = |cycles: f64| per_step(cycles) / (self.clock_ghz * 1e3);
        let stages = STAGES
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != COMBINE || self.span[i] > 0.0)
            .map(|(i, &stage)| StageTime {
                stage,
                us_per_step: us(self.span[i]),
                percent: 100.0 * self.span[i] / self.cycles.max(1.0),
                imbalance_us_per_step: us(self.imbalance[i]),
                // At most 100: a request counts in the bin it begins in, so a stage can
                // be charged a little of the next one's transfer.
                hbm_busy_percent: (!self.unbinned && self.span[i] > 0.0)
                    .then(|| (100.0 * self.hbm_busy[i] / self.span[i]).min(100.0)),
            })
            .collect();
        let us_per_step = us(self.cycles);
        Some(SimulatedProfile {
            model,
            steps: self.steps,
            us_per_step,
            stages,
            barrier_wait_us_per_step: us(self.imbalance.iter().sum()),
            layer_us_per_step: self.layer_span.iter().map(|&c| us(c)).collect(),
            hbm_bytes_per_step: per_step(self.hbm_bytes),
            l2_hit_bytes_per_step: per_step(self.l2_hit_bytes),
            l2_far_hit_bytes_per_step: per_step(self.l2_far_hit_bytes),
            hbm_busy_percent: 100.0 * self.hbm_busy_cycles / self.cycles.max(1.0),
            hbm_gb_per_s: per_step(self.hbm_bytes) / us_per_step / 1e3,
        })
    }
}

/// A depth's timed steps on the timing model, per step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimulatedProfile {
    /// The timing model and its version, e.g. `h100-sxm-v1`.
    pub model: String,
    /// Steps profiled.
    pub steps: usize,
    pub us_per_step: f64,
    /// In kernel order, summed over layers.
    pub stages: Vec<StageTime>,
    /// Summed over the step's grid barriers: how far the last block arrived after the mean
    /// block, i.e. the mean block's wait for the slowest.
    pub barrier_wait_us_per_step: f64,
    /// Each layer's stages together (the final norm and LM head not included).
    pub layer_us_per_step: Vec<f64>,
    /// Bytes read from HBM (the model's DRAM), and loads served by the L2 (near and far
    /// partition), per step.
    pub hbm_bytes_per_step: f64,
    pub l2_hit_bytes_per_step: f64,
    pub l2_far_hit_bytes_per_step: f64,
    /// Share of the step during which the HBM pipe was transferring.
    pub hbm_busy_percent: f64,
    /// HBM bytes per step over the step's time.
    pub hbm_gb_per_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageTime {
    pub stage: &'static str,
    /// From the last block's arrival at the previous grid barrier to the last block's arrival
    /// at this stage's barrier.
    pub us_per_step: f64,
    pub percent: f64,
    /// Of that, how far the last block arrived after the mean block: load imbalance and
    /// stragglers.
    pub imbalance_us_per_step: f64,
    /// Share of the stage's time during which the HBM pipe was transferring (where the
    /// step leaves HBM idle); `None` from a driver that does not report it.
    pub hbm_busy_percent: Option<f64>,
}

/// One grid barrier: when its last block arrived, and the mean arrival.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Barrier {
    last: u64,
    mean: f64,
}

/// Every block's k-th mark ends its k-th stage: each stage's last and mean ends.
fn barrier_times(marks: &[(u32, u64)]) -> Result<Vec<Barrier>> {
    let mut per_block: std::collections::BTreeMap<u32, Vec<u64>> = Default::default();
    for &(block, cycle) in marks {
        per_block.entry(block).or_default().push(cycle);
    }
    let Some(count) = per_block.values().next().map(Vec::len) else {
        return Ok(Vec::new());
    };
    if per_block.values().any(|a| a.len() != count) {
        bail!("the blocks of a profiled launch marked different numbers of stages");
    }
    let blocks = per_block.len() as f64;
    Ok((0..count)
        .map(|k| {
            let at = per_block.values().map(|a| a[k]);
            Barrier {
                last: at.clone().max().unwrap_or(0),
                mean: at.map(|c| c as f64).sum::<f64>() / blocks,
            }
        })
        .collect())
}

/// The stage that ends at each of a step's `barriers`: five per layer (six when attention is
/// split and combined), then the LM head's.
fn stage_of_barriers(barriers: usize, layers: usize) -> Result<Vec<usize>> {
    let per_layer = match barriers.checked_sub(1) {
        Some(n) if layers > 0 && n == 5 * layers => [QKV, 1, 3, 4, 5].as_slice(),
        Some(n) if layers > 0 && n == 6 * layers => [QKV, 1, COMBINE, 3, 4, 5].as_slice(),
        _ => bail!(
            "a profiled step marked {barriers} stages, which fits no stage layout of a \
             {layers}-layer step (5 or 6 per layer, plus the LM head's)"
        ),
    };
    let mut stages: Vec<usize> = (0..layers)
        .flat_map(|_| per_layer.iter().copied())
        .collect();
    stages.push(LM_HEAD);
    Ok(stages)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1-layer step on 2 blocks: QKV, attention, O, gate/up, down, LM head.
    fn launch(cycles: u64, block0: [u64; 6], block1: [u64; 6]) -> RawLaunch {
        let mut marks = Vec::new();
        for k in 0..6 {
            marks.push((0, block0[k]));
            marks.push((1, block1[k]));
        }
        RawLaunch {
            cycles,
            hbm_bytes: 1000,
            hbm_busy_cycles: 500.0,
            l2_hit_bytes: 10,
            l2_far_hit_bytes: 4,
            marks,
            // HBM busy for the first 400 cycles, idle for the rest.
            hbm_bins: vec![100.0, 100.0, 100.0, 100.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        }
    }

    #[test]
    fn stages_are_the_spans_between_last_arrivals() {
        let raw = RawProfile {
            model: "test-v0".into(),
            clock_ghz: 1.0,
            hbm_bin_cycles: 100,
            launches: vec![
                launch(
                    1000,
                    [100, 200, 300, 400, 500, 900],
                    [80, 250, 300, 380, 500, 800],
                ),
                launch(
                    1000,
                    [100, 200, 300, 400, 500, 900],
                    [80, 250, 300, 380, 500, 800],
                ),
            ],
        };
        let mut sum = ProfileSum::default();
        sum.add(&raw, 1).unwrap();
        let p = sum.finish().unwrap();
        assert_eq!(p.steps, 2);
        assert_eq!(p.us_per_step, 1.0);
        let names: Vec<_> = p.stages.iter().map(|s| s.stage).collect();
        // No combine: attention was not split.
        assert_eq!(
            names,
            [
                "QKV",
                "attention",
                "O projection",
                "gate/up",
                "down",
                "LM head",
                "end of step"
            ]
        );
        let us: Vec<f64> = p.stages.iter().map(|s| s.us_per_step * 1e3).collect();
        assert_eq!(us, [100.0, 150.0, 50.0, 100.0, 100.0, 400.0, 100.0]);
        assert_eq!(p.stages[0].imbalance_us_per_step * 1e3, 10.0);
        assert_eq!(p.stages[1].imbalance_us_per_step * 1e3, 25.0);
        // Waits: 10 + 25 + 0 + 10 + 0 + 50 cycles at the six barriers.
        assert!((p.barrier_wait_us_per_step * 1e3 - 95.0).abs() < 1e-9);
        assert_eq!(p.layer_us_per_step.len(), 1);
        assert!((p.layer_us_per_step[0] * 1e3 - 500.0).abs() < 1e-9);
        let total: f64 = p.stages.iter().map(|s| s.percent).sum();
        assert!((total - 100.0).abs() < 1e-9, "{total}");
        assert_eq!(p.hbm_bytes_per_step, 1000.0);
        assert_eq!(p.hbm_busy_percent, 50.0);
        assert_eq!(p.hbm_gb_per_s, 1.0);
        // Busy until cycle 400: QKV (0..100), attention (100..250) and O (250..300) all
        // busy, gate/up (300..400) busy, down (400..500) and the rest idle.
        let busy: Vec<Option<f64>> = p.stages.iter().map(|s| s.hbm_busy_percent).collect();
        assert_eq!(
            busy,
            [
                Some(100.0),
                Some(100.0),
                Some(100.0),
                Some(100.0),
                Some(0.0),
                Some(0.0),
                Some(0.0)
            ]
        );
    }

    #[test]
    fn busy_time_is_shared_out_by_the_overlap_with_each_bin() {
        let bins = [50.0, 100.0, 20.0];
        assert_eq!(busy_between(&bins, 100, 0, 300), 170.0);
        assert_eq!(busy_between(&bins, 100, 50, 150), 25.0 + 50.0);
        assert_eq!(busy_between(&bins, 100, 250, 1000), 10.0);
        assert_eq!(busy_between(&bins, 100, 120, 120), 0.0);
        assert_eq!(busy_between(&bins, 0, 0, 100), 0.0);
    }

    #[test]
    fn a_driver_without_hbm_bins_leaves_the_stages_busy_share_unknown() {
        let mut one = launch(
            1000,
            [100, 200, 300, 400, 500, 900],
            [80, 250, 300, 380, 500, 800],
        );
        one.hbm_bins.clear();
        let raw = RawProfile {
            model: "test-v0".into(),
            clock_ghz: 1.0,
            hbm_bin_cycles: 0,
            launches: vec![one],
        };
        let mut sum = ProfileSum::default();
        sum.add(&raw, 1).unwrap();
        let p = sum.finish().unwrap();
        assert!(p.stages.iter().all(|s| s.hbm_busy_percent.is_none()));
    }

    #[test]
    fn a_split_attention_adds_a_combine_stage_per_layer() {
        assert_eq!(
            stage_of_barriers(13, 2).unwrap(),
            [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5, 6]
        );
        assert_eq!(
            stage_of_barriers(11, 2).unwrap(),
            [0, 1, 3, 4, 5, 0, 1, 3, 4, 5, 6]
        );
        let error = stage_of_barriers(12, 2).unwrap_err().to_string();
        assert!(error.contains("12 stages"), "{error}");
    }

    #[test]
    fn blocks_that_disagree_on_their_barriers_are_an_error() {
        let error = barrier_times(&[(0, 1), (0, 2), (1, 1)])
            .unwrap_err()
            .to_string();
        assert!(error.contains("different numbers"), "{error}");
    }

    #[test]
    fn the_driver_json_parses() {
        let json = r#"{"model":"h100-sxm-v1","clock_ghz":1.755,"hbm_bytes_per_s":3.0e12,
            "sms":4,"launches":[{"cycles":10,"hbm_bytes":64,"hbm_busy_cycles":2.5,
            "l2_hit_bytes":0,"l2_far_hit_bytes":0,"l1_hit_bytes":0,"shared_bytes":0,
            "store_bytes":0,"prefetch_bytes":0,"atomics":1,"issued":9,"marks":[[0,5]]}]}"#;
        let raw = RawProfile::parse(json).unwrap();
        assert_eq!(raw.launches[0].marks, [(0, 5)]);
        assert_eq!(
            raw.hbm_bin_cycles, 0,
            "an older driver's profile has no bins"
        );
        let json = r#"{"model":"h100-sxm-v3","clock_ghz":1.755,"hbm_bytes_per_s":3.0e12,
            "sms":4,"hbm_bin_cycles":1000,"launches":[{"cycles":10,"hbm_bytes":64,
            "hbm_busy_cycles":2.5,"l2_hit_bytes":0,"l2_far_hit_bytes":0,"l1_hit_bytes":0,
            "shared_bytes":0,"store_bytes":0,"prefetch_bytes":0,"atomics":1,"issued":9,
            "marks":[[0,5]],"hbm_bins":[2.5]}]}"#;
        let raw = RawProfile::parse(json).unwrap();
        assert_eq!(raw.hbm_bin_cycles, 1000);
        assert_eq!(raw.launches[0].hbm_bins, [2.5]);
        assert!(RawProfile::parse("{").is_err());
    }
}
