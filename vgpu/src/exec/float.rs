//! Float semantics of PTX instructions.
//!
//! `.rn` operations are IEEE 754 round-to-nearest-even, which Rust's `f32`/`f64` arithmetic
//! is: bit-exact with the hardware. The approximate instructions (`ex2.approx`, `lg2.approx`,
//! `rsqrt.approx`, `sin.approx`, …) are computed in f64 and rounded once to f32, i.e. within
//! half an ulp of the true value. NVIDIA documents larger bounds for the hardware (PTX ISA 8.x,
//! "Floating-Point Instructions"): `ex2.approx.f32` max relative error 2⁻²² for |x| in its
//! normal range, `lg2.approx.f32` max absolute error 2⁻²²·⁶ on [0.5, 2], `rsqrt.approx.f32`
//! max relative error 2⁻²²·⁹, `sin/cos.approx.f32` max absolute error 2⁻²⁰·⁵ on [-π, π],
//! `tanh.approx.f32` max relative error 2⁻¹¹ — so a result of this interpreter is always a
//! value real hardware is allowed to produce, though not necessarily the same bits. A kernel
//! whose output depends on those last bits is fragile on hardware too.

use crate::isa::{FloatFn, FloatOp, Ty};

/// Flushes an f32 subnormal to a zero of the same sign (`.ftz`).
#[inline]
pub fn ftz32(x: f32) -> f32 {
    if x.is_subnormal() {
        f32::from_bits(x.to_bits() & 0x8000_0000)
    } else {
        x
    }
}

/// PTX `min`/`max`: a NaN operand yields the other operand; -0 is below +0.
#[inline]
fn min_max<F: Float>(a: F, b: F, max: bool) -> F {
    if a.is_nan() {
        return b;
    }
    if b.is_nan() {
        return a;
    }
    if a.is_zero() && b.is_zero() {
        // Pick by sign bit: min prefers -0, max prefers +0.
        return if a.sign() == max { b } else { a };
    }
    if (a < b) ^ max { a } else { b }
}

/// The float types the interpreter computes in.
pub trait Float: Copy + PartialOrd {
    fn is_nan(self) -> bool;
    fn is_zero(self) -> bool;
    /// True when the sign bit is set.
    fn sign(self) -> bool;
}

impl Float for f32 {
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
    fn is_zero(self) -> bool {
        self == 0.0
    }
    fn sign(self) -> bool {
        self.is_sign_negative()
    }
}

impl Float for f64 {
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
    fn is_zero(self) -> bool {
        self == 0.0
    }
    fn sign(self) -> bool {
        self.is_sign_negative()
    }
}

/// `a op b` on register bits of type `ty` (f32 or f64).
#[inline]
pub fn binary(op: FloatOp, ty: Ty, ftz: bool, a: u64, b: u64) -> u64 {
    if ty == Ty::F64 {
        let (a, b) = (f64::from_bits(a), f64::from_bits(b));
        let r = match op {
            FloatOp::Add => a + b,
            FloatOp::Sub => a - b,
            FloatOp::Mul => a * b,
            FloatOp::Div => a / b,
            FloatOp::Min => min_max(a, b, false),
            FloatOp::Max => min_max(a, b, true),
        };
        return r.to_bits();
    }
    let (mut a, mut b) = (f32::from_bits(a as u32), f32::from_bits(b as u32));
    if ftz {
        a = ftz32(a);
        b = ftz32(b);
    }
    let mut r = match op {
        FloatOp::Add => a + b,
        FloatOp::Sub => a - b,
        FloatOp::Mul => a * b,
        FloatOp::Div => a / b,
        FloatOp::Min => min_max(a, b, false),
        FloatOp::Max => min_max(a, b, true),
    };
    if ftz {
        r = ftz32(r);
    }
    r.to_bits() as u64
}

/// `a * b + c` with one rounding.
#[inline]
pub fn fma(ty: Ty, ftz: bool, a: u64, b: u64, c: u64) -> u64 {
    if ty == Ty::F64 {
        return f64::from_bits(a)
            .mul_add(f64::from_bits(b), f64::from_bits(c))
            .to_bits();
    }
    let f = |x: u64| {
        let v = f32::from_bits(x as u32);
        if ftz { ftz32(v) } else { v }
    };
    let r = f(a).mul_add(f(b), f(c));
    (if ftz { ftz32(r) } else { r }).to_bits() as u64
}

/// One-operand float functions.
#[inline]
pub fn unary(f: FloatFn, ty: Ty, ftz: bool, a: u64) -> u64 {
    if ty == Ty::F64 {
        let x = f64::from_bits(a);
        let r = match f {
            FloatFn::Neg => return a ^ (1 << 63),
            FloatFn::Abs => return a & !(1 << 63),
            FloatFn::Sqrt | FloatFn::SqrtApprox => x.sqrt(),
            FloatFn::Rcp | FloatFn::RcpApprox => 1.0 / x,
            FloatFn::RsqrtApprox => 1.0 / x.sqrt(),
            FloatFn::Ex2Approx => x.exp2(),
            FloatFn::Lg2Approx => x.log2(),
            FloatFn::SinApprox => x.sin(),
            FloatFn::CosApprox => x.cos(),
            FloatFn::TanhApprox => x.tanh(),
        };
        return r.to_bits();
    }
    let bits = a as u32;
    let mut x = f32::from_bits(bits);
    if ftz {
        x = ftz32(x);
    }
    let wide = x as f64;
    let r = match f {
        FloatFn::Neg => return (bits ^ 0x8000_0000) as u64,
        FloatFn::Abs => return (bits & 0x7fff_ffff) as u64,
        FloatFn::Sqrt => x.sqrt(),
        FloatFn::Rcp => 1.0 / x,
        FloatFn::SqrtApprox => wide.sqrt() as f32,
        FloatFn::RcpApprox => (1.0 / wide) as f32,
        FloatFn::RsqrtApprox => (1.0 / wide.sqrt()) as f32,
        FloatFn::Ex2Approx => wide.exp2() as f32,
        FloatFn::Lg2Approx => wide.log2() as f32,
        FloatFn::SinApprox => wide.sin() as f32,
        FloatFn::CosApprox => wide.cos() as f32,
        FloatFn::TanhApprox => wide.tanh() as f32,
    };
    (if ftz { ftz32(r) } else { r }).to_bits() as u64
}

/// f32 → bf16 bits, round to nearest even (NaN stays a quiet NaN).
#[inline]
pub fn f32_to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    let round = 0x7fff + ((b >> 16) & 1);
    (b.wrapping_add(round) >> 16) as u16
}

#[inline]
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rn_ops_are_ieee() {
        let bits = |x: f32| x.to_bits() as u64;
        let add = binary(FloatOp::Add, Ty::F32, false, bits(0.1), bits(0.2));
        assert_eq!(f32::from_bits(add as u32), 0.1f32 + 0.2f32);
        let r = fma(
            Ty::F32,
            false,
            bits(1.0 + f32::EPSILON),
            bits(1.0 - f32::EPSILON),
            bits(-1.0),
        );
        // The fused product keeps the -eps² term a separate multiply and add would lose.
        assert_eq!(f32::from_bits(r as u32), -f32::EPSILON * f32::EPSILON);
    }

    #[test]
    fn min_max_follow_ptx_for_nan_and_zero() {
        let bits = |x: f32| x.to_bits() as u64;
        let min =
            |a, b| f32::from_bits(binary(FloatOp::Min, Ty::F32, false, bits(a), bits(b)) as u32);
        let max =
            |a, b| f32::from_bits(binary(FloatOp::Max, Ty::F32, false, bits(a), bits(b)) as u32);
        assert_eq!(min(f32::NAN, 2.0), 2.0);
        assert_eq!(max(3.0, f32::NAN), 3.0);
        assert!(min(0.0, -0.0).is_sign_negative());
        assert!(max(-0.0, 0.0).is_sign_positive());
        assert_eq!(min(1.0, 2.0), 1.0);
        assert_eq!(max(1.0, 2.0), 2.0);
    }

    #[test]
    fn approximate_functions_are_within_the_documented_error() {
        for i in -1000..1000 {
            let x = i as f32 * 0.0123;
            let got = f32::from_bits(
                unary(FloatFn::Ex2Approx, Ty::F32, false, x.to_bits() as u64) as u32,
            );
            let exact = (x as f64).exp2();
            assert!(
                ((got as f64 - exact) / exact).abs() < 2f64.powf(-22.0),
                "{x}"
            );
        }
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        // Halfway between 0x3f80 and 0x3f81: ties to even (0x3f80).
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(bf16_to_f32(0x4000), 2.0);
    }
}
