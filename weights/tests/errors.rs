//! Every way a checkpoint or a packed file can be wrong ends in a sentence that says what and
//! where, never a panic; and a failed pack leaves nothing behind.

use std::path::{Path, PathBuf};

use half::bf16;
use qwenmk_weights::synthetic::{SyntheticCheckpoint, tiny_config};
use qwenmk_weights::{PackedError, PackedModel, pack_safetensors};
use safetensors::{Dtype, tensor::TensorView};

fn pack_err(dir: &Path) -> String {
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("m.qwenmk");
    let err = pack_safetensors(dir, &target, |_| {}).expect_err("packing must fail");
    let leftovers = std::fs::read_dir(out.path()).unwrap().count();
    assert_eq!(leftovers, 0, "a failed pack leaves no file behind");
    err.to_string()
}

fn assert_has(msg: &str, parts: &[&str]) {
    for part in parts {
        assert!(
            msg.contains(part),
            "message {msg:?} should contain {part:?}"
        );
    }
}

fn tiny(tied: bool) -> SyntheticCheckpoint {
    SyntheticCheckpoint::random(&tiny_config(tied), 11, false)
}

#[test]
fn missing_config_or_weights() {
    let dir = tempfile::tempdir().unwrap();
    let msg = pack_err(dir.path());
    assert_has(&msg, &["cannot read the model config", "config.json"]);

    std::fs::write(
        dir.path().join("config.json"),
        tiny(true).config.to_json_string(),
    )
    .unwrap();
    let msg = pack_err(dir.path());
    assert_has(&msg, &["holds no weights", "model.safetensors"]);

    let msg = PackedModel::open(&dir.path().join("absent.qwenmk"))
        .unwrap_err()
        .to_string();
    assert_has(&msg, &["cannot read the packed weights", "absent.qwenmk"]);

    let msg = PackedModel::open(dir.path()).unwrap_err().to_string();
    assert_has(&msg, &["is a directory"]);
}

#[test]
fn truncated_safetensors_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    tiny(true).write(dir.path()).unwrap();
    let file = dir.path().join("model.safetensors");
    let len = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len - 100)
        .unwrap();
    let msg = pack_err(dir.path());
    assert_has(
        &msg,
        &[
            &file.display().to_string(),
            "not a valid safetensors file",
            "truncated",
        ],
    );
    // Cut inside the header too.
    std::fs::write(&file, b"\x40\x00\x00\x00\x00\x00\x00\x00{\"a\"").unwrap();
    assert_has(&pack_err(dir.path()), &["not a valid safetensors file"]);
}

#[test]
fn wrong_architecture() {
    let dir = tempfile::tempdir().unwrap();
    tiny(true).write(dir.path()).unwrap();
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
            .unwrap();
    json["model_type"] = "qwen2".into();
    json["architectures"] = serde_json::json!(["Qwen2ForCausalLM"]);
    std::fs::write(dir.path().join("config.json"), json.to_string()).unwrap();
    let msg = pack_err(dir.path());
    assert_has(&msg, &["config.json", "type \"qwen2\"", "only Qwen3"]);
}

/// Writes `src` with one tensor replaced by raw data of another dtype/shape.
fn write_with_replacement(
    src: &SyntheticCheckpoint,
    dir: &Path,
    name: &str,
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
) {
    std::fs::write(dir.join("config.json"), src.config.to_json_string()).unwrap();
    let mut views = Vec::new();
    for (tensor, (tshape, values)) in &src.tensors {
        let view = if tensor == name {
            TensorView::new(dtype, shape.clone(), &data).unwrap()
        } else {
            TensorView::new(Dtype::BF16, tshape.clone(), bytemuck::cast_slice(values)).unwrap()
        };
        views.push((tensor.clone(), view));
    }
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
}

#[test]
fn wrong_dtype_names_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let src = tiny(true);
    let norm = "model.layers.1.self_attn.k_norm.weight";
    let values: Vec<f32> = src.get(norm).iter().map(|v| v.to_f32()).collect();
    write_with_replacement(
        &src,
        dir.path(),
        norm,
        Dtype::F32,
        vec![values.len()],
        bytemuck::cast_slice(&values).to_vec(),
    );
    let msg = pack_err(dir.path());
    assert_has(&msg, &[norm, "is F32", "needs BF16"]);
}

#[test]
fn wrong_shape_names_tensor_expected_and_found() {
    let dir = tempfile::tempdir().unwrap();
    let src = tiny(true);
    let name = "model.layers.0.mlp.up_proj.weight";
    // Transposed: [hidden, intermediate] instead of [intermediate, hidden].
    let data = bytemuck::cast_slice::<bf16, u8>(src.get(name)).to_vec();
    write_with_replacement(&src, dir.path(), name, Dtype::BF16, vec![64, 96], data);
    let msg = pack_err(dir.path());
    assert_has(&msg, &[name, "has shape [64, 96]", "implies [96, 64]"]);
}

#[test]
fn config_and_weights_that_disagree() {
    // The config claims a third layer the file lacks.
    let dir = tempfile::tempdir().unwrap();
    let src = tiny(true);
    src.write(dir.path()).unwrap();
    let mut config = src.config.clone();
    config.num_hidden_layers = 3;
    std::fs::write(dir.path().join("config.json"), config.to_json_string()).unwrap();
    let msg = pack_err(dir.path());
    assert_has(
        &msg,
        &[
            "model.layers.2.input_layernorm.weight",
            "is missing",
            "does not match its config.json",
        ],
    );

    // The config claims one layer fewer than the file has.
    config.num_hidden_layers = 1;
    std::fs::write(dir.path().join("config.json"), config.to_json_string()).unwrap();
    let msg = pack_err(dir.path());
    assert_has(&msg, &["belongs to layer 1", "num_hidden_layers = 1"]);

    // Dimensions that contradict each other inside config.json.
    config.num_hidden_layers = 2;
    config.num_key_value_heads = 3;
    std::fs::write(dir.path().join("config.json"), config.to_json_string()).unwrap();
    let msg = pack_err(dir.path());
    assert_has(
        &msg,
        &["(4) is not a multiple of `num_key_value_heads` (3)"],
    );
}

#[test]
fn untied_checkpoint_without_lm_head() {
    let dir = tempfile::tempdir().unwrap();
    let mut src = SyntheticCheckpoint::random(&tiny_config(false), 12, false);
    src.tensors.remove("lm_head.weight");
    src.write(dir.path()).unwrap();
    let msg = pack_err(dir.path());
    assert_has(&msg, &["`lm_head.weight` is missing"]);
}

#[test]
fn shard_index_pointing_at_the_wrong_shard() {
    let dir = tempfile::tempdir().unwrap();
    tiny(true).write_sharded(dir.path(), 2).unwrap();
    let index_path = dir.path().join("model.safetensors.index.json");
    let mut index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&index_path).unwrap()).unwrap();
    index["weight_map"]["model.norm.weight"] = "model-00001-of-00002.safetensors".into();
    index["weight_map"]["model.embed_tokens.weight"] = "model-00002-of-00002.safetensors".into();
    std::fs::write(&index_path, index.to_string()).unwrap();
    let msg = pack_err(dir.path());
    assert_has(
        &msg,
        &["is missing from", "where model.safetensors.index.json says"],
    );

    index["weight_map"]["model.norm.weight"] = "../elsewhere.safetensors".into();
    std::fs::write(&index_path, index.to_string()).unwrap();
    assert_has(&pack_err(dir.path()), &["not a plain file name"]);
}

/// A good packed file to damage, kept with its directory.
fn packed_file() -> (tempfile::TempDir, PathBuf, Vec<u8>) {
    let src_dir = tempfile::tempdir().unwrap();
    tiny(true).write(src_dir.path()).unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let path = out_dir.path().join("m.qwenmk");
    pack_safetensors(src_dir.path(), &path, |_| {}).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    (out_dir, path, bytes)
}

fn open_damaged(path: &Path, bytes: &[u8]) -> PackedError {
    std::fs::write(path, bytes).unwrap();
    PackedModel::open(path).expect_err("a damaged file must be rejected")
}

#[test]
fn flipped_payload_byte_fails_the_checksum() {
    let (_dir, path, mut bytes) = packed_file();
    let model = PackedModel::open(&path).unwrap();
    let at = model.payload_offset_in_file() as usize + 1000;
    drop(model);
    bytes[at] ^= 0x10;
    let err = open_damaged(&path, &bytes);
    assert!(matches!(err, PackedError::PayloadChecksum { .. }), "{err}");
    assert_has(
        &err.to_string(),
        &["are corrupt", "checksum", "re-run `qwenmk pack`"],
    );
}

#[test]
fn flipped_header_byte_fails_the_header_checksum() {
    let (_dir, path, mut bytes) = packed_file();
    bytes[50] ^= 0x01; // inside hidden_size
    let err = open_damaged(&path, &bytes);
    assert!(matches!(err, PackedError::HeaderChecksum { .. }), "{err}");
    assert_has(&err.to_string(), &["header", "is corrupt"]);
}

#[test]
fn truncated_packed_file() {
    let (_dir, path, bytes) = packed_file();
    let err = open_damaged(&path, &bytes[..bytes.len() - 1]);
    assert_has(
        &err.to_string(),
        &["is truncated", &format!("should be {} bytes", bytes.len())],
    );
    // Cut inside the header.
    let err = open_damaged(&path, &bytes[..200]);
    assert!(matches!(err, PackedError::Truncated { .. }), "{err}");
    let err = open_damaged(&path, &bytes[..4]);
    assert!(matches!(err, PackedError::Truncated { .. }), "{err}");
    // Longer than described.
    let mut longer = bytes.clone();
    longer.extend_from_slice(&[0; 10]);
    assert_has(
        &open_damaged(&path, &longer).to_string(),
        &["but its header describes"],
    );
}

#[test]
fn bad_magic() {
    let (_dir, path, mut bytes) = packed_file();
    bytes[..8].copy_from_slice(b"GGUF\0\0\0\0");
    let err = open_damaged(&path, &bytes);
    assert_has(
        &err.to_string(),
        &["is not a qwenmk packed weights file", "qwenmk pack"],
    );
    let err = open_damaged(&path, b"");
    assert!(matches!(err, PackedError::Truncated { .. }), "{err}");
}

#[test]
fn other_versions_say_which_way_to_go() {
    let (_dir, path, mut bytes) = packed_file();
    let current = qwenmk_weights::FORMAT_VERSION;
    bytes[8..12].copy_from_slice(&(current + 1).to_le_bytes());
    let err = open_damaged(&path, &bytes);
    assert_has(
        &err.to_string(),
        &[
            &format!("version {}", current + 1),
            &format!("reads version {current}"),
            "newer qwenmk",
            "re-run `qwenmk pack`",
        ],
    );
    // Version 1 files (before the tokenizer was carried inside).
    bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
    let err = open_damaged(&path, &bytes);
    assert!(
        matches!(err, PackedError::UnknownVersion { found: 1, .. }),
        "{err}"
    );
    assert_has(
        &err.to_string(),
        &[
            "older qwenmk",
            "tokenizer",
            "re-run `qwenmk pack`",
            "--stale",
        ],
    );
    let header_err = qwenmk_weights::read_header(&path).unwrap_err();
    assert_eq!(header_err.to_string(), err.to_string());
}

#[test]
fn damaged_attachment_table_is_malformed_not_a_panic() {
    let src_dir = tempfile::tempdir().unwrap();
    tiny(true).write(src_dir.path()).unwrap();
    std::fs::write(src_dir.path().join("tokenizer.json"), b"{\"tok\": 1}").unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let path = out_dir.path().join("m.qwenmk");
    pack_safetensors(src_dir.path(), &path, |_| {}).unwrap();
    let good = std::fs::read(&path).unwrap();
    let model = PackedModel::open(&path).unwrap();
    assert_eq!(
        model.attachment("tokenizer.json"),
        Some(&b"{\"tok\": 1}"[..])
    );
    drop(model);
    // Every single-byte change of the header is caught (by the checksum or a check after it),
    // and none panics.
    let header_len = u32::from_le_bytes(good[12..16].try_into().unwrap()) as usize;
    for at in (0..header_len).step_by(7) {
        let mut bytes = good.clone();
        bytes[at] ^= 0x5a;
        assert!(
            PackedModel::verify_bytes(&bytes, &path).is_err(),
            "a change at byte {at} went unnoticed"
        );
    }
}

/// A well-formed header whose config claims four billion layers over a two-entry table: the
/// counts disagree before any table of that size is planned (fuzz/regressions/packed_file).
#[test]
fn a_layer_count_the_file_cannot_hold_allocates_nothing() {
    let input = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/regressions/packed_file/four-billion-layers.bin"),
    )
    .unwrap();
    let fixed = qwenmk_weights::fuzzing::with_valid_checksums(&input).unwrap();
    let err = PackedModel::verify_bytes(&fixed, Path::new("x.qwenmk")).unwrap_err();
    assert_has(
        &err.to_string(),
        &["lists 2 tensors", "implies 32000000002"],
    );
}
