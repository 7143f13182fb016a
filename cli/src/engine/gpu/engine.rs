//! The `gpu` engine: the decode-step kernel on a CUDA GPU, one launch per token.
//!
//! Setup checks everything a launch depends on before the first one: a GPU that can run the
//! PTX, memory for the weights and the KV cache, and a grid no larger than the blocks that can
//! be resident at once (the kernel's barriers need every block running). Each step writes the
//! input token only when it is not the kernel's own previous output (prompt tokens), launches,
//! and reads back the 40-byte control block: the next token id and the error word.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr};
use qwenmk_kernels::ops::sample::{SampleParams, list_words, mask_words};
use qwenmk_kernels::step::host::rope_table;
use qwenmk_kernels::step::ring;
use qwenmk_kernels::step::sync::{Stage, StepError};
use qwenmk_kernels::step::{
    self, KvDtype, LaunchShape, LayerPointers, ModelDims, StepControl, StepParams,
};
use qwenmk_weights::PackedModel;

use super::launch::{KernelAttributes, StepKernel};
use super::memory::{bytes_needed, choose_max_context};
use super::probe::{GpuInfo, probe};
use crate::engine::plan::{StepPlan, WeightPointers, describe_step_error, model_dims};
use crate::engine::{Engine, Next, Sampling, ensure_room};

/// Threads per block: 8 warps, so one block per SM keeps the whole register file busy.
pub const BLOCK: u32 = 256;
/// A barrier wait longer than this is a hang (a whole step takes about a millisecond).
pub const SPIN_LIMIT_NS: u64 = 2_000_000_000;

/// The GPU's launch shape: 16 lanes per row read 256 contiguous bytes per load instruction
/// across each row pair; attention chunks (one per block, cut again over its 8 warps) of
/// 16..4,096 cached positions (16 rather than 32 or 8: measured in the timing model at depth
/// 128, where 8 chunks of 16 beat 4 of 32 and 16 of 8); weight-ring slots as large as the
/// block's shared memory allows, up to [`MAX_RING_SLOT_BYTES`].
pub fn launch_shape(dims: &ModelDims, shared_optin_per_block: u32) -> LaunchShape {
    let mut shape = LaunchShape {
        lanes_per_row: 16,
        min_chunk: 16,
        max_chunk: 4096,
        ring_slot_bytes: 0,
        spin_limit_ns: SPIN_LIMIT_NS,
    };
    let fixed = step::ring_offset(dims, BLOCK / 32) + RESERVED_SHARED_BYTES;
    let room = (shared_optin_per_block as usize).saturating_sub(fixed) / ring::SLOTS as usize;
    shape.ring_slot_bytes = (room.min(MAX_RING_SLOT_BYTES as usize) as u32) / 128 * 128;
    shape
}

/// The largest weight-ring slot: four of them (192 KiB) and the step's 22 KiB leave an H100's
/// 227 KiB per block a margin; a slot holds 24 of Qwen3-0.6B's QKV rows, 12 O rows, 12 gate/up
/// row pairs or 8 down rows, so a layer is 6 chunks per block on 132 SMs.
pub const MAX_RING_SLOT_BYTES: u32 = 48 * 1024;

/// Shared memory an H100 lets one block opt into (`MAX_SHARED_MEMORY_PER_BLOCK_OPTIN`): the
/// shape reports and tests assume when no GPU is asked.
pub const H100_SHARED_OPTIN_BYTES: u32 = 227 * 1024;

/// Shared memory the driver keeps per block beside the kernel's (sm_80 and newer: 1 KiB).
const RESERVED_SHARED_BYTES: usize = 1024;

const CONTROL_WORDS: usize = std::mem::size_of::<StepControl>() / 4;
const _: () = assert!(std::mem::size_of::<StepControl>() == 40);

/// Device allocations the kernel reads and writes; kept alive as long as the engine.
struct DeviceBuffers {
    _weights: CudaSlice<u8>,
    _layers: CudaSlice<u8>,
    _rope: CudaSlice<f32>,
    /// Raw bytes of the plan's element type (f32 or BF16).
    _k_cache: CudaSlice<u8>,
    _v_cache: CudaSlice<u8>,
    /// Published words (`step::flow`): zeroed again whenever the step count is.
    x: CudaSlice<u64>,
    qkv: CudaSlice<u64>,
    attn_partial: CudaSlice<u64>,
    attn_out: CudaSlice<u64>,
    act: CudaSlice<u64>,
    control: CudaSlice<u32>,
}

/// The sampler's device state (see `SampleParams`): input tokens by position, the penalty
/// mask, the candidate lists and the count of blocks that published theirs.
struct SamplerBuffers {
    history: CudaSlice<u32>,
    history_len: usize,
    mask: CudaSlice<u32>,
    lists: CudaSlice<u64>,
    blocks_done: CudaSlice<u32>,
}

pub struct GpuEngine {
    model: Arc<PackedModel>,
    info: GpuInfo,
    kernel: StepKernel,
    attributes: KernelAttributes,
    plan: StepPlan,
    buffers: DeviceBuffers,
    sampler: SamplerBuffers,
    sampling: Sampling,
    params: StepParams,
    position: usize,
    /// The token the last step produced: feeding it back needs no host write.
    last_output: Option<u32>,
    /// Set by the first failed step: after it neither the KV cache nor the device's barrier
    /// words can be trusted, so every later step refuses with this sentence.
    failed: Option<String>,
}

fn address<T>(slice: &CudaSlice<T>, stream: &CudaStream) -> u64 {
    let (ptr, _sync) = slice.device_ptr(stream);
    ptr
}

impl GpuEngine {
    /// Sets up GPU 0 for `model` with a KV cache of `kv` values. `max_context`: `None` takes
    /// the model's maximum or what fits in free memory (reported through `notice`).
    pub fn new(
        model: Arc<PackedModel>,
        max_context: Option<usize>,
        kv: KvDtype,
        notice: &mut dyn FnMut(&str),
    ) -> Result<Self> {
        let info = probe(0)?;
        let Some(ptx) = info.ptx_module() else {
            bail!("{}; use --device cpu", info.too_old());
        };
        let ctx = CudaContext::new(0).context("creating a CUDA context on GPU 0")?;
        let kernel = StepKernel::load(&ctx, ptx)?;
        let attributes = kernel.attributes()?;
        let config = model.config();

        // The grid: as many blocks as can be resident at once, never more.
        let shape = launch_shape(&model_dims(config, 1), info.shared_optin_per_block);
        let probe_plan = StepPlan::new(config, 1, info.sm_count, BLOCK, shape, kv)?;
        let per_sm = kernel.resident_blocks_per_sm(BLOCK, probe_plan.shared_bytes)?;
        if per_sm == 0 {
            bail!(
                "the decode-step kernel cannot fit one block of {BLOCK} threads on an SM of {} \
                 ({} registers per thread, {} bytes of shared memory)",
                info.name,
                attributes.registers,
                probe_plan.shared_bytes
            );
        }
        let grid = per_sm * info.sm_count;
        let plan_for = |n: usize| StepPlan::new(config, n, grid, BLOCK, shape, kv);
        let payload = model.payload();
        let (max_context, fit_notice) = choose_max_context(
            max_context,
            config,
            payload.len() as u64,
            info.free_memory_bytes,
            plan_for,
        )?;
        if let Some(text) = fit_notice {
            notice(&text);
        }
        let plan = plan_for(max_context)?;
        // The shared memory can grow with the context (attention chunks): re-check residency.
        let per_sm_final = kernel.resident_blocks_per_sm(BLOCK, plan.shared_bytes)?;
        if per_sm_final * info.sm_count < grid {
            bail!("a grid of {grid} blocks would not be resident at once; this is a qwenmk bug");
        }
        debug_assert!(bytes_needed(payload.len() as u64, &plan) > 0);

        let stream = kernel.stream().clone();
        let weights = stream
            .clone_htod(payload)
            .map_err(|e| device_memory(e, "weights", payload.len()))?;
        let pointers = WeightPointers::new(&model, address(&weights, &stream));
        let layer_bytes = layer_table_bytes(&pointers.layers);
        let layers = stream
            .clone_htod(&layer_bytes)
            .map_err(|e| device_memory(e, "layer table", layer_bytes.len()))?;
        let rope = rope_table(config.rope_theta, plan.dims.head_dim, plan.dims.max_context);
        let rope = stream
            .clone_htod(&rope)
            .map_err(|e| device_memory(e, "RoPE table", rope.len() * 4))?;
        let lens = plan.buffers();
        let word_zeros = |n: usize, what: &str| {
            stream
                .alloc_zeros::<u64>(n.max(2))
                .map_err(|e| device_memory(e, what, n.max(2) * 8))
        };
        let kv_zeros = |what: &str| {
            let n = lens.kv_cache_bytes().max(16);
            stream
                .alloc_zeros::<u8>(n)
                .map_err(|e| device_memory(e, what, n))
        };
        let buffers = DeviceBuffers {
            _k_cache: kv_zeros("K cache")?,
            _v_cache: kv_zeros("V cache")?,
            x: word_zeros(lens.x, "residual stream")?,
            qkv: word_zeros(lens.qkv, "QKV buffer")?,
            attn_partial: word_zeros(lens.attn_partial, "attention partials")?,
            attn_out: word_zeros(lens.attn_out, "attention output")?,
            act: word_zeros(lens.act, "MLP activations")?,
            control: stream
                .alloc_zeros::<u32>(CONTROL_WORDS)
                .map_err(|e| device_memory(e, "control block", CONTROL_WORDS * 4))?,
            _weights: weights,
            _layers: layers,
            _rope: rope,
        };
        let b = &buffers;
        let f32_ptr = |s: &CudaSlice<f32>| address(s, &stream) as *mut f32;
        let params = StepParams {
            dims: plan.dims,
            shape: plan.shape,
            max_splits: plan.max_splits,
            abi_bytes: std::mem::size_of::<StepParams>() as u32,
            kv_dtype: plan.kv.code(),
            // The virtual GPU's timing profile cuts a step into stages by the blocks' marks.
            profile: info.is_simulated() as u32,
            ring: plan.ring,
            embedding: pointers.embedding,
            lm_head: pointers.lm_head,
            final_norm: pointers.final_norm,
            layers: address(&b._layers, &stream) as *const LayerPointers,
            rope: f32_ptr(&b._rope),
            k_cache: address(&b._k_cache, &stream) as *mut u8,
            v_cache: address(&b._v_cache, &stream) as *mut u8,
            x: address(&b.x, &stream) as *mut u64,
            qkv: address(&b.qkv, &stream) as *mut u64,
            attn_partial: address(&b.attn_partial, &stream) as *mut u64,
            attn_out: address(&b.attn_out, &stream) as *mut u64,
            act: address(&b.act, &stream) as *mut u64,
            control: address(&b.control, &stream) as *mut StepControl,
            sample: SampleParams::greedy(),
        };
        let alloc_u32 = |n: usize, what: &str| {
            stream
                .alloc_zeros::<u32>(n.max(1))
                .with_context(|| format!("allocating the sampler's {what} on the GPU"))
        };
        let sampler = SamplerBuffers {
            history: alloc_u32(1, "history")?,
            history_len: 0,
            mask: alloc_u32(mask_words(plan.dims.vocab), "penalty mask")?,
            lists: stream
                .alloc_zeros::<u64>(list_words(plan.grid))
                .context("allocating the sampler's candidate lists on the GPU")?,
            blocks_done: alloc_u32(1, "block counter")?,
        };
        Ok(GpuEngine {
            model,
            info,
            kernel,
            attributes,
            plan,
            buffers,
            sampler,
            sampling: Sampling::greedy(),
            params,
            position: 0,
            last_output: None,
            failed: None,
        })
    }

    pub fn info(&self) -> &GpuInfo {
        &self.info
    }

    pub fn plan(&self) -> &StepPlan {
        &self.plan
    }

    pub fn attributes(&self) -> &KernelAttributes {
        &self.attributes
    }

    pub fn model(&self) -> &Arc<PackedModel> {
        &self.model
    }

    /// Decodes `n` tokens from [`Engine::position`] (as the sampling settings say), `first`
    /// first, timed on the GPU with CUDA events: the `n` launches go back to back with no host
    /// work between them (the kernel feeds itself its output token and position), then the
    /// control block is read once. Returns the last token and the seconds between the events.
    pub fn decode_timed(&mut self, first: u32, n: usize) -> Result<(u32, f64)> {
        if n == 0 {
            bail!("a timed decode needs at least one step");
        }
        if self.position + n > self.max_context() {
            bail!(
                "{n} steps from position {} would overrun the KV cache of {} positions",
                self.position,
                self.max_context()
            );
        }
        self.refuse_after_failure()?;
        let stream = self.kernel.stream().clone();
        self.write_input(&stream, first)?;
        self.params.sample = self.sample_params(Next::Wanted);
        // Read before timing (this also waits for the write): the step counter to compare.
        let before = self.read_control()?;
        let plan = &self.plan;
        let timed =
            self.kernel
                .launch_timed(self.params, plan.grid, plan.block, plan.shared_bytes, n);
        let seconds = match timed {
            Ok(s) => s,
            Err(e) => return Err(self.fail(format!("{e:#}"))),
        };
        let after = self.read_control()?;
        let (next, position, error, steps) = (after[0], after[1], after[4], after[5]);
        if error != 0 {
            // Steps queued behind the failed one left at their start; which step failed is
            // not something the device's words can be trusted to say.
            let message = describe_step_error(error, &self.plan, self.position);
            return Err(self.fail(message));
        }
        let expected = (self.position + n) as u32;
        if steps.wrapping_sub(before[5]) != n as u32 || position != expected {
            let message = format!(
                "the GPU ran {} of {n} steps and stopped at position {position}, not {expected}; \
                 this is a qwenmk bug",
                steps.wrapping_sub(before[5])
            );
            return Err(self.fail(message));
        }
        self.position += n;
        self.last_output = Some(next);
        Ok((next, seconds))
    }

    /// Fills the KV cache up to `depth` with pseudo-random rows (uploaded), as
    /// [`crate::engine::cpu::CpuEngine::fill_random`]: a deep cache in seconds instead of
    /// `depth` decode steps.
    pub fn fill_random(&mut self, depth: usize, seed: u64) -> Result<()> {
        self.refuse_after_failure()?;
        let stream = self.kernel.stream().clone();
        let buffers = &mut self.buffers;
        self.plan
            .for_each_random_kv_slice(depth, seed, |at, keys, values| {
                let mut k = buffers._k_cache.slice_mut(at..at + keys.len());
                stream
                    .memcpy_htod(keys, &mut k)
                    .context("writing the K cache")?;
                let mut v = buffers._v_cache.slice_mut(at..at + values.len());
                stream
                    .memcpy_htod(values, &mut v)
                    .context("writing the V cache")
            })?;
        self.position = depth;
        self.last_output = None;
        Ok(())
    }

    /// The virtual GPU's timing-model profile of the launches since the last call (JSON, see
    /// `qwenmkVgpuTakeProfile` in vgpu-driver); `None` on any other GPU.
    pub fn take_simulated_profile(&self) -> Result<Option<String>> {
        if !self.info.is_simulated() {
            return Ok(None);
        }
        type TakeProfile = unsafe extern "C" fn(*mut std::ffi::c_char, usize) -> usize;
        self.kernel
            .stream()
            .synchronize()
            .context("waiting for the profiled steps")?;
        // SAFETY: the engine runs, so cudarc has loaded the driver library; the symbol, which
        // only the virtual GPU's driver exports, has the signature above.
        let take = unsafe {
            cudarc::driver::sys::culib()
                .get::<TakeProfile>(b"qwenmkVgpuTakeProfile\0")
                .context("the virtual GPU's driver has no profile function")?
        };
        let mut buf = vec![0u8; 1 << 16];
        loop {
            // SAFETY: `buf` holds `buf.len()` writable bytes.
            let len = unsafe { take(buf.as_mut_ptr().cast(), buf.len()) };
            if len < buf.len() {
                buf.truncate(len);
                break;
            }
            buf.resize(len + 1, 0);
        }
        String::from_utf8(buf)
            .map(Some)
            .context("the virtual GPU's profile is not UTF-8")
    }

    /// Refuses to run once a step has failed.
    fn refuse_after_failure(&self) -> Result<()> {
        if let Some(why) = &self.failed {
            bail!("the GPU engine stopped after an earlier failure ({why}); start again");
        }
        Ok(())
    }

    /// Records a failure: the engine runs no more steps, and the device's control block is
    /// zeroed (if the device still answers) so that nothing reads stale barrier words.
    fn fail(&mut self, message: String) -> anyhow::Error {
        let _ = self.reset_control();
        self.failed = Some(message.clone());
        anyhow::anyhow!(message)
    }

    fn read_control(&self) -> Result<[u32; CONTROL_WORDS]> {
        let mut control = [0u32; CONTROL_WORDS];
        self.kernel
            .stream()
            .memcpy_dtoh(&self.buffers.control, &mut control)
            .context("reading the control block from the GPU")?;
        Ok(control)
    }

    /// Puts `token` and the current position in the control block, unless the kernel left
    /// them there itself (the token is its own previous output): generation runs with no host
    /// writes, prompt tokens and truncations need one.
    fn write_input(&mut self, stream: &Arc<CudaStream>, token: u32) -> Result<()> {
        if self.last_output != Some(token) {
            let input = [token, self.position as u32];
            let mut head = self.buffers.control.slice_mut(0..2);
            stream
                .memcpy_htod(&input, &mut head)
                .context("writing the input token to the GPU")?;
        }
        Ok(())
    }

    /// The kernel's sampling parameters for a step whose output is (or is not) used.
    fn sample_params(&self, next: Next) -> SampleParams {
        let stream = self.kernel.stream();
        let s = &self.sampler;
        let mut p = self.sampling.kernel_params(next == Next::Wanted);
        p.history_len = s.history_len as u32;
        p.history = address(&s.history, stream) as *mut u32;
        p.penalty_mask = address(&s.mask, stream) as *mut u32;
        p.lists = address(&s.lists, stream) as *mut u64;
        p.blocks_done = address(&s.blocks_done, stream) as *mut u32;
        p
    }

    fn reset_control(&mut self) -> Result<()> {
        let stream = self.kernel.stream().clone();
        stream
            .memset_zeros(&mut self.buffers.control)
            .context("resetting the control block")?;
        // Blocks of a failed step may have counted themselves into the sampler's merge.
        stream
            .memset_zeros(&mut self.sampler.blocks_done)
            .context("resetting the sampler's block counter")?;
        // The step count starts again, and with it the epochs: no published word may match.
        let b = &mut self.buffers;
        for words in [
            &mut b.x,
            &mut b.qkv,
            &mut b.attn_partial,
            &mut b.attn_out,
            &mut b.act,
        ] {
            stream
                .memset_zeros(words)
                .context("resetting the published vectors")?;
        }
        self.last_output = None;
        Ok(())
    }
}

/// The sentence for a failed upload or allocation of `bytes` bytes for `what`: running out of
/// device memory says so and what to do; any other driver error is passed on.
fn device_memory(e: cudarc::driver::DriverError, what: &str, bytes: usize) -> anyhow::Error {
    use cudarc::driver::sys::cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY;
    if e.0 == CUDA_ERROR_OUT_OF_MEMORY {
        anyhow::anyhow!(
            "not enough GPU memory: allocating {:.1} MiB for the {what} failed; lower \
             --max-context, or close other programs that use the GPU",
            bytes as f64 / (1u64 << 20) as f64
        )
    } else {
        anyhow::anyhow!(e).context(format!("putting the {what} on the GPU"))
    }
}

/// True when the kernel refused the step at its entry (bad token, full context, layout
/// mismatch), which every block decides alike before any block writes anything.
fn refused_at_start(word: u32) -> bool {
    StepError::decode(word).is_some_and(|e| e.stage == Stage::Start)
}

/// The layer pointer table as the bytes the kernel reads.
fn layer_table_bytes(layers: &[LayerPointers]) -> Vec<u8> {
    layers
        .iter()
        .flat_map(|l| {
            [
                l.input_norm,
                l.q_norm,
                l.k_norm,
                l.post_norm,
                l.qkv,
                l.o,
                l.gate_up,
                l.down,
            ]
            .into_iter()
            .flat_map(|p| (p as u64).to_le_bytes())
        })
        .collect()
}

impl Engine for GpuEngine {
    fn name(&self) -> &'static str {
        "gpu"
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
        if window != self.sampler.history_len {
            self.sampler.history = self
                .kernel
                .stream()
                .alloc_zeros::<u32>(window.max(1))
                .context("allocating the sampler's history on the GPU")?;
            self.sampler.history_len = window;
        }
        self.sampling = Sampling {
            repeat_last_n: window,
            ..*sampling
        };
        Ok(())
    }

    /// The next step writes its key and value at `position` and attends over `0..=position`,
    /// so later cache entries (and the penalty window's later inputs) are never read.
    fn truncate(&mut self, position: usize) -> Result<()> {
        crate::engine::ensure_can_truncate(position, self.position)?;
        self.position = position;
        // The device's control block still holds the old position: the next step writes both.
        self.last_output = None;
        Ok(())
    }

    fn feed(&mut self, token: u32, next: Next) -> Result<u32> {
        self.refuse_after_failure()?;
        ensure_room(
            self.position,
            self.max_context(),
            self.model.config().max_position_embeddings,
        )?;
        let stream = self.kernel.stream().clone();
        self.write_input(&stream, token)?;
        self.params.sample = self.sample_params(next);
        let plan = &self.plan;
        if let Err(e) = self
            .kernel
            .launch(self.params, plan.grid, plan.block, plan.shared_bytes)
        {
            return Err(self.fail(format!("{e:#}")));
        }
        let mut control = [0u32; CONTROL_WORDS];
        if let Err(e) = stream.memcpy_dtoh(&self.buffers.control, &mut control) {
            return Err(self.fail(format!("the decode step failed on the GPU: {e}")));
        }
        let (next, error) = (control[0], control[4]);
        if error != 0 {
            let message = describe_step_error(error, &self.plan, self.position);
            if refused_at_start(error) {
                // Every block left at the step's entry, before writing anything: the KV cache
                // and the barrier words are as they were. Clear the error and go on.
                self.reset_control()?;
                bail!(message);
            }
            return Err(self.fail(message));
        }
        self.position += 1;
        self.last_output = Some(next);
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layer_table_matches_the_kernels_struct() {
        let p = |v: u64| v as *const u16;
        let layer = LayerPointers {
            input_norm: p(1),
            q_norm: p(2),
            k_norm: p(3),
            post_norm: p(4),
            qkv: p(5),
            o: p(6),
            gate_up: p(7),
            down: p(8),
        };
        let bytes = layer_table_bytes(&[layer, layer]);
        assert_eq!(bytes.len(), 2 * std::mem::size_of::<LayerPointers>());
        // SAFETY: `LayerPointers` is repr(C) with eight pointer fields, as the bytes hold.
        let back: LayerPointers = unsafe { std::ptr::read_unaligned(bytes[64..].as_ptr().cast()) };
        assert_eq!(back.down as u64, 8);
        assert_eq!(back.gate_up as u64, 7);
        assert_eq!(back.q_norm as u64, 2);
        assert_eq!(back.qkv as u64, 5);
    }

    #[test]
    fn the_step_params_struct_is_laid_out_for_the_kernel() {
        // The kernel reads the struct from its parameter space with the same `repr(C)` layout;
        // the size must stay a multiple of 8 so both sides agree on padding.
        assert_eq!(std::mem::size_of::<StepParams>() % 8, 0);
        assert_eq!(std::mem::align_of::<StepParams>(), 8);
    }
}
