//! A bench run as data ([`Report`], which is also the JSON output) and its other renderings:
//! a llama-bench-like Markdown table and CSV.

use std::fmt::Write as _;

use serde::Serialize;

use super::peers::PeerRatio;
use super::simulated::{STAGES, SimulatedProfile};
use super::stats::{DepthStats, mean_sd};
use super::sweep::{DepthSamples, Skipped};
use crate::cli::Fill;
use crate::commands::pack::human_bytes;

/// qwenmk's version and the commit it was built from (`unknown` outside a git checkout).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const COMMIT: &str = env!("QWENMK_GIT_COMMIT");

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub qwenmk: Provenance,
    /// UTC, ISO 8601.
    pub date: String,
    pub command: Vec<String>,
    pub model: ModelReport,
    pub engine: String,
    pub timer: String,
    /// How the engine processes a prompt and how that is timed (the `pp` figures).
    pub prefill: String,
    /// `measured` (a real clock: a GPU's events, or the host's), `virtual` (the virtual GPU's
    /// own clock, which measures nothing about hardware) or `simulated` (the virtual GPU's
    /// timing model of an H100: a model's prediction, not a measurement).
    pub time: &'static str,
    /// True when `time` is `simulated`, with the timing model's name and version.
    pub simulated: bool,
    pub timing_model: Option<String>,
    /// `null` on the cpu and emulator engines.
    pub gpu: Option<GpuReport>,
    pub host: HostReport,
    /// `null` when the engine has no known peak (cpu, emulator).
    pub peak_bandwidth: Option<PeakBandwidth>,
    pub settings: Settings,
    pub results: Vec<DepthResult>,
    pub skipped: Vec<Skipped>,
    pub peers: Option<PeersReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Provenance {
    pub version: String,
    pub commit: String,
}

impl Provenance {
    pub fn this_build() -> Self {
        Provenance {
            version: VERSION.to_owned(),
            commit: COMMIT.to_owned(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelReport {
    /// The checkpoint as given (`Qwen/Qwen3-0.6B`, a directory) or `synthetic <config>`.
    pub name: String,
    /// Random weights of the config's shapes, with this seed.
    pub synthetic_seed: Option<u64>,
    pub layers: usize,
    pub hidden_size: usize,
    pub vocab_size: usize,
    pub weight_bytes_per_token: u64,
    /// Over all layers, keys and values, in the kernel's f32.
    pub kv_bytes_per_position: u64,
    pub kv_cache_dtype: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct GpuReport {
    pub name: String,
    /// The NVIDIA kernel driver, where the OS tells it.
    pub driver: Option<String>,
    /// The CUDA version the driver implements.
    pub cuda_driver: String,
    pub compute_capability: String,
    pub sm_count: u32,
    pub memory_clock_mhz: f64,
    pub memory_bus_width_bits: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostReport {
    pub cpu: String,
    pub threads: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct PeakBandwidth {
    pub bytes_per_s: f64,
    /// Where the figure comes from, e.g. "driver: memory clock 2619 MHz × 5120-bit bus × 2 (DDR)".
    pub source: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Tokens decoded per timed run.
    pub tokens: usize,
    pub repetitions: usize,
    pub warmup: usize,
    /// Positions the KV cache was sized for: the deepest depth plus its run.
    pub max_context: usize,
    pub depths_requested: Vec<usize>,
    /// How the cache reached each depth: `steps` (decoded) or `random` (rows written).
    pub fill: Fill,
    /// Prompt tokens per prompt-processing run (llama-bench's pp); 0 when none ran.
    pub prompt_tokens: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct DepthResult {
    pub depth: usize,
    pub tokens: usize,
    /// Seconds for each repetition of `tokens` steps.
    pub samples_s: Vec<f64>,
    /// Each repetition's rate.
    pub tokens_per_s: Vec<f64>,
    pub tok_s_mean: f64,
    /// Sample standard deviation; `null` for a single repetition.
    pub tok_s_sd: Option<f64>,
    pub us_per_token: f64,
    pub weight_bytes_per_token: u64,
    /// Mean KV-cache bytes a step of the run read (positions `depth + (tokens + 1) / 2`).
    pub kv_bytes_per_token: u64,
    pub bytes_per_token: u64,
    pub gb_per_s: f64,
    pub percent_of_peak: Option<f64>,
    pub roofline_tok_s: Option<f64>,
    /// qwenmk's ratio to each peer (empty without `--peers`).
    pub peers: Vec<PeerRatio>,
    /// Where the simulated time went (`null` unless `time` is `simulated`).
    pub simulated: Option<SimulatedProfile>,
    /// Prompt processing from this depth; `null` when none ran (`-p 0`).
    pub pp: Option<PromptResult>,
}

/// Prefills of a `tokens`-token prompt from one depth (llama-bench's `pp`).
#[derive(Debug, Clone, Serialize)]
pub struct PromptResult {
    pub tokens: usize,
    /// Seconds for each repetition.
    pub samples_s: Vec<f64>,
    /// Each repetition's rate.
    pub tokens_per_s: Vec<f64>,
    pub tok_s_mean: f64,
    /// Sample standard deviation; `null` for a single repetition.
    pub tok_s_sd: Option<f64>,
    pub us_per_token: f64,
}

impl PromptResult {
    /// `None` without samples.
    pub fn new(samples_s: &[f64], tokens: usize) -> Option<Self> {
        let tokens_per_s: Vec<f64> = samples_s.iter().map(|s| tokens as f64 / s).collect();
        let (Some(tok_s_mean), tok_s_sd) = mean_sd(&tokens_per_s) else {
            return None;
        };
        let mean_s = samples_s.iter().sum::<f64>() / samples_s.len() as f64;
        Some(PromptResult {
            tokens,
            samples_s: samples_s.to_vec(),
            tokens_per_s,
            tok_s_mean,
            tok_s_sd,
            us_per_token: 1e6 * mean_s / tokens as f64,
        })
    }
}

impl DepthResult {
    pub fn new(
        samples: &DepthSamples,
        tokens: usize,
        prompt_tokens: usize,
        stats: &DepthStats,
        peers: Vec<PeerRatio>,
    ) -> Self {
        DepthResult {
            depth: samples.depth,
            tokens,
            samples_s: samples.samples_s.clone(),
            tokens_per_s: samples
                .samples_s
                .iter()
                .map(|s| tokens as f64 / s)
                .collect(),
            tok_s_mean: stats.tok_s_mean,
            tok_s_sd: stats.tok_s_sd,
            us_per_token: stats.us_per_token,
            weight_bytes_per_token: stats.bytes_per_token.weights,
            kv_bytes_per_token: stats.bytes_per_token.kv,
            bytes_per_token: stats.bytes_per_token.total(),
            gb_per_s: stats.gb_per_s,
            percent_of_peak: stats.percent_of_peak,
            roofline_tok_s: stats.roofline_tok_s,
            peers,
            simulated: samples.profile.clone(),
            pp: PromptResult::new(&samples.prompt_samples_s, prompt_tokens),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PeersReport {
    pub file: String,
    pub gpu: Option<String>,
    pub weights: Option<String>,
    /// `(name, label)` of each peer, in column order.
    pub columns: Vec<(String, String)>,
}

fn opt(value: Option<f64>, format: impl Fn(f64) -> String) -> String {
    value.map_or_else(|| "n/a".to_owned(), format)
}

/// `12.34 ± 0.56`, or `12.34` without a deviation.
fn mean_pm_sd(mean: f64, sd: Option<f64>) -> String {
    match sd {
        Some(sd) => format!("{mean:.2} ± {sd:.2}"),
        None => format!("{mean:.2}"),
    }
}

impl Report {
    pub fn to_json(&self) -> String {
        // Plain data with string keys: serialising cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The engine, with `(virtual)` when its times are not measurements.
    fn engine_label(&self) -> String {
        if self.time == "measured" {
            self.engine.clone()
        } else {
            format!("{} ({})", self.engine, self.time)
        }
    }

    fn peer_columns(&self) -> &[(String, String)] {
        self.peers.as_ref().map_or(&[], |p| p.columns.as_slice())
    }

    /// A table in the manner of llama-bench, then the context a reader needs: device, peak and
    /// its source, the bytes-per-token formula, version and date.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let mut header = vec![
            "model",
            "engine",
            "depth",
            "n",
            "tok/s",
            "µs/token",
            "GB/s",
            "% peak",
            "roofline tok/s",
            "pp",
            "pp tok/s",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
        let mut align = vec![
            ":--", ":--", "--:", "--:", "--:", "--:", "--:", "--:", "--:", "--:", "--:",
        ];
        for (_, label) in self.peer_columns() {
            header.push(format!("vs {label}"));
            align.push("--:");
        }
        let _ = writeln!(out, "| {} |", header.join(" | "));
        let _ = writeln!(out, "|{}|", align.join("|"));
        for r in &self.results {
            let mut row = vec![
                self.model.name.clone(),
                self.engine_label(),
                r.depth.to_string(),
                r.tokens.to_string(),
                mean_pm_sd(r.tok_s_mean, r.tok_s_sd),
                format!("{:.1}", r.us_per_token),
                significant(r.gb_per_s),
                opt(r.percent_of_peak, |p| format!("{p:.1} %")),
                opt(r.roofline_tok_s, |t| format!("{t:.0}")),
                r.pp.as_ref()
                    .map_or_else(|| "n/a".to_owned(), |pp| pp.tokens.to_string()),
                r.pp.as_ref().map_or_else(
                    || "n/a".to_owned(),
                    |pp| mean_pm_sd(pp.tok_s_mean, pp.tok_s_sd),
                ),
            ];
            for (name, _) in self.peer_columns() {
                let ratio = r
                    .peers
                    .iter()
                    .find(|p| &p.name == name)
                    .and_then(|p| p.ratio);
                row.push(opt(ratio, |x| format!("{x:.2}×")));
            }
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
        out.push('\n');
        let device = match &self.gpu {
            Some(g) => format!(
                "{} (compute {}, {} SMs), driver {} (CUDA {})",
                g.name,
                g.compute_capability,
                g.sm_count,
                g.driver.as_deref().unwrap_or("unknown"),
                g.cuda_driver
            ),
            None => format!(
                "none; host CPU {} ({} threads)",
                self.host.cpu, self.host.threads
            ),
        };
        let _ = writeln!(out, "GPU: {device}  ");
        match self.time {
            "measured" => {}
            "simulated" => {
                let model = self.timing_model.as_deref().unwrap_or("unknown model");
                let _ = writeln!(
                    out,
                    "Times are simulated: the virtual GPU's timing model of an H100 SXM \
                     ({model}, docs/PERFORMANCE.md), a prediction and not a measurement  "
                );
            }
            other => {
                let _ = writeln!(
                    out,
                    "Times are {other}: the {other} GPU's own clock, not a measurement of any \
                     hardware  "
                );
            }
        }
        let peak = match &self.peak_bandwidth {
            Some(p) => format!("{:.2} TB/s ({})", p.bytes_per_s / 1e12, p.source),
            None => format!(
                "n/a (no known peak bandwidth for the {} engine)",
                self.engine
            ),
        };
        let _ = writeln!(out, "Peak bandwidth: {peak}  ");
        let _ = writeln!(
            out,
            "Bytes per token: {} of weights + the KV cache read, {} per position ({} cache) \
             × (depth + (n + 1) / 2) positions on average; roofline = peak ÷ bytes per token  ",
            human_bytes(self.model.weight_bytes_per_token),
            human_bytes(self.model.kv_bytes_per_position),
            self.model.kv_cache_dtype
        );
        let _ = writeln!(
            out,
            "Timing: {}; tok/s is the mean ± sd of {} of {} after {} at each depth, every run \
             from the same depth; the cache {}  ",
            self.timer,
            count(self.settings.repetitions, "run"),
            count(self.settings.tokens, "token"),
            count(self.settings.warmup, "warm-up step"),
            match self.settings.fill {
                Fill::Steps => "filled by decode steps",
                Fill::Random => "filled with pseudo-random rows (--fill random)",
            }
        );
        if self.settings.prompt_tokens > 0 {
            let _ = writeln!(
                out,
                "Prompt processing: {}; pp tok/s is the mean ± sd of {} of a {}-token prompt \
                 after a {}-token warm-up, every run from the same depth  ",
                self.prefill,
                count(self.settings.repetitions, "prefill"),
                self.settings.prompt_tokens,
                self.settings.warmup.min(self.settings.prompt_tokens)
            );
        }
        if let Some(p) = &self.peers {
            let _ = writeln!(
                out,
                "Peers: {} (measured on {}; weights: {})  ",
                p.file,
                p.gpu.as_deref().unwrap_or("an unnamed GPU"),
                p.weights.as_deref().unwrap_or("not stated")
            );
        }
        for s in &self.skipped {
            let _ = writeln!(out, "Skipped: {}  ", s.reason);
        }
        self.write_simulated_breakdown(&mut out);
        let _ = writeln!(
            out,
            "qwenmk {} ({}), {}",
            self.qwenmk.version, self.qwenmk.commit, self.date
        );
        out
    }

    /// Where the simulated time of a step went, per depth and stage (µs, then % of the step),
    /// and the memory traffic behind it; nothing unless the run was simulated.
    fn write_simulated_breakdown(&self, out: &mut String) {
        let profiled: Vec<(usize, &SimulatedProfile)> = self
            .results
            .iter()
            .filter_map(|r| r.simulated.as_ref().map(|p| (r.depth, p)))
            .collect();
        if profiled.is_empty() {
            return;
        }
        let stages: Vec<&str> = STAGES
            .iter()
            .copied()
            .filter(|s| {
                profiled
                    .iter()
                    .any(|(_, p)| p.stages.iter().any(|t| t.stage == *s))
            })
            .collect();
        let _ = writeln!(
            out,
            "\nSimulated time per step by stage (µs, % of the step; from the last block's \
             arrival at one grid barrier to the last at the next, summed over layers):\n"
        );
        let _ = writeln!(
            out,
            "| depth | µs/step | {} | barrier waits | HBM MB/step | L2 hit MB/step | HBM busy | \
             HBM GB/s |",
            stages.join(" | ")
        );
        let _ = writeln!(
            out,
            "|--:|--:|{}--:|--:|--:|--:|--:|",
            "--:|".repeat(stages.len())
        );
        for &(depth, p) in &profiled {
            let cells: Vec<String> = stages
                .iter()
                .map(|s| {
                    p.stages.iter().find(|t| t.stage == *s).map_or_else(
                        || "—".to_owned(),
                        |t| format!("{} ({:.0} %)", significant(t.us_per_step), t.percent),
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "| {depth} | {} | {} | {} | {} | {} | {:.0} % | {:.0} |",
                significant(p.us_per_step),
                cells.join(" | "),
                significant(p.barrier_wait_us_per_step),
                significant(p.hbm_bytes_per_step / 1e6),
                significant(p.l2_hit_bytes_per_step / 1e6),
                p.hbm_busy_percent,
                p.hbm_gb_per_s
            );
        }
        Self::write_hbm_by_stage(out, &stages, &profiled);
        out.push('\n');
    }

    /// The HBM pipe's busy share during each stage (where the step leaves HBM idle), when the
    /// driver reported it for every profiled depth.
    fn write_hbm_by_stage(
        out: &mut String,
        stages: &[&str],
        profiled: &[(usize, &SimulatedProfile)],
    ) {
        let known = profiled
            .iter()
            .all(|(_, p)| p.stages.iter().any(|t| t.hbm_busy_percent.is_some()));
        if !known {
            return;
        }
        let _ = writeln!(
            out,
            "\nSimulated HBM busy by stage (% of the stage's time the HBM pipe was transferring):\n"
        );
        let _ = writeln!(out, "| depth | {} |", stages.join(" | "));
        let _ = writeln!(out, "|--:|{}", "--:|".repeat(stages.len()));
        for (depth, p) in profiled {
            let cells: Vec<String> = stages
                .iter()
                .map(|s| {
                    p.stages
                        .iter()
                        .find(|t| t.stage == *s)
                        .and_then(|t| t.hbm_busy_percent)
                        .map_or_else(|| "—".to_owned(), |b| format!("{b:.0} %"))
                })
                .collect();
            let _ = writeln!(out, "| {depth} | {} |", cells.join(" | "));
        }
    }

    /// One header line, then one line per depth; missing values (peak on cpu) are empty.
    pub fn to_csv(&self) -> String {
        let mut header = [
            "model",
            "engine",
            "time",
            "gpu",
            "depth",
            "tokens",
            "repetitions",
            "tok_s_mean",
            "tok_s_sd",
            "us_per_token",
            "bytes_per_token",
            "gb_per_s",
            "percent_of_peak",
            "roofline_tok_s",
            "pp_tokens",
            "pp_tok_s_mean",
            "pp_tok_s_sd",
        ]
        .map(str::to_owned)
        .to_vec();
        for (name, _) in self.peer_columns() {
            header.push(format!("ratio_{name}"));
        }
        let mut out = header.join(",") + "\n";
        let num = |v: Option<f64>| v.map_or_else(String::new, |x| format!("{x}"));
        let gpu = self.gpu.as_ref().map_or("", |g| g.name.as_str());
        for r in &self.results {
            let mut row = vec![
                csv_field(&self.model.name),
                csv_field(&self.engine),
                self.time.to_owned(),
                csv_field(gpu),
                r.depth.to_string(),
                r.tokens.to_string(),
                r.samples_s.len().to_string(),
                num(Some(r.tok_s_mean)),
                num(r.tok_s_sd),
                num(Some(r.us_per_token)),
                r.bytes_per_token.to_string(),
                num(Some(r.gb_per_s)),
                num(r.percent_of_peak),
                num(r.roofline_tok_s),
                r.pp.as_ref()
                    .map_or_else(String::new, |pp| pp.tokens.to_string()),
                num(r.pp.as_ref().map(|pp| pp.tok_s_mean)),
                num(r.pp.as_ref().and_then(|pp| pp.tok_s_sd)),
            ];
            for (name, _) in self.peer_columns() {
                row.push(num(r
                    .peers
                    .iter()
                    .find(|p| &p.name == name)
                    .and_then(|p| p.ratio)));
            }
            out += &row.join(",");
            out.push('\n');
        }
        out
    }
}

/// `1 run`, `5 runs`.
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Three significant digits at most, and no fewer than one decimal: 3115.5, 13.5, 0.0036.
fn significant(x: f64) -> String {
    if !x.is_finite() || x == 0.0 || x.abs() >= 10.0 {
        return format!("{x:.1}");
    }
    let decimals = (2 - x.abs().log10().floor() as i32).max(1) as usize;
    format!("{x:.decimals$}")
}

/// A CSV field, quoted when it holds a comma, a quote or a line break (RFC 4180).
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// Now, as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc_from_unix(secs)
}

pub fn utc_from_unix(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The host CPU's model name (Linux), else the architecture.
pub fn host_cpu() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.trim().to_owned())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bench::peers::PeerRatio;

    /// A report with made-up numbers of an H100-like shape (for rendering tests only; these
    /// are not measurements).
    pub(crate) fn sample_report(gpu: bool, peers: bool) -> Report {
        let depths = [0usize, 128, 512, 1024, 4096, 8192, 16384, 32768];
        let weights = 1_192_099_840u64;
        let peak = gpu.then_some(3.352e12);
        let results = depths
            .iter()
            .map(|&depth| {
                let kv = (depth as u64 + 64) * 229_376;
                let bytes = weights + kv;
                let tok_s = 0.85 * 3.352e12 / bytes as f64;
                let samples_s = vec![128.0 / tok_s, 128.0 / (tok_s * 1.01)];
                let peers = if peers {
                    vec![
                        PeerRatio {
                            name: "hf_eager".into(),
                            label: "HF eager bf16".into(),
                            tok_s_mean: Some(60.0),
                            ratio: Some(tok_s / 60.0),
                        },
                        PeerRatio {
                            name: "hf_compile".into(),
                            label: "HF static cache + torch.compile".into(),
                            tok_s_mean: Some(700.0 - depth as f64 / 100.0),
                            ratio: Some(tok_s / 700.0),
                        },
                    ]
                } else {
                    Vec::new()
                };
                DepthResult {
                    depth,
                    tokens: 128,
                    tokens_per_s: samples_s.iter().map(|s| 128.0 / s).collect(),
                    samples_s,
                    tok_s_mean: tok_s,
                    tok_s_sd: Some(tok_s * 0.007),
                    us_per_token: 1e6 / tok_s,
                    weight_bytes_per_token: weights,
                    kv_bytes_per_token: kv,
                    bytes_per_token: bytes,
                    gb_per_s: bytes as f64 * tok_s / 1e9,
                    percent_of_peak: peak.map(|p| 100.0 * bytes as f64 * tok_s / p),
                    roofline_tok_s: peak.map(|p| p / bytes as f64),
                    peers,
                    simulated: None,
                    pp: PromptResult::new(&[512.0 / (tok_s * 20.0), 512.0 / (tok_s * 19.0)], 512),
                }
            })
            .collect();
        Report {
            qwenmk: Provenance::this_build(),
            date: utc_from_unix(0),
            command: vec!["qwenmk".into(), "bench".into()],
            model: ModelReport {
                name: "Qwen3-0.6B (random weights)".into(),
                synthetic_seed: Some(0),
                layers: 28,
                hidden_size: 1024,
                vocab_size: 151_936,
                weight_bytes_per_token: weights,
                kv_bytes_per_position: 229_376,
                kv_cache_dtype: "f32",
            },
            engine: if gpu { "gpu" } else { "cpu" }.into(),
            time: "measured",
            simulated: false,
            timing_model: None,
            timer: "test".into(),
            prefill: "test prefill".into(),
            gpu: gpu.then(|| GpuReport {
                name: "NVIDIA H100 80GB HBM3".into(),
                driver: Some("580.95.05".into()),
                cuda_driver: "13.0".into(),
                compute_capability: "9.0".into(),
                sm_count: 132,
                memory_clock_mhz: 2619.0,
                memory_bus_width_bits: 5120,
            }),
            host: HostReport {
                cpu: "test CPU".into(),
                threads: 2,
            },
            peak_bandwidth: peak.map(|bytes_per_s| PeakBandwidth {
                bytes_per_s,
                source: "driver: memory clock 2619 MHz × 5120-bit bus × 2 (double data rate)"
                    .into(),
            }),
            settings: Settings {
                tokens: 128,
                repetitions: 2,
                warmup: 16,
                max_context: 32_896,
                depths_requested: depths.to_vec(),
                fill: Fill::Steps,
                prompt_tokens: 512,
            },
            results,
            skipped: Vec::new(),
            peers: peers.then(|| PeersReport {
                file: "peers.json".into(),
                gpu: Some("NVIDIA H100 80GB HBM3".into()),
                weights: Some("random".into()),
                columns: vec![
                    ("hf_eager".into(), "HF eager bf16".into()),
                    (
                        "hf_compile".into(),
                        "HF static cache + torch.compile".into(),
                    ),
                ],
            }),
        }
    }

    #[test]
    fn dates_from_unix_seconds() {
        assert_eq!(utc_from_unix(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_from_unix(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_from_unix(1_780_000_000), "2026-05-28T20:26:40Z");
    }

    #[test]
    fn numbers_keep_three_significant_digits() {
        assert_eq!(significant(3115.46), "3115.5");
        assert_eq!(significant(13.54), "13.5");
        assert_eq!(significant(1.2345), "1.23");
        assert_eq!(significant(0.003564), "0.00356");
        assert_eq!(significant(0.0), "0.0");
        assert_eq!(count(1, "run"), "1 run");
        assert_eq!(count(5, "run"), "5 runs");
    }

    #[test]
    fn markdown_and_csv_carry_the_same_rows() {
        let report = sample_report(true, true);
        let md = report.to_markdown();
        let rows: Vec<&str> = md.lines().filter(|l| l.starts_with('|')).collect();
        assert_eq!(rows.len(), 2 + report.results.len());
        assert!(rows[0].ends_with("| vs HF eager bf16 | vs HF static cache + torch.compile |"));
        assert!(md.contains("3.35 TB/s (driver: memory clock 2619 MHz × 5120-bit bus"));
        assert!(md.contains("NVIDIA H100 80GB HBM3 (compute 9.0, 132 SMs), driver 580.95.05"));
        let csv = report.to_csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 1 + report.results.len());
        let width = lines[0].split(',').count();
        assert!(lines.iter().all(|l| l.split(',').count() == width), "{csv}");
        assert!(lines[1].contains("NVIDIA H100 80GB HBM3"));
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["results"][7]["depth"], 32768);
        assert_eq!(json["gpu"]["driver"], "580.95.05");
    }

    fn json_stage_busy(report: &Report) -> Option<f64> {
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        json["results"][0]["simulated"]["stages"][0]["hbm_busy_percent"].as_f64()
    }

    #[test]
    fn a_simulated_run_says_so_and_shows_where_the_time_went() {
        let mut report = sample_report(true, false);
        report.time = "simulated";
        report.simulated = true;
        report.timing_model = Some("h100-sxm-v1".into());
        report.engine = "gpu".into();
        report.settings.fill = Fill::Random;
        let stage = |stage, us: f64, percent| crate::bench::simulated::StageTime {
            stage,
            us_per_step: us,
            percent,
            imbalance_us_per_step: us / 10.0,
            hbm_busy_percent: Some(percent + 20.0),
        };
        report.results[0].simulated = Some(SimulatedProfile {
            model: "h100-sxm-v1".into(),
            steps: 4,
            us_per_step: 2000.0,
            stages: vec![stage("QKV", 1500.0, 75.0), stage("LM head", 500.0, 25.0)],
            barrier_wait_us_per_step: 200.0,
            layer_us_per_step: vec![1500.0],
            hbm_bytes_per_step: 1.2e9,
            l2_hit_bytes_per_step: 3e7,
            l2_far_hit_bytes_per_step: 1e7,
            hbm_busy_percent: 60.0,
            hbm_gb_per_s: 600.0,
        });
        let md = report.to_markdown();
        assert!(md.contains("| gpu (simulated) |"), "{md}");
        assert!(md.contains("Times are simulated"), "{md}");
        assert!(md.contains("h100-sxm-v1"), "{md}");
        assert!(md.contains("pseudo-random rows (--fill random)"), "{md}");
        assert!(
            md.contains("| depth | µs/step | QKV | LM head | barrier waits | HBM MB/step |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| 0 | 2000.0 | 1500.0 (75 %) | 500.0 (25 %) | 200.0 | 1200.0 | 30.0 | 60 % | 600 |"
            ),
            "{md}"
        );
        assert!(md.contains("Simulated HBM busy by stage"), "{md}");
        assert!(
            md.contains("| depth | QKV | LM head |\n|--:|--:|--:|\n| 0 | 95 % | 45 % |"),
            "{md}"
        );
        assert_eq!(json_stage_busy(&report), Some(95.0));
        // A driver without HBM bins: no such table.
        for s in &mut report.results[0].simulated.as_mut().unwrap().stages {
            s.hbm_busy_percent = None;
        }
        assert!(!report.to_markdown().contains("HBM busy by stage"));
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["time"], "simulated");
        assert_eq!(json["simulated"], true);
        assert_eq!(json["timing_model"], "h100-sxm-v1");
        assert_eq!(json["settings"]["fill"], "random");
        assert_eq!(
            json["results"][0]["simulated"]["stages"][1]["stage"],
            "LM head"
        );
        assert!(json["results"][1]["simulated"].is_null());
        // A measured run has no breakdown.
        assert!(
            !sample_report(true, false)
                .to_markdown()
                .contains("by stage")
        );
    }

    #[test]
    fn prompt_processing_has_its_columns_and_fields() {
        let mut report = sample_report(false, false);
        let md = report.to_markdown();
        let rows: Vec<&str> = md.lines().filter(|l| l.starts_with('|')).collect();
        assert!(
            rows[0].ends_with("| roofline tok/s | pp | pp tok/s |"),
            "{md}"
        );
        let pp = report.results[0].pp.clone().unwrap();
        assert_eq!(pp.tokens, 512);
        assert_eq!(pp.tokens_per_s.len(), 2);
        assert!(
            (pp.us_per_token - 1e6 * pp.samples_s.iter().sum::<f64>() / 2.0 / 512.0).abs() < 1e-6
        );
        let cells: Vec<&str> = rows[2]
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        assert_eq!(cells[9], "512");
        assert_eq!(cells[10], mean_pm_sd(pp.tok_s_mean, pp.tok_s_sd), "{md}");
        assert!(md.contains("Prompt processing: test prefill; pp tok/s is the mean ± sd of 2 prefills of a 512-token prompt after a 16-token warm-up"), "{md}");
        let csv = report.to_csv();
        let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
        let line: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
        let column = |name: &str| header.iter().position(|h| *h == name).unwrap();
        assert_eq!(line[column("pp_tokens")], "512");
        assert_eq!(
            line[column("pp_tok_s_mean")].parse::<f64>().unwrap(),
            pp.tok_s_mean
        );
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["results"][0]["pp"]["tokens"], 512);
        assert_eq!(json["settings"]["prompt_tokens"], 512);
        assert_eq!(json["prefill"], "test prefill");

        // Without prompt runs (-p 0): n/a, empty CSV cells, null in JSON, no footnote.
        report.settings.prompt_tokens = 0;
        for r in &mut report.results {
            r.pp = None;
        }
        let md = report.to_markdown();
        assert!(
            md.lines().nth(2).unwrap().ends_with("| n/a | n/a |"),
            "{md}"
        );
        assert!(!md.contains("Prompt processing"), "{md}");
        assert!(report.to_csv().lines().nth(1).unwrap().ends_with(",,,"));
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["results"][0]["pp"], serde_json::Value::Null);
        assert!(PromptResult::new(&[], 512).is_none());
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("cpu"), "cpu");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
