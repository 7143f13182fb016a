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

/// Two 64-bit words at `p` with one relaxed vector load at GPU scope: each word is read
/// atomically (a vector access is a pair of single-copy atomic 8-byte reads), so a word that
/// another block stores whole is seen either before or after that store, never torn. For
/// values published with their epoch ([`crate::step::flow`]).
///
/// # Safety
/// `p` must point to two 16-byte aligned `u64`s in global memory.
#[inline(always)]
pub unsafe fn load_relaxed_u64x2(p: *const u64) -> [u64; 2] {
    let (a, b): (u64, u64);
    // SAFETY: the caller guarantees `p`.
    unsafe {
        asm!(
            "ld.relaxed.gpu.global.v2.u64 {{{a}, {b}}}, [{p}];",
            a = out(reg64) a,
            b = out(reg64) b,
            p = in(reg64) p,
            options(nostack, readonly, preserves_flags),
        );
    }
    [a, b]
}

/// Stores a 64-bit word with a relaxed store at GPU scope: other blocks see the whole word or
/// none of it, with no fence (publishing a value with its epoch).
///
/// # Safety
/// `p` must point to an 8-byte aligned `u64` in global memory.
#[inline(always)]
pub unsafe fn store_relaxed_u64(p: *mut u64, v: u64) {
    // SAFETY: the caller guarantees `p`.
    unsafe {
        asm!(
            "st.relaxed.gpu.global.u64 [{p}], {v};",
            p = in(reg64) p,
            v = in(reg64) v,
            options(nostack, preserves_flags),
        );
    }
}

/// Two 64-bit words with one relaxed vector store at GPU scope (each word atomic).
///
/// # Safety
/// `p` must point to two 16-byte aligned `u64`s in global memory.
#[inline(always)]
pub unsafe fn store_relaxed_u64x2(p: *mut u64, v: [u64; 2]) {
    // SAFETY: the caller guarantees `p`.
    unsafe {
        asm!(
            "st.relaxed.gpu.global.v2.u64 [{p}], {{{a}, {b}}};",
            p = in(reg64) p,
            a = in(reg64) v[0],
            b = in(reg64) v[1],
            options(nostack, preserves_flags),
        );
    }
}

/// Adds 1 to a global counter with no result and no ordering (`red.relaxed.gpu.add`): the
/// stage marks that the virtual GPU's timing profile reads; nothing in the step waits on it.
///
/// # Safety
/// `p` must point to a 4-byte aligned `u32` in global memory.
#[inline(always)]
pub unsafe fn count_relaxed(p: *mut u32) {
    // SAFETY: the caller guarantees `p`.
    unsafe {
        asm!(
            "red.relaxed.gpu.global.add.u32 [{p}], 1;",
            p = in(reg64) p,
            options(nostack, preserves_flags),
        );
    }
}

/// Slots of shared memory that asynchronous copies rotate through: [`copy_landed`]'s wait on
/// sm_80 counts the copies begun after the one it waits for, so the number is fixed.
pub const COPY_SLOTS: u32 = 4;

/// The 32-bit shared-memory address of `p`, a pointer into this block's shared memory.
#[inline(always)]
fn shared_address<T>(p: *const T) -> u32 {
    let a: u64;
    // SAFETY: an address conversion; no memory is accessed.
    unsafe {
        asm!(
            "cvta.to.shared.u64 {a}, {p};",
            a = out(reg64) a,
            p = in(reg64) p,
            options(pure, nomem, nostack)
        )
    };
    a as u32
}

/// Readies the copy barrier at `bar` (sm_90: an mbarrier expecting one arrival per phase).
/// Thread 0 calls it for every slot, then every thread [`copy_barriers_ready`].
///
/// # Safety
/// `bar` must point to 8 bytes of this block's shared memory, 8-byte aligned.
#[cfg(qwenmk_sm90)]
#[inline(always)]
pub unsafe fn copy_barrier_init(bar: *mut u64) {
    // SAFETY: the caller guarantees `bar`.
    unsafe {
        asm!(
            "mbarrier.init.shared::cta.b64 [{b}], 1;",
            b = in(reg32) shared_address(bar),
            options(nostack)
        )
    };
}

/// Makes thread 0's [`copy_barrier_init`]s visible to the copy engine and to the block (a
/// block barrier follows).
#[cfg(qwenmk_sm90)]
#[inline(always)]
pub fn copy_barriers_ready() {
    // SAFETY: a fence has no operands.
    unsafe { asm!("fence.mbarrier_init.release.cluster;", options(nostack)) };
    sync_threads();
}

/// Starts copying `bytes` (a multiple of 16; 0 for none) from global `src` to shared `dst`,
/// to land on the copy barrier `bar`. Every thread of the block calls it with the same
/// arguments. sm_90: thread 0 issues one bulk copy (the TMA) and arrives on the mbarrier
/// with the bytes it expects.
///
/// # Safety
/// `src` global and `dst` shared, both 16-byte aligned, `bytes` readable and writable; no
/// thread touches `dst` until [`copy_landed`] says so; `bar` readied by
/// [`copy_barrier_init`], with its previous copy landed.
#[cfg(qwenmk_sm90)]
#[inline(always)]
pub unsafe fn copy_begin(dst: *mut u8, src: *const u8, bytes: u32, bar: *mut u64) {
    if thread_idx() != 0 {
        return;
    }
    let b = shared_address(bar);
    // SAFETY: the caller guarantees the buffers and the barrier.
    unsafe {
        if bytes == 0 {
            asm!("mbarrier.arrive.shared::cta.b64 _, [{b}];", b = in(reg32) b, options(nostack));
        } else {
            asm!(
                "mbarrier.arrive.expect_tx.shared::cta.b64 _, [{b}], {n};",
                "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [{d}], [{s}], {n}, [{b}];",
                b = in(reg32) b,
                n = in(reg32) bytes,
                d = in(reg32) shared_address(dst),
                s = in(reg64) src,
                options(nostack)
            );
        }
    }
}

/// Whether the copy on `bar` whose phase has parity `parity` has landed (sm_90: one
/// `mbarrier.try_wait`, which suspends the thread a while before it says no). Every thread
/// that reads the copy asks.
///
/// # Safety
/// `bar` readied by [`copy_barrier_init`].
#[cfg(qwenmk_sm90)]
#[inline(always)]
pub unsafe fn copy_landed(bar: *mut u64, parity: u32) -> bool {
    let done: u32;
    // SAFETY: the caller guarantees `bar`.
    unsafe {
        asm!(
            "{{ .reg .pred %p; mbarrier.try_wait.parity.shared::cta.b64 %p, [{b}], {q}; selp.u32 {d}, 1, 0, %p; }}",
            b = in(reg32) shared_address(bar),
            q = in(reg32) parity,
            d = out(reg32) done,
            options(nostack)
        );
    }
    done != 0
}

/// sm_80: per-thread copies need no barrier object.
///
/// # Safety
/// None on this architecture.
#[cfg(not(qwenmk_sm90))]
#[inline(always)]
pub unsafe fn copy_barrier_init(_bar: *mut u64) {}

/// sm_80: a block barrier.
#[cfg(not(qwenmk_sm90))]
#[inline(always)]
pub fn copy_barriers_ready() {
    sync_threads();
}

/// sm_80: every thread copies its 16-byte pieces with `cp.async` and closes one group
/// (an empty one when `bytes` is 0), so that [`copy_landed`] can wait by counting groups.
///
/// # Safety
/// As on sm_90.
#[cfg(not(qwenmk_sm90))]
#[inline(always)]
pub unsafe fn copy_begin(dst: *mut u8, src: *const u8, bytes: u32, _bar: *mut u64) {
    let mut at = thread_idx() * 16;
    let d = shared_address(dst);
    while at < bytes {
        // SAFETY: the caller guarantees the buffers.
        unsafe {
            asm!(
                "cp.async.cg.shared.global [{d}], [{s}], 16;",
                d = in(reg32) d + at,
                s = in(reg64) src.add(at as usize),
                options(nostack)
            )
        };
        at += block_dim() * 16;
    }
    // SAFETY: no operands.
    unsafe { asm!("cp.async.commit_group;", options(nostack)) };
}

/// sm_80: waits until at most `COPY_SLOTS - 1` of this thread's groups are in flight: those
/// of the copies begun after the one asked about. Other threads' pieces are visible after a
/// block barrier (the caller's).
///
/// # Safety
/// Each [`copy_begin`] after the one asked about was made, `COPY_SLOTS - 1` of them.
#[cfg(not(qwenmk_sm90))]
#[inline(always)]
pub unsafe fn copy_landed(_bar: *mut u64, _parity: u32) -> bool {
    // SAFETY: no operands.
    unsafe { asm!("cp.async.wait_group {n};", n = const COPY_SLOTS - 1, options(nostack)) };
    true
}

/// `v`, unknown to the compiler: what is computed from it is computed where it is used, not
/// hoisted out of the loops around it into a register held through them (the decode step's
/// register budget cannot afford the values LLVM would keep live across the layer loop).
#[inline(always)]
pub fn opaque_u32(mut v: u32) -> u32 {
    // SAFETY: a register move.
    unsafe { asm!("mov.b32 {v}, {v};", v = inout(reg32) v, options(nostack, preserves_flags)) };
    v
}

/// `v << 16`, written as the multiply `mul.lo.u32 v, 65536`: ptxas makes it an `IMAD.SHL`,
/// which issues to the FMA pipe, where a shift would take the INT pipe (half the lanes) that
/// the other half of every BF16 pair's widening (an AND) already keeps busy; LLVM would turn
/// a plain multiply back into a shift.
#[inline(always)]
pub fn low_half_up(v: u32) -> u32 {
    let r: u32;
    // SAFETY: pure arithmetic.
    unsafe {
        asm!("mul.lo.u32 {r}, {v}, 65536;", r = out(reg32) r, v = in(reg32) v, options(pure, nomem, nostack))
    };
    r
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

/// The correctly rounded square root (`sqrt.rn.f32`).
#[inline(always)]
pub fn sqrt(x: f32) -> f32 {
    let s: f32;
    // SAFETY: pure arithmetic.
    unsafe {
        asm!("sqrt.rn.f32 {s}, {x};", s = out(reg32) s, x = in(reg32) x, options(pure, nomem, nostack))
    }
    s
}

/// `1 / sqrt(x)`, correctly rounded square root then a correctly rounded division, as torch's
/// f32 `rsqrt` (within an ulp).
#[inline(always)]
pub fn rsqrt(x: f32) -> f32 {
    1.0 / sqrt(x)
}
