//! LM head fused with argmax: `argmax_r (W[r] · x)` over every row of a BF16 matrix, without
//! writing a single logit to memory.
//!
//! Each warp computes the dot products of a group of rows, keeps the best (logit, row) pair as
//! one 64-bit *argmax key* and the warp's best key is merged into the result with one atomic
//! maximum. The key orders by logit first and by lowest row second, so the result is exactly
//! `torch.argmax`'s (ties go to the lowest id) whatever order the blocks finish in.

use crate::device;
use crate::ops::matvec::{PassVisitor, VALUES_PER_LOAD, matvec_passes, staged_index};

/// Parameters of [`lm_head_argmax`], passed by value to the PTX kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LmHeadArgmaxParams {
    /// The input vector, `cols` f32 values (the final-normed hidden state).
    pub x: *const f32,
    /// The matrix, `rows × cols` BF16 values, row-major, 16-byte aligned.
    pub weights: *const u16,
    /// Where the argmax key goes; the caller sets it to 0 before the launch.
    pub result: *mut u64,
    /// Rows of the matrix (the vocabulary size).
    pub rows: u32,
    /// Columns of the matrix (the hidden size): a multiple of [`COLS_MULTIPLE`].
    pub cols: u32,
    /// How many lanes share one row's dot product: 1, 2, 4, 8, 16 or 32. Many lanes per row
    /// coalesce loads on wide rows (the GPU); one lane per row needs no shuffles (the emulator).
    pub lanes_per_row: u32,
    /// Keeps the struct's size a multiple of 8 on both sides of the launch.
    pub reserved: u32,
}

// SAFETY: the raw pointers name device memory that the launch owns for its duration; the
// struct is plain data copied into the kernel's parameter space.
unsafe impl Send for LmHeadArgmaxParams {}
// SAFETY: see above; the kernel only reads the struct.
unsafe impl Sync for LmHeadArgmaxParams {}

/// `cols` must be a multiple of this: one 128-bit load covers 8 BF16 values.
pub const COLS_MULTIPLE: u32 = VALUES_PER_LOAD;

/// Dynamic shared memory [`lm_head_argmax`] needs per block, in bytes.
pub const fn shared_bytes(cols: u32) -> usize {
    cols as usize * core::mem::size_of::<f32>()
}

/// Packs a logit and its row into a key whose unsigned order is (logit, lowest row).
#[inline(always)]
pub fn argmax_key(logit: f32, row: u32) -> u64 {
    let bits = logit.to_bits();
    // Flip negatives entirely and set the sign bit of positives: the IEEE order becomes the
    // unsigned integer order.
    let ordered = if bits & 0x8000_0000 != 0 {
        !bits
    } else {
        bits | 0x8000_0000
    };
    ((ordered as u64) << 32) | (u32::MAX - row) as u64
}

/// The row an argmax key names.
#[inline(always)]
pub fn key_row(key: u64) -> u32 {
    u32::MAX - key as u32
}

/// The logit an argmax key carries.
#[inline(always)]
pub fn key_logit(key: u64) -> f32 {
    let ordered = (key >> 32) as u32;
    let bits = if ordered & 0x8000_0000 != 0 {
        ordered & 0x7fff_ffff
    } else {
        !ordered
    };
    f32::from_bits(bits)
}

/// The argmax over `rows` of `W · x`, merged into `*result` with one atomic per warp.
///
/// # Safety
/// As [`matvec`]; `result` must be a valid, aligned u64 in global memory.
#[inline(always)]
pub unsafe fn argmax_rows(
    weights: *const u16,
    x: &[f32],
    rows: u32,
    lanes_per_row: u32,
    result: *mut u64,
) {
    // SAFETY: forwarded contract.
    unsafe { argmax_rows_by(weights, x, rows, lanes_per_row, result, Logit) }
}

/// What an argmax ranks rows by: a function of the row and its logit. A trait with
/// always-inlined methods rather than a closure, which the GPU build would not always inline.
pub trait RowMap: Copy {
    fn map(self, row: u32, logit: f32) -> f32;
}

/// The logit itself: the plain argmax.
#[derive(Clone, Copy)]
pub struct Logit;

impl RowMap for Logit {
    #[inline(always)]
    fn map(self, _row: u32, logit: f32) -> f32 {
        logit
    }
}

/// The argmax over `rows` of `value.map(row, W[row] · x)`, merged into `*result` with one atomic per
/// warp (the sampler's penalised or Gumbel-perturbed logits).
///
/// # Safety
/// As [`argmax_rows`].
#[inline(always)]
pub unsafe fn argmax_rows_by(
    weights: *const u16,
    x: &[f32],
    rows: u32,
    lanes_per_row: u32,
    result: *mut u64,
    value: impl RowMap,
) {
    let mut best = Best { key: 0, value };
    // SAFETY: forwarded contract.
    unsafe { matvec_passes::<1>(weights, x, rows, lanes_per_row, &mut best) };
    let best = device::warp_max_u64(best.key);
    if device::lane_id() == 0 && best != 0 {
        // SAFETY: the caller guarantees `result`.
        unsafe { device::atomic_max_u64(result, best) };
    }
}

/// The lane's best key so far. A struct owned by the pass (not a closure capturing a local by
/// reference), so that on the GPU it stays in registers.
struct Best<F> {
    key: u64,
    value: F,
}

impl<F: RowMap> PassVisitor<1> for Best<F> {
    #[inline(always)]
    fn unit(&mut self, row: u32, [logit]: [f32; 1]) {
        let key = argmax_key(self.value.map(row, logit), row);
        if key > self.key {
            self.key = key;
        }
    }
}

/// The standalone fused LM head and argmax. Launch with any grid, blocks of whole warps and
/// [`shared_bytes`]`(cols)` of dynamic shared memory.
///
/// # Safety
/// The pointers in `p` must be valid for the sizes it gives, `weights` 16-byte aligned, `cols`
/// a multiple of [`COLS_MULTIPLE`], `lanes_per_row` a power of two up to 32, and every thread
/// of the block must call this function.
#[inline(always)]
pub unsafe fn lm_head_argmax(p: &LmHeadArgmaxParams) {
    let cols = p.cols as usize;
    // Stage x in shared memory, laid out for the matvec: every row reads all of it.
    let x = device::shared_memory().cast::<f32>();
    let mut i = device::thread_idx() as usize;
    while i < cols {
        // SAFETY: the launch gives `shared_bytes(cols)` bytes and `p.x` holds `cols` values.
        unsafe { x.add(staged_index(i, cols)).write(p.x.add(i).read()) };
        i += device::block_dim() as usize;
    }
    device::sync_threads();
    // SAFETY: written above and only read from here on.
    let x = unsafe { core::slice::from_raw_parts(x, cols) };
    // SAFETY: forwarded contract.
    unsafe { argmax_rows(p.weights, x, p.rows, p.lanes_per_row, p.result) };
}
