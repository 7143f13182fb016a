//! Batched prefill: a run of prompt tokens goes through each layer together, so every
//! projection is one matrix–matrix product (each weight read once for the whole run, not once
//! per token) and attention is two products per head.
//!
//! The arithmetic is the decode step's, token by token (same norms, RoPE, softmax, SiLU, float32
//! throughout); only the order of the sums inside the products differs, so logits agree with the
//! one-token path to float32 rounding (tests/cpu_prefill_matches_steps.rs holds it to 1e-4).

use qwenmk_weights::{LayerWeights, ModelConfig, PackedModel};
use rayon::prelude::*;

use super::matmul::{self, View};
use super::{LayerCache, ops};

/// Query rows one attention task handles: a task's scores are `rows × positions`, which stays
/// a few MiB even at a 40k-token depth, and short prompts still split across heads.
const ATTENTION_ROWS: usize = 64;

/// Activations of a batch, `[tokens, width]` row-major each.
pub(super) struct Batch {
    /// How many tokens the buffers hold.
    capacity: usize,
    /// Residual stream, `[tokens, hidden]`.
    pub x: Vec<f32>,
    normed: Vec<f32>,
    /// `[tokens, q_dim + 2 * kv_dim]`: q, k, v of each token.
    qkv: Vec<f32>,
    attn: Vec<f32>,
    block_out: Vec<f32>,
    /// Interleaved gate/up, `[tokens, 2 * intermediate]`.
    gate_up: Vec<f32>,
    act: Vec<f32>,
}

impl Batch {
    /// Buffers for up to `tokens` tokens of `c`'s shapes.
    pub fn new(c: &ModelConfig, tokens: usize) -> Self {
        Batch {
            capacity: tokens,
            x: vec![0.0; tokens * c.hidden_size],
            normed: vec![0.0; tokens * c.hidden_size],
            qkv: vec![0.0; tokens * c.qkv_rows()],
            attn: vec![0.0; tokens * c.q_dim()],
            block_out: vec![0.0; tokens * c.hidden_size],
            gate_up: vec![0.0; tokens * 2 * c.intermediate_size],
            act: vec![0.0; tokens * c.intermediate_size],
        }
    }

    /// Runs `tokens` (at most the capacity) through every layer from position `start`,
    /// appending their keys and values to `cache`. Leaves the final residual of each token in
    /// the first `tokens.len()` rows of [`Batch::x`]. The ids must be inside the vocabulary.
    pub fn forward(
        &mut self,
        model: &PackedModel,
        inv_freq: &[f32],
        cache: &mut [LayerCache],
        start: usize,
        tokens: &[u32],
    ) {
        assert!(!tokens.is_empty() && tokens.len() <= self.capacity);
        let c = model.config();
        let hidden = c.hidden_size;
        let mut view = self.view(c, tokens.len());

        // 1. The residual stream starts as the tokens' embedding rows.
        for (x, &token) in view.x.chunks_exact_mut(hidden).zip(tokens) {
            let row = &model.embedding()[token as usize * hidden..][..hidden];
            for (x, e) in x.iter_mut().zip(row) {
                *x = e.to_f32();
            }
        }
        for (l, cache) in cache.iter_mut().enumerate() {
            let w = model.layer(l);
            // 2–8. Self-attention with its residual.
            view.attention_block(c, &w, inv_freq, start, cache);
            // 9–11. MLP with its residual.
            view.mlp_block(c, &w);
        }
    }

    /// The buffers cut to `n` tokens.
    fn view(&mut self, c: &ModelConfig, n: usize) -> BatchView<'_> {
        BatchView {
            x: &mut self.x[..n * c.hidden_size],
            normed: &mut self.normed[..n * c.hidden_size],
            qkv: &mut self.qkv[..n * c.qkv_rows()],
            attn: &mut self.attn[..n * c.q_dim()],
            block_out: &mut self.block_out[..n * c.hidden_size],
            gate_up: &mut self.gate_up[..n * 2 * c.intermediate_size],
            act: &mut self.act[..n * c.intermediate_size],
        }
    }
}

/// [`Batch`]'s buffers for the tokens of one pass.
struct BatchView<'a> {
    x: &'a mut [f32],
    normed: &'a mut [f32],
    qkv: &'a mut [f32],
    attn: &'a mut [f32],
    block_out: &'a mut [f32],
    gate_up: &'a mut [f32],
    act: &'a mut [f32],
}

impl BatchView<'_> {
    /// RMSNorm of every token's residual into `normed`.
    fn norm_rows(&mut self, weight: &[half::bf16], eps: f64) {
        let width = weight.len();
        self.x
            .par_chunks_exact(width)
            .zip(self.normed.par_chunks_exact_mut(width))
            .for_each(|(x, out)| ops::rms_norm(x, weight, eps, out));
    }

    /// Adds `block_out` to the residual stream.
    fn add_residual(&mut self) {
        for (x, o) in self.x.iter_mut().zip(self.block_out.iter()) {
            *x += o;
        }
    }

    /// `x += o_proj(attention(q_norm/k_norm/RoPE(qkv_proj(rms_norm(x)))))` for every token,
    /// appending the tokens' keys and values to `cache`.
    fn attention_block(
        &mut self,
        c: &ModelConfig,
        w: &LayerWeights<'_>,
        inv_freq: &[f32],
        start: usize,
        cache: &mut LayerCache,
    ) {
        let (q_dim, kv_dim) = (c.q_dim(), c.kv_dim());
        // 2. Pre-attention RMSNorm.
        self.norm_rows(w.input_norm, c.rms_norm_eps);
        // 3. Q, K, V of every token in one product.
        matmul::project(self.normed, w.qkv, c.hidden_size, self.qkv);
        // 4–5. Per-head RMSNorm of queries and keys, then RoPE at each token's position.
        self.qkv
            .par_chunks_exact_mut(c.qkv_rows())
            .enumerate()
            .for_each(|(t, row)| {
                let (q, kv) = row.split_at_mut(q_dim);
                let k = &mut kv[..kv_dim];
                ops::rms_norm_heads(q, w.q_norm, c.rms_norm_eps);
                ops::rms_norm_heads(k, w.k_norm, c.rms_norm_eps);
                ops::rope(q, inv_freq, start + t);
                ops::rope(k, inv_freq, start + t);
            });
        // 6. Append to the cache (rounded to its type).
        for row in self.qkv.chunks_exact(c.qkv_rows()) {
            cache.append(&row[q_dim..q_dim + kv_dim], &row[q_dim + kv_dim..]);
        }
        // 7. Causal grouped-query attention.
        causal_attention(c, start, self.qkv, cache, self.attn);
        // 8. Output projection and residual.
        matmul::project(self.attn, w.o, q_dim, self.block_out);
        self.add_residual();
    }

    /// `x += down(silu(gate(rms_norm(x))) * up(rms_norm(x)))` for every token.
    fn mlp_block(&mut self, c: &ModelConfig, w: &LayerWeights<'_>) {
        // 9. Post-attention RMSNorm.
        self.norm_rows(w.post_norm, c.rms_norm_eps);
        // 10. Gate and up in one product; rows interleave gate_j, up_j.
        matmul::project(self.normed, w.gate_up, c.hidden_size, self.gate_up);
        self.act
            .par_chunks_mut(c.intermediate_size)
            .zip(self.gate_up.par_chunks(2 * c.intermediate_size))
            .for_each(|(act, gate_up)| {
                for (a, pair) in act.iter_mut().zip(gate_up.chunks_exact(2)) {
                    *a = ops::silu(pair[0]) * pair[1];
                }
            });
        // 11. Down projection and residual.
        matmul::project(self.act, w.down, c.intermediate_size, self.block_out);
        self.add_residual();
    }
}

/// Attention of the batch's queries (in `qkv`, at positions `start..`) over the cache, which
/// already holds their own keys and values: query `t` sees positions `0..=start + t`. Writes
/// `[tokens, q_dim]` into `attn`.
///
/// Work splits by (query head, block of query rows): scores = scale · Q Kᵀ over the positions
/// the block's last row sees, a causal softmax per row (later positions get probability 0),
/// then scores · V.
fn causal_attention(
    c: &ModelConfig,
    start: usize,
    qkv: &[f32],
    cache: &LayerCache,
    attn: &mut [f32],
) {
    let (q_dim, kv_dim, head_dim, qkv_rows) = (c.q_dim(), c.kv_dim(), c.head_dim, c.qkv_rows());
    let tokens = qkv.len() / qkv_rows;
    let group = c.gqa_group_size();
    let scale = (head_dim as f32).powf(-0.5);
    let tasks: Vec<(usize, usize)> = (0..c.num_attention_heads)
        .flat_map(|h| {
            (0..tokens)
                .step_by(ATTENTION_ROWS)
                .map(move |first| (h, first))
        })
        .collect();
    let outputs: Vec<Vec<f32>> = tasks
        .par_iter()
        .map(|&(h, first)| {
            let rows = ATTENTION_ROWS.min(tokens - first);
            let positions = start + first + rows;
            let kv_offset = (h / group) * head_dim;
            let queries = View {
                data: &qkv[first * qkv_rows + h * head_dim..],
                rows,
                cols: head_dim,
                row_stride: qkv_rows,
                col_stride: 1,
            };
            let keys_t = View {
                data: &cache.keys[kv_offset..],
                rows: head_dim,
                cols: positions,
                row_stride: 1,
                col_stride: kv_dim,
            };
            let mut scores = vec![0f32; rows * positions];
            matmul::gemm(scale, queries, keys_t, &mut scores);
            for (i, row) in scores.chunks_exact_mut(positions).enumerate() {
                let seen = start + first + i + 1;
                ops::softmax(&mut row[..seen]);
                row[seen..].fill(0.0);
            }
            let values = View {
                data: &cache.values[kv_offset..],
                rows: positions,
                cols: head_dim,
                row_stride: kv_dim,
                col_stride: 1,
            };
            let mut out = vec![0f32; rows * head_dim];
            matmul::gemm(
                1.0,
                View::row_major(&scores, rows, positions),
                values,
                &mut out,
            );
            out
        })
        .collect();
    for (&(h, first), out) in tasks.iter().zip(&outputs) {
        for (i, row) in out.chunks_exact(head_dim).enumerate() {
            attn[(first + i) * q_dim + h * head_dim..][..head_dim].copy_from_slice(row);
        }
    }
}
