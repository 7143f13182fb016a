//! The cpu engine reproduces Hugging Face transformers (float32) token for token on the tiny
//! real-vocabulary checkpoints in `fixtures/tiny-*`, whose `reference.json` holds transformers'
//! greedy generations and the top logits at a few steps.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use qwenmk::engine::Engine;
use qwenmk::engine::cpu::CpuEngine;
use qwenmk_weights::{PackedModel, pack_safetensors};

#[derive(serde::Deserialize)]
struct Reference {
    checkpoint: String,
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    prompt_ids: Vec<u32>,
    generated_ids: Vec<u32>,
    /// Generation step → the top (token, logit) pairs of the logits that chose
    /// `generated_ids[step]`.
    #[serde(default)]
    logits_at: BTreeMap<usize, Vec<(u32, f32)>>,
}

fn fixture_dirs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("fixtures/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("tiny-"))
                && p.join("reference.json").is_file()
        })
        .collect();
    dirs.sort();
    dirs
}

fn check_fixture(dir: &Path) {
    let reference: Reference = serde_json::from_str(
        &std::fs::read_to_string(dir.join("reference.json")).expect("reference.json readable"),
    )
    .expect("reference.json parses");
    let out = tempfile::tempdir().expect("temp dir");
    let packed = out.path().join("model.qwenmk");
    pack_safetensors(dir, &packed, |_| {}).expect("the fixture packs");
    let model = Arc::new(PackedModel::open(&packed).expect("the packed fixture opens"));
    let longest = reference
        .cases
        .iter()
        .map(|c| c.prompt_ids.len() + c.generated_ids.len())
        .max()
        .unwrap_or(1);
    let mut engine = CpuEngine::new(model, longest).expect("engine");

    for case in &reference.cases {
        let label = format!("{} / {}", reference.checkpoint, case.name);
        engine.reset();
        let mut generated = Vec::with_capacity(case.generated_ids.len());
        let mut next = engine.prefill(&case.prompt_ids).expect("prefill");
        for step in 0..case.generated_ids.len() {
            if let Some(top) = case.logits_at.get(&step) {
                // Both sides compute in float32 with different summation orders; observed
                // agreement is within 6e-6, and the smallest top-2 gap is ~7e-4.
                for &(token, logit) in top {
                    let ours = engine.logits()[token as usize];
                    assert!(
                        (ours - logit).abs() < 1e-4,
                        "{label}: step {step}: logit of token {token} is {ours}, transformers \
                         says {logit}"
                    );
                }
            }
            generated.push(next);
            if step + 1 < case.generated_ids.len() {
                // Feed transformers' token, so one divergence is reported where it happens
                // rather than cascading.
                next = engine.step(case.generated_ids[step]).expect("step");
            }
        }
        let first_difference = generated
            .iter()
            .zip(&case.generated_ids)
            .position(|(a, b)| a != b);
        assert_eq!(
            first_difference, None,
            "{label}: generation diverges from transformers at step {first_difference:?}"
        );
    }
}

#[test]
fn cpu_engine_reproduces_transformers_on_every_tiny_fixture() {
    let dirs = fixture_dirs();
    assert!(
        !dirs.is_empty(),
        "no fixtures/tiny-*/reference.json found; run the fixture generator first"
    );
    for dir in dirs {
        check_fixture(&dir);
    }
}
