//! Which tensors a packed file holds, in which order, with which shapes and where: computed from
//! the config alone, so that the packer and the loader (and the kernel) agree by construction.
//! `docs/FORMAT.md` explains the choices.

use std::fmt;

use crate::config::{BYTES_PER_WEIGHT, ModelConfig};

/// The payload starts at a multiple of this many bytes in the file: a page, so that an mmap of
/// the file hands out a page-aligned payload.
pub const PAYLOAD_ALIGN: u64 = 4096;
/// Every tensor starts at a multiple of this many bytes within the payload: wide enough for any
/// vector load or bulk copy the GPU issues, and for full 128-byte cache lines.
pub const TENSOR_ALIGN: u64 = 256;

/// One tensor of a decoder layer in the packed layout, in storage order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayerPart {
    /// `input_layernorm` weight, `[hidden]`.
    InputNorm,
    /// `q_proj`, `k_proj`, `v_proj` rows stacked: `[q_dim + 2 * kv_dim, hidden]`.
    Qkv,
    /// `q_norm` weight, `[head_dim]`.
    QNorm,
    /// `k_norm` weight, `[head_dim]`.
    KNorm,
    /// `o_proj`, `[hidden, q_dim]`.
    O,
    /// `post_attention_layernorm` weight, `[hidden]`.
    PostNorm,
    /// `gate_proj` and `up_proj` interleaved by row: row `2j` is gate row `j`, row `2j + 1` is up
    /// row `j`. `[2 * intermediate, hidden]`.
    GateUp,
    /// `down_proj`, `[hidden, intermediate]`.
    Down,
}

impl LayerPart {
    /// All parts, in the order they are stored within a layer.
    pub const ALL: [LayerPart; 8] = [
        LayerPart::InputNorm,
        LayerPart::Qkv,
        LayerPart::QNorm,
        LayerPart::KNorm,
        LayerPart::O,
        LayerPart::PostNorm,
        LayerPart::GateUp,
        LayerPart::Down,
    ];

    /// The part's name in the packed tensor table (after `layers.{i}.`).
    pub fn name(self) -> &'static str {
        match self {
            LayerPart::InputNorm => "input_norm",
            LayerPart::Qkv => "qkv",
            LayerPart::QNorm => "q_norm",
            LayerPart::KNorm => "k_norm",
            LayerPart::O => "o",
            LayerPart::PostNorm => "post_norm",
            LayerPart::GateUp => "gate_up",
            LayerPart::Down => "down",
        }
    }

    /// `[rows, columns]` for matrices, `[len]` for norm weights.
    pub fn shape(self, c: &ModelConfig) -> Vec<usize> {
        match self {
            LayerPart::InputNorm | LayerPart::PostNorm => vec![c.hidden_size],
            LayerPart::QNorm | LayerPart::KNorm => vec![c.head_dim],
            LayerPart::Qkv => vec![c.qkv_rows(), c.hidden_size],
            LayerPart::O => vec![c.hidden_size, c.q_dim()],
            LayerPart::GateUp => vec![2 * c.intermediate_size, c.hidden_size],
            LayerPart::Down => vec![c.hidden_size, c.intermediate_size],
        }
    }
}

/// Names one tensor of a packed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TensorId {
    /// Token embedding `[vocab, hidden]`; also the LM head when the model is tied.
    Embedding,
    Layer {
        layer: usize,
        part: LayerPart,
    },
    /// Final RMSNorm weight `[hidden]`.
    FinalNorm,
    /// Untied LM head `[vocab, hidden]`; absent from tied models.
    LmHead,
}

impl fmt::Display for TensorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TensorId::Embedding => f.write_str("embedding"),
            TensorId::Layer { layer, part } => write!(f, "layers.{layer}.{}", part.name()),
            TensorId::FinalNorm => f.write_str("final_norm"),
            TensorId::LmHead => f.write_str("lm_head"),
        }
    }
}

impl TensorId {
    /// Shape of this tensor for a model of config `c`.
    pub fn shape(&self, c: &ModelConfig) -> Vec<usize> {
        match self {
            TensorId::Embedding | TensorId::LmHead => vec![c.vocab_size, c.hidden_size],
            TensorId::Layer { part, .. } => part.shape(c),
            TensorId::FinalNorm => vec![c.hidden_size],
        }
    }
}

/// Element type of a packed tensor. Only BF16 exists today; the table stores the code so that a
/// later format can add others without guessing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum PackedDtype {
    Bf16 = 1,
}

impl PackedDtype {
    pub fn code(self) -> u16 {
        self as u16
    }

    pub fn from_code(code: u16) -> Option<Self> {
        (code == 1).then_some(PackedDtype::Bf16)
    }

    pub fn size_bytes(self) -> u64 {
        BYTES_PER_WEIGHT
    }
}

/// Where one tensor lies in the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry {
    pub id: TensorId,
    pub dtype: PackedDtype,
    /// `[rows, columns]` (row-major) or `[len]`.
    pub shape: Vec<usize>,
    /// Byte offset from the start of the payload; a multiple of [`TENSOR_ALIGN`].
    pub offset: u64,
    /// Length in bytes (elements × 2, no padding).
    pub len: u64,
}

impl TensorEntry {
    /// Number of elements.
    pub fn elements(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }

    /// Byte range within the payload.
    pub fn range(&self) -> std::ops::Range<u64> {
        self.offset..self.offset + self.len
    }
}

/// A decoder layer's tensors, one `T` per [`LayerPart`]: `&[bf16]` slices for CPU engines,
/// payload offsets for kernel pointers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerTensors<T> {
    pub input_norm: T,
    pub qkv: T,
    pub q_norm: T,
    pub k_norm: T,
    pub o: T,
    pub post_norm: T,
    pub gate_up: T,
    pub down: T,
}

impl<T> LayerTensors<T> {
    /// Builds the struct by asking `f` for each part.
    pub fn from_fn(mut f: impl FnMut(LayerPart) -> T) -> Self {
        LayerTensors {
            input_norm: f(LayerPart::InputNorm),
            qkv: f(LayerPart::Qkv),
            q_norm: f(LayerPart::QNorm),
            k_norm: f(LayerPart::KNorm),
            o: f(LayerPart::O),
            post_norm: f(LayerPart::PostNorm),
            gate_up: f(LayerPart::GateUp),
            down: f(LayerPart::Down),
        }
    }

    pub fn get(&self, part: LayerPart) -> &T {
        match part {
            LayerPart::InputNorm => &self.input_norm,
            LayerPart::Qkv => &self.qkv,
            LayerPart::QNorm => &self.q_norm,
            LayerPart::KNorm => &self.k_norm,
            LayerPart::O => &self.o,
            LayerPart::PostNorm => &self.post_norm,
            LayerPart::GateUp => &self.gate_up,
            LayerPart::Down => &self.down,
        }
    }
}

/// How many tensors [`plan`] lists for `c`, without listing them: callers compare it with what a
/// file really holds before planning, so that a corrupt layer count allocates nothing.
pub fn tensor_count(c: &ModelConfig) -> u64 {
    2 + LayerPart::ALL.len() as u64 * c.num_hidden_layers as u64 + u64::from(!c.tie_word_embeddings)
}

/// The tensor table a packed file of config `c` must have: storage order, shapes and offsets.
pub fn plan(c: &ModelConfig) -> Vec<TensorEntry> {
    let mut ids = vec![TensorId::Embedding];
    for layer in 0..c.num_hidden_layers {
        ids.extend(LayerPart::ALL.map(|part| TensorId::Layer { layer, part }));
    }
    ids.push(TensorId::FinalNorm);
    if !c.tie_word_embeddings {
        ids.push(TensorId::LmHead);
    }

    let mut offset = 0u64;
    ids.into_iter()
        .map(|id| {
            let shape = id.shape(c);
            let dtype = PackedDtype::Bf16;
            let len = shape.iter().map(|&d| d as u64).product::<u64>() * dtype.size_bytes();
            let entry = TensorEntry {
                id,
                dtype,
                shape,
                offset,
                len,
            };
            offset = align_up(offset + len, TENSOR_ALIGN);
            entry
        })
        .collect()
}

/// Payload length of a table: the end of its last tensor (no trailing padding).
pub fn payload_len(table: &[TensorEntry]) -> u64 {
    table.last().map_or(0, |t| t.offset + t.len)
}

/// Rounds `value` up to a multiple of `align` (a power of two).
pub fn align_up(value: u64, align: u64) -> u64 {
    value.div_ceil(align) * align
}
