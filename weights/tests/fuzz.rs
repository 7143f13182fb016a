//! The fuzz targets of `fuzz/` (cargo-fuzz, libFuzzer):
//!
//! - every input in `fuzz/regressions/<target>/` (crashes found so far, and hand-made hostile
//!   inputs) goes through the target's entry point on every `cargo test`, without cargo-fuzz;
//! - a short fuzzing run of each target (`QWENMK_FUZZ_SECONDS`, default 60) runs when `CI=true`
//!   or `QWENMK_FUZZ_SECONDS` is set, through `cargo fuzz` with the pinned nightly. A crash
//!   fails the test and names the input to add to `fuzz/regressions/`. Elsewhere it says that
//!   it was skipped; under CI a missing cargo-fuzz is a failure (`.ci/run` installs it).

use std::path::{Path, PathBuf};
use std::process::Command;

use qwenmk_weights::config::{QWEN3_ARCHITECTURE, QWEN3_MODEL_TYPE};
use qwenmk_weights::synthetic::SyntheticCheckpoint;
use qwenmk_weights::{ModelConfig, fuzzing, pack_safetensors};

const TARGETS: [&str; 3] = ["config_json", "checkpoint", "packed_file"];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Runs one input through `target`'s entry point, as the fuzzer does.
fn run_target(target: &str, data: &[u8], scratch: &Path) {
    match target {
        "config_json" => fuzzing::config_json(data),
        "checkpoint" => fuzzing::checkpoint(data, scratch),
        "packed_file" => fuzzing::packed_file(data),
        other => panic!("unknown fuzz target {other}"),
    }
}

#[test]
fn regression_inputs_give_errors_not_panics() {
    let scratch = tempfile::tempdir().unwrap();
    let mut count = 0;
    for target in TARGETS {
        let dir = fuzz_dir().join("regressions").join(target);
        let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        inputs.sort();
        for input in inputs {
            let data = std::fs::read(&input).unwrap();
            let outcome = std::panic::catch_unwind(|| run_target(target, &data, scratch.path()));
            assert!(outcome.is_ok(), "{} panics", input.display());
            count += 1;
        }
    }
    assert!(count >= TARGETS.len(), "only {count} regression inputs");
}

#[test]
fn seeds_are_valid_inputs() {
    // The seeds must reach the deep paths (a checkpoint that opens and packs, a packed file
    // that verifies): a seed that fails early would leave the fuzzer in the shallows.
    let seeds = seeds();
    let (config, weights) = fuzzing::split_checkpoint(&seeds["checkpoint"][0]).unwrap();
    assert!(ModelConfig::from_json_str(std::str::from_utf8(config).unwrap()).is_ok());
    assert!(!weights.is_empty());
    let scratch = tempfile::tempdir().unwrap();
    fuzzing::checkpoint(&seeds["checkpoint"][0], scratch.path());
    assert!(scratch.path().join("packed.qwenmk").is_file());
    let packed = &seeds["packed_file"][0];
    assert!(qwenmk_weights::PackedModel::verify_bytes(packed, Path::new("seed.qwenmk")).is_ok());
}

/// The smallest Qwen3 that exercises every tensor kind: 2 heads over 1 KV head, 1 layer.
fn micro_config() -> ModelConfig {
    ModelConfig {
        architectures: vec![QWEN3_ARCHITECTURE.to_owned()],
        model_type: QWEN3_MODEL_TYPE.to_owned(),
        vocab_size: 8,
        hidden_size: 4,
        intermediate_size: 6,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        num_key_value_heads: 1,
        head_dim: 2,
        max_position_embeddings: 16,
        rope_theta: 1e6,
        rms_norm_eps: 1e-6,
        tie_word_embeddings: true,
        bos_token_id: None,
        eos_token_id: vec![1],
    }
}

/// Seed inputs per target, made by the code rather than committed as binaries.
fn seeds() -> std::collections::HashMap<&'static str, Vec<Vec<u8>>> {
    let dir = tempfile::tempdir().unwrap();
    let config = micro_config();
    SyntheticCheckpoint::random(&config, 1, false)
        .write(dir.path())
        .unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), b"{\"version\": \"1.0\"}").unwrap();
    let config_text = std::fs::read(dir.path().join("config.json")).unwrap();
    let weights = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    let packed_path = dir.path().join("m.qwenmk");
    pack_safetensors(dir.path(), &packed_path, |_| {}).unwrap();
    let published = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/qwen3-0.6b/config.json"),
    )
    .unwrap();
    let mut untied = config.clone();
    untied.tie_word_embeddings = false;
    let untied_dir = tempfile::tempdir().unwrap();
    SyntheticCheckpoint::random(&untied, 2, false)
        .write(untied_dir.path())
        .unwrap();
    let untied_checkpoint = fuzzing::join_checkpoint(
        &std::fs::read(untied_dir.path().join("config.json")).unwrap(),
        &std::fs::read(untied_dir.path().join("model.safetensors")).unwrap(),
    );
    [
        ("config_json", vec![config_text.clone(), published]),
        (
            "checkpoint",
            vec![
                fuzzing::join_checkpoint(&config_text, &weights),
                untied_checkpoint,
            ],
        ),
        ("packed_file", vec![std::fs::read(&packed_path).unwrap()]),
    ]
    .into_iter()
    .collect()
}

#[test]
fn short_fuzz_runs_find_no_crash() {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let seconds = match std::env::var("QWENMK_FUZZ_SECONDS") {
        Ok(s) => s
            .parse::<u32>()
            .unwrap_or_else(|_| panic!("QWENMK_FUZZ_SECONDS={s:?} is not a whole number")),
        Err(_) if ci => 60,
        Err(_) => {
            eprintln!(
                "skipped: the short fuzzing runs happen under CI=true or with \
                 QWENMK_FUZZ_SECONDS=N (needs cargo-fuzz: cargo install cargo-fuzz)"
            );
            return;
        }
    };
    let has_cargo_fuzz = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_cargo_fuzz {
        assert!(
            !ci,
            "cargo-fuzz is not installed; `.ci/run` installs it (cargo install cargo-fuzz)"
        );
        eprintln!("skipped: cargo-fuzz is not installed (cargo install cargo-fuzz)");
        return;
    }
    let fuzz = fuzz_dir();
    for (target, inputs) in seeds() {
        let corpus = fuzz.join("corpus").join(target);
        std::fs::create_dir_all(&corpus).unwrap();
        for (i, input) in inputs.iter().enumerate() {
            std::fs::write(corpus.join(format!("seed-{i}")), input).unwrap();
        }
    }
    for target in TARGETS {
        // -max_total_time bounds the run; -timeout bounds one input; -rss_limit_mb the memory
        // (a parser that allocates what a corrupt header claims hits it).
        let output = Command::new("cargo")
            .current_dir(&fuzz)
            .args(["fuzz", "run", target, &format!("corpus/{target}"), "--"])
            .args([
                format!("-max_total_time={seconds}"),
                "-timeout=10".to_owned(),
                "-rss_limit_mb=2048".to_owned(),
                "-print_final_stats=1".to_owned(),
            ])
            .output()
            .expect("run cargo fuzz");
        let log = String::from_utf8_lossy(&output.stderr);
        let tail: String = log
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            output.status.success(),
            "fuzz target {target} found a crash; copy the input it names (fuzz/artifacts/{target}/) \
             into fuzz/regressions/{target}/, fix the bug, and run again:\n{tail}"
        );
        let runs = log
            .lines()
            .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
            .map(|n| n.trim().to_owned())
            .unwrap_or_default();
        eprintln!("fuzz target {target}: {seconds} s, {runs} inputs, no crash");
    }
    remove_scratch_dirs();
}

/// The checkpoint target's scratch folders (one per fuzzing process, which libFuzzer ends
/// without running destructors) whose process is gone.
fn remove_scratch_dirs() {
    let base = fuzzing::scratch_dir();
    let Some(parent) = base.parent() else { return };
    for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("qwenmk-fuzz-")
            .and_then(|p| p.parse().ok())
        else {
            continue;
        };
        if !qwenmk_weights::partial::process_is_running(pid) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
