//! The PTX entry points: thin `extern "ptx-kernel"` wrappers around [`crate::ops`]. Their names
//! are listed in [`crate::kernel_names`].

use crate::ops::argmax::{LmHeadArgmaxParams, lm_head_argmax};
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
