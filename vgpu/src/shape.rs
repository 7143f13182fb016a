//! The shape of the GPUs the virtual device imitates, and the occupancy rule that follows from
//! it. Figures from NVIDIA's CUDA C++ Programming Guide, "Compute Capabilities" table
//! (technical specifications per compute capability), and the H100 / A100 / T4 datasheets.

/// Limits and figures of one GPU model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub compute_capability: (u32, u32),
    pub name: &'static str,
    pub registers_per_sm: u32,
    pub max_registers_per_thread: u32,
    pub shared_per_sm: u32,
    /// The most dynamic + static shared memory one block may opt in to.
    pub shared_optin_per_block: u32,
    /// Without opting in (`CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES`).
    pub shared_default_per_block: u32,
    /// Shared memory the system reserves for each resident block.
    pub reserved_shared_per_block: u32,
    pub max_threads_per_sm: u32,
    pub max_blocks_per_sm: u32,
    pub max_threads_per_block: u32,
    pub l2_bytes: u32,
    pub clock_khz: u32,
    pub memory_clock_khz: u32,
    pub memory_bus_bits: u32,
}

/// H100 SXM5 (compute capability 9.0).
pub const HOPPER: Shape = Shape {
    compute_capability: (9, 0),
    name: "H100 SXM",
    registers_per_sm: 65_536,
    max_registers_per_thread: 255,
    shared_per_sm: 228 * 1024,
    shared_optin_per_block: 227 * 1024,
    shared_default_per_block: 48 * 1024,
    reserved_shared_per_block: 1024,
    max_threads_per_sm: 2048,
    max_blocks_per_sm: 32,
    max_threads_per_block: 1024,
    l2_bytes: 50 * 1024 * 1024,
    clock_khz: 1_755_000,
    // 2 × 2.619 GHz × 5,120 bits = 3.35 TB/s.
    memory_clock_khz: 2_619_000,
    memory_bus_bits: 5120,
};

/// A100 SXM4 (compute capability 8.0).
pub const AMPERE: Shape = Shape {
    compute_capability: (8, 0),
    name: "A100 SXM",
    registers_per_sm: 65_536,
    max_registers_per_thread: 255,
    shared_per_sm: 164 * 1024,
    shared_optin_per_block: 163 * 1024,
    shared_default_per_block: 48 * 1024,
    reserved_shared_per_block: 1024,
    max_threads_per_sm: 2048,
    max_blocks_per_sm: 32,
    max_threads_per_block: 1024,
    l2_bytes: 40 * 1024 * 1024,
    clock_khz: 1_410_000,
    memory_clock_khz: 1_593_000,
    memory_bus_bits: 5120,
};

/// T4 (compute capability 7.5): older than every module qwenmk embeds, so that the refusal of
/// a GPU too old for the kernels can be tested end to end.
pub const TURING: Shape = Shape {
    compute_capability: (7, 5),
    name: "T4",
    registers_per_sm: 65_536,
    max_registers_per_thread: 255,
    shared_per_sm: 64 * 1024,
    shared_optin_per_block: 64 * 1024,
    shared_default_per_block: 48 * 1024,
    // The 1 KiB reserved per block starts with compute capability 8.0.
    reserved_shared_per_block: 0,
    max_threads_per_sm: 1024,
    max_blocks_per_sm: 16,
    max_threads_per_block: 1024,
    l2_bytes: 4 * 1024 * 1024,
    clock_khz: 1_590_000,
    // 2 × 5.0 GHz × 256 bits = 320 GB/s (GDDR6).
    memory_clock_khz: 5_000_000,
    memory_bus_bits: 256,
};

impl Shape {
    pub fn for_capability(cc: (u32, u32)) -> Shape {
        match cc.0 {
            9.. => HOPPER,
            8 => AMPERE,
            _ => TURING,
        }
    }

    /// Registers one warp is given: per thread rounded up to a multiple of 8, times 32
    /// (allocation unit 256 registers per warp).
    fn registers_per_warp(registers: u32) -> u32 {
        registers.max(1).next_multiple_of(8) * 32
    }

    /// Warps of `registers` each that the register file holds: each of the 4 sub-partitions
    /// has a quarter of the registers and keeps its warps whole.
    fn warps_by_registers(&self, registers: u32) -> u32 {
        4 * ((self.registers_per_sm / 4) / Self::registers_per_warp(registers))
    }

    /// The largest block a kernel with `registers` per thread can launch.
    pub fn max_threads_per_block_for(&self, registers: u32) -> u32 {
        (self.warps_by_registers(registers) * 32).min(self.max_threads_per_block)
    }

    /// Blocks of `threads` threads, `registers` registers each and `shared` bytes of shared
    /// memory (static + dynamic) that fit on one SM at once.
    pub fn blocks_per_sm(&self, registers: u32, threads: u32, shared: u32) -> u32 {
        if threads == 0 || threads > self.max_threads_per_block_for(registers) {
            return 0;
        }
        let warps = threads.div_ceil(32);
        let by_registers = self.warps_by_registers(registers) / warps;
        let by_threads = self.max_threads_per_sm / (warps * 32);
        let per_block = (shared + self.reserved_shared_per_block).next_multiple_of(128);
        // A block with no shared memory at all (possible where no bytes are reserved per
        // block, as before compute capability 8.0) is not limited by it.
        let by_shared = if shared > self.shared_optin_per_block {
            0
        } else {
            self.shared_per_sm
                .checked_div(per_block)
                .unwrap_or(u32::MAX)
        };
        by_registers
            .min(by_threads)
            .min(by_shared)
            .min(self.max_blocks_per_sm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn occupancy_follows_registers_threads_and_shared_memory() {
        // 182 registers × 256 threads: 5,888 registers per warp, two warps per sub-partition.
        assert_eq!(HOPPER.blocks_per_sm(182, 256, 28 * 1024), 1);
        assert_eq!(HOPPER.max_threads_per_block_for(182), 256);
        assert_eq!(HOPPER.blocks_per_sm(182, 512, 0), 0);
        // 32 registers × 256 threads: threads limit to 8 blocks.
        assert_eq!(HOPPER.blocks_per_sm(32, 256, 0), 8);
        // Shared memory: 100 KiB per block leaves room for 2 on Hopper, 1 on Ampere.
        assert_eq!(HOPPER.blocks_per_sm(32, 128, 100 * 1024), 2);
        assert_eq!(AMPERE.blocks_per_sm(32, 128, 100 * 1024), 1);
        assert_eq!(HOPPER.blocks_per_sm(32, 128, 300 * 1024), 0);
        // Turing: 1,024 threads per SM.
        assert_eq!(TURING.blocks_per_sm(32, 256, 0), 4);
        // No bytes are reserved per block there, so shared memory alone does not limit it.
        assert_eq!(TURING.blocks_per_sm(32, 32, 0), 16);
        assert_eq!(TURING.blocks_per_sm(32, 256, 40 * 1024), 1);
        assert_eq!(Shape::for_capability((7, 5)), TURING);
        assert_eq!(Shape::for_capability((8, 0)), AMPERE);
        assert_eq!(Shape::for_capability((9, 0)), HOPPER);
    }
}
