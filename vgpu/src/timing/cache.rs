//! A set-associative cache of 128-byte lines with 32-byte sectors and LRU replacement, which
//! remembers when each line's data arrives (a line being filled is present but not ready).

const EMPTY: u64 = u64::MAX;

pub struct Cache {
    sets: usize,
    ways: usize,
    tags: Vec<u64>,
    sectors: Vec<u8>,
    ready: Vec<u64>,
    stamp: Vec<u64>,
    tick: u64,
}

/// What a lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// Sectors of the line present.
    pub sectors: u8,
    /// Cycle at which they are (or were) filled.
    pub ready: u64,
}

fn spread(line: u64) -> u64 {
    // Fibonacci hashing: consecutive lines land in different sets.
    line.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 24
}

impl Cache {
    /// A cache of `bytes` in lines of `line_bytes`, `ways`-way set associative.
    pub fn new(bytes: u64, line_bytes: u32, ways: u32) -> Cache {
        let lines = (bytes / line_bytes as u64).max(ways as u64) as usize;
        let ways = ways as usize;
        let sets = (lines / ways).max(1);
        Cache {
            sets,
            ways,
            tags: vec![EMPTY; sets * ways],
            sectors: vec![0; sets * ways],
            ready: vec![0; sets * ways],
            stamp: vec![0; sets * ways],
            tick: 0,
        }
    }

    fn slots(&self, line: u64) -> std::ops::Range<usize> {
        let set = (spread(line) % self.sets as u64) as usize;
        set * self.ways..(set + 1) * self.ways
    }

    /// The line's present sectors (0 if absent), marking it most recently used.
    pub fn lookup(&mut self, line: u64) -> Found {
        self.tick += 1;
        for i in self.slots(line) {
            if self.tags[i] == line {
                self.stamp[i] = self.tick;
                return Found {
                    sectors: self.sectors[i],
                    ready: self.ready[i],
                };
            }
        }
        Found {
            sectors: 0,
            ready: 0,
        }
    }

    /// Adds `sectors` of `line`, filled at `ready`, evicting the least recently used line of
    /// its set when it is absent.
    pub fn insert(&mut self, line: u64, sectors: u8, ready: u64) {
        self.tick += 1;
        let range = self.slots(line);
        let mut victim = range.start;
        for i in range {
            if self.tags[i] == line {
                self.sectors[i] |= sectors;
                self.ready[i] = self.ready[i].max(ready);
                self.stamp[i] = self.tick;
                return;
            }
            if self.tags[i] == EMPTY || self.stamp[i] < self.stamp[victim] {
                victim = i;
            }
            if self.tags[i] == EMPTY {
                break;
            }
        }
        self.tags[victim] = line;
        self.sectors[victim] = sectors;
        self.ready[victim] = ready;
        self.stamp[victim] = self.tick;
    }

    /// Drops everything (an acquire invalidates an SM's L1).
    pub fn clear(&mut self) {
        self.tags.fill(EMPTY);
        self.sectors.fill(0);
    }

    pub fn capacity_lines(&self) -> usize {
        self.sets * self.ways
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_misses_and_lru_eviction() {
        // 4 lines, 2 ways: 2 sets.
        let mut c = Cache::new(4 * 128, 128, 2);
        assert_eq!(c.lookup(5).sectors, 0);
        c.insert(5, 0b0011, 100);
        assert_eq!(
            c.lookup(5),
            Found {
                sectors: 0b0011,
                ready: 100
            }
        );
        c.insert(5, 0b0100, 50);
        assert_eq!(c.lookup(5).sectors, 0b0111);
        // Fill the cache far beyond capacity: the most recently used survives longest.
        for line in 100..140 {
            c.insert(line, 0xf, 0);
            c.lookup(139);
        }
        assert_eq!(c.lookup(139).sectors, 0xf);
        assert_eq!(c.capacity_lines(), 4);
        c.clear();
        assert_eq!(c.lookup(139).sectors, 0);
    }
}
