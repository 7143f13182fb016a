//! The `cpu` engine: a plain Qwen3 decoder in f32 over the packed BF16 weights, written to be
//! obviously correct rather than fast. It is the oracle every other engine is tested against,
//! so it follows Hugging Face transformers' float32 `Qwen3ForCausalLM` step by step.
//!
//! A decode step is matrix–vector work (memory-bound: every weight is read once per token). A
//! prompt is fed in batches instead (`cpu/prefill.rs`): its tokens go through each layer together as
//! matrix–matrix products, which read each weight once per batch.

mod matmul;
mod ops;
mod prefill;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use anyhow::{Result, bail};
use qwenmk_weights::{LayerWeights, ModelConfig, PackedModel};

use super::kv::{self, KvDtype};
use super::sampling::choose_token;
use super::{Engine, Next, Sampling};

/// One layer's cache: `position × kv_dim` keys and values, appended one position per step,
/// each rounded as a cache of `dtype` values holds it (kept in f32: BF16 widens exactly).
struct LayerCache {
    keys: Vec<f32>,
    values: Vec<f32>,
    dtype: KvDtype,
}

impl LayerCache {
    fn new(dtype: KvDtype) -> Self {
        LayerCache {
            keys: Vec::new(),
            values: Vec::new(),
            dtype,
        }
    }

    /// Appends keys and values (whole positions), rounded to the cache's type.
    fn append(&mut self, keys: &[f32], values: &[f32]) {
        let dtype = self.dtype;
        self.keys.extend(keys.iter().map(|&k| kv::round(k, dtype)));
        self.values
            .extend(values.iter().map(|&v| kv::round(v, dtype)));
    }
}

/// Per-step work buffers, allocated once.
struct Scratch {
    /// Residual stream, `[hidden]`.
    x: Vec<f32>,
    /// Normalised input of a block, `[hidden]`.
    normed: Vec<f32>,
    /// Fused projection output, `[q_dim + 2 * kv_dim]`.
    qkv: Vec<f32>,
    /// Attention output before `o`, `[q_dim]`.
    attn: Vec<f32>,
    /// Output of `o` or `down`, `[hidden]`.
    block_out: Vec<f32>,
    /// Interleaved gate/up output, `[2 * intermediate]`.
    gate_up: Vec<f32>,
    /// `silu(gate) * up`, `[intermediate]`.
    act: Vec<f32>,
}

/// Prompt tokens one batched pass takes by default (llama.cpp's default micro-batch): large
/// enough that the products run near the cores' peak, small enough that the pass's activations
/// stay in tens of MiB for Qwen3-0.6B.
pub const PREFILL_BATCH: usize = 512;

/// Greedy Qwen3 decoding on the CPU, one sequence at a time.
pub struct CpuEngine {
    model: Arc<PackedModel>,
    max_context: usize,
    /// Prompt tokens per batched pass of [`CpuEngine::prefill_logits`].
    prefill_batch: usize,
    position: usize,
    inv_freq: Vec<f32>,
    cache: Vec<LayerCache>,
    /// The type every layer's cache rounds to.
    kv: KvDtype,
    scratch: Scratch,
    logits: Vec<f32>,
    /// The token fed at each position so far (the sampler's penalty window reads them).
    tokens: Vec<u32>,
    sampling: Sampling,
}

impl CpuEngine {
    /// An engine with an empty KV cache of `max_context` positions. The cache grows as it
    /// fills, so a large `max_context` costs nothing until it is used.
    pub fn new(model: Arc<PackedModel>, max_context: usize) -> Result<Self> {
        let c = model.config();
        if max_context == 0 {
            bail!("--max-context must be at least 1");
        }
        if max_context > c.max_position_embeddings {
            bail!(
                "--max-context {max_context} is more than the {} positions the model supports; \
                 lower it",
                c.max_position_embeddings
            );
        }
        let scratch = Scratch {
            x: vec![0.0; c.hidden_size],
            normed: vec![0.0; c.hidden_size],
            qkv: vec![0.0; c.qkv_rows()],
            attn: vec![0.0; c.q_dim()],
            block_out: vec![0.0; c.hidden_size],
            gate_up: vec![0.0; 2 * c.intermediate_size],
            act: vec![0.0; c.intermediate_size],
        };
        Ok(CpuEngine {
            inv_freq: ops::rope_inv_freq(c.rope_theta, c.head_dim),
            cache: (0..c.num_hidden_layers)
                .map(|_| LayerCache::new(KvDtype::F32))
                .collect(),
            kv: KvDtype::F32,
            logits: vec![0.0; c.vocab_size],
            tokens: Vec::new(),
            sampling: Sampling::greedy(),
            scratch,
            max_context,
            prefill_batch: PREFILL_BATCH,
            position: 0,
            model,
        })
    }

    /// The same engine with a KV cache of `dtype` values (f32 by default): keys and values
    /// are rounded as the kernel rounds them when it appends them, so that the engines agree
    /// bit for bit on the cache. Forgets the sequence.
    pub fn with_kv_cache(mut self, dtype: KvDtype) -> Self {
        self.cache = (0..self.cache.len())
            .map(|_| LayerCache::new(dtype))
            .collect();
        self.kv = dtype;
        self.reset();
        self
    }

    /// The same engine feeding prompts `tokens` at a time (at least 1) in its batched passes.
    /// Results do not depend on it beyond float32 rounding; memory grows with it.
    pub fn with_prefill_batch(mut self, tokens: usize) -> Self {
        self.prefill_batch = tokens.max(1);
        self
    }

    /// Prompt tokens per batched pass.
    pub fn prefill_batch(&self) -> usize {
        self.prefill_batch
    }

    pub fn model(&self) -> &Arc<PackedModel> {
        &self.model
    }

    /// The logits of the last step (zeros before the first).
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    /// Forgets the sequence: the next token goes to position 0.
    pub fn reset(&mut self) {
        self.position = 0;
        self.tokens.clear();
        for layer in &mut self.cache {
            layer.keys.clear();
            layer.values.clear();
        }
    }

    /// Fills the KV cache up to `depth` positions with pseudo-random keys and values (and the
    /// token history with pseudo-random tokens), as if `depth` tokens had been decoded: for
    /// benchmarks, whose timing does not depend on the cache's contents.
    pub fn fill_random(&mut self, depth: usize, seed: u64) -> Result<()> {
        if depth > self.max_context {
            anyhow::bail!(
                "cannot fill {depth} positions: the KV cache holds {}",
                self.max_context
            );
        }
        let kv_dim = self.model.config().kv_dim();
        let vocab = self.model.config().vocab_size as u64;
        let have = self.position;
        if depth <= have {
            return self.truncate(depth);
        }
        let n = (depth - have) * kv_dim;
        for (layer, cache) in self.cache.iter_mut().enumerate() {
            let base = seed ^ (layer as u64).wrapping_mul(0x9E37_79B9);
            cache.append(
                &qwenmk_weights::synthetic::random_values(base, n),
                &qwenmk_weights::synthetic::random_values(!base, n),
            );
        }
        let tokens = qwenmk_weights::synthetic::random_values(seed, depth - have);
        self.tokens.extend(
            tokens
                .iter()
                .map(|v| ((v.abs() * vocab as f32) as u64 % vocab) as u32),
        );
        self.position = depth;
        Ok(())
    }

    /// Forgets the positions from `position` on: the next token goes to `position`, and what
    /// came before stays in the cache (`qwenmk bench` decodes from the same depth again).
    pub fn truncate(&mut self, position: usize) -> Result<()> {
        super::ensure_can_truncate(position, self.position)?;
        let kv_dim = self.model.config().kv_dim();
        for layer in &mut self.cache {
            layer.keys.truncate(position * kv_dim);
            layer.values.truncate(position * kv_dim);
        }
        self.position = position;
        self.tokens.truncate(position);
        Ok(())
    }

    /// Appends `token` and returns the logits for the next position. Fails without changing
    /// state when the context is full or the token is outside the vocabulary.
    pub fn step_logits(&mut self, token: u32) -> Result<&[f32]> {
        self.check_input(&[token])?;
        self.forward(token as usize);
        self.position += 1;
        self.tokens.push(token);
        Ok(&self.logits)
    }

    /// Appends all of `tokens` in batched passes and returns the logits after the last one:
    /// the logits [`CpuEngine::step_logits`] would give fed them one by one, to float32
    /// rounding, with the same KV cache left behind. Fails without changing state when they do
    /// not all fit in the context or one is outside the vocabulary.
    pub fn prefill_logits(&mut self, tokens: &[u32]) -> Result<&[f32]> {
        if tokens.is_empty() {
            bail!("the prompt is empty: give at least one token");
        }
        self.check_input(tokens)?;
        let model = Arc::clone(&self.model);
        let c = model.config();
        let mut batch = prefill::Batch::new(c, tokens.len().min(self.prefill_batch));
        let mut last = 0;
        for run in tokens.chunks(self.prefill_batch) {
            batch.forward(&model, &self.inv_freq, &mut self.cache, self.position, run);
            self.position += run.len();
            self.tokens.extend_from_slice(run);
            last = run.len() - 1;
        }
        // 12. Final norm and 13. LM head, for the last token only: nobody reads the others'.
        let hidden = c.hidden_size;
        let x = &batch.x[last * hidden..][..hidden];
        let s = &mut self.scratch;
        ops::rms_norm(x, model.final_norm(), c.rms_norm_eps, &mut s.normed);
        ops::matvec(model.lm_head(), &s.normed, &mut self.logits);
        Ok(&self.logits)
    }

    /// Fails when `tokens` do not all fit after [`Engine::position`] or one is outside the
    /// vocabulary.
    fn check_input(&self, tokens: &[u32]) -> Result<()> {
        let c = self.model.config();
        super::ensure_room(self.position, self.max_context, c.max_position_embeddings)?;
        if self.position + tokens.len() > self.max_context {
            bail!(
                "the context is full: {} tokens do not fit after the {} held, in {} positions; \
                 raise --max-context (the model allows up to {})",
                tokens.len(),
                self.position,
                self.max_context,
                c.max_position_embeddings
            );
        }
        if let Some(&token) = tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
            bail!(
                "token id {token} is outside the model's vocabulary of {} tokens",
                c.vocab_size
            );
        }
        Ok(())
    }

    /// The token chosen to follow the last one fed, from [`CpuEngine::logits`].
    fn choose_next(&self) -> Result<u32> {
        let position = self.position - 1;
        let window = self.sampling.penalty_window();
        let recent = &self.tokens[self.tokens.len().saturating_sub(window)..];
        match choose_token(&self.logits, recent, &self.sampling, position as u32) {
            // The index is below vocab_size, which the config keeps within u32.
            Some(id) => Ok(id),
            None => bail!(
                "the model produced NaN logits at position {position}; the packed weights are \
                 probably damaged"
            ),
        }
    }

    /// One decode step at `self.position`, leaving the logits in `self.logits`.
    fn forward(&mut self, token: usize) {
        let model = Arc::clone(&self.model);
        let c = model.config();
        let hidden = c.hidden_size;

        // 1. The residual stream starts as the token's embedding row.
        let row = &model.embedding()[token * hidden..(token + 1) * hidden];
        for (x, &e) in self.scratch.x.iter_mut().zip(row) {
            *x = e.to_f32();
        }

        for (l, cache) in self.cache.iter_mut().enumerate() {
            let w = model.layer(l);
            // 2–8. Self-attention with its residual.
            attention_block(
                c,
                &w,
                &self.inv_freq,
                self.position,
                cache,
                &mut self.scratch,
            );
            // 9–11. MLP with its residual.
            mlp_block(c, &w, &mut self.scratch);
        }

        // 12. Final norm, 13. LM head (the embedding when tied).
        let s = &mut self.scratch;
        ops::rms_norm(&s.x, model.final_norm(), c.rms_norm_eps, &mut s.normed);
        ops::matvec(model.lm_head(), &s.normed, &mut self.logits);
    }
}

/// `x += o_proj(attention(q_norm/k_norm/RoPE(qkv_proj(rms_norm(x)))))`, appending this
/// position's key and value to `cache`.
fn attention_block(
    c: &ModelConfig,
    w: &LayerWeights<'_>,
    inv_freq: &[f32],
    position: usize,
    cache: &mut LayerCache,
    s: &mut Scratch,
) {
    let (q_dim, kv_dim, head_dim) = (c.q_dim(), c.kv_dim(), c.head_dim);

    // 2. Pre-attention RMSNorm.
    ops::rms_norm(&s.x, w.input_norm, c.rms_norm_eps, &mut s.normed);
    // 3. Q, K, V in one fused projection: rows are q, then k, then v.
    ops::matvec(w.qkv, &s.normed, &mut s.qkv);
    let (q, kv) = s.qkv.split_at_mut(q_dim);
    let (k, v) = kv.split_at_mut(kv_dim);
    // 4. Per-head RMSNorm of queries and keys, before RoPE.
    ops::rms_norm_heads(q, w.q_norm, c.rms_norm_eps);
    ops::rms_norm_heads(k, w.k_norm, c.rms_norm_eps);
    // 5. RoPE on queries and keys.
    ops::rope(q, inv_freq, position);
    ops::rope(k, inv_freq, position);
    // 6. Append to the cache (rounded to its type; attention reads what it holds).
    cache.append(k, v);

    // 7. Grouped-query attention over positions 0..=position: query head h reads key/value
    //    head h / group. Heads are independent, so they run in parallel.
    use rayon::prelude::*;
    let group = c.gqa_group_size();
    let scale = (head_dim as f32).powf(-0.5);
    let positions = position + 1;
    let (keys, values) = (&cache.keys, &cache.values);
    s.attn
        .par_chunks_mut(head_dim)
        .zip(q.par_chunks(head_dim))
        .enumerate()
        .for_each(|(h, (out, q_head))| {
            let kv_offset = (h / group) * head_dim;
            let mut scores: Vec<f32> = (0..positions)
                .map(|t| {
                    let k_t = &keys[t * kv_dim + kv_offset..][..head_dim];
                    let dot: f32 = q_head.iter().zip(k_t).map(|(a, b)| a * b).sum();
                    dot * scale
                })
                .collect();
            ops::softmax(&mut scores);
            out.fill(0.0);
            for (t, &p) in scores.iter().enumerate() {
                let v_t = &values[t * kv_dim + kv_offset..][..head_dim];
                for (o, &val) in out.iter_mut().zip(v_t) {
                    *o += p * val;
                }
            }
        });

    // 8. Output projection and residual.
    ops::matvec(w.o, &s.attn, &mut s.block_out);
    for (x, o) in s.x.iter_mut().zip(&s.block_out) {
        *x += o;
    }
}

/// `x += down(silu(gate(rms_norm(x))) * up(rms_norm(x)))`.
fn mlp_block(c: &ModelConfig, w: &LayerWeights<'_>, s: &mut Scratch) {
    // 9. Post-attention RMSNorm.
    ops::rms_norm(&s.x, w.post_norm, c.rms_norm_eps, &mut s.normed);
    // 10. Gate and up in one projection; rows interleave gate_j, up_j.
    ops::matvec(w.gate_up, &s.normed, &mut s.gate_up);
    for (a, pair) in s.act.iter_mut().zip(s.gate_up.chunks_exact(2)) {
        *a = ops::silu(pair[0]) * pair[1];
    }
    // 11. Down projection and residual.
    ops::matvec(w.down, &s.act, &mut s.block_out);
    for (x, d) in s.x.iter_mut().zip(&s.block_out) {
        *x += d;
    }
}

impl Engine for CpuEngine {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn max_context(&self) -> usize {
        self.max_context
    }

    fn position(&self) -> usize {
        self.position
    }

    fn kv_cache(&self) -> KvDtype {
        self.kv
    }

    fn set_sampling(&mut self, sampling: &Sampling) -> Result<()> {
        sampling.validate()?;
        self.sampling = *sampling;
        Ok(())
    }

    fn truncate(&mut self, position: usize) -> Result<()> {
        CpuEngine::truncate(self, position)
    }

    fn feed(&mut self, token: u32, next: Next) -> Result<u32> {
        self.step_logits(token)?;
        if next == Next::Unused {
            // Nobody reads this token: skip the sampler (and the vocabulary-wide work of its
            // penalty or noise).
            return Ok(0);
        }
        self.choose_next()
    }

    /// The whole prompt in batched passes ([`CpuEngine::prefill_logits`]), then one choice.
    fn prefill(&mut self, tokens: &[u32]) -> Result<u32> {
        self.prefill_logits(tokens)?;
        self.choose_next()
    }
}
