//! The persistent decode step: one launch runs a whole token through the model.
//!
//! embedding row → for each layer { RMSNorm · QKV → q/k norm · RoPE · KV append · split-K
//! attention → O + residual → RMSNorm · gate/up · SiLU·up → down + residual } │ final RMSNorm ·
//! LM head · argmax │ next token id in [`StepControl`].
//!
//! `→` is a hand-off of published words ([`flow`]): a block waits for exactly the values it
//! reads, with no grid barrier; `│` is one of the step's two grid barriers
//! ([`sync::GridSync`]). Every block runs the same sequence over its share of each stage's
//! rows; RMSNorm is done redundantly by every block that has rows in the stage, and a block
//! that is done with a stage first issues L2 prefetches of the weights it reads next. The
//! token and position are read from and written back to device memory, so the host can launch
//! step after step without touching them.
//!
//! All dimensions come from [`ModelDims`], filled from the checkpoint's config: the same code
//! runs the real Qwen3-0.6B on the GPU and tiny test checkpoints on the emulator.

pub mod attention;
pub mod flow;
#[cfg(not(target_arch = "nvptx64"))]
pub mod host;
pub mod ring;
pub mod sync;

use crate::device;
use crate::ops::matvec::{prefetch, store_staged8};
use crate::ops::norm::{bf16, bf16x8, rmsnorm_block, stash_floats};
use crate::ops::sample::{self, SampleParams, lm_head_sample};
use attention::{Bf16, F32, attention_split, attention_stage, item_rows, prefetch_kv};
use flow::{Epochs, Produced, Waiter, await_octets, await1, await8, publish};
use ring::{Matrix, Ring, RingPlan, block_has_units};
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
    /// Bytes of each slot of the weight ring ([`ring`]), a multiple of 128 that holds a row
    /// of every matrix (0: the host's plan picks a small default).
    pub ring_slot_bytes: u32,
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
    pub q_norm: *const u16,
    pub k_norm: *const u16,
    pub post_norm: *const u16,
    /// The four matrices last and in the order the weight ring carries them
    /// ([`ring::Matrix`]): matrix `m` is the pointer `4 + m`, found without a lookup table.
    pub qkv: *const u16,
    pub o: *const u16,
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
    /// Steps completed: the host's sanity checks, and the base of the step's epochs
    /// ([`flow::Epochs`]).
    pub steps: u32,
    /// The LM head's running argmax key (see [`crate::ops::argmax`]); 0 between steps.
    pub argmax_key: u64,
    /// Stage marks of a profiled step ([`StepParams::profile`]): only counted.
    pub marks: u32,
    pub reserved: u32,
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
    /// Non-zero: the last warp of each block counts the end of each of its stages on
    /// [`StepControl::marks`], where the virtual GPU's timing profile sees them (a step has
    /// only two grid barriers to cut it into stages). 0 on a GPU.
    pub profile: u32,
    /// How the weight ring cuts every layer's matrices for this grid ([`RingPlan::new`]).
    pub ring: RingPlan,
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
    /// The residual stream, `hidden` published words ([`flow`]: an f32 and its epoch each).
    pub x: *mut u64,
    /// Q, K, V of this position before norm and RoPE, `qkv_rows` published words.
    pub qkv: *mut u64,
    /// The attention chunks' partials, `q_heads × max_splits × partial_stride(head_dim)`
    /// published words (see [`attention::partial_stride`]): the last chunk of a head waits for
    /// the others' and combines.
    pub attn_partial: *mut u64,
    /// Attention output, `q_dim` published words.
    pub attn_out: *mut u64,
    /// SiLU(gate)·up, `intermediate` published words.
    pub act: *mut u64,
    pub control: *mut StepControl,
    /// How the LM head chooses the next token (greedy, or a seeded draw), and its state.
    pub sample: SampleParams,
}

// SAFETY: plain data; the pointers name memory the launch owns while it runs.
unsafe impl Send for StepParams {}
// SAFETY: as above; kernels only read the struct.
unsafe impl Sync for StepParams {}

const _: () = assert!(
    ring::BARRIERS_OFFSET >= 16 + 4 * 32
        && ring::BARRIERS_OFFSET + 8 * ring::SLOTS as usize <= SYNC_SHARED_BYTES
);

/// Where the block's copy of the layer table ([`LayerPointers`] of every layer) lives in its
/// shared memory: after the header and a work area that holds a whole input vector of a
/// matvec, or the LM head's normed state and the sampler's warp lists, or attention's merge.
pub const fn layer_table_offset(dims: &ModelDims, warps_per_block: u32) -> usize {
    let mut vector = dims.hidden;
    if dims.q_dim() > vector {
        vector = dims.q_dim();
    }
    if dims.intermediate > vector {
        vector = dims.intermediate;
    }
    // An RMSNorm keeps its weights behind the normed vector.
    let norm = dims.hidden + stash_floats(dims.hidden as usize) as u32;
    if norm > vector {
        vector = norm;
    }
    // The LM head keeps the normed hidden state and, behind it, the sampler's warp lists.
    let lm_head = dims.hidden + (sample::shared_bytes(warps_per_block) / 4) as u32;
    let mut floats = if lm_head > vector { lm_head } else { vector };
    // Attention merges its warps' running sums there.
    let attention = attention::scratch_floats(dims.head_dim, warps_per_block);
    if attention > floats {
        floats = attention;
    }
    (SYNC_SHARED_BYTES + floats as usize * 4).next_multiple_of(16)
}

/// Where the weight ring starts: after the layer table, 128-byte aligned for the copies.
pub const fn ring_offset(dims: &ModelDims, warps_per_block: u32) -> usize {
    let table = dims.layers as usize * core::mem::size_of::<LayerPointers>();
    (layer_table_offset(dims, warps_per_block) + table).next_multiple_of(128)
}

/// Copies the layer table into the block's shared memory (`table`), 16 bytes a thread: every
/// layer's weights are then found without a load from global memory, which queues in HBM
/// behind the weights streaming in (at a refill of the ring and at the start of every layer
/// in the timing model: 250 to 500 cycles on the step's critical path each time). A block
/// barrier must follow before it is read.
///
/// # Safety
/// `table` must hold `layers` entries in shared memory, 16-byte aligned; every thread calls it.
#[inline(always)]
unsafe fn copy_layer_table(p: &StepParams, table: *mut LayerPointers) {
    const _: () = assert!(core::mem::size_of::<LayerPointers>().is_multiple_of(16));
    let pieces = p.dims.layers as usize * core::mem::size_of::<LayerPointers>() / 16;
    let (from, to) = (p.layers.cast::<[u32; 4]>(), table.cast::<u32>());
    let mut i = device::thread_idx() as usize;
    while i < pieces {
        // SAFETY: the host's table has `layers` entries, never written during the launch.
        unsafe { device::store_u32x4(to.add(4 * i), device::load_global_nc_v4(from.add(i))) };
        i += device::block_dim() as usize;
    }
}

/// Dynamic shared memory a block needs, in bytes: the barrier/reduction header, the work area
/// ([`ring_offset`]) and the weight ring's slots.
pub const fn shared_bytes(dims: &ModelDims, shape: &LaunchShape, warps_per_block: u32) -> usize {
    ring_offset(dims, warps_per_block) + ring::SLOTS as usize * shape.ring_slot_bytes as usize
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

/// Grid barriers one step passes: one before the LM head (it reads the sampler's state that
/// block 0 wrote at the start) and one after it (block 0 reads the grid's choice). Between
/// the layers' stages values are handed off word by word ([`flow`]).
pub const fn barriers_per_step(layers: u32, splits: u32) -> u32 {
    let _ = (layers, splits);
    2
}

/// Copies the `n` values of `src` published for `epoch` into the block's shared work area,
/// laid out for a matvec ([`crate::ops::matvec::staged_index`]), and synchronises. Each thread
/// waits for 8 values at a time, two such pieces per round with all eight 16-byte loads in
/// flight together: 2,048 or 3,072 values are one or two round trips to L2 per thread.
///
/// # Safety
/// `src` must hold `n` words (`n` a multiple of 8) and `work` `n` f32s, both 16-byte aligned;
/// every thread of the block must call this function.
#[inline(always)]
unsafe fn stage_vector(work: *mut f32, src: *const u64, n: usize, epoch: u32, waiter: &mut Waiter) {
    let octets = n / 8;
    let threads = device::block_dim() as usize;
    let mut m = device::thread_idx() as usize;
    while m < octets {
        let second = m + threads;
        let wanted = [true, second < octets];
        // SAFETY: `m < octets`, and `second` is read only when it is below it too.
        let [a, b] = unsafe { await_octets::<2>(src, [m, second], wanted, epoch, waiter) };
        // SAFETY: as above; the work area holds the largest vector.
        unsafe {
            store_staged8(work, n, m, a);
            if wanted[1] {
                store_staged8(work, n, second, b);
            }
        }
        m += 2 * threads;
    }
    device::sync_threads();
}

/// Asks L2 for `bytes` at `start`, one 128-byte line per thread of one block: for the small
/// tensors (norm weights, a RoPE row) that a later stage reads at once from many blocks.
/// Asked for early, they are in L2 when the stage starts; read on demand, their miss would
/// queue in HBM. The block is the last one with QKV rows: it waits for every layer's input
/// like the others, so it asks in time (a block without rows runs layers ahead, and what it
/// asked for was evicted by the time it was read).
///
/// # Safety
/// `start .. start + bytes` must be global memory.
#[inline(always)]
unsafe fn prefetch_small(p: &StepParams, start: *const u8, bytes: usize) {
    const LINE_BYTES: usize = 128;
    let per_block = p.ring.matrices[Matrix::Qkv as usize].units_per_block;
    if device::block_idx() + 1 != p.dims.qkv_rows().div_ceil(per_block.max(1)) {
        return;
    }
    let mut line = device::thread_idx() as usize;
    while line * LINE_BYTES < bytes {
        // SAFETY: inside the range (forwarded contract).
        unsafe { device::prefetch_l2(start.add(line * LINE_BYTES)) };
        line += device::block_dim() as usize;
    }
}

/// `x[row] = before + v`, published for `epoch`: a projection's output joins the residual
/// stream (each row has one writer per stage).
///
/// # Safety
/// `row < hidden`.
#[inline(always)]
unsafe fn add_to_residual(p: &StepParams, row: u32, before: f32, v: f32, epoch: u32) {
    // SAFETY: the caller guarantees the row.
    unsafe { publish(p.x, row as usize, before + v, epoch) }
}

/// The end of one of the block's stages: its warps are done with the shared work area (the
/// next stage writes it), and a profiled step counts the mark.
///
/// # Safety
/// Every thread of the block calls it; `p.control` is the launch's control block.
#[inline(always)]
unsafe fn end_stage(p: &StepParams) {
    device::sync_threads();
    if p.profile != 0 && device::thread_idx() + device::WARP_SIZE == device::block_dim() {
        // SAFETY: a u32 of the control block, only counted atomically.
        unsafe { device::count_relaxed(&raw mut (*p.control).marks) };
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
    let (token, pos, steps, earlier_error) = unsafe {
        (
            (&raw const (*control).token).read_volatile(),
            (&raw const (*control).position).read_volatile(),
            (&raw const (*control).steps).read_volatile(),
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
        pos,
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
    let mut waiter = Waiter::new(p);
    let epochs = Epochs::of_step(steps, d.layers);
    // SAFETY: the launch's shared memory holds the header, the layer table and the ring
    // (`shared_bytes`).
    let ring = Ring::of(p);
    // SAFETY: as above.
    unsafe { copy_layer_table(p, ring.table()) };
    // The first layer's weights start streaming now, before anything else is read (the
    // ring's start synchronises the block: the table is in place).
    // SAFETY: as above.
    unsafe { ring.start() };
    // SAFETY: the embedding has `vocab` rows and `token < vocab`.
    let embedding_row = unsafe { p.embedding.add(token as usize * d.hidden as usize) };
    // The sampler's penalty window takes this step's input (block 0; others read the mask in
    // the LM head, after the grid barrier in front of it).
    if device::block_idx() == 0 {
        // SAFETY: the sampler's buffers are sized by the host for this vocabulary.
        unsafe { sample::record_input(&p.sample, token, pos, d.vocab) };
    }
    // A block without rows in a stage reads none of its inputs: the argument that a buffer is
    // read before it is overwritten counts only the blocks that produce something from it
    // (`block_has_units`, at each stage: no registers held through the step).

    let mut layer = 0;
    while layer < d.layers {
        // SAFETY: `layers` has `dims.layers` entries.
        let w = ring.layer(layer);
        let next = if layer + 1 < d.layers {
            Some(ring.layer(layer + 1))
        } else {
            None
        };
        // The residual stream as the previous layer left it (layer 0: the embedding row).
        let x_in = if layer == 0 {
            0
        } else {
            epochs.of(layer - 1, Produced::Down)
        };

        // 1. RMSNorm (every block with QKV rows) and the fused QKV projection, its weights
        //    from the ring.
        // SAFETY: buffers sized per `StepParams`.
        unsafe {
            // What attention and the second RMSNorm read, asked for before this stage's
            // weights leave room in HBM's queue for the O and gate/up prefetches.
            let head_bytes = d.head_dim as usize * 2;
            prefetch_small(p, w.q_norm.cast(), head_bytes);
            prefetch_small(p, w.k_norm.cast(), head_bytes);
            prefetch_small(
                p,
                p.rope.add(pos as usize * d.head_dim as usize).cast(),
                2 * head_bytes,
            );
            prefetch_small(p, w.post_norm.cast(), d.hidden as usize * 2);
            prefetch_kv(p, layer, pos, split, KV_PREFETCH_BUDGET);
            if block_has_units(p, Matrix::Qkv) {
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
                        |m| await8(p.x, m, x_in, &mut waiter),
                        d.hidden as usize,
                        w.input_norm,
                        d.rms_eps,
                        work,
                        reduce,
                    );
                }
            }
            let e = epochs.of(layer, Produced::Qkv);
            let x = vector(d.hidden);
            ring.matvec::<1>(layer, Matrix::Qkv, x, &mut waiter, |row, [v], _| {
                publish(p.qkv, row as usize, v, e)
            });
            end_stage(p);
        }

        // 2. Attention: (KV head, head block, chunk) items, spread block by block over the
        //    grid; each waits for its KV head's QKV rows. A split attention combines behind
        //    its last chunk. The cache's element type is chosen here, once per layer.
        // SAFETY: every lane of every warp runs the stage; buffers sized per `StepParams`.
        unsafe {
            if p.kv_dtype == KvDtype::Bf16.code() {
                attention_stage::<Bf16>(p, w, layer, pos, split, work, &epochs, &mut waiter);
            } else {
                attention_stage::<F32>(p, w, layer, pos, split, work, &epochs, &mut waiter);
            }
            end_stage(p);
        }

        // 3. Output projection, added to the residual stream.
        // SAFETY: buffers sized per `StepParams`; each row has one writer.
        unsafe {
            if block_has_units(p, Matrix::O) {
                let e = epochs.of(layer, Produced::Attention);
                stage_vector(work, p.attn_out, d.q_dim() as usize, e, &mut waiter);
            }
            let e = epochs.of(layer, Produced::OutputProjection);
            let x = vector(d.q_dim());
            ring.matvec::<1>(layer, Matrix::O, x, &mut waiter, |row, [v], waiter| {
                let before = if layer == 0 {
                    // The input token's row, again (the row's pointer would hold two
                    // registers through the step).
                    bf16(
                        p.embedding,
                        token as usize * d.hidden as usize + row as usize,
                    )
                } else {
                    await1(p.x, row as usize, x_in, waiter)
                };
                add_to_residual(p, row, before, v, e)
            });
            end_stage(p);
        }

        // 4. RMSNorm (every block with gate/up rows), gate and up together, SiLU(gate)·up.
        // SAFETY: as above; gate_up rows 2j and 2j+1 are gate and up of output j.
        unsafe {
            // The next RMSNorm's weights, two stages ahead.
            let next_norm = match next {
                Some(n) => n.input_norm,
                None => p.final_norm,
            };
            prefetch_small(p, next_norm.cast(), d.hidden as usize * 2);
            let x_mid = epochs.of(layer, Produced::OutputProjection);
            if block_has_units(p, Matrix::GateUp) {
                rmsnorm_block(
                    |m| await8(p.x, m, x_mid, &mut waiter),
                    d.hidden as usize,
                    w.post_norm,
                    d.rms_eps,
                    work,
                    reduce,
                );
            }
            let e = epochs.of(layer, Produced::GateUp);
            let x = vector(d.hidden);
            ring.matvec::<2>(layer, Matrix::GateUp, x, &mut waiter, |j, [g, u], _| {
                publish(p.act, j as usize, silu(g) * u, e)
            });
            end_stage(p);
            if next.is_none() {
                // The LM head (311 MB for Qwen3-0.6B) is six times the L2 and not in the
                // ring: its first rows, which each warp reads first, are asked of L2 while
                // the last layer finishes.
                prefetch::<1>(p.lm_head, d.hidden, d.vocab, lanes, L2_BUDGET);
            }
        }

        // 5. Down projection, added to the residual stream.
        // SAFETY: as above.
        unsafe {
            if block_has_units(p, Matrix::Down) {
                let e = epochs.of(layer, Produced::GateUp);
                stage_vector(work, p.act, d.intermediate as usize, e, &mut waiter);
            }
            let e = epochs.of(layer, Produced::Down);
            let x_mid = epochs.of(layer, Produced::OutputProjection);
            let x = vector(d.intermediate);
            ring.matvec::<1>(layer, Matrix::Down, x, &mut waiter, |row, [v], waiter| {
                let before = await1(p.x, row as usize, x_mid, waiter);
                add_to_residual(p, row, before, v, e)
            });
            end_stage(p);
        }
        layer += 1;
    }

    // 6. Final RMSNorm, LM head and the choice of the next token (argmax or a seeded draw),
    //    fused: no logit leaves the SM. The grid barrier in front of it orders block 0's
    //    sampler state (and stops the step if any wait failed).
    // SAFETY: as above.
    unsafe {
        if !sync.barrier(Stage::LmHead, d.layers, || {}) {
            return;
        }
        let x_out = epochs.of(d.layers - 1, Produced::Down);
        rmsnorm_block(
            |m| await8(p.x, m, x_out, &mut waiter),
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
        end_stage(p);
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
