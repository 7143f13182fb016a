//! What `cargo xtask ptx` prints after ptxas's table: for each stage of the decode step, the
//! bytes each SM has in flight that the launch shape and the pipeline depth give, for
//! Qwen3-0.6B on an H100-shaped grid. HBM needs about 3 TB/s × ~0.6 µs ÷ 132 SMs ≈ 14 KiB per
//! SM in flight to stay busy (Little's law), more while requests queue.

use qwenmk::engine::gpu::engine::{H100_SHARED_OPTIN_BYTES, launch_shape};
use qwenmk::engine::plan::model_dims;
use qwenmk_kernels::device::{L2_PREFETCH_BUDGET_BYTES, WARP_SIZE};
use qwenmk_kernels::ops::matvec::{lanes_for_warps, loads_in_flight_per_lane};
use qwenmk_kernels::step::attention::{
    BATCH, DIMS_PER_LANE, attention_runs, attention_split, item_rows,
};
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
    /// Of the SM's threads, those with loads in flight (an average over the SMs).
    pub busy_threads_per_sm: f64,
    /// 16-byte loads each busy thread has in flight.
    pub loads_per_thread: u32,
    /// Bytes in flight per SM: the product, times 16.
    pub bytes_per_sm: f64,
    /// What the barrier in front of the stage asks L2 to prefetch, per SM.
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
    let matvec = |stage: &str, units: u32, cols: u32, rows: u32, prefetch: u64| {
        let lanes = lanes_for_warps(units, cols, shape.lanes_per_row, warps);
        let units_per_pass = warps * (WARP_SIZE / lanes);
        let busy = f64::from(units.min(units_per_pass) * lanes) / f64::from(SMS);
        let loads = loads_in_flight_per_lane(cols, rows, lanes);
        StageFlight {
            stage: stage.to_string(),
            lanes,
            busy_threads_per_sm: busy.min(threads_per_sm),
            loads_per_thread: loads,
            bytes_per_sm: busy.min(threads_per_sm) * f64::from(loads) * 16.0,
            prefetch_per_sm: prefetched(prefetch),
        }
    };
    let bf16 = |rows: u32, cols: u32| u64::from(rows) * u64::from(cols) * 2;
    let d = dims;
    let mut out = vec![
        matvec(
            "QKV",
            d.qkv_rows(),
            d.hidden,
            1,
            bf16(d.qkv_rows(), d.hidden),
        ),
        matvec("O", d.hidden, d.q_dim(), 1, bf16(d.hidden, d.q_dim())),
        matvec(
            "gate/up",
            d.intermediate,
            d.hidden,
            2,
            bf16(2 * d.intermediate, d.hidden),
        ),
        matvec(
            "down",
            d.hidden,
            d.intermediate,
            1,
            bf16(d.hidden, d.intermediate),
        ),
        matvec("LM head", d.vocab, d.hidden, 1, bf16(d.vocab, d.hidden)),
    ];
    // Attention, with a BF16 cache: a lane's 8 values of a row are one 16-byte load, and an
    // item has BATCH rounds of keys and values in flight.
    let rows = item_rows(d.q_heads, d.kv_heads);
    let lanes_per_key = d.head_dim / DIMS_PER_LANE as u32;
    for depth in DEPTHS {
        let split = attention_split(depth + 1, grid, rows, shape.min_chunk, shape.max_chunk);
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
         threads ({registers} registers), BF16 KV cache:\n{:<24} {:>5} {:>12} {:>11} {:>10} {:>14}\n",
        "stage", "lanes", "busy threads", "loads each", "in flight", "L2 prefetch"
    );
    for f in stages(dims, blocks) {
        s.push_str(&format!(
            "{:<24} {:>5} {:>12.0} {:>11} {:>8.1} K {:>12.1} K\n",
            f.stage,
            f.lanes,
            f.busy_threads_per_sm,
            f.loads_per_thread,
            f.bytes_per_sm / 1024.0,
            f.prefetch_per_sm / 1024.0
        ));
    }
    s.push_str(
        "(in flight: each busy thread's first group of 16-byte loads; L2 prefetch: what the step \
         asks L2 for ahead of the stage, at an earlier barrier's wait and within its budget; \
         attention's is its cached K/V rows, asked for at the start of the layer's QKV stage)\n",
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matvecs_keep_32_kib_in_flight_on_every_sm_and_attention_grows_with_depth() {
        let dims = qwen3_dims();
        let report = stages(&dims, 1);
        let stage = |name: &str| report.iter().find(|f| f.stage == name).unwrap().clone();
        // 256 threads × 8 loads × 16 B: every SM busy in every matvec; O and down have 1,024
        // rows for 1,056 warps, so 32 warps of the grid idle.
        for name in ["QKV", "O", "gate/up", "down", "LM head"] {
            let f = stage(name);
            assert_eq!(f.loads_per_thread, 8, "{name}: {f:?}");
            assert!(f.bytes_per_sm >= 31.0 * 1024.0, "{name}: {f:?}");
            assert!(f.bytes_per_sm <= 32.0 * 1024.0, "{name}: {f:?}");
        }
        assert_eq!(stage("gate/up").lanes, 32);
        // 8 items at depth 0 (one warp each): a few SMs busy; more chunks as the depth grows.
        let a0 = stage("attention at depth 0");
        let a8k = stage("attention at depth 8192");
        assert!(a0.bytes_per_sm < a8k.bytes_per_sm, "{a0:?} {a8k:?}");
        assert_eq!(a0.busy_threads_per_sm, 8.0 * 32.0 / 132.0);
        assert!(table(&dims, 255).contains("1 block(s)"));
    }
}
