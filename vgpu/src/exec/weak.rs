//! The weak-visibility memory model: what the PTX memory model allows a plain store or load
//! to do between blocks, made to happen.
//!
//! * A block's plain (weak) stores to global memory go to a buffer of its own. Other blocks see
//!   them only when the block *publishes*: at a release (`st.release`, `atom.release`,
//!   `fence.acq_rel`/`fence.sc`, `membar`), or at a pseudo-random earlier moment (seeded,
//!   deterministic), or when its buffer is full. The block itself reads its own stores at once.
//! * A block's plain loads may return a block-local copy of a line taken at an earlier load,
//!   even though another block has published a newer value since, until the block acquires
//!   (`ld.acquire`, `atom.acquire`, a fence) — like an SM's L1 that is not coherent.
//! * A load or atomic that touches bytes another block has stored and not yet published is a
//!   **data race** report: in a correct program the consumer can only get there after an
//!   acquire that the producer's release paired with, by which time the bytes were published.
//!
//! So a missing fence or a relaxed arrive shows up as a race report or a stale value, instead
//! of working by luck as it does on a machine that publishes every store at once.

use std::collections::{HashMap, VecDeque};

use crate::memory::GlobalMemory;

const LINE: u64 = 64;
/// Lines a block's store buffer holds before it publishes the oldest.
const PENDING_LINES: usize = 4096;
/// Lines a block keeps stale copies of.
const L1_LINES: usize = 2048;

/// Settings of the weak-visibility mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeakOptions {
    /// Seed of the pseudo-random early publications.
    pub seed: u64,
    /// On average one plain store in this many also publishes one pending line early
    /// (0: never).
    pub early_publish_one_in: u32,
}

impl Default for WeakOptions {
    fn default() -> Self {
        WeakOptions {
            seed: 1,
            early_publish_one_in: 8,
        }
    }
}

/// How a load is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadKind {
    /// A plain load: may be served from the block's stale copy.
    Weak,
    /// `.volatile`, `.relaxed`, `.acquire`: always reads the published value.
    Strong,
}

struct PendingLine {
    data: [u8; LINE as usize],
    /// Which bytes of `data` hold unpublished stores.
    valid: u64,
}

/// The state of the weak-visibility model for one launch.
pub struct Weak {
    options: WeakOptions,
    rng: u64,
    /// Per resident block: unpublished stores by line address, and their order.
    pending: Vec<HashMap<u64, PendingLine>>,
    order: Vec<VecDeque<u64>>,
    /// Per resident block: stale copies of lines.
    l1: Vec<HashMap<u64, [u8; LINE as usize]>>,
    /// How many blocks hold unpublished bytes of each line.
    holders: HashMap<u64, u32>,
}

fn byte_mask(from: u64, len: u64) -> u64 {
    let bits = if len >= 64 {
        u64::MAX
    } else {
        (1u64 << len) - 1
    };
    bits << from
}

/// The pieces of `[addr, addr+len)` within each line: (line, offset in line, bytes, offset in
/// the access).
fn pieces(addr: u64, len: usize) -> impl Iterator<Item = (u64, u64, u64, usize)> {
    let mut at = addr;
    let end = addr + len as u64;
    std::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let line = at & !(LINE - 1);
        let from = at - line;
        let n = (LINE - from).min(end - at);
        let piece = (line, from, n, (at - addr) as usize);
        at += n;
        Some(piece)
    })
}

impl Weak {
    pub fn new(options: WeakOptions, slots: usize) -> Weak {
        Weak {
            options,
            rng: options.seed | 1,
            pending: (0..slots).map(|_| HashMap::new()).collect(),
            order: (0..slots).map(|_| VecDeque::new()).collect(),
            l1: (0..slots).map(|_| HashMap::new()).collect(),
            holders: HashMap::new(),
        }
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: deterministic for a seed.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Fails when another block holds unpublished bytes of `[addr, addr+len)`.
    fn check_race(&self, slot: usize, addr: u64, len: usize, what: &str) -> Result<(), String> {
        for (line, from, n, _) in pieces(addr, len) {
            let held = self.holders.get(&line).copied().unwrap_or(0);
            let own = self.pending[slot].contains_key(&line) as u32;
            if held <= own {
                continue;
            }
            let want = byte_mask(from, n);
            for (other, map) in self.pending.iter().enumerate() {
                if other == slot {
                    continue;
                }
                if let Some(p) = map.get(&line)
                    && p.valid & want != 0
                {
                    return Err(format!(
                        "{what} {len} bytes at {addr:#x} that the block in residency slot \
                         {other} stored and has not published (no release, fence or atomic \
                         since its store): a missing fence or a relaxed arrive"
                    ));
                }
            }
        }
        Ok(())
    }

    /// A load by the block in `slot`: the value it may see. Returns whether a stale copy was
    /// used for any byte.
    pub fn load(
        &mut self,
        mem: &mut GlobalMemory,
        slot: usize,
        addr: u64,
        out: &mut [u8],
        kind: LoadKind,
    ) -> Result<bool, String> {
        self.check_race(slot, addr, out.len(), "a load read")?;
        let mut stale = false;
        for (line, from, n, at) in pieces(addr, out.len()) {
            let (f, n) = (from as usize, n as usize);
            let mut bytes = [0u8; LINE as usize];
            let line_len = read_line(mem, line, &mut bytes);
            let published = bytes;
            if kind == LoadKind::Weak {
                if let Some(copy) = self.l1[slot].get(&line) {
                    bytes = *copy;
                } else if line_len > 0 {
                    if self.l1[slot].len() >= L1_LINES {
                        let victim = *self.l1[slot].keys().next().unwrap_or(&line);
                        self.l1[slot].remove(&victim);
                    }
                    self.l1[slot].insert(line, bytes);
                }
            }
            if let Some(p) = self.pending[slot].get(&line) {
                for (i, byte) in bytes.iter_mut().enumerate() {
                    if p.valid & (1 << i) != 0 {
                        *byte = p.data[i];
                    }
                }
            }
            stale |= bytes[f..f + n] != published[f..f + n]
                && self.pending[slot]
                    .get(&line)
                    .is_none_or(|p| p.valid & byte_mask(from, n as u64) == 0);
            out[at..at + n].copy_from_slice(&bytes[f..f + n]);
        }
        Ok(stale)
    }

    /// A store by the block in `slot`. Strong stores (`.relaxed`, `.volatile`, `.release`) are
    /// published at once; plain ones wait in the block's buffer.
    pub fn store(
        &mut self,
        mem: &mut GlobalMemory,
        slot: usize,
        addr: u64,
        bytes: &[u8],
        strong: bool,
    ) {
        for (line, from, n, at) in pieces(addr, bytes.len()) {
            let (f, nu) = (from as usize, n as usize);
            if let Some(copy) = self.l1[slot].get_mut(&line) {
                copy[f..f + nu].copy_from_slice(&bytes[at..at + nu]);
            }
            if strong {
                // A later strong store must not be overwritten by an older buffered one.
                if let Some(p) = self.pending[slot].get_mut(&line) {
                    p.valid &= !byte_mask(from, n);
                }
                write_bytes(mem, line + from, &bytes[at..at + nu]);
                continue;
            }
            let new_line = !self.pending[slot].contains_key(&line);
            let p = self.pending[slot].entry(line).or_insert(PendingLine {
                data: [0; LINE as usize],
                valid: 0,
            });
            p.data[f..f + nu].copy_from_slice(&bytes[at..at + nu]);
            p.valid |= byte_mask(from, n);
            if new_line {
                *self.holders.entry(line).or_insert(0) += 1;
                self.order[slot].push_back(line);
            }
        }
        if !strong {
            let one_in = self.options.early_publish_one_in as u64;
            if one_in > 0 && self.random().is_multiple_of(one_in) && !self.order[slot].is_empty() {
                let i = (self.random() % self.order[slot].len() as u64) as usize;
                if let Some(line) = self.order[slot].remove(i) {
                    self.publish_line(mem, slot, line);
                }
            }
            while self.order[slot].len() > PENDING_LINES {
                if let Some(line) = self.order[slot].pop_front() {
                    self.publish_line(mem, slot, line);
                }
            }
        }
    }

    fn publish_line(&mut self, mem: &mut GlobalMemory, slot: usize, line: u64) {
        let Some(p) = self.pending[slot].remove(&line) else {
            return;
        };
        if let Some(h) = self.holders.get_mut(&line) {
            *h -= 1;
            if *h == 0 {
                self.holders.remove(&line);
            }
        }
        let mut i = 0;
        while i < LINE as usize {
            if p.valid & (1 << i) == 0 {
                i += 1;
                continue;
            }
            let start = i;
            while i < LINE as usize && p.valid & (1 << i) != 0 {
                i += 1;
            }
            write_bytes(mem, line + start as u64, &p.data[start..i]);
        }
    }

    /// A release by the block in `slot`: everything it stored becomes visible.
    pub fn release(&mut self, mem: &mut GlobalMemory, slot: usize) {
        while let Some(line) = self.order[slot].pop_front() {
            self.publish_line(mem, slot, line);
        }
    }

    /// An acquire by the block in `slot`: its stale copies are dropped.
    pub fn acquire(&mut self, slot: usize) {
        self.l1[slot].clear();
    }

    /// Before an atomic of the block in `slot` on `[addr, addr+len)`: the block's own earlier
    /// stores there are published (atomics act on the coherent copy), and another block's
    /// unpublished stores there are a race.
    pub fn before_atomic(
        &mut self,
        mem: &mut GlobalMemory,
        slot: usize,
        addr: u64,
        len: usize,
    ) -> Result<(), String> {
        self.check_race(slot, addr, len, "an atomic touched")?;
        for (line, from, n, _) in pieces(addr, len).collect::<Vec<_>>() {
            // Only the bytes the atomic touches: the rest of the line stays unpublished.
            let want = byte_mask(from, n);
            let mut emptied = false;
            if let Some(p) = self.pending[slot].get_mut(&line)
                && p.valid & want != 0
            {
                let (f, e) = (from as usize, (from + n) as usize);
                for i in f..e {
                    if p.valid & (1 << i) != 0 {
                        write_bytes(mem, line + i as u64, &p.data[i..i + 1]);
                    }
                }
                p.valid &= !want;
                emptied = p.valid == 0;
            }
            if emptied {
                self.order[slot].retain(|&l| l != line);
                self.pending[slot].remove(&line);
                if let Some(h) = self.holders.get_mut(&line) {
                    *h -= 1;
                    if *h == 0 {
                        self.holders.remove(&line);
                    }
                }
            }
            self.l1[slot].remove(&line);
        }
        Ok(())
    }

    /// The end of the launch: everything is published.
    pub fn flush_all(&mut self, mem: &mut GlobalMemory) {
        for slot in 0..self.pending.len() {
            self.release(mem, slot);
            self.l1[slot].clear();
        }
    }
}

/// The published bytes of `line` (as much of it as lies inside an allocation); returns how
/// many bytes were readable.
fn read_line(mem: &mut GlobalMemory, line: u64, out: &mut [u8; LINE as usize]) -> usize {
    // Lines may straddle an allocation's end: read what is there, byte range by byte range.
    if let Ok((i, o)) = mem.locate(line, LINE) {
        out.copy_from_slice(&mem.bytes(i)[o..o + LINE as usize]);
        return LINE as usize;
    }
    let mut n = 0;
    for k in 0..LINE {
        if let Ok((i, o)) = mem.locate(line + k, 1) {
            out[k as usize] = mem.bytes(i)[o];
            n += 1;
        }
    }
    n
}

fn write_bytes(mem: &mut GlobalMemory, addr: u64, bytes: &[u8]) {
    // The store was checked against the allocation when it was made.
    let _ = mem.write(addr, bytes);
}
