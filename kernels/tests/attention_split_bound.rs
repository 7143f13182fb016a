//! `max_splits` bounds the split of every length the KV cache can hold, for any launch: the
//! split is not monotonic in the length, so the longest context's split is not the bound.

use qwenmk_kernels::step::attention::{attention_split, item_rows};
use qwenmk_kernels::step::{LaunchShape, ModelDims, max_splits};

fn dims(q_heads: u32, kv_heads: u32, max_context: u32) -> ModelDims {
    ModelDims {
        hidden: 1024,
        intermediate: 3072,
        layers: 28,
        q_heads,
        kv_heads,
        head_dim: 128,
        vocab: 151_936,
        max_context,
        rms_eps: 1e-6,
        attention_scale: 0.088,
    }
}

fn shape(min_chunk: u32, max_chunk: u32) -> LaunchShape {
    LaunchShape {
        lanes_per_row: 16,
        min_chunk,
        max_chunk,
        ring_slot_bytes: 0,
        spin_limit_ns: 1,
    }
}

/// The most splits any step gets: its cached positions are `0..dims.max_context`.
fn worst(d: &ModelDims, s: &LaunchShape, warps: u32) -> u32 {
    (0..d.max_context)
        .map(|len| {
            let rows = item_rows(d.q_heads, d.kv_heads);
            attention_split(len, warps, rows, s.min_chunk, s.max_chunk).splits
        })
        .max()
        .unwrap()
}

#[test]
fn the_case_found_on_a_132_sm_launch() {
    // 132 SMs × 8 warps, 16 item rows (32 query heads over 8 KV heads, two per item), chunks
    // 64..512: lengths 4,160–4,224 take 66 splits while the full 4,225 positions take 65.
    let d = dims(32, 8, 4225);
    assert_eq!(item_rows(32, 8), 16);
    let s = shape(64, 512);
    assert_eq!(attention_split(4225, 1056, 16, 64, 512).splits, 65);
    assert_eq!(attention_split(4200, 1056, 16, 64, 512).splits, 66);
    assert!(max_splits(&d, &s, 1056) >= 66);
}

#[test]
fn the_bound_holds_for_every_length_and_shape() {
    let mut checked = 0;
    for warps in [1u32, 8, 32, 64, 264, 1056, 2112] {
        for (q_heads, kv_heads) in [(1u32, 1u32), (4, 2), (8, 8), (16, 8), (32, 4)] {
            for (min_chunk, max_chunk) in [(1, 1), (8, 64), (32, 256), (64, 512), (100, 50)] {
                for max_context in [1u32, 63, 64, 65, 700, 4225, 9000] {
                    let d = dims(q_heads, kv_heads, max_context);
                    let s = shape(min_chunk, max_chunk);
                    let bound = max_splits(&d, &s, warps);
                    let worst = worst(&d, &s, warps);
                    assert!(
                        worst <= bound,
                        "{warps} warps, {q_heads} heads, chunks {min_chunk}..{max_chunk}, \
                         {max_context} positions: {worst} splits > bound {bound}"
                    );
                    // Not wastefully loose either: the buffer is sized by it.
                    assert!(bound <= worst.max(1) * 2 + 1, "{bound} vs {worst}");
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 7 * 5 * 5 * 7);
}
