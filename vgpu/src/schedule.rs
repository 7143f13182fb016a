//! Load hoisting within basic blocks, as ptxas schedules them: a load moves up to just after
//! the last instruction it depends on, so that independent loads are in flight together
//! instead of each waiting behind the arithmetic on the previous one. PTX order is LLVM's, not
//! the order the GPU issues in; without this the timing model would see one load in flight
//! where the hardware has several.
//!
//! Only reorderings that keep every thread's result are made: a load never moves above an
//! instruction that writes a register it reads, reads or writes its destination, or orders
//! memory (stores, atomics, fences, barriers, warp synchronisation, sleeps, and loads that are
//! not plain). Loads through the read-only path (`.nc`) and of parameters may pass plain
//! stores, which cannot write what they read.

use crate::isa::{Guard, Inst, Op, Reg, Sem, Space};
use crate::regalloc::operands;

/// Whether `inst` is a load that may move, and whether it may pass plain stores.
fn movable(inst: &Inst) -> Option<bool> {
    match &inst.op {
        Op::Ld {
            sem: Sem::Weak,
            nc,
            space,
            ..
        } => Some(*nc || *space == Space::Param),
        _ => None,
    }
}

/// Whether a load may not move above `inst` (a memory-ordering instruction).
fn orders_memory(inst: &Inst, passes_stores: bool) -> bool {
    match &inst.op {
        Op::St { sem, .. } => !passes_stores || *sem != Sem::Weak,
        Op::Ld { sem, .. } => *sem != Sem::Weak,
        Op::Atom { .. }
        | Op::Fence { .. }
        | Op::BarSync { .. }
        | Op::WarpSync { .. }
        | Op::Nanosleep { .. }
        | Op::Trap
        | Op::Exit
        | Op::Bra { .. }
        | Op::MbarInit { .. }
        | Op::MbarArrive { .. }
        | Op::MbarWait { .. }
        | Op::BulkCopy { .. }
        | Op::AsyncCopy { .. }
        | Op::AsyncCommit
        | Op::AsyncWait { .. } => true,
        _ => false,
    }
}

/// Reorders `insts` in place; `starts` marks the instructions that begin a basic block (branch
/// targets), which nothing moves across. Returns how many loads moved.
pub fn hoist_loads(insts: &mut [Inst], starts: &[bool]) -> usize {
    let regs: Vec<(Vec<Reg>, Vec<Reg>)> = insts.iter().map(operands).collect();
    let mut order: Vec<usize> = (0..insts.len()).collect();
    let mut moved = 0;
    for i in 0..order.len() {
        let here = order[i];
        let Some(passes_stores) = movable(&insts[here]) else {
            continue;
        };
        let (uses, defs) = &regs[here];
        let mut j = i;
        while j > 0 && !starts[order[j]] {
            let prev = order[j - 1];
            let (p_uses, p_defs) = &regs[prev];
            let conflict = orders_memory(&insts[prev], passes_stores)
                || p_defs.iter().any(|r| uses.contains(r) || defs.contains(r))
                || p_uses.iter().any(|r| defs.contains(r))
                // A guarded instruction's old value survives: keep guards in place.
                || insts[prev].guard != Guard::Always && p_defs.iter().any(|r| defs.contains(r));
            if conflict {
                break;
            }
            j -= 1;
        }
        if j < i {
            order[j..=i].rotate_right(1);
            moved += 1;
        }
    }
    let reordered: Vec<Inst> = order.iter().map(|&k| insts[k].clone()).collect();
    insts.clone_from_slice(&reordered);
    moved
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa::{Addr, IntOp, Src, Ty};

    fn ld(d: Reg, base: Reg) -> Inst {
        Inst {
            op: Op::Ld {
                space: Space::Global,
                sem: Sem::Weak,
                scope: crate::isa::Scope::Gpu,
                nc: true,
                ty: Ty::U32,
                d: vec![Some(d)],
                addr: Addr {
                    base: Some(base),
                    offset: 0,
                },
            },
            guard: Guard::Always,
            line: 0,
        }
    }

    fn xor(d: Reg, a: Reg) -> Inst {
        Inst {
            op: Op::Int {
                op: IntOp::Xor,
                ty: Ty::B32,
                d,
                a: Src::Reg(a),
                b: Src::Reg(d),
            },
            guard: Guard::Always,
            line: 0,
        }
    }

    #[test]
    fn independent_loads_move_ahead_of_the_arithmetic_on_earlier_ones() {
        // ld r1, [r10]; xor r5 ^= r1; ld r2, [r11]; xor r5 ^= r2
        let mut insts = vec![ld(1, 10), xor(5, 1), ld(2, 11), xor(5, 2)];
        let starts = vec![true, false, false, false];
        assert_eq!(hoist_loads(&mut insts, &starts), 1);
        assert!(matches!(insts[1].op, Op::Ld { .. }), "{:?}", insts[1]);
        // A load whose address depends on an earlier result stays after it.
        let mut chain = vec![ld(1, 10), xor(5, 1), ld(2, 5)];
        let starts = vec![true, false, false];
        assert_eq!(hoist_loads(&mut chain, &starts), 0);
    }
}
