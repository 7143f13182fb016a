//! `config.json` parsing and validation: any bytes give a config or an error, and a valid config
//! reads back equal from its own serialisation.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    qwenmk_weights::fuzzing::config_json(data);
});
