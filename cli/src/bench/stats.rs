//! The numbers a bench row is made of, from one place: sample statistics, the bytes one decode
//! step reads, the achieved bandwidth and the bandwidth roofline.

use qwenmk_weights::ModelConfig;

use crate::engine::KvDtype;

/// Mean and sample standard deviation (n − 1); the deviation is `None` for fewer than two
/// samples, and both are `None` for none.
pub fn mean_sd(samples: &[f64]) -> (Option<f64>, Option<f64>) {
    if samples.is_empty() {
        return (None, None);
    }
    let n = samples.len() as f64;
    let mean = samples.iter().sum::<f64>() / n;
    if samples.len() < 2 {
        return (Some(mean), None);
    }
    let var = samples.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (Some(mean), Some(var.sqrt()))
}

/// What one decode step reads from memory, on average over a timed run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BytesPerToken {
    /// Every layer, the final norm, the (tied) LM head once and one embedding row.
    pub weights: u64,
    /// Keys and values of every position attended, over all layers, in the cache's type.
    pub kv: u64,
}

impl BytesPerToken {
    /// The step at position `p` attends over `p + 1` positions (its own included), so `n`
    /// steps from depth `d` read on average `d + (n + 1) / 2` positions of the cache.
    pub fn at(config: &ModelConfig, kv: KvDtype, depth: usize, tokens: usize) -> Self {
        let positions_read = depth as f64 + (tokens as f64 + 1.0) / 2.0;
        BytesPerToken {
            weights: config.weight_bytes_per_token(),
            kv: (positions_read * kv_bytes_per_position(config, kv) as f64).round() as u64,
        }
    }

    pub fn total(&self) -> u64 {
        self.weights + self.kv
    }
}

/// Bytes one position of a KV cache of `kv` values holds over all layers (for Qwen3-0.6B
/// 112 KiB in BF16, `ModelConfig::kv_bytes_per_position`, and 224 KiB in f32).
pub fn kv_bytes_per_position(config: &ModelConfig, kv: KvDtype) -> u64 {
    config.kv_values_per_position() * kv.bytes() as u64
}

/// The summary of one depth's repetitions.
#[derive(Debug, Clone, PartialEq)]
pub struct DepthStats {
    pub tok_s_mean: f64,
    pub tok_s_sd: Option<f64>,
    pub us_per_token: f64,
    pub bytes_per_token: BytesPerToken,
    /// Bytes per token ÷ mean time per token.
    pub gb_per_s: f64,
    /// `None` without a known peak (cpu and emulator).
    pub percent_of_peak: Option<f64>,
    pub roofline_tok_s: Option<f64>,
}

impl DepthStats {
    /// `samples_s`: seconds for each repetition of `tokens` steps (not empty).
    /// tok/s is the mean (± sample sd) of each repetition's rate; µs/token and GB/s come from
    /// the mean time per token; the roofline is `peak ÷ bytes per token`.
    pub fn new(
        samples_s: &[f64],
        tokens: usize,
        bytes_per_token: BytesPerToken,
        peak_bytes_per_s: Option<f64>,
    ) -> Self {
        let rates: Vec<f64> = samples_s.iter().map(|s| tokens as f64 / s).collect();
        let (tok_s_mean, tok_s_sd) = mean_sd(&rates);
        let per_token: Vec<f64> = samples_s.iter().map(|s| s / tokens as f64).collect();
        let (seconds_per_token, _) = mean_sd(&per_token);
        let seconds_per_token = seconds_per_token.unwrap_or(f64::NAN);
        let bytes_per_s = bytes_per_token.total() as f64 / seconds_per_token;
        DepthStats {
            tok_s_mean: tok_s_mean.unwrap_or(f64::NAN),
            tok_s_sd,
            us_per_token: seconds_per_token * 1e6,
            bytes_per_token,
            gb_per_s: bytes_per_s / 1e9,
            percent_of_peak: peak_bytes_per_s.map(|peak| 100.0 * bytes_per_s / peak),
            roofline_tok_s: peak_bytes_per_s.map(|peak| peak / bytes_per_token.total() as f64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qwen3_0_6b() -> ModelConfig {
        ModelConfig::from_json_str(include_str!("../../../fixtures/qwen3-0.6b/config.json"))
            .unwrap()
    }

    #[test]
    fn mean_and_sample_sd() {
        let (m, sd) = mean_sd(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(m, Some(5.0));
        // Sample variance 32 / 7.
        assert!((sd.unwrap() - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert_eq!(mean_sd(&[3.0]), (Some(3.0), None));
        assert_eq!(mean_sd(&[]), (None, None));
    }

    #[test]
    fn qwen3_bytes_per_token_match_the_anchors() {
        let c = qwen3_0_6b();
        // 1.192 GB of weights; 28 × 8 × 128 × 2 × 4 B = 224 KiB of f32 KV per position, half
        // that in BF16.
        assert_eq!(c.weight_bytes_per_token() / 1_000_000, 1_192);
        assert_eq!(kv_bytes_per_position(&c, KvDtype::F32), 224 * 1024);
        assert_eq!(kv_bytes_per_position(&c, KvDtype::Bf16), 112 * 1024);
        assert_eq!(
            kv_bytes_per_position(&c, KvDtype::Bf16),
            c.kv_bytes_per_position()
        );
        // One step at depth 0 reads one position; n steps from d read d + (n + 1) / 2.
        let f32_at = |d, n| BytesPerToken::at(&c, KvDtype::F32, d, n).kv;
        assert_eq!(f32_at(0, 1), 224 * 1024);
        assert_eq!(f32_at(1000, 1), 1001 * 224 * 1024);
        assert_eq!(f32_at(100, 3), 102 * 224 * 1024);
        let bf16 = BytesPerToken::at(&c, KvDtype::Bf16, 1000, 1);
        assert_eq!(bf16.kv, 1001 * 112 * 1024);
        assert_eq!(bf16.weights, c.weight_bytes_per_token());
    }

    #[test]
    fn h100_roofline_at_depth_zero_is_about_2800_tok_s() {
        let c = qwen3_0_6b();
        let bytes = BytesPerToken::at(&c, KvDtype::Bf16, 0, 1);
        // 3.352 TB/s (2 × 2619 MHz × 5120-bit) over 1.192 GB.
        let peak = 2.0 * 2_619e6 * 640.0;
        let stats = DepthStats::new(&[0.5, 0.5], 1000, bytes, Some(peak));
        let roofline = stats.roofline_tok_s.unwrap();
        assert!((2_800.0..2_815.0).contains(&roofline), "{roofline}");
        assert_eq!(stats.tok_s_mean, 2000.0);
        assert_eq!(stats.tok_s_sd, Some(0.0));
        assert!((stats.us_per_token - 500.0).abs() < 1e-9);
        let expected_gb_s = bytes.total() as f64 * 2000.0 / 1e9;
        assert!((stats.gb_per_s - expected_gb_s).abs() < 1e-9);
        let pct = stats.percent_of_peak.unwrap();
        assert!((pct - 100.0 * 2000.0 / roofline).abs() < 1e-9, "{pct}");
    }

    #[test]
    fn no_peak_no_percentage_nor_roofline() {
        let c = qwen3_0_6b();
        let stats = DepthStats::new(
            &[1.0, 2.0],
            10,
            BytesPerToken::at(&c, KvDtype::F32, 5, 10),
            None,
        );
        assert_eq!(stats.percent_of_peak, None);
        assert_eq!(stats.roofline_tok_s, None);
        assert_eq!(stats.tok_s_mean, 7.5);
        assert!((stats.us_per_token - 150_000.0).abs() < 1e-6);
    }
}
