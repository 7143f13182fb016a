//! The KV cache's element type on the host: which one each engine takes by default, and the
//! f32 → BF16 rounding the cpu engine applies and the emulator and gpu engines' cache writes
//! use (`bench --fill random`), bit for bit the kernel's.

pub use qwenmk_kernels::step::KvDtype;

use super::Device;

/// The element type an engine takes when `--kv-cache` is not given: BF16 on the gpu engine
/// (as llama.cpp and vLLM do: half the bytes each step reads per position), f32 on the cpu and
/// emulator engines, which check the kernel against transformers' float32 reference.
pub fn default_for(device: Device) -> KvDtype {
    match device {
        Device::Gpu => KvDtype::Bf16,
        Device::Auto | Device::Cpu | Device::Emulator => KvDtype::F32,
    }
}

/// `x` rounded to BF16 bits: to nearest, ties to even; a value past the largest BF16 finite
/// value (or rounding up to it) becomes infinity of its sign; subnormals round like any other
/// value (no flush to zero); a NaN stays a quiet NaN with its sign and top payload bits.
pub fn f32_to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x0040) as u16;
    }
    let (kept, dropped) = (bits >> 16, bits & 0xffff);
    let up = dropped > 0x8000 || (dropped == 0x8000 && kept & 1 == 1);
    // `kept + 1` carries into the exponent when the kept mantissa is all ones: the next
    // binade, or infinity from the largest finite values. An infinity's dropped half is zero,
    // so it stays infinite; only NaNs could carry further, and they left above.
    (kept + up as u32) as u16
}

/// BF16 bits widened to f32, exactly.
pub fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

/// `x` as a cache of `kv` values holds it.
pub fn round(x: f32, kv: KvDtype) -> f32 {
    match kv {
        KvDtype::F32 => x,
        KvDtype::Bf16 => bf16_to_f32(f32_to_bf16(x)),
    }
}

/// `values` as the bytes a cache of `kv` values holds (native endianness, as the kernel's
/// memory: little-endian on every machine qwenmk runs on).
pub fn encode(values: &[f32], kv: KvDtype) -> Vec<u8> {
    match kv {
        KvDtype::F32 => values.iter().flat_map(|v| v.to_ne_bytes()).collect(),
        KvDtype::Bf16 => values
            .iter()
            .flat_map(|&v| f32_to_bf16(v).to_ne_bytes())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qwenmk_kernels::device::emu;

    fn bits(x: u32) -> u16 {
        f32_to_bf16(f32::from_bits(x))
    }

    #[test]
    fn rounding_is_to_nearest_even() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        assert_eq!(f32_to_bf16(-2.0), 0xc000);
        // Below, at and above the tie, from an even and from an odd kept half.
        assert_eq!(bits(0x3f80_7fff), 0x3f80);
        assert_eq!(bits(0x3f80_8000), 0x3f80, "tie, even: stays");
        assert_eq!(bits(0x3f80_8001), 0x3f81);
        assert_eq!(bits(0x3f81_8000), 0x3f82, "tie, odd: up to even");
        assert_eq!(bits(0xbf81_8000), 0xbf82, "negative ties alike");
        assert_eq!(bits(0x3f81_7fff), 0x3f81);
        // A carry into the exponent.
        assert_eq!(bits(0x3fff_ffff), 0x4000);
        // 1/3 and pi, against their correctly rounded BF16 values.
        assert_eq!(f32_to_bf16(1.0 / 3.0), 0x3eab);
        assert_eq!(f32_to_bf16(std::f32::consts::PI), 0x4049);
    }

    #[test]
    fn overflow_infinities_zeros_subnormals_and_nan() {
        // The largest finite f32 and anything at or past BF16's largest finite + half an ulp
        // round to infinity; just below stays finite.
        assert_eq!(f32_to_bf16(f32::MAX), 0x7f80);
        assert_eq!(f32_to_bf16(f32::MIN), 0xff80);
        assert_eq!(bits(0x7f7f_8000), 0x7f80, "tie at the top, odd: infinity");
        assert_eq!(bits(0x7f7f_7fff), 0x7f7f);
        assert_eq!(f32_to_bf16(f32::INFINITY), 0x7f80);
        assert_eq!(f32_to_bf16(f32::NEG_INFINITY), 0xff80);
        assert_eq!(f32_to_bf16(0.0), 0x0000);
        assert_eq!(f32_to_bf16(-0.0), 0x8000);
        // Subnormals are kept (no flush to zero) and round like normal values; the largest
        // subnormal rounds up into the smallest normal.
        assert_eq!(bits(0x0000_0001), 0x0000);
        assert_eq!(bits(0x0001_8000), 0x0002);
        assert_eq!(bits(0x0000_8001), 0x0001);
        assert_eq!(bits(0x007f_ffff), 0x0080);
        assert_eq!(bits(0x8000_8001), 0x8001);
        // NaN stays NaN (quiet), whatever its payload, even one that lives only in the low
        // half (truncation would make it an infinity).
        for nan in [
            0x7fc0_0000u32,
            0x7f80_0001,
            0xff80_0001,
            0x7fff_ffff,
            0xffc0_1234,
        ] {
            let b = bits(nan);
            assert!(bf16_to_f32(b).is_nan(), "{nan:#x} → {b:#x}");
            assert_eq!(b & 0x8000, (nan >> 16) as u16 & 0x8000, "sign of {nan:#x}");
        }
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
        assert_eq!(round(1.0 + f32::EPSILON, KvDtype::Bf16), 1.0);
        assert_eq!(round(1.0 + f32::EPSILON, KvDtype::F32), 1.0 + f32::EPSILON);
    }

    /// The emulator's device conversion (what the kernel runs on the host), `half`'s (a third
    /// opinion) and this one agree on every sign, exponent and low half of the mantissa, and on
    /// a stride through the rest of the 2^32 bit patterns.
    #[test]
    fn the_emulator_and_half_round_the_same() {
        let check = |x: u32| {
            let f = f32::from_bits(x);
            let ours = f32_to_bf16(f);
            let device = emu::f32x2_to_bf16x2(f, -f);
            assert_eq!(device as u16, ours, "{x:#010x} on the emulator");
            assert_eq!((device >> 16) as u16, f32_to_bf16(-f), "{x:#010x} negated");
            assert_eq!(emu::f32_to_bf16(f), ours, "{x:#010x}");
            let half = half::bf16::from_f32(f).to_bits();
            if f.is_nan() {
                assert!(half::bf16::from_bits(ours).is_nan(), "{x:#010x}");
            } else {
                assert_eq!(half, ours, "{x:#010x} with half");
            }
        };
        for high in [
            0u32, 0x0080, 0x3f80, 0x3f81, 0x7f7f, 0x7f80, 0x8000, 0xff7f, 0xffc0,
        ] {
            for low in 0..=0xffffu32 {
                check(high << 16 | low);
            }
        }
        let mut x = 0u32;
        loop {
            check(x);
            match x.checked_add(65_521) {
                Some(next) => x = next,
                None => break,
            }
        }
    }

    #[test]
    fn encoding_gives_the_cache_bytes() {
        let v = [1.0f32, -2.5, 1.0 / 3.0];
        assert_eq!(encode(&v, KvDtype::F32).len(), 12);
        let b = encode(&v, KvDtype::Bf16);
        assert_eq!(b.len(), 6);
        assert_eq!(u16::from_ne_bytes([b[4], b[5]]), 0x3eab);
        assert_eq!(default_for(Device::Gpu), KvDtype::Bf16);
        assert_eq!(default_for(Device::Cpu), KvDtype::F32);
        assert_eq!(default_for(Device::Emulator), KvDtype::F32);
    }
}
