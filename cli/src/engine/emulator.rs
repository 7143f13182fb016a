//! The `emulator` engine: the megakernel's own source, compiled for the host, each CUDA thread
//! an OS thread (see `qwenmk_kernels::device::emu`). Slow, but it runs the real kernel logic —
//! the work split, the barrier protocol, split-K attention, the fused argmax — on any machine,
//! so tests check the kernel without a GPU.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use qwenmk_kernels::device::emu;
use qwenmk_kernels::ops::sample::{SampleParams, list_words, mask_words};
use qwenmk_kernels::step::host::rope_table;
use qwenmk_kernels::step::{KvDtype, LaunchShape, StepControl, StepParams, decode_step};
use qwenmk_weights::packed::PackedModel;

use super::plan::{StepPlan, WeightPointers, describe_step_error};
use super::{Engine, Next, Sampling, ensure_room};

/// The emulator's launch: 2 blocks of 2 warps, so grid barriers, block barriers and warp
/// shuffles all run, with 128 OS threads (a 2-layer tiny model steps in tens of milliseconds on
/// 2 cores). One lane per row means matvecs need no per-row shuffles, the costliest emulated
/// operation; tests run other shapes too.
pub const GRID: u32 = 2;
pub const BLOCK: u32 = 64;
/// Emulated barriers are slow under an overloaded scheduler: allow a minute before calling
/// a wait a hang.
pub const SPIN_LIMIT_NS: u64 = 60_000_000_000;

/// The emulator's launch shape.
pub fn launch_shape() -> LaunchShape {
    LaunchShape {
        lanes_per_row: 1,
        min_chunk: 32,
        max_chunk: 256,
        ring_slot_bytes: 0,
        spin_limit_ns: SPIN_LIMIT_NS,
    }
}

/// 16 bytes, 16-byte aligned: the unit a KV cache is allocated in, so that every lane's
/// 16-byte loads and stores are aligned whatever the element type.
#[repr(C, align(16))]
#[derive(Clone, Copy, Default)]
struct Aligned16([u8; 16]);

/// A KV cache: raw bytes of the plan's element type.
struct KvBytes(Vec<Aligned16>);

impl KvBytes {
    fn zeroed(bytes: usize) -> Self {
        KvBytes(vec![Aligned16::default(); bytes.div_ceil(16)])
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: `Aligned16` is 16 plain bytes without padding.
        unsafe {
            std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast::<u8>(), self.0.len() * 16)
        }
    }

    fn as_mut_ptr(&mut self) -> *mut u8 {
        self.0.as_mut_ptr().cast()
    }
}

/// Four f32s, 16-byte aligned: the unit the step's vectors are allocated in, as the GPU's
/// allocations are aligned, because the kernel reads and writes them 4 values at a time.
#[repr(C, align(16))]
#[derive(Clone, Copy, Default)]
struct Quad([f32; 4]);

/// Zeroed f32s in [`Quad`]s.
struct F32s(Vec<Quad>);

impl F32s {
    fn zeroed(len: usize) -> Self {
        F32s(vec![Quad::default(); len.div_ceil(4)])
    }

    fn from_values(values: &[f32]) -> Self {
        let mut quads = Self::zeroed(values.len());
        for (quad, chunk) in quads.0.iter_mut().zip(values.chunks(4)) {
            quad.0[..chunk.len()].copy_from_slice(chunk);
        }
        quads
    }

    fn as_ptr(&self) -> *const f32 {
        self.0.as_ptr().cast()
    }
}

/// Two 64-bit words, 16-byte aligned: the unit the published vectors (`step::flow`) are
/// allocated in, read and written two words at a time.
#[repr(C, align(16))]
#[derive(Clone, Copy, Default)]
struct WordPair([u64; 2]);

/// Zeroed published words in [`WordPair`]s.
struct Words(Vec<WordPair>);

impl Words {
    fn zeroed(len: usize) -> Self {
        Words(vec![WordPair::default(); len.div_ceil(2)])
    }

    fn as_mut_ptr(&mut self) -> *mut u64 {
        self.0.as_mut_ptr().cast()
    }

    /// Back to zero: no word matches any epoch of a step counter that starts again.
    fn clear(&mut self) {
        self.0.fill(WordPair::default());
    }
}

/// Host buffers the kernel works in, sized by the plan.
struct Buffers {
    rope: F32s,
    k_cache: KvBytes,
    v_cache: KvBytes,
    x: Words,
    qkv: Words,
    attn_partial: Words,
    attn_out: Words,
    act: Words,
}

/// The sampler's state: input tokens by position, the penalty mask, the candidate lists and
/// the count of blocks that published theirs.
struct SamplerBuffers {
    history: Vec<u32>,
    mask: Vec<u32>,
    lists: Vec<u64>,
    blocks_done: Box<u32>,
}

pub struct EmulatorEngine {
    model: Arc<PackedModel>,
    plan: StepPlan,
    weights: WeightPointers,
    buffers: Buffers,
    control: Box<StepControl>,
    sampling: Sampling,
    sampler: SamplerBuffers,
    position: usize,
    /// Blocks that run at once; fewer than the grid reproduces a GPU on which the grid does
    /// not fit (see `emu::launch_with_residency`).
    resident_blocks: u32,
}

// SAFETY: the raw pointers in `weights` point into `model`'s mapping, which the engine owns
// through the `Arc` and never mutates.
unsafe impl Send for EmulatorEngine {}

impl EmulatorEngine {
    /// An engine for `model` with an f32 KV cache of `max_context` positions.
    pub fn new(model: Arc<PackedModel>, max_context: usize) -> Result<Self> {
        Self::with_kv_cache(model, max_context, KvDtype::F32)
    }

    /// An engine for `model` with a KV cache of `max_context` positions of `kv` values.
    pub fn with_kv_cache(model: Arc<PackedModel>, max_context: usize, kv: KvDtype) -> Result<Self> {
        Self::with_launch(model, max_context, GRID, BLOCK, launch_shape(), kv)
    }

    /// As [`EmulatorEngine::with_kv_cache`] with another launch (tests vary it to exercise
    /// other splits of the work).
    pub fn with_launch(
        model: Arc<PackedModel>,
        max_context: usize,
        grid: u32,
        block: u32,
        shape: LaunchShape,
        kv: KvDtype,
    ) -> Result<Self> {
        let config = model.config();
        let plan = StepPlan::new(config, max_context, grid, block, shape, kv)?;
        let lens = plan.buffers();
        let buffers = Buffers {
            rope: F32s::from_values(&rope_table(
                config.rope_theta,
                plan.dims.head_dim,
                plan.dims.max_context,
            )),
            k_cache: KvBytes::zeroed(lens.kv_cache_bytes()),
            v_cache: KvBytes::zeroed(lens.kv_cache_bytes()),
            x: Words::zeroed(lens.x),
            qkv: Words::zeroed(lens.qkv),
            attn_partial: Words::zeroed(lens.attn_partial),
            attn_out: Words::zeroed(lens.attn_out),
            act: Words::zeroed(lens.act),
        };
        let weights = WeightPointers::new(&model, model.payload().as_ptr() as u64);
        let sampler = SamplerBuffers {
            history: Vec::new(),
            mask: vec![0; mask_words(plan.dims.vocab)],
            lists: vec![0; list_words(grid)],
            blocks_done: Box::new(0),
        };
        Ok(EmulatorEngine {
            sampling: Sampling::greedy(),
            sampler,
            model,
            plan,
            weights,
            buffers,
            control: Box::default(),
            position: 0,
            resident_blocks: grid,
        })
    }

    /// Lets only `blocks` blocks run at once, like a GPU too small (or too busy) for the grid:
    /// the step must then fail with the kernel's timeout error instead of hanging.
    pub fn with_resident_blocks(mut self, blocks: u32) -> Self {
        self.resident_blocks = blocks.max(1);
        self
    }

    /// Fills the KV cache up to `depth` with pseudo-random rows, as
    /// [`crate::engine::cpu::CpuEngine::fill_random`].
    pub fn fill_random(&mut self, depth: usize, seed: u64) -> Result<()> {
        let b = &mut self.buffers;
        self.plan
            .for_each_random_kv_slice(depth, seed, |at, keys, values| {
                b.k_cache.bytes_mut()[at..at + keys.len()].copy_from_slice(keys);
                b.v_cache.bytes_mut()[at..at + values.len()].copy_from_slice(values);
                Ok(())
            })?;
        self.position = depth;
        Ok(())
    }

    pub fn plan(&self) -> &StepPlan {
        &self.plan
    }

    pub fn model(&self) -> &Arc<PackedModel> {
        &self.model
    }

    fn sample_params(&mut self, next: Next) -> SampleParams {
        let s = &mut self.sampler;
        let mut p = self.sampling.kernel_params(next == Next::Wanted);
        p.history_len = s.history.len() as u32;
        p.history = s.history.as_mut_ptr();
        p.penalty_mask = s.mask.as_mut_ptr();
        p.lists = s.lists.as_mut_ptr();
        p.blocks_done = &raw mut *s.blocks_done;
        p
    }

    fn params(&mut self, next: Next) -> StepParams {
        let sample = self.sample_params(next);
        let b = &mut self.buffers;
        StepParams {
            dims: self.plan.dims,
            shape: self.plan.shape,
            max_splits: self.plan.max_splits,
            abi_bytes: std::mem::size_of::<StepParams>() as u32,
            kv_dtype: self.plan.kv.code(),
            profile: 0,
            ring: self.plan.ring,
            embedding: self.weights.embedding,
            lm_head: self.weights.lm_head,
            final_norm: self.weights.final_norm,
            layers: self.weights.layers.as_ptr(),
            rope: b.rope.as_ptr(),
            k_cache: b.k_cache.as_mut_ptr(),
            v_cache: b.v_cache.as_mut_ptr(),
            x: b.x.as_mut_ptr(),
            qkv: b.qkv.as_mut_ptr(),
            attn_partial: b.attn_partial.as_mut_ptr(),
            attn_out: b.attn_out.as_mut_ptr(),
            act: b.act.as_mut_ptr(),
            control: &raw mut *self.control,
            sample,
        }
    }
}

impl Engine for EmulatorEngine {
    fn name(&self) -> &'static str {
        "emulator"
    }

    fn max_context(&self) -> usize {
        self.plan.dims.max_context as usize
    }

    fn position(&self) -> usize {
        self.position
    }

    fn kv_cache(&self) -> KvDtype {
        self.plan.kv
    }

    fn set_sampling(&mut self, sampling: &Sampling) -> Result<()> {
        sampling.validate()?;
        let window = sampling.penalty_window().min(self.max_context());
        self.sampler.history = vec![0; window];
        self.sampling = Sampling {
            repeat_last_n: window,
            ..*sampling
        };
        Ok(())
    }

    /// The next step writes its key and value at `position` and attends over `0..=position`,
    /// so later entries are never read; the penalty window reads inputs by position, so it
    /// forgets them the same way.
    fn truncate(&mut self, position: usize) -> Result<()> {
        super::ensure_can_truncate(position, self.position)?;
        self.position = position;
        Ok(())
    }

    fn feed(&mut self, token: u32, next: Next) -> Result<u32> {
        ensure_room(
            self.position,
            self.max_context(),
            self.model.config().max_position_embeddings,
        )?;
        self.control.token = token;
        self.control.position = self.position as u32;
        let params = self.params(next);
        let plan = &self.plan;
        // SAFETY: every buffer in `params` is sized by `plan` and lives in `self` for the
        // whole launch, which returns only when every emulated thread has finished.
        emu::launch_with_residency(
            plan.grid,
            plan.block,
            plan.shared_bytes,
            self.resident_blocks,
            || unsafe { decode_step(&params) },
        )
        .context("the emulated decode step failed")?;
        if self.control.error != 0 {
            let message = describe_step_error(self.control.error, plan, self.position);
            // The barrier words are inconsistent after an aborted step, and blocks may have
            // counted themselves into the sampler's merge: start them afresh. The step count
            // starts again too, and with it the epochs: no published word may match them.
            *self.control = StepControl::default();
            *self.sampler.blocks_done = 0;
            let b = &mut self.buffers;
            for words in [
                &mut b.x,
                &mut b.qkv,
                &mut b.attn_partial,
                &mut b.attn_out,
                &mut b.act,
            ] {
                words.clear();
            }
            bail!(message);
        }
        self.position += 1;
        Ok(self.control.token)
    }
}
