//! A checkpoint directory (`config.json` + `model.safetensors`, both from the input): the
//! safetensors header, the tensor checks against the config and, when it opens, packing.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

static SCRATCH: OnceLock<PathBuf> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let scratch = SCRATCH.get_or_init(qwenmk_weights::fuzzing::scratch_dir);
    qwenmk_weights::fuzzing::checkpoint(data, scratch);
});
