//! Grid-wide synchronisation for the persistent kernel: a barrier on a counter in global
//! memory, with release/acquire ordering, a bounded spin and an error word.
//!
//! The counter only grows. A step that passes its `k`-th barrier waits until the counter
//! reaches `base + k · grid`, where `base` is the value it had when the step began; the last
//! block of a step moves `base` forward for the next launch. Nothing needs resetting between
//! launches, and wrapping arithmetic keeps it correct past 2³² arrivals.
//!
//! Never a hang: a barrier that waits longer than the launch's spin limit records
//! [`ErrorKind::Timeout`] with the stage, layer and block in the error word, and every block
//! that sees a non-zero error word leaves the kernel. The host turns the word into a sentence.

use super::StepControl;
use crate::device;

/// What went wrong in a step, as recorded in [`StepControl::error`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ErrorKind {
    /// A barrier waited past the spin limit: some block never arrived.
    Timeout = 1,
    /// The position to write is at or past the KV cache's end.
    ContextFull = 2,
    /// The input token is not in the vocabulary.
    BadToken = 3,
    /// The host's `StepParams` has another size than the kernel's: they were built apart.
    Abi = 4,
    /// The step's attention split needs more partials than the buffer holds (a host sizing
    /// bug, caught before any write past the buffer).
    SplitOverflow = 5,
}

/// The place in the step where something happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Stage {
    Start = 0,
    Qkv = 1,
    Attention = 2,
    Combine = 3,
    OutputProjection = 4,
    GateUp = 5,
    Down = 6,
    LmHead = 7,
}

impl Stage {
    /// Human name, for error messages.
    pub const fn name(self) -> &'static str {
        match self {
            Stage::Start => "start of step",
            Stage::Qkv => "QKV projection",
            Stage::Attention => "attention",
            Stage::Combine => "attention combine",
            Stage::OutputProjection => "output projection",
            Stage::GateUp => "gate/up projection",
            Stage::Down => "down projection",
            Stage::LmHead => "LM head and argmax",
        }
    }

    const fn from_code(code: u32) -> Stage {
        match code {
            1 => Stage::Qkv,
            2 => Stage::Attention,
            3 => Stage::Combine,
            4 => Stage::OutputProjection,
            5 => Stage::GateUp,
            6 => Stage::Down,
            7 => Stage::LmHead,
            _ => Stage::Start,
        }
    }
}

/// A decoded error word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepError {
    pub kind: ErrorKind,
    pub stage: Stage,
    pub layer: u32,
    pub block: u32,
}

impl StepError {
    /// Packs the error into the 32-bit word: kind (4 bits), stage (4), layer (8), block (16).
    pub const fn encode(self) -> u32 {
        ((self.kind as u32) << 28)
            | ((self.stage as u32 & 0xf) << 24)
            | ((self.layer & 0xff) << 16)
            | (self.block & 0xffff)
    }

    /// The error a non-zero word describes; `None` for 0 (no error) or an unknown kind.
    pub const fn decode(word: u32) -> Option<StepError> {
        let kind = match word >> 28 {
            1 => ErrorKind::Timeout,
            2 => ErrorKind::ContextFull,
            3 => ErrorKind::BadToken,
            4 => ErrorKind::Abi,
            5 => ErrorKind::SplitOverflow,
            _ => return None,
        };
        Some(StepError {
            kind,
            stage: Stage::from_code((word >> 24) & 0xf),
            layer: (word >> 16) & 0xff,
            block: word & 0xffff,
        })
    }
}

/// Records `error` unless an earlier one is there: the first error explains the others.
///
/// # Safety
/// `control` must be the launch's control block.
#[inline(always)]
pub unsafe fn record_error(control: *mut StepControl, error: StepError) {
    // SAFETY: the field is a u32 in global memory, accessed atomically by every block.
    unsafe { device::atomic_cas_u32(&raw mut (*control).error, 0, error.encode()) };
}

/// Bytes at the start of shared memory that the barrier and block reductions use.
pub const SYNC_SHARED_BYTES: usize = 256;

/// One block's view of the grid barrier during a step.
pub struct GridSync {
    control: *mut StepControl,
    passed: u32,
    spin_limit_ns: u64,
}

impl GridSync {
    /// Starts the step's barrier sequence from the base the previous step left.
    ///
    /// # Safety
    /// `control` must be the launch's control block.
    #[inline(always)]
    pub unsafe fn new(control: *mut StepControl, spin_limit_ns: u64) -> Self {
        GridSync {
            control,
            passed: 0,
            spin_limit_ns,
        }
    }

    /// The count at the start of the step. Read where it is needed, not kept: a register held
    /// through the whole step is one the step's peak (attention) does not have.
    #[inline(always)]
    fn base(&self) -> u32 {
        // SAFETY: written only by the previous launch's last block, before this launch began
        // (and by this launch's block 0 after every block has read it for the last barrier).
        unsafe { (&raw const (*self.control).barrier_base).read_volatile() }
    }

    /// Barriers passed so far in this step.
    #[inline(always)]
    pub fn passed(&self) -> u32 {
        self.passed
    }

    /// The base the next step starts from.
    #[inline(always)]
    pub fn next_base(&self) -> u32 {
        self.base()
            .wrapping_add(self.passed.wrapping_mul(device::grid_dim()))
    }

    /// Waits until every block of the grid has arrived. The block arrives first, then every
    /// thread runs `prefetch` and thread 0 waits: the loads it issues for later stages overlap
    /// the wait (productive spin), and the block that arrives last is not late by its own
    /// prefetches (before 2026-12-02 they came first, about 800 cycles at every barrier on the
    /// critical path in the timing model). Returns `false` when the step must stop because an
    /// error was recorded (by this block or another).
    ///
    /// # Safety
    /// Every thread of every block must call it the same number of times with the same stage.
    #[inline(always)]
    pub unsafe fn barrier(&mut self, stage: Stage, layer: u32, prefetch: impl FnOnce()) -> bool {
        let stop_flag = device::shared_memory().cast::<u32>();
        device::sync_threads();
        self.passed += 1;
        // Before arriving: once every block has arrived at the step's last barrier, block 0
        // moves the base on for the next step.
        let target = self.next_base();
        let leader = device::thread_idx() == 0;
        // SAFETY: the control block's fields are global u32s used atomically here.
        let arrived = if leader { unsafe { self.arrive() } } else { 0 };
        prefetch();
        if leader {
            // SAFETY: as above. An error recorded before the barrier is seen after it (the
            // recorder arrived after recording): a step whose waits gave up stops here.
            let stop = unsafe {
                self.wait(arrived, target, stage, layer)
                    || device::load_acquire_gpu(&raw const (*self.control).error) != 0
            };
            // SAFETY: word 0 of shared memory is reserved for this flag.
            unsafe { stop_flag.write_volatile(stop as u32) };
        }
        device::sync_threads();
        // SAFETY: written by thread 0 before the barrier above.
        unsafe { stop_flag.read_volatile() == 0 }
    }

    /// Thread 0's arrival: publishes the block's writes and returns the count with this
    /// block's arrival in it.
    #[inline(always)]
    unsafe fn arrive(&self) -> u32 {
        // The arrival releases the block's writes (ordered before this thread by
        // `sync_threads`; release is cumulative) with no fence in front: on the GPU a release
        // atomic already is a fence and an atomic. It acquires too, so the block that
        // completes the count has seen every other block's writes and need not poll.
        // SAFETY: a global u32 of the control block, used atomically.
        unsafe { device::atomic_add_acq_rel_gpu(&raw mut (*self.control).barrier_count, 1) }
            .wrapping_add(1)
    }

    /// Thread 0's wait after [`Self::arrive`] returned `arrived`: spins until `target`
    /// (bounded). Returns true when the step must stop.
    #[inline(always)]
    unsafe fn wait(&self, arrived: u32, target: u32, stage: Stage, layer: u32) -> bool {
        if arrived == target {
            return false;
        }
        let control = self.control;
        // SAFETY: global u32s of the control block.
        unsafe {
            let start = device::global_timer_ns();
            let mut polls = 0u32;
            loop {
                let count = device::load_acquire_gpu(&raw const (*control).barrier_count);
                if count.wrapping_sub(target) as i32 >= 0 {
                    return false;
                }
                // The error word and the clock only every few polls: each is another round
                // trip before the next look at the count, which is what a waiting block is
                // late by when the last one arrives.
                polls = polls.wrapping_add(1);
                if !polls.is_multiple_of(ERROR_POLL_INTERVAL) {
                    continue;
                }
                if device::load_acquire_gpu(&raw const (*control).error) != 0 {
                    return true;
                }
                if device::global_timer_ns().wrapping_sub(start) > self.spin_limit_ns {
                    record_error(
                        control,
                        StepError {
                            kind: ErrorKind::Timeout,
                            stage,
                            layer,
                            block: device::block_idx(),
                        },
                    );
                    return true;
                }
                device::nanosleep(32);
            }
        }
    }
}

/// Polls of the barrier count between looks at the error word and the clock.
const ERROR_POLL_INTERVAL: u32 = 8;
