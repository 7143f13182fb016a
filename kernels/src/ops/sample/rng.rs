//! Randomness that host and device compute bit for bit alike.
//!
//! * [`philox`]: the counter-based generator Philox4x32-10 (Salmon et al., "Parallel random
//!   numbers: as easy as 1, 2, 3", SC 2011): a keyed bijection of a 128-bit counter, so every
//!   (seed, position, token id) has its own independent draw, whichever thread, block or engine
//!   asks for it and in whatever order.
//! * [`ln`] and [`exp_nonpositive`]: logarithm and exponential from IEEE additions,
//!   multiplications and divisions only. The GPU's `lg2.approx`/`ex2.approx` and the host's
//!   libm differ in their last bits; these give the same bits everywhere (Rust never fuses a
//!   multiply and an add on its own), so the cpu engine reproduces the device's noise exactly.

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

#[inline(always)]
fn mul_hi_lo(a: u32, b: u32) -> (u32, u32) {
    let p = a as u64 * b as u64;
    ((p >> 32) as u32, p as u32)
}

/// Philox4x32 with 10 rounds: the four 32-bit words of `counter` under `key`.
#[inline(always)]
pub fn philox(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let [mut c0, mut c1, mut c2, mut c3] = counter;
    let [mut k0, mut k1] = key;
    let mut round = 0;
    while round < 10 {
        if round > 0 {
            k0 = k0.wrapping_add(W0);
            k1 = k1.wrapping_add(W1);
        }
        let (hi0, lo0) = mul_hi_lo(M0, c0);
        let (hi1, lo1) = mul_hi_lo(M1, c2);
        (c0, c1, c2, c3) = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0);
        round += 1;
    }
    [c0, c1, c2, c3]
}

/// A uniform draw in the open interval (0, 1) for `token` at `position` under `seed`: 24
/// random bits, centred, so both ends are excluded and the value is exact in f32.
#[inline(always)]
pub fn uniform(seed: u64, position: u32, token: u32) -> f32 {
    let bits = philox([token, position, 0, 0], [seed as u32, (seed >> 32) as u32])[0];
    ((bits >> 8) as f32 + 0.5) * (1.0 / 16_777_216.0)
}

/// Standard Gumbel noise `-ln(-ln u)` for `token` at `position` under `seed`: the argmax of
/// `logit / T + gumbel` over tokens is a draw from `softmax(logit / T)`.
#[inline(always)]
pub fn gumbel(seed: u64, position: u32, token: u32) -> f32 {
    -ln(-ln(uniform(seed, position, token)))
}

const LN_2: f32 = core::f32::consts::LN_2;

/// Natural logarithm of a positive, normal `x` (relative error below 1e-7), from basic IEEE
/// operations only: `x = m · 2^e` with `m` in [√½, √2), and `ln m = 2 atanh(s)` with
/// `s = (m - 1) / (m + 1)`, `|s| ≤ 0.172`, summed to `s⁹`.
#[inline(always)]
pub fn ln(x: f32) -> f32 {
    let bits = x.to_bits();
    let mut e = ((bits >> 23) & 0xff) as i32 - 127;
    let mut m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    if m > core::f32::consts::SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let series = 1.0 + s2 * (1.0 / 3.0 + s2 * (1.0 / 5.0 + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0))));
    e as f32 * LN_2 + 2.0 * s * series
}

/// `e^x` for `x ≤ 0` (relative error below 2e-7; 0 below -87), from basic IEEE operations
/// only: `x = k ln 2 + r` with `|r| ≤ ln 2 / 2`, a degree-7 Taylor polynomial for `e^r`, and
/// `2^k` built from its exponent bits.
#[inline(always)]
pub fn exp_nonpositive(x: f32) -> f32 {
    if x < -87.0 {
        return 0.0;
    }
    // Round x / ln 2 to the nearest integer (x ≤ 0, so truncating -t + ½ rounds).
    let k = -((-x * core::f32::consts::LOG2_E + 0.5) as i32);
    // ln 2 in two parts (Cody and Waite): LN2_HI has 9 significant bits, so k · LN2_HI is
    // exact and r keeps its low bits.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let r = (x - k as f32 * LN2_HI) - k as f32 * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    p * f32::from_bits(((k + 127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn philox_matches_the_published_known_answers() {
        // Random123's kat_vectors for philox4x32-10.
        assert_eq!(
            philox([0, 0, 0, 0], [0, 0]),
            [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]
        );
        assert_eq!(
            philox([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]
        );
    }

    #[test]
    fn ln_and_exp_are_accurate() {
        let mut x = 1e-8f32;
        while x < 100.0 {
            let ours = ln(x) as f64;
            let want = (x as f64).ln();
            assert!(
                (ours - want).abs() <= 2e-7 * want.abs().max(1.0),
                "ln({x}) = {ours}"
            );
            x *= 1.013;
        }
        let mut x = 0.0f32;
        while x > -87.0 {
            let ours = exp_nonpositive(x) as f64;
            let want = (x as f64).exp();
            assert!(
                (ours - want).abs() <= 3e-7 * want,
                "exp({x}) = {ours}, not {want}"
            );
            x -= 0.0371;
        }
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-100.0), 0.0);
    }

    #[test]
    fn uniform_draws_are_in_the_open_interval_and_differ_by_key() {
        let draws: Vec<f32> = (0..1000).map(|t| uniform(42, 7, t)).collect();
        assert!(draws.iter().all(|&u| u > 0.0 && u < 1.0));
        let mean = draws.iter().map(|&u| u as f64).sum::<f64>() / 1000.0;
        assert!((mean - 0.5).abs() < 0.03, "mean {mean}");
        assert_ne!(uniform(42, 7, 3), uniform(42, 8, 3));
        assert_ne!(uniform(42, 7, 3), uniform(43, 7, 3));
        assert_eq!(uniform(42, 7, 3), uniform(42, 7, 3));
    }
}
