//! The PTX entry points: thin `extern "ptx-kernel"` wrappers around [`crate::ops`]. Their names
//! are listed in [`crate::kernel_names`].

use crate::ops::argmax::{LmHeadArgmaxParams, lm_head_argmax};
use crate::probes::{self, ProbeParams};
use crate::step::{StepParams, decode_step};

/// Fused LM head and argmax; see [`lm_head_argmax`].
///
/// # Safety
/// As [`lm_head_argmax`].
#[unsafe(no_mangle)]
pub unsafe extern "ptx-kernel" fn qwenmk_lm_head_argmax(params: LmHeadArgmaxParams) {
    // SAFETY: forwarded contract.
    unsafe { lm_head_argmax(&params) }
}

/// The whole decode step; see [`decode_step`].
///
/// # Safety
/// As [`decode_step`].
#[unsafe(no_mangle)]
pub unsafe extern "ptx-kernel" fn qwenmk_decode_step(params: StepParams) {
    // SAFETY: forwarded contract.
    unsafe { decode_step(&params) }
}

/// The microbenchmarks of [`crate::probes`], one entry each.
macro_rules! probe_entries {
    ($($name:ident => $body:expr;)*) => {$(
        /// A microbenchmark; see [`crate::probes`].
        ///
        /// # Safety
        /// As the probe it runs.
        #[unsafe(no_mangle)]
        pub unsafe extern "ptx-kernel" fn $name(params: ProbeParams) {
            let run: unsafe fn(&ProbeParams) = $body;
            // SAFETY: forwarded contract.
            unsafe { run(&params) }
        }
    )*};
}

probe_entries! {
    qwenmk_probe_chase => probes::chase;
    qwenmk_probe_stream_1 => probes::stream::<1>;
    qwenmk_probe_stream_2 => probes::stream::<2>;
    qwenmk_probe_stream_4 => probes::stream::<4>;
    qwenmk_probe_stream_8 => probes::stream::<8>;
    qwenmk_probe_ping_pong => probes::ping_pong;
    qwenmk_probe_barriers => probes::barriers;
    qwenmk_probe_shared_read => probes::shared_read;
}
