//! Before the LM head the step prefetches only what L2 can keep: the tiny fixtures' LM head
//! (151,936 × 64 BF16, 19 MB) is larger than the budget, and used to be prefetched whole.
//! (The emulator counts the lines its prefetches ask for; this file holds one test so that no
//! other test's prefetches are counted.)

use std::sync::Arc;
use std::sync::atomic::Ordering;

use qwenmk::engine::Engine;
use qwenmk::engine::emulator::EmulatorEngine;
use qwenmk_kernels::device::L2_PREFETCH_BUDGET_BYTES;
use qwenmk_kernels::device::emu::PREFETCHED_LINES;
use qwenmk_weights::{PackedModel, pack_safetensors};

#[test]
fn a_step_prefetches_no_more_than_the_l2_budget_of_the_lm_head() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.qwenmk");
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tiny-gqa2");
    pack_safetensors(&fixture, &path, |_| {}).unwrap();
    let model = Arc::new(PackedModel::open(&path).unwrap());
    let config = model.config().clone();
    let lm_head = (config.vocab_size * config.hidden_size * 2) as u64;
    assert!(
        lm_head > L2_PREFETCH_BUDGET_BYTES as u64,
        "the fixture must exceed the budget"
    );
    let layers_bytes = model.payload().len() as u64 - lm_head;

    let mut engine = EmulatorEngine::new(model, 8).unwrap();
    let before = PREFETCHED_LINES.load(Ordering::Relaxed);
    engine.step(5).unwrap();
    let bytes = (PREFETCHED_LINES.load(Ordering::Relaxed) - before) * 128;
    // Whole passes of the row split may overshoot the budget by one pass (a few KB here).
    let allowed = L2_PREFETCH_BUDGET_BYTES as u64 + layers_bytes + (1 << 20);
    assert!(
        bytes <= allowed && bytes < lm_head,
        "a step prefetched {bytes} bytes; the budget allows {allowed}"
    );
    assert!(bytes > 0, "the step prefetches at its barriers");
}
