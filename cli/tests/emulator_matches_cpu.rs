//! The megakernel, run on the emulator, equals the cpu engine token for token: on small
//! synthetic checkpoints under several launch shapes (so every work split, the split-K combine
//! and the shuffle reductions run), and on the real-vocabulary fixtures over 300+ positions;
//! with an f32 KV cache, and with a BF16 one (rounded alike by both).

use std::path::Path;
use std::sync::Arc;

use qwenmk::engine::Engine;
use qwenmk::engine::cpu::CpuEngine;
use qwenmk::engine::emulator::{self, EmulatorEngine};
use qwenmk_kernels::step::{KvDtype, LaunchShape};
use qwenmk_weights::synthetic::{SyntheticCheckpoint, tiny_config};
use qwenmk_weights::{PackedModel, pack_safetensors};

fn pack(dir: &Path, out: &Path) -> Arc<PackedModel> {
    let packed = out.join("model.qwenmk");
    pack_safetensors(dir, &packed, |_| {}).expect("the checkpoint packs");
    Arc::new(PackedModel::open(&packed).expect("the packed checkpoint opens"))
}

/// Greedy tokens from `prompt` until `total` positions are filled.
fn run(engine: &mut dyn Engine, prompt: &[u32], total: usize) -> Vec<u32> {
    let mut out = Vec::new();
    let mut next = engine.prefill(prompt).expect("prefill");
    while engine.position() < total {
        out.push(next);
        next = engine.step(next).expect("step");
    }
    out.push(next);
    out
}

fn synthetic_model(tmp: &Path, seed: u64, q_heads: usize, kv_heads: usize) -> Arc<PackedModel> {
    let mut config = tiny_config(true);
    config.num_attention_heads = q_heads;
    config.num_key_value_heads = kv_heads;
    let dir = tmp.join(format!("ckpt-{seed}"));
    SyntheticCheckpoint::random(&config, seed, false)
        .write(&dir)
        .expect("write checkpoint");
    pack(&dir, tmp)
}

/// (grid, block, lanes per row, min chunk, max chunk)
const SHAPES: [(u32, u32, u32, u32, u32); 4] = [
    (emulator::GRID, emulator::BLOCK, 1, 32, 256),
    (2, 64, 4, 8, 16),   // many attention chunks, 4 lanes share a row
    (3, 32, 32, 4, 8),   // one warp per block, whole-warp rows, the most chunks
    (1, 128, 8, 64, 64), // a single block: every barrier is block-local
];

fn launch(shape: (u32, u32, u32, u32, u32)) -> (u32, u32, LaunchShape) {
    let (grid, block, lanes, min_chunk, max_chunk) = shape;
    let shape = LaunchShape {
        lanes_per_row: lanes,
        min_chunk,
        max_chunk,
        ring_slot_bytes: 0,
        spin_limit_ns: emulator::SPIN_LIMIT_NS,
    };
    (grid, block, shape)
}

#[test]
fn synthetic_checkpoints_match_under_every_launch_shape() {
    let tmp = tempfile::tempdir().unwrap();
    for (seed, q_heads, kv_heads) in [(7u64, 4, 2), (11, 8, 2)] {
        let model = synthetic_model(tmp.path(), seed, q_heads, kv_heads);
        let prompt = [1u32, 17, 42, 99, 250, 3];
        let total = 120;
        let mut cpu = CpuEngine::new(model.clone(), total).unwrap();
        let want = run(&mut cpu, &prompt, total);
        for s in SHAPES {
            let (grid, block, shape) = launch(s);
            let mut emu =
                EmulatorEngine::with_launch(model.clone(), total, grid, block, shape, KvDtype::F32)
                    .unwrap();
            let got = run(&mut emu, &prompt, total);
            assert_eq!(
                got, want,
                "seed {seed}, {q_heads}q/{kv_heads}kv heads, launch (grid, block, lanes, min \
                 chunk, max chunk) {s:?}"
            );
        }
    }
}

/// A BF16 KV cache: the kernel rounds each key and value as it appends it, the cpu engine
/// rounds alike, and the tokens stay equal under launches with many attention chunks (split-K
/// partials and the combine included). The run is long enough that BF16 changes the cpu engine's own tokens, so
/// an engine that kept f32 would be caught.
#[test]
fn synthetic_checkpoints_match_with_a_bf16_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let model = synthetic_model(tmp.path(), 7, 4, 2);
    let prompt = [1u32, 17, 42, 99, 250, 3];
    let total = 120;
    let mut cpu = CpuEngine::new(model.clone(), total)
        .unwrap()
        .with_kv_cache(KvDtype::Bf16);
    let want = run(&mut cpu, &prompt, total);
    let mut cpu_f32 = CpuEngine::new(model.clone(), total).unwrap();
    assert_ne!(
        run(&mut cpu_f32, &prompt, total),
        want,
        "BF16 must change this run's tokens for the test to tell the caches apart"
    );
    // The launches that split attention the most (the others run in the fixture test below).
    for s in [SHAPES[1], SHAPES[2]] {
        let (grid, block, shape) = launch(s);
        let mut emu =
            EmulatorEngine::with_launch(model.clone(), total, grid, block, shape, KvDtype::Bf16)
                .unwrap();
        assert_eq!(emu.kv_cache(), KvDtype::Bf16);
        let got = run(&mut emu, &prompt, total);
        assert_eq!(got, want, "BF16 cache, launch {s:?}");
    }
}

#[derive(serde::Deserialize)]
struct Reference {
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    mode: String,
    prompt_ids: Vec<u32>,
    generated_ids: Vec<u32>,
}

/// The real-vocabulary fixtures with a BF16 cache, kept short (32 generated positions): GQA 2 on the
/// emulator's launch, GQA 4 on one that splits attention into chunks of 8 to 16 positions.
#[test]
fn fixtures_match_with_a_bf16_cache() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    for (fixture, mode, s) in [
        ("tiny-gqa2", "raw", SHAPES[0]),
        ("tiny-gqa4", "chat", SHAPES[1]),
    ] {
        let dir = root.join(fixture);
        let tmp = tempfile::tempdir().unwrap();
        let model = pack(&dir, tmp.path());
        let text = std::fs::read_to_string(dir.join("reference.json")).unwrap();
        let reference: Reference = serde_json::from_str(&text).unwrap();
        let case = reference.cases.iter().find(|c| c.mode == mode).unwrap();
        let total = case.prompt_ids.len() + 32;
        let mut cpu = CpuEngine::new(model.clone(), total)
            .unwrap()
            .with_kv_cache(KvDtype::Bf16);
        let (grid, block, shape) = launch(s);
        let mut emu =
            EmulatorEngine::with_launch(model.clone(), total, grid, block, shape, KvDtype::Bf16)
                .unwrap();
        let from_cpu = run(&mut cpu, &case.prompt_ids, total);
        let from_emulator = run(&mut emu, &case.prompt_ids, total);
        assert_eq!(
            from_emulator, from_cpu,
            "{fixture}/{}: emulator vs cpu, BF16 cache",
            case.name
        );
    }
}

/// The real-vocabulary fixtures (GQA 2 and GQA 4), one raw and one chat prompt each, over
/// every position of the reference (300+): the emulator equals the cpu engine, and both equal
/// Hugging Face transformers' greedy tokens.
#[test]
fn fixtures_match_over_300_positions_raw_and_chat() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    for fixture in ["tiny-gqa2", "tiny-gqa4"] {
        let dir = root.join(fixture);
        let tmp = tempfile::tempdir().unwrap();
        let model = pack(&dir, tmp.path());
        let text = std::fs::read_to_string(dir.join("reference.json")).unwrap();
        let reference: Reference = serde_json::from_str(&text).unwrap();
        for mode in ["raw", "chat"] {
            let case = reference.cases.iter().find(|c| c.mode == mode).unwrap();
            let total = case.prompt_ids.len() + case.generated_ids.len() - 1;
            assert!(
                total >= 300,
                "{fixture}/{}: only {total} positions",
                case.name
            );
            let mut cpu = CpuEngine::new(model.clone(), total).unwrap();
            let mut emu = EmulatorEngine::new(model.clone(), total).unwrap();
            let from_cpu = run(&mut cpu, &case.prompt_ids, total);
            let from_emulator = run(&mut emu, &case.prompt_ids, total);
            assert_eq!(
                from_emulator, from_cpu,
                "{fixture}/{}: emulator vs cpu",
                case.name
            );
            assert_eq!(
                from_cpu, case.generated_ids,
                "{fixture}/{}: cpu vs transformers",
                case.name
            );
        }
    }
}
