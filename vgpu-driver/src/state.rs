//! The driver's state behind the C API: one virtual device, its primary context, modules,
//! functions, streams and events, and the sticky error a faulted launch leaves.
//!
//! Work is executed when it is submitted (streams are in-order, so running a launch or a copy
//! at once is one of the orders the real driver may choose); a kernel fault is reported like
//! the real driver reports it — as the error of the *next* call, sticky for the context.

use std::collections::HashMap;

use qwenmk_vgpu::exec::weak::WeakOptions;
use qwenmk_vgpu::shape::Shape;
use qwenmk_vgpu::{Device, FailureKind, LaunchConfig, Program};

use crate::config::{Config, Fault};
use crate::ptxas;

/// CUresult codes (the CUDA driver API's `cudaError_enum`).
pub mod code {
    pub const SUCCESS: u32 = 0;
    pub const INVALID_VALUE: u32 = 1;
    pub const OUT_OF_MEMORY: u32 = 2;
    pub const NOT_INITIALIZED: u32 = 3;
    pub const INVALID_DEVICE: u32 = 101;
    pub const INVALID_IMAGE: u32 = 200;
    pub const INVALID_CONTEXT: u32 = 201;
    pub const NO_BINARY_FOR_GPU: u32 = 209;
    pub const INVALID_PTX: u32 = 218;
    pub const UNSUPPORTED_PTX_VERSION: u32 = 222;
    pub const INVALID_HANDLE: u32 = 400;
    pub const NOT_FOUND: u32 = 500;
    pub const ILLEGAL_ADDRESS: u32 = 700;
    pub const LAUNCH_OUT_OF_RESOURCES: u32 = 701;
    pub const LAUNCH_TIMEOUT: u32 = 702;
    pub const MISALIGNED_ADDRESS: u32 = 716;
    pub const LAUNCH_FAILED: u32 = 719;
    pub const COOPERATIVE_LAUNCH_TOO_LARGE: u32 = 720;
    pub const NOT_SUPPORTED: u32 = 801;
}

/// What `cuGetErrorName` / `cuGetErrorString` say for a code (NUL-terminated).
pub fn describe(code: u32) -> Option<(&'static str, &'static str)> {
    Some(match code {
        0 => ("CUDA_SUCCESS\0", "no error\0"),
        1 => ("CUDA_ERROR_INVALID_VALUE\0", "invalid argument\0"),
        2 => ("CUDA_ERROR_OUT_OF_MEMORY\0", "out of memory\0"),
        3 => ("CUDA_ERROR_NOT_INITIALIZED\0", "initialization error\0"),
        101 => ("CUDA_ERROR_INVALID_DEVICE\0", "invalid device ordinal\0"),
        200 => (
            "CUDA_ERROR_INVALID_IMAGE\0",
            "device kernel image is invalid\0",
        ),
        201 => ("CUDA_ERROR_INVALID_CONTEXT\0", "invalid device context\0"),
        209 => (
            "CUDA_ERROR_NO_BINARY_FOR_GPU\0",
            "no kernel image is available for execution on the device\0",
        ),
        218 => ("CUDA_ERROR_INVALID_PTX\0", "a PTX JIT compilation failed\0"),
        222 => (
            "CUDA_ERROR_UNSUPPORTED_PTX_VERSION\0",
            "the provided PTX was compiled with an unsupported toolchain.\0",
        ),
        400 => ("CUDA_ERROR_INVALID_HANDLE\0", "invalid resource handle\0"),
        500 => ("CUDA_ERROR_NOT_FOUND\0", "named symbol not found\0"),
        600 => ("CUDA_ERROR_NOT_READY\0", "device not ready\0"),
        700 => (
            "CUDA_ERROR_ILLEGAL_ADDRESS\0",
            "an illegal memory access was encountered\0",
        ),
        701 => (
            "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES\0",
            "too many resources requested for launch\0",
        ),
        702 => (
            "CUDA_ERROR_LAUNCH_TIMEOUT\0",
            "the launch timed out and was terminated\0",
        ),
        716 => ("CUDA_ERROR_MISALIGNED_ADDRESS\0", "misaligned address\0"),
        719 => ("CUDA_ERROR_LAUNCH_FAILED\0", "unspecified launch failure\0"),
        720 => (
            "CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE\0",
            "too many blocks in cooperative launch\0",
        ),
        801 => ("CUDA_ERROR_NOT_SUPPORTED\0", "operation not supported\0"),
        _ => return None,
    })
}

/// The device name: nobody should take it for hardware.
pub const DEVICE_NAME: &str = "qwenmk virtual GPU (PTX interpreter)";
/// The device name with the timing model on: its times are a simulated H100's.
pub const DEVICE_NAME_TIMED: &str = "qwenmk virtual GPU (PTX interpreter, simulated H100 timing)";

pub struct Function {
    pub module: usize,
    pub kernel: usize,
    pub registers: u32,
    /// `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES`.
    pub max_dynamic_shared: u32,
}

#[derive(Clone, Copy)]
pub struct Event {
    pub timing: bool,
    /// Virtual nanoseconds at the last record.
    pub recorded: Option<u64>,
}

pub struct Driver {
    pub config: Config,
    pub shape: Shape,
    pub device: Device,
    pub initialised: bool,
    pub context_refs: u32,
    pub current_context: bool,
    pub modules: Vec<Option<Program>>,
    pub functions: Vec<Function>,
    pub events: HashMap<usize, Event>,
    pub next_handle: usize,
    pub streams: Vec<usize>,
    /// A faulted launch's error: every later call returns it.
    pub sticky: Option<u32>,
    pub allocations: u32,
    /// The timing model's reports of the launches since the profile was last read.
    pub profile: Vec<qwenmk_vgpu::timing::Report>,
}

/// Fake non-null handle values for the context (there is one).
pub const CONTEXT_HANDLE: usize = 0xC0_0000;

impl Driver {
    pub fn new() -> Driver {
        let config = Config::from_env();
        let shape = Shape::for_capability(config.compute_capability);
        let mut device = Device::new(config.memory_bytes, config.compute_capability);
        if config.timing {
            device.enable_timing(qwenmk_vgpu::timing::H100_SXM, config.sms);
        }
        Driver {
            device,
            shape,
            config,
            initialised: false,
            context_refs: 0,
            current_context: false,
            modules: Vec::new(),
            functions: Vec::new(),
            events: HashMap::new(),
            next_handle: 0x100,
            streams: Vec::new(),
            sticky: None,
            allocations: 0,
            profile: Vec::new(),
        }
    }

    pub fn name(&self) -> &'static str {
        if self.config.timing {
            DEVICE_NAME_TIMED
        } else {
            DEVICE_NAME
        }
    }

    /// The profile of the timed launches since the last call, as JSON (and forgets them).
    pub fn take_profile(&mut self) -> String {
        let launches: Vec<String> = self
            .profile
            .drain(..)
            .map(|r| {
                let c = &r.counters;
                let marks: Vec<String> =
                    r.marks.iter().map(|(b, t)| format!("[{b},{t}]")).collect();
                let bins: Vec<String> = c.hbm_bins.iter().map(|b| format!("{b:.1}")).collect();
                format!(
                    "{{\"cycles\":{},\"hbm_bytes\":{},\"hbm_busy_cycles\":{:.1},\
                     \"l2_hit_bytes\":{},\"l2_far_hit_bytes\":{},\"l1_hit_bytes\":{},\
                     \"shared_bytes\":{},\"store_bytes\":{},\"prefetch_bytes\":{},\
                     \"atomics\":{},\"issued\":{},\"marks\":[{}],\"hbm_bins\":[{}]}}",
                    r.cycles,
                    c.hbm_bytes,
                    c.hbm_busy_cycles,
                    c.l2_hit_bytes,
                    c.l2_far_hit_bytes,
                    c.l1_hit_bytes,
                    c.shared_bytes,
                    c.store_bytes,
                    c.prefetch_bytes,
                    c.atomics,
                    c.issued,
                    marks.join(","),
                    bins.join(",")
                )
            })
            .collect();
        let p = qwenmk_vgpu::timing::H100_SXM;
        format!(
            "{{\"model\":\"{}\",\"clock_ghz\":{},\"hbm_bytes_per_s\":{},\"sms\":{},\
             \"hbm_bin_cycles\":{},\"launches\":[{}]}}",
            qwenmk_vgpu::timing::MODEL_VERSION,
            p.clock_ghz,
            p.hbm_bytes_per_s,
            self.config.sms,
            qwenmk_vgpu::timing::HBM_BIN_CYCLES,
            launches.join(",")
        )
    }

    pub fn trace(&self, what: &str) {
        if self.config.trace {
            eprintln!("qwenmk virtual GPU: {what}");
        }
    }

    pub fn handle(&mut self) -> usize {
        self.next_handle += 16;
        self.next_handle
    }

    /// Device attribute values (`CUdevice_attribute`); 0 for ones the device does not model.
    pub fn attribute(&self, attribute: i32) -> i32 {
        let s = &self.shape;
        let v = match attribute {
            1 => s.max_threads_per_block,       // MAX_THREADS_PER_BLOCK
            2 | 3 => 1024,                      // MAX_BLOCK_DIM_X, _Y
            4 => 64,                            // MAX_BLOCK_DIM_Z
            5 => i32::MAX as u32,               // MAX_GRID_DIM_X
            6 | 7 => 65_535,                    // MAX_GRID_DIM_Y, _Z
            8 => s.shared_default_per_block,    // MAX_SHARED_MEMORY_PER_BLOCK
            9 => 65_536,                        // TOTAL_CONSTANT_MEMORY
            10 => 32,                           // WARP_SIZE
            12 => s.registers_per_sm,           // MAX_REGISTERS_PER_BLOCK
            13 => s.clock_khz,                  // CLOCK_RATE
            16 => self.config.sms,              // MULTIPROCESSOR_COUNT
            36 => s.memory_clock_khz,           // MEMORY_CLOCK_RATE
            37 => s.memory_bus_bits,            // GLOBAL_MEMORY_BUS_WIDTH
            38 => s.l2_bytes,                   // L2_CACHE_SIZE
            39 => s.max_threads_per_sm,         // MAX_THREADS_PER_MULTIPROCESSOR
            41 => 1,                            // UNIFIED_ADDRESSING
            75 => s.compute_capability.0,       // COMPUTE_CAPABILITY_MAJOR
            76 => s.compute_capability.1,       // COMPUTE_CAPABILITY_MINOR
            81 => s.shared_per_sm,              // MAX_SHARED_MEMORY_PER_MULTIPROCESSOR
            82 => s.registers_per_sm,           // MAX_REGISTERS_PER_MULTIPROCESSOR
            95 => 1,                            // COOPERATIVE_LAUNCH
            97 => s.shared_optin_per_block,     // MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
            106 => s.max_blocks_per_sm,         // MAX_BLOCKS_PER_MULTIPROCESSOR
            111 => s.reserved_shared_per_block, // RESERVED_SHARED_MEMORY_PER_BLOCK
            // MEMORY_POOLS_SUPPORTED: no, so cudarc allocates with cuMemAlloc.
            115 => 0,
            _ => 0,
        };
        v as i32
    }

    /// Loads a PTX image; the kernels' register counts come from ptxas when it is found.
    pub fn load_module(&mut self, image: &[u8]) -> Result<usize, u32> {
        let Ok(text) = std::str::from_utf8(image) else {
            eprintln!(
                "qwenmk virtual GPU: the module image is not PTX text (cubins and fatbins are \
                 not supported)"
            );
            return Err(code::INVALID_IMAGE);
        };
        if !text.contains(".target") {
            eprintln!("qwenmk virtual GPU: the module image is not PTX text (no .target)");
            return Err(code::INVALID_IMAGE);
        }
        let program = match self.device.load(text) {
            Ok(p) => p,
            Err(qwenmk_vgpu::LoadError::Target(why)) => {
                eprintln!("qwenmk virtual GPU: {why}");
                return Err(code::NO_BINARY_FOR_GPU);
            }
            Err(e) => {
                eprintln!("qwenmk virtual GPU: the PTX does not load: {e}");
                return Err(code::INVALID_PTX);
            }
        };
        // The driver of CUDA 13.0 (driver 580) JIT-compiles PTX up to ISA 9.0.
        if program.version > (9, 0) {
            eprintln!(
                "qwenmk virtual GPU: PTX ISA {}.{} is newer than the 9.0 this driver accepts",
                program.version.0, program.version.1
            );
            return Err(code::UNSUPPORTED_PTX_VERSION);
        }
        let registers = ptxas::register_counts(text, &program.target);
        let module = self.modules.len();
        for (k, kernel) in program.kernels.iter().enumerate() {
            if !kernel.is_entry {
                continue;
            }
            let regs = registers
                .as_ref()
                .and_then(|r| r.get(&kernel.name).copied())
                .unwrap_or(self.config.fallback_registers);
            self.functions.push(Function {
                module,
                kernel: k,
                registers: regs,
                max_dynamic_shared: self.shape.shared_default_per_block
                    - kernel
                        .static_shared_bytes
                        .min(self.shape.shared_default_per_block),
            });
        }
        if registers.is_none() {
            self.trace(&format!(
                "ptxas was not found (set PTXAS): assuming {} registers per thread",
                self.config.fallback_registers
            ));
        }
        self.modules.push(Some(program));
        Ok(module)
    }

    pub fn program(&self, f: &Function) -> Option<&Program> {
        self.modules.get(f.module)?.as_ref()
    }

    /// Blocks per SM of function `f`, as the occupancy API reports it (with the `occupancy`
    /// fault, twice the truth).
    pub fn occupancy(&self, f: usize, threads: u32, dynamic_shared: u32) -> Result<u32, u32> {
        let func = self.functions.get(f).ok_or(code::INVALID_HANDLE)?;
        let program = self.program(func).ok_or(code::INVALID_HANDLE)?;
        let kernel = &program.kernels[func.kernel];
        if dynamic_shared > func.max_dynamic_shared {
            return Ok(0);
        }
        let blocks = self.shape.blocks_per_sm(
            func.registers,
            threads,
            kernel.static_shared_bytes + dynamic_shared,
        );
        Ok(if self.config.fault == Some(Fault::Occupancy) {
            blocks * 2
        } else {
            blocks
        })
    }

    /// Runs a launch. `params` is the kernel's parameter space.
    #[allow(clippy::too_many_arguments)]
    pub fn launch(
        &mut self,
        f: usize,
        grid: [u32; 3],
        block: [u32; 3],
        dynamic_shared: u32,
        params: &[u8],
        cooperative: bool,
    ) -> u32 {
        if self.config.fault == Some(Fault::Launch) {
            self.trace("injected launch failure");
            return code::LAUNCH_FAILED;
        }
        let Some(func) = self.functions.get(f) else {
            return code::INVALID_HANDLE;
        };
        let Some(program) = self.modules.get(func.module).and_then(|m| m.as_ref()) else {
            return code::INVALID_HANDLE;
        };
        let kernel = &program.kernels[func.kernel];
        let threads: u32 = block.iter().product();
        if threads == 0 || grid.contains(&0) || block[2] > 64 {
            return code::INVALID_VALUE;
        }
        if threads > self.shape.max_threads_per_block_for(func.registers) {
            eprintln!(
                "qwenmk virtual GPU: {threads} threads per block are more than `{}` can launch \
                 with {} registers per thread",
                kernel.name, func.registers
            );
            return code::LAUNCH_OUT_OF_RESOURCES;
        }
        if dynamic_shared > func.max_dynamic_shared {
            eprintln!(
                "qwenmk virtual GPU: {dynamic_shared} bytes of dynamic shared memory are more than \
                 the {} `{}` allows (raise CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES)",
                func.max_dynamic_shared, kernel.name
            );
            return code::INVALID_VALUE;
        }
        let per_sm = self.shape.blocks_per_sm(
            func.registers,
            threads,
            kernel.static_shared_bytes + dynamic_shared,
        );
        let resident = per_sm * self.config.sms;
        let blocks: u64 = grid.iter().map(|&g| g as u64).product();
        if cooperative && blocks > resident as u64 {
            eprintln!(
                "qwenmk virtual GPU: a cooperative launch of {blocks} blocks, but only {resident} \
                 can be resident at once ({per_sm} per SM × {} SMs)",
                self.config.sms
            );
            return code::COOPERATIVE_LAUNCH_TOO_LARGE;
        }
        let resident = if self.config.fault == Some(Fault::Residency) {
            (resident / 2).max(1)
        } else {
            resident
        };
        let cfg = LaunchConfig {
            grid,
            block,
            dynamic_shared_bytes: dynamic_shared,
            resident_blocks: resident.max(1),
            sms: self.config.sms,
        };
        let weak = self.config.weak.then_some(WeakOptions {
            seed: self.config.seed,
            ..WeakOptions::default()
        });
        self.trace(&format!(
            "launch `{}` grid {grid:?} block {block:?} shared {dynamic_shared} ({resident} \
             resident{})",
            kernel.name,
            if weak.is_some() {
                ", weak visibility"
            } else {
                ""
            }
        ));
        let (module, index) = (func.module, func.kernel);
        let Some(program) = self.modules[module].as_ref() else {
            return code::INVALID_HANDLE;
        };
        let kernel = &program.kernels[index];
        match self.device.launch(program, kernel, &cfg, params, weak) {
            Ok(outcome) => {
                if let Some(report) = outcome.timing.clone() {
                    // Bounded: a program that never reads the profile keeps the last 4,096.
                    if self.profile.len() >= 4096 {
                        self.profile.remove(0);
                    }
                    self.profile.push(report);
                }
                if self.config.trace {
                    eprintln!(
                        "qwenmk virtual GPU: `{}` finished: {} warp instructions, virtual time \
                         {} ns",
                        kernel.name, outcome.stats.warp_instructions, self.device.now_ns
                    );
                }
                code::SUCCESS
            }
            Err(failure) => {
                eprintln!("qwenmk virtual GPU: {}", failure.report);
                let c = match failure.kind {
                    FailureKind::IllegalAddress => code::ILLEGAL_ADDRESS,
                    FailureKind::Misaligned => code::MISALIGNED_ADDRESS,
                    FailureKind::LaunchFailed => code::LAUNCH_FAILED,
                    FailureKind::Deadlock => code::LAUNCH_TIMEOUT,
                    FailureKind::InvalidLaunch => return code::INVALID_VALUE,
                };
                // Asynchronous, like a real kernel fault: the launch call succeeds and the
                // context is broken from here on.
                self.sticky = Some(c);
                code::SUCCESS
            }
        }
    }
}
