//! Register compaction: rustc's PTX declares a fresh virtual register for almost every value
//! (1,600+ in the decode step), and every warp would carry 32 lanes of each. Registers whose
//! values are never live at the same time share a slot here — liveness by backward dataflow,
//! then greedy colouring of the interference graph — the way ptxas assigns physical
//! registers. Each lane still runs the per-thread program exactly, so the result is the same
//! for any interleaving and any divergence; the warps just get ~10× smaller.

use crate::isa::{Guard, Inst, Op, Reg, Src};

/// Whether an operand is read or written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Use,
    Def,
}

fn src(s: &mut Src, f: &mut impl FnMut(&mut Reg, Role)) {
    match s {
        Src::Reg(r) | Src::NotPred(r) => f(r, Role::Use),
        Src::Imm(_) | Src::Special(_) => {}
    }
}

/// Calls `f` on every register of `inst`, uses before definitions.
fn visit(inst: &mut Inst, f: &mut impl FnMut(&mut Reg, Role)) {
    match &mut inst.guard {
        Guard::If(p) | Guard::IfNot(p) => f(p, Role::Use),
        Guard::Always => {}
    }
    let addr = |a: &mut crate::isa::Addr, f: &mut dyn FnMut(&mut Reg, Role)| {
        if let Some(r) = &mut a.base {
            f(r, Role::Use);
        }
    };
    match &mut inst.op {
        Op::Mov { d, a, .. } => {
            src(a, f);
            f(d, Role::Def);
        }
        Op::Pack { d, parts, .. } => {
            for p in parts {
                src(p, f);
            }
            f(d, Role::Def);
        }
        Op::Unpack { a, parts, .. } => {
            src(a, f);
            for d in parts.iter_mut().flatten() {
                f(d, Role::Def);
            }
        }
        Op::Int { d, a, b, .. } | Op::MulWide { d, a, b, .. } | Op::Float { d, a, b, .. } => {
            src(a, f);
            src(b, f);
            f(d, Role::Def);
        }
        Op::Mad { d, a, b, c, .. } | Op::Fma { d, a, b, c, .. } => {
            src(a, f);
            src(b, f);
            src(c, f);
            f(d, Role::Def);
        }
        Op::Bfe { d, a, b, c, .. } => {
            src(a, f);
            src(b, f);
            src(c, f);
            f(d, Role::Def);
        }
        Op::Bfi {
            d,
            f: x,
            b,
            pos,
            len,
            ..
        } => {
            src(x, f);
            src(b, f);
            src(pos, f);
            src(len, f);
            f(d, Role::Def);
        }
        Op::Unary { d, a, .. } | Op::FloatUnary { d, a, .. } | Op::Cvt { d, a, .. } => {
            src(a, f);
            f(d, Role::Def);
        }
        Op::Cvta { d, a, .. } => {
            src(a, f);
            f(d, Role::Def);
        }
        Op::Setp {
            d,
            d_not,
            a,
            b,
            combine,
            ..
        } => {
            src(a, f);
            src(b, f);
            if let Some((_, c)) = combine {
                src(c, f);
            }
            f(d, Role::Def);
            if let Some(dn) = d_not {
                f(dn, Role::Def);
            }
        }
        Op::Selp { d, a, b, p, .. } => {
            src(a, f);
            src(b, f);
            src(p, f);
            f(d, Role::Def);
        }
        Op::Ld { d, addr: a, .. } => {
            addr(a, f);
            for r in d.iter_mut().flatten() {
                f(r, Role::Def);
            }
        }
        Op::St {
            src: s, addr: a, ..
        } => {
            addr(a, f);
            for v in s {
                src(v, f);
            }
        }
        Op::Atom {
            d, addr: a, b, c, ..
        } => {
            addr(a, f);
            src(b, f);
            if let Some(c) = c {
                src(c, f);
            }
            if let Some(d) = d {
                f(d, Role::Def);
            }
        }
        Op::BarSync { id, count } => {
            src(id, f);
            if let Some(c) = count {
                src(c, f);
            }
        }
        Op::WarpSync { mask } => src(mask, f),
        Op::Shfl {
            d,
            p_out,
            a,
            b,
            c,
            mask,
            ..
        } => {
            src(a, f);
            src(b, f);
            src(c, f);
            src(mask, f);
            f(d, Role::Def);
            if let Some(p) = p_out {
                f(p, Role::Def);
            }
        }
        Op::Vote { d, a, mask, .. } => {
            src(a, f);
            src(mask, f);
            f(d, Role::Def);
        }
        Op::Nanosleep { t } => src(t, f),
        Op::Prefetch { addr: a, .. } => addr(a, f),
        Op::MbarInit { addr: a, count } => {
            addr(a, f);
            src(count, f);
        }
        Op::MbarArrive { d, addr: a, tx } => {
            addr(a, f);
            if let Some(tx) = tx {
                src(tx, f);
            }
            if let Some(d) = d {
                f(d, Role::Def);
            }
        }
        Op::MbarWait {
            d, addr: a, parity, ..
        } => {
            addr(a, f);
            src(parity, f);
            f(d, Role::Def);
        }
        Op::BulkCopy {
            dst,
            src: from,
            size,
            mbar,
        } => {
            addr(dst, f);
            addr(from, f);
            src(size, f);
            addr(mbar, f);
        }
        Op::AsyncCopy { dst, src: from, .. } => {
            addr(dst, f);
            addr(from, f);
        }
        Op::Bra { .. }
        | Op::Fence { .. }
        | Op::Trap
        | Op::Exit
        | Op::AsyncCommit
        | Op::AsyncWait { .. } => {}
    }
}

/// The registers `inst` reads and writes.
pub fn operands(inst: &Inst) -> (Vec<Reg>, Vec<Reg>) {
    let mut copy = inst.clone();
    let (mut uses, mut defs) = (Vec::new(), Vec::new());
    visit(&mut copy, &mut |r, role| match role {
        Role::Use => uses.push(*r),
        Role::Def => defs.push(*r),
    });
    (uses, defs)
}

/// A fixed-size bit set over registers.
#[derive(Clone, PartialEq)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
    fn union(&mut self, o: &Bits) {
        for (a, b) in self.0.iter_mut().zip(&o.0) {
            *a |= b;
        }
    }
    fn ones(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(w, &bits)| {
            let mut b = bits;
            std::iter::from_fn(move || {
                if b == 0 {
                    return None;
                }
                let i = b.trailing_zeros() as usize;
                b &= b - 1;
                Some(w * 64 + i)
            })
        })
    }
}

fn successors(insts: &[Inst], i: usize) -> Vec<usize> {
    let guarded = insts[i].guard != Guard::Always;
    let next = |v: &mut Vec<usize>| {
        if i + 1 < insts.len() {
            v.push(i + 1)
        }
    };
    let mut v = Vec::new();
    match insts[i].op {
        Op::Bra { target } => {
            v.push(target as usize);
            if guarded {
                next(&mut v);
            }
        }
        Op::Exit | Op::Trap => {
            if guarded {
                next(&mut v);
            }
        }
        _ => next(&mut v),
    }
    v
}

/// Renames the registers of `insts` (declared: `regs`) onto as few slots as their live
/// ranges allow, and returns the number of slots.
pub fn compact(insts: &mut [Inst], regs: u32) -> u32 {
    let n = regs as usize;
    if n == 0 || insts.is_empty() {
        return regs;
    }
    // Uses and kills per instruction. A guarded definition does not kill: when the guard is
    // false the register keeps its old value.
    let mut uses = vec![Bits::new(n); insts.len()];
    let mut defs = vec![Vec::new(); insts.len()];
    let mut kills = vec![Bits::new(n); insts.len()];
    for (i, inst) in insts.iter_mut().enumerate() {
        let guarded = inst.guard != Guard::Always;
        let (u, d, k) = (&mut uses[i], &mut defs[i], &mut kills[i]);
        visit(inst, &mut |r, role| match role {
            Role::Use => u.set(*r as usize),
            Role::Def => {
                d.push(*r as usize);
                if !guarded {
                    k.set(*r as usize);
                }
            }
        });
    }
    let succ: Vec<Vec<usize>> = (0..insts.len()).map(|i| successors(insts, i)).collect();
    // Backward dataflow to a fixed point: live_in = uses ∪ (live_out − kills).
    let mut live_in = vec![Bits::new(n); insts.len()];
    let mut changed = true;
    while changed {
        changed = false;
        for i in (0..insts.len()).rev() {
            let mut out = Bits::new(n);
            for &s in &succ[i] {
                out.union(&live_in[s]);
            }
            for k in kills[i].ones().collect::<Vec<_>>() {
                out.clear(k);
            }
            out.union(&uses[i]);
            if out != live_in[i] {
                live_in[i] = out;
                changed = true;
            }
        }
    }
    // Interference: a definition conflicts with everything live after it, and the
    // definitions of one instruction with each other.
    let mut graph = vec![Bits::new(n); n];
    for i in 0..insts.len() {
        let mut out = Bits::new(n);
        for &s in &succ[i] {
            out.union(&live_in[s]);
        }
        for &d in &defs[i] {
            for r in out.ones() {
                if r != d {
                    graph[d].set(r);
                    graph[r].set(d);
                }
            }
            for &e in &defs[i] {
                if e != d {
                    graph[d].set(e);
                    graph[e].set(d);
                }
            }
        }
    }
    // Greedy colouring, registers in declaration order.
    const NONE: u32 = u32::MAX;
    let mut color = vec![NONE; n];
    let mut slots = 0u32;
    let mut taken = Vec::new();
    for r in 0..n {
        taken.clear();
        taken.resize(slots as usize + 1, false);
        for o in graph[r].ones() {
            if color[o] != NONE {
                taken[color[o] as usize] = true;
            }
        }
        let c = taken.iter().position(|t| !t).unwrap_or(slots as usize) as u32;
        color[r] = c;
        slots = slots.max(c + 1);
    }
    for inst in insts.iter_mut() {
        visit(inst, &mut |r, _| *r = color[*r as usize]);
    }
    slots
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa::{IntOp, Ty};

    fn add(d: Reg, a: Reg, b: Reg) -> Inst {
        Inst {
            op: Op::Int {
                op: IntOp::Add,
                ty: Ty::U32,
                d,
                a: Src::Reg(a),
                b: Src::Reg(b),
            },
            guard: Guard::Always,
            line: 0,
        }
    }

    #[test]
    fn values_with_disjoint_lives_share_a_slot() {
        // r0 = r5 + r5; r1 = r5 + r5; r2 = r0 + r1; r3 = r2 + r2; r4 = r3 + r3: each value
        // dies at its only use.
        let mut insts = vec![
            add(0, 5, 5),
            add(1, 5, 5),
            add(2, 0, 1),
            add(3, 2, 2),
            add(4, 3, 3),
            Inst {
                op: Op::Exit,
                guard: Guard::Always,
                line: 0,
            },
        ];
        let slots = compact(&mut insts, 6);
        assert!(slots <= 3, "{slots}");
        // r0 and r1 are live together (both read by the third add): different slots.
        let Op::Int { a, b, .. } = insts[2].op else {
            unreachable!()
        };
        assert_ne!(a, b);
    }

    #[test]
    fn a_guarded_definition_keeps_the_old_value_alive() {
        // r1 = r0 + r0; @p r1 = r2 + r2; r3 = r1 + r1. r1's first value may survive the
        // guarded write, so r2 (read there) must not share r1's slot.
        let mut guarded = add(1, 2, 2);
        guarded.guard = Guard::If(4);
        let mut insts = vec![
            add(1, 0, 0),
            guarded,
            add(3, 1, 1),
            Inst {
                op: Op::Exit,
                guard: Guard::Always,
                line: 0,
            },
        ];
        compact(&mut insts, 5);
        let Op::Int { d: r1, .. } = insts[0].op else {
            unreachable!()
        };
        let Op::Int { a: r2, .. } = insts[1].op else {
            unreachable!()
        };
        assert_ne!(Src::Reg(r1), r2);
    }
}
