//! The pre-decoded instruction set the interpreter executes: every register is a slot index,
//! every label an instruction index, every symbol an address, every modifier a field. Decoding
//! happens once per module load ([`crate::decode`]); execution never looks at text.

use crate::ptx::StateSpace;

/// A register slot in a warp's register file.
pub type Reg = u32;

/// A scalar type as an instruction names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ty {
    B8,
    B16,
    B32,
    B64,
    U8,
    U16,
    U32,
    U64,
    S8,
    S16,
    S32,
    S64,
    F16,
    BF16,
    F32,
    F64,
    Pred,
}

impl Ty {
    pub fn parse(s: &str) -> Option<Ty> {
        Some(match s {
            "b8" => Ty::B8,
            "b16" => Ty::B16,
            "b32" => Ty::B32,
            "b64" => Ty::B64,
            "u8" => Ty::U8,
            "u16" => Ty::U16,
            "u32" => Ty::U32,
            "u64" => Ty::U64,
            "s8" => Ty::S8,
            "s16" => Ty::S16,
            "s32" => Ty::S32,
            "s64" => Ty::S64,
            "f16" => Ty::F16,
            "bf16" => Ty::BF16,
            "f32" => Ty::F32,
            "f64" => Ty::F64,
            "pred" => Ty::Pred,
            _ => return None,
        })
    }

    /// Width in bits (1 for a predicate).
    pub fn bits(self) -> u32 {
        match self {
            Ty::Pred => 1,
            Ty::B8 | Ty::U8 | Ty::S8 => 8,
            Ty::B16 | Ty::U16 | Ty::S16 | Ty::F16 | Ty::BF16 => 16,
            Ty::B32 | Ty::U32 | Ty::S32 | Ty::F32 => 32,
            Ty::B64 | Ty::U64 | Ty::S64 | Ty::F64 => 64,
        }
    }

    pub fn bytes(self) -> u32 {
        self.bits().div_ceil(8)
    }

    pub fn is_signed(self) -> bool {
        matches!(self, Ty::S8 | Ty::S16 | Ty::S32 | Ty::S64)
    }

    pub fn is_float(self) -> bool {
        matches!(self, Ty::F16 | Ty::BF16 | Ty::F32 | Ty::F64)
    }

    /// The value's bits, kept in the low `bits()` of a register slot.
    pub fn mask(self) -> u64 {
        match self.bits() {
            64 => u64::MAX,
            n => (1u64 << n) - 1,
        }
    }
}

/// A source operand.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Src {
    Reg(Reg),
    /// The predicate register, negated (`!%p`).
    NotPred(Reg),
    Imm(u64),
    Special(Special),
}

/// Special registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    Tid(u8),
    Ntid(u8),
    Ctaid(u8),
    Nctaid(u8),
    LaneId,
    WarpId,
    NWarpId,
    SmId,
    NSmId,
    /// `%globaltimer`: nanoseconds of virtual time.
    GlobalTimer,
    GlobalTimerLo,
    GlobalTimerHi,
    /// `%clock` / `%clock64`: SM cycles of virtual time.
    Clock,
    Clock64,
    LaneMaskEq,
    LaneMaskLt,
    LaneMaskLe,
    LaneMaskGt,
    LaneMaskGe,
    DynamicSmemSize,
    TotalSmemSize,
}

/// Where an address points, before the base register is added.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Addr {
    pub base: Option<Reg>,
    pub offset: i64,
}

/// Memory-ordering semantics of an access (PTX memory consistency model).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sem {
    /// A plain access.
    Weak,
    /// `.volatile`: like `.relaxed.sys` for ordering, never cached stale.
    Volatile,
    Relaxed,
    Acquire,
    Release,
    AcqRel,
    /// `fence.sc` / `membar`.
    Sc,
}

impl Sem {
    pub fn acquires(self) -> bool {
        matches!(self, Sem::Acquire | Sem::AcqRel | Sem::Sc)
    }
    pub fn releases(self) -> bool {
        matches!(self, Sem::Release | Sem::AcqRel | Sem::Sc)
    }
    /// Morally strong: ordered and coherent between threads (not a plain access).
    pub fn is_strong(self) -> bool {
        !matches!(self, Sem::Weak)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Cta,
    Cluster,
    Gpu,
    Sys,
}

/// The state space of a memory instruction (`Generic` when none is named).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    Generic,
    Global,
    Shared,
    Local,
    Param,
    Const,
}

impl From<StateSpace> for Space {
    fn from(s: StateSpace) -> Space {
        match s {
            StateSpace::Global => Space::Global,
            StateSpace::Shared => Space::Shared,
            StateSpace::Const => Space::Const,
            StateSpace::Local => Space::Local,
            StateSpace::Param => Space::Param,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntOp {
    Add,
    Sub,
    MulLo,
    MulHi,
    Div,
    Rem,
    Min,
    Max,
    And,
    Or,
    Xor,
    Shl,
    Shr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloatOp {
    Add,
    Sub,
    Mul,
    Div,
    Min,
    Max,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnOp {
    Not,
    Neg,
    Abs,
    Popc,
    Clz,
    Brev,
    Cnot,
}

/// One-operand float functions. `Approx` variants name PTX's approximate instructions; the
/// interpreter computes them correctly rounded, which is within every error bound NVIDIA
/// documents for them (see `exec::float`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloatFn {
    Neg,
    Abs,
    Sqrt,
    Rcp,
    RsqrtApprox,
    Ex2Approx,
    Lg2Approx,
    SinApprox,
    CosApprox,
    TanhApprox,
    /// `sqrt.approx` / `rcp.approx`.
    SqrtApprox,
    RcpApprox,
}

/// IEEE rounding of a float operation. Only round-to-nearest-even runs (`.rn`, and the
/// default); other modes are decoding errors until a kernel needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rounding {
    Nearest,
    /// `.rzi`, `.rni`, `.rmi`, `.rpi` on float → integer or float → float conversions.
    IntZero,
    IntNearest,
    IntDown,
    IntUp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// Unsigned-style names for integers (`lo`, `ls`, `hi`, `hs`) map to the above; these are
    /// the float unordered forms.
    Equ,
    Neu,
    Ltu,
    Leu,
    Gtu,
    Geu,
    Num,
    Nan,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoolOp {
    And,
    Or,
    Xor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtomOp {
    Add,
    Min,
    Max,
    Inc,
    Dec,
    And,
    Or,
    Xor,
    Exch,
    Cas,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShflMode {
    Up,
    Down,
    Bfly,
    Idx,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteMode {
    All,
    Any,
    Uni,
    Ballot,
}

/// How a `mad`/`mul` keeps its product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MulMode {
    Lo,
    Hi,
    Wide,
}

/// The guard of an instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    Always,
    If(Reg),
    IfNot(Reg),
}

/// One decoded instruction and the PTX line it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Inst {
    pub op: Op,
    pub guard: Guard,
    pub line: u32,
}

/// The operations the interpreter executes.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Mov {
        ty: Ty,
        d: Reg,
        a: Src,
    },
    /// `mov.b64 %rd, {%r1, %r2}`: parts from lowest to highest.
    Pack {
        d: Reg,
        parts: Vec<Src>,
        part_bits: u32,
    },
    /// `mov.b64 {_, %r2}, %rd`: destinations from lowest to highest (`None` = `_`).
    Unpack {
        a: Src,
        parts: Vec<Option<Reg>>,
        part_bits: u32,
    },
    Int {
        op: IntOp,
        ty: Ty,
        d: Reg,
        a: Src,
        b: Src,
    },
    /// `mul.wide`: the full product of two `ty` values in a register of twice the width.
    MulWide {
        ty: Ty,
        d: Reg,
        a: Src,
        b: Src,
    },
    /// `mad.lo/hi/wide`: `a * b + c`.
    Mad {
        mode: MulMode,
        ty: Ty,
        d: Reg,
        a: Src,
        b: Src,
        c: Src,
    },
    Float {
        op: FloatOp,
        ty: Ty,
        ftz: bool,
        d: Reg,
        a: Src,
        b: Src,
    },
    /// `fma.rn` (and `mad.rn` on floats): fused, one rounding.
    Fma {
        ty: Ty,
        ftz: bool,
        d: Reg,
        a: Src,
        b: Src,
        c: Src,
    },
    /// `bfe`: `c` bits of `a` from bit `b`, zero- or sign-extended.
    Bfe {
        ty: Ty,
        d: Reg,
        a: Src,
        b: Src,
        c: Src,
    },
    /// `bfi`: `b` with `len` bits from `pos` replaced by the low bits of `f`.
    Bfi {
        ty: Ty,
        d: Reg,
        f: Src,
        b: Src,
        pos: Src,
        len: Src,
    },
    Unary {
        op: UnOp,
        ty: Ty,
        d: Reg,
        a: Src,
    },
    FloatUnary {
        f: FloatFn,
        ty: Ty,
        ftz: bool,
        d: Reg,
        a: Src,
    },
    Setp {
        cmp: Cmp,
        ty: Ty,
        d: Reg,
        /// The complement destination of `%p|%q`.
        d_not: Option<Reg>,
        a: Src,
        b: Src,
        combine: Option<(BoolOp, Src)>,
    },
    Selp {
        ty: Ty,
        d: Reg,
        a: Src,
        b: Src,
        p: Src,
    },
    Cvt {
        to: Ty,
        from: Ty,
        rounding: Option<Rounding>,
        ftz: bool,
        sat: bool,
        d: Reg,
        a: Src,
    },
    /// `cvta.shared.u64` (to generic) and `cvta.to.shared.u64`.
    Cvta {
        space: Space,
        to_generic: bool,
        d: Reg,
        a: Src,
    },
    Ld {
        space: Space,
        sem: Sem,
        scope: Scope,
        /// `.nc`: the read-only (non-coherent) path.
        nc: bool,
        ty: Ty,
        /// 1, 2 or 4 destinations (`None` = `_`).
        d: Vec<Option<Reg>>,
        addr: Addr,
    },
    St {
        space: Space,
        sem: Sem,
        scope: Scope,
        ty: Ty,
        src: Vec<Src>,
        addr: Addr,
    },
    Atom {
        space: Space,
        sem: Sem,
        scope: Scope,
        op: AtomOp,
        ty: Ty,
        /// `None` for `red` (no result).
        d: Option<Reg>,
        addr: Addr,
        b: Src,
        c: Option<Src>,
    },
    Bra {
        target: u32,
    },
    /// `bar.sync` / `barrier.sync.aligned` / `bar.cta.sync`: all threads of the CTA (or
    /// `count` of them) meet at barrier `id`.
    BarSync {
        id: Src,
        count: Option<Src>,
    },
    /// `bar.warp.sync mask`.
    WarpSync {
        mask: Src,
    },
    Shfl {
        mode: ShflMode,
        d: Reg,
        p_out: Option<Reg>,
        a: Src,
        b: Src,
        c: Src,
        mask: Src,
    },
    Vote {
        mode: VoteMode,
        d: Reg,
        a: Src,
        mask: Src,
    },
    Fence {
        sem: Sem,
        scope: Scope,
    },
    Nanosleep {
        t: Src,
    },
    /// `prefetch.global.L2 [a]` and friends: no effect on values.
    Prefetch {
        space: Space,
        addr: Addr,
    },
    Trap,
    /// `exit` and `ret` from an entry: the thread ends.
    Exit,
    /// `mbarrier.init.shared{::cta}.b64 [addr], count`: a barrier object in shared memory
    /// that expects `count` arrivals per phase.
    MbarInit {
        addr: Addr,
        count: Src,
    },
    /// `mbarrier.arrive{.expect_tx}.shared{::cta}.b64 state, [addr]{, tx}`: one arrival,
    /// after raising the phase's expected transaction bytes by `tx`. `d` receives an opaque
    /// state (`None` for the `_` sink).
    MbarArrive {
        d: Option<Reg>,
        addr: Addr,
        tx: Option<Src>,
    },
    /// `mbarrier.{try_wait,test_wait}.parity.shared{::cta}.b64 p, [addr], parity`: whether
    /// the phase of that parity has completed. `try_wait` may wait a while for it.
    MbarWait {
        d: Reg,
        addr: Addr,
        parity: Src,
        try_wait: bool,
    },
    /// `cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [dst], [src], size,
    /// [mbar]`: an asynchronous copy of `size` bytes (a multiple of 16) from global to shared
    /// memory that completes `size` transaction bytes on the mbarrier when it lands.
    BulkCopy {
        dst: Addr,
        src: Addr,
        size: Src,
        mbar: Addr,
    },
    /// `cp.async.{ca,cg}.shared.global [dst], [src], bytes`: one thread's asynchronous copy of
    /// 4, 8 or 16 bytes, in the thread's current group.
    AsyncCopy {
        dst: Addr,
        src: Addr,
        bytes: u32,
    },
    /// `cp.async.commit_group`: closes the thread's current group of copies.
    AsyncCommit,
    /// `cp.async.wait_group n` (`wait_all` is 0): waits until at most the `n` most recent of
    /// the thread's committed groups are in flight.
    AsyncWait {
        n: u32,
    },
}
