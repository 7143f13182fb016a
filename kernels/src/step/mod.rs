//! The persistent decode step: one launch runs a whole token through the model.
//!
//! embedding row → for each layer { RMSNorm · QKV │ q/k norm · RoPE · KV append · split-K
//! attention │ combine │ O + residual │ RMSNorm · gate/up · SiLU·up │ down + residual } →
//! final RMSNorm · LM head · argmax → next token id in [`StepControl`].
//!
//! `│` marks a grid barrier ([`sync::GridSync`]). Every block runs the same sequence over its
//! share of each stage's rows; RMSNorm is done redundantly by every block so that it needs no
//! barrier of its own, and the wait at each barrier first issues L2 prefetches of weights a
//! later stage will read. The token and position are read from and written back to device
//! memory, so the host can launch step after step without touching them.
//!
//! All dimensions come from [`ModelDims`], filled from the checkpoint's config: the same code
//! runs the real Qwen3-0.6B on the GPU and tiny test checkpoints on the emulator.

pub mod attention;
#[cfg(not(target_arch = "nvptx64"))]
pub mod host;
pub mod sync;

use crate::device;
use crate::ops::matvec::{matvec, prefetch, store_staged8};
use crate::ops::norm::{bf16, bf16x8, f32x8, rmsnorm_block};
use crate::ops::sample::{self, SampleParams, lm_head_sample};
use attention::{Bf16, F32, attention_split, attention_stage, item_rows, prefetch_kv};
use sync::{ErrorKind, GridSync, SYNC_SHARED_BYTES, Stage, StepError, record_error};

/// Bytes of weights one stage boundary may prefetch into L2 (see
/// [`device::L2_PREFETCH_BUDGET_BYTES`]).
const L2_BUDGET: usize = device::L2_PREFETCH_BUDGET_BYTES;

/// Bytes of KV-cache rows one layer may ask L2 for ahead of its attention: a quarter of the
/// weights' budget (all of a 1k context's rows). In the timing model a larger one (8 MiB) held
/// the QKV stage up at depth 8k, queued in HBM ahead of its weights, longer than it saved
/// attention.
pub const KV_PREFETCH_BUDGET: usize = device::L2_PREFETCH_BUDGET_BYTES / 4;

/// The model's shape, from `config.json`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModelDims {
    pub hidden: u32,
    pub intermediate: u32,
    pub layers: u32,
    pub q_heads: u32,
    pub kv_heads: u32,
    pub head_dim: u32,
    pub vocab: u32,
    /// Positions the KV cache holds (`--max-context`), not the model's maximum.
    pub max_context: u32,
    pub rms_eps: f32,
    /// `head_dim^-0.5`.
    pub attention_scale: f32,
}

impl ModelDims {
    pub const fn q_dim(&self) -> u32 {
        self.q_heads * self.head_dim
    }
    pub const fn kv_dim(&self) -> u32 {
        self.kv_heads * self.head_dim
    }
    /// Rows of the fused QKV matrix.
    pub const fn qkv_rows(&self) -> u32 {
        self.q_dim() + 2 * self.kv_dim()
    }
}

/// How the work is cut for a launch; chosen by the host for the device it runs on.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchShape {
    /// Lanes that share one matrix row (1 to 32): many on the GPU (coalesced 128-bit loads),
    /// one on the emulator (no shuffles per row).
    pub lanes_per_row: u32,
    /// Shortest and longest attention chunk (positions per split-K item).
    pub min_chunk: u32,
    pub max_chunk: u32,
    /// Padding so that the u64 below is 8-byte aligned on both sides.
    pub reserved: u32,
    /// How long one barrier may wait before the step fails with a timeout.
    pub spin_limit_ns: u64,
}

/// The element type of the KV cache ([`StepParams::kv_dtype`] holds its [`KvDtype::code`]).
///
/// Keys (after q/k norm and RoPE) and values are computed in f32; a BF16 cache rounds them to
/// nearest even when they are appended, and attention (this step's included) reads back what
/// the cache holds, widened exactly. Half the bytes per position, at the cost of 8 mantissa
/// bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KvDtype {
    F32,
    Bf16,
}

impl KvDtype {
    /// The value in [`StepParams::kv_dtype`].
    pub const fn code(self) -> u32 {
        match self {
            KvDtype::F32 => 0,
            KvDtype::Bf16 => 1,
        }
    }

    pub const fn from_code(code: u32) -> Option<KvDtype> {
        match code {
            0 => Some(KvDtype::F32),
            1 => Some(KvDtype::Bf16),
            _ => None,
        }
    }

    /// Bytes one cached value takes.
    pub const fn bytes(self) -> usize {
        match self {
            KvDtype::F32 => 4,
            KvDtype::Bf16 => 2,
        }
    }

    /// `f32` or `bf16`, as the command line and the reports spell it.
    pub const fn name(self) -> &'static str {
        match self {
            KvDtype::F32 => "f32",
            KvDtype::Bf16 => "bf16",
        }
    }
}

/// One layer's weights (BF16, layout of the packed format: docs/FORMAT.md).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LayerPointers {
    pub input_norm: *const u16,
    pub qkv: *const u16,
    pub q_norm: *const u16,
    pub k_norm: *const u16,
    pub o: *const u16,
    pub post_norm: *const u16,
    pub gate_up: *const u16,
    pub down: *const u16,
}

/// The device-resident state that carries a step's input and output and the grid's
/// synchronisation words. The host zeroes it once, then writes `token`/`position` only to
/// feed prompt tokens.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepControl {
    /// In: the token to feed. Out: the token the model chose next.
    pub token: u32,
    /// In: the position `token` goes to. Out: the next position.
    pub position: u32,
    /// Grid barrier arrivals (only grows, wrapping).
    pub barrier_count: u32,
    /// `barrier_count` at the start of the next step.
    pub barrier_base: u32,
    /// 0, or a [`sync::StepError`] word.
    pub error: u32,
    /// Steps completed, for the host's sanity checks.
    pub steps: u32,
    /// The LM head's running argmax key (see [`crate::ops::argmax`]); 0 between steps.
    pub argmax_key: u64,
}

/// Everything one launch needs. Passed by value to the PTX kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StepParams {
    pub dims: ModelDims,
    pub shape: LaunchShape,
    /// Partials per head the `attn_partial` buffer holds.
    pub max_splits: u32,
    /// `size_of::<StepParams>()` as the host compiled it: the kernel compares it with its own
    /// view of the struct, so a host and a kernel built with different layouts fail the first
    /// step with a sentence instead of reading garbage pointers.
    pub abi_bytes: u32,
    /// The KV cache's element type, a [`KvDtype::code`]; an unknown code is refused like a
    /// layout mismatch.
    pub kv_dtype: u32,
    /// Padding so that the pointers below are 8-byte aligned on both sides.
    pub reserved: u32,
    pub embedding: *const u16,
    pub lm_head: *const u16,
    pub final_norm: *const u16,
    /// `dims.layers` entries.
    pub layers: *const LayerPointers,
    /// `max_context × head_dim` f32: (cos, sin) pairs per position (see [`host::rope_table`]).
    pub rope: *const f32,
    /// `layers × kv_heads × max_context × head_dim` values each, of the type `kv_dtype` names
    /// (f32, or BF16 bits), 16-byte aligned: raw bytes whose element type the step picks once.
    pub k_cache: *mut u8,
    pub v_cache: *mut u8,
    /// The residual stream, `hidden` f32.
    pub x: *mut f32,
    /// Q, K, V of this position before norm and RoPE, `qkv_rows` f32.
    pub qkv: *mut f32,
    /// Split-K partials, `q_heads × max_splits × partial_stride(head_dim)` f32
    /// (see [`attention::partial_stride`]).
    pub attn_partial: *mut f32,
    /// One counter per attention item row ([`attention::item_rows`]), zero between stages:
    /// the chunk that completes a count combines.
    pub attn_tickets: *mut u32,
    /// Attention output, `q_dim` f32.
    pub attn_out: *mut f32,
    /// SiLU(gate)·up, `intermediate` f32.
    pub act: *mut f32,
    pub control: *mut StepControl,
    /// How the LM head chooses the next token (greedy, or a seeded draw), and its state.
    pub sample: SampleParams,
}

// SAFETY: plain data; the pointers name memory the launch owns while it runs.
unsafe impl Send for StepParams {}
// SAFETY: as above; kernels only read the struct.
unsafe impl Sync for StepParams {}

/// Dynamic shared memory a block needs, in bytes: the barrier/reduction header, then a work
/// area that holds a whole input vector of a matvec, or the LM head's normed state and the
/// sampler's warp lists.
pub const fn shared_bytes(dims: &ModelDims, shape: &LaunchShape, warps_per_block: u32) -> usize {
    let _ = shape;
    let mut vector = dims.hidden;
    if dims.q_dim() > vector {
        vector = dims.q_dim();
    }
    if dims.intermediate > vector {
        vector = dims.intermediate;
    }
    // The LM head keeps the normed hidden state and, behind it, the sampler's warp lists.
    let lm_head = dims.hidden + (sample::shared_bytes(warps_per_block) / 4) as u32;
    let mut floats = if lm_head > vector { lm_head } else { vector };
    // Attention merges its warps' running sums there.
    let attention = attention::scratch_floats(dims.head_dim, warps_per_block);
    if attention > floats {
        floats = attention;
    }
    SYNC_SHARED_BYTES + floats as usize * 4
}

/// An upper bound on the split-K partials per head of any step whose length is at most
/// `dims.max_context`, with this shape.
///
/// [`attention_split`] is not monotonic in the length (a shorter context may get shorter
/// chunks and so more of them), so the split of the longest context is not the bound. With
/// `T = max(blocks / rows, 1)` and chunks clamped to `[min_chunk, max_chunk]`, a length `n`
/// gets `ceil(n / c)` chunks (then evened out, which keeps their number) where
/// * `c = ceil(n / T)` (not clamped) or `c = min_chunk ≥ ceil(n / T)`: then `n / c ≤ T`, so at
///   most `T` chunks;
/// * `c = max_chunk`: at most `ceil(max_context / max_chunk)` chunks;
///
/// and always `c ≥ min_chunk`, so at most `ceil(max_context / min_chunk)`. Hence the bound
/// `min(max(T, ceil(L / max_chunk)), ceil(L / min_chunk))`, with the rows of
/// [`item_rows`].
pub const fn max_splits(dims: &ModelDims, shape: &LaunchShape, blocks_in_grid: u32) -> u32 {
    let rows = item_rows(dims.q_heads, dims.kv_heads);
    let target = if blocks_in_grid / rows > 1 {
        blocks_in_grid / rows
    } else {
        1
    };
    // The clamp gives chunks of at least `min(min_chunk, max_chunk)` and, when it clamps from
    // above, of `max_chunk`.
    let max_chunk = if shape.max_chunk > 0 {
        shape.max_chunk
    } else {
        1
    };
    let min_chunk = if shape.min_chunk == 0 {
        1
    } else if shape.min_chunk < max_chunk {
        shape.min_chunk
    } else {
        max_chunk
    };
    let len = dims.max_context;
    let by_long_chunks = len.div_ceil(max_chunk);
    let clamped = if target > by_long_chunks {
        target
    } else {
        by_long_chunks
    };
    let by_short_chunks = len.div_ceil(min_chunk);
    if clamped < by_short_chunks {
        clamped
    } else {
        by_short_chunks
    }
}

/// Barriers one step passes: five per layer (the combine of a split attention takes a ticket,
/// not a barrier), and one after the LM head.
pub const fn barriers_per_step(layers: u32, splits: u32) -> u32 {
    let _ = splits;
    layers * 5 + 1
}

/// Copies `n` f32s of global `src` into the block's shared work area, laid out for a matvec
/// ([`crate::ops::matvec::staged_index`]), and synchronises. Each thread moves 8 values at a time, two such pieces
/// per round with all four 16-byte loads in flight together: 2,048 or 3,072 values are one or
/// two round trips to L2 per thread, not 8 or 12 dependent ones.
///
/// # Safety
/// `src` and `work` must hold `n` f32s (`n` a multiple of 8), 16-byte aligned; every thread of
/// the block must call this function.
#[inline(always)]
unsafe fn stage_vector(work: *mut f32, src: *const f32, n: usize) {
    let octets = n / 8;
    let threads = device::block_dim() as usize;
    let mut m = device::thread_idx() as usize;
    while m < octets {
        let second = m + threads;
        // SAFETY: `m < octets`, and `second` is read only when it is below it too.
        let (a, b) = unsafe {
            (
                f32x8(src, m),
                if second < octets {
                    f32x8(src, second)
                } else {
                    [0.0; 8]
                },
            )
        };
        // SAFETY: as above; the work area holds the largest vector.
        unsafe {
            store_staged8(work, n, m, a);
            if second < octets {
                store_staged8(work, n, second, b);
            }
        }
        m += 2 * threads;
    }
    device::sync_threads();
}

/// Asks L2 for `bytes` at `start`, one 128-byte line per thread of the grid's last block: for
/// the small tensors (norm weights, a RoPE row) that a later stage reads at once from many
/// blocks. Asked for early, they are in L2 when the stage starts; read on demand, their miss
/// would queue behind the megabytes of weights that the barriers' prefetches ask HBM for.
///
/// # Safety
/// `start .. start + bytes` must be global memory.
#[inline(always)]
unsafe fn prefetch_small(start: *const u8, bytes: usize) {
    const LINE_BYTES: usize = 128;
    if device::block_idx() + 1 != device::grid_dim() {
        return;
    }
    let mut line = device::thread_idx() as usize;
    while line * LINE_BYTES < bytes {
        // SAFETY: inside the range (forwarded contract).
        unsafe { device::prefetch_l2(start.add(line * LINE_BYTES)) };
        line += device::block_dim() as usize;
    }
}

/// `x[row] += v`: a projection's output joins the residual stream (each row has one writer).
///
/// # Safety
/// `row < hidden`, and no other thread touches `x[row]` during the stage.
#[inline(always)]
unsafe fn add_to_residual(p: &StepParams, row: u32, v: f32) {
    // SAFETY: the caller guarantees the row and its single writer.
    unsafe {
        let x = p.x.add(row as usize);
        x.write(x.read() + v)
    }
}

#[inline(always)]
fn silu(x: f32) -> f32 {
    x / (1.0 + device::exp(-x))
}

/// The whole decode step. Launch with a grid no larger than what can be resident at once,
/// blocks of whole warps and [`shared_bytes`] of dynamic shared memory.
///
/// # Safety
/// Every pointer in `p` must be valid for the sizes documented on [`StepParams`]; every thread
/// of the grid must call this function.
#[inline(always)]
pub unsafe fn decode_step(p: &StepParams) {
    let d = &p.dims;
    let control = p.control;
    let lanes = p.shape.lanes_per_row;
    let smem = device::shared_memory();
    // SAFETY: the launch gives `shared_bytes` bytes: a header, then the work area.
    let (reduce, work) = unsafe {
        (
            smem.add(16).cast::<f32>(),
            smem.add(SYNC_SHARED_BYTES).cast::<f32>(),
        )
    };
    let vector = |n: u32| -> &[f32] {
        // SAFETY: the work area holds the largest vector and is written before it is read.
        unsafe { core::slice::from_raw_parts(work, n as usize) }
    };
    // SAFETY: written by the host or the previous step, before this launch.
    let (token, pos, earlier_error) = unsafe {
        (
            (&raw const (*control).token).read_volatile(),
            (&raw const (*control).position).read_volatile(),
            (&raw const (*control).error).read_volatile(),
        )
    };
    // A step queued behind a failed one does nothing: the barrier words are inconsistent
    // after a failure, and the host resets them before it launches again. (A block that
    // starts after another block of this launch failed leaves here too.)
    if earlier_error != 0 {
        return;
    }
    let split = attention_split(
        pos.wrapping_add(1),
        device::grid_dim(),
        item_rows(d.q_heads, d.kv_heads),
        p.shape.min_chunk,
        p.shape.max_chunk,
    );
    let refusal = if p.abi_bytes != core::mem::size_of::<StepParams>() as u32
        || KvDtype::from_code(p.kv_dtype).is_none()
    {
        Some(ErrorKind::Abi)
    } else if pos >= d.max_context {
        Some(ErrorKind::ContextFull)
    } else if token >= d.vocab {
        Some(ErrorKind::BadToken)
    } else if split.splits > p.max_splits {
        Some(ErrorKind::SplitOverflow)
    } else {
        None
    };
    if let Some(kind) = refusal {
        if device::block_idx() == 0 && device::thread_idx() == 0 {
            let error = StepError {
                kind,
                stage: Stage::Start,
                layer: 0,
                block: 0,
            };
            // SAFETY: the launch's control block.
            unsafe { record_error(control, error) };
        }
        return;
    }
    // SAFETY: the control block of this launch.
    let mut sync = unsafe { GridSync::new(control, p.shape.spin_limit_ns) };
    // SAFETY: the embedding has `vocab` rows and `token < vocab`.
    let embedding_row = unsafe { p.embedding.add(token as usize * d.hidden as usize) };
    // The sampler's penalty window takes this step's input (block 0; others read the mask in
    // the LM head, many barriers later).
    if device::block_idx() == 0 {
        // SAFETY: the sampler's buffers are sized by the host for this vocabulary.
        unsafe { sample::record_input(&p.sample, token, pos, d.vocab) };
    }

    // The residual stream starts as the token's embedding row (block 0 writes it; every block
    // normalises straight from the row, so nobody waits for the copy).
    if device::block_idx() == 0 {
        let mut i = device::thread_idx() as usize;
        while i < d.hidden as usize {
            // SAFETY: `x` holds `hidden` values.
            unsafe { p.x.add(i).write(bf16(embedding_row, i)) };
            i += device::block_dim() as usize;
        }
    }

    let mut layer = 0;
    while layer < d.layers {
        // SAFETY: `layers` has `dims.layers` entries.
        let w = unsafe { &*p.layers.add(layer as usize) };
        let next = if layer + 1 < d.layers {
            Some(unsafe { &*p.layers.add(layer as usize + 1) })
        } else {
            None
        };

        // 1. RMSNorm (every block) and the fused QKV projection.
        // SAFETY: buffers sized per `StepParams`.
        unsafe {
            // What attention and the second RMSNorm read, asked for before this stage's
            // weights leave room in HBM's queue for the O and gate/up prefetches.
            let head_bytes = d.head_dim as usize * 2;
            prefetch_small(w.q_norm.cast(), head_bytes);
            prefetch_small(w.k_norm.cast(), head_bytes);
            prefetch_small(
                p.rope.add(pos as usize * d.head_dim as usize).cast(),
                2 * head_bytes,
            );
            prefetch_small(w.post_norm.cast(), d.hidden as usize * 2);
            prefetch_kv(p, layer, pos, split, KV_PREFETCH_BUDGET);
            if layer == 0 {
                rmsnorm_block(
                    |m| bf16x8(embedding_row, m),
                    d.hidden as usize,
                    w.input_norm,
                    d.rms_eps,
                    work,
                    reduce,
                );
            } else {
                rmsnorm_block(
                    |m| f32x8(p.x, m),
                    d.hidden as usize,
                    w.input_norm,
                    d.rms_eps,
                    work,
                    reduce,
                );
            }
            matvec::<1>(w.qkv, vector(d.hidden), d.qkv_rows(), lanes, |row, [v]| {
                p.qkv.add(row as usize).write(v)
            });
            // While waiting, pull this layer's O projection into L2.
            if !sync.barrier(Stage::Qkv, layer, || {
                prefetch::<1>(w.o, d.q_dim(), d.hidden, lanes, L2_BUDGET)
            }) {
                return;
            }
        }

        // 2. Attention: (KV head, head block, chunk) items, spread block by block over the
        //    grid's warps; a split attention combines behind its last chunk. The cache's
        //    element type is chosen here, once per layer, not per value.
        // SAFETY: every lane of every warp runs the stage; buffers sized per `StepParams`.
        unsafe {
            if p.kv_dtype == KvDtype::Bf16.code() {
                attention_stage::<Bf16>(p, w, layer, pos, split, work);
            } else {
                attention_stage::<F32>(p, w, layer, pos, split, work);
            }
        }
        // SAFETY: as above.
        unsafe {
            if !sync.barrier(Stage::Attention, layer, || {
                prefetch::<2>(w.gate_up, d.hidden, d.intermediate, lanes, L2_BUDGET)
            }) {
                return;
            }
        }

        // 3. Output projection, added to the residual stream.
        // SAFETY: buffers sized per `StepParams`; each row has one writer.
        unsafe {
            stage_vector(work, p.attn_out, d.q_dim() as usize);
            matvec::<1>(w.o, vector(d.q_dim()), d.hidden, lanes, |row, [v]| {
                add_to_residual(p, row, v)
            });
            if !sync.barrier(Stage::OutputProjection, layer, || {
                prefetch::<1>(w.down, d.intermediate, d.hidden, lanes, L2_BUDGET)
            }) {
                return;
            }
        }

        // 4. RMSNorm (every block), gate and up together, SiLU(gate)·up.
        // SAFETY: as above; gate_up rows 2j and 2j+1 are gate and up of output j.
        unsafe {
            // The next RMSNorm's weights, two stages ahead, and the next layer's pointers.
            let next_norm = match next {
                Some(n) => {
                    prefetch_small(
                        p.layers.add(layer as usize + 1).cast(),
                        core::mem::size_of::<LayerPointers>(),
                    );
                    n.input_norm
                }
                None => p.final_norm,
            };
            prefetch_small(next_norm.cast(), d.hidden as usize * 2);
            rmsnorm_block(
                |m| f32x8(p.x, m),
                d.hidden as usize,
                w.post_norm,
                d.rms_eps,
                work,
                reduce,
            );
            matvec::<2>(
                w.gate_up,
                vector(d.hidden),
                d.intermediate,
                lanes,
                |j, [gate, up]| p.act.add(j as usize).write(silu(gate) * up),
            );
            let prefetch_next = || match next {
                Some(n) => prefetch::<1>(n.qkv, d.hidden, d.qkv_rows(), lanes, L2_BUDGET),
                // The LM head (311 MB for Qwen3-0.6B) is six times the L2: only its first
                // rows, which each warp reads first, can still be there when it gets to them.
                None => prefetch::<1>(p.lm_head, d.hidden, d.vocab, lanes, L2_BUDGET),
            };
            if !sync.barrier(Stage::GateUp, layer, prefetch_next) {
                return;
            }
        }

        // 5. Down projection, added to the residual stream.
        // SAFETY: as above.
        unsafe {
            stage_vector(work, p.act, d.intermediate as usize);
            matvec::<1>(
                w.down,
                vector(d.intermediate),
                d.hidden,
                lanes,
                |row, [v]| add_to_residual(p, row, v),
            );
            if !sync.barrier(Stage::Down, layer, || {}) {
                return;
            }
        }
        layer += 1;
    }

    // 6. Final RMSNorm, LM head and the choice of the next token (argmax or a seeded draw),
    //    fused: no logit leaves the SM.
    // SAFETY: as above.
    unsafe {
        rmsnorm_block(
            |m| f32x8(p.x, m),
            d.hidden as usize,
            p.final_norm,
            d.rms_eps,
            work,
            reduce,
        );
        lm_head_sample(
            p.lm_head,
            vector(d.hidden),
            d.vocab,
            lanes,
            &raw mut (*control).argmax_key,
            &p.sample,
            pos,
            work.add(d.hidden as usize).cast::<u64>(),
        );
        if !sync.barrier(Stage::LmHead, d.layers, || {}) {
            return;
        }
    }

    // 7. Block 0 publishes the token and readies the control block for the next launch.
    if device::block_idx() == 0 && device::thread_idx() == 0 {
        // SAFETY: every block's atomic max is ordered before the last barrier.
        unsafe {
            let key = device::load_relaxed_u64(&raw const (*control).argmax_key);
            (*control).argmax_key = 0;
            (*control).token = crate::ops::argmax::key_row(key);
            (*control).position = pos + 1;
            (*control).steps = (*control).steps.wrapping_add(1);
            (*control).barrier_base = sync.next_base();
        }
    }
}
