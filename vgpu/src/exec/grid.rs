//! The grid scheduler: resident blocks, warps in a fixed round-robin order, block barriers,
//! virtual time, and the deadlock and livelock reports.

use std::collections::BTreeMap;

use super::copies::Copies;
use super::warp::{Ctx, Fault, RunEnd, Warp, WarpState};
use super::weak::Weak;
use super::{CLOCK_GHZ, Failure, FailureKind, ISSUE_PER_CYCLE, LaunchConfig, Options, Outcome};
use crate::decode::Kernel;
use crate::memory::GlobalMemory;
use crate::timing::Machine;

/// Instructions a warp runs before the next warp's turn.
const QUANTUM: u32 = 1024;
/// Rounds in which nothing is written and nothing exits before the clock is fast-forwarded.
const QUIET_ROUNDS: u32 = 8;
/// The largest single fast-forward step.
const MAX_JUMP_NS: u64 = 50_000_000;
/// Virtual time without progress after which the launch is reported as a livelock.
const LIVELOCK_NS: u64 = 120_000_000_000;

/// One resident block.
pub struct Slot {
    /// The linear index of the block running here, if any.
    pub block: Option<u32>,
    pub ctaid: [u32; 3],
    pub shared: Vec<u8>,
    /// Warps arrived at each of the 16 named barriers.
    pub arrived: [u32; 16],
    pub live_warps: u32,
    pub sm: u32,
    /// Asynchronous copies in flight into `shared`, and the block's mbarriers.
    pub copies: Copies,
}

pub struct Grid<'a> {
    pub(super) ctx: Ctx<'a>,
    pub(super) warps: Vec<Warp>,
    pub(super) warps_per_block: u32,
    pub(super) total_blocks: u64,
    pub(super) next_block: u64,
    pub(super) finished_blocks: u64,
    quiet_rounds: u32,
    quiet_since: Option<u64>,
    issued: Vec<u64>,
    /// The timing model, when the launch is timed.
    pub(super) machine: Option<&'a mut Machine>,
}

impl<'a> Grid<'a> {
    pub fn new(
        mem: &'a mut GlobalMemory,
        kernel: &'a Kernel,
        lines: &'a [String],
        cfg: &LaunchConfig,
        params: &'a [u8],
        options: &Options,
        machine: Option<&'a mut Machine>,
    ) -> Result<Grid<'a>, Failure> {
        let invalid = |report: String| Failure {
            kind: FailureKind::InvalidLaunch,
            report,
            end_ns: options.start_ns,
            stats: Default::default(),
        };
        let threads = cfg.threads_per_block();
        if threads == 0 || threads > 1024 || cfg.blocks() == 0 {
            return Err(invalid(format!(
                "a launch of {:?} blocks of {:?} threads is invalid",
                cfg.grid, cfg.block
            )));
        }
        if params.len() != kernel.param_bytes as usize {
            return Err(invalid(format!(
                "`{}` takes {} bytes of parameters, {} were given",
                kernel.name,
                kernel.param_bytes,
                params.len()
            )));
        }
        let warps_per_block = threads.div_ceil(32);
        let slots = cfg.resident_blocks.max(1).min(cfg.blocks() as u32);
        let shared_bytes =
            kernel.dynamic_shared_offset as usize + cfg.dynamic_shared_bytes as usize;
        mem.begin_launch();
        mem.track_all_stores();
        let ctx = Ctx {
            kernel,
            lines,
            cfg: *cfg,
            params,
            mem,
            slots: (0..slots)
                .map(|s| Slot {
                    block: None,
                    ctaid: [0; 3],
                    shared: vec![0; shared_bytes],
                    arrived: [0; 16],
                    live_warps: 0,
                    sm: s % cfg.sms.max(1),
                    copies: Copies::default(),
                })
                .collect(),
            weak: options.weak.map(|w| Weak::new(w, slots as usize)),
            now: options.start_ns,
            cycle: None,
            copy_ready_ns: None,
            stats: Default::default(),
            progress: false,
        };
        Ok(Grid {
            ctx,
            warps: (0..slots * warps_per_block)
                .map(|_| Warp::default())
                .collect(),
            warps_per_block,
            total_blocks: cfg.blocks(),
            next_block: 0,
            finished_blocks: 0,
            quiet_rounds: 0,
            quiet_since: None,
            issued: vec![0; cfg.sms.max(1) as usize],
            machine,
        })
    }

    /// Starts blocks in empty slots, lowest block index first; returns the slots started.
    pub(super) fn fill_slots(&mut self) -> Vec<usize> {
        let mut started = Vec::new();
        let cfg = self.ctx.cfg;
        let threads = cfg.threads_per_block();
        for s in 0..self.ctx.slots.len() {
            if self.ctx.slots[s].block.is_some() || self.next_block >= self.total_blocks {
                continue;
            }
            let b = self.next_block;
            self.next_block += 1;
            let slot = &mut self.ctx.slots[s];
            slot.block = Some(b as u32);
            let (gx, gy) = (cfg.grid[0] as u64, cfg.grid[1] as u64);
            slot.ctaid = [
                (b % gx) as u32,
                ((b / gx) % gy) as u32,
                (b / (gx * gy)) as u32,
            ];
            slot.shared.fill(0);
            slot.copies.reset(threads);
            slot.arrived = [0; 16];
            slot.live_warps = self.warps_per_block;
            for w in 0..self.warps_per_block {
                let first = w * 32;
                let lanes = (threads - first).min(32);
                let present = if lanes == 32 {
                    u32::MAX
                } else {
                    (1u32 << lanes) - 1
                };
                let warp = &mut self.warps[s * self.warps_per_block as usize + w as usize];
                warp.reset(self.ctx.kernel.regs as usize, present, first, s as u32);
            }
            self.ctx.progress = true;
            started.push(s);
        }
        started
    }

    pub fn run(mut self) -> Result<Outcome, Failure> {
        let start_ns = self.ctx.now;
        let (result, timing) = if self.machine.is_some() {
            let (r, report) = self.run_timed(start_ns);
            (r, Some(report))
        } else {
            (self.run_rounds(), None)
        };
        if let Some(w) = self.ctx.weak.as_mut() {
            // The end of a launch makes every write visible.
            w.flush_all(self.ctx.mem);
        }
        let stats = std::mem::take(&mut self.ctx.stats);
        match result {
            Ok(()) => Ok(Outcome {
                end_ns: self.ctx.now,
                stats,
                timing,
            }),
            Err((kind, report)) => Err(Failure {
                kind,
                report,
                end_ns: self.ctx.now,
                stats,
            }),
        }
    }

    fn run_rounds(&mut self) -> Result<(), (FailureKind, String)> {
        loop {
            self.fill_slots();
            if self.finished_blocks == self.total_blocks {
                return Ok(());
            }
            self.issued.fill(0);
            self.ctx.progress = false;
            let mut next_wake: Option<u64> = None;
            let mut any_ready = false;
            for w in 0..self.warps.len() {
                let state = self.warps[w].state;
                match state {
                    WarpState::Sleeping(t) if t > self.ctx.now => {
                        next_wake = Some(next_wake.map_or(t, |n: u64| n.min(t)));
                        continue;
                    }
                    WarpState::Sleeping(_) | WarpState::Ready => {}
                    _ => continue,
                }
                self.warps[w].state = WarpState::Ready;
                let slot = self.warps[w].slot as usize;
                let (end, issued) = self.ctx.run_warp(&mut self.warps[w], QUANTUM);
                self.ctx.stats.warp_instructions += issued as u64;
                self.issued[self.ctx.slots[slot].sm as usize] += issued as u64;
                match end.map_err(|f| self.fault_report(w, f))? {
                    RunEnd::Quantum => {
                        any_ready = true;
                        self.ctx.progress = true;
                    }
                    RunEnd::Sleep(t) => {
                        self.warps[w].state = WarpState::Sleeping(t);
                        next_wake = Some(next_wake.map_or(t, |n| n.min(t)));
                    }
                    RunEnd::Barrier(id) => {
                        self.warps[w].state = WarpState::Barrier(id);
                        self.ctx.slots[slot].arrived[id as usize] += 1;
                        self.try_release(slot);
                        if self.warps[w].state == WarpState::Ready {
                            any_ready = true;
                        }
                    }
                    RunEnd::Exited => {
                        self.warps[w].state = WarpState::Done;
                        self.ctx.progress = true;
                        let s = &mut self.ctx.slots[slot];
                        s.live_warps -= 1;
                        if s.live_warps == 0 {
                            self.copies_landed(slot)?;
                            self.ctx.slots[slot].block = None;
                            self.finished_blocks += 1;
                        } else {
                            self.try_release(slot);
                        }
                    }
                }
            }
            // Any warp released from a barrier this round runs next round.
            any_ready |= self.warps.iter().any(|w| w.state == WarpState::Ready);
            let busiest = self.issued.iter().copied().max().unwrap_or(0);
            self.ctx.now += cycles_to_ns(busiest.div_ceil(ISSUE_PER_CYCLE));
            if self.ctx.progress {
                self.quiet_rounds = 0;
                self.quiet_since = None;
            } else {
                self.quiet_rounds += 1;
                self.quiet_since.get_or_insert(self.ctx.now);
            }
            let all_done = self.finished_blocks == self.total_blocks;
            if any_ready || all_done || self.next_block < self.total_blocks && self.free_slot() {
                continue;
            }
            let Some(wake) = next_wake else {
                return Err((FailureKind::Deadlock, self.deadlock_report()));
            };
            let mut target = wake.max(self.ctx.now);
            if self.quiet_rounds >= QUIET_ROUNDS {
                // Nothing has been written for a while: every warp is polling. Reads cannot
                // tell a later clock from an earlier one, so jump ahead.
                let shift = (self.quiet_rounds - QUIET_ROUNDS).min(40);
                let jump = (1_000u64 << shift).min(MAX_JUMP_NS);
                target += jump;
                self.ctx.stats.fast_forward_ns += jump;
            }
            self.ctx.now = target;
            if let Some(since) = self.quiet_since
                && self.ctx.now - since > LIVELOCK_NS
            {
                return Err((FailureKind::Deadlock, self.livelock_report()));
            }
        }
    }

    fn free_slot(&self) -> bool {
        self.ctx.slots.iter().any(|s| s.block.is_none())
    }

    /// Releases barrier waits of `slot` that every live warp has reached; returns the warps
    /// released.
    pub(super) fn try_release(&mut self, slot: usize) -> Vec<usize> {
        let wpb = self.warps_per_block as usize;
        let mut released = Vec::new();
        for id in 0..16u8 {
            let s = &mut self.ctx.slots[slot];
            if s.arrived[id as usize] == 0 || s.arrived[id as usize] < s.live_warps {
                continue;
            }
            s.arrived[id as usize] = 0;
            self.ctx.stats.block_barriers += 1;
            self.ctx.progress = true;
            for (i, w) in self.warps[slot * wpb..(slot + 1) * wpb]
                .iter_mut()
                .enumerate()
            {
                if w.state == WarpState::Barrier(id) {
                    w.state = WarpState::Ready;
                    released.push(slot * wpb + i);
                }
            }
        }
        released
    }

    /// `block B thread T` of warp `w`'s lane `lane`.
    fn where_is(&self, w: usize, lane: u32) -> String {
        let warp = &self.warps[w];
        let slot = &self.ctx.slots[warp.slot as usize];
        format!(
            "block {} thread {}",
            slot.block.unwrap_or(0),
            warp.first_thread + lane
        )
    }

    fn line_text(&self, line: u32) -> String {
        let text = self
            .ctx
            .lines
            .get(line.saturating_sub(1) as usize)
            .map(|l| l.trim())
            .unwrap_or("");
        format!("PTX line {line} `{text}`")
    }

    /// A block that exits with asynchronous copies in flight leaves them writing shared
    /// memory that the next block gets: the launch fails.
    pub(super) fn copies_landed(&self, slot: usize) -> Result<(), (FailureKind, String)> {
        let s = &self.ctx.slots[slot];
        let n = s.copies.in_flight();
        if n == 0 {
            return Ok(());
        }
        Err((
            FailureKind::LaunchFailed,
            format!(
                "block {} of `{}` exited with {n} asynchronous copies into its shared memory \
                 still in flight (wait for every copy it issued before it exits)",
                s.block.unwrap_or(0),
                self.ctx.kernel.name
            ),
        ))
    }

    pub(super) fn fault_report(&self, w: usize, f: Fault) -> (FailureKind, String) {
        let at = self.line_text(f.line);
        (
            f.kind,
            format!(
                "{} at {at} in {} of `{}`: {}",
                f.title,
                self.where_is(w, f.lane),
                self.ctx.kernel.name,
                f.detail
            ),
        )
    }

    /// Each non-finished warp's state and PTX line, warps with the same story grouped.
    fn warp_states(&self) -> String {
        let mut groups: BTreeMap<String, Vec<(u32, u32)>> = BTreeMap::new();
        for (i, w) in self.warps.iter().enumerate() {
            let slot = &self.ctx.slots[w.slot as usize];
            let Some(block) = slot.block else { continue };
            if matches!(w.state, WarpState::Done | WarpState::Empty) {
                continue;
            }
            // A warp at a barrier or asleep has moved past that instruction: name it.
            let (what, back) = match w.state {
                WarpState::Barrier(id) => (format!("waits at bar.sync {id}"), 1),
                WarpState::Sleeping(_) => ("sleeps in a polling loop".to_string(), 1),
                _ => ("is ready".to_string(), 0),
            };
            let pcs: Vec<String> = w
                .stack
                .iter()
                .rev()
                .filter(|e| e.mask != 0)
                .map(|e| {
                    let pc = e.pc.saturating_sub(back) as usize;
                    let line = self.ctx.kernel.insts[pc].line;
                    format!("{} ({} lanes)", self.line_text(line), e.mask.count_ones())
                })
                .collect();
            let key = format!("{what} at {}", pcs.join(" and "));
            groups
                .entry(key)
                .or_default()
                .push((block, i as u32 % self.warps_per_block));
        }
        let mut out = String::new();
        for (story, warps) in groups {
            let blocks: Vec<u32> = warps.iter().map(|w| w.0).collect();
            let shown = ranges(&blocks);
            out.push_str(&format!(
                "\n  {} warp(s) in block(s) {shown}: {story}",
                warps.len()
            ));
        }
        let waiting = self.total_blocks - self.next_block;
        if waiting > 0 {
            out.push_str(&format!(
                "\n  {waiting} block(s) are not resident: they wait for a running block to exit"
            ));
        }
        out
    }

    pub(super) fn deadlock_report(&self) -> String {
        format!(
            "deadlock in `{}`: no warp can make progress (virtual time {:.3} ms){}",
            self.ctx.kernel.name,
            self.ctx.now as f64 / 1e6,
            self.warp_states()
        )
    }

    pub(super) fn livelock_report(&self) -> String {
        format!(
            "no progress in `{}` for {} s of virtual time: every warp polls and nothing changes \
             (virtual time {:.3} s){}",
            self.ctx.kernel.name,
            LIVELOCK_NS / 1_000_000_000,
            self.ctx.now as f64 / 1e9,
            self.warp_states()
        )
    }
}

fn cycles_to_ns(cycles: u64) -> u64 {
    (cycles as f64 / CLOCK_GHZ).ceil() as u64
}

/// `0-3, 7, 9-12`.
fn ranges(values: &[u32]) -> String {
    let mut v = values.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            v[i].to_string()
        } else {
            format!("{}-{}", v[i], v[j])
        });
        i = j + 1;
    }
    out.join(", ")
}
