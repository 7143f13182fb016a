//! Helpers the kernel tests share: a deterministic generator and BF16 conversions.

/// A small deterministic generator (xorshift), so the tests need no crate and never change.
pub struct Rng(pub u64);

impl Rng {
    /// A value in [-1, 1).
    pub fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// `v` rounded to BF16, to nearest even, as torch does.
pub fn bf16(v: f32) -> u16 {
    let bits = v.to_bits();
    ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

/// A BF16 value widened exactly.
pub fn widen(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}
