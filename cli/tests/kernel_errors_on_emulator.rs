//! The kernel never hangs and reports what went wrong: a grid that is not fully resident ends
//! in the timeout error (stage, layer, block), a bad token in its own error, and the engine
//! works again afterwards.

use std::sync::Arc;

use qwenmk::engine::Engine;
use qwenmk::engine::cpu::CpuEngine;
use qwenmk::engine::emulator::EmulatorEngine;
use qwenmk_kernels::step::{KvDtype, LaunchShape};
use qwenmk_weights::synthetic::{SyntheticCheckpoint, tiny_config};
use qwenmk_weights::{PackedModel, pack_safetensors};

fn tiny_model(tmp: &std::path::Path) -> Arc<PackedModel> {
    let dir = tmp.join("ckpt");
    SyntheticCheckpoint::random(&tiny_config(true), 3, false)
        .write(&dir)
        .unwrap();
    let packed = tmp.join("model.qwenmk");
    pack_safetensors(&dir, &packed, |_| {}).unwrap();
    Arc::new(PackedModel::open(&packed).unwrap())
}

fn shape(spin_limit_ms: u64) -> LaunchShape {
    LaunchShape {
        lanes_per_row: 1,
        min_chunk: 32,
        max_chunk: 256,
        ring_slot_bytes: 0,
        spin_limit_ns: spin_limit_ms * 1_000_000,
    }
}

#[test]
fn a_grid_larger_than_what_is_resident_times_out_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    // Three blocks, room for two: the first barrier can never fill.
    let mut engine = EmulatorEngine::with_launch(model, 16, 3, 64, shape(200), KvDtype::F32)
        .unwrap()
        .with_resident_blocks(2);
    let started = std::time::Instant::now();
    let error = engine.step(5).unwrap_err().to_string();
    assert!(
        error.contains("timed out in the QKV projection of layer 0")
            && error.contains("of 3 waited more than 200 ms"),
        "{error}"
    );
    // Bounded: the spin limit, not forever (a generous margin for a loaded machine).
    assert!(started.elapsed().as_secs() < 60);
    assert_eq!(engine.position(), 0, "a failed step must not advance");
}

#[test]
fn a_token_outside_the_vocabulary_is_reported_by_the_kernel_and_the_engine_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let mut engine =
        EmulatorEngine::with_launch(model.clone(), 16, 2, 64, shape(60_000), KvDtype::Bf16)
            .unwrap();
    let error = engine.step(300).unwrap_err().to_string();
    assert!(
        error.contains("outside the model's vocabulary of 300"),
        "{error}"
    );
    // The control block was reset: decoding goes on and still equals the cpu engine.
    let mut cpu = CpuEngine::new(model, 16)
        .unwrap()
        .with_kv_cache(KvDtype::Bf16);
    for token in [4u32, 9, 250] {
        assert_eq!(engine.step(token).unwrap(), cpu.step(token).unwrap());
    }
}

#[test]
fn a_full_context_is_an_error_not_a_wraparound() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let mut engine =
        EmulatorEngine::with_launch(model, 3, 2, 64, shape(60_000), KvDtype::F32).unwrap();
    for token in [1u32, 2, 3] {
        engine.step(token).unwrap();
    }
    let error = engine.step(4).unwrap_err().to_string();
    assert!(error.contains("context is full at 3 tokens"), "{error}");
}
