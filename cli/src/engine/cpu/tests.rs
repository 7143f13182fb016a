//! The CPU engine against checks derived independently of its code: a from-scratch f64
//! reference that recomputes the whole causal sequence from the unfused Hugging Face tensors at
//! every step (no KV cache, no fused layouts), and structural properties.

use std::sync::Arc;

use half::bf16;
use qwenmk_weights::synthetic::{SyntheticCheckpoint, tiny_config};
use qwenmk_weights::{ModelConfig, PackedModel, pack_safetensors};

use super::CpuEngine;
use crate::engine::Engine;

/// Packs `src` into a temporary directory and opens it.
fn packed(src: &SyntheticCheckpoint) -> (tempfile::TempDir, Arc<PackedModel>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let source = dir.path().join("hf");
    src.write(&source).expect("write checkpoint");
    let out = dir.path().join("model.qwenmk");
    pack_safetensors(&source, &out, |_| {}).expect("pack");
    let model = PackedModel::open(&out).expect("open");
    (dir, Arc::new(model))
}

/// Qwen3 in f64, as literally as the transformers source reads, over a whole sequence.
struct Reference<'a> {
    src: &'a SyntheticCheckpoint,
}

type Matrix = Vec<Vec<f64>>;

impl Reference<'_> {
    fn c(&self) -> &ModelConfig {
        &self.src.config
    }

    fn vector(&self, name: &str) -> Vec<f64> {
        self.src
            .get(name)
            .iter()
            .map(|v| f64::from(v.to_f32()))
            .collect()
    }

    fn matrix(&self, name: &str) -> Matrix {
        let (shape, values) = &self.src.tensors[name];
        values
            .chunks(shape[1])
            .map(|row| row.iter().map(|v| f64::from(v.to_f32())).collect())
            .collect()
    }

    fn linear(w: &Matrix, x: &[f64]) -> Vec<f64> {
        w.iter()
            .map(|row| row.iter().zip(x).map(|(a, b)| a * b).sum())
            .collect()
    }

    fn rms_norm(&self, x: &[f64], w: &[f64]) -> Vec<f64> {
        let variance = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
        let scale = 1.0 / (variance + self.c().rms_norm_eps).sqrt();
        x.iter().zip(w).map(|(v, w)| w * v * scale).collect()
    }

    /// `x * cos + rotate_half(x) * sin`, `rotate_half(x) = cat(-x[d/2..], x[..d/2])`.
    fn rope(&self, x: &[f64], position: usize) -> Vec<f64> {
        let d = x.len();
        let inv_freq: Vec<f64> = (0..d / 2)
            .map(|i| 1.0 / self.c().rope_theta.powf((2 * i) as f64 / d as f64))
            .collect();
        let emb: Vec<f64> = inv_freq
            .iter()
            .chain(&inv_freq)
            .map(|f| position as f64 * f)
            .collect();
        let rotated: Vec<f64> = x[d / 2..]
            .iter()
            .map(|v| -v)
            .chain(x[..d / 2].iter().copied())
            .collect();
        (0..d)
            .map(|i| x[i] * emb[i].cos() + rotated[i] * emb[i].sin())
            .collect()
    }

    /// Logits after the last token of `tokens`.
    // Index loops on purpose: the reference should read like the formulas it implements.
    #[allow(clippy::needless_range_loop)]
    fn logits(&self, tokens: &[u32]) -> Vec<f64> {
        let c = self.c().clone();
        let d = c.head_dim;
        let hidden = c.hidden_size;
        let embedding = self.matrix("model.embed_tokens.weight");
        let mut xs: Vec<Vec<f64>> = tokens
            .iter()
            .map(|&t| embedding[t as usize].clone())
            .collect();
        for l in 0..c.num_hidden_layers {
            let p = |s: &str| format!("model.layers.{l}.{s}.weight");
            let (wq, wk, wv, wo) = (
                self.matrix(&p("self_attn.q_proj")),
                self.matrix(&p("self_attn.k_proj")),
                self.matrix(&p("self_attn.v_proj")),
                self.matrix(&p("self_attn.o_proj")),
            );
            let (q_norm, k_norm) = (
                self.vector(&p("self_attn.q_norm")),
                self.vector(&p("self_attn.k_norm")),
            );
            let input_norm = self.vector(&p("input_layernorm"));
            // Projections for every position: [position][head][d].
            let mut qs = Vec::new();
            let mut ks = Vec::new();
            let mut vs = Vec::new();
            for (t, x) in xs.iter().enumerate() {
                let h = self.rms_norm(x, &input_norm);
                let heads = |w: &Matrix, norm: Option<&[f64]>| -> Vec<Vec<f64>> {
                    Self::linear(w, &h)
                        .chunks(d)
                        .map(|head| match norm {
                            Some(n) => self.rope(&self.rms_norm(head, n), t),
                            None => head.to_vec(),
                        })
                        .collect()
                };
                qs.push(heads(&wq, Some(&q_norm)));
                ks.push(heads(&wk, Some(&k_norm)));
                vs.push(heads(&wv, None));
            }
            let group = c.num_attention_heads / c.num_key_value_heads;
            for t in 0..xs.len() {
                let mut attn = Vec::with_capacity(c.q_dim());
                for head in 0..c.num_attention_heads {
                    let kv = head / group;
                    let scores: Vec<f64> = (0..=t)
                        .map(|s| {
                            qs[t][head]
                                .iter()
                                .zip(&ks[s][kv])
                                .map(|(a, b)| a * b)
                                .sum::<f64>()
                                / (d as f64).sqrt()
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let total: f64 = exps.iter().sum();
                    for i in 0..d {
                        attn.push((0..=t).map(|s| exps[s] / total * vs[s][kv][i]).sum());
                    }
                }
                let o = Self::linear(&wo, &attn);
                for (x, o) in xs[t].iter_mut().zip(o) {
                    *x += o;
                }
            }
            let post_norm = self.vector(&p("post_attention_layernorm"));
            let (gate, up, down) = (
                self.matrix(&p("mlp.gate_proj")),
                self.matrix(&p("mlp.up_proj")),
                self.matrix(&p("mlp.down_proj")),
            );
            for x in &mut xs {
                let h = self.rms_norm(x, &post_norm);
                let act: Vec<f64> = Self::linear(&gate, &h)
                    .iter()
                    .zip(Self::linear(&up, &h))
                    .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                    .collect();
                for (x, d) in x.iter_mut().zip(Self::linear(&down, &act)) {
                    *x += d;
                }
            }
        }
        let last = xs.last().expect("at least one token");
        let h = self.rms_norm(last, &self.vector("model.norm.weight"));
        assert_eq!(h.len(), hidden);
        let head = if c.tie_word_embeddings {
            embedding
        } else {
            self.matrix("lm_head.weight")
        };
        Self::linear(&head, &h)
    }
}

fn max_abs_diff(a: &[f32], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&a, &b)| (f64::from(a) - b).abs())
        .fold(0.0, f64::max)
}

fn argmax64(values: &[f64]) -> (usize, f64) {
    let mut sorted: Vec<(usize, f64)> = values.iter().copied().enumerate().collect();
    sorted.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    (sorted[0].0, sorted[0].1 - sorted[1].1)
}

fn check_against_reference(src: &SyntheticCheckpoint) {
    let (_dir, model) = packed(src);
    let mut engine = CpuEngine::new(Arc::clone(&model), 64).unwrap();
    let reference = Reference { src };
    let tokens: Vec<u32> = vec![3, 141, 59, 26, 299, 0, 53, 58, 97, 93, 23, 84];
    for n in 1..=tokens.len() {
        let logits = engine.step_logits(tokens[n - 1]).unwrap().to_vec();
        let expected = reference.logits(&tokens[..n]);
        let diff = max_abs_diff(&logits, &expected);
        assert!(diff < 1e-4, "position {}: logits differ by {diff}", n - 1);
        let (best, margin) = argmax64(&expected);
        if margin > 1e-3 {
            assert_eq!(
                super::ops::argmax(&logits),
                Some(best),
                "position {}",
                n - 1
            );
        }
    }
    assert_eq!(engine.position(), tokens.len());
}

#[test]
fn matches_an_independent_reference_tied() {
    check_against_reference(&SyntheticCheckpoint::random(&tiny_config(true), 21, true));
}

#[test]
fn matches_an_independent_reference_untied() {
    check_against_reference(&SyntheticCheckpoint::random(&tiny_config(false), 22, false));
}

#[test]
fn matches_an_independent_reference_with_multi_head_attention() {
    let mut config = tiny_config(true);
    config.num_key_value_heads = config.num_attention_heads;
    config.num_hidden_layers = 3;
    check_against_reference(&SyntheticCheckpoint::random(&config, 23, false));
}

/// With `o_proj` and `down_proj` zero, attention and MLP add nothing, so the logits are the
/// final-normed embedding row against the LM head, whatever came before.
#[test]
fn zero_blocks_leave_final_norm_of_the_embedding() {
    let mut src = SyntheticCheckpoint::random(&tiny_config(true), 24, false);
    for (name, (_, values)) in src.tensors.iter_mut() {
        if name.ends_with("o_proj.weight") || name.ends_with("down_proj.weight") {
            values.fill(bf16::ZERO);
        }
    }
    let (_dir, model) = packed(&src);
    let c = model.config().clone();
    let mut engine = CpuEngine::new(Arc::clone(&model), 8).unwrap();
    for token in [7u32, 7, 250] {
        let logits = engine.step_logits(token).unwrap().to_vec();
        let row: Vec<f64> = src.get("model.embed_tokens.weight")[token as usize * c.hidden_size..]
            [..c.hidden_size]
            .iter()
            .map(|v| f64::from(v.to_f32()))
            .collect();
        let norm_w = src.get("model.norm.weight");
        let rms =
            (row.iter().map(|v| v * v).sum::<f64>() / row.len() as f64 + c.rms_norm_eps).sqrt();
        let h: Vec<f64> = row
            .iter()
            .zip(norm_w)
            .map(|(v, w)| v / rms * f64::from(w.to_f32()))
            .collect();
        let expected: Vec<f64> = src
            .get("model.embed_tokens.weight")
            .chunks(c.hidden_size)
            .map(|e| {
                e.iter()
                    .zip(&h)
                    .map(|(e, h)| f64::from(e.to_f32()) * h)
                    .sum()
            })
            .collect();
        assert!(max_abs_diff(&logits, &expected) < 1e-5);
    }
}

#[test]
fn full_context_is_an_error_that_changes_nothing() {
    let (_dir, model) = packed(&SyntheticCheckpoint::random(&tiny_config(true), 25, false));
    let mut engine = CpuEngine::new(model, 3).unwrap();
    engine.prefill(&[1, 2, 3]).unwrap();
    let before = engine.logits().to_vec();
    let err = engine.step(4).unwrap_err().to_string();
    assert_eq!(
        err,
        "the context is full at 3 tokens; raise --max-context (the model allows up to 256)"
    );
    assert_eq!(engine.position(), 3);
    assert_eq!(engine.logits(), before);
}

#[test]
fn bad_arguments_are_sentences() {
    let (_dir, model) = packed(&SyntheticCheckpoint::random(&tiny_config(true), 26, false));
    let too_long = CpuEngine::new(Arc::clone(&model), 257)
        .err()
        .unwrap()
        .to_string();
    assert!(
        too_long.contains("more than the 256 positions"),
        "{too_long}"
    );
    assert!(CpuEngine::new(Arc::clone(&model), 0).is_err());
    let mut engine = CpuEngine::new(model, 4).unwrap();
    let err = engine.step(300).unwrap_err().to_string();
    assert!(err.contains("token id 300 is outside"), "{err}");
    assert_eq!(engine.position(), 0);
    let err = engine.prefill(&[]).unwrap_err().to_string();
    assert!(err.contains("prompt is empty"), "{err}");
}

#[test]
fn reset_replays_the_same_tokens() {
    let (_dir, model) = packed(&SyntheticCheckpoint::random(&tiny_config(true), 27, false));
    let mut engine = CpuEngine::new(model, 16).unwrap();
    let first: Vec<u32> = (0..6)
        .scan(5u32, |t, _| {
            *t = engine.step(*t).unwrap();
            Some(*t)
        })
        .collect();
    engine.reset();
    assert_eq!(engine.position(), 0);
    let second: Vec<u32> = (0..6)
        .scan(5u32, |t, _| {
            *t = engine.step(*t).unwrap();
            Some(*t)
        })
        .collect();
    assert_eq!(first, second);
}

/// The batched prefill against the f64 reference, whatever the pass size: one pass, passes
/// that end mid-prompt, one token per pass; and then a step from the cache it left.
#[test]
fn batched_prefill_matches_the_reference_in_any_pass_size() {
    let mut config = tiny_config(false);
    config.num_attention_heads = 8;
    let src = SyntheticCheckpoint::random(&config, 28, true);
    let (_dir, model) = packed(&src);
    let reference = Reference { src: &src };
    let tokens: Vec<u32> = vec![3, 141, 59, 26, 299, 0, 53, 58, 97, 93, 23, 84, 7];
    let (prompt, next) = tokens.split_at(tokens.len() - 1);
    let expected = reference.logits(prompt);
    let expected_next = reference.logits(&tokens);
    for pass in [64, 5, 1] {
        let mut engine = CpuEngine::new(Arc::clone(&model), 32)
            .unwrap()
            .with_prefill_batch(pass);
        let logits = engine.prefill_logits(prompt).unwrap().to_vec();
        assert_eq!(engine.position(), prompt.len());
        let diff = max_abs_diff(&logits, &expected);
        assert!(diff < 1e-4, "passes of {pass}: logits differ by {diff}");
        let logits = engine.step_logits(next[0]).unwrap().to_vec();
        let diff = max_abs_diff(&logits, &expected_next);
        assert!(
            diff < 1e-4,
            "passes of {pass}, then a step: logits differ by {diff}"
        );
    }
}

#[test]
fn a_prefill_that_cannot_run_changes_nothing() {
    let (_dir, model) = packed(&SyntheticCheckpoint::random(&tiny_config(true), 29, false));
    let mut engine = CpuEngine::new(model, 6).unwrap();
    engine.prefill(&[1, 2]).unwrap();
    let before = engine.logits().to_vec();
    let err = engine.prefill(&[3, 4, 5, 6, 7]).unwrap_err().to_string();
    assert_eq!(
        err,
        "the context is full: 5 tokens do not fit after the 2 held, in 6 positions; raise \
         --max-context (the model allows up to 256)"
    );
    let err = engine.prefill(&[3, 300, 5]).unwrap_err().to_string();
    assert!(err.contains("token id 300 is outside"), "{err}");
    assert_eq!(engine.position(), 2);
    assert_eq!(engine.logits(), before);
    // What is there still decodes, up to the last position.
    engine.prefill(&[3, 4, 5, 6]).unwrap();
    let err = engine.prefill(&[1]).unwrap_err().to_string();
    assert!(err.starts_with("the context is full at 6 tokens"), "{err}");
}
