//! `qwenmk bench`: decode speed (tg) and prompt processing (pp) against KV-cache depth.
//!
//! 1. the model's config: a checkpoint's, or a --synthetic one (no weights yet);
//! 2. the engine (auto → gpu or cpu) and, from its defaults and the flags, the sweep: which
//!    depths fit, how large the KV cache must be;
//! 3. the peers file, if any (read before the expensive work);
//! 4. the weights (packed on first use, or random ones generated once) and the engine;
//! 5. the sweep, with a progress bar on stderr (on a terminal);
//! 6. the report to stdout (Markdown, JSON or CSV) and the plot.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use qwenmk_weights::synthetic::{pack_random_with, tiny_config};
use qwenmk_weights::{FORMAT_VERSION, ModelConfig, PackedModel};

use crate::bench::engine::BenchEngine;
use crate::bench::peers::PeersFile;
use crate::bench::report::{
    DepthResult, GpuReport, HostReport, ModelReport, PeakBandwidth, PeersReport, Provenance,
    Report, Settings, host_cpu, utc_now,
};
use crate::bench::stats::{BytesPerToken, DepthStats, kv_bytes_per_position};
use crate::bench::sweep::{self, Progress, SweepPlan};
use crate::cli::{BenchArgs, BenchFormat, Device, Fill};
use crate::commands::model::ModelInput;
use crate::engine::check_device;
use crate::engine::cpu::CpuEngine;
use crate::engine::emulator::EmulatorEngine;
use crate::engine::gpu::{self, GpuEngine, GpuInfo, GpuUnavailable};
use crate::engine::kv::{self, KvDtype};
use crate::hub::{HubSettings, PackedSource};

/// Qwen3-0.6B's published config.json: the shapes `--synthetic` uses by default.
const QWEN3_0_6B_CONFIG: &str = include_str!("../../../fixtures/qwen3-0.6b/config.json");

/// The engine a run uses, decided before any weights are loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Gpu,
    /// The virtual GPU (docs/VGPU.md): the gpu engine on an interpreter, seconds per step.
    VirtualGpu,
    Cpu,
    Emulator,
}

/// Defaults that depend on the engine: the GPU sweeps to 32k; the CPU and, far slower, the
/// emulator stay shallow. Prompts are llama-bench's pp512, except on the emulator, where each
/// prompt token is a whole emulated decode step, and the virtual GPU, which runs none unless
/// asked.
struct Defaults {
    depths: &'static [usize],
    tokens: usize,
    prompt: usize,
    repetitions: usize,
    warmup: usize,
}

impl Kind {
    fn defaults(&self) -> Defaults {
        match self {
            Kind::Gpu => Defaults {
                depths: &[0, 128, 512, 1024, 4096, 8192, 16384, 32768],
                tokens: 128,
                prompt: 512,
                repetitions: 5,
                warmup: 16,
            },
            Kind::Cpu => Defaults {
                depths: &[0, 32, 128],
                tokens: 128,
                prompt: 512,
                repetitions: 5,
                warmup: 4,
            },
            Kind::Emulator => Defaults {
                depths: &[0, 32],
                tokens: 16,
                prompt: 16,
                repetitions: 2,
                warmup: 1,
            },
            Kind::VirtualGpu => Defaults {
                depths: &[0, 128],
                tokens: 4,
                // The gpu engine feeds a prompt one decode step per token, so pp would only
                // repeat tg here at seconds to minutes per token; -p asks for it.
                prompt: 0,
                repetitions: 1,
                warmup: 1,
            },
        }
    }

    /// Filling by decode steps is what a user's cache holds; on the virtual GPU a step takes
    /// seconds to minutes, so its cache is filled with pseudo-random rows instead.
    fn default_fill(&self) -> Fill {
        match self {
            Kind::VirtualGpu => Fill::Random,
            _ => Fill::Steps,
        }
    }
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let started = Instant::now();
    let mut notice = |line: &str| {
        let _ = writeln!(std::io::stderr(), "{line}");
    };

    // 0. Where the plot goes, before anything long: a bad path is found now, not after the run.
    if let Some(path) = &args.plot {
        crate::bench::plot::PlotFormat::of(path)?;
        crate::commands::pack::check_output_file(path, "--plot")?;
    }

    // 1. The model's config.
    let source = ModelChoice::resolve(args)?;
    let config = source.config().clone();

    // 2. Engine and sweep.
    let mut kind = resolve_kind(args.device, &mut notice)?;
    let mut plan = sweep_plan(args, &kind, &config, &mut notice)?;

    // 3. Peers.
    let peers = args
        .peers
        .as_deref()
        .map(|path| PeersFile::load(path).map(|file| (path.to_path_buf(), file)))
        .transpose()?;

    // 4. Weights and engine.
    let model = source.open(args.seed, &mut notice)?;
    let context = plan.0.context_needed();
    let mut engine = match open_engine(
        &kind,
        model.clone(),
        context,
        args.kv_cache.map(Into::into),
        &mut notice,
    ) {
        Ok(engine) => engine,
        Err(error) if args.device == Device::Auto && kind == Kind::Gpu => {
            notice(&format!("{error:#}; running on the CPU"));
            kind = Kind::Cpu;
            plan = sweep_plan(args, &kind, &config, &mut notice)?;
            let context = plan.0.context_needed();
            open_engine(
                &kind,
                model.clone(),
                context,
                args.kv_cache.map(Into::into),
                &mut notice,
            )?
        }
        Err(error) => return Err(error),
    };
    let (plan, skipped) = plan;
    let prompts = if plan.prompt == 0 {
        String::new()
    } else {
        format!(" and of a {}-token prompt", plan.prompt)
    };
    notice(&format!(
        "{}: KV cache of {} positions in {} (depth {} + {} steps), {} run{} of {} \
         tokens{prompts} at depth{} {}",
        engine.name(),
        plan.context_needed(),
        engine.kv_cache().name(),
        plan.depths.last().copied().unwrap_or(0),
        plan.span(),
        plan.repetitions,
        if plan.repetitions == 1 { "" } else { "s" },
        plan.tokens,
        if plan.depths.len() == 1 { "" } else { "s" },
        join(&plan.depths)
    ));

    // 5. The sweep.
    let bar = progress_bar(plan.total_steps());
    let samples = sweep::run(
        engine.as_mut(),
        &plan,
        config.vocab_size,
        &mut |p| match p {
            Progress::Stage { depth, stage } => bar.set_message(format!("depth {depth}: {stage}")),
            Progress::Steps(n) => bar.inc(n),
        },
    );
    bar.finish_and_clear();
    let samples = samples?;

    // 6. The report.
    let report = build_report(
        args,
        &source,
        &config,
        engine.as_ref(),
        &kind,
        &plan,
        &samples,
        skipped,
        peers.as_ref(),
    );
    if let Some((_, file)) = &peers {
        warn_about_peers(file, &report, &mut notice);
    }

    let text = match args.output {
        BenchFormat::Md => report.to_markdown(),
        BenchFormat::Json => report.to_json() + "\n",
        BenchFormat::Csv => report.to_csv(),
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to stdout")?;
    if let Some(path) = &args.plot {
        crate::bench::plot::write_plot(&report, path)?;
        notice(&format!("plot written to {}", path.display()));
    }
    notice(&format!(
        "bench: {} depth{} on {} in {:.1} s",
        report.results.len(),
        if report.results.len() == 1 { "" } else { "s" },
        report.engine,
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// The run as a [`Report`]: one row per depth with its statistics and peer ratios.
#[allow(clippy::too_many_arguments)]
fn build_report(
    args: &BenchArgs,
    source: &ModelChoice,
    config: &ModelConfig,
    engine: &dyn BenchEngine,
    kind: &Kind,
    plan: &SweepPlan,
    samples: &[sweep::DepthSamples],
    skipped: Vec<sweep::Skipped>,
    peers: Option<&(PathBuf, PeersFile)>,
) -> Report {
    let gpu = engine.gpu();
    let kv = engine.kv_cache();
    let peak = gpu.map(peak_bandwidth);
    let results = samples
        .iter()
        .map(|s| {
            let bytes = BytesPerToken::at(config, kv, s.depth, plan.tokens);
            let stats = DepthStats::new(
                &s.samples_s,
                plan.tokens,
                bytes,
                peak.as_ref().map(|p| p.bytes_per_s),
            );
            let ratios = peers
                .map(|(_, file)| file.ratios(s.depth, stats.tok_s_mean))
                .unwrap_or_default();
            DepthResult::new(s, plan.tokens, plan.prompt, &stats, ratios)
        })
        .collect();
    Report {
        qwenmk: Provenance::this_build(),
        date: utc_now(),
        command: std::env::args().collect(),
        model: ModelReport {
            name: source.name(),
            synthetic_seed: source.is_synthetic().then_some(args.seed),
            layers: config.num_hidden_layers,
            hidden_size: config.hidden_size,
            vocab_size: config.vocab_size,
            weight_bytes_per_token: config.weight_bytes_per_token(),
            kv_bytes_per_position: kv_bytes_per_position(config, kv),
            kv_cache_dtype: kv.name(),
        },
        engine: engine.name().to_owned(),
        timer: engine.timer().to_owned(),
        time: match gpu {
            Some(g) if g.is_simulated() => "simulated",
            Some(g) if g.is_virtual() => "virtual",
            _ => "measured",
        },
        prefill: engine.prefill_method(),
        simulated: gpu.is_some_and(GpuInfo::is_simulated),
        timing_model: samples
            .iter()
            .find_map(|s| s.profile.as_ref())
            .map(|p| p.model.clone()),
        gpu: gpu.map(gpu_report),
        host: HostReport {
            cpu: host_cpu(),
            threads: rayon::current_num_threads(),
        },
        peak_bandwidth: peak,
        settings: Settings {
            tokens: plan.tokens,
            repetitions: plan.repetitions,
            warmup: plan.warmup,
            max_context: engine.max_context(),
            depths_requested: requested_depths(args, kind),
            fill: plan.fill,
            prompt_tokens: plan.prompt,
        },
        results,
        skipped,
        peers: peers.map(|(path, file)| PeersReport {
            file: path.display().to_string(),
            gpu: file.gpu.clone(),
            weights: file.weights.clone(),
            columns: file
                .peers
                .iter()
                .map(|p| (p.name.clone(), p.label.clone()))
                .collect(),
        }),
    }
}

/// Says when the peers' ratios compare unlike things: another machine, another run length.
fn warn_about_peers(file: &PeersFile, report: &Report, notice: &mut dyn FnMut(&str)) {
    let ours = report.gpu.as_ref().map(|g| g.name.as_str());
    if let Some(theirs) = file.gpu.as_deref()
        && ours != Some(theirs)
    {
        let ours = ours.map_or_else(|| format!("the {} engine", report.engine), str::to_owned);
        notice(&format!(
            "the peers were measured on {theirs}, this run is on {ours}: the ratios compare \
             different machines"
        ));
    }
    if let Some(tokens) = file.tokens
        && tokens != report.settings.tokens
    {
        notice(&format!(
            "the peers decoded {tokens} tokens per run, this run {}: the average depth differs \
             a little",
            report.settings.tokens
        ));
    }
}

/// `auto` → the GPU when one can run the kernels, else the CPU with a notice (as `generate`).
fn resolve_kind(device: Device, notice: &mut dyn FnMut(&str)) -> Result<Kind> {
    Ok(match device {
        Device::Cpu => Kind::Cpu,
        Device::Emulator => Kind::Emulator,
        Device::Gpu => {
            check_device(Device::Gpu)?;
            match gpu::probe(0) {
                Ok(info) if info.is_virtual() => Kind::VirtualGpu,
                _ => Kind::Gpu,
            }
        }
        Device::Auto => match gpu::probe(0) {
            Ok(info) if info.is_virtual() => {
                notice(&format!(
                    "no usable GPU ({}); running on the CPU",
                    crate::engine::virtual_notice(&info)
                ));
                Kind::Cpu
            }
            Ok(info) if info.can_run_kernels() => Kind::Gpu,
            Ok(info) => {
                notice(&format!(
                    "no usable GPU ({}); running on the CPU",
                    info.too_old()
                ));
                Kind::Cpu
            }
            Err(why) => {
                let why = match why {
                    GpuUnavailable::NoDriver => "no CUDA driver was found".to_owned(),
                    GpuUnavailable::NoDevice(why) => why,
                };
                notice(&format!("no usable GPU ({why}); running on the CPU"));
                Kind::Cpu
            }
        },
    })
}

fn requested_depths(args: &BenchArgs, kind: &Kind) -> Vec<usize> {
    args.depth
        .clone()
        .unwrap_or_else(|| kind.defaults().depths.to_vec())
}

/// The sweep for `kind` from its defaults and the flags; depths that do not fit the model's
/// context are skipped with a notice.
fn sweep_plan(
    args: &BenchArgs,
    kind: &Kind,
    config: &ModelConfig,
    notice: &mut dyn FnMut(&str),
) -> Result<(SweepPlan, Vec<sweep::Skipped>)> {
    let defaults = kind.defaults();
    let depths = requested_depths(args, kind);
    let tokens = args.tokens.unwrap_or(defaults.tokens);
    let warmup = args.warmup.unwrap_or(defaults.warmup);
    let limit = config.max_position_embeddings;
    let prompt = args
        .prompt
        .unwrap_or_else(|| default_prompt(defaults.prompt, &depths, tokens.max(warmup), limit));
    let (plan, skipped) = SweepPlan::new(
        &depths,
        tokens,
        prompt,
        args.repetitions.unwrap_or(defaults.repetitions),
        warmup,
        (args.seed, args.fill.unwrap_or(kind.default_fill())),
        limit,
    )?;
    for s in &skipped {
        notice(&format!("skipping depth {}: {}", s.depth, s.reason));
    }
    Ok((plan, skipped))
}

/// The default prompt length: `preferred`, lowered so that it fits beside the deepest depth
/// whose decode runs (`decode_span` positions) fit in `limit` positions; a -p the user gives is
/// taken as it is (depths it does not fit beside are skipped).
fn default_prompt(preferred: usize, depths: &[usize], decode_span: usize, limit: usize) -> usize {
    depths
        .iter()
        .filter(|&&d| d + decode_span <= limit)
        .max()
        .map_or(preferred, |&deepest| preferred.min(limit - deepest))
}

/// The engine with a KV cache of exactly `context` positions of `kv` values (by default the
/// engine's own: [`kv::default_for`]).
fn open_engine(
    kind: &Kind,
    model: Arc<PackedModel>,
    context: usize,
    kv: Option<KvDtype>,
    notice: &mut dyn FnMut(&str),
) -> Result<Box<dyn BenchEngine>> {
    let device = match kind {
        Kind::Cpu => Device::Cpu,
        Kind::Emulator => Device::Emulator,
        Kind::Gpu | Kind::VirtualGpu => Device::Gpu,
    };
    let kv = kv.unwrap_or(kv::default_for(device));
    Ok(match kind {
        Kind::Cpu => Box::new(CpuEngine::new(model, context)?.with_kv_cache(kv)),
        Kind::Emulator => Box::new(EmulatorEngine::with_kv_cache(model, context, kv)?),
        Kind::Gpu | Kind::VirtualGpu => Box::new(
            GpuEngine::new(model, Some(context), kv, notice).with_context(|| {
                format!(
                    "opening the gpu engine with a KV cache of {context} positions (the deepest \
                     --depth plus -n)"
                )
            })?,
        ),
    })
}

fn peak_bandwidth(info: &GpuInfo) -> PeakBandwidth {
    PeakBandwidth {
        bytes_per_s: info.peak_bandwidth_bytes_per_s(),
        source: format!(
            "driver: memory clock {} MHz × {}-bit bus × 2 (double data rate)",
            info.memory_clock_khz / 1000,
            info.memory_bus_width_bits
        ),
    }
}

fn gpu_report(info: &GpuInfo) -> GpuReport {
    GpuReport {
        name: info.name.clone(),
        driver: info.kernel_driver_version.clone(),
        cuda_driver: info.cuda_driver_version.clone(),
        compute_capability: format!(
            "{}.{}",
            info.compute_capability.0, info.compute_capability.1
        ),
        sm_count: info.sm_count,
        memory_clock_mhz: f64::from(info.memory_clock_khz) / 1000.0,
        memory_bus_width_bits: info.memory_bus_width_bits,
    }
}

fn progress_bar(total: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    ProgressBar::new(total).with_style(
        ProgressStyle::with_template(
            "bench {bar:30} {pos}/{len} steps ({elapsed}, eta {eta}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    )
}

fn join(values: &[usize]) -> String {
    values
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Where the weights come from.
enum ModelChoice {
    /// A checkpoint (packed into the cache on first use) or a packed file.
    Model {
        name: String,
        input: ModelInput,
    },
    Synthetic {
        label: String,
        config: ModelConfig,
    },
}

impl ModelChoice {
    fn resolve(args: &BenchArgs) -> Result<Self> {
        match &args.synthetic {
            Some(spec) => {
                let (label, config) = synthetic_config(spec)?;
                Ok(ModelChoice::Synthetic { label, config })
            }
            None => Ok(ModelChoice::Model {
                name: args.model.model.clone(),
                input: ModelInput::resolve(&args.model)?,
            }),
        }
    }

    fn config(&self) -> &ModelConfig {
        match self {
            ModelChoice::Model { input, .. } => input.config(),
            ModelChoice::Synthetic { config, .. } => config,
        }
    }

    fn is_synthetic(&self) -> bool {
        matches!(self, ModelChoice::Synthetic { .. })
    }

    fn name(&self) -> String {
        match self {
            ModelChoice::Model { name, .. } => name.clone(),
            ModelChoice::Synthetic { label, .. } => format!("{label} (random weights)"),
        }
    }

    fn open(&self, seed: u64, notice: &mut dyn FnMut(&str)) -> Result<Arc<PackedModel>> {
        match self {
            ModelChoice::Model { input, .. } => input.weights(notice),
            ModelChoice::Synthetic { label, config } => {
                let settings = HubSettings::from_env()?;
                open_or_generate(label, config, seed, &settings.packed_dir, notice).map(Arc::new)
            }
        }
    }
}

/// `qwen3-0.6b`, `tiny`, or a config.json (or its directory): a short label and the config.
fn synthetic_config(spec: &str) -> Result<(String, ModelConfig)> {
    match spec.to_ascii_lowercase().as_str() {
        "qwen3-0.6b" => Ok((
            "Qwen3-0.6B".to_owned(),
            ModelConfig::from_json_str(QWEN3_0_6B_CONFIG)
                .context("the embedded Qwen3-0.6B config does not parse; a qwenmk bug")?,
        )),
        "tiny" => Ok(("tiny".to_owned(), tiny_config(true))),
        _ => {
            let path = Path::new(spec);
            let file = if path.is_dir() {
                path.join("config.json")
            } else {
                path.to_path_buf()
            };
            if !file.is_file() {
                anyhow::bail!(
                    "--synthetic {spec}: not `qwen3-0.6b`, `tiny`, nor a config.json or a \
                     directory holding one"
                );
            }
            let config = ModelConfig::from_file(&file)?;
            let label = file
                .parent()
                .and_then(|d| d.file_name())
                .map_or_else(|| spec.to_owned(), |n| n.to_string_lossy().into_owned());
            Ok((label, config))
        }
    }
}

/// Random weights of `config`'s shapes, packed into qwenmk's cache on first use (a name that
/// hashes the config, the format version and the seed) and reused after.
fn open_or_generate(
    label: &str,
    config: &ModelConfig,
    seed: u64,
    packed_dir: &Path,
    notice: &mut dyn FnMut(&str),
) -> Result<PackedModel> {
    let key = xxhash_rust::xxh3::xxh3_64(
        format!("{FORMAT_VERSION}\n{seed}\n{}", config.to_json_string()).as_bytes(),
    );
    let slug: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let path: PathBuf = packed_dir.join(format!("synthetic-{slug}-seed{seed}-{key:016x}.qwenmk"));
    if path.exists() {
        match PackedModel::open(&path) {
            Ok(model) if model.config() == config => return Ok(model),
            Ok(_) => notice(&format!(
                "{} holds another config; generating it again",
                path.display()
            )),
            Err(why) => notice(&format!(
                "the cached random weights are unusable ({why:#}); generating them again"
            )),
        }
    } else {
        notice(&format!(
            "generating random weights of {label}'s shapes (seed {seed}) into {} (first use; \
             later runs reuse it)",
            path.display()
        ));
    }
    crate::commands::pack::ensure_cache_dir(packed_dir)?;
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new(0).with_style(
            ProgressStyle::with_template("generating {bar:30} {bytes}/{total_bytes} ({eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        )
    } else {
        ProgressBar::hidden()
    };
    let provenance = PackedSource::Synthetic {
        label: label.to_owned(),
        seed,
    };
    let packed = pack_random_with(config, seed, &path, &[provenance.attachment()], |p| {
        bar.set_length(p.bytes_total);
        bar.set_position(p.bytes_done);
    });
    bar.finish_and_clear();
    packed.with_context(|| format!("generating random weights into {}", path.display()))?;
    PackedModel::open(&path)
        .with_context(|| format!("the generated weights {} do not open", path.display()))
}

#[cfg(test)]
mod tests {
    use super::default_prompt;

    #[test]
    fn the_default_prompt_fits_beside_the_deepest_depth() {
        // Room to spare: the engine's preference.
        assert_eq!(default_prompt(512, &[0, 32, 128], 128, 40_960), 512);
        // The tiny config's 256 positions: what is left beside depth 32.
        assert_eq!(default_prompt(512, &[0, 8, 32], 3, 256), 224);
        // Depths whose decode runs do not fit are skipped anyway and do not lower it.
        assert_eq!(default_prompt(512, &[0, 250, 4096], 8, 256), 256);
        // Nothing fits: left as it is (the plan then says that no depth fits).
        assert_eq!(default_prompt(16, &[300], 2, 256), 16);
    }
}
