//! The cpu engine's batched prefill against its one-token-at-a-time path, on the tiny
//! real-vocabulary fixtures: the logits after the prompt agree within 1e-4, the greedy
//! continuation from the cache each leaves is the same, and a 300-token prompt fed in several
//! batched passes reproduces transformers' logits and tokens there.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use qwenmk::engine::cpu::CpuEngine;
use qwenmk::engine::{Engine, Next};
use qwenmk_weights::{PackedModel, pack_safetensors};

/// Tolerance on logits: both paths are float32 with different summation orders (the same bound
/// the cpu engine keeps against transformers).
const TOLERANCE: f32 = 1e-4;
/// Greedy tokens compared after each prefill.
const CONTINUATION: usize = 24;

#[derive(serde::Deserialize)]
struct Reference {
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    prompt_ids: Vec<u32>,
    generated_ids: Vec<u32>,
    /// Generation step → transformers' top (token, logit) pairs before `generated_ids[step]`.
    logits_at: std::collections::BTreeMap<usize, Vec<(u32, f32)>>,
}

fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    let dirs: Vec<PathBuf> = ["tiny-gqa2", "tiny-gqa4"]
        .iter()
        .map(|name| root.join(name))
        .collect();
    for dir in &dirs {
        assert!(dir.join("reference.json").is_file(), "{}", dir.display());
    }
    dirs
}

fn open(dir: &Path, tmp: &Path) -> (Arc<PackedModel>, Reference) {
    let packed = tmp.join(format!(
        "{}.qwenmk",
        dir.file_name().unwrap().to_string_lossy()
    ));
    pack_safetensors(dir, &packed, |_| {}).expect("the fixture packs");
    let model = Arc::new(PackedModel::open(&packed).expect("the packed fixture opens"));
    let text = std::fs::read_to_string(dir.join("reference.json")).expect("reference.json");
    (
        model,
        serde_json::from_str(&text).expect("reference.json parses"),
    )
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

/// An engine fed `prompt` one token at a time, and the token it chose after the last.
fn stepwise(model: &Arc<PackedModel>, prompt: &[u32], context: usize) -> (CpuEngine, u32) {
    let mut engine = CpuEngine::new(model.clone(), context).unwrap();
    let (&last, rest) = prompt.split_last().unwrap();
    for &t in rest {
        engine.feed(t, Next::Unused).unwrap();
    }
    let next = engine.feed(last, Next::Wanted).unwrap();
    (engine, next)
}

/// Greedy decoding from both engines' current state (`a` and `b`: the tokens each chose last),
/// comparing every step's logits and token.
fn continue_alike(
    label: &str,
    batched: &mut CpuEngine,
    mut a: u32,
    steps: &mut CpuEngine,
    mut b: u32,
) {
    for i in 0..CONTINUATION {
        let diff = max_diff(batched.logits(), steps.logits());
        assert!(
            diff < TOLERANCE,
            "{label}: continuation step {i}: logits differ by {diff}"
        );
        assert_eq!(a, b, "{label}: continuation step {i} chose another token");
        a = batched.step(a).unwrap();
        b = steps.step(b).unwrap();
    }
    assert_eq!(batched.position(), steps.position());
}

#[test]
fn batched_prefill_equals_feeding_one_token_at_a_time() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in fixtures() {
        let (model, reference) = open(&dir, tmp.path());
        for case in &reference.cases {
            let label = format!("{} / {}", dir.display(), case.name);
            let prompt = &case.prompt_ids;
            let context = prompt.len() + CONTINUATION + 1;
            let (steps, _) = stepwise(&model, prompt, context);
            let after_prompt = steps.logits().to_vec();

            // The whole prompt in one pass, in passes of 3 (boundaries mid-prompt), and in two
            // prefills as chat feeds its turns (the second starts mid-cache).
            let split = prompt.len() / 2;
            for how in ["one pass", "passes of 3", "two prefills"] {
                let label = format!("{label}, {how}");
                let mut batched = CpuEngine::new(model.clone(), context).unwrap();
                let next = match how {
                    "one pass" => batched.prefill(prompt),
                    "passes of 3" => {
                        batched = batched.with_prefill_batch(3);
                        batched.prefill(prompt)
                    }
                    _ => batched
                        .prefill(&prompt[..split])
                        .and_then(|_| batched.prefill(&prompt[split..])),
                }
                .unwrap();
                assert_eq!(batched.position(), prompt.len(), "{label}");
                let diff = max_diff(batched.logits(), &after_prompt);
                assert!(diff < TOLERANCE, "{label}: logits differ by {diff}");
                let (mut steps, steps_next) = stepwise(&model, prompt, context);
                continue_alike(&label, &mut batched, next, &mut steps, steps_next);
            }
        }
    }
}

/// 300 tokens of transformers' own generation fed as one prompt, in passes of 200 (so a pass
/// holds several of attention's 64-row blocks, the last partial, and the second pass starts
/// mid-cache): the logits there are transformers' within 1e-4, and greedy decoding goes on as
/// transformers did.
#[test]
fn a_long_prompt_in_several_passes_reproduces_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in fixtures() {
        let (model, reference) = open(&dir, tmp.path());
        let case = &reference.cases[0];
        let step = 299;
        let top = &case.logits_at[&step];
        let mut prompt = case.prompt_ids.clone();
        prompt.extend(&case.generated_ids[..step]);
        let tail = &case.generated_ids[step..];
        let mut engine = CpuEngine::new(model.clone(), prompt.len() + tail.len())
            .unwrap()
            .with_prefill_batch(200);
        let mut next = engine.prefill(&prompt).unwrap();
        let label = format!("{} / {}", dir.display(), case.name);
        for &(token, logit) in top {
            let ours = engine.logits()[token as usize];
            assert!(
                (ours - logit).abs() < TOLERANCE,
                "{label}: logit of token {token} after {} prompt tokens is {ours}, \
                 transformers says {logit}",
                prompt.len()
            );
        }
        for (i, &want) in tail.iter().enumerate() {
            assert_eq!(next, want, "{label}: generated step {}", step + i);
            if i + 1 < tail.len() {
                next = engine.step(want).unwrap();
            }
        }
    }
}
