//! Small random Qwen3 checkpoints written in the Hugging Face layout, for tests that cannot
//! download anything (the packer's, the engines', the emulator's). Deterministic per seed.

use std::collections::BTreeMap;
use std::path::Path;

use half::bf16;
use safetensors::{Dtype, tensor::TensorView};

use crate::checkpoint::{CONFIG_FILE, INDEX_FILE, SINGLE_FILE};
use crate::config::{ModelConfig, QWEN3_ARCHITECTURE, QWEN3_MODEL_TYPE};
use crate::format::Attachment;
use crate::layout::TensorEntry;
use crate::pack::{PackError, PackProgress, PackSummary, pack_generated};

/// A tiny Qwen3 config: vocab 300, hidden 64, 2 layers, 4 query heads over 2 KV heads of width
/// 32 (so `q_dim` 128 ≠ hidden, as in the real model), intermediate 96, θ = 1e6.
pub fn tiny_config(tied: bool) -> ModelConfig {
    ModelConfig {
        architectures: vec![QWEN3_ARCHITECTURE.to_owned()],
        model_type: QWEN3_MODEL_TYPE.to_owned(),
        vocab_size: 300,
        hidden_size: 64,
        intermediate_size: 96,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 32,
        max_position_embeddings: 256,
        rope_theta: 1e6,
        rms_norm_eps: 1e-6,
        tie_word_embeddings: tied,
        bos_token_id: None,
        eos_token_id: vec![299],
    }
}

/// A checkpoint held in memory: Hugging Face tensor names → (shape, values).
#[derive(Debug, Clone)]
pub struct SyntheticCheckpoint {
    pub config: ModelConfig,
    pub tensors: BTreeMap<String, (Vec<usize>, Vec<bf16>)>,
}

impl SyntheticCheckpoint {
    /// Random weights for `config`. Matrices are uniform in ±1/√fan_in (activations stay of
    /// order one through the layers), norm weights in 1 ± 0.25. `with_lm_head` adds
    /// `lm_head.weight` (random, distinct from the embedding) even to a tied model.
    pub fn random(config: &ModelConfig, seed: u64, with_lm_head: bool) -> Self {
        let c = config;
        let mut rng = SplitMix64(seed);
        let mut tensors = BTreeMap::new();
        let mut matrix = |name: String, rows: usize, cols: usize| {
            let scale = 1.0 / (cols as f32).sqrt();
            let values = (0..rows * cols)
                .map(|_| bf16::from_f32(rng.symmetric() * scale))
                .collect();
            tensors.insert(name, (vec![rows, cols], values));
        };
        matrix(
            "model.embed_tokens.weight".into(),
            c.vocab_size,
            c.hidden_size,
        );
        if with_lm_head || !c.tie_word_embeddings {
            matrix("lm_head.weight".into(), c.vocab_size, c.hidden_size);
        }
        for l in 0..c.num_hidden_layers {
            let p = format!("model.layers.{l}.");
            matrix(
                format!("{p}self_attn.q_proj.weight"),
                c.q_dim(),
                c.hidden_size,
            );
            matrix(
                format!("{p}self_attn.k_proj.weight"),
                c.kv_dim(),
                c.hidden_size,
            );
            matrix(
                format!("{p}self_attn.v_proj.weight"),
                c.kv_dim(),
                c.hidden_size,
            );
            matrix(
                format!("{p}self_attn.o_proj.weight"),
                c.hidden_size,
                c.q_dim(),
            );
            let (h, i) = (c.hidden_size, c.intermediate_size);
            matrix(format!("{p}mlp.gate_proj.weight"), i, h);
            matrix(format!("{p}mlp.up_proj.weight"), i, h);
            matrix(format!("{p}mlp.down_proj.weight"), h, i);
        }
        let mut norm = |name: String, len: usize| {
            let values = (0..len)
                .map(|_| bf16::from_f32(1.0 + 0.25 * rng.symmetric()))
                .collect();
            tensors.insert(name, (vec![len], values));
        };
        for l in 0..c.num_hidden_layers {
            let p = format!("model.layers.{l}.");
            norm(format!("{p}input_layernorm.weight"), c.hidden_size);
            norm(format!("{p}post_attention_layernorm.weight"), c.hidden_size);
            norm(format!("{p}self_attn.q_norm.weight"), c.head_dim);
            norm(format!("{p}self_attn.k_norm.weight"), c.head_dim);
        }
        norm("model.norm.weight".into(), c.hidden_size);
        SyntheticCheckpoint {
            config: c.clone(),
            tensors,
        }
    }

    /// Values of a tensor by its Hugging Face name.
    ///
    /// # Panics
    /// If there is no such tensor (this is test support).
    pub fn get(&self, name: &str) -> &[bf16] {
        match self.tensors.get(name) {
            Some((_, values)) => values,
            None => panic!("synthetic checkpoint has no tensor `{name}`"),
        }
    }

    /// Writes `config.json` and a single `model.safetensors` into `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        self.write_config(dir)?;
        write_safetensors(&dir.join(SINGLE_FILE), self.tensors.iter())
    }

    /// Writes `config.json`, `shards` safetensors files and `model.safetensors.index.json`.
    pub fn write_sharded(&self, dir: &Path, shards: usize) -> std::io::Result<()> {
        self.write_config(dir)?;
        let shards = shards.max(1);
        let names: Vec<&String> = self.tensors.keys().collect();
        let per_shard = names.len().div_ceil(shards);
        let mut weight_map = serde_json::Map::new();
        for (i, chunk) in names.chunks(per_shard).enumerate() {
            let file = format!("model-{:05}-of-{:05}.safetensors", i + 1, shards);
            write_safetensors(
                &dir.join(&file),
                chunk.iter().map(|&name| (name, &self.tensors[name])),
            )?;
            for &name in chunk {
                weight_map.insert(name.clone(), file.clone().into());
            }
        }
        let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
        std::fs::write(dir.join(INDEX_FILE), index.to_string())
    }

    fn write_config(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join(CONFIG_FILE), self.config.to_json_string())
    }
}

/// Packs random weights of `config`'s shapes straight into a packed file at `out_path`, with no
/// safetensors copy and no whole model in memory (one tensor at a time): this is how a
/// full-size Qwen3-0.6B without a download is made for benchmarks, 1.2 GB in a few seconds.
/// Same distributions as [`SyntheticCheckpoint::random`] (matrices uniform in ±1/√columns,
/// norm weights in 1 ± 0.25), deterministic per seed, but not the same values: the tensors are
/// drawn in the packed layout's order.
pub fn pack_random(
    config: &ModelConfig,
    seed: u64,
    out_path: &Path,
    progress: impl FnMut(&PackProgress),
) -> Result<PackSummary, PackError> {
    pack_random_with(config, seed, out_path, &[], progress)
}

/// [`pack_random`] carrying `attachments` in the header (a tokenizer, a record of the seed).
pub fn pack_random_with(
    config: &ModelConfig,
    seed: u64,
    out_path: &Path,
    attachments: &[Attachment],
    progress: impl FnMut(&PackProgress),
) -> Result<PackSummary, PackError> {
    let mut rng = SplitMix64(seed);
    pack_generated(
        config,
        out_path,
        attachments,
        |entry: &TensorEntry, bytes: &mut Vec<u8>| {
            let (scale, offset) = match entry.shape.as_slice() {
                [_rows, cols] => (1.0 / (*cols as f32).sqrt(), 0.0),
                _ => (0.25, 1.0),
            };
            bytes.reserve(entry.len as usize);
            for _ in 0..entry.elements() {
                let value = bf16::from_f32(offset + scale * rng.symmetric());
                bytes.extend_from_slice(&value.to_bits().to_le_bytes());
            }
        },
        progress,
    )
}

fn write_safetensors<'a>(
    path: &Path,
    tensors: impl Iterator<Item = (&'a String, &'a (Vec<usize>, Vec<bf16>))>,
) -> std::io::Result<()> {
    let views = tensors
        .map(|(name, (shape, values))| {
            TensorView::new(Dtype::BF16, shape.clone(), bytemuck::cast_slice(values))
                .map(|view| (name.clone(), view))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(std::io::Error::other)?;
    safetensors::serialize_to_file(views, None, path).map_err(std::io::Error::other)
}

/// `n` values uniform in [-1, 1), deterministic per seed: what `qwenmk bench --fill random`
/// writes into a KV cache (timing does not depend on the values).
pub fn random_values(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = SplitMix64(seed);
    (0..n).map(|_| rng.symmetric()).collect()
}

/// A tiny deterministic generator (SplitMix64), so tests need no `rand` dependency.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn symmetric(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}
