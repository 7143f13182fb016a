//! Host-side helpers of the step that need `std` (floating-point transcendental functions).

/// The RoPE table the kernel reads: for each position `0..positions`, `head_dim / 2` pairs
/// `(cos, sin)` of `pos · inv_freq[i]`, where `inv_freq[i] = 1 / θ^(2i / head_dim)`.
///
/// Computed in f32 exactly as Hugging Face's Qwen3 does (the power, the reciprocal and the
/// product each rounded to f32), so that the kernel's rotations match the reference bit for
/// bit at every position, including long contexts where f32 angles lose precision.
pub fn rope_table(theta: f64, head_dim: u32, positions: u32) -> Vec<f32> {
    let half = head_dim as usize / 2;
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| 1.0f32 / (theta as f32).powf((2 * i) as f32 / head_dim as f32))
        .collect();
    let mut table = Vec::with_capacity(positions as usize * head_dim as usize);
    for pos in 0..positions {
        for &f in &inv_freq {
            let angle = pos as f32 * f;
            table.push(angle.cos());
            table.push(angle.sin());
        }
    }
    table
}
