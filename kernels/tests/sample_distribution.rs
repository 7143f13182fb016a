//! The sampler draws from the distribution it claims: chi-square tests of many seeded draws
//! (fixed seed, so the test is deterministic) against the probabilities computed directly,
//! in f64, from a softmax over a small vocabulary.
//!
//! The draws use the kernel's own definitions: the Gumbel-max key per token (temperature mode)
//! and [`choose`] over the sorted candidates (top-k, top-p, min-p). The emulator test shows
//! that the fused kernel computes exactly these draws.

use qwenmk_kernels::ops::argmax::{argmax_key, key_row};
use qwenmk_kernels::ops::sample::{SampleParams, choose, rng};

/// 30 logits with distinct values, a few close to each other.
fn logits() -> Vec<f32> {
    (0..30)
        .map(|i| ((i * 37 % 30) as f32 * 0.23).sin() * 3.0 + (i % 7) as f32 * 0.11)
        .collect()
}

/// Tokens by decreasing logit.
fn by_logit(logits: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    order
}

/// transformers' definition, in f64: softmax(l / T) over the top-k, then the top-p prefix
/// (tokens whose more likely predecessors hold less than top_p), then min-p, renormalised.
fn expected(logits: &[f32], s: &SampleParams) -> Vec<f64> {
    let order = by_logit(logits);
    let k = if s.mode == SampleParams::CANDIDATES {
        s.top_k as usize
    } else {
        logits.len()
    };
    let kept = &order[..k.min(order.len())];
    let z: Vec<f64> = kept
        .iter()
        .map(|&t| logits[t] as f64 / s.temperature as f64)
        .collect();
    let w: Vec<f64> = z.iter().map(|v| (v - z[0]).exp()).collect();
    let total: f64 = w.iter().sum();
    let mut probs = vec![0.0; logits.len()];
    let mut before = 0.0;
    for (i, &t) in kept.iter().enumerate() {
        if i > 0 && (before >= s.top_p as f64 || w[i] < s.min_p as f64) {
            break;
        }
        before += w[i] / total;
        probs[t] = w[i];
    }
    let sum: f64 = probs.iter().sum();
    probs.iter().map(|p| p / sum).collect()
}

fn draw(logits: &[f32], s: &SampleParams, position: u32) -> usize {
    if s.mode == SampleParams::TEMPERATURE {
        let best = (0..logits.len())
            .map(|t| {
                let g = rng::gumbel(s.seed, position, t as u32);
                argmax_key(logits[t] / s.temperature + g, t as u32)
            })
            .max()
            .unwrap();
        return key_row(best) as usize;
    }
    let keys: Vec<u64> = by_logit(logits)
        .iter()
        .map(|&t| argmax_key(logits[t], t as u32))
        .collect();
    let n = s.top_k.min(keys.len() as u32);
    key_row(keys[choose(n, |i| keys[i as usize], s, position) as usize]) as usize
}

/// Chi-square statistic of `draws` draws against `probs` (tokens with probability 0 must never
/// be drawn), and its degrees of freedom.
fn chi_square(logits: &[f32], s: &SampleParams, draws: u32) -> (f64, usize) {
    let probs = expected(logits, s);
    let mut counts = vec![0u32; logits.len()];
    for position in 0..draws {
        counts[draw(logits, s, position)] += 1;
    }
    let mut chi2 = 0.0;
    let mut cells = 0;
    for (t, (&c, &p)) in counts.iter().zip(&probs).enumerate() {
        if p == 0.0 {
            assert_eq!(c, 0, "token {t} is outside the kept set but was drawn");
            continue;
        }
        let e = p * draws as f64;
        chi2 += (c as f64 - e).powi(2) / e;
        cells += 1;
    }
    (chi2, cells - 1)
}

/// The chi-square quantile at 1 - 1e-4 (Wilson–Hilferty): a correct sampler fails this once in
/// ten thousand seeds, and the seed is fixed.
fn critical(df: usize) -> f64 {
    let k = df as f64;
    let z = 3.719;
    k * (1.0 - 2.0 / (9.0 * k) + z * (2.0 / (9.0 * k)).sqrt()).powi(3)
}

fn settings(mode: u32, temperature: f32, top_k: u32, top_p: f32, min_p: f32) -> SampleParams {
    let mut s = SampleParams::greedy();
    s.mode = mode;
    s.temperature = temperature;
    s.top_k = top_k;
    s.top_p = top_p;
    s.min_p = min_p;
    s.seed = 2024;
    s
}

#[test]
fn temperature_draws_follow_the_softmax() {
    let logits = logits();
    for t in [0.6, 1.0, 2.0] {
        let s = settings(SampleParams::TEMPERATURE, t, 0, 1.0, 0.0);
        let (chi2, df) = chi_square(&logits, &s, 40_000);
        assert!(chi2 < critical(df), "T={t}: chi² {chi2:.1} with {df} df");
    }
}

#[test]
fn truncated_draws_follow_the_truncated_softmax() {
    let logits = logits();
    let cases = [
        settings(SampleParams::CANDIDATES, 1.0, 10, 1.0, 0.0),
        settings(SampleParams::CANDIDATES, 0.6, 20, 0.95, 0.0),
        settings(SampleParams::CANDIDATES, 1.3, 30, 0.8, 0.0),
        settings(SampleParams::CANDIDATES, 1.0, 30, 1.0, 0.1),
        settings(SampleParams::CANDIDATES, 0.8, 25, 0.9, 0.05),
    ];
    for s in cases {
        let kept = expected(&logits, &s).iter().filter(|&&p| p > 0.0).count();
        assert!(kept > 2, "the case keeps a real choice: {s:?}");
        let (chi2, df) = chi_square(&logits, &s, 40_000);
        assert!(chi2 < critical(df), "{s:?}: chi² {chi2:.1} with {df} df");
    }
}

#[test]
fn a_biased_sampler_would_fail_the_test() {
    // The test has teeth: the same draws judged against a slightly different temperature fail.
    let logits = logits();
    let s = settings(SampleParams::TEMPERATURE, 1.0, 0, 1.0, 0.0);
    let wrong = settings(SampleParams::TEMPERATURE, 1.1, 0, 1.0, 0.0);
    let probs = expected(&logits, &wrong);
    let draws = 40_000;
    let mut counts = vec![0u32; logits.len()];
    for position in 0..draws {
        counts[draw(&logits, &s, position)] += 1;
    }
    let chi2: f64 = counts
        .iter()
        .zip(&probs)
        .map(|(&c, &p)| (c as f64 - p * draws as f64).powi(2) / (p * draws as f64))
        .sum();
    assert!(chi2 > critical(logits.len() - 1), "chi² {chi2:.1}");
}
