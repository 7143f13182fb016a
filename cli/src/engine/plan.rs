//! What the `emulator` and `gpu` engines share: the model's dims and the launch shape turned
//! into the kernel's [`StepParams`] sizes, the weight pointers, and the kernel's error word
//! turned into a sentence.

use anyhow::{Result, bail};
use qwenmk_kernels::step::attention::AttentionSplit;
use qwenmk_kernels::step::ring::{Matrix, RingPlan};
use qwenmk_kernels::step::sync::{ErrorKind, StepError};
use qwenmk_kernels::step::{self, KvDtype, LaunchShape, LayerPointers, ModelDims};
use qwenmk_weights::config::ModelConfig;
use qwenmk_weights::layout::TensorId;
use qwenmk_weights::packed::PackedModel;

/// The widest head the attention scratch is sized for.
pub const MAX_HEAD_DIM: usize = 256;

/// One launch configuration of the decode-step kernel for one model.
#[derive(Debug, Clone, PartialEq)]
pub struct StepPlan {
    pub dims: ModelDims,
    pub shape: LaunchShape,
    pub grid: u32,
    pub block: u32,
    pub shared_bytes: usize,
    pub max_splits: u32,
    /// The KV cache's element type.
    pub kv: KvDtype,
    /// How the weight ring cuts the layers' matrices for this grid.
    pub ring: RingPlan,
}

/// The weight ring's slot when the launch shape leaves it to the plan (the emulator, tests): a
/// row of the widest matrix, and at least 8 KiB, so that small models still cut their
/// matrices into several chunks and large ones into many.
pub const DEFAULT_RING_SLOT_BYTES: u32 = 8 * 1024;

/// The largest unit of the layers' matrices (a row; a gate/up row pair), in bytes.
pub fn largest_ring_unit(dims: &ModelDims) -> u32 {
    [Matrix::Qkv, Matrix::O, Matrix::GateUp, Matrix::Down]
        .iter()
        .map(|m| m.unit_bytes(dims))
        .max()
        .unwrap_or(0)
}

/// Lengths of the kernel's working buffers, in elements: f32 for the RoPE table, `kv` values
/// for the caches, and 64-bit published words (an f32 and its epoch, see `step::flow`) for
/// the vectors handed from stage to stage and attention's partials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferLens {
    pub rope: usize,
    /// Values in each of the K and V caches, of `kv` type.
    pub kv_cache: usize,
    pub kv: KvDtype,
    /// Published words.
    pub x: usize,
    /// Published words.
    pub qkv: usize,
    /// Published words.
    pub attn_partial: usize,
    /// Published words.
    pub attn_out: usize,
    /// Published words.
    pub act: usize,
}

impl BufferLens {
    /// Bytes of each of the K and V caches.
    pub fn kv_cache_bytes(&self) -> usize {
        self.kv_cache * self.kv.bytes()
    }

    /// All buffers together, in bytes.
    pub fn total_bytes(&self) -> u64 {
        let four_bytes = self.rope;
        let words = self.x + self.qkv + self.attn_partial + self.attn_out + self.act;
        four_bytes as u64 * 4 + words as u64 * 8 + 2 * self.kv_cache_bytes() as u64
    }
}

/// Checks that the kernel can run `config`, with a sentence naming the first rule broken.
pub fn check_supported(c: &ModelConfig) -> Result<()> {
    let rules: [(bool, String); 5] = [
        (
            c.hidden_size.is_multiple_of(32) && c.intermediate_size.is_multiple_of(32),
            format!(
                "hidden_size ({}) and intermediate_size ({}) must be multiples of 32",
                c.hidden_size, c.intermediate_size
            ),
        ),
        (
            c.head_dim >= 16
                && c.head_dim <= MAX_HEAD_DIM
                && step::attention::head_dim_supported(c.head_dim as u32),
            format!(
                "head_dim ({}) must be 16, 32, 64, 128 or {MAX_HEAD_DIM}",
                c.head_dim
            ),
        ),
        (
            c.num_attention_heads
                .is_multiple_of(c.num_key_value_heads.max(1)),
            format!(
                "num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                c.num_attention_heads, c.num_key_value_heads
            ),
        ),
        (
            c.num_hidden_layers <= 255,
            format!(
                "{} layers are more than the kernel's 255",
                c.num_hidden_layers
            ),
        ),
        (
            c.vocab_size < u32::MAX as usize / 2,
            format!("a vocabulary of {} tokens is too large", c.vocab_size),
        ),
    ];
    for (ok, rule) in rules {
        if !ok {
            bail!("the megakernel cannot run this model: {rule}; use --device cpu");
        }
    }
    Ok(())
}

/// The kernel's view of `config`, with a KV cache of `max_context` positions.
pub fn model_dims(config: &ModelConfig, max_context: u32) -> ModelDims {
    ModelDims {
        hidden: config.hidden_size as u32,
        intermediate: config.intermediate_size as u32,
        layers: config.num_hidden_layers as u32,
        q_heads: config.num_attention_heads as u32,
        kv_heads: config.num_key_value_heads as u32,
        head_dim: config.head_dim as u32,
        vocab: config.vocab_size as u32,
        max_context,
        rms_eps: config.rms_norm_eps as f32,
        attention_scale: (config.head_dim as f32).powf(-0.5),
    }
}

impl StepPlan {
    /// The pseudo-random K and V rows with which `--fill random` fills positions `0..depth` of
    /// the device-layout caches (one slice of `max_context` rows per layer and KV head): `write`
    /// gets each slice's byte offset and its encoded keys and values. The emulator and gpu
    /// engines write the same rows.
    pub fn for_each_random_kv_slice(
        &self,
        depth: usize,
        seed: u64,
        mut write: impl FnMut(usize, &[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        let d = self.dims;
        if depth > d.max_context as usize {
            bail!(
                "cannot fill {depth} positions: the KV cache holds {}",
                d.max_context
            );
        }
        let (rows, hd) = (d.max_context as usize, d.head_dim as usize);
        for i in 0..(d.layers * d.kv_heads) as usize {
            let base = seed ^ (i as u64).wrapping_mul(0x9E37_79B9);
            let keys = super::kv::encode(
                &qwenmk_weights::synthetic::random_values(base, depth * hd),
                self.kv,
            );
            let values = super::kv::encode(
                &qwenmk_weights::synthetic::random_values(!base, depth * hd),
                self.kv,
            );
            write(i * rows * hd * self.kv.bytes(), &keys, &values)?;
        }
        Ok(())
    }

    /// A plan for `config` with a KV cache of `max_context` positions of `kv` values on a
    /// `grid × block` launch.
    pub fn new(
        config: &ModelConfig,
        max_context: usize,
        grid: u32,
        block: u32,
        shape: LaunchShape,
        kv: KvDtype,
    ) -> Result<Self> {
        check_supported(config)?;
        if max_context == 0 || max_context > config.max_position_embeddings {
            bail!(
                "--max-context must be between 1 and the model's {} positions (got {max_context})",
                config.max_position_embeddings
            );
        }
        let dims = model_dims(config, max_context as u32);
        let warps_per_block = block / 32;
        let mut shape = shape;
        let widest = largest_ring_unit(&dims);
        if shape.ring_slot_bytes == 0 {
            shape.ring_slot_bytes = DEFAULT_RING_SLOT_BYTES.max(widest).next_multiple_of(128);
        }
        let Some(ring) = RingPlan::new(
            &dims,
            grid,
            warps_per_block,
            shape.lanes_per_row,
            shape.ring_slot_bytes,
        ) else {
            bail!(
                "the megakernel cannot run this model here: a row of its widest matrix ({widest} \
                 bytes) does not fit the {} bytes of shared memory a weight-ring slot can have; \
                 use --device cpu",
                shape.ring_slot_bytes
            );
        };
        Ok(StepPlan {
            shared_bytes: step::shared_bytes(&dims, &shape, warps_per_block),
            max_splits: step::max_splits(&dims, &shape, grid),
            dims,
            shape,
            grid,
            block,
            kv,
            ring,
        })
    }

    pub fn buffers(&self) -> BufferLens {
        let d = &self.dims;
        BufferLens {
            rope: (d.max_context * d.head_dim) as usize,
            kv_cache: (d.layers * d.kv_heads) as usize
                * d.max_context as usize
                * d.head_dim as usize,
            kv: self.kv,
            x: d.hidden as usize,
            qkv: d.qkv_rows() as usize,
            attn_partial: (d.q_heads
                * self.max_splits
                * step::attention::partial_stride(d.head_dim)) as usize,
            attn_out: d.q_dim() as usize,
            act: d.intermediate as usize,
        }
    }

    /// How the attention of a step at `position` is split (for reports and tests).
    pub fn attention_split(&self, position: u32) -> AttentionSplit {
        step::attention::attention_split(
            position,
            self.grid,
            step::attention::item_rows(self.dims.q_heads, self.dims.kv_heads),
            self.shape.min_chunk,
            self.shape.max_chunk,
        )
    }
}

/// The kernel's pointers to the packed weights, for a payload that starts at `base` (a host
/// address for the emulator, a device address for the GPU).
pub struct WeightPointers {
    pub embedding: *const u16,
    pub lm_head: *const u16,
    pub final_norm: *const u16,
    pub layers: Vec<LayerPointers>,
}

impl WeightPointers {
    pub fn new(model: &PackedModel, base: u64) -> Self {
        let at = |offset: u64| (base + offset) as *const u16;
        let offset_of = |id: TensorId| model.tensor(id).map(|e| e.offset);
        let embedding = offset_of(TensorId::Embedding).unwrap_or(0);
        let layers = (0..model.config().num_hidden_layers)
            .map(|i| {
                let o = model.layer_offsets(i);
                LayerPointers {
                    input_norm: at(o.input_norm),
                    qkv: at(o.qkv),
                    q_norm: at(o.q_norm),
                    k_norm: at(o.k_norm),
                    o: at(o.o),
                    post_norm: at(o.post_norm),
                    gate_up: at(o.gate_up),
                    down: at(o.down),
                }
            })
            .collect();
        WeightPointers {
            embedding: at(embedding),
            lm_head: at(model.lm_head_entry().offset),
            final_norm: at(offset_of(TensorId::FinalNorm).unwrap_or(0)),
            layers,
        }
    }
}

/// The sentence for a non-zero error word of a step at `position`.
pub fn describe_step_error(word: u32, plan: &StepPlan, position: usize) -> String {
    let Some(error) = StepError::decode(word) else {
        return format!("the kernel reported an unknown error word {word:#010x}");
    };
    match error.kind {
        ErrorKind::Timeout => format!(
            "the kernel timed out in the {} of layer {} (block {} of {} waited more than {} ms for \
             its results): not every block of the grid was running at once, so the step could \
             not finish; another program on the GPU may be using SMs",
            error.stage.name(),
            error.layer,
            error.block,
            plan.grid,
            plan.shape.spin_limit_ns / 1_000_000
        ),
        ErrorKind::ContextFull => format!(
            "the context is full at {position} tokens; raise --max-context (the KV cache holds {})",
            plan.dims.max_context
        ),
        ErrorKind::BadToken => format!(
            "a token id outside the model's vocabulary of {} was fed to the kernel",
            plan.dims.vocab
        ),
        ErrorKind::Abi => format!(
            "the kernel and qwenmk disagree on the layout of the step's parameters ({} bytes on \
             the host): the embedded PTX was built from other sources; rebuild qwenmk",
            std::mem::size_of::<qwenmk_kernels::step::StepParams>()
        ),
        ErrorKind::SplitOverflow => format!(
            "attention at position {position} needs more partials per head than the {} \
             allocated; this is a qwenmk bug",
            plan.max_splits
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qwenmk_kernels::step::sync::Stage;
    use qwenmk_weights::synthetic::tiny_config;

    fn shape() -> LaunchShape {
        LaunchShape {
            lanes_per_row: 1,
            min_chunk: 32,
            max_chunk: 256,
            ring_slot_bytes: 0,
            spin_limit_ns: 1_000_000_000,
        }
    }

    #[test]
    fn dims_and_buffers_follow_the_config() {
        let c = tiny_config(true);
        let plan = StepPlan::new(&c, 100, 4, 64, shape(), KvDtype::F32).unwrap();
        assert_eq!(plan.dims.q_dim(), 128);
        assert_eq!(plan.dims.qkv_rows(), 128 + 2 * 64);
        assert_eq!(plan.buffers().kv_cache, 2 * 2 * 100 * 32);
        assert_eq!(plan.buffers().kv_cache_bytes(), 2 * 2 * 100 * 32 * 4);
        assert!((plan.dims.attention_scale - 32f32.powf(-0.5)).abs() < 1e-9);
        // 4 blocks over 2 item rows (2 KV heads, each item serving both query heads of its
        // group): 2 chunks once the context passes the 32-position minimum, evened out.
        assert_eq!(plan.attention_split(10).splits, 1);
        assert_eq!(plan.attention_split(90).splits, 2);
        assert_eq!(plan.attention_split(90).chunk, 45);
        // A partial per query head and chunk.
        assert_eq!(
            plan.buffers().attn_partial,
            4 * plan.max_splits as usize * (32 + 4)
        );
    }

    /// A BF16 cache takes half the bytes of an f32 one, and nothing else changes.
    #[test]
    fn a_bf16_cache_halves_the_kv_bytes() {
        let c = tiny_config(true);
        let f32_plan = StepPlan::new(&c, 100, 4, 64, shape(), KvDtype::F32).unwrap();
        let bf16_plan = StepPlan::new(&c, 100, 4, 64, shape(), KvDtype::Bf16).unwrap();
        let (a, b) = (f32_plan.buffers(), bf16_plan.buffers());
        assert_eq!(a.kv_cache, b.kv_cache, "the same values");
        assert_eq!(b.kv_cache_bytes() * 2, a.kv_cache_bytes());
        assert_eq!(b.kv_cache_bytes(), 2 * 2 * 100 * 32 * 2);
        assert_eq!(
            a.total_bytes() - b.total_bytes(),
            a.kv_cache_bytes() as u64,
            "K and V each lose half"
        );
        assert_eq!(f32_plan.dims, bf16_plan.dims);
    }

    #[test]
    fn unsupported_shapes_are_refused_with_the_rule() {
        let mut c = tiny_config(true);
        c.hidden_size = 48;
        let e = StepPlan::new(&c, 10, 1, 32, shape(), KvDtype::F32)
            .unwrap_err()
            .to_string();
        assert!(e.contains("multiples of 32"), "{e}");
        let mut c = tiny_config(true);
        c.head_dim = 24;
        let e = StepPlan::new(&c, 10, 1, 32, shape(), KvDtype::F32)
            .unwrap_err()
            .to_string();
        assert!(e.contains("head_dim (24)"), "{e}");
        // 48 values are 6 lanes of 8: not a power of two.
        c.head_dim = 48;
        let e = StepPlan::new(&c, 10, 1, 32, shape(), KvDtype::F32)
            .unwrap_err()
            .to_string();
        assert!(e.contains("head_dim (48)"), "{e}");
        let c = tiny_config(true);
        let e = StepPlan::new(&c, 100_000, 1, 32, shape(), KvDtype::F32)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--max-context"), "{e}");
    }

    #[test]
    fn error_words_become_sentences() {
        let plan = StepPlan::new(&tiny_config(true), 64, 4, 64, shape(), KvDtype::F32).unwrap();
        let word = StepError {
            kind: ErrorKind::Timeout,
            stage: Stage::Down,
            layer: 1,
            block: 3,
        }
        .encode();
        let text = describe_step_error(word, &plan, 5);
        assert!(
            text.contains("down projection of layer 1") && text.contains("block 3 of 4"),
            "{text}"
        );
        let word = StepError {
            kind: ErrorKind::ContextFull,
            stage: Stage::Start,
            layer: 0,
            block: 0,
        }
        .encode();
        assert!(describe_step_error(word, &plan, 64).contains("context is full at 64"));
        assert!(describe_step_error(0x0100_0000, &plan, 0).contains("unknown error word"));
    }
}
