//! The only file that talks to the CUDA driver about kernels: loading the embedded PTX,
//! reading the decode-step kernel's attributes, sizing the persistent grid from the occupancy
//! API, and launching. Everything here returns `Result`s with sentences; the engine above is
//! safe code.

use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use cudarc::driver::sys::CUfunction_attribute as FnAttr;
use cudarc::driver::sys::{CUevent_flags, cudaError_enum};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaStream, DeviceRepr, LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::Ptx;
use qwenmk_kernels::step::StepParams;

use crate::ptx::PtxModule;

/// The step's parameters as a kernel argument (passed by value, like the PTX declares).
#[repr(transparent)]
struct StepArg(StepParams);

// SAFETY: `StepParams` is `repr(C)` plain data whose pointers hold device addresses; the
// kernel's parameter has the same layout (both sides are compiled from one definition).
unsafe impl DeviceRepr for StepArg {}

/// What the driver says about the compiled decode-step kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct KernelAttributes {
    pub registers: u32,
    pub local_bytes_per_thread: u32,
    pub static_shared_bytes: u32,
    pub max_threads_per_block: u32,
}

/// The decode-step kernel, loaded on one GPU.
pub struct StepKernel {
    function: CudaFunction,
    stream: Arc<CudaStream>,
}

impl StepKernel {
    /// Loads one embedded PTX module (the driver compiles it for this GPU) and finds the
    /// kernel.
    pub fn load(ctx: &Arc<CudaContext>, ptx: &PtxModule) -> Result<Self> {
        let module = ctx.load_module(Ptx::from_src(ptx.ptx)).with_context(|| {
            let isa = ptx.isa_version().unwrap_or("?");
            let driver = ptx
                .min_cuda_release()
                .map(|r| format!("; a driver for CUDA {r} or newer is needed"))
                .unwrap_or_default();
            format!(
                "the CUDA driver could not load the kernels' {} PTX (ISA {isa}){driver}",
                ptx.arch
            )
        })?;
        let function = module
            .load_function(qwenmk_kernels::kernel_names::DECODE_STEP)
            .context("the decode-step kernel is missing from the loaded PTX module")?;
        Ok(StepKernel {
            function,
            stream: ctx.default_stream(),
        })
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    pub fn attributes(&self) -> Result<KernelAttributes> {
        let get = |a: FnAttr| -> Result<u32> {
            Ok(self
                .function
                .get_attribute(a)
                .context("reading a kernel attribute")?
                .max(0) as u32)
        };
        Ok(KernelAttributes {
            registers: get(FnAttr::CU_FUNC_ATTRIBUTE_NUM_REGS)?,
            local_bytes_per_thread: get(FnAttr::CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES)?,
            static_shared_bytes: get(FnAttr::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES)?,
            max_threads_per_block: get(FnAttr::CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK)?,
        })
    }

    /// Allows `shared_bytes` of dynamic shared memory per block (above 48 KiB needs opting in)
    /// and returns how many blocks of `block` threads fit on one SM at once.
    pub fn resident_blocks_per_sm(&self, block: u32, shared_bytes: usize) -> Result<u32> {
        self.function
            .set_attribute(
                FnAttr::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                shared_bytes as i32,
            )
            .with_context(|| {
                format!("the GPU refused {shared_bytes} bytes of shared memory per block")
            })?;
        self.function
            .occupancy_max_active_blocks_per_multiprocessor(block, shared_bytes, None)
            .context("the occupancy query failed")
    }

    /// Launches one decode step on the stream (asynchronously), cooperatively: the driver
    /// refuses a grid whose blocks cannot all be resident at once, which the kernel's grid
    /// barriers need, instead of the kernel timing out.
    pub fn launch(
        &self,
        params: StepParams,
        grid: u32,
        block: u32,
        shared_bytes: usize,
    ) -> Result<()> {
        if block > 1024 || grid == 0 {
            bail!("an invalid launch of {grid} blocks of {block} threads");
        }
        let arg = StepArg(params);
        let config = LaunchConfig {
            grid_dim: (grid, 1, 1),
            block_dim: (block, 1, 1),
            shared_mem_bytes: shared_bytes as u32,
        };
        let mut launch = self.stream.launch_builder(&self.function);
        launch.arg(&arg);
        // SAFETY: every pointer in `params` is a live device allocation sized by the step plan
        // (the engine owns them for its lifetime), and the grid is no larger than the number of
        // blocks the occupancy API says can be resident, as the kernel's barriers require (a
        // cooperative launch makes the driver check it).
        unsafe { launch.launch_cooperative(config) }.map_err(|e| {
            if e.0 == cudaError_enum::CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE {
                anyhow!(
                    "the GPU cannot run all {grid} blocks of the decode step at once, though its \
                     occupancy query said it could (another program may hold part of the GPU); \
                     {e}"
                )
            } else {
                anyhow!(e).context("launching the decode step failed")
            }
        })?;
        Ok(())
    }

    /// Launches `steps` decode steps back to back, with no host work between them (each step
    /// reads its token and position from the control block the previous one wrote), between
    /// two CUDA events on the stream, waits for the second, and returns the GPU time between
    /// them in seconds. This is what `qwenmk bench` times.
    pub fn launch_timed(
        &self,
        params: StepParams,
        grid: u32,
        block: u32,
        shared_bytes: usize,
        steps: usize,
    ) -> Result<f64> {
        // CU_EVENT_DEFAULT: timing enabled (the default cudarc flag disables it).
        let timing = Some(CUevent_flags::CU_EVENT_DEFAULT);
        let start = self
            .stream
            .record_event(timing)
            .context("recording the start event")?;
        for _ in 0..steps {
            self.launch(params, grid, block, shared_bytes)?;
        }
        let end = self
            .stream
            .record_event(timing)
            .context("recording the end event")?;
        end.synchronize()
            .context("the timed decode steps failed on the GPU")?;
        let ms = start
            .elapsed_ms(&end)
            .context("reading the time between the CUDA events")?;
        Ok(f64::from(ms) / 1e3)
    }
}

/// Loads the kernels of `ptx` on GPU `ordinal` and reports the decode step's attributes and
/// how many blocks of `block` threads with `shared_bytes` of dynamic shared memory fit on one
/// SM.
pub fn inspect_decode_step(
    ordinal: usize,
    ptx: &PtxModule,
    block: u32,
    shared_bytes: usize,
) -> Result<(KernelAttributes, u32)> {
    let ctx = CudaContext::new(ordinal).context("creating a CUDA context")?;
    let kernel = StepKernel::load(&ctx, ptx)?;
    Ok((
        kernel.attributes()?,
        kernel.resident_blocks_per_sm(block, shared_bytes)?,
    ))
}
