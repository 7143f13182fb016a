//! The host backend of the device layer: an emulator that runs a kernel's CUDA threads as OS
//! threads.
//!
//! What is real: every thread of every block runs concurrently (so grid-wide spin barriers work
//! as on a GPU where the whole grid is resident), `sync_threads` is a real barrier over the
//! block's threads, a warp shuffle is a real exchange between the 32 threads of a warp, and
//! global atomics are `core::sync::atomic` operations with the orderings the PTX backend uses.
//! What is not: timing, memory spaces (everything is host memory) and the non-coherent cache.
//!
//! A thread that panics (an out-of-bounds index, an assertion) aborts the launch: every thread
//! waiting at a barrier is released and [`launch`] returns the panic's message. The emulator
//! never hangs on a broken kernel.

use std::cell::Cell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use super::WARP_SIZE;

/// The most threads one launch may start: each is an OS thread.
pub const MAX_THREADS_PER_LAUNCH: u32 = 4096;
/// The most threads in one block, as on every GPU since sm_20.
pub const MAX_THREADS_PER_BLOCK: u32 = 1024;
const THREAD_STACK_BYTES: usize = 256 * 1024;

/// Why an emulated launch did not run to completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchError {
    /// The launch shape cannot be emulated; the message says which limit it breaks.
    BadShape(String),
    /// A kernel thread panicked; the first panic's message and the thread that raised it.
    KernelPanicked {
        block: u32,
        thread: u32,
        message: String,
    },
}

impl std::fmt::Display for LaunchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LaunchError::BadShape(why) => write!(f, "the emulator cannot launch this grid: {why}"),
            LaunchError::KernelPanicked {
                block,
                thread,
                message,
            } => write!(
                f,
                "the kernel failed in block {block}, thread {thread} on the emulator: {message}"
            ),
        }
    }
}

impl std::error::Error for LaunchError {}

/// The panic payload used to unwind threads released from a barrier by an abort; never reported.
struct Aborted;

/// A reusable barrier for `n` threads that gives up when the launch is aborted.
///
/// Arrivals count up; the last one resets the count, bumps the generation and wakes the
/// sleepers with one futex call. Waiters spin briefly, then sleep on the generation word:
/// no mutex, so a release wakes threads that run at once instead of queueing on a lock.
struct AbortableBarrier {
    n: u32,
    arrived: AtomicU32,
    generation: AtomicU32,
}

/// Spins before sleeping: long enough to catch a release by a thread running on the other
/// core, short enough not to steal the core from the threads still to arrive.
const SPINS_BEFORE_SLEEP: u32 = 64;

impl AbortableBarrier {
    fn new(n: u32) -> Self {
        AbortableBarrier {
            n,
            arrived: AtomicU32::new(0),
            generation: AtomicU32::new(0),
        }
    }

    fn wait(&self, aborted: &AtomicBool) {
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.n {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
            atomic_wait::wake_all(&self.generation);
            return;
        }
        let mut spins = 0;
        while self.generation.load(Ordering::Acquire) == generation {
            if spins < SPINS_BEFORE_SLEEP {
                spins += 1;
                std::hint::spin_loop();
            } else if aborted.load(Ordering::SeqCst) {
                // A block admitted after an abort: nobody will bump this generation again.
                break;
            } else {
                // An abort after the check above bumps the generation, so this returns.
                atomic_wait::wait(&self.generation, generation);
            }
        }
        // An abort also moves the generation (see `wake_all`) to get every sleeper out.
        if aborted.load(Ordering::SeqCst) {
            std::panic::resume_unwind(Box::new(Aborted));
        }
    }

    /// Releases every waiter of an aborted launch: they see the abort flag and unwind.
    fn wake_all(&self) {
        self.generation.fetch_add(1, Ordering::Release);
        atomic_wait::wake_all(&self.generation);
    }
}

/// The slots through which the lanes of one warp exchange shuffle operands: two sets used in
/// turn, so a shuffle needs one rendezvous (a lane can only write a set again after every lane
/// has passed the next shuffle's rendezvous, i.e. has finished reading it).
struct WarpMailbox {
    slots: [[AtomicU32; WARP_SIZE as usize]; 2],
    barrier: AbortableBarrier,
}

/// What the threads of one block share.
struct BlockState {
    barrier: AbortableBarrier,
    warps: Vec<WarpMailbox>,
    /// Dynamic shared memory, 16-byte aligned like the GPU's.
    shared: Box<[Cell16]>,
}

#[repr(C, align(16))]
struct Cell16(std::cell::UnsafeCell<[u8; 16]>);

// SAFETY: shared memory is raw bytes that kernels access through raw pointers, ordered by
// `sync_threads` exactly as on the GPU.
unsafe impl Sync for Cell16 {}

/// Identity of the current emulated thread.
#[derive(Clone, Copy)]
struct ThreadContext {
    thread: u32,
    block: u32,
    block_dim: u32,
    grid_dim: u32,
    block_state: *const BlockState,
    aborted: *const AtomicBool,
}

// SAFETY: the pointers in a context name launch-owned state that outlives every kernel thread
// (scoped threads) and is only used through shared references and atomics.
unsafe impl Send for ThreadContext {}

thread_local! {
    static CONTEXT: Cell<Option<ThreadContext>> = const { Cell::new(None) };
    /// Shuffles this lane has done in the launch: picks the mailbox set.
    static SHUFFLES: Cell<u32> = const { Cell::new(0) };
}

fn context() -> ThreadContext {
    CONTEXT
        .with(Cell::get)
        .expect("a device function was called outside an emulated kernel launch")
}

fn block_state() -> (&'static BlockState, &'static AtomicBool) {
    let ctx = context();
    // SAFETY: the pointers stay valid for the whole launch, which outlives every kernel thread
    // (they are scoped threads), and kernel code runs only inside a launch.
    unsafe { (&*ctx.block_state, &*ctx.aborted) }
}

/// Runs `kernel` on a `grid × block` launch with `shared_bytes` of dynamic shared memory per
/// block, every thread an OS thread, and returns when all threads have finished. Every block
/// is resident at once.
pub fn launch<F>(grid: u32, block: u32, shared_bytes: usize, kernel: F) -> Result<(), LaunchError>
where
    F: Fn() + Sync,
{
    launch_with_residency(grid, block, shared_bytes, grid, kernel)
}

/// As [`launch`], but at most `resident_blocks` blocks run at once: block `b` starts only when
/// `b - resident_blocks + 1` blocks have finished, as on a GPU whose grid is larger than what
/// fits on its SMs. A persistent kernel with grid barriers cannot finish such a launch; this is
/// how tests check that it fails with a timeout instead of hanging.
pub fn launch_with_residency<F>(
    grid: u32,
    block: u32,
    shared_bytes: usize,
    resident_blocks: u32,
    kernel: F,
) -> Result<(), LaunchError>
where
    F: Fn() + Sync,
{
    if grid == 0 || block == 0 {
        return Err(LaunchError::BadShape(
            "the grid and the block need at least one thread".into(),
        ));
    }
    if !block.is_multiple_of(WARP_SIZE) || block > MAX_THREADS_PER_BLOCK {
        return Err(LaunchError::BadShape(format!(
            "a block of {block} threads is not a multiple of {WARP_SIZE} up to {MAX_THREADS_PER_BLOCK}"
        )));
    }
    if grid.saturating_mul(block) > MAX_THREADS_PER_LAUNCH {
        return Err(LaunchError::BadShape(format!(
            "{grid} blocks of {block} threads exceed the emulator's {MAX_THREADS_PER_LAUNCH} threads"
        )));
    }
    if resident_blocks == 0 {
        return Err(LaunchError::BadShape(
            "at least one block must be resident".into(),
        ));
    }
    let aborted = AtomicBool::new(false);
    let first_panic: Mutex<Option<LaunchError>> = Mutex::new(None);
    // Blocks with an index below this may run; each finished block lets one more in.
    let admitted = AtomicU32::new(resident_blocks);
    let running_threads: Vec<AtomicU32> = (0..grid).map(|_| AtomicU32::new(block)).collect();
    let blocks: Vec<BlockState> = (0..grid)
        .map(|_| BlockState {
            barrier: AbortableBarrier::new(block),
            warps: (0..block / WARP_SIZE)
                .map(|_| WarpMailbox {
                    slots: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU32::new(0))),
                    barrier: AbortableBarrier::new(WARP_SIZE),
                })
                .collect(),
            shared: (0..shared_bytes.div_ceil(16))
                .map(|_| Cell16(std::cell::UnsafeCell::new([0; 16])))
                .collect(),
        })
        .collect();

    std::thread::scope(|scope| {
        for (b, state) in blocks.iter().enumerate() {
            for t in 0..block {
                let ctx = ThreadContext {
                    thread: t,
                    block: b as u32,
                    block_dim: block,
                    grid_dim: grid,
                    block_state: state,
                    aborted: &aborted,
                };
                let (kernel, aborted, first_panic, blocks) =
                    (&kernel, &aborted, &first_panic, &blocks);
                let (admitted, running_threads) = (&admitted, &running_threads);
                let spawned = std::thread::Builder::new()
                    .stack_size(THREAD_STACK_BYTES)
                    .spawn_scoped(scope, move || {
                        wait_for_admission(admitted, ctx.block);
                        CONTEXT.with(|c| c.set(Some(ctx)));
                        SHUFFLES.with(|c| c.set(0));
                        let outcome =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(kernel));
                        CONTEXT.with(|c| c.set(None));
                        // The block's last thread to leave frees its slot for the next block.
                        let remaining = &running_threads[ctx.block as usize];
                        if remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                            admitted.fetch_add(1, Ordering::Release);
                            atomic_wait::wake_all(admitted);
                        }
                        if let Err(payload) = outcome {
                            if payload.downcast_ref::<Aborted>().is_some() {
                                return;
                            }
                            let message = panic_message(payload.as_ref());
                            let mut slot = first_panic.lock().unwrap_or_else(|e| e.into_inner());
                            slot.get_or_insert(LaunchError::KernelPanicked {
                                block: ctx.block,
                                thread: ctx.thread,
                                message,
                            });
                            drop(slot);
                            aborted.store(true, Ordering::SeqCst);
                            for other in blocks {
                                other.barrier.wake_all();
                                other.warps.iter().for_each(|w| w.barrier.wake_all());
                            }
                        }
                    });
                if let Err(e) = spawned {
                    aborted.store(true, Ordering::SeqCst);
                    let mut slot = first_panic.lock().unwrap_or_else(|e| e.into_inner());
                    slot.get_or_insert(LaunchError::BadShape(format!(
                        "the operating system refused another thread: {e}"
                    )));
                    return;
                }
            }
        }
    });
    match first_panic.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Blocks the calling thread until block `block` may start.
fn wait_for_admission(admitted: &AtomicU32, block: u32) {
    loop {
        let now = admitted.load(Ordering::Acquire);
        if block < now {
            return;
        }
        atomic_wait::wait(admitted, now);
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// This thread's index within its block.
#[inline]
pub fn thread_idx() -> u32 {
    context().thread
}

/// This block's index within the grid.
#[inline]
pub fn block_idx() -> u32 {
    context().block
}

/// Threads per block.
#[inline]
pub fn block_dim() -> u32 {
    context().block_dim
}

/// Blocks in the grid.
#[inline]
pub fn grid_dim() -> u32 {
    context().grid_dim
}

/// Block-wide barrier.
pub fn sync_threads() {
    let (block, aborted) = block_state();
    block.barrier.wait(aborted);
}

/// The block's dynamic shared memory, 16-byte aligned.
pub fn shared_memory() -> *mut u8 {
    let (block, _) = block_state();
    block.shared.as_ptr() as *mut u8
}

/// `v` from lane `lane ^ mask`; every lane of the warp must call it.
pub fn shfl_xor_u32(v: u32, mask: u32) -> u32 {
    let (block, aborted) = block_state();
    let thread = thread_idx();
    let warp = &block.warps[(thread / WARP_SIZE) as usize];
    let lane = thread % WARP_SIZE;
    let set = SHUFFLES.with(|c| {
        let n = c.get();
        c.set(n.wrapping_add(1));
        &warp.slots[(n % 2) as usize]
    });
    set[lane as usize].store(v, Ordering::Relaxed);
    // The rendezvous publishes every lane's operand (the barrier orders the stores before it
    // with the loads after it).
    warp.barrier.wait(aborted);
    set[((lane ^ mask) % WARP_SIZE) as usize].load(Ordering::Relaxed)
}

/// [`shfl_xor_u32`] for an `f32`.
pub fn shfl_xor_f32(v: f32, mask: u32) -> f32 {
    f32::from_bits(shfl_xor_u32(v.to_bits(), mask))
}

/// 16 bytes of read-only global memory.
///
/// # Safety
/// `p` must be 16-byte aligned and valid for reads.
#[inline]
pub unsafe fn load_global_nc_v4(p: *const [u32; 4]) -> [u32; 4] {
    debug_assert!(
        p.is_aligned(),
        "a 128-bit load needs a 16-byte aligned address"
    );
    // SAFETY: the caller guarantees the address.
    unsafe { p.read() }
}

/// Relaxed add at device scope; returns the old value.
///
/// # Safety
/// `p` must point to a live, aligned `u32` that is only accessed atomically.
#[inline]
pub unsafe fn atomic_add_relaxed_gpu(p: *mut u32, v: u32) -> u32 {
    // SAFETY: the caller guarantees `p`.
    unsafe { AtomicU32::from_ptr(p) }.fetch_add(v, Ordering::Relaxed)
}

/// Release add at device scope; returns the old value.
///
/// # Safety
/// `p` must point to a live, aligned `u32` that is only accessed atomically.
#[inline]
pub unsafe fn atomic_add_release_gpu(p: *mut u32, v: u32) -> u32 {
    // SAFETY: the caller guarantees `p`.
    unsafe { AtomicU32::from_ptr(p) }.fetch_add(v, Ordering::Release)
}

/// Acquire load at device scope.
///
/// # Safety
/// `p` must point to a live, aligned `u32` that is only accessed atomically.
#[inline]
pub unsafe fn load_acquire_gpu(p: *const u32) -> u32 {
    // SAFETY: the caller guarantees `p`.
    unsafe { AtomicU32::from_ptr(p as *mut u32) }.load(Ordering::Acquire)
}

/// Release store at device scope.
///
/// # Safety
/// `p` must point to a live, aligned `u32` that is only accessed atomically.
#[inline]
pub unsafe fn store_release_gpu(p: *mut u32, v: u32) {
    // SAFETY: the caller guarantees `p`.
    unsafe { AtomicU32::from_ptr(p) }.store(v, Ordering::Release)
}

/// Relaxed atomic maximum; returns the old value.
///
/// # Safety
/// `p` must point to a live, 8-byte aligned `u64` that is only accessed atomically.
#[inline]
pub unsafe fn atomic_max_u64(p: *mut u64, v: u64) -> u64 {
    // SAFETY: the caller guarantees `p`.
    unsafe { AtomicU64::from_ptr(p) }.fetch_max(v, Ordering::Relaxed)
}

/// Acquire-release fence.
#[inline]
pub fn fence_acq_rel_gpu() {
    std::sync::atomic::fence(Ordering::AcqRel);
}

/// Gives the core to another emulated thread: a spinning thread must not starve the thread
/// it waits for, since there are far more emulated threads than cores.
#[inline]
pub fn nanosleep(_ns: u32) {
    std::thread::yield_now();
}

/// Nanoseconds on a monotonic clock (the GPU's `%globaltimer` counterpart).
pub fn global_timer_ns() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// A cycle counter: on the host, nanoseconds (the emulator has no cycles).
pub fn clock_cycles() -> u64 {
    global_timer_ns()
}

/// Lines asked for by [`prefetch_l2`] in this process: tests check how much a step prefetches.
pub static PREFETCHED_LINES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A hint with no effect on the host but a count ([`PREFETCHED_LINES`]).
///
/// # Safety
/// Always safe on the host; `unsafe` to match the GPU backend.
#[inline]
pub unsafe fn prefetch_l2(_p: *const u8) {
    PREFETCHED_LINES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Warp-wide barrier among the 32 lanes of this thread's warp.
pub fn sync_warp() {
    let (block, aborted) = block_state();
    block.warps[(thread_idx() / WARP_SIZE) as usize]
        .barrier
        .wait(aborted);
}

/// Whether `pred` holds on any lane of the warp; every lane gets the answer (one rendezvous,
/// through the same mailbox as the shuffles).
pub fn warp_any(pred: bool) -> bool {
    let (block, aborted) = block_state();
    let thread = thread_idx();
    let warp = &block.warps[(thread / WARP_SIZE) as usize];
    let set = SHUFFLES.with(|c| {
        let n = c.get();
        c.set(n.wrapping_add(1));
        &warp.slots[(n % 2) as usize]
    });
    set[(thread % WARP_SIZE) as usize].store(pred as u32, Ordering::Relaxed);
    warp.barrier.wait(aborted);
    set.iter().any(|slot| slot.load(Ordering::Relaxed) != 0)
}

/// Relaxed atomic or; returns the old value.
///
/// # Safety
/// `p` must point to a live, aligned `u32` that is only accessed atomically.
#[inline]
pub unsafe fn atomic_or_u32(p: *mut u32, v: u32) -> u32 {
    // SAFETY: the caller guarantees `p`.
    unsafe { AtomicU32::from_ptr(p) }.fetch_or(v, Ordering::Relaxed)
}

/// Compare-and-swap (relaxed); returns the old value.
///
/// # Safety
/// `p` must point to a live, aligned `u32` that is only accessed atomically.
#[inline]
pub unsafe fn atomic_cas_u32(p: *mut u32, expected: u32, new: u32) -> u32 {
    // SAFETY: the caller guarantees `p`.
    match unsafe { AtomicU32::from_ptr(p) }.compare_exchange(
        expected,
        new,
        Ordering::Relaxed,
        Ordering::Relaxed,
    ) {
        Ok(old) | Err(old) => old,
    }
}

/// Relaxed atomic load of a `u64`.
///
/// # Safety
/// `p` must point to a live, 8-byte aligned `u64` that is only accessed atomically.
#[inline]
pub unsafe fn load_relaxed_u64(p: *const u64) -> u64 {
    // SAFETY: the caller guarantees `p`.
    unsafe { AtomicU64::from_ptr(p as *mut u64) }.load(Ordering::Relaxed)
}

/// Two f32s rounded to BF16 and packed, `lo` in the low half, as `cvt.rn.bf16.f32` does on
/// the GPU: round to nearest, ties to even; what overflows becomes infinity; a NaN stays a
/// (quiet) NaN with its sign and top payload bits (a GPU may give its canonical NaN instead).
#[inline]
pub fn f32x2_to_bf16x2(lo: f32, hi: f32) -> u32 {
    f32_to_bf16(lo) as u32 | (f32_to_bf16(hi) as u32) << 16
}

/// One f32 rounded to BF16 bits, as [`f32x2_to_bf16x2`].
#[inline]
pub fn f32_to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x0040) as u16;
    }
    // Adding 0x7fff (0x8000 when the kept part is odd) carries into the kept half exactly when
    // the dropped half is above the tie, or at it with an odd kept half.
    (bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

/// `e^x`.
#[inline]
pub fn exp(x: f32) -> f32 {
    x.exp()
}

/// `a · b + c` with one rounding, as `fma.rn.f32`.
#[inline]
pub fn fma(a: f32, b: f32, c: f32) -> f32 {
    a.mul_add(b, c)
}

/// `1 / sqrt(x)`.
#[inline]
pub fn rsqrt(x: f32) -> f32 {
    1.0 / x.sqrt()
}
