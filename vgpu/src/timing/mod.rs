//! The timing model (`QWENMK_VGPU_TIMING=h100`): the same execution as the plain virtual GPU,
//! with a clock per SM that follows what an H100 would spend.
//!
//! * **Issue.** Each SM has four processing blocks; each issues at most one (SASS) instruction
//!   per cycle, from a warp whose operands are ready (a scoreboard per register), into a pipe
//!   that is free (FP32 / INT32 / MUFU / LSU occupancy per [`cost`]).
//! * **Memory.** Per SM: an L1 (the 256 KB pool less the shared memory in use) and a 128 B/cycle
//!   data path with bank conflicts for shared memory; an L2 port of 36 B/cycle. The L2 is two
//!   25 MB partitions: a line is homed in one; an SM reads its own partition ("near") faster
//!   than the other ("far"), and a far line is copied into the near partition, as on the H100.
//!   Misses queue for HBM, one pipe of 3.0 TB/s shared by every SM, and take the L2-miss
//!   latency once served. `prefetch.global.L2` fills L2 and costs HBM time without blocking.
//!   Atomics take an L2 round trip and hold their line; fences wait for the warp's stores.
//!
//! Every number is in [`params`] with its source. The model is a model: the figures it gives
//! are *simulated*, and everything that prints them says so.

pub mod cache;
pub mod cost;
pub mod params;

use std::collections::HashMap;

use cache::Cache;
use cost::{Cost, PIPES, Pipe};
pub use params::{H100_SXM, MODEL_VERSION, Params};

/// Where a memory instruction goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    Shared,
    Global,
    Param,
}

/// How HBM serves a miss. What warps ask for (loads, atomics, L2 prefetches) is served in the
/// order asked; bulk copies into shared memory (the copy engine's) take the bandwidth that
/// leaves, in order. One queue for both would make a 128-byte load wait behind every megabyte
/// that other SMs' copy engines have asked for; on the GPU a copy engine paces its requests
/// into bounded L2 miss queues that serve many sources in turn, so a bulk backlog waits at
/// its SM (A: no published figure for the H100's arbitration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Demand,
    Background,
}

/// What a memory instruction does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `l1`: may be served from and kept in L1 (plain loads); `acquire`: invalidates the SM's
    /// L1 first (`ld.acquire`).
    Load {
        l1: bool,
        acquire: bool,
    },
    Store,
    Atomic,
    Prefetch,
}

/// One memory instruction's active lanes.
pub struct Access<'a> {
    pub kind: Kind,
    pub space: Space,
    /// The active lanes' addresses (shared: offsets in the block's window).
    pub addrs: &'a [u64],
    /// Bytes each lane accesses.
    pub bytes: u32,
}

/// When a memory instruction is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    /// The destination registers can be read (loads, atomics).
    pub complete: u64,
    /// Stores are acknowledged (what a fence waits for).
    pub acked: u64,
}

struct Block {
    free: u64,
    pipes: [u64; PIPES],
}

struct Sm {
    blocks: Vec<Block>,
    l1: Cache,
    l1_free: u64,
    l2_port_free: f64,
    /// When the port of bulk copies into shared memory is free.
    bulk_port_free: f64,
    partition: usize,
}

/// Counters of one launch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    pub hbm_bytes: u64,
    pub hbm_busy_cycles: f64,
    pub l2_hit_bytes: u64,
    pub l2_far_hit_bytes: u64,
    pub l1_hit_bytes: u64,
    pub shared_bytes: u64,
    pub store_bytes: u64,
    pub prefetch_bytes: u64,
    pub atomics: u64,
    pub issued: u64,
    /// HBM busy cycles in each [`HBM_BIN_CYCLES`] of the launch (a request counted in the
    /// bin it begins in): when the pipe idled, so that a stage's share of the idle time can
    /// be told from its neighbours'.
    pub hbm_bins: Vec<f64>,
}

/// Cycles per bin of [`Counters::hbm_bins`].
pub const HBM_BIN_CYCLES: u64 = 1_000;

/// The machine state the model keeps between instructions (and launches: L2 contents carry
/// over from one launch to the next, as on the GPU).
pub struct Machine {
    pub params: Params,
    sms: Vec<Sm>,
    l2: [Cache; 2],
    /// When the HBM pipe has served every request so far (the background class queues here).
    hbm_free: f64,
    /// When it has served every demand request so far.
    demand_free: f64,
    atomic_free: HashMap<u64, u64>,
    pub counters: Counters,
    /// The cycle the current launch began at (the origin of `counters.hbm_bins`).
    launch_start: u64,
}

/// The L2 partition a line is homed in.
fn home(line: u64) -> usize {
    ((line.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) & 1) as usize
}

impl Machine {
    pub fn new(params: Params, sms: u32) -> Machine {
        let l1 = |p: &Params| Cache::new(p.l1_and_shared_bytes as u64, p.line_bytes, 8);
        Machine {
            sms: (0..sms)
                .map(|i| Sm {
                    blocks: (0..params.schedulers)
                        .map(|_| Block {
                            free: 0,
                            pipes: [0; PIPES],
                        })
                        .collect(),
                    l1: l1(&params),
                    l1_free: 0,
                    l2_port_free: 0.0,
                    bulk_port_free: 0.0,
                    partition: (i % 2) as usize,
                })
                .collect(),
            l2: [
                Cache::new(params.l2_partition_bytes, params.line_bytes, params.l2_ways),
                Cache::new(params.l2_partition_bytes, params.line_bytes, params.l2_ways),
            ],
            hbm_free: 0.0,
            demand_free: 0.0,
            launch_start: 0,
            atomic_free: HashMap::new(),
            counters: Counters::default(),
            params,
        }
    }

    pub fn sms(&self) -> usize {
        self.sms.len()
    }

    /// Starts a launch at cycle `start`: queues and pipes idle from then on; each SM's L1 is
    /// what its 256 KB pool leaves beside `shared_per_sm` bytes of shared memory (and starts
    /// empty); L2 keeps its contents.
    pub fn begin_launch(&mut self, start: u64, shared_per_sm: u64) {
        let p = self.params;
        let l1_bytes = (p.l1_and_shared_bytes as u64)
            .saturating_sub(shared_per_sm)
            .max(p.line_bytes as u64 * 8);
        for sm in &mut self.sms {
            sm.l1 = Cache::new(l1_bytes, p.line_bytes, 8);
            sm.l1_free = start;
            sm.l2_port_free = start as f64;
            sm.bulk_port_free = start as f64;
            for b in &mut sm.blocks {
                b.free = start;
                b.pipes = [start; PIPES];
            }
        }
        self.hbm_free = self.hbm_free.max(start as f64);
        self.demand_free = self.demand_free.max(start as f64);
        self.atomic_free.clear();
        self.counters = Counters::default();
        self.launch_start = start;
    }

    /// The cycle at or after `ready` when processing block `block` of SM `sm` can issue an
    /// instruction of cost `c`.
    pub fn issue_time(&self, sm: usize, block: usize, c: &Cost, ready: u64) -> u64 {
        let b = &self.sms[sm].blocks[block];
        let mut t = ready.max(b.free);
        if c.pipe != Pipe::Other {
            t = t.max(b.pipes[c.pipe as usize]);
        }
        t
    }

    /// Takes the issue slots and pipe time of an instruction issued at `t`.
    pub fn issue(&mut self, sm: usize, block: usize, c: &Cost, t: u64) {
        let b = &mut self.sms[sm].blocks[block];
        b.free = t + c.sass as u64;
        if c.pipe != Pipe::Other {
            b.pipes[c.pipe as usize] = t + c.occupancy.max(1) as u64;
        }
        self.counters.issued += c.sass as u64;
    }

    /// The sectors (and lines) the lanes touch: (line, sector mask), sorted.
    fn lines(&self, a: &Access) -> Vec<(u64, u8)> {
        let (lb, sb) = (
            self.params.line_bytes as u64,
            self.params.sector_bytes as u64,
        );
        let mut v: Vec<(u64, u8)> = Vec::with_capacity(a.addrs.len());
        for &addr in a.addrs {
            let last = addr + a.bytes.max(1) as u64 - 1;
            let mut s = addr / sb;
            while s <= last / sb {
                let line = s * sb / lb;
                let sector = ((s * sb % lb) / sb) as u8;
                v.push((line, 1 << sector));
                s += 1;
            }
        }
        v.sort_unstable_by_key(|x| x.0);
        let mut merged: Vec<(u64, u8)> = Vec::with_capacity(v.len());
        for (line, mask) in v {
            match merged.last_mut() {
                Some(last) if last.0 == line => last.1 |= mask,
                _ => merged.push((line, mask)),
            }
        }
        merged
    }

    /// The memory instruction `a` of SM `sm`, issued at cycle `t`.
    pub fn access(&mut self, sm: usize, t: u64, a: &Access) -> Done {
        let p = self.params;
        match a.space {
            Space::Param => {
                return Done {
                    complete: t + p.alu_latency as u64,
                    acked: t,
                };
            }
            Space::Shared => return self.shared(sm, t, a),
            Space::Global => {}
        }
        let lines = self.lines(a);
        let sector = p.sector_bytes as u64;
        let returned: u64 = match a.kind {
            Kind::Load { .. } | Kind::Atomic => {
                lines.iter().map(|l| l.1.count_ones() as u64 * sector).sum()
            }
            _ => 0,
        };
        // The SM's data path: 128 B/cycle returned, 4 tag lookups per cycle.
        let path_cycles = returned
            .div_ceil(p.l1_bytes_per_cycle as u64)
            .max((lines.len() as u64).div_ceil(p.l1_tags_per_cycle as u64))
            .max(1);
        let s = &mut self.sms[sm];
        let start = t.max(s.l1_free);
        s.l1_free = start + path_cycles;
        if let Kind::Load { acquire: true, .. } = a.kind {
            s.l1.clear();
        }
        let mut done = Done {
            complete: start,
            acked: start,
        };
        for &(line, want) in &lines {
            let bytes = want.count_ones() as u64 * sector;
            match a.kind {
                Kind::Load { l1, acquire } => {
                    let use_l1 = l1 && !acquire;
                    if use_l1 {
                        let f = self.sms[sm].l1.lookup(line);
                        if f.sectors & want == want {
                            self.counters.l1_hit_bytes += bytes;
                            done.complete = done
                                .complete
                                .max((start + p.l1_latency as u64).max(f.ready));
                            continue;
                        }
                    }
                    let at = self.l2_read(sm, start, line, want, true, Class::Demand);
                    if use_l1 {
                        self.sms[sm].l1.insert(line, want, at);
                    }
                    done.complete = done.complete.max(at);
                }
                Kind::Store => {
                    let port = self.port(sm, start, bytes);
                    let near = self.sms[sm].partition == home(line);
                    self.l2[home(line)].insert(line, want, port);
                    let lat = if near {
                        p.l2_near_latency
                    } else {
                        p.l2_far_latency
                    };
                    self.counters.store_bytes += bytes;
                    done.acked = done.acked.max(port + lat as u64);
                    // L1 keeps its copy up to date (write-through).
                    let l1 = &mut self.sms[sm].l1;
                    if l1.lookup(line).sectors != 0 {
                        l1.insert(line, want, port);
                    }
                }
                Kind::Atomic => {
                    self.counters.atomics += 1;
                    let port = self.port(sm, start, bytes);
                    let present = self.l2[home(line)].lookup(line);
                    let arrive = if present.sectors & want == want {
                        port + (p.atomic_latency / 2) as u64
                    } else {
                        self.l2_read(sm, port, line, want, false, Class::Demand)
                    };
                    let free = self.atomic_free.entry(line).or_insert(0);
                    let served = arrive.max(*free);
                    *free = served + p.atomic_line_cycles as u64;
                    let complete = served + (p.atomic_latency / 2) as u64;
                    done.complete = done.complete.max(complete);
                    done.acked = done.acked.max(complete);
                }
                Kind::Prefetch => {
                    // A request, no data back to the SM: no port time, no wait.
                    self.counters.prefetch_bytes += p.line_bytes as u64;
                    self.l2_read(sm, start, line, 0xf, false, Class::Demand);
                }
            }
        }
        done
    }

    /// A bulk copy of `bytes` from global `addr` into SM `sm`'s shared memory, issued at cycle
    /// `t`: every line is asked of L2 at once (HBM for the misses), and the lines come back
    /// through the SM's bulk-copy port in the order they reach L2. Returns when the last one is
    /// in shared memory.
    pub fn bulk_read(&mut self, sm: usize, t: u64, addr: u64, bytes: u64) -> u64 {
        if bytes == 0 {
            return t;
        }
        let lb = self.params.line_bytes as u64;
        let first = addr / lb;
        let last = (addr + bytes - 1) / lb;
        let mut arrivals: Vec<(u64, u64)> = (first..=last)
            .map(|line| {
                let lo = (line * lb).max(addr);
                let hi = ((line + 1) * lb).min(addr + bytes);
                let sectors = self.sectors(lo - line * lb, hi - line * lb);
                (
                    self.l2_fetch(sm, t, line, sectors, true, Class::Background),
                    hi - lo,
                )
            })
            .collect();
        arrivals.sort_unstable();
        let rate = self.params.bulk_bytes_per_cycle;
        let s = &mut self.sms[sm];
        for (at, n) in arrivals {
            let begin = s.bulk_port_free.max(at as f64);
            s.bulk_port_free = begin + n as f64 / rate;
        }
        s.bulk_port_free.ceil() as u64
    }

    /// The mask of the 32-byte sectors that bytes `from..to` of a line touch.
    fn sectors(&self, from: u64, to: u64) -> u8 {
        let sb = self.params.sector_bytes as u64;
        let mut mask = 0u8;
        let mut s = from / sb;
        while s * sb < to {
            mask |= 1 << s;
            s += 1;
        }
        mask
    }

    /// An acquire by an atomic empties the SM's L1, as an acquire load does (`CCTL.IVALL`).
    pub fn invalidate_l1(&mut self, sm: usize) {
        self.sms[sm].l1.clear();
    }

    /// Time on the SM's L2 port for `bytes`, from `t`; returns when they are through.
    fn port(&mut self, sm: usize, t: u64, bytes: u64) -> u64 {
        let rate = self.params.l2_port_bytes_per_cycle;
        let s = &mut self.sms[sm];
        let begin = s.l2_port_free.max(t as f64);
        s.l2_port_free = begin + bytes as f64 / rate;
        begin.ceil() as u64
    }

    /// Reads sectors `want` of `line` through L2 for SM `sm` from cycle `t`; returns when they
    /// arrive. `returns_data`: the bytes come back through the SM's L2 port.
    fn l2_read(
        &mut self,
        sm: usize,
        t: u64,
        line: u64,
        want: u8,
        returns_data: bool,
        class: Class,
    ) -> u64 {
        let bytes = want.count_ones() as u64 * self.params.sector_bytes as u64;
        let t = if returns_data {
            self.port(sm, t, bytes)
        } else {
            t
        };
        self.l2_fetch(sm, t, line, want, returns_data, class)
    }

    /// [`Machine::l2_read`] from the moment the request leaves the SM: `counted`, its hits
    /// count as bytes served by L2.
    fn l2_fetch(
        &mut self,
        sm: usize,
        t: u64,
        line: u64,
        want: u8,
        counted: bool,
        class: Class,
    ) -> u64 {
        let p = self.params;
        let bytes = want.count_ones() as u64 * p.sector_bytes as u64;
        let returns_data = counted;
        let near = self.sms[sm].partition;
        let home = home(line);
        let here = self.l2[near].lookup(line);
        if here.sectors & want == want {
            if returns_data {
                self.counters.l2_hit_bytes += bytes;
            }
            return (t + p.l2_near_latency as u64).max(here.ready);
        }
        if near != home {
            let there = self.l2[home].lookup(line);
            if there.sectors & want == want {
                if returns_data {
                    self.counters.l2_hit_bytes += bytes;
                    self.counters.l2_far_hit_bytes += bytes;
                }
                let at = (t + p.l2_far_latency as u64).max(there.ready);
                // The far partition's line is copied into the near one.
                self.l2[near].insert(line, want, at);
                return at;
            }
        }
        // Miss: the sectors not present anywhere come from HBM.
        let have = self.l2[home].lookup(line).sectors;
        let missing = want & !have;
        let miss_bytes = missing.count_ones() as u64 * p.sector_bytes as u64;
        let rate = p.hbm_bytes_per_cycle();
        let busy = miss_bytes as f64 / rate;
        let begin = match class {
            // Background traffic takes what the pipe has left, in order.
            Class::Background => {
                let begin = self.hbm_free.max(t as f64);
                self.hbm_free = begin + busy;
                begin
            }
            // A demand miss waits for the demand traffic ahead of it, and pushes the
            // background backlog back by its own bytes: the pipe's bandwidth is shared.
            Class::Demand => {
                let begin = self.demand_free.max(t as f64);
                self.demand_free = begin + busy;
                self.hbm_free = self.hbm_free.max(begin) + busy;
                begin
            }
        };
        self.counters.hbm_bytes += miss_bytes;
        self.counters.hbm_busy_cycles += busy;
        let bin = (begin as u64).saturating_sub(self.launch_start) / HBM_BIN_CYCLES;
        let bins = &mut self.counters.hbm_bins;
        if bins.len() <= bin as usize {
            bins.resize(bin as usize + 1, 0.0);
        }
        bins[bin as usize] += busy;
        let latency = if near == home {
            p.hbm_near_latency
        } else {
            p.hbm_far_latency
        };
        let at = begin.ceil() as u64 + latency as u64;
        self.l2[home].insert(line, missing, at);
        if near != home {
            self.l2[near].insert(line, want, at);
        }
        at
    }

    /// Shared memory: bank conflicts (32 banks of 4 bytes) replay the access.
    fn shared(&mut self, sm: usize, t: u64, a: &Access) -> Done {
        let p = self.params;
        let mut words: Vec<u64> = Vec::with_capacity(a.addrs.len() * 4);
        for &addr in a.addrs {
            let first = addr / 4;
            let n = (a.bytes.max(4) / 4) as u64;
            words.extend(first..first + n);
        }
        words.sort_unstable();
        words.dedup();
        let mut per_bank = [0u32; 32];
        for w in &words {
            per_bank[(w % 32) as usize] += 1;
        }
        let degree = per_bank.iter().copied().max().unwrap_or(1).max(1) as u64;
        let bytes = words.len() as u64 * 4;
        let cycles = degree.max(bytes.div_ceil(p.l1_bytes_per_cycle as u64));
        let s = &mut self.sms[sm];
        let start = t.max(s.l1_free);
        s.l1_free = start + cycles;
        self.counters.shared_bytes += bytes;
        let complete = start + p.shared_latency as u64 + cycles - 1;
        Done {
            complete,
            acked: complete,
        }
    }
}

/// A launch's simulated figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub model: &'static str,
    pub cycles: u64,
    pub counters: Counters,
    /// Every reduction (`red`, an atomic without a result: the decode step's stage marks):
    /// (block, cycles since the launch began).
    pub marks: Vec<(u32, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(addrs: &[u64], bytes: u32) -> Access<'_> {
        Access {
            kind: Kind::Load {
                l1: false,
                acquire: false,
            },
            space: Space::Global,
            addrs,
            bytes,
        }
    }

    #[test]
    fn a_miss_then_a_near_or_far_hit() {
        let mut m = Machine::new(H100_SXM, 2);
        m.begin_launch(0, 0);
        let p = H100_SXM;
        // A line homed in partition 0: SM 0 is near it, SM 1 far.
        let line = (0..1000u64).find(|&l| home(l) == 0).unwrap();
        let addr = [line * 128];
        let first = m.access(0, 0, &load(&addr, 4));
        assert_eq!(first.complete, p.hbm_near_latency as u64);
        let hit = m.access(0, 10_000, &load(&addr, 4));
        assert_eq!(hit.complete, 10_000 + p.l2_near_latency as u64);
        let far = m.access(1, 20_000, &load(&addr, 4));
        assert_eq!(far.complete, 20_000 + p.l2_far_latency as u64);
        // Now copied near SM 1 as well.
        let again = m.access(1, 30_000, &load(&addr, 4));
        assert_eq!(again.complete, 30_000 + p.l2_near_latency as u64);
        assert_eq!(m.counters.hbm_bytes, 32);
    }

    #[test]
    fn hbm_busy_time_is_binned_by_when_it_begins_in_the_launch() {
        let mut m = Machine::new(H100_SXM, 1);
        m.begin_launch(5_000, 0);
        // One line at the launch's start, one 2.5 bins later, none in between.
        m.access(0, 5_000, &load(&[0], 4));
        m.access(0, 5_000 + 5 * HBM_BIN_CYCLES / 2, &load(&[1 << 20], 4));
        let bins = &m.counters.hbm_bins;
        assert_eq!(bins.len(), 3);
        assert!(bins[0] > 0.0 && bins[1] == 0.0 && bins[2] > 0.0, "{bins:?}");
        let total: f64 = bins.iter().sum();
        assert!((total - m.counters.hbm_busy_cycles).abs() < 1e-9);
        // A new launch starts its bins again.
        m.begin_launch(100_000, 0);
        assert!(m.counters.hbm_bins.is_empty());
    }

    #[test]
    fn hbm_is_a_shared_pipe() {
        let mut m = Machine::new(H100_SXM, 1);
        m.begin_launch(0, 0);
        // 1,000 distinct lines requested at once: the last waits for the pipe.
        let addrs: Vec<u64> = (0..1000u64).map(|i| i * 128 * 1024).collect();
        let mut last = 0;
        for a in &addrs {
            last = last.max(m.access(0, 0, &load(std::slice::from_ref(a), 128)).complete);
        }
        let bytes = 1000.0 * 128.0;
        let pipe = bytes / H100_SXM.hbm_bytes_per_cycle();
        assert!(last as f64 >= pipe, "{last} < {pipe}");
    }

    #[test]
    fn shared_bank_conflicts_replay() {
        let mut m = Machine::new(H100_SXM, 1);
        m.begin_launch(0, 0);
        let same_bank: Vec<u64> = (0..32u64).map(|i| i * 128).collect();
        let spread: Vec<u64> = (0..32u64).map(|i| i * 4).collect();
        let a = Access {
            kind: Kind::Load {
                l1: false,
                acquire: false,
            },
            space: Space::Shared,
            addrs: &same_bank,
            bytes: 4,
        };
        let conflicted = m.access(0, 0, &a).complete;
        let b = Access {
            addrs: &spread,
            ..a
        };
        let clean = m.access(0, 1000, &b).complete - 1000;
        assert_eq!(clean, H100_SXM.shared_latency as u64);
        assert_eq!(conflicted, H100_SXM.shared_latency as u64 + 31);
    }
}
