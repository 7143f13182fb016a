//! The NVPTX backend of the device layer: special registers and inline PTX.
//!
//! Every function is `#[inline(always)]` so that the PTX a kernel compiles to has no calls.
//!
//! `cli/build.rs` compiles this crate once per architecture, and the gpu engine loads the
//! module that suits the GPU:
//! * **sm_90** (Hopper: H100, H200; PTX ISA 8.0), built with `--cfg qwenmk_sm90`;
//! * **sm_80** (Ampere: A100, and every compute capability 8.x; PTX ISA 7.4), without it.
//!
//! Everything below is valid on both (sm_70-era instructions, plus the `L1::no_allocate`
//! eviction priority of ISA 7.4). A function that needs Hopper, such as a bulk copy
//! (`cp.async.bulk`) completing on an `mbarrier`, goes under `#[cfg(qwenmk_sm90)]`, with an
//! sm_80 counterpart under `#[cfg(not(qwenmk_sm90))]` (`cp.async` per thread, then
//! `cp.async.wait_group`), so that kernels call one name on every architecture. The host
//! emulator is built without the cfg.

use core::arch::asm;
use core::arch::nvptx;

/// This thread's index within its block (x dimension; kernels are one-dimensional).
#[inline(always)]
pub fn thread_idx() -> u32 {
    // SAFETY: reads a special register; always valid inside a kernel.
    unsafe { nvptx::_thread_idx_x() }
}

/// This block's index within the grid.
#[inline(always)]
pub fn block_idx() -> u32 {
    // SAFETY: reads a special register.
    unsafe { nvptx::_block_idx_x() }
}

/// Threads per block.
#[inline(always)]
pub fn block_dim() -> u32 {
    // SAFETY: reads a special register.
    unsafe { nvptx::_block_dim_x() }
}

/// Blocks in the grid.
#[inline(always)]
pub fn grid_dim() -> u32 {
    // SAFETY: reads a special register.
    unsafe { nvptx::_grid_dim_x() }
}

/// Block-wide barrier (`bar.sync 0`); also orders shared and global memory within the block.
#[inline(always)]
pub fn sync_threads() {
    // SAFETY: every thread of the block reaches the same barrier (kernel contract).
    unsafe { nvptx::_syncthreads() }
}

/// A 16-byte aligned unit, so that dynamic shared memory can hold 128-bit vectors.
#[repr(C, align(16))]
struct Align16([u8; 16]);

/// The block's dynamic shared memory, sized at launch, 16-byte aligned.
#[inline(always)]
pub fn shared_memory() -> *mut u8 {
    core::intrinsics::gpu::gpu_launch_sized_workgroup_mem::<Align16>().cast::<u8>()
}

/// `v` from lane `lane_id ^ mask`, all 32 lanes participating.
#[inline(always)]
pub fn shfl_xor_u32(v: u32, mask: u32) -> u32 {
    let r: u32;
    // SAFETY: full-warp shuffle; kernels call it with every lane converged.
    unsafe {
        asm!(
            "shfl.sync.bfly.b32 {r}, {v}, {m}, 0x1f, 0xffffffff;",
            r = out(reg32) r,
            v = in(reg32) v,
            m = in(reg32) mask,
        );
    }
    r
}

/// [`shfl_xor_u32`] for an `f32`.
#[inline(always)]
pub fn shfl_xor_f32(v: f32, mask: u32) -> f32 {
    f32::from_bits(shfl_xor_u32(v.to_bits(), mask))
}

/// 16 bytes from global memory that no thread writes while the kernel runs (weights), through
/// the non-coherent path and without allocating in L1: weights are read once per step, so
/// keeping them in L1 would only evict activations.
///
/// # Safety
/// `p` must be 16-byte aligned, point to global memory, and stay unwritten during the kernel.
#[inline(always)]
pub unsafe fn load_global_nc_v4(p: *const [u32; 4]) -> [u32; 4] {
    let (a, b, c, d): (u32, u32, u32, u32);
    // SAFETY: the caller guarantees the address contract above.
    unsafe {
        asm!(
            "ld.global.nc.L1::no_allocate.v4.u32 {{{a}, {b}, {c}, {d}}}, [{p}];",
            a = out(reg32) a,
            b = out(reg32) b,
            c = out(reg32) c,
            d = out(reg32) d,
            p = in(reg64) p,
            options(readonly, nostack, preserves_flags),
        );
    }
    [a, b, c, d]
}

/// Adds `v` to `*p` with acquire-release semantics at GPU scope and returns the old value:
/// every write this thread made before (and, after a block barrier, every write of its block)
/// becomes visible to a thread that acquires the new value, and a thread that sees the count
/// it waits for in the returned value has acquired what the other adders released. On the
/// GPU that is one `MEMBAR` before the atomic (a fence in front of it would be a second one).
///
/// # Safety
/// `p` must point to a 4-byte aligned `u32` in global memory.
#[inline(always)]
pub unsafe fn atomic_add_acq_rel_gpu(p: *mut u32, v: u32) -> u32 {
    let old: u32;
    // SAFETY: the caller guarantees `p`.
    unsafe {
        asm!(
            "atom.acq_rel.gpu.global.add.u32 {old}, [{p}], {v};",
            old = out(reg32) old,
            p = in(reg64) p,
            v = in(reg32) v,
            options(nostack),
        );
    }
    old
}

/// Adds `v` to `*p` with acquire semantics at GPU scope and returns the old value. After a
/// [`fence_acq_rel_gpu`] it also publishes what the fence ordered (a release pattern), so a
/// counter that its last adder must see complete costs one fence, not two: the adder that
/// completes the count has acquired every earlier adder's writes.
///
/// # Safety
/// `p` must point to a 4-byte aligned `u32` in global memory.
#[inline(always)]
pub unsafe fn atomic_add_acquire_gpu(p: *mut u32, v: u32) -> u32 {
    let old: u32;
    // SAFETY: the caller guarantees `p`.
    unsafe {
        asm!(
            "atom.acquire.gpu.global.add.u32 {old}, [{p}], {v};",
            old = out(reg32) old,
            p = in(reg64) p,
            v = in(reg32) v,
            options(nostack),
        );
    }
    old
}

/// Reads `*p` with acquire semantics at GPU scope: writes released before the value was
/// stored become visible to this thread.
///
/// # Safety
/// `p` must point to a 4-byte aligned `u32` in global memory.
#[inline(always)]
pub unsafe fn load_acquire_gpu(p: *const u32) -> u32 {
    let v: u32;
    // SAFETY: the caller guarantees `p`.
    unsafe {
        asm!(
            "ld.acquire.gpu.global.u32 {v}, [{p}];",
            v = out(reg32) v,
            p = in(reg64) p,
            options(nostack),
        );
    }
    v
}

/// Writes `*p = v` with release semantics at GPU scope.
///
/// # Safety
/// `p` must point to a 4-byte aligned `u32` in global memory.
#[inline(always)]
pub unsafe fn store_release_gpu(p: *mut u32, v: u32) {
    // SAFETY: the caller guarantees `p`.
    unsafe {
        asm!(
            "st.release.gpu.global.u32 [{p}], {v};",
            p = in(reg64) p,
            v = in(reg32) v,
            options(nostack),
        );
    }
}

/// `*p = max(*p, v)` atomically (relaxed, GPU scope); returns the old value.
///
/// # Safety
/// `p` must point to an 8-byte aligned `u64` in global memory.
#[inline(always)]
pub unsafe fn atomic_max_u64(p: *mut u64, v: u64) -> u64 {
    let old: u64;
    // SAFETY: the caller guarantees `p`.
    unsafe {
        asm!(
            "atom.relaxed.gpu.global.max.u64 {old}, [{p}], {v};",
            old = out(reg64) old,
            p = in(reg64) p,
            v = in(reg64) v,
            options(nostack),
        );
    }
    old
}

/// A GPU-scope acquire-release fence.
#[inline(always)]
pub fn fence_acq_rel_gpu() {
    // SAFETY: a fence has no operands.
    unsafe { asm!("fence.acq_rel.gpu;", options(nostack)) }
}

/// Sleeps for about `ns` nanoseconds: spinning warps yield issue slots to working ones.
#[inline(always)]
pub fn nanosleep(ns: u32) {
    // SAFETY: no memory effects.
    unsafe { asm!("nanosleep.u32 {ns};", ns = in(reg32) ns, options(nomem, nostack)) }
}

/// The GPU's global nanosecond timer, for bounding spin loops by time.
#[inline(always)]
pub fn global_timer_ns() -> u64 {
    let t: u64;
    // SAFETY: reads a special register.
    unsafe { asm!("mov.u64 {t}, %globaltimer;", t = out(reg64) t, options(nomem, nostack)) }
    t
}

/// The SM's cycle counter (`%clock64`), for microbenchmarks that count cycles.
#[inline(always)]
pub fn clock_cycles() -> u64 {
    let t: u64;
    // SAFETY: reads a special register. Not `nomem`: the compiler must not move it across the
    // loads a microbenchmark times.
    unsafe { asm!("mov.u64 {t}, %clock64;", t = out(reg64) t, options(nostack)) }
    t
}

/// Asks L2 to fetch the 128-byte line holding `p`, without waiting for it.
///
/// # Safety
/// `p` must be a global-memory address (any alignment).
#[inline(always)]
pub unsafe fn prefetch_l2(p: *const u8) {
    // SAFETY: a prefetch never faults the program's state; the caller guarantees `p` is global.
    unsafe { asm!("prefetch.global.L2 [{p}];", p = in(reg64) p, options(nostack, readonly)) }
}

/// Warp-wide barrier and memory ordering among the warp's lanes (`bar.warp.sync`).
#[inline(always)]
pub fn sync_warp() {
    // SAFETY: every lane of the warp reaches it (kernel contract).
    unsafe { asm!("bar.warp.sync 0xffffffff;", options(nostack)) }
}

/// Compare-and-swap on a global `u32` (relaxed, GPU scope); returns the old value.
///
/// # Safety
/// `p` must point to a 4-byte aligned `u32` in global memory.
#[inline(always)]
pub unsafe fn atomic_cas_u32(p: *mut u32, expected: u32, new: u32) -> u32 {
    let old: u32;
    // SAFETY: the caller guarantees `p`.
    unsafe {
        asm!(
            "atom.relaxed.gpu.global.cas.b32 {old}, [{p}], {e}, {n};",
            old = out(reg32) old,
            p = in(reg64) p,
            e = in(reg32) expected,
            n = in(reg32) new,
            options(nostack),
        );
    }
    old
}

/// `*p |= v` atomically (relaxed, GPU scope); returns the old value.
///
/// # Safety
/// `p` must point to a 4-byte aligned `u32` in global memory.
#[inline(always)]
pub unsafe fn atomic_or_u32(p: *mut u32, v: u32) -> u32 {
    let old: u32;
    // SAFETY: the caller guarantees `p`.
    unsafe {
        asm!(
            "atom.relaxed.gpu.global.or.b32 {old}, [{p}], {v};",
            old = out(reg32) old,
            p = in(reg64) p,
            v = in(reg32) v,
            options(nostack),
        );
    }
    old
}

/// Whether `pred` holds on any lane of the warp; every lane gets the answer. A vote orders no
/// memory: follow it with [`sync_warp`] before reading what other lanes wrote.
#[inline(always)]
pub fn warp_any(pred: bool) -> bool {
    let ballot: u32;
    // SAFETY: a full-warp vote; kernels call it with every lane converged.
    unsafe {
        asm!(
            "{{ .reg .pred %p; setp.ne.u32 %p, {v}, 0; vote.sync.ballot.b32 {b}, %p, 0xffffffff; }}",
            b = out(reg32) ballot,
            v = in(reg32) pred as u32,
            options(nomem, nostack),
        );
    }
    ballot != 0
}

/// Reads a global `u64` that other blocks update atomically (relaxed, GPU scope).
///
/// # Safety
/// `p` must point to an 8-byte aligned `u64` in global memory.
#[inline(always)]
pub unsafe fn load_relaxed_u64(p: *const u64) -> u64 {
    let v: u64;
    // SAFETY: the caller guarantees `p`.
    unsafe {
        asm!(
            "ld.relaxed.gpu.global.u64 {v}, [{p}];",
            v = out(reg64) v,
            p = in(reg64) p,
            options(nostack),
        );
    }
    v
}

/// `a · b + c` with one rounding (`fma.rn.f32`, an FFMA).
#[inline(always)]
pub fn fma(a: f32, b: f32, c: f32) -> f32 {
    let d: f32;
    // SAFETY: pure arithmetic.
    unsafe {
        asm!("fma.rn.f32 {d}, {a}, {b}, {c};", d = out(reg32) d, a = in(reg32) a, b = in(reg32) b, c = in(reg32) c, options(pure, nomem, nostack))
    }
    d
}

/// Two f32s rounded to BF16 (round to nearest even, as `cvt.rn.bf16.f32` does; sm_80 and
/// newer), packed as they lie in memory: `lo` in the low half.
#[inline(always)]
pub fn f32x2_to_bf16x2(lo: f32, hi: f32) -> u32 {
    let (a, b): (u16, u16);
    // SAFETY: pure arithmetic.
    unsafe {
        asm!("cvt.rn.bf16.f32 {a}, {x};", a = out(reg16) a, x = in(reg32) lo, options(pure, nomem, nostack));
        asm!("cvt.rn.bf16.f32 {b}, {x};", b = out(reg16) b, x = in(reg32) hi, options(pure, nomem, nostack));
    }
    (a as u32) | ((b as u32) << 16)
}

/// `e^x` through the hardware `2^x` (relative error about 2⁻²²).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let y: f32;
    let scaled = x * core::f32::consts::LOG2_E;
    // SAFETY: pure arithmetic.
    unsafe {
        asm!("ex2.approx.f32 {y}, {x};", y = out(reg32) y, x = in(reg32) scaled, options(pure, nomem, nostack))
    }
    y
}

/// `1 / sqrt(x)`, correctly rounded square root then a correctly rounded division, as torch's
/// f32 `rsqrt` (within an ulp).
#[inline(always)]
pub fn rsqrt(x: f32) -> f32 {
    let s: f32;
    // SAFETY: pure arithmetic.
    unsafe {
        asm!("sqrt.rn.f32 {s}, {x};", s = out(reg32) s, x = in(reg32) x, options(pure, nomem, nostack))
    }
    1.0 / s
}
