//! Flash-decoding attention for one decode position: GQA, with Qwen3's per-head q/k RMSNorm
//! and RoPE.
//!
//! The positions `0..=pos` are cut into `splits` chunks. A work item is one (KV head, block of
//! up to [`HEADS_PER_ITEM`] query heads of its group, chunk) and runs on one block, so each K
//! and V row is read once for the query heads that share it. The block's warps cut the chunk
//! again, each its own run of positions, and merge their results in shared memory: a block
//! barrier, not a fence and a ticket through L2.
//!
//! * **Lanes own slices of the head.** A key's row is `head_dim` values; `head_dim / 8` lanes
//!   (a *key group*) each hold 8 of its values (one 16-byte load from a BF16 cache, two from
//!   an f32 one: [`KvElem`]), and the warp's
//!   `32 / (head_dim / 8)` key groups take different keys. A dot product is 8 fused
//!   multiply-adds and a reduction over the key group's lanes.
//! * **Loads first.** A warp issues its query, norm weights, RoPE table row and the new key
//!   and value at once, then normalises and rotates in registers (the partner of a dimension
//!   under RoPE's rotate-half is another lane of the key group: a shuffle). The keys of
//!   [`BATCH`] rounds, and their values, are loaded before the first is used.
//! * **Online softmax in registers**: a running max, sum and weighted value sum per query head,
//!   merged across key groups by shuffles, then across the block's warps through shared
//!   memory by every thread of the block, one (head, dimension) each, all runs at once.
//! * **No grid barrier, fence or ticket for the combine.** With several chunks, each item but
//!   the last chunk's publishes its block's partial as words with their epoch ([`super::flow`]);
//!   the last chunk's item waits for the others' words, merges them into its own the same way,
//!   one (head, dimension) a thread, and writes the output.
//!
//! Items go to blocks (block `b` takes items `b, b + grid, …`), so short contexts spread over
//! the SMs instead of filling the first ones.

use super::flow::{Epochs, Produced, Waiter, await_octets, holds, publish, publish8, value_of};
use super::{KvDtype, LayerPointers, StepParams};
use crate::device;
use crate::ops::norm::{bf16x8_raw, widen8};

/// Values of a head each lane holds: two 16-byte loads of f32, one of BF16.
pub const DIMS_PER_LANE: usize = 8;
/// Query heads one item serves (the GQA group, or a block of it).
pub const HEADS_PER_ITEM: usize = 2;
/// Rounds of keys whose loads are issued together.
pub const BATCH: usize = 4;

// The loops over heads and batches are unrolled by `unroll!` with these counts.
const _: () = assert!(HEADS_PER_ITEM == 2 && BATCH == 4);

/// How a step cuts its attention: chunk length and number of chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionSplit {
    pub chunk: u32,
    pub splits: u32,
}

/// The split for `len` cached positions (a step at position `len` attends to them and to its
/// own, which joins the last chunk: it comes from the projection, not from memory, so it is
/// left out of the even split of what is loaded). Enough chunks to give every one of `slots`
/// item slots (the grid's blocks) an item when `rows` items share each chunk, each chunk at
/// most `max_chunk` positions and, unless that leaves fewer than two chunks' worth, at least
/// `min_chunk`; then the positions are spread evenly over that many chunks. With nothing
/// cached, one chunk (of the new position alone). Host and kernel call the same function.
pub const fn attention_split(
    len: u32,
    slots: u32,
    rows: u32,
    min_chunk: u32,
    max_chunk: u32,
) -> AttentionSplit {
    if len == 0 {
        return AttentionSplit {
            chunk: 1,
            splits: 1,
        };
    }
    let target = if slots / rows > 1 { slots / rows } else { 1 };
    let mut chunk = len.div_ceil(target);
    if chunk < min_chunk {
        chunk = min_chunk;
    }
    if chunk > max_chunk {
        chunk = max_chunk;
    }
    if chunk == 0 {
        chunk = 1;
    }
    let splits = len.div_ceil(chunk);
    // The same number of chunks, evenly filled: `ceil(len / ceil(len / c)) ≤ c` and it gives
    // exactly `ceil(len / c)` chunks, so the bound of `max_splits` still holds.
    AttentionSplit {
        chunk: len.div_ceil(splits),
        splits,
    }
}

/// Blocks of query heads per KV head.
pub const fn head_blocks(q_heads: u32, kv_heads: u32) -> u32 {
    (q_heads / kv_heads).div_ceil(HEADS_PER_ITEM as u32)
}

/// Items per chunk (the `rows` of [`attention_split`]).
pub const fn item_rows(q_heads: u32, kv_heads: u32) -> u32 {
    kv_heads * head_blocks(q_heads, kv_heads)
}

/// Values one partial takes (f32s in shared memory, published words in `attn_partial`): the
/// weighted value sum, then max and sum, padded so that every partial in shared memory starts
/// 16-byte aligned.
pub const fn partial_stride(head_dim: u32) -> u32 {
    head_dim + 4
}

/// True when the attention can run a head of `head_dim` values: 8 per lane over a power of
/// two of lanes, at most a warp.
pub const fn head_dim_supported(head_dim: u32) -> bool {
    head_dim.is_multiple_of(DIMS_PER_LANE as u32)
        && (head_dim / DIMS_PER_LANE as u32).is_power_of_two()
        && head_dim / DIMS_PER_LANE as u32 <= device::WARP_SIZE
}

/// One attention work item.
#[derive(Clone, Copy)]
pub struct AttentionItem {
    pub layer: u32,
    pub pos: u32,
    pub kv_head: u32,
    pub head_block: u32,
    pub split: u32,
    pub shape: AttentionSplit,
    /// The epochs of the QKV rows it reads and of the output it publishes.
    pub qkv_epoch: u32,
    pub out_epoch: u32,
}

/// A lane's place in the warp: which slice of a head it holds and which key group it is in.
#[derive(Clone, Copy)]
struct Lanes {
    /// Lanes per key (`head_dim / 8`), and this lane's slice and key group.
    per_key: u32,
    slice: u32,
    group: u32,
    /// Key groups in the warp.
    groups: u32,
}

impl Lanes {
    #[inline(always)]
    fn here(head_dim: u32) -> Lanes {
        // A power of two ([`head_dim_supported`]): shifts and masks, not divisions, at the
        // start of every item.
        let per_key = head_dim / DIMS_PER_LANE as u32;
        let shift = per_key.trailing_zeros();
        let lane = device::lane_id();
        Lanes {
            per_key,
            slice: lane & (per_key - 1),
            group: lane >> shift,
            groups: device::WARP_SIZE >> shift,
        }
    }

    /// Sums of `N` values over the key group's lanes (every lane of the group gets them),
    /// level by level: the `N` shuffles of a level do not depend on each other, so they issue
    /// back to back instead of each waiting out the one before (in-order issue, as on the
    /// GPU).
    #[inline(always)]
    fn sum_n<const N: usize>(&self, mut v: [f32; N]) -> [f32; N] {
        let mut offset = 1;
        while offset < self.per_key {
            let mut other = [0.0f32; N];
            let mut i = 0;
            while i < N {
                other[i] = device::shfl_xor_f32(v[i], offset);
                i += 1;
            }
            let mut i = 0;
            while i < N {
                v[i] += other[i];
                i += 1;
            }
            offset *= 2;
        }
        v
    }
}

/// A lane's 8 values of a head.
pub type Slice = [f32; DIMS_PER_LANE];

/// How the KV cache holds a lane's 8 values of a row. The attention is generic over it, and
/// the step picks the type once ([`attention_stage`]), so the loop over keys has no branch on
/// it.
pub trait KvElem {
    /// One cached value as it lies in memory.
    type Stored;
    /// The values as the cache will hold them, widened back: what later steps read.
    fn round(v: Slice) -> Slice;
    /// Stores 8 values that [`KvElem::round`] returned (so each is exactly a cached value).
    ///
    /// # Safety
    /// `p` must point to 8 writable values, 16-byte aligned.
    unsafe fn store8(p: *mut Self::Stored, v: Slice);
    /// 8 cached values as they lie in memory, and zeros of that type.
    type Raw: Copy;
    const RAW_ZERO: Self::Raw;
    /// Loads 8 values through the non-coherent path, as they lie in memory ([`KvElem::widen`]
    /// widens them): a batch of rows is loaded whole before any is widened, so that no
    /// instruction between its loads needs one of them (in-order issue stops at the first
    /// that does: a batch's 8 loads were 8 round trips one after another).
    ///
    /// # Safety
    /// `p` must point to 8 readable values, 16-byte aligned, that nothing writes during the
    /// launch.
    unsafe fn load_raw8(p: *const Self::Stored) -> Self::Raw;
    /// The values of [`KvElem::load_raw8`], widened to f32.
    fn widen(raw: Self::Raw) -> Slice;
}

/// An f32 cache: values kept exactly; 32 bytes per lane, two 16-byte accesses.
pub struct F32;

impl KvElem for F32 {
    type Stored = f32;

    #[inline(always)]
    fn round(v: Slice) -> Slice {
        v
    }

    #[inline(always)]
    unsafe fn store8(p: *mut f32, v: Slice) {
        // SAFETY: forwarded contract.
        unsafe { store_slice(p, v) }
    }

    type Raw = Slice;
    const RAW_ZERO: Slice = [0.0; DIMS_PER_LANE];

    #[inline(always)]
    unsafe fn load_raw8(p: *const f32) -> Slice {
        // SAFETY: forwarded contract.
        unsafe { load_slice_nc(p) }
    }

    #[inline(always)]
    fn widen(raw: Slice) -> Slice {
        raw
    }
}

/// A BF16 cache: values rounded to nearest even ([`device::f32x2_to_bf16x2`]) and widened
/// exactly; 16 bytes per lane, one access.
pub struct Bf16;

impl Bf16 {
    #[inline(always)]
    fn pack(v: &Slice) -> [u32; 4] {
        [
            device::f32x2_to_bf16x2(v[0], v[1]),
            device::f32x2_to_bf16x2(v[2], v[3]),
            device::f32x2_to_bf16x2(v[4], v[5]),
            device::f32x2_to_bf16x2(v[6], v[7]),
        ]
    }
}

impl KvElem for Bf16 {
    type Stored = u16;

    #[inline(always)]
    fn round(v: Slice) -> Slice {
        widen8(Self::pack(&v))
    }

    #[inline(always)]
    unsafe fn store8(p: *mut u16, v: Slice) {
        // Already BF16 values: their upper halves are the bits, no second rounding (a
        // conversion at a quarter of the ALU's rate, 16 per lane on the critical path).
        let mut w = [0u32; 4];
        let mut i = 0;
        while i < 4 {
            w[i] = (v[2 * i].to_bits() >> 16) | (v[2 * i + 1].to_bits() & 0xffff_0000);
            i += 1;
        }
        // SAFETY: forwarded contract (8 BF16 values are 16 bytes).
        unsafe { device::store_u32x4(p.cast::<u32>(), w) }
    }

    type Raw = [u32; 4];
    const RAW_ZERO: [u32; 4] = [0; 4];

    #[inline(always)]
    unsafe fn load_raw8(p: *const u16) -> [u32; 4] {
        // SAFETY: forwarded contract.
        unsafe { bf16x8_raw(p, 0) }
    }

    #[inline(always)]
    fn widen(raw: [u32; 4]) -> Slice {
        widen8(raw)
    }
}

/// 8 f32s at `p`, read with two vector loads through the non-coherent path: for memory no
/// thread writes during the launch (KV rows of earlier positions, the RoPE table).
///
/// # Safety
/// `p` must point to 8 readable, 16-byte aligned f32s that nothing writes during the launch.
#[inline(always)]
unsafe fn load_slice_nc(p: *const f32) -> Slice {
    let q = p.cast::<[u32; 4]>();
    // SAFETY: forwarded contract.
    let (a, b) = unsafe {
        (
            device::load_global_nc_v4(q),
            device::load_global_nc_v4(q.add(1)),
        )
    };
    let f = f32::from_bits;
    [
        f(a[0]),
        f(a[1]),
        f(a[2]),
        f(a[3]),
        f(b[0]),
        f(b[1]),
        f(b[2]),
        f(b[3]),
    ]
}

/// # Safety
/// `p` must point to 8 writable, 16-byte aligned f32s.
#[inline(always)]
unsafe fn store_slice(p: *mut f32, v: Slice) {
    // SAFETY: forwarded contract.
    unsafe {
        device::store_f32x4(p, [v[0], v[1], v[2], v[3]]);
        device::store_f32x4(p.add(4), [v[4], v[5], v[6], v[7]]);
    }
}

/// RMSNorm of `N` heads held as slices by a key group, then rotate-half RoPE: dimension `i`
/// of the first half pairs with `i + head_dim / 2`, held by the lane `per_key / 2` away.
/// `cos_sin` holds this lane's 8 (cos, sin) pairs. The heads' reductions and partner shuffles
/// are issued together, so their shuffles overlap.
#[inline(always)]
fn norm_rope<const N: usize>(
    v: [Slice; N],
    weight: [&Slice; N],
    cos_sin: &[f32; 16],
    lanes: &Lanes,
    head_dim: u32,
    eps: f32,
) -> [Slice; N] {
    let mut sum_sq = [0.0f32; N];
    let mut n = 0;
    while n < N {
        let mut i = 0;
        while i < DIMS_PER_LANE {
            sum_sq[n] += v[n][i] * v[n][i];
            i += 1;
        }
        n += 1;
    }
    let sums = lanes.sum_n(sum_sq);
    // `1 / head_dim`, exactly: `head_dim` is a power of two (`head_dim_supported`), so the
    // product rounds as the division would, without the division's long sequence.
    let inv_dim = f32::from_bits((127 - head_dim.trailing_zeros()) << 23);
    // Each step for all heads before the next: the square roots and reciprocals of the heads
    // wait out their latencies together instead of one after another.
    let mut scale = [0.0f32; N];
    let mut n = 0;
    while n < N {
        scale[n] = device::sqrt(sums[n] * inv_dim + eps);
        n += 1;
    }
    let mut n = 0;
    while n < N {
        scale[n] = 1.0 / scale[n];
        n += 1;
    }
    let mut normed = [[0.0; DIMS_PER_LANE]; N];
    let mut n = 0;
    while n < N {
        let scale = scale[n];
        let mut i = 0;
        while i < DIMS_PER_LANE {
            normed[n][i] = v[n][i] * scale * weight[n][i];
            i += 1;
        }
        n += 1;
    }
    let half = lanes.per_key / 2;
    let mut partner = [[0.0; DIMS_PER_LANE]; N];
    let mut n = 0;
    while n < N {
        let mut i = 0;
        while i < DIMS_PER_LANE {
            partner[n][i] = device::shfl_xor_f32(normed[n][i], half);
            i += 1;
        }
        n += 1;
    }
    // The first half subtracts its partner's term, the second adds it: `a·c − b·s` is
    // `a·c + b·(−s)` exactly, so the sign goes on the sine once per dimension.
    let first_half = lanes.slice < half;
    let mut signed_sin = [0.0f32; DIMS_PER_LANE];
    let mut i = 0;
    while i < DIMS_PER_LANE {
        let s = cos_sin[2 * i + 1];
        signed_sin[i] = if first_half { -s } else { s };
        i += 1;
    }
    let mut out = [[0.0; DIMS_PER_LANE]; N];
    let mut n = 0;
    while n < N {
        let mut i = 0;
        while i < DIMS_PER_LANE {
            out[n][i] = normed[n][i] * cos_sin[2 * i] + partner[n][i] * signed_sin[i];
            i += 1;
        }
        n += 1;
    }
    out
}

/// A running softmax-weighted sum over keys for one query head: max score, sum of
/// `e^(score − max)` and the weighted values.
#[derive(Clone, Copy)]
struct Running {
    max: f32,
    sum: f32,
    acc: Slice,
}

impl Running {
    const EMPTY: Running = Running {
        max: f32::NEG_INFINITY,
        sum: 0.0,
        acc: [0.0; DIMS_PER_LANE],
    };

    /// `e^(from − to)`, 0 when `from` is −∞ (nothing seen yet, or a masked key; `to` is −∞
    /// only then too). The exponent is selected, not the exponential branched over, so that
    /// the exponentials of a round issue back to back instead of each behind a branch and
    /// the one before (e^−∞ is +0, on the GPU as on the host).
    #[inline(always)]
    fn weight(from: f32, to: f32) -> f32 {
        let x = if from == f32::NEG_INFINITY {
            f32::NEG_INFINITY
        } else {
            from - to
        };
        device::exp(x)
    }

    /// Merges another running sum (`sum` and `acc` relative to `max`) into this one.
    #[inline(always)]
    fn merge(&mut self, max: f32, sum: f32, acc: &Slice) {
        let new_max = if max > self.max { max } else { self.max };
        let (a, b) = (Self::weight(self.max, new_max), Self::weight(max, new_max));
        self.sum = self.sum * a + sum * b;
        let mut i = 0;
        while i < DIMS_PER_LANE {
            self.acc[i] = self.acc[i] * a + acc[i] * b;
            i += 1;
        }
        self.max = new_max;
    }

    /// Merges the running sums of the other key groups (shuffles over the whole warp).
    #[inline(always)]
    fn merge_groups(&mut self, lanes: &Lanes) {
        let mut offset = lanes.per_key;
        while offset < device::WARP_SIZE {
            let max = device::shfl_xor_f32(self.max, offset);
            let sum = device::shfl_xor_f32(self.sum, offset);
            let mut acc = [0.0; DIMS_PER_LANE];
            let mut i = 0;
            while i < DIMS_PER_LANE {
                acc[i] = device::shfl_xor_f32(self.acc[i], offset);
                i += 1;
            }
            self.merge(max, sum, &acc);
            offset *= 2;
        }
    }

    /// The normalised output: one division and a product per value (within an ulp of
    /// dividing each: a correctly rounded division is a long sequence, and a head's 8 values
    /// on two heads were 16 of them back to back on the step's critical path).
    #[inline(always)]
    fn output(&self) -> Slice {
        let inv = 1.0 / self.sum;
        let mut out = [0.0; DIMS_PER_LANE];
        let mut i = 0;
        while i < DIMS_PER_LANE {
            out[i] = self.acc[i] * inv;
            i += 1;
        }
        out
    }
}

/// Dot products of `M` pairs of slices, fused, each summed in the order of its dimensions.
/// The pairs take turns at each dimension: `M` independent chains of multiply-adds, so that
/// none waits out the latency of the one before it (in-order issue; one pair after another
/// was a chain of 8 dependent instructions per product).
#[inline(always)]
fn dots<const M: usize>(pairs: [(&Slice, &Slice); M]) -> [f32; M] {
    let mut s = [0.0f32; M];
    let mut i = 0;
    while i < DIMS_PER_LANE {
        let mut j = 0;
        while j < M {
            s[j] = device::fma(pairs[j].0[i], pairs[j].1[i], s[j]);
            j += 1;
        }
        i += 1;
    }
    s
}

/// The word of `attn_partial` where partial (`head`, `split`) begins: `partial_stride(head_dim)`
/// published words (the buffer holds `q_heads · max_splits` of them).
#[inline(always)]
fn partial(p: &StepParams, head: u32, split: u32) -> usize {
    let stride = partial_stride(p.dims.head_dim) as usize;
    (head as usize * p.max_splits as usize + split as usize) * stride
}

/// The attention stage of `layer` at `pos`: this block's (KV head, head block, chunk) items,
/// spread over the grid's blocks, with a cache of `E` values. Each item waits for its heads'
/// QKV rows and publishes its output (or, split, its partial). `scratch` is the
/// block's shared work area ([`scratch_floats`] f32s).
///
/// # Safety
/// Every thread of every block calls it; the step's buffers as [`StepParams`] documents them,
/// the caches holding `E` values; `split` is this step's split.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub unsafe fn attention_stage<E: KvElem>(
    p: &StepParams,
    w: &LayerPointers,
    layer: u32,
    pos: u32,
    split: AttentionSplit,
    scratch: *mut f32,
    epochs: &Epochs,
    waiter: &mut Waiter,
) {
    let d = &p.dims;
    let blocks_of_heads = head_blocks(d.q_heads, d.kv_heads);
    let rows = item_rows(d.q_heads, d.kv_heads);
    let items = rows * split.splits;
    let mut item = device::block_idx();
    while item < items {
        // The divisors through `opaque_u32`: what the fast division derives from them (a
        // shift, a mask) would otherwise be hoisted out of the loop over layers and held in
        // registers through the step (ptxas spilled).
        let (split_of_item, row) = device::div_rem_u32(item, device::opaque_u32(rows));
        let (kv_head, head_block) = device::div_rem_u32(row, device::opaque_u32(blocks_of_heads));
        let work_item = AttentionItem {
            layer,
            pos,
            kv_head,
            head_block,
            split: split_of_item,
            shape: split,
            qkv_epoch: epochs.of(layer, Produced::Qkv),
            out_epoch: epochs.of(layer, Produced::Attention),
        };
        // SAFETY: every thread of the block runs the item.
        unsafe { attend::<E>(p, w, work_item, scratch, waiter) };
        item += device::grid_dim();
    }
}

/// Warps that share an item of a chunk of `chunk_len` positions, each its own run: one a
/// warp, each at least a batch of keys per key group (a shorter run costs the same round trip
/// for fewer keys), so a short chunk uses fewer warps. `key_groups` is `32 / (head_dim / 8)`.
/// Kernel and host reports call it alike.
#[inline(always)]
pub const fn attention_runs(chunk_len: u32, key_groups: u32, warps_per_block: u32) -> u32 {
    // `BATCH · key groups` is a power of two: a shift, not a division, at every item.
    let min_run_shift = (BATCH as u32 * key_groups).trailing_zeros();
    let runs = chunk_len.div_ceil(1 << min_run_shift);
    if runs < 1 {
        1
    } else if runs > warps_per_block {
        warps_per_block
    } else {
        runs
    }
}

/// f32s of shared memory an item's block merge needs: each warp's running sums of
/// [`HEADS_PER_ITEM`] heads, laid out as partials.
pub const fn scratch_floats(head_dim: u32, warps_per_block: u32) -> u32 {
    warps_per_block * HEADS_PER_ITEM as u32 * partial_stride(head_dim)
}

/// Runs one attention work item on the block: each warp takes its own run of the chunk's
/// positions; then the block's threads, one (head, dimension) each, merge the warps' results
/// and write the output (or, with several chunks, the block's partial; the last chunk's item
/// waits for the others' and merges them the same way). Every thread of the block calls it.
///
/// # Safety
/// The step's buffers as [`StepParams`] documents them, the caches holding `E` values; `item`
/// inside this step's split; `scratch` as in [`attention_stage`].
#[inline(always)]
pub unsafe fn attend<E: KvElem>(
    p: &StepParams,
    w: &LayerPointers,
    item: AttentionItem,
    scratch: *mut f32,
    waiter: &mut Waiter,
) {
    let AttentionItem {
        pos,
        kv_head,
        head_block,
        split,
        shape,
        ..
    } = item;
    let d = &p.dims;
    let hd = d.head_dim;
    let lanes = Lanes::here(hd);
    let group_size = d.q_heads / d.kv_heads;
    let first_head = kv_head * group_size + head_block * HEADS_PER_ITEM as u32;
    let heads = (group_size - head_block * HEADS_PER_ITEM as u32).min(HEADS_PER_ITEM as u32);
    // The chunk's cached positions, cut over the warps; the last warp of the last chunk also
    // takes the new position (its key and value are in registers: no load to balance).
    let chunk_start = split * shape.chunk;
    let chunk_end = (chunk_start + shape.chunk).min(pos);
    let chunk_len = chunk_end.saturating_sub(chunk_start);
    let runs = attention_runs(chunk_len, lanes.groups, device::warps_per_block());
    let per_run = device::div_ceil_u32(chunk_len, runs);
    let warp = device::warp_id();
    let start = (chunk_start + warp * per_run).min(chunk_end);
    let mut end = (start + per_run).min(chunk_end);
    if split + 1 == shape.splits && warp + 1 == runs {
        end = pos + 1;
    }
    let dim = (lanes.slice as usize) * DIMS_PER_LANE;
    if runs == 1 && shape.splits == 1 {
        // One warp, one chunk: its sums are the output, nothing to merge.
        if warp == 0 {
            // SAFETY: forwarded contract; `start..end` is the whole chunk.
            let run = unsafe {
                attend_run::<E>(p, w, item, &lanes, first_head, heads, start, end, waiter)
            };
            if lanes.group == 0 {
                crate::unroll!(2; h => {
                    if (h as u32) < heads {
                        let head = (first_head as usize) + h;
                        // SAFETY: the output holds every head's `head_dim` values.
                        unsafe {
                            publish8(p.attn_out, (head * hd as usize + dim) / DIMS_PER_LANE, run[h].output(), item.out_epoch)
                        };
                    }
                });
            }
        }
        return;
    }
    let mut run = [Running::EMPTY; HEADS_PER_ITEM];
    if start < end {
        // SAFETY: forwarded contract; `start..end` is inside the item's chunk.
        run = unsafe { attend_run::<E>(p, w, item, &lanes, first_head, heads, start, end, waiter) };
    }
    // The runs' results meet in shared memory, laid out as partials.
    let stride = partial_stride(hd) as usize;
    if warp < runs && lanes.group == 0 {
        crate::unroll!(2; h => {
            // SAFETY: `scratch` holds `scratch_floats` f32s, 16-byte aligned.
            unsafe {
                let at = scratch.add((warp as usize * HEADS_PER_ITEM + h) * stride);
                store_slice(at.add(dim), run[h].acc);
                if lanes.slice == 0 {
                    at.add(hd as usize).write(run[h].max);
                    at.add(hd as usize + 1).write(run[h].sum);
                }
            }
        });
    }
    device::sync_threads();
    // Every thread merges one value of one head over all the runs at once: a few shared
    // memory round trips, where warp 0 alone merged run after run. With several chunks, every
    // chunk but the last publishes that as its partial, and the last merges the others' into
    // its own as they arrive: it waits for the words it reads, like every consumer of the
    // step, so no fence, no ticket and no atomic stand between a chunk's end and the output.
    let values = heads * hd;
    let epoch = item.out_epoch;
    let combines = split + 1 == shape.splits;
    let mut u = device::thread_idx();
    while u < values {
        // `head_dim` is a power of two: a shift and a mask.
        let (h, dim) = device::div_rem_u32(u, hd);
        let dim = dim as usize;
        // SAFETY: slots `0..runs` of head `h` were written before the barrier above.
        let merged = unsafe {
            Merging::of(runs, dim, hd, |r| {
                scratch.add((r as usize * HEADS_PER_ITEM + h as usize) * stride)
            })
        };
        let head = first_head + h;
        if combines {
            // SAFETY: the other chunks' partials of this head, published for this layer.
            let all = unsafe {
                merged.with_published(
                    p.attn_partial,
                    split,
                    dim,
                    hd,
                    |s| partial(p, head, s),
                    epoch,
                    waiter,
                )
            };
            // SAFETY: the output holds every head's `head_dim` values.
            unsafe {
                publish(
                    p.attn_out,
                    head as usize * hd as usize + dim,
                    all.output(),
                    epoch,
                )
            };
        } else {
            let part = partial(p, head, split);
            // SAFETY: each partial has `partial_stride(head_dim)` words.
            unsafe {
                publish(p.attn_partial, part + dim, merged.acc, epoch);
                if dim == 0 {
                    publish(p.attn_partial, part + hd as usize, merged.max, epoch);
                    publish(p.attn_partial, part + hd as usize + 1, merged.sum, epoch);
                }
            }
        }
        u += device::block_dim();
    }
    // The next item of this block writes `scratch` again.
    device::sync_threads();
}

/// Partials whose loads are issued together when the block merges: the runs of a block's
/// warps (at most 8), or the chunks of a head (as many as 16 on an H100) in rounds.
const MERGE_BATCH: usize = 8;

/// One value of a head's running softmax sum: what a thread holds when the block merges one
/// (head, dimension) a thread.
#[derive(Clone, Copy)]
struct Merging {
    max: f32,
    sum: f32,
    acc: f32,
}

impl Merging {
    const EMPTY: Merging = Merging {
        max: f32::NEG_INFINITY,
        sum: 0.0,
        acc: 0.0,
    };

    /// Merges a round of partials (an empty one has max −∞, sum and value 0): one rescale for
    /// the round, then each partial weighted.
    #[inline(always)]
    fn merge_round(
        &mut self,
        maxes: &[f32; MERGE_BATCH],
        sums: &[f32; MERGE_BATCH],
        accs: &[f32; MERGE_BATCH],
    ) {
        let mut new_max = self.max;
        crate::unroll!(8; b => {
            if maxes[b] > new_max {
                new_max = maxes[b];
            }
        });
        let rescale = Running::weight(self.max, new_max);
        let mut e = [0.0f32; MERGE_BATCH];
        crate::unroll!(8; b => {
            e[b] = Running::weight(maxes[b], new_max);
        });
        self.sum *= rescale;
        self.acc *= rescale;
        crate::unroll!(8; b => {
            self.sum = device::fma(sums[b], e[b], self.sum);
            self.acc = device::fma(accs[b], e[b], self.acc);
        });
        self.max = new_max;
    }

    /// Merges `count` partials of shared memory (value `dim`, then max and sum at `head_dim`
    /// and `head_dim + 1`), the `i`-th at `at(i)`: [`MERGE_BATCH`] of them loaded before the
    /// first is used.
    ///
    /// # Safety
    /// `at(i)` for `i < count` points to a partial that this thread may read.
    #[inline(always)]
    unsafe fn of(count: u32, dim: usize, head_dim: u32, at: impl Fn(u32) -> *const f32) -> Merging {
        let hd = head_dim as usize;
        let mut m = Merging::EMPTY;
        let mut first = 0;
        while first < count {
            let mut maxes = [f32::NEG_INFINITY; MERGE_BATCH];
            let mut sums = [0.0f32; MERGE_BATCH];
            let mut accs = [0.0f32; MERGE_BATCH];
            crate::unroll!(8; b => {
                let i = first + b as u32;
                if i < count {
                    let part = at(i);
                    // SAFETY: forwarded contract.
                    unsafe {
                        maxes[b] = part.add(hd).read();
                        sums[b] = part.add(hd + 1).read();
                        accs[b] = part.add(dim).read();
                    }
                }
            });
            m.merge_round(&maxes, &sums, &accs);
            first += MERGE_BATCH as u32;
        }
        m
    }

    /// Merges into this one the partials `0..count` that other blocks publish in `buf` for
    /// `epoch` (laid out as in [`Merging::of`], the `i`-th from word `at(i)`), waiting for
    /// each round's [`MERGE_BATCH`] partials together.
    ///
    /// # Safety
    /// `buf` holds the words `at(i)` names for `i < count`, in global memory.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn with_published(
        mut self,
        buf: *const u64,
        count: u32,
        dim: usize,
        head_dim: u32,
        at: impl Fn(u32) -> usize,
        epoch: u32,
        waiter: &mut Waiter,
    ) -> Merging {
        let hd = head_dim as usize;
        let mut first = 0;
        while first < count {
            // A round's words, all loaded before any is looked at; polled again until every
            // one holds the epoch (a word can only hold its epoch's value: nothing else to
            // order).
            let mut words = [[0u64; 3]; MERGE_BATCH];
            loop {
                crate::unroll!(8; b => {
                    let i = first + b as u32;
                    if i < count {
                        let part = at(i);
                        // SAFETY: forwarded contract.
                        unsafe {
                            words[b] = [
                                device::load_relaxed_u64(buf.add(part + hd)),
                                device::load_relaxed_u64(buf.add(part + hd + 1)),
                                device::load_relaxed_u64(buf.add(part + dim)),
                            ];
                        }
                    }
                });
                let mut ready = true;
                crate::unroll!(8; b => {
                    if first + (b as u32) < count {
                        let [m, s, a] = words[b];
                        ready &= holds(m, epoch) && holds(s, epoch) && holds(a, epoch);
                    }
                });
                if ready || !waiter.again(epoch) {
                    waiter.done();
                    break;
                }
            }
            let mut maxes = [f32::NEG_INFINITY; MERGE_BATCH];
            let mut sums = [0.0f32; MERGE_BATCH];
            let mut accs = [0.0f32; MERGE_BATCH];
            crate::unroll!(8; b => {
                if first + (b as u32) < count {
                    maxes[b] = value_of(words[b][0]);
                    sums[b] = value_of(words[b][1]);
                    accs[b] = value_of(words[b][2]);
                }
            });
            self.merge_round(&maxes, &sums, &accs);
            first += MERGE_BATCH as u32;
        }
        self
    }

    /// The normalised value.
    #[inline(always)]
    fn output(self) -> f32 {
        self.acc / self.sum
    }
}

/// One warp's run `start..end` of an item's chunk: the queries normed and rotated, the new
/// position if the run ends there (its key and value appended to the cache by the first head
/// block), then the cached keys; the running sums of the item's heads, merged over the warp's
/// key groups.
///
/// # Safety
/// As [`attend`]; `start < end ≤ pos + 1`; every lane of the warp calls it.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn attend_run<E: KvElem>(
    p: &StepParams,
    w: &LayerPointers,
    item: AttentionItem,
    lanes: &Lanes,
    first_head: u32,
    heads: u32,
    start: u32,
    end: u32,
    waiter: &mut Waiter,
) -> [Running; HEADS_PER_ITEM] {
    let AttentionItem {
        layer,
        pos,
        kv_head,
        head_block,
        ..
    } = item;
    let lanes = *lanes;
    let d = &p.dims;
    let hd = d.head_dim;
    let len = pos + 1;
    let holds_new = end == len;
    // Cache rows this run reads; the new position comes from the projection.
    let cached_end = if holds_new { pos } else { end };
    let dim = (lanes.slice as usize) * DIMS_PER_LANE;
    let half = (hd / 2) as usize;
    let q_dim = (d.q_heads * hd) as usize;
    let kv_dim = (d.kv_heads * hd) as usize;

    // 1. Every load the prologue needs, issued together: the norm weights and RoPE pairs,
    //    then the QKV rows, waited for until the projection has published them.
    // SAFETY: q rows of this item's heads, the new key and value of this KV head, 8 norm
    // weights and the RoPE pairs of this lane's dimensions; all 16-byte aligned (head_dim is
    // a multiple of 8).
    let (mut q, q_weight, k_weight, cos_sin, k_raw, v_new) = unsafe {
        // `dim % half`: `head_dim` is a power of two.
        let rope_row = p
            .rope
            .add(pos as usize * hd as usize + 2 * (dim & (half - 1)));
        let (a, b) = (load_slice_nc(rope_row), load_slice_nc(rope_row.add(8)));
        let cos_sin = [
            a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], b[0], b[1], b[2], b[3], b[4], b[5],
            b[6], b[7],
        ];
        // Raw: widened only after the wait below, so that no instruction between these loads
        // and the wait needs their data (in-order issue would stop at the first one).
        let (q_weight, k_weight) = (
            Bf16::load_raw8(w.q_norm.add(dim)),
            Bf16::load_raw8(w.k_norm.add(dim)),
        );
        let new_row = kv_head as usize * hd as usize + dim;
        let octet = |word: usize| word / DIMS_PER_LANE;
        let [q0, q1, k_raw, v_new] = await_octets::<4>(
            p.qkv,
            [
                octet(first_head as usize * hd as usize + dim),
                octet((first_head as usize + 1) * hd as usize + dim),
                octet(q_dim + new_row),
                octet(q_dim + kv_dim + new_row),
            ],
            [true, heads > 1, holds_new, holds_new],
            item.qkv_epoch,
            waiter,
        );
        ([q0, q1], q_weight, k_weight, cos_sin, k_raw, v_new)
    };

    // 2. q_norm and RoPE of the queries, k_norm and RoPE of the new key (in registers), the
    //    three together. A run without the new position norms zeros (and keeps zeros).
    const _: () = assert!(HEADS_PER_ITEM == 2);
    let (q_weight, k_weight) = (Bf16::widen(q_weight), Bf16::widen(k_weight));
    let [q0, q1, k_normed] = norm_rope(
        [q[0], q[1], k_raw],
        [&q_weight, &q_weight, &k_weight],
        &cos_sin,
        &lanes,
        hd,
        d.rms_eps,
    );
    q = [q0, q1];
    // The new key and value as the cache holds them: this step attends to what later steps
    // will read back.
    let k_new = E::round(k_normed);
    let v_new = E::round(v_new);
    let kv_offset =
        ((layer * d.kv_heads + kv_head) as usize) * d.max_context as usize * hd as usize;
    // SAFETY: the caches hold `layers · kv_heads · max_context · head_dim` values of `E`.
    let (k_cache, v_cache) = unsafe {
        (
            p.k_cache.cast::<E::Stored>().add(kv_offset),
            p.v_cache.cast::<E::Stored>().add(kv_offset),
        )
    };
    // The first head block's item stores the new key and value for later steps.
    if holds_new && head_block == 0 && lanes.group == 0 {
        // SAFETY: row `pos < max_context`; this lane's slice.
        unsafe {
            E::store8(k_cache.add(pos as usize * hd as usize + dim), k_new);
            E::store8(v_cache.add(pos as usize * hd as usize + dim), v_new);
        }
    }

    // 3. The new position first, in key group 0 only (the others add nothing): its key and
    //    value are then dead before the cached keys' loop, which needs the registers.
    let mut run = [Running::EMPTY; HEADS_PER_ITEM];
    if holds_new {
        let mine = lanes.group == 0;
        let sums = lanes.sum_n(dots([(&q[0], &k_new), (&q[1], &k_new)]));
        crate::unroll!(2; h => {
            let s = sums[h] * d.attention_scale;
            if mine {
                run[h].merge(s, 1.0, &v_new);
            }
        });
    }

    // 4. The cached keys: each round gives every key group one key; BATCH rounds of keys and
    //    values are loaded before the first is used, and L2 is asked for the next batch's
    //    rows right behind them, so that a long run's loads find them there instead of
    //    queueing in HBM one batch after another (loads of the next batch held in registers
    //    made ptxas spill; a prefetch holds none). Keys past the chunk read a valid row and
    //    are masked.
    let per_round = lanes.groups;
    let batch_keys = BATCH as u32 * per_round;
    // This lane's key of round `b` of the batch from `round_start`.
    let key = |round_start: u32, b: usize| round_start + (b as u32) * per_round + lanes.group;
    let mut round_start = start;
    while round_start < cached_end {
        let next_start = round_start + batch_keys;
        let mut raw = [(E::RAW_ZERO, E::RAW_ZERO); BATCH];
        let mut valid = [false; BATCH];
        crate::unroll!(4; b => {
            let t = key(round_start, b);
            valid[b] = t < cached_end;
            let row = if valid[b] { t } else { start } as usize * hd as usize + dim;
            // SAFETY: row `< pos` (or `start < cached_end`): written by earlier steps.
            unsafe { raw[b] = (E::load_raw8(k_cache.add(row)), E::load_raw8(v_cache.add(row))) };
        });
        if next_start < cached_end {
            crate::unroll!(4; b => {
                let t = key(next_start, b);
                if t < cached_end {
                    let row = t as usize * hd as usize + dim;
                    // SAFETY: row `< pos` of this layer and head: inside the caches.
                    unsafe {
                        device::prefetch_l2(k_cache.add(row).cast());
                        device::prefetch_l2(v_cache.add(row).cast());
                    }
                }
            });
        }
        let mut keys = [[0.0f32; DIMS_PER_LANE]; BATCH];
        let mut values = [[0.0f32; DIMS_PER_LANE]; BATCH];
        crate::unroll!(4; b => {
            keys[b] = E::widen(raw[b].0);
            values[b] = E::widen(raw[b].1);
        });
        // The batch's dot products for both heads, reduced over the key group together.
        let dots = lanes.sum_n(dots([
            (&q[0], &keys[0]),
            (&q[0], &keys[1]),
            (&q[0], &keys[2]),
            (&q[0], &keys[3]),
            (&q[1], &keys[0]),
            (&q[1], &keys[1]),
            (&q[1], &keys[2]),
            (&q[1], &keys[3]),
        ]));
        crate::unroll!(2; h => {
            // Scores of the batch, then one rescale for all of them.
            let mut scores = [f32::NEG_INFINITY; BATCH];
            let mut batch_max = run[h].max;
            crate::unroll!(4; b => {
                let s = dots[h * BATCH + b] * d.attention_scale;
                if valid[b] {
                    scores[b] = s;
                    if s > batch_max {
                        batch_max = s;
                    }
                }
            });
            let rescale = Running::weight(run[h].max, batch_max);
            let r = &mut run[h];
            r.sum *= rescale;
            let mut i = 0;
            while i < DIMS_PER_LANE {
                r.acc[i] *= rescale;
                i += 1;
            }
            let mut e = [0.0f32; BATCH];
            crate::unroll!(4; b => {
                e[b] = Running::weight(scores[b], batch_max);
            });
            crate::unroll!(4; b => {
                r.sum += e[b];
                let mut i = 0;
                while i < DIMS_PER_LANE {
                    r.acc[i] = device::fma(e[b], values[b][i], r.acc[i]);
                    i += 1;
                }
            });
            r.max = batch_max;
        });
        round_start = next_start;
    }

    // 5. One result per head from the key groups'.
    crate::unroll!(2; h => {
        run[h].merge_groups(&lanes);
    });
    run
}

/// Asks L2 for the cached K and V rows that `layer`'s attention will read at `pos`: the first
/// rows of every chunk of every KV head, as many as `budget_bytes` allows (all of them at
/// short depths), spread over every thread of the grid. Issued at the start of the layer's
/// QKV stage, they reach L2 before the O and gate/up prefetches that the barriers ask for
/// next; read on demand, an item's first keys queued in HBM behind those megabytes.
///
/// # Safety
/// The step's buffers as [`StepParams`] documents them; `split` is this step's split.
#[inline(always)]
pub unsafe fn prefetch_kv(
    p: &StepParams,
    layer: u32,
    pos: u32,
    split: AttentionSplit,
    budget_bytes: usize,
) {
    const LINE_BYTES: usize = 128;
    if pos == 0 {
        // Nothing cached yet.
        return;
    }
    let d = &p.dims;
    let elem_bytes = if p.kv_dtype == KvDtype::Bf16.code() {
        2
    } else {
        4
    };
    let row_bytes = d.head_dim as usize * elem_bytes;
    let ranges = 2 * d.kv_heads as usize * split.splits as usize;
    // Rows of each chunk asked for: the chunk, or what the budget leaves each (at least one).
    let rows = (budget_bytes / (ranges * row_bytes).max(1)).clamp(1, split.chunk as usize);
    let lines_per_range = (rows * row_bytes).div_ceil(LINE_BYTES);
    let total = ranges * lines_per_range;
    let stride = (device::grid_dim() * device::block_dim()) as usize;
    let mut i = (device::block_idx() * device::block_dim() + device::thread_idx()) as usize;
    while i < total {
        let (range, line) = (i / lines_per_range, i % lines_per_range);
        let chunk = range % split.splits as usize;
        let head = (range / split.splits as usize) % d.kv_heads as usize;
        let cache = if range < ranges / 2 {
            p.k_cache
        } else {
            p.v_cache
        };
        let first_row = chunk * split.chunk as usize;
        let byte = line * LINE_BYTES;
        // Only rows before `pos` are in the cache (this step writes `pos`).
        if first_row * row_bytes + byte < pos as usize * row_bytes {
            let at = ((layer as usize * d.kv_heads as usize + head) * d.max_context as usize
                + first_row)
                * row_bytes
                + byte;
            // SAFETY: a row below `pos < max_context` of this layer and head: inside the cache.
            unsafe { device::prefetch_l2(cache.add(at)) };
        }
        i += stride;
    }
}
