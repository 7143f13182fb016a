//! RMSNorm, as Qwen3 computes it: `x · rsqrt(mean(x²) + eps) · weight`, in f32.

use crate::device;
use crate::ops::matvec::{load_staged8, store_staged8};

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

/// f32s of shared memory [`rmsnorm_block`] keeps the weights of an `n`-value norm in, behind
/// its output: half as many (BF16).
pub const fn stash_floats(n: usize) -> usize {
    n / 2
}

/// Every block normalises `x` itself into `out` (its shared memory), laid out for a matvec
/// ([`crate::ops::matvec::staged_index`]): redundant work that saves a grid barrier. `read8(m)`
/// gives values `8m .. 8m + 8` of `x` (published words, or BF16): each thread reads whole
/// 16-byte pieces, so a block of 256 threads reads Qwen3's 1,024 values in one round trip,
/// not four dependent ones. The values are read once: kept in `out` until the scale is known.
///
/// When the block has at least twice as many threads as `x` has octets (Qwen3-0.6B: 256
/// threads, 128 octets), the threads without values fetch the weights meanwhile and leave
/// them behind `out` ([`stash_floats`]): read after the sum, they were an L2 round trip on
/// the step's critical path, twice per layer; held in the waiting threads' registers, they
/// made ptxas spill.
///
/// # Safety
/// `out` must hold `n` f32s (`n` a multiple of 8) and, behind them, [`stash_floats`]`(n)`
/// more, 16-byte aligned; `weight` `n` BF16 values, 16-byte aligned; `scratch` one f32 per
/// warp; every thread of the block must call this function.
#[inline(always)]
pub unsafe fn rmsnorm_block(
    mut read8: impl FnMut(usize) -> [f32; 8],
    n: usize,
    weight: *const u16,
    eps: f32,
    out: *mut f32,
    scratch: *mut f32,
) {
    let octets = n / 8;
    let t = device::thread_idx() as usize;
    let helped = 2 * octets <= device::block_dim() as usize;
    // SAFETY: the stash lies behind the `n` values of `out` (forwarded contract).
    let stash = unsafe { out.add(n).cast::<[u32; 4]>() };
    if helped && t >= octets && t < 2 * octets {
        // SAFETY: octet `t − octets` of the weights, into its place in the stash.
        unsafe {
            let raw = bf16x8_raw(weight, t - octets);
            device::store_u32x4(stash.add(t - octets).cast::<u32>(), raw);
        }
    }
    let mut sum_sq = 0.0f32;
    let mut m = t;
    while m < octets {
        let v = read8(m);
        let mut i = 0;
        while i < 8 {
            sum_sq = device::fma(v[i], v[i], sum_sq);
            i += 1;
        }
        // SAFETY: `m < n / 8`; `out` holds `n` values.
        unsafe { store_staged8(out, n, m, v) };
        m += device::block_dim() as usize;
    }
    // SAFETY: forwarded contract.
    let scale = device::rsqrt(unsafe { block_sum(sum_sq, scratch) } / n as f32 + eps);
    // Found again rather than held through the wait and the sum (registers are short).
    let t = device::opaque_u32(device::thread_idx()) as usize;
    let helped = 2 * octets <= device::opaque_u32(device::block_dim()) as usize;
    // SAFETY: as above.
    let stash = unsafe { out.add(n).cast::<[u32; 4]>() };
    let mut m = t;
    while m < octets {
        // Each thread rescales the values it stored itself.
        // SAFETY: `8m + 8 ≤ n` for both buffers; the stash was written before the barriers
        // of the sum.
        let (v, w) = unsafe {
            let raw = if helped {
                device::load_u32x4(stash.add(m).cast::<u32>())
            } else {
                bf16x8_raw(weight, m)
            };
            (load_staged8(out, n, m), widen8(raw))
        };
        let mut normed = [0.0f32; 8];
        let mut i = 0;
        while i < 8 {
            normed[i] = v[i] * scale * w[i];
            i += 1;
        }
        // SAFETY: `m < n / 8`; `out` holds `n` values.
        unsafe { store_staged8(out, n, m, normed) };
        m += device::block_dim() as usize;
    }
    device::sync_threads();
}

/// BF16 values `8m .. 8m + 8` of `p`, widened: one 16-byte load through the non-coherent
/// path.
///
/// # Safety
/// `p` must be 16-byte aligned and hold at least `8m + 8` values that nothing writes during
/// the launch.
#[inline(always)]
pub unsafe fn bf16x8(p: *const u16, m: usize) -> [f32; 8] {
    // SAFETY: forwarded contract.
    widen8(unsafe { bf16x8_raw(p, m) })
}

/// BF16 values `8m .. 8m + 8` of `p` as they lie in memory ([`widen8`] widens them).
///
/// # Safety
/// As [`bf16x8`].
#[inline(always)]
pub unsafe fn bf16x8_raw(p: *const u16, m: usize) -> [u32; 4] {
    // SAFETY: forwarded contract.
    unsafe { device::load_global_nc_v4(p.add(8 * m).cast::<[u32; 4]>()) }
}

/// 8 BF16 values packed in four words (the first in the low half, as they lie in memory),
/// widened exactly.
#[inline(always)]
pub fn widen8(w: [u32; 4]) -> [f32; 8] {
    let mut out = [0.0f32; 8];
    let mut i = 0;
    while i < 4 {
        let (a, b) = device::bf16x2_to_f32(w[i]);
        out[2 * i] = a;
        out[2 * i + 1] = b;
        i += 1;
    }
    out
}

/// f32 values `8m .. 8m + 8` of `p` with two plain 16-byte loads (memory this launch writes).
///
/// # Safety
/// `p` must be 16-byte aligned and hold at least `8m + 8` values.
#[inline(always)]
pub unsafe fn f32x8(p: *const f32, m: usize) -> [f32; 8] {
    // SAFETY: forwarded contract.
    let (a, b) = unsafe {
        (
            device::load_f32x4(p.add(8 * m)),
            device::load_f32x4(p.add(8 * m + 4)),
        )
    };
    [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]]
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
