//! Asynchronous copies into shared memory and the `mbarrier` objects they complete on: sm_90's
//! bulk copies (`cp.async.bulk` … `mbarrier::complete_tx::bytes`, the TMA) and sm_80's
//! per-thread `cp.async` with commit and wait groups.
//!
//! A copy reads its source when it is issued and writes shared memory only when it *lands*:
//! when a wait that covers it (an `mbarrier` phase, a `cp.async.wait_group`) finds its time
//! come. Until then the destination bytes are the block's old ones, and a plain access to them
//! is a fault: a kernel that reads a buffer before waiting for the copy into it, or writes one
//! a copy is still filling, is told so instead of reading data early by luck.
//!
//! Time: on the plain interpreter a copy lands when a wait first looks at it
//! ([`UNTIMED_LATENCY_NS`] is 0: a wait that spun until a virtual latency passed made every
//! block of a 132-SM grid spin through whole quanta at every chunk); the timing model gives
//! each copy its own landing time from the memory system. Either way a read before any wait
//! finds the copy in flight.

use std::collections::HashMap;

/// How long a copy takes to land on the plain interpreter (virtual nanoseconds) once issued:
/// nothing, but it still lands only when a wait covers it.
pub const UNTIMED_LATENCY_NS: u64 = 0;

/// One copy in flight.
#[derive(Debug, Clone)]
struct Pending {
    /// Destination offset in the block's shared memory, and the bytes to write there.
    dst: usize,
    data: Vec<u8>,
    /// When it lands (virtual ns).
    ready_ns: u64,
    /// The mbarrier (shared offset) it completes transaction bytes on, for a bulk copy.
    mbar: Option<usize>,
    /// (thread in the block, group) of a `cp.async`.
    group: Option<(u32, u32)>,
}

/// An `mbarrier` object: arrivals and transaction bytes a phase still expects.
#[derive(Debug, Clone, Copy)]
struct Mbar {
    count: u32,
    arrivals_left: u32,
    tx_left: i64,
    /// Phases completed (the current phase's parity is `phase & 1`).
    phase: u32,
}

impl Mbar {
    fn settle(&mut self) {
        if self.arrivals_left == 0 && self.tx_left == 0 {
            self.phase = self.phase.wrapping_add(1);
            self.arrivals_left = self.count;
        }
    }
}

/// A block's copies in flight, its mbarriers, and its threads' `cp.async` groups.
#[derive(Debug, Clone, Default)]
pub struct Copies {
    pending: Vec<Pending>,
    mbars: HashMap<usize, Mbar>,
    /// Per thread: groups committed so far (its next copies join group `committed`).
    committed: Vec<u32>,
}

/// What went wrong with an mbarrier or a copy (the caller adds the lane and the PTX line).
pub type CopyError = String;

impl Copies {
    /// Forgets everything: a new block starts in the slot.
    pub fn reset(&mut self, threads: u32) {
        self.pending.clear();
        self.mbars.clear();
        self.committed.clear();
        self.committed.resize(threads as usize, 0);
    }

    /// Copies that have not landed.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Whether `[off, off + len)` of shared memory is the destination of a copy in flight.
    pub fn overlaps(&self, off: usize, len: usize) -> bool {
        self.pending
            .iter()
            .any(|p| off < p.dst + p.data.len() && p.dst < off + len)
    }

    pub fn init(&mut self, at: usize, count: u32) -> Result<(), CopyError> {
        if count == 0 {
            return Err("`mbarrier.init` with an expected count of 0".into());
        }
        self.mbars.insert(
            at,
            Mbar {
                count,
                arrivals_left: count,
                tx_left: 0,
                phase: 0,
            },
        );
        Ok(())
    }

    fn mbar(&mut self, at: usize) -> Result<&mut Mbar, CopyError> {
        self.mbars.get_mut(&at).ok_or_else(|| {
            format!("shared offset {at:#x} is not an initialised mbarrier (`mbarrier.init` first)")
        })
    }

    /// One arrival, after raising the phase's expected transaction bytes by `tx`. Returns the
    /// state token (the phase it arrived in).
    pub fn arrive(&mut self, at: usize, tx: u32) -> Result<u64, CopyError> {
        let m = self.mbar(at)?;
        if m.arrivals_left == 0 {
            return Err(format!(
                "more arrivals on the mbarrier at shared offset {at:#x} than its count of {}",
                m.count
            ));
        }
        let phase = m.phase;
        m.tx_left += tx as i64;
        m.arrivals_left -= 1;
        m.settle();
        Ok(phase as u64)
    }

    /// Lands the copies on `at` whose time has come (all of them with `all`), then says
    /// whether the phase of `parity` has completed.
    pub fn phase_done(
        &mut self,
        shared: &mut [u8],
        at: usize,
        parity: u32,
        now_ns: u64,
    ) -> Result<bool, CopyError> {
        self.mbar(at)?;
        self.land(shared, now_ns, |p| p.mbar == Some(at));
        let m = self.mbar(at)?;
        Ok((m.phase & 1) != (parity & 1))
    }

    /// When the current phase of the mbarrier at `at` will complete if nothing else arrives:
    /// all its arrivals are in and its copies in flight carry exactly the bytes it still
    /// expects. `None` when that cannot be told yet (or it is not an mbarrier).
    pub fn phase_ready_ns(&self, at: usize) -> Option<u64> {
        let m = self.mbars.get(&at)?;
        if m.arrivals_left != 0 {
            return None;
        }
        let mut bytes = 0i64;
        let mut ready = 0u64;
        for p in self.pending.iter().filter(|p| p.mbar == Some(at)) {
            bytes += p.data.len() as i64;
            ready = ready.max(p.ready_ns);
        }
        (bytes == m.tx_left).then_some(ready)
    }

    /// A bulk copy of `data` to `dst`, landing at `ready_ns` and completing its bytes on the
    /// mbarrier at `mbar`.
    pub fn bulk(
        &mut self,
        dst: usize,
        data: Vec<u8>,
        mbar: usize,
        ready_ns: u64,
    ) -> Result<(), CopyError> {
        self.mbar(mbar)?;
        self.check_free(dst, data.len())?;
        self.pending.push(Pending {
            dst,
            data,
            ready_ns,
            mbar: Some(mbar),
            group: None,
        });
        Ok(())
    }

    /// Thread `thread`'s `cp.async` of `data` to `dst`, in its current group.
    pub fn thread_copy(
        &mut self,
        thread: u32,
        dst: usize,
        data: Vec<u8>,
        ready_ns: u64,
    ) -> Result<(), CopyError> {
        self.check_free(dst, data.len())?;
        let group = self.committed[thread as usize];
        self.pending.push(Pending {
            dst,
            data,
            ready_ns,
            mbar: None,
            group: Some((thread, group)),
        });
        Ok(())
    }

    pub fn commit(&mut self, thread: u32) {
        let c = &mut self.committed[thread as usize];
        *c = c.wrapping_add(1);
    }

    /// When the groups that `cp.async.wait_group n` of `thread` waits for have landed.
    pub fn groups_ready_ns(&self, thread: u32, n: u32) -> u64 {
        let limit = self.committed[thread as usize].saturating_sub(n);
        self.pending
            .iter()
            .filter(|p| matches!(p.group, Some((t, g)) if t == thread && g < limit))
            .map(|p| p.ready_ns)
            .max()
            .unwrap_or(0)
    }

    /// `cp.async.wait_group n` of `thread`: its copies of every group but the `n` most recent
    /// committed ones land.
    pub fn wait_groups(&mut self, shared: &mut [u8], thread: u32, n: u32) {
        let limit = self.committed[thread as usize].saturating_sub(n);
        self.land(
            shared,
            u64::MAX,
            |p| matches!(p.group, Some((t, g)) if t == thread && g < limit),
        );
    }

    /// Writes the copies that `which` selects and whose time has come, and forgets them;
    /// bulk copies complete their bytes on their mbarrier.
    fn land(&mut self, shared: &mut [u8], now_ns: u64, which: impl Fn(&Pending) -> bool) {
        let mut i = 0;
        while i < self.pending.len() {
            let p = &self.pending[i];
            if !(which(p) && p.ready_ns <= now_ns) {
                i += 1;
                continue;
            }
            let p = self.pending.swap_remove(i);
            shared[p.dst..p.dst + p.data.len()].copy_from_slice(&p.data);
            if let Some(at) = p.mbar
                && let Some(m) = self.mbars.get_mut(&at)
            {
                m.tx_left -= p.data.len() as i64;
                m.settle();
            }
        }
    }

    fn check_free(&self, dst: usize, len: usize) -> Result<(), CopyError> {
        if self.overlaps(dst, len) {
            return Err(format!(
                "a copy into {len} bytes at shared offset {dst:#x}, where another copy is still \
                 in flight"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phase_completes_when_its_arrival_and_its_bytes_are_in() {
        let mut c = Copies::default();
        c.reset(32);
        let mut shared = vec![0u8; 64];
        c.init(0, 1).unwrap();
        c.arrive(0, 16).unwrap();
        c.bulk(16, vec![7; 16], 0, 100).unwrap();
        assert_eq!(c.phase_ready_ns(0), Some(100));
        // Not yet landed: the phase is still open and the bytes are the old ones.
        assert!(!c.phase_done(&mut shared, 0, 0, 99).unwrap());
        assert!(c.overlaps(20, 4));
        assert_eq!(shared[16], 0);
        assert!(c.phase_done(&mut shared, 0, 0, 100).unwrap());
        assert_eq!(&shared[16..32], &[7; 16]);
        assert_eq!(c.in_flight(), 0);
        // The next phase has parity 1 and is open again.
        assert!(!c.phase_done(&mut shared, 0, 1, 1_000).unwrap());
    }

    #[test]
    fn wait_group_lands_all_but_the_newest_groups() {
        let mut c = Copies::default();
        c.reset(2);
        let mut shared = vec![0u8; 32];
        c.thread_copy(1, 0, vec![1; 16], 50).unwrap();
        c.commit(1);
        c.thread_copy(1, 16, vec![2; 16], 60).unwrap();
        c.commit(1);
        assert_eq!(c.groups_ready_ns(1, 1), 50);
        c.wait_groups(&mut shared, 1, 1);
        assert_eq!(shared[0], 1);
        assert_eq!(shared[16], 0, "the newest group is still in flight");
        c.wait_groups(&mut shared, 1, 0);
        assert_eq!(shared[16], 2);
    }

    #[test]
    fn misuse_is_an_error() {
        let mut c = Copies::default();
        c.reset(1);
        assert!(
            c.arrive(8, 0)
                .unwrap_err()
                .contains("not an initialised mbarrier")
        );
        c.init(8, 1).unwrap();
        c.arrive(8, 32).unwrap();
        assert!(c.arrive(8, 0).unwrap_err().contains("more arrivals"));
        c.bulk(64, vec![0; 32], 8, 10).unwrap();
        assert!(
            c.bulk(80, vec![0; 16], 8, 10)
                .unwrap_err()
                .contains("still in flight")
        );
    }
}
