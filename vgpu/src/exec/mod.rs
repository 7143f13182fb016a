//! Running a kernel: a grid of blocks of warps of 32 lanes, scheduled deterministically.
//!
//! * **Residency.** Only `resident_blocks` blocks run at once (SMs × blocks per SM, as the
//!   occupancy of the real GPU allows); a later block starts when an earlier one exits.
//! * **Warps.** Each lane has its own program counter (Volta's independent thread scheduling).
//!   A warp runs the group of lanes at the lowest PC, so lanes that diverged meet again where
//!   their paths join; `bar.sync`, `bar.warp.sync` and `shfl.sync` check that every lane they
//!   name is there and report a divergent or malformed use instead of guessing.
//! * **Time.** Virtual: every round, each SM's warps issue up to four instructions per cycle at
//!   [`CLOCK_GHZ`]; `%globaltimer` and `nanosleep` read and wait on that clock. A warp asleep
//!   costs no interpreter time. When every live warp only sleeps and polls (nothing is written
//!   and nothing exits), the clock is fast-forwarded — reads cannot tell — so a spin bounded by
//!   a timeout reaches it quickly; a grid in which no warp can run is a deadlock report that
//!   names each warp's PTX line.
//! * **Faults** end the launch as the hardware would (illegal address, misaligned address,
//!   trap), with a report naming the PTX line, block and thread.

pub mod alu;
pub mod copies;
pub mod float;
mod grid;
mod lanes;
mod timed;
mod warp;
pub mod weak;

use std::fmt;

use crate::decode::Kernel;
use crate::memory::GlobalMemory;

/// The SM clock the virtual time assumes (an H100 SXM's boost clock, 1.755–1.98 GHz; the
/// lower figure, which sustained runs reach).
pub const CLOCK_GHZ: f64 = 1.755;
/// Warp instructions an SM issues per cycle (four schedulers).
pub const ISSUE_PER_CYCLE: u64 = 4;

/// A launch's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchConfig {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub dynamic_shared_bytes: u32,
    /// How many blocks may be resident at once.
    pub resident_blocks: u32,
    pub sms: u32,
}

impl LaunchConfig {
    pub fn blocks(&self) -> u64 {
        self.grid.iter().map(|&g| g as u64).product()
    }
    pub fn threads_per_block(&self) -> u32 {
        self.block.iter().product()
    }
}

/// How a launch runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// The weak-visibility memory model, seeded; `None` runs sequentially consistent memory.
    pub weak: Option<weak::WeakOptions>,
    /// Virtual time (ns) at the start of the launch.
    pub start_ns: u64,
}

/// What a launch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub warp_instructions: u64,
    pub global_load_bytes: u64,
    pub nc_load_bytes: u64,
    pub global_store_bytes: u64,
    pub atomics: u64,
    pub prefetch_bytes: u64,
    pub block_barriers: u64,
    pub sleeps: u64,
    /// Virtual nanoseconds skipped while every warp only polled.
    pub fast_forward_ns: u64,
    /// Weak-visibility mode: loads that returned a block-local stale copy.
    pub stale_loads: u64,
}

/// A launch that ran to the end.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Virtual time (ns) when the last block finished.
    pub end_ns: u64,
    pub stats: Stats,
    /// The timing model's figures, when the launch was timed.
    pub timing: Option<crate::timing::Report>,
}

/// Why a launch failed, as the CUDA driver would classify it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// CUDA_ERROR_ILLEGAL_ADDRESS (700).
    IllegalAddress,
    /// CUDA_ERROR_MISALIGNED_ADDRESS (716).
    Misaligned,
    /// CUDA_ERROR_LAUNCH_FAILED (719): `trap`, or a use of a warp-level instruction the
    /// hardware leaves undefined (divergent `bar.sync`, a shuffle mask naming absent lanes).
    LaunchFailed,
    /// CUDA_ERROR_LAUNCH_TIMEOUT (702): no warp can make progress.
    Deadlock,
    /// CUDA_ERROR_INVALID_VALUE (1): a launch the driver refuses before running it.
    InvalidLaunch,
}

/// A failed launch and the report that explains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub report: String,
    pub end_ns: u64,
    pub stats: Stats,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.report)
    }
}

/// Runs `kernel` over `mem`. `params` is the kernel's parameter space (its `.param` bytes);
/// `lines` are the PTX source lines, for reports.
pub fn launch(
    mem: &mut GlobalMemory,
    kernel: &Kernel,
    lines: &[String],
    cfg: &LaunchConfig,
    params: &[u8],
    options: &Options,
    machine: Option<&mut crate::timing::Machine>,
) -> Result<Outcome, Failure> {
    grid::Grid::new(mem, kernel, lines, cfg, params, options, machine)?.run()
}
