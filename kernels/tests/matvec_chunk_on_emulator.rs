//! The weight ring's matvec of one chunk (`matvec_chunk`) on the emulator, against an f64
//! reference, at the shapes Qwen3-0.6B's chunks take on an H100 (16 and 32 lanes per unit,
//! whose loops are compiled with the lane count known) and at others (the general loop).

use std::sync::atomic::{AtomicU32, Ordering};

use qwenmk_kernels::device::emu;
use qwenmk_kernels::ops::matvec::{matvec_chunk, staged_index};

mod common;

use common::{Rng, bf16, widen};

/// Runs `matvec_chunk::<R>` on one block of `warps` warps; returns each row's dot product and
/// how many times each unit was handed to the epilogue.
fn run<const R: usize>(
    weights: &[u16],
    x: &[f32],
    units: u32,
    lanes: u32,
    warps: u32,
) -> (Vec<f32>, Vec<u32>) {
    let cols = x.len();
    // 16-byte alignment for the 128-bit loads.
    let mut aligned = vec![[0u16; 8]; weights.len().div_ceil(8)];
    aligned.as_flattened_mut()[..weights.len()].copy_from_slice(weights);
    let mut staged = vec![[0f32; 4]; cols / 4];
    for (j, &v) in x.iter().enumerate() {
        staged.as_flattened_mut()[staged_index(j, cols)] = v;
    }
    let rows = units as usize * R;
    let out: Vec<AtomicU32> = (0..rows).map(|_| AtomicU32::new(0)).collect();
    let visits: Vec<AtomicU32> = (0..units).map(|_| AtomicU32::new(0)).collect();
    let (w, xs) = (aligned.as_ptr() as usize, staged.as_ptr() as usize);
    emu::launch(1, 32 * warps, 0, || {
        // SAFETY: the buffers outlive the launch and hold `units · R` rows of `cols` values and
        // the staged vector; the emulator reads "shared" weights as plain memory.
        let x = unsafe { std::slice::from_raw_parts(xs as *const f32, cols) };
        unsafe {
            matvec_chunk::<R>(w as *const u16, x, units, lanes, &mut |unit, values| {
                visits[unit as usize].fetch_add(1, Ordering::Relaxed);
                for (r, v) in values.iter().enumerate() {
                    out[unit as usize * R + r].store(v.to_bits(), Ordering::Relaxed);
                }
            })
        }
    })
    .expect("launch");
    (
        out.iter()
            .map(|v| f32::from_bits(v.load(Ordering::Relaxed)))
            .collect(),
        visits.iter().map(|v| v.load(Ordering::Relaxed)).collect(),
    )
}

fn check<const R: usize>(units: u32, cols: usize, lanes: u32, seed: u64) {
    let mut rng = Rng(seed);
    let rows = units as usize * R;
    let weights: Vec<u16> = (0..rows * cols).map(|_| bf16(rng.next_f32())).collect();
    let x: Vec<f32> = (0..cols).map(|_| rng.next_f32()).collect();
    let (got, visits) = run::<R>(&weights, &x, units, lanes, 8);
    let shape = format!("{units} units of {R} rows × {cols}, {lanes} lanes");
    assert!(visits.iter().all(|&v| v == 1), "{shape}: visits {visits:?}");
    for (row, &g) in got.iter().enumerate() {
        let terms = (0..cols).map(|c| f64::from(widen(weights[row * cols + c])) * f64::from(x[c]));
        let (want, scale) = terms.fold((0.0, 0.0), |(s, a), t| (s + t, a + t.abs()));
        assert!(
            (f64::from(g) - want).abs() <= 1e-6 * scale + 1e-6,
            "{shape}: row {row} got {g}, want {want}"
        );
    }
}

#[test]
fn chunks_of_qwen3_shapes_match_the_reference() {
    // QKV's and gate/up's chunks (16 lanes), O's and down's (32 lanes, down with a tail of
    // four loads per lane after its full group).
    check::<1>(16, 1024, 16, 1);
    check::<2>(12, 1024, 16, 2);
    check::<1>(8, 2048, 32, 3);
    check::<1>(8, 3072, 32, 4);
    // Several passes, a last pass that leaves warps without units, and a short last chunk.
    check::<1>(40, 1024, 16, 5);
    check::<2>(5, 3072, 32, 6);
}

#[test]
fn other_lane_counts_take_the_general_loop_and_match_too() {
    check::<1>(7, 64, 1, 7);
    check::<1>(9, 256, 4, 8);
    check::<2>(6, 128, 8, 9);
    // Rows shorter than the lanes: some lanes have no loads.
    check::<1>(3, 64, 32, 10);
}
