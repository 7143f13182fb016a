//! One warp's execution: lane groups at their program counters, operand reads and writes,
//! and the meaning of every instruction.

use super::grid::Slot;
use super::weak::{LoadKind, Weak};
use super::{CLOCK_GHZ, FailureKind, LaunchConfig, Stats, alu, float};
use crate::decode::Kernel;
use crate::isa::*;
use crate::memory::{GlobalMemory, SHARED_WINDOW, SHARED_WINDOW_BYTES};

const ALL: u32 = u32::MAX;

/// An entry of the warp's reconvergence stack: lanes at `pc` that meet the entry below when
/// they reach `rpc` (the post-dominator of the branch where they split off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub pc: u32,
    pub mask: u32,
    pub rpc: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WarpState {
    /// The slot holds no block.
    #[default]
    Empty,
    Ready,
    /// In `nanosleep` until this virtual time.
    Sleeping(u64),
    /// Waiting at block barrier `id`.
    Barrier(u8),
    Done,
}

/// A warp: registers of 32 lanes and a reconvergence stack. The top entry runs; lanes that
/// diverge at a branch run one path after the other and meet again at the branch's
/// immediate post-dominator, as the hardware's convergence barriers make them (ptxas places
/// them there for structured code).
#[derive(Default)]
pub struct Warp {
    pub regs: Vec<[u64; 32]>,
    pub stack: Vec<Entry>,
    /// Lanes that exist (the last warp of a block may be partial).
    pub present: u32,
    pub exited: u32,
    pub state: WarpState,
    /// Linear thread index of lane 0 within the block.
    pub first_thread: u32,
    pub slot: u32,
}

impl Warp {
    pub fn reset(&mut self, regs: usize, present: u32, first_thread: u32, slot: u32) {
        self.regs.clear();
        self.regs.resize(regs, [0; 32]);
        self.stack.clear();
        self.stack.push(Entry {
            pc: 0,
            mask: present,
            rpc: u32::MAX,
        });
        self.present = present;
        self.exited = 0;
        self.state = WarpState::Ready;
        self.first_thread = first_thread;
        self.slot = slot;
    }

    fn live(&self) -> u32 {
        self.present & !self.exited
    }

    /// Drops entries that reached their reconvergence point or have no lanes left.
    #[inline]
    fn settle(&mut self) {
        while let Some(top) = self.stack.last() {
            if top.pc == top.rpc || top.mask == 0 {
                self.stack.pop();
            } else {
                break;
            }
        }
    }

    /// The running entry's `taken` lanes jump to `target`, the others fall through; if they
    /// split, both paths run before the lanes meet at `join`.
    #[inline]
    fn branch(&mut self, taken: u32, target: u32, join: u32) {
        let top = *self.stack.last().expect("a running warp has a stack");
        let n = self.stack.len() - 1;
        if taken == top.mask {
            self.stack[n].pc = target;
        } else if taken == 0 {
            self.stack[n].pc = top.pc + 1;
        } else {
            self.stack[n].pc = join;
            if top.pc + 1 != join {
                self.stack.push(Entry {
                    pc: top.pc + 1,
                    mask: top.mask & !taken,
                    rpc: join,
                });
            }
            if target != join {
                self.stack.push(Entry {
                    pc: target,
                    mask: taken,
                    rpc: join,
                });
            }
        }
        self.settle();
    }

    #[inline]
    fn guard(&self, g: Guard) -> u32 {
        let lanes = |p: Reg| {
            let r = &self.regs[p as usize];
            let mut m = 0u32;
            for (l, v) in r.iter().enumerate() {
                m |= ((*v != 0) as u32) << l;
            }
            m
        };
        match g {
            Guard::Always => ALL,
            Guard::If(p) => lanes(p),
            Guard::IfNot(p) => !lanes(p),
        }
    }

    #[inline]
    fn write(&mut self, d: Reg, v: &[u64; 32], active: u32) {
        let r = &mut self.regs[d as usize];
        if active == ALL {
            *r = *v;
        } else {
            for l in lanes(active) {
                r[l] = v[l];
            }
        }
    }
}

/// The lanes of a mask, lowest first.
#[inline]
fn lanes(mut m: u32) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if m == 0 {
            return None;
        }
        let l = m.trailing_zeros() as usize;
        m &= m - 1;
        Some(l)
    })
}

/// How a warp stopped running.
pub enum RunEnd {
    /// Used its quantum; still ready.
    Quantum,
    Sleep(u64),
    Barrier(u8),
    Exited,
}

/// A fault of one lane, before the grid adds where it happened.
pub struct Fault {
    pub kind: FailureKind,
    pub title: &'static str,
    pub detail: String,
    pub line: u32,
    pub lane: u32,
}

/// What an instruction does to control flow.
enum Flow {
    Next,
    Branch(u32, u32),
    Sleep(u64),
    Barrier(u8),
    Exit(u32),
}

/// A fault without its line (added by the caller).
struct LaneFault {
    kind: FailureKind,
    title: &'static str,
    detail: String,
    lane: u32,
}

fn illegal(lane: usize, detail: String) -> LaneFault {
    LaneFault {
        kind: FailureKind::IllegalAddress,
        title: "illegal address",
        detail,
        lane: lane as u32,
    }
}

fn undefined(lane: usize, title: &'static str, detail: String) -> LaneFault {
    LaneFault {
        kind: FailureKind::LaunchFailed,
        title,
        detail,
        lane: lane as u32,
    }
}

/// Where an access lands.
enum Target {
    Global(u64),
    Shared(usize),
    Param(usize),
}

/// Everything a warp touches besides its own registers.
pub struct Ctx<'a> {
    pub kernel: &'a Kernel,
    pub lines: &'a [String],
    pub cfg: LaunchConfig,
    pub params: &'a [u8],
    pub mem: &'a mut GlobalMemory,
    pub slots: Vec<Slot>,
    pub weak: Option<Weak>,
    pub now: u64,
    pub stats: Stats,
    /// Something was written, exited or released this round.
    pub progress: bool,
}

impl Ctx<'_> {
    /// Runs up to `quantum` instructions of `w`. Returns how it stopped and how many
    /// instructions it issued.
    pub fn run_warp(&mut self, w: &mut Warp, quantum: u32) -> (Result<RunEnd, Fault>, u32) {
        let kernel = self.kernel;
        let mut issued = 0;
        while issued < quantum {
            let Some(&top) = w.stack.last() else {
                return (Ok(RunEnd::Exited), issued);
            };
            let inst = &kernel.insts[top.pc as usize];
            issued += 1;
            let active = top.mask & w.guard(inst.guard);
            let flow = match self.exec(w, inst, top.mask, active) {
                Ok(f) => f,
                Err(f) => {
                    return (
                        Err(Fault {
                            kind: f.kind,
                            title: f.title,
                            detail: f.detail,
                            line: inst.line,
                            lane: f.lane,
                        }),
                        issued,
                    );
                }
            };
            let n = w.stack.len() - 1;
            match flow {
                Flow::Next => {
                    w.stack[n].pc += 1;
                    w.settle();
                }
                Flow::Branch(taken, target) => {
                    w.branch(taken, target, kernel.ipdom[top.pc as usize]);
                }
                Flow::Sleep(until) => {
                    w.stack[n].pc += 1;
                    w.settle();
                    return (Ok(RunEnd::Sleep(until)), issued);
                }
                Flow::Barrier(id) => {
                    w.stack[n].pc += 1;
                    w.settle();
                    return (Ok(RunEnd::Barrier(id)), issued);
                }
                Flow::Exit(lanes) => {
                    w.exited |= lanes;
                    for e in &mut w.stack {
                        e.mask &= !lanes;
                    }
                    w.stack[n].pc += 1;
                    w.settle();
                    if w.stack.is_empty() {
                        return (Ok(RunEnd::Exited), issued);
                    }
                }
            }
        }
        (Ok(RunEnd::Quantum), issued)
    }

    fn special(&self, w: &Warp, s: Special) -> [u64; 32] {
        let slot = &self.slots[w.slot as usize];
        let b = self.cfg.block;
        let tid = |l: usize, d: u8| {
            let t = w.first_thread + l as u32;
            (match d {
                0 => t % b[0],
                1 => (t / b[0]) % b[1],
                _ => t / (b[0] * b[1]),
            }) as u64
        };
        let uniform = |v: u64| [v; 32];
        match s {
            Special::Tid(d) => std::array::from_fn(|l| tid(l, d)),
            Special::Ntid(d) => uniform(b[d as usize] as u64),
            Special::Ctaid(d) => uniform(slot.ctaid[d as usize] as u64),
            Special::Nctaid(d) => uniform(self.cfg.grid[d as usize] as u64),
            Special::LaneId => std::array::from_fn(|l| l as u64),
            Special::WarpId => uniform((w.first_thread / 32) as u64),
            Special::NWarpId => uniform(64),
            Special::SmId => uniform(slot.sm as u64),
            Special::NSmId => uniform(self.cfg.sms as u64),
            Special::GlobalTimer => uniform(self.now),
            Special::GlobalTimerLo => uniform(self.now & 0xffff_ffff),
            Special::GlobalTimerHi => uniform(self.now >> 32),
            Special::Clock => uniform(((self.now as f64 * CLOCK_GHZ) as u64) & 0xffff_ffff),
            Special::Clock64 => uniform((self.now as f64 * CLOCK_GHZ) as u64),
            Special::LaneMaskEq => std::array::from_fn(|l| 1u64 << l),
            Special::LaneMaskLt => std::array::from_fn(|l| (1u64 << l) - 1),
            Special::LaneMaskLe => std::array::from_fn(|l| (2u64 << l) - 1),
            Special::LaneMaskGt => std::array::from_fn(|l| (!((2u64 << l) - 1)) & 0xffff_ffff),
            Special::LaneMaskGe => std::array::from_fn(|l| (!((1u64 << l) - 1)) & 0xffff_ffff),
            Special::DynamicSmemSize => uniform(self.cfg.dynamic_shared_bytes as u64),
            Special::TotalSmemSize => uniform(slot.shared.len() as u64),
        }
    }

    #[inline]
    fn read(&self, w: &Warp, s: Src) -> [u64; 32] {
        match s {
            Src::Reg(r) => w.regs[r as usize],
            Src::Imm(v) => [v; 32],
            Src::NotPred(r) => w.regs[r as usize].map(|v| (v == 0) as u64),
            Src::Special(sp) => self.special(w, sp),
        }
    }

    /// One instruction for the running group (`mask`), of which `active` lanes pass the guard.
    fn exec(
        &mut self,
        w: &mut Warp,
        inst: &Inst,
        mask: u32,
        active: u32,
    ) -> Result<Flow, LaneFault> {
        match &inst.op {
            Op::Bra { target } => return Ok(Flow::Branch(active, *target)),
            Op::Exit => return Ok(Flow::Exit(active)),
            Op::BarSync { id, count } => return self.bar_sync(w, mask, active, *id, *count),
            Op::Nanosleep { t } => {
                if active == 0 {
                    return Ok(Flow::Next);
                }
                let t = self.read(w, *t)[active.trailing_zeros() as usize] & 0xffff_ffff;
                self.stats.sleeps += 1;
                return Ok(Flow::Sleep(self.now + t.max(1)));
            }
            _ => {}
        }
        if active == 0 {
            return Ok(Flow::Next);
        }
        match &inst.op {
            Op::Mov { ty, d, a } => {
                let m = ty.mask();
                let v = self.read(w, *a).map(|x| x & m);
                w.write(*d, &v, active);
            }
            Op::Pack {
                d,
                parts,
                part_bits,
            } => {
                let mut v = [0u64; 32];
                let pm = mask_bits(*part_bits);
                for (i, p) in parts.iter().enumerate() {
                    let x = self.read(w, *p);
                    for l in 0..32 {
                        v[l] |= (x[l] & pm) << (i as u32 * part_bits);
                    }
                }
                w.write(*d, &v, active);
            }
            Op::Unpack {
                a,
                parts,
                part_bits,
            } => {
                let x = self.read(w, *a);
                let pm = mask_bits(*part_bits);
                for (i, p) in parts.iter().enumerate() {
                    if let Some(d) = p {
                        let v = x.map(|x| (x >> (i as u32 * part_bits)) & pm);
                        w.write(*d, &v, active);
                    }
                }
            }
            Op::Int { op, ty, d, a, b } => {
                let (a, b) = (self.read(w, *a), self.read(w, *b));
                let v = int_lanes(*op, *ty, &a, &b);
                w.write(*d, &v, active);
            }
            Op::MulWide { ty, d, a, b } => {
                let (a, b) = (self.read(w, *a), self.read(w, *b));
                let v = std::array::from_fn(|l| alu::mul_wide(*ty, a[l], b[l]));
                w.write(*d, &v, active);
            }
            Op::Mad {
                mode,
                ty,
                d,
                a,
                b,
                c,
            } => {
                let (a, b, c) = (self.read(w, *a), self.read(w, *b), self.read(w, *c));
                let v = std::array::from_fn(|l| alu::mad(*mode, *ty, a[l], b[l], c[l]));
                w.write(*d, &v, active);
            }
            Op::Float {
                op,
                ty,
                ftz,
                d,
                a,
                b,
            } => {
                let (a, b) = (self.read(w, *a), self.read(w, *b));
                let v = float_lanes(*op, *ty, *ftz, &a, &b);
                w.write(*d, &v, active);
            }
            Op::Fma {
                ty,
                ftz,
                d,
                a,
                b,
                c,
            } => {
                let (a, b, c) = (self.read(w, *a), self.read(w, *b), self.read(w, *c));
                let v = std::array::from_fn(|l| float::fma(*ty, *ftz, a[l], b[l], c[l]));
                w.write(*d, &v, active);
            }
            Op::Unary { op, ty, d, a } => {
                let a = self.read(w, *a);
                let v = a.map(|x| alu::unary(*op, *ty, x));
                w.write(*d, &v, active);
            }
            Op::FloatUnary { f, ty, ftz, d, a } => {
                let a = self.read(w, *a);
                let v = a.map(|x| float::unary(*f, *ty, *ftz, x));
                w.write(*d, &v, active);
            }
            Op::Setp {
                cmp,
                ty,
                d,
                d_not,
                a,
                b,
                combine,
            } => {
                let (a, b) = (self.read(w, *a), self.read(w, *b));
                let mut v: [u64; 32] =
                    std::array::from_fn(|l| alu::compare(*cmp, *ty, a[l], b[l]) as u64);
                let mut v_not = v.map(|x| x ^ 1);
                if let Some((op, c)) = combine {
                    let c = self.read(w, *c);
                    for l in 0..32 {
                        let cv = c[l] != 0;
                        v[l] = alu::combine(*op, v[l] != 0, cv) as u64;
                        v_not[l] = alu::combine(*op, v_not[l] != 0, cv) as u64;
                    }
                }
                w.write(*d, &v, active);
                if let Some(dn) = d_not {
                    w.write(*dn, &v_not, active);
                }
            }
            Op::Selp { ty, d, a, b, p } => {
                let (a, b, p) = (self.read(w, *a), self.read(w, *b), self.read(w, *p));
                let m = ty.mask();
                let v = std::array::from_fn(|l| if p[l] != 0 { a[l] } else { b[l] } & m);
                w.write(*d, &v, active);
            }
            Op::Cvt {
                to,
                from,
                rounding,
                ftz,
                sat,
                d,
                a,
            } => {
                let a = self.read(w, *a);
                let v = a.map(|x| alu::cvt(*to, *from, *rounding, *ftz, *sat, x));
                w.write(*d, &v, active);
            }
            Op::Cvta {
                space,
                to_generic,
                d,
                a,
            } => {
                let a = self.read(w, *a);
                let v = a.map(|x| match (space, to_generic) {
                    (Space::Shared, true) => x.wrapping_add(SHARED_WINDOW),
                    (Space::Shared, false) => x.wrapping_sub(SHARED_WINDOW),
                    // Global (and param) addresses are generic addresses here.
                    _ => x,
                });
                w.write(*d, &v, active);
            }
            Op::Ld {
                space,
                sem,
                nc,
                ty,
                d,
                addr,
                ..
            } => self.load(w, active, *space, *sem, *nc, *ty, d, addr)?,
            Op::St {
                space,
                sem,
                ty,
                src,
                addr,
                ..
            } => self.store(w, active, *space, *sem, *ty, src, addr)?,
            Op::Atom {
                space,
                sem,
                op,
                ty,
                d,
                addr,
                b,
                c,
                ..
            } => self.atomic(w, active, *space, *sem, *op, *ty, *d, addr, *b, *c)?,
            Op::Fence { sem, .. } => {
                if let Some(weak) = self.weak.as_mut() {
                    let slot = w.slot as usize;
                    if sem.releases() {
                        weak.release(self.mem, slot);
                    }
                    if sem.acquires() {
                        weak.acquire(slot);
                    }
                }
            }
            Op::Prefetch { space, addr } => {
                // No effect on values; an address outside memory is ignored, as the hardware
                // drops such prefetches. Counted for the timing model and for tests.
                let _ = space;
                self.stats.prefetch_bytes += 128 * active.count_ones() as u64;
                let _ = addr;
            }
            Op::WarpSync { mask: m } => {
                let m = self.read(w, *m);
                self.check_converged(w, mask, active, m, "bar.warp.sync")?;
            }
            Op::Shfl {
                mode,
                d,
                p_out,
                a,
                b,
                c,
                mask: m,
            } => {
                let m = self.read(w, *m);
                let members = self.check_converged(w, mask, active, m, "shfl.sync")?;
                let (a, b, c) = (self.read(w, *a), self.read(w, *b), self.read(w, *c));
                let mut v = [0u64; 32];
                let mut p = [0u64; 32];
                for lane in lanes(active) {
                    let (j, ok) = shfl_source(*mode, lane as u32, b[lane] as u32, c[lane] as u32);
                    if members & (1 << j) == 0 {
                        return Err(undefined(
                            lane,
                            "undefined shuffle",
                            format!(
                                "lane {lane} reads lane {j}, which does not take part in the \
                                 shuffle (member mask {:#010x})",
                                members
                            ),
                        ));
                    }
                    v[lane] = a[j as usize] & 0xffff_ffff;
                    p[lane] = ok as u64;
                }
                w.write(*d, &v, active);
                if let Some(po) = p_out {
                    w.write(*po, &p, active);
                }
            }
            Op::Vote {
                mode,
                d,
                a,
                mask: m,
            } => {
                let m = self.read(w, *m);
                self.check_converged(w, mask, active, m, "vote.sync")?;
                let a = self.read(w, *a);
                let mut ballot = 0u32;
                for l in lanes(active) {
                    ballot |= ((a[l] != 0) as u32) << l;
                }
                let r = match mode {
                    VoteMode::Ballot => ballot as u64,
                    VoteMode::All => (ballot == active) as u64,
                    VoteMode::Any => (ballot != 0) as u64,
                    VoteMode::Uni => (ballot == active || ballot == 0) as u64,
                };
                w.write(*d, &[r; 32], active);
            }
            Op::Trap => {
                return Err(undefined(
                    active.trailing_zeros() as usize,
                    "trap",
                    "the kernel executed `trap` (a Rust panic on the device: an index out \
                     of bounds, an overflow or an explicit abort)"
                        .into(),
                ));
            }
            Op::Bra { .. } | Op::Exit | Op::BarSync { .. } | Op::Nanosleep { .. } => {
                unreachable!("handled above")
            }
        }
        Ok(Flow::Next)
    }

    /// `bar.sync`: every live lane of the warp must be here, unpredicated (`.aligned`).
    fn bar_sync(
        &mut self,
        w: &Warp,
        mask: u32,
        active: u32,
        id: Src,
        count: Option<Src>,
    ) -> Result<Flow, LaneFault> {
        let live = w.live();
        if active != live || mask != live {
            let missing = live & !active;
            return Err(undefined(
                active.trailing_zeros().min(31) as usize,
                "divergent bar.sync",
                format!(
                    "lanes {} of the warp did not reach this barrier with the others \
                     (lanes {} did): bar.sync needs the whole warp converged",
                    lane_list(missing),
                    lane_list(active)
                ),
            ));
        }
        let lane = active.trailing_zeros() as usize;
        let id = self.read(w, id)[lane];
        if id >= 16 {
            return Err(undefined(
                lane,
                "bad barrier",
                format!("barrier id {id} is not 0..15"),
            ));
        }
        if let Some(c) = count {
            let c = self.read(w, c)[lane];
            if c != self.cfg.threads_per_block() as u64 {
                return Err(undefined(
                    lane,
                    "unsupported barrier",
                    format!(
                        "bar.sync with a thread count of {c} (not the whole block) is not \
                         implemented"
                    ),
                ));
            }
        }
        Ok(Flow::Barrier(id as u8))
    }

    /// The rules of `.sync` warp instructions with member mask `m`: the executing lanes are
    /// members, and every member exists, has not exited and is executing this instruction
    /// with the others. Returns the member mask.
    fn check_converged(
        &self,
        w: &Warp,
        mask: u32,
        active: u32,
        m: [u64; 32],
        what: &str,
    ) -> Result<u32, LaneFault> {
        let first = active.trailing_zeros() as usize;
        let members = m[first] as u32;
        for l in lanes(active) {
            if m[l] as u32 != members {
                return Err(undefined(
                    l,
                    "bad member mask",
                    format!(
                        "{what}: lanes give different member masks ({:#010x} and {members:#010x})",
                        m[l] as u32
                    ),
                ));
            }
            if members & (1 << l) == 0 {
                return Err(undefined(
                    l,
                    "bad member mask",
                    format!(
                        "{what}: lane {l} executes it but is not in its member mask {members:#010x}"
                    ),
                ));
            }
        }
        let absent = members & !w.present;
        if absent != 0 {
            return Err(undefined(
                first,
                "bad member mask",
                format!(
                    "{what}: the member mask {members:#010x} names lanes {} that do not exist \
                     (the block's last warp is partial)",
                    lane_list(absent)
                ),
            ));
        }
        let gone = members & w.exited;
        if gone != 0 {
            return Err(undefined(
                first,
                "bad member mask",
                format!(
                    "{what}: the member mask {members:#010x} names lanes {} that have exited",
                    lane_list(gone)
                ),
            ));
        }
        let elsewhere = members & !active;
        if elsewhere != 0 {
            let why = if elsewhere & mask != 0 {
                "are here but predicated off"
            } else {
                "are at another point of the program (the warp diverged)"
            };
            return Err(undefined(
                first,
                "divergent warp instruction",
                format!(
                    "{what}: lanes {} of the member mask {members:#010x} {why}",
                    lane_list(elsewhere)
                ),
            ));
        }
        Ok(members)
    }

    fn lane_address(w: &Warp, addr: &Addr, lane: usize) -> u64 {
        let base = addr.base.map_or(0, |r| w.regs[r as usize][lane]);
        base.wrapping_add(addr.offset as u64)
    }

    fn resolve(&self, space: Space, a: u64, lane: usize) -> Result<Target, LaneFault> {
        Ok(match space {
            Space::Generic => {
                if (SHARED_WINDOW..SHARED_WINDOW + SHARED_WINDOW_BYTES).contains(&a) {
                    Target::Shared((a - SHARED_WINDOW) as usize)
                } else {
                    Target::Global(a)
                }
            }
            Space::Global => Target::Global(a),
            Space::Shared => Target::Shared(a as usize),
            Space::Param => Target::Param(a as usize),
            Space::Local | Space::Const => {
                return Err(illegal(
                    lane,
                    format!("the .{space:?} state space is not implemented"),
                ));
            }
        })
    }

    fn check_align(a: u64, len: usize, lane: usize) -> Result<(), LaneFault> {
        if !a.is_multiple_of(len as u64) {
            return Err(LaneFault {
                kind: FailureKind::Misaligned,
                title: "misaligned address",
                detail: format!("a {len}-byte access at {a:#x} is not {len}-byte aligned"),
                lane: lane as u32,
            });
        }
        Ok(())
    }

    fn shared_range(
        &self,
        slot: usize,
        off: usize,
        len: usize,
        lane: usize,
    ) -> Result<(), LaneFault> {
        let size = self.slots[slot].shared.len();
        if off.checked_add(len).is_none_or(|end| end > size) {
            return Err(illegal(
                lane,
                format!(
                    "{len} bytes at shared offset {off:#x} are outside the block's {size} bytes \
                     of shared memory"
                ),
            ));
        }
        Ok(())
    }

    fn global_fault(
        &self,
        a: u64,
        len: usize,
        lane: usize,
        e: crate::memory::AccessError,
    ) -> LaneFault {
        illegal(lane, format!("{len} bytes at {a:#x}: {e}"))
    }

    #[allow(clippy::too_many_arguments)]
    fn load(
        &mut self,
        w: &mut Warp,
        active: u32,
        space: Space,
        sem: Sem,
        nc: bool,
        ty: Ty,
        d: &[Option<Reg>],
        addr: &Addr,
    ) -> Result<(), LaneFault> {
        let elem = ty.bytes() as usize;
        let len = elem * d.len();
        let slot = w.slot as usize;
        let mut buf = [0u8; 64];
        for lane in lanes(active) {
            let a = Self::lane_address(w, addr, lane);
            Self::check_align(a, len, lane)?;
            let bytes = &mut buf[..len];
            match self.resolve(space, a, lane)? {
                Target::Param(off) => {
                    let Some(src) = self.params.get(off..off + len) else {
                        return Err(illegal(
                            lane,
                            format!(
                                "{len} bytes at parameter offset {off} are outside the {} bytes \
                                 of parameters",
                                self.params.len()
                            ),
                        ));
                    };
                    bytes.copy_from_slice(src);
                }
                Target::Shared(off) => {
                    self.shared_range(slot, off, len, lane)?;
                    bytes.copy_from_slice(&self.slots[slot].shared[off..off + len]);
                }
                Target::Global(a) => {
                    let (index, off) = self
                        .mem
                        .locate(a, len as u64)
                        .map_err(|e| self.global_fault(a, len, lane, e))?;
                    if nc {
                        if !self.mem.track_nc_read(index, off, len) {
                            return Err(illegal(
                                lane,
                                format!(
                                    "{len} bytes at {a:#x} are read through the read-only .nc \
                                     path after this launch stored to them"
                                ),
                            ));
                        }
                        self.stats.nc_load_bytes += len as u64;
                    } else {
                        self.stats.global_load_bytes += len as u64;
                    }
                    match self.weak.as_mut() {
                        Some(weak) if !nc => {
                            let kind = if sem.is_strong() {
                                LoadKind::Strong
                            } else {
                                LoadKind::Weak
                            };
                            let stale = weak
                                .load(self.mem, slot, a, bytes, kind)
                                .map_err(|report| undefined(lane, "data race", report))?;
                            self.stats.stale_loads += stale as u64;
                        }
                        _ => bytes.copy_from_slice(&self.mem.bytes(index)[off..off + len]),
                    }
                }
            }
            for (i, r) in d.iter().enumerate() {
                if let Some(r) = r {
                    let mut v = 0u64;
                    for (k, byte) in bytes[i * elem..(i + 1) * elem].iter().enumerate() {
                        v |= (*byte as u64) << (8 * k);
                    }
                    if ty.is_signed() && elem < 8 {
                        // Signed loads sign-extend into the register.
                        v = alu::sext(v, ty.bits()) as u64;
                    }
                    w.regs[*r as usize][lane] = v;
                }
            }
        }
        if sem.acquires()
            && let Some(weak) = self.weak.as_mut()
        {
            weak.acquire(slot);
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn store(
        &mut self,
        w: &mut Warp,
        active: u32,
        space: Space,
        sem: Sem,
        ty: Ty,
        src: &[Src],
        addr: &Addr,
    ) -> Result<(), LaneFault> {
        let elem = ty.bytes() as usize;
        let len = elem * src.len();
        let slot = w.slot as usize;
        let values: Vec<[u64; 32]> = src.iter().map(|s| self.read(w, *s)).collect();
        if sem.releases()
            && let Some(weak) = self.weak.as_mut()
        {
            weak.release(self.mem, slot);
        }
        let mut buf = [0u8; 64];
        for lane in lanes(active) {
            let a = Self::lane_address(w, addr, lane);
            Self::check_align(a, len, lane)?;
            let bytes = &mut buf[..len];
            for (i, v) in values.iter().enumerate() {
                bytes[i * elem..(i + 1) * elem].copy_from_slice(&v[lane].to_le_bytes()[..elem]);
            }
            match self.resolve(space, a, lane)? {
                Target::Param(_) => {
                    return Err(illegal(lane, "a store to the parameter space".into()));
                }
                Target::Shared(off) => {
                    self.shared_range(slot, off, len, lane)?;
                    self.slots[slot].shared[off..off + len].copy_from_slice(bytes);
                    self.progress = true;
                }
                Target::Global(a) => {
                    let (index, off) = self
                        .mem
                        .locate(a, len as u64)
                        .map_err(|e| self.global_fault(a, len, lane, e))?;
                    if !self.mem.track_store(index, off, len) {
                        return Err(illegal(
                            lane,
                            format!(
                                "a store to {len} bytes at {a:#x}, which this launch reads \
                                 through the read-only .nc path (ld.global.nc requires memory \
                                 that no thread writes during the kernel)"
                            ),
                        ));
                    }
                    self.stats.global_store_bytes += len as u64;
                    self.progress = true;
                    match self.weak.as_mut() {
                        Some(weak) => weak.store(self.mem, slot, a, bytes, sem.is_strong()),
                        None => self.mem.bytes_mut(index)[off..off + len].copy_from_slice(bytes),
                    }
                }
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn atomic(
        &mut self,
        w: &mut Warp,
        active: u32,
        space: Space,
        sem: Sem,
        op: AtomOp,
        ty: Ty,
        d: Option<Reg>,
        addr: &Addr,
        b: Src,
        c: Option<Src>,
    ) -> Result<(), LaneFault> {
        let len = ty.bytes() as usize;
        let slot = w.slot as usize;
        let b = self.read(w, b);
        let c = c.map(|c| self.read(w, c));
        if sem.releases()
            && let Some(weak) = self.weak.as_mut()
        {
            weak.release(self.mem, slot);
        }
        let mut out = w
            .regs
            .get(d.unwrap_or(0) as usize)
            .copied()
            .unwrap_or([0; 32]);
        for lane in lanes(active) {
            let a = Self::lane_address(w, addr, lane);
            Self::check_align(a, len, lane)?;
            let (old, new) = match self.resolve(space, a, lane)? {
                Target::Param(_) => {
                    return Err(illegal(lane, "an atomic on the parameter space".into()));
                }
                Target::Shared(off) => {
                    self.shared_range(slot, off, len, lane)?;
                    let mem = &mut self.slots[slot].shared[off..off + len];
                    let old = le(mem);
                    let new = alu::atomic(op, ty, old, b[lane], c.map_or(0, |c| c[lane]));
                    mem.copy_from_slice(&new.to_le_bytes()[..len]);
                    (old, new)
                }
                Target::Global(a) => {
                    let (index, off) = self
                        .mem
                        .locate(a, len as u64)
                        .map_err(|e| self.global_fault(a, len, lane, e))?;
                    if !self.mem.track_store(index, off, len) {
                        return Err(illegal(
                            lane,
                            format!(
                                "an atomic on {len} bytes at {a:#x}, which this launch reads through .nc"
                            ),
                        ));
                    }
                    if let Some(weak) = self.weak.as_mut() {
                        weak.before_atomic(self.mem, slot, a, len)
                            .map_err(|report| undefined(lane, "data race", report))?;
                    }
                    let mem = &mut self.mem.bytes_mut(index)[off..off + len];
                    let old = le(mem);
                    let new = alu::atomic(op, ty, old, b[lane], c.map_or(0, |c| c[lane]));
                    mem.copy_from_slice(&new.to_le_bytes()[..len]);
                    self.stats.atomics += 1;
                    (old, new)
                }
            };
            if old != new {
                self.progress = true;
            }
            out[lane] = old;
        }
        if let Some(d) = d {
            w.write(d, &out, active);
        }
        if sem.acquires()
            && let Some(weak) = self.weak.as_mut()
        {
            weak.acquire(slot);
        }
        Ok(())
    }
}

fn le(bytes: &[u8]) -> u64 {
    let mut v = 0u64;
    for (k, b) in bytes.iter().enumerate() {
        v |= (*b as u64) << (8 * k);
    }
    v
}

fn mask_bits(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1 << bits) - 1
    }
}

fn lane_list(m: u32) -> String {
    let v: Vec<String> = lanes(m).map(|l| l.to_string()).collect();
    if v.len() > 8 {
        format!("{} … ({} lanes)", v[..8].join(","), v.len())
    } else {
        v.join(",")
    }
}

/// The source lane of a shuffle and whether it is in range (PTX ISA, `shfl.sync`).
fn shfl_source(mode: ShflMode, lane: u32, b: u32, c: u32) -> (u32, bool) {
    let bval = b & 31;
    let clamp = c & 31;
    let seg = (c >> 8) & 31;
    let max_lane = (lane & seg) | (clamp & !seg);
    let min_lane = lane & seg;
    let (j, ok) = match mode {
        ShflMode::Up => {
            let j = lane as i32 - bval as i32;
            (j, j >= min_lane as i32)
        }
        ShflMode::Down => {
            let j = (lane + bval) as i32;
            (j, j <= max_lane as i32)
        }
        ShflMode::Bfly => {
            let j = (lane ^ bval) as i32;
            (j, j <= max_lane as i32)
        }
        ShflMode::Idx => {
            let j = (min_lane | (bval & !seg)) as i32;
            (j, j <= max_lane as i32)
        }
    };
    if ok { (j as u32, true) } else { (lane, false) }
}

/// `a op b` over 32 lanes, with the common 32- and 64-bit adds and ANDs in straight loops.
#[inline]
fn int_lanes(op: IntOp, ty: Ty, a: &[u64; 32], b: &[u64; 32]) -> [u64; 32] {
    match (op, ty.bits()) {
        (IntOp::Add, 64) => std::array::from_fn(|l| a[l].wrapping_add(b[l])),
        (IntOp::Add, 32) => std::array::from_fn(|l| (a[l] as u32).wrapping_add(b[l] as u32) as u64),
        _ => std::array::from_fn(|l| alu::int(op, ty, a[l], b[l])),
    }
}

/// `a op b` over 32 lanes of floats.
#[inline]
fn float_lanes(op: FloatOp, ty: Ty, ftz: bool, a: &[u64; 32], b: &[u64; 32]) -> [u64; 32] {
    if ty == Ty::F32 && !ftz {
        let f = |x: u64| f32::from_bits(x as u32);
        let g = |x: f32| x.to_bits() as u64;
        match op {
            FloatOp::Add => return std::array::from_fn(|l| g(f(a[l]) + f(b[l]))),
            FloatOp::Mul => return std::array::from_fn(|l| g(f(a[l]) * f(b[l]))),
            _ => {}
        }
    }
    std::array::from_fn(|l| float::binary(op, ty, ftz, a[l], b[l]))
}
