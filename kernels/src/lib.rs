//! The qwenmk kernels: one source, two builds.
//!
//! * For `nvptx64-nvidia-cuda` the crate is `no_std`; `cli/build.rs` compiles it to PTX, once
//!   for sm_90 (with `--cfg qwenmk_sm90`) and once for sm_80, and the `qwenmk` binary embeds
//!   both; the `gpu` engine loads the one that suits the GPU (`cli/src/ptx.rs`).
//! * For the host the same kernel code runs on the emulator in [`device`], where every CUDA
//!   thread is a CPU thread with real block barriers, warp shuffles and atomics.
//!
//! Only [`device`] knows the hardware. [`ops`] holds the kernels' building blocks written
//! against it, and `entry` the `extern "ptx-kernel"` entry points.
#![cfg_attr(target_arch = "nvptx64", no_std)]
#![cfg_attr(
    target_arch = "nvptx64",
    feature(
        abi_ptx,
        stdarch_nvptx,
        asm_experimental_arch,
        core_intrinsics,
        gpu_intrinsics,
        gpu_launch_sized_workgroup_mem
    )
)]
#![cfg_attr(target_arch = "nvptx64", allow(internal_features))]

/// Runs `$body` with `$i: usize` bound to 0, 1, …, N − 1 (N = 2, 4 or 8), as N copies. The
/// compiler does not always unroll a loop over a register array, and a loop it keeps puts the
/// array on the stack; kernels unroll such loops with this.
#[macro_export]
macro_rules! unroll {
    (2; $i:ident => $body:block) => {{
        {
            let $i: usize = 0;
            $body
        }
        {
            let $i: usize = 1;
            $body
        }
    }};
    (4; $i:ident => $body:block) => {{
        $crate::unroll!(2; j => {
            let $i: usize = j;
            $body
        });
        $crate::unroll!(2; j => {
            let $i: usize = j + 2;
            $body
        });
    }};
    (8; $i:ident => $body:block) => {{
        $crate::unroll!(4; j => {
            let $i: usize = j;
            $body
        });
        $crate::unroll!(4; j => {
            let $i: usize = j + 4;
            $body
        });
    }};
}

pub mod device;
pub mod ops;
pub mod probes;
pub mod step;

#[cfg(target_arch = "nvptx64")]
mod entry;

/// The names of the kernels in the PTX module, as the host looks them up.
pub mod kernel_names {
    /// [`crate::ops::argmax::lm_head_argmax`]: fused LM-head matvec and argmax.
    pub const LM_HEAD_ARGMAX: &str = "qwenmk_lm_head_argmax";
    /// [`crate::step::decode_step`]: the whole decode step, persistent.
    pub const DECODE_STEP: &str = "qwenmk_decode_step";
    /// The microbenchmarks of [`crate::probes`] (`STREAM[i]`: 1, 2, 4, 8 loads in flight).
    pub const PROBE_CHASE: &str = "qwenmk_probe_chase";
    pub const PROBE_STREAM: [&str; 4] = [
        "qwenmk_probe_stream_1",
        "qwenmk_probe_stream_2",
        "qwenmk_probe_stream_4",
        "qwenmk_probe_stream_8",
    ];
    pub const PROBE_PING_PONG: &str = "qwenmk_probe_ping_pong";
    pub const PROBE_BARRIERS: &str = "qwenmk_probe_barriers";
    pub const PROBE_SHARED_READ: &str = "qwenmk_probe_shared_read";
    /// The kernels qwenmk runs, for reports and load checks.
    pub const ALL: &[&str] = &[DECODE_STEP, LM_HEAD_ARGMAX];
}
