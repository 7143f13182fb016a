//! The LM head's choice of the next token: greedy, or sampled, fused into the LM-head pass.
//!
//! No logit is written to memory and the vocabulary is read once, as for the plain argmax:
//! each row's logit goes straight from the dot product into a 64-bit key (see
//! [`crate::ops::argmax`]). What the key holds depends on the mode:
//!
//! * **greedy** — the logit: the argmax, ties to the lowest id, as before;
//! * **temperature** (no top-k, top-p or min-p) — `logit / T + g`, with `g` Gumbel noise for
//!   (seed, position, token): the argmax of that is an exact draw from `softmax(logit / T)`
//!   (the Gumbel-max trick), again one atomic maximum per warp;
//! * **candidates** (top-k, top-p or min-p) — the logit, offered to a per-warp top-64 list
//!   ([`candidates`]); blocks merge their warps' lists, publish them, and the last block to
//!   finish merges the grid's lists and [`choose`]s among the survivors of top-k, top-p and
//!   min-p by Gumbel-max over the same noise.
//!
//! A repeat penalty (`logit / R` if positive, `logit · R` if not, for the tokens among the last
//! `window` positions) is applied to the logit first, in every mode. The window's tokens are a
//! ring of input tokens by position ([`record_input`]) and a bit mask over the vocabulary that
//! one block rebuilds at the start of each step.
//!
//! Every random draw comes from [`rng`], keyed by (seed, position, token id), and the final
//! choice is the plain function [`choose`]: the cpu engine calls the same code and gets the
//! same token from the same logits.

pub mod candidates;
pub mod rng;

use crate::device;
use crate::ops::argmax::{Logit, RowMap, argmax_key, argmax_rows_by, key_logit, key_row};
use crate::ops::matvec::{PassVisitor, matvec_passes};
use candidates::{CANDIDATES, WARP_WORDS, WarpTopK, merge_block};

/// How the next token is chosen, and where the sampler keeps its state. `repr(C)`: part of the
/// decode step's parameters.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleParams {
    /// [`SampleParams::GREEDY`], [`SampleParams::TEMPERATURE`] or [`SampleParams::CANDIDATES`].
    pub mode: u32,
    /// Candidates mode: how many of the most likely tokens to keep, 1 to [`CANDIDATES`].
    pub top_k: u32,
    pub temperature: f32,
    /// Candidates mode: keep the most likely tokens until their mass reaches this (1 = all).
    pub top_p: f32,
    /// Candidates mode: drop tokens less likely than this fraction of the most likely one.
    pub min_p: f32,
    /// 1 = no penalty.
    pub repeat_penalty: f32,
    /// Positions the penalty looks back over, the input token's included; 0 = none (and no
    /// input is recorded).
    pub penalty_window: u32,
    /// Entries of `history` (at least `penalty_window`).
    pub history_len: u32,
    pub seed: u64,
    /// Input tokens by position modulo `history_len`.
    pub history: *mut u32,
    /// One bit per vocabulary entry: in the penalty window this step.
    pub penalty_mask: *mut u32,
    /// Candidates mode: one list of [`CANDIDATES`] keys per block, and one more for the
    /// grid's merge ([`list_words`]).
    pub lists: *mut u64,
    /// Candidates mode: blocks that have published their list this step (0 between steps).
    pub blocks_done: *mut u32,
}

// SAFETY: the pointers name device memory the launch owns; the struct is plain data.
unsafe impl Send for SampleParams {}
// SAFETY: as above; kernels only read the struct.
unsafe impl Sync for SampleParams {}

impl SampleParams {
    pub const GREEDY: u32 = 0;
    pub const TEMPERATURE: u32 = 1;
    pub const CANDIDATES: u32 = 2;

    /// Greedy decoding with no penalty and no state: the step's behaviour before sampling.
    pub const fn greedy() -> Self {
        SampleParams {
            mode: Self::GREEDY,
            top_k: 0,
            temperature: 0.0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            penalty_window: 0,
            history_len: 0,
            seed: 0,
            history: core::ptr::null_mut(),
            penalty_mask: core::ptr::null_mut(),
            lists: core::ptr::null_mut(),
            blocks_done: core::ptr::null_mut(),
        }
    }

    /// Whether this launch penalises the window's tokens.
    #[inline(always)]
    pub fn penalises(&self) -> bool {
        self.penalty_window > 0 && self.repeat_penalty != 1.0
    }

    /// `logit` after the repeat penalty, as llama.cpp and transformers apply it.
    #[inline(always)]
    pub fn penalise(&self, logit: f32) -> f32 {
        if logit > 0.0 {
            logit / self.repeat_penalty
        } else {
            logit * self.repeat_penalty
        }
    }
}

/// Keys of [`SampleParams::lists`] for a grid of `blocks`.
pub const fn list_words(blocks: u32) -> usize {
    (blocks as usize + 1) * CANDIDATES
}

/// Words of [`SampleParams::penalty_mask`] for a vocabulary of `vocab`.
pub const fn mask_words(vocab: u32) -> usize {
    vocab.div_ceil(32) as usize
}

/// Shared memory the LM-head op needs per block, in bytes, for `warps` warps per block.
pub const fn shared_bytes(warps: u32) -> usize {
    (warps as usize * WARP_WORDS + 2) * 8
}

/// Records the step's input and, when this launch penalises, rebuilds the window's mask.
/// Called by every thread of one block at the start of the step; other blocks read the mask
/// after a grid barrier.
///
/// # Safety
/// The pointers of `s` must be valid for their documented sizes, `vocab` entries for the mask.
#[inline(always)]
pub unsafe fn record_input(s: &SampleParams, token: u32, position: u32, vocab: u32) {
    if s.penalty_window == 0 || s.history_len == 0 {
        return;
    }
    if device::thread_idx() == 0 {
        // SAFETY: `history` holds `history_len` entries.
        unsafe {
            s.history
                .add((position % s.history_len) as usize)
                .write(token)
        };
    }
    if !s.penalises() {
        return;
    }
    let mut i = device::thread_idx() as usize;
    while i < mask_words(vocab) {
        // SAFETY: the mask holds `mask_words(vocab)` words.
        unsafe { s.penalty_mask.add(i).write(0) };
        i += device::block_dim() as usize;
    }
    // Orders the history write and the clearing before the bits are set.
    device::sync_threads();
    let first = (position + 1).saturating_sub(s.penalty_window);
    let mut p = first + device::thread_idx();
    while p <= position {
        // SAFETY: the ring covers the window (`history_len ≥ penalty_window`); ids recorded
        // were checked against the vocabulary at the start of their step.
        unsafe {
            let t = s.history.add((p % s.history_len) as usize).read();
            device::atomic_or_u32(s.penalty_mask.add((t / 32) as usize), 1 << (t % 32));
        }
        p += device::block_dim();
    }
}

/// What the LM-head pass turns each row's logit into: the penalised logit, and in temperature
/// mode `/ T + gumbel`. Plain values (no references), so that the closures and visitors that
/// carry it stay in registers.
#[derive(Clone, Copy)]
struct RowValue {
    mask: *const u32,
    penalty: f32,
    penalises: bool,
    /// Temperature mode: add Gumbel noise to `logit / temperature`.
    noisy: bool,
    temperature: f32,
    seed: u64,
    position: u32,
}

impl RowValue {
    #[inline(always)]
    fn new(s: &SampleParams, position: u32) -> Self {
        RowValue {
            mask: s.penalty_mask,
            penalty: s.repeat_penalty,
            penalises: s.penalises(),
            noisy: s.mode == SampleParams::TEMPERATURE,
            temperature: s.temperature,
            seed: s.seed,
            position,
        }
    }
}

impl RowMap for RowValue {
    /// When penalising, the mask must hold the vocabulary `row` is in (the sampler's
    /// contract, checked by the host that sizes it).
    #[inline(always)]
    fn map(self, row: u32, logit: f32) -> f32 {
        let mut v = logit;
        // SAFETY: the mask covers the vocabulary when penalising (see above).
        if self.penalises
            && unsafe { self.mask.add((row / 32) as usize).read() } & (1 << (row % 32)) != 0
        {
            v = if v > 0.0 {
                v / self.penalty
            } else {
                v * self.penalty
            };
        }
        if self.noisy {
            v = v / self.temperature + rng::gumbel(self.seed, self.position, row);
        }
        v
    }
}

/// The LM head and the choice of the next token: `W · x` over every row, the key of the chosen
/// token merged into `*result` (0 before the call) by the time every block has returned. Every
/// thread of the grid calls it; a grid barrier must follow before `*result` is read.
///
/// # Safety
/// As [`crate::ops::matvec::matvec`] for `weights` and `x`; `result` a valid, aligned u64 in
/// global memory; the pointers of `s` valid for a grid of this launch's size and `rows` tokens;
/// `shared` this block's [`shared_bytes`] of 8-byte aligned shared memory.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub unsafe fn lm_head_sample(
    weights: *const u16,
    x: &[f32],
    rows: u32,
    lanes_per_row: u32,
    result: *mut u64,
    s: &SampleParams,
    position: u32,
    shared: *mut u64,
) {
    let value = RowValue::new(s, position);
    // The same widening as every other matvec of the step (for a vocabulary this large it
    // keeps the launch's lanes).
    let lanes_per_row = crate::ops::matvec::lanes_for(rows, x.len() as u32, lanes_per_row);
    // SAFETY (every arm): forwarded contract; the mask is read only when penalising.
    unsafe {
        if s.mode == SampleParams::CANDIDATES {
            candidates_pass(weights, x, rows, lanes_per_row, result, s, value, shared)
        } else if value.penalises || value.noisy {
            argmax_rows_by(weights, x, rows, lanes_per_row, result, value)
        } else {
            argmax_rows_by(weights, x, rows, lanes_per_row, result, Logit)
        }
    }
}

/// Candidates mode: warp lists during the pass, a block list at the end, and the grid's merge
/// and choice in the last block to finish.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn candidates_pass(
    weights: *const u16,
    x: &[f32],
    rows: u32,
    lanes_per_row: u32,
    result: *mut u64,
    s: &SampleParams,
    value: RowValue,
    shared: *mut u64,
) {
    let position = value.position;
    let warps = device::warps_per_block() as usize;
    // SAFETY: the block's shared area holds `warps` warp areas and a flag word.
    let (area, last_flag) = unsafe {
        (
            shared.add(device::warp_id() as usize * WARP_WORDS),
            shared.add(warps * WARP_WORDS),
        )
    };
    // 1. The pass: every lane offers its rows' keys to its warp's list.
    // SAFETY: the warp's own area; forwarded contract for the matvec.
    unsafe {
        let mut visitor = Offer {
            top: WarpTopK::new(area, lanes_per_row),
            value,
        };
        matvec_passes::<1>(weights, x, rows, lanes_per_row, &mut visitor);
        visitor.top.finish();
    }
    // 2. The block's list, published for the last block.
    let grid = device::grid_dim();
    // SAFETY: `lists` holds a list per block and one for the grid.
    unsafe {
        merge_block(
            shared,
            s.lists.add(device::block_idx() as usize * CANDIDATES),
        )
    };
    if device::thread_idx() == 0 {
        // Release the block's list (written by all its threads, ordered by the barrier in
        // `merge_block`), count the block in, and acquire every other block's list if last.
        device::fence_acq_rel_gpu();
        // SAFETY: a global u32 updated only atomically during the step.
        // (The fence above makes the count a release; the count's own acquire gives the last
        // block every other block's list without a second fence.)
        let before = unsafe { device::atomic_add_acquire_gpu(s.blocks_done, 1) };
        let last = before == grid - 1;
        // SAFETY: this block's flag word.
        unsafe { last_flag.write_volatile(last as u64) };
    }
    device::sync_threads();
    // SAFETY: written by thread 0 before the barrier.
    if unsafe { last_flag.read_volatile() } == 0 {
        return;
    }
    // 3. The last block: the grid's lists streamed through its warps' lists, then merged.
    let total = grid as usize * CANDIDATES;
    // SAFETY: the warp's own area; `lists` holds `total` published keys and the grid's slot.
    unsafe {
        let mut top = WarpTopK::new(area, 1);
        let mut base = device::warp_id() as usize * device::WARP_SIZE as usize;
        while base < total {
            let i = base + device::lane_id() as usize;
            if i < total {
                top.offer(s.lists.add(i).read());
            }
            top.end_pass();
            base += warps * device::WARP_SIZE as usize;
        }
        top.finish();
        let merged = s.lists.add(total);
        merge_block(shared, merged);
        if device::thread_idx() == 0 {
            let valid = candidates::count_above(merged, CANDIDATES, 0) as u32;
            let n = if s.top_k < valid { s.top_k } else { valid };
            let chosen = choose(n, |i| merged.add(i as usize).read(), s, position);
            let row = key_row(merged.add(chosen as usize).read());
            device::atomic_max_u64(result, argmax_key(0.0, row));
            // Every block has counted itself in: ready for the next step.
            s.blocks_done.write_volatile(0);
        }
    }
}

/// Candidates mode's visitor of the LM-head pass: each row's (penalised) logit key goes to the
/// warp's list; the warp merges at the ends of passes.
struct Offer {
    top: WarpTopK,
    value: RowValue,
}

impl PassVisitor<1> for Offer {
    #[inline(always)]
    fn unit(&mut self, row: u32, [logit]: [f32; 1]) {
        // SAFETY: the mask is read only when penalising, and then holds the vocabulary; the
        // warp's own area (see `candidates_pass`).
        unsafe { self.top.offer(argmax_key(self.value.map(row, logit), row)) };
    }

    #[inline(always)]
    fn end_of_pass(&mut self) {
        // SAFETY: as above; every lane of the warp calls it, converged.
        unsafe { self.top.end_pass() };
    }
}

/// Which of the `n` best candidates to emit (`n ≥ 1`): `key_at(i)` is the i-th key, highest
/// first, holding the penalised logit. With `z = logit / T`, keeps the longest prefix whose
/// tokens each have `e^(z - z₀) ≥ min_p` and, before them, less than `top_p` of the prefix's
/// softmax mass (transformers' order: temperature, top-k, top-p, min-p), then takes the argmax
/// of `z + gumbel` over it (ties to the lowest id).
///
/// Plain serial f32 arithmetic in a fixed order, with [`rng`]'s exponential: the device's last
/// block and the cpu engine compute it identically.
#[inline(always)]
pub fn choose(n: u32, key_at: impl Fn(u32) -> u64, s: &SampleParams, position: u32) -> u32 {
    let z0 = key_logit(key_at(0)) / s.temperature;
    let mut total = 0.0f32;
    let mut i = 0;
    while i < n {
        total += rng::exp_nonpositive(key_logit(key_at(i)) / s.temperature - z0);
        i += 1;
    }
    let cut = s.top_p * total;
    let mut mass_before = 0.0f32;
    let (mut best, mut best_key) = (0, 0u64);
    let mut i = 0;
    while i < n {
        let key = key_at(i);
        let z = key_logit(key) / s.temperature;
        let weight = rng::exp_nonpositive(z - z0);
        if i > 0 && (mass_before >= cut || weight < s.min_p) {
            break;
        }
        mass_before += weight;
        let row = key_row(key);
        let perturbed = argmax_key(z + rng::gumbel(s.seed, position, row), row);
        if perturbed > best_key {
            best_key = perturbed;
            best = i;
        }
        i += 1;
    }
    best
}
