//! Integer, comparison and conversion semantics, one lane at a time, on register bits. A
//! register slot holds a value in its low `ty.bits()`; results are written zero-extended.

use super::float::{bf16_to_f32, f32_to_bf16};
use crate::isa::{AtomOp, BoolOp, Cmp, IntOp, MulMode, Rounding, Ty, UnOp};

/// Sign-extends the low `bits` of `v` to 64 bits.
#[inline]
pub fn sext(v: u64, bits: u32) -> i64 {
    if bits >= 64 {
        v as i64
    } else {
        ((v << (64 - bits)) as i64) >> (64 - bits)
    }
}

/// `a op b` for integer (and predicate) types.
#[inline]
pub fn int(op: IntOp, ty: Ty, a: u64, b: u64) -> u64 {
    let bits = ty.bits();
    let m = ty.mask();
    let signed = ty.is_signed();
    let (a, b) = (a & m, b & m);
    let r = match op {
        IntOp::Add => a.wrapping_add(b),
        IntOp::Sub => a.wrapping_sub(b),
        IntOp::MulLo => a.wrapping_mul(b),
        IntOp::MulHi => {
            if signed {
                let p = sext(a, bits) as i128 * sext(b, bits) as i128;
                (p >> bits) as u64
            } else {
                let p = a as u128 * b as u128;
                (p >> bits) as u64
            }
        }
        // Division by zero is unspecified in PTX; the hardware returns all ones for unsigned.
        IntOp::Div => {
            if b == 0 {
                m
            } else if signed {
                sext(a, bits).wrapping_div(sext(b, bits)) as u64
            } else {
                a / b
            }
        }
        IntOp::Rem => {
            if b == 0 {
                a
            } else if signed {
                sext(a, bits).wrapping_rem(sext(b, bits)) as u64
            } else {
                a % b
            }
        }
        IntOp::Min => {
            if signed {
                sext(a, bits).min(sext(b, bits)) as u64
            } else {
                a.min(b)
            }
        }
        IntOp::Max => {
            if signed {
                sext(a, bits).max(sext(b, bits)) as u64
            } else {
                a.max(b)
            }
        }
        IntOp::And => a & b,
        IntOp::Or => a | b,
        IntOp::Xor => a ^ b,
        // Shift amounts are unsigned 32-bit and clamp at the width (PTX `shl`/`shr`).
        IntOp::Shl => {
            let s = b as u32;
            if s >= bits { 0 } else { a << s }
        }
        IntOp::Shr => {
            let s = (b as u32).min(bits);
            if signed {
                let v = sext(a, bits);
                (if s >= bits { v >> (bits - 1) } else { v >> s }) as u64
            } else if s >= bits {
                0
            } else {
                a >> s
            }
        }
    };
    r & m
}

/// The value an atomic `op` leaves in memory that held `old` (`c` is the new value of a
/// compare-and-swap).
#[inline]
pub fn atomic(op: AtomOp, ty: Ty, old: u64, b: u64, c: u64) -> u64 {
    let m = ty.mask();
    let (old, b, c) = (old & m, b & m, c & m);
    match op {
        AtomOp::Add => match ty {
            Ty::F32 => (f32::from_bits(old as u32) + f32::from_bits(b as u32)).to_bits() as u64,
            Ty::F64 => (f64::from_bits(old) + f64::from_bits(b)).to_bits(),
            _ => old.wrapping_add(b) & m,
        },
        AtomOp::Min => int(IntOp::Min, ty, old, b),
        AtomOp::Max => int(IntOp::Max, ty, old, b),
        AtomOp::Inc => {
            if old >= b {
                0
            } else {
                old + 1
            }
        }
        AtomOp::Dec => {
            if old == 0 || old > b {
                b
            } else {
                old - 1
            }
        }
        AtomOp::And => old & b,
        AtomOp::Or => old | b,
        AtomOp::Xor => old ^ b,
        AtomOp::Exch => b,
        AtomOp::Cas => {
            if old == b {
                c
            } else {
                old
            }
        }
    }
}

/// `mul.wide`: the full product of two `ty` values, `2 · bits` wide.
#[inline]
pub fn mul_wide(ty: Ty, a: u64, b: u64) -> u64 {
    let bits = ty.bits();
    if ty.is_signed() {
        (sext(a, bits).wrapping_mul(sext(b, bits))) as u64
    } else {
        (a & ty.mask()).wrapping_mul(b & ty.mask())
    }
}

/// Integer `mad`: `a * b + c` with the product kept per `mode`.
#[inline]
pub fn mad(mode: MulMode, ty: Ty, a: u64, b: u64, c: u64) -> u64 {
    match mode {
        MulMode::Lo => int(IntOp::Add, ty, int(IntOp::MulLo, ty, a, b), c),
        MulMode::Hi => int(IntOp::Add, ty, int(IntOp::MulHi, ty, a, b), c),
        MulMode::Wide => {
            let wide = if ty.bits() == 16 { Ty::U32 } else { Ty::U64 };
            mul_wide(ty, a, b).wrapping_add(c) & wide.mask()
        }
    }
}

/// `bfe`: `len` bits of `a` from bit `pos` (both taken from their low 8 bits), sign-extended
/// from the field's top bit for signed types (PTX ISA, `bfe`).
#[inline]
pub fn bfe(ty: Ty, a: u64, pos: u64, len: u64) -> u64 {
    let msb = ty.bits() - 1;
    let (pos, len) = ((pos & 0xff) as u32, (len & 0xff) as u32);
    let bit = |i: u32| (a >> i) & 1;
    let fill = if ty.is_signed() {
        if len == 0 {
            0
        } else {
            bit((pos + len - 1).min(msb))
        }
    } else {
        0
    };
    let mut d = 0u64;
    for i in 0..=msb {
        let v = if i < len && pos + i <= msb {
            bit(pos + i)
        } else {
            fill
        };
        d |= v << i;
    }
    d & ty.mask()
}

/// `bfi`: `b` with `len` bits from `pos` replaced by the low bits of `f` (PTX ISA, `bfi`).
#[inline]
pub fn bfi(ty: Ty, f: u64, b: u64, pos: u64, len: u64) -> u64 {
    let msb = ty.bits() - 1;
    let (pos, len) = ((pos & 0xff) as u32, (len & 0xff) as u32);
    let mut d = b & ty.mask();
    for i in 0..len {
        if pos + i > msb {
            break;
        }
        d = (d & !(1 << (pos + i))) | (((f >> i) & 1) << (pos + i));
    }
    d
}

#[inline]
pub fn unary(op: UnOp, ty: Ty, a: u64) -> u64 {
    let bits = ty.bits();
    let m = ty.mask();
    let a = a & m;
    let r = match op {
        UnOp::Not => {
            if ty == Ty::Pred {
                a ^ 1
            } else {
                !a
            }
        }
        UnOp::Neg => a.wrapping_neg(),
        UnOp::Abs => sext(a, bits).unsigned_abs(),
        UnOp::Popc => a.count_ones() as u64,
        UnOp::Clz => (a.leading_zeros() - (64 - bits)) as u64,
        UnOp::Brev => a.reverse_bits() >> (64 - bits),
        UnOp::Cnot => (a == 0) as u64,
    };
    if matches!(op, UnOp::Popc | UnOp::Clz) {
        r
    } else {
        r & m
    }
}

/// `setp`'s comparison of `a` and `b` as `ty`.
#[inline]
pub fn compare(cmp: Cmp, ty: Ty, a: u64, b: u64) -> bool {
    if ty.is_float() {
        let (x, y) = if ty == Ty::F64 {
            (f64::from_bits(a), f64::from_bits(b))
        } else {
            (
                f32::from_bits(a as u32) as f64,
                f32::from_bits(b as u32) as f64,
            )
        };
        let unordered = x.is_nan() || y.is_nan();
        return match cmp {
            Cmp::Eq => x == y,
            Cmp::Ne => !unordered && x != y,
            Cmp::Lt => x < y,
            Cmp::Le => x <= y,
            Cmp::Gt => x > y,
            Cmp::Ge => x >= y,
            Cmp::Equ => unordered || x == y,
            Cmp::Neu => unordered || x != y,
            Cmp::Ltu => unordered || x < y,
            Cmp::Leu => unordered || x <= y,
            Cmp::Gtu => unordered || x > y,
            Cmp::Geu => unordered || x >= y,
            Cmp::Num => !unordered,
            Cmp::Nan => unordered,
        };
    }
    let bits = ty.bits();
    let m = ty.mask();
    if ty.is_signed() {
        let (x, y) = (sext(a, bits), sext(b, bits));
        ordered(cmp, x.cmp(&y))
    } else {
        ordered(cmp, (a & m).cmp(&(b & m)))
    }
}

fn ordered(cmp: Cmp, o: std::cmp::Ordering) -> bool {
    use std::cmp::Ordering::*;
    match cmp {
        Cmp::Eq | Cmp::Equ => o == Equal,
        Cmp::Ne | Cmp::Neu => o != Equal,
        Cmp::Lt | Cmp::Ltu => o == Less,
        Cmp::Le | Cmp::Leu => o != Greater,
        Cmp::Gt | Cmp::Gtu => o == Greater,
        Cmp::Ge | Cmp::Geu => o != Less,
        Cmp::Num => true,
        Cmp::Nan => false,
    }
}

#[inline]
pub fn combine(op: BoolOp, a: bool, b: bool) -> bool {
    match op {
        BoolOp::And => a && b,
        BoolOp::Or => a || b,
        BoolOp::Xor => a ^ b,
    }
}

/// A float rounded to an integer value with the `cvt` integer rounding `r`.
fn round_int(x: f64, r: Option<Rounding>) -> f64 {
    match r {
        Some(Rounding::IntNearest) | Some(Rounding::Nearest) => x.round_ties_even(),
        Some(Rounding::IntDown) => x.floor(),
        Some(Rounding::IntUp) => x.ceil(),
        Some(Rounding::IntZero) | None => x.trunc(),
    }
}

/// The value of a register of type `ty` as f64 (floats) — exact for every f32.
fn as_f64(ty: Ty, a: u64) -> f64 {
    match ty {
        Ty::F64 => f64::from_bits(a),
        Ty::F32 => f32::from_bits(a as u32) as f64,
        Ty::BF16 => bf16_to_f32(a as u16) as f64,
        _ => f64::NAN,
    }
}

/// `cvt.rnd.to.from`. Float → integer saturates to the destination range (NaN → 0), as PTX
/// specifies; integer → integer truncates or extends (`.sat` clamps).
pub fn cvt(to: Ty, from: Ty, rounding: Option<Rounding>, ftz: bool, sat: bool, a: u64) -> u64 {
    let a = a & from.mask();
    match (to.is_float(), from.is_float()) {
        (false, false) => {
            let v = if from.is_signed() {
                sext(a, from.bits()) as i128
            } else {
                a as i128
            };
            let v = if sat { clamp_int(v, to) } else { v };
            (v as u64) & to.mask()
        }
        (false, true) => {
            let x = as_f64(from, a);
            if x.is_nan() {
                return 0;
            }
            let r = round_int(x, rounding);
            (clamp_int(r.clamp(-1.8e19, 3.7e19) as i128, to) as u64) & to.mask()
        }
        (true, false) => {
            let v = if from.is_signed() {
                sext(a, from.bits()) as i128
            } else {
                a as i128
            };
            float_from(to, v as f64, v)
        }
        (true, true) => {
            if from == Ty::F32 && to == Ty::F32 {
                // cvt.rni.f32.f32 and friends round to an integral value.
                let x = f32::from_bits(a as u32);
                let x = if ftz { super::float::ftz32(x) } else { x };
                let r = match rounding {
                    Some(Rounding::Nearest) | None => x,
                    other => round_int(x as f64, other) as f32,
                };
                let r = if sat { r.clamp(0.0, 1.0) } else { r };
                return r.to_bits() as u64;
            }
            let x = as_f64(from, a);
            match to {
                Ty::F64 => x.to_bits(),
                Ty::F32 => {
                    let r = x as f32;
                    (if ftz { super::float::ftz32(r) } else { r }).to_bits() as u64
                }
                Ty::BF16 => f32_to_bf16(x as f32) as u64,
                _ => 0,
            }
        }
    }
}

/// An integer `v` (exactly representable in i128) converted to float type `to`, rounded to
/// nearest even.
fn float_from(to: Ty, approx: f64, v: i128) -> u64 {
    match to {
        Ty::F64 => approx.to_bits(),
        // i128 → f32 directly rounds once (f64 first could double-round 64-bit integers).
        Ty::F32 => (v as f32).to_bits() as u64,
        Ty::BF16 => f32_to_bf16(v as f32) as u64,
        _ => 0,
    }
}

fn clamp_int(v: i128, to: Ty) -> i128 {
    let bits = to.bits();
    let (lo, hi) = if to.is_signed() {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    } else {
        (0, (1i128 << bits) - 1)
    };
    v.clamp(lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_ops_wrap_and_sign_extend() {
        assert_eq!(int(IntOp::Add, Ty::S32, 0xffff_ffff, 2), 1);
        assert_eq!(int(IntOp::Sub, Ty::U32, 0, 1), 0xffff_ffff);
        assert_eq!(int(IntOp::Shr, Ty::S32, 0x8000_0000, 4), 0xf800_0000);
        assert_eq!(int(IntOp::Shr, Ty::U32, 0x8000_0000, 4), 0x0800_0000);
        assert_eq!(int(IntOp::Shl, Ty::B32, 1, 32), 0);
        assert_eq!(int(IntOp::Div, Ty::U32, 7, 0), 0xffff_ffff);
        assert_eq!(int(IntOp::Min, Ty::S32, 0xffff_ffff, 3), 0xffff_ffff);
        assert_eq!(int(IntOp::Min, Ty::U32, 0xffff_ffff, 3), 3);
        assert_eq!(int(IntOp::MulHi, Ty::U32, 0x8000_0000, 4), 2);
        assert_eq!(mul_wide(Ty::U32, 0xffff_ffff, 2), 0x1_ffff_fffe);
        assert_eq!(mul_wide(Ty::S32, 0xffff_ffff, 2), (-2i64) as u64);
        assert_eq!(mad(MulMode::Wide, Ty::U32, 3, 4, 5), 17);
        assert_eq!(unary(UnOp::Not, Ty::Pred, 1), 0);
        assert_eq!(unary(UnOp::Clz, Ty::B32, 1), 31);
        assert_eq!(unary(UnOp::Neg, Ty::S64, 1), u64::MAX);
        assert_eq!(bfe(Ty::U32, 0xabcd_1234, 8, 8), 0x12);
        // Bits 12..16 of 0x8000 are 0b1000; the field's top bit (bit 15) is replicated above it.
        assert_eq!(bfe(Ty::S32, 0x0000_8000, 12, 4), 0xffff_fff8);
        assert_eq!(bfe(Ty::U32, 0xffff_ffff, 28, 8), 0xf);
        assert_eq!(bfi(Ty::B32, 0xf, 0, 4, 4), 0xf0);
        assert_eq!(bfi(Ty::B32, 0, 0xffff_ffff, 8, 8), 0xffff_00ff);
    }

    #[test]
    fn comparisons_by_type() {
        assert!(compare(Cmp::Lt, Ty::S32, 0xffff_ffff, 0));
        assert!(!compare(Cmp::Lt, Ty::U32, 0xffff_ffff, 0));
        let nan = f32::NAN.to_bits() as u64;
        let one = 1f32.to_bits() as u64;
        assert!(!compare(Cmp::Lt, Ty::F32, nan, one));
        assert!(compare(Cmp::Ltu, Ty::F32, nan, one));
        assert!(!compare(Cmp::Ne, Ty::F32, nan, one));
        assert!(compare(Cmp::Neu, Ty::F32, nan, one));
    }

    #[test]
    fn conversions() {
        assert_eq!(
            cvt(Ty::U64, Ty::U32, None, false, false, 0xffff_ffff),
            0xffff_ffff
        );
        assert_eq!(
            cvt(Ty::S64, Ty::S32, None, false, false, 0xffff_ffff),
            u64::MAX
        );
        assert_eq!(cvt(Ty::U32, Ty::U64, None, false, false, 0x1_0000_0005), 5);
        let f = cvt(Ty::F32, Ty::U64, Some(Rounding::Nearest), false, false, 3);
        assert_eq!(f32::from_bits(f as u32), 3.0);
        let big = cvt(
            Ty::F32,
            Ty::U64,
            Some(Rounding::Nearest),
            false,
            false,
            u64::MAX,
        );
        assert_eq!(f32::from_bits(big as u32), u64::MAX as f32);
        let x = (-2.5f32).to_bits() as u64;
        assert_eq!(
            cvt(Ty::S32, Ty::F32, Some(Rounding::IntZero), false, false, x),
            (-2i32) as u32 as u64
        );
        assert_eq!(
            cvt(
                Ty::S32,
                Ty::F32,
                Some(Rounding::IntNearest),
                false,
                false,
                x
            ),
            (-2i32) as u32 as u64
        );
        assert_eq!(
            cvt(Ty::U32, Ty::F32, Some(Rounding::IntZero), false, false, x),
            0
        );
        let huge = 1e20f32.to_bits() as u64;
        assert_eq!(
            cvt(
                Ty::S32,
                Ty::F32,
                Some(Rounding::IntZero),
                false,
                false,
                huge
            ),
            0x7fff_ffff
        );
        let h = cvt(
            Ty::BF16,
            Ty::F32,
            Some(Rounding::Nearest),
            false,
            false,
            1f32.to_bits() as u64,
        );
        assert_eq!(h, 0x3f80);
    }
}
