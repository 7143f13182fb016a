//! The device layer: the only code that knows the hardware.
//!
//! Kernels call these functions and nothing else that is GPU-specific. Two backends implement
//! them with the same names and meaning:
//! * `nvptx` — inline PTX for sm_90 and sm_80 (built when the target is `nvptx64-nvidia-cuda`,
//!   once per architecture);
//! * `emu` — the host emulator: each CUDA thread is an OS thread, a block shares a real barrier
//!   and a shared-memory buffer, a warp exchanges values through a 32-slot mailbox, and global
//!   atomics are `core::sync::atomic` with the same orderings.
//!
//! Memory model: kernels publish data to other blocks with a release operation and read it
//! after an acquire operation, exactly as the PTX memory model requires; on the host the same
//! calls are Rust atomics with the same orderings, so a protocol that is correct on one backend
//! is correct on the other.

/// Threads in a warp, on every NVIDIA GPU this crate targets and in the emulator.
pub const WARP_SIZE: u32 = 32;

/// Bytes of weights the grid may prefetch into L2 at one stage boundary: a third of an H100's
/// 50 MB L2 (40 MB on an A100), so that what is prefetched is still there when it is read
/// and the activations and KV rows in flight are not evicted.
pub const L2_PREFETCH_BUDGET_BYTES: usize = 16 << 20;

#[cfg(target_arch = "nvptx64")]
mod nvptx;
#[cfg(target_arch = "nvptx64")]
pub use nvptx::*;

#[cfg(not(target_arch = "nvptx64"))]
pub mod emu;
#[cfg(not(target_arch = "nvptx64"))]
pub use emu::{
    COPY_SLOTS, atomic_add_acq_rel_gpu, atomic_add_acquire_gpu, atomic_cas_u32, atomic_max_u64,
    atomic_or_u32, block_dim, block_idx, clock_cycles, copy_barrier_init, copy_barriers_ready,
    copy_begin, copy_landed, count_relaxed, exp, f32x2_to_bf16x2, fence_acq_rel_gpu, fma,
    global_timer_ns, grid_dim, load_acquire_gpu, load_global_nc_v4, load_relaxed_u64,
    load_relaxed_u64x2, low_half_up, nanosleep, opaque_u32, prefetch_l2, rsqrt, shared_memory,
    shfl_xor_f32, shfl_xor_u32, sqrt, store_relaxed_u64, store_relaxed_u64x2, store_release_gpu,
    sync_threads, sync_warp, thread_idx, warp_any,
};

/// This thread's lane within its warp.
#[inline(always)]
pub fn lane_id() -> u32 {
    thread_idx() % WARP_SIZE
}

/// This thread's warp within its block.
#[inline(always)]
pub fn warp_id() -> u32 {
    thread_idx() / WARP_SIZE
}

/// Warps in this block.
#[inline(always)]
pub fn warps_per_block() -> u32 {
    block_dim() / WARP_SIZE
}

/// `(n / d, n % d)` for `d > 0`: a shift and a mask when `d` is a power of two, the division
/// otherwise. A `div.u32` is a sequence of some 40 cycles that the next instruction waits
/// for; attention decodes its item with three of them at every layer, on the way to its
/// first loads (and Qwen3-0.6B's item rows, head blocks and runs are powers of two).
#[inline(always)]
pub fn div_rem_u32(n: u32, d: u32) -> (u32, u32) {
    if d & d.wrapping_sub(1) == 0 {
        (n >> d.trailing_zeros(), n & d.wrapping_sub(1))
    } else {
        (n / d, n % d)
    }
}

/// `ceil(n / d)` for `d > 0`, as [`div_rem_u32`].
#[inline(always)]
pub fn div_ceil_u32(n: u32, d: u32) -> u32 {
    let (q, r) = div_rem_u32(n, d);
    q + (r != 0) as u32
}

/// Sum of `v` over the 32 lanes of the warp; every lane gets the result.
#[inline(always)]
pub fn warp_sum(mut v: f32) -> f32 {
    let mut offset = WARP_SIZE / 2;
    while offset > 0 {
        v += shfl_xor_f32(v, offset);
        offset /= 2;
    }
    v
}

/// Maximum of `v` over the 32 lanes of the warp; every lane gets the result.
#[inline(always)]
pub fn warp_max_u64(v: u64) -> u64 {
    let mut best = v;
    let mut offset = WARP_SIZE / 2;
    while offset > 0 {
        let lo = shfl_xor_u32(best as u32, offset);
        let hi = shfl_xor_u32((best >> 32) as u32, offset);
        let other = ((hi as u64) << 32) | lo as u64;
        if other > best {
            best = other;
        }
        offset /= 2;
    }
    best
}

/// Maximum of `v` over the 32 lanes of the warp; every lane gets the result.
#[inline(always)]
pub fn warp_max_f32(mut v: f32) -> f32 {
    let mut offset = WARP_SIZE / 2;
    while offset > 0 {
        let other = shfl_xor_f32(v, offset);
        if other > v {
            v = other;
        }
        offset /= 2;
    }
    v
}

/// Four f32s, 16-byte aligned: a vector load or store of one instruction.
#[repr(C, align(16))]
#[derive(Clone, Copy)]
struct F32x4([f32; 4]);

/// Four f32s at `p` with one plain (coherent) vector load.
///
/// # Safety
/// `p` must point to 4 readable f32s, 16-byte aligned.
#[inline(always)]
pub unsafe fn load_f32x4(p: *const f32) -> [f32; 4] {
    // SAFETY: forwarded contract.
    unsafe { p.cast::<F32x4>().read().0 }
}

/// Stores four f32s at `p` with one vector store.
///
/// # Safety
/// `p` must point to 4 writable f32s, 16-byte aligned.
#[inline(always)]
pub unsafe fn store_f32x4(p: *mut f32, v: [f32; 4]) {
    // SAFETY: forwarded contract.
    unsafe { p.cast::<F32x4>().write(F32x4(v)) }
}

/// Stores four `u32`s at `p` with one vector store.
///
/// # Safety
/// `p` must point to 4 writable `u32`s, 16-byte aligned.
#[inline(always)]
pub unsafe fn store_u32x4(p: *mut u32, v: [u32; 4]) {
    // SAFETY: forwarded contract.
    unsafe { p.cast::<U32x4>().write(U32x4(v)) }
}

/// Four `u32`s at `p` with one plain (coherent) vector load.
///
/// # Safety
/// `p` must point to 4 readable `u32`s, 16-byte aligned.
#[inline(always)]
pub unsafe fn load_u32x4(p: *const u32) -> [u32; 4] {
    // SAFETY: forwarded contract.
    unsafe { p.cast::<U32x4>().read().0 }
}

/// Four `u32`s, 16-byte aligned: a vector load or store of one instruction.
#[repr(C, align(16))]
#[derive(Clone, Copy)]
struct U32x4([u32; 4]);

/// Two BF16 values packed in a `u32` (the first in the low half, as they lie in memory),
/// widened exactly to `f32`.
#[inline(always)]
pub fn bf16x2_to_f32(packed: u32) -> (f32, f32) {
    (
        f32::from_bits(low_half_up(packed)),
        f32::from_bits(packed & 0xffff_0000),
    )
}
