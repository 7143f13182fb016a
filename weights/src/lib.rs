//! Qwen3 weights for qwenmk: `config.json` parsing and validation ([`config`]), reading a
//! Hugging Face safetensors checkpoint ([`checkpoint`]), and the packed format the engines and
//! the GPU kernel read ([`pack`] writes it, [`packed`] loads it; `docs/FORMAT.md` describes it).
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::path::Path;
//! use qwenmk_weights::{PackedModel, pack_safetensors};
//!
//! pack_safetensors(Path::new("Qwen3-0.6B"), Path::new("qwen3-0.6b.qwenmk"), |_| {})?;
//! let model = PackedModel::open(Path::new("qwen3-0.6b.qwenmk"))?;
//! let layer0 = model.layer(0);
//! assert_eq!(layer0.qkv.len(), model.config().qkv_rows() * model.config().hidden_size);
//! # Ok(()) }
//! ```

// The packed format and the safetensors data are little-endian, and the loader hands out the
// mapped bytes as `bf16` slices without conversion.
#[cfg(target_endian = "big")]
compile_error!(
    "qwenmk-weights reads little-endian tensor data in place; big-endian hosts are not supported"
);

pub mod checkpoint;
pub mod config;
pub mod format;
pub mod fuzzing;
pub mod layout;
pub mod pack;
pub mod packed;
pub mod partial;
pub mod synthetic;

pub use checkpoint::{Checkpoint, CheckpointError};
pub use config::{ConfigError, ConfigProblem, ModelConfig};
pub use format::{Attachment, FORMAT_VERSION};
pub use layout::{LayerPart, LayerTensors, PackedDtype, TensorEntry, TensorId};
pub use pack::{PackError, PackProgress, PackSummary, pack_safetensors, pack_safetensors_with};
pub use packed::{LayerWeights, PackedError, PackedHeader, PackedModel, read_header};
