//! Dataflow between blocks without grid barriers: every value a stage hands to other blocks is
//! published in one 64-bit word together with the *epoch* it belongs to, and a consumer waits
//! for exactly the words it reads.
//!
//! A grid barrier costs every hop a GPU-scope fence (a `MEMBAR` that waits for the block's
//! stores), an atomic on one hot line and a poll: about 1 µs, 141 times a step. Here a
//! producer stores `(value, epoch)` with a relaxed 64-bit store, no fence; a consumer reads the
//! words with relaxed loads (each word single-copy atomic, never a stale L1 copy) and takes
//! them once every epoch matches the one it expects. A word can only hold its epoch's value,
//! so nothing else needs ordering — the protocol that NCCL's LL transport uses.
//!
//! **Epochs.** A step numbers its hand-offs `base + 1 ..= base + 5 · layers` ([`Epochs`]),
//! five per layer ([`Produced`]), from the count of steps the control block keeps; consecutive
//! steps' ranges never overlap, so a word left by an earlier step never matches. The host
//! zeroes the buffers whenever it zeroes the step count.
//!
//! **Reuse.** Each buffer is overwritten by the next epoch only after every reader of the
//! previous one has read it: the next writer depends, through the stages between, on an
//! output of every block that read it (see docs/KERNEL.md, "Waits").
//!
//! **Never a hang.** A wait is bounded like a barrier's: [`Waiter`] looks at the error word
//! and the clock every few polls, records a timeout naming the stage (and layer) whose output
//! never came and the block that waited, and then lets its thread go on with what it read:
//! the step's outputs are garbage, the error word says so, and every later wait of the step
//! gives up after a few polls. The grid barrier before the LM head stops the blocks.

use super::StepParams;
use super::sync::{ErrorKind, Stage, StepError, record_error};
use crate::device;

/// The hand-offs of a layer, in order; each gets an epoch of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Produced {
    /// The fused QKV projection's rows (before q/k norm and RoPE).
    Qkv = 0,
    /// The attention output of every query head.
    Attention = 1,
    /// The residual stream after the output projection.
    OutputProjection = 2,
    /// SiLU(gate)·up.
    GateUp = 3,
    /// The residual stream after the down projection: the layer's output.
    Down = 4,
}

/// Hand-offs per layer.
pub const PER_LAYER: u32 = 5;

/// The epochs of one step.
#[derive(Clone, Copy)]
pub struct Epochs {
    base: u32,
}

impl Epochs {
    /// The epochs of the step that follows `steps` completed ones, for a model of `layers`.
    #[inline(always)]
    pub fn of_step(steps: u32, layers: u32) -> Epochs {
        Epochs {
            base: steps.wrapping_mul(per_step(layers)),
        }
    }

    /// The epoch of `what` in `layer`: never 0 in the first step, so zeroed buffers never
    /// match.
    #[inline(always)]
    pub fn of(&self, layer: u32, what: Produced) -> u32 {
        self.base.wrapping_add(1 + layer * PER_LAYER + what as u32)
    }
}

/// Epochs one step spans: its hand-offs and one spare, so that a step's first epoch is
/// never the previous step's last.
pub const fn per_step(layers: u32) -> u32 {
    layers * PER_LAYER + 1
}

/// A value and its epoch as one word: the f32's bits low, the epoch high.
#[inline(always)]
pub fn word(v: f32, epoch: u32) -> u64 {
    ((epoch as u64) << 32) | v.to_bits() as u64
}

#[inline(always)]
fn epoch_of(w: u64) -> u32 {
    (w >> 32) as u32
}

/// Whether a published word holds `epoch`'s value (for a consumer that polls words of its own
/// choosing: [`Waiter::again`] between polls, [`value_of`] once all hold it).
#[inline(always)]
pub fn holds(w: u64, epoch: u32) -> bool {
    epoch_of(w) == epoch
}

/// The value of a published word.
#[inline(always)]
pub fn value_of(w: u64) -> f32 {
    f32::from_bits(w as u32)
}

/// Polls between looks at the error word and the clock.
const POLLS_PER_CHECK: u32 = 8;

/// One thread's bounded waiting for published words. It keeps almost nothing in registers
/// (the step's register peak, in attention, is where it lives through): the launch's
/// parameters are read where needed, and a timeout finds what it waited for from the epoch.
pub struct Waiter<'a> {
    p: &'a StepParams,
    /// When the current wait began (0: not waiting, or not looked yet).
    since: u64,
    polls: u32,
    /// An error was seen or recorded: later waits give up after a few polls.
    failed: bool,
}

impl<'a> Waiter<'a> {
    #[inline(always)]
    pub fn new(p: &'a StepParams) -> Waiter<'a> {
        Waiter {
            p,
            since: 0,
            polls: 0,
            failed: false,
        }
    }

    /// After a poll found a word of another epoch than `epoch`: pauses, and returns whether to
    /// poll again (see [`Waiter::pause`]); a timeout names the stage whose output never came.
    #[inline(always)]
    pub fn again(&mut self, epoch: u32) -> bool {
        let layers = self.p.dims.layers;
        self.pause(|steps| awaited(steps, layers, epoch))
    }

    /// After a copy of the weight ring had not landed: as [`Waiter::again`], a timeout naming
    /// the stage (and layer) whose weights it carries.
    #[inline(always)]
    pub fn pause_for_copy(&mut self, layer: u32, stage: Stage) -> bool {
        self.pause(|_| (layer, stage))
    }

    /// Pauses, and returns whether to look again. Every [`POLLS_PER_CHECK`] polls it looks at
    /// the error word (someone failed: give up) and the clock (past the spin limit: record a
    /// timeout at what `what(steps)` names, give up).
    #[inline(always)]
    fn pause(&mut self, what: impl FnOnce(u32) -> (u32, Stage)) -> bool {
        self.polls = self.polls.wrapping_add(1);
        if !self.polls.is_multiple_of(POLLS_PER_CHECK) {
            device::nanosleep(20);
            return true;
        }
        if self.failed {
            return false;
        }
        let control = self.p.control;
        // SAFETY: the control block's error word, accessed atomically by every block.
        if unsafe { device::load_acquire_gpu(&raw const (*control).error) } != 0 {
            self.failed = true;
            return false;
        }
        let now = device::global_timer_ns();
        if self.since == 0 {
            self.since = now;
        } else if now.wrapping_sub(self.since) > self.p.shape.spin_limit_ns {
            // SAFETY: the step count is this step's until its end; the error word as above.
            unsafe {
                let steps = (&raw const (*control).steps).read_volatile();
                let (layer, stage) = what(steps);
                record_error(
                    control,
                    StepError {
                        kind: ErrorKind::Timeout,
                        stage,
                        layer,
                        block: device::block_idx(),
                    },
                )
            };
            self.failed = true;
            return false;
        }
        device::nanosleep(20);
        true
    }

    /// The end of a wait.
    #[inline(always)]
    pub fn done(&mut self) {
        self.since = 0;
        self.polls = 0;
    }
}

/// The layer and stage whose output `epoch` (of the step after `steps`) is.
#[inline(always)]
fn awaited(steps: u32, layers: u32, epoch: u32) -> (u32, Stage) {
    let k = epoch
        .wrapping_sub(Epochs::of_step(steps, layers).base)
        .wrapping_sub(1);
    let stage = match k % PER_LAYER {
        0 => Stage::Qkv,
        1 => Stage::Attention,
        2 => Stage::OutputProjection,
        3 => Stage::GateUp,
        _ => Stage::Down,
    };
    (k / PER_LAYER, stage)
}

/// Publishes `v` as element `i` of `buf` for `epoch`.
///
/// # Safety
/// `buf` must hold more than `i` words in global memory.
#[inline(always)]
pub unsafe fn publish(buf: *mut u64, i: usize, v: f32, epoch: u32) {
    // SAFETY: forwarded contract.
    unsafe { device::store_relaxed_u64(buf.add(i), word(v, epoch)) }
}

/// Publishes 8 values as elements `8m .. 8m + 8` of `buf` for `epoch`: four 16-byte stores.
///
/// # Safety
/// `buf` must hold at least `8m + 8` words in global memory, 16-byte aligned.
#[inline(always)]
pub unsafe fn publish8(buf: *mut u64, m: usize, v: [f32; 8], epoch: u32) {
    let mut k = 0;
    while k < 4 {
        // SAFETY: forwarded contract.
        unsafe {
            device::store_relaxed_u64x2(
                buf.add(8 * m + 2 * k),
                [word(v[2 * k], epoch), word(v[2 * k + 1], epoch)],
            )
        };
        k += 1;
    }
}

/// Element `i` of `buf` once it holds `epoch` (see [`Waiter`] for what a wait that gives up
/// returns).
///
/// # Safety
/// `buf` must hold more than `i` words in global memory.
#[inline(always)]
pub unsafe fn await1(buf: *const u64, i: usize, epoch: u32, waiter: &mut Waiter) -> f32 {
    loop {
        // SAFETY: forwarded contract.
        let w = unsafe { device::load_relaxed_u64(buf.add(i)) };
        if epoch_of(w) == epoch || !waiter.again(epoch) {
            waiter.done();
            return value_of(w);
        }
    }
}

/// Elements `8m .. 8m + 8` of `buf` for each `m` of `octets` whose entry in `wanted` is set,
/// once all of them hold `epoch`: every 16-byte load is issued before any is looked at, so
/// `K` octets cost one round trip, not `4K`. Unwanted octets read as zeros.
///
/// # Safety
/// `buf` must hold at least `8m + 8` words for every wanted `m`, 16-byte aligned, in global
/// memory.
#[inline(always)]
pub unsafe fn await_octets<const K: usize>(
    buf: *const u64,
    octets: [usize; K],
    wanted: [bool; K],
    epoch: u32,
    waiter: &mut Waiter,
) -> [[f32; 8]; K] {
    loop {
        let mut words = [[0u64; 8]; K];
        let mut j = 0;
        while j < K {
            if wanted[j] {
                let mut k = 0;
                while k < 4 {
                    // SAFETY: forwarded contract.
                    let pair =
                        unsafe { device::load_relaxed_u64x2(buf.add(8 * octets[j] + 2 * k)) };
                    words[j][2 * k] = pair[0];
                    words[j][2 * k + 1] = pair[1];
                    k += 1;
                }
            }
            j += 1;
        }
        let mut ready = true;
        let mut j = 0;
        while j < K {
            if wanted[j] {
                let mut i = 0;
                while i < 8 {
                    ready &= epoch_of(words[j][i]) == epoch;
                    i += 1;
                }
            }
            j += 1;
        }
        if ready || !waiter.again(epoch) {
            waiter.done();
            let mut out = [[0.0f32; 8]; K];
            let mut j = 0;
            while j < K {
                let mut i = 0;
                while i < 8 {
                    out[j][i] = value_of(words[j][i]);
                    i += 1;
                }
                j += 1;
            }
            return out;
        }
    }
}

/// Elements `8m .. 8m + 8` of `buf` once they hold `epoch`.
///
/// # Safety
/// As [`await_octets`].
#[inline(always)]
pub unsafe fn await8(buf: *const u64, m: usize, epoch: u32, waiter: &mut Waiter) -> [f32; 8] {
    // SAFETY: forwarded contract.
    let [v] = unsafe { await_octets::<1>(buf, [m], [true], epoch, waiter) };
    v
}
