//! The LM-head argmax kernel on the emulator against a scalar reference.

use qwenmk_kernels::device::emu;
use qwenmk_kernels::ops::argmax::{
    LmHeadArgmaxParams, argmax_key, key_logit, key_row, lm_head_argmax, shared_bytes,
};

mod common;

use common::{Rng, bf16, widen};

/// Runs the kernel on the emulator and returns the argmax key.
fn run(weights: &[u16], x: &[f32], rows: u32, cols: u32, lanes: u32, grid: u32, block: u32) -> u64 {
    // 16-byte alignment for the 128-bit loads.
    let mut aligned = vec![[0u16; 8]; weights.len().div_ceil(8)];
    aligned.as_flattened_mut()[..weights.len()].copy_from_slice(weights);
    let mut result = 0u64;
    let params = LmHeadArgmaxParams {
        x: x.as_ptr(),
        weights: aligned.as_ptr().cast(),
        result: &mut result,
        rows,
        cols,
        lanes_per_row: lanes,
        reserved: 0,
    };
    // SAFETY: the buffers outlive the launch and match the sizes in `params`.
    emu::launch(grid, block, shared_bytes(cols), || unsafe {
        lm_head_argmax(&params)
    })
    .expect("launch");
    result
}

fn reference(weights: &[u16], x: &[f32], rows: usize, cols: usize) -> (u32, f32) {
    let mut best = (0u32, f32::NEG_INFINITY);
    for r in 0..rows {
        let dot: f32 = (0..cols).map(|c| widen(weights[r * cols + c]) * x[c]).sum();
        if dot > best.1 {
            best = (r as u32, dot);
        }
    }
    best
}

#[test]
fn finds_the_reference_argmax_for_every_lane_split() {
    let (rows, cols) = (1000u32, 64u32);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let weights: Vec<u16> = (0..rows * cols).map(|_| bf16(rng.next_f32())).collect();
    let x: Vec<f32> = (0..cols).map(|_| rng.next_f32()).collect();
    let (want_row, want_logit) = reference(&weights, &x, rows as usize, cols as usize);
    for lanes in [1, 2, 8, 32] {
        let key = run(&weights, &x, rows, cols, lanes, 3, 64);
        assert_eq!(key_row(key), want_row, "lanes_per_row {lanes}");
        assert!(
            (key_logit(key) - want_logit).abs() < 1e-4,
            "lanes_per_row {lanes}"
        );
    }
}

#[test]
fn a_tie_goes_to_the_lowest_row() {
    let (rows, cols) = (300u32, 32u32);
    let mut weights = vec![bf16(-0.5); (rows * cols) as usize];
    // Rows 7, 123 and 250 share the largest logit.
    for r in [250usize, 7, 123] {
        weights[r * cols as usize..(r + 1) * cols as usize].fill(bf16(0.75));
    }
    let x = vec![1.0f32; cols as usize];
    for lanes in [1, 4, 32] {
        let key = run(&weights, &x, rows, cols, lanes, 2, 32);
        assert_eq!(key_row(key), 7, "lanes_per_row {lanes}");
    }
}

#[test]
fn argmax_keys_order_by_logit_then_lowest_row() {
    let values = [-3.5f32, -0.0, 0.0, 1e-30, 2.0, 1e30];
    for pair in values.windows(2) {
        assert!(argmax_key(pair[0], 5) <= argmax_key(pair[1], 5), "{pair:?}");
    }
    assert!(argmax_key(1.0, 3) > argmax_key(1.0, 4));
    assert_eq!(key_row(argmax_key(-2.0, 151_935)), 151_935);
    assert_eq!(key_logit(argmax_key(-2.0, 9)), -2.0);
    assert_eq!(key_logit(argmax_key(3.25, 9)), 3.25);
}

#[test]
fn a_panicking_kernel_thread_ends_the_launch_with_an_error() {
    let error = emu::launch(2, 64, 0, || {
        qwenmk_kernels::device::sync_threads();
        if qwenmk_kernels::device::block_idx() == 1 && qwenmk_kernels::device::thread_idx() == 33 {
            panic!("deliberate failure");
        }
        // The other threads wait here: the launch must release them instead of hanging.
        qwenmk_kernels::device::sync_threads();
    })
    .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("block 1, thread 33") && text.contains("deliberate failure"),
        "{text}"
    );
}

/// A `sync_threads` that one thread of a block never reaches cannot complete: the launch
/// ends with a deadlock error naming a waiting thread, and returns instead of hanging.
#[test]
fn a_barrier_some_thread_never_reaches_is_a_deadlock_error() {
    let error = emu::launch(2, 64, 0, || {
        if qwenmk_kernels::device::block_idx() == 1 && qwenmk_kernels::device::thread_idx() == 5 {
            return;
        }
        qwenmk_kernels::device::sync_threads();
    })
    .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("deadlock") && text.contains("block 1"),
        "{text}"
    );
}

/// Threads of a launch run in a fixed order: the same kernel records the same interleaving
/// every time.
#[test]
fn a_launch_is_deterministic() {
    use std::sync::Mutex;
    let run = || {
        let order = Mutex::new(Vec::new());
        emu::launch(2, 64, 0, || {
            let me =
                qwenmk_kernels::device::block_idx() * 64 + qwenmk_kernels::device::thread_idx();
            order.lock().unwrap().push(me);
            qwenmk_kernels::device::sync_threads();
            order.lock().unwrap().push(1000 + me);
            let _ = qwenmk_kernels::device::shfl_xor_u32(me, 1);
            order.lock().unwrap().push(2000 + me);
        })
        .unwrap();
        order.into_inner().unwrap()
    };
    let first = run();
    assert_eq!(first.len(), 3 * 128);
    assert_eq!(run(), first);
}

#[test]
fn a_launch_shape_the_emulator_cannot_run_is_refused() {
    assert!(emu::launch(1, 48, 0, || {}).is_err());
    assert!(emu::launch(1000, 1024, 0, || {}).is_err());
}

#[test]
fn blocks_beyond_the_resident_ones_start_as_earlier_ones_finish() {
    use std::sync::Mutex;
    let order = Mutex::new(Vec::new());
    emu::launch_with_residency(5, 32, 0, 2, || {
        if qwenmk_kernels::device::thread_idx() == 0 {
            order
                .lock()
                .unwrap()
                .push(qwenmk_kernels::device::block_idx());
        }
        qwenmk_kernels::device::sync_threads();
    })
    .unwrap();
    let mut started = order.into_inner().unwrap();
    assert_eq!(started.len(), 5);
    // Block 4 can only start after some block finished; all five ran exactly once.
    started.sort_unstable();
    assert_eq!(started, vec![0, 1, 2, 3, 4]);
}
