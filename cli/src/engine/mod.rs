//! The three engines behind one interface: `gpu` (the megakernel on CUDA), `emulator` (the same
//! kernel source run on CPU threads) and `cpu` (a plain Rust Qwen3, the oracle).

pub mod cpu;
pub mod emulator;
pub mod gpu;
pub mod kv;
pub mod plan;
pub mod sampling;

use std::sync::Arc;

use anyhow::{Result, anyhow, bail};
use qwenmk_weights::PackedModel;

use gpu::{GpuInfo, GpuUnavailable};
pub use kv::KvDtype;
pub use sampling::Sampling;

/// Which engine runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// The GPU when one is usable, else the CPU (with a notice).
    Auto,
    /// The megakernel on a CUDA GPU.
    Gpu,
    /// A plain Rust implementation on all CPU cores.
    Cpu,
    /// The megakernel's source run on CPU threads (slow; for checking the kernel).
    Emulator,
}

/// Whether the token a step chooses will be used. Prompt tokens before the last are fed with
/// [`Next::Unused`]: engines then skip the sampler (and its penalty), only recording the input
/// for a later penalty window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Wanted,
    Unused,
}

/// A decoder that holds one sequence's KV cache and advances it one token at a time.
///
/// Every engine produces the same token ids for the same packed weights, prompt and
/// [`Sampling`]: greedy by default, ties broken toward the lowest token id (as `torch.argmax`
/// does); sampled draws keyed by (seed, position, token id), so the same seed gives the same
/// tokens on every engine and in every run.
pub trait Engine {
    /// Short name shown to users: `cpu`, `emulator` or `gpu`.
    fn name(&self) -> &'static str;
    /// How many positions (prompt + generated tokens) the KV cache holds.
    fn max_context(&self) -> usize;
    /// How many tokens are already in the KV cache (the position the next token goes to).
    fn position(&self) -> usize;
    /// The element type the KV cache holds keys and values in.
    fn kv_cache(&self) -> KvDtype;
    /// How the steps from now on choose their token.
    fn set_sampling(&mut self, sampling: &Sampling) -> Result<()>;
    /// Appends `token` at [`Engine::position`] and returns the token chosen to follow it.
    /// Fails, without changing state, when the cache is full.
    fn feed(&mut self, token: u32, next: Next) -> Result<u32>;
    /// Forgets the positions from `position` on: the next token goes to `position`, and what
    /// came before stays in the cache (a chat's `/clear`, `qwenmk bench`'s repetitions).
    fn truncate(&mut self, position: usize) -> Result<()>;
    /// [`Engine::feed`] of a token whose successor is wanted.
    fn step(&mut self, token: u32) -> Result<u32> {
        self.feed(token, Next::Wanted)
    }
    /// Feeds a whole prompt and returns the token chosen to follow it. By default one decode
    /// step per token (the gpu and emulator engines); the cpu engine runs the prompt through
    /// each layer in batched passes instead, with the same result to float32 rounding.
    fn prefill(&mut self, tokens: &[u32]) -> Result<u32> {
        let Some((&last, rest)) = tokens.split_last() else {
            bail!("the prompt is empty: give at least one token");
        };
        for &t in rest {
            self.feed(t, Next::Unused)?;
        }
        self.feed(last, Next::Wanted)
    }
}

/// Fails, with the sentence every engine uses, when the KV cache has no room for another token.
pub fn ensure_room(position: usize, max_context: usize, model_max: usize) -> Result<()> {
    if position >= max_context {
        bail!(
            "the context is full at {position} tokens; raise --max-context (the model allows up \
             to {model_max})"
        );
    }
    Ok(())
}

/// Fails when an engine holding `held` positions is asked to truncate to `position`: only
/// going back is possible.
pub fn ensure_can_truncate(position: usize, held: usize) -> Result<()> {
    if position > held {
        bail!("cannot truncate to position {position}: the cache holds {held} positions");
    }
    Ok(())
}

/// How many positions the KV cache should hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextSize {
    pub positions: usize,
    /// `--max-context` was given. When it was not, the gpu engine may allocate fewer
    /// positions than `positions` (what fits in free memory) and says so.
    pub explicit: bool,
}

/// Opens the engine `device` names over `model`, with a KV cache of `context` positions (the
/// engine's [`Engine::max_context`] tells what it got) of `kv` values, or of the engine's
/// default type ([`kv::default_for`]: BF16 on the gpu engine, f32 on the others).
///
/// `auto` takes the GPU when [`gpu::probe`] finds one that can run the kernels and the gpu
/// engine starts on it; otherwise it says why in one line through `notice` and opens the cpu
/// engine. An explicit `gpu` never falls back: its failure is the error.
pub fn open_engine(
    device: Device,
    model: Arc<PackedModel>,
    context: ContextSize,
    kv: Option<KvDtype>,
    notice: &mut dyn FnMut(&str),
) -> Result<Box<dyn Engine>> {
    let max_context = context.positions;
    let cpu = |model| -> Result<Box<dyn Engine>> {
        let kv = kv.unwrap_or(kv::default_for(Device::Cpu));
        Ok(Box::new(
            cpu::CpuEngine::new(model, max_context)?.with_kv_cache(kv),
        ))
    };
    match device {
        Device::Cpu => cpu(model),
        Device::Emulator => Ok(Box::new(emulator::EmulatorEngine::with_kv_cache(
            model,
            max_context,
            kv.unwrap_or(kv::default_for(Device::Emulator)),
        )?)),
        Device::Gpu => {
            let requested = context.explicit.then_some(max_context);
            let kv = kv.unwrap_or(kv::default_for(Device::Gpu));
            Ok(Box::new(gpu::GpuEngine::new(model, requested, kv, notice)?))
        }
        Device::Auto => {
            let why = match gpu::probe(0) {
                Err(GpuUnavailable::NoDriver) => "no CUDA driver was found".to_owned(),
                Err(GpuUnavailable::NoDevice(why)) => why,
                Ok(info) if !info.can_run_kernels() => info.too_old(),
                Ok(info) if info.is_virtual() => virtual_notice(&info),
                Ok(info) => match open_engine(Device::Gpu, model.clone(), context, kv, notice) {
                    Ok(engine) => return Ok(engine),
                    Err(error) => {
                        notice(&format!("{error:#} (on {}); running on the CPU", info.name));
                        return cpu(model);
                    }
                },
            };
            notice(&format!("no usable GPU ({why}); running on the CPU"));
            cpu(model)
        }
    }
}

/// The checks of `device` that need no weights, so that `generate` fails before it packs or
/// loads them: `gpu` needs a CUDA driver and a GPU that can run the kernels.
pub fn check_device(device: Device) -> Result<()> {
    if device == Device::Gpu {
        let info = gpu::probe(0).map_err(|why| anyhow!("--device gpu: {why}"))?;
        if !info.can_run_kernels() {
            bail!("--device gpu: {}; use --device cpu", info.too_old());
        }
    }
    Ok(())
}

/// Why `auto` passes over the virtual GPU: it checks the kernel, it is not for use.
pub fn virtual_notice(info: &GpuInfo) -> String {
    format!(
        "the GPU is the {} (a test tool, far slower than the CPU; --device gpu uses it)",
        info.name
    )
}
