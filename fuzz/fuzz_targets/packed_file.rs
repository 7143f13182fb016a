//! A whole packed file: header, attached files, tensor table, config, checksums.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    qwenmk_weights::fuzzing::packed_file(data);
});
