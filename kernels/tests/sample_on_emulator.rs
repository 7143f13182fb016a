//! The fused LM-head sampler on the emulator equals a plain host implementation of the same
//! definition, draw for draw: greedy, temperature (Gumbel-max over the whole vocabulary) and
//! candidates (top-k, top-p, min-p), with and without the repeat penalty, under several launch
//! shapes. The logits are exact in f32 (small dyadic weights and inputs), so any difference is
//! the sampler's, not the summation order's.

use qwenmk_kernels::device::emu;
use qwenmk_kernels::ops::argmax::{argmax_key, key_row};
use qwenmk_kernels::ops::matvec::staged_index;
use qwenmk_kernels::ops::sample::candidates::CANDIDATES;
use qwenmk_kernels::ops::sample::{
    SampleParams, choose, list_words, lm_head_sample, mask_words, rng, shared_bytes,
};

struct Problem {
    /// Rows of 8-value chunks, 16-byte aligned for the kernel's 128-bit loads.
    weights: Vec<[u16; 8]>,
    x: Vec<f32>,
    rows: u32,
    cols: u32,
    logits: Vec<f32>,
}

/// `rows × cols` weights in {-1, -¾, …, 1} and inputs in {-1, -⅞, …, 1}: every product and sum
/// is exact, so every summation order gives the same logits (with many ties between rows).
fn problem(rows: u32, cols: u32, seed: u64) -> Problem {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n) as i32
    };
    let w: Vec<f32> = (0..rows * cols)
        .map(|_| (next(9) - 4) as f32 / 4.0)
        .collect();
    let x: Vec<f32> = (0..cols).map(|_| (next(17) - 8) as f32 / 8.0).collect();
    let logits = (0..rows as usize)
        .map(|r| {
            (0..cols as usize)
                .map(|c| w[r * cols as usize + c] * x[c])
                .sum()
        })
        .collect();
    let mut weights = vec![[0u16; 8]; (rows * cols / 8) as usize];
    for (dst, v) in weights.as_flattened_mut().iter_mut().zip(&w) {
        *dst = (v.to_bits() >> 16) as u16;
    }
    Problem {
        weights,
        x,
        rows,
        cols,
        logits,
    }
}

/// The host's definition of the draw (what the cpu engine does).
fn reference(p: &Problem, s: &SampleParams, mask: &[u32], position: u32) -> u32 {
    let value = |row: usize| {
        let l = p.logits[row];
        if s.penalises() && mask[row / 32] & (1 << (row % 32)) != 0 {
            s.penalise(l)
        } else {
            l
        }
    };
    let rows = 0..p.rows as usize;
    match s.mode {
        SampleParams::GREEDY => {
            key_row(rows.map(|r| argmax_key(value(r), r as u32)).max().unwrap())
        }
        SampleParams::TEMPERATURE => key_row(
            rows.map(|r| {
                let g = rng::gumbel(s.seed, position, r as u32);
                argmax_key(value(r) / s.temperature + g, r as u32)
            })
            .max()
            .unwrap(),
        ),
        _ => {
            let mut keys: Vec<u64> = rows.map(|r| argmax_key(value(r), r as u32)).collect();
            keys.sort_unstable_by(|a, b| b.cmp(a));
            keys.truncate(CANDIDATES);
            let n = s.top_k.min(keys.len() as u32);
            key_row(keys[choose(n, |i| keys[i as usize], s, position) as usize])
        }
    }
}

/// One launch of the sampler over `p` on a `grid × block` emulated grid.
fn draw(
    p: &Problem,
    s: &SampleParams,
    mask: &mut [u32],
    position: u32,
    shape: (u32, u32, u32),
) -> u32 {
    let (grid, block, lanes) = shape;
    let mut lists = vec![0u64; list_words(grid)];
    let mut done = 0u32;
    let mut result = 0u64;
    let mut params = *s;
    params.penalty_mask = mask.as_mut_ptr();
    params.lists = lists.as_mut_ptr();
    params.blocks_done = &mut done;
    let cols = p.cols as usize;
    let (weights, x, result_ptr) = (
        p.weights.as_ptr().cast::<u16>(),
        p.x.as_ptr(),
        &raw mut result,
    );
    struct Pointers(*const u16, *const f32, *mut u64);
    impl Pointers {
        fn get(&self) -> (*const u16, *const f32, *mut u64) {
            (self.0, self.1, self.2)
        }
    }
    // SAFETY: the pointers name buffers that outlive the launch; only the result is written,
    // atomically.
    unsafe impl Sync for Pointers {}
    let pointers = Pointers(weights, x, result_ptr);
    let shared = cols * 4 + shared_bytes(block / 32);
    emu::launch(grid, block, shared, || {
        let (weights, x, result) = pointers.get();
        let smem = qwenmk_kernels::device::shared_memory();
        // SAFETY: the launch gives `shared` bytes: x first, the sampler's warp lists after.
        unsafe {
            let staged = smem.cast::<f32>();
            let mut i = qwenmk_kernels::device::thread_idx() as usize;
            while i < cols {
                staged.add(staged_index(i, cols)).write(x.add(i).read());
                i += qwenmk_kernels::device::block_dim() as usize;
            }
            qwenmk_kernels::device::sync_threads();
            let xs = std::slice::from_raw_parts(staged, cols);
            lm_head_sample(
                weights,
                xs,
                p.rows,
                lanes,
                result,
                &params,
                position,
                smem.add(cols * 4).cast(),
            );
        }
    })
    .expect("launch");
    assert_eq!(done, 0, "the last block resets the count for the next step");
    key_row(result)
}

fn params(mode: u32) -> SampleParams {
    let mut s = SampleParams::greedy();
    s.mode = mode;
    s.seed = 0x5eed;
    s
}

const SHAPES: [(u32, u32, u32); 3] = [(2, 64, 1), (3, 96, 4), (1, 64, 32)];

fn check(p: &Problem, s: &SampleParams, mask: &mut [u32], positions: std::ops::Range<u32>) {
    for position in positions {
        let want = reference(p, s, mask, position);
        for shape in SHAPES {
            let got = draw(p, s, mask, position, shape);
            assert_eq!(
                got, want,
                "mode {} at position {position} on {shape:?}",
                s.mode
            );
        }
    }
}

#[test]
fn greedy_and_temperature_draws_equal_the_host() {
    let p = problem(700, 16, 1);
    let mut mask = vec![0u32; mask_words(p.rows)];
    check(&p, &params(SampleParams::GREEDY), &mut mask, 0..1);
    let mut s = params(SampleParams::TEMPERATURE);
    s.temperature = 0.8;
    check(&p, &s, &mut mask, 0..4);
}

#[test]
fn candidate_draws_equal_the_host() {
    let p = problem(900, 16, 2);
    let mut mask = vec![0u32; mask_words(p.rows)];
    let mut s = params(SampleParams::CANDIDATES);
    s.temperature = 1.5;
    for (top_k, top_p, min_p) in [
        (64, 1.0, 0.0),
        (20, 0.9, 0.0),
        (64, 0.95, 0.05),
        (1, 1.0, 0.0),
    ] {
        s.top_k = top_k;
        s.top_p = top_p;
        s.min_p = min_p;
        check(&p, &s, &mut mask, 0..3);
    }
}

#[test]
fn the_penalty_moves_draws_as_on_the_host() {
    let p = problem(500, 16, 3);
    let mut mask = vec![0u32; mask_words(p.rows)];
    // Penalise the greedy winner and a few others: the draw must change accordingly.
    let greedy = reference(&p, &params(SampleParams::GREEDY), &mask, 0);
    for t in [greedy, 3, 77, 499] {
        mask[(t / 32) as usize] |= 1 << (t % 32);
    }
    for mode in [
        SampleParams::GREEDY,
        SampleParams::TEMPERATURE,
        SampleParams::CANDIDATES,
    ] {
        let mut s = params(mode);
        s.repeat_penalty = 1.7;
        s.penalty_window = 4;
        s.temperature = 0.7;
        s.top_k = 40;
        s.top_p = 0.9;
        check(&p, &s, &mut mask, 0..2);
    }
    let mut s = params(SampleParams::GREEDY);
    s.repeat_penalty = 100.0;
    s.penalty_window = 4;
    assert_ne!(draw(&p, &s, &mut mask, 0, SHAPES[0]), greedy);
}
