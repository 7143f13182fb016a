//! The host backend of the device layer: an emulator that runs a kernel's CUDA threads as
//! coroutines on the calling OS thread.
//!
//! What is real: every thread of every resident block makes progress (so grid-wide spin
//! barriers work as on a GPU where the whole grid is resident), `sync_threads` is a real
//! barrier over the block's threads, a warp shuffle is a real exchange between the 32 threads
//! of a warp, and global atomics are `core::sync::atomic` operations with the orderings the PTX
//! backend uses. What is not: timing, parallelism (one emulated thread runs at a time, switched
//! at barriers, shuffles and `nanosleep`), memory spaces (everything is host memory) and the
//! non-coherent cache.
//!
//! Each emulated thread is a stackful coroutine ([`corosensei`]): a switch costs a few
//! nanoseconds where an OS thread per CUDA thread cost a futex round trip and a context switch
//! per thread at every barrier and shuffle (on a 2-core machine a step of the tiny fixtures took
//! seconds). The scheduler resumes the threads in a fixed order, so a launch is deterministic.
//!
//! A thread that panics (an out-of-bounds index, an assertion) aborts the launch: every other
//! thread unwinds at its next barrier, shuffle or sleep, and [`launch`] returns the panic's
//! message. A grid whose threads all wait at barriers that cannot complete (a `sync_threads`
//! that some thread of the block never reaches) is reported the same way. The emulator never
//! hangs on a broken kernel that reaches a device call.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use corosensei::stack::DefaultStack;
use corosensei::{Coroutine, CoroutineResult, Yielder};

use super::WARP_SIZE;

/// The most threads one launch may start.
pub const MAX_THREADS_PER_LAUNCH: u32 = 4096;
/// The most threads in one block, as on every GPU since sm_20.
pub const MAX_THREADS_PER_BLOCK: u32 = 1024;
/// Stack of one emulated thread (the kernel's deepest call chain with its register arrays uses
/// a few tens of KiB).
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

/// The panic payload that unwinds the threads of an aborted launch; never reported.
struct Aborted;

/// What a suspended emulated thread waits for.
#[derive(Clone, Copy)]
enum Wait {
    /// A barrier whose generation word still reads `seen`: not resumed until it moves.
    Barrier {
        generation: *const Cell<u32>,
        seen: u32,
    },
    /// Memory another thread will change (`nanosleep` in a spin loop): resumed every round.
    Spin,
}

type ThreadCoroutine = Coroutine<(), Wait, Result<(), String>, DefaultStack>;

/// A barrier for `n` emulated threads: arrivals count up; the last one resets the count and
/// moves the generation, which lets the others be resumed.
struct Barrier {
    n: u32,
    arrived: Cell<u32>,
    generation: Cell<u32>,
}

impl Barrier {
    fn new(n: u32) -> Self {
        Barrier {
            n,
            arrived: Cell::new(0),
            generation: Cell::new(0),
        }
    }

    fn wait(&self) {
        let seen = self.generation.get();
        let arrived = self.arrived.get() + 1;
        if arrived == self.n {
            self.arrived.set(0);
            self.generation.set(seen.wrapping_add(1));
            return;
        }
        self.arrived.set(arrived);
        suspend(Wait::Barrier {
            generation: &self.generation,
            seen,
        });
    }
}

/// The slots through which the lanes of one warp exchange shuffle operands: two sets used in
/// turn, so a shuffle needs one rendezvous (a lane can only write a set again after every lane
/// has passed the next shuffle's rendezvous, i.e. has finished reading it).
struct WarpMailbox {
    slots: [[Cell<u32>; WARP_SIZE as usize]; 2],
    barrier: Barrier,
}

/// What the threads of one block share.
struct BlockState {
    barrier: Barrier,
    warps: Vec<WarpMailbox>,
    /// Dynamic shared memory, 16-byte aligned like the GPU's.
    shared: Box<[Cell16]>,
}

#[repr(C, align(16))]
struct Cell16(std::cell::UnsafeCell<[u8; 16]>);

/// What every thread of a launch shares.
struct LaunchState {
    grid_dim: u32,
    block_dim: u32,
    aborted: Cell<bool>,
}

/// One emulated thread: who it is, and its own state.
struct Lane {
    thread: u32,
    block: u32,
    block_state: *const BlockState,
    launch: *const LaunchState,
    /// The coroutine's yielder, set when it starts.
    yielder: Cell<*const Yielder<(), Wait>>,
    /// Shuffles this lane has done in the launch: picks the mailbox set.
    shuffles: Cell<u32>,
}

thread_local! {
    /// The emulated thread running now on this OS thread (null outside a launch).
    static CURRENT: Cell<*const Lane> = const { Cell::new(std::ptr::null()) };
    /// Stacks of finished coroutines, reused by the next launch on this OS thread.
    static STACKS: RefCell<Vec<DefaultStack>> = const { RefCell::new(Vec::new()) };
}

fn lane() -> &'static Lane {
    let lane = CURRENT.with(Cell::get);
    assert!(
        !lane.is_null(),
        "a device function was called outside an emulated kernel launch"
    );
    // SAFETY: the scheduler points `CURRENT` at a lane of the running launch only while that
    // lane's coroutine runs; the launch outlives it.
    unsafe { &*lane }
}

fn block_state() -> &'static BlockState {
    // SAFETY: as in `lane`: launch state outlives every coroutine of the launch.
    unsafe { &*lane().block_state }
}

fn launch_state() -> &'static LaunchState {
    // SAFETY: as above.
    unsafe { &*lane().launch }
}

/// Gives control back to the scheduler until `wait` is over; unwinds if the launch was
/// aborted meanwhile.
fn suspend(wait: Wait) {
    let lane = lane();
    // SAFETY: set by this lane's coroutine when it started; the coroutine is running.
    let yielder = unsafe { &*lane.yielder.get() };
    yielder.suspend(wait);
    if launch_state().aborted.get() {
        std::panic::resume_unwind(Box::new(Aborted));
    }
}

/// Runs `kernel` on a `grid × block` launch with `shared_bytes` of dynamic shared memory per
/// block, every thread a coroutine, and returns when all threads have finished. Every block
/// is resident at once.
pub fn launch<F>(grid: u32, block: u32, shared_bytes: usize, kernel: F) -> Result<(), LaunchError>
where
    F: Fn() + Sync,
{
    launch_with_residency(grid, block, shared_bytes, grid, kernel)
}

/// A running emulated thread.
struct Running {
    lane: usize,
    coroutine: ThreadCoroutine,
    wait: Option<Wait>,
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
    if !CURRENT.with(Cell::get).is_null() {
        return Err(LaunchError::BadShape(
            "a kernel cannot launch another kernel on the emulator".into(),
        ));
    }
    let launch = LaunchState {
        grid_dim: grid,
        block_dim: block,
        aborted: Cell::new(false),
    };
    let blocks: Vec<BlockState> = (0..grid)
        .map(|_| BlockState {
            barrier: Barrier::new(block),
            warps: (0..block / WARP_SIZE)
                .map(|_| WarpMailbox {
                    slots: std::array::from_fn(|_| std::array::from_fn(|_| Cell::new(0))),
                    barrier: Barrier::new(WARP_SIZE),
                })
                .collect(),
            shared: (0..shared_bytes.div_ceil(16))
                .map(|_| Cell16(std::cell::UnsafeCell::new([0; 16])))
                .collect(),
        })
        .collect();
    let lanes: Vec<Lane> = (0..grid * block)
        .map(|i| Lane {
            thread: i % block,
            block: i / block,
            block_state: &blocks[(i / block) as usize],
            launch: &launch,
            yielder: Cell::new(std::ptr::null()),
            shuffles: Cell::new(0),
        })
        .collect();
    let kernel: &(dyn Fn() + Sync) = &kernel;
    // SAFETY: the coroutines that use this reference never outlive this function: each one is
    // resumed until it returns (an aborted launch unwinds them at their next suspension), and
    // `running`, declared after everything they borrow, drops (and so force-unwinds) any that
    // remain before it if this function itself unwinds.
    let kernel: &'static (dyn Fn() + Sync) = unsafe { std::mem::transmute(kernel) };
    let mut first_error: Option<LaunchError> = None;
    let mut unfinished: Vec<u32> = vec![block; grid as usize];
    let mut running: Vec<Running> =
        Vec::with_capacity((resident_blocks.min(grid) * block) as usize);
    let mut admitted = 0u32;
    let mut finished_blocks = 0u32;
    loop {
        // Admit blocks while fewer than `resident_blocks` run.
        while admitted < grid && admitted < finished_blocks + resident_blocks {
            for t in 0..block {
                let index = (admitted * block + t) as usize;
                let lane: *const Lane = &lanes[index];
                running.push(Running {
                    lane: index,
                    coroutine: thread_coroutine(lane, kernel),
                    wait: None,
                });
            }
            admitted += 1;
        }
        if running.is_empty() {
            break;
        }
        let aborted = launch.aborted.get();
        let mut resumed = false;
        for r in running.iter_mut() {
            if let Some(Wait::Barrier { generation, seen }) = r.wait {
                // SAFETY: a barrier word of this launch's state.
                if !aborted && unsafe { (*generation).get() } == seen {
                    continue;
                }
            }
            resumed = true;
            CURRENT.with(|c| c.set(&lanes[r.lane]));
            let outcome = r.coroutine.resume(());
            CURRENT.with(|c| c.set(std::ptr::null()));
            match outcome {
                CoroutineResult::Yield(wait) => r.wait = Some(wait),
                CoroutineResult::Return(result) => {
                    r.wait = None;
                    let lane = &lanes[r.lane];
                    unfinished[lane.block as usize] -= 1;
                    if unfinished[lane.block as usize] == 0 {
                        finished_blocks += 1;
                    }
                    if let Err(message) = result {
                        first_error.get_or_insert(LaunchError::KernelPanicked {
                            block: lane.block,
                            thread: lane.thread,
                            message,
                        });
                        launch.aborted.set(true);
                    }
                }
            }
        }
        // Keep the finished threads' stacks for the next launch.
        let mut i = 0;
        while i < running.len() {
            if running[i].coroutine.done() {
                let done = running.swap_remove(i);
                STACKS.with(|s| s.borrow_mut().push(done.coroutine.into_stack()));
            } else {
                i += 1;
            }
        }
        if !resumed && !running.is_empty() {
            // Every thread waits at a barrier that no running thread can complete.
            let r = &running[0];
            let lane = &lanes[r.lane];
            first_error.get_or_insert(LaunchError::KernelPanicked {
                block: lane.block,
                thread: lane.thread,
                message: "deadlock: every thread of the launch waits at a barrier (sync_threads \
                          or a warp's rendezvous) that some thread of its block or warp never \
                          reaches"
                    .into(),
            });
            launch.aborted.set(true);
        }
        // `swap_remove` changed the order; keep it by lane so that a launch is deterministic.
        running.sort_unstable_by_key(|r| r.lane);
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// A coroutine that runs `kernel` as the emulated thread `lane`, on a stack from the pool.
/// It returns the kernel's panic message, if it panicked.
fn thread_coroutine(lane: *const Lane, kernel: &'static (dyn Fn() + Sync)) -> ThreadCoroutine {
    let stack = STACKS.with(|s| s.borrow_mut().pop()).unwrap_or_else(|| {
        DefaultStack::new(THREAD_STACK_BYTES)
            .expect("the emulator could not map a stack for an emulated thread")
    });
    // Raw pointers are not `Send`-bound here: the coroutine runs on this OS thread only.
    let lane = lane as usize;
    Coroutine::with_stack(stack, move |yielder: &Yielder<(), Wait>, ()| {
        // SAFETY: the lane outlives the coroutine (see `launch_with_residency`).
        let lane = unsafe { &*(lane as *const Lane) };
        lane.yielder.set(yielder);
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(kernel)) {
            Ok(()) => Ok(()),
            Err(payload) if payload.downcast_ref::<Aborted>().is_some() => Ok(()),
            Err(payload) => match panic_message(payload.as_ref()) {
                Some(message) => Err(message),
                // Not a kernel panic (the coroutine library's own unwinding): let it go on.
                None => std::panic::resume_unwind(payload),
            },
        }
    })
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> Option<String> {
    if let Some(s) = payload.downcast_ref::<&str>() {
        Some((*s).to_string())
    } else {
        payload.downcast_ref::<String>().cloned()
    }
}

/// This thread's index within its block.
#[inline]
pub fn thread_idx() -> u32 {
    lane().thread
}

/// This block's index within the grid.
#[inline]
pub fn block_idx() -> u32 {
    lane().block
}

/// Threads per block.
#[inline]
pub fn block_dim() -> u32 {
    launch_state().block_dim
}

/// Blocks in the grid.
#[inline]
pub fn grid_dim() -> u32 {
    launch_state().grid_dim
}

/// Block-wide barrier.
pub fn sync_threads() {
    block_state().barrier.wait();
}

/// The block's dynamic shared memory, 16-byte aligned.
pub fn shared_memory() -> *mut u8 {
    block_state().shared.as_ptr() as *mut u8
}

/// The mailbox set this lane's next warp exchange uses, and its lane index.
fn next_exchange() -> (
    &'static WarpMailbox,
    &'static [Cell<u32>; WARP_SIZE as usize],
    usize,
) {
    let lane = lane();
    let warp = &block_state().warps[(lane.thread / WARP_SIZE) as usize];
    let n = lane.shuffles.get();
    lane.shuffles.set(n.wrapping_add(1));
    (
        warp,
        &warp.slots[(n % 2) as usize],
        (lane.thread % WARP_SIZE) as usize,
    )
}

/// `v` from lane `lane ^ mask`; every lane of the warp must call it.
pub fn shfl_xor_u32(v: u32, mask: u32) -> u32 {
    let (warp, set, lane) = next_exchange();
    set[lane].set(v);
    warp.barrier.wait();
    set[(lane ^ mask as usize) % WARP_SIZE as usize].get()
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

/// Acquire-release add at device scope; returns the old value.
///
/// # Safety
/// `p` must point to a live, aligned `u32` that is only accessed atomically.
#[inline]
pub unsafe fn atomic_add_acq_rel_gpu(p: *mut u32, v: u32) -> u32 {
    // SAFETY: the caller guarantees `p`.
    unsafe { AtomicU32::from_ptr(p) }.fetch_add(v, Ordering::AcqRel)
}

/// Acquire add at device scope; returns the old value.
///
/// # Safety
/// `p` must point to a live, aligned `u32` that is only accessed atomically.
#[inline]
pub unsafe fn atomic_add_acquire_gpu(p: *mut u32, v: u32) -> u32 {
    // SAFETY: the caller guarantees `p`.
    unsafe { AtomicU32::from_ptr(p) }.fetch_add(v, Ordering::Acquire)
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

/// Lets the other emulated threads run: a thread spinning on memory must not keep the OS
/// thread from the thread it waits for.
#[inline]
pub fn nanosleep(_ns: u32) {
    suspend(Wait::Spin);
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
    let lane = lane();
    block_state().warps[(lane.thread / WARP_SIZE) as usize]
        .barrier
        .wait();
}

/// Whether `pred` holds on any lane of the warp; every lane gets the answer (one rendezvous,
/// through the same mailbox as the shuffles).
pub fn warp_any(pred: bool) -> bool {
    let (warp, set, lane) = next_exchange();
    set[lane].set(pred as u32);
    warp.barrier.wait();
    set.iter().any(|slot| slot.get() != 0)
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

/// Two relaxed atomic loads of adjacent `u64`s (the vector load's two words).
///
/// # Safety
/// `p` must point to two live, 16-byte aligned `u64`s that are only accessed atomically.
#[inline]
pub unsafe fn load_relaxed_u64x2(p: *const u64) -> [u64; 2] {
    debug_assert!(
        (p as usize).is_multiple_of(16),
        "a 128-bit load needs a 16-byte aligned address"
    );
    // SAFETY: the caller guarantees `p`.
    unsafe { [load_relaxed_u64(p), load_relaxed_u64(p.add(1))] }
}

/// Relaxed atomic store of a `u64`.
///
/// # Safety
/// `p` must point to a live, 8-byte aligned `u64` that is only accessed atomically.
#[inline]
pub unsafe fn store_relaxed_u64(p: *mut u64, v: u64) {
    // SAFETY: the caller guarantees `p`.
    unsafe { AtomicU64::from_ptr(p) }.store(v, Ordering::Relaxed)
}

/// Two relaxed atomic stores of adjacent `u64`s.
///
/// # Safety
/// `p` must point to two live, 16-byte aligned `u64`s that are only accessed atomically.
#[inline]
pub unsafe fn store_relaxed_u64x2(p: *mut u64, v: [u64; 2]) {
    debug_assert!(
        (p as usize).is_multiple_of(16),
        "a 128-bit store needs a 16-byte aligned address"
    );
    // SAFETY: the caller guarantees `p`.
    unsafe {
        store_relaxed_u64(p, v[0]);
        store_relaxed_u64(p.add(1), v[1]);
    }
}

/// Relaxed atomic increment with no result (a profiling mark on the GPU).
///
/// # Safety
/// `p` must point to a live, aligned `u32` that is only accessed atomically.
#[inline]
pub unsafe fn count_relaxed(p: *mut u32) {
    // SAFETY: the caller guarantees `p`.
    unsafe { AtomicU32::from_ptr(p) }.fetch_add(1, Ordering::Relaxed);
}

/// `v << 16` (the GPU's is a multiply, for the pipe it issues to).
#[inline]
pub fn low_half_up(v: u32) -> u32 {
    v << 16
}

/// `v`, unknown to the optimiser (see the GPU's).
#[inline]
pub fn opaque_u32(v: u32) -> u32 {
    core::hint::black_box(v)
}

/// Slots of shared memory that asynchronous copies rotate through (as on the GPU).
pub const COPY_SLOTS: u32 = 4;

/// Nothing to ready: the emulator's copies land at once.
///
/// # Safety
/// None.
pub unsafe fn copy_barrier_init(_bar: *mut u64) {}

/// A block barrier, as on the GPU.
pub fn copy_barriers_ready() {
    sync_threads();
}

/// Thread 0 copies the bytes at once (the GPU's thread 0 issues the bulk copy).
///
/// # Safety
/// `src` and `dst` must hold `bytes` bytes, not overlapping.
pub unsafe fn copy_begin(dst: *mut u8, src: *const u8, bytes: u32, _bar: *mut u64) {
    if thread_idx() == 0 && bytes > 0 {
        // SAFETY: the caller guarantees the buffers.
        unsafe { core::ptr::copy_nonoverlapping(src, dst, bytes as usize) };
    }
}

/// Always: the copy landed when it began.
///
/// # Safety
/// None.
pub unsafe fn copy_landed(_bar: *mut u64, _parity: u32) -> bool {
    true
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

/// The correctly rounded square root.
#[inline]
pub fn sqrt(x: f32) -> f32 {
    x.sqrt()
}

/// `1 / sqrt(x)`.
#[inline]
pub fn rsqrt(x: f32) -> f32 {
    1.0 / sqrt(x)
}
