//! Instructions applied to 32 lanes at once, with the operation chosen *before* the lane loop
//! so that each loop is a straight line the compiler can vectorise. The generic per-lane
//! semantics in `alu` and `float` stay the reference; the fast forms here are the common
//! cases of rustc's PTX and must agree with them bit for bit (tests below).

use super::{alu, float};
use crate::isa::{Cmp, FloatOp, IntOp, Reg, Src, Ty};

/// A source resolved for the lane loop: 32 lanes at a pointer, or one value for all.
#[derive(Clone, Copy)]
pub enum Val {
    Lanes(*const u64),
    Splat(u64),
}

impl Val {
    /// Lane `l`.
    ///
    /// # Safety
    /// A `Lanes` pointer must point to 32 readable values.
    #[inline(always)]
    pub unsafe fn at(self, l: usize) -> u64 {
        match self {
            // SAFETY: the caller's contract.
            Val::Lanes(p) => unsafe { *p.add(l) },
            Val::Splat(v) => v,
        }
    }
}

/// The destination of a lane loop: register `d`'s 32 lanes, written where `active` has a bit.
/// Lanes are computed and written one at a time, so a destination that is also a source is
/// read before it is written in every lane (the per-thread semantics).
#[derive(Clone, Copy)]
pub struct Dst {
    pub ptr: *mut u64,
    pub active: u32,
}

/// `dst[l] = f(l)` for the active lanes.
///
/// # Safety
/// `dst.ptr` must point to 32 writable values, and `f` read only valid memory.
#[inline(always)]
pub unsafe fn each_into(dst: Dst, f: impl Fn(usize) -> u64) {
    if dst.active == u32::MAX {
        for l in 0..32 {
            // SAFETY: 32 lanes (caller's contract).
            unsafe { *dst.ptr.add(l) = f(l) };
        }
    } else {
        let mut m = dst.active;
        while m != 0 {
            let l = m.trailing_zeros() as usize;
            // SAFETY: as above.
            unsafe { *dst.ptr.add(l) = f(l) };
            m &= m - 1;
        }
    }
}

/// `dst[l] = f(a[l], b[l])`, with the register/immediate cases split so each loop has no
/// branch.
///
/// # Safety
/// As [`each_into`]; `Lanes` sources point to 32 readable values.
#[inline(always)]
pub unsafe fn map2(dst: Dst, a: Val, b: Val, f: impl Fn(u64, u64) -> u64) {
    // SAFETY: the caller's contract, for every arm.
    unsafe {
        match (a, b) {
            (Val::Lanes(x), Val::Lanes(y)) => each_into(dst, |l| f(*x.add(l), *y.add(l))),
            (Val::Lanes(x), Val::Splat(v)) => each_into(dst, |l| f(*x.add(l), v)),
            (Val::Splat(v), Val::Lanes(y)) => each_into(dst, |l| f(v, *y.add(l))),
            (Val::Splat(u), Val::Splat(v)) => {
                let r = f(u, v);
                each_into(dst, |_| r)
            }
        }
    }
}

/// # Safety
/// As [`map2`].
#[inline(always)]
pub unsafe fn map1(dst: Dst, a: Val, f: impl Fn(u64) -> u64) {
    // SAFETY: the caller's contract.
    unsafe {
        match a {
            Val::Lanes(x) => each_into(dst, |l| f(*x.add(l))),
            Val::Splat(v) => {
                let r = f(v);
                each_into(dst, |_| r)
            }
        }
    }
}

/// # Safety
/// As [`map2`].
#[inline(always)]
pub unsafe fn map3(dst: Dst, a: Val, b: Val, c: Val, f: impl Fn(u64, u64, u64) -> u64) {
    // SAFETY: the caller's contract.
    unsafe {
        match (a, b, c) {
            (Val::Lanes(x), Val::Lanes(y), Val::Lanes(z)) => {
                each_into(dst, |l| f(*x.add(l), *y.add(l), *z.add(l)))
            }
            (Val::Lanes(x), Val::Splat(v), Val::Lanes(z)) => {
                each_into(dst, |l| f(*x.add(l), v, *z.add(l)))
            }
            (Val::Lanes(x), Val::Lanes(y), Val::Splat(w)) => {
                each_into(dst, |l| f(*x.add(l), *y.add(l), w))
            }
            _ => each_into(dst, |l| f(a.at(l), b.at(l), c.at(l))),
        }
    }
}

/// Integer `a op b` on 32 lanes.
///
/// # Safety
/// As [`map2`].
#[inline(always)]
pub unsafe fn int(dst: Dst, op: IntOp, ty: Ty, a: Val, b: Val) {
    let m = ty.mask();
    // SAFETY: the caller's contract, for every arm.
    unsafe {
        match (op, ty.bits()) {
            (IntOp::Add, _) => map2(dst, a, b, |x, y| x.wrapping_add(y) & m),
            (IntOp::Sub, _) => map2(dst, a, b, |x, y| x.wrapping_sub(y) & m),
            (IntOp::MulLo, _) => map2(dst, a, b, |x, y| x.wrapping_mul(y) & m),
            (IntOp::And, _) => map2(dst, a, b, |x, y| x & y & m),
            (IntOp::Or, _) => map2(dst, a, b, |x, y| (x | y) & m),
            (IntOp::Xor, _) => map2(dst, a, b, |x, y| (x ^ y) & m),
            (IntOp::Shl, 32) => map2(dst, a, b, |x, y| {
                let s = y as u32;
                if s >= 32 { 0 } else { ((x as u32) << s) as u64 }
            }),
            (IntOp::Shl, 64) => map2(dst, a, b, |x, y| {
                let s = y as u32;
                if s >= 64 { 0 } else { x << s }
            }),
            (IntOp::Shr, 32) if !ty.is_signed() => map2(dst, a, b, |x, y| {
                let s = y as u32;
                if s >= 32 { 0 } else { ((x as u32) >> s) as u64 }
            }),
            (IntOp::Shr, 64) if !ty.is_signed() => map2(dst, a, b, |x, y| {
                let s = y as u32;
                if s >= 64 { 0 } else { x >> s }
            }),
            (IntOp::Min, 32) if !ty.is_signed() => {
                map2(dst, a, b, |x, y| (x as u32).min(y as u32) as u64)
            }
            (IntOp::Max, 32) if !ty.is_signed() => {
                map2(dst, a, b, |x, y| (x as u32).max(y as u32) as u64)
            }
            _ => map2(dst, a, b, |x, y| alu::int(op, ty, x, y)),
        }
    }
}

/// `mul.wide` on 32 lanes.
///
/// # Safety
/// As [`map2`].
#[inline(always)]
pub unsafe fn mul_wide(dst: Dst, ty: Ty, a: Val, b: Val) {
    // SAFETY: the caller's contract, for every arm.
    unsafe {
        match ty {
            Ty::U32 => map2(dst, a, b, |x, y| (x as u32 as u64) * (y as u32 as u64)),
            Ty::S32 => map2(dst, a, b, |x, y| {
                ((x as u32 as i32 as i64) * (y as u32 as i32 as i64)) as u64
            }),
            _ => map2(dst, a, b, |x, y| alu::mul_wide(ty, x, y)),
        }
    }
}

/// Float `a op b` on 32 lanes.
///
/// # Safety
/// As [`map2`].
#[inline(always)]
pub unsafe fn float(dst: Dst, op: FloatOp, ty: Ty, ftz: bool, a: Val, b: Val) {
    let f = |x: u64| f32::from_bits(x as u32);
    let g = |x: f32| x.to_bits() as u64;
    // SAFETY: the caller's contract, for every arm.
    unsafe {
        match (op, ty, ftz) {
            (FloatOp::Add, Ty::F32, false) => map2(dst, a, b, |x, y| g(f(x) + f(y))),
            (FloatOp::Sub, Ty::F32, false) => map2(dst, a, b, |x, y| g(f(x) - f(y))),
            (FloatOp::Mul, Ty::F32, false) => map2(dst, a, b, |x, y| g(f(x) * f(y))),
            (FloatOp::Div, Ty::F32, false) => map2(dst, a, b, |x, y| g(f(x) / f(y))),
            _ => map2(dst, a, b, |x, y| float::binary(op, ty, ftz, x, y)),
        }
    }
}

/// `setp` on 32 lanes: 1 where the comparison holds.
///
/// # Safety
/// As [`map2`].
#[inline(always)]
pub unsafe fn compare(dst: Dst, cmp: Cmp, ty: Ty, a: Val, b: Val) {
    let b32 = |x: u64| x as u32;
    // SAFETY: the caller's contract, for every arm.
    unsafe {
        match (cmp, ty) {
            (Cmp::Eq, Ty::B32 | Ty::U32 | Ty::S32) => {
                map2(dst, a, b, |x, y| (b32(x) == b32(y)) as u64)
            }
            (Cmp::Ne, Ty::B32 | Ty::U32 | Ty::S32) => {
                map2(dst, a, b, |x, y| (b32(x) != b32(y)) as u64)
            }
            (Cmp::Lt, Ty::U32) => map2(dst, a, b, |x, y| (b32(x) < b32(y)) as u64),
            (Cmp::Le, Ty::U32) => map2(dst, a, b, |x, y| (b32(x) <= b32(y)) as u64),
            (Cmp::Gt, Ty::U32) => map2(dst, a, b, |x, y| (b32(x) > b32(y)) as u64),
            (Cmp::Ge, Ty::U32) => map2(dst, a, b, |x, y| (b32(x) >= b32(y)) as u64),
            (Cmp::Lt, Ty::U64) => map2(dst, a, b, |x, y| (x < y) as u64),
            (Cmp::Le, Ty::U64) => map2(dst, a, b, |x, y| (x <= y) as u64),
            (Cmp::Gt, Ty::U64) => map2(dst, a, b, |x, y| (x > y) as u64),
            (Cmp::Ge, Ty::U64) => map2(dst, a, b, |x, y| (x >= y) as u64),
            (Cmp::Eq, Ty::B64 | Ty::U64 | Ty::S64) => map2(dst, a, b, |x, y| (x == y) as u64),
            (Cmp::Ne, Ty::B64 | Ty::U64 | Ty::S64) => map2(dst, a, b, |x, y| (x != y) as u64),
            _ => map2(dst, a, b, |x, y| alu::compare(cmp, ty, x, y) as u64),
        }
    }
}

/// `cvt` on 32 lanes: the integer widenings and narrowings of index math are inline.
///
/// # Safety
/// As [`map2`].
#[inline(always)]
pub unsafe fn cvt(dst: Dst, to: Ty, from: Ty, a: Val, general: impl Fn(u64) -> u64) {
    // SAFETY: the caller's contract, for every arm.
    unsafe {
        match (to, from) {
            (Ty::U64 | Ty::S64 | Ty::B64, Ty::U32 | Ty::B32)
            | (Ty::U32 | Ty::B32 | Ty::S32, Ty::U64 | Ty::S64 | Ty::B64) => {
                map1(dst, a, |x| x & 0xffff_ffff)
            }
            (Ty::S64, Ty::S32) => map1(dst, a, |x| x as u32 as i32 as i64 as u64),
            _ => map1(dst, a, general),
        }
    }
}

/// A register or immediate source as a [`Val`] into the register file at `regs`; `None` for
/// special registers and negated predicates (the caller materialises those).
#[inline(always)]
pub fn val(regs: *const [u64; 32], count: usize, s: Src) -> Option<Val> {
    match s {
        Src::Reg(r) => {
            assert!((r as usize) < count, "register slot out of range");
            // SAFETY: `r < count`, inside the register file.
            Some(Val::Lanes(unsafe { regs.add(r as usize) }.cast::<u64>()))
        }
        Src::Imm(v) => Some(Val::Splat(v)),
        _ => None,
    }
}

/// The destination for register `d` of the register file at `regs`.
#[inline(always)]
pub fn dst(regs: *mut [u64; 32], count: usize, d: Reg, active: u32) -> Dst {
    assert!((d as usize) < count, "register slot out of range");
    Dst {
        // SAFETY: `d < count`, inside the register file.
        ptr: unsafe { regs.add(d as usize) }.cast::<u64>(),
        active,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(f: impl FnOnce(Dst)) -> [u64; 32] {
        let mut out = [0u64; 32];
        f(Dst {
            ptr: out.as_mut_ptr(),
            active: u32::MAX,
        });
        out
    }

    /// The fast forms agree with the reference semantics on awkward values.
    #[test]
    fn fast_forms_match_the_reference() {
        let samples: [u64; 32] = std::array::from_fn(|i| match i % 8 {
            0 => 0,
            1 => 1,
            2 => 0xffff_ffff,
            3 => 0x8000_0000,
            4 => u64::MAX,
            5 => 0x1234_5678_9abc_def0,
            6 => 33,
            _ => (i as u64) * 0x0101_0101,
        });
        let other: [u64; 32] = std::array::from_fn(|i| samples[(i * 7 + 3) % 32]);
        let (a, b) = (Val::Lanes(samples.as_ptr()), Val::Lanes(other.as_ptr()));
        for ty in [Ty::U32, Ty::S32, Ty::B32, Ty::U64, Ty::S64, Ty::B64] {
            for op in [
                IntOp::Add,
                IntOp::Sub,
                IntOp::MulLo,
                IntOp::And,
                IntOp::Or,
                IntOp::Xor,
                IntOp::Shl,
                IntOp::Shr,
                IntOp::Min,
                IntOp::Max,
            ] {
                // SAFETY: 32-lane buffers.
                let fast = run(|d| unsafe { int(d, op, ty, a, b) });
                for l in 0..32 {
                    assert_eq!(
                        fast[l],
                        alu::int(op, ty, samples[l], other[l]),
                        "{op:?} {ty:?}"
                    );
                }
            }
            for cmp in [Cmp::Eq, Cmp::Ne, Cmp::Lt, Cmp::Le, Cmp::Gt, Cmp::Ge] {
                // SAFETY: 32-lane buffers.
                let fast = run(|d| unsafe { compare(d, cmp, ty, a, b) });
                for l in 0..32 {
                    assert_eq!(
                        fast[l],
                        alu::compare(cmp, ty, samples[l], other[l]) as u64,
                        "{cmp:?} {ty:?}"
                    );
                }
            }
        }
        for ty in [Ty::U32, Ty::S32] {
            // SAFETY: 32-lane buffers.
            let fast = run(|d| unsafe { mul_wide(d, ty, a, b) });
            for l in 0..32 {
                assert_eq!(fast[l], alu::mul_wide(ty, samples[l], other[l]));
            }
        }
        for (to, from) in [(Ty::U64, Ty::U32), (Ty::U32, Ty::U64), (Ty::S64, Ty::S32)] {
            let general = |x| alu::cvt(to, from, None, false, false, x);
            // SAFETY: 32-lane buffers.
            let fast = run(|d| unsafe { cvt(d, to, from, a, general) });
            for l in 0..32 {
                assert_eq!(fast[l], general(samples[l]));
            }
        }
    }

    #[test]
    fn a_destination_that_is_a_source_reads_before_it_writes() {
        let mut r = [3u64; 32];
        let p = r.as_mut_ptr();
        // r = r + r, in place.
        // SAFETY: one 32-lane buffer.
        unsafe {
            int(
                Dst {
                    ptr: p,
                    active: u32::MAX,
                },
                IntOp::Add,
                Ty::U64,
                Val::Lanes(p),
                Val::Lanes(p),
            )
        };
        assert_eq!(r, [6; 32]);
    }
}
