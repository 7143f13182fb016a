//! Matrix–matrix products for the batched prefill, through the `matrixmultiply` crate's sgemm
//! (packed panels and an FMA micro-kernel chosen at run time: AVX-512, AVX2 or NEON).
//!
//! Every product is f32 × f32 accumulated in f32, as transformers' float32 matmuls are. BF16
//! weights are widened one block of rows at a time, just before they are multiplied, so no f32
//! copy of the model is ever held.

use half::bf16;
use rayon::prelude::*;

/// Widened weight values one task multiplies at a time: 512 KiB of f32, which stays in a
/// core's L2 cache while sgemm packs it.
const BLOCK_VALUES: usize = 128 * 1024;

/// A matrix inside a slice: element `(i, j)` is `data[i * row_stride + j * col_stride]`, so a
/// transpose or a column range of a wider matrix needs no copy.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> View<'a> {
    /// `data` as a dense row-major `rows × cols` matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        View {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// Panics unless every element lies inside `data`: the one check that makes handing the
    /// pointer to sgemm sound.
    fn assert_in_bounds(&self) {
        if self.rows == 0 || self.cols == 0 {
            return;
        }
        let last = (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride;
        assert!(
            last < self.data.len(),
            "a {}×{} view with strides ({}, {}) overruns its {} values",
            self.rows,
            self.cols,
            self.row_stride,
            self.col_stride,
            self.data.len()
        );
    }
}

/// `c = alpha · a · b`, with `c` dense row-major `a.rows × b.cols` (overwritten, not read).
pub fn gemm(alpha: f32, a: View<'_>, b: View<'_>, c: &mut [f32]) {
    assert_eq!(a.cols, b.rows, "inner dimensions differ");
    assert_eq!(c.len(), a.rows * b.cols, "the output has the wrong size");
    a.assert_in_bounds();
    b.assert_in_bounds();
    if c.is_empty() {
        return;
    }
    if a.cols == 0 {
        c.fill(0.0);
        return;
    }
    // SAFETY: `a` and `b` lie inside their slices (checked above) and are only read; `c` is
    // exactly `a.rows × b.cols` dense row-major values, borrowed exclusively here. With beta 0
    // sgemm writes `c` without reading it.
    unsafe {
        matrixmultiply::sgemm(
            a.rows,
            a.cols,
            b.cols,
            alpha,
            a.data.as_ptr(),
            a.row_stride as isize,
            a.col_stride as isize,
            b.data.as_ptr(),
            b.row_stride as isize,
            b.col_stride as isize,
            0.0,
            c.as_mut_ptr(),
            b.cols as isize,
            1,
        );
    }
}

/// `out` as a raw pointer that rayon tasks may share; each task writes only its own columns.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: the pointer is only dereferenced by sgemm inside `project`, where every task writes a
// disjoint set of columns of an output that `project` borrows exclusively until all tasks end.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

/// A linear layer over a batch: `out = x · wᵀ`, where `x` is `[tokens, k]` row-major f32, `w`
/// is the layer's BF16 weight as stored (`[n, k]` row-major, one row per output feature) and
/// `out` is `[tokens, n]` row-major.
///
/// Blocks of output columns run in parallel: each task widens its block of weight rows to f32
/// and multiplies the whole batch by it, so every weight is read from memory once per batch
/// however many tokens the batch holds.
pub fn project(x: &[f32], w: &[bf16], k: usize, out: &mut [f32]) {
    assert!(k > 0 && x.len().is_multiple_of(k) && w.len().is_multiple_of(k));
    let (tokens, n) = (x.len() / k, w.len() / k);
    assert_eq!(out.len(), tokens * n, "the output has the wrong size");
    if out.is_empty() {
        return;
    }
    // Whole micro-kernel panels (8 columns) per block, at least one panel.
    let block = (BLOCK_VALUES / k / 8 * 8).max(8).min(n);
    let shared = SharedOut(out.as_mut_ptr());
    (0..n.div_ceil(block)).into_par_iter().for_each_init(
        || vec![0f32; block * k],
        |widened, b| {
            let (first, last) = (b * block, ((b + 1) * block).min(n));
            let columns = last - first;
            let widened = &mut widened[..columns * k];
            for (f, &v) in widened.iter_mut().zip(&w[first * k..last * k]) {
                *f = v.to_f32();
            }
            let out = shared;
            // SAFETY: `x` holds `tokens × k` values and `widened` holds `columns × k`, read as
            // the `k × columns` matrix wᵀ (row stride 1, column stride k). The task writes
            // elements `(t, first..last)` of `out`, at `t * n + j` < `tokens * n`: inside the
            // slice `project` borrows exclusively, and in columns no other task writes.
            unsafe {
                matrixmultiply::sgemm(
                    tokens,
                    k,
                    columns,
                    1.0,
                    x.as_ptr(),
                    k as isize,
                    1,
                    widened.as_ptr(),
                    1,
                    k as isize,
                    0.0,
                    out.0.add(first),
                    n as isize,
                    1,
                );
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small integers: every product and sum is exact in f32, so any summation order agrees.
    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7 + seed * 13) % 11) as f32 - 5.0)
            .collect()
    }

    #[test]
    fn gemm_equals_the_textbook_sum_through_strides() {
        let (m, k, n) = (5, 7, 3);
        let a = values(m * k, 1);
        // `b` is stored transposed: element (p, j) at j * k + p.
        let b_t = values(n * k, 2);
        let b = View {
            data: &b_t,
            rows: k,
            cols: n,
            row_stride: 1,
            col_stride: k,
        };
        let mut c = vec![f32::NAN; m * n];
        gemm(0.5, View::row_major(&a, m, k), b, &mut c);
        for i in 0..m {
            for j in 0..n {
                let sum: f32 = (0..k).map(|p| a[i * k + p] * b_t[j * k + p]).sum();
                assert_eq!(c[i * n + j], 0.5 * sum, "({i}, {j})");
            }
        }
    }

    #[test]
    #[should_panic(expected = "overruns")]
    fn a_view_past_its_slice_is_refused() {
        let data = [0f32; 10];
        let a = View {
            data: &data,
            rows: 3,
            cols: 4,
            row_stride: 4,
            col_stride: 1,
        };
        let mut c = [0f32; 3];
        gemm(1.0, a, View::row_major(&[0f32; 4], 4, 1), &mut c);
    }

    #[test]
    fn project_equals_per_token_dot_products_across_many_blocks() {
        // k = 1000 gives blocks of 128 columns: 300 outputs make three blocks, the last partial.
        let (tokens, k, n) = (9, 1000, 300);
        let x = values(tokens * k, 3);
        let w: Vec<bf16> = values(n * k, 4).into_iter().map(bf16::from_f32).collect();
        let mut out = vec![f32::NAN; tokens * n];
        project(&x, &w, k, &mut out);
        for t in 0..tokens {
            for j in 0..n {
                let dot: f32 = (0..k).map(|p| x[t * k + p] * w[j * k + p].to_f32()).sum();
                assert_eq!(out[t * n + j], dot, "token {t}, output {j}");
            }
        }
    }
}
