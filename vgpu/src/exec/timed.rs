//! The timed scheduler: warps issue in order of their simulated cycle instead of round-robin.
//! Each step takes the warp that can issue earliest, asks the timing model ([`crate::timing`])
//! when its next instruction issues (operands ready, issue slot and pipe free), runs that one
//! instruction functionally at that cycle (so `%globaltimer`, polls and spins see simulated
//! time), and records when its results are ready.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::FailureKind;
use super::grid::Grid;
use super::warp::Fault;
use super::warp::{RunEnd, Target, WarpState};
use crate::isa::{Inst, Op, Reg, Scope, Sem, Space};
use crate::memory::{SHARED_WINDOW, SHARED_WINDOW_BYTES};
use crate::regalloc::operands;
use crate::timing::{self, Access, Kind, Params, Report, cost::Cost, cost::cost};

/// Simulated time after which a launch is reported as making no progress.
const WATCHDOG_CYCLES: u64 = 30 * 1_755_000_000;

/// `QWENMK_VGPU_TIMELINE=BLOCK,WARP`: the one warp whose every issue is logged to stderr
/// (cycle since the launch began, PTX line, cycles until its result is ready, stall after it),
/// to see where a stage's time goes.
fn timeline_warp() -> Option<(u32, u32)> {
    let v = std::env::var("QWENMK_VGPU_TIMELINE").ok()?;
    let (b, w) = v.split_once(',')?;
    Some((b.trim().parse().ok()?, w.trim().parse().ok()?))
}

/// Per-warp timing state.
#[derive(Default, Clone)]
struct Clock {
    /// Earliest cycle of the next issue (in-order issue).
    next: u64,
    /// When the warp's stores are acknowledged (fences wait for it).
    acked: u64,
    /// When each register's value can be read.
    ready: Vec<u64>,
}

/// What each instruction reads and writes, and costs: computed once per launch.
struct Decoded {
    uses: Vec<Vec<Reg>>,
    defs: Vec<Vec<Reg>>,
    costs: Vec<Cost>,
}

impl Grid<'_> {
    /// Runs the launch on the timing model. Returns the result and the model's report.
    pub(super) fn run_timed(
        &mut self,
        start_ns: u64,
    ) -> (Result<(), (FailureKind, String)>, Report) {
        let machine = self.machine.take().expect("a timed launch has a machine");
        let params = machine.params;
        let start = params.ns_to_cycles(start_ns);
        let shared_per_sm = {
            let blocks_per_sm =
                (self.ctx.slots.len() as u64).div_ceil(self.ctx.cfg.sms.max(1) as u64);
            self.ctx.slots.first().map_or(0, |s| s.shared.len() as u64) * blocks_per_sm
        };
        machine.begin_launch(start, shared_per_sm);
        let kernel = self.ctx.kernel;
        let decoded = {
            let (mut uses, mut defs) = (Vec::new(), Vec::new());
            for inst in &kernel.insts {
                let (u, d) = operands(inst);
                uses.push(u);
                defs.push(d);
            }
            Decoded {
                uses,
                defs,
                costs: kernel.insts.iter().map(|i| cost(&i.op, &params)).collect(),
            }
        };
        let mut clocks = vec![Clock::default(); self.warps.len()];
        let mut heap: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
        let mut marks = Vec::new();
        let mut last = start;
        let result = self.timed_loop(
            machine,
            &decoded,
            &mut clocks,
            &mut heap,
            &mut marks,
            &mut last,
            start,
        );
        let report = Report {
            model: timing::MODEL_VERSION,
            cycles: last - start,
            counters: machine.counters.clone(),
            marks: marks.into_iter().map(|(b, t)| (b, t - start)).collect(),
        };
        if let Some(path) = std::env::var_os("QWENMK_VGPU_MARKS") {
            // A debugging aid beside the timeline: every mark, one `block cycle` a line.
            let text: String = report
                .marks
                .iter()
                .map(|(b, t)| format!("{b} {t}\n"))
                .collect();
            let _ = std::fs::write(path, text);
        }
        self.ctx.now = params.cycles_to_ns(last).ceil() as u64;
        self.machine = Some(machine);
        (result, report)
    }

    /// Starts the blocks that fit and queues their warps at `t`.
    fn start_blocks(
        &mut self,
        t: u64,
        clocks: &mut [Clock],
        heap: &mut BinaryHeap<Reverse<(u64, usize)>>,
    ) {
        let wpb = self.warps_per_block as usize;
        for slot in self.fill_slots() {
            let first = slot * wpb;
            for (w, clock) in clocks.iter_mut().enumerate().skip(first).take(wpb) {
                *clock = Clock {
                    next: t,
                    acked: t,
                    ready: vec![0; self.ctx.kernel.regs as usize],
                };
                heap.push(Reverse((t, w)));
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn timed_loop(
        &mut self,
        machine: &mut timing::Machine,
        d: &Decoded,
        clocks: &mut [Clock],
        heap: &mut BinaryHeap<Reverse<(u64, usize)>>,
        marks: &mut Vec<(u32, u64)>,
        last: &mut u64,
        start: u64,
    ) -> Result<(), (FailureKind, String)> {
        let params = machine.params;
        let wpb = self.warps_per_block as usize;
        let sms = machine.sms().max(1);
        self.start_blocks(start, clocks, heap);
        let mut addrs: Vec<u64> = Vec::with_capacity(32);
        let timeline = timeline_warp();
        while let Some(Reverse((t, w))) = heap.pop() {
            if self.warps[w].state != WarpState::Ready
                && !matches!(self.warps[w].state, WarpState::Sleeping(_))
            {
                continue;
            }
            if t > start + WATCHDOG_CYCLES {
                return Err((FailureKind::Deadlock, self.livelock_report()));
            }
            let Some(&top) = self.warps[w].stack.last() else {
                continue;
            };
            let pc = top.pc as usize;
            let inst: &Inst = &self.ctx.kernel.insts[pc];
            let c = d.costs[pc];
            let slot = self.warps[w].slot as usize;
            let sm = self.ctx.slots[slot].sm as usize % sms;
            let block = (w % wpb) % params.schedulers as usize;
            let clock = &clocks[w];
            let operands_ready = d.uses[pc]
                .iter()
                .map(|&r| clock.ready[r as usize])
                .max()
                .unwrap_or(0);
            let ready = t.max(clock.next).max(operands_ready);
            let issue = machine.issue_time(sm, block, &c, ready);
            if issue > t {
                heap.push(Reverse((issue, w)));
                continue;
            }
            machine.issue(sm, block, &c, issue);
            *last = (*last).max(issue);
            // The memory side, from the registers as they are before the instruction runs.
            let active = top.mask & self.warps[w].guard(inst.guard);
            let mut result_ready = issue + c.latency as u64;
            let mut extra = 0u64;
            let mut wait_until: Option<u64> = None;
            if active != 0 {
                match &inst.op {
                    Op::Ld {
                        space,
                        sem,
                        nc,
                        ty,
                        d: dst,
                        addr,
                        ..
                    } => {
                        let bytes = ty.bytes() * dst.len() as u32;
                        let kind = Kind::Load {
                            l1: !nc && !sem.is_strong(),
                            acquire: sem.acquires(),
                        };
                        if let Some(sp) = self.collect(w, *space, addr, active, &mut addrs) {
                            let done = machine.access(
                                sm,
                                issue,
                                &Access {
                                    kind,
                                    space: sp,
                                    addrs: &addrs,
                                    bytes,
                                },
                            );
                            result_ready = done.complete;
                        }
                    }
                    Op::St {
                        space,
                        sem,
                        scope,
                        ty,
                        src,
                        addr,
                        ..
                    } => {
                        let bytes = ty.bytes() * src.len() as u32;
                        if let Some(sp) = self.collect(w, *space, addr, active, &mut addrs) {
                            let at = release_point(*sem, *scope, issue, clocks[w].acked, &params);
                            extra = at - issue;
                            let done = machine.access(
                                sm,
                                at,
                                &Access {
                                    kind: Kind::Store,
                                    space: sp,
                                    addrs: &addrs,
                                    bytes,
                                },
                            );
                            clocks[w].acked = clocks[w].acked.max(done.acked);
                        }
                    }
                    Op::Atom {
                        space,
                        sem,
                        scope,
                        ty,
                        addr,
                        d: result,
                        ..
                    } => {
                        if let Some(sp) = self.collect(w, *space, addr, active, &mut addrs) {
                            let at = release_point(*sem, *scope, issue, clocks[w].acked, &params);
                            extra = at - issue;
                            let done = machine.access(
                                sm,
                                at,
                                &Access {
                                    kind: Kind::Atomic,
                                    space: sp,
                                    addrs: &addrs,
                                    bytes: ty.bytes(),
                                },
                            );
                            if sem.acquires() {
                                machine.invalidate_l1(sm);
                            }
                            result_ready = done.complete;
                            clocks[w].acked = clocks[w].acked.max(done.acked);
                            if result.is_none() {
                                // A reduction (`red`): the kernel's stage marks.
                                let block_id = self.ctx.slots[slot].block.unwrap_or(0);
                                marks.push((block_id, at));
                            }
                        }
                    }
                    Op::Prefetch { space, addr } => {
                        if let Some(sp) = self.collect(w, *space, addr, active, &mut addrs) {
                            machine.access(
                                sm,
                                issue,
                                &Access {
                                    kind: Kind::Prefetch,
                                    space: sp,
                                    addrs: &addrs,
                                    bytes: 1,
                                },
                            );
                        }
                    }
                    Op::BulkCopy { src, size, .. } => {
                        let lane = active.trailing_zeros() as usize;
                        let warp = &self.warps[w];
                        let from = super::warp::Ctx::lane_address(warp, src, lane);
                        let bytes = self.ctx_value(w, *size, lane);
                        let landed = machine.bulk_read(sm, issue, from, bytes);
                        self.ctx.copy_ready_ns = Some(params.cycles_to_ns(landed).ceil() as u64);
                    }
                    Op::AsyncCopy { src, bytes, .. } => {
                        if let Some(sp) = self.collect(w, Space::Global, src, active, &mut addrs) {
                            let done = machine.access(
                                sm,
                                issue,
                                &Access {
                                    kind: Kind::Load {
                                        l1: false,
                                        acquire: false,
                                    },
                                    space: sp,
                                    addrs: &addrs,
                                    bytes: *bytes,
                                },
                            );
                            self.ctx.copy_ready_ns =
                                Some(params.cycles_to_ns(done.complete).ceil() as u64);
                        }
                    }
                    Op::MbarInit { .. } | Op::MbarArrive { .. } => {
                        result_ready = issue + params.shared_latency as u64;
                    }
                    Op::MbarWait { addr, try_wait, .. } => {
                        result_ready = issue + params.shared_latency as u64;
                        // `try_wait` suspends the thread until the phase completes, within a
                        // time limit: when the copies that complete it are all in flight, the
                        // answer is yes, at the time the last lands.
                        let lane = active.trailing_zeros() as usize;
                        let warp = &self.warps[w];
                        let at = super::warp::Ctx::lane_address(warp, addr, lane) as usize;
                        if *try_wait
                            && let Some(ready_ns) = self.ctx.slots[slot].copies.phase_ready_ns(at)
                        {
                            let ready = params.ns_to_cycles(ready_ns);
                            if ready <= issue + params.try_wait_limit_cycles as u64 {
                                result_ready = result_ready.max(ready);
                                wait_until = Some(ready_ns);
                            }
                        }
                    }
                    Op::AsyncWait { n } => {
                        let copies = &self.ctx.slots[slot].copies;
                        let first = self.warps[w].first_thread;
                        let ready_ns = (0..32u32)
                            .filter(|l| active & (1 << l) != 0)
                            .map(|l| copies.groups_ready_ns(first + l, *n))
                            .max()
                            .unwrap_or(0);
                        let ready = params.ns_to_cycles(ready_ns);
                        extra = ready.saturating_sub(issue);
                    }
                    Op::Fence { sem, .. } if *sem != Sem::Weak => {
                        // The warp's stores are acknowledged, then the fence itself.
                        extra = clocks[w].acked.max(issue) - issue + params.fence_cycles as u64;
                    }
                    _ => {}
                }
            }
            // Run the instruction at its cycle (a `try_wait` that the copies it waits for
            // answer, when they land).
            self.ctx.now = (params.cycles_to_ns(issue) as u64).max(wait_until.unwrap_or(0));
            self.ctx.cycle = Some(issue);
            let (end, issued) = self.ctx.run_warp(&mut self.warps[w], 1);
            self.ctx.copy_ready_ns = None;
            self.ctx.stats.warp_instructions += issued as u64;
            let end = end.map_err(|f: Fault| self.fault_report(w, f))?;
            let clock = &mut clocks[w];
            for &r in &d.defs[pc] {
                clock.ready[r as usize] = result_ready;
            }
            let branch = if matches!(inst.op, Op::Bra { .. }) {
                params.branch_cycles as u64
            } else {
                0
            };
            clock.next = issue + c.sass as u64 + branch + extra;
            if let Some((tb, tw)) = timeline
                && self.ctx.slots[slot].block == Some(tb)
                && w % wpb == tw as usize
            {
                eprintln!(
                    "timeline {} line {} ready +{} stall +{}",
                    issue - start,
                    inst.line,
                    result_ready - issue,
                    extra
                );
            }
            match end {
                RunEnd::Quantum => heap.push(Reverse((clock.next, w))),
                RunEnd::Sleep(until_ns) => {
                    self.warps[w].state = WarpState::Sleeping(until_ns);
                    let wake = params.ns_to_cycles(until_ns).max(clock.next);
                    heap.push(Reverse((wake, w)));
                    // A sleeping warp runs again at its wake-up: mark it ready for the heap.
                    self.warps[w].state = WarpState::Ready;
                }
                RunEnd::Barrier(id) => {
                    self.warps[w].state = WarpState::Barrier(id);
                    self.ctx.slots[slot].arrived[id as usize] += 1;
                    let released = self.try_release(slot);
                    let at = issue
                        + params.bar_base as u64
                        + params.bar_per_warp as u64 * self.warps_per_block as u64;
                    for r in released {
                        clocks[r].next = clocks[r].next.max(at);
                        heap.push(Reverse((clocks[r].next, r)));
                    }
                }
                RunEnd::Exited => {
                    self.warps[w].state = WarpState::Done;
                    let s = &mut self.ctx.slots[slot];
                    s.live_warps -= 1;
                    if s.live_warps == 0 {
                        self.copies_landed(slot)?;
                        let s = &mut self.ctx.slots[slot];
                        s.block = None;
                        self.finished_blocks += 1;
                        self.start_blocks(clock.next, clocks, heap);
                    } else {
                        let released = self.try_release(slot);
                        for r in released {
                            heap.push(Reverse((clocks[r].next.max(issue), r)));
                        }
                    }
                }
            }
        }
        if self.finished_blocks == self.total_blocks {
            Ok(())
        } else {
            Err((FailureKind::Deadlock, self.deadlock_report()))
        }
    }

    /// The value of `s` in lane `lane` of warp `w`, before the instruction runs.
    fn ctx_value(&self, w: usize, s: crate::isa::Src, lane: usize) -> u64 {
        match s {
            crate::isa::Src::Reg(r) => self.warps[w].regs[r as usize][lane],
            crate::isa::Src::Imm(v) => v,
            _ => 0,
        }
    }

    /// The active lanes' addresses of a memory operand, and where they go; `None` when an
    /// address does not resolve (the functional run reports the fault).
    fn collect(
        &self,
        w: usize,
        space: Space,
        addr: &crate::isa::Addr,
        active: u32,
        out: &mut Vec<u64>,
    ) -> Option<timing::Space> {
        out.clear();
        let warp = &self.warps[w];
        let mut kind = None;
        let mut m = active;
        while m != 0 {
            let lane = m.trailing_zeros() as usize;
            m &= m - 1;
            let a = super::warp::Ctx::lane_address(warp, addr, lane);
            let (k, at) = match space {
                Space::Param => (timing::Space::Param, a),
                Space::Shared => (timing::Space::Shared, a),
                Space::Generic
                    if (SHARED_WINDOW..SHARED_WINDOW + SHARED_WINDOW_BYTES).contains(&a) =>
                {
                    (timing::Space::Shared, a - SHARED_WINDOW)
                }
                _ => match self.ctx.resolve(space, a, lane).ok()? {
                    Target::Global(g) => (timing::Space::Global, g),
                    Target::Shared(o) => (timing::Space::Shared, o as u64),
                    Target::Param(o) => (timing::Space::Param, o as u64),
                },
            };
            kind = Some(k);
            out.push(at);
        }
        kind
    }
}

/// When a store or atomic with release semantics reaches memory: on the GPU it is a `MEMBAR`
/// in front of the access (the SASS of `atom.release`, `atom.acq_rel` and `st.release`), so
/// it waits, like a fence, for the warp's stores to be acknowledged and then for the fence
/// itself (a CTA-scope release is ordered inside the SM and costs nothing extra here). Other
/// accesses go at their issue cycle.
fn release_point(sem: Sem, scope: Scope, issue: u64, acked: u64, params: &Params) -> u64 {
    if sem.releases() && scope != Scope::Cta {
        acked.max(issue) + params.fence_cycles as u64
    } else {
        issue
    }
}
