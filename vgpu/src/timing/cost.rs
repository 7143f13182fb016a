//! What one PTX instruction costs a processing block: the pipe it uses, the SASS instructions
//! it becomes (each takes an issue slot), the cycles it holds its pipe, and when its result can
//! be read. PTX is not SASS: ptxas turns a 64-bit add into two instructions and `div.u32` into
//! a dozen, removes most moves and folds parameter loads into operands. The counts below are
//! ptxas's usual lowering for sm_90 as read off the decode step's SASS (`cargo xtask ptx`,
//! `cuobjdump -sass` of it): estimates, marked A in `params.rs`'s terms.

use super::params::Params;
use crate::isa::{FloatFn, IntOp, MulMode, Op, Ty};

/// Execution pipes of a processing block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pipe {
    /// FP32 and IMAD (32 lanes).
    Fma = 0,
    /// INT32, logic, comparisons, conversions (16 lanes).
    Alu = 1,
    /// Special functions (4 lanes).
    Mufu = 2,
    /// Loads, stores, shuffles: one issue per instruction; the SM's memory model does the rest.
    Lsu = 3,
    /// Branches and everything that needs no pipe time.
    Other = 4,
}

pub const PIPES: usize = 5;

/// The cost of one instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    pub pipe: Pipe,
    /// SASS instructions: issue slots of the scheduler.
    pub sass: u32,
    /// Cycles of pipe occupancy (all its SASS instructions).
    pub occupancy: u32,
    /// Cycles from issue until its result can be read.
    pub latency: u32,
}

fn wide(ty: Ty) -> bool {
    ty.bits() == 64
}

/// The cost of `op` (memory and synchronisation instructions get their issue cost here; their
/// latency comes from the memory model and the scheduler).
pub fn cost(op: &Op, p: &Params) -> Cost {
    let alu = |sass: u32| Cost {
        pipe: Pipe::Alu,
        sass,
        occupancy: sass * p.alu_cycles,
        latency: p.alu_latency + 2 * (sass - 1),
    };
    let fma = |sass: u32| Cost {
        pipe: Pipe::Fma,
        sass,
        occupancy: sass * p.fma_cycles,
        latency: p.alu_latency + 2 * (sass - 1),
    };
    let mufu = |extra: u32| Cost {
        pipe: Pipe::Mufu,
        sass: 1 + extra,
        occupancy: p.mufu_cycles + extra * p.fma_cycles,
        latency: p.mufu_latency + 4 * extra,
    };
    let lsu = Cost {
        pipe: Pipe::Lsu,
        sass: 1,
        occupancy: 1,
        latency: 0,
    };
    let free = |latency: u32| Cost {
        pipe: Pipe::Other,
        sass: 1,
        occupancy: 0,
        latency,
    };
    match op {
        // Most moves vanish in register allocation; some remain.
        Op::Mov { .. } | Op::Pack { .. } | Op::Unpack { .. } => free(2),
        Op::Int { op, ty, .. } => match (op, wide(*ty)) {
            (IntOp::Div | IntOp::Rem, false) => Cost {
                latency: 40,
                ..alu(12)
            },
            (IntOp::Div | IntOp::Rem, true) => Cost {
                latency: 80,
                ..alu(40)
            },
            (IntOp::MulLo | IntOp::MulHi, false) => fma(1),
            (IntOp::MulLo | IntOp::MulHi, true) => fma(3),
            (_, true) => alu(2),
            (_, false) => alu(1),
        },
        Op::MulWide { .. } => fma(1),
        Op::Mad { mode, ty, .. } => match (mode, wide(*ty)) {
            (MulMode::Wide, _) | (_, false) => fma(1),
            (_, true) => fma(3),
        },
        Op::Float { ty, op, .. } => match (ty, op) {
            (Ty::F64, _) => fma(8),
            (_, crate::isa::FloatOp::Div) => Cost {
                latency: 30,
                ..mufu(8)
            },
            _ => fma(1),
        },
        Op::Fma { ty, .. } => {
            if *ty == Ty::F64 {
                fma(8)
            } else {
                fma(1)
            }
        }
        Op::Unary { ty, .. } => alu(if wide(*ty) { 2 } else { 1 }),
        Op::Bfe { .. } | Op::Bfi { .. } => alu(1),
        Op::FloatUnary { f, .. } => match f {
            FloatFn::Neg | FloatFn::Abs => fma(1),
            // Correctly rounded division-like functions: an approximation then Newton steps.
            FloatFn::Sqrt | FloatFn::Rcp => Cost {
                latency: 30,
                ..mufu(6)
            },
            // ex2 of a scaled input (an FMUL first), the rest one MUFU instruction.
            FloatFn::Ex2Approx => mufu(1),
            _ => mufu(0),
        },
        Op::Setp { ty, .. } => alu(if wide(*ty) { 2 } else { 1 }),
        Op::Selp { ty, .. } => alu(if wide(*ty) { 2 } else { 1 }),
        Op::Cvt { to, from, .. } => {
            if to.is_float() != from.is_float() || to.bits() != from.bits() && to.is_float() {
                // I2F / F2I run at quarter rate.
                Cost {
                    occupancy: 4,
                    latency: 6,
                    ..alu(1)
                }
            } else {
                free(2)
            }
        }
        Op::Cvta { .. } => alu(1),
        Op::Ld { space, .. } if *space == crate::isa::Space::Param => free(4),
        Op::Ld { .. }
        | Op::St { .. }
        | Op::Atom { .. }
        | Op::Prefetch { .. }
        | Op::Fence { .. }
        | Op::Nanosleep { .. }
        | Op::BarSync { .. }
        | Op::MbarInit { .. }
        | Op::MbarArrive { .. }
        | Op::MbarWait { .. }
        | Op::BulkCopy { .. }
        | Op::AsyncCopy { .. }
        | Op::AsyncCommit
        | Op::AsyncWait { .. } => lsu,
        Op::Shfl { .. } => Cost {
            latency: p.shfl_latency,
            occupancy: 2,
            ..lsu
        },
        Op::WarpSync { .. } => free(6),
        Op::Vote { .. } => free(6),
        Op::Bra { .. } => Cost {
            pipe: Pipe::Other,
            sass: 1,
            occupancy: 0,
            latency: 0,
        },
        Op::Trap | Op::Exit => free(0),
    }
}
