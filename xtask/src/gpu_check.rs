//! `cargo xtask gpu-check --out DIR`: the GPU bring-up in one call, for the day a GPU is lent.
//!
//! On a machine with an NVIDIA GPU and no network it makes full-size random Qwen3-0.6B
//! weights (a safetensors checkpoint with the real tokenizer, which transformers can load too),
//! then writes one results file, `DIR/gpu-check.json`, with:
//! * `--device gpu` against `--device cpu` — and against Hugging Face transformers where torch
//!   is installed — on several prompts, with an f32 KV cache as the references have: the first divergence of each, and the reference's
//!   logit gap between its token and the GPU's there (a gap near zero is a float near-tie, a
//!   large one a bug);
//! * compute-sanitizer's memcheck, racecheck and synccheck on a few decode steps;
//! * `qwenmk bench` at depths 0, 128, 1,024 and 8,192, and the HF peers (`cargo xtask peers`).
//!
//! `--tiny --vgpu` runs the same checks on the virtual GPU with the tiny fixture (whose
//! `reference.json` holds transformers' tokens), skipping the sanitizers and peers with a
//! notice: CI runs it that way, so the command is known to work before a GPU sees it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use qwenmk::engine::Engine;
use qwenmk::engine::cpu::CpuEngine;
use qwenmk_weights::PackedModel;
use serde_json::{Value, json};

pub const SUMMARY: &str =
    "GPU bring-up in one call: gpu vs cpu (and HF) tokens, compute-sanitizer, bench, peers";

const HELP: &str = "\
usage: cargo xtask gpu-check --out DIR [--tokens N] [--tiny] [--vgpu] [--qwenmk PATH]
                             [--python PATH] [--no-peers]

Checks the gpu engine on this machine's GPU and writes DIR/gpu-check.json (plus logs):
  tokens     --device gpu against --device cpu (and transformers where torch is installed) on
             3 prompts × N tokens (default 128): first divergence and logit gap
  sanitizer  compute-sanitizer memcheck, racecheck, synccheck on a few decode steps
  bench      qwenmk bench --device gpu at depths 0,128,1024,8192
  peers      cargo xtask peers (HF eager and torch.compile) at the same depths
The model is full-size Qwen3-0.6B with random weights, made locally (no network).

options:
  --out DIR       where the results go (created)
  --tokens N      tokens generated per prompt (default 128; 8 with --tiny)
  --tiny          the tiny fixture fixtures/tiny-gqa2 instead of Qwen3-0.6B shapes
  --vgpu          run on the virtual GPU (the stand-in driver); sanitizer and peers skipped
  --qwenmk PATH   the qwenmk binary to check (default: build the release one)
  --python PATH   Python with torch and transformers (default $QWENMK_PYTHON, else python3)
  --no-peers      skip the HF peer measurement";

/// What to check and where.
#[derive(Debug, Clone)]
pub struct Options {
    pub out: PathBuf,
    pub tokens: usize,
    pub tiny: bool,
    pub vgpu: bool,
    pub qwenmk: Option<PathBuf>,
    pub python: OsString,
    pub peers: bool,
}

fn parse(args: &[String]) -> Result<Option<Options>> {
    let mut out = None;
    let mut tokens = None;
    let (mut tiny, mut vgpu, mut peers) = (false, false, true);
    let mut qwenmk = None;
    let mut python = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .with_context(|| format!("{flag} needs a value (see --help)"))
        };
        match a.as_str() {
            "-h" | "--help" => {
                println!("{HELP}");
                return Ok(None);
            }
            "--out" => out = Some(PathBuf::from(value("--out")?)),
            "--tokens" => {
                let v = value("--tokens")?;
                tokens = Some(
                    v.parse::<usize>()
                        .ok()
                        .filter(|&n| n > 0)
                        .with_context(|| format!("--tokens {v} is not a positive number"))?,
                );
            }
            "--tiny" => tiny = true,
            "--vgpu" => vgpu = true,
            "--no-peers" => peers = false,
            "--qwenmk" => qwenmk = Some(PathBuf::from(value("--qwenmk")?)),
            "--python" => python = Some(OsString::from(value("--python")?)),
            other => bail!("unknown option `{other}` (see --help)"),
        }
    }
    let out = out.context("--out DIR is required: where the results go")?;
    let python = python
        .or_else(|| std::env::var_os("QWENMK_PYTHON").filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "python3".into());
    Ok(Some(Options {
        out,
        tokens: tokens.unwrap_or(if tiny { 8 } else { 128 }),
        tiny,
        vgpu,
        qwenmk,
        python,
        peers,
    }))
}

pub fn run(args: &[String]) -> Result<()> {
    let Some(options) = parse(args)? else {
        return Ok(());
    };
    let results = check(&options)?;
    let path = options.out.join("gpu-check.json");
    println!("{}", summary(&results));
    println!("results: {}", path.display());
    if results["ok"] != true {
        bail!(
            "the gpu engine does not match its references (see {})",
            path.display()
        );
    }
    Ok(())
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// A prompt: the `generate` arguments that give it, and transformers' tokens if known.
struct Prompt {
    label: String,
    args: Vec<String>,
    hf: Option<Vec<u32>>,
}

const PROMPTS: [&str; 3] = [
    "The capital of France is",
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "def fibonacci(n):",
];

/// Where qwenmk runs: the binary and the environment it needs.
struct Runner {
    qwenmk: PathBuf,
    env: Vec<(String, OsString)>,
}

impl Runner {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.qwenmk);
        c.args(args).envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// `qwenmk ARGS`; the output, or an error with its stderr.
    fn output(&self, args: &[&str]) -> Result<std::process::Output> {
        let out = self
            .command(args)
            .output()
            .with_context(|| format!("running {}", self.qwenmk.display()))?;
        if !out.status.success() {
            bail!(
                "qwenmk {} failed: {}",
                args.first().unwrap_or(&""),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out)
    }
}

/// The JSON object of `generate --json` (the last line that parses, or the whole output).
fn generate_json(stdout: &[u8]) -> Result<Value> {
    let text = String::from_utf8_lossy(stdout);
    if let Ok(v) = serde_json::from_str::<Value>(text.trim()) {
        return Ok(v);
    }
    text.lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .context("generate --json printed no JSON")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_u64())
                .map(|x| x as u32)
                .collect()
        })
        .unwrap_or_default()
}

/// Runs every check and writes `gpu-check.json`.
pub fn check(o: &Options) -> Result<Value> {
    std::fs::create_dir_all(&o.out).with_context(|| format!("creating {}", o.out.display()))?;
    let out = o.out.canonicalize()?;
    let notices = std::cell::RefCell::new(Vec::<String>::new());
    let notice = |s: String| {
        eprintln!("gpu-check: {s}");
        notices.borrow_mut().push(s);
    };

    let qwenmk = match &o.qwenmk {
        Some(p) => p.clone(),
        None => crate::vgpu::build_qwenmk()?,
    };
    let mut env: Vec<(String, OsString)> = vec![
        ("HF_HOME".into(), out.join("hf-home").into_os_string()),
        ("HF_HUB_OFFLINE".into(), "1".into()),
    ];
    if o.vgpu {
        let lib = crate::vgpu::build_driver(&format!("gpu-check-{}", std::process::id()))?;
        env.push(("LD_LIBRARY_PATH".into(), crate::vgpu::library_path(&lib)));
    }
    if std::env::var_os("PTXAS").is_none()
        && let Some(p) = qwenmk::ptxas::find_ptxas()
    {
        env.push(("PTXAS".into(), p.into_os_string()));
    }
    let runner = Runner { qwenmk, env };

    let info = runner.output(&["info", "--json"])?;
    let device: Value =
        serde_json::from_slice(&info.stdout).context("qwenmk info --json printed no JSON")?;
    if let Some(why) = device["gpu"]["unavailable"].as_str() {
        bail!("qwenmk sees no GPU here ({why}); gpu-check needs one (or --vgpu)");
    }

    // The model and the prompts.
    let (model_dir, prompts) = if o.tiny {
        tiny_model()?
    } else {
        let dir = out.join("model");
        write_full_size_checkpoint(&dir)?;
        let mut prompts: Vec<Prompt> = PROMPTS
            .iter()
            .map(|p| Prompt {
                label: p.to_string(),
                args: vec!["--raw".into(), p.to_string()],
                hf: None,
            })
            .collect();
        match hf_reference(o, &dir, &out, o.tokens) {
            Ok(hf) => {
                for (p, ids) in prompts.iter_mut().zip(hf) {
                    p.hf = Some(ids);
                }
            }
            Err(e) => notice(format!("no transformers reference: {e:#}")),
        }
        (dir, prompts)
    };
    let model = model_dir.to_string_lossy().into_owned();

    // Tokens on both engines.
    let n = o.tokens.to_string();
    let mut reports = Vec::new();
    let mut cpu_engine: Option<CpuEngine> = None;
    let mut ok = true;
    for p in &prompts {
        let run = |device: &str| -> Result<(Vec<u32>, Vec<u32>)> {
            let mut args = vec![
                "generate",
                "--model",
                &model,
                "--device",
                device,
                // transformers' reference and the cpu replay engine run in float32: so does
                // this cache (the gpu engine's default is BF16; the bench below uses it).
                "--kv-cache",
                "f32",
                "--json",
                "--ignore-eos",
                "--temp",
                "0",
                "-n",
                &n,
            ];
            args.extend(p.args.iter().map(String::as_str));
            let json = generate_json(&runner.output(&args)?.stdout)?;
            Ok((ids(&json["prompt_tokens"]), ids(&json["tokens"])))
        };
        let (prompt_ids, gpu) = run("gpu")?;
        let (_, cpu) = run("cpu")?;
        let engine = match &mut cpu_engine {
            Some(e) => e,
            None => cpu_engine.insert(cpu_replay_engine(&out, prompt_ids.len() + o.tokens + 1)?),
        };
        let vs_cpu = compare(&gpu, &cpu, |k| {
            engine.reset();
            let mut context = prompt_ids.clone();
            context.extend(&cpu[..k]);
            engine.prefill(&context).ok()?;
            let logits = engine.logits();
            Some(logits[cpu[k] as usize] - logits[gpu[k] as usize])
        });
        let vs_hf =
            p.hf.as_ref()
                .map(|hf| compare(&gpu, &hf[..hf.len().min(gpu.len())], |_| None));
        ok &= vs_cpu["verdict"] != "mismatch"
            && vs_hf.as_ref().is_none_or(|v| v["verdict"] != "mismatch");
        reports.push(json!({
            "prompt": p.label,
            "prompt_tokens": prompt_ids.len(),
            "gpu": gpu,
            "cpu": cpu,
            "vs_cpu": vs_cpu,
            "vs_transformers": vs_hf,
        }));
    }

    let sanitizer = if o.vgpu {
        notice("compute-sanitizer skipped: the virtual GPU checks memory itself".into());
        Value::Null
    } else {
        sanitize(&runner, &model, &out, &notice)
    };

    let depths = if o.tiny { "0,8" } else { "0,128,1024,8192" };
    let mut bench_args = vec![
        "bench", "--model", &model, "--device", "gpu", "--depth", depths,
    ];
    if o.tiny {
        bench_args.extend([
            "--tokens",
            "2",
            "--n-prompt",
            "2",
            "--repetitions",
            "1",
            "--warmup",
            "0",
        ]);
    }
    bench_args.extend(["-o", "json"]);
    let bench = match runner.output(&bench_args) {
        Ok(b) => {
            std::fs::write(out.join("bench.json"), &b.stdout)?;
            serde_json::from_slice::<Value>(&b.stdout).unwrap_or(Value::Null)
        }
        Err(e) => {
            ok = false;
            notice(format!("bench failed: {e:#}"));
            Value::Null
        }
    };

    let peers = if o.vgpu || !o.peers {
        notice("peers skipped (virtual GPU or --no-peers)".into());
        Value::Null
    } else {
        let file = out.join("peers.json");
        let args: Vec<String> = [
            "--python",
            &o.python.to_string_lossy(),
            "--depths",
            "0,128,1024,8192",
            "--out",
            &file.to_string_lossy(),
        ]
        .map(String::from)
        .to_vec();
        match crate::peers::run(&args) {
            Ok(()) => serde_json::from_str(&std::fs::read_to_string(&file)?)?,
            Err(e) => {
                notice(format!("peers did not run: {e:#}"));
                Value::Null
            }
        }
    };

    let results = json!({
        "ok": ok,
        "date": qwenmk::bench::report::utc_now(),
        "qwenmk": { "version": qwenmk::bench::report::VERSION, "commit": qwenmk::bench::report::COMMIT },
        "device": device,
        "virtual_gpu": o.vgpu,
        "model": if o.tiny { "fixtures/tiny-gqa2".to_string() } else { "random Qwen3-0.6B (fixtures/qwen3-0.6b/config.json)".to_string() },
        "tokens_per_prompt": o.tokens,
        "prompts": reports,
        "sanitizer": sanitizer,
        "bench": bench,
        "peers": peers,
        "notices": notices.into_inner(),
    });
    std::fs::write(
        out.join("gpu-check.json"),
        serde_json::to_string_pretty(&results)? + "\n",
    )?;
    Ok(results)
}

/// The tiny fixture and three of its reference cases (transformers' tokens included).
fn tiny_model() -> Result<(PathBuf, Vec<Prompt>)> {
    let dir = root().join("fixtures/tiny-gqa2");
    let text = std::fs::read_to_string(dir.join("reference.json"))?;
    let reference: Value = serde_json::from_str(&text)?;
    let prompts = reference["cases"]
        .as_array()
        .context("reference.json has no cases")?
        .iter()
        .take(3)
        .map(|c| {
            let mut args = Vec::new();
            if c["mode"] == "raw" {
                args.push("--raw".to_string());
            }
            if let Some(s) = c["system"].as_str() {
                args.extend(["--system".to_string(), s.to_string()]);
            }
            if c["think"] == true {
                args.push("--think".to_string());
            }
            args.push(c["prompt"].as_str().unwrap_or_default().to_string());
            Prompt {
                label: c["name"].as_str().unwrap_or_default().to_string(),
                args,
                hf: Some(ids(&c["generated_ids"])),
            }
        })
        .collect();
    Ok((dir, prompts))
}

/// Random full-size Qwen3-0.6B: Qwen3-0.6B's own config.json and generation_config.json, the
/// real tokenizer, and BF16 weights in one safetensors file (qwenmk and transformers both load
/// it). Reused when already there.
fn write_full_size_checkpoint(dir: &Path) -> Result<()> {
    let shapes = root().join("fixtures/qwen3-0.6b");
    if dir.join("model.safetensors").is_file() {
        return Ok(());
    }
    let config_text = std::fs::read_to_string(shapes.join("config.json"))?;
    let config = qwenmk_weights::ModelConfig::from_json_str(&config_text)
        .context("reading fixtures/qwen3-0.6b/config.json")?;
    eprintln!(
        "gpu-check: writing random Qwen3-0.6B weights to {}",
        dir.display()
    );
    qwenmk_weights::synthetic::SyntheticCheckpoint::random(&config, 0, false).write(dir)?;
    std::fs::copy(shapes.join("config.json"), dir.join("config.json"))?;
    std::fs::copy(
        shapes.join("generation_config.json"),
        dir.join("generation_config.json"),
    )?;
    for file in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(
            root().join("fixtures/qwen3-tokenizer").join(file),
            dir.join(file),
        )?;
    }
    Ok(())
}

/// Transformers' greedy tokens for [`PROMPTS`] on the checkpoint in `dir` (float32 math over
/// the BF16 weights), by `xtask/gpu_check/hf_greedy.py`.
fn hf_reference(o: &Options, dir: &Path, out: &Path, tokens: usize) -> Result<Vec<Vec<u32>>> {
    let file = out.join("transformers.json");
    let status = Command::new(&o.python)
        .arg(root().join("xtask/gpu_check/hf_greedy.py"))
        .arg(dir)
        .arg(tokens.to_string())
        .arg(&file)
        .args(PROMPTS)
        .status()
        .with_context(|| format!("running {}", o.python.to_string_lossy()))?;
    if !status.success() {
        bail!("hf_greedy.py failed ({status})");
    }
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&file)?)?;
    Ok(v["generated"]
        .as_array()
        .context("no generated tokens")?
        .iter()
        .map(ids)
        .collect())
}

/// A cpu engine over the packed file `generate` made (in `out/hf-home/qwenmk`), to read the
/// reference logits at a divergence.
fn cpu_replay_engine(out: &Path, context: usize) -> Result<CpuEngine> {
    let cache = out.join("hf-home/qwenmk");
    let packed = std::fs::read_dir(&cache)
        .with_context(|| format!("reading {}", cache.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "qwenmk"))
        .with_context(|| format!("no packed model in {}", cache.display()))?;
    let model = Arc::new(PackedModel::open(&packed)?);
    let context = context.min(model.config().max_position_embeddings);
    CpuEngine::new(model, context)
}

/// The first step where `got` differs from `want`, and what the reference's logits say of it.
fn compare(got: &[u32], want: &[u32], gap_at: impl FnOnce(usize) -> Option<f32>) -> Value {
    let n = got.len().min(want.len());
    match (0..n).find(|&k| got[k] != want[k]) {
        None => json!({ "verdict": "equal", "compared": n, "first_divergence": null }),
        Some(k) => {
            let gap = gap_at(k);
            // Two engines that sum in different orders may disagree where the best two
            // logits nearly tie; anything wider is a bug.
            let verdict = match gap {
                Some(g) if g.abs() < 1e-3 => "near-tie",
                _ => "mismatch",
            };
            json!({
                "verdict": verdict,
                "compared": n,
                "first_divergence": k,
                "expected": want[k],
                "got": got[k],
                "logit_gap": gap,
            })
        }
    }
}

/// compute-sanitizer's memcheck, racecheck and synccheck on a few decode steps.
fn sanitize(runner: &Runner, model: &str, out: &Path, notice: &dyn Fn(String)) -> Value {
    let Some(tool) = find_on_path("compute-sanitizer") else {
        notice("compute-sanitizer not found: sanitizer checks skipped".into());
        return Value::Null;
    };
    let mut results = serde_json::Map::new();
    for check in ["memcheck", "racecheck", "synccheck"] {
        let log = out.join(format!("sanitizer-{check}.log"));
        let output = Command::new(&tool)
            .args([
                "--tool",
                check,
                "--error-exitcode",
                "99",
                "--print-limit",
                "20",
            ])
            .arg(&runner.qwenmk)
            .args([
                "generate",
                "--model",
                model,
                "--device",
                "gpu",
                "--max-context",
                "64",
                "-n",
                "3",
                "--raw",
                "Hello",
            ])
            .envs(runner.env.iter().map(|(k, v)| (k, v)))
            .output();
        let value = match output {
            Ok(o) => {
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
                let _ = std::fs::write(&log, &text);
                let summary = text
                    .lines()
                    .find(|l| l.contains("ERROR SUMMARY"))
                    .unwrap_or("no summary")
                    .to_string();
                json!({ "exit": o.status.code(), "clean": o.status.success(), "summary": summary, "log": log })
            }
            Err(e) => json!({ "error": e.to_string() }),
        };
        results.insert(check.to_string(), value);
    }
    Value::Object(results)
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/local/cuda/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A few lines for the terminal.
fn summary(r: &Value) -> String {
    let mut s = format!(
        "gpu-check on {}: {}\n",
        r["device"]["gpu"]["name"].as_str().unwrap_or("?"),
        if r["ok"] == true {
            "ok"
        } else {
            "PROBLEMS FOUND"
        }
    );
    for p in r["prompts"].as_array().into_iter().flatten() {
        s += &format!(
            "  {:<40} vs cpu: {:<9} vs transformers: {}\n",
            p["prompt"]
                .as_str()
                .unwrap_or("")
                .chars()
                .take(40)
                .collect::<String>(),
            p["vs_cpu"]["verdict"].as_str().unwrap_or("-"),
            p["vs_transformers"]["verdict"].as_str().unwrap_or("-"),
        );
    }
    for r in r["bench"]["results"].as_array().into_iter().flatten() {
        s += &format!(
            "  bench depth {:>6}: {:.1} tok/s",
            r["depth"],
            r["tok_s_mean"].as_f64().unwrap_or(0.0)
        );
        if let Some(pp) = r["pp"]["tok_s_mean"].as_f64() {
            s += &format!(", pp{} {pp:.1} tok/s", r["pp"]["tokens"]);
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let o = parse(&args(&["--out", "d", "--tiny"])).unwrap().unwrap();
        assert_eq!((o.tokens, o.tiny, o.vgpu), (8, true, false));
        assert!(parse(&args(&["--tiny"])).is_err(), "--out is required");
        assert!(parse(&args(&["--out", "d", "--tokens", "0"])).is_err());
        assert!(parse(&args(&["--out", "d", "--bogus"])).is_err());
    }

    #[test]
    fn divergences_are_classified_by_the_logit_gap() {
        assert_eq!(
            compare(&[1, 2, 3], &[1, 2, 3], |_| None)["verdict"],
            "equal"
        );
        let tie = compare(&[1, 5, 3], &[1, 2, 3], |_| Some(2e-4));
        assert_eq!(
            (tie["verdict"].as_str(), tie["first_divergence"].as_u64()),
            (Some("near-tie"), Some(1))
        );
        assert_eq!(compare(&[9], &[1], |_| Some(0.5))["verdict"], "mismatch");
        assert_eq!(compare(&[9], &[1], |_| None)["verdict"], "mismatch");
    }

    /// The whole command on the virtual GPU with the tiny fixture, as CI runs it.
    #[test]
    fn runs_on_the_virtual_gpu() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(root())
            .args(["build", "--quiet", "-p", "qwenmk"])
            .status()
            .unwrap();
        assert!(status.success());
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root().join("target"));
        let out = tempfile_dir();
        let o = Options {
            out: out.clone(),
            tokens: 6,
            tiny: true,
            vgpu: true,
            qwenmk: Some(target.join("debug/qwenmk")),
            python: "python3".into(),
            peers: false,
        };
        let r = check(&o).unwrap();
        assert_eq!(r["ok"], true, "{r:#}");
        assert_eq!(r["prompts"].as_array().unwrap().len(), 3);
        for p in r["prompts"].as_array().unwrap() {
            assert_eq!(p["vs_cpu"]["verdict"], "equal", "{p}");
            assert_eq!(p["vs_transformers"]["verdict"], "equal", "{p}");
        }
        assert!(
            r["device"]["gpu"]["name"]
                .as_str()
                .unwrap()
                .contains("virtual")
        );
        assert_eq!(r["bench"]["time"], "virtual");
        assert!(out.join("gpu-check.json").is_file());
        std::fs::remove_dir_all(&out).ok();
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("qwenmk-gpu-check-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
