//! Split-K attention for one decode position, GQA, with Qwen3's per-head q/k RMSNorm and RoPE.
//!
//! The positions `0..=pos` are cut into `splits` chunks. A work item is one (query head,
//! chunk) pair and runs on one warp: it scores its chunk (one lane per key), takes the chunk's
//! softmax and weighted values, and leaves `(acc, max, sum)`; a combine pass merges the chunks.
//! Long contexts thus spread over every warp of the GPU instead of 16 heads' worth.
//! With a single chunk the item writes the normalised output directly and no combine runs.

use super::{LayerPointers, StepParams};
use crate::device;
use crate::ops::norm::rmsnorm_warp;

/// How a step cuts its attention: chunk length and number of chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionSplit {
    pub chunk: u32,
    pub splits: u32,
}

/// The split for `len` positions: enough chunks to give every warp of the grid an item, each
/// chunk between `min_chunk` and `max_chunk` positions. Host and kernel call the same function.
pub const fn attention_split(
    len: u32,
    warps_in_grid: u32,
    q_heads: u32,
    min_chunk: u32,
    max_chunk: u32,
) -> AttentionSplit {
    let target = if warps_in_grid / q_heads > 1 {
        warps_in_grid / q_heads
    } else {
        1
    };
    let mut chunk = len.div_ceil(target);
    if chunk < min_chunk {
        chunk = min_chunk;
    }
    if chunk > max_chunk {
        chunk = max_chunk;
    }
    AttentionSplit {
        chunk,
        splits: len.div_ceil(chunk),
    }
}

/// f32 values of per-warp shared scratch an item needs: q, new k, new v, and the chunk's scores.
pub const fn warp_scratch_floats(head_dim: u32, max_chunk: u32) -> u32 {
    3 * head_dim + max_chunk
}

/// Rotates one head's values in place (rotate-half RoPE): `cos_sin` holds `head_dim / 2`
/// (cos, sin) pairs for this position. Ends with the warp synchronised.
///
/// # Safety
/// `v` must hold `head_dim` f32s in shared memory, `cos_sin` `head_dim` f32s.
#[inline(always)]
unsafe fn rope_warp(v: *mut f32, head_dim: usize, cos_sin: *const f32) {
    let half = head_dim / 2;
    let mut i = device::lane_id() as usize;
    while i < half {
        // SAFETY: `i < half`, so `i` and `i + half` are inside the head; the table row has
        // `half` pairs.
        unsafe {
            let (a, b) = (v.add(i).read(), v.add(i + half).read());
            let (c, s) = (cos_sin.add(2 * i).read(), cos_sin.add(2 * i + 1).read());
            v.add(i).write(a * c - b * s);
            v.add(i + half).write(b * c + a * s);
        }
        i += device::WARP_SIZE as usize;
    }
    device::sync_warp();
}

/// Copies `n` f32s from global `src` to the warp's shared `dst`.
#[inline(always)]
unsafe fn load_warp(dst: *mut f32, src: *const f32, n: usize) {
    let mut i = device::lane_id() as usize;
    while i < n {
        // SAFETY: the caller's buffers hold `n` values.
        unsafe { dst.add(i).write(src.add(i).read()) };
        i += device::WARP_SIZE as usize;
    }
    device::sync_warp();
}

/// One attention work item: query head `head`, chunk `split` of `shape`, at position `pos`
/// of `layer`.
#[derive(Clone, Copy)]
pub struct AttentionItem {
    pub layer: u32,
    pub pos: u32,
    pub head: u32,
    pub split: u32,
    pub shape: AttentionSplit,
}

/// Runs one attention work item.
///
/// # Safety
/// Called by every lane of a warp, with `scratch` the warp's [`warp_scratch_floats`] floats.
#[inline(always)]
pub unsafe fn attend(p: &StepParams, w: &LayerPointers, item: AttentionItem, scratch: *mut f32) {
    let AttentionItem {
        layer,
        pos,
        head,
        split,
        shape,
    } = item;
    let d = &p.dims;
    let hd = d.head_dim as usize;
    let group = d.q_heads / d.kv_heads;
    let kv_head = head / group;
    let q_dim = (d.q_heads * d.head_dim) as usize;
    let kv_dim = (d.kv_heads * d.head_dim) as usize;
    let len = pos + 1;
    let start = split * shape.chunk;
    let end = if start + shape.chunk < len {
        start + shape.chunk
    } else {
        len
    };
    let (q, k_new, v_new) = (scratch, unsafe { scratch.add(hd) }, unsafe {
        scratch.add(2 * hd)
    });
    // SAFETY: the scratch layout of `warp_scratch_floats`.
    let scores = unsafe { scratch.add(3 * hd) };
    // SAFETY: the rope table has `max_context` rows of `head_dim` floats and `pos` is inside.
    let cos_sin = unsafe { p.rope.add(pos as usize * hd) };
    let lane = device::lane_id();

    // 1. This head's query: q_norm, then RoPE.
    // SAFETY: the qkv buffer holds q (q_dim), k (kv_dim), v (kv_dim) for this position.
    unsafe {
        load_warp(q, p.qkv.add(head as usize * hd), hd);
        rmsnorm_warp(q, hd, w.q_norm, d.rms_eps);
        rope_warp(q, hd, cos_sin);
    }

    // 2. The chunk that ends at `pos` takes this position's key and value straight from the
    //    projection (k_norm and RoPE applied); one query head per KV head stores them.
    let kv_offset = ((layer * d.kv_heads + kv_head) as usize) * d.max_context as usize * hd;
    // SAFETY: the caches hold `layers · kv_heads · max_context · head_dim` values.
    let (k_cache, v_cache) = unsafe { (p.k_cache.add(kv_offset), p.v_cache.add(kv_offset)) };
    let holds_new = end == len;
    if holds_new {
        // SAFETY: inside the qkv buffer and the caches (`pos < max_context`).
        unsafe {
            load_warp(k_new, p.qkv.add(q_dim + kv_head as usize * hd), hd);
            load_warp(v_new, p.qkv.add(q_dim + kv_dim + kv_head as usize * hd), hd);
            rmsnorm_warp(k_new, hd, w.k_norm, d.rms_eps);
            rope_warp(k_new, hd, cos_sin);
            if head % group == 0 {
                let mut i = lane as usize;
                while i < hd {
                    k_cache
                        .add(pos as usize * hd + i)
                        .write(k_new.add(i).read());
                    v_cache
                        .add(pos as usize * hd + i)
                        .write(v_new.add(i).read());
                    i += device::WARP_SIZE as usize;
                }
            }
        }
    }
    let key_row = |t: u32| -> *const f32 {
        // SAFETY: `t < len ≤ max_context`.
        if t == pos {
            k_new
        } else {
            unsafe { k_cache.add(t as usize * hd) }
        }
    };
    let value_row = |t: u32| -> *const f32 {
        // SAFETY: as above.
        if t == pos {
            v_new
        } else {
            unsafe { v_cache.add(t as usize * hd) }
        }
    };

    // 3. Scores, one lane per key; then the chunk's max and the exponentials' sum.
    let mut local_max = f32::NEG_INFINITY;
    let mut t = start + lane;
    while t < end {
        let key = key_row(t);
        let mut s = 0.0f32;
        let mut i = 0;
        while i < hd {
            // SAFETY: both rows hold `head_dim` values.
            s += unsafe { q.add(i).read() * key.add(i).read() };
            i += 1;
        }
        s *= d.attention_scale;
        // SAFETY: `t - start < chunk ≤ max_chunk`.
        unsafe { scores.add((t - start) as usize).write(s) };
        if s > local_max {
            local_max = s;
        }
        t += device::WARP_SIZE;
    }
    let max = device::warp_max_f32(local_max);
    let mut local_sum = 0.0f32;
    let mut t = start + lane;
    while t < end {
        // SAFETY: this lane wrote this score above.
        unsafe {
            let e = device::exp(scores.add((t - start) as usize).read() - max);
            scores.add((t - start) as usize).write(e);
            local_sum += e;
        }
        t += device::WARP_SIZE;
    }
    let sum = device::warp_sum(local_sum);
    device::sync_warp();

    // 4. Weighted values, one lane per dimension.
    let mut i = lane as usize;
    while i < hd {
        let mut acc = 0.0f32;
        let mut t = start;
        while t < end {
            // SAFETY: scores of the chunk and value rows of `head_dim` values.
            acc += unsafe { scores.add((t - start) as usize).read() * value_row(t).add(i).read() };
            t += 1;
        }
        // SAFETY: the output buffers are sized for every head and split.
        unsafe {
            if shape.splits == 1 {
                p.attn_out.add(head as usize * hd + i).write(acc / sum);
            } else {
                partial(p, head, split).add(i).write(acc);
            }
        }
        i += device::WARP_SIZE as usize;
    }
    if shape.splits > 1 && lane == 0 {
        // SAFETY: each partial has `head_dim + 2` floats.
        unsafe {
            partial(p, head, split).add(hd).write(max);
            partial(p, head, split).add(hd + 1).write(sum);
        }
    }
    // The next item on this warp reuses the scratch.
    device::sync_warp();
}

/// Where item (`head`, `split`) leaves `(acc[head_dim], max, sum)`.
#[inline(always)]
fn partial(p: &StepParams, head: u32, split: u32) -> *mut f32 {
    let stride = p.dims.head_dim as usize + 2;
    // SAFETY: the buffer holds `q_heads · max_splits` partials.
    unsafe {
        p.attn_partial
            .add((head as usize * p.max_splits as usize + split as usize) * stride)
    }
}

/// Merges a head's chunks into its attention output (one warp per head).
///
/// # Safety
/// Every lane of the warp calls it after all items of the step are done.
#[inline(always)]
pub unsafe fn combine(p: &StepParams, head: u32, splits: u32) {
    let hd = p.dims.head_dim as usize;
    let mut max = f32::NEG_INFINITY;
    let mut s = 0;
    while s < splits {
        // SAFETY: every split of this head wrote its partial.
        let m = unsafe { partial(p, head, s).add(hd).read() };
        if m > max {
            max = m;
        }
        s += 1;
    }
    let mut i = device::lane_id() as usize;
    while i < hd {
        let (mut acc, mut sum) = (0.0f32, 0.0f32);
        let mut s = 0;
        while s < splits {
            // SAFETY: as above.
            unsafe {
                let part = partial(p, head, s);
                let weight = device::exp(part.add(hd).read() - max);
                acc += part.add(i).read() * weight;
                sum += part.add(hd + 1).read() * weight;
            }
            s += 1;
        }
        // SAFETY: the output holds every head's `head_dim` values.
        unsafe { p.attn_out.add(head as usize * hd + i).write(acc / sum) };
        i += device::WARP_SIZE as usize;
    }
}
