//! What `cargo xtask ptx` prints after ptxas's table: for each stage of the decode step, the
//! bytes each SM has in flight that the launch shape and the pipeline depth give, for
//! Qwen3-0.6B on an H100-shaped grid. A layer's four matrices stream through the weight ring
//! (`step/ring.rs`): while a block reads one slot, the other slots' bulk copies are in flight,
//! across stage boundaries; the LM head and attention are loads of the threads themselves.
//! HBM needs about 3 TB/s × ~0.6 µs ÷ 132 SMs ≈ 14 KiB per SM in flight to stay busy
//! (Little's law), more while requests queue.

use qwenmk::engine::gpu::engine::{H100_SHARED_OPTIN_BYTES, launch_shape};
use qwenmk::engine::plan::model_dims;
use qwenmk_kernels::device::{L2_PREFETCH_BUDGET_BYTES, WARP_SIZE};
use qwenmk_kernels::ops::matvec::{lanes_for_warps, loads_in_flight_per_lane};
use qwenmk_kernels::step::attention::{
    BATCH, DIMS_PER_LANE, attention_runs, attention_split, item_rows,
};
use qwenmk_kernels::step::ring::{Matrix, RingPlan, SLOTS};
use qwenmk_kernels::step::{KV_PREFETCH_BUDGET, ModelDims};
use qwenmk_weights::config::ModelConfig;

/// The shape the report assumes: an H100 SXM's SMs, the gpu engine's 256-thread blocks.
pub const SMS: u32 = 132;
pub const THREADS: u32 = 256;
/// Registers an SM holds (every compute capability since 5.0).
const REGISTERS_PER_SM: u32 = 65_536;
/// Depths whose attention the report shows.
const DEPTHS: [u32; 4] = [0, 128, 1_024, 8_192];

/// One line of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct StageFlight {
    pub stage: String,
    /// Lanes that share a row (matvecs) or a key (attention).
    pub lanes: u32,
    /// Of the SM's threads, those with loads in flight (an average over the SMs); for a ring
    /// stage, the threads that issue its copies (thread 0 of each block).
    pub busy_threads_per_sm: f64,
    /// 16-byte loads each busy thread has in flight; for a ring stage, the copies (chunks).
    pub loads_per_thread: u32,
    /// Bytes in flight per SM.
    pub bytes_per_sm: f64,
    /// Whether the stage's weights come through the ring.
    pub ring: bool,
    /// What the step asks L2 to prefetch ahead of the stage, per SM.
    pub prefetch_per_sm: f64,
}

/// Qwen3-0.6B's shapes, from its published config.json.
pub fn qwen3_dims() -> ModelDims {
    let config = ModelConfig::from_json_str(include_str!("../../fixtures/qwen3-0.6b/config.json"))
        .expect("the published config parses");
    model_dims(&config, config.max_position_embeddings as u32)
}

/// Resident 256-thread blocks per SM at `registers` per thread.
pub fn blocks_per_sm(registers: u32) -> u32 {
    (REGISTERS_PER_SM / (registers.max(1) * THREADS)).max(1)
}

/// The report for `dims` on `SMS × blocks` blocks of `THREADS` threads.
pub fn stages(dims: &ModelDims, blocks: u32) -> Vec<StageFlight> {
    let shape = launch_shape(dims, H100_SHARED_OPTIN_BYTES);
    let grid = SMS * blocks;
    let warps = grid * THREADS / WARP_SIZE;
    let threads_per_sm = f64::from(blocks * THREADS);
    let per_sm = |bytes: f64| bytes / f64::from(SMS);
    let prefetched = |bytes: u64| per_sm(bytes.min(L2_PREFETCH_BUDGET_BYTES as u64) as f64);
    let ring = RingPlan::new(
        dims,
        grid,
        THREADS / WARP_SIZE,
        shape.lanes_per_row,
        shape.ring_slot_bytes,
    )
    .expect("Qwen3-0.6B's rows fit the H100's ring slots");
    // While a block reads one chunk, the ring's other slots are being filled.
    let ring_stage = |stage: &str, m: Matrix| {
        let plan = ring.matrices[m as usize];
        let chunk = f64::from(plan.units_per_chunk * m.unit_bytes(dims));
        let copies = (SLOTS - 1).min(ring.chunks_per_layer - 1);
        StageFlight {
            stage: stage.to_string(),
            lanes: ring.lanes_of(m),
            busy_threads_per_sm: f64::from(blocks),
            loads_per_thread: copies,
            bytes_per_sm: f64::from(blocks * copies) * chunk,
            ring: true,
            prefetch_per_sm: 0.0,
        }
    };
    let d = dims;
    let lanes = lanes_for_warps(d.vocab, d.hidden, shape.lanes_per_row, warps);
    let units_per_pass = warps * (WARP_SIZE / lanes);
    let busy =
        (f64::from(d.vocab.min(units_per_pass) * lanes) / f64::from(SMS)).min(threads_per_sm);
    let loads = loads_in_flight_per_lane(d.hidden, 1, lanes);
    let lm_head = StageFlight {
        stage: "LM head".to_string(),
        lanes,
        busy_threads_per_sm: busy,
        loads_per_thread: loads,
        bytes_per_sm: busy * f64::from(loads) * 16.0,
        ring: false,
        prefetch_per_sm: prefetched(u64::from(d.vocab) * u64::from(d.hidden) * 2),
    };
    let mut out = vec![
        ring_stage("QKV", Matrix::Qkv),
        ring_stage("O", Matrix::O),
        ring_stage("gate/up", Matrix::GateUp),
        ring_stage("down", Matrix::Down),
        lm_head,
    ];
    // Attention, with a BF16 cache: a lane's 8 values of a row are one 16-byte load, and an
    // item has BATCH rounds of keys and values in flight.
    let rows = item_rows(d.q_heads, d.kv_heads);
    let lanes_per_key = d.head_dim / DIMS_PER_LANE as u32;
    for depth in DEPTHS {
        let split = attention_split(depth, grid, rows, shape.min_chunk, shape.max_chunk);
        // An item is a block; each of its warps with a run of the chunk is busy.
        let items = (rows * split.splits).min(grid);
        let warps_per_item =
            attention_runs(split.chunk, WARP_SIZE / lanes_per_key, THREADS / WARP_SIZE);
        let busy = f64::from(items * warps_per_item * WARP_SIZE) / f64::from(SMS);
        let loads = 2 * BATCH as u32;
        out.push(StageFlight {
            stage: format!("attention at depth {depth}"),
            lanes: lanes_per_key,
            busy_threads_per_sm: busy,
            loads_per_thread: loads,
            bytes_per_sm: busy * f64::from(loads) * 16.0,
            ring: false,
            // K and V rows of the cached positions, 2 bytes a value, within the budget.
            prefetch_per_sm: per_sm(
                (2 * u64::from(depth) * u64::from(d.kv_dim()) * 2).min(KV_PREFETCH_BUDGET as u64)
                    as f64,
            ),
        });
    }
    out
}

/// The report as text.
pub fn table(dims: &ModelDims, registers: u32) -> String {
    let blocks = blocks_per_sm(registers);
    let mut s = format!(
        "\nbytes in flight per SM, Qwen3-0.6B on {SMS} SMs × {blocks} block(s) of {THREADS} \
         threads ({registers} registers), BF16 KV cache:\n{:<24} {:>5} {:>12} {:>14} {:>10} {:>14}\n",
        "stage", "lanes", "busy threads", "in flight each", "in flight", "L2 prefetch"
    );
    for f in stages(dims, blocks) {
        s.push_str(&format!(
            "{:<24} {:>5} {:>12.0} {:>14} {:>8.1} K {:>12.1} K\n",
            f.stage,
            f.lanes,
            f.busy_threads_per_sm,
            if f.ring {
                format!("{} copies", f.loads_per_thread)
            } else {
                format!("{} loads", f.loads_per_thread)
            },
            f.bytes_per_sm / 1024.0,
            f.prefetch_per_sm / 1024.0
        ));
    }
    s.push_str(
        "(in flight: for QKV, O, gate/up and down, the weight ring's bulk copies that are in \
         flight while a block reads one slot, issued by thread 0 across stage boundaries; for \
         the LM head and attention, each busy thread's first group of 16-byte loads; L2 \
         prefetch: what the step asks L2 for ahead of the stage, within its budget; attention's \
         is its cached K/V rows, asked for at the start of the layer's QKV stage)\n",
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_stages_keep_over_32_kib_in_flight_on_every_sm_and_attention_grows_with_depth() {
        let dims = qwen3_dims();
        let report = stages(&dims, 1);
        let stage = |name: &str| report.iter().find(|f| f.stage == name).unwrap().clone();
        // Three of the four 48 KiB slots in flight while the fourth is read; a chunk is at
        // most a slot (QKV's and O's are 32 KiB, evened out over a block's rows).
        for name in ["QKV", "O", "gate/up", "down"] {
            let f = stage(name);
            assert!(f.ring, "{name}: {f:?}");
            assert_eq!(f.loads_per_thread, SLOTS - 1, "{name}: {f:?}");
            assert!(f.bytes_per_sm >= 32.0 * 1024.0, "{name}: {f:?}");
            assert!(
                f.bytes_per_sm <= f64::from(SLOTS - 1) * 48.0 * 1024.0,
                "{name}: {f:?}"
            );
        }
        // 256 threads × 8 loads × 16 B in the LM head.
        let lm = stage("LM head");
        assert!(!lm.ring);
        assert_eq!(lm.loads_per_thread, 8, "{lm:?}");
        assert!(lm.bytes_per_sm >= 31.0 * 1024.0, "{lm:?}");
        // 8 items at depth 0 (one warp each): a few SMs busy; more chunks as the depth grows.
        let a0 = stage("attention at depth 0");
        let a8k = stage("attention at depth 8192");
        assert!(a0.bytes_per_sm < a8k.bytes_per_sm, "{a0:?} {a8k:?}");
        assert_eq!(a0.busy_threads_per_sm, 8.0 * 32.0 / 132.0);
        assert!(table(&dims, 255).contains("1 block(s)"));
    }
}
