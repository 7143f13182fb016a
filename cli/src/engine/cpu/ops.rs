//! The numerical pieces of the CPU engine, each written the way Hugging Face transformers
//! computes it in float32 (`modeling_qwen3.py`), so that this engine can serve as the oracle.

use half::bf16;
use rayon::prelude::*;

/// Output rows one rayon task computes: big enough to amortise scheduling, small enough that
/// the 1,024-row projections still spread over all cores.
const ROWS_PER_TASK: usize = 16;

/// Exact BF16 → f32 widening (BF16 is the upper half of an f32).
#[inline]
fn widen(v: bf16) -> f32 {
    f32::from_bits(u32::from(v.to_bits()) << 16)
}

/// `w · x` for one row, accumulated in f32 across eight lanes (which the compiler vectorises),
/// the way a BLAS `sgemv` splits its sums.
#[inline]
fn dot(row: &[bf16], x: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (row_chunks, row_tail) = row.as_chunks::<8>();
    let (x_chunks, x_tail) = x.as_chunks::<8>();
    for (w, v) in row_chunks.iter().zip(x_chunks) {
        // Widen the whole chunk first: written per element inside the accumulation, LLVM
        // keeps it scalar (measured 4-6x slower).
        let w: [f32; 8] = w.map(widen);
        for i in 0..8 {
            lanes[i] += w[i] * v[i];
        }
    }
    let mut sum = lanes.iter().sum::<f32>();
    for (w, v) in row_tail.iter().zip(x_tail) {
        sum += widen(*w) * v;
    }
    sum
}

/// `out = W x` with `W` row-major `[out.len(), x.len()]` in BF16; rows in parallel.
pub fn matvec(w: &[bf16], x: &[f32], out: &mut [f32]) {
    let cols = x.len();
    debug_assert_eq!(w.len(), out.len() * cols);
    out.par_chunks_mut(ROWS_PER_TASK)
        .enumerate()
        .for_each(|(task, out)| {
            let first_row = task * ROWS_PER_TASK;
            for (i, o) in out.iter_mut().enumerate() {
                let row = first_row + i;
                *o = dot(&w[row * cols..(row + 1) * cols], x);
            }
        });
}

/// Qwen3RMSNorm: `w * (x * rsqrt(mean(x²) + eps))`, all in f32 as transformers does. The mean
/// is accumulated in f64 so that it is the correctly rounded f32 mean whatever the length.
pub fn rms_norm(x: &[f32], weight: &[bf16], eps: f64, out: &mut [f32]) {
    let mean = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / x.len() as f64;
    let inv_rms = 1.0 / (mean as f32 + eps as f32).sqrt();
    for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight) {
        *o = widen(w) * (v * inv_rms);
    }
}

/// RMSNorm in place over consecutive `weight.len()`-wide heads (Qwen3's q_norm / k_norm).
pub fn rms_norm_heads(x: &mut [f32], weight: &[bf16], eps: f64) {
    let mut normed = vec![0f32; weight.len()];
    for head in x.chunks_exact_mut(weight.len()) {
        rms_norm(head, weight, eps, &mut normed);
        head.copy_from_slice(&normed);
    }
}

/// RoPE inverse frequencies as transformers' default rope init computes them in float32:
/// `1 / theta^((2i) / head_dim)` for i in 0..head_dim/2.
pub fn rope_inv_freq(theta: f64, head_dim: usize) -> Vec<f32> {
    let base = theta as f32;
    (0..head_dim / 2)
        .map(|i| 1.0 / base.powf((2 * i) as f32 / head_dim as f32))
        .collect()
}

/// Rotate-half (non-interleaved) RoPE at `position`, in place over consecutive heads: element
/// `i` of the first half pairs with element `i + head_dim/2`, both rotated by
/// `position * inv_freq[i]`.
pub fn rope(x: &mut [f32], inv_freq: &[f32], position: usize) {
    let half = inv_freq.len();
    let (cos, sin): (Vec<f32>, Vec<f32>) = inv_freq
        .iter()
        .map(|&f| {
            let angle = position as f32 * f;
            (angle.cos(), angle.sin())
        })
        .unzip();
    for head in x.chunks_exact_mut(2 * half) {
        let (first, second) = head.split_at_mut(half);
        for i in 0..half {
            let (a, b) = (first[i], second[i]);
            // q * cos + rotate_half(q) * sin, rotate_half(q) = [-second, first]
            first[i] = a * cos[i] + (-b) * sin[i];
            second[i] = b * cos[i] + a * sin[i];
        }
    }
}

/// Numerically stable softmax in place, in f32.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in x.iter_mut() {
        *v /= sum;
    }
}

/// SiLU, `x * sigmoid(x)`.
#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// Index of the largest value, the lowest index among equals (as `torch.argmax`). `None` if any
/// value is NaN or the slice is empty.
#[cfg(test)]
pub fn argmax(values: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in values.iter().enumerate() {
        if v.is_nan() {
            return None;
        }
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bf(values: &[f32]) -> Vec<bf16> {
        values.iter().map(|&v| bf16::from_f32(v)).collect()
    }

    #[test]
    fn matvec_matches_naive_sums() {
        let (rows, cols) = (37, 21);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0)
            .collect();
        let x: Vec<f32> = (0..cols).map(|i| (i as f32 - 10.0) / 4.0).collect();
        let mut out = vec![0f32; rows];
        matvec(&bf(&w), &x, &mut out);
        for r in 0..rows {
            // Values are exact in BF16 and the sums small: every order gives the same f32.
            let expected: f32 = (0..cols).map(|c| w[r * cols + c] * x[c]).sum();
            assert_eq!(out[r], expected, "row {r}");
        }
    }

    #[test]
    fn rms_norm_of_a_constant_vector_is_the_weight() {
        let x = vec![3.0f32; 16];
        let w = bf(&(0..16).map(|i| i as f32 / 4.0).collect::<Vec<_>>());
        let mut out = vec![0f32; 16];
        rms_norm(&x, &w, 0.0, &mut out);
        for (o, w) in out.iter().zip(&w) {
            assert_eq!(*o, w.to_f32());
        }
    }

    #[test]
    fn rope_pairs_halves_and_preserves_norm() {
        let inv_freq = rope_inv_freq(1e6, 8);
        assert_eq!(inv_freq[0], 1.0);
        assert!((inv_freq[1] / 1e6f32.powf(-0.25) - 1.0).abs() < 1e-6);
        // Position 0 is the identity.
        let mut x = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let original = x.clone();
        rope(&mut x, &inv_freq, 0);
        assert_eq!(x, original);
        // Only element 0 set: after rotating by angle `p` (inv_freq[0] = 1), the pair (0, 4)
        // holds (cos p, sin p); nothing else moves.
        let mut x = vec![1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        rope(&mut x, &inv_freq, 3);
        assert_eq!(x[0], 3f32.cos());
        assert_eq!(x[4], 3f32.sin());
        assert!(x[1..4].iter().chain(&x[5..]).all(|&v| v == 0.0));
    }

    #[test]
    fn softmax_and_silu() {
        let mut x = vec![1000.0, 1000.0, f32::NEG_INFINITY];
        softmax(&mut x);
        assert_eq!(x, vec![0.5, 0.5, 0.0]);
        assert_eq!(silu(0.0), 0.0);
        assert!((silu(1.0) - 0.731_058_6).abs() < 1e-6);
    }

    #[test]
    fn argmax_prefers_the_lowest_index_among_ties() {
        assert_eq!(argmax(&[1.0, 3.0, 2.0, 3.0]), Some(1));
        assert_eq!(argmax(&[-1.0]), Some(0));
        assert_eq!(argmax(&[]), None);
        assert_eq!(argmax(&[1.0, f32::NAN]), None);
    }
}
