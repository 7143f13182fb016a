//! Entry points of the fuzz targets in `fuzz/` (cargo-fuzz), kept here so that the tests run the
//! same code over the regression inputs in `fuzz/regressions/` without cargo-fuzz.
//!
//! Each takes arbitrary bytes. Bad input must come back as an error: a panic, an abort or an
//! allocation of a size the input merely claims is a bug. Where the input is good, each also
//! checks a property (a config survives its own serialisation; a checkpoint that opens packs, and
//! the packed file opens with the same config), and panics when it does not hold.

use std::path::{Path, PathBuf};

use crate::checkpoint::{CONFIG_FILE, Checkpoint, SINGLE_FILE};
use crate::config::ModelConfig;
use crate::packed::PackedModel;

/// `config.json` text: parse and validate; a valid config must read back equal from
/// [`ModelConfig::to_json_string`].
pub fn config_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = ModelConfig::from_json_str(text) {
        let again = ModelConfig::from_json_str(&config.to_json_string());
        assert_eq!(
            again.as_ref().ok(),
            Some(&config),
            "a valid config does not survive to_json_string: {again:?}"
        );
    }
}

/// A checkpoint directory made of the input: 2 bytes little-endian `n`, then `n` bytes of
/// `config.json`, then the rest as `model.safetensors`. Written under `scratch` (one directory
/// per fuzzing process), opened with [`Checkpoint::open`]; when it opens, it must pack, and the
/// packed file must open with the same config.
pub fn checkpoint(data: &[u8], scratch: &Path) {
    let Some((config, weights)) = split_checkpoint(data) else {
        return;
    };
    let dir = scratch.join("checkpoint");
    if std::fs::create_dir_all(&dir).is_err()
        || std::fs::write(dir.join(CONFIG_FILE), config).is_err()
        || std::fs::write(dir.join(SINGLE_FILE), weights).is_err()
    {
        panic!("cannot write the fuzz input under {}", scratch.display());
    }
    let Ok(checkpoint) = Checkpoint::open(&dir) else {
        return;
    };
    let out = scratch.join("packed.qwenmk");
    let summary = crate::pack::pack_safetensors(&dir, &out, |_| {});
    let summary = summary.unwrap_or_else(|e| panic!("an opened checkpoint does not pack: {e}"));
    let model = PackedModel::open(&out)
        .unwrap_or_else(|e| panic!("a freshly packed checkpoint does not open: {e}"));
    assert_eq!(model.config(), checkpoint.config());
    assert_eq!(summary.payload_checksum, model.payload_checksum());
}

/// The `config.json` and `model.safetensors` parts of a [`checkpoint`] input.
pub fn split_checkpoint(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = data.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_le_bytes(*len));
    (len <= rest.len()).then(|| rest.split_at(len))
}

/// The inverse of [`split_checkpoint`], for seed inputs.
pub fn join_checkpoint(config: &[u8], weights: &[u8]) -> Vec<u8> {
    let len = u16::try_from(config.len()).unwrap_or(u16::MAX);
    let mut out = len.to_le_bytes().to_vec();
    out.extend_from_slice(&config[..usize::from(len)]);
    out.extend_from_slice(weights);
    out
}

/// A whole packed file's bytes, checked as [`PackedModel::open`] checks a file: once as given,
/// and once with both checksum fields recomputed, so that the fuzzer also reaches the checks
/// behind the checksums (a 64-bit hash is not something it can guess).
pub fn packed_file(data: &[u8]) {
    let path = Path::new("fuzz-input.qwenmk");
    let _ = PackedModel::verify_bytes(data, path);
    if let Some(fixed) = with_valid_checksums(data) {
        let _ = PackedModel::verify_bytes(&fixed, path);
    }
}

/// `data` with its header and payload checksum fields set to match, where its header length
/// and payload extent lie within it; `None` otherwise.
pub fn with_valid_checksums(data: &[u8]) -> Option<Vec<u8>> {
    let field = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(data.get(at..at + 8)?.try_into().ok()?))
    };
    let header_len = u32::from_le_bytes(data.get(12..16)?.try_into().ok()?) as usize;
    if header_len < 48 || header_len > data.len() {
        return None;
    }
    let mut fixed = data.to_vec();
    let (offset, len) = (field(24)?, field(32)?);
    if let Some(payload) = usize::try_from(offset)
        .ok()
        .zip(usize::try_from(len).ok())
        .and_then(|(o, l)| data.get(o..o.checked_add(l)?))
    {
        let checksum = xxhash_rust::xxh3::xxh3_64(payload);
        fixed[40..48].copy_from_slice(&checksum.to_le_bytes());
    }
    fixed[16..24].fill(0);
    let checksum = xxhash_rust::xxh3::xxh3_64(&fixed[..header_len]);
    fixed[16..24].copy_from_slice(&checksum.to_le_bytes());
    Some(fixed)
}

/// A scratch directory for [`checkpoint`], private to this process.
pub fn scratch_dir() -> PathBuf {
    // /dev/shm keeps the per-input file writes off the disk where it exists.
    let base = Path::new("/dev/shm");
    let base = if base.is_dir() {
        base.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    base.join(format!("qwenmk-fuzz-{}", std::process::id()))
}
