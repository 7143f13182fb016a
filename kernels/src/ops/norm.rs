//! RMSNorm, as Qwen3 computes it: `x · rsqrt(mean(x²) + eps) · weight`, in f32.

use crate::device;
use crate::ops::matvec::staged_index;

/// Sum over the whole block; every thread gets the result. The function ends with the block
/// synchronised.
///
/// # Safety
/// `scratch` must hold one f32 per warp in shared memory; every thread of the block calls it.
#[inline(always)]
pub unsafe fn block_sum(v: f32, scratch: *mut f32) -> f32 {
    let warp_total = device::warp_sum(v);
    if device::lane_id() == 0 {
        // SAFETY: one slot per warp.
        unsafe { scratch.add(device::warp_id() as usize).write(warp_total) };
    }
    device::sync_threads();
    let mut total = 0.0f32;
    let mut w = 0;
    while w < device::warps_per_block() {
        // SAFETY: every warp wrote its slot before the barrier.
        total += unsafe { scratch.add(w as usize).read() };
        w += 1;
    }
    // Nobody may overwrite the slots before every thread has read them.
    device::sync_threads();
    total
}

/// Every block normalises `x` itself into `out` (its shared memory), laid out for a matvec
/// ([`staged_index`]): redundant work that saves a grid barrier. `x` is f32 or BF16 through
/// `read`.
///
/// # Safety
/// `out` must hold `n` f32s (`n` a multiple of 8), `weight` `n` BF16 values, `scratch` one f32 per warp; every
/// thread of the block must call this function.
#[inline(always)]
pub unsafe fn rmsnorm_block(
    read: impl Fn(usize) -> f32,
    n: usize,
    weight: *const u16,
    eps: f32,
    out: *mut f32,
    scratch: *mut f32,
) {
    let mut sum_sq = 0.0f32;
    let mut i = device::thread_idx() as usize;
    while i < n {
        let v = read(i);
        sum_sq += v * v;
        i += device::block_dim() as usize;
    }
    // SAFETY: forwarded contract.
    let scale = device::rsqrt(unsafe { block_sum(sum_sq, scratch) } / n as f32 + eps);
    let mut i = device::thread_idx() as usize;
    while i < n {
        // SAFETY: `i < n` for both buffers.
        unsafe {
            out.add(staged_index(i, n))
                .write(read(i) * scale * bf16(weight, i))
        };
        i += device::block_dim() as usize;
    }
    device::sync_threads();
}

/// RMSNorm of one attention head's `n` values in place, by one warp (lanes stride over the
/// values). Ends with the warp synchronised.
///
/// # Safety
/// `v` must hold `n` f32s (shared memory), `weight` `n` BF16 values; every lane must call it.
#[inline(always)]
pub unsafe fn rmsnorm_warp(v: *mut f32, n: usize, weight: *const u16, eps: f32) {
    let mut sum_sq = 0.0f32;
    let mut i = device::lane_id() as usize;
    while i < n {
        // SAFETY: `i < n`.
        let x = unsafe { v.add(i).read() };
        sum_sq += x * x;
        i += device::WARP_SIZE as usize;
    }
    let scale = device::rsqrt(device::warp_sum(sum_sq) / n as f32 + eps);
    let mut i = device::lane_id() as usize;
    while i < n {
        // SAFETY: `i < n`; each lane rewrites only the values it read.
        unsafe { v.add(i).write(v.add(i).read() * scale * bf16(weight, i)) };
        i += device::WARP_SIZE as usize;
    }
    device::sync_warp();
}

/// The `i`-th BF16 value of `p`, widened to f32.
///
/// # Safety
/// `p` must hold more than `i` values.
#[inline(always)]
pub unsafe fn bf16(p: *const u16, i: usize) -> f32 {
    // SAFETY: the caller indexes inside the tensor.
    f32::from_bits((unsafe { p.add(i).read() } as u32) << 16)
}
