//! Syntax tree → pre-decoded program. Every opcode, modifier and operand form is checked here:
//! one the interpreter does not implement is an error naming the PTX line, never a silent
//! no-op.

use std::collections::HashMap;

use crate::isa::*;
use crate::memory::SHARED_WINDOW;
use crate::ptx::{self, AddressBase, Operand, StateSpace, Statement};

/// A decoding error: the PTX line and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("PTX line {line}: {message}")]
pub struct DecodeError {
    pub line: u32,
    pub message: String,
}

type Result<T> = std::result::Result<T, DecodeError>;

fn err<T>(line: u32, message: impl Into<String>) -> Result<T> {
    Err(DecodeError {
        line,
        message: message.into(),
    })
}

/// A decoded function: its code, register count and parameter layout.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub name: String,
    pub is_entry: bool,
    pub insts: Vec<Inst>,
    /// For every instruction, its immediate post-dominator: where lanes that diverge at a
    /// branch there meet again. `insts.len() - 1` (the final `exit`) when only the end of the
    /// kernel joins the paths.
    pub ipdom: Vec<u32>,
    /// Register slots a warp needs.
    pub regs: u32,
    /// Bytes of the `.param` space and each parameter's (offset, bytes).
    pub param_bytes: u32,
    pub params: Vec<(u32, u32)>,
    /// Bytes of static shared memory (module and function `.shared` variables); dynamic
    /// shared memory starts at `dynamic_shared_offset`.
    pub static_shared_bytes: u32,
    pub dynamic_shared_offset: u32,
    pub line: u32,
}

/// Where the module's `.global`/`.const` variables live in device memory (the loader
/// allocates them before decoding).
pub type GlobalAddresses = HashMap<String, u64>;

/// Layout of the module-scope `.shared` variables: (offset, align) by name, and the static end.
struct SharedLayout {
    offsets: HashMap<String, u64>,
    static_end: u64,
    dynamic: Option<(String, u32)>,
}

fn shared_layout(module: &ptx::Module, function: &ptx::Function) -> SharedLayout {
    let mut offsets = HashMap::new();
    let mut end = 0u64;
    let mut dynamic = None;
    let vars = module
        .variables
        .iter()
        .chain(function.variables.iter())
        .filter(|v| v.space == StateSpace::Shared);
    for v in vars {
        if v.count.is_none() {
            dynamic = Some((v.name.clone(), v.align));
            continue;
        }
        let at = end.next_multiple_of(v.align.max(1) as u64);
        offsets.insert(v.name.clone(), at);
        end = at + v.bytes();
    }
    if let Some((name, align)) = &dynamic {
        let at = end.next_multiple_of((*align).max(1) as u64);
        offsets.insert(name.clone(), at);
    }
    SharedLayout {
        offsets,
        static_end: end,
        dynamic,
    }
}

/// Decodes every function of `module`.
pub fn decode_module(module: &ptx::Module, globals: &GlobalAddresses) -> Result<Vec<Kernel>> {
    module
        .functions
        .iter()
        .map(|f| decode_function(module, f, globals))
        .collect()
}

struct Decoder<'a> {
    regs: HashMap<String, (Reg, Ty)>,
    labels: HashMap<&'a str, u32>,
    params: HashMap<&'a str, u64>,
    shared: SharedLayout,
    globals: &'a GlobalAddresses,
    locals: HashMap<&'a str, u64>,
}

fn decode_function(
    module: &ptx::Module,
    f: &ptx::Function,
    globals: &GlobalAddresses,
) -> Result<Kernel> {
    let mut regs = HashMap::new();
    let mut next: Reg = 0;
    for d in &f.regs {
        let ty = Ty::parse(d.ty.trim_start_matches('.')).ok_or_else(|| DecodeError {
            line: d.line,
            message: format!("unknown register type `{}`", d.ty),
        })?;
        match d.count {
            Some(n) => {
                for i in 0..n {
                    regs.insert(format!("{}{}", d.prefix, i), (next, ty));
                    next += 1;
                }
            }
            None => {
                regs.insert(d.prefix.clone(), (next, ty));
                next += 1;
            }
        }
    }
    let mut labels = HashMap::new();
    let mut index = 0u32;
    for s in &f.body {
        match s {
            Statement::Label(l) => {
                labels.insert(l.as_str(), index);
            }
            Statement::Instruction(_) => index += 1,
        }
    }
    let offsets = f.param_offsets();
    let mut params: HashMap<&str, u64> = f
        .params
        .iter()
        .zip(&offsets)
        .map(|(p, &o)| (p.name.as_str(), o as u64))
        .collect();
    // A function's return values live in its parameter space after the parameters.
    let mut end = f.param_bytes();
    for r in &f.returns {
        let at = end.next_multiple_of(r.align.max(1));
        params.insert(r.name.as_str(), at as u64);
        end = at + r.bytes;
    }
    let mut local_end = 0u64;
    let mut locals = HashMap::new();
    for v in f.variables.iter().filter(|v| v.space == StateSpace::Local) {
        let at = local_end.next_multiple_of(v.align.max(1) as u64);
        locals.insert(v.name.as_str(), at);
        local_end = at + v.bytes();
    }
    if local_end > 0 {
        return err(
            f.line,
            format!(
                "`{}` uses local memory (a stack frame), which is not supported",
                f.name
            ),
        );
    }
    let shared = shared_layout(module, f);
    let static_shared_bytes = shared.static_end as u32;
    let dynamic_shared_offset = match &shared.dynamic {
        Some((name, _)) => shared.offsets[name] as u32,
        None => static_shared_bytes,
    };
    let decoder = Decoder {
        regs,
        labels,
        params,
        shared,
        globals,
        locals,
    };
    let mut insts = Vec::with_capacity(index as usize);
    for s in &f.body {
        if let Statement::Instruction(i) = s {
            insts.push(decoder.instruction(i)?);
        }
    }
    // Falling off the end of a kernel ends the thread.
    insts.push(Inst {
        op: Op::Exit,
        guard: Guard::Always,
        line: f.line,
    });
    // Loads ahead of the arithmetic that does not feed them, as ptxas schedules them (block
    // starts, the branch targets, stay where they are).
    let mut starts = vec![false; insts.len()];
    starts[0] = true;
    for i in &insts {
        if let Op::Bra { target } = i.op {
            starts[target as usize] = true;
        }
    }
    crate::schedule::hoist_loads(&mut insts, &starts);
    let ipdom = post_dominators(&insts);
    let regs = crate::regalloc::compact(&mut insts, next);
    Ok(Kernel {
        name: f.name.clone(),
        is_entry: f.is_entry,
        ipdom,
        insts,
        regs,
        param_bytes: f.param_bytes(),
        params: offsets
            .iter()
            .zip(&f.params)
            .map(|(&o, p)| (o, p.bytes))
            .collect(),
        static_shared_bytes,
        dynamic_shared_offset,
        line: f.line,
    })
}

/// The immediate post-dominator of every instruction (Cooper, Harvey & Kennedy's iterative
/// algorithm on the reversed control-flow graph). The last instruction is the kernel's final
/// `exit`, which every path that leaves the kernel is treated as reaching; instructions from
/// which no exit is reachable (a `trap`'s path, an endless loop) get that one too.
fn post_dominators(insts: &[Inst]) -> Vec<u32> {
    let n = insts.len();
    let exit = n - 1;
    let successors = |i: usize| -> Vec<usize> {
        let guarded = inst_guarded(&insts[i]);
        match insts[i].op {
            Op::Bra { target } if guarded => vec![target as usize, i + 1],
            Op::Bra { target } => vec![target as usize],
            Op::Exit if i == exit => vec![],
            Op::Exit if guarded => vec![i + 1, exit],
            Op::Exit => vec![exit],
            // A trap ends the whole launch: its paths join nothing (like `unreachable`), so
            // a panic branch does not move the join point of the code around it.
            Op::Trap if guarded => vec![i + 1],
            Op::Trap => vec![],
            _ => vec![i + 1],
        }
    };
    let succ: Vec<Vec<usize>> = (0..n).map(successors).collect();
    let mut preds = vec![Vec::new(); n];
    for (i, s) in succ.iter().enumerate() {
        for &t in s {
            preds[t].push(i);
        }
    }
    // Post-order of the reversed graph from the exit (its edges go from a node to its
    // forward predecessors).
    const UNSEEN: usize = usize::MAX;
    let mut order = vec![UNSEEN; n];
    let mut postorder = Vec::with_capacity(n);
    let mut stack = vec![(exit, 0usize)];
    order[exit] = 0;
    while let Some((node, next)) = stack.pop() {
        if next < preds[node].len() {
            stack.push((node, next + 1));
            let p = preds[node][next];
            if order[p] == UNSEEN {
                order[p] = 0;
                stack.push((p, 0));
            }
        } else {
            order[node] = postorder.len();
            postorder.push(node);
        }
    }
    let mut ipdom = vec![UNSEEN; n];
    ipdom[exit] = exit;
    let intersect = |ipdom: &[usize], mut a: usize, mut b: usize| {
        while a != b {
            while order[a] < order[b] {
                a = ipdom[a];
            }
            while order[b] < order[a] {
                b = ipdom[b];
            }
        }
        a
    };
    let mut changed = true;
    while changed {
        changed = false;
        for &node in postorder.iter().rev().filter(|&&x| x != exit) {
            let mut new = UNSEEN;
            for &s in &succ[node] {
                if ipdom[s] == UNSEEN {
                    continue;
                }
                new = if new == UNSEEN {
                    s
                } else {
                    intersect(&ipdom, s, new)
                };
            }
            if new != UNSEEN && ipdom[node] != new {
                ipdom[node] = new;
                changed = true;
            }
        }
    }
    ipdom
        .into_iter()
        .map(|d| if d == UNSEEN { exit as u32 } else { d as u32 })
        .collect()
}

fn inst_guarded(i: &Inst) -> bool {
    i.guard != Guard::Always
}

/// The modifiers of an opcode, consumed as the decoder recognises them; whatever is left at
/// the end is an unknown modifier.
struct Mods<'s> {
    opcode: &'s str,
    parts: Vec<&'s str>,
    line: u32,
}

impl<'s> Mods<'s> {
    fn new(opcode: &'s str, line: u32) -> (&'s str, Mods<'s>) {
        let mut it = opcode.split('.');
        let base = it.next().unwrap_or("");
        (
            base,
            Mods {
                opcode,
                parts: it.collect(),
                line,
            },
        )
    }

    /// Removes `m` if present.
    fn take(&mut self, m: &str) -> bool {
        match self.parts.iter().position(|p| *p == m) {
            Some(i) => {
                self.parts.remove(i);
                true
            }
            None => false,
        }
    }

    /// Removes the first of `options` present and returns it.
    fn take_any(&mut self, options: &[&'s str]) -> Option<&'s str> {
        let i = self.parts.iter().position(|p| options.contains(p))?;
        Some(self.parts.remove(i))
    }

    /// Removes and returns every type modifier, in order.
    fn take_types(&mut self) -> Vec<Ty> {
        let mut out = Vec::new();
        self.parts.retain(|p| match Ty::parse(p) {
            Some(t) => {
                out.push(t);
                false
            }
            None => true,
        });
        out
    }

    fn one_type(&mut self) -> Result<Ty> {
        let t = self.take_types();
        match t.as_slice() {
            [t] => Ok(*t),
            _ => err(
                self.line,
                format!("`{}` needs exactly one type", self.opcode),
            ),
        }
    }

    fn scope(&mut self) -> Scope {
        match self.take_any(&["cta", "cluster", "gpu", "sys"]) {
            Some("cta") => Scope::Cta,
            Some("cluster") => Scope::Cluster,
            Some("sys") => Scope::Sys,
            _ => Scope::Gpu,
        }
    }

    fn space(&mut self) -> Space {
        match self.take_any(&["global", "shared", "local", "param", "const", "shared::cta"]) {
            Some("global") => Space::Global,
            Some("shared" | "shared::cta") => Space::Shared,
            Some("local") => Space::Local,
            Some("param") => Space::Param,
            Some("const") => Space::Const,
            _ => Space::Generic,
        }
    }

    fn ftz(&mut self) -> bool {
        self.take("ftz")
    }

    /// Float rounding: `.rn` or none; other IEEE modes are not implemented.
    fn float_rounding(&mut self) -> Result<()> {
        self.take("rn");
        if let Some(m) = self.take_any(&["rz", "rm", "rp"]) {
            return err(
                self.line,
                format!(
                    "rounding mode `.{m}` of `{}` is not implemented",
                    self.opcode
                ),
            );
        }
        Ok(())
    }

    fn done(self) -> Result<()> {
        match self.parts.first() {
            None => Ok(()),
            Some(m) => err(
                self.line,
                format!("unknown modifier `.{m}` in `{}`", self.opcode),
            ),
        }
    }
}

fn ops_count(i: &ptx::Instruction, n: usize) -> Result<()> {
    if i.operands.len() != n {
        return err(
            i.line,
            format!(
                "`{}` takes {n} operands, {} given",
                i.opcode,
                i.operands.len()
            ),
        );
    }
    Ok(())
}

impl<'a> Decoder<'a> {
    fn reg(&self, name: &str, line: u32) -> Result<Reg> {
        self.regs.get(name).map(|r| r.0).ok_or_else(|| DecodeError {
            line,
            message: format!("undeclared register `{name}`"),
        })
    }

    fn dst(&self, o: &Operand, line: u32) -> Result<Reg> {
        match o {
            Operand::Reg(n) => self.reg(n, line),
            other => err(
                line,
                format!("a destination must be a register, not {other:?}"),
            ),
        }
    }

    fn dst_or_sink(&self, o: &Operand, line: u32) -> Result<Option<Reg>> {
        match o {
            Operand::Sink => Ok(None),
            o => self.dst(o, line).map(Some),
        }
    }

    fn special(name: &str) -> Option<Special> {
        let dim = |s: &str| match s {
            "x" => Some(0u8),
            "y" => Some(1),
            "z" => Some(2),
            _ => None,
        };
        if let Some((base, d)) = name.split_once('.') {
            let d = dim(d)?;
            return Some(match base {
                "%tid" => Special::Tid(d),
                "%ntid" => Special::Ntid(d),
                "%ctaid" => Special::Ctaid(d),
                "%nctaid" => Special::Nctaid(d),
                _ => return None,
            });
        }
        Some(match name {
            "%laneid" => Special::LaneId,
            "%warpid" => Special::WarpId,
            "%nwarpid" => Special::NWarpId,
            "%smid" => Special::SmId,
            "%nsmid" => Special::NSmId,
            "%globaltimer" => Special::GlobalTimer,
            "%globaltimer_lo" => Special::GlobalTimerLo,
            "%globaltimer_hi" => Special::GlobalTimerHi,
            "%clock" => Special::Clock,
            "%clock64" => Special::Clock64,
            "%lanemask_eq" => Special::LaneMaskEq,
            "%lanemask_lt" => Special::LaneMaskLt,
            "%lanemask_le" => Special::LaneMaskLe,
            "%lanemask_gt" => Special::LaneMaskGt,
            "%lanemask_ge" => Special::LaneMaskGe,
            "%dynamic_smem_size" => Special::DynamicSmemSize,
            "%total_smem_size" => Special::TotalSmemSize,
            _ => return None,
        })
    }

    /// The value of a symbol used as an operand: its address in its own state space.
    fn symbol_value(&self, name: &str, offset: i64, line: u32) -> Result<u64> {
        let base = if let Some(&o) = self.params.get(name) {
            o
        } else if let Some(&o) = self.shared.offsets.get(name) {
            o
        } else if let Some(&a) = self.globals.get(name) {
            a
        } else if let Some(&o) = self.locals.get(name) {
            o
        } else {
            return err(line, format!("unknown symbol `{name}`"));
        };
        Ok(base.wrapping_add(offset as u64))
    }

    fn src(&self, o: &Operand, line: u32) -> Result<Src> {
        Ok(match o {
            Operand::Reg(n) => match self.regs.get(n.as_str()) {
                Some(&(r, _)) => Src::Reg(r),
                None => Src::Special(Self::special(n).ok_or_else(|| DecodeError {
                    line,
                    message: format!("undeclared register `{n}`"),
                })?),
            },
            Operand::Not(inner) => match inner.as_ref() {
                Operand::Reg(n) => Src::NotPred(self.reg(n, line)?),
                _ => return err(line, "`!` applies to predicate registers only"),
            },
            Operand::Int(v) => Src::Imm(*v as u64),
            Operand::F32(bits) => Src::Imm(*bits as u64),
            Operand::F64(bits) => Src::Imm(*bits),
            Operand::Symbol(name, off) => Src::Imm(self.symbol_value(name, *off, line)?),
            other => return err(line, format!("unsupported source operand {other:?}")),
        })
    }

    /// An address operand for an access in `space`.
    fn addr(&self, o: &Operand, space: Space, line: u32) -> Result<Addr> {
        let Operand::Address(base, offset) = o else {
            return err(line, format!("expected an address `[...]`, found {o:?}"));
        };
        Ok(match base {
            AddressBase::Reg(r) => Addr {
                base: Some(self.reg(r, line)?),
                offset: *offset,
            },
            AddressBase::Absolute => Addr {
                base: None,
                offset: *offset,
            },
            AddressBase::Symbol(name) => {
                let mut value = self.symbol_value(name, *offset, line)?;
                // A shared variable named in a generic access means its generic address.
                if space == Space::Generic && self.shared.offsets.contains_key(name.as_str()) {
                    value = value.wrapping_add(SHARED_WINDOW);
                }
                Addr {
                    base: None,
                    offset: value as i64,
                }
            }
        })
    }

    fn guard(&self, i: &ptx::Instruction) -> Result<Guard> {
        Ok(match &i.guard {
            None => Guard::Always,
            Some((p, false)) => Guard::If(self.reg(p, i.line)?),
            Some((p, true)) => Guard::IfNot(self.reg(p, i.line)?),
        })
    }

    fn instruction(&self, i: &ptx::Instruction) -> Result<Inst> {
        let line = i.line;
        let (base, mut m) = Mods::new(&i.opcode, line);
        let o = &i.operands;
        let op = match base {
            "mov" => self.mov(i, &mut m)?,
            "add" | "sub" | "mul" | "div" | "rem" | "min" | "max" | "and" | "or" | "xor"
            | "shl" | "shr" => self.binary(base, i, &mut m)?,
            "mad" | "fma" => self.mad(base, i, &mut m)?,
            "not" | "neg" | "abs" | "popc" | "clz" | "brev" | "cnot" | "sqrt" | "rcp" | "rsqrt"
            | "ex2" | "lg2" | "sin" | "cos" | "tanh" => self.unary(base, i, &mut m)?,
            "setp" => self.setp(i, &mut m)?,
            "bfe" => {
                ops_count(i, 4)?;
                Op::Bfe {
                    ty: m.one_type()?,
                    d: self.dst(&o[0], line)?,
                    a: self.src(&o[1], line)?,
                    b: self.src(&o[2], line)?,
                    c: self.src(&o[3], line)?,
                }
            }
            "bfi" => {
                ops_count(i, 5)?;
                Op::Bfi {
                    ty: m.one_type()?,
                    d: self.dst(&o[0], line)?,
                    f: self.src(&o[1], line)?,
                    b: self.src(&o[2], line)?,
                    pos: self.src(&o[3], line)?,
                    len: self.src(&o[4], line)?,
                }
            }
            "selp" => {
                ops_count(i, 4)?;
                Op::Selp {
                    ty: m.one_type()?,
                    d: self.dst(&o[0], line)?,
                    a: self.src(&o[1], line)?,
                    b: self.src(&o[2], line)?,
                    p: self.src(&o[3], line)?,
                }
            }
            "cvt" => self.cvt(i, &mut m)?,
            "cvta" => {
                ops_count(i, 2)?;
                let to = m.take("to");
                let space = m.space();
                if space == Space::Generic {
                    return err(line, "`cvta` needs a state space");
                }
                m.take_types();
                Op::Cvta {
                    space,
                    to_generic: !to,
                    d: self.dst(&o[0], line)?,
                    a: self.src(&o[1], line)?,
                }
            }
            "ld" | "ldu" => self.load(i, &mut m)?,
            "st" => self.store(i, &mut m)?,
            "atom" | "red" => self.atom(base == "red", i, &mut m)?,
            "bra" => {
                m.take("uni");
                ops_count(i, 1)?;
                let Operand::Symbol(label, 0) = &o[0] else {
                    return err(line, "`bra` needs a label");
                };
                let target = *self.labels.get(label.as_str()).ok_or_else(|| DecodeError {
                    line,
                    message: format!("unknown label `{label}`"),
                })?;
                Op::Bra { target }
            }
            "bar" | "barrier" => self.barrier(i, &mut m)?,
            "mbarrier" => self.mbarrier(i, &mut m)?,
            "cp" => self.async_copy(i, &mut m)?,
            "shfl" => self.shfl(i, &mut m)?,
            "vote" => {
                m.take("sync");
                let mode = match m.take_any(&["all", "any", "uni", "ballot"]) {
                    Some("all") => VoteMode::All,
                    Some("any") => VoteMode::Any,
                    Some("uni") => VoteMode::Uni,
                    Some("ballot") => VoteMode::Ballot,
                    _ => return err(line, "`vote` needs .all, .any, .uni or .ballot"),
                };
                m.take_types();
                ops_count(i, 3)?;
                Op::Vote {
                    mode,
                    d: self.dst(&o[0], line)?,
                    a: self.src(&o[1], line)?,
                    mask: self.src(&o[2], line)?,
                }
            }
            "fence" if m.take("mbarrier_init") || m.take("proxy") => {
                // `fence.mbarrier_init.release.cluster` (an mbarrier's initialisation before
                // the copy engine uses it) and `fence.proxy.async{.shared::cta}` (ordering
                // between plain and asynchronous accesses to shared memory): the interpreter
                // runs asynchronous copies through the same memory, so these order nothing
                // more; a block-scope fence of no cost.
                m.take_any(&["release"]);
                m.take_any(&["async"]);
                m.space();
                m.scope();
                Op::Fence {
                    sem: Sem::Weak,
                    scope: Scope::Cta,
                }
            }
            "fence" => {
                let sem = match m.take_any(&["sc", "acq_rel", "acquire", "release"]) {
                    Some("acq_rel") => Sem::AcqRel,
                    Some("acquire") => Sem::Acquire,
                    Some("release") => Sem::Release,
                    _ => Sem::Sc,
                };
                let scope = m.scope();
                Op::Fence { sem, scope }
            }
            "membar" => {
                let scope = match m.take_any(&["cta", "gl", "sys"]) {
                    Some("cta") => Scope::Cta,
                    Some("sys") => Scope::Sys,
                    _ => Scope::Gpu,
                };
                Op::Fence {
                    sem: Sem::Sc,
                    scope,
                }
            }
            "nanosleep" => {
                m.take_types();
                ops_count(i, 1)?;
                Op::Nanosleep {
                    t: self.src(&o[0], line)?,
                }
            }
            "prefetch" | "prefetchu" => {
                let space = m.space();
                m.take_any(&["L1", "L2", "L2::evict_last", "L2::evict_normal"]);
                ops_count(i, 1)?;
                Op::Prefetch {
                    space,
                    addr: self.addr(&o[0], space, line)?,
                }
            }
            "trap" => Op::Trap,
            "exit" | "ret" => {
                m.take("uni");
                Op::Exit
            }
            "call" => {
                return err(
                    line,
                    "`call` is not supported: the interpreter runs fully inlined kernels",
                );
            }
            other => {
                return err(
                    line,
                    format!("unknown instruction `{other}` (`{}`)", i.opcode),
                );
            }
        };
        m.done()?;
        Ok(Inst {
            op,
            guard: self.guard(i)?,
            line,
        })
    }

    fn mov(&self, i: &ptx::Instruction, m: &mut Mods) -> Result<Op> {
        ops_count(i, 2)?;
        let ty = m.one_type()?;
        let line = i.line;
        let o = &i.operands;
        Ok(match (&o[0], &o[1]) {
            (Operand::Vector(parts), src) => {
                let n = parts.len() as u32;
                if n == 0 || ty.bits() % n != 0 {
                    return err(line, "a vector `mov` must split its type evenly");
                }
                Op::Unpack {
                    a: self.src(src, line)?,
                    parts: parts
                        .iter()
                        .map(|p| self.dst_or_sink(p, line))
                        .collect::<Result<_>>()?,
                    part_bits: ty.bits() / n,
                }
            }
            (d, Operand::Vector(parts)) => {
                let n = parts.len() as u32;
                if n == 0 || ty.bits() % n != 0 {
                    return err(line, "a vector `mov` must split its type evenly");
                }
                Op::Pack {
                    d: self.dst(d, line)?,
                    parts: parts
                        .iter()
                        .map(|p| self.src(p, line))
                        .collect::<Result<_>>()?,
                    part_bits: ty.bits() / n,
                }
            }
            (d, a) => Op::Mov {
                ty,
                d: self.dst(d, line)?,
                a: self.src(a, line)?,
            },
        })
    }

    fn binary(&self, base: &str, i: &ptx::Instruction, m: &mut Mods) -> Result<Op> {
        ops_count(i, 3)?;
        let line = i.line;
        let o = &i.operands;
        let ftz = m.ftz();
        let approx = m.take("approx") || m.take("full");
        m.float_rounding()?;
        let mode = m.take_any(&["lo", "hi", "wide"]);
        let ty = m.one_type()?;
        let (d, a, b) = (
            self.dst(&o[0], line)?,
            self.src(&o[1], line)?,
            self.src(&o[2], line)?,
        );
        if ty.is_float() {
            if !matches!(ty, Ty::F32 | Ty::F64) {
                return err(line, format!("`{}` on {ty:?} is not implemented", i.opcode));
            }
            if approx && base != "div" {
                return err(line, format!("`{}` is not implemented", i.opcode));
            }
            let op = match base {
                "add" => FloatOp::Add,
                "sub" => FloatOp::Sub,
                "mul" => FloatOp::Mul,
                "div" => FloatOp::Div,
                "min" => FloatOp::Min,
                "max" => FloatOp::Max,
                _ => return err(line, format!("`{}` has no float form", i.opcode)),
            };
            return Ok(Op::Float {
                op,
                ty,
                ftz,
                d,
                a,
                b,
            });
        }
        if ftz || approx {
            return err(
                line,
                format!("`{}`: float modifiers on an integer type", i.opcode),
            );
        }
        if base == "mul" && mode == Some("wide") {
            return Ok(Op::MulWide { ty, d, a, b });
        }
        let op = match (base, mode) {
            ("add", None) => IntOp::Add,
            ("sub", None) => IntOp::Sub,
            ("mul", Some("lo")) => IntOp::MulLo,
            ("mul", Some("hi")) => IntOp::MulHi,
            ("div", None) => IntOp::Div,
            ("rem", None) => IntOp::Rem,
            ("min", None) => IntOp::Min,
            ("max", None) => IntOp::Max,
            ("and", None) => IntOp::And,
            ("or", None) => IntOp::Or,
            ("xor", None) => IntOp::Xor,
            ("shl", None) => IntOp::Shl,
            ("shr", None) => IntOp::Shr,
            _ => return err(line, format!("`{}` is not implemented", i.opcode)),
        };
        Ok(Op::Int { op, ty, d, a, b })
    }

    fn mad(&self, base: &str, i: &ptx::Instruction, m: &mut Mods) -> Result<Op> {
        ops_count(i, 4)?;
        let line = i.line;
        let o = &i.operands;
        let ftz = m.ftz();
        let rn = m.take("rn");
        if let Some(r) = m.take_any(&["rz", "rm", "rp", "sat"]) {
            return err(line, format!("`.{r}` of `{}` is not implemented", i.opcode));
        }
        let mode = m.take_any(&["lo", "hi", "wide"]);
        let ty = m.one_type()?;
        let (d, a, b, c) = (
            self.dst(&o[0], line)?,
            self.src(&o[1], line)?,
            self.src(&o[2], line)?,
            self.src(&o[3], line)?,
        );
        if ty.is_float() {
            if !matches!(ty, Ty::F32 | Ty::F64) {
                return err(line, format!("`{}` on {ty:?} is not implemented", i.opcode));
            }
            if base == "fma" && !rn {
                return err(line, "`fma` needs a rounding mode (`.rn`)");
            }
            return Ok(Op::Fma {
                ty,
                ftz,
                d,
                a,
                b,
                c,
            });
        }
        if base == "fma" {
            return err(line, "`fma` is a float instruction");
        }
        let mode = match mode {
            Some("lo") => MulMode::Lo,
            Some("hi") => MulMode::Hi,
            Some("wide") => MulMode::Wide,
            _ => return err(line, "integer `mad` needs .lo, .hi or .wide"),
        };
        Ok(Op::Mad {
            mode,
            ty,
            d,
            a,
            b,
            c,
        })
    }

    fn unary(&self, base: &str, i: &ptx::Instruction, m: &mut Mods) -> Result<Op> {
        ops_count(i, 2)?;
        let line = i.line;
        let ftz = m.ftz();
        let approx = m.take("approx");
        let rn = m.take("rn");
        if let Some(r) = m.take_any(&["rz", "rm", "rp"]) {
            return err(line, format!("`.{r}` of `{}` is not implemented", i.opcode));
        }
        let ty = m.one_type()?;
        let d = self.dst(&i.operands[0], line)?;
        let a = self.src(&i.operands[1], line)?;
        let float = |f: FloatFn| -> Result<Op> {
            if !matches!(ty, Ty::F32 | Ty::F64) {
                return err(line, format!("`{}` on {ty:?} is not implemented", i.opcode));
            }
            Ok(Op::FloatUnary { f, ty, ftz, d, a })
        };
        match (base, ty.is_float()) {
            ("neg", true) => float(FloatFn::Neg),
            ("abs", true) => float(FloatFn::Abs),
            ("sqrt", true) if rn => float(FloatFn::Sqrt),
            ("sqrt", true) if approx => float(FloatFn::SqrtApprox),
            ("rcp", true) if rn => float(FloatFn::Rcp),
            ("rcp", true) if approx => float(FloatFn::RcpApprox),
            ("rsqrt", true) if approx => float(FloatFn::RsqrtApprox),
            ("ex2", true) if approx => float(FloatFn::Ex2Approx),
            ("lg2", true) if approx => float(FloatFn::Lg2Approx),
            ("sin", true) if approx => float(FloatFn::SinApprox),
            ("cos", true) if approx => float(FloatFn::CosApprox),
            ("tanh", true) if approx => float(FloatFn::TanhApprox),
            (_, false) if !approx && !rn && !ftz => {
                let op = match base {
                    "not" => UnOp::Not,
                    "neg" => UnOp::Neg,
                    "abs" => UnOp::Abs,
                    "popc" => UnOp::Popc,
                    "clz" => UnOp::Clz,
                    "brev" => UnOp::Brev,
                    "cnot" => UnOp::Cnot,
                    _ => return err(line, format!("`{}` is not implemented", i.opcode)),
                };
                Ok(Op::Unary { op, ty, d, a })
            }
            _ => err(line, format!("`{}` is not implemented", i.opcode)),
        }
    }

    fn setp(&self, i: &ptx::Instruction, m: &mut Mods) -> Result<Op> {
        let line = i.line;
        let o = &i.operands;
        let cmp = m
            .take_any(&[
                "eq", "ne", "lt", "le", "gt", "ge", "lo", "ls", "hi", "hs", "equ", "neu", "ltu",
                "leu", "gtu", "geu", "num", "nan",
            ])
            .ok_or_else(|| DecodeError {
                line,
                message: format!("`{}` needs a comparison", i.opcode),
            })?;
        let cmp = match cmp {
            "eq" => Cmp::Eq,
            "ne" => Cmp::Ne,
            "lt" | "lo" => Cmp::Lt,
            "le" | "ls" => Cmp::Le,
            "gt" | "hi" => Cmp::Gt,
            "ge" | "hs" => Cmp::Ge,
            "equ" => Cmp::Equ,
            "neu" => Cmp::Neu,
            "ltu" => Cmp::Ltu,
            "leu" => Cmp::Leu,
            "gtu" => Cmp::Gtu,
            "geu" => Cmp::Geu,
            "num" => Cmp::Num,
            _ => Cmp::Nan,
        };
        let combine_op = match m.take_any(&["and", "or", "xor"]) {
            Some("and") => Some(BoolOp::And),
            Some("or") => Some(BoolOp::Or),
            Some("xor") => Some(BoolOp::Xor),
            _ => None,
        };
        m.ftz();
        let ty = m.one_type()?;
        let want = if combine_op.is_some() { 4 } else { 3 };
        ops_count(i, want)?;
        let (d, d_not) = match &o[0] {
            Operand::RegPair(a, b) => (self.reg(a, line)?, Some(self.reg(b, line)?)),
            other => (self.dst(other, line)?, None),
        };
        Ok(Op::Setp {
            cmp,
            ty,
            d,
            d_not,
            a: self.src(&o[1], line)?,
            b: self.src(&o[2], line)?,
            combine: match combine_op {
                Some(op) => Some((op, self.src(&o[3], line)?)),
                None => None,
            },
        })
    }

    fn cvt(&self, i: &ptx::Instruction, m: &mut Mods) -> Result<Op> {
        ops_count(i, 2)?;
        let line = i.line;
        let rounding = match m.take_any(&["rn", "rz", "rm", "rp", "rni", "rzi", "rmi", "rpi"]) {
            None => None,
            Some("rn") => Some(Rounding::Nearest),
            Some("rni") => Some(Rounding::IntNearest),
            Some("rzi") => Some(Rounding::IntZero),
            Some("rmi") => Some(Rounding::IntDown),
            Some("rpi") => Some(Rounding::IntUp),
            Some(r) => {
                return err(line, format!("`cvt.{r}` is not implemented"));
            }
        };
        let ftz = m.ftz();
        let sat = m.take("sat");
        let t = m.take_types();
        let [to, from] = t[..] else {
            return err(line, "`cvt` needs a destination and a source type");
        };
        Ok(Op::Cvt {
            to,
            from,
            rounding,
            ftz,
            sat,
            d: self.dst(&i.operands[0], line)?,
            a: self.src(&i.operands[1], line)?,
        })
    }

    /// Memory-ordering modifiers of ld/st/atom.
    fn sem(m: &mut Mods, default: Sem) -> Sem {
        match m.take_any(&[
            "weak", "volatile", "relaxed", "acquire", "release", "acq_rel",
        ]) {
            Some("weak") => Sem::Weak,
            Some("volatile") => Sem::Volatile,
            Some("relaxed") => Sem::Relaxed,
            Some("acquire") => Sem::Acquire,
            Some("release") => Sem::Release,
            Some("acq_rel") => Sem::AcqRel,
            _ => default,
        }
    }

    /// Cache hints that do not change values.
    fn cache_hints(m: &mut Mods) -> Result<()> {
        while m
            .take_any(&[
                "ca",
                "cg",
                "cs",
                "lu",
                "cv",
                "wb",
                "wt",
                "L1::no_allocate",
                "L1::evict_normal",
                "L1::evict_unchanged",
                "L1::evict_first",
                "L1::evict_last",
                "L2::evict_normal",
                "L2::evict_first",
                "L2::evict_last",
                "L2::64B",
                "L2::128B",
                "L2::256B",
            ])
            .is_some()
        {}
        if m.parts.iter().any(|p| p.starts_with("L2::cache_hint")) {
            return err(m.line, "`.L2::cache_hint` is not implemented");
        }
        Ok(())
    }

    fn vector(m: &mut Mods) -> usize {
        match m.take_any(&["v2", "v4", "v8"]) {
            Some("v2") => 2,
            Some("v4") => 4,
            Some("v8") => 8,
            _ => 1,
        }
    }

    fn load(&self, i: &ptx::Instruction, m: &mut Mods) -> Result<Op> {
        ops_count(i, 2)?;
        let line = i.line;
        let sem = Self::sem(m, Sem::Weak);
        let scope = m.scope();
        let space = m.space();
        let nc = m.take("nc");
        Self::cache_hints(m)?;
        let n = Self::vector(m);
        let ty = m.one_type()?;
        let d = match &i.operands[0] {
            Operand::Vector(v) if v.len() == n && n > 1 => v
                .iter()
                .map(|r| self.dst_or_sink(r, line))
                .collect::<Result<_>>()?,
            other if n == 1 => vec![Some(self.dst(other, line)?)],
            _ => return err(line, format!("`{}` needs {n} destinations", i.opcode)),
        };
        if nc && space != Space::Global {
            return err(line, "`.nc` loads must name the .global space");
        }
        Ok(Op::Ld {
            space,
            sem,
            scope,
            nc,
            ty,
            d,
            addr: self.addr(&i.operands[1], space, line)?,
        })
    }

    fn store(&self, i: &ptx::Instruction, m: &mut Mods) -> Result<Op> {
        ops_count(i, 2)?;
        let line = i.line;
        let sem = Self::sem(m, Sem::Weak);
        let scope = m.scope();
        let space = m.space();
        Self::cache_hints(m)?;
        let n = Self::vector(m);
        let ty = m.one_type()?;
        let src = match &i.operands[1] {
            Operand::Vector(v) if v.len() == n && n > 1 => {
                v.iter().map(|r| self.src(r, line)).collect::<Result<_>>()?
            }
            other if n == 1 => vec![self.src(other, line)?],
            _ => return err(line, format!("`{}` needs {n} sources", i.opcode)),
        };
        if matches!(sem, Sem::Acquire | Sem::AcqRel) {
            return err(line, "a store cannot acquire");
        }
        Ok(Op::St {
            space,
            sem,
            scope,
            ty,
            src,
            addr: self.addr(&i.operands[0], space, line)?,
        })
    }

    fn atom(&self, red: bool, i: &ptx::Instruction, m: &mut Mods) -> Result<Op> {
        let line = i.line;
        // `atom` without a semantics is relaxed (PTX ISA, "atom").
        let sem = Self::sem(m, Sem::Relaxed);
        let scope = m.scope();
        let space = m.space();
        let op = match m.take_any(&[
            "add", "min", "max", "inc", "dec", "and", "or", "xor", "exch", "cas",
        ]) {
            Some("add") => AtomOp::Add,
            Some("min") => AtomOp::Min,
            Some("max") => AtomOp::Max,
            Some("inc") => AtomOp::Inc,
            Some("dec") => AtomOp::Dec,
            Some("and") => AtomOp::And,
            Some("or") => AtomOp::Or,
            Some("xor") => AtomOp::Xor,
            Some("exch") => AtomOp::Exch,
            Some("cas") => AtomOp::Cas,
            _ => return err(line, format!("`{}` needs an operation", i.opcode)),
        };
        let ty = m.one_type()?;
        if ty.is_float() && op != AtomOp::Add {
            return err(line, format!("`{}` is not implemented", i.opcode));
        }
        let o = &i.operands;
        let first = if red { 0 } else { 1 };
        let want = first + if op == AtomOp::Cas { 3 } else { 2 };
        ops_count(i, want)?;
        Ok(Op::Atom {
            space,
            sem,
            scope,
            op,
            ty,
            d: if red {
                None
            } else {
                Some(self.dst(&o[0], line)?)
            },
            addr: self.addr(&o[first], space, line)?,
            b: self.src(&o[first + 1], line)?,
            c: if op == AtomOp::Cas {
                Some(self.src(&o[first + 2], line)?)
            } else {
                None
            },
        })
    }

    fn barrier(&self, i: &ptx::Instruction, m: &mut Mods) -> Result<Op> {
        let line = i.line;
        let o = &i.operands;
        if m.take("warp") {
            if !m.take("sync") {
                return err(line, "only `bar.warp.sync` is implemented");
            }
            ops_count(i, 1)?;
            return Ok(Op::WarpSync {
                mask: self.src(&o[0], line)?,
            });
        }
        m.take("cta");
        if !m.take("sync") {
            return err(
                line,
                format!("`{}` is not implemented (only bar.sync)", i.opcode),
            );
        }
        m.take("aligned");
        if o.is_empty() || o.len() > 2 {
            return err(line, "`bar.sync` takes a barrier id and an optional count");
        }
        Ok(Op::BarSync {
            id: self.src(&o[0], line)?,
            count: match o.get(1) {
                Some(c) => Some(self.src(c, line)?),
                None => None,
            },
        })
    }

    /// `mbarrier.init`, `.arrive{.expect_tx}`, `.try_wait.parity`, `.test_wait.parity`, all on
    /// `.shared{::cta}` `.b64` objects.
    fn mbarrier(&self, i: &ptx::Instruction, m: &mut Mods) -> Result<Op> {
        let line = i.line;
        let o = &i.operands;
        let what = m.take_any(&["init", "arrive", "try_wait", "test_wait"]);
        let expect_tx = m.take("expect_tx");
        let parity = m.take("parity");
        let space = m.space();
        if space != Space::Shared {
            return err(line, format!("`{}` must name .shared", i.opcode));
        }
        m.take_any(&["release", "acquire", "relaxed"]);
        m.take_any(&["cta"]);
        if m.take_types() != [Ty::B64] {
            return err(line, format!("`{}` needs .b64", i.opcode));
        }
        Ok(match what {
            Some("init") if !expect_tx && !parity => {
                ops_count(i, 2)?;
                Op::MbarInit {
                    addr: self.addr(&o[0], space, line)?,
                    count: self.src(&o[1], line)?,
                }
            }
            Some("arrive") if !parity => {
                ops_count(i, if expect_tx { 3 } else { 2 })?;
                Op::MbarArrive {
                    d: self.dst_or_sink(&o[0], line)?,
                    addr: self.addr(&o[1], space, line)?,
                    tx: if expect_tx {
                        Some(self.src(&o[2], line)?)
                    } else {
                        None
                    },
                }
            }
            Some(w @ ("try_wait" | "test_wait")) if parity && !expect_tx => {
                ops_count(i, 3)?;
                Op::MbarWait {
                    d: self.dst(&o[0], line)?,
                    addr: self.addr(&o[1], space, line)?,
                    parity: self.src(&o[2], line)?,
                    try_wait: w == "try_wait",
                }
            }
            _ => return err(line, format!("`{}` is not implemented", i.opcode)),
        })
    }

    /// `cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes` (sm_90) and
    /// `cp.async.{ca,cg}.shared.global`, `cp.async.commit_group`, `cp.async.wait_group`,
    /// `cp.async.wait_all` (sm_80).
    fn async_copy(&self, i: &ptx::Instruction, m: &mut Mods) -> Result<Op> {
        let line = i.line;
        let o = &i.operands;
        if !m.take("async") {
            return err(line, format!("`{}` is not implemented", i.opcode));
        }
        if m.take("commit_group") {
            ops_count(i, 0)?;
            return Ok(Op::AsyncCommit);
        }
        if m.take("wait_all") {
            ops_count(i, 0)?;
            return Ok(Op::AsyncWait { n: 0 });
        }
        if m.take("wait_group") {
            ops_count(i, 1)?;
            let Src::Imm(n) = self.src(&o[0], line)? else {
                return err(line, "`cp.async.wait_group` takes an immediate count");
            };
            return Ok(Op::AsyncWait { n: n as u32 });
        }
        if m.take("bulk") {
            let to_shared = m.take("shared::cluster") || m.take("shared::cta");
            let from_global = m.take("global");
            if !(to_shared && from_global && m.take("mbarrier::complete_tx::bytes")) {
                return err(
                    line,
                    format!(
                        "`{}` is not implemented (only global to shared, completing on an \
                         mbarrier)",
                        i.opcode
                    ),
                );
            }
            ops_count(i, 4)?;
            return Ok(Op::BulkCopy {
                dst: self.addr(&o[0], Space::Shared, line)?,
                src: self.addr(&o[1], Space::Global, line)?,
                size: self.src(&o[2], line)?,
                mbar: self.addr(&o[3], Space::Shared, line)?,
            });
        }
        m.take_any(&["ca", "cg"]);
        if !(m.take("shared") && m.take("global")) {
            return err(line, format!("`{}` is not implemented", i.opcode));
        }
        ops_count(i, 3)?;
        let bytes = match self.src(&o[2], line)? {
            Src::Imm(n @ (4 | 8 | 16)) => n as u32,
            _ => return err(line, "`cp.async` copies 4, 8 or 16 bytes (an immediate)"),
        };
        Ok(Op::AsyncCopy {
            dst: self.addr(&o[0], Space::Shared, line)?,
            src: self.addr(&o[1], Space::Global, line)?,
            bytes,
        })
    }

    fn shfl(&self, i: &ptx::Instruction, m: &mut Mods) -> Result<Op> {
        let line = i.line;
        if !m.take("sync") {
            return err(line, "only `shfl.sync` is implemented");
        }
        let mode = match m.take_any(&["up", "down", "bfly", "idx"]) {
            Some("up") => ShflMode::Up,
            Some("down") => ShflMode::Down,
            Some("bfly") => ShflMode::Bfly,
            Some("idx") => ShflMode::Idx,
            _ => return err(line, "`shfl.sync` needs .up, .down, .bfly or .idx"),
        };
        let ty = m.one_type()?;
        if ty.bits() != 32 {
            return err(line, "`shfl.sync` moves 32-bit values");
        }
        ops_count(i, 5)?;
        let o = &i.operands;
        let (d, p_out) = match &o[0] {
            Operand::RegPair(a, b) => (self.reg(a, line)?, Some(self.reg(b, line)?)),
            other => (self.dst(other, line)?, None),
        };
        Ok(Op::Shfl {
            mode,
            d,
            p_out,
            a: self.src(&o[1], line)?,
            b: self.src(&o[2], line)?,
            c: self.src(&o[3], line)?,
            mask: self.src(&o[4], line)?,
        })
    }
}
