//! Microbenchmarks of the memory system and synchronisation, compiled like the decode step and
//! embedded beside it: the virtual GPU's timing model is calibrated with them against published
//! H100 figures (`cargo xtask calibrate`), and the same PTX can measure a real GPU.
//!
//! * [`chase`]: one thread follows a chain of indices (each load's address is the previous
//!   load's value) — the latency of whatever level of the hierarchy holds the chain.
//! * [`stream`]: every warp of the grid reads its slice of a large array with `K` independent
//!   16-byte loads per lane in flight — bandwidth against bytes in flight.
//! * [`ping_pong`]: two blocks hand a counter back and forth with compare-and-swap — the round
//!   trip of a global atomic.
//! * [`barriers`]: the whole grid passes the decode step's own grid barrier repeatedly.
//! * [`shared_read`]: every warp reads shared memory — the SM's shared-memory bandwidth.
//!
//! Each writes what it measured (cycles from `%clock64`) to `out`; every wait is bounded.

use crate::device;
use crate::step::StepControl;
use crate::step::sync::{GridSync, Stage};

/// Parameters of the probes (one layout for all; each uses what it needs).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProbeParams {
    /// [`chase`]: the chain (`next[i]` is the index after `i`); [`stream`]: the array.
    pub data: *const u32,
    /// [`stream`]: bytes of `data` the grid reads (a multiple of the grid's warps × K × 512).
    pub bytes: u64,
    /// [`chase`]: steps of the warm-up pass, then of the timed pass.
    pub warm_steps: u32,
    pub steps: u32,
    /// [`chase`]: the first index; [`ping_pong`], [`barriers`], [`shared_read`]: repetitions.
    pub start: u32,
    pub iterations: u32,
    /// [`ping_pong`]: the counter; [`barriers`]: the control block's barrier words.
    pub counter: *mut u32,
    pub control: *mut StepControl,
    /// Results: cycles (and values that keep the loads alive).
    pub out: *mut u64,
}

// SAFETY: plain data; the pointers name device memory the launch owns.
unsafe impl Send for ProbeParams {}
// SAFETY: as above; kernels only read it.
unsafe impl Sync for ProbeParams {}

/// How long a probe's wait may spin, in `%globaltimer` nanoseconds (far above any handoff).
const SPIN_LIMIT_NS: u64 = 1_000_000_000;

/// Pointer chase by thread 0 of block 0: `warm_steps` untimed, then `steps` timed.
/// `out[0]` = cycles of the timed steps, `out[1]` = the last index (keeps the chain alive).
///
/// # Safety
/// `data` must hold a chain of indices inside itself; `out` two u64s.
#[inline(always)]
pub unsafe fn chase(p: &ProbeParams) {
    if device::block_idx() != 0 || device::thread_idx() != 0 {
        return;
    }
    let mut i = p.start;
    let mut step = 0;
    while step < p.warm_steps {
        // SAFETY: the chain stays inside `data`.
        i = unsafe { p.data.add(i as usize).read() };
        step += 1;
    }
    let t0 = device::clock_cycles();
    step = 0;
    while step < p.steps {
        // SAFETY: as above.
        i = unsafe { p.data.add(i as usize).read() };
        step += 1;
    }
    let t1 = device::clock_cycles();
    // SAFETY: `out` holds two values.
    unsafe {
        p.out.write(t1.wrapping_sub(t0));
        p.out.add(1).write(i as u64);
    }
}

/// Streams `bytes` of `data` through every warp of the grid, `K` 16-byte loads in flight per
/// lane. `out[block]` = the block's cycles (thread 0), `out[grid + block]` = a checksum that
/// keeps the loads alive.
///
/// # Safety
/// `data` must hold `bytes` (16-byte aligned); `out` two u64s per block.
#[inline(always)]
pub unsafe fn stream<const K: usize>(p: &ProbeParams) {
    let warps = device::grid_dim() * device::warps_per_block();
    let warp = device::block_idx() * device::warps_per_block() + device::warp_id();
    let lane = device::lane_id();
    let per_pass = K as u64 * 512;
    let passes = p.bytes / (warps as u64 * per_pass);
    let base = p.data.cast::<[u32; 4]>();
    let t0 = device::clock_cycles();
    let mut sum = 0u32;
    let mut pass = 0u64;
    while pass < passes {
        // Consecutive warps read consecutive chunks of each pass: the grid sweeps the array.
        let chunk = (pass * warps as u64 + warp as u64) * K as u64 * 32;
        let mut v = [[0u32; 4]; K];
        let mut k = 0;
        while k < K {
            let at = chunk + k as u64 * 32 + lane as u64;
            // SAFETY: inside `bytes` by the pass count above.
            v[k] = unsafe { device::load_global_nc_v4(base.add(at as usize)) };
            k += 1;
        }
        let mut k = 0;
        while k < K {
            sum ^= v[k][0] ^ v[k][1] ^ v[k][2] ^ v[k][3];
            k += 1;
        }
        pass += 1;
    }
    device::sync_threads();
    let t1 = device::clock_cycles();
    if device::thread_idx() == 0 {
        let b = device::block_idx() as usize;
        // SAFETY: two values per block.
        unsafe {
            p.out.add(b).write(t1.wrapping_sub(t0));
            p.out.add(device::grid_dim() as usize + b).write(sum as u64);
        }
    }
}

/// Blocks 0 and 1 (thread 0 of each) hand `counter` back and forth `iterations` times: block
/// `b` waits for `2i + b` and writes `2i + b + 1`. `out[b]` = its cycles, `u64::MAX` if a wait
/// ran out.
///
/// # Safety
/// `counter` must be a zeroed u32 in global memory; `out` two u64s.
#[inline(always)]
pub unsafe fn ping_pong(p: &ProbeParams) {
    let me = device::block_idx();
    if device::thread_idx() != 0 || me > 1 {
        return;
    }
    let t0 = device::clock_cycles();
    let started = device::global_timer_ns();
    let mut i = 0;
    while i < p.iterations {
        let want = 2 * i + me;
        // SAFETY: the caller's counter.
        while unsafe { device::atomic_cas_u32(p.counter, want, want + 1) } != want {
            if device::global_timer_ns().wrapping_sub(started) > SPIN_LIMIT_NS {
                // SAFETY: two values.
                unsafe { p.out.add(me as usize).write(u64::MAX) };
                return;
            }
        }
        i += 1;
    }
    let t1 = device::clock_cycles();
    // SAFETY: two values.
    unsafe { p.out.add(me as usize).write(t1.wrapping_sub(t0)) };
}

/// Every block passes the decode step's grid barrier `iterations` times. `out[0]` = block 0's
/// cycles; 0 if a barrier failed.
///
/// # Safety
/// `control` must be a zeroed control block; launch with at least
/// [`crate::step::sync::SYNC_SHARED_BYTES`] of dynamic shared memory, every block resident.
#[inline(always)]
pub unsafe fn barriers(p: &ProbeParams) {
    // SAFETY: the caller's control block.
    let mut sync = unsafe { GridSync::new(p.control, SPIN_LIMIT_NS) };
    let t0 = device::clock_cycles();
    let mut i = 0;
    while i < p.iterations {
        // SAFETY: every thread of every block calls it the same number of times.
        if !unsafe { sync.barrier(Stage::Start, 0, || {}) } {
            return;
        }
        i += 1;
    }
    let t1 = device::clock_cycles();
    if device::block_idx() == 0 && device::thread_idx() == 0 {
        // SAFETY: one value.
        unsafe { p.out.write(t1.wrapping_sub(t0)) };
    }
}

/// Every warp reads `iterations` × 4 × 16 bytes per lane from shared memory (conflict-free
/// 16-byte accesses). `out[block]` = the block's cycles, `out[grid + block]` = a checksum.
///
/// # Safety
/// Launch with at least `(4 × block_dim + 32 × iterations) × 16` bytes of dynamic shared
/// memory; `out` two u64s per block.
#[inline(always)]
pub unsafe fn shared_read(p: &ProbeParams) {
    // 16-byte aligned, so that each access is one 128-bit load (LDS.128): four scalar loads at
    // a 16-byte stride would conflict four ways.
    #[repr(C, align(16))]
    #[derive(Clone, Copy)]
    struct Quad([u32; 4]);
    let smem = device::shared_memory().cast::<Quad>();
    let tid = device::thread_idx() as usize;
    let n = device::block_dim() as usize * 4 + 32 * p.iterations as usize;
    let mut i = tid;
    while i < n {
        // SAFETY: `n` 16-byte entries fit the launch's shared memory.
        unsafe { smem.add(i).write(Quad([i as u32, 1, 2, 3])) };
        i += device::block_dim() as usize;
    }
    device::sync_threads();
    let t0 = device::clock_cycles();
    let mut sum = 0u32;
    let mut it = 0;
    while it < p.iterations {
        let mut k = 0;
        while k < 4 {
            // Lane-consecutive 16-byte entries: 4 wavefronts of 128 bytes, no conflicts. The
            // offset moves every iteration so that no load is loop-invariant; it stays below
            // `n`, which has room for the moves.
            let at = tid + k * device::block_dim() as usize + 32 * it as usize;
            // SAFETY: inside the entries written above (the launch contract below).
            let Quad(v) = unsafe { smem.add(at).read() };
            // All four words, or the compiler loads only those used (at a 16-byte stride,
            // with bank conflicts).
            sum ^= v[0] ^ v[1] ^ v[2] ^ v[3];
            k += 1;
        }
        it += 1;
    }
    device::sync_threads();
    let t1 = device::clock_cycles();
    if tid == 0 {
        let b = device::block_idx() as usize;
        // SAFETY: two values per block.
        unsafe {
            p.out.add(b).write(t1.wrapping_sub(t0));
            p.out.add(device::grid_dim() as usize + b).write(sum as u64);
        }
    }
}
