//! safetensors → packed → loaded: every tensor must come back equal to its source, combined as
//! the layout says (q/k/v stacked, gate/up interleaved by row, tied LM head = embedding).

use std::path::Path;

use half::bf16;
use qwenmk_weights::layout::{PAYLOAD_ALIGN, TENSOR_ALIGN};
use qwenmk_weights::synthetic::{SyntheticCheckpoint, tiny_config};
use qwenmk_weights::{LayerPart, PackedModel, TensorId, pack_safetensors};

fn pack(source: &Path, out: &Path) -> (qwenmk_weights::PackSummary, PackedModel, usize) {
    let mut calls = 0;
    let summary = pack_safetensors(source, out, |_| calls += 1).expect("pack succeeds");
    let model = PackedModel::open(out).expect("packed file opens");
    (summary, model, calls)
}

fn concat(parts: &[&[bf16]]) -> Vec<bf16> {
    parts.concat()
}

/// Checks every packed tensor against the synthetic source.
fn assert_matches_source(model: &PackedModel, src: &SyntheticCheckpoint) {
    let c = model.config();
    assert_eq!(c, &src.config);
    assert_eq!(model.embedding(), src.get("model.embed_tokens.weight"));
    assert_eq!(model.final_norm(), src.get("model.norm.weight"));
    let expected_head = if c.tie_word_embeddings {
        "model.embed_tokens.weight"
    } else {
        "lm_head.weight"
    };
    assert_eq!(model.lm_head(), src.get(expected_head));
    for l in 0..c.num_hidden_layers {
        let p = format!("model.layers.{l}.");
        let get = |suffix: &str| src.get(&format!("{p}{suffix}.weight"));
        let layer = model.layer(l);
        assert_eq!(layer.input_norm, get("input_layernorm"));
        assert_eq!(
            layer.qkv,
            concat(&[
                get("self_attn.q_proj"),
                get("self_attn.k_proj"),
                get("self_attn.v_proj")
            ])
        );
        assert_eq!(layer.q_norm, get("self_attn.q_norm"));
        assert_eq!(layer.k_norm, get("self_attn.k_norm"));
        assert_eq!(layer.o, get("self_attn.o_proj"));
        assert_eq!(layer.post_norm, get("post_attention_layernorm"));
        assert_eq!(layer.down, get("mlp.down_proj"));
        let (gate, up) = (get("mlp.gate_proj"), get("mlp.up_proj"));
        let h = c.hidden_size;
        assert_eq!(layer.gate_up.len(), 2 * c.intermediate_size * h);
        for j in 0..c.intermediate_size {
            let row = |r: usize| &layer.gate_up[r * h..(r + 1) * h];
            assert_eq!(row(2 * j), &gate[j * h..(j + 1) * h], "gate row {j}");
            assert_eq!(row(2 * j + 1), &up[j * h..(j + 1) * h], "up row {j}");
        }
    }
}

fn assert_aligned(model: &PackedModel) {
    assert_eq!(model.payload_offset_in_file() % PAYLOAD_ALIGN, 0);
    for entry in model.tensors() {
        assert_eq!(entry.offset % TENSOR_ALIGN, 0, "{}", entry.id);
        assert_eq!(entry.len, entry.elements() * 2, "{}", entry.id);
        let data = model.tensor_data(entry.id).unwrap();
        let from_payload: &[bf16] = bytemuck::cast_slice(
            &model.payload()[entry.range().start as usize..][..entry.len as usize],
        );
        assert_eq!(data, from_payload);
    }
}

fn no_leftovers(dir: &Path, expected: &[&str]) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, expected, "only the packed file is left behind");
}

#[test]
fn tied_without_lm_head_round_trips() {
    let (src_dir, out_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let src = SyntheticCheckpoint::random(&tiny_config(true), 1, false);
    src.write(src_dir.path()).unwrap();
    let out = out_dir.path().join("tiny.qwenmk");
    let (summary, model, calls) = pack(src_dir.path(), &out);
    assert_matches_source(&model, &src);
    assert_aligned(&model);
    let layers = src.config.num_hidden_layers;
    assert_eq!(summary.tensors, 2 + 8 * layers);
    assert_eq!(calls, summary.tensors);
    assert!(!summary.ignored_lm_head);
    assert!(model.tensor(TensorId::LmHead).is_none());
    assert_eq!(model.lm_head_entry().id, TensorId::Embedding);
    assert_eq!(
        std::fs::metadata(&out).unwrap().len(),
        summary.file_bytes,
        "the file is exactly header + padding + payload"
    );
    no_leftovers(out_dir.path(), &["tiny.qwenmk"]);
}

#[test]
fn tied_with_lm_head_uses_the_embedding() {
    let (src_dir, out_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let src = SyntheticCheckpoint::random(&tiny_config(true), 2, true);
    assert_ne!(
        src.get("lm_head.weight"),
        src.get("model.embed_tokens.weight")
    );
    src.write(src_dir.path()).unwrap();
    let (summary, model, _) = pack(src_dir.path(), &out_dir.path().join("m"));
    assert!(summary.ignored_lm_head);
    assert_matches_source(&model, &src);
    assert_eq!(model.tensors().len(), 2 + 8 * src.config.num_hidden_layers);
}

#[test]
fn untied_stores_and_uses_lm_head() {
    let (src_dir, out_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let src = SyntheticCheckpoint::random(&tiny_config(false), 3, true);
    src.write(src_dir.path()).unwrap();
    let (summary, model, _) = pack(src_dir.path(), &out_dir.path().join("m"));
    assert_eq!(summary.tensors, 3 + 8 * src.config.num_hidden_layers);
    assert_matches_source(&model, &src);
    assert_aligned(&model);
    let head = model.tensor(TensorId::LmHead).unwrap();
    assert_eq!(model.tensors().last().unwrap().id, TensorId::LmHead);
    assert_eq!(model.lm_head_entry(), head);
}

#[test]
fn sharded_checkpoint_round_trips() {
    let (src_dir, out_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let src = SyntheticCheckpoint::random(&tiny_config(true), 4, false);
    src.write_sharded(src_dir.path(), 3).unwrap();
    let (summary, model, _) = pack(src_dir.path(), &out_dir.path().join("m"));
    assert_eq!(summary.sources.len(), 3);
    assert_matches_source(&model, &src);
}

#[test]
fn layout_is_ordered_and_offsets_match_the_slices() {
    let (src_dir, out_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let src = SyntheticCheckpoint::random(&tiny_config(false), 5, false);
    src.write(src_dir.path()).unwrap();
    let (_, model, _) = pack(src_dir.path(), &out_dir.path().join("m"));
    let ids: Vec<String> = model.tensors().iter().map(|t| t.id.to_string()).collect();
    assert_eq!(ids[0], "embedding");
    assert_eq!(
        &ids[1..9],
        [
            "layers.0.input_norm",
            "layers.0.qkv",
            "layers.0.q_norm",
            "layers.0.k_norm",
            "layers.0.o",
            "layers.0.post_norm",
            "layers.0.gate_up",
            "layers.0.down"
        ]
    );
    assert_eq!(ids[ids.len() - 2..], ["final_norm", "lm_head"]);
    let mut previous_end = 0;
    for entry in model.tensors() {
        assert!(entry.offset >= previous_end, "tensors do not overlap");
        assert!(
            entry.offset - previous_end < TENSOR_ALIGN,
            "padding is minimal"
        );
        previous_end = entry.offset + entry.len;
    }
    let offsets = model.layer_offsets(1);
    let qkv = model
        .tensor(TensorId::Layer {
            layer: 1,
            part: LayerPart::Qkv,
        })
        .unwrap();
    assert_eq!(offsets.qkv, qkv.offset);
    assert_eq!(
        model.tensor_offset(TensorId::Layer {
            layer: 1,
            part: LayerPart::Qkv
        }),
        Some(qkv.offset)
    );
    assert_eq!(model.tensor_offset(TensorId::Embedding), Some(0));
    assert_eq!(qkv.shape, vec![128 + 2 * 64, 64]);
}

#[test]
fn repacking_replaces_the_file_atomically() {
    let (src_dir, out_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let out = out_dir.path().join("m");
    SyntheticCheckpoint::random(&tiny_config(true), 6, false)
        .write(src_dir.path())
        .unwrap();
    pack(src_dir.path(), &out);
    let src = SyntheticCheckpoint::random(&tiny_config(true), 7, false);
    src.write(src_dir.path()).unwrap();
    let (_, model, _) = pack(src_dir.path(), &out);
    assert_matches_source(&model, &src);
    no_leftovers(out_dir.path(), &["m"]);
}

#[test]
fn random_weights_pack_straight_into_a_packed_file() {
    use qwenmk_weights::synthetic::pack_random;
    let dir = tempfile::tempdir().unwrap();
    for tied in [true, false] {
        let config = tiny_config(tied);
        let out = dir.path().join(format!("random-{tied}.qwenmk"));
        let mut calls = 0;
        let summary = pack_random(&config, 7, &out, |_| calls += 1).expect("pack succeeds");
        let model = PackedModel::open(&out).expect("the generated file opens and verifies");
        assert_eq!(model.config(), &config);
        assert_eq!(calls, summary.tensors);
        assert!(summary.sources.is_empty());
        // Matrices within ±1/√columns, norms within 1 ± 0.25, and not all equal.
        let h = config.hidden_size as f32;
        assert!(
            model
                .embedding()
                .iter()
                .all(|v| v.to_f32().abs() <= 1.0 / h.sqrt())
        );
        assert!(model.embedding().windows(2).any(|w| w[0] != w[1]));
        assert!(
            model
                .final_norm()
                .iter()
                .all(|v| (0.74..=1.26).contains(&v.to_f32()))
        );
        // Deterministic per seed.
        let again = dir.path().join(format!("again-{tied}.qwenmk"));
        let summary2 = pack_random(&config, 7, &again, |_| {}).unwrap();
        assert_eq!(summary.payload_checksum, summary2.payload_checksum);
    }
}

/// Reads a packed file the way docs/FORMAT.md describes it, field by field at the documented
/// offsets, with no code from the crate's reader: the document and the writer must agree byte for
/// byte.
#[test]
fn the_file_is_exactly_what_format_md_documents() {
    let src = tempfile::tempdir().unwrap();
    let config = tiny_config(false);
    SyntheticCheckpoint::random(&config, 5, false)
        .write(src.path())
        .unwrap();
    std::fs::write(src.path().join("tokenizer.json"), b"{\"t\": 1}").unwrap();
    std::fs::write(
        src.path().join("generation_config.json"),
        b"{\"eos_token_id\": 2}",
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("m.qwenmk");
    let extra = qwenmk_weights::Attachment {
        name: "qwenmk-source.json".into(),
        bytes: b"{\"kind\": \"synthetic\", \"label\": \"t\", \"seed\": 5}".to_vec(),
    };
    qwenmk_weights::pack_safetensors_with(src.path(), &path, vec![extra], |_| {}).unwrap();
    let b = std::fs::read(&path).unwrap();
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap()) as usize;

    assert_eq!(&b[0..8], b"QWENMKPK");
    assert_eq!(u32_at(8), 2, "format version");
    let (h, p, l) = (u32_at(12), u64_at(24), u64_at(32));
    let (n, j, f) = (u32_at(100), u32_at(104), u32_at(108));
    assert_eq!((n, f), (2 + 8 * config.num_hidden_layers + 1, 3));
    assert_eq!(u32_at(48), config.vocab_size);
    assert_eq!(u32_at(96), 0, "untied");

    // Header checksum: bytes 0..H with the field at 16 read as zero.
    let mut zeroed = b[..h].to_vec();
    zeroed[16..24].fill(0);
    assert_eq!(xxhash_rust::xxh3::xxh3_64(&zeroed) as usize, u64_at(16));
    // Payload: page-aligned after the header, the file ends with it, checksum over it.
    assert!(p % 4096 == 0 && p >= h && b.len() == p + l);
    assert_eq!(
        xxhash_rust::xxh3::xxh3_64(&b[p..p + l]) as usize,
        u64_at(40)
    );
    assert!(b[h..p].iter().all(|&z| z == 0), "zero padding up to P");

    // The config text, then the attached file table, then the files back to back up to H.
    let config_at = 112 + 96 * n;
    let json = std::str::from_utf8(&b[config_at..config_at + j]).unwrap();
    assert!(json.contains("\"num_hidden_layers\""));
    let table = config_at + j;
    let mut expected_offset = table + 64 * f;
    let mut names = Vec::new();
    for i in 0..f {
        let e = table + 64 * i;
        let name_bytes = &b[e..e + 48];
        let end = name_bytes.iter().position(|&c| c == 0).unwrap_or(48);
        names.push(std::str::from_utf8(&name_bytes[..end]).unwrap().to_owned());
        let (offset, len) = (u64_at(e + 48), u64_at(e + 56));
        assert_eq!(offset, expected_offset, "{}", names[i]);
        expected_offset += len;
    }
    assert_eq!(expected_offset, h, "the attached files end the header");
    assert_eq!(
        names,
        [
            "tokenizer.json",
            "generation_config.json",
            "qwenmk-source.json"
        ]
    );
    let tokenizer = u64_at(table + 48);
    assert_eq!(&b[tokenizer..tokenizer + 8], b"{\"t\": 1}");

    // The first tensor table entry: the embedding at payload offset 0.
    let t = 112;
    assert_eq!(&b[t..t + 9], b"embedding");
    assert_eq!(u32_at(t + 56) & 0xffff, 1, "BF16");
    assert_eq!(
        (u64_at(t + 64), u64_at(t + 72), u64_at(t + 80)),
        (config.vocab_size, config.hidden_size, 0)
    );
}
