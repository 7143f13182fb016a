//! Device memory: allocations in a 64-bit address space, with the checks a careful GPU would
//! make — every access inside a live allocation, freed memory never reused (so a use after
//! free is reported as such), and no store to memory the running launch reads through the
//! read-only `.nc` path.

use std::fmt;

/// Where device allocations start. Far from zero so that a null or small pointer faults.
pub const GLOBAL_BASE: u64 = 0x7f00_0000_0000;
/// Allocations are aligned like `cuMemAlloc`'s (at least 256 bytes).
pub const ALLOCATION_ALIGN: u64 = 512;
/// Unmapped bytes between allocations, so an access just past one end faults.
const GUARD_BYTES: u64 = 1 << 20;
/// The generic-address window of a block's shared memory (`cvta.shared` adds this).
pub const SHARED_WINDOW: u64 = 0x0000_5000_0000_0000;
/// Size of that window; any generic address inside it is a shared-memory address.
pub const SHARED_WINDOW_BYTES: u64 = 1 << 32;
/// Granularity of the `.nc` read/write tracking.
const TRACK_BYTES: u64 = 16;

/// One allocation.
pub struct Allocation {
    pub base: u64,
    pub size: u64,
    data: Vec<u8>,
    freed: bool,
    /// Per launch: 16-byte units read through `.nc`, and units stored to.
    nc_read: Option<Vec<u64>>,
    written: Option<Vec<u64>>,
}

impl Allocation {
    pub fn data(&self) -> &[u8] {
        &self.data
    }
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }
}

/// Why an access is not allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessError {
    /// No allocation holds the address; the nearest one, if any, for the report.
    Unmapped { nearest: Option<(u64, u64)> },
    /// The allocation that held the address has been freed.
    Freed { base: u64, size: u64 },
    /// The access starts inside an allocation but runs past its end.
    PastEnd { base: u64, size: u64 },
}

impl fmt::Display for AccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccessError::Unmapped { nearest: None } => write!(f, "no allocation is live"),
            AccessError::Unmapped {
                nearest: Some((base, size)),
            } => write!(
                f,
                "it is outside every live allocation (nearest: {size} bytes at {base:#x})"
            ),
            AccessError::Freed { base, size } => write!(
                f,
                "it is inside the allocation of {size} bytes at {base:#x}, which was freed"
            ),
            AccessError::PastEnd { base, size } => write!(
                f,
                "it runs past the end of the allocation of {size} bytes at {base:#x}"
            ),
        }
    }
}

/// The device's global memory.
pub struct GlobalMemory {
    allocations: Vec<Allocation>,
    next: u64,
    /// Bytes the device pretends to have, and bytes live now.
    pub capacity: u64,
    pub used: u64,
    /// The allocation the last lookup found: most accesses hit the same one again.
    last: usize,
}

impl GlobalMemory {
    pub fn new(capacity: u64) -> GlobalMemory {
        GlobalMemory {
            allocations: Vec::new(),
            next: GLOBAL_BASE,
            capacity,
            used: 0,
            last: 0,
        }
    }

    /// A new zeroed allocation of `size` bytes, or `None` when it does not fit.
    pub fn alloc(&mut self, size: u64) -> Option<u64> {
        let size = size.max(1);
        if self.used.checked_add(size)? > self.capacity {
            return None;
        }
        let data = try_zeroed(size)?;
        let base = self.next.next_multiple_of(ALLOCATION_ALIGN);
        self.next = base + size.next_multiple_of(ALLOCATION_ALIGN) + GUARD_BYTES;
        self.used += size;
        self.allocations.push(Allocation {
            base,
            size,
            data,
            freed: false,
            nc_read: None,
            written: None,
        });
        Some(base)
    }

    /// Frees the allocation that starts at `base`. Its addresses are never handed out again.
    pub fn free(&mut self, base: u64) -> Result<(), AccessError> {
        let i = self.index_of_base(base)?;
        let a = &mut self.allocations[i];
        a.freed = true;
        a.data = Vec::new();
        a.nc_read = None;
        a.written = None;
        self.used -= a.size;
        Ok(())
    }

    fn index_of_base(&self, base: u64) -> Result<usize, AccessError> {
        match self.allocations.binary_search_by_key(&base, |a| a.base) {
            Ok(i) if !self.allocations[i].freed => Ok(i),
            Ok(i) => Err(AccessError::Freed {
                base,
                size: self.allocations[i].size,
            }),
            Err(_) => Err(AccessError::Unmapped {
                nearest: self.nearest(base),
            }),
        }
    }

    fn nearest(&self, addr: u64) -> Option<(u64, u64)> {
        self.allocations
            .iter()
            .filter(|a| !a.freed)
            .min_by_key(|a| {
                if addr < a.base {
                    a.base - addr
                } else {
                    addr.saturating_sub(a.base + a.size)
                }
            })
            .map(|a| (a.base, a.size))
    }

    /// The allocation index and offset of the `len` bytes at `addr`.
    #[inline]
    pub fn locate(&mut self, addr: u64, len: u64) -> Result<(usize, usize), AccessError> {
        let hit = |a: &Allocation| addr >= a.base && addr + len <= a.base + a.size && !a.freed;
        if let Some(a) = self.allocations.get(self.last)
            && hit(a)
        {
            return Ok((self.last, (addr - a.base) as usize));
        }
        let i = self.allocations.partition_point(|a| a.base <= addr);
        if i == 0 {
            return Err(AccessError::Unmapped {
                nearest: self.nearest(addr),
            });
        }
        let a = &self.allocations[i - 1];
        if addr >= a.base + a.size {
            return Err(AccessError::Unmapped {
                nearest: self.nearest(addr),
            });
        }
        if a.freed {
            return Err(AccessError::Freed {
                base: a.base,
                size: a.size,
            });
        }
        if addr + len > a.base + a.size {
            return Err(AccessError::PastEnd {
                base: a.base,
                size: a.size,
            });
        }
        self.last = i - 1;
        Ok((i - 1, (addr - a.base) as usize))
    }

    #[inline]
    pub fn bytes(&self, index: usize) -> &[u8] {
        &self.allocations[index].data
    }

    #[inline]
    pub fn bytes_mut(&mut self, index: usize) -> &mut [u8] {
        &mut self.allocations[index].data
    }

    /// Host access to `len` bytes at `addr` (copies): the same checks as the device's.
    pub fn read(&mut self, addr: u64, out: &mut [u8]) -> Result<(), AccessError> {
        let (i, o) = self.locate(addr, out.len() as u64)?;
        out.copy_from_slice(&self.allocations[i].data[o..o + out.len()]);
        Ok(())
    }

    pub fn write(&mut self, addr: u64, src: &[u8]) -> Result<(), AccessError> {
        let (i, o) = self.locate(addr, src.len() as u64)?;
        self.allocations[i].data[o..o + src.len()].copy_from_slice(src);
        Ok(())
    }

    pub fn fill(&mut self, addr: u64, len: u64, value: u8) -> Result<(), AccessError> {
        let (i, o) = self.locate(addr, len)?;
        self.allocations[i].data[o..o + len as usize].fill(value);
        Ok(())
    }

    /// Forgets the `.nc` tracking of the previous launch.
    pub fn begin_launch(&mut self) {
        for a in &mut self.allocations {
            a.nc_read = None;
            a.written = None;
        }
    }

    /// Records a `.nc` read of `[offset, offset+len)` of allocation `index`; false when the
    /// launch has stored to those bytes.
    #[inline]
    pub fn track_nc_read(&mut self, index: usize, offset: usize, len: usize) -> bool {
        let a = &mut self.allocations[index];
        let units = a.size.div_ceil(TRACK_BYTES) as usize;
        let (first, last) = span(offset, len);
        if let Some(w) = &a.written
            && (first..=last).any(|u| bit(w, u))
        {
            return false;
        }
        let r = a.nc_read.get_or_insert_with(|| vec![0; units.div_ceil(64)]);
        for u in first..=last {
            r[u / 64] |= 1 << (u % 64);
        }
        true
    }

    /// Records a store to `[offset, offset+len)`; false when the launch has read those bytes
    /// through `.nc`.
    #[inline]
    pub fn track_store(&mut self, index: usize, offset: usize, len: usize) -> bool {
        let a = &mut self.allocations[index];
        let (first, last) = span(offset, len);
        if let Some(r) = &a.nc_read
            && (first..=last).any(|u| bit(r, u))
        {
            return false;
        }
        // Only allocations that are also read through `.nc` need the store map; others are
        // marked lazily the first time a `.nc` read happens (it then finds no conflict for
        // earlier stores, a documented blind spot kept for speed).
        if a.nc_read.is_some() || a.written.is_some() {
            let units = a.size.div_ceil(TRACK_BYTES) as usize;
            let w = a.written.get_or_insert_with(|| vec![0; units.div_ceil(64)]);
            for u in first..=last {
                w[u / 64] |= 1 << (u % 64);
            }
        }
        true
    }

    /// Marks allocations whose stores must be tracked from the start of a launch (the caller
    /// knows they are read through `.nc` by the kernel: here, every allocation). Tracking all
    /// of them closes the blind spot of [`GlobalMemory::track_store`] at the cost of one bit
    /// per 16 bytes.
    pub fn track_all_stores(&mut self) {
        for a in self.allocations.iter_mut().filter(|a| !a.freed) {
            let units = a.size.div_ceil(TRACK_BYTES) as usize;
            a.written = Some(vec![0; units.div_ceil(64)]);
        }
    }

    /// Live allocations as (base, size).
    pub fn live(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.allocations
            .iter()
            .filter(|a| !a.freed)
            .map(|a| (a.base, a.size))
    }
}

fn span(offset: usize, len: usize) -> (usize, usize) {
    let t = TRACK_BYTES as usize;
    (offset / t, (offset + len.max(1) - 1) / t)
}

fn bit(map: &[u64], u: usize) -> bool {
    map[u / 64] & (1 << (u % 64)) != 0
}

/// A zeroed buffer, or `None` when the host cannot allocate it (never an abort).
fn try_zeroed(size: u64) -> Option<Vec<u8>> {
    let size = usize::try_from(size).ok()?;
    let mut v = Vec::new();
    v.try_reserve_exact(size).ok()?;
    v.resize(size, 0);
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accesses_are_checked_against_live_allocations() {
        let mut m = GlobalMemory::new(1 << 20);
        let a = m.alloc(100).unwrap();
        let b = m.alloc(64).unwrap();
        assert_eq!(a % ALLOCATION_ALIGN, 0);
        assert!(b > a + 100);
        assert!(m.locate(a, 100).is_ok());
        assert!(matches!(
            m.locate(a + 96, 8),
            Err(AccessError::PastEnd { .. })
        ));
        assert!(matches!(
            m.locate(a + 200, 4),
            Err(AccessError::Unmapped { .. })
        ));
        assert!(matches!(m.locate(0, 4), Err(AccessError::Unmapped { .. })));
        m.free(a).unwrap();
        assert!(matches!(m.locate(a, 4), Err(AccessError::Freed { .. })));
        assert!(matches!(m.free(a), Err(AccessError::Freed { .. })));
        assert!(m.locate(b, 64).is_ok());
        assert_eq!(m.used, 64);
    }

    #[test]
    fn capacity_is_enforced() {
        let mut m = GlobalMemory::new(1000);
        assert!(m.alloc(600).is_some());
        assert!(m.alloc(600).is_none());
    }

    #[test]
    fn stores_to_nc_read_memory_are_refused_in_either_order() {
        let mut m = GlobalMemory::new(1 << 20);
        let a = m.alloc(256).unwrap();
        m.begin_launch();
        m.track_all_stores();
        let (i, _) = m.locate(a, 16).unwrap();
        assert!(m.track_nc_read(i, 0, 16));
        assert!(!m.track_store(i, 8, 4));
        assert!(m.track_store(i, 16, 4));
        assert!(!m.track_nc_read(i, 16, 16));
        m.begin_launch();
        assert!(m.track_store(i, 8, 4));
    }
}
