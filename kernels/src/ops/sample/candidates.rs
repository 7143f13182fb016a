//! The top [`CANDIDATES`] argmax keys of a stream, kept by each warp while the LM head runs, then
//! merged per block and across the grid.
//!
//! * A [`WarpTopK`] holds the warp's best keys so far as a sorted list in shared memory and a
//!   threshold (its last entry once full) in a register. A lane whose key beats the threshold
//!   stages it in its own few slots, kept sorted; nothing else happens per row. Every
//!   [`STAGE_SLOTS`] passes the warp votes, and only if some lane staged a key it merges.
//! * Every merge here ranks each key among all the sorted inputs (binary or short linear
//!   searches) and writes it at its rank: no sorting network, one warp or block barrier before
//!   and after, and the result depends only on the set of keys, never on which lane, warp or
//!   block produced them or when. Keys are unique (they carry the row), so ranks never collide.
//!
//! Key 0 is never a real key (see [`crate::ops::argmax::argmax_key`]): it marks empty slots.

use crate::device;

/// Candidates kept: the largest `--top-k` the fused sampler accepts.
pub const CANDIDATES: usize = 64;
/// Keys one lane may stage between merges; a lane stages at most one key per pass.
pub const STAGE_SLOTS: usize = 4;
/// Shared-memory words (u64) one warp's [`WarpTopK`] uses: two list buffers, the lanes' staging
/// slots, and the lanes' staged counts.
pub const WARP_WORDS: usize = 2 * CANDIDATES + (STAGE_SLOTS + 1) * device::WARP_SIZE as usize;

const STAGE_AT: usize = 2 * CANDIDATES;
const COUNTS_AT: usize = STAGE_AT + STAGE_SLOTS * device::WARP_SIZE as usize;

/// How many of the first `n` entries of the descending, zero-padded `list` are above `key`.
///
/// # Safety
/// `list` must hold `n` readable keys.
#[inline(always)]
pub unsafe fn count_above(list: *const u64, n: usize, key: u64) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = (lo + hi) / 2;
        // SAFETY: `mid < n`.
        if unsafe { list.add(mid).read() } > key {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// One warp's running top [`CANDIDATES`]. Fields marked uniform hold the same value on every
/// lane.
pub struct WarpTopK {
    words: *mut u64,
    /// Lanes between two lanes that may offer keys (`lanes_per_row` of the matvec).
    producer_stride: u32,
    /// Which list buffer holds the list (uniform).
    current: usize,
    /// Keys in the list (uniform).
    filled: usize,
    /// Keys at or below this cannot enter (uniform): the last key once the list is full.
    threshold: u64,
    /// Keys this lane has staged since the last merge.
    staged: usize,
    /// Passes since the last vote (uniform).
    passes: usize,
}

impl WarpTopK {
    /// An empty list in `words` ([`WARP_WORDS`] of shared memory owned by this warp). Every
    /// lane of the warp must call it.
    ///
    /// # Safety
    /// `words` must be this warp's own, 8-byte aligned shared memory.
    #[inline(always)]
    pub unsafe fn new(words: *mut u64, producer_stride: u32) -> Self {
        let lane = device::lane_id() as usize;
        // SAFETY: inside the warp's area.
        unsafe {
            words.add(lane).write(0);
            words.add(lane + 32).write(0);
            words.add(COUNTS_AT + lane).write(0);
        }
        device::sync_warp();
        WarpTopK {
            words,
            producer_stride,
            current: 0,
            filled: 0,
            threshold: 0,
            staged: 0,
            passes: 0,
        }
    }

    #[inline(always)]
    fn list(&self, which: usize) -> *mut u64 {
        // SAFETY (of the pointer arithmetic): both buffers lie inside the warp's area.
        unsafe { self.words.add(which * CANDIDATES) }
    }

    #[inline(always)]
    fn stage(&self, lane: usize) -> *mut u64 {
        // SAFETY (of the pointer arithmetic): every lane's slots lie inside the warp's area.
        unsafe { self.words.add(STAGE_AT + lane * STAGE_SLOTS) }
    }

    /// This lane's key for the current pass; lanes may call it or not (it touches only the
    /// lane's own slots). At most once per lane per pass.
    ///
    /// # Safety
    /// As [`WarpTopK::new`].
    #[inline(always)]
    pub unsafe fn offer(&mut self, key: u64) {
        if key <= self.threshold {
            return;
        }
        let stage = self.stage(device::lane_id() as usize);
        let mut i = self.staged;
        // Insertion keeps the lane's slots sorted, highest first, for the merge's searches.
        // SAFETY: `staged < STAGE_SLOTS` (one key per pass, a vote every STAGE_SLOTS passes).
        unsafe {
            while i > 0 && stage.add(i - 1).read() < key {
                stage.add(i).write(stage.add(i - 1).read());
                i -= 1;
            }
            stage.add(i).write(key);
        }
        self.staged += 1;
    }

    /// Ends a pass; every lane of the warp calls it, converged.
    ///
    /// # Safety
    /// As [`WarpTopK::new`].
    #[inline(always)]
    pub unsafe fn end_pass(&mut self) {
        self.passes += 1;
        if self.passes == STAGE_SLOTS {
            // SAFETY: forwarded contract.
            unsafe { self.flush() };
        }
    }

    /// Merges every lane's staged keys into the list, if any lane staged one.
    #[inline(always)]
    unsafe fn flush(&mut self) {
        self.passes = 0;
        if !device::warp_any(self.staged > 0) {
            return;
        }
        let lane = device::lane_id() as usize;
        // SAFETY: the lane's own count slot.
        unsafe { self.words.add(COUNTS_AT + lane).write(self.staged as u64) };
        device::sync_warp();
        // SAFETY: every lane's staging and count are visible after the barrier.
        unsafe { self.merge() };
        self.staged = 0;
        device::sync_warp();
        self.current ^= 1;
        self.threshold = if self.filled == CANDIDATES {
            // SAFETY: the merged list, visible after the barrier.
            unsafe { self.list(self.current).add(CANDIDATES - 1).read() }
        } else {
            0
        };
    }

    /// Staged keys of `lane` above `key` (the slots are sorted, highest first).
    #[inline(always)]
    unsafe fn staged_above(&self, lane: usize, key: u64) -> usize {
        // SAFETY: count and slots of a lane of this warp.
        let count = unsafe { self.words.add(COUNTS_AT + lane).read() } as usize;
        let stage = self.stage(lane);
        let mut n = 0;
        // SAFETY: `n < count ≤ STAGE_SLOTS`.
        while n < count && unsafe { stage.add(n).read() } > key {
            n += 1;
        }
        n
    }

    /// Staged keys of every producing lane but `skip` above `key`.
    #[inline(always)]
    unsafe fn all_staged_above(&self, key: u64, skip: usize) -> usize {
        let mut n = 0;
        let mut lane = 0;
        while lane < device::WARP_SIZE as usize {
            if lane != skip {
                // SAFETY: a lane of this warp.
                n += unsafe { self.staged_above(lane, key) };
            }
            lane += self.producer_stride as usize;
        }
        n
    }

    /// The list merged with every lane's staged keys, into the other buffer.
    #[inline(always)]
    unsafe fn merge(&mut self) {
        let lane = device::lane_id() as usize;
        let (src, dst) = (self.list(self.current), self.list(self.current ^ 1));
        let mut total = self.filled;
        let mut j = 0;
        while j < device::WARP_SIZE as usize {
            // SAFETY: a lane's count slot.
            total += unsafe { self.words.add(COUNTS_AT + j).read() } as usize;
            j += self.producer_stride as usize;
        }
        let merged = if total < CANDIDATES {
            total
        } else {
            CANDIDATES
        };
        // SAFETY: all reads are of this warp's area, written before the barrier in `flush`;
        // each write goes to a distinct rank or to an empty position of `dst`.
        unsafe {
            let mut half = 0;
            while half < 2 {
                let i = lane + 32 * half;
                if i < self.filled {
                    let key = src.add(i).read();
                    let rank = i + self.all_staged_above(key, usize::MAX);
                    if rank < CANDIDATES {
                        dst.add(rank).write(key);
                    }
                }
                if i >= merged {
                    dst.add(i).write(0);
                }
                half += 1;
            }
            let stage = self.stage(lane);
            let mut t = 0;
            while t < self.staged {
                let key = stage.add(t).read();
                let rank =
                    t + count_above(src, self.filled, key) + self.all_staged_above(key, lane);
                if rank < CANDIDATES {
                    dst.add(rank).write(key);
                }
                t += 1;
            }
        }
        self.filled = merged;
    }

    /// Merges what is still staged and leaves the list in the first buffer of the warp's area
    /// (descending, zero-padded). Every lane of the warp calls it, converged.
    ///
    /// # Safety
    /// As [`WarpTopK::new`].
    #[inline(always)]
    pub unsafe fn finish(&mut self) {
        // SAFETY: forwarded contract.
        unsafe { self.flush() };
        if self.current == 1 {
            let lane = device::lane_id() as usize;
            // SAFETY: both buffers are the warp's; the barrier orders the copy before reads.
            unsafe {
                let (from, to) = (self.list(1), self.list(0));
                to.add(lane).write(from.add(lane).read());
                to.add(lane + 32).write(from.add(lane + 32).read());
            }
            device::sync_warp();
            self.current = 0;
        }
    }
}

/// Merges the lists every warp of the block left with [`WarpTopK::finish`] (one per
/// [`WARP_WORDS`] area from `areas`) into `dest`: the block's top [`CANDIDATES`], descending and
/// zero-padded. Every thread of the block calls it; it begins and ends with a block barrier.
///
/// # Safety
/// `areas` must be the block's shared memory of `warps_per_block` warp areas; `dest` must hold
/// [`CANDIDATES`] writable keys that no other block touches now.
#[inline(always)]
pub unsafe fn merge_block(areas: *const u64, dest: *mut u64) {
    device::sync_threads();
    let warps = device::warps_per_block() as usize;
    let list = |w: usize| {
        // SAFETY (of the pointer arithmetic): inside the block's areas.
        unsafe { areas.add(w * WARP_WORDS) }
    };
    // SAFETY: the lists were written before the barrier; each write goes to a distinct rank
    // or to an empty position of `dest`.
    unsafe {
        let mut total = 0;
        let mut w = 0;
        while w < warps {
            total += count_above(list(w), CANDIDATES, 0);
            w += 1;
        }
        let mut idx = device::thread_idx() as usize;
        while idx < warps * CANDIDATES {
            let (w, i) = (idx / CANDIDATES, idx % CANDIDATES);
            let key = list(w).add(i).read();
            if key != 0 {
                let mut rank = i;
                let mut other = 0;
                while other < warps {
                    if other != w {
                        rank += count_above(list(other), CANDIDATES, key);
                    }
                    other += 1;
                }
                if rank < CANDIDATES {
                    dest.add(rank).write(key);
                }
            }
            idx += device::block_dim() as usize;
        }
        let mut p = device::thread_idx() as usize;
        while p < CANDIDATES {
            if p >= total {
                dest.add(p).write(0);
            }
            p += device::block_dim() as usize;
        }
    }
    device::sync_threads();
}
