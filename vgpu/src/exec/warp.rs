//! One warp's execution: lane groups at their program counters, operand reads and writes,
//! and the meaning of every instruction.

use super::grid::Slot;
use super::weak::{LoadKind, Weak};
use super::{CLOCK_GHZ, FailureKind, LaunchConfig, Stats, alu, float, lanes};
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
    /// Parked at a warp-synchronous instruction, waiting for the lanes of another entry.
    pub waiting: bool,
}

/// What a warp-synchronous instruction (`bar.warp.sync`, `shfl.sync`, `vote.sync`) must match
/// to meet another: on sm_70 and later, lanes wait at *any* such instruction with the same
/// qualifiers and member mask (PTX ISA), and compilers rely on it — LLVM duplicates a
/// `bar.warp.sync` into both sides of a branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncKind {
    WarpSync,
    Shfl(ShflMode),
    Vote(VoteMode),
}

/// Lanes that arrived at warp-synchronous instructions and wait for the rest of the member
/// mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendezvous {
    pub kind: SyncKind,
    pub members: u32,
    pub arrived: u32,
    /// (pc, lanes) of each parked entry.
    pub waiters: Vec<(u32, u32)>,
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
    pub rendezvous: Option<Rendezvous>,
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
            waiting: false,
        });
        self.rendezvous = None;
        self.present = present;
        self.exited = 0;
        self.state = WarpState::Ready;
        self.first_thread = first_thread;
        self.slot = slot;
    }

    pub(super) fn live(&self) -> u32 {
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
                    waiting: false,
                });
            }
            if target != join {
                self.stack.push(Entry {
                    pc: target,
                    mask: taken,
                    rpc: join,
                    waiting: false,
                });
            }
        }
        self.settle();
    }

    #[inline(always)]
    pub(super) fn guard(&self, g: Guard) -> u32 {
        match g {
            Guard::Always => ALL,
            Guard::If(p) => self.predicate(p),
            Guard::IfNot(p) => !self.predicate(p),
        }
    }

    /// The lanes where predicate register `p` is true.
    #[inline(always)]
    fn predicate(&self, p: Reg) -> u32 {
        let r = &self.regs[p as usize];
        let mut m = 0u32;
        for (l, v) in r.iter().enumerate() {
            m |= ((*v != 0) as u32) << l;
        }
        m
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
    /// The running entry waits at a warp-synchronous instruction; another runs meanwhile.
    Parked,
    Next,
    Branch(u32, u32),
    Sleep(u64),
    Barrier(u8),
    Exit(u32),
}

/// A fault without its line (added by the caller).
pub(super) struct LaneFault {
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
pub(super) enum Target {
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
    /// The timing model's cycle of the instruction running (`%clock64` reads it exactly).
    pub cycle: Option<u64>,
    /// When the asynchronous copy running lands, as the timing model computed it (else the
    /// plain interpreter's fixed latency).
    pub copy_ready_ns: Option<u64>,
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
            let outcome = if top.waiting {
                Err(self.stranded(w))
            } else if sync_kind(&inst.op).is_some() && active != 0 {
                self.warp_sync(w, top.mask, active)
            } else {
                self.exec(w, inst, top.mask, active)
            };
            let flow = match outcome {
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
                Flow::Parked => {}
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
                    if let Some(r) = &w.rendezvous
                        && r.members & lanes != 0
                    {
                        let fault = self.exit_during_rendezvous(r, lanes);
                        return (
                            Err(Fault {
                                kind: fault.kind,
                                title: fault.title,
                                detail: fault.detail,
                                line: inst.line,
                                lane: fault.lane,
                            }),
                            issued,
                        );
                    }
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
            Special::Clock => uniform(self.cycles() & 0xffff_ffff),
            Special::Clock64 => uniform(self.cycles()),
            Special::LaneMaskEq => std::array::from_fn(|l| 1u64 << l),
            Special::LaneMaskLt => std::array::from_fn(|l| (1u64 << l) - 1),
            Special::LaneMaskLe => std::array::from_fn(|l| (2u64 << l) - 1),
            Special::LaneMaskGt => std::array::from_fn(|l| (!((2u64 << l) - 1)) & 0xffff_ffff),
            Special::LaneMaskGe => std::array::from_fn(|l| (!((1u64 << l) - 1)) & 0xffff_ffff),
            Special::DynamicSmemSize => uniform(self.cfg.dynamic_shared_bytes as u64),
            Special::TotalSmemSize => uniform(slot.shared.len() as u64),
        }
    }

    /// The SM clock: the timing model's cycle, else the virtual time at the nominal clock.
    fn cycles(&self) -> u64 {
        self.cycle.unwrap_or((self.now as f64 * CLOCK_GHZ) as u64)
    }

    /// The sources of a lane loop and its destination, as raw lane pointers all derived from
    /// one borrow of the register file; special registers and negated predicates are
    /// materialised into `tmp` first.
    #[inline(always)]
    fn prepare<const N: usize>(
        &self,
        w: &mut Warp,
        srcs: [Src; N],
        tmp: &mut [[u64; 32]; N],
        d: Reg,
        active: u32,
    ) -> ([lanes::Val; N], lanes::Dst) {
        for i in 0..N {
            if matches!(srcs[i], Src::Special(_) | Src::NotPred(_)) {
                tmp[i] = self.read(w, srcs[i]);
            }
        }
        let count = w.regs.len();
        let regs = w.regs.as_mut_ptr();
        let mut vals = [lanes::Val::Splat(0); N];
        for i in 0..N {
            vals[i] =
                lanes::val(regs, count, srcs[i]).unwrap_or(lanes::Val::Lanes(tmp[i].as_ptr()));
        }
        (vals, lanes::dst(regs, count, d, active))
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
                let mut t = [[0; 32]; 1];
                let ([a], dst) = self.prepare(w, [*a], &mut t, *d, active);
                // SAFETY: `prepare` gives 32-lane pointers into live buffers.
                unsafe { lanes::map1(dst, a, |x| x & m) };
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
                let mut t = [[0; 32]; 2];
                let ([a, b], dst) = self.prepare(w, [*a, *b], &mut t, *d, active);
                // SAFETY: as above.
                unsafe { lanes::int(dst, *op, *ty, a, b) };
            }
            Op::MulWide { ty, d, a, b } => {
                let mut t = [[0; 32]; 2];
                let ([a, b], dst) = self.prepare(w, [*a, *b], &mut t, *d, active);
                // SAFETY: as above.
                unsafe { lanes::mul_wide(dst, *ty, a, b) };
            }
            Op::Mad {
                mode,
                ty,
                d,
                a,
                b,
                c,
            } => {
                let mut t = [[0; 32]; 3];
                let ([a, b, c], dst) = self.prepare(w, [*a, *b, *c], &mut t, *d, active);
                // SAFETY: as above.
                unsafe { lanes::map3(dst, a, b, c, |a, b, c| alu::mad(*mode, *ty, a, b, c)) };
            }
            Op::Float {
                op,
                ty,
                ftz,
                d,
                a,
                b,
            } => {
                let mut t = [[0; 32]; 2];
                let ([a, b], dst) = self.prepare(w, [*a, *b], &mut t, *d, active);
                // SAFETY: as above.
                unsafe { lanes::float(dst, *op, *ty, *ftz, a, b) };
            }
            Op::Fma {
                ty,
                ftz,
                d,
                a,
                b,
                c,
            } => {
                let mut t = [[0; 32]; 3];
                let ([a, b, c], dst) = self.prepare(w, [*a, *b, *c], &mut t, *d, active);
                // SAFETY: as above.
                unsafe { lanes::map3(dst, a, b, c, |a, b, c| float::fma(*ty, *ftz, a, b, c)) };
            }
            Op::Bfe { ty, d, a, b, c } => {
                let mut t = [[0; 32]; 3];
                let ([a, b, c], dst) = self.prepare(w, [*a, *b, *c], &mut t, *d, active);
                // SAFETY: as above.
                unsafe { lanes::map3(dst, a, b, c, |a, b, c| alu::bfe(*ty, a, b, c)) };
            }
            Op::Bfi {
                ty,
                d,
                f,
                b,
                pos,
                len,
            } => {
                let (f, b, pos, len) = (
                    self.read(w, *f),
                    self.read(w, *b),
                    self.read(w, *pos),
                    self.read(w, *len),
                );
                let mut v = [0u64; 32];
                for l in 0..32 {
                    v[l] = alu::bfi(*ty, f[l], b[l], pos[l], len[l]);
                }
                w.write(*d, &v, active);
            }
            Op::Unary { op, ty, d, a } => {
                let mut t = [[0; 32]; 1];
                let ([a], dst) = self.prepare(w, [*a], &mut t, *d, active);
                // SAFETY: as above.
                unsafe { lanes::map1(dst, a, |x| alu::unary(*op, *ty, x)) };
            }
            Op::FloatUnary { f, ty, ftz, d, a } => {
                let mut t = [[0; 32]; 1];
                let ([a], dst) = self.prepare(w, [*a], &mut t, *d, active);
                // SAFETY: as above.
                unsafe { lanes::map1(dst, a, |x| float::unary(*f, *ty, *ftz, x)) };
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
                if combine.is_none() && d_not.is_none() {
                    let mut t = [[0; 32]; 2];
                    let ([a, b], dst) = self.prepare(w, [*a, *b], &mut t, *d, active);
                    // SAFETY: as above.
                    unsafe { lanes::compare(dst, *cmp, *ty, a, b) };
                } else {
                    let (a, b) = (self.read(w, *a), self.read(w, *b));
                    let mut v = [0u64; 32];
                    for l in 0..32 {
                        v[l] = alu::compare(*cmp, *ty, a[l], b[l]) as u64;
                    }
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
            }
            Op::Selp { ty, d, a, b, p } => {
                let m = ty.mask();
                let mut t = [[0; 32]; 3];
                let ([a, b, p], dst) = self.prepare(w, [*a, *b, *p], &mut t, *d, active);
                // SAFETY: as above.
                unsafe { lanes::map3(dst, a, b, p, |a, b, p| if p != 0 { a } else { b } & m) };
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
                let mut t = [[0; 32]; 1];
                let ([a], dst) = self.prepare(w, [*a], &mut t, *d, active);
                let general = |x| alu::cvt(*to, *from, *rounding, *ftz, *sat, x);
                // SAFETY: as above.
                unsafe {
                    if *sat || rounding.is_some() || *ftz {
                        lanes::map1(dst, a, general)
                    } else {
                        lanes::cvt(dst, *to, *from, a, general)
                    }
                };
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
            Op::Trap => {
                return Err(undefined(
                    active.trailing_zeros() as usize,
                    "trap",
                    "the kernel executed `trap` (a Rust panic on the device: an index out \
                     of bounds, an overflow or an explicit abort)"
                        .into(),
                ));
            }
            Op::MbarInit { addr, count } => {
                let count = self.read(w, *count);
                for lane in lanes(active) {
                    let off = self.mbar_offset(w, addr, lane)?;
                    let slot = w.slot as usize;
                    self.slots[slot]
                        .copies
                        .init(off, count[lane] as u32)
                        .map_err(|e| undefined(lane, "mbarrier misuse", e))?;
                }
                self.progress = true;
            }
            Op::MbarArrive { d, addr, tx } => {
                let tx = tx.map(|t| self.read(w, t));
                let mut out = [0u64; 32];
                for lane in lanes(active) {
                    let off = self.mbar_offset(w, addr, lane)?;
                    let slot = w.slot as usize;
                    out[lane] = self.slots[slot]
                        .copies
                        .arrive(off, tx.map_or(0, |t| t[lane] as u32))
                        .map_err(|e| undefined(lane, "mbarrier misuse", e))?;
                }
                if let Some(d) = d {
                    w.write(*d, &out, active);
                }
                self.progress = true;
            }
            Op::MbarWait {
                d, addr, parity, ..
            } => {
                let parity = self.read(w, *parity);
                let mut out = [0u64; 32];
                for lane in lanes(active) {
                    let off = self.mbar_offset(w, addr, lane)?;
                    let s = &mut self.slots[w.slot as usize];
                    let before = s.copies.in_flight();
                    out[lane] = s
                        .copies
                        .phase_done(&mut s.shared, off, parity[lane] as u32, self.now)
                        .map_err(|e| undefined(lane, "mbarrier misuse", e))?
                        as u64;
                    self.progress |= s.copies.in_flight() != before;
                }
                w.write(*d, &out, active);
            }
            Op::BulkCopy {
                dst,
                src,
                size,
                mbar,
            } => {
                let size = self.read(w, *size);
                for lane in lanes(active) {
                    self.bulk_copy(w, lane, dst, src, size[lane], mbar)?;
                }
            }
            Op::AsyncCopy { dst, src, bytes } => {
                for lane in lanes(active) {
                    self.thread_copy(w, lane, dst, src, *bytes)?;
                }
            }
            Op::AsyncCommit => {
                for lane in lanes(active) {
                    let thread = w.first_thread + lane as u32;
                    self.slots[w.slot as usize].copies.commit(thread);
                }
            }
            Op::AsyncWait { n } => {
                for lane in lanes(active) {
                    let thread = w.first_thread + lane as u32;
                    let s = &mut self.slots[w.slot as usize];
                    s.copies.wait_groups(&mut s.shared, thread, *n);
                }
                self.progress = true;
            }
            Op::Bra { .. }
            | Op::Exit
            | Op::BarSync { .. }
            | Op::Nanosleep { .. }
            | Op::WarpSync { .. }
            | Op::Shfl { .. }
            | Op::Vote { .. } => unreachable!("handled by the caller"),
        }
        Ok(Flow::Next)
    }

    /// The shared-memory offset of an mbarrier operand: 8-byte aligned, inside the window.
    pub(super) fn mbar_offset(
        &self,
        w: &Warp,
        addr: &Addr,
        lane: usize,
    ) -> Result<usize, LaneFault> {
        let a = Self::lane_address(w, addr, lane);
        Self::check_align(a, 8, lane)?;
        let off = a as usize;
        self.shared_range(w.slot as usize, off, 8, lane)?;
        Ok(off)
    }

    /// `len` bytes of global memory at `a` for an asynchronous copy: inside a live allocation
    /// and never stored by this launch (the copy engine reads like the read-only path).
    fn copy_source(&mut self, a: u64, len: usize, lane: usize) -> Result<Vec<u8>, LaneFault> {
        let (index, off) = self
            .mem
            .locate(a, len as u64)
            .map_err(|e| self.global_fault(a, len, lane, e))?;
        if !self.mem.track_nc_read(index, off, len) {
            return Err(illegal(
                lane,
                format!(
                    "an asynchronous copy reads {len} bytes at {a:#x} after this launch stored \
                     to them"
                ),
            ));
        }
        self.stats.nc_load_bytes += len as u64;
        Ok(self.mem.bytes(index)[off..off + len].to_vec())
    }

    fn copy_ready(&self) -> u64 {
        self.copy_ready_ns
            .unwrap_or(self.now + super::copies::UNTIMED_LATENCY_NS)
    }

    fn bulk_copy(
        &mut self,
        w: &Warp,
        lane: usize,
        dst: &Addr,
        src: &Addr,
        size: u64,
        mbar: &Addr,
    ) -> Result<(), LaneFault> {
        let (d, s) = (
            Self::lane_address(w, dst, lane),
            Self::lane_address(w, src, lane),
        );
        if size == 0 || !size.is_multiple_of(16) || size > u32::MAX as u64 {
            return Err(undefined(
                lane,
                "bulk copy misuse",
                format!("a bulk copy of {size} bytes (a non-zero multiple of 16 is required)"),
            ));
        }
        Self::check_align(d, 16, lane)?;
        Self::check_align(s, 16, lane)?;
        let len = size as usize;
        self.shared_range(w.slot as usize, d as usize, len, lane)?;
        let off = self.mbar_offset(w, mbar, lane)?;
        let data = self.copy_source(s, len, lane)?;
        let ready = self.copy_ready();
        self.slots[w.slot as usize]
            .copies
            .bulk(d as usize, data, off, ready)
            .map_err(|e| undefined(lane, "bulk copy misuse", e))?;
        self.progress = true;
        Ok(())
    }

    fn thread_copy(
        &mut self,
        w: &Warp,
        lane: usize,
        dst: &Addr,
        src: &Addr,
        bytes: u32,
    ) -> Result<(), LaneFault> {
        let (d, s) = (
            Self::lane_address(w, dst, lane),
            Self::lane_address(w, src, lane),
        );
        let len = bytes as usize;
        Self::check_align(d, len, lane)?;
        Self::check_align(s, len, lane)?;
        self.shared_range(w.slot as usize, d as usize, len, lane)?;
        let data = self.copy_source(s, len, lane)?;
        let ready = self.copy_ready();
        let thread = w.first_thread + lane as u32;
        self.slots[w.slot as usize]
            .copies
            .thread_copy(thread, d as usize, data, ready)
            .map_err(|e| undefined(lane, "cp.async misuse", e))?;
        self.progress = true;
        Ok(())
    }

    /// A plain access to shared bytes that a copy in flight will write.
    fn racing_copy(
        &self,
        slot: usize,
        off: usize,
        len: usize,
        lane: usize,
        what: &str,
    ) -> Result<(), LaneFault> {
        if self.slots[slot].copies.overlaps(off, len) {
            return Err(undefined(
                lane,
                "shared memory used before its copy landed",
                format!(
                    "{what} {len} bytes at shared offset {off:#x} while an asynchronous copy \
                     into them is in flight (wait on its mbarrier, or `cp.async.wait_group`, \
                     first)"
                ),
            ));
        }
        Ok(())
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

    /// The member mask of a warp-synchronous instruction and its rules: the executing lanes
    /// are members and agree on the mask, every member exists and has not exited, and no
    /// member is here but predicated off.
    fn member_mask(
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
        let off = members & mask & !active;
        if off != 0 {
            return Err(undefined(
                first,
                "divergent warp instruction",
                format!(
                    "{what}: lanes {} of the member mask {members:#010x} are here but predicated \
                     off",
                    lane_list(off)
                ),
            ));
        }
        Ok(members)
    }

    /// A warp-synchronous instruction of the running entry: its lanes arrive; when every
    /// member has arrived (here or at a matching instruction of a sibling path) the
    /// instruction runs for all of them, else this entry parks and its sibling runs.
    fn warp_sync(&mut self, w: &mut Warp, mask: u32, active: u32) -> Result<Flow, LaneFault> {
        let kernel = self.kernel;
        let n = w.stack.len() - 1;
        let pc = w.stack[n].pc;
        let op = &kernel.insts[pc as usize].op;
        let kind = sync_kind(op).expect("a warp-synchronous instruction");
        let what = sync_name(kind);
        let m = match op {
            Op::WarpSync { mask } | Op::Shfl { mask, .. } | Op::Vote { mask, .. } => {
                self.read(w, *mask)
            }
            _ => unreachable!("sync_kind matched"),
        };
        let members = self.member_mask(w, mask, active, m, what)?;
        let mut r = w.rendezvous.take().unwrap_or(Rendezvous {
            kind,
            members,
            arrived: 0,
            waiters: Vec::new(),
        });
        if r.kind != kind || r.members != members {
            return Err(undefined(
                active.trailing_zeros() as usize,
                "divergent warp instruction",
                format!(
                    "{what} with member mask {members:#010x} meets lanes {} waiting at {} with \
                     member mask {:#010x}",
                    lane_list(r.arrived),
                    sync_name(r.kind),
                    r.members
                ),
            ));
        }
        r.arrived |= active;
        if r.arrived == members {
            let mut parts = r.waiters;
            parts.push((pc, active));
            self.perform(w, kind, members, &parts)?;
            for e in w.stack.iter_mut().filter(|e| e.waiting) {
                e.waiting = false;
                e.pc += 1;
            }
            return Ok(Flow::Next);
        }
        r.waiters.push((pc, active));
        w.stack[n].waiting = true;
        // The missing lanes can only be on the other side of the branch this entry came
        // from: the entry below with the same join point.
        let sibling = n
            .checked_sub(1)
            .filter(|&s| w.stack[s].rpc == w.stack[n].rpc && !w.stack[s].waiting);
        let missing = members & !r.arrived;
        match sibling {
            Some(s) if w.stack[s].mask & missing != 0 => {
                w.stack.swap(s, n);
                w.rendezvous = Some(r);
                Ok(Flow::Parked)
            }
            _ => Err(undefined(
                active.trailing_zeros() as usize,
                "divergent warp instruction",
                format!(
                    "{what}: lanes {} of the member mask {members:#010x} are at another point \
                     of the program (the warp diverged) and cannot reach a matching {what}",
                    lane_list(missing)
                ),
            )),
        }
    }

    /// Runs a completed warp-synchronous instruction: `parts` are the (pc, lanes) of every
    /// instruction instance the members arrived at.
    fn perform(
        &self,
        w: &mut Warp,
        kind: SyncKind,
        members: u32,
        parts: &[(u32, u32)],
    ) -> Result<(), LaneFault> {
        let insts = &self.kernel.insts;
        match kind {
            SyncKind::WarpSync => Ok(()),
            SyncKind::Vote(mode) => {
                let mut ballot = 0u32;
                for &(pc, lanes_here) in parts {
                    if let Op::Vote { a, .. } = &insts[pc as usize].op {
                        let a = self.read(w, *a);
                        for l in lanes(lanes_here) {
                            ballot |= ((a[l] != 0) as u32) << l;
                        }
                    }
                }
                let r = match mode {
                    VoteMode::Ballot => ballot as u64,
                    VoteMode::All => (ballot == members) as u64,
                    VoteMode::Any => (ballot != 0) as u64,
                    VoteMode::Uni => (ballot == members || ballot == 0) as u64,
                };
                for &(pc, lanes_here) in parts {
                    if let Op::Vote { d, .. } = &insts[pc as usize].op {
                        w.write(*d, &[r; 32], lanes_here);
                    }
                }
                Ok(())
            }
            SyncKind::Shfl(mode) => {
                // Every member's value, each from the instruction its lane executes.
                let mut values = [0u64; 32];
                for &(pc, lanes_here) in parts {
                    if let Op::Shfl { a, .. } = &insts[pc as usize].op {
                        let a = self.read(w, *a);
                        for l in lanes(lanes_here) {
                            values[l] = a[l] & 0xffff_ffff;
                        }
                    }
                }
                for &(pc, lanes_here) in parts {
                    let Op::Shfl { d, p_out, b, c, .. } = &insts[pc as usize].op else {
                        continue;
                    };
                    let (b, c) = (self.read(w, *b), self.read(w, *c));
                    let mut v = [0u64; 32];
                    let mut p = [0u64; 32];
                    for lane in lanes(lanes_here) {
                        let (j, ok) =
                            shfl_source(mode, lane as u32, b[lane] as u32, c[lane] as u32);
                        if members & (1 << j) == 0 {
                            return Err(undefined(
                                lane,
                                "undefined shuffle",
                                format!(
                                    "lane {lane} reads lane {j}, which does not take part in \
                                     the shuffle (member mask {members:#010x})"
                                ),
                            ));
                        }
                        v[lane] = values[j as usize];
                        p[lane] = ok as u64;
                    }
                    w.write(*d, &v, lanes_here);
                    if let Some(po) = p_out {
                        w.write(*po, &p, lanes_here);
                    }
                }
                Ok(())
            }
        }
    }

    /// The fault of a parked entry whose partner lanes left without meeting it.
    fn stranded(&self, w: &Warp) -> LaneFault {
        let (members, arrived, kind) = w
            .rendezvous
            .as_ref()
            .map_or((0, 0, SyncKind::WarpSync), |r| {
                (r.members, r.arrived, r.kind)
            });
        undefined(
            arrived.trailing_zeros().min(31) as usize,
            "divergent warp instruction",
            format!(
                "lanes {} wait at {} for lanes {} of the member mask {members:#010x}, which \
                 finished their path without reaching one",
                lane_list(arrived),
                sync_name(kind),
                lane_list(members & !arrived)
            ),
        )
    }

    fn exit_during_rendezvous(&self, r: &Rendezvous, lanes_out: u32) -> LaneFault {
        undefined(
            lanes_out.trailing_zeros() as usize,
            "divergent warp instruction",
            format!(
                "lanes {} exit while lanes {} wait for them at {}",
                lane_list(lanes_out & r.members),
                lane_list(r.arrived),
                sync_name(r.kind)
            ),
        )
    }

    pub(super) fn lane_address(w: &Warp, addr: &Addr, lane: usize) -> u64 {
        let base = addr.base.map_or(0, |r| w.regs[r as usize][lane]);
        base.wrapping_add(addr.offset as u64)
    }

    pub(super) fn resolve(&self, space: Space, a: u64, lane: usize) -> Result<Target, LaneFault> {
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
        let sign = ty.is_signed() && elem < 8;
        let mut buf = [0u8; 64];
        for lane in lanes(active) {
            let a = Self::lane_address(w, addr, lane);
            Self::check_align(a, len, lane)?;
            let src: &[u8] = match self.resolve(space, a, lane)? {
                Target::Param(off) => match self.params.get(off..off + len) {
                    Some(src) => src,
                    None => {
                        return Err(illegal(
                            lane,
                            format!(
                                "{len} bytes at parameter offset {off} are outside the {} bytes \
                                 of parameters",
                                self.params.len()
                            ),
                        ));
                    }
                },
                Target::Shared(off) => {
                    self.shared_range(slot, off, len, lane)?;
                    self.racing_copy(slot, off, len, lane, "a load read")?;
                    &self.slots[slot].shared[off..off + len]
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
                                .load(self.mem, slot, a, &mut buf[..len], kind)
                                .map_err(|report| undefined(lane, "data race", report))?;
                            self.stats.stale_loads += stale as u64;
                            &buf[..len]
                        }
                        _ => &self.mem.bytes(index)[off..off + len],
                    }
                }
            };
            for (i, r) in d.iter().enumerate() {
                if let Some(r) = r {
                    let mut v = read_le(&src[i * elem..], elem);
                    if sign {
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
        let mut values = [[0u64; 32]; 8];
        for (v, s) in values.iter_mut().zip(src) {
            *v = self.read(w, *s);
        }
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
            for (i, v) in values[..src.len()].iter().enumerate() {
                bytes[i * elem..(i + 1) * elem].copy_from_slice(&v[lane].to_le_bytes()[..elem]);
            }
            match self.resolve(space, a, lane)? {
                Target::Param(_) => {
                    return Err(illegal(lane, "a store to the parameter space".into()));
                }
                Target::Shared(off) => {
                    self.shared_range(slot, off, len, lane)?;
                    self.racing_copy(slot, off, len, lane, "a store wrote")?;
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

/// The little-endian value of the first `n` (1, 2, 4 or 8) bytes.
#[inline(always)]
fn read_le(bytes: &[u8], n: usize) -> u64 {
    match n {
        4 => u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as u64,
        8 => u64::from_le_bytes(bytes[..8].try_into().unwrap_or([0; 8])),
        2 => u16::from_le_bytes([bytes[0], bytes[1]]) as u64,
        _ => le(&bytes[..n]),
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

/// The rendezvous kind of a warp-synchronous instruction, `None` for any other.
fn sync_kind(op: &Op) -> Option<SyncKind> {
    match op {
        Op::WarpSync { .. } => Some(SyncKind::WarpSync),
        Op::Shfl { mode, .. } => Some(SyncKind::Shfl(*mode)),
        Op::Vote { mode, .. } => Some(SyncKind::Vote(*mode)),
        _ => None,
    }
}

fn sync_name(kind: SyncKind) -> &'static str {
    match kind {
        SyncKind::WarpSync => "bar.warp.sync",
        SyncKind::Shfl(_) => "shfl.sync",
        SyncKind::Vote(_) => "vote.sync",
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
