//! A virtual GPU for tests: an interpreter of the PTX that qwenmk embeds, behind a device
//! model with checked memory, deterministic scheduling and a virtual clock.
//!
//! The emulator runs the kernel's *Rust* compiled for the host; this runs the *artifact* — the
//! exact PTX text rustc's NVPTX backend produced, with its parameter layout, its inline asm and
//! its code generation — so that what a GPU would execute is checked on a machine without one.
//! [`Device`] is the whole GPU; the `qwenmk-vgpu-driver` crate puts a stand-in `libcuda.so` in
//! front of it so that unmodified CUDA host code (cudarc) drives it.
//!
//! Layers: [`ptx`] parses text, [`decode`] turns it into [`isa`] instructions (rejecting what
//! it does not implement, by PTX line), [`exec`] runs a grid over [`memory`].

pub mod decode;
pub mod exec;
pub mod isa;
pub mod memory;
pub mod ptx;
pub(crate) mod regalloc;
mod schedule;
pub mod shape;
pub mod timing;

use std::fmt;

pub use decode::Kernel;
pub use exec::{Failure, FailureKind, LaunchConfig, Options, Outcome, Stats};
use memory::GlobalMemory;

/// A loaded module: its kernels, decoded, and its source lines for reports.
#[derive(Debug, Clone)]
pub struct Program {
    pub target: String,
    pub version: (u32, u32),
    pub kernels: Vec<Kernel>,
    pub lines: Vec<String>,
    /// Device allocations holding the module's `.global` variables.
    pub globals: Vec<u64>,
}

impl Program {
    pub fn kernel(&self, name: &str) -> Option<&Kernel> {
        self.kernels.iter().find(|k| k.name == name)
    }
}

/// Why a module did not load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    Parse(ptx::ParseError),
    Decode(decode::DecodeError),
    /// The `.target` is not one this device runs.
    Target(String),
    OutOfMemory,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Parse(e) => write!(f, "{e}"),
            LoadError::Decode(e) => write!(f, "{e}"),
            LoadError::Target(t) => write!(f, "{t}"),
            LoadError::OutOfMemory => write!(f, "no device memory for the module's variables"),
        }
    }
}

impl std::error::Error for LoadError {}

/// The virtual GPU: its memory, its clock and its shape.
pub struct Device {
    pub mem: GlobalMemory,
    /// The timing model (`None`: functional only).
    pub machine: Option<timing::Machine>,
    /// Virtual nanoseconds since the device started.
    pub now_ns: u64,
    /// Compute capability (major, minor).
    pub compute_capability: (u32, u32),
}

impl Device {
    pub fn new(memory_bytes: u64, compute_capability: (u32, u32)) -> Device {
        Device {
            mem: GlobalMemory::new(memory_bytes),
            machine: None,
            now_ns: 0,
            compute_capability,
        }
    }

    /// Turns on the timing model for `sms` SMs (its L2 then carries over between launches).
    pub fn enable_timing(&mut self, params: timing::Params, sms: u32) {
        self.machine = Some(timing::Machine::new(params, sms));
    }

    /// Parses and decodes `ptx`, allocating its global variables. The module's `.target` must
    /// be one this device can run (`sm_XY` with XY ≤ its compute capability).
    pub fn load(&mut self, ptx_text: &str) -> Result<Program, LoadError> {
        let module = ptx::parse(ptx_text).map_err(LoadError::Parse)?;
        let arch = module
            .target
            .strip_prefix("sm_")
            .and_then(|v| v.trim_end_matches(['a', 'f']).parse::<u32>().ok())
            .ok_or_else(|| LoadError::Target(format!("unknown target `{}`", module.target)))?;
        let (major, minor) = self.compute_capability;
        if arch > major * 10 + minor {
            return Err(LoadError::Target(format!(
                "the module targets {} and this device has compute capability {major}.{minor}",
                module.target
            )));
        }
        let mut addresses = decode::GlobalAddresses::new();
        let mut globals = Vec::new();
        for v in module
            .variables
            .iter()
            .filter(|v| matches!(v.space, ptx::StateSpace::Global | ptx::StateSpace::Const))
        {
            let a = self
                .mem
                .alloc(v.bytes().max(1))
                .ok_or(LoadError::OutOfMemory)?;
            if let Some(init) = &v.init {
                let n = init.len().min(v.bytes() as usize);
                let _ = self.mem.write(a, &init[..n]);
            }
            addresses.insert(v.name.clone(), a);
            globals.push(a);
        }
        let kernels = decode::decode_module(&module, &addresses).map_err(LoadError::Decode)?;
        Ok(Program {
            target: module.target.clone(),
            version: module.version,
            kernels,
            lines: ptx_text.lines().map(str::to_string).collect(),
            globals,
        })
    }

    /// Runs `kernel` of `program` to completion (or failure), advancing the device clock.
    pub fn launch(
        &mut self,
        program: &Program,
        kernel: &Kernel,
        cfg: &LaunchConfig,
        params: &[u8],
        weak: Option<exec::weak::WeakOptions>,
    ) -> Result<Outcome, Failure> {
        let options = Options {
            weak,
            start_ns: self.now_ns,
        };
        let result = exec::launch(
            &mut self.mem,
            kernel,
            &program.lines,
            cfg,
            params,
            &options,
            self.machine.as_mut(),
        );
        self.now_ns = match &result {
            Ok(o) => o.end_ns,
            Err(f) => f.end_ns,
        };
        result
    }
}
